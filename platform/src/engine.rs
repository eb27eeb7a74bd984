//! The node's one wasmtime `Engine`, configured for many short-lived
//! instances, and its fingerprint.

use std::hash::{Hash, Hasher};

use edge_config::SandboxLimits;
use edge_config::limits::{ASYNC_STACK_BYTES, WASM_STACK_BYTES};
use sha2::{Digest, Sha256};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The wasmtime release this node is built with.
pub const WASMTIME_VERSION: &str = env!("EDGE_WASMTIME_VERSION");

/// Core instances a component may create: its modules plus adapters and shims
/// (a Rust component makes 3-5, Python's runtime around 10).
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
/// Core instance slots in the pool per concurrent component instance.
const CORE_INSTANCES_PER_SLOT: u32 = 10;
const MEMORIES_PER_SLOT: u32 = 2;
const TABLES_PER_SLOT: u32 = 4;
const MAX_MEMORIES_PER_COMPONENT: u32 = 16;
const MAX_TABLES_PER_COMPONENT: u32 = 64;
/// Memory kept mapped between instances instead of returned to the kernel:
/// resetting it is cheaper than faulting it in again. A small guest touches
/// about this much (data, heap start and shadow stack).
const LINEAR_MEMORY_KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;
const TABLE_KEEP_RESIDENT_BYTES: usize = 256 * 1024;
const ASYNC_STACK_KEEP_RESIDENT_BYTES: usize = 128 * 1024;

/// Builds the engine. Every guest on the node shares it, so its settings
/// are the node's, not a service's: per-service limits live on the `Store`.
pub fn build_engine(limits: &SandboxLimits) -> wasmtime::Result<Engine> {
    let instances = u32::try_from(limits.max_concurrent_instances).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_SLOT))
        .total_memories(instances.saturating_mul(MEMORIES_PER_SLOT))
        .total_tables(instances.saturating_mul(TABLES_PER_SLOT))
        .total_stacks(instances)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size(usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX))
        .table_elements(usize::try_from(limits.max_table_elements).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT_BYTES)
        .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES)
        .async_stack_keep_resident(ASYNC_STACK_KEEP_RESIDENT_BYTES)
        // Resets only the pages an instance wrote (Linux 6.7+), where the
        // kernel has it: the biggest single saving per request.
        .pagemap_scan(Enabled::Auto);

    let mut config = code_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// An engine that refuses at compile time exactly what [`build_engine`]
/// with the same `limits` refuses when it loads a component (one memory and
/// one table per core module, memory and table minimums under the
/// ceilings, core instances per component), with a pool of one instance so
/// that it reserves little: for the control plane's compile worker, so that
/// an upload the nodes could not load is refused, not distributed.
pub fn build_validation_engine(limits: &SandboxLimits) -> wasmtime::Result<Engine> {
    build_engine(&SandboxLimits {
        max_concurrent_instances: 1,
        ..limits.clone()
    })
}

/// Every setting that shapes compiled code, shared by both engines.
fn code_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .async_stack_size(ASYNC_STACK_BYTES)
        .memory_init_cow(true);
    config
}

/// Identifies the engine an artifact was compiled by: the wasmtime version
/// and every setting that affects compiled code. An artifact made by an
/// engine with another fingerprint is recompiled, never loaded.
pub fn engine_fingerprint(engine: &Engine) -> String {
    struct Sha256Hasher(Sha256);
    impl Hasher for Sha256Hasher {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0 // only the digest below is used
        }
    }
    let mut hasher = Sha256Hasher(Sha256::new());
    WASMTIME_VERSION.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compile_engine_makes_artifacts_the_node_accepts() {
        let node = build_engine(&SandboxLimits::default()).expect("node engine");
        let validate = build_validation_engine(&SandboxLimits::default()).expect("engine");
        assert_eq!(engine_fingerprint(&node), engine_fingerprint(&validate));
    }
}
