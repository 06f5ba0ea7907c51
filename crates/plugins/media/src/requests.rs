//! Overseerr-compatible media requests: who asked for which movie or show, and its approval.
//! Approval hands the item to Radarr (movies) or Sonarr (shows) through the gateway when one
//! is configured. Events `media.requested` and `media.request.approved` go to the event bus
//! (and so to WebSocket subscribers and webhooks).

use std::sync::Arc;

use nexus_identity::Principal;
use nexus_kernel::Kernel;
use nexus_kernel::clock::Timestamp;
use serde_json::json;

use crate::MediaError;
use crate::arr::Gateway;
use crate::store::{MediaStore, RequestRow};

pub const PENDING: i64 = 1;
pub const APPROVED: i64 = 2;
pub const DECLINED: i64 = 3;
pub const FAILED: i64 = 4;
pub const COMPLETED: i64 = 5;

/// Managing other users' requests (approve, decline, see all).
pub const MANAGE: &str = "media.write";
const REQUEST: &str = "media.read";

#[derive(Debug, Clone)]
pub struct NewRequest {
    /// `movie` or `tv`.
    pub media_type: String,
    pub tmdb_id: i64,
    pub tvdb_id: Option<i64>,
    pub seasons: Vec<i64>,
    pub is4k: bool,
    /// Matched against items that tag no provider id (see [`crate::fulfilment`]).
    pub title: Option<String>,
    pub year: Option<i64>,
}

#[derive(Debug)]
pub struct Requests {
    kernel: Arc<Kernel>,
    store: Arc<dyn MediaStore>,
    gateway: Arc<Gateway>,
    /// The library, where requested media shows up.
    media: Arc<crate::Media>,
}

fn check(p: &Principal, permission: &str) -> Result<(), MediaError> {
    if p.has(permission) { Ok(()) } else { Err(MediaError::Forbidden(permission.to_string())) }
}

impl Requests {
    pub fn new(kernel: Arc<Kernel>, gateway: Arc<Gateway>, media: Arc<crate::Media>) -> Self {
        Self { store: crate::store::open(&kernel.db), kernel, gateway, media }
    }

    /// Completes requests as their media shows up: now, and after every scan that changed
    /// the library, until the server stops.
    pub async fn complete_as_scanned(self: Arc<Self>) {
        let mut reloads = self.media.reloads();
        let closed = self.kernel.events.closed();
        tokio::pin!(closed);
        loop {
            reloads.mark_unchanged();
            if let Err(e) = self.complete_available().await {
                tracing::warn!(error = %e, "media requests not checked against the library");
            }
            tokio::select! {
                () = &mut closed => return,
                changed = reloads.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Marks completed (status 5, the media available) every approved or failed request whose
    /// media the library holds; how many it completed.
    pub async fn complete_available(&self) -> Result<usize, MediaError> {
        let catalog = self.media.catalog();
        let mut done = 0;
        for row in self.store.requests(None).await?.into_iter().filter(|r| r.status == APPROVED || r.status == FAILED) {
            let Some(item_id) = crate::fulfilment::holder(&catalog, &row) else { continue };
            let event = self.kernel.events.envelope(
                "media",
                "media.request.completed",
                json!({"request_id": row.id, "media_type": row.media_type, "tmdb_id": row.tmdb_id, "item_id": item_id}),
            );
            if self.store.complete_request(row.id, Timestamp::now().as_micros(), &event).await? {
                self.kernel.outbox.committed();
                done += 1;
            }
        }
        Ok(done)
    }

    /// Files a request; an administrator's is approved at once. A second request for the same
    /// media is refused unless every earlier one was declined.
    pub async fn create(&self, p: &Principal, new: NewRequest) -> Result<RequestRow, MediaError> {
        check(p, REQUEST)?;
        if new.media_type != "movie" && new.media_type != "tv" {
            return Err(MediaError::field("mediaType", "Must be movie or tv"));
        }
        if new.tmdb_id <= 0 {
            return Err(MediaError::field("mediaId", "Must be a TMDB id (a positive number)"));
        }
        let is4k = i64::from(new.is4k);
        let earlier = self.store.requests_for(&new.media_type, new.tmdb_id, is4k).await?;
        if earlier.iter().any(|r| r.status != DECLINED) {
            return Err(MediaError::Conflict(String::from("Request for this media already exists")));
        }
        let now = Timestamp::now().as_micros();
        let mut row = RequestRow {
            id: 0,
            media_type: new.media_type,
            tmdb_id: new.tmdb_id,
            tvdb_id: new.tvdb_id,
            is4k,
            seasons: serde_json::to_string(&new.seasons).unwrap_or_else(|_| String::from("[]")),
            status: PENDING,
            requested_by: p.user_id.clone(),
            modified_by: None,
            created_at: now,
            updated_at: now,
            title: new.title.map(|t| t.trim().chars().take(500).collect::<String>()).filter(|t| !t.is_empty()),
            year: new.year,
        };
        let events = &self.kernel.events;
        let announce = |id: i64| {
            events.envelope(
                "media",
                "media.requested",
                json!({"request_id": id, "media_type": row.media_type, "tmdb_id": row.tmdb_id, "requested_by": row.requested_by}),
            )
        };
        row.id = self.store.insert_request(&row, &announce).await?;
        self.kernel.outbox.committed();
        if p.is_admin() {
            return self.approve(p, row.id).await;
        }
        Ok(row)
    }

    pub async fn get(&self, p: &Principal, id: i64) -> Result<RequestRow, MediaError> {
        check(p, REQUEST)?;
        let row = self.store.request(id).await?.ok_or(MediaError::NotFound("request"))?;
        if row.requested_by != p.user_id && !p.has(MANAGE) {
            return Err(MediaError::NotFound("request"));
        }
        Ok(row)
    }

    /// Requests the caller may see (everyone's for managers), newest first, filtered by
    /// Overseerr's `filter` (`all`, `pending`, `approved`, `declined`, `failed`, `processing`,
    /// `available`).
    pub async fn list(&self, p: &Principal, filter: &str) -> Result<Vec<RequestRow>, MediaError> {
        check(p, REQUEST)?;
        let mine = (!p.has(MANAGE)).then_some(p.user_id.as_str());
        let statuses: &[i64] = match filter {
            "all" | "" => &[PENDING, APPROVED, DECLINED, FAILED, COMPLETED],
            "pending" => &[PENDING],
            "approved" | "processing" => &[APPROVED],
            "declined" => &[DECLINED],
            "failed" => &[FAILED],
            "available" | "completed" => &[COMPLETED],
            _ => return Err(MediaError::field("filter", "Unknown filter")),
        };
        Ok(self.store.requests(mine).await?.into_iter().filter(|r| statuses.contains(&r.status)).collect())
    }

    /// Approves a pending request and sends it to Radarr or Sonarr when one is configured; a
    /// send that fails marks the request failed.
    pub async fn approve(&self, p: &Principal, id: i64) -> Result<RequestRow, MediaError> {
        check(p, MANAGE)?;
        let row = self.store.request(id).await?.ok_or(MediaError::NotFound("request"))?;
        let now = Timestamp::now().as_micros();
        let event = self.kernel.events.envelope(
            "media",
            "media.request.approved",
            json!({"request_id": id, "media_type": row.media_type, "tmdb_id": row.tmdb_id}),
        );
        self.store.set_request_status(id, APPROVED, &p.user_id, now, Some(&event)).await?;
        self.kernel.outbox.committed();
        let (service, path, body) = if row.media_type == "movie" {
            (
                "radarr",
                "/api/v3/movie",
                json!({"tmdbId": row.tmdb_id, "monitored": true, "addOptions": {"searchForMovie": true}}),
            )
        } else {
            let seasons: Vec<i64> = serde_json::from_str(&row.seasons).unwrap_or_default();
            let seasons: Vec<_> = seasons.iter().map(|n| json!({"seasonNumber": n, "monitored": true})).collect();
            (
                "sonarr",
                "/api/v3/series",
                json!({"tvdbId": row.tvdb_id, "tmdbId": row.tmdb_id, "monitored": true, "seasons": seasons, "addOptions": {"searchForMissingEpisodes": true}}),
            )
        };
        if self.gateway.configured(service) {
            let ok = matches!(self.gateway.send(service, path, &body).await, Ok(200..=299));
            if !ok {
                self.store.set_request_status(id, FAILED, &p.user_id, now, None).await?;
            }
        }
        // Media the library already holds completes the request at once.
        self.complete_available().await?;
        self.store.request(id).await?.ok_or(MediaError::NotFound("request"))
    }

    pub async fn decline(&self, p: &Principal, id: i64) -> Result<RequestRow, MediaError> {
        check(p, MANAGE)?;
        if !self.store.set_request_status(id, DECLINED, &p.user_id, Timestamp::now().as_micros(), None).await? {
            return Err(MediaError::NotFound("request"));
        }
        self.store.request(id).await?.ok_or(MediaError::NotFound("request"))
    }

    /// Deletes a request: its requester while it is pending, or a manager.
    pub async fn delete(&self, p: &Principal, id: i64) -> Result<(), MediaError> {
        let row = self.get(p, id).await?;
        if !p.has(MANAGE) && row.status != PENDING {
            return Err(MediaError::Forbidden(MANAGE.to_string()));
        }
        self.store.delete_request(id).await?;
        Ok(())
    }
}
