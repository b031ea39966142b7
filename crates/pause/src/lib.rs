#![doc = include_str!("../README.md")]

pub mod init;

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_child(_: libc::c_int) {
    // Reaping happens in the main loop; this handler only ends `sigsuspend`.
}

fn install(signal: libc::c_int, handler: extern "C" fn(libc::c_int), flags: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid; the handlers are async-signal-safe (an atomic store, or nothing).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

fn reap_children() {
    loop {
        // SAFETY: waitpid with a null status pointer and WNOHANG only reaps exited children.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// Runs the pause loop until SIGTERM or SIGINT; returns the exit code (0).
pub fn run() -> i32 {
    if std::env::args()
        .skip(1)
        .any(|a| a == "-v" || a == "--version")
    {
        println!("husk-pause {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    install(libc::SIGTERM, on_stop, 0);
    install(libc::SIGINT, on_stop, 0);
    install(libc::SIGCHLD, on_child, libc::SA_NOCLDSTOP);
    // Do not pin whatever directory we were started in.
    let _ = std::env::set_current_dir("/");
    // Signals stay blocked except inside sigsuspend, so none can slip in between the checks and the sleep.
    // SAFETY: plain signal-mask manipulation on sigset_t values we own.
    let (blocked, empty) = unsafe {
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut blocked);
        libc::sigemptyset(&mut empty);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut blocked, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
        (blocked, empty)
    };
    let _ = blocked;
    while !STOP.load(Ordering::SeqCst) {
        reap_children();
        // SAFETY: sigsuspend atomically unblocks every signal and sleeps until one is handled.
        unsafe { libc::sigsuspend(&empty) };
    }
    reap_children();
    0
}
