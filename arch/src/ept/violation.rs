//! The exit qualification of an EPT violation (SDM Vol. 3C, Table 28-7).

use super::entry::Permissions;

/// What the guest did and what the EPT allowed, from an EPT-violation exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// The faulting guest-physical address (VMCS field 0x2400).
    pub guest_physical: u64,
    /// The guest-linear address (VMCS field 0x640A), when the qualification
    /// says it is valid.
    pub guest_linear: Option<u64>,
    /// Bit 0: the access was a data read.
    pub read: bool,
    /// Bit 1: the access was a data write.
    pub write: bool,
    /// Bit 2: the access was an instruction fetch.
    pub fetch: bool,
    /// Bits 5:3: what the EPT entries allowed (the AND over all levels).
    pub allowed: Permissions,
    /// Bit 8 (with bit 7): the access was to the translated address, not to a
    /// guest paging structure during the guest's own page walk.
    pub final_translation: bool,
    /// Bit 12: NMI blocking was lifted by an IRET that faulted; the
    /// hypervisor must set "blocking by NMI" again before re-entry.
    pub nmi_unblocking: bool,
}

impl EptViolation {
    /// Bit 7: the guest-linear address field is valid.
    pub const LINEAR_VALID: u64 = 1 << 7;

    /// Decodes `qualification` with the two address fields of the VMCS.
    pub const fn from_exit(qualification: u64, guest_physical: u64, guest_linear: u64) -> Self {
        let linear_valid = bit(qualification, 7);
        Self {
            guest_physical,
            guest_linear: if linear_valid {
                Some(guest_linear)
            } else {
                None
            },
            read: bit(qualification, 0),
            write: bit(qualification, 1),
            fetch: bit(qualification, 2),
            allowed: Permissions::new(
                bit(qualification, 3),
                bit(qualification, 4),
                bit(qualification, 5),
            ),
            final_translation: linear_valid && bit(qualification, 8),
            nmi_unblocking: bit(qualification, 12),
        }
    }

    /// Whether nothing at all was mapped (no access right at any level): the
    /// access went to an address the EPT does not map, such as MMIO.
    pub const fn not_present(&self) -> bool {
        !self.allowed.read && !self.allowed.write && !self.allowed.execute
    }
}

/// Whether bit `n` of `value` is set.
const fn bit(value: u64, n: u32) -> bool {
    value & (1u64 << n) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_write_to_an_unmapped_page() {
        // Data write (bit 1), nothing allowed, linear valid (7), final (8).
        let v = EptViolation::from_exit(0x182, 0xfee0_0300, 0xffff_ffff_5f00_0300);
        assert!(v.write && !v.read && !v.fetch);
        assert!(v.not_present());
        assert_eq!(v.guest_linear, Some(0xffff_ffff_5f00_0300));
        assert!(v.final_translation && !v.nmi_unblocking);
    }

    #[test]
    fn decodes_a_write_to_a_read_only_page_during_a_guest_walk() {
        // Data write, readable+executable (3, 5), linear valid, bit 8 clear
        // (a guest paging-structure access), NMI unblocking (12).
        let v = EptViolation::from_exit(0x10aa, 0x1000, 0);
        assert!(v.write);
        assert_eq!(v.allowed, Permissions::READ_EXECUTE);
        assert!(!v.final_translation && v.nmi_unblocking && !v.not_present());
        let no_linear = EptViolation::from_exit(0x1, 0x2000, 0x1234);
        assert_eq!(no_linear.guest_linear, None);
        assert!(no_linear.read && !no_linear.final_translation);
    }
}
