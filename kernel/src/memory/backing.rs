//! What backs a RAM region of the guest: host memory in the image
//! ([`ponte_arch::ept::HostRam`]), ordinary cells in tests.

use core::cell::Cell;

use ponte_arch::ept::HostRam;

/// An access beyond the end of a RAM backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackingOutOfBounds {
    /// Offset of the access.
    pub offset: u64,
    /// Length of the access.
    pub len: u64,
}

/// Host memory that backs one RAM region, addressed from 0.
pub trait RamBacking {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Copies `buf.len()` bytes at `offset` into `buf`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingOutOfBounds>;
    /// Copies `data` to `offset`.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackingOutOfBounds>;
    /// The host-physical address of offset 0, when the backing is host
    /// memory the EPT can map (contiguous, identity-mapped).
    fn host_physical(&self) -> Option<u64> {
        None
    }
}

impl RamBacking for HostRam {
    fn size(&self) -> u64 {
        HostRam::size(self)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingOutOfBounds> {
        HostRam::read(self, offset, buf).map_err(|e| BackingOutOfBounds {
            offset: e.offset,
            len: e.len,
        })
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackingOutOfBounds> {
        HostRam::write(self, offset, data).map_err(|e| BackingOutOfBounds {
            offset: e.offset,
            len: e.len,
        })
    }
    fn host_physical(&self) -> Option<u64> {
        Some(HostRam::host_physical(self))
    }
}

fn cell_range(
    cells: &[Cell<u8>],
    offset: u64,
    len: usize,
) -> Result<&[Cell<u8>], BackingOutOfBounds> {
    let error = BackingOutOfBounds {
        offset,
        len: len as u64,
    };
    let start = usize::try_from(offset).map_err(|_| error)?;
    let end = start.checked_add(len).ok_or(error)?;
    cells.get(start..end).ok_or(error)
}

impl RamBacking for &[Cell<u8>] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingOutOfBounds> {
        let cells = cell_range(self, offset, buf.len())?;
        for (b, c) in buf.iter_mut().zip(cells) {
            *b = c.get();
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackingOutOfBounds> {
        let cells = cell_range(self, offset, data.len())?;
        for (c, &b) in cells.iter().zip(data) {
            c.set(b);
        }
        Ok(())
    }
}
