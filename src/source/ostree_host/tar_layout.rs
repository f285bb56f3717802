//! The tar layout ostree-ext (0.15) exports an OSTree commit as, entry by entry, so the DiffIDs match
//! upstream's export: the commit and metadata objects under `sysroot/ostree/repo/objects/`, each content
//! object once, and every real path as a hardlink to its object. Headers are built with the `tar` crate,
//! as upstream builds them, so each header is byte-identical; content is never copied into a tar.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

use ostree::gio;
use ostree::glib;
use ostree::prelude::*;

use super::gvariant::{DirMeta, DirTree, parse_dirmeta, parse_dirtree};
use super::meta_objects::MetaObjects;
use super::objects::{ObjectInfos, object_path as repo_object_path};
use super::repo::{ChunkContent, gerr};
use crate::error::{Error, Result};
use crate::layer::entry::{BuiltEntries, Content, Entry, EntryMeta};
use crate::layer::read_ahead::ReadAhead;
use crate::layer::sink::LayerSink;
use crate::layer::tar_stream::parse_built_header;

/// Where the repository lives in the tar stream.
const OSTREEDIR: &str = "sysroot/ostree";
/// The repository configuration written into every layer.
const REPO_CONFIG: &str = "[core]\nrepo_version=1\nmode=bare-split-xattrs\n";

fn tar_err(e: std::io::Error) -> Error {
    Error::Internal(format!("building a tar header: {e}"))
}

/// `objects/xx/rest.TYPE` under the tar's repository.
fn object_path(checksum: &str, suffix: &str) -> String {
    let (first, rest) = checksum.split_at(2.min(checksum.len()));
    format!("{OSTREEDIR}/repo/objects/{first}/{rest}.{suffix}")
}

/// `/usr/etc` goes back to `/etc` in the tar stream (v0 paths with `./`).
fn map_path_v0(p: &str) -> String {
    match p.strip_prefix("./usr/etc") {
        // Path::join with an empty remainder leaves a trailing '/': upstream writes "./etc/".
        Some("") => "./etc/".to_string(),
        Some(r) if r.starts_with('/') => format!("./etc{r}"),
        _ => p.to_string(),
    }
}

/// v1 paths: no leading `/`, and `usr/etc` → `etc`.
fn path_v1(p: &str) -> String {
    let p = p.strip_prefix('/').unwrap_or(p);
    if p == "usr/etc" || p.starts_with("usr/etc/") {
        p["usr/".len()..].to_string()
    } else {
        p.to_string()
    }
}

fn join(dir: &str, name: &str) -> String {
    // camino's join: "./" + "usr" = "./usr"
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Writes layers of an OSTree commit in ostree-ext's v1 tar layout.
pub(crate) struct LayoutWriter<'a> {
    repo: &'a ostree::Repo,
    repo_path: &'a Path,
    objects: &'a ObjectInfos,
    meta: &'a MetaObjects,
    read_ahead: Option<&'a ReadAhead>,
    bare: bool,
    commit: String,
    commit_v: glib::Variant,
    builder: tar::Builder<Vec<u8>>,
    built: BuiltEntries,
    objects_dir: Option<std::os::fd::OwnedFd>,
    structure_only: bool,
    wrote_initdirs: bool,
    wrote_vartmp: bool,
    wrote_dirtree: HashSet<String>,
    wrote_dirmeta: HashSet<String>,
    wrote_content: HashSet<String>,
    wrote_xattrs: HashSet<String>,
}

impl std::fmt::Debug for LayoutWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayoutWriter")
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

impl<'a> LayoutWriter<'a> {
    /// A writer for one layer of `commit`, whose content objects are described by `objects`.
    pub fn new(
        repo: &'a ostree::Repo,
        repo_path: &'a Path,
        objects: &'a ObjectInfos,
        meta: &'a MetaObjects,
        commit: &str,
    ) -> Result<Self> {
        let (commit_v, _) = repo
            .load_commit(commit)
            .map_err(|e| gerr(&format!("loading commit {commit}"), e))?;
        Ok(LayoutWriter {
            repo,
            repo_path,
            objects,
            meta,
            read_ahead: None,
            bare: repo.mode() == ostree::RepoMode::Bare,
            commit: commit.to_string(),
            commit_v,
            builder: tar::Builder::new(Vec::new()),
            built: BuiltEntries::default(),
            objects_dir: crate::fsutil::open_dir(&repo_path.join("objects")).ok(),
            structure_only: false,
            wrote_initdirs: false,
            wrote_vartmp: false,
            wrote_dirtree: HashSet::new(),
            wrote_dirmeta: HashSet::new(),
            wrote_content: HashSet::new(),
            wrote_xattrs: HashSet::new(),
        })
    }

    /// Reports every object file read to `ra`, whose helper reads ahead of this writer.
    pub(crate) fn with_read_ahead(mut self, ra: &'a ReadAhead) -> Self {
        self.read_ahead = Some(ra);
        self
    }

    /// Opens the content object `csum` (at `path`): relative to the open `objects/` directory,
    /// so the kernel walks two components instead of the whole path, once per object.
    fn open_object(&self, csum: &str, path: &Path) -> Result<std::fs::File> {
        let io = |e: std::io::Error| Error::io("reading", path, e);
        match (&self.objects_dir, csum.split_at_checked(2)) {
            (Some(dir), Some((a, b))) => crate::fsutil::open_regular_at(
                std::os::fd::AsFd::as_fd(dir),
                format!("{a}/{b}.file"),
            )
            .map_err(io),
            _ => crate::fsutil::open_regular(None, path).map_err(io),
        }
    }

    /// One entry into `sink`: the header bytes built here (parsed back for the tree), after the
    /// previous entry's padding.
    fn put(&mut self, sink: &mut LayerSink<'_>, header: &[u8], content: Content<'_>) -> Result<()> {
        let parsed = parse_built_header(header)?;
        let meta = EntryMeta::Header(&parsed);
        let raw = self.built.raw(header, meta.content_size());
        sink.entry(Entry { raw, meta, content })?;
        Ok(())
    }

    /// Ends the layer's stream in `sink`: the last padding and the end-of-archive blocks.
    pub fn finish(&self, sink: &mut LayerSink<'_>) -> Result<()> {
        sink.trailer(&self.built.trailer())
    }

    /// The header bytes `append_data` writes (extension entries included), without data.
    fn header_bytes(&mut self, h: &mut tar::Header, path: &str) -> Result<Vec<u8>> {
        self.builder.get_mut().clear();
        self.builder
            .append_data(h, path, std::io::empty())
            .map_err(tar_err)?;
        Ok(std::mem::take(self.builder.get_mut()))
    }

    fn link_header_bytes(
        &mut self,
        h: &mut tar::Header,
        path: &str,
        target: &str,
    ) -> Result<Vec<u8>> {
        self.builder.get_mut().clear();
        self.builder.append_link(h, path, target).map_err(tar_err)?;
        Ok(std::mem::take(self.builder.get_mut()))
    }

    fn default_dir(&mut self, sink: &mut LayerSink<'_>, path: &str) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o755);
        h.set_size(0);
        let raw = self.header_bytes(&mut h, path)?;
        self.put(sink, &raw, Content::None)
    }

    fn default_data(&mut self, sink: &mut LayerSink<'_>, path: &str, buf: &[u8]) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o644);
        h.set_size(buf.len() as u64);
        let raw = self.header_bytes(&mut h, path)?;
        self.put(sink, &raw, Content::Bytes(buf))
    }

    fn default_hardlink(
        &mut self,
        sink: &mut LayerSink<'_>,
        path: &str,
        target: &str,
    ) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o644);
        h.set_size(0);
        let raw = self.link_header_bytes(&mut h, path, target)?;
        self.put(sink, &raw, Content::None)
    }

    /// `sysroot/ostree/repo/…`: the directories, 256 object dirs and the config.
    pub(crate) fn write_repo_structure(&mut self, sink: &mut LayerSink<'_>) -> Result<()> {
        if self.wrote_initdirs {
            return Ok(());
        }
        for p in [
            "sysroot",
            "sysroot/ostree",
            "sysroot/ostree/repo",
            "sysroot/ostree/repo/objects",
        ] {
            self.default_dir(sink, p)?;
        }
        for d in 0..=0xffu32 {
            self.default_dir(sink, &format!("{OSTREEDIR}/repo/objects/{d:02x}"))?;
        }
        for d in [
            "extensions",
            "refs",
            "refs/heads",
            "refs/mirrors",
            "refs/remotes",
            "state",
            "tmp",
            "tmp/cache",
        ] {
            self.default_dir(sink, &format!("{OSTREEDIR}/repo/{d}"))?;
        }
        self.default_data(
            sink,
            &format!("{OSTREEDIR}/repo/config"),
            REPO_CONFIG.as_bytes(),
        )?;
        self.wrote_initdirs = true;
        Ok(())
    }

    fn meta_object(&self, t: ostree::ObjectType, csum: &str) -> Result<Cow<'a, [u8]>> {
        self.meta.get_or_read(self.repo, self.repo_path, t, csum)
    }

    fn append_object(
        &mut self,
        sink: &mut LayerSink<'_>,
        t: ostree::ObjectType,
        csum: &str,
        data: &[u8],
    ) -> Result<()> {
        let (set, suffix) = match t {
            ostree::ObjectType::Commit => (None, "commit"),
            ostree::ObjectType::CommitMeta => (None, "commitmeta"),
            ostree::ObjectType::DirTree => (Some(&mut self.wrote_dirtree), "dirtree"),
            _ => (Some(&mut self.wrote_dirmeta), "dirmeta"),
        };
        if let Some(set) = set
            && !set.insert(csum.to_string())
        {
            return Ok(());
        }
        self.default_data(sink, &object_path(csum, suffix), data)
    }

    fn append_dir(&mut self, sink: &mut LayerSink<'_>, path: &str, meta: &DirMeta) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_uid(u64::from(meta.uid));
        h.set_gid(u64::from(meta.gid));
        h.set_mode(meta.mode & !S_IFMT);
        let raw = self.header_bytes(&mut h, path)?;
        self.put(sink, &raw, Content::None)
    }

    fn dirmeta(&mut self, sink: &mut LayerSink<'_>, csum: &str) -> Result<DirMeta> {
        let data = self.meta_object(ostree::ObjectType::DirMeta, csum)?;
        self.append_object(sink, ostree::ObjectType::DirMeta, csum, &data)?;
        parse_dirmeta(&data, &format!("dirmeta {csum}"))
    }

    /// The whole commit structure (root dir, repo structure, commit object, every dirtree/dirmeta and
    /// directory); with `structure_only`, no file content. Then `var/tmp`.
    pub(crate) fn write_commit(
        &mut self,
        sink: &mut LayerSink<'_>,
        structure_only: bool,
    ) -> Result<()> {
        self.structure_only = structure_only;
        let (_, _, _, _, _, _, tree, meta) = self
            .commit_v
            .get::<ostree::CommitVariantType>()
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "commit {} is not a valid commit object",
                    self.commit
                ))
            })?;
        let tree = hex::encode(tree);
        let meta = hex::encode(meta);
        let meta_data = self.meta_object(ostree::ObjectType::DirMeta, &meta)?;
        let parsed = parse_dirmeta(&meta_data, &format!("dirmeta {meta}"))?;
        self.append_dir(sink, "./", &parsed)?;
        self.write_repo_structure(sink)?;
        let commit = self.commit.clone();
        let commit_v = self.commit_v.clone();
        self.append_object(
            sink,
            ostree::ObjectType::Commit,
            &commit,
            commit_v.data_as_bytes().as_ref(),
        )?;
        if let Some(detached) = self
            .repo
            .read_commit_detached_metadata(&commit, gio::Cancellable::NONE)
            .map_err(|e| gerr("reading detached metadata", e))?
        {
            self.append_object(
                sink,
                ostree::ObjectType::CommitMeta,
                &commit,
                detached.data_as_bytes().as_ref(),
            )?;
        }
        self.append_object(sink, ostree::ObjectType::DirMeta, &meta, &meta_data)?;
        self.append_dirtree(sink, "./", &tree, true)?;
        if !self.wrote_vartmp {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(0o1777);
            let raw = self.header_bytes(&mut h, "var/tmp")?;
            self.put(sink, &raw, Content::None)?;
        }
        self.structure_only = false;
        Ok(())
    }

    fn append_dirtree(
        &mut self,
        sink: &mut LayerSink<'_>,
        dirpath: &str,
        csum: &str,
        is_root: bool,
    ) -> Result<()> {
        let data = self.meta_object(ostree::ObjectType::DirTree, csum)?;
        self.append_object(sink, ostree::ObjectType::DirTree, csum, &data)?;
        let DirTree { files, dirs } = parse_dirtree(&data, &format!("dirtree {csum}"))?;
        drop(data);
        if !self.structure_only {
            for f in files {
                let (objpath, h) = self.append_content(sink, &f.checksum)?;
                let sub = map_path_v0(&join(dirpath, &f.name));
                self.append_content_hardlink(sink, &objpath, h, &sub)?;
            }
        }
        if dirpath == "var/tmp" {
            self.wrote_vartmp = true;
        }
        for d in dirs {
            let meta = self.dirmeta(sink, &d.meta)?;
            if is_root && d.name == "sysroot" {
                continue;
            }
            let sub = map_path_v0(&join(dirpath, &d.name));
            self.append_dir(sink, &sub, &meta)?;
            self.append_dirtree(sink, &sub, &d.tree, false)?;
        }
        Ok(())
    }

    /// The object's own entry (once per layer) with its xattrs objects first; returns its tar path and
    /// the header to derive its hardlinks from, exactly as upstream mutates it.
    fn append_content(
        &mut self,
        sink: &mut LayerSink<'_>,
        csum: &str,
    ) -> Result<(String, tar::Header)> {
        let path = object_path(csum, "file");
        let info = self.objects.get(csum)?;
        let mut h = tar::Header::new_gnu();
        h.set_uid(u64::from(info.uid));
        h.set_gid(u64::from(info.gid));
        h.set_mode(info.mode);
        if info.symlink.is_none() {
            h.set_size(info.size);
        }
        if self.wrote_content.insert(csum.to_string()) {
            // xattrs objects go before the content that refers to them.
            let xcsum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&info.xattrs));
            let xpath = object_path(&xcsum, "file-xattrs");
            if self.wrote_xattrs.insert(xcsum) {
                self.default_data(sink, &xpath, &info.xattrs)?;
            }
            self.default_hardlink(sink, &object_path(csum, "file-xattrs-link"), &xpath)?;
            match &info.symlink {
                None => {
                    let size = info.size;
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(size);
                    let raw = self.header_bytes(&mut h, &path)?;
                    if self.bare {
                        let file = repo_object_path(self.repo_path, csum, "file");
                        let f = self.open_object(csum, &file)?;
                        self.put(
                            sink,
                            &raw,
                            Content::Object {
                                file: f,
                                path: &file,
                                linkable: true,
                            },
                        )?;
                        if let Some(ra) = self.read_ahead {
                            ra.consumed(size);
                        }
                    } else {
                        let (stream, _, _) = self
                            .repo
                            .load_file(csum, gio::Cancellable::NONE)
                            .map_err(|e| gerr(&format!("loading file object {csum} (the repository may be damaged: run ostree fsck)"), e))?;
                        let stream = stream.ok_or_else(|| {
                            Error::InvalidInput(format!("object {csum} has no content"))
                        })?;
                        let mut read = stream.into_read();
                        self.put(sink, &raw, Content::Stream(&mut read))?;
                    }
                }
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    let raw = if target.contains("//") {
                        h.set_link_name_literal(target).map_err(tar_err)?;
                        self.header_bytes(&mut h, &path)?
                    } else {
                        self.link_header_bytes(&mut h, &path, target)?
                    };
                    self.put(sink, &raw, Content::None)?;
                }
            }
        }
        Ok((path, h))
    }

    /// A real path: a hardlink to its object (an empty regular file stays a file).
    fn append_content_hardlink(
        &mut self,
        sink: &mut LayerSink<'_>,
        src: &str,
        mut h: tar::Header,
        dest: &str,
    ) -> Result<()> {
        let size = h.size().map_err(tar_err)?;
        h.set_size(0);
        if h.entry_type() == tar::EntryType::Regular && size == 0 {
            let raw = self.header_bytes(&mut h, dest)?;
            self.put(sink, &raw, Content::None)
        } else {
            h.set_entry_type(tar::EntryType::Link);
            h.set_link_name(src).map_err(tar_err)?;
            let raw = self.header_bytes(&mut h, dest)?;
            self.put(sink, &raw, Content::None)
        }
    }

    /// A chunk's objects, in checksum order, each followed by hardlinks at its real paths.
    pub(crate) fn write_chunk(
        &mut self,
        sink: &mut LayerSink<'_>,
        chunk: &ChunkContent,
    ) -> Result<()> {
        for (csum, paths) in chunk {
            let (objpath, h) = self.append_content(sink, csum)?;
            for p in paths {
                self.append_content_hardlink(sink, &objpath, h.clone(), &path_v1(p))?;
            }
        }
        Ok(())
    }
}

/// `S_IFMT`: ostree modes carry the file type, tar modes do not.
const S_IFMT: u32 = 0o170000;
