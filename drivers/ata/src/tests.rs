//! Protocol tests against the register model in `fake`.

use std::vec;
use std::vec::Vec;

use ponte_vhd::{BlockDevice, IoError};

use crate::fake::{identify_words, pattern, patterns, primary_disk, FakeChannel, FakeDevice};
use crate::registers::*;
use crate::*;

fn open(fake: FakeChannel, drive: Drive) -> AtaDisk<FakeChannel> {
    AtaDisk::open(fake, Channel::PRIMARY, drive).unwrap()
}

fn no_violations(disk: AtaDisk<FakeChannel>) -> FakeChannel {
    let fake = disk.into_ports();
    assert!(fake.violations.is_empty(), "{:?}", fake.violations);
    fake
}

fn device(fake: &FakeChannel, index: usize) -> &FakeDevice {
    fake.devices[index].as_ref().unwrap()
}

#[test]
fn identify_reports_capacity_model_and_the_flush_command() {
    let disk = open(primary_disk(20_000, true), Drive::Master);
    let id = *disk.identity();
    assert_eq!(id.sectors, 20_000);
    assert!(id.lba48);
    assert_eq!(id.flush, FlushCommand::CacheExt);
    assert_eq!(id.model(), "PONTE FAKE DISK");
    assert_eq!(id.serial(), "FAKE0001");
    let fake = no_violations(disk);
    assert_eq!(fake.issued.len(), 1);
    assert_eq!(fake.issued[0].command, CMD_IDENTIFY);
    // Interrupts were disabled before anything else.
    assert_eq!(fake.control_writes, [CONTROL_NIEN]);
}

#[test]
fn reads_and_writes_below_2_pow_28_use_28_bit_commands() {
    let mut disk = open(primary_disk(1 << 20, true), Drive::Master);
    let data = patterns(0x0a_bcde, 3);
    disk.write_sectors(0x0a_bcde, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    disk.read_sectors(0x0a_bcde, &mut back).unwrap();
    assert_eq!(back, data);
    let fake = no_violations(disk);
    let cmds: Vec<_> = fake.issued[1..]
        .iter()
        .map(|i| (i.command, i.lba, i.count))
        .collect();
    assert_eq!(
        cmds,
        [
            (CMD_WRITE_SECTORS, 0x0a_bcde, 3),
            (CMD_READ_SECTORS, 0x0a_bcde, 3)
        ]
    );
    // LBA mode, device 0, bits 27:24 of the address in the device register.
    assert_eq!(fake.issued[1].device & 0x5f, DEVICE_LBA);
    for i in 0..3 {
        assert_eq!(
            device(&fake, 0).sector(0x0a_bcde + i),
            pattern(0x0a_bcde + i)
        );
    }
}

#[test]
fn the_top_nibble_of_a_28_bit_address_goes_in_the_device_register() {
    let lba = 0x0fff_fffe;
    let mut disk = open(primary_disk(1 << 29, true), Drive::Master);
    disk.write_sectors(lba, &patterns(lba, 2)).unwrap();
    let fake = no_violations(disk);
    let w = fake.issued[1];
    assert_eq!((w.command, w.lba, w.count), (CMD_WRITE_SECTORS, lba, 2));
    assert_eq!(w.device & 0x0f, 0x0f);
}

#[test]
fn addresses_past_2_pow_28_use_48_bit_commands_with_hob_bytes() {
    let lba = 0x12_3456_789a;
    let mut disk = open(primary_disk(1 << 41, true), Drive::Master);
    let data = patterns(lba, 2);
    disk.write_sectors(lba, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    disk.read_sectors(lba, &mut back).unwrap();
    assert_eq!(back, data);
    let fake = no_violations(disk);
    let cmds: Vec<_> = fake.issued[1..]
        .iter()
        .map(|i| (i.command, i.lba, i.count))
        .collect();
    assert_eq!(
        cmds,
        [
            (CMD_WRITE_SECTORS_EXT, lba, 2),
            (CMD_READ_SECTORS_EXT, lba, 2)
        ]
    );
    // A command crossing sector 2^28 cannot use the 28-bit form.
    let mut disk = open(primary_disk(1 << 29, true), Drive::Master);
    let start = (1 << 28) - 1;
    disk.write_sectors(start, &patterns(start, 2)).unwrap();
    let fake = no_violations(disk);
    assert_eq!(
        (fake.issued[1].command, fake.issued[1].lba),
        (CMD_WRITE_SECTORS_EXT, start)
    );
}

#[test]
fn long_transfers_are_split_at_the_command_limits() {
    // 600 sectors below 2^28: 256 + 256 + 88, counts of 256 written as 0.
    let mut disk = open(primary_disk(4096, true), Drive::Master);
    let data = patterns(10, 600);
    disk.write_sectors(10, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    disk.read_sectors(10, &mut back).unwrap();
    assert_eq!(back, data);
    let fake = no_violations(disk);
    let writes: Vec<_> = fake.issued[1..4].iter().map(|i| (i.lba, i.count)).collect();
    assert_eq!(writes, [(10, 256), (266, 256), (522, 88)]);
    // 70000 sectors past 2^28: 65536 + 4464 with 48-bit commands.
    let lba = 1 << 30;
    let mut disk = open(primary_disk(1 << 31, true), Drive::Master);
    let mut big = vec![0u8; 70_000 * SECTOR_SIZE];
    disk.read_sectors(lba, &mut big).unwrap();
    let fake = no_violations(disk);
    let reads: Vec<_> = fake.issued[1..]
        .iter()
        .map(|i| (i.command, i.lba, i.count))
        .collect();
    assert_eq!(
        reads,
        [
            (CMD_READ_SECTORS_EXT, lba, 65536),
            (CMD_READ_SECTORS_EXT, lba + 65536, 4464)
        ]
    );
}

#[test]
fn a_disk_without_48_bit_addressing_is_limited_to_28_bits_and_flushes_with_flush_cache() {
    let mut disk = open(primary_disk(1 << 28, false), Drive::Master);
    assert!(!disk.identity().lba48);
    assert_eq!(
        disk.sectors(),
        0x0fff_ffff,
        "words 60-61 stop at 0x0FFFFFFF"
    );
    assert_eq!(disk.identity().flush, FlushCommand::Cache);
    let last = 0x0fff_fffe;
    disk.write_sectors(last, &pattern(last)).unwrap();
    assert_eq!(
        disk.write_sectors(last + 1, &pattern(0)),
        Err(AtaError::OutOfRange {
            lba: last + 1,
            count: 1,
            capacity: 0x0fff_ffff
        })
    );
    disk.flush_cache().unwrap();
    let fake = no_violations(disk);
    assert_eq!(fake.issued.last().unwrap().command, CMD_FLUSH_CACHE);
    assert_eq!(device(&fake, 0).flushes, 1);
}

#[test]
fn flush_uses_flush_cache_ext_when_48_bit_addressing_is_on() {
    let mut disk = open(primary_disk(100, true), Drive::Master);
    disk.flush_cache().unwrap();
    let fake = no_violations(disk);
    assert_eq!(fake.issued.last().unwrap().command, CMD_FLUSH_CACHE_EXT);
    assert_eq!(device(&fake, 0).flushes, 1);
}

#[test]
fn the_slave_is_selected_by_the_dev_bit_on_the_secondary_channel() {
    let fake = FakeChannel::new(
        Channel::SECONDARY,
        Some(FakeDevice::disk(10, false)),
        Some(FakeDevice::disk(64, true)),
    );
    let mut disk = AtaDisk::open(fake, Channel::SECONDARY, Drive::Slave).unwrap();
    assert_eq!(disk.sectors(), 64);
    disk.write_sectors(5, &pattern(5)).unwrap();
    let fake = no_violations(disk);
    assert!(fake.issued.iter().all(|i| i.device & DEVICE_DEV1 != 0));
    assert_eq!(device(&fake, 1).sector(5), pattern(5));
    assert!(device(&fake, 0).data.is_empty());
}

#[test]
fn missing_controllers_devices_and_packet_devices_are_named() {
    let mut floating = primary_disk(10, true);
    floating.floating = true;
    assert_eq!(
        AtaDisk::open(floating, Channel::PRIMARY, Drive::Master).err(),
        Some(AtaError::NoController { status: 0xff })
    );
    assert_eq!(
        AtaDisk::open(primary_disk(10, true), Channel::PRIMARY, Drive::Slave).err(),
        Some(AtaError::NoDevice { status: 0 })
    );
    let cd = FakeChannel::new(Channel::PRIMARY, Some(FakeDevice::packet()), None);
    assert_eq!(
        AtaDisk::open(cd, Channel::PRIMARY, Drive::Master).err(),
        Some(AtaError::PacketDevice)
    );
}

#[test]
fn a_device_stuck_busy_times_out_after_the_poll_limit() {
    let mut fake = primary_disk(10, true);
    fake.stuck_busy = true;
    let limits = PollLimits {
        transfer: 500,
        flush: 1000,
    };
    let err = AtaDisk::open_with(fake, Channel::PRIMARY, Drive::Master, limits).err();
    assert_eq!(
        err,
        Some(AtaError::Timeout {
            phase: Phase::DataRequest,
            status: STATUS_BSY,
            polls: 500
        })
    );
}

#[test]
fn busy_periods_are_waited_out_on_the_alternate_status_register() {
    let mut fake = primary_disk(100, true);
    fake.busy_reads = 40;
    let mut disk = open(fake, Drive::Master);
    let mut buf = [0u8; 1024];
    disk.read_sectors(3, &mut buf).unwrap();
    let fake = no_violations(disk);
    // Identify, then the read: each waits at least 40 reads per BSY period.
    assert!(fake.alt_status_reads >= 3 * 40, "{}", fake.alt_status_reads);
}

#[test]
fn an_unreadable_sector_fails_with_its_address_and_error_bits() {
    let mut fake = primary_disk(100, true);
    fake.devices[0].as_mut().unwrap().unreadable = Some(12);
    let mut disk = open(fake, Drive::Master);
    let mut buf = [0u8; 8 * 512];
    let err = disk.read_sectors(10, &mut buf).unwrap_err();
    let AtaError::CommandFailed {
        command,
        lba,
        status,
        error,
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((command, lba), (CMD_READ_SECTORS, 12));
    assert!(status & STATUS_ERR != 0 && status & STATUS_DRQ == 0);
    assert!(error.uncorrectable());
    assert_eq!(error.name(), "uncorrectable data");
    // The sectors before it were delivered.
    assert_eq!(&buf[..512], &[0u8; 512]);
    // The disk still works afterwards.
    disk.read_sectors(13, &mut buf[..512]).unwrap();
    no_violations(disk);
}

#[test]
fn a_device_fault_during_a_write_is_reported() {
    let mut fake = primary_disk(100, true);
    fake.devices[0].as_mut().unwrap().write_fault = Some(7);
    let mut disk = open(fake, Drive::Master);
    let err = disk.write_sectors(6, &patterns(6, 3)).unwrap_err();
    // ERR and DF are both set: ERR is checked first and names the error bits.
    assert!(
        matches!(err, AtaError::CommandFailed { command: CMD_WRITE_SECTORS, lba: 7, status, .. } if status & STATUS_DF != 0),
        "{err:?}"
    );
    // The next command finds the device ready again.
    disk.write_sectors(20, &pattern(20)).unwrap();
    let fake = no_violations(disk);
    assert_eq!(fake.devices[0].as_ref().unwrap().sector(6), pattern(6));
    assert_eq!(fake.devices[0].as_ref().unwrap().sector(7), [0; 512]);
}

#[test]
fn an_address_beyond_the_device_is_refused_before_any_command() {
    let mut disk = open(primary_disk(100, true), Drive::Master);
    let mut buf = [0u8; 1024];
    assert_eq!(
        disk.read_sectors(99, &mut buf),
        Err(AtaError::OutOfRange {
            lba: 99,
            count: 2,
            capacity: 100
        })
    );
    assert_eq!(
        disk.read_sectors(u64::MAX, &mut buf),
        Err(AtaError::OutOfRange {
            lba: u64::MAX,
            count: 2,
            capacity: 100
        })
    );
    assert_eq!(
        disk.write_sectors(0, &[0u8; 100]),
        Err(AtaError::NotWholeSectors { len: 100 })
    );
    let fake = no_violations(disk);
    assert_eq!(fake.issued.len(), 1, "only IDENTIFY reached the device");
}

#[test]
fn identify_data_is_checked_word_by_word() {
    let parse = |edit: fn(&mut [u16; 256])| {
        let mut w = identify_words(1000, true, "X");
        edit(&mut w);
        Identity::parse(&w)
    };
    assert_eq!(
        parse(|w| w[0] = 0x8580).err(),
        Some(AtaError::NotAtaDevice {
            general_config: 0x8580
        })
    );
    assert_eq!(
        parse(|w| w[49] = 0).err(),
        Some(AtaError::NoLba { capabilities: 0 })
    );
    assert_eq!(
        parse(|w| {
            w[106] = 0x4000 | 1 << 12;
            w[117] = 2048;
        })
        .err(),
        Some(AtaError::UnsupportedSectorSize {
            words_per_sector: 2048
        })
    );
    assert_eq!(
        parse(|w| {
            w[60] = 0;
            w[61] = 0;
            w[100] = 0;
            w[101] = 0;
        })
        .err(),
        Some(AtaError::NoCapacity)
    );
    // 48-bit capacity is read only when words 83 and 86 say it is on.
    let off = parse(|w| {
        w[86] &= !(1 << 10);
        w[100] = 0xffff;
    })
    .unwrap();
    assert!(!off.lba48);
    assert_eq!(off.sectors, 1000);
    assert_eq!(off.flush, FlushCommand::Cache);
    // Word 86 is vouched for by word 87's validity bits.
    let unvouched = parse(|w| {
        w[87] = 0;
        w[85] = 0;
    })
    .unwrap();
    assert!(!unvouched.lba48);
    assert_eq!(unvouched.sectors, 1000);
    // A capacity beyond 48-bit addresses is cut to what they reach, so
    // byte lengths cannot overflow.
    let huge = parse(|w| w[100..104].fill(0xffff)).unwrap();
    assert_eq!(huge.sectors, 1 << 48);
    // A word 83 without its 01 validity bits is ignored.
    let invalid = parse(|w| {
        w[83] = 0xffff;
        w[85] = 0x4000;
    })
    .unwrap();
    assert!(!invalid.lba48);
    assert_eq!(invalid.flush, FlushCommand::NotNeeded);
    // No flush command but an enabled write cache: writes could be lost.
    assert_eq!(
        parse(|w| w[83] = 0x4000).err(),
        Some(AtaError::CacheWithoutFlush {
            command_sets: 0x4000,
            enabled: 0x4020
        })
    );
    let no_cache = parse(|w| {
        w[83] = 0x4000;
        w[85] = 0x4000;
    })
    .unwrap();
    assert_eq!(no_cache.flush, FlushCommand::NotNeeded);
}

#[test]
fn the_integrity_word_is_checked_when_present() {
    let mut w = identify_words(1000, true, "X");
    let sum = w
        .iter()
        .take(255)
        .fold(0u8, |s, x| {
            s.wrapping_add(*x as u8).wrapping_add((x >> 8) as u8)
        })
        .wrapping_add(0xa5);
    w[255] = u16::from(sum.wrapping_neg()) << 8 | 0xa5;
    assert!(Identity::parse(&w).is_ok());
    w[255] ^= 0x0100;
    assert!(matches!(
        Identity::parse(&w),
        Err(AtaError::IdentifyChecksum { .. })
    ));
}

#[test]
fn byte_access_reads_and_patches_partial_sectors() {
    let mut disk = open(primary_disk(64, true), Drive::Master);
    let data = patterns(0, 8);
    disk.write_sectors(0, &data).unwrap();
    assert_eq!(BlockDevice::len(&mut disk), Ok(64 * 512));
    // Unaligned read across three sectors.
    let mut buf = vec![0u8; 1100];
    disk.read_at(300, &mut buf).unwrap();
    assert_eq!(buf, data[300..1400]);
    // Unaligned write: only the bytes written change.
    let patch = [0xeeu8; 700];
    disk.write_at(1000, &patch).unwrap();
    let mut expected = data.clone();
    expected[1000..1700].copy_from_slice(&patch);
    let mut all = vec![0u8; data.len()];
    disk.read_at(0, &mut all).unwrap();
    assert_eq!(all, expected);
    // A small write inside one sector.
    disk.write_at(2050, b"xyz").unwrap();
    let mut s = [0u8; 512];
    disk.read_sectors(4, &mut s).unwrap();
    assert_eq!(&s[2..5], b"xyz");
    assert_eq!(s[..2], pattern(4)[..2]);
    assert_eq!(s[5..], pattern(4)[5..]);
    BlockDevice::flush(&mut disk).unwrap();
    let fake = no_violations(disk);
    assert_eq!(device(&fake, 0).flushes, 1);
}

#[test]
fn the_block_device_has_a_fixed_length() {
    let mut disk = open(primary_disk(8, true), Drive::Master);
    let mut buf = [0u8; 10];
    assert_eq!(
        disk.read_at(4090, &mut buf),
        Err(IoError::OutOfBounds {
            offset: 4090,
            len: 10,
            device_len: 4096
        })
    );
    assert_eq!(
        disk.write_at(4090, &buf),
        Err(IoError::CapacityExceeded {
            requested: 4100,
            capacity: 4096
        })
    );
    assert_eq!(
        disk.write_at(u64::MAX, &buf),
        Err(IoError::CapacityExceeded {
            requested: u64::MAX,
            capacity: 4096
        })
    );
    assert_eq!(disk.set_len(4096), Ok(()));
    assert_eq!(
        disk.set_len(2048),
        Err(IoError::CapacityExceeded {
            requested: 2048,
            capacity: 4096
        })
    );
}

#[test]
fn device_errors_reach_the_block_device_caller_with_the_full_error_kept() {
    let mut fake = primary_disk(16, true);
    fake.devices[0].as_mut().unwrap().unreadable = Some(3);
    let mut disk = open(fake, Drive::Master);
    let mut buf = [0u8; 100];
    let err = disk.read_at(3 * 512 + 10, &mut buf).unwrap_err();
    let last = disk.last_error().unwrap();
    assert!(matches!(
        last,
        AtaError::CommandFailed {
            lba: 3,
            error: ErrorBits(0x40),
            ..
        }
    ));
    assert_eq!(err, IoError::Os { code: last.code() });
    assert_eq!(last.code() >> 16, 0x4154);
}

/// A chain's layers share one device type: the child in a file on the ATA
/// disk, the base in memory.
enum Layer<'a> {
    Memory(ponte_vhd::SliceDevice<'a>),
    Ata(std::boxed::Box<crate::disk_file::DiskFile<AtaDisk<FakeChannel>>>),
}

impl BlockDevice for Layer<'_> {
    fn len(&mut self) -> Result<u64, IoError> {
        match self {
            Layer::Memory(d) => d.len(),
            Layer::Ata(d) => d.len(),
        }
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        match self {
            Layer::Memory(d) => d.read_at(offset, buf),
            Layer::Ata(d) => d.read_at(offset, buf),
        }
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        match self {
            Layer::Memory(d) => d.write_at(offset, buf),
            Layer::Ata(d) => d.write_at(offset, buf),
        }
    }
    fn flush(&mut self) -> Result<(), IoError> {
        match self {
            Layer::Memory(d) => d.flush(),
            Layer::Ata(d) => d.flush(),
        }
    }
    fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        match self {
            Layer::Memory(d) => d.set_len(len),
            Layer::Ata(d) => d.set_len(len),
        }
    }
}

/// The base image, read-only in memory, as the only parent.
struct Base<'a>(Option<ponte_vhd::SliceDevice<'a>>);

impl<'a> ponte_vhd::ParentResolver<Layer<'a>> for Base<'a> {
    fn open_parent(
        &mut self,
        _: &ponte_vhd::ParentRequest<'_>,
        _: Option<&ponte_vhd::LocatorHint<'_>>,
    ) -> Option<Layer<'a>> {
        self.0.take().map(Layer::Memory)
    }
}

#[test]
fn a_differencing_vhd_in_a_disk_file_grows_and_survives_a_reopen() {
    use crate::disk_file::DiskFile;
    use ponte_vhd::create::{create_differencing, create_dynamic, CreateOptions, ParentLink};
    use ponte_vhd::{Disk, NoParents, OpenOptions, SliceDevice, SlicePool, Uuid};

    // A dynamic base holding "base" at 4096, with 4 KiB blocks.
    let mut base_mem = vec![0u8; 16384];
    let mut dev = SliceDevice::empty(&mut base_mem);
    let mut create = CreateOptions::new(1 << 20, Uuid([7; 16]), 0);
    create.block_size = 4096;
    create_dynamic(&mut dev, &create).unwrap();
    let options = OpenOptions {
        writable: true,
        ..OpenOptions::default()
    };
    let mut words = [0u32; 4096];
    let mut vhd = Disk::<_, _, 1>::open(
        dev,
        &options,
        &mut SlicePool::new(&mut words),
        &mut NoParents,
    )
    .unwrap();
    vhd.write_at(4096, b"base").unwrap();
    vhd.flush().unwrap();
    let base_len = vhd.into_devices().next().unwrap().as_bytes().len();
    let base_bytes = base_mem[..base_len].to_vec();

    // A differencing child made in a file on the ATA disk.
    let disk = open(primary_disk(256, true), Drive::Master);
    let mut file = DiskFile::format(disk, 0, 256 * 512).unwrap();
    let mut parent_mem = base_bytes.clone();
    let link = ParentLink {
        relative_path: "base.vhd",
        absolute_path: None,
        name: "base.vhd",
    };
    create_differencing(
        &mut file,
        &mut SliceDevice::new(&mut parent_mem),
        &link,
        4096,
        Uuid([8; 16]),
        0,
    )
    .unwrap();
    file.flush().unwrap();

    // One boot: open the chain, check the parent, write, flush, close.
    let boot = |file: DiskFile<AtaDisk<FakeChannel>>, at: u64, text: &[u8]| {
        let mut parent_mem = base_bytes.clone();
        let mut words = [0u32; 8192];
        let mut vhd = Disk::<_, _, 2>::open(
            Layer::Ata(std::boxed::Box::new(file)),
            &options,
            &mut SlicePool::new(&mut words),
            &mut Base(Some(SliceDevice::new(&mut parent_mem))),
        )
        .unwrap();
        let mut back = [0u8; 4];
        vhd.read_at(4096, &mut back).unwrap();
        assert_eq!(&back, b"base", "the parent shows through");
        vhd.write_at(at, text).unwrap();
        vhd.flush().unwrap();
        let top = vhd.into_devices().next();
        let Some(Layer::Ata(file)) = top else {
            panic!("the top layer is the child")
        };
        file.into_inner()
    };
    // Writes into blocks the child lacks: the file grows each time.
    let disk = boot(file, 300_000, b"first");
    let disk = boot(
        DiskFile::open(disk, 0, 256 * 512).unwrap(),
        600_000,
        b"second",
    );
    // Reopened from the disk's sectors alone: both writes are there.
    let mut file = DiskFile::open(disk, 0, 256 * 512).unwrap();
    let grown = file.len().unwrap();
    assert!(grown > 2 * 4096, "two blocks allocated: {grown}");
    let mut parent_mem = base_bytes.clone();
    let mut words = [0u32; 8192];
    let mut vhd = Disk::<_, _, 2>::open(
        Layer::Ata(std::boxed::Box::new(file)),
        &OpenOptions::default(),
        &mut SlicePool::new(&mut words),
        &mut Base(Some(SliceDevice::new(&mut parent_mem))),
    )
    .unwrap();
    let mut back = [0u8; 6];
    vhd.read_at(300_000, &mut back[..5]).unwrap();
    assert_eq!(&back[..5], b"first");
    vhd.read_at(600_000, &mut back).unwrap();
    assert_eq!(&back, b"second");
    let Some(Layer::Ata(file)) = vhd.into_devices().next() else {
        panic!("the top layer is the child")
    };
    let fake = no_violations(file.into_inner());
    assert!(device(&fake, 0).flushes >= 2);
}
