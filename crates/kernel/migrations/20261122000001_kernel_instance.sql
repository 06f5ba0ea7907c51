-- The identity of this installation: one row, created at first start, shared by every
-- instance that uses this database.
CREATE TABLE nexus_instance (
    singleton  BIGINT  PRIMARY KEY CHECK (singleton = 1),
    server_id  TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
