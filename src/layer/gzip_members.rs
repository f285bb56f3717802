//! gzip blobs (RFC 1952) decoded member after member, as c/storage reads them (several members
//! make one stream), with each member's CRC-32 checked either here or, off the decoding thread,
//! by whoever hashes the decoded stream.
//!
//! The decoding thread is the critical path of a one-layer import: inflate alone keeps a core
//! busy, and the CRC-32 of every decoded byte cost it 3–6 % more. The thread that computes the
//! DiffID sees the same bytes anyway, so there it is nearly free; this reader then only reports
//! where each member ended and the CRC its trailer claims ([`MemberEnd`]). The length in the
//! trailer (ISIZE) is checked here either way.

use std::io::{self, BufRead, Read};

use flate2::Crc;
use flate2::bufread::DeflateDecoder;

/// The end of a member: where it ended in the decoded stream and the CRC-32 its trailer gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberEnd {
    /// Offset in the decoded stream just past the member's last byte.
    pub end: u64,
    /// The CRC-32 of the member's decoded bytes, as its trailer says.
    pub crc: u32,
}

/// Where each member's CRC-32 is checked.
pub enum CrcCheck {
    /// By the reader, as it decodes.
    Inline,
    /// By the receiver of every [`MemberEnd`], which computes the CRC-32s of the decoded stream
    /// itself ([`MemberCrcs`]; the layer pipeline's hash thread does, see
    /// `pipe::StreamFeed::gzip_crc_check`).
    Deferred(Box<dyn FnMut(MemberEnd) -> io::Result<()> + Send>),
}

impl std::fmt::Debug for CrcCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CrcCheck::Inline => "Inline",
            CrcCheck::Deferred(_) => "Deferred",
        })
    }
}

/// The CRC-32s of the gzip members of a stream, computed as its bytes go by (with `crc_fast`,
/// whose folding uses the widest carry-less multiply the CPU has: ~4× zlib-rs's on AVX-512).
pub(crate) struct MemberCrcs {
    /// Of the current member's bytes so far.
    crc: crc_fast::Digest,
    /// Where the current member began in the stream.
    member_start: u64,
    /// Stream bytes seen.
    pos: u64,
    /// Member ends told but not reached yet (the decoder may be ahead of the hasher).
    pending: std::collections::VecDeque<MemberEnd>,
    /// Members checked.
    done: u64,
    /// The first member that did not match.
    bad: Option<(u64, u32, u32)>,
    /// Whether the decoder told an end before the bytes already seen (a bug, not bad input).
    lost: bool,
}

impl Default for MemberCrcs {
    fn default() -> Self {
        MemberCrcs {
            crc: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            member_start: 0,
            pos: 0,
            pending: std::collections::VecDeque::new(),
            done: 0,
            bad: None,
            lost: false,
        }
    }
}

impl MemberCrcs {
    /// Takes the next bytes of the stream, ending members at their ends.
    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        while let Some(&e) = self.pending.front()
            && e.end <= self.pos + bytes.len() as u64
        {
            self.pending.pop_front();
            let k = usize::try_from(e.end.saturating_sub(self.pos)).unwrap_or(bytes.len());
            self.crc.update(&bytes[..k]);
            self.pos = e.end;
            bytes = &bytes[k..];
            self.end_member(e);
        }
        self.crc.update(bytes);
        self.pos += bytes.len() as u64;
    }

    /// A member ended at `e.end` (ends come in order).
    pub(crate) fn told(&mut self, e: MemberEnd) {
        if !self.pending.is_empty() || e.end > self.pos {
            self.pending.push_back(e);
        } else if e.end == self.pos {
            self.end_member(e);
        } else {
            self.lost = true;
        }
    }

    fn end_member(&mut self, e: MemberEnd) {
        self.done += 1;
        let sum = self.sum();
        if sum != e.crc && self.bad.is_none() {
            self.bad = Some((self.done, e.crc, sum));
        }
        self.crc.reset();
        self.member_start = self.pos;
    }

    /// The first member whose CRC-32 did not match so far: its number, the trailer's CRC and the
    /// data's.
    pub(crate) fn bad(&self) -> Option<(u64, u32, u32)> {
        self.bad
    }

    /// The first bad member, once the stream is complete: also one whose end never came, or
    /// bytes after the last member.
    pub(crate) fn result(self) -> Option<(u64, u32, u32)> {
        if self.bad.is_some() {
            return self.bad;
        }
        let tail = self.pos > self.member_start || !self.pending.is_empty() || self.lost;
        tail.then_some((self.done + 1, 0, self.sum()))
    }

    /// The CRC-32 of the current member's bytes so far (a CRC-32 fits its 32 bits).
    fn sum(&self) -> u32 {
        u32::try_from(self.crc.finalize()).unwrap_or(u32::MAX)
    }
}

/// A reader of the stream the gzip members of `R` decode to.
pub struct GzipMembers<R: BufRead> {
    /// The current member's decoder; `None` once the stream has ended (or failed).
    decoder: Option<DeflateDecoder<R>>,
    check: CrcCheck,
    /// The members' CRC-32s (inline checking only).
    crcs: MemberCrcs,
    /// Bytes of the current member decoded so far.
    member_len: u64,
    /// Bytes of the whole stream decoded so far.
    out: u64,
    /// Members decoded so far (for errors).
    members: u64,
}

impl<R: BufRead> std::fmt::Debug for GzipMembers<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipMembers")
            .field("out", &self.out)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<R: BufRead> GzipMembers<R> {
    /// Reads the first member's header from `input`; fails when it is not gzip.
    pub fn new(mut input: R, check: CrcCheck) -> io::Result<GzipMembers<R>> {
        read_header(&mut input)?;
        Ok(GzipMembers {
            decoder: Some(DeflateDecoder::new(input)),
            check,
            crcs: MemberCrcs::default(),
            member_len: 0,
            out: 0,
            members: 0,
        })
    }

    /// The member just decoded is complete: checks its trailer; starts the next member, if the
    /// input has one.
    fn next_member(&mut self) -> io::Result<()> {
        let Some(decoder) = self.decoder.take() else {
            return Ok(());
        };
        let mut input = decoder.into_inner();
        let mut trailer = [0u8; 8];
        input.read_exact(&mut trailer).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid(format!(
                    "gzip member {}: its trailer is cut short",
                    self.members + 1
                ))
            } else {
                e
            }
        })?;
        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        self.members += 1;
        // ISIZE is the length modulo 2^32.
        if u64::from(isize) != self.member_len & 0xffff_ffff {
            return Err(invalid(format!(
                "gzip member {}: its trailer gives a length of {isize} bytes, its data is {} bytes",
                self.members, self.member_len
            )));
        }
        let end = MemberEnd { end: self.out, crc };
        match &mut self.check {
            CrcCheck::Inline => {
                self.crcs.told(end);
                if let Some((member, trailer, data)) = self.crcs.bad() {
                    return Err(invalid(format!(
                        "gzip member {member}: CRC-32 {data:08x} of its data differs from {trailer:08x} in its trailer"
                    )));
                }
            }
            CrcCheck::Deferred(report) => report(end)?,
        }
        self.member_len = 0;
        if input.fill_buf()?.is_empty() {
            return Ok(());
        }
        read_header(&mut input)?;
        self.decoder = Some(DeflateDecoder::new(input));
        Ok(())
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 {
                if matches!(self.check, CrcCheck::Inline) {
                    self.crcs.update(&buf[..n]);
                }
                self.member_len += n as u64;
                self.out += n as u64;
                return Ok(n);
            }
            // The deflate stream ended: a deflate decoder reading a `BufRead` stops at its last
            // byte, so the trailer comes next.
            if let Err(e) = self.next_member() {
                self.decoder = None;
                return Err(e);
            }
        }
    }
}

/// Reads a member header (RFC 1952 § 2.3): magic, method, flags and their optional fields; the
/// header CRC when the header has one.
fn read_header<R: BufRead>(input: &mut R) -> io::Result<()> {
    let mut crc = Crc::new();
    let mut fixed = [0u8; 10];
    input.read_exact(&mut fixed).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            invalid("gzip header cut short".into())
        } else {
            e
        }
    })?;
    crc.update(&fixed);
    if fixed[0..2] != [0x1f, 0x8b] {
        return Err(invalid(
            "not a gzip member: its first bytes are not 1f 8b".into(),
        ));
    }
    if fixed[2] != 8 {
        return Err(invalid(format!(
            "gzip compression method {} (only 8, deflate, exists)",
            fixed[2]
        )));
    }
    let flags = fixed[3];
    if flags & 0xe0 != 0 {
        return Err(invalid(format!(
            "gzip header flags {flags:#04x}: reserved bits set"
        )));
    }
    let mut take = |n: usize, crc: &mut Crc| -> io::Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        input.read_exact(&mut v)?;
        crc.update(&v);
        Ok(v)
    };
    if flags & 0x04 != 0 {
        let len = take(2, &mut crc)?;
        take(usize::from(u16::from_le_bytes([len[0], len[1]])), &mut crc)?;
    }
    for flag in [0x08u8, 0x10] {
        // A file name, a comment: each ends with a zero byte.
        if flags & flag != 0 {
            loop {
                let b = take(1, &mut crc)?;
                if b[0] == 0 {
                    break;
                }
            }
        }
    }
    if flags & 0x02 != 0 {
        let want = crc.sum() & 0xffff;
        let mut got = [0u8; 2];
        input.read_exact(&mut got)?;
        if u32::from(u16::from_le_bytes(got)) != want {
            return Err(invalid("gzip header CRC does not match the header".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    fn gz(data: &[u8], header: flate2::GzBuilder) -> Vec<u8> {
        let mut e = header.write(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(blob: &[u8], check: CrcCheck) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GzipMembers::new(blob, check)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn members_and_header_fields() {
        let mut blob = gz(b"hello ", flate2::GzBuilder::new());
        blob.extend(gz(
            b"world",
            flate2::GzBuilder::new()
                .filename("f.tar")
                .comment("c")
                .extra(vec![1, 2, 3]),
        ));
        blob.extend(gz(b"", flate2::GzBuilder::new()));
        assert_eq!(decode(&blob, CrcCheck::Inline).unwrap(), b"hello world");
        let ends = Arc::new(Mutex::new(Vec::new()));
        let seen = ends.clone();
        let check = CrcCheck::Deferred(Box::new(move |e| {
            seen.lock().unwrap().push(e);
            Ok(())
        }));
        assert_eq!(decode(&blob, check).unwrap(), b"hello world");
        let ends = ends.lock().unwrap();
        let crc = |d: &[u8]| {
            let mut c = Crc::new();
            c.update(d);
            c.sum()
        };
        assert_eq!(
            *ends,
            vec![
                MemberEnd {
                    end: 6,
                    crc: crc(b"hello ")
                },
                MemberEnd {
                    end: 11,
                    crc: crc(b"world")
                },
                MemberEnd {
                    end: 11,
                    crc: crc(b"")
                },
            ]
        );
    }

    #[test]
    fn bad_input_fails() {
        let good = gz(b"some data here", flate2::GzBuilder::new());
        let n = good.len();
        let mut bad_crc = good.clone();
        bad_crc[n - 8] ^= 1;
        let e = decode(&bad_crc, CrcCheck::Inline).unwrap_err();
        assert!(e.to_string().contains("CRC-32"), "{e}");
        let mut bad_len = good.clone();
        bad_len[n - 1] ^= 1;
        let e = decode(&bad_len, CrcCheck::Inline).unwrap_err();
        assert!(e.to_string().contains("length"), "{e}");
        assert!(decode(&good[..n - 3], CrcCheck::Inline).is_err());
        assert!(decode(&good[..5], CrcCheck::Inline).is_err());
        let mut garbage = good.clone();
        garbage.extend_from_slice(b"\0\0\0\0");
        assert!(decode(&garbage, CrcCheck::Inline).is_err());
        let mut method = good.clone();
        method[2] = 7;
        assert!(decode(&method, CrcCheck::Inline).is_err());
        assert!(decode(b"plain text, no gzip", CrcCheck::Inline).is_err());
    }
}
