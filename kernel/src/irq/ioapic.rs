//! The virtual I/O APIC (Intel 82093AA data sheet; the version 0x20 EOI
//! register as later chipsets added it).
//!
//! [`IoApic`] owns 24 redirection entries, the ID/version/arbitration
//! registers and the IOREGSEL/IOWIN window (offsets 0x00 and 0x10 of its MMIO
//! page, plus the EOI register at 0x40 in version 0x20). Pin inputs are set
//! by the router ([`IoApic::set_input`], electrical level); deliverable
//! interrupts leave as [`InterruptMessage`]s when the router calls
//! [`IoApic::service`]:
//!
//! - edge-triggered pins deliver once per active edge while unmasked (an edge
//!   on a masked pin is lost, as the data sheet says);
//! - level-triggered pins deliver while active, unmasked and with remote IRR
//!   clear, then set remote IRR; an EOI for the vector (LAPIC broadcast or
//!   the EOI register) clears remote IRR, so a pin still active delivers
//!   again.
//!
//! Messages are accepted at once, so the delivery status bit always reads 0
//! (idle).

use super::msi::{DeliveryMode, Destination, InterruptMessage, TriggerMode};
use crate::device::{AccessWidth, Mmio};

/// Number of pins (redirection entries).
pub const IOAPIC_PINS: usize = 24;
/// The architectural default base of the IOAPIC page.
pub const DEFAULT_IOAPIC_BASE: u64 = 0xFEC0_0000;

/// Offset of IOREGSEL in the page.
pub const IOREGSEL: u64 = 0x00;
/// Offset of IOWIN in the page.
pub const IOWIN: u64 = 0x10;
/// Offset of the EOI register (version 0x20 only).
pub const IOEOI: u64 = 0x40;

const REDIR_MASKED: u64 = 1 << 16;
const REDIR_LEVEL: u64 = 1 << 15;
const REDIR_REMOTE_IRR: u64 = 1 << 14;
const REDIR_ACTIVE_LOW: u64 = 1 << 13;
/// Writable bits: vector, delivery mode, destination mode, polarity,
/// trigger mode, mask, destination.
const REDIR_WRITABLE: u64 = 0xFF00_0000_0001_AFFF;

/// Which IOAPIC the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoApicVersion {
    /// 0x11: the 82093AA, no EOI register.
    V11,
    /// 0x20: adds the EOI register at offset 0x40 (directed EOI).
    V20,
}

/// The virtual IOAPIC. See the module documentation.
#[derive(Clone, Debug)]
pub struct IoApic {
    version: IoApicVersion,
    select: u8,
    id: u8,
    redirection: [u64; IOAPIC_PINS],
    input: u32,
    edge_pending: u32,
}

impl IoApic {
    /// An IOAPIC after reset: every entry masked, ID `id` (4 bits).
    pub fn new(id: u8, version: IoApicVersion) -> Self {
        Self {
            version,
            select: 0,
            id: id & 0xF,
            redirection: [REDIR_MASKED; IOAPIC_PINS],
            input: 0,
            edge_pending: 0,
        }
    }

    /// The redirection entry of `pin` (0 for a pin out of range).
    pub fn redirection(&self, pin: usize) -> u64 {
        self.redirection.get(pin).copied().unwrap_or(0)
    }

    /// Whether `pin` is active: its electrical level matches its polarity.
    fn active(&self, pin: usize) -> bool {
        let high = self.input & (1 << pin) != 0;
        let active_low = self.redirection[pin] & REDIR_ACTIVE_LOW != 0;
        high != active_low
    }

    /// Drives the electrical level of `pin` (out-of-range pins are ignored).
    pub fn set_input(&mut self, pin: usize, high: bool) {
        if pin >= IOAPIC_PINS {
            return;
        }
        let was_active = self.active(pin);
        if high {
            self.input |= 1 << pin;
        } else {
            self.input &= !(1 << pin);
        }
        let entry = self.redirection[pin];
        if !was_active && self.active(pin) && entry & REDIR_LEVEL == 0 && entry & REDIR_MASKED == 0
        {
            self.edge_pending |= 1 << pin;
        }
    }

    /// Delivers every interrupt that is due (see the module documentation)
    /// to `deliver`.
    pub fn service(&mut self, mut deliver: impl FnMut(InterruptMessage)) {
        for pin in 0..IOAPIC_PINS {
            let entry = self.redirection[pin];
            if entry & REDIR_MASKED != 0 {
                self.edge_pending &= !(1 << pin);
                continue;
            }
            let due = if entry & REDIR_LEVEL != 0 {
                self.active(pin) && entry & REDIR_REMOTE_IRR == 0
            } else {
                self.edge_pending & (1 << pin) != 0
            };
            if !due {
                continue;
            }
            self.edge_pending &= !(1 << pin);
            if entry & REDIR_LEVEL != 0 {
                self.redirection[pin] |= REDIR_REMOTE_IRR;
            }
            if let Some(message) = message_of(entry) {
                deliver(message);
            }
        }
    }

    /// An EOI for `vector` (LAPIC broadcast or the EOI register): clears
    /// remote IRR of the level-triggered entries with that vector.
    pub fn end_of_interrupt(&mut self, vector: u8) {
        for entry in &mut self.redirection {
            if *entry & REDIR_LEVEL != 0 && *entry as u8 == vector {
                *entry &= !REDIR_REMOTE_IRR;
            }
        }
    }

    /// Reads the indirect register `index` (as IOWIN does).
    pub fn read_indirect(&self, index: u8) -> u32 {
        match index {
            0x00 => u32::from(self.id) << 24,
            0x01 => {
                let version = match self.version {
                    IoApicVersion::V11 => 0x11,
                    IoApicVersion::V20 => 0x20,
                };
                version | ((IOAPIC_PINS as u32 - 1) << 16)
            }
            // The arbitration ID is loaded with the APIC ID.
            0x02 => u32::from(self.id) << 24,
            0x10..=0x3F => {
                let entry = self.redirection[usize::from((index - 0x10) / 2)];
                if index & 1 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    /// Writes the indirect register `index` (as IOWIN does). Read-only bits
    /// and registers ignore writes.
    pub fn write_indirect(&mut self, index: u8, value: u32) {
        match index {
            0x00 => self.id = ((value >> 24) & 0xF) as u8,
            0x10..=0x3F => {
                let pin = usize::from((index - 0x10) / 2);
                let old = self.redirection[pin];
                let new_bits = if index & 1 == 0 {
                    (old & !0xFFFF_FFFF) | u64::from(value)
                } else {
                    (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
                };
                let mut entry = (new_bits & REDIR_WRITABLE) | (old & REDIR_REMOTE_IRR);
                if entry & REDIR_LEVEL == 0 {
                    entry &= !REDIR_REMOTE_IRR;
                }
                self.redirection[pin] = entry;
            }
            _ => {}
        }
    }

    /// The indirect register IOREGSEL currently selects.
    pub fn selected(&self) -> u8 {
        self.select
    }
}

fn message_of(entry: u64) -> Option<InterruptMessage> {
    let delivery = DeliveryMode::from_bits((entry >> 8) as u32)?;
    let dest = (entry >> 56) as u32;
    Some(InterruptMessage {
        destination: if entry & (1 << 11) != 0 {
            Destination::Logical(dest)
        } else {
            Destination::Physical(dest)
        },
        vector: entry as u8,
        delivery,
        trigger: if entry & REDIR_LEVEL != 0 {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        },
    })
}

impl Mmio for IoApic {
    /// IOREGSEL (bits 7:0) at 0x00, IOWIN at 0x10; anything else reads 0.
    fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        let value = match offset {
            IOREGSEL => u32::from(self.select),
            IOWIN => self.read_indirect(self.select),
            _ => 0,
        };
        u64::from(value) & width.mask()
    }

    /// IOREGSEL, IOWIN, and the EOI register of version 0x20.
    fn mmio_write(&mut self, offset: u64, _width: AccessWidth, value: u64) {
        match offset {
            IOREGSEL => self.select = value as u8,
            IOWIN => self.write_indirect(self.select, value as u32),
            IOEOI if self.version == IoApicVersion::V20 => self.end_of_interrupt(value as u8),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn program(io: &mut IoApic, pin: u8, low: u32, high: u32) {
        io.mmio_write(IOREGSEL, AccessWidth::Dword, u64::from(0x10 + 2 * pin));
        io.mmio_write(IOWIN, AccessWidth::Dword, u64::from(low));
        io.mmio_write(IOREGSEL, AccessWidth::Dword, u64::from(0x11 + 2 * pin));
        io.mmio_write(IOWIN, AccessWidth::Dword, u64::from(high));
    }

    fn collect(io: &mut IoApic) -> Vec<InterruptMessage> {
        let mut v = Vec::new();
        io.service(|m| v.push(m));
        v
    }

    fn read(io: &mut IoApic, index: u8) -> u32 {
        io.mmio_write(IOREGSEL, AccessWidth::Dword, u64::from(index));
        io.mmio_read(IOWIN, AccessWidth::Dword) as u32
    }

    #[test]
    fn identification_registers() {
        let mut io = IoApic::new(2, IoApicVersion::V11);
        // 82093AA: ID in bits 27:24, version 0x11 with max redirection
        // entry 0x17 in bits 23:16, arbitration ID in bits 27:24.
        assert_eq!(read(&mut io, 0), 2 << 24);
        assert_eq!(read(&mut io, 1), 0x0017_0011);
        assert_eq!(read(&mut io, 2), 2 << 24);
        io.write_indirect(0, 0x0F00_0000);
        assert_eq!(read(&mut io, 0), 0x0F00_0000);
        // Version is read-only.
        io.write_indirect(1, 0);
        assert_eq!(read(&mut io, 1), 0x0017_0011);
        assert_eq!(io.mmio_read(IOREGSEL, AccessWidth::Dword), 1);
        assert_eq!(
            IoApic::new(0, IoApicVersion::V20).read_indirect(1) & 0xFF,
            0x20
        );
    }

    #[test]
    fn entries_reset_masked_and_keep_read_only_bits() {
        let mut io = IoApic::new(0, IoApicVersion::V11);
        assert_eq!(read(&mut io, 0x10), 1 << 16);
        // Try to set delivery status (12) and remote IRR (14): read-only.
        program(&mut io, 3, 0x0000_5030, 0x0100_0000);
        assert_eq!(read(&mut io, 0x16), 0x30);
        assert_eq!(read(&mut io, 0x17), 0x0100_0000);
    }

    #[test]
    fn edge_pin_delivers_once_per_edge_and_masked_edges_are_lost() {
        let mut io = IoApic::new(0, IoApicVersion::V11);
        program(&mut io, 2, 0x30, 0);
        io.set_input(2, true);
        io.set_input(2, true);
        let msgs = collect(&mut io);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].vector, 0x30);
        assert_eq!(msgs[0].trigger, TriggerMode::Edge);
        assert_eq!(msgs[0].destination, Destination::Physical(0));
        assert!(collect(&mut io).is_empty());
        // Masked: an edge is not held pending.
        io.set_input(2, false);
        program(&mut io, 2, 0x30 | (1 << 16), 0);
        io.set_input(2, true);
        program(&mut io, 2, 0x30, 0);
        assert!(collect(&mut io).is_empty());
    }

    #[test]
    fn level_pin_uses_remote_irr_and_redelivers_after_eoi_while_active() {
        let mut io = IoApic::new(0, IoApicVersion::V11);
        program(&mut io, 9, 0x0000_8041, 0x0300_0000);
        io.set_input(9, true);
        let msgs = collect(&mut io);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].trigger, TriggerMode::Level);
        assert_eq!(msgs[0].destination, Destination::Physical(3));
        assert_ne!(io.redirection(9) & REDIR_REMOTE_IRR, 0);
        // Remote IRR blocks until EOI.
        assert!(collect(&mut io).is_empty());
        // EOI of another vector does nothing.
        io.end_of_interrupt(0x42);
        assert!(collect(&mut io).is_empty());
        io.end_of_interrupt(0x41);
        assert_eq!(io.redirection(9) & REDIR_REMOTE_IRR, 0);
        assert_eq!(collect(&mut io).len(), 1, "still asserted: delivered again");
        io.set_input(9, false);
        io.end_of_interrupt(0x41);
        assert!(collect(&mut io).is_empty());
    }

    #[test]
    fn polarity_low_inverts_the_pin() {
        let mut io = IoApic::new(0, IoApicVersion::V11);
        // Level, active low (bit 13).
        program(&mut io, 16, 0x0000_A050, 0);
        io.set_input(16, true);
        assert!(collect(&mut io).is_empty(), "high is inactive");
        io.set_input(16, false);
        assert_eq!(collect(&mut io).len(), 1);
    }

    #[test]
    fn unmasking_an_active_level_pin_delivers() {
        let mut io = IoApic::new(0, IoApicVersion::V11);
        program(&mut io, 5, 0x0001_8035, 0);
        io.set_input(5, true);
        assert!(collect(&mut io).is_empty());
        program(&mut io, 5, 0x0000_8035, 0);
        assert_eq!(collect(&mut io).len(), 1);
    }

    #[test]
    fn eoi_register_only_in_version_0x20() {
        for (version, cleared) in [(IoApicVersion::V11, false), (IoApicVersion::V20, true)] {
            let mut io = IoApic::new(0, version);
            program(&mut io, 1, 0x0000_8061, 0);
            io.set_input(1, true);
            assert_eq!(collect(&mut io).len(), 1);
            io.mmio_write(IOEOI, AccessWidth::Dword, 0x61);
            assert_eq!(io.redirection(1) & REDIR_REMOTE_IRR == 0, cleared);
        }
    }

    #[test]
    fn switching_to_edge_clears_remote_irr_and_reserved_mode_is_dropped() {
        let mut io = IoApic::new(0, IoApicVersion::V11);
        program(&mut io, 4, 0x0000_8044, 0);
        io.set_input(4, true);
        assert_eq!(collect(&mut io).len(), 1);
        program(&mut io, 4, 0x0000_0044, 0);
        assert_eq!(io.redirection(4) & REDIR_REMOTE_IRR, 0);
        // Reserved delivery mode 011 produces no message.
        program(&mut io, 6, 0x0000_0344, 0);
        io.set_input(6, true);
        assert!(collect(&mut io).is_empty());
        // Out of range pins and registers are harmless.
        io.set_input(99, true);
        assert_eq!(io.read_indirect(0x40), 0);
    }
}
