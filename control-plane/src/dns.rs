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
use hickory_resolver::proto::rr::{Name, RData};

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
        // Only the records of the name asked for (or of what its CNAME
        // chain ends at): a resolver that passes on more proves nothing.
        let answers = lookup.answers();
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
        Ok(answers
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
            .collect())
    }
}
