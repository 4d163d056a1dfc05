//! Deliberately broken VMCS configurations: each changes one field of a
//! valid baseline so that exactly one VM-entry rule is violated, and states
//! the rule and the outcome the SDM gives for it. Host tests run them through
//! the pre-flight checker; an image can run them on a CPU (with the checker
//! bypassed) and compare the VM-instruction error or exit reason.
//!
//! The baseline is any VMCS that passes [`check_vm_entry`] cleanly, set up
//! from [`baseline_request`] with a 64-bit guest
//! ([`GuestState::long_mode`](super::GuestState::long_mode)), an MSR bitmap,
//! and, where the CPU has them, EPT, VPID (nonzero) and unrestricted guest.
//!
//! [`check_vm_entry`]: super::check_vm_entry

use super::caps::VmxCapabilities;
use super::check::Rule;
use super::controls::{ControlRequest, EntryControl, ExitControl, Proc2Control, ProcControl};
use super::vmcs::*;

/// What hardware does when entering the broken configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedOutcome {
    /// VMLAUNCH fails with VMfailValid and this VM-instruction error (7 or 8).
    InstructionError(u32),
    /// VM entry fails with a VM exit: reason (33 or 34, bit 31 set in the
    /// raw exit reason) and exit qualification.
    EntryFailure {
        /// Basic exit reason.
        reason: u16,
        /// Exit qualification.
        qualification: u64,
    },
}

/// One broken configuration.
#[derive(Clone, Copy, Debug)]
pub struct BrokenConfig {
    /// Stable name.
    pub name: &'static str,
    /// Whether the configuration applies to a CPU (and so to its baseline).
    pub applies: fn(&VmxCapabilities) -> bool,
    /// Breaks a valid baseline VMCS.
    pub mutate: fn(&mut dyn VmcsAccess, &VmxCapabilities) -> Result<(), VmcsError>,
    /// The rule the SDM states for it.
    pub rule: Rule,
    /// What the CPU reports.
    pub outcome: ExpectedOutcome,
}

/// The controls of the baseline: HLT exiting, MSR bitmaps and a 64-bit
/// guest, plus EPT, VPID, unrestricted guest and the EFER/PAT load controls
/// where the CPU has them.
pub fn baseline_request() -> ControlRequest {
    ControlRequest::new()
        .require(ProcControl::HltExiting)
        .require(ProcControl::UseMsrBitmaps)
        .require(EntryControl::Ia32eModeGuest)
        .prefer(Proc2Control::EnableEpt)
        .prefer(Proc2Control::EnableVpid)
        .prefer(Proc2Control::UnrestrictedGuest)
        .prefer(ExitControl::LoadEfer)
        .prefer(EntryControl::LoadEfer)
        .prefer(ExitControl::LoadPat)
        .prefer(EntryControl::LoadPat)
}

const fn always(_: &VmxCapabilities) -> bool {
    true
}
fn has_ept(c: &VmxCapabilities) -> bool {
    c.proc2_allows(Proc2Control::EnableEpt.bit())
}
fn has_vpid(c: &VmxCapabilities) -> bool {
    c.proc2_allows(Proc2Control::EnableVpid.bit())
}
fn has_ug(c: &VmxCapabilities) -> bool {
    has_ept(c) && c.proc2_allows(Proc2Control::UnrestrictedGuest.bit())
}
fn has_entry_efer(c: &VmxCapabilities) -> bool {
    c.entry.effective().allows(EntryControl::LoadEfer.bit())
}
fn has_exit_pat(c: &VmxCapabilities) -> bool {
    c.exit.effective().allows(ExitControl::LoadPat.bit())
}
fn has_nmi_window(c: &VmxCapabilities) -> bool {
    c.proc
        .effective()
        .allows(ProcControl::NmiWindowExiting.bit())
}

type Vm<'a> = &'a mut dyn VmcsAccess;

const EXIT_33: ExpectedOutcome = ExpectedOutcome::EntryFailure {
    reason: 33,
    qualification: 0,
};
const ERROR_7: ExpectedOutcome = ExpectedOutcome::InstructionError(7);
const ERROR_8: ExpectedOutcome = ExpectedOutcome::InstructionError(8);

/// The table.
pub const BROKEN_CONFIGS: &[BrokenConfig] = &[
    BrokenConfig {
        name: "pin_based_reserved_bit_31",
        applies: always,
        mutate: |v: Vm, _| v.update32(Control32::PinBasedControls, 1 << 31, 0),
        rule: Rule::PinControls,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "cr3_target_count_above_misc",
        applies: always,
        mutate: |v: Vm, c| v.write(Control32::Cr3TargetCount, c.misc.cr3_targets as u32 + 1),
        rule: Rule::Cr3TargetCount,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "msr_bitmap_misaligned",
        applies: always,
        mutate: |v: Vm, _| {
            let a = v.read(Control64::MsrBitmap)?;
            v.write(Control64::MsrBitmap, a | 0x800)
        },
        rule: Rule::MsrBitmapAddress,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "nmi_window_without_virtual_nmis",
        applies: has_nmi_window,
        mutate: |v: Vm, _| {
            v.update32(
                Control32::ProcBasedControls,
                ProcControl::NmiWindowExiting.bit(),
                0,
            )
        },
        rule: Rule::NmiWindowWithoutVirtualNmis,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "vpid_zero",
        applies: has_vpid,
        mutate: |v: Vm, _| v.write(Control16::Vpid, 0),
        rule: Rule::VpidZero,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "eptp_memory_type_2",
        applies: has_ept,
        mutate: |v: Vm, _| {
            let e = v.read(Control64::EptPointer)?;
            v.write(Control64::EptPointer, (e & !7) | 2)
        },
        rule: Rule::EptpMemoryType,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "eptp_walk_length_3_levels",
        applies: has_ept,
        mutate: |v: Vm, _| {
            let e = v.read(Control64::EptPointer)?;
            v.write(Control64::EptPointer, (e & !0x38) | 2 << 3)
        },
        rule: Rule::EptpWalkLength,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "unrestricted_guest_without_ept",
        applies: has_ug,
        mutate: |v: Vm, _| {
            v.update32(
                Control32::ProcBasedControls2,
                0,
                Proc2Control::EnableEpt.bit(),
            )
        },
        rule: Rule::UnrestrictedGuestWithoutEpt,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "inject_nmi_with_vector_3",
        applies: always,
        mutate: |v: Vm, _| v.write(Control32::EntryInterruptionInfo, 0x8000_0203),
        rule: Rule::EntryEventVector,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "save_preemption_timer_without_timer",
        applies: |c| {
            c.exit
                .effective()
                .allows(ExitControl::SavePreemptionTimer.bit())
        },
        mutate: |v: Vm, _| {
            v.update32(
                Control32::ExitControls,
                ExitControl::SavePreemptionTimer.bit(),
                0,
            )
        },
        rule: Rule::SavePreemptionTimerWithoutTimer,
        outcome: ERROR_7,
    },
    BrokenConfig {
        name: "host_cr0_ne_clear",
        applies: |c| c.cr0.fixed0 & (1 << 5) != 0,
        mutate: |v: Vm, _| {
            let cr0 = v.read(HostN::Cr0)?;
            v.write(HostN::Cr0, cr0 & !(1 << 5))
        },
        rule: Rule::HostCr0Fixed,
        outcome: ERROR_8,
    },
    BrokenConfig {
        name: "host_cs_selector_null",
        applies: always,
        mutate: |v: Vm, _| v.write(Host16::CsSelector, 0),
        rule: Rule::HostCsNull,
        outcome: ERROR_8,
    },
    BrokenConfig {
        name: "host_tr_selector_rpl_3",
        applies: always,
        mutate: |v: Vm, _| {
            let tr = v.read(Host16::TrSelector)?;
            v.write(Host16::TrSelector, tr | 3)
        },
        rule: Rule::HostSelectorRplTi,
        outcome: ERROR_8,
    },
    BrokenConfig {
        name: "host_fs_base_noncanonical",
        applies: always,
        mutate: |v: Vm, _| v.write(HostN::FsBase, 0x0000_8000_0000_0000),
        rule: Rule::HostBaseNotCanonical,
        outcome: ERROR_8,
    },
    BrokenConfig {
        name: "host_pat_memory_type_2",
        applies: has_exit_pat,
        mutate: |v: Vm, _| v.write(Host64::Pat, 0x0007_0406_0007_0402),
        rule: Rule::HostPat,
        outcome: ERROR_8,
    },
    BrokenConfig {
        name: "host_rip_noncanonical",
        applies: always,
        mutate: |v: Vm, _| v.write(HostN::Rip, 0x0000_8000_0000_1000),
        rule: Rule::HostRipNotCanonical,
        outcome: ERROR_8,
    },
    BrokenConfig {
        name: "guest_cr0_ne_clear",
        applies: |c| c.cr0.fixed0 & (1 << 5) != 0,
        mutate: |v: Vm, _| {
            let cr0 = v.read(GuestN::Cr0)?;
            v.write(GuestN::Cr0, cr0 & !(1 << 5))
        },
        rule: Rule::GuestCr0Fixed,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_rflags_bit_1_clear",
        applies: always,
        mutate: |v: Vm, _| {
            let f = v.read(GuestN::Rflags)?;
            v.write(GuestN::Rflags, f & !2)
        },
        rule: Rule::GuestRflagsReserved,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_cs_data_segment",
        applies: always,
        mutate: |v: Vm, _| v.update32(Guest32::CsAccessRights, 0x1, 0xf),
        rule: Rule::GuestCsType,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_tr_unusable",
        applies: always,
        mutate: |v: Vm, _| v.update32(Guest32::TrAccessRights, 1 << 16, 0),
        rule: Rule::GuestTrUnusable,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_efer_lma_clear_in_ia32e_mode",
        applies: has_entry_efer,
        mutate: |v: Vm, _| {
            let e = v.read(Guest64::Efer)?;
            v.write(Guest64::Efer, e & !(1 << 10))
        },
        rule: Rule::GuestEferLma,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_rip_noncanonical",
        applies: always,
        mutate: |v: Vm, _| v.write(GuestN::Rip, 0x0000_8000_0000_0000),
        rule: Rule::GuestRipNotCanonical,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_gdtr_limit_above_16_bits",
        applies: always,
        mutate: |v: Vm, _| v.write(Guest32::GdtrLimit, 0x1_0000),
        rule: Rule::GuestDescriptorTableLimit,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_activity_state_4",
        applies: always,
        mutate: |v: Vm, _| v.write(Guest32::ActivityState, 4),
        rule: Rule::GuestActivityState,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_interruptibility_reserved_bit_5",
        applies: always,
        mutate: |v: Vm, _| v.write(Guest32::InterruptibilityState, 1 << 5),
        rule: Rule::GuestInterruptibilityReserved,
        outcome: EXIT_33,
    },
    BrokenConfig {
        name: "guest_vmcs_link_pointer_misaligned",
        applies: always,
        mutate: |v: Vm, _| v.write(Guest64::VmcsLinkPointer, 0x1234),
        rule: Rule::GuestVmcsLinkPointer,
        outcome: ExpectedOutcome::EntryFailure {
            reason: 33,
            qualification: 4,
        },
    },
];
