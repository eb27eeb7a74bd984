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
/// Memory an instance wrote that stays resident under
/// [`MemoryReset::WrittenPages`]: room for a language runtime's heap image
/// (8 MiB was enough for the JavaScript example, not for the Python one) as
/// well as a small guest's few pages. Only pages an instance wrote are kept
/// and reset, so a small guest costs no more.
const WRITTEN_PAGES_KEEP_RESIDENT_BYTES: usize = 32 * 1024 * 1024;
/// Memory kept mapped under [`MemoryReset::Decommit`], zeroed whole on
/// every reset: what a small guest touches (data, heap start and shadow
/// stack).
const DECOMMIT_KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;
const TABLE_KEEP_RESIDENT_BYTES: usize = 256 * 1024;
const ASYNC_STACK_KEEP_RESIDENT_BYTES: usize = 128 * 1024;

/// How an instance slot's memory is made ready for the next instance. A
/// guest's data segments are always copied into its slot at instantiation
/// (never mapped copy-on-write from the artifact: see [`code_config`]);
/// this is only the pool's reset, so it may differ between hosts without
/// changing the artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryReset {
    /// The kernel's `PAGEMAP_SCAN` (Linux 6.7+) finds the pages the instance
    /// wrote; up to [`WRITTEN_PAGES_KEEP_RESIDENT_BYTES`] of them are
    /// zeroed in place and stay resident, the rest are given back. A large
    /// guest's heap is then neither faulted in nor unmapped per request.
    WrittenPages,
    /// The first 2 MiB of a memory are zeroed and the rest given back to the
    /// kernel (`madvise`): without `PAGEMAP_SCAN`, and whenever swap is on,
    /// because the scan reports only pages in memory, and a written page
    /// swapped out would keep its contents for the slot's next tenant.
    Decommit,
}

impl MemoryReset {
    /// The reset for this host: [`Self::WrittenPages`] on Linux 6.7+ with no
    /// swap active. (Swap turned on after the node started is not seen:
    /// docs/security.md.)
    pub fn for_this_host() -> Self {
        Self::for_host(
            &std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default(),
            std::fs::read_to_string("/proc/swaps").ok().as_deref(),
        )
    }

    /// The reset for a kernel `release` and its `/proc/swaps` (a header
    /// line, then one line per active swap area), `None` when unreadable:
    /// then swap is taken to be on.
    fn for_host(release: &str, swaps: Option<&str>) -> Self {
        let swap_active = swaps.is_none_or(|swaps| swaps.lines().count() > 1);
        if kernel_has_pagemap_scan(release) && !swap_active {
            Self::WrittenPages
        } else {
            Self::Decommit
        }
    }

    fn keep_resident_bytes(self) -> usize {
        match self {
            Self::WrittenPages => WRITTEN_PAGES_KEEP_RESIDENT_BYTES,
            Self::Decommit => DECOMMIT_KEEP_RESIDENT_BYTES,
        }
    }

    fn pagemap_scan(self) -> Enabled {
        match self {
            Self::WrittenPages => Enabled::Yes,
            Self::Decommit => Enabled::No,
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
/// Where the kernel refuses `PAGEMAP_SCAN` although its release has it (a
/// seccomp filter, a sandboxed `/proc`), the engine falls back to
/// [`MemoryReset::Decommit`].
pub fn build_engine(limits: &SandboxLimits) -> wasmtime::Result<Engine> {
    let reset = MemoryReset::for_this_host();
    build_engine_with(limits, reset).or_else(|error| {
        if reset == MemoryReset::Decommit {
            return Err(error);
        }
        tracing::warn!("PAGEMAP_SCAN refused ({error:?}): slots are reset by decommit");
        build_engine_with(limits, MemoryReset::Decommit)
    })
}

/// [`build_engine`] with a chosen reset.
pub fn build_engine_with(limits: &SandboxLimits, reset: MemoryReset) -> wasmtime::Result<Engine> {
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
        .linear_memory_keep_resident(reset.keep_resident_bytes())
        .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES)
        .async_stack_keep_resident(ASYNC_STACK_KEEP_RESIDENT_BYTES)
        .pagemap_scan(reset.pagemap_scan());

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

/// Every setting that shapes compiled code, shared by both engines and the
/// same on every host, so that an artifact compiled by the control plane
/// loads on every node.
///
/// `memory_init_cow` is off: a guest's data is copied into its slot at
/// instantiation instead of mapped copy-on-write from the artifact. The
/// first write to a copy-on-write page replaces a read-only mapping, and
/// the kernel must flush it from the TLB of every core the node runs on
/// (an inter-processor interrupt); a language runtime writes thousands of
/// its heap image's pages per request, so the JavaScript example spent 35 %
/// of the node's CPU in those flushes. Copied and reset by
/// [`MemoryReset::WrittenPages`], it serves 1.6x the requests, and a small
/// guest the same (docs/performance.md).
fn code_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .async_stack_size(ASYNC_STACK_BYTES)
        .memory_init_cow(false);
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
    fn the_memory_reset_does_not_change_the_artifacts() {
        // Hosts with and without PAGEMAP_SCAN or swap load the same
        // artifacts from the control plane.
        let limits = SandboxLimits::default();
        let decommit = build_engine_with(&limits, MemoryReset::Decommit).expect("engine");
        let node = build_engine(&limits).expect("engine");
        assert_eq!(engine_fingerprint(&decommit), engine_fingerprint(&node));
    }

    #[test]
    fn written_pages_are_reset_alone_only_with_no_swap() {
        let no_swap = "Filename\tType\tSize\tUsed\tPriority\n";
        let swap = "Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1048572\t0\t-2\n";
        for (release, swaps, reset) in [
            ("6.18.44", Some(no_swap), MemoryReset::WrittenPages),
            ("6.18.44", Some(swap), MemoryReset::Decommit),
            ("6.18.44", None, MemoryReset::Decommit),
            ("6.6.30", Some(no_swap), MemoryReset::Decommit),
        ] {
            assert_eq!(
                MemoryReset::for_host(release, swaps),
                reset,
                "{release} {swaps:?}"
            );
        }
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
