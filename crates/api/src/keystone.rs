//! The identity service Zun's clients authenticate against, in Keystone v3's shapes: password authentication
//! scoped to a project, token validation and revocation, and a catalog naming this daemon's container API.
//! Users and projects live in the engine ([`husk_engine::identity`]); this is the wire format only.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use husk_engine::Engine;
use husk_engine::identity::{ScopeRequest, TokenRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::zun::BaseUrl;
use crate::zun::params::read_limited;

/// The one domain husk knows.
const DOMAIN_ID: &str = "default";
const DOMAIN_NAME: &str = "Default";

/// A Keystone error: `{"error": {"code", "title", "message"}}`.
#[derive(Debug)]
pub struct KeystoneError(StatusCode, String);

impl IntoResponse for KeystoneError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.0.as_u16(),
            "title": self.0.canonical_reason().unwrap_or("Error"),
            "message": self.1,
        }});
        (self.0, Json(body)).into_response()
    }
}

fn unauthorized() -> KeystoneError {
    KeystoneError(
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication.".into(),
    )
}

fn bad_request(message: impl Into<String>) -> KeystoneError {
    KeystoneError(StatusCode::BAD_REQUEST, message.into())
}

/// The routes under `/identity`.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/v3", get(v3))
        .route(
            "/identity/v3/auth/tokens",
            get(check_token)
                .head(check_token)
                .post(issue_token)
                .delete(revoke_token),
        )
        .with_state(engine)
}

fn v3_doc(base: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

async fn versions(BaseUrl(base): BaseUrl) -> Json<Value> {
    Json(json!({"versions": {"values": [v3_doc(&base)]}}))
}

async fn v3(BaseUrl(base): BaseUrl) -> Json<Value> {
    Json(json!({ "version": v3_doc(&base) }))
}

/// `{"id"}` or `{"name"}` with an optional domain.
#[derive(Debug, Default, Deserialize)]
struct NamedRef {
    id: Option<String>,
    name: Option<String>,
    domain: Option<Box<NamedRef>>,
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PasswordMethod {
    user: NamedRef,
}

#[derive(Debug, Deserialize)]
struct Identity {
    methods: Vec<String>,
    password: Option<PasswordMethod>,
}

#[derive(Debug, Default, Deserialize)]
struct ScopeBody {
    project: Option<NamedRef>,
}

#[derive(Debug, Deserialize)]
struct Auth {
    identity: Identity,
    #[serde(default)]
    scope: Option<ScopeBody>,
}

#[derive(Debug, Deserialize)]
struct AuthBody {
    auth: Auth,
}

/// Only the default domain exists.
fn check_domain(domain: &Option<Box<NamedRef>>) -> Result<(), KeystoneError> {
    match domain {
        None => Ok(()),
        Some(d) => {
            let id_ok = d.id.as_deref().is_none_or(|i| i == DOMAIN_ID);
            let name_ok = d
                .name
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(DOMAIN_NAME));
            if id_ok && name_ok {
                Ok(())
            } else {
                Err(unauthorized())
            }
        }
    }
}

fn token_body(t: &TokenRecord, base: &str) -> Value {
    let domain = json!({"id": DOMAIN_ID, "name": DOMAIN_NAME});
    let endpoint = |interface: &str| {
        json!({"id": format!("husk-container-{interface}"), "interface": interface, "region": "RegionOne",
               "region_id": "RegionOne", "url": format!("{base}/v1")})
    };
    json!({"token": {
        "methods": ["password"],
        "expires_at": t.expires_at,
        "issued_at": t.issued_at,
        "audit_ids": [&t.id[..22]],
        "user": {"id": t.user_id, "name": t.user_name, "domain": domain, "password_expires_at": null},
        "project": {"id": t.project_id, "name": t.project_name, "domain": domain},
        "is_domain": false,
        "roles": t.roles.iter().map(|r| json!({"id": r, "name": r})).collect::<Vec<_>>(),
        "catalog": [{
            "type": "container", "name": "zun", "id": "husk-container",
            "endpoints": [endpoint("public"), endpoint("internal"), endpoint("admin")],
        }],
    }})
}

/// `POST /identity/v3/auth/tokens`: password authentication; 201 with `X-Subject-Token`.
async fn issue_token(
    State(engine): State<Engine>,
    BaseUrl(base): BaseUrl,
    request: axum::extract::Request,
) -> Result<Response, KeystoneError> {
    let bytes = read_limited(request)
        .await
        .map_err(|e| KeystoneError(e.status, e.message))?;
    let body: AuthBody = serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("Invalid authentication request: {e}")))?;
    let identity = body.auth.identity;
    if !identity.methods.iter().any(|m| m == "password") {
        return Err(bad_request(
            "Only password authentication is supported: use methods [\"password\"]",
        ));
    }
    let user = identity
        .password
        .ok_or_else(|| bad_request("Password authentication needs identity.password"))?
        .user;
    check_domain(&user.domain)?;
    let name = user
        .name
        .or(user.id)
        .ok_or_else(|| bad_request("identity.password.user needs a name or an id"))?;
    let password = user
        .password
        .ok_or_else(|| bad_request("identity.password.user needs a password"))?;
    let scope = match body.auth.scope.and_then(|s| s.project) {
        Some(p) => {
            check_domain(&p.domain)?;
            ScopeRequest {
                id: p.id,
                name: p.name,
            }
        }
        None => ScopeRequest::default(),
    };
    let (token, rec) = engine
        .authenticate(&name, &password, &scope)
        .await
        .map_err(|_| unauthorized())?;
    let mut response = (StatusCode::CREATED, Json(token_body(&rec, &base))).into_response();
    if let Ok(v) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("x-subject-token", v);
    }
    Ok(response)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `GET`/`HEAD /identity/v3/auth/tokens`: validates `X-Subject-Token` for a caller with a valid `X-Auth-Token`.
async fn check_token(
    State(engine): State<Engine>,
    BaseUrl(base): BaseUrl,
    headers: HeaderMap,
) -> Result<Response, KeystoneError> {
    engine
        .validate_token(header(&headers, "x-auth-token"))
        .map_err(|_| unauthorized())?;
    let subject = header(&headers, "x-subject-token");
    let rec = engine
        .validate_token(subject)
        .map_err(|_| KeystoneError(StatusCode::NOT_FOUND, "Could not find token.".into()))?;
    let mut response = Json(token_body(&rec, &base)).into_response();
    if let Ok(v) = HeaderValue::from_str(subject) {
        response.headers_mut().insert("x-subject-token", v);
    }
    Ok(response)
}

/// `DELETE /identity/v3/auth/tokens`: revokes `X-Subject-Token`.
async fn revoke_token(
    State(engine): State<Engine>,
    headers: HeaderMap,
) -> Result<StatusCode, KeystoneError> {
    engine
        .validate_token(header(&headers, "x-auth-token"))
        .map_err(|_| unauthorized())?;
    engine
        .revoke_token(header(&headers, "x-subject-token"))
        .map_err(|_| KeystoneError(StatusCode::NOT_FOUND, "Could not find token.".into()))?;
    Ok(StatusCode::NO_CONTENT)
}
