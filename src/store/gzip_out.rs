//! The gzip stream a layer's tar-split is written as (`<id>.tar-split.gz`): raw deflate at the fastest
//! level, framed by hand so the CRC-32 of the trailer runs on the SIMD implementation (the one behind
//! flate2's `GzEncoder` is table-driven, and a tar-split is mostly base64 header text: ~100 MB for an
//! OS image). Any gzip reader (c/storage's included) reads it.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::DeflateEncoder;

/// gzip header: magic, CM=deflate, no flags, no mtime, XFL=4 (fastest), OS=255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// A gzip writer over `W`.
pub(crate) struct GzipOut<W: Write> {
    deflate: DeflateEncoder<W>,
    crc: crc_fast::Digest,
    len: u32,
}

impl<W: Write> std::fmt::Debug for GzipOut<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipOut").field("len", &self.len).finish()
    }
}

impl<W: Write> GzipOut<W> {
    /// Starts a gzip stream on `out` (writes the header).
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        Ok(GzipOut {
            deflate: DeflateEncoder::new(out, Compression::fast()),
            crc: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            len: 0,
        })
    }

    /// Ends the stream (deflate end, CRC-32 and length) and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        let mut out = self.deflate.finish()?;
        let crc = u32::try_from(self.crc.finalize()).unwrap_or(0);
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&self.len.to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for GzipOut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.deflate.write(buf)?;
        self.crc.update(&buf[..n]);
        // ISIZE is the length modulo 2^32.
        self.len = self.len.wrapping_add(n as u32);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.deflate.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// flate2's reader (as c/storage's) gets the bytes back and checks CRC and length.
    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut g = GzipOut::new(Vec::new()).expect("header");
        for c in data.chunks(1000) {
            g.write_all(c).expect("write");
        }
        let gz = g.finish().expect("finish");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("valid gzip");
        assert_eq!(back, data);
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(
            flate2::read::GzDecoder::new(&bad[..])
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }
}
