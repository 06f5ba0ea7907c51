-- Keys this installation derives its own signatures from (for example pagination cursors),
-- created at first use and shared by every instance that uses this database.
CREATE TABLE nexus_keys (
    name       TEXT   PRIMARY KEY,
    secret     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
