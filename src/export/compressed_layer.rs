//! A stored layer's tar, rebuilt from its tar-split and files (its DiffID checked), compressed
//! into any writer in one pass: a layout's blob file, a registry upload. zstd:chunked has the tar
//! rebuilt on a thread of its own and written by [`crate::layer::zstd_chunked_writer`].

use std::io::Write;

use storage_format::{Digest, LayerRecord};

use super::LayerCompression;
use crate::error::{Error, Result};
use crate::layer::hashing_writer::HashingWriter;
use crate::layer::sink::LayerSink;
use crate::store::Store;

/// Why [`compressed_layer`] failed: writing to its output, or anything else.
#[derive(Debug)]
pub(crate) enum LayerWriteError {
    /// Writing (or compressing into) the output failed.
    Write(std::io::Error),
    /// Reading the layer failed, or its tar is not what its record says.
    Other(Error),
}

/// A compressed layer blob: digest, size, the DiffID of its tar, its descriptor's annotations.
pub(crate) type Compressed = (Digest, u64, Digest, Option<Annotations>);

/// A descriptor's annotations.
pub(crate) type Annotations = std::collections::BTreeMap<String, String>;

/// The layer's tar, compressed as `compression`, into `out`: returns `out`, the blob's digest
/// and length, the DiffID (checked against the record), and the descriptor's annotations
/// (zstd:chunked's TOC and tar-split positions).
#[allow(clippy::type_complexity)]
pub(crate) fn compressed_layer<W: Write>(
    store: &Store,
    layer: &LayerRecord,
    out: W,
    compression: LayerCompression,
) -> std::result::Result<(W, Digest, u64, Digest, Option<Annotations>), LayerWriteError> {
    let hashing = HashingWriter::new(out);
    let other = LayerWriteError::Other;
    let w = LayerWriteError::Write;
    let mut annotations = None;
    let (diff_id, hashing) = match compression {
        LayerCompression::ZstdChunked => {
            // A failure to write the output is the output's (a full disk, a cut upload).
            let (out, blob) = chunked(store, layer, hashing).map_err(|e| match e {
                Error::Write { source, .. } => LayerWriteError::Write(source),
                e => LayerWriteError::Other(e),
            })?;
            annotations = Some(blob.annotations);
            (blob.diff_id, out)
        }
        LayerCompression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::default());
            let diff_id = feed(store, layer, &mut gz).map_err(other)?;
            (diff_id, gz.finish().map_err(w)?)
        }
        LayerCompression::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(hashing, 3).map_err(w)?;
            let diff_id = feed(store, layer, &mut z).map_err(other)?;
            (diff_id, z.finish().map_err(w)?)
        }
        LayerCompression::None => {
            let mut h = hashing;
            let diff_id = feed(store, layer, &mut h).map_err(other)?;
            (diff_id, h)
        }
    };
    let (inner, digest, len) = hashing.finish();
    Ok((inner, digest, len, diff_id, annotations))
}

/// The layer's tar rebuilt on a thread of its own and written to `out` as zstd:chunked.
fn chunked<W: Write>(
    store: &Store,
    layer: &LayerRecord,
    out: W,
) -> Result<(W, crate::layer::zstd_chunked_writer::ChunkedBlob)> {
    let (reader, writer) =
        std::io::pipe().map_err(|e| Error::io("creating a pipe for", layer.id.as_str(), e))?;
    std::thread::scope(|s| {
        let fed = s.spawn(move || {
            let mut w = std::io::BufWriter::with_capacity(256 << 10, writer);
            let d = feed(store, layer, &mut w)?;
            w.flush()
                .map_err(|e| Error::io("writing the tar of", layer.id.as_str(), e))?;
            Ok::<_, Error>(d)
        });
        let written = crate::layer::zstd_chunked_writer::write_zstd_chunked(
            std::io::BufReader::with_capacity(256 << 10, reader),
            out,
        );
        let fed = fed
            .join()
            .map_err(|_| Error::Internal("the tar rebuilder panicked".into()))?;
        // The writer's failure to write its output comes first (the rebuilder then only saw its
        // pipe break); else the rebuilder's error (a damaged layer) explains a writer that saw
        // the stream end.
        let (diff_id, (out, blob)) = match (fed, written) {
            (Ok(d), Ok(w)) => (d, w),
            (_, Err(e @ Error::Write { .. })) | (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
        };
        if blob.diff_id != diff_id {
            return Err(Error::Internal(format!(
                "layer {}: the zstd:chunked writer read {} where the tar is {diff_id}",
                layer.id, blob.diff_id
            )));
        }
        Ok((out, blob))
    })
}

/// The layer's tar into `out`; returns its DiffID (checked against the record).
fn feed(store: &Store, layer: &LayerRecord, out: &mut dyn Write) -> Result<Digest> {
    let mut sink = LayerSink::to_writer(out);
    store.feed_layer(layer, &mut sink)?;
    let (_, diff_id) = sink.finish();
    let diff_id = diff_id.ok_or_else(|| Error::Internal("a writer sink gave no digest".into()))?;
    if layer.diff_digest.as_deref() != Some(diff_id.to_string().as_str()) {
        return Err(Error::Damaged {
            what: format!("layer {}", layer.id),
            detail: format!(
                "its tar rebuilds to {diff_id}, not {}",
                layer.diff_digest.as_deref().unwrap_or("(none recorded)")
            ),
        });
    }
    Ok(diff_id)
}
