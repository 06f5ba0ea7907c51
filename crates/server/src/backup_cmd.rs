//! `nexus backup create|list|verify|restore`: the operations API's backups from the shell,
//! against the configured data, with a progress bar while the task runs.

use std::time::Duration;

use clap::Subcommand;
use nexus_kernel::config::Config;
use nexus_kernel::principal::Principal;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write a backup into <data_dir>/backups.
    Create {
        /// `configuration`, `database` or `plugins`; repeat for several (default: all).
        #[arg(long = "include")]
        include: Vec<String>,
        /// Leave the archive uncompressed.
        #[arg(long)]
        no_compression: bool,
        /// Seal the archive with AES-256-GCM under a key derived from the master key.
        #[arg(long)]
        encrypt: bool,
    },
    /// List the backups, newest first.
    List,
    /// Check a backup's archive and every file in it, changing nothing.
    Verify { id: String },
    /// Restore a backup (every hash is checked first).
    Restore {
        id: String,
        /// `configuration` or `database`; repeat for several (default: what it includes).
        #[arg(long = "component")]
        components: Vec<String>,
        /// Confirms that the current data is replaced.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs `command`; the error is a message for the operator.
pub async fn run(config: Config, command: BackupCommand) -> Result<(), String> {
    let kernel = crate::plugins::open_kernel(config).await.map_err(|e| e.to_string())?;
    let ops = nexus_ops::offline(kernel.clone()).await?;
    let system = Principal::system();
    let describe = |e: nexus_ops::OpsError| {
        let f = nexus_kernel::error::Failure::from(e);
        let details: Vec<String> = f.details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect();
        if details.is_empty() { f.message } else { format!("{} ({})", f.message, details.join("; ")) }
    };
    match command {
        BackupCommand::Create { include, no_compression, encrypt } => {
            let include = (!include.is_empty()).then_some(include);
            let (id, task) = nexus_ops::backup::start_backup(&ops, &system, include, !no_compression, encrypt)
                .await
                .map_err(describe)?;
            let result = follow(&kernel, &task).await?;
            println!(
                "backup {id}: {} bytes, sha256 {}",
                at(&result, "size_bytes").as_u64().unwrap_or(0),
                at(&result, "sha256").as_str().unwrap_or("")
            );
            Ok(())
        }
        BackupCommand::List => {
            let list = nexus_ops::backup::list(&ops, &system).map_err(describe)?;
            for b in at(&list, "backups").as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{} bytes\t{}{}",
                    at(b, "id").as_str().unwrap_or(""),
                    at(b, "created_at").as_str().unwrap_or(""),
                    at(b, "size_bytes").as_u64().unwrap_or(0),
                    at(b, "includes")
                        .as_array()
                        .map(|i| i.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                    if at(b, "encryption") == true { "\tencrypted" } else { "" },
                );
            }
            Ok(())
        }
        BackupCommand::Verify { id } => {
            let v = nexus_ops::backup::verify(&ops, &system, &id).await.map_err(describe)?;
            println!(
                "backup {id} is intact: {} files match the manifest",
                at(&v, "files").as_array().map_or(0, Vec::len)
            );
            Ok(())
        }
        BackupCommand::Restore { id, components, yes } => {
            let components = (!components.is_empty()).then_some(components);
            let started =
                nexus_ops::backup::start_restore(&ops, &system, &id, components, yes).await.map_err(describe)?;
            let task = at(&started, "task_id").as_str().unwrap_or_default().to_string();
            let result = follow(&kernel, &task).await?;
            println!("restored {id}: {} rows", at(&result, "rows_restored").as_u64().unwrap_or(0));
            Ok(())
        }
    }
}

/// `v.key`, `null` when absent.
fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// Shows task `id`'s progress until it ends; its result, or its error.
async fn follow(kernel: &nexus_kernel::Kernel, id: &str) -> Result<Value, String> {
    let bar = indicatif::ProgressBar::new(100);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}% {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    loop {
        let task = kernel.tasks.get(id).await.map_err(|e| e.to_string())?.ok_or("the task disappeared")?;
        bar.set_position((task.progress * 100.0).round() as u64);
        if let Some(step) = task.steps.iter().find(|s| s.status == nexus_kernel::tasks::TaskStatus::Running) {
            bar.set_message(step.name.clone());
        }
        if task.status.is_finished() {
            return match task.status {
                nexus_kernel::tasks::TaskStatus::Completed => {
                    bar.finish_with_message("done");
                    Ok(task.result.unwrap_or(Value::Null))
                }
                status => {
                    bar.abandon();
                    Err(task.error.unwrap_or_else(|| format!("the task ended {}", status.as_str())))
                }
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
