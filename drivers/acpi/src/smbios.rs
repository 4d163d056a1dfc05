//! SMBIOS (DMTF DSP0134, version 3.0 entry point): who made the machine,
//! as `dmidecode` and Linux's "DMI:" boot line read it.
//!
//! [`write()`] lays out a 64-bit entry point (`_SM3_`) followed by the
//! structure table: BIOS information (type 0), system information (type 1)
//! and the end-of-table marker (type 127). A guest booted without UEFI finds
//! the entry point by scanning 0xF0000..0x100000 on 16-byte boundaries, so
//! the integrator places the region there (in the legacy hole its memory map
//! reports reserved); the table itself may be anywhere, as its 64-bit address
//! is in the entry point.
//!
//! Strings are the structures' text fields: each must be 1 to
//! [`MAX_STRING_LEN`] printable ASCII characters.

use ponte_kernel::memory::GuestMemory;

use crate::tables::checksum;
use crate::AcpiError;

/// Longest string a field may hold.
pub const MAX_STRING_LEN: usize = 64;
/// Bytes of the entry point; the table follows it at this offset.
pub const ENTRY_POINT_SIZE: usize = 0x20;

/// What the machine says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmbiosConfig<'a> {
    /// Firmware vendor (type 0).
    pub bios_vendor: &'a str,
    /// Firmware version (type 0).
    pub bios_version: &'a str,
    /// Firmware release date, `mm/dd/yyyy` (type 0).
    pub bios_date: &'a str,
    /// System manufacturer (type 1).
    pub manufacturer: &'a str,
    /// Product name (type 1).
    pub product: &'a str,
    /// Product version (type 1).
    pub version: &'a str,
    /// Serial number (type 1).
    pub serial: &'a str,
    /// System UUID in SMBIOS byte order (type 1).
    pub uuid: [u8; 16],
    /// Product family (type 1).
    pub family: &'a str,
}

/// Length of the formatted area of BIOS information (SMBIOS 2.4 and later).
const TYPE0_LEN: usize = 0x18;
/// Length of the formatted area of system information (SMBIOS 2.4 and later).
const TYPE1_LEN: usize = 0x1B;
/// Type 0 characteristics: bit 3, "BIOS characteristics are not supported".
const CHARACTERISTICS_NOT_SUPPORTED: u64 = 1 << 3;
/// Type 0 extension byte 2: bit 4, "the system is a virtual machine".
const EXTENSION2_VIRTUAL_MACHINE: u8 = 1 << 4;
/// Type 1 wake-up type: power switch.
const WAKE_UP_POWER_SWITCH: u8 = 6;

/// Writes the entry point and its table into `out`, which stands for guest
/// memory at `base`; returns the bytes used. `base` must be 16-byte aligned
/// so that a scan finds the entry point.
pub fn write(out: &mut [u8], base: u64, config: &SmbiosConfig<'_>) -> Result<usize, AcpiError> {
    if !base.is_multiple_of(16) {
        return Err(AcpiError::Misaligned { base });
    }
    let mut table = Table {
        out,
        len: ENTRY_POINT_SIZE,
    };
    table.structure(
        0,
        0,
        TYPE0_LEN,
        &[config.bios_vendor, config.bios_version, config.bios_date],
        |area| {
            area[4] = 1; // vendor
            area[5] = 2; // version
            area[6..8].copy_from_slice(&0xE800u16.to_le_bytes()); // start segment
            area[8] = 3; // release date
            area[9] = 0; // ROM size: 64 KiB
            area[10..18].copy_from_slice(&CHARACTERISTICS_NOT_SUPPORTED.to_le_bytes());
            area[18] = 0;
            area[19] = EXTENSION2_VIRTUAL_MACHINE;
            area[20] = 0xFF; // system BIOS release: not given
            area[21] = 0xFF;
            area[22] = 0xFF; // embedded controller: none
            area[23] = 0xFF;
        },
    )?;
    table.structure(
        1,
        1,
        TYPE1_LEN,
        &[
            config.manufacturer,
            config.product,
            config.version,
            config.serial,
            config.family,
        ],
        |area| {
            area[4] = 1; // manufacturer
            area[5] = 2; // product name
            area[6] = 3; // version
            area[7] = 4; // serial number
            area[8..24].copy_from_slice(&config.uuid);
            area[24] = WAKE_UP_POWER_SWITCH;
            area[25] = 0; // SKU: none
            area[26] = 5; // family
        },
    )?;
    table.structure(127, 2, 4, &[], |_| {})?;

    let table_len = table.len - ENTRY_POINT_SIZE;
    let len = table.len;
    let table_address = base
        .checked_add(ENTRY_POINT_SIZE as u64)
        .ok_or(AcpiError::Overflow)?;
    let entry = &mut out[..ENTRY_POINT_SIZE];
    entry.fill(0);
    entry[..5].copy_from_slice(b"_SM3_");
    entry[6] = 0x18; // entry point length
    entry[7] = 3; // SMBIOS 3.0.0
    entry[8] = 0;
    entry[9] = 0;
    entry[10] = 1; // entry point revision
    entry[12..16].copy_from_slice(&(table_len as u32).to_le_bytes());
    entry[16..24].copy_from_slice(&table_address.to_le_bytes());
    entry[5] = checksum(&entry[..0x18]);
    Ok(len)
}

/// Most bytes [`write()`] can produce: the entry point and three structures
/// whose strings are all [`MAX_STRING_LEN`] long.
pub const MAX_SIZE: usize = ENTRY_POINT_SIZE + 0x18 + 3 * 65 + 1 + 0x1B + 5 * 65 + 1 + 4 + 2;

/// [`write()`] into guest memory at `base` (through a buffer on the stack);
/// returns the bytes written.
pub fn install(
    mem: &impl GuestMemory,
    base: u64,
    config: &SmbiosConfig<'_>,
) -> Result<usize, AcpiError> {
    let mut region = [0u8; MAX_SIZE];
    let len = write(&mut region, base, config)?;
    mem.write(base, &region[..len])?;
    Ok(len)
}

/// The structure table being written after the entry point.
struct Table<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl Table<'_> {
    /// Appends a structure: its formatted area (`area_len` bytes, header
    /// filled here, the rest by `fill`), then its strings and the double NUL.
    fn structure(
        &mut self,
        kind: u8,
        handle: u16,
        area_len: usize,
        strings: &[&str],
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), AcpiError> {
        let strings_len: usize = strings.iter().map(|s| s.len() + 1).sum();
        // A structure without strings still ends with two NULs.
        let total = area_len + strings_len.max(1) + 1;
        let end = self.len + total;
        let capacity = self.out.len();
        let Some(bytes) = self.out.get_mut(self.len..end) else {
            return Err(AcpiError::BufferTooSmall {
                needed: end,
                capacity,
            });
        };
        if strings.iter().any(|s| {
            s.is_empty()
                || s.len() > MAX_STRING_LEN
                || !s.bytes().all(|b| (0x20..0x7F).contains(&b))
        }) {
            return Err(AcpiError::BadString);
        }
        bytes.fill(0);
        bytes[0] = kind;
        bytes[1] = area_len as u8;
        bytes[2..4].copy_from_slice(&handle.to_le_bytes());
        fill(&mut bytes[..area_len]);
        let mut at = area_len;
        for s in strings {
            bytes[at..at + s.len()].copy_from_slice(s.as_bytes());
            at += s.len() + 1;
        }
        self.len = end;
        Ok(())
    }
}
