//! Host tests over recorded Bochs 2.7 CPU models (testdata/, read from the
//! IA32_VMX_* MSRs by an image running under each `cpu: model=`).

extern crate std;

use std::boxed::Box;

use super::caps::*;
use super::check::Stage;
use super::controls::DEFAULT1;
use super::state::*;
use super::*;

const MODELS: &[(&str, &str)] = &[
    ("broadwell_ult", include_str!("testdata/broadwell_ult.txt")),
    (
        "core2_penryn_t9600",
        include_str!("testdata/core2_penryn_t9600.txt"),
    ),
    ("corei3_cnl", include_str!("testdata/corei3_cnl.txt")),
    (
        "corei5_arrandale_m520",
        include_str!("testdata/corei5_arrandale_m520.txt"),
    ),
    (
        "corei5_lynnfield_750",
        include_str!("testdata/corei5_lynnfield_750.txt"),
    ),
    (
        "corei7_haswell_4770",
        include_str!("testdata/corei7_haswell_4770.txt"),
    ),
    (
        "corei7_icelake_u",
        include_str!("testdata/corei7_icelake_u.txt"),
    ),
    (
        "corei7_ivy_bridge_3770k",
        include_str!("testdata/corei7_ivy_bridge_3770k.txt"),
    ),
    (
        "corei7_sandy_bridge_2600k",
        include_str!("testdata/corei7_sandy_bridge_2600k.txt"),
    ),
    (
        "corei7_skylake_x",
        include_str!("testdata/corei7_skylake_x.txt"),
    ),
    ("tigerlake", include_str!("testdata/tigerlake.txt")),
];

fn raw(model: &str) -> RawVmxMsrs {
    let text = MODELS
        .iter()
        .find(|m| m.0 == model)
        .expect("model recorded")
        .1;
    RawVmxMsrs::parse(text).expect("recording parses")
}

fn caps(model: &str) -> VmxCapabilities {
    VmxCapabilities::decode(&raw(model)).expect("mandatory MSRs recorded")
}

fn page() -> &'static mut Page4K {
    Box::leak(Box::new(Page4K::zeroed()))
}

#[test]
fn decodes_skylake_basic_misc_and_fixed_bits() {
    let c = caps("corei7_skylake_x");
    // IA32_VMX_BASIC 0x00d810000000002b: revision 0x2b, 4096 bytes,
    // memory type WB (6), INS/OUTS info (54), TRUE controls (55).
    assert_eq!(c.basic.revision_id, 0x2b);
    assert_eq!(c.basic.region_size, 4096);
    assert_eq!(c.basic.memory_type, 6);
    assert!(c.basic.ins_outs_info && c.basic.true_controls && !c.basic.addresses_32bit);
    // IA32_VMX_MISC 0x600401e0: rate 0, LMA store, HLT/shutdown/SIPI,
    // 4 CR3 targets, 512 MSRs, VMWRITE to any field, zero-length injection.
    assert_eq!(c.misc.preemption_timer_rate, 0);
    assert!(c.misc.stores_lma && c.misc.activity_hlt && c.misc.activity_shutdown);
    assert!(
        c.misc.activity_wait_for_sipi && c.misc.vmwrite_any_field && c.misc.zero_length_injection
    );
    assert_eq!((c.misc.cr3_targets, c.misc.max_msr_list), (4, 512));
    // CR0 must have PE, NE, PG; CR4 must have VMXE.
    assert_eq!(c.cr0.fixed0, 0x8000_0021);
    assert_eq!(c.cr4.fixed0, 0x2000);
    assert_eq!(c.cr4.apply(0x20), 0x2020);
    assert_eq!(c.cr4.violations(0x20 | 1 << 24), 0x2000 | 1 << 24);
    assert_eq!(c.max_vmcs_index, 0x1a);
    // TRUE procbased clears CR3-load/store exiting from must-be-one.
    assert_eq!(c.proc.legacy.must_be_one, 0x0401_e172);
    assert_eq!(c.proc.effective().must_be_one, 0x0400_6172);
    assert_eq!(c.vmfunc, 1);
}

#[test]
fn decodes_ept_vpid_capabilities_per_model() {
    // Skylake-X 0x00000f0106334141: execute-only, 4-level, UC, WB, 2M, 1G,
    // INVEPT, A/D, single/all-context INVEPT, INVVPID with all four types.
    let e = caps("corei7_skylake_x").ept_vpid;
    assert!(e.execute_only() && e.walk_length_4() && !e.walk_length_5());
    assert!(e.memory_type_uc() && e.memory_type_wb() && e.pages_2m() && e.pages_1g());
    assert!(
        e.invept() && e.accessed_dirty() && e.invept_single_context() && e.invept_all_context()
    );
    assert!(
        e.invvpid()
            && e.invvpid_individual_address()
            && e.invvpid_single_context_retaining_globals()
    );
    // Sandy Bridge 0x06114141: 2M only, no A/D, no 1G.
    let e = caps("corei7_sandy_bridge_2600k").ept_vpid;
    assert!(e.pages_2m() && !e.pages_1g() && !e.accessed_dirty());
    // Penryn has no EPT/VPID MSR at all.
    assert_eq!(caps("core2_penryn_t9600").ept_vpid.0, 0);
    assert_eq!(caps("corei7_icelake_u").basic.revision_id, 4);
}

#[test]
fn recordings_parse_strictly() {
    assert_eq!(
        RawVmxMsrs::parse("0x480 zz"),
        Err(RecordingError { line: 1 })
    );
    assert_eq!(
        RawVmxMsrs::parse("# c\n\n0x480 1 2"),
        Err(RecordingError { line: 3 })
    );
    let r = RawVmxMsrs::parse("480 2b\nphys_addr_bits 46\n0x999 1").unwrap();
    assert_eq!(
        (r.get(0x480), r.phys_addr_bits, r.get(0x481)),
        (Some(0x2b), 46, None)
    );
    assert_eq!(VmxCapabilities::decode(&r), Err(MissingMsr(0x481)));
}

#[test]
fn true_controls_are_mandatory_only_when_basic_announces_them() {
    // IA32_VMX_BASIC bit 55: the TRUE_ control MSRs 0x48D-0x490 exist.
    let mut r = raw("corei7_skylake_x");
    r.present &= !(1 << (0x48e - 0x480));
    assert_eq!(VmxCapabilities::decode(&r), Err(MissingMsr(0x48e)));
    r.set(0x480, r.get(0x480).unwrap() & !(1 << 55));
    assert!(VmxCapabilities::decode(&r).is_ok());
}

#[test]
fn optional_msrs_absent_from_the_mask_decode_as_zero() {
    // IA32_VMX_EPT_VPID_CAP (0x48C) is optional: when the mask does not list
    // it, it reads as 0 whatever its value slot holds.
    let mut r = raw("corei7_skylake_x");
    assert_ne!(VmxCapabilities::decode(&r).unwrap().ept_vpid.0, 0);
    r.present &= !(1 << (0x48c - 0x480));
    assert_eq!(VmxCapabilities::decode(&r).unwrap().ept_vpid.0, 0);
}

#[test]
fn feature_control_is_locked_with_vmx_enabled() {
    // Bit 0 lock, bit 2 VMX outside SMX (SDM Vol. 3C 24.7).
    assert_eq!(feature_control_update(0x5), Ok(None));
    assert_eq!(feature_control_update(0x0), Ok(Some(0x5)));
    assert_eq!(feature_control_update(0x2), Ok(Some(0x7)));
    assert_eq!(
        feature_control_update(0x1),
        Err(VmxDisabledByFirmware { feature_control: 1 })
    );
}

#[test]
fn default1_bits_are_forced_without_true_controls() {
    // The same CPU with IA32_VMX_BASIC bit 55 clear: only legacy MSRs apply,
    // so the SDM's default1 bits (A.3.2: CR3-load/store exiting ...) stay set.
    let mut r = raw("corei7_skylake_x");
    r.set(0x480, r.get(0x480).unwrap() & !(1 << 55));
    let c = VmxCapabilities::decode(&r).unwrap();
    assert!(c.pin.true_.is_none());
    let s = ControlRequest::new().reconcile(&c).unwrap();
    for (value, default1) in [s.pin, s.proc, s.exit, s.entry].into_iter().zip(DEFAULT1) {
        assert_eq!(value & default1, default1);
    }
    assert!(s.has(ProcControl::Cr3LoadExiting) && s.has(ProcControl::Cr3StoreExiting));
    // With TRUE controls they can be cleared.
    let s = ControlRequest::new()
        .reconcile(&caps("corei7_skylake_x"))
        .unwrap();
    assert!(!s.has(ProcControl::Cr3LoadExiting) && !s.has(ProcControl::Cr3StoreExiting));
    assert!(!s.has(EntryControl::LoadDebugControls));
}

#[test]
fn reconcile_names_missing_required_controls() {
    // Penryn: no EFER load (exit bit 21 / entry bit 15 not allowed), no EPT.
    let req = ControlRequest::new()
        .require(ExitControl::LoadEfer)
        .require(Proc2Control::EnableEpt)
        .require(ProcControl::HltExiting);
    let err = req.reconcile(&caps("core2_penryn_t9600")).unwrap_err();
    assert_eq!(
        err.missing.as_slice(),
        &[
            Control::Proc2Control(Proc2Control::EnableEpt),
            Control::ExitControl(ExitControl::LoadEfer)
        ]
    );
    // Lynnfield: EPT yes, unrestricted guest no.
    let req = ControlRequest::new().require(Proc2Control::UnrestrictedGuest);
    let err = req.reconcile(&caps("corei5_lynnfield_750")).unwrap_err();
    assert_eq!(
        err.missing.as_slice(),
        &[Control::Proc2Control(Proc2Control::UnrestrictedGuest)]
    );
    // Sandy Bridge has it, and EPT comes with it.
    let s = req.reconcile(&caps("corei7_sandy_bridge_2600k")).unwrap();
    assert!(s.has(Proc2Control::UnrestrictedGuest) && s.has(Proc2Control::EnableEpt));
    assert!(s.has(ProcControl::ActivateSecondaryControls));
}

#[test]
fn reconcile_drops_and_reports_optional_controls() {
    let req = broken::baseline_request().prefer(PinControl::PreemptionTimer);
    // Penryn: EPT, VPID, UG, EFER and PAT loads dropped; the timer (pin bit 6) is
    // not allowed either (0x3f).
    let s = req.reconcile(&caps("core2_penryn_t9600")).unwrap();
    for c in [
        Control::from(Proc2Control::EnableEpt),
        Proc2Control::EnableVpid.into(),
        Proc2Control::UnrestrictedGuest.into(),
        ExitControl::LoadEfer.into(),
        EntryControl::LoadPat.into(),
        PinControl::PreemptionTimer.into(),
    ] {
        assert!(s.dropped.contains(&c), "{c:?} dropped");
        assert!(!s.has(c));
    }
    assert!(s.has(ProcControl::HltExiting) && s.has(ExitControl::HostAddressSpaceSize));
    // Lynnfield: only unrestricted guest is dropped.
    let s = req.reconcile(&caps("corei5_lynnfield_750")).unwrap();
    assert_eq!(
        s.dropped.as_slice(),
        &[Control::Proc2Control(Proc2Control::UnrestrictedGuest)]
    );
    assert!(s.has(Proc2Control::EnableEpt) && s.has(Proc2Control::EnableVpid));
    // Skylake-X and Ice Lake: nothing dropped.
    for m in ["corei7_skylake_x", "corei7_icelake_u"] {
        let s = req.reconcile(&caps(m)).unwrap();
        assert!(s.dropped.is_empty(), "{m}: {:?}", s.dropped);
        assert!(s.has(EntryControl::LoadEfer) && s.has(PinControl::PreemptionTimer));
    }
    // Every model: the result respects the allowed settings.
    for (m, _) in MODELS {
        let c = caps(m);
        let s = req.reconcile(&c).unwrap();
        assert_eq!(c.pin.effective().violations(s.pin), 0, "{m}");
        assert_eq!(c.proc.effective().violations(s.proc), 0, "{m}");
        assert_eq!(c.proc2.violations(s.proc2), 0, "{m}");
        assert_eq!(c.exit.effective().violations(s.exit), 0, "{m}");
        assert_eq!(c.entry.effective().violations(s.entry), 0, "{m}");
    }
}

fn host() -> HostState {
    HostState {
        cr0: 0x8001_0033,
        cr3: 0x1000,
        cr4: CR4_PAE | CR4_VMXE,
        selectors: [0x10, 0x08, 0x10, 0x10, 0x10, 0x10, 0x18],
        fs_base: 0,
        gs_base: 0xffff_8000_0000_0000,
        tr_base: 0x5000,
        gdtr_base: 0x6000,
        idtr_base: 0x7000,
        sysenter: (0, 0, 0),
        efer: EFER_LME | EFER_LMA | 1 << 11,
        pat: PAT_DEFAULT,
        rip: 0x10_0000,
        rsp: 0x8000,
    }
}

/// The baseline the broken configurations start from.
fn baseline(c: &VmxCapabilities, guest: &GuestState) -> MemVmcs {
    let s = broken::baseline_request().reconcile(c).unwrap();
    let mut v = MemVmcs::for_cpu(c);
    setup_vmcs(&mut v, c, &s, &host(), guest).unwrap();
    v.write(vmcs::Control64::MsrBitmap, 0x20_0000).unwrap();
    if s.has(Proc2Control::EnableEpt) {
        // WB, 4-level walk, PML4 at 3 MiB.
        v.write(vmcs::Control64::EptPointer, 0x30_0000 | 3 << 3 | 6)
            .unwrap();
    }
    if s.has(Proc2Control::EnableVpid) {
        assign_vpid(&mut v, 1).unwrap();
    }
    v
}

fn long_mode() -> GuestState {
    GuestState::long_mode(0x9000, 0x40_0000, 0x80_0000)
}

#[test]
fn baselines_pass_the_checker_on_every_model() {
    for (m, _) in MODELS {
        let c = caps(m);
        let report = check_vm_entry(&baseline(&c, &long_mode()), &c);
        assert!(report.is_clean(), "{m}: {:?}", report.violations);
        assert_eq!(report.unreadable, None, "{m}");
    }
}

#[test]
fn real_and_protected_mode_guests_need_unrestricted_guest() {
    let missing = Err(GuestStateError::MissingCapability(
        Proc2Control::UnrestrictedGuest.into(),
    ));
    for m in ["corei5_lynnfield_750", "core2_penryn_t9600"] {
        assert_eq!(GuestState::real_mode(&caps(m), 0xf000, 0xfff0), missing);
        assert_eq!(
            GuestState::protected_mode_flat(&caps(m), 0x10_0000, 0x9000),
            missing
        );
    }
    for m in [
        "corei7_sandy_bridge_2600k",
        "corei7_skylake_x",
        "corei7_icelake_u",
    ] {
        let c = caps(m);
        for g in [
            GuestState::real_mode(&c, 0xf000, 0xfff0).unwrap(),
            GuestState::protected_mode_flat(&c, 0x10_0000, 0x9000).unwrap(),
        ] {
            let v = baseline(&c, &g);
            let report = check_vm_entry(&v, &c);
            assert!(report.is_clean(), "{m}: {:?}", report.violations);
            // The guest reads its own CR0; the VMCS adds NE but leaves PG clear.
            assert_eq!(v.read(vmcs::ControlN::Cr0ReadShadow), Ok(g.cr0));
            assert_eq!(
                v.read(vmcs::GuestN::Cr0).unwrap() & (CR0_NE | CR0_PG),
                CR0_NE
            );
            assert_eq!(
                v.read(vmcs::Control32::EntryControls).unwrap() & (1 << 9),
                0
            );
        }
        let real = GuestState::real_mode(&c, 0xf000, 0xfff0).unwrap();
        assert_eq!(real.segments[1].base, 0xf_0000);
    }
}

#[test]
fn cpus_without_efer_controls_refuse_efer_fields() {
    // On Penryn VMWRITE of the EFER fields fails with error 12; the setup
    // must not write them.
    let c = caps("core2_penryn_t9600");
    let mut v = MemVmcs::for_cpu(&c);
    assert_eq!(
        v.write(vmcs::Guest64::Efer, EFER_LMA),
        Err(VmcsError::Failed(VmInstructionError::UnsupportedComponent))
    );
    let v = baseline(&c, &long_mode());
    assert_eq!(
        v.read(vmcs::Control32::EntryControls).unwrap() & (1 << 15),
        0
    );
    assert!(check_vm_entry(&v, &c).is_clean());
}

#[test]
fn broken_configurations_are_named_by_their_rule() {
    let models = [
        "core2_penryn_t9600",
        "corei5_lynnfield_750",
        "corei7_sandy_bridge_2600k",
        "corei7_skylake_x",
        "corei7_icelake_u",
    ];
    let mut distinct_rules = std::vec::Vec::new();
    for m in models {
        let c = caps(m);
        for b in BROKEN_CONFIGS.iter().filter(|b| (b.applies)(&c)) {
            let mut v = baseline(&c, &long_mode());
            assert!(check_vm_entry(&v, &c).is_clean());
            (b.mutate)(&mut v, &c).unwrap();
            let report = check_vm_entry(&v, &c);
            let rules: std::vec::Vec<_> = report.violations.iter().map(|v| v.rule).collect();
            assert_eq!(rules, [b.rule], "{m} {}", b.name);
            let stage = match b.outcome {
                ExpectedOutcome::InstructionError(7) => Stage::Controls,
                ExpectedOutcome::InstructionError(8) => Stage::HostState,
                ExpectedOutcome::EntryFailure { reason: 33, .. } => Stage::GuestState,
                other => panic!("{}: unexpected outcome {other:?}", b.name),
            };
            assert_eq!(b.rule.stage(), stage, "{}", b.name);
            if !distinct_rules.contains(&b.rule) {
                distinct_rules.push(b.rule);
            }
        }
    }
    assert!(distinct_rules.len() >= 12, "{}", distinct_rules.len());
}

#[test]
fn checker_reports_every_violation_with_its_value() {
    let c = caps("corei7_skylake_x");
    let mut v = baseline(&c, &long_mode());
    v.write(vmcs::Host16::CsSelector, 0).unwrap();
    v.write(vmcs::Guest32::GdtrLimit, 0x1_0000).unwrap();
    v.write(vmcs::GuestN::Rflags, 0x8002).unwrap();
    v.write(vmcs::Control32::Cr3TargetCount, 9).unwrap();
    let r = check_vm_entry(&v, &c);
    let got: std::vec::Vec<_> = r
        .violations
        .iter()
        .map(|x| (x.rule.name(), x.value))
        .collect();
    assert_eq!(
        got,
        [
            ("controls.cr3_target_count", 9),
            ("host.cs.nonnull", 0),
            ("guest.gdtr_idtr.limit", 0x1_0000),
            ("guest.rflags.reserved", 0x8002),
        ]
    );
}

#[test]
fn checker_applies_segment_rules_of_the_sdm() {
    let c = caps("corei5_lynnfield_750"); // no unrestricted guest
    let check = |f: &dyn Fn(&mut MemVmcs)| {
        let mut v = baseline(&c, &long_mode());
        f(&mut v);
        let r = check_vm_entry(&v, &c);
        r.violations
            .iter()
            .map(|v| v.rule)
            .collect::<std::vec::Vec<_>>()
    };
    // SS.RPL != CS.RPL (without unrestricted guest).
    assert_eq!(
        check(&|v| v.write(vmcs::Guest16::SsSelector, 0x13).unwrap()),
        [Rule::GuestSsCsRpl, Rule::GuestSsDpl]
    );
    // Limit with G = 1 but low 12 bits not all ones.
    assert_eq!(
        check(&|v| v.write(vmcs::Guest32::DsLimit, 0xffff_f000).unwrap()),
        [Rule::GuestSegmentLimitGranularity]
    );
    // Not-present data segment.
    assert_eq!(
        check(&|v| v.update32(vmcs::Guest32::EsAccessRights, 0, 0x80).unwrap()),
        [Rule::GuestSegmentNotPresent]
    );
    // Unusable data segments are not checked.
    assert_eq!(
        check(&|v| v
            .write(vmcs::Guest32::FsAccessRights, 1 << 16 | 0x7)
            .unwrap()),
        []
    );
    // 64-bit code segment with D set.
    assert_eq!(
        check(&|v| v
            .update32(vmcs::Guest32::CsAccessRights, 1 << 14, 0)
            .unwrap()),
        [Rule::GuestCsLongModeDb]
    );
    // LDTR made usable with a data type.
    assert_eq!(
        check(&|v| v.write(vmcs::Guest32::LdtrAccessRights, 0x93).unwrap()),
        [Rule::GuestLdtrType]
    );
    // Injecting an external interrupt with IF = 0.
    assert_eq!(
        check(&|v| v
            .write(vmcs::Control32::EntryInterruptionInfo, 0x8000_0020)
            .unwrap()),
        [Rule::GuestRflagsIf]
    );
    // HLT with STI blocking.
    assert_eq!(
        check(&|v| {
            v.write(vmcs::Guest32::ActivityState, 1).unwrap();
            v.write(vmcs::GuestN::Rflags, 0x202).unwrap();
            v.write(vmcs::Guest32::InterruptibilityState, 1).unwrap();
        }),
        [Rule::GuestActivityBlocking]
    );
    // Hardware exception #GP without its error code.
    assert_eq!(
        check(&|v| v
            .write(vmcs::Control32::EntryInterruptionInfo, 0x8000_030d)
            .unwrap()),
        [Rule::EntryEventErrorCode]
    );
    // EPTP with accessed/dirty flags on a CPU without them (Lynnfield).
    assert_eq!(
        check(&|v| v
            .write(vmcs::Control64::EptPointer, 0x30_0000 | 1 << 6 | 3 << 3 | 6)
            .unwrap()),
        [Rule::EptpAccessDirty]
    );
}

#[test]
fn checker_applies_control_host_and_event_rules() {
    let run = |model: &str, f: &dyn Fn(&mut MemVmcs)| {
        let c = caps(model);
        let mut v = baseline(&c, &long_mode());
        f(&mut v);
        let r = check_vm_entry(&v, &c);
        r.violations
            .iter()
            .map(|v| v.rule)
            .collect::<std::vec::Vec<_>>()
    };
    let sky = "corei7_skylake_x";
    // Virtual NMIs (pin bit 5) without NMI exiting (pin bit 3).
    assert_eq!(
        run(sky, &|v| v
            .update32(vmcs::Control32::PinBasedControls, 1 << 5, 1 << 3)
            .unwrap()),
        [Rule::VirtualNmisWithoutNmiExiting]
    );
    // I/O bitmaps on, bitmap A not page aligned.
    assert_eq!(
        run(sky, &|v| {
            v.update32(
                vmcs::Control32::ProcBasedControls,
                ProcControl::UseIoBitmaps.bit(),
                0,
            )
            .unwrap();
            v.write(vmcs::Control64::IoBitmapA, 0x41_0010).unwrap();
            v.write(vmcs::Control64::IoBitmapB, 0x42_0000).unwrap();
        }),
        [Rule::IoBitmapAddress]
    );
    // Host EFER loaded with LMA clear while the host is 64-bit.
    assert_eq!(
        run(sky, &|v| v.write(vmcs::Host64::Efer, EFER_LME).unwrap()),
        [Rule::HostEferLmaLme]
    );
    // INT 0x80 injected with instruction length 0: allowed only where
    // IA32_VMX_MISC bit 30 says so (Skylake-X yes, Sandy Bridge no).
    let int80 = |v: &mut MemVmcs| {
        v.write(vmcs::Control32::EntryInterruptionInfo, 0x8000_0480)
            .unwrap()
    };
    assert_eq!(run(sky, &int80), []);
    assert_eq!(
        run("corei7_sandy_bridge_2600k", &int80),
        [Rule::EntryInstructionLength]
    );
    // HLT with RFLAGS.TF = 1 needs the BS bit of pending debug exceptions.
    let hlt_tf = |bs: u64| {
        move |v: &mut MemVmcs| {
            v.write(vmcs::Guest32::ActivityState, 1).unwrap();
            v.write(vmcs::GuestN::Rflags, 0x102).unwrap();
            v.write(vmcs::GuestN::PendingDebugExceptions, bs).unwrap();
        }
    };
    assert_eq!(run(sky, &hlt_tf(0)), [Rule::GuestPendingDebugBs]);
    assert_eq!(run(sky, &hlt_tf(1 << 14)), []);
    // RFLAGS.VM in IA-32e mode: refused, and the segments are not v8086 ones.
    let vm = run(sky, &|v| v.write(vmcs::GuestN::Rflags, 0x2_0002).unwrap());
    assert!(vm.contains(&Rule::GuestRflagsVm) && vm.contains(&Rule::GuestV86Segment));
}

#[test]
fn vmcs_region_carries_the_revision_id() {
    let c = caps("corei7_icelake_u");
    let p = page();
    p.0[100] = 0xaa;
    let v = Vmcs::new(p, &c);
    assert_eq!(v.header(), 4);
}

#[test]
fn controls_write_skips_inactive_secondary_controls() {
    let c = caps("core2_penryn_t9600");
    let s = ControlRequest::new().reconcile(&c).unwrap();
    assert!(!s.has(ProcControl::ActivateSecondaryControls));
    let mut v = MemVmcs::new();
    v.write(vmcs::Control32::ProcBasedControls2, 0xdead)
        .unwrap();
    s.write(&mut v).unwrap();
    assert_eq!(v.read(vmcs::Control32::ProcBasedControls2), Ok(0xdead));
    assert_eq!(v.read(vmcs::Control32::ExitControls), Ok(s.exit));
}

#[test]
fn msr_bitmap_layout_follows_sdm_25_6_9() {
    let mut b = MsrBitmap::pass_through(page());
    // EFER (0xC000_0080) reads: high-read quarter at 0x400, bit 0x80.
    b.intercept_read(0xc000_0080, true).unwrap();
    // MSR 0x10 writes: low-write quarter at 0x800, bit 0x10.
    b.intercept_write(0x10, true).unwrap();
    // MSR 0x1FFF reads: last bit of the low-read quarter.
    b.intercept_read(0x1fff, true).unwrap();
    let bytes = b.as_bytes();
    assert_eq!(bytes[0x400 + 0x80 / 8], 1);
    assert_eq!(bytes[0x800 + 2], 1);
    assert_eq!(bytes[0x3ff], 0x80);
    assert_eq!(bytes.iter().map(|b| b.count_ones()).sum::<u32>(), 3);
    assert!(b.intercepts(0xc000_0080, false) && !b.intercepts(0xc000_0080, true));
    assert_eq!(
        b.intercept_read(0x4000_0000, true),
        Err(bitmap::MsrOutOfRange(0x4000_0000))
    );
    assert!(b.intercepts(0x4000_0000, true));
}

#[test]
fn io_bitmaps_split_ports_at_0x8000() {
    let mut io = IoBitmap::pass_through(page(), page());
    io.intercept(0x3f8..=0x3ff, true);
    io.intercept(0x8000..=0x8000, true);
    io.intercept(0xffff..=0xffff, true);
    assert!(io.intercepts(0x3f8) && io.intercepts(0x3ff) && !io.intercepts(0x400));
    assert!(io.intercepts(0x8000) && io.intercepts(0xffff) && !io.intercepts(0x7fff));
    let mut v = MemVmcs::new();
    io.write_to(&mut v).unwrap();
    let a = v.read(vmcs::Control64::IoBitmapA).unwrap();
    let b = v.read(vmcs::Control64::IoBitmapB).unwrap();
    assert_eq!((a & 0xfff, b & 0xfff), (0, 0));
    // SAFETY: a and b are the addresses of live, leaked pages.
    let (pa, pb) = unsafe { (&*(a as *const Page4K), &*(b as *const Page4K)) };
    assert_eq!(pa.0[0x3f8 / 8], 0xff);
    assert_eq!((pb.0[0], pb.0[0xfff]), (1, 0x80));
}

#[test]
fn vpids_start_at_1_and_are_reused() {
    let mut a = Box::new(VpidAllocator::new());
    assert_eq!((a.allocate(), a.allocate()), (Some(1), Some(2)));
    a.free(1);
    assert_eq!(a.allocate(), Some(1));
    let mut n = 2;
    while a.allocate().is_some() {
        n += 1;
    }
    assert_eq!(n, 0xffff);
}

#[test]
fn preemption_timer_scales_by_misc_rate() {
    let mut r = raw("corei7_skylake_x");
    r.set(0x485, r.get(0x485).unwrap() | 5);
    let c = VmxCapabilities::decode(&r).unwrap();
    assert_eq!(preemption_timer_value(&c, 3200), 100);
    assert_eq!(preemption_timer_value(&c, u64::MAX), u32::MAX);
    let mut v = MemVmcs::for_cpu(&c);
    arm_preemption_timer(&mut v, &c, 64).unwrap();
    assert_eq!(v.read(vmcs::Guest32::PreemptionTimerValue), Ok(2));
}

#[test]
fn exit_stats_print_seen_reasons() {
    let mut s = ExitStats::default();
    s.record(10);
    s.record(10);
    s.add_cost(10, 300);
    s.record(200);
    let text = std::format!("{s}");
    let reason = if cfg!(feature = "diagnostics") {
        "Cpuid"
    } else {
        "reason 10"
    };
    assert_eq!(
        text,
        std::format!("{reason}: 2 exits, 300 ticks, 150 per exit\n")
    );
}

/// The APIC-virtualization controls each recorded model offers (IA32_VMX_PROCBASED_CTLS2
/// allowed-1 bits 0, 4, 8 and 9), as `(virtualize APIC accesses, virtualize
/// x2APIC mode, APIC-register virtualization, virtual-interrupt delivery)`.
fn apic_virtualization_offered(model: &str) -> (bool, bool, bool, bool) {
    match model {
        "corei7_skylake_x"
        | "corei7_haswell_4770"
        | "broadwell_ult"
        | "corei7_icelake_u"
        | "tigerlake" => (true, true, true, true),
        "corei7_sandy_bridge_2600k"
        | "corei7_ivy_bridge_3770k"
        | "corei5_arrandale_m520"
        | "corei5_lynnfield_750"
        | "corei3_cnl" => (true, true, false, false),
        "core2_penryn_t9600" => (true, false, false, false),
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn apic_virtualization_passes_the_checker_on_every_model() {
    for (m, _) in MODELS {
        let c = caps(m);
        let (accesses, x2apic, registers, delivery) = apic_virtualization_offered(m);
        assert!(
            c.proc.effective().allows(ProcControl::UseTprShadow.bit()),
            "{m}"
        );
        assert_eq!(
            (
                c.proc2_allows(Proc2Control::VirtualizeApicAccesses.bit()),
                c.proc2_allows(Proc2Control::VirtualizeX2apicMode.bit()),
                c.proc2_allows(Proc2Control::ApicRegisterVirtualization.bit()),
                c.proc2_allows(Proc2Control::VirtualInterruptDelivery.bit()),
            ),
            (accesses, x2apic, registers, delivery),
            "{m}"
        );
        // Everything wanted, x2APIC mode too: reconciliation keeps what the
        // model has and drops the x2APIC mode next to APIC accesses.
        let s = broken::baseline_request()
            .prefer(ProcControl::UseTprShadow)
            .prefer(Proc2Control::VirtualizeApicAccesses)
            .prefer(Proc2Control::VirtualizeX2apicMode)
            .prefer(Proc2Control::ApicRegisterVirtualization)
            .prefer(Proc2Control::VirtualInterruptDelivery)
            .reconcile(&c)
            .unwrap();
        assert!(s.has(ProcControl::UseTprShadow), "{m}");
        assert_eq!(s.has(Proc2Control::VirtualizeApicAccesses), accesses, "{m}");
        assert!(!s.has(Proc2Control::VirtualizeX2apicMode), "{m}");
        assert_eq!(
            s.has(Proc2Control::VirtualInterruptDelivery),
            delivery,
            "{m}"
        );
        // SDM 27.2.1.1: virtual-interrupt delivery needs external-interrupt exiting.
        assert!(
            !delivery || s.has(PinControl::ExternalInterruptExiting),
            "{m}"
        );
        let mut v = MemVmcs::for_cpu(&c);
        setup_vmcs(&mut v, &c, &s, &host(), &long_mode()).unwrap();
        v.write(vmcs::Control64::MsrBitmap, 0x20_0000).unwrap();
        if s.has(Proc2Control::EnableEpt) {
            v.write(vmcs::Control64::EptPointer, 0x30_0000 | 3 << 3 | 6)
                .unwrap();
        }
        if s.has(Proc2Control::EnableVpid) {
            assign_vpid(&mut v, 1).unwrap();
        }
        v.write(vmcs::Control64::VirtualApicAddress, 0x40_0000)
            .unwrap();
        v.write(vmcs::Control64::ApicAccessAddress, 0x41_0000)
            .unwrap();
        v.write(vmcs::Control32::TprThreshold, 0x5).unwrap();
        if delivery {
            v.write(vmcs::Guest16::InterruptStatus, 0x6050).unwrap();
            v.write(vmcs::Control64::EoiExitBitmap1, 1).unwrap();
        }
        let report = check_vm_entry(&v, &c);
        assert!(report.is_clean(), "{m}: {:?}", report.violations);
        // Without virtual-interrupt delivery the threshold's bits 31:4 matter.
        v.write(vmcs::Control32::TprThreshold, 0x15).unwrap();
        assert_eq!(
            check_vm_entry(&v, &c).has(Rule::TprThreshold),
            !delivery,
            "{m}"
        );
    }
}

#[test]
fn apic_virtualization_without_tpr_shadow_is_dropped() {
    // Without use TPR shadow, the SDM forbids the other three controls:
    // reconciliation drops them rather than produce an invalid VMCS.
    let c = caps("corei7_skylake_x");
    let s = broken::baseline_request()
        .prefer(Proc2Control::VirtualizeApicAccesses)
        .prefer(Proc2Control::ApicRegisterVirtualization)
        .prefer(Proc2Control::VirtualInterruptDelivery)
        .reconcile(&c)
        .unwrap();
    assert!(s.has(Proc2Control::VirtualizeApicAccesses));
    assert!(!s.has(Proc2Control::ApicRegisterVirtualization));
    assert!(!s.has(Proc2Control::VirtualInterruptDelivery));
    assert!(s
        .dropped
        .contains(&Proc2Control::VirtualInterruptDelivery.into()));
}
