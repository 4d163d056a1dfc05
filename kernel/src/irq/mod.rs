//! Interrupt lines and the virtual interrupt controllers they reach.
//!
//! A device owns one or more [`InterruptLine`]s and raises, lowers or pulses
//! them; it never injects an event into a vCPU. What a line is connected to
//! (a PIC pin, an IOAPIC pin, both, or a test recorder) is the integrator's
//! choice, made when the device is built. Devices are generic over the line
//! type, so a device model costs no dynamic dispatch and is tested with a
//! recording line.
//!
//! The pieces, from a device's pin to the event the vCPU takes:
//!
//! - [`lines`]: a lock-free set of lines ([`LineSet`]) whose handles
//!   ([`Line`]) devices hold; it remembers every edge until it is sampled.
//! - [`router`]: the routing table (GSI to PIC and/or IOAPIC pin) and the
//!   step that samples the lines at each exit and drives the controllers,
//!   plus MSI delivery and the level-triggered EOI path.
//! - [`msi`]: the interrupt message format shared by MSIs, IOAPIC
//!   redirection entries and IPIs.
//! - [`pic`]: the 8259A pair; [`ioapic`]: the 82093AA IOAPIC;
//!   [`lapic`]: the local APIC (xAPIC and x2APIC) with its timer.
//! - [`inject`]: the pure decision of what the next VM entry injects, which
//!   window exits it requests, or how long a halted vCPU sleeps.
//! - [`vectors`]: the 256-bit vector sets (IRR, ISR, TMR).

pub mod inject;
pub mod ioapic;
pub mod lapic;
pub mod lines;
pub mod msi;
pub mod pic;
pub mod router;
pub mod vectors;

pub use lines::{Line, LineSample, LineSet};

/// One interrupt request line as a device sees it.
///
/// Methods take `&self`: a line is a handle onto state shared with the
/// interrupt router, and a device may hold several.
pub trait InterruptLine {
    /// Drives the line to `asserted` (level semantics).
    fn set_level(&self, asserted: bool);

    /// Asserts the line and keeps it asserted.
    fn raise(&self) {
        self.set_level(true);
    }

    /// Deasserts the line.
    fn lower(&self) {
        self.set_level(false);
    }

    /// Signals one edge: the line goes up and down again. Implementations
    /// must not lose a pulse that nobody observed while it was high.
    fn pulse(&self);
}
