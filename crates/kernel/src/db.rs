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
    /// From a read on a [`SqliteReaders`] connection.
    #[error("database error: {0}")]
    Read(#[from] rusqlite::Error),
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
                // Each connection's own page cache (SQLite is built without the shared one, see
                // .cargo/config.toml): 8 MiB rather than 2, for the writer of a bulk insert.
                .pragma("cache_size", "-8192")
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

/// Connections for short reads on SQLite, run on the calling thread.
///
/// A read through sqlx goes to its connection's worker thread and back: two thread switches,
/// and on a busy two-core server the wake-ups and context switches around them cost more than
/// a read that takes tens of microseconds (measured on an indexed find: two thirds of its
/// time). These connections are plain SQLite handles that a task uses directly, each with its
/// own statement cache. A read runs inline while it is short: after [`INLINE_BUDGET`] of work
/// SQLite interrupts it, and it runs again from the start on a blocking thread, so that a long
/// count or group never holds up an async worker. WAL lets them read while the pool's
/// connections write; each statement sees what was committed before it began.
pub struct SqliteReaders {
    path: std::path::PathBuf,
    conns: Vec<std::sync::Mutex<Option<rusqlite::Connection>>>,
    next: std::sync::atomic::AtomicUsize,
    /// Statements (by a hash of their text) whose last run went past the budget: they start
    /// on a blocking thread, rather than spending the budget inline and starting over there
    /// (a 4 ms count took 5.5). One that then finishes within the budget runs inline again.
    slow: [std::sync::atomic::AtomicU64; SLOW_SLOTS],
}

/// How long a read may run on an async worker before it moves to a blocking thread.
const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// Statements remembered as slow, direct-mapped by hash (a collision only forgets one).
const SLOW_SLOTS: usize = 64;

/// What a read on the task's own thread came to.
enum Inline {
    Done(Result<TextPair, StorageError>),
    /// Every reader was in use.
    NoReader,
    /// Interrupted at the budget.
    OverBudget,
}

/// A row of two text columns, either NULL.
pub type TextPair = (Option<String>, Option<String>);

/// A parameter of a read (`$n` binds the n-th, `?` the next).
#[derive(Debug, Clone)]
pub enum SqlParam {
    Text(String),
    Int(i64),
    Real(f64),
}

impl std::fmt::Debug for SqliteReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReaders").field("path", &self.path).field("conns", &self.conns.len()).finish()
    }
}

impl SqliteReaders {
    /// `n` readers on the database file of `pool`, opened at their first use.
    pub fn new(pool: &SqlitePool, n: usize) -> Self {
        Self {
            path: pool.connect_options().get_filename().to_path_buf(),
            conns: (0..n.max(1)).map(|_| std::sync::Mutex::new(None)).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            slow: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Whether `sql` is remembered as slow.
    fn is_slow(&self, sql: &str) -> bool {
        let (slot, key) = self.slow_slot(sql);
        slot.load(std::sync::atomic::Ordering::Relaxed) == key
    }

    /// Remembers `sql` as slow, or forgets it.
    fn set_slow(&self, sql: &str, slow: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let (slot, key) = self.slow_slot(sql);
        if slow {
            slot.store(key, Relaxed);
        } else {
            // Unless the slot now remembers another statement.
            let _ = slot.compare_exchange(key, 0, Relaxed, Relaxed);
        }
    }

    /// The slot that remembers `sql` as slow, and the (never zero) value it holds then.
    fn slow_slot(&self, sql: &str) -> (&std::sync::atomic::AtomicU64, u64) {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        let key = BuildHasherDefault::<DefaultHasher>::default().hash_one(sql) | 1;
        let [first, ..] = &self.slow;
        let slot = usize::try_from(key % SLOW_SLOTS as u64).ok().and_then(|i| self.slow.get(i)).unwrap_or(first);
        (slot, key)
    }

    /// The first row of `sql` (two text columns).
    pub async fn text_pair(
        self: &std::sync::Arc<Self>,
        sql: &str,
        params: &[SqlParam],
    ) -> Result<TextPair, StorageError> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        if !self.is_slow(sql) {
            match self.try_inline(start, sql, params) {
                Inline::Done(outcome) => return outcome,
                Inline::OverBudget => self.set_slow(sql, true),
                Inline::NoReader => {}
            }
        }
        let readers = self.clone();
        let (sql, params) = (sql.to_string(), params.to_vec());
        tokio::task::spawn_blocking(move || {
            let mut slot = readers
                .conns
                .get(start)
                .ok_or_else(|| StorageError::Unavailable(String::from("no SQLite reader is configured")))?
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let started = std::time::Instant::now();
            let outcome = readers.run(&mut slot, &sql, &params, None);
            if started.elapsed() < INLINE_BUDGET {
                readers.set_slow(&sql, false);
            }
            outcome
        })
        .await
        .map_err(|e| StorageError::Unavailable(format!("a database read failed: {e}")))?
    }

    /// The read on a free reader within [`INLINE_BUDGET`].
    fn try_inline(&self, start: usize, sql: &str, params: &[SqlParam]) -> Inline {
        let n = self.conns.len();
        let Some(mut slot) = self.conns.iter().cycle().skip(start).take(n).find_map(|c| c.try_lock().ok()) else {
            return Inline::NoReader;
        };
        let deadline = std::time::Instant::now() + INLINE_BUDGET;
        match self.run(&mut slot, sql, params, Some(deadline)) {
            Err(StorageError::Read(e)) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
                Inline::OverBudget
            }
            outcome => Inline::Done(outcome),
        }
    }

    /// Runs `sql` on the reader in `slot` (opening it when needed), interrupted at `deadline`.
    /// A failure that is not about the statement closes the reader, to be reopened.
    fn run(
        &self,
        slot: &mut Option<rusqlite::Connection>,
        sql: &str,
        params: &[SqlParam],
        deadline: Option<std::time::Instant>,
    ) -> Result<TextPair, StorageError> {
        let conn = match slot {
            Some(conn) => conn,
            None => slot.insert(self.open()?),
        };
        conn.progress_handler(1000, deadline.map(|d| move || std::time::Instant::now() >= d))?;
        let outcome = Self::pair(conn, sql, params);
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &outcome
            && matches!(
                e.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::NotADatabase
                    | rusqlite::ErrorCode::SystemIoFailure
            )
        {
            *slot = None;
        }
        Ok(outcome?)
    }

    fn open(&self) -> Result<rusqlite::Connection, StorageError> {
        use rusqlite::OpenFlags;
        // Read-write (WAL's shared memory is written by readers too), but only ever reading.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(&self.path, flags)?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA temp_store = memory;")?;
        conn.busy_handler(Some(busy::wait))?;
        conn.set_prepared_statement_cache_capacity(256);
        Ok(conn)
    }

    fn pair(conn: &rusqlite::Connection, sql: &str, params: &[SqlParam]) -> rusqlite::Result<TextPair> {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut next = 0;
        for i in 1..=stmt.parameter_count() {
            // `$n` and `?n` name their argument; a bare `?` takes the next one.
            let n = match stmt.parameter_name(i).and_then(|name| name.get(1..)).and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => n,
                None => {
                    next += 1;
                    next
                }
            };
            let value = match params.get(n.saturating_sub(1)) {
                Some(SqlParam::Text(t)) => rusqlite::types::Value::Text(t.clone()),
                Some(SqlParam::Int(v)) => rusqlite::types::Value::Integer(*v),
                Some(SqlParam::Real(v)) => rusqlite::types::Value::Real(*v),
                None => rusqlite::types::Value::Null,
            };
            stmt.raw_bind_parameter(i, value)?;
        }
        let mut rows = stmt.raw_query();
        let text = |row: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<Option<String>> {
            use rusqlite::types::ValueRef;
            // The payloads are text; a number (none is expected) in Rust's notation.
            Ok(match row.get_ref(i)? {
                ValueRef::Null => None,
                ValueRef::Integer(v) => Some(v.to_string()),
                ValueRef::Real(v) => Some(v.to_string()),
                // `from_utf8` checks ASCII a word at a time; `from_utf8_lossy` went byte by byte
                // (7% of an indexed find's time, over its 6 kB of documents).
                ValueRef::Text(t) | ValueRef::Blob(t) => Some(match std::str::from_utf8(t) {
                    Ok(text) => text.to_owned(),
                    Err(_) => String::from_utf8_lossy(t).into_owned(),
                }),
            })
        };
        match rows.next()? {
            Some(row) => Ok((text(row, 0)?, text(row, 1)?)),
            None => Err(rusqlite::Error::QueryReturnedNoRows),
        }
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

    /// Sleeps before attempt `count + 1` and says whether to make it. SQLite calls this inside
    /// the step that met the lock: on a pool connection's own worker thread, where sleeping
    /// holds up no other task; a reader (`super::SqliteReaders`) in WAL mode meets a lock only
    /// while the WAL index is being rebuilt, which is rare and short.
    pub fn wait(count: i32) -> bool {
        match pause(u32::try_from(count).unwrap_or(u32::MAX)) {
            Some(d) => {
                std::thread::sleep(d);
                true
            }
            None => false,
        }
    }

    extern "C" fn handler(_: *mut c_void, count: c_int) -> c_int {
        c_int::from(wait(count))
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

/// Whether `url` names an SQLite database file that does not exist yet (opening it creates
/// an empty database); `false` for PostgreSQL, an in-memory database or a URL that does not
/// parse.
pub fn sqlite_file_missing(url: &str) -> bool {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return false;
    }
    SqliteConnectOptions::from_str(url).is_ok_and(|o| !o.get_filename().exists())
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

#[cfg(test)]
mod reader_tests {
    use std::sync::Arc;

    use super::{Db, SqlParam, SqliteReaders};

    #[tokio::test]
    async fn a_database_is_new_until_its_sqlite_file_exists() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("sub").join("n.db").display());
        assert!(super::sqlite_file_missing(&url));
        let db = Db::connect(&url, Some(1)).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!super::sqlite_file_missing(&url));
        db.close().await;
        assert!(!super::sqlite_file_missing("sqlite::memory:"));
        assert!(!super::sqlite_file_missing("postgres://localhost/test"));
    }

    async fn readers() -> (tempfile::TempDir, Db, Arc<SqliteReaders>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        let db = Db::connect(&url, Some(2)).await.unwrap_or_else(|e| panic!("connect: {e}"));
        let Db::Sqlite(pool) = &db else { panic!("not SQLite") };
        sqlx::query("CREATE TABLE t (k TEXT, v INTEGER)").execute(pool).await.unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("INSERT INTO t VALUES ('a', 1), ('b', 2)").execute(pool).await.unwrap_or_else(|e| panic!("{e}"));
        let readers = Arc::new(SqliteReaders::new(pool, 2));
        (dir, db, readers)
    }

    #[tokio::test]
    async fn numbered_parameters_bind_by_number_and_writes_show_in_the_next_read() {
        let (_dir, db, readers) = readers().await;
        let sql = "SELECT (SELECT k FROM t WHERE v = $2), (SELECT group_concat(k) FROM t WHERE k <> $1)";
        let params = [SqlParam::Text("a".into()), SqlParam::Int(2)];
        let got = readers.text_pair(sql, &params).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, (Some("b".into()), Some("b".into())));
        let Db::Sqlite(pool) = &db else { panic!("not SQLite") };
        sqlx::query("INSERT INTO t VALUES ('c', 3)").execute(pool).await.unwrap_or_else(|e| panic!("{e}"));
        let got = readers.text_pair(sql, &params).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, (Some("b".into()), Some("b,c".into())));
    }

    #[tokio::test]
    async fn a_read_longer_than_the_inline_budget_finishes_on_a_blocking_thread() {
        let (_dir, _db, readers) = readers().await;
        // Millions of steps: far past the budget on any machine.
        let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
                   SELECT count(*), (SELECT 'done') FROM n";
        let got = readers.text_pair(sql, &[SqlParam::Int(3_000_000)]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, (Some("3000000".into()), Some("done".into())));
        assert!(readers.is_slow(sql), "remembered as slow");
        // Again: straight to the blocking thread, same answer; quick this time, so forgotten.
        let got = readers.text_pair(sql, &[SqlParam::Int(3_000_000)]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.0.as_deref(), Some("3000000"));
        let got = readers.text_pair(sql, &[SqlParam::Int(1)]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.0.as_deref(), Some("1"));
        assert!(!readers.is_slow(sql), "a quick run forgets it");
    }

    #[tokio::test]
    async fn a_bad_statement_is_an_error_and_the_reader_stays_usable() {
        let (_dir, _db, readers) = readers().await;
        assert!(readers.text_pair("SELECT nope FROM t", &[]).await.is_err());
        let got = readers.text_pair("SELECT 'x', NULL", &[]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, (Some("x".into()), None));
    }
}
