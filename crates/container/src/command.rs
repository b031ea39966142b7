//! Whether a container's command can be run, said as runc says it.
//!
//! libcontainer checks the command in the container before it waits for `start`, in words of its own; husk checks
//! it there itself (see the shim's executor) and words a failure as runc and Go's `exec.LookPath` do
//! (`exec: "x": executable file not found in $PATH`), so every driver reports the same text and the front ends
//! can give the shell's codes (127, 126: [`husk_core::Error::command_exit_code`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The search path when the process's environment has no `PATH` (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds `program` as `execvp` would: a name with a `/` is used as it is, any other is searched in `path_var`
/// (`PATH`'s value). Paths are taken under `root` (`/` inside the container, where relative ones start at the
/// working directory). The error is runc's message, starting with [`husk_core::error::EXEC_FAILURE_PREFIX`].
pub fn find_executable(
    program: &str,
    path_var: Option<&str>,
    root: &Path,
) -> Result<PathBuf, String> {
    let under_root = |p: &str| {
        if root == Path::new("/") {
            PathBuf::from(p)
        } else {
            root.join(p.trim_start_matches('/'))
        }
    };
    let failure = |why: &str| format!("exec: {program:?}: {why}");
    if program.is_empty() {
        return Err(failure("executable file not found in $PATH"));
    }
    if program.contains('/') {
        let path = under_root(program);
        return match runnable(&path) {
            Ok(()) => Ok(path),
            Err(Unrunnable::Missing(e)) => Err(failure(&format!("stat {program}: {e}"))),
            Err(Unrunnable::Directory) => Err(failure("is a directory")),
            Err(Unrunnable::NotExecutable) => Err(failure("permission denied")),
        };
    }
    for dir in path_var.unwrap_or(DEFAULT_PATH).split(':') {
        // An empty entry is the working directory, as for the shell.
        let dir = if dir.is_empty() { "." } else { dir };
        let path = under_root(&format!("{dir}/{program}"));
        if runnable(&path).is_ok() {
            return Ok(path);
        }
    }
    Err(failure("executable file not found in $PATH"))
}

/// Why a path cannot be executed.
enum Unrunnable {
    Missing(String),
    Directory,
    NotExecutable,
}

fn runnable(path: &Path) -> Result<(), Unrunnable> {
    let meta = std::fs::metadata(path).map_err(|e| {
        // Go's words for the errno ("no such file or directory"), not Rust's ("No such file or directory (os
        // error 2)").
        let words = match e.raw_os_error() {
            Some(errno) => nix::errno::Errno::from_raw(errno).desc().to_lowercase(),
            None => e.to_string(),
        };
        Unrunnable::Missing(words)
    })?;
    if meta.is_dir() {
        Err(Unrunnable::Directory)
    } else if meta.permissions().mode() & 0o111 == 0 {
        Err(Unrunnable::NotExecutable)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(bin.join("sh"), "").unwrap();
        std::fs::set_permissions(bin.join("sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.path().join("usr/bin/data"), "").unwrap();
        std::fs::set_permissions(
            root.path().join("usr/bin/data"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::write(root.path().join("etc/passwd"), "").unwrap();
        std::os::unix::fs::symlink("/nowhere", bin.join("dangling")).unwrap();
        root
    }

    #[test]
    fn names_are_searched_in_path_and_paths_are_taken_as_they_are() {
        let root = tree();
        let r = root.path();
        assert_eq!(
            find_executable("sh", Some("/usr/bin:/bin"), r).unwrap(),
            r.join("bin/sh")
        );
        assert_eq!(
            find_executable("/bin/sh", None, r).unwrap(),
            r.join("bin/sh")
        );
        assert_eq!(
            find_executable("sh", None, r).unwrap(),
            r.join("bin/sh"),
            "default PATH"
        );
        // A file without execute permission earlier in PATH is skipped, as by execvp.
        std::fs::write(r.join("usr/bin/sh"), "").unwrap();
        assert_eq!(
            find_executable("sh", Some("/usr/bin:/bin"), r).unwrap(),
            r.join("bin/sh")
        );
    }

    #[test]
    fn failures_are_worded_as_runc_words_them() {
        let root = tree();
        let r = root.path();
        let cases = [
            (
                "nope",
                Some("/usr/bin:/bin"),
                "exec: \"nope\": executable file not found in $PATH",
            ),
            (
                "data",
                Some("/usr/bin"),
                "exec: \"data\": executable file not found in $PATH",
            ),
            (
                "sh",
                Some("/usr/bin"),
                "exec: \"sh\": executable file not found in $PATH",
            ),
            (
                "/nope",
                None,
                "exec: \"/nope\": stat /nope: no such file or directory",
            ),
            (
                "/bin/dangling",
                None,
                "exec: \"/bin/dangling\": stat /bin/dangling: no such file or directory",
            ),
            (
                "/etc/passwd",
                None,
                "exec: \"/etc/passwd\": permission denied",
            ),
            ("/etc", None, "exec: \"/etc\": is a directory"),
            ("", None, "exec: \"\": executable file not found in $PATH"),
        ];
        for (program, path, words) in cases {
            let e = find_executable(program, path, r).unwrap_err();
            assert_eq!(e, words);
            let error = husk_core::Error::from_exec_failure(&e).unwrap();
            let expected = if words.contains("found") || words.contains("no such") {
                127
            } else {
                126
            };
            assert_eq!(error.command_exit_code(), Some(expected), "{words}");
        }
    }
}
