//! Verification of a layer: rebuild its tar from the tar-split and the files in its tree, check every
//! file's size and CRC, and compare the digest with the recorded DiffID (what `podman push` and
//! `podman system check` rely on).

use std::io::BufReader;
use std::os::fd::AsFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use storage_format::sys::sorted_hashes::SortedHashes;
use storage_format::{Digest, LayerRecord, TarSplitEntry, TarSplitReader, path_hash};

use super::Store;
use crate::error::{Error, Result};
use crate::layer::entry::{Content, Entry, EntryMeta};
use crate::layer::read_ahead::{ReadAhead, StopOnDrop};
use crate::layer::sink::LayerSink;
use std::os::unix::ffi::OsStrExt as _;

/// How far the read-ahead runs ahead of a layer's reader.
const READ_AHEAD_LEAD: u64 = 64 << 20;

impl Store {
    /// The layers of an image, base first: its top layer and the chain of parents below it (a
    /// layer missing from the records, or a chain that loops, is damage).
    pub(crate) fn image_layers(
        &self,
        image: &storage_format::ImageRecord,
    ) -> Result<Vec<LayerRecord>> {
        let layers = self.layers()?;
        let mut out: Vec<LayerRecord> = Vec::new();
        let mut next = image.layer.clone();
        while let Some(id) = next {
            let layer = layers
                .iter()
                .find(|l| l.id == id)
                .ok_or_else(|| Error::Damaged {
                    what: format!("image {}", image.id),
                    detail: format!("its layer {id} is not recorded"),
                })?;
            if out.iter().any(|l| l.id == id) {
                return Err(Error::Damaged {
                    what: format!("image {}", image.id),
                    detail: format!("its layer chain loops at {id}"),
                });
            }
            next = layer.parent.clone();
            out.push(layer.clone());
        }
        out.reverse();
        Ok(out)
    }

    /// Verifies every layer of an image.
    pub fn verify_image(&self, image: &storage_format::ImageRecord) -> Result<()> {
        for layer in self.image_layers(image)? {
            self.verify_layer(&layer)?;
        }
        Ok(())
    }

    /// Checks that the layer's tar-split and tree rebuild a tar whose sha256 is its `diff-digest`.
    pub(crate) fn verify_layer(&self, layer: &LayerRecord) -> Result<()> {
        let bad = |why: String| Error::Damaged {
            what: format!("layer {}", layer.id),
            detail: why,
        };
        let expected = match &layer.diff_digest {
            Some(d) => Digest::parse(d)?,
            None => return Err(bad("it has no diff-digest".into())),
        };
        let mut sink = LayerSink::digest_only();
        self.feed_layer(layer, &mut sink)?;
        let (summary, actual) = sink.finish();
        let size = summary.diff_size;
        let actual =
            actual.ok_or_else(|| Error::Internal("a digest sink without a digest".into()))?;
        if actual != expected {
            return Err(bad(format!("its tar rebuilds to {actual}, not {expected}")));
        }
        if let Some(s) = layer.diff_size
            && s >= 0
            && s as u64 != size
        {
            return Err(bad(format!("its tar is {size} bytes, not {s}")));
        }
        Ok(())
    }

    /// Paths (at most ten, relative) in the layer's tree that its tar-split does not name: a
    /// whiteout `.wh.NAME` is the device `NAME` there, and directories above named paths may be
    /// implicit. For overlay trees, which hold the layer's own entries only.
    ///
    /// Memory stays flat at any entry count: the names on both sides are 128-bit hashes in
    /// sorted runs ([`SortedHashes`]), merged; only when some are extra is the tree walked again,
    /// to name them.
    pub(crate) fn extra_files(&self, layer: &LayerRecord) -> Result<Vec<String>> {
        let mut named = SortedHashes::new();
        // The directories above the previous entry, pushed already.
        let mut above_last: Vec<u8> = Vec::new();
        for entry in self.tar_split_reader(layer)? {
            if let TarSplitEntry::File { name, .. } = entry? {
                let (mut comps, _) = crate::layer::path::clean_components(&name);
                if comps.last().is_some_and(|l| *l == b".wh..wh..opq") {
                    comps.pop();
                } else if let Some(last) = comps.last_mut()
                    && let Some(hidden) = last.strip_prefix(b".wh.")
                {
                    *last = hidden;
                }
                let Some((_, parents)) = comps.split_last() else {
                    continue;
                };
                // The path, and every directory above it unless the previous entry had them.
                let above = crate::layer::path::join(parents);
                if above != above_last {
                    for n in 1..comps.len() {
                        named.push(path_hash(&crate::layer::path::join(&comps[..n])))?;
                    }
                    above_last = above;
                }
                named.push(path_hash(&crate::layer::path::join(&comps)))?;
            }
        }
        let tree = self.driver().tree_path(&layer.id);
        let mut present = SortedHashes::new();
        walk_tree(&tree, |p, _| {
            present.push(path_hash(p))?;
            Ok(true)
        })?;
        // The tree's names the tar-split does not have (a bounded number is enough to name ten).
        let mut unnamed: std::collections::HashSet<u128> = std::collections::HashSet::new();
        let mut named = named.into_sorted()?.peekable();
        for h in present.into_sorted()? {
            let h = h?;
            let mut is_named = false;
            while let Some(n) = named.peek() {
                match n {
                    Ok(n) if *n < h => {
                        named.next();
                    }
                    Ok(n) => {
                        is_named = *n == h;
                        break;
                    }
                    Err(_) => {
                        if let Some(Err(e)) = named.next() {
                            return Err(e.into());
                        }
                    }
                }
            }
            if !is_named && unnamed.len() < UNNAMED_MAX {
                unnamed.insert(h);
            }
        }
        let mut extra = Vec::new();
        if unnamed.is_empty() {
            return Ok(extra);
        }
        // Name them: the first ten met, not descending into an extra directory.
        walk_tree(&tree, |p, _| {
            if unnamed.contains(&path_hash(p)) {
                extra.push(String::from_utf8_lossy(p).into_owned());
                return Ok(false);
            }
            Ok(extra.len() < 10)
        })?;
        extra.truncate(10);
        extra.sort();
        Ok(extra)
    }

    /// The layer's tar stream, rebuilt from its tar-split and the files of its tree, fed into
    /// `sink` (digest-only for `verify`, to a writer for an export): segments up to a file entry
    /// are its raw bytes, the tree's file its content. Each file's CRC-64 is checked.
    pub(crate) fn feed_layer(&self, layer: &LayerRecord, sink: &mut LayerSink<'_>) -> Result<()> {
        let reader = self.tar_split_reader(layer)?;
        let tree = self.driver().tree_path(&layer.id);
        let root = crate::fsutil::open_dir(&tree)
            .map_err(|e| Error::io("opening", &tree, std::io::Error::from(e)))?;
        // A helper reads the tar-split too and asks the kernel for the files ahead of this thread,
        // so a cold disk gets many reads at once.
        let ra = ReadAhead::new(READ_AHEAD_LEAD);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                if let Ok(files) = self.files_in_order(layer) {
                    ra.run(files);
                }
            });
            let _stop = StopOnDrop(&ra);
            Self::feed_entries_of(layer, reader, &tree, &root, &ra, sink)
        })
    }

    /// Asks the kernel for the first `bytes` of the layer's files, in the order its tar stream
    /// reads them (`posix_fadvise(WILLNEED)`; nothing is read here), so that a reader starting on
    /// this layer next finds them on their way. Errors are ignored: the reader meets them.
    pub(crate) fn prefetch_layer(&self, layer: &LayerRecord, bytes: u64) {
        let Ok(files) = self.files_in_order(layer) else {
            return;
        };
        let mut announced = 0u64;
        ReadAhead::new(bytes).run(files.take_while(|(_, size)| {
            announced += size;
            announced <= bytes
        }));
    }

    /// The layer's tar-split, decoded as it is read.
    fn tar_split_reader(
        &self,
        layer: &LayerRecord,
    ) -> Result<TarSplitReader<impl std::io::BufRead>> {
        let ts_path = self.tar_split_path(&layer.id);
        let f = std::fs::File::open(&ts_path).map_err(|e| Error::io("opening", &ts_path, e))?;
        Ok(TarSplitReader::new(BufReader::new(
            flate2::read::MultiGzDecoder::new(BufReader::new(f)),
        )))
    }

    /// The layer's files with content (their paths in the tree and sizes), in the order its tar
    /// stream reads them: what a read-ahead announces. An unreadable entry ends the list.
    fn files_in_order(
        &self,
        layer: &LayerRecord,
    ) -> Result<impl Iterator<Item = (std::path::PathBuf, u64)>> {
        let tree = self.driver().tree_path(&layer.id);
        Ok(self
            .tar_split_reader(layer)?
            .map_while(|e| e.ok())
            .filter_map(move |e| match e {
                TarSplitEntry::File { name, size, .. } if size > 0 => {
                    Some((tree.join(std::ffi::OsStr::from_bytes(&name)), size))
                }
                _ => None,
            }))
    }

    /// [`feed_layer`](Self::feed_layer)'s loop: each tar-split entry into `sink`, the files'
    /// contents from `root`, the read-ahead told what was consumed.
    fn feed_entries_of(
        layer: &LayerRecord,
        reader: impl Iterator<Item = storage_format::Result<TarSplitEntry>>,
        tree: &std::path::Path,
        root: &std::os::fd::OwnedFd,
        ra: &ReadAhead,
        sink: &mut LayerSink<'_>,
    ) -> Result<()> {
        let bad = |why: String| Error::Damaged {
            what: format!("layer {}", layer.id),
            detail: why,
        };
        // The store's tar-split and tree as an entry stream: segments up to a file entry are its
        // raw bytes, the tree's file its content; the digest-only sink rebuilds the DiffID.
        let mut raw: Vec<u8> = Vec::new();
        for entry in reader {
            match entry? {
                TarSplitEntry::Segment(bytes) => raw.extend_from_slice(&bytes),
                TarSplitEntry::File {
                    name,
                    size: fsize,
                    crc,
                } => {
                    let shown = || String::from_utf8_lossy(&name).into_owned();
                    let content = if fsize == 0 {
                        // Entries without data (directories, links, devices) must still exist;
                        // whiteouts are stored under another name and the root is the tree itself.
                        let (comps, _) = crate::layer::path::clean_components(&name);
                        let is_whiteout = comps.last().is_some_and(|b| b.starts_with(b".wh."));
                        if !comps.is_empty() && !is_whiteout {
                            let path = crate::layer::path::join(&comps);
                            crate::fsutil::openat2_retry(
                                root.as_fd(),
                                path.as_slice(),
                                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                                Mode::empty(),
                                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                            )
                            .map_err(|e| bad(format!("{}: {e}", shown())))?;
                        }
                        Content::None
                    } else {
                        let fd = crate::fsutil::openat2_retry(
                            root.as_fd(),
                            name.as_slice(),
                            OFlags::RDONLY | OFlags::CLOEXEC,
                            Mode::empty(),
                            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                        )
                        .map_err(|e| bad(format!("{}: {e}", shown())))?;
                        Content::Object {
                            file: std::fs::File::from(fd),
                            path: tree,
                            linkable: false,
                        }
                    };
                    let done = sink
                        .entry(Entry {
                            raw: &raw,
                            meta: EntryMeta::Recorded {
                                name: &name,
                                size: fsize,
                            },
                            content,
                        })
                        .map_err(|e| match e {
                            Error::SizeMismatch { .. } => {
                                bad(format!("{} is shorter than recorded", shown()))
                            }
                            e => e,
                        })?;
                    raw.clear();
                    ra.consumed(fsize);
                    if crc.is_some_and(|crc| Some(crc) != done.crc) {
                        return Err(bad(format!("{} does not match its checksum", shown())));
                    }
                }
            }
        }
        sink.trailer(&raw)?;
        Ok(())
    }
}

/// The most unnamed hashes [`Store::extra_files`] keeps to name (ten are reported).
const UNNAMED_MAX: usize = 4096;

/// Walks the tree at `root` depth first, calling `visit` with each entry's path relative to it
/// and whether it is a directory; a directory is entered when `visit` returns `Ok(true)`.
fn walk_tree(
    root: &std::path::Path,
    mut visit: impl FnMut(&[u8], bool) -> Result<bool>,
) -> Result<()> {
    let mut stack: Vec<(std::path::PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io("reading", &dir, e))?;
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(
                e.file_name().as_os_str(),
            ));
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if visit(&p, is_dir)? && is_dir {
                stack.push((e.path(), p));
            }
        }
    }
    Ok(())
}
