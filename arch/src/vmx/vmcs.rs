//! The typed VMCS: every field of SDM Vol. 3D Appendix B as an enum variant,
//! grouped by width and access; [`VmcsAccess`] with a hardware
//! implementation ([`ActiveVmcs`], VMREAD/VMWRITE) and an in-memory one
//! ([`MemVmcs`]) so all VMCS setup logic runs in host tests.

use super::caps::VmxCapabilities;

/// A VMCS field: its encoding and value type.
pub trait VmcsField: Copy {
    /// The field's value type (u16, u32 or u64).
    type Value: FieldValue;
    /// The SDM encoding.
    fn encoding(self) -> u32;
}

/// A field VMWRITE may write (all but the read-only exit-information fields).
pub trait WritableField: VmcsField {}

/// Conversion between a field's value type and the 64-bit VMREAD/VMWRITE operand.
pub trait FieldValue: Copy {
    /// Truncates a VMREAD result to the field's width.
    fn from_raw(raw: u64) -> Self;
    /// Widens to the VMWRITE operand.
    fn to_raw(self) -> u64;
}
impl FieldValue for u16 {
    fn from_raw(raw: u64) -> Self {
        raw as u16
    }
    fn to_raw(self) -> u64 {
        self as u64
    }
}
impl FieldValue for u32 {
    fn from_raw(raw: u64) -> Self {
        raw as u32
    }
    fn to_raw(self) -> u64 {
        self as u64
    }
}
impl FieldValue for u64 {
    fn from_raw(raw: u64) -> Self {
        raw
    }
    fn to_raw(self) -> u64 {
        self
    }
}

macro_rules! vmcs_fields {
    ($($(#[$m:meta])* $name:ident: $ty:ty, $access:ident { $($f:ident = $enc:literal,)* })*) => {$(
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name { $(#[doc = concat!("Encoding `", stringify!($enc), "`.")] $f = $enc,)* }
        impl $name {
            /// Every field of this group.
            pub const ALL: &'static [$name] = &[$($name::$f,)*];
        }
        impl VmcsField for $name {
            type Value = $ty;
            fn encoding(self) -> u32 { self as u32 }
        }
        vmcs_fields!(@$access $name);
    )*};
    (@rw $name:ident) => { impl WritableField for $name {} };
    (@ro $name:ident) => {};
}

vmcs_fields! {
    /// 16-bit control fields.
    Control16: u16, rw {
        Vpid = 0x0000, PostedInterruptNotificationVector = 0x0002, EptpIndex = 0x0004,
        HlatPrefixSize = 0x0006, LastPidPointerIndex = 0x0008,
    }
    /// 16-bit guest-state fields.
    Guest16: u16, rw {
        EsSelector = 0x0800, CsSelector = 0x0802, SsSelector = 0x0804, DsSelector = 0x0806,
        FsSelector = 0x0808, GsSelector = 0x080a, LdtrSelector = 0x080c, TrSelector = 0x080e,
        InterruptStatus = 0x0810, PmlIndex = 0x0812, UinvNotificationVector = 0x0814,
    }
    /// 16-bit host-state fields.
    Host16: u16, rw {
        EsSelector = 0x0c00, CsSelector = 0x0c02, SsSelector = 0x0c04, DsSelector = 0x0c06,
        FsSelector = 0x0c08, GsSelector = 0x0c0a, TrSelector = 0x0c0c,
    }
    /// 64-bit control fields.
    Control64: u64, rw {
        IoBitmapA = 0x2000, IoBitmapB = 0x2002, MsrBitmap = 0x2004, ExitMsrStoreAddress = 0x2006,
        ExitMsrLoadAddress = 0x2008, EntryMsrLoadAddress = 0x200a, ExecutiveVmcsPointer = 0x200c,
        PmlAddress = 0x200e, TscOffset = 0x2010, VirtualApicAddress = 0x2012,
        ApicAccessAddress = 0x2014, PostedInterruptDescriptor = 0x2016, VmFunctionControls = 0x2018,
        EptPointer = 0x201a, EoiExitBitmap0 = 0x201c, EoiExitBitmap1 = 0x201e,
        EoiExitBitmap2 = 0x2020, EoiExitBitmap3 = 0x2022, EptpListAddress = 0x2024,
        VmreadBitmap = 0x2026, VmwriteBitmap = 0x2028, VeInformationAddress = 0x202a,
        XssExitingBitmap = 0x202c, EnclsExitingBitmap = 0x202e, SppTablePointer = 0x2030,
        TscMultiplier = 0x2032, TertiaryProcControls = 0x2034, EnclvExitingBitmap = 0x2036,
        LowPasidDirectory = 0x2038, HighPasidDirectory = 0x203a, SharedEptPointer = 0x203c,
        PconfigExitingBitmap = 0x203e, HlatPointer = 0x2040, PidPointerTable = 0x2042,
        SecondaryExitControls = 0x2044, SpecCtrlMask = 0x204a, SpecCtrlShadow = 0x204c,
    }
    /// 64-bit read-only data fields.
    ReadOnly64: u64, ro { GuestPhysicalAddress = 0x2400, }
    /// 64-bit guest-state fields.
    Guest64: u64, rw {
        VmcsLinkPointer = 0x2800, Debugctl = 0x2802, Pat = 0x2804, Efer = 0x2806,
        PerfGlobalCtrl = 0x2808, Pdpte0 = 0x280a, Pdpte1 = 0x280c, Pdpte2 = 0x280e,
        Pdpte3 = 0x2810, Bndcfgs = 0x2812, RtitCtl = 0x2814, LbrCtl = 0x2816, Pkrs = 0x2818,
    }
    /// 64-bit host-state fields.
    Host64: u64, rw { Pat = 0x2c00, Efer = 0x2c02, PerfGlobalCtrl = 0x2c04, Pkrs = 0x2c06, }
    /// 32-bit control fields.
    Control32: u32, rw {
        PinBasedControls = 0x4000, ProcBasedControls = 0x4002, ExceptionBitmap = 0x4004,
        PageFaultErrorCodeMask = 0x4006, PageFaultErrorCodeMatch = 0x4008, Cr3TargetCount = 0x400a,
        ExitControls = 0x400c, ExitMsrStoreCount = 0x400e, ExitMsrLoadCount = 0x4010,
        EntryControls = 0x4012, EntryMsrLoadCount = 0x4014, EntryInterruptionInfo = 0x4016,
        EntryExceptionErrorCode = 0x4018, EntryInstructionLength = 0x401a, TprThreshold = 0x401c,
        ProcBasedControls2 = 0x401e, PleGap = 0x4020, PleWindow = 0x4022,
        InstructionTimeoutControl = 0x4024,
    }
    /// 32-bit read-only data fields.
    ReadOnly32: u32, ro {
        VmInstructionError = 0x4400, ExitReason = 0x4402, ExitInterruptionInfo = 0x4404,
        ExitInterruptionErrorCode = 0x4406, IdtVectoringInfo = 0x4408,
        IdtVectoringErrorCode = 0x440a, ExitInstructionLength = 0x440c,
        ExitInstructionInfo = 0x440e,
    }
    /// 32-bit guest-state fields.
    Guest32: u32, rw {
        EsLimit = 0x4800, CsLimit = 0x4802, SsLimit = 0x4804, DsLimit = 0x4806, FsLimit = 0x4808,
        GsLimit = 0x480a, LdtrLimit = 0x480c, TrLimit = 0x480e, GdtrLimit = 0x4810,
        IdtrLimit = 0x4812, EsAccessRights = 0x4814, CsAccessRights = 0x4816,
        SsAccessRights = 0x4818, DsAccessRights = 0x481a, FsAccessRights = 0x481c,
        GsAccessRights = 0x481e, LdtrAccessRights = 0x4820, TrAccessRights = 0x4822,
        InterruptibilityState = 0x4824, ActivityState = 0x4826, Smbase = 0x4828,
        SysenterCs = 0x482a, PreemptionTimerValue = 0x482e,
    }
    /// 32-bit host-state fields.
    Host32: u32, rw { SysenterCs = 0x4c00, }
    /// Natural-width control fields.
    ControlN: u64, rw {
        Cr0GuestHostMask = 0x6000, Cr4GuestHostMask = 0x6002, Cr0ReadShadow = 0x6004,
        Cr4ReadShadow = 0x6006, Cr3Target0 = 0x6008, Cr3Target1 = 0x600a, Cr3Target2 = 0x600c,
        Cr3Target3 = 0x600e,
    }
    /// Natural-width read-only data fields.
    ReadOnlyN: u64, ro {
        ExitQualification = 0x6400, IoRcx = 0x6402, IoRsi = 0x6404, IoRdi = 0x6406, IoRip = 0x6408,
        GuestLinearAddress = 0x640a,
    }
    /// Natural-width guest-state fields.
    GuestN: u64, rw {
        Cr0 = 0x6800, Cr3 = 0x6802, Cr4 = 0x6804, EsBase = 0x6806, CsBase = 0x6808,
        SsBase = 0x680a, DsBase = 0x680c, FsBase = 0x680e, GsBase = 0x6810, LdtrBase = 0x6812,
        TrBase = 0x6814, GdtrBase = 0x6816, IdtrBase = 0x6818, Dr7 = 0x681a, Rsp = 0x681c,
        Rip = 0x681e, Rflags = 0x6820, PendingDebugExceptions = 0x6822, SysenterEsp = 0x6824,
        SysenterEip = 0x6826, SCet = 0x6828, Ssp = 0x682a, InterruptSspTableAddress = 0x682c,
    }
    /// Natural-width host-state fields.
    HostN: u64, rw {
        Cr0 = 0x6c00, Cr3 = 0x6c02, Cr4 = 0x6c04, FsBase = 0x6c06, GsBase = 0x6c08,
        TrBase = 0x6c0a, GdtrBase = 0x6c0c, IdtrBase = 0x6c0e, SysenterEsp = 0x6c10,
        SysenterEip = 0x6c12, Rsp = 0x6c14, Rip = 0x6c16, SCet = 0x6c18, Ssp = 0x6c1a,
        InterruptSspTableAddress = 0x6c1c,
    }
}

macro_rules! instruction_errors {
    ($($name:ident = $n:literal: $doc:literal,)*) => {
        /// VM-instruction error numbers (VM_INSTRUCTION_ERROR field, SDM Vol. 3C 31.4).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum VmInstructionError {
            $(#[doc = $doc] $name,)*
            /// A number the SDM does not define.
            Reserved(u32),
        }
        impl VmInstructionError {
            /// Decodes the field's value.
            pub const fn from_number(n: u32) -> Self {
                match n { $($n => Self::$name,)* other => Self::Reserved(other) }
            }
            /// The field's value.
            pub const fn number(self) -> u32 {
                match self { $(Self::$name => $n,)* Self::Reserved(n) => n }
            }
            /// The SDM's description.
            pub const fn description(self) -> &'static str {
                match self { $(Self::$name => $doc,)* Self::Reserved(_) => "reserved error number" }
            }
        }
    };
}
instruction_errors! {
    VmcallInRoot = 1: "VMCALL executed in VMX root operation",
    VmclearInvalidAddress = 2: "VMCLEAR with invalid physical address",
    VmclearVmxonPointer = 3: "VMCLEAR with VMXON pointer",
    VmlaunchNonClear = 4: "VMLAUNCH with non-clear VMCS",
    VmresumeNonLaunched = 5: "VMRESUME with non-launched VMCS",
    VmresumeAfterVmxoff = 6: "VMRESUME after VMXOFF",
    EntryInvalidControls = 7: "VM entry with invalid control field(s)",
    EntryInvalidHostState = 8: "VM entry with invalid host-state field(s)",
    VmptrldInvalidAddress = 9: "VMPTRLD with invalid physical address",
    VmptrldVmxonPointer = 10: "VMPTRLD with VMXON pointer",
    VmptrldWrongRevision = 11: "VMPTRLD with incorrect VMCS revision identifier",
    UnsupportedComponent = 12: "VMREAD/VMWRITE from/to unsupported VMCS component",
    WriteReadOnlyComponent = 13: "VMWRITE to read-only VMCS component",
    VmxonInRoot = 15: "VMXON executed in VMX root operation",
    EntryInvalidExecutiveVmcs = 16: "VM entry with invalid executive-VMCS pointer",
    EntryNonLaunchedExecutiveVmcs = 17: "VM entry with non-launched executive VMCS",
    EntryExecutiveVmcsNotVmxon = 18: "VM entry with executive-VMCS pointer not VMXON pointer (when attempting to deactivate the dual-monitor treatment of SMIs and SMM)",
    VmcallNonClear = 19: "VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    VmcallInvalidExitControls = 20: "VMCALL with invalid VM-exit control fields",
    VmcallWrongMsegRevision = 22: "VMCALL with incorrect MSEG revision identifier (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    VmxoffDualMonitor = 23: "VMXOFF under dual-monitor treatment of SMIs and SMM",
    VmcallInvalidSmmMonitorFeatures = 24: "VMCALL with invalid SMM-monitor features (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    EntryInvalidExecutiveControls = 25: "VM entry with invalid VM-execution control fields in executive VMCS (when attempting to return from SMM)",
    EntryEventsBlockedByMovSs = 26: "VM entry with events blocked by MOV SS",
    InvalidInveptInvvpidOperand = 28: "Invalid operand to INVEPT/INVVPID",
}

/// A failed VMREAD/VMWRITE (or other VMX instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcsError {
    /// VMfailInvalid: no current VMCS.
    NoCurrentVmcs,
    /// VMfailValid with the VM-instruction error.
    Failed(VmInstructionError),
}

/// Raw access to a VMCS by encoding; the typed API is [`VmcsExt`].
pub trait VmcsAccess {
    /// VMREAD of `encoding`.
    fn read_encoding(&self, encoding: u32) -> Result<u64, VmcsError>;
    /// VMWRITE of `encoding`.
    fn write_encoding(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError>;
}

/// Typed reads and writes for every [`VmcsAccess`] (also `dyn VmcsAccess`).
pub trait VmcsExt: VmcsAccess {
    /// Reads a field.
    #[inline(always)]
    fn read<F: VmcsField>(&self, field: F) -> Result<F::Value, VmcsError> {
        self.read_encoding(field.encoding()).map(F::Value::from_raw)
    }
    /// Writes a writable field.
    #[inline(always)]
    fn write<F: WritableField>(&mut self, field: F, value: F::Value) -> Result<(), VmcsError> {
        self.write_encoding(field.encoding(), value.to_raw())
    }
    /// Read-modify-write: sets `set` bits and clears `clear` bits of a 32-bit field.
    fn update32<F: WritableField<Value = u32>>(
        &mut self,
        field: F,
        set: u32,
        clear: u32,
    ) -> Result<(), VmcsError> {
        let v = self.read(field)?;
        self.write(field, (v & !clear) | set)
    }
}
impl<T: VmcsAccess + ?Sized> VmcsExt for T {}

/// The width of the field with `encoding` (bits 14:13), in bits; 64 for natural width.
pub const fn field_width_bits(encoding: u32) -> u32 {
    match (encoding >> 13) & 3 {
        0 => 16,
        2 => 32,
        _ => 64,
    }
}

/// The current VMCS of this logical processor, accessed with VMREAD/VMWRITE.
/// Obtained from [`super::Vmcs::load`]; only meaningful on the CPU that loaded it.
#[derive(Debug)]
pub struct ActiveVmcs {
    /// Not `Send`: the VMCS is current on one logical processor only.
    _this_cpu: core::marker::PhantomData<*const ()>,
}

impl ActiveVmcs {
    /// # Safety
    /// VMX root operation with a current VMCS, on this CPU, for the value's lifetime.
    pub(crate) const unsafe fn assume_current() -> Self {
        ActiveVmcs {
            _this_cpu: core::marker::PhantomData,
        }
    }
}

#[cold]
#[inline(never)]
fn instruction_error() -> VmcsError {
    // SAFETY: only called after a VMX instruction failed in VMX root operation.
    match unsafe { super::hw::vmread(ReadOnly32::VmInstructionError as u32) } {
        Some(n) => VmcsError::Failed(VmInstructionError::from_number(n as u32)),
        None => VmcsError::NoCurrentVmcs,
    }
}

impl VmcsAccess for ActiveVmcs {
    #[inline(always)]
    fn read_encoding(&self, encoding: u32) -> Result<u64, VmcsError> {
        // SAFETY: an ActiveVmcs exists only while a VMCS is current.
        unsafe { super::hw::vmread(encoding) }.ok_or_else(instruction_error)
    }
    #[inline(always)]
    fn write_encoding(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError> {
        // SAFETY: an ActiveVmcs exists only while a VMCS is current.
        if unsafe { super::hw::vmwrite(encoding, value) } {
            Ok(())
        } else {
            Err(instruction_error())
        }
    }
}

/// Fields [`MemVmcs`] can hold at once.
pub const MEM_VMCS_CAPACITY: usize = 192;

/// A VMCS in ordinary memory for host tests: values truncated to the field
/// width; unknown fields read as 0. Like hardware, it refuses VMWRITE to
/// read-only fields and, when built [`MemVmcs::for_cpu`], to fields of
/// features the CPU lacks (error 12, e.g. EFER fields without the EFER
/// load/save controls).
#[derive(Clone, Debug, Default)]
pub struct MemVmcs {
    fields: heapless::Vec<(u32, u64), MEM_VMCS_CAPACITY>,
    absent: heapless::Vec<u32, 32>,
}

impl MemVmcs {
    /// An empty VMCS accepting every field.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty VMCS refusing fields the CPU described by `caps` lacks.
    pub fn for_cpu(caps: &VmxCapabilities) -> Self {
        let mut v = Self::default();
        let exit = caps.exit.effective();
        let entry = caps.entry.effective();
        use super::controls::{EntryControl as En, ExitControl as Ex};
        let absent: [(bool, u32); 8] = [
            (
                exit.allows(Ex::LoadEfer.bit()) || exit.allows(Ex::SaveEfer.bit()),
                Host64::Efer as u32,
            ),
            (
                entry.allows(En::LoadEfer.bit()) || exit.allows(Ex::SaveEfer.bit()),
                Guest64::Efer as u32,
            ),
            (exit.allows(Ex::LoadPat.bit()), Host64::Pat as u32),
            (
                entry.allows(En::LoadPat.bit()) || exit.allows(Ex::SavePat.bit()),
                Guest64::Pat as u32,
            ),
            (
                caps.pin.effective().allows(1 << 6),
                Guest32::PreemptionTimerValue as u32,
            ),
            (caps.proc2_allows(1 << 1), Control64::EptPointer as u32),
            (caps.proc2_allows(1 << 5), Control16::Vpid as u32),
            (
                exit.allows(Ex::LoadPerfGlobalCtrl.bit()),
                Host64::PerfGlobalCtrl as u32,
            ),
        ];
        for (supported, enc) in absent {
            if !supported {
                let _ = v.absent.push(enc);
            }
        }
        v
    }

    fn slot(&self, encoding: u32) -> Option<usize> {
        self.fields.iter().position(|&(e, _)| e == encoding)
    }

    /// Sets any field, read-only ones included (to model a VM exit).
    pub fn set(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError> {
        if self.absent.contains(&encoding) {
            return Err(VmcsError::Failed(VmInstructionError::UnsupportedComponent));
        }
        let width = field_width_bits(encoding);
        let value = if width == 64 {
            value
        } else {
            value & ((1 << width) - 1)
        };
        match self.slot(encoding) {
            Some(i) => self.fields[i].1 = value,
            None => self
                .fields
                .push((encoding, value))
                .map_err(|_| VmcsError::Failed(VmInstructionError::UnsupportedComponent))?,
        }
        Ok(())
    }
}

impl VmcsAccess for MemVmcs {
    fn read_encoding(&self, encoding: u32) -> Result<u64, VmcsError> {
        if self.absent.contains(&encoding) {
            return Err(VmcsError::Failed(VmInstructionError::UnsupportedComponent));
        }
        Ok(self.slot(encoding).map_or(0, |i| self.fields[i].1))
    }
    fn write_encoding(&mut self, encoding: u32, value: u64) -> Result<(), VmcsError> {
        // Bits 11:10 of the encoding give the type; 1 is read-only data.
        if (encoding >> 10) & 3 == 1 {
            return Err(VmcsError::Failed(
                VmInstructionError::WriteReadOnlyComponent,
            ));
        }
        self.set(encoding, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_the_sdm_layout() {
        // SDM B: bits 14:13 width (0 16-bit, 1 64-bit, 2 32-bit, 3 natural),
        // bits 11:10 type (0 control, 1 read-only, 2 guest, 3 host), bit 0 access type 0.
        fn check<F: VmcsField>(all: &[F], width: u32, ty: u32) {
            for f in all {
                let e = f.encoding();
                assert_eq!((e >> 13) & 3, width, "{e:#x} width");
                assert_eq!((e >> 10) & 3, ty, "{e:#x} type");
                assert_eq!(e & 1, 0, "{e:#x} access type");
            }
        }
        check(Control16::ALL, 0, 0);
        check(Guest16::ALL, 0, 2);
        check(Host16::ALL, 0, 3);
        check(Control64::ALL, 1, 0);
        check(ReadOnly64::ALL, 1, 1);
        check(Guest64::ALL, 1, 2);
        check(Host64::ALL, 1, 3);
        check(Control32::ALL, 2, 0);
        check(ReadOnly32::ALL, 2, 1);
        check(Guest32::ALL, 2, 2);
        check(Host32::ALL, 2, 3);
        check(ControlN::ALL, 3, 0);
        check(ReadOnlyN::ALL, 3, 1);
        check(GuestN::ALL, 3, 2);
        check(HostN::ALL, 3, 3);
    }

    #[test]
    fn mem_vmcs_truncates_and_refuses_read_only_writes() {
        let mut v = MemVmcs::new();
        v.write_encoding(Guest16::CsSelector as u32, 0x1_0008)
            .unwrap();
        assert_eq!(v.read(Guest16::CsSelector), Ok(0x0008));
        v.write(Guest32::CsLimit, 0xffff_ffff).unwrap();
        assert_eq!(v.read(Guest32::CsLimit), Ok(0xffff_ffff));
        assert_eq!(
            v.write_encoding(ReadOnly32::ExitReason as u32, 10),
            Err(VmcsError::Failed(
                VmInstructionError::WriteReadOnlyComponent
            ))
        );
        v.set(ReadOnly32::ExitReason as u32, 10).unwrap();
        assert_eq!(v.read(ReadOnly32::ExitReason), Ok(10));
    }

    #[test]
    fn instruction_errors_round_trip_sdm_numbers() {
        assert_eq!(
            VmInstructionError::from_number(7),
            VmInstructionError::EntryInvalidControls
        );
        assert_eq!(
            VmInstructionError::from_number(8),
            VmInstructionError::EntryInvalidHostState
        );
        assert_eq!(
            VmInstructionError::from_number(12),
            VmInstructionError::UnsupportedComponent
        );
        assert_eq!(
            VmInstructionError::from_number(28),
            VmInstructionError::InvalidInveptInvvpidOperand
        );
        for n in 1..=28 {
            assert_eq!(VmInstructionError::from_number(n).number(), n);
        }
        // 14, 21 and 27 are not defined by the SDM.
        for n in [14, 21, 27] {
            assert_eq!(
                VmInstructionError::from_number(n),
                VmInstructionError::Reserved(n)
            );
        }
    }
}
