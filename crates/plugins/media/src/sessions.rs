//! Playback sessions: who plays what where, the positions they report, and the remote-control
//! commands delivered to a client over its socket. Sessions live in memory (as Jellyfin's do);
//! every playback is also written to the history table.

use std::collections::HashMap;
use std::sync::Mutex;

use nexus_identity::Principal;
use nexus_kernel::clock::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::MediaError;
use crate::scan::item_id;
use crate::service::{Media, READ};
use crate::store::PlaybackRow;

/// A session with no activity for this long is no longer listed.
const IDLE_SECS: i64 = 600;

/// What a client says about itself in `Authorization: MediaBrowser …`.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client: String,
    pub device: String,
    pub device_id: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct NowPlaying {
    pub item_id: String,
    pub position_ticks: i64,
    pub paused: bool,
    pub playback_id: String,
    pub started_at: i64,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub client: ClientInfo,
    pub last_activity: Timestamp,
    pub now_playing: Option<NowPlaying>,
    pub has_socket: bool,
}

#[derive(Debug, Default)]
struct Entry {
    session: Option<Session>,
    socket: Option<mpsc::UnboundedSender<String>>,
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        match self.map.lock() {
            Ok(mut m) => f(&mut m),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Sessions now playing something (for metrics and statistics).
    pub fn active(&self) -> Vec<Session> {
        self.with(|m| m.values().filter_map(|e| e.session.clone()).filter(|s| s.now_playing.is_some()).collect())
    }
}

/// A playback report (`Sessions/Playing`, `/Progress`, `/Stopped`).
#[derive(Debug, Clone, Default)]
pub struct PlaybackReport {
    pub item_id: String,
    pub position_ticks: Option<i64>,
    pub is_paused: Option<bool>,
}

/// A remote-control command for a session's client.
#[derive(Debug, Clone)]
pub enum Command {
    Play { item_ids: Vec<String>, start_position_ticks: Option<i64>, play_command: String },
    Playstate { command: String, seek_position_ticks: Option<i64> },
}

impl Command {
    fn message(&self) -> Value {
        let (kind, data) = match self {
            Command::Play { item_ids, start_position_ticks, play_command } => (
                "Play",
                json!({"ItemIds": item_ids, "StartPositionTicks": start_position_ticks, "PlayCommand": play_command}),
            ),
            Command::Playstate { command, seek_position_ticks } => {
                ("Playstate", json!({"Command": command, "SeekPositionTicks": seek_position_ticks}))
            }
        };
        json!({"MessageType": kind, "MessageId": item_id(&["message", &Timestamp::now().as_micros().to_string()]), "Data": data})
    }
}

fn session_id(user_id: &str, device_id: &str) -> String {
    item_id(&["session", user_id, device_id])
}

impl Media {
    fn touch(&self, p: &Principal, client: &ClientInfo) -> String {
        let device_id = if client.device_id.is_empty() { p.user_id.clone() } else { client.device_id.clone() };
        let id = session_id(&p.user_id, &device_id);
        let now = Timestamp::now();
        self.sessions.with(|m| {
            let entry = m.entry(id.clone()).or_default();
            let session = entry.session.get_or_insert_with(|| Session {
                id: id.clone(),
                user_id: p.user_id.clone(),
                user_name: p.username.clone(),
                client: client.clone(),
                last_activity: now,
                now_playing: None,
                has_socket: false,
            });
            if !client.client.is_empty() {
                session.client = ClientInfo { device_id: device_id.clone(), ..client.clone() };
            }
            session.last_activity = now;
        });
        id
    }

    /// `Sessions/Playing`: playback started.
    pub async fn playing(&self, p: &Principal, client: &ClientInfo, r: &PlaybackReport) -> Result<(), MediaError> {
        self.require_item(p, &r.item_id)?;
        let id = self.touch(p, client);
        let item = r.item_id.to_ascii_lowercase();
        let now = Timestamp::now().as_micros();
        let playing = NowPlaying {
            item_id: item.clone(),
            position_ticks: r.position_ticks.unwrap_or(0).max(0),
            paused: r.is_paused.unwrap_or(false),
            playback_id: item_id(&["playback", &id, &now.to_string()]),
            started_at: now,
        };
        let row = PlaybackRow {
            id: playing.playback_id.clone(),
            user_id: p.user_id.clone(),
            item_id: item.clone(),
            session_id: id.clone(),
            client: client.client.clone(),
            device: client.device.clone(),
            started_at: now,
            stopped_at: None,
            position_ticks: playing.position_ticks,
        };
        self.set_playing(&id, Some(playing));
        self.store.put_playback(&row).await?;
        self.record_position(&p.user_id, &item, row.position_ticks, false).await
    }

    /// `Sessions/Playing/Progress`: the position moved (or playback paused).
    pub async fn progress(&self, p: &Principal, client: &ClientInfo, r: &PlaybackReport) -> Result<(), MediaError> {
        self.require_item(p, &r.item_id)?;
        let id = self.touch(p, client);
        let item = r.item_id.to_ascii_lowercase();
        let position = r.position_ticks.unwrap_or(0).max(0);
        let current = self.now_playing(&id).filter(|n| n.item_id == item);
        let playing = match current {
            Some(mut n) => {
                n.position_ticks = position;
                n.paused = r.is_paused.unwrap_or(n.paused);
                n
            }
            // A progress report without a start: the playback starts here.
            None => {
                let now = Timestamp::now().as_micros();
                NowPlaying {
                    item_id: item.clone(),
                    position_ticks: position,
                    paused: r.is_paused.unwrap_or(false),
                    playback_id: item_id(&["playback", &id, &now.to_string()]),
                    started_at: now,
                }
            }
        };
        self.store.put_playback(&self.history_row(p, &id, client, &playing, None)).await?;
        self.set_playing(&id, Some(playing));
        self.record_position(&p.user_id, &item, position, false).await
    }

    /// `Sessions/Playing/Stopped`: playback ended at a position.
    pub async fn stopped(&self, p: &Principal, client: &ClientInfo, r: &PlaybackReport) -> Result<(), MediaError> {
        self.require_item(p, &r.item_id)?;
        let id = self.touch(p, client);
        let item = r.item_id.to_ascii_lowercase();
        let position = r.position_ticks.unwrap_or(0).max(0);
        if let Some(mut n) = self.now_playing(&id).filter(|n| n.item_id == item) {
            n.position_ticks = position;
            let row = self.history_row(p, &id, client, &n, Some(Timestamp::now().as_micros()));
            self.store.put_playback(&row).await?;
        }
        self.set_playing(&id, None);
        self.record_position(&p.user_id, &item, position, true).await
    }

    /// `Sessions/Playing/Ping`: the client is still there.
    pub fn ping(&self, p: &Principal, client: &ClientInfo) -> Result<(), MediaError> {
        if !p.has(READ) {
            return Err(MediaError::Forbidden(READ.to_string()));
        }
        self.touch(p, client);
        Ok(())
    }

    fn history_row(
        &self,
        p: &Principal,
        session: &str,
        client: &ClientInfo,
        n: &NowPlaying,
        stopped_at: Option<i64>,
    ) -> PlaybackRow {
        PlaybackRow {
            id: n.playback_id.clone(),
            user_id: p.user_id.clone(),
            item_id: n.item_id.clone(),
            session_id: session.to_string(),
            client: client.client.clone(),
            device: client.device.clone(),
            started_at: n.started_at,
            stopped_at,
            position_ticks: n.position_ticks,
        }
    }

    fn require_item(&self, p: &Principal, id: &str) -> Result<(), MediaError> {
        if !p.has(READ) {
            return Err(MediaError::Forbidden(READ.to_string()));
        }
        if id.is_empty() {
            return Err(MediaError::field("ItemId", "This field is required"));
        }
        self.catalog().item(&id.to_ascii_lowercase()).map(|_| ()).ok_or(MediaError::NotFound("item"))
    }

    fn now_playing(&self, session: &str) -> Option<NowPlaying> {
        self.sessions.with(|m| m.get(session).and_then(|e| e.session.as_ref()).and_then(|s| s.now_playing.clone()))
    }

    fn set_playing(&self, session: &str, playing: Option<NowPlaying>) {
        let active = self.sessions.with(|m| {
            if let Some(s) = m.get_mut(session).and_then(|e| e.session.as_mut()) {
                s.now_playing = playing;
            }
            m.values().filter(|e| e.session.as_ref().is_some_and(|s| s.now_playing.is_some())).count()
        });
        self.metrics.active_sessions.set(i64::try_from(active).unwrap_or(i64::MAX));
    }

    /// `GET Sessions`: an admin sees every recent session, anyone else their own.
    pub fn list_sessions(&self, p: &Principal) -> Result<Vec<Session>, MediaError> {
        if !p.has(READ) {
            return Err(MediaError::Forbidden(READ.to_string()));
        }
        let cutoff = Timestamp::now().as_unix_seconds() - IDLE_SECS;
        let mut list: Vec<Session> = self.sessions.with(|m| {
            m.values()
                .filter_map(|e| {
                    let mut s = e.session.clone()?;
                    s.has_socket = e.socket.as_ref().is_some_and(|t| !t.is_closed());
                    Some(s)
                })
                .filter(|s| s.last_activity.as_unix_seconds() >= cutoff || s.has_socket)
                .filter(|s| p.is_admin() || s.user_id == p.user_id)
                .collect()
        });
        list.sort_by_key(|s| std::cmp::Reverse(s.last_activity));
        Ok(list)
    }

    /// Opens a client's socket: the session's commands are delivered to the returned receiver.
    pub fn attach_socket(
        &self,
        p: &Principal,
        client: &ClientInfo,
    ) -> Result<(String, mpsc::UnboundedReceiver<String>), MediaError> {
        if !p.has(READ) {
            return Err(MediaError::Forbidden(READ.to_string()));
        }
        let id = self.touch(p, client);
        let (tx, rx) = mpsc::unbounded_channel();
        self.sessions.with(|m| m.entry(id.clone()).or_default().socket = Some(tx));
        Ok((id, rx))
    }

    /// Sends `command` to session `id`'s client. The caller must own the session or be an admin.
    pub fn send_command(&self, p: &Principal, id: &str, command: &Command) -> Result<(), MediaError> {
        if !p.has(READ) {
            return Err(MediaError::Forbidden(READ.to_string()));
        }
        let text = command.message().to_string();
        self.sessions.with(|m| {
            let entry = m.get(&id.to_ascii_lowercase()).ok_or(MediaError::NotFound("session"))?;
            let session = entry.session.as_ref().ok_or(MediaError::NotFound("session"))?;
            if session.user_id != p.user_id && !p.is_admin() {
                return Err(MediaError::NotFound("session"));
            }
            let socket = entry.socket.as_ref().filter(|s| !s.is_closed()).ok_or_else(|| {
                MediaError::Conflict(String::from("The session has no open socket to receive commands"))
            })?;
            socket.send(text).map_err(|_| MediaError::Conflict(String::from("The session's socket is closed")))
        })
    }
}
