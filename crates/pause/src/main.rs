//! `husk-pause`: the static pause program for infra containers (see the library).

fn main() {
    std::process::exit(husk_pause::run());
}
