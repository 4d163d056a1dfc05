//! The virtual local APIC of one vCPU (Intel SDM Vol. 3A, "Advanced
//! Programmable Interrupt Controller").
//!
//! [`LocalApic`] owns the register state of both interfaces: the xAPIC page
//! (32-bit registers at 16-byte aligned offsets of a 4 KiB MMIO page whose
//! base the guest may move through `IA32_APIC_BASE`) and the x2APIC MSRs
//! 0x800-0x8FF, with the mode switch rules of the SDM ("x2APIC State
//! Transitions"). x2APIC support may be left out at compile time
//! ([`LocalApic::xapic_only`]) by an integrator whose guests are never
//! offered it. It holds IRR/ISR/TMR, TPR/PPR, the spurious-vector
//! register, the LVT entries, the error status register and the timer
//! (one-shot, periodic, TSC-deadline), whose count is computed from the
//! [`Clock`] when read.
//!
//! What the LAPIC does not own: where its level-triggered EOIs go (the router
//! drains them with [`LocalApic::take_level_eoi`] and tells the IOAPIC) and
//! other vCPUs. IPIs addressed to anybody but this vCPU are counted and the
//! last one kept ([`LocalApic::remote_ipis`]); SMP delivery is left to the
//! integrator. INIT and start-up IPIs aimed at this vCPU are recorded for
//! the run loop ([`LocalApic::take_init`], [`LocalApic::take_startup`]).

use core::fmt;

use super::msi::{DeliveryMode, Destination, InterruptMessage, TriggerMode};
use super::vectors::VectorSet;
use crate::device::{AccessWidth, Mmio};
use crate::time::{first_ns_at_tick, ticks_at, Clock};

/// `IA32_APIC_BASE` MSR number.
pub const MSR_APIC_BASE: u32 = 0x1B;
/// `IA32_TSC_DEADLINE` MSR number.
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// First x2APIC MSR.
pub const MSR_X2APIC_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const MSR_X2APIC_LAST: u32 = 0x8FF;
/// The architectural default base of the xAPIC page.
pub const DEFAULT_APIC_BASE: u64 = 0xFEE0_0000;

const BASE_BSP: u64 = 1 << 8;
const BASE_EXTD: u64 = 1 << 10;
const BASE_EN: u64 = 1 << 11;

/// Register offsets in the xAPIC page (x2APIC MSR = 0x800 + offset / 16).
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x020;
    /// Version.
    pub const VERSION: u32 = 0x030;
    /// Task priority.
    pub const TPR: u32 = 0x080;
    /// Arbitration priority (xAPIC only).
    pub const APR: u32 = 0x090;
    /// Processor priority.
    pub const PPR: u32 = 0x0A0;
    /// End of interrupt.
    pub const EOI: u32 = 0x0B0;
    /// Remote read (xAPIC only).
    pub const RRD: u32 = 0x0C0;
    /// Logical destination.
    pub const LDR: u32 = 0x0D0;
    /// Destination format (xAPIC only).
    pub const DFR: u32 = 0x0E0;
    /// Spurious interrupt vector.
    pub const SVR: u32 = 0x0F0;
    /// In-service register, 8 words.
    pub const ISR: u32 = 0x100;
    /// Trigger mode register, 8 words.
    pub const TMR: u32 = 0x180;
    /// Interrupt request register, 8 words.
    pub const IRR: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// LVT corrected machine check interrupt.
    pub const LVT_CMCI: u32 = 0x2F0;
    /// Interrupt command, low half.
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command, high half (xAPIC only).
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u32 = 0x330;
    /// LVT performance monitoring counters.
    pub const LVT_PERF: u32 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count.
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3E0;
    /// Self IPI (x2APIC only).
    pub const SELF_IPI: u32 = 0x3F0;
}

/// Error status register bits (SDM "Error Handling").
pub mod esr {
    /// Send illegal vector.
    pub const SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
    /// Receive illegal vector.
    pub const RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
    /// Illegal register address.
    pub const ILLEGAL_REGISTER: u32 = 1 << 7;
}

const LVT_MASKED: u32 = 1 << 16;
const SVR_ENABLE: u32 = 1 << 8;
const SVR_SUPPRESS_EOI_BROADCAST: u32 = 1 << 12;

/// The local vector table entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    /// Timer (0x320).
    Timer,
    /// Thermal sensor (0x330).
    Thermal,
    /// Performance counters (0x340).
    Perf,
    /// LINT0 pin (0x350); ExtINT here makes the 8259A the source.
    Lint0,
    /// LINT1 pin (0x360); usually NMI.
    Lint1,
    /// Error (0x370).
    Error,
    /// Corrected machine check (0x2F0).
    Cmci,
}

impl Lvt {
    /// Every entry, in register order of the array index.
    pub const ALL: [Lvt; 7] = [
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::Perf,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
        Lvt::Cmci,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Bits software may write (the delivery status bit 12 and LINT remote
    /// IRR bit 14 are read-only).
    fn writable(self) -> u32 {
        // Vector, mask, timer mode (bits 18:17).
        const TIMER: u32 = 0x0007_00FF;
        // Vector, delivery mode, mask.
        const SENSOR: u32 = 0x0001_07FF;
        // Vector, delivery mode, polarity, trigger mode, mask.
        const LINT: u32 = 0x0001_A7FF;
        // Vector, mask.
        const ERROR: u32 = 0x0001_00FF;
        // In the order of `Lvt::ALL`.
        const WRITABLE: [u32; 7] = [TIMER, SENSOR, SENSOR, LINT, LINT, ERROR, SENSOR];
        WRITABLE[self.index()]
    }
}

/// What one 16-byte slot of the xAPIC page holds (the x2APIC MSR of the
/// slot, 0x800 + offset / 16, reaches the same register): the one decoding
/// of register offsets that reads and writes, MMIO and MSRs, all use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Absent,
    Id,
    Version,
    Tpr,
    Apr,
    Ppr,
    Eoi,
    Rrd,
    Ldr,
    Dfr,
    Svr,
    /// One word of the ISR (vectors `32 * word` to `32 * word + 31`).
    Isr(u8),
    /// One word of the TMR.
    Tmr(u8),
    /// One word of the IRR.
    Irr(u8),
    Esr,
    IcrLow,
    IcrHigh,
    Lvt(Lvt),
    TimerInitial,
    TimerCurrent,
    TimerDivide,
    SelfIpi,
}

/// The slots of offsets 0x000-0x3F0; the rest of the page is absent.
const SLOTS: [Slot; 64] = {
    let mut slots = [Slot::Absent; 64];
    let singles = [
        (reg::ID, Slot::Id),
        (reg::VERSION, Slot::Version),
        (reg::TPR, Slot::Tpr),
        (reg::APR, Slot::Apr),
        (reg::PPR, Slot::Ppr),
        (reg::EOI, Slot::Eoi),
        (reg::RRD, Slot::Rrd),
        (reg::LDR, Slot::Ldr),
        (reg::DFR, Slot::Dfr),
        (reg::SVR, Slot::Svr),
        (reg::ESR, Slot::Esr),
        (reg::ICR_LOW, Slot::IcrLow),
        (reg::ICR_HIGH, Slot::IcrHigh),
        (reg::LVT_TIMER, Slot::Lvt(Lvt::Timer)),
        (reg::LVT_THERMAL, Slot::Lvt(Lvt::Thermal)),
        (reg::LVT_PERF, Slot::Lvt(Lvt::Perf)),
        (reg::LVT_LINT0, Slot::Lvt(Lvt::Lint0)),
        (reg::LVT_LINT1, Slot::Lvt(Lvt::Lint1)),
        (reg::LVT_ERROR, Slot::Lvt(Lvt::Error)),
        (reg::LVT_CMCI, Slot::Lvt(Lvt::Cmci)),
        (reg::TIMER_INITIAL, Slot::TimerInitial),
        (reg::TIMER_CURRENT, Slot::TimerCurrent),
        (reg::TIMER_DIVIDE, Slot::TimerDivide),
        (reg::SELF_IPI, Slot::SelfIpi),
    ];
    let mut i = 0;
    while i < singles.len() {
        slots[(singles[i].0 >> 4) as usize] = singles[i].1;
        i += 1;
    }
    let mut word = 0;
    while word < 8 {
        slots[(reg::ISR >> 4) as usize + word] = Slot::Isr(word as u8);
        slots[(reg::TMR >> 4) as usize + word] = Slot::Tmr(word as u8);
        slots[(reg::IRR >> 4) as usize + word] = Slot::Irr(word as u8);
        word += 1;
    }
    slots
};

impl Slot {
    /// The slot at xAPIC page `offset`; an offset that is not 16-byte
    /// aligned holds no register.
    fn at(offset: u32) -> Self {
        if offset & 0xF != 0 {
            return Self::Absent;
        }
        SLOTS
            .get((offset >> 4) as usize)
            .copied()
            .unwrap_or(Self::Absent)
    }
}

/// The three architectural states of a local APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// Globally disabled (`IA32_APIC_BASE.EN` = 0).
    Disabled,
    /// xAPIC: registers in the MMIO page.
    XApic,
    /// x2APIC: registers in MSRs 0x800-0x8FF.
    X2Apic,
}

/// The LAPIC timer modes (LVT timer bits 18:17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// 00: counts down once.
    OneShot,
    /// 01: reloads the initial count at zero.
    Periodic,
    /// 10: fires when the TSC reaches `IA32_TSC_DEADLINE`.
    TscDeadline,
}

/// An access the guest must see fail with #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicFault {
    /// `IA32_APIC_BASE` write with reserved bits set.
    ReservedBaseBits {
        /// The value written.
        value: u64,
    },
    /// An `IA32_APIC_BASE` write asking for a forbidden transition (to the
    /// invalid state EN=0/EXTD=1, x2APIC to xAPIC, disabled to x2APIC), or
    /// for x2APIC when it is not offered.
    InvalidTransition {
        /// Mode before the write.
        from: ApicMode,
        /// The value written.
        value: u64,
    },
    /// An x2APIC MSR accessed while the APIC is not in x2APIC mode.
    NotInX2ApicMode {
        /// The MSR.
        msr: u32,
    },
    /// An MSR of the x2APIC range with no register behind it (including the
    /// xAPIC-only DFR, APR, RRD and ICR high).
    NoSuchRegister {
        /// The MSR.
        msr: u32,
    },
    /// A read of a write-only register (EOI, SELF_IPI).
    WriteOnly {
        /// The MSR.
        msr: u32,
    },
    /// A write to a read-only register (ID, version, PPR, LDR, ISR, TMR,
    /// IRR, current count).
    ReadOnly {
        /// The MSR.
        msr: u32,
        /// The value written.
        value: u64,
    },
    /// A write with reserved bits set (SDM "Reserved Bit Checking": bits
    /// 63:32 outside ICR, non-zero EOI or ESR, reserved bits of TPR, SVR,
    /// LVT entries, divide configuration, SELF_IPI).
    ReservedBits {
        /// The MSR.
        msr: u32,
        /// The value written.
        value: u64,
    },
    /// Not an MSR this LAPIC handles.
    NotApicMsr {
        /// The MSR.
        msr: u32,
    },
}

impl fmt::Display for ApicFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBaseBits { value } => {
                write!(f, "IA32_APIC_BASE write {value:#x} sets reserved bits")
            }
            Self::InvalidTransition { from, value } => {
                write!(
                    f,
                    "IA32_APIC_BASE write {value:#x} is not allowed from {from:?}"
                )
            }
            Self::NotInX2ApicMode { msr } => write!(f, "MSR {msr:#x} needs x2APIC mode"),
            Self::NoSuchRegister { msr } => write!(f, "no x2APIC register at MSR {msr:#x}"),
            Self::WriteOnly { msr } => write!(f, "x2APIC MSR {msr:#x} is write-only"),
            Self::ReadOnly { msr, value } => {
                write!(f, "x2APIC MSR {msr:#x} is read-only (wrote {value:#x})")
            }
            Self::ReservedBits { msr, value } => {
                write!(f, "x2APIC MSR {msr:#x} write {value:#x} sets reserved bits")
            }
            Self::NotApicMsr { msr } => write!(f, "MSR {msr:#x} is not a LAPIC MSR"),
        }
    }
}

/// What the integrator chooses for one LAPIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LapicConfig {
    /// The (initial) APIC ID.
    pub apic_id: u32,
    /// Whether this is the bootstrap processor (`IA32_APIC_BASE` bit 8).
    pub bsp: bool,
    /// Frequency of the timer's input clock before the divider, in Hz.
    pub timer_hz: u64,
    /// Frequency of the guest TSC in Hz. The guest TSC is taken to be the
    /// [`Clock`] converted to ticks (`ticks_at(now_ns, tsc_hz)`); the run
    /// loop sets the VMCS TSC offset/scaling to make that true.
    pub tsc_hz: u64,
    /// x2APIC offered (CPUID.1:ECX bit 21). Cleared by a LAPIC built
    /// without x2APIC support ([`LocalApic::xapic_only`]).
    pub x2apic: bool,
    /// Directed EOI offered (version bit 24: the guest may suppress EOI
    /// broadcasts and write the IOAPIC EOI register instead).
    pub directed_eoi: bool,
    /// Guest physical address width (limits the base address bits).
    pub phys_addr_bits: u8,
}

impl LapicConfig {
    /// Defaults: BSP, a 1 GHz timer clock, x2APIC offered, no directed EOI,
    /// 39 physical address bits.
    pub const fn new(apic_id: u32, tsc_hz: u64) -> Self {
        Self {
            apic_id,
            bsp: true,
            timer_hz: 1_000_000_000,
            tsc_hz,
            x2apic: true,
            directed_eoi: false,
            phys_addr_bits: 39,
        }
    }
}

/// The last IPI this LAPIC sent to somebody other than itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteIpi {
    /// The ICR value (x2APIC layout: destination in bits 63:32; xAPIC:
    /// bits 63:56).
    pub icr: u64,
    /// How many such IPIs were sent since reset.
    pub count: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct ApicTimer {
    initial: u32,
    divide_config: u32,
    running: bool,
    anchor_ns: u64,
    anchor_remaining: u64,
    next_expiry_ns: Option<u64>,
    tsc_deadline: u64,
}

impl ApicTimer {
    /// SDM "Divide Configuration Register": bits 3,1,0.
    fn divisor(&self) -> u64 {
        let code = ((self.divide_config >> 1) & 4) | (self.divide_config & 3);
        // Codes 0-6 divide by 2 << code, code 7 by 1: 1 << (code + 1) mod 8.
        1 << ((code + 1) & 7)
    }
}

/// The local APIC of one vCPU. See the module documentation.
///
/// `X2APIC` says whether x2APIC support is compiled in. Without it
/// ([`LocalApic::xapic_only`], which clears [`LapicConfig::x2apic`]) the
/// APIC stays in xAPIC or disabled mode: `IA32_APIC_BASE` refuses EXTD and
/// the x2APIC MSRs fault as they do outside x2APIC mode, and the code of
/// that mode is left out of the image.
#[derive(Debug)]
pub struct LocalApic<C: Clock, const X2APIC: bool = true> {
    clock: C,
    config: LapicConfig,
    base: u64,
    mode: ApicMode,
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    irr: VectorSet,
    tmr: VectorSet,
    esr_visible: u32,
    esr_pending: u32,
    lvt: [u32; 7],
    icr: u64,
    timer: ApicTimer,
    nmi_pending: bool,
    init_pending: bool,
    startup_vector: Option<u8>,
    level_eois: VectorSet,
    remote: Option<RemoteIpi>,
    ignored_messages: u64,
    processor_delivers: bool,
    /// Change whenever the TPR, IRR, ISR or TMR may have changed (see
    /// [`LocalApic::interrupt_generations`]).
    generations: InterruptGenerations,
}

/// Counts of the changes of the LAPIC's interrupt registers (see
/// [`LocalApic::interrupt_generations`]); each wraps after 2^64 changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterruptGenerations {
    /// Any of the four registers below.
    pub any: u64,
    /// The task priority.
    pub tpr: u64,
    /// The interrupt request register.
    pub irr: u64,
    /// The in-service register.
    pub isr: u64,
    /// The trigger mode register.
    pub tmr: u64,
}

/// What became of a register write (see `LocalApic::write_register`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegisterWrite {
    /// The register took the value.
    Done,
    /// The register is read-only in the current mode.
    ReadOnly,
    /// No register at that offset in the current mode.
    Absent,
}

/// The registers an [`InterruptGenerations`] counts changes of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InterruptRegister {
    Tpr,
    Irr,
    Isr,
    Tmr,
}

impl<C: Clock> LocalApic<C> {
    /// A LAPIC in its power-up state: xAPIC mode at the default base, with
    /// x2APIC support (offered as [`LapicConfig::x2apic`] says).
    pub fn new(config: LapicConfig, clock: C) -> Self {
        Self::power_up(config, clock)
    }
}

impl<C: Clock> LocalApic<C, false> {
    /// A LAPIC in its power-up state without x2APIC support: for guests
    /// that are never offered x2APIC (see [`LocalApic`]). Its
    /// configuration says so: [`LapicConfig::x2apic`] is cleared.
    pub fn xapic_only(mut config: LapicConfig, clock: C) -> Self {
        config.x2apic = false;
        Self::power_up(config, clock)
    }
}

impl<C: Clock, const X2APIC: bool> LocalApic<C, X2APIC> {
    /// A LAPIC in its power-up state: xAPIC mode at the default base.
    fn power_up(config: LapicConfig, clock: C) -> Self {
        // The power-up values of `reset_registers`, written in place (a
        // call on the value under construction would make it be built
        // aside and copied field by field).
        Self {
            clock,
            config,
            base: DEFAULT_APIC_BASE,
            mode: ApicMode::XApic,
            id: config.apic_id,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            isr: VectorSet::new(),
            irr: VectorSet::new(),
            tmr: VectorSet::new(),
            esr_visible: 0,
            esr_pending: 0,
            lvt: [LVT_MASKED; 7],
            icr: 0,
            timer: ApicTimer::default(),
            nmi_pending: false,
            init_pending: false,
            startup_vector: None,
            level_eois: VectorSet::new(),
            remote: None,
            ignored_messages: 0,
            processor_delivers: false,
            generations: InterruptGenerations::default(),
        }
    }

    /// Power-up register values (SDM "Local APIC State After Power-Up or
    /// Reset"); the ID, base and mode are left alone.
    fn reset_registers(&mut self) {
        for register in [
            InterruptRegister::Tpr,
            InterruptRegister::Irr,
            InterruptRegister::Isr,
            InterruptRegister::Tmr,
        ] {
            self.interrupt_register_changed(register);
        }
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = u32::MAX;
        self.svr = 0xFF;
        self.isr = VectorSet::new();
        self.irr = VectorSet::new();
        self.tmr = VectorSet::new();
        self.esr_visible = 0;
        self.esr_pending = 0;
        self.lvt = [LVT_MASKED; 7];
        self.icr = 0;
        self.timer = ApicTimer::default();
        self.level_eois = VectorSet::new();
    }

    /// The configuration this LAPIC was built with.
    pub fn config(&self) -> &LapicConfig {
        &self.config
    }

    /// Current mode.
    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// Whether the APIC is in x2APIC mode; a constant `false` without
    /// x2APIC support, which lets that mode's code fall away.
    pub fn is_x2apic(&self) -> bool {
        X2APIC && self.mode == ApicMode::X2Apic
    }

    /// The guest-physical base of the xAPIC page while in xAPIC mode.
    pub fn mmio_base(&self) -> Option<u64> {
        (self.mode == ApicMode::XApic).then_some(self.base)
    }

    /// The APIC ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    // ---------------------------------------------------------------
    // IA32_APIC_BASE and MSRs
    // ---------------------------------------------------------------

    /// Value of `IA32_APIC_BASE`.
    pub fn apic_base(&self) -> u64 {
        let mut v = self.base;
        if self.config.bsp {
            v |= BASE_BSP;
        }
        match self.mode {
            ApicMode::Disabled => {}
            ApicMode::XApic => v |= BASE_EN,
            ApicMode::X2Apic => v |= BASE_EN | BASE_EXTD,
        }
        v
    }

    /// Writes `IA32_APIC_BASE` with the SDM's transition rules: EN=0 with
    /// EXTD=1 is invalid, x2APIC may only be left to the disabled state,
    /// and x2APIC is entered only from xAPIC. Disabling resets the
    /// registers. The BSP bit is read-only here.
    // Out of line: rare, and reached both from the MSR write and from
    // whoever sets the reset state.
    #[inline(never)]
    pub fn set_apic_base(&mut self, value: u64) -> Result<(), ApicFault> {
        let bits = u32::from(self.config.phys_addr_bits.clamp(32, 52));
        let addr_mask = ((1u64 << bits) - 1) & !0xFFF;
        if value & !(addr_mask | BASE_BSP | BASE_EXTD | BASE_EN) != 0 {
            return Err(ApicFault::ReservedBaseBits { value });
        }
        let to = match (value & BASE_EN != 0, value & BASE_EXTD != 0) {
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
            (false, true) => {
                return Err(ApicFault::InvalidTransition {
                    from: self.mode,
                    value,
                })
            }
        };
        let allowed = match (self.mode, to) {
            (_, ApicMode::X2Apic) if !(X2APIC && self.config.x2apic) => false,
            (ApicMode::X2Apic, ApicMode::XApic) => false,
            (ApicMode::Disabled, ApicMode::X2Apic) => false,
            _ => true,
        };
        if !allowed {
            return Err(ApicFault::InvalidTransition {
                from: self.mode,
                value,
            });
        }
        self.base = value & addr_mask;
        if to != self.mode {
            match to {
                ApicMode::Disabled => self.reset_registers(),
                ApicMode::X2Apic => {
                    // SDM: the x2APIC ID is the initial APIC ID; LDR is
                    // derived from it.
                    self.id = self.config.apic_id;
                    self.ldr = x2apic_ldr(self.id);
                }
                ApicMode::XApic => self.id = self.config.apic_id,
            }
            self.mode = to;
        }
        Ok(())
    }

    /// Reads a LAPIC MSR: `IA32_APIC_BASE`, `IA32_TSC_DEADLINE` or an
    /// x2APIC register.
    pub fn read_msr(&mut self, msr: u32) -> Result<u64, ApicFault> {
        match msr {
            MSR_APIC_BASE => Ok(self.apic_base()),
            MSR_TSC_DEADLINE => Ok(if self.timer_mode() == TimerMode::TscDeadline {
                self.timer.tsc_deadline
            } else {
                0
            }),
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {
                if !self.is_x2apic() {
                    return Err(ApicFault::NotInX2ApicMode { msr });
                }
                let offset = (msr - MSR_X2APIC_FIRST) << 4;
                match offset {
                    reg::EOI | reg::SELF_IPI => Err(ApicFault::WriteOnly { msr }),
                    reg::ICR_LOW => Ok(self.icr),
                    reg::DFR | reg::APR | reg::RRD | reg::ICR_HIGH => {
                        Err(ApicFault::NoSuchRegister { msr })
                    }
                    _ => self
                        .read_register(offset)
                        .map(u64::from)
                        .ok_or(ApicFault::NoSuchRegister { msr }),
                }
            }
            _ => Err(ApicFault::NotApicMsr { msr }),
        }
    }

    /// Writes a LAPIC MSR: `IA32_APIC_BASE`, `IA32_TSC_DEADLINE` or an
    /// x2APIC register.
    pub fn write_msr(&mut self, msr: u32, value: u64) -> Result<(), ApicFault> {
        match msr {
            MSR_APIC_BASE => self.set_apic_base(value),
            MSR_TSC_DEADLINE => {
                // SDM: ignored outside TSC-deadline mode; zero disarms.
                if self.timer_mode() == TimerMode::TscDeadline {
                    self.timer.tsc_deadline = value;
                    self.timer.next_expiry_ns =
                        (value != 0).then(|| first_ns_at_tick(value, self.config.tsc_hz));
                }
                Ok(())
            }
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {
                if !self.is_x2apic() {
                    return Err(ApicFault::NotInX2ApicMode { msr });
                }
                let offset = (msr - MSR_X2APIC_FIRST) << 4;
                if offset == reg::ICR_LOW {
                    // Reserved ICR bits are ignored, not faulted.
                    self.icr = value & 0xFFFF_FFFF_000C_CFFF;
                    self.send_ipi(self.icr);
                    return Ok(());
                }
                if value >> 32 != 0 {
                    return Err(ApicFault::ReservedBits { msr, value });
                }
                let v = value as u32;
                if let Some(allowed) = self.x2apic_defined_bits(offset) {
                    // SDM "Reserved Bit Checking": non-zero reserved bits #GP.
                    if v & !allowed != 0 {
                        return Err(ApicFault::ReservedBits { msr, value });
                    }
                }
                match self.write_register(offset, v) {
                    RegisterWrite::Done => Ok(()),
                    RegisterWrite::ReadOnly => Err(ApicFault::ReadOnly { msr, value }),
                    RegisterWrite::Absent => Err(ApicFault::NoSuchRegister { msr }),
                }
            }
            _ => Err(ApicFault::NotApicMsr { msr }),
        }
    }

    /// The bits of a writable x2APIC register that are not reserved (the
    /// read-only status bits of LVT entries count as defined); `None` for
    /// registers without such a check.
    fn x2apic_defined_bits(&self, offset: u32) -> Option<u32> {
        Some(match Slot::at(offset) {
            Slot::Tpr => 0xFF,
            Slot::Eoi | Slot::Esr => 0,
            Slot::Svr => {
                0x1FF
                    | if self.config.directed_eoi {
                        SVR_SUPPRESS_EOI_BROADCAST
                    } else {
                        0
                    }
            }
            Slot::TimerDivide => 0xB,
            Slot::SelfIpi => 0xFF,
            Slot::Lvt(lvt) => {
                let status = match lvt {
                    Lvt::Lint0 | Lvt::Lint1 => 0x5000,
                    _ => 0x1000,
                };
                lvt.writable() | status
            }
            _ => return None,
        })
    }

    // ---------------------------------------------------------------
    // Register file (xAPIC offsets)
    // ---------------------------------------------------------------

    /// Reads the register at xAPIC `offset` (16-byte aligned); `None` if
    /// there is none.
    fn read_register(&self, offset: u32) -> Option<u32> {
        let x2 = self.is_x2apic();
        Some(match Slot::at(offset) {
            Slot::Id => {
                if x2 {
                    self.id
                } else {
                    self.id << 24
                }
            }
            Slot::Version => {
                // Integrated APIC version 0x14, max LVT entry 6 (7 entries
                // with CMCI), directed EOI in bit 24.
                0x14 | (6 << 16) | (u32::from(self.config.directed_eoi) << 24)
            }
            Slot::Tpr => self.tpr,
            Slot::Apr | Slot::Rrd | Slot::Eoi => 0,
            Slot::Ppr => u32::from(self.ppr()),
            Slot::Ldr => self.ldr,
            Slot::Dfr => self.dfr,
            Slot::Svr => self.svr,
            Slot::Isr(word) => self.isr.word(usize::from(word)),
            Slot::Tmr(word) => self.tmr.word(usize::from(word)),
            Slot::Irr(word) => self.irr.word(usize::from(word)),
            Slot::Esr => self.esr_visible,
            Slot::IcrLow => self.icr as u32,
            Slot::IcrHigh => (self.icr >> 32) as u32,
            Slot::TimerInitial => self.timer.initial,
            Slot::TimerCurrent => self.current_count(),
            Slot::TimerDivide => self.timer.divide_config,
            Slot::Lvt(lvt) => self.lvt[lvt.index()],
            Slot::SelfIpi | Slot::Absent => return None,
        })
    }

    /// Writes the register at xAPIC `offset` in the current mode and says
    /// what became of the write: the xAPIC page ignores writes to read-only
    /// registers, x2APIC faults them; absent registers are an error in both.
    /// (ICR low in x2APIC mode is written 64 bits wide by `write_msr`.)
    fn write_register(&mut self, offset: u32, value: u32) -> RegisterWrite {
        let x2 = self.is_x2apic();
        match Slot::at(offset) {
            Slot::Id | Slot::Ldr if x2 => return RegisterWrite::ReadOnly,
            Slot::Dfr | Slot::Apr | Slot::Rrd | Slot::IcrHigh if x2 => {
                return RegisterWrite::Absent
            }
            Slot::SelfIpi if !x2 => return RegisterWrite::Absent,
            Slot::Id => self.id = value >> 24,
            Slot::Tpr => self.set_tpr(value as u8),
            Slot::Eoi => self.eoi(),
            Slot::Ldr => self.ldr = value & 0xFF00_0000,
            Slot::Dfr => self.dfr = value | 0x0FFF_FFFF,
            Slot::Svr => {
                let mut mask = 0x1FF;
                if self.config.directed_eoi {
                    mask |= SVR_SUPPRESS_EOI_BROADCAST;
                }
                self.svr = value & mask;
                if self.svr & SVR_ENABLE == 0 {
                    for entry in &mut self.lvt {
                        *entry |= LVT_MASKED;
                    }
                }
            }
            Slot::Esr => {
                // Write-before-read: the write makes the errors gathered
                // since the previous write visible and starts afresh.
                self.esr_visible = self.esr_pending;
                self.esr_pending = 0;
            }
            Slot::IcrLow => {
                self.icr = (self.icr & !0xFFFF_FFFF) | u64::from(value & 0x000C_CFFF);
                self.send_ipi(self.icr);
            }
            Slot::IcrHigh => {
                self.icr = (self.icr & 0xFFFF_FFFF) | (u64::from(value & 0xFF00_0000) << 32);
            }
            Slot::TimerInitial => self.write_initial_count(value),
            Slot::TimerDivide => {
                self.rebase_timer();
                self.timer.divide_config = value & 0xB;
                self.rebase_timer();
            }
            Slot::SelfIpi => {
                self.deliver_local(DeliveryMode::Fixed, value as u8, TriggerMode::Edge)
            }
            Slot::Version
            | Slot::Apr
            | Slot::Ppr
            | Slot::Rrd
            | Slot::TimerCurrent
            | Slot::Isr(_)
            | Slot::Tmr(_)
            | Slot::Irr(_) => return RegisterWrite::ReadOnly,
            Slot::Lvt(lvt) => self.write_lvt(lvt, value),
            Slot::Absent => return RegisterWrite::Absent,
        }
        RegisterWrite::Done
    }

    fn write_lvt(&mut self, lvt: Lvt, value: u32) {
        let old_mode = self.timer_mode();
        let preserved = self.lvt[lvt.index()] & !lvt.writable();
        let mut v = (value & lvt.writable()) | preserved;
        if self.svr & SVR_ENABLE == 0 {
            // SDM: while software-disabled, the mask bits stay set.
            v |= LVT_MASKED;
        }
        if lvt == Lvt::Timer {
            self.rebase_timer();
        }
        self.lvt[lvt.index()] = v;
        if lvt == Lvt::Timer {
            let new_mode = self.timer_mode();
            let deadline_switch =
                (old_mode == TimerMode::TscDeadline) != (new_mode == TimerMode::TscDeadline);
            if deadline_switch {
                // SDM: a switch to or from TSC-deadline mode disarms.
                self.timer.running = false;
                self.timer.initial = 0;
                self.timer.tsc_deadline = 0;
                self.timer.next_expiry_ns = None;
            } else {
                self.rebase_timer();
            }
        }
    }

    /// The value of the LVT entry `lvt`.
    pub fn lvt(&self, lvt: Lvt) -> u32 {
        self.lvt[lvt.index()]
    }

    // ---------------------------------------------------------------
    // Priorities and interrupt flow
    // ---------------------------------------------------------------

    /// Task priority (bits 7:0).
    pub fn tpr(&self) -> u8 {
        self.tpr as u8
    }

    /// Sets the task priority, as a MOV to CR8 does with `(cr8 << 4)`.
    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = u32::from(tpr);
        self.interrupt_register_changed(InterruptRegister::Tpr);
    }

    /// A number that changes whenever the TPR, IRR, ISR or TMR may have
    /// changed (it may also change when they did not): whoever copies them
    /// elsewhere, as APIC virtualization copies them to the virtual-APIC
    /// page, need not compare them again while it stays the same.
    pub fn interrupt_generation(&self) -> u64 {
        self.generations.any
    }

    /// The same for each of the four registers (and `any` of them).
    pub fn interrupt_generations(&self) -> InterruptGenerations {
        self.generations
    }

    fn interrupt_register_changed(&mut self, register: InterruptRegister) {
        let g = &mut self.generations;
        g.any = g.any.wrapping_add(1);
        let count = match register {
            InterruptRegister::Tpr => &mut g.tpr,
            InterruptRegister::Irr => &mut g.irr,
            InterruptRegister::Isr => &mut g.isr,
            InterruptRegister::Tmr => &mut g.tmr,
        };
        *count = count.wrapping_add(1);
    }

    /// Processor priority: TPR if its class is at least that of the highest
    /// in-service vector, else that vector's class (SDM "Processor Priority
    /// Register").
    pub fn ppr(&self) -> u8 {
        let tpr = self.tpr as u8;
        let isrv = self.isr.highest().unwrap_or(0);
        if tpr & 0xF0 >= isrv & 0xF0 {
            tpr
        } else {
            isrv & 0xF0
        }
    }

    /// Whether the APIC is globally enabled and software-enabled (SVR bit 8).
    pub fn is_enabled(&self) -> bool {
        self.mode != ApicMode::Disabled && self.svr & SVR_ENABLE != 0
    }

    /// The in-service register.
    pub fn isr(&self) -> &VectorSet {
        &self.isr
    }

    /// The interrupt request register.
    pub fn irr(&self) -> &VectorSet {
        &self.irr
    }

    /// The trigger mode register.
    pub fn tmr(&self) -> &VectorSet {
        &self.tmr
    }

    /// Whether a message addressed to `destination` reaches this APIC.
    pub fn matches(&self, destination: Destination) -> bool {
        let x2 = self.is_x2apic();
        match (self.mode, destination) {
            (ApicMode::Disabled, _) => false,
            (ApicMode::XApic, Destination::Physical(id)) => {
                let id = id & 0xFF;
                id == 0xFF || id == self.id & 0xFF
            }
            (ApicMode::X2Apic, Destination::Physical(id)) if x2 => {
                id == u32::MAX || id == self.id || (id == 0xFF && self.id != 0xFF)
            }
            (ApicMode::XApic, Destination::Logical(mda)) => {
                let mda = mda & 0xFF;
                let ldr = self.ldr >> 24;
                if mda == 0xFF {
                    true
                } else if self.dfr >> 28 == 0xF {
                    // Flat model.
                    ldr & mda != 0
                } else {
                    // Cluster model: cluster in bits 7:4, members in 3:0.
                    mda >> 4 == ldr >> 4 && mda & ldr & 0xF != 0
                }
            }
            (ApicMode::X2Apic, Destination::Logical(mda)) if x2 => {
                mda == u32::MAX || (mda >> 16 == self.ldr >> 16 && mda & self.ldr & 0xFFFF != 0)
            }
            // Not reached: without x2APIC support the mode is never entered.
            (ApicMode::X2Apic, _) => false,
        }
    }

    /// Offers a message (from the IOAPIC, an MSI or an IPI) to this APIC.
    /// Returns whether it was addressed here. ExtINT and SMI messages are
    /// counted in [`LocalApic::ignored_messages`].
    pub fn accept_message(&mut self, message: &InterruptMessage) -> bool {
        if !self.matches(message.destination) {
            return false;
        }
        self.deliver_local(message.delivery, message.vector, message.trigger);
        true
    }

    fn deliver_local(&mut self, delivery: DeliveryMode, vector: u8, trigger: TriggerMode) {
        match delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.request_vector(vector, trigger);
            }
            DeliveryMode::Nmi => self.nmi_pending = true,
            DeliveryMode::Init => self.init_pending = true,
            DeliveryMode::Startup => self.startup_vector = Some(vector),
            DeliveryMode::Smi | DeliveryMode::ExtInt => {
                self.ignored_messages = self.ignored_messages.saturating_add(1);
            }
        }
    }

    /// Sets `vector` in the IRR (and the TMR for level triggering). Vectors
    /// 0-15 are illegal: they set "receive illegal vector" in the ESR
    /// instead. A software-disabled APIC drops fixed interrupts.
    pub fn request_vector(&mut self, vector: u8, trigger: TriggerMode) {
        if vector < 16 {
            self.signal_error(esr::RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        if !self.is_enabled() {
            return;
        }
        self.interrupt_register_changed(InterruptRegister::Irr);
        self.irr.insert(vector);
        let level = trigger == TriggerMode::Level;
        if self.tmr.contains(vector) != level {
            self.interrupt_register_changed(InterruptRegister::Tmr);
            if level {
                self.tmr.insert(vector);
            } else {
                self.tmr.remove(vector);
            }
        }
    }

    fn signal_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[Lvt::Error.index()];
        let vector = lvt as u8;
        // An illegal error vector is not reported again.
        if lvt & LVT_MASKED == 0 && vector >= 16 {
            self.request_vector(vector, TriggerMode::Edge);
        }
    }

    /// The vector the APIC would present to the processor now for the
    /// software injection path: the highest IRR vector whose class is above
    /// the PPR's class. `None` while the processor delivers the fixed vectors
    /// itself ([`LocalApic::set_processor_delivery`]).
    pub fn pending_vector(&self) -> Option<u8> {
        if self.processor_delivers {
            return None;
        }
        self.deliverable_vector()
    }

    /// The highest IRR vector whose class is above the PPR's class, whoever
    /// delivers it.
    pub fn deliverable_vector(&self) -> Option<u8> {
        if !self.is_enabled() {
            return None;
        }
        let v = self.irr.highest()?;
        (v & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// Whether the processor delivers the fixed vectors itself (virtual-
    /// interrupt delivery from the IRR this model keeps, see
    /// [`crate::vcpu::apicv`]); the software injection path then leaves them
    /// alone ([`LocalApic::pending_vector`] answers `None`). NMIs, INIT and
    /// start-up IPIs are not affected.
    pub fn set_processor_delivery(&mut self, on: bool) {
        self.processor_delivers = on;
    }

    /// The processor takes the pending vector: it moves from the IRR to the
    /// ISR. Returns it, or `None` if nothing was deliverable.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending_vector()?;
        self.interrupt_register_changed(InterruptRegister::Irr);
        self.interrupt_register_changed(InterruptRegister::Isr);
        self.irr.remove(v);
        self.isr.insert(v);
        Some(v)
    }

    /// The processor delivered `vector` itself (virtual-interrupt delivery):
    /// it moves from the IRR to the ISR. A vector not requested is left
    /// alone.
    pub fn accept_delivered(&mut self, vector: u8) {
        if self.irr.contains(vector) {
            self.interrupt_register_changed(InterruptRegister::Irr);
            self.interrupt_register_changed(InterruptRegister::Isr);
            self.irr.remove(vector);
            self.isr.insert(vector);
        }
    }

    /// End of interrupt: clears the highest ISR bit (see
    /// [`LocalApic::end_of_interrupt`]).
    pub fn eoi(&mut self) {
        if let Some(v) = self.isr.highest() {
            self.end_of_interrupt(v);
        }
    }

    /// Ends the service of `vector` (an EOI the processor virtualized, for
    /// the highest in-service vector at the time): clears its ISR bit; a
    /// level-triggered vector (TMR set) is queued for the IOAPIC unless EOI
    /// broadcast is suppressed (SVR bit 12). A vector not in service is left
    /// alone.
    pub fn end_of_interrupt(&mut self, vector: u8) {
        if !self.isr.contains(vector) {
            return;
        }
        self.interrupt_register_changed(InterruptRegister::Isr);
        self.isr.remove(vector);
        if self.tmr.contains(vector) && self.svr & SVR_SUPPRESS_EOI_BROADCAST == 0 {
            self.level_eois.insert(vector);
        }
    }

    /// The value of the register at xAPIC page `offset` (16-byte aligned) as
    /// a read would return it in the current mode, without side effects;
    /// `None` where there is no register. What APIC-register
    /// virtualization mirrors into the virtual-APIC page.
    pub fn register_value(&self, offset: u32) -> Option<u32> {
        self.read_register(offset)
    }

    /// Takes one vector whose level-triggered EOI must be broadcast to the
    /// IOAPIC(s).
    pub fn take_level_eoi(&mut self) -> Option<u8> {
        self.level_eois.take_lowest()
    }

    /// Whether the 8259A's INTR reaches the processor through this APIC:
    /// LINT0 unmasked in ExtINT mode (virtual wire), or the APIC globally
    /// disabled (INTR then goes straight to the core).
    pub fn accepts_pic_interrupts(&self) -> bool {
        let lint0 = self.lvt[Lvt::Lint0.index()];
        self.mode == ApicMode::Disabled
            || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == DeliveryMode::ExtInt.bits())
    }

    /// An edge on the LINT0 or LINT1 pin (`lint1` selects LINT1): delivers
    /// per the LVT entry when it is unmasked and in fixed or NMI mode.
    /// (ExtINT on LINT0 is polled with [`LocalApic::accepts_pic_interrupts`].)
    pub fn lint_edge(&mut self, lint1: bool) {
        let lvt = if lint1 { Lvt::Lint1 } else { Lvt::Lint0 };
        let entry = self.lvt[lvt.index()];
        if entry & LVT_MASKED != 0 || self.mode == ApicMode::Disabled {
            return;
        }
        match DeliveryMode::from_bits(entry >> 8) {
            Some(DeliveryMode::Fixed) => self.request_vector(entry as u8, TriggerMode::Edge),
            Some(DeliveryMode::Nmi) => self.nmi_pending = true,
            _ => {}
        }
    }

    /// Whether an NMI waits for the processor.
    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// Takes the pending NMI (the processor starts delivering it).
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi_pending)
    }

    /// Takes a pending INIT for this vCPU.
    pub fn take_init(&mut self) -> bool {
        core::mem::take(&mut self.init_pending)
    }

    /// Takes a pending start-up IPI vector for this vCPU.
    pub fn take_startup(&mut self) -> Option<u8> {
        self.startup_vector.take()
    }

    /// The IPIs sent to other APICs (not delivered by this model).
    pub fn remote_ipis(&self) -> Option<RemoteIpi> {
        self.remote
    }

    /// Messages that reached this APIC with a delivery mode it does not
    /// model (SMI, ExtINT).
    pub fn ignored_messages(&self) -> u64 {
        self.ignored_messages
    }

    fn send_ipi(&mut self, icr: u64) {
        let vector = icr as u8;
        let Some(delivery) = DeliveryMode::from_bits((icr >> 8) as u32) else {
            self.ignored_messages = self.ignored_messages.saturating_add(1);
            return;
        };
        let logical = icr & (1 << 11) != 0;
        let level_assert = icr & (1 << 14) != 0;
        let trigger = if icr & (1 << 15) != 0 {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        };
        if delivery == DeliveryMode::Init && trigger == TriggerMode::Level && !level_assert {
            // INIT level de-assert: only resynchronises arbitration IDs.
            return;
        }
        if matches!(delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && vector < 16 {
            self.signal_error(esr::SEND_ILLEGAL_VECTOR);
            return;
        }
        let dest_id = if self.is_x2apic() {
            (icr >> 32) as u32
        } else {
            (icr >> 56) as u32
        };
        let destination = if logical {
            Destination::Logical(dest_id)
        } else {
            Destination::Physical(dest_id)
        };
        let (to_self, to_others) = match (icr >> 18) & 3 {
            0 => (
                self.matches(destination),
                destination != Destination::Physical(self.id),
            ),
            1 => (true, false),
            2 => (true, true),
            _ => (false, true),
        };
        if to_self {
            self.deliver_local(delivery, vector, trigger);
        }
        if to_others {
            let count = self.remote.map_or(0, |r| r.count).saturating_add(1);
            self.remote = Some(RemoteIpi { icr, count });
        }
    }

    // ---------------------------------------------------------------
    // Timer
    // ---------------------------------------------------------------

    /// The timer mode selected in the LVT timer entry (the reserved 11
    /// behaves as one-shot).
    pub fn timer_mode(&self) -> TimerMode {
        match (self.lvt[Lvt::Timer.index()] >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    fn elapsed_timer_ticks(&self, now: u64) -> u64 {
        let elapsed_ns = now.saturating_sub(self.timer.anchor_ns);
        ticks_at(elapsed_ns, self.config.timer_hz) / self.timer.divisor()
    }

    fn count_at(&self, now: u64) -> u64 {
        if !self.timer.running || self.timer_mode() == TimerMode::TscDeadline {
            return 0;
        }
        let e = self.elapsed_timer_ticks(now);
        let rem = self.timer.anchor_remaining;
        if e < rem {
            rem - e
        } else if self.timer_mode() == TimerMode::Periodic && self.timer.initial != 0 {
            let initial = u64::from(self.timer.initial);
            initial - (e - rem) % initial
        } else {
            0
        }
    }

    fn current_count(&self) -> u32 {
        self.count_at(self.clock.now_ns()) as u32
    }

    /// Restarts the count from its present value at the present time, so a
    /// change of divider or mode applies from now on.
    fn rebase_timer(&mut self) {
        if self.timer_mode() == TimerMode::TscDeadline || !self.timer.running {
            return;
        }
        let now = self.clock.now_ns();
        let count = self.count_at(now);
        self.timer.anchor_ns = now;
        self.timer.anchor_remaining = count;
        if count == 0 {
            self.timer.running = false;
            self.timer.next_expiry_ns = None;
        } else {
            self.timer.next_expiry_ns = Some(self.tick_time(count));
        }
    }

    /// The first nanosecond at which `ticks` (divided) ticks have elapsed
    /// since the anchor.
    fn tick_time(&self, ticks: u64) -> u64 {
        let raw = ticks.saturating_mul(self.timer.divisor());
        self.timer
            .anchor_ns
            .saturating_add(first_ns_at_tick(raw, self.config.timer_hz))
    }

    fn write_initial_count(&mut self, value: u32) {
        if self.timer_mode() == TimerMode::TscDeadline {
            return;
        }
        let now = self.clock.now_ns();
        self.timer.initial = value;
        self.timer.anchor_ns = now;
        self.timer.anchor_remaining = u64::from(value);
        self.timer.running = value != 0;
        self.timer.next_expiry_ns = (value != 0).then(|| self.tick_time(u64::from(value)));
    }

    /// Fires the timer if it is due: sets the timer vector in the IRR
    /// (unless masked) once, however many periods passed (they coalesce,
    /// as IRR bits do), and arms the next expiry.
    pub fn poll_timer(&mut self) {
        let now = self.clock.now_ns();
        let Some(due) = self.timer.next_expiry_ns else {
            return;
        };
        if now < due {
            return;
        }
        let entry = self.lvt[Lvt::Timer.index()];
        if entry & LVT_MASKED == 0 {
            self.request_vector(entry as u8, TriggerMode::Edge);
        }
        match self.timer_mode() {
            TimerMode::TscDeadline => {
                self.timer.tsc_deadline = 0;
                self.timer.next_expiry_ns = None;
            }
            TimerMode::OneShot => {
                self.timer.next_expiry_ns = None;
            }
            TimerMode::Periodic => {
                let e = self.elapsed_timer_ticks(now);
                let rem = self.timer.anchor_remaining;
                let initial = u64::from(self.timer.initial).max(1);
                let periods = (e.saturating_sub(rem)) / initial + 1;
                let target = rem.saturating_add(periods.saturating_mul(initial));
                self.timer.next_expiry_ns = Some(self.tick_time(target));
            }
        }
    }

    /// When the timer next fires an interrupt, if it is armed and unmasked:
    /// the run loop's wake-up / preemption-timer deadline.
    pub fn next_timer_deadline_ns(&self) -> Option<u64> {
        if self.lvt[Lvt::Timer.index()] & LVT_MASKED != 0 {
            return None;
        }
        self.timer.next_expiry_ns
    }

    // ---------------------------------------------------------------
    // Values for APIC virtualization (VMCS fields)
    // ---------------------------------------------------------------

    /// The TPR threshold for the TPR shadow (VMCS 0x401C): the class of the
    /// highest requested vector when the TPR masks it, so that a MOV to CR8
    /// lowering the TPR below it exits; 0 when nothing is masked by the TPR.
    pub fn tpr_threshold(&self) -> u8 {
        match self.irr.highest() {
            Some(v) if self.tpr as u8 >> 4 >= v >> 4 => v >> 4,
            _ => 0,
        }
    }

    /// The guest interrupt status for virtual-interrupt delivery (VMCS
    /// 0x0810): RVI (highest IRR vector) in bits 7:0, SVI (highest ISR
    /// vector) in bits 15:8.
    pub fn guest_interrupt_status(&self) -> u16 {
        let rvi = self.irr.highest().unwrap_or(0);
        let svi = self.isr.highest().unwrap_or(0);
        u16::from(rvi) | (u16::from(svi) << 8)
    }

    /// The EOI-exit bitmap for virtual-interrupt delivery (VMCS 0x201C-
    /// 0x2022): the level-triggered vectors (TMR), whose EOI must reach
    /// [`LocalApic::eoi`] so the IOAPIC learns of it.
    pub fn eoi_exit_bitmap(&self) -> [u64; 4] {
        let mut bitmap = [0u64; 4];
        for (i, slot) in bitmap.iter_mut().enumerate() {
            *slot = u64::from(self.tmr.word(2 * i)) | (u64::from(self.tmr.word(2 * i + 1)) << 32);
        }
        bitmap
    }

    /// The guest's TSC now, as the LAPIC sees it (see [`LapicConfig::tsc_hz`]).
    pub fn guest_tsc(&self) -> u64 {
        ticks_at(self.clock.now_ns(), self.config.tsc_hz)
    }
}

/// The x2APIC logical ID derived from the x2APIC ID (SDM "Logical
/// Destination Mode in x2APIC Mode"): cluster `id >> 4` in bits 31:16 and
/// bit `id & 0xF` in bits 15:0.
pub const fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xF))
}

impl<C: Clock, const X2APIC: bool> Mmio for LocalApic<C, X2APIC> {
    /// Reads in the xAPIC page. Registers are 32 bits wide at 16-byte
    /// aligned offsets; narrower reads return bytes of that register,
    /// bytes 4-15 of each slot read as zero. Outside xAPIC mode the page
    /// is absent and reads all ones. A reserved offset sets "illegal
    /// register address" in the ESR.
    fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        if self.mode != ApicMode::XApic || offset >= 0x1000 {
            return width.mask();
        }
        let slot = (offset & 0xFF0) as u32;
        let byte = (offset & 0xF) as u32;
        let Some(value) = self.read_register(slot).filter(|_| slot != reg::SELF_IPI) else {
            self.signal_error(esr::ILLEGAL_REGISTER);
            return 0;
        };
        let shifted = if byte < 4 {
            u64::from(value) >> (8 * byte)
        } else {
            0
        };
        shifted & width.mask()
    }

    /// Writes in the xAPIC page. Only 32-bit writes at 16-byte aligned
    /// offsets reach a register (the SDM requires them); others are
    /// dropped, as are all writes outside xAPIC mode.
    fn mmio_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
        if self.mode != ApicMode::XApic
            || offset >= 0x1000
            || offset & 0xF != 0
            || width != AccessWidth::Dword
        {
            return;
        }
        if self.write_register(offset as u32, value as u32) == RegisterWrite::Absent {
            self.signal_error(esr::ILLEGAL_REGISTER);
        }
    }
}

#[cfg(test)]
mod tests;
