//! Content digests (`sha256:<64 hex>`) and readers/writers that compute them on the way through.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use husk_core::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 content digest. Other algorithms are refused: every blob husk keeps is named by its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// A digest from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<64 hex>`; `what` names the value in the error (for example `layer digest`).
    pub fn parse(text: &str, what: &str) -> Result<Digest> {
        let hex_part = text.strip_prefix("sha256:").ok_or_else(|| {
            Error::bad_request(format!(
                "{what} {text:?} is not a sha256 digest (sha256:<64 hex characters>)"
            ))
        })?;
        Self::from_hex(hex_part).ok_or_else(|| {
            Error::bad_request(format!("{what} {text:?} is not a valid sha256 digest"))
        })
    }

    /// Parses 64 hex characters (no prefix).
    pub fn from_hex(hex_part: &str) -> Option<Digest> {
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s, "digest")
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text, "digest").map_err(serde::de::Error::custom)
    }
}

/// Hashes and counts what passes through to an inner reader or writer.
#[derive(Debug)]
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    count: u64,
}

impl<T> Hashing<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of everything seen, and the count.
    pub fn finish(self) -> (Digest, u64, T) {
        (
            Digest(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }

    /// The inner value.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string(), "x").unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad, "x").is_err(), "{bad}");
        }
        // Uppercase hex is not canonical: refuse it so one blob has one name.
        assert!(
            Digest::from_hex("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")
                .is_none()
        );
        assert!(
            Digest::from_hex("../../../../../../../../../../../../../../../../../../../etc/passwd")
                .is_none()
        );
    }

    #[test]
    fn hashing_reader_counts_and_hashes() {
        let mut r = Hashing::new(&b"hello"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let (d, n, _) = r.finish();
        assert_eq!((d, n), (Digest::of(b"hello"), 5));
    }
}
