//! ata-basics: drives the IDE disk attached as the primary channel's slave
//! (`cargo xtask run ata-basics --disk FILE`) with ponte-ata.
//!
//! Each run checks what the previous run left (a header naming generation
//! n, 300 pattern sectors written by two commands, the disk's last sector
//! and a record written through the byte interface), writes generation
//! n+1 the same way, flushes, reads it back and passes. A second run over
//! the same file proves that the writes reached the image. On disks past
//! 2^28 sectors a 48-bit write and read are checked too.
#![no_std]
#![no_main]

use core::fmt::Write as _;

use ponte_arch::{
    boot::{finish, BootInfo, Outcome},
    memory::HostMemory,
    port::IdeChannelPorts,
    println,
};
use ponte_ata::{AtaDisk, Channel, Drive, LBA28_SECTORS, SECTOR_SIZE};
use ponte_vhd::BlockDevice;

ponte_arch::entry!(main);

/// Sectors written as one run (a 256-sector command and a 44-sector one).
const RUN_SECTORS: u64 = 300;
/// Byte offset of the record written through the byte interface.
const RECORD_AT: u64 = 600 * 512 + 100;
const HEADER: &str = "PONTE-ATA-CHECK ";

/// Sector `lba`'s contents in generation `generation`.
fn pattern(lba: u64, generation: u64, sector: &mut [u8]) {
    for (i, chunk) in sector.chunks_exact_mut(8).enumerate() {
        let value = (lba * 64 + i as u64) ^ (generation << 48);
        chunk.copy_from_slice(&value.to_le_bytes());
    }
}

/// A small formatting buffer.
struct Text {
    bytes: [u8; 64],
    len: usize,
}

impl Text {
    fn new() -> Self {
        Text {
            bytes: [0; 64],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl core::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(core::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    finish(Outcome::Fail, what)
}

fn main(_boot: BootInfo, mut memory: HostMemory) -> ! {
    let Some(ports) =
        IdeChannelPorts::new(Channel::PRIMARY.command_block, Channel::PRIMARY.control)
    else {
        fail(format_args!("not running at CPL 0"));
    };
    let mut disk = match AtaDisk::open(ports, Channel::PRIMARY, Drive::Slave) {
        Ok(disk) => disk,
        Err(e) => fail(format_args!("primary slave: {e}")),
    };
    let id = *disk.identity();
    println!(
        "ata: {:?}, serial {:?}, {} sectors, lba48 {}, flush {:?}",
        id.model(),
        id.serial(),
        id.sectors,
        id.lba48,
        id.flush
    );
    let last = id.sectors - 1;
    if last <= RUN_SECTORS || RECORD_AT + 64 > last * 512 {
        fail(format_args!("disk of {} sectors is too small", id.sectors));
    }
    let Ok(run) = memory.bytes(RUN_SECTORS as usize * SECTOR_SIZE) else {
        fail(format_args!("no memory for the transfer buffer"));
    };
    let mut expected = [0u8; SECTOR_SIZE];
    let check = |r: Result<(), ponte_ata::AtaError>| {
        if let Err(e) = r {
            fail(format_args!("{e}"))
        }
    };

    // What the previous run left.
    let mut header = [0u8; SECTOR_SIZE];
    check(disk.read_sectors(0, &mut header));
    let generation = if header.iter().all(|&b| b == 0) {
        0
    } else {
        let text = core::str::from_utf8(&header[..32]).unwrap_or("");
        let number = text
            .strip_prefix(HEADER)
            .and_then(|t| t.split('\n').next())
            .and_then(|n| n.parse::<u64>().ok());
        match number {
            Some(n) => n,
            None => fail(format_args!("sector 0 holds neither zeros nor a header")),
        }
    };
    println!("ata: found generation {generation}");
    let mut verify = |disk: &mut AtaDisk<IdeChannelPorts>, run: &mut [u8], g: u64| {
        check(disk.read_sectors(1, run));
        for (i, sector) in run.chunks_exact(SECTOR_SIZE).enumerate() {
            pattern(1 + i as u64, g, &mut expected);
            if sector != expected {
                fail(format_args!("sector {} differs from generation {g}", 1 + i));
            }
        }
        let mut sector = [0u8; SECTOR_SIZE];
        check(disk.read_sectors(last, &mut sector));
        pattern(last, g, &mut expected);
        if sector != expected {
            fail(format_args!(
                "last sector {last} differs from generation {g}"
            ));
        }
        let mut record = Text::new();
        let _ = write!(record, "record of generation {g}");
        let mut back = [0u8; 64];
        let back = &mut back[..record.len];
        if let Err(e) = disk.read_at(RECORD_AT, back) {
            fail(format_args!("record: {e:?}"));
        }
        if back != record.as_bytes() {
            fail(format_args!("the record differs from generation {g}"));
        }
    };
    if generation > 0 {
        verify(&mut disk, run, generation);
        println!("ata: generation {generation} verified");
    }

    // The next generation: sectors, then the byte record, flush, header.
    let next = generation + 1;
    for (i, sector) in run.chunks_exact_mut(SECTOR_SIZE).enumerate() {
        pattern(1 + i as u64, next, sector);
    }
    check(disk.write_sectors(1, run));
    let mut sector = [0u8; SECTOR_SIZE];
    pattern(last, next, &mut sector);
    check(disk.write_sectors(last, &sector));
    let mut record = Text::new();
    let _ = write!(record, "record of generation {next}");
    if let Err(e) = disk.write_at(RECORD_AT, record.as_bytes()) {
        fail(format_args!("record: {e:?}"));
    }
    let mut header = Text::new();
    let _ = writeln!(header, "{HEADER}{next}");
    let mut header_sector = [0u8; SECTOR_SIZE];
    header_sector[..header.len].copy_from_slice(header.as_bytes());
    check(disk.flush_cache());
    check(disk.write_sectors(0, &header_sector));
    check(disk.flush_cache());
    verify(&mut disk, run, next);
    println!("ata: generation {next} written, flushed and read back");

    if id.sectors > LBA28_SECTORS + 8 {
        let lba = LBA28_SECTORS + 5;
        pattern(lba, next, &mut sector);
        check(disk.write_sectors(lba, &sector));
        let mut back = [0u8; SECTOR_SIZE];
        check(disk.read_sectors(lba, &mut back));
        if back != sector {
            fail(format_args!("48-bit sector {lba} did not read back"));
        }
        println!("ata: 48-bit sector {lba} written and read back");
    }
    finish(
        Outcome::Pass,
        format_args!("ATA disk: generation {generation} -> {next}"),
    )
}
