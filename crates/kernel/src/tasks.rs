//! Background tasks: the one way a long operation (a diagnostic run, a security scan, a
//! backup, a library scan, a plugin install) runs, so that operators see its progress, steps,
//! logs and result, and can cancel it.
//!
//! ```ignore
//! let task = kernel.tasks.spawn(
//!     NewTask::new("library_scan", caller.user_id.clone()).details(json!({"library": id})).steps(&["walk", "probe"]),
//!     move |task| async move {
//!         task.step("walk", StepStatus::Running, None).await?;
//!         for (i, file) in files.iter().enumerate() {
//!             task.checkpoint()?;                       // Err(Cancelled) once cancelled
//!             task.progress(i as f64 / files.len() as f64).await?;
//!         }
//!         task.step("walk", StepStatus::Completed, None).await?;
//!         Ok(json!({"files": files.len()}))            // the task's result
//!     },
//! ).await?;
//! ```
//!
//! - Every task is a row of `nexus_tasks`, rewritten at each change by the instance running
//!   it, so any instance answers for any task and a task outlives the process that ran it.
//! - Cancelling ([`Tasks::cancel`]) marks the row `cancelled` at once and tells the worker; the
//!   worker stops at its next [`TaskHandle::checkpoint`] or write (a write to a task that is no
//!   longer live fails with [`TaskError::Cancelled`]), also when another instance cancelled it.
//! - Every change is published on the event bus as `task.created`, `task.progress`,
//!   `task.completed`, `task.failed` or `task.cancelled` (source `tasks`, data: the task's
//!   summary), which the WebSocket `tasks` channel carries.
//! - After a restart, a task left `pending` or `running` by an instance that is gone is resumed
//!   when its kind has a resumer ([`Tasks::resume_with`], registered at plugin start), else
//!   marked `failed` with an error saying it was interrupted ([`Tasks::recover`]). On SQLite
//!   (one instance per database) every such task of an earlier process is orphaned; on
//!   PostgreSQL, one whose instance has not written a heartbeat for [`STALE_AFTER`].

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::clock::{Clock, Timestamp};
use crate::db::{Db, StorageError};
use crate::events::EventBus;

/// How often a running task's instance says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A task whose instance has been silent this long is orphaned (PostgreSQL).
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// Log lines kept per task (the oldest go first).
const MAX_LOGS: usize = 500;
/// Tasks one list returns at most.
pub const MAX_LIST: i64 = 500;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(TaskStatus::Pending),
            "running" => Some(TaskStatus::Running),
            "completed" => Some(TaskStatus::Completed),
            "failed" => Some(TaskStatus::Failed),
            "cancelled" => Some(TaskStatus::Cancelled),
            _ => None,
        }
    }

    /// Whether the task has ended (and can no longer be cancelled).
    pub fn is_finished(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

/// A step's status uses the task's vocabulary.
pub type StepStatus = TaskStatus;

/// One named step of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: StepStatus,
    /// 0–1, while the step reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

/// One line of a task's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339.
    pub timestamp: String,
    /// `INFO`, `WARN` or `ERROR`.
    pub level: String,
    pub message: String,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// `task_…`
    pub id: String,
    /// What it does (`diagnostics`, `security_scan`, `backup`…).
    pub kind: String,
    pub status: TaskStatus,
    /// 0–1.
    pub progress: f64,
    /// What it was asked to do (its input), as given at creation.
    pub details: Value,
    pub steps: Vec<Step>,
    pub logs: Vec<LogLine>,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// The user id of the caller that started it (`system` for the server itself).
    pub created_by: String,
    /// The instance (process) running it.
    pub instance: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    /// When it completed, failed or was cancelled.
    pub finished_at: Option<Timestamp>,
    pub heartbeat_at: Timestamp,
}

impl Task {
    /// When it will be done at the rate measured so far: the time since it started, scaled by
    /// the share still to do. `None` unless it is running and has reported progress.
    pub fn estimated_completion(&self, now: Timestamp) -> Option<Timestamp> {
        let started = self.started_at?;
        if self.status != TaskStatus::Running || self.progress <= 0.0 || self.progress >= 1.0 {
            return None;
        }
        let elapsed = now.as_micros().saturating_sub(started.as_micros()).max(0) as f64;
        let total = elapsed / self.progress;
        Some(Timestamp::from_micros(started.as_micros().saturating_add(total as i64)))
    }

    /// The task in the operations API's shape (`seeds/core-ops-api.md`): `details` carries the
    /// input and the steps; `completed_at`, `failed_at` or `cancelled_at` says how it ended.
    pub fn to_json(&self, now: Timestamp) -> Value {
        let mut details = match &self.details {
            Value::Object(map) => map.clone(),
            Value::Null => serde_json::Map::new(),
            other => serde_json::Map::from_iter([(String::from("input"), other.clone())]),
        };
        details.insert(String::from("steps"), serde_json::to_value(&self.steps).unwrap_or_default());
        let mut out = json!({
            "id": self.id,
            "type": self.kind,
            "status": self.status.as_str(),
            "progress": self.progress,
            "created_at": self.created_at.to_rfc3339(),
            "started_at": self.started_at.map(Timestamp::to_rfc3339),
            "estimated_completion": self.estimated_completion(now).map(Timestamp::to_rfc3339),
            "created_by": self.created_by,
            "details": details,
            "logs": self.logs,
            "result": self.result,
            "error": self.error,
        });
        if let (Some(at), Some(map)) = (self.finished_at, out.as_object_mut()) {
            let key = match self.status {
                TaskStatus::Failed => "failed_at",
                TaskStatus::Cancelled => "cancelled_at",
                _ => "completed_at",
            };
            map.insert(key.to_string(), Value::String(at.to_rfc3339()));
        }
        out
    }

    /// What events carry: everything but the logs and the result.
    fn summary(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.kind,
            "status": self.status.as_str(),
            "progress": self.progress,
            "steps": self.steps,
            "error": self.error,
        })
    }
}

/// A task to start.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// A fixed id, for work that must run once across instances (a scheduled job): on the
    /// other instances [`Tasks::spawn`] then fails with a unique violation
    /// ([`StorageError::is_unique_violation`]). `None`: a fresh `task_…` id.
    pub id: Option<String>,
    pub kind: String,
    pub created_by: String,
    pub details: Value,
    pub steps: Vec<String>,
}

impl NewTask {
    pub fn new(kind: &str, created_by: impl Into<String>) -> Self {
        Self {
            id: None,
            kind: kind.to_string(),
            created_by: created_by.into(),
            details: Value::Null,
            steps: Vec::new(),
        }
    }

    /// Its fixed id (see [`NewTask::id`]).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Its input, shown under `details`.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Its steps, all `pending` at first.
    pub fn steps(mut self, names: &[&str]) -> Self {
        self.steps = names.iter().map(|n| (*n).to_string()).collect();
        self
    }
}

/// Why a task operation (or the task's own work) ended early.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The task was cancelled: the worker should stop.
    #[error("the task was cancelled")]
    Cancelled,
    /// The work failed; the message is shown to operators (no secrets in it).
    #[error("{0}")]
    Failed(String),
    #[error("task not found")]
    NotFound,
    /// It has already ended, with this status.
    #[error("the task has already ended ({})", .0.as_str())]
    Finished(TaskStatus),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<TaskError> for crate::error::Failure {
    fn from(err: TaskError) -> Self {
        match err {
            TaskError::NotFound => crate::error::Failure::not_found("Task not found"),
            TaskError::Finished(status) => crate::error::Failure::conflict(format!(
                "The task has already ended ({}) and cannot be cancelled",
                status.as_str()
            ))
            .with_extra("status", status.as_str()),
            TaskError::Cancelled => crate::error::Failure::conflict("The task was cancelled"),
            TaskError::Failed(message) => crate::error::Failure::invalid_message(message),
            TaskError::Storage(e) => crate::error::Failure::internal(e),
        }
    }
}

/// Resumes an interrupted task of one kind: called with a handle on the task (its stored
/// details, steps and progress), runs the rest of its work.
pub type Resumer = Arc<dyn Fn(TaskHandle) -> BoxFuture<'static, Result<Value, TaskError>> + Send + Sync>;

/// The tasks service of one instance (`kernel.tasks`).
pub struct Tasks {
    store: Box<dyn TaskStore>,
    backend: crate::db::Backend,
    events: EventBus,
    clock: Arc<Clock>,
    /// This process, as the `instance` of the tasks it runs.
    instance: String,
    live: Mutex<HashMap<String, Arc<Live>>>,
    resumers: Mutex<HashMap<String, Resumer>>,
    me: Weak<Tasks>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").field("instance", &self.instance).field("running", &self.running()).finish()
    }
}

/// A task running in this process.
struct Live {
    state: tokio::sync::Mutex<Task>,
    cancel: watch::Sender<bool>,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
}

/// What a worker holds: reports progress, steps and logs, and learns of cancellation.
#[derive(Clone)]
pub struct TaskHandle {
    tasks: Arc<Tasks>,
    live: Arc<Live>,
    id: String,
}

impl std::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle").field("id", &self.id).finish()
    }
}

impl Tasks {
    /// The service for `db`; its heartbeat stops (and its workers are aborted, leaving their
    /// rows for the next start to recover) when `events` closes.
    pub fn start(db: &Db, events: EventBus, clock: Arc<Clock>) -> Arc<Self> {
        let tasks = Arc::new_cyclic(|me| Self {
            store: store(db),
            backend: db.backend(),
            instance: events.instance_id().to_string(),
            events,
            clock,
            live: Mutex::default(),
            resumers: Mutex::default(),
            me: me.clone(),
        });
        tokio::spawn(heartbeat(Arc::downgrade(&tasks), tasks.events.closed()));
        tasks
    }

    /// How many tasks this process is running.
    pub fn running(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Creates a task and runs `work` for it in the background. Returns the task as created.
    /// `work`'s `Ok` value is the task's result; `Err(Failed)` fails it with that message;
    /// `Err(Cancelled)` ends it cancelled; a panic fails it.
    pub async fn spawn<F, Fut>(&self, new: NewTask, work: F) -> Result<Task, StorageError>
    where
        F: FnOnce(TaskHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        let now = self.clock.now();
        let task = Task {
            id: new.id.unwrap_or_else(|| format!("task_{}", crate::id::random_alphanumeric(20))),
            kind: new.kind,
            status: TaskStatus::Pending,
            progress: 0.0,
            details: new.details,
            steps: new
                .steps
                .into_iter()
                .map(|name| Step { name, status: TaskStatus::Pending, progress: None })
                .collect(),
            logs: Vec::new(),
            result: None,
            error: None,
            created_by: new.created_by,
            instance: self.instance.clone(),
            created_at: now,
            started_at: None,
            finished_at: None,
            heartbeat_at: now,
        };
        self.store.insert(&Row::from(&task)).await?;
        self.events.publish("tasks", "task.created", task.summary());
        self.run(task.clone(), work);
        Ok(task)
    }

    /// Runs `work` for `task` (already stored) in this process.
    fn run<F, Fut>(&self, task: Task, work: F)
    where
        F: FnOnce(TaskHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        let Some(tasks) = self.me.upgrade() else { return };
        let (cancel, _) = watch::channel(false);
        let id = task.id.clone();
        let live = Arc::new(Live { state: tokio::sync::Mutex::new(task), cancel, abort: Mutex::new(None) });
        if let Ok(mut map) = self.live.lock() {
            map.insert(id.clone(), live.clone());
        }
        let handle = TaskHandle { tasks: tasks.clone(), live: live.clone(), id: id.clone() };
        let join = tokio::spawn(async move {
            let outcome = match handle.begin().await {
                Ok(()) => AssertUnwindSafe(work(handle.clone())).catch_unwind().await.unwrap_or_else(|_| {
                    tracing::error!(task = %handle.id, "task panicked");
                    Err(TaskError::Failed(String::from("the task stopped on an internal error")))
                }),
                Err(e) => Err(e),
            };
            handle.finish(outcome).await;
            if let Ok(mut map) = handle.tasks.live.lock() {
                map.remove(&handle.id);
            }
        });
        if let Ok(mut abort) = live.abort.lock() {
            *abort = Some(join.abort_handle());
        }
    }

    /// The task `id`, as stored (after failing it if its instance is gone).
    pub async fn get(&self, id: &str) -> Result<Option<Task>, StorageError> {
        let task = self.store.get(id).await?.map(Row::into_task);
        if task.as_ref().is_some_and(|t| self.is_orphan(t)) {
            self.recover().await?;
            return Ok(self.store.get(id).await?.map(Row::into_task));
        }
        Ok(task)
    }

    /// The newest tasks (at most `limit`, capped at [`MAX_LIST`]), optionally of one status
    /// and kind.
    pub async fn list(
        &self,
        status: Option<TaskStatus>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Task>, StorageError> {
        let limit = limit.clamp(1, MAX_LIST);
        let status = status.map(TaskStatus::as_str);
        let tasks: Vec<Task> = self.store.list(status, kind, limit).await?.into_iter().map(Row::into_task).collect();
        if tasks.iter().any(|t| self.is_orphan(t)) {
            self.recover().await?;
            return Ok(self.store.list(status, kind, limit).await?.into_iter().map(Row::into_task).collect());
        }
        Ok(tasks)
    }

    /// Cancels task `id`: it is `cancelled` from now on, and its worker (here or on another
    /// instance) stops at its next checkpoint. A task that has ended is
    /// [`TaskError::Finished`].
    pub async fn cancel(&self, id: &str) -> Result<Task, TaskError> {
        let now = self.clock.now();
        if !self.store.cancel(id, now.as_micros()).await? {
            return match self.store.get(id).await? {
                None => Err(TaskError::NotFound),
                Some(row) => Err(TaskError::Finished(row.into_task().status)),
            };
        }
        let live = self.live.lock().ok().and_then(|l| l.get(id).cloned());
        if let Some(live) = &live {
            live.cancel.send_replace(true);
            let mut state = live.state.lock().await;
            state.status = TaskStatus::Cancelled;
            state.finished_at = Some(now);
            push_log(&mut state.logs, now, "WARN", "cancel requested");
        }
        let task = self.store.get(id).await?.map(Row::into_task).ok_or(TaskError::NotFound)?;
        self.events.publish("tasks", "task.cancelled", task.summary());
        Ok(task)
    }

    /// Registers how interrupted tasks of `kind` are resumed. Plugins register at start; the
    /// server recovers interrupted tasks once every plugin has started.
    pub fn resume_with(&self, kind: &str, resumer: Resumer) {
        if let Ok(mut map) = self.resumers.lock() {
            map.insert(kind.to_string(), resumer);
        }
    }

    fn is_orphan(&self, task: &Task) -> bool {
        !task.status.is_finished() && task.instance != self.instance && self.stale(task.heartbeat_at)
    }

    fn stale(&self, heartbeat: Timestamp) -> bool {
        match self.backend {
            // One instance per SQLite database: another instance's task is a dead process's.
            crate::db::Backend::Sqlite => true,
            crate::db::Backend::Postgres => heartbeat.as_micros() < self.stale_before(),
        }
    }

    fn stale_before(&self) -> i64 {
        match self.backend {
            crate::db::Backend::Sqlite => i64::MAX,
            crate::db::Backend::Postgres => {
                self.clock.now().as_micros().saturating_sub(i64::try_from(STALE_AFTER.as_micros()).unwrap_or(0))
            }
        }
    }

    /// Resumes or fails every task whose instance is gone; returns how many it found.
    pub async fn recover(&self) -> Result<usize, StorageError> {
        let orphans = self.store.orphans(&self.instance, self.stale_before()).await?;
        let count = orphans.len();
        for row in orphans {
            let mut task = row.into_task();
            let resumer = self.resumers.lock().ok().and_then(|r| r.get(&task.kind).cloned());
            let now = self.clock.now();
            if let Some(resumer) = resumer {
                // Only one instance claims it: the claim names the instance it takes it from.
                if !self.store.claim(&task.id, &task.instance, &self.instance, now.as_micros()).await? {
                    continue;
                }
                task.instance = self.instance.clone();
                task.heartbeat_at = now;
                push_log(&mut task.logs, now, "WARN", "resumed after the instance running it stopped");
                tracing::info!(task = %task.id, kind = %task.kind, "resuming an interrupted task");
                self.run(task, move |handle| resumer(handle));
            } else {
                let message = format!(
                    "interrupted: the server running it stopped (instance {}) and tasks of type `{}` cannot be resumed",
                    task.instance, task.kind
                );
                task.status = TaskStatus::Failed;
                task.finished_at = Some(now);
                task.error = Some(message.clone());
                push_log(&mut task.logs, now, "ERROR", &message);
                if self.store.fail_orphan(&Row::from(&task)).await? {
                    tracing::warn!(task = %task.id, kind = %task.kind, "interrupted task marked failed");
                    self.events.publish("tasks", "task.failed", task.summary());
                }
            }
        }
        Ok(count)
    }

    async fn beat(&self) {
        if self.running() == 0 {
            return;
        }
        if let Err(e) = self.store.heartbeat(&self.instance, self.clock.now().as_micros()).await {
            tracing::warn!(error = %e, "task heartbeat not written");
        }
    }

    /// Stops every worker of this process without touching their rows: what a crash would
    /// do; the next start recovers them.
    fn abort_all(&self) {
        if let Ok(map) = self.live.lock() {
            for live in map.values() {
                if let Some(abort) = live.abort.lock().ok().and_then(|a| a.clone()) {
                    abort.abort();
                }
            }
        }
    }
}

/// Writes the heartbeat of this instance's running tasks and, every few beats, recovers the
/// tasks of instances that stopped; ends (aborting the workers) when the bus closes.
async fn heartbeat(tasks: Weak<Tasks>, closed: impl Future<Output = ()>) {
    tokio::pin!(closed);
    let mut beats = 0u32;
    loop {
        tokio::select! {
            () = &mut closed => {
                if let Some(tasks) = tasks.upgrade() {
                    tasks.abort_all();
                }
                return;
            }
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
        let Some(tasks) = tasks.upgrade() else { return };
        tasks.beat().await;
        beats = beats.wrapping_add(1);
        // On SQLite another process on the file (a `nexus` command) is not a dead server:
        // its tasks are recovered at the next start of the server, and when read.
        if beats.is_multiple_of(3)
            && tasks.backend == crate::db::Backend::Postgres
            && let Err(e) = tasks.recover().await
        {
            tracing::warn!(error = %e, "interrupted tasks not recovered");
        }
    }
}

fn push_log(logs: &mut Vec<LogLine>, at: Timestamp, level: &str, message: &str) {
    logs.push(LogLine { timestamp: at.to_rfc3339(), level: level.to_string(), message: message.to_string() });
    if logs.len() > MAX_LOGS {
        let extra = logs.len() - MAX_LOGS;
        logs.drain(..extra);
    }
}

impl TaskHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The task's input, as given at creation.
    pub async fn details(&self) -> Value {
        self.live.state.lock().await.details.clone()
    }

    /// A copy of the task as it stands.
    pub async fn snapshot(&self) -> Task {
        self.live.state.lock().await.clone()
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.live.cancel.borrow()
    }

    /// `Err(Cancelled)` once it was cancelled: the worker's `?` stops it there.
    pub fn checkpoint(&self) -> Result<(), TaskError> {
        if self.is_cancelled() { Err(TaskError::Cancelled) } else { Ok(()) }
    }

    /// Resolves when it is cancelled (here; another instance's cancel is learnt at the next
    /// write).
    pub async fn cancelled(&self) {
        let mut rx = self.live.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Sets the overall progress (clamped to 0–1).
    pub async fn progress(&self, progress: f64) -> Result<(), TaskError> {
        self.update(|t, _| t.progress = progress.clamp(0.0, 1.0), "task.progress").await
    }

    /// Sets a step's status and progress; an unknown step is added at the end.
    pub async fn step(&self, name: &str, status: StepStatus, progress: Option<f64>) -> Result<(), TaskError> {
        self.update(
            |t, _| {
                let progress = progress.map(|p| p.clamp(0.0, 1.0));
                match t.steps.iter_mut().find(|s| s.name == name) {
                    Some(step) => {
                        step.status = status;
                        step.progress = progress;
                    }
                    None => t.steps.push(Step { name: name.to_string(), status, progress }),
                }
            },
            "task.progress",
        )
        .await
    }

    /// Adds a line to its log (`INFO`, `WARN` or `ERROR`).
    pub async fn log(&self, level: &str, message: &str) -> Result<(), TaskError> {
        let level = level.to_ascii_uppercase();
        self.update(|t, now| push_log(&mut t.logs, now, &level, message), "").await
    }

    async fn begin(&self) -> Result<(), TaskError> {
        self.update(
            |t, now| {
                t.status = TaskStatus::Running;
                if t.started_at.is_none() {
                    t.started_at = Some(now);
                }
            },
            "task.progress",
        )
        .await
    }

    /// Applies `change` and stores the task; `Err(Cancelled)` when the task is no longer live
    /// (cancelled here or elsewhere). `event` is published after the write ("" for none).
    async fn update(&self, change: impl FnOnce(&mut Task, Timestamp), event: &str) -> Result<(), TaskError> {
        self.checkpoint()?;
        let now = self.tasks.clock.now();
        let mut state = self.live.state.lock().await;
        change(&mut state, now);
        state.heartbeat_at = now;
        if !self.tasks.store.update_live(&Row::from(&*state)).await? {
            self.live.cancel.send_replace(true);
            return Err(TaskError::Cancelled);
        }
        if !event.is_empty() {
            self.tasks.events.publish("tasks", event, state.summary());
        }
        Ok(())
    }

    /// Records how the work ended.
    async fn finish(&self, outcome: Result<Value, TaskError>) {
        let now = self.tasks.clock.now();
        let mut state = self.live.state.lock().await;
        let (status, event) = match outcome {
            Ok(result) => {
                state.progress = 1.0;
                state.result = Some(result);
                for step in &mut state.steps {
                    if step.status == TaskStatus::Running {
                        step.status = TaskStatus::Completed;
                        step.progress = None;
                    }
                }
                (TaskStatus::Completed, "task.completed")
            }
            Err(TaskError::Cancelled) => {
                push_log(&mut state.logs, now, "WARN", "stopped after being cancelled");
                (TaskStatus::Cancelled, "task.cancelled")
            }
            Err(e) => {
                let message = e.to_string();
                push_log(&mut state.logs, now, "ERROR", &message);
                state.error = Some(message);
                for step in &mut state.steps {
                    if step.status == TaskStatus::Running {
                        step.status = TaskStatus::Failed;
                    }
                }
                (TaskStatus::Failed, "task.failed")
            }
        };
        state.status = status;
        state.finished_at = Some(now);
        state.heartbeat_at = now;
        match self.tasks.store.finish(&Row::from(&*state)).await {
            // A task cancelled meanwhile keeps its cancellation, with the worker's last log.
            Ok(true) => {
                self.tasks.events.publish("tasks", event, state.summary());
            }
            Ok(false) => {
                if let Err(e) = self.tasks.store.append_logs(&self.id, &Row::from(&*state).logs).await {
                    tracing::warn!(task = %self.id, error = %e, "task log not stored");
                }
            }
            Err(e) => tracing::error!(task = %self.id, error = %e, "task outcome not stored"),
        }
    }
}

/// A task as its row holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub progress: f64,
    pub details: String,
    pub steps: String,
    pub logs: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_by: String,
    pub instance: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub heartbeat_at: i64,
}

impl From<&Task> for Row {
    fn from(t: &Task) -> Self {
        Self {
            id: t.id.clone(),
            kind: t.kind.clone(),
            status: t.status.as_str().to_string(),
            progress: t.progress,
            details: t.details.to_string(),
            steps: serde_json::to_string(&t.steps).unwrap_or_else(|_| String::from("[]")),
            logs: serde_json::to_string(&t.logs).unwrap_or_else(|_| String::from("[]")),
            result: t.result.as_ref().map(Value::to_string),
            error: t.error.clone(),
            created_by: t.created_by.clone(),
            instance: t.instance.clone(),
            created_at: t.created_at.as_micros(),
            started_at: t.started_at.map(Timestamp::as_micros),
            finished_at: t.finished_at.map(Timestamp::as_micros),
            heartbeat_at: t.heartbeat_at.as_micros(),
        }
    }
}

impl Row {
    fn into_task(self) -> Task {
        Task {
            id: self.id,
            kind: self.kind,
            status: TaskStatus::parse(&self.status).unwrap_or(TaskStatus::Failed),
            progress: self.progress,
            details: serde_json::from_str(&self.details).unwrap_or(Value::Null),
            steps: serde_json::from_str(&self.steps).unwrap_or_default(),
            logs: serde_json::from_str(&self.logs).unwrap_or_default(),
            result: self.result.and_then(|r| serde_json::from_str(&r).ok()),
            error: self.error,
            created_by: self.created_by,
            instance: self.instance,
            created_at: Timestamp::from_micros(self.created_at),
            started_at: self.started_at.map(Timestamp::from_micros),
            finished_at: self.finished_at.map(Timestamp::from_micros),
            heartbeat_at: Timestamp::from_micros(self.heartbeat_at),
        }
    }
}

/// Where tasks are kept, for each dialect.
pub trait TaskStore: Send + Sync {
    fn insert<'a>(&'a self, row: &'a Row) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Rewrites a task that is still pending or running; `false` when it no longer is.
    fn update_live<'a>(&'a self, row: &'a Row) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Writes how a live task ended; `false` when it had already ended (cancelled).
    fn finish<'a>(&'a self, row: &'a Row) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Replaces the logs of a task whatever its status.
    fn append_logs<'a>(&'a self, id: &'a str, logs: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Row>, StorageError>>;
    /// Newest first.
    fn list<'a>(
        &'a self,
        status: Option<&'a str>,
        kind: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>>;
    /// Marks a live task cancelled at `at`; `false` when it was not live (or does not exist).
    fn cancel<'a>(&'a self, id: &'a str, at: i64) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Notes that `instance` is alive for every live task it runs.
    fn heartbeat<'a>(&'a self, instance: &'a str, at: i64) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Live tasks of other instances whose heartbeat is older than `stale_before`.
    fn orphans<'a>(&'a self, instance: &'a str, stale_before: i64) -> BoxFuture<'a, Result<Vec<Row>, StorageError>>;
    /// Moves a live task from instance `from` to `to`; `false` when another instance was faster.
    fn claim<'a>(
        &'a self,
        id: &'a str,
        from: &'a str,
        to: &'a str,
        at: i64,
    ) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Fails an orphaned task unless it changed meanwhile (`false` then).
    fn fail_orphan<'a>(&'a self, row: &'a Row) -> BoxFuture<'a, Result<bool, StorageError>>;
}

const COLUMNS: &str = "id, kind, status, progress, details, steps, logs, result, error, created_by, instance, \
    created_at, started_at, finished_at, heartbeat_at";
const LIVE: &str = "status IN ('pending', 'running')";

#[derive(Debug, Clone)]
pub struct SqliteTasks(pub sqlx::SqlitePool);

#[derive(Debug, Clone)]
pub struct PostgresTasks(pub sqlx::PgPool);

/// The SQL is the same on both backends; only the pool differs.
macro_rules! task_store {
    ($store:ty) => {
        impl TaskStore for $store {
            fn insert<'a>(&'a self, r: &'a Row) -> BoxFuture<'a, Result<(), StorageError>> {
                Box::pin(async move {
                    let sql = format!(
                        "INSERT INTO nexus_tasks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                         $12, $13, $14, $15)"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&r.id)
                        .bind(&r.kind)
                        .bind(&r.status)
                        .bind(r.progress)
                        .bind(&r.details)
                        .bind(&r.steps)
                        .bind(&r.logs)
                        .bind(&r.result)
                        .bind(&r.error)
                        .bind(&r.created_by)
                        .bind(&r.instance)
                        .bind(r.created_at)
                        .bind(r.started_at)
                        .bind(r.finished_at)
                        .bind(r.heartbeat_at)
                        .execute(&self.0)
                        .await?;
                    Ok(())
                })
            }

            fn update_live<'a>(&'a self, r: &'a Row) -> BoxFuture<'a, Result<bool, StorageError>> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE nexus_tasks SET status = $2, progress = $3, steps = $4, logs = $5, started_at = $6, \
                         heartbeat_at = $7, instance = $8 WHERE id = $1 AND {LIVE}"
                    );
                    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&r.id)
                        .bind(&r.status)
                        .bind(r.progress)
                        .bind(&r.steps)
                        .bind(&r.logs)
                        .bind(r.started_at)
                        .bind(r.heartbeat_at)
                        .bind(&r.instance)
                        .execute(&self.0)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn finish<'a>(&'a self, r: &'a Row) -> BoxFuture<'a, Result<bool, StorageError>> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE nexus_tasks SET status = $2, progress = $3, steps = $4, logs = $5, result = $6, \
                         error = $7, finished_at = $8, heartbeat_at = $9 WHERE id = $1 AND {LIVE}"
                    );
                    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&r.id)
                        .bind(&r.status)
                        .bind(r.progress)
                        .bind(&r.steps)
                        .bind(&r.logs)
                        .bind(&r.result)
                        .bind(&r.error)
                        .bind(r.finished_at)
                        .bind(r.heartbeat_at)
                        .execute(&self.0)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn append_logs<'a>(&'a self, id: &'a str, logs: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
                Box::pin(async move {
                    sqlx::query("UPDATE nexus_tasks SET logs = $2 WHERE id = $1")
                        .bind(id)
                        .bind(logs)
                        .execute(&self.0)
                        .await?;
                    Ok(())
                })
            }

            fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Row>, StorageError>> {
                Box::pin(async move {
                    let sql = format!("SELECT {COLUMNS} FROM nexus_tasks WHERE id = $1");
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.0).await?)
                })
            }

            fn list<'a>(
                &'a self,
                status: Option<&'a str>,
                kind: Option<&'a str>,
                limit: i64,
            ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM nexus_tasks WHERE ($1 IS NULL OR status = $1) AND \
                         ($2 IS NULL OR kind = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
                    );
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(status)
                        .bind(kind)
                        .bind(limit)
                        .fetch_all(&self.0)
                        .await?)
                })
            }

            fn cancel<'a>(&'a self, id: &'a str, at: i64) -> BoxFuture<'a, Result<bool, StorageError>> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE nexus_tasks SET status = 'cancelled', finished_at = $2 WHERE id = $1 AND {LIVE}"
                    );
                    let done = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(at).execute(&self.0).await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn heartbeat<'a>(&'a self, instance: &'a str, at: i64) -> BoxFuture<'a, Result<(), StorageError>> {
                Box::pin(async move {
                    let sql = format!("UPDATE nexus_tasks SET heartbeat_at = $2 WHERE instance = $1 AND {LIVE}");
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(instance).bind(at).execute(&self.0).await?;
                    Ok(())
                })
            }

            fn orphans<'a>(
                &'a self,
                instance: &'a str,
                stale_before: i64,
            ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM nexus_tasks WHERE {LIVE} AND instance <> $1 AND heartbeat_at < $2 \
                         ORDER BY created_at LIMIT 1000"
                    );
                    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(instance)
                        .bind(stale_before)
                        .fetch_all(&self.0)
                        .await?)
                })
            }

            fn claim<'a>(
                &'a self,
                id: &'a str,
                from: &'a str,
                to: &'a str,
                at: i64,
            ) -> BoxFuture<'a, Result<bool, StorageError>> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE nexus_tasks SET instance = $3, heartbeat_at = $4 WHERE id = $1 AND instance = $2 \
                         AND {LIVE}"
                    );
                    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .bind(from)
                        .bind(to)
                        .bind(at)
                        .execute(&self.0)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            }

            fn fail_orphan<'a>(&'a self, r: &'a Row) -> BoxFuture<'a, Result<bool, StorageError>> {
                Box::pin(async move {
                    // Only if nobody claimed it since it was read as orphaned.
                    let sql = format!(
                        "UPDATE nexus_tasks SET status = $2, logs = $3, error = $4, finished_at = $5 \
                         WHERE id = $1 AND instance = $6 AND {LIVE}"
                    );
                    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&r.id)
                        .bind(&r.status)
                        .bind(&r.logs)
                        .bind(&r.error)
                        .bind(r.finished_at)
                        .bind(&r.instance)
                        .execute(&self.0)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            }
        }
    };
}

task_store!(SqliteTasks);
task_store!(PostgresTasks);

/// The task store for `db`'s dialect.
pub fn store(db: &Db) -> Box<dyn TaskStore> {
    match db {
        Db::Sqlite(pool) => Box::new(SqliteTasks(pool.clone())),
        Db::Postgres(pool) => Box::new(PostgresTasks(pool.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimated_completion_scales_elapsed_time_by_progress() {
        let start = Timestamp::from_micros(1_000_000_000);
        let task = Task {
            id: "t".into(),
            kind: "k".into(),
            status: TaskStatus::Running,
            progress: 0.25,
            details: Value::Null,
            steps: Vec::new(),
            logs: Vec::new(),
            result: None,
            error: None,
            created_by: "u".into(),
            instance: "i".into(),
            created_at: start,
            started_at: Some(start),
            finished_at: None,
            heartbeat_at: start,
        };
        // A quarter done after 10 s: 40 s in all.
        let eta = task.estimated_completion(start.add_seconds(10));
        assert_eq!(eta, Some(start.add_seconds(40)));
        let done = Task { status: TaskStatus::Completed, ..task };
        assert_eq!(done.estimated_completion(start.add_seconds(10)), None);
    }
}
