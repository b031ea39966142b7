//! SPDY/3.1 sessions: the framing and stream multiplexing that kubelet, kubectl and crictl speak for exec,
//! attach and port forwarding once an HTTP connection is upgraded with `Upgrade: SPDY/3.1`.
//!
//! The peer that matters is Go's `github.com/moby/spdystream`, so this speaks its dialect of SPDY/3:
//! - Every frame starts with 8 bytes. A control frame: the control bit, the version (3) in 15 bits, the type in
//!   16 bits; then the flags in 8 bits and the payload length in 24 bits. A DATA frame: a clear bit and the
//!   stream id in 31 bits; then the flags and the length the same way.
//! - SYN_STREAM, SYN_REPLY and HEADERS carry a header block: a 32-bit count, then for each header a 32-bit
//!   length and the name (lower case), a 32-bit length and the value (several values of one name joined by
//!   NUL). The blocks are zlib-compressed with the SPDY/3 dictionary as one deflate stream per direction that
//!   lives as long as the session; each block ends with a sync flush, so a block can only be inflated after
//!   all the blocks before it.
//! - No flow control: spdystream never sends WINDOW_UPDATE and ignores the ones it gets, so we do the same
//!   (our own sends are limited by a bounded write queue instead).
//!
//! A [`Session`] runs two tasks: a reader that parses frames and hands DATA to each stream's buffer, and a
//! writer that owns the write half, so that frames of different streams never interleave and the header
//! blocks are compressed in the order they go on the wire.
//!
//! Why this file is long: one protocol in one file: the framing and the session's stream multiplexing share the
//! compression state and the flow-control windows, and this header explains the dialect; the tests are in
//! `spdy/tests.rs`.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, PollSemaphore};

/// The protocol version in every control frame.
const VERSION: u16 = 3;
/// Frame flag: the sender's last frame on this stream.
const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM flag: the receiver may not send on this stream.
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: the peer broke the protocol on this stream.
const PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream was not accepted.
const REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the stream is no longer wanted.
const CANCEL: u32 = 5;

/// The most payload we put in one DATA frame (spdystream's readers take any size; this keeps streams fair).
const MAX_DATA_PAYLOAD: usize = 16 * 1024;
/// The largest frame payload we read (the 24-bit length field cannot say more anyway).
const MAX_FRAME_LEN: usize = 16 << 20;
/// The largest header block we inflate: stream headers are a few dozen bytes, this only stops zlib bombs.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Stream ids (and ping ids) are 31 bits.
const MAX_ID: u32 = 0x7fff_ffff;
/// Streams the peer opened that the application has not taken yet; more are refused.
const INCOMING_BACKLOG: usize = 64;
/// DATA frames queued for the writer before writes wait (64 × 16 KiB = 1 MiB per session).
const QUEUED_DATA_FRAMES: usize = 64;
/// How many bytes the writer gathers from its queue before one write.
const WRITE_BATCH: usize = 256 * 1024;
/// How long `close` waits for the queued frames and GOAWAY to be written before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

mod frame;
#[cfg(test)]
mod tests;

use frame::*;

// ---------------------------------------------------------------------------------------------------------
// The session

/// A frame on its way to the writer, with the queue slot it holds (DATA only) until it is written.
struct Outgoing {
    frame: Frame,
    slot: Option<OwnedSemaphorePermit>,
}

/// What the reader, the writer and every handle share.
struct Core {
    /// Whether we are the server (the peer opens odd streams) or the client (we do).
    server: bool,
    /// The writer's queue, in wire order.
    queue: mpsc::UnboundedSender<Outgoing>,
    /// Slots for queued DATA frames: writers wait for one, so a slow peer slows them down.
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    /// Cancelled when the connection is over or being shut down: both tasks stop.
    ended: CancellationToken,
    /// Cancelled once the reader has stopped and every stream has seen the end of its data.
    finished: CancellationToken,
}

struct State {
    next_stream: u32,
    next_ping: u32,
    /// The newest stream the peer opened; its next must be newer.
    last_peer_stream: u32,
    streams: HashMap<u32, Entry>,
    pings: HashMap<u32, oneshot::Sender<()>>,
    /// No new streams either way: GOAWAY went out, or the session ended.
    gone: bool,
    goaway_sent: bool,
}

/// The reader's side of one open stream.
struct Entry {
    /// Where the peer's DATA goes; dropped at its FIN, which the stream reads as EOF.
    data: Option<mpsc::UnboundedSender<Bytes>>,
    /// For a stream we opened, until the peer's SYN_REPLY (or RST_STREAM) arrives.
    reply: Option<oneshot::Sender<io::Result<()>>>,
    flags: Arc<StreamFlags>,
}

/// What both the stream handle and the reader know about a stream.
#[derive(Default)]
struct StreamFlags {
    /// SYN_REPLY sent (a stream the peer opened) or received (a stream we opened).
    replied: AtomicBool,
    /// We sent FIN (or may not send at all: a unidirectional stream the peer opened).
    write_closed: AtomicBool,
    /// RST_STREAM went either way.
    reset: AtomicBool,
}

fn session_closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "SPDY session closed")
}

impl Core {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a control frame (or an unthrottled DATA frame, such as an empty FIN).
    fn send(&self, frame: Frame) -> io::Result<()> {
        self.queue
            .send(Outgoing { frame, slot: None })
            .map_err(|_| session_closed())
    }

    /// Queues GOAWAY (once): the writer sends everything queued before it, then shuts the connection down.
    fn go_away(&self) {
        let mut state = self.state();
        if state.goaway_sent {
            return;
        }
        state.goaway_sent = true;
        state.gone = true;
        let last_good = state.last_peer_stream;
        if self
            .send(Frame::GoAway {
                last_good,
                status: 0,
            })
            .is_err()
        {
            self.ended.cancel();
        }
    }

    /// Acts on one frame from the peer; `Break` ends the session with the reason.
    fn dispatch(
        &self,
        frame: Frame,
        handle: &Weak<Handle>,
        incoming: &mpsc::Sender<Stream>,
    ) -> ControlFlow<String> {
        match frame {
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                let mut state = self.state();
                match state.streams.get_mut(&stream) {
                    Some(entry) => {
                        if let (false, Some(to)) = (data.is_empty(), &entry.data) {
                            let _ = to.send(data);
                        }
                        if flags & FLAG_FIN != 0 {
                            entry.data = None;
                        }
                    }
                    None => tracing::trace!("SPDY: DATA for stream {stream}, which is not open"),
                }
            }
            Frame::SynStream {
                stream,
                flags,
                headers,
                ..
            } => self.accept(stream, flags, headers, handle, incoming),
            Frame::SynReply { stream, flags, .. } => {
                let mut state = self.state();
                if let Some(entry) = state.streams.get_mut(&stream) {
                    entry.flags.replied.store(true, Ordering::SeqCst);
                    if let Some(reply) = entry.reply.take() {
                        let _ = reply.send(Ok(()));
                    }
                    if flags & FLAG_FIN != 0 {
                        entry.data = None;
                    }
                }
            }
            Frame::RstStream { stream, status } => {
                let entry = self.state().streams.remove(&stream);
                if let Some(entry) = entry {
                    tracing::debug!("SPDY: the peer reset stream {stream} (status {status})");
                    entry.flags.reset.store(true, Ordering::SeqCst);
                    entry.flags.write_closed.store(true, Ordering::SeqCst);
                    if let Some(reply) = entry.reply {
                        let _ = reply.send(Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            format!("SPDY: the peer reset stream {stream} (status {status})"),
                        )));
                    }
                }
            }
            Frame::Ping { id } => {
                let ours = if self.server { 0 } else { 1 };
                if id & 1 == ours {
                    if let Some(waiter) = self.state().pings.remove(&id) {
                        let _ = waiter.send(());
                    }
                } else if self.send(Frame::Ping { id }).is_err() {
                    return ControlFlow::Break("cannot answer a PING: the writer is gone".into());
                }
            }
            Frame::GoAway { last_good, status } => {
                return ControlFlow::Break(format!(
                    "the peer sent GOAWAY (last stream {last_good}, status {status})"
                ));
            }
            Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Headers { .. }
            | Frame::Unknown { .. } => tracing::trace!("SPDY: ignoring {frame:?}"),
        }
        ControlFlow::Continue(())
    }

    /// A SYN_STREAM from the peer: hands the new stream to the application, or refuses it.
    fn accept(
        &self,
        stream: u32,
        flags: u8,
        headers: HeaderList,
        handle: &Weak<Handle>,
        incoming: &mpsc::Sender<Stream>,
    ) {
        // Upgraded (and dropped) outside the lock: dropping the last handle takes the lock.
        let handle = handle.upgrade();
        let (data, shared) = {
            let mut state = self.state();
            let parity = if self.server { 1 } else { 0 };
            let refusal = if stream & 1 != parity || stream <= state.last_peer_stream {
                Some(PROTOCOL_ERROR)
            } else if state.gone || handle.is_none() {
                Some(REFUSED_STREAM)
            } else {
                None
            };
            if let Some(status) = refusal {
                drop(state);
                tracing::debug!("SPDY: refusing stream {stream} (status {status})");
                let _ = self.send(Frame::RstStream { stream, status });
                return;
            }
            state.last_peer_stream = stream;
            let (to, data) = mpsc::unbounded_channel();
            let shared = Arc::new(StreamFlags::default());
            shared
                .write_closed
                .store(flags & FLAG_UNIDIRECTIONAL != 0, Ordering::SeqCst);
            let entry = Entry {
                data: (flags & FLAG_FIN == 0).then_some(to),
                reply: None,
                flags: shared.clone(),
            };
            state.streams.insert(stream, entry);
            (data, shared)
        };
        let Some(handle) = handle else { return };
        let mut split = Vec::with_capacity(headers.len());
        for (name, values) in headers {
            for value in values.split('\0') {
                split.push((name.clone(), value.to_string()));
            }
        }
        let stream = Stream::new(stream, split, handle, shared, data, true);
        if let Err(e) = incoming.try_send(stream) {
            // Dropping the stream refuses it.
            tracing::debug!(
                "SPDY: refusing stream {}: the application is not taking new streams",
                e.into_inner().id
            );
        }
    }

    /// The connection is over: every stream's reads end, every wait fails.
    fn finish(&self) {
        self.slots.close();
        let (streams, pings) = {
            let mut state = self.state();
            state.gone = true;
            (
                std::mem::take(&mut state.streams),
                std::mem::take(&mut state.pings),
            )
        };
        for (_, entry) in streams {
            if let Some(reply) = entry.reply {
                let _ = reply.send(Err(session_closed()));
            }
        }
        drop(pings);
    }
}

/// Parses the peer's frames until the connection ends, then ends the session.
async fn read_loop<R: AsyncRead + Unpin>(
    io: R,
    core: Arc<Core>,
    handle: Weak<Handle>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut io = BufReader::with_capacity(64 * 1024, io);
    let mut unzip = HeaderDecompressor::new();
    let reason = tokio::select! {
        biased;
        () = core.ended.cancelled() => String::from("closed on our side"),
        reason = async {
            loop {
                match read_frame(&mut io, &mut unzip).await {
                    Ok(Some(frame)) => {
                        if let ControlFlow::Break(reason) = core.dispatch(frame, &handle, &incoming) {
                            return reason;
                        }
                    }
                    Ok(None) => return String::from("the peer closed the connection"),
                    Err(e) => return format!("cannot read: {e}"),
                }
            }
        } => reason,
    };
    tracing::debug!("SPDY session ended: {reason}");
    core.ended.cancel();
    drop(io);
    drop(incoming);
    core.finish();
    core.finished.cancel();
}

/// Writes queued frames in order until GOAWAY, an error, or the end of the session.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    ended: CancellationToken,
) {
    let result = tokio::select! {
        biased;
        () = ended.cancelled() => Ok(()),
        result = write_frames(&mut io, &mut queue) => result,
    };
    if let Err(e) = result {
        tracing::debug!("SPDY session ended: cannot write: {e}");
    }
    ended.cancel();
}

async fn write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    queue: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> io::Result<()> {
    let mut zip = HeaderCompressor::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH + MAX_DATA_PAYLOAD + 64);
    let mut slots = Vec::new();
    while let Some(mut next) = queue.recv().await {
        batch.clear();
        let last = loop {
            next.frame.encode(&mut zip, &mut batch)?;
            slots.extend(next.slot.take());
            if matches!(next.frame, Frame::GoAway { .. }) {
                break true;
            }
            if batch.len() >= WRITE_BATCH {
                break false;
            }
            match queue.try_recv() {
                Ok(more) => next = more,
                Err(_) => break false,
            }
        };
        io.write_all(&batch).await?;
        io.flush().await?;
        slots.clear();
        if last {
            return io.shutdown().await;
        }
    }
    Ok(())
}

/// Keeps the session alive while the application holds it; the last one dropped sends GOAWAY.
struct Handle {
    core: Arc<Core>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.go_away();
    }
}

/// One SPDY/3.1 connection over an upgraded HTTP connection.
///
/// Cheap to clone: every clone (and every [`Stream`]) shares the connection, which stays up until
/// [`Session::close`], the peer ends it, or the last clone and stream are dropped (which sends GOAWAY too).
#[derive(Clone)]
pub struct Session {
    handle: Arc<Handle>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.handle.core;
        f.debug_struct("Session")
            .field("server", &core.server)
            .field("ended", &core.ended.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Server side: the peer (kubectl, crictl, kubelet's client) opens streams, with odd ids. Returns the
    /// session and the streams the peer opens, in order.
    ///
    /// Streams the application leaves untaken beyond a backlog of 64, or that arrive after the receiver is
    /// dropped, are refused (RST_STREAM). Must be called within a Tokio runtime: it spawns the session's
    /// reader and writer tasks.
    pub fn server<T: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
        io: T,
    ) -> (Session, mpsc::Receiver<Stream>) {
        Session::start(io, true)
    }

    /// Client side (husk's own tests and benchmarks): we open streams, with odd ids; the receiver yields
    /// the streams the peer opens (rare). Must be called within a Tokio runtime.
    pub fn client<T: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
        io: T,
    ) -> (Session, mpsc::Receiver<Stream>) {
        Session::start(io, false)
    }

    fn start<T: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
        io: T,
        server: bool,
    ) -> (Session, mpsc::Receiver<Stream>) {
        let (read, write) = tokio::io::split(io);
        let (queue, queued) = mpsc::unbounded_channel();
        let (incoming, streams) = mpsc::channel(INCOMING_BACKLOG);
        let first_id = if server { 2 } else { 1 };
        let core = Arc::new(Core {
            server,
            queue,
            slots: Arc::new(Semaphore::new(QUEUED_DATA_FRAMES)),
            state: Mutex::new(State {
                next_stream: first_id,
                next_ping: first_id,
                last_peer_stream: 0,
                streams: HashMap::new(),
                pings: HashMap::new(),
                gone: false,
                goaway_sent: false,
            }),
            ended: CancellationToken::new(),
            finished: CancellationToken::new(),
        });
        let handle = Arc::new(Handle { core: core.clone() });
        tokio::spawn(write_loop(write, queued, core.ended.clone()));
        tokio::spawn(read_loop(read, core, Arc::downgrade(&handle), incoming));
        (Session { handle }, streams)
    }

    fn core(&self) -> &Core {
        &self.handle.core
    }

    /// Opens a stream with these headers (SYN_STREAM; names are sent in lower case, a repeated name as one
    /// NUL-joined value) and waits for the peer's SYN_REPLY.
    ///
    /// Fails if the peer refuses the stream (RST_STREAM: `ConnectionRefused`) or the session is closed
    /// (`NotConnected`).
    pub async fn open(&self, headers: &[(&str, &str)]) -> io::Result<Stream> {
        let headers: HeaderList = headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
            .collect();
        let (to, data) = mpsc::unbounded_channel();
        let (reply_to, reply) = oneshot::channel();
        let shared = Arc::new(StreamFlags::default());
        let id = {
            let mut state = self.core().state();
            if state.gone {
                return Err(session_closed());
            }
            let id = state.next_stream;
            if id > MAX_ID {
                return Err(io::Error::other(
                    "SPDY: this session has used up its stream ids",
                ));
            }
            state.next_stream += 2;
            let entry = Entry {
                data: Some(to),
                reply: Some(reply_to),
                flags: shared.clone(),
            };
            state.streams.insert(id, entry);
            // Queued under the lock so that ids go out in increasing order, as the peer demands.
            self.core().send(Frame::SynStream {
                stream: id,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: headers.clone(),
            })?;
            id
        };
        // From here on, dropping `stream` (this future cancelled, or the open failing) cleans up.
        let stream = Stream::new(id, headers, self.handle.clone(), shared, data, false);
        match reply.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(session_closed()),
        }
    }

    /// Sends a PING and waits for the peer to echo it; returns the round-trip time.
    pub async fn ping(&self) -> io::Result<Duration> {
        let (to, answer) = oneshot::channel();
        {
            let mut state = self.core().state();
            if self.core().ended.is_cancelled() {
                return Err(session_closed());
            }
            let id = state.next_ping;
            state.next_ping = if id >= MAX_ID - 2 {
                (id & 1) + 2
            } else {
                id + 2
            };
            state.pings.insert(id, to);
            self.core().send(Frame::Ping { id })?;
        }
        let sent = Instant::now();
        answer.await.map_err(|_| session_closed())?;
        Ok(sent.elapsed())
    }

    /// Sends GOAWAY, flushes everything queued before it, and shuts the connection down. Streams' reads
    /// then end (EOF) and their writes fail.
    ///
    /// A peer that does not take the last frames within 30 seconds gets its connection dropped.
    pub async fn close(&self) {
        let core = self.core();
        core.go_away();
        if tokio::time::timeout(CLOSE_TIMEOUT, core.ended.cancelled())
            .await
            .is_err()
        {
            tracing::debug!("SPDY: the peer did not take our last frames in time; dropping it");
            core.ended.cancel();
        }
        core.finished.cancelled().await;
    }

    /// Resolves when the connection has ended (we closed it, the peer closed it or sent GOAWAY, a protocol
    /// or I/O error); by then every stream's reads have ended.
    pub async fn closed(&self) {
        self.core().finished.cancelled().await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Streams

/// One stream of a [`Session`].
///
/// Reads yield the peer's DATA until its FIN (then EOF; also EOF once the stream is reset or the session
/// ends). Writes send DATA frames of at most 16 KiB, waiting while the session's write queue is full;
/// `shutdown()` ([`AsyncWriteExt::shutdown`]) sends an empty DATA frame with FIN (a half-close).
///
/// Dropping a stream half-closes it as `shutdown()` does, or refuses it (RST_STREAM) if it was never
/// replied to.
pub struct Stream {
    id: u32,
    headers: Vec<(String, String)>,
    handle: Arc<Handle>,
    flags: Arc<StreamFlags>,
    /// Whether the peer opened it (so we owe it a SYN_REPLY).
    incoming: bool,
    data: mpsc::UnboundedReceiver<Bytes>,
    /// The rest of the DATA frame a read did not take.
    pending: Bytes,
    slots: PollSemaphore,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .field("incoming", &self.incoming)
            .finish_non_exhaustive()
    }
}

impl Stream {
    fn new(
        id: u32,
        headers: Vec<(String, String)>,
        handle: Arc<Handle>,
        flags: Arc<StreamFlags>,
        data: mpsc::UnboundedReceiver<Bytes>,
        incoming: bool,
    ) -> Stream {
        let slots = PollSemaphore::new(handle.core.slots.clone());
        Stream {
            id,
            headers,
            handle,
            flags,
            incoming,
            data,
            pending: Bytes::new(),
            slots,
        }
    }

    fn core(&self) -> &Core {
        &self.handle.core
    }

    /// The stream's id: odd for streams the client opened, even for the server's.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// A header the peer sent with SYN_STREAM (for a stream we opened: one we sent), the name matched
    /// case-insensitively (`"streamType"` finds `streamtype`). Of several values, the first.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every header of the stream as (lower-case name, value), a name repeated for each of its values.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Server side: accepts the stream (SYN_REPLY with no headers). Call it before writing (a write
    /// replies first if this was not called); calling it again, or on a stream we opened, does nothing.
    pub async fn reply(&self) -> io::Result<()> {
        if self.flags.reset.load(Ordering::SeqCst) {
            return Err(self.reset_error());
        }
        if self.core().ended.is_cancelled() {
            return Err(session_closed());
        }
        self.ensure_replied()
    }

    /// Aborts the stream (RST_STREAM with status CANCEL): reads end, writes fail.
    pub async fn reset(&self) {
        if self.flags.reset.swap(true, Ordering::SeqCst) {
            return;
        }
        self.flags.write_closed.store(true, Ordering::SeqCst);
        let entry = self.core().state().streams.remove(&self.id);
        drop(entry);
        let _ = self.core().send(Frame::RstStream {
            stream: self.id,
            status: CANCEL,
        });
    }

    fn ensure_replied(&self) -> io::Result<()> {
        if self.incoming && !self.flags.replied.swap(true, Ordering::SeqCst) {
            self.core().send(Frame::SynReply {
                stream: self.id,
                flags: 0,
                headers: Vec::new(),
            })?;
        }
        Ok(())
    }

    fn reset_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("SPDY stream {} was reset", self.id),
        )
    }

    /// Whether DATA may still go out on this stream.
    fn writable(&self) -> io::Result<()> {
        if self.flags.reset.load(Ordering::SeqCst) {
            Err(self.reset_error())
        } else if self.core().ended.is_cancelled() {
            Err(session_closed())
        } else if self.flags.write_closed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("SPDY stream {} is closed for writing", self.id),
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.data.poll_recv(cx)) {
                Some(data) => this.pending = data,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.pending.len());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.writable()?;
        this.ensure_replied()?;
        let Some(slot) = ready!(this.slots.poll_acquire(cx)) else {
            return Poll::Ready(Err(session_closed()));
        };
        this.writable()?;
        let n = buf.len().min(MAX_DATA_PAYLOAD);
        let frame = Frame::Data {
            stream: this.id,
            flags: 0,
            data: Bytes::copy_from_slice(&buf[..n]),
        };
        this.core()
            .queue
            .send(Outgoing {
                frame,
                slot: Some(slot),
            })
            .map_err(|_| session_closed())?;
        Poll::Ready(Ok(n))
    }

    /// Frames are queued for the session's writer, which writes them out as soon as it can.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.flags.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Err(this.reset_error()));
        }
        if this.flags.write_closed.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        if this.core().ended.is_cancelled() {
            return Poll::Ready(Err(session_closed()));
        }
        this.ensure_replied()?;
        if !this.flags.write_closed.swap(true, Ordering::SeqCst) {
            this.core().send(Frame::Data {
                stream: this.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })?;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let core = &self.handle.core;
        let entry = core.state().streams.remove(&self.id);
        drop(entry);
        if self.flags.reset.load(Ordering::SeqCst) || core.ended.is_cancelled() {
            return;
        }
        let frame = if !self.flags.replied.load(Ordering::SeqCst) {
            let status = if self.incoming {
                REFUSED_STREAM
            } else {
                CANCEL
            };
            Frame::RstStream {
                stream: self.id,
                status,
            }
        } else if !self.flags.write_closed.swap(true, Ordering::SeqCst) {
            Frame::Data {
                stream: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }
        } else {
            return;
        };
        let _ = core.send(frame);
    }
}
