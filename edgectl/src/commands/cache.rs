//! Purging the edge cache, and waiting until every node has.

use std::time::{Duration, Instant};

use anyhow::bail;
use edgectl::wire::PurgeRequest;

use crate::credentials;

/// How often `--wait` asks how many nodes have applied the purge.
const PURGE_POLL_INTERVAL: Duration = Duration::from_millis(100);

pub async fn purge(
    url: Option<String>,
    surrogate_key: Option<String>,
    soft: bool,
    wait: Option<u64>,
) -> anyhow::Result<()> {
    if url.is_none() && surrogate_key.is_none() {
        bail!("give --url or --surrogate-key");
    }
    let api = credentials::logged_in()?;
    let seq = api
        .purge(&PurgeRequest {
            url,
            surrogate_key,
            soft,
        })
        .await?
        .seq;
    let Some(wait) = wait else {
        println!("purge {seq} accepted");
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let status = api.purge_status(seq).await?;
        let (done, nodes) = (status.acknowledged, status.nodes);
        if done >= nodes {
            println!("purge {seq} applied on {done} of {nodes} nodes");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("purge {seq} applied on {done} of {nodes} nodes after {wait} s");
        }
        tokio::time::sleep(PURGE_POLL_INTERVAL).await;
    }
}
