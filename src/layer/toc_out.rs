//! The TOC of a layer that came without one (a gzip, zstd or plain tar blob, a host image, a
//! composefs image), written as the layer is: c/storage's TOC JSON, one entry per tar entry with
//! its content's sha256, streamed out entry by entry (memory does not grow with the layer). Stored
//! with the layer as the `zstd-chunked-manifest` big data (see
//! [`zstd_chunked_toc`](super::zstd_chunked_toc)), it is what podman 5's layers cache and our
//! [content index](crate::store) read to find a file by its content: their later partial pulls
//! take these files from the store instead of fetching them. It names no offsets (the blob was
//! not zstd:chunked) and the layer records no `toc-digest` (there is no compressed TOC to name).

use std::io::Write;

use super::tar_header::TarHeader;
use super::zstd_chunked_toc::toc_entry_fields;
use crate::error::{Error, Result};

/// Where the sink hands each entry of the TOC it writes.
pub trait TocEntries {
    /// The entry `h`; `digest` is the sha256 of a regular file's content (one with content).
    fn entry(&mut self, h: &TarHeader, digest: Option<&[u8; 32]>) -> Result<()>;
}

impl<W: Write> TocEntries for TocOut<W> {
    fn entry(&mut self, h: &TarHeader, digest: Option<&[u8; 32]>) -> Result<()> {
        TocOut::entry(self, h, digest)
    }
}

/// A TOC being written.
#[derive(Debug)]
pub struct TocOut<W: Write> {
    out: W,
    entries: u64,
}

fn write_err(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("writing the layer's TOC: {e}"))
}

impl<W: Write> TocOut<W> {
    /// A TOC written to `out`.
    pub fn new(mut out: W) -> Result<TocOut<W>> {
        out.write_all(br#"{"version":1,"entries":["#)
            .map_err(write_err)?;
        Ok(TocOut { out, entries: 0 })
    }

    /// The entry `h`; `digest` is the sha256 of a regular file's content (one with content).
    pub fn entry(&mut self, h: &TarHeader, digest: Option<&[u8; 32]>) -> Result<()> {
        let Some(mut e) = toc_entry_fields(h) else {
            return Ok(());
        };
        if let Some(d) = digest {
            e.insert("digest".into(), format!("sha256:{}", hex::encode(d)).into());
        }
        if self.entries > 0 {
            self.out.write_all(b",").map_err(write_err)?;
        }
        serde_json::to_writer(&mut self.out, &e).map_err(write_err)?;
        self.entries += 1;
        Ok(())
    }

    /// Ends the TOC; gives back where it was written.
    pub fn finish(mut self) -> Result<W> {
        self.out.write_all(b"]}").map_err(write_err)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar_header::EntryKind;

    #[test]
    fn entries_as_json() {
        let mut t = TocOut::new(Vec::new()).unwrap();
        let mut h = TarHeader::new(b"usr/".to_vec(), EntryKind::Directory, 0o755, 0, 0);
        h.raw_mode = 0o755;
        t.entry(&h, None).unwrap();
        let h = TarHeader::new(b"usr/a".to_vec(), EntryKind::Regular, 0o644, 3, 0);
        t.entry(&h, Some(&[0xab; 32])).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&t.finish().unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        let e = v["entries"].as_array().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["type"], "dir");
        assert_eq!(e[1]["type"], "reg");
        assert_eq!(e[1]["size"], 3);
        assert_eq!(e[1]["digest"], format!("sha256:{}", "ab".repeat(32)));
        assert!(e[1].get("offset").is_none());
    }
}
