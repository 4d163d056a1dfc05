//! The x86 64-bit boot protocol of a `bzImage`
//! (Documentation/arch/x86/boot.rst and zero-page.rst).
//!
//! The file starts with the real-mode setup, `setup_sects` + 1 sectors of
//! 512 bytes (0 read as 4), holding the setup header at 0x1f1; the
//! protected-mode kernel follows. The loader requires boot protocol 2.12 or
//! later (for `xloadflags`), `XLF_KERNEL_64` (the 64-bit entry at load
//! address + 0x200) and `LOADED_HIGH`.
//!
//! The protected-mode kernel goes at `pref_address`, or for a relocatable
//! kernel at the first `kernel_alignment` boundary above it with
//! `init_size` bytes of RAM. The zero page gets the setup header copied from
//! the file (0x1f1 up to 0x202 + the byte at 0x201) with `type_of_loader`
//! 0xff, `code32_start`, the command line, initramfs and RSDP pointers, and
//! the E820 table. The fields boot.rst has the loader write are written
//! whatever the file holds there: the initramfs fields (0 without one),
//! `ext_loader_ver`/`ext_loader_type`, `hardware_subarch` (0, a PC) with
//! its data, and `setup_data` (0: no list), so a file cannot make the kernel
//! follow pointers of its choosing. `CAN_USE_HEAP` and `heap_end_ptr` only
//! concern the real-mode setup code, which the 64-bit entry skips; they
//! stay as the file has them. The 64-bit entry runs on page tables
//! identity-mapping the first 4 GiB with 2 MiB pages and on a GDT with
//! `__BOOT_CS` 0x10 and `__BOOT_DS` 0x18.

use super::{
    check_cmdline, field16, field32, field64, memory_map_for, place_initrd, write_cstr,
    BootStructure, FlatSegment, LinuxConfig, LinuxEntry, LinuxError, LinuxProtocol, LoadedLinux,
    Long64Entry, MemoryMap, Placement, AR_CODE64, AR_DATA, AR_TSS_BUSY, BOOT_CS, BOOT_DS, BOOT_GDT,
    BOOT_INFO_SIZE, CMDLINE_AREA_SIZE, CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME,
    GDT_SIZE, RFLAGS_CLEAR,
};
use crate::loader::paging::{identity_map, PagingError};
use crate::loader::{zero, FOUR_GIB, PAGE_SIZE};
use crate::memory::GuestMemory;

/// Offset of `setup_sects`.
pub const SETUP_SECTS: u64 = 0x1f1;
/// Offset of `syssize`.
pub const SYSSIZE: u64 = 0x1f4;
/// Offset of `boot_flag`.
pub const BOOT_FLAG: u64 = 0x1fe;
/// Offset of the jump whose second byte gives the header's end.
pub const JUMP: u64 = 0x200;
/// Offset of the "HdrS" signature.
pub const HEADER_MAGIC_OFFSET: u64 = 0x202;
/// "HdrS" read little-endian.
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// Offset of `version`.
pub const VERSION: u64 = 0x206;
/// Offset of `type_of_loader`.
pub const TYPE_OF_LOADER: u64 = 0x210;
/// Offset of `loadflags`.
pub const LOADFLAGS: u64 = 0x211;
/// Offset of `code32_start`.
pub const CODE32_START: u64 = 0x214;
/// Offset of `ramdisk_image`.
pub const RAMDISK_IMAGE: u64 = 0x218;
/// Offset of `ramdisk_size`.
pub const RAMDISK_SIZE: u64 = 0x21c;
/// Offset of `cmd_line_ptr`.
pub const CMD_LINE_PTR: u64 = 0x228;
/// Offset of `ext_loader_ver`.
pub const EXT_LOADER_VER: u64 = 0x226;
/// Offset of `ext_loader_type`.
pub const EXT_LOADER_TYPE: u64 = 0x227;
/// Offset of `hardware_subarch`.
pub const HARDWARE_SUBARCH: u64 = 0x23c;
/// Offset of `hardware_subarch_data`.
pub const HARDWARE_SUBARCH_DATA: u64 = 0x240;
/// Offset of `setup_data`.
pub const SETUP_DATA: u64 = 0x250;
/// Offset of `initrd_addr_max`.
pub const INITRD_ADDR_MAX: u64 = 0x22c;
/// Offset of `kernel_alignment`.
pub const KERNEL_ALIGNMENT: u64 = 0x230;
/// Offset of `relocatable_kernel`.
pub const RELOCATABLE_KERNEL: u64 = 0x234;
/// Offset of `xloadflags`.
pub const XLOADFLAGS: u64 = 0x236;
/// Offset of `cmdline_size`.
pub const CMDLINE_SIZE: u64 = 0x238;
/// Offset of `pref_address`.
pub const PREF_ADDRESS: u64 = 0x258;
/// Offset of `init_size`.
pub const INIT_SIZE: u64 = 0x260;
/// Where the setup header copy ends at most (the zero page's padding after
/// `struct setup_header` ends at 0x290).
pub const HEADER_COPY_LIMIT: u64 = 0x290;
/// The header must reach past `handover_offset` (0x264..0x268), the last
/// field of protocol 2.12.
pub const MIN_HEADER_END: u64 = 0x268;

/// Zero page: `acpi_rsdp_addr`.
pub const ZP_ACPI_RSDP_ADDR: usize = 0x070;
/// Zero page: `ext_ramdisk_image`.
pub const ZP_EXT_RAMDISK_IMAGE: usize = 0x0c0;
/// Zero page: `ext_ramdisk_size`.
pub const ZP_EXT_RAMDISK_SIZE: usize = 0x0c4;
/// Zero page: `ext_cmd_line_ptr`.
pub const ZP_EXT_CMD_LINE_PTR: usize = 0x0c8;
/// Zero page: `e820_entries`.
pub const ZP_E820_ENTRIES: usize = 0x1e8;
/// Zero page: `sentinel`, which must stay 0.
pub const ZP_SENTINEL: usize = 0x1ef;
/// Zero page: `e820_table`.
pub const ZP_E820_TABLE: usize = 0x2d0;
/// Size of one `struct boot_e820_entry`.
pub const E820_ENTRY_SIZE: usize = 20;

/// The oldest protocol accepted: 2.12 introduced `xloadflags`.
pub const MIN_VERSION: u16 = 0x020c;
/// `loadflags`: the protected-mode code loads at 0x100000 or above.
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags`: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags`: the kernel has the 64-bit entry at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `xloadflags`: kernel, boot_params, command line and initramfs may sit
/// above 4 GiB.
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// `type_of_loader` for a loader without an assigned id.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Offset of the 64-bit entry from the load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// `initrd_addr_max` assumed when the header leaves it 0.
pub const DEFAULT_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;

/// The setup header fields the loader uses, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version (major << 8 | minor).
    pub version: u16,
    /// Real-mode setup sectors (0 already read as 4).
    pub setup_sects: u8,
    /// Protected-mode code size in 16-byte paragraphs.
    pub syssize: u32,
    /// `loadflags`.
    pub loadflags: u8,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// Highest address the initramfs may occupy.
    pub initrd_addr_max: u32,
    /// Required alignment of a relocated kernel.
    pub kernel_alignment: u32,
    /// Whether the kernel may be loaded elsewhere than `pref_address`.
    pub relocatable: bool,
    /// Longest command line, without the NUL.
    pub cmdline_size: u32,
    /// Preferred load address.
    pub pref_address: u64,
    /// Bytes the kernel needs from its load address while it decompresses.
    pub init_size: u32,
    /// Offset in the file where the setup header ends.
    pub header_end: u64,
}

impl SetupHeader {
    /// Offset of the protected-mode kernel in the file.
    pub fn kernel_offset(&self) -> u64 {
        (u64::from(self.setup_sects) + 1) * 512
    }
}

/// Parses and checks the setup header of a bzImage.
pub fn parse_header(kernel: &[u8]) -> Result<SetupHeader, LinuxError> {
    let file_len = kernel.len() as u64;
    if file_len < HEADER_MAGIC_OFFSET + 4 {
        return Err(LinuxError::FileTooShort {
            needed: HEADER_MAGIC_OFFSET + 4,
            len: file_len,
        });
    }
    let boot_flag = field16(kernel, BOOT_FLAG)?;
    if boot_flag != 0xaa55 {
        return Err(LinuxError::BadBootFlag { found: boot_flag });
    }
    if field32(kernel, HEADER_MAGIC_OFFSET)? != HEADER_MAGIC {
        return Err(LinuxError::UnknownFormat);
    }
    let version = field16(kernel, VERSION)?;
    if version < MIN_VERSION {
        return Err(LinuxError::ProtocolTooOld {
            version,
            required: MIN_VERSION,
        });
    }
    // The byte at 0x201 is the displacement of the short jump at 0x200 over
    // the header.
    let header_end = HEADER_MAGIC_OFFSET + u64::from(kernel[JUMP as usize + 1]);
    if header_end < MIN_HEADER_END {
        return Err(LinuxError::HeaderTooShort {
            end: header_end,
            required: MIN_HEADER_END,
        });
    }
    if header_end > file_len {
        return Err(LinuxError::FileTooShort {
            needed: header_end,
            len: file_len,
        });
    }
    let setup_sects = match kernel[SETUP_SECTS as usize] {
        0 => 4,
        n => n,
    };
    let loadflags = kernel[LOADFLAGS as usize];
    let xloadflags = field16(kernel, XLOADFLAGS)?;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LinuxError::No64BitEntry { xloadflags });
    }
    if loadflags & LOADED_HIGH == 0 {
        return Err(LinuxError::NotLoadedHigh { loadflags });
    }
    let header = SetupHeader {
        version,
        setup_sects,
        syssize: field32(kernel, SYSSIZE)?,
        loadflags,
        xloadflags,
        initrd_addr_max: match field32(kernel, INITRD_ADDR_MAX)? {
            0 => DEFAULT_INITRD_ADDR_MAX,
            n => n,
        },
        kernel_alignment: field32(kernel, KERNEL_ALIGNMENT)?,
        relocatable: kernel[RELOCATABLE_KERNEL as usize] != 0,
        cmdline_size: field32(kernel, CMDLINE_SIZE)?,
        pref_address: field64(kernel, PREF_ADDRESS)?,
        init_size: field32(kernel, INIT_SIZE)?,
        header_end,
    };
    if header.kernel_offset() >= file_len {
        return Err(LinuxError::SetupBeyondFile {
            setup_sects,
            file_len,
        });
    }
    let available = file_len - header.kernel_offset();
    if u64::from(header.syssize) * 16 > available {
        return Err(LinuxError::SyssizeBeyondFile {
            syssize: header.syssize,
            available,
        });
    }
    if header.relocatable && !header.kernel_alignment.is_power_of_two() {
        return Err(LinuxError::BadKernelAlignment {
            alignment: header.kernel_alignment,
        });
    }
    Ok(header)
}

/// Loads a bzImage for its 64-bit entry.
pub fn load(mem: &impl GuestMemory, config: &LinuxConfig<'_>) -> Result<LoadedLinux, LinuxError> {
    let kernel = config.kernel;
    let header = parse_header(kernel)?;
    let max_cmdline = u64::from(header.cmdline_size).min(CMDLINE_AREA_SIZE - 1);
    check_cmdline(config.cmdline, max_cmdline)?;

    let map = memory_map_for(config)?;
    let mut placement = Placement::new(&map);
    let area = config.boot_area;
    placement.claim_boot_area(&area, true)?;

    // Checked in parse_header: the payload is the rest of the file.
    let payload = &kernel[header.kernel_offset() as usize..];
    let span = (payload.len() as u64).max(u64::from(header.init_size));
    let load_addr = place_kernel(&placement, &header, span)?;
    placement.claim(BootStructure::Kernel, load_addr, span)?;
    let kernel_end = load_addr + span;
    mem.write(load_addr, payload)?;

    let initrd_ceiling = u64::from(header.initrd_addr_max) + 1;
    let initrd = place_initrd(
        mem,
        &mut placement,
        config.initrd.as_ref(),
        kernel_end,
        initrd_ceiling,
    )?;

    write_cstr(mem, area.cmdline, config.cmdline)?;
    // The shared builder writes only the entries it uses: clear the PML4
    // and PDPT pages first so no stale entry maps anything else.
    zero(mem, area.page_tables, 2 * PAGE_SIZE)?;
    let cr3 = identity_map(mem, area.page_tables, FOUR_GIB).map_err(|e| match e {
        PagingError::Memory(m) => LinuxError::Memory(m),
        // The area was checked 4 KiB aligned and 4 GiB is a valid size.
        PagingError::BadSize(_) | PagingError::Misaligned(_) => LinuxError::Misaligned {
            what: BootStructure::PageTables,
            addr: area.page_tables,
            align: PAGE_SIZE,
        },
    })?;
    let mut gdt = [0u8; GDT_SIZE as usize];
    for (slot, descriptor) in gdt.chunks_exact_mut(8).zip(BOOT_GDT) {
        slot.copy_from_slice(&descriptor.to_le_bytes());
    }
    mem.write(area.gdt, &gdt)?;

    let zero_page = zero_page(
        kernel,
        &header,
        &ZeroPageInputs {
            load_addr,
            cmdline: area.cmdline,
            initrd: initrd.map(|m| (m.start, m.end - m.start)),
            rsdp: config.rsdp,
            map: &map,
        },
    )?;
    mem.write(area.boot_info, &zero_page)?;

    let flat = |selector, access_rights| FlatSegment {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        access_rights,
    };
    Ok(LoadedLinux {
        protocol: LinuxProtocol::BzImage64,
        entry: LinuxEntry::Long64(Long64Entry {
            rip: load_addr + ENTRY_64_OFFSET,
            rsi: area.boot_info,
            cr3,
            cr0: CR0_PE | CR0_ET | CR0_PG,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            rflags: RFLAGS_CLEAR,
            gdtr_base: area.gdt,
            gdtr_limit: (GDT_SIZE - 1) as u16,
            cs: flat(BOOT_CS, AR_CODE64),
            ds: flat(BOOT_DS, AR_DATA),
            tr: FlatSegment {
                selector: 0,
                base: 0,
                limit: 0x67,
                access_rights: AR_TSS_BUSY,
            },
        }),
        kernel_start: load_addr,
        kernel_end,
        initrd,
        boot_info: area.boot_info,
        cmdline: area.cmdline,
        memory_map: map,
    })
}

/// The load address: `pref_address` if `span` bytes fit there, else (for a
/// relocatable kernel) the first aligned address above it that fits.
fn place_kernel(placement: &Placement, header: &SetupHeader, span: u64) -> Result<u64, LinuxError> {
    let pref = header.pref_address;
    let no_room = LinuxError::NoRoomForKernel {
        addr: pref,
        len: span,
    };
    let fits_at_pref = placement.in_ram(pref, span) && placement.conflict(pref, span).is_none();
    if !header.relocatable {
        return if fits_at_pref { Ok(pref) } else { Err(no_room) };
    }
    let align = u64::from(header.kernel_alignment);
    if fits_at_pref && pref.is_multiple_of(align) {
        return Ok(pref);
    }
    placement.lowest_fit(pref, span, align).ok_or(no_room)
}

/// Where things went, for the zero page.
struct ZeroPageInputs<'a> {
    load_addr: u64,
    cmdline: u64,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
    map: &'a MemoryMap,
}

/// Builds the zero page (`struct boot_params`).
fn zero_page(
    kernel: &[u8],
    header: &SetupHeader,
    inputs: &ZeroPageInputs<'_>,
) -> Result<[u8; BOOT_INFO_SIZE as usize], LinuxError> {
    let mut zp = [0u8; BOOT_INFO_SIZE as usize];
    let copy_end = header.header_end.min(HEADER_COPY_LIMIT) as usize;
    // parse_header checked header_end against the file's length.
    zp[SETUP_SECTS as usize..copy_end].copy_from_slice(&kernel[SETUP_SECTS as usize..copy_end]);
    let put8 = |zp: &mut [u8], off: u64, v: u8| zp[off as usize] = v;
    let put32 =
        |zp: &mut [u8], off: usize, v: u32| zp[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |zp: &mut [u8], off: usize, v: u64| zp[off..off + 8].copy_from_slice(&v.to_le_bytes());
    let low = |v: u64| v as u32;
    let high = |v: u64| (v >> 32) as u32;

    put8(&mut zp, TYPE_OF_LOADER, LOADER_TYPE_UNDEFINED);
    put32(&mut zp, CODE32_START as usize, low(inputs.load_addr));
    put32(&mut zp, CMD_LINE_PTR as usize, low(inputs.cmdline));
    put32(&mut zp, ZP_EXT_CMD_LINE_PTR, high(inputs.cmdline));
    let (start, len) = inputs.initrd.unwrap_or((0, 0));
    put32(&mut zp, RAMDISK_IMAGE as usize, low(start));
    put32(&mut zp, ZP_EXT_RAMDISK_IMAGE, high(start));
    put32(&mut zp, RAMDISK_SIZE as usize, low(len));
    put32(&mut zp, ZP_EXT_RAMDISK_SIZE, high(len));
    put8(&mut zp, EXT_LOADER_VER, 0);
    put8(&mut zp, EXT_LOADER_TYPE, 0);
    put32(&mut zp, HARDWARE_SUBARCH as usize, 0);
    put64(&mut zp, HARDWARE_SUBARCH_DATA as usize, 0);
    put64(&mut zp, SETUP_DATA as usize, 0);
    if let Some(rsdp) = inputs.rsdp {
        put64(&mut zp, ZP_ACPI_RSDP_ADDR, rsdp);
    }
    zp[ZP_E820_ENTRIES] = inputs.map.len() as u8;
    // At most 128 entries of 20 bytes from 0x2d0 end at 0xcd0, in the page.
    for (i, region) in inputs.map.iter().enumerate() {
        let e = ZP_E820_TABLE + i * E820_ENTRY_SIZE;
        put64(&mut zp, e, region.start);
        put64(&mut zp, e + 8, region.len);
        put32(&mut zp, e + 16, region.kind as u32);
    }
    Ok(zp)
}
