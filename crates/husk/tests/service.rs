//! husk as a service: `--check-config`, completion scripts and manual pages from the binary, and (as root) the
//! daemon's systemd readiness notification and socket activation.

mod common;

use std::process::{Command, Stdio};

use common::husk_bin;

fn husk(args: &[&str]) -> common::Run {
    Command::new(husk_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run husk")
        .into()
}

#[test]
fn check_config_accepts_a_good_file_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("husk.toml");
    let path = file.to_str().unwrap();
    std::fs::write(
        &file,
        "root = \"/var/lib/h\"\ndrivers = [\"linux\", \"vm\"]\n[vm]\naccel = \"tcg\"\n",
    )
    .unwrap();
    let ok = husk(&["daemon", "--check-config", "--config", path]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains(": ok"), "{}", ok.stdout);

    std::fs::write(&file, "root = \"/var/lib/h\"\n\n[vm]\nacel = \"tcg\"\n").unwrap();
    let bad = husk(&["daemon", "--check-config", "--config", path]);
    assert_eq!(bad.code, 1);
    assert_eq!(
        bad.stderr.trim(),
        format!("{path}: line 4: vm.acel: unknown key; did you mean `vm.accel`?")
    );

    // Flags are checked as the daemon would take them.
    std::fs::write(&file, "").unwrap();
    let flag = husk(&[
        "daemon",
        "--check-config",
        "--config",
        path,
        "--mode",
        "box",
    ]);
    assert_eq!(flag.code, 1);
    assert!(
        flag.stderr.contains("mode: unknown mode \"box\""),
        "{}",
        flag.stderr
    );

    let missing = husk(&[
        "daemon",
        "--check-config",
        "--config",
        "/nonexistent/husk.toml",
    ]);
    assert_eq!(missing.code, 1);
}

#[test]
fn completion_scripts_and_man_pages_come_from_the_binary() {
    let bash = husk(&["completion", "bash"]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), &bash.stdout).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(script.path())
        .status()
        .unwrap();
    assert!(syntax.success(), "the bash script does not parse");
    assert!(bash.stdout.contains("--check-config"));
    let fish = husk(&["completion", "fish"]);
    assert!(fish.stdout.contains("-l check-config"), "{}", fish.stdout);
    assert_ne!(husk(&["completion", "tcsh"]).code, 0);

    let dir = tempfile::tempdir().unwrap();
    let out = husk(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Vec<&str> = out.stdout.lines().collect();
    assert!(listed.len() > 60, "{listed:?}");
    for page in ["husk.1", "husk-run.1", "husk-image-ls.1", "husk-daemon.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    assert!(
        !dir.path().join("husk-shim.1").exists(),
        "no page for internal commands"
    );
}
