//! Chunks of a decoded layer shared between threads without copying: the pipe's reader, the
//! hasher and the tree writer's file thread each hold them as long as they need; the last holder
//! hands a chunk back to the pool it came from.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use super::page_buf::PageBuf;

/// A chunk shared by the pipe's reader, the hasher and the file thread.
pub(crate) type Chunk = Arc<PageBuf>;

/// Hands `used` back to its pool when nobody else holds it.
pub(crate) fn recycle(back: &SyncSender<PageBuf>, used: Chunk) {
    if let Ok(v) = Arc::try_unwrap(used)
        && v.capacity() > 0
    {
        let _ = back.try_send(v);
    }
}

/// Bytes of a decoded chunk, handed on without copying them (a file's content, to the tree
/// writer's file thread): the chunk goes back to its pool when its last holder lets go.
pub struct SharedBytes {
    chunk: Option<Chunk>,
    start: usize,
    end: usize,
    back: SyncSender<PageBuf>,
}

impl SharedBytes {
    /// Bytes `start..end` of `chunk`, which goes back through `back` when its last holder lets
    /// go. `None` when the range is not within the chunk.
    pub(crate) fn new(
        chunk: &Chunk,
        start: usize,
        end: usize,
        back: &SyncSender<PageBuf>,
    ) -> Option<SharedBytes> {
        (start <= end && end <= chunk.len()).then(|| SharedBytes {
            chunk: Some(chunk.clone()),
            start,
            end,
            back: back.clone(),
        })
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &(self.end - self.start))
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.chunk {
            Some(c) => &c[self.start..self.end],
            None => &[],
        }
    }
}

impl Drop for SharedBytes {
    fn drop(&mut self) {
        if let Some(c) = self.chunk.take() {
            recycle(&self.back, c);
        }
    }
}
