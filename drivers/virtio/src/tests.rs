//! Tests against the virtio 1.1 specification and Linux's virtio_pci and
//! virtio_blk drivers: hostile chains, feature negotiation and the status
//! machine, and block requests laid out as Linux lays them out.

use core::cell::Cell;
use std::vec;
use std::vec::Vec;

use ponte_kernel::device::AccessWidth;
use ponte_kernel::memory::MemoryError;
use ponte_pci::bus::ResourceWindow;
use ponte_pci::{PciBus, PciFunction};

use crate::block::{features as blk, request, status as blk_status, VirtioBlock};
use crate::device::{features, status, DeviceError};
use crate::pci::{
    layout, legacy, Modern, Transitional, VirtioPci, VirtioPciTransport, LEGACY_BAR, MODERN_BAR,
    MODERN_BAR_SIZE,
};
use crate::queue::{desc_flags, QueueError, RingPart, Segment, SplitQueue, QUEUE_SIZE_LIMIT};
use crate::testing::*;
use crate::BlockRequestError;

type Blk<'a, T = Modern> = VirtioPci<TestMemory<'a>, VirtioBlock<MemDisk>, RecordingLine, T>;

const RAM: usize = 0x40_0000;
const DATA: u64 = 0x10_0000;

// ---------------------------------------------------------------------------
// Split queue, driven directly.

fn queue(ram: &[Cell<u8>], size: u16) -> SplitQueue {
    let mut q = SplitQueue::new(size);
    q.set_addresses(DESC, AVAIL, USED);
    q.enable().unwrap();
    let _ = ram;
    q
}

fn walk(ram: &[Cell<u8>], q: &mut SplitQueue) -> Result<usize, QueueError> {
    let mem = TestMemory(ram);
    let head = q.pop_available(&mem)?.expect("a chain is available");
    let mut out = [Segment::default(); 8];
    q.read_chain(&mem, head, &mut out).map(|i| i.segments)
}

#[test]
fn enable_checks_size_and_ring_alignment() {
    for size in [0, 3, 12] {
        let mut q = SplitQueue::new(8);
        q.set_size(size);
        q.set_addresses(DESC, AVAIL, USED);
        assert_eq!(q.enable(), Err(QueueError::InvalidSize { size, max: 8 }));
    }
    let mut q = SplitQueue::new(8);
    q.set_size(16);
    assert_eq!(
        q.enable(),
        Err(QueueError::InvalidSize { size: 16, max: 8 })
    );
    let cases = [
        (DESC + 8, AVAIL, USED, RingPart::DescriptorTable, DESC + 8),
        (DESC, AVAIL + 1, USED, RingPart::AvailableRing, AVAIL + 1),
        (DESC, AVAIL, USED + 2, RingPart::UsedRing, USED + 2),
        (
            u64::MAX - 15,
            AVAIL,
            USED,
            RingPart::DescriptorTable,
            u64::MAX - 15,
        ),
    ];
    for (d, a, u, part, addr) in cases {
        let mut q = SplitQueue::new(8);
        q.set_addresses(d, a, u);
        assert_eq!(q.enable(), Err(QueueError::BadRingAddress { part, addr }));
        assert!(!q.is_ready());
    }
    assert_eq!(SplitQueue::new(4096).max_size(), QUEUE_SIZE_LIMIT);
}

#[test]
fn a_disabled_queue_is_not_read() {
    let ram = ram(0x10000);
    let mut q = SplitQueue::new(8);
    assert_eq!(
        q.pop_available(&TestMemory(&ram)),
        Err(QueueError::NotReady)
    );
}

#[test]
fn looping_chain_is_a_typed_error() {
    let ram = ram(0x10000);
    let mut q = queue(&ram, 8);
    let mut d = RingDriver::new(&ram, 8);
    // 2 -> 5 -> 2 ...
    d.write_desc(DESC, 2, 0x8000, 16, desc_flags::NEXT, 5);
    d.write_desc(DESC, 5, 0x8100, 16, desc_flags::NEXT, 2);
    d.publish(2);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::Loop {
            index: 2,
            indirect: false
        })
    );
}

#[test]
fn chain_longer_than_the_queue_is_caught_as_a_loop() {
    // A chain through every descriptor of a 4-entry queue that then goes
    // on: the fifth descriptor can only be one already visited.
    let ram = ram(0x10000);
    let mut q = queue(&ram, 4);
    let d = RingDriver::new(&ram, 4);
    for i in 0..4u16 {
        d.write_desc(DESC, i, 0x8000, 1, desc_flags::NEXT, (i + 1) % 4);
    }
    let mut d = d;
    d.publish(0);
    let mem = TestMemory(&ram);
    let head = q.pop_available(&mem).unwrap().unwrap();
    let mut out = [Segment::default(); 64];
    assert_eq!(
        q.read_chain(&mem, head, &mut out),
        Err(QueueError::Loop {
            index: 0,
            indirect: false
        })
    );
    // With less room than the chain needs, the caller's limit is named.
    let mut small = [Segment::default(); 2];
    assert_eq!(
        q.read_chain(&mem, head, &mut small),
        Err(QueueError::TooManySegments { limit: 2 })
    );
}

#[test]
fn out_of_range_indexes_are_typed_errors() {
    // Each case on a fresh queue: a failed chain is not consumed (the
    // device needs a reset after it).
    let ram = crate::testing::ram(0x10000);
    let mut q = queue(&ram, 8);
    let mut d = RingDriver::new(&ram, 8);
    d.publish(8);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::HeadOutOfRange { head: 8, size: 8 })
    );
    assert_eq!(q.next_avail(), 0);

    let ram = crate::testing::ram(0x10000);
    let mut q = queue(&ram, 8);
    let mut d = RingDriver::new(&ram, 8);
    d.write_desc(DESC, 1, 0x8000, 16, desc_flags::NEXT, 0xFFFF);
    d.publish(1);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::NextOutOfRange {
            index: 1,
            next: 0xFFFF,
            table_len: 8
        })
    );

    // Inside an indirect table of two entries, next = 2 is out of range.
    let ram = crate::testing::ram(0x10000);
    let mut q = queue(&ram, 8);
    let mut d = RingDriver::new(&ram, 8);
    d.write_desc(INDIRECT, 0, 0x8000, 16, desc_flags::NEXT, 1);
    d.write_desc(INDIRECT, 1, 0x8000, 16, desc_flags::NEXT, 2);
    d.write_desc(DESC, 3, INDIRECT, 32, desc_flags::INDIRECT, 0);
    d.publish(3);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::NextOutOfRange {
            index: 1,
            next: 2,
            table_len: 2
        })
    );
}

#[test]
fn available_index_too_far_ahead_is_refused() {
    let ram = ram(0x10000);
    let mut q = queue(&ram, 8);
    poke(&ram, AVAIL + 2, &9u16.to_le_bytes());
    assert_eq!(
        q.pop_available(&TestMemory(&ram)),
        Err(QueueError::AvailIndexAhead {
            avail_idx: 9,
            next_avail: 0,
            size: 8
        })
    );
    // Exactly a queue's worth is fine, and wrapping indexes work.
    poke(&ram, AVAIL + 2, &8u16.to_le_bytes());
    assert_eq!(q.pop_available(&TestMemory(&ram)), Ok(Some(0)));
}

#[test]
fn buffer_wrapping_the_address_space_is_refused() {
    let ram = ram(0x10000);
    let mut q = queue(&ram, 8);
    let mut d = RingDriver::new(&ram, 8);
    d.write_desc(DESC, 0, u64::MAX - 0xFF, 0x100, 0, 0);
    d.publish(0);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::BufferOverflow {
            index: 0,
            addr: u64::MAX - 0xFF,
            len: 0x100
        })
    );
    // The largest buffer that ends exactly at the top is accepted.
    d.write_desc(DESC, 1, u64::MAX - 0xFF, 0xFF, 0, 0);
    d.publish(1);
    assert_eq!(walk(&ram, &mut q), Ok(1));
}

#[test]
fn malformed_indirect_tables_are_refused() {
    let ram = ram(0x10000);
    let mut q = queue(&ram, 8);
    let mut d = RingDriver::new(&ram, 8);
    let cases: [(u64, u32, u16, QueueError); 5] = [
        (
            INDIRECT,
            0,
            0,
            QueueError::BadIndirectLength { index: 0, len: 0 },
        ),
        (
            INDIRECT,
            24,
            0,
            QueueError::BadIndirectLength { index: 0, len: 24 },
        ),
        (
            INDIRECT,
            16 * (u32::from(QUEUE_SIZE_LIMIT) + 1),
            0,
            QueueError::BadIndirectLength {
                index: 0,
                len: 16 * (u32::from(QUEUE_SIZE_LIMIT) + 1),
            },
        ),
        (
            INDIRECT,
            32,
            desc_flags::NEXT,
            QueueError::IndirectWithNext { index: 0 },
        ),
        (
            u64::MAX - 15,
            32,
            0,
            QueueError::BadIndirectLength { index: 0, len: 32 },
        ),
    ];
    for (addr, len, extra, error) in cases {
        d.write_desc(DESC, 0, addr, len, desc_flags::INDIRECT | extra, 1);
        d.publish(0);
        assert_eq!(walk(&ram, &mut q), Err(error));
    }
    // An indirect descriptor inside the table.
    d.write_desc(INDIRECT, 0, INDIRECT, 16, desc_flags::INDIRECT, 0);
    d.write_desc(DESC, 0, INDIRECT, 16, desc_flags::INDIRECT, 0);
    d.publish(0);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::NestedIndirect { index: 0 })
    );
    // A loop inside the table.
    d.write_desc(INDIRECT, 0, 0x8000, 4, desc_flags::NEXT, 1);
    d.write_desc(INDIRECT, 1, 0x8000, 4, desc_flags::NEXT, 0);
    d.write_desc(DESC, 0, INDIRECT, 32, desc_flags::INDIRECT, 0);
    d.publish(0);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::Loop {
            index: 0,
            indirect: true
        })
    );
    // A table outside RAM.
    d.write_desc(DESC, 0, 0x10_0000, 32, desc_flags::INDIRECT, 0);
    d.publish(0);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::Memory {
            part: RingPart::IndirectTable,
            error: MemoryError::NotRam {
                addr: 0x10_0000,
                len: 16
            }
        })
    );
}

#[test]
fn readable_after_writable_is_refused() {
    let ram = ram(0x10000);
    let mut q = queue(&ram, 8);
    let mut d = RingDriver::new(&ram, 8);
    d.submit(&[(0x8000, 16, false), (0x8100, 1, true), (0x8200, 8, false)]);
    assert_eq!(
        walk(&ram, &mut q),
        Err(QueueError::ReadableAfterWritable { index: 2 })
    );
}

#[test]
fn used_ring_gets_element_then_index_and_wraps() {
    let ram = ram(0x10000);
    let mut q = queue(&ram, 2);
    let mem = TestMemory(&ram);
    let d = RingDriver::new(&ram, 2);
    for (n, (head, len)) in [(1u16, 17u32), (0, 3), (1, 9)].into_iter().enumerate() {
        q.add_used(&mem, head, len).unwrap();
        assert_eq!(d.used_idx(), n as u16 + 1);
        assert_eq!(d.used(n as u16), (u32::from(head), len));
    }
    // The third element went to slot 0 again.
    assert_eq!(d.used(0), (1, 9));
}

// ---------------------------------------------------------------------------
// The PCI transport, driven as Linux's virtio_pci_modern does.

fn blk_device<T: VirtioPciTransport>(ram: &[Cell<u8>], disk: MemDisk, transport: T) -> Blk<'_, T> {
    let mut dev = VirtioPci::new(
        VirtioBlock::new(disk, b"ponte-disk-0"),
        TestMemory(ram),
        RecordingLine::default(),
        transport,
    )
    .unwrap();
    // Firmware: BAR 1 at 0xFE00_0000, legacy BAR at 0xC000, decoding and
    // bus mastering on (Linux sets bus mastering in virtio_pci_probe).
    dev.config_write(0x14, AccessWidth::Dword, 0xFE00_0000);
    dev.config_write(0x10, AccessWidth::Dword, 0xC000);
    dev.config_write(0x04, AccessWidth::Word, 0x7);
    dev
}

fn common_read<T: VirtioPciTransport>(
    dev: &mut Blk<'_, T>,
    offset: u64,
    width: AccessWidth,
) -> u64 {
    dev.bar_read(MODERN_BAR, layout::COMMON + offset, width)
}

fn common_write<T: VirtioPciTransport>(
    dev: &mut Blk<'_, T>,
    offset: u64,
    width: AccessWidth,
    value: u64,
) {
    dev.bar_write(MODERN_BAR, layout::COMMON + offset, width, value)
}

fn device_features<T: VirtioPciTransport>(dev: &mut Blk<'_, T>) -> u64 {
    common_write(dev, 0x00, AccessWidth::Dword, 0);
    let low = common_read(dev, 0x04, AccessWidth::Dword);
    common_write(dev, 0x00, AccessWidth::Dword, 1);
    let high = common_read(dev, 0x04, AccessWidth::Dword);
    high << 32 | low
}

fn set_status<T: VirtioPciTransport>(dev: &mut Blk<'_, T>, value: u8) -> u8 {
    common_write(dev, 0x14, AccessWidth::Byte, u64::from(value));
    common_read(dev, 0x14, AccessWidth::Byte) as u8
}

fn write_driver_features<T: VirtioPciTransport>(dev: &mut Blk<'_, T>, f: u64) {
    common_write(dev, 0x08, AccessWidth::Dword, 0);
    common_write(dev, 0x0C, AccessWidth::Dword, f & 0xFFFF_FFFF);
    common_write(dev, 0x08, AccessWidth::Dword, 1);
    common_write(dev, 0x0C, AccessWidth::Dword, f >> 32);
}

/// virtio_dev_probe + vp_modern setup_vq + virtio_device_ready, in Linux's
/// order; returns the negotiated queue size.
fn linux_bring_up<T: VirtioPciTransport>(
    dev: &mut Blk<'_, T>,
    wanted: u64,
    queue_size: u16,
) -> u16 {
    assert_eq!(set_status(dev, 0), 0);
    set_status(dev, status::ACKNOWLEDGE);
    set_status(dev, status::ACKNOWLEDGE | status::DRIVER);
    let offered = device_features(dev);
    write_driver_features(dev, offered & wanted);
    let s = set_status(
        dev,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_ne!(s & status::FEATURES_OK, 0, "features refused");
    assert_eq!(common_read(dev, 0x12, AccessWidth::Word), 1);
    common_write(dev, 0x16, AccessWidth::Word, 0);
    let max = common_read(dev, 0x18, AccessWidth::Word) as u16;
    assert!(queue_size <= max);
    common_write(dev, 0x18, AccessWidth::Word, u64::from(queue_size));
    // vp_iowrite64_twopart: low dword, then high dword.
    for (at, addr) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
        common_write(dev, at, AccessWidth::Dword, addr & 0xFFFF_FFFF);
        common_write(dev, at + 4, AccessWidth::Dword, addr >> 32);
    }
    assert_eq!(common_read(dev, 0x1E, AccessWidth::Word), 0);
    common_write(dev, 0x1C, AccessWidth::Word, 1);
    assert_eq!(common_read(dev, 0x1C, AccessWidth::Word), 1);
    let s = set_status(
        dev,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert_eq!(s & status::DRIVER_OK, status::DRIVER_OK);
    queue_size
}

fn notify<T: VirtioPciTransport>(dev: &mut Blk<'_, T>) {
    // vp_notify: iowrite16(queue index, notify base + notify_off * multiplier).
    dev.bar_write(MODERN_BAR, layout::NOTIFY, AccessWidth::Word, 0);
}

fn read_isr<T: VirtioPciTransport>(dev: &mut Blk<'_, T>) -> u8 {
    dev.bar_read(MODERN_BAR, layout::ISR, AccessWidth::Byte) as u8
}

const LINUX_FEATURES: u64 = features::VERSION_1
    | features::RING_INDIRECT_DESC
    | blk::SEG_MAX
    | blk::BLK_SIZE
    | blk::FLUSH
    | blk::WRITE_ZEROES;

#[test]
fn identification_matches_the_specification() {
    let ram = ram(0x1000);
    let mut dev = blk_device(&ram, MemDisk::new(8), Modern);
    assert_eq!(dev.config_read(0, AccessWidth::Dword), 0x1042_1AF4);
    // Revision 1 (no legacy), class 01/00.
    assert_eq!(dev.config_read(8, AccessWidth::Dword), 0x0100_0001);
    assert_eq!(dev.config_read(0x2C, AccessWidth::Word), 0x1AF4);
    assert!(dev.config_read(0x2E, AccessWidth::Word) >= 0x40);
    assert_eq!(dev.config_read(0x3D, AccessWidth::Byte), 1);
    // No legacy BAR on a modern device.
    assert_eq!(dev.config_read(0x10, AccessWidth::Dword), 0);
    let ram2 = crate::testing::ram(0x1000);
    let mut t = blk_device(&ram2, MemDisk::new(8), Transitional);
    assert_eq!(t.config_read(0, AccessWidth::Dword), 0x1001_1AF4);
    assert_eq!(t.config_read(8, AccessWidth::Byte), 0);
    // Transitional: subsystem device ID is the virtio type.
    assert_eq!(t.config_read(0x2E, AccessWidth::Word), 2);
    assert_eq!(t.config_read(0x10, AccessWidth::Dword), 0xC001);
}

#[test]
fn a_modern_device_has_no_legacy_register_block() {
    let ram = ram(0x1000);
    let mut dev = blk_device(&ram, MemDisk::new(8), Modern);
    // A driver poking where a legacy block would be reads no device there
    // and cannot move the status machine.
    dev.bar_write(LEGACY_BAR, legacy::STATUS, AccessWidth::Byte, 1);
    assert_eq!(
        dev.bar_read(LEGACY_BAR, legacy::STATUS, AccessWidth::Byte),
        0xFF
    );
    assert_eq!(
        dev.bar_read(LEGACY_BAR, legacy::DEVICE_FEATURES, AccessWidth::Dword),
        0xFFFF_FFFF
    );
    assert_eq!(dev.status(), 0);
    // The modern interface still negotiates.
    linux_bring_up(&mut dev, LINUX_FEATURES, 8);
    assert_eq!(dev.negotiated_features(), LINUX_FEATURES);
}

#[test]
fn virtio_capabilities_are_found_as_linux_finds_them() {
    let ram = ram(0x1000);
    let mut dev = blk_device(&ram, MemDisk::new(8), Modern);
    // virtio_pci_find_capability(): walk PCI_CAP_ID_VNDR entries, read
    // cfg_type and bar from struct virtio_pci_cap.
    let mut found = Vec::new();
    let mut pos = dev.config_read(0x34, AccessWidth::Byte) as u8;
    let mut ttl = 48;
    while pos >= 0x40 && ttl > 0 {
        ttl -= 1;
        let pos4 = pos & !3;
        let id = dev.config_read(pos4, AccessWidth::Byte);
        if id == 0x09 {
            let cap_len = dev.config_read(pos4 + 2, AccessWidth::Byte);
            let cfg_type = dev.config_read(pos4 + 3, AccessWidth::Byte);
            let bar = dev.config_read(pos4 + 4, AccessWidth::Byte);
            let offset = dev.config_read(pos4 + 8, AccessWidth::Dword);
            let length = dev.config_read(pos4 + 12, AccessWidth::Dword);
            let mult = if cfg_type == 2 {
                Some(dev.config_read(pos4 + 16, AccessWidth::Dword))
            } else {
                None
            };
            found.push((cfg_type, cap_len, bar, offset, length, mult));
        }
        pos = dev.config_read(pos4 + 1, AccessWidth::Byte) as u8;
    }
    assert_eq!(
        found,
        [
            (1, 16, 1, 0x0000, 0x38, None),
            (2, 20, 1, 0x3000, 4, Some(4)),
            (3, 16, 1, 0x1000, 1, None),
            (4, 16, 1, 0x2000, 0x3C, None),
            (5, 20, 0, 0, 0, None),
        ]
    );
    // Sizing BAR 1 gives a 16 KiB 32-bit memory BAR.
    let saved = dev.config_read(0x14, AccessWidth::Dword);
    dev.config_write(0x14, AccessWidth::Dword, 0xFFFF_FFFF);
    assert_eq!(dev.config_read(0x14, AccessWidth::Dword), 0xFFFF_C000);
    dev.config_write(0x14, AccessWidth::Dword, saved);
}

#[test]
fn feature_negotiation_follows_the_status_machine() {
    let ram = ram(0x10000);
    let mut dev = blk_device(&ram, MemDisk::new(8), Modern);
    set_status(&mut dev, status::ACKNOWLEDGE);
    set_status(&mut dev, status::ACKNOWLEDGE | status::DRIVER);
    let offered = device_features(&mut dev);
    for bit in [
        features::VERSION_1,
        features::RING_INDIRECT_DESC,
        blk::SEG_MAX,
        blk::BLK_SIZE,
        blk::FLUSH,
    ] {
        assert_ne!(offered & bit, 0, "feature {bit:#x} not offered");
    }
    assert_eq!(
        offered & (blk::RO | blk::SIZE_MAX | features::RING_EVENT_IDX),
        0
    );
    // A feature select past the defined words reads zero.
    common_write(&mut dev, 0x00, AccessWidth::Dword, 2);
    assert_eq!(common_read(&mut dev, 0x04, AccessWidth::Dword), 0);
    let base = status::ACKNOWLEDGE | status::DRIVER;
    // Without VERSION_1 the modern interface refuses FEATURES_OK.
    write_driver_features(&mut dev, blk::FLUSH);
    assert_eq!(set_status(&mut dev, base | status::FEATURES_OK), base);
    // A feature the device did not offer is refused too.
    write_driver_features(&mut dev, features::VERSION_1 | blk::RO);
    assert_eq!(set_status(&mut dev, base | status::FEATURES_OK), base);
    // DRIVER_OK before FEATURES_OK is not accepted.
    assert_eq!(set_status(&mut dev, base | status::DRIVER_OK), base);
    write_driver_features(&mut dev, features::VERSION_1 | blk::FLUSH);
    let ok = base | status::FEATURES_OK;
    assert_eq!(set_status(&mut dev, ok), ok);
    assert_eq!(dev.negotiated_features(), features::VERSION_1 | blk::FLUSH);
    // After FEATURES_OK, feature writes are ignored.
    write_driver_features(&mut dev, features::VERSION_1 | blk::SEG_MAX);
    common_write(&mut dev, 0x08, AccessWidth::Dword, 0);
    assert_eq!(common_read(&mut dev, 0x0C, AccessWidth::Dword), blk::FLUSH);
    // The driver cannot clear bits, nor set NEEDS_RESET.
    assert_eq!(set_status(&mut dev, status::ACKNOWLEDGE), ok);
    assert_eq!(set_status(&mut dev, ok | status::NEEDS_RESET), ok);
    assert_eq!(
        set_status(&mut dev, ok | status::FAILED),
        ok | status::FAILED
    );
    // Writing zero resets everything.
    assert_eq!(set_status(&mut dev, 0), 0);
    assert_eq!(dev.negotiated_features(), 0);
    common_write(&mut dev, 0x08, AccessWidth::Dword, 0);
    assert_eq!(common_read(&mut dev, 0x0C, AccessWidth::Dword), 0);
    // Linux's reset wait: status reads 0 after the write.
    assert_eq!(common_read(&mut dev, 0x14, AccessWidth::Byte), 0);
}

#[test]
fn queue_registers_round_trip_and_out_of_range_queues_read_zero() {
    let ram = ram(0x10000);
    let mut dev = blk_device(&ram, MemDisk::new(8), Modern);
    common_write(&mut dev, 0x16, AccessWidth::Word, 0);
    assert_eq!(common_read(&mut dev, 0x18, AccessWidth::Word), 256);
    assert_eq!(common_read(&mut dev, 0x1A, AccessWidth::Word), 0xFFFF);
    assert_eq!(common_read(&mut dev, 0x10, AccessWidth::Word), 0xFFFF);
    common_write(&mut dev, 0x20, AccessWidth::Dword, 0x1234_5000);
    common_write(&mut dev, 0x24, AccessWidth::Dword, 0x1);
    assert_eq!(
        common_read(&mut dev, 0x20, AccessWidth::Qword),
        0x1_1234_5000
    );
    common_write(&mut dev, 0x16, AccessWidth::Word, 1);
    assert_eq!(common_read(&mut dev, 0x18, AccessWidth::Word), 0);
    assert_eq!(common_read(&mut dev, 0x20, AccessWidth::Qword), 0);
}

#[test]
fn enabling_a_queue_with_a_bad_size_needs_reset() {
    let ram = ram(0x10000);
    let mut dev = blk_device(&ram, MemDisk::new(8), Modern);
    set_status(&mut dev, status::ACKNOWLEDGE | status::DRIVER);
    common_write(&mut dev, 0x18, AccessWidth::Word, 100);
    common_write(&mut dev, 0x1C, AccessWidth::Word, 1);
    assert_eq!(common_read(&mut dev, 0x1C, AccessWidth::Word), 0);
    assert_ne!(dev.status() & status::NEEDS_RESET, 0);
    assert_eq!(
        dev.last_error(),
        Some(DeviceError::Queue {
            queue: 0,
            error: QueueError::InvalidSize {
                size: 100,
                max: 256
            }
        })
    );
}

#[test]
fn device_config_reads_like_virtio_cread() {
    let ram = ram(0x10000);
    let mut dev = blk_device(&ram, MemDisk::new(0x12345), Modern);
    let cfg = |dev: &mut Blk<'_>, off: u64, w| dev.bar_read(MODERN_BAR, layout::DEVICE + off, w);
    // capacity is read as two 32-bit halves around config_generation.
    let lo = cfg(&mut dev, 0, AccessWidth::Dword);
    let hi = cfg(&mut dev, 4, AccessWidth::Dword);
    assert_eq!(hi << 32 | lo, 0x12345);
    assert_eq!(common_read(&mut dev, 0x15, AccessWidth::Byte), 0);
    assert_eq!(cfg(&mut dev, 0x0C, AccessWidth::Dword), 126); // seg_max
    assert_eq!(cfg(&mut dev, 0x14, AccessWidth::Dword), 512); // blk_size
    assert_eq!(cfg(&mut dev, 0x30, AccessWidth::Dword), 1 << 21);
    assert_eq!(cfg(&mut dev, 0x34, AccessWidth::Dword), 1);
    // Past the end of the configuration: zero.
    assert_eq!(cfg(&mut dev, 0x100, AccessWidth::Dword), 0);
    // Read-only: a write changes nothing.
    dev.bar_write(MODERN_BAR, layout::DEVICE, AccessWidth::Dword, 0);
    assert_eq!(cfg(&mut dev, 0, AccessWidth::Dword), 0x12345);
}

/// Fills guest buffer `addr` with `len` bytes of a pattern seeded by `seed`.
fn fill(ram: &[Cell<u8>], addr: u64, len: usize, seed: u8) -> Vec<u8> {
    let v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    poke(ram, addr, &v);
    v
}

#[test]
fn linux_style_write_then_read_round_trip() {
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(64), Modern);
    let size = linux_bring_up(
        &mut dev,
        LINUX_FEATURES & !features::RING_INDIRECT_DESC,
        128,
    );
    let mut d = RingDriver::new(&ram, size);
    // Write 3 sectors at sector 5 from two data segments (0x200 + 0x400),
    // as blk_rq_map_sg produces them: header, data..., status.
    poke(&ram, DATA, &blk_header(request::OUT, 5));
    let a = fill(&ram, DATA + 0x1000, 0x200, 0x11);
    let b = fill(&ram, DATA + 0x3000, 0x400, 0x22);
    poke(&ram, DATA + 0x100, &[0xEE]);
    let head = d.submit(&[
        (DATA, 16, false),
        (DATA + 0x1000, 0x200, false),
        (DATA + 0x3000, 0x400, false),
        (DATA + 0x100, 1, true),
    ]);
    notify(&mut dev);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used(0), (u32::from(head), 1));
    assert_eq!(peek(&ram, DATA + 0x100, 1), [blk_status::OK]);
    let disk = &dev.device().backend().data;
    assert_eq!(&disk[5 * 512..6 * 512], &a[..]);
    assert_eq!(&disk[6 * 512..8 * 512], &b[..]);
    assert!(dev.line().level());
    assert_eq!(read_isr(&mut dev), 1);
    assert!(!dev.line().level());
    assert_eq!(read_isr(&mut dev), 0);

    // Read the same sectors back into three segments of 0x100, 0x300, 0x200.
    poke(&ram, DATA + 0x200, &blk_header(request::IN, 5));
    poke(&ram, DATA + 0x300, &[0xEE]);
    let head = d.submit(&[
        (DATA + 0x200, 16, false),
        (DATA + 0x8000, 0x100, true),
        (DATA + 0x9000, 0x300, true),
        (DATA + 0xA000, 0x200, true),
        (DATA + 0x300, 1, true),
    ]);
    notify(&mut dev);
    assert_eq!(d.used_idx(), 2);
    // Used length: 0x600 data bytes plus the status byte.
    assert_eq!(d.used(1), (u32::from(head), 0x601));
    assert_eq!(peek(&ram, DATA + 0x300, 1), [blk_status::OK]);
    let mut back = peek(&ram, DATA + 0x8000, 0x100);
    back.extend(peek(&ram, DATA + 0x9000, 0x300));
    back.extend(peek(&ram, DATA + 0xA000, 0x200));
    let mut expected = a.clone();
    expected.extend(&b);
    assert_eq!(back, expected);
    assert_eq!(dev.line().transitions(), [true, false, true]);
}

#[test]
fn indirect_requests_flush_and_get_id() {
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(64), Modern);
    let size = linux_bring_up(&mut dev, LINUX_FEATURES, 64);
    let mut d = RingDriver::new(&ram, size);
    // An IN request through an indirect table.
    poke(&ram, DATA, &blk_header(request::IN, 10));
    let head = d.submit_indirect(&[
        (DATA, 16, false),
        (DATA + 0x1000, 0x400, true),
        (DATA + 0x20, 1, true),
    ]);
    notify(&mut dev);
    assert_eq!(d.used(0), (u32::from(head), 0x401));
    assert_eq!(
        peek(&ram, DATA + 0x1000, 0x400),
        &dev.device().backend().data[10 * 512..12 * 512]
    );
    // FLUSH: header and status only.
    poke(&ram, DATA + 0x40, &blk_header(request::FLUSH, 0));
    let head = d.submit(&[(DATA + 0x40, 16, false), (DATA + 0x60, 1, true)]);
    notify(&mut dev);
    assert_eq!(d.used(1), (u32::from(head), 1));
    assert_eq!(peek(&ram, DATA + 0x60, 1), [blk_status::OK]);
    assert_eq!(dev.device().backend().flushes, 1);
    // GET_ID: 20 bytes, NUL padded.
    poke(&ram, DATA + 0x80, &blk_header(request::GET_ID, 0));
    let head = d.submit(&[
        (DATA + 0x80, 16, false),
        (DATA + 0x2000, 20, true),
        (DATA + 0xA0, 1, true),
    ]);
    notify(&mut dev);
    assert_eq!(d.used(2), (u32::from(head), 21));
    assert_eq!(
        peek(&ram, DATA + 0x2000, 20),
        b"ponte-disk-0\0\0\0\0\0\0\0\0"
    );
    assert_eq!(peek(&ram, DATA + 0xA0, 1), [blk_status::OK]);
}

#[test]
fn a_batch_completes_with_one_interrupt_per_notify() {
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(64), Modern);
    let size = linux_bring_up(&mut dev, LINUX_FEATURES, 16);
    let mut d = RingDriver::new(&ram, size);
    for i in 0..3u64 {
        poke(&ram, DATA + 0x40 * i, &blk_header(request::IN, i));
        d.submit(&[
            (DATA + 0x40 * i, 16, false),
            (DATA + 0x1000 * (i + 1), 512, true),
            (DATA + 0x40 * i + 0x20, 1, true),
        ]);
    }
    notify(&mut dev);
    assert_eq!(d.used_idx(), 3);
    assert_eq!(dev.line().transitions(), [true]);
    // A notify with nothing new raises nothing more.
    read_isr(&mut dev);
    notify(&mut dev);
    assert_eq!(dev.line().transitions(), [true, false]);
    // The driver asked for no interrupts: buffers are used, the line stays.
    poke(&ram, AVAIL, &1u16.to_le_bytes());
    poke(&ram, DATA, &blk_header(request::FLUSH, 0));
    d.submit(&[(DATA, 16, false), (DATA + 0x20, 1, true)]);
    notify(&mut dev);
    assert_eq!(d.used_idx(), 4);
    assert_eq!(dev.isr(), 0);
    assert_eq!(dev.line().transitions(), [true, false]);
}

#[test]
fn data_moves_in_bounce_buffer_chunks() {
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(256), Modern);
    let size = linux_bring_up(&mut dev, LINUX_FEATURES, 16);
    let mut d = RingDriver::new(&ram, size);
    let data = fill(&ram, DATA + 0x1000, 0x10000, 0x5A);
    poke(&ram, DATA, &blk_header(request::OUT, 3));
    d.submit(&[
        (DATA, 16, false),
        (DATA + 0x1000, 0x10000, false),
        (DATA + 0x20, 1, true),
    ]);
    notify(&mut dev);
    assert_eq!(peek(&ram, DATA + 0x20, 1), [blk_status::OK]);
    assert_eq!(
        &dev.device().backend().data[3 * 512..3 * 512 + 0x10000],
        &data[..]
    );
    assert_eq!(dev.device().backend().largest_call, 4096);
}

#[test]
fn bad_requests_complete_with_ioerr_or_unsupp() {
    let ram = ram(RAM);
    let mut disk = MemDisk::new(64);
    disk.read_only = false;
    let mut dev = blk_device(&ram, disk, Modern);
    let size = linux_bring_up(&mut dev, LINUX_FEATURES, 32);
    let mut d = RingDriver::new(&ram, size);
    let mut run = |dev: &mut Blk<'_>, kind: u32, sector: u64, data: Option<(u32, bool)>| {
        poke(&ram, DATA, &blk_header(kind, sector));
        poke(&ram, DATA + 0x20, &[0xEE]);
        let mut bufs = vec![(DATA, 16, false)];
        if let Some((len, writable)) = data {
            bufs.push((DATA + 0x1000, len, writable));
        }
        bufs.push((DATA + 0x20, 1, true));
        let n = d.avail_idx;
        d.submit(&bufs);
        notify(dev);
        assert_eq!(d.used_idx(), n + 1);
        (peek(&ram, DATA + 0x20, 1)[0], d.used(n).1)
    };
    // Past the end of the 64-sector disk.
    assert_eq!(
        run(&mut dev, request::IN, 63, Some((1024, true))),
        (blk_status::IOERR, 1)
    );
    assert_eq!(
        run(&mut dev, request::OUT, 64, Some((512, false))),
        (blk_status::IOERR, 1)
    );
    assert_eq!(
        run(&mut dev, request::IN, u64::MAX / 256, Some((512, true))),
        (blk_status::IOERR, 1)
    );
    // Not whole sectors.
    assert_eq!(
        run(&mut dev, request::IN, 0, Some((100, true))),
        (blk_status::IOERR, 1)
    );
    // DISCARD and unknown types.
    assert_eq!(
        run(&mut dev, request::DISCARD, 0, Some((16, false))),
        (blk_status::UNSUPP, 1)
    );
    assert_eq!(run(&mut dev, 0x77, 0, None), (blk_status::UNSUPP, 1));
    // Backend failure.
    dev.device_mut().backend_mut().fail_reads = true;
    assert_eq!(
        run(&mut dev, request::IN, 0, Some((512, true))),
        (blk_status::IOERR, 1)
    );
    dev.device_mut().backend_mut().fail_reads = false;
    assert_eq!(dev.device().backend_errors(), 1);
    // The device is still running after all of these.
    assert_eq!(dev.status() & status::NEEDS_RESET, 0);
    assert_eq!(
        run(&mut dev, request::IN, 63, Some((512, true))),
        (blk_status::OK, 513)
    );
}

#[test]
fn write_zeroes_clears_the_range() {
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(64), Modern);
    let size = linux_bring_up(&mut dev, LINUX_FEATURES, 16);
    let mut d = RingDriver::new(&ram, size);
    poke(&ram, DATA, &blk_header(request::WRITE_ZEROES, 0));
    let mut range = [0u8; 16];
    range[..8].copy_from_slice(&7u64.to_le_bytes());
    range[8..12].copy_from_slice(&3u32.to_le_bytes());
    poke(&ram, DATA + 0x40, &range);
    d.submit(&[
        (DATA, 16, false),
        (DATA + 0x40, 16, false),
        (DATA + 0x20, 1, true),
    ]);
    notify(&mut dev);
    assert_eq!(peek(&ram, DATA + 0x20, 1), [blk_status::OK]);
    let disk = &dev.device().backend().data;
    assert!(disk[7 * 512..10 * 512].iter().all(|&b| b == 0));
    assert_ne!(disk[6 * 512 + 1], 0);
    assert_ne!(disk[10 * 512 + 1], 0);
}

#[test]
fn read_only_disks_refuse_writes() {
    let ram = ram(RAM);
    let mut disk = MemDisk::new(8);
    disk.read_only = true;
    let before = disk.data.clone();
    let mut dev = blk_device(&ram, disk, Modern);
    assert_ne!(device_features(&mut dev) & blk::RO, 0);
    let size = linux_bring_up(&mut dev, LINUX_FEATURES | blk::RO, 16);
    let mut d = RingDriver::new(&ram, size);
    poke(&ram, DATA, &blk_header(request::OUT, 0));
    d.submit(&[
        (DATA, 16, false),
        (DATA + 0x1000, 512, false),
        (DATA + 0x20, 1, true),
    ]);
    notify(&mut dev);
    assert_eq!(peek(&ram, DATA + 0x20, 1), [blk_status::IOERR]);
    assert_eq!(dev.device().backend().data, before);
}

#[test]
fn hostile_chain_puts_the_device_in_needs_reset() {
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(64), Modern);
    let size = linux_bring_up(&mut dev, LINUX_FEATURES, 8);
    let mut d = RingDriver::new(&ram, size);
    d.write_desc(DESC, 0, DATA, 16, desc_flags::NEXT, 1);
    d.write_desc(DESC, 1, DATA + 0x100, 16, desc_flags::NEXT, 0);
    d.publish(0);
    notify(&mut dev);
    assert_ne!(dev.status() & status::NEEDS_RESET, 0);
    assert_eq!(
        dev.last_error(),
        Some(DeviceError::Queue {
            queue: 0,
            error: QueueError::Loop {
                index: 0,
                indirect: false
            }
        })
    );
    // The driver is told through a configuration-change interrupt.
    assert!(dev.line().level());
    assert_eq!(read_isr(&mut dev) & 2, 2);
    assert_eq!(d.used_idx(), 0);
    // Further notifications are ignored until reset.
    poke(&ram, DATA, &blk_header(request::FLUSH, 0));
    d.next_desc = 2;
    d.submit(&[(DATA, 16, false), (DATA + 0x20, 1, true)]);
    notify(&mut dev);
    assert_eq!(d.used_idx(), 0);
    // Reset and bring up again: the device works.
    linux_bring_up(&mut dev, LINUX_FEATURES, 8);
    assert_eq!(dev.last_error(), None);
    let mut d = RingDriver::new(&ram, 8);
    poke(&ram, USED + 2, &[0, 0]);
    d.submit(&[(DATA, 16, false), (DATA + 0x20, 1, true)]);
    notify(&mut dev);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(peek(&ram, DATA + 0x20, 1), [blk_status::OK]);
}

#[test]
fn malformed_block_requests_need_reset() {
    let cases: [(&[Buf], DeviceError); 3] = [
        (
            &[(DATA, 8, false), (DATA + 0x20, 1, true)],
            DeviceError::Block(BlockRequestError::HeaderTooShort { readable_len: 8 }),
        ),
        (
            &[(DATA, 16, false)],
            DeviceError::Block(BlockRequestError::NoStatusByte),
        ),
        (
            &[
                (DATA, 16, false),
                (RAM as u64, 512, true),
                (DATA + 0x20, 1, true),
            ],
            DeviceError::Block(BlockRequestError::Memory(MemoryError::NotRam {
                addr: RAM as u64,
                len: 512,
            })),
        ),
    ];
    for (bufs, error) in cases {
        let ram = ram(RAM);
        let mut dev = blk_device(&ram, MemDisk::new(64), Modern);
        let size = linux_bring_up(&mut dev, LINUX_FEATURES, 8);
        let mut d = RingDriver::new(&ram, size);
        poke(&ram, DATA, &blk_header(request::IN, 0));
        d.submit(bufs);
        notify(&mut dev);
        assert_eq!(dev.last_error(), Some(error));
        assert_ne!(dev.status() & status::NEEDS_RESET, 0);
    }
}

#[test]
fn no_dma_without_bus_master_and_intx_follows_the_disable_bit() {
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(64), Modern);
    let size = linux_bring_up(&mut dev, LINUX_FEATURES, 8);
    let mut d = RingDriver::new(&ram, size);
    dev.config_write(0x04, AccessWidth::Word, 0x3);
    poke(&ram, DATA, &blk_header(request::FLUSH, 0));
    d.submit(&[(DATA, 16, false), (DATA + 0x20, 1, true)]);
    notify(&mut dev);
    assert_eq!(d.used_idx(), 0);
    // Bus master and INTx disable on: the buffer is used, the line stays low,
    // yet status bit 3 shows the pending interrupt.
    dev.config_write(0x04, AccessWidth::Word, 0x7 | 0x400);
    notify(&mut dev);
    assert_eq!(d.used_idx(), 1);
    assert!(!dev.line().level());
    assert_eq!(dev.config_read(0x06, AccessWidth::Word) & 0x8, 0x8);
    // Clearing the disable bit lets the pending interrupt through.
    dev.config_write(0x04, AccessWidth::Word, 0x7);
    assert!(dev.line().level());
    assert_eq!(read_isr(&mut dev), 1);
    assert_eq!(dev.config_read(0x06, AccessWidth::Word) & 0x8, 0);
    assert!(!dev.line().level());
}

#[test]
fn legacy_driver_uses_the_io_bar() {
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(64), Transitional);
    let io = |dev: &mut Blk<'_, Transitional>, off: u64, w| dev.bar_read(LEGACY_BAR, off, w);
    // virtio_pci_legacy: reset, ACK, DRIVER, features (32 bits), queue setup
    // by PFN, DRIVER_OK.
    dev.bar_write(LEGACY_BAR, legacy::STATUS, AccessWidth::Byte, 0);
    dev.bar_write(LEGACY_BAR, legacy::STATUS, AccessWidth::Byte, 1);
    dev.bar_write(LEGACY_BAR, legacy::STATUS, AccessWidth::Byte, 3);
    let offered = io(&mut dev, legacy::DEVICE_FEATURES, AccessWidth::Dword);
    assert_eq!(offered & blk::FLUSH, blk::FLUSH);
    dev.bar_write(
        LEGACY_BAR,
        legacy::DRIVER_FEATURES,
        AccessWidth::Dword,
        blk::FLUSH,
    );
    // capacity at 0x14 (no MSI-X).
    assert_eq!(io(&mut dev, legacy::CONFIG, AccessWidth::Dword), 64);
    dev.bar_write(LEGACY_BAR, legacy::QUEUE_SELECT, AccessWidth::Word, 0);
    let size = io(&mut dev, legacy::QUEUE_SIZE, AccessWidth::Word) as u16;
    assert_eq!(size, 256);
    assert_eq!(io(&mut dev, legacy::QUEUE_PFN, AccessWidth::Dword), 0);
    // Legacy layout: table at PFN * 4096, avail right after, used at the next
    // 4 KiB boundary.
    let base = 0x20_0000u64;
    dev.bar_write(
        LEGACY_BAR,
        legacy::QUEUE_PFN,
        AccessWidth::Dword,
        base >> 12,
    );
    assert_eq!(
        io(&mut dev, legacy::QUEUE_PFN, AccessWidth::Dword),
        base >> 12
    );
    let avail = base + 16 * 256;
    let used = (avail + 6 + 2 * 256).next_multiple_of(4096);
    assert_eq!(dev.queue(0).unwrap().addresses(), (base, avail, used));
    dev.bar_write(LEGACY_BAR, legacy::STATUS, AccessWidth::Byte, 7);
    assert_eq!(io(&mut dev, legacy::STATUS, AccessWidth::Byte), 7);
    assert_eq!(dev.negotiated_features(), blk::FLUSH);
    // One FLUSH through the legacy rings.
    let d = RingDriver::new(&ram, 256);
    d.write_desc(base, 0, DATA, 16, desc_flags::NEXT, 1);
    d.write_desc(base, 1, DATA + 0x20, 1, desc_flags::WRITE, 0);
    poke(&ram, DATA, &blk_header(request::FLUSH, 0));
    poke(&ram, avail + 4, &0u16.to_le_bytes());
    poke(&ram, avail + 2, &1u16.to_le_bytes());
    dev.bar_write(LEGACY_BAR, legacy::QUEUE_NOTIFY, AccessWidth::Word, 0);
    assert_eq!(peek_u16(&ram, used + 2), 1);
    assert_eq!(peek(&ram, DATA + 0x20, 1), [blk_status::OK]);
    assert!(dev.line().level());
    assert_eq!(io(&mut dev, legacy::ISR, AccessWidth::Byte), 1);
    assert!(!dev.line().level());
    // A legacy driver cannot set FEATURES_OK.
    dev.bar_write(LEGACY_BAR, legacy::STATUS, AccessWidth::Byte, 0);
    dev.bar_write(LEGACY_BAR, legacy::STATUS, AccessWidth::Byte, 3 | 8);
    assert_eq!(io(&mut dev, legacy::STATUS, AccessWidth::Byte), 3);
}

#[test]
fn virtio_blk_on_the_pci_bus_end_to_end() {
    let ram = ram(RAM);
    let mut dev = VirtioPci::new(
        VirtioBlock::new(MemDisk::new(32), b"vhd"),
        TestMemory(&ram),
        RecordingLine::default(),
        Transitional,
    )
    .unwrap();
    dev.header_mut().set_interrupt_line(11);
    let line = dev.line().clone();
    let mut bus: PciBus<'_, 4> = PciBus::new();
    let addr = bus.attach(3, 0, &mut dev).unwrap();
    bus.assign_resources(
        ResourceWindow {
            base: 0xFE00_0000,
            size: 0x100_0000,
        },
        ResourceWindow {
            base: 0xC000,
            size: 0x1000,
        },
    )
    .unwrap();
    let mmio = bus.bar_region(addr, MODERN_BAR).unwrap();
    assert_eq!(mmio.size, 0x4000);
    assert!(bus.bar_region(addr, LEGACY_BAR).is_some());
    let generation = bus.generation();
    // The guest moves BAR 1 (through the config ports) and enables bus
    // mastering.
    use ponte_kernel::device::PortIo;
    let select = |bus: &mut PciBus<'_, 4>, reg: u32| {
        bus.io_write(0xCF8, AccessWidth::Dword, 1 << 31 | 3 << 11 | reg)
    };
    select(&mut bus, 0x14);
    bus.io_write(0xCFC, AccessWidth::Dword, 0xFEBF_0000);
    select(&mut bus, 0x04);
    let cmd = bus.io_read(0xCFC, AccessWidth::Word);
    bus.io_write(0xCFC, AccessWidth::Word, cmd | 0x4);
    assert!(bus.generation() > generation);
    let base = bus.bar_region(addr, MODERN_BAR).unwrap().base;
    assert_eq!(base, 0xFEBF_0000);
    select(&mut bus, 0x3C);
    assert_eq!(bus.io_read(0xCFC, AccessWidth::Word), 0x010B);
    // Driver bring-up over MMIO through the bus.
    let w = |bus: &mut PciBus<'_, 4>, off: u64, width, v| {
        assert!(bus.memory_bar_write(base + off, width, v))
    };
    let r =
        |bus: &mut PciBus<'_, 4>, off: u64, width| bus.memory_bar_read(base + off, width).unwrap();
    w(&mut bus, 0x14, AccessWidth::Byte, 0);
    w(&mut bus, 0x14, AccessWidth::Byte, 3);
    w(&mut bus, 0x08, AccessWidth::Dword, 1);
    w(&mut bus, 0x0C, AccessWidth::Dword, 1);
    w(&mut bus, 0x08, AccessWidth::Dword, 0);
    w(&mut bus, 0x0C, AccessWidth::Dword, blk::FLUSH);
    w(&mut bus, 0x14, AccessWidth::Byte, 0xB);
    assert_eq!(r(&mut bus, 0x14, AccessWidth::Byte), 0xB);
    w(&mut bus, 0x18, AccessWidth::Word, 8);
    w(&mut bus, 0x20, AccessWidth::Qword, DESC);
    w(&mut bus, 0x28, AccessWidth::Qword, AVAIL);
    w(&mut bus, 0x30, AccessWidth::Qword, USED);
    w(&mut bus, 0x1C, AccessWidth::Word, 1);
    w(&mut bus, 0x14, AccessWidth::Byte, 0xF);
    assert_eq!(r(&mut bus, 0x2000, AccessWidth::Dword), 32);
    let mut d = RingDriver::new(&ram, 8);
    poke(&ram, DATA, &blk_header(request::GET_ID, 0));
    d.submit(&[
        (DATA, 16, false),
        (DATA + 0x100, 20, true),
        (DATA + 0x20, 1, true),
    ]);
    w(&mut bus, 0x3000, AccessWidth::Word, 0);
    assert_eq!(d.used(0), (0, 21));
    assert_eq!(&peek(&ram, DATA + 0x100, 4), b"vhd\0");
    assert!(line.level());
    assert_eq!(r(&mut bus, 0x1000, AccessWidth::Byte), 1);
    assert!(!line.level());
}

#[test]
fn pci_cfg_capability_reaches_the_bar_through_config_cycles() {
    let ram = ram(0x10000);
    let mut dev = blk_device(&ram, MemDisk::new(8), Modern);
    // The fifth vendor capability follows the four region capabilities.
    let mut pos = dev.config_read(0x34, AccessWidth::Byte) as u8;
    for _ in 0..4 {
        pos = dev.config_read(pos + 1, AccessWidth::Byte) as u8;
    }
    assert_eq!(dev.config_read(pos + 3, AccessWidth::Byte), 5);
    // Select BAR 1, offset 0x12 (num_queues), length 2, then read the data.
    dev.config_write(pos + 4, AccessWidth::Byte, 1);
    dev.config_write(pos + 8, AccessWidth::Dword, 0x12);
    dev.config_write(pos + 12, AccessWidth::Dword, 2);
    assert_eq!(dev.config_read(pos + 16, AccessWidth::Dword) & 0xFFFF, 1);
    // Write the device status through it: offset 0x14, length 1.
    dev.config_write(pos + 8, AccessWidth::Dword, 0x14);
    dev.config_write(pos + 12, AccessWidth::Dword, 1);
    dev.config_write(pos + 16, AccessWidth::Byte, u32::from(status::ACKNOWLEDGE));
    assert_eq!(dev.status(), status::ACKNOWLEDGE);
    // Device configuration: capacity, 4 bytes at 0x2000.
    dev.config_write(pos + 8, AccessWidth::Dword, 0x2000);
    dev.config_write(pos + 12, AccessWidth::Dword, 4);
    assert_eq!(dev.config_read(pos + 16, AccessWidth::Dword), 8);
    // A misaligned offset, a bad length or a BAR past its end does nothing.
    dev.config_write(pos + 8, AccessWidth::Dword, 0x15);
    dev.config_write(pos + 12, AccessWidth::Dword, 2);
    dev.config_write(pos + 16, AccessWidth::Word, 0);
    dev.config_write(pos + 8, AccessWidth::Dword, 0x14);
    dev.config_write(pos + 12, AccessWidth::Dword, 3);
    dev.config_write(pos + 16, AccessWidth::Dword, 0);
    dev.config_write(pos + 4, AccessWidth::Byte, 4);
    dev.config_write(pos + 12, AccessWidth::Dword, 1);
    dev.config_write(pos + 16, AccessWidth::Byte, 0);
    assert_eq!(dev.status(), status::ACKNOWLEDGE);
    // The capability's type, length and next pointer stay read-only.
    dev.config_write(pos, AccessWidth::Dword, 0);
    assert_eq!(dev.config_read(pos, AccessWidth::Byte), 0x09);
    assert_eq!(dev.config_read(pos + 2, AccessWidth::Word), 0x0514);
}

#[test]
fn rings_outside_ram_are_typed_errors() {
    // The used ring of a 4-entry queue placed past the end of RAM: the
    // request runs, but it cannot be returned.
    let ram = ram(RAM);
    let mut dev = blk_device(&ram, MemDisk::new(8), Modern);
    set_status(&mut dev, status::ACKNOWLEDGE | status::DRIVER);
    write_driver_features(&mut dev, features::VERSION_1);
    set_status(
        &mut dev,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    common_write(&mut dev, 0x18, AccessWidth::Word, 4);
    common_write(&mut dev, 0x20, AccessWidth::Qword, DESC);
    common_write(&mut dev, 0x28, AccessWidth::Qword, AVAIL);
    common_write(&mut dev, 0x30, AccessWidth::Qword, RAM as u64);
    common_write(&mut dev, 0x1C, AccessWidth::Word, 1);
    set_status(&mut dev, 0xF);
    let mut d = RingDriver::new(&ram, 4);
    poke(&ram, DATA, &blk_header(request::FLUSH, 0));
    d.submit(&[(DATA, 16, false), (DATA + 0x20, 1, true)]);
    notify(&mut dev);
    assert_eq!(
        dev.last_error(),
        Some(DeviceError::Queue {
            queue: 0,
            error: QueueError::Memory {
                part: RingPart::UsedRing,
                error: MemoryError::NotRam {
                    addr: RAM as u64 + 4,
                    len: 8
                }
            }
        })
    );
    assert_ne!(dev.status() & status::NEEDS_RESET, 0);
    // The available ring outside RAM fails on its index.
    let mut q = SplitQueue::new(4);
    q.set_addresses(DESC, RAM as u64, USED);
    q.enable().unwrap();
    assert_eq!(
        q.pop_available(&TestMemory(&ram)),
        Err(QueueError::Memory {
            part: RingPart::AvailableRing,
            error: MemoryError::NotRam {
                addr: RAM as u64 + 2,
                len: 2
            }
        })
    );
}

#[test]
fn random_rings_never_panic_and_always_terminate() {
    use crate::device::VirtioDevice;
    // xorshift64*: deterministic, so a failure reproduces.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let ram = ram(0x10000);
    let mem = TestMemory(&ram);
    let mut blk = VirtioBlock::new(MemDisk::new(16), b"fuzz");
    blk.activate(features::VERSION_1 | blk::WRITE_ZEROES);
    let d = RingDriver::new(&ram, 16);
    // [runs that returned Ok, runs that returned a typed error, requests
    // completed].
    let mut outcomes = [0usize; 3];
    for _ in 0..3000 {
        let size = 4u16 << (next() % 3);
        // Well-formed requests first: header, data, status in consecutive
        // descriptors, heads 0, 3, 6, ... in the available ring.
        let requests = size / 3;
        for r in 0..requests {
            let i = 3 * r;
            let kinds = [
                request::IN,
                request::OUT,
                request::FLUSH,
                request::GET_ID,
                13,
                99,
            ];
            let kind = kinds[(next() % kinds.len() as u64) as usize];
            let header = 0x8000 + 0x20 * u64::from(r);
            poke(&ram, header, &blk_header(kind, next() % 20));
            let data_flag = if next() % 2 == 0 {
                desc_flags::WRITE
            } else {
                0
            };
            let data_len = 16 * (next() % 80) as u32;
            d.write_desc(DESC, i, header, 16, desc_flags::NEXT, i + 1);
            d.write_desc(
                DESC,
                i + 1,
                0x9000,
                data_len,
                data_flag | desc_flags::NEXT,
                i + 2,
            );
            d.write_desc(DESC, i + 2, 0x8800 + u64::from(r), 1, desc_flags::WRITE, 0);
            poke(&ram, AVAIL + 4 + 2 * u64::from(r), &i.to_le_bytes());
        }
        poke(&ram, AVAIL + 2, &requests.to_le_bytes());
        // Then a few hostile mutations: any byte of the descriptor table,
        // the available ring or the headers, or the available index.
        for _ in 0..next() % 4 {
            let area = match next() % 4 {
                0 => DESC + next() % (16 * u64::from(size)),
                1 => AVAIL + next() % (4 + 2 * u64::from(size)),
                2 => 0x8000 + next() % 0x100,
                _ => AVAIL + 2,
            };
            poke(&ram, area, &[next() as u8]);
        }
        let mut q = SplitQueue::new(size);
        q.set_addresses(DESC, AVAIL, USED);
        q.enable().unwrap();
        match blk.process_queue(0, &mut q, &mem) {
            Ok(used) => {
                outcomes[0] += 1;
                outcomes[2] += usize::from(used);
                assert!(used <= size);
                assert_eq!(q.next_used(), used);
            }
            Err(_) => outcomes[1] += 1,
        }
    }
    // Both paths were exercised, and many chains were real requests.
    assert!(
        outcomes[0] > 300 && outcomes[1] > 300 && outcomes[2] > 1000,
        "{outcomes:?}"
    );
}

#[test]
fn random_register_traffic_never_panics() {
    let mut state = 0x1234_5678_9ABC_DEF1u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let ram = ram(0x10000);
    let mut dev = blk_device(&ram, MemDisk::new(16), Transitional);
    let widths = [
        AccessWidth::Byte,
        AccessWidth::Word,
        AccessWidth::Dword,
        AccessWidth::Qword,
    ];
    for _ in 0..50_000 {
        let width = widths[(next() % 4) as usize];
        let value = next();
        match next() % 6 {
            0 => {
                let offset = (next() % 0x100) as u8;
                dev.config_write(offset, width, value as u32);
            }
            1 => {
                let offset = (next() % 0x100) as u8;
                dev.config_read(offset, width);
            }
            2 => {
                let offset = next() % (MODERN_BAR_SIZE + 0x10);
                dev.bar_write(MODERN_BAR, offset, width, value);
            }
            3 => {
                let offset = next() % (MODERN_BAR_SIZE + 0x10);
                dev.bar_read(MODERN_BAR, offset, width);
            }
            4 => {
                let offset = next() % 0x110;
                dev.bar_write(LEGACY_BAR, offset, width, value);
            }
            _ => {
                dev.bar_read(next() as usize % 8, next(), width);
            }
        }
    }
    // A reset brings the device back to a usable state.
    dev.config_write(0x04, AccessWidth::Word, 0x7);
    dev.config_write(0x14, AccessWidth::Dword, 0xFE00_0000);
    linux_bring_up(&mut dev, LINUX_FEATURES, 8);
    assert_eq!(dev.last_error(), None);
}
