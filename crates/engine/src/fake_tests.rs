//! The engine's rules over the in-memory [`FakeDriver`]: capability refusals, restart policies, recovery at
//! start, failpoints and quotas. No root, no processes (but the failpoint tests' own child).

use std::sync::Arc;
use std::time::Duration;

use husk_core::{
    Capabilities, ContainerRecord, ContainerStatus, Driver, Error, ErrorKind, Mode, RestartPolicy,
    SandboxRecord,
};
use husk_store::Store;

use crate::testing::{self, FakeDriver, TINY_IMAGE, all_capabilities};
use crate::{ContainerCreate, DEFAULT_PROJECT, Engine};

fn request(name: &str) -> ContainerCreate {
    ContainerCreate {
        name: Some(name.into()),
        image: TINY_IMAGE.into(),
        ..Default::default()
    }
}

fn with_policy(name: &str, policy: RestartPolicy) -> ContainerCreate {
    ContainerCreate {
        restart_policy: policy,
        ..request(name)
    }
}

async fn setup(caps: Capabilities) -> (tempfile::TempDir, Arc<FakeDriver>, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeDriver::with_capabilities(caps));
    let engine = testing::engine(dir.path(), Mode::Standalone, fake.clone())
        .await
        .unwrap();
    (dir, fake, engine)
}

/// Polls the record of `id` until `ok` holds (5 s at most).
async fn until(
    engine: &Engine,
    id: &str,
    what: &str,
    ok: impl Fn(&ContainerRecord) -> bool,
) -> ContainerRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rec = engine.container(id).unwrap();
        if ok(&rec) {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "container never {what}: {:?}, {} runs",
            rec.status,
            rec.restart_count
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the fake's run number `run` of `id` is recorded as running.
async fn running_run(engine: &Engine, fake: &FakeDriver, id: &str, run: u64) -> ContainerRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.runs(id) < run {
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until(engine, id, "running", |r| {
        r.status == ContainerStatus::Running
    })
    .await
}

/// Longer than any backoff the tests below can reach (100 ms doubled per restart, three restarts at most).
const QUIET: Duration = Duration::from_millis(1_000);

// ---- capability refusals ----

#[tokio::test]
async fn a_mode_the_driver_lacks_is_refused_naming_the_driver_and_nothing_is_made() {
    let (_dir, fake, engine) = setup(Capabilities {
        standalone: true,
        ..Default::default()
    })
    .await;
    let e = engine
        .create_container(ContainerCreate {
            mode: Some(Mode::Sandbox),
            ..request("c")
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(
        e.message
            .contains("driver fake does not support sandbox mode"),
        "{}",
        e.message
    );
    assert!(engine.list_containers(true).unwrap().is_empty());
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[tokio::test]
async fn options_the_driver_lacks_are_refused_naming_the_driver() {
    let (_dir, fake, engine) = setup(Capabilities {
        privileged: false,
        tty: false,
        pause: false,
        ulimits: false,
        ..all_capabilities()
    })
    .await;
    for (req, words) in [
        (
            ContainerCreate {
                privileged: true,
                ..request("p")
            },
            "driver fake does not support privileged containers",
        ),
        (
            ContainerCreate {
                tty: true,
                ..request("t")
            },
            "driver fake does not support terminals",
        ),
        (
            ContainerCreate {
                ulimits: vec![husk_core::Ulimit {
                    name: "nofile".into(),
                    soft: 10,
                    hard: 10,
                }],
                ..request("u")
            },
            "driver fake does not support ulimits",
        ),
    ] {
        let e = engine.create_container(req).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{}", e.message);
        assert!(e.message.contains(words), "{}", e.message);
    }
    assert!(engine.list_containers(true).unwrap().is_empty());
    assert_eq!(fake.count("create_container"), 0);

    let rec = engine.create_container(request("c")).await.unwrap();
    engine.start_container(rec.id()).await.unwrap();
    let e = engine.pause_container(rec.id()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(
        e.message.contains("driver fake does not support pause"),
        "{}",
        e.message
    );
    assert_eq!(fake.count("pause"), 0, "the driver was asked anyway");
    assert_eq!(
        engine.container(rec.id()).unwrap().status,
        ContainerStatus::Running
    );
}

// ---- driver failures ----

#[tokio::test]
async fn a_create_the_driver_fails_is_rolled_back_with_its_implicit_sandbox() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    fake.fail_next("create_container", Error::internal("disk on fire"));
    let e = engine
        .create_container(ContainerCreate {
            mode: Some(Mode::Sandbox),
            ..request("c")
        })
        .await
        .unwrap_err();
    assert_eq!(e.message, "disk on fire");
    assert!(engine.list_containers(true).unwrap().is_empty());
    assert!(engine.list_sandboxes().unwrap().is_empty());
    assert_eq!(fake.count("create_sandbox"), 1);
    assert_eq!(fake.count("delete_sandbox"), 1, "{:?}", fake.calls());
    assert!(engine.inner.store.pending_operations().unwrap().is_empty());
}

#[tokio::test]
async fn a_start_the_driver_fails_leaves_the_container_created() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine.create_container(request("c")).await.unwrap();
    fake.fail_next("start_container", Error::internal("no pids left"));
    let e = engine.start_container(rec.id()).await.unwrap_err();
    assert_eq!(e.message, "no pids left");
    assert_eq!(
        engine.container(rec.id()).unwrap().status,
        ContainerStatus::Created
    );
    let rec = engine.start_container(rec.id()).await.unwrap();
    assert_eq!(rec.status, ContainerStatus::Running);
    assert!(rec.runtime.pid > 0);
}

// ---- restart policies ----

#[tokio::test]
async fn on_failure_n_restarts_n_times_then_stops() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine
        .create_container(with_policy(
            "c",
            RestartPolicy::OnFailure { max_retries: 2 },
        ))
        .await
        .unwrap();
    let id = rec.id().to_string();
    engine.start_container(&id).await.unwrap();
    for run in 1..=3 {
        running_run(&engine, &fake, &id, run).await;
        assert!(fake.exit(&id, 3));
    }
    let rec = until(&engine, &id, "exited", |r| {
        r.status == ContainerStatus::Exited
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(fake.runs(&id), 3, "one start and two restarts");
    let rec2 = engine.container(&id).unwrap();
    assert_eq!(rec2.status, ContainerStatus::Exited);
    assert_eq!(rec2.restart_count, 2);
    assert_eq!(rec.exit.map(|e| e.code), Some(3));
}

#[tokio::test]
async fn on_failure_does_not_restart_after_success() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine
        .create_container(with_policy(
            "c",
            RestartPolicy::OnFailure { max_retries: 5 },
        ))
        .await
        .unwrap();
    engine.start_container(rec.id()).await.unwrap();
    assert!(fake.exit(rec.id(), 0));
    until(&engine, rec.id(), "exited", |r| {
        r.status == ContainerStatus::Exited
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(fake.runs(rec.id()), 1);
    assert_eq!(
        engine.container(rec.id()).unwrap().status,
        ContainerStatus::Exited
    );
}

#[tokio::test]
async fn always_restarts_after_any_exit_until_stopped() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine
        .create_container(with_policy("c", RestartPolicy::Always))
        .await
        .unwrap();
    let id = rec.id().to_string();
    engine.start_container(&id).await.unwrap();
    running_run(&engine, &fake, &id, 1).await;
    assert!(fake.exit(&id, 0));
    running_run(&engine, &fake, &id, 2).await;
    assert!(fake.exit(&id, 1));
    running_run(&engine, &fake, &id, 3).await;
    let rec = engine.stop_container(&id, Some(5)).await.unwrap();
    assert_eq!(rec.status, ContainerStatus::Exited);
    assert_eq!(rec.exit.as_ref().map(|e| e.code), Some(128 + 15));
    tokio::time::sleep(QUIET).await;
    assert_eq!(fake.runs(&id), 3, "restarted after an explicit stop");
    assert_eq!(
        engine.container(&id).unwrap().status,
        ContainerStatus::Exited
    );
}

#[tokio::test]
async fn unless_stopped_restarts_after_an_exit_but_not_after_an_explicit_stop() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine
        .create_container(with_policy("c", RestartPolicy::UnlessStopped))
        .await
        .unwrap();
    let id = rec.id().to_string();
    engine.start_container(&id).await.unwrap();
    running_run(&engine, &fake, &id, 1).await;
    assert!(fake.exit(&id, 0));
    running_run(&engine, &fake, &id, 2).await;
    let rec = engine.stop_container(&id, Some(5)).await.unwrap();
    assert_eq!(rec.status, ContainerStatus::Exited);
    assert!(rec.stopped_by_user);
    tokio::time::sleep(QUIET).await;
    assert_eq!(fake.runs(&id), 2, "restarted after an explicit stop");
    assert_eq!(
        engine.container(&id).unwrap().status,
        ContainerStatus::Exited
    );
}

#[tokio::test]
async fn no_policy_never_restarts() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine
        .create_container(with_policy("c", RestartPolicy::No))
        .await
        .unwrap();
    engine.start_container(rec.id()).await.unwrap();
    assert!(fake.exit(rec.id(), 1));
    let rec = until(&engine, rec.id(), "exited", |r| {
        r.status == ContainerStatus::Exited
    })
    .await;
    assert_eq!(rec.exit.map(|e| e.code), Some(1));
    tokio::time::sleep(QUIET).await;
    assert_eq!(fake.runs(rec.config.id.as_str()), 1);
}

#[tokio::test]
async fn a_restart_the_driver_refuses_leaves_the_container_exited_with_the_reason() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine
        .create_container(with_policy("c", RestartPolicy::Always))
        .await
        .unwrap();
    engine.start_container(rec.id()).await.unwrap();
    fake.fail_next("start_container", Error::internal("no pids left"));
    assert!(fake.exit(rec.id(), 0));
    let rec = until(&engine, rec.id(), "exited with the reason", |r| {
        r.status == ContainerStatus::Exited && !r.error.is_empty()
    })
    .await;
    assert!(rec.error.contains("no pids left"), "{}", rec.error);
    assert_eq!(fake.count("start_container"), 2);
    tokio::time::sleep(QUIET).await;
    assert_eq!(fake.runs(rec.id()), 1, "tried again after the refusal");
}

#[tokio::test]
async fn a_container_the_backend_loses_while_watched_is_marked_dead() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine.create_container(request("c")).await.unwrap();
    engine.start_container(rec.id()).await.unwrap();
    assert!(fake.lose(rec.id()));
    let rec = until(&engine, rec.id(), "dead", |r| {
        r.status == ContainerStatus::Dead
    })
    .await;
    assert!(rec.error.contains("behind husk's back"), "{}", rec.error);
    assert_eq!(rec.runtime.pid, 0);
}

// ---- recovery at start ----

/// Runs `f` as the first daemon would, in a runtime that is dropped at the end: its background tasks (watches,
/// restarts, a create stuck in the driver) die with it, as they would with a killed daemon.
fn first_daemon<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let out = rt.block_on(f);
    drop(rt);
    out
}

#[test]
fn recovery_marks_lost_containers_keeps_running_ones_and_rolls_back_half_made_creates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_in_memory().unwrap());
    let fake = Arc::new(FakeDriver::new());
    let drivers = || vec![fake.clone() as Arc<dyn Driver>];
    let (lost, kept, half) = first_daemon(async {
        let engine =
            testing::engine_with_store(dir.path(), store.clone(), Mode::Standalone, drivers())
                .await
                .unwrap();
        let lost = engine.create_container(request("lost")).await.unwrap();
        engine.start_container(lost.id()).await.unwrap();
        let kept = engine.create_container(request("kept")).await.unwrap();
        let kept = engine.start_container(kept.id()).await.unwrap();
        // A create in sandbox mode whose driver call never returns: the daemon dies in the middle of it.
        fake.hang_next("create_container");
        let creating = {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .create_container(ContainerCreate {
                        mode: Some(Mode::Sandbox),
                        ..request("half")
                    })
                    .await
            })
        };
        while fake.count("create_container") < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!creating.is_finished());
        let half = engine.container("half").unwrap();
        assert_eq!(half.status, ContainerStatus::Creating);
        (lost.config.id, kept, half)
    });
    assert_eq!(store.pending_operations().unwrap().len(), 1);
    let half_sandbox = half.sandbox_id.clone().unwrap();
    assert!(fake.has_sandbox(&half_sandbox));
    assert!(fake.lose(&lost), "as after a reboot");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine =
            testing::engine_with_store(dir.path(), store.clone(), Mode::Standalone, drivers())
                .await
                .unwrap();
        engine.recover().await.unwrap();

        let rec = engine.container(&lost).unwrap();
        assert_eq!(rec.status, ContainerStatus::Dead);
        assert!(rec.error.contains("no trace"), "{}", rec.error);

        let rec = engine.container(kept.id()).unwrap();
        assert_eq!(rec.status, ContainerStatus::Running);
        assert_eq!(rec.runtime.pid, kept.runtime.pid);
        // Watched again: its exit is recorded by the new daemon.
        assert!(fake.exit(kept.id(), 7));
        let rec = until(&engine, kept.id(), "exited", |r| {
            r.status == ContainerStatus::Exited
        })
        .await;
        assert_eq!(rec.exit.map(|e| e.code), Some(7));

        assert!(
            engine.container(half.id()).is_err(),
            "half-made create kept"
        );
        assert!(
            store.get::<SandboxRecord>(&half_sandbox).unwrap().is_none(),
            "its implicit sandbox kept"
        );
        assert!(!fake.has_sandbox(&half_sandbox));
        assert!(store.pending_operations().unwrap().is_empty());
    });
}

#[test]
fn recovery_restarts_always_containers_that_exited_while_the_daemon_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_in_memory().unwrap());
    let fake = Arc::new(FakeDriver::new());
    let drivers = || vec![fake.clone() as Arc<dyn Driver>];
    let (always, never) = first_daemon(async {
        let engine =
            testing::engine_with_store(dir.path(), store.clone(), Mode::Standalone, drivers())
                .await
                .unwrap();
        let always = engine
            .create_container(with_policy("always", RestartPolicy::Always))
            .await
            .unwrap();
        engine.start_container(always.id()).await.unwrap();
        let never = engine.create_container(request("never")).await.unwrap();
        engine.start_container(never.id()).await.unwrap();
        (always.config.id, never.config.id)
    });
    // Both exit while no daemon watches.
    assert!(fake.exit(&always, 0));
    assert!(fake.exit(&never, 2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine =
            testing::engine_with_store(dir.path(), store.clone(), Mode::Standalone, drivers())
                .await
                .unwrap();
        engine.recover().await.unwrap();
        let rec = engine.container(&never).unwrap();
        assert_eq!(rec.status, ContainerStatus::Exited);
        assert_eq!(rec.exit.map(|e| e.code), Some(2));
        running_run(&engine, &fake, &always, 2).await;
    });
}

// ---- failpoints ----

/// The child's directory: set only in the child process the failpoint tests start.
const CHILD_DIR: &str = "HUSK_TEST_FAILPOINT_DIR";

/// Not a test by itself: the child process of the failpoint tests. It creates (and, for a `remove_container`
/// failpoint, removes) a container with `HUSK_FAILPOINT` set, over a store in `HUSK_TEST_FAILPOINT_DIR`, and
/// must be aborted by the failpoint.
#[tokio::test]
#[ignore = "run by the failpoint tests in a child process"]
async fn failpoint_child() {
    let dir = std::path::PathBuf::from(std::env::var(CHILD_DIR).expect("run by a failpoint test"));
    let point = std::env::var("HUSK_FAILPOINT").unwrap();
    // No core file for the abort to come.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    let store = Arc::new(Store::open(&dir.join("husk.db")).unwrap());
    let fake = Arc::new(FakeDriver::new());
    let engine =
        testing::engine_with_store(&dir, store, Mode::Standalone, vec![fake as Arc<dyn Driver>])
            .await
            .unwrap();
    let rec = engine
        .create_container(ContainerCreate {
            mode: Some(Mode::Sandbox),
            ..request("c")
        })
        .await
        .unwrap();
    if point.starts_with("remove_container") {
        engine.remove_container(rec.id(), true).await.unwrap();
    }
    eprintln!("failpoint {point} was not reached");
}

/// Runs [`failpoint_child`] with `HUSK_FAILPOINT=point`, checks that the failpoint aborted it, and returns the
/// store it left.
fn crash_at(point: &str, dir: &std::path::Path) -> Arc<Store> {
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "fake_tests::failpoint_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir)
        .env("HUSK_FAILPOINT", point)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "the child was not aborted at {point}: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("failpoint {point} reached")),
        "{stderr}"
    );
    Arc::new(Store::open(&dir.join("husk.db")).unwrap())
}

/// What `abort` ends a process with, on Linux.
const SIGABRT: i32 = 6;

/// Recovers over `store` with a fresh fake (the crashed daemon's driver state died with it).
async fn recover_after_crash(
    dir: &std::path::Path,
    store: Arc<Store>,
) -> (Engine, Arc<FakeDriver>) {
    let fake = Arc::new(FakeDriver::new());
    let engine = testing::engine_with_store(
        dir,
        store,
        Mode::Standalone,
        vec![fake.clone() as Arc<dyn Driver>],
    )
    .await
    .unwrap();
    engine.recover().await.unwrap();
    (engine, fake)
}

#[tokio::test]
async fn a_create_aborted_after_the_driver_made_the_container_is_rolled_back_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = crash_at("create_container:driver_created", dir.path());
    let recs = store.list::<ContainerRecord>().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].status, ContainerStatus::Creating);
    let ops = store.pending_operations().unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].step, "sandbox_ready");
    let (engine, fake) = recover_after_crash(dir.path(), store.clone()).await;
    assert!(engine.list_containers(true).unwrap().is_empty());
    assert!(store.list::<SandboxRecord>().unwrap().is_empty());
    assert!(store.pending_operations().unwrap().is_empty());
    assert!(fake.count("delete_container") >= 1, "{:?}", fake.calls());
    assert!(fake.count("delete_sandbox") >= 1, "{:?}", fake.calls());
}

#[tokio::test]
async fn a_create_aborted_once_the_sandbox_was_ready_is_rolled_back_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = crash_at("create_container:sandbox_ready", dir.path());
    let sandboxes = store.list::<SandboxRecord>().unwrap();
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(sandboxes[0].status, husk_core::SandboxStatus::Ready);
    let (engine, _fake) = recover_after_crash(dir.path(), store.clone()).await;
    assert!(engine.list_containers(true).unwrap().is_empty());
    assert!(store.list::<SandboxRecord>().unwrap().is_empty());
    assert!(store.pending_operations().unwrap().is_empty());
}

#[tokio::test]
async fn a_remove_aborted_after_marking_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = crash_at("remove_container:marked", dir.path());
    let recs = store.list::<ContainerRecord>().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].status, ContainerStatus::Removing);
    let (engine, fake) = recover_after_crash(dir.path(), store.clone()).await;
    assert!(engine.list_containers(true).unwrap().is_empty());
    assert!(store.list::<SandboxRecord>().unwrap().is_empty());
    assert!(store.pending_operations().unwrap().is_empty());
    assert!(fake.count("delete_container") >= 1, "{:?}", fake.calls());
}

// ---- quotas ----

#[tokio::test]
async fn a_project_over_its_quota_is_refused_and_nothing_is_made() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    engine
        .set_quota(
            DEFAULT_PROJECT,
            &crate::quotas::Limits::from([("containers".into(), 1), ("memory".into(), 512)]),
        )
        .unwrap();
    engine.create_container(request("first")).await.unwrap();
    let e = engine
        .create_container(request("second"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    assert!(e.message.contains("containers"), "{}", e.message);
    let e = engine
        .create_container(ContainerCreate {
            resources: husk_core::Resources {
                memory_bytes: Some(1 << 30),
                ..Default::default()
            },
            ..request("big")
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    assert!(e.message.contains("memory"), "{}", e.message);
    assert_eq!(engine.list_containers(true).unwrap().len(), 1);
    assert_eq!(fake.count("create_container"), 1);
    assert!(engine.inner.store.pending_operations().unwrap().is_empty());
}

// ---- the fake itself ----

#[tokio::test]
async fn the_fake_ends_a_killed_container_with_128_plus_the_signal_and_wait_returns() {
    let (_dir, fake, engine) = setup(all_capabilities()).await;
    let rec = engine.create_container(request("c")).await.unwrap();
    let rec = engine.start_container(rec.id()).await.unwrap();
    let waiting = {
        let fake = fake.clone();
        let rec = rec.clone();
        tokio::spawn(async move { fake.wait(&rec).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    engine.kill_container(rec.id(), "KILL").await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap().code, 137);
    let rec = until(&engine, rec.id(), "exited", |r| {
        r.status == ContainerStatus::Exited
    })
    .await;
    assert_eq!(rec.exit.as_ref().map(|e| e.code), Some(137));
    assert_eq!(
        fake.observe(&rec).await.unwrap(),
        husk_core::ObservedState::Exited(fake.wait(&rec).await.unwrap())
    );
}
