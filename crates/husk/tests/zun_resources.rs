//! Zun's other resources against a real daemon: hosts, services, availability zones, quotas (enforced per
//! project), container actions and images.

mod common;
mod zun;

use common::IMAGE;
use serde_json::json;
use zun::{ZunDaemon, http};

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

fn token(z: &ZunDaemon, user: &str, password: &str, project: &str) -> String {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "password": password, "domain": {"id": "default"}}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}
    }});
    let (status, headers, _) = z.http(
        "POST",
        "/identity/v3/auth/tokens",
        &["Content-Type: application/json"],
        Some(&body.to_string()),
    );
    assert_eq!(status, 201);
    headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-subject-token:")
                .then(|| l.split_once(':').unwrap().1.trim().to_string())
        })
        .unwrap()
}

#[test]
fn hosts_services_and_zones_report_this_host() {
    let z = ZunDaemon::start("none", &[]);
    let (status, v) = z.get("/v1/hosts");
    assert_eq!(status, 200, "{v}");
    let host = &v["hosts"][0];
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(host["mem_total"], total_kib / 1024);
    assert_eq!(
        host["cpus"],
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(
        host["kernel_version"],
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    assert!(
        host["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "runc"),
        "{host}"
    );
    assert!(host["disk_total"].as_u64().unwrap() > 0);
    let uuid = host["uuid"].as_str().unwrap();
    assert_eq!(
        z.get(&format!("/v1/hosts/{uuid}")).1["hostname"],
        host["hostname"]
    );
    let (status, _, _) = z.http(
        "GET",
        "/v1/hosts",
        &["OpenStack-API-Version: container 1.3"],
        None,
    );
    assert_eq!(status, 406, "hosts arrived in 1.4");

    let (_, zones) = z.get("/v1/availability_zones");
    assert_eq!(zones["availability_zones"][0]["availability_zone"], "nova");
    let (_, services) = z.get("/v1/services");
    let svc = &services["services"][0];
    assert_eq!(svc["binary"], "zun-compute");
    assert_eq!(svc["state"], "up");
    let hostname = svc["host"].as_str().unwrap().to_string();

    // A disabled compute service takes no new containers; enabling it again does.
    let path =
        format!("/v1/services/disable?host={hostname}&binary=zun-compute&disabled_reason=maint");
    let (status, v) = z.send("PUT", &path, &json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["service"]["disabled"], true);
    let (status, v) = z.send("POST", "/v1/containers", &json!({"image": IMAGE}));
    assert_eq!(status, 409, "{v}");
    assert!(v["errors"][0]["detail"].as_str().unwrap().contains("maint"));
    let (status, _) = z.send(
        "PUT",
        "/v1/services/enable",
        &json!({"host": hostname, "binary": "zun-compute"}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        z.send(
            "POST",
            "/v1/containers",
            &json!({"image": IMAGE, "name": "ok1"})
        )
        .0,
        202
    );
    let (_, actions) = z.get("/v1/containers/ok1/container_actions");
    let request_id = actions["containerActions"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, create) = z.get(&format!(
        "/v1/containers/ok1/container_actions/{request_id}"
    ));
    assert_eq!(
        create["events"][0]["result"], "Success",
        "administrators see events: {create}"
    );
    let (status, _) = z.send(
        "PUT",
        "/v1/services/force_down?host=nohost&binary=zun-compute&forced_down=True",
        &json!({}),
    );
    assert_eq!(status, 404);
    assert_eq!(z.http("DELETE", "/v1/containers/ok1", &[], None).0, 204);
}

#[test]
fn quotas_are_enforced_per_project_and_actions_recorded() {
    let z = ZunDaemon::start("keystone", &[]);
    for p in ["p1", "p2"] {
        z.d.husk(&["project", "create", p]).ok();
    }
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
        "admin1",
        "--password",
        "admin-pw-1",
        "--project",
        "p2",
        "--admin",
    ])
    .ok();
    let alice = token(&z, "alice", "alice-pw-1", "p1");
    let bob = token(&z, "bob", "bob-pw-12", "p2");
    let admin = token(&z, "admin1", "admin-pw-1", "p2");

    // Defaults come from the default class; members read only their own project's.
    let (status, q) = call(&z, &alice, "GET", "/v1/quotas/p1", None);
    assert_eq!(status, 200, "{q}");
    assert_eq!(
        q,
        json!({"containers": 40, "cpu": 20, "memory": 51200, "disk": 100})
    );
    assert_eq!(call(&z, &alice, "GET", "/v1/quotas/p2", None).0, 403);
    assert_eq!(
        call(
            &z,
            &alice,
            "PUT",
            "/v1/quotas/p1",
            Some(json!({"containers": 100}))
        )
        .0,
        403
    );
    assert_eq!(
        call(&z, &admin, "PUT", "/v1/quotas/p1", Some(json!({"gpus": 1}))).0,
        400
    );
    let (status, q) = call(
        &z,
        &admin,
        "PUT",
        "/v1/quotas/p1",
        Some(json!({"containers": 1, "memory": 1024})),
    );
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["containers"], 1);

    let (status, c) = call(
        &z,
        &alice,
        "POST",
        "/v1/containers?run=true",
        Some(json!({"name": "a1", "image": IMAGE, "command": ["sleep", "1000"], "memory": 256})),
    );
    assert_eq!(status, 202, "{c}");
    let (status, e) = call(
        &z,
        &alice,
        "POST",
        "/v1/containers",
        Some(json!({"name": "a2", "image": IMAGE})),
    );
    assert_eq!(status, 403, "{e}");
    assert!(
        e["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("containers"),
        "{e}"
    );
    assert_eq!(
        call(&z, &alice, "GET", "/v1/containers/a2", None).0,
        404,
        "a refused create leaves nothing"
    );
    // Another project is not held by p1's quota.
    assert_eq!(
        call(
            &z,
            &bob,
            "POST",
            "/v1/containers",
            Some(json!({"name": "b1", "image": IMAGE}))
        )
        .0,
        202
    );
    let (_, usage) = call(&z, &alice, "GET", "/v1/quotas/p1?usages=True", None);
    assert_eq!(usage["containers"], json!({"limit": 1, "in_use": 1}));
    assert_eq!(usage["memory"], json!({"limit": 1024, "in_use": 256}));
    // New limits of a running container: growth past the quota is refused and changes nothing; within it they
    // reach the container's cgroup at once and count in the usage.
    let (status, e) = call(
        &z,
        &alice,
        "PATCH",
        "/v1/containers/a1",
        Some(json!({"memory": 2048})),
    );
    assert_eq!(status, 403, "{e}");
    assert!(
        e["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("memory"),
        "{e}"
    );
    let (status, e) = call(
        &z,
        &alice,
        "PATCH",
        "/v1/containers/a1",
        Some(json!({"cpu": 99})),
    );
    assert_eq!(status, 400, "{e}");
    let (status, c) = call(
        &z,
        &alice,
        "PATCH",
        "/v1/containers/a1",
        Some(json!({"memory": "512", "cpu": 0.5})),
    );
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        (c["memory"].as_str(), c["cpu"].as_f64()),
        (Some("512"), Some(0.5)),
        "{c}"
    );
    let inspect = z.d.inspect(c["uuid"].as_str().unwrap());
    assert_eq!(inspect["HostConfig"]["Memory"], 512 << 20);
    assert_eq!(inspect["HostConfig"]["NanoCpus"], 500_000_000);
    let limit = z.d.husk(&[
        "exec",
        c["uuid"].as_str().unwrap(),
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    if limit.code == 0 {
        assert_eq!(
            limit.stdout.trim(),
            (512u64 << 20).to_string(),
            "the cgroup's limit"
        );
    }
    let (_, usage) = call(&z, &alice, "GET", "/v1/quotas/p1?usages=True", None);
    assert_eq!(usage["memory"], json!({"limit": 1024, "in_use": 512}));
    // Class defaults, and going back to them.
    let (status, class) = call(
        &z,
        &admin,
        "PUT",
        "/v1/quota_classes/default",
        Some(json!({"cpu": 10})),
    );
    assert_eq!(status, 200);
    assert_eq!(class["cpu"], 10);
    assert_eq!(
        call(&z, &alice, "GET", "/v1/quotas/p1/defaults", None).1["cpu"],
        10
    );
    assert_eq!(call(&z, &admin, "DELETE", "/v1/quotas/p1", None).0, 204);
    assert_eq!(
        call(&z, &alice, "GET", "/v1/quotas/p1", None).1["containers"],
        40
    );

    // The actions taken on a1, with events for administrators only.
    assert_eq!(
        call(&z, &alice, "POST", "/v1/containers/a1/pause", None).0,
        202
    );
    assert_eq!(
        call(&z, &alice, "POST", "/v1/containers/a1/stop", None).0,
        409,
        "Zun stops only running containers"
    );
    assert_eq!(
        call(&z, &alice, "POST", "/v1/containers/a1/unpause", None).0,
        202
    );
    assert_eq!(
        call(&z, &alice, "POST", "/v1/containers/a1/stop?timeout=1", None).0,
        202
    );
    let (status, actions) = call(
        &z,
        &alice,
        "GET",
        "/v1/containers/a1/container_actions",
        None,
    );
    assert_eq!(status, 200, "{actions}");
    let list = actions["containerActions"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "create", "start", "update", "update", "pause", "unpause", "stop"
        ],
        "{actions}"
    );
    // The update past the quota is recorded as failed, as Zun marks one ("Error"); the bad value never reached
    // the engine, so it is not an action.
    assert_eq!(list[2]["message"], "Error", "{actions}");
    assert!(
        list.iter()
            .enumerate()
            .all(|(i, a)| (i == 2 || a["message"].is_null()) && a["user_id"] == list[0]["user_id"]),
        "{actions}"
    );
    assert!(list[0]["finish_time"].is_string());
    let request_id = list[4]["request_id"].as_str().unwrap();
    let (_, one) = call(
        &z,
        &alice,
        "GET",
        &format!("/v1/containers/a1/container_actions/{request_id}"),
        None,
    );
    assert_eq!(one["action"], "pause");
    assert!(one.get("events").is_none(), "events are for administrators");
    assert_eq!(
        call(&z, &bob, "GET", "/v1/containers/a1/container_actions", None).0,
        404
    );
    assert_eq!(
        call(&z, &alice, "DELETE", "/v1/containers/a1?force=True", None).0,
        403
    );
    assert_eq!(call(&z, &alice, "DELETE", "/v1/containers/a1", None).0, 204);
    assert_eq!(call(&z, &bob, "DELETE", "/v1/containers/b1", None).0, 204);
}

#[test]
fn images_show_their_project_and_stay_while_used() {
    let z = ZunDaemon::start("none", &[]);
    let (status, v) = z.get("/v1/images");
    assert_eq!(status, 200, "{v}");
    let image = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tag"] == "1")
        .expect("the test image")
        .clone();
    assert_eq!(image["project_id"], "default");
    assert!(image["image_id"].as_str().unwrap().starts_with("sha256:"));
    assert!(image["size"].as_u64().unwrap() > 0);
    let uuid = image["uuid"].as_str().unwrap();
    assert_eq!(
        z.get(&format!("/v1/images/{uuid}")).1["repo"],
        image["repo"]
    );
    // An image a container uses stays.
    assert_eq!(
        z.send(
            "POST",
            "/v1/containers",
            &json!({"image": IMAGE, "name": "user1"})
        )
        .0,
        202
    );
    let (status, _, _) = z.http("DELETE", &format!("/v1/images/{uuid}"), &[], None);
    assert_eq!(status, 409);
    // Pulling from a registry that is not there fails cleanly (4xx/5xx from the backend, never a hang).
    let (status, v) = z.send(
        "POST",
        "/v1/images",
        &json!({"repo": "127.0.0.1:9/none/such", "tag": "1"}),
    );
    assert!(status >= 400, "{v}");
    assert_eq!(
        z.send("POST", "/v1/images", &json!({"repo": "x", "tag": "1"}))
            .0,
        400
    );
    // Commit: a new image from a container's changes, owned by the container's project.
    let (status, v) = z.send("POST", "/v1/containers?run=true", &json!({"image": IMAGE, "name": "maker", "command": ["sh", "-c", "echo made > /made; sleep 1000"]}));
    assert_eq!(status, 202, "{v}");
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(5),
        || {
            z.send(
                "POST",
                "/v1/containers/maker/execute?command=cat+/made",
                &json!(null),
            )
            .1["output"]
                == "made\n"
        }
    ));
    assert_eq!(
        z.send("POST", "/v1/containers/maker/commit", &json!(null))
            .0,
        400,
        "a repository is required"
    );
    let (status, v) = z.send(
        "POST",
        "/v1/containers/maker/commit?repository=zun/made&tag=v1",
        &json!(null),
    );
    assert_eq!(status, 202, "{v}");
    let new_uuid = v["uuid"].as_str().unwrap().to_string();
    let (status, img) = z.get(&format!("/v1/images/{new_uuid}"));
    assert_eq!(status, 200, "{img}");
    assert_eq!(img["tag"], "v1");
    assert_eq!(img["project_id"], "default");
    let (status, v) = z.send(
        "POST",
        "/v1/containers?run=true",
        &json!({"image": "zun/made:v1", "name": "from-commit", "command": ["cat", "/made"]}),
    );
    assert_eq!(status, 202, "{v}");
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(5),
        || { z.get("/v1/containers/from-commit/logs").1 == json!("made\n") }
    ));
    let (_, actions) = z.get("/v1/containers/maker/container_actions");
    assert!(
        actions["containerActions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "commit"),
        "{actions}"
    );
    let v12 = ["OpenStack-API-Version: container 1.12"];
    for c in ["maker", "from-commit"] {
        assert_eq!(
            z.http(
                "DELETE",
                &format!("/v1/containers/{c}?force=True"),
                &v12,
                None
            )
            .0,
            204
        );
    }
    assert_eq!(
        z.http("DELETE", &format!("/v1/images/{new_uuid}"), &[], None)
            .0,
        204
    );
    assert_eq!(z.http("DELETE", "/v1/containers/user1", &[], None).0, 204);
    assert_eq!(
        z.http("DELETE", &format!("/v1/images/{uuid}"), &[], None).0,
        204
    );
    assert_eq!(z.get(&format!("/v1/images/{uuid}")).0, 404);
}
