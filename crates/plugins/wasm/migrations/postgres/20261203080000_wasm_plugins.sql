-- WebAssembly plugins installed at run time: the package in effect and the one before it
-- (for rollback), and each plugin's private key-value store.
CREATE TABLE nexus_wasm_plugins (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    package BYTEA NOT NULL,
    grants TEXT NOT NULL,
    installed_at BIGINT NOT NULL,
    previous_version TEXT,
    previous_sha256 TEXT,
    previous_package BYTEA,
    previous_grants TEXT
);

CREATE TABLE nexus_wasm_kv (
    plugin_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (plugin_id, key)
);
