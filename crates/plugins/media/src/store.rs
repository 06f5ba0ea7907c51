//! SQL of the media plugin: libraries, items, files, user data and playback history. The same
//! statements run on SQLite and PostgreSQL: [`MediaStore`] is the contract, implemented once
//! per dialect by the same SQL ([`SqliteStore`], [`PostgresStore`]).

use futures::future::BoxFuture;
use nexus_kernel::db::{Db, StorageError};
use nexus_kernel::events::Event;
use nexus_kernel::outbox::OutboxTx as _;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LibraryRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// JSON array of folder paths.
    pub paths: String,
    pub source: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ItemRow {
    pub id: String,
    pub library_id: String,
    pub parent_id: Option<String>,
    pub kind: String,
    pub name: String,
    pub sort_name: String,
    pub path: Option<String>,
    pub year: Option<i64>,
    pub index_number: Option<i64>,
    pub parent_index_number: Option<i64>,
    pub index_number_end: Option<i64>,
    pub series_id: Option<String>,
    pub series_name: Option<String>,
    pub season_id: Option<String>,
    pub album_artist: Option<String>,
    pub image_path: Option<String>,
    pub created_at: i64,
    /// TheMovieDB's id of a movie or series, when its names tag one.
    pub tmdb_id: Option<i64>,
    /// TheTVDB's id of a movie or series, when its names tag one.
    pub tvdb_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FileRow {
    pub id: String,
    pub item_id: String,
    pub library_id: String,
    pub path: String,
    pub size: i64,
    pub mtime: i64,
    pub container: String,
    pub version: Option<String>,
    pub runtime_ticks: Option<i64>,
    /// JSON array of streams.
    pub streams: String,
    /// 1 when ffprobe read the file.
    pub probed: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct UserDataRow {
    pub user_id: String,
    pub item_id: String,
    pub played: i64,
    pub play_count: i64,
    pub position_ticks: i64,
    pub favorite: i64,
    pub last_played_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PlaybackRow {
    pub id: String,
    pub user_id: String,
    pub item_id: String,
    pub session_id: String,
    pub client: String,
    pub device: String,
    pub started_at: i64,
    pub stopped_at: Option<i64>,
    pub position_ticks: i64,
}

/// What a scan changes, written in one transaction.
#[derive(Debug, Default)]
pub struct ScanChanges {
    pub upsert_items: Vec<ItemRow>,
    pub delete_items: Vec<String>,
    pub upsert_files: Vec<FileRow>,
    pub delete_files: Vec<String>,
}

impl ScanChanges {
    pub fn is_empty(&self) -> bool {
        self.upsert_items.is_empty()
            && self.delete_items.is_empty()
            && self.upsert_files.is_empty()
            && self.delete_files.is_empty()
    }
}

const LIBRARY_COLUMNS: &str = "id, name, kind, paths, source, created_at";
const ITEM_COLUMNS: &str = "id, library_id, parent_id, kind, name, sort_name, path, year, index_number, \
    parent_index_number, index_number_end, series_id, series_name, season_id, album_artist, image_path, created_at, \
    tmdb_id, tvdb_id";
const FILE_COLUMNS: &str =
    "id, item_id, library_id, path, size, mtime, container, version, runtime_ticks, streams, probed";
const USER_DATA_COLUMNS: &str = "user_id, item_id, played, play_count, position_ticks, favorite, last_played_at";
const PLAYBACK_COLUMNS: &str =
    "id, user_id, item_id, session_id, client, device, started_at, stopped_at, position_ticks";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RequestRow {
    pub id: i64,
    pub media_type: String,
    pub tmdb_id: i64,
    pub tvdb_id: Option<i64>,
    pub is4k: i64,
    pub seasons: String,
    pub status: i64,
    pub requested_by: String,
    pub modified_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The title and year the requester gave (a Nexus addition to Overseerr's body), matched
    /// against items whose names tag no provider id.
    pub title: Option<String>,
    pub year: Option<i64>,
}

const REQUEST_COLUMNS: &str = "id, media_type, tmdb_id, tvdb_id, is4k, seasons, status, requested_by, modified_by, \
    created_at, updated_at, title, year";

type Result<T> = std::result::Result<T, StorageError>;

/// Makes the event of a request from its new id.
pub type Announce<'a> = &'a (dyn Fn(i64) -> Event + Send + Sync);

/// The storage of the media plugin.
pub trait MediaStore: Send + Sync + std::fmt::Debug {
    fn libraries<'a>(&'a self) -> BoxFuture<'a, Result<Vec<LibraryRow>>>;
    /// Inserts or replaces library `l` (by id).
    fn put_library<'a>(&'a self, l: &'a LibraryRow) -> BoxFuture<'a, Result<()>>;
    /// Deletes a library with its items and files.
    fn delete_library<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;
    fn items<'a>(&'a self) -> BoxFuture<'a, Result<Vec<ItemRow>>>;
    fn files<'a>(&'a self) -> BoxFuture<'a, Result<Vec<FileRow>>>;
    /// Writes a scan's changes, and `events` to the outbox, in one transaction.
    fn apply<'a>(&'a self, c: &'a ScanChanges, events: &'a [Event]) -> BoxFuture<'a, Result<()>>;
    /// Every item's data for `user_id`.
    fn user_data<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<Vec<UserDataRow>>>;
    fn user_item_data<'a>(&'a self, user_id: &'a str, item_id: &'a str) -> BoxFuture<'a, Result<Option<UserDataRow>>>;
    /// `user_id`'s data on `item_ids` (those it has any on).
    fn user_items_data<'a>(
        &'a self,
        user_id: &'a str,
        item_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<UserDataRow>>>;
    fn put_user_data<'a>(&'a self, d: &'a UserDataRow) -> BoxFuture<'a, Result<()>>;
    fn put_playback<'a>(&'a self, p: &'a PlaybackRow) -> BoxFuture<'a, Result<()>>;
    /// The latest playbacks, newest first.
    fn history<'a>(&'a self, user_id: Option<&'a str>, limit: i64) -> BoxFuture<'a, Result<Vec<PlaybackRow>>>;
    /// Inserts a request under the next id and returns it, with the event `announce` makes of
    /// that id written to the outbox in the same transaction.
    fn insert_request<'a>(&'a self, r: &'a RequestRow, announce: Announce<'a>) -> BoxFuture<'a, Result<i64>>;
    fn request<'a>(&'a self, id: i64) -> BoxFuture<'a, Result<Option<RequestRow>>>;
    /// Every request (of `user`, when given), newest first.
    fn requests<'a>(&'a self, user: Option<&'a str>) -> BoxFuture<'a, Result<Vec<RequestRow>>>;
    /// Requests for the same media (any status).
    fn requests_for<'a>(
        &'a self,
        media_type: &'a str,
        tmdb_id: i64,
        is4k: i64,
    ) -> BoxFuture<'a, Result<Vec<RequestRow>>>;
    /// Sets a request's status, with `event` (if any) written to the outbox in the same
    /// transaction; whether the request exists.
    fn set_request_status<'a>(
        &'a self,
        id: i64,
        status: i64,
        by: &'a str,
        now: i64,
        event: Option<&'a Event>,
    ) -> BoxFuture<'a, Result<bool>>;
    fn delete_request<'a>(&'a self, id: i64) -> BoxFuture<'a, Result<bool>>;
    /// Marks request `id` completed, with `event` in the same transaction, unless it is no
    /// longer approved or failed (another instance completed it, or it was declined); whether
    /// it did.
    fn complete_request<'a>(&'a self, id: i64, now: i64, event: &'a Event) -> BoxFuture<'a, Result<bool>>;
}

/// The store for `db`'s dialect.
pub fn open(db: &Db) -> std::sync::Arc<dyn MediaStore> {
    match db {
        Db::Sqlite(pool) => std::sync::Arc::new(SqliteStore { pool: pool.clone() }),
        Db::Postgres(pool) => std::sync::Arc::new(PostgresStore { pool: pool.clone() }),
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: sqlx::PgPool,
}

/// The implementation of [`MediaStore`] for one dialect; the SQL is the same on both.
macro_rules! dialect_impl {
    ($store:ty) => {
        impl MediaStore for $store {
            fn libraries<'a>(&'a self) -> BoxFuture<'a, Result<Vec<LibraryRow>>> {
                Box::pin(async move {
        let sql = format!("SELECT {LIBRARY_COLUMNS} FROM media_libraries ORDER BY name");
        { let pool = &self.pool; Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?) }
    })
            }

            fn put_library<'a>(&'a self, l: &'a LibraryRow) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
        { let pool = &self.pool; {
            sqlx::query(
                "INSERT INTO media_libraries (id, name, kind, paths, source, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (id) DO UPDATE SET name = $2, kind = $3, paths = $4, source = $5",
            )
            .bind(&l.id)
            .bind(&l.name)
            .bind(&l.kind)
            .bind(&l.paths)
            .bind(&l.source)
            .bind(l.created_at)
            .execute(pool)
            .await?;
            Ok(())
        } }
    })
            }

            fn delete_library<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
        { let pool = &self.pool; {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM media_files WHERE library_id = $1").bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM media_items WHERE library_id = $1").bind(id).execute(&mut *tx).await?;
            let r = sqlx::query("DELETE FROM media_libraries WHERE id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(r.rows_affected() > 0)
        } }
    })
            }

            fn items<'a>(&'a self) -> BoxFuture<'a, Result<Vec<ItemRow>>> {
                Box::pin(async move {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM media_items");
        { let pool = &self.pool; Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?) }
    })
            }

            fn files<'a>(&'a self) -> BoxFuture<'a, Result<Vec<FileRow>>> {
                Box::pin(async move {
        let sql = format!("SELECT {FILE_COLUMNS} FROM media_files");
        { let pool = &self.pool; Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?) }
    })
            }

            fn apply<'a>(&'a self, c: &'a ScanChanges, events: &'a [Event]) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
        if c.is_empty() && events.is_empty() {
            return Ok(());
        }
        { let pool = &self.pool; {
            let mut tx = pool.begin().await?;
            for event in events {
                tx.write_event(event).await?;
            }
            for id in &c.delete_files {
                sqlx::query("DELETE FROM media_files WHERE id = $1").bind(id).execute(&mut *tx).await?;
            }
            for id in &c.delete_items {
                sqlx::query("DELETE FROM media_items WHERE id = $1").bind(id).execute(&mut *tx).await?;
            }
            for i in &c.upsert_items {
                sqlx::query(
                    "INSERT INTO media_items (id, library_id, parent_id, kind, name, sort_name, path, year, index_number, \
                     parent_index_number, index_number_end, series_id, series_name, season_id, album_artist, image_path, \
                     created_at, tmdb_id, tvdb_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                     $15, $16, $17, $18, $19) \
                     ON CONFLICT (id) DO UPDATE SET library_id = $2, parent_id = $3, kind = $4, name = $5, \
                     sort_name = $6, path = $7, year = $8, index_number = $9, parent_index_number = $10, \
                     index_number_end = $11, series_id = $12, series_name = $13, season_id = $14, \
                     album_artist = $15, image_path = $16, tmdb_id = $18, tvdb_id = $19",
                )
                .bind(&i.id)
                .bind(&i.library_id)
                .bind(&i.parent_id)
                .bind(&i.kind)
                .bind(&i.name)
                .bind(&i.sort_name)
                .bind(&i.path)
                .bind(i.year)
                .bind(i.index_number)
                .bind(i.parent_index_number)
                .bind(i.index_number_end)
                .bind(&i.series_id)
                .bind(&i.series_name)
                .bind(&i.season_id)
                .bind(&i.album_artist)
                .bind(&i.image_path)
                .bind(i.created_at)
                .bind(i.tmdb_id)
                .bind(i.tvdb_id)
                .execute(&mut *tx)
                .await?;
            }
            for f in &c.upsert_files {
                sqlx::query(
                    "INSERT INTO media_files (id, item_id, library_id, path, size, mtime, container, version, \
                     runtime_ticks, streams, probed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (id) DO UPDATE SET item_id = $2, library_id = $3, path = $4, size = $5, mtime = $6, \
                     container = $7, version = $8, runtime_ticks = $9, streams = $10, probed = $11",
                )
                .bind(&f.id)
                .bind(&f.item_id)
                .bind(&f.library_id)
                .bind(&f.path)
                .bind(f.size)
                .bind(f.mtime)
                .bind(&f.container)
                .bind(&f.version)
                .bind(f.runtime_ticks)
                .bind(&f.streams)
                .bind(f.probed)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        } }
    })
            }

            fn user_data<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<Vec<UserDataRow>>> {
                Box::pin(async move {
        let sql = format!("SELECT {USER_DATA_COLUMNS} FROM media_user_data WHERE user_id = $1");
        { let pool = &self.pool; Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_all(pool).await?) }
    })
            }

            fn user_items_data<'a>(&'a self, user_id: &'a str, item_ids: &'a [String]) -> BoxFuture<'a, Result<Vec<UserDataRow>>> {
                Box::pin(async move {
                    let mut rows = Vec::new();
                    // A page at a time; bounded so that no statement exceeds a dialect's limit
                    // on bound parameters.
                    for chunk in item_ids.chunks(500) {
                        let marks: Vec<String> = (2..chunk.len() + 2).map(|n| format!("${n}")).collect();
                        let sql = format!(
                            "SELECT {USER_DATA_COLUMNS} FROM media_user_data WHERE user_id = $1 AND item_id IN ({})",
                            marks.join(", ")
                        );
                        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id);
                        for id in chunk {
                            query = query.bind(id);
                        }
                        rows.extend(query.fetch_all(&self.pool).await?);
                    }
                    Ok(rows)
                })
            }

            fn user_item_data<'a>(&'a self, user_id: &'a str, item_id: &'a str) -> BoxFuture<'a, Result<Option<UserDataRow>>> {
                Box::pin(async move {
        let sql = format!("SELECT {USER_DATA_COLUMNS} FROM media_user_data WHERE user_id = $1 AND item_id = $2");
        { let pool = &self.pool; Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(item_id)
            .fetch_optional(pool)
            .await?) }
    })
            }

            fn put_user_data<'a>(&'a self, d: &'a UserDataRow) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
        { let pool = &self.pool; {
            sqlx::query(
                "INSERT INTO media_user_data (user_id, item_id, played, play_count, position_ticks, favorite, \
                 last_played_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, item_id) DO UPDATE SET \
                 played = $3, play_count = $4, position_ticks = $5, favorite = $6, last_played_at = $7",
            )
            .bind(&d.user_id)
            .bind(&d.item_id)
            .bind(d.played)
            .bind(d.play_count)
            .bind(d.position_ticks)
            .bind(d.favorite)
            .bind(d.last_played_at)
            .execute(pool)
            .await?;
            Ok(())
        } }
    })
            }

            fn put_playback<'a>(&'a self, p: &'a PlaybackRow) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
        { let pool = &self.pool; {
            sqlx::query(
                "INSERT INTO media_playback (id, user_id, item_id, session_id, client, device, started_at, stopped_at, \
                 position_ticks) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET \
                 stopped_at = $8, position_ticks = $9",
            )
            .bind(&p.id)
            .bind(&p.user_id)
            .bind(&p.item_id)
            .bind(&p.session_id)
            .bind(&p.client)
            .bind(&p.device)
            .bind(p.started_at)
            .bind(p.stopped_at)
            .bind(p.position_ticks)
            .execute(pool)
            .await?;
            Ok(())
        } }
    })
            }

            fn history<'a>(&'a self, user_id: Option<&'a str>, limit: i64) -> BoxFuture<'a, Result<Vec<PlaybackRow>>> {
                Box::pin(async move {
        let sql = format!(
            "SELECT {PLAYBACK_COLUMNS} FROM media_playback WHERE (CAST($1 AS TEXT) IS NULL OR user_id = $1) \
             ORDER BY started_at DESC LIMIT $2"
        );
        { let pool = &self.pool; Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(limit)
            .fetch_all(pool)
            .await?) }
    })
            }

            fn insert_request<'a>(&'a self, r: &'a RequestRow, announce: Announce<'a>) -> BoxFuture<'a, Result<i64>> {
                Box::pin(async move {
                    let mut attempts = 0;
                    loop {
                        let result: Result<i64> = async {
                            let mut tx = self.pool.begin().await?;
                            let id: i64 = sqlx::query_scalar(
                                "INSERT INTO media_requests (id, media_type, tmdb_id, tvdb_id, is4k, seasons, status, \
                                 requested_by, modified_by, created_at, updated_at, title, year) \
                                 SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
                                 FROM media_requests RETURNING id",
                            )
                            .bind(&r.media_type)
                            .bind(r.tmdb_id)
                            .bind(r.tvdb_id)
                            .bind(r.is4k)
                            .bind(&r.seasons)
                            .bind(r.status)
                            .bind(&r.requested_by)
                            .bind(&r.modified_by)
                            .bind(r.created_at)
                            .bind(r.updated_at)
                            .bind(&r.title)
                            .bind(r.year)
                            .fetch_one(&mut *tx)
                            .await?;
                            tx.write_event(&announce(id)).await?;
                            tx.commit().await?;
                            Ok(id)
                        }
                        .await;
                        match result {
                            // Two requests took the same next id at once: take the one after.
                            Err(e) if e.is_unique_violation() && attempts < 5 => attempts += 1,
                            other => return other,
                        }
                    }
                })
            }

            fn request<'a>(&'a self, id: i64) -> BoxFuture<'a, Result<Option<RequestRow>>> {
                Box::pin(async move {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM media_requests WHERE id = $1");
        { let pool = &self.pool; Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?) }
    })
            }

            fn requests<'a>(&'a self, user: Option<&'a str>) -> BoxFuture<'a, Result<Vec<RequestRow>>> {
                Box::pin(async move {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM media_requests WHERE (CAST($1 AS TEXT) IS NULL OR requested_by = $1) \
             ORDER BY id DESC"
        );
        { let pool = &self.pool; Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user).fetch_all(pool).await?) }
    })
            }

            fn requests_for<'a>(&'a self, media_type: &'a str, tmdb_id: i64, is4k: i64) -> BoxFuture<'a, Result<Vec<RequestRow>>> {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {REQUEST_COLUMNS} FROM media_requests WHERE media_type = $1 AND tmdb_id = $2 AND is4k = $3"
                    );
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(media_type).bind(tmdb_id).bind(is4k).fetch_all(&self.pool).await?)
                })
            }

            fn set_request_status<'a>(
                &'a self,
                id: i64,
                status: i64,
                by: &'a str,
                now: i64,
                event: Option<&'a Event>,
            ) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let r = sqlx::query(
                        "UPDATE media_requests SET status = $2, modified_by = $3, updated_at = $4 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(status)
                    .bind(by)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let found = r.rows_affected() > 0;
                    if let (true, Some(event)) = (found, event) {
                        tx.write_event(event).await?;
                    }
                    tx.commit().await?;
                    Ok(found)
                })
            }

            fn complete_request<'a>(&'a self, id: i64, now: i64, event: &'a Event) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let r = sqlx::query(
                        "UPDATE media_requests SET status = $2, updated_at = $3 WHERE id = $1 AND status IN ($4, $5)",
                    )
                    .bind(id)
                    .bind(crate::requests::COMPLETED)
                    .bind(now)
                    .bind(crate::requests::APPROVED)
                    .bind(crate::requests::FAILED)
                    .execute(&mut *tx)
                    .await?;
                    let done = r.rows_affected() > 0;
                    if done {
                        tx.write_event(event).await?;
                    }
                    tx.commit().await?;
                    Ok(done)
                })
            }

            fn delete_request<'a>(&'a self, id: i64) -> BoxFuture<'a, Result<bool>> {
                Box::pin(async move {
        { let pool = &self.pool; {
            let r = sqlx::query("DELETE FROM media_requests WHERE id = $1").bind(id).execute(pool).await?;
            Ok(r.rows_affected() > 0)
        } }
    })
            }
        }
    };
}

dialect_impl!(SqliteStore);
dialect_impl!(PostgresStore);
