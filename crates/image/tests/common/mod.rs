//! Test helpers: a raw tar writer (so tests can write the entries a well-behaved tar library refuses to), image
//! archive builders (docker save and OCI layout) and a tree snapshot for "nothing changed outside" checks.
#![allow(dead_code)]

pub mod hostile;
pub use husk_testkit::test_tmp;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use husk_image::{Digest, ImageConfig, ImageStore};
use sha2::Digest as _;

/// A tar stream written header by header, with any name, type and size.
#[derive(Default)]
pub struct Tar {
    buf: Vec<u8>,
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        // Base-256 (GNU) for values that do not fit in octal.
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
        return;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    /// A header with `name`, type `kind`, declared `size`, `link` target and `mode`; followed by `data` padded.
    pub fn entry(
        &mut self,
        name: &[u8],
        kind: u8,
        size: u64,
        link: &[u8],
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        self.entry_dev(name, kind, size, link, mode, data, (0, 0))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn entry_dev(
        &mut self,
        name: &[u8],
        kind: u8,
        size: u64,
        link: &[u8],
        mode: u32,
        data: &[u8],
        dev: (u32, u32),
    ) -> &mut Self {
        let mut h = [0u8; 512];
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "test names must fit in ustar"
        );
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], dev.0 as u64);
        octal(&mut h[337..345], dev.1 as u64);
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|b| *b as u64).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), b'0', data.len() as u64, b"", 0o644, data)
    }

    pub fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(name.as_bytes(), b'0', data.len() as u64, b"", mode, data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name.as_bytes(), b'5', 0, b"", 0o755, b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name.as_bytes(), b'2', 0, target.as_bytes(), 0o777, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name.as_bytes(), b'1', 0, target.as_bytes(), 0o644, b"")
    }

    pub fn chardev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        self.entry_dev(name.as_bytes(), b'3', 0, b"", 0o666, b"", (major, minor))
    }

    /// The stream with its two end blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    /// The stream without end blocks (for nesting raw bytes).
    pub fn raw(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A layer as it goes into an archive.
#[derive(Clone)]
pub struct Layer {
    /// The bytes stored (maybe compressed).
    pub blob: Vec<u8>,
    /// The diff ID recorded in the config (`sha256:...`).
    pub diff_id: String,
    /// OCI media type.
    pub media_type: String,
}

impl Layer {
    pub fn plain(tar: Vec<u8>) -> Layer {
        Layer {
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
            blob: tar,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }
    }

    pub fn gzip(tar: Vec<u8>) -> Layer {
        Layer {
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
            blob: gzip(&tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    pub fn zstd(tar: Vec<u8>) -> Layer {
        Layer {
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
            blob: zstd(&tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
        }
    }
}

pub fn config_json(layers: &[Layer], cmd: &str) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": [cmd], "Env": ["PATH=/bin"], "WorkingDir": "/", "Labels": {"test": "yes"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A legacy `docker save` archive: `<n>/layer.tar`, `<config hex>.json`, `manifest.json`.
pub fn docker_archive(layers: &[Layer], name: Option<&str>) -> Vec<u8> {
    let config = config_json(layers, "sh");
    docker_archive_with(layers, &config, name, None)
}

/// A legacy archive with a given config and, optionally, layer paths written into manifest.json instead of the
/// real ones.
pub fn docker_archive_with(
    layers: &[Layer],
    config: &[u8],
    name: Option<&str>,
    layer_paths: Option<Vec<String>>,
) -> Vec<u8> {
    let mut tar = Tar::new();
    let config_name = format!("{}.json", sha256_hex(config));
    tar.file(&config_name, config);
    let mut paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("l{i}/layer.tar");
        tar.dir(&format!("l{i}/"));
        tar.file(&path, &layer.blob);
        paths.push(path);
    }
    let paths = layer_paths.unwrap_or(paths);
    let tags: Vec<&str> = name.into_iter().collect();
    let manifest = serde_json::to_vec(
        &serde_json::json!([{"Config": config_name, "RepoTags": tags, "Layers": paths}]),
    )
    .unwrap();
    tar.file("manifest.json", &manifest);
    tar.finish()
}

/// An OCI image layout tarball with one image, named by `ref_name` (an `org.opencontainers.image.ref.name`).
pub fn oci_archive(layers: &[Layer], ref_name: Option<&str>) -> Vec<u8> {
    let config = config_json(layers, "sh");
    let (mut tar, index_entry) = oci_image_blobs(layers, &config, None);
    let mut entry = index_entry;
    if let Some(r) = ref_name {
        entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": r});
    }
    finish_oci(&mut tar, vec![entry])
}

/// Writes the blobs of one image into a new tar; returns it and the index entry for its manifest.
pub fn oci_image_blobs(
    layers: &[Layer],
    config: &[u8],
    platform: Option<(&str, &str)>,
) -> (Tar, serde_json::Value) {
    let mut tar = Tar::new();
    let entry = oci_add_image(&mut tar, layers, config, platform);
    (tar, entry)
}

/// Writes the blobs of one image (layers, config, manifest) into `tar`; returns the index entry for its manifest.
pub fn oci_add_image(
    tar: &mut Tar,
    layers: &[Layer],
    config: &[u8],
    platform: Option<(&str, &str)>,
) -> serde_json::Value {
    tar.file(&format!("blobs/sha256/{}", sha256_hex(config)), config);
    let mut layer_descs = Vec::new();
    for l in layers {
        tar.file(&format!("blobs/sha256/{}", sha256_hex(&l.blob)), &l.blob);
        layer_descs.push(serde_json::json!({"mediaType": l.media_type, "digest": format!("sha256:{}", sha256_hex(&l.blob)), "size": l.blob.len()}));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha256_hex(config)), "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    tar.file(
        &format!("blobs/sha256/{}", sha256_hex(&manifest)),
        &manifest,
    );
    let mut entry = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", sha256_hex(&manifest)),
        "size": manifest.len(),
    });
    if let Some((os, arch)) = platform {
        entry["platform"] = serde_json::json!({"os": os, "architecture": arch});
    }
    entry
}

pub fn finish_oci(tar: &mut Tar, manifests: Vec<serde_json::Value>) -> Vec<u8> {
    tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})).unwrap();
    tar.file("index.json", &index);
    tar.finish()
}

/// A store in a fresh temporary directory (kept alive by the returned guard).
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: ImageStore,
}

impl TestStore {
    pub fn new(config: ImageConfig) -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("husk-image-test")
            .tempdir_in(test_tmp())
            .unwrap();
        let store = Self::open_in(&dir.path().join("store"), config);
        TestStore { dir, store }
    }

    pub fn open_in(root: &Path, config: ImageConfig) -> ImageStore {
        std::fs::create_dir_all(root).unwrap();
        let db = Arc::new(husk_store::Store::open(&root.join("husk.db")).unwrap());
        ImageStore::open(root.to_path_buf(), db, config).unwrap()
    }

    pub async fn load(&self, archive: Vec<u8>) -> husk_core::Result<Vec<husk_image::LoadedImage>> {
        self.store
            .load(std::io::Cursor::new(archive), &Default::default())
            .await
    }
}

/// Every path under `root` (except `skip`) with type, size, mode, link count and content hash.
pub fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p == skip {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            sha256_hex(&std::fs::read(&p).unwrap())
        } else {
            String::new()
        };
        let link = std::fs::read_link(&p)
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        out.insert(
            p.clone(),
            format!(
                "{:o} {} {} {} {content} {link}",
                m.mode(),
                m.len(),
                m.nlink(),
                m.uid()
            ),
        );
        if m.is_dir() {
            walk(&p, skip, out);
        }
    }
}

pub fn digest_of(data: &[u8]) -> Digest {
    Digest::of(data)
}

/// `len` incompressible bytes (xorshift), different per `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Runs a repo script; returns its last printed word (an ID or digest).
pub fn script(name: &str, args: &[&Path], extra: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    let out = std::process::Command::new("sh")
        .arg(path)
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string()
}
