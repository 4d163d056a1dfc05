//! Interrupt routing: from the lines devices drive to the interrupt
//! controllers, and from the controllers to the vCPU.
//!
//! [`IrqRouter`] holds the routing table the integrator configures (and may
//! change at run time, like an IRQ routing table): each GSI goes to an 8259A
//! input, an IOAPIC pin, both, or nowhere, with the electrical polarity of
//! its wiring. [`IrqRouter::sync`] runs at every VM exit (and before every
//! entry): it samples every line (see [`super::lines`]), drives the PIC and
//! IOAPIC inputs (a rise since the last sample becomes a low-high edge, so
//! no pulse is lost), forwards level-triggered EOIs from the LAPIC to the
//! IOAPIC, fires a due LAPIC timer, and hands the IOAPIC's messages to the
//! LAPIC. MSIs go straight to the LAPIC ([`IrqRouter::deliver_msi`]).
//!
//! [`Chips`] borrows whichever controllers the appliance has; it is also the
//! [`InterruptSource`] the injection decision ([`super::inject`]) asks.

use core::fmt;

use super::inject::InterruptSource;
use super::ioapic::{IoApic, IOAPIC_PINS};
use super::lapic::LocalApic;
use super::lines::LineSet;
use super::msi::{decode_msi, InterruptMessage, MsiError};
use super::pic::{DualPic, CASCADE_IRQ};
use super::vectors::set_bits;
use crate::time::Clock;

/// Where one GSI goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GsiRoute {
    /// The 8259A input (0-15, not the cascade input 2).
    pub pic_irq: Option<u8>,
    /// The IOAPIC pin (0-23).
    pub ioapic_pin: Option<u8>,
    /// The line is wired active-low to the IOAPIC (PCI INTx): the pin sees
    /// the electrical level low while the line is asserted. The PIC always
    /// sees the request active-high, as the ISA bus delivers it.
    pub active_low: bool,
}

impl GsiRoute {
    /// Connected to nothing.
    pub const NONE: Self = Self {
        pic_irq: None,
        ioapic_pin: None,
        active_low: false,
    };

    /// To 8259A input `irq` only.
    pub const fn pic(irq: u8) -> Self {
        Self {
            pic_irq: Some(irq),
            ..Self::NONE
        }
    }

    /// To IOAPIC pin `pin` only, active-high.
    pub const fn ioapic(pin: u8) -> Self {
        Self {
            ioapic_pin: Some(pin),
            ..Self::NONE
        }
    }

    /// To 8259A input `irq` and IOAPIC pin `pin`, active-high (ISA).
    pub const fn both(irq: u8, pin: u8) -> Self {
        Self {
            pic_irq: Some(irq),
            ioapic_pin: Some(pin),
            active_low: false,
        }
    }

    /// The same route, wired active-low to the IOAPIC.
    pub const fn active_low(self) -> Self {
        Self {
            active_low: true,
            ..self
        }
    }
}

/// Why a route was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The GSI is beyond the table.
    NoSuchGsi {
        /// The GSI.
        gsi: usize,
        /// Table size.
        capacity: usize,
    },
    /// The 8259A input does not exist or is the cascade input 2.
    BadPicIrq {
        /// The input.
        irq: u8,
    },
    /// The IOAPIC pin does not exist.
    BadIoApicPin {
        /// The pin.
        pin: u8,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchGsi { gsi, capacity } => {
                write!(f, "GSI {gsi} is beyond the {capacity}-entry routing table")
            }
            Self::BadPicIrq { irq } => {
                write!(
                    f,
                    "8259A input {irq} does not exist or is the cascade input"
                )
            }
            Self::BadIoApicPin { pin } => write!(f, "IOAPIC pin {pin} does not exist"),
        }
    }
}

/// The interrupt controllers of one vCPU's platform, borrowed for a step.
/// An appliance without a PIC, IOAPIC or LAPIC leaves that field `None`;
/// `X2APIC` is the LAPIC's (see [`LocalApic`]).
pub struct Chips<'a, C: Clock, const X2APIC: bool = true> {
    /// The 8259A pair.
    pub pic: Option<&'a mut DualPic>,
    /// The IOAPIC.
    pub ioapic: Option<&'a mut IoApic>,
    /// The vCPU's local APIC.
    pub lapic: Option<&'a mut LocalApic<C, X2APIC>>,
}

impl<C: Clock, const X2APIC: bool> Chips<'_, C, X2APIC> {
    /// The LAPIC timer's next deadline, if it is armed.
    pub fn next_timer_deadline_ns(&self) -> Option<u64> {
        self.lapic.as_ref().and_then(|l| l.next_timer_deadline_ns())
    }

    fn pic_reaches_cpu(&self) -> bool {
        let Some(pic) = self.pic.as_ref() else {
            return false;
        };
        pic.interrupt_output()
            && self
                .lapic
                .as_ref()
                .is_none_or(|l| l.accepts_pic_interrupts())
    }
}

impl<C: Clock, const X2APIC: bool> InterruptSource for Chips<'_, C, X2APIC> {
    fn nmi_pending(&self) -> bool {
        self.lapic.as_ref().is_some_and(|l| l.nmi_pending())
    }

    fn take_nmi(&mut self) {
        if let Some(l) = self.lapic.as_mut() {
            l.take_nmi();
        }
    }

    /// The 8259A (ExtINT through LINT0, or alone) comes before the LAPIC's
    /// fixed vectors, which are subject to the PPR.
    fn interrupt_pending(&self) -> bool {
        self.pic_reaches_cpu()
            || self
                .lapic
                .as_ref()
                .is_some_and(|l| l.pending_vector().is_some())
    }

    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        if self.pic_reaches_cpu() {
            return self.pic.as_mut().map(|p| p.acknowledge());
        }
        self.lapic.as_mut().and_then(|l| l.acknowledge())
    }
}

/// The routing table for `GSIS` lines and the per-exit synchronisation.
#[derive(Clone, Debug)]
pub struct IrqRouter<const GSIS: usize> {
    routes: [GsiRoute; GSIS],
    undelivered: u64,
    /// The levels last driven into the 8259A inputs and (electrically, after
    /// polarity) into the IOAPIC pins, when known: [`IrqRouter::sync`] then
    /// drives only the inputs that changed or saw an edge.
    driven_pic: Option<u16>,
    driven_ioapic: Option<u32>,
}

impl<const GSIS: usize> Default for IrqRouter<GSIS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const GSIS: usize> IrqRouter<GSIS> {
    /// A table routing nothing.
    pub const fn new() -> Self {
        Self {
            routes: [GsiRoute::NONE; GSIS],
            undelivered: 0,
            driven_pic: None,
            driven_ioapic: None,
        }
    }

    /// The PC layout: GSI n to 8259A input n and IOAPIC pin n for the ISA
    /// IRQs 0-15, except that GSI 0 (the PIT) goes to IOAPIC pin 2 (the
    /// usual interrupt source override) and GSI 2 to nothing; GSIs 16-23
    /// to IOAPIC pins 16-23, active-low (PCI).
    pub fn pc_default() -> Self {
        let mut r = Self::new();
        for gsi in 0..GSIS.min(IOAPIC_PINS) {
            let route = match gsi {
                0 => GsiRoute::both(0, 2),
                2 => GsiRoute::NONE,
                1..=15 => GsiRoute::both(gsi as u8, gsi as u8),
                _ => GsiRoute::ioapic(gsi as u8).active_low(),
            };
            r.routes[gsi] = route;
        }
        r
    }

    /// Sets the route of `gsi`; takes effect at the next [`Self::sync`]
    /// (the old target sees the line fall, the new one sees it rise if it
    /// is asserted).
    pub fn set_route(&mut self, gsi: usize, route: GsiRoute) -> Result<(), RouteError> {
        if let Some(irq) = route.pic_irq {
            if irq > 15 || irq == CASCADE_IRQ {
                return Err(RouteError::BadPicIrq { irq });
            }
        }
        if let Some(pin) = route.ioapic_pin {
            if usize::from(pin) >= IOAPIC_PINS {
                return Err(RouteError::BadIoApicPin { pin });
            }
        }
        // Polarity or targets may change: drive every input at the next sync.
        self.driven_pic = None;
        self.driven_ioapic = None;
        let slot = self.routes.get_mut(gsi).ok_or(RouteError::NoSuchGsi {
            gsi,
            capacity: GSIS,
        })?;
        *slot = route;
        Ok(())
    }

    /// The route of `gsi`.
    pub fn route(&self, gsi: usize) -> Option<GsiRoute> {
        self.routes.get(gsi).copied()
    }

    /// Messages (IOAPIC or MSI) that no LAPIC accepted.
    pub fn undelivered(&self) -> u64 {
        self.undelivered
    }

    /// The per-exit step; see the module documentation. Inputs whose level
    /// is unchanged since the last step and saw no edge are not touched,
    /// and when no line changed at all ([`LineSet::take_touched`]) no line
    /// is sampled: `lines` is this router's alone.
    pub fn sync<const N: usize, C: Clock, const X2APIC: bool>(
        &mut self,
        lines: &LineSet<N>,
        chips: &mut Chips<'_, C, X2APIC>,
    ) {
        // The inputs last driven are still right when no line changed and
        // the same chips are there: nothing to sample or drive.
        let cache_valid = self.driven_pic.is_some() == chips.pic.is_some()
            && self.driven_ioapic.is_some() == chips.ioapic.is_some();
        if lines.take_touched() || !cache_valid {
            self.drive_inputs(lines, chips);
        }
        if let Some(lapic) = chips.lapic.as_mut() {
            while let Some(vector) = lapic.take_level_eoi() {
                if let Some(io) = chips.ioapic.as_mut() {
                    io.end_of_interrupt(vector);
                }
            }
            lapic.poll_timer();
        }
        if let Some(io) = chips.ioapic.as_mut() {
            let lapic = &mut chips.lapic;
            let undelivered = &mut self.undelivered;
            io.service(|message| deliver(lapic, undelivered, &message));
        }
    }

    /// Samples every routed line and drives the 8259A and IOAPIC inputs
    /// that changed level or saw an edge since they were last driven.
    fn drive_inputs<const N: usize, C: Clock, const X2APIC: bool>(
        &mut self,
        lines: &LineSet<N>,
        chips: &mut Chips<'_, C, X2APIC>,
    ) {
        let mut pic_level = 0u16;
        let mut pic_rose = 0u16;
        let mut io_level = 0u32;
        let mut io_rose = 0u32;
        let mut io_active_low = 0u32;
        for (gsi, route) in self.routes.iter().enumerate().take(N) {
            let sample = lines.sample(gsi);
            if let Some(irq) = route.pic_irq {
                pic_level |= u16::from(sample.asserted) << irq;
                pic_rose |= u16::from(sample.rose) << irq;
            }
            if let Some(pin) = route.ioapic_pin {
                io_level |= u32::from(sample.asserted) << pin;
                io_rose |= u32::from(sample.rose) << pin;
                io_active_low |= u32::from(route.active_low) << pin;
            }
        }
        match chips.pic.as_mut() {
            Some(pic) => {
                let changed = self
                    .driven_pic
                    .map_or(u16::MAX, |driven| (driven ^ pic_level) | pic_rose);
                for irq in set_bits(u32::from(changed & !(1 << CASCADE_IRQ))) {
                    if pic_rose & (1 << irq) != 0 {
                        pic.set_irq(irq, false);
                        pic.set_irq(irq, true);
                    }
                    pic.set_irq(irq, pic_level & (1 << irq) != 0);
                }
                self.driven_pic = Some(pic_level);
            }
            None => self.driven_pic = None,
        }
        match chips.ioapic.as_mut() {
            Some(io) => {
                let electrical = io_level ^ io_active_low;
                let changed = self
                    .driven_ioapic
                    .map_or(u32::MAX, |driven| (driven ^ electrical) | io_rose);
                for pin in set_bits(changed & IOAPIC_PIN_MASK) {
                    let low = io_active_low & (1 << pin) != 0;
                    if io_rose & (1 << pin) != 0 {
                        io.set_input(usize::from(pin), low);
                        io.set_input(usize::from(pin), !low);
                    }
                    io.set_input(usize::from(pin), electrical & (1 << pin) != 0);
                }
                self.driven_ioapic = Some(electrical);
            }
            None => self.driven_ioapic = None,
        }
    }

    /// Delivers an MSI (`address`/`data` as the device wrote them) to the
    /// LAPIC. A deassert message is accepted and does nothing.
    pub fn deliver_msi<C: Clock, const X2APIC: bool>(
        &mut self,
        address: u64,
        data: u32,
        chips: &mut Chips<'_, C, X2APIC>,
    ) -> Result<(), MsiError> {
        if let Some(message) = decode_msi(address, data)? {
            deliver(&mut chips.lapic, &mut self.undelivered, &message);
        }
        Ok(())
    }
}

fn deliver<C: Clock, const X2APIC: bool>(
    lapic: &mut Option<&mut LocalApic<C, X2APIC>>,
    undelivered: &mut u64,
    message: &InterruptMessage,
) {
    let accepted = lapic.as_mut().is_some_and(|l| l.accept_message(message));
    if !accepted {
        *undelivered = undelivered.saturating_add(1);
    }
}

/// Mask of the IOAPIC's pins.
const IOAPIC_PIN_MASK: u32 = if IOAPIC_PINS >= 32 {
    u32::MAX
} else {
    (1 << IOAPIC_PINS) - 1
};

#[cfg(test)]
mod tests;
