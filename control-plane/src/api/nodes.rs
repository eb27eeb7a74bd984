//! The node protocol (cluster token) and the operator's node list.
//!
//! A node registers once, then long-polls `GET /v1/node/snapshot?after=N`:
//! the answer comes as soon as the snapshot version passes `N` (whole, or
//! with `delta=true` what changed since `N`: [`crate::snapshots`]), or
//! after the wait with 304. It fetches the components and artifacts the snapshot names
//! by hash, and posts usage reports.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_config::protocol::{
    MAX_REPORT_ID_BYTES, NodeRegistered, NodeRegistration, NodeStatus, SNAPSHOT_KIND_HEADER,
    UsageReport,
};
use edge_platform::ModuleHash;

use super::state::AppState;
use crate::auth::{Admin, ClusterMember, ClusterNode, NodeCaller};
use crate::blobs::ArtifactFile;
use crate::error::ApiError;
use crate::store::NodeRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/node/register", post(register))
        .route("/v1/node/snapshot", get(snapshot))
        .route("/v1/node/usage", post(usage))
        .route("/v1/node/status", post(status))
        .route("/v1/node/components/{sha256}", get(component))
        .route("/v1/node/artifacts/{sha256}/{fingerprint}", get(artifact))
        .route(
            "/v1/node/artifacts/{sha256}/{fingerprint}/manifest",
            get(artifact_manifest),
        )
        .route("/v1/nodes", get(list))
        .route("/v1/nodes/{id}", axum::routing::delete(remove))
}

async fn register(
    _: ClusterNode,
    State(state): State<AppState>,
    Json(registration): Json<NodeRegistration>,
) -> Result<(StatusCode, Json<NodeRegistered>), ApiError> {
    let name = &registration.name;
    if name.is_empty()
        || name.len() > MAX_NODE_NAME_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ApiError::bad_request(
            "invalid_node_name",
            format!("a node name is 1 to {MAX_NODE_NAME_BYTES} letters, digits, '-', '_' or '.'"),
        ));
    }
    let node_token = crate::auth::new_token();
    let node_id = state
        .store
        .register_node(
            &registration.name,
            &registration.engine_fingerprint,
            &crate::auth::token_sha256(&node_token),
        )
        .await?;
    let purge_seq = state.store.purge_seq().await?;
    Ok((
        StatusCode::CREATED,
        Json(NodeRegistered {
            node_id,
            node_token,
            purge_seq,
        }),
    ))
}

/// Records that `node` serves `snapshot_version`, as every call of its
/// own says.
async fn record_seen(
    state: &AppState,
    node: &NodeCaller,
    snapshot_version: u64,
) -> Result<(), ApiError> {
    let seen = state.store.node_seen(&node.id, snapshot_version).await?;
    node.still_registered(seen)
}

/// `?after=N&delta=true`: the version the node has, and whether it can
/// take a delta from it.
#[derive(Debug, serde::Deserialize)]
struct SnapshotQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    delta: bool,
}

async fn snapshot(
    node: NodeCaller,
    State(state): State<AppState>,
    Query(query): Query<SnapshotQuery>,
) -> Result<Response, ApiError> {
    state.sightings.serves_snapshot(&node.id, query.after);
    let answer = super::state::long_poll(
        state.config.snapshot_wait,
        &state.snapshot_changed,
        || async {
            // The version this replica last committed or heard of is never
            // ahead of the database: when it is news to the node, the
            // polls one change wakes need not each read the database. The
            // database is read when it is not, for a change another
            // replica committed whose notice has not come.
            let heard = *state.snapshot_changed.borrow();
            let version = if heard > query.after {
                heard
            } else {
                state.store.snapshot_version().await?
            };
            if version <= query.after {
                return Ok(None);
            }
            let answer = state
                .snapshots
                .answer(
                    &state.store,
                    version,
                    query.after,
                    query.delta,
                    &state.metrics.snapshot_builds,
                )
                .await?;
            Ok(Some(answer))
        },
    )
    .await?;
    let Some(answer) = answer else {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    };
    state
        .metrics
        .snapshots_sent
        .with_label_values(&[answer.kind])
        .inc();
    state
        .metrics
        .snapshot_bytes_sent
        .with_label_values(&[answer.kind])
        .inc_by(answer.json.len() as u64);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static(SNAPSHOT_KIND_HEADER),
                answer.kind,
            ),
        ],
        answer.json,
    )
        .into_response())
}

async fn usage(
    node: NodeCaller,
    State(state): State<AppState>,
    Json(report): Json<UsageReport>,
) -> Result<StatusCode, ApiError> {
    check_usage(&report)?;
    record_seen(&state, &node, report.snapshot_version).await?;
    let recorded = state.store.add_usage(&node.id, &report).await?;
    // Each report is a moment to judge the canaries it covered: a bad one
    // is rolled back with no one calling the API.
    for service_id in &recorded.canaries {
        if let Some(rolled_back) = state.store.judge_canary(service_id).await? {
            tracing::warn!(
                service_id,
                version = rolled_back.ended.version,
                reason = %rolled_back.reason,
                "canary rolled back"
            );
            state
                .metrics
                .canary_ends
                .with_label_values(&["rolled_back"])
                .inc();
            state
                .snapshot_changed
                .send_replace(rolled_back.ended.snapshot_version);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Bytes of a node's name.
pub const MAX_NODE_NAME_BYTES: usize = 128;

/// The operator removes a node: its credential is refused from then on
/// (with a new cluster token, a node that was compromised cannot register
/// again), and what it reported about failed services goes with it.
async fn remove(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Forgotten before and after the delete: a lookup that read the row
    // before it was deleted is not believed.
    state.node_credentials.forget(&id);
    let removed = state.store.remove_node(&id).await?;
    state.node_credentials.forget(&id);
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("node {id}")))
    }
}

/// The services the node could not load in the snapshot it applied.
async fn status(
    node: NodeCaller,
    State(state): State<AppState>,
    Json(status): Json<NodeStatus>,
) -> Result<StatusCode, ApiError> {
    // Kept to be written with the next batch: a node removed meanwhile is
    // skipped there, as its credential is refused from then on.
    state
        .sightings
        .reported_status(&node.id, status.snapshot_version, status.failures);
    Ok(StatusCode::NO_CONTENT)
}

/// Requests one report may count for one service: a node serving a
/// million requests a second reports every few seconds; this is two weeks
/// of that.
pub const MAX_REPORTED_REQUESTS: u64 = 1 << 40;
/// Guest CPU one report may count for one service (about 35 years of one
/// core). Not tied to the report's request count: a request is counted at
/// its response head, and its guest's CPU and a streamed body's bytes may
/// land in the next report.
pub const MAX_REPORTED_CPU_MICROS: u64 = 1 << 50;
/// Bytes one report may count for one service (64 PiB).
pub const MAX_REPORTED_BYTES: u64 = 1 << 56;

/// Refuses a report with counts no node could have served: more requests
/// than [`MAX_REPORTED_REQUESTS`], more responses than requests (both are
/// counted at the response head), more CPU or bytes than the absolute
/// bounds. Each value then stays far from overflowing a sum (and the sums
/// saturate anyway).
fn check_usage(report: &UsageReport) -> Result<(), ApiError> {
    if let Some(id) = &report.report_id
        && (id.is_empty() || id.len() > MAX_REPORT_ID_BYTES)
    {
        return Err(ApiError::bad_request(
            "invalid_report",
            format!("report_id: 1 to {MAX_REPORT_ID_BYTES} bytes"),
        ));
    }
    for usage in &report.services {
        let implausible = |what: String| {
            Err(ApiError::bad_request(
                "implausible_usage",
                format!("{}: {what}", usage.service),
            ))
        };
        let responses = [
            usage.status_2xx,
            usage.status_3xx,
            usage.status_4xx,
            usage.status_5xx,
        ]
        .iter()
        .try_fold(0u64, |sum, n| sum.checked_add(*n));
        if usage.requests > MAX_REPORTED_REQUESTS {
            return implausible(format!(
                "{} requests in one report (at most {MAX_REPORTED_REQUESTS})",
                usage.requests
            ));
        }
        if responses.is_none_or(|responses| responses > usage.requests) {
            return implausible("more responses than requests".into());
        }
        if usage.guest_cpu_micros > MAX_REPORTED_CPU_MICROS {
            return implausible(format!(
                "{} µs of guest CPU in one report (at most {MAX_REPORTED_CPU_MICROS})",
                usage.guest_cpu_micros
            ));
        }
        if usage.bytes_out > MAX_REPORTED_BYTES {
            return implausible(format!(
                "{} bytes out in one report (at most {MAX_REPORTED_BYTES})",
                usage.bytes_out
            ));
        }
    }
    Ok(())
}

fn parse_hash(text: &str) -> Result<ModuleHash, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("invalid_hash", "expected a hex sha256"))
}

fn blob_response(
    found: Result<Option<Vec<u8>>, crate::blobs::BlobError>,
    what: String,
) -> Result<Response, ApiError> {
    match found {
        Ok(Some(bytes)) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(bytes),
        )
            .into_response()),
        Ok(None) => Err(ApiError::not_found(what)),
        Err(e) => Err(ApiError::internal("reading a stored module", &e)),
    }
}

async fn component(
    _: ClusterMember,
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&sha256)?;
    blob_response(
        state.blobs.component(&hash).await,
        format!("component {hash}"),
    )
}

/// The artifact for an engine fingerprint; a node whose engine has no
/// artifact here gets 404 and compiles the component itself.
async fn artifact(
    _: ClusterMember,
    State(state): State<AppState>,
    Path((sha256, fingerprint)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    artifact_file(&state, &sha256, &fingerprint, ArtifactFile::Artifact).await
}

async fn artifact_manifest(
    _: ClusterMember,
    State(state): State<AppState>,
    Path((sha256, fingerprint)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    artifact_file(&state, &sha256, &fingerprint, ArtifactFile::Manifest).await
}

async fn artifact_file(
    state: &AppState,
    sha256: &str,
    fingerprint: &str,
    file: ArtifactFile,
) -> Result<Response, ApiError> {
    let hash = parse_hash(sha256)?;
    if fingerprint != state.blobs.fingerprint() {
        return Err(ApiError::not_found(format!(
            "artifact for engine {fingerprint}"
        )));
    }
    let what = match file {
        ArtifactFile::Artifact => format!("artifact {hash}"),
        ArtifactFile::Manifest => format!("artifact manifest {hash}"),
    };
    blob_response(state.blobs.artifact(&hash, file).await, what)
}

async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<NodeRecord>>, ApiError> {
    Ok(Json(state.store.nodes().await?))
}
