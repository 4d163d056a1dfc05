//! A model of an IDE channel's register interface for the tests, written
//! from ATA/ATAPI-6 (task file, HOB bytes of 48-bit commands, PIO data-in
//! and data-out protocols, status and error bits) rather than from the
//! driver. It records each command as it decoded it from the registers and
//! every access that breaks the protocol.

use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

use crate::registers::*;
use crate::{Channel, PortAccess};

/// A command as the device decoded it from the task file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issued {
    pub command: u8,
    pub lba: u64,
    pub count: u64,
    pub device: u8,
}

/// What kind of device sits at a position.
#[derive(Clone, Debug)]
pub enum Kind {
    Disk,
    Packet,
}

/// One device on the channel.
#[derive(Clone, Debug)]
pub struct FakeDevice {
    pub kind: Kind,
    pub sectors: u64,
    pub identify: [u16; 256],
    pub data: BTreeMap<u64, [u8; 512]>,
    /// A read reaching this sector fails with UNC.
    pub unreadable: Option<u64>,
    /// A write reaching this sector fails with a device fault.
    pub write_fault: Option<u64>,
    /// FLUSH commands received.
    pub flushes: u32,
}

/// IDENTIFY words of a disk as ATA/ATAPI-6 lays them out.
pub fn identify_words(sectors: u64, lba48: bool, model: &str) -> [u16; 256] {
    let mut w = [0u16; 256];
    w[0] = 0x0040;
    w[49] = 1 << 9;
    let lba28 = sectors.min(0x0fff_ffff);
    w[60] = lba28 as u16;
    w[61] = (lba28 >> 16) as u16;
    let ext = if lba48 { (1 << 13) | (1 << 10) } else { 0 };
    w[83] = 0x4000 | (1 << 12) | ext;
    // Word 86 as QEMU fills it: no validity bits of its own (word 87 has them).
    w[86] = (1 << 12) | ext;
    w[85] = 0x4000 | (1 << 5);
    w[87] = 0x4000;
    if lba48 {
        for i in 0..4 {
            w[100 + i] = (sectors >> (16 * i)) as u16;
        }
    }
    let mut padded = [b' '; 40];
    padded[..model.len()].copy_from_slice(model.as_bytes());
    for i in 0..20 {
        w[27 + i] = u16::from(padded[2 * i]) << 8 | u16::from(padded[2 * i + 1]);
    }
    let serial = b"FAKE0001            ";
    for i in 0..10 {
        w[10 + i] = u16::from(serial[2 * i]) << 8 | u16::from(serial[2 * i + 1]);
    }
    w
}

impl FakeDevice {
    pub fn disk(sectors: u64, lba48: bool) -> Self {
        FakeDevice {
            kind: Kind::Disk,
            sectors,
            identify: identify_words(sectors, lba48, "PONTE FAKE DISK"),
            data: BTreeMap::new(),
            unreadable: None,
            write_fault: None,
            flushes: 0,
        }
    }

    pub fn packet() -> Self {
        FakeDevice {
            kind: Kind::Packet,
            ..FakeDevice::disk(0, false)
        }
    }

    pub fn sector(&self, lba: u64) -> [u8; 512] {
        self.data.get(&lba).copied().unwrap_or([0; 512])
    }

    fn lba48(&self) -> bool {
        self.identify[83] & (1 << 10) != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Transfer {
    Idle,
    /// Sending sectors to the host: the current one in `buffer`.
    DataIn {
        command: u8,
        lba: u64,
        remaining: u64,
        buffer: Vec<u16>,
        index: usize,
    },
    /// Receiving sectors from the host.
    DataOut {
        command: u8,
        lba: u64,
        remaining: u64,
        buffer: Vec<u16>,
    },
}

/// An IDE channel with up to two devices.
pub struct FakeChannel {
    pub channel: Channel,
    /// No controller at all: every read returns 0xFF.
    pub floating: bool,
    pub devices: [Option<FakeDevice>; 2],
    /// Status reads that show BSY after each command and sector.
    pub busy_reads: u32,
    /// The device never leaves BSY once a command is written.
    pub stuck_busy: bool,
    pub issued: Vec<Issued>,
    pub violations: Vec<String>,
    pub control_writes: Vec<u8>,
    pub alt_status_reads: u64,
    // Task file: current and previous (HOB) bytes.
    count: [u8; 2],
    low: [u8; 2],
    mid: [u8; 2],
    high: [u8; 2],
    device: u8,
    error: u8,
    err: bool,
    fault: bool,
    busy_left: u32,
    stuck: bool,
    transfer: Transfer,
}

impl FakeChannel {
    pub fn new(channel: Channel, master: Option<FakeDevice>, slave: Option<FakeDevice>) -> Self {
        FakeChannel {
            channel,
            floating: false,
            devices: [master, slave],
            busy_reads: 3,
            stuck_busy: false,
            issued: Vec::new(),
            violations: Vec::new(),
            control_writes: Vec::new(),
            alt_status_reads: 0,
            count: [0; 2],
            low: [0; 2],
            mid: [0; 2],
            high: [0; 2],
            device: 0,
            error: 0,
            err: false,
            fault: false,
            busy_left: 0,
            stuck: false,
            transfer: Transfer::Idle,
        }
    }

    fn selected(&self) -> usize {
        usize::from(self.device & DEVICE_DEV1 != 0)
    }

    fn present(&self) -> bool {
        self.devices[self.selected()].is_some()
    }

    fn status(&mut self) -> u8 {
        if !self.present() {
            return 0;
        }
        if self.stuck || self.busy_left > 0 {
            self.busy_left = self.busy_left.saturating_sub(1);
            return STATUS_BSY;
        }
        let mut s = STATUS_DRDY;
        if self.err {
            s |= STATUS_ERR;
        }
        if self.fault {
            s |= STATUS_DF;
        }
        if self.transfer != Transfer::Idle {
            s |= STATUS_DRQ;
        }
        s
    }

    fn busy(&mut self) {
        self.busy_left = self.busy_reads;
        if self.stuck_busy {
            self.stuck = true;
        }
    }

    fn fail(&mut self, error: u8) {
        self.err = true;
        self.error = error;
        self.transfer = Transfer::Idle;
    }

    fn push(reg: &mut [u8; 2], value: u8) {
        reg[1] = reg[0];
        reg[0] = value;
    }

    fn decode(&self, ext: bool) -> (u64, u64) {
        if ext {
            let lba = u64::from(self.high[1]) << 40
                | u64::from(self.mid[1]) << 32
                | u64::from(self.low[1]) << 24
                | u64::from(self.high[0]) << 16
                | u64::from(self.mid[0]) << 8
                | u64::from(self.low[0]);
            let count = u64::from(self.count[1]) << 8 | u64::from(self.count[0]);
            (lba, if count == 0 { 65536 } else { count })
        } else {
            let lba = u64::from(self.device & 0x0f) << 24
                | u64::from(self.high[0]) << 16
                | u64::from(self.mid[0]) << 8
                | u64::from(self.low[0]);
            let count = u64::from(self.count[0]);
            (lba, if count == 0 { 256 } else { count })
        }
    }

    fn sector_words(bytes: &[u8; 512]) -> Vec<u16> {
        bytes
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect()
    }

    /// Loads sector `lba` for the host, or fails the command.
    fn load(&mut self, command: u8, lba: u64, remaining: u64) {
        let dev = self.devices[self.selected()].as_ref().expect("present");
        if dev.unreadable == Some(lba) {
            // The address of the failing sector is left in the task file.
            self.low[0] = lba as u8;
            self.fail(0x40);
            return;
        }
        let buffer = Self::sector_words(&dev.sector(lba));
        self.transfer = Transfer::DataIn {
            command,
            lba,
            remaining,
            buffer,
            index: 0,
        };
    }

    fn command(&mut self, command: u8) {
        if !self.present() {
            return;
        }
        if self.busy_left > 0 || self.stuck {
            self.violations
                .push(format!("command {command:#x} written while BSY"));
        }
        if self.transfer != Transfer::Idle {
            self.violations
                .push(format!("command {command:#x} written during a transfer"));
        }
        self.err = false;
        self.fault = false;
        self.error = 0;
        self.transfer = Transfer::Idle;
        let ext = matches!(
            command,
            CMD_READ_SECTORS_EXT | CMD_WRITE_SECTORS_EXT | CMD_FLUSH_CACHE_EXT
        );
        let (lba, count) = self.decode(ext);
        self.issued.push(Issued {
            command,
            lba,
            count,
            device: self.device,
        });
        self.busy();
        let index = self.selected();
        let dev = self.devices[index].as_mut().expect("present");
        if matches!(dev.kind, Kind::Packet) {
            // ATAPI devices abort IDENTIFY DEVICE and show their signature.
            self.mid[0] = PACKET_SIGNATURE.0;
            self.high[0] = PACKET_SIGNATURE.1;
            self.fail(0x04);
            return;
        }
        let lba48 = dev.lba48();
        let sectors = dev.sectors;
        match command {
            CMD_IDENTIFY => {
                let buffer = dev.identify.to_vec();
                self.transfer = Transfer::DataIn {
                    command,
                    lba: 0,
                    remaining: 1,
                    buffer,
                    index: 0,
                };
            }
            CMD_FLUSH_CACHE | CMD_FLUSH_CACHE_EXT => {
                if ext && !lba48 {
                    self.fail(0x04);
                } else {
                    dev.flushes += 1;
                }
            }
            CMD_READ_SECTORS | CMD_READ_SECTORS_EXT | CMD_WRITE_SECTORS | CMD_WRITE_SECTORS_EXT => {
                if ext && !lba48 {
                    self.fail(0x04);
                } else if self.device & DEVICE_LBA == 0 {
                    self.violations
                        .push(format!("command {command:#x} in CHS mode"));
                    self.fail(0x04);
                } else if lba + count > sectors {
                    self.fail(0x10);
                } else if matches!(command, CMD_READ_SECTORS | CMD_READ_SECTORS_EXT) {
                    self.load(command, lba, count);
                } else {
                    self.transfer = Transfer::DataOut {
                        command,
                        lba,
                        remaining: count,
                        buffer: Vec::new(),
                    };
                }
            }
            other => {
                self.violations.push(format!("unknown command {other:#x}"));
                self.fail(0x04);
            }
        }
    }

    fn data_read(&mut self) -> u16 {
        if self.busy_left > 0 {
            self.violations.push("data read while BSY".into());
            return 0;
        }
        let Transfer::DataIn {
            command,
            lba,
            remaining,
            buffer,
            index,
        } = &mut self.transfer
        else {
            self.violations.push("data read without DRQ".into());
            return 0;
        };
        let word = buffer[*index];
        *index += 1;
        if *index == buffer.len() {
            let (command, next, remaining) = (*command, *lba + 1, *remaining - 1);
            self.transfer = Transfer::Idle;
            if remaining > 0 {
                self.busy();
                self.load(command, next, remaining);
            }
        }
        word
    }

    fn data_write(&mut self, word: u16) {
        if self.busy_left > 0 {
            self.violations.push("data write while BSY".into());
            return;
        }
        let Transfer::DataOut {
            command,
            lba,
            remaining,
            buffer,
        } = &mut self.transfer
        else {
            self.violations.push("data write without DRQ".into());
            return;
        };
        buffer.push(word);
        if buffer.len() < 256 {
            return;
        }
        let (command, lba, remaining) = (*command, *lba, *remaining);
        let mut bytes = [0u8; 512];
        for (pair, w) in bytes.chunks_exact_mut(2).zip(buffer.iter()) {
            pair.copy_from_slice(&w.to_le_bytes());
        }
        let index = self.selected();
        self.busy();
        let dev = self.devices[index].as_mut().expect("present");
        if dev.write_fault == Some(lba) {
            self.fault = true;
            self.err = true;
            self.error = 0x04;
            self.transfer = Transfer::Idle;
            return;
        }
        dev.data.insert(lba, bytes);
        self.transfer = if remaining > 1 {
            Transfer::DataOut {
                command,
                lba: lba + 1,
                remaining: remaining - 1,
                buffer: Vec::new(),
            }
        } else {
            Transfer::Idle
        };
    }

    fn offset(&self, port: u16) -> Option<u16> {
        port.checked_sub(self.channel.command_block)
            .filter(|&o| o < 8)
    }
}

impl PortAccess for FakeChannel {
    fn read8(&mut self, port: u16) -> u8 {
        if self.floating {
            return 0xff;
        }
        if port == self.channel.control {
            self.alt_status_reads += 1;
            return self.status();
        }
        match self.offset(port) {
            Some(ERROR) => self.error,
            Some(SECTOR_COUNT) => self.count[0],
            Some(LBA_LOW) => self.low[0],
            Some(LBA_MID) => self.mid[0],
            Some(LBA_HIGH) => self.high[0],
            Some(DEVICE) => self.device,
            Some(STATUS) => self.status(),
            _ => {
                self.violations.push(format!("byte read of port {port:#x}"));
                0xff
            }
        }
    }

    fn write8(&mut self, port: u16, value: u8) {
        if self.floating {
            return;
        }
        if port == self.channel.control {
            self.control_writes.push(value);
            return;
        }
        match self.offset(port) {
            Some(ERROR) => {}
            Some(SECTOR_COUNT) => Self::push(&mut self.count, value),
            Some(LBA_LOW) => Self::push(&mut self.low, value),
            Some(LBA_MID) => Self::push(&mut self.mid, value),
            Some(LBA_HIGH) => Self::push(&mut self.high, value),
            Some(DEVICE) => {
                if self.busy_left > 0 || self.transfer != Transfer::Idle {
                    self.violations
                        .push("device register written while BSY or DRQ".into());
                }
                self.device = value;
            }
            Some(STATUS) => self.command(value),
            _ => self
                .violations
                .push(format!("byte write of port {port:#x}")),
        }
    }

    fn read16(&mut self, port: u16) -> u16 {
        if self.floating {
            return 0xffff;
        }
        if self.offset(port) == Some(DATA) {
            self.data_read()
        } else {
            self.violations.push(format!("word read of port {port:#x}"));
            0xffff
        }
    }

    fn write16(&mut self, port: u16, value: u16) {
        if self.floating {
            return;
        }
        if self.offset(port) == Some(DATA) {
            self.data_write(value)
        } else {
            self.violations
                .push(format!("word write of port {port:#x}"));
        }
    }
}

/// A fake channel with one disk as master on the primary ports.
pub fn primary_disk(sectors: u64, lba48: bool) -> FakeChannel {
    FakeChannel::new(
        Channel::PRIMARY,
        Some(FakeDevice::disk(sectors, lba48)),
        None,
    )
}

/// Sector contents that name their own address.
pub fn pattern(lba: u64) -> [u8; 512] {
    let mut s = [0u8; 512];
    for (i, chunk) in s.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&(lba * 64 + i as u64).to_le_bytes());
    }
    s
}

/// `n` sectors of [`pattern`] from `lba`.
pub fn patterns(lba: u64, n: u64) -> Vec<u8> {
    let mut v = vec![];
    for i in 0..n {
        v.extend_from_slice(&pattern(lba + i));
    }
    v
}
