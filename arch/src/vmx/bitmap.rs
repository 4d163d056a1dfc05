//! MSR and I/O bitmaps over caller-provided pages, VPID allocation, and the
//! VMX-preemption timer.

use super::caps::VmxCapabilities;
use super::vmcs::{Control16, Control64, Guest32, VmcsAccess, VmcsError, VmcsExt};
use super::Page4K;

/// An MSR the bitmap cannot describe (outside 0..=0x1FFF and
/// 0xC000_0000..=0xC000_1FFF): accesses to it always exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrOutOfRange(pub u32);

/// The MSR bitmap (SDM Vol. 3C 25.6.9): read-low, read-high, write-low and
/// write-high 1-KiB quarters of one page. A set bit makes the access exit.
pub struct MsrBitmap {
    page: &'static mut Page4K,
}

impl core::fmt::Debug for MsrBitmap {
    /// The bitmap's address (its 4 KiB of bits are left out).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MsrBitmap")
            .field("address", &self.phys_addr())
            .finish_non_exhaustive()
    }
}

impl MsrBitmap {
    /// A bitmap on `page` intercepting every access.
    pub fn intercept_all(page: &'static mut Page4K) -> Self {
        page.0.fill(0xff);
        MsrBitmap { page }
    }

    /// A bitmap on `page` passing every access through.
    pub fn pass_through(page: &'static mut Page4K) -> Self {
        page.0.fill(0);
        MsrBitmap { page }
    }

    fn index(msr: u32) -> Result<usize, MsrOutOfRange> {
        match msr {
            0..=0x1fff => Ok(msr as usize),
            0xc000_0000..=0xc000_1fff => Ok(0x2000 + (msr - 0xc000_0000) as usize),
            _ => Err(MsrOutOfRange(msr)),
        }
    }

    fn set_bit(&mut self, base: usize, index: usize, on: bool) {
        // base is 0 (reads) or 0x4000 bits (writes); index < 0x4000.
        let bit = base + index;
        let byte = &mut self.page.0[bit / 8];
        if on {
            *byte |= 1 << (bit % 8);
        } else {
            *byte &= !(1 << (bit % 8));
        }
    }

    /// Makes RDMSR of `msr` exit (`true`) or not.
    pub fn intercept_read(&mut self, msr: u32, on: bool) -> Result<(), MsrOutOfRange> {
        let i = Self::index(msr)?;
        self.set_bit(0, i, on);
        Ok(())
    }

    /// Makes WRMSR of `msr` exit (`true`) or not.
    pub fn intercept_write(&mut self, msr: u32, on: bool) -> Result<(), MsrOutOfRange> {
        let i = Self::index(msr)?;
        self.set_bit(0x4000, i, on);
        Ok(())
    }

    /// Whether RDMSR (`write` false) or WRMSR of `msr` exits.
    pub fn intercepts(&self, msr: u32, write: bool) -> bool {
        Self::index(msr).map_or(true, |i| {
            let bit = if write { 0x4000 } else { 0 } + i;
            self.page.0[bit / 8] & (1 << (bit % 8)) != 0
        })
    }

    /// The bitmap page.
    pub fn as_bytes(&self) -> &[u8; 4096] {
        &self.page.0
    }

    /// Physical address for the MSR-bitmap field.
    pub fn phys_addr(&self) -> u64 {
        self.page.phys_addr()
    }

    /// Writes the MSR-bitmap address (enable "use MSR bitmaps" in the controls).
    pub fn write_to(&self, vmcs: &mut (impl VmcsAccess + ?Sized)) -> Result<(), VmcsError> {
        vmcs.write(Control64::MsrBitmap, self.phys_addr())
    }
}

/// The I/O bitmaps A (ports 0-0x7FFF) and B (0x8000-0xFFFF) (SDM 25.6.4).
pub struct IoBitmap {
    a: &'static mut Page4K,
    b: &'static mut Page4K,
}

impl IoBitmap {
    /// Bitmaps on two pages, intercepting every port.
    pub fn intercept_all(a: &'static mut Page4K, b: &'static mut Page4K) -> Self {
        a.0.fill(0xff);
        b.0.fill(0xff);
        IoBitmap { a, b }
    }

    /// Bitmaps on two pages, passing every port through.
    pub fn pass_through(a: &'static mut Page4K, b: &'static mut Page4K) -> Self {
        a.0.fill(0);
        b.0.fill(0);
        IoBitmap { a, b }
    }

    /// Makes accesses to `ports` exit (`true`) or not. An access of several
    /// bytes exits if any byte's port is intercepted.
    pub fn intercept(&mut self, ports: core::ops::RangeInclusive<u16>, on: bool) {
        for port in ports {
            let page = if port < 0x8000 {
                &mut *self.a
            } else {
                &mut *self.b
            };
            let bit = (port & 0x7fff) as usize;
            if on {
                page.0[bit / 8] |= 1 << (bit % 8);
            } else {
                page.0[bit / 8] &= !(1 << (bit % 8));
            }
        }
    }

    /// Whether an access to `port` exits.
    pub fn intercepts(&self, port: u16) -> bool {
        let page = if port < 0x8000 { &*self.a } else { &*self.b };
        let bit = (port & 0x7fff) as usize;
        page.0[bit / 8] & (1 << (bit % 8)) != 0
    }

    /// Writes both bitmap addresses (enable "use I/O bitmaps" in the controls).
    pub fn write_to(&self, vmcs: &mut (impl VmcsAccess + ?Sized)) -> Result<(), VmcsError> {
        vmcs.write(Control64::IoBitmapA, self.a.phys_addr())?;
        vmcs.write(Control64::IoBitmapB, self.b.phys_addr())
    }
}

/// Hands out VPIDs 1..=0xFFFF (0 belongs to VMX root operation).
pub struct VpidAllocator {
    used: [u64; 1024],
}

impl Default for VpidAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl VpidAllocator {
    /// All VPIDs free.
    pub const fn new() -> Self {
        let mut used = [0; 1024];
        used[0] = 1; // VPID 0 is never handed out.
        VpidAllocator { used }
    }

    /// The lowest free VPID, or `None` when all 65535 are taken.
    pub fn allocate(&mut self) -> Option<u16> {
        let (word, bits) = self
            .used
            .iter_mut()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)?;
        let bit = bits.trailing_ones();
        *bits |= 1 << bit;
        Some((word * 64) as u16 + bit as u16)
    }

    /// Returns `vpid` to the pool (0 is ignored).
    pub fn free(&mut self, vpid: u16) {
        if vpid != 0 {
            self.used[vpid as usize / 64] &= !(1 << (vpid % 64));
        }
    }
}

/// Writes `vpid` into the VMCS (enable "enable VPID" in the controls).
pub fn assign_vpid(vmcs: &mut (impl VmcsAccess + ?Sized), vpid: u16) -> Result<(), VmcsError> {
    vmcs.write(Control16::Vpid, vpid)
}

/// The VMX-preemption timer value that expires after about `tsc_ticks` TSC
/// ticks: the timer counts down once every 2^rate ticks (IA32_VMX_MISC
/// bits 4:0); saturates at `u32::MAX`.
pub fn preemption_timer_value(caps: &VmxCapabilities, tsc_ticks: u64) -> u32 {
    let v = tsc_ticks >> caps.misc.preemption_timer_rate;
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Arms the preemption timer for about `tsc_ticks` TSC ticks (enable the
/// "activate VMX-preemption timer" pin control).
pub fn arm_preemption_timer(
    vmcs: &mut (impl VmcsAccess + ?Sized),
    caps: &VmxCapabilities,
    tsc_ticks: u64,
) -> Result<(), VmcsError> {
    vmcs.write(
        Guest32::PreemptionTimerValue,
        preemption_timer_value(caps, tsc_ticks),
    )
}
