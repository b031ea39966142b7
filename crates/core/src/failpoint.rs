//! The crash-testing hook shared by the crates of the daemon's multi-step operations.

/// When the environment variable `HUSK_FAILPOINT` names `name`, aborts the process here, as a power cut or
/// `kill -9` would stop it. Tests use it to prove that every step of a multi-step operation is finished or rolled
/// back by the next start. Every failpoint is listed in `husk_engine::FAILPOINTS`, whose unit test checks the
/// list against the calls in the code.
pub fn failpoint(name: &str) {
    if std::env::var("HUSK_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("husk: failpoint {name} reached: aborting");
        std::process::abort();
    }
}
