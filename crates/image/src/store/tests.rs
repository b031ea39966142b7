use super::removal::{is_id_prefix, plan_remove_by_id, plan_untag};
use super::*;

fn image(tags: &[&str], digests: &[&str]) -> Image {
    Image {
        id: format!("sha256:{}", "a".repeat(64)),
        repo_tags: tags.iter().map(|s| s.to_string()).collect(),
        repo_digests: digests.iter().map(|s| s.to_string()).collect(),
        created: None,
        architecture: String::new(),
        os: String::new(),
        variant: None,
        author: None,
        config: Default::default(),
        layers: Vec::new(),
        size: 0,
        manifest: None,
        loaded_at: None,
    }
}

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn prune_never_waits_for_a_running_load() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Store::open_in_memory().unwrap());
    let store = ImageStore::open(dir.path().join("images"), db, ImageConfig::default()).unwrap();
    let leftover = Digest::of(b"leftover layer");
    fs::create_dir(store.layer_dir(&leftover)).unwrap();
    let record = LayerRecord {
        diff_id: leftover.to_string(),
        size: 1,
        tar_size: 1024,
        entries: 1,
        created_at: Default::default(),
    };
    store.inner.db.upsert(&record).unwrap();

    let load = store.hold_gc();
    let report = store.prune(true, &|_| false).unwrap();
    assert!(
        report.deferred,
        "a load is running: the sweep waits for another prune"
    );
    assert!(
        store.layer_dir(&leftover).is_dir(),
        "what a running load may be about to use stays"
    );
    drop(load);
    let report = store.prune(true, &|_| false).unwrap();
    assert!(!report.deferred);
    assert!(!store.layer_dir(&leftover).exists());
    assert!(
        store
            .inner
            .db
            .get::<LayerRecord>(&leftover.to_string())
            .unwrap()
            .is_none()
    );
}

#[test]
fn untag_rules() {
    let img = image(&["docker.io/library/a:1", "docker.io/library/a:2"], &[]);
    let p = plan_untag(&img, "docker.io/library/a:1");
    assert_eq!((p.untag.len(), p.delete), (1, false));
    let digest = format!("docker.io/library/a@{D}");
    let img = image(&["docker.io/library/a:1"], &[&digest]);
    let p = plan_untag(&img, "docker.io/library/a:1");
    assert_eq!(p.untag, vec!["docker.io/library/a:1".to_string(), digest]);
    assert!(
        p.delete,
        "the last tag of a repository takes its digests along"
    );
}

#[test]
fn remove_by_id_rules() {
    let one_repo = image(&["docker.io/library/a:1"], &[]);
    assert!(plan_remove_by_id(&one_repo, false, false).unwrap().delete);
    assert_eq!(
        plan_remove_by_id(&one_repo, false, true).unwrap_err().kind,
        ErrorKind::Conflict
    );
    let two = image(&["docker.io/library/a:1", "docker.io/library/b:1"], &[]);
    assert_eq!(
        plan_remove_by_id(&two, false, false).unwrap_err().kind,
        ErrorKind::Conflict
    );
    assert_eq!(plan_remove_by_id(&two, true, false).unwrap().untag.len(), 2);
    assert!(is_id_prefix(&one_repo.id, "aaaa"));
    assert!(is_id_prefix(&one_repo.id, "sha256:aa"));
    assert!(!is_id_prefix(&one_repo.id, "busybox"));
}
