//! A typed client of the control plane's API: one method per endpoint a
//! tenant or an operator calls, each returning the body's type from
//! [`crate::wire`] or an [`ApiError`] that says what the server refused and
//! why. `edgectl`, the platform's tests and the benchmarks' cluster use it.

use std::path::Path;

use edge_config::protocol::ServiceSpec;
use futures::TryStreamExt as _;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::wire::*;

/// The size of one piece of an upload, the step of its progress.
const UPLOAD_CHUNK_BYTES: usize = 64 * 1024;

/// Why a call did not return what it asked for.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("reaching the control plane at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The control plane answered with an error status.
    #[error("{status}: {message} ({code})")]
    Refused {
        status: StatusCode,
        /// The machine-readable code (`domain_unverified`, `not_found`...).
        code: String,
        message: String,
    },
    #[error("{path} answered {status} with a body this client cannot read: {message}")]
    Unreadable {
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    /// A name that cannot be one segment of a URL path.
    #[error("{0:?} is not a name the API knows")]
    BadName(String),
}

impl ApiError {
    /// The status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Refused { status, .. } | Self::Unreadable { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one control plane with one bearer token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of `base` (`https://cp.example.com`) trusting the public
    /// web roots.
    pub fn new(base: &str, token: &str) -> Self {
        Self::with_http(base, token, reqwest::Client::new())
    }

    /// A client that trusts only the CA certificates of the PEM file
    /// `ca_file` for the control plane's certificate.
    pub fn trusting(base: &str, token: &str, ca_file: &Path) -> Result<Self, ApiError> {
        let unreadable = |message: String| ApiError::CaFile {
            path: ca_file.display().to_string(),
            message,
        };
        let pem = std::fs::read(ca_file).map_err(|e| unreadable(e.to_string()))?;
        let roots =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unreadable(e.to_string()))?;
        if roots.is_empty() {
            return Err(unreadable("holds no certificate".into()));
        }
        let http = roots
            .into_iter()
            .fold(
                reqwest::Client::builder().tls_built_in_root_certs(false),
                |client, root| client.add_root_certificate(root),
            )
            .build()
            .map_err(|e| unreadable(e.to_string()))?;
        Ok(Self::with_http(base, token, http))
    }

    /// A client over an HTTP client the caller configured.
    pub fn with_http(base: &str, token: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        }
    }

    /// The same control plane, with another token.
    pub fn as_token(&self, token: &str) -> Self {
        Self {
            token: token.to_string(),
            ..self.clone()
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request as it is answered, whatever the status: for callers
    /// that look at refusals themselves. Only a transport failure is an
    /// error. A body that is not JSON comes back as a JSON string.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ApiError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(request).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Value), ApiError> {
        let unreachable = |source| ApiError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    /// A call that must succeed, its answer read as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let (status, body) = self.send(method, path, body).await?;
        typed(path, status, body)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call(Method::GET, path, None).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: impl Serialize,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_value(body).unwrap_or(Value::Null);
        self.call(Method::POST, path, Some(&body)).await
    }

    async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call::<Value>(Method::DELETE, path, None)
            .await
            .map(drop)
    }

    // Tenants and tokens.

    /// Operators: creates a tenant; the answer holds its first token.
    pub async fn create_tenant(
        &self,
        name: &str,
        allow_private_backends: bool,
    ) -> Result<CreatedTenant, ApiError> {
        let tenant = NewTenant {
            name: name.to_string(),
            allow_private_backends,
        };
        self.post("/v1/tenants", tenant).await
    }

    pub async fn suspend_tenant(&self, name: &str) -> Result<Suspension, ApiError> {
        let name = segment(name)?;
        self.post(&format!("/v1/tenants/{name}/suspend"), json!({}))
            .await
    }

    pub async fn resume_tenant(&self, name: &str) -> Result<Suspension, ApiError> {
        let name = segment(name)?;
        self.post(&format!("/v1/tenants/{name}/resume"), json!({}))
            .await
    }

    pub async fn revoke_tenant_tokens(&self, name: &str) -> Result<Revoked, ApiError> {
        let name = segment(name)?;
        self.call(Method::DELETE, &format!("/v1/tenants/{name}/tokens"), None)
            .await
    }

    pub async fn create_token(&self, label: &str) -> Result<CreatedToken, ApiError> {
        let token = NewToken {
            label: label.to_string(),
        };
        self.post("/v1/tokens", token).await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ApiError> {
        self.get("/v1/tokens").await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), ApiError> {
        let id = segment(id)?;
        self.delete(&format!("/v1/tokens/{id}")).await
    }

    // Services, modules and versions.

    pub async fn create_service(&self, name: &str, spec: &ServiceSpec) -> Result<(), ApiError> {
        let service = NewService {
            name: name.to_string(),
            spec: spec.clone(),
        };
        self.post::<Value>("/v1/services", service).await.map(drop)
    }

    pub async fn services(&self) -> Result<Vec<Service>, ApiError> {
        self.get("/v1/services").await
    }

    pub async fn delete_service(&self, name: &str) -> Result<(), ApiError> {
        let name = segment(name)?;
        self.delete(&format!("/v1/services/{name}")).await
    }

    /// Uploads a component; the control plane validates and precompiles
    /// it before it answers.
    pub async fn upload_module(
        &self,
        service: &str,
        component: Vec<u8>,
    ) -> Result<UploadedModule, ApiError> {
        self.upload_module_with_progress(service, component, |_| {})
            .await
    }

    /// As [`Self::upload_module`], telling `progress` of each piece sent.
    pub async fn upload_module_with_progress(
        &self,
        service: &str,
        component: Vec<u8>,
        progress: impl Fn(usize) + Send + Sync + 'static,
    ) -> Result<UploadedModule, ApiError> {
        let service = segment(service)?;
        let path = format!("/v1/services/{service}/modules");
        let length = component.len();
        let component = bytes::Bytes::from(component);
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = (0..length)
            .step_by(UPLOAD_CHUNK_BYTES)
            .map(|start| Ok(component.slice(start..length.min(start + UPLOAD_CHUNK_BYTES))))
            .collect();
        let stream = futures::stream::iter(pieces).inspect_ok(move |piece| progress(piece.len()));
        let request = self
            .request(Method::POST, &path)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream));
        let (status, body) = self.answer(request).await?;
        typed(&path, status, body)
    }

    /// Makes a version of an uploaded module, activated at once if asked.
    pub async fn create_version(
        &self,
        service: &str,
        module_sha256: &str,
        activate: bool,
    ) -> Result<VersionCreated, ApiError> {
        let service = segment(service)?;
        let version = NewVersion {
            module_sha256: module_sha256.to_string(),
            activate,
        };
        self.post(&format!("/v1/services/{service}/versions"), version)
            .await
    }

    /// Uploads a component and activates it as a new version.
    pub async fn deploy(
        &self,
        service: &str,
        component: Vec<u8>,
    ) -> Result<VersionCreated, ApiError> {
        let uploaded = self.upload_module(service, component).await?;
        self.create_version(service, &uploaded.module_sha256, true)
            .await
    }

    pub async fn versions(&self, service: &str) -> Result<Vec<Version>, ApiError> {
        let service = segment(service)?;
        self.get(&format!("/v1/services/{service}/versions")).await
    }

    pub async fn activate(&self, service: &str, version: i64) -> Result<Activated, ApiError> {
        let service = segment(service)?;
        self.post(
            &format!("/v1/services/{service}/activate"),
            Activation { version },
        )
        .await
    }

    pub async fn start_canary(
        &self,
        service: &str,
        canary: &NewCanary,
    ) -> Result<CanaryStarted, ApiError> {
        let service = segment(service)?;
        self.post(&format!("/v1/services/{service}/canary"), canary)
            .await
    }

    /// `step`: `promote` or `abort`.
    pub async fn end_canary(&self, service: &str, step: &str) -> Result<CanaryEnded, ApiError> {
        let service = segment(service)?;
        self.post(&format!("/v1/services/{service}/canary/{step}"), json!({}))
            .await
    }

    pub async fn rollout(&self, service: &str) -> Result<Rollout, ApiError> {
        let service = segment(service)?;
        self.get(&format!("/v1/services/{service}/rollout")).await
    }

    /// Activates the version before the active one.
    pub async fn rollback(&self, service: &str) -> Result<Activated, ApiError> {
        let service = segment(service)?;
        self.post(&format!("/v1/services/{service}/rollback"), json!({}))
            .await
    }

    pub async fn usage(&self) -> Result<Vec<UsageTotals>, ApiError> {
        self.get("/v1/usage").await
    }

    pub async fn logs(&self, service: &str, query: &str) -> Result<LogPage, ApiError> {
        let service = segment(service)?;
        self.get(&format!("/v1/services/{service}/logs?{query}"))
            .await
    }

    // Domains and certificates.

    pub async fn add_domain(&self, service: &str, domain: &str) -> Result<DomainClaim, ApiError> {
        let service = segment(service)?;
        let domain = NewDomain {
            domain: domain.to_string(),
        };
        self.post(&format!("/v1/services/{service}/domains"), domain)
            .await
    }

    pub async fn verify_domain(
        &self,
        service: &str,
        domain: &str,
    ) -> Result<DomainClaim, ApiError> {
        let service = segment(service)?;
        let domain = segment(domain)?;
        self.post(
            &format!("/v1/services/{service}/domains/{domain}/verify"),
            json!({}),
        )
        .await
    }

    pub async fn domains(&self, service: &str) -> Result<Vec<DomainClaim>, ApiError> {
        let service = segment(service)?;
        self.get(&format!("/v1/services/{service}/domains")).await
    }

    pub async fn remove_domain(&self, service: &str, domain: &str) -> Result<(), ApiError> {
        let service = segment(service)?;
        let domain = segment(domain)?;
        self.delete(&format!("/v1/services/{service}/domains/{domain}"))
            .await
    }

    /// Operators: approves a pending domain without its TXT record.
    pub async fn approve_domain(&self, domain: &str) -> Result<Approved, ApiError> {
        let domain = segment(domain)?;
        self.post(&format!("/v1/domains/{domain}/approve"), json!({}))
            .await
    }

    pub async fn put_certificate(
        &self,
        service: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<CertificateInfo, ApiError> {
        let service = segment(service)?;
        let body = json!({"cert_pem": cert_pem, "key_pem": key_pem});
        self.call(
            Method::PUT,
            &format!("/v1/services/{service}/certificate"),
            Some(&body),
        )
        .await
    }

    pub async fn certificate(&self, service: &str) -> Result<CertificateInfo, ApiError> {
        let service = segment(service)?;
        self.get(&format!("/v1/services/{service}/certificate"))
            .await
    }

    pub async fn remove_certificate(&self, service: &str) -> Result<(), ApiError> {
        let service = segment(service)?;
        self.delete(&format!("/v1/services/{service}/certificate"))
            .await
    }

    // The edge cache.

    pub async fn purge(&self, purge: &PurgeRequest) -> Result<PurgeAccepted, ApiError> {
        self.post("/v1/purge", purge).await
    }

    pub async fn purge_status(&self, seq: u64) -> Result<PurgeStatus, ApiError> {
        self.get(&format!("/v1/purge/{seq}")).await
    }

    // KV stores.

    pub async fn create_kv_store(&self, name: &str) -> Result<KvStoreInfo, ApiError> {
        self.post("/v1/kv", NewKvStore { name: name.into() }).await
    }

    pub async fn kv_stores(&self) -> Result<Vec<KvStoreInfo>, ApiError> {
        self.get("/v1/kv").await
    }

    pub async fn delete_kv_store(&self, store: &str) -> Result<(), ApiError> {
        let store = segment(store)?;
        self.delete(&format!("/v1/kv/{store}")).await
    }

    /// A page of `store`'s keys starting with `prefix`, after `after`.
    pub async fn kv_keys(
        &self,
        store: &str,
        prefix: &str,
        after: &str,
    ) -> Result<KvKeyPage, ApiError> {
        let store = segment(store)?;
        let query = reqwest::Url::parse_with_params(
            "http://query/",
            [("prefix", prefix), ("after", after)],
        )
        .map(|url| url.query().unwrap_or_default().to_string())
        .unwrap_or_default();
        self.get(&format!("/v1/kv/{store}/keys?{query}")).await
    }

    /// `key`'s value in `store`, or `None` if it has none.
    pub async fn kv_get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self
            .kv_get_versioned(store, key)
            .await?
            .map(|(value, _)| value))
    }

    /// `key`'s value in `store` and its version (for a conditional write),
    /// or `None` if it has none.
    pub async fn kv_get_versioned(
        &self,
        store: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, u64)>, ApiError> {
        let path = format!("/v1/kv/{}/keys/{}", segment(store)?, segment(key)?);
        let unreachable = |source| ApiError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = self
            .request(Method::GET, &path)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            // A missing store is an error; a missing key is an answer.
            if body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("key "))
            {
                return Ok(None);
            }
            return typed(&path, status, body);
        }
        if !status.is_success() {
            let body = response.json().await.unwrap_or(Value::Null);
            return typed(&path, status, body);
        }
        let version = etag_version(response.headers());
        let value = response.bytes().await.map_err(unreachable)?.to_vec();
        Ok(Some((value, version.unwrap_or(0))))
    }

    pub async fn kv_put(&self, store: &str, key: &str, value: Vec<u8>) -> Result<(), ApiError> {
        self.kv_put_if(store, key, value, None).await.map(drop)
    }

    /// Sets `key`, only if it is as `expect`ed when given (412
    /// `precondition_failed` otherwise); returns its new version.
    pub async fn kv_put_if(
        &self,
        store: &str,
        key: &str,
        value: Vec<u8>,
        expect: Option<KvExpect>,
    ) -> Result<u64, ApiError> {
        let path = format!("/v1/kv/{}/keys/{}", segment(store)?, segment(key)?);
        let request = with_expectation(self.request(Method::PUT, &path), expect).body(value);
        let unreachable = |source| ApiError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if status.is_success() {
            return Ok(etag_version(response.headers()).unwrap_or(0));
        }
        let body = response.json().await.unwrap_or(Value::Null);
        typed(&path, status, body)
    }

    pub async fn kv_delete(&self, store: &str, key: &str) -> Result<(), ApiError> {
        self.kv_delete_if(store, key, None).await
    }

    /// Deletes `key`, only if it is as `expect`ed when given.
    pub async fn kv_delete_if(
        &self,
        store: &str,
        key: &str,
        expect: Option<KvExpect>,
    ) -> Result<(), ApiError> {
        let path = format!("/v1/kv/{}/keys/{}", segment(store)?, segment(key)?);
        let request = with_expectation(self.request(Method::DELETE, &path), expect);
        let (status, body) = self.answer(request).await?;
        if status.is_success() {
            return Ok(());
        }
        typed(&path, status, body)
    }

    pub async fn kv_import(&self, store: &str, import: &KvImport) -> Result<KvImported, ApiError> {
        let store = segment(store)?;
        self.post(&format!("/v1/kv/{store}/import"), import).await
    }

    // Secrets.

    pub async fn set_secret(&self, name: &str, value: &str) -> Result<SecretInfo, ApiError> {
        let path = format!("/v1/secrets/{}", segment(name)?);
        let body = serde_json::to_value(NewSecret {
            value: value.to_string(),
        })
        .unwrap_or(Value::Null);
        self.call(Method::PUT, &path, Some(&body)).await
    }

    pub async fn secrets(&self) -> Result<Vec<SecretInfo>, ApiError> {
        self.get("/v1/secrets").await
    }

    pub async fn delete_secret(&self, name: &str) -> Result<(), ApiError> {
        self.delete(&format!("/v1/secrets/{}", segment(name)?))
            .await
    }

    // Nodes.

    /// Operators: every node that registered.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ApiError> {
        self.get("/v1/nodes").await
    }
}

/// A conditional write's precondition header.
fn with_expectation(
    request: reqwest::RequestBuilder,
    expect: Option<KvExpect>,
) -> reqwest::RequestBuilder {
    match expect {
        None => request,
        Some(KvExpect::Absent) => request.header(reqwest::header::IF_NONE_MATCH, "*"),
        Some(KvExpect::Version(version)) => {
            request.header(reqwest::header::IF_MATCH, format!("\"{version}\""))
        }
    }
}

/// A key's version, from the `ETag` the API answers with.
fn etag_version(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::ETAG)?
        .to_str()
        .ok()?
        .trim_matches('"')
        .parse()
        .ok()
}

/// `name` as one segment of a URL path: percent-encoded, and never empty,
/// `.` or `..`, which a URL parser would resolve into another endpoint
/// (`domain approve '../tenants/acme/suspend'` must not suspend anyone).
fn segment(name: &str) -> Result<String, ApiError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(ApiError::BadName(name.to_string()));
    }
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        // Unreserved characters, and `*` of a wildcard domain.
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'*') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(encoded)
}

/// `body` read as `T` if `status` is a success, else the refusal it holds.
fn typed<T: DeserializeOwned>(path: &str, status: StatusCode, body: Value) -> Result<T, ApiError> {
    let unreadable = |message: String| ApiError::Unreadable {
        path: path.to_string(),
        status,
        message,
    };
    if !status.is_success() {
        return match serde_json::from_value::<ErrorBody>(body.clone()) {
            Ok(refusal) => Err(ApiError::Refused {
                status,
                code: refusal.error.code,
                message: refusal.error.message,
            }),
            Err(_) => Err(unreadable(body.to_string())),
        };
    }
    serde_json::from_value(body).map_err(|e| unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_servers_code_and_message() {
        let body = json!({"error": {"code": "not_found", "message": "no service web"}});
        let error =
            typed::<Value>("/v1/services/web", StatusCode::NOT_FOUND, body).expect_err("refused");
        assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
        assert_eq!(
            error.to_string(),
            "404 Not Found: no service web (not_found)"
        );
        // A proxy's HTML page is not mistaken for the API's answer.
        let error =
            typed::<Value>("/v1/x", StatusCode::BAD_GATEWAY, json!("<html>")).expect_err("refused");
        assert!(matches!(error, ApiError::Unreadable { .. }), "{error}");
        // A success whose body does not match the type says where.
        let error = typed::<PurgeAccepted>("/v1/purge", StatusCode::ACCEPTED, json!({}))
            .expect_err("unreadable");
        assert!(error.to_string().contains("/v1/purge"), "{error}");
    }

    #[test]
    fn a_name_is_one_path_segment_and_never_a_way_out_of_it() {
        assert_eq!(segment("*.shop.example").expect("ok"), "*.shop.example");
        assert_eq!(
            segment("../tenants/acme/suspend?").expect("encoded"),
            "..%2Ftenants%2Facme%2Fsuspend%3F"
        );
        for bad in ["", ".", ".."] {
            assert!(matches!(segment(bad), Err(ApiError::BadName(_))), "{bad:?}");
        }
    }
}
