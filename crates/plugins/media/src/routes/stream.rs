//! `Videos/{id}/stream[.{container}]` and `Audio/{id}/stream[.{container}]` with
//! `static=true`: the file itself, with byte ranges (`Range`, `If-Range`), `HEAD` and the
//! container's MIME type. Anything else would need a transcode, which Nexus does not do.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use nexus_identity::Auth;
use nexus_web::ApiError;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::params::{IdAnd, Params};
use crate::{Media, MediaError};

/// Read size of a streamed body.
const CHUNK: usize = 256 * 1024;

#[utoipa::path(get, path = "/api/media/Videos/{itemId}/stream", tag = "media", summary = "The video file itself (static=true; also stream.{container}), with byte ranges; HEAD too", params(("itemId" = String, Path, description = "Item id (32 hex digits)"), ("static" = bool, Query, description = "Must be true: transcoding is not supported"), ("MediaSourceId" = Option<String>, Query, description = "Which version"), ("Range" = Option<String>, Header, description = "bytes=start-end")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The whole file"), (status = 206, description = "The requested range, with Content-Range"), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item"), (status = 416, description = "Range not satisfiable"), (status = 400, description = "Transcoding requested (static is not true)")))]
pub async fn video(
    state: State<Arc<Media>>,
    auth: Auth,
    method: Method,
    path: IdAnd,
    query: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(state, auth, method, path, query, headers).await
}

#[utoipa::path(get, path = "/api/media/Audio/{itemId}/stream", tag = "media", summary = "The audio file itself (static=true; also stream.{container}), with byte ranges; HEAD too", params(("itemId" = String, Path, description = "Item id (32 hex digits)"), ("static" = bool, Query, description = "Must be true: transcoding is not supported"), ("Range" = Option<String>, Header, description = "bytes=start-end")), security(("bearer" = []), ("api_key" = [])), responses((status = 200, description = "The whole file"), (status = 206, description = "The requested range, with Content-Range"), (status = 401, description = "Not authenticated"), (status = 404, description = "No such item"), (status = 416, description = "Range not satisfiable"), (status = 400, description = "Transcoding requested (static is not true)")))]
pub async fn audio(
    state: State<Arc<Media>>,
    auth: Auth,
    method: Method,
    path: IdAnd,
    query: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(state, auth, method, path, query, headers).await
}

/// The MIME type of a container.
pub fn mime(container: &str) -> &'static str {
    match container {
        "mkv" => "video/x-matroska",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "wmv" => "video/x-ms-wmv",
        "ts" | "m2ts" => "video/mp2t",
        "mpg" | "mpeg" => "video/mpeg",
        "flv" => "video/x-flv",
        "ogv" => "video/ogg",
        "3gp" => "video/3gpp",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "wav" => "audio/wav",
        "wma" => "audio/x-ms-wma",
        "aiff" => "audio/aiff",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        _ => "application/octet-stream",
    }
}

/// A byte range request, resolved against the file's size.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// No (usable) range: the whole file.
    Full,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Nothing of the file is in the range: 416.
    Unsatisfiable,
}

/// Resolves a `Range` header (`bytes=0-99`, `bytes=100-`, `bytes=-100`) against `size`.
/// Several ranges are answered with the whole file, as RFC 9110 allows.
pub fn resolve(header: &str, size: u64) -> Ranged {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Ranged::Unsatisfiable };
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Ranged::Unsatisfiable };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match parse(b) {
            Some(n) if n > 0 && size > 0 => Ranged::Part { start: size.saturating_sub(n), end: size - 1 },
            _ => Ranged::Unsatisfiable,
        },
        // `a-`: from a to the end.
        (false, true) => match parse(a) {
            Some(start) if start < size => Ranged::Part { start, end: size - 1 },
            _ => Ranged::Unsatisfiable,
        },
        (false, false) => match (parse(a), parse(b)) {
            (Some(start), Some(end)) if start <= end && start < size => Ranged::Part { start, end: end.min(size - 1) },
            _ => Ranged::Unsatisfiable,
        },
        (true, true) => Ranged::Unsatisfiable,
    }
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn serve(
    State(media): State<Arc<Media>>,
    Auth(p): Auth,
    method: Method,
    IdAnd(id, file): IdAnd,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if file != "stream" && !file.starts_with("stream.") {
        return Err(ApiError::not_found("Not found"));
    }
    let params = Params::parse(raw.as_deref())?;
    if params.bool("Static")? != Some(true) {
        return Err(MediaError::TranscodingUnsupported.into());
    }
    let source = params.get("MediaSourceId");
    let servable = media.servable(&p, &id, source)?;
    let mut f = tokio::fs::File::open(&servable.path).await.map_err(|_| ApiError::not_found("Media file not found"))?;
    let meta = f.metadata().await.map_err(|_| ApiError::not_found("Media file not found"))?;
    let size = meta.len();
    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let etag =
        format!("\"{:x}-{:x}\"", size, modified.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis());
    let last_modified = httpdate::fmt_http_date(modified);

    let mut ranged = match headers.get(RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => resolve(r, size),
        None => Ranged::Full,
    };
    // `If-Range`: the range only holds for the version the client has.
    if let Some(cond) = headers.get(IF_RANGE).and_then(|v| v.to_str().ok()) {
        let same = if cond.starts_with('"') || cond.starts_with("W/") {
            cond == etag
        } else {
            httpdate::parse_http_date(cond).is_ok_and(|t| {
                t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok()
                    == modified.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok()
            })
        };
        if !same {
            ranged = Ranged::Full;
        }
    }
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(mime(&servable.container)));
    h.insert(ETAG, header(&etag));
    h.insert(LAST_MODIFIED, header(&last_modified));
    let (start, len) = match ranged {
        Ranged::Unsatisfiable => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut().insert(CONTENT_RANGE, header(&format!("bytes */{size}")));
            r.headers_mut().insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(r);
        }
        Ranged::Full => (0, size),
        Ranged::Part { start, end } => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            response.headers_mut().insert(CONTENT_RANGE, header(&format!("bytes {start}-{end}/{size}")));
            (start, end - start + 1)
        }
    };
    response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    media.count_streamed(len);
    if method == Method::HEAD {
        return Ok(response);
    }
    if start > 0 {
        f.seek(std::io::SeekFrom::Start(start)).await.map_err(ApiError::internal)?;
    }
    *response.body_mut() = Body::from_stream(ReaderStream::with_capacity(f.take(len), CHUNK));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        let part = |start, end| Ranged::Part { start, end };
        assert_eq!(resolve("bytes=0-99", 1000), part(0, 99));
        assert_eq!(resolve("bytes=100-", 1000), part(100, 999));
        assert_eq!(resolve("bytes=-100", 1000), part(900, 999));
        assert_eq!(resolve("bytes=-5000", 1000), part(0, 999));
        assert_eq!(resolve("bytes=900-5000", 1000), part(900, 999));
        assert_eq!(resolve("bytes=1000-", 1000), Ranged::Unsatisfiable);
        assert_eq!(resolve("bytes=5-1", 1000), Ranged::Unsatisfiable);
        assert_eq!(resolve("bytes=abc", 1000), Ranged::Unsatisfiable);
        assert_eq!(resolve("items=0-1", 1000), Ranged::Unsatisfiable);
        assert_eq!(resolve("bytes=0-1,5-6", 1000), Ranged::Full);
        assert_eq!(resolve("bytes=-0", 1000), Ranged::Unsatisfiable);
    }
}
