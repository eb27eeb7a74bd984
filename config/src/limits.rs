//! Every limit the platform enforces, with its default.
//!
//! Units are in the names. Each default says why it is what it is. The
//! per-service limits ([`ServiceLimits`]) can be set in a service's config;
//! the node-wide ones ([`HttpLimits`], [`SandboxLimits`]) in the node's.
//! docs/limits.md lists them all with the status a client sees when one is hit.

use serde::{Deserialize, Serialize};

use crate::validate::{ConfigErrors, check_ranges};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

// ---------------------------------------------------------------------------
// Per service
// ---------------------------------------------------------------------------

/// Guest CPU time per request. Generous for request handling (a JSON API
/// answers in well under 1 ms) while an infinite loop costs the node no more
/// than 50 ms of one core.
pub const DEFAULT_CPU_BUDGET_MS: u64 = 50;
/// Wall-clock time per request, including time spent waiting on I/O. Long
/// enough for a slow origin or a large streamed body, short enough that a
/// guest parked forever gives its slot back.
pub const DEFAULT_WALL_TIME_MS: u64 = 60_000;
/// Guest linear memory. Large enough for the JavaScript and Python runtimes
/// (which start at 20-40 MiB), small enough for a thousand concurrent
/// instances to fit in this machine's RAM.
pub const DEFAULT_MEMORY_BYTES: u64 = 128 * MIB;
/// Elements across a guest's tables. Interpreted runtimes need tens of
/// thousands of function references; beyond this a table is a memory bomb.
pub const DEFAULT_MAX_TABLE_ELEMENTS: u64 = 100_000;
/// Core and component instances per request. A component built by a standard
/// toolchain instantiates a handful (main module, adapter, shims); Python's
/// runtime a few dozen.
pub const DEFAULT_MAX_INSTANCES: u64 = 64;
/// Tables per request, for the same reason as instances.
pub const DEFAULT_MAX_TABLES: u64 = 64;
/// Linear memories per request, for the same reason as instances.
pub const DEFAULT_MAX_MEMORIES: u64 = 16;
/// Host resources (headers, bodies, streams, pollables) a guest may hold at
/// once. Each costs host memory outside the guest's own linear memory, so it
/// needs its own bound; a real handler holds a few dozen.
pub const DEFAULT_MAX_RESOURCE_HANDLES: u64 = 10_000;
/// Request body bytes passed to the guest. Bigger uploads belong at an origin;
/// the body is streamed, so this bounds work, not a buffer.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 8 * MIB;
/// Guest stdout + stderr bytes kept per request. Lines beyond are counted and
/// dropped so that a chatty guest cannot flood the node's logs.
pub const DEFAULT_MAX_LOG_BYTES_PER_REQUEST: u64 = 64 * KIB;

/// Requests to backends one guest execution may make. Enough for a page
/// assembled from a few dozen fragments; a loop that fetches without bound is
/// stopped here instead of at the origin.
pub const DEFAULT_MAX_BACKEND_REQUESTS: u64 = 32;
/// Backend requests one guest execution may have in flight at once, like a
/// browser's connections per host. Further requests wait for a slot.
pub const DEFAULT_MAX_CONCURRENT_BACKEND_REQUESTS: u64 = 6;

/// Services one client request may pass through, the one its host routes to
/// included: `auth -> app -> render` is three. A chain deeper than this is
/// refused at the call that would go past it, whatever each service's own
/// limits allow.
pub const MAX_SERVICE_CALL_DEPTH: usize = 8;
/// Calls to services that one client request's executions may make in all,
/// every level of the chain counted. Each execution is also held to its own
/// `max_backend_requests`; this bounds the tree those allow
/// (`max_backend_requests` to the power of the depth).
pub const MAX_SERVICE_CALLS_PER_REQUEST: u64 = 64;

/// Limits that apply to every request of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceLimits {
    pub cpu_budget_ms: u64,
    pub wall_time_ms: u64,
    pub memory_bytes: u64,
    pub max_table_elements: u64,
    pub max_instances: u64,
    pub max_tables: u64,
    pub max_memories: u64,
    pub max_resource_handles: u64,
    pub max_request_body_bytes: u64,
    pub max_log_bytes_per_request: u64,
    pub max_backend_requests: u64,
    pub max_concurrent_backend_requests: u64,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            cpu_budget_ms: DEFAULT_CPU_BUDGET_MS,
            wall_time_ms: DEFAULT_WALL_TIME_MS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_table_elements: DEFAULT_MAX_TABLE_ELEMENTS,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_tables: DEFAULT_MAX_TABLES,
            max_memories: DEFAULT_MAX_MEMORIES,
            max_resource_handles: DEFAULT_MAX_RESOURCE_HANDLES,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            max_log_bytes_per_request: DEFAULT_MAX_LOG_BYTES_PER_REQUEST,
            max_backend_requests: DEFAULT_MAX_BACKEND_REQUESTS,
            max_concurrent_backend_requests: DEFAULT_MAX_CONCURRENT_BACKEND_REQUESTS,
        }
    }
}

impl ServiceLimits {
    /// Checks each limit against its allowed range. `sandbox` gives the
    /// node-wide ceilings a service may not exceed.
    pub fn validate(&self, path: &str, sandbox: &SandboxLimits, errors: &mut ConfigErrors) {
        check_ranges!(errors, path, self, {
            cpu_budget_ms: 1..=sandbox.max_cpu_budget_ms,
            wall_time_ms: 1..=sandbox.max_wall_time_ms,
            memory_bytes: 64 * KIB..=sandbox.max_memory_bytes,
            max_table_elements: 1..=sandbox.max_table_elements,
            max_instances: 1..=1_000,
            max_tables: 1..=1_000,
            max_memories: 1..=100,
            max_resource_handles: 16..=1_000_000,
            max_request_body_bytes: 0..=4 * 1024 * MIB,
            max_log_bytes_per_request: 0..=sandbox.max_log_bytes_per_request,
            max_backend_requests: 0..=1_000,
            max_concurrent_backend_requests: 1..=100,
        });
        if self.wall_time_ms < self.cpu_budget_ms {
            errors.push(
                format!("{path}.wall_time_ms"),
                format!(
                    "{} is less than cpu_budget_ms ({}): the CPU budget could never be used",
                    self.wall_time_ms, self.cpu_budget_ms
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Per node: HTTP protocol limits
// ---------------------------------------------------------------------------

/// Request header block. Browsers send 1-2 KiB; big cookies and JWTs reach
/// tens of KiB; beyond 64 KiB it is an attack on parser memory.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * KIB;
/// Request header fields. Real clients send 10-30.
pub const DEFAULT_MAX_HEADER_COUNT: u64 = 100;
/// Request line / URI. Matches common proxies; longer URIs are refused (414).
pub const DEFAULT_MAX_URI_BYTES: u64 = 8 * KIB;
/// Time a client gets to send a complete request header block, so that a
/// client trickling bytes cannot hold a connection forever (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Idle keep-alive connections are closed after this long.
pub const DEFAULT_KEEP_ALIVE_IDLE_MS: u64 = 60_000;
/// Concurrent HTTP/2 streams per connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u64 = 100;
/// Requests in flight on the whole node. Beyond it requests are refused with
/// 503 and `Retry-After` instead of queueing without bound. Equal to the
/// sandbox's instance pool by default: a request beyond it could not get an
/// instance anyway.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: u64 = 1_000;
/// Requests in flight for one tenant (all its services together): one
/// tenant's burst cannot take every instance on the node.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS_PER_TENANT: u64 = 500;
/// Open client connections (TCP and QUIC) on the node. Beyond it a new
/// connection is answered 503 with `Retry-After` and closed.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 20_000;
/// Open TLS connections whose SNI names one tenant's services: one tenant
/// cannot hold every connection slot of the node.
pub const DEFAULT_MAX_CONNECTIONS_PER_TENANT: u64 = 5_000;
/// Open connections (TCP and QUIC together) from one client address (an
/// IPv4 address, or an IPv6 /64, which one host usually has to itself): one
/// client cannot hold every connection slot of the node. Generous, for the
/// many users behind one NAT.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u64 = 256;
/// Time a client may leave a request body without a byte while the guest
/// waits for it: a client cannot hold a guest, and its slot, by trickling.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// How long a request may wait for a slot of a full node (in its tenant's
/// queue, served in turn with other tenants') before it gets 503.
pub const DEFAULT_ADMISSION_QUEUE_TIMEOUT_MS: u64 = 500;
/// Seconds a refused client is asked to wait (`Retry-After`).
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 1;

/// Limits on the HTTP front door of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    pub max_header_bytes: u64,
    pub max_header_count: u64,
    pub max_uri_bytes: u64,
    pub header_read_timeout_ms: u64,
    pub keep_alive_idle_ms: u64,
    pub h2_max_concurrent_streams: u64,
    pub max_in_flight_requests: u64,
    pub max_in_flight_requests_per_tenant: u64,
    pub admission_queue_timeout_ms: u64,
    pub max_connections: u64,
    pub max_connections_per_tenant: u64,
    pub max_connections_per_client: u64,
    pub body_read_timeout_ms: u64,
    pub retry_after_seconds: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_header_count: DEFAULT_MAX_HEADER_COUNT,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            keep_alive_idle_ms: DEFAULT_KEEP_ALIVE_IDLE_MS,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            max_in_flight_requests_per_tenant: DEFAULT_MAX_IN_FLIGHT_REQUESTS_PER_TENANT,
            admission_queue_timeout_ms: DEFAULT_ADMISSION_QUEUE_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_tenant: DEFAULT_MAX_CONNECTIONS_PER_TENANT,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT_MS,
            retry_after_seconds: DEFAULT_RETRY_AFTER_SECONDS,
        }
    }
}

impl HttpLimits {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        check_ranges!(errors, path, self, {
            max_header_bytes: 8 * KIB..=MIB,
            max_header_count: 1..=1_000,
            max_uri_bytes: 256..=64 * KIB,
            header_read_timeout_ms: 100..=600_000,
            keep_alive_idle_ms: 100..=3_600_000,
            h2_max_concurrent_streams: 1..=10_000,
            max_in_flight_requests: 1..=1_000_000,
            max_in_flight_requests_per_tenant: 1..=1_000_000,
            admission_queue_timeout_ms: 0..=60_000,
            max_connections: 1..=10_000_000,
            max_connections_per_tenant: 1..=10_000_000,
            max_connections_per_client: 1..=10_000_000,
            body_read_timeout_ms: 100..=600_000,
            retry_after_seconds: 1..=3_600,
        });
    }
}

// ---------------------------------------------------------------------------
// Per node: the sandbox
// ---------------------------------------------------------------------------

/// The wasm stack of a guest. Deep enough for recursive parsers; a guest that
/// recurses without bound traps with a stack overflow here. Engine-wide:
/// wasmtime compiles the check into the code.
pub const WASM_STACK_BYTES: usize = 512 * 1024;
/// The host stack each running guest executes on: the wasm stack plus room for
/// the host calls it makes.
pub const ASYNC_STACK_BYTES: usize = 2 * 1024 * 1024;
/// How often the epoch ticker thread advances the engine's epoch. The CPU
/// budget is checked at this granularity.
pub const EPOCH_TICK_MS: u64 = 1;
/// The tick while guests wait for a turn on the CPU (see the node's
/// `sandbox::turns`): a running guest's turn ends at the next tick, so this
/// is how long a waiting tenant's guest waits for a free turn, at most.
pub const CONTENDED_EPOCH_TICK_US: u64 = 250;
/// Instances that can run at once. Sizes the pooling allocator's slots.
pub const DEFAULT_MAX_CONCURRENT_INSTANCES: u64 = 1_000;
/// Ceiling for any service's `memory_bytes`; sizes the pooling allocator's
/// memory slots.
pub const DEFAULT_SANDBOX_MAX_MEMORY_BYTES: u64 = DEFAULT_MEMORY_BYTES;
/// Ceiling for any service's `max_table_elements`.
pub const DEFAULT_SANDBOX_MAX_TABLE_ELEMENTS: u64 = DEFAULT_MAX_TABLE_ELEMENTS;
/// Ceilings an operator puts on what tenants may set for their services:
/// CPU budget, wall time and log bytes per request. A spec above one is
/// refused, naming it. Generous next to the defaults (50 ms, 60 s, 64 KiB),
/// for interpreters' first requests, and far below what the limits' own
/// ranges allow (60 s, 1 h, 16 MiB).
pub const DEFAULT_SANDBOX_MAX_CPU_BUDGET_MS: u64 = 5_000;
pub const DEFAULT_SANDBOX_MAX_WALL_TIME_MS: u64 = 120_000;
pub const DEFAULT_SANDBOX_MAX_LOG_BYTES_PER_REQUEST: u64 = MIB;
/// Ready-to-instantiate components kept in memory. Beyond it the least
/// recently used is dropped and reloaded (mmap) from disk when next needed.
pub const DEFAULT_MODULE_CACHE_ENTRIES: u64 = 1_000;

/// Node-wide sizing of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    pub max_concurrent_instances: u64,
    pub max_memory_bytes: u64,
    pub max_table_elements: u64,
    pub max_cpu_budget_ms: u64,
    pub max_wall_time_ms: u64,
    pub max_log_bytes_per_request: u64,
    pub module_cache_entries: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            max_concurrent_instances: DEFAULT_MAX_CONCURRENT_INSTANCES,
            max_memory_bytes: DEFAULT_SANDBOX_MAX_MEMORY_BYTES,
            max_table_elements: DEFAULT_SANDBOX_MAX_TABLE_ELEMENTS,
            max_cpu_budget_ms: DEFAULT_SANDBOX_MAX_CPU_BUDGET_MS,
            max_wall_time_ms: DEFAULT_SANDBOX_MAX_WALL_TIME_MS,
            max_log_bytes_per_request: DEFAULT_SANDBOX_MAX_LOG_BYTES_PER_REQUEST,
            module_cache_entries: DEFAULT_MODULE_CACHE_ENTRIES,
        }
    }
}

impl SandboxLimits {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        check_ranges!(errors, path, self, {
            max_concurrent_instances: 1..=100_000,
            max_memory_bytes: 64 * KIB..=4 * 1024 * MIB,
            max_table_elements: 1..=10_000_000,
            max_cpu_budget_ms: 1..=60_000,
            max_wall_time_ms: 1..=3_600_000,
            max_log_bytes_per_request: 0..=16 * MIB,
            module_cache_entries: 1..=1_000_000,
        });
    }
}

// ---------------------------------------------------------------------------
// Per node: the HTTP cache
// ---------------------------------------------------------------------------

/// Memory for cached backend responses and guest cache entries, all tenants
/// together. Least-recently-used entries are evicted beyond it.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 * MIB;
/// Largest single entry. A bigger response is streamed to the guest and not
/// stored, so that one object cannot evict a whole tenant's working set.
pub const DEFAULT_CACHE_MAX_OBJECT_BYTES: u64 = 8 * MIB;
/// The cache's name in `Cache-Status` unless the operator names it.
pub const DEFAULT_CACHE_STATUS_NAME: &str = "edge";
/// How long past its freshness a stored response is served when the origin
/// fails (5xx, refused connection, timeout) and the response says nothing
/// itself: RFC 5861 `stale-if-error` as the platform's default. Never for a
/// response with `must-revalidate`, `proxy-revalidate`, `s-maxage` or
/// `no-cache`.
pub const DEFAULT_CACHE_STALE_IF_ERROR_SECS: u64 = 60;
/// Longest default `stale-if-error` an operator may set.
pub const CACHE_MAX_STALE_IF_ERROR_SECS: u64 = 86_400;
/// Distinct surrogate keys one tenant may have indexed on a node: bounds
/// the index whatever the tenant's entries look like.
pub const DEFAULT_CACHE_MAX_SURROGATE_KEYS_PER_TENANT: u64 = 100_000;
/// Variants (different `Vary` request headers) kept for one URL.
pub const CACHE_MAX_VARIANTS: usize = 16;
/// Longest key a guest may use with the cache API.
pub const CACHE_MAX_KEY_BYTES: usize = 1024;
/// Surrogate keys one entry may carry.
pub const CACHE_MAX_SURROGATE_KEYS: usize = 32;

/// Sizing of a node's HTTP cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheLimits {
    pub max_bytes: u64,
    pub max_object_bytes: u64,
    pub max_surrogate_keys_per_tenant: u64,
    /// The cache's name in `Cache-Status` (RFC 9211): a token.
    pub status_name: String,
    /// Seconds of `stale-if-error` for responses that give none
    /// ([`DEFAULT_CACHE_STALE_IF_ERROR_SECS`]); 0 turns the default off.
    pub default_stale_if_error_secs: u64,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_object_bytes: DEFAULT_CACHE_MAX_OBJECT_BYTES,
            max_surrogate_keys_per_tenant: DEFAULT_CACHE_MAX_SURROGATE_KEYS_PER_TENANT,
            status_name: DEFAULT_CACHE_STATUS_NAME.to_string(),
            default_stale_if_error_secs: DEFAULT_CACHE_STALE_IF_ERROR_SECS,
        }
    }
}

impl CacheLimits {
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        check_ranges!(errors, path, self, {
            max_bytes: 0..=1024 * 1024 * MIB,
            max_object_bytes: 0..=self.max_bytes.min(u64::from(u32::MAX)),
        });
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.status_name.is_empty()
            || self.status_name.len() > 64
            || !self.status_name.chars().all(token)
        {
            errors.push(
                format!("{path}.status_name"),
                format!(
                    "{:?} is not an HTTP token of 1 to 64 characters",
                    self.status_name
                ),
            );
        }
        check_ranges!(errors, path, self, {
            max_surrogate_keys_per_tenant: 1..=100_000_000,
            default_stale_if_error_secs: 0..=CACHE_MAX_STALE_IF_ERROR_SECS,
        });
    }
}
/// Longest TTL a guest may give an entry it inserts.
pub const CACHE_MAX_GUEST_TTL_MS: u64 = 86_400_000;
/// Longest surrogate key.
pub const CACHE_MAX_SURROGATE_KEY_BYTES: usize = 256;
