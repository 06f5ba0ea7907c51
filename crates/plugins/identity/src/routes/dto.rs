//! Shapes shared by several surfaces.

use nexus_kernel::clock::Timestamp;
use nexus_web::FieldError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::IdentityError;
use crate::service::{ApiKey, Session, User};

/// A user as the framework and core v2 surfaces show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// `active`, `inactive` or `suspended`
    pub status: String,
    pub metadata: Value,
    pub created_at: String,
    pub updated_at: String,
    pub last_login: Option<String>,
}

impl UserView {
    pub fn new(u: User, permissions: Option<Vec<String>>) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            roles: u.roles,
            permissions,
            status: u.status,
            metadata: u.metadata,
            created_at: u.created_at.to_rfc3339(),
            updated_at: u.updated_at.to_rfc3339(),
            last_login: u.last_login.map(Timestamp::to_rfc3339),
        }
    }
}

/// The user part of a login response.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub roles: Vec<String>,
}

impl From<&User> for LoginUser {
    fn from(u: &User) -> Self {
        Self { id: u.id.clone(), username: u.username.clone(), email: u.email.clone(), roles: u.roles.clone() }
    }
}

/// What a password login or a refresh answers on the core v2 and media surfaces: the union of
/// the fields their seeds document.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginTokens {
    pub access_token: String,
    /// Single use: spending it again revokes the whole session.
    pub refresh_token: String,
    /// `bearer` (core v2) or `Bearer` (media), as each seed writes it.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub expires_at: String,
    pub user: LoginUser,
}

impl LoginTokens {
    pub fn new(s: Session, token_type: &'static str) -> Self {
        Self {
            user: LoginUser::from(&s.user),
            access_token: s.access_token,
            refresh_token: s.refresh_token,
            token_type,
            expires_in: s.expires_in,
            expires_at: s.expires_at.to_rfc3339(),
        }
    }
}

/// An API key as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used: Option<String>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes,
            created_at: k.created_at.to_rfc3339(),
            expires_at: k.expires_at.map(Timestamp::to_rfc3339),
            last_used: k.last_used.map(Timestamp::to_rfc3339),
        }
    }
}

/// Parses an optional RFC 3339 field, naming it when it is not one.
pub fn parse_time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, crate::IdentityError> {
    match value {
        None => Ok(None),
        Some(text) => Timestamp::parse_rfc3339(text)
            .map(Some)
            .ok_or_else(|| crate::IdentityError::field(field, "Must be an RFC 3339 timestamp")),
    }
}

/// Checks a required text field: not blank, at most `max_chars` characters. Adds to `errors`.
pub fn check_text(field: &str, value: &str, max_chars: usize, errors: &mut Vec<FieldError>) {
    if value.trim().is_empty() {
        errors.push(FieldError::new(field, "This field is required"));
    } else if value.chars().count() > max_chars {
        errors.push(FieldError::new(field, format!("Must be at most {max_chars} characters")));
    }
}

/// Checks an optional text field: absent is fine, present is at most `max_chars` characters.
pub fn check_optional_text(field: &str, value: Option<&str>, max_chars: usize, errors: &mut Vec<FieldError>) {
    if value.is_some_and(|v| v.chars().count() > max_chars) {
        errors.push(FieldError::new(field, format!("Must be at most {max_chars} characters")));
    }
}

/// `Err` naming every field in `errors`, if there are any.
pub fn reject(errors: Vec<FieldError>) -> Result<(), IdentityError> {
    if errors.is_empty() { Ok(()) } else { Err(IdentityError::Invalid(errors)) }
}

/// A boolean query parameter: `true`/`false`/`1`/`0`/`yes`/`no` in any case; absent or empty is
/// `false`.
pub fn parse_flag(field: &str, value: Option<&str>) -> Result<bool, IdentityError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(_) => Err(IdentityError::field(field, "Must be true or false")),
    }
}

/// Renames the fields a domain validation error names, for a surface whose request body calls
/// them differently (the media surface's `permissions` are the domain's `scopes`).
pub fn rename_fields(err: IdentityError, renames: &[(&str, &str)]) -> IdentityError {
    match err {
        IdentityError::Invalid(details) => IdentityError::Invalid(
            details
                .into_iter()
                .map(|d| match renames.iter().find(|(from, _)| *from == d.field) {
                    Some((_, to)) => FieldError::new(*to, d.message),
                    None => d,
                })
                .collect(),
        ),
        other => other,
    }
}
