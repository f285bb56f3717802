//! Graph drivers: where a layer's tree lives and how it is created and removed (overlay, vfs).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use storage_format::overlay as ov;

use super::tree_copy::copy_tree;
use crate::error::{Error, Result};
use crate::layer::tree_writer::WhiteoutStyle;

/// A graph driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// overlayfs: each layer's `diff/` holds only its changes.
    Overlay,
    /// vfs: each layer's directory holds the full filesystem.
    Vfs,
}

impl DriverKind {
    /// Parses a driver name as podman's `--storage-driver` takes it.
    pub fn parse(name: &str) -> Result<DriverKind> {
        match name {
            "" | "overlay" | "overlay2" => Ok(DriverKind::Overlay),
            "vfs" => Ok(DriverKind::Vfs),
            other => Err(Error::Unsupported(format!(
                "storage driver {other:?}; use overlay or vfs"
            ))),
        }
    }

    /// The driver's name, used in directory names (`overlay-layers`, `vfs-images`).
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Overlay => "overlay",
            DriverKind::Vfs => "vfs",
        }
    }

    /// How whiteouts are written in this driver's trees.
    pub fn whiteouts(self) -> WhiteoutStyle {
        match self {
            DriverKind::Overlay => WhiteoutStyle::Overlay,
            DriverKind::Vfs => WhiteoutStyle::Delete,
        }
    }
}

/// A driver bound to a store's graph root.
#[derive(Debug, Clone)]
pub struct Driver {
    kind: DriverKind,
    home: PathBuf,
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", path, e)),
        Err(e) => Err(Error::io("creating directory", path, e)),
    }
}

/// Writes a small driver file (`link`, `lower`, mode 0644) as c/storage does: plainly, since the layer
/// record is still flagged incomplete while they are written.
fn write_small(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|e| Error::io("writing", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("chmod", path, e))
}

fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Store(format!(
            "{} is not a directory",
            path.display()
        ))),
        Err(_) => match mkdir(path, mode) {
            // Another process created it first (concurrent openers of a new store).
            Err(_) if path.is_dir() && !path.is_symlink() => Ok(()),
            r => r,
        },
    }
}

impl Driver {
    /// The driver of kind `kind` whose home is under `graphroot`.
    pub fn new(kind: DriverKind, graphroot: &Path) -> Driver {
        Driver {
            kind,
            home: graphroot.join(kind.name()),
        }
    }

    /// The driver kind.
    pub fn kind(&self) -> DriverKind {
        self.kind
    }

    /// Creates the driver's home directories if missing.
    pub fn init(&self) -> Result<()> {
        ensure_dir(&self.home, 0o700)?;
        match self.kind {
            DriverKind::Overlay => ensure_dir(&self.home.join(ov::LINK_DIR), 0o755),
            DriverKind::Vfs => ensure_dir(&self.home.join("dir"), 0o700),
        }
    }

    fn layer_dir(&self, id: &str) -> PathBuf {
        match self.kind {
            DriverKind::Overlay => self.home.join(id),
            DriverKind::Vfs => self.home.join("dir").join(id),
        }
    }

    /// The directory a layer's entries are written to (`<id>/diff` or `dir/<id>`).
    pub(crate) fn tree_path(&self, id: &str) -> PathBuf {
        match self.kind {
            DriverKind::Overlay => self.home.join(id).join("diff"),
            DriverKind::Vfs => self.layer_dir(id),
        }
    }

    /// Whether the driver has a directory for the layer.
    pub fn exists(&self, id: &str) -> bool {
        self.layer_dir(id).exists()
    }

    /// Creates the layer's directories. For overlay this needs the parent's `link` and `lower`; for vfs
    /// the parent's tree is copied, so the parent must be complete.
    pub fn create(&self, id: &str, parent: Option<&str>) -> Result<()> {
        self.create_with(id, parent, true)
    }

    /// Like [`create`](Self::create), but with `with_tree` false the layer's tree itself
    /// ([`tree_path`](Self::tree_path)) is left for the caller to create, e.g. as a copy of another
    /// store's tree.
    pub(crate) fn create_with(
        &self,
        id: &str,
        parent: Option<&str>,
        with_tree: bool,
    ) -> Result<()> {
        let dir = self.layer_dir(id);
        match self.kind {
            DriverKind::Overlay => {
                mkdir(&dir, 0o700)?;
                let diff = dir.join("diff");
                let diff_mode = match parent {
                    Some(p) => std::fs::metadata(self.tree_path(p))
                        .map(|m| m.permissions().mode() & 0o7777)
                        .map_err(|e| Error::io("reading parent layer", self.tree_path(p), e))?,
                    None => 0o555,
                };
                if with_tree {
                    mkdir(&diff, diff_mode)?;
                }
                let link = storage_format::new_link_id();
                write_small(&dir.join("link"), link.as_bytes())?;
                let l = self.home.join(ov::LINK_DIR).join(&link);
                std::os::unix::fs::symlink(format!("../{id}/diff"), &l)
                    .map_err(|e| Error::io("creating link", &l, e))?;
                match parent {
                    Some(p) => {
                        let pdir = self.layer_dir(p);
                        let plink = std::fs::read_to_string(pdir.join("link"))
                            .map_err(|e| Error::io("reading", pdir.join("link"), e))?;
                        let plower = match std::fs::read_to_string(pdir.join("lower")) {
                            Ok(s) => Some(s),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                            Err(e) => return Err(Error::io("reading", pdir.join("lower"), e)),
                        };
                        let lower = ov::lower_chain(plink.trim(), plower.as_deref().map(str::trim));
                        write_small(&dir.join("lower"), lower.as_bytes())?;
                    }
                    None => mkdir(&dir.join("empty"), 0o700)?,
                }
                mkdir(&dir.join("work"), 0o700)?;
                mkdir(&dir.join("merged"), 0o700)?;
                Ok(())
            }
            DriverKind::Vfs if !with_tree => Ok(()),
            DriverKind::Vfs => match parent {
                Some(p) => copy_tree(&self.layer_dir(p), &dir),
                // c/storage's vfs gives a base layer's root 0555 (a "./" entry may change it).
                None => mkdir(&dir, 0o555),
            },
        }
    }

    /// The permission bits of the layer's tree root: taken before a layer is written, they are
    /// what [`reset_tree`](Self::reset_tree) restores.
    pub(crate) fn tree_mode(&self, id: &str) -> Result<u32> {
        let tree = self.tree_path(id);
        std::fs::symlink_metadata(&tree)
            .map(|m| m.permissions().mode() & 0o7777)
            .map_err(|e| Error::io("reading", &tree, e))
    }

    /// Empties the layer's tree for writing it again, as it was made: overlay's `diff` anew with
    /// `mode` (its other files, which children's `lower` files name, stay), vfs's tree copied
    /// anew from its (complete) parent.
    pub(crate) fn reset_tree(&self, id: &str, parent: Option<&str>, mode: u32) -> Result<()> {
        let tree = self.tree_path(id);
        crate::fsutil::remove_all(&tree).map_err(|e| Error::io("removing", &tree, e))?;
        match self.kind {
            DriverKind::Overlay => mkdir(&tree, mode),
            DriverKind::Vfs => self.create(id, parent),
        }
    }

    /// Removes everything the driver holds for the layer. Missing pieces are not errors.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.layer_dir(id);
        if self.kind == DriverKind::Overlay
            && let Ok(link) = std::fs::read_to_string(dir.join("link"))
        {
            let l = self.home.join(ov::LINK_DIR).join(link.trim());
            if !link.trim().is_empty() && !link.contains('/') {
                crate::fsutil::remove_all(&l).map_err(|e| Error::io("removing", &l, e))?;
            }
        }
        crate::fsutil::remove_all(&dir).map_err(|e| Error::io("removing", &dir, e))
    }
}
