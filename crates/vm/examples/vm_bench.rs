//! Boot-time and memory benchmark of husk's VM guest, against a bare boot of the same kernel and initramfs.
//!
//! ```text
//! cargo build --release -p husk-agent
//! cargo run --release -p husk-vm --example vm_bench -- [--agent PATH] [--runs N] [--accel auto|kvm|tcg]
//! ```
//!
//! Per run it measures, from the moment QEMU is exec'd:
//! - **bare**: the same kernel + initramfs booted with `husk.bare`, where the agent (PID 1) prints one line and
//!   powers off at once: the floor any guest with this kernel pays; measured to QEMU's exit;
//! - **health**: the agent's first answer to `version` over virtio-serial (modules loaded, root switched, shares
//!   mounted, gRPC served);
//! - **echo hi**: a fresh VM until a container running `echo hi` from a busybox root over 9p has printed `hi` and
//!   exited (boot + create + start + output + exit), and the same in an already booted VM;
//! - **memory**: QEMU's RSS and PSS (`/proc/PID/smaps_rollup`) with the guest idle after the run.
//!
//! The kernel is booted as the extracted PVH `vmlinux` unless `HUSK_BENCH_BZIMAGE` is set (then the bzImage
//! decompresses itself in the guest).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use husk_core::stdio::Frame;
use husk_vm::{
    AccelChoice, AgentAddr, AgentClient, GuestConfig, Machine, Share, Transport, Vm, VmConfig,
};

struct Args {
    agent: PathBuf,
    runs: usize,
    accel: AccelChoice,
}

fn parse_args() -> Args {
    let mut a = Args {
        agent: PathBuf::from("target/x86_64-unknown-linux-gnu/release/husk-agent"),
        runs: 3,
        accel: AccelChoice::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--agent" => a.agent = value.into(),
            "--runs" => a.runs = value.parse().expect("--runs N"),
            "--accel" => a.accel = value.parse().expect("--accel auto|kvm|tcg"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

fn busybox_rootfs(dir: &std::path::Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox");
    for applet in ["sh", "echo", "true"] {
        std::os::unix::fs::symlink("/bin/busybox", bin.join(applet)).unwrap();
    }
}

fn config(
    dir: &std::path::Path,
    image: &husk_vm::GuestImage,
    accel: husk_vm::Accel,
    bare: bool,
) -> VmConfig {
    VmConfig {
        dir: dir.join("vm"),
        qemu: "qemu-system-x86_64".into(),
        machine: Machine::Microvm,
        accel,
        memory_mib: 256,
        cpus: 1,
        kernel: image.kernel.clone(),
        initramfs: image.initramfs.clone(),
        cmdline_extra: if bare {
            vec!["husk.bare".into()]
        } else {
            Vec::new()
        },
        shares: if bare {
            Vec::new()
        } else {
            vec![Share {
                tag: "husk0".into(),
                path: dir.join("share"),
                readonly: true,
            }]
        },
        transport: Transport::Serial,
        tsc_khz: husk_vm::qemu::host_tsc_khz(),
        tb_size_mib: Some(64),
        huge_pages: std::env::var_os("HUSK_BENCH_HUGE_PAGES").is_some(),
        free_page_reporting: std::env::var_os("HUSK_BENCH_NO_BALLOON").is_none(),
        netns: None,
        nic_mac: None,
        ram_file: None,
        incoming: false,
        mem_merge: false,
    }
}

async fn echo_hi(client: &AgentClient, id: &str) -> String {
    let mut c = husk_core::ContainerConfig {
        id: id.into(),
        name: id.into(),
        image: Default::default(),
        process: husk_core::ProcessConfig {
            args: vec!["echo".into(), "hi".into()],
            ..Default::default()
        },
        hostname: String::new(),
        resources: Default::default(),
        security: Default::default(),
        mounts: Vec::new(),
        network: Default::default(),
        labels: Default::default(),
        stop_signal: None,
        stop_timeout: None,
        ..Default::default()
    };
    c.process.cwd = "/".into();
    client
        .create_container(&c, "husk0", vec!["rootfs".into()])
        .await
        .unwrap();
    let (_i, mut out) = client.stdio(id, "").await.unwrap();
    client.start(id).await.unwrap();
    let mut text = String::new();
    while let Some(f) = out.recv().await {
        match f {
            Frame::Stdout(b) => text.push_str(&String::from_utf8_lossy(&b)),
            Frame::Exit(_) | Frame::Error(_) => break,
            _ => {}
        }
    }
    text
}

fn meminfo_container() -> husk_core::ContainerConfig {
    husk_core::ContainerConfig {
        id: "meminfo".into(),
        name: "meminfo".into(),
        image: Default::default(),
        process: husk_core::ProcessConfig {
            args: vec![
                "sh".into(),
                "-c".into(),
                "while read l; do echo \"$l\"; done < /proc/meminfo".into(),
            ],
            ..Default::default()
        },
        hostname: String::new(),
        resources: Default::default(),
        security: Default::default(),
        mounts: Vec::new(),
        network: Default::default(),
        labels: Default::default(),
        stop_signal: None,
        stop_timeout: None,
        ..Default::default()
    }
}

fn memory_kib(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

fn stats(name: &str, values: &mut [f64], unit: &str) {
    values.sort_by(|a, b| a.total_cmp(b));
    let median = values[values.len() / 2];
    println!(
        "| {name} | {median:.2} {unit} | {:.2} | {:.2} | {} |",
        values[0],
        values[values.len() - 1],
        values.len()
    );
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let cache = std::env::temp_dir().join("husk-vm-bench-cache");
    let mut guest = GuestConfig::new(&args.agent, &cache);
    guest.uncompressed_kernel = std::env::var_os("HUSK_BENCH_BZIMAGE").is_none();
    let image = husk_vm::build_guest(&guest).expect("build the guest image");
    let decision = husk_vm::accel::detect(args.accel);
    println!(
        "kernel {} | initramfs {} ({} KiB) | accel {} ({})",
        image.kernel_release,
        image.initramfs.display(),
        std::fs::metadata(&image.initramfs)
            .map(|m| m.len() / 1024)
            .unwrap_or(0),
        decision.accel.as_str(),
        decision.reason
    );
    let (mut bare, mut health, mut echo_cold, mut echo_warm, mut rss, mut pss) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for run in 0..args.runs {
        // Bare boot: exec to QEMU's exit.
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut vm = Vm::launch(config(dir.path(), &image, decision.accel, true))
            .await
            .expect("launch bare");
        assert!(
            vm.wait_exit(Duration::from_secs(120)).await,
            "bare guest did not power off"
        );
        bare.push(t0.elapsed().as_secs_f64());
        let console = std::fs::read_to_string(vm.paths().console).unwrap_or_default();
        assert!(
            console.contains("bare boot done"),
            "bare console: {console}"
        );
        let bare_line = console
            .lines()
            .find(|l| l.contains("bare boot done"))
            .unwrap_or("")
            .to_string();
        vm.quit(Duration::from_secs(1)).await;

        // Agent boot, echo hi, memory.
        let dir = tempfile::tempdir().unwrap();
        busybox_rootfs(&dir.path().join("share/rootfs"));
        let t0 = Instant::now();
        let mut vm = Vm::launch(config(dir.path(), &image, decision.accel, false))
            .await
            .expect("launch");
        let (client, _) = AgentClient::connect_when_ready(
            &AgentAddr::Serial(vm.paths().agent),
            Duration::from_secs(120),
        )
        .await
        .expect("agent health");
        health.push(t0.elapsed().as_secs_f64());
        assert_eq!(echo_hi(&client, "cold").await, "hi\n");
        echo_cold.push(t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        assert_eq!(echo_hi(&client, "warm").await, "hi\n");
        echo_warm.push(t1.elapsed().as_secs_f64() * 1000.0);
        if std::env::var_os("HUSK_BENCH_MEMINFO").is_some() {
            let mut c = husk_core::ContainerConfig {
                ..meminfo_container()
            };
            c.process.cwd = "/".into();
            client
                .create_container(&c, "husk0", vec!["rootfs".into()])
                .await
                .unwrap();
            let (_i, mut out) = client.stdio("meminfo", "").await.unwrap();
            client.start("meminfo").await.unwrap();
            while let Some(Frame::Stdout(b)) = out.recv().await {
                eprint!("{}", String::from_utf8_lossy(&b));
            }
        }
        let idle = std::env::var("HUSK_BENCH_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let (r, p) = memory_kib(vm.pid);
        rss.push(r as f64 / 1024.0);
        pss.push(p as f64 / 1024.0);
        let console = std::fs::read_to_string(vm.paths().console).unwrap_or_default();
        let agent_line = console
            .lines()
            .find(|l| l.contains("modules loaded"))
            .unwrap_or("")
            .to_string();
        eprintln!("  guest: [{bare_line}] vs [{agent_line}]");
        client.shutdown().await.unwrap();
        vm.wait_exit(Duration::from_secs(30)).await;
        vm.quit(Duration::from_secs(1)).await;
        eprintln!(
            "run {run}: bare {:.2}s health {:.2}s echo {:.2}s warm {:.0}ms rss {r} KiB pss {p} KiB",
            bare[run], health[run], echo_cold[run], echo_warm[run]
        );
    }
    println!("| metric | median | min | max | runs |");
    println!("| --- | --- | --- | --- | --- |");
    stats("bare boot: QEMU exec -> guest powered off", &mut bare, "s");
    stats("QEMU exec -> agent health answer", &mut health, "s");
    stats(
        "QEMU exec -> `echo hi` printed and exited (fresh VM)",
        &mut echo_cold,
        "s",
    );
    stats(
        "`echo hi` in a booted VM (create+start+output+exit)",
        &mut echo_warm,
        "ms",
    );
    stats("QEMU RSS, guest idle", &mut rss, "MiB");
    stats("QEMU PSS, guest idle", &mut pss, "MiB");
}
