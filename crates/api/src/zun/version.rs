//! Microversions: `OpenStack-API-Version: container X.Y` picks the API's behaviour per request.

use std::fmt;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ZunError;

/// A microversion `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Always 1.
    pub major: u16,
    /// 1 to 40.
    pub minor: u16,
}

/// The oldest microversion served.
pub const MIN_VERSION: Version = Version::new(1, 1);
/// The newest microversion served.
pub const MAX_VERSION: Version = Version::new(1, 40);

/// The request header (and response header) naming the microversion.
pub const HEADER: &str = "openstack-api-version";
const SERVICE: &str = "container";

impl Version {
    /// `major.minor`.
    pub const fn new(major: u16, minor: u16) -> Version {
        Version { major, minor }
    }

    /// Parses `X.Y`.
    pub fn parse(text: &str) -> Option<Version> {
        let (a, b) = text.trim().split_once('.')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(Version::new(a.parse().ok()?, b.parse().ok()?))
    }

    /// The version a request asks for: absent means 1.1, `latest` the newest; anything else outside the range
    /// (or not for the `container` service) is refused with 406.
    pub fn from_headers(headers: &HeaderMap) -> Result<Version, ZunError> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(MIN_VERSION);
        };
        let text = value.to_str().map_err(|_| {
            ZunError::not_acceptable("Invalid OpenStack-API-Version header: not text")
        })?;
        // The header may name several services: "compute 2.1, container 1.2".
        let ours = text.split(',').map(str::trim).find_map(|part| {
            let (service, version) = part.split_once(char::is_whitespace)?;
            service
                .eq_ignore_ascii_case(SERVICE)
                .then(|| version.trim())
        });
        let Some(requested) = ours else {
            return Ok(MIN_VERSION);
        };
        if requested.eq_ignore_ascii_case("latest") {
            return Ok(MAX_VERSION);
        }
        let v = Version::parse(requested).ok_or_else(|| {
            ZunError::not_acceptable(format!(
                "Invalid OpenStack-API-Version header {text:?}: use \"container X.Y\" or \"container latest\""
            ))
        })?;
        if v < MIN_VERSION || v > MAX_VERSION {
            return Err(ZunError::not_acceptable(format!(
                "Version {v} was requested but the minor version is not supported by this version of Zun. \
                 The supported version range is: [{MIN_VERSION}, {MAX_VERSION}]."
            )));
        }
        Ok(v)
    }

    /// 400 unless this version has `field` (added in `since`).
    pub fn require_field(self, field: &str, since: Version) -> Result<(), ZunError> {
        if self >= since {
            Ok(())
        } else {
            Err(ZunError::bad_request(format!(
                "Invalid param {field} because current request version is {self}. \
                 {field} is only supported from version {since}"
            )))
        }
    }

    /// 406 unless this version has the API (`since..=until`).
    pub fn require_api(self, what: &str, since: Version, until: Version) -> Result<(), ZunError> {
        if self >= since && self <= until {
            Ok(())
        } else {
            Err(ZunError::not_acceptable(format!(
                "{what} is only available in versions {since} to {until}; this request asked for {self}"
            )))
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Middleware: negotiates the version (406 on failure), hands it to handlers as an extension, and adds the
/// version headers to every answer.
pub async fn negotiate(mut request: Request, next: Next) -> Response {
    let version = Version::from_headers(request.headers());
    let mut response = match &version {
        Ok(v) => {
            request.extensions_mut().insert(*v);
            next.run(request).await
        }
        Err(e) => e.clone().into_response(),
    };
    let shown = version.unwrap_or(MIN_VERSION);
    let headers = response.headers_mut();
    let value = |v: Version| HeaderValue::from_str(&format!("{SERVICE} {v}")).ok();
    if let Some(v) = value(MIN_VERSION) {
        headers.insert("openstack-api-minimum-version", v);
    }
    if let Some(v) = value(MAX_VERSION) {
        headers.insert("openstack-api-maximum-version", v);
    }
    if let Some(v) = value(shown) {
        headers.insert(HEADER, v);
    }
    headers.insert("vary", HeaderValue::from_static("OpenStack-API-Version"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(h: &str) -> Result<Version, ZunError> {
        let mut m = HeaderMap::new();
        m.insert(HEADER, HeaderValue::from_str(h).unwrap());
        Version::from_headers(&m)
    }

    #[test]
    fn negotiation() {
        assert_eq!(
            Version::from_headers(&HeaderMap::new()).unwrap(),
            MIN_VERSION
        );
        assert_eq!(with("container 1.40").unwrap(), MAX_VERSION);
        assert_eq!(with("container latest").unwrap(), MAX_VERSION);
        assert_eq!(
            with("compute 2.1, container 1.5").unwrap(),
            Version::new(1, 5)
        );
        assert_eq!(
            with("compute 2.1").unwrap(),
            MIN_VERSION,
            "another service's version only"
        );
        for bad in [
            "container 1.41",
            "container 2.0",
            "container 1.0",
            "container x",
            "container 1.",
            "container 1.99999",
        ] {
            assert_eq!(with(bad).unwrap_err().status.as_u16(), 406, "{bad}");
        }
        assert!(Version::new(1, 9) < Version::new(1, 10));
    }

    #[test]
    fn gates() {
        let v = Version::new(1, 4);
        let e = v.require_field("runtime", Version::new(1, 5)).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(e.message.contains("runtime"));
        assert!(
            Version::new(1, 13)
                .require_api("rename", Version::new(1, 1), Version::new(1, 13))
                .is_ok()
        );
        assert_eq!(
            Version::new(1, 14)
                .require_api("rename", Version::new(1, 1), Version::new(1, 13))
                .unwrap_err()
                .status
                .as_u16(),
            406
        );
    }
}
