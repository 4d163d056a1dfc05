//! Bus-level tests: configuration mechanism #1 through the ports, BAR sizing,
//! capability walking, BAR routing and firmware-style assignment.

use std::vec::Vec;

use ponte_kernel::device::{AccessWidth, PortIo};

use crate::bus::ResourceWindow;
use crate::header::{offset, BAR_COUNT};
use crate::{
    BarKind, BarRegion, BusError, ConfigHeader, InterruptPin, PciAddress, PciBus, PciFunction,
    PciIds,
};

/// A function with a header and a log of BAR accesses.
struct TestFunction {
    header: ConfigHeader,
    accesses: Vec<(usize, u64, AccessWidth, Option<u64>)>,
}

impl TestFunction {
    fn new(device_id: u16) -> Self {
        Self {
            header: ConfigHeader::new(PciIds {
                vendor_id: 0x1234,
                device_id,
                revision_id: 0x10,
                class_code: 0x01,
                subclass: 0x80,
                prog_if: 0x02,
                subsystem_vendor_id: 0x5678,
                subsystem_id: 0x9ABC,
            }),
            accesses: Vec::new(),
        }
    }
}

impl PciFunction for TestFunction {
    fn config_read(&mut self, offset: u8, width: AccessWidth) -> u32 {
        self.header.read(offset, width)
    }
    fn config_write(&mut self, offset: u8, width: AccessWidth, value: u32) {
        self.header.write(offset, width, value)
    }
    fn bar_region(&self, bar: usize) -> Option<BarRegion> {
        self.header.bar_region(bar)
    }
    fn bar_read(&mut self, bar: usize, offset: u64, width: AccessWidth) -> u64 {
        self.accesses.push((bar, offset, width, None));
        0x1122_3344_5566_7788
    }
    fn bar_write(&mut self, bar: usize, offset: u64, width: AccessWidth, value: u64) {
        self.accesses.push((bar, offset, width, Some(value)));
    }
}

fn select(bus: &mut impl PortIo, bus_no: u32, device: u32, function: u32, register: u32) {
    let value = 1 << 31 | bus_no << 16 | device << 11 | function << 8 | register;
    bus.io_write(0xCF8, AccessWidth::Dword, value);
}

fn read_config(
    bus: &mut impl PortIo,
    device: u32,
    function: u32,
    register: u32,
    width: AccessWidth,
) -> u32 {
    select(bus, 0, device, function, register & !3);
    bus.io_read(0xCFC + (register & 3) as u16, width)
}

fn write_config(
    bus: &mut impl PortIo,
    device: u32,
    function: u32,
    register: u32,
    width: AccessWidth,
    value: u32,
) {
    select(bus, 0, device, function, register & !3);
    bus.io_write(0xCFC + (register & 3) as u16, width, value);
}

fn addr(device: u8, function: u8) -> PciAddress {
    PciAddress::new(0, device, function).unwrap()
}

#[test]
fn host_bridge_answers_at_00_00_0_as_a_440fx() {
    let mut bus: PciBus<'_, 2> = PciBus::new();
    assert_eq!(
        read_config(&mut bus, 0, 0, 0, AccessWidth::Dword),
        0x1237_8086
    );
    // Class code 06/00/00 and revision 02 in the dword at 0x08.
    assert_eq!(
        read_config(&mut bus, 0, 0, 8, AccessWidth::Dword),
        0x0600_0002
    );
    assert_eq!(read_config(&mut bus, 0, 0, 0x0E, AccessWidth::Byte), 0);
}

#[test]
fn byte_and_word_accesses_reach_every_offset_of_the_dword() {
    let mut bus: PciBus<'_, 2> = PciBus::new();
    select(&mut bus, 0, 0, 0, 0);
    assert_eq!(bus.io_read(0xCFC, AccessWidth::Byte), 0x86);
    assert_eq!(bus.io_read(0xCFD, AccessWidth::Byte), 0x80);
    assert_eq!(bus.io_read(0xCFE, AccessWidth::Byte), 0x37);
    assert_eq!(bus.io_read(0xCFF, AccessWidth::Byte), 0x12);
    assert_eq!(bus.io_read(0xCFC, AccessWidth::Word), 0x8086);
    assert_eq!(bus.io_read(0xCFD, AccessWidth::Word), 0x3780);
    assert_eq!(bus.io_read(0xCFE, AccessWidth::Word), 0x1237);
    // A word at 0xCFF: one byte is ours, the other is past the window.
    assert_eq!(bus.io_read(0xCFF, AccessWidth::Word), 0xFF12);
    // A dword at 0xCFE: two bytes of the register, two ones bytes.
    assert_eq!(bus.io_read(0xCFE, AccessWidth::Dword), 0xFFFF_1237);
}

#[test]
fn unaligned_writes_change_only_their_bytes() {
    let mut t = TestFunction::new(0x0001);
    let mut bus: PciBus<'_, 2> = PciBus::new();
    bus.attach(1, 0, &mut t).unwrap();
    // Interrupt line is byte 0x3C, fully writable; interrupt pin (0x3D) is
    // read-only; a word write at 0xCFC hits both.
    write_config(&mut bus, 1, 0, 0x3C, AccessWidth::Word, 0x0B0A);
    assert_eq!(
        read_config(&mut bus, 1, 0, 0x3C, AccessWidth::Dword),
        0x0000_000A
    );
    // Latency timer is byte 0x0D: a byte write to 0xCFD.
    write_config(&mut bus, 1, 0, 0x0D, AccessWidth::Byte, 0x40);
    assert_eq!(
        read_config(&mut bus, 1, 0, 0x0C, AccessWidth::Dword),
        0x0000_4000
    );
    // Command is the low word of 0x04; a word write at 0xCFE is the status.
    write_config(&mut bus, 1, 0, 0x04, AccessWidth::Word, 0x0006);
    write_config(&mut bus, 1, 0, 0x06, AccessWidth::Word, 0xFFFF);
    assert_eq!(
        read_config(&mut bus, 1, 0, 0x04, AccessWidth::Dword),
        0x0000_0006
    );
}

#[test]
fn a_data_write_running_past_0xcff_writes_only_the_window_bytes() {
    let mut t = TestFunction::new(0x0001);
    t.header.set_bar(0, BarKind::Io, 0x40).unwrap();
    let mut bus: PciBus<'_, 2> = PciBus::new();
    bus.attach(1, 0, &mut t).unwrap();
    let bar0 = read_config(&mut bus, 1, 0, 0x10, AccessWidth::Dword);
    // A dword at 0xCFD on register 0x0C: latency timer (0x0D), header
    // type and BIST are in the window; the last byte would be BAR 0's low
    // byte, which is not part of this cycle.
    select(&mut bus, 0, 1, 0, 0x0C);
    bus.io_write(0xCFD, AccessWidth::Dword, 0xFF00_0040);
    assert_eq!(read_config(&mut bus, 1, 0, 0x0D, AccessWidth::Byte), 0x40);
    assert_eq!(read_config(&mut bus, 1, 0, 0x10, AccessWidth::Dword), bar0);
}

#[test]
fn disabled_config_cycles_read_ones_and_drop_writes() {
    let mut t = TestFunction::new(0x0001);
    let mut bus: PciBus<'_, 2> = PciBus::new();
    bus.attach(1, 0, &mut t).unwrap();
    // Bit 31 clear, device 1, register 0x3C.
    bus.io_write(0xCF8, AccessWidth::Dword, 1 << 11 | 0x3C);
    assert_eq!(bus.io_read(0xCFC, AccessWidth::Dword), 0xFFFF_FFFF);
    assert_eq!(bus.io_read(0xCFC, AccessWidth::Word), 0xFFFF);
    assert_eq!(bus.io_read(0xCFD, AccessWidth::Byte), 0xFF);
    bus.io_write(0xCFC, AccessWidth::Byte, 0x55);
    assert_eq!(read_config(&mut bus, 1, 0, 0x3C, AccessWidth::Byte), 0x00);
}

#[test]
fn absent_functions_and_other_buses_read_all_ones() {
    let mut t = TestFunction::new(0x0001);
    let mut bus: PciBus<'_, 2> = PciBus::new();
    bus.attach(1, 0, &mut t).unwrap();
    assert_eq!(
        read_config(&mut bus, 2, 0, 0, AccessWidth::Dword),
        0xFFFF_FFFF
    );
    assert_eq!(read_config(&mut bus, 1, 1, 0, AccessWidth::Word), 0xFFFF);
    assert_eq!(read_config(&mut bus, 31, 7, 0x3C, AccessWidth::Byte), 0xFF);
    select(&mut bus, 1, 1, 0, 0);
    assert_eq!(bus.io_read(0xCFC, AccessWidth::Dword), 0xFFFF_FFFF);
    // Writes to nobody go nowhere (and do not reach device 1 on bus 0).
    bus.io_write(0xCFC, AccessWidth::Dword, 0);
    assert_eq!(
        read_config(&mut bus, 1, 0, 0, AccessWidth::Dword),
        0x0001_1234
    );
}

#[test]
fn config_address_decodes_bus_device_function_register() {
    let mut f0 = TestFunction::new(0x0A00);
    let mut f5 = TestFunction::new(0x0A05);
    let mut d9 = TestFunction::new(0x0900);
    let mut bus: PciBus<'_, 4> = PciBus::new();
    bus.attach(7, 0, &mut f0).unwrap();
    bus.attach(7, 5, &mut f5).unwrap();
    bus.attach(9, 0, &mut d9).unwrap();
    assert_eq!(read_config(&mut bus, 7, 0, 2, AccessWidth::Word), 0x0A00);
    assert_eq!(read_config(&mut bus, 7, 5, 2, AccessWidth::Word), 0x0A05);
    assert_eq!(read_config(&mut bus, 9, 0, 2, AccessWidth::Word), 0x0900);
    assert_eq!(read_config(&mut bus, 7, 4, 2, AccessWidth::Word), 0xFFFF);
    // Register bits 7:2 select the dword: 0x2C holds the subsystem ids.
    assert_eq!(
        read_config(&mut bus, 7, 5, 0x2C, AccessWidth::Dword),
        0x9ABC_5678
    );
    // Function 0 of a device with more functions reports multi-function
    // (header type bit 7), whatever the access width; device 9 does not.
    assert_eq!(read_config(&mut bus, 7, 0, 0x0E, AccessWidth::Byte), 0x80);
    assert_eq!(
        read_config(&mut bus, 7, 0, 0x0C, AccessWidth::Dword),
        0x0080_0000
    );
    assert_eq!(read_config(&mut bus, 7, 0, 0x0E, AccessWidth::Word), 0x0080);
    assert_eq!(read_config(&mut bus, 9, 0, 0x0C, AccessWidth::Dword), 0);
}

#[test]
fn config_address_latches_only_dwords_and_clears_reserved_bits() {
    let mut bus: PciBus<'_, 1> = PciBus::new();
    // Linux's pci_check_type1(): a byte to 0xCFB, then a dword round trip.
    bus.io_write(0xCFB, AccessWidth::Byte, 0x01);
    let saved = bus.io_read(0xCF8, AccessWidth::Dword);
    assert_eq!(saved, 0);
    bus.io_write(0xCF8, AccessWidth::Dword, 0x8000_0000);
    assert_eq!(bus.io_read(0xCF8, AccessWidth::Dword), 0x8000_0000);
    bus.io_write(0xCF8, AccessWidth::Byte, 0x12);
    bus.io_write(0xCF8, AccessWidth::Word, 0x1234);
    assert_eq!(bus.io_read(0xCF8, AccessWidth::Dword), 0x8000_0000);
    assert_eq!(bus.io_read(0xCF8, AccessWidth::Word), 0xFFFF);
    assert_eq!(bus.io_read(0xCF9, AccessWidth::Byte), 0xFF);
    // Bits 30:24 and 1:0 are reserved.
    bus.io_write(0xCF8, AccessWidth::Dword, 0xFFFF_FFFF);
    assert_eq!(bus.io_read(0xCF8, AccessWidth::Dword), 0x80FF_FFFC);
}

#[test]
fn bar_sizing_protocol_reads_back_the_size_mask() {
    let mut t = TestFunction::new(1);
    t.header.set_bar(0, BarKind::Io, 0x40).unwrap();
    t.header
        .set_bar(
            1,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x4000,
        )
        .unwrap();
    t.header
        .set_bar(2, BarKind::Memory64 { prefetchable: true }, 0x1_0000_0000)
        .unwrap();
    let mut bus: PciBus<'_, 1> = PciBus::new();
    bus.attach(3, 0, &mut t).unwrap();
    let mut probe = |bar: u32| {
        let reg = 0x10 + 4 * bar;
        let original = read_config(&mut bus, 3, 0, reg, AccessWidth::Dword);
        write_config(&mut bus, 3, 0, reg, AccessWidth::Dword, 0xFFFF_FFFF);
        let mask = read_config(&mut bus, 3, 0, reg, AccessWidth::Dword);
        write_config(&mut bus, 3, 0, reg, AccessWidth::Dword, original);
        (original, mask)
    };
    // I/O, 64 bytes: bit 0 set, address bits 15:6, upper half hardwired 0.
    assert_eq!(probe(0), (0x1, 0x0000_FFC1));
    // 32-bit memory, 16 KiB, not prefetchable: type bits 0.
    assert_eq!(probe(1), (0x0, 0xFFFF_C000));
    // 64-bit prefetchable memory of 4 GiB: low dword has only type bits
    // (0b1100), the high dword the upper mask.
    assert_eq!(probe(2), (0xC, 0x0000_000C));
    assert_eq!(probe(3), (0x0, 0xFFFF_FFFF));
    // Unimplemented BARs read zero and stay zero.
    assert_eq!(probe(4), (0, 0));
    assert_eq!(probe(5), (0, 0));
    // The bus's own probe decodes the same masks.
    assert_eq!(bus.probe_bar(addr(3, 0), 0), Some((BarKind::Io, 0x40)));
    assert_eq!(
        bus.probe_bar(addr(3, 0), 1),
        Some((
            BarKind::Memory32 {
                prefetchable: false
            },
            0x4000
        ))
    );
    assert_eq!(
        bus.probe_bar(addr(3, 0), 2),
        Some((BarKind::Memory64 { prefetchable: true }, 0x1_0000_0000))
    );
    assert_eq!(bus.probe_bar(addr(3, 0), 4), None);
    assert_eq!(bus.probe_bar(addr(4, 0), 0), None);
}

#[test]
fn capability_list_walks_as_linux_walks_it() {
    let mut t = TestFunction::new(1);
    let first = t.header.add_capability(0x09, &[0xA1, 0xA2, 0xA3]).unwrap();
    let second = t.header.add_capability(0x05, &[0; 12]).unwrap();
    let third = t.header.add_capability(0x09, &[0xB1]).unwrap();
    let mut bus: PciBus<'_, 1> = PciBus::new();
    bus.attach(2, 0, &mut t).unwrap();
    // pci_find_capability(): status bit 4, pointer at 0x34, then follow
    // (id, next) words, masking the low two bits, for at most 48 entries.
    let status = read_config(&mut bus, 2, 0, 0x06, AccessWidth::Word);
    assert_ne!(status & 0x10, 0);
    let mut found = Vec::new();
    let mut pos = read_config(&mut bus, 2, 0, 0x34, AccessWidth::Byte);
    for _ in 0..48 {
        if pos < 0x40 {
            break;
        }
        pos &= !3;
        let ent = read_config(&mut bus, 2, 0, pos, AccessWidth::Word);
        if ent & 0xFF == 0xFF {
            break;
        }
        found.push((pos, ent & 0xFF));
        pos = ent >> 8;
    }
    assert_eq!(
        found,
        [
            (u32::from(first), 0x09),
            (u32::from(second), 0x05),
            (u32::from(third), 0x09)
        ]
    );
    // Capabilities are dword aligned and do not overlap.
    assert_eq!((first, second, third), (0x40, 0x48, 0x58));
    assert_eq!(read_config(&mut bus, 2, 0, 0x42, AccessWidth::Byte), 0xA1);
    assert_eq!(read_config(&mut bus, 2, 0, 0x5A, AccessWidth::Byte), 0xB1);
    // Capability bodies are read-only.
    write_config(&mut bus, 2, 0, 0x40, AccessWidth::Dword, 0);
    assert_eq!(
        read_config(&mut bus, 2, 0, 0x40, AccessWidth::Dword),
        0xA2A1_4809
    );
}

#[test]
fn bar_moves_are_reported_and_accesses_follow_them() {
    let mut t = TestFunction::new(1);
    t.header.set_bar(0, BarKind::Io, 0x20).unwrap();
    t.header
        .set_bar(
            2,
            BarKind::Memory64 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
    let mut bus: PciBus<'_, 1> = PciBus::new();
    let a = bus.attach(4, 0, &mut t).unwrap();
    assert_eq!(bus.generation(), 0);
    // Placed but not decoding: nothing to route.
    write_config(&mut bus, 4, 0, 0x10, AccessWidth::Dword, 0xC000);
    write_config(&mut bus, 4, 0, 0x18, AccessWidth::Dword, 0xFEB0_0000);
    write_config(&mut bus, 4, 0, 0x1C, AccessWidth::Dword, 0x1);
    assert_eq!(bus.bar_region(a, 2), None);
    assert_eq!(bus.generation(), 0);
    assert_eq!(bus.memory_bar_read(0x1_FEB0_0000, AccessWidth::Dword), None);
    // Memory decoding on: BAR 2 decodes at 0x1_FEB0_0000; BAR 0 still off.
    write_config(&mut bus, 4, 0, 0x04, AccessWidth::Word, 0x2);
    let g1 = bus.generation();
    assert!(g1 > 0);
    let mem = BarRegion {
        kind: BarKind::Memory64 {
            prefetchable: false,
        },
        base: 0x1_FEB0_0000,
        size: 0x1000,
    };
    assert_eq!(bus.bar_region(a, 2), Some(mem));
    assert_eq!(bus.bar_region(a, 0), None);
    assert_eq!(
        bus.memory_bar_read(0x1_FEB0_0010, AccessWidth::Word),
        Some(0x7788)
    );
    assert!(bus.memory_bar_write(0x1_FEB0_0FFC, AccessWidth::Dword, 0xAABB_CCDD));
    // An access running past the end of the BAR is not the function's.
    assert_eq!(bus.memory_bar_read(0x1_FEB0_0FFC, AccessWidth::Qword), None);
    assert_eq!(bus.io_bar_read(0xC000, AccessWidth::Byte), None);
    // I/O decoding on as well.
    write_config(&mut bus, 4, 0, 0x04, AccessWidth::Word, 0x3);
    let g2 = bus.generation();
    assert!(g2 > g1);
    assert_eq!(bus.io_bar_read(0xC01F, AccessWidth::Byte), Some(0x88));
    assert!(bus.io_bar_write(0xC004, AccessWidth::Word, 0x1234));
    // A write that changes nothing about placement keeps the generation.
    write_config(&mut bus, 4, 0, 0x3C, AccessWidth::Byte, 11);
    assert_eq!(bus.generation(), g2);
    // The guest moves BAR 2 below 4 GiB.
    write_config(&mut bus, 4, 0, 0x1C, AccessWidth::Dword, 0);
    assert!(bus.generation() > g2);
    write_config(&mut bus, 4, 0, 0x18, AccessWidth::Dword, 0xFE00_0000);
    assert_eq!(bus.bar_region(a, 2).map(|r| r.base), Some(0xFE00_0000));
    assert_eq!(bus.memory_bar_read(0x1_FEB0_0010, AccessWidth::Dword), None);
    assert_eq!(
        bus.memory_bar_read(0xFE00_0008, AccessWidth::Byte),
        Some(0x88)
    );
    let listed: Vec<_> = bus.regions().collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        t.accesses,
        [
            (2, 0x10, AccessWidth::Word, None),
            (2, 0xFFC, AccessWidth::Dword, Some(0xAABB_CCDD)),
            (0, 0x1F, AccessWidth::Byte, None),
            (0, 0x4, AccessWidth::Word, Some(0x1234)),
            (2, 0x8, AccessWidth::Byte, None),
        ]
    );
}

#[test]
fn firmware_assignment_places_bars_aligned_and_enables_decoding() {
    let mut a = TestFunction::new(1);
    a.header.set_bar(0, BarKind::Io, 0x40).unwrap();
    a.header
        .set_bar(
            1,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
    let mut b = TestFunction::new(2);
    b.header
        .set_bar(0, BarKind::Memory64 { prefetchable: true }, 0x4000)
        .unwrap();
    b.header.set_bar(4, BarKind::Io, 0x100).unwrap();
    let mut bus: PciBus<'_, 2> = PciBus::new();
    let aa = bus.attach(1, 0, &mut a).unwrap();
    let ba = bus.attach(2, 0, &mut b).unwrap();
    bus.assign_resources(
        ResourceWindow {
            base: 0xE000_1000,
            size: 0x1000_0000,
        },
        ResourceWindow {
            base: 0xC020,
            size: 0x1000,
        },
    )
    .unwrap();
    let mut placed = Vec::new();
    for (f, bar) in [(aa, 0), (aa, 1), (ba, 0), (ba, 4)] {
        let r = bus.bar_region(f, bar).unwrap();
        assert_eq!(r.base % r.size, 0, "{f} BAR {bar} misaligned");
        placed.push(r);
    }
    for (i, r) in placed.iter().enumerate() {
        for s in &placed[i + 1..] {
            if r.kind.is_memory() == s.kind.is_memory() {
                assert!(r.base + r.size <= s.base || s.base + s.size <= r.base);
            }
        }
        let window = if r.kind.is_memory() {
            0xE000_1000..0xF000_1000
        } else {
            0xC020..0xD020
        };
        assert!(window.contains(&r.base) && r.base + r.size <= window.end);
    }
    // Decoding is on in both functions' command registers.
    assert_eq!(read_config(&mut bus, 1, 0, 4, AccessWidth::Word) & 3, 3);
    assert_eq!(read_config(&mut bus, 2, 0, 4, AccessWidth::Word) & 3, 3);
    // A window that is too small is a typed error naming the BAR.
    let mut c = TestFunction::new(3);
    c.header
        .set_bar(
            3,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x10_0000,
        )
        .unwrap();
    let mut bus: PciBus<'_, 1> = PciBus::new();
    let ca = bus.attach(5, 0, &mut c).unwrap();
    let small = ResourceWindow {
        base: 0xE000_0000,
        size: 0x8_0000,
    };
    assert_eq!(
        bus.assign_resources(small, small),
        Err(BusError::NoSpace {
            address: ca,
            bar: 3,
            size: 0x10_0000
        })
    );
}

#[test]
fn attach_refuses_bad_taken_and_excess_addresses() {
    let mut f: Vec<TestFunction> = (0..7).map(TestFunction::new).collect();
    let [f0, f1, f2, f3, f4, f5, f6] = &mut f[..] else {
        unreachable!()
    };
    let mut bus: PciBus<'_, 2> = PciBus::new();
    assert_eq!(
        bus.attach(0, 0, f0).unwrap_err(),
        BusError::Occupied {
            address: addr(0, 0)
        }
    );
    assert_eq!(
        bus.attach(32, 0, f1).unwrap_err(),
        BusError::BadAddress {
            device: 32,
            function: 0
        }
    );
    assert_eq!(
        bus.attach(1, 8, f2).unwrap_err(),
        BusError::BadAddress {
            device: 1,
            function: 8
        }
    );
    bus.attach(1, 0, f3).unwrap();
    assert_eq!(
        bus.attach(1, 0, f4).unwrap_err(),
        BusError::Occupied {
            address: addr(1, 0)
        }
    );
    bus.attach(2, 0, f5).unwrap();
    assert_eq!(
        bus.attach(3, 0, f6).unwrap_err(),
        BusError::Full { capacity: 2 }
    );
}

#[test]
fn interrupt_status_follows_pending_and_disable_bit() {
    let mut t = TestFunction::new(1);
    t.header.set_interrupt_pin(Some(InterruptPin::IntB));
    t.header.set_interrupt_line(10);
    assert!(t.header.set_interrupt_pending(true));
    assert_eq!(t.header.status() & 0x8, 0x8);
    let mut bus: PciBus<'_, 1> = PciBus::new();
    bus.attach(6, 0, &mut t).unwrap();
    assert_eq!(read_config(&mut bus, 6, 0, 0x3C, AccessWidth::Word), 0x020A);
    // Setting INTERRUPT_DISABLE masks the pin but keeps the status bit.
    write_config(&mut bus, 6, 0, 0x04, AccessWidth::Word, 0x0400);
    assert!(!t.header.intx_level());
    assert_eq!(t.header.status() & 0x8, 0x8);
    assert!(!t.header.set_interrupt_pending(false));
    assert_eq!(t.header.status() & 0x8, 0);
    assert_eq!(BAR_COUNT, 6);
    assert_eq!(offset::INTERRUPT_PIN, 0x3D);
}

#[test]
fn bus_answers_bar_ports_and_the_memory_window_as_a_device() {
    use ponte_kernel::device::Mmio;
    let mut t = TestFunction::new(1);
    t.header.set_bar(0, BarKind::Io, 0x10).unwrap();
    t.header
        .set_bar(
            1,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
    let mut bus: PciBus<'_, 1> = PciBus::new();
    bus.attach(2, 0, &mut t).unwrap();
    bus.set_mmio_window_base(0xE000_0000);
    write_config(&mut bus, 2, 0, 0x10, AccessWidth::Dword, 0xD000);
    write_config(&mut bus, 2, 0, 0x14, AccessWidth::Dword, 0xE000_3000);
    write_config(&mut bus, 2, 0, 0x04, AccessWidth::Word, 0x3);
    assert_eq!(bus.io_read(0xD002, AccessWidth::Byte), 0x88);
    assert_eq!(bus.io_read(0xD010, AccessWidth::Byte), 0xFF);
    bus.io_write(0xD00F, AccessWidth::Byte, 0x5A);
    assert_eq!(
        Mmio::mmio_read(&mut bus, 0x3004, AccessWidth::Dword),
        0x5566_7788
    );
    assert_eq!(
        Mmio::mmio_read(&mut bus, 0x2FFC, AccessWidth::Dword),
        0xFFFF_FFFF
    );
    Mmio::mmio_write(&mut bus, 0x3FF8, AccessWidth::Qword, 7);
    assert_eq!(
        t.accesses,
        [
            (0, 2, AccessWidth::Byte, None),
            (0, 0xF, AccessWidth::Byte, Some(0x5A)),
            (1, 4, AccessWidth::Dword, None),
            (1, 0xFF8, AccessWidth::Qword, Some(7)),
        ]
    );
}

#[test]
fn firmware_assignment_keeps_32_bit_bars_below_4_gib() {
    let mut t = TestFunction::new(1);
    t.header
        .set_bar(
            0,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
    let mut bus: PciBus<'_, 1> = PciBus::new();
    let a = bus.attach(1, 0, &mut t).unwrap();
    let high = ResourceWindow {
        base: 0x1_0000_0000,
        size: 0x1000_0000,
    };
    let io = ResourceWindow {
        base: 0xC000,
        size: 0x1000,
    };
    assert_eq!(
        bus.assign_resources(high, io),
        Err(BusError::NoSpace {
            address: a,
            bar: 0,
            size: 0x1000
        })
    );
}

#[test]
fn direct_config_accesses_never_cross_a_dword() {
    let mut t = TestFunction::new(0xBEEF);
    let mut bus: PciBus<'_, 1> = PciBus::new();
    let a = bus.attach(1, 0, &mut t).unwrap();
    // Bytes 2..=3 of dword 0 are the device ID; bytes past it read as ones.
    assert_eq!(bus.config_read(a, 2, AccessWidth::Dword), 0xFFFF_BEEF);
    assert_eq!(bus.config_read(a, 3, AccessWidth::Word), 0xFFBE);
    assert_eq!(bus.config_read(a, 0, AccessWidth::Qword), 0xBEEF_1234);
    // A dword written at 0x3D reaches 0x3D..=0x3F only, not the next dword.
    bus.config_write(a, 0x3F, AccessWidth::Dword, 0xFFFF_FFFF);
    bus.config_write(a, 0x3C, AccessWidth::Byte, 0x0B);
    bus.config_write(a, 0x3B, AccessWidth::Word, 0x0000);
    assert_eq!(bus.config_read(a, 0x3C, AccessWidth::Byte), 0x0B);
}

#[test]
fn random_port_traffic_never_panics() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    };
    let mut t = TestFunction::new(1);
    t.header.set_bar(0, BarKind::Io, 0x20).unwrap();
    t.header
        .set_bar(
            2,
            BarKind::Memory64 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
    t.header.add_capability(0x09, &[1, 2, 3]).unwrap();
    let mut u = TestFunction::new(2);
    let mut bus: PciBus<'_, 2> = PciBus::new();
    bus.attach(1, 0, &mut t).unwrap();
    bus.attach(1, 3, &mut u).unwrap();
    let widths = [
        AccessWidth::Byte,
        AccessWidth::Word,
        AccessWidth::Dword,
        AccessWidth::Qword,
    ];
    for _ in 0..20_000 {
        let port = 0xCF8 + (next() % 8) as u16;
        let width = widths[(next() % 4) as usize];
        // Mostly enabled cycles to device 1, any function and register.
        let value = match next() % 3 {
            0 => 1 << 31 | 1 << 11 | (next() as u32 & 0x7FC),
            1 => next() as u32,
            _ => 0xFFFF_FFFF,
        };
        if next() % 2 == 0 {
            bus.io_write(port, width, value);
        } else {
            let v = bus.io_read(port, width);
            assert_eq!(v & !(width.mask() as u32), 0);
        }
        let addr = next();
        let _ = bus.memory_bar_read(addr, width);
        let _ = bus.io_bar_read(addr as u16, width);
    }
    // The bus still answers correctly afterwards.
    assert_eq!(
        read_config(&mut bus, 0, 0, 0, AccessWidth::Dword),
        0x1237_8086
    );
}

/// The ECAM offset of `register` in `bus:device.function`.
fn ecam(bus: u64, device: u64, function: u64, register: u64) -> u64 {
    bus << 20 | device << 15 | function << 12 | register
}

#[test]
fn ecam_reaches_the_same_registers_as_mechanism_one() {
    let mut t = TestFunction::new(0x42);
    t.header
        .set_bar(
            1,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x4000,
        )
        .unwrap();
    let mut bus: PciBus<'_, 1> = PciBus::new();
    bus.attach(3, 0, &mut t).unwrap();
    assert_eq!(
        bus.ecam_read(ecam(0, 0, 0, 0), AccessWidth::Dword),
        0x1237_8086
    );
    assert_eq!(
        bus.ecam_read(ecam(0, 3, 0, 0), AccessWidth::Dword),
        0x0042_1234
    );
    assert_eq!(bus.ecam_read(ecam(0, 3, 0, 2), AccessWidth::Word), 0x0042);
    assert_eq!(bus.ecam_read(ecam(0, 3, 0, 0x0B), AccessWidth::Byte), 0x01);
    // A BAR programmed through ECAM reads back through mechanism #1.
    bus.ecam_write(ecam(0, 3, 0, 0x14), AccessWidth::Dword, 0xFE00_0000);
    assert_eq!(
        read_config(&mut bus, 3, 0, 0x14, AccessWidth::Dword),
        0xFE00_0000
    );
    // A quadword is two dwords: vendor/device, then command/status.
    let qword = bus.ecam_read(ecam(0, 3, 0, 0), AccessWidth::Qword);
    assert_eq!(qword & 0xFFFF_FFFF, 0x0042_1234);
    assert_eq!(
        qword >> 32,
        u64::from(read_config(&mut bus, 3, 0, 4, AccessWidth::Dword))
    );
}

#[test]
fn ecam_extended_space_is_empty_and_absent_functions_read_ones() {
    let mut t = TestFunction::new(1);
    let mut bus: PciBus<'_, 1> = PciBus::new();
    bus.attach(3, 0, &mut t).unwrap();
    // No extended capabilities: the header at 0x100 is zero, and writes
    // there change nothing.
    bus.ecam_write(ecam(0, 3, 0, 0x100), AccessWidth::Dword, 0xDEAD_BEEF);
    assert_eq!(bus.ecam_read(ecam(0, 3, 0, 0x100), AccessWidth::Dword), 0);
    assert_eq!(bus.ecam_read(ecam(0, 3, 0, 0xFFC), AccessWidth::Dword), 0);
    assert_eq!(bus.ecam_read(ecam(0, 0, 0, 0x100), AccessWidth::Dword), 0);
    // Nobody at 00:04.0, 00:03.1, or on bus 1.
    assert_eq!(
        bus.ecam_read(ecam(0, 4, 0, 0), AccessWidth::Dword),
        0xFFFF_FFFF
    );
    assert_eq!(
        bus.ecam_read(ecam(0, 3, 1, 0x100), AccessWidth::Word),
        0xFFFF
    );
    assert_eq!(bus.ecam_read(ecam(1, 3, 0, 0), AccessWidth::Byte), 0xFF);
    // Offsets past 256 buses name no bus at all.
    assert_eq!(
        bus.ecam_read(ecam(256, 0, 0, 0), AccessWidth::Dword),
        0xFFFF_FFFF
    );
    assert_eq!(bus.ecam_read(u64::MAX - 3, AccessWidth::Qword), u64::MAX);
}
