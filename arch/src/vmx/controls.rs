//! Every VM-execution, VM-exit and VM-entry control bit by name, and the one
//! place that reconciles the controls an integrator wants with the ones the
//! CPU allows (TRUE_ capability MSRs when IA32_VMX_BASIC bit 55 is set).

use super::caps::{AllowedBits, VmxCapabilities};
use super::vmcs::{Control32, VmcsAccess, VmcsError, VmcsExt};

macro_rules! control_bits {
    ($($(#[$m:meta])* $name:ident { $($v:ident = $bit:literal,)* })*) => {$(
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $(#[doc = concat!("Bit ", stringify!($bit), ".")] $v = $bit,)* }
        impl $name {
            /// Every named bit of this field.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The bit's mask.
            pub const fn bit(self) -> u32 { 1 << self as u32 }
        }
        impl From<$name> for Control { fn from(c: $name) -> Control { Control::$name(c) } }
    )*};
}

control_bits! {
    /// Pin-based VM-execution controls (SDM Vol. 3C 25.6.1).
    PinControl {
        ExternalInterruptExiting = 0, NmiExiting = 3, VirtualNmis = 5, PreemptionTimer = 6,
        PostedInterrupts = 7,
    }
    /// Primary processor-based VM-execution controls (25.6.2, table 25-6).
    ProcControl {
        InterruptWindowExiting = 2, UseTscOffsetting = 3, HltExiting = 7, InvlpgExiting = 9,
        MwaitExiting = 10, RdpmcExiting = 11, RdtscExiting = 12, Cr3LoadExiting = 15,
        Cr3StoreExiting = 16, ActivateTertiaryControls = 17, Cr8LoadExiting = 19,
        Cr8StoreExiting = 20, UseTprShadow = 21, NmiWindowExiting = 22, MovDrExiting = 23,
        UnconditionalIoExiting = 24, UseIoBitmaps = 25, MonitorTrapFlag = 27, UseMsrBitmaps = 28,
        MonitorExiting = 29, PauseExiting = 30, ActivateSecondaryControls = 31,
    }
    /// Secondary processor-based VM-execution controls (table 25-7).
    Proc2Control {
        VirtualizeApicAccesses = 0, EnableEpt = 1, DescriptorTableExiting = 2, EnableRdtscp = 3,
        VirtualizeX2apicMode = 4, EnableVpid = 5, WbinvdExiting = 6, UnrestrictedGuest = 7,
        ApicRegisterVirtualization = 8, VirtualInterruptDelivery = 9, PauseLoopExiting = 10,
        RdrandExiting = 11, EnableInvpcid = 12, EnableVmFunctions = 13, VmcsShadowing = 14,
        EnclsExiting = 15, RdseedExiting = 16, EnablePml = 17, EptViolationVe = 18,
        ConcealVmxFromPt = 19, EnableXsavesXrstors = 20, PasidTranslation = 21,
        ModeBasedExecuteControl = 22, SubPageWritePermissions = 23, PtUsesGuestPhysical = 24,
        UseTscScaling = 25, EnableUserWaitPause = 26, EnablePconfig = 27, EnableEnclvExiting = 28,
        VmmBusLockDetection = 30, InstructionTimeout = 31,
    }
    /// Primary VM-exit controls (25.7.1, table 25-13).
    ExitControl {
        SaveDebugControls = 2, HostAddressSpaceSize = 9, LoadPerfGlobalCtrl = 12,
        AcknowledgeInterruptOnExit = 15, SavePat = 18, LoadPat = 19, SaveEfer = 20, LoadEfer = 21,
        SavePreemptionTimer = 22, ClearBndcfgs = 23, ConcealVmxFromPt = 24, ClearRtitCtl = 25,
        ClearLbrCtl = 26, ClearUinv = 27, LoadCet = 28, LoadPkrs = 29, SavePerfGlobalCtl = 30,
        ActivateSecondaryControls = 31,
    }
    /// VM-entry controls (25.8.1, table 25-15).
    EntryControl {
        LoadDebugControls = 2, Ia32eModeGuest = 9, EntryToSmm = 10, DeactivateDualMonitor = 11,
        LoadPerfGlobalCtrl = 13, LoadPat = 14, LoadEfer = 15, LoadBndcfgs = 16,
        ConcealVmxFromPt = 17, LoadRtitCtl = 18, LoadUinv = 19, LoadCet = 20, LoadLbrCtl = 21,
        LoadPkrs = 22,
    }
}

/// Any named control bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// A pin-based VM-execution control.
    PinControl(PinControl),
    /// A primary processor-based VM-execution control.
    ProcControl(ProcControl),
    /// A secondary processor-based VM-execution control.
    Proc2Control(Proc2Control),
    /// A VM-exit control.
    ExitControl(ExitControl),
    /// A VM-entry control.
    EntryControl(EntryControl),
}

/// Default1 bits (SDM Vol. 3D A.2-A.5): reserved bits that are 1 unless the
/// TRUE_ MSRs allow clearing them. Order: pin, proc, exit, entry.
pub const DEFAULT1: [u32; 4] = [0x0000_0016, 0x0401_e172, 0x0003_6dff, 0x0000_11ff];

const PIN: usize = 0;
const PROC: usize = 1;
const PROC2: usize = 2;
const EXIT: usize = 3;
const ENTRY: usize = 4;

impl Control {
    fn slot(self) -> (usize, u32) {
        match self {
            Control::PinControl(c) => (PIN, c.bit()),
            Control::ProcControl(c) => (PROC, c.bit()),
            Control::Proc2Control(c) => (PROC2, c.bit()),
            Control::ExitControl(c) => (EXIT, c.bit()),
            Control::EntryControl(c) => (ENTRY, c.bit()),
        }
    }

    fn from_slot(group: usize, index: u32) -> Option<Control> {
        Some(match group {
            PIN => Control::PinControl(*PinControl::ALL.iter().find(|c| c.bit() == 1 << index)?),
            PROC => Control::ProcControl(*ProcControl::ALL.iter().find(|c| c.bit() == 1 << index)?),
            PROC2 => {
                Control::Proc2Control(*Proc2Control::ALL.iter().find(|c| c.bit() == 1 << index)?)
            }
            EXIT => Control::ExitControl(*ExitControl::ALL.iter().find(|c| c.bit() == 1 << index)?),
            _ => Control::EntryControl(*EntryControl::ALL.iter().find(|c| c.bit() == 1 << index)?),
        })
    }
}

/// Capacity of the lists of missing or dropped controls.
pub const MAX_REPORTED_CONTROLS: usize = 32;

/// The controls an integrator wants: required ones fail reconciliation when
/// the CPU lacks them, optional ones are dropped and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlRequest {
    required: [u32; 5],
    optional: [u32; 5],
}

impl Default for ControlRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlRequest {
    /// A request holding only what every ponte host needs: a 64-bit host
    /// (the host address-space size exit control).
    pub const fn new() -> Self {
        let mut required = [0; 5];
        required[EXIT] = ExitControl::HostAddressSpaceSize.bit();
        ControlRequest {
            required,
            optional: [0; 5],
        }
    }

    /// Adds a control VM entry cannot do without.
    pub fn require(mut self, control: impl Into<Control>) -> Self {
        let (g, bit) = control.into().slot();
        self.required[g] |= bit;
        self
    }

    /// Adds a control used when the CPU has it.
    pub fn prefer(mut self, control: impl Into<Control>) -> Self {
        let (g, bit) = control.into().slot();
        self.optional[g] |= bit;
        self
    }

    /// Reconciles the request with the CPU's allowed settings.
    ///
    /// Adds the implied controls (activate secondary controls for any secondary
    /// control; EPT for unrestricted guest; the preemption timer for saving
    /// it; external-interrupt exiting for virtual-interrupt delivery), sets
    /// every must-be-one bit, and drops optional controls whose prerequisite
    /// was dropped (the APIC-virtualization controls without use TPR shadow)
    /// or that conflict (an optional virtualize x2APIC mode next to
    /// virtualize APIC accesses).
    pub fn reconcile(&self, caps: &VmxCapabilities) -> Result<ControlSettings, MissingControls> {
        let (mut req, mut opt) = (self.required, self.optional);
        let ug = Proc2Control::UnrestrictedGuest.bit();
        let ept = Proc2Control::EnableEpt.bit();
        let save_timer = ExitControl::SavePreemptionTimer.bit();
        let timer = PinControl::PreemptionTimer.bit();
        for set in [&mut req, &mut opt] {
            if set[PROC2] & ug != 0 {
                set[PROC2] |= ept;
            }
            if set[EXIT] & save_timer != 0 {
                set[PIN] |= timer;
            }
            if set[PROC2] & Proc2Control::VirtualInterruptDelivery.bit() != 0 {
                set[PIN] |= PinControl::ExternalInterruptExiting.bit();
            }
            if set[PROC2] != 0 {
                set[PROC] |= ProcControl::ActivateSecondaryControls.bit();
            }
        }
        let allowed: [AllowedBits; 5] = [
            caps.pin.effective(),
            caps.proc.effective(),
            caps.proc2,
            caps.exit.effective(),
            caps.entry.effective(),
        ];
        let mut missing = MissingControls::default();
        let mut values = [0u32; 5];
        let mut dropped = heapless::Vec::new();
        for g in 0..5 {
            let allow = allowed[g];
            values[g] = allow.must_be_one | ((req[g] | opt[g]) & allow.may_be_one);
            for i in 0..32 {
                let bit = 1u32 << i;
                let Some(c) = Control::from_slot(g, i) else {
                    continue;
                };
                if req[g] & bit != 0 && !allow.allows(bit) {
                    let _ = missing.missing.push(c);
                } else if opt[g] & !req[g] & bit != 0 && !allow.allows(bit) {
                    let _ = dropped.push(c);
                }
            }
        }
        if !missing.missing.is_empty() {
            return Err(missing);
        }
        // Optional dependents of a dropped prerequisite.
        let mut drop_dependent = |values: &mut [u32; 5], g: usize, bit: u32, c: Control| {
            if values[g] & bit != 0 && req[g] & bit == 0 {
                values[g] &= !bit;
                let _ = dropped.push(c);
            }
        };
        if values[PROC2] & ept == 0 {
            drop_dependent(
                &mut values,
                PROC2,
                ug,
                Proc2Control::UnrestrictedGuest.into(),
            );
        }
        if values[PIN] & timer == 0 {
            drop_dependent(
                &mut values,
                EXIT,
                save_timer,
                ExitControl::SavePreemptionTimer.into(),
            );
        }
        if values[PROC] & ProcControl::UseTprShadow.bit() == 0 {
            for c in [
                Proc2Control::VirtualizeX2apicMode,
                Proc2Control::ApicRegisterVirtualization,
                Proc2Control::VirtualInterruptDelivery,
            ] {
                drop_dependent(&mut values, PROC2, c.bit(), c.into());
            }
        }
        if values[PROC2] & Proc2Control::VirtualizeApicAccesses.bit() != 0 {
            let x2apic = Proc2Control::VirtualizeX2apicMode;
            drop_dependent(&mut values, PROC2, x2apic.bit(), x2apic.into());
        }
        if values[PROC] & ProcControl::ActivateSecondaryControls.bit() == 0 {
            values[PROC2] = 0;
        }
        Ok(ControlSettings {
            pin: values[PIN],
            proc: values[PROC],
            proc2: values[PROC2],
            exit: values[EXIT],
            entry: values[ENTRY],
            dropped,
        })
    }
}

/// Required controls the CPU does not allow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MissingControls {
    /// Each required control the CPU lacks.
    pub missing: heapless::Vec<Control, MAX_REPORTED_CONTROLS>,
}

/// Reconciled control values, ready for the VMCS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlSettings {
    /// Pin-based VM-execution controls.
    pub pin: u32,
    /// Primary processor-based VM-execution controls.
    pub proc: u32,
    /// Secondary processor-based VM-execution controls.
    pub proc2: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls.
    pub entry: u32,
    /// Optional controls left out because the CPU lacks them.
    pub dropped: heapless::Vec<Control, MAX_REPORTED_CONTROLS>,
}

impl ControlSettings {
    /// Whether `control` is set.
    pub fn has(&self, control: impl Into<Control>) -> bool {
        let (g, bit) = control.into().slot();
        [self.pin, self.proc, self.proc2, self.exit, self.entry][g] & bit != 0
    }

    /// Writes the five control fields (the secondary field only when activated).
    pub fn write(&self, vmcs: &mut (impl VmcsAccess + ?Sized)) -> Result<(), VmcsError> {
        vmcs.write(Control32::PinBasedControls, self.pin)?;
        vmcs.write(Control32::ProcBasedControls, self.proc)?;
        if self.has(ProcControl::ActivateSecondaryControls) {
            vmcs.write(Control32::ProcBasedControls2, self.proc2)?;
        }
        vmcs.write(Control32::ExitControls, self.exit)?;
        vmcs.write(Control32::EntryControls, self.entry)
    }
}
