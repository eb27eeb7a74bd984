//! The OpenAPI 3.1 document for the whole API, served at `/openapi.json`.
//! Written out by hand next to the routers it describes; a test checks that
//! every route the routers serve is in it.

use axum::Json;
use serde_json::{Value, json};

/// Every documented operation: (method, path, summary, who may call it).
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    (
        "post",
        "/v1/tenants",
        "Create a tenant and its first API token",
        "admin",
    ),
    ("get", "/v1/tenants", "List tenants", "admin"),
    (
        "post",
        "/v1/tenants/{tenant}/suspend",
        "Suspend a tenant: its services leave every snapshot, its tokens get 403",
        "admin",
    ),
    (
        "post",
        "/v1/tenants/{tenant}/resume",
        "Resume a suspended tenant",
        "admin",
    ),
    (
        "delete",
        "/v1/tenants/{tenant}/tokens",
        "Revoke every API token of a tenant",
        "admin",
    ),
    (
        "get",
        "/v1/tokens",
        "List the calling tenant's tokens (ids and labels, never the tokens)",
        "tenant",
    ),
    (
        "delete",
        "/v1/tokens/{id}",
        "Revoke one of the calling tenant's tokens",
        "tenant",
    ),
    (
        "delete",
        "/v1/services/{service}",
        "Delete a service: nodes stop serving it and its domains are released",
        "tenant",
    ),
    (
        "get",
        "/v1/services/{service}/domains",
        "The service's platform domain and custom domains, with their status and TXT challenge",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/domains",
        "Claim a custom domain (409 if it overlaps another tenant's); pending until verified",
        "tenant",
    ),
    (
        "delete",
        "/v1/services/{service}/domains/{domain}",
        "Release a custom domain: nodes stop routing it",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/domains/{domain}/verify",
        "Check the claim's TXT record through the platform's resolver; verified (and routed) if it holds the token, else 409",
        "tenant",
    ),
    (
        "post",
        "/v1/domains/{domain}/approve",
        "Approve a pending domain claim: nodes route it from the next snapshot",
        "admin",
    ),
    (
        "post",
        "/v1/tokens",
        "Create another API token for the calling tenant",
        "tenant",
    ),
    ("post", "/v1/services", "Create a service", "tenant"),
    (
        "post",
        "/v1/purge",
        "Purge the tenant's cache on every node, by {\"url\"} or {\"surrogate_key\"}; with \"soft\": true the entries are marked stale (revalidated, served stale while the origin fails) instead of removed",
        "tenant",
    ),
    (
        "get",
        "/v1/purge/{seq}",
        "How many healthy nodes have applied a purge",
        "tenant",
    ),
    (
        "get",
        "/v1/node/purges",
        "Long-poll the purges after `after`; acknowledges everything through it",
        "node",
    ),
    (
        "get",
        "/v1/services",
        "List the tenant's services",
        "tenant",
    ),
    ("get", "/v1/services/{service}", "Show a service", "tenant"),
    (
        "put",
        "/v1/services/{service}/certificate",
        "Upload the service's TLS certificate: {\"cert_pem\", \"key_pem\"}; checked, then sent to every node",
        "tenant",
    ),
    (
        "get",
        "/v1/services/{service}/certificate",
        "Show the service's certificate fingerprint (never the key)",
        "tenant",
    ),
    (
        "delete",
        "/v1/services/{service}/certificate",
        "Remove the service's certificate (its clients get the node's default)",
        "tenant",
    ),
    (
        "put",
        "/v1/services/{service}",
        "Replace a service's spec (effective from the next version)",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/modules",
        "Upload a component (raw bytes); validated, compiled, stored by sha256",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/versions",
        "Create a version from an uploaded module, optionally activating it",
        "tenant",
    ),
    (
        "get",
        "/v1/services/{service}/versions",
        "List a service's versions",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/activate",
        "Activate a version",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/rollback",
        "Activate the version before the active one",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/canary",
        "Start a canary: {\"version\", \"percent\" (1-99), \"sticky\": {\"header\": NAME} | {\"cookie\": NAME} | \"client_address\", \"rollback\": {\"threshold_pct\", \"window_secs\", \"min_requests\"}}; the control plane rolls it back when its error rate passes the active version's by the threshold",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/canary/promote",
        "Make the running canary the active version",
        "tenant",
    ),
    (
        "post",
        "/v1/services/{service}/canary/abort",
        "Stop the running canary",
        "tenant",
    ),
    (
        "get",
        "/v1/services/{service}/rollout",
        "The active version, the running canary, and the history of activations: who started each, when, and how it ended",
        "tenant",
    ),
    (
        "get",
        "/v1/usage",
        "The tenant's usage per service, summed over nodes",
        "tenant",
    ),
    (
        "get",
        "/v1/nodes",
        "List nodes with their snapshot version and last contact",
        "admin",
    ),
    (
        "delete",
        "/v1/nodes/{id}",
        "Remove a node: its credential is refused from then on",
        "admin",
    ),
    (
        "post",
        "/v1/node/register",
        "Register a node; answers with the node's own credential for every other node call",
        "cluster",
    ),
    (
        "get",
        "/v1/node/snapshot",
        "Long-poll the config snapshot newer than `after`; with `delta=true`, only what changed since `after` when this replica has it (header `edge-snapshot: delta`)",
        "node",
    ),
    (
        "post",
        "/v1/node/usage",
        "Post a usage report (400 implausible_usage for counts no node could have served)",
        "node",
    ),
    (
        "post",
        "/v1/node/status",
        "Report the services the node could not load in the snapshot it applied",
        "node",
    ),
    (
        "post",
        "/v1/node/logs",
        "Ship guest log lines: {\"lines\": [...]}, at most 200",
        "node",
    ),
    (
        "get",
        "/v1/services/{service}/logs",
        "The service's guest log lines after `after` (a line id), oldest first, at most `limit`; `request_id` keeps one request's",
        "tenant",
    ),
    (
        "get",
        "/v1/node/components/{sha256}",
        "Fetch a component by hash",
        "node",
    ),
    (
        "get",
        "/v1/node/artifacts/{sha256}/{fingerprint}",
        "Fetch a precompiled artifact for an engine",
        "node",
    ),
    (
        "get",
        "/v1/node/artifacts/{sha256}/{fingerprint}/manifest",
        "Fetch an artifact's manifest",
        "node",
    ),
    (
        "post",
        "/v1/kv",
        "Create a KV store: {\"name\": ...}; services open it by listing it in kv_stores",
        "tenant",
    ),
    (
        "get",
        "/v1/kv",
        "List the tenant's KV stores with their keys and bytes",
        "tenant",
    ),
    (
        "delete",
        "/v1/kv/{store}",
        "Delete a KV store and every key in it",
        "tenant",
    ),
    (
        "get",
        "/v1/kv/{store}/keys",
        "A page of the store's keys in order: `prefix`, `after` (the last page's cursor), `limit` (at most 1000)",
        "tenant",
    ),
    (
        "get",
        "/v1/kv/{store}/keys/{key}",
        "A key's value (application/octet-stream) with its version as the ETag; 404 if none",
        "tenant",
    ),
    (
        "put",
        "/v1/kv/{store}/keys/{key}",
        "Set a key to the request body (at most 1 MiB), durable when answered; If-Match: \"<version>\" or If-None-Match: * make it a compare-and-swap (412 if the key changed)",
        "tenant",
    ),
    (
        "delete",
        "/v1/kv/{store}/keys/{key}",
        "Delete a key (If-Match: \"<version>\": only at that version)",
        "tenant",
    ),
    (
        "post",
        "/v1/kv/{store}/import",
        "Set up to 1000 entries in one transaction: {\"entries\": [{\"key\": ..., \"value\": base64}]}",
        "tenant",
    ),
    (
        "get",
        "/v1/secrets",
        "List the tenant's secrets (names and times, never values)",
        "tenant",
    ),
    (
        "put",
        "/v1/secrets/{name}",
        "Set a secret: {\"value\": ...}; sealed at once, never returned; 503 without a secrets key",
        "tenant",
    ),
    ("delete", "/v1/secrets/{name}", "Delete a secret", "tenant"),
    (
        "get",
        "/v1/node/kv",
        "Long-poll the KV change feed after `after`: every key's newest change, in order; 304 if none came",
        "node",
    ),
    (
        "post",
        "/v1/node/kv/write",
        "A guest's KV write (set, delete, increment, batches), decided and numbered here",
        "node",
    ),
    ("get", "/openapi.json", "This document", "anyone"),
    ("get", "/healthz", "Liveness", "anyone"),
    (
        "get",
        "/metrics",
        "Prometheus metrics: API traffic, uploads, compile times, nodes and their lag, usage",
        "anyone",
    ),
];

pub fn spec() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, caller) in OPERATIONS {
        let security = match *caller {
            "anyone" => json!([]),
            scheme => json!([{ *scheme: [] }]),
        };
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = json!({
            "summary": summary,
            "security": security,
            "parameters": parameters,
            "responses": {
                "2XX": {"description": "Success"},
                "429": {
                    "description": "rate_limited: a per-tenant rate (activations per minute, purges per second) or a concurrency bound (uploads per tenant, compiles on the control plane) is reached; retry after the seconds in Retry-After",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                },
                "default": {
                    "description": "Error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            }
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Edge platform control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tenants, services, module uploads, versions, and the node protocol."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "The operator's admin token"},
                "tenant": {"type": "http", "scheme": "bearer", "description": "One of the tenant's API tokens"},
                "cluster": {"type": "http", "scheme": "bearer", "description": "The cluster token: registers a node, nothing else"},
                "node": {"type": "http", "scheme": "bearer", "description": "A node's own credential, from its registration"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "description": "Stable, machine-readable; quota_exceeded (400) names the quota a request would pass: services per tenant, versions per service, module bytes per tenant, spec bytes"},
                            "message": {"type": "string"}
                        }
                    }}
                }
            }
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
