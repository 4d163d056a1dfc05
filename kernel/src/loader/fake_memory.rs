//! Guest memory for the loaders' host tests: one ordinary buffer per RAM
//! range, filled with [`FILL`] so that what a loader zeroes is visible.

use core::cell::RefCell;
use std::{string::String, vec, vec::Vec};

use super::RamRange;
use crate::memory::{GuestMemory, MemoryError};

/// The fill byte of fresh fake memory.
pub const FILL: u8 = 0xcc;

/// Guest memory over ordinary buffers, one per RAM range.
pub struct FakeMemory {
    ranges: Vec<(RamRange, RefCell<Vec<u8>>)>,
}

impl FakeMemory {
    /// Memory with `ram`'s ranges, every byte [`FILL`].
    pub fn new(ram: &[RamRange]) -> Self {
        Self {
            ranges: ram
                .iter()
                .map(|r| (*r, RefCell::new(vec![FILL; r.len as usize])))
                .collect(),
        }
    }

    /// `len` bytes at `addr` (which must be RAM).
    pub fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.read(addr, &mut buf).unwrap();
        buf
    }

    /// The byte at `addr`.
    pub fn u8_at(&self, addr: u64) -> u8 {
        self.bytes(addr, 1)[0]
    }

    /// The little-endian u16 at `addr`.
    pub fn u16_at(&self, addr: u64) -> u16 {
        u16::from_le_bytes(self.bytes(addr, 2).try_into().unwrap())
    }

    /// The little-endian u32 at `addr`.
    pub fn u32_at(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.bytes(addr, 4).try_into().unwrap())
    }

    /// The little-endian u64 at `addr`.
    pub fn u64_at(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.bytes(addr, 8).try_into().unwrap())
    }

    /// The NUL-terminated UTF-8 string at `addr`.
    pub fn cstr(&self, addr: u64) -> String {
        let mut out = Vec::new();
        let mut a = addr;
        while self.u8_at(a) != 0 {
            out.push(self.u8_at(a));
            a += 1;
        }
        String::from_utf8(out).unwrap()
    }
}

impl GuestMemory for FakeMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        for (r, data) in &self.ranges {
            if r.contains(addr, len) {
                let off = (addr - r.start) as usize;
                buf.copy_from_slice(&data.borrow()[off..off + buf.len()]);
                return Ok(());
            }
        }
        Err(MemoryError::NotRam { addr, len })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let len = data.len() as u64;
        for (r, buf) in &self.ranges {
            if r.contains(addr, len) {
                let off = (addr - r.start) as usize;
                buf.borrow_mut()[off..off + data.len()].copy_from_slice(data);
                return Ok(());
            }
        }
        Err(MemoryError::NotRam { addr, len })
    }
}
