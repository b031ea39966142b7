//! SPDY/3 frames on the wire and their header blocks (zlib with the SPDY/3 dictionary, one stream per
//! direction).

use super::*;

// ---------------------------------------------------------------------------------------------------------
// Frames

/// A header block as sent: names in lower case, several values of one name joined with NUL in one value.
pub(super) type HeaderList = Vec<(String, String)>;

/// One SPDY/3 frame, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    Data {
        stream: u32,
        flags: u8,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: HeaderList,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: HeaderList,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    /// Settings as (flags, id, value); read and ignored.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
        headers: HeaderList,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame type SPDY/3 does not define (CREDENTIAL, or something newer): skipped.
    Unknown {
        kind: u16,
        flags: u8,
    },
}

impl Frame {
    /// Appends this frame's bytes to `out`; header blocks go through the session's compressor, so frames
    /// must be encoded in the order they are sent.
    pub(super) fn encode(&self, zip: &mut HeaderCompressor, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                out.extend_from_slice(&(stream & MAX_ID).to_be_bytes());
                out.extend_from_slice(&flags_and_length(*flags, data.len())?.to_be_bytes());
                out.extend_from_slice(data);
                Ok(())
            }
            Frame::SynStream {
                stream,
                associated,
                priority,
                flags,
                headers,
            } => control(out, SYN_STREAM, *flags, |out| {
                out.extend_from_slice(&(stream & MAX_ID).to_be_bytes());
                out.extend_from_slice(&(associated & MAX_ID).to_be_bytes());
                out.push((priority & 0x07) << 5);
                out.push(0); // credential slot
                zip.compress(headers, out)
            }),
            Frame::SynReply {
                stream,
                flags,
                headers,
            } => control(out, SYN_REPLY, *flags, |out| {
                out.extend_from_slice(&(stream & MAX_ID).to_be_bytes());
                zip.compress(headers, out)
            }),
            Frame::Headers {
                stream,
                flags,
                headers,
            } => control(out, HEADERS, *flags, |out| {
                out.extend_from_slice(&(stream & MAX_ID).to_be_bytes());
                zip.compress(headers, out)
            }),
            Frame::RstStream { stream, status } => control(out, RST_STREAM, 0, |out| {
                out.extend_from_slice(&(stream & MAX_ID).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
                Ok(())
            }),
            Frame::Settings { flags, entries } => control(out, SETTINGS, *flags, |out| {
                out.extend_from_slice(&length32(entries.len())?.to_be_bytes());
                for (flags, id, value) in entries {
                    let word = u32::from(*flags) << 24 | (id & 0x00ff_ffff);
                    out.extend_from_slice(&word.to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
                Ok(())
            }),
            Frame::Ping { id } => control(out, PING, 0, |out| {
                out.extend_from_slice(&id.to_be_bytes());
                Ok(())
            }),
            Frame::GoAway { last_good, status } => control(out, GOAWAY, 0, |out| {
                out.extend_from_slice(&(last_good & MAX_ID).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
                Ok(())
            }),
            Frame::WindowUpdate { stream, delta } => control(out, WINDOW_UPDATE, 0, |out| {
                out.extend_from_slice(&(stream & MAX_ID).to_be_bytes());
                out.extend_from_slice(&(delta & MAX_ID).to_be_bytes());
                Ok(())
            }),
            Frame::Unknown { kind, .. } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("SPDY: cannot send a control frame of unknown type {kind}"),
            )),
        }
    }

    /// Unpacks one frame from its 8-byte head and its payload (exactly the length the head gives); header
    /// blocks go through the session's decompressor, so frames must be decoded in the order they came.
    pub(super) fn decode(
        head: [u8; 8],
        payload: Bytes,
        unzip: &mut HeaderDecompressor,
    ) -> io::Result<Frame> {
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        if first & 0x8000_0000 == 0 {
            let stream = first & MAX_ID;
            if stream == 0 {
                return Err(protocol_error("DATA frame on stream 0".into()));
            }
            return Ok(Frame::Data {
                stream,
                flags,
                data: payload,
            });
        }
        let version = (first >> 16) & 0x7fff;
        let kind = (first & 0xffff) as u16;
        if version != u32::from(VERSION) {
            return Err(protocol_error(format!(
                "control frame of SPDY version {version} (want {VERSION})"
            )));
        }
        let mut body = Cursor(&payload);
        let frame = match kind {
            SYN_STREAM => {
                let stream = body.stream_id()?;
                let associated = body.u32()? & MAX_ID;
                let priority = body.u8()? >> 5;
                let _slot = body.u8()?;
                Frame::SynStream {
                    stream,
                    associated,
                    priority,
                    flags,
                    headers: unzip.decompress(body.0)?,
                }
            }
            SYN_REPLY => {
                let stream = body.stream_id()?;
                Frame::SynReply {
                    stream,
                    flags,
                    headers: unzip.decompress(body.0)?,
                }
            }
            HEADERS => {
                let stream = body.stream_id()?;
                Frame::Headers {
                    stream,
                    flags,
                    headers: unzip.decompress(body.0)?,
                }
            }
            RST_STREAM => {
                body.exactly(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream: body.stream_id()?,
                    status: body.u32()?,
                }
            }
            SETTINGS => {
                let count = body.u32()? as usize;
                if count > body.0.len() / 8 {
                    return Err(protocol_error(format!(
                        "SETTINGS frame of {} bytes claims {count} settings",
                        payload.len()
                    )));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let word = body.u32()?;
                    entries.push(((word >> 24) as u8, word & 0x00ff_ffff, body.u32()?));
                }
                Frame::Settings { flags, entries }
            }
            PING => {
                body.exactly(4, "PING")?;
                Frame::Ping { id: body.u32()? }
            }
            GOAWAY => {
                body.exactly(8, "GOAWAY")?;
                Frame::GoAway {
                    last_good: body.u32()? & MAX_ID,
                    status: body.u32()?,
                }
            }
            WINDOW_UPDATE => {
                body.exactly(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream: body.u32()? & MAX_ID,
                    delta: body.u32()? & MAX_ID,
                }
            }
            kind => Frame::Unknown { kind, flags },
        };
        Ok(frame)
    }
}

/// Appends a control frame: its head, then the payload `body` writes, then fills in the length.
pub(super) fn control(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u8,
    body: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    body(out)?;
    let word = flags_and_length(flags, out.len() - start - 8)?;
    out[start + 4..start + 8].copy_from_slice(&word.to_be_bytes());
    Ok(())
}

/// The second word of every frame head: 8 bits of flags, 24 bits of payload length.
pub(super) fn flags_and_length(flags: u8, length: usize) -> io::Result<u32> {
    match u32::try_from(length) {
        Ok(length) if length <= 0x00ff_ffff => Ok(u32::from(flags) << 24 | length),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("SPDY: a frame payload of {length} bytes does not fit its 24-bit length"),
        )),
    }
}

pub(super) fn length32(length: usize) -> io::Result<u32> {
    u32::try_from(length).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("SPDY: {length} does not fit 32 bits"),
        )
    })
}

pub(super) fn protocol_error(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("SPDY protocol error: {what}"),
    )
}

/// Reads big-endian fields off a frame payload, failing (never panicking) when it ends early.
pub(super) struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(protocol_error(format!(
                "frame ends early: {n} bytes wanted, {} left",
                self.0.len()
            )));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    pub(super) fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 31-bit stream id that may not be 0.
    pub(super) fn stream_id(&mut self) -> io::Result<u32> {
        match self.u32()? & MAX_ID {
            0 => Err(protocol_error("control frame for stream 0".into())),
            id => Ok(id),
        }
    }

    pub(super) fn exactly(&self, n: usize, what: &str) -> io::Result<()> {
        if self.0.len() == n {
            Ok(())
        } else {
            Err(protocol_error(format!(
                "{what} frame of {} bytes (want {n})",
                self.0.len()
            )))
        }
    }
}

/// Reads one frame; `None` when the connection ends cleanly between frames.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    unzip: &mut HeaderDecompressor,
) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    let first = io.read(&mut head).await?;
    if first == 0 {
        return Ok(None);
    }
    io.read_exact(&mut head[first..]).await?;
    let length = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
    if length > MAX_FRAME_LEN {
        return Err(protocol_error(format!("frame of {length} bytes")));
    }
    let mut payload = BytesMut::zeroed(length);
    io.read_exact(&mut payload).await?;
    Frame::decode(head, payload.freeze(), unzip).map(Some)
}

// ---------------------------------------------------------------------------------------------------------
// Header blocks

/// The zlib dictionary SPDY/3 primes header compression with (from the SPDY/3 specification).
pub(super) const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\
    \x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\
    \x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\
    \x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\
    \x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\
    \x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\
    \x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\
    \x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\
    \x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\
    \x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\
    \x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\
    \x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\
    \x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\
    \x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\
    \x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\
    \x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\
    \x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\
    \x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\
    \x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin\
    100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Au\
    thoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidd\
    en404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr Ma\
    y Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,imag\
    e/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicpri\
    vatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// Compresses the header blocks one direction of a session sends, as one zlib stream.
pub(super) struct HeaderCompressor {
    zlib: Compress,
    primed: bool,
    raw: Vec<u8>,
}

impl HeaderCompressor {
    pub(super) fn new() -> Self {
        HeaderCompressor {
            zlib: Compress::new(Compression::default(), true),
            primed: false,
            raw: Vec::new(),
        }
    }

    /// Appends `headers` as a compressed header block ending with a sync flush.
    pub(super) fn compress(
        &mut self,
        headers: &[(String, String)],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        if !self.primed {
            self.zlib
                .set_dictionary(DICTIONARY)
                .map_err(|e| io::Error::other(format!("SPDY: cannot prime zlib: {e}")))?;
            self.primed = true;
        }
        self.raw.clear();
        write_header_block(headers, &mut self.raw)?;
        let start = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            out.reserve(self.raw.len() - consumed + 64);
            self.zlib
                .compress_vec(&self.raw[consumed..], out, FlushCompress::Sync)
                .map_err(|e| io::Error::other(format!("SPDY: cannot compress headers: {e}")))?;
            // The flush is complete once all input is taken and zlib stopped with output room to spare.
            if (self.zlib.total_in() - start) as usize == self.raw.len()
                && out.len() < out.capacity()
            {
                return Ok(());
            }
        }
    }
}

/// Inflates the header blocks one direction of a session receives, as one zlib stream.
pub(super) struct HeaderDecompressor {
    zlib: Decompress,
    raw: Vec<u8>,
}

impl HeaderDecompressor {
    pub(super) fn new() -> Self {
        HeaderDecompressor {
            zlib: Decompress::new(true),
            raw: Vec::new(),
        }
    }

    /// Inflates one compressed header block (all of it: a block ends on a sync flush) and parses it.
    pub(super) fn decompress(&mut self, block: &[u8]) -> io::Result<HeaderList> {
        self.raw.clear();
        let start = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            if self.raw.len() == self.raw.capacity() {
                if self.raw.len() >= MAX_HEADER_BLOCK {
                    return Err(protocol_error("header block inflates past 1 MiB".into()));
                }
                self.raw
                    .reserve((block.len() * 4).clamp(256, MAX_HEADER_BLOCK));
            }
            let produced = self.raw.len();
            match self
                .zlib
                .decompress_vec(&block[consumed..], &mut self.raw, FlushDecompress::Sync)
            {
                Ok(_) => {}
                // The first block names the dictionary (by its Adler-32) in the zlib header.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib.set_dictionary(DICTIONARY).map_err(|e| {
                        protocol_error(format!("header compression uses another dictionary: {e}"))
                    })?;
                    continue;
                }
                Err(e) => {
                    return Err(protocol_error(format!(
                        "header block does not inflate: {e}"
                    )));
                }
            }
            let now = (self.zlib.total_in() - start) as usize;
            let room = self.raw.len() < self.raw.capacity();
            if now == block.len() && room {
                break;
            }
            if now == consumed && self.raw.len() == produced && room {
                return Err(protocol_error(
                    "header block has bytes past its zlib stream".into(),
                ));
            }
        }
        read_header_block(&self.raw)
    }
}

/// Serializes a header block: names in lower case, repeated names merged into one NUL-joined value
/// (spdystream rejects a block that names a header twice).
pub(super) fn write_header_block(
    headers: &[(String, String)],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(known, _)| *known == name) {
            Some((_, values)) => {
                values.push('\0');
                values.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    out.extend_from_slice(&length32(merged.len())?.to_be_bytes());
    for (name, value) in &merged {
        out.extend_from_slice(&length32(name.len())?.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&length32(value.len())?.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    Ok(())
}

/// Parses an inflated header block; names are lower-cased (spdystream sends them so already).
pub(super) fn read_header_block(raw: &[u8]) -> io::Result<HeaderList> {
    let mut block = Cursor(raw);
    let count = block.u32()? as usize;
    if count > block.0.len() / 8 {
        return Err(protocol_error(format!(
            "header block of {} bytes claims {count} headers",
            raw.len()
        )));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let length = block.u32()? as usize;
        let name = String::from_utf8_lossy(block.take(length)?).to_ascii_lowercase();
        let length = block.u32()? as usize;
        let value = String::from_utf8_lossy(block.take(length)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}
