//! Writing an initramfs: a `newc` cpio archive (the format the kernel unpacks), optionally gzip-compressed.
//!
//! The archive is written with the `cpio` crate. Every entry gets uid/gid 0, mtime 0 and inode numbers in
//! insertion order, so the same inputs always give the same bytes.

use std::io::{self, Write};

use cpio::newc::{Builder, ModeFileType};

/// How an initramfs is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Plain cpio. Fastest to boot under TCG, where the guest's own gunzip is emulated and slow.
    #[default]
    None,
    /// gzip (every kernel can read it).
    Gzip,
}

/// One entry of an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir {
        /// Path without a leading `/`.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Path without a leading `/`.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Content.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Path without a leading `/`.
        path: String,
        /// Where it points.
        target: String,
    },
    /// A character device node.
    CharDev {
        /// Path without a leading `/`.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::CharDev { path, .. } => path,
        }
    }
}

/// Writes `entries` as a newc archive with its trailer. Parent directories must come before their children.
pub fn write_cpio<W: Write>(mut out: W, entries: &[Entry]) -> io::Result<W> {
    for (i, entry) in entries.iter().enumerate() {
        let ino =
            u32::try_from(i + 1).map_err(|_| io::Error::other("too many initramfs entries"))?;
        let base = Builder::new(entry.path().trim_start_matches('/'))
            .ino(ino)
            .uid(0)
            .gid(0)
            .mtime(0);
        let (builder, data): (Builder, &[u8]) = match entry {
            Entry::Dir { mode, .. } => (
                base.mode(*mode & 0o7777)
                    .set_mode_file_type(ModeFileType::Directory)
                    .nlink(2),
                &[],
            ),
            Entry::File { mode, data, .. } => (
                base.mode(*mode & 0o7777)
                    .set_mode_file_type(ModeFileType::Regular)
                    .nlink(1),
                data,
            ),
            Entry::Symlink { target, .. } => (
                base.mode(0o777)
                    .set_mode_file_type(ModeFileType::Symlink)
                    .nlink(1),
                target.as_bytes(),
            ),
            Entry::CharDev {
                mode, major, minor, ..
            } => (
                base.mode(*mode & 0o7777)
                    .set_mode_file_type(ModeFileType::Char)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::other(format!("{} is too large for a cpio archive", entry.path()))
        })?;
        let mut writer = builder.write(out, size);
        writer.write_all(data)?;
        out = writer.finish()?;
    }
    cpio::newc::trailer(out)
}

/// Writes `entries` as an initramfs with `compression`.
pub fn write_initramfs<W: Write>(
    out: W,
    entries: &[Entry],
    compression: Compression,
) -> io::Result<()> {
    match compression {
        Compression::None => {
            let mut w = write_cpio(out, entries)?;
            w.flush()
        }
        Compression::Gzip => {
            let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            write_cpio(gz, entries)?.finish()?.flush()
        }
    }
}

/// Adds `Dir` entries for every parent of `path` not yet in `seen`, in order from the root.
pub fn parents(
    path: &str,
    seen: &mut std::collections::BTreeSet<String>,
    entries: &mut Vec<Entry>,
) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for i in 1..parts.len() {
        let dir = parts[..i].join("/");
        if seen.insert(dir.clone()) {
            entries.push(Entry::Dir {
                path: dir,
                mode: 0o755,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Dir {
                path: "dev".into(),
                mode: 0o755,
            },
            Entry::CharDev {
                path: "dev/console".into(),
                mode: 0o600,
                major: 5,
                minor: 1,
            },
            Entry::File {
                path: "init".into(),
                mode: 0o755,
                data: b"#!hello".to_vec(),
            },
            Entry::File {
                path: "odd".into(),
                mode: 0o644,
                data: b"x".to_vec(),
            },
            Entry::Symlink {
                path: "sbin".into(),
                target: "/bin".into(),
            },
        ]
    }

    fn read_all(mut data: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut r = cpio::newc::Reader::new(data).unwrap();
            if r.entry().is_trailer() {
                return out;
            }
            let (name, mode, rdev) = (
                r.entry().name().to_string(),
                r.entry().mode(),
                r.entry().rdev_major(),
            );
            let mut content = Vec::new();
            r.read_to_end(&mut content).unwrap();
            out.push((name, mode, rdev, content));
            data = r.finish().unwrap();
        }
    }

    #[test]
    fn newc_round_trip() {
        let bytes = write_cpio(Vec::new(), &sample()).unwrap();
        assert_eq!(&bytes[..6], b"070701", "newc magic");
        assert_eq!(bytes.len() % 4, 0, "newc pads to 4 bytes");
        let back = read_all(&bytes);
        let names: Vec<&str> = back.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "odd", "sbin"]);
        assert_eq!(back[0].1, 0o040755);
        assert_eq!((back[1].1, back[1].2), (0o020600, 5));
        assert_eq!(
            (back[2].1, back[2].3.as_slice()),
            (0o100755, &b"#!hello"[..])
        );
        assert_eq!((back[4].1, back[4].3.as_slice()), (0o120777, &b"/bin"[..]));
    }

    #[test]
    fn deterministic_and_gzip_decodes_to_the_same_archive() {
        let a = write_cpio(Vec::new(), &sample()).unwrap();
        let b = write_cpio(Vec::new(), &sample()).unwrap();
        assert_eq!(a, b);
        let mut gz = Vec::new();
        write_initramfs(&mut gz, &sample(), Compression::Gzip).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, a);
    }

    #[test]
    fn parents_are_added_once_in_order() {
        let mut seen = Default::default();
        let mut entries = Vec::new();
        parents("lib/modules/6.1/kernel/a.ko", &mut seen, &mut entries);
        parents("lib/modules/6.1/kernel/b.ko", &mut seen, &mut entries);
        let dirs: Vec<&str> = entries.iter().map(|e| e.path()).collect();
        assert_eq!(
            dirs,
            [
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel"
            ]
        );
    }
}
