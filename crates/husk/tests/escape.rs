//! Attacks from inside a container on the host's husk binary (CVE-2019-5736's class), run as an attacker would,
//! against the real daemon of the `linux` driver. docs/security.md lists each attack and the test that tries it.
//!
//! The attacker's tools: a script whose interpreter is `#!/proc/self/exe` (the kernel resolves it in the process
//! that executes the script: for `husk exec` and for a container's entrypoint that is husk code that entered
//! the container), a symbolic link to `/proc/self/exe` named `husk-init` (husk then runs as the container's init
//! and stays, holding the race window open), and a racer that opens every `/proc/*/exe` and
//! `/proc/*/map_files/*` it can see, over and over, and writes to whatever it got that is not one of the
//! container's own files. The tests fail if the racer ever holds a descriptor to a file outside the container's
//! root that is not the sealed in-memory copy, if any write goes through, or if the host's binary changes.

mod common;

use std::time::Duration;

use common::{Daemon, IMAGE, husk_bin};

/// The racer: for `$1` seconds, opens every `/proc/*/exe` and `/proc/*/map_files/*` it can; for each descriptor
/// that is not a file of the container's own (its path, seen from inside, is not the same inode), it records
/// `what|link|dev:inode|wrote` in /tmp/seen, where `wrote` says whether a one-byte append went through. It
/// touches /tmp/racer-done when it ends. Every open and write is in a subshell, so a refusal never stops it.
const RACER: &str = r#"
end=$(( $(date +%s) + $1 ))
: > /tmp/seen
probe() {
    ( exec 3<"$1" || exit 0
      link=$(readlink /proc/self/fd/3)
      id=$(stat -L -c %d:%i /proc/self/fd/3)
      here=$(stat -L -c %d:%i "$link" 2>/dev/null)
      [ "$id" = "$here" ] && exit 0
      wrote=no
      (printf x >> /proc/self/fd/3) 2>/dev/null && wrote=yes
      echo "$1|$link|$id|$wrote" >> /tmp/seen
    ) 2>/dev/null
}
while [ "$(date +%s)" -lt "$end" ]; do
    for f in /proc/[0-9]*/exe /proc/[0-9]*/map_files/*; do probe "$f"; done
done
touch /tmp/racer-done
"#;

/// Plants the attacker's files in container `c`: /bin/evil (`#!/proc/self/exe`) and /bin/husk-init (a link to
/// /proc/self/exe).
fn plant(d: &Daemon, c: &str) {
    d.husk(&[
        "exec",
        c,
        "sh",
        "-c",
        "printf '#!/proc/self/exe\\n' > /bin/evil && chmod +x /bin/evil && ln -s /proc/self/exe /bin/husk-init",
    ])
    .ok();
}

/// Starts the racer in container `c` for `seconds`.
fn start_racer(d: &Daemon, c: &str, seconds: u32) {
    d.husk(&[
        "exec",
        "-d",
        c,
        "sh",
        "-c",
        RACER,
        "racer",
        &seconds.to_string(),
    ])
    .ok();
}

/// Waits for the racer in `c` and returns what it obtained: one `what|link|dev:inode|wrote` line per descriptor
/// to a file that is not the container's own.
fn racer_findings(d: &Daemon, c: &str) -> Vec<String> {
    assert!(
        Daemon::eventually(Duration::from_secs(60), || {
            d.husk(&["exec", c, "test", "-e", "/tmp/racer-done"]).code == 0
        }),
        "the racer did not finish"
    );
    d.husk(&["exec", c, "cat", "/tmp/seen"])
        .ok()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts that every descriptor the racer got to a file outside the container is the sealed copy (an anonymous,
/// sealed memfd) and that no write went through; returns how many it got (the race was won that often).
fn assert_only_sealed_copies(findings: &[String]) -> usize {
    for line in findings {
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 4, "racer line {line:?}");
        assert!(
            fields[1].starts_with("/memfd:husk"),
            "a container obtained a descriptor to a file outside its root: {line}\nall: {findings:#?}"
        );
        assert_eq!(fields[3], "no", "a write went through: {line}");
    }
    findings.len()
}

fn binary_contents() -> Vec<u8> {
    std::fs::read(husk_bin()).expect("read the husk binary")
}

#[test]
fn exec_of_a_proc_self_exe_script_reaches_only_a_sealed_copy() {
    let before = binary_contents();
    let d = Daemon::start(&[]);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    plant(&d, "c");
    start_racer(&d, "c", 6);

    // The first half of the attack: husk code runs in the container. It is the sealed copy that runs.
    for _ in 0..10 {
        let r = d.husk(&["exec", "c", "/bin/evil"]);
        assert_eq!(r.code, 2, "husk's usage error: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("Usage"), "{}", r.stderr);
    }
    // And stays, as the init of `husk-init sleep 3`, while the racer looks at it.
    d.husk(&["exec", "c", "/bin/husk-init", "sleep", "3"]).ok();

    let won = assert_only_sealed_copies(&racer_findings(&d, "c"));
    assert!(
        won > 0,
        "the racer never caught a husk process: the test proves nothing"
    );
    assert!(
        binary_contents() == before,
        "the host's husk binary changed"
    );
}

#[test]
fn an_entrypoint_that_runs_proc_self_exe_reaches_only_a_sealed_copy() {
    let before = binary_contents();
    let d = Daemon::start(&[]);
    let attack = d.dir.path().join("attack");
    std::fs::create_dir(&attack).unwrap();
    std::fs::write(attack.join("evil"), "#!/proc/self/exe\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(attack.join("evil"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    std::os::unix::fs::symlink("/proc/self/exe", attack.join("husk-init")).unwrap();
    let volume = format!("{}:/x:ro", attack.display());

    // The script as the entrypoint: the container's init (husk code until its exec) runs husk's usage.
    let r = d.husk(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &volume,
        IMAGE,
        "/x/evil",
    ]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("Usage"), "{}", r.stderr);

    // husk as the container's PID 1 for its whole life, in a sandbox whose PID 1 is the pause process (also
    // husk code): the racer sees both.
    d.husk(&["sandbox", "create", "--name", "pod", "--share-pid"])
        .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
        "--sandbox",
        "pod",
        "-v",
        &volume,
        IMAGE,
        "/x/husk-init",
        "sleep",
        "1000",
    ])
    .ok();
    let init = d.pid("c");
    let exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:husk"),
        "the container's husk runs from {}",
        exe.display()
    );
    start_racer(&d, "c", 3);
    // The pause process (PID 1) keeps every capability, so the container's root may not open its exe at all
    // (ptrace access rules); the container's husk-init dropped to the container's set, so the racer opens it.
    let won = assert_only_sealed_copies(&racer_findings(&d, "c"));
    assert!(won > 0, "the racer never caught the container's husk");
    assert!(
        binary_contents() == before,
        "the host's husk binary changed"
    );
}

#[test]
fn the_init_of_run_init_is_a_copy_the_host_never_runs() {
    let d = Daemon::start(&[]);
    d.husk(&[
        "run",
        "-d",
        "--init",
        "--name",
        "c",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    use std::os::unix::fs::MetadataExt;
    let init = d.pid("c");
    let identity = |m: std::fs::Metadata| (m.dev(), m.ino());
    let copy = identity(std::fs::metadata(d.root.join("init/husk-init")).unwrap());
    // `run -d` answers once the container is released; its first process may still be the sealed husk copy
    // that execs the init (a memfd) for a moment after that.
    let exe = || identity(std::fs::metadata(format!("/proc/{init}/exe")).unwrap());
    Daemon::eventually(std::time::Duration::from_secs(10), || exe() == copy);
    let running = exe();
    assert_eq!(running, copy, "the init runs from the daemon's copy");
    for installed in [husk_bin(), husk_bin().with_file_name("husk-pause")] {
        if let Ok(m) = std::fs::metadata(&installed) {
            assert_ne!(running, identity(m), "{} itself", installed.display());
        }
    }
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{init}/comm"))
            .unwrap()
            .trim(),
        "husk-init"
    );
    // Bind-mounted read-only: even the container's root cannot write its own init.
    let mounts = d.husk(&["exec", "c", "cat", "/proc/self/mountinfo"]).ok();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/sbin/husk-init"))
        .expect("the init's mount");
    assert!(
        line.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{line}"
    );
    let r = d.husk(&["exec", "c", "sh", "-c", "printf x >> /sbin/husk-init"]);
    assert_ne!(r.code, 0, "the init binary is writable in the container");
}

/// An exec'd process is confined by the container's seccomp profile whatever the container's settings: with
/// no_new_privileges off (Kubernetes' default) and with a profile of the user's. libcontainer dropped the
/// profile for exec'd processes (third_party/libcontainer/HUSK.md).
#[test]
fn an_exec_is_confined_by_the_containers_seccomp_profile() {
    let d = Daemon::start(&[]);
    let seccomp_of = |c: &str| {
        d.husk(&["exec", c, "grep", "Seccomp:", "/proc/self/status"])
            .ok()
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    d.husk(&[
        "run",
        "-d",
        "--name",
        "nnp-off",
        "--network",
        "none",
        "--security-opt",
        "no-new-privileges=false",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(
        seccomp_of("nnp-off"),
        "2",
        "the default profile filters exec'd processes"
    );

    let profile = d.dir.path().join("no-chmod.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    for nnp in ["true", "false"] {
        let name = format!("own-{nnp}");
        d.husk(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "--security-opt",
            &format!("seccomp={}", profile.display()),
            "--security-opt",
            &format!("no-new-privileges={nnp}"),
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok();
        assert_eq!(seccomp_of(&name), "2", "{name}");
        let r = d.husk(&["exec", &name, "chmod", "400", "/tmp"]);
        assert_ne!(
            r.code, 0,
            "{name}: chmod went through the profile: {}",
            r.stdout
        );
    }
}

/// The (device, inode) of `path` as the host sees it, following links.
fn inode_of(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.dev(), m.ino())
}

/// Whether process `pid`'s working directory is inside its root: walking up from it (`..`, as the host
/// resolves it) meets the process's root before the host's.
fn cwd_inside_root(pid: &str) -> bool {
    let root = inode_of(&std::path::PathBuf::from(format!("/proc/{pid}/root")));
    let host_root = inode_of(std::path::Path::new("/"));
    let mut dir = std::path::PathBuf::from(format!("/proc/{pid}/cwd"));
    for _ in 0..256 {
        let here = inode_of(&dir);
        if here == root {
            return true;
        }
        if here == host_root {
            return false;
        }
        dir.push("..");
    }
    false
}

/// The descriptors process `pid` holds, as `(fd, target)` seen from the host.
fn open_fds(pid: &str) -> Vec<(String, String)> {
    let mut fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    fds.sort();
    fds
}

/// Waits (10 s at most) until process `pid` runs `command`: until its exec a container's process is still the
/// runtime's (its descriptors, libcontainer's `notify.sock`), and `run -d` or `exec -d` may return before it.
fn runs(pid: &str, command: &str) -> bool {
    Daemon::eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|s| s.trim() == command)
    })
}

/// Asserts that `pid` holds its stdio and nothing else (pipes, sockets, /dev/null or a terminal).
fn holds_only_stdio(pid: &str, who: &str) {
    let fds = open_fds(pid);
    let numbers: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        numbers,
        ["0", "1", "2"],
        "{who} holds more than its stdio: {fds:?}"
    );
    for (_, target) in &fds {
        assert!(
            target.starts_with("pipe:")
                || target.starts_with("socket:")
                || target == "/dev/null"
                || target.starts_with("/dev/pts/"),
            "{who}'s stdio is {target}"
        );
    }
}

/// The container's processes other than `init`, from its pids cgroup.
fn other_processes(d: &Daemon, c: &str, init: &str) -> Vec<String> {
    std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/{}/{c}/cgroup.procs",
        d.cgroup_parent
    ))
    .unwrap_or_default()
    .lines()
    .filter(|p| *p != init)
    .map(String::from)
    .collect()
}

/// CVE-2024-21626's class: a descriptor of the runtime (a cgroup directory, the daemon's socket, a store file)
/// left open into the container, or a working directory outside its root (`--workdir /proc/self/fd/N`), gives a
/// container the host's filesystem. The init and an exec'd process hold only their stdio, and their working
/// directories are inside their root, also when the working directory asked for names a descriptor.
#[test]
fn no_host_descriptor_or_directory_reaches_a_container() {
    if !std::path::Path::new("/sys/fs/cgroup/pids").is_dir() {
        return; // the exec'd process is found through the v1 pids cgroup
    }
    let d = Daemon::start(&[]);
    let run_d = |workdir: &str| {
        d.husk(&[
            "run",
            "-d",
            "--network",
            "none",
            "--workdir",
            workdir,
            IMAGE,
            "sleep",
            "1000",
        ])
    };
    let c = run_d("/tmp").ok();
    let init = d.husk(&["inspect", "-f", "{{.State.Pid}}", &c]).ok();
    assert!(runs(&init, "sleep"), "the init runs its command");
    holds_only_stdio(&init, "the init");
    assert!(cwd_inside_root(&init));
    assert_eq!(
        inode_of(&std::path::PathBuf::from(format!("/proc/{init}/cwd"))),
        inode_of(&std::path::PathBuf::from(format!("/proc/{init}/root/tmp"))),
        "the init works in its /tmp"
    );

    d.husk(&["exec", "-d", &c, "sleep", "1000"]).ok();
    let mut exec = Vec::new();
    assert!(
        Daemon::eventually(Duration::from_secs(10), || {
            exec = other_processes(&d, &c, &init);
            !exec.is_empty()
        }),
        "the exec'd process runs"
    );
    assert!(
        runs(&exec[0], "sleep"),
        "the exec'd process runs its command"
    );
    holds_only_stdio(&exec[0], "an exec'd process");
    assert!(cwd_inside_root(&exec[0]), "the exec'd process works inside");

    // A working directory that names a descriptor of the process that enters the container: wherever it
    // resolves, or if it is refused, never outside the root.
    for n in 3..12 {
        let workdir = format!("/proc/self/fd/{n}");
        let r = run_d(&workdir);
        if r.code == 0 {
            let id = r.stdout.trim();
            let pid = d.husk(&["inspect", "-f", "{{.State.Pid}}", id]).ok();
            assert!(
                cwd_inside_root(&pid),
                "run --workdir {workdir}: outside its root"
            );
            d.husk(&["rm", "-f", id]).ok();
        }
        let before = other_processes(&d, &c, &init);
        if d.husk(&["exec", "-d", "--workdir", &workdir, &c, "sleep", "1000"])
            .code
            == 0
        {
            let mut new = Vec::new();
            Daemon::eventually(Duration::from_secs(5), || {
                new = other_processes(&d, &c, &init);
                new.retain(|p| !before.contains(p));
                !new.is_empty()
            });
            for pid in &new {
                assert!(
                    cwd_inside_root(pid),
                    "exec --workdir {workdir}: outside its root"
                );
            }
        }
    }
    d.husk(&["rm", "-f", &c]).ok();
    d.assert_no_leftovers();
}

/// A mount target that is a symbolic link out of the root (CVE-2021-30465's and runc's mount-target class): an
/// image whose `/evil` links to a directory of the host, and a bind mount onto `/evil/inside`. The link is
/// followed inside the container's root, never on the host: the host directory gets no mount and no file.
#[test]
fn a_mount_target_linking_out_of_the_root_stays_inside() {
    let d = Daemon::start(&[]);
    let host_dir = d.dir.path().join("host-side");
    std::fs::create_dir_all(host_dir.join("inside")).unwrap();
    let source = d.dir.path().join("volume");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("marker"), "from the volume").unwrap();
    for (name, link) in [
        ("absolute", host_dir.display().to_string()),
        (
            "climbing",
            format!("../../../../../../..{}", host_dir.display()),
        ),
    ] {
        let maker = format!("mk-{name}");
        d.husk(&["run", "--name", &maker, IMAGE, "ln", "-s", &link, "/evil"])
            .ok();
        let image = format!("husk.local/evil-{name}:1");
        d.husk(&["commit", &maker, &image]).ok();
        d.husk(&["rm", &maker]).ok();
        let r = d.husk(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{}:/evil/inside", source.display()),
            &image,
            "cat",
            "/evil/inside/marker",
        ]);
        // As with runc: the link resolves inside the root (to a new directory there), and the volume is there.
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert_eq!(r.stdout, "from the volume", "{name}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&host_dir.display().to_string()),
            "{name}: a mount landed on the host's {}",
            host_dir.display()
        );
        assert_eq!(
            std::fs::read_dir(host_dir.join("inside")).unwrap().count(),
            0,
            "{name}: the host directory was written"
        );
        d.husk(&["rmi", &image]).ok();
    }
    d.assert_no_leftovers();
}

/// The unix sockets listening in the host's network namespace that belong to the daemon or to a process naming
/// its directories (shims, pause processes): their paths, `@name` for abstract ones.
fn husk_listening_sockets(d: &Daemon) -> Vec<String> {
    let base = d.dir.path().to_string_lossy().to_string();
    let daemon = d.daemon_pid();
    let mut inodes = std::collections::HashSet::new();
    for common::leaks::Process { pid, cmdline, .. } in common::leaks::processes() {
        if pid != daemon && !cmdline.contains(&base) {
            continue;
        }
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let link = std::fs::read_link(fd.path()).unwrap_or_default();
            let link = link.to_string_lossy();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    // `Num RefCount Protocol Flags Type St Inode Path`; listening: the accept flag (0x10000), unconnected.
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            (flags & 0x10000 != 0 && inodes.contains(*f.get(6)?))
                .then(|| f.get(7).unwrap_or(&"").to_string())
        })
        .collect()
}

/// CVE-2020-15257's class: no socket of the daemon, its shims or its pause processes can be reached from a
/// container, not even one on the host's network (where abstract sockets would be): each listens on a path
/// (none abstract), and no path is there inside the container.
#[test]
fn no_container_reaches_a_socket_of_the_daemon_or_its_shims() {
    let d = Daemon::start(&["--driver", "linux"]);
    d.husk(&["sandbox", "create", "--name", "pod"]).ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "in-pod",
        "--sandbox",
        "pod",
        IMAGE,
        "sleep",
        "300",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "on-host-net",
        "--network",
        "host",
        IMAGE,
        "sleep",
        "300",
    ])
    .ok();
    // Until a container's init execs its command it still listens on libcontainer's relative `notify.sock` (in
    // the host's state directory, for the start message; closed at exec): `run -d` may return before the exec.
    for c in ["in-pod", "on-host-net"] {
        assert!(runs(&d.pid(c).to_string(), "sleep"), "{c} runs its command");
    }
    let sockets = husk_listening_sockets(&d);
    assert!(
        sockets.iter().any(|s| s == &d.socket.to_string_lossy()),
        "the daemon's own socket is among those found: {sockets:?}"
    );
    assert!(
        sockets.len() >= 3,
        "the daemon's and the shims' sockets: {sockets:?}"
    );
    let abstract_or_unnamed: Vec<_> = sockets.iter().filter(|s| !s.starts_with('/')).collect();
    assert!(abstract_or_unnamed.is_empty(), "{abstract_or_unnamed:?}");
    for c in ["in-pod", "on-host-net"] {
        for s in &sockets {
            let r = d.husk(&["exec", c, "test", "-e", s]);
            assert_ne!(r.code, 0, "{c} sees {s}");
        }
    }
    eprintln!("husk's listening sockets: {sockets:#?}");
}
