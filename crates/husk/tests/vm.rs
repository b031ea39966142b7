//! The `vm` driver at product level, through the real CLI and daemon (QEMU under TCG on machines without working
//! KVM, as CI's): the guest kernel in both modes, a capsule of two containers in one VM on the sandbox's network
//! with a published port, isolation from the host, bad requests, a daemon restart, and nothing left after
//! deletion. Each test boots as few VMs as it can (a TCG boot takes seconds).

mod common;

use std::time::Duration;

use common::{Daemon, IMAGE};

fn vm_daemon() -> Daemon {
    Daemon::start_driver("vm")
}

/// The guest kernel's release, as `husk info` reports it.
fn guest_kernel(d: &Daemon) -> String {
    let info: serde_json::Value =
        serde_json::from_str(&d.husk(&["info", "--format", "json"]).ok()).unwrap();
    let vm = info["Drivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "vm")
        .expect("the vm driver in husk info")
        .clone();
    assert!(
        ["kvm", "tcg"].contains(&vm["details"]["accelerator"].as_str().unwrap_or("")),
        "{vm}"
    );
    vm["details"]["guest_kernel"]
        .as_str()
        .expect("guest_kernel in the driver's details")
        .to_string()
}

fn host_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// QEMU processes whose command line names `needle`.
fn qemu_processes(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .filter(|c| c.contains("qemu-system") && c.contains(needle))
        .count()
}

#[test]
fn uname_prints_the_guest_kernel_in_both_modes() {
    let d = vm_daemon();
    let guest = guest_kernel(&d);
    let host = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    for mode in ["sandbox", "standalone"] {
        let r = d.husk(&["run", "--rm", "--mode", mode, IMAGE, "uname", "-r"]);
        assert_eq!(r.ok(), guest, "{mode} mode");
    }
    if guest != host {
        // The test machine's own kernel is not the guest's: the answer really came from the guest.
        assert_ne!(guest, host);
    }
    d.assert_no_leftovers();
}

#[test]
fn capsule_in_one_vm_talks_over_localhost_publishes_a_port_and_sees_no_host() {
    let d = vm_daemon();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let publish = format!("127.0.0.1:{port}:8080");
    d.husk(&[
        "sandbox",
        "create",
        "--name",
        "pod",
        "--hostname",
        "capsule",
        "-p",
        &publish,
    ])
    .ok();
    let sandbox = d.inspect("pod");
    assert_eq!(sandbox["Driver"], "vm");
    let sandbox_id = sandbox["Id"].as_str().unwrap_or_default().to_string();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "web",
        "--sandbox",
        "pod",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "side",
        "--sandbox",
        "pod",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let run = d.run_root.to_string_lossy().to_string();
    assert_eq!(qemu_processes(&run), 1, "one VM for the whole capsule");
    // Two containers of one VM over localhost.
    let page = d.husk(&["exec", "side", "wget", "-qO-", "http://localhost:8080/"]);
    assert_eq!(page.ok(), "hello from husk");
    assert_eq!(d.husk(&["exec", "side", "hostname"]).ok(), "capsule");
    // The published port answers on the host's loopback (portmap DNAT -> veth -> tc redirect -> tap -> guest).
    let answered = Daemon::eventually(Duration::from_secs(20), || {
        std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "3",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "hello from husk")
    });
    assert!(answered, "published port {port} did not answer");
    // The guest's interface has the sandbox's address.
    let addresses = d.husk(&["exec", "side", "ip", "addr", "show", "eth0"]).ok();
    let address = sandbox["NetworkSettings"]["addresses"][0]
        .as_str()
        .expect("the sandbox has an address")
        .to_string();
    assert!(
        addresses.contains(&format!("inet {address}")),
        "{addresses} lacks {address}"
    );
    // No host processes, no host kernel.
    let ps = d.husk(&["exec", "side", "ps", "-o", "pid,args"]).ok();
    assert!(!ps.contains("husk daemon") && !ps.contains("qemu"), "{ps}");
    assert_ne!(
        d.husk(&["exec", "side", "cat", "/proc/sys/kernel/random/boot_id"])
            .ok(),
        host_file("/proc/sys/kernel/random/boot_id"),
        "a kernel of its own"
    );
    let procs = d
        .husk(&["exec", "side", "sh", "-c", "ls -d /proc/[0-9]* | wc -l"])
        .ok();
    assert!(
        procs.parse::<u32>().unwrap() < 20,
        "sees only its own few processes: {procs}"
    );
    d.husk(&["rm", "-f", "web", "side"]).ok();
    // The VM outlives its containers: a new one from the same image, once every earlier one is gone (its image
    // layers were once shared under paths of the removed containers, and it came up with an empty root).
    assert_eq!(
        d.husk(&[
            "run",
            "--rm",
            "--sandbox",
            "pod",
            IMAGE,
            "cat",
            "/www/index.html"
        ])
        .ok(),
        "hello from husk"
    );
    // Deleting the capsule leaves no QEMU, no file, no network state.
    d.husk(&["sandbox", "rm", "-f", "pod"]).ok();
    // QEMU is killed before the removal returns; its exit (freeing the guest's memory) may take a moment.
    assert!(
        Daemon::eventually(Duration::from_secs(10), || qemu_processes(&run) == 0),
        "QEMU still runs after the sandbox's removal"
    );
    // Files and network go in the background after the removal returns.
    let vm_dir = d.run_root.join("v").join(&sandbox_id);
    assert!(
        Daemon::eventually(Duration::from_secs(10), || !vm_dir.exists()),
        "{} is still there",
        vm_dir.display()
    );
    d.assert_no_leftovers();
}

/// A removal's background end (QEMU's exit, the shares' unmounting, CNI DEL) is not cut off by a daemon that
/// stops right after it: nothing of the VM is left on the host once the daemon has exited.
#[test]
fn a_daemon_stopping_right_after_a_removal_finishes_it_first() {
    let mut d = vm_daemon();
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["rm", "-f", "c"]).ok();
    assert!(d.terminate().success());
    assert_eq!(d.leftovers(), Vec::<String>::new(), "{}", d.log());
}

#[test]
fn bad_requests_and_a_daemon_restart_leave_the_vm_serving() {
    let mut d = vm_daemon();
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    let cases: &[&[&str]] = &[
        &["exec", "c", "/no/such/binary"],
        &["exec", "-u", "nosuchuser", "c", "true"],
        &["exec", "-w", "relative/dir", "c", "true"],
        &["kill", "-s", "NOPE", "c"],
    ];
    for args in cases {
        let r = d.husk(args);
        assert_ne!(r.code, 0, "{args:?} should fail");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    assert_eq!(d.husk(&["exec", "c", "echo", "alive"]).ok(), "alive");
    // A restarted daemon finds the VM again (QMP and agent sockets) and loses nothing.
    d.kill9();
    d.spawn(&[]);
    assert_eq!(d.inspect("c")["State"]["Status"], "running");
    assert_eq!(d.husk(&["exec", "c", "echo", "again"]).ok(), "again");
    d.husk(&["stop", "-t", "1", "c"]).ok();
    assert_eq!(d.inspect("c")["State"]["ExitCode"], 137);
    d.husk(&["rm", "c"]).ok();
    d.assert_no_leftovers();
}

/// Mounts mounted on the host below `dir`.
fn mounts_below(dir: &std::path::Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect()
}

/// Binds reach a sandbox's VM through its mounts share: a file bind, a propagation mode applied in the guest,
/// host changes seen at once in the guest,
/// a volume shared by two containers of the VM, and no host mount left by a create the daemon died in or by
/// a share that no record names.
#[test]
fn binds_and_volumes_in_a_sandbox_vm_and_a_crash_mid_create() {
    let mut d = vm_daemon();
    let host = tempfile::Builder::new()
        .prefix("hkb")
        .tempdir_in("/tmp")
        .unwrap();
    let file = host.path().join("motd");
    std::fs::write(&file, "first\n").unwrap();
    std::fs::set_permissions(
        host.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    d.husk(&["sandbox", "create", "--name", "pod"]).ok();
    let sandbox_id = d.inspect("pod")["Id"].as_str().unwrap().to_string();
    let file_bind = format!("{}:/etc/motd:ro", file.display());
    let dir_bind = format!("{}:/h:rshared", host.path().display());
    d.husk(&[
        "run",
        "-d",
        "--name",
        "one",
        "--sandbox",
        "pod",
        "-v",
        &file_bind,
        "-v",
        &dir_bind,
        "-v",
        "shared:/s",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "two",
        "--sandbox",
        "pod",
        "-v",
        "shared:/s",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(d.husk(&["exec", "one", "cat", "/etc/motd"]).ok(), "first");
    // The propagation asked for is applied in the guest: /h shared, the file bind private (the default).
    let info = |path: &str| {
        d.husk(&[
            "exec",
            "one",
            "grep",
            &format!(" {path} "),
            "/proc/self/mountinfo",
        ])
        .ok()
    };
    assert!(info("/h").contains(" shared:"), "{}", info("/h"));
    assert!(
        !info("/etc/motd").contains(" shared:"),
        "{}",
        info("/etc/motd")
    );
    let w = d.husk(&["exec", "one", "sh", "-c", "echo x > /etc/motd"]);
    assert_ne!(w.code, 0, "a read-only file bind refuses writes");
    // The host's changes are seen at once (no guest cache of file data on the mounts share).
    std::fs::write(&file, "second\n").unwrap();
    std::fs::write(host.path().join("new"), "made on the host").unwrap();
    assert_eq!(d.husk(&["exec", "one", "cat", "/etc/motd"]).ok(), "second");
    assert_eq!(
        d.husk(&["exec", "one", "cat", "/h/new"]).ok(),
        "made on the host"
    );
    // A container's writes reach the host with the writer's owner, and the other container of the VM at once.
    d.husk(&["exec", "one", "chmod", "1777", "/s"]).ok();
    d.husk(&[
        "exec",
        "-u",
        "1234:5678",
        "one",
        "sh",
        "-c",
        "echo from-one > /s/f; echo back > /h/back",
    ])
    .ok();
    assert_eq!(d.husk(&["exec", "two", "cat", "/s/f"]).ok(), "from-one");
    d.husk(&["exec", "two", "sh", "-c", "echo from-two >> /s/f"])
        .ok();
    assert_eq!(
        d.husk(&["exec", "one", "cat", "/s/f"]).ok(),
        "from-one\nfrom-two"
    );
    let back = host.path().join("back");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "back\n");
    let meta = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&back).unwrap());
    assert_eq!(meta, 1234, "passthrough keeps the guest's owner");
    // The daemon dies right after the VM made a third container: the restarted daemon rolls it back and no host
    // mount of it stays.
    let mounts_dir = d.run_root.join("v").join(&sandbox_id).join("mounts");
    let before = mounts_below(&mounts_dir);
    assert_eq!(before.len(), 4, "{before:?}");
    d.kill9();
    d.spawn(&[("HUSK_FAILPOINT", "create_container:driver_created")]);
    let r = d.husk(&[
        "run",
        "-d",
        "--name",
        "half",
        "--sandbox",
        "pod",
        "-v",
        &dir_bind,
        IMAGE,
        "true",
    ]);
    assert_ne!(r.code, 0, "the daemon died mid-create");
    assert_eq!(mounts_below(&mounts_dir).len(), 5);
    d.kill9();
    // And a share no record names at all (a crash between the bind and the record): the restart removes it.
    let stray = mounts_dir.join("stray").join("0");
    std::fs::create_dir_all(&stray).unwrap();
    let bound = std::process::Command::new("mount")
        .arg("--bind")
        .arg(host.path())
        .arg(&stray)
        .status()
        .unwrap();
    assert!(bound.success());
    d.spawn(&[]);
    assert!(
        Daemon::eventually(Duration::from_secs(10), || mounts_below(&mounts_dir)
            == before),
        "{:?}",
        mounts_below(&mounts_dir)
    );
    assert_eq!(
        d.husk(&["exec", "one", "cat", "/s/f"]).ok(),
        "from-one\nfrom-two"
    );
    d.husk(&["rm", "-f", "one", "two"]).ok();
    assert!(mounts_below(&mounts_dir).is_empty());
    d.husk(&["sandbox", "rm", "-f", "pod"]).ok();
    d.husk(&["volume", "rm", "shared"]).ok();
    d.assert_no_leftovers();
}

/// CVE-2019-5736's class in a guest: a process of a container that runs the agent itself (`/proc/self/exe`
/// executed by an exec'd process, which the agent's shim made) reaches only the agent's read-only binding
/// (`/.husk/agent`), never a writable file, and its writes fail.
#[test]
fn a_guest_container_reaches_only_a_read_only_agent() {
    let d = vm_daemon();
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
    // The agent's host mode serves until killed: a husk process that stays in the container.
    d.husk(&[
        "exec",
        "-d",
        "c",
        "/proc/self/exe",
        "--listen",
        "/tmp/agent.sock",
        "--run-dir",
        "/tmp/agent",
    ])
    .ok();
    assert!(
        Daemon::eventually(Duration::from_secs(60), || {
            d.husk(&["exec", "c", "test", "-S", "/tmp/agent.sock"]).code == 0
        }),
        "the agent did not start serving in the container"
    );
    let out = d
        .husk(&[
            "exec",
            "c",
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do [ -S /tmp/agent.sock ] && readlink $p/exe; done | sort -u; \
             for p in /proc/[0-9]*; do if (printf x >> $p/exe) 2>/dev/null; then echo wrote $p; fi; done",
        ])
        .ok();
    assert!(
        out.lines().any(|l| l == "/.husk/agent"),
        "no agent process seen: {out}"
    );
    for line in out.lines() {
        assert!(
            line == "/.husk/agent" || line == "/bin/busybox",
            "a descriptor outside the container: {out}"
        );
    }
}

/// The QEMU processes whose command line names `needle`, by PID.
fn qemu_pids(needle: &str) -> Vec<i32> {
    common::leaks::processes()
        .into_iter()
        .filter(|p| p.cmdline.contains("qemu-system") && p.cmdline.contains(needle))
        .map(|p| p.pid as i32)
        .collect()
}

/// A sandbox VM that dies under its containers, killed from the host (`kill -9` of QEMU: sandbox `solo`) or
/// crashed from inside (the guest's kernel panics: sandbox `pod`). The second is also what the agent's own death
/// looks like: the agent is the guest's PID 1, which no process of the guest can kill (PID 1 gets no signal it
/// has no handler for, SIGKILL included), so it can only end by failing, and then the guest's kernel panics
/// and, with `panic=-1` and `-no-reboot`, QEMU exits. Either way its containers are reported exited (255) with
/// the reason, the sandbox not ready, starting into it is refused saying why (for a container's own VM too:
/// its containers went with the guest), and removal leaves nothing.
#[test]
fn a_vm_killed_or_crashed_ends_its_containers_with_a_reason() {
    let d = vm_daemon();
    d.husk(&["sandbox", "create", "--name", "pod"]).ok();
    for name in ["a", "b"] {
        d.husk(&[
            "run",
            "-d",
            "--name",
            name,
            "--sandbox",
            "pod",
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok();
    }
    d.husk(&["run", "-d", "--name", "solo", IMAGE, "sleep", "1000"])
        .ok();
    let sandbox_id = |name: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&d.husk(&["sandbox", "inspect", name]).ok()).unwrap();
        v[0]["Id"].as_str().expect("sandbox Id").to_string()
    };
    let (pod, solo) = (sandbox_id("pod"), sandbox_id("solo"));
    let qemu = qemu_pids(&solo);
    assert_eq!(qemu.len(), 1, "solo: one QEMU: {qemu:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(qemu_pids(&pod).len(), 1, "pod: one QEMU");
    let crash = d.husk(&[
        "run",
        "--rm",
        "--security-opt",
        "systempaths=unconfined",
        "--sandbox",
        "pod",
        IMAGE,
        "sh",
        "-c",
        "echo c > /proc/sysrq-trigger",
    ]);
    assert_ne!(crash.code, 0, "the guest's kernel lived on");
    assert!(
        Daemon::eventually(Duration::from_secs(30), || qemu_pids(&pod).is_empty()),
        "pod's QEMU outlived its guest's panic: {} {}",
        crash.stdout,
        crash.stderr
    );
    for name in ["a", "b", "solo"] {
        assert!(
            Daemon::eventually(
                Duration::from_secs(30),
                || d.inspect(name)["State"]["Status"] == "exited"
            ),
            "{name}: {}",
            d.inspect(name)["State"]
        );
        let state = d.inspect(name)["State"].clone();
        assert_eq!(state["ExitCode"], 255, "{name}: {state}");
        assert!(
            state["Error"]
                .as_str()
                .unwrap_or("")
                .contains("the VM stopped"),
            "{name}: {state}"
        );
    }
    // A sandbox is marked not ready when the daemon sees its QEMU end, apart from its containers' exits (which
    // the loop above waited for): on a busy machine the mark can come a moment after them.
    let both_not_ready = || d.husk(&["sandbox", "ls"]).ok().matches("notready").count() == 2;
    assert!(
        Daemon::eventually(Duration::from_secs(30), both_not_ready),
        "{}",
        d.husk(&["sandbox", "ls"]).ok()
    );
    for (name, says) in [
        ("a", "sandbox pod is gone"),
        ("solo", "the VM of sandbox solo is gone"),
    ] {
        let r = d.husk(&["start", name]);
        assert_ne!(r.code, 0, "{name}");
        assert!(r.stderr.contains(says), "{name}: {}", r.stderr);
    }
    d.husk(&["rm", "a", "b", "solo"]).ok();
    d.husk(&["sandbox", "rm", "pod"]).ok();
    d.assert_no_leftovers();
}

/// VM sandboxes start from a template (`[vm] template`, on by default): the first VM of a shape boots the
/// template and saves it, every VM is a clone that loads its state (QEMU started `-incoming`, the template's RAM
/// file mapped private), and each clone is still its own machine: its hostname, address, clock and random state
/// (the kernel's boot ID, made on first read, differs). A template whose state file is damaged is refused and
/// built again; one that fails to restore is removed and the VM boots cold; nothing is left after removal.
#[test]
fn sandboxes_start_from_a_template_each_its_own_machine() {
    // A cache of this test's own, so that the builds it counts are its own.
    let cache = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        &["--driver", "vm"],
        &format!(
            "[vm]\ncache_dir = {:?}\n",
            cache.path().display().to_string()
        ),
        true,
    );
    let built = || d.log().matches("VM template built").count();
    let cold = || d.log().matches("booting cold").count();
    let clone_of = |name: &str| -> bool {
        let v: serde_json::Value =
            serde_json::from_str(&d.husk(&["sandbox", "inspect", name]).ok()).unwrap();
        let id = v[0]["Id"].as_str().expect("sandbox Id").to_string();
        let pids = qemu_pids(&id);
        assert_eq!(pids.len(), 1, "{name}: one QEMU");
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmdline.contains("-incoming defer") && cmdline.contains("share=off")
    };
    for (name, host) in [("a", "alpha"), ("b", "beta")] {
        d.husk(&["sandbox", "create", "--name", name, "--hostname", host])
            .ok();
        assert!(clone_of(name), "{name} started from the template");
    }
    assert_eq!(built(), 1, "one template for two VMs of one shape");
    let seen = |name: &str| -> Vec<String> {
        d.husk(&[
            "run",
            "--rm",
            "--sandbox",
            name,
            IMAGE,
            "sh",
            "-c",
            "hostname; cat /proc/sys/kernel/random/boot_id; date +%s; ip -4 addr show eth0 | grep inet",
        ])
        .ok()
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
    };
    let (a, b) = (seen("a"), seen("b"));
    assert_eq!((a[0].as_str(), b[0].as_str()), ("alpha", "beta"));
    assert_ne!(a[1], b[1], "each clone has its own boot ID (random state)");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for seen in [&a, &b] {
        let clock: i64 = seen[2].parse().unwrap();
        assert!(
            (clock - now).abs() < 60,
            "the guest's clock {clock}, the host's {now}"
        );
    }
    assert_ne!(a[3], b[3], "each clone has its own address");

    // A damaged state file is refused: the template is built again and used.
    let template_dir = std::fs::read_dir(cache.path().join("templates"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("template.json").exists())
        .expect("the template's directory");
    std::fs::write(template_dir.join("state"), b"not a device state").unwrap();
    d.husk(&["sandbox", "create", "--name", "c"]).ok();
    assert!(clone_of("c"));
    assert_eq!(built(), 2, "rebuilt after the damage: {}", d.log());
    assert!(d.log().contains("a damaged VM template"), "{}", d.log());

    // A state that passes the digest but does not restore: the VM boots cold and the template goes.
    std::fs::write(template_dir.join("state"), b"QEVM garbage").unwrap();
    let digest = std::process::Command::new("sha256sum")
        .arg(template_dir.join("state"))
        .output()
        .unwrap();
    let digest = String::from_utf8_lossy(&digest.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let meta = template_dir.join("template.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    t["state_sha256"] = serde_json::Value::String(digest);
    std::fs::write(&meta, t.to_string()).unwrap();
    d.husk(&["sandbox", "create", "--name", "cold"]).ok();
    assert!(!clone_of("cold"), "booted cold");
    assert_eq!(cold(), 1, "{}", d.log());
    assert!(
        !template_dir.exists(),
        "the template that failed is removed"
    );
    assert!(
        !d.husk(&["run", "--rm", "--sandbox", "cold", IMAGE, "hostname"])
            .ok()
            .is_empty(),
        "the VM booted cold serves"
    );
    d.husk(&["sandbox", "create", "--name", "e"]).ok();
    assert!(clone_of("e"));
    assert_eq!(built(), 3);
    d.husk(&["sandbox", "rm", "-f", "a", "b", "c", "cold", "e"])
        .ok();
    d.assert_no_leftovers();
}
