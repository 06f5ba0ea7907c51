//! Duration, streams and codecs of a media file, read by `ffprobe` (Debian's `ffmpeg`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Ticks per second in Jellyfin's `RunTimeTicks`.
pub const TICKS_PER_SECOND: f64 = 10_000_000.0;
/// A file ffprobe takes longer than this for is listed without its streams.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// One stream, in Jellyfin's `MediaStream` spelling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Stream {
    pub index: i64,
    /// `Video`, `Audio` or `Subtitle`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub codec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    pub runtime_ticks: Option<i64>,
    pub streams: Vec<Stream>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The program is not installed (or not where configured).
    #[error("`{0}` is not installed; durations and streams are not read")]
    Missing(String),
    #[error("ffprobe failed on {0}")]
    Failed(String),
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    streams: Vec<RawStream>,
}

#[derive(Deserialize)]
struct Format {
    duration: Option<String>,
}

#[derive(Deserialize)]
struct RawStream {
    index: i64,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
    channels: Option<i64>,
    sample_rate: Option<String>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
}

/// Reads `path` with the `ffprobe` program `program`.
pub async fn probe(program: &str, path: &Path) -> Result<Probe, ProbeError> {
    let child = tokio::process::Command::new(program)
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let shown = path.display().to_string();
    let output = match tokio::time::timeout(PROBE_TIMEOUT, child).await {
        Err(_) => return Err(ProbeError::Failed(shown)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Err(ProbeError::Missing(program.to_string())),
        Ok(Err(_)) => return Err(ProbeError::Failed(shown)),
        Ok(Ok(o)) => o,
    };
    if !output.status.success() {
        return Err(ProbeError::Failed(shown));
    }
    let parsed: Output = serde_json::from_slice(&output.stdout).map_err(|_| ProbeError::Failed(shown))?;
    Ok(convert(parsed))
}

fn convert(o: Output) -> Probe {
    let runtime_ticks = o
        .format
        .and_then(|f| f.duration)
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
        // Durations are far below i64's range in ticks; `as` saturates anyway.
        .map(|d| (d * TICKS_PER_SECOND).round() as i64);
    let streams = o
        .streams
        .into_iter()
        .map(|s| Stream {
            index: s.index,
            kind: match s.codec_type.as_deref() {
                Some("video") => "Video",
                Some("audio") => "Audio",
                Some("subtitle") => "Subtitle",
                _ => "Data",
            }
            .to_string(),
            codec: s.codec_name.unwrap_or_default(),
            width: s.width,
            height: s.height,
            channels: s.channels,
            sample_rate: s.sample_rate.and_then(|r| r.parse().ok()),
            language: s.tags.get("language").cloned(),
        })
        .collect();
    Probe { runtime_ticks, streams }
}
