//! What the platform provides to guests, written once: WASI 0.2 (with
//! nothing granted, by the node's store data), `wasi:http` and
//! `edge:platform/cache` (`sdk/wit`). The node links it to run guests; the
//! control plane links the same to refuse, at upload, a component that
//! imports anything else or does not export `wasi:http/incoming-handler`.

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
});

pub use edge::platform::cache;

/// Adds every interface a guest may import to `linker`.
pub fn add_to_linker<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: WasiView + WasiHttpView + cache::Host + 'static,
{
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    cache::add_to_linker::<T, HasSelf<T>>(linker, |state: &mut T| state)
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
