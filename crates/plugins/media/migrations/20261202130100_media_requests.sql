-- Overseerr-compatible media requests.
CREATE TABLE media_requests (
    id BIGINT PRIMARY KEY,
    media_type TEXT NOT NULL,
    tmdb_id BIGINT NOT NULL,
    tvdb_id BIGINT,
    is4k BIGINT NOT NULL,
    -- JSON array of season numbers (tv).
    seasons TEXT NOT NULL,
    -- 1 pending, 2 approved, 3 declined, 4 failed, 5 completed.
    status BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    modified_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX media_requests_media ON media_requests (media_type, tmdb_id, is4k);
CREATE INDEX media_requests_user ON media_requests (requested_by);
