//! A virtual machine's memory and vCPU, assembled from the VMX and EPT
//! pieces of `ponte-arch` in the way every appliance needs them.
//!
//! - [`LinearRam`]: guest RAM as one host block at guest-physical 0, the
//!   [`GuestMemory`] that loaders and devices use.
//! - [`appliance_controls`]: the VM-execution controls a ponte appliance
//!   runs guests with: host interrupts, every I/O port, HLT and unlisted
//!   MSRs exit; virtual NMIs where present; EPT;
//!   unrestricted guest where real mode needs it; VPID, EFER/PAT switching
//!   and TSC offsetting where the processor has them.
//! - [`build_vcpu`]: the whole sequence in the image: a vCPU with its VMCS
//!   written, on EPT tables built from the image's host memory.
//! - [`configure_vmcs`]: writes a vCPU's VMCS for a guest entry state: the
//!   controls, host and guest state, the EPT pointer, the VPID and an MSR
//!   bitmap that passes through the MSRs whose guest values the processor
//!   switches itself.

use ponte_arch::{
    ept::{EptCapabilities, EptError, EptTables, FrameAllocator, HostRam, MappingAttributes},
    memory::{FrameError, HostMemory},
    vmx::{
        assign_vpid,
        controls::{EntryControl, ExitControl, PinControl, Proc2Control, ProcControl},
        setup_vmcs,
        vmcs::{Control64, ControlN, GuestN},
        ControlRequest, ControlSettings, GuestState, HostState, MsrBitmap, Vcpu, VmcsAccess,
        VmcsError, VmcsExt, Vmx, VmxCapabilities, VmxError,
    },
};

use crate::memory::{GuestMemory, MemoryError};

/// Guest RAM: one block of host memory seen by the guest at guest-physical 0.
#[derive(Debug)]
pub struct LinearRam {
    block: HostRam,
}

impl LinearRam {
    /// RAM backed by `block`.
    pub fn new(block: HostRam) -> Self {
        Self { block }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.block.size()
    }

    /// Host-physical address of guest-physical 0.
    pub fn host_physical(&self) -> u64 {
        self.block.host_physical()
    }

    /// Maps the whole block into `ept` at guest-physical 0 as write-back RAM.
    pub fn map_into<A: FrameAllocator>(&self, ept: &mut EptTables<A>) -> Result<(), EptError> {
        ept.map(
            0,
            self.block.host_physical(),
            self.block.size(),
            MappingAttributes::RAM,
        )
    }
}

impl GuestMemory for LinearRam {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        addr.checked_add(len)
            .ok_or(MemoryError::Overflow { addr, len })?;
        self.block
            .read(addr, buf)
            .map_err(|_| MemoryError::NotRam { addr, len })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let len = data.len() as u64;
        addr.checked_add(len)
            .ok_or(MemoryError::Overflow { addr, len })?;
        self.block
            .write(addr, data)
            .map_err(|_| MemoryError::NotRam { addr, len })
    }
}

/// Whether a guest that runs with paging off needs the hypervisor's
/// identity map under it: processors without unrestricted guest keep
/// CR0.PG set in VMX non-root operation.
pub fn needs_identity_paging(caps: &VmxCapabilities) -> bool {
    !caps.proc2_allows(Proc2Control::UnrestrictedGuest.bit())
}

/// The state of a flat 32-bit protected-mode guest that sees paging off.
///
/// With unrestricted guest this is arch's flat protected-mode state. Without
/// it, CR0.PG stays set underneath (the CR0 read shadow shows it clear) and
/// the guest runs on the 4 MiB-page identity map at `identity_directory`
/// (see [`crate::loader::paging::identity_map_32`]), with CR4.PSE set
/// underneath the same way; [`configure_vmcs`] finishes that, and
/// [`appliance_controls`] asks for CR3 exits so that the guest cannot swap
/// the map out from under itself.
pub fn protected_mode_paging_off(
    caps: &VmxCapabilities,
    entry: u32,
    stack: u32,
    identity_directory: u32,
) -> GuestState {
    let mut relaxed = *caps;
    relaxed.cr0.fixed0 &= !CR0_PG;
    let mut state = match GuestState::protected_mode_flat(&relaxed, entry, stack) {
        Ok(state) => state,
        // Only the PG rule refuses the flat state, and it is relaxed above.
        Err(_) => GuestState::long_mode(0, u64::from(entry), u64::from(stack)),
    };
    if needs_identity_paging(caps) {
        state.cr3 = u64::from(identity_directory);
    }
    state
}

/// The controls a ponte appliance runs guests with. `real_mode` requires
/// unrestricted guest (a real-mode guest needs it); otherwise it is used when
/// present. `identity_paging` (see [`protected_mode_paging_off`]) adds CR3
/// load and store exiting. An appliance with timers adds the VMX-preemption
/// timer and arms it through the dispatcher.
pub fn appliance_controls(real_mode: bool, identity_paging: bool) -> ControlRequest {
    let request = ControlRequest::new()
        .require(PinControl::ExternalInterruptExiting)
        .prefer(PinControl::NmiExiting)
        .prefer(PinControl::VirtualNmis)
        .require(ProcControl::HltExiting)
        .require(ProcControl::UnconditionalIoExiting)
        .require(ProcControl::UseMsrBitmaps)
        .require(Proc2Control::EnableEpt)
        .prefer(ProcControl::UseTscOffsetting)
        .prefer(Proc2Control::EnableVpid)
        .prefer(Proc2Control::EnableRdtscp)
        .prefer(Proc2Control::EnableInvpcid)
        .prefer(Proc2Control::EnableXsavesXrstors)
        .prefer(ExitControl::SaveEfer)
        .prefer(ExitControl::LoadEfer)
        .prefer(EntryControl::LoadEfer)
        .prefer(ExitControl::SavePat)
        .prefer(ExitControl::LoadPat)
        .prefer(EntryControl::LoadPat);
    let request = if identity_paging {
        request
            .require(ProcControl::Cr3LoadExiting)
            .require(ProcControl::Cr3StoreExiting)
    } else {
        request
    };
    if real_mode {
        request.require(Proc2Control::UnrestrictedGuest)
    } else {
        request.prefer(Proc2Control::UnrestrictedGuest)
    }
}

/// MSRs whose guest values the VMCS or the processor keep apart from the
/// host's, so guests read and write them without an exit: SYSENTER_CS/ESP/EIP,
/// FS/GS base, KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK and TSC_AUX.
pub const PASS_THROUGH_MSRS: [u32; 11] = [
    0x174,
    0x175,
    0x176,
    0xC000_0081,
    0xC000_0082,
    0xC000_0083,
    0xC000_0084,
    0xC000_0100,
    0xC000_0101,
    0xC000_0102,
    0xC000_0103,
];
const IA32_EFER: u32 = 0xC000_0080;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const IA32_PAT: u32 = 0x277;

/// The VPID given to the first vCPU (0 is the host's).
pub const FIRST_VPID: u16 = 1;

/// Writes a vCPU's whole VMCS: the reconciled controls, host and guest
/// state (arch's `setup_vmcs`), the EPT pointer `eptp`, VPID [`FIRST_VPID`]
/// when enabled, and `msr_bitmap` set to intercept every MSR except
/// [`PASS_THROUGH_MSRS`] (and EFER/PAT when the processor switches them).
pub fn configure_vmcs<V: VmcsAccess + ?Sized>(
    vmcs: &mut V,
    caps: &VmxCapabilities,
    settings: &ControlSettings,
    host: &HostState,
    guest: &GuestState,
    eptp: u64,
    msr_bitmap: &mut MsrBitmap,
) -> Result<(), VmcsError> {
    setup_vmcs(vmcs, caps, settings, host, guest)?;
    if guest.cr0 & CR0_PG == 0 && !settings.has(Proc2Control::UnrestrictedGuest) {
        // The identity map of `protected_mode_paging_off` uses 4 MiB pages;
        // the guest sees CR4.PSE as it set it.
        vmcs.write(GuestN::Cr4, vmcs.read(GuestN::Cr4)? | CR4_PSE)?;
        vmcs.write(
            ControlN::Cr4GuestHostMask,
            vmcs.read(ControlN::Cr4GuestHostMask)? | CR4_PSE,
        )?;
    }
    vmcs.write(Control64::EptPointer, eptp)?;
    if settings.has(Proc2Control::EnableVpid) {
        assign_vpid(vmcs, FIRST_VPID)?;
    }
    let switched = [
        (
            IA32_EFER,
            settings.has(EntryControl::LoadEfer) && settings.has(ExitControl::SaveEfer),
        ),
        (
            IA32_PAT,
            settings.has(EntryControl::LoadPat) && settings.has(ExitControl::SavePat),
        ),
    ];
    let pass = PASS_THROUGH_MSRS
        .iter()
        .copied()
        .chain(switched.iter().filter(|(_, on)| *on).map(|(m, _)| *m));
    for msr in pass {
        // Every listed MSR is in a range the bitmap covers.
        let _ = msr_bitmap.intercept_read(msr, false);
        let _ = msr_bitmap.intercept_write(msr, false);
    }
    msr_bitmap.write_to(vmcs)
}

/// Why [`build_vcpu`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// No host memory for a VMCS, a bitmap or a table page.
    Memory(FrameError),
    /// VMCLEAR or VMPTRLD of the new VMCS failed.
    Vmx(VmxError),
    /// The EPT tables could not be made or could not map guest RAM.
    Ept(EptError),
    /// Guest RAM could not be mapped (see [`crate::memory::GuestLayout::map_ram_into`]).
    Mapping(crate::memory::EptPopulateError),
    /// A VMWRITE failed.
    Vmcs(VmcsError),
}

impl From<FrameError> for BuildError {
    fn from(e: FrameError) -> Self {
        Self::Memory(e)
    }
}
impl From<VmxError> for BuildError {
    fn from(e: VmxError) -> Self {
        Self::Vmx(e)
    }
}
impl From<EptError> for BuildError {
    fn from(e: EptError) -> Self {
        Self::Ept(e)
    }
}
impl From<crate::memory::EptPopulateError> for BuildError {
    fn from(e: crate::memory::EptPopulateError) -> Self {
        Self::Mapping(e)
    }
}
impl From<VmcsError> for BuildError {
    fn from(e: VmcsError) -> Self {
        Self::Vmcs(e)
    }
}

/// A vCPU ready to run and what it runs on.
#[allow(missing_debug_implementations)] // The vCPU and tables hold hardware state.
pub struct BuiltVcpu<'m> {
    /// The vCPU, its VMCS written and current.
    pub vcpu: Vcpu,
    /// The EPT tables, whose pages come from the image's host memory. Keep
    /// them for as long as the vCPU runs: dropping them frees the pages the
    /// processor walks.
    pub ept: EptTables<&'m mut HostMemory>,
    /// The MSR bitmap, intercepting all but [`PASS_THROUGH_MSRS`].
    pub msr_bitmap: MsrBitmap,
}

/// Builds the vCPU every appliance runs: a VMCS and an MSR bitmap from host
/// memory, the host state of the image, EPT tables whose pages come from
/// `memory` (which they hold from then on: allocate everything else first),
/// guest RAM mapped by `map_ram`, and the VMCS written by [`configure_vmcs`]
/// for `guest` with `settings`.
pub fn build_vcpu<'m>(
    vmx: &Vmx,
    memory: &'m mut HostMemory,
    settings: &ControlSettings,
    guest: &GuestState,
    map_ram: impl FnOnce(&mut EptTables<&'m mut HostMemory>) -> Result<(), BuildError>,
) -> Result<BuiltVcpu<'m>, BuildError> {
    let caps = *vmx.caps();
    let mut vcpu = Vcpu::new(vmx, memory.page()?)?;
    let mut msr_bitmap = MsrBitmap::intercept_all(memory.page()?);
    let host = memory.host_state();
    let ept_caps = EptCapabilities::from_ept_vpid_cap(caps.ept_vpid.0, caps.phys_addr_bits);
    let mut ept = EptTables::new(memory, ept_caps)?;
    map_ram(&mut ept)?;
    configure_vmcs(
        vcpu.vmcs(),
        &caps,
        settings,
        &host,
        guest,
        ept.eptp().bits(),
        &mut msr_bitmap,
    )?;
    Ok(BuiltVcpu {
        vcpu,
        ept,
        msr_bitmap,
    })
}
