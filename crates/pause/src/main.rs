//! `husk-pause`: the static pause program for infra containers (see the library). Started under the name
//! `husk-init` (the daemon's copy for `--init`), it is the containers' init instead.

fn main() {
    let mut args = std::env::args_os();
    let as_init = args
        .next()
        .map(std::path::PathBuf::from)
        .is_some_and(|p| p.file_name().is_some_and(|n| n == "husk-init"));
    if as_init {
        let rest: Vec<std::ffi::OsString> = args.collect();
        std::process::exit(husk_pause::init::run(&rest));
    }
    std::process::exit(husk_pause::run());
}
