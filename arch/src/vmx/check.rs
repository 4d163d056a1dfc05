//! The VM-entry pre-flight checker: reads a VMCS through [`VmcsAccess`] and
//! reports every violated rule of SDM Vol. 3C 27.2 (VMX controls and host
//! state) and 27.3.1 (guest state) by a stable name with the offending value.
//! Checks that need guest memory (PDPTEs, MSR-list contents, the virtual-APIC
//! page) are out of scope.

use super::caps::VmxCapabilities;
use super::controls::{
    EntryControl as En, ExitControl as Ex, PinControl as Pin, Proc2Control as P2, ProcControl as Pr,
};
use super::exit::InterruptionType;
use super::state::{SegmentRegister, CR0_PE, CR0_PG, CR4_PAE};
use super::vmcs::*;

/// Which VM-entry stage a rule belongs to, and so how hardware reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// 27.2.1: VM-instruction error 7.
    Controls,
    /// 27.2.2-27.2.4: VM-instruction error 8.
    HostState,
    /// 27.3.1: VM exit with reason 33 (entry failure, invalid guest state).
    GuestState,
}

macro_rules! rules {
    ($($stage:ident { $($name:ident = $s:literal: $doc:literal,)* })*) => {
        /// A VM-entry check of the SDM.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Rule { $($(#[doc = $doc] $name,)*)* }
        impl Rule {
            /// Stable dotted name.
            pub const fn name(self) -> &'static str {
                match self { $($(Rule::$name => $s,)*)* }
            }
            /// The check as the SDM states it.
            pub const fn description(self) -> &'static str {
                match self { $($(Rule::$name => $doc,)*)* }
            }
            /// The stage the check belongs to.
            pub const fn stage(self) -> Stage {
                match self { $($(Rule::$name => Stage::$stage,)*)* }
            }
        }
    };
}

rules! {
    Controls {
        PinControls = "controls.pin_based.allowed": "Pin-based controls must respect IA32_VMX_(TRUE_)PINBASED_CTLS; value = violating bits.",
        ProcControls = "controls.proc_based.allowed": "Primary processor-based controls must respect IA32_VMX_(TRUE_)PROCBASED_CTLS; value = violating bits.",
        Proc2Controls = "controls.proc_based2.allowed": "Secondary processor-based controls must respect IA32_VMX_PROCBASED_CTLS2; value = violating bits.",
        ExitControls = "controls.exit.allowed": "VM-exit controls must respect IA32_VMX_(TRUE_)EXIT_CTLS; value = violating bits.",
        EntryControls = "controls.entry.allowed": "VM-entry controls must respect IA32_VMX_(TRUE_)ENTRY_CTLS; value = violating bits.",
        Cr3TargetCount = "controls.cr3_target_count": "The CR3-target count must not exceed IA32_VMX_MISC bits 24:16.",
        IoBitmapAddress = "controls.io_bitmap_address": "With I/O bitmaps, bitmap addresses A and B must be 4-KByte aligned and within the physical-address width.",
        MsrBitmapAddress = "controls.msr_bitmap_address": "With MSR bitmaps, the bitmap address must be 4-KByte aligned and within the physical-address width.",
        VirtualApicAddress = "controls.virtual_apic_address": "With use TPR shadow, the virtual-APIC address must be 4-KByte aligned and within the physical-address width.",
        TprThreshold = "controls.tpr_threshold": "With use TPR shadow and no virtual-interrupt delivery, TPR threshold bits 31:4 must be 0.",
        ApicVirtualizationWithoutTprShadow = "controls.apic_virtualization_requires_tpr_shadow": "Without use TPR shadow, virtualize x2APIC mode, APIC-register virtualization and virtual-interrupt delivery must be 0.",
        VirtualNmisWithoutNmiExiting = "controls.virtual_nmis_requires_nmi_exiting": "If NMI exiting is 0, virtual NMIs must be 0.",
        NmiWindowWithoutVirtualNmis = "controls.nmi_window_requires_virtual_nmis": "If virtual NMIs is 0, NMI-window exiting must be 0.",
        ApicAccessAddress = "controls.apic_access_address": "With virtualize APIC accesses, the APIC-access address must be 4-KByte aligned and within the physical-address width.",
        X2apicWithApicAccesses = "controls.x2apic_mode_excludes_apic_accesses": "If virtualize x2APIC mode is 1, virtualize APIC accesses must be 0.",
        VirtualInterruptDeliveryWithoutExtIntExiting = "controls.virtual_interrupt_delivery_requires_external_interrupt_exiting": "If virtual-interrupt delivery is 1, external-interrupt exiting must be 1.",
        PostedInterrupts = "controls.posted_interrupts": "With process posted interrupts: virtual-interrupt delivery and acknowledge interrupt on exit must be 1, the notification vector bits 15:8 0, the descriptor address 64-byte aligned and within the physical-address width.",
        VpidZero = "controls.vpid_nonzero": "If enable VPID is 1, the VPID must not be 0000H.",
        EptpMemoryType = "controls.eptp.memory_type": "EPTP bits 2:0 must be a memory type IA32_VMX_EPT_VPID_CAP allows (0 UC, 6 WB).",
        EptpWalkLength = "controls.eptp.walk_length": "EPTP bits 5:3 must be 3 (4-level) or, if supported, 4 (5-level).",
        EptpAccessDirty = "controls.eptp.accessed_dirty": "EPTP bit 6 must be 0 if IA32_VMX_EPT_VPID_CAP does not support accessed and dirty flags.",
        EptpReservedBits = "controls.eptp.reserved": "EPTP reserved bits 11:7 (bit 7 unless supervisor shadow stacks are supported) and bits beyond the physical-address width must be 0.",
        UnrestrictedGuestWithoutEpt = "controls.unrestricted_guest_requires_ept": "If unrestricted guest is 1, enable EPT must be 1.",
        PmlAddress = "controls.pml": "With enable PML, enable EPT must be 1 and the PML address 4-KByte aligned within the physical-address width.",
        VmFunctionControls = "controls.vm_functions": "With enable VM functions, the VM-function controls must respect IA32_VMX_VMFUNC; EPTP switching needs EPT and an aligned EPTP-list address.",
        VmcsShadowingBitmaps = "controls.vmcs_shadowing_bitmaps": "With VMCS shadowing, the VMREAD and VMWRITE bitmap addresses must be 4-KByte aligned and within the physical-address width.",
        VeInformationAddress = "controls.ve_information_address": "With EPT-violation #VE, the virtualization-exception information address must be 4-KByte aligned and within the physical-address width.",
        SavePreemptionTimerWithoutTimer = "controls.exit.save_preemption_timer_requires_timer": "If activate VMX-preemption timer is 0, save VMX-preemption timer value must be 0.",
        ExitMsrStoreAddress = "controls.exit.msr_store_address": "With a nonzero VM-exit MSR-store count, the address must be 16-byte aligned and the list within the physical-address width.",
        ExitMsrLoadAddress = "controls.exit.msr_load_address": "With a nonzero VM-exit MSR-load count, the address must be 16-byte aligned and the list within the physical-address width.",
        EntryMsrLoadAddress = "controls.entry.msr_load_address": "With a nonzero VM-entry MSR-load count, the address must be 16-byte aligned and the list within the physical-address width.",
        EntryToSmm = "controls.entry.smm_outside_smm": "Outside SMM, entry to SMM and deactivate dual-monitor treatment must be 0.",
        EntryEventType = "controls.entry.event.type": "The injected event's type must not be 1 (reserved), nor 7 unless monitor trap flag is supported.",
        EntryEventVector = "controls.entry.event.vector": "An injected NMI must have vector 2, a hardware exception vector 0-31, an other event vector 0.",
        EntryEventErrorCode = "controls.entry.event.deliver_error_code": "Deliver error code must be 1 exactly for hardware exceptions 8, 10-14 and 17 in protected mode (0 elsewhere).",
        EntryEventReservedBits = "controls.entry.event.reserved": "Injected event information bits 30:12 must be 0.",
        EntryErrorCodeReserved = "controls.entry.event.error_code": "When delivering an error code, bits 31:16 of the VM-entry exception error code must be 0.",
        EntryInstructionLength = "controls.entry.event.instruction_length": "For software interrupts and exceptions the VM-entry instruction length must be 1-15 (0 only if IA32_VMX_MISC bit 30).",
    }
    HostState {
        HostCr0Fixed = "host.cr0.fixed_bits": "Host CR0 must respect IA32_VMX_CR0_FIXED0/1; value = violating bits.",
        HostCr4Fixed = "host.cr4.fixed_bits": "Host CR4 must respect IA32_VMX_CR4_FIXED0/1; value = violating bits.",
        HostCr3Width = "host.cr3.width": "Host CR3 bits beyond the physical-address width must be 0.",
        HostSysenterCanonical = "host.sysenter.canonical": "Host IA32_SYSENTER_ESP and _EIP must be canonical.",
        HostPat = "host.pat": "With load IA32_PAT, every byte of the host PAT must be 0, 1, 4, 5, 6 or 7.",
        HostEferReserved = "host.efer.reserved": "With load IA32_EFER, host EFER reserved bits must be 0.",
        HostEferLmaLme = "host.efer.lma_lme": "With load IA32_EFER, host EFER.LMA and LME must equal host address-space size.",
        HostSelectorRplTi = "host.selector.rpl_ti": "Host ES, CS, SS, DS, FS, GS and TR selectors must have RPL 0 and TI 0.",
        HostCsNull = "host.cs.nonnull": "The host CS selector must not be 0000H.",
        HostTrNull = "host.tr.nonnull": "The host TR selector must not be 0000H.",
        HostSsNull = "host.ss.nonnull": "Without host address-space size, the host SS selector must not be 0000H.",
        HostBaseNotCanonical = "host.base.canonical": "Host FS, GS, GDTR, IDTR and TR bases must be canonical.",
        HostAddressSpaceSize = "host.address_space_size": "A host in IA-32e mode must set the host address-space size exit control.",
        HostIa32eGuestWithoutHost64 = "host.ia32e_guest_requires_64bit_host": "Without host address-space size, IA-32e mode guest must be 0.",
        HostCr4Pae = "host.cr4.pae": "With host address-space size, host CR4.PAE must be 1.",
        HostRipNotCanonical = "host.rip.canonical": "With host address-space size, host RIP must be canonical.",
    }
    GuestState {
        GuestCr0Fixed = "guest.cr0.fixed_bits": "Guest CR0 must respect IA32_VMX_CR0_FIXED0/1 (PE and PG free under unrestricted guest); value = violating bits.",
        GuestCr0PgWithoutPe = "guest.cr0.pg_requires_pe": "If guest CR0.PG is 1, CR0.PE must be 1.",
        GuestCr4Fixed = "guest.cr4.fixed_bits": "Guest CR4 must respect IA32_VMX_CR4_FIXED0/1; value = violating bits.",
        GuestCr4CetWithoutWp = "guest.cr4.cet_requires_wp": "If guest CR4.CET is 1, CR0.WP must be 1.",
        GuestDebugctlReserved = "guest.debugctl.reserved": "With load debug controls, IA32_DEBUGCTL bits 2-5 and 16-63 must be 0.",
        GuestIa32eWithoutPaging = "guest.ia32e.paging": "With IA-32e mode guest, CR0.PG and CR4.PAE must be 1.",
        GuestPcideOutsideIa32e = "guest.cr4.pcide": "Without IA-32e mode guest, CR4.PCIDE must be 0.",
        GuestCr3Width = "guest.cr3.width": "Guest CR3 bits beyond the physical-address width must be 0.",
        GuestDr7Upper = "guest.dr7.upper": "With load debug controls, DR7 bits 63:32 must be 0.",
        GuestSysenterCanonical = "guest.sysenter.canonical": "Guest IA32_SYSENTER_ESP and _EIP must be canonical.",
        GuestPat = "guest.pat": "With load IA32_PAT, every byte of the guest PAT must be 0, 1, 4, 5, 6 or 7.",
        GuestEferReserved = "guest.efer.reserved": "With load IA32_EFER, guest EFER reserved bits must be 0.",
        GuestEferLma = "guest.efer.lma": "With load IA32_EFER, EFER.LMA must equal IA-32e mode guest.",
        GuestEferLme = "guest.efer.lme": "With load IA32_EFER and CR0.PG, EFER.LME must equal IA-32e mode guest.",
        GuestTrTi = "guest.tr.ti": "The TI flag of the guest TR selector must be 0.",
        GuestLdtrTi = "guest.ldtr.ti": "A usable guest LDTR selector must have TI 0.",
        GuestSsCsRpl = "guest.ss_cs.rpl": "Outside virtual-8086 mode and without unrestricted guest, SS.RPL must equal CS.RPL.",
        GuestV86Segment = "guest.v86.segment": "In virtual-8086 mode each segment's base must be selector * 16, limit FFFFH, access rights F3H.",
        GuestBaseNotCanonical = "guest.base.canonical": "Guest TR, FS, GS bases (and a usable LDTR base) must be canonical.",
        GuestBaseUpperBits = "guest.base.upper": "Guest CS base (and usable SS, DS, ES bases) bits 63:32 must be 0.",
        GuestCsType = "guest.cs.type": "Guest CS type must be 9, 11, 13 or 15 (or 3 with unrestricted guest).",
        GuestSsType = "guest.ss.type": "A usable guest SS must have type 3 or 7.",
        GuestDataSegmentType = "guest.data_segment.type": "A usable guest DS, ES, FS or GS must be accessed, and readable if code.",
        GuestSegmentS = "guest.segment.s": "Guest CS and usable SS, DS, ES, FS, GS must have S = 1.",
        GuestCsDpl = "guest.cs.dpl": "CS.DPL must be 0 for type 3, equal SS.DPL for types 9/11, at most SS.DPL for types 13/15.",
        GuestSsDpl = "guest.ss.dpl": "SS.DPL must equal SS.RPL without unrestricted guest, and be 0 if CS type is 3 or CR0.PE is 0.",
        GuestDataSegmentDpl = "guest.data_segment.dpl": "Without unrestricted guest, a usable DS, ES, FS or GS of type 0-11 must have DPL >= RPL.",
        GuestSegmentNotPresent = "guest.segment.present": "Guest CS and usable SS, DS, ES, FS, GS must be present.",
        GuestAccessRightsReserved = "guest.segment.reserved": "Access-rights bits 11:8 and 31:17 must be 0 (usable segments, CS, TR).",
        GuestCsLongModeDb = "guest.cs.l_db": "With IA-32e mode guest and CS.L = 1, CS.D/B must be 0.",
        GuestSegmentLimitGranularity = "guest.segment.limit_granularity": "If limit bits 11:0 are not all 1, G must be 0; if limit bits 31:20 are not all 0, G must be 1.",
        GuestTrType = "guest.tr.type": "TR must be a busy TSS (type 11, or 3 outside IA-32e mode), S = 0, present.",
        GuestTrUnusable = "guest.tr.usable": "TR must be usable.",
        GuestLdtrType = "guest.ldtr.type": "A usable LDTR must have type 2, S = 0 and be present.",
        GuestDescriptorTableBase = "guest.gdtr_idtr.base": "Guest GDTR and IDTR bases must be canonical.",
        GuestDescriptorTableLimit = "guest.gdtr_idtr.limit": "Guest GDTR and IDTR limit bits 31:16 must be 0.",
        GuestRipUpperBits = "guest.rip.upper": "Outside 64-bit mode (IA-32e mode guest with CS.L), RIP bits 63:32 must be 0.",
        GuestRipNotCanonical = "guest.rip.canonical": "In 64-bit mode, RIP must be canonical.",
        GuestRflagsReserved = "guest.rflags.reserved": "RFLAGS bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1.",
        GuestRflagsVm = "guest.rflags.vm": "With IA-32e mode guest or CR0.PE = 0, RFLAGS.VM must be 0.",
        GuestRflagsIf = "guest.rflags.if": "Injecting an external interrupt requires RFLAGS.IF = 1.",
        GuestActivityState = "guest.activity_state": "The activity state must be 0-3 and supported by IA32_VMX_MISC.",
        GuestActivityHltDpl = "guest.activity_state.hlt_dpl": "The activity state must not be HLT when SS.DPL is not 0.",
        GuestActivityBlocking = "guest.activity_state.blocking": "Blocking by STI or MOV SS requires the active state.",
        GuestActivityEvent = "guest.activity_state.event": "In HLT only external interrupts, NMIs, #DB, #MC and other events may be injected; in shutdown only NMIs and #MC; in wait-for-SIPI none.",
        GuestInterruptibilityReserved = "guest.interruptibility.reserved": "Interruptibility-state bits 31:5 must be 0.",
        GuestInterruptibilityStiMovSs = "guest.interruptibility.sti_and_mov_ss": "Blocking by STI and by MOV SS must not both be 1.",
        GuestInterruptibilityStiIf = "guest.interruptibility.sti_requires_if": "Blocking by STI must be 0 if RFLAGS.IF is 0.",
        GuestInterruptibilityExtInt = "guest.interruptibility.external_interrupt": "Injecting an external interrupt requires blocking by STI and by MOV SS to be 0.",
        GuestInterruptibilityNmi = "guest.interruptibility.nmi": "Injecting an NMI requires blocking by MOV SS to be 0, and with virtual NMIs blocking by NMI to be 0.",
        GuestInterruptibilitySmi = "guest.interruptibility.smi": "Outside SMM, blocking by SMI must be 0.",
        GuestPendingDebugReserved = "guest.pending_debug.reserved": "Pending debug exceptions bits 11:4, 13, 15 and 63:17 must be 0.",
        GuestPendingDebugBs = "guest.pending_debug.bs": "With blocking by STI/MOV SS or HLT, BS must be 1 if RFLAGS.TF = 1 and DEBUGCTL.BTF = 0, and 0 otherwise.",
        GuestVmcsLinkPointer = "guest.vmcs_link_pointer": "Without VMCS shadowing the VMCS link pointer must be FFFFFFFF_FFFFFFFFH; otherwise 4-KByte aligned within the physical-address width.",
    }
}

/// One violated rule with the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The offending value (the field, or the violating bits where stated).
    pub value: u64,
}

/// Violations a report holds at most.
pub const MAX_VIOLATIONS: usize = 48;

/// Everything the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Violated rules in check order (controls, host state, guest state).
    pub violations: heapless::Vec<Violation, MAX_VIOLATIONS>,
    /// More violations were found than the report holds.
    pub truncated: bool,
    /// A field could not be read (the first such encoding).
    pub unreadable: Option<u32>,
}

impl Report {
    /// Whether `rule` was violated.
    pub fn has(&self, rule: Rule) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }
    /// Whether no rule was violated.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && !self.truncated
    }
    fn add(&mut self, rule: Rule, value: u64) {
        if self.violations.push(Violation { rule, value }).is_err() {
            self.truncated = true;
        }
    }
    fn check(&mut self, ok: bool, rule: Rule, value: u64) {
        if !ok {
            self.add(rule, value);
        }
    }
}

const fn canonical(a: u64) -> bool {
    (((a << 16) as i64) >> 16) as u64 == a
}

fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

struct Reader<'a, V: ?Sized> {
    vmcs: &'a V,
    report: Report,
}

impl<V: VmcsAccess + ?Sized> Reader<'_, V> {
    fn get(&mut self, encoding: u32) -> u64 {
        match self.vmcs.read_encoding(encoding) {
            Ok(v) => v,
            Err(_) => {
                self.report.unreadable.get_or_insert(encoding);
                0
            }
        }
    }
    fn f<F: VmcsField>(&mut self, field: F) -> u64 {
        self.get(field.encoding())
    }
}

/// Checks the VMCS against the VM-entry rules of SDM Vol. 3C 27.2 and 27.3.1
/// for a host running in IA-32e mode outside SMM.
pub fn check_vm_entry(vmcs: &(impl VmcsAccess + ?Sized), caps: &VmxCapabilities) -> Report {
    let mut r = Reader {
        vmcs,
        report: Report::default(),
    };
    check_controls(&mut r, caps);
    check_host(&mut r, caps);
    check_guest(&mut r, caps);
    r.report
}

struct Ctl {
    pin: u32,
    proc: u32,
    proc2: u32,
    exit: u32,
    entry: u32,
}

impl Ctl {
    fn read<V: VmcsAccess + ?Sized>(r: &mut Reader<'_, V>) -> Ctl {
        let proc = r.f(Control32::ProcBasedControls) as u32;
        Ctl {
            pin: r.f(Control32::PinBasedControls) as u32,
            proc,
            proc2: if proc & Pr::ActivateSecondaryControls.bit() != 0 {
                r.f(Control32::ProcBasedControls2) as u32
            } else {
                0
            },
            exit: r.f(Control32::ExitControls) as u32,
            entry: r.f(Control32::EntryControls) as u32,
        }
    }
}

fn check_controls<V: VmcsAccess + ?Sized>(r: &mut Reader<'_, V>, caps: &VmxCapabilities) {
    use Rule::*;
    let c = Ctl::read(r);
    let width = caps.phys_addr_bits.min(63);
    let page_ok = |a: u64| a & 0xfff == 0 && a >> width == 0;
    let rep = |r: &mut Reader<'_, V>, ok: bool, rule, v| r.report.check(ok, rule, v);
    let bad = caps.pin.effective().violations(c.pin);
    rep(r, bad == 0, PinControls, bad as u64);
    let bad = caps.proc.effective().violations(c.proc);
    rep(r, bad == 0, ProcControls, bad as u64);
    let bad = caps.proc2.violations(c.proc2);
    rep(r, bad == 0, Proc2Controls, bad as u64);
    let bad = caps.exit.effective().violations(c.exit);
    rep(r, bad == 0, ExitControls, bad as u64);
    let bad = caps.entry.effective().violations(c.entry);
    rep(r, bad == 0, EntryControls, bad as u64);

    let n = r.f(Control32::Cr3TargetCount);
    rep(r, n <= caps.misc.cr3_targets as u64, Cr3TargetCount, n);
    if c.proc & Pr::UseIoBitmaps.bit() != 0 {
        for f in [Control64::IoBitmapA, Control64::IoBitmapB] {
            let a = r.f(f);
            rep(r, page_ok(a), IoBitmapAddress, a);
        }
    }
    if c.proc & Pr::UseMsrBitmaps.bit() != 0 {
        let a = r.f(Control64::MsrBitmap);
        rep(r, page_ok(a), MsrBitmapAddress, a);
    }
    let vid = c.proc2 & P2::VirtualInterruptDelivery.bit() != 0;
    if c.proc & Pr::UseTprShadow.bit() != 0 {
        let a = r.f(Control64::VirtualApicAddress);
        rep(r, page_ok(a), VirtualApicAddress, a);
        if !vid {
            let t = r.f(Control32::TprThreshold);
            rep(r, t >> 4 == 0, TprThreshold, t);
        }
    } else {
        let needs = P2::VirtualizeX2apicMode.bit()
            | P2::ApicRegisterVirtualization.bit()
            | P2::VirtualInterruptDelivery.bit();
        rep(
            r,
            c.proc2 & needs == 0,
            ApicVirtualizationWithoutTprShadow,
            (c.proc2 & needs) as u64,
        );
    }
    let on = |v: u32, b: u32| v & b != 0;
    rep(
        r,
        on(c.pin, Pin::NmiExiting.bit()) || !on(c.pin, Pin::VirtualNmis.bit()),
        VirtualNmisWithoutNmiExiting,
        c.pin as u64,
    );
    rep(
        r,
        on(c.pin, Pin::VirtualNmis.bit()) || !on(c.proc, Pr::NmiWindowExiting.bit()),
        NmiWindowWithoutVirtualNmis,
        c.proc as u64,
    );
    if on(c.proc2, P2::VirtualizeApicAccesses.bit()) {
        let a = r.f(Control64::ApicAccessAddress);
        rep(r, page_ok(a), ApicAccessAddress, a);
    }
    rep(
        r,
        !(on(c.proc2, P2::VirtualizeX2apicMode.bit())
            && on(c.proc2, P2::VirtualizeApicAccesses.bit())),
        X2apicWithApicAccesses,
        c.proc2 as u64,
    );
    rep(
        r,
        !vid || on(c.pin, Pin::ExternalInterruptExiting.bit()),
        VirtualInterruptDeliveryWithoutExtIntExiting,
        c.pin as u64,
    );
    if on(c.pin, Pin::PostedInterrupts.bit()) {
        let vector = r.f(Control16::PostedInterruptNotificationVector);
        let desc = r.f(Control64::PostedInterruptDescriptor);
        let ok = vid
            && on(c.exit, Ex::AcknowledgeInterruptOnExit.bit())
            && vector >> 8 == 0
            && desc & 0x3f == 0
            && desc >> width == 0;
        rep(r, ok, PostedInterrupts, desc);
    }
    if on(c.proc2, P2::EnableVpid.bit()) {
        let vpid = r.f(Control16::Vpid);
        rep(r, vpid != 0, VpidZero, vpid);
    }
    let ept = on(c.proc2, P2::EnableEpt.bit());
    if ept {
        let eptp = r.f(Control64::EptPointer);
        let e = caps.ept_vpid;
        let mt_ok = match eptp & 7 {
            0 => e.memory_type_uc(),
            6 => e.memory_type_wb(),
            _ => false,
        };
        rep(r, mt_ok, EptpMemoryType, eptp);
        let wl_ok = match (eptp >> 3) & 7 {
            3 => e.walk_length_4(),
            4 => e.walk_length_5(),
            _ => false,
        };
        rep(r, wl_ok, EptpWalkLength, eptp);
        rep(
            r,
            eptp & (1 << 6) == 0 || e.accessed_dirty(),
            EptpAccessDirty,
            eptp,
        );
        let reserved = if e.supervisor_shadow_stack() {
            0xf00
        } else {
            0xf80
        };
        rep(
            r,
            eptp & reserved == 0 && eptp >> width == 0,
            EptpReservedBits,
            eptp,
        );
    }
    rep(
        r,
        !on(c.proc2, P2::UnrestrictedGuest.bit()) || ept,
        UnrestrictedGuestWithoutEpt,
        c.proc2 as u64,
    );
    if on(c.proc2, P2::EnablePml.bit()) {
        let a = r.f(Control64::PmlAddress);
        rep(r, ept && page_ok(a), PmlAddress, a);
    }
    if on(c.proc2, P2::EnableVmFunctions.bit()) {
        let f = r.f(Control64::VmFunctionControls);
        let mut ok = f & !caps.vmfunc == 0;
        if f & 1 != 0 {
            let list = r.f(Control64::EptpListAddress);
            ok &= ept && page_ok(list);
        }
        rep(r, ok, VmFunctionControls, f);
    }
    if on(c.proc2, P2::VmcsShadowing.bit()) {
        for f in [Control64::VmreadBitmap, Control64::VmwriteBitmap] {
            let a = r.f(f);
            rep(r, page_ok(a), VmcsShadowingBitmaps, a);
        }
    }
    if on(c.proc2, P2::EptViolationVe.bit()) {
        let a = r.f(Control64::VeInformationAddress);
        rep(r, page_ok(a), VeInformationAddress, a);
    }
    rep(
        r,
        on(c.pin, Pin::PreemptionTimer.bit()) || !on(c.exit, Ex::SavePreemptionTimer.bit()),
        SavePreemptionTimerWithoutTimer,
        c.exit as u64,
    );
    for (count, addr, rule) in [
        (
            Control32::ExitMsrStoreCount,
            Control64::ExitMsrStoreAddress,
            ExitMsrStoreAddress,
        ),
        (
            Control32::ExitMsrLoadCount,
            Control64::ExitMsrLoadAddress,
            ExitMsrLoadAddress,
        ),
        (
            Control32::EntryMsrLoadCount,
            Control64::EntryMsrLoadAddress,
            EntryMsrLoadAddress,
        ),
    ] {
        let n = r.f(count);
        if n != 0 {
            let a = r.f(addr);
            let last = a.saturating_add(n * 16 - 1);
            rep(r, a & 0xf == 0 && last >> width == 0, rule, a);
        }
    }
    let smm = En::EntryToSmm.bit() | En::DeactivateDualMonitor.bit();
    rep(r, c.entry & smm == 0, EntryToSmm, c.entry as u64);

    let info = r.f(Control32::EntryInterruptionInfo);
    if info & (1 << 31) != 0 {
        let kind = (info >> 8) & 7;
        let vector = info & 0xff;
        let mtf = caps.proc.effective().allows(Pr::MonitorTrapFlag.bit());
        rep(r, kind != 1 && (kind != 7 || mtf), EntryEventType, info);
        let vector_ok = match kind {
            2 => vector == 2,
            3 => vector <= 31,
            7 => vector == 0,
            _ => true,
        };
        rep(r, vector_ok, EntryEventVector, info);
        let cr0 = r.f(GuestN::Cr0);
        let protected = !on(c.proc2, P2::UnrestrictedGuest.bit()) || cr0 & CR0_PE != 0;
        let takes_code = protected && kind == 3 && matches!(vector, 8 | 10..=14 | 17 | 21);
        let delivers = info & (1 << 11) != 0;
        let code_ok = if caps.basic.no_error_code_consistency {
            !delivers || (protected && kind == 3)
        } else {
            delivers == takes_code
        };
        rep(r, code_ok, EntryEventErrorCode, info);
        rep(r, info & 0x7fff_f000 == 0, EntryEventReservedBits, info);
        if delivers {
            let code = r.f(Control32::EntryExceptionErrorCode);
            rep(r, code >> 16 == 0, EntryErrorCodeReserved, code);
        }
        if matches!(kind, 4..=6) {
            let len = r.f(Control32::EntryInstructionLength);
            let min = if caps.misc.zero_length_injection {
                0
            } else {
                1
            };
            rep(r, (min..=15).contains(&len), EntryInstructionLength, len);
        }
    }
}

fn check_host<V: VmcsAccess + ?Sized>(r: &mut Reader<'_, V>, caps: &VmxCapabilities) {
    use Rule::*;
    let exit = r.f(Control32::ExitControls) as u32;
    let entry = r.f(Control32::EntryControls) as u32;
    let host64 = exit & Ex::HostAddressSpaceSize.bit() != 0;
    let width = caps.phys_addr_bits.min(63);
    let rep = |r: &mut Reader<'_, V>, ok: bool, rule, v| r.report.check(ok, rule, v);
    let cr0 = r.f(HostN::Cr0);
    rep(
        r,
        caps.cr0.violations(cr0) == 0,
        HostCr0Fixed,
        caps.cr0.violations(cr0),
    );
    let cr4 = r.f(HostN::Cr4);
    rep(
        r,
        caps.cr4.violations(cr4) == 0,
        HostCr4Fixed,
        caps.cr4.violations(cr4),
    );
    let cr3 = r.f(HostN::Cr3);
    rep(r, cr3 >> width == 0, HostCr3Width, cr3);
    for f in [HostN::SysenterEsp, HostN::SysenterEip] {
        let a = r.f(f);
        rep(r, canonical(a), HostSysenterCanonical, a);
    }
    if exit & Ex::LoadPat.bit() != 0 {
        let pat = r.f(Host64::Pat);
        rep(r, pat_valid(pat), HostPat, pat);
    }
    if exit & Ex::LoadEfer.bit() != 0 {
        let efer = r.f(Host64::Efer);
        rep(r, efer & !0xd01 == 0, HostEferReserved, efer);
        let lma = efer & (1 << 10) != 0;
        let lme = efer & (1 << 8) != 0;
        rep(r, lma == host64 && lme == host64, HostEferLmaLme, efer);
    }
    let sels = [
        Host16::EsSelector,
        Host16::CsSelector,
        Host16::SsSelector,
        Host16::DsSelector,
        Host16::FsSelector,
        Host16::GsSelector,
        Host16::TrSelector,
    ];
    for f in sels {
        let s = r.f(f);
        rep(r, s & 7 == 0, HostSelectorRplTi, s);
    }
    let cs = r.f(Host16::CsSelector);
    rep(r, cs != 0, HostCsNull, cs);
    let tr = r.f(Host16::TrSelector);
    rep(r, tr != 0, HostTrNull, tr);
    if !host64 {
        let ss = r.f(Host16::SsSelector);
        rep(r, ss != 0, HostSsNull, ss);
    }
    for f in [
        HostN::FsBase,
        HostN::GsBase,
        HostN::GdtrBase,
        HostN::IdtrBase,
        HostN::TrBase,
    ] {
        let a = r.f(f);
        rep(r, canonical(a), HostBaseNotCanonical, a);
    }
    rep(r, host64, HostAddressSpaceSize, exit as u64);
    let rip = r.f(HostN::Rip);
    if host64 {
        rep(r, cr4 & CR4_PAE != 0, HostCr4Pae, cr4);
        rep(r, canonical(rip), HostRipNotCanonical, rip);
    } else {
        rep(
            r,
            entry & En::Ia32eModeGuest.bit() == 0,
            HostIa32eGuestWithoutHost64,
            entry as u64,
        );
    }
}

/// Segment fields as read from the VMCS.
#[derive(Clone, Copy)]
struct Seg {
    sel: u64,
    base: u64,
    limit: u64,
    ar: u64,
}

impl Seg {
    fn usable(self) -> bool {
        self.ar & (1 << 16) == 0
    }
    fn kind(self) -> u64 {
        self.ar & 0xf
    }
    fn s(self) -> bool {
        self.ar & (1 << 4) != 0
    }
    fn dpl(self) -> u64 {
        (self.ar >> 5) & 3
    }
    fn present(self) -> bool {
        self.ar & (1 << 7) != 0
    }
    fn limit_granularity_ok(self) -> bool {
        let g = self.ar & (1 << 15) != 0;
        (self.limit & 0xfff == 0xfff || !g) && (self.limit >> 20 == 0 || g)
    }
    fn reserved_ok(self) -> bool {
        self.ar & 0xfffe_0f00 == 0
    }
}

fn check_guest<V: VmcsAccess + ?Sized>(r: &mut Reader<'_, V>, caps: &VmxCapabilities) {
    use Rule::*;
    let c = Ctl::read(r);
    let width = caps.phys_addr_bits.min(63);
    let ug = c.proc2 & P2::UnrestrictedGuest.bit() != 0;
    let ia32e = c.entry & En::Ia32eModeGuest.bit() != 0;
    let load_debug = c.entry & En::LoadDebugControls.bit() != 0;
    let rep = |r: &mut Reader<'_, V>, ok: bool, rule, v| r.report.check(ok, rule, v);

    let cr0 = r.f(GuestN::Cr0);
    let mut fixed = caps.cr0;
    if ug {
        fixed.fixed0 &= !(CR0_PE | CR0_PG);
    }
    rep(
        r,
        fixed.violations(cr0) == 0,
        GuestCr0Fixed,
        fixed.violations(cr0),
    );
    rep(
        r,
        cr0 & CR0_PG == 0 || cr0 & CR0_PE != 0,
        GuestCr0PgWithoutPe,
        cr0,
    );
    let cr4 = r.f(GuestN::Cr4);
    rep(
        r,
        caps.cr4.violations(cr4) == 0,
        GuestCr4Fixed,
        caps.cr4.violations(cr4),
    );
    rep(
        r,
        cr4 & (1 << 23) == 0 || cr0 & (1 << 16) != 0,
        GuestCr4CetWithoutWp,
        cr4,
    );
    let debugctl = if load_debug {
        r.f(Guest64::Debugctl)
    } else {
        0
    };
    rep(
        r,
        debugctl & 0xffff_ffff_ffff_003c == 0,
        GuestDebugctlReserved,
        debugctl,
    );
    if ia32e {
        rep(
            r,
            cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0,
            GuestIa32eWithoutPaging,
            cr0,
        );
    } else {
        rep(r, cr4 & (1 << 17) == 0, GuestPcideOutsideIa32e, cr4);
    }
    let cr3 = r.f(GuestN::Cr3);
    rep(r, cr3 >> width == 0, GuestCr3Width, cr3);
    if load_debug {
        let dr7 = r.f(GuestN::Dr7);
        rep(r, dr7 >> 32 == 0, GuestDr7Upper, dr7);
    }
    for f in [GuestN::SysenterEsp, GuestN::SysenterEip] {
        let a = r.f(f);
        rep(r, canonical(a), GuestSysenterCanonical, a);
    }
    if c.entry & En::LoadPat.bit() != 0 {
        let pat = r.f(Guest64::Pat);
        rep(r, pat_valid(pat), GuestPat, pat);
    }
    if c.entry & En::LoadEfer.bit() != 0 {
        let efer = r.f(Guest64::Efer);
        rep(r, efer & !0xd01 == 0, GuestEferReserved, efer);
        rep(r, (efer & (1 << 10) != 0) == ia32e, GuestEferLma, efer);
        if cr0 & CR0_PG != 0 {
            rep(r, (efer & (1 << 8) != 0) == ia32e, GuestEferLme, efer);
        }
    }

    // Segment registers.
    let mut seg = [Seg {
        sel: 0,
        base: 0,
        limit: 0,
        ar: 0,
    }; 8];
    for (s, reg) in seg.iter_mut().zip(SegmentRegister::ALL) {
        *s = Seg {
            sel: r.get(reg.selector_field()),
            base: r.get(reg.base_field()),
            limit: r.get(reg.limit_field()),
            ar: r.get(reg.access_rights_field()),
        };
    }
    let [es, cs, ss, ds, fs, gs, ldtr, tr] = seg;
    let rflags = r.f(GuestN::Rflags);
    let v86 = rflags & (1 << 17) != 0;
    rep(r, tr.sel & 4 == 0, GuestTrTi, tr.sel);
    if ldtr.usable() {
        rep(r, ldtr.sel & 4 == 0, GuestLdtrTi, ldtr.sel);
    }
    if !v86 && !ug {
        rep(r, ss.sel & 3 == cs.sel & 3, GuestSsCsRpl, ss.sel);
    }
    if v86 {
        for s in [cs, ss, ds, es, fs, gs] {
            let ok = s.base == s.sel << 4 && s.limit == 0xffff && s.ar == 0xf3;
            rep(r, ok, GuestV86Segment, s.sel);
        }
    }
    for s in [tr, fs, gs] {
        rep(r, canonical(s.base), GuestBaseNotCanonical, s.base);
    }
    if ldtr.usable() {
        rep(r, canonical(ldtr.base), GuestBaseNotCanonical, ldtr.base);
    }
    rep(r, cs.base >> 32 == 0, GuestBaseUpperBits, cs.base);
    for s in [ss, ds, es] {
        if s.usable() {
            rep(r, s.base >> 32 == 0, GuestBaseUpperBits, s.base);
        }
    }
    if !v86 {
        let cs_type_ok = matches!(cs.kind(), 9 | 11 | 13 | 15) || (ug && cs.kind() == 3);
        rep(r, cs_type_ok, GuestCsType, cs.ar);
        if ss.usable() {
            rep(r, matches!(ss.kind(), 3 | 7), GuestSsType, ss.ar);
        }
        for s in [ds, es, fs, gs] {
            if s.usable() {
                let ok = s.kind() & 1 != 0 && (s.kind() & 8 == 0 || s.kind() & 2 != 0);
                rep(r, ok, GuestDataSegmentType, s.ar);
            }
        }
        for (s, always) in [
            (cs, true),
            (ss, false),
            (ds, false),
            (es, false),
            (fs, false),
            (gs, false),
        ] {
            if always || s.usable() {
                rep(r, s.s(), GuestSegmentS, s.ar);
                rep(r, s.present(), GuestSegmentNotPresent, s.ar);
                rep(r, s.reserved_ok(), GuestAccessRightsReserved, s.ar);
                rep(
                    r,
                    s.limit_granularity_ok(),
                    GuestSegmentLimitGranularity,
                    s.limit,
                );
            }
        }
        let cs_dpl_ok = match cs.kind() {
            3 => cs.dpl() == 0,
            9 | 11 => cs.dpl() == ss.dpl(),
            _ => cs.dpl() <= ss.dpl(),
        };
        rep(r, cs_dpl_ok, GuestCsDpl, cs.ar);
        let ss_dpl_ok = (ug || ss.dpl() == ss.sel & 3)
            && ((cs.kind() != 3 && cr0 & CR0_PE != 0) || ss.dpl() == 0);
        rep(r, ss_dpl_ok, GuestSsDpl, ss.ar);
        if !ug {
            for s in [ds, es, fs, gs] {
                if s.usable() && s.kind() <= 11 {
                    rep(r, s.dpl() >= s.sel & 3, GuestDataSegmentDpl, s.ar);
                }
            }
        }
        if ia32e && cs.ar & (1 << 13) != 0 {
            rep(r, cs.ar & (1 << 14) == 0, GuestCsLongModeDb, cs.ar);
        }
    }
    // TR and LDTR.
    rep(r, tr.usable(), GuestTrUnusable, tr.ar);
    let tr_type_ok = (tr.kind() == 11 || (!ia32e && tr.kind() == 3)) && !tr.s() && tr.present();
    rep(r, tr_type_ok, GuestTrType, tr.ar);
    rep(r, tr.reserved_ok(), GuestAccessRightsReserved, tr.ar);
    rep(
        r,
        tr.limit_granularity_ok(),
        GuestSegmentLimitGranularity,
        tr.limit,
    );
    if ldtr.usable() {
        rep(
            r,
            ldtr.kind() == 2 && !ldtr.s() && ldtr.present(),
            GuestLdtrType,
            ldtr.ar,
        );
        rep(r, ldtr.reserved_ok(), GuestAccessRightsReserved, ldtr.ar);
        rep(
            r,
            ldtr.limit_granularity_ok(),
            GuestSegmentLimitGranularity,
            ldtr.limit,
        );
    }
    // GDTR and IDTR.
    for (b, l) in [
        (GuestN::GdtrBase, Guest32::GdtrLimit),
        (GuestN::IdtrBase, Guest32::IdtrLimit),
    ] {
        let base = r.f(b);
        rep(r, canonical(base), GuestDescriptorTableBase, base);
        let limit = r.f(l);
        rep(r, limit >> 16 == 0, GuestDescriptorTableLimit, limit);
    }
    // RIP and RFLAGS.
    let rip = r.f(GuestN::Rip);
    if ia32e && cs.ar & (1 << 13) != 0 {
        rep(r, canonical(rip), GuestRipNotCanonical, rip);
    } else {
        rep(r, rip >> 32 == 0, GuestRipUpperBits, rip);
    }
    let reserved = !0x3f_ffffu64 | 1 << 15 | 1 << 5 | 1 << 3;
    rep(
        r,
        rflags & reserved == 0 && rflags & 2 != 0,
        GuestRflagsReserved,
        rflags,
    );
    if ia32e || cr0 & CR0_PE == 0 {
        rep(r, !v86, GuestRflagsVm, rflags);
    }
    let event = r.f(Control32::EntryInterruptionInfo);
    let injecting = event & (1 << 31) != 0;
    let event_kind = (event >> 8) & 7;
    let event_vector = event & 0xff;
    let injecting_type = |k| injecting && event_kind == k;
    let ext_int = InterruptionType::ExternalInterrupt as u64;
    let nmi = InterruptionType::Nmi as u64;
    if injecting_type(ext_int) {
        rep(r, rflags & (1 << 9) != 0, GuestRflagsIf, rflags);
    }
    // Activity and interruptibility state.
    let activity = r.f(Guest32::ActivityState);
    let supported = match activity {
        0 => true,
        1 => caps.misc.activity_hlt,
        2 => caps.misc.activity_shutdown,
        3 => caps.misc.activity_wait_for_sipi,
        _ => false,
    };
    rep(r, supported, GuestActivityState, activity);
    if activity == 1 {
        rep(r, ss.dpl() == 0, GuestActivityHltDpl, ss.ar);
    }
    let intr = r.f(Guest32::InterruptibilityState);
    let (sti, mov_ss) = (intr & 1 != 0, intr & 2 != 0);
    rep(
        r,
        activity == 0 || !(sti || mov_ss),
        GuestActivityBlocking,
        intr,
    );
    if injecting {
        let ok = match activity {
            1 => {
                matches!(event_kind, 0 | 2 | 7)
                    || (event_kind == 3 && matches!(event_vector, 1 | 18))
            }
            2 => event_kind == 2 || (event_kind == 3 && event_vector == 18),
            3 => false,
            _ => true,
        };
        rep(r, ok, GuestActivityEvent, event);
    }
    rep(r, intr >> 5 == 0, GuestInterruptibilityReserved, intr);
    rep(r, !(sti && mov_ss), GuestInterruptibilityStiMovSs, intr);
    rep(
        r,
        !sti || rflags & (1 << 9) != 0,
        GuestInterruptibilityStiIf,
        intr,
    );
    if injecting_type(ext_int) {
        rep(r, !sti && !mov_ss, GuestInterruptibilityExtInt, intr);
    }
    if injecting_type(nmi) {
        let nmi_blocked = c.pin & Pin::VirtualNmis.bit() != 0 && intr & 8 != 0;
        rep(r, !mov_ss && !nmi_blocked, GuestInterruptibilityNmi, intr);
    }
    rep(r, intr & 4 == 0, GuestInterruptibilitySmi, intr);
    // Pending debug exceptions.
    let pending = r.f(GuestN::PendingDebugExceptions);
    let pending_reserved = 0xff0 | 1 << 13 | 1 << 15 | !0x1_ffffu64;
    rep(
        r,
        pending & pending_reserved == 0,
        GuestPendingDebugReserved,
        pending,
    );
    if sti || mov_ss || activity == 1 {
        let tf = rflags & (1 << 8) != 0;
        let btf = debugctl & 2 != 0;
        let bs = pending & (1 << 14) != 0;
        rep(r, bs == (tf && !btf), GuestPendingDebugBs, pending);
    }
    // VMCS link pointer.
    let link = r.f(Guest64::VmcsLinkPointer);
    let ok = if c.proc2 & P2::VmcsShadowing.bit() != 0 {
        link == u64::MAX || (link & 0xfff == 0 && link >> width == 0)
    } else {
        link == u64::MAX
    };
    rep(r, ok, GuestVmcsLinkPointer, link);
}
