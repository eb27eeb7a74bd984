//! Per-request memory, table and instance limits.

use edge_config::ServiceLimits;
use wasmtime::ResourceLimiter;

/// Enforces a service's limits on one store and remembers whether a memory
/// or table grow was refused, so that a guest failing right after is
/// reported as out of memory rather than as a plain trap.
#[derive(Debug)]
pub struct GuestLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    /// A memory or table grow (or an initial size) was refused.
    pub limit_hit: bool,
}

impl GuestLimiter {
    pub fn new(limits: &ServiceLimits) -> Self {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Self {
            memory_bytes: size(limits.memory_bytes),
            table_elements: size(limits.max_table_elements),
            instances: size(limits.max_instances),
            tables: size(limits.max_tables),
            memories: size(limits.max_memories),
            limit_hit: false,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refusing (rather than trapping) lets memory.grow return -1, which
        // runtimes that handle allocation failure can recover from.
        let allowed = desired <= self.memory_bytes;
        self.limit_hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.table_elements;
        self.limit_hit |= !allowed;
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}
