//! Backups and restores, each a task. A backup is one archive in `<data_dir>/backups/`: a tar
//! of the database snapshot ([`crate::dump`]), the configuration and the plugin list, with a
//! `manifest.json` holding every file's SHA-256; zstd-compressed when asked, sealed with
//! AES-256-GCM under a key derived from the master key when asked. Beside it,
//! `<id>.json` records the archive's own SHA-256, size and options. A restore checks the
//! archive's hash, opens it and checks every file's hash before it changes anything.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::audit::AuditRecord;
use nexus_kernel::principal::Principal;
use nexus_kernel::tasks::{NewTask, StepStatus, TaskError, TaskHandle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::OpsError;
use crate::service::Ops;

pub const ADMIN_BACKUP: &str = "admin:backup";
pub const INCLUDES: &[&str] = &["configuration", "database", "plugins"];
const FORMAT: &str = "nexus-backup-1";
/// What the encryption key is derived for (see `nexus_secrets::keyring::derived_key`).
const PURPOSE: &str = "backup";

/// The record beside each archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub created_at: String,
    /// `manual` (the API) or `cli`.
    #[serde(rename = "type")]
    pub kind: String,
    pub includes: Vec<String>,
    pub compression: bool,
    pub encryption: bool,
    pub backend: String,
    pub schema_version: i64,
    pub file: String,
    pub size_bytes: u64,
    /// SHA-256 of the archive file as written.
    pub sha256: String,
    pub status: String,
}

impl Meta {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "created_at": self.created_at,
            "size_mb": mb(self.size_bytes),
            "size_bytes": self.size_bytes,
            "type": self.kind,
            "includes": self.includes,
            "status": self.status,
            "compression": self.compression,
            "encryption": self.encryption,
            "sha256": self.sha256,
            "download_url": format!("/api/v1/backup/{}/download", self.id),
        })
    }
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 1000.0).round() / 1000.0
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    id: String,
    created_at: String,
    backend: String,
    schema_version: i64,
    includes: Vec<String>,
    files: Vec<FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    path: String,
    size: u64,
    sha256: String,
}

fn dir(ops: &Ops) -> PathBuf {
    ops.kernel.config.data_dir.join("backups")
}

/// Backup ids are generated here; anything else is refused before it reaches a path.
fn valid_id(id: &str) -> bool {
    id.strip_prefix("backup_")
        .is_some_and(|r| !r.is_empty() && r.len() <= 40 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn hex_sha256(bytes: &[u8]) -> String {
    nexus_kernel::id::hex(&Sha256::digest(bytes))
}

fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok((nexus_kernel::id::hex(&hasher.finalize()), size))
}

fn key(ops: &Ops) -> Result<nexus_secrets::crypto::Key, TaskError> {
    nexus_secrets::keyring::derived_key(&ops.kernel.config, PURPOSE)
        .map_err(|e| TaskError::Failed(e.to_string()))?
        .ok_or_else(|| TaskError::Failed(String::from("no master key to encrypt with (start the secrets plugin once)")))
}

fn io(what: &str) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |e| TaskError::Failed(format!("{what}: {e}"))
}

/// `POST /api/v1/backup`: starts the backup task and waits for it (at most
/// `ops.diagnostics_wait_ms`).
pub async fn create(
    ops: &Arc<Ops>,
    caller: &Principal,
    include: Option<Vec<String>>,
    compression: bool,
    encryption: bool,
) -> Result<Value, OpsError> {
    let (id, task_id) = start_backup(ops, caller, include, compression, encryption).await?;
    let mut events = ops.kernel.events.subscribe();
    if !ops.kernel.tasks.get(&task_id).await?.is_some_and(|t| t.status.is_finished()) {
        wait(&mut events, &task_id, crate::service::answer_within(ops)).await;
    }
    let done = ops.kernel.tasks.get(&task_id).await?.ok_or_else(|| OpsError::NotFound(String::from("Task")))?;
    match (&done.result, done.status) {
        (Some(result), nexus_kernel::tasks::TaskStatus::Completed) => {
            let mut out = result.clone();
            if let Some(map) = out.as_object_mut() {
                map.insert("task_id".into(), json!(done.id));
            }
            Ok(out)
        }
        (_, status) => Ok(json!({
            "backup_id": id,
            "task_id": done.id,
            "status": status.as_str(),
            "error": done.error,
        })),
    }
}

/// Starts the backup task; returns the backup's id and the task's.
pub async fn start_backup(
    ops: &Arc<Ops>,
    caller: &Principal,
    include: Option<Vec<String>>,
    compression: bool,
    encryption: bool,
) -> Result<(String, String), OpsError> {
    caller.require(ADMIN_BACKUP)?;
    let include = include.unwrap_or_else(|| INCLUDES.iter().map(|s| (*s).to_string()).collect());
    if include.is_empty() {
        return Err(OpsError::field("include", format!("must name at least one of {}", INCLUDES.join(", "))));
    }
    for i in &include {
        if !INCLUDES.contains(&i.as_str()) {
            return Err(OpsError::field("include", format!("`{i}` is not one of {}", INCLUDES.join(", "))));
        }
    }
    if encryption && nexus_secrets::keyring::derived_key(&ops.kernel.config, PURPOSE).ok().flatten().is_none() {
        return Err(OpsError::Unavailable(String::from("no master key to encrypt with")));
    }
    let id = format!("backup_{}", nexus_kernel::id::random_alphanumeric(16));
    let mut steps: Vec<&str> = include.iter().map(String::as_str).collect();
    steps.push("archive");
    let worker = ops.clone();
    let (wid, winclude) = (id.clone(), include.clone());
    let task = ops
        .kernel
        .tasks
        .spawn(
            NewTask::new("backup", caller.user_id.clone())
                .details(json!({ "backup_id": id, "include": include, "compression": compression, "encryption": encryption }))
                .steps(&steps),
            move |task| async move { run_backup(worker, task, wid, winclude, compression, encryption, "manual").await },
        )
        .await?;
    Ok((id, task.id))
}

/// Starts this minute's scheduled backup (everything, compressed) under the fixed task id
/// `task_id`; on an instance that lost the race, the insert is a unique violation. Deletes
/// the scheduled backups beyond `ops.backup_keep` once it is written.
pub async fn start_scheduled(
    ops: &Arc<Ops>,
    caller: &Principal,
    task_id: &str,
) -> Result<(), nexus_kernel::db::StorageError> {
    let id = format!("backup_{}", nexus_kernel::id::random_alphanumeric(16));
    let include: Vec<String> = INCLUDES.iter().map(|s| (*s).to_string()).collect();
    let mut steps: Vec<&str> = include.iter().map(String::as_str).collect();
    steps.push("archive");
    let worker = ops.clone();
    let (wid, winclude) = (id.clone(), include.clone());
    ops.kernel
        .tasks
        .spawn(
            NewTask::new("backup", caller.user_id.clone())
                .with_id(task_id)
                .details(json!({ "backup_id": id, "include": include, "compression": true, "encryption": false, "scheduled": true }))
                .steps(&steps),
            move |task| async move {
                let out = run_backup(worker.clone(), task, wid, winclude, true, false, "scheduled").await?;
                prune(&worker);
                Ok(out)
            },
        )
        .await?;
    Ok(())
}

/// Deletes the oldest scheduled backups beyond `ops.backup_keep`.
fn prune(ops: &Ops) {
    let keep = usize::try_from(ops.settings().backup_keep).unwrap_or(usize::MAX);
    let mut scheduled: Vec<Meta> = all_metas(ops).into_iter().filter(|m| m.kind == "scheduled").collect();
    scheduled.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    for old in scheduled.iter().skip(keep) {
        let base = dir(ops);
        let _ = std::fs::remove_file(base.join(&old.file));
        let _ = std::fs::remove_file(base.join(format!("{}.json", old.id)));
        tracing::info!(backup = %old.id, "old scheduled backup deleted");
    }
}

async fn wait(
    events: &mut tokio::sync::broadcast::Receiver<Arc<nexus_kernel::events::Event>>,
    id: &str,
    within: Duration,
) {
    let _ = tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(e)
                    if e.data.get("id").and_then(Value::as_str) == Some(id)
                        && matches!(e.kind.as_str(), "task.completed" | "task.failed" | "task.cancelled") =>
                {
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .await;
}

async fn run_backup(
    ops: Arc<Ops>,
    task: TaskHandle,
    id: String,
    include: Vec<String>,
    compression: bool,
    encryption: bool,
    kind: &'static str,
) -> Result<Value, TaskError> {
    let base = dir(&ops);
    let work = base.join(format!(".tmp-{id}"));
    std::fs::create_dir_all(&work).map_err(io("cannot create the backup directory"))?;
    let outcome = build(&ops, &task, &id, &include, compression, encryption, kind, &base, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    let meta = outcome?;
    ops.kernel
        .audit
        .record_best_effort(&AuditRecord {
            action: String::from("backup.created"),
            actor: task.snapshot().await.created_by,
            target: id.clone(),
            success: true,
            metadata: json!({ "includes": include, "size_bytes": meta.size_bytes, "encryption": encryption }),
            ..AuditRecord::default()
        })
        .await;
    let mut out = meta.to_json();
    if let Some(map) = out.as_object_mut() {
        map.insert("backup_id".into(), json!(id));
        map.insert("status".into(), json!("created"));
        map.insert("includes".into(), json!(include));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn build(
    ops: &Ops,
    task: &TaskHandle,
    id: &str,
    include: &[String],
    compression: bool,
    encryption: bool,
    kind: &str,
    base: &Path,
    work: &Path,
) -> Result<Meta, TaskError> {
    let created_at = ops.kernel.clock.now().to_rfc3339();
    let schema_version = crate::dump::schema_version(&ops.kernel.db).await?;
    let mut files: Vec<String> = Vec::new();
    let total = include.len() + 1;
    for (i, part) in include.iter().enumerate() {
        task.checkpoint()?;
        task.step(part, StepStatus::Running, None).await?;
        let sub = work.join(part);
        std::fs::create_dir_all(&sub).map_err(io("cannot create the backup directory"))?;
        match part.as_str() {
            "database" => {
                let name = crate::dump::snapshot(&ops.kernel.db, &sub).await?;
                files.push(format!("database/{name}"));
            }
            "configuration" => {
                // Credentials only inside an encrypted archive.
                let config = if encryption { ops.kernel.config.clone() } else { ops.kernel.config.masked() };
                let text = serde_json::to_vec_pretty(&config).unwrap_or_default();
                std::fs::write(sub.join("config.json"), text).map_err(io("cannot write the configuration"))?;
                files.push(String::from("configuration/config.json"));
            }
            _ => {
                let plugins: Vec<Value> = ops
                    .kernel
                    .plugins
                    .all()
                    .iter()
                    .map(|s| json!({ "manifest": s.manifest, "status": s.status().as_str(), "reason": s.reason() }))
                    .collect();
                let text = serde_json::to_vec_pretty(&plugins).unwrap_or_default();
                std::fs::write(sub.join("plugins.json"), text).map_err(io("cannot write the plugin list"))?;
                files.push(String::from("plugins/plugins.json"));
            }
        }
        task.step(part, StepStatus::Completed, None).await?;
        task.progress((i + 1) as f64 / total as f64).await?;
    }
    task.checkpoint()?;
    task.step("archive", StepStatus::Running, None).await?;
    let backend = ops.kernel.db.backend().name().to_string();
    let key = if encryption { Some(key(ops)?) } else { None };
    let (id_owned, work_owned, base_owned) = (id.to_string(), work.to_path_buf(), base.to_path_buf());
    let (includes, created) = (include.to_vec(), created_at.clone());
    let backend_name = backend.clone();
    let (file, sha256, size) = tokio::task::spawn_blocking(move || -> Result<(String, String, u64), TaskError> {
        let mut entries = Vec::new();
        for f in &files {
            let (sha, size) = file_sha256(&work_owned.join(f)).map_err(io("cannot read a backup file"))?;
            entries.push(FileEntry { path: f.clone(), size, sha256: sha });
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            id: id_owned.clone(),
            created_at: created,
            backend: backend_name,
            schema_version,
            includes,
            files: entries,
        };
        std::fs::write(work_owned.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap_or_default())
            .map_err(io("cannot write the manifest"))?;
        let mut name = format!("{id_owned}.tar");
        if compression {
            name.push_str(".zst");
        }
        if key.is_some() {
            name.push_str(".enc");
        }
        let target = base_owned.join(&name);
        let staging = work_owned.join("archive");
        {
            let out = std::fs::File::create(&staging).map_err(io("cannot write the archive"))?;
            let writer: Box<dyn std::io::Write> = if compression {
                Box::new(zstd::Encoder::new(out, 3).map_err(io("cannot compress"))?.auto_finish())
            } else {
                Box::new(out)
            };
            let mut tar = tar::Builder::new(writer);
            tar.append_path_with_name(work_owned.join("manifest.json"), "manifest.json")
                .map_err(io("cannot write the archive"))?;
            for f in &files {
                tar.append_path_with_name(work_owned.join(f), f).map_err(io("cannot write the archive"))?;
            }
            let mut inner = tar.into_inner().map_err(io("cannot write the archive"))?;
            inner.flush().map_err(io("cannot write the archive"))?;
        }
        if let Some(key) = &key {
            let plain = std::fs::read(&staging).map_err(io("cannot read the archive"))?;
            let sealed = key.seal(&plain, id_owned.as_bytes());
            std::fs::write(&staging, sealed).map_err(io("cannot write the archive"))?;
        }
        std::fs::rename(&staging, &target).map_err(io("cannot move the archive into place"))?;
        let (sha, size) = file_sha256(&target).map_err(io("cannot read the archive"))?;
        Ok((name, sha, size))
    })
    .await
    .map_err(|_| TaskError::Failed(String::from("the archive writer stopped")))??;
    let meta = Meta {
        id: id.to_string(),
        created_at,
        kind: kind.to_string(),
        includes: include.to_vec(),
        compression,
        encryption,
        backend,
        schema_version,
        file,
        size_bytes: size,
        sha256,
        status: String::from("completed"),
    };
    std::fs::write(base.join(format!("{id}.json")), serde_json::to_vec_pretty(&meta).unwrap_or_default())
        .map_err(io("cannot write the backup record"))?;
    task.step("archive", StepStatus::Completed, None).await?;
    Ok(meta)
}

fn read_meta(ops: &Ops, id: &str) -> Result<Meta, OpsError> {
    if !valid_id(id) {
        return Err(OpsError::NotFound(String::from("Backup")));
    }
    let text =
        std::fs::read(dir(ops).join(format!("{id}.json"))).map_err(|_| OpsError::NotFound(String::from("Backup")))?;
    serde_json::from_slice(&text).map_err(|_| OpsError::NotFound(String::from("Backup")))
}

/// `GET /api/v1/backup`: newest first.
pub fn list(ops: &Ops, caller: &Principal) -> Result<Value, OpsError> {
    caller.require(ADMIN_BACKUP)?;
    let mut metas = all_metas(ops);
    metas.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(json!({ "backups": metas.iter().map(Meta::to_json).collect::<Vec<_>>() }))
}

fn all_metas(ops: &Ops) -> Vec<Meta> {
    std::fs::read_dir(dir(ops))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice::<Meta>(&b).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The archive of backup `id`: its path, size and record.
pub fn archive(ops: &Ops, caller: &Principal, id: &str) -> Result<(PathBuf, Meta), OpsError> {
    caller.require(ADMIN_BACKUP)?;
    let meta = read_meta(ops, id)?;
    let path = dir(ops).join(&meta.file);
    if !path.is_file() {
        return Err(OpsError::NotFound(String::from("Backup archive")));
    }
    Ok((path, meta))
}

/// `POST /api/v1/backup/{id}/restore`: starts the restore task.
pub async fn start_restore(
    ops: &Arc<Ops>,
    caller: &Principal,
    id: &str,
    components: Option<Vec<String>>,
    confirm: bool,
) -> Result<Value, OpsError> {
    caller.require(ADMIN_BACKUP)?;
    let meta = read_meta(ops, id)?;
    if !confirm {
        return Err(OpsError::field("confirm", "must be true: a restore replaces the current data"));
    }
    let components = components.unwrap_or_else(|| meta.includes.clone());
    for c in &components {
        if !INCLUDES.contains(&c.as_str()) {
            return Err(OpsError::field("components", format!("`{c}` is not one of {}", INCLUDES.join(", "))));
        }
        if !meta.includes.contains(c) {
            return Err(OpsError::field("components", format!("the backup does not include `{c}`")));
        }
    }
    let worker = ops.clone();
    let (wmeta, wcomponents) = (meta.clone(), components.clone());
    let task = ops
        .kernel
        .tasks
        .spawn(
            NewTask::new("restore", caller.user_id.clone())
                .details(json!({ "backup_id": id, "components": components }))
                .steps(&["verify", "apply"]),
            move |task| async move { run_restore(worker, task, wmeta, wcomponents).await },
        )
        .await?;
    Ok(json!({
        "restore_id": task.id,
        "task_id": task.id,
        "status": "started",
        "backup_id": id,
        "estimated_duration_ms": null,
    }))
}

async fn run_restore(ops: Arc<Ops>, task: TaskHandle, meta: Meta, components: Vec<String>) -> Result<Value, TaskError> {
    let base = dir(&ops);
    let work = base.join(format!(".restore-{}", task.id()));
    std::fs::create_dir_all(&work).map_err(io("cannot create the restore directory"))?;
    let outcome = restore_from(&ops, &task, &meta, &components, &base, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    let rows = outcome?;
    // Entries cached before the swap describe data that is no longer there.
    let cleared =
        ops.kernel.cache.clear("*", nexus_kernel::cache::Level::All).await.map(|c| c.cleared_keys).unwrap_or(0);
    ops.kernel
        .audit
        .record_best_effort(&AuditRecord {
            action: String::from("backup.restored"),
            actor: task.snapshot().await.created_by,
            target: meta.id.clone(),
            success: true,
            metadata: json!({ "components": components, "rows": rows }),
            ..AuditRecord::default()
        })
        .await;
    Ok(json!({ "backup_id": meta.id, "components": components, "rows_restored": rows, "cache_keys_cleared": cleared }))
}

async fn restore_from(
    ops: &Ops,
    task: &TaskHandle,
    meta: &Meta,
    components: &[String],
    base: &Path,
    work: &Path,
) -> Result<u64, TaskError> {
    task.step("verify", StepStatus::Running, None).await?;
    let key = if meta.encryption { Some(key(ops)?) } else { None };
    let (path, expected, id, compression) =
        (base.join(&meta.file), meta.sha256.clone(), meta.id.clone(), meta.compression);
    let dest = work.to_path_buf();
    let manifest =
        tokio::task::spawn_blocking(move || open_archive(&path, &expected, &id, compression, key.as_ref(), &dest))
            .await
            .map_err(|_| TaskError::Failed(String::from("the archive reader stopped")))??;
    if manifest.format != FORMAT || manifest.id != meta.id {
        return Err(TaskError::Failed(String::from("the archive is not this backup; nothing was restored")));
    }
    if manifest.backend != ops.kernel.db.backend().name() {
        return Err(TaskError::Failed(format!(
            "the backup is of a {} database and this server runs on {}; nothing was restored",
            manifest.backend,
            ops.kernel.db.backend().name()
        )));
    }
    let current = crate::dump::schema_version(&ops.kernel.db).await?;
    if manifest.schema_version != current {
        return Err(TaskError::Failed(format!(
            "the backup's schema ({}) differs from this server's ({current}); nothing was restored",
            manifest.schema_version
        )));
    }
    task.step("verify", StepStatus::Completed, None).await?;
    task.progress(0.5).await?;
    task.checkpoint()?;
    task.step("apply", StepStatus::Running, None).await?;
    let mut rows = 0;
    if components.iter().any(|c| c == "database") {
        rows = crate::dump::restore(&ops.kernel.db, &work.join("database"), None).await?;
        task.log("INFO", &format!("database restored: {rows} rows")).await?;
    } else if components.iter().any(|c| c == "configuration") {
        // Operators' configuration changes live in the plugin state table of the snapshot.
        if manifest.includes.iter().any(|c| c == "database") {
            rows = crate::dump::restore(&ops.kernel.db, &work.join("database"), Some(&["nexus_plugin_state"])).await?;
            task.log("INFO", "stored configuration changes restored; they apply at the next start").await?;
        }
    }
    task.step("apply", StepStatus::Completed, None).await?;
    Ok(rows)
}

/// Checks the archive at `path` against its recorded SHA-256, opens it (decrypting and
/// decompressing) into `dest` and checks every file against the manifest. Changes nothing
/// outside `dest`.
fn open_archive(
    path: &Path,
    expected: &str,
    id: &str,
    compression: bool,
    key: Option<&nexus_secrets::crypto::Key>,
    dest: &Path,
) -> Result<Manifest, TaskError> {
    let bytes = std::fs::read(path).map_err(io("cannot read the archive"))?;
    if hex_sha256(&bytes) != *expected {
        return Err(TaskError::Failed(String::from(
            "the archive does not match its recorded SHA-256 (changed or truncated); nothing was restored",
        )));
    }
    let bytes = match key {
        Some(key) => key.open(&bytes, id.as_bytes()).map(|p| p.to_vec()).map_err(|_| {
            TaskError::Failed(String::from(
                "the archive cannot be decrypted with this master key; nothing was restored",
            ))
        })?,
        None => bytes,
    };
    let reader: Box<dyn std::io::Read> = if compression {
        Box::new(zstd::Decoder::new(std::io::Cursor::new(bytes)).map_err(io("cannot decompress the archive"))?)
    } else {
        Box::new(std::io::Cursor::new(bytes))
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(io("cannot read the archive"))? {
        let mut entry = entry.map_err(io("cannot read the archive"))?;
        // `unpack_in` refuses paths that leave the directory.
        entry.unpack_in(dest).map_err(io("cannot unpack the archive"))?;
    }
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dest.join("manifest.json")).map_err(io("the archive has no manifest"))?)
            .map_err(|_| TaskError::Failed(String::from("the archive's manifest is not valid")))?;
    for f in &manifest.files {
        let (sha, size) = file_sha256(&dest.join(&f.path))
            .map_err(|_| TaskError::Failed(format!("{} is missing from the archive; nothing was restored", f.path)))?;
        if sha != f.sha256 || size != f.size {
            return Err(TaskError::Failed(format!(
                "{} does not match the manifest's SHA-256; nothing was restored",
                f.path
            )));
        }
    }
    Ok(manifest)
}

/// `nexus backup verify`: checks a backup without restoring it.
pub async fn verify(ops: &Arc<Ops>, caller: &Principal, id: &str) -> Result<Value, OpsError> {
    caller.require(ADMIN_BACKUP)?;
    let meta = read_meta(ops, id)?;
    let key = if meta.encryption { Some(key(ops)?) } else { None };
    let base = dir(ops);
    let work = base.join(format!(".verify-{}", nexus_kernel::id::random_alphanumeric(8)));
    std::fs::create_dir_all(&work)
        .map_err(|e| OpsError::Unavailable(format!("cannot create {}: {e}", work.display())))?;
    let (path, expected, mid, compression, dest) =
        (base.join(&meta.file), meta.sha256.clone(), meta.id.clone(), meta.compression, work.clone());
    let outcome =
        tokio::task::spawn_blocking(move || open_archive(&path, &expected, &mid, compression, key.as_ref(), &dest))
            .await
            .map_err(|_| OpsError::Unavailable(String::from("the archive reader stopped")));
    let _ = std::fs::remove_dir_all(&work);
    let manifest = outcome??;
    Ok(json!({
        "backup_id": meta.id,
        "valid": true,
        "files": manifest.files.iter().map(|f| json!({ "path": f.path, "size": f.size, "sha256": f.sha256 })).collect::<Vec<_>>(),
    }))
}

/// Bytes `start..=end` of a file of `len` bytes for a `Range: bytes=…` header; `None` for
/// anything but one satisfiable range.
pub fn byte_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (s, "") => (s.parse().ok()?, len - 1),
        (s, e) => (s.parse().ok()?, e.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

/// Reads bytes `start..=end` of `path`.
pub fn read_range(path: &Path, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Seek as _;
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(start))?;
    let mut buf = vec![0u8; usize::try_from(end - start + 1).unwrap_or(0)];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges() {
        assert_eq!(super::byte_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(super::byte_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(super::byte_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(super::byte_range("bytes=200-", 100), None);
        assert!(super::valid_id("backup_abc123"));
        assert!(!super::valid_id("backup_../x"));
    }
}
