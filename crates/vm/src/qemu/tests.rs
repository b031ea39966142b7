use super::*;

fn config(machine: Machine, transport: Transport) -> VmConfig {
    VmConfig {
        dir: "/run/husk/vm/abc".into(),
        qemu: "qemu-system-x86_64".into(),
        machine,
        accel: Accel::Tcg,
        memory_mib: 320,
        cpus: 2,
        kernel: "/boot/vmlinuz".into(),
        initramfs: "/cache/initramfs.cpio".into(),
        cmdline_extra: vec!["husk.debug=1".into()],
        shares: vec![Share {
            tag: "husk0".into(),
            path: "/run/husk/vm/abc/share".into(),
            readonly: true,
        }],
        transport,
        tsc_khz: Some(2_596_124),
        tb_size_mib: Some(64),
        huge_pages: false,
        free_page_reporting: true,
        netns: None,
        nic_mac: None,
        ram_file: None,
        incoming: false,
        mem_merge: false,
    }
}

fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

#[test]
fn microvm_command_line() {
    let c = config(Machine::Microvm, Transport::Serial);
    let a = c.args();
    assert_eq!(
        after(&a, "-M"),
        ["microvm,acpi=on,pit=on,pic=on,rtc=on,isa-serial=on,mem-merge=off"]
    );
    assert_eq!(after(&a, "-accel"), ["tcg,tb-size=64"]);
    assert_eq!(after(&a, "-cpu"), ["max"]);
    assert_eq!(after(&a, "-m"), ["320M"]);
    assert!(a.contains(&"-no-reboot".to_string()) && a.contains(&"-nodefaults".to_string()));
    assert_eq!(
        after(&a, "-qmp"),
        ["unix:/run/husk/vm/abc/qmp.sock,server=on,wait=off"]
    );
    assert_eq!(after(&a, "-serial"), ["file:/run/husk/vm/abc/console.log"]);
    let devices = after(&a, "-device");
    assert_eq!(
        devices,
        [
            "virtio-serial-device",
            "virtserialport,chardev=agent,name=husk.agent.0",
            "virtio-balloon-device,free-page-reporting=on",
            "virtio-9p-device,fsdev=fs0,mount_tag=husk0"
        ]
    );
    assert_eq!(
        after(&a, "-chardev"),
        ["socket,id=agent,path=/run/husk/vm/abc/agent.sock,server=on,wait=off"]
    );
    assert_eq!(
        after(&a, "-fsdev"),
        [
            "local,id=fs0,path=/run/husk/vm/abc/share,security_model=none,multidevs=remap,readonly=on"
        ]
    );
    let append = after(&a, "-append")[0];
    for w in [
        "console=ttyS0",
        "tsc_early_khz=2596124",
        "husk.shares=husk0",
        "husk.debug=1",
        "panic=-1",
        "husk.modules=mmio",
    ] {
        assert!(
            append.split(' ').any(|x| x == w),
            "{w} missing from {append}"
        );
    }
}

#[test]
fn a_writable_share_keeps_owners_and_is_marked_for_the_agent() {
    let mut c = config(Machine::Microvm, Transport::Serial);
    c.shares.push(Share {
        tag: "husk1".into(),
        path: "/run/husk/vm/abc/mounts".into(),
        readonly: false,
    });
    let a = c.args();
    assert_eq!(
        after(&a, "-fsdev")[1],
        "local,id=fs1,path=/run/husk/vm/abc/mounts,security_model=passthrough,multidevs=remap"
    );
    assert!(
        after(&a, "-append")[0]
            .split(' ')
            .any(|w| w == "husk.shares=husk0,husk1:rw")
    );
}

#[test]
fn q35_and_vsock_variants() {
    let mut c = config(Machine::Q35, Transport::Vsock { cid: 42 });
    c.accel = Accel::Kvm;
    let a = c.args();
    assert_eq!(after(&a, "-M"), ["q35,mem-merge=off"]);
    assert_eq!(after(&a, "-accel"), ["kvm"]);
    assert_eq!(after(&a, "-cpu"), ["host"]);
    let devices = after(&a, "-device");
    assert_eq!(
        devices,
        [
            "vhost-vsock-pci,guest-cid=42",
            "virtio-balloon-pci,free-page-reporting=on",
            "virtio-9p-pci,fsdev=fs0,mount_tag=husk0"
        ]
    );
    assert!(after(&a, "-chardev").is_empty());
    assert!(c.kernel_cmdline().contains("husk.transport=vsock"));
    assert!(c.kernel_cmdline().contains("husk.modules=pci,vsock"));
}

#[test]
fn transport_follows_vhost_vsock() {
    let t = Transport::detect();
    let have = Path::new("/dev/vhost-vsock").exists();
    assert_eq!(matches!(t, Transport::Vsock { .. }), have, "{t:?}");
    if let Transport::Vsock { cid } = t {
        assert!(cid >= 3, "CIDs 0-2 are reserved");
    }
}

#[test]
fn validation_catches_bad_paths_and_sizes() {
    let mut c = config(Machine::Microvm, Transport::Serial);
    assert!(c.validate().is_ok());
    c.dir = PathBuf::from(format!("/{}", "d".repeat(120)));
    assert!(c.validate().is_err());
    let mut c = config(Machine::Microvm, Transport::Serial);
    c.shares[0].tag = "bad tag".into();
    assert!(c.validate().is_err());
    let mut c = config(Machine::Microvm, Transport::Serial);
    c.memory_mib = 16;
    assert!(c.validate().is_err());
}

#[test]
fn sizes_include_the_overhead() {
    let r = husk_core::Resources {
        memory_bytes: Some(128 << 20),
        nano_cpus: Some(1_500_000_000),
        ..Default::default()
    };
    assert_eq!(vm_size(&r, 8), (128 + GUEST_OVERHEAD_MIB, 2));
    assert_eq!(
        vm_size(&Default::default(), 8),
        (DEFAULT_MEMORY_MIB + GUEST_OVERHEAD_MIB, 1)
    );
    let big = husk_core::Resources {
        nano_cpus: Some(64_000_000_000),
        ..Default::default()
    };
    assert_eq!(vm_size(&big, 2).1, 2);
}

#[test]
fn tsc_from_cpuinfo() {
    let c = "cpu MHz\t\t: 2596.124\nflags\t\t: fpu tsc constant_tsc\n";
    assert_eq!(tsc_khz_from_cpuinfo(c), Some(2_596_124));
    assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : 1000\nflags : fpu\n"), None);
}

#[tokio::test]
async fn qmp_speaks_to_a_real_qemu() {
    // A machine with no guest at all: enough to test QMP, pause/resume, find and quit.
    let d = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("qemu-system-x86_64");
    let qmp = d.path().join("qmp.sock");
    cmd.args(["-M", "none", "-nodefaults", "-display", "none", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .stderr(Stdio::null());
    let Ok(mut child) = cmd.spawn() else { return }; // QEMU not installed: nothing to test against
    let _guard = KillOnDrop(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut q = loop {
        match Qmp::connect(&qmp).await {
            Ok(q) => break q,
            Err(e) if Instant::now() > deadline => panic!("QMP never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let v = q.execute("query-version", None).await.unwrap();
    assert!(v["qemu"]["major"].as_u64().unwrap() >= 7, "{v}");
    q.execute("stop", None).await.unwrap();
    let st = q.execute("query-status", None).await.unwrap();
    assert_eq!(st["status"], "paused", "{st}");
    q.execute("cont", None).await.unwrap();
    let st = q.execute("query-status", None).await.unwrap();
    assert_eq!(st["status"], "running", "{st}");
    let e = q.execute("no-such-command", None).await.unwrap_err();
    assert!(e.message.contains("no-such-command"), "{}", e.message);
    q.execute("quit", None).await.unwrap();
    assert!(child.wait().unwrap().success());
}

struct KillOnDrop(i32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the test's own child; harmless if it already exited and was reaped by the test.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn a_template_shares_its_ram_file_and_a_clone_maps_it_private_and_waits_for_its_state() {
    let mut c = config(Machine::Microvm, Transport::Serial);
    assert!(after(&c.args(), "-object").is_empty() && after(&c.args(), "-incoming").is_empty());
    c.ram_file = Some(RamFile {
        path: "/var/lib/husk/t/ram".into(),
        shared: true,
    });
    let a = c.args();
    assert_eq!(
        after(&a, "-object"),
        ["memory-backend-file,id=ram,size=320M,mem-path=/var/lib/husk/t/ram,share=on"]
    );
    assert!(after(&a, "-M")[0].ends_with(",memory-backend=ram"));
    assert!(after(&a, "-incoming").is_empty());
    c.ram_file = Some(RamFile {
        path: "/var/lib/husk/t/ram".into(),
        shared: false,
    });
    c.incoming = true;
    let a = c.args();
    assert!(after(&a, "-object")[0].ends_with(",share=off"));
    assert_eq!(after(&a, "-incoming"), ["defer"]);
}

#[test]
fn migration_commands_name_only_plain_paths() {
    assert_eq!(
        shell_path(Path::new("/var/lib/husk/vm-cache/templates/0a1b/state")).unwrap(),
        "/var/lib/husk/vm-cache/templates/0a1b/state"
    );
    for bad in ["", "/tmp/a b", "/tmp/$(reboot)", "/tmp/a;b", "/tmp/'x'"] {
        assert!(shell_path(Path::new(bad)).is_err(), "{bad:?}");
    }
}
