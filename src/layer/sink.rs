//! The layer sink: consumes an uncompressed layer tar once and, in the same pass, writes the tar-split,
//! computes the DiffID and materializes every entry in the layer's tree.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use storage_format::{Crc64, TarSplitWriter};

use super::tar_header::{EntryKind, TarHeader};
use super::tar_stream::{Event, TarStream};
use super::tree_writer::{TreeWriter, WHITEOUT_PREFIX};
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
pub fn record_owner(h: &TarHeader, uids: &mut BTreeSet<u32>, gids: &mut BTreeSet<u32>) {
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

/// Streams an uncompressed layer tar from `input` into `tree` and `tar_split`.
/// `progress` is called with the number of uncompressed bytes consumed so far.
///
/// The DiffID is not computed here: callers hash the stream where it is produced (see
/// [`HashingReader`](super::decompress::HashingReader)), which keeps the hashing off this thread.
pub fn write_layer<R: Read, W: Write>(
    input: R,
    tree: &mut TreeWriter,
    tar_split: &mut TarSplitWriter<W>,
    mut progress: impl FnMut(u64),
) -> Result<LayerSummary> {
    let mut stream = TarStream::new(input);
    let mut size: u64 = 0;
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    let mut entries = 0u64;
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        match stream.next_event()? {
            Event::End => break,
            Event::Trailer(raw) => {
                size += raw.len() as u64;
                tar_split.segment(&raw)?;
            }
            Event::Entry { raw, header } => {
                entries += 1;
                size += raw.len() as u64;
                tar_split.segment(&raw)?;
                record_owner(&header, &mut uids, &mut gids);
                let mut crc = Crc64::new();
                let file = tree.begin(&header)?;
                let data_size = if header.kind == EntryKind::Regular {
                    header.size
                } else {
                    0
                };
                let mut written = 0u64;
                match file {
                    Some(mut f) => {
                        loop {
                            let n = stream.read_data(&mut buf)?;
                            if n == 0 {
                                break;
                            }
                            let chunk = &buf[..n];
                            crc.update(chunk);
                            f.file.write_all(chunk).map_err(|e| Error::Write {
                                what: format!(
                                    "{} into the layer",
                                    String::from_utf8_lossy(&header.name)
                                ),
                                source: e,
                            })?;
                            written += n as u64;
                        }
                        tree.finish_file(f, &header)?;
                    }
                    None => loop {
                        // Data of an entry we do not write (e.g. a file under a whiteout name).
                        let n = stream.read_data(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        crc.update(&buf[..n]);
                        written += n as u64;
                    },
                }
                if written != data_size {
                    return Err(Error::truncated("tar entry data"));
                }
                size += written;
                let crc = (written > 0).then(|| crc.finish());
                tar_split.file(&header.name, written, crc)?;
                progress(size);
            }
        }
    }
    Ok(LayerSummary {
        diff_size: size,
        uids,
        gids,
        entries,
    })
}
