//! APIC virtualization (Intel SDM Vol. 3C, "APIC Virtualization and Virtual
//! Interrupts") on top of the software local APIC.
//!
//! [`ApicVirtualization`] is the tier a VM runs with, chosen from the
//! processor's capabilities and capped by the integrator:
//!
//! - [`ApicVirtualization::VirtualInterruptDelivery`]: "use TPR shadow",
//!   "virtualize APIC accesses", "APIC-register virtualization" and
//!   "virtual-interrupt delivery". The processor delivers the LAPIC's fixed
//!   vectors itself from RVI (no interrupt-window exits), virtualizes EOIs
//!   (exiting only for the vectors of the EOI-exit bitmap: the level-
//!   triggered ones, whose EOI the IOAPIC must see) and serves reads of the
//!   xAPIC registers from the virtual-APIC page.
//! - [`ApicVirtualization::TprShadow`]: "use TPR shadow" and "virtualize APIC
//!   accesses": MOV CR8 and xAPIC TPR accesses stay in the guest, with the
//!   TPR threshold set so that lowering the TPR below a masked request
//!   exits; interrupts are injected by the software path.
//! - [`ApicVirtualization::Software`]: every LAPIC access exits (CR8 through
//!   CR8-load/store exiting), as without APIC virtualization.
//!
//! The LAPIC model ([`crate::irq::lapic::LocalApic`], seen through
//! [`ApicModel`]) stays the only source of truth: [`VirtualApic`] copies
//! what the processor did on the page into the model after every exit
//! ([`VirtualApic::after_exit`]: VTPR to TPR, vectors the processor
//! delivered from VIRR to VISR, vectors whose EOI it virtualized, self-IPIs
//! it raised), and the model's state into the page and the VMCS before every
//! entry ([`VirtualApic::before_entry`]: VTPR, VIRR, VISR, VTMR, VPPR, RVI
//! and SVI, the EOI-exit bitmap, the TPR threshold, and the registers
//! APIC-register virtualization lets the guest read). Both directions copy
//! only what changed: after an exit the page's VTPR, VIRR and VISR are
//! compared with what the host last wrote or saw there (the processor
//! changes nothing else the model keeps; comparing its 17 words is cheaper
//! than reading RVI and SVI back, which would not show a self-IPI below the
//! pending request anyway), and before an entry nothing is compared or
//! written while the model's [`ApicModel::interrupt_generation`] is the one
//! the page and VMCS were last brought up to, and otherwise only the
//! registers whose own generation moved ([`ApicModel::interrupt_generations`])
//! are compared. Register accesses the
//! processor does not virtualize exit as APIC accesses (performed like the
//! MMIO accesses of the xAPIC page, by the same model) or APIC writes
//! ([`VirtualApic::apic_write`]). NMIs and the 8259A's ExtINT keep the
//! event-injection path in every tier.
//!
//! The APIC-access page is mapped (read/write, uncacheable, never
//! executable) at the guest-physical base of the xAPIC page the board
//! declares; the host never reads it. While the guest has its LAPIC
//! disabled or moved elsewhere, accesses at that base are still
//! virtualized: the register slots then read all ones, as the model's
//! absent page does, except VTPR, VPPR, VISR, VIRR (the processor's own).
//! In x2APIC mode the x2APIC MSRs exit to the model and the xAPIC base
//! stays virtualized as just said; with
//! [`VirtualApic::with_x2apic_virtualization`] the processor instead
//! virtualizes the TPR MSR writes (and with virtual-interrupt delivery the
//! EOI and SELF IPI writes), and the APIC-access page is then plain memory
//! to the guest, filled with all ones (writes there are not dropped but stay
//! in that page, which the host never reads).

use ponte_arch::{
    ept::{EptError, EptTables, FrameAllocator, MappingAttributes},
    memory::{FrameError, HostMemory},
    vmx::{
        apic::offset,
        controls::{Proc2Control, ProcControl},
        vmcs::{Control32, Control64, Guest16},
        ControlRequest, ControlSettings, MsrBitmap, Page4K, VirtualApicPage, VmcsAccess, VmcsError,
        VmcsExt, VmxCapabilities,
    },
};

use crate::device::{AccessWidth, Mmio};
use crate::irq::lapic::{reg, InterruptGenerations, LocalApic, MSR_X2APIC_FIRST};
use crate::irq::msi::TriggerMode;
use crate::irq::vectors::set_bits;
use crate::time::Clock;

/// How much of the local APIC the processor virtualizes; ordered from
/// least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApicVirtualization {
    /// None: every LAPIC access exits, interrupts are injected.
    Software,
    /// TPR shadow and virtualized APIC accesses.
    TprShadow,
    /// TPR shadow, virtualized APIC accesses, APIC-register virtualization
    /// and virtual-interrupt delivery.
    VirtualInterruptDelivery,
}

impl ApicVirtualization {
    /// Every tier, least first.
    pub const ALL: [Self; 3] = [
        Self::Software,
        Self::TprShadow,
        Self::VirtualInterruptDelivery,
    ];

    /// The highest tier the processor offers (IA32_VMX_PROCBASED_CTLS and
    /// _CTLS2 allowed-1 bits).
    pub fn best(caps: &VmxCapabilities) -> Self {
        let proc = caps.proc.effective();
        let tpr_shadow = proc.allows(ProcControl::UseTprShadow.bit())
            && proc.allows(ProcControl::ActivateSecondaryControls.bit());
        let proc2 = |c: Proc2Control| caps.proc2_allows(c.bit());
        if !tpr_shadow || !proc2(Proc2Control::VirtualizeApicAccesses) {
            Self::Software
        } else if proc2(Proc2Control::ApicRegisterVirtualization)
            && proc2(Proc2Control::VirtualInterruptDelivery)
            && caps
                .pin
                .effective()
                .allows(ponte_arch::vmx::PinControl::ExternalInterruptExiting.bit())
        {
            Self::VirtualInterruptDelivery
        } else {
            Self::TprShadow
        }
    }

    /// This tier, or `limit` if that is lower (an integrator forcing the
    /// software path passes [`ApicVirtualization::Software`]).
    pub fn at_most(self, limit: Self) -> Self {
        self.min(limit)
    }

    /// `request` with the controls of this tier required (choose the tier
    /// with [`ApicVirtualization::best`], so that they are present). The
    /// software tier makes MOV to and from CR8 exit, so that the guest's
    /// task priority reaches the model and never the host's APIC.
    pub fn require_controls(self, request: ControlRequest) -> ControlRequest {
        match self {
            Self::Software => request
                .require(ProcControl::Cr8LoadExiting)
                .require(ProcControl::Cr8StoreExiting),
            Self::TprShadow => request
                .require(ProcControl::UseTprShadow)
                .require(Proc2Control::VirtualizeApicAccesses),
            Self::VirtualInterruptDelivery => request
                .require(ProcControl::UseTprShadow)
                .require(Proc2Control::VirtualizeApicAccesses)
                .require(Proc2Control::ApicRegisterVirtualization)
                .require(Proc2Control::VirtualInterruptDelivery),
        }
    }

    /// The tier reconciled controls give.
    pub fn from_settings(settings: &ControlSettings) -> Self {
        let shadow = settings.has(ProcControl::UseTprShadow)
            && settings.has(Proc2Control::VirtualizeApicAccesses);
        if !shadow {
            Self::Software
        } else if settings.has(Proc2Control::ApicRegisterVirtualization)
            && settings.has(Proc2Control::VirtualInterruptDelivery)
        {
            Self::VirtualInterruptDelivery
        } else {
            Self::TprShadow
        }
    }

    /// A short name: `software`, `tpr-shadow`, `virtual-interrupts`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::TprShadow => "tpr-shadow",
            Self::VirtualInterruptDelivery => "virtual-interrupts",
        }
    }

    /// The tier named `name` ([`ApicVirtualization::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// What APIC virtualization needs of the local APIC model; implemented by
/// [`LocalApic`]. The run loop reaches it through
/// [`super::Interrupts::local_apic`].
pub trait ApicModel {
    /// Task priority (bits 7:0).
    fn tpr(&self) -> u8;
    /// Sets the task priority.
    fn set_tpr(&mut self, tpr: u8);
    /// Processor priority.
    fn ppr(&self) -> u8;
    /// The IRR, ISR and TMR, eight 32-bit words each (vectors 0-31 first).
    fn vector_registers(&self) -> VectorRegisters;
    /// A vector requested by the guest's own self-IPI, which the processor
    /// virtualized (edge-triggered).
    fn request_self_ipi(&mut self, vector: u8);
    /// The processor delivered `vector` (IRR to ISR).
    fn accept_delivered(&mut self, vector: u8);
    /// The processor virtualized the EOI of `vector`.
    fn end_of_interrupt(&mut self, vector: u8);
    /// The highest vector the processor may deliver now, above the PPR.
    fn deliverable_vector(&self) -> Option<u8>;
    /// Whether the processor delivers the fixed vectors itself.
    fn set_processor_delivery(&mut self, on: bool);
    /// The register at xAPIC `offset` as a read returns it; `None` if none.
    fn register_value(&self, offset: u32) -> Option<u32>;
    /// The guest-physical base of the xAPIC page while in xAPIC mode.
    fn mmio_base(&self) -> Option<u64>;
    /// Whether the guest put the APIC in x2APIC mode.
    fn is_x2apic(&self) -> bool;
    /// A 32-bit write of `value` to the register at xAPIC `offset`: through
    /// the xAPIC page, or in x2APIC mode to the MSR of that register (a
    /// write the model refuses is dropped, as the processor has already
    /// completed the instruction).
    fn write_register(&mut self, offset: u32, value: u32);
    /// The TPR threshold (see [`LocalApic::tpr_threshold`]).
    fn tpr_threshold(&self) -> u8;
    /// RVI and SVI (see [`LocalApic::guest_interrupt_status`]).
    fn guest_interrupt_status(&self) -> u16;
    /// The EOI-exit bitmap (see [`LocalApic::eoi_exit_bitmap`]).
    fn eoi_exit_bitmap(&self) -> [u64; 4];
    /// A number that changes whenever the TPR, IRR, ISR or TMR may have
    /// changed (see [`LocalApic::interrupt_generation`]).
    fn interrupt_generation(&self) -> u64;
    /// The same for each of those registers (see
    /// [`LocalApic::interrupt_generations`]).
    fn interrupt_generations(&self) -> InterruptGenerations;
}

impl<C: Clock, const X2APIC: bool> ApicModel for LocalApic<C, X2APIC> {
    fn tpr(&self) -> u8 {
        LocalApic::tpr(self)
    }
    fn set_tpr(&mut self, tpr: u8) {
        LocalApic::set_tpr(self, tpr)
    }
    fn ppr(&self) -> u8 {
        LocalApic::ppr(self)
    }
    fn vector_registers(&self) -> VectorRegisters {
        // Spelled out: a loop over the words is not unrolled, and this runs
        // around most exits.
        let words = |set: &crate::irq::vectors::VectorSet| {
            [
                set.word(0),
                set.word(1),
                set.word(2),
                set.word(3),
                set.word(4),
                set.word(5),
                set.word(6),
                set.word(7),
            ]
        };
        VectorRegisters {
            irr: words(self.irr()),
            isr: words(self.isr()),
            tmr: words(self.tmr()),
        }
    }
    fn request_self_ipi(&mut self, vector: u8) {
        self.request_vector(vector, TriggerMode::Edge)
    }
    fn accept_delivered(&mut self, vector: u8) {
        LocalApic::accept_delivered(self, vector)
    }
    fn end_of_interrupt(&mut self, vector: u8) {
        LocalApic::end_of_interrupt(self, vector)
    }
    fn deliverable_vector(&self) -> Option<u8> {
        LocalApic::deliverable_vector(self)
    }
    fn set_processor_delivery(&mut self, on: bool) {
        LocalApic::set_processor_delivery(self, on)
    }
    fn register_value(&self, offset: u32) -> Option<u32> {
        LocalApic::register_value(self, offset)
    }
    fn mmio_base(&self) -> Option<u64> {
        LocalApic::mmio_base(self)
    }
    fn is_x2apic(&self) -> bool {
        LocalApic::is_x2apic(self)
    }
    fn write_register(&mut self, offset: u32, value: u32) {
        if LocalApic::is_x2apic(self) {
            let msr = MSR_X2APIC_FIRST + ((offset & 0xFF0) >> 4);
            let _ = self.write_msr(msr, u64::from(value));
        } else {
            self.mmio_write(u64::from(offset), AccessWidth::Dword, u64::from(value))
        }
    }
    fn tpr_threshold(&self) -> u8 {
        LocalApic::tpr_threshold(self)
    }
    fn guest_interrupt_status(&self) -> u16 {
        LocalApic::guest_interrupt_status(self)
    }
    fn eoi_exit_bitmap(&self) -> [u64; 4] {
        LocalApic::eoi_exit_bitmap(self)
    }
    fn interrupt_generation(&self) -> u64 {
        LocalApic::interrupt_generation(self)
    }
    fn interrupt_generations(&self) -> InterruptGenerations {
        LocalApic::interrupt_generations(self)
    }
}

/// The LAPIC's 256-bit vector registers, as the xAPIC page lays them out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorRegisters {
    /// Interrupt request register.
    pub irr: [u32; 8],
    /// In-service register.
    pub isr: [u32; 8],
    /// Trigger mode register.
    pub tmr: [u32; 8],
}

/// What APIC virtualization did, for integrators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApicVirtualizationStats {
    /// Interrupts the processor delivered from RVI (seen at the next exit).
    pub virtual_deliveries: u64,
    /// EOIs the processor virtualized (seen at the next exit).
    pub virtual_eois: u64,
    /// Self-IPIs the processor virtualized.
    pub virtual_self_ipis: u64,
    /// Changes of the TPR made without an exit (MOV CR8, xAPIC TPR writes).
    pub tpr_changes: u64,
    /// APIC-access exits performed on the model.
    pub apic_accesses: u64,
    /// APIC-write exits performed on the model.
    pub apic_writes: u64,
}

/// The register slots APIC-register virtualization lets the guest read
/// from the page, besides the ones the processor maintains itself.
const MIRRORED: [u32; 20] = [
    reg::ID,
    reg::VERSION,
    reg::EOI,
    reg::LDR,
    reg::DFR,
    reg::SVR,
    reg::ESR,
    reg::ICR_LOW,
    reg::ICR_HIGH,
    reg::LVT_CMCI,
    reg::LVT_TIMER,
    reg::LVT_THERMAL,
    reg::LVT_PERF,
    reg::LVT_LINT0,
    reg::LVT_LINT1,
    reg::LVT_ERROR,
    reg::TIMER_INITIAL,
    reg::TIMER_DIVIDE,
    reg::APR,
    reg::RRD,
];

/// The APIC virtualization of one vCPU: its virtual-APIC page, the APIC-
/// access page and the page/model synchronization (see the module
/// documentation).
#[derive(Debug)]
pub struct VirtualApic<'a> {
    tier: ApicVirtualization,
    page: VirtualApicPage<'a>,
    /// Its contents are never read; all ones while the guest can reach it.
    access_page: VirtualApicPage<'a>,
    guest_base: u64,
    /// The EOI-exit bitmap (from the TMR) and TPR threshold as last
    /// written.
    eoi_exit: Option<[u32; 8]>,
    threshold: Option<u8>,
    /// VTPR, VIRR and VISR as the page holds them as far as the host
    /// knows: as last written, or as read after an exit.
    page_tpr: u32,
    page_irr: [u32; 8],
    page_isr: [u32; 8],
    /// The guest interrupt status (RVI, SVI) as last written, while the
    /// processor cannot have changed it (it changes it only along with
    /// VIRR or VISR).
    status: Option<u16>,
    /// The model's interrupt generations whose TPR, IRR, ISR and TMR the
    /// page and the VMCS hold; `None` when they must all be compared again.
    synced: Option<InterruptGenerations>,
    /// The model was told that the processor delivers its vectors.
    delivery_announced: bool,
    /// The VMCS fields were written.
    configured: bool,
    /// The mirrored registers must be copied again before the next entry.
    mirror_stale: bool,
    /// Virtualization of the x2APIC MSRs, when the processor offers it.
    x2apic: Option<X2apicVirtualization>,
    stats: ApicVirtualizationStats,
}

/// The x2APIC side: the MSR bitmap whose write intercepts of the
/// virtualized MSRs are lifted while the guest is in x2APIC mode, and
/// whether that mode is what the controls are set for.
#[derive(Debug)]
struct X2apicVirtualization {
    msr_bitmap: MsrBitmap,
    active: bool,
}

/// x2APIC TPR, EOI and SELF IPI MSRs.
const X2APIC_TPR: u32 = 0x808;
const X2APIC_EOI: u32 = 0x80B;
const X2APIC_SELF_IPI: u32 = 0x83F;

impl<'a> VirtualApic<'a> {
    /// APIC virtualization of `tier` with `virtual_apic` as the virtual-APIC
    /// page and `access_page` as the APIC-access page, to be mapped at
    /// `guest_base` (the board's xAPIC page, usually
    /// [`crate::irq::lapic::DEFAULT_APIC_BASE`]). `None` for the software
    /// tier, which needs neither.
    pub fn new(
        tier: ApicVirtualization,
        virtual_apic: &'a mut Page4K,
        access_page: &'a mut Page4K,
        guest_base: u64,
    ) -> Option<Self> {
        if tier == ApicVirtualization::Software {
            return None;
        }
        Some(Self {
            tier,
            page: VirtualApicPage::new(virtual_apic),
            access_page: VirtualApicPage::new(access_page),
            guest_base: guest_base & !0xFFF,
            eoi_exit: None,
            threshold: None,
            page_tpr: 0,
            page_irr: [0; 8],
            page_isr: [0; 8],
            status: None,
            synced: None,
            delivery_announced: false,
            configured: false,
            mirror_stale: true,
            x2apic: None,
            stats: ApicVirtualizationStats::default(),
        })
    }

    /// Also virtualizes the x2APIC MSRs while the guest has its APIC in
    /// x2APIC mode, if the processor offers "virtualize x2APIC mode" (else
    /// they keep exiting to the model): the run loop then switches from
    /// virtualized APIC accesses to virtualized x2APIC mode (the SDM forbids
    /// both at once) and lets writes of the TPR MSR (and, with virtual-
    /// interrupt delivery, of EOI and SELF IPI) through `msr_bitmap`, the
    /// vCPU's MSR bitmap, to the processor. Reads keep exiting to the model.
    pub fn with_x2apic_virtualization(
        mut self,
        msr_bitmap: MsrBitmap,
        caps: &VmxCapabilities,
    ) -> Self {
        if caps.proc2_allows(Proc2Control::VirtualizeX2apicMode.bit()) {
            self.x2apic = Some(X2apicVirtualization {
                msr_bitmap,
                active: false,
            });
        }
        self
    }

    /// Whether the x2APIC MSRs are virtualized now.
    pub fn x2apic_virtualized(&self) -> bool {
        self.x2apic.as_ref().is_some_and(|x| x.active)
    }

    /// Switches the controls and the MSR bitmap to the mode the guest's APIC
    /// is in (see [`VirtualApic::with_x2apic_virtualization`]).
    fn follow_apic_mode<V: VmcsAccess + ?Sized>(
        &mut self,
        vmcs: &mut V,
        x2apic_mode: bool,
    ) -> Result<(), VmcsError> {
        let delivers = self.delivers_interrupts();
        let Some(x2apic) = self.x2apic.as_mut() else {
            return Ok(());
        };
        if x2apic.active == x2apic_mode {
            return Ok(());
        }
        let (xapic, x2) = (
            Proc2Control::VirtualizeApicAccesses.bit(),
            Proc2Control::VirtualizeX2apicMode.bit(),
        );
        let (set, clear) = if x2apic_mode {
            (x2, xapic)
        } else {
            (xapic, x2)
        };
        vmcs.update32(Control32::ProcBasedControls2, set, clear)?;
        // Not virtualized in x2APIC mode, the guest reaches the APIC-access
        // page as memory: it reads all ones there, as from the absent xAPIC
        // page (writes stay in the page, which the host never reads).
        self.access_page.fill(u32::MAX);
        let virtualized = [X2APIC_TPR, X2APIC_EOI, X2APIC_SELF_IPI];
        let count = if delivers { 3 } else { 1 };
        for &msr in &virtualized[..count] {
            // In the range the bitmap covers.
            let _ = x2apic.msr_bitmap.intercept_write(msr, !x2apic_mode);
        }
        x2apic.active = x2apic_mode;
        Ok(())
    }

    /// APIC virtualization of `tier` with both pages taken from the image's
    /// host memory (allocate them before the EPT tables take the rest);
    /// `None` for the software tier.
    pub fn from_host_memory(
        tier: ApicVirtualization,
        memory: &mut HostMemory,
        guest_base: u64,
    ) -> Result<Option<VirtualApic<'static>>, FrameError> {
        if tier == ApicVirtualization::Software {
            return Ok(None);
        }
        let (virtual_apic, access_page) = (memory.page()?, memory.page()?);
        Ok(VirtualApic::new(
            tier,
            virtual_apic,
            access_page,
            guest_base,
        ))
    }

    /// The tier.
    pub fn tier(&self) -> ApicVirtualization {
        self.tier
    }

    /// What the virtualization did so far.
    pub fn stats(&self) -> &ApicVirtualizationStats {
        &self.stats
    }

    /// The guest-physical address of the virtualized xAPIC page.
    pub fn guest_base(&self) -> u64 {
        self.guest_base
    }

    /// The virtual-APIC page (what the processor sees).
    pub fn page(&self) -> &VirtualApicPage<'a> {
        &self.page
    }

    /// Maps the APIC-access page at the guest base in `ept` (read and write,
    /// uncacheable; the processor virtualizes every access to it).
    pub fn map_access_page<A: FrameAllocator>(
        &self,
        ept: &mut EptTables<A>,
    ) -> Result<(), EptError> {
        ept.map(
            self.guest_base,
            self.access_page.address(),
            0x1000,
            MappingAttributes::DEVICE,
        )
    }

    /// Writes the VMCS fields of APIC virtualization: the virtual-APIC and
    /// APIC-access addresses, a zero TPR threshold and, with virtual-
    /// interrupt delivery, an empty EOI-exit bitmap and guest interrupt
    /// status. The controls come from
    /// [`ApicVirtualization::require_controls`]. The run loop does it before
    /// its first entry if the integrator did not.
    pub fn configure<V: VmcsAccess + ?Sized>(&mut self, vmcs: &mut V) -> Result<(), VmcsError> {
        vmcs.write(Control64::VirtualApicAddress, self.page.address())?;
        vmcs.write(Control64::ApicAccessAddress, self.access_page.address())?;
        vmcs.write(Control32::TprThreshold, 0)?;
        self.threshold = Some(0);
        if self.tier == ApicVirtualization::VirtualInterruptDelivery {
            self.write_eoi_exit(vmcs, [0; 4])?;
            self.eoi_exit = Some([0; 8]);
            vmcs.write(Guest16::InterruptStatus, 0)?;
            self.status = Some(0);
        }
        self.page_tpr = self.page.read(offset::VTPR);
        self.page.write_vectors(offset::VIRR, &[0; 8]);
        self.page.write_vectors(offset::VISR, &[0; 8]);
        self.page_irr = [0; 8];
        self.page_isr = [0; 8];
        self.synced = None;
        self.mirror_stale = true;
        self.configured = true;
        Ok(())
    }

    /// Before the run loop decides an entry: with virtual-interrupt
    /// delivery, tells the model (once) that the processor delivers its
    /// fixed vectors, so that the decision leaves them alone.
    pub fn before_decision(&mut self, apic: &mut dyn ApicModel) {
        if self.delivers_interrupts() && !self.delivery_announced {
            apic.set_processor_delivery(true);
            self.delivery_announced = true;
        }
    }

    /// Whether [`VirtualApic::configure`] wrote the VMCS fields.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// Whether the processor delivers the LAPIC's fixed vectors.
    pub fn delivers_interrupts(&self) -> bool {
        self.tier == ApicVirtualization::VirtualInterruptDelivery
    }

    /// The model's registers changed outside the interrupt flow (a register
    /// write by any path): copy them to the page again before the next
    /// entry.
    pub fn registers_changed(&mut self) {
        self.mirror_stale = true;
    }

    /// Brings the model up to what the processor did on the page while the
    /// guest ran: the TPR, and with virtual-interrupt delivery the vectors
    /// it delivered, the EOIs it virtualized and the self-IPIs it raised.
    /// Call after every exit, before anything else looks at the model.
    ///
    /// Inlined, it only compares the 17 words; what changed is taken over
    /// out of line, which keeps the run loop's code light.
    #[inline]
    pub fn after_exit(&mut self, apic: &mut dyn ApicModel) {
        let vtpr = self.page.read(offset::VTPR);
        let vectors_moved = self.delivers_interrupts()
            && (self.page_differs(offset::VIRR, &self.page_irr)
                || self.page_differs(offset::VISR, &self.page_isr));
        if vtpr != self.page_tpr || vectors_moved {
            self.take_over(vtpr, vectors_moved, apic);
        }
    }

    /// The part of [`VirtualApic::after_exit`] that runs when the guest
    /// changed the page: `vtpr` is the page's VTPR, `vectors_moved` says
    /// whether VIRR or VISR changed.
    #[cold]
    #[inline(never)]
    fn take_over(&mut self, vtpr: u32, vectors_moved: bool, apic: &mut dyn ApicModel) {
        if vtpr != self.page_tpr {
            self.page_tpr = vtpr;
            self.synced = None;
            if vtpr as u8 != apic.tpr() {
                apic.set_tpr(vtpr as u8);
                self.stats.tpr_changes += 1;
            }
        }
        if !vectors_moved {
            return;
        }
        // Read straight into the copies (a local array would be copied).
        self.page_irr = self.page.read_vectors(offset::VIRR);
        self.page_isr = self.page.read_vectors(offset::VISR);
        // RVI and SVI moved with them; the model is compared again before
        // the next entry (it may refuse a self-IPI the page holds).
        self.status = None;
        self.synced = None;
        let model = apic.vector_registers();
        for index in 0..8 {
            let (irr, isr) = (model.irr[index], model.isr[index]);
            let (virr, visr) = (self.page_irr[index], self.page_isr[index]);
            if virr == irr && visr == isr {
                continue;
            }
            let base = 32 * index as u8;
            // Put in service during the run.
            let entered = visr & !isr;
            // Requested by a virtualized self-IPI: pending, or put in
            // service, without the model's request.
            let raised = (virr | entered) & !irr;
            for bit in set_bits(raised) {
                apic.request_self_ipi(base + bit);
                self.stats.virtual_self_ipis += 1;
            }
            // Delivered: requested and no longer pending, or put in service
            // (and then, if pending again, raised once more).
            let delivered = ((irr | raised) & !virr) | entered;
            for bit in set_bits(delivered) {
                apic.accept_delivered(base + bit);
                self.stats.virtual_deliveries += 1;
            }
            for bit in set_bits(delivered & virr) {
                apic.request_self_ipi(base + bit);
                self.stats.virtual_self_ipis += 1;
            }
            // Ended: in service for the model, not on the page.
            for bit in set_bits((isr | delivered) & !visr) {
                apic.end_of_interrupt(base + bit);
                self.stats.virtual_eois += 1;
            }
        }
        // Usually the model now holds what the page holds, and the next
        // entry has nothing to write.
        if self.holds(apic) {
            self.synced = Some(apic.interrupt_generations());
        }
    }

    /// Whether the page and the VMCS hold the model's TPR, IRR, ISR and TMR
    /// (what [`VirtualApic::before_entry`] would find nothing to write for).
    fn holds(&self, apic: &dyn ApicModel) -> bool {
        let model = apic.vector_registers();
        self.page_tpr == u32::from(apic.tpr())
            && !differ(&model.irr, &self.page_irr)
            && !differ(&model.isr, &self.page_isr)
            && self
                .eoi_exit
                .as_ref()
                .is_some_and(|tmr| !differ(tmr, &model.tmr))
    }

    /// Writes the model's state to the page and the VMCS for the next entry
    /// (see the module documentation).
    pub fn before_entry<V: VmcsAccess + ?Sized>(
        &mut self,
        vmcs: &mut V,
        apic: &mut dyn ApicModel,
    ) -> Result<(), VmcsError> {
        if self.x2apic.is_some() {
            self.follow_apic_mode(vmcs, apic.is_x2apic())?;
        }
        if self.synced.map(|known| known.any) != Some(apic.interrupt_generation()) {
            let now = apic.interrupt_generations();
            self.write_interrupt_state(vmcs, apic, &now)?;
            self.synced = Some(now);
        }
        // Only APIC-register virtualization lets the guest read them.
        if self.mirror_stale && self.delivers_interrupts() {
            self.mirror(apic);
        }
        Ok(())
    }

    /// Writes the model's TPR, IRR, ISR and TMR, and what follows from
    /// them, where the page or the VMCS holds something else; only the
    /// registers whose generation moved since the last synchronization
    /// (`now` are the model's generations) are compared.
    fn write_interrupt_state<V: VmcsAccess + ?Sized>(
        &mut self,
        vmcs: &mut V,
        apic: &dyn ApicModel,
        now: &InterruptGenerations,
    ) -> Result<(), VmcsError> {
        let known = self.synced;
        let moved =
            |count: fn(&InterruptGenerations) -> u64| known.is_none_or(|k| count(&k) != count(now));
        let (tpr_moved, irr_moved) = (moved(|g| g.tpr), moved(|g| g.irr));
        let (isr_moved, tmr_moved) = (moved(|g| g.isr), moved(|g| g.tmr));
        let mut tpr_changed = false;
        if tpr_moved {
            let tpr = u32::from(apic.tpr());
            tpr_changed = tpr != self.page.read(offset::VTPR);
            if tpr_changed {
                self.page.write(offset::VTPR, tpr);
            }
            self.page_tpr = tpr;
        }
        if !self.delivers_interrupts() {
            if !(tpr_moved || irr_moved) {
                return Ok(());
            }
            let threshold = apic.tpr_threshold();
            if self.threshold != Some(threshold) {
                vmcs.write(Control32::TprThreshold, u32::from(threshold))?;
                self.threshold = Some(threshold);
            }
            return Ok(());
        }
        let model = apic.vector_registers();
        let irr_words = if irr_moved {
            changed_words(&model.irr, &self.page_irr)
        } else {
            0
        };
        let isr_words = if isr_moved {
            changed_words(&model.isr, &self.page_isr)
        } else {
            0
        };
        // Unchanged, the page's VPPR and the VMCS's RVI/SVI are as the
        // processor left them, which is what the model holds: the PPR
        // follows the TPR and the ISR, RVI the IRR and SVI the ISR.
        if tpr_changed || isr_words != 0 {
            self.page.write(offset::VPPR, u32::from(apic.ppr()));
        }
        if irr_words | isr_words != 0 {
            let known = match self.status {
                Some(status) => status,
                // As the processor left it, with VIRR and VISR.
                None => vmcs.read(Guest16::InterruptStatus)?,
            };
            let status = match added_vectors_only(irr_words, &model.irr, &self.page_irr) {
                // Requests added, none taken away or put in service: RVI
                // rises to the highest new one if it is above.
                Some(highest) if isr_words == 0 => {
                    (known & 0xFF00) | u16::from((known as u8).max(highest))
                }
                _ => apic.guest_interrupt_status(),
            };
            if status != known {
                vmcs.write(Guest16::InterruptStatus, status)?;
            }
            self.status = Some(status);
            write_words(&mut self.page, offset::VIRR, irr_words, &model.irr);
            write_words(&mut self.page, offset::VISR, isr_words, &model.isr);
            self.page_irr = model.irr;
            self.page_isr = model.isr;
        }
        let tmr_changed = match self.eoi_exit {
            Some(known) => tmr_moved && differ(&known, &model.tmr),
            None => true,
        };
        if tmr_changed {
            // The bitmap follows the TMR: the level-triggered vectors, whose
            // EOI the IOAPIC must see.
            self.write_eoi_exit(vmcs, apic.eoi_exit_bitmap())?;
            self.eoi_exit = Some(model.tmr);
            self.mirror_stale = true;
        }
        Ok(())
    }

    /// Whether the 256-bit register at `base` of the page differs from
    /// `known` (without copying it). Inlined, so that the offsets are
    /// constants: this runs after every exit.
    #[inline(always)]
    fn page_differs(&self, base: u32, known: &[u32; 8]) -> bool {
        // Spelled out, as in `differ`.
        let word = |index: usize| self.page.read(base + 16 * index as u32) ^ known[index];
        (word(0) | word(1) | word(2) | word(3) | word(4) | word(5) | word(6) | word(7)) != 0
    }

    /// An APIC-write exit: the guest wrote the register at `offset` of the
    /// page; performs that write on the model.
    pub fn apic_write(&mut self, offset: u16, apic: &mut dyn ApicModel) {
        let offset = u32::from(offset) & 0xFF0;
        let value = self.page.read(offset);
        apic.write_register(offset, value);
        self.stats.apic_writes += 1;
        self.mirror_stale = true;
    }

    /// Counts an APIC-access exit the run loop performed on the model.
    pub fn apic_access_performed(&mut self) {
        self.stats.apic_accesses += 1;
        self.mirror_stale = true;
    }

    fn write_eoi_exit<V: VmcsAccess + ?Sized>(
        &mut self,
        vmcs: &mut V,
        bitmap: [u64; 4],
    ) -> Result<(), VmcsError> {
        let fields = [
            Control64::EoiExitBitmap0,
            Control64::EoiExitBitmap1,
            Control64::EoiExitBitmap2,
            Control64::EoiExitBitmap3,
        ];
        for (field, value) in fields.into_iter().zip(bitmap) {
            vmcs.write(field, value)?;
        }
        Ok(())
    }

    /// Copies the registers APIC-register virtualization serves from the
    /// page: the model's values while it is in xAPIC mode at the guest base,
    /// all ones otherwise (the page is then absent for the model).
    fn mirror(&mut self, apic: &dyn ApicModel) {
        let present = apic.mmio_base() == Some(self.guest_base);
        let value = |offset: u32| {
            if present {
                apic.register_value(offset).unwrap_or(0)
            } else {
                u32::MAX
            }
        };
        for slot in MIRRORED {
            self.page.write(slot, value(slot));
        }
        for index in 0..8 {
            let slot = offset::VTMR + 16 * index;
            self.page.write(slot, value(slot));
        }
        self.mirror_stale = false;
    }
}

/// Whether two 256-bit registers differ. Spelled out: comparing the arrays
/// calls `memcmp`, and a loop is not unrolled; this runs around most exits.
fn differ(a: &[u32; 8], b: &[u32; 8]) -> bool {
    let word = |index: usize| a[index] ^ b[index];
    (word(0) | word(1) | word(2) | word(3) | word(4) | word(5) | word(6) | word(7)) != 0
}

/// The words in which two 256-bit registers differ, as a mask (bit `i` for
/// word `i`, vectors `32 * i` to `32 * i + 31`).
fn changed_words(a: &[u32; 8], b: &[u32; 8]) -> u32 {
    let word = |index: usize| u32::from(a[index] != b[index]) << index;
    word(0) | word(1) | word(2) | word(3) | word(4) | word(5) | word(6) | word(7)
}

/// If the register `new` only adds vectors to `old` in the words of
/// `changed` (see [`changed_words`], not empty), the highest vector it
/// adds; `None` if it takes any away.
fn added_vectors_only(changed: u32, new: &[u32; 8], old: &[u32; 8]) -> Option<u8> {
    let mut highest = None;
    for index in set_bits(changed) {
        let (new, old) = (new[usize::from(index)], old[usize::from(index)]);
        if old & !new != 0 {
            return None;
        }
        // Words are visited lowest first: the last one holds the highest.
        highest = Some(32 * index + (31 - (new & !old).leading_zeros() as u8));
    }
    highest
}

/// Writes the words of `words` named by the mask `changed` (see
/// [`changed_words`]) to the 256-bit register at `base` of `page`.
fn write_words(page: &mut VirtualApicPage<'_>, base: u32, changed: u32, words: &[u32; 8]) {
    for index in set_bits(changed) {
        page.write(base + 16 * u32::from(index), words[usize::from(index)]);
    }
}

#[cfg(test)]
mod tests;
