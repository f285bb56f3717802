//! Buffers mapped page by page for themselves instead of taken from malloc, for the pipe's large
//! chunks: unmapped when dropped, their memory goes back to the kernel at once.
//!
//! From malloc, a chunk of half a MiB lands in the arena of the thread that asked for it (glibc
//! raises its mmap threshold to the size of the first such block freed), and an arena gives back
//! only what is free at its top. Each layer's pipe runs on threads of its own, so every arena they
//! touched kept a few MiB: five bound images, 40 layers, 11 MB of heap in use, 27 MB resident.

use std::io;
use std::ops::Deref;

use memmap2::MmapMut;

/// A buffer of a fixed capacity whose first `len` bytes are its contents.
#[derive(Debug, Default)]
pub(crate) struct PageBuf {
    /// The pages; `None` for a buffer of no capacity (nothing is mapped).
    map: Option<MmapMut>,
    len: usize,
}

impl PageBuf {
    /// An empty buffer able to hold `capacity` bytes (rounded up to whole pages by the kernel).
    pub(crate) fn with_capacity(capacity: usize) -> io::Result<PageBuf> {
        let map = if capacity == 0 {
            None
        } else {
            Some(MmapMut::map_anon(capacity)?)
        };
        Ok(PageBuf { map, len: 0 })
    }

    /// How many bytes it can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// The bytes after the contents, to be filled and then counted with [`PageBuf::advance`].
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        match &mut self.map {
            Some(m) => &mut m[self.len..],
            None => &mut [],
        }
    }

    /// Counts `n` more bytes of [`PageBuf::spare_mut`] as contents.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len = self.len.saturating_add(n).min(self.capacity());
    }

    /// Forgets the contents, keeping the pages.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

impl Deref for PageBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[..self.len],
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_clears_and_stays_within_capacity() -> io::Result<()> {
        let mut b = PageBuf::with_capacity(10)?;
        assert!(b.capacity() >= 10);
        assert!(b.is_empty());
        b.spare_mut()[..3].copy_from_slice(b"abc");
        b.advance(3);
        assert_eq!(&*b, b"abc");
        b.advance(usize::MAX / 2);
        assert_eq!(b.len(), b.capacity());
        assert!(b.spare_mut().is_empty());
        b.clear();
        assert!(b.is_empty());
        let none = PageBuf::with_capacity(0)?;
        assert_eq!((none.capacity(), none.len()), (0, 0));
        Ok(())
    }
}
