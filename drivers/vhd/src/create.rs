//! Creating fixed, dynamic and differencing images.
//!
//! Sizes: the specification's CHS algorithm (rounding down) gives the
//! geometry. With [`SizeMode::ChsExact`] the size is rounded down to what the
//! geometry describes, so every reader agrees on it whatever rule it uses.
//! With [`SizeMode::CurrentSizeExact`] the size is kept and the creator is
//! [`CREATOR_CURRENT_SIZE`], which qemu 7.2 and later read at current size
//! like VirtualBox, Hyper-V and libvhdi do.

use crate::device::BlockDevice;
use crate::error::Error;
use crate::format::{
    DiskType, DynamicHeader, Footer, Geometry, LocatorCode, ParentLocator, Uuid, CREATOR_CHS_EXACT,
    CREATOR_CURRENT_SIZE, CREATOR_VERSION, DEFAULT_BLOCK_SIZE, FEATURE_RESERVED, FOOTER_SIZE,
    FOOTER_VERSION, HEADER_SIZE, HEADER_VERSION, HOST_OS_WINDOWS, LOCATOR_SLOTS, MAX_BLOCK_SIZE,
    MAX_DYNAMIC_SIZE, MAX_FIXED_SIZE, MIN_BLOCK_SIZE, NO_DATA_OFFSET, PARENT_NAME_UNITS,
    SECTOR_SIZE,
};
use crate::layer::MAX_LOCATOR_LEN;

/// How the size of a new image is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeMode {
    /// Round the size down to the CHS geometry's size (sizes beyond the
    /// largest geometry, about 127 GiB, are kept: readers take the current
    /// size when the geometry is maximal); creator [`CREATOR_CHS_EXACT`].
    ChsExact,
    /// Keep the size (a multiple of 512); creator [`CREATOR_CURRENT_SIZE`].
    CurrentSizeExact,
}

/// Parameters of a new fixed or dynamic image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Requested virtual size in bytes.
    pub size: u64,
    /// Block size of dynamic images (power of two, 512 B to 256 MiB).
    pub block_size: u32,
    /// How the size is recorded.
    pub size_mode: SizeMode,
    /// UUID of the new image (the caller's random source).
    pub uuid: Uuid,
    /// Creation time, seconds since 2000-01-01 UTC (see
    /// [`crate::format::vhd_timestamp_from_unix`]).
    pub timestamp: u32,
}

impl CreateOptions {
    /// Options with the default block size (2 MiB) and exact current size.
    pub fn new(size: u64, uuid: Uuid, timestamp: u32) -> Self {
        CreateOptions {
            size,
            block_size: DEFAULT_BLOCK_SIZE,
            size_mode: SizeMode::CurrentSizeExact,
            uuid,
            timestamp,
        }
    }
}

/// Where a new differencing image finds its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentLink<'a> {
    /// Path of the parent relative to the child's directory, `/` or `\`
    /// separated (e.g. `base.vhd`, `../images/base.vhd`). Written to the
    /// `W2ru` locator, and to `W2ku` and `MacX` when no absolute path is
    /// given.
    pub relative_path: &'a str,
    /// Absolute path of the parent, if known (`W2ku` and `MacX`).
    pub absolute_path: Option<&'a str>,
    /// Parent file name for the header's parent unicode name (at most 256
    /// UTF-16 units).
    pub name: &'a str,
}

fn check_block_size(block_size: u32) -> Result<(), Error> {
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::InvalidParameter {
            name: "block_size",
            value: u64::from(block_size),
        });
    }
    Ok(())
}

/// The footer of a new image of `kind`, with the size rules applied.
pub fn new_footer(kind: DiskType, options: &CreateOptions) -> Result<Footer, Error> {
    let max = if kind == DiskType::Fixed {
        MAX_FIXED_SIZE
    } else {
        MAX_DYNAMIC_SIZE
    };
    let geometry = Geometry::for_size(options.size);
    let (size, creator_app) = match options.size_mode {
        // Beyond what CHS describes the geometry is maximal, and every
        // reader takes the current size of such images: nothing to round.
        SizeMode::ChsExact if geometry.is_maximal() => (options.size, CREATOR_CHS_EXACT),
        SizeMode::ChsExact => (geometry.size(), CREATOR_CHS_EXACT),
        SizeMode::CurrentSizeExact => (options.size, CREATOR_CURRENT_SIZE),
    };
    if size == 0 || size > max || size % SECTOR_SIZE != 0 {
        return Err(Error::InvalidParameter {
            name: "size",
            value: options.size,
        });
    }
    Ok(Footer {
        features: FEATURE_RESERVED,
        format_version: FOOTER_VERSION,
        data_offset: if kind == DiskType::Fixed {
            NO_DATA_OFFSET
        } else {
            FOOTER_SIZE as u64
        },
        timestamp: options.timestamp,
        creator_app,
        creator_version: CREATOR_VERSION,
        creator_host_os: HOST_OS_WINDOWS,
        original_size: size,
        current_size: size,
        geometry,
        disk_type: kind.to_raw(),
        checksum: 0,
        uuid: options.uuid,
        saved_state: 0,
    })
}

/// Writes a fixed image (zeros, then the footer) to `dev`, replacing its
/// contents; returns the footer.
pub fn create_fixed<D: BlockDevice>(dev: &mut D, options: &CreateOptions) -> Result<Footer, Error> {
    let footer = new_footer(DiskType::Fixed, options)?;
    dev.set_len(0)?;
    dev.set_len(footer.current_size)?;
    let bytes = footer.to_bytes();
    dev.write_at(footer.current_size, &bytes)?;
    dev.flush()?;
    Footer::parse(&bytes).map_err(Error::from)
}

/// Writes an empty dynamic image to `dev`, replacing its contents; returns
/// the footer.
pub fn create_dynamic<D: BlockDevice>(
    dev: &mut D,
    options: &CreateOptions,
) -> Result<Footer, Error> {
    check_block_size(options.block_size)?;
    let footer = new_footer(DiskType::Dynamic, options)?;
    let header = new_header(footer.current_size, options.block_size);
    write_sparse(dev, &footer, header, &[])
}

fn new_header(size: u64, block_size: u32) -> DynamicHeader {
    let entries = size.div_ceil(u64::from(block_size)) as u32;
    DynamicHeader {
        data_offset: NO_DATA_OFFSET,
        table_offset: (FOOTER_SIZE + HEADER_SIZE) as u64,
        header_version: HEADER_VERSION,
        max_table_entries: entries,
        block_size,
        checksum: 0,
        parent_uuid: Uuid::NIL,
        parent_timestamp: 0,
        parent_name: [0; PARENT_NAME_UNITS],
        locators: [ParentLocator::EMPTY; LOCATOR_SLOTS],
    }
}

/// Writes footer copy, header, empty BAT, locator data and footer.
fn write_sparse<D: BlockDevice>(
    dev: &mut D,
    footer: &Footer,
    mut header: DynamicHeader,
    locators: &[(LocatorCode, &[u8])],
) -> Result<Footer, Error> {
    let table_len = (u64::from(header.max_table_entries) * 4).next_multiple_of(SECTOR_SIZE);
    let mut at = header.table_offset + table_len;
    for (slot, (code, data)) in locators.iter().enumerate().take(LOCATOR_SLOTS) {
        let space = (data.len() as u64).next_multiple_of(SECTOR_SIZE);
        header.locators[slot] = ParentLocator {
            code: *code,
            data_space: (space / SECTOR_SIZE) as u32,
            data_length: data.len() as u32,
            data_offset: at,
        };
        at += space;
    }
    let footer_bytes = footer.to_bytes();
    dev.set_len(0)?;
    dev.write_at(0, &footer_bytes)?;
    dev.write_at(FOOTER_SIZE as u64, &header.to_bytes())?;
    let ones = [0xFFu8; 4096];
    let mut done = 0;
    while done < table_len {
        let n = (table_len - done).min(ones.len() as u64);
        dev.write_at(header.table_offset + done, &ones[..n as usize])?;
        done += n;
    }
    for (slot, (_, data)) in locators.iter().enumerate().take(LOCATOR_SLOTS) {
        dev.write_at(header.locators[slot].data_offset, data)?;
    }
    dev.write_at(at, &footer_bytes)?;
    dev.flush()?;
    Footer::parse(&footer_bytes).map_err(Error::from)
}

/// Reads and checks the footer of an existing image (tail, else the copy
/// at offset 0).
pub fn read_footer<D: BlockDevice>(dev: &mut D) -> Result<Footer, Error> {
    let len = dev.len()?;
    if len < FOOTER_SIZE as u64 {
        return Err(crate::error::Problem::FileTooSmall { len }.into());
    }
    let mut first_problem = None;
    for at in [len - FOOTER_SIZE as u64, 0] {
        let mut raw = [0u8; FOOTER_SIZE];
        dev.read_at(at, &mut raw)?;
        match Footer::parse(&raw) {
            Ok(f) if f.checksum_ok(&raw) => return Ok(f),
            Ok(f) => {
                first_problem.get_or_insert(crate::error::Problem::BadChecksum {
                    structure: crate::error::Structure::Footer,
                    stored: f.checksum,
                    computed: Footer::compute_checksum(&raw),
                });
            }
            Err(p) => {
                first_problem.get_or_insert(p);
            }
        }
    }
    Err(Error::Malformed(
        first_problem.unwrap_or(crate::error::Problem::FileTooSmall { len }),
    ))
}

/// UTF-16LE encoding of `s` with `/` turned into `\`, into `out`.
fn utf16le_windows<'o>(prefix: &str, s: &str, out: &'o mut [u8]) -> Result<&'o [u8], Error> {
    let mut n = 0;
    for unit in prefix.encode_utf16().chain(s.encode_utf16()) {
        let unit = if unit == u16::from(b'/') {
            u16::from(b'\\')
        } else {
            unit
        };
        let dst = out.get_mut(n..n + 2).ok_or(Error::InvalidParameter {
            name: "parent path",
            value: s.len() as u64,
        })?;
        dst.copy_from_slice(&unit.to_le_bytes());
        n += 2;
    }
    Ok(&out[..n])
}

/// `file://` URL of `path` (`\` turned into `/`, bytes outside the
/// unreserved set percent-encoded), into `out`.
fn file_url<'o>(path: &str, out: &'o mut [u8]) -> Result<&'o [u8], Error> {
    let too_long = Error::InvalidParameter {
        name: "parent path",
        value: path.len() as u64,
    };
    let mut n = 0;
    let mut put = |b: u8, n: &mut usize| -> Result<(), Error> {
        *out.get_mut(*n).ok_or(too_long)? = b;
        *n += 1;
        Ok(())
    };
    for &b in b"file://" {
        put(b, &mut n)?;
    }
    for &b in path.as_bytes() {
        let b = if b == b'\\' { b'/' } else { b };
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            put(b, &mut n)?;
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            put(b'%', &mut n)?;
            put(HEX[usize::from(b >> 4)], &mut n)?;
            put(HEX[usize::from(b & 15)], &mut n)?;
        }
    }
    Ok(&out[..n])
}

/// Writes an empty differencing image over the parent on `parent` to
/// `dev`, replacing its contents; returns the child's footer. The child
/// records the parent's UUID, timestamp and name and gets `W2ku`, `W2ru`
/// and `MacX` locators. Its size and geometry are the parent's.
pub fn create_differencing<D: BlockDevice, P: BlockDevice>(
    dev: &mut D,
    parent: &mut P,
    link: &ParentLink<'_>,
    block_size: u32,
    uuid: Uuid,
    timestamp: u32,
) -> Result<Footer, Error> {
    check_block_size(block_size)?;
    let parent_footer = read_footer(parent)?;
    let size = parent_footer.virtual_size();
    let options = CreateOptions {
        size,
        block_size,
        size_mode: SizeMode::CurrentSizeExact,
        uuid,
        timestamp,
    };
    let mut footer = new_footer(DiskType::Differencing, &options)?;
    if parent_footer.geometry.size() == size {
        footer.creator_app = CREATOR_CHS_EXACT;
    }
    footer.geometry = parent_footer.geometry;
    let mut header = new_header(size, block_size);
    header.parent_uuid = parent_footer.uuid;
    header.parent_timestamp = parent_footer.timestamp;
    let mut units = link.name.encode_utf16();
    for unit in header.parent_name.iter_mut() {
        *unit = units.next().unwrap_or(0);
    }
    if units.next().is_some() {
        return Err(Error::InvalidParameter {
            name: "parent name",
            value: link.name.len() as u64,
        });
    }
    let rel = link.relative_path;
    let rel_prefix = if starts_with_windows(rel, ".\\") || starts_with_windows(rel, "..\\") {
        ""
    } else {
        ".\\"
    };
    let mut w2ru = [0u8; MAX_LOCATOR_LEN as usize];
    let mut w2ku = [0u8; MAX_LOCATOR_LEN as usize];
    let mut macx = [0u8; MAX_LOCATOR_LEN as usize];
    let w2ru = utf16le_windows(rel_prefix, link.relative_path, &mut w2ru)?;
    let (abs_prefix, abs) = match link.absolute_path {
        Some(a) => ("", a),
        None => (rel_prefix, link.relative_path),
    };
    let w2ku = utf16le_windows(abs_prefix, abs, &mut w2ku)?;
    let mac_path = link.absolute_path.unwrap_or(link.relative_path);
    let macx = file_url(mac_path, &mut macx)?;
    write_sparse(
        dev,
        &footer,
        header,
        &[
            (LocatorCode::W2ku, w2ku),
            (LocatorCode::W2ru, w2ru),
            (LocatorCode::MacX, macx),
        ],
    )
}

/// Whether `s` starts with `prefix` once `/` is read as `\`.
fn starts_with_windows(s: &str, prefix: &str) -> bool {
    let mut a = s.bytes().map(|b| if b == b'/' { b'\\' } else { b });
    prefix.bytes().all(|p| a.next() == Some(p))
}
