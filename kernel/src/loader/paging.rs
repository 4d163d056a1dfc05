//! Page tables a loader builds in guest memory for a guest entered in
//! 64-bit mode: an identity map with 2 MiB pages.

use crate::memory::{GuestMemory, MemoryError};

const PAGE: u64 = 4096;
const LARGE_PAGE: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const PRESENT_WRITABLE: u64 = 0x3;
const LARGE: u64 = 1 << 7;

/// Why the page tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// `size` is zero or more than one PML4 entry maps (512 GiB).
    BadSize(u64),
    /// `tables_at` is not page-aligned.
    Misaligned(u64),
    /// Writing the tables failed.
    Memory(MemoryError),
}

impl From<MemoryError> for PagingError {
    fn from(e: MemoryError) -> Self {
        PagingError::Memory(e)
    }
}

/// How many bytes of tables [`identity_map`] writes for `size` bytes.
pub const fn tables_size(size: u64) -> u64 {
    (2 + size.div_ceil(GIB)) * PAGE
}

/// Writes a 4-level identity map of guest-physical `[0, size)` (rounded up
/// to 2 MiB) at `tables_at`: PML4, then the PDPT, then one page directory
/// per GiB, [`tables_size`] bytes in all. Returns the CR3 value.
pub fn identity_map(mem: &impl GuestMemory, tables_at: u64, size: u64) -> Result<u64, PagingError> {
    if size == 0 || size > 512 * GIB {
        return Err(PagingError::BadSize(size));
    }
    if !tables_at.is_multiple_of(PAGE) {
        return Err(PagingError::Misaligned(tables_at));
    }
    let pdpt = tables_at + PAGE;
    let directories = size.div_ceil(GIB);
    // Whole pages are written, so nothing left in guest memory becomes an
    // entry.
    let mut page = [0u8; PAGE as usize];
    page[..8].copy_from_slice(&(pdpt | PRESENT_WRITABLE).to_le_bytes());
    mem.write(tables_at, &page)?;
    page.fill(0);
    for (gib, entry) in page
        .chunks_exact_mut(8)
        .take(directories as usize)
        .enumerate()
    {
        let directory = pdpt + PAGE * (1 + gib as u64);
        entry.copy_from_slice(&(directory | PRESENT_WRITABLE).to_le_bytes());
    }
    mem.write(pdpt, &page)?;
    for gib in 0..directories {
        let directory = pdpt + PAGE * (1 + gib);
        for (i, entry) in page.chunks_exact_mut(8).enumerate() {
            let address = gib * GIB + i as u64 * LARGE_PAGE;
            let value = if address < size {
                address | PRESENT_WRITABLE | LARGE
            } else {
                0
            };
            entry.copy_from_slice(&value.to_le_bytes());
        }
        mem.write(directory, &page)?;
    }
    Ok(tables_at)
}

/// Writes a 32-bit page directory at `at` (one page) that identity-maps
/// all 4 GiB with 4 MiB pages (needs CR4.PSE). A hypervisor runs a guest
/// that has paging off on it when the processor cannot run such a guest
/// directly (no unrestricted guest).
pub fn identity_map_32(mem: &impl GuestMemory, at: u64) -> Result<(), PagingError> {
    if !at.is_multiple_of(PAGE) {
        return Err(PagingError::Misaligned(at));
    }
    let mut directory = [0u8; PAGE as usize];
    for (i, entry) in directory.chunks_exact_mut(4).enumerate() {
        let address = (i as u32) << 22;
        entry.copy_from_slice(&(address | 0x83 | 0x4).to_le_bytes());
    }
    mem.write(at, &directory)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use std::vec;

    struct Buffer(std::vec::Vec<Cell<u8>>);

    impl GuestMemory for Buffer {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
            let start = addr as usize;
            let cells = self
                .0
                .get(start..start + buf.len())
                .ok_or(MemoryError::NotRam {
                    addr,
                    len: buf.len() as u64,
                })?;
            buf.iter_mut().zip(cells).for_each(|(b, c)| *b = c.get());
            Ok(())
        }
        fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
            let start = addr as usize;
            let cells = self
                .0
                .get(start..start + data.len())
                .ok_or(MemoryError::NotRam {
                    addr,
                    len: data.len() as u64,
                })?;
            cells.iter().zip(data).for_each(|(c, b)| c.set(*b));
            Ok(())
        }
    }

    fn entry(mem: &Buffer, at: u64) -> u64 {
        let mut bytes = [0; 8];
        mem.read(at, &mut bytes).unwrap();
        u64::from_le_bytes(bytes)
    }

    /// Translates like the processor: PML4 -> PDPT -> PD (2 MiB leaf).
    fn translate(mem: &Buffer, cr3: u64, va: u64) -> Option<u64> {
        let pml4e = entry(mem, cr3 + 8 * ((va >> 39) & 511));
        let pdpte = entry(mem, (pml4e & !0xFFF) + 8 * ((va >> 30) & 511));
        if pml4e & 1 == 0 || pdpte & 1 == 0 {
            return None;
        }
        let pde = entry(mem, (pdpte & !0xFFF) + 8 * ((va >> 21) & 511));
        (pde & 1 != 0 && pde & LARGE != 0).then_some((pde & !0x1F_FFFF) | (va & 0x1F_FFFF))
    }

    #[test]
    fn maps_every_address_below_size_to_itself_and_nothing_above() {
        // Old contents of the table pages must not survive as entries.
        let mem = Buffer(vec![Cell::new(0xFF); 0x10_0000]);
        let size = GIB + 6 * LARGE_PAGE;
        let cr3 = identity_map(&mem, 0x1_0000, size).unwrap();
        assert_eq!(cr3, 0x1_0000);
        for va in [0, 0x8000, 0x1F_FFFF, 0x20_0000, GIB - 1, GIB, size - 1] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mem, cr3, size), None);
        assert_eq!(translate(&mem, cr3, 2 * GIB), None);
        assert_eq!(tables_size(size), 4 * PAGE);
    }

    #[test]
    fn the_32_bit_directory_maps_4_gib_with_4_mib_pages() {
        let mem = Buffer(vec![Cell::new(0); 0x3000]);
        identity_map_32(&mem, 0x1000).unwrap();
        let pde = |i: u64| {
            let mut b = [0; 4];
            mem.read(0x1000 + 4 * i, &mut b).unwrap();
            u32::from_le_bytes(b)
        };
        // Present, writable, user, 4 MiB page; frame = index << 22.
        assert_eq!(pde(0), 0x87);
        assert_eq!(pde(1), 0x40_0087);
        assert_eq!(pde(1023), 0xFFC0_0087);
        assert_eq!(
            identity_map_32(&mem, 0x1800),
            Err(PagingError::Misaligned(0x1800))
        );
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let mem = Buffer(vec![Cell::new(0); 0x4000]);
        assert_eq!(identity_map(&mem, 0x1000, 0), Err(PagingError::BadSize(0)));
        assert_eq!(
            identity_map(&mem, 0x1001, GIB),
            Err(PagingError::Misaligned(0x1001))
        );
        assert!(matches!(
            identity_map(&mem, 0x2000, GIB),
            Err(PagingError::Memory(_))
        ));
    }
}
