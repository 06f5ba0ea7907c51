//! Which access tokens are revoked before they expire. Each instance keeps the set in memory
//! (no database round trip per request) and polls the `revocations` table every second, so a
//! logout on one instance takes effect on every other within about a second.

use std::collections::{HashMap, HashSet};
use std::sync::{RwLock, Weak};
use std::time::Duration;

use nexus_kernel::clock::Timestamp;
use nexus_kernel::db::StorageError;

use super::Identity;
use crate::store::IdentityStore;

const POLL: Duration = Duration::from_secs(1);
/// Polls look back this far, so a row committed late (after a later one) is not missed.
const OVERLAP_MICROS: i64 = 10_000_000;

#[derive(Debug, Default)]
pub struct Revoked {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashSet<String>,
    /// Tokens of a user issued before this instant (µs) are void.
    users: HashMap<String, i64>,
    polled_at: i64,
}

impl Revoked {
    pub fn rejects(&self, sid: &str, user_id: &str, issued_at_us: i64) -> bool {
        let Ok(state) = self.state.read() else { return true };
        state.sessions.contains(sid) || state.users.get(user_id).is_some_and(|nb| issued_at_us < *nb)
    }

    pub fn revoke_session(&self, sid: &str) {
        if let Ok(mut state) = self.state.write() {
            state.sessions.insert(sid.to_string());
        }
    }

    pub fn revoke_user(&self, user_id: &str, not_before: i64) {
        if let Ok(mut state) = self.state.write() {
            let entry = state.users.entry(user_id.to_string()).or_insert(not_before);
            *entry = (*entry).max(not_before);
        }
    }

    /// Loads revocations recorded since the last poll; whether an API key was among them.
    pub async fn load(&self, store: &dyn IdentityStore) -> Result<bool, StorageError> {
        let since = self.state.read().map(|s| s.polled_at).unwrap_or(0);
        let now = Timestamp::now().as_micros();
        let rows = store.revocations_since(since.saturating_sub(OVERLAP_MICROS)).await?;
        let mut keys_changed = false;
        if let Ok(mut state) = self.state.write() {
            for row in rows {
                match row.kind.as_str() {
                    "session" => {
                        state.sessions.insert(row.subject);
                    }
                    "user" => {
                        keys_changed = true;
                        let entry = state.users.entry(row.subject).or_insert(row.not_before);
                        *entry = (*entry).max(row.not_before);
                    }
                    _ => keys_changed = true,
                }
            }
            state.polled_at = now;
        }
        Ok(keys_changed)
    }
}

/// Polls for revocations made elsewhere until the service is dropped; purges expired rows
/// hourly.
pub fn watch(identity: Weak<Identity>) {
    tokio::spawn(async move {
        let mut ticks: u64 = 0;
        loop {
            tokio::time::sleep(POLL).await;
            let Some(identity) = identity.upgrade() else { return };
            match identity.revoked.load(identity.store.as_ref()).await {
                Ok(true) => identity.keys.invalidate_all(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not poll revocations"),
            }
            ticks += 1;
            if ticks.is_multiple_of(3600)
                && let Err(e) = identity.store.purge_expired(Timestamp::now()).await
            {
                tracing::warn!(error = %e, "could not purge expired tokens");
            }
        }
    });
}
