-- Hourly rollups of the events (see src/rollup.rs): per UTC hour, name, category and source
-- (`''` for none), the number of events and the set of their users, as numbers.
CREATE TABLE analytics_user_ids (
    user_id TEXT   PRIMARY KEY,
    n       BIGINT NOT NULL
);
CREATE UNIQUE INDEX analytics_user_ids_n ON analytics_user_ids (n);

CREATE TABLE analytics_rollups (
    hour           BIGINT NOT NULL,
    event_name     TEXT   NOT NULL,
    event_category TEXT   NOT NULL,
    source         TEXT   NOT NULL,
    events         BIGINT NOT NULL,
    user_count     BIGINT NOT NULL,
    -- Sorted user numbers, as varint deltas.
    users          BYTEA  NOT NULL,
    PRIMARY KEY (hour, event_name, event_category, source)
);

-- Hours whose rollups were computed, and hours changed since (by ingestion or retention).
CREATE TABLE analytics_rollup_hours (hour BIGINT PRIMARY KEY);
CREATE TABLE analytics_dirty_hours (hour BIGINT PRIMARY KEY);
