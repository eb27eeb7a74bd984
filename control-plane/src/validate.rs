//! Upload validation, before anything is stored or compiled: the bytes must
//! be a valid component that exports `wasi:http/incoming-handler` and imports
//! only interfaces the platform provides. Each refusal names the problem.
//!
//! This reads the component's type only; the compile worker then links it
//! against the node's real linker, which catches a mismatch inside an
//! interface this check lets through.

use wit_parser::decoding::{DecodedWasm, decode};
use wit_parser::{Resolve, WorldKey};

/// WASI 0.2 packages the node links (see the node's sandbox).
const PROVIDED_WASI_PACKAGES: &[&str] = &[
    "io",
    "clocks",
    "random",
    "cli",
    "filesystem",
    "sockets",
    "http",
];
/// The newest WASI 0.2 patch release the node's bindings know.
const NEWEST_WASI_PATCH: u64 = 12;
const HANDLER_EXPORT: &str = "wasi:http/incoming-handler";

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidComponent {
    #[error("the upload is not a WebAssembly binary")]
    NotWasm,
    #[error(
        "the upload is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("the component is invalid: {0}")]
    Malformed(String),
    #[error("the component does not export {HANDLER_EXPORT} (the wasi:http/proxy world)")]
    NoHandler,
    #[error("the component imports {0}, which the platform does not provide")]
    ForbiddenImport(String),
}

/// Checks an upload. Cheap: no code is compiled. Imports are checked before
/// the export, so a component that would reach something the platform does
/// not have is told so by name.
pub fn validate_component(bytes: &[u8]) -> Result<(), InvalidComponent> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(InvalidComponent::NotWasm);
    }
    // Bytes 4..8 are the version and layer: layer 0 is a core module.
    if bytes[6..8] == [0, 0] {
        return Err(InvalidComponent::CoreModule);
    }
    let decoded = decode(bytes).map_err(|e| InvalidComponent::Malformed(format!("{e:#}")))?;
    let DecodedWasm::Component(resolve, world) = decoded else {
        return Err(InvalidComponent::Malformed(
            "it is a WIT package, not a component".into(),
        ));
    };
    let world = &resolve.worlds[world];
    for key in world.imports.keys() {
        let name = interface_name(&resolve, key).unwrap_or_else(|| resolve.name_world_key(key));
        if !is_provided(&resolve, key) {
            return Err(InvalidComponent::ForbiddenImport(name));
        }
    }
    let exports_handler = world.exports.keys().any(|key| {
        interface_name(&resolve, key)
            .is_some_and(|name| name.split('@').next() == Some(HANDLER_EXPORT))
    });
    if !exports_handler {
        return Err(InvalidComponent::NoHandler);
    }
    Ok(())
}

fn interface_name(resolve: &Resolve, key: &WorldKey) -> Option<String> {
    match key {
        WorldKey::Interface(id) => resolve.id_of(*id),
        WorldKey::Name(_) => None,
    }
}

/// The platform's own interfaces, and the pre-release WASI proposals it
/// links (sdk/wit), by `package/interface` and exact version: a
/// pre-release changes between drafts, so only the one linked is accepted.
const PROVIDED_PLATFORM_INTERFACES: &[(&str, &str)] = &[
    ("edge:platform/cache", "0.1.0"),
    ("wasi:keyvalue/store", "0.2.0-draft"),
    ("wasi:keyvalue/atomics", "0.2.0-draft"),
    ("wasi:keyvalue/batch", "0.2.0-draft"),
    ("wasi:config/store", "0.2.0-rc.1"),
];

/// Whether an import is one of the WASI 0.2 interfaces, or the platform
/// interfaces, the node links.
fn is_provided(resolve: &Resolve, key: &WorldKey) -> bool {
    let WorldKey::Interface(id) = key else {
        return false;
    };
    let Some(package) = resolve.interfaces[*id].package else {
        return false;
    };
    let name = &resolve.packages[package].name;
    if let Some(interface) = &resolve.interfaces[*id].name {
        let qualified = format!("{}:{}/{interface}", name.namespace, name.name);
        let version = name.version.as_ref().map(ToString::to_string);
        if PROVIDED_PLATFORM_INTERFACES
            .iter()
            .any(|(n, v)| *n == qualified && version.as_deref() == Some(v))
        {
            return true;
        }
    }
    let version_ok = name.version.as_ref().is_some_and(|v| {
        v.major == 0 && v.minor == 2 && v.patch <= NEWEST_WASI_PATCH && v.pre.is_empty()
    });
    name.namespace == "wasi" && PROVIDED_WASI_PACKAGES.contains(&name.name.as_str()) && version_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_wasm() {
        assert_eq!(
            validate_component(b"hello, world"),
            Err(InvalidComponent::NotWasm)
        );
    }

    #[test]
    fn refuses_a_core_module() {
        let module = wat_module();
        assert_eq!(
            validate_component(&module),
            Err(InvalidComponent::CoreModule)
        );
    }

    #[test]
    fn refuses_a_truncated_component() {
        let bytes = [0, b'a', b's', b'm', 0x0d, 0, 1, 0, 7];
        assert!(matches!(
            validate_component(&bytes),
            Err(InvalidComponent::Malformed(_))
        ));
    }

    fn wat_module() -> Vec<u8> {
        // (module) in binary form: magic, version 1, layer 0.
        vec![0, b'a', b's', b'm', 1, 0, 0, 0]
    }
}
