//! Pulls (and pushes) against a real registry: Debian's docker-registry on 127.0.0.1, images pushed by skopeo or
//! by husk itself. No test depends on a public registry.

mod common;

use std::path::Path;

use common::{Layer, Tar, TestStore, docker_archive, script};
use husk_core::ErrorKind;
use husk_image::{
    Credentials, ImageConfig, LayerState, Platform, Progress, ProgressSink, PullOptions,
    RegistryConfig,
};
use husk_testkit::registry::Registry;

fn busybox(dir: &Path, layers: usize) -> (std::path::PathBuf, String) {
    let out = dir.join(format!("busybox-{layers}.tar"));
    let id = script(
        "make-busybox-image",
        &[&out],
        &["husk.local/busybox:latest", "--layers", &layers.to_string()],
    );
    (out, id)
}

fn with_progress() -> (PullOptions, tokio::sync::mpsc::UnboundedReceiver<Progress>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (
        PullOptions {
            progress: ProgressSink(Some(tx)),
            ..Default::default()
        },
        rx,
    )
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Progress>) -> Vec<Progress> {
    let mut out = Vec::new();
    while let Ok(p) = rx.try_recv() {
        out.push(p);
    }
    out
}

fn states(events: &[Progress]) -> Vec<LayerState> {
    events
        .iter()
        .filter_map(|p| {
            if let Progress::Layer { state, .. } = p {
                Some(*state)
            } else {
                None
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_pull_of_a_multi_layer_image_then_nothing_twice() {
    let registry = Registry::start(None);
    let t = TestStore::new(ImageConfig::default());
    let (archive, id) = busybox(t.dir.path(), 3);
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "demo/busybox:1",
        false,
    );
    let reference = format!("{}/demo/busybox:1", registry.host);

    let (options, mut rx) = with_progress();
    let pulled = t.store.pull(&reference, &options).await.unwrap();
    assert_eq!(
        pulled.id, id,
        "skopeo keeps the config, so the ID is the one the script made"
    );
    let image = t.store.resolve(&reference).unwrap();
    assert_eq!(image.layers.len(), 3);
    assert!(
        image
            .layers
            .iter()
            .all(|l| l.blob.media_type.contains("gzip")),
        "skopeo compressed the layers"
    );
    assert_eq!(
        image.repo_digests,
        vec![format!("{}/demo/busybox@{}", registry.host, pulled.digest)]
    );
    let rootfs = t.store.rootfs_layers(&image).unwrap();
    assert!(rootfs.layers[0].join("bin/busybox").is_file());
    let events = drain(&mut rx);
    assert!(
        matches!(events.first(), Some(Progress::Resolved { layers: 3, .. })),
        "{events:?}"
    );
    assert!(states(&events).contains(&LayerState::Downloading));
    assert_eq!(
        states(&events)
            .iter()
            .filter(|s| **s == LayerState::Complete)
            .count(),
        3
    );
    assert!(matches!(events.last(), Some(Progress::Done { id: done }) if *done == id));

    // Again: every layer is here, nothing is downloaded.
    let (options, mut rx) = with_progress();
    t.store.pull(&reference, &options).await.unwrap();
    let again = states(&drain(&mut rx));
    assert!(!again.contains(&LayerState::Downloading), "{again:?}");
    assert_eq!(
        again.iter().filter(|s| **s == LayerState::Exists).count(),
        3
    );

    // By digest, into a fresh store: same image, no tag, a repo digest.
    let fresh = TestStore::new(ImageConfig::default());
    let by_digest = format!("{}/demo/busybox@{}", registry.host, pulled.digest);
    let p = fresh
        .store
        .pull(&by_digest, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(p.id, id);
    let image = fresh.store.resolve(&by_digest).unwrap();
    assert!(image.repo_tags.is_empty());

    let e = t
        .store
        .pull(
            &format!("{}/demo/missing:1", registry.host),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_fetch_each_layer_once() {
    let registry = Registry::start(None);
    let t = TestStore::new(ImageConfig::default());
    let (archive, id) = busybox(t.dir.path(), 2);
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "demo/twice:1",
        false,
    );
    let reference = format!("{}/demo/twice:1", registry.host);
    let (o1, mut r1) = with_progress();
    let (o2, mut r2) = with_progress();
    let (a, b) = tokio::join!(t.store.pull(&reference, &o1), t.store.pull(&reference, &o2));
    assert_eq!((a.unwrap().id, b.unwrap().id), (id.clone(), id));
    let downloads = |events: &[Progress]| {
        let mut digests: Vec<String> = events
            .iter()
            .filter_map(|p| match p {
                Progress::Layer {
                    digest,
                    state: LayerState::Downloading,
                    ..
                } => Some(digest.clone()),
                _ => None,
            })
            .collect();
        digests.dedup();
        digests
    };
    let (d1, d2) = (downloads(&drain(&mut r1)), downloads(&drain(&mut r2)));
    assert_eq!(
        d1.len() + d2.len(),
        2,
        "each of the 2 layers downloaded by one pull only: {d1:?} {d2:?}"
    );
    assert_eq!(
        std::fs::read_dir(t.store.root().join("layers"))
            .unwrap()
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_gives_the_host_platform_or_the_one_asked_for() {
    let registry = Registry::start(None);
    let t = TestStore::new(ImageConfig::default());
    let layout = t.dir.path().join("multi");
    script("make-multiarch-image", &[&layout], &["1"]);
    registry.push(&format!("oci:{}:1", layout.display()), "demo/multi:1", true);
    let index_digest = format!(
        "sha256:{}",
        common::sha256_hex(&registry.inspect_raw("demo/multi:1"))
    );
    let reference = format!("{}/demo/multi:1", registry.host);

    let pulled = t
        .store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.digest, index_digest, "the reference names the index");
    let image = t.store.resolve(&reference).unwrap();
    assert_eq!(image.architecture, "amd64");
    let rootfs = t.store.rootfs_layers(&image).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.layers[1].join("ARCH")).unwrap(),
        "amd64\n"
    );

    let arm = PullOptions {
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        ..Default::default()
    };
    t.store.pull(&reference, &arm).await.unwrap();
    let image = t.store.resolve(&reference).unwrap();
    assert_eq!(image.architecture, "arm64");
    assert_eq!(
        image.layers[0].blob.media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let rootfs = t.store.rootfs_layers(&image).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.layers[0].join("ARCH")).unwrap(),
        "arm64\n"
    );

    let s390 = PullOptions {
        platform: Some(Platform::parse("linux/s390x").unwrap()),
        ..Default::default()
    };
    let e = t.store.pull(&reference, &s390).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.message.contains("linux/amd64") && e.message.contains("linux/arm64/v8"),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_needs_the_right_credentials() {
    let registry = Registry::start(Some(("husk", "s3cret")));
    let t = TestStore::new(ImageConfig::default());
    let (archive, id) = busybox(t.dir.path(), 1);
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "private/bb:1",
        false,
    );
    let reference = format!("{}/private/bb:1", registry.host);

    let e = t
        .store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{}", e.message);
    let wrong = PullOptions {
        credentials: Some(Credentials {
            username: "husk".into(),
            password: "nope".into(),
        }),
        ..Default::default()
    };
    assert_eq!(
        t.store.pull(&reference, &wrong).await.unwrap_err().kind,
        ErrorKind::Unauthorized
    );

    let e = t
        .store
        .login(
            &registry.host,
            &Credentials {
                username: "husk".into(),
                password: "nope".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{}", e.message);
    assert!(
        t.store
            .registries()
            .credentials()
            .get(&registry.host)
            .unwrap()
            .is_none(),
        "a failed login stores nothing"
    );
    t.store
        .login(
            &registry.host,
            &Credentials {
                username: "husk".into(),
                password: "s3cret".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        t.store
            .pull(&reference, &PullOptions::default())
            .await
            .unwrap()
            .id,
        id
    );
    assert!(t.store.logout(&registry.host).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_hub_names_go_through_the_configured_mirror() {
    let registry = Registry::start(None);
    let config = ImageConfig {
        registry: RegistryConfig {
            mirrors: vec![format!("http://{}", registry.host)],
            ..Default::default()
        },
        ..Default::default()
    };
    let t = TestStore::new(config);
    let (archive, id) = busybox(t.dir.path(), 1);
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "library/busybox:latest",
        false,
    );
    let pulled = t
        .store
        .pull("busybox", &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.id, id);
    assert_eq!(pulled.reference, "docker.io/library/busybox:latest");
    assert_eq!(t.store.resolve("busybox").unwrap().id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_blob_in_the_registry_is_refused_and_nothing_stays() {
    let registry = Registry::start(None);
    let t = TestStore::new(ImageConfig::default());
    let layer = Layer::gzip(Tar::new().file("data", &vec![7u8; 100_000]).finish());
    let archive = t.dir.path().join("one.tar");
    std::fs::write(
        &archive,
        docker_archive(
            &[Layer::plain(
                Tar::new().file("data", &vec![7u8; 100_000]).finish(),
            )],
            Some("c:1"),
        ),
    )
    .unwrap();
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "demo/corrupt:1",
        false,
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&registry.inspect_raw("demo/corrupt:1")).unwrap();
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let path = registry.blob_path(&digest);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, data).unwrap();
    drop(layer);

    let e = t
        .store
        .pull(
            &format!("{}/demo/corrupt:1", registry.host),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        e.message.contains(&digest[..12]),
        "the error names the blob: {}",
        e.message
    );
    assert!(t.store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(t.store.root().join("layers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(t.store.root().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_pull_leaves_nothing_visible_and_a_retry_finishes() {
    let registry = Registry::start(None);
    let t = TestStore::new(ImageConfig::default());
    let noise = |seed: u64| common::noise(24_000_000, seed);
    let layers = vec![
        Layer::plain(Tar::new().file("a", &noise(1)).finish()),
        Layer::plain(Tar::new().file("b", &noise(2)).finish()),
    ];
    let archive = t.dir.path().join("big.tar");
    std::fs::write(&archive, docker_archive(&layers, Some("big:1"))).unwrap();
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "demo/big:1",
        false,
    );
    let reference = format!("{}/demo/big:1", registry.host);

    let (options, mut rx) = with_progress();
    let store = t.store.clone();
    let r = reference.clone();
    let task = tokio::spawn(async move { store.pull(&r, &options).await });
    while let Some(p) = rx.recv().await {
        if matches!(p, Progress::Layer { state: LayerState::Downloading, current, .. } if current > 0)
        {
            break;
        }
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(
        t.store.list().unwrap().is_empty(),
        "nothing visible after the interruption"
    );
    // The unpack threads notice the end of their streams and clean up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(t.store.root().join("tmp"))
        .unwrap()
        .count()
        > 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_dir(t.store.root().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    let pulled = t
        .store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(t.store.resolve(&reference).unwrap().id, pulled.id);
    let rootfs = t
        .store
        .rootfs_layers(&t.store.resolve(&reference).unwrap())
        .unwrap();
    assert_eq!(
        std::fs::metadata(rootfs.layers[1].join("b")).unwrap().len(),
        24_000_000
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn push_sends_what_a_fresh_store_and_skopeo_get_back() {
    for auth in [None, Some(("pusher", "pw"))] {
        let registry = Registry::start(auth);
        let t = TestStore::new(ImageConfig::default());
        let (archive, id) = busybox(t.dir.path(), 2);
        t.store
            .load(
                tokio::fs::File::open(&archive).await.unwrap(),
                &Default::default(),
            )
            .await
            .unwrap();
        let target = format!("{}/pushed/bb:1", registry.host);
        t.store.tag("husk.local/busybox:latest", &target).unwrap();
        if let Some((u, p)) = auth {
            let e = t
                .store
                .push(&target, &husk_image::PushOptions::default())
                .await
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unauthorized, "{}", e.message);
            t.store
                .login(
                    &registry.host,
                    &Credentials {
                        username: u.into(),
                        password: p.into(),
                    },
                )
                .await
                .unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let options = husk_image::PushOptions {
            progress: ProgressSink(Some(tx)),
            ..Default::default()
        };
        let pushed = t.store.push(&target, &options).await.unwrap();
        assert!(states(&drain(&mut rx)).contains(&LayerState::Uploading));
        let raw = registry.inspect_raw("pushed/bb:1");
        assert_eq!(
            format!("sha256:{}", common::sha256_hex(&raw)),
            pushed.digest,
            "the registry has the manifest husk sent"
        );
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest["config"]["digest"], id.as_str());
        assert!(
            t.store
                .resolve(&target)
                .unwrap()
                .repo_digests
                .contains(&format!("{}/pushed/bb@{}", registry.host, pushed.digest))
        );

        // Pushing again sends no layer.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let options = husk_image::PushOptions {
            progress: ProgressSink(Some(tx)),
            ..Default::default()
        };
        t.store.push(&target, &options).await.unwrap();
        assert!(!states(&drain(&mut rx)).contains(&LayerState::Uploading));

        let fresh = TestStore::new(ImageConfig::default());
        let pull = PullOptions {
            credentials: auth.map(|(u, p)| Credentials {
                username: u.into(),
                password: p.into(),
            }),
            ..Default::default()
        };
        let pulled = fresh.store.pull(&target, &pull).await.unwrap();
        assert_eq!(pulled.id, id);
        assert_eq!(pulled.digest, pushed.digest);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn save_then_load_gives_the_same_images() {
    let registry = Registry::start(None);
    let t = TestStore::new(ImageConfig::default());
    let (archive, id) = busybox(t.dir.path(), 2);
    t.store
        .load(
            tokio::fs::File::open(&archive).await.unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    let layout = t.dir.path().join("multi");
    script("make-multiarch-image", &[&layout], &["1"]);
    registry.push(&format!("oci:{}:1", layout.display()), "demo/multi:1", true);
    let pulled = t
        .store
        .pull(
            &format!("{}/demo/multi:1", registry.host),
            &PullOptions::default(),
        )
        .await
        .unwrap();

    let saved = t.dir.path().join("saved.tar");
    let file = tokio::fs::File::create(&saved).await.unwrap();
    t.store
        .save(
            &[
                "husk.local/busybox".to_string(),
                format!("{}/demo/multi:1", registry.host),
            ],
            file,
        )
        .await
        .unwrap();

    let fresh = TestStore::new(ImageConfig::default());
    let mut loaded = fresh
        .store
        .load(
            tokio::fs::File::open(&saved).await.unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    loaded.sort_by(|a, b| a.names.cmp(&b.names));
    let ids: Vec<&str> = loaded.iter().map(|l| l.id.as_str()).collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&pulled.id.as_str()),
        "{loaded:?}"
    );
    let again = fresh
        .store
        .resolve(&format!("{}/demo/multi:1", registry.host))
        .unwrap();
    let original = t.store.resolve(&pulled.id).unwrap();
    assert_eq!(
        again.manifest.as_ref().unwrap().digest,
        original.manifest.as_ref().unwrap().digest,
        "the manifest travels unchanged"
    );
    assert_eq!(fresh.store.resolve("husk.local/busybox").unwrap().id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_policies() {
    use husk_image::PullPolicy;
    let registry = Registry::start(None);
    let t = TestStore::new(ImageConfig::default());
    let (archive, id) = busybox(t.dir.path(), 1);
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "demo/policy:1",
        false,
    );
    let reference = format!("{}/demo/policy:1", registry.host);
    let e = t
        .store
        .ensure_image(
            &reference,
            "never".parse().unwrap(),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("never"), "{}", e.message);
    assert_eq!(
        t.store
            .ensure_image(
                &reference,
                "ifnotpresent".parse().unwrap(),
                &PullOptions::default()
            )
            .await
            .unwrap()
            .id,
        id
    );
    assert_eq!(
        t.store
            .ensure_image(&reference, PullPolicy::Never, &PullOptions::default())
            .await
            .unwrap()
            .id,
        id
    );
    // Missing: present, so no registry is asked (a stopped registry proves it).
    drop(registry);
    assert_eq!(
        t.store
            .ensure_image(&reference, PullPolicy::Missing, &PullOptions::default())
            .await
            .unwrap()
            .id,
        id
    );
    let e = t
        .store
        .ensure_image(&reference, PullPolicy::Always, &PullOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Backend,
        "always pulls, and the registry is gone: {}",
        e.message
    );
}

/// A TCP proxy in front of the registry that cuts the first connection that has sent back more than `cut_after`
/// bytes, and counts requests that carry a Range header (the resumed downloads).
struct CuttingProxy {
    host: String,
    ranged: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn cutting_proxy(upstream: String, cut_after: u64) -> CuttingProxy {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let ranged = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let (r, c) = (ranged.clone(), cut.clone());
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if String::from_utf8_lossy(&buf[..n])
                        .to_ascii_lowercase()
                        .contains("\r\nrange: bytes=")
                    {
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut sent = 0u64;
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n as u64;
                    if sent > cut_after && !c.swap(true, Ordering::SeqCst) {
                        break; // drops both halves: the client sees the connection close mid-body
                    }
                }
            });
        }
    });
    CuttingProxy {
        host,
        ranged,
        cut,
        task,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_cut_mid_layer_resumes_with_a_range_request() {
    use std::sync::atomic::Ordering;
    let registry = Registry::start(None);
    let t = TestStore::new(ImageConfig::default());
    let noise = common::noise(16_000_000, 1);
    let archive = t.dir.path().join("noise.tar");
    std::fs::write(
        &archive,
        docker_archive(
            &[Layer::plain(Tar::new().file("noise", &noise).finish())],
            Some("n:1"),
        ),
    )
    .unwrap();
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "demo/noise:1",
        false,
    );
    let proxy = cutting_proxy(registry.host.clone(), 4 << 20).await;
    let reference = format!("{}/demo/noise:1", proxy.host);
    let pulled = t
        .store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap();
    assert!(
        proxy.cut.load(Ordering::SeqCst),
        "the proxy cut a connection"
    );
    assert!(
        proxy.ranged.load(Ordering::SeqCst) >= 1,
        "the download resumed with a Range request"
    );
    let image = t.store.resolve(&pulled.id).unwrap();
    let rootfs = t.store.rootfs_layers(&image).unwrap();
    assert_eq!(
        std::fs::read(rootfs.layers[0].join("noise")).unwrap(),
        noise
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_auth_through_a_token_server() {
    use husk_testkit::registry::Auth;
    let registry = Registry::start_with(Auth::Token("husk", "t0ken-pw"));
    let t = TestStore::new(ImageConfig::default());
    let (archive, id) = busybox(t.dir.path(), 1);
    registry.push(
        &format!("docker-archive:{}", archive.display()),
        "private/bb:1",
        false,
    );
    let reference = format!("{}/private/bb:1", registry.host);

    let e = t
        .store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized, "anonymous: {}", e.message);
    let e = t
        .store
        .login(
            &registry.host,
            &Credentials {
                username: "husk".into(),
                password: "wrong".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{}", e.message);
    t.store
        .login(
            &registry.host,
            &Credentials {
                username: "husk".into(),
                password: "t0ken-pw".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        t.store
            .pull(&reference, &PullOptions::default())
            .await
            .unwrap()
            .id,
        id
    );
    t.store
        .push(&reference, &husk_image::PushOptions::default())
        .await
        .unwrap();
}
