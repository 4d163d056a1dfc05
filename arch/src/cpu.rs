//! Identification of the processor the image runs on: vendor, VMX support,
//! IA32_FEATURE_CONTROL and the raw VMX capability MSRs.

use heapless::Vec;

/// IA32_FEATURE_CONTROL.
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// IA32_VMX_BASIC, the first VMX capability MSR.
pub const IA32_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_VMFUNC, the last VMX capability MSR.
pub const IA32_VMX_VMFUNC: u32 = 0x491;

/// The processor vendor string from CPUID leaf 0 (12 bytes).
pub fn vendor() -> [u8; 12] {
    let leaf = core::arch::x86_64::__cpuid(0);
    let mut vendor = [0; 12];
    vendor[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf.ecx.to_le_bytes());
    vendor
}

/// CPUID of `leaf` and `subleaf`: EAX, EBX, ECX, EDX.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Whether CPUID reports VMX (leaf 1, ECX bit 5).
pub fn has_vmx() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 5) != 0
}

/// IA32_FEATURE_CONTROL, or `None` when the CPU has no VMX (the MSR may not
/// exist then).
pub fn feature_control() -> Option<u64> {
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU that reports VMX;
    // reading it has no side effect.
    has_vmx().then(|| unsafe { x86::msr::rdmsr(IA32_FEATURE_CONTROL) })
}

/// The VMX capability MSRs this CPU implements, as `(index, value)` pairs in
/// index order; empty without VMX.
///
/// IA32_VMX_BASIC through IA32_VMX_VMCS_ENUM always exist with VMX; the
/// secondary controls MSR when the primary controls may set bit 31; the
/// EPT/VPID capability MSR when the secondary controls may enable EPT or
/// VPID; the TRUE_ control MSRs when IA32_VMX_BASIC bit 55 is set; the VMFUNC
/// MSR when the secondary controls may enable VM functions (SDM Vol. 3D A.1).
pub fn vmx_capability_msrs() -> Vec<(u32, u64), 18> {
    let mut msrs = Vec::new();
    if !has_vmx() {
        return msrs;
    }
    // SAFETY: each MSR is read only when the rules above say it exists;
    // reading capability MSRs has no side effect.
    let read = |index: u32| unsafe { x86::msr::rdmsr(index) };
    let basic = read(IA32_VMX_BASIC);
    let procbased = read(0x482);
    let secondary = (procbased >> 63) & 1 != 0;
    let secondary_allowed1 = if secondary { read(0x48B) >> 32 } else { 0 };
    for index in IA32_VMX_BASIC..=IA32_VMX_VMFUNC {
        let exists = match index {
            0x480..=0x48A => true,
            0x48B => secondary,
            0x48C => secondary_allowed1 & ((1 << 1) | (1 << 5)) != 0,
            0x48D..=0x490 => (basic >> 55) & 1 != 0,
            _ => secondary_allowed1 & (1 << 13) != 0,
        };
        if exists {
            // Capacity is exactly the number of indices in the loop.
            let _ = msrs.push((index, read(index)));
        }
    }
    msrs
}

/// The time-stamp counter.
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; CR4.TSD is clear at CPL 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The TSC frequency in Hz: from CPUID leaf 0x15 when it names the crystal,
/// otherwise measured against 10 ms of PIT channel 2 (gated through port
/// 0x61, its output polled), as firmware and operating systems do.
pub fn tsc_hz() -> u64 {
    let leaf0 = core::arch::x86_64::__cpuid(0);
    if leaf0.eax >= 0x15 {
        let l15 = core::arch::x86_64::__cpuid(0x15);
        if l15.eax != 0 && l15.ebx != 0 && l15.ecx != 0 {
            return u64::from(l15.ecx) * u64::from(l15.ebx) / u64::from(l15.eax);
        }
    }
    calibrate_against_pit()
}

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 10 ms of PIT ticks.
const CALIBRATION_TICKS: u64 = PIT_HZ / 100;

fn calibrate_against_pit() -> u64 {
    use x86::io::{inb, outb};
    // SAFETY: the image owns the PIT and port 0x61 during boot; channel 2
    // drives only the (gated off) speaker, and the sequence restores the
    // speaker bits it changes.
    unsafe {
        let speaker = inb(0x61);
        // Gate on, speaker off; channel 2, lobyte/hibyte, mode 0.
        outb(0x61, (speaker & !0x02) | 0x01);
        outb(0x43, 0xB0);
        outb(0x42, (CALIBRATION_TICKS & 0xFF) as u8);
        outb(0x42, (CALIBRATION_TICKS >> 8) as u8);
        let start = tsc();
        // OUT2 (bit 5) rises when the count reaches zero; bounded wait.
        let mut polls = 0u32;
        while inb(0x61) & 0x20 == 0 && polls < 50_000_000 {
            polls += 1;
        }
        let elapsed = tsc().wrapping_sub(start);
        outb(0x61, speaker);
        elapsed * PIT_HZ / CALIBRATION_TICKS
    }
}

/// Masks every line of the legacy 8259A pair, so that no host device
/// interrupt reaches the processor (a hypervisor image polls its devices).
pub fn mask_legacy_pic() {
    // SAFETY: writes the interrupt mask registers of the PIC pair, which the
    // image owns; no memory is touched.
    unsafe {
        x86::io::outb(0x21, 0xFF);
        x86::io::outb(0xA1, 0xFF);
    }
}
