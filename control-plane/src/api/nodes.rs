//! The node protocol (cluster token) and the operator's node list.
//!
//! A node registers once, then long-polls `GET /v1/node/snapshot?after=N`:
//! the answer comes as soon as the snapshot version passes `N`, or after the
//! wait with 304. It fetches the components and artifacts the snapshot names
//! by hash, and posts usage reports.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_config::protocol::{NodeRegistered, NodeRegistration, Snapshot, UsageReport};
use edge_node::modules::ModuleHash;
use serde::Deserialize;

use super::AppState;
use crate::auth::{Admin, ClusterNode};
use crate::error::ApiError;
use crate::store::NodeRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/node/register", post(register))
        .route("/v1/node/snapshot", get(snapshot))
        .route("/v1/node/usage", post(usage))
        .route("/v1/node/components/{sha256}", get(component))
        .route("/v1/node/artifacts/{sha256}/{fingerprint}", get(artifact))
        .route(
            "/v1/node/artifacts/{sha256}/{fingerprint}/manifest",
            get(artifact_manifest),
        )
        .route("/v1/nodes", get(list))
}

async fn register(
    _: ClusterNode,
    State(state): State<AppState>,
    Json(registration): Json<NodeRegistration>,
) -> Result<(StatusCode, Json<NodeRegistered>), ApiError> {
    let node_id = state
        .store
        .register_node(&registration.name, &registration.engine_fingerprint)
        .await?;
    let purge_seq = state.store.purge_seq().await?;
    Ok((
        StatusCode::CREATED,
        Json(NodeRegistered { node_id, purge_seq }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct SnapshotQuery {
    #[serde(default)]
    after: u64,
    node: Option<String>,
}

async fn snapshot(
    _: ClusterNode,
    State(state): State<AppState>,
    Query(query): Query<SnapshotQuery>,
) -> Result<Response, ApiError> {
    if let Some(node) = &query.node
        && !state.store.node_seen(node, query.after).await?
    {
        return Err(ApiError::not_found(format!("node {node}")));
    }
    let snapshot = super::long_poll(
        state.config.snapshot_wait,
        &state.snapshot_changed,
        || async {
            if state.store.snapshot_version().await? > query.after {
                Ok(Some(state.store.snapshot().await?))
            } else {
                Ok(None)
            }
        },
    )
    .await?;
    Ok(match snapshot {
        Some(snapshot) => Json::<Snapshot>(snapshot).into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    })
}

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    node: String,
}

async fn usage(
    _: ClusterNode,
    State(state): State<AppState>,
    Query(query): Query<UsageQuery>,
    Json(report): Json<UsageReport>,
) -> Result<StatusCode, ApiError> {
    if !state
        .store
        .node_seen(&query.node, report.snapshot_version)
        .await?
    {
        return Err(ApiError::not_found(format!("node {}", query.node)));
    }
    state.store.add_usage(&query.node, &report).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_hash(text: &str) -> Result<ModuleHash, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("invalid_hash", "expected a hex sha256"))
}

async fn file_response(path: std::path::PathBuf, what: String) -> Result<Response, ApiError> {
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(bytes),
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found(what)),
        Err(e) => Err(ApiError::internal("reading a stored module", &e)),
    }
}

async fn component(
    _: ClusterNode,
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&sha256)?;
    file_response(
        state.modules.component_path(&hash),
        format!("component {hash}"),
    )
    .await
}

/// The artifact for an engine fingerprint; a node whose engine has no
/// artifact here gets 404 and compiles the component itself.
async fn artifact(
    _: ClusterNode,
    State(state): State<AppState>,
    Path((sha256, fingerprint)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    artifact_file(&state, &sha256, &fingerprint, ArtifactFile::Artifact).await
}

async fn artifact_manifest(
    _: ClusterNode,
    State(state): State<AppState>,
    Path((sha256, fingerprint)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    artifact_file(&state, &sha256, &fingerprint, ArtifactFile::Manifest).await
}

enum ArtifactFile {
    Artifact,
    Manifest,
}

async fn artifact_file(
    state: &AppState,
    sha256: &str,
    fingerprint: &str,
    file: ArtifactFile,
) -> Result<Response, ApiError> {
    let hash = parse_hash(sha256)?;
    if fingerprint != state.modules.fingerprint() {
        return Err(ApiError::not_found(format!(
            "artifact for engine {fingerprint}"
        )));
    }
    let (artifact, manifest) = state.modules.artifact_paths(&hash);
    match file {
        ArtifactFile::Artifact => file_response(artifact, format!("artifact {hash}")).await,
        ArtifactFile::Manifest => {
            file_response(manifest, format!("artifact manifest {hash}")).await
        }
    }
}

async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<NodeRecord>>, ApiError> {
    Ok(Json(state.store.nodes().await?))
}
