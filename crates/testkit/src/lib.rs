//! Real Nexus servers for integration tests: each on an ephemeral port with its own data
//! directory, on SQLite or — when `NEXUS_TEST_POSTGRES_URL` is set — on PostgreSQL in a schema
//! of its own. Tests talk HTTP to them like any client.

use std::sync::Arc;
use std::time::Duration;

use nexus::RunningServer;
use nexus_kernel::config::Config;
pub use nexus_web::plugin::Plugin;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

pub use reqwest;
pub use serde_json::json;

/// Server logs go to the test's captured output (shown when a test fails); `NEXUS_TEST_LOG`
/// sets the filter (default `warn`).
fn init_logging() {
    let filter = std::env::var("NEXUS_TEST_LOG").unwrap_or_else(|_| String::from("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Calls `probe` until it answers `Ok`, for at most 20 s: how a test waits for work the
/// server does in the background, instead of sleeping for a guessed time. At the deadline it
/// panics with the last `Err`.
pub async fn eventually<T, Fut>(mut probe: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(last) => assert!(tokio::time::Instant::now() < deadline, "never got there: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The password of the `admin` user every test server starts with.
pub const ADMIN_PASSWORD: &str = "admin-Pass1";

/// The storage engine a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backends available here: SQLite always, PostgreSQL when `NEXUS_TEST_POSTGRES_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    if postgres_url().is_some() {
        all.push(Backend::Postgres);
    }
    all
}

pub fn postgres_url() -> Option<String> {
    std::env::var("NEXUS_TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty())
}

pub fn redis_url() -> Option<String> {
    std::env::var("NEXUS_TEST_REDIS_URL").ok().filter(|s| !s.is_empty())
}

/// A PostgreSQL schema that exists for one test server and is dropped with it.
#[derive(Debug)]
struct PgSchema {
    admin_url: String,
    name: String,
}

impl PgSchema {
    async fn create(admin_url: &str) -> Self {
        let name = format!("nx_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect_pg(admin_url).await;
        // `name` is generated above from a UUID: no outside text reaches this statement.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test schema: {e}"));
        Self { admin_url: admin_url.to_string(), name }
    }

    fn database_url(&self) -> String {
        let sep = if self.admin_url.contains('?') { '&' } else { '?' };
        // Named after the schema, so that the clean-up can end this server's connections.
        format!("{}{sep}options=-c%20search_path%3D{}&application_name={}", self.admin_url, self.name, self.name)
    }
}

async fn connect_pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread of its own
        // with a small runtime does the clean-up.
        let handle = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                        // The test's runtime is blocked here, so a transaction its server had in
                        // flight (the outbox relay's, say) would hold its locks, and the drop
                        // would wait for them forever: end that server's connections first.
                        let _ = sqlx::query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE application_name = $1 AND pid <> pg_backend_pid()",
                        )
                        .bind(&name)
                        .execute(&mut conn)
                        .await;
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                    }
                });
            }
        });
        let _ = handle.join();
    }
}

/// A migrated database of its own, with no server on it: for the contract tests of stores.
#[derive(Debug)]
pub struct TestDb {
    pub db: nexus_kernel::db::Db,
    _dir: TempDir,
    _schema: Option<PgSchema>,
}

impl TestDb {
    /// A fresh database on `backend` with `migrations` applied.
    pub async fn open(backend: Backend, migrations: &[&nexus_kernel::db::MigrationSet]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let (url, schema) = match backend {
            Backend::Sqlite => (format!("sqlite://{}/test.db", dir.path().display()), None),
            Backend::Postgres => {
                let admin = postgres_url().unwrap_or_else(|| panic!("NEXUS_TEST_POSTGRES_URL is not set"));
                let schema = PgSchema::create(&admin).await;
                (schema.database_url(), Some(schema))
            }
        };
        let db = nexus_kernel::db::Db::connect(&url, Some(4)).await.unwrap_or_else(|e| panic!("{e}"));
        db.migrate(migrations).await.unwrap_or_else(|e| panic!("migrations failed: {e}"));
        Self { db, _dir: dir, _schema: schema }
    }
}

/// A running server and a client for it.
#[derive(Debug)]
pub struct TestServer {
    server: Option<RunningServer>,
    pub config: Config,
    pub client: reqwest::Client,
    pub backend: Backend,
    base: String,
    /// The plugins it runs (and runs again on restart).
    plugins: Vec<Arc<dyn Plugin>>,
    _data_dir: TempDir,
    _schema: Option<PgSchema>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestServer {
    /// A server on SQLite with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(Backend::Sqlite, |_| {}).await
    }

    /// A server on `backend`; panics if PostgreSQL is asked for but not configured.
    pub async fn start_on(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// A server on `backend` after `configure` has adjusted its configuration.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_plugins(backend, configure, nexus::plugins::builtin()).await
    }

    /// A server on `backend` running `plugins` instead of the built-in ones.
    pub async fn start_with_plugins(
        backend: Backend,
        configure: impl FnOnce(&mut Config),
        plugins: Vec<Arc<dyn Plugin>>,
    ) -> Self {
        init_logging();
        let data_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let mut config = Config { data_dir: data_dir.path().to_path_buf(), ..Config::default() };
        config.server.port = 0;
        config.log.level = String::from("warn");
        config.auth.admin_password = Some(String::from(ADMIN_PASSWORD));
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let url = postgres_url().unwrap_or_else(|| panic!("NEXUS_TEST_POSTGRES_URL is not set"));
                let schema = PgSchema::create(&url).await;
                config.database.url = Some(schema.database_url());
                config.database.max_connections = Some(5);
                Some(schema)
            }
        };
        configure(&mut config);
        let server = nexus::start_with(config.clone(), plugins.clone())
            .await
            .unwrap_or_else(|e| panic!("server did not start: {e}"));
        // The port picked by the OS is kept, so that a restart comes back on the same address.
        config.server.port = server.addr.port();
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("cannot build HTTP client: {e}"));
        Self { server: Some(server), config, client, backend, base, plugins, _data_dir: data_dir, _schema: schema }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn kernel(&self) -> &std::sync::Arc<nexus_kernel::Kernel> {
        match &self.server {
            Some(s) => &s.kernel,
            None => panic!("server is stopped"),
        }
    }

    /// Stops the server gracefully and starts it again on the same data and port.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let server = nexus::start_with(self.config.clone(), self.plugins.clone())
            .await
            .unwrap_or_else(|e| panic!("server did not restart: {e}"));
        self.server = Some(server);
    }

    /// Sends `method path` with an optional JSON body and extra headers.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
        read(resp).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// Sends `method path` with a bearer token (or an API key) and an optional JSON body.
    pub async fn call_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {token}");
        self.call(method, path, body, &[("Authorization", auth.as_str())]).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        self.call_as(token, Method::GET, path, None).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> Reply {
        self.call_as(token, Method::POST, path, Some(body)).await
    }

    /// Logs in through the framework surface; panics unless it succeeds.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self.post("/api/auth/login", serde_json::json!({ "username": username, "password": password })).await;
        assert_eq!(r.status, 200, "login of {username} failed: {}", r.text);
        r.json.get("access_token").and_then(|t| t.as_str()).unwrap_or_default().to_string()
    }

    /// A fresh access token of `admin`.
    pub async fn admin_token(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a user with `roles` (as admin) and returns a token of theirs.
    pub async fn user_token(&self, username: &str, roles: &[&str]) -> String {
        let admin = self.admin_token().await;
        let password = "user-Pass1";
        let body = serde_json::json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": password,
            "roles": roles,
        });
        let r = self.post_as(&admin, "/api/users", body).await;
        assert_eq!(r.status, 201, "creating {username} failed: {}", r.text);
        self.login(username, password).await
    }
}

/// Reads a response whole; a body that is not JSON leaves `json` as `Null`.
pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, text, json }
}
