//! On-disk structures of the VHD format: the 512-byte footer, the 1024-byte
//! dynamic disk header with its parent locators, checksums, CHS geometry and
//! the rules that decide an image's virtual size.
//!
//! Everything here is pure byte layout: parsing never panics on any input and
//! serialising reproduces the layout of the Microsoft VHD specification
//! (all integers big-endian).

use crate::error::{Problem, Structure};

/// Size of a sector, the VHD format's unit of addressing.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the hard disk footer.
pub const FOOTER_SIZE: usize = 512;
/// Size of the dynamic disk header.
pub const HEADER_SIZE: usize = 1024;
/// Cookie at the start of the footer.
pub const FOOTER_COOKIE: [u8; 8] = *b"conectix";
/// Cookie at the start of the dynamic disk header.
pub const HEADER_COOKIE: [u8; 8] = *b"cxsparse";
/// Footer format version 1.0.
pub const FOOTER_VERSION: u32 = 0x0001_0000;
/// Dynamic header version 1.0.
pub const HEADER_VERSION: u32 = 0x0001_0000;
/// "Reserved" feature bit that the specification requires to be set.
pub const FEATURE_RESERVED: u32 = 0x2;
/// Data offset value of fixed disks (no dynamic header).
pub const NO_DATA_OFFSET: u64 = u64::MAX;
/// BAT entry of a block that is not allocated.
pub const BAT_UNALLOCATED: u32 = u32::MAX;
/// Default block size (2 MiB), as used by Hyper-V, Virtual PC and qemu.
pub const DEFAULT_BLOCK_SIZE: u32 = 2 * 1024 * 1024;
/// Smallest block size accepted (one sector).
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size accepted (256 MiB).
pub const MAX_BLOCK_SIZE: u32 = 256 * 1024 * 1024;
/// Largest virtual size accepted for dynamic and differencing disks (2 TiB;
/// the BAT's 32-bit sector offsets cannot address a larger file).
pub const MAX_DYNAMIC_SIZE: u64 = 1 << 41;
/// Largest virtual size accepted for fixed disks (256 TiB, a sanity bound).
pub const MAX_FIXED_SIZE: u64 = 1 << 48;
/// Number of parent locator slots in the dynamic header.
pub const LOCATOR_SLOTS: usize = 8;
/// Number of UTF-16 code units in the parent unicode name field.
pub const PARENT_NAME_UNITS: usize = 256;
/// Largest CHS geometry the footer can express (65535 x 16 x 255).
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// Creator application written by ponte when the image's size is exactly
/// what the CHS geometry describes.
pub const CREATOR_CHS_EXACT: [u8; 4] = *b"pnte";
/// Creator application written by ponte when the image's current size is
/// not CHS-representable. qemu (7.2 and later) takes the size of images with
/// this creator from the current size field rather than from the geometry;
/// VirtualBox, Hyper-V and libvhdi always do.
pub const CREATOR_CURRENT_SIZE: [u8; 4] = *b"qem2";
/// Creator version written by ponte (major 0, minor 1).
pub const CREATOR_VERSION: u32 = 0x0000_0001;
/// Creator host OS "Wi2k" (the value Windows and qemu write).
pub const HOST_OS_WINDOWS: [u8; 4] = *b"Wi2k";

/// Byte sum checksum of the specification: the one's complement of the sum
/// of all bytes, with the checksum field itself (`skip`) counted as zero.
// Out of line: opening checks up to three footers and a header.
#[inline(never)]
pub fn checksum(bytes: &[u8], skip: core::ops::Range<usize>) -> u32 {
    let mut sum: u32 = 0;
    for (i, b) in bytes.iter().enumerate() {
        if !skip.contains(&i) {
            sum = sum.wrapping_add(u32::from(*b));
        }
    }
    !sum
}

/// The `N` bytes at `at` (zeros where `b` ends first): field access that
/// cannot panic, folded to plain loads where `at` is a constant.
fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut x = [0u8; N];
    if let Some(s) = b.get(at..at + N) {
        x.copy_from_slice(s);
    }
    x
}
fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(field(b, at))
}
/// Big-endian `u32` at byte `at` of `b` (zero where `b` ends first).
pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(field(b, at))
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(field(b, at))
}

/// Fails with [`Problem::BadCookie`] unless `b` starts with `cookie`.
pub(crate) fn check_cookie(b: &[u8], cookie: [u8; 8], structure: Structure) -> Result<(), Problem> {
    let found = field(b, 0);
    if found == cookie {
        Ok(())
    } else {
        Err(Problem::BadCookie { structure, found })
    }
}

/// A 16-byte unique identifier, kept in on-disk byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero UUID.
    pub const NIL: Uuid = Uuid([0; 16]);
}

impl core::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

impl core::fmt::Display for Uuid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Kind of VHD image (footer field "disk type").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskType {
    /// Type 2: the data is the file, followed by the footer.
    Fixed,
    /// Type 3: sparse blocks located through the BAT.
    Dynamic,
    /// Type 4: sparse blocks over a parent image.
    Differencing,
}

impl DiskType {
    /// The on-disk value of this type.
    pub fn to_raw(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }
    /// Decodes the on-disk value; `None` for 0, 1, 5, 6 and anything else.
    pub fn from_raw(raw: u32) -> Option<DiskType> {
        match raw {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }
}

/// Cylinder/head/sector geometry stored in the footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Geometry {
    /// Number of cylinders.
    pub cylinders: u16,
    /// Number of heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

impl Geometry {
    /// The geometry the specification's appendix computes for a disk of
    /// `size` bytes. The algorithm rounds down: the geometry never describes
    /// more sectors than `size` holds, and sizes beyond 65535x16x255 sectors
    /// get that maximal geometry.
    pub fn for_size(size: u64) -> Geometry {
        let mut total = size / SECTOR_SIZE;
        if total > MAX_CHS_SECTORS {
            total = MAX_CHS_SECTORS;
        }
        let (spt, heads, cyl_times_heads);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cyl_times_heads = total / spt;
        } else {
            let mut s = 17u64;
            let mut cth = total / s;
            let mut h = cth.div_ceil(1024);
            if h < 4 {
                h = 4;
            }
            if cth >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                cth = total / s;
            }
            if cth >= h * 1024 {
                s = 63;
                h = 16;
                cth = total / s;
            }
            spt = s;
            heads = h;
            cyl_times_heads = cth;
        }
        let cylinders = cyl_times_heads / heads;
        Geometry {
            // Bounded: total <= 65535*16*255 keeps cylinders <= 65535.
            cylinders: u16::try_from(cylinders).unwrap_or(u16::MAX),
            heads: heads as u8,
            sectors_per_track: spt as u8,
        }
    }

    /// Number of sectors the geometry describes (C x H x S).
    pub fn sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// Number of bytes the geometry describes (C x H x S x 512).
    pub fn size(&self) -> u64 {
        self.sectors() * SECTOR_SIZE
    }

    /// Whether this is the largest geometry the footer can hold, which
    /// readers take as "the geometry does not describe the size".
    pub fn is_maximal(&self) -> bool {
        self.sectors() == MAX_CHS_SECTORS
    }
}

/// The hard disk footer (also copied to offset 0 of dynamic and
/// differencing images).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Feature flags (0x1 temporary disk, 0x2 reserved, always set).
    pub features: u32,
    /// Format version, 0x00010000.
    pub format_version: u32,
    /// Absolute offset of the dynamic header; all ones for fixed disks.
    pub data_offset: u64,
    /// Creation time, seconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: u32,
    /// Application that created the image (four bytes, e.g. `b"win "`).
    pub creator_app: [u8; 4],
    /// Version of that application.
    pub creator_version: u32,
    /// Host OS of the creator (`b"Wi2k"` or `b"Mac "`).
    pub creator_host_os: [u8; 4],
    /// Size of the disk at creation, in bytes.
    pub original_size: u64,
    /// Current size of the disk, in bytes.
    pub current_size: u64,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Raw disk type (2 fixed, 3 dynamic, 4 differencing).
    pub disk_type: u32,
    /// Checksum as stored.
    pub checksum: u32,
    /// Identity of the image; differencing children name it as parent.
    pub uuid: Uuid,
    /// Saved-state flag.
    pub saved_state: u8,
}

/// Byte range of the footer's checksum field.
const FOOTER_CHECKSUM_AT: core::ops::Range<usize> = 64..68;
/// Byte range of the dynamic header's checksum field.
const HEADER_CHECKSUM_AT: core::ops::Range<usize> = 36..40;
/// Byte offset of the footer's UUID.
const FOOTER_UUID_AT: usize = 68;

impl Footer {
    /// A footer with every field zero: what a layer holds before its
    /// image's footer is decoded.
    pub(crate) const BLANK: Footer = Footer {
        features: 0,
        format_version: 0,
        data_offset: 0,
        timestamp: 0,
        creator_app: [0; 4],
        creator_version: 0,
        creator_host_os: [0; 4],
        original_size: 0,
        current_size: 0,
        geometry: Geometry {
            cylinders: 0,
            heads: 0,
            sectors_per_track: 0,
        },
        disk_type: 0,
        checksum: 0,
        uuid: Uuid::NIL,
        saved_state: 0,
    };

    /// Decodes a footer. Fails only if the cookie is wrong; the checksum is
    /// checked separately by [`Footer::checksum_ok`].
    // Out of line: opening decodes up to three footers.
    #[inline(never)]
    pub fn parse(b: &[u8; FOOTER_SIZE]) -> Result<Footer, Problem> {
        check_cookie(b, FOOTER_COOKIE, Structure::Footer)?;
        Ok(Footer::decode(b))
    }

    /// The UUID of a footer, without decoding the other fields; `None` if
    /// the cookie is wrong.
    pub(crate) fn uuid_of(b: &[u8; FOOTER_SIZE]) -> Option<Uuid> {
        check_cookie(b, FOOTER_COOKIE, Structure::Footer).ok()?;
        Some(Uuid(field(b, FOOTER_UUID_AT)))
    }

    /// Decodes the fields of a footer whose cookie was checked.
    // Out of line: inlined into opening, the fields are decoded in place
    // of the bytes and copied field by field.
    #[inline(never)]
    pub(crate) fn decode(b: &[u8; FOOTER_SIZE]) -> Footer {
        Footer {
            features: be_u32(b, 8),
            format_version: be_u32(b, 12),
            data_offset: be_u64(b, 16),
            timestamp: be_u32(b, 24),
            creator_app: field(b, 28),
            creator_version: be_u32(b, 32),
            creator_host_os: field(b, 36),
            original_size: be_u64(b, 40),
            current_size: be_u64(b, 48),
            geometry: Geometry {
                cylinders: be_u16(b, 56),
                heads: b[58],
                sectors_per_track: b[59],
            },
            disk_type: be_u32(b, 60),
            checksum: be_u32(b, 64),
            uuid: Uuid(field(b, FOOTER_UUID_AT)),
            saved_state: b[84],
        }
    }

    /// Serialises the footer with a freshly computed checksum; reserved
    /// bytes are zero.
    pub fn to_bytes(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(&FOOTER_COOKIE);
        b[8..12].copy_from_slice(&self.features.to_be_bytes());
        b[12..16].copy_from_slice(&self.format_version.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_app);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_host_os);
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..58].copy_from_slice(&self.geometry.cylinders.to_be_bytes());
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors_per_track;
        b[60..64].copy_from_slice(&self.disk_type.to_be_bytes());
        b[68..84].copy_from_slice(&self.uuid.0);
        b[84] = self.saved_state;
        let sum = checksum(&b, FOOTER_CHECKSUM_AT);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Checksum computed over the raw bytes of a footer.
    pub fn compute_checksum(raw: &[u8; FOOTER_SIZE]) -> u32 {
        checksum(raw, FOOTER_CHECKSUM_AT)
    }

    /// Whether the stored checksum matches the raw bytes it was parsed from.
    pub fn checksum_ok(&self, raw: &[u8; FOOTER_SIZE]) -> bool {
        Self::compute_checksum(raw) == self.checksum
    }

    /// The decoded disk type, if known.
    pub fn kind(&self) -> Option<DiskType> {
        DiskType::from_raw(self.disk_type)
    }

    /// Virtual size as qemu 10 reads it: the CHS size for images created by
    /// Virtual PC (`"vpc "`) or old qemu (`"qemu"`) unless the geometry is
    /// maximal, the current size (rounded down to whole sectors) otherwise.
    /// VirtualBox, Hyper-V and libvhdi use the current size for every
    /// creator; the two agree for every image whose size is a whole number
    /// of CHS-representable sectors.
    pub fn virtual_size(&self) -> u64 {
        let chs_creator = self.creator_app == *b"vpc " || self.creator_app == *b"qemu";
        if chs_creator && !self.geometry.is_maximal() {
            self.geometry.size()
        } else {
            self.current_size / SECTOR_SIZE * SECTOR_SIZE
        }
    }
}

/// Platform code of a parent locator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocatorCode {
    /// Unused slot (code 0).
    None,
    /// `Wi2r`: deprecated relative Windows path (ANSI).
    Wi2r,
    /// `Wi2k`: deprecated absolute Windows path (ANSI).
    Wi2k,
    /// `W2ru`: relative Windows path, UTF-16LE.
    W2ru,
    /// `W2ku`: absolute Windows path, UTF-16LE.
    W2ku,
    /// `Mac `: Mac OS alias blob.
    Mac,
    /// `MacX`: file URL, UTF-8.
    MacX,
    /// Any other code, kept raw.
    Other([u8; 4]),
}

impl LocatorCode {
    /// Decodes the raw platform code.
    pub fn from_raw(raw: [u8; 4]) -> LocatorCode {
        for code in NAMED_LOCATOR_CODES {
            if code.to_raw() == raw {
                return code;
            }
        }
        LocatorCode::Other(raw)
    }
    /// The raw platform code.
    pub fn to_raw(self) -> [u8; 4] {
        match self {
            LocatorCode::None => [0; 4],
            LocatorCode::Wi2r => *b"Wi2r",
            LocatorCode::Wi2k => *b"Wi2k",
            LocatorCode::W2ru => *b"W2ru",
            LocatorCode::W2ku => *b"W2ku",
            LocatorCode::Mac => *b"Mac ",
            LocatorCode::MacX => *b"MacX",
            LocatorCode::Other(raw) => raw,
        }
    }
}

/// The codes with a name, looked up by [`LocatorCode::from_raw`].
const NAMED_LOCATOR_CODES: [LocatorCode; 7] = [
    LocatorCode::None,
    LocatorCode::Wi2r,
    LocatorCode::Wi2k,
    LocatorCode::W2ru,
    LocatorCode::W2ku,
    LocatorCode::Mac,
    LocatorCode::MacX,
];

/// One of the eight parent locator entries of the dynamic header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentLocator {
    /// Platform code.
    pub code: LocatorCode,
    /// Reserved space, as stored: the specification says sectors, some
    /// writers store bytes (see [`ParentLocator::space_bytes`]).
    pub data_space: u32,
    /// Length of the locator data in bytes.
    pub data_length: u32,
    /// Absolute file offset of the locator data.
    pub data_offset: u64,
}

impl ParentLocator {
    /// An unused slot.
    pub const EMPTY: ParentLocator = ParentLocator {
        code: LocatorCode::None,
        data_space: 0,
        data_length: 0,
        data_offset: 0,
    };

    /// Reserved space in bytes. The specification counts sectors; Hyper-V
    /// and others store a byte count. A value below 512 cannot be a byte
    /// count of a sector-aligned area and is read as sectors, anything
    /// larger as bytes.
    pub fn space_bytes(&self) -> u64 {
        if self.data_space < 512 {
            u64::from(self.data_space) * SECTOR_SIZE
        } else {
            u64::from(self.data_space)
        }
    }
}

/// The dynamic disk header of dynamic and differencing images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Unused, all ones.
    pub data_offset: u64,
    /// Absolute offset of the block allocation table.
    pub table_offset: u64,
    /// Header version, 0x00010000.
    pub header_version: u32,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Size of a block's data in bytes (a power of two).
    pub block_size: u32,
    /// Checksum as stored.
    pub checksum: u32,
    /// UUID of the parent (differencing disks).
    pub parent_uuid: Uuid,
    /// Modification time of the parent, seconds since 2000-01-01 UTC.
    pub parent_timestamp: u32,
    /// Parent file name, UTF-16 code units (stored big-endian), zero padded.
    pub parent_name: [u16; PARENT_NAME_UNITS],
    /// The eight parent locators.
    pub locators: [ParentLocator; LOCATOR_SLOTS],
}

impl DynamicHeader {
    /// Decodes a header. Fails only if the cookie is wrong; the checksum is
    /// checked separately by [`DynamicHeader::checksum_ok`].
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<DynamicHeader, Problem> {
        check_cookie(b, HEADER_COOKIE, Structure::DynamicHeader)?;
        Ok(DynamicHeader::decode(b))
    }

    /// Decodes the fields of a header whose cookie was checked.
    pub(crate) fn decode(b: &[u8; HEADER_SIZE]) -> DynamicHeader {
        let mut parent_name = [0u16; PARENT_NAME_UNITS];
        for (unit, pair) in parent_name.iter_mut().zip(b[64..576].chunks_exact(2)) {
            *unit = u16::from_be_bytes([pair[0], pair[1]]);
        }
        let mut locators = [ParentLocator::EMPTY; LOCATOR_SLOTS];
        for (i, loc) in locators.iter_mut().enumerate() {
            let at = 576 + 24 * i;
            *loc = ParentLocator {
                code: LocatorCode::from_raw(field(b, at)),
                data_space: be_u32(b, at + 4),
                data_length: be_u32(b, at + 8),
                data_offset: be_u64(b, at + 16),
            };
        }
        DynamicHeader {
            data_offset: be_u64(b, 8),
            table_offset: be_u64(b, 16),
            header_version: be_u32(b, 24),
            max_table_entries: be_u32(b, 28),
            block_size: be_u32(b, 32),
            checksum: be_u32(b, 36),
            parent_uuid: Uuid(field(b, 40)),
            parent_timestamp: be_u32(b, 56),
            parent_name,
            locators,
        }
    }

    /// Serialises the header with a freshly computed checksum.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&HEADER_COOKIE);
        b[8..16].copy_from_slice(&self.data_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.table_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.header_version.to_be_bytes());
        b[28..32].copy_from_slice(&self.max_table_entries.to_be_bytes());
        b[32..36].copy_from_slice(&self.block_size.to_be_bytes());
        b[40..56].copy_from_slice(&self.parent_uuid.0);
        b[56..60].copy_from_slice(&self.parent_timestamp.to_be_bytes());
        for (i, unit) in self.parent_name.iter().enumerate() {
            b[64 + 2 * i..66 + 2 * i].copy_from_slice(&unit.to_be_bytes());
        }
        for (i, loc) in self.locators.iter().enumerate() {
            let at = 576 + 24 * i;
            b[at..at + 4].copy_from_slice(&loc.code.to_raw());
            b[at + 4..at + 8].copy_from_slice(&loc.data_space.to_be_bytes());
            b[at + 8..at + 12].copy_from_slice(&loc.data_length.to_be_bytes());
            b[at + 16..at + 24].copy_from_slice(&loc.data_offset.to_be_bytes());
        }
        let sum = checksum(&b, HEADER_CHECKSUM_AT);
        b[36..40].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Checksum computed over the raw bytes of a header.
    pub fn compute_checksum(raw: &[u8; HEADER_SIZE]) -> u32 {
        checksum(raw, HEADER_CHECKSUM_AT)
    }

    /// Whether the stored checksum matches the raw bytes it was parsed from.
    pub fn checksum_ok(&self, raw: &[u8; HEADER_SIZE]) -> bool {
        Self::compute_checksum(raw) == self.checksum
    }

    /// The parent name without its zero padding.
    pub fn parent_name_units(&self) -> &[u16] {
        let end = self
            .parent_name
            .iter()
            .position(|&u| u == 0)
            .unwrap_or(PARENT_NAME_UNITS);
        &self.parent_name[..end]
    }
}

/// Sector bitmap size in bytes (padded to whole sectors) for a block size.
pub fn bitmap_size(block_size: u32) -> u64 {
    let sectors = u64::from(block_size) / SECTOR_SIZE;
    sectors.div_ceil(8).div_ceil(SECTOR_SIZE) * SECTOR_SIZE
}

/// Converts seconds since the Unix epoch to a VHD timestamp (seconds since
/// 2000-01-01 00:00:00 UTC), saturating at both ends.
pub fn vhd_timestamp_from_unix(unix_seconds: u64) -> u32 {
    const Y2K: u64 = 946_684_800;
    u32::try_from(unix_seconds.saturating_sub(Y2K)).unwrap_or(u32::MAX)
}
