//! A streaming tar reader that hands out every raw byte it consumes.
//!
//! The reader yields [`Event`]s: each entry comes with the raw bytes that preceded its data (the previous
//! entry's padding, any PAX/GNU extension headers and the header block itself), exactly what tar-split
//! stores as a segment. Entry data is then read with [`TarStream::read_data`]. At the end the trailing
//! bytes (end-of-archive blocks and any record padding) come as raw chunks too.

use std::io::{BufRead, Read};

use super::entry::{Content, ContentRead, Entry, EntryMeta};
use super::shared_bytes::SharedBytes;
use super::sink::LayerSink;
use super::tar_header::{BLOCK, EntryKind, Extensions, RawHeader, TarHeader, parse_pax, resolve};
use crate::error::{Error, Result};

/// Largest PAX or GNU extension header we accept.
const MAX_EXTENSION: u64 = 1 << 20;
/// Chunk size of the trailing bytes after the end-of-archive marker.
const TRAILER_CHUNK: usize = 1 << 20;

/// What the stream produced next.
#[derive(Debug)]
pub enum Event {
    /// An entry: the raw bytes before its data, and its parsed header. Its data follows.
    Entry {
        /// Raw bytes (padding of the previous entry, extension headers, header block).
        raw: Vec<u8>,
        /// The parsed header.
        header: TarHeader,
    },
    /// Raw bytes after the last entry (padding, end-of-archive blocks, record padding).
    Trailer(Vec<u8>),
    /// The stream is exhausted.
    End,
}

/// Reads a tar stream entry by entry.
#[derive(Debug)]
pub struct TarStream<R> {
    inner: R,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding bytes after the current entry's data.
    padding: usize,
    /// Whether the end-of-archive marker was seen.
    finished: bool,
    /// Whether the stream is exhausted.
    exhausted: bool,
}

fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(e)),
        }
    }
    Ok(done)
}

impl<R: Read> TarStream<R> {
    /// Wraps a reader of uncompressed tar bytes.
    pub fn new(inner: R) -> Self {
        TarStream {
            inner,
            remaining: 0,
            padding: 0,
            finished: false,
            exhausted: false,
        }
    }

    fn read_block(&mut self, raw: &mut Vec<u8>) -> Result<Option<[u8; BLOCK]>> {
        let mut block = [0u8; BLOCK];
        let n = read_exact_or_eof(&mut self.inner, &mut block)?;
        raw.extend_from_slice(&block[..n]);
        match n {
            0 => Ok(None),
            BLOCK => Ok(Some(block)),
            _ => Err(Error::truncated("tar header")),
        }
    }

    fn read_extension(&mut self, size: i64, raw: &mut Vec<u8>) -> Result<Vec<u8>> {
        let size = u64::try_from(size).map_err(|_| Error::malformed_tar("negative size"))?;
        if size > MAX_EXTENSION {
            return Err(Error::malformed_tar("extension header larger than 1 MiB"));
        }
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let start = raw.len();
        raw.resize(start + padded as usize, 0);
        let n = read_exact_or_eof(&mut self.inner, &mut raw[start..])?;
        if n as u64 != padded {
            raw.truncate(start + n);
            return Err(Error::truncated("tar extension header"));
        }
        Ok(raw[start..start + size as usize].to_vec())
    }

    /// Advances to the next entry, skipping any unread data of the current one.
    pub fn next_event(&mut self) -> Result<Event> {
        if self.exhausted {
            return Ok(Event::End);
        }
        if self.finished {
            let mut chunk = vec![0u8; TRAILER_CHUNK];
            let n = read_exact_or_eof(&mut self.inner, &mut chunk)?;
            if n == 0 {
                self.exhausted = true;
                return Ok(Event::End);
            }
            chunk.truncate(n);
            return Ok(Event::Trailer(chunk));
        }
        if self.remaining > 0 {
            return Err(Error::Internal("entry data not consumed".into()));
        }
        let mut raw = vec![0u8; self.padding];
        if self.padding > 0 {
            let n = read_exact_or_eof(&mut self.inner, &mut raw)?;
            self.padding = 0;
            if n != raw.len() {
                // The stream ends inside the last entry's padding: Go's reader (and so skopeo)
                // takes this as the end of the archive; the DiffID still covers every byte.
                raw.truncate(n);
                self.finished = true;
                self.exhausted = true;
                return Ok(if raw.is_empty() {
                    Event::End
                } else {
                    Event::Trailer(raw)
                });
            }
        }
        let mut ext = Extensions::default();
        loop {
            let Some(block) = self.read_block(&mut raw)? else {
                // EOF at an entry boundary without end-of-archive blocks: Go accepts this.
                self.finished = true;
                return Ok(if raw.is_empty() {
                    self.next_event()?
                } else {
                    Event::Trailer(raw)
                });
            };
            if block.iter().all(|&b| b == 0) {
                match self.read_block(&mut raw)? {
                    Some(second) if second.iter().all(|&b| b == 0) => {}
                    Some(_) => return Err(Error::malformed_tar("zero block followed by data")),
                    None => {}
                }
                self.finished = true;
                return Ok(Event::Trailer(raw));
            }
            let header = RawHeader::parse(&block)?;
            match header.typeflag {
                b'x' => {
                    let data = self.read_extension(header.size, &mut raw)?;
                    // As Go's reader: a later extended header replaces an earlier one.
                    ext.pax = parse_pax(&data)?;
                }
                b'L' => {
                    let data = self.read_extension(header.size, &mut raw)?;
                    ext.long_name = Some(trim_nul(data));
                }
                b'K' => {
                    let data = self.read_extension(header.size, &mut raw)?;
                    ext.long_link = Some(trim_nul(data));
                }
                b'g' => {
                    // A global header is reported as an entry of its own with no data.
                    // It applies to no other entry (c/storage ignores it), but Go reports its
                    // `path` record as its name, which tar-split then records.
                    let data = self.read_extension(header.size, &mut raw)?;
                    let records = parse_pax(&data)?;
                    let mut h = resolve(header, Extensions::default())?;
                    if let Some((_, path)) = records
                        .into_iter()
                        .find(|(k, v)| k.as_slice() == b"path" && !v.is_empty())
                    {
                        h.name = path;
                    }
                    h.size = 0;
                    h.kind = EntryKind::GlobalHeader;
                    h.xattrs.clear();
                    return Ok(Event::Entry { raw, header: h });
                }
                _ => {
                    let header = resolve(header, ext)?;
                    let data = if header.kind.header_only() {
                        0
                    } else {
                        header.size
                    };
                    if header.kind.header_only()
                        && header.size != 0
                        && header.kind != EntryKind::HardLink
                    {
                        return Err(Error::malformed_tar(format!(
                            "{} has a size but its type carries no data",
                            String::from_utf8_lossy(&header.name)
                        )));
                    }
                    self.remaining = data;
                    self.padding = ((BLOCK as u64 - data % BLOCK as u64) % BLOCK as u64) as usize;
                    return Ok(Event::Entry { raw, header });
                }
            }
        }
    }

    /// Reads data of the current entry; returns 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(stream_error(e)),
            }
        };
        if n == 0 {
            return Err(Error::truncated("tar entry data"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// The inner reader.
    pub(crate) fn inner_ref(&self) -> &R {
        &self.inner
    }

    /// The inner reader, to take the current entry's data from it directly.
    pub(crate) fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The current entry's data as a reader.
    pub(crate) fn entry_data(&mut self) -> EntryData<'_, R> {
        EntryData(self)
    }

    /// Data bytes of the current entry not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The current entry's data was supplied apart from the stream (a composefs splitstream keeps
    /// a large file as an external object in its place): the stream goes on after it, with its
    /// padding.
    pub(crate) fn data_supplied_apart(&mut self) {
        self.remaining = 0;
    }
}

/// A read error of the (decompressed) layer stream; an early end of a compressed stream is a truncation.
fn stream_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::truncated("compressed layer stream")
    } else {
        Error::read("layer stream", e)
    }
}

/// A GNU long name or link: up to its first NUL, as Go's `parseString`.
fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(n) = v.iter().position(|&b| b == 0) {
        v.truncate(n);
    }
    v
}

/// The current entry's data as a reader (our errors travel inside the `io::Error`).
#[derive(Debug)]
pub(crate) struct EntryData<'s, R>(&'s mut TarStream<R>);

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_data(buf).map_err(std::io::Error::other)
    }
}

/// Over a buffered stream, the entry's data is read in place: [`fill_buf`](BufRead::fill_buf)
/// gives the stream's buffered bytes up to the entry's end.
impl<R: BufRead> BufRead for EntryData<'_, R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let remaining = self.0.remaining;
        if remaining == 0 {
            return Ok(&[]);
        }
        let avail = self
            .0
            .inner
            .fill_buf()
            .map_err(|e| std::io::Error::other(stream_error(e)))?;
        if avail.is_empty() {
            return Err(std::io::Error::other(Error::truncated("tar entry data")));
        }
        let n = avail
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        Ok(&avail[..n])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(usize::try_from(self.0.remaining).unwrap_or(usize::MAX));
        self.0.inner.consume(n);
        self.0.remaining -= n as u64;
    }
}

impl<R: ContentRead> ContentRead for EntryData<'_, R> {
    fn share(&mut self, n: usize) -> Option<SharedBytes> {
        let n = n.min(usize::try_from(self.0.remaining).unwrap_or(usize::MAX));
        self.0.inner.share(n)
    }
}

/// A tar stream as a producer of entries: feeds every entry of `input` into `sink`, then the
/// trailer; `progress` gets the stream's bytes consumed so far after each entry. Entry data is
/// handed to the sink in `input`'s own buffer ([`Content::Buffered`]).
pub fn feed_tar<R: ContentRead>(
    input: R,
    sink: &mut LayerSink<'_>,
    mut progress: impl FnMut(u64),
) -> Result<()> {
    let mut stream = TarStream::new(input);
    loop {
        match stream.next_event()? {
            Event::End => return Ok(()),
            Event::Trailer(raw) => sink.trailer(&raw)?,
            Event::Entry { raw, header } => {
                let mut data = stream.entry_data();
                sink.entry(Entry {
                    raw: &raw,
                    meta: EntryMeta::Header(&header),
                    content: Content::Buffered(&mut data),
                })?;
                // Data the sink did not read (none, unless it failed) is an error of the stream.
                if stream.remaining != 0 {
                    return Err(Error::truncated("tar entry data"));
                }
                progress(sink.size());
            }
        }
    }
}

/// Parses the header of raw entry bytes a producer built itself.
pub fn parse_built_header(raw: &[u8]) -> Result<TarHeader> {
    match TarStream::new(raw).next_event()? {
        Event::Entry { header, .. } => Ok(header),
        _ => Err(Error::Internal("a built tar header did not parse".into())),
    }
}
