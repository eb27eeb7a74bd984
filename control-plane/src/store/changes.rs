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
        // Created only where missing: creating a trigger locks its table
        // against writes, and every replica runs this at start.
        for (table, column) in [
            (SNAPSHOT_CHANGED, "version"),
            (PURGES_CHANGED, "seq"),
            (KV_CHANGED, "seq"),
        ] {
            let present = sqlx::query(
                "SELECT 1 FROM pg_trigger WHERE tgname = 'edge_notify_change' \
                 AND tgrelid = (SELECT oid FROM pg_class WHERE relname = $1)",
            )
            .bind(table)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db(what))?;
            if present.is_some() {
                continue;
            }
            // Only a moved counter is news (pruning touches other columns).
            sqlx::query(&format!(
                "CREATE TRIGGER edge_notify_change AFTER UPDATE ON {table} FOR EACH ROW \
                 WHEN (OLD.{column} IS DISTINCT FROM NEW.{column}) \
                 EXECUTE FUNCTION edge_notify_change()"
            ))
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
        }
        tx.commit().await.map_err(db(what))
    }
}
