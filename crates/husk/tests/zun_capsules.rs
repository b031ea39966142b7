//! Capsules: a Kubernetes Pod through `husk capsule`, Zun's template through the real `zun` and `openstack`
//! clients; init containers run first, volumes are shared, everything goes with the capsule.

mod common;
mod zun;

use std::time::Duration;

use common::{Daemon, IMAGE};
use zun::{ZunDaemon, client};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: pod1
  labels: {app: web}
spec:
  restartPolicy: Never
  initContainers:
  - name: prepare
    image: test/busybox:1
    command: ["sh", "-c", "echo prepared-by-init > /shared/ready"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: web
    image: test/busybox:1
    command: ["sh", "-c", "mkdir -p /w && cp /shared/ready /w/index.html && exec httpd -f -p 8080 -h /w"]
    volumeMounts: [{name: shared, mountPath: /shared, readOnly: true}]
  - name: client
    image: test/busybox:1
    command: ["sh", "-c"]
    args: ["for i in $(seq 1 50); do wget -qO- http://localhost:8080/ && break; sleep 0.1; done; sleep 1000"]
    env: [{name: WHO, value: client}]
  volumes:
  - name: shared
    emptyDir: {}
"#;

#[test]
fn pod_manifest_through_the_cli() {
    let d = Daemon::start(&[]);
    let file = d.dir.path().join("pod.yaml");
    std::fs::write(&file, POD).unwrap();
    let id = d
        .husk(&["capsule", "create", "-f", file.to_str().unwrap()])
        .ok();
    assert_eq!(id.len(), 64, "{id}");
    let ls = d.husk(&["capsule", "ls"]).ok();
    assert!(ls.contains("pod1") && ls.contains("2/2"), "{ls}");
    let init = d.inspect("pod1-init-prepare");
    assert_eq!(init["State"]["Status"], "exited");
    assert_eq!(init["State"]["ExitCode"], 0);
    // The client reached the web container over the capsule's shared localhost, and read what the init
    // container left in the shared volume.
    assert!(Daemon::eventually(Duration::from_secs(10), || {
        d.husk(&["logs", "pod1-client"])
            .stdout
            .contains("prepared-by-init")
    }));
    assert_eq!(
        d.inspect("pod1-web")["SandboxId"],
        d.inspect("pod1-client")["SandboxId"]
    );
    // The read-only mount is read-only.
    let w = d.husk(&["exec", "pod1-web", "sh", "-c", "touch /shared/x"]);
    assert_ne!(w.code, 0);
    // The volume is the sandbox's own: listed while the capsule lives, gone with it.
    let volumes = d.husk(&["volume", "ls"]).ok();
    assert!(volumes.contains("shared"), "{volumes}");
    d.husk(&["capsule", "rm", "pod1"]).ok();
    assert!(d.husk(&["capsule", "ls", "-q"]).ok().is_empty());
    assert!(d.husk(&["ps", "-aq"]).ok().is_empty());
    assert!(
        !d.husk(&["volume", "ls"]).ok().contains("shared"),
        "volumes go with the capsule"
    );
    d.assert_no_leftovers();
}

#[test]
fn a_failing_init_container_stops_the_capsule() {
    let d = Daemon::start(&[]);
    let file = d.dir.path().join("bad.json");
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "broken"},
        "spec": {
            "initContainers": [{"name": "check", "image": IMAGE, "command": ["sh", "-c", "echo failing; exit 3"]}],
            "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "1000"]}]
        }
    });
    std::fs::write(&file, manifest.to_string()).unwrap();
    let r = d.husk(&["capsule", "create", "-f", file.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("exited with code 3"), "{}", r.stderr);
    let inspect: serde_json::Value =
        serde_json::from_str(&d.husk(&["capsule", "inspect", "broken"]).ok()).unwrap();
    assert_eq!(inspect[0]["Status"], "Error");
    assert!(
        inspect[0]["Containers"].as_array().unwrap().is_empty(),
        "no app container after a failed init"
    );
    assert!(
        d.husk(&["logs", "broken-init-check"])
            .stdout
            .contains("failing")
    );
    // Bad manifests change nothing.
    std::fs::write(
        &file,
        r#"{"kind": "Pod", "spec": {"containers": [{"image": "x", "surprise": 1}]}}"#,
    )
    .unwrap();
    let r = d.husk(&["capsule", "create", "-f", file.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("surprise"), "{}", r.stderr);
    d.husk(&["capsule", "rm", "broken"]).ok();
    assert!(d.husk(&["ps", "-aq"]).ok().is_empty());
    d.assert_no_leftovers();
}

const TEMPLATE: &str = r#"
capsuleVersion: beta
kind: capsule
metadata:
  name: demo
  labels:
    app: web
availabilityZone: nova
spec:
  restartPolicy: Always
  initContainers:
  - image: test/busybox:1
    command: ["sh", "-c", "echo init-done > /data1/marker"]
    volumeMounts:
    - name: volume1
      mountPath: /data1
  containers:
  - image: test/busybox:1
    command: ["sh", "-c"]
    args: ["cat /data1/marker; echo $ENV1; sleep 1000"]
    workDir: /root
    resources:
      requests:
        cpu: 0.5
        memory: 64
    env:
      ENV1: hello-env
    volumeMounts:
    - name: volume1
      mountPath: /data1
      readOnly: True
  volumes:
  - name: volume1
    cinder:
      size: 1
      autoRemove: True
"#;

#[test]
fn zun_capsule_create_from_a_template() {
    let z = ZunDaemon::start("keystone", &[]);
    z.d.husk(&["project", "create", "p1"]).ok();
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
    let file = z.d.dir.path().join("template.yaml");
    std::fs::write(&file, TEMPLATE).unwrap();
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
    let created = zun_cmd(&["capsule-create", "-f", file.to_str().unwrap()]);
    assert_eq!(created.code, 0, "{}\n{}", created.stdout, created.stderr);
    let list = zun_cmd(&["capsule-list"]).ok();
    assert!(list.contains("demo") && list.contains("Running"), "{list}");
    let describe = zun_cmd(&["capsule-describe", "demo"]).ok();
    assert!(
        describe.contains("demo-c0") && describe.contains("demo-init-init0"),
        "{describe}"
    );
    assert!(Daemon::eventually(Duration::from_secs(10), || {
        let logs = z.d.husk(&["logs", "demo-c0"]).stdout;
        logs.contains("init-done") && logs.contains("hello-env")
    }));
    // Capsule members are not plain containers: not listed, not deletable on their own.
    assert!(!zun_cmd(&["list"]).ok().contains("demo-c0"));
    let refused = zun_cmd(&["delete", "demo-c0"]);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("belongs to capsule"),
        "{}",
        refused.stdout
    );
    assert!(
        z.d.husk(&["ps", "-q"]).ok().lines().count() == 1,
        "the member still runs"
    );
    let deleted = zun_cmd(&["capsule-delete", "demo"]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert!(!zun_cmd(&["capsule-list"]).ok().contains("demo"));
    assert!(z.d.husk(&["ps", "-aq"]).ok().is_empty());
}

#[test]
fn openstack_capsule_commands() {
    let z = ZunDaemon::start("none", &[]);
    let file = z.d.dir.path().join("template.yaml");
    std::fs::write(&file, TEMPLATE).unwrap();
    let created = z.osc(&["capsule", "create", "--file", file.to_str().unwrap()]);
    assert_eq!(created.code, 0, "{}\n{}", created.stdout, created.stderr);
    let show = z.osc(&["capsule", "show", "demo", "-f", "json"]).ok();
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["status"], "Running");
    assert_eq!(show["cpu"], 0.5);
    assert_eq!(show["memory"], "64");
    assert_eq!(show["labels"]["app"], "web");
    assert_eq!(show["init_containers"][0]["status"], "Stopped");
    let (status, v) = z.send("POST", "/v1/capsules", &serde_json::json!({"template": {"kind": "capsule", "spec": {"containers": [{"image": IMAGE, "resources": {"requests": {"memory": "lots"}}}]}}}));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("memory"),
        "{v}"
    );
    z.osc(&["capsule", "delete", "demo"]).ok();
    assert_eq!(z.get("/v1/capsules/demo").0, 404);
    z.d.assert_no_leftovers();
}
