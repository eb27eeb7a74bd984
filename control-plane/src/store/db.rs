//! What every table's module shares: the [`Store`] handle, its errors, how
//! times and ids are made, and the helpers a transaction uses whatever it
//! changes (the snapshot version, a service by its platform name).

use std::time::{SystemTime, UNIX_EPOCH};

use edge_config::protocol::ServiceSpec;
use sqlx::{AnyPool, Row};

/// A database failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: {source}")]
    Database {
        what: &'static str,
        source: sqlx::Error,
    },
    #[error("{0} already exists")]
    Conflict(String),
    /// A domain claim another claim stands in the way of; the message names
    /// the domain, never the other tenant.
    #[error("{0}")]
    DomainConflict(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A change that would take a spec past one of its limits.
    #[error("{0}")]
    InvalidSpec(String),
    /// A conditional KV write whose key is not as it expected.
    #[error("{0}")]
    KvConflict(String),
    /// The KV store named is not the tenant's (or no longer exists).
    #[error("no such KV store")]
    NoSuchStore,
    /// A KV write or store past one of the tenant's quotas (named).
    #[error("{0}")]
    KvQuota(String),
    /// A KV write the store cannot take as asked (an increment of a value
    /// that is not a number).
    #[error("{0}")]
    KvInvalid(String),
    /// A rollout step the service's state does not allow: a canary while
    /// another runs, a promotion with none, a canary of the active version.
    #[error("{0}")]
    Rollout(String),
}

pub(super) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        if let sqlx::Error::Database(e) = &source
            && e.is_unique_violation()
        {
            return StoreError::Conflict(what.to_string());
        }
        StoreError::Database { what, source }
    }
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random id or secret of `bytes` random bytes, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source does not fail on Linux once booted; an all-zero
    // id would still be unique-checked by the database.
    let _ = getrandom::fill(&mut buf);
    hex::encode(buf)
}

/// The domain every service gets a name under by default.
pub const DEFAULT_PLATFORM_DOMAIN: &str = "localhost";

/// A PostgreSQL URL, which may carry a password: never in a log line.
#[derive(Clone)]
pub(super) struct PostgresUrl(pub(super) String);

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresUrl(..)")
    }
}

/// The database behind the API.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) pool: AnyPool,
    /// Set on PostgreSQL, where other replicas may share the database.
    pub(super) postgres_url: Option<PostgresUrl>,
    /// Every service is served as `<service>.<tenant>.<platform_domain>`
    /// without proof of ownership.
    pub(super) platform_domain: String,
    /// How long another tenant's pending claim blocks a name.
    pub(super) pending_claim_ttl: std::time::Duration,
}

/// How long a pending domain claim blocks other tenants' claims on the
/// names it overlaps: long enough to publish a TXT record, short enough
/// that a squatter does not keep a name from its owner.
pub const DEFAULT_PENDING_CLAIM_TTL: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A transaction on the store's database.
pub(super) type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Store {
    /// Starts a transaction; `what` names the change if it cannot.
    pub(super) async fn begin(&self, what: &'static str) -> Result<Tx<'static>, StoreError> {
        self.pool.begin().await.map_err(db(what))
    }
}

/// The one-row tables that number what nodes and readers ask for "after N"
/// of: snapshots, purges, guest log lines.
#[derive(Debug, Clone, Copy)]
pub(super) enum Counter {
    Snapshot,
    Purges,
    GuestLogs,
    KvChanges,
}

impl Counter {
    /// The counter's table and column (its row is `id = 1`).
    fn table_and_column(self) -> (&'static str, &'static str) {
        match self {
            Self::Snapshot => ("snapshot", "version"),
            Self::Purges => ("purge_counter", "seq"),
            Self::GuestLogs => ("guest_log_counter", "seq"),
            Self::KvChanges => ("kv_counter", "seq"),
        }
    }
}

/// The counter's value, read on `executor`: the pool, or a transaction
/// whose other reads must agree with it.
pub(super) async fn read_counter<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    counter: Counter,
    what: &'static str,
) -> Result<u64, StoreError> {
    let (table, column) = counter.table_and_column();
    let value: i64 = sqlx::query(&format!("SELECT {column} FROM {table} WHERE id = 1"))
        .fetch_one(executor)
        .await
        .map_err(db(what))?
        .get(0);
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Adds `by` to the counter in `tx`. Its row stays locked until `tx`
/// ends (on PostgreSQL; SQLite has one writer anyway), even when `by` is 0:
/// `lock_claims` adds 0 to serialize domain claims, so a `by == 0` call
/// must still run the update.
pub(super) async fn add_to_counter(
    tx: &mut Tx<'_>,
    counter: Counter,
    by: i64,
    what: &'static str,
) -> Result<(), StoreError> {
    let (table, column) = counter.table_and_column();
    sqlx::query(&format!(
        "UPDATE {table} SET {column} = {column} + $1 WHERE id = 1"
    ))
    .bind(by)
    .execute(&mut **tx)
    .await
    .map_err(db(what))?;
    Ok(())
}

/// Adds `by` to the counter in `tx` and returns its new value: the last of
/// the `by` numbers taken, none of which another transaction gets.
pub(super) async fn advance_counter(
    tx: &mut Tx<'_>,
    counter: Counter,
    by: i64,
    what: &'static str,
) -> Result<u64, StoreError> {
    add_to_counter(tx, counter, by, what).await?;
    read_counter(&mut **tx, counter, what).await
}

/// Bumps the snapshot version and commits `tx`: how every change that nodes
/// must see ends. Returns the new snapshot version.
pub(super) async fn commit_new_snapshot(
    mut tx: Tx<'_>,
    what: &'static str,
) -> Result<u64, StoreError> {
    let version = advance_counter(
        &mut tx,
        Counter::Snapshot,
        1,
        "bumping the snapshot version",
    )
    .await?;
    tx.commit().await.map_err(db(what))?;
    Ok(version)
}

/// Ends a change that may have found nothing to change: committed with a
/// new snapshot version (returned) if `changed`, otherwise rolled back
/// (`None`).
pub(super) async fn commit_new_snapshot_if(
    tx: Tx<'_>,
    changed: bool,
    what: &'static str,
) -> Result<Option<u64>, StoreError> {
    if !changed {
        return Ok(None);
    }
    commit_new_snapshot(tx, what).await.map(Some)
}

/// The id of the service a node names `<tenant>/<service>` (as in snapshots,
/// usage reports and log lines); `None` if there is no such service.
pub(super) async fn service_id_by_platform_name(
    tx: &mut Tx<'_>,
    name: &str,
) -> Result<Option<String>, sqlx::Error> {
    let Some((tenant, service)) = name.split_once('/') else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT s.id FROM services s JOIN tenants t ON t.id = s.tenant_id \
         WHERE t.name = $1 AND s.name = $2",
    )
    .bind(tenant)
    .bind(service)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

pub(super) fn spec_from(text: &str) -> Result<ServiceSpec, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("service spec: {e}")))
}

pub(super) fn spec_text(spec: &ServiceSpec) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

/// The service's current spec, read in `tx`.
pub(super) async fn current_spec(
    tx: &mut Tx<'_>,
    service_id: &str,
) -> Result<ServiceSpec, StoreError> {
    let row = sqlx::query("SELECT spec FROM services WHERE id = $1")
        .bind(service_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db("reading a service"))?;
    spec_from(&row.get::<String, _>(0))
}

pub(super) async fn write_spec(
    tx: &mut Tx<'_>,
    service_id: &str,
    spec: &ServiceSpec,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE services SET spec = $1 WHERE id = $2")
        .bind(spec_text(spec))
        .bind(service_id)
        .execute(&mut **tx)
        .await
        .map_err(db("updating a service"))?;
    Ok(())
}

/// The spec of the service's active version, if it has one.
pub(super) async fn active_spec(
    tx: &mut Tx<'_>,
    service_id: &str,
) -> Result<Option<ServiceSpec>, StoreError> {
    let row = sqlx::query(
        "SELECT v.spec FROM services s JOIN versions v \
         ON v.service_id = s.id AND v.number = s.active_version WHERE s.id = $1",
    )
    .bind(service_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db("reading the active version"))?;
    row.map(|row| spec_from(&row.get::<String, _>(0)))
        .transpose()
}
