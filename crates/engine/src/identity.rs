//! Projects, users and tokens: the identity behind Zun's API (served Keystone-v3 style by the API crate).
//!
//! Passwords are kept only as Argon2id hashes (memory-hard, per-user salt, PHC strings). Tokens are random
//! 256-bit values handed to the client once; the store keeps their SHA-256, so a copy of the database lets no
//! one in. A token carries the project it was scoped to and the user's roles there, and expires.

use std::collections::BTreeMap;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use husk_core::{Error, ErrorKind, Result, Timestamp, units};
use husk_store::Object;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{DEFAULT_PROJECT, Engine};

/// How long a token is valid unless the daemon says otherwise (`token_lifetime`).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The role that may do everything (Zun's `admin_api` rule).
pub const ROLE_ADMIN: &str = "admin";
/// The role every project member has.
pub const ROLE_MEMBER: &str = "member";

/// A project: the owner of containers, capsules and images, and the unit of quotas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectRecord {
    /// ID (32 hex characters, or `default`).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// When it was created; None for the built-in default project (stored as `""`).
    #[serde(default, with = "husk_core::time::optional")]
    pub created_at: Option<Timestamp>,
}

impl Object for ProjectRecord {
    const KIND: &'static str = "project";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

/// A user who may authenticate with a password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// ID (32 hex characters).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The project a token is scoped to when the request names none.
    pub default_project: String,
    /// Roles by project ID.
    pub roles: BTreeMap<String, Vec<String>>,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Object for UserRecord {
    const KIND: &'static str = "user";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

/// An issued token (stored under the SHA-256 of its value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Hex SHA-256 of the token.
    pub id: String,
    /// User ID.
    pub user_id: String,
    /// User name.
    pub user_name: String,
    /// Project scoped to (ID).
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// Roles in that project.
    pub roles: Vec<String>,
    /// RFC 3339 with microseconds; text, as Keystone's token API shows it and as stored tokens have it.
    pub issued_at: String,
    /// RFC 3339 with microseconds; text, as Keystone's token API shows it and as stored tokens have it.
    pub expires_at: String,
}

impl Object for TokenRecord {
    const KIND: &'static str = "token";
    fn id(&self) -> &str {
        &self.id
    }
    fn project(&self) -> &str {
        &self.project_id
    }
}

impl TokenRecord {
    /// Whether the user is an administrator in the token's project.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ROLE_ADMIN)
    }
}

/// A request to create a user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserCreate {
    /// Unique name.
    pub name: String,
    /// Password (at least 8 characters).
    pub password: String,
    /// Project (name or ID) the user belongs to.
    pub project: String,
    /// Administrator of that project (and so of the whole service, as Zun's `admin` role is).
    pub admin: bool,
}

/// The project scope a password authentication asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeRequest {
    /// Project ID.
    pub id: Option<String>,
    /// Project name.
    pub name: Option<String>,
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn default_project() -> ProjectRecord {
    ProjectRecord {
        id: DEFAULT_PROJECT.into(),
        name: DEFAULT_PROJECT.into(),
        description: "objects made without a project".into(),
        created_at: None,
    }
}

fn unauthorized(message: &str) -> Error {
    Error::new(ErrorKind::Unauthorized, message)
}

impl Engine {
    /// Every project, the built-in default one first.
    pub fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        let mut list = self.inner.store.list::<ProjectRecord>()?;
        if !list.iter().any(|p| p.id == DEFAULT_PROJECT) {
            list.insert(0, default_project());
        }
        Ok(list)
    }

    /// A project by name or ID.
    pub fn project(&self, key: &str) -> Result<ProjectRecord> {
        if key == DEFAULT_PROJECT {
            return Ok(self
                .inner
                .store
                .get::<ProjectRecord>(DEFAULT_PROJECT)?
                .unwrap_or_else(default_project));
        }
        self.inner
            .store
            .find::<ProjectRecord>(key)
            .ok()
            .flatten()
            .filter(|p| p.name == key || p.id == key)
            .ok_or_else(|| Error::not_found(format!("project: {key}")))
    }

    /// Creates a project.
    pub fn create_project(&self, name: &str, description: &str) -> Result<ProjectRecord> {
        units::validate_name("name", name)?;
        if name == DEFAULT_PROJECT || self.project(name).is_ok() {
            return Err(Error::conflict(format!(
                "the project name {name:?} is already in use"
            )));
        }
        let p = ProjectRecord {
            id: husk_core::new_id()[..32].to_string(),
            name: name.to_string(),
            description: description.to_string(),
            created_at: Some(Timestamp::now()),
        };
        self.inner.store.insert(&p)?;
        Ok(p)
    }

    /// Every user.
    pub fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.inner.store.list::<UserRecord>()
    }

    /// Creates a user, member (or admin) of one project.
    pub async fn create_user(&self, req: UserCreate) -> Result<UserRecord> {
        units::validate_name("name", &req.name)?;
        if req.password.chars().count() < 8 {
            return Err(Error::invalid(
                "password",
                "the password must have at least 8 characters",
            ));
        }
        let project = self.project(&req.project)?;
        if self.inner.store.named::<UserRecord>(&req.name)?.is_some() {
            return Err(Error::conflict(format!(
                "the user name {:?} is already in use",
                req.name
            )));
        }
        let password = req.password.clone();
        let hash = tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await
        .map_err(|e| Error::internal(format!("password hashing task: {e}")))?
        .map_err(|e| Error::internal(format!("hash the password: {e}")))?;
        let mut roles = vec![ROLE_MEMBER.to_string()];
        if req.admin {
            roles.push(ROLE_ADMIN.to_string());
        }
        let user = UserRecord {
            id: husk_core::new_id()[..32].to_string(),
            name: req.name,
            password_hash: hash,
            default_project: project.id.clone(),
            roles: BTreeMap::from([(project.id, roles)]),
            created_at: Timestamp::now(),
        };
        self.inner.store.insert(&user)?;
        Ok(user)
    }

    /// Checks a password and issues a token scoped to the requested project (default: the user's). Returns the
    /// token's value (shown once) and its record.
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
        scope: &ScopeRequest,
    ) -> Result<(String, TokenRecord)> {
        let denied = || unauthorized("The request you have made requires authentication.");
        let found = self
            .inner
            .store
            .find::<UserRecord>(user)
            .ok()
            .flatten()
            .filter(|u| u.name == user || u.id == user);
        // Verify against a fixed hash when the user does not exist, so timing does not tell names apart.
        let stored = found
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_string());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored)
                .map(|h| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|e| Error::internal(format!("password check task: {e}")))?;
        let user = match found {
            Some(u) if ok => u,
            _ => return Err(denied()),
        };
        let project = match (&scope.id, &scope.name) {
            (Some(id), _) => self.project(id),
            (None, Some(name)) => self.project(name),
            (None, None) => self.project(&user.default_project),
        }
        .map_err(|_| denied())?;
        let roles = user.roles.get(&project.id).cloned().ok_or_else(denied)?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let now = chrono::Utc::now();
        let expires =
            now + chrono::Duration::from_std(self.inner.config.token_lifetime).unwrap_or_default();
        let rec = TokenRecord {
            id: hash_token(&token),
            user_id: user.id,
            user_name: user.name,
            project_id: project.id,
            project_name: project.name,
            roles,
            issued_at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        };
        self.prune_tokens();
        self.inner.store.insert(&rec)?;
        Ok((token, rec))
    }

    /// The record of a valid, unexpired token.
    pub fn validate_token(&self, token: &str) -> Result<TokenRecord> {
        let invalid = || unauthorized("The token is invalid or has expired.");
        let rec = self
            .inner
            .store
            .get::<TokenRecord>(&hash_token(token))?
            .ok_or_else(invalid)?;
        let expires = Timestamp::parse(&rec.expires_at).map_err(|_| invalid())?;
        if expires <= Timestamp::now() {
            let _ = self.inner.store.delete::<TokenRecord>(&rec.id);
            return Err(invalid());
        }
        Ok(rec)
    }

    /// Revokes a token.
    pub fn revoke_token(&self, token: &str) -> Result<()> {
        if !self.inner.store.delete::<TokenRecord>(&hash_token(token))? {
            return Err(Error::not_found("token"));
        }
        Ok(())
    }

    /// Drops expired tokens.
    fn prune_tokens(&self) {
        let now = Timestamp::now();
        if let Ok(tokens) = self.inner.store.list::<TokenRecord>() {
            for t in tokens {
                let expired = Timestamp::parse(&t.expires_at)
                    .map(|e| e <= now)
                    .unwrap_or(true);
                if expired {
                    let _ = self.inner.store.delete::<TokenRecord>(&t.id);
                }
            }
        }
    }
}

/// An Argon2id hash of a random password, checked against when a user name is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0G6vdKE+7mNBkIuZiWbmoyFuKxqSv3PcKDqK6Ch4AbM";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_stable_and_hides_the_token() {
        let h = hash_token("abc");
        assert_eq!(h.len(), 64);
        assert_ne!(h, "abc");
        assert_eq!(h, hash_token("abc"));
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
