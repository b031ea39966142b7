//! The identity service and projects: the `zun` command with password authentication against husk's own
//! Keystone-v3-compatible service, tokens, and two projects that never see each other's containers.

mod common;
mod zun;

use common::IMAGE;
use serde_json::json;
use zun::{ZunDaemon, client, http};

/// Issues a token for `user` in `project`: (status, token).
fn token(z: &ZunDaemon, user: &str, password: &str, project: &str) -> (u16, String) {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "password": password, "domain": {"name": "Default"}}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}
    }});
    let (status, headers, _) = z.http(
        "POST",
        "/identity/v3/auth/tokens",
        &["Content-Type: application/json"],
        Some(&body.to_string()),
    );
    let token = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-subject-token:")
                .then(|| l.split_once(':').unwrap().1.trim().to_string())
        })
        .unwrap_or_default();
    (status, token)
}

/// A request with a token at microversion 1.40: (status, JSON body).
fn call(
    z: &ZunDaemon,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = format!("X-Auth-Token: {token}");
    let mut headers = vec![auth.as_str(), "OpenStack-API-Version: container 1.40"];
    if body.is_some() {
        headers.push("Content-Type: application/json");
    }
    let text = body.map(|b| b.to_string());
    let (status, _, out) = http(
        method,
        &format!("{}{path}", z.url),
        &headers,
        text.as_deref(),
    );
    (
        status,
        serde_json::from_str(&out).unwrap_or(serde_json::Value::Null),
    )
}

fn setup_users(z: &ZunDaemon) {
    z.d.husk(&["project", "create", "p1"]).ok();
    z.d.husk(&["project", "create", "p2"]).ok();
    z.d.husk(&[
        "user",
        "create",
        "alice",
        "--password",
        "alice-pw-1",
        "--project",
        "p1",
    ])
    .ok();
    z.d.husk(&[
        "user",
        "create",
        "bob",
        "--password",
        "bob-pw-12",
        "--project",
        "p2",
    ])
    .ok();
    z.d.husk(&[
        "user",
        "create",
        "root1",
        "--password",
        "root-pw-1",
        "--project",
        "p1",
        "--admin",
    ])
    .ok();
}

#[test]
fn zun_command_with_password_authentication() {
    let z = ZunDaemon::start("keystone", &[]);
    setup_users(&z);
    let bypass = format!("{}/v1", z.url);
    let auth_url = format!("{}/identity/v3", z.url);
    let zun_cmd = |args: &[&str]| {
        let mut all = vec![
            "--bypass-url",
            bypass.as_str(),
            "--os-auth-url",
            auth_url.as_str(),
            "--os-username",
            "alice",
            "--os-password",
            "alice-pw-1",
            "--os-project-name",
            "p1",
            "--os-user-domain-name",
            "Default",
            "--os-project-domain-name",
            "Default",
        ];
        all.extend_from_slice(args);
        client("zun", &all, &[])
    };
    let run = zun_cmd(&[
        "run",
        "--name",
        "web",
        IMAGE,
        "sh",
        "-c",
        "echo hello-zun; sleep 1000",
    ]);
    assert!(run.stdout.contains("web"), "{}\n{}", run.stdout, run.stderr);
    let list = zun_cmd(&["list"]).ok();
    assert!(list.contains("web") && list.contains("Running"), "{list}");
    let show = zun_cmd(&["show", "web"]).ok();
    assert!(show.contains("Running"), "{show}");
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(5),
        || { zun_cmd(&["logs", "web"]).stdout.contains("hello-zun") }
    ));
    let exec = zun_cmd(&["exec", "web", "sh", "-c", "echo in-$((40+2))"]);
    assert!(
        exec.stdout.contains("in-42"),
        "{} {}",
        exec.stdout,
        exec.stderr
    );
    let stop = zun_cmd(&["stop", "web"]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(15),
        || { zun_cmd(&["show", "web"]).stdout.contains("Stopped") }
    ));
    zun_cmd(&["start", "web"]).ok();
    let del = zun_cmd(&["delete", "--stop", "web"]);
    assert_eq!(del.code, 0, "{}", del.stderr);
    assert!(!zun_cmd(&["list"]).ok().contains("web"));
    // A wrong password is refused before any container call.
    let bad = client(
        "zun",
        &[
            "--bypass-url",
            &bypass,
            "--os-auth-url",
            &auth_url,
            "--os-username",
            "alice",
            "--os-password",
            "wrong-pw",
            "--os-project-name",
            "p1",
            "--os-user-domain-name",
            "Default",
            "--os-project-domain-name",
            "Default",
            "list",
        ],
        &[],
    );
    assert_ne!(bad.code, 0);
}

#[test]
fn tokens_are_issued_validated_and_revoked() {
    let z = ZunDaemon::start("keystone", &[]);
    setup_users(&z);
    let (status, doc) = z.get("/identity/v3");
    assert_eq!(status, 200);
    assert_eq!(doc["version"]["id"], "v3.14");
    assert_eq!(token(&z, "alice", "nope-nope", "p1").0, 401);
    assert_eq!(token(&z, "nobody", "alice-pw-1", "p1").0, 401);
    assert_eq!(
        token(&z, "alice", "alice-pw-1", "p2").0,
        401,
        "alice is not a member of p2"
    );
    let (status, alice) = token(&z, "alice", "alice-pw-1", "p1");
    assert_eq!(status, 201);
    assert_eq!(alice.len(), 64);
    // Validation of a token by another.
    let (status, _, body) = z.http(
        "GET",
        "/identity/v3/auth/tokens",
        &[
            &format!("X-Auth-Token: {alice}"),
            &format!("X-Subject-Token: {alice}"),
        ],
        None,
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["token"]["project"]["name"], "p1");
    assert_eq!(v["token"]["user"]["name"], "alice");
    assert!(v["token"]["expires_at"].is_string());
    assert_eq!(v["token"]["catalog"][0]["type"], "container");
    // Without or with a bad token, Zun's API answers 401; the version document is public.
    assert_eq!(call(&z, "", "GET", "/v1/containers", None).0, 401);
    assert_eq!(call(&z, "garbage", "GET", "/v1/containers", None).0, 401);
    assert_eq!(call(&z, &alice, "GET", "/v1/containers", None).0, 200);
    assert_eq!(z.get("/").0, 200);
    let (status, doc) = z.get("/v1/openapi.json");
    assert_eq!(status, 200, "the OpenAPI document is public");
    assert!(doc["paths"]["/v1/containers"]["post"].is_object());
    // Revocation.
    let (status, _, _) = z.http(
        "DELETE",
        "/identity/v3/auth/tokens",
        &[
            &format!("X-Auth-Token: {alice}"),
            &format!("X-Subject-Token: {alice}"),
        ],
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(call(&z, &alice, "GET", "/v1/containers", None).0, 401);
    // Users need real passwords and existing projects.
    assert_ne!(
        z.d.husk(&[
            "user",
            "create",
            "carol",
            "--password",
            "short",
            "--project",
            "p1"
        ])
        .code,
        0
    );
    assert_ne!(
        z.d.husk(&[
            "user",
            "create",
            "carol",
            "--password",
            "long-enough",
            "--project",
            "nope"
        ])
        .code,
        0
    );
    assert_ne!(
        z.d.husk(&[
            "user",
            "create",
            "alice",
            "--password",
            "long-enough",
            "--project",
            "p1"
        ])
        .code,
        0
    );
    // Stored hashes are Argon2id, never the password.
    let db = std::fs::read(z.d.root.join("husk.db")).unwrap_or_default();
    let text = String::from_utf8_lossy(&db);
    assert!(!text.contains("alice-pw-1"));
}

/// A daemon with the test's users, where alice (project p1) has run container `a-web`: the daemon, alice's and
/// bob's (p2) tokens, and the created container as Zun shows it.
fn alice_runs_a_web() -> (ZunDaemon, String, String, serde_json::Value) {
    let z = ZunDaemon::start("keystone", &[]);
    setup_users(&z);
    let alice = token(&z, "alice", "alice-pw-1", "p1").1;
    let bob = token(&z, "bob", "bob-pw-12", "p2").1;
    let (status, c) = call(
        &z,
        &alice,
        "POST",
        "/v1/containers?run=true",
        Some(json!({"name": "a-web", "image": IMAGE, "command": ["sleep", "1000"]})),
    );
    assert_eq!(status, 202, "{c}");
    (z, alice, bob, c)
}

#[test]
fn two_projects_never_see_each_other() {
    let (z, alice, bob, c) = alice_runs_a_web();
    let admin = token(&z, "root1", "root-pw-1", "p1").1;
    let uuid = c["uuid"].as_str().unwrap().to_string();
    assert!(
        c.get("runtime").is_none() && c.get("host").is_none(),
        "admin-only fields hidden from members: {c}"
    );
    let (status, b) = call(
        &z,
        &bob,
        "POST",
        "/v1/containers",
        Some(json!({"name": "b-web", "image": IMAGE, "command": ["sleep", "1000"]})),
    );
    assert_eq!(status, 202, "{b}");

    let names = |token: &str, q: &str| -> Vec<String> {
        let (status, v) = call(&z, token, "GET", &format!("/v1/containers{q}"), None);
        assert_eq!(status, 200, "{v}");
        v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&alice, ""), ["a-web"]);
    assert_eq!(names(&bob, ""), ["b-web"]);
    // Bob cannot see, act on or delete alice's container, by name or by UUID, nor by an ID prefix.
    for ident in ["a-web", uuid.as_str(), &uuid[..12]] {
        assert_eq!(
            call(&z, &bob, "GET", &format!("/v1/containers/{ident}"), None).0,
            404,
            "{ident}"
        );
        assert_eq!(
            call(
                &z,
                &bob,
                "POST",
                &format!("/v1/containers/{ident}/stop"),
                None
            )
            .0,
            404
        );
        assert_eq!(
            call(
                &z,
                &bob,
                "DELETE",
                &format!("/v1/containers/{ident}?force=True"),
                None
            )
            .0,
            403,
            "force is admin-only"
        );
        assert_eq!(
            call(
                &z,
                &bob,
                "DELETE",
                &format!("/v1/containers/{ident}?stop=True"),
                None
            )
            .0,
            404
        );
        assert_eq!(
            call(
                &z,
                &bob,
                "POST",
                &format!("/v1/containers/{ident}/execute?command=true"),
                None
            )
            .0,
            404
        );
    }
    // Members may not look across projects or use admin-only fields; an administrator may.
    assert_eq!(
        call(&z, &bob, "GET", "/v1/containers?all_projects=True", None).0,
        403
    );
    let (status, _) = call(
        &z,
        &bob,
        "POST",
        "/v1/containers",
        Some(json!({"image": IMAGE, "runtime": "runc"})),
    );
    assert_eq!(status, 403);
    let mut all = names(&admin, "?all_projects=True");
    all.sort();
    assert_eq!(all, ["a-web", "b-web"]);
    assert_eq!(
        names(&admin, ""),
        ["a-web"],
        "without all_projects an admin sees its own project"
    );
    let (_, shown) = call(&z, &admin, "GET", "/v1/containers/a-web", None);
    assert_eq!(shown["runtime"], "runc", "admins see admin-only fields");
    // The unix socket (local root) sees everything, with its project.
    let ps = z.d.husk(&["ps", "-a", "--format", "json"]).ok();
    assert!(ps.contains("a-web") && ps.contains("b-web"), "{ps}");
    // Alice's container still runs: nothing bob did touched it.
    assert_eq!(
        call(&z, &alice, "GET", "/v1/containers/a-web", None).1["status"],
        "Running"
    );
    assert_eq!(
        call(&z, &alice, "DELETE", "/v1/containers/a-web?stop=True", None).0,
        204
    );
    assert_eq!(
        call(&z, &bob, "DELETE", "/v1/containers/b-web", None).0,
        204
    );
}

/// Every Zun route that names an object (the paths of the API's own OpenAPI document, so a new route is tried
/// without editing this test), called by a member of another project with alice's container, capsule, image
/// and project: each is refused (403, or 404 as if it did not exist), and alice's objects are as they were.
#[test]
fn no_zun_route_reaches_another_projects_objects() {
    let (z, alice, bob, c) = alice_runs_a_web();
    let container = c["uuid"].as_str().unwrap().to_string();
    let project = c["project_id"].as_str().unwrap().to_string();
    let running = || call(&z, &alice, "GET", "/v1/containers/a-web", None).1["status"] == "Running";
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(10),
        running
    ));
    let (status, v) = call(
        &z,
        &alice,
        "POST",
        "/v1/containers/a-web/commit?repository=p1/made&tag=v1",
        None,
    );
    assert_eq!(status, 202, "{v}");
    let image = v["uuid"].as_str().unwrap().to_string();
    let (status, v) = call(
        &z,
        &alice,
        "POST",
        "/v1/capsules",
        Some(
            json!({"template": {"kind": "capsule", "metadata": {"name": "a-cap"},
            "spec": {"containers": [{"image": IMAGE, "command": ["sleep", "1000"]}]}}}),
        ),
    );
    assert_eq!(status, 202, "{v}");
    let capsule = v["uuid"].as_str().unwrap().to_string();

    let (status, doc) = call(&z, &alice, "GET", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    let mut tried = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        if !path.contains('{') {
            continue;
        }
        let object = if path.starts_with("/v1/containers/") {
            &container
        } else if path.starts_with("/v1/capsules/") {
            &capsule
        } else if path.starts_with("/v1/images/") {
            &image
        } else if path.starts_with("/v1/quotas/") {
            &project
        } else {
            // Hosts and quota classes: not a project's, and for administrators only.
            "default"
        };
        let concrete = path
            .replace("{id}", object)
            .replace("{project_id}", object)
            .replace("{request_id}", "req-0")
            .replace("{ident}", object)
            .replace("{name}", object);
        assert!(
            !concrete.contains('{'),
            "a parameter this test does not know: {path}"
        );
        // What makes each request valid, so that only the project stands in its way.
        let query = match path.rsplit('/').next().unwrap() {
            "commit" => "?repository=p2/taken&tag=1",
            "execute" => "?command=true",
            "rename" => "?name=taken",
            "resize" | "execute_resize" => "?h=10&w=40&exec_id=x",
            "kill" => "?signal=SIGKILL",
            "get_archive" | "put_archive" => "?path=/",
            _ => "",
        };
        for method in methods.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            let body = match (method.as_str(), path.rsplit('/').next().unwrap()) {
                ("POST", "put_archive") => Some(json!({"data": ""})),
                ("PATCH", _) => Some(json!({"memory": "64"})),
                ("POST" | "PUT", _) => Some(json!({})),
                _ => None,
            };
            let request = format!("{concrete}{query}");
            let (status, v) = call(&z, &bob, &method, &request, body.clone());
            if status == 400 || status == 406 {
                // Refused for its input or its microversion alone, as for an object that does not exist:
                // nothing learned.
                let missing = request.replace(object, "not-there");
                let (other, w) = call(&z, &bob, &method, &missing, body);
                // Each answer names its own request.
                let anonymous = |mut v: serde_json::Value| {
                    if let Some(e) = v["errors"][0].as_object_mut() {
                        e.remove("request_id");
                    }
                    v
                };
                assert_eq!(
                    (other, anonymous(w)),
                    (status, anonymous(v)),
                    "{method} {path}: its {status} depends on the object"
                );
            } else {
                assert!(
                    status == 403 || status == 404,
                    "{method} {request} as another project: {status} {v}"
                );
            }
            tried += 1;
        }
    }
    assert!(tried >= 30, "only {tried} routes tried");
    // Nor do lists show them (the image list is for administrators only, as in Zun's policy).
    assert_eq!(call(&z, &bob, "GET", "/v1/images", None).0, 403);
    for (list, key) in [
        ("/v1/containers", "containers"),
        ("/v1/capsules", "capsules"),
    ] {
        let (status, v) = call(&z, &bob, "GET", list, None);
        assert_eq!(status, 200, "{list}: {v}");
        let text = v[key].to_string();
        for id in [&container, &capsule, &image] {
            assert!(!text.contains(id.as_str()), "{list} shows {id}: {text}");
        }
    }
    // Alice's objects are as they were.
    assert!(running());
    assert_eq!(
        call(&z, &alice, "GET", &format!("/v1/capsules/{capsule}"), None).0,
        200
    );
    // Images are shown to administrators only: the local socket's view.
    let inspect = z.d.husk(&["image", "inspect", "p1/made:v1"]);
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
}

/// `token_lifetime` bounds a token's life: it works until then and is refused after, and the API socket belongs
/// to `socket_group` with mode 0660.
#[test]
fn tokens_expire_and_the_socket_belongs_to_its_group() {
    let z = ZunDaemon::start_with(
        "keystone",
        &[],
        "token_lifetime = \"3s\"\nsocket_group = \"65533\"\n",
    );
    setup_users(&z);
    let (status, alice) = token(&z, "alice", "alice-pw-1", "p1");
    assert_eq!(status, 201);
    assert_eq!(call(&z, &alice, "GET", "/v1/containers", None).0, 200);
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        call(&z, &alice, "GET", "/v1/containers", None).0,
        401,
        "an expired token"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let socket = std::fs::metadata(&z.d.socket).unwrap();
    assert_eq!(socket.gid(), 65533);
    assert_eq!(socket.permissions().mode() & 0o777, 0o660);
}
