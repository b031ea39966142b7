//! Every archive of the hostile corpus is refused with a clear error, and nothing is written outside the store:
//! the sentinel directory around the store (and /etc/passwd) are the same before and after, and the store holds no
//! image, layer or temporary file afterwards.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{TestStore, hostile, snapshot};

#[tokio::test]
async fn every_hostile_archive_is_refused_and_nothing_escapes() {
    let t = TestStore::new(hostile::config());
    let sentinel = t.dir.path();
    std::fs::write(sentinel.join("secret"), b"secret").unwrap();
    std::fs::write(sentinel.join("victim"), b"victim").unwrap();
    let store_dir = sentinel.join("store");
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
    let before = snapshot(sentinel, &store_dir);
    let cases = hostile::corpus(sentinel);
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        match t.load(case.archive).await {
            Ok(images) => failures.push(format!("{}: loaded {images:?}", case.name)),
            Err(e) => {
                if e.kind != case.kind || !e.message.contains(case.expect) {
                    failures.push(format!(
                        "{}: wanted {:?} containing {:?}, got {:?}: {}",
                        case.name, case.kind, case.expect, e.kind, e.message
                    ));
                }
            }
        }
        let after = snapshot(sentinel, &store_dir);
        assert_eq!(
            before, after,
            "{}: something changed outside the store",
            case.name
        );
        let layers: Vec<_> = std::fs::read_dir(store_dir.join("layers"))
            .unwrap()
            .collect();
        let tmp: Vec<_> = std::fs::read_dir(store_dir.join("tmp")).unwrap().collect();
        assert!(
            tmp.is_empty(),
            "{}: temporary files left: {tmp:?}",
            case.name
        );
        assert!(
            t.store.list().unwrap().is_empty(),
            "{}: an image became visible",
            case.name
        );
        // Layers that were valid on their own may stay for reuse; none may hold a sentinel escape.
        for l in layers {
            let l = l.unwrap().path();
            assert!(!l.join("pwned").exists(), "{}", case.name);
        }
    }
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );
    assert!(
        failures.is_empty(),
        "hostile archives not refused as expected:\n{}",
        failures.join("\n")
    );
}
