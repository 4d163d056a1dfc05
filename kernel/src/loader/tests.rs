//! Loader tests: hand-built images against the Multiboot specifications,
//! checked by reading guest memory back.

use super::*;
use crate::loader::fake_memory::{FakeMemory, FILL};
use std::vec;
use std::vec::Vec;

const LOW: RamRange = RamRange::new(0, 0xa_0000);
const HIGH: RamRange = RamRange::new(0x10_0000, 0x30_0000); // 1 MiB .. 4 MiB
const RAM: [RamRange; 2] = [LOW, HIGH];

fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A Multiboot v1 header with `flags` (and zeroed address fields).
fn mb1_header(flags: u32) -> Vec<u8> {
    let mut h = vec![0u8; 32];
    put32(&mut h, 0, 0x1BAD_B002);
    put32(&mut h, 4, flags);
    put32(
        &mut h,
        8,
        0u32.wrapping_sub(0x1BAD_B002).wrapping_sub(flags),
    );
    h
}

/// One loadable segment of a hand-built ELF file.
struct Seg {
    vaddr: u64,
    paddr: u64,
    data: Vec<u8>,
    mem_size: u64,
}

/// Builds an ELF32 (i386) or ELF64 (x86-64) executable whose segments' data
/// start at file offsets 0x1000, 0x2000, ...
fn elf(is64: bool, entry: u64, segs: &[Seg]) -> Vec<u8> {
    let (ehsize, phentsize) = if is64 { (64usize, 56usize) } else { (52, 32) };
    let data_at = |i: usize| 0x1000 * (i + 1);
    let total = segs
        .iter()
        .enumerate()
        .map(|(i, s)| data_at(i) + s.data.len())
        .max()
        .unwrap_or(ehsize);
    let mut f = vec![0u8; total];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = if is64 { 2 } else { 1 };
    f[5] = 1;
    f[6] = 1;
    put16(&mut f, 16, 2);
    put16(&mut f, 18, if is64 { 62 } else { 3 });
    put32(&mut f, 20, 1);
    if is64 {
        put64(&mut f, 24, entry);
        put64(&mut f, 32, ehsize as u64);
        put16(&mut f, 52, ehsize as u16);
        put16(&mut f, 54, phentsize as u16);
        put16(&mut f, 56, segs.len() as u16);
    } else {
        put32(&mut f, 24, entry as u32);
        put32(&mut f, 28, ehsize as u32);
        put16(&mut f, 40, ehsize as u16);
        put16(&mut f, 42, phentsize as u16);
        put16(&mut f, 44, segs.len() as u16);
    }
    for (i, s) in segs.iter().enumerate() {
        let ph = ehsize + i * phentsize;
        put32(&mut f, ph, 1);
        if is64 {
            put32(&mut f, ph + 4, 5);
            put64(&mut f, ph + 8, data_at(i) as u64);
            put64(&mut f, ph + 16, s.vaddr);
            put64(&mut f, ph + 24, s.paddr);
            put64(&mut f, ph + 32, s.data.len() as u64);
            put64(&mut f, ph + 40, s.mem_size);
            put64(&mut f, ph + 48, 0x1000);
        } else {
            put32(&mut f, ph + 4, data_at(i) as u32);
            put32(&mut f, ph + 8, s.vaddr as u32);
            put32(&mut f, ph + 12, s.paddr as u32);
            put32(&mut f, ph + 16, s.data.len() as u32);
            put32(&mut f, ph + 20, s.mem_size as u32);
            put32(&mut f, ph + 24, 5);
            put32(&mut f, ph + 28, 0x1000);
        }
        f[data_at(i)..data_at(i) + s.data.len()].copy_from_slice(&s.data);
    }
    f
}

/// Text of `len` bytes starting with `header`, then a recognisable pattern.
fn text_with(header: &[u8], len: usize) -> Vec<u8> {
    let mut t: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    t[..header.len()].copy_from_slice(header);
    t
}

fn config<'a>(kernel: &'a [u8], modules: &'a [Module<'a>]) -> BootConfig<'a> {
    BootConfig {
        kernel,
        kernel_name: "test.elf",
        cmdline: "console=ttyS0 verbose",
        modules,
        ram: &RAM,
        boot_loader_name: "ponte",
        info_placement: InfoPlacement::AfterKernel,
    }
}

// ---------------------------------------------------------------- Multiboot

#[test]
fn mb1_elf32_segments_are_loaded_with_bss_zeroed() {
    let text = text_with(&mb1_header(0x3), 0x300);
    let data = vec![0x5a; 0x80];
    let kernel = elf(
        false,
        0x10_0010,
        &[
            Seg {
                vaddr: 0x10_0000,
                paddr: 0x10_0000,
                data: text.clone(),
                mem_size: 0x300,
            },
            Seg {
                vaddr: 0x10_2000,
                paddr: 0x10_2000,
                data: data.clone(),
                mem_size: 0x1000,
            },
        ],
    );
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot::load(&mem, &config(&kernel, &[])).unwrap();
    assert_eq!(loaded.protocol, Protocol::Multiboot1);
    assert_eq!(mem.bytes(0x10_0000, 0x300), text);
    assert_eq!(mem.bytes(0x10_2000, 0x80), data);
    assert!(
        mem.bytes(0x10_2080, 0x1000 - 0x80).iter().all(|&b| b == 0),
        "bss zeroed"
    );
    assert_eq!(
        mem.bytes(0x10_0300, 1),
        [FILL],
        "gap between segments untouched"
    );
    assert_eq!(loaded.kernel_start, 0x10_0000);
    assert_eq!(loaded.kernel_end, 0x10_3000);
    assert_eq!(
        loaded.entry,
        EntryState {
            eip: 0x10_0010,
            eax: 0x2BAD_B002,
            ebx: loaded.info_addr as u32
        }
    );
    assert_eq!(
        loaded.info_addr, 0x10_3000,
        "info block on the first page after the kernel"
    );
    assert!(!loaded.video_declined);
}

#[test]
fn mb1_info_block_fields() {
    let text = text_with(&mb1_header(0x3), 0x100);
    let kernel = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x100,
        }],
    );
    let initrd = vec![0xab; 0x1800];
    let second = vec![0xcd; 10];
    let modules = [
        Module {
            data: &initrd,
            cmdline: "initrd.img root=/dev/ram",
        },
        Module {
            data: &second,
            cmdline: "",
        },
    ];
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot::load(&mem, &config(&kernel, &modules)).unwrap();
    let mbi = loaded.info_addr;

    let flags = mem.u32_at(mbi);
    assert_eq!(flags, (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9));
    assert_eq!(mem.u32_at(mbi + 4), 640, "mem_lower in KiB");
    assert_eq!(mem.u32_at(mbi + 8), 3 * 1024, "mem_upper: KiB from 1 MiB");
    assert_eq!(
        mem.cstr(u64::from(mem.u32_at(mbi + 16))),
        "test.elf console=ttyS0 verbose"
    );
    assert_eq!(mem.cstr(u64::from(mem.u32_at(mbi + 64))), "ponte");

    // Modules: count, entries of start, end, string, reserved.
    assert_eq!(mem.u32_at(mbi + 20), 2);
    let mods = u64::from(mem.u32_at(mbi + 24));
    let (s0, e0) = (mem.u32_at(mods), mem.u32_at(mods + 4));
    let (s1, e1) = (mem.u32_at(mods + 16), mem.u32_at(mods + 20));
    assert_eq!(e0 - s0, 0x1800);
    assert_eq!(e1 - s1, 10);
    assert_eq!(s0 % 4096, 0, "page-aligned modules");
    assert_eq!(s1 % 4096, 0);
    assert!(
        u64::from(s0) >= mbi + loaded.info_len,
        "modules after the info block"
    );
    assert!(s1 >= e0);
    assert_eq!(mem.bytes(u64::from(s0), 0x1800), initrd);
    assert_eq!(mem.bytes(u64::from(s1), 10), second);
    assert_eq!(
        mem.cstr(u64::from(mem.u32_at(mods + 8))),
        "initrd.img root=/dev/ram"
    );
    assert_eq!(mem.cstr(u64::from(mem.u32_at(mods + 24))), "");
    assert_eq!(mem.u32_at(mods + 12), 0, "reserved");
    assert_eq!(loaded.modules_end, u64::from(e1));

    // Memory map: size-prefixed entries (size excludes itself).
    let mmap_len = mem.u32_at(mbi + 44);
    let mmap = u64::from(mem.u32_at(mbi + 48));
    assert_eq!(mmap_len, 48);
    assert_eq!(mem.u32_at(mmap), 20);
    assert_eq!(mem.u64_at(mmap + 4), 0);
    assert_eq!(mem.u64_at(mmap + 12), 0xa_0000);
    assert_eq!(mem.u32_at(mmap + 20), 1, "available RAM");
    assert_eq!(mem.u32_at(mmap + 24), 20);
    assert_eq!(mem.u64_at(mmap + 28), 0x10_0000);
    assert_eq!(mem.u64_at(mmap + 36), 0x30_0000);
    assert_eq!(mem.u32_at(mmap + 44), 1);

    // Everything the block points to lies inside it.
    for ptr in [
        mem.u32_at(mbi + 16),
        mem.u32_at(mbi + 64),
        mods as u32,
        mmap as u32,
    ] {
        assert!(u64::from(ptr) >= mbi && u64::from(ptr) < mbi + loaded.info_len);
    }
    // Unset fields are zero (boot device, syms, drives, config, apm, vbe, fb).
    for off in [
        12u64, 28, 32, 36, 40, 52, 56, 60, 68, 72, 76, 80, 84, 88, 92,
    ] {
        assert_eq!(mem.u32_at(mbi + off), 0, "field at {off}");
    }
}

#[test]
fn mb1_elf64_higher_half_entry_is_translated_to_physical() {
    let text = text_with(&mb1_header(0), 0x200);
    let kernel = elf(
        true,
        0xffff_ffff_8010_0040,
        &[
            Seg {
                vaddr: 0xffff_ffff_8010_0000,
                paddr: 0x20_0000,
                data: text.clone(),
                mem_size: 0x200,
            },
            Seg {
                vaddr: 0xffff_ffff_8020_0000,
                paddr: 0x20_1000,
                data: vec![1, 2, 3],
                mem_size: 0x10,
            },
        ],
    );
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot::load(&mem, &config(&kernel, &[])).unwrap();
    assert_eq!(loaded.entry.eip, 0x20_0040);
    assert_eq!(mem.bytes(0x20_0000, 0x200), text);
    assert_eq!(mem.bytes(0x20_1000, 4), [1, 2, 3, 0]);
    assert_eq!(loaded.kernel_end, 0x20_1010);
}

#[test]
fn mb1_aout_kludge_loads_the_file_from_the_header_offset() {
    // A flat binary: 0x40 bytes of code, the header at file offset 0x40
    // declaring header_addr 0x100040 and load_addr 0x100000.
    let load_len = 0x300usize;
    let mut file: Vec<u8> = (0..load_len + 0x20).map(|i| (i * 13) as u8).collect();
    let mut h = mb1_header(1 << 16 | 1);
    put32(&mut h, 12, 0x10_0040);
    put32(&mut h, 16, 0x10_0000);
    put32(&mut h, 20, 0x10_0000 + load_len as u32);
    put32(&mut h, 24, 0x10_2000);
    put32(&mut h, 28, 0x10_0080);
    file[0x40..0x60].copy_from_slice(&h);
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot::load(&mem, &config(&file, &[])).unwrap();
    assert_eq!(loaded.entry.eip, 0x10_0080);
    assert_eq!(mem.bytes(0x10_0000, load_len), &file[..load_len]);
    assert!(
        mem.bytes(0x10_0000 + load_len as u64, 0x2000 - load_len)
            .iter()
            .all(|&b| b == 0),
        "bss up to bss_end_addr zeroed; bytes past load_end_addr not copied"
    );
    assert_eq!(loaded.kernel_end, 0x10_2000);
}

#[test]
fn mb1_aout_kludge_with_zero_end_fields_loads_the_rest_of_the_file() {
    let mut file: Vec<u8> = (0..0x500).map(|i| (i * 5) as u8).collect();
    let mut h = mb1_header(1 << 16);
    // Header at file offset 0x100, text starts at file offset 0x80.
    put32(&mut h, 12, 0x10_0080);
    put32(&mut h, 16, 0x10_0000);
    put32(&mut h, 28, 0x10_0000);
    file[0x100..0x120].copy_from_slice(&h);
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot::load(&mem, &config(&file, &[])).unwrap();
    assert_eq!(mem.bytes(0x10_0000, 0x480), &file[0x80..]);
    assert_eq!(loaded.kernel_end, 0x10_0480);
}

#[test]
fn mb1_aout_kludge_bad_fields_are_rejected() {
    let cases = [
        // header_addr below load_addr
        (0x10_0000u32, 0x10_0010u32, 0u32, 0u32),
        // header would sit before the file's start
        (0x10_1000, 0x10_0000, 0, 0),
        // load_end below load_addr
        (0x10_0020, 0x10_0000, 0x0f_0000, 0),
        // bss_end below load_end
        (0x10_0020, 0x10_0000, 0x10_0100, 0x10_0080),
    ];
    for (header_addr, load_addr, load_end_addr, bss_end_addr) in cases {
        let mut file = vec![0u8; 0x200];
        let mut h = mb1_header(1 << 16);
        put32(&mut h, 12, header_addr);
        put32(&mut h, 16, load_addr);
        put32(&mut h, 20, load_end_addr);
        put32(&mut h, 24, bss_end_addr);
        file[0x20..0x40].copy_from_slice(&h);
        let mem = FakeMemory::new(&RAM);
        assert_eq!(
            multiboot::load(&mem, &config(&file, &[])),
            Err(LoadError::BadAddressFields {
                header_addr,
                load_addr,
                load_end_addr,
                bss_end_addr
            })
        );
    }
}

#[test]
fn mb1_aout_load_past_the_file_end_is_file_too_short() {
    let mut file = vec![0u8; 0x100];
    let mut h = mb1_header(1 << 16);
    put32(&mut h, 12, 0x10_0000);
    put32(&mut h, 16, 0x10_0000);
    put32(&mut h, 20, 0x10_1000);
    file[0..32].copy_from_slice(&h);
    let mem = FakeMemory::new(&RAM);
    assert_eq!(
        multiboot::load(&mem, &config(&file, &[])),
        Err(LoadError::FileTooShort {
            needed: 0x1000,
            len: 0x100
        })
    );
    // Address fields cut off by the end of the file.
    let cut = &file[..20];
    assert_eq!(
        multiboot::load(&mem, &config(cut, &[])),
        Err(LoadError::FileTooShort {
            needed: 32,
            len: 20
        })
    );
}

#[test]
fn mb1_header_search_rules() {
    // Must be 4-aligned, checksummed, and within the first 8 KiB.
    let mut file = vec![0u8; 0x3000];
    file[0x1002..0x100e].copy_from_slice(&mb1_header(0)[..12]);
    assert_eq!(multiboot::find_header(&file), None, "misaligned");
    let mut bad = mb1_header(0);
    bad[8] ^= 1;
    file[0x1004..0x1010].copy_from_slice(&bad[..12]);
    assert_eq!(multiboot::find_header(&file), None, "bad checksum");
    file[0x2000..0x200c].copy_from_slice(&mb1_header(0)[..12]);
    assert_eq!(multiboot::find_header(&file), None, "beyond 8 KiB");
    file[0x1ff4..0x2000].copy_from_slice(&mb1_header(2)[..12]);
    assert_eq!(
        multiboot::find_header(&file),
        Some(multiboot::Header {
            offset: 0x1ff4,
            flags: 2
        })
    );
    let mem = FakeMemory::new(&RAM);
    assert_eq!(
        multiboot::load(&mem, &config(&[0u8; 64], &[])),
        Err(LoadError::NoHeader)
    );
    assert_eq!(load(&mem, &config(&[], &[])), Err(LoadError::NoHeader));
}

#[test]
fn mb1_video_request_is_declined_and_unknown_required_flags_fail() {
    let text = text_with(&mb1_header(0x4), 0x40);
    let kernel = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x40,
        }],
    );
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot::load(&mem, &config(&kernel, &[])).unwrap();
    assert!(loaded.video_declined);
    assert_eq!(
        mem.u32_at(loaded.info_addr) & (1 << 11 | 1 << 12),
        0,
        "no VBE/framebuffer info"
    );

    let text = text_with(&mb1_header(0x8 | 0x4), 0x40);
    let kernel = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x40,
        }],
    );
    assert_eq!(
        multiboot::load(&mem, &config(&kernel, &[])),
        Err(LoadError::UnsupportedFlags { flags: 0x8 })
    );
    // Optional bits (16-31 other than 16) are ignored.
    let text = text_with(&mb1_header(1 << 20), 0x40);
    let kernel = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x40,
        }],
    );
    assert!(multiboot::load(&mem, &config(&kernel, &[])).is_ok());
}

#[test]
fn segments_outside_ram_or_above_4gib_are_rejected() {
    let text = text_with(&mb1_header(0), 0x40);
    let mem = FakeMemory::new(&RAM);
    let with = |paddr: u64, mem_size: u64| {
        elf(
            true,
            0x10_0000,
            &[Seg {
                vaddr: paddr,
                paddr,
                data: text.clone(),
                mem_size,
            }],
        )
    };
    // In the 640 KiB - 1 MiB hole.
    assert_eq!(
        multiboot::load(&mem, &config(&with(0xa_0000, 0x40), &[])),
        Err(LoadError::SegmentOutsideRam {
            addr: 0xa_0000,
            len: 0x40
        })
    );
    // Straddling the end of low RAM.
    assert_eq!(
        multiboot::load(&mem, &config(&with(0x9_fff0, 0x40), &[])),
        Err(LoadError::SegmentOutsideRam {
            addr: 0x9_fff0,
            len: 0x40
        })
    );
    // Beyond the end of RAM.
    assert_eq!(
        multiboot::load(&mem, &config(&with(0x3f_fff0, 0x40), &[])),
        Err(LoadError::SegmentOutsideRam {
            addr: 0x3f_fff0,
            len: 0x40
        })
    );
    assert_eq!(
        multiboot::load(&mem, &config(&with(0xffff_fff0, 0x40), &[])),
        Err(LoadError::SegmentAbove4GiB {
            addr: 0xffff_fff0,
            len: 0x40
        })
    );
    assert_eq!(
        multiboot::load(&mem, &config(&with(u64::MAX - 8, 0x40), &[])),
        Err(LoadError::Overflow)
    );
    assert_eq!(
        multiboot::load(&mem, &config(&with(0x10_0000, 0x10), &[])),
        Err(LoadError::SegmentFileSizeExceedsMemSize {
            index: 0,
            file_size: 0x40,
            mem_size: 0x10
        })
    );
    assert_eq!(
        mem.bytes(0x10_0000, 4),
        [FILL; 4],
        "nothing written on failure"
    );
}

#[test]
fn entry_above_4gib_is_rejected() {
    let text = text_with(&mb1_header(0), 0x40);
    let kernel = elf(
        true,
        0x1_0000_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x40,
        }],
    );
    let mem = FakeMemory::new(&RAM);
    assert_eq!(
        multiboot::load(&mem, &config(&kernel, &[])),
        Err(LoadError::EntryAbove4GiB {
            entry: 0x1_0000_0000
        })
    );
}

#[test]
fn elf_header_errors_are_typed() {
    let text = text_with(&mb1_header(0), 0x40);
    let good = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x40,
        }],
    );
    let mem = FakeMemory::new(&RAM);
    let with = |patch: &dyn Fn(&mut Vec<u8>)| {
        let mut k = good.clone();
        patch(&mut k);
        multiboot::load(&mem, &config(&k, &[]))
    };
    use elf::ElfError;
    assert_eq!(
        with(&|k| k[0] = 0),
        Err(LoadError::BadElf(ElfError::NotElf))
    );
    assert_eq!(
        with(&|k| k[4] = 3),
        Err(LoadError::BadElf(ElfError::BadClass { class: 3 }))
    );
    assert_eq!(
        with(&|k| k[5] = 2),
        Err(LoadError::BadElf(ElfError::NotLittleEndian { data: 2 }))
    );
    assert_eq!(
        with(&|k| put16(k, 16, 1)),
        Err(LoadError::BadElf(ElfError::BadType { e_type: 1 }))
    );
    assert_eq!(
        with(&|k| put16(k, 18, 62)),
        Err(LoadError::BadElf(ElfError::BadMachine {
            class: 1,
            machine: 62
        }))
    );
    assert_eq!(
        with(&|k| put16(k, 42, 16)),
        Err(LoadError::BadElf(ElfError::BadProgramHeaderSize {
            size: 16
        }))
    );
    assert_eq!(
        with(&|k| put32(k, 28, 0xffff_fff0)),
        Err(LoadError::BadElf(ElfError::ProgramHeadersOutsideFile {
            offset: 0xffff_fff0,
            count: 1
        }))
    );
    // Segment data beyond the file.
    assert_eq!(
        with(&|k| put32(k, 52 + 4, 0x10_0000)),
        Err(LoadError::FileTooShort {
            needed: 0x10_0040,
            len: good.len() as u64
        })
    );
    assert_eq!(
        with(&|k| put16(k, 44, 0)),
        Err(LoadError::NoLoadableSegment)
    );
}

#[test]
fn pinned_info_block_overlapping_the_kernel_is_rejected() {
    let text = text_with(&mb1_header(0), 0x100);
    let kernel = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x2000,
        }],
    );
    let mem = FakeMemory::new(&RAM);
    let mut cfg = config(&kernel, &[]);
    cfg.info_placement = InfoPlacement::At(0x10_1000);
    assert_eq!(
        multiboot::load(&mem, &cfg),
        Err(LoadError::OverlapsBootInfo {
            addr: 0x10_0000,
            len: 0x2000
        })
    );
    cfg.info_placement = InfoPlacement::At(0xa_0000);
    assert!(matches!(
        multiboot::load(&mem, &cfg),
        Err(LoadError::BootInfoOutsideRam { addr: 0xa_0000, .. })
    ));
    // Pinned in low memory like QEMU's 0x9000: fine, and modules still go
    // after the kernel.
    let initrd = [7u8; 100];
    let modules = [Module {
        data: &initrd,
        cmdline: "m",
    }];
    let mut cfg = config(&kernel, &modules);
    cfg.info_placement = InfoPlacement::At(0x9000);
    let loaded = multiboot::load(&mem, &cfg).unwrap();
    assert_eq!(loaded.entry.ebx, 0x9000);
    assert_eq!(mem.u32_at(0x9000 + 20), 1);
    let mods = u64::from(mem.u32_at(0x9000 + 24));
    assert_eq!(mem.u32_at(mods), 0x10_2000);
    assert_eq!(
        mem.cstr(u64::from(mem.u32_at(0x9000 + 16))),
        "test.elf console=ttyS0 verbose"
    );
}

#[test]
fn modules_that_do_not_fit_are_reported() {
    let text = text_with(&mb1_header(0), 0x100);
    let kernel = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x100,
        }],
    );
    let big = vec![0u8; 0x30_0000];
    let modules = [
        Module {
            data: &[1, 2],
            cmdline: "",
        },
        Module {
            data: &big,
            cmdline: "",
        },
    ];
    let mem = FakeMemory::new(&RAM);
    assert_eq!(
        multiboot::load(&mem, &config(&kernel, &modules)),
        Err(LoadError::NoRoomForModule {
            index: 1,
            len: 0x30_0000
        })
    );
}

#[test]
fn info_block_moves_to_the_next_ram_range_when_the_kernel_fills_one() {
    // Kernel at the very end of low RAM: the block goes to high RAM.
    let text = text_with(&mb1_header(0), 0x100);
    let kernel = elf(
        false,
        0x9_f000,
        &[Seg {
            vaddr: 0x9_f000,
            paddr: 0x9_f000,
            data: text,
            mem_size: 0x1000,
        }],
    );
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot::load(&mem, &config(&kernel, &[])).unwrap();
    assert_eq!(loaded.info_addr, 0x10_0000);
}

// --------------------------------------------------------------- Multiboot2

/// A Multiboot2 header with the given tags (each already padded to 8).
fn mb2_header(tags: &[Vec<u8>]) -> Vec<u8> {
    let mut body: Vec<u8> = tags.concat();
    body.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]); // end tag
    let len = (16 + body.len()) as u32;
    let mut h = vec![0u8; 16];
    put32(&mut h, 0, 0xE852_50D6);
    put32(&mut h, 4, 0);
    put32(&mut h, 8, len);
    put32(&mut h, 12, 0u32.wrapping_sub(0xE852_50D6).wrapping_sub(len));
    h.extend_from_slice(&body);
    h
}

fn tag(tag_type: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 8];
    put16(&mut t, 0, tag_type);
    put16(&mut t, 2, flags);
    put32(&mut t, 4, (8 + payload.len()) as u32);
    t.extend_from_slice(payload);
    while !t.len().is_multiple_of(8) {
        t.push(0);
    }
    t
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn mb2_elf(tags: &[Vec<u8>], is64: bool) -> Vec<u8> {
    let text = text_with(&mb2_header(tags), 0x400);
    elf(
        is64,
        0x10_0100,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text,
            mem_size: 0x1000,
        }],
    )
}

/// Walks the information block's tags: (type, address, size).
fn info_tags(mem: &FakeMemory, base: u64) -> Vec<(u32, u64, u32)> {
    let total = u64::from(mem.u32_at(base));
    let mut out = Vec::new();
    let mut at = base + 8;
    while at < base + total {
        let (t, size) = (mem.u32_at(at), mem.u32_at(at + 4));
        out.push((t, at, size));
        if t == 0 {
            break;
        }
        at = (at + u64::from(size) + 7) & !7;
    }
    out
}

#[test]
fn mb2_elf64_boot_information() {
    let request = tag(1, 0, &words(&[1, 2, 3, 4, 6]));
    let kernel = mb2_elf(&[request, tag(6, 0, &[])], true);
    let initrd = vec![0x42; 0x1234];
    let modules = [Module {
        data: &initrd,
        cmdline: "initrd",
    }];
    let mem = FakeMemory::new(&RAM);
    let loaded = load(&mem, &config(&kernel, &modules)).unwrap();
    assert_eq!(loaded.protocol, Protocol::Multiboot2);
    assert_eq!(loaded.entry.eax, 0x36D7_6289);
    assert_eq!(loaded.entry.eip, 0x10_0100);
    let base = u64::from(loaded.entry.ebx);
    assert_eq!(base % 8, 0);
    assert_eq!(u64::from(mem.u32_at(base)), loaded.info_len, "total_size");
    assert_eq!(mem.u32_at(base + 4), 0, "reserved");
    let tags = info_tags(&mem, base);
    let types: Vec<u32> = tags.iter().map(|t| t.0).collect();
    assert_eq!(types, [1, 2, 3, 4, 6, 0]);
    for &(_, at, _) in &tags {
        assert_eq!(at % 8, 0, "tags 8-aligned");
    }
    let (_, cmd, cmd_size) = tags[0];
    assert_eq!(mem.cstr(cmd + 8), "test.elf console=ttyS0 verbose");
    assert_eq!(
        cmd_size as usize,
        8 + "test.elf console=ttyS0 verbose".len() + 1
    );
    assert_eq!(mem.cstr(tags[1].1 + 8), "ponte");
    let (_, m, m_size) = tags[2];
    let (start, end) = (mem.u32_at(m + 8), mem.u32_at(m + 12));
    assert_eq!(end - start, 0x1234);
    assert_eq!(start % 4096, 0);
    assert!(u64::from(start) >= base + loaded.info_len);
    assert_eq!(mem.bytes(u64::from(start), 0x1234), initrd);
    assert_eq!(mem.cstr(m + 16), "initrd");
    assert_eq!(m_size, 16 + 7);
    let (_, meminfo, meminfo_size) = tags[3];
    assert_eq!(meminfo_size, 16);
    assert_eq!(mem.u32_at(meminfo + 8), 640);
    assert_eq!(mem.u32_at(meminfo + 12), 3072);
    let (_, mmap, mmap_size) = tags[4];
    assert_eq!(mmap_size, 16 + 2 * 24);
    assert_eq!(mem.u32_at(mmap + 8), 24, "entry_size");
    assert_eq!(mem.u32_at(mmap + 12), 0, "entry_version");
    assert_eq!(mem.u64_at(mmap + 16), 0);
    assert_eq!(mem.u64_at(mmap + 24), 0xa_0000);
    assert_eq!(mem.u32_at(mmap + 32), 1);
    assert_eq!(mem.u32_at(mmap + 36), 0);
    assert_eq!(mem.u64_at(mmap + 40), 0x10_0000);
    assert_eq!(mem.u64_at(mmap + 48), 0x30_0000);
    assert_eq!(tags[5].2, 8, "end tag");
    assert_eq!(
        tags[5].1 + 8,
        base + loaded.info_len,
        "total_size covers the end tag"
    );
}

#[test]
fn mb2_elf32_with_entry_tag_overrides_e_entry() {
    let kernel = mb2_elf(&[tag(3, 0, &words(&[0x10_0200]))], false);
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot2::load(&mem, &config(&kernel, &[])).unwrap();
    assert_eq!(loaded.entry.eip, 0x10_0200);
    assert_eq!(loaded.kernel_end, 0x10_1000);
}

#[test]
fn mb2_address_tag_loads_a_flat_image() {
    // Header at file offset 0x18, header_addr 0x200018, load from file start.
    let address = tag(2, 0, &words(&[0x20_0018, 0x20_0000, 0x20_0800, 0x20_3000]));
    let entry = tag(3, 0, &words(&[0x20_0100]));
    let header = mb2_header(&[address, entry]);
    let mut file: Vec<u8> = (0..0x900).map(|i| (i * 3) as u8).collect();
    file[0x18..0x18 + header.len()].copy_from_slice(&header);
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot2::load(&mem, &config(&file, &[])).unwrap();
    assert_eq!(loaded.entry.eip, 0x20_0100);
    assert_eq!(mem.bytes(0x20_0000, 0x800), &file[..0x800]);
    assert!(mem.bytes(0x20_0800, 0x2800).iter().all(|&b| b == 0));
    assert_eq!(loaded.kernel_end, 0x20_3000);

    // load_addr -1: from the file's start, so the header lands at header_addr.
    let address = tag(2, 0, &words(&[0x20_0018, u32::MAX, 0, 0]));
    let header = mb2_header(&[address, tag(3, 0, &words(&[0x20_0000]))]);
    file[0x18..0x18 + header.len()].copy_from_slice(&header);
    let mem = FakeMemory::new(&RAM);
    let loaded = multiboot2::load(&mem, &config(&file, &[])).unwrap();
    assert_eq!(mem.bytes(0x20_0000, file.len()), file);
    assert_eq!(loaded.kernel_end, 0x20_0000 + file.len() as u64);

    // An address tag needs an entry tag.
    let header = mb2_header(&[tag(2, 0, &words(&[0x20_0018, 0x20_0000, 0, 0]))]);
    file[0x18..0x18 + header.len()].copy_from_slice(&header);
    assert_eq!(
        multiboot2::load(&mem, &config(&file, &[])),
        Err(LoadError::MissingEntryAddress)
    );
}

#[test]
fn mb2_required_and_optional_requests() {
    let mem = FakeMemory::new(&RAM);
    let fb = words(&[1024, 768, 32]);
    let loaded = multiboot2::load(&mem, &config(&mb2_elf(&[tag(5, 1, &fb)], false), &[])).unwrap();
    assert!(loaded.video_declined);
    assert_eq!(
        multiboot2::load(&mem, &config(&mb2_elf(&[tag(5, 0, &fb)], false), &[])),
        Err(LoadError::FramebufferRequired)
    );
    assert_eq!(
        multiboot2::load(
            &mem,
            &config(&mb2_elf(&[tag(1, 0, &words(&[6, 8]))], false), &[])
        ),
        Err(LoadError::UnsupportedInfoRequest { info_type: 8 })
    );
    assert!(multiboot2::load(
        &mem,
        &config(&mb2_elf(&[tag(1, 1, &words(&[8, 14]))], false), &[])
    )
    .is_ok());
    assert_eq!(
        multiboot2::load(&mem, &config(&mb2_elf(&[tag(7, 0, &[])], false), &[])),
        Err(LoadError::UnsupportedTag { tag_type: 7 })
    );
    assert_eq!(
        multiboot2::load(&mem, &config(&mb2_elf(&[tag(42, 0, &[])], false), &[])),
        Err(LoadError::UnsupportedTag { tag_type: 42 })
    );
    let accepted = [
        tag(42, 1, &[1, 2, 3]),
        tag(4, 0, &words(&[2])),
        tag(6, 0, &[]),
        tag(8, 0, &words(&[0x10_0000])),
        tag(9, 0, &words(&[0x10_0000])),
        tag(10, 0, &words(&[0x10_0000, 0x100_0000, 4096, 0])),
    ];
    assert!(multiboot2::load(&mem, &config(&mb2_elf(&accepted, true), &[])).is_ok());
}

#[test]
fn mb2_malformed_headers_are_rejected() {
    let mem = FakeMemory::new(&RAM);
    // A tag of size 0 would never advance.
    let mut h = mb2_header(&[tag(4, 0, &words(&[0]))]);
    put32(&mut h, 16 + 4, 0);
    let k = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text_with(&h, 0x100),
            mem_size: 0x100,
        }],
    );
    assert!(matches!(
        multiboot2::load(&mem, &config(&k, &[])),
        Err(LoadError::BadTag {
            tag_type: 4,
            size: 0,
            ..
        })
    ));
    // A tag running past header_length.
    let mut h = mb2_header(&[tag(4, 0, &words(&[0]))]);
    put32(&mut h, 16 + 4, 0x100);
    let k = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text_with(&h, 0x200),
            mem_size: 0x200,
        }],
    );
    assert!(matches!(
        multiboot2::load(&mem, &config(&k, &[])),
        Err(LoadError::BadTag {
            tag_type: 4,
            size: 0x100,
            ..
        })
    ));
    // No end tag: header_length ends right after a tag.
    let mut h = mb2_header(&[tag(6, 0, &[])]);
    h.truncate(24);
    let len = 24u32;
    put32(&mut h, 8, len);
    put32(&mut h, 12, 0u32.wrapping_sub(0xE852_50D6).wrapping_sub(len));
    let k = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text_with(&h, 0x100),
            mem_size: 0x100,
        }],
    );
    assert!(matches!(
        multiboot2::load(&mem, &config(&k, &[])),
        Err(LoadError::BadTag { .. })
    ));
    // Architecture MIPS.
    let mut h = mb2_header(&[]);
    put32(&mut h, 4, 4);
    let len = h.len() as u32;
    put32(
        &mut h,
        12,
        0u32.wrapping_sub(0xE852_50D6)
            .wrapping_sub(4)
            .wrapping_sub(len),
    );
    let k = elf(
        false,
        0x10_0000,
        &[Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            data: text_with(&h, 0x100),
            mem_size: 0x100,
        }],
    );
    assert_eq!(
        multiboot2::load(&mem, &config(&k, &[])),
        Err(LoadError::UnsupportedArchitecture { architecture: 4 })
    );
    // header_length smaller than the fixed part plus an end tag.
    let mut h = vec![0u8; 16];
    put32(&mut h, 0, 0xE852_50D6);
    put32(&mut h, 8, 16);
    put32(&mut h, 12, 0u32.wrapping_sub(0xE852_50D6).wrapping_sub(16));
    assert_eq!(
        multiboot2::load(&mem, &config(&h, &[])),
        Err(LoadError::BadHeaderLength { header_length: 16 })
    );
}

#[test]
fn mb2_header_search_rules() {
    let h = mb2_header(&[]);
    let mut file = vec![0u8; 0x9000];
    file[0x104..0x104 + h.len()].copy_from_slice(&h);
    assert_eq!(
        multiboot2::find_header(&file),
        None,
        "4-aligned is not 8-aligned"
    );
    file[0x8000..0x8000 + h.len()].copy_from_slice(&h);
    assert_eq!(multiboot2::find_header(&file), None, "beyond 32 KiB");
    file[0x7ff0..0x7ff0 + 16].copy_from_slice(&h[..16]);
    let found = multiboot2::find_header(&file).unwrap();
    assert_eq!(found.offset, 0x7ff0);
    // Found, but its tags would run past 32 KiB.
    let mem = FakeMemory::new(&RAM);
    assert_eq!(
        multiboot2::load(&mem, &config(&file, &[])),
        Err(LoadError::BadHeaderLength { header_length: 24 })
    );
}

#[test]
fn detect_prefers_multiboot1_like_qemu() {
    let mut file = vec![0u8; 0x100];
    let h2 = mb2_header(&[]);
    file[0x10..0x10 + h2.len()].copy_from_slice(&h2);
    assert_eq!(detect(&file), Some(Protocol::Multiboot2));
    file[0x40..0x4c].copy_from_slice(&mb1_header(0)[..12]);
    assert_eq!(detect(&file), Some(Protocol::Multiboot1));
    assert_eq!(detect(&[0u8; 100]), None);
}

// ------------------------------------------------------- hostile input sweep

/// A tiny deterministic generator for corrupting images.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn truncated_and_corrupted_images_never_panic() {
    let initrd = [9u8; 300];
    let modules = [Module {
        data: &initrd,
        cmdline: "m",
    }];
    let images = [
        elf(
            false,
            0x10_0010,
            &[Seg {
                vaddr: 0x10_0000,
                paddr: 0x10_0000,
                data: text_with(&mb1_header(3), 0x200),
                mem_size: 0x800,
            }],
        ),
        elf(
            true,
            0x10_0010,
            &[Seg {
                vaddr: 0x10_0000,
                paddr: 0x10_0000,
                data: text_with(&mb1_header(0), 0x200),
                mem_size: 0x800,
            }],
        ),
        mb2_elf(
            &[tag(1, 0, &words(&[1, 6])), tag(3, 0, &words(&[0x10_0100]))],
            true,
        ),
    ];
    let mut rng = Lcg(0x5eed);
    let mem = FakeMemory::new(&RAM);
    for image in &images {
        // Every truncation.
        for len in 0..image.len() {
            let _ = load(&mem, &config(&image[..len], &modules));
        }
        // Random corruption of the headers and program headers.
        for _ in 0..1500 {
            let mut k = image.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = if rng.next().is_multiple_of(2) {
                    (rng.next() % 0x100) as usize
                } else {
                    0x1000 + (rng.next() % 0x80) as usize
                };
                k[at] = rng.next() as u8;
            }
            if let Ok(loaded) = load(&mem, &config(&k, &modules)) {
                assert!(loaded.kernel_end <= FOUR_GIB);
                assert!(
                    loaded.info_addr >= loaded.kernel_end
                        || loaded.info_addr + loaded.info_len <= loaded.kernel_start
                );
            }
        }
    }
}

#[test]
fn find_room_respects_ranges_alignment_and_avoided_block() {
    assert_eq!(find_room(&RAM, 0, 0x1000, 0x1000, None), Some(0));
    assert_eq!(
        find_room(&RAM, 0x9_f001, 0x1000, 0x1000, None),
        Some(0x10_0000)
    );
    assert_eq!(
        find_room(&RAM, 0, 0x10_0000, 0x1000, None),
        Some(0x10_0000),
        "too big for low RAM"
    );
    assert_eq!(
        find_room(&RAM, 0x10_0000, 0x1000, 0x1000, Some((0x10_0000, 0x1800))),
        Some(0x10_2000)
    );
    assert_eq!(find_room(&RAM, 0x3f_f000, 0x2000, 0x1000, None), None);
    assert_eq!(find_room(&RAM, u64::MAX - 2, 1, 0x1000, None), None);
    let above = [RamRange::new(0xffff_f000, 0x2000)];
    assert_eq!(
        find_room(&above, 0, 0x1000, 0x1000, None),
        Some(0xffff_f000)
    );
    assert_eq!(
        find_room(&above, 0, 0x1001, 0x1000, None),
        None,
        "not above 4 GiB"
    );
}

// ------------------------------------------- kernels from real toolchains

/// Built by testdata/build.sh with GNU as and ld (layout in that script).
static GNU_MULTIBOOT_ELF32: &[u8] = include_bytes!("testdata/multiboot_gnu.elf");
/// Built by testdata/build.sh with rustc for x86_64-unknown-none.
static RUSTC_MULTIBOOT2_ELF64: &[u8] = include_bytes!("testdata/multiboot2_rustc.elf");

#[test]
fn gnu_ld_multiboot_elf32_loads() {
    let mem = FakeMemory::new(&RAM);
    let loaded = load(&mem, &config(GNU_MULTIBOOT_ELF32, &[])).unwrap();
    assert_eq!(loaded.protocol, Protocol::Multiboot1);
    assert_eq!(loaded.entry.eip, 0x10_000c);
    assert_eq!(loaded.entry.eax, 0x2BAD_B002);
    assert_eq!(
        mem.bytes(0x10_0000, 0x1010),
        &GNU_MULTIBOOT_ELF32[0x60..0x60 + 0x1010]
    );
    assert_eq!(
        mem.u32_at(0x10_0000),
        0x1BAD_B002,
        "the header is loaded first"
    );
    assert_eq!(mem.cstr(0x10_1000), "hello from data");
    assert!(
        mem.bytes(0x10_1010, 0x2000).iter().all(|&b| b == 0),
        "bss zeroed"
    );
    assert_eq!(loaded.kernel_end, 0x10_3010);
    assert_eq!(loaded.info_addr, 0x10_4000);
}

#[test]
fn rustc_multiboot2_elf64_loads() {
    let mem = FakeMemory::new(&RAM);
    let loaded = load(&mem, &config(RUSTC_MULTIBOOT2_ELF64, &[])).unwrap();
    assert_eq!(loaded.protocol, Protocol::Multiboot2);
    assert_eq!(loaded.entry.eip, 0x20_0018);
    assert_eq!(loaded.entry.eax, 0x36D7_6289);
    assert_eq!(
        mem.bytes(0x20_0000, 0x1c),
        &RUSTC_MULTIBOOT2_ELF64[0xe8..0xe8 + 0x1c]
    );
    assert_eq!(mem.u32_at(0x20_0000), 0xE852_50D6);
    assert_eq!(mem.cstr(0x20_1000), "hello from data");
    assert!(
        mem.bytes(0x20_1010, 0x2000).iter().all(|&b| b == 0),
        "bss zeroed"
    );
    assert_eq!(loaded.kernel_start, 0x20_0000);
    assert_eq!(loaded.kernel_end, 0x20_3010);
    assert_eq!(loaded.info_addr, 0x20_4000);
    assert_eq!(
        mem.bytes(0x20_001c, 1),
        [FILL],
        "the gap between segments is untouched"
    );
}
