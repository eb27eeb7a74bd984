//! How `edgectl` prints what the API answered: tab-separated tables with a
//! header row, so they read on a terminal and cut with `cut -f`.

use serde::Serialize;
use serde_json::Value;

use edgectl::wire::{DomainClaim, Rollout, Version};

/// Prints `rows` as a table of `columns` (a missing value prints `-`).
pub fn print_table<T: Serialize>(rows: &[T], columns: &[&str]) {
    println!("{}", columns.join("\t"));
    for row in rows {
        let row = serde_json::to_value(row).unwrap_or(Value::Null);
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &row[*c] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
}

/// Prints a claim: the domain, its status and, while pending, the TXT
/// record to publish.
pub fn print_claim(claim: &DomainClaim) {
    match (&claim.challenge, claim.status.as_str()) {
        (Some(challenge), "pending") => println!(
            "{}\tpending\tTXT {} \"{}\"",
            claim.domain, challenge.name, challenge.value
        ),
        (_, status) => println!("{}\t{status}", claim.domain),
    }
}

/// Prints a service's versions, then what nodes said about the ones they
/// could not load.
pub fn print_versions(versions: &[Version]) {
    print_table(
        versions,
        &["number", "module_sha256", "author", "created_at"],
    );
    for version in versions {
        for failure in &version.node_failures {
            println!(
                "version {} does not load on node {}: {}",
                version.number, failure.node, failure.error
            );
        }
    }
}

/// The canary, if one runs, and the history: who made which version serve,
/// and how each stretch ended.
pub fn print_rollout(rollout: &Rollout) {
    if let Some(canary) = &rollout.canary {
        println!(
            "\ncanary: version {} for {} % of requests, sticky by {}, started {} by {}; rolled back past +{} points over {} s",
            canary.version,
            canary.percent,
            canary.sticky,
            rfc3339_millis(canary.started_at),
            canary.started_by,
            canary.rollback.threshold_pct,
            canary.rollback.window_secs
        );
    }
    println!("\nhistory:");
    println!("version\trole\tstarted\tby\tended\toutcome\treason");
    for record in &rollout.history {
        let role = match record.percent {
            Some(percent) => format!("{} {percent}%", record.role),
            None => record.role.clone(),
        };
        let ended = match (&record.ended_at, &record.ended_by) {
            (Some(at), Some(by)) => format!("{} by {by}", rfc3339_millis(*at)),
            _ => "-".into(),
        };
        println!(
            "{}\t{role}\t{} by {}\t{ended}\t{}\t{}",
            record.version,
            rfc3339_millis(record.started_at),
            record.started_by,
            record.outcome.as_deref().unwrap_or("serving"),
            record.reason.as_deref().unwrap_or("-"),
        );
    }
}

/// `2026-12-01T04:30:00.123Z` for Unix milliseconds (UTC).
pub fn rfc3339_millis(unix_ms: i64) -> String {
    let (days, ms_of_day) = (
        unix_ms.div_euclid(86_400_000),
        unix_ms.rem_euclid(86_400_000),
    );
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let seconds = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_796_100_000_000),
            "2026-12-01T04:40:00.000Z"
        );
    }
}
