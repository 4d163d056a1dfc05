//! Processor state the guest changes and the hypervisor must check as the
//! processor would: writes of CR0 and CR4 bits that the guest/host masks
//! catch, and the CPUID bits that follow such state.
//!
//! With the CR0/CR4 guest/host masks, a MOV to CR0 or CR4 exits only when it
//! changes a masked bit relative to the read shadow (SDM vol. 3, "CR0 and
//! CR4 Guest/Host Masks"); the processor checks every other bit itself. The
//! masks always cover the bits VMX fixes; [`Cr4Policy::guest_host_mask`]
//! adds every bit the guest's CPUID does not offer, so that setting one of
//! those exits too. [`handle_cr_access`] then does what the processor
//! does for the guest: #GP(0) for a reserved bit or an invalid combination
//! (SDM vol. 2, MOV—Move to/from Control Registers; vol. 3, "CR4"), or the
//! write, with the bits the host holds underneath kept and the guest's value
//! in the read shadow.
//!
//! [`adjust_cpuid_for_apic`] is the CPUID side of `IA32_APIC_BASE`: leaf 1
//! reports no APIC while the guest has disabled it.

use ponte_arch::vmx::{
    caps::FixedBits,
    exit::{CrAccess, CrAccessType},
    vmcs::{Control32, ControlN, GuestN},
    GuestRegisters, VmcsAccess, VmcsError, VmcsExt,
};

use crate::cpuid::{CpuidPolicy, CpuidResult};
use crate::vcpu::{inject_gp, skip_instruction};

/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.NW.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD.
pub const CR0_CD: u64 = 1 << 30;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.PCIDE.
pub const CR4_PCIDE: u64 = 1 << 17;
/// CPUID.1:EDX.APIC.
pub const CPUID1_EDX_APIC: u32 = 1 << 9;

const ENTRY_IA32E_MODE: u32 = 1 << 9;

/// Which CR4 bits the guest may set: those whose feature its CPUID offers
/// (SDM vol. 3, "Control Registers", and the CPUID feature flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr4Policy {
    allowed: u64,
}

/// `(CR4 bit, CPUID leaf, register index (0 EAX .. 3 EDX), feature bit)`.
const CR4_FEATURES: [(u32, u32, usize, u32); 25] = [
    (0, 1, 3, 1),   // VME: VME
    (1, 1, 3, 1),   // PVI: VME
    (2, 1, 3, 4),   // TSD: TSC
    (3, 1, 3, 2),   // DE: DE
    (4, 1, 3, 3),   // PSE: PSE
    (5, 1, 3, 6),   // PAE: PAE
    (6, 1, 3, 7),   // MCE: MCE
    (7, 1, 3, 13),  // PGE: PGE
    (8, 1, 3, 0),   // PCE: always (FPU, present on every processor ponte runs)
    (9, 1, 3, 24),  // OSFXSR: FXSR
    (10, 1, 3, 25), // OSXMMEXCPT: SSE
    (11, 7, 2, 2),  // UMIP: UMIP
    (12, 7, 2, 16), // LA57: LA57
    (13, 1, 2, 5),  // VMXE: VMX
    (14, 1, 2, 6),  // SMXE: SMX
    (16, 7, 1, 0),  // FSGSBASE: FSGSBASE
    (17, 1, 2, 17), // PCIDE: PCID
    (18, 1, 2, 26), // OSXSAVE: XSAVE
    (19, 7, 2, 23), // KL: Key Locker
    (20, 7, 1, 7),  // SMEP: SMEP
    (21, 7, 1, 20), // SMAP: SMAP
    (22, 7, 2, 3),  // PKE: PKU
    (23, 7, 2, 7),  // CET: CET_SS
    (24, 7, 2, 31), // PKS: PKS
    (25, 7, 3, 5),  // UINTR: UINTR
];

fn register(result: &CpuidResult, index: usize) -> u32 {
    match index {
        0 => result.eax,
        1 => result.ebx,
        2 => result.ecx,
        _ => result.edx,
    }
}

impl Cr4Policy {
    /// The CR4 bits the guest described by `cpuid` may set.
    pub fn from_cpuid<const N: usize>(cpuid: &CpuidPolicy<N>) -> Self {
        let max_basic = cpuid.lookup(0, 0).eax;
        let mut allowed = 0;
        for (bit, leaf, index, feature) in CR4_FEATURES {
            if leaf > max_basic {
                continue;
            }
            if register(&cpuid.lookup(leaf, 0), index) & (1 << feature) != 0 {
                allowed |= 1 << bit;
            }
        }
        Self { allowed }
    }

    /// The CR4 bits the guest may set.
    pub fn allowed(&self) -> u64 {
        self.allowed
    }

    /// The CR4 guest/host mask that makes every write of a bit the guest may
    /// not set exit, on top of the bits the host owns (`current`).
    pub fn guest_host_mask(&self, current: u64) -> u64 {
        current | !self.allowed
    }

    /// Adds [`Cr4Policy::guest_host_mask`] to the VMCS's CR4 guest/host mask.
    pub fn install<V: VmcsAccess + ?Sized>(&self, vmcs: &mut V) -> Result<(), VmcsError> {
        let current = vmcs.read(ControlN::Cr4GuestHostMask)?;
        vmcs.write(ControlN::Cr4GuestHostMask, self.guest_host_mask(current))
    }
}

/// What [`handle_cr_access`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrOutcome {
    /// The access was performed; RIP is past the instruction.
    Done,
    /// The processor raises #GP(0) for it: injected, RIP unchanged.
    GeneralProtection {
        /// The control register.
        cr: u8,
        /// The value the guest tried to write.
        value: u64,
    },
    /// Not an access this module performs (CR3, CR8, CLTS, LMSW, a read, or
    /// a CR0.PG change with EFER.LME set, which switches IA-32e mode): the
    /// caller decides. Nothing was changed.
    NotHandled(CrAccess),
}

/// Performs the control-register access of a CR-access exit as the
/// processor would (see the module documentation): MOV to CR0 and MOV to
/// CR4. `cr4` says which CR4 bits the guest may set; `fixed` are the
/// processor's CR0 and CR4 fixed bits in VMX operation (`VmxCapabilities`'
/// `cr0` and `cr4`); `efer` is the guest's IA32_EFER (LME and LMA decide the
/// IA-32e rules).
pub fn handle_cr_access<V: VmcsAccess + ?Sized>(
    vmcs: &mut V,
    registers: &GuestRegisters,
    access: CrAccess,
    cr4: &Cr4Policy,
    fixed: [FixedBits; 2],
    efer: u64,
) -> Result<CrOutcome, VmcsError> {
    let CrAccessType::MovTo { gpr } = access.access else {
        return Ok(CrOutcome::NotHandled(access));
    };
    let value = read_gpr(vmcs, registers, gpr)?;
    let ia32e = vmcs.read(Control32::EntryControls)? & ENTRY_IA32E_MODE != 0;
    let lma = efer & (1 << 10) != 0 || ia32e;
    let lme = efer & (1 << 8) != 0;
    let (real, shadow, mask, fixed1) = match access.cr {
        0 => (
            GuestN::Cr0,
            ControlN::Cr0ReadShadow,
            ControlN::Cr0GuestHostMask,
            fixed[0].fixed1,
        ),
        4 => (
            GuestN::Cr4,
            ControlN::Cr4ReadShadow,
            ControlN::Cr4GuestHostMask,
            fixed[1].fixed1,
        ),
        _ => return Ok(CrOutcome::NotHandled(access)),
    };
    let old_shadow = vmcs.read(shadow)?;
    let owned = vmcs.read(mask)?;
    let old_real = vmcs.read(real)?;
    // What the guest sees: bits outside the mask it changes without exits
    // (CR0.PG under unrestricted guest), so they come from the register.
    let old = (old_real & !owned) | (old_shadow & owned);
    let faults = match access.cr {
        0 => {
            if (value ^ old) & CR0_PG != 0 && lme {
                return Ok(CrOutcome::NotHandled(access));
            }
            value >> 32 != 0
                || (value & CR0_NW != 0 && value & CR0_CD == 0)
                || (value & CR0_PG != 0 && value & CR0_PE == 0)
        }
        _ => {
            let pcide_on = value & CR4_PCIDE != 0 && old & CR4_PCIDE == 0;
            value & !cr4.allowed() != 0
                || (lma && value & CR4_PAE == 0)
                || (lma && (value ^ old) & CR4_LA57 != 0)
                || (pcide_on && (!lma || vmcs.read(GuestN::Cr3)? & 0xFFF != 0))
        }
    };
    if faults {
        inject_gp(vmcs)?;
        return Ok(CrOutcome::GeneralProtection {
            cr: access.cr,
            value,
        });
    }
    // Bits the host holds set underneath without the guest seeing them
    // (VMX's fixed bits, CR4.PSE under an identity map) stay set.
    let held = old_real & owned & !old_shadow;
    vmcs.write(real, (value | held) & (fixed1 | held))?;
    vmcs.write(shadow, value)?;
    skip_instruction(vmcs)?;
    Ok(CrOutcome::Done)
}

/// The general register `gpr` of an exit qualification (0 RAX .. 15 R15;
/// RSP lives in the VMCS).
pub(crate) fn read_gpr<V: VmcsAccess + ?Sized>(
    vmcs: &V,
    r: &GuestRegisters,
    gpr: u8,
) -> Result<u64, VmcsError> {
    match r.get(gpr & 15) {
        Some(value) => Ok(value),
        None => vmcs.read(GuestN::Rsp),
    }
}

/// Sets the general register `gpr` of an exit qualification to `value`.
pub(crate) fn write_gpr<V: VmcsAccess + ?Sized>(
    vmcs: &mut V,
    r: &mut GuestRegisters,
    gpr: u8,
    value: u64,
) -> Result<(), VmcsError> {
    match r.slot(gpr & 15) {
        Some(slot) => {
            *slot = value;
            Ok(())
        }
        None => vmcs.write(GuestN::Rsp, value),
    }
}

/// Makes CPUID leaf 1 show the local APIC as `IA32_APIC_BASE` has it:
/// EDX.APIC (bit 9) is clear while the APIC is disabled (SDM vol. 3, "Local
/// APIC Status and Location"). For a dispatcher that answers CPUID from a
/// static policy: apply it to leaf 1's answer before the guest sees it.
pub fn adjust_cpuid_for_apic(leaf: u32, apic_enabled: bool, result: &mut CpuidResult) {
    if leaf == 1 && !apic_enabled {
        result.edx &= !CPUID1_EDX_APIC;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuid::GuestCpu;
    use ponte_arch::vmx::{
        vmcs::{Guest32, ReadOnly32},
        MemVmcs,
    };

    const VMXE: u64 = 1 << 13;
    const OSFXSR: u64 = 1 << 9;
    const PSE: u64 = 1 << 4;
    const NE: u64 = 1 << 5;

    /// A guest CPU offering FPU, VME, FXSR, SSE, PSE, PAE and PGE in leaf 1 and SMEP
    /// in leaf 7, without VMX, PCID or LA57.
    fn policy() -> Cr4Policy {
        let host = |leaf: u32, _subleaf: u32| match leaf {
            0 => CpuidResult {
                eax: 7,
                ebx: 0x756e_6547,
                ecx: 0x6c65_746e,
                edx: 0x4965_6e69,
            },
            1 => CpuidResult {
                eax: 0,
                ebx: 0,
                ecx: 1 << 5,
                edx: (1 << 24) | (1 << 25) | (1 << 1) | (1 << 3) | (1 << 6) | (1 << 13) | 1,
            },
            7 => CpuidResult {
                eax: 0,
                ebx: 1 << 7,
                ecx: 0,
                edx: 0,
            },
            _ => CpuidResult::default(),
        };
        let guest = GuestCpu {
            apic_id: 0,
            apic: true,
            x2apic: false,
            tsc_deadline: false,
            tsc_khz: None,
            apic_timer_khz: None,
        };
        Cr4Policy::from_cpuid(&CpuidPolicy::<64>::from_host(host, &guest).unwrap())
    }

    /// Fixed bits as an unrestricted-guest processor reports them.
    fn fixed() -> [FixedBits; 2] {
        [
            FixedBits {
                fixed0: CR0_PE | NE | CR0_PG,
                fixed1: 0xFFFF_FFFF,
            },
            FixedBits {
                fixed0: VMXE,
                fixed1: 0x3F_FFFF,
            },
        ]
    }

    /// A guest in protected mode with paging off whose CR4 reads 0 and
    /// holds VMXE (and, under an identity map, PSE) underneath.
    fn vmcs(cr4_real: u64) -> MemVmcs {
        let mut v = MemVmcs::new();
        let policy = policy();
        v.write(Control32::EntryControls, 0).unwrap();
        v.write(GuestN::Cr4, cr4_real).unwrap();
        v.write(ControlN::Cr4ReadShadow, 0).unwrap();
        v.write(ControlN::Cr4GuestHostMask, policy.guest_host_mask(cr4_real))
            .unwrap();
        v.write(GuestN::Cr0, CR0_PE | NE | (1 << 4)).unwrap();
        v.write(ControlN::Cr0ReadShadow, CR0_PE | (1 << 4)).unwrap();
        v.write(ControlN::Cr0GuestHostMask, NE).unwrap();
        v.write(GuestN::Cr3, 0).unwrap();
        v.write(GuestN::Rip, 0x1000).unwrap();
        v.write(GuestN::Rsp, 0x8000).unwrap();
        v.write(Guest32::CsAccessRights, 0xC09B).unwrap();
        v.set(ReadOnly32::ExitInstructionLength as u32, 3).unwrap();
        v.write(Control32::EntryInterruptionInfo, 0).unwrap();
        v
    }

    fn mov_to(cr: u8, value: u64, v: &mut MemVmcs) -> CrOutcome {
        let regs = GuestRegisters {
            rbx: value,
            ..GuestRegisters::default()
        };
        let access = CrAccess {
            cr,
            access: CrAccessType::MovTo { gpr: 3 },
        };
        handle_cr_access(v, &regs, access, &policy(), fixed(), 0).unwrap()
    }

    fn gp_injected(v: &MemVmcs) -> bool {
        v.read(Control32::EntryInterruptionInfo).unwrap() == 0x8000_0B0D
    }

    #[test]
    fn bits_the_guest_changed_without_an_exit_count_as_they_are() {
        // Unrestricted guest: PG is not in the mask, so the guest turned
        // paging on without an exit and the shadow still says off. A write
        // keeping PG set with EFER.LME set changes no paging mode.
        let mut v = vmcs(VMXE);
        v.write(GuestN::Cr0, CR0_PE | NE | CR0_PG | (1 << 4))
            .unwrap();
        v.write(Control32::EntryControls, ENTRY_IA32E_MODE).unwrap();
        let regs = GuestRegisters {
            rbx: CR0_PE | CR0_PG | (1 << 4) | (1 << 16),
            ..GuestRegisters::default()
        };
        let access = CrAccess {
            cr: 0,
            access: CrAccessType::MovTo { gpr: 3 },
        };
        let efer = (1 << 8) | (1 << 10);
        let outcome = handle_cr_access(&mut v, &regs, access, &policy(), fixed(), efer).unwrap();
        assert_eq!(outcome, CrOutcome::Done);
        assert_eq!(
            v.read(GuestN::Cr0).unwrap() & (1 << 16),
            1 << 16,
            "WP written"
        );
        // Clearing PG from there does switch modes: left to the caller.
        let clear = GuestRegisters {
            rbx: CR0_PE | (1 << 4),
            ..GuestRegisters::default()
        };
        let outcome = handle_cr_access(&mut v, &clear, access, &policy(), fixed(), efer).unwrap();
        assert_eq!(outcome, CrOutcome::NotHandled(access));
    }

    #[test]
    fn cr4_bits_follow_the_guests_cpuid() {
        let p = policy();
        // VME and PVI (VME), PSE, PAE, PGE, PCE, OSFXSR (FXSR), OSXMMEXCPT
        // (SSE), SMEP; not TSD, DE or MCE (not offered), not VMXE (the
        // guest's CPUID hides VMX), never bit 15 (reserved).
        assert_eq!(
            p.allowed(),
            (1 << 0)
                | (1 << 1)
                | PSE
                | (1 << 5)
                | (1 << 7)
                | (1 << 8)
                | OSFXSR
                | (1 << 10)
                | (1 << 20)
        );
        assert_eq!(p.guest_host_mask(VMXE) & (1 << 15), 1 << 15);
        assert_eq!(p.guest_host_mask(VMXE) & OSFXSR, 0);
    }

    #[test]
    fn reserved_or_unoffered_cr4_bits_raise_gp_and_change_nothing() {
        for bad in [1 << 15, 1 << 17, 1 << 12, 1 << 40, 1 << 16] {
            let mut v = vmcs(VMXE);
            assert_eq!(
                mov_to(4, OSFXSR | bad, &mut v),
                CrOutcome::GeneralProtection {
                    cr: 4,
                    value: OSFXSR | bad
                },
                "bit {bad:#x}"
            );
            assert!(gp_injected(&v));
            assert_eq!(v.read(GuestN::Cr4).unwrap(), VMXE);
            assert_eq!(v.read(ControlN::Cr4ReadShadow).unwrap(), 0);
            assert_eq!(v.read(GuestN::Rip).unwrap(), 0x1000);
        }
    }

    #[test]
    fn an_allowed_cr4_write_keeps_the_hosts_bits_underneath() {
        let mut v = vmcs(VMXE | PSE);
        // The guest clears PSE (held underneath by an identity map) and
        // sets OSFXSR: it reads back what it wrote; VMXE and PSE stay set.
        assert_eq!(mov_to(4, OSFXSR, &mut v), CrOutcome::Done);
        assert_eq!(v.read(GuestN::Cr4).unwrap(), VMXE | PSE | OSFXSR);
        assert_eq!(v.read(ControlN::Cr4ReadShadow).unwrap(), OSFXSR);
        assert_eq!(v.read(GuestN::Rip).unwrap(), 0x1003);
        assert!(!gp_injected(&v));
    }

    #[test]
    fn cr0_combinations_the_sdm_forbids_raise_gp() {
        for bad in [CR0_NW | CR0_PE, CR0_PG, 1 << 32 | CR0_PE] {
            let mut v = vmcs(VMXE);
            assert!(matches!(
                mov_to(0, bad, &mut v),
                CrOutcome::GeneralProtection { cr: 0, .. }
            ));
            assert!(gp_injected(&v));
        }
        // Clearing NE: the guest reads it clear, the processor keeps it.
        let mut v = vmcs(VMXE);
        assert_eq!(mov_to(0, CR0_PE | CR0_CD | CR0_NW, &mut v), CrOutcome::Done);
        assert_eq!(v.read(GuestN::Cr0).unwrap(), CR0_PE | CR0_CD | CR0_NW | NE);
        assert_eq!(
            v.read(ControlN::Cr0ReadShadow).unwrap(),
            CR0_PE | CR0_CD | CR0_NW
        );
    }

    #[test]
    fn cr3_and_reads_are_left_to_the_caller() {
        let mut v = vmcs(VMXE);
        let regs = GuestRegisters::default();
        let read = CrAccess {
            cr: 4,
            access: CrAccessType::MovFrom { gpr: 0 },
        };
        let outcome = handle_cr_access(&mut v, &regs, read, &policy(), fixed(), 0).unwrap();
        assert_eq!(outcome, CrOutcome::NotHandled(read));
        assert_eq!(
            mov_to(3, 0x1000, &mut v),
            CrOutcome::NotHandled(CrAccess {
                cr: 3,
                access: CrAccessType::MovTo { gpr: 3 },
            })
        );
    }

    #[test]
    fn cpuid_hides_a_disabled_apic() {
        let mut leaf1 = CpuidResult {
            edx: CPUID1_EDX_APIC | 1,
            ..CpuidResult::default()
        };
        adjust_cpuid_for_apic(1, true, &mut leaf1);
        assert_eq!(leaf1.edx, CPUID1_EDX_APIC | 1);
        adjust_cpuid_for_apic(7, false, &mut leaf1);
        assert_eq!(leaf1.edx, CPUID1_EDX_APIC | 1);
        adjust_cpuid_for_apic(1, false, &mut leaf1);
        assert_eq!(leaf1.edx, 1);
    }
}
