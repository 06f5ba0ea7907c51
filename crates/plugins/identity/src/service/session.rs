//! Logging in, refreshing and logging out.

use std::time::Duration;

use nexus_kernel::client::ClientMeta;
use nexus_kernel::clock::Timestamp;
use serde_json::json;

use super::revocation::Kind;
use super::{Identity, User};
use crate::error::IdentityError;
use crate::principal::{Credential, Principal};
use crate::store::RefreshRow;
use crate::tokens;

/// Which lifetime a new access token gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLifetime {
    /// `auth.access_token_ttl_secs` (1 h): framework, core v2, media.
    Access,
    /// `auth.session_token_ttl_secs` (24 h): the secrets manager.
    Session,
}

#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// A username or an email address.
    pub login: String,
    pub password: String,
    pub client: ClientMeta,
    pub client_id: String,
    pub device_id: String,
    pub lifetime: TokenLifetime,
    /// What the client says about itself (for example a reported address), recorded in the
    /// login's audit metadata and never trusted.
    pub reported: serde_json::Map<String, serde_json::Value>,
}

/// What a successful login or refresh hands out.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub expires_in: u64,
    pub expires_at: Timestamp,
    pub refresh_token: String,
    pub user: User,
}

impl Identity {
    fn ttl(&self, lifetime: TokenLifetime) -> u64 {
        let auth = &self.kernel.config.auth;
        match lifetime {
            TokenLifetime::Access => auth.access_token_ttl_secs,
            TokenLifetime::Session => auth.session_token_ttl_secs,
        }
    }

    /// Checks a password login. Unknown users and wrong passwords get the same answer after
    /// the same work; attempts are throttled per client, and repeated failures lock the account.
    pub async fn login(&self, req: LoginRequest) -> Result<Session, IdentityError> {
        let auth = &self.kernel.config.auth;
        let client_key = if req.client.ip.is_empty() { req.login.to_lowercase() } else { req.client.ip.clone() };
        let decision = self
            .kernel
            .rate_limits
            .check(&format!("login:{client_key}"), auth.login_attempts_per_minute, Duration::from_secs(60))
            .await;
        if !decision.allowed {
            return Err(IdentityError::Throttled { retry_after: decision.reset_after, limit: decision.limit });
        }
        let details = |mut meta: serde_json::Map<String, serde_json::Value>| {
            meta.insert("client_id".into(), req.client_id.clone().into());
            if !req.device_id.is_empty() {
                meta.insert("device_id".into(), req.device_id.clone().into());
            }
            meta.extend(req.reported.clone());
            serde_json::Value::Object(meta)
        };
        let fail = |reason: &'static str| details(serde_json::Map::from_iter([("reason".into(), reason.into())]));

        let user = self.store.user_by_login(&req.login).await?;
        let Some(user) = user else {
            let _ = crate::password::verify(req.password.clone(), crate::password::DUMMY_HASH.to_string()).await;
            self.audit("auth.login", &req.login, "", &req.client, false, fail("unknown user")).await;
            return Err(IdentityError::InvalidCredentials);
        };
        let now = self.kernel.clock.now();
        let password_ok = crate::password::verify(req.password.clone(), user.password_hash.clone()).await;
        if !password_ok {
            let lock_until = now.add_seconds(i64::try_from(auth.lockout_secs).unwrap_or(i64::MAX)).as_micros();
            let locked =
                self.store.record_login_failure(&user.id, i64::from(auth.lockout_threshold), lock_until).await?;
            let reason = if locked { "wrong password; account locked" } else { "wrong password" };
            self.audit("auth.login", &user.id, &user.id, &req.client, false, fail(reason)).await;
            return Err(IdentityError::InvalidCredentials);
        }
        if user.locked_until.is_some_and(|t| t > now.as_micros()) {
            self.audit("auth.login", &user.id, &user.id, &req.client, false, fail("account locked")).await;
            return Err(IdentityError::Locked);
        }
        if user.status != "active" {
            self.audit("auth.login", &user.id, &user.id, &req.client, false, fail("account not active")).await;
            return Err(IdentityError::Inactive(user.status));
        }
        let recorded = self.store.record_login_success(&user.id, now).await;
        // `last_login` is part of the record the read paths show.
        self.users.invalidate(&user.id);
        recorded?;
        let family = nexus_kernel::id::uuid();
        let event = self.kernel.events.envelope(
            "identity",
            "auth.login",
            json!({
                "user_id": user.id,
                "username": user.username,
                "client_id": req.client_id,
                "ip_address": req.client.ip,
            }),
        );
        let session = self.issue(&user.id, &family, &req.client_id, &req.device_id, req.lifetime, Some(&event)).await?;
        self.audit("auth.login", &user.id, &user.id, &req.client, true, details(serde_json::Map::new())).await;
        Ok(session)
    }

    /// A new access token and refresh token for `user_id` in session `family`; `login`, the
    /// event of a new session, is committed with its refresh token.
    async fn issue(
        &self,
        user_id: &str,
        family: &str,
        client_id: &str,
        device_id: &str,
        lifetime: TokenLifetime,
        login: Option<&nexus_kernel::events::Event>,
    ) -> Result<Session, IdentityError> {
        let user = self.fresh_user(user_id).await?;
        let ttl = self.ttl(lifetime);
        let claims = tokens::claims(&user.id, &user.username, &user.roles, family, ttl, self.kernel.clock.now());
        let access_token = self.jwt.sign(&claims).map_err(IdentityError::Internal)?;
        let refresh_token = tokens::opaque_token();
        let now = self.kernel.clock.now();
        let refresh_ttl = i64::try_from(self.kernel.config.auth.refresh_token_ttl_secs).unwrap_or(i64::MAX);
        let row = RefreshRow {
            token_hash: tokens::digest(&refresh_token),
            family_id: family.to_string(),
            user_id: user.id.clone(),
            client_id: client_id.to_string(),
            device_id: device_id.to_string(),
            expires_at: now.add_seconds(refresh_ttl).as_micros(),
            used_at: None,
            revoked_at: None,
        };
        self.store.insert_refresh(&row, now, login).await?;
        Ok(Session {
            access_token,
            expires_in: ttl,
            expires_at: Timestamp::from_micros(claims.exp.saturating_mul(1_000_000)),
            refresh_token,
            user,
        })
    }

    /// Spends `refresh_token` for a new pair in the same session. A token used twice is taken
    /// as stolen: its whole session is revoked.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_id: Option<&str>,
        client: &ClientMeta,
        lifetime: TokenLifetime,
    ) -> Result<Session, IdentityError> {
        let hash = tokens::digest(refresh_token);
        let Some(row) = self.store.refresh_by_hash(&hash).await? else {
            self.audit("auth.refresh", "", "", client, false, json!({ "reason": "unknown refresh token" })).await;
            return Err(IdentityError::InvalidToken);
        };
        let now = self.kernel.clock.now();
        if row.revoked_at.is_some() {
            self.audit("auth.refresh", &row.user_id, &row.user_id, client, false, json!({ "reason": "revoked" })).await;
            return Err(IdentityError::InvalidToken);
        }
        // A token is bound to the client it was issued to. This and expiry are checked before
        // the token is spent, so a wrong or late attempt cannot burn the rightful client's token.
        if !row.client_id.is_empty() && client_id != Some(row.client_id.as_str()) {
            self.audit(
                "auth.refresh",
                &row.user_id,
                &row.user_id,
                client,
                false,
                json!({ "reason": "client mismatch" }),
            )
            .await;
            return Err(IdentityError::InvalidToken);
        }
        if row.expires_at <= now.as_micros() {
            self.audit("auth.refresh", &row.user_id, &row.user_id, client, false, json!({ "reason": "expired" })).await;
            return Err(IdentityError::TokenExpired);
        }
        if row.used_at.is_some() || !self.store.spend_refresh(&hash, now).await? {
            self.revoke_session(&row.family_id, &row.user_id).await?;
            self.audit(
                "auth.refresh",
                &row.user_id,
                &row.user_id,
                client,
                false,
                json!({ "reason": "refresh token reused; session revoked" }),
            )
            .await;
            return Err(IdentityError::InvalidToken);
        }
        let user = self.fresh_user(&row.user_id).await?;
        if user.status != "active" {
            return Err(IdentityError::Inactive(user.status));
        }
        let session = self.issue(&row.user_id, &row.family_id, &row.client_id, &row.device_id, lifetime, None).await?;
        self.audit("auth.refresh", &row.user_id, &row.user_id, client, true, json!({})).await;
        Ok(session)
    }

    /// A fresh access token for the caller's current session (the secrets manager's
    /// bearer-authenticated refresh).
    pub async fn reissue(
        &self,
        principal: &Principal,
        client: &ClientMeta,
        lifetime: TokenLifetime,
    ) -> Result<(String, Timestamp), IdentityError> {
        let Credential::Token { sid, .. } = &principal.credential else {
            return Err(IdentityError::field("authorization", "Only a session token can be refreshed"));
        };
        let user = self.fresh_user(&principal.user_id).await?;
        if user.status != "active" {
            return Err(IdentityError::Inactive(user.status));
        }
        let claims =
            tokens::claims(&user.id, &user.username, &user.roles, sid, self.ttl(lifetime), self.kernel.clock.now());
        let token = self.jwt.sign(&claims).map_err(IdentityError::Internal)?;
        self.audit("auth.refresh", &user.id, &user.id, client, true, json!({})).await;
        Ok((token, Timestamp::from_micros(claims.exp.saturating_mul(1_000_000))))
    }

    /// Ends the caller's session: its access tokens and its refresh chain stop working.
    pub async fn logout(&self, principal: &Principal, client: &ClientMeta) -> Result<(), IdentityError> {
        let Credential::Token { sid, .. } = &principal.credential else {
            return Err(IdentityError::field(
                "authorization",
                "Log out with the session's access token, not an API key",
            ));
        };
        self.revoke_session(sid, &principal.user_id).await?;
        self.audit("auth.logout", &principal.user_id, &principal.user_id, client, true, json!({})).await;
        Ok(())
    }

    async fn revoke_session(&self, sid: &str, user_id: &str) -> Result<(), IdentityError> {
        let now = self.kernel.clock.now();
        self.store.revoke_family(sid, now).await?;
        let horizon = self.revocation_horizon(now);
        self.store.insert_revocation(Kind::Session.as_str(), sid, now.as_micros(), horizon).await?;
        self.revoked.revoke_session(sid);
        self.announce(Kind::Session, sid, now.as_micros()).await;
        tracing::debug!(user_id, "session revoked");
        Ok(())
    }

    /// Tells the other instances of a revocation already recorded and applied here.
    pub(super) async fn announce(&self, kind: Kind, subject: &str, not_before: i64) {
        if let Some(broadcast) = &self.broadcast {
            broadcast.announce(kind, subject, not_before).await;
        }
    }

    /// Revokes every token and session `user_id` holds (status, role or password change).
    pub(super) async fn revoke_user_tokens(&self, user_id: &str) -> Result<(), IdentityError> {
        let now = self.kernel.clock.now();
        self.store.revoke_user_families(user_id, now).await?;
        self.store
            .insert_revocation(Kind::User.as_str(), user_id, now.as_micros(), self.revocation_horizon(now))
            .await?;
        self.revoked.revoke_user(user_id, now.as_micros());
        self.keys.invalidate_all();
        self.announce(Kind::User, user_id, now.as_micros()).await;
        Ok(())
    }

    /// Ends every session of `user_id` but `keep` (their refresh tokens and access tokens).
    pub(super) async fn revoke_other_sessions(&self, user_id: &str, keep: &str) -> Result<(), IdentityError> {
        let now = self.kernel.clock.now();
        let horizon = self.revocation_horizon(now);
        for sid in self.store.revoke_other_families(user_id, keep, now).await? {
            self.store.insert_revocation(Kind::Session.as_str(), &sid, now.as_micros(), horizon).await?;
            self.revoked.revoke_session(&sid);
            self.announce(Kind::Session, &sid, now.as_micros()).await;
        }
        Ok(())
    }

    /// How long a revocation must be remembered: until every token it covers has expired.
    fn revocation_horizon(&self, now: Timestamp) -> i64 {
        let auth = &self.kernel.config.auth;
        let longest = auth.access_token_ttl_secs.max(auth.session_token_ttl_secs);
        now.add_seconds(i64::try_from(longest).unwrap_or(i64::MAX).saturating_add(60)).as_micros()
    }
}
