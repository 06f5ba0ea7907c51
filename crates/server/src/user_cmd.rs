//! `nexus user create|passwd|list`: administer users from the shell, against the configured
//! database, through the same identity service the API uses (validation and audit included).

use clap::Subcommand;
use nexus_identity::service::{NewUser, UserPatch};
use nexus_identity::store::UserFilter;
use nexus_identity::{Identity, Principal};
use nexus_kernel::client::ClientMeta;
use nexus_kernel::config::Config;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. Without --password a random one is generated and printed.
    Create {
        username: String,
        #[arg(long)]
        email: String,
        /// A role; repeat for several (default: user).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        full_name: Option<String>,
        /// The password [env: NEXUS_USER_PASSWORD]
        #[arg(long, env = "NEXUS_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Set a user's password (revokes their sessions). Without --password a random one is
    /// generated and printed.
    Passwd {
        username: String,
        /// The new password [env: NEXUS_USER_PASSWORD]
        #[arg(long, env = "NEXUS_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// List users.
    List,
}

/// Runs `command`; the error is a message for the operator.
pub async fn run(config: Config, command: UserCommand) -> Result<(), String> {
    let kernel = crate::plugins::open_kernel(config).await.map_err(|e| e.to_string())?;
    let identity = Identity::start(kernel.clone()).await.map_err(|e| e.to_string())?;
    let system = Principal::system();
    let client = ClientMeta { user_agent: format!("nexus-cli/{}", nexus_kernel::VERSION), ..ClientMeta::default() };
    let result = match command {
        UserCommand::Create { username, email, roles, full_name, password } => {
            let (password, generated) = password_or_random(password);
            let roles = if roles.is_empty() { None } else { Some(roles) };
            let new = NewUser { username, email, password: password.clone(), full_name, roles, ..NewUser::default() };
            let user = identity.create_user(Some(&system), new, &client).await.map_err(describe)?;
            println!("created user {} ({}) with roles {}", user.username, user.id, user.roles.join(","));
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
        UserCommand::Passwd { username, password } => {
            let (password, generated) = password_or_random(password);
            let user = find(&identity, &username).await?;
            let patch = UserPatch { password: Some(password.clone()), ..UserPatch::default() };
            identity.update_user(&system, &user, patch, &client).await.map_err(describe)?;
            println!("password of {username} changed; their sessions are revoked");
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
        UserCommand::List => {
            let filter = UserFilter { limit: i64::MAX, ..UserFilter::default() };
            let (users, _) = identity.list_users(&filter).await.map_err(describe)?;
            println!("{:<36}  {:<24}  {:<30}  {:<10}  ROLES", "ID", "USERNAME", "EMAIL", "STATUS");
            for u in users {
                println!("{:<36}  {:<24}  {:<30}  {:<10}  {}", u.id, u.username, u.email, u.status, u.roles.join(","));
            }
            Ok(())
        }
    };
    kernel.db.close().await;
    result
}

fn password_or_random(given: Option<String>) -> (String, bool) {
    match given {
        Some(p) => (p, false),
        None => (format!("{}7", nexus_kernel::id::random_alphanumeric(19)), true),
    }
}

async fn find(identity: &Identity, username: &str) -> Result<String, String> {
    let filter = UserFilter { search: Some(username.to_string()), limit: 1000, ..UserFilter::default() };
    let (users, _) = identity.list_users(&filter).await.map_err(describe)?;
    users
        .into_iter()
        .find(|u| u.username.eq_ignore_ascii_case(username))
        .map(|u| u.id)
        .ok_or_else(|| format!("no user named {username}"))
}

/// The operator-facing text of an identity error, with the fields it names.
fn describe(e: nexus_identity::IdentityError) -> String {
    match e {
        nexus_identity::IdentityError::Invalid(details) => {
            details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    }
}
