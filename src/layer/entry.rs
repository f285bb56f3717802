//! The one entry model: what every source produces and the [`LayerSink`](super::sink::LayerSink)
//! consumes. An entry is the raw bytes of the layer's tar stream before its content, what is known
//! of its header, and its content.
//!
//! The raw bytes are the tar-split's segment for the entry: the previous entry's padding, any
//! PAX/GNU extension records, and the header block, exactly as the stream has them (a tar blob, a
//! composefs splitstream, a store's tar-split) or as a producer built them
//! ([`BuiltEntries`] adds the padding).

use std::fs::File;
use std::io::{BufRead, Read};
use std::path::Path;

use super::shared_bytes::SharedBytes;
use super::tar_header::{BLOCK, EntryKind, TarHeader};

/// What is known of an entry's header.
#[derive(Debug, Clone, Copy)]
pub enum EntryMeta<'a> {
    /// The parsed header: everything the tree needs.
    Header(&'a TarHeader),
    /// Only its name and content size (an entry read back from a tar-split, or built by a producer
    /// for a digest-only sink): enough for the DiffID and the tar-split, not for the tree.
    Recorded {
        /// The entry's name.
        name: &'a [u8],
        /// Its content size.
        size: u64,
    },
}

impl EntryMeta<'_> {
    /// The entry's name.
    pub fn name(&self) -> &[u8] {
        match self {
            EntryMeta::Header(h) => &h.name,
            EntryMeta::Recorded { name, .. } => name,
        }
    }

    /// The size of its content: a regular file's size, 0 for every other kind.
    pub fn content_size(&self) -> u64 {
        match self {
            EntryMeta::Header(h) if h.kind == EntryKind::Regular => h.size,
            EntryMeta::Header(_) => 0,
            EntryMeta::Recorded { size, .. } => *size,
        }
    }
}

/// A buffered stream of entry content ([`Content::Buffered`]).
pub trait ContentRead: BufRead {
    /// The first `n` bytes that [`fill_buf`](BufRead::fill_buf) returned, as bytes that can be
    /// handed on without copying (the caller then consumes them); `None` when the stream cannot
    /// share its buffer, and they are copied.
    fn share(&mut self, n: usize) -> Option<SharedBytes> {
        let _ = n;
        None
    }
}

impl<R: Read> ContentRead for std::io::BufReader<R> {}

impl ContentRead for &[u8] {}

/// Where an entry's content comes from.
pub enum Content<'a> {
    /// No content (directories, links, devices, empty files).
    None,
    /// Content held in memory.
    Bytes(&'a [u8]),
    /// Content read from a stream (a tar stream's entry data, an object stream).
    Stream(&'a mut dyn Read),
    /// Content read from a buffered stream: the sink takes the bytes where the stream holds them
    /// (a decoded layer's chunks), without copying them into a buffer of its own first, and hands
    /// them on to the tree's file thread without copying when the stream can share them.
    Buffered(&'a mut dyn ContentRead),
    /// Content in an existing file. With `linkable`, the file itself has the entry's metadata and
    /// may become the entry (a hardlink); else its bytes are copied.
    Object {
        /// The open file.
        file: File,
        /// Its path (for the link).
        path: &'a Path,
        /// Whether it may be hardlinked into the tree.
        linkable: bool,
    },
}

impl std::fmt::Debug for Content<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::None => f.write_str("None"),
            Content::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Content::Stream(_) => f.write_str("Stream"),
            Content::Buffered(_) => f.write_str("Buffered"),
            Content::Object { path, linkable, .. } => {
                write!(f, "Object({}, linkable: {linkable})", path.display())
            }
        }
    }
}

/// One entry of a layer (its raw bytes and header borrowed for `'a`, its content for `'c`).
#[derive(Debug)]
pub struct Entry<'a, 'c> {
    /// The stream's bytes between the previous entry's content and this one's.
    pub raw: &'a [u8],
    /// What is known of the header.
    pub meta: EntryMeta<'a>,
    /// The content.
    pub content: Content<'c>,
}

/// What consuming an entry gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryDone {
    /// Content bytes.
    pub size: u64,
    /// CRC-64 of the content (as the tar-split records it), if it had any.
    pub crc: Option<[u8; 8]>,
}

/// The padding after `size` bytes of content.
pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Zeros: padding and the end-of-archive blocks.
pub(crate) const ZEROS: [u8; 1024] = [0; 1024];

/// For producers that build their own header bytes (the OSTree layout): adds the previous entry's
/// zero padding before each entry and the end-of-archive blocks at the end, as `tar::Builder` does.
#[derive(Debug, Default)]
pub struct BuiltEntries {
    pad: usize,
    raw: Vec<u8>,
}

impl BuiltEntries {
    /// The raw bytes of an entry whose header bytes are `header`: the padding owed, then `header`.
    /// `content_size` is the entry's content length (the next entry's padding depends on it).
    pub fn raw(&mut self, header: &[u8], content_size: u64) -> &[u8] {
        self.raw.clear();
        self.raw.extend_from_slice(&ZEROS[..self.pad]);
        self.raw.extend_from_slice(header);
        self.pad = padding(content_size);
        &self.raw
    }

    /// The stream's end: the last padding and two zero blocks.
    pub fn trailer(&self) -> Vec<u8> {
        let mut t = ZEROS[..self.pad].to_vec();
        t.extend_from_slice(&ZEROS);
        t
    }
}
