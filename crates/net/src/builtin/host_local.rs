//! Addresses as the `host-local` IPAM plugin hands them out, in its own on-disk format, so the plugin binary and
//! the built-in bridge can take turns on one network (a DEL by either releases what the other gave):
//!
//! - `DATA_DIR/NETWORK/lock`: held (flock) while the directory changes;
//! - `DATA_DIR/NETWORK/IP`: one file per address given, holding `CONTAINER_ID\r\nIFNAME`;
//! - `DATA_DIR/NETWORK/last_reserved_ip.0`: the last address given from the (single) range, where the next
//!   search starts, so addresses go round the range before one is given again.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind as IoKind, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use husk_core::{Error, ErrorKind, Result};

use crate::subnet::Subnet;

/// One network's allocation directory, locked for as long as this value lives.
pub(crate) struct Allocations {
    dir: PathBuf,
    _lock: File,
}

impl Allocations {
    /// Opens (and makes) `data_dir/network` and takes its lock.
    pub(crate) fn lock(data_dir: &Path, network: &str) -> Result<Allocations> {
        let dir = data_dir.join(network);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own; it is released when the file closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(
                format!("lock {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Allocations { dir, _lock: lock })
    }

    /// Gives `owner`'s interface `ifname` the next free address of `subnet` (never its network, broadcast or
    /// `gateway` address), searching from the one after the last given.
    pub(crate) fn allocate(
        &self,
        subnet: &Subnet,
        gateway: IpAddr,
        owner: &str,
        ifname: &str,
    ) -> Result<Ipv4Addr> {
        let (first, last) = host_range(subnet)?;
        if let Some(ip) = self.owned_by(owner, ifname)?.first() {
            return Err(Error::conflict(format!(
                "{ip} has been allocated to {owner}, duplicate allocation is not allowed"
            )));
        }
        let last_path = self.dir.join("last_reserved_ip.0");
        let last_given = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip));
        let start = match last_given {
            Some(ip) if ip < last => ip + 1,
            _ => first,
        };
        let size = last - first + 1;
        for step in 0..size {
            let candidate = first + (start - first + step) % size;
            let ip = Ipv4Addr::from(candidate);
            if IpAddr::V4(ip) == gateway {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let written = file
                        .write_all(format!("{}\r\n{ifname}", owner.trim()).as_bytes())
                        .and_then(|_| std::fs::write(&last_path, ip.to_string()));
                    if let Err(e) = written {
                        let _ = std::fs::remove_file(&path);
                        return Err(Error::io(format!("record {}", path.display()), e));
                    }
                    return Ok(ip);
                }
                Err(e) if e.kind() == IoKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!("no IP addresses available in range set {subnet}"),
        ))
    }

    /// The addresses given to `owner`'s interface `ifname` (files naming only the owner count too: older
    /// plugins wrote no interface).
    pub(crate) fn owned_by(&self, owner: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("read {}", self.dir.display()), e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Ok(ip) = entry.file_name().to_string_lossy().parse::<IpAddr>() else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = text.lines().map(str::trim);
            let id = lines.next().unwrap_or_default();
            let iface = lines.next();
            if id == owner.trim() && iface.is_none_or(|i| i == ifname) {
                found.push(ip);
            }
        }
        Ok(found)
    }

    /// Releases every address of `owner`'s interface `ifname`; none is fine.
    pub(crate) fn release(&self, owner: &str, ifname: &str) -> Result<()> {
        for ip in self.owned_by(owner, ifname)? {
            let path = self.dir.join(ip.to_string());
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != IoKind::NotFound => {
                    return Err(Error::io(format!("remove {}", path.display()), e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The first and last host address of an IPv4 subnet, as numbers (host-local's default range: the network
/// address and, for prefixes up to /30, the broadcast address left out).
fn host_range(subnet: &Subnet) -> Result<(u32, u32)> {
    let (IpAddr::V4(network), prefix) = (subnet.network(), subnet.prefix()) else {
        return Err(Error::bad_request(format!(
            "{subnet}: the built-in host-local serves IPv4 subnets"
        )));
    };
    if prefix > 30 {
        return Err(Error::bad_request(format!(
            "{subnet}: too small for host-local (at most /30)"
        )));
    }
    let base = u32::from(network);
    let size = 1u32 << (32 - u32::from(prefix));
    Ok((base + 1, base + size - 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        Subnet::parse(s).unwrap()
    }

    #[test]
    fn addresses_go_round_the_range_skipping_the_gateway_and_are_released_by_owner() {
        let dir = tempfile::tempdir().unwrap();
        let net = subnet("10.9.0.0/29"); // hosts .1-.6, gateway .1
        let gw: IpAddr = "10.9.0.1".parse().unwrap();
        let a = Allocations::lock(dir.path(), "n").unwrap();
        let ips: Vec<Ipv4Addr> = (0..5)
            .map(|i| a.allocate(&net, gw, &format!("c{i}"), "eth0").unwrap())
            .collect();
        let shown: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            shown,
            ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
        );
        let full = a.allocate(&net, gw, "c9", "eth0").unwrap_err();
        assert!(
            full.message.contains("no IP addresses available"),
            "{}",
            full.message
        );
        // The plugin's format: the owner, CRLF, the interface.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("n/10.9.0.3")).unwrap(),
            "c1\r\neth0"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("n/last_reserved_ip.0")).unwrap(),
            "10.9.0.6"
        );
        // Released by owner and interface; the search goes on after the last given, then wraps.
        a.release("c1", "eth0").unwrap();
        a.release("c1", "eth1").unwrap();
        assert!(!dir.path().join("n/10.9.0.3").exists());
        assert_eq!(
            a.allocate(&net, gw, "c10", "eth0").unwrap().to_string(),
            "10.9.0.3"
        );
        // One address per owner and interface.
        let twice = a.allocate(&net, gw, "c10", "eth0").unwrap_err();
        assert_eq!(twice.kind, ErrorKind::Conflict);
        // A file from an older plugin (owner only) is released too.
        std::fs::write(dir.path().join("n/10.9.0.4"), "c2").unwrap();
        a.release("c2", "eth0").unwrap();
        assert!(!dir.path().join("n/10.9.0.4").exists());
    }

    #[test]
    fn ipv6_and_tiny_subnets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Allocations::lock(dir.path(), "n").unwrap();
        let gw: IpAddr = "fd00::1".parse().unwrap();
        assert!(a.allocate(&subnet("fd00::/64"), gw, "c", "eth0").is_err());
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(a.allocate(&subnet("10.0.0.0/31"), gw, "c", "eth0").is_err());
    }
}
