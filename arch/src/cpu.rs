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

/// CR0.MP: WAIT/FWAIT honour CR0.TS.
const CR0_MP: u64 = 1 << 1;
/// CR0.EM: x87 and SSE instructions raise #NM/#UD.
const CR0_EM: u64 = 1 << 2;
/// CR0.TS: the next x87/SSE instruction raises #NM.
const CR0_TS: u64 = 1 << 3;
/// CR4.OSFXSR: SSE instructions and FXSAVE/FXRSTOR are enabled.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT: unmasked SIMD floating-point exceptions raise #XM.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;

/// Lets the image execute the SSE moves of [`xmm_lows`] and [`load_xmm_lows`]:
/// sets CR4.OSFXSR and CR4.OSXMMEXCPT and CR0.MP, clears CR0.EM and CR0.TS
/// where they differ (SDM Vol. 3A, 13.1.3). Only the host's control
/// registers change; a guest's come from its VMCS. Called once at boot,
/// before the host state for VM exits is read from the running CPU.
pub fn enable_sse_moves() {
    // SAFETY: at CPL 0 during boot. Every x86-64 processor has FXSR and
    // SSE2, so the CR4 bits are not reserved; the image is compiled
    // soft-float, so no code relies on x87/SSE faulting, and no CR0 bit
    // that memory access or paging depends on changes.
    unsafe {
        let cr4: u64;
        core::arch::asm!("mov {0}, cr4", out(reg) cr4, options(nostack, nomem));
        let wanted = cr4 | CR4_OSFXSR | CR4_OSXMMEXCPT;
        if wanted != cr4 {
            core::arch::asm!("mov cr4, {0}", in(reg) wanted, options(nostack));
        }
        let cr0: u64;
        core::arch::asm!("mov {0}, cr0", out(reg) cr0, options(nostack, nomem));
        let wanted = (cr0 | CR0_MP) & !(CR0_EM | CR0_TS);
        if wanted != cr0 {
            core::arch::asm!("mov cr0, {0}", in(reg) wanted, options(nostack));
        }
    }
}

/// Bits 63:0 of XMM0-XMM15 as the processor holds them now.
///
/// The image never uses XMM registers (it is compiled soft-float and saves
/// none of them across VM exits), so while an exit is handled they still hold
/// the guest's values: this reads the guest's registers. Needs
/// [`enable_sse_moves`] (done at boot).
pub fn xmm_lows() -> [u64; 16] {
    let mut lows = [0u64; 16];
    // SAFETY: MOVQ from an XMM register to memory only reads the register
    // (SSE is enabled at boot) and writes 8 bytes; the sixteen stores fill
    // exactly the 128 bytes of `lows`. The host keeps nothing in XMM
    // registers, so the values are the guest's.
    unsafe {
        core::arch::asm!(
            "movq [{0}], xmm0",
            "movq [{0} + 8], xmm1",
            "movq [{0} + 16], xmm2",
            "movq [{0} + 24], xmm3",
            "movq [{0} + 32], xmm4",
            "movq [{0} + 40], xmm5",
            "movq [{0} + 48], xmm6",
            "movq [{0} + 56], xmm7",
            "movq [{0} + 64], xmm8",
            "movq [{0} + 72], xmm9",
            "movq [{0} + 80], xmm10",
            "movq [{0} + 88], xmm11",
            "movq [{0} + 96], xmm12",
            "movq [{0} + 104], xmm13",
            "movq [{0} + 112], xmm14",
            "movq [{0} + 120], xmm15",
            in(reg) lows.as_mut_ptr(),
            options(nostack, preserves_flags)
        );
    }
    lows
}

/// For each bit `n` set in `mask`, loads `values[n]` into bits 63:0 of XMM
/// register `n` and zeroes bits 127:64, as MOVQ xmm, m64 does, so that the
/// guest finds them there after the next VM entry (see [`xmm_lows`]); the
/// other XMM registers keep their values.
pub fn load_xmm_lows(mask: u16, values: &[u64; 16]) {
    macro_rules! load_sequence {
        ($($n:literal: $reg:literal),*) => {
            concat!($("bt {mask:e}, ", $n, "\n", "jnc 2f\n",
                      "movq ", $reg, ", [{values} + 8 * ", $n, "]\n", "2:\n"),*)
        };
    }
    macro_rules! load {
        ($($clobber:tt)*) => {
            // SAFETY: each MOVQ reads 8 bytes of `values` (index 0-15) and
            // zero-extends them into one XMM register, touching nothing
            // else; BT changes only flags, which are not preserved. Where
            // the compiler may use XMM registers (host builds with SSE) all
            // sixteen are declared clobbered; the image, compiled soft-float,
            // has no XMM register class and keeps nothing in them.
            unsafe {
                core::arch::asm!(
                    load_sequence!(
                        0: "xmm0", 1: "xmm1", 2: "xmm2", 3: "xmm3", 4: "xmm4", 5: "xmm5",
                        6: "xmm6", 7: "xmm7", 8: "xmm8", 9: "xmm9", 10: "xmm10", 11: "xmm11",
                        12: "xmm12", 13: "xmm13", 14: "xmm14", 15: "xmm15"
                    ),
                    mask = in(reg) u32::from(mask),
                    values = in(reg) values.as_ptr(),
                    $($clobber)*
                    options(nostack, readonly)
                )
            }
        };
    }
    #[cfg(target_feature = "sse")]
    load!(
        out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
        out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
        out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _,
        out("xmm15") _,
    );
    #[cfg(not(target_feature = "sse"))]
    load!();
}

#[cfg(test)]
mod xmm_tests {
    use super::*;

    /// Bits 63:0 of XMM register `n`, through [`xmm_lows`].
    fn xmm_low(n: u8) -> u64 {
        xmm_lows()[usize::from(n)]
    }

    /// Loads `value` into XMM register `n` alone, through [`load_xmm_lows`].
    fn load_xmm_low(n: u8, value: u64) {
        let mut values = [0; 16];
        values[usize::from(n)] = value;
        load_xmm_lows(1 << n, &values);
    }

    #[test]
    fn xmm_low_halves_read_back_what_was_loaded() {
        // The host test process has SSE enabled. Each register gets its own
        // value, read back at once, with the upper half zeroed by the load.
        for n in 0..16u8 {
            let value = 0x0123_4567_89ab_cdef_u64.rotate_left(u32::from(n) * 4) ^ u64::from(n);
            load_xmm_low(n, value);
            assert_eq!(xmm_low(n), value, "xmm{n}");
        }
        // All sixteen at once, each where its number says.
        let lows = xmm_lows();
        for n in 0..16u8 {
            let value = 0x0123_4567_89ab_cdef_u64.rotate_left(u32::from(n) * 4) ^ u64::from(n);
            assert_eq!(lows[usize::from(n)], value, "xmm{n}");
        }
    }

    #[test]
    fn masked_loads_leave_the_other_registers_alone() {
        load_xmm_low(3, 33);
        load_xmm_low(12, 1212);
        let values: [u64; 16] = core::array::from_fn(|n| 100 + n as u64);
        load_xmm_lows((1 << 0) | (1 << 12) | (1 << 15), &values);
        let lows = xmm_lows();
        assert_eq!((lows[0], lows[3], lows[12], lows[15]), (100, 33, 112, 115));
    }

    #[test]
    fn loading_the_low_half_zeroes_the_upper_half() {
        let upper: u64;
        // SAFETY: sets every bit of XMM5, declared clobbered.
        unsafe { core::arch::asm!("pcmpeqd xmm5, xmm5", out("xmm5") _) };
        load_xmm_low(5, 0x1234);
        // SAFETY: copies bits 127:64 of XMM5 through a scratch register.
        unsafe {
            core::arch::asm!(
                "pshufd {t}, xmm5, 0xee",
                "movq {u}, {t}",
                t = out(xmm_reg) _,
                u = out(reg) upper,
            )
        };
        assert_eq!((xmm_low(5), upper), (0x1234, 0));
    }
}
