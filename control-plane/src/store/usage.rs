//! Usage reports from nodes, counted once each, and what was pruned.

use edge_config::protocol::UsageReport;
use sqlx::Row;

use super::db::{Store, StoreError, db, now_ms, service_id_by_platform_name, to_i64};
use super::records::UsageTotals;
use super::rollouts::record_version_usage;

/// How long a usage report's id is remembered: a node resending a report
/// later than this (it was down for a week with the report on disk) has it
/// counted again.
const USAGE_REPORT_ID_KEEP_MS: i64 = 7 * 24 * 3600 * 1000;
/// What [`Store::add_usage`] did with a report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRecorded {
    /// `false`: a report this node sent before, not counted again.
    pub counted: bool,
    /// The services with a canary running that the report covered.
    pub canaries: Vec<String>,
}

/// Rows one pruning statement deletes at most.
pub(super) const PRUNE_BATCH: i64 = 10_000;

impl Store {
    /// Adds a node's usage report to the per-service totals, in one
    /// transaction, once: a report whose id this node sent before (in the
    /// last week) is not counted again. Services the report names that no
    /// longer exist are skipped. A service with a canary running also has
    /// its requests and errors kept per version, for
    /// [`Store::judge_canary`]. Returns whether it was counted, and the ids
    /// of the services with a canary it reported on.
    pub async fn add_usage(
        &self,
        node_id: &str,
        report: &UsageReport,
    ) -> Result<UsageRecorded, StoreError> {
        let mut tx = self.begin("recording usage").await?;
        if let Some(report_id) = &report.report_id {
            let now = now_ms();
            let new = sqlx::query(
                "INSERT INTO usage_reports (node_id, report_id, received_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (node_id, report_id) DO NOTHING",
            )
            .bind(node_id)
            .bind(report_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("recording usage"))?
            .rows_affected();
            if new == 0 {
                return Ok(UsageRecorded::default());
            }
        }
        let mut canaries = Vec::new();
        for usage in &report.services {
            let Some(service_id) = service_id_by_platform_name(&mut tx, &usage.service)
                .await
                .map_err(db("recording usage"))?
            else {
                continue;
            };
            if record_version_usage(&mut tx, &service_id, usage).await?
                && !canaries.contains(&service_id)
            {
                canaries.push(service_id.clone());
            }
            sqlx::query(&format!(
                "INSERT INTO usage (service_id, node_id, {columns}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (service_id, node_id) DO UPDATE SET {sums}",
                columns = USAGE_COLUMNS.join(", "),
                sums = saturating_sums(),
            ))
            .bind(service_id)
            .bind(node_id)
            .bind(to_i64(usage.requests))
            .bind(to_i64(usage.status_2xx))
            .bind(to_i64(usage.status_3xx))
            .bind(to_i64(usage.status_4xx))
            .bind(to_i64(usage.status_5xx))
            .bind(to_i64(usage.guest_cpu_micros))
            .bind(to_i64(usage.bytes_out))
            .execute(&mut *tx)
            .await
            .map_err(db("recording usage"))?;
        }
        tx.commit().await.map_err(db("recording usage"))?;
        Ok(UsageRecorded {
            counted: true,
            canaries,
        })
    }

    /// Deletes usage report ids older than a week (by the
    /// `usage_reports_by_age` index).
    pub async fn prune_usage_reports(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM usage_reports WHERE received_at < $1")
            .bind(now_ms() - USAGE_REPORT_ID_KEEP_MS)
            .execute(&self.pool)
            .await
            .map_err(db("pruning usage report ids"))?;
        Ok(done.rows_affected())
    }

    /// Prunes what has expired: purges, KV tombstones, usage report ids. Run by the
    /// control plane's pruning task, never on a request's path.
    pub async fn prune(&self) -> Result<(), StoreError> {
        // In batches, so that a backlog never holds the database long.
        while self.prune_purges(PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
        while self.prune_kv_tombstones(PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
        self.prune_usage_reports().await?;
        self.prune_version_usage().await?;
        Ok(())
    }

    /// Every tenant's usage per service, for `/metrics`.
    pub async fn all_usage(&self) -> Result<Vec<(String, UsageTotals)>, StoreError> {
        let mut all = Vec::new();
        for tenant in self.list_tenants().await? {
            for usage in self.usage(&tenant.id).await? {
                all.push((tenant.name.clone(), usage));
            }
        }
        Ok(all)
    }

    /// A tenant's usage per service, summed over nodes. The sums are made
    /// here, saturating, not in SQL: SQLite's `sum()` fails on an integer
    /// overflow, and one bad row would fail the whole answer (and
    /// `/metrics`).
    pub async fn usage(&self, tenant_id: &str) -> Result<Vec<UsageTotals>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT s.name, {columns} FROM services s LEFT JOIN usage u ON u.service_id = s.id \
             WHERE s.tenant_id = $1 ORDER BY s.name",
            columns = USAGE_COLUMNS.map(|c| format!("u.{c}")).join(", "),
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading usage"))?;
        let mut totals: Vec<UsageTotals> = Vec::new();
        for row in &rows {
            let service: String = row.get(0);
            let mut counts = [0i64; USAGE_COLUMNS.len()];
            for (i, count) in counts.iter_mut().enumerate() {
                // NULL for a service with no usage yet.
                *count = row
                    .try_get::<Option<i64>, _>(i + 1)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
            let total = match totals.last_mut() {
                Some(last) if last.service == service => last,
                _ => {
                    totals.push(UsageTotals {
                        service,
                        ..UsageTotals::default()
                    });
                    totals.last_mut().expect("just pushed")
                }
            };
            let [requests, s2, s3, s4, s5, cpu, bytes] = counts;
            total.requests = total.requests.saturating_add(requests);
            total.status_2xx = total.status_2xx.saturating_add(s2);
            total.status_3xx = total.status_3xx.saturating_add(s3);
            total.status_4xx = total.status_4xx.saturating_add(s4);
            total.status_5xx = total.status_5xx.saturating_add(s5);
            total.guest_cpu_micros = total.guest_cpu_micros.saturating_add(cpu);
            total.bytes_out = total.bytes_out.saturating_add(bytes);
        }
        Ok(totals)
    }
}

/// The counters of a `usage` row, in the order of [`UsageTotals`].
const USAGE_COLUMNS: [&str; 7] = [
    "requests",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "guest_cpu_micros",
    "bytes_out",
];

/// `col = usage.col + excluded.col` for each counter, stopping at
/// `i64::MAX` instead of failing the report (PostgreSQL raises on an
/// overflow).
fn saturating_sums() -> String {
    USAGE_COLUMNS
        .map(|c| {
            format!(
                "{c} = CASE WHEN usage.{c} > {max} - excluded.{c} THEN {max} \
                 ELSE usage.{c} + excluded.{c} END",
                max = i64::MAX
            )
        })
        .join(", ")
}
