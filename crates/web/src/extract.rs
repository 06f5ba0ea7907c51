//! Extractors that turn bad input into a 4xx [`ApiError`] naming the field, instead of the
//! framework's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode, FieldError};

/// A JSON request body or response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::new(ErrorCode::PayloadTooLarge, "Request body exceeds the size limit")
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "Request body exceeds the size limit")
        }
        _ => ApiError::invalid_field("body", "The request body could not be read"),
    }
}

/// Parses `bytes` as JSON into `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_field("body", "The request body is empty; a JSON value is expected"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => field_error(&path, &inner.to_string()),
            _ => ApiError::invalid_field(
                "body",
                format!("Malformed JSON at line {} column {}", inner.line(), inner.column()),
            ),
        }
    })?;
    de.end().map_err(|_| ApiError::invalid_field("body", "Unexpected data after the JSON value"))?;
    Ok(value)
}

/// Builds the 400 for a deserialisation error at `path` ("." is the root).
fn field_error(path: &str, message: &str) -> ApiError {
    // serde reports a missing or unknown field at its parent, naming the field in the message;
    // clients want the field itself.
    let message = message.split(" at line ").next().unwrap_or(message);
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match (path, named) {
        (".", Some(name)) | ("", Some(name)) => name.to_string(),
        // An unknown field is reported at its own path; a missing one at its parent's.
        (path, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => path.to_string(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (".", None) | ("", None) => String::from("body"),
        (path, None) => path.to_string(),
    };
    let message = match named {
        Some(_) if message.starts_with("missing") => String::from("This field is required"),
        Some(_) => message.split(", expected").next().unwrap_or(message).to_string(),
        None => message.to_string(),
    };
    ApiError::invalid_fields(vec![FieldError::new(field, message)])
}

/// Query-string parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(Query)
    }
}

/// Parses a query string into `T`, naming the offending parameter on failure.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        field_error(&path, &message)
    })
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// Path parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::invalid_field("path", rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Signup {
        email: String,
        age: u8,
    }

    fn detail(err: &ApiError) -> (&str, &str) {
        err.details.first().map(|d| (d.field.as_str(), d.message.as_str())).unwrap_or(("", ""))
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_json::<Signup>(br#"{"email": 5, "age": 3}"#).err();
        assert_eq!(err.as_ref().map(|e| detail(e).0), Some("email"));
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_json::<Signup>(br#"{"age": 3}"#).err();
        assert_eq!(err.as_ref().map(detail), Some(("email", "This field is required")));
    }

    #[test]
    fn malformed_json_points_at_the_body() {
        let err = parse_json::<Signup>(br#"{"age": "#).err();
        assert_eq!(err.as_ref().map(|e| detail(e).0), Some("body"));
    }

    #[test]
    fn bad_query_number_names_the_parameter() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Page {
            limit: Option<u32>,
        }
        let err = parse_query::<Page>("limit=abc").err();
        assert_eq!(err.as_ref().map(|e| detail(e).0), Some("limit"));
    }
}
