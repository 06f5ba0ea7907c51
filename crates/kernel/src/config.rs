//! Configuration, layered: built-in defaults < TOML file < `NEXUS_*` environment < command-line
//! flags. A bad value stops start-up with one line that names the key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Unknown top-level keys are not refused here: they are the sections of plugins without a
/// typed section of their own (`[documents]`), and the server refuses those that name no
/// plugin once it knows its plugins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the embedded database, key files and other local state live.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub secrets: SecretsConfig,
    pub webhooks: WebhooksConfig,
    pub realtime: RealtimeConfig,
    pub rate_limits: RateLimitsConfig,
    pub api: ApiConfig,
    /// Every other section, by plugin id.
    #[serde(flatten)]
    pub plugins: std::collections::BTreeMap<String, serde_json::Value>,
    pub analytics: AnalyticsConfig,
    pub media: MediaConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// A request that has not produced its response by then gets 408.
    pub request_timeout_secs: u64,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace_secs: u64,
    /// Origins allowed by CORS; `["*"]` allows any, empty allows none.
    pub cors_origins: Vec<String>,
    /// A connection whose request head (request line and headers) has not fully arrived this
    /// long after its first byte is closed; so is a new connection that sends nothing for this
    /// long. 0: no limit.
    pub header_read_timeout_secs: u64,
    /// An idle keep-alive connection (no request in progress, none arriving) is closed after
    /// this long. 0: no limit.
    pub keep_alive_timeout_secs: u64,
    /// Connections served at once; past it, new connections wait in the listen backlog until
    /// one closes. Lowered at start to what the open-file limit leaves room for. 0: no cap but
    /// the open-file limit.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; unset means SQLite in the data directory.
    pub url: Option<String>,
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://…`; when set, instances share cache, rate limits and events through it.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`info`) or a tracing filter (`info,sqlx=warn`).
    pub level: String,
    pub format: LogFormat,
}

/// Identity and access settings.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC-SHA256 key for access tokens (`NEXUS_JWT_SECRET`). Unset: a key generated at first
    /// start in `<data_dir>/jwt.key`. Instances sharing a database must share this key.
    pub jwt_secret: Option<String>,
    /// Password of the `admin` user created at first start (`NEXUS_ADMIN_PASSWORD`). Unset: a
    /// random one, printed once and written to `<data_dir>/admin-password`.
    pub admin_password: Option<String>,
    /// Lifetime of access tokens issued by the framework, core v2 and media logins.
    pub access_token_ttl_secs: u64,
    /// Lifetime of the secrets manager's session tokens (24 h by its spec).
    pub session_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Login attempts allowed per client and minute.
    pub login_attempts_per_minute: u32,
    /// Consecutive failed logins that lock an account…
    pub lockout_threshold: u32,
    /// …for this long.
    pub lockout_secs: u64,
    /// Permissions per role, replacing or adding to the built-in roles.
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            admin_password: None,
            access_token_ttl_secs: 3600,
            session_token_ttl_secs: 24 * 3600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            login_attempts_per_minute: 10,
            lockout_threshold: 5,
            lockout_secs: 900,
            roles: std::collections::BTreeMap::new(),
        }
    }
}

/// Secrets manager settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Base64 of the 32-byte master key (`NEXUS_MASTER_KEY`). Unset: a key generated at first
    /// start in `<data_dir>/master.key` (0600).
    pub master_key: Option<String>,
    /// Path patterns per role (`dba = ["prod/database/*"]`): a role listed here grants its
    /// secret permissions only on matching paths; a role not listed, on no shared path (only
    /// its holders' own `users/{user_id}/`), unless it is an administrator role.
    pub policies: std::collections::BTreeMap<String, Vec<String>>,
}

/// Outgoing webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Allow targets on private, loopback, link-local and metadata addresses
    /// (`NEXUS_WEBHOOKS_ALLOW_PRIVATE`). Off by default: webhooks must not reach inside.
    pub allow_private: bool,
    /// How long one delivery attempt may take.
    pub timeout_secs: u64,
    /// Attempts per delivery before it is given up.
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry waits twice as long (at most 1 h).
    pub retry_base_ms: u64,
    /// Consecutive failed attempts after which a webhook is disabled.
    pub disable_after_failures: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout_secs: 10,
            max_attempts: 10,
            retry_base_ms: 2000,
            disable_after_failures: 15,
        }
    }
}

/// The WebSocket endpoint `/ws`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// A connection that has not authenticated by then is closed.
    pub auth_timeout_ms: u64,
    /// Largest message accepted from a client.
    pub max_message_bytes: usize,
    /// Messages queued for one connection before it counts as a slow consumer and is closed.
    pub send_buffer: usize,
    /// Interval of the server's pings; a connection silent for two intervals is closed.
    pub ping_interval_secs: u64,
    /// Threads of the runtime that WebSocket connections run on, apart from the HTTP one;
    /// 0 = half the cores, at least one.
    pub threads: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            auth_timeout_ms: 10_000,
            max_message_bytes: 64 * 1024,
            send_buffer: 256,
            ping_interval_secs: 30,
            threads: 0,
        }
    }
}

/// Request rate limits: a fixed window per identity (user or API key), else per client IP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// `NEXUS_RATE_LIMITS__ENABLED=false` switches every limit off (not login lock-out).
    pub enabled: bool,
    /// Requests per window on any route no class below claims.
    pub limit: u32,
    pub window_secs: u64,
    /// Premium API keys get this many times each limit.
    pub premium_multiplier: u32,
    /// Paths never limited (`/x/*` matches below `/x`, `/x*` any path starting so, else exact).
    pub exempt: Vec<String>,
    /// Routes with limits of their own; the first class whose paths match wins.
    pub classes: Vec<RateLimitClass>,
    /// Prefix of the Redis keys (when `redis.url` is set). Unset: `nexus:rl:<server id>:`, so
    /// instances of one installation share counts and other installations do not.
    pub redis_prefix: Option<String>,
}

/// A class of routes with its own limit (the media seed's per-service table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitClass {
    pub name: String,
    pub paths: Vec<String>,
    /// Unset: `auth.login_attempts_per_minute` for the `login` class, else `rate_limits.limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    pub window_secs: u64,
    /// Only callers without a valid credential are counted (per IP); authenticated callers of
    /// these routes are not limited. For surfaces whose seeds document no limit, where
    /// applications poll and export (secrets, operations).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous_only: bool,
}

impl RateLimitClass {
    fn new(name: &str, paths: &[&str], limit: Option<u32>, window_secs: u64) -> Self {
        Self {
            name: name.into(),
            paths: paths.iter().map(|p| (*p).to_string()).collect(),
            limit,
            window_secs,
            anonymous_only: false,
        }
    }

    fn anonymous_only(mut self) -> Self {
        self.anonymous_only = true;
        self
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        let login = ["/auth/login", "/api/auth/login", "/api/v2/auth/login", "/v2/auth/login", "/api/v1/auth/login"];
        Self {
            enabled: true,
            limit: 1000,
            window_secs: 3600,
            premium_multiplier: 10,
            exempt: ["/health", "/api/health", "/api/v1/health", "/metrics", "/docs*", "/redoc*", "/openapi.json"]
                .iter()
                .map(|p| (*p).to_string())
                .collect(),
            classes: vec![
                RateLimitClass::new("login", &login, None, 60),
                // The secrets manager and operations seeds document no limits: authenticated
                // clients are not limited there; anonymous ones are, per IP.
                RateLimitClass::new(
                    "secrets",
                    &["/api/v1/secrets*", "/api/v1/audit*", "/api/v1/apikeys*"],
                    Some(600),
                    60,
                )
                .anonymous_only(),
                RateLimitClass::new("operations", &["/api/v1/*", "/livez", "/readyz"], Some(600), 60).anonymous_only(),
                RateLimitClass::new("ai_process", &["/api/process*", "/api/ai/process*"], Some(100), 3600),
                RateLimitClass::new(
                    "recommendations",
                    &["/api/recommendations*", "/api/ai/recommendations*", "/recommendations*"],
                    Some(500),
                    3600,
                ),
                RateLimitClass::new("xr", &["/api/xr/*"], Some(200), 3600),
                RateLimitClass::new("web3", &["/api/web3/*"], Some(50), 3600),
                RateLimitClass::new("voice", &["/api/voice/process*"], Some(300), 3600),
            ],
            redis_prefix: None,
        }
    }
}

/// Conventions shared by every list and by batch requests.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The largest `limit` a list accepts; larger ones are capped.
    pub max_limit: u32,
    /// Sub-requests one `POST /api/batch` may carry.
    pub max_batch: usize,
    /// How long a pagination cursor stays valid.
    pub cursor_ttl_secs: u64,
    /// The framework API's versions, as `GET /api/versions` reports them.
    pub versions: ApiVersions,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { max_limit: 100, max_batch: 50, cursor_ttl_secs: 24 * 3600, versions: ApiVersions::default() }
    }
}

/// The analytics plugin: event ingestion limits, client metadata, retention, notifications.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Largest event, in bytes of its JSON.
    pub max_event_bytes: usize,
    /// Events one request may carry.
    pub max_batch_events: usize,
    /// Largest request body of `POST /v2/analytics/events`, in bytes.
    pub max_request_bytes: usize,
    /// Deepest nesting of objects and arrays inside `properties`.
    pub max_depth: usize,
    /// How far in the future an event's `timestamp` may be (clock skew of clients).
    pub future_tolerance_secs: u64,
    /// Record the request's IP address and user agent with each event.
    pub record_client: bool,
    /// Events older than this many days are deleted in the background; 0 keeps everything.
    pub retention_days: u64,
    /// Pause between retention passes.
    pub retention_interval_secs: u64,
    /// Send `analytics.event` to webhooks subscribed to it (off: it can be a firehose).
    pub webhook_events: bool,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: 32 * 1024,
            max_batch_events: 1000,
            max_request_bytes: 5 * 1024 * 1024,
            max_depth: 8,
            future_tolerance_secs: 300,
            record_client: true,
            retention_days: 0,
            retention_interval_secs: 3600,
            webhook_events: false,
        }
    }
}

/// Versions of the framework API. A version past its sunset date, or not listed, is refused.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ApiVersions {
    pub current: String,
    pub supported: Vec<String>,
    /// Still answered, with `Deprecation` (and `Sunset` when dated) headers.
    pub deprecated: Vec<String>,
    /// `YYYY-MM-DD` per version.
    pub sunset_dates: std::collections::BTreeMap<String, String>,
}

impl Default for ApiVersions {
    fn default() -> Self {
        Self {
            current: "2.0".into(),
            supported: vec!["1.0".into(), "1.1".into(), "2.0".into()],
            deprecated: vec!["0.9".into()],
            sunset_dates: [("1.0", "2024-12-31"), ("1.1", "2025-06-30")]
                .iter()
                .map(|(v, d)| ((*v).to_string(), (*d).to_string()))
                .collect(),
        }
    }
}

/// The media library (`nexus-media`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Libraries scanned at start; more can be added through `Library/VirtualFolders`.
    pub libraries: Vec<MediaLibraryConfig>,
    /// The `ffprobe` program that reads durations and streams; empty: do not probe.
    pub ffprobe: String,
    /// How often libraries are checked for added, changed and removed files; 0: never.
    pub watch_interval_ms: u64,
    /// The *arr servers `/api/arr/{name}/…` forwards to (`sonarr`, `radarr`, `prowlarr`).
    pub arr: std::collections::BTreeMap<String, ArrUpstream>,
    /// How long one forwarded *arr request may take.
    pub arr_timeout_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            libraries: Vec::new(),
            ffprobe: String::from("ffprobe"),
            watch_interval_ms: 10_000,
            arr: Default::default(),
            arr_timeout_secs: 30,
        }
    }
}

/// One *arr server: its base URL and API key (sent upstream as `X-Api-Key`, never shown).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ArrUpstream {
    pub url: String,
    pub api_key: Option<String>,
}

/// One configured library.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaLibraryConfig {
    pub name: String,
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// `movies`, `tvshows`, `music` or `photos`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./nexus-data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            secrets: SecretsConfig::default(),
            webhooks: WebhooksConfig::default(),
            realtime: RealtimeConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            api: ApiConfig::default(),
            plugins: std::collections::BTreeMap::new(),
            analytics: AnalyticsConfig::default(),
            media: MediaConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: String::from("127.0.0.1"),
            port: 8000,
            body_limit_bytes: 2 * 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 30,
            cors_origins: Vec::new(),
            header_read_timeout_secs: 10,
            keep_alive_timeout_secs: 75,
            max_connections: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: String::from("info"), format: LogFormat::Pretty }
    }
}

/// A configuration that cannot be used, described in one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("configuration key `{key}`: {reason}")]
    Key { key: String, reason: String },
}

/// Overrides given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// Environment variables with a short name of their own; every other key is reachable as
/// `NEXUS_SECTION__KEY` (for example `NEXUS_SERVER__BODY_LIMIT_BYTES`).
const ENV_ALIASES: &[(&str, &str)] = &[
    ("host", "server.host"),
    ("port", "server.port"),
    ("data_dir", "data_dir"),
    ("database_url", "database.url"),
    ("redis_url", "redis.url"),
    ("log_level", "log.level"),
    ("log_format", "log.format"),
    ("jwt_secret", "auth.jwt_secret"),
    ("rate_limits", "rate_limits.enabled"),
    ("admin_password", "auth.admin_password"),
    ("master_key", "secrets.master_key"),
    ("webhooks_allow_private", "webhooks.allow_private"),
];

impl Config {
    /// Loads the layers in order. `file` is the `--config`/`NEXUS_CONFIG` path, if any.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    reason: String::from("not found or not a file"),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("NEXUS_").filter_map(|key| {
            let key = key.as_str().to_ascii_lowercase();
            ENV_ALIASES
                .iter()
                .find(|(alias, _)| *alias == key)
                .map(|(_, target)| (*target).into())
                .or_else(|| key.contains("__").then(|| key.replace("__", ".").into()))
        }));
        figment = figment.merge(Serialized::defaults(overrides.as_nested()));
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key_err = |key: &str, reason: String| ConfigError::Key { key: key.into(), reason };
        self.bind_ip().map_err(|reason| key_err("server.host", reason))?;
        if self.server.body_limit_bytes == 0 {
            return Err(key_err("server.body_limit_bytes", "must be greater than 0".into()));
        }
        if self.server.request_timeout_secs == 0 {
            return Err(key_err("server.request_timeout_secs", "must be greater than 0".into()));
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(key_err("database.url", "must start with sqlite:, postgres:// or postgresql://".into()));
        }
        if self.database.max_connections == Some(0) {
            return Err(key_err("database.max_connections", "must be greater than 0".into()));
        }
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(key_err("redis.url", "must start with redis:// or rediss://".into()));
        }
        for origin in &self.server.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(key_err("server.cors_origins", format!("`{origin}` is neither `*` nor an http(s) origin")));
            }
        }
        if self.webhooks.timeout_secs == 0 {
            return Err(key_err("webhooks.timeout_secs", "must be greater than 0".into()));
        }
        if self.webhooks.max_attempts == 0 {
            return Err(key_err("webhooks.max_attempts", "must be greater than 0".into()));
        }
        if self.realtime.send_buffer == 0 {
            return Err(key_err("realtime.send_buffer", "must be greater than 0".into()));
        }
        if self.realtime.threads > 256 {
            return Err(key_err("realtime.threads", "must be at most 256 (0 = half the cores)".into()));
        }
        if self.realtime.max_message_bytes == 0 {
            return Err(key_err("realtime.max_message_bytes", "must be greater than 0".into()));
        }
        if self.rate_limits.window_secs == 0 || self.rate_limits.classes.iter().any(|c| c.window_secs == 0) {
            return Err(key_err("rate_limits.window_secs", "must be greater than 0".into()));
        }
        if self.rate_limits.premium_multiplier == 0 {
            return Err(key_err("rate_limits.premium_multiplier", "must be greater than 0".into()));
        }
        if self.api.max_limit == 0 {
            return Err(key_err("api.max_limit", "must be greater than 0".into()));
        }
        if self.api.max_batch == 0 {
            return Err(key_err("api.max_batch", "must be greater than 0".into()));
        }
        if self.analytics.max_event_bytes == 0 || self.analytics.max_batch_events == 0 {
            return Err(key_err("analytics.max_event_bytes", "limits must be greater than 0".into()));
        }
        if self.analytics.retention_interval_secs == 0 {
            return Err(key_err("analytics.retention_interval_secs", "must be greater than 0".into()));
        }
        if self.log.level.trim().is_empty() {
            return Err(key_err("log.level", "must not be empty".into()));
        }
        Ok(())
    }

    /// The address to bind; `localhost` is accepted as the loopback address.
    pub fn bind_ip(&self) -> Result<IpAddr, String> {
        let host = self.server.host.trim();
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(IpAddr::from([127, 0, 0, 1]));
        }
        host.parse().map_err(|_| format!("`{host}` is not an IP address"))
    }

    /// The database URL in effect: the configured one, else SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("nexus.db").display()),
        }
    }

    /// This configuration with every credential masked, for showing to people.
    pub fn masked(&self) -> Config {
        let mut shown = self.clone();
        shown.database.url = Some(mask_url(&self.database_url()));
        shown.redis.url = self.redis.url.as_deref().map(mask_url);
        let mask = |v: &Option<String>| v.as_ref().map(|_| String::from(MASK));
        shown.auth.jwt_secret = mask(&self.auth.jwt_secret);
        shown.auth.admin_password = mask(&self.auth.admin_password);
        shown.secrets.master_key = mask(&self.secrets.master_key);
        for upstream in shown.media.arr.values_mut() {
            upstream.api_key = mask(&upstream.api_key);
        }
        shown.plugins.values_mut().for_each(mask_credentials);
        shown
    }

    /// This configuration for operators allowed to read it unmasked: credentials that Nexus
    /// only ever sends elsewhere (the *arr API keys) stay masked, as they are write-only.
    pub fn unmasked(&self) -> Config {
        let mut shown = self.clone();
        for upstream in shown.media.arr.values_mut() {
            upstream.api_key = upstream.api_key.as_ref().map(|_| String::from(MASK));
        }
        shown
    }

    /// Section `key` as JSON (`null` when absent).
    pub fn section(&self, key: &str) -> serde_json::Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|mut v| v.get_mut(key).map(serde_json::Value::take))
            .unwrap_or_default()
    }

    /// This configuration with `patch` merged into section `key` (JSON merge patch: objects
    /// merge, `null` removes, anything else replaces). Fails, naming the key, when the result
    /// is not a valid configuration.
    pub fn patched(&self, key: &str, patch: &serde_json::Value) -> Result<Config, ConfigError> {
        let mut whole =
            serde_json::to_value(self).map_err(|e| ConfigError::Key { key: key.into(), reason: e.to_string() })?;
        if let Some(root) = whole.as_object_mut() {
            let section = root.entry(key.to_string()).or_insert(serde_json::Value::Null);
            merge_patch(section, patch);
        }
        let config: Config = serde_path_to_error::deserialize(whole)
            .map_err(|e| ConfigError::Key { key: e.path().to_string(), reason: e.inner().to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration as TOML with every credential masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(&self.masked()).unwrap_or_default()
    }

    /// This configuration as JSON with every credential masked.
    pub fn to_masked_json(&self) -> serde_json::Value {
        serde_json::to_value(self.masked()).unwrap_or_default()
    }
}

impl Overrides {
    fn as_nested(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        let mut server = serde_json::Map::new();
        let mut database = serde_json::Map::new();
        let mut redis = serde_json::Map::new();
        let mut log = serde_json::Map::new();
        if let Some(v) = &self.data_dir {
            root.insert("data_dir".into(), v.display().to_string().into());
        }
        if let Some(v) = &self.host {
            server.insert("host".into(), v.clone().into());
        }
        if let Some(v) = self.port {
            server.insert("port".into(), v.into());
        }
        if let Some(v) = &self.database_url {
            database.insert("url".into(), v.clone().into());
        }
        if let Some(v) = &self.redis_url {
            redis.insert("url".into(), v.clone().into());
        }
        if let Some(v) = &self.log_level {
            log.insert("level".into(), v.clone().into());
        }
        if let Some(v) = self.log_format {
            log.insert("format".into(), serde_json::to_value(v).unwrap_or_default());
        }
        for (name, section) in [("server", server), ("database", database), ("redis", redis), ("log", log)] {
            if !section.is_empty() {
                root.insert(name.into(), section.into());
            }
        }
        serde_json::Value::Object(root)
    }
}

fn describe_figment_error(err: figment::Error) -> ConfigError {
    let key = err.path.join(".");
    let source = err
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
            _ if m.name.contains("environment") => {
                let var = err.path.iter().map(|p| p.to_ascii_uppercase()).collect::<Vec<_>>().join("__");
                let alias = ENV_ALIASES.iter().find(|(_, target)| *target == err.path.join("."));
                match alias {
                    Some((short, _)) => format!(" (from NEXUS_{} or NEXUS_{var})", short.to_ascii_uppercase()),
                    None => format!(" (from NEXUS_{var})"),
                }
            }
            _ => String::new(),
        })
        .unwrap_or_default();
    let reason = format!("{}{source}", err.kind);
    if key.is_empty() {
        ConfigError::File { path: String::from("(configuration)"), reason }
    } else {
        ConfigError::Key { key, reason }
    }
}

/// Whether the values under `key` are credentials, wherever the key appears: masked when shown,
/// sealed when stored (see [`crate::seal`]).
pub fn is_credential_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "api_key", "apikey", "master_key", "private_key", "credential"]
        .iter()
        .any(|k| key.contains(k))
        && !key.ends_with("_ttl_secs")
}

/// What a masked credential shows.
pub const MASK: &str = "***masked***";

/// Masks every value under a credential key inside `value` (a plugin's own configuration
/// section, whose keys the kernel does not know), so that it can be shown.
pub fn mask_credentials(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_credential_key(key) && !v.is_null() && !v.is_object() {
                    *v = serde_json::Value::String(String::from(MASK));
                } else {
                    mask_credentials(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_credentials),
        _ => {}
    }
}

/// Replaces the password of a URL's user-info with `***`, leaving the rest readable.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// RFC 7396 JSON merge patch of `patch` into `target`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (None, Some(p)) => {
            let mut fresh = serde_json::Value::Object(serde_json::Map::new());
            merge_patch(&mut fresh, &serde_json::Value::Object(p.clone()));
            *target = fresh;
        }
        _ => *target = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(mask_url("postgres://u:pw@h:5432/db?x=1"), "postgres://u:***@h:5432/db?x=1");
        assert_eq!(mask_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(mask_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn flags_override_defaults() {
        let o = Overrides { port: Some(9001), host: Some("0.0.0.0".into()), ..Overrides::default() };
        let c = Config::load(None, &o).map_err(|e| e.to_string());
        assert_eq!(c.as_ref().map(|c| c.server.port), Ok(9001));
        assert_eq!(c.map(|c| c.server.host), Ok("0.0.0.0".into()));
    }
}
