//! `husk-init`: the tiny init a container runs as PID 1 with `--init`.
//!
//! It starts the container's command as its only child, in a process group of its own (the terminal's
//! foreground group when stdin is a terminal), forwards every signal it receives to that child, reaps every
//! process that ends up as its child (orphans of the container are re-parented to PID 1, and without an init
//! they stay zombies forever), and exits with the command's status (128 + N when a signal N killed it). When it is
//! not PID 1 (a sandbox with a shared PID namespace has its pause process there) it makes itself a child
//! subreaper, so it still reaps its own descendants.
//!
//! Signals stay blocked in the init and are taken one at a time with `sigwaitinfo`, so none is lost between
//! checks; the child gets the mask the init started with.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

/// Exit code when the command cannot be executed (as a shell does: 127 not found, 126 not executable).
const NOT_FOUND: i32 = 127;
const NOT_EXECUTABLE: i32 = 126;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn say(text: &str) {
    let line = format!("husk-init: {text}\n");
    // SAFETY: writing a buffer we own to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Runs the init with `args` (the program's arguments after argv[0], an optional leading `--` first); returns
/// the exit code.
pub fn run(args: &[OsString]) -> i32 {
    let args: &[OsString] = match args.first() {
        Some(a) if a == "--" => &args[1..],
        _ => args,
    };
    if args.is_empty() {
        say("usage: husk-init [--] COMMAND [ARGS...]");
        return 2;
    }
    let argv: Vec<CString> = match args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
    {
        Ok(v) => v,
        Err(_) => {
            say("an argument contains a NUL byte");
            return 2;
        }
    };
    // SAFETY: plain signal-mask calls on sigset_t values we own; prctl with constant arguments; getpid.
    let (all, original) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut original: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut original);
        if libc::getpid() != 1 {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        (all, original)
    };
    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe functions before exec.
    let child = unsafe { libc::fork() };
    if child < 0 {
        say(&format!("fork: {}", std::io::Error::last_os_error()));
        return NOT_EXECUTABLE;
    }
    if child == 0 {
        exec_child(&argv, &original);
    }
    supervise(child, &all)
}

/// In the child: own process group (the terminal's foreground one), the original signal mask, then exec.
fn exec_child(argv: &[CString], original: &libc::sigset_t) -> ! {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: async-signal-safe calls only; `ptrs` is a NULL-terminated array of pointers into `argv`, which
    // outlives the call; SIGTTOU is still blocked during tcsetpgrp, as it must be for a background group.
    unsafe {
        libc::setpgid(0, 0);
        if libc::isatty(0) == 1 {
            libc::tcsetpgrp(0, libc::getpid());
        }
        libc::sigprocmask(libc::SIG_SETMASK, original, std::ptr::null_mut());
        libc::execvp(ptrs[0], ptrs.as_ptr());
        let code = if errno() == libc::ENOENT {
            NOT_FOUND
        } else {
            NOT_EXECUTABLE
        };
        let msg = b"husk-init: cannot execute the command\n";
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(code)
    }
}

/// Reaps every exited child; returns the exit code of `main` if it was among them.
fn reap(main: libc::pid_t) -> Option<i32> {
    let mut main_code = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a pointer to a local int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return main_code;
        }
        if pid == main {
            main_code = Some(if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            });
        }
    }
}

/// The init's loop: forward signals to the child, reap on SIGCHLD, leave when the child is gone.
fn supervise(child: libc::pid_t, all: &libc::sigset_t) -> i32 {
    loop {
        // SAFETY: sigwaitinfo on a full set we own, writing into a zeroed siginfo_t.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(all, &mut info)
        };
        if sig < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            say(&format!("sigwaitinfo: {}", std::io::Error::last_os_error()));
            return NOT_EXECUTABLE;
        }
        if sig == libc::SIGCHLD {
            if let Some(code) = reap(child) {
                // Whatever else still runs is reaped by the kernel (PID 1) or our parent.
                let _ = reap(child);
                return code;
            }
            continue;
        }
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child, sig) };
    }
}
