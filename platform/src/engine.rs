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
/// Memory kept mapped between instances instead of returned to the kernel
/// under [`MemoryStrategy::CopyOnWrite`]: resetting it is cheaper than
/// faulting it in again. A small guest touches about this much (data, heap
/// start and shadow stack).
const COPY_ON_WRITE_KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;
/// Memory an instance wrote that stays resident under
/// [`MemoryStrategy::ResidentCopy`]: room for a language runtime's heap
/// image (8 MiB was enough for the JavaScript example, not for the Python
/// one) as well as a small guest's few pages. Only pages an
/// instance wrote are kept and reset, so a small guest costs no more.
const RESIDENT_COPY_KEEP_RESIDENT_BYTES: usize = 32 * 1024 * 1024;
const TABLE_KEEP_RESIDENT_BYTES: usize = 256 * 1024;
const ASYNC_STACK_KEEP_RESIDENT_BYTES: usize = 128 * 1024;

/// How a guest's linear memory gets its initial contents (its data
/// segments, the heap image of a language runtime) and is reset for the
/// next instance in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryStrategy {
    /// The image is copied into the slot's memory at instantiation, and the
    /// pages an instance wrote stay resident: the reset restores exactly
    /// those (found with the kernel's `PAGEMAP_SCAN`) with a copy, and
    /// nothing is unmapped. Needs Linux 6.7 or later.
    ///
    /// Why not copy-on-write: the first write to a page of a copy-on-write
    /// image replaces a read-only mapping, and the kernel must flush it
    /// from the TLB of every core the node runs on (an inter-processor
    /// interrupt). A language runtime writes thousands of image pages per
    /// request, and a copy-on-write reset unmaps what it cannot restore
    /// by copy (beyond a few dozen written regions), so each request
    /// faults them again: measured, the JavaScript example spent 35 % of
    /// the node's CPU in those flushes, and serves 1.6x the requests
    /// with this strategy (docs/performance.md).
    ResidentCopy,
    /// The image is mapped copy-on-write from the artifact, and only the
    /// first 2 MiB of memory are kept resident: without `PAGEMAP_SCAN`, the
    /// reset copies the whole kept-resident region, so it must stay small.
    CopyOnWrite,
}

impl MemoryStrategy {
    /// The strategy for the kernel this process runs on.
    pub fn for_this_kernel() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if kernel_has_pagemap_scan(&release) {
            Self::ResidentCopy
        } else {
            Self::CopyOnWrite
        }
    }

    fn keep_resident_bytes(self) -> usize {
        match self {
            Self::ResidentCopy => RESIDENT_COPY_KEEP_RESIDENT_BYTES,
            Self::CopyOnWrite => COPY_ON_WRITE_KEEP_RESIDENT_BYTES,
        }
    }
}

/// Whether a Linux release (`6.18.44-...`) has the `PAGEMAP_SCAN` ioctl,
/// which came in 6.7.
fn kernel_has_pagemap_scan(release: &str) -> bool {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 7),
        _ => false,
    }
}

/// Builds the engine. Every guest on the node shares it, so its settings
/// are the node's, not a service's: per-service limits live on the `Store`.
pub fn build_engine(limits: &SandboxLimits) -> wasmtime::Result<Engine> {
    build_engine_with(limits, MemoryStrategy::for_this_kernel())
}

/// [`build_engine`] with a chosen memory strategy (which also shapes the
/// artifacts: it is part of the engine's fingerprint).
pub fn build_engine_with(
    limits: &SandboxLimits,
    memory: MemoryStrategy,
) -> wasmtime::Result<Engine> {
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
        .linear_memory_keep_resident(memory.keep_resident_bytes())
        .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES)
        .async_stack_keep_resident(ASYNC_STACK_KEEP_RESIDENT_BYTES)
        // Resets only the pages an instance wrote (Linux 6.7+), where the
        // kernel has it: the biggest single saving per request.
        .pagemap_scan(Enabled::Auto);

    let mut config = code_config(memory);
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
fn code_config(memory: MemoryStrategy) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .async_stack_size(ASYNC_STACK_BYTES)
        .memory_init_cow(memory == MemoryStrategy::CopyOnWrite);
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

    #[test]
    fn the_memory_strategy_is_part_of_the_fingerprint() {
        let limits = SandboxLimits::default();
        let copy = build_engine_with(&limits, MemoryStrategy::ResidentCopy).expect("engine");
        let cow = build_engine_with(&limits, MemoryStrategy::CopyOnWrite).expect("engine");
        assert_ne!(engine_fingerprint(&copy), engine_fingerprint(&cow));
    }

    #[test]
    fn pagemap_scan_is_recognized_from_linux_6_7_on() {
        for (release, has) in [
            ("6.18.44-fc-v669\n", true),
            ("6.7.0", true),
            ("7.0", true),
            ("6.6.30-generic", false),
            ("5.15.0-1051-azure", false),
            ("", false),
            ("not a release", false),
        ] {
            assert_eq!(kernel_has_pagemap_scan(release), has, "{release:?}");
        }
    }
}
