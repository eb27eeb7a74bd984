//! KV stores: a tenant creates, lists and deletes its stores and reads and
//! writes their keys (`/v1/kv/...`); nodes follow every store's changes
//! through a long-poll of their own (`GET /v1/node/kv?after=N`) and send
//! their guests' writes (`POST /v1/node/kv/write`), which are decided here.
//!
//! Writes from both sides share one per-tenant rate
//! (`--kv-writes-per-second`) and the stores' quotas.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use edge_config::state::{
    KV_LIST_PAGE_KEYS, KV_MAX_BATCH_BYTES, KV_MAX_BATCH_KEYS, KV_MAX_VALUE_BYTES, KvExpect,
    KvImport, KvImported, KvKeyPage, KvOp, KvStoreInfo, KvWrite, KvWritten, NewKvStore, check_name,
};

use super::state::AppState;
use crate::auth::{NodeCaller, TenantCaller};
use crate::error::ApiError;
use crate::store::kv::KvQuotas;

/// Entries one import may set.
pub const MAX_IMPORT_ENTRIES: usize = 1_000;
/// Largest import body: the entries' values in base64, and their keys.
const MAX_IMPORT_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest guest write a node sends: a batch's values in base64.
const MAX_NODE_WRITE_BODY_BYTES: usize = 2 * KV_MAX_BATCH_BYTES;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/kv", post(create_store).get(list_stores))
        .route("/v1/kv/{store}", axum::routing::delete(delete_store))
        .route("/v1/kv/{store}/keys", get(list_keys))
        .route(
            "/v1/kv/{store}/keys/{*key}",
            put(put_key)
                .get(get_key)
                .delete(delete_key)
                .layer(DefaultBodyLimit::max(KV_MAX_VALUE_BYTES)),
        )
        .route(
            "/v1/kv/{store}/import",
            post(import).layer(DefaultBodyLimit::max(MAX_IMPORT_BODY_BYTES)),
        )
        .route("/v1/node/kv", get(feed))
        .route(
            "/v1/node/kv/write",
            post(node_write).layer(DefaultBodyLimit::max(MAX_NODE_WRITE_BODY_BYTES)),
        )
}

fn quotas(state: &AppState) -> KvQuotas {
    KvQuotas {
        max_keys_per_store: state.config.quotas.max_kv_keys_per_store,
        max_bytes_per_tenant: state.config.quotas.max_kv_bytes_per_tenant,
    }
}

/// The id of the caller's store `name`, or 404.
async fn own_store(
    state: &AppState,
    caller: &TenantCaller,
    name: &str,
) -> Result<String, ApiError> {
    state
        .store
        .kv_store_id(&caller.tenant.id, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("KV store {name:?}")))
}

async fn create_store(
    caller: TenantCaller,
    State(state): State<AppState>,
    Json(new): Json<NewKvStore>,
) -> Result<(StatusCode, Json<KvStoreInfo>), ApiError> {
    check_name("store", &new.name).map_err(|m| ApiError::bad_request("invalid_name", m))?;
    state.quotas.activation(&caller.tenant.id)?;
    let created = state
        .store
        .create_kv_store(
            &caller.tenant.id,
            &new.name,
            state.config.quotas.max_kv_stores_per_tenant,
        )
        .await?;
    state
        .snapshot_changed
        .send_replace(state.store.snapshot_version().await?);
    tracing::info!(tenant = %caller.tenant.name, store = %new.name, "KV store created");
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list_stores(
    caller: TenantCaller,
    State(state): State<AppState>,
) -> Result<Json<Vec<KvStoreInfo>>, ApiError> {
    Ok(Json(state.store.kv_stores(&caller.tenant.id).await?))
}

async fn delete_store(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.quotas.activation(&caller.tenant.id)?;
    if !state
        .store
        .delete_kv_store(&caller.tenant.id, &name)
        .await?
    {
        return Err(ApiError::not_found(format!("KV store {name:?}")));
    }
    state
        .snapshot_changed
        .send_replace(state.store.snapshot_version().await?);
    tracing::info!(tenant = %caller.tenant.name, store = %name, "KV store deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
struct KeysQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    limit: Option<usize>,
}

async fn list_keys(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<KeysQuery>,
) -> Result<Json<KvKeyPage>, ApiError> {
    let store = own_store(&state, &caller, &name).await?;
    let limit = query
        .limit
        .unwrap_or(KV_LIST_PAGE_KEYS)
        .clamp(1, KV_LIST_PAGE_KEYS);
    Ok(Json(
        state
            .store
            .kv_keys(&store, &query.prefix, &query.after, limit)
            .await?,
    ))
}

async fn get_key(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = own_store(&state, &caller, &name).await?;
    match state.store.kv_get(&store, &key).await? {
        Some((value, version)) => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::ETAG, format!("\"{version}\"")),
            ],
            value,
        )
            .into_response()),
        None => Err(ApiError::not_found(format!("key {key:?}"))),
    }
}

/// A write's condition from its headers (RFC 9110 §13.1): `If-Match:
/// "<version>"` (the `ETag` a read returned) or `If-None-Match: *` (the key
/// is absent).
fn expectation(headers: &HeaderMap) -> Result<Option<KvExpect>, ApiError> {
    let bad = |name: &str| {
        ApiError::bad_request(
            "invalid_precondition",
            format!("{name}: give one version as a read's ETag returned it, or *"),
        )
    };
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        return match value.to_str().map(str::trim) {
            Ok("*") => Ok(Some(KvExpect::Absent)),
            _ => Err(bad("If-None-Match")),
        };
    }
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|text| text.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|version| version.parse().ok())
        .map(|version| Some(KvExpect::Version(version)))
        .ok_or_else(|| bad("If-Match"))
}

/// Applies a tenant's write to its store `store`, within the rate and quotas.
async fn write(
    state: &AppState,
    tenant_id: &str,
    store: &str,
    op: &KvOp,
    keys: usize,
) -> Result<KvWritten, ApiError> {
    state.quotas.kv_writes(tenant_id, keys)?;
    let written = state
        .store
        .kv_write(tenant_id, store, op, quotas(state))
        .await?;
    if let Some(last) = written.changes.last() {
        state.kv_changed.send_replace(last.seq);
    }
    Ok(written)
}

/// Sets a key; with `If-Match` or `If-None-Match`, only if the key is as
/// expected (412 otherwise). Answers the new version as the `ETag`.
async fn put_key(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    headers: HeaderMap,
    value: Bytes,
) -> Result<Response, ApiError> {
    let expect = expectation(&headers)?;
    let store = own_store(&state, &caller, &name).await?;
    let op = KvOp::Set {
        key,
        value: value.to_vec(),
        expect,
    };
    let written = write(&state, &caller.tenant.id, &store, &op, 1).await?;
    let version = written.changes.last().map_or(0, |change| change.seq);
    Ok((
        StatusCode::NO_CONTENT,
        [(header::ETAG, format!("\"{version}\""))],
    )
        .into_response())
}

async fn delete_key(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expect = expectation(&headers)?;
    let store = own_store(&state, &caller, &name).await?;
    write(
        &state,
        &caller.tenant.id,
        &store,
        &KvOp::Delete { key, expect },
        1,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets many keys in one transaction. Every key counts against the rate
/// and the quotas; an import larger than a second's rate takes the whole
/// second.
async fn import(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(import): Json<KvImport>,
) -> Result<Json<KvImported>, ApiError> {
    if import.entries.len() > MAX_IMPORT_ENTRIES {
        return Err(ApiError::bad_request(
            "invalid_kv",
            format!("an import may set at most {MAX_IMPORT_ENTRIES} entries; split it"),
        ));
    }
    let store = own_store(&state, &caller, &name).await?;
    let imported = import.entries.len();
    let op = KvOp::SetMany {
        entries: import.entries,
    };
    let written = write(&state, &caller.tenant.id, &store, &op, imported).await?;
    let imported = imported as u64;
    Ok(Json(KvImported {
        imported,
        seq: written.changes.last().map_or(0, |change| change.seq),
    }))
}

/// A feed poll: the node's position, and the pruned tombstones its last
/// reset was told of.
#[derive(Debug, serde::Deserialize)]
struct FeedQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    floor: u64,
}

/// Answers as soon as there is a change after `after`, or with 304 after
/// the wait.
async fn feed(
    _node: NodeCaller,
    State(state): State<AppState>,
    Query(query): Query<FeedQuery>,
) -> Result<Response, ApiError> {
    let batch = super::state::long_poll(state.config.snapshot_wait, &state.kv_changed, || async {
        let batch = state.store.kv_feed(query.after, query.floor).await?;
        Ok((batch.reset || batch.through > query.after).then_some(batch))
    })
    .await?;
    Ok(match batch {
        Some(batch) => Json(batch).into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    })
}

/// A guest's write, sent by its node. The node named the tenant from the
/// service it runs; the store must be that tenant's, and the tenant not
/// suspended.
async fn node_write(
    _node: NodeCaller,
    State(state): State<AppState>,
    Json(request): Json<KvWrite>,
) -> Result<Json<KvWritten>, ApiError> {
    let keys = match &request.op {
        KvOp::SetMany { entries } => entries.len(),
        KvOp::DeleteMany { keys } => keys.len(),
        _ => 1,
    };
    if keys > KV_MAX_BATCH_KEYS {
        return Err(ApiError::bad_request(
            "invalid_kv",
            format!("a batch may name at most {KV_MAX_BATCH_KEYS} keys"),
        ));
    }
    let tenant = state
        .store
        .tenant_by_name(&request.tenant)
        .await?
        .filter(|tenant| !tenant.suspended)
        .ok_or_else(|| ApiError::not_found("KV store"))?;
    let written = write(&state, &tenant.id, &request.store, &request.op, keys).await?;
    Ok(Json(written))
}
