//! VMX operation and the run loop: VMXON/VMXOFF ([`Vmx`]), VMCS regions
//! ([`Vmcs`]), and [`Vcpu`], whose `run` enters the guest through one
//! assembly trampoline and returns the decoded [`VmExit`].

use core::fmt;

use crate::boot::Verbatim;

use super::caps::{
    feature_control_update, MissingMsr, RawVmxMsrs, VmxCapabilities, MSR_FEATURE_CONTROL,
};
use super::check::check_vm_entry;
use super::controls::ControlSettings;
use super::exit::*;
use super::state::{GuestState, HostState, CR4_VMXE};
use super::vmcs::*;
use super::{hw, Page4K};

/// Why VMX could not be entered or a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// CPUID.1:ECX bit 5 is clear.
    NotSupported,
    /// IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled (the value).
    DisabledByFirmware(u64),
    /// A mandatory capability MSR could not be read.
    MissingMsr(u32),
    /// A VMX instruction failed.
    Instruction {
        /// The instruction.
        instruction: VmxInstruction,
        /// How it failed.
        error: VmcsError,
    },
}

/// VMX instructions that can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxInstruction {
    /// VMXON.
    Vmxon,
    /// VMXOFF.
    Vmxoff,
    /// VMCLEAR.
    Vmclear,
    /// VMPTRLD.
    Vmptrld,
    /// VMLAUNCH.
    Vmlaunch,
    /// VMRESUME.
    Vmresume,
    /// INVEPT.
    Invept,
    /// INVVPID.
    Invvpid,
}

impl From<MissingMsr> for VmxError {
    fn from(m: MissingMsr) -> Self {
        VmxError::MissingMsr(m.0)
    }
}

fn check(instruction: VmxInstruction, r: hw::VmxResult) -> Result<(), VmxError> {
    r.map_err(|invalid| VmxError::Instruction {
        instruction,
        error: if invalid {
            VmcsError::NoCurrentVmcs
        } else {
            // SAFETY: VMfailValid implies VMX root operation with a current VMCS.
            let n = unsafe { hw::vmread(ReadOnly32::VmInstructionError as u32) }.unwrap_or(0);
            VmcsError::Failed(VmInstructionError::from_number(n as u32))
        },
    })
}

/// This logical processor in VMX root operation.
#[derive(Debug)]
pub struct Vmx {
    caps: VmxCapabilities,
    _vmxon_region: &'static mut Page4K,
    /// Not `Send`: VMX operation belongs to one logical processor.
    _this_cpu: core::marker::PhantomData<*const ()>,
}

impl Vmx {
    /// Enters VMX operation: checks CPUID, reads and decodes the capability
    /// MSRs, enables and locks VMX in IA32_FEATURE_CONTROL if unlocked, sets
    /// CR0/CR4 to their fixed bits (CR4.VMXE included) and executes VMXON on
    /// `vmxon_region` (identity-mapped, see [`Page4K`]).
    ///
    /// # Safety
    /// CPL 0 in 64-bit mode, once per logical processor, with the current
    /// CR0/CR4 compatible with the fixed bits (paging and NE on).
    pub unsafe fn enable(vmxon_region: &'static mut Page4K) -> Result<Vmx, VmxError> {
        if hw::cpuid(1, 0)[2] & (1 << 5) == 0 {
            return Err(VmxError::NotSupported);
        }
        // SAFETY: CPL 0 and VMX present (checked above).
        let raw = unsafe { RawVmxMsrs::read_current_cpu() };
        let caps = VmxCapabilities::decode(&raw)?;
        // SAFETY: CPL 0; IA32_FEATURE_CONTROL exists on VMX CPUs and the
        // written value only adds the lock and VMX-enable bits.
        unsafe {
            let fc = hw::rdmsr(MSR_FEATURE_CONTROL);
            match feature_control_update(fc) {
                Ok(None) => {}
                Ok(Some(v)) => hw::wrmsr(MSR_FEATURE_CONTROL, v),
                Err(e) => return Err(VmxError::DisabledByFirmware(e.feature_control)),
            }
            hw::write_cr0(caps.cr0.apply(hw::read_cr0()));
            hw::write_cr4(caps.cr4.apply(hw::read_cr4() | CR4_VMXE));
        }
        vmxon_region.0[..4].copy_from_slice(&caps.basic.revision_id.to_le_bytes());
        // SAFETY: CR4.VMXE is set and the region holds the revision id.
        check(VmxInstruction::Vmxon, unsafe {
            hw::vmxon(vmxon_region.phys_addr())
        })?;
        Ok(Vmx {
            caps,
            _vmxon_region: vmxon_region,
            _this_cpu: core::marker::PhantomData,
        })
    }

    /// The decoded capabilities of this CPU.
    pub fn caps(&self) -> &VmxCapabilities {
        &self.caps
    }

    /// Leaves VMX operation (VMXOFF) and clears CR4.VMXE.
    pub fn disable(self) -> Result<(), VmxError> {
        // SAFETY: a Vmx exists only in VMX root operation.
        check(VmxInstruction::Vmxoff, unsafe { hw::vmxoff() })?;
        // SAFETY: outside VMX operation CR4.VMXE may be cleared.
        unsafe { hw::write_cr4(hw::read_cr4() & !CR4_VMXE) };
        Ok(())
    }

    /// INVEPT: single-context for `Some(eptp)`, all-context for `None`.
    pub fn invept(&self, eptp: Option<u64>) -> Result<(), VmxError> {
        let (kind, desc) = eptp.map_or((2, [0, 0]), |e| (1, [e, 0]));
        // SAFETY: VMX root operation; a bad type or descriptor fails with VMfail.
        check(VmxInstruction::Invept, unsafe {
            hw::invalidate(true, kind, desc)
        })
    }

    /// INVVPID: single-context for `Some(vpid)`, all-context for `None`.
    pub fn invvpid(&self, vpid: Option<u16>) -> Result<(), VmxError> {
        let (kind, desc) = vpid.map_or((2, [0, 0]), |v| (1, [v as u64, 0]));
        // SAFETY: VMX root operation; a bad type or descriptor fails with VMfail.
        check(VmxInstruction::Invvpid, unsafe {
            hw::invalidate(false, kind, desc)
        })
    }
}

/// A VMCS region.
#[derive(Debug)]
pub struct Vmcs {
    region: &'static mut Page4K,
}

impl Vmcs {
    /// Prepares `region` as a VMCS of the CPU: zeroed, revision id in the
    /// first 4 bytes (bit 31, shadow VMCS, clear).
    pub fn new(region: &'static mut Page4K, caps: &VmxCapabilities) -> Vmcs {
        region.0.fill(0);
        region.0[..4].copy_from_slice(&caps.basic.revision_id.to_le_bytes());
        Vmcs { region }
    }

    /// The region's first 4 bytes (revision id and shadow bit).
    pub fn header(&self) -> u32 {
        u32::from_le_bytes([
            self.region.0[0],
            self.region.0[1],
            self.region.0[2],
            self.region.0[3],
        ])
    }

    /// VMCLEAR: the VMCS becomes inactive, not current, and clear.
    pub fn clear(&mut self, _vmx: &Vmx) -> Result<(), VmxError> {
        // SAFETY: VMX root operation (a Vmx exists); the region is a VMCS.
        check(VmxInstruction::Vmclear, unsafe {
            hw::vmclear(self.region.phys_addr())
        })
    }

    /// VMPTRLD: makes this VMCS current on this CPU.
    pub fn load(&mut self, _vmx: &Vmx) -> Result<ActiveVmcs, VmxError> {
        // SAFETY: VMX root operation (a Vmx exists); the region is a VMCS.
        check(VmxInstruction::Vmptrld, unsafe {
            hw::vmptrld(self.region.phys_addr())
        })?;
        // SAFETY: VMPTRLD succeeded.
        Ok(unsafe { ActiveVmcs::assume_current() })
    }
}

/// Encodings of the control fields [`setup_vmcs`] zeroes: no exceptions
/// intercepted, no CR3 targets, empty MSR lists, no event to inject, TSC
/// offset 0. (Every VMCS encoding fits in 16 bits, SDM Vol. 3D Appendix B;
/// a table of them takes less code than one VMWRITE call site each.)
const OPTIONAL_CONTROLS_ZEROED: &[u16] = &[
    Control32::ExceptionBitmap as u16,
    Control32::PageFaultErrorCodeMask as u16,
    Control32::PageFaultErrorCodeMatch as u16,
    Control32::Cr3TargetCount as u16,
    Control32::ExitMsrStoreCount as u16,
    Control32::ExitMsrLoadCount as u16,
    Control32::EntryMsrLoadCount as u16,
    Control32::EntryInterruptionInfo as u16,
    Control64::TscOffset as u16,
];

/// Writes a complete VMCS: controls, zeroed optional control fields
/// (exception bitmap, CR3 targets, MSR lists, TSC offset), host state and
/// guest state. Runs on any [`VmcsAccess`], so it is tested on the host.
pub fn setup_vmcs(
    vmcs: &mut (impl VmcsAccess + ?Sized),
    caps: &VmxCapabilities,
    controls: &ControlSettings,
    host: &HostState,
    guest: &GuestState,
) -> Result<(), VmcsError> {
    controls.write(vmcs)?;
    for &field in OPTIONAL_CONTROLS_ZEROED {
        vmcs.write_encoding(field.into(), 0)?;
    }
    host.write(vmcs)?;
    guest.write(vmcs, caps)
}

/// Guest general registers, saved and restored around every VM entry (RSP,
/// RIP and RFLAGS live in the VMCS). CR2 is not switched: it keeps the
/// guest's value as long as the host takes no page fault.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegisters {
    /// RAX.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RBX.
    pub rbx: u64,
    /// RBP.
    pub rbp: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
}

impl GuestRegisters {
    /// General register `gpr` by its SDM encoding (0 RAX .. 15 R15);
    /// `None` for 4, RSP, which lives in the VMCS, and for numbers above 15.
    pub fn get(&self, gpr: u8) -> Option<u64> {
        Some(match gpr {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => return None,
        })
    }

    /// General register `gpr` by its SDM encoding, writable; `None` as for
    /// [`GuestRegisters::get`].
    pub fn slot(&mut self, gpr: u8) -> Option<&mut u64> {
        Some(match gpr {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return None,
        })
    }
}

#[repr(C)]
struct RunState {
    regs: GuestRegisters,
    /// HOST_RSP as last written; the trampoline rewrites it only on change.
    host_rsp: u64,
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(RunState, regs) == 0);
    assert!(offset_of!(GuestRegisters, rdi) == 48);
    assert!(offset_of!(GuestRegisters, r15) == 112);
    assert!(offset_of!(RunState, host_rsp) == 120);
};

// The trampoline, called from inline assembly in `Vcpu::run` with RDI =
// `*mut RunState` and ESI = launched; it returns EAX = 0 after a VM exit, 1
// for VMfailInvalid and 2 for VMfailValid. The caller's asm block declares
// every register but RBX and RBP clobbered, so only those two are saved
// here (the compiler saves R12-R15 once, outside the run loop). It pushes
// the state pointer, rewrites HOST_RSP (0x6c14) only when the stack moved,
// loads the guest registers and executes VMLAUNCH or VMRESUME. A VM exit
// lands at `ponte_vmx_exit_point` (HOST_RIP) with RSP = HOST_RSP and stores
// the guest registers.
core::arch::global_asm!(
    ".pushsection .text.ponte_vmx_run, \"ax\", @progbits",
    ".global ponte_vmx_run",
    "ponte_vmx_run:",
    "push rbp",
    "push rbx",
    "push rdi",
    "cmp rsp, [rdi + 120]",
    "je 2f",
    "mov [rdi + 120], rsp",
    "mov eax, 0x6c14",
    "vmwrite rax, rsp",
    "2:",
    "test esi, esi",
    "mov rax, [rdi]",
    "mov rcx, [rdi + 8]",
    "mov rdx, [rdi + 16]",
    "mov rbx, [rdi + 24]",
    "mov rbp, [rdi + 32]",
    "mov rsi, [rdi + 40]",
    "mov r8, [rdi + 56]",
    "mov r9, [rdi + 64]",
    "mov r10, [rdi + 72]",
    "mov r11, [rdi + 80]",
    "mov r12, [rdi + 88]",
    "mov r13, [rdi + 96]",
    "mov r14, [rdi + 104]",
    "mov r15, [rdi + 112]",
    "mov rdi, [rdi + 48]",
    "jnz 3f",
    "vmlaunch",
    "jmp 4f",
    "3:",
    "vmresume",
    "4:",
    "mov eax, 2",
    "jnc 5f",
    "mov eax, 1",
    "5:",
    "pop rdi",
    "jmp 6f",
    ".global ponte_vmx_exit_point",
    "ponte_vmx_exit_point:",
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi], rax",
    "mov [rdi + 8], rcx",
    "mov [rdi + 16], rdx",
    "mov [rdi + 24], rbx",
    "mov [rdi + 32], rbp",
    "mov [rdi + 40], rsi",
    "mov [rdi + 56], r8",
    "mov [rdi + 64], r9",
    "mov [rdi + 72], r10",
    "mov [rdi + 80], r11",
    "mov [rdi + 88], r12",
    "mov [rdi + 96], r13",
    "mov [rdi + 104], r14",
    "mov [rdi + 112], r15",
    "pop qword ptr [rdi + 48]",
    "pop rdi",
    "xor eax, eax",
    "6:",
    "pop rbx",
    "pop rbp",
    "ret",
    ".popsection",
);

extern "C" {
    fn ponte_vmx_run();
    fn ponte_vmx_exit_point();
}

/// HOST_RIP for every VMCS the run loop enters.
pub fn exit_point() -> u64 {
    ponte_vmx_exit_point as *const () as u64
}

/// Per-exit-reason counters and cumulative handling cost: TSC ticks from a
/// VM exit to the next VM entry (the integrator's handler plus the library's
/// exit and entry paths), collected when accounting is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStats {
    /// Exits per basic reason.
    pub count: [u64; EXIT_REASON_SLOTS],
    /// TSC ticks spent handling exits per basic reason.
    pub tsc: [u64; EXIT_REASON_SLOTS],
}

impl Default for ExitStats {
    fn default() -> Self {
        ExitStats {
            count: [0; EXIT_REASON_SLOTS],
            tsc: [0; EXIT_REASON_SLOTS],
        }
    }
}

impl ExitStats {
    /// Counts one exit of basic reason `reason`.
    #[inline(always)]
    pub fn record(&mut self, reason: u16) {
        if let Some(c) = self.count.get_mut(reason as usize) {
            *c += 1;
        }
    }
    /// Adds handling cost to `reason`.
    pub fn add_cost(&mut self, reason: u16, ticks: u64) {
        if let Some(t) = self.tsc.get_mut(reason as usize) {
            *t = t.saturating_add(ticks);
        }
    }
}

impl fmt::Display for ExitStats {
    /// One line per reason seen: name, count, total and mean TSC ticks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (&count, &tsc)) in self.count.iter().zip(&self.tsc).enumerate() {
            if count == 0 {
                continue;
            }
            // Reasons are named with the diagnostics feature, numbered
            // (SDM Vol. 3D, appendix C) without it.
            match BasicExitReason::from_number(n as u16) {
                Some(r) if cfg!(feature = "diagnostics") => write!(f, "{r:?}")?,
                _ => write!(f, "reason {n}")?,
            }
            writeln!(f, ": {count} exits, {tsc} ticks, {} per exit", tsc / count)?;
        }
        Ok(())
    }
}

/// Why `run` returned without a VM exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// VMLAUNCH/VMRESUME failed with VMfailInvalid (no current VMCS) or
    /// VMfailValid; errors 7 and 8 have been explained by the pre-flight
    /// checker through `log::error!` if the vCPU was asked to with
    /// [`Vcpu::explain_entry_failures`].
    Entry(VmcsError),
    /// Reading the exit information failed.
    Vmcs(VmcsError),
}

impl From<VmcsError> for RunError {
    fn from(e: VmcsError) -> Self {
        RunError::Vmcs(e)
    }
}

/// A virtual CPU: its VMCS (current on this CPU) and guest registers.
pub struct Vcpu {
    state: RunState,
    vmcs: Vmcs,
    active: ActiveVmcs,
    caps: VmxCapabilities,
    launched: bool,
    accounting: bool,
    last_exit: (u16, u64),
    stats: ExitStats,
    /// Logs why an entry failed; set only by [`Vcpu::explain_entry_failures`],
    /// so an image that never asks does not link the pre-flight checker.
    explain_entry_failure: Option<fn(&ActiveVmcs, &VmxCapabilities)>,
}

impl Vcpu {
    /// Prepares `region` as a VMCS, clears it and makes it current.
    // Out of line: inlined, the capabilities it copies are rebuilt field by
    // field from wherever the caller's code kept them.
    #[inline(never)]
    pub fn new(vmx: &Vmx, region: &'static mut Page4K) -> Result<Vcpu, VmxError> {
        let mut vmcs = Vmcs::new(region, vmx.caps());
        vmcs.clear(vmx)?;
        let active = vmcs.load(vmx)?;
        Ok(Vcpu {
            state: RunState {
                regs: GuestRegisters::default(),
                host_rsp: 0,
            },
            vmcs,
            active,
            caps: *vmx.caps(),
            launched: false,
            accounting: false,
            last_exit: (0, 0),
            stats: ExitStats::default(),
            explain_entry_failure: None,
        })
    }

    /// Makes this vCPU's VMCS current again (after another VMCS was loaded).
    pub fn make_current(&mut self, vmx: &Vmx) -> Result<(), VmxError> {
        self.active = self.vmcs.load(vmx)?;
        Ok(())
    }

    /// The VMCS, for setup and for fields the exit enum does not carry.
    pub fn vmcs(&mut self) -> &mut ActiveVmcs {
        &mut self.active
    }

    /// The capabilities the vCPU was created with.
    pub fn caps(&self) -> &VmxCapabilities {
        &self.caps
    }

    /// Writes the whole VMCS with [`setup_vmcs`]; HOST_RIP becomes the run
    /// loop's exit point whatever `host.rip` says.
    pub fn setup(
        &mut self,
        controls: &ControlSettings,
        host: &HostState,
        guest: &GuestState,
    ) -> Result<(), VmcsError> {
        let host = HostState {
            rip: exit_point(),
            ..*host
        };
        setup_vmcs(&mut self.active, &self.caps, controls, &host, guest)
    }

    /// Guest general registers.
    pub fn regs(&self) -> &GuestRegisters {
        &self.state.regs
    }

    /// Guest general registers, writable.
    pub fn regs_mut(&mut self) -> &mut GuestRegisters {
        &mut self.state.regs
    }

    /// Guest general registers and the VMCS, both writable: RSP, RIP and
    /// RFLAGS are in the VMCS.
    pub fn regs_and_vmcs_mut(&mut self) -> (&mut GuestRegisters, &mut ActiveVmcs) {
        (&mut self.state.regs, &mut self.active)
    }

    /// General register by SDM encoding (0 RAX .. 15 R15; 4 is RSP, in the VMCS).
    pub fn gpr(&mut self, index: u8) -> Result<u64, VmcsError> {
        match self.state.regs.slot(index) {
            Some(r) => Ok(*r),
            None => self.active.read(GuestN::Rsp),
        }
    }

    /// Sets a general register by SDM encoding.
    pub fn set_gpr(&mut self, index: u8, value: u64) -> Result<(), VmcsError> {
        match self.state.regs.slot(index) {
            Some(r) => {
                *r = value;
                Ok(())
            }
            None => self.active.write(GuestN::Rsp, value),
        }
    }

    /// Has every failed VM entry (an entry-failure exit, or VM-instruction
    /// error 7 or 8) explained through `log::error!` by the pre-flight
    /// checker ([`check_vm_entry`]), one line per violated rule. Off until
    /// called: the checker is a diagnostic of its own size, linked only
    /// into images that call this.
    pub fn explain_entry_failures(&mut self) {
        self.explain_entry_failure = Some(log_entry_checks);
    }

    /// Turns exit-cost accounting (one RDTSC pair per exit) on or off.
    pub fn set_accounting(&mut self, on: bool) {
        self.accounting = on;
        self.last_exit.1 = 0;
    }

    /// Exit counters and costs.
    pub fn stats(&self) -> &ExitStats {
        &self.stats
    }

    /// Exit qualification of the last exit.
    pub fn exit_qualification(&self) -> Result<u64, VmcsError> {
        self.active.read(ReadOnlyN::ExitQualification)
    }

    /// The event whose delivery the last exit interrupted (IDT-vectoring
    /// information and error code), to be re-injected with [`Vcpu::inject`].
    pub fn interrupted_event(&self) -> Result<Option<(InterruptionInfo, u32)>, VmcsError> {
        let info = InterruptionInfo(self.active.read(ReadOnly32::IdtVectoringInfo)?);
        if !info.valid() {
            return Ok(None);
        }
        let code = if info.has_error_code() {
            self.active.read(ReadOnly32::IdtVectoringErrorCode)?
        } else {
            0
        };
        Ok(Some((info, code)))
    }

    /// Moves the guest RIP past the instruction that caused the last exit.
    #[inline]
    pub fn skip_instruction(&mut self) -> Result<(), VmcsError> {
        let len = self.active.read(ReadOnly32::ExitInstructionLength)?;
        let rip = self.active.read(GuestN::Rip)?;
        self.active.write(GuestN::Rip, rip.wrapping_add(len as u64))
    }

    /// Injects an event at the next VM entry; `instruction_length` matters
    /// for software interrupts and exceptions.
    pub fn inject(
        &mut self,
        info: InterruptionInfo,
        error_code: u32,
        instruction_length: u32,
    ) -> Result<(), VmcsError> {
        if info.has_error_code() {
            self.active
                .write(Control32::EntryExceptionErrorCode, error_code)?;
        }
        self.active
            .write(Control32::EntryInstructionLength, instruction_length)?;
        self.active.write(Control32::EntryInterruptionInfo, info.0)
    }

    /// Runs the guest until the next VM exit and decodes it.
    #[inline(always)]
    pub fn run(&mut self) -> Result<VmExit, RunError> {
        let raw = self.enter()?;
        self.decode_exit(raw)
    }

    /// Runs the guest until the next VM exit and returns the raw exit
    /// reason, for run loops that handle their most frequent exits before
    /// decoding; [`Vcpu::decode_exit`] gives the decoded exit (and reports
    /// an entry failure) for the rest.
    #[inline(always)]
    pub fn enter(&mut self) -> Result<u32, RunError> {
        // Nonzero only with accounting on.
        if self.last_exit.1 != 0 {
            let (reason, at) = self.last_exit;
            self.stats.add_cost(reason, hw::rdtsc().wrapping_sub(at));
        }
        let rc: u32;
        // SAFETY: the VMCS is current (self.active) with HOST_RIP at the
        // exit point (setup); the trampoline preserves RBX, RBP and RSP,
        // every other register is declared clobbered, and it returns
        // normally on exit or failure.
        unsafe {
            core::arch::asm!(
                "call {run}",
                run = sym ponte_vmx_run,
                in("rdi") &mut self.state as *mut RunState,
                in("esi") self.launched as u32,
                lateout("eax") rc,
                out("r12") _, out("r13") _, out("r14") _, out("r15") _,
                clobber_abi("C"),
            );
        }
        if rc != 0 {
            return Err(self.entry_instruction_failed(rc));
        }
        // SAFETY: after a VM exit the VMCS is current and the exit-reason
        // field is always readable.
        let raw = unsafe { hw::vmread_unchecked(ReadOnly32::ExitReason as u32) } as u32;
        let reason = raw as u16;
        self.stats.record(reason);
        if self.accounting {
            self.last_exit = (reason, hw::rdtsc());
        }
        if raw & EXIT_REASON_ENTRY_FAILURE == 0 {
            self.launched = true;
        }
        Ok(raw)
    }

    /// Decodes the exit whose raw reason [`Vcpu::enter`] returned.
    #[inline(always)]
    pub fn decode_exit(&mut self, raw: u32) -> Result<VmExit, RunError> {
        if raw & EXIT_REASON_ENTRY_FAILURE != 0 {
            return self.entry_failed(raw);
        }
        self.decode(raw)
    }

    #[inline(always)]
    fn decode(&mut self, raw: u32) -> Result<VmExit, RunError> {
        let regs = &self.state.regs;
        let v = &self.active;
        Ok(match raw as u16 {
            10 => VmExit::Cpuid {
                leaf: regs.rax as u32,
                subleaf: regs.rcx as u32,
            },
            30 => VmExit::Io(IoAccess::decode(v.read(ReadOnlyN::ExitQualification)?)),
            31 => VmExit::Rdmsr {
                msr: regs.rcx as u32,
            },
            32 => VmExit::Wrmsr {
                msr: regs.rcx as u32,
                value: (regs.rdx << 32) | (regs.rax & 0xffff_ffff),
            },
            12 => VmExit::Hlt,
            18 => VmExit::Vmcall,
            48 => {
                let q = EptViolation(v.read(ReadOnlyN::ExitQualification)?);
                VmExit::EptViolation {
                    qualification: q,
                    gpa: v.read(ReadOnly64::GuestPhysicalAddress)?,
                    gla: if q.linear_address_valid() {
                        Some(v.read(ReadOnlyN::GuestLinearAddress)?)
                    } else {
                        None
                    },
                }
            }
            49 => VmExit::EptMisconfiguration {
                gpa: v.read(ReadOnly64::GuestPhysicalAddress)?,
            },
            0 => {
                let info = InterruptionInfo(v.read(ReadOnly32::ExitInterruptionInfo)?);
                VmExit::ExceptionOrNmi {
                    info,
                    error_code: if info.has_error_code() {
                        Some(v.read(ReadOnly32::ExitInterruptionErrorCode)?)
                    } else {
                        None
                    },
                    qualification: v.read(ReadOnlyN::ExitQualification)?,
                }
            }
            1 => VmExit::ExternalInterrupt(InterruptionInfo(
                v.read(ReadOnly32::ExitInterruptionInfo)?,
            )),
            2 => VmExit::TripleFault,
            7 => VmExit::InterruptWindow,
            8 => VmExit::NmiWindow,
            9 => VmExit::TaskSwitch(TaskSwitch::decode(v.read(ReadOnlyN::ExitQualification)?)),
            28 => VmExit::CrAccess(CrAccess::decode(v.read(ReadOnlyN::ExitQualification)?)),
            29 => VmExit::MovDr(MovDr::decode(v.read(ReadOnlyN::ExitQualification)?)),
            43 => VmExit::TprBelowThreshold,
            44 => VmExit::ApicAccess(ApicAccess::decode(v.read(ReadOnlyN::ExitQualification)?)),
            45 => VmExit::VirtualizedEoi {
                vector: v.read(ReadOnlyN::ExitQualification)? as u8,
            },
            56 => VmExit::ApicWrite {
                offset: (v.read(ReadOnlyN::ExitQualification)? & 0xfff) as u16,
            },
            52 => VmExit::PreemptionTimer,
            n => VmExit::Other {
                reason: BasicExitReason::from_number(n),
                raw,
            },
        })
    }

    #[cold]
    fn entry_failed(&mut self, raw: u32) -> Result<VmExit, RunError> {
        let qualification = self.active.read(ReadOnlyN::ExitQualification)?;
        let reason = BasicExitReason::from_number(raw as u16);
        log::error!("VM entry failed: exit reason {raw:#x}, qualification {qualification:#x}");
        self.explain_entry_failure();
        Ok(VmExit::EntryFailure {
            reason,
            raw,
            qualification,
        })
    }

    #[cold]
    fn entry_instruction_failed(&mut self, rc: u32) -> RunError {
        if rc == 1 {
            return RunError::Entry(VmcsError::NoCurrentVmcs);
        }
        let number = match self.active.read(ReadOnly32::VmInstructionError) {
            Ok(n) => n,
            Err(e) => return RunError::Vmcs(e),
        };
        let error = VmInstructionError::from_number(number);
        let instruction = Verbatim(if self.launched {
            "VMRESUME"
        } else {
            "VMLAUNCH"
        });
        #[cfg(feature = "diagnostics")]
        log::error!(
            "{instruction} failed: VM-instruction error {number} ({})",
            error.description()
        );
        #[cfg(not(feature = "diagnostics"))]
        log::error!("{instruction} failed: VM-instruction error {number}");
        if matches!(number, 7 | 8) {
            self.explain_entry_failure();
        }
        RunError::Entry(VmcsError::Failed(error))
    }

    #[cold]
    fn explain_entry_failure(&self) {
        if let Some(explain) = self.explain_entry_failure {
            explain(&self.active, &self.caps);
        }
    }
}

/// Logs the rules of the pre-flight checker that `vmcs` violates.
#[cold]
fn log_entry_checks(vmcs: &ActiveVmcs, caps: &VmxCapabilities) {
    let report = check_vm_entry(vmcs, caps);
    for v in report.violations.iter() {
        log::error!("VM-entry check {} violated: {:#x}", v.rule.name(), v.value);
    }
    if report.violations.is_empty() {
        log::error!("VM-entry pre-flight checks found nothing");
    }
}
