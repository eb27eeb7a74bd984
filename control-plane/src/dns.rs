//! Proof of control of a custom domain: a TXT record at
//! `_edge-challenge.<domain>` that holds the claim's token, read through the
//! one resolver the operator names (`--dns-resolver`), never the system's,
//! so what counts as proof does not depend on the host's resolv.conf.
//!
//! Each check asks the resolver directly (a DNS client, not a caching stub
//! resolver): a tenant who publishes the record after a failed check is not
//! answered from a cached NXDOMAIN. The query goes over UDP and again over
//! TCP when the answer is truncated (RFC 7766 5).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::{DnsResponse, ResponseCode};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;

/// How long one query waits for an answer, per attempt.
pub const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times a UDP query is sent before the resolver counts as down
/// (a lost datagram is no proof of anything).
pub const DNS_UDP_ATTEMPTS: u32 = 2;
/// How long one check may take in all (CNAME hops and retries included).
pub const DNS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How many TXT strings of one answer are compared with the token; the
/// rest are ignored (a record set is small; a hostile zone is not).
pub const MAX_TXT_VALUES: usize = 64;

/// Why a challenge could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("no TXT record at {0}")]
    NoRecord(String),
    #[error("looking up {name} through {resolver}: {message}")]
    Lookup {
        name: String,
        resolver: SocketAddr,
        message: String,
    },
}

/// The resolver challenges are read through.
#[derive(Debug, Clone, Copy)]
pub struct ChallengeResolver {
    pub addr: SocketAddr,
}

impl ChallengeResolver {
    /// Whether `name` has a TXT record whose text is exactly `token`.
    pub async fn holds(&self, name: &str, token: &str) -> Result<bool, DnsError> {
        Ok(self
            .txt_values(name)
            .await?
            .iter()
            .any(|text| text == token))
    }

    /// The text of each TXT record at `name` (a fully qualified name: no
    /// search domains are tried), with a record's strings joined.
    pub async fn txt_values(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let lookup_error = |message: String| DnsError::Lookup {
            name: name.to_string(),
            resolver: self.addr,
            message,
        };
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let queried = Name::from_ascii(&fqdn).map_err(|e| lookup_error(e.to_string()))?;
        let check = async {
            let mut response = self.query_udp(queried.clone()).await?;
            if response.metadata.truncation {
                response = self.query_tcp(queried.clone()).await?;
            }
            Ok(response)
        };
        let response = match tokio::time::timeout(DNS_CHECK_TIMEOUT, check).await {
            Ok(Ok(response)) => response,
            Ok(Err(message)) => return Err(lookup_error(message)),
            Err(_) => {
                return Err(lookup_error(format!(
                    "no answer within {DNS_CHECK_TIMEOUT:?}"
                )));
            }
        };
        match response.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Err(DnsError::NoRecord(name.to_string())),
            code => return Err(lookup_error(format!("the resolver answered {code}"))),
        }
        let texts = texts_of(&response.answers, queried);
        if texts.is_empty() {
            return Err(DnsError::NoRecord(name.to_string()));
        }
        Ok(texts)
    }

    /// The query over UDP, each of [`DNS_UDP_ATTEMPTS`] waiting
    /// [`DNS_QUERY_TIMEOUT`] for its answer.
    async fn query_udp(&self, name: Name) -> Result<DnsResponse, String> {
        let mut last_error = String::new();
        for _ in 0..DNS_UDP_ATTEMPTS {
            // One datagram per attempt (hickory counts the first send as
            // its one "retry").
            let stream = UdpClientStream::builder(self.addr, TokioRuntimeProvider::default())
                .with_timeout(Some(DNS_QUERY_TIMEOUT))
                .with_max_retries(1)
                .build();
            let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
            match query_txt(client, background, name.clone()).await {
                Ok(response) => return Ok(response),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// One query over TCP, for an answer too large for UDP.
    async fn query_tcp(&self, name: Name) -> Result<DnsResponse, String> {
        let (connect, handle) = TcpClientStream::new(
            self.addr,
            None,
            Some(DNS_QUERY_TIMEOUT),
            TokioRuntimeProvider::default(),
        );
        let stream = connect.await.map_err(|e| e.to_string())?;
        let (client, background) =
            Client::<TokioRuntimeProvider>::with_timeout(stream, handle, DNS_QUERY_TIMEOUT);
        query_txt(client, background, name).await
    }
}

/// Sends one TXT query through `client`, driving its connection
/// (`background`) only for as long as the query lasts.
async fn query_txt<B>(
    mut client: Client<TokioRuntimeProvider>,
    background: B,
    name: Name,
) -> Result<DnsResponse, String>
where
    B: Future<Output: Send> + Send + 'static,
{
    let connection = tokio::spawn(background);
    let answer = client.query(name, DNSClass::IN, RecordType::TXT).await;
    connection.abort();
    answer.map_err(|e| e.to_string())
}

/// The text of each TXT record of `queried` among `answers`, or of the
/// name its CNAME chain ends at, at most [`MAX_TXT_VALUES`]: a resolver
/// that passes on records of other names proves nothing with them.
fn texts_of(answers: &[Record], queried: Name) -> Vec<String> {
    let mut owner = queried;
    for _ in 0..answers.len() {
        let next = answers.iter().find_map(|record| match &record.data {
            RData::CNAME(target) if record.name == owner => Some(target.0.clone()),
            _ => None,
        });
        match next {
            Some(target) => owner = target,
            None => break,
        }
    }
    answers
        .iter()
        .filter(|record| record.name == owner)
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .take(MAX_TXT_VALUES)
        .collect()
}

#[cfg(test)]
mod tests {
    use hickory_net::proto::rr::rdata::{CNAME, TXT};

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    fn txt(owner: &str, text: &str) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::TXT(TXT::new(vec![text.to_string()])),
        )
    }

    #[test]
    fn only_the_asked_names_records_count_and_at_most_max_txt_values() {
        let asked = "_edge-challenge.shop.example.";
        // Another name's record, passed on by a careless forwarder.
        let answers = [
            txt("_edge-challenge.evil.example.", "token"),
            txt(asked, "other"),
        ];
        assert_eq!(texts_of(&answers, name(asked)), ["other"]);
        // Case does not matter; the CNAME chain is followed to its end.
        let answers = [
            Record::from_rdata(
                name("_EDGE-challenge.Shop.example."),
                60,
                RData::CNAME(CNAME(name("proof.dns-host.example."))),
            ),
            txt(asked, "not the end of the chain"),
            txt("proof.dns-host.example.", "token"),
        ];
        assert_eq!(texts_of(&answers, name(asked)), ["token"]);
        // A record set larger than the bound is cut to it.
        let many: Vec<Record> = (0..MAX_TXT_VALUES + 1)
            .map(|i| txt(asked, &format!("value {i}")))
            .collect();
        let texts = texts_of(&many, name(asked));
        assert_eq!(texts.len(), MAX_TXT_VALUES);
        assert!(!texts.contains(&format!("value {MAX_TXT_VALUES}")));
    }
}
