//! The PVH entry of an uncompressed `vmlinux` ELF.
//!
//! The kernel announces its 32-bit entry in an ELF note of type
//! `XEN_ELFNOTE_PHYS32_ENTRY` (18) with name "Xen" inside a PT_NOTE
//! segment; the descriptor holds the physical entry address (4 bytes in
//! Linux, 8 accepted too). The PT_LOAD segments go at their `p_paddr`.
//!
//! The loader fills Xen's `hvm_start_info` version 1
//! (`xen/include/public/arch-x86/hvm/start_info.h`) at the start of the boot
//! information page: magic 0x336ec578, version 1, flags 0, the module list
//! (the initramfs as module 0, with its string) at offset
//! [`MODLIST_OFFSET`], the command line, the RSDP address and the memory map
//! (`hvm_memmap_table_entry`: u64 addr, u64 size, u32 type, u32 reserved)
//! at offset [`MEMMAP_OFFSET`]. Linux outside Xen requires the version 1
//! memory map: without it, `init_pvh_bootparams` stops the boot.
//!
//! Entering this way skips the kernel's own decompression.

use super::{
    check_cmdline, field32, field64, parse_elf, place_initrd, write_cstr, LinuxConfig, LinuxEntry,
    LinuxError, LinuxProtocol, LoadedLinux, Placement, PvhEntry, AR_CODE32, AR_DATA, AR_TSS_BUSY,
    BOOT_INFO_SIZE, CMDLINE_AREA_SIZE, CR0_ET, CR0_PE, RFLAGS_CLEAR,
};
use super::{memory_map_for, BootStructure, FlatSegment, MemoryMap};
use crate::loader::elf::ElfFile;
use crate::loader::{check_segments, copy_segments, KernelImage, FOUR_GIB};
use crate::memory::GuestMemory;

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The `hvm_start_info` version written (with memory map).
pub const START_INFO_VERSION: u32 = 1;
/// Size of `hvm_start_info` version 1.
pub const START_INFO_SIZE: u64 = 56;
/// Offset of the module list in the boot information page.
pub const MODLIST_OFFSET: u64 = 64;
/// Size of one `hvm_modlist_entry`.
pub const MODLIST_ENTRY_SIZE: u64 = 32;
/// Offset of the memory map in the boot information page.
pub const MEMMAP_OFFSET: u64 = 128;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: u64 = 24;
/// ELF note type `XEN_ELFNOTE_PHYS32_ENTRY`.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Program header type of a note segment.
pub const PT_NOTE: u32 = 4;
/// Longest command line Linux keeps (`COMMAND_LINE_SIZE` 2048 with NUL);
/// longer would be cut silently.
pub const MAX_CMDLINE: u64 = 2047;

/// Finds the PVH entry address in the PT_NOTE segments of an ELF file.
pub fn find_entry(kernel: &[u8]) -> Result<u64, LinuxError> {
    let elf = parse_elf(kernel)?;
    find_entry_in(kernel, &elf)
}

fn find_entry_in(kernel: &[u8], elf: &ElfFile<'_>) -> Result<u64, LinuxError> {
    // The shared reader has checked the program header table's bounds and
    // entry size; its location is re-read from the file header here.
    let (phoff, phentsize, phnum) = if elf.is64() {
        (
            field64(kernel, 32)?,
            u64::from(super::field16(kernel, 54)?),
            super::field16(kernel, 56)?,
        )
    } else {
        (
            u64::from(field32(kernel, 28)?),
            u64::from(super::field16(kernel, 42)?),
            super::field16(kernel, 44)?,
        )
    };
    for index in 0..u64::from(phnum) {
        let base = phoff
            .checked_add(index * phentsize)
            .ok_or(LinuxError::Overflow)?;
        if field32(kernel, base)? != PT_NOTE {
            continue;
        }
        let (offset, size) = if elf.is64() {
            (field64(kernel, base + 8)?, field64(kernel, base + 32)?)
        } else {
            (
                u64::from(field32(kernel, base + 4)?),
                u64::from(field32(kernel, base + 16)?),
            )
        };
        let end = offset
            .checked_add(size)
            .filter(|&e| e <= kernel.len() as u64)
            .ok_or(LinuxError::NoteSegmentOutsideFile { offset, size })?;
        if let Some(entry) = scan_notes(kernel, offset, end)? {
            return Ok(entry);
        }
    }
    Err(LinuxError::NoPvhEntryNote)
}

/// Walks the notes in `kernel[start..end]` (already inside the file).
fn scan_notes(kernel: &[u8], start: u64, end: u64) -> Result<Option<u64>, LinuxError> {
    let mut at = start;
    // Every note is at least 12 bytes, so this ends within size / 12 rounds.
    while end - at >= 12 {
        let namesz = field32(kernel, at)?;
        let descsz = field32(kernel, at + 4)?;
        let note_type = field32(kernel, at + 8)?;
        let bad = LinuxError::BadNote {
            offset: at,
            namesz,
            descsz,
        };
        let name_at = at + 12;
        let desc_at = name_at
            .checked_add(pad4(namesz))
            .filter(|&d| d <= end)
            .ok_or(bad)?;
        let next = desc_at
            .checked_add(pad4(descsz))
            .filter(|&n| n <= end)
            .ok_or(bad)?;
        // Both ranges were just checked against `end`, itself inside the file.
        let name = kernel
            .get(name_at as usize..(name_at + u64::from(namesz)) as usize)
            .ok_or(bad)?;
        if note_type == XEN_ELFNOTE_PHYS32_ENTRY && name == b"Xen\0" {
            let entry = match descsz {
                4 => u64::from(field32(kernel, desc_at)?),
                8 => field64(kernel, desc_at)?,
                _ => return Err(LinuxError::BadPvhEntrySize { descsz }),
            };
            return Ok(Some(entry));
        }
        at = next;
    }
    Ok(None)
}

fn pad4(n: u32) -> u64 {
    (u64::from(n) + 3) & !3
}

/// Loads a `vmlinux` for the PVH entry.
pub fn load(mem: &impl GuestMemory, config: &LinuxConfig<'_>) -> Result<LoadedLinux, LinuxError> {
    let kernel = config.kernel;
    let elf = parse_elf(kernel)?;
    let entry = find_entry_in(kernel, &elf)?;
    check_cmdline(config.cmdline, MAX_CMDLINE)?;
    let module_cmdline = config.initrd.map_or("", |m| m.cmdline);
    let room_for_module_cmdline = CMDLINE_AREA_SIZE - (config.cmdline.len() as u64 + 1) - 1;
    check_cmdline(module_cmdline, room_for_module_cmdline)?;

    let map = memory_map_for(config)?;
    let mut placement = Placement::new(&map);
    placement.claim_boot_area(&config.boot_area, false)?;

    let image = KernelImage::Elf(elf);
    let span = check_segments(&image, kernel, &placement.ram, None)?;
    if entry < span.start || entry >= span.end {
        return Err(LinuxError::EntryOutsideKernel { entry });
    }
    placement.claim(BootStructure::Kernel, span.start, span.end - span.start)?;
    copy_segments(mem, &image, kernel)?;

    // Linux 6.1 copies only the low 32 bits of the module address into the
    // zero page, so the initramfs stays below 4 GiB.
    let initrd = place_initrd(
        mem,
        &mut placement,
        config.initrd.as_ref(),
        span.end,
        FOUR_GIB,
    )?;

    let area = config.boot_area;
    let module_cmdline_addr = write_cstr(mem, area.cmdline, config.cmdline)?;
    write_cstr(mem, module_cmdline_addr, module_cmdline)?;

    let info = start_info(
        &map,
        area.cmdline,
        initrd.map(|m| (m.start, m.end - m.start, module_cmdline_addr)),
        config.rsdp.unwrap_or(0),
        area.boot_info,
    );
    mem.write(area.boot_info, &info)?;

    let flat = |access_rights| FlatSegment {
        selector: 0,
        base: 0,
        limit: 0xffff_ffff,
        access_rights,
    };
    Ok(LoadedLinux {
        protocol: LinuxProtocol::Pvh,
        entry: LinuxEntry::Pvh(PvhEntry {
            // Both checked below 4 GiB: the entry inside the kernel span,
            // the boot area by its claim.
            eip: entry as u32,
            ebx: area.boot_info as u32,
            cr0: CR0_PE | CR0_ET,
            cr4: 0,
            rflags: RFLAGS_CLEAR,
            cs: flat(AR_CODE32),
            ds: flat(AR_DATA),
            tr: FlatSegment {
                selector: 0,
                base: 0,
                limit: 0x67,
                access_rights: AR_TSS_BUSY,
            },
        }),
        kernel_start: span.start,
        kernel_end: span.end,
        initrd,
        boot_info: area.boot_info,
        cmdline: area.cmdline,
        memory_map: map,
    })
}

/// Builds the boot information page: `hvm_start_info`, the module list and
/// the memory map, with addresses relative to `page` (its guest address).
fn start_info(
    map: &MemoryMap,
    cmdline: u64,
    module: Option<(u64, u64, u64)>,
    rsdp: u64,
    page: u64,
) -> [u8; BOOT_INFO_SIZE as usize] {
    let mut info = [0u8; BOOT_INFO_SIZE as usize];
    let put32 =
        |buf: &mut [u8], off: usize, v: u32| buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |buf: &mut [u8], off: usize, v: u64| buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut info, 0, START_INFO_MAGIC);
    put32(&mut info, 4, START_INFO_VERSION);
    put32(&mut info, 8, 0);
    put64(&mut info, 24, cmdline);
    put64(&mut info, 32, rsdp);
    if let Some((start, len, module_cmdline)) = module {
        let m = MODLIST_OFFSET as usize;
        put32(&mut info, 12, 1);
        put64(&mut info, 16, page + MODLIST_OFFSET);
        put64(&mut info, m, start);
        put64(&mut info, m + 8, len);
        put64(&mut info, m + 16, module_cmdline);
    }
    put64(&mut info, 40, page + MEMMAP_OFFSET);
    put32(&mut info, 48, map.len() as u32);
    // 128 entries of 24 bytes from offset 128 end at 3200, inside the page.
    for (i, region) in map.iter().enumerate() {
        let e = MEMMAP_OFFSET as usize + i * MEMMAP_ENTRY_SIZE as usize;
        put64(&mut info, e, region.start);
        put64(&mut info, e + 8, region.len);
        put32(&mut info, e + 16, region.kind as u32);
    }
    info
}
