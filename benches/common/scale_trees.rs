//! The images of the scale bench (`cargo bench --bench scale`): one gzip layer each, cached under
//! `target/bench-fixtures/scale-<name>/`.
//!
//! - `402m`: the Debian 12 root filesystem of [`super::ensure_debian_rootfs`] (debootstrap
//!   minbase + systemd, python3, perl, vim, git …).
//! - `2.1g`: that root filesystem plus five copies of its `/usr` (under `opt/usr-copy-N`): the
//!   2.1 GB / 90k-entry tree issue 27 measured.
//! - `5g`: as many copies as make at least 5 GB of file data.
//! - `1m`: 1,001,000 generated entries, 1,000 directories of 1,000 small text files (64–448
//!   bytes): the entry count, not the bytes, is what grows.
//!
//! A child module of `fixtures.rs`, so that it builds on its tree model and layer writer.

use super::{
    CREATED, Compression, ContentKind, Data, FixtureInfo, Kind, Node, Rng, Tree, Vocab,
    ensure_debian_rootfs, tree_from_dir, write_image, write_layers,
};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a scale fixture is made of.
#[derive(Debug, Clone, Copy)]
pub enum Scale {
    /// The Debian root filesystem plus `usr_copies` copies of its `/usr`.
    Debian {
        /// Copies of `/usr`.
        usr_copies: UsrCopies,
    },
    /// `dirs` directories of `files` generated small files each.
    Entries {
        /// Directories.
        dirs: usize,
        /// Files per directory.
        files: usize,
    },
}

/// How many copies of `/usr` a Debian scale fixture adds.
#[derive(Debug, Clone, Copy)]
pub enum UsrCopies {
    /// Exactly this many.
    Fixed(usize),
    /// As many as make at least this many bytes of file data.
    AtLeastBytes(u64),
}

/// One scale fixture.
#[derive(Debug, Clone, Copy)]
pub struct ScaleSpec {
    /// Its name (`BENCH_SCALES`) and table label.
    pub name: &'static str,
    /// What it is made of.
    pub scale: Scale,
}

/// The scale fixtures, smallest first.
pub const SCALES: [ScaleSpec; 4] = [
    ScaleSpec {
        name: "402m",
        scale: Scale::Debian {
            usr_copies: UsrCopies::Fixed(0),
        },
    },
    ScaleSpec {
        name: "2.1g",
        scale: Scale::Debian {
            usr_copies: UsrCopies::Fixed(5),
        },
    },
    ScaleSpec {
        name: "5g",
        scale: Scale::Debian {
            usr_copies: UsrCopies::AtLeastBytes(5_000_000_000),
        },
    },
    ScaleSpec {
        name: "1m",
        scale: Scale::Entries {
            dirs: 1_000,
            files: 1_000,
        },
    },
];

/// What the bench reports of a scale fixture's tree (`tree.json` beside its layout).
#[derive(Debug, Clone, Copy)]
pub struct ScaleStats {
    /// Tar entries.
    pub entries: usize,
    /// Bytes of regular file data.
    pub bytes: u64,
}

/// Makes sure the layout of `spec` is in `target/bench-fixtures/scale-<name>/layout`, writing it
/// if not (through a temporary directory renamed into place); returns the layout's directory and
/// the tree's counts.
pub fn ensure_scale_fixture(target_dir: &Path, spec: &ScaleSpec) -> Result<(PathBuf, ScaleStats)> {
    let dir = target_dir
        .join("bench-fixtures")
        .join(format!("scale-{}", spec.name));
    let stats_file = dir.join("tree.json");
    if !stats_file.exists() {
        let tmp = dir.with_extension("partial");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        let layout = tmp.join("layout");
        fs::create_dir_all(layout.join("blobs/sha256"))?;
        let start = Instant::now();
        let tree = build_tree(target_dir, spec.scale)?;
        let stats = tree.stats();
        println!(
            "fixtures: writing scale-{} ({} entries, {:.2} GB of file data) ...",
            spec.name,
            stats.entries(),
            stats.bytes as f64 / 1e9
        );
        let vocab = Vocab::new();
        let written = write_layers(&tree, &vocab, 1, &[(layout.clone(), Compression::Gzip)])?;
        let layers: Vec<_> = written
            .into_iter()
            .filter_map(|(l, mut d)| d.pop().map(|(_, desc)| (l, desc)))
            .collect();
        write_image(&layout, &layers)?;
        fs::write(
            tmp.join("tree.json"),
            serde_json::to_vec_pretty(
                &json!({"entries": stats.entries(), "bytes": stats.bytes, "created": CREATED}),
            )?,
        )?;
        drop(tree);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::rename(&tmp, &dir).with_context(|| format!("renaming {} into place", tmp.display()))?;
        println!(
            "fixtures: scale-{} written in {:.0} s",
            spec.name,
            start.elapsed().as_secs_f64()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&stats_file)?)?;
    let stats = ScaleStats {
        entries: v["entries"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| anyhow!("{}: no entries", stats_file.display()))?,
        bytes: v["bytes"].as_u64().unwrap_or(0),
    };
    let layout = dir.join("layout");
    FixtureInfo::load(&layout)?;
    Ok((layout, stats))
}

/// The tree of a scale fixture, in memory (the bench's memory, not the tools').
fn build_tree(target_dir: &Path, scale: Scale) -> Result<Tree> {
    match scale {
        Scale::Debian { usr_copies } => {
            let root = ensure_debian_rootfs(target_dir)?;
            let mut tree = tree_from_dir(&root)?;
            let usr: Vec<(String, Node)> = tree
                .nodes
                .iter()
                .filter(|(p, _)| p.as_str() == "usr" || p.starts_with("usr/"))
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect();
            if usr.is_empty() {
                bail!("{}: no /usr to copy", root.display());
            }
            let usr_bytes: u64 = usr
                .iter()
                .map(|(_, n)| match n.kind {
                    Kind::File { size, .. } => size,
                    _ => 0,
                })
                .sum();
            let copies = match usr_copies {
                UsrCopies::Fixed(n) => n,
                UsrCopies::AtLeastBytes(min) => {
                    let have = tree.stats().bytes;
                    usize::try_from(min.saturating_sub(have).div_ceil(usr_bytes.max(1)))?
                }
            };
            if copies > 0 && !tree.nodes.contains_key("opt") {
                bail!("{}: no /opt to put the copies of /usr in", root.display());
            }
            for i in 1..=copies {
                let prefix = format!("opt/usr-copy-{i}");
                for (path, node) in &usr {
                    let mut node = node.clone();
                    if let Kind::Hardlink(target) = &node.kind
                        && let Some(rest) = target.strip_prefix("usr/")
                    {
                        node.kind = Kind::Hardlink(format!("{prefix}/{rest}"));
                    }
                    let rest = &path["usr".len()..];
                    tree.nodes.insert(format!("{prefix}{rest}"), node);
                }
            }
            Ok(tree)
        }
        Scale::Entries { dirs, files } => {
            let mut tree = Tree {
                packages: 1,
                ..Tree::default()
            };
            let dir_node = Node {
                kind: Kind::Dir,
                mode: 0o755,
                gid: 0,
                mtime: super::EPOCH,
                pkg: 0,
            };
            let mut rng = Rng::new(super::TREE_SEED ^ 0x31_6d);
            for d in 0..dirs {
                tree.nodes.insert(format!("d{d:04}"), dir_node.clone());
                for f in 0..files {
                    let size = rng.range(64, 448);
                    let seed = rng.next_u64();
                    tree.nodes.insert(
                        format!("d{d:04}/f{f:04}"),
                        Node {
                            kind: Kind::File {
                                size,
                                data: Data::Generated {
                                    seed,
                                    kind: ContentKind::Text,
                                },
                            },
                            mode: 0o644,
                            gid: 0,
                            mtime: super::EPOCH,
                            pkg: 0,
                        },
                    );
                }
            }
            Ok(tree)
        }
    }
}
