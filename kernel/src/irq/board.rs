//! The PC interrupt system of one vCPU, assembled: the lines, the routing
//! table, the 8259A pair, the IOAPIC, the local APIC and the board's timers,
//! answering the run loop's [`Interrupts`] questions and the guest's
//! accesses to those chips.
//!
//! [`PcInterrupts`] owns the chips and a generic list of [`PolledTimer`]s
//! (PIT, RTC, HPET...: anything that raises lines at deadlines). Before
//! every VM entry it polls the timers, samples the lines into the
//! controllers ([`IrqRouter::sync`]) and decides the injection with the
//! earliest deadline of the LAPIC timer and the board's timers. The board
//! forwards to it the guest's accesses to the 8259A ports
//! ([`PcInterrupts::io_read`]), to the IOAPIC and xAPIC pages
//! ([`PcInterrupts::mmio_read`], with [`InterruptMmio`] as the layout's
//! device id) and to the LAPIC MSRs ([`PcInterrupts::msr_read`]). What it
//! does not own: the devices driving the lines, and the timers' own ports.

use super::inject::{decide, Decision, GuestEventState};
use super::ioapic::{IoApic, IoApicVersion};
use super::lapic::{
    LapicConfig, LocalApic, MSR_APIC_BASE, MSR_TSC_DEADLINE, MSR_X2APIC_FIRST, MSR_X2APIC_LAST,
};
use super::lines::LineSet;
use super::msi::MsiError;
use super::pic::{DualPic, ELCR_MASTER, MASTER_COMMAND, SLAVE_COMMAND};
use super::router::{Chips, IrqRouter};
use crate::device::{AccessWidth, Mmio, PortIo};
use crate::msr::GeneralProtection;
use crate::time::Clock;
use crate::vcpu::{apicv::ApicModel, Interrupts};

/// A timer that raises its interrupt lines when polled past a deadline.
pub trait PolledTimer {
    /// Brings the timer up to the present: raises or pulses its lines for
    /// every deadline that passed.
    fn poll(&mut self);
    /// When the timer next changes a line, in nanoseconds on the board's
    /// clock; `None` when it is idle.
    fn next_event_ns(&self) -> Option<u64>;
}

/// No timers.
impl PolledTimer for () {
    fn poll(&mut self) {}
    fn next_event_ns(&self) -> Option<u64> {
        None
    }
}

impl<T: PolledTimer + ?Sized> PolledTimer for &mut T {
    fn poll(&mut self) {
        (**self).poll();
    }
    fn next_event_ns(&self) -> Option<u64> {
        (**self).next_event_ns()
    }
}

impl<T: PolledTimer, const N: usize> PolledTimer for [T; N] {
    fn poll(&mut self) {
        self.iter_mut().for_each(PolledTimer::poll);
    }
    fn next_event_ns(&self) -> Option<u64> {
        self.iter().filter_map(PolledTimer::next_event_ns).min()
    }
}

impl<A: PolledTimer, B: PolledTimer> PolledTimer for (A, B) {
    fn poll(&mut self) {
        self.0.poll();
        self.1.poll();
    }
    fn next_event_ns(&self) -> Option<u64> {
        earliest(self.0.next_event_ns(), self.1.next_event_ns())
    }
}

impl<A: PolledTimer, B: PolledTimer, D: PolledTimer> PolledTimer for (A, B, D) {
    fn poll(&mut self) {
        self.0.poll();
        self.1.poll();
        self.2.poll();
    }
    fn next_event_ns(&self) -> Option<u64> {
        earliest(
            earliest(self.0.next_event_ns(), self.1.next_event_ns()),
            self.2.next_event_ns(),
        )
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The MMIO pages of the interrupt controllers, as device ids in the
/// board's [`crate::memory::GuestLayout`] (usually inside the board's own
/// device-id enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptMmio {
    /// The IOAPIC's registers (usually at
    /// [`super::ioapic::DEFAULT_IOAPIC_BASE`], 4 KiB).
    IoApic,
    /// The xAPIC page (usually at [`super::lapic::DEFAULT_APIC_BASE`],
    /// 4 KiB).
    LocalApic,
}

/// The 8259A pair's port ranges as `(first port, count)`: command and data
/// of each chip, and the two edge/level control registers.
pub const PIC_PORT_RANGES: [(u16, u16); 3] =
    [(MASTER_COMMAND, 2), (SLAVE_COMMAND, 2), (ELCR_MASTER, 2)];

/// The interrupt system of a one-vCPU PC board. See the module
/// documentation.
pub struct PcInterrupts<'l, C: Clock + Clone, T: PolledTimer, const GSIS: usize> {
    lines: &'l LineSet<GSIS>,
    clock: C,
    lapic_page: u64,
    /// The routing table (GSI to 8259A input and IOAPIC pin).
    pub router: IrqRouter<GSIS>,
    /// The 8259A pair.
    pub pic: DualPic,
    /// The IOAPIC.
    pub ioapic: IoApic,
    /// The vCPU's local APIC.
    pub lapic: LocalApic<C>,
    /// The board's timers, polled before every entry. Their ports are the
    /// board's to route.
    pub timers: T,
}

impl<'l, C: Clock + Clone, T: PolledTimer, const GSIS: usize> PcInterrupts<'l, C, T, GSIS> {
    /// A PC after reset sampling `lines`, with the PC's default routing
    /// ([`IrqRouter::pc_default`]), both 8259As, an 82093AA IOAPIC with ID
    /// `ioapic_id`, a LAPIC built from `lapic` whose xAPIC page the board's
    /// layout places at `lapic_page`, and `timers`; every timer reads
    /// `clock`.
    pub fn new(
        lines: &'l LineSet<GSIS>,
        clock: C,
        ioapic_id: u8,
        lapic: LapicConfig,
        lapic_page: u64,
        timers: T,
    ) -> Self {
        Self {
            lines,
            lapic: LocalApic::new(lapic, clock.clone()),
            clock,
            lapic_page,
            router: IrqRouter::pc_default(),
            pic: DualPic::new(),
            ioapic: IoApic::new(ioapic_id, IoApicVersion::V11),
            timers,
        }
    }

    /// The controllers, borrowed for one routing or decision step.
    pub fn chips(&mut self) -> Chips<'_, C> {
        Chips {
            pic: Some(&mut self.pic),
            ioapic: Some(&mut self.ioapic),
            lapic: Some(&mut self.lapic),
        }
    }

    /// Polls the timers and samples the lines into the controllers (what
    /// [`Interrupts::decide`] does before deciding).
    pub fn sync(&mut self) {
        self.timers.poll();
        let Self {
            lines,
            router,
            pic,
            ioapic,
            lapic,
            ..
        } = self;
        let mut chips = Chips {
            pic: Some(pic),
            ioapic: Some(ioapic),
            lapic: Some(lapic),
        };
        router.sync(lines, &mut chips);
    }

    /// A guest IN from one of the [`PIC_PORT_RANGES`]; `None` for any
    /// other port.
    pub fn io_read(&mut self, port: u16, width: AccessWidth) -> Option<u32> {
        is_pic_port(port).then(|| self.pic.io_read(port, width))
    }

    /// A guest OUT to one of the [`PIC_PORT_RANGES`]; false (nothing done)
    /// for any other port.
    pub fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) -> bool {
        let claimed = is_pic_port(port);
        if claimed {
            self.pic.io_write(port, width, value);
        }
        claimed
    }

    /// A guest read at `offset` of a controller's page. The xAPIC page
    /// reads all ones while the LAPIC is not in xAPIC mode at the page the
    /// layout gave it (the guest moved it, disabled it or chose x2APIC), as
    /// an address nothing decodes does.
    pub fn mmio_read(&mut self, device: InterruptMmio, offset: u64, width: AccessWidth) -> u64 {
        match device {
            InterruptMmio::IoApic => self.ioapic.mmio_read(offset, width),
            InterruptMmio::LocalApic if self.lapic.mmio_base() == Some(self.lapic_page) => {
                self.lapic.mmio_read(offset, width)
            }
            InterruptMmio::LocalApic => width.mask(),
        }
    }

    /// A guest write at `offset` of a controller's page (dropped on the
    /// xAPIC page while the LAPIC is not there in xAPIC mode).
    pub fn mmio_write(
        &mut self,
        device: InterruptMmio,
        offset: u64,
        width: AccessWidth,
        value: u64,
    ) {
        match device {
            InterruptMmio::IoApic => self.ioapic.mmio_write(offset, width, value),
            InterruptMmio::LocalApic if self.lapic.mmio_base() == Some(self.lapic_page) => {
                self.lapic.mmio_write(offset, width, value)
            }
            InterruptMmio::LocalApic => {}
        }
    }

    /// RDMSR of a LAPIC MSR (`IA32_APIC_BASE`, `IA32_TSC_DEADLINE`, the
    /// x2APIC range); `None` for any other MSR. A refused access is #GP.
    pub fn msr_read(&mut self, msr: u32) -> Option<Result<u64, GeneralProtection>> {
        is_lapic_msr(msr).then(|| {
            self.lapic
                .read_msr(msr)
                .map_err(|_| GeneralProtection { msr, written: None })
        })
    }

    /// WRMSR of a LAPIC MSR; `None` for any other MSR. A refused access
    /// (reserved bits, a forbidden mode transition, x2APIC registers
    /// outside x2APIC mode...) is #GP.
    pub fn msr_write(&mut self, msr: u32, value: u64) -> Option<Result<(), GeneralProtection>> {
        is_lapic_msr(msr).then(|| {
            self.lapic
                .write_msr(msr, value)
                .map_err(|_| GeneralProtection {
                    msr,
                    written: Some(value),
                })
        })
    }

    /// Delivers an MSI a device wrote (`address`/`data`) to the LAPIC.
    pub fn deliver_msi(&mut self, address: u64, data: u32) -> Result<(), MsiError> {
        let Self {
            router,
            pic,
            ioapic,
            lapic,
            ..
        } = self;
        let mut chips = Chips {
            pic: Some(pic),
            ioapic: Some(ioapic),
            lapic: Some(lapic),
        };
        router.deliver_msi(address, data, &mut chips)
    }
}

fn is_pic_port(port: u16) -> bool {
    PIC_PORT_RANGES
        .iter()
        .any(|&(first, count)| port >= first && port - first < count)
}

fn is_lapic_msr(msr: u32) -> bool {
    matches!(
        msr,
        MSR_APIC_BASE | MSR_TSC_DEADLINE | MSR_X2APIC_FIRST..=MSR_X2APIC_LAST
    )
}

impl<C: Clock + Clone, T: PolledTimer, const GSIS: usize> Interrupts
    for PcInterrupts<'_, C, T, GSIS>
{
    fn decide(&mut self, guest: &GuestEventState) -> Decision {
        self.sync();
        let next = self.next_deadline_ns();
        decide(guest, &mut self.chips(), next)
    }

    fn next_deadline_ns(&self) -> Option<u64> {
        earliest(
            self.lapic.next_timer_deadline_ns(),
            self.timers.next_event_ns(),
        )
    }

    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn local_apic(&mut self) -> Option<&mut dyn ApicModel> {
        Some(&mut self.lapic)
    }
}

#[cfg(test)]
mod tests;
