//! The few kernel calls husk makes itself: bringing `lo` up inside a sandbox's network namespace (cheaper than
//! starting the `loopback` plugin, a ~3 ms process, for a single interface flag), deleting a bridge when its
//! network is removed, and connecting to a port on a sandbox's loopback (port forwarding).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use husk_core::{Error, Result};

/// Brings the loopback interface up in the network namespace at `netns`.
///
/// `setns` changes the calling thread's namespace, so the work runs on a short-lived thread of its own that
/// exits afterwards; no other thread of the process ever runs inside the sandbox's namespace.
pub fn loopback_up(netns: &Path) -> Result<()> {
    let shown = netns.display().to_string();
    on_thread_in(Some(netns), move || {
        set_up("lo", true).map_err(|e| e.context(format!("in network namespace {shown}")))
    })
}

/// Runs `work` on a short-lived thread of its own that entered the network namespace at `netns` (the caller's
/// own with `None`) and exits afterwards: `setns` changes only the calling thread, and sockets stay in the
/// namespace they were made in, so what `work` makes there can serve the caller from any thread.
pub(crate) fn on_thread_in<T: Send + 'static>(
    netns: Option<&Path>,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = match netns {
        Some(p) => Some(
            File::open(p)
                .map_err(|e| Error::io(format!("open network namespace {}", p.display()), e))?,
        ),
        None => None,
    };
    let shown = netns.map(|p| p.display().to_string()).unwrap_or_default();
    std::thread::spawn(move || -> Result<T> {
        if let Some(ns) = &ns {
            // SAFETY: setns with a descriptor we own for a network namespace file; it only affects this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::io(
                    format!("enter network namespace {shown}"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        work()
    })
    .join()
    .map_err(|_| Error::internal("a thread working in a network namespace panicked"))?
}

/// Connects to TCP `port` on the loopback (`127.0.0.1`, then `::1`) of the network namespace at `netns`, or of
/// the host when `None`, giving up after `timeout` per address.
///
/// A socket belongs to the namespace it was made in, so the connection is made on a short-lived thread that
/// entered the namespace and exits afterwards; the connected socket then serves the caller from any thread.
pub fn connect_loopback(
    netns: Option<&Path>,
    port: u16,
    timeout: std::time::Duration,
) -> Result<std::net::TcpStream> {
    let shown = netns.map_or_else(|| "the host".to_string(), |p| p.display().to_string());
    on_thread_in(netns, move || {
        let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        std::net::TcpStream::connect_timeout(&v4, timeout)
            .or_else(|first| std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|_| first))
            .map_err(|e| Error::io(format!("connect to port {port} on localhost in {shown}"), e))
    })
}

/// Deletes the Linux bridge `name` from the host's namespace; absent is fine.
pub fn delete_bridge(name: &str) -> Result<()> {
    if !link_exists(name) {
        return Ok(());
    }
    set_up(name, false)?;
    let sock = inet_socket()?;
    let cname = CString::new(name)
        .map_err(|_| Error::bad_request(format!("invalid bridge name {name:?}")))?;
    // SAFETY: SIOCBRDELBR takes a NUL-terminated interface name; cname outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRDELBR, cname.as_ptr()) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENXIO) {
            return Err(Error::io(format!("delete bridge {name}"), err));
        }
    }
    Ok(())
}

/// `SIOCBRDELBR` from `<linux/sockios.h>` (the libc crate does not define it).
const SIOCBRDELBR: libc::Ioctl = 0x89a1;

/// Whether interface `name` exists in the calling thread's network namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Sets or clears `IFF_UP` on interface `name` of the calling thread's network namespace.
fn set_up(name: &str, up: bool) -> Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in req into req's union; req is a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(Error::io(
            format!("read flags of interface {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let want = if up {
        flags | libc::IFF_UP as libc::c_short
    } else {
        flags & !(libc::IFF_UP as libc::c_short)
    };
    if want == flags {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = want;
    // SAFETY: SIOCSIFFLAGS reads the interface name and flags from req, a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(Error::io(
            format!("set flags of interface {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn inet_socket() -> Result<OwnedFd> {
    // SAFETY: socket() has no memory arguments; it returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io(
            "open a socket for interface control",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(Error::bad_request(format!(
            "invalid interface name {name:?}"
        )));
    }
    // SAFETY: ifreq is plain old data (a name array and a union of integers and addresses); all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(ifreq("lo").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("sixteen-chars-xx").is_err());
    }

    #[test]
    fn missing_namespace_file_is_a_clear_error() {
        let err = loopback_up(Path::new("/run/netns/husk-no-such-ns")).unwrap_err();
        assert!(
            err.message.contains("/run/netns/husk-no-such-ns"),
            "{}",
            err.message
        );
    }
}
