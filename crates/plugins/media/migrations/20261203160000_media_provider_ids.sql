-- Provider ids named in folder and file names (`[tmdbid-603]`, `{tvdb-81189}`), by which
-- requests find their media; and the title and year a request may carry, matched when the
-- item names no id.
ALTER TABLE media_items ADD COLUMN tmdb_id BIGINT;
ALTER TABLE media_items ADD COLUMN tvdb_id BIGINT;
ALTER TABLE media_requests ADD COLUMN title TEXT;
ALTER TABLE media_requests ADD COLUMN year BIGINT;
