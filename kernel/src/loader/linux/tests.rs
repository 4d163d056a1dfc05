//! Linux loader tests: hand-built bzImages and PVH `vmlinux` files, checked
//! against the offsets of Documentation/arch/x86/boot.rst and zero-page.rst
//! and Xen's `hvm_start_info` layout by reading guest memory back.

use super::*;
use crate::loader::fake_memory::FakeMemory;
use std::vec;
use std::vec::Vec as StdVec;

const LOW: RamRange = RamRange::new(0, 0xa_0000);
const HIGH: RamRange = RamRange::new(0x10_0000, 0x1f0_0000); // 1 MiB .. 32 MiB
const RAM: [RamRange; 2] = [LOW, HIGH];
/// ACPI tables at the top of RAM, 0x1ff_0000..0x200_0000.
const ACPI: MemoryRegion = MemoryRegion::new(0x1ff_0000, 0x1_0000, MemoryType::Acpi);
const IOAPIC: MemoryRegion = MemoryRegion::new(0xfec0_0000, 0x1000, MemoryType::Reserved);
const LAPIC: MemoryRegion = MemoryRegion::new(0xfee0_0000, 0x1000, MemoryType::Reserved);
const RESERVED: [MemoryRegion; 3] = [ACPI, IOAPIC, LAPIC];

fn config<'a>(kernel: &'a [u8], initrd: Option<Module<'a>>) -> LinuxConfig<'a> {
    LinuxConfig {
        kernel,
        cmdline: "console=ttyS0,115200 rdinit=/init panic=-1",
        initrd,
        ram: &RAM,
        reserved: &RESERVED,
        rsdp: Some(0x1ff_0000),
        boot_area: BootArea::LOW_MEMORY,
    }
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------- bzImage

const PAYLOAD_LEN: usize = 0x3000;
const SETUP_SECTS_IN_TEST: u8 = 4;

/// A bzImage with the setup header of boot.rst filled at its documented
/// offsets, followed by a patterned protected-mode payload.
fn bzimage() -> StdVec<u8> {
    let setup_len = (usize::from(SETUP_SECTS_IN_TEST) + 1) * 512;
    let mut f = vec![0u8; setup_len + PAYLOAD_LEN];
    f[0x1f1] = SETUP_SECTS_IN_TEST; // setup_sects
    put32(&mut f, 0x1f4, (PAYLOAD_LEN / 16) as u32); // syssize
    put16(&mut f, 0x1fa, 0xffff); // vid_mode
    put16(&mut f, 0x1fe, 0xaa55); // boot_flag
    f[0x200] = 0xeb; // jmp short
    f[0x201] = 0x6a; // to 0x26c, the end of a 2.15 header
    f[0x202..0x206].copy_from_slice(b"HdrS");
    put16(&mut f, 0x206, 0x020f); // version 2.15
    f[0x211] = 0x81; // loadflags: LOADED_HIGH | CAN_USE_HEAP
    put32(&mut f, 0x214, 0x10_0000); // code32_start
    put32(&mut f, 0x22c, 0x7fff_ffff); // initrd_addr_max
    put32(&mut f, 0x230, 0x20_0000); // kernel_alignment
    f[0x234] = 1; // relocatable_kernel
    f[0x235] = 21; // min_alignment
    put16(&mut f, 0x236, 0x3); // xloadflags: KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
    put32(&mut f, 0x238, 2047); // cmdline_size
    put64(&mut f, 0x258, 0x100_0000); // pref_address
    put32(&mut f, 0x260, 0x40_0000); // init_size
    for (i, b) in f[setup_len..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    f
}

fn initrd_bytes() -> StdVec<u8> {
    (0..0x2345u32).map(|i| (i * 7) as u8).collect()
}

#[test]
fn bzimage_setup_header_is_parsed_from_documented_offsets() {
    let h = bzimage::parse_header(&bzimage()).unwrap();
    assert_eq!(h.version, 0x020f);
    assert_eq!(h.setup_sects, 4);
    assert_eq!(h.kernel_offset(), 5 * 512);
    assert_eq!(h.syssize, 0x300);
    assert_eq!(h.initrd_addr_max, 0x7fff_ffff);
    assert_eq!(h.kernel_alignment, 0x20_0000);
    assert!(h.relocatable);
    assert_eq!(h.cmdline_size, 2047);
    assert_eq!(h.pref_address, 0x100_0000);
    assert_eq!(h.init_size, 0x40_0000);
    assert_eq!(h.header_end, 0x26c);
    // setup_sects 0 means 4.
    let mut f = bzimage();
    f[0x1f1] = 0;
    assert_eq!(bzimage::parse_header(&f).unwrap().setup_sects, 4);
}

#[test]
fn bzimage_zero_page_fields_sit_at_the_documented_offsets() {
    let file = bzimage();
    let initrd = initrd_bytes();
    let mem = FakeMemory::new(&RAM);
    let module = Module {
        data: &initrd,
        cmdline: "",
    };
    let loaded = load(&mem, &config(&file, Some(module))).unwrap();
    assert_eq!(loaded.protocol, LinuxProtocol::BzImage64);
    let zp = 0x7000u64;
    assert_eq!(loaded.boot_info, zp);
    // The setup header copy: 0x1f1 up to 0x202 + byte at 0x201, except
    // the fields the loader writes (type_of_loader, code32_start,
    // ramdisk_image/size, cmd_line_ptr).
    for (from, to) in [
        (0x1f1, 0x210),
        (0x211, 0x214),
        (0x220, 0x228),
        (0x22c, 0x26c),
    ] {
        assert_eq!(mem.bytes(zp + from as u64, to - from), file[from..to]);
    }
    assert_eq!(&mem.bytes(zp + 0x202, 4), b"HdrS");
    assert_eq!(mem.u16_at(zp + 0x1fe), 0xaa55);
    // Past the header copy, up to 0x290, stays zero.
    assert!(mem.bytes(zp + 0x26c, 0x290 - 0x26c).iter().all(|&b| b == 0));
    // type_of_loader 0xff (undefined).
    assert_eq!(mem.u8_at(zp + 0x210), 0xff);
    // code32_start: the load address.
    assert_eq!(mem.u32_at(zp + 0x214), 0x100_0000);
    // cmd_line_ptr and ext_cmd_line_ptr.
    assert_eq!(mem.u32_at(zp + 0x228), 0x2_0000);
    assert_eq!(mem.u32_at(zp + 0xc8), 0);
    assert_eq!(
        mem.cstr(0x2_0000),
        "console=ttyS0,115200 rdinit=/init panic=-1"
    );
    // ramdisk_image/size and their ext_ halves.
    let placed = loaded.initrd.unwrap();
    assert_eq!(mem.u32_at(zp + 0x218) as u64, placed.start);
    assert_eq!(mem.u32_at(zp + 0x21c) as usize, initrd.len());
    assert_eq!(mem.u32_at(zp + 0xc0), 0);
    assert_eq!(mem.u32_at(zp + 0xc4), 0);
    // acpi_rsdp_addr (protocol 2.14).
    assert_eq!(mem.u64_at(zp + 0x70), 0x1ff_0000);
    // sentinel stays 0, or the kernel clears the header as from a broken loader.
    assert_eq!(mem.u8_at(zp + 0x1ef), 0);
    // e820_entries at 0x1e8 and the table at 0x2d0, 20 bytes an entry.
    let expected: [(u64, u64, u32); 6] = [
        (0, 0xa_0000, 1),
        (0xa_0000, 0x6_0000, 2),
        (0x10_0000, 0x1ef_0000, 1),
        (0x1ff_0000, 0x1_0000, 3),
        (0xfec0_0000, 0x1000, 2),
        (0xfee0_0000, 0x1000, 2),
    ];
    assert_eq!(mem.u8_at(zp + 0x1e8) as usize, expected.len());
    for (i, &(addr, size, kind)) in expected.iter().enumerate() {
        let e = zp + 0x2d0 + 20 * i as u64;
        assert_eq!(
            (mem.u64_at(e), mem.u64_at(e + 8), mem.u32_at(e + 16)),
            (addr, size, kind),
            "e820 entry {i}"
        );
    }
}

#[test]
fn bzimage_kernel_initrd_and_entry_state() {
    let file = bzimage();
    let initrd = initrd_bytes();
    let mem = FakeMemory::new(&RAM);
    let module = Module {
        data: &initrd,
        cmdline: "",
    };
    let loaded = load(&mem, &config(&file, Some(module))).unwrap();
    // Protected-mode kernel at pref_address, taken from after the setup.
    assert_eq!(mem.bytes(0x100_0000, PAYLOAD_LEN), file[5 * 512..]);
    assert_eq!(loaded.kernel_start, 0x100_0000);
    assert_eq!(loaded.kernel_end, 0x100_0000 + 0x40_0000); // init_size
                                                           // Initramfs: 4 KiB aligned, above the kernel's init_size span, below
                                                           // the ACPI tables at the top of RAM, as high as it fits.
    let placed = loaded.initrd.unwrap();
    assert!(placed.start.is_multiple_of(4096));
    assert!(placed.start >= loaded.kernel_end);
    assert!(placed.end <= ACPI.start);
    assert!(ACPI.start - placed.end < 4096);
    assert_eq!(mem.bytes(placed.start, initrd.len()), initrd);

    let LinuxEntry::Long64(e) = loaded.entry else {
        panic!("not a 64-bit entry");
    };
    assert_eq!(e.rip, 0x100_0200);
    assert_eq!(e.rsi, 0x7000);
    assert_eq!(e.cs.selector, 0x10);
    assert_eq!(e.ds.selector, 0x18);
    assert_eq!(e.rflags & (1 << 9), 0, "interrupts off");
    assert_eq!(e.cr0 & 0x8000_0001, 0x8000_0001, "PE and PG");
    assert_eq!(e.cr4 & (1 << 5), 1 << 5, "PAE");
    assert_eq!(e.efer & 0x500, 0x500, "LME and LMA");

    // The GDT descriptors at the boot selectors (SDM Vol. 3 3.4.5).
    let descriptor = |sel: u64| mem.u64_at(e.gdtr_base + sel);
    assert!(u64::from(e.gdtr_limit) >= 0x1f);
    let cs = descriptor(0x10);
    let ds = descriptor(0x18);
    let base = |d: u64| ((d >> 16) & 0xff_ffff) | ((d >> 32) & 0xff00_0000);
    let limit = |d: u64| (d & 0xffff) | ((d >> 32) & 0xf_0000);
    assert_eq!((base(cs), base(ds)), (0, 0));
    assert_eq!((limit(cs), limit(ds)), (0xf_ffff, 0xf_ffff));
    assert_eq!((cs >> 55) & 1, 1, "CS granularity 4 KiB");
    assert_eq!((cs >> 53) & 1, 1, "CS is 64-bit code (L)");
    assert_eq!((cs >> 47) & 1, 1, "CS present");
    assert_eq!((cs >> 40) & 0xf, 0xb, "CS execute/read, accessed");
    assert_eq!((ds >> 40) & 0xf, 0x3, "DS read/write, accessed");
    assert_eq!((ds >> 47) & 1, 1, "DS present");
    // The VMCS access rights agree with the descriptors' bytes 5 and 6.
    assert_eq!(u64::from(e.cs.access_rights), (cs >> 40) & 0xf0ff);
    assert_eq!(u64::from(e.ds.access_rights), (ds >> 40) & 0xf0ff);

    // The page tables identity-map the first 4 GiB: walk them as the CPU
    // does (SDM Vol. 3 4.5, 2 MiB pages).
    let walk = |va: u64| -> u64 {
        let pml4e = mem.u64_at(e.cr3 + ((va >> 39) & 0x1ff) * 8);
        assert_eq!(pml4e & 1, 1, "PML4E present for {va:#x}");
        let pdpte = mem.u64_at((pml4e & 0x000f_ffff_ffff_f000) + ((va >> 30) & 0x1ff) * 8);
        assert_eq!(pdpte & 1, 1, "PDPTE present for {va:#x}");
        assert_eq!(pdpte & 0x80, 0, "no 1 GiB pages");
        let pde = mem.u64_at((pdpte & 0x000f_ffff_ffff_f000) + ((va >> 21) & 0x1ff) * 8);
        assert_eq!(pde & 0x83, 0x83, "present, writable 2 MiB page for {va:#x}");
        (pde & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff)
    };
    for va in [
        0,
        0x7000,
        0x2_0000,
        0x100_0200,
        placed.start,
        0xfee0_0030,
        0xffff_ffff,
    ] {
        assert_eq!(walk(va), va);
    }
    // Nothing else is mapped: the rest of the PML4 and PDPT is cleared
    // (fresh guest memory here is filled with 0xcc).
    let pdpt = mem.u64_at(e.cr3) & 0x000f_ffff_ffff_f000;
    assert!((1..512).all(|i| mem.u64_at(e.cr3 + 8 * i) == 0));
    assert!((4..512).all(|i| mem.u64_at(pdpt + 8 * i) == 0));
}

#[test]
fn bzimage_relocates_to_the_next_aligned_boundary() {
    let file = bzimage();
    let mem = FakeMemory::new(&RAM);
    // A reserved range over pref_address pushes the kernel up to the next
    // 2 MiB boundary past it.
    let reserved = [
        MemoryRegion::new(0x100_0000, 0x1000, MemoryType::Reserved),
        ACPI,
    ];
    let cfg = LinuxConfig {
        reserved: &reserved,
        ..config(&file, None)
    };
    let loaded = load(&mem, &cfg).unwrap();
    assert_eq!(loaded.kernel_start, 0x120_0000);
    let LinuxEntry::Long64(e) = loaded.entry else {
        panic!()
    };
    assert_eq!(e.rip, 0x120_0200);
    assert_eq!(mem.u32_at(0x7000 + 0x214), 0x120_0000);
    // A kernel that is not relocatable fails instead.
    let mut fixed = bzimage();
    fixed[0x234] = 0;
    let cfg = LinuxConfig {
        reserved: &reserved,
        ..config(&fixed, None)
    };
    assert_eq!(
        load(&mem, &cfg),
        Err(LinuxError::NoRoomForKernel {
            addr: 0x100_0000,
            len: 0x40_0000
        })
    );
}

#[test]
fn bzimage_hostile_headers_give_typed_errors() {
    let good = bzimage();
    let mem = FakeMemory::new(&RAM);
    let try_load = |f: &[u8]| bzimage::load(&mem, &config(f, None));

    assert_eq!(
        try_load(&good[..0x205]),
        Err(LinuxError::FileTooShort {
            needed: 0x206,
            len: 0x205
        })
    );
    let mut f = good.clone();
    put16(&mut f, 0x1fe, 0x1234);
    assert_eq!(try_load(&f), Err(LinuxError::BadBootFlag { found: 0x1234 }));
    let mut f = good.clone();
    f[0x202] = b'X';
    assert_eq!(detect(&f), None);
    assert_eq!(
        load(&mem, &config(&f, None)),
        Err(LinuxError::UnknownFormat)
    );
    let mut f = good.clone();
    put16(&mut f, 0x206, 0x020b);
    assert_eq!(
        try_load(&f),
        Err(LinuxError::ProtocolTooOld {
            version: 0x020b,
            required: 0x020c
        })
    );
    let mut f = good.clone();
    f[0x201] = 0x10;
    assert_eq!(
        try_load(&f),
        Err(LinuxError::HeaderTooShort {
            end: 0x212,
            required: 0x268
        })
    );
    let mut f = good.clone();
    put16(&mut f, 0x236, 0x2);
    assert_eq!(
        try_load(&f),
        Err(LinuxError::No64BitEntry { xloadflags: 2 })
    );
    let mut f = good.clone();
    f[0x211] = 0x80;
    assert_eq!(
        try_load(&f),
        Err(LinuxError::NotLoadedHigh { loadflags: 0x80 })
    );
    // setup_sects absurd: 255 sectors of setup in a 14 KiB file.
    let mut f = good.clone();
    f[0x1f1] = 255;
    assert_eq!(
        try_load(&f),
        Err(LinuxError::SetupBeyondFile {
            setup_sects: 255,
            file_len: good.len() as u64
        })
    );
    let mut f = good.clone();
    put32(&mut f, 0x1f4, 0xffff_ffff);
    assert_eq!(
        try_load(&f),
        Err(LinuxError::SyssizeBeyondFile {
            syssize: 0xffff_ffff,
            available: PAYLOAD_LEN as u64
        })
    );
    let mut f = good.clone();
    put32(&mut f, 0x230, 0x30_0000);
    assert_eq!(
        try_load(&f),
        Err(LinuxError::BadKernelAlignment {
            alignment: 0x30_0000
        })
    );
    // init_size larger than RAM.
    let mut f = good.clone();
    put32(&mut f, 0x260, 0xffff_f000);
    assert!(matches!(
        try_load(&f),
        Err(LinuxError::NoRoomForKernel {
            len: 0xffff_f000,
            ..
        })
    ));
    // pref_address at the top of the address space: no overflow.
    let mut f = good.clone();
    put64(&mut f, 0x258, u64::MAX - 0xfff);
    f[0x234] = 0;
    assert!(matches!(
        try_load(&f),
        Err(LinuxError::NoRoomForKernel { .. })
    ));
    // Command line longer than cmdline_size.
    let mut f = good.clone();
    put32(&mut f, 0x238, 10);
    assert_eq!(
        try_load(&f),
        Err(LinuxError::CmdlineTooLong { len: 42, max: 10 })
    );
    let cfg = LinuxConfig {
        cmdline: "a\0b",
        ..config(&good, None)
    };
    assert_eq!(
        bzimage::load(&mem, &cfg),
        Err(LinuxError::CmdlineHasNul { offset: 1 })
    );
    // An initramfs larger than the RAM above the kernel.
    let big = vec![0u8; 0x1c0_0000];
    let cfg = config(
        &good,
        Some(Module {
            data: &big,
            cmdline: "",
        }),
    );
    assert_eq!(
        bzimage::load(&mem, &cfg),
        Err(LinuxError::NoRoomForInitrd {
            len: 0x1c0_0000,
            limit: 0x8000_0000
        })
    );
}

#[test]
fn bzimage_loader_fields_are_written_whatever_the_file_holds() {
    let mut f = bzimage();
    put32(&mut f, 0x218, 0x1234_5000); // ramdisk_image
    put32(&mut f, 0x21c, 0x1000); // ramdisk_size
    f[0x226] = 7; // ext_loader_ver
    f[0x227] = 9; // ext_loader_type
    put32(&mut f, 0x228, 0xdead_0000); // cmd_line_ptr
    put32(&mut f, 0x23c, 2); // hardware_subarch: Xen
    put64(&mut f, 0x240, 0xdead_beef); // hardware_subarch_data
    put64(&mut f, 0x250, 0x50_0000); // setup_data: a list the file made up
    let mem = FakeMemory::new(&RAM);
    load(&mem, &config(&f, None)).unwrap();
    let zp = 0x7000u64;
    assert_eq!((mem.u32_at(zp + 0x218), mem.u32_at(zp + 0x21c)), (0, 0));
    assert_eq!((mem.u8_at(zp + 0x226), mem.u8_at(zp + 0x227)), (0, 0));
    assert_eq!(mem.u32_at(zp + 0x228), 0x2_0000);
    assert_eq!(mem.u32_at(zp + 0x23c), 0);
    assert_eq!(mem.u64_at(zp + 0x240), 0);
    assert_eq!(mem.u64_at(zp + 0x250), 0);
    // Fields the kernel describes itself with are kept.
    assert_eq!(mem.u32_at(zp + 0x230), 0x20_0000);
    assert_eq!(mem.u32_at(zp + 0x260), 0x40_0000);
}

#[test]
fn bzimage_every_truncation_and_byte_flip_fails_cleanly() {
    let good = bzimage();
    let mem = FakeMemory::new(&RAM);
    for len in 0..=0x300 {
        assert!(bzimage::load(&mem, &config(&good[..len], None)).is_err());
    }
    // Deterministic pseudo-random corruption of the header region.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut f = good.clone();
        let off = 0x1f0 + (seed % 0x80) as usize;
        f[off] = (seed >> 32) as u8;
        let _ = load(&mem, &config(&f, None));
    }
}

#[test]
fn an_rsdp_in_ram_is_refused() {
    let file = bzimage();
    let mem = FakeMemory::new(&RAM);
    // Below the ACPI range: RAM the kernel may hand out.
    let cfg = LinuxConfig {
        rsdp: Some(0x1fe_0000),
        ..config(&file, None)
    };
    assert_eq!(
        load(&mem, &cfg),
        Err(LinuxError::RsdpInRam { addr: 0x1fe_0000 })
    );
    // In the legacy hole (reserved by the loader) it is accepted.
    let cfg = LinuxConfig {
        rsdp: Some(0xf_5a40),
        ..config(&file, None)
    };
    assert!(load(&mem, &cfg).is_ok());
    let f = vmlinux(&pvh_notes(&(PVH_ENTRY as u32).to_le_bytes()));
    let cfg = LinuxConfig {
        rsdp: Some(0x10_0000),
        ..config(&f, None)
    };
    assert_eq!(
        load(&mem, &cfg),
        Err(LinuxError::RsdpInRam { addr: 0x10_0000 })
    );
}

#[test]
fn boot_area_conflicts_are_reported() {
    let file = bzimage();
    let mem = FakeMemory::new(&RAM);
    let mut cfg = config(&file, None);
    cfg.boot_area.cmdline = 0x7800; // inside the zero page
    assert_eq!(
        load(&mem, &cfg),
        Err(LinuxError::Overlap {
            what: BootStructure::Cmdline,
            with: BootStructure::BootInfo,
            addr: 0x7800,
            len: 4096
        })
    );
    let mut cfg = config(&file, None);
    cfg.boot_area.page_tables = 0xb_0000; // the legacy hole
    assert_eq!(
        load(&mem, &cfg),
        Err(LinuxError::NotInRam {
            what: BootStructure::PageTables,
            addr: 0xb_0000,
            len: 6 * 4096
        })
    );
    let mut cfg = config(&file, None);
    cfg.boot_area.page_tables = 0x9100;
    assert_eq!(
        load(&mem, &cfg),
        Err(LinuxError::Misaligned {
            what: BootStructure::PageTables,
            addr: 0x9100,
            align: 4096
        })
    );
    // The zero page inside the kernel's init_size span.
    let mut cfg = config(&file, None);
    cfg.boot_area.boot_info = 0x110_0000;
    let mut fixed = file.clone();
    fixed[0x234] = 0;
    cfg.kernel = &fixed;
    assert!(matches!(
        load(&mem, &cfg),
        Err(LinuxError::NoRoomForKernel { .. })
    ));
}

// ---------------------------------------------------------------- PVH

const PVH_PADDR: u64 = 0x100_0000;
const PVH_VADDR: u64 = 0xffff_ffff_8100_0000;
const PVH_ENTRY: u64 = PVH_PADDR + 0x140;
const PVH_FILESZ: usize = 0x2000;
const PVH_MEMSZ: u64 = 0x3000;

/// Appends one ELF note (name padded to 4, descriptor padded to 4).
fn note(out: &mut StdVec<u8>, name: &[u8], note_type: u32, desc: &[u8]) {
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&note_type.to_le_bytes());
    out.extend_from_slice(name);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The notes of a Linux vmlinux: a GNU build id, Xen notes, the PVH entry.
fn pvh_notes(entry_desc: &[u8]) -> StdVec<u8> {
    let mut n = StdVec::new();
    note(&mut n, b"GNU\0", 3, &[0xab; 20]);
    note(&mut n, b"Xen\0", 6, b"linux\0"); // XEN_ELFNOTE_GUEST_OS
    note(&mut n, b"Xen\0", 18, entry_desc);
    n
}

/// An ELF64 x86-64 executable: header, two program headers (PT_LOAD at
/// `PVH_PADDR`, PT_NOTE), the notes at 0x200 and the segment at 0x1000.
fn vmlinux(notes: &[u8]) -> StdVec<u8> {
    let mut f = vec![0u8; 0x1000 + PVH_FILESZ];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1; // EV_CURRENT
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 62); // EM_X86_64
    put32(&mut f, 20, 1);
    put64(&mut f, 24, 0xffff_ffff_8100_0000); // e_entry (startup_64)
    put64(&mut f, 32, 64); // e_phoff
    put16(&mut f, 52, 64); // e_ehsize
    put16(&mut f, 54, 56); // e_phentsize
    put16(&mut f, 56, 2); // e_phnum
    let load = 64;
    put32(&mut f, load, 1); // PT_LOAD
    put32(&mut f, load + 4, 5); // R+X
    put64(&mut f, load + 8, 0x1000);
    put64(&mut f, load + 16, PVH_VADDR);
    put64(&mut f, load + 24, PVH_PADDR);
    put64(&mut f, load + 32, PVH_FILESZ as u64);
    put64(&mut f, load + 40, PVH_MEMSZ);
    put64(&mut f, load + 48, 0x20_0000);
    let pnote = 64 + 56;
    put32(&mut f, pnote, 4); // PT_NOTE
    put32(&mut f, pnote + 4, 4);
    put64(&mut f, pnote + 8, 0x200);
    put64(&mut f, pnote + 16, PVH_VADDR - 0x1000 + 0x200);
    put64(&mut f, pnote + 24, PVH_PADDR - 0x1000 + 0x200);
    put64(&mut f, pnote + 32, notes.len() as u64);
    put64(&mut f, pnote + 40, notes.len() as u64);
    put64(&mut f, pnote + 48, 4);
    assert!(0x200 + notes.len() <= 0x1000);
    f[0x200..0x200 + notes.len()].copy_from_slice(notes);
    for (i, b) in f[0x1000..].iter_mut().enumerate() {
        *b = (i % 253) as u8 ^ 0x5a;
    }
    f
}

#[test]
fn pvh_note_is_found_with_4_and_8_byte_descriptors() {
    let f = vmlinux(&pvh_notes(&(PVH_ENTRY as u32).to_le_bytes()));
    assert_eq!(detect(&f), Some(LinuxProtocol::Pvh));
    assert_eq!(pvh::find_entry(&f), Ok(PVH_ENTRY));
    let f = vmlinux(&pvh_notes(&PVH_ENTRY.to_le_bytes()));
    assert_eq!(pvh::find_entry(&f), Ok(PVH_ENTRY));
}

#[test]
fn pvh_load_fills_hvm_start_info() {
    let f = vmlinux(&pvh_notes(&(PVH_ENTRY as u32).to_le_bytes()));
    let initrd = initrd_bytes();
    let mem = FakeMemory::new(&RAM);
    let module = Module {
        data: &initrd,
        cmdline: "initrd.cpio",
    };
    let loaded = load(&mem, &config(&f, Some(module))).unwrap();
    assert_eq!(loaded.protocol, LinuxProtocol::Pvh);
    // The segment at p_paddr, its bss zeroed.
    assert_eq!(mem.bytes(PVH_PADDR, PVH_FILESZ), f[0x1000..]);
    assert!(mem
        .bytes(
            PVH_PADDR + PVH_FILESZ as u64,
            (PVH_MEMSZ as usize) - PVH_FILESZ
        )
        .iter()
        .all(|&b| b == 0));
    assert_eq!(
        (loaded.kernel_start, loaded.kernel_end),
        (PVH_PADDR, PVH_PADDR + PVH_MEMSZ)
    );

    let LinuxEntry::Pvh(e) = loaded.entry else {
        panic!("not a PVH entry")
    };
    assert_eq!(e.eip as u64, PVH_ENTRY);
    assert_eq!(e.ebx, 0x7000);
    assert_eq!(e.cr0 & 0x8000_0001, 1, "PE set, PG clear");
    assert_eq!(e.cr4, 0);
    assert_eq!(e.rflags & ((1 << 9) | (1 << 8) | (1 << 17)), 0);
    assert_eq!((e.cs.base, e.cs.limit), (0, 0xffff_ffff));
    assert_eq!(e.cs.access_rights & 0x4000, 0x4000, "32-bit code");
    assert_eq!(e.cs.access_rights & 0x2000, 0, "not 64-bit code");
    assert_eq!(e.tr.limit, 0x67);

    // struct hvm_start_info (start_info.h), version 1.
    let si = 0x7000u64;
    assert_eq!(mem.u32_at(si), 0x336e_c578, "magic");
    assert_eq!(mem.u32_at(si + 4), 1, "version");
    assert_eq!(mem.u32_at(si + 8), 0, "flags");
    assert_eq!(mem.u32_at(si + 12), 1, "nr_modules");
    let cmdline = mem.u64_at(si + 24);
    assert_eq!(
        mem.cstr(cmdline),
        "console=ttyS0,115200 rdinit=/init panic=-1"
    );
    assert_eq!(mem.u64_at(si + 32), 0x1ff_0000, "rsdp_paddr");
    // Module 0: the initramfs (hvm_modlist_entry: paddr, size, cmdline).
    let modlist = mem.u64_at(si + 16);
    let placed = loaded.initrd.unwrap();
    assert_eq!(mem.u64_at(modlist), placed.start);
    assert_eq!(mem.u64_at(modlist + 8), initrd.len() as u64);
    assert_eq!(mem.cstr(mem.u64_at(modlist + 16)), "initrd.cpio");
    assert_eq!(mem.bytes(placed.start, initrd.len()), initrd);
    assert!(placed.start >= loaded.kernel_end && placed.start.is_multiple_of(4096));
    // The memory map (hvm_memmap_table_entry: addr, size, type, reserved).
    let memmap = mem.u64_at(si + 40);
    let entries = mem.u32_at(si + 48);
    let got: StdVec<(u64, u64, u32)> = (0..u64::from(entries))
        .map(|i| {
            let e = memmap + 24 * i;
            assert_eq!(mem.u32_at(e + 20), 0, "reserved field");
            (mem.u64_at(e), mem.u64_at(e + 8), mem.u32_at(e + 16))
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, 0xa_0000, 1),
            (0xa_0000, 0x6_0000, 2),
            (0x10_0000, 0x1ef_0000, 1),
            (0x1ff_0000, 0x1_0000, 3),
            (0xfec0_0000, 0x1000, 2),
            (0xfee0_0000, 0x1000, 2),
        ]
    );
    // Everything the loader wrote lies in RAM entries of that map.
    for (addr, len) in [
        (loaded.kernel_start, loaded.kernel_end - loaded.kernel_start),
        (placed.start, placed.end - placed.start),
        (si, 4096),
        (cmdline, 4096),
    ] {
        assert!(got
            .iter()
            .any(|&(a, s, t)| t == 1 && a <= addr && addr + len <= a + s));
    }
}

#[test]
fn pvh_hostile_files_give_typed_errors() {
    let mem = FakeMemory::new(&RAM);
    let entry = (PVH_ENTRY as u32).to_le_bytes();
    // No PVH note.
    let mut n = StdVec::new();
    note(&mut n, b"Xen\0", 6, b"linux\0");
    let f = vmlinux(&n);
    assert_eq!(
        load(&mem, &config(&f, None)),
        Err(LinuxError::NoPvhEntryNote)
    );
    // A note whose name runs past its segment.
    let mut n = pvh_notes(&entry);
    put32(&mut n, 0, 0xffff_fff0);
    let f = vmlinux(&n);
    assert_eq!(
        pvh::find_entry(&f),
        Err(LinuxError::BadNote {
            offset: 0x200,
            namesz: 0xffff_fff0,
            descsz: 20
        })
    );
    // A descriptor size that overflows when padded.
    let mut n = pvh_notes(&entry);
    put32(&mut n, 4, u32::MAX);
    assert!(matches!(
        pvh::find_entry(&vmlinux(&n)),
        Err(LinuxError::BadNote { .. })
    ));
    // A 2-byte entry descriptor.
    let f = vmlinux(&pvh_notes(&[1, 2]));
    assert_eq!(
        pvh::find_entry(&f),
        Err(LinuxError::BadPvhEntrySize { descsz: 2 })
    );
    // The note segment outside the file.
    let mut f = vmlinux(&pvh_notes(&entry));
    put64(&mut f, 64 + 56 + 32, u64::MAX - 0x100);
    assert_eq!(
        pvh::find_entry(&f),
        Err(LinuxError::NoteSegmentOutsideFile {
            offset: 0x200,
            size: u64::MAX - 0x100
        })
    );
    // A segment outside RAM (in the ACPI range at the top).
    let mut f = vmlinux(&pvh_notes(&entry));
    put64(&mut f, 64 + 24, 0x1ff_0000);
    assert_eq!(
        load(&mem, &config(&f, None)),
        Err(LinuxError::Image(LoadError::SegmentOutsideRam {
            addr: 0x1ff_0000,
            len: PVH_MEMSZ
        }))
    );
    // An entry outside the loaded segments.
    let f = vmlinux(&pvh_notes(&0x50_0000u32.to_le_bytes()));
    assert_eq!(
        load(&mem, &config(&f, None)),
        Err(LinuxError::EntryOutsideKernel { entry: 0x50_0000 })
    );
    // A segment over the boot information page.
    let mut f = vmlinux(&pvh_notes(&0x7100u32.to_le_bytes()));
    put64(&mut f, 64 + 24, 0x6000);
    assert_eq!(
        load(&mem, &config(&f, None)),
        Err(LinuxError::Overlap {
            what: BootStructure::Kernel,
            with: BootStructure::BootInfo,
            addr: 0x6000,
            len: PVH_MEMSZ
        })
    );
    // A command line longer than Linux keeps.
    let long = "x".repeat(2048);
    let f = vmlinux(&pvh_notes(&entry));
    let cfg = LinuxConfig {
        cmdline: &long,
        ..config(&f, None)
    };
    assert_eq!(
        load(&mem, &cfg),
        Err(LinuxError::CmdlineTooLong {
            len: 2048,
            max: 2047
        })
    );
    // A bad ELF header is reported by the shared reader.
    let mut f = vmlinux(&pvh_notes(&entry));
    put16(&mut f, 18, 40); // EM_ARM
    assert!(matches!(
        load(&mem, &config(&f, None)),
        Err(LinuxError::Image(LoadError::BadElf(_)))
    ));
}

#[test]
fn pvh_every_truncation_and_byte_flip_fails_cleanly() {
    let good = vmlinux(&pvh_notes(&(PVH_ENTRY as u32).to_le_bytes()));
    let mem = FakeMemory::new(&RAM);
    for len in 0..0x1000 {
        assert!(pvh::load(&mem, &config(&good[..len], None)).is_err());
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut f = good.clone();
        let off = (seed % 0x280) as usize;
        f[off] = (seed >> 40) as u8;
        let _ = load(&mem, &config(&f, None));
    }
}

// ---------------------------------------------------------------- memory map

#[test]
fn memory_map_carves_the_hole_and_reserved_ranges_out_of_ram() {
    // One RAM range from 0 to 256 MiB, the hole and an ACPI range inside.
    let ram = [RamRange::new(0, 0x1000_0000)];
    let reserved = [
        MemoryRegion::new(0xfe0_0000, 0x2_0000, MemoryType::Acpi),
        MemoryRegion::new(0xe_0000, 0x2_0000, MemoryType::Acpi),
        MemoryRegion::new(0xe000_0000, 0x1000_0000, MemoryType::Reserved),
    ];
    let map = build_memory_map(&ram, &reserved).unwrap();
    let got: StdVec<(u64, u64, MemoryType)> =
        map.iter().map(|r| (r.start, r.len, r.kind)).collect();
    assert_eq!(
        got,
        [
            (0, 0xa_0000, MemoryType::Ram),
            (0xa_0000, 0x4_0000, MemoryType::Reserved),
            (0xe_0000, 0x2_0000, MemoryType::Acpi),
            (0x10_0000, 0xfd0_0000, MemoryType::Ram),
            (0xfe0_0000, 0x2_0000, MemoryType::Acpi),
            (0xfe2_0000, 0x1e_0000, MemoryType::Ram),
            (0xe000_0000, 0x1000_0000, MemoryType::Reserved),
        ]
    );
    // Touching RAM ranges merge.
    let ram = [
        RamRange::new(0x10_0000, 0x10_0000),
        RamRange::new(0x20_0000, 0x10_0000),
    ];
    let map = build_memory_map(&ram, &[]).unwrap();
    assert_eq!(
        map[1],
        MemoryRegion::new(0x10_0000, 0x20_0000, MemoryType::Ram)
    );
}

#[test]
fn memory_map_rejects_bad_layouts() {
    let overlapping = [
        MemoryRegion::new(0x1000_0000, 0x2000, MemoryType::Reserved),
        MemoryRegion::new(0x1000_1000, 0x2000, MemoryType::Acpi),
    ];
    assert_eq!(
        build_memory_map(&RAM, &overlapping),
        Err(LinuxError::ReservedRangesOverlap {
            first: 0x1000_0000,
            second: 0x1000_1000
        })
    );
    let ram_typed = [MemoryRegion::new(0x1000_0000, 0x2000, MemoryType::Ram)];
    assert_eq!(
        build_memory_map(&RAM, &ram_typed),
        Err(LinuxError::ReservedRangeIsRam { start: 0x1000_0000 })
    );
    let wrapping = [MemoryRegion::new(u64::MAX, 2, MemoryType::Reserved)];
    assert_eq!(build_memory_map(&RAM, &wrapping), Err(LinuxError::Overflow));
    let many: StdVec<RamRange> = (0..65).map(|i| RamRange::new(i << 32, 0x1000)).collect();
    assert_eq!(
        build_memory_map(&many, &[]),
        Err(LinuxError::TooManyRanges { count: 65, max: 64 })
    );
}

// ---------------------------------------------------------------- real files

/// Reads the file named by environment variable `var`, or says why the
/// test is skipped.
fn real_file(var: &str) -> Option<StdVec<u8>> {
    match std::env::var(var) {
        Ok(path) => Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{var}={path}: {e}"))),
        Err(_) => {
            // Written to the stream itself: the test harness would hide
            // eprintln!.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "SKIPPED: set {var} to a Debian linux-image-6.1 file to run this test\n"
                ),
            );
            None
        }
    }
}

const REAL_RAM: [RamRange; 2] = [LOW, RamRange::new(0x10_0000, 0x7f0_0000)];

/// Debian's bzImage (`/boot/vmlinuz-6.1.0-*-amd64`), when provided.
#[test]
fn real_bzimage_loads() {
    let Some(file) = real_file("PONTE_LINUX_BZIMAGE") else {
        return;
    };
    let h = bzimage::parse_header(&file).unwrap();
    assert!(h.version >= 0x020c && h.relocatable);
    let mem = FakeMemory::new(&REAL_RAM);
    let initrd = initrd_bytes();
    let cfg = LinuxConfig {
        ram: &REAL_RAM,
        reserved: &[],
        initrd: Some(Module {
            data: &initrd,
            cmdline: "",
        }),
        ..config(&file, None)
    };
    let loaded = load(&mem, &cfg).unwrap();
    assert_eq!(loaded.kernel_start, h.pref_address);
    assert_eq!(loaded.kernel_end, h.pref_address + u64::from(h.init_size));
    let LinuxEntry::Long64(e) = loaded.entry else {
        panic!()
    };
    assert_eq!(e.rip, h.pref_address + 0x200);
    let payload = &file[h.kernel_offset() as usize..];
    assert_eq!(mem.bytes(h.pref_address, 4096), payload[..4096]);
    assert_eq!(mem.u8_at(0x7000 + 0x210), 0xff);
    assert!(loaded.initrd.unwrap().start >= loaded.kernel_end);
}

/// The `vmlinux` inside Debian's bzImage, when provided.
#[test]
fn real_vmlinux_loads_through_pvh() {
    let Some(file) = real_file("PONTE_LINUX_VMLINUX") else {
        return;
    };
    let entry = pvh::find_entry(&file).unwrap();
    let mem = FakeMemory::new(&REAL_RAM);
    let cfg = LinuxConfig {
        ram: &REAL_RAM,
        reserved: &[],
        ..config(&file, None)
    };
    let loaded = load(&mem, &cfg).unwrap();
    let LinuxEntry::Pvh(e) = loaded.entry else {
        panic!()
    };
    assert_eq!(u64::from(e.eip), entry);
    assert!(loaded.kernel_start <= entry && entry < loaded.kernel_end);
    assert_eq!(mem.u32_at(0x7000), 0x336e_c578);
    std::eprintln!(
        "vmlinux: PVH entry {entry:#x}, kernel {:#x}..{:#x}",
        loaded.kernel_start,
        loaded.kernel_end
    );
}

#[test]
fn plan_names_every_byte_a_load_then_writes() {
    let f = vmlinux(&pvh_notes(&(PVH_ENTRY as u32).to_le_bytes()));
    let initrd = initrd_bytes();
    let module = Module {
        data: &initrd,
        cmdline: "initrd.cpio",
    };
    let cfg = config(&f, Some(module));
    let planned = plan(&cfg).unwrap();
    let footprint = planned.footprint(&cfg.boot_area);
    let structures: StdVec<BootStructure> = footprint.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        structures,
        [
            BootStructure::Kernel,
            BootStructure::Initrd,
            BootStructure::BootInfo,
            BootStructure::Cmdline
        ],
        "PVH writes no page tables or GDT"
    );
    let mem = FakeMemory::new(&RAM);
    let loaded = load(&mem, &cfg).unwrap();
    assert_eq!(loaded, planned, "the plan is where the load puts things");
    // Every byte the load changed lies in the footprint.
    for range in RAM {
        let bytes = mem.bytes(range.start, range.len as usize);
        for (i, &b) in bytes.iter().enumerate() {
            let addr = range.start + i as u64;
            if b != crate::loader::fake_memory::FILL {
                assert!(
                    footprint.iter().any(|(_, r)| r.contains(&addr)),
                    "{addr:#x} written outside the footprint {footprint:x?}"
                );
            }
        }
    }
    // And the footprint is no wider than what was placed.
    let (_, kernel) = &footprint[0];
    assert_eq!(*kernel, PVH_PADDR..PVH_PADDR + PVH_MEMSZ);
    let (_, placed) = &footprint[1];
    assert_eq!(placed.end - placed.start, initrd.len() as u64);
}

#[test]
fn bzimage_footprint_includes_its_page_tables_and_gdt() {
    let image = bzimage();
    let cfg = config(&image, None);
    let planned = plan(&cfg).unwrap();
    let footprint = planned.footprint(&cfg.boot_area);
    let area = BootArea::LOW_MEMORY;
    assert!(footprint.contains(&(
        BootStructure::PageTables,
        area.page_tables..area.page_tables + PAGE_TABLES_SIZE
    )));
    assert!(footprint.contains(&(BootStructure::Gdt, area.gdt..area.gdt + GDT_SIZE)));
    assert!(!footprint.iter().any(|(s, _)| *s == BootStructure::Initrd));
}

#[test]
fn a_firmware_map_becomes_the_kernels_memory_map_with_ram_clipped() {
    use ponte_arch::boot::{MemoryKind, MemoryRegion as Firmware};
    let region = |start: u64, end: u64, kind| Firmware {
        range: start..end,
        kind,
    };
    // The map a PC BIOS reports for 256 MiB: EBDA and BIOS area reserved,
    // ACPI tables at the top of RAM, the BIOS ROM below 4 GiB.
    let firmware = [
        region(0, 0x9_fc00, MemoryKind::Usable),
        region(0x9_fc00, 0xa_0000, MemoryKind::Reserved),
        region(0xe_8000, 0x10_0000, MemoryKind::Reserved),
        region(0x10_0000, 0xfff_0000, MemoryKind::Usable),
        region(0xfff_0000, 0x1000_0000, MemoryKind::AcpiReclaimable),
        region(0xfffc_0000, 0x1_0000_0000, MemoryKind::Reserved),
        region(0x1_0000_0000, 0x1_0000_0000, MemoryKind::AcpiNvs),
    ];
    let (ram, reserved) = firmware_layout(&firmware, 128 << 20).unwrap();
    assert_eq!(
        ram.as_slice(),
        &[
            RamRange::new(0, 0x9_fc00),
            RamRange::new(0x10_0000, (128 << 20) - 0x10_0000)
        ]
    );
    let map = build_memory_map(&ram, &reserved).unwrap();
    let got: StdVec<(u64, u64, MemoryType)> =
        map.iter().map(|r| (r.start, r.len, r.kind)).collect();
    assert_eq!(
        got,
        [
            (0, 0x9_fc00, MemoryType::Ram),
            (0x9_fc00, 0x10_0000 - 0x9_fc00, MemoryType::Reserved),
            (0x10_0000, (128 << 20) - 0x10_0000, MemoryType::Ram),
            (0xfff_0000, 0x1_0000, MemoryType::Acpi),
            (0xfffc_0000, 0x4_0000, MemoryType::Reserved),
        ],
        "RAM above 128 MiB is left out, the other ranges keep their types"
    );
    // NVS and defective ranges keep their E820 types.
    let (_, reserved) = firmware_layout(
        &[
            region(0x1000, 0x2000, MemoryKind::AcpiNvs),
            region(0x3000, 0x4000, MemoryKind::Defective),
        ],
        1 << 30,
    )
    .unwrap();
    let kinds: StdVec<MemoryType> = reserved.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [MemoryType::Nvs, MemoryType::Unusable]);
    // More ranges than the loader takes: a typed error, not a truncation.
    let many: StdVec<Firmware> = (0..MAX_LAYOUT_RANGES as u64 + 1)
        .map(|i| region(i * 0x2000, i * 0x2000 + 0x1000, MemoryKind::Usable))
        .collect();
    assert!(matches!(
        firmware_layout(&many, 1 << 30),
        Err(LinuxError::TooManyRanges { .. })
    ));
}

#[test]
fn a_header_field_past_the_end_of_the_address_space_is_too_short_not_an_overflow() {
    let data = [0u8; 16];
    assert_eq!(
        field32(&data, u64::MAX - 1),
        Err(LinuxError::FileTooShort {
            needed: u64::MAX,
            len: 16
        })
    );
    assert_eq!(
        field16(&data, 15),
        Err(LinuxError::FileTooShort {
            needed: 17,
            len: 16
        })
    );
    assert_eq!(field64(&data, 8), Ok(0));
}
