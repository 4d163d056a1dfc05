//! The host's own memory types (its MTRRs) for host-physical ranges.
//!
//! With EPT the processor ignores the host's MTRRs for guest accesses and
//! uses the EPT memory type instead, so a mapping of host memory that the
//! host's MTRRs make uncacheable (for example a passed-through device) must
//! carry that type itself. The tables ask a [`HostMemoryTypes`] for each page
//! they map and combine it with the requested type
//! ([`MemoryType::combined_with_host`]); a large page is used only where the
//! host type is uniform over the whole page.

use heapless::Vec;

use super::entry::MemoryType;

/// The host's memory type of host-physical memory.
pub trait HostMemoryTypes {
    /// The type at `host_physical` and the number of bytes from
    /// `host_physical` on that share it (at least up to the next 4 KiB
    /// boundary is assumed).
    fn host_memory_type(&self, host_physical: u64) -> (MemoryType, u64);
}

/// All host memory has one type (usually write-back): no constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UniformHostMemory(pub MemoryType);

impl HostMemoryTypes for UniformHostMemory {
    fn host_memory_type(&self, _host_physical: u64) -> (MemoryType, u64) {
        (self.0, u64::MAX)
    }
}

/// A host memory map read from the MTRRs: disjoint ranges with a type, and a
/// default type for everything else (`IA32_MTRR_DEF_TYPE`).
#[derive(Clone, Debug)]
pub struct MtrrRanges<const N: usize> {
    default: MemoryType,
    /// Sorted, disjoint `(start, end, type)` ranges.
    ranges: Vec<(u64, u64, MemoryType), N>,
}

/// Why a range could not be added to [`MtrrRanges`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtrrRangeError {
    /// Start or length is not 4 KiB aligned, the length is zero, or the range wraps.
    BadRange {
        /// Start of the range.
        start: u64,
        /// Length of the range.
        len: u64,
    },
    /// The range overlaps `[start, end)`, which is already described.
    Overlap {
        /// Start of the existing range.
        start: u64,
        /// End of the existing range.
        end: u64,
    },
    /// All `N` slots are used.
    Full,
}

impl<const N: usize> MtrrRanges<N> {
    /// A map where everything has type `default`.
    pub const fn new(default: MemoryType) -> Self {
        Self {
            default,
            ranges: Vec::new(),
        }
    }

    /// Gives `[start, start + len)` the type `memory_type`.
    pub fn add(
        &mut self,
        start: u64,
        len: u64,
        memory_type: MemoryType,
    ) -> Result<(), MtrrRangeError> {
        let end = start.checked_add(len);
        let end = match end {
            Some(end) if len != 0 && start & 0xfff == 0 && len & 0xfff == 0 => end,
            _ => return Err(MtrrRangeError::BadRange { start, len }),
        };
        if let Some(&(s, e, _)) = self.ranges.iter().find(|&&(s, e, _)| s < end && start < e) {
            return Err(MtrrRangeError::Overlap { start: s, end: e });
        }
        let at = self
            .ranges
            .iter()
            .position(|&(s, _, _)| s > start)
            .unwrap_or(self.ranges.len());
        self.ranges
            .insert(at, (start, end, memory_type))
            .map_err(|_| MtrrRangeError::Full)
    }
}

impl<const N: usize> HostMemoryTypes for MtrrRanges<N> {
    fn host_memory_type(&self, host_physical: u64) -> (MemoryType, u64) {
        for &(start, end, memory_type) in &self.ranges {
            if host_physical < start {
                return (self.default, start - host_physical);
            }
            if host_physical < end {
                return (memory_type, end - host_physical);
            }
        }
        (self.default, u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_answer_type_and_run_length() {
        let mut m: MtrrRanges<2> = MtrrRanges::new(MemoryType::WriteBack);
        m.add(0xa_0000, 0x2_0000, MemoryType::Uncacheable).unwrap();
        m.add(0xe000_0000, 0x1000_0000, MemoryType::Uncacheable)
            .unwrap();
        assert_eq!(
            m.add(0xa_1000, 0x1000, MemoryType::WriteCombining),
            Err(MtrrRangeError::Overlap {
                start: 0xa_0000,
                end: 0xc_0000
            })
        );
        assert_eq!(
            m.add(0x1000, 0x800, MemoryType::WriteCombining),
            Err(MtrrRangeError::BadRange {
                start: 0x1000,
                len: 0x800
            })
        );
        assert_eq!(
            m.add(0x1000, 0x1000, MemoryType::WriteCombining),
            Err(MtrrRangeError::Full)
        );
        assert_eq!(m.host_memory_type(0), (MemoryType::WriteBack, 0xa_0000));
        assert_eq!(
            m.host_memory_type(0xb_f000),
            (MemoryType::Uncacheable, 0x1000)
        );
        assert_eq!(
            m.host_memory_type(0xc_0000),
            (MemoryType::WriteBack, 0xe000_0000 - 0xc_0000)
        );
        assert_eq!(
            m.host_memory_type(0xf000_0000),
            (MemoryType::WriteBack, u64::MAX)
        );
    }
}
