//! Generates the CRI v1 messages, clients and servers from `proto/api.proto` (cri-api v1.36) with `protoc`.
//!
//! The file is compiled from a copy in `OUT_DIR` without its `[debug_redact = true]` field options: protoc
//! learnt that option in version 22 (Debian 12 ships 3.21), and prost ignores it anyway (it marks fields Go's
//! printers hide). Nothing else is changed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let text = std::fs::read_to_string("proto/api.proto")?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("proto");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("api.proto"),
        text.replace(" [debug_redact = true]", ""),
    )?;
    tonic_prost_build::configure().compile_protos(&[out.join("api.proto")], &[out])?;
    Ok(())
}
