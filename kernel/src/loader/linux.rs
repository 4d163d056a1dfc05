//! Linux guests: the PVH entry of an uncompressed `vmlinux` ELF ([`pvh`])
//! and the 64-bit boot protocol of a `bzImage` ([`bzimage`]).
//!
//! This module owns what both paths share: the memory map handed to the
//! kernel (built from the integrator's RAM layout and reserved ranges, see
//! [`build_memory_map`]), the low-memory area holding the boot structures
//! ([`BootArea`]), the placement of the initramfs, and the description of
//! the entry state ([`LinuxEntry`]) that the vCPU setup turns into registers.
//!
//! Everything read from the kernel file is untrusted: parsing never panics,
//! never loops without bound, checks every offset and size with checked
//! arithmetic, and reports what was wrong through [`LinuxError`]. Guest
//! memory is reached only through [`GuestMemory`].
//!
//! # Placement
//!
//! - The kernel goes where the image says: PT_LOAD segments at `p_paddr`
//!   (PVH), or the setup header's `pref_address` (bzImage; a relocatable
//!   kernel that does not fit there moves up to the next `kernel_alignment`
//!   boundary with room for `init_size` bytes).
//! - The boot information (PVH `hvm_start_info` with its module list and
//!   memory map, or the bzImage zero page), the command line, the page
//!   tables and the GDT go at the addresses of the [`BootArea`]
//!   ([`BootArea::LOW_MEMORY`] keeps them all below 640 KiB).
//! - The initramfs goes at the highest 4 KiB boundary where it fits in RAM
//!   above the kernel and below the kernel's `initrd_addr_max` (bzImage) or
//!   4 GiB (PVH), as GRUB and QEMU place it, outside every other structure.
//! - Nothing lands in a reserved range: placement uses only the RAM entries
//!   of the memory map, in which reserved ranges have been cut out.

use super::elf::ElfFile;
use super::{align_up, le16, le32, le64, LoadError, Module, PlacedModule, RamRange, FOUR_GIB};
use crate::memory::{GuestMemory, MemoryError};
use core::{fmt, ops::Range};
use heapless::Vec;

pub mod bzimage;
pub mod pvh;

#[cfg(test)]
mod tests;

/// Start of the legacy VGA/BIOS hole, reported reserved.
pub const ISA_HOLE_START: u64 = 0xa_0000;
/// End of the legacy VGA/BIOS hole (1 MiB).
pub const ISA_HOLE_END: u64 = 0x10_0000;
/// Most entries a memory map may have (the zero page's `e820_table`).
pub const MAX_MEMORY_MAP_ENTRIES: usize = 128;
/// Size of the boot information page.
pub const BOOT_INFO_SIZE: u64 = 4096;
/// Size of the command line area: the kernel's command line and (PVH) the
/// initramfs module's string, each NUL-terminated.
pub const CMDLINE_AREA_SIZE: u64 = 4096;
/// Size of the identity-mapping page tables: PML4, PDPT and four page
/// directories of 2 MiB pages covering the first 4 GiB.
pub const PAGE_TABLES_SIZE: u64 = super::paging::tables_size(FOUR_GIB);
/// Size of the boot GDT: null, null, `__BOOT_CS`, `__BOOT_DS`.
pub const GDT_SIZE: u64 = 32;
/// Alignment of the initramfs.
pub const INITRD_ALIGN: u64 = 4096;

/// Type of a memory map entry (E820 and PVH `XEN_HVM_MEMMAP_TYPE_*` share
/// the numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum MemoryType {
    /// Usable RAM.
    Ram = 1,
    /// Reserved (MMIO, firmware, the legacy hole).
    Reserved = 2,
    /// ACPI tables, reclaimable after they are read.
    Acpi = 3,
    /// ACPI non-volatile storage.
    Nvs = 4,
    /// Unusable memory.
    Unusable = 5,
}

/// One range of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First guest-physical address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the range is.
    pub kind: MemoryType,
}

impl MemoryRegion {
    /// A region of `len` bytes at `start`.
    pub const fn new(start: u64, len: u64, kind: MemoryType) -> Self {
        Self { start, len, kind }
    }

    /// One past the last byte, saturating at the top of the address space.
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// The memory map handed to the kernel, sorted by address.
pub type MemoryMap = Vec<MemoryRegion, MAX_MEMORY_MAP_ENTRIES>;

/// Most RAM ranges plus reserved ranges the memory map builder accepts.
pub const MAX_LAYOUT_RANGES: usize = 64;

/// Builds the memory map from the integrator's RAM ranges and reserved
/// ranges (ACPI tables, MMIO, firmware).
///
/// The legacy hole 640 KiB-1 MiB is always reported reserved. Reserved
/// ranges win over the hole, which wins over RAM: RAM covered by either is
/// cut out. RAM ranges may touch or overlap (their union is RAM); reserved
/// ranges must not overlap each other. Adjacent ranges of one type merge.
pub fn build_memory_map(
    ram: &[RamRange],
    reserved: &[MemoryRegion],
) -> Result<MemoryMap, LinuxError> {
    let count = ram.len().saturating_add(reserved.len());
    if count > MAX_LAYOUT_RANGES {
        return Err(LinuxError::TooManyRanges {
            count,
            max: MAX_LAYOUT_RANGES,
        });
    }
    for (i, a) in reserved.iter().enumerate() {
        if a.start.checked_add(a.len).is_none() {
            return Err(LinuxError::Overflow);
        }
        if a.kind == MemoryType::Ram {
            return Err(LinuxError::ReservedRangeIsRam { start: a.start });
        }
        for b in &reserved[..i] {
            if overlaps(a.start, a.end(), b.start, b.end()) {
                return Err(LinuxError::ReservedRangesOverlap {
                    first: b.start,
                    second: a.start,
                });
            }
        }
    }
    for r in ram {
        if r.start.checked_add(r.len).is_none() {
            return Err(LinuxError::Overflow);
        }
    }
    let hole = MemoryRegion::new(
        ISA_HOLE_START,
        ISA_HOLE_END - ISA_HOLE_START,
        MemoryType::Reserved,
    );
    // Every boundary of every range; the type is constant between two.
    let mut bounds: Vec<u64, { 2 * MAX_LAYOUT_RANGES + 2 }> = Vec::new();
    let mut push = |b: u64| bounds.push(b).map_err(|_| LinuxError::Overflow);
    for r in ram {
        push(r.start)?;
        push(r.end())?;
    }
    for r in reserved.iter().chain([&hole]) {
        push(r.start)?;
        push(r.end())?;
    }
    sort_few(&mut bounds);
    let mut map = MemoryMap::new();
    for pair in bounds.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        if lo == hi {
            continue;
        }
        let kind = reserved
            .iter()
            .find(|r| r.start <= lo && r.end() >= hi)
            .map(|r| r.kind)
            .or_else(|| (hole.start <= lo && hole.end() >= hi).then_some(hole.kind))
            .or_else(|| {
                ram.iter()
                    .any(|r| r.start <= lo && r.end() >= hi)
                    .then_some(MemoryType::Ram)
            });
        let Some(kind) = kind else { continue };
        if let Some(last) = map.last_mut() {
            if last.kind == kind && last.end() == lo {
                last.len = hi - last.start;
                continue;
            }
        }
        map.push(MemoryRegion::new(lo, hi - lo, kind))
            .map_err(|_| LinuxError::TooManyMemoryMapEntries {
                max: MAX_MEMORY_MAP_ENTRIES,
            })?;
    }
    Ok(map)
}

/// Sorts a handful of values in place by insertion: the memory map's
/// boundaries are few (a fixed capacity), and core's sort would bring a
/// quicksort of its own into every image.
fn sort_few(values: &mut [u64]) {
    for i in 1..values.len() {
        let mut j = i;
        while j > 0 && values[j - 1] > values[j] {
            values.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Builds the memory map for `config` and checks that the ACPI tables it
/// points at are kept out of the kernel's RAM.
fn memory_map_for(config: &LinuxConfig<'_>) -> Result<MemoryMap, LinuxError> {
    let map = build_memory_map(config.ram, config.reserved)?;
    if let Some(addr) = config.rsdp {
        if map
            .iter()
            .any(|r| r.kind == MemoryType::Ram && r.start <= addr && addr < r.end())
        {
            return Err(LinuxError::RsdpInRam { addr });
        }
    }
    Ok(map)
}

/// The RAM entries of a memory map, where the loader may place things.
fn usable_ram(map: &MemoryMap) -> Vec<RamRange, MAX_MEMORY_MAP_ENTRIES> {
    let mut out = Vec::new();
    for r in map.iter().filter(|r| r.kind == MemoryType::Ram) {
        // Capacities are equal, so this cannot fail.
        let _ = out.push(RamRange::new(r.start, r.len));
    }
    out
}

/// Guest-physical addresses of the boot structures the loader writes
/// besides the kernel and the initramfs. Each must lie in RAM, outside
/// reserved ranges, and not overlap anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootArea {
    /// The boot information page ([`BOOT_INFO_SIZE`] bytes): the PVH
    /// `hvm_start_info` with module list and memory map, or the bzImage
    /// zero page (`boot_params`).
    pub boot_info: u64,
    /// The command line area ([`CMDLINE_AREA_SIZE`] bytes).
    pub cmdline: u64,
    /// The identity-mapping page tables of the 64-bit entry
    /// ([`PAGE_TABLES_SIZE`] bytes, 4 KiB aligned); unused by PVH.
    pub page_tables: u64,
    /// The GDT of the 64-bit entry ([`GDT_SIZE`] bytes, 8-byte aligned);
    /// unused by PVH.
    pub gdt: u64,
}

impl BootArea {
    /// Everything below 640 KiB, clear of the real-mode IVT and BIOS data
    /// area: zero page at 0x7000, page tables at 0x9000-0xf000, GDT at
    /// 0xf000, command line at 0x20000.
    pub const LOW_MEMORY: BootArea = BootArea {
        boot_info: 0x7000,
        cmdline: 0x2_0000,
        page_tables: 0x9000,
        gdt: 0xf000,
    };
}

/// A structure the loader places, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootStructure {
    /// The kernel (for a bzImage, its `init_size` span).
    Kernel,
    /// The initramfs.
    Initrd,
    /// The boot information page.
    BootInfo,
    /// The command line area.
    Cmdline,
    /// The page tables.
    PageTables,
    /// The GDT.
    Gdt,
}

/// What to load and where the guest's memory is.
#[derive(Clone, Copy, Debug)]
pub struct LinuxConfig<'a> {
    /// The kernel file: an uncompressed `vmlinux` ELF with a PVH note, or a
    /// `bzImage`.
    pub kernel: &'a [u8],
    /// The kernel's command line (no NUL bytes).
    pub cmdline: &'a str,
    /// The initramfs; its string goes to the PVH module list (the bzImage
    /// protocol has no place for it).
    pub initrd: Option<Module<'a>>,
    /// The guest's RAM.
    pub ram: &'a [RamRange],
    /// Ranges reported as not RAM: ACPI tables (inside RAM), MMIO windows,
    /// firmware. The legacy hole is added by the loader.
    pub reserved: &'a [MemoryRegion],
    /// Physical address of the ACPI RSDP, if ACPI tables were written.
    pub rsdp: Option<u64>,
    /// Where the boot structures go.
    pub boot_area: BootArea,
}

/// The boot protocol a kernel was loaded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxProtocol {
    /// PVH entry of an ELF `vmlinux` (`XEN_ELFNOTE_PHYS32_ENTRY`).
    Pvh,
    /// The 64-bit entry of a `bzImage` (boot protocol 2.12 or later).
    BzImage64,
}

/// A flat segment register as the vCPU setup loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlatSegment {
    /// Selector (0 where the protocol leaves it unspecified).
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u32,
    /// Access rights in the VMCS format (SDM Vol. 3 24.4.1): type in bits
    /// 3:0, S bit 4, DPL bits 6:5, P bit 7, L bit 13, D/B bit 14, G bit 15.
    pub access_rights: u32,
}

/// Access rights: 32-bit flat code, execute/read, accessed, 4 KiB
/// granularity.
pub const AR_CODE32: u32 = 0xc09b;
/// Access rights: 64-bit code (L set), execute/read, accessed.
pub const AR_CODE64: u32 = 0xa09b;
/// Access rights: flat data, read/write, accessed, 32-bit, 4 KiB
/// granularity.
pub const AR_DATA: u32 = 0xc093;
/// Access rights: busy 32-bit TSS.
pub const AR_TSS_BUSY: u32 = 0x8b;

/// `__BOOT_CS`, the 64-bit entry's code selector.
pub const BOOT_CS: u16 = 0x10;
/// `__BOOT_DS`, the 64-bit entry's data selector.
pub const BOOT_DS: u16 = 0x18;

/// The GDT the 64-bit entry loads: null, null, `__BOOT_CS` (64-bit code),
/// `__BOOT_DS` (flat data), both accessed so the CPU never writes them.
pub const BOOT_GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// CR0.PE.
pub const CR0_PE: u64 = 1;
/// CR0.ET (hard-wired to 1).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS with only the reserved bit 1 set (IF, TF and VM clear).
pub const RFLAGS_CLEAR: u64 = 0x2;

/// Entry state of the PVH path (Xen's `arch-x86/hvm/start_info.h` and
/// `xen/include/public/elfnote.h`): 32-bit protected mode, paging off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhEntry {
    /// Entry point (physical), from `XEN_ELFNOTE_PHYS32_ENTRY`.
    pub eip: u32,
    /// Physical address of the `hvm_start_info`.
    pub ebx: u32,
    /// CR0: PE only (and the hard-wired ET).
    pub cr0: u64,
    /// CR4: 0.
    pub cr4: u64,
    /// RFLAGS: IF, TF and VM clear.
    pub rflags: u64,
    /// CS: flat 32-bit execute/read code, base 0, limit 4 GiB.
    pub cs: FlatSegment,
    /// DS, ES and SS (FS and GS too): flat read/write data.
    pub ds: FlatSegment,
    /// TR: busy 32-bit TSS, base 0, limit 0x67.
    pub tr: FlatSegment,
}

/// Entry state of the bzImage 64-bit path (Documentation/arch/x86/boot.rst,
/// "64-bit Boot Protocol"): long mode, identity-mapped paging, GDT loaded
/// with `__BOOT_CS`/`__BOOT_DS`, interrupts off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Long64Entry {
    /// Entry point: the protected-mode kernel's load address + 0x200.
    pub rip: u64,
    /// Physical address of the zero page (`struct boot_params`).
    pub rsi: u64,
    /// Physical address of the PML4 identity-mapping the first 4 GiB.
    pub cr3: u64,
    /// CR0: PE, ET and PG.
    pub cr0: u64,
    /// CR4: PAE.
    pub cr4: u64,
    /// IA32_EFER: LME and LMA.
    pub efer: u64,
    /// RFLAGS: IF clear.
    pub rflags: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// GDTR limit.
    pub gdtr_limit: u16,
    /// CS: `__BOOT_CS`.
    pub cs: FlatSegment,
    /// DS, ES and SS (FS and GS too): `__BOOT_DS`.
    pub ds: FlatSegment,
    /// TR: busy TSS, base 0, limit 0x67 (the kernel loads its own; VM entry
    /// requires a usable one).
    pub tr: FlatSegment,
}

/// Register state at the kernel's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxEntry {
    /// 32-bit PVH entry.
    Pvh(PvhEntry),
    /// 64-bit bzImage entry.
    Long64(Long64Entry),
}

/// Where everything went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedLinux {
    /// The protocol used.
    pub protocol: LinuxProtocol,
    /// Register state at entry.
    pub entry: LinuxEntry,
    /// Lowest address the kernel occupies.
    pub kernel_start: u64,
    /// One past the highest address the kernel occupies (for a bzImage, the
    /// end of its `init_size` span).
    pub kernel_end: u64,
    /// The initramfs, if any.
    pub initrd: Option<PlacedModule>,
    /// The `hvm_start_info` (PVH) or zero page (bzImage).
    pub boot_info: u64,
    /// The command line.
    pub cmdline: u64,
    /// The memory map handed to the kernel.
    pub memory_map: MemoryMap,
}

impl LoadedLinux {
    /// Every guest-physical range the load wrote: the kernel, the
    /// initramfs, the boot information page and the command line area
    /// (PVH), plus the page tables and GDT of the 64-bit entry (bzImage,
    /// at `area`'s addresses).
    pub fn footprint(&self, area: &BootArea) -> Vec<(BootStructure, Range<u64>), MAX_CLAIMS> {
        let mut out: Vec<(BootStructure, Range<u64>), MAX_CLAIMS> = Vec::new();
        let span = |start: u64, len: u64| start..start.saturating_add(len);
        let mut ranges = [
            Some((BootStructure::Kernel, self.kernel_start..self.kernel_end)),
            self.initrd
                .map(|m| (BootStructure::Initrd, m.start..m.end.max(m.start + 1))),
            Some((
                BootStructure::BootInfo,
                span(self.boot_info, BOOT_INFO_SIZE),
            )),
            Some((
                BootStructure::Cmdline,
                span(self.cmdline, CMDLINE_AREA_SIZE),
            )),
            None,
            None,
        ];
        if self.protocol == LinuxProtocol::BzImage64 {
            ranges[4] = Some((
                BootStructure::PageTables,
                span(area.page_tables, PAGE_TABLES_SIZE),
            ));
            ranges[5] = Some((BootStructure::Gdt, span(area.gdt, GDT_SIZE)));
        }
        for range in ranges.into_iter().flatten() {
            // At most six entries, below the capacity.
            let _ = out.push(range);
        }
        out
    }
}

/// Guest memory that accepts every write and keeps nothing: what [`plan`]
/// loads into.
struct Discard;

impl GuestMemory for Discard {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        Err(MemoryError::NotRam {
            addr,
            len: buf.len() as u64,
        })
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let len = data.len() as u64;
        addr.checked_add(len)
            .map(|_| ())
            .ok_or(MemoryError::Overflow { addr, len })
    }
}

/// Where [`load`] would put everything for `config`, without writing
/// anything: for a loader that must claim the destination (and move what
/// lies there) before loading. A later [`load`] with the same
/// configuration places everything at the same addresses.
pub fn plan(config: &LinuxConfig<'_>) -> Result<LoadedLinux, LinuxError> {
    load(&Discard, config)
}

/// A machine's firmware memory map as the loader's inputs: the usable
/// ranges below `ram_end` as RAM, every other range (ACPI, NVS, defective,
/// reserved) as a reserved region of the matching type. RAM at or above
/// `ram_end` is left out, so the kernel sees the same amount of RAM as a
/// guest of `ram_end` bytes would; ranges the firmware lists twice or
/// overlapping are refused by [`build_memory_map`] later.
pub fn firmware_layout(
    map: &[ponte_arch::boot::MemoryRegion],
    ram_end: u64,
) -> Result<
    (
        Vec<RamRange, MAX_LAYOUT_RANGES>,
        Vec<MemoryRegion, MAX_LAYOUT_RANGES>,
    ),
    LinuxError,
> {
    use ponte_arch::boot::MemoryKind;
    let mut ram: Vec<RamRange, MAX_LAYOUT_RANGES> = Vec::new();
    let mut reserved: Vec<MemoryRegion, MAX_LAYOUT_RANGES> = Vec::new();
    let too_many = LinuxError::TooManyRanges {
        count: map.len(),
        max: MAX_LAYOUT_RANGES,
    };
    for region in map {
        let start = region.range.start;
        let len = region.range.end.saturating_sub(start);
        if len == 0 {
            continue;
        }
        let kind = match region.kind {
            MemoryKind::Usable => {
                let end = region.range.end.min(ram_end);
                if start < end {
                    ram.push(RamRange::new(start, end - start))
                        .map_err(|_| too_many)?;
                }
                continue;
            }
            MemoryKind::AcpiReclaimable => MemoryType::Acpi,
            MemoryKind::AcpiNvs => MemoryType::Nvs,
            MemoryKind::Defective => MemoryType::Unusable,
            MemoryKind::Reserved => MemoryType::Reserved,
        };
        reserved
            .push(MemoryRegion::new(start, len, kind))
            .map_err(|_| too_many)?;
    }
    Ok((ram, reserved))
}

/// Why a Linux kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxError {
    /// Neither an ELF file nor a bzImage (no "HdrS" at 0x202).
    UnknownFormat,
    /// The ELF image was rejected by the shared ELF reader or segment
    /// checks (bad header, segment outside RAM or above 4 GiB, ...).
    Image(LoadError),
    /// The ELF file has no `XEN_ELFNOTE_PHYS32_ENTRY` note.
    NoPvhEntryNote,
    /// A note in a PT_NOTE segment runs past its segment.
    BadNote {
        /// File offset of the note header.
        offset: u64,
        /// `n_namesz`.
        namesz: u32,
        /// `n_descsz`.
        descsz: u32,
    },
    /// A PT_NOTE segment lies (partly) outside the file.
    NoteSegmentOutsideFile {
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        size: u64,
    },
    /// The PVH entry note's descriptor is neither 4 nor 8 bytes.
    BadPvhEntrySize {
        /// `n_descsz`.
        descsz: u32,
    },
    /// The PVH entry point is not inside the loaded kernel.
    EntryOutsideKernel {
        /// The entry address.
        entry: u64,
    },
    /// The file ends before a structure it declares.
    FileTooShort {
        /// Bytes needed.
        needed: u64,
        /// Bytes in the file.
        len: u64,
    },
    /// The bzImage `boot_flag` at 0x1fe is not 0xAA55.
    BadBootFlag {
        /// The value found.
        found: u16,
    },
    /// The boot protocol version is older than the 64-bit entry needs.
    ProtocolTooOld {
        /// The header's version.
        version: u16,
        /// The minimum accepted.
        required: u16,
    },
    /// The setup header ends before the fields of its declared version.
    HeaderTooShort {
        /// Offset of the header's end (0x202 + the byte at 0x201).
        end: u64,
        /// The end the version requires.
        required: u64,
    },
    /// The kernel has no 64-bit entry (`XLF_KERNEL_64` clear).
    No64BitEntry {
        /// `xloadflags`.
        xloadflags: u16,
    },
    /// The kernel does not load high (`LOADED_HIGH` clear): a zImage.
    NotLoadedHigh {
        /// `loadflags`.
        loadflags: u8,
    },
    /// The real-mode setup covers the whole file.
    SetupBeyondFile {
        /// `setup_sects` (0 read as 4).
        setup_sects: u8,
        /// The file's length.
        file_len: u64,
    },
    /// `syssize` declares more protected-mode code than the file holds.
    SyssizeBeyondFile {
        /// `syssize` in 16-byte paragraphs.
        syssize: u32,
        /// Bytes after the setup.
        available: u64,
    },
    /// A relocatable kernel's alignment is not a power of two.
    BadKernelAlignment {
        /// `kernel_alignment`.
        alignment: u32,
    },
    /// No RAM below 4 GiB holds the kernel (at its fixed address, or at any
    /// aligned address from its preferred one).
    NoRoomForKernel {
        /// The preferred (or required) address.
        addr: u64,
        /// Bytes needed.
        len: u64,
    },
    /// No RAM above the kernel and below the limit holds the initramfs.
    NoRoomForInitrd {
        /// The initramfs size.
        len: u64,
        /// Addresses must end at or below this.
        limit: u64,
    },
    /// The command line is longer than the kernel accepts.
    CmdlineTooLong {
        /// Its length without the NUL.
        len: u64,
        /// The longest accepted.
        max: u64,
    },
    /// The command line or module string contains a NUL byte.
    CmdlineHasNul {
        /// Offset of the NUL.
        offset: u64,
    },
    /// A boot structure is not inside one RAM range of the memory map.
    NotInRam {
        /// Which structure.
        what: BootStructure,
        /// Its address.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// Two boot structures overlap.
    Overlap {
        /// The structure being placed.
        what: BootStructure,
        /// The structure already there.
        with: BootStructure,
        /// Address of the first.
        addr: u64,
        /// Length of the first.
        len: u64,
    },
    /// A boot structure is not aligned as required.
    Misaligned {
        /// Which structure.
        what: BootStructure,
        /// Its address.
        addr: u64,
        /// The alignment required.
        align: u64,
    },
    /// Two reserved ranges overlap.
    ReservedRangesOverlap {
        /// Start of the earlier one in the list.
        first: u64,
        /// Start of the later one.
        second: u64,
    },
    /// A reserved range has type RAM.
    ReservedRangeIsRam {
        /// Its start.
        start: u64,
    },
    /// More RAM and reserved ranges than the builder accepts.
    TooManyRanges {
        /// Ranges given.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// The memory map has more entries than the protocol carries.
    TooManyMemoryMapEntries {
        /// The maximum.
        max: usize,
    },
    /// The RSDP lies in RAM the kernel may reuse: the ACPI tables must be
    /// inside a reserved range (ACPI type, normally).
    RsdpInRam {
        /// The RSDP address given.
        addr: u64,
    },
    /// An address or size computation overflowed.
    Overflow,
    /// Guest memory refused an access inside the checked layout.
    Memory(MemoryError),
}

impl From<LoadError> for LinuxError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Memory(m) => Self::Memory(m),
            other => Self::Image(other),
        }
    }
}

impl From<MemoryError> for LinuxError {
    fn from(e: MemoryError) -> Self {
        Self::Memory(e)
    }
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnknownFormat => write!(f, "neither an ELF vmlinux nor a bzImage"),
            Self::Image(e) => write!(f, "{e}"),
            Self::NoPvhEntryNote => write!(f, "no XEN_ELFNOTE_PHYS32_ENTRY note"),
            Self::BadNote {
                offset,
                namesz,
                descsz,
            } => write!(
                f,
                "note at {offset:#x} (namesz {namesz}, descsz {descsz}) overruns its segment"
            ),
            Self::NoteSegmentOutsideFile { offset, size } => {
                write!(f, "note segment {offset:#x}+{size:#x} outside the file")
            }
            Self::BadPvhEntrySize { descsz } => {
                write!(f, "PVH entry note of {descsz} bytes")
            }
            Self::EntryOutsideKernel { entry } => {
                write!(f, "entry {entry:#x} outside the loaded kernel")
            }
            Self::FileTooShort { needed, len } => {
                write!(
                    f,
                    "file of {len} bytes is shorter than the {needed} it declares"
                )
            }
            Self::BadBootFlag { found } => write!(f, "boot flag {found:#x}, not 0xaa55"),
            Self::ProtocolTooOld { version, required } => write!(
                f,
                "boot protocol {version:#x} older than the required {required:#x}"
            ),
            Self::HeaderTooShort { end, required } => {
                write!(f, "setup header ends at {end:#x}, before {required:#x}")
            }
            Self::No64BitEntry { xloadflags } => {
                write!(f, "no 64-bit entry (xloadflags {xloadflags:#x})")
            }
            Self::NotLoadedHigh { loadflags } => {
                write!(f, "kernel does not load high (loadflags {loadflags:#x})")
            }
            Self::SetupBeyondFile {
                setup_sects,
                file_len,
            } => write!(
                f,
                "{setup_sects} setup sectors cover the whole {file_len}-byte file"
            ),
            Self::SyssizeBeyondFile { syssize, available } => write!(
                f,
                "syssize {syssize:#x} paragraphs exceeds the {available:#x} bytes present"
            ),
            Self::BadKernelAlignment { alignment } => {
                write!(f, "kernel alignment {alignment:#x} is not a power of two")
            }
            Self::NoRoomForKernel { addr, len } => {
                write!(
                    f,
                    "no room for the {len:#x}-byte kernel at or above {addr:#x}"
                )
            }
            Self::NoRoomForInitrd { len, limit } => {
                write!(
                    f,
                    "no room for the {len:#x}-byte initramfs below {limit:#x}"
                )
            }
            Self::CmdlineTooLong { len, max } => {
                write!(f, "command line of {len} bytes exceeds {max}")
            }
            Self::CmdlineHasNul { offset } => write!(f, "NUL in a command line at {offset}"),
            Self::NotInRam { what, addr, len } => {
                write!(f, "{what:?} at {addr:#x}+{len:#x} is not in RAM")
            }
            Self::Overlap {
                what,
                with,
                addr,
                len,
            } => write!(f, "{what:?} at {addr:#x}+{len:#x} overlaps the {with:?}"),
            Self::Misaligned { what, addr, align } => {
                write!(f, "{what:?} at {addr:#x} is not {align:#x}-aligned")
            }
            Self::ReservedRangesOverlap { first, second } => {
                write!(f, "reserved ranges at {first:#x} and {second:#x} overlap")
            }
            Self::ReservedRangeIsRam { start } => {
                write!(f, "reserved range at {start:#x} has type RAM")
            }
            Self::TooManyRanges { count, max } => {
                write!(f, "{count} memory ranges, at most {max}")
            }
            Self::TooManyMemoryMapEntries { max } => {
                write!(f, "memory map needs more than {max} entries")
            }
            Self::RsdpInRam { addr } => {
                write!(f, "RSDP at {addr:#x} is in RAM, not in a reserved range")
            }
            Self::Overflow => write!(f, "address computation overflowed"),
            Self::Memory(e) => write!(f, "{e}"),
        }
    }
}

/// Which Linux protocol the file is for: an ELF file is a `vmlinux` for
/// PVH, a file with "HdrS" at 0x202 a bzImage.
pub fn detect(kernel: &[u8]) -> Option<LinuxProtocol> {
    if kernel.starts_with(b"\x7fELF") {
        Some(LinuxProtocol::Pvh)
    } else if le32(kernel, bzimage::HEADER_MAGIC_OFFSET) == Some(bzimage::HEADER_MAGIC) {
        Some(LinuxProtocol::BzImage64)
    } else {
        None
    }
}

/// Loads a `vmlinux` through PVH or a bzImage through its 64-bit entry,
/// whichever [`detect`] finds.
pub fn load(mem: &impl GuestMemory, config: &LinuxConfig<'_>) -> Result<LoadedLinux, LinuxError> {
    match detect(config.kernel) {
        Some(LinuxProtocol::Pvh) => pvh::load(mem, config),
        Some(LinuxProtocol::BzImage64) => bzimage::load(mem, config),
        None => Err(LinuxError::UnknownFormat),
    }
}

fn overlaps(a_start: u64, a_end: u64, b_start: u64, b_end: u64) -> bool {
    a_start < b_end && b_start < a_end
}

/// Most structures one load places.
pub const MAX_CLAIMS: usize = 8;

/// The guest RAM usable for placement and what has been placed in it.
struct Placement {
    ram: Vec<RamRange, MAX_MEMORY_MAP_ENTRIES>,
    claims: Vec<(BootStructure, u64, u64), MAX_CLAIMS>,
}

impl Placement {
    fn new(map: &MemoryMap) -> Self {
        Self {
            ram: usable_ram(map),
            claims: Vec::new(),
        }
    }

    /// The first claimed structure overlapping `[start, start + len)`.
    #[inline(never)]
    fn conflict(&self, start: u64, len: u64) -> Option<(BootStructure, u64, u64)> {
        let end = start.saturating_add(len);
        self.claims
            .iter()
            .copied()
            .find(|&(_, s, l)| overlaps(start, end, s, s.saturating_add(l)))
    }

    fn in_ram(&self, start: u64, len: u64) -> bool {
        start.checked_add(len).is_some_and(|end| end <= FOUR_GIB)
            && self.ram.iter().any(|r| r.contains(start, len))
    }

    /// Records `what` at `[start, start + len)` after checking it is in RAM,
    /// below 4 GiB and clear of everything claimed before.
    fn claim(&mut self, what: BootStructure, start: u64, len: u64) -> Result<(), LinuxError> {
        if !self.in_ram(start, len) {
            return Err(LinuxError::NotInRam {
                what,
                addr: start,
                len,
            });
        }
        if let Some((with, _, _)) = self.conflict(start, len) {
            return Err(LinuxError::Overlap {
                what,
                with,
                addr: start,
                len,
            });
        }
        self.claims
            .push((what, start, len))
            .map_err(|_| LinuxError::Overflow)
    }

    /// Claims the boot structures at their fixed addresses.
    fn claim_boot_area(&mut self, area: &BootArea, long_mode: bool) -> Result<(), LinuxError> {
        let fixed = [
            (BootStructure::BootInfo, area.boot_info, BOOT_INFO_SIZE, 8),
            (BootStructure::Cmdline, area.cmdline, CMDLINE_AREA_SIZE, 1),
            (
                BootStructure::PageTables,
                area.page_tables,
                PAGE_TABLES_SIZE,
                4096,
            ),
            (BootStructure::Gdt, area.gdt, GDT_SIZE, 8),
        ];
        let used = if long_mode { &fixed[..] } else { &fixed[..2] };
        for &(what, addr, len, align) in used {
            if !addr.is_multiple_of(align) {
                return Err(LinuxError::Misaligned { what, addr, align });
            }
            self.claim(what, addr, len)?;
        }
        Ok(())
    }

    /// The lowest `align`-aligned address at or above `from` where `len`
    /// bytes fit in RAM below 4 GiB, clear of every claim.
    fn lowest_fit(&self, from: u64, len: u64, align: u64) -> Option<u64> {
        let mut at = from;
        // Each round moves `at` strictly up to a range boundary or past a
        // claim, so the rounds are bounded by the number of those.
        for _ in 0..(2 * self.ram.len() + self.claims.len() + 2) {
            at = align_up(at, align)?;
            let range = self
                .ram
                .iter()
                .filter(|r| r.end() > at)
                .min_by_key(|r| r.start)?;
            if range.start > at {
                at = range.start;
                continue;
            }
            let end = at.checked_add(len)?;
            if end > FOUR_GIB {
                return None;
            }
            if end > range.end() {
                at = range.end();
                continue;
            }
            if let Some((_, s, l)) = self.conflict(at, len) {
                at = s.checked_add(l)?;
                continue;
            }
            return Some(at);
        }
        None
    }

    /// The highest `align`-aligned address where `len` bytes fit in RAM
    /// between `floor` and `ceiling` (exclusive end), clear of every claim.
    fn highest_fit(&self, floor: u64, ceiling: u64, len: u64, align: u64) -> Option<u64> {
        let mut limit = ceiling.min(FOUR_GIB);
        // `limit` strictly decreases to a range start or a claim start each
        // round, so the rounds are bounded by the number of those.
        for _ in 0..(self.ram.len() + self.claims.len() + 2) {
            let range = self
                .ram
                .iter()
                .filter(|r| r.start < limit && r.len > 0)
                .max_by_key(|r| r.end().min(limit))?;
            let top = range.end().min(limit);
            let lowest = range.start.max(floor);
            let start = top.checked_sub(len).map(|s| s & !(align - 1));
            match start {
                Some(start) if start >= lowest => {
                    if let Some((_, s, _)) = self.conflict(start, len) {
                        limit = s;
                        continue;
                    }
                    return Some(start);
                }
                _ => {
                    if range.start <= floor {
                        return None;
                    }
                    limit = range.start;
                }
            }
        }
        None
    }
}

/// Checks that a command line or module string can be handed to the kernel
/// as a C string of at most `max` bytes before the NUL.
fn check_cmdline(s: &str, max: u64) -> Result<(), LinuxError> {
    let len = s.len() as u64;
    if len > max {
        return Err(LinuxError::CmdlineTooLong { len, max });
    }
    if let Some(pos) = s.bytes().position(|b| b == 0) {
        return Err(LinuxError::CmdlineHasNul { offset: pos as u64 });
    }
    Ok(())
}

/// Places the initramfs (if any) at the highest 4 KiB boundary above
/// `floor` ending at or below `ceiling`, copies it and claims it.
fn place_initrd(
    mem: &impl GuestMemory,
    placement: &mut Placement,
    initrd: Option<&Module<'_>>,
    floor: u64,
    ceiling: u64,
) -> Result<Option<PlacedModule>, LinuxError> {
    let Some(module) = initrd else {
        return Ok(None);
    };
    let len = module.data.len() as u64;
    let start = placement
        .highest_fit(floor, ceiling, len.max(1), INITRD_ALIGN)
        .ok_or(LinuxError::NoRoomForInitrd {
            len,
            limit: ceiling,
        })?;
    placement.claim(BootStructure::Initrd, start, len.max(1))?;
    mem.write(start, module.data)?;
    Ok(Some(PlacedModule {
        start,
        end: start + len,
    }))
}

/// Writes `s` and a NUL at `addr` (with the loader's shared writer),
/// returning the address after the NUL.
fn write_cstr(mem: &impl GuestMemory, addr: u64, s: &str) -> Result<u64, LinuxError> {
    Ok(super::write_cstr(mem, addr, &[s.as_bytes()])?)
}

/// A little-endian field reader over the kernel file, failing with
/// [`LinuxError::FileTooShort`].
fn field16(data: &[u8], offset: u64) -> Result<u16, LinuxError> {
    le16(data, offset).ok_or_else(|| LinuxError::FileTooShort {
        needed: offset.saturating_add(2),
        len: data.len() as u64,
    })
}

fn field32(data: &[u8], offset: u64) -> Result<u32, LinuxError> {
    le32(data, offset).ok_or_else(|| LinuxError::FileTooShort {
        needed: offset.saturating_add(4),
        len: data.len() as u64,
    })
}

fn field64(data: &[u8], offset: u64) -> Result<u64, LinuxError> {
    le64(data, offset).ok_or_else(|| LinuxError::FileTooShort {
        needed: offset.saturating_add(8),
        len: data.len() as u64,
    })
}

/// Parses an ELF file with the shared reader.
fn parse_elf(kernel: &[u8]) -> Result<ElfFile<'_>, LinuxError> {
    Ok(ElfFile::parse(kernel)?)
}
