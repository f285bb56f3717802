//! Layers synthesized entry by entry (not read from a tar blob): each entry is its raw tar header bytes
//! plus where its content is. A sink turns the entries into the tar stream's DiffID only (first pass), or
//! into the layer's tree and tar-split (second pass), where content that already exists as a file with
//! the right metadata — an OSTree bare-repo object — is hardlinked instead of written.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use storage_format::{Crc64, Digest, TarSplitWriter};

use super::sink::{LayerSummary, record_owner};
use super::tar_header::{BLOCK, EntryKind, TarHeader};
use super::tar_stream::{Event, TarStream};
use super::tree_writer::{Linked, TreeWriter};
use crate::error::{Error, Result};

/// Where an entry's data comes from.
pub enum Content<'a> {
    /// The entry has no data.
    None,
    /// Data held in memory.
    Bytes(&'a [u8]),
    /// Data in a file. With `linkable`, the file itself has the entry's metadata and may become the
    /// entry (a hardlink), else its bytes are copied.
    File {
        /// The file.
        path: &'a Path,
        /// Its size, as the header says.
        size: u64,
        /// Whether it may be hardlinked into the tree.
        linkable: bool,
    },
    /// Data read from a stream.
    Stream(Box<dyn Read + 'a>),
}

impl std::fmt::Debug for Content<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::None => f.write_str("None"),
            Content::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Content::File {
                path,
                size,
                linkable,
            } => write!(f, "File({}, {size}, {linkable})", path.display()),
            Content::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Receives a synthesized layer's entries.
pub trait EntrySink {
    /// One entry: its raw header bytes (extension headers included) and its data.
    fn entry(&mut self, raw: &[u8], content: Content<'_>) -> Result<()>;
}

fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

const ZEROS: [u8; 1024] = [0; 1024];

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::io("reading", path, e)
}

/// First pass: the DiffID and size of the tar stream the entries make.
#[derive(Debug, Default)]
pub struct DigestSink {
    sha: Sha256,
    size: u64,
    pad: usize,
}

impl DigestSink {
    fn update(&mut self, b: &[u8]) {
        self.sha.update(b);
        self.size += b.len() as u64;
    }

    /// Ends the stream (padding and the two zero blocks, as `tar::Builder::finish` writes) and returns
    /// its digest and length.
    pub fn finish(mut self) -> (Digest, u64) {
        let pad = self.pad;
        self.update(&ZEROS[..pad]);
        self.update(&ZEROS);
        (Digest::from_sha256(self.sha.finalize().into()), self.size)
    }
}

impl EntrySink for DigestSink {
    fn entry(&mut self, raw: &[u8], content: Content<'_>) -> Result<()> {
        let pad = self.pad;
        self.update(&ZEROS[..pad]);
        self.update(raw);
        let mut buf = vec![0u8; 128 * 1024];
        let size = match content {
            Content::None => 0,
            Content::Bytes(b) => {
                self.update(b);
                b.len() as u64
            }
            Content::File { path, size, .. } => {
                let mut f = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
                let got = copy_hashing(&mut f, size, &mut buf, |c| self.update(c))
                    .map_err(|e| read_error(path, e))?;
                if got != size {
                    return Err(Error::InvalidInput(format!(
                        "{} is {got} bytes, not {size}",
                        path.display()
                    )));
                }
                size
            }
            Content::Stream(mut r) => {
                let mut total = 0u64;
                loop {
                    let n = r
                        .read(&mut buf)
                        .map_err(|e| Error::read("object stream", e))?;
                    if n == 0 {
                        break;
                    }
                    self.update(&buf[..n]);
                    total += n as u64;
                }
                total
            }
        };
        self.pad = padding(size);
        Ok(())
    }
}

fn copy_hashing(
    r: &mut impl Read,
    limit: u64,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]),
) -> std::io::Result<u64> {
    let mut got = 0u64;
    while got < limit {
        let want = usize::try_from((limit - got).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        f(&buf[..n]);
        got += n as u64;
    }
    Ok(got)
}

/// Copies `limit` bytes of `r` into `out`, hashing them into `sha` and `crc`; read errors go
/// through `read_err`.
fn copy_to_file(
    r: &mut impl Read,
    limit: u64,
    buf: &mut [u8],
    sha: &mut Sha256,
    crc: &mut Crc64,
    out: &mut std::fs::File,
    read_err: impl FnOnce(std::io::Error) -> Error,
) -> Result<u64> {
    let mut werr = None;
    let got = copy_hashing(r, limit, buf, |c| {
        sha.update(c);
        crc.update(c);
        if werr.is_none()
            && let Err(e) = out.write_all(c)
        {
            werr = Some(e);
        }
    })
    .map_err(read_err)?;
    if let Some(e) = werr {
        return Err(Error::Write {
            what: "a file into the layer".into(),
            source: e,
        });
    }
    Ok(got)
}

/// Second pass: writes the entries into the layer's tree and tar-split.
#[derive(Debug)]
pub struct TreeSink<'a, W: Write> {
    tree: &'a mut TreeWriter,
    tar_split: &'a mut TarSplitWriter<W>,
    sha: Sha256,
    size: u64,
    pad: usize,
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
    entries: u64,
    /// Files hardlinked (zero-copy) and files whose bytes were written.
    pub linked: u64,
    /// Files whose bytes were written.
    pub written: u64,
    buf: Vec<u8>,
}

impl<'a, W: Write> TreeSink<'a, W> {
    /// A sink writing into `tree` and `tar_split`.
    pub fn new(tree: &'a mut TreeWriter, tar_split: &'a mut TarSplitWriter<W>) -> Self {
        TreeSink {
            tree,
            tar_split,
            sha: Sha256::new(),
            size: 0,
            pad: 0,
            uids: BTreeSet::new(),
            gids: BTreeSet::new(),
            entries: 0,
            linked: 0,
            written: 0,
            buf: vec![0u8; 256 * 1024],
        }
    }

    fn segment(&mut self, b: &[u8]) -> Result<()> {
        self.sha.update(b);
        self.size += b.len() as u64;
        self.tar_split.segment(b)?;
        Ok(())
    }

    /// Ends the stream; returns the summary and the DiffID.
    pub fn finish(mut self) -> Result<(LayerSummary, Digest)> {
        let mut trailer = ZEROS[..self.pad].to_vec();
        trailer.extend_from_slice(&ZEROS);
        self.segment(&trailer)?;
        let summary = LayerSummary {
            diff_size: self.size,
            uids: self.uids,
            gids: self.gids,
            entries: self.entries,
        };
        Ok((summary, Digest::from_sha256(self.sha.finalize().into())))
    }
}

/// Parses the header our own raw bytes describe.
fn parse_header(raw: &[u8]) -> Result<TarHeader> {
    match TarStream::new(raw).next_event()? {
        Event::Entry { header, .. } => Ok(header),
        _ => Err(Error::Internal("synthesized header did not parse".into())),
    }
}

impl<W: Write> EntrySink for TreeSink<'_, W> {
    fn entry(&mut self, raw: &[u8], content: Content<'_>) -> Result<()> {
        let mut seg = ZEROS[..self.pad].to_vec();
        seg.extend_from_slice(raw);
        self.segment(&seg)?;
        let header = parse_header(raw)?;
        self.entries += 1;
        record_owner(&header, &mut self.uids, &mut self.gids);
        let mut crc = Crc64::new();
        let mut buf = std::mem::take(&mut self.buf);
        let result = (|| -> Result<u64> {
            match content {
                Content::File {
                    path,
                    size,
                    linkable,
                } if linkable && header.kind == EntryKind::Regular => {
                    let mut f = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
                    match self.tree.begin_linked(&header, &f, path)? {
                        Linked::Yes => {
                            self.linked += 1;
                            let got = copy_hashing(&mut f, size, &mut buf, |c| {
                                self.sha.update(c);
                                crc.update(c);
                            })
                            .map_err(|e| read_error(path, e))?;
                            Ok(got)
                        }
                        Linked::No(mut out) => {
                            self.written += 1;
                            let got = copy_to_file(
                                &mut f,
                                size,
                                &mut buf,
                                &mut self.sha,
                                &mut crc,
                                &mut out.file,
                                |e| read_error(path, e),
                            )?;
                            self.tree.finish_file(out, &header)?;
                            Ok(got)
                        }
                    }
                }
                other => {
                    let mut reader: Box<dyn Read + '_> = match other {
                        Content::None => Box::new(std::io::empty()),
                        Content::Bytes(b) => Box::new(b),
                        Content::File { path, .. } => {
                            Box::new(std::fs::File::open(path).map_err(|e| read_error(path, e))?)
                        }
                        Content::Stream(r) => r,
                    };
                    let file = self.tree.begin(&header)?;
                    let data = if header.kind == EntryKind::Regular {
                        header.size
                    } else {
                        0
                    };
                    match file {
                        Some(mut out) => {
                            self.written += 1;
                            let got = copy_to_file(
                                &mut reader,
                                data,
                                &mut buf,
                                &mut self.sha,
                                &mut crc,
                                &mut out.file,
                                |e| Error::read("layer content", e),
                            )?;
                            self.tree.finish_file(out, &header)?;
                            Ok(got)
                        }
                        None => Ok(0),
                    }
                }
            }
        })();
        self.buf = buf;
        let got = result?;
        let expected = if header.kind == EntryKind::Regular {
            header.size
        } else {
            0
        };
        if got != expected {
            return Err(Error::InvalidInput(format!(
                "{}: {got} bytes of content, the header says {expected}",
                String::from_utf8_lossy(&header.name)
            )));
        }
        self.size += got;
        self.tar_split
            .file(&header.name, got, (got > 0).then(|| crc.finish()))?;
        self.pad = padding(got);
        Ok(())
    }
}
