//! `oci-archive:FILE[:TAG]`: a tar of an OCI image layout, read in place (blobs are byte ranges of the
//! archive; nothing is extracted).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use storage_format::Digest;

use super::OpenedSource;
use super::oci_layout::{Layout, resolve};
use super::read_small;
use crate::error::{Error, Result};
use crate::layer::BlobSource;
use crate::layer::path::{clean_components, join};
use crate::layer::tar_header::EntryKind;
use crate::layer::tar_stream::{Event, TarStream};

/// A reader that counts the bytes it hands out.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An OCI layout inside a tar file: the members' offsets.
#[derive(Debug, Clone)]
pub(crate) struct LayoutArchive {
    path: PathBuf,
    members: HashMap<Vec<u8>, (u64, u64)>,
}

impl LayoutArchive {
    /// Scans the archive's members.
    pub(crate) fn scan(path: &Path) -> Result<LayoutArchive> {
        let f = crate::fsutil::open_regular(None, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(
                path.display().to_string(),
                format!("OCI archive {} does not exist", path.display()),
            ),
            std::io::ErrorKind::InvalidInput => Error::InvalidInput(format!(
                "OCI archive {} is not a regular file: write the archive to a file first",
                path.display()
            )),
            _ => Error::io("opening", path, e),
        })?;
        let mut stream = TarStream::new(Counting {
            inner: std::io::BufReader::with_capacity(1 << 20, f),
            pos: 0,
        });
        let mut members = HashMap::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match stream
                .next_event()
                .map_err(|e| Error::InvalidInput(format!("OCI archive {}: {e}", path.display())))?
            {
                Event::End => break,
                Event::Trailer(_) => {}
                Event::Entry { header, .. } => {
                    let (comps, _) = clean_components(&header.name);
                    let offset = stream_pos(&stream);
                    let bad = |why: &str| {
                        Error::InvalidInput(format!(
                            "OCI archive {}: member {:?} {why}: the archive is not a plain OCI layout; re-create it with skopeo or podman save",
                            path.display(),
                            String::from_utf8_lossy(&header.name)
                        ))
                    };
                    // A member's name is its place in the layout: `..` (which would make a later
                    // member stand for another file) and names given twice are refused, as skopeo
                    // refuses them.
                    if header.name.split(|&b| b == b'/').any(|c| c == b"..") {
                        return Err(bad("has a '..' component"));
                    }
                    if header.kind == EntryKind::Regular
                        && members
                            .insert(join(&comps), (offset, header.size))
                            .is_some()
                    {
                        return Err(bad("appears twice"));
                    }
                    while stream.read_data(&mut buf)? > 0 {}
                }
            }
        }
        Ok(LayoutArchive {
            path: path.to_path_buf(),
            members,
        })
    }

    fn open_member(&self, name: &[u8]) -> Result<Option<Box<dyn Read + Send>>> {
        let Some(&(offset, size)) = self.members.get(name) else {
            return Ok(None);
        };
        let mut f = crate::fsutil::open_regular(None, &self.path)
            .map_err(|e| Error::io("opening", &self.path, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("seeking in", &self.path, e))?;
        Ok(Some(Box::new(f.take(size))))
    }
}

fn stream_pos<R: Read>(s: &TarStream<Counting<R>>) -> u64 {
    s.inner_ref().pos
}

impl BlobSource for LayoutArchive {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let name = format!("blobs/sha256/{}", digest.hex());
        self.open_member(name.as_bytes())?.ok_or_else(|| {
            Error::not_found(
                digest.to_string(),
                format!(
                    "blob {digest} is missing from the OCI archive {}",
                    self.path.display()
                ),
            )
        })
    }
}

impl Layout for LayoutArchive {
    fn location(&self) -> String {
        format!("OCI archive {}", self.path.display())
    }
    fn read_index(&self) -> Result<Vec<u8>> {
        let r = self.open_member(b"index.json")?.ok_or_else(|| {
            Error::not_found(
                "index.json",
                format!(
                    "{} is not an OCI archive (no index.json)",
                    self.path.display()
                ),
            )
        })?;
        read_small(r, 16 << 20, "index.json")
    }
    fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.members
            .get(format!("blobs/sha256/{}", digest.hex()).as_bytes())
            .map(|&(_, s)| s)
    }
}

/// Opens `oci-archive:FILE[:TAG]`.
pub fn open(path: &Path, tag: Option<&str>) -> Result<OpenedSource> {
    let archive = LayoutArchive::scan(path)?;
    let image = resolve(&archive, tag)?;
    Ok(OpenedSource {
        image,
        blobs: Box::new(archive),
        retry: super::retry::RetryPolicy::none(),
    })
}
