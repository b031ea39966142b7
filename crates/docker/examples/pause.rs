//! The `husk-pause` program, built along with this crate's examples so the integration tests and the benchmark
//! find a static pause binary next to them (`target/<triple>/<profile>/examples/pause`) without building
//! another package. husk itself uses the `husk-pause` binary of `crates/pause`.

fn main() {
    std::process::exit(husk_pause::run());
}
