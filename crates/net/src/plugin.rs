//! Running one CNI plugin binary as the specification says: parameters in `CNI_*` environment variables, the
//! network configuration on stdin, a result or an error object on stdout.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use husk_core::{Error, ErrorKind, Result};
use serde_json::Value;

use crate::builtin::BridgeConf;
use crate::result::PluginError;

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    /// Attach the sandbox.
    Add,
    /// Verify an attachment.
    Check,
    /// Detach; idempotent.
    Del,
}

impl CniCommand {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Check => "CHECK",
            CniCommand::Del => "DEL",
        }
    }
}

/// The runtime parameters of one call: which sandbox, where its network namespace is, which interface.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// The operation.
    pub command: CniCommand,
    /// `CNI_CONTAINERID`: the sandbox ID.
    pub container_id: &'a str,
    /// `CNI_NETNS`; `None` only for a DEL whose namespace is gone.
    pub netns: Option<&'a Path>,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
}

/// Finds and runs plugin binaries.
#[derive(Debug, Clone)]
pub struct PluginRunner {
    dirs: Vec<PathBuf>,
    timeout: Duration,
    builtin_bridge: bool,
}

impl PluginRunner {
    /// A runner searching `dirs` in order, killing a plugin that runs longer than `timeout`.
    pub fn new(dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        PluginRunner {
            dirs,
            timeout,
            builtin_bridge: false,
        }
    }

    /// Runs the `bridge` plugin inside the process for the configurations the built-in implements
    /// ([`crate::builtin`]), the binary for the others.
    pub fn with_builtin_bridge(mut self, on: bool) -> Self {
        self.builtin_bridge = on;
        self
    }

    /// The built-in implementation of plugin `ty` for `stdin`, if it has one and it is on.
    fn builtin(&self, ty: &str, stdin: &Value) -> Option<BridgeConf> {
        (self.builtin_bridge && ty == "bridge")
            .then(|| BridgeConf::parse(stdin))
            .flatten()
    }

    /// Whether plugin `ty` can run for `stdin`: built in, or its binary found.
    pub fn can_run(&self, network: &str, ty: &str, stdin: &Value) -> bool {
        self.builtin(ty, stdin).is_some() || self.find(network, ty).is_ok()
    }

    /// The path of plugin `ty`, or an error naming the network, the plugin and the directories searched.
    pub fn find(&self, network: &str, ty: &str) -> Result<PathBuf> {
        self.dirs.iter().map(|d| d.join(ty)).find(|p| p.is_file()).ok_or_else(|| {
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            Error::backend(format!(
                "network {network:?}: CNI plugin {ty:?} not found in {} (install containernetworking-plugins or \
                 add its directory to the plugin path)",
                dirs.join(", ")
            ))
        })
    }

    /// Runs plugin `ty` of `network` with `stdin`; for ADD returns the result it printed.
    pub fn run(
        &self,
        network: &str,
        ty: &str,
        call: &Invocation<'_>,
        stdin: &Value,
    ) -> Result<Option<Value>> {
        let started = Instant::now();
        let builtin = self.builtin(ty, stdin);
        let result = match &builtin {
            Some(conf) => conf.run(call),
            None => self.run_binary(network, ty, call, stdin),
        };
        tracing::debug!(
            network,
            plugin = ty,
            command = call.command.as_str(),
            built_in = builtin.is_some(),
            micros = started.elapsed().as_micros() as u64,
            "cni plugin ran"
        );
        result
    }

    fn run_binary(
        &self,
        network: &str,
        ty: &str,
        call: &Invocation<'_>,
        stdin: &Value,
    ) -> Result<Option<Value>> {
        let path = self.find(network, ty)?;
        let output = self.exec(&path, call, stdin).map_err(|e| {
            e.context(format!(
                "network {network:?}: CNI plugin {ty:?} ({}) {}",
                path.display(),
                call.command.as_str()
            ))
        })?;
        if !output.status.success() {
            return Err(plugin_failure(network, ty, call.command, &output));
        }
        if call.command != CniCommand::Add {
            return Ok(None);
        }
        let result = serde_json::from_slice(&output.stdout).map_err(|e| {
            Error::backend(format!(
                "network {network:?}: CNI plugin {ty:?} ADD printed no JSON result ({e}): {}",
                excerpt(&output.stdout)
            ))
        })?;
        Ok(Some(result))
    }

    fn exec(&self, path: &Path, call: &Invocation<'_>, stdin: &Value) -> Result<Output> {
        let mut child = self
            .command(path, call)
            .spawn()
            .map_err(|e| Error::io("cannot start", e))?;
        let pidfd = match pidfd_open(&child) {
            Ok(fd) => fd,
            Err(e) => {
                // Without a pidfd the timeout cannot be enforced safely; stop the plugin rather than leave it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let input = serde_json::to_vec(stdin)
            .map_err(|e| Error::internal(format!("encode plugin stdin: {e}")))?;
        let waiter = std::thread::spawn(move || -> std::io::Result<Output> {
            if let Some(mut pipe) = child.stdin.take() {
                // A plugin may exit without reading its stdin; its result or error still tells what happened.
                let _ = pipe.write_all(&input);
            }
            child.wait_with_output()
        });
        let finished = wait_readable(&pidfd, self.timeout);
        if !finished {
            kill(&pidfd);
        }
        let output = waiter
            .join()
            .map_err(|_| Error::internal("the thread waiting for a CNI plugin panicked"))?
            .map_err(|e| Error::io("wait", e))?;
        if !finished {
            return Err(Error::timeout(format!(
                "did not finish within {:?} and was killed",
                self.timeout
            )));
        }
        Ok(output)
    }

    fn command(&self, path: &Path, call: &Invocation<'_>) -> Command {
        let mut cmd = Command::new(path);
        // A clean environment: the plugin sees the CNI parameters and a PATH to find iptables, nothing of the daemon's.
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH)),
            )
            .env("CNI_COMMAND", call.command.as_str())
            .env("CNI_CONTAINERID", call.container_id)
            .env(
                "CNI_NETNS",
                call.netns.map(Path::as_os_str).unwrap_or_default(),
            )
            .env("CNI_IFNAME", call.ifname)
            .env(
                "CNI_PATH",
                std::env::join_paths(&self.dirs).unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn plugin_failure(network: &str, ty: &str, command: CniCommand, output: &Output) -> Error {
    let what = format!(
        "network {network:?}: CNI plugin {ty:?} failed {}",
        command.as_str()
    );
    let Some(err) = PluginError::parse(&output.stdout) else {
        let text = if output.stderr.is_empty() {
            &output.stdout
        } else {
            &output.stderr
        };
        return Error::backend(format!("{what} ({}): {}", output.status, excerpt(text)));
    };
    let mut message = format!("{what}: {}", err.msg);
    if !err.details.is_empty() {
        message.push_str(&format!(": {}", err.details));
    }
    match err.code_meaning() {
        Some(meaning) => message.push_str(&format!(" (code {}: {meaning})", err.code)),
        None => message.push_str(&format!(" (code {})", err.code)),
    }
    let kind = if err.code == 11 {
        ErrorKind::Conflict
    } else {
        ErrorKind::Backend
    };
    Error::new(kind, message)
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "no output".to_string();
    }
    let start = text
        .char_indices()
        .rev()
        .nth(999)
        .map(|(i, _)| i)
        .unwrap_or(0);
    text[start..].to_string()
}

fn pidfd_open(child: &Child) -> Result<OwnedFd> {
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open takes a PID and flags and returns a new file descriptor or -1; the child has not been
    // waited for, so the PID still names it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::io("pidfd_open", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process behind `pidfd` exits (the pidfd becomes readable) or `timeout` passes.
fn wait_readable(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd that lives across the call, and we pass its count as 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return true;
        }
        let interrupted =
            n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        if !interrupted || left.is_zero() {
            return n > 0;
        }
    }
}

fn kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, a null siginfo and no flags; a process that
    // already exited yields ESRCH, never another process.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use serde_json::json;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn call(command: CniCommand) -> Invocation<'static> {
        Invocation {
            command,
            container_id: "c1",
            netns: Some(Path::new("/run/netns/x")),
            ifname: "eth0",
        }
    }

    #[test]
    fn passes_parameters_and_stdin_and_reads_the_result() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "echo",
            r#"in=$(cat); printf '{"cniVersion":"1.0.0","env":"%s %s %s %s","stdin":%s}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$in""#,
        );
        let runner = PluginRunner::new(
            vec![PathBuf::from("/nonexistent"), dir.path().into()],
            Duration::from_secs(5),
        );
        let out = runner
            .run("n", "echo", &call(CniCommand::Add), &json!({"a": 1}))
            .unwrap()
            .unwrap();
        assert_eq!(out["env"], "ADD c1 /run/netns/x eth0");
        assert_eq!(out["stdin"]["a"], 1);
        assert_eq!(
            runner
                .run("n", "echo", &call(CniCommand::Del), &json!({}))
                .unwrap(),
            None
        );
    }

    #[test]
    fn plugin_error_object_becomes_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "bad",
            r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"no subnet","details":"ipam"}'; exit 1"#,
        );
        let runner = PluginRunner::new(vec![dir.path().into()], Duration::from_secs(5));
        let err = runner
            .run("web", "bad", &call(CniCommand::Add), &json!({}))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Backend);
        assert_eq!(
            err.message,
            "network \"web\": CNI plugin \"bad\" failed ADD: no subnet: ipam (code 7: invalid network config)"
        );
    }

    #[test]
    fn plain_failure_shows_stderr() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "crash", "echo 'panic: boom' >&2; exit 2");
        let runner = PluginRunner::new(vec![dir.path().into()], Duration::from_secs(5));
        let err = runner
            .run("web", "crash", &call(CniCommand::Del), &json!({}))
            .unwrap_err();
        assert!(
            err.message.contains("panic: boom") && err.message.contains("\"crash\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_plugin_names_network_plugin_and_dirs() {
        let runner = PluginRunner::new(
            vec!["/nope/a".into(), "/nope/b".into()],
            Duration::from_secs(5),
        );
        let err = runner
            .run("web", "bridge", &call(CniCommand::Add), &json!({}))
            .unwrap_err();
        assert!(
            err.message
                .contains("network \"web\": CNI plugin \"bridge\" not found in /nope/a, /nope/b"),
            "{}",
            err.message
        );
    }

    #[test]
    fn hung_plugin_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "hang", "exec sleep 30");
        let runner = PluginRunner::new(vec![dir.path().into()], Duration::from_millis(200));
        let started = Instant::now();
        let err = runner
            .run("web", "hang", &call(CniCommand::Add), &json!({}))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn non_json_result_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "chatty", "echo hello");
        let runner = PluginRunner::new(vec![dir.path().into()], Duration::from_secs(5));
        let err = runner
            .run("web", "chatty", &call(CniCommand::Add), &json!({}))
            .unwrap_err();
        assert!(
            err.message.contains("printed no JSON result") && err.message.contains("hello"),
            "{}",
            err.message
        );
    }
}
