//! Helpers for the agent's integration tests: a busybox root filesystem, the agent run on the host, a real VM.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use husk_core::stdio::Frame;
use husk_core::{ContainerConfig, ImageRef, ProcessConfig};
use husk_vm::{AgentAddr, AgentClient};

/// The agent binary cargo built for these tests.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_husk-agent"))
}

/// Makes a root filesystem from Debian's static busybox: `/bin/busybox` and a symlink per applet.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("copy /bin/busybox (install busybox-static)");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        std::os::unix::fs::symlink("/bin/busybox", bin.join(applet)).unwrap();
    }
    for d in ["etc", "tmp", "root", "proc", "dev", "sys"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

/// A container configuration running `args`.
pub fn container(id: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        id: id.to_string(),
        name: format!("test-{id}"),
        image: ImageRef {
            name: "busybox".into(),
            id: "sha256:test".into(),
        },
        process: ProcessConfig {
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            ..Default::default()
        },
        hostname: String::new(),
        resources: Default::default(),
        // The engine's defaults (serde's, which set no_new_privileges), as every real request has them.
        security: serde_json::from_str("{}").expect("default security settings"),
        mounts: Vec::new(),
        network: Default::default(),
        labels: Default::default(),
        stop_signal: None,
        stop_timeout: None,
        ..Default::default()
    }
}

/// What a process printed and how it ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

/// Reads a stdio stream to its end.
pub async fn collect(mut rx: tokio::sync::mpsc::Receiver<Frame>, timeout: Duration) -> Output {
    let mut out = Output::default();
    let deadline = Instant::now() + timeout;
    while let Ok(Some(f)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        rx.recv(),
    )
    .await
    {
        match f {
            Frame::Stdout(b) => out.stdout.push_str(&String::from_utf8_lossy(&b)),
            Frame::Stderr(b) => out.stderr.push_str(&String::from_utf8_lossy(&b)),
            Frame::Exit(c) => {
                out.code = Some(c);
                break;
            }
            Frame::Error(e) => panic!("stdio stream failed: {e}"),
            _ => {}
        }
    }
    out
}

/// Creates container `id` from layer `layer` of share `tag`, attaches to it, starts it and returns its output.
pub async fn run(client: &AgentClient, tag: &str, layer: &str, id: &str, args: &[&str]) -> Output {
    client
        .create_container(&container(id, args), tag, vec![layer.to_string()])
        .await
        .unwrap();
    let (_input, output) = client.stdio(id, "").await.unwrap();
    if let Err(e) = client.start(id).await {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "pid,ppid,stat,wchan:30,args"])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        let interesting: Vec<&str> = ps.lines().filter(|l| !l.contains('[')).collect();
        panic!("start {id}: {e}\n{}", interesting.join("\n"));
    }
    collect(output, Duration::from_secs(60)).await
}

/// The agent run on the host (not as PID 1), serving on a unix socket, killed on drop.
pub struct HostAgent {
    pub child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub share: PathBuf,
}

impl HostAgent {
    pub fn start() -> HostAgent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        let child = std::process::Command::new(agent_bin())
            .arg("--listen")
            .arg(&socket)
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .arg("--share")
            .arg(format!("share0={}", share.display()))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "host agent did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        HostAgent {
            child,
            dir,
            socket,
            share,
        }
    }

    pub fn client(&self) -> AgentClient {
        AgentClient::new(
            &AgentAddr::Unix(self.socket.clone()),
            Duration::from_secs(20),
        )
        .unwrap()
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Overlay roots the agent mounted for containers that were not removed.
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("run/containers")) {
            for e in entries.flatten() {
                let _ =
                    nix::mount::umount2(&e.path().join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// The guest image for these tests (built once per agent binary, cached under the target directory).
pub fn guest_image() -> husk_vm::GuestImage {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("husk-guest-cache");
    husk_vm::build_guest(&husk_vm::GuestConfig::new(agent_bin(), cache))
        .expect("build the guest image")
}

/// A VM booted for a test: killed and its directory removed on drop, even when the test fails.
pub struct TestVm {
    pub vm: husk_vm::Vm,
    pub dir: tempfile::TempDir,
    pub share: PathBuf,
    pub launched: Instant,
}

impl TestVm {
    pub async fn boot() -> TestVm {
        let image = guest_image();
        let dir = tempfile::Builder::new()
            .prefix("husk-vm")
            .tempdir()
            .unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        let accel = husk_vm::accel::detect(husk_vm::AccelChoice::Auto).accel;
        let config = husk_vm::VmConfig {
            dir: dir.path().join("vm"),
            qemu: "qemu-system-x86_64".into(),
            machine: husk_vm::Machine::Microvm,
            accel,
            memory_mib: 256,
            cpus: 1,
            kernel: image.kernel,
            initramfs: image.initramfs,
            cmdline_extra: Vec::new(),
            shares: vec![husk_vm::Share {
                tag: "husk0".into(),
                path: share.clone(),
                readonly: true,
            }],
            transport: husk_vm::Transport::Serial,
            tsc_khz: husk_vm::qemu::host_tsc_khz(),
            tb_size_mib: Some(64),
            huge_pages: false,
            free_page_reporting: true,
            netns: None,
            nic_mac: None,
            ram_file: None,
            incoming: false,
            mem_merge: false,
        };
        let launched = Instant::now();
        let vm = husk_vm::Vm::launch(config).await.expect("launch QEMU");
        TestVm {
            vm,
            dir,
            share,
            launched,
        }
    }

    pub fn addr(&self) -> AgentAddr {
        AgentAddr::Serial(self.vm.paths().agent)
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.vm.paths().console).unwrap_or_default()
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        if self.vm.is_running() {
            // SAFETY: kill(2) of the QEMU this test started (is_running checked it is still that process).
            unsafe { libc::kill(self.vm.pid, libc::SIGKILL) };
        }
    }
}

/// Runs `f` on a runtime of its own that is then dropped, as a daemon process that exits: every task and socket
/// of it goes away. Returns what `f` returned.
pub fn as_a_daemon_that_exits<
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
>(
    f: F,
) -> T {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f)
    })
    .join()
    .unwrap()
}

/// A codec that sends raw bytes as a request body, so a test can send a message that is not protobuf.
pub mod raw {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Sends raw bytes as a request body.
    #[derive(Debug, Clone, Default)]
    pub struct RawCodec;

    /// Both halves of [`RawCodec`].
    #[derive(Debug, Clone, Default)]
    pub struct Raw;

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let v = src.chunk().to_vec();
            src.advance(v.len());
            Ok(Some(v))
        }
    }

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
}
