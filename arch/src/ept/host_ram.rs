//! Host memory that backs guest RAM, reached through raw pointers.
//!
//! The hypervisor image identity-maps the host memory it gives a guest as
//! RAM; [`HostRam`] is one such block. Copies use volatile accesses because
//! the guest may change the memory at any time, and every access is
//! bounds-checked against the block before any byte moves.

use core::ptr;

/// An access beyond the end of a [`HostRam`] block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRamOutOfBounds {
    /// Offset of the access in the block.
    pub offset: u64,
    /// Length of the access.
    pub len: u64,
    /// Size of the block.
    pub size: u64,
}

/// A block of identity-mapped host memory.
#[derive(Debug)]
pub struct HostRam {
    base: usize,
    size: usize,
}

impl HostRam {
    /// The block at `base` of `size` bytes.
    ///
    /// # Safety
    /// `[base, base + size)` must be mapped, writable memory that nothing
    /// else in the hypervisor uses as a Rust object for as long as this
    /// value lives (the guest may use it), and must not wrap the address
    /// space. In an identity-mapped image, `base` is also its host-physical
    /// address.
    pub unsafe fn new(base: *mut u8, size: usize) -> Self {
        Self {
            base: base as usize,
            size,
        }
    }

    /// Size in bytes.
    pub const fn size(&self) -> u64 {
        self.size as u64
    }

    /// The block's host-physical address (the image is identity-mapped).
    pub const fn host_physical(&self) -> u64 {
        self.base as u64
    }

    fn check(&self, offset: u64, len: usize) -> Result<usize, HostRamOutOfBounds> {
        let error = HostRamOutOfBounds {
            offset,
            len: len as u64,
            size: self.size as u64,
        };
        let start = usize::try_from(offset).map_err(|_| error)?;
        match start.checked_add(len) {
            Some(end) if end <= self.size => Ok(start),
            _ => Err(error),
        }
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), HostRamOutOfBounds> {
        let start = self.check(offset, buf.len())?;
        let mut src = self.base + start;
        let mut chunks = buf.chunks_exact_mut(8);
        if src & 7 == 0 {
            for chunk in &mut chunks {
                // SAFETY: `check` keeps [src, src + 8) inside the block, which
                // `new`'s contract makes valid memory; `src` is 8-aligned.
                let word = unsafe { ptr::read_volatile(src as *const u64) };
                chunk.copy_from_slice(&word.to_ne_bytes());
                src += 8;
            }
        }
        let rest = if src & 7 == 0 {
            chunks.into_remainder()
        } else {
            &mut buf[src - self.base - start..]
        };
        for byte in rest {
            // SAFETY: `check` keeps every byte of the access in the block.
            *byte = unsafe { ptr::read_volatile(src as *const u8) };
            src += 1;
        }
        Ok(())
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), HostRamOutOfBounds> {
        let start = self.check(offset, data.len())?;
        let mut dst = self.base + start;
        let mut chunks = data.chunks_exact(8);
        if dst & 7 == 0 {
            for chunk in &mut chunks {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                // SAFETY: `check` keeps [dst, dst + 8) inside the block, which
                // `new`'s contract makes valid writable memory; 8-aligned.
                unsafe { ptr::write_volatile(dst as *mut u64, u64::from_ne_bytes(word)) };
                dst += 8;
            }
        }
        let rest = if dst & 7 == 0 {
            chunks.remainder()
        } else {
            &data[dst - self.base - start..]
        };
        for &byte in rest {
            // SAFETY: `check` keeps every byte of the access in the block.
            unsafe { ptr::write_volatile(dst as *mut u8, byte) };
            dst += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn copies_aligned_and_unaligned_and_checks_bounds() {
        let mut backing = vec![0u64; 8];
        // SAFETY: `backing` outlives `ram` and is used only through it below.
        let ram = unsafe { HostRam::new(backing.as_mut_ptr().cast(), 64) };
        let data: [u8; 21] = core::array::from_fn(|i| i as u8 + 1);
        ram.write(3, &data).unwrap();
        ram.write(40, &data[..16]).unwrap();
        let mut back = [0u8; 21];
        ram.read(3, &mut back).unwrap();
        assert_eq!(back, data);
        let mut back = [0u8; 16];
        ram.read(40, &mut back).unwrap();
        assert_eq!(&back, &data[..16]);
        let mut one = [0u8; 1];
        ram.read(2, &mut one).unwrap();
        assert_eq!(one, [0]);
        assert_eq!(
            ram.write(60, &[0; 5]),
            Err(HostRamOutOfBounds {
                offset: 60,
                len: 5,
                size: 64
            })
        );
        assert_eq!(
            ram.read(u64::MAX, &mut one),
            Err(HostRamOutOfBounds {
                offset: u64::MAX,
                len: 1,
                size: 64
            })
        );
        // Nothing was written by the refused access.
        ram.read(63, &mut one).unwrap();
        assert_eq!(one, [0]);
        let _ = ram;
        assert_eq!(backing[0].to_ne_bytes()[3], 1);
    }
}
