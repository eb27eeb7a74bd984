//! Proof of control of a custom domain: a TXT record at
//! `_edge-challenge.<domain>` that holds the claim's token, read through the
//! one resolver the operator names (`--dns-resolver`), never the system's,
//! so what counts as proof does not depend on the host's resolv.conf.
//!
//! Each check builds a resolver with no cache: a tenant who publishes the
//! record after a failed check is not answered from a cached NXDOMAIN.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, Record};

/// How long one query waits for an answer, per attempt.
pub const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(3);
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
        let mut udp = ConnectionConfig::udp();
        udp.port = self.addr.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = self.addr.port();
        let server = NameServerConfig::new(self.addr.ip(), true, vec![udp, tcp]);
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![server]);
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        let options = builder.options_mut();
        options.cache_size = 0;
        options.timeout = DNS_QUERY_TIMEOUT;
        options.attempts = 2;
        options.ndots = 0;
        let resolver = builder.build().map_err(|e| lookup_error(e.to_string()))?;
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let queried = Name::from_ascii(&fqdn).map_err(|e| lookup_error(e.to_string()))?;
        let lookup = match resolver.txt_lookup(queried.clone()).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                return Err(DnsError::NoRecord(name.to_string()));
            }
            Err(e) => return Err(lookup_error(e.to_string())),
        };
        Ok(texts_of(lookup.answers(), queried))
    }
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
    use hickory_resolver::proto::rr::rdata::{CNAME, TXT};

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
