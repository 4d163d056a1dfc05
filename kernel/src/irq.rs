//! Interrupt lines: how a device model signals an interrupt.
//!
//! A device owns one or more [`InterruptLine`]s and raises, lowers or pulses
//! them; it never injects an event into a vCPU. What a line is connected to
//! (a PIC pin, an IOAPIC pin, both, or a test recorder) is the integrator's
//! choice, made when the device is built. Devices are generic over the line
//! type, so a device model costs no dynamic dispatch and is tested with a
//! recording line.

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
