//! ATA disks on the legacy IDE channels of the host (the PIIX-style
//! controller of Bochs and QEMU's PC machines), driven by polled PIO.
//!
//! - [`registers`]: task-file registers, status and error bits, commands.
//! - [`identify`]: IDENTIFY DEVICE data: capacity, 48-bit addressing, the
//!   flush command, model and serial.
//! - [`AtaDisk`]: one disk: [`AtaDisk::open`] selects it and identifies it;
//!   [`AtaDisk::read_sectors`], [`AtaDisk::write_sectors`] (28-bit LBA
//!   commands where the range allows, 48-bit beyond) and
//!   [`AtaDisk::flush_cache`]. It is also a [`ponte_vhd::BlockDevice`] of
//!   fixed length, with read-modify-write of partial sectors, so a VHD can
//!   be opened on it.
//! - [`disk_file`]: a growable file in a region of a fixed-size device, so a
//!   dynamic or differencing VHD can grow on the disk.
//!
//! The driver is written against [`PortAccess`] (ponte-arch's port
//! contract): the protocol is tested on the host against a model of the
//! register interface, and runs on hardware over `ponte_arch::port::HostPorts`.
//! Interrupts are disabled (nIEN) and every wait polls the Alternate Status
//! register a bounded number of times; a device that never answers ends in
//! [`AtaError::Timeout`]. Whatever the device returns is checked: no value
//! it reports can cause a panic or an access outside the caller's buffer.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod disk_file;
pub mod identify;
pub mod registers;

mod block;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use core::fmt;

pub use identify::{FlushCommand, Identity, LBA28_SECTORS, LBA48_SECTORS};
pub use ponte_arch::port::PortAccess;
use registers::*;

/// Bytes in a sector.
pub const SECTOR_SIZE: usize = 512;
/// Words in a sector on the data port.
const SECTOR_WORDS: usize = SECTOR_SIZE / 2;
/// Most sectors one 28-bit command moves (a count of 0 means 256).
pub const MAX_SECTORS_28: u64 = 256;
/// Most sectors one 48-bit command moves (a count of 0 means 65536).
pub const MAX_SECTORS_48: u64 = 65536;

/// The I/O ports of one IDE channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    /// First port of the command block (data register).
    pub command_block: u16,
    /// Device Control (write) / Alternate Status (read) port.
    pub control: u16,
}

impl Channel {
    /// The primary channel: 0x1F0-0x1F7 and 0x3F6.
    pub const PRIMARY: Channel = Channel {
        command_block: 0x1f0,
        control: 0x3f6,
    };
    /// The secondary channel: 0x170-0x177 and 0x376.
    pub const SECONDARY: Channel = Channel {
        command_block: 0x170,
        control: 0x376,
    };
}

/// Which device of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drive {
    /// Device 0 (master).
    Master,
    /// Device 1 (slave).
    Slave,
}

impl Drive {
    fn select_bit(self) -> u8 {
        match self {
            Drive::Master => 0,
            Drive::Slave => DEVICE_DEV1,
        }
    }
}

/// How long the driver waits, counted in Alternate Status reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollLimits {
    /// For the device to leave BSY during selection, reads and writes.
    pub transfer: u32,
    /// For a cache flush, which may write a whole cache to the medium.
    pub flush: u32,
}

impl Default for PollLimits {
    /// About one second for transfers and thirty for a flush on hardware
    /// where a port read takes about a microsecond.
    fn default() -> Self {
        PollLimits {
            transfer: 1_000_000,
            flush: 30_000_000,
        }
    }
}

/// The step of a command during which the driver waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Selecting the device, before the command.
    Select,
    /// Waiting for the device to request the transfer of a sector.
    DataRequest,
    /// Waiting for the command to complete.
    Completion,
}

/// Why a disk operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtaError {
    /// The status register reads 0xFF: no controller answers at these ports.
    NoController {
        /// Status read.
        status: u8,
    },
    /// The status register reads 0 after selecting the device and sending
    /// IDENTIFY: no device is attached.
    NoDevice {
        /// Status read.
        status: u8,
    },
    /// The device stayed busy.
    Timeout {
        /// What the driver waited for.
        phase: Phase,
        /// The last status read.
        status: u8,
        /// How many times it was read.
        polls: u32,
    },
    /// The device ended `command` with ERR set.
    CommandFailed {
        /// The command.
        command: u8,
        /// The first sector not transferred (0 for commands without one).
        lba: u64,
        /// Status register.
        status: u8,
        /// Error register.
        error: ErrorBits,
    },
    /// The device reported a device fault (DF) during `command`.
    DeviceFault {
        /// The command.
        command: u8,
        /// The first sector not transferred.
        lba: u64,
        /// Status register.
        status: u8,
    },
    /// The device left BSY without requesting the data `command` moves.
    NoDataRequest {
        /// The command.
        command: u8,
        /// The sector whose transfer was expected.
        lba: u64,
        /// Status register.
        status: u8,
    },
    /// The device still requested data after the last sector of `command`.
    DataLeftOver {
        /// The command.
        command: u8,
        /// Status register.
        status: u8,
    },
    /// IDENTIFY was aborted by a PACKET (ATAPI) device, e.g. a CD-ROM.
    PacketDevice,
    /// IDENTIFY word 0 says this is not an ATA device.
    NotAtaDevice {
        /// IDENTIFY word 0.
        general_config: u16,
    },
    /// The device does not support LBA addressing (IDENTIFY word 49).
    NoLba {
        /// IDENTIFY word 49.
        capabilities: u16,
    },
    /// IDENTIFY reports logical sectors other than 512 bytes.
    UnsupportedSectorSize {
        /// Words per logical sector (IDENTIFY words 117-118).
        words_per_sector: u32,
    },
    /// IDENTIFY reports no addressable sectors.
    NoCapacity,
    /// The IDENTIFY integrity word does not check (the bytes sum to `sum`,
    /// not 0).
    IdentifyChecksum {
        /// Sum of all 512 bytes.
        sum: u8,
    },
    /// The write cache is enabled but no flush command is supported.
    CacheWithoutFlush {
        /// IDENTIFY word 83.
        command_sets: u16,
        /// IDENTIFY word 85.
        enabled: u16,
    },
    /// The sectors asked for reach past the end of the disk.
    OutOfRange {
        /// First sector.
        lba: u64,
        /// Number of sectors.
        count: u64,
        /// Sectors on the disk.
        capacity: u64,
    },
    /// A sector transfer was given a buffer that is not whole sectors.
    NotWholeSectors {
        /// The buffer's length.
        len: usize,
    },
}

impl AtaError {
    /// A number standing for this error in an
    /// [`ponte_vhd::IoError::Os`] code: `0x4154_0000` (ASCII "AT") plus the
    /// variant index times 0x100 plus the status register where the error
    /// has one. [`AtaDisk::last_error`] gives the full error.
    pub fn code(&self) -> i32 {
        let (kind, status) = match *self {
            AtaError::NoController { status } => (1, status),
            AtaError::NoDevice { status } => (2, status),
            AtaError::Timeout { status, .. } => (3, status),
            AtaError::CommandFailed { status, .. } => (4, status),
            AtaError::DeviceFault { status, .. } => (5, status),
            AtaError::NoDataRequest { status, .. } => (6, status),
            AtaError::DataLeftOver { status, .. } => (7, status),
            AtaError::PacketDevice => (8, 0),
            AtaError::NotAtaDevice { .. } => (9, 0),
            AtaError::NoLba { .. } => (10, 0),
            AtaError::UnsupportedSectorSize { .. } => (11, 0),
            AtaError::NoCapacity => (12, 0),
            AtaError::IdentifyChecksum { .. } => (13, 0),
            AtaError::CacheWithoutFlush { .. } => (14, 0),
            AtaError::OutOfRange { .. } => (15, 0),
            AtaError::NotWholeSectors { .. } => (16, 0),
        };
        0x4154_0000 | kind << 8 | i32::from(status)
    }
}

impl fmt::Display for AtaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AtaError::NoController { status } => {
                write!(f, "no controller (status {status:#04x})")
            }
            AtaError::NoDevice { status } => write!(f, "no device (status {status:#04x})"),
            AtaError::Timeout {
                phase,
                status,
                polls,
            } => write!(
                f,
                "device busy during {phase:?} after {polls} polls (status {status:#04x})"
            ),
            AtaError::CommandFailed {
                command,
                lba,
                status,
                error,
            } => write!(
                f,
                "command {command:#04x} failed at sector {lba}: {} (status {status:#04x}, error {:#04x})",
                error.name(),
                error.0
            ),
            AtaError::DeviceFault {
                command,
                lba,
                status,
            } => write!(
                f,
                "device fault in command {command:#04x} at sector {lba} (status {status:#04x})"
            ),
            AtaError::NoDataRequest {
                command,
                lba,
                status,
            } => write!(
                f,
                "command {command:#04x}: no data request for sector {lba} (status {status:#04x})"
            ),
            AtaError::DataLeftOver { command, status } => write!(
                f,
                "command {command:#04x}: data still requested after the last sector (status {status:#04x})"
            ),
            AtaError::PacketDevice => write!(f, "a PACKET (ATAPI) device, not a disk"),
            AtaError::NotAtaDevice { general_config } => {
                write!(f, "not an ATA device (IDENTIFY word 0 {general_config:#06x})")
            }
            AtaError::NoLba { capabilities } => {
                write!(f, "no LBA support (IDENTIFY word 49 {capabilities:#06x})")
            }
            AtaError::UnsupportedSectorSize { words_per_sector } => {
                write!(f, "logical sectors of {words_per_sector} words, not 256")
            }
            AtaError::NoCapacity => write!(f, "IDENTIFY reports no sectors"),
            AtaError::IdentifyChecksum { sum } => {
                write!(f, "IDENTIFY data sums to {sum:#04x}, not 0")
            }
            AtaError::CacheWithoutFlush {
                command_sets,
                enabled,
            } => write!(
                f,
                "write cache enabled without a flush command (words 83 {command_sets:#06x}, 85 {enabled:#06x})"
            ),
            AtaError::OutOfRange {
                lba,
                count,
                capacity,
            } => write!(
                f,
                "sectors {lba}+{count} beyond the disk's {capacity} sectors"
            ),
            AtaError::NotWholeSectors { len } => {
                write!(f, "{len} bytes is not a whole number of sectors")
            }
        }
    }
}

/// The caller's buffer of a sector transfer, with its direction.
pub(crate) enum Transfer<'a> {
    /// Sectors read from the disk into the buffer.
    Read(&'a mut [u8]),
    /// Sectors written from the buffer to the disk.
    Write(&'a [u8]),
}

impl<'a> Transfer<'a> {
    fn len(&self) -> usize {
        match self {
            Transfer::Read(buf) => buf.len(),
            Transfer::Write(data) => data.len(),
        }
    }

    /// Takes the first `n` bytes (all of them if fewer) off the buffer, in
    /// the same direction; the rest stays.
    pub(crate) fn take_front(&mut self, n: usize) -> Transfer<'a> {
        match self {
            Transfer::Read(buf) => {
                let buf = core::mem::take(buf);
                let (front, rest) = buf.split_at_mut(n.min(buf.len()));
                *self = Transfer::Read(rest);
                Transfer::Read(front)
            }
            Transfer::Write(data) => {
                let (front, rest) = data.split_at(n.min(data.len()));
                *data = rest;
                Transfer::Write(front)
            }
        }
    }
}

/// Marks that a step of a command failed. The error itself waits in
/// [`AtaDisk`] (`fault`) until the public call that issued the command
/// takes it: passed up through the command sequence, this one-byte marker
/// costs a test and a branch per step where the 24-byte [`AtaError`] is
/// copied at every step.
#[derive(Debug)]
pub(crate) struct Failed;

/// Outcome of an internal step of a command.
pub(crate) type Step<T = ()> = Result<T, Failed>;

/// One ATA disk, identified and ready for transfers.
#[derive(Debug)]
pub struct AtaDisk<P> {
    ports: P,
    channel: Channel,
    drive: Drive,
    identity: Identity,
    limits: PollLimits,
    last_error: Option<AtaError>,
    /// The error of the step that failed, until [`AtaDisk::take_fault`]
    /// takes it.
    fault: Option<AtaError>,
}

impl<P: PortAccess> AtaDisk<P> {
    /// Selects `drive` on `channel`, disables its interrupts and identifies
    /// it, with the default [`PollLimits`].
    pub fn open(ports: P, channel: Channel, drive: Drive) -> Result<Self, AtaError> {
        Self::open_with(ports, channel, drive, PollLimits::default())
    }

    /// [`AtaDisk::open`] with explicit poll limits.
    pub fn open_with(
        ports: P,
        channel: Channel,
        drive: Drive,
        limits: PollLimits,
    ) -> Result<Self, AtaError> {
        let mut disk = AtaDisk {
            ports,
            channel,
            drive,
            identity: Identity {
                sectors: 0,
                lba48: false,
                flush: FlushCommand::NotNeeded,
                model: [b' '; 40],
                serial: [b' '; 20],
            },
            limits,
            last_error: None,
            fault: None,
        };
        disk.identity = disk.identify().map_err(|Failed| disk.take_fault())?;
        Ok(disk)
    }

    /// What IDENTIFY reported.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Sectors on the disk.
    pub fn sectors(&self) -> u64 {
        self.identity.sectors
    }

    /// The last error a [`ponte_vhd::BlockDevice`] call met (those calls
    /// report it as an `Os` code; see [`AtaError::code`]).
    pub fn last_error(&self) -> Option<AtaError> {
        self.last_error
    }

    /// Gives the ports back.
    pub fn into_ports(self) -> P {
        self.ports
    }

    /// Reads `buf.len() / 512` sectors starting at `lba`.
    pub fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), AtaError> {
        self.transfer(lba, Transfer::Read(buf))
            .map_err(|Failed| self.take_fault())
    }

    /// Writes `data.len() / 512` sectors starting at `lba`. They are durable
    /// after [`AtaDisk::flush_cache`].
    pub fn write_sectors(&mut self, lba: u64, data: &[u8]) -> Result<(), AtaError> {
        self.transfer(lba, Transfer::Write(data))
            .map_err(|Failed| self.take_fault())
    }

    /// Writes the device's cache to the medium (FLUSH CACHE EXT, or FLUSH
    /// CACHE without 48-bit addressing).
    pub fn flush_cache(&mut self) -> Result<(), AtaError> {
        self.flush_steps().map_err(|Failed| self.take_fault())
    }

    /// Records `e` as the error of the failing step.
    #[cold]
    #[inline(never)]
    pub(crate) fn fail(&mut self, e: AtaError) -> Failed {
        self.fault = Some(e);
        Failed
    }

    /// Takes the error the failing step recorded.
    #[cold]
    #[inline(never)]
    pub(crate) fn take_fault(&mut self) -> AtaError {
        // Every `Failed` is made by `fail`, which records the error first;
        // the status of a device that never answered stands in should that
        // not hold.
        self.fault
            .take()
            .unwrap_or(AtaError::NoController { status: 0xff })
    }

    fn flush_steps(&mut self) -> Step {
        let (command, ext) = match self.identity.flush {
            FlushCommand::CacheExt => (CMD_FLUSH_CACHE_EXT, true),
            FlushCommand::Cache => (CMD_FLUSH_CACHE, false),
            FlushCommand::NotNeeded => return Ok(()),
        };
        self.issue(command, 0, 0, ext)?;
        let status = self.wait_not_busy(Phase::Completion, self.limits.flush)?;
        self.check_status(command, 0, status)?;
        // Reading the Status register acknowledges the command.
        self.reg_read(STATUS);
        Ok(())
    }

    /// The sector count of a transfer of `len` bytes at `lba`, checked
    /// against the disk.
    fn check_range(&mut self, lba: u64, len: usize) -> Step<u64> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(self.fail(AtaError::NotWholeSectors { len }));
        }
        let count = (len / SECTOR_SIZE) as u64;
        let capacity = self.identity.sectors;
        match lba.checked_add(count) {
            Some(end) if end <= capacity => Ok(count),
            _ => Err(self.fail(AtaError::OutOfRange {
                lba,
                count,
                capacity,
            })),
        }
    }

    /// How many of `remaining` sectors at `lba` the next command moves, and
    /// whether it needs the 48-bit form: the 28-bit form while the whole
    /// command stays below sector 2^28.
    fn next_command(&self, lba: u64, remaining: u64) -> (u64, bool) {
        let chunk = remaining.min(MAX_SECTORS_28);
        if lba + chunk <= LBA28_SECTORS {
            (chunk, false)
        } else {
            // `check_range` keeps every sector within the disk, and a disk
            // reaching past 2^28 sectors has 48-bit addressing (`Identity`).
            (remaining.min(MAX_SECTORS_48), true)
        }
    }

    // Out of line, as every port access: a call costs nothing next to
    // the access itself, and the command sequences stay short.
    #[inline(never)]
    fn reg_read(&mut self, register: u16) -> u8 {
        self.ports.read8(self.channel.command_block + register)
    }

    #[inline(never)]
    fn reg_write(&mut self, register: u16, value: u8) {
        self.ports
            .write8(self.channel.command_block + register, value)
    }

    fn alt_status(&mut self) -> u8 {
        self.ports.read8(self.channel.control)
    }

    /// The 400 ns the device may take to show a valid status after a
    /// device selection or a command: four Alternate Status reads.
    #[inline(never)]
    fn settle(&mut self) {
        for _ in 0..4 {
            self.alt_status();
        }
    }

    /// Polls Alternate Status until BSY clears, at most `limit` times.
    #[inline(never)]
    fn wait_not_busy(&mut self, phase: Phase, limit: u32) -> Step<u8> {
        let mut status = STATUS_BSY;
        for _ in 0..limit {
            status = self.alt_status();
            if status & STATUS_BSY == 0 {
                return Ok(status);
            }
        }
        Err(self.fail(AtaError::Timeout {
            phase,
            status,
            polls: limit,
        }))
    }

    /// Fails if `status` (BSY clear) reports an error or a device fault.
    #[inline(never)]
    fn check_status(&mut self, command: u8, lba: u64, status: u8) -> Step {
        if status & STATUS_ERR != 0 {
            let error = ErrorBits(self.reg_read(ERROR));
            return Err(self.fail(AtaError::CommandFailed {
                command,
                lba,
                status,
                error,
            }));
        }
        if status & STATUS_DF != 0 {
            return Err(self.fail(AtaError::DeviceFault {
                command,
                lba,
                status,
            }));
        }
        Ok(())
    }

    /// Selects the device with `device_bits` and sends `command` for
    /// `count` sectors at `lba` (the 48-bit form when `ext`).
    fn issue(&mut self, command: u8, lba: u64, count: u64, ext: bool) -> Step {
        let high_nibble = if ext { 0 } else { ((lba >> 24) & 0x0f) as u8 };
        let device = DEVICE_OBSOLETE | DEVICE_LBA | self.drive.select_bit() | high_nibble;
        self.wait_not_busy(Phase::Select, self.limits.transfer)?;
        self.reg_write(DEVICE, device);
        self.settle();
        self.wait_not_busy(Phase::Select, self.limits.transfer)?;
        if ext {
            // Previous-content (high-order) bytes first, then the current.
            self.reg_write(SECTOR_COUNT, (count >> 8) as u8);
            self.reg_write(LBA_LOW, (lba >> 24) as u8);
            self.reg_write(LBA_MID, (lba >> 32) as u8);
            self.reg_write(LBA_HIGH, (lba >> 40) as u8);
        }
        // A count of 256 (28-bit) or 65536 (48-bit) is written as 0.
        self.reg_write(SECTOR_COUNT, count as u8);
        self.reg_write(LBA_LOW, lba as u8);
        self.reg_write(LBA_MID, (lba >> 8) as u8);
        self.reg_write(LBA_HIGH, (lba >> 16) as u8);
        self.reg_write(STATUS, command);
        self.settle();
        Ok(())
    }

    /// Waits for the device to request the sector at `lba`.
    fn wait_data_request(&mut self, command: u8, lba: u64) -> Step {
        let status = self.wait_not_busy(Phase::DataRequest, self.limits.transfer)?;
        self.check_status(command, lba, status)?;
        if status & STATUS_DRQ == 0 {
            return Err(self.fail(AtaError::NoDataRequest {
                command,
                lba,
                status,
            }));
        }
        Ok(())
    }

    /// Waits for the end of a data command and acknowledges it.
    fn complete(&mut self, command: u8, lba: u64) -> Step {
        let status = self.wait_not_busy(Phase::Completion, self.limits.transfer)?;
        self.check_status(command, lba, status)?;
        self.acknowledge(command)
    }

    /// Reads the Status register (acknowledging the command), which must no
    /// longer request data.
    fn acknowledge(&mut self, command: u8) -> Step {
        let status = self.reg_read(STATUS);
        if status & STATUS_DRQ != 0 {
            return Err(self.fail(AtaError::DataLeftOver { command, status }));
        }
        Ok(())
    }

    /// Moves the whole sectors of `data` starting at `lba`, in as few
    /// commands as the addressing allows. Reads and writes share the
    /// command sequence; they differ in when the device requests data:
    /// before every sector of a read, before the first sector of a write
    /// and after each one it took.
    fn transfer(&mut self, lba: u64, mut data: Transfer<'_>) -> Step {
        let count = self.check_range(lba, data.len())?;
        let write = matches!(data, Transfer::Write(_));
        let port = self.channel.command_block + DATA;
        let mut words = [0u16; SECTOR_WORDS];
        let mut done = 0;
        while done < count {
            let (chunk, ext) = self.next_command(lba + done, count - done);
            let command = match (write, ext) {
                (false, false) => CMD_READ_SECTORS,
                (false, true) => CMD_READ_SECTORS_EXT,
                (true, false) => CMD_WRITE_SECTORS,
                (true, true) => CMD_WRITE_SECTORS_EXT,
            };
            let first = lba + done;
            self.issue(command, first, chunk, ext)?;
            if write {
                self.wait_data_request(command, first)?;
            }
            for index in 0..chunk {
                let sector_lba = first + index;
                // `check_range` made the buffer whole sectors, `count` of them.
                match data.take_front(SECTOR_SIZE) {
                    Transfer::Read(sector) => {
                        self.wait_data_request(command, sector_lba)?;
                        self.ports.read16_block(port, &mut words);
                        for (pair, word) in sector.chunks_exact_mut(2).zip(&words) {
                            pair.copy_from_slice(&word.to_le_bytes());
                        }
                    }
                    Transfer::Write(sector) => {
                        for (word, pair) in words.iter_mut().zip(sector.chunks_exact(2)) {
                            *word = u16::from_le_bytes([pair[0], pair[1]]);
                        }
                        self.ports.write16_block(port, &words);
                        // The device reports on a sector after taking its
                        // data: an error now is about this sector.
                        let status = self.wait_not_busy(Phase::Completion, self.limits.transfer)?;
                        self.check_status(command, sector_lba, status)?;
                        if index + 1 < chunk && status & STATUS_DRQ == 0 {
                            return Err(self.fail(AtaError::NoDataRequest {
                                command,
                                lba: sector_lba + 1,
                                status,
                            }));
                        }
                    }
                }
            }
            if write {
                self.acknowledge(command)?;
            } else {
                self.complete(command, first + chunk)?;
            }
            done += chunk;
        }
        Ok(())
    }

    /// Disables interrupts, checks that something answers, sends IDENTIFY
    /// DEVICE and reads its data.
    fn identify(&mut self) -> Step<Identity> {
        let control = self.channel.control;
        self.ports.write8(control, CONTROL_NIEN);
        self.reg_write(DEVICE, DEVICE_OBSOLETE | self.drive.select_bit());
        self.settle();
        let status = self.reg_read(STATUS);
        if status == 0xff {
            return Err(self.fail(AtaError::NoController { status }));
        }
        self.wait_not_busy(Phase::Select, self.limits.transfer)?;
        for register in [SECTOR_COUNT, LBA_LOW, LBA_MID, LBA_HIGH] {
            self.reg_write(register, 0);
        }
        self.reg_write(STATUS, CMD_IDENTIFY);
        self.settle();
        let status = self.reg_read(STATUS);
        if status == 0 {
            return Err(self.fail(AtaError::NoDevice { status }));
        }
        let status = self.wait_not_busy(Phase::DataRequest, self.limits.transfer)?;
        if status & STATUS_ERR != 0
            && (self.reg_read(LBA_MID), self.reg_read(LBA_HIGH)) == PACKET_SIGNATURE
        {
            return Err(self.fail(AtaError::PacketDevice));
        }
        self.wait_data_request(CMD_IDENTIFY, 0)?;
        let mut words = [0u16; SECTOR_WORDS];
        self.ports
            .read16_block(self.channel.command_block + DATA, &mut words);
        self.complete(CMD_IDENTIFY, 0)?;
        Identity::parse(&words).map_err(|e| self.fail(e))
    }
}
