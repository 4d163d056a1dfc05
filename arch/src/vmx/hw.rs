//! The privileged instructions VMX needs, one small `unsafe fn` each.
//! Nothing here runs in host tests.

use core::arch::asm;

/// Outcome of a VMX instruction: `Err(true)` for VMfailInvalid (CF=1),
/// `Err(false)` for VMfailValid (ZF=1).
///
/// The instructions below branch on CF and ZF inside the assembly ("jc",
/// then "jz") rather than materializing both flags as bytes to test.
pub(crate) type VmxResult = Result<(), bool>;

macro_rules! vmx_op {
    ($name:ident, $insn:literal) => {
        /// Executes the instruction on the 64-bit physical address operand.
        ///
        /// # Safety
        /// VMX root operation at CPL 0; `addr` names a suitable region.
        pub(crate) unsafe fn $name(addr: u64) -> VmxResult {
            // SAFETY: guaranteed by the caller; the operand is on the stack.
            unsafe {
                asm!(concat!($insn, " qword ptr [{0}]"), "jc {1}", "jz {2}", in(reg) &addr,
                     label { return Err(true) }, label { return Err(false) }, options(nostack));
            }
            Ok(())
        }
    };
}
vmx_op!(vmxon, "vmxon");
vmx_op!(vmclear, "vmclear");
vmx_op!(vmptrld, "vmptrld");

/// VMXOFF.
///
/// # Safety
/// VMX root operation at CPL 0.
pub(crate) unsafe fn vmxoff() -> VmxResult {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("vmxoff", "jc {0}", "jz {1}", label { return Err(true) },
             label { return Err(false) }, options(nostack));
    }
    Ok(())
}

/// VMREAD of `field` from the current VMCS; `None` on failure.
///
/// # Safety
/// VMX root operation with a current VMCS.
#[inline(always)]
pub(crate) unsafe fn vmread(field: u32) -> Option<u64> {
    let value: u64;
    let ok: u8;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("vmread {0}, {1}", "seta {2}", out(reg) value, in(reg) field as u64,
             out(reg_byte) ok, options(nostack, nomem));
    }
    (ok != 0).then_some(value)
}

/// VMREAD of a field that cannot fail (no flags examined).
///
/// # Safety
/// VMX root operation with a current VMCS that has `field`.
#[inline(always)]
pub(crate) unsafe fn vmread_unchecked(field: u32) -> u64 {
    let value: u64;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("vmread {0}, {1}", out(reg) value, in(reg) field as u64,
             options(nostack, nomem));
    }
    value
}

/// VMWRITE of `value` to `field` of the current VMCS.
///
/// # Safety
/// VMX root operation with a current VMCS.
#[inline(always)]
pub(crate) unsafe fn vmwrite(field: u32, value: u64) -> bool {
    // The failure test is a branch inside the assembly (VMfailInvalid sets
    // CF, VMfailValid ZF: "not above" covers both), so each call site is the
    // VMWRITE and one jump instead of materializing and testing a flag byte.
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("vmwrite {0}, {1}", "jna {2}", in(reg) field as u64, in(reg) value,
             label { return false }, options(nostack, nomem));
    }
    true
}

/// INVEPT (`kind` 1 single-context, 2 all-context) or INVVPID (`kind` 0
/// individual address, 1 single-context, 2 all-context, 3 single-context
/// retaining globals) with the 128-bit descriptor `desc`.
///
/// # Safety
/// VMX root operation; the CPU supports the instruction and `kind`.
pub(crate) unsafe fn invalidate(ept: bool, kind: u64, desc: [u64; 2]) -> VmxResult {
    // SAFETY: guaranteed by the caller; the descriptor is on the stack.
    unsafe {
        if ept {
            asm!("invept {0}, [{1}]", "jc {2}", "jz {3}", in(reg) kind, in(reg) &desc,
                 label { return Err(true) }, label { return Err(false) }, options(nostack));
        } else {
            asm!("invvpid {0}, [{1}]", "jc {2}", "jz {3}", in(reg) kind, in(reg) &desc,
                 label { return Err(true) }, label { return Err(false) }, options(nostack));
        }
    }
    Ok(())
}

/// RDMSR.
///
/// # Safety
/// CPL 0 and `msr` implemented.
pub(crate) unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack, nomem)) };
    (hi as u64) << 32 | lo as u64
}

/// WRMSR.
///
/// # Safety
/// CPL 0, `msr` implemented and `value` valid for it.
pub(crate) unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack));
    }
}

macro_rules! read_cr {
    ($name:ident, $reg:literal) => {
        /// Reads the control register.
        ///
        /// # Safety
        /// CPL 0.
        pub(crate) unsafe fn $name() -> u64 {
            let v: u64;
            // SAFETY: guaranteed by the caller.
            unsafe { asm!(concat!("mov {0}, ", $reg), out(reg) v, options(nostack, nomem)) };
            v
        }
    };
}
read_cr!(read_cr0, "cr0");
read_cr!(read_cr3, "cr3");
read_cr!(read_cr4, "cr4");

/// Writes CR0.
///
/// # Safety
/// CPL 0; `v` keeps the running code valid.
pub(crate) unsafe fn write_cr0(v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr0, {0}", in(reg) v, options(nostack)) };
}

/// Writes CR4.
///
/// # Safety
/// CPL 0; `v` keeps the running code valid.
pub(crate) unsafe fn write_cr4(v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr4, {0}", in(reg) v, options(nostack)) };
}

/// The segment selectors ES, CS, SS, DS, FS, GS and TR.
pub(crate) fn selectors() -> [u16; 7] {
    let (es, cs, ss, ds, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: reading selectors and TR has no side effects at any CPL.
    unsafe {
        asm!("mov {0:x}, es", "mov {1:x}, cs", "mov {2:x}, ss", "mov {3:x}, ds",
             "mov {4:x}, fs", "mov {5:x}, gs", "str {6:x}",
             out(reg) es, out(reg) cs, out(reg) ss, out(reg) ds, out(reg) fs, out(reg) gs,
             out(reg) tr, options(nostack, nomem));
    }
    [es, cs, ss, ds, fs, gs, tr]
}

/// SGDT or SIDT: (base, limit).
pub(crate) fn descriptor_table(idt: bool) -> (u64, u16) {
    let mut buf = [0u8; 10];
    // SAFETY: stores 10 bytes into `buf`; allowed at any CPL without UMIP.
    unsafe {
        if idt {
            asm!("sidt [{0}]", in(reg) buf.as_mut_ptr(), options(nostack));
        } else {
            asm!("sgdt [{0}]", in(reg) buf.as_mut_ptr(), options(nostack));
        }
    }
    let limit = u16::from_le_bytes([buf[0], buf[1]]);
    let mut base = [0u8; 8];
    base.copy_from_slice(&buf[2..10]);
    (u64::from_le_bytes(base), limit)
}

/// CPUID.
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Physical-address width from CPUID 0x8000_0008 (36 when not reported).
pub(crate) fn phys_addr_bits() -> u8 {
    if cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 {
        cpuid(0x8000_0008, 0)[0] as u8
    } else {
        36
    }
}

/// The time-stamp counter.
#[inline(always)]
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (CR4.TSD is clear in ponte images).
    unsafe { core::arch::x86_64::_rdtsc() }
}
