//! The infra image: one layer holding `/pause` (the static `husk-pause` binary), built here as a `docker save`
//! archive so no registry is needed.
//!
//! The archive is byte-for-byte reproducible (fixed times and owners), so its image ID (the digest of its config)
//! only changes when the binary does.

use std::path::Path;

use husk_core::{Context, Error, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The infra image, ready to load.
#[derive(Debug, Clone)]
pub(crate) struct PauseImage {
    /// `sha256:<config digest>`, the ID the engine gives it.
    pub id: String,
    /// The tag it is loaded under (`husk.local/pause:<version>-<short id>`), for people reading `docker images`.
    pub tag: String,
    /// The `docker save` archive.
    pub archive: Vec<u8>,
}

/// Go's name for this machine's architecture, as image configs spell it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether an ELF file asks for a program interpreter (the dynamic loader), which an empty image lacks.
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let bad = || {
        Error::invalid(
            "pause_binary",
            "the pause binary is not a 64-bit little-endian ELF executable",
        )
    };
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(bad());
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(bad)? as usize;
    let phnum = u16_at(0x38).ok_or_else(bad)? as usize;
    for i in 0..phnum {
        let p_type = u32_at(phoff + i * phentsize).ok_or_else(bad)?;
        if p_type == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn tar_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, data)
        .context(format!("writing {path} into the pause image"))
}

/// Builds the infra image from the pause binary's bytes.
pub(crate) fn build(binary: &[u8]) -> Result<PauseImage> {
    if has_interpreter(binary)? {
        return Err(Error::invalid(
            "pause_binary",
            "the pause binary is dynamically linked; the infra image has no libraries: build husk-pause statically (crt-static)",
        ));
    }
    let mut layer = tar::Builder::new(Vec::new());
    tar_file(&mut layer, "pause", 0o755, binary)?;
    let layer = layer
        .into_inner()
        .context("finishing the pause image layer")?;
    let layer_digest = sha256_hex(&layer);

    let config = json!({
        "architecture": go_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": { "Entrypoint": ["/pause"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "husk docker driver: husk-pause" }],
    });
    let config = serde_json::to_vec(&config)
        .map_err(|e| Error::internal(format!("encoding the pause image config: {e}")))?;
    let config_digest = sha256_hex(&config);
    let tag = format!(
        "husk.local/pause:{}-{}",
        env!("CARGO_PKG_VERSION"),
        &config_digest[..12]
    );
    let manifest = json!([{
        "Config": format!("{config_digest}.json"),
        "RepoTags": [tag],
        "Layers": [format!("{layer_digest}/layer.tar")],
    }]);
    let manifest = serde_json::to_vec(&manifest)
        .map_err(|e| Error::internal(format!("encoding the pause image manifest: {e}")))?;

    let mut archive = tar::Builder::new(Vec::new());
    tar_file(
        &mut archive,
        &format!("{layer_digest}/layer.tar"),
        0o644,
        &layer,
    )?;
    tar_file(
        &mut archive,
        &format!("{config_digest}.json"),
        0o644,
        &config,
    )?;
    tar_file(&mut archive, "manifest.json", 0o644, &manifest)?;
    let archive = archive
        .into_inner()
        .context("finishing the pause image archive")?;
    Ok(PauseImage {
        id: format!("sha256:{config_digest}"),
        tag,
        archive,
    })
}

/// Reads the pause binary and builds the image.
pub(crate) async fn build_from(path: &Path) -> Result<PauseImage> {
    let binary = tokio::fs::read(path).await.map_err(|e| {
        Error::io(
            format!(
                "reading the pause binary {} (the static husk-pause the infra image is made of)",
                path.display()
            ),
            e,
        )
    })?;
    build(&binary).map_err(|e| e.context(format!("pause binary {}", path.display())))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn fake_elf(interp: bool) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56 * 2];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        elf[120..124].copy_from_slice(&(if interp { 3u32 } else { 1 }).to_le_bytes());
        elf
    }

    #[test]
    fn dynamic_binaries_and_non_elf_files_are_refused() {
        assert!(
            build(&fake_elf(true))
                .unwrap_err()
                .message
                .contains("dynamically linked")
        );
        assert!(build(b"#!/bin/sh\n").is_err());
        assert!(build(&fake_elf(false)).is_ok());
    }

    #[test]
    fn the_archive_is_reproducible_and_its_id_is_the_config_digest() {
        let a = build(&fake_elf(false)).unwrap();
        let b = build(&fake_elf(false)).unwrap();
        assert_eq!(a.archive, b.archive);
        assert_eq!(a.id, b.id);
        assert!(a.tag.starts_with("husk.local/pause:"));

        let mut files = std::collections::BTreeMap::new();
        let mut ar = tar::Archive::new(a.archive.as_slice());
        for entry in ar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let config = &files[config_name];
        assert_eq!(format!("sha256:{}", sha256_hex(config)), a.id);
        let config: serde_json::Value = serde_json::from_slice(config).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/pause"]));
        let layer = &files[manifest[0]["Layers"][0].as_str().unwrap()];
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            json!(format!("sha256:{}", sha256_hex(layer)))
        );
        let mut layer = tar::Archive::new(layer.as_slice());
        let entry = layer.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("pause"));
        assert_eq!(entry.header().mode().unwrap(), 0o755);
    }
}
