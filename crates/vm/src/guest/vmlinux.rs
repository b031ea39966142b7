//! The uncompressed kernel inside a bzImage, for booting without in-guest decompression.
//!
//! A distribution kernel (`vmlinuz`) decompresses itself at boot; under TCG that is emulated and costs seconds
//! (Debian's XZ kernel: ~2.5 s of a ~4.2 s bare boot here). QEMU can instead load the ELF `vmlinux` directly
//! through the PVH entry point when the kernel has one (`CONFIG_PVH`, which Debian enables): the bare boot then
//! took ~1.7 s. So the guest build extracts `vmlinux` once (XZ with liblzma through `xz2`, gzip with `flate2`), checks it is
//! an ELF with the PVH note, and caches it by the bzImage's hash; a kernel without either keeps its bzImage.

use std::io::Read;

/// XZ stream magic.
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
/// gzip member magic (deflate).
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b, 0x08];
/// Xen's ELF note type for the 32-bit PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY).
const PVH_NOTE: u32 = 18;

/// The PVH-bootable ELF kernel inside `bzimage`, or `None` when there is none this code can unpack.
pub fn extract_vmlinux(bzimage: &[u8]) -> Option<Vec<u8>> {
    if bzimage.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    for (magic, unpack) in [
        (XZ_MAGIC, unxz as fn(&[u8]) -> Option<Vec<u8>>),
        (GZIP_MAGIC, gunzip),
    ] {
        let mut from = 0;
        while let Some(pos) = find(&bzimage[from..], magic) {
            let start = from + pos;
            if let Some(elf) = unpack(&bzimage[start..]).filter(|e| has_pvh_note(e)) {
                return Some(elf);
            }
            from = start + 1;
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn unxz(data: &[u8]) -> Option<Vec<u8>> {
    // The kernel's XZ stream uses the x86 BCJ filter before LZMA2, which liblzma (xz2) decodes. The stream is
    // followed by other bytes of the bzImage, so decoding stops at the end of the stream.
    use xz2::stream::{Action, Status, Stream};
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0).ok()?;
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4));
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.len().max(1 << 20));
        }
        let (before_in, before_out) = (stream.total_in(), stream.total_out());
        let rest = data.get(usize::try_from(before_in).ok()?..)?;
        match stream.process_vec(rest, &mut out, Action::Run).ok()? {
            Status::StreamEnd => break,
            _ if stream.total_in() == before_in
                && stream.total_out() == before_out
                && out.len() < out.capacity() =>
            {
                return None; // no progress: truncated stream
            }
            _ => {}
        }
    }
    out.starts_with(b"\x7fELF").then_some(out)
}

fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .ok()?;
    out.starts_with(b"\x7fELF").then_some(out)
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Whether a 64-bit little-endian ELF has Xen's PVH entry note in one of its PT_NOTE segments.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    pvh_note(elf).unwrap_or(false)
}

fn pvh_note(elf: &[u8]) -> Option<bool> {
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return Some(false);
    }
    let phoff = usize::try_from(u64_at(elf, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(elf, 0x36)?);
    let phnum = usize::from(u16_at(elf, 0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(elf, ph)? != 4 {
            continue; // not PT_NOTE
        }
        let off = usize::try_from(u64_at(elf, ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(elf, ph + 0x20)?).ok()?;
        let notes = elf.get(off..off.checked_add(size)?)?;
        let mut p = 0;
        while p + 12 <= notes.len() {
            let namesz = u32_at(notes, p)? as usize;
            let descsz = u32_at(notes, p + 4)? as usize;
            let kind = u32_at(notes, p + 8)?;
            let name = notes.get(p + 12..p + 12 + namesz)?;
            if kind == PVH_NOTE && name == b"Xen\0" {
                return Some(true);
            }
            p += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_NOTE segment holding `note_name` / `note_type`.
    fn elf_with_note(note_name: &[u8], note_type: u32) -> Vec<u8> {
        let mut e = vec![0u8; 0x40 + 0x38];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        e[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes()); // e_phentsize
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let mut note = Vec::new();
        note.extend_from_slice(&(note_name.len() as u32).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&note_type.to_le_bytes());
        note.extend_from_slice(note_name);
        while note.len() % 4 != 0 {
            note.push(0);
        }
        note.extend_from_slice(&0x100_0000u32.to_le_bytes());
        let off = e.len() as u64;
        e[0x40..0x44].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        e[0x48..0x50].copy_from_slice(&off.to_le_bytes());
        e[0x60..0x68].copy_from_slice(&(note.len() as u64).to_le_bytes());
        e.extend_from_slice(&note);
        e
    }

    #[test]
    fn pvh_notes_are_recognised() {
        assert!(has_pvh_note(&elf_with_note(b"Xen\0", 18)));
        assert!(!has_pvh_note(&elf_with_note(b"Xen\0", 17)));
        assert!(!has_pvh_note(&elf_with_note(b"GNU\0", 18)));
        assert!(!has_pvh_note(b"\x7fELF\x02\x01 truncated"));
        assert!(!has_pvh_note(b"not an elf"));
    }

    #[test]
    fn a_gzip_payload_is_found_after_the_setup_code() {
        let elf = elf_with_note(b"Xen\0", 18);
        let mut gz = Vec::new();
        {
            let mut w = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            std::io::Write::write_all(&mut w, &elf).unwrap();
            w.finish().unwrap();
        }
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x300..0x303].copy_from_slice(GZIP_MAGIC); // a false start
        bz.extend_from_slice(&gz);
        bz.extend_from_slice(b"trailing data");
        assert_eq!(extract_vmlinux(&bz), Some(elf));
        assert_eq!(extract_vmlinux(b"not a kernel"), None);
    }

    #[test]
    fn an_xz_payload_followed_by_other_bytes_is_found() {
        let elf = elf_with_note(b"Xen\0", 18);
        let mut xz = Vec::new();
        {
            let mut w = xz2::write::XzEncoder::new(&mut xz, 1);
            std::io::Write::write_all(&mut w, &elf).unwrap();
            w.finish().unwrap();
        }
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz.extend_from_slice(&xz);
        bz.extend_from_slice(&[0xffu8; 64]);
        assert_eq!(extract_vmlinux(&bz), Some(elf.clone()));
        // Truncated: nothing.
        let cut = bz.len() - 64 - xz.len() / 2;
        let mut truncated = bz[..cut].to_vec();
        truncated[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(extract_vmlinux(&truncated), None);
    }
}
