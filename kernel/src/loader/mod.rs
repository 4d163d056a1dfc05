//! Guest loaders: place a guest kernel and its boot information in guest
//! memory and describe the entry state.
//!
//! This module owns the boot protocols for test kernels, Multiboot
//! ([`multiboot`]) and Multiboot2 ([`multiboot2`]), the hostile-input ELF
//! reader they share ([`elf`]), and the choice of where boot information and
//! modules go. The Linux boot protocol will live beside them.
//!
//! Everything read from the kernel file is untrusted: parsing never panics,
//! never loops without bound, checks every offset and size, and reports what
//! was wrong through [`LoadError`]. Guest memory is reached only through
//! [`GuestMemory`].
//!
//! # Placement
//!
//! The kernel's segments go where the image says (ELF `p_paddr`, or the
//! Multiboot address fields); each must lie inside one RAM range of the
//! integrator's layout and below 4 GiB. Unless the integrator pins it
//! ([`InfoPlacement::At`]), the boot information block (with the module
//! list, memory map and strings) goes at the first page boundary after the
//! highest byte of the kernel that has room in RAM, and the modules follow,
//! each page-aligned. QEMU does the same for the strings, module list and
//! modules (it keeps the fixed part of the v1 block at 0x9500); keeping all
//! of it above the kernel leaves the low 640 KiB to the guest.
//!
//! # Entry state
//!
//! Both protocols enter the kernel at [`EntryState::eip`] in 32-bit protected
//! mode with paging off: CR0.PE = 1, CR0.PG = 0, flat 4 GiB code segment
//! (32-bit, execute/read) in CS and flat 4 GiB data segments in DS, ES, FS,
//! GS and SS, EFLAGS.VM = 0 and EFLAGS.IF = 0, A20 enabled, EAX holding the
//! protocol's magic and EBX the physical address of the information block.
//! ESP, GDTR and IDTR are undefined: the kernel sets its own. Building the
//! vCPU state is the caller's job.

use crate::memory::{GuestMemory, MemoryError};
use core::fmt;

pub mod elf;
#[cfg(test)]
mod fake_memory;
pub mod linux;
pub mod multiboot;
pub mod multiboot2;
pub mod paging;

#[cfg(test)]
mod tests;

/// Page size used to align the boot information and modules.
pub const PAGE_SIZE: u64 = 4096;
/// First address a 32-bit protected-mode kernel cannot reach.
pub const FOUR_GIB: u64 = 1 << 32;

/// One range of guest RAM in the integrator's layout, e.g. low RAM
/// `0..0xa0000` and high RAM from 1 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// First guest-physical address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl RamRange {
    /// A range of `len` bytes at `start`.
    pub const fn new(start: u64, len: u64) -> Self {
        Self { start, len }
    }

    /// One past the last byte, saturating at the top of the address space.
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// Whether `[addr, addr + len)` lies wholly inside the range.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        match addr.checked_add(len) {
            Some(end) => addr >= self.start && end <= self.end(),
            None => false,
        }
    }
}

/// A boot module (Multiboot "module", e.g. an initrd) with its command line.
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    /// The module's bytes.
    pub data: &'a [u8],
    /// The module's string, handed to the kernel as is (QEMU passes the file
    /// name followed by the module's arguments).
    pub cmdline: &'a str,
}

/// Where the boot information block goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoPlacement {
    /// At the first page boundary after the kernel with room in RAM.
    AfterKernel,
    /// At this guest-physical address; loading fails if the kernel overlaps it.
    At(u64),
}

/// What to load and where the guest's RAM is.
#[derive(Clone, Copy, Debug)]
pub struct BootConfig<'a> {
    /// The kernel file.
    pub kernel: &'a [u8],
    /// The kernel's name; the command line the guest sees is
    /// `"<name> <cmdline>"`, as QEMU builds it from the `-kernel` file name.
    pub kernel_name: &'a str,
    /// The kernel's arguments.
    pub cmdline: &'a str,
    /// Modules, loaded in order after the boot information.
    pub modules: &'a [Module<'a>],
    /// The guest's RAM; also the memory map handed to the guest.
    pub ram: &'a [RamRange],
    /// The name given as the boot loader's.
    pub boot_loader_name: &'a str,
    /// Where the boot information block goes.
    pub info_placement: InfoPlacement,
}

/// The boot protocol a kernel was loaded with (more, such as Linux's, will
/// follow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// Multiboot (version 0.6.96).
    Multiboot1,
    /// Multiboot2 (version 2.0).
    Multiboot2,
}

/// Register state at the kernel's entry (see the module docs for the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// Entry point (physical, paging is off).
    pub eip: u32,
    /// The protocol's boot magic.
    pub eax: u32,
    /// Physical address of the boot information block.
    pub ebx: u32,
}

/// Where a module ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedModule {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The result of loading a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// The protocol used.
    pub protocol: Protocol,
    /// Register state at entry.
    pub entry: EntryState,
    /// Lowest address the kernel occupies.
    pub kernel_start: u64,
    /// One past the highest address the kernel occupies (including bss).
    pub kernel_end: u64,
    /// Address of the boot information block.
    pub info_addr: u64,
    /// Size of the boot information block with its strings.
    pub info_len: u64,
    /// One past the last module byte (the info block's end without modules).
    pub modules_end: u64,
    /// The kernel asked for a video mode or framebuffer, which is not
    /// provided (the request was optional, or a Multiboot v1 flag that QEMU
    /// also ignores); no framebuffer information is passed.
    pub video_declined: bool,
}

/// Why a kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadError {
    /// No valid Multiboot or Multiboot2 header (magic with a matching
    /// checksum) in the searched part of the file.
    NoHeader,
    /// The file ends before a structure it declares.
    FileTooShort {
        /// Bytes needed.
        needed: u64,
        /// Bytes in the file.
        len: u64,
    },
    /// The Multiboot header's flags require a feature not implemented.
    UnsupportedFlags {
        /// The unknown required bits (0-15).
        flags: u32,
    },
    /// The Multiboot address fields are inconsistent.
    BadAddressFields {
        /// `header_addr`.
        header_addr: u32,
        /// `load_addr`.
        load_addr: u32,
        /// `load_end_addr`.
        load_end_addr: u32,
        /// `bss_end_addr`.
        bss_end_addr: u32,
    },
    /// The Multiboot2 header names an architecture other than i386.
    UnsupportedArchitecture {
        /// The architecture field.
        architecture: u32,
    },
    /// The Multiboot2 header length is impossible.
    BadHeaderLength {
        /// The header_length field.
        header_length: u32,
    },
    /// A Multiboot2 header tag is malformed.
    BadTag {
        /// Offset of the tag in the file.
        offset: u64,
        /// Tag type.
        tag_type: u16,
        /// Tag size.
        size: u32,
    },
    /// A required Multiboot2 header tag is not supported.
    UnsupportedTag {
        /// Tag type.
        tag_type: u16,
    },
    /// A required Multiboot2 information request cannot be met.
    UnsupportedInfoRequest {
        /// The requested information tag type.
        info_type: u32,
    },
    /// The kernel requires a framebuffer, which is not provided.
    FramebufferRequired,
    /// A Multiboot2 address tag without an entry address tag.
    MissingEntryAddress,
    /// The file is not an ELF image the loader accepts.
    BadElf(elf::ElfError),
    /// A segment's file size exceeds its memory size.
    SegmentFileSizeExceedsMemSize {
        /// Index of the program header (0 for Multiboot address fields).
        index: u16,
        /// Bytes in the file.
        file_size: u64,
        /// Bytes in memory.
        mem_size: u64,
    },
    /// A segment does not lie inside one RAM range.
    SegmentOutsideRam {
        /// First address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// A segment reaches above 4 GiB.
    SegmentAbove4GiB {
        /// First address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The image has nothing to load.
    NoLoadableSegment,
    /// The entry point is not reachable in 32-bit mode.
    EntryAbove4GiB {
        /// The entry address.
        entry: u64,
    },
    /// A kernel segment overlaps the pinned boot information block.
    OverlapsBootInfo {
        /// The segment's first address.
        addr: u64,
        /// The segment's length.
        len: u64,
    },
    /// The pinned boot information block is not in RAM or above 4 GiB.
    BootInfoOutsideRam {
        /// The pinned address.
        addr: u64,
        /// The block's size.
        len: u64,
    },
    /// No RAM below 4 GiB has room for the boot information block.
    NoRoomForBootInfo {
        /// The block's size.
        len: u64,
    },
    /// No RAM below 4 GiB has room for a module.
    NoRoomForModule {
        /// The module's index.
        index: usize,
        /// Its size.
        len: u64,
    },
    /// A size or address computation overflowed.
    Overflow,
    /// Guest memory refused an access inside the checked RAM layout (the
    /// layout and the memory disagree).
    Memory(MemoryError),
}

impl From<elf::ElfError> for LoadError {
    fn from(e: elf::ElfError) -> Self {
        Self::BadElf(e)
    }
}

impl From<MemoryError> for LoadError {
    fn from(e: MemoryError) -> Self {
        Self::Memory(e)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoHeader => write!(f, "no Multiboot or Multiboot2 header"),
            Self::FileTooShort { needed, len } => {
                write!(
                    f,
                    "file of {len} bytes is shorter than the {needed} bytes it declares"
                )
            }
            Self::UnsupportedFlags { flags } => write!(f, "unsupported required flags {flags:#x}"),
            Self::BadAddressFields {
                header_addr,
                load_addr,
                load_end_addr,
                bss_end_addr,
            } => write!(
                f,
                "inconsistent address fields: header {header_addr:#x} load {load_addr:#x} \
                 load_end {load_end_addr:#x} bss_end {bss_end_addr:#x}"
            ),
            Self::UnsupportedArchitecture { architecture } => {
                write!(f, "unsupported architecture {architecture}")
            }
            Self::BadHeaderLength { header_length } => {
                write!(f, "bad header length {header_length}")
            }
            Self::BadTag {
                offset,
                tag_type,
                size,
            } => write!(f, "bad tag type {tag_type} size {size} at {offset:#x}"),
            Self::UnsupportedTag { tag_type } => write!(f, "unsupported required tag {tag_type}"),
            Self::UnsupportedInfoRequest { info_type } => {
                write!(f, "cannot provide requested information {info_type}")
            }
            Self::FramebufferRequired => write!(f, "a framebuffer is required"),
            Self::MissingEntryAddress => write!(f, "address tag without entry address tag"),
            Self::BadElf(e) => write!(f, "bad ELF image: {e:?}"),
            Self::SegmentFileSizeExceedsMemSize {
                index,
                file_size,
                mem_size,
            } => write!(
                f,
                "segment {index}: file size {file_size:#x} exceeds memory size {mem_size:#x}"
            ),
            Self::SegmentOutsideRam { addr, len } => {
                write!(f, "segment {addr:#x}+{len:#x} is not inside RAM")
            }
            Self::SegmentAbove4GiB { addr, len } => {
                write!(f, "segment {addr:#x}+{len:#x} reaches above 4 GiB")
            }
            Self::NoLoadableSegment => write!(f, "nothing to load"),
            Self::EntryAbove4GiB { entry } => write!(f, "entry {entry:#x} above 4 GiB"),
            Self::OverlapsBootInfo { addr, len } => {
                write!(
                    f,
                    "segment {addr:#x}+{len:#x} overlaps the boot information"
                )
            }
            Self::BootInfoOutsideRam { addr, len } => {
                write!(f, "boot information {addr:#x}+{len:#x} is not inside RAM")
            }
            Self::NoRoomForBootInfo { len } => {
                write!(f, "no room for {len:#x} bytes of boot information")
            }
            Self::NoRoomForModule { index, len } => {
                write!(f, "no room for module {index} of {len:#x} bytes")
            }
            Self::Overflow => write!(f, "size computation overflowed"),
            Self::Memory(e) => write!(f, "{e}"),
        }
    }
}

/// Which protocol header the kernel carries, Multiboot first (as QEMU's
/// `-kernel` looks only for it), then Multiboot2.
pub fn detect(kernel: &[u8]) -> Option<Protocol> {
    if multiboot::find_header(kernel).is_some() {
        Some(Protocol::Multiboot1)
    } else if multiboot2::find_header(kernel).is_some() {
        Some(Protocol::Multiboot2)
    } else {
        None
    }
}

/// Loads a Multiboot or Multiboot2 kernel, whichever header [`detect`] finds.
pub fn load(mem: &impl GuestMemory, config: &BootConfig<'_>) -> Result<LoadedKernel, LoadError> {
    match detect(config.kernel) {
        Some(Protocol::Multiboot1) => multiboot::load(mem, config),
        Some(Protocol::Multiboot2) => multiboot2::load(mem, config),
        None => Err(LoadError::NoHeader),
    }
}

/// One piece of the kernel to copy into guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Program header index (0 for a flat image).
    pub index: u16,
    /// Guest-physical load address.
    pub paddr: u64,
    /// Offset of the bytes in the file.
    pub file_offset: u64,
    /// Bytes taken from the file.
    pub file_size: u64,
    /// Bytes occupied in memory; the rest after `file_size` is zeroed.
    pub mem_size: u64,
}

/// How the kernel's bytes map to memory.
#[derive(Clone, Copy)]
pub(crate) enum KernelImage<'a> {
    /// An ELF file's PT_LOAD segments.
    Elf(elf::ElfFile<'a>),
    /// One flat segment (Multiboot address fields).
    Flat(Segment),
}

impl KernelImage<'_> {
    /// Calls `f` for every segment that occupies memory.
    pub(crate) fn for_each_segment(
        &self,
        mut f: impl FnMut(Segment) -> Result<(), LoadError>,
    ) -> Result<(), LoadError> {
        match self {
            Self::Elf(e) => e.for_each_load_segment(&mut f),
            Self::Flat(s) => f(*s),
        }
    }
}

/// Address range occupied by the kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelSpan {
    pub start: u64,
    pub end: u64,
}

fn overlaps(a_start: u64, a_end: u64, b_start: u64, b_end: u64) -> bool {
    a_start < b_end && b_start < a_end
}

/// Checks every segment against the RAM layout (and a pinned info block),
/// returning the span the kernel occupies.
pub(crate) fn check_segments(
    image: &KernelImage<'_>,
    file: &[u8],
    ram: &[RamRange],
    pinned_info: Option<(u64, u64)>,
) -> Result<KernelSpan, LoadError> {
    let mut span: Option<KernelSpan> = None;
    image.for_each_segment(|s| {
        if s.file_size > s.mem_size {
            return Err(LoadError::SegmentFileSizeExceedsMemSize {
                index: s.index,
                file_size: s.file_size,
                mem_size: s.mem_size,
            });
        }
        let file_end = s
            .file_offset
            .checked_add(s.file_size)
            .ok_or(LoadError::Overflow)?;
        if file_end > file.len() as u64 {
            return Err(LoadError::FileTooShort {
                needed: file_end,
                len: file.len() as u64,
            });
        }
        let end = s.paddr.checked_add(s.mem_size).ok_or(LoadError::Overflow)?;
        if end > FOUR_GIB {
            return Err(LoadError::SegmentAbove4GiB {
                addr: s.paddr,
                len: s.mem_size,
            });
        }
        if !ram.iter().any(|r| r.contains(s.paddr, s.mem_size)) {
            return Err(LoadError::SegmentOutsideRam {
                addr: s.paddr,
                len: s.mem_size,
            });
        }
        if let Some((info, info_len)) = pinned_info {
            if overlaps(s.paddr, end, info, info.saturating_add(info_len)) {
                return Err(LoadError::OverlapsBootInfo {
                    addr: s.paddr,
                    len: s.mem_size,
                });
            }
        }
        span = Some(match span {
            None => KernelSpan {
                start: s.paddr,
                end,
            },
            Some(k) => KernelSpan {
                start: k.start.min(s.paddr),
                end: k.end.max(end),
            },
        });
        Ok(())
    })?;
    span.ok_or(LoadError::NoLoadableSegment)
}

/// Copies the (checked) segments into guest memory, zeroing their bss.
pub(crate) fn copy_segments(
    mem: &impl GuestMemory,
    image: &KernelImage<'_>,
    file: &[u8],
) -> Result<(), LoadError> {
    image.for_each_segment(|s| {
        // check_segments proved these ranges are inside the file.
        let from = s.file_offset as usize;
        let bytes = file
            .get(from..from + s.file_size as usize)
            .ok_or(LoadError::Overflow)?;
        mem.write(s.paddr, bytes)?;
        zero(mem, s.paddr + s.file_size, s.mem_size - s.file_size)
    })
}

/// Writes `len` zero bytes at `addr`.
pub(crate) fn zero(mem: &impl GuestMemory, addr: u64, len: u64) -> Result<(), LoadError> {
    const ZEROS: [u8; 512] = [0; 512];
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(ZEROS.len() as u64);
        mem.write(addr + done, &ZEROS[..chunk as usize])?;
        done += chunk;
    }
    Ok(())
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub(crate) fn align_up(value: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

/// Finds the lowest `align`-aligned address at or above `from` where `len`
/// bytes fit inside one RAM range, below 4 GiB, outside `avoid`.
pub(crate) fn find_room(
    ram: &[RamRange],
    from: u64,
    len: u64,
    align: u64,
    avoid: Option<(u64, u64)>,
) -> Option<u64> {
    let mut at = from;
    // Each round moves `at` past a range start, a range end or the avoided
    // block, so the number of rounds is bounded by the boundaries.
    for _ in 0..(ram.len() * 3 + 4) {
        at = align_up(at, align)?;
        let range = ram
            .iter()
            .filter(|r| r.len > 0 && r.end() > at)
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
        if let Some((a_start, a_len)) = avoid {
            let a_end = a_start.saturating_add(a_len);
            if overlaps(at, end, a_start, a_end) {
                at = a_end;
                continue;
            }
        }
        return Some(at);
    }
    None
}

/// Places the modules page-aligned from `from`, avoiding `avoid`, and copies
/// them into guest memory.
pub(crate) fn place_modules(
    mem: &impl GuestMemory,
    modules: &[Module<'_>],
    ram: &[RamRange],
    from: u64,
    avoid: Option<(u64, u64)>,
    mut record: impl FnMut(usize, PlacedModule) -> Result<(), LoadError>,
) -> Result<u64, LoadError> {
    let mut cursor = from;
    for (index, module) in modules.iter().enumerate() {
        let len = module.data.len() as u64;
        let start = find_room(ram, cursor, len.max(1), PAGE_SIZE, avoid)
            .ok_or(LoadError::NoRoomForModule { index, len })?;
        mem.write(start, module.data)?;
        let end = start + len;
        record(index, PlacedModule { start, end })?;
        cursor = end;
    }
    Ok(cursor)
}

/// The Multiboot `mem_lower`/`mem_upper` values in KiB: RAM from 0 (at most
/// 640 KiB) and contiguous RAM from 1 MiB (clamped to 32 bits).
pub(crate) fn basic_meminfo(ram: &[RamRange]) -> (u32, u32) {
    let lower = ram
        .iter()
        .find(|r| r.start == 0)
        .map_or(0, |r| r.len.min(640 * 1024) / 1024) as u32;
    let upper = ram
        .iter()
        .find(|r| r.start <= 0x10_0000 && r.end() > 0x10_0000)
        .map_or(0, |r| {
            ((r.end() - 0x10_0000) / 1024).min(u64::from(u32::MAX))
        }) as u32;
    (lower, upper)
}

/// A little-endian u32 at `offset` of `data`.
pub(crate) fn le32(data: &[u8], offset: u64) -> Option<u32> {
    let start = usize::try_from(offset).ok()?;
    let bytes = data.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// A little-endian u16 at `offset` of `data`.
pub(crate) fn le16(data: &[u8], offset: u64) -> Option<u16> {
    let start = usize::try_from(offset).ok()?;
    let bytes = data.get(start..start.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

/// A little-endian u64 at `offset` of `data`.
pub(crate) fn le64(data: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let bytes = data.get(start..start.checked_add(8)?)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    Some(u64::from_le_bytes(b))
}

/// Writes a NUL-terminated string, returning the address after the NUL.
pub(crate) fn write_cstr(
    mem: &impl GuestMemory,
    addr: u64,
    parts: &[&[u8]],
) -> Result<u64, LoadError> {
    let mut at = addr;
    for part in parts {
        mem.write(at, part)?;
        at += part.len() as u64;
    }
    mem.write(at, &[0])?;
    Ok(at + 1)
}
