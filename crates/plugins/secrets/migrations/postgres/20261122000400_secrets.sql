-- Master keys known to this installation, by id: never the key itself, only a check value
-- (a known constant encrypted under it) that tells whether a presented key is the right one.
CREATE TABLE secret_master_keys (
    id          TEXT    PRIMARY KEY,
    check_value BYTEA   NOT NULL,
    -- 'active' (wraps new data keys), 'pending' (being rotated to) or 'retired'
    state       TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

-- One row per secret: its current version and its data key, wrapped by master key `key_id`.
CREATE TABLE secrets (
    id          TEXT    PRIMARY KEY,
    path        TEXT    NOT NULL UNIQUE,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    version     BIGINT  NOT NULL,
    key_id      TEXT    NOT NULL REFERENCES secret_master_keys (id),
    wrapped_key BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL,
    updated_by  TEXT    NOT NULL
);
CREATE INDEX secrets_key_id ON secrets (key_id);

-- Every version of every secret, encrypted under the secret's data key.
CREATE TABLE secret_versions (
    id          TEXT    PRIMARY KEY,
    secret_id   TEXT    NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version     BIGINT  NOT NULL,
    ciphertext  BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL,
    UNIQUE (secret_id, version)
);
