-- A consumer with nothing to act on (webhooks while no webhook is active) says so, and events
-- written meanwhile get no pending row for it: every change then writes one row less per
-- event, and the consumer deletes none.
ALTER TABLE nexus_outbox_consumers ADD COLUMN interested BOOLEAN NOT NULL DEFAULT TRUE;
