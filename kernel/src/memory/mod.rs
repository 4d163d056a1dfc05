//! Guest-physical memory as device models and loaders see it.
//!
//! [`GuestMemory`] is the only way the hardware-independent code touches guest
//! memory: bounds-checked reads and writes of guest-physical addresses, never
//! raw pointers. The hypervisor image implements it over host memory that
//! backs guest RAM; host tests implement it over ordinary buffers.
//!
//! - [`layout`]: the guest-physical address space (RAM, device MMIO, holes)
//!   and its [`GuestMemory`] implementation over [`RamBacking`]s.
//! - [`translate`]: guest-virtual to guest-physical translation by walking the
//!   guest's own page tables.

use core::fmt;

mod backing;
pub mod layout;
pub mod translate;

pub use backing::{BackingOutOfBounds, RamBacking};
pub use layout::{EptPopulateError, GuestLayout, LayoutError, Lookup, Region, RegionKind};

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

/// A value stored in guest memory in little-endian byte order.
pub trait GuestValue: Copy {
    /// The value's bytes (`[u8; size_of::<Self>()]`).
    type Bytes: AsRef<[u8]> + AsMut<[u8]> + Default;
    /// The little-endian bytes of `self`.
    fn to_guest_bytes(self) -> Self::Bytes;
    /// The value whose little-endian bytes are `bytes`.
    fn from_guest_bytes(bytes: Self::Bytes) -> Self;
}

macro_rules! guest_value {
    ($($t:ty),*) => {$(
        impl GuestValue for $t {
            type Bytes = [u8; core::mem::size_of::<$t>()];
            fn to_guest_bytes(self) -> Self::Bytes {
                self.to_le_bytes()
            }
            fn from_guest_bytes(bytes: Self::Bytes) -> Self {
                <$t>::from_le_bytes(bytes)
            }
        }
    )*};
}
guest_value!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

/// Bytes moved per step by the provided slice, copy and fill methods.
const CHUNK: usize = 256;

/// Guest-physical memory.
///
/// Methods take `&self`: guest memory is shared with the running guest, and
/// implementations use volatile or cell-based access. An access is either done
/// whole or not at all (no partial writes on error).
///
/// Only [`GuestMemory::read`] and [`GuestMemory::write`] must be
/// implemented; the other methods are built on them. Implementations that can
/// check a range without touching it should override
/// [`GuestMemory::check_range`].
pub trait GuestMemory {
    /// Copies guest memory at `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Copies `data` into guest memory at `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError>;

    /// Checks that `[addr, addr + len)` is guest RAM, without changing it.
    /// The provided version reads the range in chunks.
    fn check_range(&self, addr: u64, len: u64) -> Result<(), MemoryError> {
        if addr.checked_add(len).is_none() {
            return Err(MemoryError::Overflow { addr, len });
        }
        let mut buf = [0u8; CHUNK];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            self.read(addr + done, &mut buf[..n])
                .map_err(|_| MemoryError::NotRam { addr, len })?;
            done += n as u64;
        }
        Ok(())
    }

    /// Reads a little-endian value at `addr`.
    fn read_obj<T: GuestValue>(&self, addr: u64) -> Result<T, MemoryError> {
        let mut bytes = T::Bytes::default();
        self.read(addr, bytes.as_mut())?;
        Ok(T::from_guest_bytes(bytes))
    }

    /// Writes `value` little-endian at `addr`.
    fn write_obj<T: GuestValue>(&self, addr: u64, value: T) -> Result<(), MemoryError> {
        self.write(addr, value.to_guest_bytes().as_ref())
    }

    /// Reads a byte.
    fn read_u8(&self, addr: u64) -> Result<u8, MemoryError> {
        self.read_obj(addr)
    }
    /// Reads a little-endian `u16`.
    fn read_u16(&self, addr: u64) -> Result<u16, MemoryError> {
        self.read_obj(addr)
    }
    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        self.read_obj(addr)
    }
    /// Reads a little-endian `u64`.
    fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        self.read_obj(addr)
    }
    /// Writes a byte.
    fn write_u8(&self, addr: u64, value: u8) -> Result<(), MemoryError> {
        self.write_obj(addr, value)
    }
    /// Writes a little-endian `u16`.
    fn write_u16(&self, addr: u64, value: u16) -> Result<(), MemoryError> {
        self.write_obj(addr, value)
    }
    /// Writes a little-endian `u32`.
    fn write_u32(&self, addr: u64, value: u32) -> Result<(), MemoryError> {
        self.write_obj(addr, value)
    }
    /// Writes a little-endian `u64`.
    fn write_u64(&self, addr: u64, value: u64) -> Result<(), MemoryError> {
        self.write_obj(addr, value)
    }

    /// Reads consecutive little-endian values at `addr` into `out`; all or
    /// nothing.
    fn read_slice<T: GuestValue>(&self, addr: u64, out: &mut [T]) -> Result<(), MemoryError> {
        let size = core::mem::size_of::<T>() as u64;
        let len = (out.len() as u64).saturating_mul(size);
        self.check_range(addr, len)?;
        for (i, value) in out.iter_mut().enumerate() {
            *value = self.read_obj(addr + i as u64 * size)?;
        }
        Ok(())
    }

    /// Writes `data` as consecutive little-endian values at `addr`; all or
    /// nothing.
    fn write_slice<T: GuestValue>(&self, addr: u64, data: &[T]) -> Result<(), MemoryError> {
        let size = core::mem::size_of::<T>() as u64;
        let len = (data.len() as u64).saturating_mul(size);
        self.check_range(addr, len)?;
        for (i, &value) in data.iter().enumerate() {
            self.write_obj(addr + i as u64 * size, value)?;
        }
        Ok(())
    }

    /// Copies `len` bytes from guest `src` to guest `dst` as `memmove` does
    /// (overlap allowed); all or nothing.
    fn copy_within(&self, src: u64, dst: u64, len: u64) -> Result<(), MemoryError> {
        self.check_range(src, len)?;
        self.check_range(dst, len)?;
        let mut buf = [0u8; CHUNK];
        let backwards = dst > src && dst < src + len;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64);
            let offset = if backwards { len - done - n } else { done };
            let chunk = &mut buf[..n as usize];
            self.read(src + offset, chunk)?;
            self.write(dst + offset, chunk)?;
            done += n;
        }
        Ok(())
    }

    /// Sets `len` bytes at `addr` to `byte`; all or nothing.
    fn fill(&self, addr: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        self.check_range(addr, len)?;
        let buf = [byte; CHUNK];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64);
            self.write(addr + done, &buf[..n as usize])?;
            done += n;
        }
        Ok(())
    }
}
