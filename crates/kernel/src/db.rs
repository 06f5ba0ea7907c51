//! Storage: one connection pool per process, to embedded SQLite (WAL) or PostgreSQL.
//!
//! Each store is a trait with one implementation per SQL dialect (see `docs/events.md` and the
//! kernel's `audit`, `instance` and `outbox`): SQL both backends understand (`$1` placeholders,
//! `RETURNING`, `ON CONFLICT`) is written once and shared, what differs lives in its dialect's
//! implementation. An owner whose schema is portable
//! (TEXT, BIGINT, BOOLEAN) keeps one migration folder for both backends; one that needs
//! backend-specific types keeps one folder per backend.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::config::mask_url;

/// The database of this process.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which SQL engine backs a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// The migrations one owner (the kernel or a plugin) contributes, for each backend.
#[derive(Debug)]
pub struct MigrationSet {
    pub owner: &'static str,
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("{0}")]
    Unavailable(String),
    /// A credential could not be sealed for storing (see [`crate::seal`]).
    #[error(transparent)]
    Sealing(#[from] crate::seal::SealError),
}

impl StorageError {
    /// Whether this error is a unique-constraint violation (a duplicate).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StorageError::Query(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

impl Db {
    /// Opens the database at `url` (creating an SQLite file and its directory when missing).
    pub async fn connect(url: &str, max_connections: Option<u32>) -> Result<Self, StorageError> {
        let connect_err = |source| StorageError::Connect { url: mask_url(url), source };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // With WAL, NORMAL loses nothing a process crash (kill -9) could lose; only an
                // operating-system crash may drop the last transactions.
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .pragma("temp_store", "memory")
                // Checkpoints are the background checkpointer's job (see `checkpoint_in_background`);
                // this is only the backstop should it fall far behind.
                .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES);
            if let Some(dir) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
                create_private_dir(dir)?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.unwrap_or(8))
                .min_connections(1)
                // Each SQLite connection is a worker thread in this process: a ping on every
                // acquire is a thread round trip (two context switches) that can find nothing
                // wrong, since there is no socket to lose. sqlx still pings on release.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        let mut handle = conn.lock_handle().await?;
                        busy::install(&mut handle);
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            checkpoint_in_background(pool.clone());
            Ok(Db::Sqlite(pool))
        } else {
            let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.unwrap_or(16))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            Ok(Db::Postgres(pool))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies every pending migration of `sets`, in version order across all owners.
    /// Concurrent starts against one PostgreSQL are serialised by sqlx's advisory lock.
    pub async fn migrate(&self, sets: &[&MigrationSet]) -> Result<(), StorageError> {
        let pick = |set: &MigrationSet| -> Vec<Migration> {
            match self {
                Db::Sqlite(_) => set.sqlite.iter().cloned().collect(),
                Db::Postgres(_) => set.postgres.iter().cloned().collect(),
            }
        };
        let migrator = Migrator::with_migrations(sets.iter().flat_map(|s| pick(s)).collect());
        match self {
            Db::Sqlite(pool) => migrator.run(pool).await?,
            Db::Postgres(pool) => migrator.run(pool).await?,
        }
        Ok(())
    }

    /// A real round trip to the database, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, StorageError> {
        let started = std::time::Instant::now();
        let query = async {
            match self {
                Db::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
                Db::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(timeout, query).await {
            Ok(result) => result.map(|()| started.elapsed()).map_err(StorageError::from),
            Err(_) => Err(StorageError::Timeout(timeout)),
        }
    }

    /// Connections of the pool: (in use, idle, maximum).
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        let (size, idle, max) = match self {
            Db::Sqlite(pool) => (pool.size(), pool.num_idle(), pool.options().get_max_connections()),
            Db::Postgres(pool) => (pool.size(), pool.num_idle(), pool.options().get_max_connections()),
        };
        let idle = u32::try_from(idle).unwrap_or(size);
        (size.saturating_sub(idle), idle, max)
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Connections for short reads on SQLite, outside the pool.
///
/// sqlx's pool pings every connection it gets back (a round trip to the connection's worker
/// thread, and a task to run it) on top of the query's own round trip: for a read that takes
/// tens of microseconds, those thread switches cost more than the read. These connections are
/// held by a lock instead of a pool and are never pinged; each keeps its own statement cache.
/// WAL lets them read while the pool's connections write, and each statement sees what was
/// committed before it began.
#[derive(Debug)]
pub struct SqliteReaders {
    options: SqliteConnectOptions,
    conns: Vec<tokio::sync::Mutex<Option<sqlx::SqliteConnection>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl SqliteReaders {
    /// `n` readers on the database of `pool`, opened at their first use.
    pub fn new(pool: &SqlitePool, n: usize) -> Self {
        let options = (*pool.connect_options()).clone();
        Self {
            options,
            conns: (0..n.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A free reader (waiting for one when all are busy), opened if it is not yet.
    pub async fn get(&self) -> Result<Reader<'_>, StorageError> {
        use sqlx::Connection as _;
        let n = self.conns.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        let free = self.conns.iter().cycle().skip(start).take(n).find_map(|c| c.try_lock().ok());
        let mut slot = match (free, self.conns.get(start)) {
            (Some(slot), _) => slot,
            (None, Some(busy)) => busy.lock().await,
            (None, None) => return Err(StorageError::Unavailable(String::from("no SQLite reader is configured"))),
        };
        if slot.is_none() {
            let mut conn = sqlx::SqliteConnection::connect_with(&self.options).await?;
            let mut handle = conn.lock_handle().await?;
            busy::install(&mut handle);
            drop(handle);
            *slot = Some(conn);
        }
        Ok(Reader { slot })
    }
}

/// A reader of [`SqliteReaders`], held until dropped.
pub struct Reader<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<sqlx::SqliteConnection>>,
}

impl Reader<'_> {
    /// The connection (an executor for sqlx queries).
    pub fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        // `get` opened it; only `check` empties the slot, and it takes the reader.
        self.slot.get_or_insert_with(|| unreachable!("a reader is open while held"))
    }

    /// The outcome of a read on this reader: a failure that is not about the SQL (the
    /// connection's thread or file) closes it, to be reopened at its next use.
    pub fn check<T>(mut self, outcome: Result<T, sqlx::Error>) -> Result<T, StorageError> {
        if let Err(e) = &outcome
            && !matches!(e, sqlx::Error::Database(_) | sqlx::Error::RowNotFound | sqlx::Error::ColumnDecode { .. })
        {
            *self.slot = None;
        }
        Ok(outcome?)
    }
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// How a connection waits for SQLite's write lock that another one holds.
///
/// SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 then 100 ms between
/// attempts. Write transactions here last a few milliseconds, so a writer that lost the race
/// for the lock once sleeps far past its release, and while every waiter sleeps the lock sits
/// idle: under concurrent writers (documents, the outbox relay, webhooks, audit) the sleeps,
/// not the writes, set the pace. This handler retries after 50 µs at first, backing off to
/// 2 ms, and gives up after the same 10 s as the pool's busy timeout.
mod busy {
    use std::ffi::{c_int, c_void};
    use std::time::Duration;

    /// The pause before attempt `count + 1`, or `None` to give up (about 10 s in all).
    pub fn pause(count: u32) -> Option<Duration> {
        match count {
            0..20 => Some(Duration::from_micros(50)),
            20..200 => Some(Duration::from_micros(250)),
            200..5177 => Some(Duration::from_millis(2)),
            _ => None,
        }
    }

    extern "C" fn handler(_: *mut c_void, count: c_int) -> c_int {
        match pause(u32::try_from(count).unwrap_or(u32::MAX)) {
            Some(d) => {
                // SQLite calls this on the connection's own worker thread, inside the step
                // that met the lock: sleeping here holds up no other task.
                std::thread::sleep(d);
                1
            }
            None => 0,
        }
    }

    #[allow(unsafe_code)]
    pub fn install(conn: &mut sqlx::sqlite::LockedSqliteHandle<'_>) {
        let db = conn.as_raw_handle().as_ptr();
        // SAFETY: `db` is this connection's open handle, locked for us by sqlx while we
        // hold `conn`; the handler is a plain function that keeps no state.
        unsafe {
            libsqlite3_sys::sqlite3_busy_handler(db, Some(handler), std::ptr::null_mut());
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn waits_short_first_and_about_ten_seconds_in_all() {
            assert_eq!(super::pause(0), Some(std::time::Duration::from_micros(50)));
            let total: std::time::Duration = (0..).map_while(super::pause).sum();
            assert!(total.as_secs_f64() > 9.9 && total.as_secs_f64() < 10.1, "{total:?}");
        }
    }
}

/// WAL pages after which a committing connection checkpoints by itself (4 KiB pages: 40 MiB).
const WAL_BACKSTOP_PAGES: &str = "10000";
/// Pause between checkpoints while the WAL grows, and at most when it does not.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(10);
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

/// SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold (1,000
/// pages): that transaction, and every request waiting on it (an audited secret read waits
/// for its audit record), stalls while the WAL is copied into the database and both are
/// fsynced. Under a steady write load that is a stall of 5–50 ms several times a second.
///
/// Here another connection checkpoints passively (blocking neither writers nor readers) as
/// long as the WAL keeps growing. A passive checkpoint cannot restart the WAL while writes
/// continue, so the committing connection still checkpoints at the backstop; but by then
/// nearly every frame is copied and synced, and its stall is short. The loop backs off to
/// one check a second when nothing is written, and stops when the pool is closed or the
/// runtime ends.
fn checkpoint_in_background(pool: SqlitePool) {
    tokio::spawn(async move {
        let mut pause = CHECKPOINT_IDLE;
        let mut last_frames = 0;
        loop {
            tokio::time::sleep(pause).await;
            if pool.is_closed() {
                return;
            }
            // (busy, frames in the WAL, frames checkpointed)
            let result: Result<(i64, i64, i64), _> =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await;
            pause = match result {
                Ok((_, frames, _)) if frames != last_frames => {
                    last_frames = frames;
                    CHECKPOINT_BUSY
                }
                Ok(_) => (pause * 2).min(CHECKPOINT_IDLE),
                Err(e) => {
                    tracing::debug!(error = %e, "WAL checkpoint did not run");
                    CHECKPOINT_IDLE
                }
            };
        }
    });
}

/// Creates `dir` (and parents) readable only by this user, as it will hold keys and data.
pub fn create_private_dir(dir: &std::path::Path) -> Result<(), StorageError> {
    let err = |source| StorageError::DataDir { path: dir.display().to_string(), source };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(err)
}
