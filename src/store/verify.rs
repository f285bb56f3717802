//! Verification of a layer: rebuild its tar from the tar-split and the files in its tree, check every
//! file's size and CRC, and compare the digest with the recorded DiffID (what `podman push` and
//! `podman system check` rely on).

use std::io::{BufReader, Read};
use std::os::fd::AsFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use sha2::{Digest as _, Sha256};
use storage_format::{Crc64, Digest, LayerRecord, TarSplitEntry, TarSplitReader};

use super::Store;
use crate::error::{Error, Result};

impl Store {
    /// Checks that the layer's tar-split and tree rebuild a tar whose sha256 is its `diff-digest`.
    pub fn verify_layer(&self, layer: &LayerRecord) -> Result<()> {
        let bad = |why: String| Error::Damaged {
            what: format!("layer {}", layer.id),
            detail: why,
        };
        let expected = match &layer.diff_digest {
            Some(d) => Digest::parse(d)?,
            None => return Err(bad("it has no diff-digest".into())),
        };
        let ts_path = self.tar_split_path(&layer.id);
        let f = std::fs::File::open(&ts_path).map_err(|e| Error::io("opening", &ts_path, e))?;
        let reader = TarSplitReader::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            BufReader::new(f),
        )));
        let tree = self.driver().tree_path(&layer.id);
        let root = crate::fsutil::open_dir(&tree)
            .map_err(|e| Error::io("opening", &tree, std::io::Error::from(e)))?;
        let mut sha = Sha256::new();
        let mut size: u64 = 0;
        let mut buf = vec![0u8; 256 * 1024];
        for entry in reader {
            match entry? {
                TarSplitEntry::Segment(bytes) => {
                    sha.update(&bytes);
                    size += bytes.len() as u64;
                }
                TarSplitEntry::File {
                    name,
                    size: fsize,
                    crc,
                } => {
                    if fsize == 0 {
                        // Entries without data (directories, links, devices) must still exist;
                        // whiteouts are stored under another name and the root is the tree itself.
                        let (comps, _) = crate::layer::path::clean_components(&name);
                        let is_whiteout = comps.last().is_some_and(|b| b.starts_with(b".wh."));
                        if !comps.is_empty() && !is_whiteout {
                            let path = crate::layer::path::join(&comps);
                            rustix::fs::openat2(
                                root.as_fd(),
                                path.as_slice(),
                                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                                Mode::empty(),
                                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                            )
                            .map_err(|e| bad(format!("{}: {e}", String::from_utf8_lossy(&name))))?;
                        }
                        continue;
                    }
                    let fd = rustix::fs::openat2(
                        root.as_fd(),
                        name.as_slice(),
                        OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                    )
                    .map_err(|e| bad(format!("{}: {e}", String::from_utf8_lossy(&name))))?;
                    let mut file = std::fs::File::from(fd);
                    let mut c = Crc64::new();
                    let mut got = 0u64;
                    loop {
                        let n = file.read(&mut buf).map_err(|e| {
                            Error::read(String::from_utf8_lossy(&name).into_owned(), e)
                        })?;
                        if n == 0 {
                            break;
                        }
                        let take = usize::try_from((fsize - got).min(n as u64)).unwrap_or(n);
                        sha.update(&buf[..take]);
                        c.update(&buf[..take]);
                        got += take as u64;
                        if got == fsize {
                            break;
                        }
                    }
                    if got != fsize {
                        return Err(bad(format!(
                            "{} is shorter than recorded",
                            String::from_utf8_lossy(&name)
                        )));
                    }
                    if crc.is_some_and(|crc| crc != c.finish()) {
                        return Err(bad(format!(
                            "{} does not match its checksum",
                            String::from_utf8_lossy(&name)
                        )));
                    }
                    size += fsize;
                }
            }
        }
        let actual = Digest::from_sha256(sha.finalize().into());
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
}
