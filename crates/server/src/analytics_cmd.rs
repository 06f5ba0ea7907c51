//! `nexus analytics import|export`: events in and out as JSON lines, against the configured
//! database, through the same service (validation, group commit) the API uses.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::Subcommand;
use nexus_analytics::Analytics;
use nexus_analytics::event::parse_time;
use nexus_identity::{Identity, Principal};
use nexus_kernel::clock::Timestamp;
use nexus_kernel::config::Config;
use nexus_web::ClientMeta;
use serde_json::value::RawValue;

/// Lines sent to the service together (a request's worth).
const IMPORT_BATCH: usize = 1000;
/// Refused lines shown on stderr at most.
const SHOWN_ERRORS: usize = 20;

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Import events from FILE, one JSON event per line, with a progress bar. Events with an
    /// `event_id` already stored are skipped, so an interrupted import can be run again.
    Import { file: PathBuf },
    /// Write the events with FROM <= timestamp < TO to stdout, one JSON object per line,
    /// oldest first.
    Export {
        /// ISO 8601; default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// ISO 8601; default: now.
        #[arg(long)]
        to: Option<String>,
    },
}

/// Runs `command`; the error is a message for the operator.
pub async fn run(config: Config, command: AnalyticsCommand) -> Result<(), String> {
    let kernel = crate::plugins::open_kernel(config).await.map_err(|e| e.to_string())?;
    let identity = Identity::start(kernel.clone()).await.map_err(|e| e.to_string())?;
    let analytics = Analytics::new(kernel.clone(), identity);
    let result = match command {
        AnalyticsCommand::Import { file } => import(&analytics, &file).await,
        AnalyticsCommand::Export { from, to } => export(&analytics, from.as_deref(), to.as_deref()).await,
    };
    kernel.db.close().await;
    result
}

async fn import(analytics: &Analytics, file: &std::path::Path) -> Result<(), String> {
    let open_err = |e: std::io::Error| format!("cannot read {}: {e}", file.display());
    let size = std::fs::metadata(file).map_err(open_err)?.len();
    let reader = std::io::BufReader::new(std::fs::File::open(file).map_err(open_err)?);
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let system = Principal::system();
    let client = ClientMeta { user_agent: format!("nexus-cli/{}", nexus_kernel::VERSION), ..ClientMeta::default() };
    let (mut accepted, mut duplicates, mut refused) = (0usize, 0usize, 0usize);
    let mut shown = 0;
    let mut report = |line: usize, message: String, bar: &indicatif::ProgressBar| {
        if shown < SHOWN_ERRORS {
            bar.suspend(|| eprintln!("line {line}: {message}"));
            shown += 1;
        }
    };
    let mut lines = reader.lines().enumerate();
    loop {
        // (line number, text) of the next batch of non-empty lines.
        let mut batch: Vec<(usize, String)> = Vec::with_capacity(IMPORT_BATCH);
        for (i, line) in lines.by_ref() {
            let line = line.map_err(open_err)?;
            bar.inc(u64::try_from(line.len() + 1).unwrap_or(0));
            if !line.trim().is_empty() {
                batch.push((i + 1, line));
            }
            if batch.len() == IMPORT_BATCH {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        let mut raws: Vec<&RawValue> = Vec::with_capacity(batch.len());
        let mut numbers = Vec::with_capacity(batch.len());
        for (number, text) in &batch {
            match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) => {
                    raws.push(raw);
                    numbers.push(*number);
                }
                Err(e) => {
                    refused += 1;
                    report(*number, format!("not JSON: {e}"), &bar);
                }
            }
        }
        let done = analytics.ingest_events(&system, &raws, 0, &client).await.map_err(|e| e.to_string())?;
        for o in &done.outcomes {
            match o {
                nexus_analytics::service::Outcome::Accepted { .. } => accepted += 1,
                nexus_analytics::service::Outcome::Duplicate { .. } => duplicates += 1,
            }
        }
        for e in done.errors {
            refused += 1;
            let line = numbers.get(e.index).copied().unwrap_or_default();
            report(line, format!("{}: {}", e.field, e.message), &bar);
        }
        bar.set_message(format!("{accepted} imported"));
    }
    bar.finish();
    println!("imported {accepted} events, {duplicates} duplicates skipped, {refused} refused");
    if refused > 0 { Err(format!("{refused} lines were refused")) } else { Ok(()) }
}

async fn export(analytics: &Analytics, from: Option<&str>, to: Option<&str>) -> Result<(), String> {
    let time = |name: &str, text: Option<&str>, default: Timestamp| match text {
        None => Ok(default),
        Some(t) => parse_time(t).ok_or_else(|| format!("--{name}: `{t}` is not an ISO 8601 time")),
    };
    let from = time("from", from, Timestamp::from_micros(i64::MIN / 2))?;
    let to = time("to", to, Timestamp::now().add_seconds(1))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let n = analytics
        .export(&Principal::system(), from, to, 1000, |row| {
            let view = nexus_analytics::view::EventView::from(row.clone());
            serde_json::to_writer(&mut out, &view)?;
            out.write_all(b"\n")
        })
        .await
        .map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    eprintln!("exported {n} events");
    Ok(())
}
