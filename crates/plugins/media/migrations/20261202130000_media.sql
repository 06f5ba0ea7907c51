-- Media libraries, their items and files, and per-user playback data.
-- One file for SQLite and PostgreSQL: only types and statements both accept.

CREATE TABLE media_libraries (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    -- JSON array of folder paths.
    paths TEXT NOT NULL,
    -- `config` (from `media.libraries`) or `api` (Library/VirtualFolders).
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Movies, series, seasons, episodes, artists, albums, tracks and photos.
CREATE TABLE media_items (
    id TEXT PRIMARY KEY,
    library_id TEXT NOT NULL,
    parent_id TEXT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    sort_name TEXT NOT NULL,
    -- The folder of a folder item, the first file of a playable one.
    path TEXT,
    year BIGINT,
    index_number BIGINT,
    parent_index_number BIGINT,
    index_number_end BIGINT,
    series_id TEXT,
    series_name TEXT,
    season_id TEXT,
    album_artist TEXT,
    image_path TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX media_items_library ON media_items (library_id, kind, sort_name);
CREATE INDEX media_items_parent ON media_items (parent_id, sort_name);

-- Files on disk; a movie with versions has several.
CREATE TABLE media_files (
    id TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    library_id TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    size BIGINT NOT NULL,
    mtime BIGINT NOT NULL,
    container TEXT NOT NULL,
    version TEXT,
    runtime_ticks BIGINT,
    -- JSON array of streams as ffprobe reported them (empty when not probed).
    streams TEXT NOT NULL,
    probed BIGINT NOT NULL
);
CREATE INDEX media_files_item ON media_files (item_id);
CREATE INDEX media_files_library ON media_files (library_id);

CREATE TABLE media_user_data (
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    played BIGINT NOT NULL,
    play_count BIGINT NOT NULL,
    position_ticks BIGINT NOT NULL,
    favorite BIGINT NOT NULL,
    last_played_at BIGINT,
    PRIMARY KEY (user_id, item_id)
);

-- Every playback, for history and statistics.
CREATE TABLE media_playback (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    client TEXT NOT NULL,
    device TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    stopped_at BIGINT,
    position_ticks BIGINT NOT NULL
);
CREATE INDEX media_playback_user ON media_playback (user_id, started_at);
