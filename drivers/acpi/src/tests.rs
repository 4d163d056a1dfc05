//! ACPI tests: the tables are read back as an OS would (ACPI 6.5 chapter 5
//! layouts, checksums, pointers) and the DSDT's AML is re-parsed from the
//! grammar of chapter 20, checking every PkgLength.

use super::*;
use crate::aml::{eisa_id, pkg_length, Aml};
use core::cell::RefCell;
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

// ------------------------------------------------------------ AML reader

/// A data object as the test parser sees it.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(u64),
    Str(String),
    Buffer(Vec<u8>),
    Package(Vec<Value>),
    Name(String),
}

/// What a definition block declares, by absolute path.
#[derive(Debug, Default)]
struct Namespace {
    devices: Vec<String>,
    names: Vec<(String, Value)>,
}

impl Namespace {
    fn get(&self, path: &str) -> &Value {
        &self
            .names
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} not declared in {:?}", self.names))
            .1
    }
}

/// Decodes a PkgLength (ACPI 20.2.4): returns the value and the bytes used.
fn read_pkg_length(b: &[u8]) -> (usize, usize) {
    let lead = b[0];
    let follow = (lead >> 6) as usize;
    if follow == 0 {
        return ((lead & 0x3f) as usize, 1);
    }
    assert_eq!(
        lead & 0x30,
        0,
        "bits 5:4 of a multi-byte PkgLength are reserved"
    );
    let mut v = (lead & 0x0f) as usize;
    for i in 0..follow {
        v |= (b[1 + i] as usize) << (4 + 8 * i);
    }
    (v, 1 + follow)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn byte(&mut self) -> u8 {
        let v = self.b[self.pos];
        self.pos += 1;
        v
    }
    fn le(&mut self, n: usize) -> u64 {
        let mut v = 0u64;
        for i in 0..n {
            v |= (self.byte() as u64) << (8 * i);
        }
        v
    }
    /// PkgLength at the current position; returns the end it implies.
    fn pkg_end(&mut self, limit: usize) -> usize {
        let start = self.pos;
        let (len, used) = read_pkg_length(&self.b[self.pos..]);
        self.pos += used;
        let end = start + len;
        assert!(
            end <= limit,
            "package ends at {end}, beyond its parent's {limit}"
        );
        end
    }
    fn name_seg(&mut self) -> String {
        let seg = &self.b[self.pos..self.pos + 4];
        self.pos += 4;
        assert!(
            seg[0].is_ascii_uppercase() || seg[0] == b'_',
            "lead char {seg:?}"
        );
        assert!(seg[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_'));
        String::from_utf8(seg.to_vec()).unwrap()
    }
    fn name_string(&mut self) -> String {
        let mut out = String::new();
        while matches!(self.b[self.pos], b'\\' | b'^') {
            out.push(self.byte() as char);
        }
        let count = match self.b[self.pos] {
            0 => {
                self.pos += 1;
                0
            }
            0x2e => {
                self.pos += 1;
                2
            }
            0x2f => {
                self.pos += 1;
                self.byte() as usize
            }
            _ => 1,
        };
        let segs: Vec<String> = (0..count).map(|_| self.name_seg()).collect();
        out + &segs.join(".")
    }
    fn data(&mut self, end: usize) -> Value {
        let op = self.byte();
        match op {
            0x00 => Value::Int(0),
            0x01 => Value::Int(1),
            0xff => Value::Int(u64::MAX),
            0x0a => Value::Int(self.le(1)),
            0x0b => Value::Int(self.le(2)),
            0x0c => Value::Int(self.le(4)),
            0x0e => Value::Int(self.le(8)),
            0x0d => {
                let start = self.pos;
                while self.byte() != 0 {}
                Value::Str(String::from_utf8(self.b[start..self.pos - 1].to_vec()).unwrap())
            }
            0x11 => {
                let pkg_end = self.pkg_end(end);
                let Value::Int(size) = self.data(pkg_end) else {
                    panic!("buffer size is not an integer")
                };
                assert_eq!(
                    self.pos + size as usize,
                    pkg_end,
                    "buffer size vs PkgLength"
                );
                let bytes = self.b[self.pos..pkg_end].to_vec();
                self.pos = pkg_end;
                Value::Buffer(bytes)
            }
            0x12 => {
                let pkg_end = self.pkg_end(end);
                let count = self.byte() as usize;
                let mut items = Vec::new();
                while self.pos < pkg_end {
                    items.push(self.data(pkg_end));
                }
                assert_eq!(self.pos, pkg_end, "package elements overrun");
                assert_eq!(items.len(), count, "NumElements");
                Value::Package(items)
            }
            b'\\' | b'^' | b'_' | b'A'..=b'Z' | 0x2e | 0x2f => {
                self.pos -= 1;
                Value::Name(self.name_string())
            }
            other => panic!("unexpected data opcode {other:#x} at {}", self.pos - 1),
        }
    }
    fn term_list(&mut self, end: usize, scope: &str, ns: &mut Namespace) {
        while self.pos < end {
            let op = self.byte();
            match op {
                0x10 | 0x14 => {
                    let pkg_end = self.pkg_end(end);
                    let path = join(scope, &self.name_string());
                    if op == 0x14 {
                        let _flags = self.byte();
                    }
                    self.term_list(pkg_end, &path, ns);
                    assert_eq!(self.pos, pkg_end);
                }
                0x5b => {
                    assert_eq!(self.byte(), 0x82, "only Device is emitted");
                    let pkg_end = self.pkg_end(end);
                    let path = join(scope, &self.name_string());
                    ns.devices.push(path.clone());
                    self.term_list(pkg_end, &path, ns);
                    assert_eq!(self.pos, pkg_end);
                }
                0x08 => {
                    let path = join(scope, &self.name_string());
                    let v = self.data(end);
                    ns.names.push((path, v));
                }
                0xa4 => {
                    let _ = self.data(end);
                }
                other => panic!("unexpected opcode {other:#x} at {}", self.pos - 1),
            }
        }
        assert_eq!(self.pos, end, "term list overruns its package");
    }
}

fn join(scope: &str, name: &str) -> String {
    if name.starts_with('\\') {
        name.to_string()
    } else if scope == "\\" {
        format!("\\{name}")
    } else {
        format!("{scope}.{name}")
    }
}

fn parse_aml(aml: &[u8]) -> Namespace {
    let mut ns = Namespace::default();
    let mut p = Parser { b: aml, pos: 0 };
    p.term_list(aml.len(), "\\", &mut ns);
    ns
}

/// A resource descriptor as read back (ACPI 6.4).
#[derive(Debug, PartialEq)]
struct Descriptor {
    tag: u8,
    body: Vec<u8>,
}

/// Splits a resource template into descriptors; it must end with an End
/// Tag exactly at the buffer's end.
fn descriptors(buf: &[u8]) -> Vec<Descriptor> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let tag = buf[i];
        if tag & 0x80 != 0 {
            let len = u16::from_le_bytes([buf[i + 1], buf[i + 2]]) as usize;
            out.push(Descriptor {
                tag,
                body: buf[i + 3..i + 3 + len].to_vec(),
            });
            i += 3 + len;
        } else {
            let name = (tag >> 3) & 0xf;
            let len = (tag & 7) as usize;
            if name == 0xf {
                assert_eq!(len, 1, "End Tag length");
                assert_eq!(i + 2, buf.len(), "End Tag is last");
                return out;
            }
            out.push(Descriptor {
                tag: name,
                body: buf[i + 1..i + 1 + len].to_vec(),
            });
            i += 1 + len;
        }
    }
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

// ------------------------------------------------------------ AML encoder

#[test]
fn pkg_length_uses_the_fewest_bytes_and_counts_itself() {
    for body in [
        0usize, 1, 62, 63, 64, 0xffd, 0xffe, 0xf_fffd, 0xf_fffe, 0xfff_fffb,
    ] {
        let (bytes, n) = pkg_length(body).unwrap();
        let (value, used) = read_pkg_length(&bytes);
        assert_eq!(used, n);
        assert_eq!(value, body + n, "PkgLength of a {body}-byte body");
        let fewest = match body + 1 {
            t if t < 0x40 => 1,
            _ if body + 2 < 0x1000 => 2,
            _ if body + 3 < 0x10_0000 => 3,
            _ => 4,
        };
        assert_eq!(n, fewest, "body {body}");
    }
    assert_eq!(pkg_length(62).unwrap().0[0], 63);
    assert_eq!(&pkg_length(63).unwrap().0[..2], &[0x41, 0x04]);
    assert!(pkg_length(0xfff_fffc).is_err());
}

#[test]
fn eisa_ids_compress_as_the_asl_macro() {
    // Values as iasl and QEMU emit them.
    assert_eq!(eisa_id("PNP0A03"), Ok(0x030a_d041));
    assert_eq!(eisa_id("PNP0501"), Ok(0x0105_d041));
    assert_eq!(eisa_id("PNP0A08"), Ok(0x080a_d041));
    assert_eq!(eisa_id("PNP0A0"), Err(AcpiError::BadEisaId));
    assert_eq!(eisa_id("pnp0A03"), Err(AcpiError::BadEisaId));
    assert_eq!(eisa_id("PNP0a03"), Err(AcpiError::BadEisaId));
    assert_eq!(eisa_id("PNP0G03"), Err(AcpiError::BadEisaId));
}

#[test]
fn name_strings_follow_the_grammar() {
    let enc = |s: &str| {
        let mut buf = [0u8; 64];
        let mut a = Aml::new(&mut buf);
        a.name_string(s).map(|()| a.as_bytes().to_vec())
    };
    assert_eq!(enc("_HID").unwrap(), b"_HID");
    assert_eq!(enc("\\_S5").unwrap(), b"\\_S5_");
    assert_eq!(enc("\\_SB_.PCI0").unwrap(), b"\\\x2e_SB_PCI0");
    assert_eq!(enc("^^COM1").unwrap(), b"^^COM1");
    assert_eq!(enc("A.B.C").unwrap(), b"\x2f\x03A___B___C___");
    assert_eq!(enc("\\").unwrap(), b"\\\x00");
    assert_eq!(enc(""), Err(AcpiError::BadName { position: 0 }));
    assert_eq!(enc("1ABC"), Err(AcpiError::BadName { position: 0 }));
    assert_eq!(enc("ABCDE"), Err(AcpiError::BadName { position: 0 }));
    assert_eq!(enc("_SB_.pci0"), Err(AcpiError::BadName { position: 5 }));
    assert_eq!(enc("_SB_..X"), Err(AcpiError::BadName { position: 5 }));
    assert_eq!(enc("^\\X"), Err(AcpiError::BadName { position: 1 }));
}

#[test]
fn integers_use_the_shortest_encoding() {
    let enc = |v: u64| {
        let mut buf = [0u8; 16];
        let mut a = Aml::new(&mut buf);
        a.integer(v).unwrap();
        a.as_bytes().to_vec()
    };
    assert_eq!(enc(0), [0x00]);
    assert_eq!(enc(1), [0x01]);
    assert_eq!(enc(2), [0x0a, 2]);
    assert_eq!(enc(0x1234), [0x0b, 0x34, 0x12]);
    assert_eq!(enc(0xfec0_0000), [0x0c, 0, 0, 0xc0, 0xfe]);
    assert_eq!(enc(1 << 40), [0x0e, 0, 0, 0, 0, 0, 1, 0, 0]);
}

#[test]
fn nested_objects_reparse_with_exact_package_lengths() {
    let mut buf = vec![0u8; 4096];
    let mut a = Aml::new(&mut buf);
    a.scope("\\_SB_", |a| {
        a.device("DEV0", |a| {
            a.name("_HID", |a| a.string("LNRO0005"))?;
            // A body long enough to need a two-byte PkgLength.
            a.name("BIG_", |a| a.buffer(|a| a.raw(&[0x55; 100])))?;
            a.method("_STA", 0, false, |a| a.return_value(|a| a.integer(0x0f)))
        })
    })
    .unwrap();
    let bytes = a.as_bytes().to_vec();
    let ns = parse_aml(&bytes);
    assert_eq!(ns.devices, ["\\_SB_.DEV0"]);
    assert_eq!(*ns.get("\\_SB_.DEV0._HID"), Value::Str("LNRO0005".into()));
    assert_eq!(*ns.get("\\_SB_.DEV0.BIG_"), Value::Buffer(vec![0x55; 100]));
    // The outer scope's PkgLength is the rest of the stream.
    let (len, _) = read_pkg_length(&bytes[1..]);
    assert_eq!(1 + len, bytes.len());
}

#[test]
fn a_full_buffer_is_an_error_not_a_panic() {
    // ScopeOp, PkgLength, \_SB_ (7); ExtOpPrefix DeviceOp, PkgLength, DEV0
    // (7); NameOp _UID DWordConst (10): 24 bytes, all needed at once.
    let expected: &[u8] = b"\x10\x17\\_SB_\x5b\x82\x0fDEV0\x08_UID\x0c\x78\x56\x34\x12";
    for size in 0..40 {
        let mut buf = vec![0u8; size];
        let mut a = Aml::new(&mut buf);
        let r = a.scope("\\_SB_", |a| {
            a.device("DEV0", |a| a.name("_UID", |a| a.integer(0x1234_5678)))
        });
        if size >= 24 {
            r.unwrap();
            assert_eq!(a.as_bytes(), expected);
        } else {
            assert!(
                matches!(r, Err(AcpiError::BufferTooSmall { .. })),
                "size {size}"
            );
        }
    }
    let mut buf = vec![0u8; 4096];
    let mut a = Aml::new(&mut buf);
    let r = a.package(|p| (0..256).try_for_each(|_| p.integer(0)));
    assert_eq!(r, Err(AcpiError::TooManyElements { count: 256 }));
    assert_eq!(
        a.method("X", 8, false, |_| Ok(())),
        Err(AcpiError::TooManyArguments { args: 8 })
    );
}

// ------------------------------------------------------------ tables

const IO_WINDOWS: [IoWindow; 2] = [
    IoWindow {
        start: 0,
        end: 0xcf7,
    },
    IoWindow {
        start: 0xd00,
        end: 0xffff,
    },
];
const MMIO_WINDOWS: [MmioWindow; 2] = [
    MmioWindow {
        start: 0xc000_0000,
        end: 0xfebf_ffff,
    },
    MmioWindow {
        start: 0x80_0000_0000,
        end: 0x8f_ffff_ffff,
    },
];
const ROUTES: [PciIrqRoute; 3] = [
    PciIrqRoute {
        slot: 1,
        pin: 0,
        gsi: 16,
    },
    PciIrqRoute {
        slot: 2,
        pin: 0,
        gsi: 17,
    },
    PciIrqRoute {
        slot: 2,
        pin: 1,
        gsi: 18,
    },
];
const VIRTIO: [VirtioMmio; 2] = [
    VirtioMmio {
        base: 0xd000_0000,
        len: 0x200,
        gsi: 5,
        edge: true,
    },
    VirtioMmio {
        base: 0xd000_0200,
        len: 0x200,
        gsi: 6,
        edge: false,
    },
];
const OVERRIDES: [InterruptOverride; 2] = InterruptOverride::pc_defaults(9);
const BASE: u64 = 0x1ff_0000;

fn config(apic_ids: &[u32]) -> AcpiConfig<'_> {
    AcpiConfig {
        oem: OemInfo {
            oem_id: *b"PONTE ",
            oem_table_id: *b"PONTEVM ",
            oem_revision: 1,
            creator_id: *b"PNTE",
            creator_revision: 1,
        },
        madt: MadtConfig {
            apic_ids,
            local_apic_address: 0xfee0_0000,
            pcat_compat: true,
            io_apic_id: 8,
            io_apic_address: 0xfec0_0000,
            io_apic_gsi_base: 0,
            overrides: &OVERRIDES,
            nmi_lint: 1,
        },
        fadt: FadtConfig {
            sci_irq: 9,
            pm1a_event_block: 0x600,
            pm1a_control_block: 0x604,
            pm_timer_block: Some(0x608),
            reset: Some((0xcf9, 0x06)),
            boot_arch: tables::BOOT_ARCH_LEGACY_DEVICES | tables::BOOT_ARCH_VGA_NOT_PRESENT,
        },
        hpet: Some(HpetConfig {
            event_timer_block_id: 0x8086_a201,
            address: 0xfed0_0000,
            min_tick: 128,
        }),
        mcfg: Some(McfgConfig {
            base: 0xb000_0000,
            segment: 0,
            bus_start: 0,
            bus_end: 0xff,
        }),
        dsdt: DsdtConfig {
            pci: Some(PciRoot {
                segment: 0,
                bus_start: 0,
                bus_end: 0xff,
                io_windows: &IO_WINDOWS,
                mmio_windows: &MMIO_WINDOWS,
                irq_routes: &ROUTES,
            }),
            com1: true,
            virtio_mmio: &VIRTIO,
            s5_sleep_type: 5,
        },
    }
}

fn build_region(cfg: &AcpiConfig<'_>) -> (Vec<u8>, AcpiLayout) {
    let mut buf = vec![0xeeu8; 8192];
    let layout = build(cfg, BASE, &mut buf).unwrap();
    buf.truncate(layout.len as usize);
    (buf, layout)
}

/// The table at guest address `addr` in the region, checked: its length
/// field within the region and its bytes summing to zero.
fn table<'a>(region: &'a [u8], addr: u64, signature: &[u8; 4]) -> &'a [u8] {
    let off = (addr - BASE) as usize;
    assert_eq!(&region[off..off + 4], signature);
    let len = le32(region, off + 4) as usize;
    let t = &region[off..off + len];
    assert_eq!(
        t.iter().fold(0u8, |s, &b| s.wrapping_add(b)),
        0,
        "{} checksum",
        String::from_utf8_lossy(signature)
    );
    assert_eq!(&t[10..16], b"PONTE ", "OEM ID");
    t
}

#[test]
fn rsdp_and_xsdt_point_at_every_table() {
    let (region, layout) = build_region(&config(&[0, 1, 2, 3]));
    assert_eq!(layout.rsdp, BASE);
    let rsdp = &region[..36];
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    let sum = |b: &[u8]| b.iter().fold(0u8, |s, &x| s.wrapping_add(x));
    assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(sum(rsdp), 0, "extended checksum");
    assert_eq!(rsdp[15], 2, "revision");
    assert_eq!(le32(rsdp, 20), 36, "length");
    assert_eq!(&rsdp[9..15], b"PONTE ");
    let xsdt_addr = le64(rsdp, 24);
    assert_eq!(xsdt_addr, layout.xsdt);
    let xsdt = table(&region, xsdt_addr, b"XSDT");
    assert_eq!(xsdt.len(), 36 + 8 * 4);
    assert_eq!(xsdt[8], 1, "XSDT revision");
    let pointed: Vec<[u8; 4]> = (0..4)
        .map(|i| {
            let addr = le64(xsdt, 36 + 8 * i);
            let off = (addr - BASE) as usize;
            region[off..off + 4].try_into().unwrap()
        })
        .collect();
    assert_eq!(pointed, [*b"FACP", *b"APIC", *b"HPET", *b"MCFG"]);
    assert_eq!(
        layout.hpet.map(|a| table(&region, a, b"HPET").len()),
        Some(56)
    );
    // Without HPET and MCFG, the XSDT lists FADT and MADT only.
    let mut cfg = config(&[0]);
    cfg.hpet = None;
    cfg.mcfg = None;
    let (region, layout) = build_region(&cfg);
    assert_eq!(table(&region, layout.xsdt, b"XSDT").len(), 36 + 16);
    assert_eq!((layout.hpet, layout.mcfg), (None, None));
}

#[test]
fn fadt_describes_the_pm_hardware_and_points_at_dsdt_and_facs() {
    let (region, layout) = build_region(&config(&[0]));
    let fadt = table(&region, layout.fadt, b"FACP");
    assert_eq!(fadt.len(), 276);
    assert_eq!(fadt[8], 6, "major revision");
    assert_eq!(fadt[131], 5, "minor revision");
    // DSDT (offset 40) and X_DSDT (offset 140) agree.
    assert_eq!(u64::from(le32(fadt, 40)), layout.dsdt);
    assert_eq!(le64(fadt, 140), layout.dsdt);
    table(&region, layout.dsdt, b"DSDT");
    // FIRMWARE_CTRL (36) holds the FACS (64-aligned, below 4 GiB), and
    // X_FIRMWARE_CTRL (132) is 0 so the OS does not install it twice.
    assert_eq!(u64::from(le32(fadt, 36)), layout.facs);
    assert_eq!(le64(fadt, 132), 0);
    assert_eq!(layout.facs % 64, 0);
    let facs_off = (layout.facs - BASE) as usize;
    assert_eq!(&region[facs_off..facs_off + 4], b"FACS");
    assert_eq!(le32(&region, facs_off + 4), 64);
    assert_eq!(le16(fadt, 46), 9, "SCI_INT");
    assert_eq!(le32(fadt, 48), 0, "SMI_CMD: always in ACPI mode");
    assert_eq!(le32(fadt, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(le32(fadt, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(le32(fadt, 76), 0x608, "PM_TMR_BLK");
    assert_eq!((fadt[88], fadt[89], fadt[91]), (4, 2, 4), "block lengths");
    let flags = le32(fadt, 112);
    assert_eq!(flags & (1 << 20), 0, "not HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 8), 0, "TMR_VAL_EXT");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_eq!(le16(fadt, 109), 0x5, "IAPC_BOOT_ARCH");
    // RESET_REG: system I/O 0xcf9, value 6.
    assert_eq!(
        (fadt[116], fadt[117], le64(fadt, 120), fadt[128]),
        (1, 8, 0xcf9, 6)
    );
    // X_PM1a_EVT_BLK (148) and X_PM1a_CNT_BLK (172) match the 32-bit ones.
    assert_eq!((fadt[148], fadt[149], le64(fadt, 152)), (1, 32, 0x600));
    assert_eq!((fadt[172], fadt[173], le64(fadt, 176)), (1, 16, 0x604));
    assert_eq!((fadt[208], fadt[209], le64(fadt, 212)), (1, 32, 0x608));
}

/// MADT entries as (type, body) after the 44-byte fixed part.
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 44;
    while i < madt.len() {
        let (kind, len) = (madt[i], madt[i + 1] as usize);
        assert!(len >= 2 && i + len <= madt.len(), "entry at {i}");
        out.push((kind, madt[i..i + len].to_vec()));
        i += len;
    }
    assert_eq!(i, madt.len(), "entries fill the table exactly");
    out
}

#[test]
fn madt_entries_parse_back() {
    let (region, layout) = build_region(&config(&[0, 1, 2, 3]));
    let madt = table(&region, layout.madt, b"APIC");
    assert_eq!(le32(madt, 36), 0xfee0_0000, "local APIC address");
    assert_eq!(le32(madt, 40) & 1, 1, "PCAT_COMPAT");
    let entries = madt_entries(madt);
    let lapics: Vec<(u8, u8, u32)> = entries
        .iter()
        .filter(|(t, _)| *t == 0)
        .map(|(_, e)| {
            assert_eq!(e.len(), 8);
            (e[2], e[3], le32(e, 4))
        })
        .collect();
    assert_eq!(lapics, [(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1)]);
    let ioapic: Vec<&Vec<u8>> = entries
        .iter()
        .filter(|(t, _)| *t == 1)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(ioapic.len(), 1);
    assert_eq!(ioapic[0].len(), 12);
    assert_eq!(
        (ioapic[0][2], le32(ioapic[0], 4), le32(ioapic[0], 8)),
        (8, 0xfec0_0000, 0)
    );
    let overrides: Vec<(u8, u8, u32, u16)> = entries
        .iter()
        .filter(|(t, _)| *t == 2)
        .map(|(_, e)| {
            assert_eq!(e.len(), 10);
            (e[2], e[3], le32(e, 4), le16(e, 8))
        })
        .collect();
    // IRQ0 -> GSI2 conforming; SCI IRQ 9 level (0b11 << 2), active low (0b11).
    assert_eq!(overrides, [(0, 0, 2, 0), (0, 9, 9, 0x000f)]);
    let nmis: Vec<&Vec<u8>> = entries
        .iter()
        .filter(|(t, _)| *t == 4)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(nmis.len(), 1);
    assert_eq!(nmis[0].len(), 6);
    assert_eq!(
        (nmis[0][2], le16(nmis[0], 3), nmis[0][5]),
        (0xff, 0, 1),
        "all CPUs, LINT1"
    );
}

#[test]
fn madt_switches_to_x2apic_entries_for_large_ids() {
    let (region, layout) = build_region(&config(&[0, 300]));
    let madt = table(&region, layout.madt, b"APIC");
    let entries = madt_entries(madt);
    let x2: Vec<(u32, u32, u32)> = entries
        .iter()
        .filter(|(t, _)| *t == 9)
        .map(|(_, e)| {
            assert_eq!(e.len(), 16);
            (le32(e, 4), le32(e, 8), le32(e, 12))
        })
        .collect();
    assert_eq!(x2, [(0, 1, 0), (300, 1, 1)]);
    assert!(entries.iter().all(|(t, _)| *t != 0 && *t != 4));
    let nmi: Vec<&Vec<u8>> = entries
        .iter()
        .filter(|(t, _)| *t == 0x0a)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(nmi.len(), 1);
    assert_eq!((le32(nmi[0], 4), nmi[0][8]), (u32::MAX, 1));
}

#[test]
fn tables_above_4_gib_use_only_the_64_bit_pointers() {
    let base = 0x1_0000_0000;
    let mut buf = vec![0u8; 8192];
    let layout = build(&config(&[0]), base, &mut buf).unwrap();
    let off = (layout.fadt - base) as usize;
    let fadt = &buf[off..off + 276];
    assert_eq!((le32(fadt, 36), le32(fadt, 40)), (0, 0));
    assert_eq!(le64(fadt, 132), layout.facs);
    assert_eq!(le64(fadt, 140), layout.dsdt);
    assert_eq!(le64(&buf, 24), layout.xsdt);
    assert_eq!(fadt.iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
}

#[test]
fn hpet_and_mcfg_fields() {
    let (region, layout) = build_region(&config(&[0]));
    let hpet = table(&region, layout.hpet.unwrap(), b"HPET");
    assert_eq!(le32(hpet, 36), 0x8086_a201);
    assert_eq!(
        (hpet[40], le64(hpet, 44)),
        (0, 0xfed0_0000),
        "system memory"
    );
    assert_eq!(le16(hpet, 53), 128);
    let mcfg = table(&region, layout.mcfg.unwrap(), b"MCFG");
    assert_eq!(mcfg.len(), 60);
    assert_eq!(le64(mcfg, 44), 0xb000_0000);
    assert_eq!((le16(mcfg, 52), mcfg[54], mcfg[55]), (0, 0, 0xff));
}

#[test]
fn dsdt_aml_reparses_into_the_described_devices() {
    let (region, layout) = build_region(&config(&[0]));
    let dsdt = table(&region, layout.dsdt, b"DSDT");
    assert_eq!(dsdt[8], 2, "revision 2: 64-bit integers");
    let ns = parse_aml(&dsdt[36..]);
    assert_eq!(
        ns.devices,
        ["\\_SB_.PCI0", "\\_SB_.COM1", "\\_SB_.VR00", "\\_SB_.VR01"]
    );

    assert_eq!(*ns.get("\\_SB_.PCI0._HID"), Value::Int(0x030a_d041));
    assert_eq!(*ns.get("\\_SB_.PCI0._BBN"), Value::Int(0));
    let Value::Buffer(crs) = ns.get("\\_SB_.PCI0._CRS") else {
        panic!("_CRS is not a buffer")
    };
    let d = descriptors(crs);
    // WordBusNumber: large item 0x88, type 2, producer with fixed min/max.
    assert_eq!(d[0].tag, 0x88);
    assert_eq!((d[0].body[0], d[0].body[1] & 0x0d), (2, 0x0c));
    assert_eq!(
        (
            le16(&d[0].body, 5),
            le16(&d[0].body, 7),
            le16(&d[0].body, 11)
        ),
        (0, 0xff, 0x100)
    );
    // IO(Decode16, 0xcf8, 0xcf8, 1, 8): small item 8, length 7.
    assert_eq!(d[1].tag, 0x8);
    assert_eq!(d[1].body, [1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8]);
    // WordIO windows: type 1, min, max, length.
    for (desc, w) in d[2..4].iter().zip(IO_WINDOWS) {
        assert_eq!((desc.tag, desc.body[0]), (0x88, 1));
        assert_eq!(
            (
                le16(&desc.body, 5),
                le16(&desc.body, 7),
                le16(&desc.body, 11)
            ),
            (w.start, w.end, w.end - w.start + 1)
        );
    }
    // DWordMemory below 4 GiB, QWordMemory above.
    assert_eq!((d[4].tag, d[4].body[0], d[4].body.len()), (0x87, 0, 23));
    assert_eq!(
        (le32(&d[4].body, 7), le32(&d[4].body, 11)),
        (0xc000_0000, 0xfebf_ffff)
    );
    assert_eq!(le32(&d[4].body, 19), 0x3ec0_0000);
    assert_eq!((d[5].tag, d[5].body[0], d[5].body.len()), (0x8a, 0, 43));
    assert_eq!(le64(&d[5].body, 35), 0x10_0000_0000);
    assert_eq!(d.len(), 6);

    let Value::Package(prt) = ns.get("\\_SB_.PCI0._PRT") else {
        panic!("_PRT is not a package")
    };
    let expected: Vec<Value> = ROUTES
        .iter()
        .map(|r| {
            Value::Package(vec![
                Value::Int((u64::from(r.slot) << 16) | 0xffff),
                Value::Int(r.pin.into()),
                Value::Int(0),
                Value::Int(r.gsi.into()),
            ])
        })
        .collect();
    assert_eq!(*prt, expected);

    assert_eq!(*ns.get("\\_SB_.COM1._HID"), Value::Int(0x0105_d041));
    let Value::Buffer(com) = ns.get("\\_SB_.COM1._CRS") else {
        panic!()
    };
    let d = descriptors(com);
    assert_eq!(d[0].body, [1, 0xf8, 0x03, 0xf8, 0x03, 1, 8]);
    assert_eq!(
        (d[1].tag, d[1].body.as_slice()),
        (0x4, &[0x10, 0x00][..]),
        "IRQ 4"
    );

    assert_eq!(*ns.get("\\_SB_.VR01._HID"), Value::Str("LNRO0005".into()));
    assert_eq!(*ns.get("\\_SB_.VR01._UID"), Value::Int(1));
    let Value::Buffer(vr) = ns.get("\\_SB_.VR01._CRS") else {
        panic!()
    };
    let d = descriptors(vr);
    assert_eq!(
        (d[0].tag, d[0].body[0]),
        (0x86, 1),
        "Memory32Fixed, read/write"
    );
    assert_eq!(
        (le32(&d[0].body, 1), le32(&d[0].body, 5)),
        (0xd000_0200, 0x200)
    );
    // Extended interrupt: consumer, level (bit 1 clear), active high, 1 GSI.
    assert_eq!((d[1].tag, d[1].body[0], d[1].body[1]), (0x89, 0x01, 1));
    assert_eq!(le32(&d[1].body, 2), 6);
    let Value::Buffer(vr0) = ns.get("\\_SB_.VR00._CRS") else {
        panic!()
    };
    assert_eq!(descriptors(vr0)[1].body[0], 0x03, "edge");

    assert_eq!(
        *ns.get("\\_S5_"),
        Value::Package(vec![
            Value::Int(5),
            Value::Int(5),
            Value::Int(0),
            Value::Int(0)
        ])
    );
}

#[test]
fn bad_configurations_give_typed_errors() {
    let mut buf = vec![0u8; 8192];
    assert_eq!(
        build(&config(&[0]), BASE + 16, &mut buf),
        Err(AcpiError::Misaligned { base: BASE + 16 })
    );
    assert_eq!(
        build(&config(&[]), BASE, &mut buf),
        Err(AcpiError::NoProcessors)
    );
    assert_eq!(
        build(&config(&[0]), !63u64, &mut buf),
        Err(AcpiError::Overflow)
    );
    let routes = [PciIrqRoute {
        slot: 32,
        pin: 0,
        gsi: 16,
    }];
    let mut cfg = config(&[0]);
    if let Some(pci) = cfg.dsdt.pci.as_mut() {
        pci.irq_routes = &routes;
    }
    assert_eq!(
        build(&cfg, BASE, &mut buf),
        Err(AcpiError::BadPciRoute { slot: 32, pin: 0 })
    );
    let windows = [IoWindow {
        start: 0x2000,
        end: 0x1000,
    }];
    let mut cfg = config(&[0]);
    if let Some(pci) = cfg.dsdt.pci.as_mut() {
        pci.io_windows = &windows;
    }
    assert_eq!(
        build(&cfg, BASE, &mut buf),
        Err(AcpiError::BadRange {
            start: 0x2000,
            end: 0x1000
        })
    );
    // Every buffer size short of the region fails cleanly.
    let (region, _) = build_region(&config(&[0, 1]));
    for size in (0..region.len()).step_by(7) {
        let mut small = vec![0u8; size];
        assert!(matches!(
            build(&config(&[0, 1]), BASE, &mut small),
            Err(AcpiError::BufferTooSmall { .. })
        ));
    }
}

/// Guest memory over one buffer.
struct FakeMemory {
    base: u64,
    bytes: RefCell<Vec<u8>>,
}

impl GuestMemory for FakeMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let off = (addr - self.base) as usize;
        buf.copy_from_slice(&self.bytes.borrow()[off..off + buf.len()]);
        Ok(())
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let len = data.len() as u64;
        let mut bytes = self.bytes.borrow_mut();
        if addr < self.base || addr + len > self.base + bytes.len() as u64 {
            return Err(MemoryError::NotRam { addr, len });
        }
        let off = (addr - self.base) as usize;
        bytes[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn write_copies_the_region_into_guest_memory() {
    let mem = FakeMemory {
        base: BASE,
        bytes: RefCell::new(vec![0; 0x1_0000]),
    };
    let mut scratch = vec![0u8; 8192];
    let layout = write(&mem, &config(&[0, 1]), BASE, &mut scratch).unwrap();
    let (region, expected) = build_region(&config(&[0, 1]));
    assert_eq!(layout, expected);
    assert_eq!(mem.bytes.borrow()[..region.len()], region[..]);
    // A region outside guest memory is reported, not lost.
    let small = FakeMemory {
        base: BASE,
        bytes: RefCell::new(vec![0; 64]),
    };
    assert!(matches!(
        write(&small, &config(&[0]), BASE, &mut scratch),
        Err(AcpiError::Memory(MemoryError::NotRam { .. }))
    ));
}

// ------------------------------------------------------------ MP table

fn mp_config<'a>(apic_ids: &'a [u8], routes: &'a [PciIrqRoute]) -> mptable::MpConfig<'a> {
    mptable::MpConfig {
        oem_id: *b"PONTE   ",
        product_id: *b"PONTEVM     ",
        apic_ids,
        cpu_signature: 0x000906ea,
        cpu_features: 0x0000_0201,
        local_apic_address: 0xfee0_0000,
        io_apic_id: 8,
        io_apic_address: 0xfec0_0000,
        pci_routes: routes,
    }
}

#[test]
fn mp_table_parses_back_per_the_specification() {
    let mut buf = vec![0xeeu8; 4096];
    let base = 0x9_fc00;
    let layout = mptable::build(&mp_config(&[0, 1], &ROUTES), base, &mut buf).unwrap();
    let sum = |b: &[u8]| b.iter().fold(0u8, |s, &x| s.wrapping_add(x));
    // Floating pointer (MP spec 4.1): "_MP_", pointer, 1 paragraph, 1.4.
    let fp = &buf[..16];
    assert_eq!(&fp[..4], b"_MP_");
    assert_eq!(u64::from(le32(fp, 4)), layout.table);
    assert_eq!((fp[8], fp[9], fp[11]), (1, 4, 0));
    assert_eq!(sum(fp), 0);
    // Configuration table header (4.2).
    let off = (layout.table - base) as usize;
    let len = le16(&buf, off + 4) as usize;
    assert_eq!(off + len, layout.len as usize);
    let t = &buf[off..off + len];
    assert_eq!(&t[..4], b"PCMP");
    assert_eq!((t[6], sum(t)), (4, 0));
    assert_eq!(le32(t, 36), 0xfee0_0000);
    let count = le16(t, 34) as usize;
    // Entries (4.3): processors are 20 bytes, the rest 8.
    let mut entries = Vec::new();
    let mut i = 44;
    while i < t.len() {
        let size = if t[i] == 0 { 20 } else { 8 };
        entries.push(t[i..i + size].to_vec());
        i += size;
    }
    assert_eq!(i, t.len());
    assert_eq!(entries.len(), count);
    let cpus: Vec<(u8, u8)> = entries
        .iter()
        .filter(|e| e[0] == 0)
        .map(|e| (e[1], e[3]))
        .collect();
    assert_eq!(cpus, [(0, 3), (1, 1)], "APIC IDs, EN and BP flags");
    let buses: Vec<(u8, &[u8])> = entries
        .iter()
        .filter(|e| e[0] == 1)
        .map(|e| (e[1], &e[2..8]))
        .collect();
    assert_eq!(buses, [(0, &b"PCI   "[..]), (1, &b"ISA   "[..])]);
    let ioapic: Vec<&Vec<u8>> = entries.iter().filter(|e| e[0] == 2).collect();
    assert_eq!(ioapic.len(), 1);
    assert_eq!(
        (ioapic[0][1], ioapic[0][3] & 1, le32(ioapic[0], 4)),
        (8, 1, 0xfec0_0000)
    );
    // I/O interrupts: (type, flags, bus, source irq, apic, pin).
    let ints: Vec<(u8, u16, u8, u8, u8, u8)> = entries
        .iter()
        .filter(|e| e[0] == 3)
        .map(|e| (e[1], le16(e, 2), e[4], e[5], e[6], e[7]))
        .collect();
    assert!(ints.contains(&(3, 0, 1, 0, 8, 0)), "ExtINT on pin 0");
    assert!(ints.contains(&(0, 0, 1, 0, 8, 2)), "IRQ 0 on pin 2");
    assert!(ints.contains(&(0, 0, 1, 4, 8, 4)), "IRQ 4 on pin 4");
    assert!(
        !ints.iter().any(|i| i.3 == 2 && i.2 == 1),
        "no cascade IRQ 2"
    );
    // PCI: source = slot << 2 | pin, level-triggered active-low.
    assert!(ints.contains(&(0, 0x0f, 0, (2 << 2) | 1, 8, 18)));
    assert!(ints.contains(&(0, 0x0f, 0, 1 << 2, 8, 16)));
    let locals: Vec<(u8, u8, u8)> = entries
        .iter()
        .filter(|e| e[0] == 4)
        .map(|e| (e[1], e[6], e[7]))
        .collect();
    assert_eq!(
        locals,
        [(3, 0xff, 0), (1, 0xff, 1)],
        "ExtINT on LINT0, NMI on LINT1"
    );
}

#[test]
fn mp_table_rejects_what_it_cannot_describe() {
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        mptable::build(&mp_config(&[0], &[]), 0x9_fc08, &mut buf),
        Err(AcpiError::Misaligned { base: 0x9_fc08 })
    );
    assert_eq!(
        mptable::build(&mp_config(&[], &[]), 0x9_fc00, &mut buf),
        Err(AcpiError::NoProcessors)
    );
    assert!(matches!(
        mptable::build(&mp_config(&[0, 0xff], &[]), 0x9_fc00, &mut buf),
        Err(AcpiError::TooManyProcessors { .. })
    ));
    assert_eq!(
        mptable::build(&mp_config(&[0], &[]), 0xffff_fff0, &mut buf),
        Err(AcpiError::Overflow)
    );
    let mut small = vec![0u8; 100];
    assert!(matches!(
        mptable::build(&mp_config(&[0], &[]), 0x9_fc00, &mut small),
        Err(AcpiError::BufferTooSmall { .. })
    ));
    // Without PCI routes there is only the ISA bus, numbered 0.
    let layout = mptable::build(&mp_config(&[0], &[]), 0x9_fc00, &mut buf).unwrap();
    let t = &buf[16..layout.len as usize];
    assert_eq!(&t[44 + 20..44 + 28], b"\x01\x00ISA   ");
}

mod smbios_tables {
    use crate::smbios::{write, SmbiosConfig, ENTRY_POINT_SIZE};
    use crate::AcpiError;
    use std::string::String;
    use std::vec::Vec;

    const CONFIG: SmbiosConfig<'static> = SmbiosConfig {
        bios_vendor: "ponte",
        bios_version: "0.1",
        bios_date: "11/25/2026",
        manufacturer: "ponte",
        product: "linux-vhd",
        version: "1",
        serial: "0",
        uuid: [0x11; 16],
        family: "appliance",
    };

    /// A structure as a reader walks it: type, handle, formatted area and
    /// strings.
    struct Structure {
        kind: u8,
        handle: u16,
        area: Vec<u8>,
        strings: Vec<String>,
    }

    /// Walks the table the way Linux's dmi_decode does: the formatted area's
    /// length from byte 1, then strings up to a double NUL.
    fn walk(table: &[u8]) -> Vec<Structure> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 4 <= table.len() {
            let len = table[at + 1] as usize;
            let area = table[at..at + len].to_vec();
            // The strings run up to the first double NUL.
            let strings_start = at + len;
            let mut end = strings_start;
            while !(table[end] == 0 && table[end + 1] == 0) {
                end += 1;
            }
            let strings = table[strings_start..end]
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect();
            let end = end + 2;
            let kind = area[0];
            out.push(Structure {
                kind,
                handle: u16::from_le_bytes([area[2], area[3]]),
                area,
                strings,
            });
            at = end;
            if kind == 127 {
                break;
            }
        }
        out
    }

    #[test]
    fn entry_point_is_found_by_a_scan_and_names_the_table() {
        let base = 0xF_0000;
        let mut region = [0u8; 512];
        let len = write(&mut region, base, &CONFIG).unwrap();
        // Linux looks at 16-byte boundaries for "_SM3_" with a length of
        // 0x18..=32 whose bytes sum to zero.
        let found = (0..region.len() - 32)
            .step_by(16)
            .find(|&o| &region[o..o + 5] == b"_SM3_")
            .unwrap();
        assert_eq!(found, 0);
        let entry = &region[..0x18];
        assert_eq!(entry[6], 0x18);
        assert_eq!(entry.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!((entry[7], entry[8]), (3, 0));
        let table_len = u32::from_le_bytes(entry[12..16].try_into().unwrap()) as usize;
        let address = u64::from_le_bytes(entry[16..24].try_into().unwrap());
        assert_eq!(address, base + ENTRY_POINT_SIZE as u64);
        assert_eq!(ENTRY_POINT_SIZE + table_len, len);
        assert!(region[len..].iter().all(|&b| b == 0));

        let table = &region[ENTRY_POINT_SIZE..len];
        let structures = walk(table);
        let kinds: Vec<(u8, u16)> = structures.iter().map(|s| (s.kind, s.handle)).collect();
        assert_eq!(kinds, [(0, 0), (1, 1), (127, 2)]);
        let bios = &structures[0];
        assert_eq!(bios.area.len(), 0x18);
        assert_eq!(bios.strings, ["ponte", "0.1", "11/25/2026"]);
        // Vendor, version and date are strings 1, 2 and 3; the VM bit is set.
        assert_eq!((bios.area[4], bios.area[5], bios.area[8]), (1, 2, 3));
        assert_ne!(bios.area[19] & 0x10, 0);
        let system = &structures[1];
        assert_eq!(system.area.len(), 0x1B);
        assert_eq!(
            system.strings,
            ["ponte", "linux-vhd", "1", "0", "appliance"]
        );
        assert_eq!(&system.area[8..24], &[0x11; 16]);
        assert_eq!(system.area[26], 5);
        assert!(structures[2].strings.is_empty());
    }

    #[test]
    fn longest_strings_fit_the_largest_size() {
        let long = "x".repeat(64);
        let config = SmbiosConfig {
            bios_vendor: &long,
            bios_version: &long,
            bios_date: &long,
            manufacturer: &long,
            product: &long,
            version: &long,
            serial: &long,
            family: &long,
            ..CONFIG
        };
        let mut region = [0u8; crate::smbios::MAX_SIZE];
        assert_eq!(write(&mut region, 0, &config), Ok(crate::smbios::MAX_SIZE));
    }

    #[test]
    fn bad_strings_small_buffers_and_misaligned_bases_are_refused() {
        let mut region = [0u8; 512];
        for bad in ["", "tab\there", "caf\u{e9}", &"x".repeat(65)] {
            let config = SmbiosConfig {
                product: bad,
                ..CONFIG
            };
            assert_eq!(
                write(&mut region, 0xF_0000, &config),
                Err(AcpiError::BadString),
                "{bad:?}"
            );
        }
        assert!(matches!(
            write(&mut region[..100], 0xF_0000, &CONFIG),
            Err(AcpiError::BufferTooSmall { .. })
        ));
        assert!(matches!(
            write(&mut region[..16], 0xF_0000, &CONFIG),
            Err(AcpiError::BufferTooSmall { .. })
        ));
        assert_eq!(
            write(&mut region, 0xF_0008, &CONFIG),
            Err(AcpiError::Misaligned { base: 0xF_0008 })
        );
    }
}
