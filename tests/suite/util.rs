//! Test stores and helpers to drive podman, skopeo and `bootc-image` against them.
//!
//! Every [`TestStore`] lives in its own short temp dir (`/tmp/bt-XXXXXX/{root,run,tmp}`), because
//! podman refuses runroots longer than 50 characters, and always uses the same runroot and
//! libpod tmpdir for its graphroot (podman records them in its database). Dropping it unmounts
//! everything podman left mounted below it (deepest first) and deletes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bootc-image");

/// The graph drivers the tests cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `overlay`: one `diff/` per layer, merged by an overlay mount.
    Overlay,
    /// `vfs`: a full copy of the rootfs per layer.
    Vfs,
}

impl Driver {
    /// The driver name as podman spells it.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Vfs => "vfs",
        }
    }
}

/// Panics with a clear message unless podman and skopeo can be run.
pub fn require_tools() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let res = CHECKED.get_or_init(|| {
        for tool in ["podman", "skopeo"] {
            match Command::new(tool)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
            {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Err(format!(
                        "`{tool} --version` failed ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr)
                    ));
                }
                Err(e) => return Err(format!("cannot run `{tool}`: {e}")),
            }
        }
        Ok(())
    });
    if let Err(e) = res {
        panic!(
            "these integration tests need podman and skopeo on PATH (install them, e.g. \
             `apt-get install podman skopeo`): {e}"
        );
    }
}

/// Runs `cmd` with stdin closed and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Formats a command's output for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panics unless it succeeds, and returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd);
    assert!(out.status.success(), "{what} failed\n{}", describe(&out));
    String::from_utf8(out.stdout).expect("command output is UTF-8")
}

/// Unmounts every mount point at or below `dir`, deepest first, until none is left.
pub fn unmount_below(dir: &Path) {
    for _ in 0..16 {
        let mut points = mounts_below(dir);
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for p in points {
            if let Err(e) = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH) {
                eprintln!("warning: cannot unmount {}: {e}", p.display());
            }
        }
    }
}

/// Mount points (from /proc/self/mountinfo) at or below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Decodes the `\NNN` octal escapes of a mountinfo path.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A throw-away containers-storage store (graphroot + runroot) for one driver.
#[derive(Debug)]
pub struct TestStore {
    /// The temp dir holding everything of this store (and scratch files of the test).
    pub dir: PathBuf,
    /// `--root`
    pub root: PathBuf,
    /// `--runroot`
    pub runroot: PathBuf,
    /// podman's `--tmpdir` (libpod state), kept per store so tests do not share it.
    pub tmpdir: PathBuf,
    /// `--storage-driver`
    pub driver: Driver,
}

impl TestStore {
    /// Creates an empty store in a fresh `/tmp/bt-XXXXXX` dir.
    pub fn new(driver: Driver) -> Self {
        Self::new_in(driver, Path::new("/tmp"))
    }

    /// Creates an empty store in a fresh `PARENT/bt-XXXXXX` dir (keep `PARENT` short: the
    /// runroot must stay under 50 characters). For hardlink tests whose source must be on the
    /// store's filesystem.
    pub fn new_in(driver: Driver, parent: &Path) -> Self {
        require_tools();
        let dir = tempfile::Builder::new()
            .prefix("bt-")
            .tempdir_in(parent)
            .expect("create temp dir")
            .keep();
        let store = TestStore {
            root: dir.join("root"),
            runroot: dir.join("run"),
            tmpdir: dir.join("tmp"),
            dir,
            driver,
        };
        for d in [&store.root, &store.runroot, &store.tmpdir] {
            fs::create_dir_all(d).expect("create store dirs");
        }
        store
    }

    /// A path for scratch files of the test inside the store's temp dir (not created).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The `[driver@root+runroot]` store specifier of containers-storage references.
    pub fn spec(&self) -> String {
        format!(
            "[{}@{}+{}]",
            self.driver.name(),
            self.root.display(),
            self.runroot.display()
        )
    }

    /// `containers-storage:[…]NAME`.
    pub fn storage_ref(&self, name: &str) -> String {
        format!("containers-storage:{}{name}", self.spec())
    }

    /// A podman command bound to this store.
    pub fn podman_cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--storage-driver")
            .arg(self.driver.name())
            .arg("--tmpdir")
            .arg(&self.tmpdir)
            .arg("--events-backend")
            .arg("none");
        c
    }

    /// Runs podman on this store, panics on failure, returns stdout.
    pub fn podman_ok(&self, args: &[&str]) -> String {
        run_ok(self.podman_cmd().args(args))
    }

    /// `skopeo copy SRC containers-storage:[…]NAME`, returning the output whatever happened.
    pub fn skopeo_copy_in_output(&self, src: &str, name: &str) -> Output {
        // c/image's temporary files (left behind when a layer fails) go to the store's temp dir.
        run(Command::new("skopeo").env("TMPDIR", &self.tmpdir).args([
            "copy",
            "--quiet",
            "--insecure-policy",
            src,
            &self.storage_ref(name),
        ]))
    }

    /// `skopeo copy SRC containers-storage:[…]NAME`; panics on failure.
    pub fn skopeo_copy_in(&self, src: &str, name: &str) {
        let out = self.skopeo_copy_in_output(src, name);
        assert!(
            out.status.success(),
            "skopeo copy {src} -> {name} failed\n{}",
            describe(&out)
        );
    }

    /// `skopeo copy containers-storage:[…]NAME oci:DEST`; panics on failure.
    pub fn skopeo_copy_out(&self, name: &str, dest: &Path) {
        run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--insecure-policy",
            &self.storage_ref(name),
            &format!("oci:{}", dest.display()),
        ]));
    }

    /// Exports `name` with skopeo into `<dir>/<label>` and returns (the config's DiffIDs, the
    /// DiffIDs of the exported layer blobs as decompressed): what c/storage rebuilds from our
    /// tar-splits and files.
    pub fn exported_diff_ids(&self, name: &str, label: &str) -> (Vec<String>, Vec<String>) {
        self.try_exported_diff_ids(name, label)
            .unwrap_or_else(|e| panic!("skopeo cannot export {name}: {e}"))
    }

    /// [`Self::exported_diff_ids`], or skopeo's error when it cannot export the image.
    pub fn try_exported_diff_ids(
        &self,
        name: &str,
        label: &str,
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let out = self.scratch(label);
        let res = run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--insecure-policy",
            &self.storage_ref(name),
            &format!("oci:{}", out.display()),
        ]));
        if !res.status.success() {
            return Err(String::from_utf8_lossy(&res.stderr).trim().to_string());
        }
        let blob = |d: &str| {
            let hex = d.strip_prefix("sha256:").unwrap_or(d);
            fs::read(out.join("blobs/sha256").join(hex)).expect("read exported blob")
        };
        let json = |b: Vec<u8>| -> Value { serde_json::from_slice(&b).expect("exported JSON") };
        let index = json(fs::read(out.join("index.json")).expect("read exported index.json"));
        let manifest = json(blob(
            index["manifests"][0]["digest"]
                .as_str()
                .expect("manifest digest"),
        ));
        let config = json(blob(manifest["config"]["digest"].as_str().expect("config")));
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .expect("a list")
                .iter()
                .map(|s| s.as_str().expect("a string").to_string())
                .collect()
        };
        let layers = manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                let data = crate::fixture::decompress_any(&blob(
                    l["digest"].as_str().expect("layer digest"),
                ));
                crate::fixture::sha256_digest(&data)
            })
            .collect();
        Ok((strings(&config["rootfs"]["diff_ids"]), layers))
    }

    /// A `bootc-image` command with this store's global options.
    pub fn ours_cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        // The one-line error contract is checked on stderr: no log level from the environment.
        c.env_remove("RUST_LOG");
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--storage-driver")
            .arg(self.driver.name());
        c
    }

    /// Runs `bootc-image copy-to-storage --source SRC [--target NAME]` on this store.
    pub fn ours_copy(&self, src: &str, target: Option<&str>) -> Output {
        let mut c = self.ours_cmd();
        c.args(["copy-to-storage", "--source", src]);
        if let Some(t) = target {
            c.args(["--target", t]);
        }
        run(&mut c)
    }

    /// Like [`Self::ours_copy`] but panics unless it succeeds; returns stdout.
    pub fn ours_copy_ok(&self, src: &str, target: Option<&str>) -> String {
        let out = self.ours_copy(src, target);
        assert!(
            out.status.success(),
            "bootc-image copy-to-storage --source {src} failed\n{}",
            describe(&out)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// `podman image inspect NAME` as JSON (the first element).
    pub fn inspect(&self, name: &str) -> Value {
        let out = self.podman_ok(&["image", "inspect", name]);
        let v: Value = serde_json::from_str(&out).expect("podman image inspect JSON");
        v.get(0)
            .cloned()
            .expect("podman image inspect returned an image")
    }

    /// `podman images --format json`.
    pub fn images(&self) -> Vec<Value> {
        let out = self.podman_ok(&["images", "--format", "json"]);
        serde_json::from_str(&out).expect("podman images JSON")
    }

    /// Every name of every image, as `podman images` lists them.
    pub fn image_names(&self) -> Vec<String> {
        self.images()
            .iter()
            .flat_map(|i| i["Names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    }

    /// `podman image mount NAME`; returns the mount point.
    pub fn image_mount(&self, name: &str) -> PathBuf {
        let out = self.podman_ok(&["image", "mount", name]);
        PathBuf::from(out.trim())
    }

    /// `podman image umount NAME`.
    pub fn image_umount(&self, name: &str) {
        self.podman_ok(&["image", "umount", name]);
    }

    /// `<root>/<driver>-layers`.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join(format!("{}-layers", self.driver.name()))
    }

    /// `<root>/<driver>-images`.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join(format!("{}-images", self.driver.name()))
    }

    /// The records of layers.json (empty when the file is missing or empty).
    pub fn layer_records(&self) -> Vec<Value> {
        read_json_array(&self.layers_dir().join("layers.json"))
    }

    /// The records of images.json (empty when the file is missing or empty).
    pub fn image_records(&self) -> Vec<Value> {
        read_json_array(&self.images_dir().join("images.json"))
    }

    /// Snapshot of the graphroot for "left unchanged" checks.
    pub fn snapshot(&self) -> StoreSnapshot {
        let mut paths = BTreeSet::new();
        visit_below(&self.root, &mut |rel, _, ft| {
            paths.insert(format!("{} {rel}", type_letter(ft)));
        });
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        StoreSnapshot {
            paths,
            layers_json: read(self.layers_dir().join("layers.json")),
            images_json: read(self.images_dir().join("images.json")),
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        unmount_below(&self.dir);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Reads a JSON array file; missing or empty (whitespace) files give an empty list.
pub fn read_json_array(path: &Path) -> Vec<Value> {
    match fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Vec::new(),
        Ok(s) => serde_json::from_str(&s)
            .unwrap_or_else(|e| panic!("{} is not a JSON array: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// The state of a graphroot that must not change when a copy fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// Every path below the graphroot (with a type letter) except `*.lock` files.
    pub paths: BTreeSet<String>,
    /// Content of layers.json.
    pub layers_json: String,
    /// Content of images.json.
    pub images_json: String,
}

impl StoreSnapshot {
    /// Human-readable differences from `after` (empty when equal).
    pub fn diff(&self, after: &StoreSnapshot) -> Vec<String> {
        let mut d: Vec<String> = Vec::new();
        d.extend(
            self.paths
                .difference(&after.paths)
                .map(|p| format!("removed: {p}")),
        );
        d.extend(
            after
                .paths
                .difference(&self.paths)
                .map(|p| format!("added: {p}")),
        );
        if self.layers_json != after.layers_json {
            d.push(format!(
                "layers.json changed:\n{}\n->\n{}",
                self.layers_json, after.layers_json
            ));
        }
        if self.images_json != after.images_json {
            d.push(format!(
                "images.json changed:\n{}\n->\n{}",
                self.images_json, after.images_json
            ));
        }
        d
    }
}

/// Calls `f(relative path, path, file type)` for everything below `root`, not following symlinks,
/// each directory before its entries; lock files (`*.lock`, rewritten by every reader) are left out.
pub fn visit_below(root: &Path, f: &mut dyn FnMut(&str, &Path, fs::FileType)) {
    fn walk(base: &Path, dir: &Path, f: &mut dyn FnMut(&str, &Path, fs::FileType)) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.expect("read_dir entry");
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .expect("below base")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type().expect("file type");
            if ft.is_file() && rel.ends_with(".lock") {
                continue;
            }
            f(&rel, &path, ft);
            if ft.is_dir() {
                walk(base, &path, f);
            }
        }
    }
    walk(root, root, f);
}

/// One letter for a file type (`ls -l` style).
fn type_letter(ft: fs::FileType) -> char {
    if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_socket() {
        's'
    } else {
        '-'
    }
}

/// Metadata of one entry of a mounted image tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// File type letter.
    pub kind: char,
    /// `st_mode & 07777`, in octal.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (regular files and symlinks; 0 otherwise).
    pub size: u64,
    /// Link count (regular files only; directories' counts depend on the driver).
    pub nlink: u64,
    /// sha256 of a regular file's content.
    pub sha256: Option<String>,
    /// Symlink target.
    pub link: Option<String>,
    /// Device number of char/block devices.
    pub rdev: u64,
    /// `user.*` extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// mtime seconds and nanoseconds.
    pub mtime: (i64, i64),
}

/// A walked tree: nodes by relative path plus hard-link groups.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Every entry by path relative to the root (`""` is the root itself).
    pub nodes: BTreeMap<String, Node>,
    /// Sets of (non-directory) paths that share an inode, each sorted; only sets of 2+.
    pub hardlink_groups: BTreeSet<Vec<String>>,
}

/// The `user.*` xattrs of `path` (not following symlinks).
pub fn user_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(path, &mut buf[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return out,
        Err(e) => panic!("llistxattr {}: {e}", path.display()),
    };
    for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if !name.starts_with("user.") {
            continue;
        }
        let mut val = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut val[..])
            .unwrap_or_else(|e| panic!("lgetxattr {} {name}: {e}", path.display()));
        val.truncate(len);
        out.insert(name, val);
    }
    out
}

/// Walks `root` recursively with lstat and records everything [`Node`] holds.
pub fn walk_tree(root: &Path) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    walk_into(root, root, &mut nodes, &mut inodes);
    let hardlink_groups = inodes.into_values().filter(|v| v.len() > 1).collect();
    Tree {
        nodes,
        hardlink_groups,
    }
}

/// Records `path` (and, for a directory, everything below it) into `nodes` and `inodes`.
fn walk_into(
    root: &Path,
    path: &Path,
    nodes: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let rel = path
        .strip_prefix(root)
        .expect("below root")
        .to_string_lossy()
        .into_owned();
    let ft = md.file_type();
    let kind = type_letter(ft);
    let sha256 = ft.is_file().then(|| {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        hex::encode(Sha256::digest(&data))
    });
    let link = ft.is_symlink().then(|| {
        fs::read_link(path)
            .unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()))
            .to_string_lossy()
            .into_owned()
    });
    let node = Node {
        kind,
        mode: format!("{:04o}", md.mode() & 0o7777),
        uid: md.uid(),
        gid: md.gid(),
        size: if ft.is_file() || ft.is_symlink() {
            md.size()
        } else {
            0
        },
        nlink: if ft.is_file() { md.nlink() } else { 0 },
        sha256,
        link,
        rdev: if ft.is_char_device() || ft.is_block_device() {
            md.rdev()
        } else {
            0
        },
        xattrs: user_xattrs(path),
        mtime: (md.mtime(), md.mtime_nsec()),
    };
    if !ft.is_dir() {
        inodes
            .entry((md.dev(), md.ino()))
            .or_default()
            .push(rel.clone());
    }
    nodes.insert(rel, node);
    if ft.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        children.sort();
        for c in children {
            walk_into(root, &c, nodes, inodes);
        }
    }
}

/// Differences between two trees (`a` = reference, `b` = under test). mtimes of the paths in
/// `skip_mtime` are not compared.
pub fn diff_trees(a: &Tree, b: &Tree, skip_mtime: &[&str]) -> Vec<String> {
    let mut d = Vec::new();
    for (p, na) in &a.nodes {
        match b.nodes.get(p) {
            None => d.push(format!("{p:?}: missing in ours (reference: {na:?})")),
            Some(nb) => {
                let mut na = na.clone();
                let mut nb = nb.clone();
                if skip_mtime.contains(&p.as_str()) {
                    na.mtime = (0, 0);
                    nb.mtime = (0, 0);
                }
                if na != nb {
                    d.push(format!("{p:?}: reference {na:?}\n      ours {nb:?}"));
                }
            }
        }
    }
    for (p, nb) in &b.nodes {
        if !a.nodes.contains_key(p) {
            d.push(format!("{p:?}: only in ours: {nb:?}"));
        }
    }
    if a.hardlink_groups != b.hardlink_groups {
        d.push(format!(
            "hardlink groups: reference {:?}\n      ours {:?}",
            a.hardlink_groups, b.hardlink_groups
        ));
    }
    d
}

/// A fresh unique path `/tmp/bt-esc-<random>` for escape checks (not created).
pub fn unique_tmp_path(tag: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(&format!("bt-{tag}-"))
        .tempdir_in("/tmp")
        .expect("create unique temp dir");
    let p = dir.path().to_path_buf();
    drop(dir);
    p
}

/// A Python child takes `lockf(LOCK_EX)` (an fcntl record lock, as c/storage takes it) and holds
/// it until its stdin closes.
const HOLD_LOCK: &str = r#"
import fcntl, sys
f = open(sys.argv[1], "a+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"#;

/// A child process holding an exclusive fcntl lock on a file until released or dropped.
#[derive(Debug)]
pub struct LockHolder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl LockHolder {
    /// Creates the parent dirs of `path`, takes the lock in a python3 child and waits until it
    /// holds it.
    pub fn hold(path: &Path) -> Self {
        fs::create_dir_all(path.parent().expect("lock file parent")).expect("create lock dir");
        let mut child = Command::new("python3")
            .args(["-c", HOLD_LOCK])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 lock holder");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("holder stdout"))
            .read_line(&mut line)
            .expect("read from lock holder");
        assert_eq!(
            line.trim(),
            "locked",
            "the lock holder did not get {}",
            path.display()
        );
        LockHolder { child, stdin }
    }

    /// Releases the lock (closes the child's stdin, so it exits) and waits for the child.
    pub fn release(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for lock holder");
        assert!(status.success(), "lock holder: {status}");
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `unshare --mount` (private propagation) running a command on a booted OSTree system's mounts,
/// made from plain directories: `sysroot` bound read-only at `<dir>/sysroot` and `var` (its
/// stateroot's `var`) bound at `<dir>/var` — two mounts of one filesystem, as ostree-prepare-root
/// leaves them. After the command, the script checks that `<dir>/sysroot` is still read-only (a
/// command may make it writable only in a namespace of its own) and exits with the command's status
/// (97 if the mount became writable). Append the command and its arguments.
pub fn booted_mounts_cmd(sysroot: &Path, var: &Path, dir: &Path) -> Command {
    for d in ["sysroot", "var"] {
        fs::create_dir_all(dir.join(d)).expect("create a mount point");
    }
    let script = r#"set -e
mount --bind "$1" "$0/sysroot"
mount -o remount,bind,ro "$0/sysroot"
mount --bind "$2" "$0/var"
shift 2
set +e
"$@"
rc=$?
if touch "$0/sysroot/.rw-probe" 2>/dev/null; then echo "the sysroot mount became writable" >&2; exit 97; fi
exit $rc"#;
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(dir)
        .arg(sysroot)
        .arg(var);
    c
}

/// Asserts the failure contract: non-zero exit, exactly one stderr line starting with `error: `,
/// which contains every string of `mentions`. Returns that line.
pub fn assert_clean_failure(out: &Output, what: &str, mentions: &[&str]) -> String {
    assert!(
        !out.status.success(),
        "{what}: expected a failure\n{}",
        describe(out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "{what}: stderr must be one line starting with `error: `\n{}",
        describe(out)
    );
    for m in mentions {
        assert!(
            lines[0].contains(m),
            "{what}: the error should mention {m:?}\n{}",
            describe(out)
        );
    }
    lines[0].to_string()
}

/// The release binary `name` of the tool workspace `tests/<name>` (its own Cargo workspace: the
/// fixture tools and the proxy client), built on first use when `scripts/test.sh` has not built it.
pub fn workspace_tool(name: &str) -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("tests")
        .join(name);
    let bin = dir.join("target/release").join(name);
    if !bin.exists() {
        run_ok(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--quiet", "--manifest-path"])
                .arg(dir.join("Cargo.toml")),
        );
    }
    bin
}
