//! tar-split metadata (vbatts/tar-split `storage.Entry` JSON lines), which
//! lets c/storage rebuild a layer's tar byte for byte from the extracted
//! files.
//!
//! Each line is one JSON object followed by `"\n"`:
//!
//! ```text
//! {"type":2,"payload":"<base64 raw bytes>","position":0}
//! {"type":1,"name":"etc/x","size":7,"payload":"<base64 crc64>","position":1}
//! {"type":1,"name":"etc/","payload":null,"position":2}
//! ```
//!
//! Gzip compression of the stream is left to the caller.

use crate::sys::seen_paths::SeenPaths;
use std::fmt;
use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::error::{Error, Result};

const FILE_TYPE: u8 = 1;
const SEGMENT_TYPE: u8 = 2;

/// A streaming CRC-64 as tar-split records for file contents (Go
/// `crc64.New(crc64.MakeTable(crc64.ISO))`, i.e. CRC-64/GO-ISO), computed
/// with carry-less multiplication where the CPU has it.
#[derive(Clone)]
pub struct Crc64 {
    digest: crc_fast::Digest,
}

impl Crc64 {
    /// A CRC over no data yet.
    pub fn new() -> Self {
        Crc64 {
            digest: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64GoIso),
        }
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
    }

    /// The CRC of everything fed so far, as the 8 big-endian bytes that
    /// tar-split stores (Go `hash.Sum(nil)`). The CRC can still be updated.
    pub fn finish(&self) -> [u8; 8] {
        self.digest.finalize().to_be_bytes()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crc64")
            .field(
                "value",
                &format_args!("{:016x}", u64::from_be_bytes(self.finish())),
            )
            .finish()
    }
}

/// One tar-split entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarSplitEntry {
    /// Raw bytes of the tar stream that are copied verbatim (headers,
    /// padding, end-of-archive blocks).
    Segment(Vec<u8>),
    /// A regular file's content, which is read from the extracted layer.
    File {
        /// The tar header's name as it was in the archive (raw bytes).
        name: Vec<u8>,
        /// The content length.
        size: u64,
        /// CRC-64/GO-ISO of the content (big-endian); `None` when `size` is 0.
        crc: Option<[u8; 8]>,
    },
}

/// Go's `filepath.Clean` on a byte path (Unix separators).
fn clean_path(p: &[u8]) -> Vec<u8> {
    let rooted = p.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in p.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => match parts.last() {
                Some(last) if *last != b".." => {
                    parts.pop();
                }
                None if rooted => {}
                _ => parts.push(comp),
            },
            _ => parts.push(comp),
        }
    }
    let mut out = Vec::with_capacity(p.len() + 1);
    if rooted {
        out.push(b'/');
    }
    out.extend_from_slice(&parts.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it
/// (HTML-safe escaping of `<`, `>`, `&`, and of U+2028/U+2029).
fn push_go_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let b = c as u32 as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn push_b64_string(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(
        start + base64::encoded_len(data.len(), true).unwrap_or(0),
        0,
    );
    let n = STANDARD
        .encode_slice(data, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + n);
    out.push(b'"');
}

/// What a duplicate found only at the end names (its path is not kept).
const FAR_DUPLICATE: &str = "(a path named twice, the second time more than 32768 entries later)";
const _: () = assert!(
    crate::sys::seen_paths::RECENT_MAX == 32768,
    "FAR_DUPLICATE names it"
);

/// Writes tar-split JSON lines, numbering entries and refusing duplicate
/// file paths as tar-split's JSON packer does.
pub struct TarSplitWriter<W: Write> {
    out: W,
    position: u64,
    seen: SeenPaths,
    line: Vec<u8>,
}

impl<W: Write> fmt::Debug for TarSplitWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarSplitWriter")
            .field("position", &self.position)
            .field("files", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write> TarSplitWriter<W> {
    /// A writer that writes the lines to `out` (unbuffered: wrap a file in
    /// a `BufWriter` or a gzip encoder).
    pub fn new(out: W) -> Self {
        TarSplitWriter {
            out,
            position: 0,
            seen: SeenPaths::default(),
            line: Vec::with_capacity(1024),
        }
    }

    /// Keeps the paths seen, past what stays in memory, in an anonymous file in `dir` (the
    /// store's own filesystem, not a tmpfs `/tmp`).
    #[must_use]
    pub fn spill_in(mut self, dir: &std::path::Path) -> Self {
        self.seen.spill_in(dir);
        self
    }

    fn emit(&mut self) -> Result<()> {
        self.line.extend_from_slice(b",\"position\":");
        self.line
            .extend_from_slice(self.position.to_string().as_bytes());
        self.line.extend_from_slice(b"}\n");
        self.out.write_all(&self.line)?;
        self.position += 1;
        Ok(())
    }

    /// Writes a segment of verbatim tar bytes. An empty slice writes nothing.
    pub fn segment(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":2,\"payload\":");
        push_b64_string(&mut self.line, bytes);
        self.emit()
    }

    /// Writes a file entry. `name` is the tar header's name (a name that is
    /// not UTF-8 is written as `name_raw`), `crc` its content's CRC (see
    /// [`Crc64`]); `None` writes `"payload":null`, as tar-split does for
    /// empty files.
    ///
    /// Fails with [`Error::DuplicatePath`] if the same path (compared after
    /// Go `filepath.Clean`) was written before.
    pub fn file(&mut self, name: &[u8], size: u64, crc: Option<[u8; 8]>) -> Result<()> {
        if !self.seen.insert(&clean_path(name))? {
            return Err(Error::DuplicatePath(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":1");
        if !name.is_empty() {
            match std::str::from_utf8(name) {
                Ok(s) => {
                    self.line.extend_from_slice(b",\"name\":");
                    push_go_json_string(&mut self.line, s);
                }
                Err(_) => {
                    self.line.extend_from_slice(b",\"name_raw\":");
                    push_b64_string(&mut self.line, name);
                }
            }
        }
        if size != 0 {
            self.line.extend_from_slice(b",\"size\":");
            self.line.extend_from_slice(size.to_string().as_bytes());
        }
        self.line.extend_from_slice(b",\"payload\":");
        match crc {
            Some(crc) => push_b64_string(&mut self.line, &crc),
            None => self.line.extend_from_slice(b"null"),
        }
        self.emit()
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> Result<W> {
        if !self.seen.finish()? {
            return Err(Error::DuplicatePath(FAR_DUPLICATE.into()));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: i64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    payload: Option<String>,
}

/// Reads tar-split JSON lines as [`TarSplitEntry`] values.
///
/// Empty segments are skipped. Like tar-split's unpacker, a file path that
/// appears twice (after `filepath.Clean`) is [`Error::DuplicatePath`]. After
/// an error the iterator ends.
pub struct TarSplitReader<R: BufRead> {
    r: R,
    line: Vec<u8>,
    seen: SeenPaths,
    failed: bool,
}

impl<R: BufRead> fmt::Debug for TarSplitReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarSplitReader")
            .field("files", &self.seen.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> TarSplitReader<R> {
    /// Reads entries from `r` (already decompressed).
    pub fn new(r: R) -> Self {
        TarSplitReader {
            r,
            line: Vec::with_capacity(1024),
            seen: SeenPaths::default(),
            failed: false,
        }
    }

    /// The next entry (skipping blank lines and empty segments), or `None`
    /// at the end of the stream.
    fn read_entry(&mut self) -> Result<Option<TarSplitEntry>> {
        loop {
            self.line.clear();
            if self.r.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let raw: RawEntry = serde_json::from_slice(&self.line)
                .map_err(|e| Error::InvalidTarSplit(e.to_string()))?;
            let payload = match raw.payload {
                Some(p) => STANDARD
                    .decode(p)
                    .map_err(|e| Error::InvalidTarSplit(format!("payload: {e}")))?,
                None => Vec::new(),
            };
            match raw.kind {
                k if k == i64::from(SEGMENT_TYPE) => {
                    if !payload.is_empty() {
                        return Ok(Some(TarSplitEntry::Segment(payload)));
                    }
                }
                k if k == i64::from(FILE_TYPE) => {
                    let name = match (raw.name, raw.name_raw) {
                        (Some(n), _) if !n.is_empty() => n.into_bytes(),
                        (_, Some(r)) => STANDARD
                            .decode(r)
                            .map_err(|e| Error::InvalidTarSplit(format!("name_raw: {e}")))?,
                        _ => Vec::new(),
                    };
                    let size = u64::try_from(raw.size).map_err(|_| {
                        Error::InvalidTarSplit(format!("negative size {}", raw.size))
                    })?;
                    let crc = match payload.len() {
                        0 => None,
                        8 => {
                            let mut c = [0u8; 8];
                            c.copy_from_slice(&payload);
                            Some(c)
                        }
                        n => {
                            return Err(Error::InvalidTarSplit(format!(
                                "checksum of {} is {n} bytes, not 8",
                                String::from_utf8_lossy(&name)
                            )));
                        }
                    };
                    if !self.seen.insert(&clean_path(&name))? {
                        return Err(Error::DuplicatePath(
                            String::from_utf8_lossy(&name).into_owned(),
                        ));
                    }
                    return Ok(Some(TarSplitEntry::File { name, size, crc }));
                }
                k => return Err(Error::InvalidTarSplit(format!("unknown entry type {k}"))),
            }
        }
    }
}

impl<R: BufRead> Iterator for TarSplitReader<R> {
    type Item = Result<TarSplitEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.read_entry() {
            Ok(Some(entry)) => Some(Ok(entry)),
            // The end: a path named twice far apart is found now.
            Ok(None) => {
                self.failed = true;
                match self.seen.finish() {
                    Ok(true) => None,
                    Ok(false) => Some(Err(Error::DuplicatePath(FAR_DUPLICATE.into()))),
                    Err(e) => Some(Err(e)),
                }
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc_of(data: &[u8]) -> [u8; 8] {
        let mut c = Crc64::new();
        c.update(data);
        c.finish()
    }

    #[test]
    fn crc_known_values() {
        let cases: &[(&[u8], u64)] = &[
            (b"", 0),
            (b"123456789", 0xb90956c775a41001),
            (b"conf=1\n", 0x613368500d8c3740),
        ];
        for (data, want) in cases {
            assert_eq!(crc_of(data), want.to_be_bytes(), "{data:?}");
        }
        assert_eq!(STANDARD.encode(crc_of(b"gone\n")), "YULdjDGAAAA=");
    }

    #[test]
    fn crc_streams() {
        let mut c = Crc64::default();
        c.update(b"con");
        let partial = c.clone();
        c.update(b"f=1\n");
        assert_eq!(c.finish(), 0x613368500d8c3740u64.to_be_bytes());
        // finish does not consume; the clone kept its own state.
        assert_eq!(c.finish(), 0x613368500d8c3740u64.to_be_bytes());
        assert_eq!(partial.finish(), crc_of(b"con"));
        assert!(format!("{c:?}").contains("613368500d8c3740"));
    }

    #[test]
    fn clean_table() {
        let cases: &[(&str, &str)] = &[
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a", "a"),
            ("./a/", "a"),
            ("a//b/./c/", "a/b/c"),
            ("a/../b", "b"),
            ("a/b/../../..", ".."),
            ("../../a", "../../a"),
            ("/../a", "/a"),
            ("/", "/"),
            ("//", "/"),
            ("/a/b/..", "/a"),
            ("./etc/passwd", "etc/passwd"),
        ];
        for (input, want) in cases {
            assert_eq!(
                String::from_utf8(clean_path(input.as_bytes())).unwrap(),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn writes_go_format() {
        let mut w = TarSplitWriter::new(Vec::new());
        w.segment(b"hdr").unwrap();
        w.file(b"data/hello.txt", 6, Some(crc_of(b"hello\n")))
            .unwrap();
        w.segment(b"").unwrap();
        w.file(b"data/", 0, None).unwrap();
        w.file(b"a<b>&\"\\\n\x01", 0, None).unwrap();
        w.file(b"\xffbad", 1, Some(crc_of(b"x"))).unwrap();
        let out = String::from_utf8(w.finish().unwrap()).unwrap();
        let hello = STANDARD.encode(crc_of(b"hello\n"));
        let x = STANDARD.encode(crc_of(b"x"));
        let want = format!(
            concat!(
                "{{\"type\":2,\"payload\":\"aGRy\",\"position\":0}}\n",
                "{{\"type\":1,\"name\":\"data/hello.txt\",\"size\":6,\"payload\":\"{}\",\"position\":1}}\n",
                "{{\"type\":1,\"name\":\"data/\",\"payload\":null,\"position\":2}}\n",
                "{{\"type\":1,\"name\":\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001\",\"payload\":null,\"position\":3}}\n",
                "{{\"type\":1,\"name_raw\":\"/2JhZA==\",\"size\":1,\"payload\":\"{}\",\"position\":4}}\n",
            ),
            hello, x
        );
        assert_eq!(out, want);
    }

    #[test]
    fn round_trip() {
        let entries = vec![
            TarSplitEntry::Segment(vec![0u8; 512]),
            TarSplitEntry::File {
                name: b"./etc/".to_vec(),
                size: 0,
                crc: None,
            },
            TarSplitEntry::Segment(b"header\x00\xff".to_vec()),
            TarSplitEntry::File {
                name: b"etc/conf".to_vec(),
                size: 7,
                crc: Some(crc_of(b"conf=1\n")),
            },
            TarSplitEntry::File {
                name: b"caf\xe9/\x80\xfe".to_vec(),
                size: 5,
                crc: Some(crc_of(b"gone\n")),
            },
            TarSplitEntry::File {
                name: "héllo <&> \u{2028}".as_bytes().to_vec(),
                size: 1 << 40,
                crc: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            },
            TarSplitEntry::Segment(vec![0u8; 1024]),
        ];
        let mut w = TarSplitWriter::new(Vec::new());
        for e in &entries {
            match e {
                TarSplitEntry::Segment(b) => w.segment(b).unwrap(),
                TarSplitEntry::File { name, size, crc } => w.file(name, *size, *crc).unwrap(),
            }
        }
        let bytes = w.finish().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.lines().count(), entries.len());
        for (i, line) in text.lines().enumerate() {
            assert!(line.ends_with(&format!(",\"position\":{i}}}")), "{line}");
            // Each line is valid JSON.
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert!(text.contains("\"name_raw\":"));
        let back: Vec<TarSplitEntry> = TarSplitReader::new(&bytes[..])
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back, entries);
    }

    #[test]
    fn duplicate_paths_refused() {
        // (first name, second name, duplicate?)
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"a", b"a", true),
            (b"./a/", b"a", true),
            (b"a/b", b"a//b/", true),
            (b"x/../a", b"./a", true),
            (b"a", b"b", false),
            (b"a", b"a/b", false),
            (b"\xff", b"./\xff", true),
        ];
        for (first, second, dup) in cases {
            let mut w = TarSplitWriter::new(Vec::new());
            w.file(first, 0, None).unwrap();
            let r = w.file(second, 0, None);
            assert_eq!(
                matches!(r, Err(Error::DuplicatePath(_))),
                *dup,
                "{first:?} {second:?}"
            );
            assert_eq!(r.is_ok(), !dup);
        }
        let mut w = TarSplitWriter::new(Vec::new());
        w.file(b"./a/", 0, None).unwrap();
        match w.file(b"a", 0, None) {
            Err(Error::DuplicatePath(n)) => assert_eq!(n, "a"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reader_accepts_go_output() {
        // What c/storage 1.43 writes, including the trailing empty segment.
        let input = concat!(
            "{\"type\":2,\"payload\":\"aGRy\",\"position\":0}\n",
            "{\"type\":1,\"name\":\"gone\",\"size\":5,\"payload\":\"YULdjDGAAAA=\",\"position\":1}\n",
            "{\"type\":1,\"name\":\"a\\u003cb\",\"payload\":null,\"position\":2}\n",
            "\n",
            "{\"type\":2,\"payload\":\"\",\"position\":3}\n",
            "{\"type\":2,\"payload\":null,\"position\":4}",
        );
        let got: Vec<TarSplitEntry> = TarSplitReader::new(input.as_bytes())
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            got,
            vec![
                TarSplitEntry::Segment(b"hdr".to_vec()),
                TarSplitEntry::File {
                    name: b"gone".to_vec(),
                    size: 5,
                    crc: Some(crc_of(b"gone\n")),
                },
                TarSplitEntry::File {
                    name: b"a<b".to_vec(),
                    size: 0,
                    crc: None,
                },
            ]
        );
    }

    #[test]
    fn reader_errors() {
        let cases: &[&str] = &[
            "{\"type\":3,\"payload\":null,\"position\":0}\n",
            "{\"type\":2,\"payload\":\"!!\",\"position\":0}\n",
            "{\"type\":1,\"name\":\"a\",\"size\":1,\"payload\":\"AAAA\",\"position\":0}\n",
            "{\"type\":1,\"name\":\"a\",\"size\":-1,\"payload\":null,\"position\":0}\n",
            "{\"type\":1,\"name_raw\":\"%%\",\"payload\":null,\"position\":0}\n",
            "not json\n",
        ];
        for input in cases {
            let mut r = TarSplitReader::new(input.as_bytes());
            assert!(
                matches!(r.next(), Some(Err(Error::InvalidTarSplit(_)))),
                "{input}"
            );
            assert!(r.next().is_none());
        }
        let dup = concat!(
            "{\"type\":1,\"name\":\"./a\",\"payload\":null,\"position\":0}\n",
            "{\"type\":1,\"name\":\"a/\",\"payload\":null,\"position\":1}\n",
        );
        let mut r = TarSplitReader::new(dup.as_bytes());
        assert!(matches!(r.next(), Some(Ok(_))));
        assert!(matches!(r.next(), Some(Err(Error::DuplicatePath(_)))));
        assert!(r.next().is_none());
    }
}
