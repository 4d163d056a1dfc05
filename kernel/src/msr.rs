//! Model-specific registers the hypervisor emulates in software.
//!
//! MSRs fall in three groups. Those the VMCS holds (EFER, PAT, SYSENTER_*,
//! FS/GS base, DEBUGCTL) and those the host never uses (STAR, LSTAR, CSTAR,
//! SFMASK, KERNEL_GS_BASE, TSC_AUX) pass straight through the MSR bitmap.
//! Those owned by a device model (APIC base, x2APIC, TSC deadline) or a
//! hypervisor interface (Hyper-V, Xen) are routed there by the exit dispatch.
//! The rest, answered here by [`VirtualMsrs`], are what a guest kernel reads
//! or writes while identifying and setting up the processor: MTRRs,
//! MISC_ENABLE, FEATURE_CONTROL, the microcode revision, the TSC. Anything
//! else raises #GP, as an absent MSR does on hardware; so do writes of
//! reserved bits.

/// The guest must receive #GP(0) for this access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneralProtection {
    /// The MSR accessed.
    pub msr: u32,
    /// The value written, for writes.
    pub written: Option<u64>,
}

/// IA32_TIME_STAMP_COUNTER.
pub const IA32_TSC: u32 = 0x10;
/// IA32_FEATURE_CONTROL.
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// IA32_BIOS_SIGN_ID (microcode revision).
pub const IA32_BIOS_SIGN_ID: u32 = 0x8B;
/// IA32_MTRRCAP.
pub const IA32_MTRRCAP: u32 = 0xFE;
/// IA32_MISC_ENABLE.
pub const IA32_MISC_ENABLE: u32 = 0x1A0;
/// IA32_MTRR_DEF_TYPE.
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
/// First variable-range MTRR (IA32_MTRR_PHYSBASE0).
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
/// Number of variable-range MTRR pairs offered.
pub const VARIABLE_MTRRS: usize = 8;
/// The fixed-range MTRRs, in the order of [`VirtualMsrs`]' storage.
pub const FIXED_MTRRS: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,
];

/// MISC_ENABLE as guests see it: fast strings (bit 0) and BTS/PEBS
/// unavailable (bits 11, 12), as with no performance monitoring.
const MISC_ENABLE_VALUE: u64 = (1 << 0) | (1 << 11) | (1 << 12);
/// FEATURE_CONTROL: locked, VMX not enabled (no nested virtualization).
const FEATURE_CONTROL_VALUE: u64 = 1;
/// MTRRCAP: 8 variable ranges, fixed ranges, write-combining.
const MTRRCAP_VALUE: u64 = VARIABLE_MTRRS as u64 | (1 << 8) | (1 << 10);

/// The state of software-emulated MSRs of one vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualMsrs {
    physical_address_bits: u8,
    mtrr_def_type: u64,
    variable_mtrrs: [u64; 2 * VARIABLE_MTRRS],
    fixed_mtrrs: [u64; FIXED_MTRRS.len()],
    misc_enable: u64,
}

/// What a write to IA32_TSC asks of the hypervisor: make the guest's TSC
/// read `value` now (the dispatch turns it into a TSC offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrWrite {
    /// The write was absorbed.
    Done,
    /// The guest set its TSC to this value.
    SetTsc(u64),
}

/// Whether `memory_type` is one MTRRs may hold (UC 0, WC 1, WT 4, WP 5, WB 6).
const fn valid_memory_type(memory_type: u64) -> bool {
    matches!(memory_type, 0 | 1 | 4 | 5 | 6)
}

impl VirtualMsrs {
    /// MSRs of a processor with `physical_address_bits` (CPUID 0x80000008
    /// EAX bits 7:0) of physical address, MTRRs disabled as at reset.
    pub fn new(physical_address_bits: u8) -> Self {
        Self {
            physical_address_bits: physical_address_bits.clamp(32, 52),
            mtrr_def_type: 0,
            variable_mtrrs: [0; 2 * VARIABLE_MTRRS],
            fixed_mtrrs: [0; FIXED_MTRRS.len()],
            misc_enable: MISC_ENABLE_VALUE,
        }
    }

    fn physical_mask(&self) -> u64 {
        ((1u64 << self.physical_address_bits) - 1) & !0xFFF
    }

    /// Whether this module answers `msr`.
    pub fn handles(msr: u32) -> bool {
        matches!(
            msr,
            IA32_TSC
                | IA32_FEATURE_CONTROL
                | IA32_BIOS_SIGN_ID
                | IA32_MTRRCAP
                | IA32_MISC_ENABLE
                | IA32_MTRR_DEF_TYPE
        ) || Self::variable_index(msr).is_some()
            || FIXED_MTRRS.contains(&msr)
    }

    fn variable_index(msr: u32) -> Option<usize> {
        let index = msr.checked_sub(IA32_MTRR_PHYSBASE0)? as usize;
        (index < 2 * VARIABLE_MTRRS).then_some(index)
    }

    /// RDMSR; `tsc` is the guest's current TSC.
    pub fn read(&self, msr: u32, tsc: u64) -> Result<u64, GeneralProtection> {
        Ok(match msr {
            IA32_TSC => tsc,
            IA32_FEATURE_CONTROL => FEATURE_CONTROL_VALUE,
            IA32_BIOS_SIGN_ID => 0,
            IA32_MTRRCAP => MTRRCAP_VALUE,
            IA32_MISC_ENABLE => self.misc_enable,
            IA32_MTRR_DEF_TYPE => self.mtrr_def_type,
            _ => {
                let mtrr = match Self::variable_index(msr) {
                    Some(i) => self.variable_mtrrs.get(i),
                    None => FIXED_MTRRS
                        .iter()
                        .position(|&m| m == msr)
                        .and_then(|i| self.fixed_mtrrs.get(i)),
                };
                match mtrr {
                    Some(&value) => value,
                    None => return Err(GeneralProtection { msr, written: None }),
                }
            }
        })
    }

    /// WRMSR of `value`.
    pub fn write(&mut self, msr: u32, value: u64) -> Result<MsrWrite, GeneralProtection> {
        let gp = Err(GeneralProtection {
            msr,
            written: Some(value),
        });
        match msr {
            IA32_TSC => return Ok(MsrWrite::SetTsc(value)),
            // Writing a microcode update trigger, or any value, is absorbed.
            IA32_BIOS_SIGN_ID => {}
            IA32_FEATURE_CONTROL | IA32_MTRRCAP => return gp,
            IA32_MISC_ENABLE => {
                // Only fast strings may change; the rest reads as fixed.
                if (value ^ self.misc_enable) & !1 != 0 {
                    return gp;
                }
                self.misc_enable = value;
            }
            IA32_MTRR_DEF_TYPE => {
                // Type in 7:0, FE bit 10, E bit 11; the rest reserved.
                if value & !0xCFF != 0 || !valid_memory_type(value & 0xFF) {
                    return gp;
                }
                self.mtrr_def_type = value;
            }
            _ => {
                if let Some(i) = Self::variable_index(msr) {
                    let reserved = if i % 2 == 0 {
                        // PHYSBASE: type in 7:0, base in MAXPHYADDR-1:12.
                        !(self.physical_mask() | 0xFF)
                    } else {
                        // PHYSMASK: valid bit 11, mask in MAXPHYADDR-1:12.
                        !(self.physical_mask() | (1 << 11))
                    };
                    if value & reserved != 0 || (i % 2 == 0 && !valid_memory_type(value & 0xFF)) {
                        return gp;
                    }
                    let Some(slot) = self.variable_mtrrs.get_mut(i) else {
                        return gp;
                    };
                    *slot = value;
                } else if let Some(i) = FIXED_MTRRS.iter().position(|&m| m == msr) {
                    if !value
                        .to_le_bytes()
                        .iter()
                        .all(|&t| valid_memory_type(u64::from(t)))
                    {
                        return gp;
                    }
                    let Some(slot) = self.fixed_mtrrs.get_mut(i) else {
                        return gp;
                    };
                    *slot = value;
                } else {
                    return gp;
                }
            }
        }
        Ok(MsrWrite::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identification_msrs_read_as_a_guest_expects() {
        let msrs = VirtualMsrs::new(39);
        assert_eq!(msrs.read(IA32_FEATURE_CONTROL, 0), Ok(1), "locked, VMX off");
        assert_eq!(msrs.read(IA32_MTRRCAP, 0).unwrap() & 0xFF, 8);
        assert_ne!(
            msrs.read(IA32_MTRRCAP, 0).unwrap() & (1 << 8),
            0,
            "fixed ranges"
        );
        assert_eq!(
            msrs.read(IA32_MISC_ENABLE, 0).unwrap() & 1,
            1,
            "fast strings"
        );
        assert_eq!(msrs.read(IA32_TSC, 12345), Ok(12345));
        assert_eq!(
            msrs.read(IA32_MTRR_DEF_TYPE, 0),
            Ok(0),
            "MTRRs disabled at reset"
        );
    }

    #[test]
    fn absent_msrs_and_read_only_writes_raise_gp() {
        let mut msrs = VirtualMsrs::new(39);
        assert_eq!(
            msrs.read(0x12345, 0),
            Err(GeneralProtection {
                msr: 0x12345,
                written: None
            })
        );
        assert!(msrs.write(IA32_FEATURE_CONTROL, 5).is_err());
        assert!(msrs.write(IA32_MTRRCAP, 0).is_err());
        assert!(msrs
            .write(IA32_MISC_ENABLE, MISC_ENABLE_VALUE | (1 << 22))
            .is_err());
        assert_eq!(
            msrs.write(IA32_MISC_ENABLE, MISC_ENABLE_VALUE & !1),
            Ok(MsrWrite::Done)
        );
        assert_eq!(msrs.read(IA32_MISC_ENABLE, 0).unwrap() & 1, 0);
        assert!(!VirtualMsrs::handles(0x12345));
        assert!(VirtualMsrs::handles(0x20F) && !VirtualMsrs::handles(0x210));
    }

    #[test]
    fn mtrr_writes_check_types_and_reserved_bits() {
        let mut msrs = VirtualMsrs::new(36);
        // Enable, fixed enable, default write-back.
        assert_eq!(msrs.write(IA32_MTRR_DEF_TYPE, 0xC06), Ok(MsrWrite::Done));
        assert_eq!(msrs.read(IA32_MTRR_DEF_TYPE, 0), Ok(0xC06));
        assert!(
            msrs.write(IA32_MTRR_DEF_TYPE, 0xC02).is_err(),
            "type 2 is reserved"
        );
        assert!(
            msrs.write(IA32_MTRR_DEF_TYPE, 0x1C06).is_err(),
            "bit 12 is reserved"
        );
        // PHYSBASE0: 0xF000_0000 uncacheable; PHYSMASK0 256 MiB, valid.
        assert_eq!(msrs.write(0x200, 0xF000_0000), Ok(MsrWrite::Done));
        assert_eq!(msrs.write(0x201, 0xF_F000_0800), Ok(MsrWrite::Done));
        assert_eq!(msrs.read(0x201, 0), Ok(0xF_F000_0800));
        assert!(
            msrs.write(0x200, 0x10_0000_0000).is_err(),
            "beyond 36 physical bits"
        );
        assert!(
            msrs.write(0x200, 0xF000_0007).is_err(),
            "type 7 is reserved"
        );
        assert!(
            msrs.write(0x201, 0xF_F000_0400).is_err(),
            "bit 10 of a mask is reserved"
        );
        // Fixed range: eight type bytes.
        assert_eq!(msrs.write(0x250, 0x0606_0606_0606_0606), Ok(MsrWrite::Done));
        assert!(msrs.write(0x258, 0x0606_0606_0606_0603).is_err());
        assert_eq!(msrs.read(0x250, 0), Ok(0x0606_0606_0606_0606));
    }

    #[test]
    fn tsc_writes_are_handed_to_the_dispatch() {
        let mut msrs = VirtualMsrs::new(39);
        assert_eq!(msrs.write(IA32_TSC, 77), Ok(MsrWrite::SetTsc(77)));
    }
}
