//! Multiboot2 (specification 2.0) guest kernels.
//!
//! The header is searched in the first 32 KiB of the file at 8-byte
//! alignment: magic 0xE85250D6, architecture 0 (i386), header length, and a
//! checksum making the four sum to zero; the whole header must lie in those
//! 32 KiB. Header tags follow at 8-byte alignment up to the end tag:
//! - information request (1): types 1 (command line), 2 (boot loader name),
//!   3 (modules), 4 (basic memory information) and 6 (memory map) are always
//!   provided; any other type fails the load unless the tag is optional;
//! - address (2) and entry address (3): load the file as in the Multiboot
//!   a.out kludge (`load_addr` = 0xFFFFFFFF loads from the file's start);
//!   without an address tag the file must be ELF32 or ELF64, and an entry
//!   address tag overrides `e_entry`;
//! - console flags (4): accepted (the console is the serial port);
//! - framebuffer (5): declined; fails the load unless optional;
//! - module alignment (6): modules are always page-aligned;
//! - EFI boot services (7): fails unless optional (this is no EFI loader);
//!   EFI entry addresses (8, 9) are unused, as on a BIOS loader;
//! - relocatable (10): accepted; the image is loaded at its link address.
//!
//! The information block: `total_size`, reserved, then tags at 8-byte
//! alignment: command line (1, `"<name> <args>"` as for Multiboot), boot
//! loader name (2), one module tag (3) per module, basic memory information
//! (4), memory map (6, entry size 24, version 0, type 1 entries), end (0).

use super::elf::ElfFile;
use super::{
    align_up, basic_meminfo, check_segments, copy_segments, find_room, le16, le32, place_modules,
    BootConfig, EntryState, InfoPlacement, KernelImage, LoadError, LoadedKernel, PlacedModule,
    Protocol, Segment, PAGE_SIZE,
};
use crate::memory::GuestMemory;

/// Header magic.
pub const HEADER_MAGIC: u32 = 0xE852_50D6;
/// Value in EAX at entry.
pub const BOOTLOADER_MAGIC: u32 = 0x36D7_6289;
/// The header must lie within this many bytes from the file's start.
pub const SEARCH_LIMIT: usize = 32768;
/// Architecture field for i386 protected mode.
pub const ARCH_I386: u32 = 0;

/// Header tag flag: the tag may be ignored.
const TAG_OPTIONAL: u16 = 1;

/// Header tag types.
pub mod header_tag {
    /// End of tags.
    pub const END: u16 = 0;
    /// Information request.
    pub const INFORMATION_REQUEST: u16 = 1;
    /// Load addresses.
    pub const ADDRESS: u16 = 2;
    /// Entry address.
    pub const ENTRY_ADDRESS: u16 = 3;
    /// Console flags.
    pub const CONSOLE_FLAGS: u16 = 4;
    /// Framebuffer request.
    pub const FRAMEBUFFER: u16 = 5;
    /// Module alignment.
    pub const MODULE_ALIGN: u16 = 6;
    /// Keep EFI boot services.
    pub const EFI_BS: u16 = 7;
    /// EFI i386 entry address.
    pub const ENTRY_ADDRESS_EFI32: u16 = 8;
    /// EFI amd64 entry address.
    pub const ENTRY_ADDRESS_EFI64: u16 = 9;
    /// Relocatable image.
    pub const RELOCATABLE: u16 = 10;
}

/// Information tag types the loader writes.
pub mod info_tag {
    /// End of tags.
    pub const END: u32 = 0;
    /// Command line.
    pub const CMDLINE: u32 = 1;
    /// Boot loader name.
    pub const BOOT_LOADER_NAME: u32 = 2;
    /// Module.
    pub const MODULE: u32 = 3;
    /// Basic memory information.
    pub const BASIC_MEMINFO: u32 = 4;
    /// Memory map.
    pub const MMAP: u32 = 6;
}

/// Size of one memory map entry in the information block.
pub const MMAP_ENTRY_SIZE: u32 = 24;

/// A located Multiboot2 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset of the magic in the file.
    pub offset: u64,
    /// The architecture field.
    pub architecture: u32,
    /// The header_length field.
    pub header_length: u32,
}

/// Finds the first header (magic and checksum) within the first 32 KiB.
pub fn find_header(kernel: &[u8]) -> Option<Header> {
    let limit = kernel.len().min(SEARCH_LIMIT);
    let mut offset = 0usize;
    while offset + 16 <= limit {
        let at = offset as u64;
        if le32(kernel, at) == Some(HEADER_MAGIC) {
            let architecture = le32(kernel, at + 4)?;
            let header_length = le32(kernel, at + 8)?;
            let checksum = le32(kernel, at + 12)?;
            let sum = HEADER_MAGIC
                .wrapping_add(architecture)
                .wrapping_add(header_length)
                .wrapping_add(checksum);
            if sum == 0 {
                return Some(Header {
                    offset: at,
                    architecture,
                    header_length,
                });
            }
        }
        offset += 8;
    }
    None
}

/// What the header tags ask for.
#[derive(Default)]
struct Requests {
    address: Option<[u32; 4]>,
    entry: Option<u32>,
    video_declined: bool,
}

fn parse_tags(kernel: &[u8], header: Header) -> Result<Requests, LoadError> {
    let len = kernel.len() as u64;
    let start = header.offset;
    let end = start + u64::from(header.header_length);
    if header.header_length < 24 || end > SEARCH_LIMIT as u64 {
        return Err(LoadError::BadHeaderLength {
            header_length: header.header_length,
        });
    }
    if end > len {
        return Err(LoadError::FileTooShort { needed: end, len });
    }
    let mut requests = Requests::default();
    let mut pos = start + 16;
    // Every tag is at least 8 bytes, so this ends within header_length / 8 rounds.
    loop {
        let bad = |tag_type, size| LoadError::BadTag {
            offset: pos,
            tag_type,
            size,
        };
        if pos + 8 > end {
            return Err(bad(0, 0));
        }
        let (Some(tag_type), Some(flags), Some(size)) = (
            le16(kernel, pos),
            le16(kernel, pos + 2),
            le32(kernel, pos + 4),
        ) else {
            return Err(bad(0, 0));
        };
        let tag_end = pos + u64::from(size);
        if size < 8 || tag_end > end {
            return Err(bad(tag_type, size));
        }
        let optional = flags & TAG_OPTIONAL != 0;
        let word = |i: u64| le32(kernel, pos + 8 + 4 * i).ok_or(bad(tag_type, size));
        match tag_type {
            header_tag::END => return Ok(requests),
            header_tag::INFORMATION_REQUEST => {
                for i in 0..(u64::from(size) - 8) / 4 {
                    let info_type = word(i)?;
                    let provided = matches!(
                        info_type,
                        info_tag::END
                            | info_tag::CMDLINE
                            | info_tag::BOOT_LOADER_NAME
                            | info_tag::MODULE
                            | info_tag::BASIC_MEMINFO
                            | info_tag::MMAP
                    );
                    if !provided && !optional {
                        return Err(LoadError::UnsupportedInfoRequest { info_type });
                    }
                }
            }
            header_tag::ADDRESS => {
                if size < 24 {
                    return Err(bad(tag_type, size));
                }
                requests.address = Some([word(0)?, word(1)?, word(2)?, word(3)?]);
            }
            header_tag::ENTRY_ADDRESS => {
                if size < 12 {
                    return Err(bad(tag_type, size));
                }
                requests.entry = Some(word(0)?);
            }
            header_tag::FRAMEBUFFER => {
                if !optional {
                    return Err(LoadError::FramebufferRequired);
                }
                requests.video_declined = true;
            }
            header_tag::CONSOLE_FLAGS
            | header_tag::MODULE_ALIGN
            | header_tag::ENTRY_ADDRESS_EFI32
            | header_tag::ENTRY_ADDRESS_EFI64
            | header_tag::RELOCATABLE => {}
            _ if optional => {}
            _ => return Err(LoadError::UnsupportedTag { tag_type }),
        }
        pos = align_up(tag_end, 8).ok_or(LoadError::Overflow)?;
    }
}

fn address_tag_image(
    kernel: &[u8],
    header: Header,
    [header_addr, load_addr, load_end_addr, bss_end_addr]: [u32; 4],
) -> Result<Segment, LoadError> {
    let len = kernel.len() as u64;
    let bad = LoadError::BadAddressFields {
        header_addr,
        load_addr,
        load_end_addr,
        bss_end_addr,
    };
    let (file_offset, load_addr) = if load_addr == u32::MAX {
        // Load from the file's start, so that the header lands at header_addr.
        let base = u64::from(header_addr)
            .checked_sub(header.offset)
            .ok_or(bad)?;
        (0, base)
    } else {
        let header_in_text = header_addr.checked_sub(load_addr).ok_or(bad)?;
        let offset = header
            .offset
            .checked_sub(u64::from(header_in_text))
            .ok_or(bad)?;
        (offset, u64::from(load_addr))
    };
    let load_size = if load_end_addr == 0 {
        len - file_offset
    } else {
        u64::from(load_end_addr).checked_sub(load_addr).ok_or(bad)?
    };
    let load_end = load_addr + load_size;
    let mem_end = if bss_end_addr == 0 {
        load_end
    } else if u64::from(bss_end_addr) < load_end {
        return Err(bad);
    } else {
        u64::from(bss_end_addr)
    };
    Ok(Segment {
        index: 0,
        paddr: load_addr,
        file_offset,
        file_size: load_size,
        mem_size: mem_end - load_addr,
    })
}

/// Loads a Multiboot2 kernel, its modules and the information block.
pub fn load(mem: &impl GuestMemory, config: &BootConfig<'_>) -> Result<LoadedKernel, LoadError> {
    let kernel = config.kernel;
    let header = find_header(kernel).ok_or(LoadError::NoHeader)?;
    if header.architecture != ARCH_I386 {
        return Err(LoadError::UnsupportedArchitecture {
            architecture: header.architecture,
        });
    }
    let requests = parse_tags(kernel, header)?;
    let (image, entry) = match requests.address {
        Some(fields) => {
            let segment = address_tag_image(kernel, header, fields)?;
            let entry = requests.entry.ok_or(LoadError::MissingEntryAddress)?;
            (KernelImage::Flat(segment), u64::from(entry))
        }
        None => {
            let elf = ElfFile::parse(kernel)?;
            let entry = requests
                .entry
                .map_or_else(|| elf.physical_entry(), u64::from);
            (KernelImage::Elf(elf), entry)
        }
    };
    let entry = u32::try_from(entry).map_err(|_| LoadError::EntryAbove4GiB { entry })?;

    let info_len = info_size(config)?;
    let pinned = match config.info_placement {
        InfoPlacement::At(addr) => Some((addr, info_len)),
        InfoPlacement::AfterKernel => None,
    };
    let span = check_segments(&image, kernel, config.ram, pinned)?;
    let info_addr = match pinned {
        Some((addr, len)) => {
            if addr % 8 != 0 || find_room(config.ram, addr, len, 8, None) != Some(addr) {
                return Err(LoadError::BootInfoOutsideRam { addr, len });
            }
            addr
        }
        None => {
            let from = align_up(span.end, PAGE_SIZE).ok_or(LoadError::Overflow)?;
            find_room(config.ram, from, info_len, PAGE_SIZE, None)
                .ok_or(LoadError::NoRoomForBootInfo { len: info_len })?
        }
    };

    copy_segments(mem, &image, kernel)?;

    let after = span.end.max(match pinned {
        Some(_) => 0,
        None => info_addr + info_len,
    });
    // Fixed tags first, then one tag per module as each is placed, then the rest.
    let mut w = begin_info(mem, config, info_addr, info_len)?;
    let modules_end = place_modules(mem, config.modules, config.ram, after, pinned, |i, m| {
        module_tag(&mut w, m, config.modules[i].cmdline)
    })?;
    finish_info(&mut w, config)?;

    Ok(LoadedKernel {
        protocol: Protocol::Multiboot2,
        entry: EntryState {
            eip: entry,
            eax: BOOTLOADER_MAGIC,
            ebx: info_addr as u32,
        },
        kernel_start: span.start,
        kernel_end: span.end,
        info_addr,
        info_len,
        modules_end: modules_end.max(info_addr + info_len),
        video_declined: requests.video_declined,
    })
}

/// Size of a tag of `payload` bytes after its 8-byte head, padded to 8.
fn tag_size(payload: u64) -> Option<u64> {
    align_up(payload.checked_add(8)?, 8)
}

fn info_size(config: &BootConfig<'_>) -> Result<u64, LoadError> {
    let mut total: u64 = 8;
    let mut add = |payload: u64| -> Result<(), LoadError> {
        total = tag_size(payload)
            .and_then(|t| total.checked_add(t))
            .ok_or(LoadError::Overflow)?;
        Ok(())
    };
    add((config.kernel_name.len() + 1 + config.cmdline.len() + 1) as u64)?;
    add(config.boot_loader_name.len() as u64 + 1)?;
    for m in config.modules {
        add(8 + m.cmdline.len() as u64 + 1)?;
    }
    add(8)?;
    let mmap = (config.ram.len() as u64)
        .checked_mul(u64::from(MMAP_ENTRY_SIZE))
        .and_then(|m| m.checked_add(8))
        .ok_or(LoadError::Overflow)?;
    add(mmap)?;
    add(0)?;
    if total > u64::from(u32::MAX) {
        return Err(LoadError::Overflow);
    }
    Ok(total)
}

/// Writes tags sequentially into guest memory.
struct TagWriter<'m, M: GuestMemory> {
    mem: &'m M,
    at: u64,
}

impl<M: GuestMemory> TagWriter<'_, M> {
    /// Writes a tag whose payload is the concatenation of `parts`.
    fn tag(&mut self, tag_type: u32, parts: &[&[u8]]) -> Result<(), LoadError> {
        let payload: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let size = payload + 8;
        let mut head = [0u8; 8];
        head[0..4].copy_from_slice(&tag_type.to_le_bytes());
        head[4..8].copy_from_slice(&(size as u32).to_le_bytes());
        self.mem.write(self.at, &head)?;
        let mut p = self.at + 8;
        for part in parts {
            self.mem.write(p, part)?;
            p += part.len() as u64;
        }
        let padded = align_up(p, 8).ok_or(LoadError::Overflow)?;
        super::zero(self.mem, p, padded - p)?;
        self.at = padded;
        Ok(())
    }
}

fn begin_info<'m, M: GuestMemory>(
    mem: &'m M,
    config: &BootConfig<'_>,
    base: u64,
    total: u64,
) -> Result<TagWriter<'m, M>, LoadError> {
    let mut head = [0u8; 8];
    head[0..4].copy_from_slice(&(total as u32).to_le_bytes());
    mem.write(base, &head)?;
    let mut w = TagWriter { mem, at: base + 8 };
    w.tag(
        info_tag::CMDLINE,
        &[
            config.kernel_name.as_bytes(),
            b" ",
            config.cmdline.as_bytes(),
            b"\0",
        ],
    )?;
    w.tag(
        info_tag::BOOT_LOADER_NAME,
        &[config.boot_loader_name.as_bytes(), b"\0"],
    )?;
    Ok(w)
}

fn module_tag<M: GuestMemory>(
    w: &mut TagWriter<'_, M>,
    placed: PlacedModule,
    cmdline: &str,
) -> Result<(), LoadError> {
    let mut range = [0u8; 8];
    range[0..4].copy_from_slice(&(placed.start as u32).to_le_bytes());
    range[4..8].copy_from_slice(&(placed.end as u32).to_le_bytes());
    w.tag(info_tag::MODULE, &[&range, cmdline.as_bytes(), b"\0"])
}

fn finish_info<M: GuestMemory>(
    w: &mut TagWriter<'_, M>,
    config: &BootConfig<'_>,
) -> Result<(), LoadError> {
    let (lower, upper) = basic_meminfo(config.ram);
    let mut meminfo = [0u8; 8];
    meminfo[0..4].copy_from_slice(&lower.to_le_bytes());
    meminfo[4..8].copy_from_slice(&upper.to_le_bytes());
    w.tag(info_tag::BASIC_MEMINFO, &[&meminfo])?;
    // Memory map: entry_size, entry_version 0, then the entries.
    let mut mmap_head = [0u8; 8];
    mmap_head[0..4].copy_from_slice(&MMAP_ENTRY_SIZE.to_le_bytes());
    let mmap_start = w.at;
    w.tag(info_tag::MMAP, &[&mmap_head])?;
    let mut p = mmap_start + 16;
    for r in config.ram {
        let mut e = [0u8; MMAP_ENTRY_SIZE as usize];
        e[0..8].copy_from_slice(&r.start.to_le_bytes());
        e[8..16].copy_from_slice(&r.len.to_le_bytes());
        e[16..20].copy_from_slice(&1u32.to_le_bytes());
        w.mem.write(p, &e)?;
        p += u64::from(MMAP_ENTRY_SIZE);
    }
    let mmap_size = (p - mmap_start) as u32;
    w.mem.write(mmap_start + 4, &mmap_size.to_le_bytes())?;
    w.at = align_up(p, 8).ok_or(LoadError::Overflow)?;
    w.tag(info_tag::END, &[])
}
