//! What systemd hands a service it starts (contrib/systemd): a listening API socket (socket activation,
//! `LISTEN_FDS`) and a socket to report readiness on (`Type=notify`, `NOTIFY_SOCKET`). Both are optional:
//! without systemd `husk daemon` binds its own socket and tells no one.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// What the service manager gave this process.
#[derive(Debug, Default)]
pub struct Activation {
    /// The API socket, already bound and listening, when started by `husk.socket`.
    pub listener: Option<UnixListener>,
    /// Where to report readiness and shutdown, when started as `Type=notify`.
    pub notifier: Option<Notifier>,
}

impl Activation {
    /// Takes the activation environment of this process and removes it, so that no child (a shim, a
    /// container) inherits it, and marks every inherited descriptor close-on-exec. Must run while the process
    /// has one thread: it changes the environment.
    pub fn take_from_environment() -> Activation {
        let listen_pid = take_var("LISTEN_PID");
        let listen_fds = take_var("LISTEN_FDS");
        let _ = take_var("LISTEN_FDNAMES");
        let notify = take_var("NOTIFY_SOCKET");
        let ours = listen_pid
            .and_then(|p| p.to_str()?.parse::<u32>().ok())
            .is_some_and(|p| p == std::process::id());
        let count = listen_fds
            .and_then(|n| n.to_str()?.parse::<RawFd>().ok())
            .filter(|_| ours)
            .unwrap_or(0);
        no_inherited_descriptor_reaches_a_child();
        let listener = (count >= 1)
            .then(|| listening_unix_stream(LISTEN_FDS_START))
            .flatten()
            // SAFETY: systemd passed this descriptor to this process (LISTEN_PID is ours) and nothing else in
            // the process owns it: it becomes the listener's.
            .map(|fd| unsafe { UnixListener::from_raw_fd(fd) });
        if count >= 1 && listener.is_none() {
            tracing::warn!(
                "the first socket systemd passed is not a listening unix stream socket: binding our own"
            );
        }
        Activation {
            listener,
            notifier: notify.and_then(|n| Notifier::new(&n)),
        }
    }
}

/// Marks every descriptor above stderr close-on-exec: the ones systemd passed, and any its starter leaked (a
/// shell's or a supervisor's pipe). Each shim is exec'd from the daemon and outlives it; a descriptor it
/// inherited would stay open as long as its container runs (a starter waiting for its pipe's end would wait
/// for every container). The daemon's own descriptors are opened close-on-exec already.
fn no_inherited_descriptor_reaches_a_child() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing: it only sets a flag on open descriptors.
    let r = unsafe {
        libc::close_range(
            LISTEN_FDS_START as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    if r != 0 {
        tracing::warn!(
            "could not mark inherited descriptors close-on-exec: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Reads and removes an environment variable.
fn take_var(name: &str) -> Option<OsString> {
    let value = std::env::var_os(name);
    if value.is_some() {
        // SAFETY: called from `Activation::take_from_environment`, before the daemon starts any thread, so
        // nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    value
}

/// `fd` when it is a unix stream socket that listens.
fn listening_unix_stream(fd: RawFd) -> Option<RawFd> {
    let option = |name: libc::c_int| -> Option<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, an int of that size.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(value)
    };
    (option(libc::SO_DOMAIN)? == libc::AF_UNIX
        && option(libc::SO_TYPE)? == libc::SOCK_STREAM
        && option(libc::SO_ACCEPTCONN)? == 1)
        .then_some(fd)
}

/// Sends state changes to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    address: SocketAddr,
}

impl Notifier {
    /// For `NOTIFY_SOCKET`'s value: a path, or `@name` for an abstract socket. `None` for anything else.
    pub fn new(socket: &std::ffi::OsStr) -> Option<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = socket.as_bytes();
        let address = match bytes.first()? {
            b'/' => SocketAddr::from_pathname(socket).ok()?,
            b'@' => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..]).ok()?
            }
            _ => return None,
        };
        Some(Notifier { address })
    }

    /// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...`, one per line) in one datagram.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &self.address)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.notify("READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let len = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");

        let name = format!("husk-test-notify-{}", std::process::id());
        let abstract_addr = {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        let receiver = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        Notifier::new(std::ffi::OsStr::new(&format!("@{name}")))
            .unwrap()
            .notify("STOPPING=1")
            .unwrap();
        let len = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");

        assert!(Notifier::new(std::ffi::OsStr::new("relative/path")).is_none());
        assert!(Notifier::new(std::ffi::OsStr::new("")).is_none());
    }

    #[test]
    fn only_a_listening_unix_stream_socket_is_taken() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s")).unwrap();
        assert_eq!(
            listening_unix_stream(listener.as_raw_fd()),
            Some(listener.as_raw_fd())
        );
        let datagram = UnixDatagram::unbound().unwrap();
        assert_eq!(listening_unix_stream(datagram.as_raw_fd()), None);
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(listening_unix_stream(file.as_raw_fd()), None);
    }
}
