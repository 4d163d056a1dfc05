//! The image's host-physical memory: which frames are free
//! ([`PhysicalFrames`]) and safe ownership of them ([`HostMemory`]).
//!
//! The boot runtime builds one [`HostMemory`] from the loader's memory map
//! minus everything reserved, and hands it to the image's `main`. Because the
//! image runs on an identity map of the first 4 GiB, a frame's physical
//! address is also its address, so memory can be handed out as owned Rust
//! objects: VMCS and bitmap pages, EPT table frames, guest RAM.
//!
//! An image that hands the machine to another kernel also needs memory at
//! fixed addresses (where that kernel must be loaded): [`HostMemory::claim`]
//! gives such a range if it is free RAM, refusing with a typed
//! [`ClaimError`] what the image must keep (itself with its stacks and
//! page tables, the loader's information, boot modules) or has already
//! handed out. Free RAM below 1 MiB, which is never allocated, can be
//! claimed too, except the first page (real-mode interrupt table and BIOS
//! data). A boot module lying where a kernel must go is moved away first
//! with [`HostMemory::move_module`].

mod frames;

pub use frames::{FrameError, PhysicalFrames, FRAME_SIZE};

use core::ops::Range;

use heapless::Vec;

use crate::{
    boot::{BootInfo, BootModule, LOW_MEMORY_END, MAX_MODULES},
    ept::{EptFrame, FrameAllocator, HostRam},
    vmx::Page4K,
};

/// End of the boot identity map: no memory above it is handed out.
pub const IDENTITY_MAPPED_END: u64 = 4 << 30;
/// How many disjoint free ranges [`HostMemory`] tracks.
pub const MAX_FREE_RANGES: usize = 64;
/// End of the real-mode interrupt table and BIOS data area, which are never
/// claimed.
pub const BIOS_DATA_END: u64 = 0x1000;
/// How many disjoint free ranges below [`LOW_MEMORY_END`] are tracked for
/// claims.
const MAX_LOW_RANGES: usize = 8;
/// The image, the loader's information and the modules.
const MAX_KEPT: usize = MAX_MODULES + 2;

/// Something in host memory the image keeps, named when a claim runs into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    /// The image itself: code, data, stacks and boot page tables.
    Image,
    /// The loader's information block.
    LoaderInfo,
    /// A boot module, by its command line.
    Module(&'static str),
}

/// Why a fixed range could not be claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// The range is empty or wraps the address space.
    BadRange {
        /// First address asked for.
        start: u64,
        /// Length asked for.
        len: u64,
    },
    /// The range reaches past the identity map ([`IDENTITY_MAPPED_END`]).
    BeyondIdentityMap {
        /// First address asked for.
        start: u64,
        /// Length asked for.
        len: u64,
    },
    /// The range overlaps something the image keeps.
    Overlaps {
        /// First address asked for.
        start: u64,
        /// Length asked for.
        len: u64,
        /// What is there.
        kept: Kept,
        /// Where that is.
        at: Range<u64>,
    },
    /// Part of the range is not free RAM: firmware, a hole, the BIOS data
    /// page, or memory already handed out.
    NotFree {
        /// First address asked for.
        start: u64,
        /// Length asked for.
        len: u64,
        /// The first address that is not free.
        first: u64,
    },
}

/// Why a boot module could not be moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveError {
    /// Its bytes were already borrowed through [`BootModule::bytes`], so its
    /// memory cannot be given up.
    Borrowed {
        /// The module's command line.
        name: &'static str,
    },
    /// No free memory outside the avoided range holds it.
    Memory(FrameError),
}

/// The bookkeeping behind [`HostMemory`]: what may be allocated, what may
/// only be claimed, and what is kept. Touches no memory.
#[derive(Debug)]
struct Ledger {
    /// Free memory that allocations and claims take from.
    frames: PhysicalFrames<MAX_FREE_RANGES>,
    /// Free RAM below [`LOW_MEMORY_END`], for claims only.
    low: PhysicalFrames<MAX_LOW_RANGES>,
    /// Ranges the image keeps.
    kept: Vec<(Kept, Range<u64>), MAX_KEPT>,
}

/// `range` grown to whole frames.
fn frames_of(range: &Range<u64>) -> Range<u64> {
    let start = range.start & !(FRAME_SIZE - 1);
    let end = range
        .end
        .checked_add(FRAME_SIZE - 1)
        .map_or(!(FRAME_SIZE - 1), |e| e & !(FRAME_SIZE - 1));
    start..end
}

impl Ledger {
    fn new(boot: &BootInfo) -> Result<Self, FrameError> {
        let mut frames = PhysicalFrames::new(boot.usable_memory(), boot.reserved_ranges())?;
        frames.reserve(IDENTITY_MAPPED_END..u64::MAX)?;
        let mut kept: Vec<(Kept, Range<u64>), MAX_KEPT> = Vec::new();
        let modules = boot
            .modules
            .iter()
            .map(|m| (Kept::Module(m.name), m.range.clone()));
        for entry in [
            (Kept::Image, boot.image.clone()),
            (Kept::LoaderInfo, boot.loader_info.clone()),
        ]
        .into_iter()
        .chain(modules)
        {
            // Capacity covers the image, the loader information and every
            // module BootInfo can hold.
            let _ = kept.push(entry);
        }
        let low_usable = boot.usable_memory().filter_map(|r| {
            let clipped = r.start.max(BIOS_DATA_END)..r.end.min(LOW_MEMORY_END);
            (clipped.start < clipped.end).then_some(clipped)
        });
        let low = PhysicalFrames::new(low_usable, kept.iter().map(|(_, r)| r.clone()))?;
        Ok(Self { frames, low, kept })
    }

    /// Takes the whole frames covering `start..start + len` out of the free
    /// memory, or says why not (changing nothing).
    fn claim(&mut self, start: u64, len: u64) -> Result<(), ClaimError> {
        let end = start
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(ClaimError::BadRange { start, len })?;
        if end > IDENTITY_MAPPED_END {
            return Err(ClaimError::BeyondIdentityMap { start, len });
        }
        if let Some((kept, at)) = self
            .kept
            .iter()
            .find(|(_, at)| at.start < end && start < at.end)
        {
            return Err(ClaimError::Overlaps {
                start,
                len,
                kept: kept.clone(),
                at: at.clone(),
            });
        }
        let whole = frames_of(&(start..end));
        let low = whole.start..whole.end.min(LOW_MEMORY_END);
        let high = whole.start.max(LOW_MEMORY_END)..whole.end;
        let not_free = |first| ClaimError::NotFree { start, len, first };
        // Check both parts before taking either, so a refusal changes nothing.
        if low.start < low.end {
            if let Some(first) = self.low.first_unavailable(low.clone()) {
                return Err(not_free(first));
            }
        }
        if high.start < high.end {
            if let Some(first) = self.frames.first_unavailable(high.clone()) {
                return Err(not_free(first));
            }
        }
        if low.start < low.end {
            self.low.take(low).map_err(not_free)?;
        }
        if high.start < high.end {
            self.frames.take(high).map_err(not_free)?;
        }
        Ok(())
    }

    /// Gives up the module kept at `range`: its frames become free.
    fn release_module(&mut self, range: &Range<u64>) -> Result<(), FrameError> {
        let Some(index) = self
            .kept
            .iter()
            .position(|(kept, at)| matches!(kept, Kept::Module(_)) && at == range)
        else {
            return Ok(());
        };
        self.kept.swap_remove(index);
        // Only frames no other kept range touches are freed; below 1 MiB
        // they become claimable, above it allocatable.
        let whole = frames_of(range);
        let mut at = whole.start;
        while at < whole.end {
            let frame = at..at + FRAME_SIZE;
            let shared = self
                .kept
                .iter()
                .any(|(_, k)| k.start < frame.end && frame.start < k.end);
            if !shared {
                if at < LOW_MEMORY_END {
                    if at >= BIOS_DATA_END {
                        self.low.free(at, FRAME_SIZE)?;
                    }
                } else if at < IDENTITY_MAPPED_END {
                    self.frames.free(at, FRAME_SIZE)?;
                }
            }
            at += FRAME_SIZE;
        }
        Ok(())
    }
}

/// The image's free host memory, handed out as owned objects.
#[derive(Debug)]
pub struct HostMemory {
    ledger: Ledger,
}

impl HostMemory {
    /// Takes ownership of the free memory `boot` describes: usable RAM minus
    /// its reserved ranges (low memory, the image, the loader information,
    /// the modules), clipped to the identity map.
    ///
    /// # Safety
    /// Every usable range of `boot` below [`IDENTITY_MAPPED_END`] must be
    /// identity-mapped, writable RAM that nothing else uses except the
    /// reserved ranges `boot` names, and only one `HostMemory` may exist.
    pub unsafe fn new(boot: &BootInfo) -> Result<Self, FrameError> {
        Ok(Self {
            ledger: Ledger::new(boot)?,
        })
    }

    /// The host-physical range `start..start + len`, which must be free RAM
    /// clear of everything the image keeps, as a block the caller owns for
    /// the rest of the run (its bytes are left as they are). The whole
    /// frames it touches are taken.
    pub fn claim(&mut self, start: u64, len: u64) -> Result<HostRam, ClaimError> {
        self.ledger.claim(start, len)?;
        // SAFETY: the ledger checked that the range is identity-mapped RAM
        // (below IDENTITY_MAPPED_END, free in the firmware's map) that no
        // allocation, earlier claim or kept range (image, loader
        // information, modules) covers, and took its frames for good, so
        // this block is its only owner; `claim` refused a wrapping range.
        Ok(unsafe { HostRam::new(start as *mut u8, len as usize) })
    }

    /// Copies `module` into newly allocated memory that does not overlap
    /// `avoid` and gives up the module's own memory, so that it can be
    /// claimed. Returns the copy; [`BootModule::bytes`] returns it from now
    /// on too. A module moved before is not copied again.
    ///
    /// Refused with [`MoveError::Borrowed`] once the module's bytes have
    /// been borrowed: that memory stays the module's.
    pub fn move_module(
        &mut self,
        module: &BootModule,
        avoid: Range<u64>,
    ) -> Result<&'static [u8], MoveError> {
        if let Some(bytes) = module.moved_bytes() {
            return Ok(bytes);
        }
        if module.is_borrowed() {
            return Err(MoveError::Borrowed { name: module.name });
        }
        let len = module.range.end.saturating_sub(module.range.start);
        let size = len.div_ceil(FRAME_SIZE).max(1) * FRAME_SIZE;
        let to = self
            .ledger
            .frames
            .allocate_outside(size, FRAME_SIZE, avoid)
            .map_err(MoveError::Memory)?;
        // SAFETY: the source is the module's reserved, identity-mapped
        // memory, which nothing writes; the destination was just allocated
        // (identity-mapped RAM owned by nobody else) and cannot overlap the
        // source, which is reserved; both are `len` bytes long.
        unsafe {
            core::ptr::copy_nonoverlapping(
                module.range.start as *const u8,
                to as *mut u8,
                len as usize,
            );
        }
        if !module.record_move(to) {
            // Borrowed meanwhile: keep the module where it is.
            let _ = self.ledger.frames.free(to, size);
            return Err(MoveError::Borrowed { name: module.name });
        }
        self.ledger
            .release_module(&module.range)
            .map_err(MoveError::Memory)?;
        Ok(module.moved_bytes().unwrap_or(&[]))
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.ledger.frames.free_bytes()
    }

    /// A zeroed page the caller owns for the rest of the run.
    // Out of line: inlined, the allocation and the zeroing were repeated
    // for every page an image takes.
    #[inline(never)]
    pub fn page(&mut self) -> Result<&'static mut Page4K, FrameError> {
        let address = self.ledger.frames.allocate_frame()?;
        // SAFETY: the frame is identity-mapped RAM that was free (contract
        // of `new`) and is now taken out of the free list for good, so this
        // is the only reference to it; Page4K is a plain byte array.
        let page = unsafe { &mut *(address as *mut Page4K) };
        page.0.fill(0);
        Ok(page)
    }

    /// `size` zeroed bytes (rounded up to whole frames) owned for the rest of
    /// the run, for device buffers.
    pub fn bytes(&mut self, size: usize) -> Result<&'static mut [u8], FrameError> {
        let frames = (size as u64).div_ceil(FRAME_SIZE).max(1) * FRAME_SIZE;
        let address = self.ledger.frames.allocate(frames, FRAME_SIZE)?;
        // SAFETY: as for `page`: identity-mapped, free, now owned only by the
        // returned slice, which is zeroed before it is handed out.
        unsafe {
            core::ptr::write_bytes(address as *mut u8, 0, frames as usize);
            Ok(core::slice::from_raw_parts_mut(address as *mut u8, size))
        }
    }

    /// `size` zeroed bytes aligned to `align`, as a block of guest RAM.
    pub fn ram(&mut self, size: u64, align: u64) -> Result<HostRam, FrameError> {
        let address = self.ledger.frames.allocate(size, align)?;
        // SAFETY: as for `page`: identity-mapped, free, now owned only by
        // the returned block; `allocate` checked that the range does not
        // wrap. Zeroing first means a guest never sees old host data.
        unsafe {
            core::ptr::write_bytes(address as *mut u8, 0, size as usize);
            Ok(HostRam::new(address as *mut u8, size as usize))
        }
    }
}

impl FrameAllocator for HostMemory {
    fn allocate_zeroed(&mut self) -> Option<u64> {
        self.page().ok().map(|page| page.phys_addr())
    }

    fn frame(&self, host_physical: u64) -> Option<&EptFrame> {
        let usable = host_physical.is_multiple_of(FRAME_SIZE)
            && host_physical.checked_add(FRAME_SIZE)? <= IDENTITY_MAPPED_END;
        // SAFETY: the EPT tables only ask for frames they obtained from
        // `allocate_zeroed` (the trait's contract), which are identity-mapped
        // pages owned by them; EptFrame is a page of atomics, valid for any
        // bit pattern.
        usable.then(|| unsafe { &*(host_physical as *const EptFrame) })
    }

    fn free(&mut self, host_physical: u64) {
        // A failed free (double free, full list) leaks the frame rather than
        // handing it out twice.
        if let Err(e) = self.ledger.frames.free(host_physical, FRAME_SIZE) {
            log::warn!(
                "EPT frame {host_physical:#x} not returned: {}",
                crate::boot::ErrorReport(&e)
            );
        }
    }
}

impl HostMemory {
    /// Enters VMX operation on this processor, with the VMXON region taken
    /// from this memory. Safe because a `HostMemory` exists only inside the
    /// image runtime, which runs at CPL 0 in 64-bit mode on an identity map
    /// with a loaded TR; a second call fails with VMXON's own error.
    // Out of line: inlined into an image's main, the capabilities it reads
    // were kept in scattered registers and stored field by field.
    #[inline(never)]
    pub fn enable_vmx(&mut self) -> Result<crate::vmx::Vmx, EnableVmxError> {
        let region = self.page().map_err(EnableVmxError::Memory)?;
        // SAFETY: the runtime guarantees CPL 0, 64-bit mode and paging with
        // NE set; the region is an owned identity-mapped page.
        unsafe { crate::vmx::Vmx::enable(region) }.map_err(EnableVmxError::Vmx)
    }

    /// The host state of the image's processor for a VMCS: the runtime's
    /// GDT, TSS, IDT, control registers and the run loop's exit point.
    pub fn host_state(&self) -> crate::vmx::HostState {
        // SAFETY: inside the image runtime (a HostMemory exists): CPL 0,
        // 64-bit mode, TR loaded from the runtime's GDT.
        unsafe { crate::vmx::HostState::from_current_cpu() }
    }
}

/// Why VMX operation could not be entered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnableVmxError {
    /// No page for the VMXON region.
    Memory(FrameError),
    /// The processor refused (no VMX, disabled by firmware, VMXON failed).
    Vmx(crate::vmx::VmxError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{MemoryKind, MemoryRegion};

    const MIB: u64 = 1 << 20;

    /// A PC with 256 MiB: the image at 1 MiB, the loader's information and
    /// two modules above it, as GRUB lays them out.
    fn boot() -> BootInfo {
        let mut boot = BootInfo {
            image: MIB..MIB + 0x8_0000,
            loader_info: 70 * MIB + 0x800..70 * MIB + 0x1800,
            ..BootInfo::default()
        };
        for (start, end, kind) in [
            (0, 0x9_fc00, MemoryKind::Usable),
            (0x9_fc00, 0xa_0000, MemoryKind::Reserved),
            (MIB, 256 * MIB - 0x1_0000, MemoryKind::Usable),
            (256 * MIB - 0x1_0000, 256 * MIB, MemoryKind::AcpiReclaimable),
        ] {
            boot.memory_map
                .push(MemoryRegion {
                    range: start..end,
                    kind,
                })
                .unwrap();
        }
        for (range, name) in [
            // Shares its first frame with the end of the image.
            (MIB + 0x8_0000 - 0x10..67 * MIB + 0x123, "vmlinux"),
            (67 * MIB + 0x1000..70 * MIB, "initramfs"),
        ] {
            boot.modules
                .push(BootModule {
                    range,
                    name,
                    slot: MAX_MODULES,
                })
                .unwrap();
        }
        boot
    }

    #[test]
    fn claims_refuse_what_the_image_keeps_naming_it() {
        let mut ledger = Ledger::new(&boot()).unwrap();
        let overlap = |ledger: &mut Ledger, start, len| match ledger.claim(start, len) {
            Err(ClaimError::Overlaps { kept, .. }) => Some(kept),
            _ => None,
        };
        assert_eq!(overlap(&mut ledger, MIB + 0x1000, 0x10), Some(Kept::Image));
        assert_eq!(
            overlap(&mut ledger, 16 * MIB, 40 * MIB),
            Some(Kept::Module("vmlinux"))
        );
        assert_eq!(
            overlap(&mut ledger, 70 * MIB, 0x1000),
            Some(Kept::LoaderInfo)
        );
        assert_eq!(
            ledger.claim(0, 0x1000),
            Err(ClaimError::NotFree {
                start: 0,
                len: 0x1000,
                first: 0
            }),
            "the BIOS data page"
        );
        assert_eq!(
            ledger.claim(0x9_f000, 0x2000),
            Err(ClaimError::NotFree {
                start: 0x9_f000,
                len: 0x2000,
                first: 0x9_f000
            }),
            "the EBDA's partial frame and the hole"
        );
        assert_eq!(
            ledger.claim(4 << 30, 0x1000),
            Err(ClaimError::BeyondIdentityMap {
                start: 4 << 30,
                len: 0x1000
            })
        );
        assert_eq!(
            ledger.claim(u64::MAX, 2),
            Err(ClaimError::BadRange {
                start: u64::MAX,
                len: 2
            })
        );
        assert!(matches!(
            ledger.claim(0x1000, 0),
            Err(ClaimError::BadRange { .. })
        ));
    }

    #[test]
    fn claims_take_free_frames_once_in_low_and_high_memory() {
        let mut ledger = Ledger::new(&boot()).unwrap();
        let free = ledger.frames.free_bytes();
        // Low memory: claimable, never allocatable.
        ledger.claim(0x7000, 0x1000).unwrap();
        ledger.claim(0x2_0000, 0x800).unwrap();
        assert_eq!(ledger.frames.free_bytes(), free);
        assert!(matches!(
            ledger.claim(0x7800, 0x10),
            Err(ClaimError::NotFree { first: 0x7000, .. })
        ));
        // Above 1 MiB: the frames leave the allocator too.
        ledger.claim(100 * MIB + 0x10, 2 * MIB).unwrap();
        assert_eq!(ledger.frames.free_bytes(), free - 2 * MIB - 0x1000);
        // Straddling 1 MiB into the image is refused as the image.
        assert!(matches!(
            ledger.claim(0xf_f000, 0x2000),
            Err(ClaimError::Overlaps {
                kept: Kept::Image,
                ..
            })
        ));
        // An allocation never lands on a claim, and a claim never on an
        // allocation.
        let page = ledger.frames.allocate_frame().unwrap();
        assert!(!(100 * MIB..102 * MIB + 0x1000).contains(&page));
        assert!(matches!(
            ledger.claim(page, 1),
            Err(ClaimError::NotFree { first, .. }) if first == page
        ));
        // A refused claim that straddles free and taken memory takes nothing.
        let before = ledger.frames.free_bytes();
        assert!(ledger.claim(99 * MIB, 2 * MIB).is_err());
        assert_eq!(ledger.frames.free_bytes(), before);
    }

    #[test]
    fn a_released_module_can_be_claimed_except_frames_it_shares() {
        let boot = boot();
        let mut ledger = Ledger::new(&boot).unwrap();
        let vmlinux = boot.module("vmlinux").unwrap();
        ledger.release_module(&vmlinux.range).unwrap();
        // The kernel's destination inside the module's old memory.
        ledger.claim(16 * MIB, 51 * MIB).unwrap();
        // The frame shared with the image stays the image's.
        let shared = (vmlinux.range.start & !(FRAME_SIZE - 1))..vmlinux.range.start;
        assert!(matches!(
            ledger.claim(shared.start, 0x1000),
            Err(ClaimError::Overlaps {
                kept: Kept::Image,
                ..
            })
        ));
        assert!(ledger
            .frames
            .first_unavailable(shared.start..shared.start + FRAME_SIZE)
            .is_some());
        // The other module is still kept.
        assert!(matches!(
            ledger.claim(68 * MIB, 0x1000),
            Err(ClaimError::Overlaps {
                kept: Kept::Module("initramfs"),
                ..
            })
        ));
        // Releasing again changes nothing.
        let free = ledger.frames.free_bytes();
        ledger.release_module(&vmlinux.range).unwrap();
        assert_eq!(ledger.frames.free_bytes(), free);
    }

    #[test]
    fn copies_made_outside_a_destination_stay_out_of_it() {
        let mut ledger = Ledger::new(&boot()).unwrap();
        let destination = 0..128 * MIB;
        let size = 66 * MIB;
        let copy = ledger
            .frames
            .allocate_outside(size, FRAME_SIZE, destination.clone())
            .unwrap();
        assert!(copy >= destination.end);
        assert!(copy + size <= 256 * MIB - 0x1_0000);
    }
}
