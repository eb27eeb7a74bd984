//! Named origins a service's guest may reach, and how the node talks to them.

use serde::{Deserialize, Serialize};

use crate::validate::{ConfigErrors, validate_service_name};

/// Time to open a TCP connection (and finish TLS) to an origin. Loopback and
/// same-region origins connect in well under a second.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Time from sending a request to the first byte of the response head. An
/// origin that computes a page gets seconds; one that hangs is cut.
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 15_000;
/// Longest pause between two chunks of a response body.
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT_MS: u64 = 10_000;
/// Longest timeout of any kind a backend may set: a guest's wall time bounds
/// it anyway.
pub const MAX_BACKEND_TIMEOUT_MS: u64 = 600_000;
/// PEM bytes of a backend's extra CA certificates.
pub const MAX_CA_PEM_BYTES: usize = 64 * 1024;

/// A named backend a guest reaches as `http://<name>/...`: an origin
/// server, or another service of the same tenant (`service = "auth"`), run
/// by the node in process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// `http://` or `https://` origin with no path, e.g.
    /// `https://api.example.com` or `http://10.0.0.5:8080`. Empty for a
    /// service backend.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// Another service of the same tenant, by name, instead of an origin:
    /// the node runs it in a fresh instance of its own, with its own
    /// limits, on the request the guest sends. Its calls are not cached and
    /// not timed (the callee's wall time bounds them): the timeouts,
    /// `cache`, TLS and address settings below are for origins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The Host header sent to the origin; the origin's host by default.
    #[serde(default)]
    pub host_header: Option<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    #[serde(default = "default_between_bytes_timeout_ms")]
    pub between_bytes_timeout_ms: u64,
    /// How the origin's TLS certificate is checked (https origins).
    #[serde(default)]
    pub tls: BackendTls,
    /// Whether responses go through the node's HTTP cache.
    #[serde(default)]
    pub cache: BackendCache,
    /// Loopback, private, link-local and other non-public addresses are
    /// refused unless this is set. Only an operator may set it: the node's
    /// own config file, or a control-plane tenant the admin allowed to.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Whether the origin's interim responses (`103 Early Hints`) go on to
    /// the client of the request that reached it (HTTP/1.1 clients). Off
    /// for a backend whose hints are not the client's to see, an internal
    /// API called on the side.
    #[serde(default = "default_forward_interim_responses")]
    pub forward_interim_responses: bool,
}

/// Certificate verification for an https origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTls {
    /// Extra trusted CA certificates (PEM), added to the public web roots:
    /// for origins with a private CA.
    pub ca_pem: Option<String>,
    /// Server name to verify the certificate against, when it differs from
    /// the origin's host (for example an origin addressed by IP).
    pub server_name: Option<String>,
}

/// Cache behaviour for a backend's responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendCache {
    /// RFC 9111: responses are stored and reused as their headers allow.
    #[default]
    Http,
    /// Every request goes to the origin; nothing is stored.
    Off,
}

fn default_forward_interim_responses() -> bool {
    true
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_first_byte_timeout_ms() -> u64 {
    DEFAULT_FIRST_BYTE_TIMEOUT_MS
}
fn default_between_bytes_timeout_ms() -> u64 {
    DEFAULT_BETWEEN_BYTES_TIMEOUT_MS
}

impl BackendSpec {
    /// A backend for `origin` with every default.
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            service: None,
            host_header: None,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            first_byte_timeout_ms: DEFAULT_FIRST_BYTE_TIMEOUT_MS,
            between_bytes_timeout_ms: DEFAULT_BETWEEN_BYTES_TIMEOUT_MS,
            tls: BackendTls::default(),
            cache: BackendCache::Http,
            allow_private_addresses: false,
            forward_interim_responses: true,
        }
    }

    /// A backend that is the tenant's service `name`, with every default.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            service: Some(name.into()),
            ..Self::new("")
        }
    }

    /// The origin split into scheme, host and port, or why it is not one.
    pub fn parsed_origin(&self) -> Result<Origin, String> {
        let Some((tls, rest)) = split_http_scheme(&self.origin) else {
            return Err("must start with http:// or https://".into());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err("must be a scheme and host[:port] only, with no path or user".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                match port.parse::<u16>() {
                    Ok(port) if port > 0 => (host, port),
                    _ if authority.starts_with('[') && authority.ends_with(']') => {
                        (authority, if tls { 443 } else { 80 })
                    }
                    _ => return Err(format!("port {port:?} is not a port number")),
                }
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("has no host".into());
        }
        Ok(Origin {
            tls,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn validate(&self, path: &str, name: &str, errors: &mut ConfigErrors) {
        if let Err(message) = validate_service_name(name) {
            errors.push(path, format!("backend name: {message}"));
        }
        if let Some(service) = &self.service {
            self.validate_service_backend(path, service, errors);
            return;
        }
        if self.origin.is_empty() {
            errors.push(
                format!("{path}.origin"),
                "is required: an http:// or https:// origin, or `service` for another service of the tenant",
            );
        } else if let Err(message) = self.parsed_origin() {
            errors.push(format!("{path}.origin"), message);
        }
        if let Some(host) = &self.host_header
            && (host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()))
        {
            errors.push(
                format!("{path}.host_header"),
                "must be a non-empty host name",
            );
        }
        for (key, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("between_bytes_timeout_ms", self.between_bytes_timeout_ms),
        ] {
            errors.check_range(format!("{path}.{key}"), value, 1, MAX_BACKEND_TIMEOUT_MS);
        }
        if let Some(pem) = &self.tls.ca_pem {
            if pem.len() > MAX_CA_PEM_BYTES {
                errors.push(
                    format!("{path}.tls.ca_pem"),
                    format!("is over {MAX_CA_PEM_BYTES} bytes"),
                );
            } else if !pem.contains("-----BEGIN CERTIFICATE-----") {
                errors.push(
                    format!("{path}.tls.ca_pem"),
                    "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                );
            }
        }
    }
}

impl BackendSpec {
    /// A service backend names a service and sets nothing that only an
    /// origin has, so that no setting is silently ignored.
    fn validate_service_backend(&self, path: &str, service: &str, errors: &mut ConfigErrors) {
        if let Err(message) = validate_service_name(service) {
            errors.push(format!("{path}.service"), message);
        }
        let origin_only = [
            ("origin", !self.origin.is_empty()),
            ("host_header", self.host_header.is_some()),
            ("tls", self.tls != BackendTls::default()),
            ("allow_private_addresses", self.allow_private_addresses),
        ];
        for (field, set) in origin_only {
            if set {
                errors.push(
                    format!("{path}.{field}"),
                    "is for origin backends: a service backend has no origin",
                );
            }
        }
    }
}

/// A backend's origin, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub tls: bool,
    /// Lowercase host name or IP address (without brackets).
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// `host[:port]`, with the port left out when it is the scheme's default
    /// and IPv6 addresses in brackets: the form of a Host header.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// `url` without its `https://` or `http://`, and whether it was
/// `https://` (TLS): the two schemes a config accepts wherever it takes a
/// URL. `None` for any other.
pub(crate) fn split_http_scheme(url: &str) -> Option<(bool, &str)> {
    match url.strip_prefix("https://") {
        Some(rest) => Some((true, rest)),
        None => url.strip_prefix("http://").map(|rest| (false, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Result<Origin, String> {
        BackendSpec::new(s).parsed_origin()
    }

    #[test]
    fn origins_parse_with_default_ports() {
        let o = origin("https://API.example.com").expect("valid");
        assert_eq!(
            (o.tls, o.host.as_str(), o.port),
            (true, "api.example.com", 443)
        );
        assert_eq!(o.authority(), "api.example.com");
        let o = origin("http://127.0.0.1:8080/").expect("valid");
        assert_eq!((o.tls, o.host.as_str(), o.port), (false, "127.0.0.1", 8080));
        assert_eq!(o.authority(), "127.0.0.1:8080");
        let o = origin("http://[::1]:81").expect("valid");
        assert_eq!((o.host.as_str(), o.port), ("::1", 81));
        assert_eq!(o.authority(), "[::1]:81");
        let o = origin("http://[::1]").expect("valid");
        assert_eq!((o.host.as_str(), o.port), ("::1", 80));
    }

    #[test]
    fn a_backend_is_an_origin_or_a_service_and_never_both() {
        let check = |spec: &BackendSpec| {
            let mut errors = ConfigErrors::default();
            spec.validate("backends.b", "b", &mut errors);
            errors
                .into_result()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(check(&BackendSpec::service("auth")), "");
        assert!(check(&BackendSpec::new("")).contains("backends.b.origin: is required"));
        let both = BackendSpec {
            origin: "http://x".into(),
            ..BackendSpec::service("auth")
        };
        assert!(check(&both).contains("backends.b.origin: is for origin backends"));
        let private = BackendSpec {
            allow_private_addresses: true,
            ..BackendSpec::service("auth")
        };
        assert!(check(&private).contains("allow_private_addresses"));
        assert!(check(&BackendSpec::service("Not A Name")).contains("backends.b.service"));
        let spec: BackendSpec = serde_json::from_str(r#"{"service":"auth"}"#).expect("parses");
        assert_eq!(spec, BackendSpec::service("auth"));
        assert_eq!(
            serde_json::to_string(&spec).expect("serializes"),
            serde_json::to_string(&BackendSpec::service("auth")).expect("serializes")
        );
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "ftp://x",
            "http://",
            "http://x/path",
            "http://user@x",
            "http://x:0",
            "http://x:99999",
            "x.com",
        ] {
            assert!(origin(bad).is_err(), "{bad} accepted");
        }
    }
}
