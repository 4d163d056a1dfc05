//! Where BAT caches, block marks and sector bitmap caches live:
//! caller-provided memory without an allocator, or owned vectors with
//! `alloc`.
//!
//! A dynamic or differencing image with `n` BAT entries and a bitmap cache
//! of `s` slots ([`crate::OpenOptions::bitmap_cache_slots`]) takes
//! [`table_words`]`(n, s)` words, in this order:
//!
//! - `n` for the cached BAT;
//! - `n` of scratch used to sort blocks by offset (overlap checks on open,
//!   compaction);
//! - `ceil(n / 32)` of marks, one bit per block whose sectors are all
//!   present (reads of such blocks skip the sector bitmap);
//! - `s * `[`BITMAP_SLOT_WORDS`] for the cached sector bitmap sectors.
//!
//! The slot count used is the one asked for, at least one and at most the
//! image's number of bitmap sectors, so `table_words(n, s)` always
//! suffices. Fixed images need no words.

use crate::error::Error;

/// Words of one bitmap cache slot: the block and sector index it holds
/// (with its dirty flag), then the sector's 512 bytes of bits.
pub const BITMAP_SLOT_WORDS: usize = 2 + 128;

/// Words of the fully-present marks of an image with `entries` BAT entries.
pub(crate) const fn marks_len(entries: u32) -> usize {
    (entries as usize).div_ceil(32)
}

/// Words of table storage for an image with `entries` BAT entries and a
/// bitmap cache of `bitmap_cache_slots` slots (saturating at `usize::MAX`,
/// which no storage provides).
pub const fn table_words(entries: u32, bitmap_cache_slots: usize) -> usize {
    let n = entries as usize;
    let slots = if bitmap_cache_slots == 0 {
        1
    } else {
        bitmap_cache_slots
    };
    let table = n.saturating_mul(2).saturating_add(marks_len(entries));
    table.saturating_add(slots.saturating_mul(BITMAP_SLOT_WORDS))
}

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
