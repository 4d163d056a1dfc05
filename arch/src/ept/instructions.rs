//! The EPT pointer and the TLB invalidation instructions INVEPT and INVVPID.
//!
//! The instructions are small `unsafe` functions: they fault (#UD) outside
//! VMX root operation, so only code that has executed VMXON may call them.
//! They build for the host but are never executed by the host tests.

use super::capabilities::EptCapabilities;

/// The 64-bit EPT pointer written to the VMCS (SDM 25.6.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Eptp(u64);

impl Eptp {
    /// Bits 2:0: memory type of the paging-structure accesses.
    pub const MEMORY_TYPE_MASK: u64 = 0x7;
    /// Bits 5:3: page-walk length minus one.
    pub const WALK_LENGTH_MASK: u64 = 0x7 << 3;
    /// Bit 6: accessed and dirty flags enabled.
    pub const ACCESSED_DIRTY: u64 = 1 << 6;
    /// Bits 51:12: the PML4 address.
    pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// The pointer to the PML4 at `pml4` for a 4-level walk, with write-back
    /// paging-structure accesses when supported (else uncacheable) and A/D
    /// flags when `caps` has them. `None` when `caps` has no 4-level walk or
    /// neither memory type, or `pml4` is unaligned or too wide.
    pub const fn new(pml4: u64, caps: &EptCapabilities) -> Option<Self> {
        let memory_type = if caps.memory_type_wb {
            6
        } else if caps.memory_type_uc {
            0
        } else {
            return None;
        };
        if !caps.walk_length_4
            || pml4 & !Self::ADDRESS_MASK != 0
            || pml4 >= caps.host_physical_limit()
        {
            return None;
        }
        let ad = if caps.accessed_dirty {
            Self::ACCESSED_DIRTY
        } else {
            0
        };
        Some(Self(pml4 | memory_type | (3 << 3) | ad))
    }

    /// A pointer with the given raw value.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw value for the VMCS field.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The PML4 address.
    pub const fn pml4(self) -> u64 {
        self.0 & Self::ADDRESS_MASK
    }

    /// Whether A/D flags are enabled.
    pub const fn accessed_dirty(self) -> bool {
        self.0 & Self::ACCESSED_DIRTY != 0
    }
}

/// What an INVEPT invalidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InveptKind {
    /// Type 1: translations derived from this EPT pointer.
    SingleContext(Eptp),
    /// Type 2: translations derived from every EPT pointer.
    AllContexts,
}

/// What an INVVPID invalidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvvpidKind {
    /// Type 0: the mappings of one linear address for one VPID.
    IndividualAddress {
        /// The VPID (not 0).
        vpid: u16,
        /// The linear address.
        linear_address: u64,
    },
    /// Type 1: every mapping of one VPID.
    SingleContext {
        /// The VPID (not 0).
        vpid: u16,
    },
    /// Type 2: every mapping of every VPID except 0.
    AllContexts,
    /// Type 3: every non-global mapping of one VPID.
    SingleContextRetainingGlobals {
        /// The VPID (not 0).
        vpid: u16,
    },
}

/// Why an invalidation instruction was not executed or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidationError {
    /// The capabilities do not offer this type.
    Unsupported,
    /// The instruction failed (VMfailInvalid or VMfailValid; the VM-instruction
    /// error field of the current VMCS, if any, says why).
    Failed,
}

impl InveptKind {
    /// The type operand and the 128-bit descriptor.
    pub const fn operands(self) -> (u64, [u64; 2]) {
        match self {
            Self::SingleContext(eptp) => (1, [eptp.bits(), 0]),
            Self::AllContexts => (2, [0, 0]),
        }
    }

    /// Whether `caps` allow this type.
    pub const fn supported(self, caps: &EptCapabilities) -> bool {
        match self {
            Self::SingleContext(_) => caps.invept_single_context,
            Self::AllContexts => caps.invept_all_context,
        }
    }
}

impl InvvpidKind {
    /// The type operand and the 128-bit descriptor (VPID in bits 15:0,
    /// linear address in bits 127:64).
    pub const fn operands(self) -> (u64, [u64; 2]) {
        match self {
            Self::IndividualAddress {
                vpid,
                linear_address,
            } => (0, [vpid as u64, linear_address]),
            Self::SingleContext { vpid } => (1, [vpid as u64, 0]),
            Self::AllContexts => (2, [0, 0]),
            Self::SingleContextRetainingGlobals { vpid } => (3, [vpid as u64, 0]),
        }
    }

    /// Whether `caps` allow this type.
    pub const fn supported(self, caps: &EptCapabilities) -> bool {
        match self {
            Self::IndividualAddress { .. } => caps.invvpid_individual_address,
            Self::SingleContext { .. } => caps.invvpid_single_context,
            Self::AllContexts => caps.invvpid_all_context,
            Self::SingleContextRetainingGlobals { .. } => {
                caps.invvpid_single_context_retaining_globals
            }
        }
    }
}

/// Invalidates EPT-derived translations (INVEPT).
///
/// # Safety
/// The processor must be in VMX root operation (INVEPT raises #UD otherwise).
pub unsafe fn invept(kind: InveptKind, caps: &EptCapabilities) -> Result<(), InvalidationError> {
    if !kind.supported(caps) {
        return Err(InvalidationError::Unsupported);
    }
    let (kind, descriptor) = kind.operands();
    let ok: u8;
    // SAFETY: the caller guarantees VMX root operation; the type is one the
    // processor reports as supported; the descriptor is a live 16-byte local
    // the instruction only reads; failures are reported in CF/ZF, which
    // `seta` turns into `ok`.
    unsafe {
        core::arch::asm!(
            "invept {kind}, [{descriptor}]",
            "seta {ok}",
            kind = in(reg) kind,
            descriptor = in(reg) &descriptor,
            ok = out(reg_byte) ok,
            options(nostack, readonly),
        );
    }
    if ok != 0 {
        Ok(())
    } else {
        Err(InvalidationError::Failed)
    }
}

/// Invalidates VPID-tagged linear translations (INVVPID).
///
/// # Safety
/// The processor must be in VMX root operation (INVVPID raises #UD otherwise).
pub unsafe fn invvpid(kind: InvvpidKind, caps: &EptCapabilities) -> Result<(), InvalidationError> {
    if !kind.supported(caps) {
        return Err(InvalidationError::Unsupported);
    }
    let (kind, descriptor) = kind.operands();
    let ok: u8;
    // SAFETY: as for `invept`: VMX root operation is the caller's guarantee,
    // the type is supported, and the descriptor is a live local that is only
    // read; the outcome comes back through CF/ZF.
    unsafe {
        core::arch::asm!(
            "invvpid {kind}, [{descriptor}]",
            "seta {ok}",
            kind = in(reg) kind,
            descriptor = in(reg) &descriptor,
            ok = out(reg_byte) ok,
            options(nostack, readonly),
        );
    }
    if ok != 0 {
        Ok(())
    } else {
        Err(InvalidationError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eptp_fields_follow_the_sdm() {
        // WB (6) | walk length 4 encoded as 3 in bits 5:3 | A/D bit 6.
        let eptp = Eptp::new(0x1234_5000, &EptCapabilities::FULL).unwrap();
        assert_eq!(eptp.bits(), 0x1234_5000 | 6 | (3 << 3) | (1 << 6));
        assert_eq!(eptp.pml4(), 0x1234_5000);
        assert!(eptp.accessed_dirty());
        let uc_only = EptCapabilities {
            memory_type_wb: false,
            accessed_dirty: false,
            ..EptCapabilities::FULL
        };
        assert_eq!(
            Eptp::new(0x1000, &uc_only).unwrap().bits(),
            0x1000 | (3 << 3)
        );
        let none = EptCapabilities {
            memory_type_wb: false,
            memory_type_uc: false,
            ..EptCapabilities::FULL
        };
        assert_eq!(Eptp::new(0x1000, &none), None);
        assert_eq!(Eptp::new(0x1800, &EptCapabilities::FULL), None);
        assert_eq!(Eptp::new(1 << 46, &EptCapabilities::FULL), None);
        let no_walk4 = EptCapabilities {
            walk_length_4: false,
            ..EptCapabilities::FULL
        };
        assert_eq!(Eptp::new(0x1000, &no_walk4), None);
    }

    #[test]
    fn invalidation_operands_follow_the_sdm() {
        let eptp = Eptp::from_bits(0x5000 | 0x1e);
        assert_eq!(InveptKind::SingleContext(eptp).operands(), (1, [0x501e, 0]));
        assert_eq!(InveptKind::AllContexts.operands(), (2, [0, 0]));
        assert_eq!(
            InvvpidKind::IndividualAddress {
                vpid: 7,
                linear_address: 0xffff_8000_0000_1000
            }
            .operands(),
            (0, [7, 0xffff_8000_0000_1000])
        );
        assert_eq!(
            InvvpidKind::SingleContext { vpid: 3 }.operands(),
            (1, [3, 0])
        );
        assert_eq!(InvvpidKind::AllContexts.operands(), (2, [0, 0]));
        assert_eq!(
            InvvpidKind::SingleContextRetainingGlobals { vpid: 9 }.operands(),
            (3, [9, 0])
        );
        let caps = EptCapabilities::MINIMAL;
        assert!(!InveptKind::AllContexts.supported(&caps));
        // An unsupported type is refused before any instruction executes.
        // SAFETY: the function returns before executing INVEPT/INVVPID
        // because MINIMAL offers no invalidation type.
        unsafe {
            assert_eq!(
                invept(InveptKind::AllContexts, &caps),
                Err(InvalidationError::Unsupported)
            );
            assert_eq!(
                invvpid(InvvpidKind::AllContexts, &caps),
                Err(InvalidationError::Unsupported)
            );
        }
    }
}
