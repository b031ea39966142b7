//! Talking to registries through `oci-client`: which scheme (HTTPS, or plain HTTP for loopback and insecure
//! registries), which endpoints (Docker Hub mirrors first), which credentials, and registry errors turned into
//! husk errors.

use std::net::IpAddr;

use husk_core::{Error, ErrorKind, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::auth::{CredentialStore, Credentials};
use crate::config::RegistryConfig;
use crate::reference::ImageName;

/// Registry settings and credentials, and the clients they make.
#[derive(Debug)]
pub struct Registries {
    config: RegistryConfig,
    credentials: CredentialStore,
}

/// One place to fetch an image from: the reference as the client uses it (a mirror host when set) and its client.
pub struct Endpoint {
    /// Reference with the registry (or mirror) to contact.
    pub reference: Reference,
    /// The host contacted.
    pub host: String,
    /// Client for that host.
    pub client: Client,
    /// Credentials for that host.
    pub auth: RegistryAuth,
}

impl Registries {
    /// Registries as configured; credentials from `credentials`.
    pub fn new(config: RegistryConfig, credentials: CredentialStore) -> Registries {
        Registries {
            config,
            credentials,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The credential store (`login` and `logout` write it).
    pub fn credentials(&self) -> &CredentialStore {
        &self.credentials
    }

    /// Whether `host` is reached over plain HTTP.
    pub fn plain_http(&self, host: &str) -> bool {
        is_plain_http(host, &self.config.insecure_registries)
    }

    /// A client for `host`. Each pull or push gets its own: oci-client keeps the first credentials (and tokens) it
    /// saw per registry, so a shared client would keep using stale ones after a login.
    pub fn client(&self, host: &str) -> Client {
        let protocol = if self.plain_http(host) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        Client::new(ClientConfig {
            protocol,
            max_concurrent_download: self.config.max_concurrent_downloads.max(1),
            max_concurrent_upload: self.config.max_concurrent_uploads.max(1),
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            user_agent: concat!("husk/", env!("CARGO_PKG_VERSION")),
            // One PUT per blob instead of a PATCH per chunk.
            use_monolithic_push: true,
            ..Default::default()
        })
    }

    /// Credentials for `host`: `explicit` if given, else the stored ones, else anonymous.
    pub fn auth_for(&self, host: &str, explicit: Option<&Credentials>) -> Result<RegistryAuth> {
        let creds = match explicit {
            Some(c) => Some(c.clone()),
            None => self.credentials.get(host)?,
        };
        Ok(match creds {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        })
    }

    /// Where to fetch `name` from, in order: the mirrors of its registry (Docker Hub's `mirrors` for `docker.io`
    /// names, then `host_mirrors` of its host), then the registry, unless `host_mirrors` names its endpoints.
    pub fn endpoints(
        &self,
        name: &ImageName,
        explicit: Option<&Credentials>,
    ) -> Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        let hub: &[String] = if name.registry() == "docker.io" {
            &self.config.mirrors
        } else {
            &[]
        };
        let by_host = self
            .config
            .host_mirrors
            .get(name.registry())
            .map(Vec::as_slice)
            .unwrap_or_default();
        {
            for mirror in hub.iter().chain(by_host) {
                let host = mirror_host(mirror);
                let mut reference = name.reference().clone();
                reference.set_mirror_registry(host.clone());
                out.push(Endpoint {
                    reference,
                    client: self.client(&host),
                    auth: self.auth_for(&host, None)?,
                    host,
                });
            }
        }
        // A registry with mirrors of its own is reached only through them (list the registry itself among its
        // endpoints to fall back to it): a host cut off from the registry never tries it.
        if !by_host.is_empty() {
            return Ok(out);
        }
        let reference = name.reference().clone();
        let host = reference.resolve_registry().to_string();
        out.push(Endpoint {
            reference,
            client: self.client(&host),
            auth: self.auth_for(name.registry(), explicit)?,
            host,
        });
        Ok(out)
    }
}

impl crate::store::ImageStore {
    /// Checks `credentials` against `registry` (as `docker login` does: `GET /v2/`, then the token endpoint when the
    /// registry asks for a bearer token) and stores them. Nothing is stored when the registry refuses them.
    pub async fn login(&self, registry: &str, credentials: &Credentials) -> Result<()> {
        let host = login_host(registry);
        let scheme = if self.registries().plain_http(&host) {
            "http"
        } else {
            "https"
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("husk/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        let url = format!("{scheme}://{host}/v2/");
        let unreachable = |e: reqwest::Error| {
            Error::backend(format!(
                "login to {registry}: cannot reach {url}: {}",
                error_chain(&e)
            ))
        };
        let res = client
            .get(&url)
            .basic_auth(&credentials.username, Some(&credentials.password))
            .send()
            .await
            .map_err(unreachable)?;
        let refused = || {
            Error::new(
                ErrorKind::Unauthorized,
                format!("login to {registry}: the registry refused the user name or password"),
            )
        };
        match res.status().as_u16() {
            200 => {}
            401 => {
                let challenge = res
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let Some((realm, service)) = bearer_challenge(&challenge) else {
                    return Err(refused());
                };
                let mut token = client
                    .get(&realm)
                    .basic_auth(&credentials.username, Some(&credentials.password));
                token = token.query(&[("account", credentials.username.as_str())]);
                if let Some(service) = &service {
                    token = token.query(&[("service", service.as_str())]);
                }
                let res = token.send().await.map_err(unreachable)?;
                if !res.status().is_success() {
                    return Err(refused());
                }
            }
            code => {
                return Err(Error::backend(format!(
                    "login to {registry}: {url} answered HTTP {code}"
                )));
            }
        }
        self.registries().credentials().store(registry, credentials)
    }

    /// Forgets the stored credentials for `registry`; returns whether there were any.
    pub fn logout(&self, registry: &str) -> Result<bool> {
        self.registries().credentials().erase(registry)
    }
}

/// The host `login` talks to: Docker Hub's API host for `docker.io`.
fn login_host(registry: &str) -> String {
    let host = mirror_host(registry);
    match host.as_str() {
        "docker.io" | "index.docker.io" | "index.docker.io/v1" => {
            "registry-1.docker.io".to_string()
        }
        _ => host.split('/').next().unwrap_or(&host).to_string(),
    }
}

/// `Bearer realm="...",service="..."` into (realm, service).
fn bearer_challenge(header: &str) -> Option<(String, Option<String>)> {
    let rest = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut realm = None;
    let mut service = None;
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_string();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let v: String = chars.by_ref().take_while(|c| *c != '"').collect();
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
            chars.next();
            v
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            _ => {}
        }
    }
    Some((realm?, service))
}

/// `https://mirror.example.com/` is `mirror.example.com`.
fn mirror_host(mirror: &str) -> String {
    let m = mirror.trim();
    let m = m
        .strip_prefix("https://")
        .or_else(|| m.strip_prefix("http://"))
        .unwrap_or(m);
    m.trim_end_matches('/').to_string()
}

/// Loopback always; else what `insecure` lists (`host:port`, `host`, or a CIDR).
pub fn is_plain_http(host: &str, insecure: &[String]) -> bool {
    let bare = host_without_port(host);
    let ip: Option<IpAddr> = bare
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok();
    if bare == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    insecure.iter().map(|e| mirror_host(e)).any(|entry| {
        if entry == host || entry == bare {
            return true;
        }
        match (entry.split_once('/'), ip) {
            (Some((net, bits)), Some(ip)) => in_cidr(ip, net, bits),
            _ => false,
        }
    })
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

fn in_cidr(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A registry error as a husk error: `what` says what was being fetched or sent.
pub fn registry_error(what: &str, e: OciDistributionError) -> Error {
    let kind = match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ErrorKind::Unauthorized,
        OciDistributionError::ImageManifestNotFoundError(_) => ErrorKind::NotFound,
        OciDistributionError::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode as C;
            let has = |f: &dyn Fn(&C) -> bool| envelope.errors.iter().any(|e| f(&e.code));
            if has(&|c| {
                matches!(
                    c,
                    C::ManifestUnknown | C::NameUnknown | C::BlobUnknown | C::NotFound
                )
            }) {
                ErrorKind::NotFound
            } else if has(&|c| matches!(c, C::Unauthorized)) {
                ErrorKind::Unauthorized
            } else if has(&|c| matches!(c, C::Denied)) {
                ErrorKind::Forbidden
            } else {
                ErrorKind::Backend
            }
        }
        OciDistributionError::ServerError { code, .. } => status_kind(*code),
        OciDistributionError::RequestError(r) => r
            .status()
            .map(|s| status_kind(s.as_u16()))
            .unwrap_or(ErrorKind::Backend),
        _ => ErrorKind::Backend,
    };
    let detail = match kind {
        ErrorKind::Unauthorized => {
            format!("authentication required or refused ({e}): log in with `husk login`")
        }
        ErrorKind::NotFound => format!("not found in the registry ({e})"),
        _ => error_chain(&e),
    };
    Error::new(kind, format!("{what}: {detail}"))
}

fn status_kind(code: u16) -> ErrorKind {
    match code {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        _ => ErrorKind::Backend,
    }
}

/// An error with its sources, so "connection refused" is not lost behind "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let insecure = vec![
            "reg.lan:5000".to_string(),
            "other.lan".to_string(),
            "10.1.0.0/16".to_string(),
        ];
        for host in [
            "127.0.0.1:5000",
            "127.8.9.10",
            "localhost:5000",
            "[::1]:5000",
            "reg.lan:5000",
            "other.lan:443",
            "10.1.2.3:5000",
        ] {
            assert!(is_plain_http(host, &insecure), "{host}");
        }
        for host in ["docker.io", "reg.lan:5001", "10.2.0.1:5000", "quay.io"] {
            assert!(!is_plain_http(host, &insecure), "{host}");
        }
    }

    #[test]
    fn a_mirrored_registry_is_reached_only_through_its_mirrors() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RegistryConfig {
            mirrors: vec!["hub-mirror:5000".into()],
            ..Default::default()
        };
        config.host_mirrors.insert(
            "registry.k8s.io".into(),
            vec!["http://127.0.0.1:5000/".into(), "127.0.0.2:5000".into()],
        );
        let r = Registries::new(config, CredentialStore::new(dir.path().join("auth.json")));
        let hosts = |name: &str| -> Vec<String> {
            r.endpoints(&ImageName::parse(name).unwrap(), None)
                .unwrap()
                .into_iter()
                .map(|e| e.host)
                .collect()
        };
        assert_eq!(
            hosts("registry.k8s.io/pause:3.9"),
            ["127.0.0.1:5000", "127.0.0.2:5000"],
            "never the registry itself"
        );
        assert_eq!(hosts("busybox"), ["hub-mirror:5000", "index.docker.io"]);
        assert_eq!(hosts("quay.io/x/y:1"), ["quay.io"]);
    }

    #[test]
    fn bearer_challenges_parse() {
        let (realm, service) = bearer_challenge(r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="x""#).unwrap();
        assert_eq!(realm, "https://auth.example.com/token");
        assert_eq!(service.as_deref(), Some("registry.example.com"));
        assert!(bearer_challenge(r#"Basic realm="x""#).is_none());
        assert_eq!(login_host("docker.io"), "registry-1.docker.io");
        assert_eq!(login_host("https://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
    }

    #[test]
    fn registry_errors_keep_their_meaning() {
        let e = registry_error(
            "pull x",
            OciDistributionError::UnauthorizedError { url: "u".into() },
        );
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("husk login"));
        let e = registry_error(
            "pull x",
            OciDistributionError::ServerError {
                code: 404,
                url: "u".into(),
                message: "m".into(),
            },
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
    }
}
