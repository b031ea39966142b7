//! A VM's network: the sandbox's network namespace, attached by CNI exactly as the `linux` driver attaches its
//! sandboxes (so addresses, published ports and name files work the same), extended into the guest.
//!
//! QEMU runs *inside* that namespace and opens a tap device there (`-netdev tap,ifname=tap0`). Traffic control
//! then joins the tap to the CNI veth (`eth0`) in both directions, as Kata's `tcfilter` mode does: an ingress
//! qdisc on each with a match-all `u32` filter whose `mirred egress redirect` action sends every frame to the
//! other device. The namespace's own IP stack never sees a packet; the guest's interface takes the veth's MAC
//! (QEMU's `mac=`) and address (`husk.ip=` on the kernel command line), so to the bridge, to `portmap`'s DNAT and
//! to other sandboxes the guest *is* the sandbox.
//!
//! The tap disappears with QEMU. Teardown is the CNI DEL from the cache plus unpinning the namespace, which
//! works after a daemon restart from the files alone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use husk_core::{Context, Error, NetworkConfig, NetworkStatus, Result};

/// The tap device QEMU makes in the sandbox's namespace.
pub const TAP: &str = "tap0";

/// What the guest's interface is configured with (IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNic {
    /// `ADDRESS/PREFIX`.
    pub address: String,
    /// Default gateway, if any.
    pub gateway: String,
    /// MAC address (the veth's).
    pub mac: String,
    /// MTU (the veth's).
    pub mtu: u32,
}

impl GuestNic {
    /// The kernel command line words the agent reads (`husk.ip=`, `husk.gw=`, `husk.mtu=`).
    pub fn cmdline(&self) -> Vec<String> {
        let mut words = vec![
            format!("husk.ip={}", self.address),
            format!("husk.mtu={}", self.mtu),
        ];
        if !self.gateway.is_empty() {
            words.push(format!("husk.gw={}", self.gateway));
        }
        words
    }
}

/// A VM's attached network.
#[derive(Debug, Clone, Default)]
pub struct Attached {
    /// The pinned network namespace QEMU runs in (`None` for mode `none`: the guest has only `lo`).
    pub netns: Option<PathBuf>,
    /// What the network gave (addresses, ports).
    pub status: Option<NetworkStatus>,
    /// The guest's interface.
    pub nic: Option<GuestNic>,
    /// `hosts`, `resolv.conf` and `hostname` for the containers.
    pub files: Option<husk_net::SandboxFiles>,
}

/// Attaches the VM `owner` to the network `net` asks for: pins a network namespace under `ns_dir`, runs the CNI
/// ADD and writes the name files. Blocking (CNI plugins are processes). On failure nothing is left.
pub fn attach(
    networks: &husk_net::Networks,
    owner: &str,
    ns_dir: &Path,
    hostname: &str,
    net: &NetworkConfig,
) -> Result<Attached> {
    match networks.mode_of(net) {
        husk_net::Mode::Host => {
            return Err(Error::unsupported(
                "driver vm cannot share the host's network (network mode host): a VM has a network of its own; use bridge, none or a network name",
            ));
        }
        husk_net::Mode::None => {
            if !net.ports.is_empty() {
                return Err(Error::invalid(
                    "ports",
                    "ports cannot be published with network mode none",
                ));
            }
            let files = networks.write_files(owner, hostname, net, &NetworkStatus::default())?;
            return Ok(Attached {
                files: Some(files),
                ..Default::default()
            });
        }
        husk_net::Mode::Cni(_) => {}
    }
    let pinned = husk_container::namespaces::create_pinned(
        ns_dir,
        hostname,
        husk_container::namespaces::PINNED_KINDS,
    )?;
    let netns = pinned
        .get("net")
        .cloned()
        .ok_or_else(|| Error::internal("no network namespace was pinned"))?;
    let made = (|| {
        let status = networks.setup(owner, &netns, net)?;
        let files = networks.write_files(owner, hostname, net, &status)?;
        let nic = guest_nic(&netns, &status)?;
        Ok((status, files, nic))
    })();
    match made {
        Ok((status, files, nic)) => Ok(Attached {
            netns: Some(netns),
            status: Some(status),
            nic: Some(nic),
            files: Some(files),
        }),
        Err(e) => {
            let _ = detach(networks, owner, ns_dir);
            Err(e)
        }
    }
}

/// Undoes [`attach`] (idempotent; works from the files alone after a restart).
pub fn detach(networks: &husk_net::Networks, owner: &str, ns_dir: &Path) -> Result<()> {
    let netns = ns_dir.join("net");
    let ns = husk_container::namespaces::is_pinned(&netns).then_some(netns.as_path());
    networks.teardown(owner, ns)?;
    husk_container::namespaces::remove_pinned(ns_dir)
}

fn guest_nic(netns: &Path, status: &NetworkStatus) -> Result<GuestNic> {
    let address = status
        .addresses
        .iter()
        .find(|a| {
            a.split('/')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        })
        .cloned()
        .ok_or_else(|| {
            Error::unsupported(format!(
                "driver vm needs an IPv4 address on network {}; it got {:?}",
                status.network, status.addresses
            ))
        })?;
    let ifname = if status.interface.is_empty() {
        husk_net::SANDBOX_IFNAME
    } else {
        status.interface.as_str()
    };
    let mtu = read_in_netns(netns, ifname, "mtu")?
        .trim()
        .parse()
        .unwrap_or(1500);
    let mac = if status.mac.is_empty() {
        read_in_netns(netns, ifname, "address")?.trim().to_string()
    } else {
        status.mac.clone()
    };
    Ok(GuestNic {
        address,
        gateway: status.gateway.clone(),
        mac,
        mtu,
    })
}

/// Reads `/sys/class/net/<ifname>/<attr>` as seen from the namespace (a sysfs mounted there would be needed;
/// `ip` reads it over netlink instead).
fn read_in_netns(netns: &Path, ifname: &str, attr: &str) -> Result<String> {
    let out = run_in_netns(netns, "ip", &["-o", "link", "show", "dev", ifname], None)?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let value = match attr {
        "mtu" => words
            .iter()
            .position(|w| *w == "mtu")
            .and_then(|i| words.get(i + 1)),
        _ => words
            .iter()
            .position(|w| *w == "link/ether")
            .and_then(|i| words.get(i + 1)),
    };
    value.map(|v| v.to_string()).ok_or_else(|| {
        Error::backend(format!(
            "no {attr} for {ifname} in `ip link` output {out:?}"
        ))
    })
}

/// Joins QEMU's tap to the veth once QEMU has made it: the tap up with the veth's MTU, then an ingress qdisc
/// on each and a match-all filter redirecting every frame to the other.
pub fn connect_tap(netns: &Path, nic: &GuestNic) -> Result<()> {
    let mtu = nic.mtu.to_string();
    run_in_netns(
        netns,
        "ip",
        &["link", "set", "dev", TAP, "mtu", &mtu, "up"],
        None,
    )?;
    let veth = husk_net::SANDBOX_IFNAME;
    let batch = format!(
        "qdisc add dev {veth} ingress\n\
         filter add dev {veth} parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev {TAP}\n\
         qdisc add dev {TAP} ingress\n\
         filter add dev {TAP} parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev {veth}\n"
    );
    run_in_netns(netns, "tc", &["-batch", "-"], Some(batch.as_bytes()))?;
    Ok(())
}

/// Runs `program args` inside the network namespace `netns` (the child enters it before `execve`; nothing else
/// of this process changes namespace) and returns its stdout.
fn run_in_netns(
    netns: &Path,
    program: &str,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<String> {
    let ns = File::open(netns).context(format!("open network namespace {}", netns.display()))?;
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns is async-signal-safe and only changes the child, which execs right after.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .context(format!("run {program} in {}", netns.display()))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        stdin
            .write_all(data)
            .context(format!("write to {program}"))?;
    }
    let out = child
        .wait_with_output()
        .context(format!("wait for {program}"))?;
    drop(ns);
    if !out.status.success() {
        return Err(Error::backend(format!(
            "{program} {} in {} failed ({}): {}",
            args.join(" "),
            netns.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_nic_on_the_command_line() {
        let nic = GuestNic {
            address: "10.88.0.5/16".into(),
            gateway: "10.88.0.1".into(),
            mac: "02:42:0a:58:00:05".into(),
            mtu: 1500,
        };
        assert_eq!(
            nic.cmdline(),
            ["husk.ip=10.88.0.5/16", "husk.mtu=1500", "husk.gw=10.88.0.1"]
        );
    }
}
