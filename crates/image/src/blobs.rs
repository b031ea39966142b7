//! The content store: blobs named by their SHA-256 under `blobs/sha256/<hex>`, written through a temporary file
//! and renamed into place only once their digest and size are verified.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use husk_core::{Context as _, Error, Result};

use crate::digest::{Digest, Hashing};

/// Blobs on disk. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

/// A blob written to a temporary file, hashed, not yet in the store.
#[derive(Debug)]
pub struct StagedBlob {
    /// Where it is.
    pub path: PathBuf,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

impl BlobStore {
    /// Blobs under `dir` (`.../blobs/sha256`), temporary files under `tmp` (same filesystem).
    pub fn new(dir: PathBuf, tmp: PathBuf) -> BlobStore {
        BlobStore { dir, tmp }
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The size of a present blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// A new temporary file for a blob being written.
    pub fn temp_file(&self) -> Result<(PathBuf, File)> {
        let path = self
            .tmp
            .join(format!("blob-{:016x}", rand::random::<u64>()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .context(format!("create {}", path.display()))?;
        Ok((path, file))
    }

    /// Copies `reader` into a temporary file, hashing it; fails past `max` bytes.
    pub fn stage(&self, reader: &mut dyn Read, max: u64, what: &str) -> Result<StagedBlob> {
        let (path, file) = self.temp_file()?;
        let guard = RemoveOnDrop(Some(path.clone()));
        let mut out = Hashing::new(io::BufWriter::with_capacity(256 << 10, file));
        let copied = io::copy(&mut reader.take(max.saturating_add(1)), &mut out)
            .map_err(|e| Error::io(format!("read {what}"), e))?;
        if copied > max {
            return Err(Error::new(
                husk_core::ErrorKind::LimitExceeded,
                format!("{what} is larger than the limit of {max} bytes"),
            ));
        }
        out.flush().context(format!("write {}", path.display()))?;
        let (digest, size, _) = out.finish();
        guard.keep();
        Ok(StagedBlob { path, digest, size })
    }

    /// Moves a staged blob into the store after checking it is `expected` (digest and, if given, size).
    pub fn commit(
        &self,
        staged: StagedBlob,
        expected: &Digest,
        expected_size: Option<u64>,
        what: &str,
    ) -> Result<PathBuf> {
        let guard = RemoveOnDrop(Some(staged.path.clone()));
        verify(&staged, expected, expected_size, what)?;
        let dest = self.path(expected);
        fs::rename(&staged.path, &dest).context(format!("move {what} into {}", dest.display()))?;
        guard.keep();
        Ok(dest)
    }

    /// Writes `data` as a blob (after checking it has digest `expected`).
    pub fn put_bytes(&self, data: &[u8], expected: &Digest, what: &str) -> Result<PathBuf> {
        if self.contains(expected) {
            return Ok(self.path(expected));
        }
        let staged = self.stage(&mut &data[..], data.len() as u64, what)?;
        self.commit(staged, expected, Some(data.len() as u64), what)
    }

    /// Reads a whole blob of at most `max` bytes.
    pub fn read(&self, digest: &Digest, max: u64) -> Result<Vec<u8>> {
        let path = self.path(digest);
        let mut out = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(max + 1).read_to_end(&mut out))
            .map_err(|e| Error::io(format!("read blob {digest}"), e))?;
        if out.len() as u64 > max {
            return Err(Error::new(
                husk_core::ErrorKind::LimitExceeded,
                format!("blob {digest} is larger than {max} bytes"),
            ));
        }
        if Digest::of(&out) != *digest {
            return Err(Error::internal(format!(
                "blob {digest} in {} does not match its digest: the store is damaged",
                path.display()
            )));
        }
        Ok(out)
    }

    /// Removes a blob; absent is fine.
    pub fn remove(&self, digest: &Digest) -> Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove blob {digest}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Every blob present, with its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).context(format!("list {}", self.dir.display()))? {
            let entry = entry.context(format!("list {}", self.dir.display()))?;
            if let Some(d) = entry.file_name().to_str().and_then(Digest::from_hex) {
                out.push((d, entry.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
        Ok(out)
    }
}

/// Checks a staged blob against what it should be.
pub fn verify(
    staged: &StagedBlob,
    expected: &Digest,
    expected_size: Option<u64>,
    what: &str,
) -> Result<()> {
    if let Some(size) = expected_size
        && size != staged.size
    {
        return Err(Error::bad_request(format!(
            "{what} {expected} has {} bytes, expected {size}: it is corrupt or truncated",
            staged.size
        )));
    }
    if staged.digest != *expected {
        return Err(Error::bad_request(format!(
            "{what} {expected} does not match its digest (the content hashes to {})",
            staged.digest
        )));
    }
    Ok(())
}

/// Removes a path when dropped, unless kept.
#[derive(Debug)]
pub struct RemoveOnDrop(pub Option<PathBuf>);

impl RemoveOnDrop {
    /// Keeps the path.
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove_any(&p);
        }
    }
}

/// Removes a file or a directory tree; errors are logged (cleanup must not hide the first error).
pub fn remove_any(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cleanup failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b")).unwrap();
        fs::create_dir_all(dir.path().join("t")).unwrap();
        let s = BlobStore::new(dir.path().join("b"), dir.path().join("t"));
        (dir, s)
    }

    #[test]
    fn verified_write_and_refusals() {
        let (dir, s) = store();
        let d = Digest::of(b"data");
        s.put_bytes(b"data", &d, "blob").unwrap();
        assert!(s.contains(&d));
        assert_eq!(s.read(&d, 100).unwrap(), b"data");
        let wrong = Digest::of(b"other");
        let e = s.put_bytes(b"data", &wrong, "layer").unwrap_err();
        assert!(e.message.contains("does not match"), "{}", e.message);
        assert!(!s.contains(&wrong));
        let staged = s.stage(&mut &b"data"[..], 100, "blob").unwrap();
        let e = s.commit(staged, &d, Some(5), "layer").unwrap_err();
        assert!(
            e.message.contains("has 4 bytes, expected 5"),
            "{}",
            e.message
        );
        let e = s.stage(&mut &b"data"[..], 3, "blob").unwrap_err();
        assert_eq!(e.kind, husk_core::ErrorKind::LimitExceeded);
        assert_eq!(
            fs::read_dir(dir.path().join("t")).unwrap().count(),
            0,
            "temporary files are removed"
        );
        assert_eq!(s.list().unwrap(), vec![(d, 4)]);
    }
}
