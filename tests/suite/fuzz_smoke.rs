//! A time-boxed mutation run of every fuzz target (fuzz/targets.rs) on stable Rust, so the suite
//! exercises the parsers with hostile bytes on every run: seeds (the fixture tars, the tar-parity
//! corpus, manifests, records, names) are mutated — bit flips, interesting bytes, truncation,
//! duplicated and dropped blocks, splices — and tar header checksums are fixed afterwards so that
//! mutations reach past the checksum. `BOOTC_IMAGE_FUZZ_SECONDS` (default 2) is the budget per
//! target; libFuzzer runs the same targets for longer (`scripts/fuzz.sh`).

#[path = "../../fuzz/targets.rs"]
mod targets;

use std::time::{Duration, Instant};

use crate::fixture::{self, Compression, ImageSpec, OciDir};

/// xorshift64*: deterministic from its seed, which is printed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Recomputes the checksum of every 512-byte block that has a ustar magic.
fn fix_checksums(data: &mut [u8]) {
    for block in data.chunks_exact_mut(512) {
        if &block[257..262] != b"ustar" {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(field.as_bytes());
    }
}

/// One mutation of `input` (with `other` for splices).
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = input.to_vec();
    const INTERESTING: &[u8] = &[
        0, 0xff, 0x80, b'/', b'.', b'0', b'7', b'x', b'g', b'L', b' ', b'=',
    ];
    for _ in 0..1 + rng.below(4) {
        if d.is_empty() {
            d.extend_from_slice(&other[..other.len().min(512)]);
            continue;
        }
        let at = rng.below(d.len());
        match rng.below(7) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => d.truncate(at),
            3 => {
                // Duplicate a block (e.g. a second extended header).
                let start = at / 512 * 512;
                let block: Vec<u8> = d[start..(start + 512).min(d.len())].to_vec();
                d.splice(start..start, block);
            }
            4 => {
                let start = at / 512 * 512;
                let end = (start + 512).min(d.len());
                d.drain(start..end);
            }
            5 => {
                let from = rng.below(other.len());
                let len = rng.below(1024).min(other.len() - from);
                d.splice(at..at, other[from..from + len].iter().copied());
            }
            _ => {
                // A number in an octal field position.
                let n = format!("{:o}", rng.next() % (1 << 33));
                for (i, b) in n.bytes().enumerate() {
                    if at + i < d.len() {
                        d[at + i] = b;
                    }
                }
            }
        }
    }
    if rng.below(4) != 0 {
        fix_checksums(&mut d);
    }
    d
}

/// The seeds of each target.
fn seeds(target: &str, scratch: &std::path::Path) -> Vec<Vec<u8>> {
    let mut tars = fixture::rich_tars();
    tars.extend(fixture::edge_tars());
    tars.push(fixture::escape_tar(&scratch.join("outside")));
    tars.extend(crate::tar_parity::corpus().into_iter().map(|(_, t)| t));
    match target {
        "tar_stream" => tars,
        "tar_layer" => tars
            .into_iter()
            .flat_map(|t| {
                let mut vfs = vec![1u8];
                vfs.extend_from_slice(&t);
                let mut ov = vec![0u8];
                ov.extend_from_slice(&t);
                [ov, vfs]
            })
            .collect(),
        "tar_split" => vec![
            br#"{"type":2,"payload":"AAAA","position":0}
{"type":1,"name":"a","size":3,"payload":"AAAAAAAAAAA=","position":1}
"#
            .to_vec(),
        ],
        "records" => vec![
            br#"[{"id":"aaaa","parent":"bbbb","created":"2026-01-01T00:00:00Z","flags":{"incomplete":true},"names":["x"],"big-data-names":["a"],"future":{"a":[1,2.5e3,null]}}]"#.to_vec(),
            b"[]".to_vec(),
        ],
        "manifest" => {
            let mut oci = OciDir::create(&scratch.join("m"));
            let spec = ImageSpec::from_tars("seed", &[fixture::small_tar(1)], Compression::Gzip);
            let built = oci.add_image(Some("s"), &spec);
            vec![
                std::fs::read(oci.blob_path(&built.manifest_digest)).expect("manifest"),
                std::fs::read(oci.blob_path(&built.config_digest)).expect("config"),
            ]
        }
        "gvariant" => ostree_objects(scratch),
        "tar_build" => {
            let mut long = vec![0u8; 24];
            long[0] = 0;
            long.extend_from_slice(&[b'd'; 150]);
            long.extend_from_slice(b"/file\0");
            let mut caps = vec![1u8; 24];
            caps[0] = 0;
            caps.extend_from_slice(b"usr/bin/ping\0security.capability\0\x01\x00\x00\x02\x00\x20\0user.a\0b");
            let mut link = vec![7u8; 24];
            link[0] = 2;
            link.extend_from_slice(b"lib/libfoo.so\0libfoo.so.1");
            let mut dev = vec![3u8; 24];
            dev[0] = 3;
            dev.extend_from_slice(b"dev/null");
            vec![long, caps, link, dev]
        }
        "splitstream" => {
            // Layer splitstreams as composefs-oci writes them (inline headers and small files,
            // external large ones).
            let mut oci = OciDir::create(&scratch.join("cfs-oci"));
            let tar = fixture::build_tar(&[
                fixture::Entry::dir("usr/"),
                fixture::Entry::file("usr/small", b"small".to_vec()),
                fixture::Entry::file("usr/big", fixture::pseudo_random(5000, 3)),
            ]);
            oci.add_image(Some("s"), &ImageSpec::from_tars("s", &[tar], Compression::None));
            let repo = scratch.join("cfs-repo");
            crate::composefs::import_into_repo(&oci.source(Some("s")), &repo, "s");
            std::fs::read_dir(repo.join("streams"))
                .expect("streams")
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("oci-layer-"))
                .map(|e| std::fs::read(e.path()).expect("stream"))
                .collect()
        }
        "gzip_members" => {
            // One member, several (one empty, with a name, a comment and extra fields), and a
            // layer as the fixtures compress it.
            let gz = |d: &[u8], b: flate2::GzBuilder| {
                let mut e = b.write(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut e, d).expect("gzip");
                e.finish().expect("gzip")
            };
            let mut multi = gz(b"first ", flate2::GzBuilder::new());
            multi.extend(gz(b"", flate2::GzBuilder::new()));
            multi.extend(gz(
                b"second",
                flate2::GzBuilder::new()
                    .filename("n")
                    .comment("c")
                    .extra(vec![1, 2]),
            ));
            vec![
                gz(&fixture::small_tar(3), flate2::GzBuilder::new()),
                multi,
                Compression::Gzip.compress(&fixture::rich_tars().remove(0)),
            ]
        }
        "reference" => [
            "localhost/bootc",
            "quay.io/a/b:1.0",
            "[::1]:5000/a_b__c-d:t@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "docker.io/busybox",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        _ => vec![b"[storage]\ndriver = \"overlay\"\ngraphroot = \"/var/lib/containers/storage\"\n[storage.options.overlay]\nmount_program = \"\"\n".to_vec()],
    }
}

/// Every target, for the time budget, on mutations of its seeds: no panic, no hang.
#[test]
fn fuzz_targets_survive_mutations() {
    let budget = std::env::var("BOOTC_IMAGE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2u64);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let scratch = tempfile::tempdir().expect("scratch");
    let mut report = Vec::new();
    for (name, target) in targets::TARGETS {
        let mut rng = Rng(seed);
        let corpus = seeds(name, scratch.path());
        for s in &corpus {
            target(s);
        }
        let start = Instant::now();
        let mut execs = 0u64;
        while start.elapsed() < Duration::from_secs(budget) {
            let a = &corpus[rng.below(corpus.len())];
            let b = &corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, a, b);
            let r = std::panic::catch_unwind(|| target(&input));
            if r.is_err() {
                let keep = scratch.path().join(format!("crash-{name}"));
                let _ = std::fs::write(&keep, &input);
                panic!(
                    "fuzz target {name} panicked (seed {seed}); input of {} bytes: {:02x?}",
                    input.len(),
                    &input[..input.len().min(2048)]
                );
            }
            execs += 1;
        }
        report.push(format!("{name}: {execs}"));
    }
    eprintln!(
        "fuzz smoke (seed {seed}, {budget} s each): {}",
        report.join(", ")
    );
}

/// The directory and commit objects of a small commit made with the ostree CLI.
fn ostree_objects(scratch: &std::path::Path) -> Vec<Vec<u8>> {
    let repo = scratch.join("gv-repo");
    let tree = scratch.join("gv-tree");
    std::fs::create_dir_all(tree.join("usr/bin")).expect("mkdir");
    std::fs::write(tree.join("usr/bin/a"), "a").expect("write");
    std::fs::write(tree.join("b"), "b").expect("write");
    let ostree = |args: &[&str]| {
        let out = std::process::Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(args)
            .output()
            .expect("run ostree");
        assert!(out.status.success(), "ostree {args:?}: {out:?}");
    };
    ostree(&["init", "--mode=bare-user"]);
    ostree(&[
        "commit",
        "-b",
        "gv",
        &format!("--tree=dir={}", tree.display()),
    ]);
    let mut out = Vec::new();
    let mut dirs = vec![repo.join("objects")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read objects").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "dirtree" || x == "dirmeta" || x == "commit")
            {
                out.push(std::fs::read(&p).expect("object"));
            }
        }
    }
    assert!(out.len() >= 4, "objects of the seed commit: {}", out.len());
    out
}
