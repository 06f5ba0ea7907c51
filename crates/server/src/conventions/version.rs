//! API versions of the framework surface: `/api/v2/...` is the same API as `/api/...`;
//! `X-API-Version` and `Accept: application/vnd.nexus.v2+json` select a version too; a
//! deprecated version is answered with `Deprecation` (and `Sunset`) headers; an unknown or
//! sunset one gets a 400 naming the versions that are served.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Uri};
use axum::response::Response;
use nexus_kernel::Kernel;
use nexus_kernel::config::ApiVersions;
use nexus_web::{ApiError, Dialect, FieldError, Json};
use serde::Serialize;
use time::Date;
use time::macros::format_description;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What a requested version turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Current,
    Deprecated { sunset: Option<Date> },
    Refused(String),
}

/// `2` → `2.0`, `v2.1` → `2.1`; `None` unless it looks like a version number.
fn normalize(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    if t.is_empty()
        || !t.starts_with(|c: char| c.is_ascii_digit())
        || !t.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return None;
    }
    Some(if t.contains('.') { t.to_string() } else { format!("{t}.0") })
}

fn sunset_date(v: &ApiVersions, version: &str) -> Option<Date> {
    let text = v.sunset_dates.get(version)?;
    Date::parse(text, format_description!("[year]-[month]-[day]")).ok()
}

/// The versions still answered today.
fn served(v: &ApiVersions, today: Date) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for version in v.supported.iter().chain(&v.deprecated).chain(std::iter::once(&v.current)) {
        let sunset = sunset_date(v, version).is_some_and(|d| d < today);
        if !sunset && !out.contains(version) {
            out.push(version.clone());
        }
    }
    out
}

fn status(v: &ApiVersions, version: &str, today: Date) -> Status {
    if version == v.current {
        return Status::Current;
    }
    let listed = v.supported.iter().chain(&v.deprecated).any(|s| s == version);
    let sunset = sunset_date(v, version);
    if let Some(date) = sunset.filter(|d| *d < today) {
        return Status::Refused(format!("API version {version} was sunset on {date}"));
    }
    if !listed {
        return Status::Refused(format!("API version {version} is not supported"));
    }
    if sunset.is_some() || v.deprecated.iter().any(|d| d == version) {
        Status::Deprecated { sunset }
    } else {
        Status::Current
    }
}

/// The version a framework request was served in, for the answer's headers.
#[derive(Debug)]
pub struct Negotiated {
    version: HeaderValue,
    deprecated: Option<Option<Date>>,
}

/// Before routing: resolves the version of a framework request and strips `/vN` from its
/// path. `Ok(None)` for other surfaces; `Err` is the 400 for an unknown or sunset version.
pub fn resolve(kernel: &Kernel, req: &mut Request) -> Result<Option<Negotiated>, ApiError> {
    let path = req.uri().path();
    if !(path == "/api" || path.starts_with("/api/")) || Dialect::for_path(path) != Dialect::Framework {
        return Ok(None);
    }
    let versions = &kernel.config.api.versions;
    let mut requested = None;
    if let Some(rest) = path.strip_prefix("/api/") {
        let (segment, tail) = rest.split_once('/').map_or((rest, ""), |(s, t)| (s, t));
        if segment.starts_with(['v', 'V'])
            && let Some(version) = normalize(segment)
        {
            let new_path = if tail.is_empty() { String::from("/api") } else { format!("/api/{tail}") };
            let new_uri = match req.uri().query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
            if let Ok(uri) = new_uri.parse::<Uri>() {
                *req.uri_mut() = uri;
            }
            requested = Some(version);
        }
    }
    let headers = req.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if requested.is_none() {
        requested = header("x-api-version").map(|v| normalize(v).unwrap_or_else(|| v.to_owned()));
    }
    if requested.is_none() {
        requested = header("accept").and_then(|accept| {
            accept.split(',').find_map(|item| {
                let media = item.split(';').next().unwrap_or("").trim();
                let v = media.strip_prefix("application/vnd.nexus.")?.strip_suffix("+json")?;
                Some(normalize(v).unwrap_or_else(|| v.to_string()))
            })
        });
    }
    let Some(version) = requested.filter(|v| *v != versions.current) else {
        // The common case: no version asked for, or the current one.
        return Ok(Some(Negotiated {
            version: HeaderValue::from_str(&versions.current).map_err(|_| bad_current())?,
            deprecated: None,
        }));
    };
    let today = time::OffsetDateTime::now_utc().date();
    let deprecated = match status(versions, &version, today) {
        Status::Refused(reason) => {
            let supported = served(versions, today);
            let message = format!("{reason}; supported versions: {}", supported.join(", "));
            return Err(ApiError::invalid_fields(vec![FieldError::new("version", message)])
                .with_extra("supported_versions", supported));
        }
        Status::Current => None,
        Status::Deprecated { sunset } => Some(sunset),
    };
    let version = HeaderValue::from_str(&version)
        .map_err(|_| ApiError::invalid_fields(vec![FieldError::new("version", "not a version number")]))?;
    Ok(Some(Negotiated { version, deprecated }))
}

fn bad_current() -> ApiError {
    ApiError::internal("api.versions.current is not a valid header value")
}

impl Negotiated {
    /// Adds `X-API-Version`, and `Deprecation`/`Sunset` for a deprecated version.
    pub fn apply(self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.insert(HeaderName::from_static("x-api-version"), self.version);
        if let Some(sunset) = self.deprecated {
            headers.insert(HeaderName::from_static("deprecation"), HeaderValue::from_static("true"));
            let http_date = sunset.and_then(|d| {
                d.format(format_description!("[weekday repr:short], [day] [month repr:short] [year] 23:59:59 GMT")).ok()
            });
            if let Some(value) = http_date.and_then(|d| HeaderValue::from_str(&d).ok()) {
                headers.insert(HeaderName::from_static("sunset"), value);
            }
        }
    }
}

/// `GET /api/versions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionInfo {
    pub current: String,
    pub supported: Vec<String>,
    pub deprecated: Vec<String>,
    pub sunset_dates: std::collections::BTreeMap<String, String>,
}

/// The framework API's versions.
#[utoipa::path(get, path = "/api/versions", tag = "versions", responses((status = 200, body = VersionInfo)))]
async fn versions(State(kernel): State<Arc<Kernel>>) -> Json<VersionInfo> {
    let v = &kernel.config.api.versions;
    Json(VersionInfo {
        current: v.current.clone(),
        supported: v.supported.clone(),
        deprecated: v.deprecated.clone(),
        sunset_dates: v.sunset_dates.clone(),
    })
}

pub fn routes(kernel: Arc<Kernel>) -> nexus_web::Routes {
    OpenApiRouter::new().routes(routes!(versions)).with_state(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_judged_by_date() {
        let v = ApiVersions::default();
        let day = |s: &str| Date::parse(s, format_description!("[year]-[month]-[day]")).unwrap_or(Date::MIN);
        assert_eq!(normalize("2"), Some("2.0".into()));
        assert_eq!(normalize("v1.1"), Some("1.1".into()));
        assert_eq!(normalize("ersions"), None);
        assert_eq!(status(&v, "2.0", day("2026-01-01")), Status::Current);
        assert!(matches!(status(&v, "1.1", day("2025-01-01")), Status::Deprecated { sunset: Some(_) }));
        assert!(matches!(status(&v, "1.1", day("2026-01-01")), Status::Refused(_)));
        assert!(matches!(status(&v, "0.9", day("2026-01-01")), Status::Deprecated { sunset: None }));
        assert!(matches!(status(&v, "3.0", day("2026-01-01")), Status::Refused(_)));
        assert_eq!(served(&v, day("2026-01-01")), vec!["2.0".to_string(), "0.9".to_string()]);
    }
}
