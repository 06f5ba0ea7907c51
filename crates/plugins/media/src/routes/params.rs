//! Jellyfin's query parameters: names in any case (`ParentId`, `parentId`), lists comma
//! separated or repeated (`Fields=A,B` or `fields=A&fields=B`).

use nexus_web::ApiError;

#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs = match query {
            Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .map_err(|_| ApiError::invalid_field("query", "The query string is not valid"))?,
            None => Vec::new(),
        };
        Ok(Self { pairs })
    }

    /// The first value of `name`, if present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    /// Every value of `name`, comma lists split.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split([',', '|']))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid_field(name, "Must be true or false")),
        }
    }

    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::invalid_field(name, "Must be a non-negative whole number")),
        }
    }
}

/// The route's `{id}` parameter. Axum's `Path` cannot be used here: the dispatching route's
/// own `{*rest}` parameter is still among the request's parameters.
pub struct Id(pub String);

/// The route's `{id}` and its one other parameter (`{user_id}`, `{command}`, `{file}`).
pub struct IdAnd(pub String, pub String);

async fn route_params(parts: &mut axum::http::request::Parts) -> Result<Vec<(String, String)>, ApiError> {
    use axum::extract::FromRequestParts as _;
    let axum::extract::Path(all) = axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, &())
        .await
        .map_err(|_| ApiError::not_found("Not found"))?;
    Ok(all.into_iter().filter(|(name, _)| name != "rest").collect())
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let params = route_params(parts).await?;
        let id = params.iter().find(|(n, _)| n == "id").or(params.first()).map(|(_, v)| v.clone());
        id.map(Id).ok_or_else(|| ApiError::not_found("Not found"))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdAnd {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let params = route_params(parts).await?;
        let id = params.iter().find(|(n, _)| n == "id").map(|(_, v)| v.clone());
        let other = params.iter().find(|(n, _)| n != "id").map(|(_, v)| v.clone());
        match (id, other) {
            (Some(id), Some(other)) => Ok(IdAnd(id, other)),
            _ => Err(ApiError::not_found("Not found")),
        }
    }
}
