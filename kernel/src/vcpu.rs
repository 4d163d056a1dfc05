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
//!
//! With [`Dispatcher::with_virtual_apic`] the processor virtualizes the
//! local APIC (see [`apicv`]): the dispatch keeps the virtual-APIC page and
//! the LAPIC model in step around every exit and entry, performs APIC-access
//! exits as accesses to the xAPIC page and APIC-write exits on the model.
//! MOV to and from CR8 (the TPR's bits 7:4) is performed on the model when
//! it exits.

pub mod apicv;

use ponte_arch::vmx::{
    controls::ProcControl,
    vmcs::{Control32, Control64, Guest32, GuestN, ReadOnly32},
    GuestRegisters, InterruptionInfo, InterruptionType, RunError, VmExit, VmcsAccess, VmcsError,
    VmcsExt,
};

use ponte_arch::ept::EptViolation;

use ponte_arch::vmx::caps::FixedBits;

use ponte_arch::vmx::exit::{ApicAccess, CrAccess, CrAccessType};

use crate::{
    cpu_state::{handle_cr_access, read_gpr, write_gpr, Cr4Policy, CrOutcome},
    cpuid::{CpuidPolicy, CpuidResult},
    decode::{
        mmio::{MmioError, Registers, UnclaimedAccess, VcpuState, WriteBack},
        CpuMode,
    },
    device::AccessWidth,
    irq::inject::{
        interruptibility, ActivityState, Decision, EntryDecision, EventInjection, GuestEventState,
    },
    irq::lapic::{MSR_APIC_BASE, MSR_X2APIC_FIRST, MSR_X2APIC_LAST},
    memory::translate::PagingContext,
    msr::{GeneralProtection, MsrWrite, VirtualMsrs},
};

/// What the dispatch needs of a processor that runs a guest.
pub trait VcpuHardware {
    /// The VMCS of this vCPU.
    type Vmcs: VmcsAccess + ?Sized;
    /// Enters the guest until the next VM exit; returns the raw exit reason.
    fn enter(&mut self) -> Result<u32, RunError>;
    /// Decodes the exit whose raw reason [`VcpuHardware::enter`] returned.
    fn decode_exit(&mut self, raw: u32) -> Result<VmExit, RunError>;
    /// The guest's general registers (RSP, RIP, RFLAGS are in the VMCS).
    fn registers(&mut self) -> &mut GuestRegisters;
    /// The VMCS.
    fn vmcs(&mut self) -> &mut Self::Vmcs;
    /// The general registers and the VMCS at once, for the handlers that
    /// read a register by its encoding (RSP is in the VMCS).
    fn registers_and_vmcs(&mut self) -> (&mut GuestRegisters, &mut Self::Vmcs);
    /// The host's time-stamp counter now.
    fn host_tsc(&self) -> u64;
    /// Bits 63:0 of the guest's XMM registers 0-15.
    fn xmm_lows(&mut self) -> [u64; 16];
    /// For each bit `n` set in `mask`, sets bits 63:0 of the guest's XMM
    /// register `n` to `values[n]` and bits 127:64 to zero (what MOVQ xmm,
    /// m64 does).
    fn load_xmm_lows(&mut self, mask: u16, values: &[u64; 16]);
}

impl VcpuHardware for ponte_arch::vmx::Vcpu {
    type Vmcs = ponte_arch::vmx::ActiveVmcs;

    #[inline(always)]
    fn enter(&mut self) -> Result<u32, RunError> {
        ponte_arch::vmx::Vcpu::enter(self)
    }

    #[inline(always)]
    fn decode_exit(&mut self, raw: u32) -> Result<VmExit, RunError> {
        ponte_arch::vmx::Vcpu::decode_exit(self, raw)
    }

    #[inline]
    fn registers(&mut self) -> &mut GuestRegisters {
        self.regs_mut()
    }

    #[inline]
    fn vmcs(&mut self) -> &mut Self::Vmcs {
        ponte_arch::vmx::Vcpu::vmcs(self)
    }

    #[inline]
    fn registers_and_vmcs(&mut self) -> (&mut GuestRegisters, &mut Self::Vmcs) {
        self.regs_and_vmcs_mut()
    }

    fn host_tsc(&self) -> u64 {
        ponte_arch::cpu::tsc()
    }

    /// The image keeps no state in XMM registers, so during an exit the
    /// processor's registers are the guest's.
    fn xmm_lows(&mut self) -> [u64; 16] {
        ponte_arch::cpu::xmm_lows()
    }

    fn load_xmm_lows(&mut self, mask: u16, values: &[u64; 16]) {
        ponte_arch::cpu::load_xmm_lows(mask, values)
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

/// The interrupt side of a board: its lines, router, interrupt controllers
/// and timers (see [`crate::irq`]). The dispatch asks it before every VM
/// entry what to inject.
pub trait Interrupts {
    /// Samples the lines and timers and decides the next entry for a guest
    /// in state `guest` (see [`crate::irq::inject::decide`]).
    fn decide(&mut self, guest: &GuestEventState) -> Decision;
    /// The earliest timer deadline, in nanoseconds on [`Interrupts::now_ns`]'s clock.
    fn next_deadline_ns(&self) -> Option<u64>;
    /// The current time in nanoseconds.
    fn now_ns(&self) -> u64;
    /// The vCPU's local APIC model, for APIC virtualization and CR8 (the
    /// default: none; CR8 exits then end the run loop as unhandled).
    fn local_apic(&mut self) -> Option<&mut dyn apicv::ApicModel> {
        None
    }
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
    /// Adjusts the policy's answer to CPUID `leaf`/`subleaf` for state the
    /// board's devices hold (e.g. CPUID.1:EDX.APIC follows IA32_APIC_BASE,
    /// see [`crate::cpu_state::adjust_cpuid_for_apic`]). The default leaves
    /// it as it is.
    fn adjust_cpuid(&mut self, leaf: u32, subleaf: u32, answer: &mut CpuidResult) {
        let _ = (leaf, subleaf, answer);
    }
    /// Polled after every handled exit: a device's request to stop the run.
    fn stop_request(&mut self) -> Option<StopRequest> {
        None
    }
    /// An EPT violation at an address that is not RAM, to perform on the
    /// owning device: usually one call to
    /// [`crate::decode::mmio::handle_ept_violation`] with the board's layout
    /// and devices. `None` (the default): the board has no MMIO, and the
    /// exit ends the run loop as unhandled.
    fn ept_violation(
        &mut self,
        violation: &EptViolation,
        vcpu: &VcpuState,
    ) -> Option<Result<WriteBack, MmioError>> {
        let _ = (violation, vcpu);
        None
    }
    /// An access to a guest-physical address nothing owns, completed as an
    /// empty bus would (reads all ones, writes dropped).
    fn unclaimed_access(&mut self, access: UnclaimedAccess) {
        if access.write {
            log::warn!(
                "guest write to nothing at {:#x} ({} bytes)",
                access.guest_physical,
                access.width.bytes()
            );
        } else {
            log::warn!(
                "guest read from nothing at {:#x} ({} bytes)",
                access.guest_physical,
                access.width.bytes()
            );
        }
    }
    /// The board's interrupt system, if it has one. Without one, HLT ends
    /// the run loop with [`Stop::Halted`].
    fn interrupts(&mut self) -> Option<&mut dyn Interrupts> {
        None
    }
}

/// Why [`Dispatcher::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// A device or hypercall asked to stop.
    Requested(StopRequest),
    /// The guest executed HLT (RIP is past it) and nothing can wake it: the
    /// board has no interrupt system, or no interrupt or timer is pending.
    /// Resume to continue.
    Halted,
    /// The guest triple-faulted.
    TripleFault,
    /// An exit the dispatch does not handle; the guest's RIP is unchanged.
    Unhandled(VmExit),
    /// VM entry failed (VM-instruction error, or exit reason 33/34/41).
    EntryFailed(EntryFailure),
    /// Reading or writing the VMCS failed.
    Vmcs(VmcsError),
    /// An MMIO access could not be emulated (undecodable instruction, an
    /// access across a region's end, a fetch that faults...).
    Mmio(MmioError),
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
/// Basic exit reason of CPUID.
const CPUID_EXIT: u32 = 10;
const VALID: u32 = 1 << 31;
const RFLAGS_IF: u64 = 1 << 9;
const INTERRUPT_WINDOW: u32 = ProcControl::InterruptWindowExiting.bit();
const NMI_WINDOW: u32 = ProcControl::NmiWindowExiting.bit();
const ENTRY_IA32E_MODE: u32 = 1 << 9;
const CS_LONG_MODE: u32 = 1 << 13;
const CS_DEFAULT_32: u32 = 1 << 14;
const CR4_LA57: u64 = 1 << 12;
const RFLAGS_VM: u64 = 1 << 17;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The exit dispatch of one vCPU.
#[derive(Debug)]
pub struct Dispatcher<'p, const CPUID: usize> {
    cpuid: &'p CpuidPolicy<CPUID>,
    msrs: VirtualMsrs,
    physical_address_bits: u8,
    /// The event the last exit interrupted, to deliver again.
    reinject: Option<EventInjection>,
    /// The guest executed HLT and waits for an interrupt.
    halted: bool,
    /// The deadline the vCPU last slept until.
    last_wait: Option<u64>,
    /// Interrupt- and NMI-window exiting as last written.
    windows: u32,
    preemption: Option<ScaledTimer>,
    control_registers: Option<ControlRegisters>,
    virtual_apic: Option<apicv::VirtualApic<'p>>,
    /// External interrupts the run loop injected (not counting events it
    /// delivered again).
    injected: u64,
}

/// What MOV to CR0/CR4 emulation needs: the CR4 bits the guest may set and
/// the processor's CR0 and CR4 fixed bits in VMX operation.
#[derive(Clone, Copy, Debug)]
struct ControlRegisters {
    cr4: Cr4Policy,
    fixed: [FixedBits; 2],
}

/// How to turn nanoseconds into VMX-preemption timer ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreemptionTimer {
    /// The timer counts down once every 2^rate TSC ticks (IA32_VMX_MISC 4:0).
    pub rate: u8,
    /// TSC frequency in Hz.
    pub tsc_hz: u64,
}

impl PreemptionTimer {
    /// The timer value that expires `ns` nanoseconds from now (rounded
    /// down, so never late by more than one timer tick).
    pub fn value_for_ns(&self, ns: u64) -> u32 {
        ScaledTimer::from(*self).value_for_ns(ns)
    }
}

/// A [`PreemptionTimer`] with its conversion factor computed once, so that
/// arming it before each entry costs a multiplication, not a division.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScaledTimer {
    rate: u8,
    /// TSC ticks per nanosecond, times 2^32.
    ticks_per_ns: u128,
}

impl From<PreemptionTimer> for ScaledTimer {
    fn from(timer: PreemptionTimer) -> Self {
        Self {
            rate: timer.rate,
            ticks_per_ns: (u128::from(timer.tsc_hz) << 32) / 1_000_000_000,
        }
    }
}

impl ScaledTimer {
    fn value_for_ns(&self, ns: u64) -> u32 {
        let ticks = (u128::from(ns) * self.ticks_per_ns) >> 32;
        u32::try_from(ticks >> self.rate).unwrap_or(u32::MAX)
    }
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
            physical_address_bits,
            reinject: None,
            halted: false,
            last_wait: None,
            windows: 0,
            preemption: None,
            control_registers: None,
            virtual_apic: None,
            injected: 0,
        }
    }

    /// How many external interrupts the run loop injected through the
    /// VM-entry interruption-information field (re-deliveries of
    /// interrupted events not counted); with virtual-interrupt delivery the
    /// LAPIC's vectors are not among them.
    pub fn injected_interrupts(&self) -> u64 {
        self.injected
    }

    /// Runs the guest with APIC virtualization (see [`apicv`]), or without
    /// when `apic` is `None` (the software tier): its controls set
    /// ([`apicv::ApicVirtualization::require_controls`]) and its APIC-access
    /// page mapped; the run loop writes its VMCS fields before the first
    /// entry unless [`apicv::VirtualApic::configure`] did. The platform's
    /// interrupt system must give the LAPIC model
    /// ([`Interrupts::local_apic`]).
    pub fn with_virtual_apic(mut self, apic: Option<apicv::VirtualApic<'p>>) -> Self {
        self.virtual_apic = apic;
        self
    }

    /// The APIC virtualization in use, with its statistics.
    pub fn virtual_apic(&self) -> Option<&apicv::VirtualApic<'p>> {
        self.virtual_apic.as_ref()
    }

    /// Performs MOV to CR0 and CR4 exits as the processor would
    /// ([`crate::cpu_state::handle_cr_access`]): the guest may set the CR4
    /// bits of `cr4` (install its mask in the VMCS with
    /// [`Cr4Policy::install`] so that the others exit), `fixed` are the
    /// processor's CR0 and CR4 fixed bits (`VmxCapabilities::cr0`, `cr4`).
    /// Other control-register exits end the run loop as unhandled.
    pub fn with_control_registers(mut self, cr4: Cr4Policy, fixed: [FixedBits; 2]) -> Self {
        self.control_registers = Some(ControlRegisters { cr4, fixed });
        self
    }

    /// Arms the VMX-preemption timer (the pin control must be enabled) for
    /// the next timer deadline before every entry, so a guest that runs
    /// without exits still takes its timer interrupts on time.
    pub fn with_preemption_timer(mut self, timer: PreemptionTimer) -> Self {
        self.preemption = Some(timer.into());
        self
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
        if let Some(virtual_apic) = self.virtual_apic.as_mut() {
            if !virtual_apic.is_configured() {
                if let Err(e) = virtual_apic.configure(cpu.vmcs()) {
                    return Stop::Vmcs(e);
                }
            }
        }
        loop {
            match self.prepare_entry(cpu, platform) {
                Ok(None) => {}
                Ok(Some(stop)) => return stop,
                Err(e) => return Stop::Vmcs(e),
            }
            let raw = match cpu.enter() {
                Ok(raw) => raw,
                Err(e) => return Stop::EntryFailed(EntryFailure::Instruction(e)),
            };
            if let Some(virtual_apic) = self.virtual_apic.as_mut() {
                if let Some(apic) = platform.interrupts().and_then(|i| i.local_apic()) {
                    virtual_apic.after_exit(apic);
                }
            }
            // CPUID is the exit guests take most (it serializes, and guests
            // probe with it): answered before the general decoding. An
            // instruction's own exit never interrupts event delivery, so
            // only the others can carry an event to deliver again.
            let handled = if raw == CPUID_EXIT {
                self.cpuid(cpu, platform).map(|()| Handled::Continue)
            } else {
                match read_idt_vectoring(cpu.vmcs()) {
                    Ok(event) => self.reinject = event,
                    Err(e) => return Stop::Vmcs(e),
                }
                match cpu.decode_exit(raw) {
                    Ok(exit) => self.handle(exit, cpu, platform),
                    Err(e) => return Stop::EntryFailed(EntryFailure::Instruction(e)),
                }
            };
            match handled {
                Ok(Handled::Continue) => {}
                Ok(Handled::Stop(stop)) => return stop,
                Err(e) => return Stop::Vmcs(e),
            }
            if let Some(request) = platform.stop_request() {
                return Stop::Requested(request);
            }
        }
    }

    /// Sets up the next entry's event: the event an exit interrupted is
    /// delivered again; with an interrupt system, the decision of
    /// [`Interrupts::decide`] is applied (injection, window exits, waking a
    /// halted vCPU, sleeping until the next timer).
    fn prepare_entry<H: VcpuHardware + ?Sized, P: Platform + ?Sized>(
        &mut self,
        cpu: &mut H,
        platform: &mut P,
    ) -> Result<Option<Stop>, VmcsError> {
        let has_interrupts = platform.interrupts().is_some();
        if !has_interrupts && self.reinject.is_none() {
            return Ok(None);
        }
        let vmcs = cpu.vmcs();
        // An exception a handler injected (#GP) outranks what was interrupted.
        let injected = vmcs.read(Control32::EntryInterruptionInfo)?;
        let pending = if injected & VALID != 0 {
            let error = vmcs.read(Control32::EntryExceptionErrorCode)?;
            let length = vmcs.read(Control32::EntryInstructionLength)?;
            self.reinject = None;
            EventInjection::from_idt_vectoring(injected, error, length)
        } else {
            self.reinject.take()
        };
        let Some(interrupts) = platform.interrupts() else {
            if let Some(event) = pending.filter(|_| injected & VALID == 0) {
                write_event(vmcs, event)?;
            }
            return Ok(None);
        };
        let delivers = match self.virtual_apic.as_mut() {
            Some(virtual_apic) if virtual_apic.delivers_interrupts() => {
                if let Some(apic) = interrupts.local_apic() {
                    virtual_apic.before_decision(apic);
                }
                true
            }
            _ => false,
        };
        let guest = GuestEventState {
            interrupts_enabled: vmcs.read(GuestN::Rflags)? & RFLAGS_IF != 0,
            interruptibility: vmcs.read(Guest32::InterruptibilityState)?,
            activity: if self.halted {
                ActivityState::Hlt
            } else {
                ActivityState::Active
            },
            idt_vectoring: pending,
        };
        loop {
            let mut decision = interrupts.decide(&guest);
            // With virtual-interrupt delivery the decision never sees the
            // LAPIC's vectors: a halted vCPU wakes for one the processor
            // will deliver as soon as it runs (IF=1, above the PPR).
            if delivers && self.halted && guest.interrupts_enabled {
                let deliverable = interrupts
                    .local_apic()
                    .is_some_and(|apic| apic.deliverable_vector().is_some());
                decision = match decision {
                    Decision::Enter(entry) if deliverable => Decision::Enter(EntryDecision {
                        wake: true,
                        ..entry
                    }),
                    Decision::Sleep { .. } if deliverable => Decision::Enter(EntryDecision {
                        wake: true,
                        ..EntryDecision::default()
                    }),
                    other => other,
                };
            }
            let wait_until = match decision {
                Decision::Enter(entry) if !self.halted || entry.wake => {
                    if let Some(event) = entry.inject {
                        write_event(vmcs, event)?;
                        if guest.idt_vectoring.is_none()
                            && event.kind == crate::irq::inject::EventKind::ExternalInterrupt
                        {
                            self.injected += 1;
                        }
                    }
                    if entry.wake {
                        self.halted = false;
                        let blocking = interruptibility::STI | interruptibility::MOV_SS;
                        vmcs.update32(Guest32::InterruptibilityState, 0, blocking)?;
                    }
                    let windows = (u32::from(entry.interrupt_window) * INTERRUPT_WINDOW)
                        | (u32::from(entry.nmi_window) * NMI_WINDOW);
                    if windows != self.windows {
                        let clear = !windows & (INTERRUPT_WINDOW | NMI_WINDOW);
                        vmcs.update32(Control32::ProcBasedControls, windows, clear)?;
                        self.windows = windows;
                    }
                    if let Some(virtual_apic) = self.virtual_apic.as_mut() {
                        if let Some(apic) = interrupts.local_apic() {
                            virtual_apic.before_entry(vmcs, apic)?;
                        }
                    }
                    // Last: the timer counts from the entry, so the time
                    // is read as close to it as possible.
                    if let Some(timer) = self.preemption {
                        let now = interrupts.now_ns();
                        let value = interrupts.next_deadline_ns().map_or(u32::MAX, |deadline| {
                            timer.value_for_ns(deadline.saturating_sub(now))
                        });
                        vmcs.write(Guest32::PreemptionTimerValue, value)?;
                    }
                    return Ok(None);
                }
                // Halted and nothing deliverable yet (an interrupt held by
                // IF=0 cannot wake HLT): wait for the next timer.
                Decision::Enter(_) => interrupts.next_deadline_ns(),
                Decision::Sleep { until_ns } => until_ns,
            };
            let Some(until) = wait_until else {
                return Ok(Some(Stop::Halted));
            };
            // A deadline that is already due and stays due would spin for
            // ever: the timers did not advance, so nothing will wake the vCPU.
            if until <= interrupts.now_ns() && Some(until) == self.last_wait {
                return Ok(Some(Stop::Halted));
            }
            self.last_wait = Some(until);
            while interrupts.now_ns() < until {
                core::hint::spin_loop();
            }
        }
    }

    /// Answers CPUID (EAX = leaf, ECX = subleaf) from the policy.
    #[inline(always)]
    fn cpuid<H: VcpuHardware + ?Sized, P: Platform + ?Sized>(
        &mut self,
        cpu: &mut H,
        platform: &mut P,
    ) -> Result<(), VmcsError> {
        let regs = cpu.registers();
        let (leaf, subleaf) = (regs.rax as u32, regs.rcx as u32);
        let mut answer = self.cpuid.lookup(leaf, subleaf);
        platform.adjust_cpuid(leaf, subleaf, &mut answer);
        regs.rax = u64::from(answer.eax);
        regs.rbx = u64::from(answer.ebx);
        regs.rcx = u64::from(answer.ecx);
        regs.rdx = u64::from(answer.edx);
        skip_instruction(cpu.vmcs())
    }

    #[inline]
    fn handle<H: VcpuHardware + ?Sized, P: Platform + ?Sized>(
        &mut self,
        exit: VmExit,
        cpu: &mut H,
        platform: &mut P,
    ) -> Result<Handled, VmcsError> {
        match exit {
            VmExit::Cpuid { .. } => self.cpuid(cpu, platform)?,
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
                if let Some(virtual_apic) = self.virtual_apic.as_mut() {
                    // IA32_APIC_BASE and the x2APIC registers change what
                    // the page mirrors.
                    if matches!(msr, MSR_APIC_BASE | MSR_X2APIC_FIRST..=MSR_X2APIC_LAST) {
                        virtual_apic.registers_changed();
                    }
                }
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
                if platform.interrupts().is_none() {
                    return Ok(Handled::Stop(Stop::Halted));
                }
                self.halted = true;
            }
            // The next entry's decision handles what these exits signal.
            VmExit::InterruptWindow
            | VmExit::NmiWindow
            | VmExit::PreemptionTimer
            | VmExit::ExternalInterrupt(_) => {}
            VmExit::EptViolation {
                qualification,
                gpa,
                gla,
            } => {
                let violation = EptViolation::from_exit(qualification.0, gpa, gla.unwrap_or(0));
                if let Some(virtual_apic) = self.virtual_apic.as_mut() {
                    // An xAPIC page the board serves by MMIO (moved away
                    // from the virtualized one).
                    let page = platform
                        .interrupts()
                        .and_then(|i| i.local_apic())
                        .and_then(|apic| apic.mmio_base());
                    if page == Some(gpa & !0xFFF) {
                        virtual_apic.registers_changed();
                    }
                }
                return self.emulate_mmio(&violation, exit, cpu, platform);
            }
            VmExit::ApicAccess(access) => return self.apic_access(access, exit, cpu, platform),
            VmExit::ApicWrite { offset } => {
                let Some(virtual_apic) = self.virtual_apic.as_mut() else {
                    return Ok(Handled::Stop(Stop::Unhandled(exit)));
                };
                let Some(apic) = platform.interrupts().and_then(|i| i.local_apic()) else {
                    return Ok(Handled::Stop(Stop::Unhandled(exit)));
                };
                virtual_apic.apic_write(offset, apic);
            }
            // Trap-like: the TPR or the in-service vectors changed on the
            // page, which the model took over right after the exit.
            VmExit::TprBelowThreshold | VmExit::VirtualizedEoi { .. }
                if self.virtual_apic.is_some() => {}
            VmExit::CrAccess(CrAccess { cr: 8, access }) => {
                return self.cr8_access(access, exit, cpu, platform)
            }
            VmExit::CrAccess(access) => {
                let Some(control) = self.control_registers else {
                    return Ok(Handled::Stop(Stop::Unhandled(exit)));
                };
                let (registers, vmcs) = cpu.registers_and_vmcs();
                let ia32e = vmcs.read(Control32::EntryControls)? & ENTRY_IA32E_MODE != 0;
                let efer = guest_efer(vmcs, ia32e);
                // #GP is injected by the handler; both outcomes continue.
                if let CrOutcome::NotHandled(_) =
                    handle_cr_access(vmcs, registers, access, &control.cr4, control.fixed, efer)?
                {
                    return Ok(Handled::Stop(Stop::Unhandled(exit)));
                }
            }
            VmExit::TripleFault => return Ok(Handled::Stop(Stop::TripleFault)),
            VmExit::EntryFailure { .. } => {
                return Ok(Handled::Stop(Stop::EntryFailed(EntryFailure::Exit(exit))))
            }
            other => return Ok(Handled::Stop(Stop::Unhandled(other))),
        }
        Ok(Handled::Continue)
    }

    /// Performs the instruction behind an EPT violation (or an APIC access
    /// made to look like one) on the platform's MMIO devices.
    fn emulate_mmio<H: VcpuHardware + ?Sized, P: Platform + ?Sized>(
        &mut self,
        violation: &EptViolation,
        exit: VmExit,
        cpu: &mut H,
        platform: &mut P,
    ) -> Result<Handled, VmcsError> {
        let state = vcpu_state(cpu, self.physical_address_bits)?;
        let outcome = platform.ept_violation(violation, &state);
        if !matches!(outcome, Some(Ok(_))) && violation.nmi_unblocking {
            // The instruction will run again: an IRET that unblocked
            // NMIs before faulting must find them blocked (SDM 28.2.3).
            cpu.vmcs()
                .update32(Guest32::InterruptibilityState, interruptibility::NMI, 0)?;
        }
        match outcome {
            None | Some(Err(MmioError::Ram { .. })) => Ok(Handled::Stop(Stop::Unhandled(exit))),
            Some(Err(e)) => Ok(Handled::Stop(Stop::Mmio(e))),
            Some(Ok(ref write_back)) => {
                if let Some(access) = write_back.unclaimed {
                    platform.unclaimed_access(access);
                }
                apply_write_back(cpu, write_back)?;
                Ok(Handled::Continue)
            }
        }
    }

    /// An APIC-access exit: a read or write of the xAPIC page the processor
    /// does not virtualize. It has not happened; it is performed like an
    /// access to the page's MMIO region, by the same device.
    fn apic_access<H: VcpuHardware + ?Sized, P: Platform + ?Sized>(
        &mut self,
        access: ApicAccess,
        exit: VmExit,
        cpu: &mut H,
        platform: &mut P,
    ) -> Result<Handled, VmcsError> {
        let Some(virtual_apic) = self.virtual_apic.as_mut() else {
            return Ok(Handled::Stop(Stop::Unhandled(exit)));
        };
        if !access.is_instruction_data_access() {
            return Ok(Handled::Stop(Stop::Unhandled(exit)));
        }
        virtual_apic.apic_access_performed();
        let address = virtual_apic.guest_base() | u64::from(access.offset & 0xFFF);
        let qualification = if access.access_type == ApicAccess::LINEAR_WRITE {
            2
        } else {
            1
        };
        let violation = EptViolation::from_exit(qualification, address, 0);
        self.emulate_mmio(&violation, exit, cpu, platform)
    }

    /// MOV to or from CR8, on the LAPIC model's TPR (CR8[3:0] = TPR[7:4]).
    /// A value with bits 63:4 set raises #GP.
    fn cr8_access<H: VcpuHardware + ?Sized, P: Platform + ?Sized>(
        &mut self,
        access: CrAccessType,
        exit: VmExit,
        cpu: &mut H,
        platform: &mut P,
    ) -> Result<Handled, VmcsError> {
        let Some(apic) = platform.interrupts().and_then(|i| i.local_apic()) else {
            return Ok(Handled::Stop(Stop::Unhandled(exit)));
        };
        let (registers, vmcs) = cpu.registers_and_vmcs();
        match access {
            CrAccessType::MovTo { gpr } => {
                let value = read_gpr(vmcs, registers, gpr)?;
                if value >> 4 != 0 {
                    inject_gp(vmcs)?;
                    return Ok(Handled::Continue);
                }
                apic.set_tpr((value as u8) << 4);
            }
            CrAccessType::MovFrom { gpr } => {
                let value = u64::from(apic.tpr() >> 4);
                write_gpr(vmcs, registers, gpr, value)?;
            }
            _ => return Ok(Handled::Stop(Stop::Unhandled(exit))),
        }
        if let Some(virtual_apic) = self.virtual_apic.as_mut() {
            virtual_apic.registers_changed();
        }
        skip_instruction(cpu.vmcs())?;
        Ok(Handled::Continue)
    }
}

/// The guest state an MMIO instruction is fetched and emulated in.
fn vcpu_state<H: VcpuHardware + ?Sized>(
    cpu: &mut H,
    physical_address_bits: u8,
) -> Result<VcpuState, VmcsError> {
    let r = cpu.registers();
    let mut gpr = [
        r.rax, r.rcx, r.rdx, r.rbx, 0, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
        r.r14, r.r15,
    ];
    // Read always: the instruction is decoded later, and sixteen register
    // moves cost little next to the exit.
    let xmm = cpu.xmm_lows();
    let vmcs = cpu.vmcs();
    gpr[4] = vmcs.read(GuestN::Rsp)?;
    let rflags = vmcs.read(GuestN::Rflags)?;
    let access = vmcs.read(Guest32::CsAccessRights)?;
    let ia32e = vmcs.read(Control32::EntryControls)? & ENTRY_IA32E_MODE != 0;
    let mode = if ia32e && access & CS_LONG_MODE != 0 {
        CpuMode::Bits64
    } else if access & CS_DEFAULT_32 != 0 && rflags & RFLAGS_VM == 0 {
        CpuMode::Bits32
    } else {
        CpuMode::Bits16
    };
    let rip = vmcs.read(GuestN::Rip)?;
    let rip_linear = match mode {
        CpuMode::Bits64 => rip,
        _ => vmcs.read(GuestN::CsBase)?.wrapping_add(rip) & 0xFFFF_FFFF,
    };
    let efer = guest_efer(vmcs, ia32e);
    let ss_dpl = (vmcs.read(Guest32::SsAccessRights)? >> 5) & 3;
    Ok(VcpuState {
        registers: Registers { gpr, rflags, xmm },
        rip_linear,
        paging: PagingContext {
            cr0: vmcs.read(GuestN::Cr0)?,
            cr3: vmcs.read(GuestN::Cr3)?,
            cr4: vmcs.read(GuestN::Cr4)?,
            efer,
            cpl: ss_dpl as u8,
            physical_address_bits,
        },
        mode,
    })
}

/// The guest's IA32_EFER. Without the EFER save control the VMCS holds
/// none; IA-32e mode then implies LME and LMA, the bits that matter here
/// besides NXE.
fn guest_efer<V: VmcsAccess + ?Sized>(vmcs: &V, ia32e: bool) -> u64 {
    match vmcs.read(ponte_arch::vmx::vmcs::Guest64::Efer) {
        Ok(efer) => efer,
        Err(_) => u64::from(ia32e) * (EFER_LME | EFER_LMA),
    }
}

/// Stores the registers (general, RFLAGS, XMM) an emulated MMIO instruction
/// changed and moves RIP past it.
fn apply_write_back<H: VcpuHardware + ?Sized>(
    cpu: &mut H,
    write_back: &WriteBack,
) -> Result<(), VmcsError> {
    let values = &write_back.registers.gpr;
    let regs = cpu.registers();
    for (n, &value) in (0u8..).zip(values) {
        if write_back.changed & (1 << n) != 0 {
            if let Some(slot) = regs.slot(n) {
                *slot = value;
            }
        }
    }
    if write_back.xmm_loaded != 0 {
        cpu.load_xmm_lows(write_back.xmm_loaded, &write_back.registers.xmm);
    }
    let vmcs = cpu.vmcs();
    if write_back.changed & (1 << 4) != 0 {
        vmcs.write(GuestN::Rsp, values[4])?;
    }
    if write_back.rflags_changed {
        vmcs.write(GuestN::Rflags, write_back.registers.rflags)?;
    }
    if write_back.rip_advance != 0 {
        advance_rip(vmcs, write_back.rip_advance)?;
    }
    Ok(())
}

/// The event an exit interrupted (IDT-vectoring information), if any.
#[inline]
fn read_idt_vectoring<V: VmcsAccess + ?Sized>(
    vmcs: &V,
) -> Result<Option<EventInjection>, VmcsError> {
    let info = vmcs.read(ReadOnly32::IdtVectoringInfo)?;
    if info & VALID == 0 {
        return Ok(None);
    }
    let error = vmcs.read(ReadOnly32::IdtVectoringErrorCode)?;
    let length = vmcs.read(ReadOnly32::ExitInstructionLength)?;
    Ok(EventInjection::from_idt_vectoring(info, error, length))
}

/// Writes `event` into the VM-entry event-injection fields.
fn write_event<V: VmcsAccess + ?Sized>(
    vmcs: &mut V,
    event: EventInjection,
) -> Result<(), VmcsError> {
    if let Some(code) = event.error_code {
        vmcs.write(Control32::EntryExceptionErrorCode, code)?;
    }
    vmcs.write(Control32::EntryInstructionLength, event.instruction_len)?;
    vmcs.write(Control32::EntryInterruptionInfo, event.interruption_info())
}

/// The guest's TSC: the host's plus the VMCS TSC offset.
fn guest_tsc<H: VcpuHardware + ?Sized>(cpu: &mut H) -> Result<u64, VmcsError> {
    let offset = cpu.vmcs().read(Control64::TscOffset)?;
    Ok(cpu.host_tsc().wrapping_add(offset))
}

/// Moves the guest's RIP past the instruction that exited, as the
/// processor would have: in 64-bit mode a next RIP that is not canonical
/// raises #GP(0) in the guest instead (hardware faults there, and VM entry
/// would refuse it); elsewhere the offset wraps at 32 bits (16 bits in
/// 16-bit code). A next RIP beyond the code segment's limit is written as is:
/// the guest's own instruction fetch faults there, as on hardware.
#[inline]
pub fn skip_instruction<V: VmcsAccess + ?Sized>(vmcs: &mut V) -> Result<(), VmcsError> {
    let length = u64::from(vmcs.read(ReadOnly32::ExitInstructionLength)?);
    advance_rip(vmcs, length)
}

/// Moves the guest's RIP forward by `length` bytes with the rules of
/// [`skip_instruction`]; for exits whose instruction length the processor
/// does not report (EPT violations), with the decoded length.
#[inline]
pub fn advance_rip<V: VmcsAccess + ?Sized>(vmcs: &mut V, length: u64) -> Result<(), VmcsError> {
    let next = vmcs.read(GuestN::Rip)?.wrapping_add(length);
    let access = vmcs.read(Guest32::CsAccessRights)?;
    if access & CS_LONG_MODE != 0 && next <= 0xFFFF_FFFF {
        // Canonical in 64-bit mode, and a valid offset in a 32-bit segment.
        return vmcs.write(GuestN::Rip, next);
    }
    // CS.L matters only in IA-32e mode, which the entry control mirrors.
    let long_mode =
        access & CS_LONG_MODE != 0 && vmcs.read(Control32::EntryControls)? & ENTRY_IA32E_MODE != 0;
    if long_mode {
        let la57 = vmcs.read(GuestN::Cr4)? & CR4_LA57 != 0;
        if !is_canonical(next, if la57 { 57 } else { 48 }) {
            return inject_gp(vmcs);
        }
        return vmcs.write(GuestN::Rip, next);
    }
    let offset_mask = if access & CS_DEFAULT_32 != 0 {
        0xFFFF_FFFF
    } else {
        0xFFFF
    };
    vmcs.write(GuestN::Rip, next & offset_mask)
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
