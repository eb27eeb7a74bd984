//! The authority of a request (`Host`, `:authority`, or an absolute-form
//! target), parsed once into the one spelling that routing, cache keys,
//! purges and guests all see.
//!
//! Accepted: a host name (letters, digits, `-` and `_` in dot-separated
//! labels, an optional trailing dot), an IPv4 address, or an IPv6 literal in
//! brackets, then an optional port of 1-5 digits up to 65535. Anything else
//! (userinfo, a path, `#`, `?`, spaces, percent-encoding, an empty or
//! non-numeric port) is refused: such an authority names no service, and
//! passing it on lets a client make one URL read as another.

use std::fmt;
use std::net::Ipv6Addr;

/// The longest host name DNS allows (RFC 1035).
pub const MAX_HOST_BYTES: usize = 253;
/// The longest DNS label.
pub const MAX_LABEL_BYTES: usize = 63;

/// A request authority in its normal spelling: the host lowercased without
/// a trailing dot (an IPv6 literal keeps its brackets), and the port if one
/// was given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    host: String,
    port: Option<u16>,
}

/// Why an authority was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the authority is empty")]
    Empty,
    #[error("the host {0:?} is not a host name or IP literal")]
    InvalidHost(String),
    #[error("the port {0:?} is not a number from 0 to 65535")]
    InvalidPort(String),
}

impl Authority {
    /// Parses `text` as `host[:port]`.
    pub fn parse(text: &str) -> Result<Self, AuthorityError> {
        if text.is_empty() {
            return Err(AuthorityError::Empty);
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (literal, after) = rest
                .split_once(']')
                .ok_or_else(|| AuthorityError::InvalidHost(text.to_string()))?;
            // No zone ids or IPvFuture: only what `Ipv6Addr` reads.
            let address: Ipv6Addr = literal
                .parse()
                .map_err(|_| AuthorityError::InvalidHost(text.to_string()))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| AuthorityError::InvalidHost(text.to_string()))?,
                ),
            };
            (format!("[{address}]"), port)
        } else {
            let (name, port) = match text.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (text, None),
            };
            (normalize_host_name(name)?, port)
        };
        let port = port.map(parse_port).transpose()?;
        Ok(Self { host, port })
    }

    /// The host: a lowercase name without trailing dot, an IPv4 address, or
    /// a bracketed IPv6 address.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// `Shop.Example.COM.` -> `shop.example.com`; refuses anything that is not
/// dot-separated labels of letters, digits, `-` and `_`.
fn normalize_host_name(name: &str) -> Result<String, AuthorityError> {
    let invalid = || AuthorityError::InvalidHost(name.to_string());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > MAX_HOST_BYTES {
        return Err(invalid());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_BYTES
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !trimmed.split('.').all(label_ok) {
        return Err(invalid());
    }
    Ok(trimmed.to_ascii_lowercase())
}

fn parse_port(port: &str) -> Result<u16, AuthorityError> {
    let invalid = || AuthorityError::InvalidPort(port.to_string());
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    port.parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(text: &str) -> Option<String> {
        Authority::parse(text).ok().map(|a| a.to_string())
    }

    #[test]
    fn spellings_of_one_authority_normalize_to_one() {
        for spelling in ["shop.example.com", "SHOP.Example.COM", "shop.example.com."] {
            assert_eq!(normal(spelling).as_deref(), Some("shop.example.com"));
        }
        assert_eq!(
            normal("Shop.Example.Com.:8443").as_deref(),
            Some("shop.example.com:8443")
        );
        assert_eq!(normal("[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(
            normal("[0:0:0:0:0:0:0:1]").as_deref(),
            Some("[::1]"),
            "IPv6 in its canonical spelling"
        );
        assert_eq!(normal("127.0.0.1:80").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(normal("_dmarc.x.test").as_deref(), Some("_dmarc.x.test"));
        let parsed = Authority::parse("a.test:65535").expect("valid");
        assert_eq!((parsed.host(), parsed.port()), ("a.test", Some(65535)));
    }

    #[test]
    fn anything_else_is_refused() {
        for hostile in [
            "",
            "shop.test:/blog/hello#",
            "edge.test:/page#",
            "edge.test:abc",
            "edge.test:",
            "edge.test:65536",
            "edge.test:123456",
            "edge.test:+80",
            "edge.test:80:80",
            "a b",
            "x#.a.com",
            "www.a.com/login#.a.com",
            "user@shop.test",
            "shop.test?x",
            "shop..test",
            ".shop.test",
            "shop.test..",
            ":80",
            "sh%6fp.test",
            "shop.test\t",
            "[::1",
            "[::1]x",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "::1",
            "é.test",
        ] {
            assert!(
                Authority::parse(hostile).is_err(),
                "{hostile:?} was accepted as {:?}",
                Authority::parse(hostile)
            );
        }
        let long = format!("{}.test", "a".repeat(64));
        assert!(Authority::parse(&long).is_err(), "a label over 63 bytes");
        let long = ["abcdefgh"; 30].join(".");
        assert!(Authority::parse(&long).is_err(), "a name over 253 bytes");
    }
}
