//! The disk as a byte-addressed [`BlockDevice`]: whole sectors go straight
//! to the device, partial sectors at either end are read, patched and
//! written back. The length is the capacity IDENTIFY reported and never
//! changes: writes past it and `set_len` to another length fail with
//! [`IoError::CapacityExceeded`].

use ponte_vhd::{BlockDevice, IoError};

use crate::{AtaDisk, Failed, PortAccess, Step, Transfer, SECTOR_SIZE};

const SECTOR: u64 = SECTOR_SIZE as u64;

impl<P: PortAccess> AtaDisk<P> {
    fn byte_len(&self) -> u64 {
        // At most 2^48 sectors: no overflow.
        self.sectors() * SECTOR
    }

    /// Records a failure as the last error and reports its code. Out of
    /// line: every device call ends here.
    #[inline(never)]
    fn io(&mut self, result: Step) -> Result<(), IoError> {
        result.map_err(|Failed| {
            let e = self.take_fault();
            self.last_error = Some(e);
            IoError::Os { code: e.code() }
        })
    }

    /// Moves the bytes of `data` at `offset`, which lies inside the disk:
    /// whole sectors straight between the buffer and the disk, a partial
    /// sector through a sector buffer (read, then patched and written back
    /// for a write).
    fn bytes(&mut self, offset: u64, mut data: Transfer<'_>) -> Step {
        let mut at = offset;
        let mut sector = [0u8; SECTOR_SIZE];
        loop {
            let rest = data.len();
            if rest == 0 {
                return Ok(());
            }
            let lba = at / SECTOR;
            let within = (at % SECTOR) as usize;
            let n = if within == 0 && rest >= SECTOR_SIZE {
                let whole = rest - rest % SECTOR_SIZE;
                self.transfer(lba, data.take_front(whole))?;
                whole
            } else {
                let n = (SECTOR_SIZE - within).min(rest);
                self.transfer(lba, Transfer::Read(&mut sector))?;
                let patch = &mut sector[within..within + n];
                match data.take_front(n) {
                    Transfer::Read(buf) => buf.copy_from_slice(patch),
                    Transfer::Write(part) => {
                        patch.copy_from_slice(part);
                        self.transfer(lba, Transfer::Write(&sector))?;
                    }
                }
                n
            };
            at += n as u64;
        }
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
        let result = self.bytes(offset, Transfer::Read(buf));
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
        let result = self.bytes(offset, Transfer::Write(buf));
        self.io(result)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        let result = self.flush_steps();
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
