//! Domains as tenants claim them: one spelling for every way of writing a
//! name, the public-suffix rule, and when two claims overlap.
//!
//! A domain is an exact name (`shop.example.com`) or a wildcard
//! (`*.example.com`, which the router matches for one or more labels).

/// The DNS record that proves control of a domain: `_edge-challenge.<name>`
/// (for `*.example.com`, `_edge-challenge.example.com`) holding the claim's
/// token in a TXT record.
pub const CHALLENGE_LABEL: &str = "_edge-challenge";

/// A domain is a lowercase DNS name, optionally with a leading `*.` wildcard.
/// Ports are not part of a domain: the router ignores the port of `Host`.
pub fn validate_domain(domain: &str) -> Result<(), String> {
    let name = domain.strip_prefix("*.").unwrap_or(domain);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{domain:?} is not a valid domain: use a lowercase DNS name such as \"shop.example.com\" or \"*.example.com\""
        ))
    }
}

/// `WWW.Example.com.` -> `www.example.com`, `*.Bücher.example` ->
/// `*.xn--bcher-kva.example`: lowercase, no trailing dot, IDNA names in
/// their punycode (A-label) form. Refuses what is not a valid domain after
/// that, and names on a public suffix (see [`on_public_suffix`]).
pub fn normalize_domain(input: &str) -> Result<String, String> {
    let (wildcard, name) = match input.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, input),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let ascii = idna::domain_to_ascii_strict(name)
        .map_err(|_| format!("{input:?} is not a valid domain name"))?;
    let normal = if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    };
    validate_domain(&normal)?;
    if on_public_suffix(&normal) {
        return Err(format!(
            "{input:?} is a public suffix (Public Suffix List): no one tenant may claim {}",
            if wildcard {
                "every name under it"
            } else {
                "it"
            }
        ));
    }
    Ok(normal)
}

/// Whether `domain` (normalized) is a public suffix itself (`co.uk`,
/// `github.io`) or a wildcard directly under one (`*.com`, `*.co.uk`). A
/// single label is one too (`*.test`), by the list's default rule.
pub fn on_public_suffix(domain: &str) -> bool {
    let name = domain.strip_prefix("*.").unwrap_or(domain);
    psl::suffix_str(name).is_none_or(|suffix| suffix == name)
}

/// `*.example.com` -> `example.com`; an exact name is its own base.
pub fn base_name(domain: &str) -> &str {
    domain.strip_prefix("*.").unwrap_or(domain)
}

/// Whether `outer` matches every name `inner` does: the same domain, or a
/// wildcard over it (`*.example.com` covers `www.example.com`,
/// `*.api.example.com` and `a.b.example.com`, but not `example.com`).
pub fn covers(outer: &str, inner: &str) -> bool {
    if outer == inner {
        return true;
    }
    match outer.strip_prefix("*.") {
        Some(suffix) => base_name(inner)
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.')),
        None => false,
    }
}

/// Whether two claims can match one host: equal, or one covers the other.
pub fn overlaps(a: &str, b: &str) -> bool {
    covers(a, b) || covers(b, a)
}

/// The wildcards that cover `domain` (normalized), other than itself:
/// `*.b.c` and `*.c` for `a.b.c`; `*.c` for `*.b.c`.
pub fn covering_wildcards(domain: &str) -> Vec<String> {
    // `*.a.b` is covered by `*.b`: its own base's parents, as for `a.b`.
    let mut rest = base_name(domain);
    let mut wildcards = Vec::new();
    while let Some((_, parent)) = rest.split_once('.') {
        wildcards.push(format!("*.{parent}"));
        rest = parent;
    }
    wildcards
}

/// The name of the TXT record that proves control of `domain`.
pub fn challenge_record(domain: &str) -> String {
    format!("{CHALLENGE_LABEL}.{}", base_name(domain))
}

/// Whether `domain` is `platform` or under it.
pub fn within(domain: &str, platform: &str) -> bool {
    let name = base_name(domain);
    name == platform
        || name
            .strip_suffix(platform)
            .is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_name_is_one_domain() {
        for spelling in ["www.alpha.test", "WWW.Alpha.TEST", "www.alpha.test."] {
            assert_eq!(normalize_domain(spelling).as_deref(), Ok("www.alpha.test"));
        }
        assert_eq!(
            normalize_domain("*.Bücher.example").as_deref(),
            Ok("*.xn--bcher-kva.example")
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").as_deref(),
            normalize_domain("BÜCHER.example.").as_deref()
        );
        for invalid in [
            "",
            "a b.test",
            "*.",
            "*",
            "a..test",
            "shop.test:80",
            "*.*.x.test",
        ] {
            assert!(normalize_domain(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn public_suffixes_and_wildcards_on_them_are_refused() {
        for claim in ["*.com", "*.co.uk", "*.github.io", "*.test", "co.uk", "com"] {
            let refused = normalize_domain(claim);
            assert!(refused.is_err(), "{claim:?} was accepted");
        }
        for claim in [
            "*.alpha.test",
            "*.example.co.uk",
            "shop.github.io",
            "example.com",
        ] {
            assert!(normalize_domain(claim).is_ok(), "{claim:?}");
        }
    }

    #[test]
    fn claims_overlap_when_either_covers_the_other() {
        assert!(overlaps("*.alpha.test", "www.alpha.test"));
        assert!(overlaps("www.alpha.test", "*.alpha.test"));
        assert!(overlaps("*.alpha.test", "*.x.alpha.test"));
        assert!(overlaps("*.x.alpha.test", "*.alpha.test"));
        assert!(overlaps("*.alpha.test", "a.b.alpha.test"));
        assert!(overlaps("shop.test", "shop.test"));
        assert!(!overlaps("*.alpha.test", "alpha.test"));
        assert!(!overlaps("*.alpha.test", "xalpha.test"));
        assert!(!overlaps("*.alpha.test", "*.beta.test"));
        assert!(!overlaps("www.alpha.test", "api.alpha.test"));
    }

    #[test]
    fn covering_wildcards_are_every_parent() {
        assert_eq!(
            covering_wildcards("a.b.c.test"),
            vec!["*.b.c.test", "*.c.test", "*.test"]
        );
        assert_eq!(covering_wildcards("*.b.c.test"), vec!["*.c.test", "*.test"]);
        assert_eq!(
            challenge_record("*.alpha.test"),
            "_edge-challenge.alpha.test"
        );
        assert!(within("web.acme.edge.test", "edge.test"));
        assert!(within("*.edge.test", "edge.test"));
        assert!(!within("xedge.test", "edge.test"));
    }
}
