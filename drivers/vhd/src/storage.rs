//! Where BAT caches live: caller-provided memory without an allocator, or
//! owned vectors with `alloc`.
//!
//! An image with `n` BAT entries needs `2 * n` words: `n` for the cached
//! table and `n` of scratch used to sort blocks by offset (overlap checks on
//! open, compaction). Fixed images need none.

use crate::error::Error;

/// Hands out BAT storage for each image of a chain as it is opened.
pub trait TableStorage<B> {
    /// Storage of at least `words` u32 words.
    fn table(&mut self, words: usize) -> Result<B, Error>;
}

/// Carves BAT storage out of one caller-provided slice, without allocation.
pub struct SlicePool<'a> {
    rest: &'a mut [u32],
}

impl<'a> SlicePool<'a> {
    /// A pool over `words`.
    pub fn new(words: &'a mut [u32]) -> Self {
        SlicePool { rest: words }
    }
    /// Words not handed out yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

impl<'a> TableStorage<&'a mut [u32]> for SlicePool<'a> {
    fn table(&mut self, words: usize) -> Result<&'a mut [u32], Error> {
        if words > self.rest.len() {
            return Err(Error::StorageTooSmall {
                needed: words,
                available: self.rest.len(),
            });
        }
        let rest = core::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(words);
        self.rest = tail;
        Ok(head)
    }
}

/// Allocates each BAT cache as a `Vec<u32>`.
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug, Default)]
pub struct VecStorage;

#[cfg(feature = "alloc")]
impl TableStorage<alloc::vec::Vec<u32>> for VecStorage {
    fn table(&mut self, words: usize) -> Result<alloc::vec::Vec<u32>, Error> {
        Ok(alloc::vec![0; words])
    }
}
