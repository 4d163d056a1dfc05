//! VMX capability MSRs (IA32_VMX_BASIC .. IA32_VMX_VMFUNC, 0x480-0x491) and
//! IA32_FEATURE_CONTROL, decoded into [`VmxCapabilities`].
//!
//! [`RawVmxMsrs`] holds the raw values, read from the CPU or parsed from a
//! recording (`<msr hex> <value hex>` per line), so decoding and everything
//! built on it runs on the host against recorded CPU models.

/// IA32_FEATURE_CONTROL.
pub const MSR_FEATURE_CONTROL: u32 = 0x3a;
/// IA32_VMX_BASIC, the first VMX capability MSR.
pub const MSR_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_VMFUNC, the last VMX capability MSR this module reads.
pub const MSR_VMX_VMFUNC: u32 = 0x491;
const VMX_MSR_COUNT: usize = (MSR_VMX_VMFUNC - MSR_VMX_BASIC + 1) as usize;

/// Raw values of the VMX capability MSRs 0x480..=0x491, and which of them the
/// CPU implements (reading one it does not would fault).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawVmxMsrs {
    /// Values indexed by `msr - 0x480`; 0 where the MSR is absent.
    pub values: [u64; VMX_MSR_COUNT],
    /// Bit `msr - 0x480` set: the MSR is implemented (or recorded).
    pub present: u32,
    /// Physical-address width in bits (CPUID 0x8000_0008 EAX bits 7:0).
    pub phys_addr_bits: u8,
}

/// A recording line that is not `<msr hex> <value hex>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordingError {
    /// 1-based line number.
    pub line: usize,
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

impl RawVmxMsrs {
    /// Physical-address width assumed for recordings that carry none.
    pub const DEFAULT_PHYS_ADDR_BITS: u8 = 40;

    /// The raw value of `msr`, if recorded/implemented.
    pub fn get(&self, msr: u32) -> Option<u64> {
        let index = msr.checked_sub(MSR_VMX_BASIC)?;
        let value = *self.values.get(index as usize)?;
        (self.present & (1 << index) != 0).then_some(value)
    }

    /// The raw value slot of `msr`, whether or not the MSR is present: for
    /// fields whose MSR was checked present (optional ones go through
    /// [`RawVmxMsrs::get`]).
    fn value(&self, msr: u32) -> u64 {
        msr.checked_sub(MSR_VMX_BASIC)
            .and_then(|i| self.values.get(i as usize))
            .map_or(0, |&v| v)
    }

    /// Sets the raw value of a VMX capability MSR (ignored outside 0x480..=0x491).
    pub fn set(&mut self, msr: u32, value: u64) {
        if let Some(index) = msr.checked_sub(MSR_VMX_BASIC) {
            if let Some(slot) = self.values.get_mut(index as usize) {
                *slot = value;
                self.present |= 1 << index;
            }
        }
    }

    /// Parses a recording: one `<msr hex> <value hex>` pair per line; blank
    /// lines and text after `#` are ignored, as are MSRs outside 0x480..=0x491.
    /// A line `phys_addr_bits <decimal>` sets the physical-address width.
    pub fn parse(text: &str) -> Result<Self, RecordingError> {
        let mut raw = RawVmxMsrs {
            phys_addr_bits: Self::DEFAULT_PHYS_ADDR_BITS,
            ..Default::default()
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = RecordingError { line: i + 1 };
            let mut words = line.split_whitespace();
            let (key, value) = (words.next().ok_or(err)?, words.next().ok_or(err)?);
            if words.next().is_some() {
                return Err(err);
            }
            if key == "phys_addr_bits" {
                raw.phys_addr_bits = value.parse().map_err(|_| err)?;
                continue;
            }
            let msr = parse_hex(key)
                .and_then(|m| u32::try_from(m).ok())
                .ok_or(err)?;
            raw.set(msr, parse_hex(value).ok_or(err)?);
        }
        Ok(raw)
    }

    /// Reads the VMX capability MSRs of the running CPU, skipping those its
    /// other capabilities say are absent.
    ///
    /// # Safety
    /// Must run at CPL 0 on a CPU that reports VMX in CPUID.1:ECX bit 5.
    pub unsafe fn read_current_cpu() -> Self {
        let mut raw = RawVmxMsrs::default();
        // SAFETY: the caller guarantees CPL 0 and VMX; 0x480-0x48a exist on
        // every VMX CPU.
        let rd = |m| unsafe { super::hw::rdmsr(m) };
        for msr in 0x480..=0x48a {
            raw.set(msr, rd(msr));
        }
        let basic = rd(0x480);
        let proc = rd(0x482);
        if basic & (1 << 55) != 0 {
            for msr in 0x48d..=0x490 {
                raw.set(msr, rd(msr));
            }
        }
        if proc & (1 << 63) != 0 {
            let proc2 = rd(0x48b);
            raw.set(0x48b, proc2);
            // EPT (bit 1) or VPID (bit 5) allowed: IA32_VMX_EPT_VPID_CAP exists.
            if proc2 & (0x22 << 32) != 0 {
                raw.set(0x48c, rd(0x48c));
            }
            if proc2 & (1 << (32 + 13)) != 0 {
                raw.set(0x491, rd(0x491));
            }
        }
        raw.phys_addr_bits = super::hw::phys_addr_bits();
        raw
    }
}

/// Decoded IA32_VMX_BASIC (0x480).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic {
    /// VMCS revision identifier (bits 30:0), written to VMXON and VMCS regions.
    pub revision_id: u32,
    /// Bytes to allocate for VMXON and VMCS regions (bits 44:32).
    pub region_size: u16,
    /// Region and bitmap addresses limited to 32 bits (bit 48).
    pub addresses_32bit: bool,
    /// Dual-monitor treatment of SMIs and SMM supported (bit 49).
    pub dual_monitor: bool,
    /// Memory type for VMCS accesses (bits 53:50; 0 UC, 6 WB).
    pub memory_type: u8,
    /// INS/OUTS exits report VM-exit instruction information (bit 54).
    pub ins_outs_info: bool,
    /// The TRUE_ control MSRs (0x48D-0x490) apply (bit 55).
    pub true_controls: bool,
    /// Hardware exceptions may be injected with or without error code (bit 56).
    pub no_error_code_consistency: bool,
}

/// Allowed settings of a 32-bit control field, from one capability MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedBits {
    /// Bits that must be 1 (the MSR's allowed 0-settings, bits 31:0).
    pub must_be_one: u32,
    /// Bits that may be 1 (the MSR's allowed 1-settings, bits 63:32).
    pub may_be_one: u32,
}

impl AllowedBits {
    /// Splits a control capability MSR value.
    pub const fn from_msr(value: u64) -> Self {
        AllowedBits {
            must_be_one: value as u32,
            may_be_one: (value >> 32) as u32,
        }
    }
    /// Bits of `value` that violate these settings.
    pub const fn violations(self, value: u32) -> u32 {
        (!value & self.must_be_one) | (value & !self.may_be_one)
    }
    /// Whether `bit` may be set.
    pub const fn allows(self, bit: u32) -> bool {
        self.may_be_one & bit != 0
    }
}

/// A control field's capability MSR and, when IA32_VMX_BASIC bit 55 is set,
/// its TRUE_ variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlCaps {
    /// The legacy MSR (default1 bits reported as must-be-one).
    pub legacy: AllowedBits,
    /// The TRUE_ MSR, if the CPU has it.
    pub true_: Option<AllowedBits>,
}

impl ControlCaps {
    /// The settings VM entry checks: TRUE_ when present, else legacy.
    pub fn effective(&self) -> AllowedBits {
        self.true_.unwrap_or(self.legacy)
    }
}

/// Decoded IA32_VMX_MISC (0x485).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxMisc {
    /// The preemption timer counts down once per 2^rate TSC ticks (bits 4:0).
    pub preemption_timer_rate: u8,
    /// VM exits store EFER.LMA into the IA-32e mode guest entry control (bit 5).
    pub stores_lma: bool,
    /// Activity state HLT supported (bit 6).
    pub activity_hlt: bool,
    /// Activity state shutdown supported (bit 7).
    pub activity_shutdown: bool,
    /// Activity state wait-for-SIPI supported (bit 8).
    pub activity_wait_for_sipi: bool,
    /// Intel PT usable in VMX operation (bit 14).
    pub intel_pt: bool,
    /// RDMSR of IA32_SMBASE in SMM supported (bit 15).
    pub smbase_rdmsr: bool,
    /// Number of CR3-target values supported (bits 24:16).
    pub cr3_targets: u16,
    /// Recommended maximum MSRs in each MSR list (512 * (bits 27:25 + 1)).
    pub max_msr_list: u32,
    /// SMM monitor control bit 2 may be set (bit 28).
    pub smm_blocks_smi: bool,
    /// VMWRITE may write any field, including exit information (bit 29).
    pub vmwrite_any_field: bool,
    /// Zero-length instruction injection allowed (bit 30).
    pub zero_length_injection: bool,
    /// MSEG revision identifier (bits 63:32).
    pub mseg_revision: u32,
}

/// Fixed bits of CR0 or CR4 in VMX operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedBits {
    /// Bits that must be 1 (IA32_VMX_CRx_FIXED0).
    pub fixed0: u64,
    /// Bits that may be 1 (IA32_VMX_CRx_FIXED1); clear bits must be 0.
    pub fixed1: u64,
}

impl FixedBits {
    /// `value` with the must-be-one bits set and the must-be-zero bits cleared.
    pub const fn apply(self, value: u64) -> u64 {
        (value | self.fixed0) & self.fixed1
    }
    /// Bits of `value` that violate the fixed settings.
    pub const fn violations(self, value: u64) -> u64 {
        (!value & self.fixed0) | (value & !self.fixed1)
    }
}

/// Decoded IA32_VMX_EPT_VPID_CAP (0x48C).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EptVpidCaps(pub u64);

macro_rules! cap_bits {
    ($($(#[$m:meta])* $name:ident = $bit:expr;)*) => {
        impl EptVpidCaps { $( $(#[$m])* pub const fn $name(self) -> bool { self.0 & (1 << $bit) != 0 } )* }
    };
}
cap_bits! {
    /// EPT entries may be execute-only (bit 0).
    execute_only = 0;
    /// Page-walk length 4 supported (bit 6).
    walk_length_4 = 6;
    /// Page-walk length 5 supported (bit 7).
    walk_length_5 = 7;
    /// EPT paging-structure memory type UC allowed (bit 8).
    memory_type_uc = 8;
    /// EPT paging-structure memory type WB allowed (bit 14).
    memory_type_wb = 14;
    /// 2-MByte EPT pages (bit 16).
    pages_2m = 16;
    /// 1-GByte EPT pages (bit 17).
    pages_1g = 17;
    /// INVEPT supported (bit 20).
    invept = 20;
    /// EPT accessed and dirty flags (bit 21).
    accessed_dirty = 21;
    /// Advanced VM-exit information for EPT violations (bit 22).
    advanced_violation_info = 22;
    /// Supervisor shadow-stack control (bit 23).
    supervisor_shadow_stack = 23;
    /// Single-context INVEPT (bit 25).
    invept_single_context = 25;
    /// All-context INVEPT (bit 26).
    invept_all_context = 26;
    /// INVVPID supported (bit 32).
    invvpid = 32;
    /// Individual-address INVVPID (bit 40).
    invvpid_individual_address = 40;
    /// Single-context INVVPID (bit 41).
    invvpid_single_context = 41;
    /// All-context INVVPID (bit 42).
    invvpid_all_context = 42;
    /// Single-context-retaining-globals INVVPID (bit 43).
    invvpid_single_context_retaining_globals = 43;
}

/// Everything the VMX capability MSRs say about the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxCapabilities {
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// Pin-based controls (0x481 / TRUE 0x48D).
    pub pin: ControlCaps,
    /// Primary processor-based controls (0x482 / TRUE 0x48E).
    pub proc: ControlCaps,
    /// Secondary processor-based controls (0x48B); all zero when absent.
    pub proc2: AllowedBits,
    /// VM-exit controls (0x483 / TRUE 0x48F).
    pub exit: ControlCaps,
    /// VM-entry controls (0x484 / TRUE 0x490).
    pub entry: ControlCaps,
    /// IA32_VMX_MISC.
    pub misc: VmxMisc,
    /// CR0 fixed bits (0x486, 0x487).
    pub cr0: FixedBits,
    /// CR4 fixed bits (0x488, 0x489).
    pub cr4: FixedBits,
    /// Highest VMCS field index (IA32_VMX_VMCS_ENUM bits 9:1).
    pub max_vmcs_index: u16,
    /// EPT and VPID capabilities (zero when absent).
    pub ept_vpid: EptVpidCaps,
    /// Allowed VM functions (IA32_VMX_VMFUNC; zero when absent).
    pub vmfunc: u64,
    /// Physical-address width in bits.
    pub phys_addr_bits: u8,
}

/// A capability MSR every VMX CPU implements is missing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingMsr(pub u32);

impl VmxCapabilities {
    /// Decodes raw MSR values; 0x480-0x48A are mandatory, and the TRUE_
    /// controls 0x48D-0x490 when IA32_VMX_BASIC bit 55 announces them.
    pub fn decode(raw: &RawVmxMsrs) -> Result<Self, MissingMsr> {
        let basic = raw.get(MSR_VMX_BASIC).ok_or(MissingMsr(MSR_VMX_BASIC))?;
        let true_controls = basic & (1 << 55) != 0;
        // Every mandatory MSR is checked once, up front, so the fields below
        // read plain values: 0x480-0x48A always, the TRUE_ controls
        // 0x48D-0x490 when IA32_VMX_BASIC says they apply. The lowest
        // missing one is reported.
        let mandatory: u32 = 0x7ff | if true_controls { 0xf << 13 } else { 0 };
        let missing = mandatory & !raw.present;
        if missing != 0 {
            return Err(MissingMsr(MSR_VMX_BASIC + missing.trailing_zeros()));
        }
        let value = |m| raw.value(m);
        let optional = |m| raw.get(m).unwrap_or(0);
        let control = |legacy: u32, tru: u32| ControlCaps {
            legacy: AllowedBits::from_msr(value(legacy)),
            true_: true_controls.then(|| AllowedBits::from_msr(value(tru))),
        };
        let pin = control(0x481, 0x48d);
        let proc = control(0x482, 0x48e);
        let proc2 = if proc.legacy.allows(1 << 31) {
            AllowedBits::from_msr(optional(0x48b))
        } else {
            AllowedBits::from_msr(0)
        };
        let misc = value(0x485);
        Ok(VmxCapabilities {
            basic: VmxBasic {
                revision_id: basic as u32 & 0x7fff_ffff,
                region_size: ((basic >> 32) & 0x1fff) as u16,
                addresses_32bit: basic & (1 << 48) != 0,
                dual_monitor: basic & (1 << 49) != 0,
                memory_type: ((basic >> 50) & 0xf) as u8,
                ins_outs_info: basic & (1 << 54) != 0,
                true_controls,
                no_error_code_consistency: basic & (1 << 56) != 0,
            },
            pin,
            proc,
            proc2,
            exit: control(0x483, 0x48f),
            entry: control(0x484, 0x490),
            misc: VmxMisc {
                preemption_timer_rate: (misc & 0x1f) as u8,
                stores_lma: misc & (1 << 5) != 0,
                activity_hlt: misc & (1 << 6) != 0,
                activity_shutdown: misc & (1 << 7) != 0,
                activity_wait_for_sipi: misc & (1 << 8) != 0,
                intel_pt: misc & (1 << 14) != 0,
                smbase_rdmsr: misc & (1 << 15) != 0,
                cr3_targets: ((misc >> 16) & 0x1ff) as u16,
                max_msr_list: 512 * (((misc >> 25) & 7) as u32 + 1),
                smm_blocks_smi: misc & (1 << 28) != 0,
                vmwrite_any_field: misc & (1 << 29) != 0,
                zero_length_injection: misc & (1 << 30) != 0,
                mseg_revision: (misc >> 32) as u32,
            },
            cr0: FixedBits {
                fixed0: value(0x486),
                fixed1: value(0x487),
            },
            cr4: FixedBits {
                fixed0: value(0x488),
                fixed1: value(0x489),
            },
            max_vmcs_index: ((value(0x48a) >> 1) & 0x1ff) as u16,
            ept_vpid: EptVpidCaps(optional(0x48c)),
            vmfunc: optional(0x491),
            phys_addr_bits: if basic & (1 << 48) != 0 {
                32
            } else {
                raw.phys_addr_bits
            },
        })
    }

    /// Whether the secondary control `bit` may be set (and secondary controls
    /// can be activated at all).
    pub fn proc2_allows(&self, bit: u32) -> bool {
        self.proc.effective().allows(1 << 31) && self.proc2.allows(bit)
    }
}

/// IA32_FEATURE_CONTROL forbids VMX outside SMX and is locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxDisabledByFirmware {
    /// The MSR's value.
    pub feature_control: u64,
}

/// What to do with IA32_FEATURE_CONTROL before VMXON: `Ok(None)` when VMX
/// outside SMX is already enabled and locked, `Ok(Some(v))` when `v` must be
/// written (unlocked MSR: lock bit 0 and VMX-outside-SMX bit 2 added).
pub fn feature_control_update(value: u64) -> Result<Option<u64>, VmxDisabledByFirmware> {
    const LOCK: u64 = 1;
    const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    match (value & LOCK != 0, value & VMX_OUTSIDE_SMX != 0) {
        (true, true) => Ok(None),
        (true, false) => Err(VmxDisabledByFirmware {
            feature_control: value,
        }),
        (false, _) => Ok(Some(value | LOCK | VMX_OUTSIDE_SMX)),
    }
}
