//! Interrupt messages: what an IOAPIC redirection entry, an MSI or an IPI
//! asks a local APIC to do, and the decoding of MSI address/data pairs
//! (Intel SDM Vol. 3A, "Message Signalled Interrupts": address
//! 0xFEE0_0000 | destination ID << 12 | RH << 3 | DM << 2; data = trigger
//! << 15 | level << 14 | delivery mode << 8 | vector).

use core::fmt;

/// How the receiving APIC handles a message (SDM delivery mode encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// 000: deliver the vector.
    Fixed = 0,
    /// 001: deliver the vector to the lowest-priority destination.
    LowestPriority = 1,
    /// 010: system management interrupt.
    Smi = 2,
    /// 100: non-maskable interrupt (vector ignored).
    Nmi = 4,
    /// 101: INIT.
    Init = 5,
    /// 110: start-up IPI (vector is the start page).
    Startup = 6,
    /// 111: external interrupt: the vector comes from an 8259A.
    ExtInt = 7,
}

impl DeliveryMode {
    /// Decodes the 3-bit field; `None` for the reserved encoding 011.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        // By encoding: one table rather than a jump table at every caller.
        const DECODED: [Option<DeliveryMode>; 8] = [
            Some(DeliveryMode::Fixed),
            Some(DeliveryMode::LowestPriority),
            Some(DeliveryMode::Smi),
            None,
            Some(DeliveryMode::Nmi),
            Some(DeliveryMode::Init),
            Some(DeliveryMode::Startup),
            Some(DeliveryMode::ExtInt),
        ];
        DECODED[(bits & 7) as usize]
    }

    /// The 3-bit encoding (the discriminant).
    pub const fn bits(self) -> u32 {
        self as u32
    }
}

/// Edge or level triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    /// Edge: the interrupt is delivered once.
    Edge,
    /// Level: the source expects an EOI before it may deliver again.
    Level,
}

/// Which APICs a message addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The APIC whose ID equals the value; all ones broadcasts.
    Physical(u32),
    /// The APICs whose logical destination register matches the value.
    Logical(u32),
}

/// One interrupt message for local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptMessage {
    /// Addressed APICs. IOAPIC and MSI messages carry 8-bit IDs (0xFF
    /// broadcasts); x2APIC IPIs carry 32-bit IDs.
    pub destination: Destination,
    /// The vector (meaningful for fixed, lowest-priority and start-up).
    pub vector: u8,
    /// How the APIC handles the message.
    pub delivery: DeliveryMode,
    /// Edge or level.
    pub trigger: TriggerMode,
}

/// Why an MSI address/data pair is not a valid interrupt message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiError {
    /// Bits 31:20 of the address are not 0xFEE (or bits 63:32 are not 0).
    NotInterruptAddress {
        /// The address written by the device.
        address: u64,
    },
    /// The delivery mode is the reserved encoding 011.
    ReservedDeliveryMode {
        /// The data written by the device.
        data: u32,
    },
}

impl fmt::Display for MsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInterruptAddress { address } => {
                write!(f, "MSI address {address:#x} is outside 0xFEExxxxx")
            }
            Self::ReservedDeliveryMode { data } => {
                write!(f, "MSI data {data:#x} uses the reserved delivery mode 011")
            }
        }
    }
}

/// Base of the MSI address window.
pub const MSI_ADDRESS_BASE: u64 = 0xFEE0_0000;

/// Decodes an MSI `address`/`data` pair.
///
/// A level-triggered message with the level bit (14) clear is a deassert
/// message, which has no effect on a local APIC: it decodes to `Ok(None)`.
/// The redirection hint (bit 3) only matters for lowest-priority delivery
/// among several APICs and is not represented.
pub fn decode_msi(address: u64, data: u32) -> Result<Option<InterruptMessage>, MsiError> {
    if address >> 20 != MSI_ADDRESS_BASE >> 20 {
        return Err(MsiError::NotInterruptAddress { address });
    }
    let id = ((address >> 12) & 0xFF) as u32;
    let destination = if address & (1 << 2) != 0 {
        Destination::Logical(id)
    } else {
        Destination::Physical(id)
    };
    let delivery =
        DeliveryMode::from_bits(data >> 8).ok_or(MsiError::ReservedDeliveryMode { data })?;
    let trigger = if data & (1 << 15) != 0 {
        TriggerMode::Level
    } else {
        TriggerMode::Edge
    };
    if trigger == TriggerMode::Level && data & (1 << 14) == 0 {
        return Ok(None);
    }
    Ok(Some(InterruptMessage {
        destination,
        vector: data as u8,
        delivery,
        trigger,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields_per_sdm_layout() {
        // Destination 0x05 physical, vector 0x41, fixed, edge.
        let m = decode_msi(0xFEE0_5000, 0x0041).unwrap().unwrap();
        assert_eq!(m.destination, Destination::Physical(5));
        assert_eq!(m.vector, 0x41);
        assert_eq!(m.delivery, DeliveryMode::Fixed);
        assert_eq!(m.trigger, TriggerMode::Edge);

        // Logical destination 0x0F (DM bit 2), redirection hint (bit 3),
        // lowest priority (001), level assert (bits 15 and 14).
        let m = decode_msi(0xFEE0_F00C, 0xC1A0).unwrap().unwrap();
        assert_eq!(m.destination, Destination::Logical(0x0F));
        assert_eq!(m.vector, 0xA0);
        assert_eq!(m.delivery, DeliveryMode::LowestPriority);
        assert_eq!(m.trigger, TriggerMode::Level);

        // NMI delivery.
        let m = decode_msi(0xFEE0_0000, 0x0400).unwrap().unwrap();
        assert_eq!(m.delivery, DeliveryMode::Nmi);
    }

    #[test]
    fn rejects_bad_addresses_and_reserved_modes() {
        assert_eq!(
            decode_msi(0xFED0_0000, 0x30),
            Err(MsiError::NotInterruptAddress {
                address: 0xFED0_0000
            })
        );
        assert!(decode_msi(0x1_FEE0_0000, 0x30).is_err());
        assert_eq!(
            decode_msi(0xFEE0_0000, 0x0330),
            Err(MsiError::ReservedDeliveryMode { data: 0x0330 })
        );
        // Level deassert does nothing.
        assert_eq!(decode_msi(0xFEE0_0000, 0x8030), Ok(None));
    }

    #[test]
    fn delivery_mode_round_trips() {
        // SDM encodings; 011 is reserved.
        use DeliveryMode::*;
        let expected = [
            Some(Fixed),
            Some(LowestPriority),
            Some(Smi),
            None,
            Some(Nmi),
            Some(Init),
            Some(Startup),
            Some(ExtInt),
        ];
        for (bits, mode) in (0..).zip(expected) {
            assert_eq!(DeliveryMode::from_bits(bits), mode, "{bits:03b}");
            assert_eq!(
                DeliveryMode::from_bits(bits | 0x18),
                mode,
                "upper bits ignored"
            );
        }
        for bits in 0..8 {
            if let Some(m) = DeliveryMode::from_bits(bits) {
                assert_eq!(m.bits(), bits);
            } else {
                assert_eq!(bits, 3);
            }
        }
    }
}
