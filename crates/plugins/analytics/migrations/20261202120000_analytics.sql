-- Analytics events. Times are microseconds since the epoch. `ts` (the event's time) carries
-- the index every query and the retention pass start from, so a range query reads only its
-- range. `event_key` is the client's optional `event_id`: unique, for idempotent retries.
CREATE TABLE analytics_events (
    id             TEXT   PRIMARY KEY,
    event_key      TEXT,
    ts             BIGINT NOT NULL,
    received_at    BIGINT NOT NULL,
    event_name     TEXT   NOT NULL,
    event_category TEXT   NOT NULL,
    user_id        TEXT,
    -- The Nexus user `user_id` names, when it names one.
    linked_user_id TEXT,
    source         TEXT,
    -- JSON object.
    properties     TEXT   NOT NULL,
    ip_address     TEXT,
    user_agent     TEXT
);
CREATE UNIQUE INDEX analytics_events_key ON analytics_events (event_key) WHERE event_key IS NOT NULL;
CREATE INDEX analytics_events_ts ON analytics_events (ts, id);
