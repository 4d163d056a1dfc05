//! The page/model synchronization against the SDM's pseudo-code (Vol. 3C,
//! "APIC Virtualization and Virtual Interrupts"): a small model of what the
//! processor does on the virtual-APIC page and the guest interrupt status
//! while the guest runs, between the run loop's `before_entry` and
//! `after_exit`.

extern crate std;

use std::boxed::Box;

use ponte_arch::vmx::{
    caps::{RawVmxMsrs, VmxCapabilities},
    check_vm_entry,
    controls::{PinControl, Proc2Control, ProcControl},
    setup_vmcs,
    vmcs::{Control32, Control64, Guest16},
    ControlRequest, GuestState, HostState, MemVmcs, Page4K, VmcsError, VmcsExt,
};

use super::*;
use crate::irq::lapic::{LapicConfig, LocalApic, DEFAULT_APIC_BASE};
use crate::irq::vectors::VectorSet;
use crate::time::ManualClock;

/// Every recorded Bochs CPU model (IA32_VMX_* MSRs).
const MODELS: [(&str, &str); 11] = [
    (
        "broadwell_ult",
        include_str!("../../../../arch/src/vmx/testdata/broadwell_ult.txt"),
    ),
    (
        "core2_penryn_t9600",
        include_str!("../../../../arch/src/vmx/testdata/core2_penryn_t9600.txt"),
    ),
    (
        "corei3_cnl",
        include_str!("../../../../arch/src/vmx/testdata/corei3_cnl.txt"),
    ),
    (
        "corei5_arrandale_m520",
        include_str!("../../../../arch/src/vmx/testdata/corei5_arrandale_m520.txt"),
    ),
    (
        "corei5_lynnfield_750",
        include_str!("../../../../arch/src/vmx/testdata/corei5_lynnfield_750.txt"),
    ),
    (
        "corei7_haswell_4770",
        include_str!("../../../../arch/src/vmx/testdata/corei7_haswell_4770.txt"),
    ),
    (
        "corei7_icelake_u",
        include_str!("../../../../arch/src/vmx/testdata/corei7_icelake_u.txt"),
    ),
    (
        "corei7_ivy_bridge_3770k",
        include_str!("../../../../arch/src/vmx/testdata/corei7_ivy_bridge_3770k.txt"),
    ),
    (
        "corei7_sandy_bridge_2600k",
        include_str!("../../../../arch/src/vmx/testdata/corei7_sandy_bridge_2600k.txt"),
    ),
    (
        "corei7_skylake_x",
        include_str!("../../../../arch/src/vmx/testdata/corei7_skylake_x.txt"),
    ),
    (
        "tigerlake",
        include_str!("../../../../arch/src/vmx/testdata/tigerlake.txt"),
    ),
];

fn caps(model: &str) -> VmxCapabilities {
    let text = MODELS.iter().find(|m| m.0 == model).unwrap().1;
    VmxCapabilities::decode(&RawVmxMsrs::parse(text).unwrap()).unwrap()
}

fn page() -> &'static mut Page4K {
    Box::leak(Box::new(Page4K::zeroed()))
}

fn virtual_apic(tier: ApicVirtualization) -> VirtualApic<'static> {
    VirtualApic::new(tier, page(), page(), DEFAULT_APIC_BASE).unwrap()
}

fn lapic(clock: &ManualClock) -> LocalApic<&ManualClock> {
    let mut apic = LocalApic::new(LapicConfig::new(0, 1_000_000_000), clock);
    apic.mmio_write(u64::from(reg::SVR), AccessWidth::Dword, 0x1FF);
    apic
}

/// What the processor does on the page while the guest runs (SDM 30.1 and
/// 30.2), with RVI/SVI in the VMCS's guest interrupt status.
struct Processor<'v, 'a> {
    apic: &'v mut VirtualApic<'a>,
    vmcs: &'v mut MemVmcs,
}

impl Processor<'_, '_> {
    fn status(&self) -> (u8, u8) {
        let status = self.vmcs.read(Guest16::InterruptStatus).unwrap();
        (status as u8, (status >> 8) as u8)
    }
    fn set_status(&mut self, rvi: u8, svi: u8) {
        let value = u16::from(rvi) | (u16::from(svi) << 8);
        self.vmcs.write(Guest16::InterruptStatus, value).unwrap();
    }
    fn bit(&self, base: u32, v: u8) -> bool {
        self.apic.page.read(base + 16 * u32::from(v / 32)) & (1 << (v % 32)) != 0
    }
    fn set_bit(&mut self, base: u32, v: u8, on: bool) {
        let slot = base + 16 * u32::from(v / 32);
        let word = self.apic.page.read(slot);
        let mask = 1 << (v % 32);
        self.apic
            .page
            .write(slot, if on { word | mask } else { word & !mask });
    }
    fn highest(&self, base: u32) -> u8 {
        (0..=255u8).rev().find(|&v| self.bit(base, v)).unwrap_or(0)
    }
    /// 30.1.3 PPR virtualization.
    fn ppr_virtualization(&mut self) {
        let vtpr = self.apic.page.read(offset::VTPR) as u8;
        let (_, svi) = self.status();
        let vppr = if vtpr >> 4 >= svi >> 4 {
            vtpr
        } else {
            svi & 0xF0
        };
        self.apic.page.write(offset::VPPR, u32::from(vppr));
    }
    /// 30.2.1: is a virtual interrupt recognized (RFLAGS.IF = 1 assumed)?
    fn pending(&self) -> bool {
        let (rvi, _) = self.status();
        rvi >> 4 > (self.apic.page.read(offset::VPPR) as u8) >> 4
    }
    /// 30.2.2 virtual-interrupt delivery; returns the vector.
    fn deliver(&mut self) -> u8 {
        assert!(self.pending(), "no virtual interrupt to deliver");
        let (vector, _) = self.status();
        self.set_bit(offset::VISR, vector, true);
        self.apic.page.write(offset::VPPR, u32::from(vector & 0xF0));
        self.set_bit(offset::VIRR, vector, false);
        let rvi = self.highest(offset::VIRR);
        self.set_status(rvi, vector);
        vector
    }
    /// 30.1.4 EOI virtualization; returns whether it caused an EOI-induced
    /// VM exit (and its vector).
    fn eoi(&mut self) -> Option<u8> {
        let (rvi, vector) = self.status();
        self.set_bit(offset::VISR, vector, false);
        let svi = self.highest(offset::VISR);
        self.set_status(rvi, svi);
        self.ppr_virtualization();
        let bitmap = [
            Control64::EoiExitBitmap0,
            Control64::EoiExitBitmap1,
            Control64::EoiExitBitmap2,
            Control64::EoiExitBitmap3,
        ][usize::from(vector / 64)];
        let exits = self.vmcs.read(bitmap).unwrap() & (1 << (vector % 64)) != 0;
        exits.then_some(vector)
    }
    /// 30.1.5 self-IPI virtualization.
    fn self_ipi(&mut self, vector: u8) {
        self.set_bit(offset::VIRR, vector, true);
        let (rvi, svi) = self.status();
        self.set_status(rvi.max(vector), svi);
    }
    /// A TPR write virtualized (MOV CR8 or the xAPIC TPR), with
    /// virtual-interrupt delivery: 30.1.2 then PPR virtualization.
    fn write_tpr(&mut self, tpr: u8) {
        self.apic.page.write(offset::VTPR, u32::from(tpr));
        self.ppr_virtualization();
    }
}

/// One round trip as the run loop makes it: before the decision, the
/// entry, the processor running `guest`, the exit.
fn run(
    apic: &mut VirtualApic<'static>,
    vmcs: &mut MemVmcs,
    model: &mut LocalApic<&ManualClock>,
    guest: impl FnOnce(&mut Processor<'_, 'static>),
) {
    apic.before_decision(model);
    apic.before_entry(vmcs, model).unwrap();
    guest(&mut Processor { apic, vmcs });
    apic.after_exit(model);
}

#[test]
fn tiers_follow_the_recorded_capabilities() {
    // Haswell and later (but Cannon Lake) offer APIC-register
    // virtualization and virtual-interrupt delivery; the others only the
    // TPR shadow and virtualized APIC accesses.
    // Penryn has the TPR shadow and virtualized APIC accesses too (but no
    // EPT, which ponte's appliances require).
    let expected = [
        (
            "corei7_skylake_x",
            ApicVirtualization::VirtualInterruptDelivery,
        ),
        (
            "corei7_haswell_4770",
            ApicVirtualization::VirtualInterruptDelivery,
        ),
        (
            "broadwell_ult",
            ApicVirtualization::VirtualInterruptDelivery,
        ),
        (
            "corei7_icelake_u",
            ApicVirtualization::VirtualInterruptDelivery,
        ),
        ("tigerlake", ApicVirtualization::VirtualInterruptDelivery),
        ("corei7_sandy_bridge_2600k", ApicVirtualization::TprShadow),
        ("corei7_ivy_bridge_3770k", ApicVirtualization::TprShadow),
        ("corei5_arrandale_m520", ApicVirtualization::TprShadow),
        ("corei5_lynnfield_750", ApicVirtualization::TprShadow),
        ("corei3_cnl", ApicVirtualization::TprShadow),
        ("core2_penryn_t9600", ApicVirtualization::TprShadow),
    ];
    assert_eq!(expected.len(), MODELS.len());
    for (model, tier) in expected {
        let c = caps(model);
        assert_eq!(ApicVirtualization::best(&c), tier, "{model}");
        for wanted in ApicVirtualization::ALL {
            let chosen = ApicVirtualization::best(&c).at_most(wanted);
            assert!(chosen <= wanted && chosen <= tier);
            let settings = chosen
                .require_controls(
                    ControlRequest::new().require(PinControl::ExternalInterruptExiting),
                )
                .reconcile(&c)
                .unwrap();
            assert_eq!(
                ApicVirtualization::from_settings(&settings),
                chosen,
                "{model}"
            );
            // The software tier makes CR8 accesses exit; the others must not
            // (they go to the virtual TPR).
            let cr8 = settings.has(ProcControl::Cr8LoadExiting)
                && settings.has(ProcControl::Cr8StoreExiting);
            assert_eq!(cr8, chosen == ApicVirtualization::Software, "{model}");
            assert_eq!(
                settings.has(Proc2Control::VirtualInterruptDelivery),
                chosen == ApicVirtualization::VirtualInterruptDelivery
            );
        }
    }
    for tier in ApicVirtualization::ALL {
        assert_eq!(ApicVirtualization::from_name(tier.name()), Some(tier));
    }
    assert_eq!(ApicVirtualization::from_name("x2apic"), None);
}

#[test]
fn configured_vmcs_passes_the_entry_checks() {
    for (name, _) in MODELS {
        let c = caps(name);
        let tier = ApicVirtualization::best(&c);
        let settings = tier
            .require_controls(
                ControlRequest::new()
                    .require(PinControl::ExternalInterruptExiting)
                    .require(ProcControl::UseMsrBitmaps)
                    .prefer(Proc2Control::EnableEpt),
            )
            .reconcile(&c)
            .unwrap();
        let host = HostState {
            cr0: 0x8001_0033,
            cr3: 0x1000,
            cr4: (1 << 5) | (1 << 13),
            selectors: [0x10, 0x08, 0x10, 0x10, 0x10, 0x10, 0x18],
            fs_base: 0,
            gs_base: 0,
            tr_base: 0x5000,
            gdtr_base: 0x6000,
            idtr_base: 0x7000,
            sysenter: (0, 0, 0),
            efer: (1 << 8) | (1 << 10),
            pat: 0x0007_0406_0007_0406,
            rip: 0x10_0000,
            rsp: 0x8000,
        };
        let guest = GuestState::long_mode(0x9000, 0x40_0000, 0x80_0000);
        let mut vmcs = MemVmcs::for_cpu(&c);
        setup_vmcs(&mut vmcs, &c, &settings, &host, &guest).unwrap();
        vmcs.write(Control64::MsrBitmap, 0x20_0000).unwrap();
        if settings.has(Proc2Control::EnableEpt) {
            vmcs.write(Control64::EptPointer, 0x30_0000 | 3 << 3 | 6)
                .unwrap();
        }
        let mut apic = virtual_apic(tier);
        apic.configure(&mut vmcs).unwrap();
        let clock = ManualClock::new(0);
        let mut model = lapic(&clock);
        model.request_vector(0x40, TriggerMode::Level);
        apic.before_entry(&mut vmcs, &mut model).unwrap();
        assert_eq!(
            vmcs.read(Control64::VirtualApicAddress).unwrap(),
            apic.page().address()
        );
        assert_eq!(vmcs.read(Control64::ApicAccessAddress).unwrap() & 0xFFF, 0);
        // The test's pages live at host addresses beyond the recorded
        // physical-address width; an image's are identity-mapped RAM.
        vmcs.write(Control64::VirtualApicAddress, 0x40_0000)
            .unwrap();
        vmcs.write(Control64::ApicAccessAddress, 0x41_0000).unwrap();
        let report = check_vm_entry(&vmcs, &c);
        assert!(report.is_clean(), "{name}: {:?}", report.violations);
    }
    assert!(VirtualApic::new(
        ApicVirtualization::Software,
        page(),
        page(),
        DEFAULT_APIC_BASE
    )
    .is_none());
}

#[test]
fn the_processor_delivers_requests_from_rvi_and_the_model_follows() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    let mut vmcs = MemVmcs::new();
    apic.configure(&mut vmcs).unwrap();
    model.request_vector(0x31, TriggerMode::Edge);
    model.request_vector(0x52, TriggerMode::Edge);
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        // RVI is the highest request, SVI nothing; both vectors in VIRR.
        assert_eq!(cpu.status(), (0x52, 0));
        assert!(cpu.bit(offset::VIRR, 0x52) && cpu.bit(offset::VIRR, 0x31));
        assert_eq!(cpu.deliver(), 0x52);
        // 0x31 is below the in-service class: held.
        assert!(!cpu.pending());
        assert_eq!(cpu.eoi(), None);
        assert_eq!(cpu.deliver(), 0x31);
    });
    // 0x52 was delivered and ended; 0x31 is in service.
    assert!(model.irr().is_empty());
    assert_eq!(model.isr().highest(), Some(0x31));
    assert_eq!(apic.stats().virtual_deliveries, 2);
    assert_eq!(apic.stats().virtual_eois, 1);
    // The software path does not see the model's requests any more.
    model.request_vector(0x60, TriggerMode::Edge);
    assert_eq!(model.pending_vector(), None);
    assert_eq!(model.deliverable_vector(), Some(0x60));
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        assert_eq!(cpu.status(), (0x60, 0x31));
        assert_eq!(cpu.apic.page.read(offset::VPPR), 0x30);
        assert_eq!(cpu.deliver(), 0x60);
        assert_eq!(cpu.eoi(), None);
        assert_eq!(cpu.eoi(), None);
    });
    assert!(model.irr().is_empty() && model.isr().is_empty());
    assert_eq!(model.take_level_eoi(), None);
}

#[test]
fn level_triggered_eois_exit_and_reach_the_ioapic() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    let mut vmcs = MemVmcs::new();
    apic.configure(&mut vmcs).unwrap();
    model.request_vector(0x60, TriggerMode::Level);
    model.request_vector(0x41, TriggerMode::Edge);
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        // Vector 0x60 (level) is bit 32 of EOI-exit bitmap 1; the page's
        // TMR shows it to the guest.
        assert_eq!(cpu.vmcs.read(Control64::EoiExitBitmap1), Ok(1 << 32));
        assert_eq!(cpu.vmcs.read(Control64::EoiExitBitmap0), Ok(0));
        assert_eq!(cpu.apic.page.read(offset::VTMR + 0x30), 1);
        assert_eq!(cpu.deliver(), 0x60);
        assert_eq!(cpu.eoi(), Some(0x60), "EOI-induced VM exit");
    });
    assert_eq!(model.take_level_eoi(), Some(0x60));
    assert_eq!(model.take_level_eoi(), None);
    // The edge vector's EOI does not exit, and is not broadcast.
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        assert_eq!(cpu.deliver(), 0x41);
        assert_eq!(cpu.eoi(), None);
    });
    assert!(model.isr().is_empty());
    assert_eq!(model.take_level_eoi(), None);
}

#[test]
fn tpr_changes_on_the_page_reach_the_model() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    let mut vmcs = MemVmcs::new();
    apic.configure(&mut vmcs).unwrap();
    model.set_tpr(0x50);
    model.request_vector(0x45, TriggerMode::Edge);
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        assert_eq!(cpu.apic.page.read(offset::VTPR), 0x50);
        assert_eq!(cpu.apic.page.read(offset::VPPR), 0x50);
        // Masked by the TPR until the guest lowers it (MOV CR8, 3).
        assert!(!cpu.pending());
        cpu.write_tpr(0x30);
        assert!(cpu.pending());
    });
    assert_eq!(model.tpr(), 0x30);
    assert_eq!(model.ppr(), 0x30);
    assert_eq!(apic.stats().tpr_changes, 1);
}

#[test]
fn tpr_threshold_exits_when_the_tpr_unmasks_a_request() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::TprShadow);
    let mut vmcs = MemVmcs::new();
    apic.configure(&mut vmcs).unwrap();
    model.set_tpr(0x80);
    model.request_vector(0x62, TriggerMode::Edge);
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    // SDM 30.1.2: a TPR write below the threshold (VTPR[7:4] < 6) exits;
    // the threshold never exceeds VTPR[7:4] at entry.
    assert_eq!(vmcs.read(Control32::TprThreshold), Ok(6));
    assert_eq!(apic.page().read(offset::VTPR), 0x80);
    // No virtual-interrupt delivery: the software path still injects, and
    // the page's interrupt registers stay unused.
    assert_eq!(model.pending_vector(), None, "masked by the TPR");
    apic.page.write(offset::VTPR, 0x50);
    apic.after_exit(&mut model);
    assert_eq!(model.pending_vector(), Some(0x62));
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    assert_eq!(vmcs.read(Control32::TprThreshold), Ok(0));
    assert_eq!(apic.page().read_vectors(offset::VIRR), [0; 8]);
}

#[test]
fn virtualized_self_ipis_become_requests_of_the_model() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    let mut vmcs = MemVmcs::new();
    apic.configure(&mut vmcs).unwrap();
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        cpu.self_ipi(0x70);
        cpu.self_ipi(0x90);
        assert_eq!(cpu.deliver(), 0x90);
    });
    // 0x90 delivered (in service), 0x70 still requested.
    assert_eq!(model.isr().highest(), Some(0x90));
    assert_eq!(model.irr().highest(), Some(0x70));
    assert_eq!(apic.stats().virtual_self_ipis, 2);
}

#[test]
fn register_writes_go_through_the_model_and_reads_are_mirrored() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    let mut vmcs = MemVmcs::new();
    apic.configure(&mut vmcs).unwrap();
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    assert_eq!(apic.page().read(reg::SVR), 0x1FF);
    assert_eq!(apic.page().read(reg::VERSION), 0x0006_0014);
    // The guest writes the LVT timer (APIC-write exit): the model decides
    // what the register holds (bit 12, delivery status, is read-only).
    apic.page.write(reg::LVT_TIMER, 0x0002_1040);
    apic.apic_write(reg::LVT_TIMER as u16, &mut model);
    assert_eq!(model.register_value(reg::LVT_TIMER), Some(0x0002_0040));
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    assert_eq!(apic.page().read(reg::LVT_TIMER), 0x0002_0040);
    // In x2APIC mode the xAPIC page is absent: its slots read all ones.
    model.set_apic_base(DEFAULT_APIC_BASE | (3 << 10)).unwrap();
    apic.registers_changed();
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    assert_eq!(apic.page().read(reg::SVR), u32::MAX);
    assert_eq!(apic.page().read(reg::ID), u32::MAX);
}

#[test]
fn x2apic_mode_switches_to_virtualized_x2apic_msrs() {
    use ponte_arch::vmx::MsrBitmap;
    let clock = ManualClock::new(0);
    for (model_name, tier, passed) in [
        (
            "corei7_skylake_x",
            ApicVirtualization::VirtualInterruptDelivery,
            [0x808, 0x80B, 0x83F],
        ),
        // Without virtual-interrupt delivery only the TPR is virtualized
        // (SDM 30.5): EOI and SELF IPI keep exiting.
        (
            "corei7_sandy_bridge_2600k",
            ApicVirtualization::TprShadow,
            [0x808, 0x808, 0x808],
        ),
    ] {
        let c = caps(model_name);
        let mut model = lapic(&clock);
        let mut apic =
            virtual_apic(tier).with_x2apic_virtualization(MsrBitmap::intercept_all(page()), &c);
        let mut vmcs = MemVmcs::new();
        let accesses = Proc2Control::VirtualizeApicAccesses.bit();
        let x2apic = Proc2Control::VirtualizeX2apicMode.bit();
        let ept = Proc2Control::EnableEpt.bit();
        vmcs.write(Control32::ProcBasedControls2, accesses | ept)
            .unwrap();
        apic.configure(&mut vmcs).unwrap();
        apic.before_entry(&mut vmcs, &mut model).unwrap();
        assert!(!apic.x2apic_virtualized());
        model.set_apic_base(DEFAULT_APIC_BASE | (3 << 10)).unwrap();
        apic.before_entry(&mut vmcs, &mut model).unwrap();
        // SDM 26.2.1.1: virtualize x2APIC mode excludes virtualize APIC
        // accesses; other secondary controls are kept.
        assert_eq!(vmcs.read(Control32::ProcBasedControls2), Ok(x2apic | ept));
        assert!(apic.x2apic_virtualized());
        let bitmap = &apic.x2apic.as_ref().unwrap().msr_bitmap;
        for msr in 0x800..=0x8FF {
            assert!(
                bitmap.intercepts(msr, false),
                "{model_name}: reads of {msr:#x} exit"
            );
            assert_eq!(
                bitmap.intercepts(msr, true),
                !passed.contains(&msr),
                "{model_name}: writes of {msr:#x}"
            );
        }
        // Leaving x2APIC mode (to disabled) intercepts everything again.
        model
            .set_apic_base(DEFAULT_APIC_BASE | (1 << 11))
            .unwrap_err();
        model.set_apic_base(0).unwrap();
        apic.before_entry(&mut vmcs, &mut model).unwrap();
        assert_eq!(vmcs.read(Control32::ProcBasedControls2), Ok(accesses | ept));
        let bitmap = &apic.x2apic.as_ref().unwrap().msr_bitmap;
        assert!((0x800..=0x8FF).all(|msr| bitmap.intercepts(msr, true)));
    }
    // A processor without "virtualize x2APIC mode" keeps every MSR exiting.
    let penryn = caps("core2_penryn_t9600");
    let apic = virtual_apic(ApicVirtualization::TprShadow)
        .with_x2apic_virtualization(MsrBitmap::intercept_all(page()), &penryn);
    assert!(apic.x2apic.is_none());
}

#[test]
fn apic_writes_in_x2apic_mode_reach_the_msr_of_the_register() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    model.set_apic_base(DEFAULT_APIC_BASE | (3 << 10)).unwrap();
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    // A SELF IPI of vector 0x35 written to the page's 3F0H slot.
    apic.page.write(reg::SELF_IPI, 0x35);
    apic.apic_write(reg::SELF_IPI as u16, &mut model);
    assert_eq!(model.irr().highest(), Some(0x35));
}

/// A VMCS that counts the VMWRITEs made to it.
#[derive(Default)]
struct CountingVmcs {
    vmcs: MemVmcs,
    writes: usize,
}

impl ponte_arch::vmx::VmcsAccess for CountingVmcs {
    fn read_encoding(&self, encoding: u32) -> Result<u64, VmcsError> {
        self.vmcs.read_encoding(encoding)
    }
    fn write_encoding(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError> {
        self.writes += 1;
        self.vmcs.write_encoding(encoding, value)
    }
}

/// What the processor must find at entry (SDM 30.1 and 30.2): the model's
/// TPR, IRR, ISR and TMR on the page (VTMR only while the xAPIC page is
/// there), VPPR from the TPR and the highest in-service vector, RVI and SVI
/// the highest requested and in-service vectors, and the level-triggered
/// vectors (TMR) in the EOI-exit bitmap.
fn assert_entry_state(
    apic: &VirtualApic<'static>,
    vmcs: &MemVmcs,
    model: &LocalApic<&ManualClock>,
    context: &str,
) {
    let page = apic.page();
    let words = |set: &VectorSet| -> [u32; 8] { core::array::from_fn(|i| set.word(i)) };
    assert_eq!(page.read(offset::VTPR), u32::from(model.tpr()), "{context}");
    assert_eq!(
        page.read_vectors(offset::VIRR),
        words(model.irr()),
        "{context}"
    );
    assert_eq!(
        page.read_vectors(offset::VISR),
        words(model.isr()),
        "{context}"
    );
    let highest = |set: &VectorSet| (0..=255u8).rev().find(|&v| set.contains(v));
    let isrv = highest(model.isr()).unwrap_or(0);
    let tpr = model.tpr();
    let ppr = if tpr >> 4 >= isrv >> 4 {
        tpr
    } else {
        isrv & 0xF0
    };
    assert_eq!(page.read(offset::VPPR), u32::from(ppr), "{context}");
    let rvi = highest(model.irr()).unwrap_or(0);
    assert_eq!(
        vmcs.read(Guest16::InterruptStatus),
        Ok(u16::from(rvi) | (u16::from(isrv) << 8)),
        "{context}"
    );
    let bitmap = [
        Control64::EoiExitBitmap0,
        Control64::EoiExitBitmap1,
        Control64::EoiExitBitmap2,
        Control64::EoiExitBitmap3,
    ];
    for v in 0..=255u8 {
        let bit = vmcs.read(bitmap[usize::from(v / 64)]).unwrap() >> (v % 64) & 1;
        assert_eq!(
            bit == 1,
            model.tmr().contains(v),
            "{context}: vector {v:#x}"
        );
    }
}

#[test]
fn an_entry_after_an_exit_that_changed_nothing_writes_nothing() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    let mut vmcs = CountingVmcs::default();
    apic.configure(&mut vmcs).unwrap();
    model.request_vector(0x41, TriggerMode::Level);
    model.set_tpr(0x50);
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    assert_entry_state(&apic, &vmcs.vmcs, &model, "first entry");
    // The guest runs without touching its APIC (0x41 stays masked by the
    // TPR); the exit is a CPUID or an I/O port.
    apic.after_exit(&mut model);
    vmcs.writes = 0;
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    assert_eq!(vmcs.writes, 0, "nothing changed, nothing written");
    assert_entry_state(&apic, &vmcs.vmcs, &model, "unchanged");
    // A request of the model (a line raised during the exit) is written:
    // VIRR and RVI, nothing else.
    model.request_vector(0x62, TriggerMode::Edge);
    apic.after_exit(&mut model);
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    assert_eq!(vmcs.writes, 1, "RVI only");
    assert_entry_state(&apic, &vmcs.vmcs, &model, "after a request");
    // A lower request leaves RVI where it is.
    model.request_vector(0x33, TriggerMode::Edge);
    apic.before_entry(&mut vmcs, &mut model).unwrap();
    assert_eq!(vmcs.writes, 1, "RVI unchanged");
    assert_entry_state(&apic, &vmcs.vmcs, &model, "after a lower request");
}

#[test]
fn a_self_ipi_that_leaves_rvi_alone_still_reaches_the_model() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    let mut vmcs = MemVmcs::new();
    apic.configure(&mut vmcs).unwrap();
    model.set_tpr(0x60);
    model.request_vector(0x52, TriggerMode::Edge);
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        // Masked by the TPR; a self-IPI below it changes VIRR but neither
        // RVI nor SVI (SDM 30.1.5: RVI = max(RVI, vector)).
        cpu.self_ipi(0x31);
        assert_eq!(cpu.status(), (0x52, 0));
    });
    assert!(model.irr().contains(0x31), "the model saw the self-IPI");
    // A request of the same word after the exit keeps the guest's.
    model.request_vector(0x30, TriggerMode::Edge);
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        assert!(cpu.bit(offset::VIRR, 0x30) && cpu.bit(offset::VIRR, 0x31));
        cpu.write_tpr(0);
        assert_eq!(cpu.deliver(), 0x52);
        assert_eq!(cpu.eoi(), None);
        assert_eq!(cpu.deliver(), 0x31);
        assert_eq!(cpu.eoi(), None);
        assert_eq!(cpu.deliver(), 0x30);
    });
    assert_eq!(model.isr().highest(), Some(0x30));
    assert!(model.irr().is_empty());
    assert_eq!(apic.stats().virtual_deliveries, 3);
}

#[test]
fn a_vector_raised_again_while_in_service_stays_in_service() {
    let clock = ManualClock::new(0);
    let mut model = lapic(&clock);
    let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
    let mut vmcs = MemVmcs::new();
    apic.configure(&mut vmcs).unwrap();
    model.request_vector(0x44, TriggerMode::Edge);
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        // The handler of 0x44 raises 0x44 again (SDM 30.1.5): requested
        // and in service at once, as before the run, but for the model's
        // request, which was delivered.
        assert_eq!(cpu.deliver(), 0x44);
        cpu.self_ipi(0x44);
        assert!(!cpu.pending(), "held by its own class in service");
    });
    assert!(model.isr().contains(0x44), "in service");
    assert!(model.irr().contains(0x44), "and requested again");
    assert_eq!(apic.stats().virtual_deliveries, 1);
    assert_eq!(apic.stats().virtual_self_ipis, 1);
    // The next entry keeps both; the EOI lets the second one in.
    run(&mut apic, &mut vmcs, &mut model, |cpu| {
        assert_eq!(cpu.status(), (0x44, 0x44));
        assert_eq!(cpu.eoi(), None);
        assert_eq!(cpu.deliver(), 0x44);
    });
    assert!(model.isr().contains(0x44) && model.irr().is_empty());
}

/// A small deterministic generator (xorshift64) for the sequences below.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn every_change_on_either_side_reaches_the_other_before_the_next_entry() {
    // Random rounds of what the host does during an exit (requests of
    // either trigger mode, TPR writes, EOIs on the model, software
    // disabling and enabling) and what the processor does while the guest
    // runs (deliveries, EOIs, self-IPIs, TPR writes). After every exit the
    // model must have seen the processor's changes, and at every entry the
    // page and the VMCS must hold the model's state: whatever the host
    // skipped writing or reading held nothing new.
    let clock = ManualClock::new(0);
    let (mut deliveries, mut eois, mut self_ipis, mut tpr_changes) = (0, 0, 0, 0);
    for seed in 1..=40u64 {
        let mut model = lapic(&clock);
        let mut apic = virtual_apic(ApicVirtualization::VirtualInterruptDelivery);
        let mut vmcs = MemVmcs::new();
        apic.configure(&mut vmcs).unwrap();
        let mut random = Sequence(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut requested_level = VectorSet::new();
        for round in 0..60 {
            for _ in 0..random.next(4) {
                let vector = 0x20 + random.next(0xE0) as u8;
                match random.next(8) {
                    0..=2 => model.request_vector(vector, TriggerMode::Edge),
                    3 => {
                        model.request_vector(vector, TriggerMode::Level);
                        requested_level.insert(vector);
                    }
                    4 => model.set_tpr((random.next(8) as u8) << 4),
                    5 => model.mmio_write(u64::from(reg::EOI), AccessWidth::Dword, 0),
                    // Software disabling (self-IPIs the model then drops
                    // stay on the page until the next entry) or enabling.
                    6 if random.next(4) == 0 => {
                        let svr = model.register_value(reg::SVR).unwrap() ^ 0x100;
                        model.mmio_write(u64::from(reg::SVR), AccessWidth::Dword, u64::from(svr));
                    }
                    // Global disabling, which clears every register, and
                    // enabling again.
                    7 if random.next(8) == 0 => {
                        model.set_apic_base(DEFAULT_APIC_BASE).unwrap();
                        model.set_apic_base(DEFAULT_APIC_BASE | (1 << 11)).unwrap();
                        model.mmio_write(u64::from(reg::SVR), AccessWidth::Dword, 0x1FF);
                    }
                    _ => {}
                }
            }
            while model.take_level_eoi().is_some() {}
            let context = std::format!("seed {seed}, round {round}");
            apic.before_decision(&mut model);
            apic.before_entry(&mut vmcs, &mut model).unwrap();
            assert_entry_state(&apic, &vmcs, &model, &context);
            let mut cpu = Processor {
                apic: &mut apic,
                vmcs: &mut vmcs,
            };
            for _ in 0..random.next(5) {
                match random.next(6) {
                    0 | 1 if cpu.pending() => {
                        cpu.deliver();
                    }
                    2 => {
                        let (_, svi) = cpu.status();
                        // An EOI-exit vector ends the guest's run.
                        if cpu.eoi().is_some() || svi == 0 {
                            break;
                        }
                    }
                    // Often the vector in service again (a handler
                    // raising its own vector once more).
                    3 => match cpu.status() {
                        (_, svi) if svi != 0 && random.next(2) == 0 => cpu.self_ipi(svi),
                        _ => cpu.self_ipi(0x20 + random.next(0xE0) as u8),
                    },
                    4 => cpu.write_tpr((random.next(8) as u8) << 4),
                    _ => {}
                }
            }
            let page_irr = cpu.apic.page.read_vectors(offset::VIRR);
            let page_isr = cpu.apic.page.read_vectors(offset::VISR);
            let page_tpr = cpu.apic.page.read(offset::VTPR) as u8;
            apic.after_exit(&mut model);
            let words = |set: &VectorSet| -> [u32; 8] { core::array::from_fn(|i| set.word(i)) };
            // A software-disabled APIC drops the self-IPIs instead (the
            // next entry takes them off the page).
            if model.is_enabled() {
                assert_eq!(
                    words(model.irr()),
                    page_irr,
                    "{context}: IRR after the exit"
                );
                assert_eq!(
                    words(model.isr()),
                    page_isr,
                    "{context}: ISR after the exit"
                );
            }
            assert_eq!(model.tpr(), page_tpr, "{context}: TPR after the exit");
        }
        let stats = apic.stats();
        deliveries += stats.virtual_deliveries;
        eois += stats.virtual_eois;
        self_ipis += stats.virtual_self_ipis;
        tpr_changes += stats.tpr_changes;
    }
    // The sequences did exercise each kind of change.
    assert!(
        deliveries > 500 && eois > 300 && self_ipis > 300 && tpr_changes > 300,
        "{deliveries} deliveries, {eois} EOIs, {self_ipis} self-IPIs, {tpr_changes} TPR changes"
    );
}
