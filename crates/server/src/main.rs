//! `nexus`: serve (the default), migrate, config, version.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nexus_kernel::config::{Config, LogFormat, Overrides};

#[global_allocator]
static ALLOCATOR: nexus::alloc::MiMalloc = nexus::alloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "nexus", version, about = "The Nexus server")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "NEXUS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [env: NEXUS_HOST]
    #[arg(long, global = true)]
    host: Option<String>,
    /// Port to listen on [env: NEXUS_PORT]
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Directory for the embedded database and keys [env: NEXUS_DATA_DIR]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… [env: NEXUS_DATABASE_URL]
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// redis://…, to share state between instances [env: NEXUS_REDIS_URL]
    #[arg(long, global = true)]
    redis_url: Option<String>,
    /// Log level or filter [env: NEXUS_LOG_LEVEL]
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// `pretty` or `json` [env: NEXUS_LOG_FORMAT]
    #[arg(long, global = true, value_parser = parse_format)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration, credentials masked.
    Config,
    /// Print the version.
    Version,
    /// Administer users.
    #[command(subcommand)]
    User(nexus::user_cmd::UserCommand),
    /// Import or export analytics events.
    #[command(subcommand)]
    Analytics(nexus::analytics_cmd::AnalyticsCommand),
    /// WebAssembly plugins: scaffold, build, sign, make keys.
    #[command(subcommand)]
    Plugin(nexus::plugin_cmd::PluginCommand),
    /// Create, list, verify and restore backups.
    #[command(subcommand)]
    Backup(nexus::backup_cmd::BackupCommand),
    /// Secrets manager maintenance.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Re-wrap every data key under a new master key (resumable if interrupted). With a key
    /// file, the new key replaces `<data_dir>/master.key`; with NEXUS_MASTER_KEY, the new key
    /// is read from NEXUS_NEW_MASTER_KEY. Best run with the server stopped.
    RotateMasterKey,
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is not `pretty` or `json`")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Version)) {
        println!("nexus {}", nexus_kernel::VERSION);
        return ExitCode::SUCCESS;
    }
    // Works on files only: no configuration, no database.
    if let Some(Command::Plugin(command)) = cli.command {
        return match nexus::plugin_cmd::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e, 1),
        };
    }
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        host: cli.host.clone(),
        port: cli.port,
        database_url: cli.database_url.clone(),
        redis_url: cli.redis_url.clone(),
        log_level: cli.log_level.clone(),
        log_format: cli.log_format,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string(), 2),
    };
    if matches!(cli.command, Some(Command::Config)) {
        print!("{}", with_stored_changes(config).to_masked_toml());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = nexus::telemetry::init(&config.log) {
        return fail(&e, 2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), 1),
    };
    runtime.block_on(async move {
        match cli.command {
            Some(Command::Migrate) => migrate(config).await,
            Some(Command::Secrets { command: SecretsCommand::RotateMasterKey }) => rotate_master_key(config).await,
            Some(Command::Analytics(command)) => match nexus::analytics_cmd::run(config, command).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, 1),
            },
            Some(Command::Backup(command)) => match nexus::backup_cmd::run(config, command).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, 1),
            },
            Some(Command::User(command)) => match nexus::user_cmd::run(config, command).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, 1),
            },
            _ => serve(config).await,
        }
    })
}

async fn serve(config: Config) -> ExitCode {
    let start_up = nexus::memory::start_up();
    let signals = match nexus::ShutdownSignals::register() {
        Ok(signals) => signals,
        Err(e) => return fail(&format!("cannot listen for shutdown signals: {e}"), 1),
    };
    // Every client connection is a descriptor: the connection cap, not a low default soft
    // limit, should decide how many are served.
    let files = nexus::raise_open_file_limit();
    tracing::debug!(?files, "open-file limit");
    match nexus::start(config).await {
        Ok(server) => {
            start_up.done();
            server.run_until_signal(signals).await;
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string(), 1),
    }
}

async fn migrate(config: Config) -> ExitCode {
    let url = config.database_url();
    let result = async {
        nexus_kernel::db::create_private_dir(&config.data_dir)?;
        let db = nexus_kernel::db::Db::connect(&url, Some(1)).await?;
        db.migrate(&nexus::migrations()).await?;
        db.close().await;
        Ok::<_, nexus_kernel::db::StorageError>(db.backend())
    }
    .await;
    match result {
        Ok(backend) => {
            println!("database is up to date ({}, {})", backend.name(), nexus_kernel::config::mask_url(&url));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string(), 1),
    }
}

async fn rotate_master_key(config: Config) -> ExitCode {
    let url = config.database_url();
    let db = async {
        nexus_kernel::db::create_private_dir(&config.data_dir)?;
        let db = nexus_kernel::db::Db::connect(&url, Some(2)).await?;
        db.migrate(&nexus::migrations()).await?;
        Ok::<_, nexus_kernel::db::StorageError>(db)
    }
    .await;
    let db = match db {
        Ok(db) => db,
        Err(e) => return fail(&e.to_string(), 1),
    };
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} data keys re-wrapped ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let result = nexus_secrets::rotate_master_key(&config, &db, &mut progress).await;
    db.close().await;
    match result {
        Ok(r) => {
            bar.finish();
            println!("master key rotated: {} data keys re-wrapped under key {}", r.rewrapped, r.new_key_id);
            println!("new master key: {}", r.key_location);
            ExitCode::SUCCESS
        }
        Err(e) => {
            bar.abandon();
            fail(&format!("{e}; nothing is lost: run the command again to resume"), 1)
        }
    }
}

/// `config` with the changes stored through the API (`PUT /api/v1/config`,
/// `PUT /api/plugins/{id}/config`), when its database exists and answers within a few
/// seconds; otherwise `config` as it is, with a note on stderr.
fn with_stored_changes(config: Config) -> Config {
    let url = config.database_url();
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
        && !std::path::Path::new(path.split('?').next().unwrap_or(path)).is_file()
    {
        return config;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return config };
    let sealer = nexus_secrets::keyring::config_sealer(&config);
    let stored = runtime.block_on(async {
        let read = async {
            let db = nexus_kernel::db::Db::connect(&url, Some(1)).await?;
            let stored = nexus_kernel::plugin::store::load(&db, &sealer).await;
            db.close().await;
            stored
        };
        tokio::time::timeout(std::time::Duration::from_secs(3), read).await
    });
    match stored {
        Ok(Ok(stored)) => {
            let manifests: Vec<_> = nexus::plugins::builtin().iter().map(|p| p.manifest()).collect();
            nexus_kernel::kernel::with_stored_changes(config, &stored, &manifests)
        }
        _ => {
            eprintln!("nexus: changes stored in the database are not shown (it could not be read)");
            config
        }
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("nexus: {message}");
    ExitCode::from(code)
}
