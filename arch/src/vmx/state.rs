//! Guest-state builders (real mode, flat 32-bit protected mode, 64-bit long
//! mode) and the host state taken from the running CPU.

use super::caps::VmxCapabilities;
use super::controls::{Control, EntryControl, ExitControl, Proc2Control};
use super::vmcs::{
    Control32, ControlN, Guest32, Guest64, GuestN, Host16, Host32, Host64, HostN, VmcsAccess,
    VmcsError, VmcsExt,
};

/// CR0.PE.
pub const CR0_PE: u64 = 1;
/// CR0.ET.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.VMXE.
pub const CR4_VMXE: u64 = 1 << 13;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// The power-on value of IA32_PAT.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// Access rights of an unusable segment (bit 16).
pub const AR_UNUSABLE: u32 = 1 << 16;
/// Access rights: present, S=1, read/write data, accessed.
const AR_DATA: u32 = 0x93;
/// Access rights: present, S=1, execute/read code, accessed.
const AR_CODE: u32 = 0x9b;
/// Access rights: present, busy 32/64-bit TSS.
const AR_TSS_BUSY: u32 = 0x8b;
/// Access rights: granularity (bit 15) and default size (bit 14).
const AR_G_DB: u32 = 0xc000;
/// Access rights: 64-bit code (L, bit 13) with granularity.
const AR_G_L: u32 = 0xa000;

/// A guest segment register as the VMCS holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by granularity).
    pub limit: u32,
    /// Access rights in the VMCS format (bit 16: unusable).
    pub access_rights: u32,
}

impl Segment {
    /// An unusable segment (e.g. a null LDTR).
    pub const UNUSABLE: Segment = Segment {
        selector: 0,
        base: 0,
        limit: 0,
        access_rights: AR_UNUSABLE,
    };
    const fn flat(selector: u16, access_rights: u32) -> Segment {
        Segment {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            access_rights,
        }
    }
    const fn real(selector: u16, access_rights: u32) -> Segment {
        Segment {
            selector,
            base: (selector as u64) << 4,
            limit: 0xffff,
            access_rights,
        }
    }
}

/// A guest state the CPU cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestStateError {
    /// The state needs a capability (named by its control) the CPU lacks.
    MissingCapability(Control),
}

/// The guest-state area: registers plus the CR0/CR4 values the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    /// CR0 the guest sees (read shadow); the VMCS value adds the fixed bits.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 the guest sees (read shadow); the VMCS value adds the fixed bits.
    pub cr4: u64,
    /// DR7.
    pub dr7: u64,
    /// RSP.
    pub rsp: u64,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// IA32_EFER (written when the "load IA32_EFER" entry control is set).
    pub efer: u64,
    /// IA32_PAT (written when the "load IA32_PAT" entry control is set).
    pub pat: u64,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR in that order.
    pub segments: [Segment; 8],
    /// GDTR (base, limit).
    pub gdtr: (u64, u32),
    /// IDTR (base, limit).
    pub idtr: (u64, u32),
    /// Whether the guest runs in IA-32e mode (the entry control of that name).
    pub ia32e_mode: bool,
}

/// Index of a segment register in [`GuestState::segments`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentRegister {
    /// ES.
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// LDTR.
    Ldtr,
    /// TR.
    Tr,
}

impl SegmentRegister {
    /// All eight in VMCS order.
    pub const ALL: [SegmentRegister; 8] = [
        Self::Es,
        Self::Cs,
        Self::Ss,
        Self::Ds,
        Self::Fs,
        Self::Gs,
        Self::Ldtr,
        Self::Tr,
    ];
    /// Selector field encoding (16-bit guest-state).
    pub const fn selector_field(self) -> u32 {
        0x0800 + 2 * self as u32
    }
    /// Limit field encoding (32-bit guest-state).
    pub const fn limit_field(self) -> u32 {
        0x4800 + 2 * self as u32
    }
    /// Access-rights field encoding (32-bit guest-state).
    pub const fn access_rights_field(self) -> u32 {
        0x4814 + 2 * self as u32
    }
    /// Base field encoding (natural-width guest-state).
    pub const fn base_field(self) -> u32 {
        0x6806 + 2 * self as u32
    }
}

fn require_unrestricted(caps: &VmxCapabilities) -> Result<(), GuestStateError> {
    if caps.proc2_allows(Proc2Control::UnrestrictedGuest.bit())
        && caps.proc2_allows(Proc2Control::EnableEpt.bit())
    {
        Ok(())
    } else {
        Err(GuestStateError::MissingCapability(
            Proc2Control::UnrestrictedGuest.into(),
        ))
    }
}

impl GuestState {
    /// Real mode at `cs:ip` (as after a jump there): needs unrestricted guest.
    pub fn real_mode(caps: &VmxCapabilities, cs: u16, ip: u16) -> Result<Self, GuestStateError> {
        require_unrestricted(caps)?;
        let data = Segment::real(0, AR_DATA);
        Ok(GuestState {
            rip: ip as u64,
            segments: [
                data,
                Segment::real(cs, AR_CODE),
                data,
                data,
                data,
                data,
                Segment::UNUSABLE,
                Segment {
                    selector: 0,
                    base: 0,
                    limit: 0xffff,
                    access_rights: AR_TSS_BUSY,
                },
            ],
            idtr: (0, 0x3ff),
            ..Self::reset()
        })
    }

    /// Flat 32-bit protected mode without paging (CS 0x08, data 0x10, base 0,
    /// limit 4 GiB): needs unrestricted guest unless the CPU lets CR0.PG be 0.
    pub fn protected_mode_flat(
        caps: &VmxCapabilities,
        entry: u32,
        stack: u32,
    ) -> Result<Self, GuestStateError> {
        if caps.cr0.fixed0 & CR0_PG != 0 {
            require_unrestricted(caps)?;
        }
        let data = Segment::flat(0x10, AR_DATA | AR_G_DB);
        Ok(GuestState {
            cr0: CR0_PE | CR0_ET,
            rip: entry as u64,
            rsp: stack as u64,
            segments: [
                data,
                Segment::flat(0x08, AR_CODE | AR_G_DB),
                data,
                data,
                data,
                data,
                Segment::UNUSABLE,
                Segment {
                    selector: 0,
                    base: 0,
                    limit: 0x67,
                    access_rights: AR_TSS_BUSY,
                },
            ],
            ..Self::reset()
        })
    }

    /// 64-bit long mode with paging by `cr3`, starting at `entry` with stack `stack`.
    pub fn long_mode(cr3: u64, entry: u64, stack: u64) -> Self {
        let data = Segment::flat(0x10, AR_DATA | AR_G_DB);
        let mut state = Self::reset();
        state.cr0 = CR0_PE | CR0_ET | CR0_WP | CR0_PG;
        state.cr3 = cr3;
        state.cr4 = CR4_PAE;
        state.efer = EFER_LME | EFER_LMA;
        state.rip = entry;
        state.rsp = stack;
        state.segments = [
            data,
            Segment::flat(0x08, AR_CODE | AR_G_L),
            data,
            data,
            data,
            data,
            Segment::UNUSABLE,
            Segment {
                selector: 0,
                base: 0,
                limit: 0x67,
                access_rights: AR_TSS_BUSY,
            },
        ];
        state.ia32e_mode = true;
        state
    }

    /// Registers as after reset, with all segments unusable.
    fn reset() -> Self {
        GuestState {
            cr0: CR0_ET,
            cr3: 0,
            cr4: 0,
            dr7: 0x400,
            rsp: 0,
            rip: 0,
            rflags: 2,
            efer: 0,
            pat: PAT_DEFAULT,
            segments: [Segment::UNUSABLE; 8],
            gdtr: (0, 0xffff),
            idtr: (0, 0xffff),
            ia32e_mode: false,
        }
    }

    /// The CR0 value VM entry loads: the guest's CR0 plus the fixed bits,
    /// PE and PG left to the guest under unrestricted guest.
    pub fn effective_cr0(&self, caps: &VmxCapabilities, unrestricted: bool) -> u64 {
        let mut fixed = caps.cr0;
        if unrestricted {
            fixed.fixed0 &= !(CR0_PE | CR0_PG);
        }
        fixed.apply(self.cr0)
    }

    /// Writes the guest-state area, the CR0/CR4 guest/host masks and read
    /// shadows (the fixed bits are owned by the host, the guest reads its own
    /// values), and the "IA-32e mode guest" entry control. IA32_EFER and
    /// IA32_PAT are written only when their load entry controls are set, so
    /// CPUs without those fields work. Control fields must already be written.
    pub fn write(
        &self,
        vmcs: &mut (impl VmcsAccess + ?Sized),
        caps: &VmxCapabilities,
    ) -> Result<(), VmcsError> {
        let proc2 = if vmcs.read(Control32::ProcBasedControls)? & (1 << 31) != 0 {
            vmcs.read(Control32::ProcBasedControls2)?
        } else {
            0
        };
        let unrestricted = proc2 & Proc2Control::UnrestrictedGuest.bit() != 0;
        let cr0 = self.effective_cr0(caps, unrestricted);
        let cr4 = caps.cr4.apply(self.cr4);
        let mut cr0_owned = caps.cr0.fixed0 | !caps.cr0.fixed1;
        if unrestricted {
            cr0_owned &= !(CR0_PE | CR0_PG);
        }
        vmcs.write(GuestN::Cr0, cr0)?;
        vmcs.write(ControlN::Cr0GuestHostMask, cr0_owned)?;
        vmcs.write(ControlN::Cr0ReadShadow, self.cr0)?;
        vmcs.write(GuestN::Cr4, cr4)?;
        vmcs.write(
            ControlN::Cr4GuestHostMask,
            caps.cr4.fixed0 | !caps.cr4.fixed1,
        )?;
        vmcs.write(ControlN::Cr4ReadShadow, self.cr4)?;
        vmcs.write(GuestN::Cr3, self.cr3)?;
        vmcs.write(GuestN::Dr7, self.dr7)?;
        vmcs.write(GuestN::Rsp, self.rsp)?;
        vmcs.write(GuestN::Rip, self.rip)?;
        vmcs.write(GuestN::Rflags, self.rflags)?;
        for (reg, seg) in SegmentRegister::ALL.iter().zip(&self.segments) {
            vmcs.write_encoding(reg.selector_field(), seg.selector as u64)?;
            vmcs.write_encoding(reg.base_field(), seg.base)?;
            vmcs.write_encoding(reg.limit_field(), seg.limit as u64)?;
            vmcs.write_encoding(reg.access_rights_field(), seg.access_rights as u64)?;
        }
        vmcs.write(GuestN::GdtrBase, self.gdtr.0)?;
        vmcs.write(Guest32::GdtrLimit, self.gdtr.1)?;
        vmcs.write(GuestN::IdtrBase, self.idtr.0)?;
        vmcs.write(Guest32::IdtrLimit, self.idtr.1)?;
        vmcs.write(Guest64::VmcsLinkPointer, u64::MAX)?;
        // One loop over a table instead of a VMWRITE call site per field.
        for &field in GUEST_ZERO_FIELDS {
            vmcs.write_encoding(field.into(), 0)?;
        }
        let ia32e = EntryControl::Ia32eModeGuest.bit();
        let (set, clear) = if self.ia32e_mode {
            (ia32e, 0)
        } else {
            (0, ia32e)
        };
        vmcs.update32(Control32::EntryControls, set, clear)?;
        let entry = vmcs.read(Control32::EntryControls)?;
        if entry & EntryControl::LoadEfer.bit() != 0 {
            vmcs.write(Guest64::Efer, self.efer)?;
        }
        if entry & EntryControl::LoadPat.bit() != 0 {
            vmcs.write(Guest64::Pat, self.pat)?;
        }
        Ok(())
    }
}

/// Encodings of the fields zero in every guest this module builds: DEBUGCTL
/// and the SYSENTER MSRs, no blocking, activity state active, no pending
/// debug exceptions and no event to inject on the first entry. (Every VMCS
/// encoding fits in 16 bits, SDM Vol. 3D Appendix B.)
const GUEST_ZERO_FIELDS: &[u16] = &[
    Guest64::Debugctl as u16,
    Guest32::SysenterCs as u16,
    GuestN::SysenterEsp as u16,
    GuestN::SysenterEip as u16,
    Guest32::InterruptibilityState as u16,
    Guest32::ActivityState as u16,
    GuestN::PendingDebugExceptions as u16,
    Control32::EntryInterruptionInfo as u16,
];

/// The host-state area. HOST_RSP is managed by the run loop and HOST_RIP is
/// the run loop's exit point; [`HostState::write`] writes `rip` as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// ES, CS, SS, DS, FS, GS, TR selectors.
    pub selectors: [u16; 7],
    /// FS base.
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
    /// TR base.
    pub tr_base: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// IDTR base.
    pub idtr_base: u64,
    /// IA32_SYSENTER_CS, _ESP, _EIP.
    pub sysenter: (u32, u64, u64),
    /// IA32_EFER (written when the "load IA32_EFER" exit control is set).
    pub efer: u64,
    /// IA32_PAT (written when the "load IA32_PAT" exit control is set).
    pub pat: u64,
    /// RIP after VM exit.
    pub rip: u64,
    /// RSP after VM exit (the run loop rewrites it when its stack moves).
    pub rsp: u64,
}

impl HostState {
    /// The state of the running CPU, with RIP set to the run loop's exit point.
    ///
    /// # Safety
    /// CPL 0 in 64-bit mode with a loaded TR whose descriptor lies in the GDT.
    // Out of line: inlined, the struct is built in registers and stored
    // again field by field wherever the caller keeps it.
    #[inline(never)]
    pub unsafe fn from_current_cpu() -> Self {
        let selectors = super::hw::selectors();
        let (gdtr_base, _) = super::hw::descriptor_table(false);
        let (idtr_base, _) = super::hw::descriptor_table(true);
        let tr = (selectors[6] & !7) as u64;
        // SAFETY: the caller guarantees TR names a 16-byte TSS descriptor in the GDT.
        let tr_base = unsafe {
            let d = (gdtr_base + tr) as *const u64;
            let (lo, hi) = (d.read_unaligned(), d.add(1).read_unaligned());
            ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32)
        };
        // SAFETY: CPL 0; these MSRs exist on every 64-bit VMX CPU.
        unsafe {
            use super::hw::{rdmsr, read_cr0, read_cr3, read_cr4};
            HostState {
                cr0: read_cr0(),
                cr3: read_cr3(),
                cr4: read_cr4(),
                selectors,
                fs_base: rdmsr(0xc000_0100),
                gs_base: rdmsr(0xc000_0101),
                tr_base,
                gdtr_base,
                idtr_base,
                sysenter: (rdmsr(0x174) as u32, rdmsr(0x175), rdmsr(0x176)),
                efer: rdmsr(0xc000_0080),
                pat: rdmsr(0x277),
                rip: super::vcpu::exit_point(),
                rsp: 0,
            }
        }
    }

    /// Writes the host-state area; IA32_EFER and IA32_PAT only when the exit
    /// controls (already written) load them.
    pub fn write(&self, vmcs: &mut (impl VmcsAccess + ?Sized)) -> Result<(), VmcsError> {
        vmcs.write(HostN::Cr0, self.cr0)?;
        vmcs.write(HostN::Cr3, self.cr3)?;
        vmcs.write(HostN::Cr4, self.cr4)?;
        let fields = [
            Host16::EsSelector,
            Host16::CsSelector,
            Host16::SsSelector,
            Host16::DsSelector,
            Host16::FsSelector,
            Host16::GsSelector,
            Host16::TrSelector,
        ];
        for (f, &sel) in fields.iter().zip(&self.selectors) {
            vmcs.write(*f, sel)?;
        }
        vmcs.write(HostN::FsBase, self.fs_base)?;
        vmcs.write(HostN::GsBase, self.gs_base)?;
        vmcs.write(HostN::TrBase, self.tr_base)?;
        vmcs.write(HostN::GdtrBase, self.gdtr_base)?;
        vmcs.write(HostN::IdtrBase, self.idtr_base)?;
        vmcs.write(Host32::SysenterCs, self.sysenter.0)?;
        vmcs.write(HostN::SysenterEsp, self.sysenter.1)?;
        vmcs.write(HostN::SysenterEip, self.sysenter.2)?;
        vmcs.write(HostN::Rip, self.rip)?;
        vmcs.write(HostN::Rsp, self.rsp)?;
        let exit = vmcs.read(Control32::ExitControls)?;
        if exit & ExitControl::LoadEfer.bit() != 0 {
            vmcs.write(Host64::Efer, self.efer)?;
        }
        if exit & ExitControl::LoadPat.bit() != 0 {
            vmcs.write(Host64::Pat, self.pat)?;
        }
        Ok(())
    }
}
