//! Whiteouts as each driver wants them: overlay gets a 0:0 character device for a deleted path and
//! `trusted.overlay.opaque` for an opaque directory; vfs deletes.

use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType, Mode, XattrFlags};
use rustix::io::Errno;

use super::super::path::join;
use super::super::tar_header::TarHeader;
use super::*;
use crate::error::{Error, Result};
use crate::fsutil::{proc_path, remove_all_at, remove_children};

impl TreeWriter {
    /// Applies the whiteout entry `base` in `parent_comps` as the tree's style wants it.
    pub(super) fn whiteout(
        &mut self,
        parent_comps: &[&[u8]],
        base: &[u8],
        h: &TarHeader,
    ) -> Result<()> {
        // A whiteout may remove files still queued for the file thread.
        self.flush_files()?;
        self.known.clear();
        let root_path = self.root_path.clone();
        let style = self.style;
        let parent_path = join(parent_comps);
        // `.wh.`, `.wh..` and `.wh...` would name the directory itself or its parent: on vfs that
        // would delete outside the entry's directory (up to every other layer), so refuse them
        // before any style acts, as c/storage refuses a path out of the layer.
        let orig = &base[WHITEOUT_PREFIX.len()..];
        if base != WHITEOUT_OPAQUE && (orig.is_empty() || orig == b"." || orig == b"..") {
            return Err(Error::malformed_tar(format!(
                "invalid whiteout {:?}",
                String::from_utf8_lossy(&h.name)
            )));
        }
        if style == WhiteoutStyle::Delete {
            return self.delete_whited_out(parent_comps, base, orig);
        }
        let parent = match self.parent(parent_comps) {
            Ok(p) => p,
            // c/storage ignores ENOTDIR here: `.wh.foo` then `foo/.wh.bar` (foo is a whiteout).
            Err(Error::Io { source, .. })
                if base != WHITEOUT_OPAQUE
                    && source.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if base == WHITEOUT_OPAQUE {
            let p = proc_path(parent.as_fd(), b"");
            rustix::fs::lsetxattr(
                p.as_slice(),
                OVERLAY_OPAQUE_XATTR,
                b"y",
                XattrFlags::empty(),
            )
            .map_err(|e| errno("marking opaque", &root_path, &parent_path, e))?;
            return Ok(());
        }
        // An overlay layer's tree starts empty: whatever is already at the name, this layer
        // created. c/storage's whiteout conversion then fails (EEXIST) and so do we.
        rustix::fs::mknodat(
            &*parent,
            orig,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| match e {
            Errno::EXIST => Error::malformed_tar(format!(
                "{} whites out {:?}, which the same layer creates",
                String::from_utf8_lossy(&h.name),
                String::from_utf8_lossy(orig)
            )),
            e => errno("creating whiteout", &root_path, orig, e),
        })?;
        let uid = rustix::fs::Uid::from_raw(id(h.uid, &h.name)?);
        let gid = rustix::fs::Gid::from_raw(id(h.gid, &h.name)?);
        rustix::fs::chownat(
            &*parent,
            orig,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| errno("chown", &root_path, orig, e))
    }

    /// A whiteout on vfs: the named entry (`.wh.NAME`) or everything this layer did not unpack in
    /// the directory (`.wh..wh..opq`) is deleted.
    fn delete_whited_out(
        &mut self,
        parent_comps: &[&[u8]],
        base: &[u8],
        orig: &[u8],
    ) -> Result<()> {
        let parent_path = join(parent_comps);
        // c/storage walks the opaque directory by its name without following it: when the
        // name is a symlink, nothing is removed.
        if base == WHITEOUT_OPAQUE
            && let Some((&last, above)) = parent_comps.split_last()
        {
            let above = self.parent(above)?;
            if rustix::fs::statat(&*above, last, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
            {
                return Ok(());
            }
        }
        self.removed = true;
        let unpacked = std::mem::take(&mut self.unpacked);
        let parent = self.parent(parent_comps)?;
        let r = if base == WHITEOUT_OPAQUE {
            remove_children(parent.as_fd(), |name| {
                let mut p = parent_path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                !unpacked.contains(&p)
            })
        } else {
            remove_all_at(parent.as_fd(), orig)
        };
        self.unpacked = unpacked;
        self.cache.clear();
        r.map_err(|e| errno("applying whiteout in", &self.root_path, &parent_path, e))
    }
}
