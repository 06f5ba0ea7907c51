-- The transactional outbox (see docs/events.md): each event is written in the transaction of
-- the change it describes, with one pending row per consumer; a consumer takes its pending rows
-- (deleting them) in the transaction where it acts on them.
CREATE TABLE nexus_outbox (
    id         TEXT   PRIMARY KEY,
    kind       TEXT   NOT NULL,
    source     TEXT   NOT NULL,
    data       TEXT   NOT NULL,
    timestamp  TEXT   NOT NULL,
    origin     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX nexus_outbox_created ON nexus_outbox (created_at);

-- Who takes every event: the relay to the event bus, and durable consumers such as webhooks.
-- A consumer, once registered, receives every event written after.
CREATE TABLE nexus_outbox_consumers (
    name       TEXT   PRIMARY KEY,
    created_at BIGINT NOT NULL
);
INSERT INTO nexus_outbox_consumers (name, created_at) VALUES ('bus', 0);

-- Per-row state, not a cursor: on PostgreSQL transactions commit out of id order, so an offset
-- would skip a row committed late.
CREATE TABLE nexus_outbox_pending (
    consumer   TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    origin     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX nexus_outbox_pending_due ON nexus_outbox_pending (consumer, created_at);
CREATE INDEX nexus_outbox_pending_event ON nexus_outbox_pending (event_id);
