//! Multiboot (specification 0.6.96) guest kernels.
//!
//! The header is searched in the first 8 KiB of the file at 4-byte alignment:
//! magic 0x1BADB002, flags, and a checksum making the three sum to zero.
//! Flags bit 0 (page-align modules) and bit 1 (memory information) are always
//! satisfied; bit 2 (video mode) is declined as QEMU declines it (the kernel
//! runs without VBE or framebuffer information); any other of the required
//! bits 0-15 fails the load. With bit 16 the a.out-kludge address fields
//! locate the image; otherwise the file must be ELF (ELF32 or ELF64).
//!
//! The information block gets flags bit 0 (mem_lower/mem_upper), bit 2
//! (command line `"<name> <args>"` as QEMU builds it), bit 3 (modules with
//! their strings), bit 6 (memory map: entries of `size` = 20, u64 base, u64
//! length, u32 type 1) and bit 9 (boot loader name). Layout from its start:
//! the 116-byte information structure, the module list at offset 120, the
//! memory map, then the strings.

use super::elf::ElfFile;
use super::{
    align_up, basic_meminfo, check_segments, copy_segments, find_room, le32, place_modules,
    write_cstr, BootConfig, EntryState, InfoPlacement, KernelImage, LoadError, LoadedKernel,
    Protocol, Segment, PAGE_SIZE,
};
use crate::memory::GuestMemory;

/// Header magic.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Value in EAX at entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie within this many bytes from the file's start.
pub const SEARCH_LIMIT: usize = 8192;

/// Header flag: align modules on page boundaries.
pub const HEADER_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag: provide memory information.
pub const HEADER_MEMORY_INFO: u32 = 1 << 1;
/// Header flag: provide video mode information.
pub const HEADER_VIDEO_MODE: u32 = 1 << 2;
/// Header flag: the address fields are valid (a.out kludge).
pub const HEADER_ADDRESS_FIELDS: u32 = 1 << 16;

/// Information flag: mem_lower and mem_upper are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Information flag: cmdline is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Information flag: mods_count and mods_addr are valid.
pub const INFO_MODULES: u32 = 1 << 3;
/// Information flag: mmap_length and mmap_addr are valid.
pub const INFO_MEMORY_MAP: u32 = 1 << 6;
/// Information flag: boot_loader_name is valid.
pub const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

/// Size of the information structure including the framebuffer fields.
pub const INFO_SIZE: u64 = 116;
/// Offset of the module list in the block.
const MODULES_OFFSET: u64 = 120;
/// Size of one module list entry.
pub const MODULE_ENTRY_SIZE: u64 = 16;
/// Size of one memory map entry including its size field.
pub const MMAP_ENTRY_SIZE: u64 = 24;

/// A located Multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset of the magic in the file.
    pub offset: u64,
    /// The flags field.
    pub flags: u32,
}

/// Finds the first valid header (magic and checksum) within the first 8 KiB.
pub fn find_header(kernel: &[u8]) -> Option<Header> {
    let limit = kernel.len().min(SEARCH_LIMIT);
    let mut offset = 0usize;
    while offset + 12 <= limit {
        let at = offset as u64;
        if le32(kernel, at) == Some(HEADER_MAGIC) {
            let flags = le32(kernel, at + 4)?;
            let checksum = le32(kernel, at + 8)?;
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
                return Some(Header { offset: at, flags });
            }
        }
        offset += 4;
    }
    None
}

/// The a.out-kludge image described by the header's address fields.
fn address_fields_image(kernel: &[u8], header: Header) -> Result<(Segment, u32), LoadError> {
    let len = kernel.len() as u64;
    let needed = header.offset + 32;
    let field = |i: u64| le32(kernel, header.offset + i);
    let (
        Some(header_addr),
        Some(load_addr),
        Some(load_end_addr),
        Some(bss_end_addr),
        Some(entry_addr),
    ) = (field(12), field(16), field(20), field(24), field(28))
    else {
        return Err(LoadError::FileTooShort { needed, len });
    };
    let bad = LoadError::BadAddressFields {
        header_addr,
        load_addr,
        load_end_addr,
        bss_end_addr,
    };
    // The header sits at (header_addr - load_addr) bytes into the text.
    let header_in_text = header_addr.checked_sub(load_addr).ok_or(bad)?;
    let file_offset = header
        .offset
        .checked_sub(u64::from(header_in_text))
        .ok_or(bad)?;
    let load_size = if load_end_addr == 0 {
        len - file_offset
    } else {
        u64::from(load_end_addr.checked_sub(load_addr).ok_or(bad)?)
    };
    let load_end = u64::from(load_addr) + load_size;
    let mem_end = if bss_end_addr == 0 {
        load_end
    } else if u64::from(bss_end_addr) < load_end {
        return Err(bad);
    } else {
        u64::from(bss_end_addr)
    };
    Ok((
        Segment {
            index: 0,
            paddr: u64::from(load_addr),
            file_offset,
            file_size: load_size,
            mem_size: mem_end - u64::from(load_addr),
        },
        entry_addr,
    ))
}

/// Loads a Multiboot kernel, its modules and the information block.
pub fn load(mem: &impl GuestMemory, config: &BootConfig<'_>) -> Result<LoadedKernel, LoadError> {
    let kernel = config.kernel;
    let header = find_header(kernel).ok_or(LoadError::NoHeader)?;
    let known = HEADER_PAGE_ALIGN | HEADER_MEMORY_INFO | HEADER_VIDEO_MODE;
    let unknown_required = header.flags & 0xffff & !known;
    if unknown_required != 0 {
        return Err(LoadError::UnsupportedFlags {
            flags: unknown_required,
        });
    }

    let (image, entry) = if header.flags & HEADER_ADDRESS_FIELDS != 0 {
        let (segment, entry) = address_fields_image(kernel, header)?;
        (KernelImage::Flat(segment), u64::from(entry))
    } else {
        let elf = ElfFile::parse(kernel)?;
        (KernelImage::Elf(elf), elf.physical_entry())
    };
    let entry = u32::try_from(entry).map_err(|_| LoadError::EntryAbove4GiB { entry })?;

    let layout = InfoLayout::new(config)?;
    let pinned = match config.info_placement {
        InfoPlacement::At(addr) => Some((addr, layout.total)),
        InfoPlacement::AfterKernel => None,
    };
    let span = check_segments(&image, kernel, config.ram, pinned)?;
    let info_addr = match pinned {
        Some((addr, len)) => {
            if find_room(config.ram, addr, len, 1, None) != Some(addr) {
                return Err(LoadError::BootInfoOutsideRam { addr, len });
            }
            addr
        }
        None => {
            let from = align_up(span.end, PAGE_SIZE).ok_or(LoadError::Overflow)?;
            find_room(config.ram, from, layout.total, PAGE_SIZE, None)
                .ok_or(LoadError::NoRoomForBootInfo { len: layout.total })?
        }
    };

    copy_segments(mem, &image, kernel)?;

    // Modules follow the kernel and the block (if the block is after it).
    let after = span.end.max(match pinned {
        Some(_) => 0,
        None => info_addr + layout.total,
    });
    let mods_addr = info_addr + MODULES_OFFSET;
    let modules_end = place_modules(mem, config.modules, config.ram, after, pinned, |i, m| {
        let mut entry = [0u8; MODULE_ENTRY_SIZE as usize];
        entry[0..4].copy_from_slice(&(m.start as u32).to_le_bytes());
        entry[4..8].copy_from_slice(&(m.end as u32).to_le_bytes());
        entry[8..12].copy_from_slice(
            &((info_addr + layout.module_string_offset(config, i)) as u32).to_le_bytes(),
        );
        mem.write(mods_addr + i as u64 * MODULE_ENTRY_SIZE, &entry)?;
        Ok(())
    })?;

    layout.write(mem, config, info_addr)?;

    Ok(LoadedKernel {
        protocol: Protocol::Multiboot1,
        entry: EntryState {
            eip: entry,
            eax: BOOTLOADER_MAGIC,
            ebx: info_addr as u32,
        },
        kernel_start: span.start,
        kernel_end: span.end,
        info_addr,
        info_len: layout.total,
        modules_end: modules_end.max(info_addr + layout.total),
        video_declined: header.flags & HEADER_VIDEO_MODE != 0,
    })
}

/// Offsets inside the information block.
struct InfoLayout {
    mmap: u64,
    strings: u64,
    total: u64,
}

impl InfoLayout {
    fn new(config: &BootConfig<'_>) -> Result<Self, LoadError> {
        let n_mods = config.modules.len() as u64;
        let mmap = n_mods
            .checked_mul(MODULE_ENTRY_SIZE)
            .and_then(|m| m.checked_add(MODULES_OFFSET))
            .ok_or(LoadError::Overflow)?;
        let strings = (config.ram.len() as u64)
            .checked_mul(MMAP_ENTRY_SIZE)
            .and_then(|m| m.checked_add(mmap))
            .ok_or(LoadError::Overflow)?;
        let mut total = strings;
        let mut add = |n: usize| -> Result<(), LoadError> {
            total = total
                .checked_add(n as u64)
                .and_then(|t| t.checked_add(1))
                .ok_or(LoadError::Overflow)?;
            Ok(())
        };
        // "<name> <args>"
        add(config.kernel_name.len() + 1 + config.cmdline.len())?;
        for m in config.modules {
            add(m.cmdline.len())?;
        }
        add(config.boot_loader_name.len())?;
        Ok(Self {
            mmap,
            strings,
            total,
        })
    }

    /// Offset of module `index`'s string, relative to the block.
    fn module_string_offset(&self, config: &BootConfig<'_>, index: usize) -> u64 {
        let mut at =
            self.strings + (config.kernel_name.len() + 1 + config.cmdline.len() + 1) as u64;
        for m in &config.modules[..index] {
            at += m.cmdline.len() as u64 + 1;
        }
        at
    }

    fn write(
        &self,
        mem: &impl GuestMemory,
        config: &BootConfig<'_>,
        base: u64,
    ) -> Result<(), LoadError> {
        let cmdline = base + self.strings;
        let mut at = write_cstr(
            mem,
            cmdline,
            &[
                config.kernel_name.as_bytes(),
                b" ",
                config.cmdline.as_bytes(),
            ],
        )?;
        for m in config.modules {
            at = write_cstr(mem, at, &[m.cmdline.as_bytes()])?;
        }
        let loader_name = at;
        write_cstr(mem, at, &[config.boot_loader_name.as_bytes()])?;

        for (i, r) in config.ram.iter().enumerate() {
            let mut e = [0u8; MMAP_ENTRY_SIZE as usize];
            e[0..4].copy_from_slice(&20u32.to_le_bytes());
            e[4..12].copy_from_slice(&r.start.to_le_bytes());
            e[12..20].copy_from_slice(&r.len.to_le_bytes());
            e[20..24].copy_from_slice(&1u32.to_le_bytes());
            mem.write(base + self.mmap + i as u64 * MMAP_ENTRY_SIZE, &e)?;
        }

        let (mem_lower, mem_upper) = basic_meminfo(config.ram);
        let mut info = [0u8; INFO_SIZE as usize];
        let mut put = |offset: usize, value: u32| {
            info[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        };
        put(
            0,
            INFO_MEMORY | INFO_CMDLINE | INFO_MODULES | INFO_MEMORY_MAP | INFO_BOOT_LOADER_NAME,
        );
        put(4, mem_lower);
        put(8, mem_upper);
        put(16, cmdline as u32);
        put(20, config.modules.len() as u32);
        put(24, (base + MODULES_OFFSET) as u32);
        put(44, (config.ram.len() as u64 * MMAP_ENTRY_SIZE) as u32);
        put(48, (base + self.mmap) as u32);
        put(64, loader_name as u32);
        mem.write(base, &info)?;
        Ok(())
    }
}
