use super::*;
use futures::StreamExt;

#[test]
fn the_cri_log_has_kubelets_format_and_reopens_after_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let cri = dir.path().join("pod/c.log");
    let mut w = LogWriter::open(&dir.path().join("log")).unwrap();
    w.also_cri(&cri).unwrap();
    w.write(0, b"hello\nhal");
    w.write(1, b"oops\n");
    w.flush_stream(0);
    let text = std::fs::read_to_string(&cri).unwrap();
    let lines: Vec<(&str, &str, &str)> = text
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let time = f.next().unwrap();
            assert!(
                husk_core::Timestamp::parse(time).is_ok() && time.ends_with('Z'),
                "{time}"
            );
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("stdout", "F", "hello"),
            ("stderr", "F", "oops"),
            ("stdout", "P", "hal")
        ]
    );
    // kubelet renames the file and asks for a reopen: new lines go to a new file.
    std::fs::rename(&cri, dir.path().join("pod/c.log.1")).unwrap();
    w.reopen_cri().unwrap();
    w.write(0, b"after\n");
    let text = std::fs::read_to_string(&cri).unwrap();
    assert!(text.ends_with(" stdout F after\n"), "{text}");
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn lines_partial_lines_and_long_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path).unwrap();
    w.write(0, b"one\ntw");
    w.write(0, b"o\nthree");
    w.write(1, b"err\n");
    w.write(0, &vec![b'x'; MAX_ENTRY + 10]);
    w.flush_stream(0);
    let (entries, _) = read_entries(&path, 1, &LogOptions::default()).unwrap();
    let texts: Vec<(&str, usize)> = entries
        .iter()
        .map(|e| (e.stream.as_str(), e.text.len()))
        .collect();
    assert_eq!(entries[0].text, "one\n");
    assert_eq!(entries[1].text, "two\n");
    assert_eq!(entries[2].stream, husk_core::OutputStream::Stderr);
    // "three" + 16 KiB of x: one full entry, then the rest.
    assert_eq!(texts[3], ("stdout", MAX_ENTRY));
    assert_eq!(texts[4].1, 5 + 10);
    let (tail, _) = read_entries(
        &path,
        1,
        &LogOptions {
            tail: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(tail.len(), 2);
    let future = LogOptions {
        since_nanos: Some(i64::MAX),
        ..Default::default()
    };
    assert!(read_entries(&path, 1, &future).unwrap().0.is_empty());
}

#[tokio::test]
async fn follow_sees_new_lines_and_ends_when_writer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path).unwrap();
    w.write(0, b"a\n");
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let r = running.clone();
    let mut s = stream(
        path.clone(),
        1,
        LogOptions {
            follow: true,
            ..Default::default()
        },
        move || r.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert_eq!(s.next().await.unwrap().unwrap().text, "a\n");
    w.write(1, b"b\n");
    assert_eq!(s.next().await.unwrap().unwrap().text, "b\n");
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(s.next().await.is_none());
}

fn limited(max_size: u64, files: u32) -> LogLimits {
    LogLimits {
        max_size_bytes: Some(max_size),
        max_files: Some(files),
    }
}

/// The size of one entry line of `text` as the writer writes it.
fn line_len(text: &str) -> u64 {
    let entry = LogEntry {
        time: husk_core::Timestamp::now(),
        stream: husk_core::OutputStream::Stdout,
        text: text.into(),
    };
    serde_json::to_vec(&entry).unwrap().len() as u64 + 1
}

fn texts(entries: &[LogEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.text.trim_end().to_string())
        .collect()
}

fn numbered(w: &mut LogWriter, range: std::ops::Range<u32>) {
    for i in range {
        w.write(0, format!("{i:06}\n").as_bytes());
    }
}

#[test]
fn rotation_keeps_max_files_each_at_most_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let line = line_len("000000\n");
    // Three lines fit in a file; a fourth would pass the limit by one byte.
    let mut w = LogWriter::open_limited(&path, limited(4 * line - 1, 3)).unwrap();
    numbered(&mut w, 0..3);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * line);
    assert!(
        !rotated_path(&path, 1).exists(),
        "not rotated before it must be"
    );
    numbered(&mut w, 3..4);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), line);
    assert_eq!(
        std::fs::metadata(rotated_path(&path, 1)).unwrap().len(),
        3 * line
    );
    numbered(&mut w, 4..20);
    // 20 lines: files of 3 lines, the newest 2 lines in `log`; only three files are kept.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["log", "log.1", "log.2"]);
    for k in 0..3 {
        assert!(std::fs::metadata(rotated_path(&path, k)).unwrap().len() < 4 * line);
    }
    let (entries, _) = read_entries(&path, 3, &LogOptions::default()).unwrap();
    let want: Vec<String> = (12..20).map(|i| format!("{i:06}")).collect();
    assert_eq!(texts(&entries), want, "oldest file first, in order");
    let (tail, _) = read_entries(
        &path,
        3,
        &LogOptions {
            tail: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(texts(&tail), ["000016", "000017", "000018", "000019"]);
    // A writer opened again (the shim restarted) counts what the file holds.
    drop(w);
    let mut w = LogWriter::open_limited(&path, limited(4 * line - 1, 3)).unwrap();
    numbered(&mut w, 20..22);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), line);
    let (entries, _) = read_entries(&path, 3, &LogOptions::default()).unwrap();
    assert_eq!(texts(&entries).first().unwrap(), "000015");
    assert_eq!(texts(&entries).last().unwrap(), "000021");
}

#[test]
fn one_file_starts_over_and_a_line_longer_than_the_limit_is_kept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let line = line_len("000000\n");
    let mut w = LogWriter::open_limited(&path, limited(2 * line, 1)).unwrap();
    numbered(&mut w, 0..5);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), line);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "one file, nothing left beside it");
    let (entries, _) = read_entries(&path, 1, &LogOptions::default()).unwrap();
    assert_eq!(texts(&entries), ["000004"]);
    let long = "y".repeat(3 * line as usize);
    w.write(1, format!("{long}\n").as_bytes());
    numbered(&mut w, 5..6);
    let (entries, _) = read_entries(&path, 1, &LogOptions::default()).unwrap();
    assert_eq!(texts(&entries), ["000005"]);
    // Unbounded: never rotated; /dev/null is never renamed.
    let mut w = LogWriter::open_limited(Path::new("/dev/null"), limited(1, 2)).unwrap();
    numbered(&mut w, 0..3);
    assert!(Path::new("/dev/null").exists());
}

#[test]
fn a_cursor_reads_each_line_once_across_rotations_between_its_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let line = line_len("000000\n");
    let mut w = LogWriter::open_limited(&path, limited(3 * line, 4)).unwrap();
    let mut cursor = LogCursor::new(path.clone(), 4);
    assert_eq!(cursor.step().unwrap(), Step::AtEnd, "nothing written yet");
    let mut seen = Vec::new();
    let mut next = 0;
    // Each round writes 0 to 8 lines (up to two rotations behind the reader), then reads to the end.
    for round in 0..60u32 {
        let n = (round * 7) % 9;
        numbered(&mut w, next..next + n);
        next += n;
        loop {
            match cursor.step().unwrap() {
                Step::Read(e) => seen.extend(texts(&e)),
                Step::AtEnd => break,
                Step::Rotating => panic!("no rotation is in progress"),
            }
        }
    }
    let want: Vec<String> = (0..next).map(|i| format!("{i:06}")).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_follower_sees_every_line_once_in_order_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let line = line_len("000000\n");
    let mut w = LogWriter::open_limited(&path, limited(3 * line, 3)).unwrap();
    let mut s = stream(
        path.clone(),
        3,
        LogOptions {
            follow: true,
            ..Default::default()
        },
        || true,
    );
    // Rounds of 0 to 5 lines (up to two rotations while the follower waits), each read to the end.
    let mut next = 0;
    for round in 0..50u32 {
        let n = (round * 5) % 6;
        numbered(&mut w, next..next + n);
        for i in next..next + n {
            let e = tokio::time::timeout(Duration::from_secs(5), s.next())
                .await
                .expect("the follower saw the line")
                .unwrap()
                .unwrap();
            assert_eq!(e.text, format!("{i:06}\n"));
        }
        next += n;
    }
    assert!(next > 30, "several rotations");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), s.next())
            .await
            .is_err(),
        "nothing more, nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_racing_a_fast_writer_loses_and_repeats_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let line = line_len("000000\n");
    let total = 30_000u32;
    let running = Arc::new(AtomicBool::new(true));
    // The number after the last line the follower saw.
    let seen = Arc::new(AtomicU32::new(0));
    let (r, seen2) = (running.clone(), seen.clone());
    let follower = stream(
        path.clone(),
        3,
        LogOptions {
            follow: true,
            ..Default::default()
        },
        move || r.load(Ordering::SeqCst),
    );
    let reader = tokio::spawn(async move {
        follower
            .map(|e| e.unwrap().text.trim_end().parse::<u32>().unwrap())
            .inspect(|n| seen2.store(n + 1, Ordering::SeqCst))
            .collect::<Vec<u32>>()
            .await
    });
    // A writer on another thread, as fast as it can with files of 100 lines (so ~300 rotations), but never
    // more than one file ahead of the follower: nothing the follower has not read is dropped, so it must
    // see every line however the rotations fall between its reads.
    let w_path = path.clone();
    let writer = std::thread::spawn(move || {
        let mut w = LogWriter::open_limited(&w_path, limited(100 * line, 3)).unwrap();
        for i in 0..total {
            while i - seen.load(Ordering::SeqCst).min(i) > 100 {
                std::thread::sleep(Duration::from_micros(200));
            }
            w.write(0, format!("{i:06}\n").as_bytes());
        }
    });
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    running.store(false, Ordering::SeqCst);
    let numbers = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(numbers.len(), total as usize);
    assert!(numbers.iter().enumerate().all(|(i, n)| i as u32 == *n));
    let on_disk: u64 = (0..4)
        .filter_map(|k| std::fs::metadata(rotated_path(&path, k)).ok())
        .map(|m| m.len())
        .sum();
    assert!(on_disk <= 3 * 100 * line, "{on_disk} bytes on disk");
}
