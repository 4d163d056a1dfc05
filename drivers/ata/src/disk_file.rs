//! A growable file in a fixed region of a block device, so that an image
//! format that grows its file (a dynamic or differencing VHD) can live on
//! a disk, whose length never changes.
//!
//! The region's first sector is a header: the magic [`MAGIC`] (16 bytes),
//! the file's length (u64, little-endian, at 16), the capacity it was
//! formatted with (u64 at 24) and a checksum of those 32 bytes (u32 at 32,
//! the wrapping sum of the bytes plus 1, so an all-zero sector never
//! checks). The file's bytes follow, up to the capacity.
//!
//! Bytes between the old end and a write past it are zeroed, as
//! [`BlockDevice`] requires. A new length is recorded on [`BlockDevice::flush`]
//! after the data is flushed, so a cut leaves either the old length or the
//! new one with its data in place.

use ponte_vhd::{BlockDevice, IoError};

/// The header's magic.
pub const MAGIC: [u8; 16] = *b"ponte-disk-file\0";
/// The header's size: the file's bytes start this far into the region.
pub const HEADER_SIZE: u64 = 512;
/// Bytes zeroed per write when a gap is filled.
const ZERO_CHUNK: usize = 4096;

/// Why a region could not be opened as a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileError {
    /// The device failed.
    Io(IoError),
    /// The region's end is beyond the largest device offset.
    RegionOverflows {
        /// The region's start.
        start: u64,
        /// The region's length.
        len: u64,
    },
    /// The region cannot hold the header.
    RegionTooSmall {
        /// The region's length.
        len: u64,
    },
    /// The region does not start with the magic.
    NotAFile,
    /// The header's checksum does not match its contents.
    BadChecksum {
        /// Checksum stored.
        stored: u32,
        /// Checksum of the stored fields.
        computed: u32,
    },
    /// The header was formatted for another region size.
    CapacityMismatch {
        /// Capacity in the header.
        recorded: u64,
        /// Capacity of the region given.
        region: u64,
    },
    /// The recorded length exceeds the capacity.
    LengthBeyondCapacity {
        /// Recorded length.
        len: u64,
        /// Capacity.
        capacity: u64,
    },
}

impl From<IoError> for FileError {
    fn from(e: IoError) -> Self {
        FileError::Io(e)
    }
}

/// A file stored in `[start, start + region_len)` of a device.
#[derive(Debug)]
pub struct DiskFile<D> {
    dev: D,
    start: u64,
    capacity: u64,
    len: u64,
    length_dirty: bool,
}

fn checksum(fields: &[u8]) -> u32 {
    fields
        .iter()
        .fold(1u32, |s, &b| s.wrapping_add(u32::from(b)))
}

fn header(len: u64, capacity: u64) -> [u8; HEADER_SIZE as usize] {
    let mut h = [0u8; HEADER_SIZE as usize];
    h[..16].copy_from_slice(&MAGIC);
    h[16..24].copy_from_slice(&len.to_le_bytes());
    h[24..32].copy_from_slice(&capacity.to_le_bytes());
    let sum = checksum(&h[..32]);
    h[32..36].copy_from_slice(&sum.to_le_bytes());
    h
}

impl<D: BlockDevice> DiskFile<D> {
    /// Capacity of a region of `region_len` bytes at `start` (so that every
    /// device offset computed later fits a `u64`).
    fn capacity_of(start: u64, region_len: u64) -> Result<u64, FileError> {
        if start.checked_add(region_len).is_none() {
            return Err(FileError::RegionOverflows {
                start,
                len: region_len,
            });
        }
        region_len
            .checked_sub(HEADER_SIZE)
            .ok_or(FileError::RegionTooSmall { len: region_len })
    }

    /// Makes the region an empty file (writing and flushing its header).
    pub fn format(mut dev: D, start: u64, region_len: u64) -> Result<Self, FileError> {
        let capacity = Self::capacity_of(start, region_len)?;
        dev.write_at(start, &header(0, capacity))?;
        dev.flush()?;
        Ok(DiskFile {
            dev,
            start,
            capacity,
            len: 0,
            length_dirty: false,
        })
    }

    /// Opens the file of a region made by [`DiskFile::format`].
    pub fn open(mut dev: D, start: u64, region_len: u64) -> Result<Self, FileError> {
        let capacity = Self::capacity_of(start, region_len)?;
        let mut h = [0u8; HEADER_SIZE as usize];
        dev.read_at(start, &mut h)?;
        if h[..16] != MAGIC {
            return Err(FileError::NotAFile);
        }
        let stored = u32::from_le_bytes([h[32], h[33], h[34], h[35]]);
        let computed = checksum(&h[..32]);
        if stored != computed {
            return Err(FileError::BadChecksum { stored, computed });
        }
        let field = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let (len, recorded) = (field(16), field(24));
        if recorded != capacity {
            return Err(FileError::CapacityMismatch {
                recorded,
                region: capacity,
            });
        }
        if len > capacity {
            return Err(FileError::LengthBeyondCapacity { len, capacity });
        }
        Ok(DiskFile {
            dev,
            start,
            capacity,
            len,
            length_dirty: false,
        })
    }

    /// The most bytes the file can hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Gives the device back (without flushing).
    pub fn into_inner(self) -> D {
        self.dev
    }

    /// Device offset of file offset `offset` (inside the capacity).
    fn at(&self, offset: u64) -> u64 {
        self.start + HEADER_SIZE + offset
    }

    /// Zeroes the file's bytes from its end up to `to`, if `to` is beyond
    /// it (a write or a new length past the end).
    fn zero_up_to(&mut self, to: u64) -> Result<(), IoError> {
        let mut at = self.len;
        if at >= to {
            return Ok(());
        }
        let zeros = [0u8; ZERO_CHUNK];
        while at < to {
            let n = (to - at).min(ZERO_CHUNK as u64) as usize;
            self.dev.write_at(self.at(at), &zeros[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Records the file's length, written to the header at the next flush.
    fn record_len(&mut self, len: u64) {
        if len != self.len {
            self.len = len;
            self.length_dirty = true;
        }
    }

    /// Checks that `[offset, offset + len)` fits the capacity.
    fn fits(&self, offset: u64, len: usize) -> Result<u64, IoError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.capacity => Ok(end),
            end => Err(IoError::CapacityExceeded {
                requested: end.unwrap_or(u64::MAX),
                capacity: self.capacity,
            }),
        }
    }
}

impl<D: BlockDevice> BlockDevice for DiskFile<D> {
    fn len(&mut self) -> Result<u64, IoError> {
        Ok(self.len)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.len => self.dev.read_at(self.at(offset), buf),
            _ => Err(IoError::OutOfBounds {
                offset,
                len: buf.len() as u64,
                device_len: self.len,
            }),
        }
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let end = self.fits(offset, buf.len())?;
        self.zero_up_to(offset)?;
        self.dev.write_at(self.at(offset), buf)?;
        self.record_len(end.max(self.len));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.dev.flush()?;
        if self.length_dirty {
            self.dev
                .write_at(self.start, &header(self.len, self.capacity))?;
            self.dev.flush()?;
            self.length_dirty = false;
        }
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        self.fits(len, 0)?;
        self.zero_up_to(len)?;
        self.record_len(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ponte_vhd::SliceDevice;
    use std::vec;

    #[test]
    fn a_file_grows_reads_zeros_in_gaps_and_keeps_its_length_after_flush() {
        let mut mem = vec![0xaau8; 8192];
        let dev = SliceDevice::new(&mut mem);
        let mut f = DiskFile::format(dev, 1024, 4096).unwrap();
        assert_eq!(f.capacity(), 3584);
        assert_eq!(f.len(), Ok(0));
        f.write_at(100, b"abc").unwrap();
        assert_eq!(f.len(), Ok(103));
        let mut gap = [1u8; 100];
        f.read_at(0, &mut gap).unwrap();
        assert_eq!(gap, [0u8; 100], "stale bytes before a write are zeroed");
        // Not flushed: a reopen sees the old length.
        let dev = f.into_inner();
        let mut f = DiskFile::open(dev, 1024, 4096).unwrap();
        assert_eq!(f.len(), Ok(0));
        f.write_at(100, b"abc").unwrap();
        f.flush().unwrap();
        let dev = f.into_inner();
        let mut f = DiskFile::open(dev, 1024, 4096).unwrap();
        assert_eq!(f.len(), Ok(103));
        let mut back = [0u8; 3];
        f.read_at(100, &mut back).unwrap();
        assert_eq!(&back, b"abc");
        // The header sits at the region's start, the data one sector later.
        assert_eq!(&mem[1024..1040], &MAGIC);
        assert_eq!(&mem[1024 + 512 + 100..1024 + 512 + 103], b"abc");
        assert_eq!(mem[1023], 0xaa, "nothing before the region is touched");
    }

    #[test]
    fn reads_past_the_length_and_writes_past_the_capacity_fail() {
        let mut mem = vec![0u8; 2048];
        let mut f = DiskFile::format(SliceDevice::new(&mut mem), 0, 2048).unwrap();
        f.write_at(0, &[5; 10]).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            f.read_at(8, &mut buf),
            Err(IoError::OutOfBounds {
                offset: 8,
                len: 4,
                device_len: 10
            })
        );
        f.write_at(1532, &buf).unwrap();
        assert_eq!(
            f.write_at(1533, &buf),
            Err(IoError::CapacityExceeded {
                requested: 1537,
                capacity: 1536
            })
        );
        assert_eq!(
            f.set_len(1537),
            Err(IoError::CapacityExceeded {
                requested: 1537,
                capacity: 1536
            })
        );
        // Truncating and growing again reads zeros where bytes were.
        f.set_len(2).unwrap();
        assert_eq!(f.len(), Ok(2));
        f.set_len(10).unwrap();
        let mut back = [9u8; 10];
        f.read_at(0, &mut back).unwrap();
        assert_eq!(back, [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn headers_are_checked_on_open() {
        let mut mem = vec![0u8; 2048];
        assert_eq!(
            DiskFile::open(SliceDevice::new(&mut mem), 0, 2048).err(),
            Some(FileError::NotAFile)
        );
        DiskFile::format(SliceDevice::new(&mut mem), 0, 2048).unwrap();
        assert_eq!(
            DiskFile::open(SliceDevice::new(&mut mem), 0, 1024).err(),
            Some(FileError::CapacityMismatch {
                recorded: 1536,
                region: 512
            })
        );
        assert_eq!(
            DiskFile::open(SliceDevice::new(&mut mem), 0, 100).err(),
            Some(FileError::RegionTooSmall { len: 100 })
        );
        assert_eq!(
            DiskFile::open(SliceDevice::new(&mut mem), u64::MAX - 100, 2048).err(),
            Some(FileError::RegionOverflows {
                start: u64::MAX - 100,
                len: 2048
            })
        );
        let mut bad = mem.clone();
        bad[16] = 1;
        assert!(matches!(
            DiskFile::open(SliceDevice::new(&mut bad), 0, 2048).err(),
            Some(FileError::BadChecksum { .. })
        ));
        // A consistent header whose length exceeds the capacity.
        let h = header(4000, 1536);
        mem[..512].copy_from_slice(&h);
        assert_eq!(
            DiskFile::open(SliceDevice::new(&mut mem), 0, 2048).err(),
            Some(FileError::LengthBeyondCapacity {
                len: 4000,
                capacity: 1536
            })
        );
    }
}
