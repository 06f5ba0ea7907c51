//! Requests hyper refuses before any service runs, answered in the dialect of their path.
//!
//! hyper answers a request it cannot parse itself: 400 for a malformed request line or
//! header (a raw non-ASCII byte in the target, say), 431 when the head outgrows its read
//! buffer (about 400 KiB) or has more than 100 headers, 414 when the target is longer than
//! 65,534 bytes; the answer is a bare status line with no body, and hyper offers no hook to
//! change it. Raising hyper's limits would not help: there is always a larger head, and the
//! `http` crate's 65,534-byte bound on a URI is fixed. So the socket under hyper
//! (`connection::Socket`) recognises that answer as it is written (a `4xx` status line written
//! while no request is being served: hyper writes nothing else then) and writes this module's
//! instead, rendered from the first bytes of the refused request, which it keeps.
//!
//! Then it lingers: it stops writing and reads what the client still sends (the rest of a
//! 1 MB header, say) for up to [`LINGER`], so that closing the socket does not reset the
//! connection before the client has read the answer.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::StatusCode;
use nexus_web::dialect::Dialect;
use nexus_web::edge::REQUEST_ID_HEADER;
use nexus_web::{ApiError, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long the rest of a refused request is read and discarded, at most.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it, at most.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// The answer to a refused request, being written, then the lingering after it.
pub(super) struct Rejection {
    answer: Vec<u8>,
    written: usize,
    shut: bool,
    drained: usize,
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Rejection {
    /// How many of a request's first bytes are kept to find its path's dialect: the method,
    /// and the target up to past the longest prefix of [`Dialect::for_path`], also in
    /// absolute form (`http://host:port/api/media/…`).
    pub(super) const HEAD_PREFIX: usize = 160;

    /// The answer to write instead of `hyper_answer`, if that is hyper's bodiless answer to a
    /// request it refused, whose first bytes are `request`.
    pub(super) fn replace(hyper_answer: &[u8], request: &[u8]) -> Option<Self> {
        let status = refused_status(hyper_answer)?;
        let path = target_path(request);
        let path = String::from_utf8_lossy(path);
        let error = match status {
            StatusCode::URI_TOO_LONG => {
                ApiError::new(ErrorCode::ValidationError, "The request URI is longer than 65,534 bytes")
            }
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                ApiError::new(ErrorCode::ValidationError, "The request's headers are too large or too many")
            }
            _ => ApiError::new(
                ErrorCode::ValidationError,
                "The request line or a header is malformed (a raw non-ASCII byte in the URI must be percent-encoded)",
            ),
        };
        let mut error = error;
        error.status = status;
        let request_id = nexus_kernel::id::request_id();
        let dialect = Dialect::for_path(&path);
        tracing::debug!(status = status.as_u16(), ?dialect, "answered a request hyper refused");
        let body = serde_json::to_vec(&dialect.body(&error, &request_id)).ok()?;
        let mut answer = Vec::with_capacity(body.len() + 256);
        answer.extend_from_slice(
            format!(
                "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}: {}\r\nconnection: close\r\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error"),
                body.len(),
                REQUEST_ID_HEADER,
                request_id,
            )
            .as_bytes(),
        );
        if let Some(date) = header_line(hyper_answer, b"date:") {
            answer.extend_from_slice(date);
        }
        answer.extend_from_slice(b"\r\n");
        answer.extend_from_slice(&body);
        Some(Self { answer, written: 0, shut: false, drained: 0, linger: None })
    }

    /// Writes the answer, shuts the sending side, and reads the rest of the request until the
    /// client closes, or [`LINGER`] or [`LINGER_BYTES`] is reached.
    pub(super) fn poll_send(&mut self, tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some(rest) = self.answer.get(self.written..).filter(|rest| !rest.is_empty()) {
            let n = ready!(Pin::new(&mut *tcp).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if !self.shut {
            ready!(Pin::new(&mut *tcp).poll_shutdown(cx))?;
            self.shut = true;
        }
        let linger = self.linger.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
        let mut scratch = [0u8; 8192];
        while self.drained < LINGER_BYTES {
            if linger.as_mut().poll(cx).is_ready() {
                break;
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *tcp).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => self.drained += buf.filled().len(),
                Poll::Ready(_) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.drained = LINGER_BYTES;
        Poll::Ready(Ok(()))
    }
}

/// The status of `answer` if it is one hyper writes for a request it refused: 400, 414 or 431
/// with an empty body.
fn refused_status(answer: &[u8]) -> Option<StatusCode> {
    let rest = answer.strip_prefix(b"HTTP/1.1 ").or_else(|| answer.strip_prefix(b"HTTP/1.0 "))?;
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    let refusal = matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::URI_TOO_LONG | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    (refusal && header_line(answer, b"content-length:") == Some(b"content-length: 0\r\n")).then_some(status)
}

/// The path of the request target at the start of `request` (`GET /api/v1/x HTTP/1.1`),
/// also when the target is in absolute form; as much of it as `request` holds.
fn target_path(request: &[u8]) -> &[u8] {
    let after_method = request.iter().position(|&b| b == b' ').and_then(|i| request.get(i + 1..)).unwrap_or_default();
    let end = after_method.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(after_method.len());
    let target = after_method.get(..end).unwrap_or_default();
    if target.starts_with(b"/") {
        return target;
    }
    // Absolute form: the path starts at the first `/` after `scheme://`.
    let after_scheme =
        target.windows(3).position(|w| w == b"://").and_then(|i| target.get(i + 3..)).unwrap_or_default();
    after_scheme.iter().position(|&b| b == b'/').and_then(|i| after_scheme.get(i..)).unwrap_or_default()
}

/// The whole line (with its CRLF) of the header `name` (lowercase, with its colon) in `head`.
fn header_line<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let start = head.windows(name.len() + 2).position(|w| w.starts_with(b"\r\n") && w.ends_with(name))? + 2;
    let line = head.get(start..)?;
    let end = line.windows(2).position(|w| w == b"\r\n")? + 2;
    line.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_found_in_origin_and_absolute_form() {
        assert_eq!(target_path(b"GET /api/v1/x HTTP/1.1\r\n"), b"/api/v1/x");
        assert_eq!(target_path(b"GET /api/media/Items?q=\xff"), b"/api/media/Items?q=\xff");
        assert_eq!(target_path(b"GET http://h:80/api/v1/x HTTP/1.1"), b"/api/v1/x");
        assert_eq!(target_path(b"GET"), b"");
    }

    #[test]
    fn only_hypers_refusals_are_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 19:00:00 GMT\r\n\r\n";
        let Some(rejection) = Rejection::replace(hyper, b"GET /api/v1/secrets HTTP/1.1\r\nX: ") else {
            panic!("not replaced")
        };
        let text = String::from_utf8_lossy(&rejection.answer);
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("date: Wed, 02 Dec 2026 19:00:00 GMT\r\n"), "{text}");
        assert!(text.contains("\"success\":false"), "{text}");
        assert!(
            Rejection::replace(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", b"GET / HTTP/1.1").is_none()
        );
        // The application's own 400s carry a body.
        let app = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 90\r\n\r\n{";
        assert!(Rejection::replace(app, b"POST /v2/auth/refresh HTTP/1.1").is_none());
        assert!(Rejection::replace(b"HTTP/1.1 200 OK\r\n\r\n", b"GET / HTTP/1.1").is_none());
    }
}
