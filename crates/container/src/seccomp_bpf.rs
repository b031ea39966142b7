//! The default seccomp profile, compiled to BPF once and installed by the container's own process right before
//! `execve`.
//!
//! Building a filter with libseccomp costs about 14 ms on our CI machine (hundreds of rules for three ABIs), and
//! libcontainer would do it in every container's init, on the start path. The profile only depends on the
//! container's capabilities, so the driver compiles each distinct profile once, keeps the program, and hands it to
//! the shim; the shim's executor installs it (`seccomp(SECCOMP_SET_MODE_FILTER)`) as the last step before
//! `execve`, after capabilities are dropped and with `no_new_privs` set: the same moment runc picks for filters
//! under `no_new_privs`. Execs get the same program. Profiles this cannot serve (a user's own profile, or
//! `no-new-privileges=false`, where installing needs CAP_SYS_ADMIN) stay in the OCI spec for libcontainer.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use husk_core::{Error, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde_json::Value;

fn seccomp_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("seccomp: {what}: {e}"))
}

fn action(rule: &Value) -> Result<ScmpAction> {
    match rule["action"].as_str() {
        Some("SCMP_ACT_ALLOW") => Ok(ScmpAction::Allow),
        Some("SCMP_ACT_ERRNO") => Ok(ScmpAction::Errno(
            rule["errnoRet"].as_i64().unwrap_or(libc::EPERM as i64) as i32,
        )),
        other => Err(Error::internal(format!(
            "seccomp: action {other:?} is not used by husk's profile"
        ))),
    }
}

fn arch(name: &str) -> Result<ScmpArch> {
    match name {
        "SCMP_ARCH_X86_64" => Ok(ScmpArch::X8664),
        "SCMP_ARCH_X86" => Ok(ScmpArch::X86),
        "SCMP_ARCH_X32" => Ok(ScmpArch::X32),
        "SCMP_ARCH_AARCH64" => Ok(ScmpArch::Aarch64),
        "SCMP_ARCH_ARM" => Ok(ScmpArch::Arm),
        other => Err(Error::internal(format!(
            "seccomp: unknown architecture {other}"
        ))),
    }
}

fn comparison(arg: &Value) -> Result<ScmpArgCompare> {
    let index = arg["index"].as_u64().unwrap_or(0) as u32;
    let value = arg["value"].as_u64().unwrap_or(0);
    let op = match arg["op"].as_str() {
        Some("SCMP_CMP_EQ") => ScmpCompareOp::Equal,
        Some("SCMP_CMP_MASKED_EQ") => ScmpCompareOp::MaskedEqual(value),
        other => {
            return Err(Error::internal(format!(
                "seccomp: comparison {other:?} is not used by husk's profile"
            )));
        }
    };
    // For MASKED_EQ the OCI form is (mask = value, datum = valueTwo).
    let datum = if matches!(op, ScmpCompareOp::MaskedEqual(_)) {
        arg["valueTwo"].as_u64().unwrap_or(0)
    } else {
        value
    };
    Ok(ScmpArgCompare::new(index, op, datum))
}

/// Compiles an OCI `linux.seccomp` object of the shape [`crate::security::default_seccomp_profile`] makes into a
/// BPF program (an array of `struct sock_filter`). System calls unknown to libseccomp are skipped, as
/// libcontainer does.
pub fn compile(profile: &Value) -> Result<Vec<u8>> {
    let default = action(
        &serde_json::json!({"action": profile["defaultAction"], "errnoRet": profile["defaultErrnoRet"]}),
    )?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| seccomp_err("new filter", e))?;
    ctx.set_ctl_nnp(false)
        .map_err(|e| seccomp_err("filter attribute", e))?;
    for a in profile["architectures"].as_array().into_iter().flatten() {
        let a = arch(a.as_str().unwrap_or_default())?;
        if a != ScmpArch::native() {
            ctx.add_arch(a)
                .map_err(|e| seccomp_err("add architecture", e))?;
        }
    }
    for rule in profile["syscalls"].as_array().into_iter().flatten() {
        let act = action(rule)?;
        if act == default {
            continue;
        }
        let conditions: Vec<ScmpArgCompare> = rule["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(comparison)
            .collect::<Result<_>>()?;
        for name in rule["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
        {
            let Ok(call) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if conditions.is_empty() {
                ctx.add_rule(act, call)
                    .map_err(|e| seccomp_err(&format!("rule for {name}"), e))?;
            } else {
                ctx.add_rule_conditional(act, call, &conditions)
                    .map_err(|e| seccomp_err(&format!("rule for {name}"), e))?;
            }
        }
    }
    // Export through an anonymous memory file (libseccomp 2.5 has no in-memory export).
    // SAFETY: memfd_create with a static NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"husk-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io(
            "seccomp: create a memory file",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: memfd_create returned a new descriptor that we own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(|e| seccomp_err("export", e))?;
    file.rewind()
        .map_err(|e| Error::io("seccomp: read the program", e))?;
    let mut program = Vec::new();
    file.read_to_end(&mut program)
        .map_err(|e| Error::io("seccomp: read the program", e))?;
    if program.is_empty() || program.len() % std::mem::size_of::<libc::sock_filter>() != 0 {
        return Err(Error::internal(format!(
            "seccomp: exported program of {} bytes is not a filter",
            program.len()
        )));
    }
    Ok(program)
}

/// Installs a compiled program on the calling thread (the container's process, right before `execve`). The
/// caller has set `no_new_privs`.
pub fn install(program: &[u8]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: (program.len() / std::mem::size_of::<libc::sock_filter>()) as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, a whole number of sock_filter entries that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Compiled default profiles by the capability set they were widened for.
#[derive(Debug, Default)]
pub struct ProgramCache {
    programs: Mutex<HashMap<Vec<String>, Arc<Vec<u8>>>>,
}

impl ProgramCache {
    /// The default profile's program for `capabilities`, compiled on first use.
    pub fn default_program(&self, capabilities: &[String]) -> Result<Arc<Vec<u8>>> {
        let key = cache_key(capabilities);
        if let Some(p) = self
            .programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let program = Arc::new(compile(&crate::security::default_seccomp_profile(&key))?);
        self.programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, program.clone());
        Ok(program)
    }

    /// Adds a program compiled elsewhere for `capabilities` (the VM guest image carries the default set's, built
    /// on the host: compiling takes about 100 ms in an emulated guest).
    pub fn insert(&self, capabilities: &[String], program: Vec<u8>) {
        let key = cache_key(capabilities);
        self.programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Arc::new(program));
    }
}

/// Capabilities as `CAP_*` names, sorted: oci-spec prints them without the prefix (`SYS_ADMIN`), users and
/// libcaps with it, and the profile must see the same names either way.
fn cache_key(capabilities: &[String]) -> Vec<String> {
    let mut key: Vec<String> = capabilities
        .iter()
        .map(|c| crate::security::capability_name(c))
        .collect();
    key.sort();
    key.dedup();
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_the_default_profile_and_caches_it() {
        let cache = ProgramCache::default();
        let a = cache.default_program(&["CAP_CHOWN".into()]).unwrap();
        assert!(a.len() > 100 * std::mem::size_of::<libc::sock_filter>());
        let b = cache.default_program(&["CAP_CHOWN".into()]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let admin = cache.default_program(&["CAP_SYS_ADMIN".into()]).unwrap();
        assert_ne!(*a, *admin, "capabilities widen the profile");
        // oci-spec prints capabilities without the prefix: the same program either way.
        let printed = oci_spec::runtime::Capability::SysAdmin.to_string();
        assert_eq!(printed, "SYS_ADMIN");
        let from_spec = cache.default_program(&[printed]).unwrap();
        assert!(Arc::ptr_eq(&admin, &from_spec));
        // A program made elsewhere serves the same key.
        cache.insert(&["KILL".into()], vec![1, 2, 3]);
        assert_eq!(
            *cache.default_program(&["CAP_KILL".into()]).unwrap(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn an_installed_program_refuses_what_the_profile_leaves_out() {
        let program = compile(&crate::security::default_seccomp_profile(&[])).unwrap();
        // In a child process: set no_new_privs, install, then try unshare (refused) and getpid (allowed).
        // SAFETY: fork in a test process; the child only makes raw system calls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain system calls in the forked child.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if install(&program).is_err() {
                    libc::_exit(10);
                }
                if libc::unshare(libc::CLONE_NEWUTS) == 0 {
                    libc::_exit(11);
                }
                if *libc::__errno_location() != libc::EPERM {
                    libc::_exit(12);
                }
                libc::getpid();
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "exit code tells which check failed"
        );
    }
}
