//! Error and problem types: every failure names the structure, field and
//! values that were wrong.

use crate::format::Uuid;

/// Which on-disk structure a problem was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// The footer at the end of the file.
    Footer,
    /// The copy of the footer at offset 0.
    FooterCopy,
    /// The dynamic disk header.
    DynamicHeader,
}

/// A region of the file holding metadata, named in overlap problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The footer copy at offset 0.
    FooterCopy,
    /// The dynamic disk header.
    DynamicHeader,
    /// The block allocation table.
    Bat,
    /// The data of the parent locator in the given slot.
    Locator(u8),
    /// The footer at the end of the file.
    Footer,
}

/// A defect of an image, with the offending values. [`crate::check`] reports
/// every problem found; opening fails with the first fatal one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The file is shorter than the smallest image (one footer).
    FileTooSmall {
        /// File length in bytes.
        len: u64,
    },
    /// A structure does not start with its cookie.
    BadCookie {
        /// The structure.
        structure: Structure,
        /// The eight bytes found instead.
        found: [u8; 8],
    },
    /// A structure's checksum does not match its contents.
    BadChecksum {
        /// The structure.
        structure: Structure,
        /// Checksum stored in the structure.
        stored: u32,
        /// Checksum computed over the structure.
        computed: u32,
    },
    /// The footer copy at offset 0 of a dynamic or differencing image is
    /// missing, damaged or differs from the footer at the end (the copy is
    /// used when valid: the specification's writers never change it).
    FooterCopyMismatch,
    /// The footer's format version is not 1.x.
    UnsupportedFooterVersion {
        /// Version found.
        version: u32,
    },
    /// The dynamic header's version is not 1.x.
    UnsupportedHeaderVersion {
        /// Version found.
        version: u32,
    },
    /// The disk type is not fixed (2), dynamic (3) or differencing (4).
    UnknownDiskType {
        /// Value found.
        value: u32,
    },
    /// The footer's data offset does not point at a dynamic header inside
    /// the file.
    DataOffsetOutOfFile {
        /// Data offset found.
        data_offset: u64,
        /// File length.
        file_len: u64,
    },
    /// The virtual size is zero or beyond what the disk type allows.
    SizeOutOfRange {
        /// Virtual size in bytes (after the creator rules).
        size: u64,
        /// Largest size accepted for this disk type.
        max: u64,
    },
    /// A fixed image is shorter than its virtual size plus footer.
    FixedDataTruncated {
        /// Virtual size.
        size: u64,
        /// File length.
        file_len: u64,
    },
    /// The block size is not a power of two between 512 bytes and 256 MiB.
    BlockSizeInvalid {
        /// Block size found.
        block_size: u32,
    },
    /// The BAT has fewer entries than the virtual size needs.
    TableTooSmall {
        /// Max table entries found.
        max_table_entries: u32,
        /// Entries the virtual size needs.
        needed: u64,
    },
    /// The BAT addresses far more blocks than any valid image.
    TableTooLarge {
        /// Max table entries found.
        max_table_entries: u32,
        /// Largest count accepted for the block size.
        max: u64,
    },
    /// The BAT does not lie inside the file before the footer.
    TableOutOfFile {
        /// Table offset found.
        table_offset: u64,
        /// Table length in bytes.
        table_len: u64,
        /// Offset where the footer (or the file) ends the usable area.
        limit: u64,
    },
    /// A block (bitmap and data) does not lie inside the file before the
    /// footer.
    BlockOutOfFile {
        /// Block index.
        block: u32,
        /// BAT entry (sector offset).
        sector: u32,
        /// Offset where the footer (or the file) ends the usable area.
        limit: u64,
    },
    /// Two BAT entries place blocks on overlapping bytes.
    BlocksOverlap {
        /// The block at the lower offset.
        first: u32,
        /// The block overlapping it.
        second: u32,
        /// BAT entry of `first`.
        first_sector: u32,
        /// BAT entry of `second`.
        second_sector: u32,
    },
    /// A block overlaps a metadata structure.
    BlockOverlapsMetadata {
        /// Block index.
        block: u32,
        /// BAT entry (sector offset).
        sector: u32,
        /// The structure overlapped.
        region: Region,
    },
    /// Two metadata structures overlap.
    MetadataOverlap {
        /// First structure.
        first: Region,
        /// Second structure.
        second: Region,
    },
    /// A parent locator's data lies outside the file or is longer than its
    /// reserved space.
    LocatorOutOfRange {
        /// Slot (0..8).
        slot: u8,
        /// Data offset found.
        data_offset: u64,
        /// Data length found.
        data_length: u32,
        /// Reserved space in bytes.
        space: u64,
        /// Offset where the footer (or the file) ends the usable area.
        limit: u64,
    },
    /// A path locator (`W2ku`, `W2ru`, `MacX`, `Wi2k`, `Wi2r`) is longer
    /// than ponte decodes ([`crate::MAX_LOCATOR_LEN`], 2 KiB).
    LocatorTooLong {
        /// Slot (0..8).
        slot: u8,
        /// Data length found.
        data_length: u32,
    },
    /// The parent's UUID differs from the one the child records.
    ParentUuidMismatch {
        /// UUID recorded in the child's header.
        expected: Uuid,
        /// UUID in the parent's footer.
        found: Uuid,
    },
}

/// Failure of a block device operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// A read reached beyond the end of the device.
    OutOfBounds {
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Device length.
        device_len: u64,
    },
    /// The device cannot grow to the requested length.
    CapacityExceeded {
        /// Length requested.
        requested: u64,
        /// Capacity of the device.
        capacity: u64,
    },
    /// The device refuses writes.
    ReadOnly,
    /// The operating system reported an error (raw OS error code, or -1
    /// when there is none).
    Os {
        /// Error code.
        code: i32,
    },
}

/// Errors of the VHD layer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The device failed.
    Io(IoError),
    /// The image is malformed.
    Malformed(Problem),
    /// An access reaches beyond the virtual disk.
    OutOfRange {
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Virtual size of the disk.
        size: u64,
    },
    /// The disk was opened read-only.
    ReadOnly,
    /// The caller-supplied BAT storage is too small.
    StorageTooSmall {
        /// Words (u32) needed.
        needed: usize,
        /// Words supplied.
        available: usize,
    },
    /// The chain of differencing images is deeper than the configured limit.
    ChainTooDeep {
        /// Largest number of images in a chain.
        limit: usize,
    },
    /// A parent UUID appears twice in the chain.
    ParentCycle {
        /// The repeated UUID.
        uuid: Uuid,
    },
    /// The resolver could not find the parent.
    ParentNotFound {
        /// UUID of the parent searched for.
        uuid: Uuid,
    },
    /// The operation needs a different disk type.
    WrongDiskType {
        /// Type of the disk.
        found: crate::format::DiskType,
    },
    /// The operation needs a parent but the disk has none.
    NoParent,
    /// A creation parameter is invalid.
    InvalidParameter {
        /// Name of the parameter.
        name: &'static str,
        /// Value given (sizes in bytes).
        value: u64,
    },
    /// A work buffer is smaller than the operation needs.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
}

impl From<IoError> for Error {
    fn from(e: IoError) -> Self {
        Error::Io(e)
    }
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error::Malformed(p)
    }
}

// Written out rather than derived, with the derived text: a derived impl
// prints `name` through `<str as Debug>`, whose escaping brings core's
// Unicode tables into every image, and parameter names are plain ASCII
// literals that escaping leaves as they are.
impl core::fmt::Debug for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => f.debug_tuple("Io").field(e).finish(),
            Self::Malformed(p) => f.debug_tuple("Malformed").field(p).finish(),
            Self::OutOfRange { offset, len, size } => f
                .debug_struct("OutOfRange")
                .field("offset", offset)
                .field("len", len)
                .field("size", size)
                .finish(),
            Self::ReadOnly => f.write_str("ReadOnly"),
            Self::StorageTooSmall { needed, available } => f
                .debug_struct("StorageTooSmall")
                .field("needed", needed)
                .field("available", available)
                .finish(),
            Self::ChainTooDeep { limit } => f
                .debug_struct("ChainTooDeep")
                .field("limit", limit)
                .finish(),
            Self::ParentCycle { uuid } => {
                f.debug_struct("ParentCycle").field("uuid", uuid).finish()
            }
            Self::ParentNotFound { uuid } => f
                .debug_struct("ParentNotFound")
                .field("uuid", uuid)
                .finish(),
            Self::WrongDiskType { found } => f
                .debug_struct("WrongDiskType")
                .field("found", found)
                .finish(),
            Self::NoParent => f.write_str("NoParent"),
            Self::InvalidParameter { name, value } => f
                .debug_struct("InvalidParameter")
                .field("name", &format_args!("\"{name}\""))
                .field("value", value)
                .finish(),
            Self::BufferTooSmall { needed, available } => f
                .debug_struct("BufferTooSmall")
                .field("needed", needed)
                .field("available", available)
                .finish(),
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn debug_text_is_the_derived_form() {
        let e = Error::InvalidParameter {
            name: "block_size",
            value: 3,
        };
        assert_eq!(
            format!("{e:?}"),
            r#"InvalidParameter { name: "block_size", value: 3 }"#
        );
        assert_eq!(
            format!("{e:#?}"),
            "InvalidParameter {\n    name: \"block_size\",\n    value: 3,\n}"
        );
        assert_eq!(format!("{:?}", Error::ReadOnly), "ReadOnly");
        assert_eq!(
            format!("{:?}", Error::Malformed(Problem::FileTooSmall { len: 5 })),
            "Malformed(FileTooSmall { len: 5 })"
        );
        assert_eq!(
            format!(
                "{:?}",
                Error::OutOfRange {
                    offset: 1,
                    len: 2,
                    size: 0x30
                }
            ),
            "OutOfRange { offset: 1, len: 2, size: 48 }"
        );
    }
}
