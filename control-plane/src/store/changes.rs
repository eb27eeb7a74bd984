//! On PostgreSQL, several replicas share the database: each commit that
//! moves the snapshot, purge or KV counter sends a notice on
//! [`CHANGES_CHANNEL`] naming the counter's table, so that the other
//! replicas wake their long-polls at once (see [`crate::replicas`]).
//! PostgreSQL delivers a notice only when its transaction commits.

use super::db::{Store, StoreError, db};

/// The PostgreSQL notification channel counters' changes go out on.
pub const CHANGES_CHANNEL: &str = "edge_changes";
/// The payloads: the counter tables' names.
pub const SNAPSHOT_CHANGED: &str = "snapshot";
pub const PURGES_CHANGED: &str = "purge_counter";
pub const KV_CHANGED: &str = "kv_counter";

impl Store {
    /// Installs the trigger that sends the notices (PostgreSQL only; run
    /// at every start, so a database from before it gets it too).
    pub(super) async fn install_change_notices(&self) -> Result<(), StoreError> {
        if self.postgres_url.is_none() {
            return Ok(());
        }
        let what = "installing the replicas' change notices";
        let mut tx = self.begin(what).await?;
        self.lock_migrations(&mut tx).await?;
        let function = format!(
            "CREATE OR REPLACE FUNCTION edge_notify_change() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_notify('{CHANGES_CHANNEL}', TG_TABLE_NAME); RETURN NULL; END $$"
        );
        sqlx::query(&function)
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
        for table in [SNAPSHOT_CHANGED, PURGES_CHANGED, KV_CHANGED] {
            sqlx::query(&format!(
                "CREATE OR REPLACE TRIGGER edge_notify_change AFTER UPDATE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION edge_notify_change()"
            ))
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
        }
        tx.commit().await.map_err(db(what))
    }
}
