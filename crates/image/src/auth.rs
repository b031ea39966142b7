//! Registry credentials, stored like Docker's `config.json`: `{"auths": {"<registry>": {"auth": base64(user:pass)}}}`.
//!
//! `husk login` writes husk's own file (`<config dir>/auth.json`, mode 0600, replaced atomically); lookups read it
//! first and then Docker's (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), so credentials a user already
//! gave `docker login` work too. Credential helpers (`credsStore`) are not run: husk never executes programs named
//! by a config file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use husk_core::{Context as _, Error, Result};
use serde::{Deserialize, Serialize};

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <hidden> }}",
            self.username
        )
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Everything else in the file, kept as it was when husk rewrites it.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    auth: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    password: String,
    #[serde(
        default,
        rename = "identitytoken",
        skip_serializing_if = "String::is_empty"
    )]
    identity_token: String,
}

impl AuthEntry {
    fn credentials(&self) -> Option<Credentials> {
        if !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, pass) = text.split_once(':')?;
            return Some(Credentials {
                username: user.to_string(),
                password: pass.to_string(),
            });
        }
        if !self.username.is_empty() {
            return Some(Credentials {
                username: self.username.clone(),
                password: self.password.clone(),
            });
        }
        None
    }
}

/// The key a registry is stored under: its host\[:port\], with Docker Hub's legacy URL for `docker.io`.
pub fn registry_key(registry: &str) -> String {
    let host = normalize_host(registry);
    if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host
    }
}

/// `https://registry.example.com/v2/` and `registry.example.com` name the same registry.
fn normalize_host(text: &str) -> String {
    let t = text.trim();
    let t = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .unwrap_or(t);
    let host = t.split('/').next().unwrap_or(t).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// Where credentials are read from (in order) and written to (the first file).
#[derive(Debug, Clone)]
pub struct CredentialStore {
    write_file: PathBuf,
    read_files: Vec<PathBuf>,
}

impl CredentialStore {
    /// husk's file at `auth_file`, then Docker's config of the user running husk.
    pub fn new(auth_file: impl Into<PathBuf>) -> CredentialStore {
        let write_file = auth_file.into();
        let mut read_files = vec![write_file.clone()];
        read_files.extend(docker_config_file());
        CredentialStore {
            write_file,
            read_files,
        }
    }

    /// Only the given files, the first one written (for tests and explicit configuration).
    pub fn with_files(write_file: PathBuf, also_read: Vec<PathBuf>) -> CredentialStore {
        let mut read_files = vec![write_file.clone()];
        read_files.extend(also_read);
        CredentialStore {
            write_file,
            read_files,
        }
    }

    /// The file `login` writes.
    pub fn path(&self) -> &Path {
        &self.write_file
    }

    /// Credentials for `registry` from the first file that has them.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        let want = normalize_host(registry);
        for file in &self.read_files {
            let config = match read_config(file) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e.message, "credentials file ignored");
                    continue;
                }
            };
            for (key, entry) in &config.auths {
                if normalize_host(key) == want
                    && let Some(c) = entry.credentials()
                {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// Stores credentials for `registry` in husk's file (what `husk login` does after checking them).
    pub fn store(&self, registry: &str, credentials: &Credentials) -> Result<()> {
        let mut config = read_config(&self.write_file)?;
        let want = normalize_host(registry);
        config.auths.retain(|k, _| normalize_host(k) != want);
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password));
        config.auths.insert(
            registry_key(registry),
            AuthEntry {
                auth,
                ..Default::default()
            },
        );
        write_config(&self.write_file, &config)
    }

    /// Forgets `registry` in husk's file; returns whether it was there.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let mut config = read_config(&self.write_file)?;
        let want = normalize_host(registry);
        let before = config.auths.len();
        config.auths.retain(|k, _| normalize_host(k) != want);
        if config.auths.len() == before {
            return Ok(false);
        }
        write_config(&self.write_file, &config)?;
        Ok(true)
    }
}

/// Docker's client config file: `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`.
fn docker_config_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    match fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(ConfigFile::default()),
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_request(format!(
                "credentials file {} is not valid JSON: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

fn write_config(path: &Path, config: &ConfigFile) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
    let data = serde_json::to_vec_pretty(config)
        .map_err(|e| Error::internal(format!("encode credentials: {e}")))?;
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("write {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_reads_and_erases_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker.json");
        std::fs::write(&docker, r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},"other.io":{"username":"u","password":"p"}},"credsStore":"x"}"#).unwrap();
        let store = CredentialStore::with_files(dir.path().join("husk/auth.json"), vec![docker]);
        assert_eq!(store.get("docker.io").unwrap().unwrap().username, "hub");
        assert_eq!(
            store.get("registry-1.docker.io").unwrap().unwrap().password,
            "secret"
        );
        assert_eq!(store.get("other.io").unwrap().unwrap().password, "p");
        assert!(store.get("127.0.0.1:5000").unwrap().is_none());

        let creds = Credentials {
            username: "me".into(),
            password: "pw:with:colons".into(),
        };
        store.store("127.0.0.1:5000", &creds).unwrap();
        store.store("docker.io", &creds).unwrap();
        assert_eq!(
            store.get("http://127.0.0.1:5000/v2/").unwrap().unwrap(),
            creds
        );
        assert_eq!(
            store.get("docker.io").unwrap().unwrap(),
            creds,
            "husk's file is read first"
        );
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(
            text.contains("https://index.docker.io/v1/") && text.contains("127.0.0.1:5000"),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(store.erase("127.0.0.1:5000").unwrap());
        assert!(!store.erase("127.0.0.1:5000").unwrap());
        assert!(store.get("127.0.0.1:5000").unwrap().is_none());
        assert!(
            !format!("{creds:?}").contains("pw"),
            "Debug hides the password"
        );
    }
}
