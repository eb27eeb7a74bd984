//! URLs in the one spelling that cache keys and purges by URL use, so that
//! a purge the control plane accepted names exactly what nodes stored.

use edge_config::authority::Authority;

/// A URL in the one spelling the cache keys use: lowercase scheme and host,
/// no default port, no fragment, `/` for an empty path. `None` when it is not
/// an absolute http(s) URL with a valid authority (see [`Authority`]).
pub fn normalize_url(url: &str) -> Option<String> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = Authority::parse(uri.authority()?.as_str()).ok()?;
    let host = authority.host();
    let port = authority.port().filter(|p| *p != default_port);
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path = if path.is_empty() { "/" } else { path };
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}"),
        None => format!("{scheme}://{host}{path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_have_one_spelling() {
        assert_eq!(
            normalize_url("HTTPS://Example.COM:443/a?b=1").as_deref(),
            Some("https://example.com/a?b=1")
        );
        assert_eq!(
            normalize_url("http://example.com.:8080").as_deref(),
            Some("http://example.com:8080/")
        );
        assert_eq!(normalize_url("/relative"), None);
        assert_eq!(normalize_url("https://user@example.com/"), None);
        assert_eq!(normalize_url("https://example.com:abc/"), None);
        assert_eq!(normalize_url("ftp://x/"), None);
    }
}
