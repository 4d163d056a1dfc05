//! The 4-level EPT paging structure: map, unmap and protect ranges, with
//! page sizes chosen from alignment and capabilities, large pages split
//! where a range cuts them and merged back where a table becomes uniform.
//!
//! Every operation is a loop over the range; each step walks at most four
//! levels from the root, and freeing a subtree uses a fixed four-deep stack,
//! so no input makes the work recursive or unbounded.

use core::cmp::min;
use core::sync::atomic::Ordering;

use super::capabilities::EptCapabilities;
use super::entry::MemoryType;
use super::entry::{
    check_entry, entry_index, entry_span, is_leaf, is_present, MappingAttributes, Misconfiguration,
    PermissionError, Permissions, ACCESSED, ADDRESS_MASK, DIRTY, LARGE_PAGE, LEAF_ATTRIBUTE_MASK,
    MEMORY_TYPE_MASK, MEMORY_TYPE_SHIFT, PERMISSION_MASK,
};
use super::frames::{EptFrame, FrameAllocator};
use super::host_types::{HostMemoryTypes, UniformHostMemory};
use super::instructions::{invept, Eptp, InvalidationError, InveptKind};

/// One past the highest guest-physical address a 4-level walk translates.
pub const GUEST_PHYSICAL_LIMIT: u64 = 1 << 48;
/// The smallest page: every address and length given to the tables is a
/// multiple of it.
pub const PAGE_SIZE: u64 = 4096;

/// Bits 2:0 of an entry that references a table: the leaf decides access.
const TABLE_BITS: u64 = PERMISSION_MASK;
const SPAN_2M: u64 = 1 << 21;

/// The size of the page behind a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a PTE.
    Size4K,
    /// 2 MiB, mapped by a PDE.
    Size2M,
    /// 1 GiB, mapped by a PDPTE.
    Size1G,
}

impl PageSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }

    /// The paging level whose entries map pages of this size (1 = PTE).
    pub const fn level(self) -> u8 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }

    const fn from_level(level: u8) -> Self {
        match level {
            3 => Self::Size1G,
            2 => Self::Size2M,
            _ => Self::Size4K,
        }
    }
}

/// Where a guest-physical address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host-physical address of the byte.
    pub host_physical: u64,
    /// The page that maps it.
    pub page_size: PageSize,
    /// Its permissions, memory type and PAT choice.
    pub attributes: MappingAttributes,
    /// The accessed flag of the leaf (always clear without A/D flags).
    pub accessed: bool,
    /// The dirty flag of the leaf (always clear without A/D flags).
    pub dirty: bool,
}

/// The entries a walk for one guest-physical address read, for reporting an
/// EPT misconfiguration or violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptWalk {
    /// The guest-physical address walked.
    pub guest_physical: u64,
    /// Entries read, by level: `entries[3]` is the PML4E, `entries[0]` the
    /// PTE; `None` for levels the walk did not reach.
    pub entries: [Option<u64>; 4],
    /// The first entry that is a misconfiguration: its level (1 = PTE), raw
    /// value and the reason.
    pub misconfiguration: Option<(u8, u64, Misconfiguration)>,
    /// The translation, when the walk reached a well-formed leaf.
    pub translation: Option<Translation>,
}

/// Why an EPT operation was refused or stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// The capabilities lack a 4-level walk or any EPT pointer memory type.
    UnsupportedCapabilities,
    /// An address or length is not a multiple of 4 KiB.
    Misaligned {
        /// Guest-physical start.
        guest_physical: u64,
        /// Host-physical start (0 for operations without one).
        host_physical: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The guest range wraps or goes beyond [`GUEST_PHYSICAL_LIMIT`].
    GuestRangeTooLarge {
        /// Guest-physical start.
        guest_physical: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The host range wraps or goes beyond the host physical-address width.
    HostRangeTooLarge {
        /// Host-physical start.
        host_physical: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The permissions would make a misconfiguration or an absent page.
    Permissions(PermissionError),
    /// The frame allocator ran out. The operation is complete for
    /// `[start, completed_up_to)` and has changed nothing above.
    OutOfFrames {
        /// First guest-physical address the operation did not reach.
        completed_up_to: u64,
    },
    /// An entry references a table the allocator does not know: the tables
    /// were changed behind this code's back.
    UnknownFrame {
        /// The host-physical address found in the entry.
        host_physical: u64,
    },
    /// The allocator returned a frame that is unaligned or beyond the host
    /// physical-address width, which no entry can reference.
    UnusableFrame {
        /// The frame's host-physical address.
        host_physical: u64,
    },
    /// Dirty logging needs A/D flags, which the capabilities do not enable.
    AccessedDirtyDisabled,
    /// The dirty bitmap has fewer 64-bit words than the range needs.
    BitmapTooSmall {
        /// Words needed (one bit per 4 KiB page).
        needed: usize,
        /// Words given.
        given: usize,
    },
}

/// A table address the allocator does not know, before it becomes
/// [`EptError::UnknownFrame`].
struct UnknownFrame(u64);

impl From<UnknownFrame> for EptError {
    fn from(UnknownFrame(host_physical): UnknownFrame) -> Self {
        Self::UnknownFrame { host_physical }
    }
}

impl From<PermissionError> for EptError {
    fn from(e: PermissionError) -> Self {
        Self::Permissions(e)
    }
}

#[derive(Clone, Copy)]
enum Operation {
    Map {
        guest_physical: u64,
        host_physical: u64,
        attributes: MappingAttributes,
    },
    Unmap,
    Protect(Permissions),
    /// Split leaves larger than the current largest page size.
    Split,
}

/// A 4-level EPT over frames from `A`.
///
/// Changes take effect for the processor only after the caller invalidates
/// cached translations with [`super::invept`] (single-context with this
/// table's [`EptTables::eptp`]) on every processor that may have used them.
pub struct EptTables<A: FrameAllocator> {
    allocator: A,
    root: u64,
    caps: EptCapabilities,
    /// The largest leaf level in use: 3 normally, 1 while dirty logging
    /// wants 4 KiB precision.
    largest_level: u8,
}

impl<A: FrameAllocator> EptTables<A> {
    /// Empty tables (a zeroed PML4 from `allocator`) that will use what
    /// `caps` allows.
    pub fn new(mut allocator: A, caps: EptCapabilities) -> Result<Self, EptError> {
        if Eptp::new(0, &caps).is_none() {
            return Err(EptError::UnsupportedCapabilities);
        }
        let root = allocator
            .allocate_zeroed()
            .ok_or(EptError::OutOfFrames { completed_up_to: 0 })?;
        if allocator.frame(root).is_none()
            || root & (PAGE_SIZE - 1) != 0
            || root >= caps.host_physical_limit()
        {
            allocator.free(root);
            return Err(EptError::UnusableFrame {
                host_physical: root,
            });
        }
        Ok(Self {
            allocator,
            root,
            caps,
            largest_level: 3,
        })
    }

    /// The host-physical address of the PML4.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The EPT pointer for these tables: WB (else UC) paging-structure
    /// accesses, walk length 4, A/D flags when the capabilities have them.
    pub fn eptp(&self) -> Eptp {
        Eptp::new(self.root, &self.caps).unwrap_or(Eptp::from_bits(0))
    }

    /// Makes the processor forget translations cached from these tables:
    /// single-context INVEPT with [`EptTables::eptp`] when supported, else
    /// all-context. Call it after changes that remove or restrict mappings
    /// or after a dirty harvest, on every processor that ran the guest.
    ///
    /// # Safety
    /// The processor must be in VMX root operation (INVEPT raises #UD
    /// otherwise).
    pub unsafe fn invalidate(&self) -> Result<(), InvalidationError> {
        let kind = if self.caps.invept_single_context {
            InveptKind::SingleContext(self.eptp())
        } else {
            InveptKind::AllContexts
        };
        // SAFETY: VMX root operation is this function's own precondition.
        unsafe { invept(kind, &self.caps) }
    }

    /// The capabilities the tables were built for.
    pub fn capabilities(&self) -> &EptCapabilities {
        &self.caps
    }

    /// The frame allocator.
    pub fn allocator(&self) -> &A {
        &self.allocator
    }

    /// Maps guest-physical `[guest_physical, +len)` to host-physical
    /// `[host_physical, +len)`, replacing whatever was mapped there, using
    /// the largest pages alignment and capabilities allow.
    pub fn map(
        &mut self,
        guest_physical: u64,
        host_physical: u64,
        len: u64,
        attributes: MappingAttributes,
    ) -> Result<(), EptError> {
        let host = UniformHostMemory(MemoryType::WriteBack);
        self.map_with_host_types(guest_physical, host_physical, len, attributes, &host)
    }

    /// Like [`EptTables::map`], with each page's memory type combined with
    /// the host's type for its host-physical memory; a large page is used
    /// only where that type is uniform over it.
    pub fn map_with_host_types<H: HostMemoryTypes + ?Sized>(
        &mut self,
        guest_physical: u64,
        host_physical: u64,
        len: u64,
        attributes: MappingAttributes,
        host: &H,
    ) -> Result<(), EptError> {
        let end = self.check_range(guest_physical, host_physical, len)?;
        let host_end = host_physical.checked_add(len);
        if host_end.is_none_or(|e| e > self.caps.host_physical_limit()) {
            return Err(EptError::HostRangeTooLarge { host_physical, len });
        }
        attributes.permissions.validate(&self.caps)?;
        let op = Operation::Map {
            guest_physical,
            host_physical,
            attributes,
        };
        self.apply(guest_physical, end, op, host)
    }

    /// Removes every mapping in `[guest_physical, +len)`; large pages the
    /// range cuts are split, tables left empty are freed.
    pub fn unmap(&mut self, guest_physical: u64, len: u64) -> Result<(), EptError> {
        let end = self.check_range(guest_physical, 0, len)?;
        let host = UniformHostMemory(MemoryType::WriteBack);
        self.apply(guest_physical, end, Operation::Unmap, &host)
    }

    /// Gives every mapped page in `[guest_physical, +len)` the permissions
    /// `permissions`, keeping its translation, memory type and A/D flags;
    /// unmapped pages stay unmapped.
    pub fn protect(
        &mut self,
        guest_physical: u64,
        len: u64,
        permissions: Permissions,
    ) -> Result<(), EptError> {
        let end = self.check_range(guest_physical, 0, len)?;
        permissions.validate(&self.caps)?;
        let host = UniformHostMemory(MemoryType::WriteBack);
        self.apply(guest_physical, end, Operation::Protect(permissions), &host)
    }

    /// The translation of `guest_physical`, if it is mapped.
    pub fn translate(&self, guest_physical: u64) -> Option<Translation> {
        self.walk(guest_physical).translation
    }

    /// Walks the tables for `guest_physical` and reports every entry read and
    /// the first misconfigured one (what an EPT-misconfiguration exit needs).
    pub fn walk(&self, guest_physical: u64) -> EptWalk {
        let mut walk = EptWalk {
            guest_physical,
            entries: [None; 4],
            misconfiguration: None,
            translation: None,
        };
        if guest_physical >= GUEST_PHYSICAL_LIMIT {
            return walk;
        }
        let mut table = self.root;
        for level in (1..=4u8).rev() {
            let Some(frame) = self.allocator.frame(table) else {
                return walk;
            };
            let entry = frame.0[entry_index(guest_physical, level)].load(Ordering::Relaxed);
            walk.entries[usize::from(level - 1)] = Some(entry);
            if let Err(reason) = check_entry(entry, level, &self.caps) {
                walk.misconfiguration = Some((level, entry, reason));
                return walk;
            }
            if !is_present(entry) {
                return walk;
            }
            if is_leaf(entry, level) {
                let span = entry_span(level);
                if let Ok(attributes) = MappingAttributes::from_leaf(entry) {
                    walk.translation = Some(Translation {
                        host_physical: (entry & ADDRESS_MASK & !(span - 1))
                            + (guest_physical & (span - 1)),
                        page_size: PageSize::from_level(level),
                        attributes,
                        accessed: entry & ACCESSED != 0,
                        dirty: entry & DIRTY != 0,
                    });
                }
                return walk;
            }
            table = entry & ADDRESS_MASK;
        }
        walk
    }

    /// Switches to 4 KiB pages for precise dirty logging: splits every large
    /// page in `[guest_physical, +len)` (keeping translations, attributes and
    /// A/D flags) and, until [`EptTables::stop_dirty_logging`], maps and
    /// merges nothing larger than 4 KiB anywhere. Needs up to 513 frames per
    /// GiB of large pages; on `OutOfFrames` the range is split up to the
    /// address given. INVEPT afterwards is the caller's job.
    pub fn start_dirty_logging(&mut self, guest_physical: u64, len: u64) -> Result<(), EptError> {
        let end = self.check_range(guest_physical, 0, len)?;
        self.largest_level = 1;
        let host = UniformHostMemory(MemoryType::WriteBack);
        self.apply(guest_physical, end, Operation::Split, &host)
    }

    /// Allows large pages again and merges the tables of
    /// `[guest_physical, +len)` back into large pages where they are uniform.
    pub fn stop_dirty_logging(&mut self, guest_physical: u64, len: u64) -> Result<(), EptError> {
        let end = self.check_range(guest_physical, 0, len)?;
        self.largest_level = 3;
        let mut addr = guest_physical & !(SPAN_2M - 1);
        while addr < end {
            self.tidy(addr)?;
            addr += SPAN_2M;
        }
        Ok(())
    }

    /// Reads and clears the dirty flags of `[guest_physical, +len)`: sets
    /// bit `i` of `bitmap` (bit `i % 64` of word `i / 64`) when the 4 KiB
    /// page at `guest_physical + i * 4096` was written since the last
    /// harvest, clears the other bits of the words it covers, and returns the
    /// number of dirty pages.
    ///
    /// A large page is reported as all of its 4 KiB pages; for 4 KiB
    /// precision call [`EptTables::start_dirty_logging`] first, which splits
    /// large pages. A large page's dirty flag is cleared only when the page
    /// lies wholly inside the range; a page the range cuts stays dirty and is
    /// reported again by the next harvest of its other part, so nothing
    /// written is missed.
    ///
    /// The processor keeps using cached dirty state until the caller executes
    /// INVEPT for these tables; harvest, then invalidate, then copy.
    pub fn harvest_dirty(
        &mut self,
        guest_physical: u64,
        len: u64,
        bitmap: &mut [u64],
    ) -> Result<u64, EptError> {
        if !self.caps.accessed_dirty {
            return Err(EptError::AccessedDirtyDisabled);
        }
        let end = self.check_range(guest_physical, 0, len)?;
        let pages = len / PAGE_SIZE;
        let needed = pages.div_ceil(64) as usize;
        if bitmap.len() < needed {
            return Err(EptError::BitmapTooSmall {
                needed,
                given: bitmap.len(),
            });
        }
        bitmap[..needed].fill(0);
        let mut dirty_pages = 0;
        let mut addr = guest_physical;
        while addr < end {
            let mut table = self.root;
            let mut level = 4u8;
            loop {
                let span = entry_span(level);
                let base = addr & !(span - 1);
                let next = min(base + span, end);
                let frame = self.frame(table)?;
                let mut index = entry_index(addr, level);
                let entry = frame.0[index].load(Ordering::Relaxed);
                if !is_present(entry) {
                    addr = next;
                    break;
                }
                if level == 1 {
                    while index < 512 && addr < end {
                        let old = frame.0[index].fetch_and(!DIRTY, Ordering::AcqRel);
                        if is_present(old) && old & DIRTY != 0 {
                            set_bits(bitmap, (addr - guest_physical) / PAGE_SIZE, 1);
                            dirty_pages += 1;
                        }
                        addr += PAGE_SIZE;
                        index += 1;
                    }
                    break;
                }
                if is_leaf(entry, level) {
                    let inside = base >= guest_physical && base + span <= end;
                    let dirty = if inside {
                        frame.0[index].fetch_and(!DIRTY, Ordering::AcqRel) & DIRTY != 0
                    } else {
                        entry & DIRTY != 0
                    };
                    if dirty {
                        let count = (next - addr) / PAGE_SIZE;
                        set_bits(bitmap, (addr - guest_physical) / PAGE_SIZE, count);
                        dirty_pages += count;
                    }
                    addr = next;
                    break;
                }
                table = entry & ADDRESS_MASK;
                level -= 1;
            }
        }
        Ok(dirty_pages)
    }

    /// Checks alignment and the guest range; returns the range's end.
    fn check_range(
        &self,
        guest_physical: u64,
        host_physical: u64,
        len: u64,
    ) -> Result<u64, EptError> {
        if (guest_physical | host_physical | len) & (PAGE_SIZE - 1) != 0 {
            return Err(EptError::Misaligned {
                guest_physical,
                host_physical,
                len,
            });
        }
        match guest_physical.checked_add(len) {
            Some(end) if end <= GUEST_PHYSICAL_LIMIT => Ok(end),
            _ => Err(EptError::GuestRangeTooLarge {
                guest_physical,
                len,
            }),
        }
    }

    // Out of line: inlined, the allocator's checks and the error were
    // repeated at every table access of the walks. The small error type
    // keeps the result in registers; `?` turns it into the `EptError`.
    #[inline(never)]
    fn frame(&self, host_physical: u64) -> Result<&EptFrame, UnknownFrame> {
        self.allocator
            .frame(host_physical)
            .ok_or(UnknownFrame(host_physical))
    }

    fn load(&self, table: u64, index: usize) -> Result<u64, UnknownFrame> {
        Ok(self.frame(table)?.0[index].load(Ordering::Relaxed))
    }

    fn store(&self, table: u64, index: usize, value: u64) -> Result<(), UnknownFrame> {
        self.frame(table)?.0[index].store(value, Ordering::Release);
        Ok(())
    }

    fn allocate(&mut self) -> Result<u64, EptError> {
        let frame = self
            .allocator
            .allocate_zeroed()
            .ok_or(EptError::OutOfFrames { completed_up_to: 0 })?;
        if frame & (PAGE_SIZE - 1) != 0
            || frame >= self.caps.host_physical_limit()
            || self.allocator.frame(frame).is_none()
        {
            self.allocator.free(frame);
            return Err(EptError::UnusableFrame {
                host_physical: frame,
            });
        }
        Ok(frame)
    }

    fn apply<H: HostMemoryTypes + ?Sized>(
        &mut self,
        start: u64,
        end: u64,
        op: Operation,
        host: &H,
    ) -> Result<(), EptError> {
        let mut addr = start;
        while addr < end {
            let next = match self.step(addr, end, op, host) {
                Ok(next) => next,
                Err(EptError::OutOfFrames { .. }) => {
                    self.tidy(addr)?;
                    return Err(EptError::OutOfFrames {
                        completed_up_to: addr,
                    });
                }
                Err(e) => return Err(e),
            };
            if next & (SPAN_2M - 1) == 0 || next >= end {
                self.tidy(next - PAGE_SIZE)?;
            }
            addr = next;
        }
        Ok(())
    }

    /// The leaf bits (without address) a mapping of `host_physical` gets.
    fn leaf_bits<H: HostMemoryTypes + ?Sized>(
        attributes: MappingAttributes,
        host_physical: u64,
        host: &H,
    ) -> (u64, u64) {
        let (host_type, run) = host.host_memory_type(host_physical);
        let attributes = MappingAttributes {
            memory_type: attributes.memory_type.combined_with_host(host_type),
            ..attributes
        };
        (attributes.leaf_bits(), run)
    }

    /// One step of an operation at `addr`: walks down from the root and
    /// handles a run of entries in one table. Returns the first address not
    /// handled.
    fn step<H: HostMemoryTypes + ?Sized>(
        &mut self,
        addr: u64,
        end: u64,
        op: Operation,
        host: &H,
    ) -> Result<u64, EptError> {
        let mut table = self.root;
        let mut level = 4u8;
        loop {
            let span = entry_span(level);
            let base = addr & !(span - 1);
            let covers = base == addr && end - addr >= span;
            let index = entry_index(addr, level);
            let entry = self.load(table, index)?;
            match op {
                Operation::Map {
                    guest_physical,
                    host_physical,
                    attributes,
                } => {
                    let hpa_of = |a: u64| host_physical + (a - guest_physical);
                    if self.map_fits(addr, end, level, hpa_of(addr), host) {
                        return self.map_run(table, index, addr, end, level, op, host);
                    }
                    if !is_present(entry) {
                        let child = self.allocate()?;
                        self.store(table, index, child | TABLE_BITS)?;
                        table = child;
                    } else if is_leaf(entry, level) {
                        let next = min(base + span, end);
                        let (bits, run) = Self::leaf_bits(attributes, hpa_of(addr), host);
                        let same = entry & LEAF_ATTRIBUTE_MASK == bits
                            && (entry & ADDRESS_MASK) + (addr - base) == hpa_of(addr)
                            && run >= next - addr;
                        if same {
                            return Ok(next);
                        }
                        table = self.split(table, index, entry, level)?;
                    } else {
                        table = entry & ADDRESS_MASK;
                    }
                }
                Operation::Unmap => {
                    if !is_present(entry) {
                        return Ok(min(base + span, end));
                    }
                    if covers {
                        return self.unmap_run(table, index, addr, end, level);
                    }
                    table = if is_leaf(entry, level) {
                        self.split(table, index, entry, level)?
                    } else {
                        entry & ADDRESS_MASK
                    };
                }
                Operation::Split => {
                    if level <= self.largest_level {
                        // Every entry of this table and below is small enough.
                        let table_end = (addr | (span * 512 - 1)) + 1;
                        return Ok(min(table_end, end));
                    }
                    if !is_present(entry) {
                        return Ok(min(base + span, end));
                    }
                    table = if is_leaf(entry, level) {
                        self.split(table, index, entry, level)?
                    } else {
                        entry & ADDRESS_MASK
                    };
                }
                Operation::Protect(permissions) => {
                    if !is_present(entry) {
                        return Ok(min(base + span, end));
                    }
                    if is_leaf(entry, level) {
                        if Permissions::from_entry(entry) == permissions {
                            return Ok(min(base + span, end));
                        }
                        if covers {
                            return self.protect_run(table, index, addr, end, level, permissions);
                        }
                        table = self.split(table, index, entry, level)?;
                    } else {
                        table = entry & ADDRESS_MASK;
                    }
                }
            }
            if level == 1 {
                // A PTE is always a leaf and 4 KiB steps always fit: only a
                // table changed behind this code's back gets here.
                return Err(EptError::UnknownFrame {
                    host_physical: table,
                });
            }
            level -= 1;
        }
    }

    /// Whether leaves at `level` may be used now.
    fn leaf_allowed(&self, level: u8) -> bool {
        level <= self.largest_level && self.caps.leaf_allowed(level)
    }

    /// Whether a mapping at `addr` may use one leaf at `level`.
    fn map_fits<H: HostMemoryTypes + ?Sized>(
        &self,
        addr: u64,
        end: u64,
        level: u8,
        host_physical: u64,
        host: &H,
    ) -> bool {
        if level == 1 {
            return true;
        }
        let span = entry_span(level);
        self.leaf_allowed(level)
            && addr & (span - 1) == 0
            && end - addr >= span
            && host_physical & (span - 1) == 0
            && host.host_memory_type(host_physical).1 >= span
    }

    #[allow(clippy::too_many_arguments)]
    fn map_run<H: HostMemoryTypes + ?Sized>(
        &mut self,
        table: u64,
        mut index: usize,
        mut addr: u64,
        end: u64,
        level: u8,
        op: Operation,
        host: &H,
    ) -> Result<u64, EptError> {
        let Operation::Map {
            guest_physical,
            host_physical,
            attributes,
        } = op
        else {
            return Ok(addr);
        };
        let span = entry_span(level);
        let large = if level > 1 { LARGE_PAGE } else { 0 };
        // The leaf bits stay valid while the host type does: [from, until).
        let mut cached = (0u64, 0u64, 0u64);
        loop {
            // Fill entries while they are leaves or empty; stop at a table
            // (which must be freed, needing the allocator) or the run's end.
            let replaced_table = {
                let frame = self.frame(table)?;
                loop {
                    let hpa = host_physical + (addr - guest_physical);
                    if hpa < cached.1 || hpa >= cached.2 {
                        let (bits, run) = Self::leaf_bits(attributes, hpa, host);
                        cached = (bits, hpa, hpa.saturating_add(run.max(PAGE_SIZE)));
                    }
                    let leaf = hpa | cached.0 | large;
                    let old = frame.0[index].load(Ordering::Relaxed);
                    if is_present(old) && !is_leaf(old, level) {
                        frame.0[index].store(leaf, Ordering::Release);
                        break old & ADDRESS_MASK;
                    }
                    if !(is_present(old) && old & !(ACCESSED | DIRTY) == leaf) {
                        frame.0[index].store(leaf, Ordering::Release);
                    }
                    addr += span;
                    index += 1;
                    if index == 512
                        || addr >= end
                        || !self.map_fits(addr, end, level, hpa + span, host)
                    {
                        return Ok(addr);
                    }
                }
            };
            self.free_subtree(replaced_table, level - 1)?;
            let hpa = host_physical + (addr - guest_physical);
            addr += span;
            index += 1;
            if index == 512 || addr >= end || !self.map_fits(addr, end, level, hpa + span, host) {
                return Ok(addr);
            }
        }
    }

    fn unmap_run(
        &mut self,
        table: u64,
        mut index: usize,
        mut addr: u64,
        end: u64,
        level: u8,
    ) -> Result<u64, EptError> {
        let span = entry_span(level);
        while index < 512 && addr < end && end - addr >= span {
            let old = self.frame(table)?.0[index].swap(0, Ordering::AcqRel);
            if is_present(old) && !is_leaf(old, level) {
                self.free_subtree(old & ADDRESS_MASK, level - 1)?;
            }
            addr += span;
            index += 1;
        }
        Ok(addr)
    }

    fn protect_run(
        &mut self,
        table: u64,
        mut index: usize,
        mut addr: u64,
        end: u64,
        level: u8,
        permissions: Permissions,
    ) -> Result<u64, EptError> {
        let span = entry_span(level);
        let frame = self.frame(table)?;
        while index < 512 && addr < end && end - addr >= span {
            let entry = frame.0[index].load(Ordering::Relaxed);
            if is_present(entry) {
                if !is_leaf(entry, level) {
                    break;
                }
                // Only bits 2:0 change, in one atomic operation, so dirty
                // and accessed flags the processor sets meanwhile stay.
                let flip = (entry ^ permissions.bits()) & PERMISSION_MASK;
                frame.0[index].fetch_xor(flip, Ordering::AcqRel);
            }
            addr += span;
            index += 1;
        }
        Ok(addr)
    }

    /// Replaces the large leaf `entry` at `table[index]` by a table of 512
    /// leaves one level down that map the same memory the same way.
    fn split(&mut self, table: u64, index: usize, entry: u64, level: u8) -> Result<u64, EptError> {
        let child = self.allocate()?;
        let child_span = entry_span(level - 1);
        let base = entry & ADDRESS_MASK & !(entry_span(level) - 1);
        let large = if level - 1 > 1 { LARGE_PAGE } else { 0 };
        let flags = (entry & (LEAF_ATTRIBUTE_MASK | ACCESSED | DIRTY)) | large;
        let frame = self.frame(child)?;
        for (i, e) in frame.0.iter().enumerate() {
            e.store((base + i as u64 * child_span) | flags, Ordering::Relaxed);
        }
        let old = self.frame(table)?.0[index].swap(child | TABLE_BITS, Ordering::AcqRel);
        let late = old & !entry & (ACCESSED | DIRTY);
        if late != 0 {
            for e in &self.frame(child)?.0 {
                e.fetch_or(late, Ordering::AcqRel);
            }
        }
        Ok(child)
    }

    /// After a change at `addr`: frees tables on its path that became empty
    /// and merges tables that became one uniform large page, bottom up.
    fn tidy(&mut self, addr: u64) -> Result<(), UnknownFrame> {
        let mut path = [0u64; 5];
        path[4] = self.root;
        let mut level = 4u8;
        while level > 1 {
            let entry = self.load(path[usize::from(level)], entry_index(addr, level))?;
            if !is_present(entry) || is_leaf(entry, level) {
                break;
            }
            level -= 1;
            path[usize::from(level)] = entry & ADDRESS_MASK;
        }
        while level < 4 {
            let table = path[usize::from(level)];
            let parent = path[usize::from(level) + 1];
            let parent_index = entry_index(addr, level + 1);
            let frame = self.frame(table)?;
            if frame
                .0
                .iter()
                .all(|e| !is_present(e.load(Ordering::Relaxed)))
            {
                self.store(parent, parent_index, 0)?;
                self.allocator.free(table);
            } else if let Some(leaf) = self.mergeable(frame, level) {
                self.store(parent, parent_index, leaf)?;
                let late = self.frame(table)?.0.iter().fold(0, |acc, e| {
                    acc | (e.load(Ordering::Acquire) & (ACCESSED | DIRTY))
                }) & !leaf;
                if late != 0 {
                    self.frame(parent)?.0[parent_index].fetch_or(late, Ordering::AcqRel);
                }
                self.allocator.free(table);
            } else {
                break;
            }
            level += 1;
        }
        Ok(())
    }

    /// The large leaf one level up that maps what `frame` (at `level`) maps,
    /// if its 512 entries are contiguous, aligned, uniform leaves and the
    /// capabilities allow that page size.
    fn mergeable(&self, frame: &EptFrame, level: u8) -> Option<u64> {
        if !self.leaf_allowed(level + 1) {
            return None;
        }
        let span = entry_span(level);
        let first = frame.0[0].load(Ordering::Relaxed);
        let base = first & ADDRESS_MASK;
        let attributes = first & LEAF_ATTRIBUTE_MASK;
        if base & ((span * 512) - 1) != 0 {
            return None;
        }
        let mut flags = 0;
        for (i, e) in frame.0.iter().enumerate() {
            let e = e.load(Ordering::Relaxed);
            if !is_present(e)
                || !is_leaf(e, level)
                || e & LEAF_ATTRIBUTE_MASK != attributes
                || e & ADDRESS_MASK != base + i as u64 * span
            {
                return None;
            }
            flags |= e & (ACCESSED | DIRTY);
        }
        Some(base | attributes | flags | LARGE_PAGE)
    }

    /// Frees the table at `table` (at `level`) and every table below it,
    /// with a fixed-depth stack (at most four levels).
    fn free_subtree(&mut self, table: u64, level: u8) -> Result<(), UnknownFrame> {
        let mut stack = [(0u64, 0u8, 0usize); 4];
        stack[0] = (table, level, 0);
        let mut depth = 1;
        while depth > 0 {
            let (t, l, i) = stack[depth - 1];
            if i == 512 {
                self.allocator.free(t);
                depth -= 1;
                continue;
            }
            stack[depth - 1].2 += 1;
            let e = self.load(t, i)?;
            if l > 1 && is_present(e) && !is_leaf(e, l) && depth < stack.len() {
                stack[depth] = (e & ADDRESS_MASK, l - 1, 0);
                depth += 1;
            }
        }
        Ok(())
    }

    /// Unmaps everything; only the PML4 stays allocated.
    pub fn clear(&mut self) -> Result<(), EptError> {
        self.unmap(0, GUEST_PHYSICAL_LIMIT)
    }
}

impl<A: FrameAllocator> Drop for EptTables<A> {
    fn drop(&mut self) {
        if self.clear().is_ok() {
            self.allocator.free(self.root);
        }
    }
}

/// Sets `count` bits of `bitmap` from bit `first` on.
fn set_bits(bitmap: &mut [u64], first: u64, count: u64) {
    let mut bit = first;
    let end = first + count;
    while bit < end {
        let word = (bit / 64) as usize;
        let offset = bit % 64;
        let n = min(64 - offset, end - bit);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << offset
        };
        if let Some(w) = bitmap.get_mut(word) {
            *w |= mask;
        }
        bit += n;
    }
}

// The memory-type field must stay where `MappingAttributes::leaf_bits` puts it.
const _: () = assert!(MEMORY_TYPE_MASK == 7 << MEMORY_TYPE_SHIFT);
