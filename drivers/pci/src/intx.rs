//! Legacy INTx# interrupts and how the integrator describes their routing.
//!
//! Every function that uses INTx# names one pin in its interrupt pin
//! register and drives an [`ponte_kernel::irq::InterruptLine`] of the
//! integrator's choice; the bus itself routes nothing. PCI INTx# is
//! level-triggered and active low on the wire: the device model holds its
//! line asserted while its interrupt is pending (status bit 3) and not masked
//! by the command register's interrupt-disable bit.
//!
//! The guest learns which GSI a pin reaches from one of:
//!
//! - ACPI `_PRT` of the host bridge: one package per device and pin,
//!   `Package { (device << 16) | 0xFFFF, pin - 1, 0, gsi }` (pin 0 is INTA#).
//!   A GSI named this way is level-triggered, active low.
//! - An MP table I/O interrupt entry per device and pin: interrupt type INT,
//!   source bus the PCI bus, source IRQ `(device << 2) | (pin - 1)`,
//!   destination the IOAPIC and the GSI as its pin, trigger level, polarity
//!   low.
//! - Without either (PIC-only guests), Linux uses the interrupt line register
//!   (0x3C) that firmware filled in: the integrator sets it with
//!   [`crate::ConfigHeader::set_interrupt_line`] to the ISA IRQ the line
//!   reaches.
//!
//! Boards that share four lines among all slots use the conventional swizzle
//! of [`pirq_index`]: device `d`, pin `p` reaches PIRQ `(d + p - 1) mod 4`.
//! A board that gives each function its own GSI needs no swizzle; it lists
//! that GSI for the function's device and pin.

/// One of the four INTx# pins of a PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InterruptPin {
    /// INTA#.
    IntA,
    /// INTB#.
    IntB,
    /// INTC#.
    IntC,
    /// INTD#.
    IntD,
}

impl InterruptPin {
    /// The value of the interrupt pin register (1..=4).
    pub const fn register_value(self) -> u8 {
        match self {
            Self::IntA => 1,
            Self::IntB => 2,
            Self::IntC => 3,
            Self::IntD => 4,
        }
    }

    /// The pin an interrupt pin register value names (`None` for 0, "no
    /// pin", and for the reserved values 5..=255).
    pub const fn from_register(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::IntA),
            2 => Some(Self::IntB),
            3 => Some(Self::IntC),
            4 => Some(Self::IntD),
            _ => None,
        }
    }

    /// The pin number `_PRT` and the MP table use (0 for INTA#).
    pub const fn index(self) -> u8 {
        self.register_value() - 1
    }
}

/// The PIRQ (0..=3, PIRQA..PIRQD) that pin `pin` of device `device` reaches on
/// a board that swizzles four shared lines: `(device + pin index) mod 4`.
pub const fn pirq_index(device: u8, pin: InterruptPin) -> u8 {
    (device % 4 + pin.index()) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_values_follow_the_specification() {
        assert_eq!(InterruptPin::from_register(0), None);
        assert_eq!(InterruptPin::from_register(1), Some(InterruptPin::IntA));
        assert_eq!(InterruptPin::from_register(4), Some(InterruptPin::IntD));
        assert_eq!(InterruptPin::from_register(5), None);
        assert_eq!(InterruptPin::IntC.register_value(), 3);
        assert_eq!(InterruptPin::IntA.index(), 0);
    }

    #[test]
    fn swizzle_rotates_pins_by_device_number() {
        // Device 0 INTA# -> PIRQA; device 1 INTA# -> PIRQB; device 3 INTB# -> PIRQA.
        assert_eq!(pirq_index(0, InterruptPin::IntA), 0);
        assert_eq!(pirq_index(1, InterruptPin::IntA), 1);
        assert_eq!(pirq_index(3, InterruptPin::IntB), 0);
        assert_eq!(pirq_index(31, InterruptPin::IntD), 2);
    }
}
