//! Byte-addressed storage under an image: the [`BlockDevice`] contract and
//! its backends (caller memory, read-only bytes, a growable `Vec`, a file).

use crate::error::IoError;

/// Byte-addressed storage holding one image file.
///
/// Contract relied upon by the VHD layer:
/// - `read_at` fills the whole buffer or fails; reading past the end fails
///   with [`IoError::OutOfBounds`].
/// - `write_at` writes the whole buffer or fails; writing past the end grows
///   the device, and bytes between the old end and the write read as zero.
/// - `set_len` truncates or grows; grown bytes read as zero.
/// - Writes completed before a successful `flush` survive a power cut;
///   writes after it may or may not.
pub trait BlockDevice {
    /// Current length in bytes.
    fn len(&mut self) -> Result<u64, IoError>;
    /// Whether the device holds no bytes.
    fn is_empty(&mut self) -> Result<bool, IoError> {
        Ok(self.len()? == 0)
    }
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf` at `offset`, growing the device if needed.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Makes all completed writes durable.
    fn flush(&mut self) -> Result<(), IoError>;
    /// Truncates or grows the device to `len` bytes.
    fn set_len(&mut self, len: u64) -> Result<(), IoError>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    fn len(&mut self) -> Result<u64, IoError> {
        (**self).len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        (**self).write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        (**self).flush()
    }
    fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        (**self).set_len(len)
    }
}

/// Checked `offset + len` as a `usize` range inside `limit`.
fn span(offset: u64, len: usize, limit: u64) -> Option<core::ops::Range<usize>> {
    let end = offset.checked_add(len as u64)?;
    if end > limit {
        return None;
    }
    Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
}

/// A device over caller-provided memory, usable without an allocator.
///
/// The image occupies the first [`SliceDevice::len`] bytes of the slice and
/// may grow up to the slice's length.
pub struct SliceDevice<'a> {
    mem: &'a mut [u8],
    len: usize,
}

impl<'a> SliceDevice<'a> {
    /// A device whose whole slice is the image.
    pub fn new(mem: &'a mut [u8]) -> Self {
        let len = mem.len();
        SliceDevice { mem, len }
    }
    /// An empty device that may grow up to the slice's length.
    pub fn empty(mem: &'a mut [u8]) -> Self {
        SliceDevice { mem, len: 0 }
    }
    /// The image bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.mem[..self.len]
    }
}

impl BlockDevice for SliceDevice<'_> {
    fn len(&mut self) -> Result<u64, IoError> {
        Ok(self.len as u64)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        read_image(self.as_bytes(), offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let cap = self.mem.len() as u64;
        let r = span(offset, buf.len(), cap).ok_or(IoError::CapacityExceeded {
            requested: offset.saturating_add(buf.len() as u64),
            capacity: cap,
        })?;
        if r.start > self.len {
            self.mem[self.len..r.start].fill(0);
        }
        self.len = self.len.max(r.end);
        self.mem[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        let cap = self.mem.len() as u64;
        let new = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.mem.len())
            .ok_or(IoError::CapacityExceeded {
                requested: len,
                capacity: cap,
            })?;
        if new > self.len {
            self.mem[self.len..new].fill(0);
        }
        self.len = new;
        Ok(())
    }
}

/// Copies bytes `offset..offset + buf.len()` of `image` into `buf`; a
/// read past its end fails with [`IoError::OutOfBounds`].
fn read_image(image: &[u8], offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
    let r = span(offset, buf.len(), image.len() as u64).ok_or(IoError::OutOfBounds {
        offset,
        len: buf.len() as u64,
        device_len: image.len() as u64,
    })?;
    buf.copy_from_slice(&image[r]);
    Ok(())
}

/// A read-only device over an image's bytes in place (read-only memory
/// such as a boot module): writes and resizes fail with
/// [`IoError::ReadOnly`].
#[derive(Clone, Copy, Debug)]
pub struct ReadOnlySliceDevice<'a>(
    /// The image bytes.
    pub &'a [u8],
);

impl BlockDevice for ReadOnlySliceDevice<'_> {
    fn len(&mut self) -> Result<u64, IoError> {
        Ok(self.0.len() as u64)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        read_image(self.0, offset, buf)
    }
    fn write_at(&mut self, _offset: u64, _buf: &[u8]) -> Result<(), IoError> {
        Err(IoError::ReadOnly)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
    fn set_len(&mut self, _len: u64) -> Result<(), IoError> {
        Err(IoError::ReadOnly)
    }
}

#[cfg(feature = "alloc")]
pub use vec_device::VecDevice;

#[cfg(feature = "alloc")]
mod vec_device {
    use super::{span, BlockDevice};
    use crate::error::IoError;
    use alloc::vec::Vec;

    /// A growable in-memory device owning its bytes.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct VecDevice {
        /// The image bytes.
        pub bytes: Vec<u8>,
        /// Largest length the device may grow to.
        pub capacity_limit: u64,
    }

    impl VecDevice {
        /// An empty device that may grow to 4 GiB.
        pub fn new() -> Self {
            Self::from_bytes(Vec::new())
        }
        /// A device holding `bytes`, that may grow to 4 GiB.
        pub fn from_bytes(bytes: Vec<u8>) -> Self {
            VecDevice {
                bytes,
                capacity_limit: 1 << 32,
            }
        }
        fn grow_to(&mut self, end: u64) -> Result<(), IoError> {
            if end > self.capacity_limit {
                return Err(IoError::CapacityExceeded {
                    requested: end,
                    capacity: self.capacity_limit,
                });
            }
            let end = usize::try_from(end).map_err(|_| IoError::CapacityExceeded {
                requested: end,
                capacity: self.capacity_limit,
            })?;
            if end > self.bytes.len() {
                self.bytes.resize(end, 0);
            }
            Ok(())
        }
    }

    impl BlockDevice for VecDevice {
        fn len(&mut self) -> Result<u64, IoError> {
            Ok(self.bytes.len() as u64)
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
            let r =
                span(offset, buf.len(), self.bytes.len() as u64).ok_or(IoError::OutOfBounds {
                    offset,
                    len: buf.len() as u64,
                    device_len: self.bytes.len() as u64,
                })?;
            buf.copy_from_slice(&self.bytes[r]);
            Ok(())
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
            let end = offset
                .checked_add(buf.len() as u64)
                .ok_or(IoError::CapacityExceeded {
                    requested: u64::MAX,
                    capacity: self.capacity_limit,
                })?;
            self.grow_to(end)?;
            let r = span(offset, buf.len(), end).ok_or(IoError::CapacityExceeded {
                requested: end,
                capacity: self.capacity_limit,
            })?;
            self.bytes[r].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), IoError> {
            Ok(())
        }
        fn set_len(&mut self, len: u64) -> Result<(), IoError> {
            if len < self.bytes.len() as u64 {
                self.bytes.truncate(len as usize);
                Ok(())
            } else {
                self.grow_to(len)
            }
        }
    }
}

#[cfg(feature = "std")]
pub use file_device::FileDevice;

#[cfg(feature = "std")]
mod file_device {
    use super::BlockDevice;
    use crate::error::IoError;
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};

    fn os(e: std::io::Error) -> IoError {
        IoError::Os {
            code: e.raw_os_error().unwrap_or(-1),
        }
    }

    /// A device over a file, using positional I/O; `flush` is `fsync`.
    #[derive(Debug)]
    pub struct FileDevice {
        file: File,
        writable: bool,
        path: Option<PathBuf>,
    }

    impl FileDevice {
        /// Opens `path` read-only or read-write.
        pub fn open(path: &Path, writable: bool) -> std::io::Result<Self> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(writable)
                .open(path)?;
            Ok(FileDevice {
                file,
                writable,
                path: Some(path.to_path_buf()),
            })
        }
        /// Creates (or truncates) `path` for a new image.
        pub fn create(path: &Path) -> std::io::Result<Self> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            Ok(FileDevice {
                file,
                writable: true,
                path: Some(path.to_path_buf()),
            })
        }
        /// Wraps an open file (its path unknown; see
        /// [`FileDevice::with_path`]).
        pub fn from_file(file: File, writable: bool) -> Self {
            FileDevice {
                file,
                writable,
                path: None,
            }
        }
        /// Records `path` as where the file was opened.
        pub fn with_path(mut self, path: &Path) -> Self {
            self.path = Some(path.to_path_buf());
            self
        }
        /// The underlying file.
        pub fn file(&self) -> &File {
            &self.file
        }
        /// The path the file was opened or created at, as given (for a
        /// parent found by [`crate::FileResolver`], the path it tried).
        pub fn path(&self) -> Option<&Path> {
            self.path.as_deref()
        }
    }

    impl BlockDevice for FileDevice {
        fn len(&mut self) -> Result<u64, IoError> {
            Ok(self.file.metadata().map_err(os)?.len())
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
            match self.file.read_exact_at(buf, offset) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    Err(IoError::OutOfBounds {
                        offset,
                        len: buf.len() as u64,
                        device_len: self.len()?,
                    })
                }
                Err(e) => Err(os(e)),
            }
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
            if !self.writable {
                return Err(IoError::ReadOnly);
            }
            self.file.write_all_at(buf, offset).map_err(os)
        }
        fn flush(&mut self) -> Result<(), IoError> {
            if !self.writable {
                return Ok(());
            }
            self.file.sync_data().map_err(os)
        }
        fn set_len(&mut self, len: u64) -> Result<(), IoError> {
            if !self.writable {
                return Err(IoError::ReadOnly);
            }
            self.file.set_len(len).map_err(os)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_device_grows_with_zeros_up_to_capacity() {
        let mut mem = [0xEEu8; 64];
        let mut d = SliceDevice::empty(&mut mem);
        assert_eq!(d.len(), Ok(0));
        // A write past the end zero-fills the gap.
        d.write_at(10, &[1, 2]).unwrap();
        assert_eq!(d.as_bytes(), &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        let mut b = [9u8; 4];
        assert_eq!(
            d.read_at(10, &mut b),
            Err(IoError::OutOfBounds {
                offset: 10,
                len: 4,
                device_len: 12
            })
        );
        d.set_len(4).unwrap();
        d.set_len(16).unwrap();
        assert_eq!(d.as_bytes(), &[0; 16]);
        assert_eq!(
            d.write_at(60, &[0; 5]),
            Err(IoError::CapacityExceeded {
                requested: 65,
                capacity: 64
            })
        );
        assert!(d.set_len(65).is_err());
        assert!(d.write_at(u64::MAX, &[0]).is_err());
        assert!(d.read_at(u64::MAX, &mut b).is_err());
    }

    #[test]
    fn read_only_slice_device_reads_in_place_and_refuses_changes() {
        let bytes = [1u8, 2, 3, 4, 5];
        let mut d = ReadOnlySliceDevice(&bytes);
        assert_eq!(d.len(), Ok(5));
        let mut b = [0u8; 2];
        d.read_at(3, &mut b).unwrap();
        assert_eq!(b, [4, 5]);
        assert_eq!(
            d.read_at(4, &mut b),
            Err(IoError::OutOfBounds {
                offset: 4,
                len: 2,
                device_len: 5
            })
        );
        assert!(d.read_at(u64::MAX, &mut b).is_err());
        assert_eq!(d.write_at(0, &[9]), Err(IoError::ReadOnly));
        assert_eq!(d.set_len(0), Err(IoError::ReadOnly));
        assert_eq!(d.flush(), Ok(()));
        assert_eq!(bytes, [1, 2, 3, 4, 5]);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn vec_device_grows_with_zeros() {
        let mut d = VecDevice::from_bytes(alloc::vec![7; 4]);
        d.write_at(6, &[1]).unwrap();
        assert_eq!(d.bytes, [7, 7, 7, 7, 0, 0, 1]);
        d.set_len(2).unwrap();
        d.set_len(3).unwrap();
        assert_eq!(d.bytes, [7, 7, 0]);
        d.capacity_limit = 8;
        assert!(d.write_at(8, &[1]).is_err());
        assert!(d.write_at(u64::MAX, &[1]).is_err());
    }
}
