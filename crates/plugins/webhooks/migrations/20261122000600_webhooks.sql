-- Webhooks and their durable delivery outbox.
CREATE TABLE webhooks (
    id               TEXT    PRIMARY KEY,
    owner_id         TEXT    NOT NULL,
    url              TEXT    NOT NULL,
    events           TEXT    NOT NULL,
    -- The signing secret. HMAC needs it in the clear to sign; it is never returned by the API.
    secret           TEXT    NOT NULL,
    description      TEXT    NOT NULL DEFAULT '',
    active           BOOLEAN NOT NULL DEFAULT TRUE,
    failure_count    BIGINT  NOT NULL DEFAULT 0,
    disabled_reason  TEXT,
    disabled_at      BIGINT,
    last_delivery_at BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX webhooks_owner ON webhooks (owner_id);

-- One row per (webhook, event): pending until delivered or given up. `locked_until` is the
-- lease of the worker attempting it, so a crash mid-attempt leaves it claimable again.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY,
    webhook_id      TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    locked_until    BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    duration_ms     BIGINT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    delivered_at    BIGINT
);
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (webhook_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (webhook_id, created_at);
