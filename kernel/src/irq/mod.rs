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
//! - [`board`]: all of the above assembled for a one-vCPU PC board, with
//!   its timers, as the run loop's interrupt system.

//!
//! # Wiring
//!
//! ```
//! use ponte_kernel::device::{AccessWidth, PortIo};
//! use ponte_kernel::irq::inject::{decide, ActivityState, Decision, GuestEventState};
//! use ponte_kernel::irq::ioapic::{IoApic, IoApicVersion};
//! use ponte_kernel::irq::lapic::{LapicConfig, LocalApic};
//! use ponte_kernel::irq::pic::DualPic;
//! use ponte_kernel::irq::router::{Chips, IrqRouter};
//! use ponte_kernel::irq::{InterruptLine, LineSet};
//! use ponte_kernel::time::ManualClock;
//!
//! // The board: 24 lines, PC routing, both controllers, one LAPIC.
//! static LINES: LineSet<24> = LineSet::new();
//! let clock = ManualClock::new(0);
//! let mut router = IrqRouter::<24>::pc_default();
//! let (mut pic, mut ioapic) = (DualPic::new(), IoApic::new(0, IoApicVersion::V11));
//! let mut lapic = LocalApic::new(LapicConfig::new(0, 2_000_000_000), &clock);
//!
//! // A device gets a handle on its line (here COM1 on GSI 4).
//! let com1_irq = LINES.line(4).unwrap();
//!
//! // The guest initialises the master PIC (vectors 0x20-0x27), runs with IF=1.
//! for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
//!     pic.io_write(port, AccessWidth::Byte, value);
//! }
//! lapic.set_apic_base(0xFEE0_0000).unwrap(); // no LAPIC in use: INTR direct
//! com1_irq.pulse();
//!
//! // At every exit: sync, decide, apply.
//! let mut chips = Chips { pic: Some(&mut pic), ioapic: Some(&mut ioapic), lapic: Some(&mut lapic) };
//! router.sync(&LINES, &mut chips);
//! let guest = GuestEventState {
//!     interrupts_enabled: true,
//!     interruptibility: 0,
//!     activity: ActivityState::Active,
//!     idt_vectoring: None,
//! };
//! let next_timer = chips.next_timer_deadline_ns();
//! match decide(&guest, &mut chips, next_timer) {
//!     Decision::Enter(entry) => {
//!         // VMWRITE entry.inject.map(|e| e.interruption_info()) to the
//!         // VM-entry interruption-information field, set the window
//!         // exiting controls from entry.interrupt_window / nmi_window.
//!         assert_eq!(entry.inject.unwrap().interruption_info(), 0x8000_0024);
//!     }
//!     Decision::Sleep { .. } => unreachable!("IF=1 and IRQ 4 pending"),
//! }
//! ```

pub mod board;
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
