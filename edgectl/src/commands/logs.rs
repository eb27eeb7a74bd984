//! What a service's guests printed.

use std::time::Duration;

use anyhow::bail;

use crate::credentials;
use crate::output::rfc3339_millis;

/// How often `edgectl logs --follow` asks for new lines.
const LOGS_FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

pub async fn logs(
    service: &str,
    follow: bool,
    lines: u64,
    request_id: Option<&str>,
) -> anyhow::Result<()> {
    let api = credentials::logged_in()?;
    if let Some(id) = request_id
        && !id.chars().all(|c| c.is_ascii_alphanumeric())
    {
        bail!("--request-id {id:?}: a request id is letters and digits");
    }
    let only = request_id.map_or(String::new(), |id| format!("&request_id={id}"));
    let mut query = format!("limit={lines}{only}");
    loop {
        let page = api.logs(service, &query).await?;
        for line in &page.lines {
            println!(
                "{} v{} {} {}: {}",
                rfc3339_millis(line.timestamp_ms),
                line.version,
                line.request_id,
                line.stream,
                line.line,
            );
        }
        if !follow {
            return Ok(());
        }
        if let Some(after) = page.next_after {
            query = format!("after={after}&limit=1000{only}");
        }
        tokio::time::sleep(LOGS_FOLLOW_INTERVAL).await;
    }
}
