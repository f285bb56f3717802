//! A layer splitstream of a composefs repository as an entry stream.
//!
//! composefs-rs keeps a layer's tar as a splitstream: the tar's bytes in order, *inline* (headers,
//! extension records, padding, small files' content) except each large file's content, which is
//! an *external* reference to an object in the repository, standing exactly where the content was.
//! So the inline bytes parse as tar by the one tar reader ([`TarStream`]), and an entry whose data
//! is an external reference gets that object as its content: an open file the tree shares extents
//! with (reflink) or copies — never a hardlink, as the object's inode is the repository's.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use composefs::fsverity::{FsVerityHashValue, FsVerityHasher};
use composefs::splitstream::{SplitStreamData, SplitStreamReader};

use crate::error::{Error, Result};
use crate::layer::entry::{Content, Entry, EntryMeta};
use crate::layer::read_ahead::ReadAhead;
use crate::layer::sink::LayerSink;
use crate::layer::tar_stream::{Event, TarStream};

/// The inline bytes of a splitstream, read as a plain stream.
struct Inline<H: FsVerityHashValue>(SplitStreamReader<H>);

impl<H: FsVerityHashValue> Read for Inline<H> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// An object's bytes, checked against the fs-verity digest that names it (`--verify`).
struct VerityChecked<H: FsVerityHashValue> {
    file: File,
    hasher: FsVerityHasher<H>,
}

impl<H: FsVerityHashValue> Read for VerityChecked<H> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Where a layer's objects are, to name them in errors.
#[derive(Debug, Clone)]
pub(crate) struct ObjectPlace<'a> {
    /// The repository's directory.
    pub repo_path: &'a Path,
    /// The layer (its DiffID), for messages.
    pub layer: &'a str,
}

impl ObjectPlace<'_> {
    /// The file of object `id`.
    pub(crate) fn object_path<H: FsVerityHashValue>(&self, id: &H) -> PathBuf {
        super::object_path(self.repo_path, id)
    }

    /// A damaged repository, with what and where.
    pub fn damaged(&self, detail: impl std::fmt::Display) -> Error {
        Error::Composefs {
            repo: self.repo_path.to_path_buf(),
            detail: format!("layer {}: {detail}", self.layer),
        }
    }
}

/// Feeds the entries of a layer's splitstream `stream` into `sink`; with `verify`, every external
/// object's content is checked against its fs-verity digest (and copied, not reflinked, as it is
/// read through the check). `read_ahead` is told the bytes of each object read; `progress` gets
/// the stream's bytes consumed so far after each entry.
pub(crate) fn feed_splitstream<H: FsVerityHashValue>(
    place: &ObjectPlace<'_>,
    stream: SplitStreamReader<H>,
    (verify, read_ahead): (bool, Option<&ReadAhead>),
    sink: &mut LayerSink<'_>,
    mut progress: impl FnMut(u64),
) -> Result<()> {
    let mut tar = TarStream::new(Inline(stream));
    loop {
        let (raw, header) = match tar.next_event().map_err(|e| inline_error(place, e))? {
            Event::End => return Ok(()),
            Event::Trailer(raw) => {
                sink.trailer(&raw)?;
                continue;
            }
            Event::Entry { raw, header } => (raw, header),
        };
        let meta = EntryMeta::Header(&header);
        if tar.remaining() == 0 {
            sink.entry(Entry {
                raw: &raw,
                meta,
                content: Content::None,
            })?;
            progress(sink.size());
            continue;
        }
        // The data: an external object in its place, or inline bytes. Asking for zero bytes takes
        // the next chunk's marker only when it is an external reference.
        let chunk = tar
            .inner_mut()
            .0
            .read_exact(0, 0)
            .map_err(|e| place.damaged(format!("{e:#}")))?;
        match chunk {
            SplitStreamData::External(id) => {
                tar.data_supplied_apart();
                let path = place.object_path(&id);
                // Non-blocking and a regular file only: a FIFO or device planted where an object
                // should be is damage, not something to wait on.
                let file = crate::fsutil::open_regular(None, &path).map_err(|e| {
                    place.damaged(format!(
                        "object {} of {} cannot be opened ({e})",
                        path.display(),
                        String::from_utf8_lossy(&header.name),
                    ))
                })?;
                let len = file
                    .metadata()
                    .map_err(|e| place.damaged(format!("object {}: {e}", path.display())))?
                    .len();
                if len != header.size {
                    return Err(place.damaged(format!(
                        "object {} of {} is {len} bytes, but the entry has {}",
                        path.display(),
                        String::from_utf8_lossy(&header.name),
                        header.size
                    )));
                }
                if verify {
                    let mut checked = VerityChecked {
                        file,
                        hasher: FsVerityHasher::<H>::new(),
                    };
                    sink.entry(Entry {
                        raw: &raw,
                        meta,
                        content: Content::Stream(&mut checked),
                    })?;
                    let actual = checked.hasher.digest();
                    if actual != id {
                        return Err(place.damaged(format!(
                            "object {} does not match its content (its fs-verity digest is {})",
                            path.display(),
                            actual.to_hex()
                        )));
                    }
                } else {
                    sink.entry(Entry {
                        raw: &raw,
                        meta,
                        content: Content::Object {
                            file,
                            path: &path,
                            linkable: false,
                        },
                    })?;
                }
                if let Some(ra) = read_ahead {
                    ra.consumed(header.size);
                }
            }
            SplitStreamData::Inline(_) => {
                let mut data = tar.entry_data();
                sink.entry(Entry {
                    raw: &raw,
                    meta,
                    content: Content::Stream(&mut data),
                })
                .map_err(|e| inline_error(place, e))?;
                if tar.remaining() != 0 {
                    return Err(place.damaged("the splitstream ends inside an entry's data"));
                }
            }
        }
        progress(sink.size());
    }
}

/// A read error of the inline stream: the splitstream is damaged (truncated, not zstd, a reference
/// where bytes belong), named as such; the tar's own errors pass unchanged.
fn inline_error(place: &ObjectPlace<'_>, e: Error) -> Error {
    match e {
        Error::Read { source, .. } => {
            place.damaged(format!("its splitstream is damaged ({source})"))
        }
        Error::Truncated(what) => {
            place.damaged(format!("its splitstream ends early (truncated {what})"))
        }
        other => other,
    }
}
