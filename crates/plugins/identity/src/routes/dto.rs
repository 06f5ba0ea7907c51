//! Shapes shared by several surfaces.

use nexus_kernel::clock::Timestamp;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::service::{ApiKey, User};

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
