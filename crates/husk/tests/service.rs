//! husk as a service: `--check-config`, completion scripts and manual pages from the binary, and (as root) the
//! daemon's systemd readiness notification and socket activation.

mod common;

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, husk_bin};

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

/// The next datagram on `socket`, as text.
fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let len = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_once_its_socket_answers() {
    common::require_root();
    let mut d = Daemon::stopped(&[], "");
    let notify = d.dir.path().join("notify");
    let receiver = UnixDatagram::bind(&notify).unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut cmd = d.command();
    cmd.env("NOTIFY_SOCKET", &notify);
    d.adopt(cmd.spawn().expect("start husk daemon"));

    let ready = next_message(&receiver);
    // Asked right when READY=1 arrives: the API must already answer.
    let version = d.husk(&["version"]);
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "{ready:?}\n{}",
        d.log()
    );
    assert!(
        version.stdout.contains("Server: husk"),
        "READY=1 came before the socket answered: {}",
        version.stdout
    );
    assert!(ready.contains("STATUS=serving on "), "{ready:?}");

    assert!(d.terminate().success());
    let stopping = next_message(&receiver);
    assert_eq!(stopping, "STOPPING=1");
}

/// `husk version` against `d`, in a thread of its own (it may wait for the daemon).
fn version_in_background(d: &Daemon) -> std::thread::JoinHandle<std::process::Output> {
    let host = format!("unix://{}", d.socket.display());
    std::thread::spawn(move || {
        Command::new(husk_bin())
            .arg("version")
            .env("HUSK_HOST", host)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
}

#[test]
fn the_daemon_serves_the_socket_systemd_passes() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    common::require_root();
    let mut d = Daemon::stopped(&[], "");
    // systemd's part: bind and listen before the service exists.
    let listener = UnixListener::bind(&d.socket).unwrap();
    let fd = listener.as_raw_fd();
    // A client that comes before the daemon waits in the socket's queue and is answered once it starts.
    let early = version_in_background(&d);
    std::thread::sleep(Duration::from_millis(200));

    let daemon = d.command();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(d.dir.path().join("daemon.log"))
        .unwrap();
    let mut cmd = Command::new("/bin/sh");
    // LISTEN_PID must be the daemon's own: the shell's, which exec keeps.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(daemon.get_program())
        .args(daemon.get_args())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: only dup2 and fcntl, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    d.adopt(cmd.spawn().expect("start husk daemon"));
    d.wait_until_up();
    let early = early.join().unwrap();
    assert!(
        String::from_utf8_lossy(&early.stdout).contains("Server: husk"),
        "{}",
        String::from_utf8_lossy(&early.stdout)
    );
    assert!(d.log().contains("the socket systemd passed"), "{}", d.log());
    assert!(d.terminate().success());
    assert!(
        d.socket.exists(),
        "the daemon removed the socket systemd owns"
    );
    drop(listener);
}

/// A descriptor the daemon's starter leaked to it (a shell's or a supervisor's pipe) reaches no shim: once the
/// daemon stops, the pipe's reader sees its end though a container still runs. Before, every shim kept it open
/// for its container's life, and a starter waiting for that end waited for every container.
#[test]
fn a_descriptor_the_daemon_inherits_reaches_no_shim() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let mut d = Daemon::stopped(&["--driver", "linux"], "");
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let leaked = writer.as_raw_fd();
    let mut cmd = d.command();
    // SAFETY: only dup2, async-signal-safe, between fork and exec; the copy at 9 is inheritable.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(leaked, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    d.adopt(cmd.spawn().expect("start husk daemon"));
    drop(writer);
    d.wait_until_up();
    d.husk(&[
        "image",
        "load",
        "-i",
        common::busybox_archive().to_str().unwrap(),
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "kept",
        common::IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert!(d.terminate().success());
    let mut reader = std::fs::File::from(reader);
    nix::fcntl::fcntl(
        reader.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let ended = Daemon::eventually(Duration::from_secs(5), || {
        matches!(reader.read(&mut [0u8; 16]), Ok(0))
    });
    d.spawn(&[]);
    assert_eq!(d.inspect("kept")["State"]["Running"], true);
    assert!(
        ended,
        "a process the daemon started still holds the pipe it inherited"
    );
}

/// `husk daemon` with `d`'s settings, run to its end (it must refuse to start): its exit code and error output.
fn refused_start(d: &Daemon) -> (Option<i32>, String) {
    let out = d
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A second daemon on a root in use, a damaged store and a store of a newer husk are each refused with an error
/// that says so, and the store is left exactly as it was: never reset, never migrated down.
#[test]
fn the_daemon_refuses_a_root_in_use_and_a_store_it_cannot_trust() {
    let mut d = Daemon::start_with(&["--driver", "linux"], "", false);
    d.husk(&["volume", "create", "kept"]).ok();
    let (code, err) = refused_start(&d);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "another husk daemon (pid {}) is already using",
            d.daemon_pid()
        )),
        "{err}"
    );
    assert!(d.husk(&["volume", "ls", "-q"]).ok().contains("kept"));
    assert!(d.terminate().success());

    let db = d.root.join("husk.db");
    assert!(
        !d.root.join("husk.db-wal").exists(),
        "a clean stop folds the log into the store"
    );
    let good = std::fs::read(&db).unwrap();
    // A damaged header.
    let mut damaged = good.clone();
    damaged[..100].fill(0x5a);
    // A newer husk's schema: the header's user version (bytes 60..64, big-endian) past any this husk knows.
    let mut newer = good.clone();
    newer[60..64].copy_from_slice(&1000u32.to_be_bytes());
    for (bad, says) in [
        (&damaged, "is damaged"),
        (&newer, "newer than this husk knows"),
    ] {
        std::fs::write(&db, bad).unwrap();
        let (code, err) = refused_start(&d);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(says) && err.contains(&db.display().to_string()),
            "{err}"
        );
        assert_eq!(&std::fs::read(&db).unwrap(), bad, "the store was changed");
    }
    std::fs::write(&db, &good).unwrap();
    d.spawn(&[]);
    assert!(d.husk(&["volume", "ls", "-q"]).ok().contains("kept"));
}

/// The CPU time (user and system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis: state is the 3rd field, utime the 14th, stime the 15th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The number of descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The daemon at its descriptor limit: clients past it wait in the sockets' queues while the daemon idles (no
/// accept loop spins: tonic's own retries at once), nothing fails for good, and once descriptors come free every
/// client is answered and the daemon holds no more than before (the leak checker).
#[test]
fn the_daemon_at_its_descriptor_limit_idles_and_recovers() {
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;

    common::require_root();
    let mut d = Daemon::stopped(&["--driver", "linux"], "");
    let mut cmd = d.command();
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 160,
                rlim_max: 160,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    d.adopt(cmd.spawn().expect("start husk daemon"));
    d.wait_until_up();
    let pid = d.daemon_pid();
    // Idle connections until the daemon has no descriptor left; a few more wait in each socket's queue.
    let cri_socket = d.run_root.join("cri.sock");
    let mut held = Vec::new();
    for _ in 0..170 {
        held.push(UnixStream::connect(&d.socket).unwrap());
    }
    assert!(
        Daemon::eventually(Duration::from_secs(10), || open_fds(pid) >= 159),
        "the daemon has {} descriptors",
        open_fds(pid)
    );
    for _ in 0..5 {
        held.push(UnixStream::connect(&cri_socket).unwrap());
    }
    let waiting = version_in_background(&d);
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        used < per_second / 2,
        "the daemon used {used} ticks of CPU in 2 s at its descriptor limit: an accept loop spins"
    );
    assert!(!waiting.is_finished(), "a client past the limit waits");

    drop(held);
    let answered = waiting.join().unwrap();
    assert!(
        String::from_utf8_lossy(&answered.stdout).contains("Server: husk"),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    let archive = common::busybox_archive();
    d.husk(&["image", "load", "-i", archive.to_str().unwrap()])
        .ok();
    assert_eq!(
        d.husk(&[
            "run",
            "--rm",
            "--network",
            "none",
            common::IMAGE,
            "echo",
            "hi"
        ])
        .ok(),
        "hi"
    );
    // The CRI socket answers too: a gRPC client's first bytes get HTTP/2 settings back.
    let mut cri = UnixStream::connect(&cri_socket).unwrap();
    cri.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    cri.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut frame = [0u8; 9];
    cri.read_exact(&mut frame).unwrap();
    assert_eq!(frame[3], 4, "a SETTINGS frame: {frame:?}");
}
