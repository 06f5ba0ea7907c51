//! Lists built with the kernel's list conventions (filters, sorting, offset or cursor pages).

use nexus_kernel::query::{ListQuery, Page};

use super::users::READ_USERS;
use super::{ApiKey, Identity, User};
use crate::error::IdentityError;
use crate::principal::Principal;
use crate::store::UserFilter;

impl Identity {
    /// A page of users (see [`crate::store::USER_LISTING`] for what `q` may use).
    pub async fn list_users_page(
        &self,
        caller: &Principal,
        filter: &UserFilter,
        q: &ListQuery,
    ) -> Result<Page<User>, IdentityError> {
        caller.require(READ_USERS)?;
        Ok(self.store.list_users_page(filter, q).await?.map(User::from))
    }

    /// A page of the caller's API keys (see [`crate::store::API_KEY_LISTING`]).
    pub async fn list_api_keys_page(&self, owner: &Principal, q: &ListQuery) -> Result<Page<ApiKey>, IdentityError> {
        Ok(self.store.api_keys_page(&owner.user_id, q).await?.map(ApiKey::from))
    }
}
