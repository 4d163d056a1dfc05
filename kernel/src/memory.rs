//! Guest-physical memory as device models and loaders see it.
//!
//! [`GuestMemory`] is the only way the hardware-independent code touches guest
//! memory: bounds-checked reads and writes of guest-physical addresses, never
//! raw pointers. The hypervisor image implements it over host memory that
//! backs guest RAM; host tests implement it over ordinary buffers.

use core::fmt;

/// Why a guest-memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// Some byte of the range `[addr, addr + len)` is not guest RAM.
    NotRam {
        /// First guest-physical address of the access.
        addr: u64,
        /// Length of the access in bytes.
        len: u64,
    },
    /// The range wraps around the end of the 64-bit address space.
    Overflow {
        /// First guest-physical address of the access.
        addr: u64,
        /// Length of the access in bytes.
        len: u64,
    },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotRam { addr, len } => {
                write!(f, "guest range {addr:#x}+{len:#x} is not RAM")
            }
            Self::Overflow { addr, len } => {
                write!(f, "guest range {addr:#x}+{len:#x} wraps the address space")
            }
        }
    }
}

/// Guest-physical memory.
///
/// Methods take `&self`: guest memory is shared with the running guest, and
/// implementations use volatile or cell-based access. An access is either done
/// whole or not at all (no partial writes on error).
pub trait GuestMemory {
    /// Copies guest memory at `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Copies `data` into guest memory at `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError>;
}
