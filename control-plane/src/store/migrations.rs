//! The schema, as numbered migrations applied in order, each once, each in
//! its own transaction. The SQL is the subset SQLite and PostgreSQL share.

/// `(version, statements)`; append only, never edit a released one.
pub const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE api_tokens (
            token_sha256 TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            label TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE services (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            name TEXT NOT NULL,
            spec TEXT NOT NULL,
            active_version BIGINT,
            created_at BIGINT NOT NULL,
            UNIQUE (tenant_id, name)
        )",
        "CREATE TABLE domains (
            domain TEXT PRIMARY KEY,
            service_id TEXT NOT NULL REFERENCES services(id)
        )",
        "CREATE TABLE modules (
            sha256 TEXT PRIMARY KEY,
            size_bytes BIGINT NOT NULL,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE versions (
            service_id TEXT NOT NULL REFERENCES services(id),
            number BIGINT NOT NULL,
            module_sha256 TEXT NOT NULL REFERENCES modules(sha256),
            spec TEXT NOT NULL,
            author TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (service_id, number)
        )",
        "CREATE TABLE snapshot (
            id BIGINT PRIMARY KEY,
            version BIGINT NOT NULL
        )",
        "INSERT INTO snapshot (id, version) VALUES (1, 0)",
        "CREATE TABLE nodes (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            engine_fingerprint TEXT NOT NULL,
            snapshot_version BIGINT NOT NULL,
            registered_at BIGINT NOT NULL,
            last_seen_at BIGINT NOT NULL
        )",
        "CREATE TABLE usage (
            service_id TEXT NOT NULL REFERENCES services(id),
            node_id TEXT NOT NULL,
            requests BIGINT NOT NULL,
            status_2xx BIGINT NOT NULL,
            status_3xx BIGINT NOT NULL,
            status_4xx BIGINT NOT NULL,
            status_5xx BIGINT NOT NULL,
            guest_cpu_micros BIGINT NOT NULL,
            bytes_out BIGINT NOT NULL,
            PRIMARY KEY (service_id, node_id)
        )",
    ],
)];
