//! Canary rollouts: which requests a canary version serves, and when the
//! control plane rolls it back by itself.
//!
//! A canary serves `percent` of a service's requests beside its active
//! (stable) version. Which version a request gets is decided by a hash of
//! its [`StickyKey`], the same on every node, so one client keeps one
//! version. Nodes report requests and errors per version; over the
//! [`RollbackPolicy`]'s window, a canary whose error rate passes the
//! stable version's by its threshold is rolled back with no one calling
//! the API.

use serde::{Deserialize, Serialize};

use crate::validate::ConfigErrors;

/// Percentage points by which the canary's error rate may pass the stable
/// version's before it is rolled back: 5 % against 0.2 % is a bad canary,
/// 1 % against 0.5 % is noise.
pub const DEFAULT_ROLLBACK_THRESHOLD_PCT: u8 = 5;
/// The window error rates are compared over: long enough to hold the
/// reports of a few intervals from every node, short enough that an old
/// burst does not decide today.
pub const DEFAULT_ROLLBACK_WINDOW_SECS: u64 = 60;
/// Canary requests the window must hold before its error rate means
/// anything: one failure in two requests is no verdict.
pub const DEFAULT_ROLLBACK_MIN_REQUESTS: u64 = 20;
/// The longest window a policy may set.
pub const MAX_ROLLBACK_WINDOW_SECS: u64 = 3_600;
/// Longest header or cookie name a sticky key may name.
pub const MAX_STICKY_NAME_BYTES: usize = 128;

/// What keeps one client on one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StickyKey {
    /// The value of this request header (a user or session id the tenant
    /// sets), `{"header": "x-user-id"}`.
    Header(String),
    /// The value of this cookie, `{"cookie": "session"}`.
    Cookie(String),
    /// The client's IP address, `"client_address"`.
    #[default]
    ClientAddress,
}

impl StickyKey {
    /// `header:NAME`, `cookie:NAME` or `client-address`: how `edgectl`
    /// takes and shows it.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("header", name)) => Ok(Self::Header(name.to_ascii_lowercase())),
            Some(("cookie", name)) => Ok(Self::Cookie(name.to_string())),
            None if text == "client-address" => Ok(Self::ClientAddress),
            _ => Err(format!(
                "{text:?} is not header:NAME, cookie:NAME or client-address"
            )),
        }
    }

    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        let name = match self {
            Self::Header(name) | Self::Cookie(name) => name,
            Self::ClientAddress => return,
        };
        let token = !name.is_empty()
            && name.len() <= MAX_STICKY_NAME_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            errors.push(
                path,
                format!("must name a header or cookie: 1-{MAX_STICKY_NAME_BYTES} token characters"),
            );
        }
    }
}

impl std::fmt::Display for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header(name) => write!(f, "header:{name}"),
            Self::Cookie(name) => write!(f, "cookie:{name}"),
            Self::ClientAddress => write!(f, "client-address"),
        }
    }
}

/// When the control plane rolls a canary back by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollbackPolicy {
    /// Percentage points by which the canary's error rate (5xx responses
    /// and guest failures per request) may pass the stable version's.
    pub threshold_pct: u8,
    /// The window both rates are measured over.
    pub window_secs: u64,
    /// Canary requests the window must hold before it decides.
    pub min_requests: u64,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            threshold_pct: DEFAULT_ROLLBACK_THRESHOLD_PCT,
            window_secs: DEFAULT_ROLLBACK_WINDOW_SECS,
            min_requests: DEFAULT_ROLLBACK_MIN_REQUESTS,
        }
    }
}

impl RollbackPolicy {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        errors.check_range(
            format!("{path}.threshold_pct"),
            u64::from(self.threshold_pct),
            0,
            100,
        );
        errors.check_range(
            format!("{path}.window_secs"),
            self.window_secs,
            1,
            MAX_ROLLBACK_WINDOW_SECS,
        );
        errors.check_range(
            format!("{path}.min_requests"),
            self.min_requests,
            1,
            1_000_000,
        );
    }

    /// Whether a canary with `canary_errors` of `canary_requests` is worse
    /// than the stable version with `stable_errors` of `stable_requests`
    /// by more than the threshold. `None`: too few canary requests yet.
    pub fn verdict(
        &self,
        (canary_requests, canary_errors): (u64, u64),
        (stable_requests, stable_errors): (u64, u64),
    ) -> Option<bool> {
        if canary_requests < self.min_requests {
            return None;
        }
        let canary = error_rate_pct((canary_requests, canary_errors));
        let stable = error_rate_pct((stable_requests, stable_errors));
        Some(canary > stable + f64::from(self.threshold_pct))
    }
}

/// `errors` of `requests` in percent; 0 without requests.
pub fn error_rate_pct((requests, errors): (u64, u64)) -> f64 {
    if requests == 0 {
        0.0
    } else {
        errors.min(requests) as f64 * 100.0 / requests as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_keys_read_and_print_the_same() {
        for text in ["header:x-user", "cookie:session", "client-address"] {
            assert_eq!(StickyKey::parse(text).expect(text).to_string(), text);
        }
        assert_eq!(
            StickyKey::parse("header:X-User"),
            Ok(StickyKey::Header("x-user".into()))
        );
        assert!(StickyKey::parse("ip").is_err());
        let json = serde_json::to_string(&StickyKey::ClientAddress).expect("json");
        assert_eq!(json, r#""client_address""#);
        let header: StickyKey = serde_json::from_str(r#"{"header":"x-user"}"#).expect("json");
        assert_eq!(header, StickyKey::Header("x-user".into()));
        let mut errors = ConfigErrors::default();
        StickyKey::Cookie("a b".into()).validate("sticky", &mut errors);
        assert!(errors.into_result().is_err());
    }

    #[test]
    fn a_canary_is_rolled_back_only_past_the_threshold_with_enough_requests() {
        let policy = RollbackPolicy::default();
        assert_eq!(
            policy.verdict((19, 19), (1000, 0)),
            None,
            "too few requests"
        );
        assert_eq!(policy.verdict((20, 20), (1000, 0)), Some(true));
        assert_eq!(
            policy.verdict((100, 5), (1000, 0)),
            Some(false),
            "5 points is the threshold"
        );
        assert_eq!(policy.verdict((100, 6), (1000, 0)), Some(true));
        assert_eq!(
            policy.verdict((100, 10), (1000, 60)),
            Some(false),
            "10 % against 6 %"
        );
        assert_eq!(
            policy.verdict((100, 20), (0, 0)),
            Some(true),
            "no stable traffic counts as 0 %"
        );
    }
}
