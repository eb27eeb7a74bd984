//! The RFC 9111 decisions, made by `http-cache-semantics`, and the few rules
//! this platform adds on top of them. Each addition says why.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, header};
use http_cache_semantics::{CacheOptions, CachePolicy};

/// The crate's options for a shared cache that never guesses: a response
/// without explicit freshness (`max-age`, `s-maxage`, `Expires`) is never
/// served without revalidating it, and `immutable` gives no implicit
/// lifetime either.
pub fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        cache_heuristic: 0.0,
        immutable_min_time_to_live: Duration::ZERO,
        ignore_cargo_cult: false,
    }
}

/// Whether a response may be stored in the shared cache.
///
/// On top of the crate's verdict: a response that sets a cookie is never
/// stored, even when marked `public` (the crate would store it then), because
/// one visitor's cookie must never be handed to another. And a response that
/// is neither fresh nor revalidatable would only take space.
pub fn may_store(policy: &CachePolicy, response_headers: &HeaderMap, now: SystemTime) -> bool {
    policy.is_storable()
        && !response_headers.contains_key(header::SET_COOKIE)
        && (!policy.time_to_live(now).is_zero() || has_validator(response_headers))
}

pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// RFC 9111 3.5: a response stored for one request may answer a request
/// that carries `Authorization` only if it says so. The crate applies this
/// when deciding to store, not when reusing an entry stored for another
/// request, so it is checked here on every lookup.
pub fn may_serve_authorized(response_headers: &HeaderMap) -> bool {
    let directives = cache_control(response_headers);
    directives
        .iter()
        .any(|(name, _)| matches!(name.as_str(), "public" | "s-maxage" | "must-revalidate"))
}

/// How long past its freshness a stored response may still be used, from the
/// RFC 5861 `stale-while-revalidate` and `stale-if-error` directives (which
/// the crate does not implement), and the platform's default
/// `stale-if-error` for responses that give none.
///
/// - `must-revalidate`, `proxy-revalidate` and `no-cache` forbid any stale
///   use (RFC 9111 4.2.4), even one the response asks for.
/// - `s-maxage` implies `proxy-revalidate` for a shared cache (RFC 9111
///   5.2.2.10), so the default never applies to it; a stale directive in
///   the same header is the origin asking for exactly that, and is honoured
///   (`s-maxage=1, stale-while-revalidate=59` is the common CDN idiom).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleAllowance {
    pub while_revalidate: Duration,
    pub if_error: Duration,
}

impl StaleAllowance {
    pub fn from_headers(headers: &HeaderMap, default_if_error: Duration) -> Self {
        let directives = cache_control(headers);
        let has = |wanted: &str| directives.iter().any(|(name, _)| name == wanted);
        if has("must-revalidate") || has("proxy-revalidate") || has("no-cache") {
            return Self::default();
        }
        let seconds = |wanted: &str| {
            directives
                .iter()
                .find(|(name, _)| name == wanted)
                .and_then(|(_, value)| value.as_deref()?.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        let default_if_error = if has("s-maxage") {
            Duration::ZERO
        } else {
            default_if_error
        };
        Self {
            while_revalidate: seconds("stale-while-revalidate").unwrap_or_default(),
            if_error: seconds("stale-if-error").unwrap_or(default_if_error),
        }
    }
}

/// A field value as text, its non-ASCII bytes (obs-text, legal in a quoted
/// value) as `?`: a line with one must still be read, or a `private` or
/// `no-store` beside it would be lost.
fn readable(value: &HeaderValue) -> String {
    value
        .as_bytes()
        .iter()
        .map(|&byte| {
            if byte.is_ascii() {
                char::from(byte)
            } else {
                '?'
            }
        })
        .collect()
}

/// Whether a request lets a stale response answer it (RFC 9111 5.2.1): not
/// when it asks for validation (`no-cache`, `Pragma: no-cache`), nor when
/// it bounds the age or remaining freshness it accepts (`max-age`,
/// `min-fresh`) without also accepting staleness (`max-stale`).
pub fn request_accepts_stale(request_headers: &HeaderMap) -> bool {
    let directives = cache_control(request_headers);
    let has = |wanted: &str| directives.iter().any(|(name, _)| name == wanted);
    let pragma_no_cache = request_headers
        .get_all(header::PRAGMA)
        .iter()
        .any(|value| readable(value).to_ascii_lowercase().contains("no-cache"));
    if has("no-cache") || pragma_no_cache {
        return false;
    }
    has("max-stale") || !(has("max-age") || has("min-fresh"))
}

/// RFC 5861 4: the origin failed in a way `stale-if-error` covers: a 500,
/// 502, 503 or 504.
pub fn is_error_status(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// RFC 5861 4: the origin could not be reached or did not answer (what a
/// gateway answers 502 or 504 for), as opposed to a request the node or
/// its policy refused.
pub fn is_origin_failure(error: &wasmtime_wasi_http::Error) -> bool {
    use wasmtime_wasi_http::Error as E;
    matches!(
        error,
        E::Hyper(_)
            | E::Connect(_)
            | E::Tls(_)
            | E::DnsTimeout
            | E::DnsError { .. }
            | E::DestinationNotFound
            | E::DestinationUnavailable
            | E::DestinationIpUnroutable
            | E::ConnectionRefused
            | E::ConnectionTerminated
            | E::ConnectionTimeout
            | E::ConnectionReadTimeout
            | E::ConnectionWriteTimeout
            | E::TlsProtocolError
            | E::TlsCertificateError
            | E::TlsAlertReceived { .. }
            | E::HttpResponseIncomplete
            | E::HttpResponseTimeout
            | E::HttpProtocolError
    )
}

/// `Cache-Control` directives, lowercase, with their unquoted values.
fn cache_control(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .map(readable)
        .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|directive| {
            let directive = directive.trim();
            if directive.is_empty() {
                return None;
            }
            Some(match directive.split_once('=') {
                Some((name, value)) => (
                    name.trim().to_ascii_lowercase(),
                    Some(value.trim().trim_matches('"').to_string()),
                ),
                None => (directive.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

/// The response's cache headers as this cache reads them, where the crate
/// would read them wrongly:
///
/// - RFC 9213: `CDN-Cache-Control`, and `Surrogate-Control` (what Fastly and
///   Akamai tenants send), is the edge's own: when present it replaces
///   `Cache-Control` and `Expires` for this cache (CDN-Cache-Control first).
/// - RFC 9111 5.2: directive names are case-insensitive; the crate matches
///   them as written, so they are lowercased here (`No-Cache` is `no-cache`).
/// - RFC 9111 5.3: an `Expires` that is not an HTTP date means "already
///   expired"; the crate's parser accepts some that are not (extra spaces),
///   so one that `httpdate` does not read becomes `0`.
/// - RFC 9111 5.1: an `Age` that is not one plain number is ignored (so are
///   several `Age` lines: it is a singleton field), and one too large to
///   represent is 2^31 (section 1.2.2), where the crate's parser would
///   fail and read it as 0, fresh.
pub fn policy_view(headers: &HeaderMap) -> HeaderMap {
    let mut view = headers.clone();
    let targeted = [CDN_CACHE_CONTROL, SURROGATE_CONTROL]
        .into_iter()
        .find_map(|name| headers.get(name).cloned());
    if let Some(targeted) = targeted {
        view.remove(header::EXPIRES);
        view.insert(header::CACHE_CONTROL, targeted);
    }
    let lowered: Vec<HeaderValue> = view
        .get_all(header::CACHE_CONTROL)
        .iter()
        .map(readable)
        .filter_map(|value| HeaderValue::from_str(&lowercase_directive_names(&value)).ok())
        .collect();
    view.remove(header::CACHE_CONTROL);
    for value in lowered {
        view.append(header::CACHE_CONTROL, value);
    }
    if let Some(expires) = view.get(header::EXPIRES)
        && expires
            .to_str()
            .map_or(true, |date| httpdate::parse_http_date(date).is_err())
    {
        view.insert(header::EXPIRES, HeaderValue::from_static("0"));
    }
    let ages = view.get_all(header::AGE).iter().count();
    if let Some(age) = view.get(header::AGE) {
        let digits = age.as_bytes();
        if ages > 1 || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            view.remove(header::AGE);
        } else if age
            .to_str()
            .ok()
            .and_then(|a| a.parse::<u32>().ok())
            .is_none()
        {
            view.insert(header::AGE, HeaderValue::from_static(MAX_DELTA_SECONDS));
        }
    }
    view
}

/// RFC 9111 1.2.2: a delta-seconds too large to represent counts as 2^31.
const MAX_DELTA_SECONDS: &str = "2147483648";

/// RFC 9213 and its predecessor: cache directives meant for the edge alone.
pub const CDN_CACHE_CONTROL: header::HeaderName =
    header::HeaderName::from_static("cdn-cache-control");
pub const SURROGATE_CONTROL: header::HeaderName =
    header::HeaderName::from_static("surrogate-control");

/// Removes the edge's own cache directives from what goes on to clients.
pub fn strip_targeted(headers: &mut HeaderMap) {
    headers.remove(CDN_CACHE_CONTROL);
    headers.remove(SURROGATE_CONTROL);
}

/// `No-Cache, Max-Age=60` as `no-cache, max-age=60`: names only, values
/// as they are.
fn lowercase_directive_names(value: &str) -> String {
    value
        .split(',')
        .map(|directive| match directive.split_once('=') {
            Some((name, value)) => format!("{}={value}", name.trim().to_ascii_lowercase()),
            None => directive.trim().to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the client's request carries a precondition of its own
/// (RFC 9110 13.1).
pub fn is_conditional(request: &http::request::Parts) -> bool {
    [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| request.headers.contains_key(name))
}

/// RFC 9110 13.1.2 and 13.1.3: whether the request's own conditions say
/// the client's copy of the stored response (`stored`, its fields) is
/// current, so that 304 answers it. `If-None-Match` (weak comparison)
/// decides when present; else `If-Modified-Since` against `Last-Modified`.
pub fn not_modified(request: &http::request::Parts, stored: &HeaderMap) -> bool {
    fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }
    let weak = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    if let Some(candidates) = text(&request.headers, header::IF_NONE_MATCH) {
        let Some(etag) = text(stored, header::ETAG).map(weak) else {
            return candidates == "*";
        };
        return candidates
            .split(',')
            .any(|candidate| candidate.trim() == "*" || weak(candidate) == etag);
    }
    let date = |headers: &HeaderMap, name| {
        text(headers, name).and_then(|d| httpdate::parse_http_date(d).ok())
    };
    match (
        date(&request.headers, header::IF_MODIFIED_SINCE),
        date(stored, header::LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// A byte range the request asks of a stored body of `len` bytes (RFC 9110
/// 14): `Some(Ok((first, last)))` for one satisfiable range,
/// `Some(Err(()))` for one that is not (416), `None` to answer with the
/// whole body: no `Range`, several ranges, another unit, or an `If-Range`
/// that is not the stored strong `ETag`.
pub fn byte_range(
    request: &http::request::Parts,
    stored: &HeaderMap,
    len: u64,
) -> Option<Result<(u64, u64), ()>> {
    let range = request.headers.get(header::RANGE)?.to_str().ok()?.trim();
    if let Some(if_range) = request.headers.get(header::IF_RANGE) {
        let strong = stored
            .get(header::ETAG)
            .filter(|etag| !etag.as_bytes().starts_with(b"W/"));
        if strong != Some(if_range) {
            return None;
        }
    }
    let spec = range.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let bounds = match (first.is_empty(), last.is_empty()) {
        // The last N bytes.
        (true, false) => {
            let suffix: u64 = last.parse().ok()?;
            if suffix == 0 || len == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(suffix), len - 1)
        }
        (false, _) => {
            let first: u64 = first.parse().ok()?;
            let last = if last.is_empty() {
                len.saturating_sub(1)
            } else {
                last.parse::<u64>().ok()?.min(len.saturating_sub(1))
            };
            if first >= len || last < first {
                return Some(Err(()));
            }
            (first, last)
        }
        (true, true) => return None,
    };
    Some(Ok(bounds))
}

/// Methods that cannot change the resource; any other one invalidates the
/// stored responses for its URL when it succeeds (RFC 9111 4.4).
pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Surrogate keys of a response: space-separated in `Surrogate-Key`.
pub fn surrogate_keys(headers: &HeaderMap, max: usize) -> Vec<String> {
    let mut keys: Vec<String> = headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_ascii_whitespace)
        .map(str::to_string)
        .collect();
    keys.sort();
    keys.dedup();
    keys.truncate(max);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testing::header_map;
    use http::HeaderValue;

    #[test]
    fn an_age_is_one_plain_number_and_an_overflowing_one_is_two_to_the_31() {
        let age = |values: &[&str]| {
            let mut received = HeaderMap::new();
            for value in values {
                received.append(header::AGE, HeaderValue::from_str(value).expect("value"));
            }
            let view = policy_view(&received);
            view.get(header::AGE)
                .map(|v| v.to_str().expect("text").to_string())
        };
        assert_eq!(age(&["120"]).as_deref(), Some("120"));
        for ignored in [
            &["1000, 2"][..],
            &["-5"],
            &["7.5"],
            &["12a"],
            &[""],
            &["1", "2"],
        ] {
            assert_eq!(age(ignored), None, "{ignored:?}");
        }
        assert_eq!(
            age(&["99999999999999999999999"]).as_deref(),
            Some(MAX_DELTA_SECONDS)
        );
    }

    /// A line with obs-text in a quoted value is still read: its `private`
    /// must not be lost, nor `must-revalidate` beside it.
    #[test]
    fn a_cache_control_line_with_non_ascii_bytes_is_still_read() {
        let mut received = HeaderMap::new();
        received.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"Private, Must-Revalidate, x=\"\xc3\xa9\"").expect("obs-text"),
        );
        let view = policy_view(&received);
        let line = view.get(header::CACHE_CONTROL).expect("kept");
        assert!(
            line.to_str()
                .expect("readable")
                .starts_with("private, must-revalidate")
        );
        let allowance = StaleAllowance::from_headers(&received, Duration::from_secs(60));
        assert_eq!(allowance, StaleAllowance::default());
    }

    /// RFC 5861 4: stale-if-error covers an origin that failed, not one
    /// that answered otherwise, nor a request the node itself refused.
    #[test]
    fn only_origin_failures_let_a_stale_response_be_served() {
        use http::StatusCode;
        use wasmtime_wasi_http::Error as E;
        for status in [500, 502, 503, 504] {
            assert!(is_error_status(
                StatusCode::from_u16(status).expect("status")
            ));
        }
        for status in [501, 505, 511, 404, 429] {
            assert!(
                !is_error_status(StatusCode::from_u16(status).expect("status")),
                "{status}"
            );
        }
        for failure in [E::ConnectionRefused, E::HttpResponseTimeout, E::DnsTimeout] {
            assert!(is_origin_failure(&failure), "{failure:?}");
        }
        for refusal in [
            E::DestinationIpProhibited,
            E::HttpRequestDenied,
            E::ConfigurationError,
        ] {
            assert!(!is_origin_failure(&refusal), "{refusal:?}");
        }
    }

    #[test]
    fn stale_directives_are_read_and_revalidation_directives_win() {
        let default = Duration::from_secs(5);
        let allowance = |cache_control: &str| {
            StaleAllowance::from_headers(&header_map(&[("cache-control", cache_control)]), default)
        };
        let explicit = allowance("max-age=1, stale-while-revalidate=30, stale-if-error=\"60\"");
        assert_eq!(explicit.while_revalidate, Duration::from_secs(30));
        assert_eq!(explicit.if_error, Duration::from_secs(60));
        let forbidden = allowance("max-age=1, stale-if-error=60, must-revalidate");
        assert_eq!(forbidden, StaleAllowance::default());
        assert_eq!(
            allowance("Max-Age=1, Proxy-Revalidate"),
            StaleAllowance::default()
        );

        // The platform's default, where the response says nothing.
        assert_eq!(allowance("max-age=1").if_error, default);
        assert_eq!(
            allowance("max-age=1, stale-if-error=0").if_error,
            Duration::ZERO
        );
        // Not past s-maxage (proxy-revalidate for a shared cache), but an
        // explicit directive beside it is the origin's own wish.
        assert_eq!(allowance("s-maxage=1").if_error, Duration::ZERO);
        let idiom = allowance("s-maxage=1, stale-while-revalidate=59");
        assert_eq!(
            (idiom.while_revalidate, idiom.if_error),
            (Duration::from_secs(59), Duration::ZERO)
        );
    }

    #[test]
    fn authorized_requests_need_an_explicit_permission() {
        assert!(!may_serve_authorized(&header_map(&[(
            "cache-control",
            "max-age=60"
        )])));
        assert!(may_serve_authorized(&header_map(&[(
            "cache-control",
            "public, max-age=60"
        )])));
        assert!(may_serve_authorized(&header_map(&[(
            "cache-control",
            "s-maxage=60"
        )])));
    }

    #[test]
    fn surrogate_keys_are_split_and_deduplicated() {
        let keys = surrogate_keys(
            &header_map(&[("surrogate-key", "b a  b"), ("surrogate-key", "c")]),
            2,
        );
        assert_eq!(keys, vec!["a", "b"]);
    }
}
