//! Canary rollouts, and the history of who made which version serve.
//!
//! A canary is one row beside its service (`canaries`); every stretch of a
//! version serving, active or canary, is a row of `activations`, ended with
//! its outcome when the next stretch begins. While a canary runs, the nodes'
//! usage reports are also kept per version and per report
//! (`version_usage`), and [`Store::judge_canary`] compares the two
//! versions' error rates over the canary's window after each report.

use edge_config::api::{ActivationRecord, Canary, CanaryEnded, NewCanary, Rollout};
use edge_config::protocol::ServiceUsage;
use edge_config::rollout::{RollbackPolicy, StickyKey};
use sqlx::Row;

use super::db::{Store, StoreError, Tx, commit_new_snapshot, db, now_ms, to_i64};
use super::records::Service;

/// Who ends a canary the control plane rolled back.
pub const CONTROL_PLANE_ACTOR: &str = "control-plane";
/// How long per-version usage is kept: past the longest window.
const VERSION_USAGE_KEEP_MS: i64 = 2 * edge_config::rollout::MAX_ROLLBACK_WINDOW_SECS as i64 * 1000;

/// How a canary ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryOutcome {
    /// It becomes the active version.
    Promoted,
    /// Stopped by hand, or by another version's activation.
    Aborted,
    /// Stopped by the control plane: its error rate passed the stable
    /// version's by the policy's threshold.
    RolledBack,
}

impl CanaryOutcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Promoted => "promoted",
            Self::Aborted => "aborted",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// A canary rolled back after a usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    pub service_id: String,
    pub ended: CanaryEnded,
    pub reason: String,
}

impl Store {
    /// Starts `new.version` as the service's canary beside its active
    /// version, and bumps the snapshot version. Refused (`Rollout`) without
    /// an active version, for the active version itself, or while another
    /// canary runs; `Ok(None)` when the service has no such version.
    pub async fn start_canary(
        &self,
        service: &Service,
        new: &NewCanary,
        actor: &str,
    ) -> Result<Option<(Canary, u64)>, StoreError> {
        let mut tx = self.begin("starting a canary").await?;
        // Every rollout step takes the lock activations take, so that a
        // promotion, an abort, an activation and a rollback of one service
        // happen one after the other, on any number of replicas.
        super::domains::lock_claims(&mut tx).await?;
        let exists =
            sqlx::query("SELECT number FROM versions WHERE service_id = $1 AND number = $2")
                .bind(&service.id)
                .bind(new.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("reading a version"))?
                .is_some();
        if !exists {
            return Ok(None);
        }
        let active = active_version(&mut tx, &service.id).await?;
        match active {
            None => {
                return Err(StoreError::Rollout(
                    "the service has no active version for a canary to run beside".into(),
                ));
            }
            Some(active) if active == new.version => {
                return Err(StoreError::Rollout(format!(
                    "version {active} is the active version"
                )));
            }
            Some(_) => {}
        }
        if let Some(running) = running_canary(&mut tx, &service.id).await? {
            return Err(StoreError::Rollout(format!(
                "version {} is already a canary: promote or abort it first",
                running.version
            )));
        }
        let canary = Canary {
            version: new.version,
            percent: new.percent,
            sticky: new.sticky.clone(),
            rollback: new.rollback.clone(),
            started_at: now_ms(),
            started_by: actor.to_string(),
        };
        sqlx::query(
            "INSERT INTO canaries (service_id, version, percent, sticky, policy, started_at, started_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&service.id)
        .bind(canary.version)
        .bind(i64::from(canary.percent))
        .bind(json_text(&canary.sticky))
        .bind(json_text(&canary.rollback))
        .bind(canary.started_at)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(db("a canary of this service"))?;
        begin_stretch(
            &mut tx,
            &service.id,
            canary.version,
            "canary",
            Some(canary.percent),
            actor,
        )
        .await?;
        let snapshot = commit_new_snapshot(tx, "starting a canary").await?;
        Ok(Some((canary, snapshot)))
    }

    /// Ends the service's canary: promoted (it becomes the active version),
    /// aborted or rolled back; bumps the snapshot version. Refused
    /// (`Rollout`) when no canary runs.
    pub async fn end_canary(
        &self,
        service: &Service,
        outcome: CanaryOutcome,
        actor: &str,
        reason: &str,
    ) -> Result<CanaryEnded, StoreError> {
        let mut tx = self.begin("ending a canary").await?;
        super::domains::lock_claims(&mut tx).await?;
        let Some(canary) = running_canary(&mut tx, &service.id).await? else {
            return Err(StoreError::Rollout(
                "the service has no canary running".into(),
            ));
        };
        end_canary_in(&mut tx, &service.id, canary.version, outcome, actor, reason).await?;
        if outcome == CanaryOutcome::Promoted {
            let activated = self
                .activate_in(&mut tx, service, canary.version, actor)
                .await?;
            debug_assert!(activated, "a canary's version exists");
        }
        let active_version = active_version(&mut tx, &service.id).await?;
        let snapshot_version = commit_new_snapshot(tx, "ending a canary").await?;
        Ok(CanaryEnded {
            version: canary.version,
            outcome: outcome.label().to_string(),
            active_version,
            snapshot_version,
        })
    }

    /// The service's active version, its canary, and its history of
    /// activations, oldest first.
    pub async fn rollout(&self, service: &Service) -> Result<Rollout, StoreError> {
        let mut tx = self.begin("reading a rollout").await?;
        let active_version = active_version(&mut tx, &service.id).await?;
        let canary = running_canary(&mut tx, &service.id).await?;
        let rows = sqlx::query(
            "SELECT version, role, percent, started_by, started_at, ended_at, ended_by, outcome, reason \
             FROM activations WHERE service_id = $1 ORDER BY seq",
        )
        .bind(&service.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("reading a rollout"))?;
        tx.commit().await.map_err(db("reading a rollout"))?;
        let history = rows
            .iter()
            .map(|row| ActivationRecord {
                version: row.get(0),
                role: row.get(1),
                percent: row.get(2),
                started_by: row.get(3),
                started_at: row.get(4),
                ended_at: row.get(5),
                ended_by: row.get(6),
                outcome: row.get(7),
                reason: row.get(8),
            })
            .collect();
        Ok(Rollout {
            active_version,
            canary,
            history,
        })
    }

    /// Compares the canary's error rate with the stable version's over the
    /// canary's window, and rolls the canary back when its policy says so.
    /// `None`: no canary, too few requests yet, or a canary within bounds.
    /// The verdict is read without the rollout lock (it runs after every
    /// usage report); a rollback takes it, and rolls back only the canary
    /// it judged, if that is still running.
    pub async fn judge_canary(&self, service_id: &str) -> Result<Option<RolledBack>, StoreError> {
        let Some((canary, stable, reason)) = self.verdict(service_id).await? else {
            return Ok(None);
        };
        let mut tx = self.begin("rolling a canary back").await?;
        super::domains::lock_claims(&mut tx).await?;
        let still = running_canary(&mut tx, service_id).await?;
        if still.is_none_or(|running| {
            running.started_at != canary.started_at || running.version != canary.version
        }) {
            return Ok(None);
        }
        if active_version(&mut tx, service_id).await? != Some(stable) {
            return Ok(None);
        }
        end_canary_in(
            &mut tx,
            service_id,
            canary.version,
            CanaryOutcome::RolledBack,
            CONTROL_PLANE_ACTOR,
            &reason,
        )
        .await?;
        let snapshot_version = commit_new_snapshot(tx, "rolling a canary back").await?;
        Ok(Some(RolledBack {
            service_id: service_id.to_string(),
            ended: CanaryEnded {
                version: canary.version,
                outcome: CanaryOutcome::RolledBack.label().to_string(),
                active_version: Some(stable),
                snapshot_version,
            },
            reason,
        }))
    }

    /// The running canary, the stable version and the reason, when the
    /// canary's error rate over its window calls for a rollback.
    async fn verdict(&self, service_id: &str) -> Result<Option<(Canary, i64, String)>, StoreError> {
        let mut tx = self.begin("judging a canary").await?;
        let Some(canary) = running_canary(&mut tx, service_id).await? else {
            return Ok(None);
        };
        let Some(stable) = active_version(&mut tx, service_id).await? else {
            return Ok(None);
        };
        let window_ms = i64::try_from(canary.rollback.window_secs * 1000).unwrap_or(i64::MAX);
        let since = (now_ms() - window_ms).max(canary.started_at);
        let rows = sqlx::query(
            "SELECT version, CAST(SUM(requests) AS BIGINT), CAST(SUM(errors) AS BIGINT) \
             FROM version_usage WHERE service_id = $1 AND received_at >= $2 GROUP BY version",
        )
        .bind(service_id)
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("judging a canary"))?;
        let counts = |version: i64| {
            rows.iter()
                .find(|row| row.get::<i64, _>(0) == version)
                .map_or((0, 0), |row| {
                    let count = |i: usize| u64::try_from(row.get::<i64, _>(i)).unwrap_or(0);
                    (count(1), count(2))
                })
        };
        let (canary_counts, stable_counts) = (counts(canary.version), counts(stable));
        if canary.rollback.verdict(canary_counts, stable_counts) != Some(true) {
            return Ok(None);
        }
        let percent = edge_config::rollout::error_rate_pct;
        let reason = format!(
            "error rate {:.1} % ({} of {}) against {:.1} % ({} of {}) for v{stable} over {} s: more than {} points above",
            percent(canary_counts),
            canary_counts.1,
            canary_counts.0,
            percent(stable_counts),
            stable_counts.1,
            stable_counts.0,
            canary.rollback.window_secs,
            canary.rollback.threshold_pct,
        );
        tx.commit().await.map_err(db("judging a canary"))?;
        Ok(Some((canary, stable, reason)))
    }

    /// Deletes per-version usage older than any window needs.
    pub(super) async fn prune_version_usage(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM version_usage WHERE received_at < $1")
            .bind(now_ms() - VERSION_USAGE_KEEP_MS)
            .execute(&self.pool)
            .await
            .map_err(db("pruning per-version usage"))?;
        Ok(done.rows_affected())
    }

    /// Makes `number` the active version inside `tx`: its domains claimed
    /// again, the claims only the previous version needed released, and the
    /// history's active stretch ended and a new one begun. `false` when the
    /// service has no such version.
    pub(super) async fn activate_in(
        &self,
        tx: &mut Tx<'_>,
        service: &Service,
        number: i64,
        actor: &str,
    ) -> Result<bool, StoreError> {
        if !self.claim_version_domains(tx, service, number).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE services SET active_version = $1 WHERE id = $2")
            .bind(number)
            .bind(&service.id)
            .execute(&mut **tx)
            .await
            .map_err(db("activating a version"))?;
        sqlx::query(
            "UPDATE activations SET ended_at = $1, ended_by = $2, outcome = 'superseded', reason = $3 \
             WHERE service_id = $4 AND role = 'active' AND ended_at IS NULL",
        )
        .bind(now_ms())
        .bind(actor)
        .bind(format!("v{number} activated"))
        .bind(&service.id)
        .execute(&mut **tx)
        .await
        .map_err(db("recording an activation"))?;
        begin_stretch(tx, &service.id, number, "active", None, actor).await?;
        Ok(true)
    }
}

/// Keeps a usage report's requests and errors per version, for a service
/// with a canary running (any other service's are not needed).
pub(super) async fn record_version_usage(
    tx: &mut Tx<'_>,
    service_id: &str,
    usage: &ServiceUsage,
) -> Result<bool, StoreError> {
    let running = sqlx::query("SELECT version FROM canaries WHERE service_id = $1")
        .bind(service_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("recording usage"))?;
    if running.is_none() || usage.version == 0 {
        return Ok(false);
    }
    // A failure before the head is a 5xx; one after it is a cut response.
    let errors = usage.status_5xx.saturating_add(usage.responses_cut);
    sqlx::query(
        "INSERT INTO version_usage (service_id, version, received_at, requests, errors) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(service_id)
    .bind(to_i64(usage.version))
    .bind(now_ms())
    .bind(to_i64(usage.requests))
    .bind(to_i64(errors))
    .execute(&mut **tx)
    .await
    .map_err(db("recording usage"))?;
    Ok(true)
}

/// The canary of a service, if one runs.
pub(super) async fn running_canary(
    tx: &mut Tx<'_>,
    service_id: &str,
) -> Result<Option<Canary>, StoreError> {
    let row = sqlx::query(
        "SELECT version, percent, sticky, policy, started_at, started_by FROM canaries \
         WHERE service_id = $1",
    )
    .bind(service_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db("reading a canary"))?;
    row.map(|row| {
        Ok(Canary {
            version: row.get(0),
            percent: u8::try_from(row.get::<i64, _>(1)).unwrap_or(0),
            sticky: from_json::<StickyKey>(&row.get::<String, _>(2))?,
            rollback: from_json::<RollbackPolicy>(&row.get::<String, _>(3))?,
            started_at: row.get(4),
            started_by: row.get(5),
        })
    })
    .transpose()
}

/// Stops the service's canary inside `tx` and ends its stretch in the
/// history with `outcome`, `actor` and `reason`.
pub(super) async fn end_canary_in(
    tx: &mut Tx<'_>,
    service_id: &str,
    version: i64,
    outcome: CanaryOutcome,
    actor: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let deleted = sqlx::query("DELETE FROM canaries WHERE service_id = $1 AND version = $2")
        .bind(service_id)
        .bind(version)
        .execute(&mut **tx)
        .await
        .map_err(db("ending a canary"))?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::Rollout(
            "the service has no canary running".into(),
        ));
    }
    sqlx::query(
        "UPDATE activations SET ended_at = $1, ended_by = $2, outcome = $3, reason = $4 \
         WHERE service_id = $5 AND role = 'canary' AND version = $6 AND ended_at IS NULL",
    )
    .bind(now_ms())
    .bind(actor)
    .bind(outcome.label())
    .bind(reason)
    .bind(service_id)
    .bind(version)
    .execute(&mut **tx)
    .await
    .map_err(db("ending a canary"))?;
    Ok(())
}

async fn active_version(tx: &mut Tx<'_>, service_id: &str) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT active_version FROM services WHERE id = $1")
        .bind(service_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db("reading a service"))?;
    Ok(row.get(0))
}

/// Appends a stretch of `version` serving as `role` to the history.
async fn begin_stretch(
    tx: &mut Tx<'_>,
    service_id: &str,
    version: i64,
    role: &str,
    percent: Option<u8>,
    actor: &str,
) -> Result<(), StoreError> {
    let seq: i64 =
        sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM activations WHERE service_id = $1")
            .bind(service_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db("recording an activation"))?
            .get(0);
    sqlx::query(
        "INSERT INTO activations (service_id, seq, version, role, percent, started_by, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(service_id)
    .bind(seq)
    .bind(version)
    .bind(role)
    .bind(percent.map(i64::from))
    .bind(actor)
    .bind(now_ms())
    .execute(&mut **tx)
    .await
    .map_err(db("recording an activation"))?;
    Ok(())
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("canary: {e}")))
}
