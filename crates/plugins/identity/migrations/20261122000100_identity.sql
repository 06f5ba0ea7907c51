-- Users, their roles, sessions (refresh token families), revocations and API keys.
CREATE TABLE users (
    id                 TEXT    PRIMARY KEY,
    username           TEXT    NOT NULL,
    username_key       TEXT    NOT NULL UNIQUE,
    email              TEXT    NOT NULL,
    email_key          TEXT    NOT NULL UNIQUE,
    full_name          TEXT    NOT NULL DEFAULT '',
    password_hash      TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    metadata           TEXT    NOT NULL DEFAULT '{}',
    failed_logins      BIGINT  NOT NULL DEFAULT 0,
    locked_until       BIGINT,
    created_at         BIGINT  NOT NULL,
    updated_at         BIGINT  NOT NULL,
    last_login         BIGINT
);
CREATE INDEX users_created ON users (created_at);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role ON user_roles (role);

-- Refresh tokens, stored only as SHA-256 hashes. One family per login; each refresh spends a
-- token and issues the next in the same family.
CREATE TABLE refresh_tokens (
    token_hash TEXT   PRIMARY KEY,
    family_id  TEXT   NOT NULL,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT   NOT NULL DEFAULT '',
    device_id  TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Access tokens invalidated before they expire: a session (kind 'session', subject = the
-- family id the token carries), every token of a user issued before `not_before`
-- (kind 'user'), or an API key (kind 'apikey'). Every instance polls this table.
CREATE TABLE revocations (
    id         TEXT   PRIMARY KEY,
    kind       TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    not_before BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revocations_created ON revocations (created_at);

-- API keys, stored only as SHA-256 hashes; `prefix` is the part shown in listings.
CREATE TABLE api_keys (
    id         TEXT    PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    key_hash   TEXT    NOT NULL UNIQUE,
    prefix     TEXT    NOT NULL,
    scopes     TEXT    NOT NULL DEFAULT '[]',
    premium    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT,
    last_used  BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id);
