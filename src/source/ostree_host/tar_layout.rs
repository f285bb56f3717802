//! The tar layout ostree-ext (0.15) exports an OSTree commit as, entry by entry, so the DiffIDs match
//! upstream's export: the commit and metadata objects under `sysroot/ostree/repo/objects/`, each content
//! object once, and every real path as a hardlink to its object. Headers are built with the `tar` crate,
//! as upstream builds them, so each header is byte-identical; content is never copied into a tar.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use ostree::gio;
use ostree::glib;
use ostree::prelude::*;

use crate::error::{Error, Result};
use crate::layer::synth::{Content, EntrySink};

/// Where the repository lives in the tar stream.
const OSTREEDIR: &str = "sysroot/ostree";
/// The repository configuration written into every layer.
const REPO_CONFIG: &str = "[core]\nrepo_version=1\nmode=bare-split-xattrs\n";

/// Objects of one layer: checksum → real paths (absolute, as found walking the commit).
pub type ChunkContent = BTreeMap<String, Vec<String>>;

fn gerr(what: &str, e: glib::Error) -> Error {
    Error::InvalidInput(format!("{what}: {e}"))
}

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
pub struct LayoutWriter<'a> {
    repo: &'a ostree::Repo,
    repo_path: &'a Path,
    bare: bool,
    commit: String,
    commit_v: glib::Variant,
    builder: tar::Builder<Vec<u8>>,
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
    /// A writer for one layer of `commit`.
    pub fn new(repo: &'a ostree::Repo, repo_path: &'a Path, commit: &str) -> Result<Self> {
        let (commit_v, _) = repo
            .load_commit(commit)
            .map_err(|e| gerr(&format!("loading commit {commit}"), e))?;
        Ok(LayoutWriter {
            repo,
            repo_path,
            bare: repo.mode() == ostree::RepoMode::Bare,
            commit: commit.to_string(),
            commit_v,
            builder: tar::Builder::new(Vec::new()),
            structure_only: false,
            wrote_initdirs: false,
            wrote_vartmp: false,
            wrote_dirtree: HashSet::new(),
            wrote_dirmeta: HashSet::new(),
            wrote_content: HashSet::new(),
            wrote_xattrs: HashSet::new(),
        })
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

    fn default_dir(&mut self, sink: &mut dyn EntrySink, path: &str) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o755);
        h.set_size(0);
        let raw = self.header_bytes(&mut h, path)?;
        sink.entry(&raw, Content::None)
    }

    fn default_data(&mut self, sink: &mut dyn EntrySink, path: &str, buf: &[u8]) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o644);
        h.set_size(buf.len() as u64);
        let raw = self.header_bytes(&mut h, path)?;
        sink.entry(&raw, Content::Bytes(buf))
    }

    fn default_hardlink(
        &mut self,
        sink: &mut dyn EntrySink,
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
        sink.entry(&raw, Content::None)
    }

    /// `sysroot/ostree/repo/…`: the directories, 256 object dirs and the config.
    pub fn write_repo_structure(&mut self, sink: &mut dyn EntrySink) -> Result<()> {
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

    fn variant(&self, t: ostree::ObjectType, csum: &str) -> Result<glib::Variant> {
        self.repo
            .load_variant(t, csum)
            .map_err(|e| gerr(&format!("loading object {csum}"), e))
    }

    fn append_object(
        &mut self,
        sink: &mut dyn EntrySink,
        t: ostree::ObjectType,
        csum: &str,
        v: &glib::Variant,
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
        let data = v.data_as_bytes();
        self.default_data(sink, &object_path(csum, suffix), data.as_ref())
    }

    fn append_dir(
        &mut self,
        sink: &mut dyn EntrySink,
        path: &str,
        meta: &ostree::DirMetaParsed,
    ) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_uid(u64::from(meta.uid));
        h.set_gid(u64::from(meta.gid));
        h.set_mode(meta.mode & !libc_s_ifmt());
        let raw = self.header_bytes(&mut h, path)?;
        sink.entry(&raw, Content::None)
    }

    fn dirmeta(&mut self, sink: &mut dyn EntrySink, csum: &str) -> Result<ostree::DirMetaParsed> {
        let v = self.variant(ostree::ObjectType::DirMeta, csum)?;
        self.append_object(sink, ostree::ObjectType::DirMeta, csum, &v)?;
        ostree::DirMetaParsed::from_variant(&v)
            .map_err(|e| Error::InvalidInput(format!("dirmeta {csum}: {e}")))
    }

    /// The whole commit structure (root dir, repo structure, commit object, every dirtree/dirmeta and
    /// directory); with `structure_only`, no file content. Then `var/tmp`.
    pub fn write_commit(&mut self, sink: &mut dyn EntrySink, structure_only: bool) -> Result<()> {
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
        let meta_v = self.variant(ostree::ObjectType::DirMeta, &meta)?;
        let parsed = ostree::DirMetaParsed::from_variant(&meta_v)
            .map_err(|e| Error::InvalidInput(format!("dirmeta {meta}: {e}")))?;
        self.append_dir(sink, "./", &parsed)?;
        self.write_repo_structure(sink)?;
        let commit = self.commit.clone();
        let commit_v = self.commit_v.clone();
        self.append_object(sink, ostree::ObjectType::Commit, &commit, &commit_v)?;
        if let Some(detached) = self
            .repo
            .read_commit_detached_metadata(&commit, gio::Cancellable::NONE)
            .map_err(|e| gerr("reading detached metadata", e))?
        {
            self.append_object(sink, ostree::ObjectType::CommitMeta, &commit, &detached)?;
        }
        self.append_object(sink, ostree::ObjectType::DirMeta, &meta, &meta_v)?;
        self.append_dirtree(sink, "./", &tree, true)?;
        if !self.wrote_vartmp {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(0o1777);
            let raw = self.header_bytes(&mut h, "var/tmp")?;
            sink.entry(&raw, Content::None)?;
        }
        self.structure_only = false;
        Ok(())
    }

    fn append_dirtree(
        &mut self,
        sink: &mut dyn EntrySink,
        dirpath: &str,
        csum: &str,
        is_root: bool,
    ) -> Result<()> {
        let v = self.variant(ostree::ObjectType::DirTree, csum)?;
        self.append_object(sink, ostree::ObjectType::DirTree, csum, &v)?;
        let (files, dirs) = v
            .get::<ostree::TreeVariantType>()
            .ok_or_else(|| Error::InvalidInput(format!("dirtree {csum} is not valid")))?;
        if !self.structure_only {
            for (name, fcsum) in files {
                let fcsum = hex::encode(fcsum);
                let (objpath, h) = self.append_content(sink, &fcsum)?;
                let sub = map_path_v0(&join(dirpath, &name));
                self.append_content_hardlink(sink, &objpath, h, &sub)?;
            }
        }
        if dirpath == "var/tmp" {
            self.wrote_vartmp = true;
        }
        for (name, tcsum, mcsum) in dirs {
            let meta = self.dirmeta(sink, &hex::encode(mcsum))?;
            if is_root && name == "sysroot" {
                continue;
            }
            let sub = map_path_v0(&join(dirpath, &name));
            self.append_dir(sink, &sub, &meta)?;
            self.append_dirtree(sink, &sub, &hex::encode(tcsum), false)?;
        }
        Ok(())
    }

    /// The object's own entry (once per layer) with its xattrs objects first; returns its tar path and
    /// the header to derive its hardlinks from, exactly as upstream mutates it.
    fn append_content(
        &mut self,
        sink: &mut dyn EntrySink,
        csum: &str,
    ) -> Result<(String, tar::Header)> {
        let path = object_path(csum, "file");
        let (stream, info, xattrs) = self
            .repo
            .load_file(csum, gio::Cancellable::NONE)
            .map_err(|e| gerr(&format!("loading file object {csum} (the repository may be damaged: run ostree fsck)"), e))?;
        let mut h = tar::Header::new_gnu();
        h.set_uid(u64::from(info.attribute_uint32("unix::uid")));
        h.set_gid(u64::from(info.attribute_uint32("unix::gid")));
        h.set_mode(info.attribute_uint32("unix::mode") & !libc_s_ifmt());
        let size = u64::try_from(info.size()).unwrap_or(0);
        if stream.is_some() {
            h.set_size(size);
        }
        if self.wrote_content.insert(csum.to_string()) {
            // xattrs objects go before the content that refers to them.
            let xdata = xattrs.data_as_bytes();
            let xcsum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(xdata.as_ref()));
            let xpath = object_path(&xcsum, "file-xattrs");
            if self.wrote_xattrs.insert(xcsum) {
                self.default_data(sink, &xpath, xdata.as_ref())?;
            }
            self.default_hardlink(sink, &object_path(csum, "file-xattrs-link"), &xpath)?;
            match stream {
                Some(stream) => {
                    if info.file_type() != gio::FileType::Regular {
                        return Err(Error::InvalidInput(format!(
                            "object {csum} has content but is not a regular file"
                        )));
                    }
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(size);
                    let raw = self.header_bytes(&mut h, &path)?;
                    if self.bare {
                        let file = self.repo_path.join(format!(
                            "objects/{}/{}.file",
                            &csum[..2],
                            &csum[2..]
                        ));
                        drop(stream);
                        sink.entry(
                            &raw,
                            Content::File {
                                path: &file,
                                size,
                                linkable: true,
                            },
                        )?;
                    } else {
                        let reader = stream.into_read();
                        sink.entry(&raw, Content::Stream(Box::new(reader)))?;
                    }
                }
                None => {
                    if info.file_type() != gio::FileType::SymbolicLink {
                        return Err(Error::InvalidInput(format!(
                            "object {csum} is neither a file nor a symlink"
                        )));
                    }
                    let target = info.symlink_target().ok_or_else(|| {
                        Error::InvalidInput(format!("symlink object {csum} has no target"))
                    })?;
                    let target = target
                        .to_str()
                        .ok_or_else(|| {
                            Error::InvalidInput(format!(
                                "symlink object {csum} has a non-UTF-8 target"
                            ))
                        })?
                        .to_string();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    let raw = if target.contains("//") {
                        h.set_link_name_literal(&target).map_err(tar_err)?;
                        self.header_bytes(&mut h, &path)?
                    } else {
                        self.link_header_bytes(&mut h, &path, &target)?
                    };
                    sink.entry(&raw, Content::None)?;
                }
            }
        }
        Ok((path, h))
    }

    /// A real path: a hardlink to its object (an empty regular file stays a file).
    fn append_content_hardlink(
        &mut self,
        sink: &mut dyn EntrySink,
        src: &str,
        mut h: tar::Header,
        dest: &str,
    ) -> Result<()> {
        let size = h.size().map_err(tar_err)?;
        h.set_size(0);
        if h.entry_type() == tar::EntryType::Regular && size == 0 {
            let raw = self.header_bytes(&mut h, dest)?;
            sink.entry(&raw, Content::None)
        } else {
            h.set_entry_type(tar::EntryType::Link);
            h.set_link_name(src).map_err(tar_err)?;
            let raw = self.header_bytes(&mut h, dest)?;
            sink.entry(&raw, Content::None)
        }
    }

    /// A chunk's objects, in checksum order, each followed by hardlinks at its real paths.
    pub fn write_chunk(&mut self, sink: &mut dyn EntrySink, chunk: &ChunkContent) -> Result<()> {
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
const fn libc_s_ifmt() -> u32 {
    0o170000
}

/// Walks a commit: every content object with its absolute paths (in walk order), as ostree-ext's
/// chunking starts from.
pub fn commit_objects(repo: &ostree::Repo, commit: &str) -> Result<ChunkContent> {
    let (commit_v, _) = repo
        .load_commit(commit)
        .map_err(|e| gerr(&format!("loading commit {commit}"), e))?;
    let (_, _, _, _, _, _, tree, _) =
        commit_v.get::<ostree::CommitVariantType>().ok_or_else(|| {
            Error::InvalidInput(format!("commit {commit} is not a valid commit object"))
        })?;
    let mut out = ChunkContent::new();
    walk(repo, &hex::encode(tree), &mut PathBuf::from("/"), &mut out)?;
    Ok(out)
}

fn walk(repo: &ostree::Repo, csum: &str, path: &mut PathBuf, out: &mut ChunkContent) -> Result<()> {
    let v = repo
        .load_variant(ostree::ObjectType::DirTree, csum)
        .map_err(|e| gerr(&format!("loading dirtree {csum}"), e))?;
    let (files, dirs) = v
        .get::<ostree::TreeVariantType>()
        .ok_or_else(|| Error::InvalidInput(format!("dirtree {csum} is not valid")))?;
    for (name, fcsum) in files {
        let p = path.join(&name);
        out.entry(hex::encode(fcsum))
            .or_default()
            .push(p.to_string_lossy().into_owned());
    }
    for (name, tcsum, _) in dirs {
        path.push(&name);
        walk(repo, &hex::encode(tcsum), path, out)?;
        path.pop();
    }
    Ok(())
}

/// The names of a layer commit's root entries: ostree-ext stores chunk layers as commits whose files are
/// named by the object checksums they carry.
pub fn layer_commit_objects(repo: &ostree::Repo, layer_ref: &str) -> Result<Vec<String>> {
    let rev = repo
        .require_rev(layer_ref)
        .map_err(|e| gerr(&format!("resolving {layer_ref}"), e))?;
    let (commit_v, _) = repo
        .load_commit(&rev)
        .map_err(|e| gerr(&format!("loading commit {rev}"), e))?;
    let (_, _, _, _, _, _, tree, _) = commit_v
        .get::<ostree::CommitVariantType>()
        .ok_or_else(|| Error::InvalidInput(format!("commit {rev} is not a valid commit object")))?;
    let v = repo
        .load_variant(ostree::ObjectType::DirTree, &hex::encode(tree))
        .map_err(|e| gerr("loading dirtree", e))?;
    let (files, dirs) = v
        .get::<ostree::TreeVariantType>()
        .ok_or_else(|| Error::InvalidInput("dirtree is not valid".into()))?;
    let mut names: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
    names.extend(dirs.into_iter().map(|(n, _, _)| n));
    Ok(names)
}
