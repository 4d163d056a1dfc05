//! Where EPT table pages come from: the [`FrameAllocator`] trait and
//! [`FramePool`], a fixed pool of frames that needs no heap.

use core::sync::atomic::{AtomicU64, Ordering};

/// One 4 KiB page of EPT entries.
///
/// Entries are atomics because the processor sets accessed and dirty flags
/// in them while a guest runs; every update the tables make is a single
/// atomic store or read-modify-write.
#[repr(C, align(4096))]
pub struct EptFrame(pub [AtomicU64; 512]);

impl EptFrame {
    /// A frame of not-present entries.
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; 512])
    }

    /// Sets every entry to zero (not present).
    pub fn zero(&self) {
        for e in &self.0 {
            e.store(0, Ordering::Relaxed);
        }
    }
}

impl Default for EptFrame {
    fn default() -> Self {
        Self::new()
    }
}

/// The source of the pages EPT tables are made of.
///
/// The host-physical address returned by [`FrameAllocator::allocate_zeroed`]
/// is what the tables write into entries and the EPT pointer, so in the
/// hypervisor image it must be the address the processor will walk, and
/// [`FrameAllocator::frame`] must give access to that same memory.
pub trait FrameAllocator {
    /// A zeroed, 4 KiB-aligned frame, by host-physical address; `None` when
    /// none is left.
    fn allocate_zeroed(&mut self) -> Option<u64>;
    /// Access to the frame at `host_physical`, if it is one of this
    /// allocator's frames.
    fn frame(&self, host_physical: u64) -> Option<&EptFrame>;
    /// Returns a frame obtained from [`FrameAllocator::allocate_zeroed`].
    fn free(&mut self, host_physical: u64);
}

impl<A: FrameAllocator + ?Sized> FrameAllocator for &mut A {
    fn allocate_zeroed(&mut self) -> Option<u64> {
        (**self).allocate_zeroed()
    }
    fn frame(&self, host_physical: u64) -> Option<&EptFrame> {
        (**self).frame(host_physical)
    }
    fn free(&mut self, host_physical: u64) {
        (**self).free(host_physical)
    }
}

/// A fixed pool of frames borrowed from the caller (a `static` array in an
/// image, a buffer in tests), with a free list threaded through the free
/// frames themselves.
pub struct FramePool<'a> {
    frames: &'a [EptFrame],
    host_physical_base: u64,
    /// Index + 1 of the first free frame, 0 when the list is empty.
    free_head: u64,
    /// Frames at and above this index have never been handed out.
    untouched: usize,
    in_use: usize,
}

impl<'a> FramePool<'a> {
    /// A pool over `frames` whose host-physical addresses are their
    /// addresses in memory (an identity-mapped hypervisor).
    pub fn new(frames: &'a [EptFrame]) -> Self {
        Self {
            host_physical_base: frames.as_ptr() as u64,
            frames,
            free_head: 0,
            untouched: 0,
            in_use: 0,
        }
    }

    /// A pool over `frames` whose first frame is at host-physical
    /// `host_physical_base`; `None` if that is not 4 KiB aligned or the pool
    /// would wrap the address space.
    pub fn with_host_physical_base(
        frames: &'a [EptFrame],
        host_physical_base: u64,
    ) -> Option<Self> {
        let bytes = (frames.len() as u64).checked_mul(4096)?;
        if host_physical_base & 0xfff != 0 || host_physical_base.checked_add(bytes).is_none() {
            return None;
        }
        Some(Self {
            frames,
            host_physical_base,
            free_head: 0,
            untouched: 0,
            in_use: 0,
        })
    }

    /// Frames currently handed out.
    pub fn frames_in_use(&self) -> usize {
        self.in_use
    }

    /// Frames in the pool.
    pub fn capacity(&self) -> usize {
        self.frames.len()
    }

    fn index_of(&self, host_physical: u64) -> Option<usize> {
        let offset = host_physical.checked_sub(self.host_physical_base)?;
        if offset & 0xfff != 0 {
            return None;
        }
        let index = usize::try_from(offset / 4096).ok()?;
        (index < self.frames.len()).then_some(index)
    }

    fn address_of(&self, index: usize) -> u64 {
        self.host_physical_base + index as u64 * 4096
    }
}

impl FrameAllocator for FramePool<'_> {
    fn allocate_zeroed(&mut self) -> Option<u64> {
        let index = if self.free_head != 0 {
            let index = (self.free_head - 1) as usize;
            let frame = self.frames.get(index)?;
            self.free_head = frame.0[0].load(Ordering::Relaxed);
            index
        } else if self.untouched < self.frames.len() {
            self.untouched += 1;
            self.untouched - 1
        } else {
            return None;
        };
        self.frames[index].zero();
        self.in_use += 1;
        Some(self.address_of(index))
    }

    fn frame(&self, host_physical: u64) -> Option<&EptFrame> {
        self.index_of(host_physical).map(|i| &self.frames[i])
    }

    fn free(&mut self, host_physical: u64) {
        if let Some(index) = self.index_of(host_physical) {
            self.frames[index].0[0].store(self.free_head, Ordering::Relaxed);
            self.free_head = index as u64 + 1;
            self.in_use = self.in_use.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn pool_hands_out_zeroed_distinct_frames_and_reuses_freed_ones() {
        let frames: Vec<EptFrame> = (0..3).map(|_| EptFrame::new()).collect();
        let mut pool = FramePool::with_host_physical_base(&frames, 0x10_0000).unwrap();
        let a = pool.allocate_zeroed().unwrap();
        let b = pool.allocate_zeroed().unwrap();
        let c = pool.allocate_zeroed().unwrap();
        assert_eq!((a, b, c), (0x10_0000, 0x10_1000, 0x10_2000));
        assert_eq!(pool.allocate_zeroed(), None);
        assert_eq!(pool.frames_in_use(), 3);
        pool.frame(b).unwrap().0[7].store(0xdead, Ordering::Relaxed);
        pool.free(b);
        pool.free(a);
        assert_eq!(pool.frames_in_use(), 1);
        let again = pool.allocate_zeroed().unwrap();
        assert_eq!(again, a);
        let again = pool.allocate_zeroed().unwrap();
        assert_eq!(again, b);
        assert!(pool
            .frame(b)
            .unwrap()
            .0
            .iter()
            .all(|e| e.load(Ordering::Relaxed) == 0));
        assert!(pool.frame(0x10_0800).is_none());
        assert!(pool.frame(0x10_3000).is_none());
        assert!(FramePool::with_host_physical_base(&frames, 0x10_0800).is_none());
    }

    #[test]
    fn identity_pool_uses_frame_addresses() {
        let frames: Vec<EptFrame> = (0..1).map(|_| EptFrame::new()).collect();
        let mut pool = FramePool::new(&frames);
        let a = pool.allocate_zeroed().unwrap();
        assert_eq!(a, frames.as_ptr() as u64);
        assert_eq!(a % 4096, 0);
    }
}
