-- A row that holds the events of one transaction of one writer (a bulk insert announces a
-- thousand documents): `data` is then the JSON array of their envelopes, and the row's other
-- columns are the first one's. One row and one pending row per consumer instead of a thousand
-- each: the outbox was most of a bulk insert's writes.
ALTER TABLE nexus_outbox ADD COLUMN batch BOOLEAN NOT NULL DEFAULT FALSE;
