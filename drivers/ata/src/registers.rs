//! The ATA task-file registers of a legacy IDE channel, their bits and the
//! commands used (ATA/ATAPI-6 and ATA8-ACS).

/// Data register (16-bit PIO data), command block offset 0.
pub const DATA: u16 = 0;
/// Error register (read) / Features (write), offset 1.
pub const ERROR: u16 = 1;
/// Sector Count, offset 2.
pub const SECTOR_COUNT: u16 = 2;
/// LBA Low (sector number), offset 3.
pub const LBA_LOW: u16 = 3;
/// LBA Mid (cylinder low), offset 4.
pub const LBA_MID: u16 = 4;
/// LBA High (cylinder high), offset 5.
pub const LBA_HIGH: u16 = 5;
/// Device (drive/head), offset 6.
pub const DEVICE: u16 = 6;
/// Status (read) / Command (write), offset 7.
pub const STATUS: u16 = 7;

/// Status: the device is busy; no other bit is valid.
pub const STATUS_BSY: u8 = 0x80;
/// Status: the device is ready to accept commands.
pub const STATUS_DRDY: u8 = 0x40;
/// Status: device fault.
pub const STATUS_DF: u8 = 0x20;
/// Status: the device requests a data transfer.
pub const STATUS_DRQ: u8 = 0x08;
/// Status: the command ended in error (see the Error register).
pub const STATUS_ERR: u8 = 0x01;

/// Device Control: software reset.
pub const CONTROL_SRST: u8 = 0x04;
/// Device Control: interrupts disabled (nIEN).
pub const CONTROL_NIEN: u8 = 0x02;

/// Device register: LBA addressing.
pub const DEVICE_LBA: u8 = 0x40;
/// Device register: bits 7 and 5, obsolete, set by convention.
pub const DEVICE_OBSOLETE: u8 = 0xa0;
/// Device register: device 1 (slave) selected.
pub const DEVICE_DEV1: u8 = 0x10;

/// IDENTIFY DEVICE.
pub const CMD_IDENTIFY: u8 = 0xec;
/// READ SECTORS (28-bit LBA, PIO).
pub const CMD_READ_SECTORS: u8 = 0x20;
/// READ SECTORS EXT (48-bit LBA, PIO).
pub const CMD_READ_SECTORS_EXT: u8 = 0x24;
/// WRITE SECTORS (28-bit LBA, PIO).
pub const CMD_WRITE_SECTORS: u8 = 0x30;
/// WRITE SECTORS EXT (48-bit LBA, PIO).
pub const CMD_WRITE_SECTORS_EXT: u8 = 0x34;
/// FLUSH CACHE.
pub const CMD_FLUSH_CACHE: u8 = 0xe7;
/// FLUSH CACHE EXT.
pub const CMD_FLUSH_CACHE_EXT: u8 = 0xea;

/// LBA Mid and LBA High of a PACKET (ATAPI) device's signature.
pub const PACKET_SIGNATURE: (u8, u8) = (0x14, 0xeb);

/// The bits of the Error register after a command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorBits(pub u8);

impl ErrorBits {
    /// ICRC: interface CRC error.
    pub fn interface_crc(self) -> bool {
        self.0 & 0x80 != 0
    }
    /// UNC: uncorrectable data error.
    pub fn uncorrectable(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// IDNF: the address was not found (beyond the device or bad).
    pub fn id_not_found(self) -> bool {
        self.0 & 0x10 != 0
    }
    /// ABRT: the command was aborted (unsupported or invalid parameters).
    pub fn aborted(self) -> bool {
        self.0 & 0x04 != 0
    }
    /// The name of the most specific bit set, for messages.
    pub fn name(self) -> &'static str {
        if self.interface_crc() {
            "interface CRC error"
        } else if self.uncorrectable() {
            "uncorrectable data"
        } else if self.id_not_found() {
            "address not found"
        } else if self.aborted() {
            "command aborted"
        } else if self.0 == 0 {
            "no error bit"
        } else {
            "other error"
        }
    }
}
