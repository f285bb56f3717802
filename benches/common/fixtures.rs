//! The benchmark image: a generated, `/usr`-like root filesystem — or, with `BENCH_TREE=debian`, a
//! real Debian 12 root filesystem made by debootstrap on first use (network needed once) — written
//! as four OCI layouts (1 gzip layer, 40 gzip layers, 1 zstd layer, 1 uncompressed layer), cached
//! under `target/bench-fixtures/<version>-<scale>/`; and the check that a store holds it.
//!
//! Shared by the benches through `#[path = "common/fixtures.rs"] mod fixtures;`.

use anyhow::{Context, Result, anyhow};
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "scale_trees.rs"]
#[allow(dead_code, reason = "only the scale bench uses the scale fixtures")]
pub mod scale_trees;

/// Bump when the generator or the layouts change: it keys the fixture cache.
pub const FIXTURE_VERSION: &str = "v1";
/// The tag every fixture layout carries in its `index.json`.
pub const TAG: &str = "bench";
/// The name the tools give the image in their stores.
pub const IMAGE_NAME: &str = "localhost/bench:latest";
/// mtime base of every generated entry (2023-11-14).
const EPOCH: u64 = 1_700_000_000;
/// `created` of the fixture configs.
const CREATED: &str = "2023-11-14T22:13:20Z";
/// Seed of the tree generator.
const TREE_SEED: u64 = 0x626f_6f74_6369_6d67;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness and content

/// SplitMix64: tiny, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Log-uniform in `lo..hi`: as many files of 1–2 KiB as of 100–200 KiB.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        (l + (h - l) * self.unit()).exp() as u64
    }

    /// An element of `items` (non-empty).
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A fixed vocabulary of made-up words: file names and text content.
#[derive(Debug)]
struct Vocab {
    /// The words, most frequent first.
    words: Vec<String>,
}

impl Vocab {
    /// The vocabulary, the same on every run.
    fn new() -> Self {
        const SYLLABLES: [&str; 40] = [
            "ab", "el", "in", "or", "us", "ta", "ne", "ri", "lo", "ma", "co", "de", "fi", "gu",
            "ha", "ke", "li", "mo", "nu", "pe", "qu", "ra", "si", "to", "vi", "wa", "xe", "yo",
            "ze", "st", "tr", "ch", "sh", "th", "ph", "ion", "ent", "ing", "er", "al",
        ];
        let mut rng = Rng::new(0x766f_6361_6273);
        let words = (0..2048)
            .map(|_| {
                let n = rng.range(1, 4);
                (0..n)
                    .map(|_| SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize])
                    .collect::<String>()
            })
            .collect();
        Vocab { words }
    }

    /// A word, with a Zipf-like skew towards the first ones.
    fn word(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        &self.words[(u * u * u * self.words.len() as f64) as usize]
    }
}

/// What a generated file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentKind {
    /// Lines of words: source code, docs, config (gzip ≈ 3×).
    Text,
    /// Structured binary: opcodes, zero padding, strings, some noise, like ELF files (gzip ≈ 2×).
    Binary,
    /// Incompressible: already compressed files (`.gz`, `.png`).
    Random,
}

/// The bytes of a regular file.
#[derive(Debug, Clone)]
enum Data {
    /// Generated on the fly from a seed.
    Generated {
        /// Seed of this file's content.
        seed: u64,
        /// The kind of content.
        kind: ContentKind,
    },
    /// Fixed bytes (dpkg lists, os-release).
    Literal(Vec<u8>),
    /// The bytes of a file on disk (a real root filesystem).
    OnDisk(PathBuf),
}

/// A `Read` that produces `size` bytes of generated content.
struct Content<'a> {
    /// Per-file generator.
    rng: Rng,
    /// What to produce.
    kind: ContentKind,
    /// Words for text and strings.
    vocab: &'a Vocab,
    /// Bytes still to hand out.
    remaining: u64,
    /// The current chunk.
    buf: Vec<u8>,
    /// Read position in `buf`.
    pos: usize,
}

impl<'a> Content<'a> {
    /// A reader of `size` bytes of `kind` content seeded by `seed`.
    fn new(seed: u64, kind: ContentKind, size: u64, vocab: &'a Vocab) -> Self {
        Content {
            rng: Rng::new(seed),
            kind,
            vocab,
            remaining: size,
            buf: Vec::with_capacity(9000),
            pos: 0,
        }
    }

    /// Produces the next chunk of about 8 KiB.
    fn refill(&mut self) {
        /// Three-byte "opcodes" that binary content repeats, as machine code does.
        const OPCODES: [[u8; 3]; 16] = [
            [0x48, 0x89, 0xe5],
            [0x48, 0x83, 0xec],
            [0x48, 0x8b, 0x45],
            [0x89, 0x7d, 0xfc],
            [0xe8, 0x00, 0x00],
            [0x0f, 0x1f, 0x44],
            [0x48, 0x8d, 0x3d],
            [0x31, 0xc0, 0x5d],
            [0x41, 0x57, 0x41],
            [0x4c, 0x89, 0xf7],
            [0xc3, 0x66, 0x90],
            [0x74, 0x0e, 0x48],
            [0x85, 0xc0, 0x75],
            [0xff, 0x15, 0x00],
            [0x8b, 0x05, 0x00],
            [0x48, 0x39, 0xc7],
        ];
        self.buf.clear();
        self.pos = 0;
        let rng = &mut self.rng;
        match self.kind {
            ContentKind::Text => {
                while self.buf.len() < 8192 {
                    let indent = [0usize, 0, 4, 8][rng.below(4) as usize];
                    self.buf.extend(std::iter::repeat_n(b' ', indent));
                    let line_len = rng.range(16, 90) as usize;
                    let start = self.buf.len();
                    while self.buf.len() - start < line_len {
                        self.buf.extend_from_slice(self.vocab.word(rng).as_bytes());
                        match rng.below(16) {
                            0 => self.buf.extend_from_slice(b", "),
                            1 => self.buf.extend_from_slice(b"("),
                            2 => self.buf.extend_from_slice(b") = "),
                            3 => self.buf.extend_from_slice(b"."),
                            _ => self.buf.push(b' '),
                        }
                    }
                    self.buf.push(b'\n');
                }
            }
            ContentKind::Binary => {
                for _ in 0..128 {
                    match rng.below(10) {
                        0 | 1 => {
                            for _ in 0..8 {
                                self.buf.extend_from_slice(&rng.next_u64().to_le_bytes());
                            }
                        }
                        2..=5 => {
                            for _ in 0..16 {
                                let op = OPCODES[rng.below(16) as usize];
                                self.buf.extend_from_slice(&op);
                                self.buf.push(rng.below(8) as u8 * 8);
                            }
                        }
                        6 | 7 => self.buf.extend_from_slice(&[0u8; 64]),
                        _ => {
                            let start = self.buf.len();
                            while self.buf.len() - start < 64 {
                                self.buf.extend_from_slice(self.vocab.word(rng).as_bytes());
                                self.buf.push(0);
                            }
                        }
                    }
                }
            }
            ContentKind::Random => {
                for _ in 0..1024 {
                    self.buf.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
            }
        }
    }
}

impl Read for Content<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.buf.len() {
            self.refill();
        }
        let n = out
            .len()
            .min(self.buf.len() - self.pos)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// The tree

/// What a tree entry is.
#[derive(Debug, Clone)]
enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// Its bytes.
        data: Data,
    },
    /// A symbolic link to this target.
    Symlink(String),
    /// A hard link to this earlier path (same package, so same layer).
    Hardlink(String),
}

/// One entry of the tree.
#[derive(Debug, Clone)]
struct Node {
    /// Type and content.
    kind: Kind,
    /// Permission bits (with setuid/setgid/sticky).
    mode: u32,
    /// Owning group.
    gid: u64,
    /// Modification time.
    mtime: u64,
    /// The package that created it; decides its layer in the 40-layer split.
    pkg: usize,
}

/// A whole generated root filesystem.
#[derive(Debug, Default)]
struct Tree {
    /// Entries by path (relative, no leading `/`); sorted, so parents come before children.
    nodes: BTreeMap<String, Node>,
    /// Number of packages (package 0 is the base layout).
    packages: usize,
}

/// Counts that describe a tree.
#[derive(Debug, Default, Clone, Copy)]
struct TreeStats {
    /// Directories.
    dirs: usize,
    /// Regular files.
    files: usize,
    /// Symbolic links.
    symlinks: usize,
    /// Hard links (entries besides the first name).
    hardlinks: usize,
    /// Sum of regular file sizes.
    bytes: u64,
    /// Files of at least 1 MiB.
    big_files: usize,
}

impl TreeStats {
    /// All entries.
    fn entries(&self) -> usize {
        self.dirs + self.files + self.symlinks + self.hardlinks
    }
}

impl Tree {
    /// Counts of each kind of entry.
    fn stats(&self) -> TreeStats {
        let mut s = TreeStats::default();
        for node in self.nodes.values() {
            match &node.kind {
                Kind::Dir => s.dirs += 1,
                Kind::File { size, .. } => {
                    s.files += 1;
                    s.bytes += size;
                    if *size >= 1 << 20 {
                        s.big_files += 1;
                    }
                }
                Kind::Symlink(_) => s.symlinks += 1,
                Kind::Hardlink(_) => s.hardlinks += 1,
            }
        }
        s
    }

    /// The paths of layer `layer` of `layers`: the entries of its packages plus every ancestor
    /// directory they need, as real layer tars carry them. Sorted.
    fn layer_paths(&self, layer: usize, layers: usize) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        for (path, node) in &self.nodes {
            if node.pkg * layers / self.packages != layer {
                continue;
            }
            out.insert(path.as_str());
            let mut p = path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                out.insert(p);
            }
        }
        out
    }
}

/// Generates a [`Tree`] package by package.
struct TreeBuilder<'a> {
    /// The tree so far.
    tree: Tree,
    /// The generator.
    rng: Rng,
    /// Words for names.
    vocab: &'a Vocab,
    /// Package names in use.
    names: HashSet<String>,
    /// Paths added since the last package began (for its dpkg file list).
    added: Vec<String>,
}

/// Locale directories that packages ship translations into.
const LANGS: [&str; 40] = [
    "ar", "ast", "be", "bg", "ca", "cs", "da", "de", "el", "en_GB", "eo", "es", "et", "eu", "fi",
    "fr", "gl", "he", "hr", "hu", "id", "it", "ja", "ko", "lt", "nb", "nl", "pl", "pt", "pt_BR",
    "ro", "ru", "sk", "sl", "sr", "sv", "tr", "uk", "vi", "zh_CN",
];

impl<'a> TreeBuilder<'a> {
    /// An empty builder.
    fn new(vocab: &'a Vocab) -> Self {
        TreeBuilder {
            tree: Tree::default(),
            rng: Rng::new(TREE_SEED),
            vocab,
            names: HashSet::new(),
            added: Vec::new(),
        }
    }

    /// A random mtime within a year after [`EPOCH`].
    fn mtime(&mut self) -> u64 {
        EPOCH + self.rng.below(365 * 86400)
    }

    /// Adds `path` and its missing ancestors as directories.
    fn dir(&mut self, path: &str, mode: u32, pkg: usize) {
        if let Some(i) = path.rfind('/') {
            self.dir(&path[..i], 0o755, pkg);
        }
        if !self.tree.nodes.contains_key(path) {
            let mtime = self.mtime();
            self.added.push(path.to_owned());
            self.tree.nodes.insert(
                path.to_owned(),
                Node {
                    kind: Kind::Dir,
                    mode,
                    gid: 0,
                    mtime,
                    pkg,
                },
            );
        }
    }

    /// Adds a non-directory entry unless the path is taken; returns whether it was added.
    fn leaf(&mut self, path: String, kind: Kind, mode: u32, pkg: usize) -> bool {
        if self.tree.nodes.contains_key(&path) {
            return false;
        }
        // Every ancestor must be absent or a directory.
        let mut p = path.as_str();
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if self
                .tree
                .nodes
                .get(p)
                .is_some_and(|n| !matches!(n.kind, Kind::Dir))
            {
                return false;
            }
        }
        if let Some(i) = path.rfind('/') {
            self.dir(&path[..i], 0o755, pkg);
        }
        let mtime = self.mtime();
        self.added.push(path.clone());
        self.tree.nodes.insert(
            path,
            Node {
                kind,
                mode,
                gid: 0,
                mtime,
                pkg,
            },
        );
        true
    }

    /// Adds a generated file.
    fn file(&mut self, path: String, size: u64, kind: ContentKind, mode: u32, pkg: usize) -> bool {
        let seed = self.rng.next_u64();
        self.leaf(
            path,
            Kind::File {
                size,
                data: Data::Generated { seed, kind },
            },
            mode,
            pkg,
        )
    }

    /// Adds a file with fixed content.
    fn literal(&mut self, path: String, bytes: Vec<u8>, pkg: usize) {
        let size = bytes.len() as u64;
        self.leaf(
            path,
            Kind::File {
                size,
                data: Data::Literal(bytes),
            },
            0o644,
            pkg,
        );
    }

    /// A package name not used yet.
    fn unique_name(&mut self) -> String {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut name = self.vocab.word(&mut self.rng).to_owned();
            if self.rng.chance(0.4) || attempt > 4 {
                name.push('-');
                name.push_str(self.vocab.word(&mut self.rng));
            }
            if attempt > 8 {
                name.push_str(&attempt.to_string());
            }
            if name.len() > 1 && self.names.insert(name.clone()) {
                return name;
            }
        }
    }

    /// The base layout: merged-/usr symlinks, top directories, a few /etc files, and one path
    /// and one link target longer than 100 bytes (GNU long-name records).
    fn base(&mut self) {
        for d in [
            "usr/bin",
            "usr/sbin",
            "usr/lib/x86_64-linux-gnu",
            "usr/lib64",
            "usr/share/doc",
            "usr/share/man/man1",
            "usr/include",
            "etc",
            "var/lib/dpkg/info",
            "var/cache",
            "home",
            "proc",
            "sys",
            "dev",
            "run",
            "srv",
            "opt",
            "mnt",
        ] {
            self.dir(d, 0o755, 0);
        }
        self.dir("tmp", 0o1777, 0);
        self.dir("root", 0o700, 0);
        self.dir("var/log", 0o2755, 0);
        if let Some(n) = self.tree.nodes.get_mut("var/log") {
            n.gid = 4;
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            self.leaf(link.into(), Kind::Symlink(target.into()), 0o777, 0);
        }
        self.literal(
            "usr/lib/os-release".into(),
            b"PRETTY_NAME=\"Bench OS 1\"\nNAME=\"Bench OS\"\nID=bench\nVERSION_ID=1\n".to_vec(),
            0,
        );
        self.leaf(
            "etc/os-release".into(),
            Kind::Symlink("../usr/lib/os-release".into()),
            0o777,
            0,
        );
        for f in ["etc/passwd", "etc/group", "etc/shadow", "etc/hostname"] {
            let size = self.rng.log_uniform(20, 2000);
            let mode = if f == "etc/shadow" { 0o640 } else { 0o644 };
            self.file(f.into(), size, ContentKind::Text, mode, 0);
        }
        let long_dir = "usr/share/bench/a-rather-long-directory-name-for-testing/and-another-level-of-nesting/with-one-more-level-inside";
        self.file(
            format!("{long_dir}/and-finally-a-file-with-a-long-name.txt"),
            1234,
            ContentKind::Text,
            0o644,
            0,
        );
        self.leaf(
            "usr/share/bench/long-link".into(),
            Kind::Symlink(format!(
                "../../../{long_dir}/and-finally-a-file-with-a-long-name.txt"
            )),
            0o777,
            0,
        );
    }

    /// Adds package number `pkg`: one of a library, a tool, a module tree or a data package,
    /// with docs, maybe translations and config, and its dpkg file list.
    fn package(&mut self, pkg: usize) {
        let name = self.unique_name();
        self.added.clear();
        let roll = self.rng.unit();
        if roll < 0.30 {
            self.library(&name, pkg);
        } else if roll < 0.55 {
            self.tool(&name, pkg);
        } else if roll < 0.82 {
            self.modules(&name, pkg);
        } else {
            self.share(&name, pkg);
        }
        let doc = format!("usr/share/doc/{name}");
        let size = self.rng.log_uniform(300, 30_000);
        self.file(
            format!("{doc}/copyright"),
            size,
            ContentKind::Text,
            0o644,
            pkg,
        );
        let size = self.rng.log_uniform(300, 12_000);
        self.file(
            format!("{doc}/changelog.Debian.gz"),
            size,
            ContentKind::Random,
            0o644,
            pkg,
        );
        if self.rng.chance(0.3) {
            let langs = self.rng.range(3, LANGS.len() as u64) as usize;
            for lang in &LANGS[..langs] {
                let size = self.rng.log_uniform(800, 80_000);
                self.file(
                    format!("usr/share/locale/{lang}/LC_MESSAGES/{name}.mo"),
                    size,
                    ContentKind::Binary,
                    0o644,
                    pkg,
                );
            }
        }
        if self.rng.chance(0.08) {
            for _ in 0..self.rng.range(1, 5) {
                let file = format!("etc/{name}/{}.conf", self.vocab.word(&mut self.rng));
                let size = self.rng.log_uniform(100, 8000);
                self.file(file, size, ContentKind::Text, 0o644, pkg);
            }
        }
        // The dpkg file list and md5sums name what this package added.
        let mut list = String::new();
        let mut sums = String::new();
        for path in &self.added {
            let _ = writeln!(list, "/{path}");
            let _ = writeln!(
                sums,
                "{:016x}{:016x}  {path}",
                self.rng.next_u64(),
                self.rng.next_u64()
            );
        }
        self.literal(
            format!("var/lib/dpkg/info/{name}.list"),
            list.into_bytes(),
            pkg,
        );
        self.literal(
            format!("var/lib/dpkg/info/{name}.md5sums"),
            sums.into_bytes(),
            pkg,
        );
    }

    /// A shared library with its soname symlink, maybe a plugin directory.
    fn library(&mut self, name: &str, pkg: usize) {
        let dir = "usr/lib/x86_64-linux-gnu";
        let major = self.rng.range(0, 9);
        let soname = format!("lib{name}.so.{major}");
        let real = format!(
            "{soname}.{}.{}",
            self.rng.range(0, 30),
            self.rng.range(0, 9)
        );
        let size = if self.rng.chance(0.03) {
            self.rng.log_uniform(2 << 20, 14 << 20)
        } else {
            self.rng.log_uniform(12_000, 1_200_000)
        };
        self.file(
            format!("{dir}/{real}"),
            size,
            ContentKind::Binary,
            0o644,
            pkg,
        );
        self.leaf(format!("{dir}/{soname}"), Kind::Symlink(real), 0o777, pkg);
        if self.rng.chance(0.3) {
            for _ in 0..self.rng.range(2, 12) {
                let plugin = format!("{dir}/{name}/lib{}.so", self.vocab.word(&mut self.rng));
                let size = self.rng.log_uniform(8_000, 200_000);
                self.file(plugin, size, ContentKind::Binary, 0o644, pkg);
            }
        }
    }

    /// Executables in /usr/bin with man pages; some hard-linked or symlinked aliases.
    fn tool(&mut self, name: &str, pkg: usize) {
        for i in 0..self.rng.range(1, 4) {
            let bin = if i == 0 {
                name.to_owned()
            } else {
                format!("{name}-{}", self.vocab.word(&mut self.rng))
            };
            let dir = if self.rng.chance(0.15) {
                "usr/sbin"
            } else {
                "usr/bin"
            };
            let size = if self.rng.chance(0.03) {
                self.rng.log_uniform(1 << 20, 8 << 20)
            } else {
                self.rng.log_uniform(6_000, 500_000)
            };
            let mode = if self.rng.chance(0.01) { 0o4755 } else { 0o755 };
            let path = format!("{dir}/{bin}");
            if !self.file(path.clone(), size, ContentKind::Binary, mode, pkg) {
                continue;
            }
            if self.rng.chance(0.2) {
                // Like /usr/bin/perl and /usr/bin/perl5.36.0: sorts after its target.
                let alias = format!("{path}{}.{}", self.rng.range(1, 9), self.rng.range(0, 40));
                self.leaf(alias, Kind::Hardlink(path.clone()), mode, pkg);
            }
            if self.rng.chance(0.2) {
                let alias = format!("{dir}/{}", self.vocab.word(&mut self.rng));
                self.leaf(alias, Kind::Symlink(bin.clone()), 0o777, pkg);
            }
            let size = self.rng.log_uniform(600, 15_000);
            self.file(
                format!("usr/share/man/man1/{bin}.1.gz"),
                size,
                ContentKind::Random,
                0o644,
                pkg,
            );
        }
    }

    /// A tree of interpreted modules (Python, Perl, Node), up to three levels deep.
    fn modules(&mut self, name: &str, pkg: usize) {
        let (root, ext) = *self.rng.pick(&[
            &("usr/lib/python3/dist-packages", "py"),
            &("usr/share/perl5", "pm"),
            &("usr/lib/node_modules", "js"),
            &("usr/share", "sh"),
        ]);
        let mut dirs = vec![(format!("{root}/{name}"), 0u32)];
        for _ in 0..self.rng.range(3, 60) {
            if self.rng.chance(0.15) {
                let (parent, depth) = dirs[self.rng.below(dirs.len() as u64) as usize].clone();
                if depth < 3 {
                    dirs.push((
                        format!("{parent}/{}", self.vocab.word(&mut self.rng)),
                        depth + 1,
                    ));
                }
            }
            let dir = dirs[self.rng.below(dirs.len() as u64) as usize].0.clone();
            let stem = self.vocab.word(&mut self.rng).to_owned();
            if self.rng.chance(0.05) {
                let size = self.rng.log_uniform(20_000, 500_000);
                self.file(
                    format!("{dir}/_{stem}.so"),
                    size,
                    ContentKind::Binary,
                    0o644,
                    pkg,
                );
            } else {
                let size = self.rng.log_uniform(200, 40_000);
                self.file(
                    format!("{dir}/{stem}.{ext}"),
                    size,
                    ContentKind::Text,
                    0o644,
                    pkg,
                );
            }
        }
    }

    /// Data files in /usr/share/NAME: text, images, binary tables, sometimes a big one.
    fn share(&mut self, name: &str, pkg: usize) {
        let dir = format!("usr/share/{name}");
        for _ in 0..self.rng.range(2, 30) {
            let stem = self.vocab.word(&mut self.rng).to_owned();
            let roll = self.rng.below(5);
            let (ext, kind, size) = match roll {
                0 | 1 => ("txt", ContentKind::Text, self.rng.log_uniform(200, 60_000)),
                2 => (
                    "png",
                    ContentKind::Random,
                    self.rng.log_uniform(500, 100_000),
                ),
                _ => (
                    "dat",
                    ContentKind::Binary,
                    self.rng.log_uniform(1_000, 300_000),
                ),
            };
            self.file(format!("{dir}/{stem}.{ext}"), size, kind, 0o644, pkg);
        }
        if self.rng.chance(0.05) {
            let size = self.rng.log_uniform(1 << 20, 10 << 20);
            self.file(
                format!("{dir}/{name}.db"),
                size,
                ContentKind::Binary,
                0o644,
                pkg,
            );
        }
    }
}

/// Generates the tree: packages are added until it has at least `min_entries` entries and
/// `min_bytes` bytes of file content.
fn generate_tree(vocab: &Vocab, min_entries: usize, min_bytes: u64) -> Tree {
    let mut b = TreeBuilder::new(vocab);
    b.base();
    let mut pkg = 1;
    loop {
        let stats = b.tree.stats();
        if stats.entries() >= min_entries && stats.bytes >= min_bytes {
            break;
        }
        b.package(pkg);
        pkg += 1;
    }
    b.tree.packages = pkg;
    b.tree
}

// ---------------------------------------------------------------------------------------------
// Writing OCI layouts

/// Layer compression of a fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `tar+gzip`, level 6 like c/image's default.
    Gzip,
    /// `tar+zstd`, level 3 like c/image's default.
    Zstd,
    /// Plain `tar`.
    None,
}

impl Compression {
    /// The OCI layer media type.
    fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// One benchmarked image layout.
#[derive(Debug, Clone, Copy)]
pub struct FixtureSpec {
    /// Directory name and table label.
    pub name: &'static str,
    /// Number of layers the tree is split into.
    pub layers: usize,
    /// Their compression.
    pub compression: Compression,
    /// Minimum speed-up over skopeo we aim at, if any.
    #[allow(dead_code, reason = "only copy_to_storage reads it")]
    pub target_ratio: Option<f64>,
}

/// The layouts, in the order they run.
pub const FIXTURES: [FixtureSpec; 4] = [
    FixtureSpec {
        name: "gzip-1",
        layers: 1,
        compression: Compression::Gzip,
        target_ratio: Some(5.0),
    },
    FixtureSpec {
        name: "gzip-40",
        layers: 40,
        compression: Compression::Gzip,
        target_ratio: Some(6.0),
    },
    FixtureSpec {
        name: "zstd-1",
        layers: 1,
        compression: Compression::Zstd,
        target_ratio: Some(3.5),
    },
    FixtureSpec {
        name: "none-1",
        layers: 1,
        compression: Compression::None,
        target_ratio: None,
    },
];

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    /// Where the bytes go.
    inner: W,
    /// SHA-256 so far.
    hash: Sha256,
    /// Bytes so far.
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blob file being written.
type BlobFile = Hashing<BufWriter<File>>;

/// A compressor in front of a blob file.
enum Encoder {
    /// gzip.
    Gzip(GzEncoder<BlobFile>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, BlobFile>),
    /// No compression.
    Plain(BlobFile),
}

/// One compressed copy of the layer being written, destined for one layout.
struct BlobOut {
    /// The compressor.
    encoder: Encoder,
    /// Temporary path of the blob.
    tmp: PathBuf,
    /// The layout directory the blob belongs to.
    layout: PathBuf,
    /// Its compression.
    compression: Compression,
}

/// An OCI descriptor.
#[derive(Debug, Clone)]
pub struct Desc {
    /// Media type.
    media_type: &'static str,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Length in bytes.
    size: u64,
}

impl Desc {
    /// The descriptor as JSON.
    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// Receives a layer tar once, computes its DiffID and writes it compressed to each output.
struct LayerSink {
    /// SHA-256 of the uncompressed tar.
    diff: Sha256,
    /// The outputs.
    outs: Vec<BlobOut>,
}

impl LayerSink {
    /// Opens one temporary blob per `(layout, compression)`.
    fn new(targets: &[(PathBuf, Compression)], serial: usize) -> Result<Self> {
        let mut outs = Vec::new();
        for (layout, compression) in targets {
            let tmp = layout.join(format!("blobs/.tmp-{serial}"));
            let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let blob = Hashing {
                inner: BufWriter::with_capacity(1 << 20, file),
                hash: Sha256::new(),
                size: 0,
            };
            let encoder = match compression {
                Compression::Gzip => {
                    Encoder::Gzip(GzEncoder::new(blob, flate2::Compression::new(6)))
                }
                Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(blob, 3)?),
                Compression::None => Encoder::Plain(blob),
            };
            outs.push(BlobOut {
                encoder,
                tmp,
                layout: layout.clone(),
                compression: *compression,
            });
        }
        Ok(LayerSink {
            diff: Sha256::new(),
            outs,
        })
    }

    /// Finishes every output; returns the DiffID and, per output, its layout and descriptor.
    fn finish(self) -> Result<(String, Vec<(PathBuf, Desc)>)> {
        let diff_id = format!("sha256:{}", hex::encode(self.diff.finalize()));
        let mut descs = Vec::new();
        for out in self.outs {
            let blob = match out.encoder {
                Encoder::Gzip(e) => e.finish()?,
                Encoder::Zstd(e) => e.finish()?,
                Encoder::Plain(b) => b,
            };
            let hex = hex::encode(blob.hash.finalize());
            blob.inner
                .into_inner()
                .map_err(|e| anyhow!("flushing {}: {}", out.tmp.display(), e.error()))?;
            let dest = out.layout.join("blobs/sha256").join(&hex);
            fs::rename(&out.tmp, &dest)
                .with_context(|| format!("renaming {}", out.tmp.display()))?;
            descs.push((
                out.layout,
                Desc {
                    media_type: out.compression.media_type(),
                    digest: format!("sha256:{hex}"),
                    size: blob.size,
                },
            ));
        }
        Ok((diff_id, descs))
    }
}

impl Write for LayerSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.diff.update(buf);
        for out in &mut self.outs {
            match &mut out.encoder {
                Encoder::Gzip(e) => e.write_all(buf)?,
                Encoder::Zstd(e) => e.write_all(buf)?,
                Encoder::Plain(b) => b.write_all(buf)?,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends one tree entry to a tar.
fn append_node<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    node: &Node,
    vocab: &Vocab,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(node.mtime);
    h.set_uid(0);
    h.set_gid(node.gid);
    h.set_mode(node.mode);
    h.set_username("root")?;
    h.set_groupname(if node.gid == 4 { "adm" } else { "root" })?;
    h.set_size(0);
    match &node.kind {
        Kind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut h, format!("{path}/"), io::empty())
        }
        Kind::File { size, data } => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(*size);
            match data {
                Data::Generated { seed, kind } => {
                    tar.append_data(&mut h, path, Content::new(*seed, *kind, *size, vocab))
                }
                Data::Literal(bytes) => tar.append_data(&mut h, path, bytes.as_slice()),
                Data::OnDisk(file) => tar.append_data(&mut h, path, File::open(file)?),
            }
        }
        Kind::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, path, target)
        }
        Kind::Hardlink(target) => {
            h.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut h, path, target)
        }
    }
}

/// A written layer and, per target layout, its blob descriptor.
type LayerBlobs = (WrittenLayer, Vec<(PathBuf, Desc)>);

/// A layer as the layouts record it.
#[derive(Debug, Clone)]
struct WrittenLayer {
    /// `sha256:` of the uncompressed tar.
    diff_id: String,
    /// Length of the uncompressed tar.
    tar_size: u64,
}

/// Writes the tree split into `layers` layers, each layer once as tar and compressed for every
/// target; returns per layer its DiffID and per-target descriptors.
fn write_layers(
    tree: &Tree,
    vocab: &Vocab,
    layers: usize,
    targets: &[(PathBuf, Compression)],
) -> Result<Vec<LayerBlobs>> {
    let mut out = Vec::new();
    for layer in 0..layers {
        let paths = tree.layer_paths(layer, layers);
        let sink = LayerSink::new(targets, layer)?;
        let mut counted = Hashing {
            inner: sink,
            hash: Sha256::new(),
            size: 0,
        };
        let mut tar = tar::Builder::new(&mut counted);
        for path in paths {
            let node = tree
                .nodes
                .get(path)
                .ok_or_else(|| anyhow!("tree lost {path}"))?;
            append_node(&mut tar, path, node, vocab).with_context(|| format!("writing {path}"))?;
        }
        tar.into_inner()?;
        let tar_size = counted.size;
        let (diff_id, descs) = counted.inner.finish()?;
        out.push((WrittenLayer { diff_id, tar_size }, descs));
    }
    Ok(out)
}

/// Writes `bytes` as a blob of `layout`; returns its descriptor.
pub fn write_blob(layout: &Path, media_type: &'static str, bytes: &[u8]) -> Result<Desc> {
    let hex = hex::encode(Sha256::digest(bytes));
    let path = layout.join("blobs/sha256").join(&hex);
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(Desc {
        media_type,
        digest: format!("sha256:{hex}"),
        size: bytes.len() as u64,
    })
}

/// What the bench knows about a written layout (saved as `fixture.json` inside it).
#[derive(Debug, Clone)]
pub struct FixtureInfo {
    /// Config digest (`sha256:…`); its hex is the image ID.
    pub config_digest: String,
    /// DiffIDs, base first.
    pub diff_ids: Vec<String>,
    /// Sum of the layer blob sizes.
    pub blob_bytes: u64,
    /// Sum of the uncompressed layer tar sizes.
    pub tar_bytes: u64,
}

impl FixtureInfo {
    /// The layer IDs containers-storage gives these layers: base = DiffID hex, child =
    /// sha256(parent ID + "+" + DiffID hex).
    pub fn layer_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for d in &self.diff_ids {
            let hex = d.trim_start_matches("sha256:");
            let id = match ids.last() {
                None => hex.to_owned(),
                Some(parent) => hex::encode(Sha256::digest(format!("{parent}+{hex}"))),
            };
            ids.push(id);
        }
        ids
    }

    /// The info as JSON.
    fn to_json(&self) -> Value {
        json!({
            "config_digest": self.config_digest,
            "diff_ids": self.diff_ids,
            "blob_bytes": self.blob_bytes,
            "tar_bytes": self.tar_bytes,
        })
    }

    /// Reads `fixture.json`.
    pub fn load(layout: &Path) -> Result<Self> {
        let path = layout.join("fixture.json");
        let v: Value = serde_json::from_slice(
            &fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| anyhow!("{}: no {k}", path.display()))
        };
        Ok(FixtureInfo {
            config_digest: field("config_digest")?
                .as_str()
                .ok_or_else(|| anyhow!("bad config_digest"))?
                .to_owned(),
            diff_ids: field("diff_ids")?
                .as_array()
                .ok_or_else(|| anyhow!("bad diff_ids"))?
                .iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect(),
            blob_bytes: field("blob_bytes")?.as_u64().unwrap_or(0),
            tar_bytes: field("tar_bytes")?.as_u64().unwrap_or(0),
        })
    }
}

/// Writes `config` and an OCI manifest naming it and `layers` (descriptors) as blobs of `layout`;
/// returns their descriptors.
pub fn write_config_and_manifest(
    layout: &Path,
    config: &Value,
    layers: Vec<Value>,
) -> Result<(Desc, Desc)> {
    let config = write_blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(config)?,
    )?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.to_json(),
        "layers": layers,
    });
    let manifest = write_blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest)?,
    )?;
    Ok((config, manifest))
}

/// Writes config, manifest, `index.json` (tag [`TAG`]) and `oci-layout` for the given layers.
fn write_image(layout: &Path, layers: &[(WrittenLayer, Desc)]) -> Result<FixtureInfo> {
    let diff_ids: Vec<&str> = layers.iter().map(|(l, _)| l.diff_id.as_str()).collect();
    let history: Vec<Value> = (0..layers.len())
        .map(|i| json!({"created": CREATED, "created_by": format!("bench: layer {} of {}", i + 1, layers.len())}))
        .collect();
    let config = json!({
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"], "Cmd": ["/usr/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    let layer_descs: Vec<Value> = layers.iter().map(|(_, d)| d.to_json()).collect();
    let (config, manifest) = write_config_and_manifest(layout, &config, layer_descs)?;
    let mut index_entry = manifest.to_json();
    index_entry["annotations"] = json!({"org.opencontainers.image.ref.name": TAG});
    let index = json!({"schemaVersion": 2, "manifests": [index_entry]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let info = FixtureInfo {
        config_digest: config.digest,
        diff_ids: diff_ids.iter().map(|d| (*d).to_owned()).collect(),
        blob_bytes: layers.iter().map(|(_, d)| d.size).sum(),
        tar_bytes: layers.iter().map(|(l, _)| l.tar_size).sum(),
    };
    fs::write(
        layout.join("fixture.json"),
        serde_json::to_vec_pretty(&info.to_json())?,
    )?;
    Ok(info)
}

/// Generates every layout into `dir` (which must not exist), via a temporary directory renamed
/// into place at the end, so an interrupted generation is never taken for a cached one.
pub fn generate_fixtures(dir: &Path, source: &TreeSource) -> Result<()> {
    // Leftovers of interrupted generations: "<key>.tmp-<pid>".
    if let (Some(parent), Some(key)) = (dir.parent(), dir.file_name()) {
        let prefix = format!("{}.tmp-", key.to_string_lossy());
        for entry in fs::read_dir(parent)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    for spec in &FIXTURES {
        fs::create_dir_all(tmp.join(spec.name).join("blobs/sha256"))
            .with_context(|| format!("creating {}", tmp.display()))?;
    }
    let vocab = Vocab::new();
    let tree = match source {
        TreeSource::Generated { small } => {
            let (min_entries, min_bytes) = if *small {
                (1_200, 30_000_000)
            } else {
                (16_000, 300_000_000)
            };
            generate_tree(&vocab, min_entries, min_bytes)
        }
        TreeSource::Debian(root) => tree_from_dir(root)?,
    };
    let stats = tree.stats();
    println!(
        "tree: {} entries ({} files, {} dirs, {} symlinks, {} hardlinks, {} files >= 1 MiB), {:.1} MB of file data, {} packages",
        stats.entries(),
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.hardlinks,
        stats.big_files,
        stats.bytes as f64 / 1e6,
        tree.packages
    );

    // Single-layer layouts share one tar pass; the 40-layer layout gets its own, in parallel.
    let single: Vec<(PathBuf, Compression)> = FIXTURES
        .iter()
        .filter(|s| s.layers == 1)
        .map(|s| (tmp.join(s.name), s.compression))
        .collect();
    let (single_res, multi_res) = std::thread::scope(|scope| {
        let multi = scope.spawn(|| -> Result<()> {
            for spec in FIXTURES.iter().filter(|s| s.layers > 1) {
                let layout = tmp.join(spec.name);
                let written = write_layers(
                    &tree,
                    &vocab,
                    spec.layers,
                    &[(layout.clone(), spec.compression)],
                )?;
                let layers: Vec<(WrittenLayer, Desc)> = written
                    .into_iter()
                    .filter_map(|(l, mut d)| d.pop().map(|(_, desc)| (l, desc)))
                    .collect();
                write_image(&layout, &layers)?;
            }
            Ok(())
        });
        let single_res = (|| -> Result<()> {
            let written = write_layers(&tree, &vocab, 1, &single)?;
            for (layout, _) in &single {
                let layers: Vec<(WrittenLayer, Desc)> = written
                    .iter()
                    .filter_map(|(l, descs)| {
                        descs
                            .iter()
                            .find(|(p, _)| p == layout)
                            .map(|(_, d)| (l.clone(), d.clone()))
                    })
                    .collect();
                write_image(layout, &layers)?;
            }
            Ok(())
        })();
        let multi_res = multi
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the 40-layer writer panicked")));
        (single_res, multi_res)
    });
    single_res?;
    multi_res?;
    fs::write(
        tmp.join("tree.json"),
        serde_json::to_vec_pretty(&json!({
            "entries": stats.entries(), "files": stats.files, "dirs": stats.dirs,
            "symlinks": stats.symlinks, "hardlinks": stats.hardlinks,
            "big_files": stats.big_files, "bytes": stats.bytes, "packages": tree.packages,
        }))?,
    )?;
    fs::rename(&tmp, dir).with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

/// Checks that a store holds the fixture: every expected layer ID, complete, and the image
/// (ID = config digest hex) named [`IMAGE_NAME`].
pub fn check_store(root: &Path, info: &FixtureInfo) -> Result<(), String> {
    check_store_named(root, info, IMAGE_NAME)
}

/// [`check_store`], with the image named `name`.
pub fn check_store_named(root: &Path, info: &FixtureInfo, name: &str) -> Result<(), String> {
    let read = |p: PathBuf| -> Result<Vec<Value>, String> {
        let bytes = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    let layers = read(root.join("overlay-layers/layers.json"))?;
    let complete: HashSet<&str> = layers
        .iter()
        .filter(|l| l.pointer("/flags/incomplete").is_none())
        .filter_map(|l| l.get("id").and_then(Value::as_str))
        .collect();
    for id in info.layer_ids() {
        if !complete.contains(id.as_str()) {
            return Err(format!("layer {} missing or incomplete", &id[..12]));
        }
    }
    let images = read(root.join("overlay-images/images.json"))?;
    let image_id = info.config_digest.trim_start_matches("sha256:");
    let image = images
        .iter()
        .find(|i| i.get("id").and_then(Value::as_str) == Some(image_id))
        .ok_or_else(|| format!("image {} missing", &image_id[..12]))?;
    let named = image
        .get("names")
        .and_then(Value::as_array)
        .is_some_and(|n| n.iter().any(|n| n.as_str() == Some(name)));
    if !named {
        return Err(format!("image not named {name}"));
    }
    Ok(())
}

/// Where the benchmark tree comes from.
#[derive(Debug, Clone)]
pub enum TreeSource {
    /// The generated `/usr`-like tree (`small`: ~30 MB).
    Generated {
        /// The small tree.
        small: bool,
    },
    /// A real root filesystem on disk.
    Debian(PathBuf),
}

/// The packages of the Debian fixture (debootstrap minbase plus these): the tree the CLI issue
/// measured skopeo on.
const DEBIAN_PACKAGES: &str = "systemd,python3,perl,vim,git,openssh-server,locales";

/// A real Debian 12 root filesystem, made once by `debootstrap --variant=minbase` (from
/// `$BENCH_MIRROR`, default deb.debian.org) into `target/bench-fixtures/debian-rootfs`.
pub fn ensure_debian_rootfs(target_dir: &Path) -> Result<PathBuf> {
    let dir = target_dir.join("bench-fixtures/debian-rootfs");
    if dir.join("var/lib/dpkg/status").exists() {
        return Ok(dir);
    }
    let partial = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    let mirror =
        std::env::var("BENCH_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    println!("fixtures: debootstrap bookworm ({DEBIAN_PACKAGES}) from {mirror} ...");
    let status = std::process::Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={DEBIAN_PACKAGES}"),
            "bookworm",
        ])
        .arg(&partial)
        .arg(&mirror)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running debootstrap (apt-get install debootstrap)")?;
    if !status.success() {
        return Err(anyhow!("debootstrap failed ({status})"));
    }
    // As `apt-get clean` in an image build: no downloaded packages in the tree.
    for e in fs::read_dir(partial.join("var/cache/apt/archives"))?.flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            fs::remove_file(e.path())?;
        }
    }
    fs::rename(&partial, &dir)?;
    Ok(dir)
}

/// The tree of a root filesystem on disk: directories, regular files (read from disk when the
/// layers are written), symlinks and hard links (devices, FIFOs and sockets are left out). Each
/// entry's "package" is the dpkg package that lists it (`var/lib/dpkg/info/*.list`), so the
/// 40-layer layout is chunked by package, as image builders chunk; unowned entries are package 0.
fn tree_from_dir(root: &Path) -> Result<Tree> {
    use std::os::unix::fs::MetadataExt;
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut lists: Vec<PathBuf> = fs::read_dir(root.join("var/lib/dpkg/info"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "list"))
        .collect();
    lists.sort();
    for (i, l) in lists.iter().enumerate() {
        for line in fs::read_to_string(l)?.lines() {
            let p = line.trim_start_matches('/');
            if !p.is_empty() && p != "." {
                owner.entry(p.to_owned()).or_insert(i + 1);
            }
        }
    }
    let mut entries: BTreeMap<String, (fs::Metadata, PathBuf)> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)?.flatten() {
            let path = e.path();
            let md = fs::symlink_metadata(&path)?;
            let rel = path
                .strip_prefix(root)?
                .to_str()
                .ok_or_else(|| anyhow!("non-UTF-8 path {}", path.display()))?
                .to_owned();
            if md.is_dir() {
                stack.push(path.clone());
            }
            entries.insert(rel, (md, path));
        }
    }
    let mut tree = Tree {
        packages: lists.len() + 1,
        ..Tree::default()
    };
    let mut first_of_inode: HashMap<(u64, u64), (String, usize)> = HashMap::new();
    for (rel, (md, path)) in entries {
        let ft = md.file_type();
        let mut pkg = owner.get(&rel).copied().unwrap_or(0);
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink(fs::read_link(&path)?.to_string_lossy().into_owned())
        } else if ft.is_file() {
            match first_of_inode.get(&(md.dev(), md.ino())) {
                Some((first, first_pkg)) if md.nlink() > 1 => {
                    // A hard link goes in the layer of the name it links to.
                    pkg = *first_pkg;
                    Kind::Hardlink(first.clone())
                }
                _ => {
                    first_of_inode.insert((md.dev(), md.ino()), (rel.clone(), pkg));
                    Kind::File {
                        size: md.len(),
                        data: Data::OnDisk(path.clone()),
                    }
                }
            }
        } else {
            continue;
        };
        tree.nodes.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                gid: u64::from(md.gid()),
                mtime: u64::try_from(md.mtime()).unwrap_or(0),
                pkg,
            },
        );
    }
    Ok(tree)
}

/// The tree `BENCH_TREE` names: `debian` for the real root filesystem, else the generated one.
pub fn tree_source_from_env(target_dir: &Path, small: bool) -> Result<TreeSource> {
    match std::env::var("BENCH_TREE").as_deref() {
        Ok("debian") => Ok(TreeSource::Debian(ensure_debian_rootfs(target_dir)?)),
        Ok("generated") | Err(_) => Ok(TreeSource::Generated { small }),
        Ok(other) => Err(anyhow!("BENCH_TREE={other}: use debian or generated")),
    }
}

/// Makes sure the fixtures for this scale (`small`: the ~30 MB tree) are in
/// `target_dir/bench-fixtures/<version>-<scale>/`, generating them if not; returns the cache key
/// (`v1-full`) and that directory.
pub fn ensure_fixtures(target_dir: &Path, small: bool) -> Result<(String, PathBuf)> {
    let source = tree_source_from_env(target_dir, small)?;
    let scale = match &source {
        TreeSource::Debian(_) => "debian",
        TreeSource::Generated { small: true } => "small",
        TreeSource::Generated { small: false } => "full",
    };
    let key = format!("{FIXTURE_VERSION}-{scale}");
    let fixtures_dir = target_dir.join("bench-fixtures").join(&key);
    if fixtures_dir.join("tree.json").exists() {
        println!("fixtures: cached in {}", fixtures_dir.display());
    } else {
        fs::create_dir_all(target_dir.join("bench-fixtures"))?;
        println!("fixtures: generating {} ...", fixtures_dir.display());
        let start = Instant::now();
        generate_fixtures(&fixtures_dir, &source)?;
        println!(
            "fixtures: generated in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok((key, fixtures_dir))
}
