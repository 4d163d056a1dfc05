//! The IDENTIFY DEVICE data: the 256 words a disk returns about itself,
//! read as ATA/ATAPI-6 and ATA8-ACS define them. Only what the driver uses
//! is kept; every field is checked, since a device may return anything.

use crate::AtaError;

/// Which cache flush command the device takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushCommand {
    /// FLUSH CACHE EXT (word 83 bit 13, with 48-bit addressing).
    CacheExt,
    /// FLUSH CACHE (word 83 bit 12).
    Cache,
    /// Neither is reported and the write cache is not enabled (word 85
    /// bit 5 clear): writes are on the medium when they complete.
    NotNeeded,
}

/// What IDENTIFY DEVICE reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User-addressable sectors (512 bytes each).
    pub sectors: u64,
    /// Whether the 48-bit address feature set is supported and enabled
    /// (words 83 and 86, bit 10, with words 83 and 87 valid).
    pub lba48: bool,
    /// How to flush the write cache.
    pub flush: FlushCommand,
    /// Model number (words 27-46), ASCII, padded with spaces.
    pub model: [u8; 40],
    /// Serial number (words 10-19), ASCII, padded with spaces.
    pub serial: [u8; 20],
}

/// Word 0 bit 15: set by PACKET (ATAPI) devices.
const GENERAL_CONFIG_NOT_ATA: u16 = 1 << 15;
/// Word 49 bit 9: LBA supported.
const CAPABILITIES_LBA: u16 = 1 << 9;
/// Words 83, 87 (vouching for 85 and 86) and 106: bits 15:14 read 01 when
/// valid. Word 86 has no such bits (ATA8-ACS uses its bit 15 otherwise).
const VALID_MASK: u16 = 0xc000;
const VALID: u16 = 0x4000;
/// Word 83/86 bit 10: 48-bit address feature set.
const LBA48: u16 = 1 << 10;
/// Word 83 bit 12: FLUSH CACHE supported.
const FLUSH_CACHE: u16 = 1 << 12;
/// Word 83 bit 13: FLUSH CACHE EXT supported.
const FLUSH_CACHE_EXT: u16 = 1 << 13;
/// Word 85 bit 5: write cache enabled.
const WRITE_CACHE_ENABLED: u16 = 1 << 5;
/// Word 106 bit 12: logical sectors are longer than 256 words.
const LONG_LOGICAL_SECTOR: u16 = 1 << 12;
/// Word 255 low byte when the integrity word is present.
const INTEGRITY_SIGNATURE: u16 = 0xa5;
/// The largest sector count a 28-bit address can reach (0x0FFF_FFFF is
/// the last address).
pub const LBA28_SECTORS: u64 = 1 << 28;
/// The largest sector count a 48-bit address can reach.
pub const LBA48_SECTORS: u64 = 1 << 48;

impl Identity {
    /// Reads the IDENTIFY DEVICE words.
    pub fn parse(words: &[u16; 256]) -> Result<Identity, AtaError> {
        if words[255] & 0xff == INTEGRITY_SIGNATURE {
            let sum = words.iter().fold(0u8, |s, w| {
                s.wrapping_add(*w as u8).wrapping_add((w >> 8) as u8)
            });
            if sum != 0 {
                return Err(AtaError::IdentifyChecksum { sum });
            }
        }
        if words[0] & GENERAL_CONFIG_NOT_ATA != 0 {
            return Err(AtaError::NotAtaDevice {
                general_config: words[0],
            });
        }
        if words[49] & CAPABILITIES_LBA == 0 {
            return Err(AtaError::NoLba {
                capabilities: words[49],
            });
        }
        let valid = |w: u16| w & VALID_MASK == VALID;
        let (w83, w85, w86, w106) = (words[83], words[85], words[86], words[106]);
        if valid(w106) && w106 & LONG_LOGICAL_SECTOR != 0 {
            return Err(AtaError::UnsupportedSectorSize {
                words_per_sector: u32::from(words[117]) | u32::from(words[118]) << 16,
            });
        }
        // Words 85 and 86 (features enabled) are valid when word 87 is.
        let enabled_valid = valid(words[87]);
        let lba48 = valid(w83) && enabled_valid && w83 & LBA48 != 0 && w86 & LBA48 != 0;
        let sectors28 = u64::from(words[60]) | u64::from(words[61]) << 16;
        let sectors48 = (100..104).fold(0u64, |s, i| s | u64::from(words[i]) << (16 * (i - 100)));
        let sectors = if lba48 && sectors48 != 0 {
            sectors48
        } else {
            sectors28
        };
        if sectors == 0 {
            return Err(AtaError::NoCapacity);
        }
        // Nothing past the addressable range is usable: 2^28 sectors
        // without 48-bit addressing, 2^48 with it (words 100-103 can claim
        // up to 2^64).
        let sectors = if lba48 {
            sectors.min(LBA48_SECTORS)
        } else {
            sectors.min(LBA28_SECTORS)
        };
        let flush = if valid(w83) && lba48 && w83 & FLUSH_CACHE_EXT != 0 {
            FlushCommand::CacheExt
        } else if valid(w83) && w83 & FLUSH_CACHE != 0 {
            FlushCommand::Cache
        } else if enabled_valid && w85 & WRITE_CACHE_ENABLED != 0 {
            return Err(AtaError::CacheWithoutFlush {
                command_sets: w83,
                enabled: w85,
            });
        } else {
            FlushCommand::NotNeeded
        };
        Ok(Identity {
            sectors,
            lba48,
            flush,
            model: ascii(&words[27..47]),
            serial: ascii(&words[10..20]),
        })
    }

    /// The model number without its padding (empty if not ASCII).
    pub fn model(&self) -> &str {
        trimmed(&self.model)
    }

    /// The serial number without its padding (empty if not ASCII).
    pub fn serial(&self) -> &str {
        trimmed(&self.serial)
    }
}

/// ATA strings hold two characters a word, the first in the high byte.
fn ascii<const N: usize>(words: &[u16]) -> [u8; N] {
    let mut out = [b' '; N];
    unpack_chars(&mut out, words);
    out
}

/// The characters of `words` into `out`, two a word. Not generic and out
/// of line: one copy serves every string length.
#[inline(never)]
fn unpack_chars(out: &mut [u8], words: &[u16]) {
    for (pair, word) in out.chunks_exact_mut(2).zip(words) {
        pair.copy_from_slice(&word.to_be_bytes());
    }
}

fn trimmed(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes)
        .map(|s| s.trim_matches(|c| c == ' ' || c == '\0'))
        .unwrap_or("")
}
