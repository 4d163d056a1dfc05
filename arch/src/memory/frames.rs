//! Bookkeeping of free host-physical memory.
//!
//! [`PhysicalFrames`] starts from the firmware's usable ranges minus every
//! range that must never be handed out (firmware areas, the image, the
//! loader's information, boot modules) and keeps the free space as a sorted
//! list of disjoint page-aligned ranges of fixed capacity. Allocation is first
//! fit with any power-of-two alignment; freed ranges merge with their
//! neighbours.

use core::ops::Range;

use heapless::Vec;

/// The size of a frame.
pub const FRAME_SIZE: u64 = 4096;

/// Why an allocation or a free failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free range holds `size` bytes at alignment `align`.
    OutOfMemory {
        /// Bytes requested.
        size: u64,
        /// Alignment requested.
        align: u64,
    },
    /// The size is zero or not a multiple of the frame size, or the
    /// alignment is not a power of two of at least the frame size.
    BadRequest {
        /// Bytes requested.
        size: u64,
        /// Alignment requested.
        align: u64,
    },
    /// The free list would need more than its capacity of ranges.
    TooFragmented {
        /// The capacity of the free list.
        capacity: usize,
    },
    /// A freed range overlaps memory that is already free.
    DoubleFree {
        /// The range being freed.
        range: Range<u64>,
    },
}

/// A first-fit allocator of physical frames.
#[derive(Clone, Debug)]
pub struct PhysicalFrames<const N: usize> {
    free: Vec<Range<u64>, N>,
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

impl<const N: usize> PhysicalFrames<N> {
    /// An allocator over `usable` minus `reserved`. Usable ranges are shrunk
    /// to whole frames, reserved ranges grown to whole frames; overlapping
    /// usable ranges are merged.
    pub fn new(
        usable: impl IntoIterator<Item = Range<u64>>,
        reserved: impl IntoIterator<Item = Range<u64>>,
    ) -> Result<Self, FrameError> {
        let mut allocator = Self { free: Vec::new() };
        for range in usable {
            let start = align_up(range.start, FRAME_SIZE);
            let end = range.end & !(FRAME_SIZE - 1);
            if let Some(start) = start.filter(|&s| s < end) {
                allocator.insert(start..end, true)?;
            }
        }
        for range in reserved {
            let start = range.start & !(FRAME_SIZE - 1);
            let end = align_up(range.end, FRAME_SIZE).unwrap_or(!(FRAME_SIZE - 1));
            allocator.remove(start..end)?;
        }
        Ok(allocator)
    }

    /// Allocates `size` bytes aligned to `align`; returns the first address.
    pub fn allocate(&mut self, size: u64, align: u64) -> Result<u64, FrameError> {
        // An empty range to avoid overlaps nothing.
        self.allocate_outside(size, align, 0..0)
    }

    /// Takes `range` out of the free memory for good (parts of it may
    /// already be taken).
    pub fn reserve(&mut self, range: Range<u64>) -> Result<(), FrameError> {
        self.remove(range)
    }

    /// Allocates `size` bytes aligned to `align` that do not overlap
    /// `avoid`; returns the first address. Otherwise as [`allocate`](Self::allocate).
    pub fn allocate_outside(
        &mut self,
        size: u64,
        align: u64,
        avoid: Range<u64>,
    ) -> Result<u64, FrameError> {
        if size == 0
            || !size.is_multiple_of(FRAME_SIZE)
            || !align.is_power_of_two()
            || align < FRAME_SIZE
        {
            return Err(FrameError::BadRequest { size, align });
        }
        let found = self.free.iter().find_map(|r| {
            // The lowest aligned start in `r`, moved past `avoid` if the
            // block would overlap it.
            let mut start = align_up(r.start, align)?;
            let mut end = start.checked_add(size)?;
            if start < avoid.end && avoid.start < end {
                start = align_up(avoid.end.max(r.start), align)?;
                end = start.checked_add(size)?;
            }
            (end <= r.end).then_some(start)
        });
        let start = found.ok_or(FrameError::OutOfMemory { size, align })?;
        self.remove(start..start + size)?;
        Ok(start)
    }

    /// The first address of `range` that is not free, if any.
    pub fn first_unavailable(&self, range: Range<u64>) -> Option<u64> {
        let mut at = range.start;
        // Free ranges are sorted and disjoint: walk those that cover `at`.
        for r in &self.free {
            if at >= range.end {
                return None;
            }
            if r.end <= at {
                continue;
            }
            if r.start > at {
                return Some(at);
            }
            at = r.end;
        }
        (at < range.end).then_some(at)
    }

    /// Takes `range`, which must be wholly free, out of the free memory;
    /// on failure nothing changes and the first address that is not free is
    /// returned.
    pub fn take(&mut self, range: Range<u64>) -> Result<(), u64> {
        if let Some(at) = self.first_unavailable(range.clone()) {
            return Err(at);
        }
        self.remove(range).map_err(|_| 0)
    }

    /// Allocates one frame.
    pub fn allocate_frame(&mut self) -> Result<u64, FrameError> {
        self.allocate(FRAME_SIZE, FRAME_SIZE)
    }

    /// Returns `size` bytes at `start` to the allocator.
    pub fn free(&mut self, start: u64, size: u64) -> Result<(), FrameError> {
        let end = start.checked_add(size).ok_or(FrameError::BadRequest {
            size,
            align: FRAME_SIZE,
        })?;
        if size == 0 || !start.is_multiple_of(FRAME_SIZE) || !size.is_multiple_of(FRAME_SIZE) {
            return Err(FrameError::BadRequest {
                size,
                align: FRAME_SIZE,
            });
        }
        self.insert(start..end, false)
    }

    /// Bytes free.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.end - r.start).sum()
    }

    /// The free ranges, sorted and disjoint.
    pub fn free_ranges(&self) -> &[Range<u64>] {
        &self.free
    }

    /// Adds `range` to the free list, merging neighbours. With `overlap_ok`
    /// (building from a firmware map) overlaps merge; otherwise they are a
    /// double free.
    fn insert(&mut self, range: Range<u64>, overlap_ok: bool) -> Result<(), FrameError> {
        let at = self.free.partition_point(|r| r.end < range.start);
        let mut merged = range.clone();
        let mut last = at;
        while let Some(r) = self.free.get(last).filter(|r| r.start <= merged.end) {
            let overlaps = r.start < range.end && range.start < r.end;
            if overlaps && !overlap_ok {
                return Err(FrameError::DoubleFree { range });
            }
            merged = merged.start.min(r.start)..merged.end.max(r.end);
            last += 1;
        }
        if last == at && self.free.is_full() {
            return Err(FrameError::TooFragmented { capacity: N });
        }
        // Replace free[at..last] by the merged range, in place.
        if last == at {
            // Cannot fail: a full list was refused above.
            let _ = self.free.insert(at, merged);
        } else {
            // at < last <= len: the index and the range are in bounds.
            self.free[at] = merged;
            self.free.drain(at + 1..last);
        }
        Ok(())
    }

    /// Takes `range` out of the free list (parts of it may already be taken).
    fn remove(&mut self, range: Range<u64>) -> Result<(), FrameError> {
        let mut next: Vec<Range<u64>, N> = Vec::new();
        for r in &self.free {
            let pieces = [
                r.start..r.end.min(range.start),
                r.start.max(range.end)..r.end,
            ];
            for piece in pieces.into_iter().filter(|p| p.start < p.end) {
                next.push(piece)
                    .map_err(|_| FrameError::TooFragmented { capacity: N })?;
            }
        }
        self.free = next;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // One RAM range is the common case under test.
mod tests {
    use super::*;
    use std::vec::Vec as StdVec;

    const MIB: u64 = 1 << 20;

    fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
        a.start < b.end && b.start < a.end
    }

    #[test]
    fn reserved_ranges_are_never_handed_out() {
        let usable = [0..0x9F000, MIB..64 * MIB];
        let reserved = [
            0..MIB,
            MIB..MIB + 0x20_345,
            3 * MIB..3 * MIB + 1,
            40 * MIB..41 * MIB,
        ];
        let mut frames = PhysicalFrames::<16>::new(usable.clone(), reserved.clone()).unwrap();
        let mut taken = StdVec::new();
        while let Ok(frame) = frames.allocate_frame() {
            let range = frame..frame + FRAME_SIZE;
            assert!(usable
                .iter()
                .any(|u| u.start <= range.start && range.end <= u.end));
            assert!(
                !reserved.iter().any(|r| overlaps(r, &range)),
                "{range:x?} is reserved"
            );
            taken.push(frame);
        }
        taken.sort_unstable();
        taken.dedup();
        // 63 MiB usable above 1 MiB, minus 0x21000 (rounded), one frame at 3 MiB and 1 MiB.
        let expected = (63 * MIB - 0x21000 - FRAME_SIZE - MIB) / FRAME_SIZE;
        assert_eq!(taken.len() as u64, expected);
        assert_eq!(frames.free_bytes(), 0);
    }

    #[test]
    fn aligned_allocation_and_merge_on_free() {
        let mut frames = PhysicalFrames::<8>::new([MIB..16 * MIB], []).unwrap();
        let small = frames.allocate_frame().unwrap();
        assert_eq!(small, MIB);
        let big = frames.allocate(2 * MIB, 2 * MIB).unwrap();
        assert_eq!(big, 2 * MIB);
        assert_eq!(
            frames.free_ranges().len(),
            2,
            "gap before the aligned block stays free"
        );
        frames.free(big, 2 * MIB).unwrap();
        frames.free(small, FRAME_SIZE).unwrap();
        assert_eq!(frames.free_ranges(), &[MIB..16 * MIB]);
    }

    #[test]
    fn double_free_and_bad_requests_are_refused() {
        let mut frames = PhysicalFrames::<8>::new([MIB..4 * MIB], []).unwrap();
        let a = frames.allocate_frame().unwrap();
        frames.free(a, FRAME_SIZE).unwrap();
        assert_eq!(
            frames.free(a, FRAME_SIZE),
            Err(FrameError::DoubleFree {
                range: a..a + FRAME_SIZE
            })
        );
        assert!(matches!(
            frames.allocate(100, 4096),
            Err(FrameError::BadRequest { .. })
        ));
        assert!(matches!(
            frames.allocate(4096, 3 * 4096),
            Err(FrameError::BadRequest { .. })
        ));
        assert!(matches!(
            frames.free(u64::MAX - 4095, 8192),
            Err(FrameError::BadRequest { .. })
        ));
        assert_eq!(
            frames.allocate(8 * MIB, FRAME_SIZE),
            Err(FrameError::OutOfMemory {
                size: 8 * MIB,
                align: FRAME_SIZE
            })
        );
    }

    #[test]
    fn fragmentation_beyond_capacity_is_an_error_not_a_loss() {
        let mut frames = PhysicalFrames::<2>::new([0..16 * FRAME_SIZE], []).unwrap();
        let all: StdVec<u64> = (0..16).map(|_| frames.allocate_frame().unwrap()).collect();
        frames.free(all[0], FRAME_SIZE).unwrap();
        frames.free(all[4], FRAME_SIZE).unwrap();
        assert_eq!(
            frames.free(all[8], FRAME_SIZE),
            Err(FrameError::TooFragmented { capacity: 2 })
        );
        // Adjacent frees still merge within capacity.
        frames.free(all[1], FRAME_SIZE).unwrap();
        assert_eq!(frames.free_bytes(), 3 * FRAME_SIZE);
    }

    #[test]
    fn allocation_outside_a_range_skips_it_and_stays_aligned() {
        let mut frames = PhysicalFrames::<8>::new([MIB..16 * MIB], []).unwrap();
        let at = frames
            .allocate_outside(2 * MIB, 2 * MIB, 0..5 * MIB)
            .unwrap();
        assert_eq!(at, 6 * MIB, "first 2 MiB boundary at or after 5 MiB");
        // Below the avoided range when it fits there.
        let low = frames
            .allocate_outside(MIB, FRAME_SIZE, 3 * MIB..4 * MIB)
            .unwrap();
        assert_eq!(low, MIB);
        // A block that would straddle the end of a free range is not taken.
        assert_eq!(
            frames.allocate_outside(10 * MIB, FRAME_SIZE, 0..9 * MIB),
            Err(FrameError::OutOfMemory {
                size: 10 * MIB,
                align: FRAME_SIZE
            })
        );
        let rest = frames
            .allocate_outside(8 * MIB, FRAME_SIZE, 0..8 * MIB)
            .unwrap();
        assert_eq!(rest, 8 * MIB);
        assert!(frames
            .free_ranges()
            .iter()
            .all(|r| r.end <= 6 * MIB || r.start >= 16 * MIB));
    }

    #[test]
    fn taking_a_range_needs_all_of_it_free() {
        let mut frames =
            PhysicalFrames::<8>::new([MIB..4 * MIB, 5 * MIB..8 * MIB], [2 * MIB..2 * MIB + 4096])
                .unwrap();
        // Crosses the reserved frame: refused, naming it, nothing taken.
        assert_eq!(frames.take(MIB..3 * MIB), Err(2 * MIB));
        // Crosses the hole between the usable ranges.
        assert_eq!(frames.take(3 * MIB..6 * MIB), Err(4 * MIB));
        // Starts before all RAM.
        assert_eq!(frames.take(0..MIB + 4096), Err(0));
        let before = frames.free_bytes();
        frames.take(5 * MIB..6 * MIB).unwrap();
        assert_eq!(frames.free_bytes(), before - MIB);
        // Taken means no longer free: a second take and allocations avoid it.
        assert_eq!(frames.take(5 * MIB..5 * MIB + 4096), Err(5 * MIB));
        assert_eq!(frames.first_unavailable(6 * MIB..8 * MIB), None);
        assert_eq!(frames.first_unavailable(7 * MIB..9 * MIB), Some(8 * MIB));
    }

    #[test]
    fn free_bridging_two_ranges_keeps_the_ones_after() {
        let mut frames = PhysicalFrames::<4>::new(
            [
                MIB..2 * MIB,
                3 * MIB..4 * MIB,
                5 * MIB..6 * MIB,
                8 * MIB..9 * MIB,
            ],
            [],
        )
        .unwrap();
        frames.free(2 * MIB, MIB).unwrap();
        assert_eq!(
            frames.free_ranges(),
            &[MIB..4 * MIB, 5 * MIB..6 * MIB, 8 * MIB..9 * MIB]
        );
        frames.free(4 * MIB, MIB).unwrap();
        assert_eq!(frames.free_ranges(), &[MIB..6 * MIB, 8 * MIB..9 * MIB]);
        frames.free(7 * MIB, FRAME_SIZE).unwrap();
        assert_eq!(
            frames.free_ranges(),
            &[
                MIB..6 * MIB,
                7 * MIB..7 * MIB + FRAME_SIZE,
                8 * MIB..9 * MIB
            ]
        );
    }

    #[test]
    fn overlapping_usable_ranges_merge() {
        let frames =
            PhysicalFrames::<4>::new([0x1000..0x5000, 0x3000..0x9000, 0x9000..0xA000], []).unwrap();
        assert_eq!(frames.free_ranges(), &[0x1000..0xA000]);
    }
}
