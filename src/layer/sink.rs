//! The layer sink: consumes a layer's entries once and, in the same pass, writes the tar-split,
//! computes the CRC-64 of each file, the DiffID (when asked) and materializes every entry in the
//! layer's tree — or, digest-only, just hashes the stream (a DiffID from content, `verify`).

use std::collections::BTreeSet;
use std::io::{Read, Write};

use sha2::{Digest as _, Sha256};
use storage_format::{Crc64, Digest, TarSplitWriter};

use super::entry::{Content, ContentRead, Entry, EntryDone, EntryMeta};
use super::tar_header::{EntryKind, TarHeader};
use super::toc_out::TocEntries;
use super::tree_writer::{Linked, OpenFile, TreeWriter, WHITEOUT_PREFIX};
use crate::error::{Error, Result};

/// Size of the copy buffer for file data.
const COPY_BUF: usize = 256 * 1024;

/// What the sink learned about a layer.
#[derive(Debug, Clone)]
pub struct LayerSummary {
    /// Length of the uncompressed tar.
    pub diff_size: u64,
    /// Distinct uids of the entries (whiteouts excluded).
    pub uids: BTreeSet<u32>,
    /// Distinct gids of the entries (whiteouts excluded).
    pub gids: BTreeSet<u32>,
    /// Number of entries.
    pub entries: u64,
}

/// Adds an entry's owner to a layer's uid/gid sets, as c/storage does: every entry but global
/// headers and whiteouts.
pub(crate) fn record_owner(h: &TarHeader, uids: &mut BTreeSet<u32>, gids: &mut BTreeSet<u32>) {
    let base = h
        .name
        .rsplit(|&b| b == b'/')
        .find(|c| !c.is_empty())
        .unwrap_or(b"");
    if h.kind != EntryKind::GlobalHeader && !base.starts_with(WHITEOUT_PREFIX) {
        uids.insert(u32::try_from(h.uid).unwrap_or(u32::MAX));
        gids.insert(u32::try_from(h.gid).unwrap_or(u32::MAX));
    }
}

/// Where the sink writes the tar-split (any [`TarSplitWriter`]).
pub trait SplitOut {
    /// Raw stream bytes.
    fn segment(&mut self, bytes: &[u8]) -> Result<()>;
    /// A file entry's name, content size and CRC-64.
    fn file(&mut self, name: &[u8], size: u64, crc: Option<[u8; 8]>) -> Result<()>;
}

impl<W: Write> SplitOut for TarSplitWriter<W> {
    fn segment(&mut self, bytes: &[u8]) -> Result<()> {
        Ok(TarSplitWriter::segment(self, bytes)?)
    }
    fn file(&mut self, name: &[u8], size: u64, crc: Option<[u8; 8]>) -> Result<()> {
        Ok(TarSplitWriter::file(self, name, size, crc)?)
    }
}

/// Consumes a layer's entries: see the module documentation.
pub struct LayerSink<'a> {
    tree: Option<&'a mut TreeWriter>,
    tar_split: Option<&'a mut dyn SplitOut>,
    /// The tar stream's bytes, when the sink writes them out (an export).
    out: Option<&'a mut dyn Write>,
    sha: Option<Sha256>,
    /// The TOC written as the layer is (a layer that came without one).
    toc: Option<&'a mut dyn TocEntries>,
    size: u64,
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
    entries: u64,
    /// Files that became hardlinks to their source object (zero-copy).
    pub linked: u64,
    /// Files whose bytes were written.
    pub written: u64,
    /// Files whose extents were shared with their source object (a reflink; the bytes were still
    /// read, for the DiffID and CRC-64).
    pub reflinked: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LayerSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerSink")
            .field("tree", &self.tree.is_some())
            .field("diff_id", &self.sha.is_some())
            .field("size", &self.size)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// A content read error: our own errors (a truncated tar stream) come back as they were.
fn content_error(e: std::io::Error, what: &[u8]) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        if let Some(inner) = e.into_inner()
            && let Ok(ours) = inner.downcast::<Error>()
        {
            return *ours;
        }
        return Error::Internal("an error lost its cause".into());
    }
    Error::read(String::from_utf8_lossy(what).into_owned(), e)
}

impl<'a> LayerSink<'a> {
    /// A sink writing into `tree` and `tar_split`. The DiffID is not computed unless
    /// [`with_diff_id`](Self::with_diff_id) asks: a tar blob's is hashed where it is decompressed,
    /// which keeps the hashing off this thread.
    pub fn new(tree: &'a mut TreeWriter, tar_split: &'a mut dyn SplitOut) -> LayerSink<'a> {
        Self::with_parts(Some(tree), Some(tar_split), None)
    }

    /// A sink that only computes the stream's DiffID and length.
    pub fn digest_only() -> LayerSink<'static> {
        LayerSink::with_parts(None, None, Some(Sha256::new()))
    }

    /// A sink that writes the tar stream's bytes to `out` and computes its DiffID and length (an
    /// export of a stored layer).
    pub(crate) fn to_writer(out: &'a mut dyn Write) -> LayerSink<'a> {
        let mut sink = LayerSink::with_parts(None, None, Some(Sha256::new()));
        sink.out = Some(out);
        sink
    }

    /// A sink that only writes the tar stream's bytes to `out`: the caller hashes them (on a
    /// thread of its own, say).
    pub(crate) fn to_writer_unhashed(out: &'a mut dyn Write) -> LayerSink<'a> {
        let mut sink = LayerSink::with_parts(None, None, None);
        sink.out = Some(out);
        sink
    }

    fn with_parts(
        tree: Option<&'a mut TreeWriter>,
        tar_split: Option<&'a mut dyn SplitOut>,
        sha: Option<Sha256>,
    ) -> LayerSink<'a> {
        LayerSink {
            tree,
            tar_split,
            out: None,
            sha,
            toc: None,
            size: 0,
            uids: BTreeSet::new(),
            gids: BTreeSet::new(),
            entries: 0,
            linked: 0,
            written: 0,
            reflinked: 0,
            buf: vec![0u8; COPY_BUF],
        }
    }

    /// Also computes the DiffID of the stream.
    pub(crate) fn with_diff_id(mut self) -> Self {
        self.sha = Some(Sha256::new());
        self
    }

    /// Also writes the layer's TOC to `toc`: each entry, a regular file's with the sha256 of its
    /// content (see [`toc_out`](super::toc_out)).
    pub(crate) fn with_toc(mut self, toc: &'a mut dyn TocEntries) -> Self {
        self.toc = Some(toc);
        self
    }

    /// No TOC entries from here on (a producer that checks each file itself: a partial pull).
    pub(crate) fn without_toc(&mut self) {
        self.toc = None;
    }

    /// Whether entries must carry their parsed header (a tree is written).
    pub fn needs_headers(&self) -> bool {
        self.tree.is_some()
    }

    /// Bytes of the stream so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn segment(&mut self, b: &[u8]) -> Result<()> {
        if let Some(sha) = &mut self.sha {
            sha.update(b);
        }
        if let Some(out) = &mut self.out {
            out.write_all(b).map_err(|e| Error::Write {
                what: "the layer's tar stream".into(),
                source: e,
            })?;
        }
        self.size += b.len() as u64;
        if let Some(ts) = &mut self.tar_split {
            ts.segment(b)?;
        }
        Ok(())
    }

    /// Consumes one entry.
    pub fn entry(&mut self, e: Entry<'_, '_>) -> Result<EntryDone> {
        self.segment(e.raw)?;
        self.entries += 1;
        let expected = e.meta.content_size();
        let name = e.meta.name();
        let header = match e.meta {
            EntryMeta::Header(h) => {
                record_owner(h, &mut self.uids, &mut self.gids);
                Some(h)
            }
            EntryMeta::Recorded { .. } => None,
        };
        let mut crc = Crc64::new();
        // A file's own digest, for the TOC.
        let mut file_sha = (self.toc.is_some()
            && expected > 0
            && header.is_some_and(|h| h.kind == EntryKind::Regular))
        .then(Sha256::new);
        let mut buf = std::mem::take(&mut self.buf);
        let got = self.content(
            header,
            name,
            expected,
            e.content,
            (&mut crc, &mut file_sha),
            &mut buf,
        );
        self.buf = buf;
        let got = got?;
        if got != expected {
            return Err(Error::SizeMismatch {
                what: format!("the content of {}", String::from_utf8_lossy(name)),
                expected,
                found: got,
            });
        }
        self.size += got;
        let crc = (got > 0).then(|| crc.finish());
        if let Some(ts) = &mut self.tar_split {
            ts.file(name, got, crc)?;
        }
        if let (Some(toc), Some(h)) = (&mut self.toc, header) {
            let digest: Option<[u8; 32]> = file_sha.map(|s| s.finalize().into());
            toc.entry(h, digest.as_ref())?;
        }
        Ok(EntryDone { size: got, crc })
    }

    /// Consumes the content (into the tree when there is one); returns its length.
    fn content(
        &mut self,
        header: Option<&TarHeader>,
        name: &[u8],
        expected: u64,
        content: Content<'_>,
        (crc, file_sha): (&mut Crc64, &mut Option<Sha256>),
        buf: &mut [u8],
    ) -> Result<u64> {
        let d = Drain {
            name,
            limit: expected,
            buf,
            sha: &mut self.sha,
            crc,
            file_sha,
        };
        let Some(tree) = self.tree.as_deref_mut() else {
            // Digest-only, or the tar bytes written out.
            let out = self.out.as_deref_mut().map(Out::Stream);
            return d.run(content, out);
        };
        let header = header.ok_or_else(|| {
            Error::Internal(format!(
                "entry {} has no header for the tree",
                String::from_utf8_lossy(name)
            ))
        })?;
        if let Content::Object {
            file,
            path,
            linkable: true,
        } = &content
            && header.kind == EntryKind::Regular
        {
            return match tree.begin_linked(header, file, path)? {
                Linked::Yes => {
                    self.linked += 1;
                    d.run(content, None)
                }
                Linked::No(out) => {
                    self.written += 1;
                    d.into_file(tree, out, header, content)
                }
            };
        }
        // Bytes from a stream are written by the tree's file thread; an object is written here
        // (it may be cloned).
        let object = matches!(content, Content::Object { .. });
        let opened = if object {
            tree.begin(header)?
        } else {
            tree.begin_queued(header)?
        };
        match opened {
            Some(out) => {
                // An object that may not become the entry (its inode is another's): its extents
                // are shared where the file system can (the bytes are still read, for the
                // digests), else its bytes are written. Only an object exactly as long as the
                // entry, and one that does not change while it is cloned and read: the digests
                // are of the bytes read after the clone, so a source that changed meanwhile (a
                // live tree) would leave a file the records do not describe.
                if let Content::Object { file, .. } = &content
                    && let Some(dst) = out.file()
                    && let Some(before) = file_state(file).filter(|s| s.0 == expected)
                    && rustix::fs::ioctl_ficlone(dst, file).is_ok()
                {
                    self.reflinked += 1;
                    let cloned = dst.metadata().map(|m| m.len()).ok();
                    // Read through a shared handle: the object stays here for the check below.
                    let mut reader: &std::fs::File = file;
                    let got = d.run(Content::Stream(&mut reader), None)?;
                    if cloned != Some(expected) || file_state(file) != Some(before) {
                        return Err(Error::InvalidInput(format!(
                            "{} changed while it was copied: copy from a tree nothing writes to",
                            String::from_utf8_lossy(name)
                        )));
                    }
                    tree.finish_file(out, header)?;
                    return Ok(got);
                }
                self.written += 1;
                d.into_file(tree, out, header, content)
            }
            // Content of an entry the tree does not keep (a file under a whiteout name): read,
            // hashed, recorded.
            None => d.run(content, None),
        }
    }

    /// Consumes the bytes after the last entry (padding, end-of-archive blocks, record padding).
    pub fn trailer(&mut self, raw: &[u8]) -> Result<()> {
        self.segment(raw)
    }

    /// Ends the layer: what was learnt, and the DiffID if this sink computed it.
    pub fn finish(self) -> (LayerSummary, Option<Digest>) {
        let diff_id = self
            .sha
            .map(|sha| Digest::from_sha256(sha.finalize().into()));
        (
            LayerSummary {
                diff_size: self.size,
                uids: self.uids,
                gids: self.gids,
                entries: self.entries,
            },
            diff_id,
        )
    }
}

/// What tells whether a file changed: its size, mtime and ctime.
fn file_state(f: &std::fs::File) -> Option<(u64, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    Some((
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Where content bytes go: a file of the tree, or the tar stream written out.
enum Out<'o, 'w> {
    File(&'o TreeWriter, &'o mut OpenFile),
    Stream(&'o mut (dyn Write + 'w)),
}

impl Out<'_, '_> {
    fn write_all(&mut self, b: &[u8], name: &[u8]) -> Result<()> {
        match self {
            Out::File(tree, f) => f.write_all(tree, b, name),
            Out::Stream(w) => w.write_all(b).map_err(|e| Error::write_entry(name, e)),
        }
    }

    /// Whether bytes handed on whole ([`SharedBytes`](super::shared_bytes::SharedBytes)) are taken without
    /// a copy.
    fn takes_shared(&self) -> bool {
        matches!(self, Out::File(_, f) if f.takes_shared())
    }
}

/// Where an entry's content goes, apart from its file: the DiffID and the CRC-64, through a
/// buffer; reads `limit` bytes at most.
struct Drain<'d> {
    name: &'d [u8],
    limit: u64,
    buf: &'d mut [u8],
    sha: &'d mut Option<Sha256>,
    crc: &'d mut Crc64,
    /// The file's own sha256, when the TOC needs it.
    file_sha: &'d mut Option<Sha256>,
}

impl Drain<'_> {
    /// Reads the content, hashing it and writing it to `out`; returns its length.
    fn run(self, content: Content<'_>, mut out: Option<Out<'_, '_>>) -> Result<u64> {
        let Drain {
            name,
            limit,
            buf,
            sha,
            crc,
            file_sha,
        } = self;
        let mut hashes = Hashes { sha, crc, file_sha };
        let mut file;
        let reader: &mut dyn Read = match content {
            Content::None => return Ok(0),
            Content::Bytes(b) => {
                let b = &b[..b.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
                consume(b, &mut hashes, out.as_mut(), name)?;
                return Ok(b.len() as u64);
            }
            Content::Stream(r) => r,
            Content::Buffered(r) => return drain_buffered(r, name, limit, &mut hashes, out),
            Content::Object { file: f, .. } => {
                file = f;
                &mut file
            }
        };
        let mut got = 0u64;
        while got < limit {
            let want = usize::try_from((limit - got).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(content_error(e, name)),
            };
            consume(&buf[..n], &mut hashes, out.as_mut(), name)?;
            got += n as u64;
        }
        Ok(got)
    }

    /// Writes the content into the entry's open file `out`, then finishes the file.
    fn into_file(
        self,
        tree: &mut TreeWriter,
        mut out: OpenFile,
        header: &TarHeader,
        content: Content<'_>,
    ) -> Result<u64> {
        let got = self.run(content, Some(Out::File(tree, &mut out)))?;
        tree.finish_file(out, header)?;
        Ok(got)
    }
}

/// [`Drain::run`] of a buffered stream: its bytes are taken where it holds them.
fn drain_buffered(
    reader: &mut dyn ContentRead,
    name: &[u8],
    limit: u64,
    hashes: &mut Hashes<'_>,
    mut out: Option<Out<'_, '_>>,
) -> Result<u64> {
    let share = out.as_ref().is_some_and(Out::takes_shared);
    let mut got = 0u64;
    while got < limit {
        let avail = match reader.fill_buf() {
            Ok([]) => break,
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(content_error(e, name)),
        };
        let n = avail
            .len()
            .min(usize::try_from(limit - got).unwrap_or(usize::MAX));
        if !share {
            consume(&avail[..n], hashes, out.as_mut(), name)?;
        } else {
            consume(&avail[..n], hashes, None, name)?;
            if let Some(Out::File(tree, f)) = out.as_mut() {
                match reader.share(n) {
                    Some(bytes) => f.write_shared(tree, bytes, name)?,
                    None => {
                        let avail = reader.fill_buf().map_err(|e| content_error(e, name))?;
                        f.write_all(tree, &avail[..n.min(avail.len())], name)?;
                    }
                }
            }
        }
        reader.consume(n);
        got += n as u64;
    }
    Ok(got)
}

/// The digests content bytes go into.
struct Hashes<'h> {
    sha: &'h mut Option<Sha256>,
    crc: &'h mut Crc64,
    file_sha: &'h mut Option<Sha256>,
}

fn consume(
    b: &[u8],
    hashes: &mut Hashes<'_>,
    out: Option<&mut Out<'_, '_>>,
    name: &[u8],
) -> Result<()> {
    if let Some(sha) = hashes.sha.as_mut() {
        sha.update(b);
    }
    hashes.crc.update(b);
    if let Some(sha) = hashes.file_sha.as_mut() {
        sha.update(b);
    }
    if let Some(f) = out {
        f.write_all(b, name)?;
    }
    Ok(())
}
