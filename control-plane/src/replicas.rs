//! Replicas on one PostgreSQL database hear each other's changes: a
//! listener on [`CHANGES_CHANNEL`] raises this replica's change signals, so
//! a node long-polling here learns of a deploy or purge made through
//! another replica as soon as it commits, not at the next recheck.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::store::Store;
use crate::store::changes::{CHANGES_CHANNEL, KV_CHANGED, PURGES_CHANGED, SNAPSHOT_CHANGED};

/// The signals a replica's long-polls wait on.
#[derive(Debug, Clone)]
pub struct ChangeSignals {
    pub snapshot: Arc<watch::Sender<u64>>,
    pub purges: Arc<watch::Sender<u64>>,
    pub kv: Arc<watch::Sender<u64>>,
}

/// Wait before listening again after the connection was lost (the
/// long-polls' own recheck covers the gap).
const RELISTEN_AFTER: Duration = Duration::from_millis(500);

/// Raises `signal` to `value` if that is newer: a notice may arrive after
/// this replica already announced a later change of its own.
fn raise(signal: &watch::Sender<u64>, value: u64) {
    signal.send_if_modified(|current| {
        let newer = value > *current;
        if newer {
            *current = value;
        }
        newer
    });
}

/// Reads one counter and raises its signal.
async fn refresh(store: &Store, signals: &ChangeSignals, table: &str) {
    let read = match table {
        SNAPSHOT_CHANGED => store
            .snapshot_version()
            .await
            .map(|v| (&signals.snapshot, v)),
        PURGES_CHANGED => store.purge_seq().await.map(|v| (&signals.purges, v)),
        KV_CHANGED => store.kv_seq().await.map(|v| (&signals.kv, v)),
        _ => return,
    };
    match read {
        Ok((signal, value)) => raise(signal, value),
        Err(error) => tracing::warn!(%error, table, "reading a counter another replica moved"),
    }
}

/// Listens until the control plane stops, connecting again whenever the
/// connection is lost. After each (re)connect every counter is read once,
/// for notices sent while it was not listening.
pub async fn follow_other_replicas(url: String, store: Store, signals: ChangeSignals) {
    loop {
        match listen(&url, &store, &signals).await {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, "listening for other replicas' changes failed; listening again");
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

async fn listen(url: &str, store: &Store, signals: &ChangeSignals) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    for table in [SNAPSHOT_CHANGED, PURGES_CHANGED, KV_CHANGED] {
        refresh(store, signals, table).await;
    }
    loop {
        match listener.try_recv().await? {
            Some(notice) => refresh(store, signals, notice.payload()).await,
            // The connection was lost, and the next call connects again:
            // notices sent meanwhile are gone, so every counter is read.
            None => {
                for table in [SNAPSHOT_CHANGED, PURGES_CHANGED, KV_CHANGED] {
                    refresh(store, signals, table).await;
                }
            }
        }
    }
}
