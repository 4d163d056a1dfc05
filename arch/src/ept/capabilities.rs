//! The EPT-related capabilities of the processor, as an input the VMX
//! capability code fills from `IA32_VMX_EPT_VPID_CAP` (MSR 0x48C).

/// `IA32_VMX_EPT_VPID_CAP` bit positions (SDM Vol. 3D, A.10).
pub mod bits {
    /// Execute-only EPT translations are supported.
    pub const EXECUTE_ONLY: u32 = 0;
    /// A page-walk length of 4 is supported.
    pub const WALK_LENGTH_4: u32 = 6;
    /// The EPT paging structures may be accessed as uncacheable (EPTP type 0).
    pub const MEMORY_TYPE_UC: u32 = 8;
    /// The EPT paging structures may be accessed as write-back (EPTP type 6).
    pub const MEMORY_TYPE_WB: u32 = 14;
    /// A PDE may map a 2 MiB page.
    pub const PAGES_2M: u32 = 16;
    /// A PDPTE may map a 1 GiB page.
    pub const PAGES_1G: u32 = 17;
    /// INVEPT is supported.
    pub const INVEPT: u32 = 20;
    /// Accessed and dirty flags for EPT are supported.
    pub const ACCESSED_DIRTY: u32 = 21;
    /// Single-context INVEPT is supported.
    pub const INVEPT_SINGLE_CONTEXT: u32 = 25;
    /// All-context INVEPT is supported.
    pub const INVEPT_ALL_CONTEXT: u32 = 26;
    /// INVVPID is supported.
    pub const INVVPID: u32 = 32;
    /// Individual-address INVVPID is supported.
    pub const INVVPID_INDIVIDUAL_ADDRESS: u32 = 40;
    /// Single-context INVVPID is supported.
    pub const INVVPID_SINGLE_CONTEXT: u32 = 41;
    /// All-context INVVPID is supported.
    pub const INVVPID_ALL_CONTEXT: u32 = 42;
    /// Single-context-retaining-globals INVVPID is supported.
    pub const INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS: u32 = 43;
}

/// What the processor's EPT supports, and so what the tables may contain.
///
/// Every flag corresponds to one bit of `IA32_VMX_EPT_VPID_CAP` (see
/// [`bits`]); [`EptCapabilities::from_ept_vpid_cap`] decodes the MSR value.
/// Clearing a flag that the processor reports restricts what the tables use
/// (for example clearing `accessed_dirty` leaves A/D flags disabled in the
/// EPT pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptCapabilities {
    /// Bit 0: execute-only translations.
    pub execute_only: bool,
    /// Bit 6: a 4-level walk (the only length these tables build).
    pub walk_length_4: bool,
    /// Bit 8: UC for the paging-structure accesses named in the EPT pointer.
    pub memory_type_uc: bool,
    /// Bit 14: WB for the paging-structure accesses named in the EPT pointer.
    pub memory_type_wb: bool,
    /// Bit 16: 2 MiB pages.
    pub pages_2m: bool,
    /// Bit 17: 1 GiB pages.
    pub pages_1g: bool,
    /// Bit 21: accessed and dirty flags.
    pub accessed_dirty: bool,
    /// Bit 20 and 25: INVEPT with the single-context type.
    pub invept_single_context: bool,
    /// Bit 20 and 26: INVEPT with the all-context type.
    pub invept_all_context: bool,
    /// Bit 32 and 40: INVVPID individual-address type.
    pub invvpid_individual_address: bool,
    /// Bit 32 and 41: INVVPID single-context type.
    pub invvpid_single_context: bool,
    /// Bit 32 and 42: INVVPID all-context type.
    pub invvpid_all_context: bool,
    /// Bit 32 and 43: INVVPID single-context-retaining-globals type.
    pub invvpid_single_context_retaining_globals: bool,
    /// The host's physical-address width (CPUID 0x8000_0008 EAX\[7:0\]); bits of
    /// an entry's address at or above it are reserved. Clamped to 52.
    pub physical_address_bits: u8,
}

impl EptCapabilities {
    /// Everything these tables can use: 4-level walk, WB and UC, 2 MiB and
    /// 1 GiB pages, A/D flags, all INVEPT and INVVPID types, execute-only,
    /// with a 46-bit host physical address width.
    pub const FULL: Self = Self {
        execute_only: true,
        walk_length_4: true,
        memory_type_uc: true,
        memory_type_wb: true,
        pages_2m: true,
        pages_1g: true,
        accessed_dirty: true,
        invept_single_context: true,
        invept_all_context: true,
        invvpid_individual_address: true,
        invvpid_single_context: true,
        invvpid_all_context: true,
        invvpid_single_context_retaining_globals: true,
        physical_address_bits: 46,
    };

    /// The minimum the tables work with: a 4-level walk, WB, 4 KiB pages
    /// only, no A/D flags, no execute-only translations.
    pub const MINIMAL: Self = Self {
        execute_only: false,
        walk_length_4: true,
        memory_type_uc: false,
        memory_type_wb: true,
        pages_2m: false,
        pages_1g: false,
        accessed_dirty: false,
        invept_single_context: false,
        invept_all_context: false,
        invvpid_individual_address: false,
        invvpid_single_context: false,
        invvpid_all_context: false,
        invvpid_single_context_retaining_globals: false,
        physical_address_bits: 46,
    };

    /// Decodes the value of `IA32_VMX_EPT_VPID_CAP` together with the host's
    /// physical-address width.
    pub const fn from_ept_vpid_cap(msr: u64, physical_address_bits: u8) -> Self {
        let invept = bit(msr, bits::INVEPT);
        let invvpid = bit(msr, bits::INVVPID);
        Self {
            execute_only: bit(msr, bits::EXECUTE_ONLY),
            walk_length_4: bit(msr, bits::WALK_LENGTH_4),
            memory_type_uc: bit(msr, bits::MEMORY_TYPE_UC),
            memory_type_wb: bit(msr, bits::MEMORY_TYPE_WB),
            pages_2m: bit(msr, bits::PAGES_2M),
            pages_1g: bit(msr, bits::PAGES_1G),
            accessed_dirty: bit(msr, bits::ACCESSED_DIRTY),
            invept_single_context: invept && bit(msr, bits::INVEPT_SINGLE_CONTEXT),
            invept_all_context: invept && bit(msr, bits::INVEPT_ALL_CONTEXT),
            invvpid_individual_address: invvpid && bit(msr, bits::INVVPID_INDIVIDUAL_ADDRESS),
            invvpid_single_context: invvpid && bit(msr, bits::INVVPID_SINGLE_CONTEXT),
            invvpid_all_context: invvpid && bit(msr, bits::INVVPID_ALL_CONTEXT),
            invvpid_single_context_retaining_globals: invvpid
                && bit(msr, bits::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS),
            physical_address_bits: if physical_address_bits > 52 {
                52
            } else {
                physical_address_bits
            },
        }
    }

    /// Whether a leaf at `level` (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB) may be
    /// used. 1 GiB pages are used only together with 2 MiB pages, so that a
    /// 1 GiB page can always be split into 2 MiB pages.
    pub const fn leaf_allowed(&self, level: u8) -> bool {
        match level {
            1 => true,
            2 => self.pages_2m,
            3 => self.pages_2m && self.pages_1g,
            _ => false,
        }
    }

    /// One past the highest host-physical address an entry can hold.
    pub const fn host_physical_limit(&self) -> u64 {
        1u64 << self.physical_address_bits
    }
}

/// Whether bit `n` of `msr` is set.
const fn bit(msr: u64, n: u32) -> bool {
    msr & (1u64 << n) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_skylake_like_msr() {
        // Execute-only, walk 4, UC, WB, 2M, 1G, INVEPT, A/D, both INVEPT
        // types, INVVPID with all four types.
        let msr: u64 = (1 << 0)
            | (1 << 6)
            | (1 << 8)
            | (1 << 14)
            | (1 << 16)
            | (1 << 17)
            | (1 << 20)
            | (1 << 21)
            | (1 << 25)
            | (1 << 26)
            | (1 << 32)
            | (0xf << 40);
        let caps = EptCapabilities::from_ept_vpid_cap(msr, 46);
        assert_eq!(caps, EptCapabilities::FULL);
    }

    #[test]
    fn decodes_sandy_bridge_like_msr_and_gates_subtypes() {
        // WB, walk 4, 2M only, INVEPT types present but INVEPT itself absent;
        // INVVPID types present but INVVPID absent.
        let msr: u64 = (1 << 6) | (1 << 14) | (1 << 16) | (1 << 25) | (1 << 26) | (0xf << 40);
        let caps = EptCapabilities::from_ept_vpid_cap(msr, 36);
        assert!(caps.walk_length_4 && caps.memory_type_wb && caps.pages_2m);
        assert!(!caps.pages_1g && !caps.accessed_dirty && !caps.memory_type_uc);
        assert!(!caps.invept_single_context && !caps.invept_all_context);
        assert!(!caps.invvpid_single_context && !caps.invvpid_all_context);
        assert_eq!(caps.host_physical_limit(), 1 << 36);
        assert!(caps.leaf_allowed(2) && !caps.leaf_allowed(3));
    }

    #[test]
    fn one_gib_pages_need_two_mib_pages() {
        let caps = EptCapabilities {
            pages_2m: false,
            pages_1g: true,
            ..EptCapabilities::FULL
        };
        assert!(!caps.leaf_allowed(3));
        assert!(!caps.leaf_allowed(4));
        assert_eq!(
            EptCapabilities::from_ept_vpid_cap(0, 60).physical_address_bits,
            52
        );
    }
}
