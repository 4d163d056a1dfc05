//! The disk as a byte-addressed [`BlockDevice`]: whole sectors go straight
//! to the device, partial sectors at either end are read, patched and
//! written back. The length is the capacity IDENTIFY reported and never
//! changes: writes past it and `set_len` to another length fail with
//! [`IoError::CapacityExceeded`].

use ponte_vhd::{BlockDevice, IoError};

use crate::{AtaDisk, AtaError, PortAccess, SECTOR_SIZE};

const SECTOR: u64 = SECTOR_SIZE as u64;

impl<P: PortAccess> AtaDisk<P> {
    fn byte_len(&self) -> u64 {
        // At most 2^48 sectors: no overflow.
        self.sectors() * SECTOR
    }

    fn io(&mut self, result: Result<(), AtaError>) -> Result<(), IoError> {
        result.map_err(|e| {
            self.last_error = Some(e);
            IoError::Os { code: e.code() }
        })
    }

    /// Reads `buf.len()` bytes at `offset`, which lies inside the disk.
    fn read_bytes(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), AtaError> {
        let mut at = offset;
        let mut rest = buf;
        let mut sector = [0u8; SECTOR_SIZE];
        while !rest.is_empty() {
            let lba = at / SECTOR;
            let within = (at % SECTOR) as usize;
            if within == 0 && rest.len() >= SECTOR_SIZE {
                let whole = rest.len() - rest.len() % SECTOR_SIZE;
                let (head, tail) = rest.split_at_mut(whole);
                self.read_sectors(lba, head)?;
                at += whole as u64;
                rest = tail;
            } else {
                let n = (SECTOR_SIZE - within).min(rest.len());
                self.read_sectors(lba, &mut sector)?;
                let (head, tail) = rest.split_at_mut(n);
                head.copy_from_slice(&sector[within..within + n]);
                at += n as u64;
                rest = tail;
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset`, which lies inside the disk.
    fn write_bytes(&mut self, offset: u64, data: &[u8]) -> Result<(), AtaError> {
        let mut at = offset;
        let mut rest = data;
        let mut sector = [0u8; SECTOR_SIZE];
        while !rest.is_empty() {
            let lba = at / SECTOR;
            let within = (at % SECTOR) as usize;
            if within == 0 && rest.len() >= SECTOR_SIZE {
                let whole = rest.len() - rest.len() % SECTOR_SIZE;
                self.write_sectors(lba, &rest[..whole])?;
                at += whole as u64;
                rest = &rest[whole..];
            } else {
                let n = (SECTOR_SIZE - within).min(rest.len());
                self.read_sectors(lba, &mut sector)?;
                sector[within..within + n].copy_from_slice(&rest[..n]);
                self.write_sectors(lba, &sector)?;
                at += n as u64;
                rest = &rest[n..];
            }
        }
        Ok(())
    }
}

impl<P: PortAccess> BlockDevice for AtaDisk<P> {
    fn len(&mut self) -> Result<u64, IoError> {
        Ok(self.byte_len())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let device_len = self.byte_len();
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= device_len => {}
            _ => {
                return Err(IoError::OutOfBounds {
                    offset,
                    len: buf.len() as u64,
                    device_len,
                })
            }
        }
        let result = self.read_bytes(offset, buf);
        self.io(result)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let capacity = self.byte_len();
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= capacity => {}
            end => {
                return Err(IoError::CapacityExceeded {
                    requested: end.unwrap_or(u64::MAX),
                    capacity,
                })
            }
        }
        let result = self.write_bytes(offset, buf);
        self.io(result)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        let result = self.flush_cache();
        self.io(result)
    }

    fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        let capacity = self.byte_len();
        if len == capacity {
            Ok(())
        } else {
            Err(IoError::CapacityExceeded {
                requested: len,
                capacity,
            })
        }
    }
}
