-- Append-only record of security-relevant actions.
CREATE TABLE audit_log (
    id          TEXT    PRIMARY KEY,
    timestamp   BIGINT  NOT NULL,
    action      TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    target      TEXT    NOT NULL DEFAULT '',
    secret_id   TEXT    NOT NULL DEFAULT '',
    secret_path TEXT    NOT NULL DEFAULT '',
    ip_address  TEXT    NOT NULL DEFAULT '',
    user_agent  TEXT    NOT NULL DEFAULT '',
    success     BOOLEAN NOT NULL,
    request_id  TEXT    NOT NULL DEFAULT '',
    metadata    TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_time ON audit_log (timestamp);
CREATE INDEX audit_log_actor ON audit_log (actor, timestamp);
CREATE INDEX audit_log_action ON audit_log (action, timestamp);
CREATE INDEX audit_log_secret_path ON audit_log (secret_path, timestamp);
