//! The image's host-physical memory: which frames are free
//! ([`PhysicalFrames`]) and safe ownership of them ([`HostMemory`]).
//!
//! The boot runtime builds one [`HostMemory`] from the loader's memory map
//! minus everything reserved, and hands it to the image's `main`. Because the
//! image runs on an identity map of the first 4 GiB, a frame's physical
//! address is also its address, so memory can be handed out as owned Rust
//! objects: VMCS and bitmap pages, EPT table frames, guest RAM.

mod frames;

pub use frames::{FrameError, PhysicalFrames, FRAME_SIZE};

use crate::{
    ept::{EptFrame, FrameAllocator, HostRam},
    vmx::Page4K,
};

/// End of the boot identity map: no memory above it is handed out.
pub const IDENTITY_MAPPED_END: u64 = 4 << 30;
/// How many disjoint free ranges [`HostMemory`] tracks.
pub const MAX_FREE_RANGES: usize = 64;

/// The image's free host memory, handed out as owned objects.
#[derive(Debug)]
pub struct HostMemory {
    frames: PhysicalFrames<MAX_FREE_RANGES>,
}

impl HostMemory {
    /// Takes ownership of the free memory of `frames`, clipped to the
    /// identity map.
    ///
    /// # Safety
    /// Every free range of `frames` below [`IDENTITY_MAPPED_END`] must be
    /// identity-mapped, writable RAM that nothing else uses, and only one
    /// `HostMemory` may exist.
    pub unsafe fn new(mut frames: PhysicalFrames<MAX_FREE_RANGES>) -> Result<Self, FrameError> {
        frames.reserve(IDENTITY_MAPPED_END..u64::MAX)?;
        Ok(Self { frames })
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.frames.free_bytes()
    }

    /// A zeroed page the caller owns for the rest of the run.
    pub fn page(&mut self) -> Result<&'static mut Page4K, FrameError> {
        let address = self.frames.allocate_frame()?;
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
        let address = self.frames.allocate(frames, FRAME_SIZE)?;
        // SAFETY: as for `page`: identity-mapped, free, now owned only by the
        // returned slice, which is zeroed before it is handed out.
        unsafe {
            core::ptr::write_bytes(address as *mut u8, 0, frames as usize);
            Ok(core::slice::from_raw_parts_mut(address as *mut u8, size))
        }
    }

    /// `size` zeroed bytes aligned to `align`, as a block of guest RAM.
    pub fn ram(&mut self, size: u64, align: u64) -> Result<HostRam, FrameError> {
        let address = self.frames.allocate(size, align)?;
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
        if let Err(e) = self.frames.free(host_physical, FRAME_SIZE) {
            log::warn!("EPT frame {host_physical:#x} not returned: {e:?}");
        }
    }
}

impl HostMemory {
    /// Enters VMX operation on this processor, with the VMXON region taken
    /// from this memory. Safe because a `HostMemory` exists only inside the
    /// image runtime, which runs at CPL 0 in 64-bit mode on an identity map
    /// with a loaded TR; a second call fails with VMXON's own error.
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
