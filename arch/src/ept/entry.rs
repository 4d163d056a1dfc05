//! The EPT entry format (SDM Vol. 3C, 29.3.2): permissions, memory types and
//! the checks that keep an entry from being an EPT misconfiguration.

use core::fmt;

use super::capabilities::EptCapabilities;

/// Bit 0: read access.
pub(crate) const READ: u64 = 1 << 0;
/// Bit 1: write access.
pub(crate) const WRITE: u64 = 1 << 1;
/// Bit 2: execute access (supervisor-mode execute under mode-based control).
pub(crate) const EXECUTE: u64 = 1 << 2;
/// Bits 2:0.
pub(crate) const PERMISSION_MASK: u64 = READ | WRITE | EXECUTE;
/// Bits 5:3 of a leaf: the memory type.
pub(crate) const MEMORY_TYPE_SHIFT: u32 = 3;
/// Bits 5:3 of a leaf.
pub(crate) const MEMORY_TYPE_MASK: u64 = 7 << MEMORY_TYPE_SHIFT;
/// Bit 6 of a leaf: ignore the guest's PAT memory type.
pub(crate) const IGNORE_PAT: u64 = 1 << 6;
/// Bit 7 of a PDPTE or PDE: the entry maps a page.
pub(crate) const LARGE_PAGE: u64 = 1 << 7;
/// Bit 8: accessed (when A/D flags are enabled).
pub(crate) const ACCESSED: u64 = 1 << 8;
/// Bit 9 of a leaf: dirty (when A/D flags are enabled).
pub(crate) const DIRTY: u64 = 1 << 9;
/// Bits 51:12: the physical address.
pub(crate) const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// The bits of a leaf that the tables set and compare (all but A/D and address).
pub(crate) const LEAF_ATTRIBUTE_MASK: u64 = PERMISSION_MASK | MEMORY_TYPE_MASK | IGNORE_PAT;

/// Access rights of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permissions {
    /// Reads are allowed.
    pub read: bool,
    /// Writes are allowed.
    pub write: bool,
    /// Instruction fetches are allowed.
    pub execute: bool,
}

impl Permissions {
    /// Read only.
    pub const READ: Self = Self::new(true, false, false);
    /// Read and write.
    pub const READ_WRITE: Self = Self::new(true, true, false);
    /// Read and execute.
    pub const READ_EXECUTE: Self = Self::new(true, false, true);
    /// Read, write and execute.
    pub const ALL: Self = Self::new(true, true, true);
    /// Execute only (needs [`EptCapabilities::execute_only`]).
    pub const EXECUTE_ONLY: Self = Self::new(false, false, true);

    /// Permissions from the three flags.
    pub const fn new(read: bool, write: bool, execute: bool) -> Self {
        Self {
            read,
            write,
            execute,
        }
    }

    /// Bits 2:0 of an entry with these permissions.
    pub const fn bits(self) -> u64 {
        (self.read as u64) | ((self.write as u64) << 1) | ((self.execute as u64) << 2)
    }

    /// The permissions in bits 2:0 of `entry`.
    pub const fn from_entry(entry: u64) -> Self {
        Self::new(entry & READ != 0, entry & WRITE != 0, entry & EXECUTE != 0)
    }

    /// Checks that an entry with these permissions is present and is no
    /// misconfiguration under `caps` (SDM 29.3.3.1).
    pub const fn validate(self, caps: &EptCapabilities) -> Result<(), PermissionError> {
        if !self.read && !self.write && !self.execute {
            Err(PermissionError::NoAccess)
        } else if self.write && !self.read {
            Err(PermissionError::WriteWithoutRead {
                execute: self.execute,
            })
        } else if self.execute && !self.read && !caps.execute_only {
            Err(PermissionError::ExecuteOnlyUnsupported)
        } else {
            Ok(())
        }
    }
}

/// Why a set of permissions cannot be put in an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermissionError {
    /// No access at all: that is an unmapped page; use `unmap`.
    NoAccess,
    /// Write (and maybe execute) without read: an EPT misconfiguration.
    WriteWithoutRead {
        /// Whether execute was asked for as well.
        execute: bool,
    },
    /// Execute-only, which the processor does not support.
    ExecuteOnlyUnsupported,
}

impl fmt::Display for PermissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAccess => f.write_str("no access rights (unmap instead)"),
            Self::WriteWithoutRead { execute: false } => f.write_str("write-only"),
            Self::WriteWithoutRead { execute: true } => f.write_str("write+execute without read"),
            Self::ExecuteOnlyUnsupported => f.write_str("execute-only is not supported"),
        }
    }
}

/// The EPT memory type of a mapping (bits 5:3 of a leaf). Types 2, 3 and 7
/// are reserved and have no variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryType {
    /// Uncacheable (0): device registers (MMIO).
    Uncacheable = 0,
    /// Write-combining (1): frame buffers.
    WriteCombining = 1,
    /// Write-through (4).
    WriteThrough = 4,
    /// Write-protected (5).
    WriteProtected = 5,
    /// Write-back (6): RAM.
    WriteBack = 6,
}

impl MemoryType {
    /// The type with encoding `value`, or the reserved value as an error.
    pub const fn from_bits(value: u64) -> Result<Self, ReservedMemoryType> {
        match value {
            0 => Ok(Self::Uncacheable),
            1 => Ok(Self::WriteCombining),
            4 => Ok(Self::WriteThrough),
            5 => Ok(Self::WriteProtected),
            6 => Ok(Self::WriteBack),
            other => Err(ReservedMemoryType(other)),
        }
    }

    /// The type a mapping gets when the host's MTRRs give its host-physical
    /// memory the type `host`: the stricter of the two, following the MTRR
    /// precedence rules (SDM 12.11.4.1): UC wins, then WC, then WT over WB
    /// and WP; two equal types stay as they are.
    pub const fn combined_with_host(self, host: MemoryType) -> MemoryType {
        const fn rank(t: MemoryType) -> u8 {
            match t {
                MemoryType::Uncacheable => 0,
                MemoryType::WriteCombining => 1,
                MemoryType::WriteThrough => 2,
                MemoryType::WriteProtected => 3,
                MemoryType::WriteBack => 4,
            }
        }
        if rank(host) < rank(self) {
            host
        } else {
            self
        }
    }
}

/// A memory-type encoding the SDM reserves (2, 3 or 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedMemoryType(pub u64);

/// Everything a mapping says besides its addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MappingAttributes {
    /// Access rights.
    pub permissions: Permissions,
    /// Memory type (combined with the host's, see [`super::HostMemoryTypes`]).
    pub memory_type: MemoryType,
    /// Ignore the guest's PAT and use `memory_type` as is (bit 6).
    pub ignore_pat: bool,
}

impl MappingAttributes {
    /// Guest RAM: read, write, execute, write-back, the guest's PAT honoured.
    pub const RAM: Self = Self {
        permissions: Permissions::ALL,
        memory_type: MemoryType::WriteBack,
        ignore_pat: false,
    };
    /// Passed-through device memory: read and write, uncacheable whatever the
    /// guest's PAT says.
    pub const DEVICE: Self = Self {
        permissions: Permissions::READ_WRITE,
        memory_type: MemoryType::Uncacheable,
        ignore_pat: true,
    };

    /// Bits 6:0 of a leaf with these attributes.
    pub(crate) const fn leaf_bits(self) -> u64 {
        self.permissions.bits()
            | ((self.memory_type as u64) << MEMORY_TYPE_SHIFT)
            | if self.ignore_pat { IGNORE_PAT } else { 0 }
    }

    /// The attributes of a leaf, if its memory type is not reserved.
    pub(crate) const fn from_leaf(entry: u64) -> Result<Self, ReservedMemoryType> {
        match MemoryType::from_bits((entry & MEMORY_TYPE_MASK) >> MEMORY_TYPE_SHIFT) {
            Ok(memory_type) => Ok(Self {
                permissions: Permissions::from_entry(entry),
                memory_type,
                ignore_pat: entry & IGNORE_PAT != 0,
            }),
            Err(e) => Err(e),
        }
    }
}

/// Whether an entry is present (any of bits 2:0 set).
pub(crate) const fn is_present(entry: u64) -> bool {
    entry & PERMISSION_MASK != 0
}

/// Whether a present entry at `level` maps a page (rather than a table).
pub(crate) const fn is_leaf(entry: u64, level: u8) -> bool {
    level == 1 || entry & LARGE_PAGE != 0
}

/// Bytes mapped by one entry at `level` (1 = PTE ... 4 = PML4E).
pub(crate) const fn entry_span(level: u8) -> u64 {
    1u64 << (12 + 9 * (level as u32 - 1))
}

/// The index of `gpa`'s entry in its table at `level`.
pub(crate) const fn entry_index(gpa: u64, level: u8) -> usize {
    ((gpa >> (12 + 9 * (level as u32 - 1))) & 0x1ff) as usize
}

/// Why an EPT entry would make the processor report an EPT misconfiguration
/// (SDM 29.3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misconfiguration {
    /// Bit 1 (write) set with bit 0 (read) clear.
    WriteWithoutRead,
    /// Execute-only without the execute-only capability.
    ExecuteOnlyUnsupported,
    /// A leaf's memory type is 2, 3 or 7.
    ReservedMemoryType(u64),
    /// Bit 7 set in a PML4E, or in a PDE/PDPTE whose page size is not supported.
    UnsupportedLargePage,
    /// Bits 7:3 of an entry that references a table are not zero.
    TableReservedBits(u64),
    /// Address bits at or above the physical-address width, or below the page
    /// size of a large page, are set.
    AddressReservedBits(u64),
}

/// Checks one present entry at `level` against the SDM's misconfiguration
/// rules. Not-present entries are never misconfigured.
pub(crate) fn check_entry(
    entry: u64,
    level: u8,
    caps: &EptCapabilities,
) -> Result<(), Misconfiguration> {
    if !is_present(entry) {
        return Ok(());
    }
    if entry & WRITE != 0 && entry & READ == 0 {
        return Err(Misconfiguration::WriteWithoutRead);
    }
    if entry & PERMISSION_MASK == EXECUTE && !caps.execute_only {
        return Err(Misconfiguration::ExecuteOnlyUnsupported);
    }
    let above_width = ADDRESS_MASK & !(caps.host_physical_limit() - 1);
    if entry & above_width != 0 {
        return Err(Misconfiguration::AddressReservedBits(entry & above_width));
    }
    if level != 1 && entry & LARGE_PAGE == 0 {
        let reserved = entry & (0x1f << 3);
        if reserved != 0 {
            return Err(Misconfiguration::TableReservedBits(reserved));
        }
        return Ok(());
    }
    if level != 1 && !caps.leaf_allowed(level) {
        return Err(Misconfiguration::UnsupportedLargePage);
    }
    if let Err(ReservedMemoryType(t)) =
        MemoryType::from_bits((entry & MEMORY_TYPE_MASK) >> MEMORY_TYPE_SHIFT)
    {
        return Err(Misconfiguration::ReservedMemoryType(t));
    }
    let below_page = entry & ADDRESS_MASK & (entry_span(level) - 1);
    if below_page != 0 {
        return Err(Misconfiguration::AddressReservedBits(below_page));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_bits_follow_sdm_positions() {
        assert_eq!(Permissions::READ.bits(), 0b001);
        assert_eq!(Permissions::READ_WRITE.bits(), 0b011);
        assert_eq!(Permissions::ALL.bits(), 0b111);
        assert_eq!(Permissions::EXECUTE_ONLY.bits(), 0b100);
        assert_eq!(Permissions::from_entry(0b101), Permissions::READ_EXECUTE);
    }

    #[test]
    fn misconfiguring_permissions_are_refused() {
        let full = EptCapabilities::FULL;
        let minimal = EptCapabilities::MINIMAL;
        assert_eq!(
            Permissions::new(false, true, false).validate(&full),
            Err(PermissionError::WriteWithoutRead { execute: false })
        );
        assert_eq!(
            Permissions::new(false, true, true).validate(&full),
            Err(PermissionError::WriteWithoutRead { execute: true })
        );
        assert_eq!(
            Permissions::new(false, false, false).validate(&full),
            Err(PermissionError::NoAccess)
        );
        assert_eq!(Permissions::EXECUTE_ONLY.validate(&full), Ok(()));
        assert_eq!(
            Permissions::EXECUTE_ONLY.validate(&minimal),
            Err(PermissionError::ExecuteOnlyUnsupported)
        );
        assert_eq!(Permissions::READ_EXECUTE.validate(&minimal), Ok(()));
    }

    #[test]
    fn reserved_memory_types_have_no_encoding() {
        for reserved in [2, 3, 7] {
            assert_eq!(
                MemoryType::from_bits(reserved),
                Err(ReservedMemoryType(reserved))
            );
        }
        assert_eq!(MemoryType::from_bits(6), Ok(MemoryType::WriteBack));
        assert_eq!(MemoryType::from_bits(0), Ok(MemoryType::Uncacheable));
        // RAM leaf: RWX (7) | WB (6 << 3).
        assert_eq!(MappingAttributes::RAM.leaf_bits(), 0x37);
        // Device leaf: RW (3) | UC (0) | ignore PAT (1 << 6).
        assert_eq!(MappingAttributes::DEVICE.leaf_bits(), 0x43);
    }

    #[test]
    fn host_type_combination_follows_mtrr_precedence() {
        use MemoryType::*;
        assert_eq!(WriteBack.combined_with_host(Uncacheable), Uncacheable);
        assert_eq!(Uncacheable.combined_with_host(WriteBack), Uncacheable);
        assert_eq!(WriteBack.combined_with_host(WriteThrough), WriteThrough);
        assert_eq!(WriteBack.combined_with_host(WriteBack), WriteBack);
        assert_eq!(WriteCombining.combined_with_host(WriteBack), WriteCombining);
    }

    #[test]
    fn entry_checks_match_the_sdm_rules() {
        let caps = EptCapabilities {
            pages_1g: false,
            physical_address_bits: 40,
            ..EptCapabilities::FULL
        };
        // A 4 KiB WB RWX leaf.
        assert_eq!(check_entry(0x1000 | 0x37, 1, &caps), Ok(()));
        assert_eq!(check_entry(0, 1, &caps), Ok(()));
        assert_eq!(
            check_entry(0x1000 | 0x2 | (6 << 3), 1, &caps),
            Err(Misconfiguration::WriteWithoutRead)
        );
        assert_eq!(
            check_entry(0x1000 | 0x7 | (2 << 3), 1, &caps),
            Err(Misconfiguration::ReservedMemoryType(2))
        );
        assert_eq!(
            check_entry(0x1000 | 0x7 | (7 << 3), 1, &caps),
            Err(Misconfiguration::ReservedMemoryType(7))
        );
        // A table reference with a memory type in bits 5:3.
        assert_eq!(
            check_entry(0x2000 | 0x7 | (6 << 3), 4, &caps),
            Err(Misconfiguration::TableReservedBits(6 << 3))
        );
        // A 1 GiB page without the capability; a 512 GiB page never exists.
        assert_eq!(
            check_entry(0x4000_0000 | 0xb7, 3, &caps),
            Err(Misconfiguration::UnsupportedLargePage)
        );
        assert_eq!(
            check_entry(0xb7, 4, &caps),
            Err(Misconfiguration::UnsupportedLargePage)
        );
        // A 2 MiB page whose address is not 2 MiB aligned.
        assert_eq!(
            check_entry(0x20_1000 | 0xb7, 2, &caps),
            Err(Misconfiguration::AddressReservedBits(0x1000))
        );
        // An address beyond the 40-bit width.
        assert_eq!(
            check_entry((1 << 40) | 0x37, 1, &caps),
            Err(Misconfiguration::AddressReservedBits(1 << 40))
        );
    }
}
