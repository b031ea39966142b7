//! Reading what clients send: query-string parameters (Zun passes most action arguments there, with Python's
//! `True`/`False`), JSON bodies with a size limit and errors that name the field, and list pagination.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ZunError;

/// The largest request body accepted (put_archive carries a base64 tar).
pub const BODY_LIMIT: usize = 16 << 20;

/// Query-string parameters, each given at most once.
#[derive(Debug, Clone, Default)]
pub struct Params(pub BTreeMap<String, String>);

/// Zun's `boolean_extended`: every spelling oslo's `bool_from_string` knows.
fn parse_bool_extended(text: &str) -> Option<bool> {
    match text {
        "True" | "TRUE" | "true" | "1" | "ON" | "On" | "on" | "YES" | "Yes" | "yes" => Some(true),
        "False" | "FALSE" | "false" | "0" | "OFF" | "Off" | "off" | "NO" | "No" | "no" => {
            Some(false)
        }
        _ => None,
    }
}

impl Params {
    /// Parses a query string; a parameter given twice is refused.
    pub fn parse(query: Option<&str>) -> Result<Params, ZunError> {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ZunError::invalid(
                    &k,
                    "the parameter is given more than once",
                ));
            }
        }
        Ok(Params(map))
    }

    /// 400 for any parameter not in `allowed` (Zun's query schemas forbid additional properties).
    pub fn only(&self, allowed: &[&str]) -> Result<&Params, ZunError> {
        if let Some(k) = self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ZunError::bad_request(format!(
                "Invalid query parameter {k}: this request takes {}",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        Ok(self)
    }

    /// A text parameter (Python's `None` spelled out counts as absent).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| *v != "None")
    }

    /// `all_projects` (an administrator's view across projects) of a request that takes no other parameter.
    pub fn only_all_projects(&self) -> Result<bool, ZunError> {
        self.only(&["all_projects"])?.flag("all_projects", false)
    }

    /// A boolean in any of oslo's spellings (`True`, `yes`, `1`, `off` ...).
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ZunError> {
        match self.text(key) {
            None => Ok(default),
            Some(v) => parse_bool_extended(v).ok_or_else(|| {
                ZunError::invalid(key, format!("{v:?} is not a boolean: use True or False"))
            }),
        }
    }

    /// A non-negative integer.
    pub fn uint(&self, key: &str) -> Result<Option<u32>, ZunError> {
        match self.text(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<u32>().map(Some).map_err(|_| {
                ZunError::invalid(key, format!("{v:?} is not a non-negative integer"))
            }),
        }
    }

    /// A positive integer.
    pub fn positive(&self, key: &str) -> Result<Option<u32>, ZunError> {
        match self.uint(key)? {
            Some(0) => Err(ZunError::invalid(key, "0 is less than the minimum of 1")),
            v => Ok(v),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ZunError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params, ZunError> {
        Params::parse(parts.uri.query())
    }
}

/// A JSON request body: `Content-Type: application/json` (415 otherwise), at most [`BODY_LIMIT`] bytes (413).
#[derive(Debug, Clone, Default)]
pub struct JsonBody(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ZunError;

    async fn from_request(request: Request, _: &S) -> Result<JsonBody, ZunError> {
        let content_type = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ZunError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!(
                    "Content type {:?} is not supported: send application/json",
                    content_type
                ),
            ));
        }
        read_limited(request).await.map(JsonBody)
    }
}

/// Reads a body of at most [`BODY_LIMIT`] bytes. One declared larger (`Content-Length`) is refused before any
/// of it is read: the client that waits for `100 Continue` never sends it, and none is left unread under the
/// answer to reset the connection.
pub async fn read_limited(request: Request) -> Result<bytes::Bytes, ZunError> {
    let too_large = || {
        ZunError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request-entity-too-large",
            format!(
                "The request body is over the limit of {BODY_LIMIT} bytes (or could not be read)"
            ),
        )
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), BODY_LIMIT)
        .await
        .map_err(|_| too_large())
}

impl JsonBody {
    /// Decodes the body; errors name the field that is wrong.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ZunError> {
        parse_json(&self.0)
    }
}

/// Decodes JSON, naming the failing field (`restart_policy.Name: unknown variant ...`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ZunError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ZunError::bad_request(format!("Invalid request body: {inner}"))
        } else {
            ZunError::invalid(&path, inner)
        }
    })
}

/// How a list is cut into pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Most items (capped at 1000).
    pub limit: usize,
    /// Start after the item with this UUID.
    pub marker: Option<String>,
    /// Field to sort by.
    pub sort_key: String,
    /// `asc` or `desc`.
    pub descending: bool,
}

/// The most items a page holds (Zun's `[api] max_limit`).
pub const MAX_LIMIT: usize = 1000;

impl Page {
    /// Reads `limit`, `marker`, `sort_key` (one of `keys`) and `sort_dir`.
    pub fn from_params(p: &Params, keys: &[&str], default_key: &str) -> Result<Page, ZunError> {
        let limit = match p.text("limit") {
            None => MAX_LIMIT,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => (n as usize).min(MAX_LIMIT),
                _ => {
                    return Err(ZunError::invalid(
                        "limit",
                        format!("{v:?} is not a positive integer"),
                    ));
                }
            },
        };
        let sort_key = p.text("sort_key").unwrap_or(default_key).to_string();
        if !keys.contains(&sort_key.as_str()) {
            return Err(ZunError::invalid(
                "sort_key",
                format!("{sort_key:?} is not one of {}", keys.join(", ")),
            ));
        }
        let descending = match p.text("sort_dir").unwrap_or("asc") {
            "asc" => false,
            "desc" => true,
            other => {
                return Err(ZunError::invalid(
                    "sort_dir",
                    format!("{other:?} is not asc or desc"),
                ));
            }
        };
        Ok(Page {
            limit,
            marker: p.text("marker").map(str::to_string),
            sort_key,
            descending,
        })
    }

    /// Sorts `items` by the key (`key_of` gives an item's value for a sort key, and its UUID), applies the
    /// marker and the limit, and says whether a next page may exist.
    pub fn apply<T>(
        &self,
        mut items: Vec<T>,
        key_of: impl Fn(&T, &str) -> SortValue,
        uuid_of: impl Fn(&T) -> String,
    ) -> Result<(Vec<T>, bool), ZunError> {
        items.sort_by(|a, b| {
            let o = key_of(a, &self.sort_key)
                .cmp(&key_of(b, &self.sort_key))
                .then_with(|| uuid_of(a).cmp(&uuid_of(b)));
            if self.descending { o.reverse() } else { o }
        });
        if let Some(m) = &self.marker {
            let at = items.iter().position(|i| &uuid_of(i) == m).ok_or_else(|| {
                ZunError::invalid("marker", format!("no item has the UUID {m:?}"))
            })?;
            items.drain(..=at);
        }
        let more = items.len() > self.limit;
        items.truncate(self.limit);
        Ok((items, more))
    }

    /// The `next` link after a full page ending at `last_uuid`, keeping the other parameters.
    pub fn next_link(&self, base: &str, params: &Params, last_uuid: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params.0 {
            if k != "marker" && k != "limit" {
                q.append_pair(k, v);
            }
        }
        q.append_pair("limit", &self.limit.to_string());
        q.append_pair("marker", last_uuid);
        format!("{base}?{}", q.finish())
    }
}

/// A value lists sort by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    /// Missing values sort first.
    None,
    /// Numbers.
    Number(f64),
    /// Text.
    Text(String),
}

impl Eq for SortValue {}

impl Ord for SortValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (SortValue::None, SortValue::None) => Ordering::Equal,
            (SortValue::None, _) => Ordering::Less,
            (_, SortValue::None) => Ordering::Greater,
            (SortValue::Number(a), SortValue::Number(b)) => a.total_cmp(b),
            (SortValue::Number(_), SortValue::Text(_)) => Ordering::Less,
            (SortValue::Text(_), SortValue::Number(_)) => Ordering::Greater,
            (SortValue::Text(a), SortValue::Text(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for SortValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_declared_too_large_is_refused_before_it_is_read() {
        // A body that never comes: only the declared length can answer in time.
        let never = futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let request = Request::builder()
            .header("Content-Length", (BODY_LIMIT + 1).to_string())
            .body(axum::body::Body::from_stream(never))
            .unwrap();
        let refused =
            tokio::time::timeout(std::time::Duration::from_secs(5), read_limited(request))
                .await
                .expect("answered without reading")
                .unwrap_err();
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        let fits = Request::builder()
            .header("Content-Length", "2")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        assert_eq!(read_limited(fits).await.unwrap(), "{}");
    }

    #[test]
    fn python_booleans_and_unknown_parameters() {
        let p = Params::parse(Some("force=False&stop=True&all_projects=no&x=None")).unwrap();
        assert!(!p.flag("force", true).unwrap());
        assert!(p.flag("stop", false).unwrap());
        assert!(!p.flag("all_projects", true).unwrap());
        assert!(p.flag("x", true).unwrap(), "None means absent");
        let bad = Params::parse(Some("force=maybe")).unwrap();
        assert!(
            bad.flag("force", false)
                .unwrap_err()
                .message
                .contains("force")
        );
        assert!(p.only(&["force", "stop"]).is_err());
        assert!(Params::parse(Some("a=1&a=2")).is_err());
        let q = Params::parse(Some("command=%22echo%22+%22hi%22")).unwrap();
        assert_eq!(q.text("command"), Some("\"echo\" \"hi\""));
    }

    #[test]
    fn pages() {
        let p = Params::parse(Some("limit=2&sort_key=name&sort_dir=desc")).unwrap();
        let page = Page::from_params(&p, &["name", "id"], "id").unwrap();
        let items = vec!["a", "c", "b", "d"];
        let (got, more) = page
            .apply(
                items.clone(),
                |s, _| SortValue::Text(s.to_string()),
                |s| s.to_string(),
            )
            .unwrap();
        assert_eq!(got, vec!["d", "c"]);
        assert!(more);
        let next = page.next_link("http://h/v1/containers", &p, "c");
        assert_eq!(
            next,
            "http://h/v1/containers?sort_dir=desc&sort_key=name&limit=2&marker=c"
        );
        let p2 = Params::parse(Some("limit=2&sort_key=name&sort_dir=desc&marker=c")).unwrap();
        let page2 = Page::from_params(&p2, &["name"], "name").unwrap();
        let (got, more) = page2
            .apply(
                items,
                |s, _| SortValue::Text(s.to_string()),
                |s| s.to_string(),
            )
            .unwrap();
        assert_eq!((got, more), (vec!["b", "a"], false));
        for bad in ["limit=0", "limit=x", "sort_key=nope", "sort_dir=up"] {
            let p = Params::parse(Some(bad)).unwrap();
            assert!(Page::from_params(&p, &["name"], "name").is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_name_the_bad_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct B {
            a: Option<u32>,
        }
        let e = parse_json::<B>(br#"{"a": "x"}"#).unwrap_err();
        assert!(e.message.contains("field/attribute a"), "{}", e.message);
        let e = parse_json::<B>(br#"{"zz": 1}"#).unwrap_err();
        assert!(e.message.contains("zz"), "{}", e.message);
        assert!(parse_json::<B>(b"{").is_err());
    }
}
