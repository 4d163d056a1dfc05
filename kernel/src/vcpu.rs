//! The exit dispatch: runs a vCPU and answers the exits the hypervisor
//! handles itself.
//!
//! [`VcpuHardware`] is what the dispatch needs of a processor running a guest
//! (the VMX vCPU of `ponte-arch`, or a scripted one in host tests); a
//! [`Platform`] is the appliance's board: its devices, device MSRs and
//! hypercalls. [`Dispatcher::run`] enters the guest and loops over exits:
//! CPUID from the [`CpuidPolicy`], port I/O to the platform, MSRs to the
//! platform or to [`VirtualMsrs`], VMCALL to the platform's hypercalls.
//! Everything it does not answer ends the loop with a [`Stop`] that says why,
//! so the integrator decides (HLT without an interrupt source, unhandled
//! exits, requests from devices such as a debug-exit port).

use ponte_arch::vmx::{
    vmcs::{Control32, Control64, Guest32, GuestN, ReadOnly32},
    GuestRegisters, InterruptionInfo, InterruptionType, RunError, VmExit, VmcsAccess, VmcsError,
    VmcsExt,
};

use crate::{
    cpuid::CpuidPolicy,
    device::AccessWidth,
    msr::{GeneralProtection, MsrWrite, VirtualMsrs},
};

/// What the dispatch needs of a processor that runs a guest.
pub trait VcpuHardware {
    /// The VMCS of this vCPU.
    type Vmcs: VmcsAccess + ?Sized;
    /// Enters the guest until the next VM exit.
    fn run(&mut self) -> Result<VmExit, RunError>;
    /// The guest's general registers (RSP, RIP, RFLAGS are in the VMCS).
    fn registers(&mut self) -> &mut GuestRegisters;
    /// The VMCS.
    fn vmcs(&mut self) -> &mut Self::Vmcs;
    /// The host's time-stamp counter now.
    fn host_tsc(&self) -> u64;
}

impl VcpuHardware for ponte_arch::vmx::Vcpu {
    type Vmcs = ponte_arch::vmx::ActiveVmcs;

    #[inline]
    fn run(&mut self) -> Result<VmExit, RunError> {
        ponte_arch::vmx::Vcpu::run(self)
    }

    #[inline]
    fn registers(&mut self) -> &mut GuestRegisters {
        self.regs_mut()
    }

    #[inline]
    fn vmcs(&mut self) -> &mut Self::Vmcs {
        ponte_arch::vmx::Vcpu::vmcs(self)
    }

    fn host_tsc(&self) -> u64 {
        ponte_arch::cpu::tsc()
    }
}

/// Why a device or hypercall asks the run loop to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopRequest {
    /// The guest asked to end the run with this status (QEMU's isa-debug-exit
    /// convention: `(value << 1) | 1`).
    ExitStatus(u64),
    /// The guest asked the machine to power off or shut down.
    PowerOff,
    /// The guest asked for a reset.
    Reset,
}

/// The appliance's board as the dispatch sees it.
///
/// Every method has a default that behaves like an empty PC: ports read as
/// all ones, no device MSRs, no hypercalls, nobody asks to stop.
pub trait Platform {
    /// A guest IN of `width` bytes from `port`.
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        let _ = (port, width);
        u32::MAX
    }
    /// A guest OUT of the low `width` bytes of `value` to `port`.
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        let _ = (port, width, value);
    }
    /// RDMSR of an MSR a device owns (APIC base, x2APIC...); `None` when no
    /// device owns `msr`.
    fn msr_read(&mut self, msr: u32) -> Option<Result<u64, GeneralProtection>> {
        let _ = msr;
        None
    }
    /// WRMSR of an MSR a device owns; `None` when no device owns `msr`.
    fn msr_write(&mut self, msr: u32, value: u64) -> Option<Result<(), GeneralProtection>> {
        let _ = (msr, value);
        None
    }
    /// VMCALL with the guest's registers; returns whether a hypercall
    /// interface answered it (it then set the result registers).
    fn hypercall(&mut self, registers: &mut GuestRegisters) -> bool {
        let _ = registers;
        false
    }
    /// Polled after every handled exit: a device's request to stop the run.
    fn stop_request(&mut self) -> Option<StopRequest> {
        None
    }
}

/// Why [`Dispatcher::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// A device or hypercall asked to stop.
    Requested(StopRequest),
    /// The guest executed HLT (RIP is past it); resume to continue.
    Halted,
    /// The guest triple-faulted.
    TripleFault,
    /// An exit the dispatch does not handle; the guest's RIP is unchanged.
    Unhandled(VmExit),
    /// VM entry failed (VM-instruction error, or exit reason 33/34/41).
    EntryFailed(EntryFailure),
    /// Reading or writing the VMCS failed.
    Vmcs(VmcsError),
}

/// How a VM entry failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    /// VMLAUNCH or VMRESUME failed as an instruction.
    Instruction(RunError),
    /// The entry failed after the instruction checks (exit reason bit 31).
    Exit(VmExit),
}

/// The value a VMCALL nobody answers returns in RAX: -1000, KVM's ENOSYS,
/// which test kernels written for KVM and QEMU expect.
pub const UNKNOWN_HYPERCALL: u64 = -1000i64 as u64;

const GP_VECTOR: u8 = 13;
const RFLAGS_VM: u64 = 1 << 17;
const ENTRY_IA32E_MODE: u32 = 1 << 9;
const CS_LONG_MODE: u32 = 1 << 13;
const CS_DEFAULT_32: u32 = 1 << 14;
const CR4_LA57: u64 = 1 << 12;

/// The exit dispatch of one vCPU.
#[derive(Debug)]
pub struct Dispatcher<'p, const CPUID: usize> {
    cpuid: &'p CpuidPolicy<CPUID>,
    msrs: VirtualMsrs,
}

/// What handling one exit led to.
enum Handled {
    Continue,
    Stop(Stop),
}

impl<'p, const CPUID: usize> Dispatcher<'p, CPUID> {
    /// A dispatcher answering CPUID from `cpuid`, with software MSRs of a
    /// processor with `physical_address_bits` bits of physical address.
    pub fn new(cpuid: &'p CpuidPolicy<CPUID>, physical_address_bits: u8) -> Self {
        Self {
            cpuid,
            msrs: VirtualMsrs::new(physical_address_bits),
        }
    }

    /// The software-emulated MSRs.
    pub fn msrs(&self) -> &VirtualMsrs {
        &self.msrs
    }

    /// Runs the guest until something the dispatch does not answer.
    pub fn run<H: VcpuHardware + ?Sized, P: Platform + ?Sized>(
        &mut self,
        cpu: &mut H,
        platform: &mut P,
    ) -> Stop {
        loop {
            let exit = match cpu.run() {
                Ok(exit) => exit,
                Err(e) => return Stop::EntryFailed(EntryFailure::Instruction(e)),
            };
            match self.handle(exit, cpu, platform) {
                Ok(Handled::Continue) => {}
                Ok(Handled::Stop(stop)) => return stop,
                Err(e) => return Stop::Vmcs(e),
            }
            if let Some(request) = platform.stop_request() {
                return Stop::Requested(request);
            }
        }
    }

    #[inline]
    fn handle<H: VcpuHardware + ?Sized, P: Platform + ?Sized>(
        &mut self,
        exit: VmExit,
        cpu: &mut H,
        platform: &mut P,
    ) -> Result<Handled, VmcsError> {
        match exit {
            VmExit::Cpuid { leaf, subleaf } => {
                let answer = self.cpuid.lookup(leaf, subleaf);
                let regs = cpu.registers();
                regs.rax = u64::from(answer.eax);
                regs.rbx = u64::from(answer.ebx);
                regs.rcx = u64::from(answer.ecx);
                regs.rdx = u64::from(answer.edx);
                skip_instruction(cpu.vmcs())?;
            }
            VmExit::Io(io) if !io.string => {
                let Some(width) = AccessWidth::from_bytes(usize::from(io.size)) else {
                    return Ok(Handled::Stop(Stop::Unhandled(exit)));
                };
                let regs = cpu.registers();
                if io.input {
                    let value = u64::from(platform.io_read(io.port, width)) & width.mask();
                    regs.rax = match width {
                        AccessWidth::Dword | AccessWidth::Qword => value,
                        _ => (regs.rax & !width.mask()) | value,
                    };
                } else {
                    platform.io_write(io.port, width, (regs.rax & width.mask()) as u32);
                }
                skip_instruction(cpu.vmcs())?;
            }
            VmExit::Rdmsr { msr } => {
                let value = match platform.msr_read(msr) {
                    Some(result) => result,
                    None => {
                        let tsc = guest_tsc(cpu)?;
                        self.msrs.read(msr, tsc)
                    }
                };
                match value {
                    Ok(value) => {
                        let regs = cpu.registers();
                        regs.rax = value & 0xFFFF_FFFF;
                        regs.rdx = value >> 32;
                        skip_instruction(cpu.vmcs())?;
                    }
                    Err(_) => inject_gp(cpu.vmcs())?,
                }
            }
            VmExit::Wrmsr { msr, value } => {
                let result = match platform.msr_write(msr, value) {
                    Some(result) => result,
                    None => match self.msrs.write(msr, value) {
                        Ok(MsrWrite::Done) => Ok(()),
                        Ok(MsrWrite::SetTsc(tsc)) => {
                            let offset = tsc.wrapping_sub(cpu.host_tsc());
                            cpu.vmcs().write(Control64::TscOffset, offset)?;
                            Ok(())
                        }
                        Err(gp) => Err(gp),
                    },
                };
                match result {
                    Ok(()) => skip_instruction(cpu.vmcs())?,
                    Err(_) => inject_gp(cpu.vmcs())?,
                }
            }
            VmExit::Vmcall => {
                if !platform.hypercall(cpu.registers()) {
                    cpu.registers().rax = UNKNOWN_HYPERCALL;
                }
                skip_instruction(cpu.vmcs())?;
            }
            VmExit::Hlt => {
                skip_instruction(cpu.vmcs())?;
                return Ok(Handled::Stop(Stop::Halted));
            }
            VmExit::TripleFault => return Ok(Handled::Stop(Stop::TripleFault)),
            VmExit::EntryFailure { .. } => {
                return Ok(Handled::Stop(Stop::EntryFailed(EntryFailure::Exit(exit))))
            }
            other => return Ok(Handled::Stop(Stop::Unhandled(other))),
        }
        Ok(Handled::Continue)
    }
}

/// The guest's TSC: the host's plus the VMCS TSC offset.
fn guest_tsc<H: VcpuHardware + ?Sized>(cpu: &mut H) -> Result<u64, VmcsError> {
    let offset = cpu.vmcs().read(Control64::TscOffset)?;
    Ok(cpu.host_tsc().wrapping_add(offset))
}

/// Moves the guest's RIP past the instruction that exited. When the next
/// RIP would be outside the code segment (beyond its limit outside 64-bit
/// mode, non-canonical in 64-bit mode) the guest receives #GP(0) instead, as
/// hardware would deliver it, rather than a VM entry that fails.
#[inline]
pub fn skip_instruction<V: VmcsAccess + ?Sized>(vmcs: &mut V) -> Result<(), VmcsError> {
    let length = u64::from(vmcs.read(ReadOnly32::ExitInstructionLength)?);
    let next = vmcs.read(GuestN::Rip)?.wrapping_add(length);
    let access = vmcs.read(Guest32::CsAccessRights)?;
    // CS.L matters only in IA-32e mode, which the entry control mirrors.
    let long_mode =
        access & CS_LONG_MODE != 0 && vmcs.read(Control32::EntryControls)? & ENTRY_IA32E_MODE != 0;
    let in_segment = if long_mode {
        next < 1 << 47 || {
            let la57 = vmcs.read(GuestN::Cr4)? & CR4_LA57 != 0;
            is_canonical(next, if la57 { 57 } else { 48 })
        }
    } else {
        let rflags = vmcs.read(GuestN::Rflags)?;
        let offset_mask = if access & CS_DEFAULT_32 != 0 && rflags & RFLAGS_VM == 0 {
            0xFFFF_FFFF
        } else {
            0xFFFF
        };
        next & offset_mask <= u64::from(vmcs.read(Guest32::CsLimit)?) && next <= offset_mask
    };
    if in_segment {
        vmcs.write(GuestN::Rip, next)
    } else {
        inject_gp(vmcs)
    }
}

fn is_canonical(address: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    ((address << shift) as i64 >> shift) as u64 == address
}

/// Makes the next VM entry deliver #GP(0) to the guest (RIP unchanged, so the
/// faulting instruction is reported, as on hardware).
pub fn inject_gp<V: VmcsAccess + ?Sized>(vmcs: &mut V) -> Result<(), VmcsError> {
    let info = InterruptionInfo::new(GP_VECTOR, InterruptionType::HardwareException, true);
    vmcs.write(Control32::EntryExceptionErrorCode, 0)?;
    vmcs.write(Control32::EntryInterruptionInfo, info.0)
}

#[cfg(test)]
mod tests;
