//! The fuzz targets: one function per parser, taking arbitrary bytes. Each must return (never
//! panic, never hang, never allocate without bound) whatever the input, and checks the invariant
//! its parser promises. Shared by the libFuzzer binaries (`fuzz/fuzz_targets/`, run by
//! `scripts/fuzz.sh`) and the test suite's time-boxed mutation run (`tests/suite/fuzz_smoke.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bootc_image::layer::sink::LayerSink;
use bootc_image::layer::tar_stream::feed_tar;
use bootc_image::layer::tar_stream::{Event, TarStream};
use bootc_image::layer::tree_writer::{TreeWriter, WhiteoutStyle};
use storage_format::{
    Digest, ImageRecord, LayerRecord, RecordFile, TarSplitReader, TarSplitWriter,
};

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("tar_stream", tar_stream),
    ("tar_layer", tar_layer),
    ("tar_split", tar_split),
    ("records", records),
    ("manifest", manifest),
    ("reference", reference),
    ("storage_conf", storage_conf),
    ("gvariant", gvariant),
    ("tar_build", tar_build),
    ("splitstream", splitstream),
    ("gzip_members", gzip_members),
];

/// The tar reader: entry after entry, data read to the end, until the end or an error.
pub fn tar_stream(data: &[u8]) {
    let mut s = TarStream::new(data);
    let mut buf = vec![0u8; 4096];
    for _ in 0..100_000 {
        match s.next_event() {
            Ok(Event::End) | Err(_) => return,
            Ok(Event::Trailer(_)) => {}
            Ok(Event::Entry { header, .. }) => {
                assert!(header.mode <= 0o7777, "mode {:o}", header.mode);
                loop {
                    match s.read_data(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
    }
    panic!("100000 events from {} bytes", data.len());
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// A scratch directory with `layer/` (the layer root) and `outside/` (must stay empty).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "bootc-image-fuzz-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        for d in ["layer", "outside"] {
            std::fs::create_dir_all(p.join(d)).expect("scratch dirs");
        }
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// The whole layer sink into a real directory (overlay or vfs whiteouts, by the first byte): it
/// may fail, but never writes outside the layer root, and a tar-split it completes reads back.
pub fn tar_layer(data: &[u8]) {
    let Some((&first, tar)) = data.split_first() else {
        return;
    };
    let scratch = Scratch::new();
    let style = if first & 1 == 0 {
        WhiteoutStyle::Overlay
    } else {
        WhiteoutStyle::Delete
    };
    let Ok(mut tree) = TreeWriter::new(&scratch.0.join("layer"), style) else {
        return;
    };
    let mut ts = TarSplitWriter::new(Vec::new());
    let fed = {
        let mut sink = LayerSink::new(&mut tree, &mut ts);
        feed_tar(tar, &mut sink, |_| {}).is_ok()
    };
    let ok = fed && tree.finish().is_ok();
    assert!(
        is_empty_dir(&scratch.0.join("outside")),
        "the layer wrote outside its root"
    );
    let parent_entries: Vec<_> = std::fs::read_dir(&scratch.0)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        parent_entries.len(),
        2,
        "entries beside the layer root: {parent_entries:?}"
    );
    if ok && let Ok(bytes) = ts.finish() {
        for e in TarSplitReader::new(bytes.as_slice()) {
            e.expect("a tar-split we wrote reads back");
        }
    }
}

/// The tar-split reader (JSON lines).
pub fn tar_split(data: &[u8]) {
    for (i, e) in TarSplitReader::new(data).enumerate() {
        if e.is_err() || i > 100_000 {
            return;
        }
    }
}

/// layers.json / images.json: what parses writes back, and what is written parses to the same.
pub fn records(data: &[u8]) {
    fn round_trip<T: storage_format::Record>(data: &[u8]) {
        if let Ok(f) = RecordFile::<T>::parse(data) {
            let out = f.to_bytes().expect("a parsed record file serializes");
            let again = RecordFile::<T>::parse(&out).expect("what we write parses");
            assert_eq!(
                again.to_bytes().expect("serializes"),
                out,
                "record files are stable"
            );
        }
    }
    round_trip::<LayerRecord>(data);
    round_trip::<ImageRecord>(data);
}

/// The manifest and config rules: no panic; an accepted manifest is a JSON object.
pub fn manifest(data: &[u8]) {
    let d = Digest::of_bytes(data);
    if bootc_image::source::manifest_rules::check_manifest(data, &d).is_ok() {
        let v: serde_json::Value = serde_json::from_slice(data).expect("accepted is JSON");
        assert!(v.is_object());
    }
    let _ = bootc_image::source::manifest_rules::check_config(data, &d);
}

/// Image names: a name we accept normalizes to itself again and is at most 255 + tag + digest.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = bootc_image::reference::normalize(s) {
        assert_eq!(
            bootc_image::reference::normalize(&n).ok().as_deref(),
            Some(n.as_str()),
            "normalizing {s:?} twice"
        );
        bootc_image::reference::check_stored_names(std::slice::from_ref(&n))
            .expect("stored names check");
        assert!(n.is_ascii() && !n.contains(char::is_whitespace), "{n:?}");
    }
}

/// storage.conf.
pub fn storage_conf(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = storage_format::StorageConf::parse(s);
    }
}

/// GVariant objects of an OSTree repository as we read them from their bytes (dirtree, dirmeta,
/// the commit's root): any bytes are an error or a value, never a panic.
pub fn gvariant(data: &[u8]) {
    use bootc_image::source::ostree_host::gvariant::{
        parse_commit_root, parse_dirmeta, parse_dirtree,
    };
    if let Ok(t) = parse_dirtree(data, "fuzz") {
        // Names are path components: never empty, never a separator.
        for n in t
            .files
            .iter()
            .map(|f| &f.name)
            .chain(t.dirs.iter().map(|d| &d.name))
        {
            assert!(!n.is_empty() && !n.contains('/'), "dirtree name {n:?}");
        }
    }
    let _ = parse_dirmeta(data, "fuzz");
    let _ = parse_commit_root(data);
}

/// The header writer of built images: metadata (as a tree can hold it) → header bytes → our
/// reader (Go's rules) gives the same metadata back.
pub fn tar_build(data: &[u8]) {
    use bootc_image::layer::tar_build::header_bytes;
    use bootc_image::layer::tar_header::{EntryKind, TarHeader};
    use bootc_image::layer::tar_stream::parse_built_header;
    if data.len() < 24 {
        return;
    }
    let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let kinds = [
        EntryKind::Regular,
        EntryKind::HardLink,
        EntryKind::Symlink,
        EntryKind::CharDevice,
        EntryKind::BlockDevice,
        EntryKind::Directory,
        EntryKind::Fifo,
    ];
    let kind = kinds[usize::from(data[0]) % kinds.len()];
    // Strings: NUL-separated, as a file system has them (no NUL inside).
    let mut parts = data[24..].split(|&b| b == 0);
    let mut name = parts.next().unwrap_or_default().to_vec();
    while name.last() == Some(&b'/') {
        name.pop();
    }
    if name.is_empty() {
        return;
    }
    if kind == EntryKind::Directory {
        name.push(b'/');
    }
    let mut h = TarHeader::new(
        name,
        kind,
        word(1) & 0o7777,
        if kind == EntryKind::Regular {
            u64::from(word(5)) << (data[9] % 24)
        } else {
            0
        },
        i64::from(word(10) & 0x7fff_ffff),
    );
    h.uid = u64::from(word(14));
    h.gid = u64::from(word(18));
    if matches!(kind, EntryKind::Symlink | EntryKind::HardLink) {
        h.linkname = parts.next().unwrap_or_default().to_vec();
        if h.linkname.is_empty() {
            return;
        }
    }
    if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        h.devmajor = u32::from(data[22]) << 4;
        h.devminor = word(20) & 0xf_ffff;
    }
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if !k.is_empty() && !k.contains(&b'=') {
            h.xattrs.push((k.to_vec(), v.to_vec()));
        }
    }
    h.xattrs.sort();
    h.xattrs.dedup_by(|a, b| a.0 == b.0);
    let bytes = header_bytes(&h);
    let back = parse_built_header(&bytes).expect("a header we write parses");
    assert_eq!(back.name, h.name, "name");
    assert_eq!(back.kind, h.kind, "kind");
    assert_eq!(back.mode, h.mode, "mode");
    assert_eq!((back.uid, back.gid), (h.uid, h.gid), "owner");
    assert_eq!(back.mtime, h.mtime, "mtime");
    assert_eq!(back.linkname, h.linkname, "link");
    if kind == EntryKind::Regular {
        assert_eq!(back.size, h.size, "size");
    }
    if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        assert_eq!(
            (back.devmajor, back.devminor),
            (h.devmajor, h.devminor),
            "device"
        );
    }
    let mut x = back.xattrs.clone();
    x.sort();
    let written: Vec<_> = h
        .xattrs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    assert_eq!(x, written, "xattrs (an empty value is none)");
}

/// A composefs layer splitstream (a damaged or hostile repository): an error or a DiffID, never a
/// panic, a hang or an unbounded allocation. The repository is an empty one made once.
pub fn splitstream(data: &[u8]) {
    static REPO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let repo = REPO.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bootc-image-fuzz-cfs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("objects"));
        let _ = std::fs::create_dir_all(dir.join("streams"));
        // An insecure SHA-512 repository's meta.json, as composefs writes it.
        let _ = std::fs::write(
            dir.join("meta.json"),
            br#"{"version":1,"algorithm":"fsverity-sha512-12","features":{"compatible":[],"read-only-compatible":["v1_erofs"],"incompatible":[]},"erofs_formats":{"default":1}}"#,
        );
        dir
    });
    let file = repo.join(format!(
        "stream-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&file, data).is_ok() {
        let _ = bootc_image::source::composefs::layer_stream_diff_id(repo, &file);
        let _ = std::fs::remove_file(&file);
    }
}

/// Decoded bytes read at most from one input: a small input may inflate a thousandfold.
const GZIP_OUT_LIMIT: usize = 32 << 20;

/// A gzip blob (hostile members, headers, trailers), decoded twice: with each member's CRC-32
/// checked by the reader, and through the layer pipeline, where the hash thread checks it. Never
/// a panic or a hang; and both must agree: the same bytes when both accept, a refusal by the
/// reader exactly when the pipeline fails or names a bad member.
pub fn gzip_members(data: &[u8]) {
    use bootc_image::layer::gzip_members::{CrcCheck, GzipMembers};
    use std::io::Read;
    let capped = |r: &mut dyn Read| -> std::io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        r.take(GZIP_OUT_LIMIT as u64 + 1).read_to_end(&mut out)?;
        Ok((out.len() <= GZIP_OUT_LIMIT).then_some(out))
    };
    let inline = GzipMembers::new(data, CrcCheck::Inline).and_then(|mut g| capped(&mut g));
    let (piped, bad_member) = std::thread::scope(|s| {
        let read = std::sync::Arc::new(AtomicU64::new(0));
        let (blob, feed, hasher) = bootc_image::layer::pipe::spawn_hasher(
            s,
            std::io::Cursor::new(data.to_vec()),
            read,
            None,
        );
        let piped = match bootc_image::layer::decompress::decompress_buffered(blob, Some(&feed)) {
            Ok((bootc_image::layer::decompress::Compression::Gzip, reader)) => {
                let mut pipe = bootc_image::layer::pipe::spawn_pump_hashed(s, reader, feed);
                let r = capped(&mut pipe);
                // Whatever is left unread stops with the pipe.
                drop(pipe);
                r
            }
            // Not gzip by its magic: the reader refuses it too (checked below). The feed goes,
            // or the hasher would wait for it.
            Ok(_) => {
                drop(feed);
                Err(std::io::Error::other("not gzip"))
            }
            Err(e) => {
                drop(feed);
                Err(std::io::Error::other(e.to_string()))
            }
        };
        let hashes = hasher.join().expect("the hasher does not panic");
        (piped, hashes.bad_member)
    });
    match (inline, piped) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(a, b, "the two decodings differ");
            assert_eq!(
                bad_member, None,
                "the reader accepted a member the hasher refused"
            );
        }
        (Ok(None), _) | (_, Ok(None)) => {}
        (Ok(Some(_)), Err(e)) => panic!("the reader accepted what the pipeline refused: {e}"),
        (Err(e), Ok(Some(_))) => assert!(
            bad_member.is_some(),
            "the reader refused ({e}) what the pipeline accepted"
        ),
        (Err(_), Err(_)) => {}
    }
}
