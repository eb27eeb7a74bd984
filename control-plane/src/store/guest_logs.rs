//! Guests' log lines, as nodes ship them. Each line is numbered in the order
//! it arrived, so a reader (`edgectl logs --follow`) asks for the lines
//! after the last one it saw. Only the newest
//! [`MAX_GUEST_LOG_LINES_PER_SERVICE`] lines of a service are kept.

use std::collections::HashMap;

use edge_config::protocol::{GuestLogLine, bounded_log_line};
use sqlx::Row;

use super::db::{
    Counter, Store, StoreError, advance_counter, db, service_id_by_platform_name, to_i64,
};
use super::records::Service;
pub use edge_config::api::StoredLogLine;

/// Lines kept per service; older ones are deleted as new ones arrive.
pub const MAX_GUEST_LOG_LINES_PER_SERVICE: i64 = 10_000;
/// Longest line stored; a longer one is cut (as nodes already do).
pub use edge_config::protocol::MAX_GUEST_LOG_LINE_BYTES;
/// Most lines one read returns.
pub const MAX_GUEST_LOG_LINES_PER_READ: u64 = 1_000;

impl Store {
    /// Stores the lines of a node's shipment, in one transaction. Lines of
    /// services that no longer exist are skipped. Returns how many were
    /// stored.
    pub async fn add_guest_logs(
        &self,
        node_id: &str,
        lines: &[GuestLogLine],
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin("storing guest logs").await?;
        let mut service_ids: HashMap<&str, Option<String>> = HashMap::new();
        for line in lines {
            if !service_ids.contains_key(line.service.as_str()) {
                let id = service_id_by_platform_name(&mut tx, &line.service)
                    .await
                    .map_err(db("storing guest logs"))?;
                service_ids.insert(&line.service, id);
            }
        }
        let kept: Vec<(&GuestLogLine, &str)> = lines
            .iter()
            .filter_map(|line| {
                let id = service_ids.get(line.service.as_str())?.as_deref()?;
                Some((line, id))
            })
            .collect();
        if kept.is_empty() {
            return Ok(0);
        }
        let count = i64::try_from(kept.len()).unwrap_or(i64::MAX);
        let last =
            advance_counter(&mut tx, Counter::GuestLogs, count, "numbering guest logs").await?;
        let first = to_i64(last) - count + 1;
        for (offset, (line, service_id)) in kept.iter().enumerate() {
            sqlx::query(
                "INSERT INTO guest_logs (id, service_id, node_id, version, request_id, stream, \
                 timestamp_ms, line) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(first + offset as i64)
            .bind(*service_id)
            .bind(node_id)
            .bind(to_i64(line.version))
            .bind(&line.request_id)
            .bind(&line.stream)
            .bind(to_i64(line.timestamp_ms))
            .bind(bounded_log_line(&line.line))
            .execute(&mut *tx)
            .await
            .map_err(db("storing guest logs"))?;
        }
        let mut touched: Vec<&str> = kept.iter().map(|(_, id)| *id).collect();
        touched.sort_unstable();
        touched.dedup();
        for service_id in touched {
            let oldest_kept = sqlx::query(
                "SELECT id FROM guest_logs WHERE service_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
            )
            .bind(service_id)
            .bind(MAX_GUEST_LOG_LINES_PER_SERVICE - 1)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("pruning guest logs"))?;
            if let Some(row) = oldest_kept {
                sqlx::query("DELETE FROM guest_logs WHERE service_id = $1 AND id < $2")
                    .bind(service_id)
                    .bind(row.get::<i64, _>(0))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("pruning guest logs"))?;
            }
        }
        tx.commit().await.map_err(db("storing guest logs"))?;
        Ok(kept.len())
    }

    /// A service's lines after `after`, oldest first, at most `limit`;
    /// only those of one request when `request_id` is given. `after = None`
    /// starts from the newest `limit` lines.
    pub async fn guest_logs(
        &self,
        service: &Service,
        after: Option<i64>,
        request_id: Option<&str>,
        limit: u64,
    ) -> Result<Vec<StoredLogLine>, StoreError> {
        let limit = to_i64(limit.min(MAX_GUEST_LOG_LINES_PER_READ));
        // Reading on from a line: the oldest after it. Starting out: the
        // newest, put back in order below.
        let order = if after.is_some() { "ASC" } else { "DESC" };
        let rows = sqlx::query(&format!(
            "SELECT id, timestamp_ms, node_id, version, request_id, stream, line \
             FROM guest_logs WHERE service_id = $1 AND id > $2 \
             AND ($3 = '' OR request_id = $3) ORDER BY id {order} LIMIT $4"
        ))
        .bind(&service.id)
        .bind(after.unwrap_or(0))
        .bind(request_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading guest logs"))?;
        let mut lines: Vec<StoredLogLine> = rows
            .iter()
            .map(|row| StoredLogLine {
                id: row.get(0),
                timestamp_ms: row.get(1),
                node: row.get(2),
                version: row.get(3),
                request_id: row.get(4),
                stream: row.get(5),
                line: row.get(6),
            })
            .collect();
        lines.sort_by_key(|line| line.id);
        Ok(lines)
    }
}
