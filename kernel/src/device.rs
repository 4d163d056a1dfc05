//! The contract between the core and device models.
//!
//! A device model is plain state behind one of two traits: [`PortIo`] for the
//! I/O port space and [`Mmio`] for memory-mapped registers. The exit dispatch
//! decodes an access and calls the owning device with the offset or port and
//! the access width; the device never sees VMX state and never injects an
//! event itself (it raises lines, see [`crate::irq`]).

/// Width of a single guest access to a device register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessWidth {
    /// One byte.
    Byte = 1,
    /// Two bytes.
    Word = 2,
    /// Four bytes.
    Dword = 4,
    /// Eight bytes.
    Qword = 8,
}

impl AccessWidth {
    /// The width in bytes.
    pub const fn bytes(self) -> usize {
        self as usize
    }

    /// The width for an access of `bytes` bytes, if it is 1, 2, 4 or 8.
    pub const fn from_bytes(bytes: usize) -> Option<Self> {
        match bytes {
            1 => Some(Self::Byte),
            2 => Some(Self::Word),
            4 => Some(Self::Dword),
            8 => Some(Self::Qword),
            _ => None,
        }
    }

    /// A mask with the low `bytes() * 8` bits set.
    pub const fn mask(self) -> u64 {
        // One shift, no branch: this is inlined wherever a width is applied.
        u64::MAX >> (64 - self.bytes() * 8)
    }
}

/// A device reached through the I/O port space.
///
/// `port` is the absolute port number of the access; a device registered for
/// a range of ports receives every port of the range. Reads return the value
/// in the low `width` bytes; bits above are ignored by the caller. A device
/// answers every access: ports it does not implement read as all ones, as an
/// ISA bus does, and writes to them are dropped.
pub trait PortIo {
    /// Reads `width` bytes at `port`.
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32;
    /// Writes the low `width` bytes of `value` to `port`.
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32);
}

/// A device reached through guest-physical memory-mapped registers.
///
/// `offset` is relative to the start of the region the device owns.
pub trait Mmio {
    /// Reads `width` bytes at `offset`.
    fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64;
    /// Writes the low `width` bytes of `value` at `offset`.
    fn mmio_write(&mut self, offset: u64, width: AccessWidth, value: u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_masks_and_round_trip() {
        for bytes in [1, 2, 4, 8] {
            let w = AccessWidth::from_bytes(bytes).unwrap();
            assert_eq!(w.bytes(), bytes);
            assert_eq!(w.mask().count_ones() as usize, bytes * 8);
        }
        assert_eq!(AccessWidth::from_bytes(3), None);
        assert_eq!(AccessWidth::from_bytes(0), None);
    }
}
