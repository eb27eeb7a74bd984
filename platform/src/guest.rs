//! What the platform provides to guests, written once: WASI 0.2 (with
//! nothing granted, by the node's store data), `wasi:http`,
//! `edge:platform/cache`, `wasi:keyvalue` and `wasi:config/store`
//! (`sdk/wit`). The node links it to run guests; the control plane links the
//! same to refuse, at upload, a component that imports anything else or
//! does not export `wasi:http/incoming-handler`.
//!
//! `wasi:config/store` is wasmtime's own binding (`wasmtime-wasi-config`),
//! over the variables the node gives each instance. `wasi:keyvalue` is bound
//! here from the same WIT as wasmtime's crate, whose host side is an
//! in-memory map: the storage behind it is the node's replica.

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "edge:platform/platform-imports",
    // Writes wait for the control plane; reads are served from the node's
    // replica without waiting.
    imports: {
        "wasi:keyvalue/store.[method]bucket.set": async,
        "wasi:keyvalue/store.[method]bucket.delete": async,
        "wasi:keyvalue/atomics.increment": async,
        "wasi:keyvalue/batch.set-many": async,
        "wasi:keyvalue/batch.delete-many": async,
    },
    with: {
        "wasi:keyvalue/store.bucket": KvBucket,
    },
});

pub use edge::platform::cache;
pub use wasi::keyvalue;
pub use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

/// A store a guest opened: the id its node's replica keys it by.
#[derive(Debug, Clone)]
pub struct KvBucket {
    pub store_id: std::sync::Arc<str>,
}

/// Store data that gives guests their `wasi:config/store` variables.
pub trait ConfigView {
    fn config(&mut self) -> WasiConfig<'_>;
}

/// Adds every interface a guest may import to `linker`.
pub fn add_to_linker<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: WasiView
        + WasiHttpView
        + cache::Host
        + keyvalue::store::Host
        + keyvalue::atomics::Host
        + keyvalue::batch::Host
        + ConfigView
        + Send
        + 'static,
{
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    cache::add_to_linker::<T, HasSelf<T>>(linker, |state: &mut T| state)?;
    keyvalue::store::add_to_linker::<T, HasSelf<T>>(linker, |state: &mut T| state)?;
    keyvalue::atomics::add_to_linker::<T, HasSelf<T>>(linker, |state: &mut T| state)?;
    keyvalue::batch::add_to_linker::<T, HasSelf<T>>(linker, |state: &mut T| state)?;
    wasmtime_wasi_config::add_to_linker(linker, |state: &mut T| state.config())
}

/// Whether `component` imports only what the platform provides and exports
/// `wasi:http/incoming-handler`: the check a node makes when it prepares a
/// component, made without running anything.
pub fn check_links(engine: &Engine, component: &Component) -> wasmtime::Result<()> {
    let mut linker = Linker::<TypeCheckOnly>::new(engine);
    add_to_linker(&mut linker)?;
    ProxyPre::new(linker.instantiate_pre(component)?)?;
    Ok(())
}

/// The store data of a linker that only type-checks: nothing is ever
/// instantiated with it, so its host functions are never called.
struct TypeCheckOnly {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outgoing: RefuseOutgoing,
    config: WasiConfigVariables,
}

/// Outgoing requests of a guest that never runs.
struct RefuseOutgoing;

/// What a `WasiHttpHooks::send_request` returns.
pub type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for RefuseOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for TypeCheckOnly {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for TypeCheckOnly {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

impl cache::Host for TypeCheckOnly {
    fn lookup(&mut self, _key: String) -> Option<Vec<u8>> {
        None
    }

    fn insert(
        &mut self,
        _key: String,
        _value: Vec<u8>,
        _ttl_ms: u64,
        _surrogate_keys: Vec<String>,
    ) -> Result<(), cache::Error> {
        Err(cache::Error::InvalidKey)
    }

    fn purge(&mut self, _key: String) -> bool {
        false
    }

    fn purge_surrogate_key(&mut self, _surrogate_key: String) -> u32 {
        0
    }
}

impl ConfigView for TypeCheckOnly {
    fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::new(&self.config)
    }
}

/// A store that is never opened: what a type check links.
fn no_store() -> keyvalue::store::Error {
    keyvalue::store::Error::NoSuchStore
}

impl keyvalue::store::Host for TypeCheckOnly {
    fn open(
        &mut self,
        _identifier: String,
    ) -> Result<wasmtime::component::Resource<KvBucket>, keyvalue::store::Error> {
        Err(no_store())
    }
}

impl keyvalue::store::HostBucket for TypeCheckOnly {
    fn get(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _key: String,
    ) -> Result<Option<Vec<u8>>, keyvalue::store::Error> {
        Err(no_store())
    }

    async fn set(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _key: String,
        _value: Vec<u8>,
    ) -> Result<(), keyvalue::store::Error> {
        Err(no_store())
    }

    async fn delete(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _key: String,
    ) -> Result<(), keyvalue::store::Error> {
        Err(no_store())
    }

    fn exists(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _key: String,
    ) -> Result<bool, keyvalue::store::Error> {
        Err(no_store())
    }

    fn list_keys(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _cursor: Option<u64>,
    ) -> Result<keyvalue::store::KeyResponse, keyvalue::store::Error> {
        Err(no_store())
    }

    fn drop(&mut self, bucket: wasmtime::component::Resource<KvBucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl keyvalue::atomics::Host for TypeCheckOnly {
    async fn increment(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _key: String,
        _delta: u64,
    ) -> Result<u64, keyvalue::store::Error> {
        Err(no_store())
    }
}

impl keyvalue::batch::Host for TypeCheckOnly {
    fn get_many(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, keyvalue::store::Error> {
        Err(no_store())
    }

    async fn set_many(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), keyvalue::store::Error> {
        Err(no_store())
    }

    async fn delete_many(
        &mut self,
        _bucket: wasmtime::component::Resource<KvBucket>,
        _keys: Vec<String>,
    ) -> Result<(), keyvalue::store::Error> {
        Err(no_store())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_that_is_not_a_proxy_does_not_link() {
        let engine = Engine::default();
        let bytes = wat::parse_str(r#"(component (core module (func (export "f"))))"#)
            .expect("valid component");
        let component = Component::new(&engine, bytes).expect("compiles");
        let error = check_links(&engine, &component).expect_err("no incoming-handler export");
        assert!(
            format!("{error:#}").contains("incoming-handler"),
            "{error:#}"
        );
    }
}
