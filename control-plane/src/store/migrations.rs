//! The schema, as numbered migrations applied in order, each once, each in
//! its own transaction. The SQL is the subset SQLite and PostgreSQL share.

/// `(version, statements)`; append only, never edit a released one.
pub const MIGRATIONS: &[(i64, &[&str])] = &[
    (
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
    ),
    (
        2,
        &[
            // Purges, in the order nodes apply them. The counter row gives
            // each its number in the purge's own transaction, the same way
            // on both databases.
            "CREATE TABLE purges (
                seq BIGINT PRIMARY KEY,
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                kind TEXT NOT NULL,
                value TEXT NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE TABLE purge_counter (
                id BIGINT PRIMARY KEY,
                seq BIGINT NOT NULL
            )",
            "INSERT INTO purge_counter (id, seq) VALUES (1, 0)",
            // The last purge each node acknowledged.
            "ALTER TABLE nodes ADD COLUMN purge_seq BIGINT NOT NULL DEFAULT 0",
            // Set by the operator: the tenant's backends may be on private
            // addresses (1) or not (0).
            "ALTER TABLE tenants ADD COLUMN allow_private_backends BIGINT NOT NULL DEFAULT 0",
        ],
    ),
    (
        3,
        &[
            // One TLS certificate per service, sent to nodes in the snapshot.
            "CREATE TABLE certificates (
                service_id TEXT PRIMARY KEY REFERENCES services(id),
                cert_pem TEXT NOT NULL,
                key_pem TEXT NOT NULL,
                fingerprint_sha256 TEXT NOT NULL,
                created_at BIGINT NOT NULL
            )",
        ],
    ),
    (
        4,
        &[
            // Lines guests printed, shipped by nodes; the newest
            // MAX_GUEST_LOG_LINES_PER_SERVICE per service are kept. The
            // counter row numbers them the same way on both databases.
            "CREATE TABLE guest_logs (
                id BIGINT PRIMARY KEY,
                service_id TEXT NOT NULL REFERENCES services(id),
                node_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                request_id TEXT NOT NULL,
                stream TEXT NOT NULL,
                timestamp_ms BIGINT NOT NULL,
                line TEXT NOT NULL
            )",
            "CREATE INDEX guest_logs_by_service ON guest_logs (service_id, id)",
            "CREATE TABLE guest_log_counter (
                id BIGINT PRIMARY KEY,
                seq BIGINT NOT NULL
            )",
            "INSERT INTO guest_log_counter (id, seq) VALUES (1, 0)",
        ],
    ),
    (
        5,
        &[
            // The operator's kill switch: a suspended tenant's services
            // leave every snapshot and its tokens are refused.
            "ALTER TABLE tenants ADD COLUMN suspended BIGINT NOT NULL DEFAULT 0",
            // Claims name their tenant and are pending until verified.
            // Claims made before verification existed were being served:
            // they are kept as verified.
            "ALTER TABLE domains ADD COLUMN tenant_id TEXT NOT NULL DEFAULT ''",
            "UPDATE domains SET tenant_id = \
             (SELECT s.tenant_id FROM services s WHERE s.id = domains.service_id)",
            "ALTER TABLE domains ADD COLUMN verified BIGINT NOT NULL DEFAULT 1",
            "ALTER TABLE domains ADD COLUMN challenge TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE domains ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0",
            "CREATE INDEX domains_by_service ON domains (service_id)",
            "CREATE INDEX domains_by_tenant ON domains (tenant_id)",
            // Which tenants uploaded which module: a version may name only
            // its own tenant's. The bytes are still stored once.
            "CREATE TABLE tenant_modules (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                sha256 TEXT NOT NULL REFERENCES modules(sha256),
                created_at BIGINT NOT NULL,
                PRIMARY KEY (tenant_id, sha256)
            )",
            "INSERT INTO tenant_modules (tenant_id, sha256, created_at) \
             SELECT DISTINCT s.tenant_id, v.module_sha256, 0 FROM versions v \
             JOIN services s ON s.id = v.service_id",
        ],
    ),
    (
        6,
        &[
            // Each node's own credential (a sha256, as for tenant tokens).
            // Nodes registered before have none and register again.
            "ALTER TABLE nodes ADD COLUMN token_sha256 TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX nodes_by_token ON nodes (token_sha256)",
            // Services a node could not load in the snapshot it applied
            // last, replaced at each report.
            "CREATE TABLE node_failures (
                node_id TEXT NOT NULL,
                service_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                error TEXT NOT NULL,
                reported_at BIGINT NOT NULL
            )",
            "CREATE INDEX node_failures_by_service ON node_failures (service_id, version)",
            "CREATE INDEX node_failures_by_node ON node_failures (node_id)",
            // Every claiming transaction releases expired pending claims.
            "CREATE INDEX domains_pending ON domains (verified, created_at)",
        ],
    ),
    (
        7,
        &[
            // The usage reports already counted, by the id each carries: a
            // report sent again (its answer was lost, or the node was
            // killed before it knew) is counted once. Kept a week.
            "CREATE TABLE usage_reports (
                node_id TEXT NOT NULL,
                report_id TEXT NOT NULL,
                received_at BIGINT NOT NULL,
                PRIMARY KEY (node_id, report_id)
            )",
            "CREATE INDEX usage_reports_by_age ON usage_reports (received_at)",
            // Expired purges are pruned by age, off the request path.
            "CREATE INDEX purges_by_age ON purges (created_at)",
        ],
    ),
    (
        8,
        &[
            // A soft purge marks entries stale instead of removing them
            // (1), a hard one removes them (0).
            "ALTER TABLE purges ADD COLUMN soft BIGINT NOT NULL DEFAULT 0",
        ],
    ),
    (
        9,
        &[
            // A tenant's KV stores, with what they hold (kept up to date by
            // every write, for the quotas).
            "CREATE TABLE kv_stores (
                id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                name TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                keys BIGINT NOT NULL DEFAULT 0,
                bytes BIGINT NOT NULL DEFAULT 0,
                UNIQUE (tenant_id, name)
            )",
            // Every key's newest value, base64 (both databases store text
            // alike), or NULL: deleted, a tombstone kept for the feed until
            // it is pruned. `seq` is the change that wrote it: the feed is
            // this table by `seq`. A deleted store leaves one tombstone
            // with the empty key (no real key is empty), which tells nodes
            // to drop the store: so `store_id` outlives its store.
            "CREATE TABLE kv_entries (
                store_id TEXT NOT NULL,
                key TEXT NOT NULL,
                value TEXT,
                value_bytes BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (store_id, key)
            )",
            "CREATE INDEX kv_entries_by_seq ON kv_entries (seq)",
            "CREATE INDEX kv_tombstones ON kv_entries (updated_at) WHERE value IS NULL",
            // The change counter (its row lock orders every write, so the
            // feed's numbers commit in order), and the newest tombstone
            // pruned: a node behind it starts its replica over.
            "CREATE TABLE kv_counter (
                id BIGINT PRIMARY KEY,
                seq BIGINT NOT NULL,
                pruned_through BIGINT NOT NULL
            )",
            "INSERT INTO kv_counter (id, seq, pruned_through) VALUES (1, 0, 0)",
            // Secrets, sealed with the operator's key for their tenant and
            // name; the value itself is stored nowhere.
            "CREATE TABLE secrets (
                tenant_id TEXT NOT NULL REFERENCES tenants(id),
                name TEXT NOT NULL,
                sealed TEXT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (tenant_id, name)
            )",
        ],
    ),
    (
        10,
        &[
            // A service's running canary: at most one.
            "CREATE TABLE canaries (
                service_id TEXT PRIMARY KEY REFERENCES services(id),
                version BIGINT NOT NULL,
                percent BIGINT NOT NULL,
                sticky TEXT NOT NULL,
                policy TEXT NOT NULL,
                started_at BIGINT NOT NULL,
                started_by TEXT NOT NULL
            )",
            // Who made which version active or canary, and how that ended.
            "CREATE TABLE activations (
                service_id TEXT NOT NULL REFERENCES services(id),
                seq BIGINT NOT NULL,
                version BIGINT NOT NULL,
                role TEXT NOT NULL,
                percent BIGINT,
                started_by TEXT NOT NULL,
                started_at BIGINT NOT NULL,
                ended_at BIGINT,
                ended_by TEXT,
                outcome TEXT,
                reason TEXT,
                PRIMARY KEY (service_id, seq)
            )",
            // Requests and errors per version of a service with a canary,
            // one row per node report: what a rollback decides on.
            "CREATE TABLE version_usage (
                service_id TEXT NOT NULL REFERENCES services(id),
                version BIGINT NOT NULL,
                received_at BIGINT NOT NULL,
                requests BIGINT NOT NULL,
                errors BIGINT NOT NULL
            )",
            "CREATE INDEX version_usage_by_service ON version_usage (service_id, received_at)",
        ],
    ),
    (
        11,
        &[
            // Components and compiled artifacts, content-addressed, where
            // every replica reaches them: used on PostgreSQL, where several
            // replicas share one database (on SQLite they stay on disk).
            // `fingerprint` is the engine's for an artifact or manifest,
            // empty for a component.
            "CREATE TABLE blobs (
                sha256 TEXT NOT NULL,
                kind TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                bytes BYTEA NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (sha256, kind, fingerprint)
            )",
        ],
    ),
];
