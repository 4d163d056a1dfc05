use std::{vec, vec::Vec};

use ponte_arch::vmx::{
    exit::IoAccess,
    vmcs::{Control32, Control64, Guest16, Guest32, GuestN, ReadOnly32},
    MemVmcs, VmExit, VmcsExt,
};

use super::*;
use crate::{cpuid::CpuidResult, irq::inject::EntryDecision};

/// A vCPU that replays exits, each with its instruction length.
struct ScriptedCpu {
    script: Vec<(VmExit, u32)>,
    next: usize,
    vmcs: MemVmcs,
    regs: GuestRegisters,
    tsc: u64,
    last: VmExit,
    /// XMM0-XMM15 as (bits 63:0, bits 127:64).
    xmm: [(u64, u64); 16],
}

#[derive(Clone, Copy)]
enum Mode {
    Real,
    Protected,
    Long,
}

impl ScriptedCpu {
    fn new(mode: Mode, rip: u64, script: Vec<(VmExit, u32)>) -> Self {
        let mut vmcs = MemVmcs::new();
        let (access, limit, entry) = match mode {
            Mode::Real => (0x93, 0xFFFF, 0),
            Mode::Protected => (0xC09B, 0xFFFF_FFFF, 0),
            Mode::Long => (0xA09B, 0xFFFF_FFFF, ENTRY_IA32E_MODE),
        };
        vmcs.write(Guest32::CsAccessRights, access).unwrap();
        vmcs.write(Guest32::CsLimit, limit).unwrap();
        vmcs.write(Control32::EntryControls, entry).unwrap();
        vmcs.write(GuestN::Rflags, 2).unwrap();
        vmcs.write(GuestN::Rip, rip).unwrap();
        Self {
            script,
            next: 0,
            vmcs,
            regs: GuestRegisters::default(),
            tsc: 1_000_000,
            last: VmExit::TripleFault,
            xmm: [(0, 0); 16],
        }
    }

    fn rip(&self) -> u64 {
        self.vmcs.read(GuestN::Rip).unwrap()
    }

    fn injected(&self) -> u32 {
        self.vmcs.read(Control32::EntryInterruptionInfo).unwrap()
    }
}

impl VcpuHardware for ScriptedCpu {
    type Vmcs = MemVmcs;

    fn enter(&mut self) -> Result<u32, RunError> {
        // Entry consumes a pending injection, as hardware does.
        self.vmcs
            .write(Control32::EntryInterruptionInfo, 0)
            .unwrap();
        let (exit, length) = self
            .script
            .get(self.next)
            .copied()
            .unwrap_or((VmExit::TripleFault, 0));
        self.next += 1;
        self.vmcs
            .set(ReadOnly32::ExitInstructionLength as u32, u64::from(length))
            .unwrap();
        self.tsc += 100;
        self.last = exit;
        Ok(match exit {
            VmExit::Cpuid { leaf, subleaf } => {
                // The processor reports CPUID's operands in the registers.
                self.regs.rax = u64::from(leaf);
                self.regs.rcx = u64::from(subleaf);
                CPUID_EXIT
            }
            _ => u32::MAX,
        })
    }

    fn decode_exit(&mut self, _raw: u32) -> Result<VmExit, RunError> {
        Ok(self.last)
    }

    fn registers(&mut self) -> &mut GuestRegisters {
        &mut self.regs
    }

    fn vmcs(&mut self) -> &mut MemVmcs {
        &mut self.vmcs
    }

    fn registers_and_vmcs(&mut self) -> (&mut GuestRegisters, &mut MemVmcs) {
        (&mut self.regs, &mut self.vmcs)
    }

    fn host_tsc(&self) -> u64 {
        self.tsc
    }

    fn xmm_lows(&mut self) -> [u64; 16] {
        self.xmm.map(|(low, _)| low)
    }

    fn load_xmm_lows(&mut self, mask: u16, values: &[u64; 16]) {
        for (n, (slot, &value)) in self.xmm.iter_mut().zip(values).enumerate() {
            if mask & (1 << n) != 0 {
                *slot = (value, 0);
            }
        }
    }
}

#[derive(Default)]
struct Board {
    writes: Vec<(u16, AccessWidth, u32)>,
    read_value: u32,
    device_msr: Option<u64>,
    stop_on_port: Option<u16>,
    stop: Option<StopRequest>,
    hypercalls: bool,
}

impl Platform for Board {
    fn io_read(&mut self, _port: u16, _width: AccessWidth) -> u32 {
        self.read_value
    }
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        self.writes.push((port, width, value));
        if self.stop_on_port == Some(port) {
            self.stop = Some(StopRequest::ExitStatus((u64::from(value) << 1) | 1));
        }
    }
    fn msr_read(&mut self, msr: u32) -> Option<Result<u64, GeneralProtection>> {
        (msr == 0x1B).then(|| {
            self.device_msr
                .ok_or(GeneralProtection { msr, written: None })
        })
    }
    fn msr_write(&mut self, msr: u32, value: u64) -> Option<Result<(), GeneralProtection>> {
        (msr == 0x1B).then(|| {
            self.device_msr = Some(value);
            Ok(())
        })
    }
    fn hypercall(&mut self, registers: &mut GuestRegisters) -> bool {
        if self.hypercalls && registers.rax == 7 {
            registers.rax = 0x7007;
            return true;
        }
        false
    }
    fn stop_request(&mut self) -> Option<StopRequest> {
        self.stop.take()
    }
}

fn policy() -> CpuidPolicy<16> {
    let mut p = CpuidPolicy::default();
    p.set(
        0,
        None,
        CpuidResult {
            eax: 1,
            ebx: 0x756e_6547,
            ecx: 0x6c65_746e,
            edx: 0x4965_6e69,
        },
    )
    .unwrap();
    p.set(
        0x4000_0000,
        None,
        CpuidResult {
            eax: 0x4000_0001,
            ebx: 1,
            ecx: 2,
            edx: 3,
        },
    )
    .unwrap();
    p
}

fn gp_info() -> u32 {
    InterruptionInfo::new(13, InterruptionType::HardwareException, true).0
}

const fn io(port: u16, size: u8, input: bool) -> VmExit {
    VmExit::Io(IoAccess {
        port,
        size,
        input,
        string: false,
        rep: false,
        immediate: false,
    })
}

#[test]
fn cpuid_is_answered_from_the_policy_and_rip_advances() {
    let policy = policy();
    let mut cpu = ScriptedCpu::new(
        Mode::Long,
        0x1000,
        vec![
            (
                VmExit::Cpuid {
                    leaf: 0x4000_0000,
                    subleaf: 5,
                },
                2,
            ),
            (VmExit::Hlt, 1),
        ],
    );
    cpu.regs.rbx = u64::MAX;
    let stop = Dispatcher::new(&policy, 39).run(&mut cpu, &mut Board::default());
    assert_eq!(stop, Stop::Halted);
    assert_eq!(
        (cpu.regs.rax, cpu.regs.rbx, cpu.regs.rcx, cpu.regs.rdx),
        (0x4000_0001, 1, 2, 3)
    );
    assert_eq!(
        cpu.rip(),
        0x1003,
        "CPUID (2 bytes) then HLT (1 byte) skipped"
    );
}

#[test]
fn port_input_merges_by_width_and_output_is_masked() {
    let policy = policy();
    let script = vec![
        (io(0x60, 1, true), 1),
        (io(0x60, 2, true), 2),
        (io(0x3F8, 1, false), 1),
        (io(0xCFC, 4, true), 1),
    ];
    let mut cpu = ScriptedCpu::new(Mode::Protected, 0x8000, script);
    let mut board = Board {
        read_value: 0xAABB_CCDD,
        ..Board::default()
    };
    cpu.regs.rax = 0x1122_3344_5566_7788;
    let mut dispatch = Dispatcher::new(&policy, 39);
    // Run exits one at a time by ending with the scripted triple fault.
    assert_eq!(dispatch.run(&mut cpu, &mut board), Stop::TripleFault);
    // IN AL kept bits 63:8, IN AX kept 63:16, OUT wrote AL only, IN EAX zero-extended.
    assert_eq!(board.writes, vec![(0x3F8, AccessWidth::Byte, 0xDD)]);
    assert_eq!(cpu.regs.rax, 0xAABB_CCDD);
    assert_eq!(cpu.rip(), 0x8005);
}

#[test]
fn string_io_is_left_to_the_integrator_with_rip_unchanged() {
    let policy = policy();
    let rep_outsb = VmExit::Io(IoAccess {
        port: 0x3F8,
        size: 1,
        input: false,
        string: true,
        rep: true,
        immediate: false,
    });
    let mut cpu = ScriptedCpu::new(Mode::Protected, 0x8000, vec![(rep_outsb, 2)]);
    assert_eq!(
        Dispatcher::new(&policy, 39).run(&mut cpu, &mut Board::default()),
        Stop::Unhandled(rep_outsb)
    );
    assert_eq!(cpu.rip(), 0x8000);
}

#[test]
fn msrs_route_to_devices_then_software_and_unknown_ones_fault() {
    let policy = policy();
    let script = vec![
        (
            VmExit::Wrmsr {
                msr: 0x1B,
                value: 0xFEE0_0900,
            },
            2,
        ),
        (VmExit::Rdmsr { msr: 0x1B }, 2),
        (VmExit::Rdmsr { msr: 0xFE }, 2),
        (VmExit::Rdmsr { msr: 0xDEAD }, 2),
    ];
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, script);
    let mut board = Board::default();
    let mut dispatch = Dispatcher::new(&policy, 39);
    assert_eq!(dispatch.run(&mut cpu, &mut board), Stop::TripleFault);
    assert_eq!(
        board.device_msr,
        Some(0xFEE0_0900),
        "APIC base went to the device"
    );
    assert_eq!(
        cpu.rip(),
        0x1006,
        "three MSR instructions completed, the faulting one did not"
    );
    // MTRRCAP: EDX:EAX split of 0x508.
    assert_eq!((cpu.regs.rdx, cpu.regs.rax), (0, 0x508));
    // A fault is injected at the next entry: handle one exit to look at it.
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x2000, vec![]);
    dispatch
        .handle(
            VmExit::Wrmsr {
                msr: 0xFE,
                value: 1,
            },
            &mut cpu,
            &mut board,
        )
        .ok()
        .unwrap();
    assert_eq!(cpu.injected(), gp_info(), "write to MTRRCAP raises #GP(0)");
    assert_eq!(cpu.vmcs.read(Control32::EntryExceptionErrorCode), Ok(0));
    assert_eq!(cpu.rip(), 0x2000);
}

#[test]
fn tsc_write_becomes_an_offset_that_later_reads_honour() {
    let policy = policy();
    let mut cpu = ScriptedCpu::new(Mode::Long, 0, vec![]);
    let mut dispatch = Dispatcher::new(&policy, 39);
    let mut board = Board::default();
    dispatch
        .handle(
            VmExit::Wrmsr {
                msr: 0x10,
                value: 5_000,
            },
            &mut cpu,
            &mut board,
        )
        .ok()
        .unwrap();
    assert_eq!(
        cpu.vmcs.read(Control64::TscOffset),
        Ok(5_000u64.wrapping_sub(1_000_000))
    );
    cpu.tsc += 250;
    dispatch
        .handle(VmExit::Rdmsr { msr: 0x10 }, &mut cpu, &mut board)
        .ok()
        .unwrap();
    assert_eq!(cpu.regs.rax, 5_250);
}

#[test]
fn vmcall_unknown_returns_enosys_known_ones_reach_the_platform() {
    let policy = policy();
    let mut cpu = ScriptedCpu::new(
        Mode::Long,
        0x1000,
        vec![(VmExit::Vmcall, 3), (VmExit::Vmcall, 3)],
    );
    let mut board = Board {
        hypercalls: true,
        ..Board::default()
    };
    let mut dispatch = Dispatcher::new(&policy, 39);
    cpu.regs.rax = 7;
    dispatch
        .handle(VmExit::Vmcall, &mut cpu, &mut board)
        .ok()
        .unwrap();
    assert_eq!(cpu.regs.rax, 0x7007);
    cpu.regs.rax = 99;
    dispatch
        .handle(VmExit::Vmcall, &mut cpu, &mut board)
        .ok()
        .unwrap();
    assert_eq!(cpu.regs.rax, UNKNOWN_HYPERCALL);
    assert_eq!(UNKNOWN_HYPERCALL as i64, -1000);
}

#[test]
fn advancing_rip_follows_the_processor_and_never_fails_entry() {
    // 64-bit: past the canonical boundary.
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x7FFF_FFFF_FFFE, vec![]);
    cpu.vmcs
        .set(ReadOnly32::ExitInstructionLength as u32, 3)
        .unwrap();
    skip_instruction(&mut cpu.vmcs).unwrap();
    assert_eq!(cpu.injected(), gp_info());
    assert_eq!(cpu.rip(), 0x7FFF_FFFF_FFFE);
    // Canonical high half is fine.
    let mut cpu = ScriptedCpu::new(Mode::Long, 0xFFFF_8000_0000_0000, vec![]);
    cpu.vmcs
        .set(ReadOnly32::ExitInstructionLength as u32, 3)
        .unwrap();
    skip_instruction(&mut cpu.vmcs).unwrap();
    assert_eq!((cpu.injected(), cpu.rip()), (0, 0xFFFF_8000_0000_0003));
    // Real mode: IP wraps at 16 bits (a fetch beyond the limit would fault
    // in the guest by itself, as on hardware).
    let mut cpu = ScriptedCpu::new(Mode::Real, 0xFFFF, vec![]);
    cpu.vmcs
        .set(ReadOnly32::ExitInstructionLength as u32, 1)
        .unwrap();
    skip_instruction(&mut cpu.vmcs).unwrap();
    assert_eq!((cpu.injected(), cpu.rip()), (0, 0));
    // 32-bit code: EIP wraps at 32 bits instead of setting RIP bit 32,
    // which VM entry would refuse.
    let mut cpu = ScriptedCpu::new(Mode::Protected, 0xFFFF_FFFE, vec![]);
    cpu.vmcs
        .set(ReadOnly32::ExitInstructionLength as u32, 3)
        .unwrap();
    skip_instruction(&mut cpu.vmcs).unwrap();
    assert_eq!((cpu.injected(), cpu.rip()), (0, 1));
    // Protected mode within a 4 GiB limit.
    let mut cpu = ScriptedCpu::new(Mode::Protected, 0xFFFF, vec![]);
    cpu.vmcs
        .set(ReadOnly32::ExitInstructionLength as u32, 1)
        .unwrap();
    skip_instruction(&mut cpu.vmcs).unwrap();
    assert_eq!((cpu.injected(), cpu.rip()), (0, 0x1_0000));
}

#[test]
fn a_device_stop_request_ends_the_run_after_the_access() {
    let policy = policy();
    let mut cpu = ScriptedCpu::new(
        Mode::Protected,
        0x100,
        vec![(io(0xF4, 1, false), 2), (VmExit::Hlt, 1)],
    );
    cpu.regs.rax = 0;
    let mut board = Board {
        stop_on_port: Some(0xF4),
        ..Board::default()
    };
    let stop = Dispatcher::new(&policy, 39).run(&mut cpu, &mut board);
    assert_eq!(stop, Stop::Requested(StopRequest::ExitStatus(1)));
    assert_eq!(cpu.rip(), 0x102);
}

/// An interrupt system that replays decisions and records what it was asked.
struct ScriptedInterrupts {
    decisions: Vec<Decision>,
    asked: Vec<GuestEventState>,
    now: core::cell::Cell<u64>,
    deadline: Option<u64>,
}

impl ScriptedInterrupts {
    fn new(decisions: Vec<Decision>) -> Self {
        Self {
            decisions,
            asked: Vec::new(),
            now: core::cell::Cell::new(0),
            deadline: None,
        }
    }
}

impl Interrupts for ScriptedInterrupts {
    fn decide(&mut self, guest: &GuestEventState) -> Decision {
        self.asked.push(*guest);
        if self.decisions.is_empty() {
            Decision::Sleep { until_ns: None }
        } else {
            self.decisions.remove(0)
        }
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        self.deadline
    }
    fn now_ns(&self) -> u64 {
        // Time passes as the dispatcher looks at it.
        self.now.set(self.now.get() + 10);
        self.now.get()
    }
}

struct InterruptBoard {
    interrupts: ScriptedInterrupts,
}

impl Platform for InterruptBoard {
    fn interrupts(&mut self) -> Option<&mut dyn Interrupts> {
        Some(&mut self.interrupts)
    }
}

fn enter(inject: Option<EventInjection>, wake: bool, interrupt_window: bool) -> Decision {
    Decision::Enter(EntryDecision {
        inject,
        interrupt_window,
        nmi_window: false,
        wake,
    })
}

#[test]
fn hlt_sleeps_until_the_timer_then_the_interrupt_wakes_the_vcpu() {
    let policy = policy();
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![(VmExit::Hlt, 1)]);
    cpu.vmcs
        .write(Guest32::InterruptibilityState, interruptibility::STI)
        .unwrap();
    let mut board = InterruptBoard {
        interrupts: ScriptedInterrupts::new(vec![
            enter(None, false, false),
            Decision::Sleep {
                until_ns: Some(500),
            },
            enter(Some(EventInjection::external(0x30)), true, false),
        ]),
    };
    let mut dispatch = Dispatcher::new(&policy, 39);
    // First entry, HLT exit; the second round sleeps, then wakes with 0x30.
    assert_eq!(dispatch.run(&mut cpu, &mut board), Stop::TripleFault);
    let asked = &board.interrupts.asked;
    assert_eq!(asked.len(), 3);
    assert_eq!(asked[1].activity, ActivityState::Hlt, "HLT is remembered");
    assert_eq!(asked[2].activity, ActivityState::Hlt);
    assert!(
        board.interrupts.now.get() >= 500,
        "slept until the deadline"
    );
    assert_eq!(
        cpu.rip(),
        0x1001,
        "RIP past HLT: the handler returns after it"
    );
    assert_eq!(
        cpu.vmcs.read(Guest32::InterruptibilityState),
        Ok(0),
        "waking clears the STI shadow"
    );
    assert!(!dispatch.halted);
}

#[test]
fn a_halted_vcpu_nothing_can_wake_stops_the_loop() {
    let policy = policy();
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![(VmExit::Hlt, 1)]);
    // An interrupt held by IF=0 cannot wake HLT, and there is no timer.
    let mut board = InterruptBoard {
        interrupts: ScriptedInterrupts::new(vec![
            enter(None, false, false),
            enter(None, false, true),
        ]),
    };
    assert_eq!(
        Dispatcher::new(&policy, 39).run(&mut cpu, &mut board),
        Stop::Halted
    );
}

#[test]
fn injection_and_window_exits_reach_the_vmcs() {
    let policy = policy();
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![(VmExit::InterruptWindow, 0)]);
    let mut board = InterruptBoard {
        interrupts: ScriptedInterrupts::new(vec![
            enter(None, false, true),
            enter(Some(EventInjection::external(0x41)), false, false),
        ]),
    };
    let mut dispatch = Dispatcher::new(&policy, 39);
    // First entry: window requested.
    dispatch.prepare_entry(&mut cpu, &mut board).unwrap();
    assert_ne!(
        cpu.vmcs.read(Control32::ProcBasedControls).unwrap() & INTERRUPT_WINDOW,
        0
    );
    // The window exit is absorbed; the next entry injects and clears the window.
    dispatch
        .handle(VmExit::InterruptWindow, &mut cpu, &mut board)
        .ok()
        .unwrap();
    dispatch.prepare_entry(&mut cpu, &mut board).unwrap();
    assert_eq!(
        cpu.vmcs.read(Control32::ProcBasedControls).unwrap() & INTERRUPT_WINDOW,
        0
    );
    assert_eq!(
        cpu.injected(),
        EventInjection::external(0x41).interruption_info()
    );
}

#[test]
fn an_interrupted_event_is_delivered_again() {
    let policy = policy();
    // Without an interrupt system: written back as it was.
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![]);
    let mut dispatch = Dispatcher::new(&policy, 39);
    let page_fault = EventInjection {
        kind: crate::irq::inject::EventKind::HardwareException,
        vector: 14,
        error_code: Some(2),
        instruction_len: 0,
    };
    dispatch.reinject = Some(page_fault);
    dispatch
        .prepare_entry(&mut cpu, &mut Board::default())
        .unwrap();
    assert_eq!(cpu.injected(), page_fault.interruption_info());
    assert_eq!(cpu.vmcs.read(Control32::EntryExceptionErrorCode), Ok(2));
    // With one: handed to the decision as the interrupted event.
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![]);
    let mut board = InterruptBoard {
        interrupts: ScriptedInterrupts::new(vec![enter(Some(page_fault), false, false)]),
    };
    dispatch.reinject = Some(page_fault);
    dispatch.prepare_entry(&mut cpu, &mut board).unwrap();
    assert_eq!(board.interrupts.asked[0].idt_vectoring, Some(page_fault));
}

#[test]
fn an_exception_a_handler_injected_is_not_overwritten_by_an_interrupt() {
    let policy = policy();
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![]);
    let mut board = InterruptBoard {
        interrupts: ScriptedInterrupts::new(vec![]),
    };
    let mut dispatch = Dispatcher::new(&policy, 39);
    dispatch
        .handle(VmExit::Rdmsr { msr: 0xDEAD }, &mut cpu, &mut board)
        .ok()
        .unwrap();
    board.interrupts.decisions.push(enter(
        EventInjection::from_idt_vectoring(gp_info(), 0, 0),
        false,
        true,
    ));
    dispatch.prepare_entry(&mut cpu, &mut board).unwrap();
    let asked = board.interrupts.asked[0]
        .idt_vectoring
        .expect("the #GP is reported as pending");
    assert_eq!((asked.vector, asked.error_code), (13, Some(0)));
    assert_eq!(cpu.injected(), gp_info());
}

#[test]
fn the_preemption_timer_is_armed_for_the_next_deadline() {
    let timer = PreemptionTimer {
        rate: 5,
        tsc_hz: 50_000_000,
    };
    // 1 ms at 50 MHz = 50,000 TSC ticks, counted every 32 ticks.
    assert_eq!(timer.value_for_ns(1_000_000), 50_000 >> 5);
    assert_eq!(timer.value_for_ns(u64::MAX), u32::MAX);
    let policy = policy();
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![]);
    let mut board = InterruptBoard {
        interrupts: ScriptedInterrupts::new(vec![enter(None, false, false)]),
    };
    board.interrupts.deadline = Some(1_000_010);
    let mut dispatch = Dispatcher::new(&policy, 39).with_preemption_timer(timer);
    dispatch.prepare_entry(&mut cpu, &mut board).unwrap();
    assert_eq!(
        cpu.vmcs.read(Guest32::PreemptionTimerValue),
        Ok(50_000 >> 5)
    );
}

/// A board with RAM at 0 and one MMIO device at 0xFEE0_0000 whose
/// registers read as `0x1234_0000 | offset` and record writes.
struct MmioBoard<'a> {
    layout: crate::memory::GuestLayout<&'a [core::cell::Cell<u8>], u8, 4>,
    writes: Vec<(u64, AccessWidth, u64)>,
    unclaimed: Vec<UnclaimedAccess>,
}

impl<'a> MmioBoard<'a> {
    /// `ram` as guest RAM from address 0 and one device page at `mmio`.
    fn new(ram: &'a mut [u8], mmio: u64) -> Self {
        let cells = core::cell::Cell::from_mut(ram).as_slice_of_cells();
        let mut layout = crate::memory::GuestLayout::new();
        layout.add_ram(0, cells).unwrap();
        layout.add_mmio(mmio, 0x1000, 7).unwrap();
        Self {
            layout,
            writes: Vec::new(),
            unclaimed: Vec::new(),
        }
    }
}

struct MmioDevices<'b>(&'b mut Vec<(u64, AccessWidth, u64)>);

impl crate::decode::mmio::MmioBus<u8> for MmioDevices<'_> {
    fn mmio_read(&mut self, _device: u8, offset: u64, _width: AccessWidth) -> u64 {
        0x1234_0000 | offset
    }
    fn mmio_write(&mut self, _device: u8, offset: u64, width: AccessWidth, value: u64) {
        self.0.push((offset, width, value));
    }
}

impl Platform for MmioBoard<'_> {
    fn ept_violation(
        &mut self,
        violation: &EptViolation,
        vcpu: &VcpuState,
    ) -> Option<Result<WriteBack, MmioError>> {
        let mut devices = MmioDevices(&mut self.writes);
        Some(crate::decode::mmio::handle_ept_violation(
            &self.layout,
            &mut devices,
            violation,
            vcpu,
        ))
    }
    fn unclaimed_access(&mut self, access: UnclaimedAccess) {
        self.unclaimed.push(access);
    }
}

fn ept_exit(gpa: u64, write: bool) -> VmExit {
    // Qualification: read or write access, nothing allowed (not present).
    let qualification = if write { 0b10 } else { 0b01 };
    VmExit::EptViolation {
        qualification: ponte_arch::vmx::exit::EptViolation(qualification),
        gpa,
        gla: None,
    }
}

#[test]
fn mmio_loads_and_stores_reach_the_device_and_rip_moves_by_the_decoded_length() {
    let mut ram = vec![0u8; 0x10000];
    // mov eax, [rdi+0x100] ; mov [rdi+0x104], ebx ; mov eax, [0xFED0_0000]
    ram[0x8000..0x8006].copy_from_slice(&[0x8b, 0x87, 0x00, 0x01, 0x00, 0x00]);
    ram[0x8006..0x800c].copy_from_slice(&[0x89, 0x9f, 0x04, 0x01, 0x00, 0x00]);
    ram[0x800c..0x8011].copy_from_slice(&[0xa1, 0x00, 0x00, 0xd0, 0xfe]);
    let mut board = MmioBoard::new(&mut ram, 0xFEE0_0000);

    let script = vec![
        (ept_exit(0xFEE0_0100, false), 0),
        (ept_exit(0xFEE0_0104, true), 0),
        (ept_exit(0xFED0_0000, false), 0),
    ];
    let mut cpu = ScriptedCpu::new(Mode::Protected, 0x8000, script);
    cpu.vmcs.write(GuestN::Cr0, 0x11).unwrap();
    cpu.regs.rdi = 0xFEE0_0000;
    cpu.regs.rbx = 0xCAFE_F00D;
    cpu.regs.rax = 0xFFFF_FFFF_0000_0000;
    let policy = policy();
    assert_eq!(
        Dispatcher::new(&policy, 39).run(&mut cpu, &mut board),
        Stop::TripleFault
    );
    assert_eq!(board.writes, vec![(0x104, AccessWidth::Dword, 0xCAFE_F00D)]);
    // The last load reached nothing: all ones, zero-extended into RAX.
    assert_eq!(cpu.regs.rax, 0xFFFF_FFFF);
    assert_eq!(board.unclaimed.len(), 1);
    assert_eq!(board.unclaimed[0].guest_physical, 0xFED0_0000);
    assert_eq!(cpu.rip(), 0x8011, "6 + 6 + 5 bytes decoded");
}

#[test]
fn mmio_movq_and_cmp_reach_xmm_registers_and_flags() {
    let mut ram = vec![0u8; 0x10000];
    // movq [ebx+8], xmm0 ; movq xmm1, [ebx+16] ; cmp dword [ebx+0x20], 0x12340020
    ram[0x8000..0x8005].copy_from_slice(&[0x66, 0x0f, 0xd6, 0x43, 0x08]);
    ram[0x8005..0x800a].copy_from_slice(&[0xf3, 0x0f, 0x7e, 0x4b, 0x10]);
    ram[0x800a..0x8011].copy_from_slice(&[0x81, 0x7b, 0x20, 0x20, 0x00, 0x34, 0x12]);
    let mut board = MmioBoard::new(&mut ram, 0xFF00_0000);
    let script = vec![
        (ept_exit(0xFF00_0008, true), 0),
        (ept_exit(0xFF00_0010, false), 0),
        (ept_exit(0xFF00_0020, false), 0),
    ];
    let mut cpu = ScriptedCpu::new(Mode::Protected, 0x8000, script);
    cpu.vmcs.write(GuestN::Cr0, 0x11).unwrap();
    cpu.regs.rbx = 0xFF00_0000;
    cpu.xmm[0] = (0x0123_4567_89AB_CDEF, 0x5555);
    cpu.xmm[1] = (0x1111, 0x2222);
    cpu.xmm[2] = (0x3333, 0x4444);
    let policy = policy();
    assert_eq!(
        Dispatcher::new(&policy, 39).run(&mut cpu, &mut board),
        Stop::TripleFault
    );
    assert_eq!(
        board.writes,
        vec![(0x8, AccessWidth::Qword, 0x0123_4567_89AB_CDEF)]
    );
    // The device reads 0x1234_0000 | offset; the load zeroes bits 127:64.
    assert_eq!(cpu.xmm[1], (0x1234_0010, 0));
    assert_eq!(cpu.xmm[0], (0x0123_4567_89AB_CDEF, 0x5555));
    assert_eq!(cpu.xmm[2], (0x3333, 0x4444));
    // The compare was equal: ZF and PF with bit 1.
    assert_eq!(cpu.vmcs.read(GuestN::Rflags), Ok(0x2 | 1 << 6 | 1 << 2));
    assert_eq!(cpu.rip(), 0x8011, "5 + 5 + 7 bytes decoded");
}

#[test]
fn a_faulting_iret_finds_nmis_blocked_when_it_runs_again() {
    let policy = policy();
    // A write violation with bit 12, "NMI unblocking due to IRET".
    let exit = VmExit::EptViolation {
        qualification: ponte_arch::vmx::exit::EptViolation(0b10 | 1 << 12),
        gpa: 0x5000,
        gla: None,
    };
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x8000, vec![(exit, 0)]);
    assert_eq!(
        Dispatcher::new(&policy, 39).run(&mut cpu, &mut Board::default()),
        Stop::Unhandled(exit)
    );
    assert_eq!(
        cpu.vmcs.read(Guest32::InterruptibilityState),
        Ok(interruptibility::NMI)
    );
    let plain = ept_exit(0x5000, true);
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x8000, vec![(plain, 0)]);
    assert_eq!(
        Dispatcher::new(&policy, 39).run(&mut cpu, &mut Board::default()),
        Stop::Unhandled(plain)
    );
    assert_eq!(cpu.vmcs.read(Guest32::InterruptibilityState), Ok(0));
}

#[test]
fn mmio_without_a_device_model_or_on_ram_is_left_to_the_integrator() {
    let policy = policy();
    let exit = ept_exit(0xFEE0_0000, false);
    let mut cpu = ScriptedCpu::new(Mode::Protected, 0x8000, vec![(exit, 0)]);
    assert_eq!(
        Dispatcher::new(&policy, 39).run(&mut cpu, &mut Board::default()),
        Stop::Unhandled(exit)
    );
    assert_eq!(cpu.rip(), 0x8000);
}

#[test]
fn cr4_writes_follow_the_guests_cpuid_and_cpuid_follows_the_board() {
    use ponte_arch::vmx::{
        caps::FixedBits,
        exit::{CrAccess, CrAccessType},
        vmcs::ControlN,
    };

    /// A board whose "APIC" is disabled: CPUID.1:EDX.APIC reads clear.
    struct ApicOff;
    impl Platform for ApicOff {
        fn adjust_cpuid(&mut self, leaf: u32, _subleaf: u32, answer: &mut CpuidResult) {
            crate::cpu_state::adjust_cpuid_for_apic(leaf, false, answer);
        }
    }

    // Leaf 1 offers nothing CR4-related: only the base bits are allowed.
    let mut policy = policy();
    policy
        .set(
            1,
            None,
            CpuidResult {
                edx: 1 << 9,
                ..CpuidResult::default()
            },
        )
        .unwrap();
    let cr4_policy = Cr4Policy::from_cpuid(&policy);
    let fixed = [
        FixedBits {
            fixed0: 0x21,
            fixed1: u64::from(u32::MAX),
        },
        FixedBits {
            fixed0: 1 << 13,
            fixed1: 0x3F_FFFF,
        },
    ];
    let mov_to_cr4 = VmExit::CrAccess(CrAccess {
        cr: 4,
        access: CrAccessType::MovTo { gpr: 0 },
    });
    let mut cpu = ScriptedCpu::new(
        Mode::Protected,
        0x1000,
        vec![(
            VmExit::Cpuid {
                leaf: 1,
                subleaf: 0,
            },
            2,
        )],
    );
    cpu.vmcs.write(ControlN::Cr4GuestHostMask, 1 << 13).unwrap();
    cr4_policy.install(&mut cpu.vmcs).unwrap();
    assert_ne!(
        cpu.vmcs.read(ControlN::Cr4GuestHostMask).unwrap() & (1 << 7),
        0,
        "PGE without CPUID support exits"
    );

    let mut dispatch = Dispatcher::new(&policy, 39).with_control_registers(cr4_policy, fixed);
    assert_eq!(dispatch.run(&mut cpu, &mut ApicOff), Stop::TripleFault);
    assert_eq!(cpu.regs.rdx, 0, "the board cleared CPUID.1:EDX.APIC");
    // CR4.PGE (bit 7) is not offered by this CPUID: #GP, CR4 unchanged.
    cpu.regs.rax = 1 << 7;
    dispatch
        .handle(mov_to_cr4, &mut cpu, &mut ApicOff)
        .ok()
        .unwrap();
    assert_eq!(cpu.injected(), gp_info());
    // Without the CR-access handler, the exit goes back to the integrator.
    let mut plain = Dispatcher::new(&policy, 39);
    let Ok(Handled::Stop(stop)) = plain.handle(mov_to_cr4, &mut cpu, &mut Board::default()) else {
        panic!("a CR access without a handler must stop the loop");
    };
    assert_eq!(stop, Stop::Unhandled(mov_to_cr4));
}

/// A board whose interrupt system is one LAPIC model, decided by
/// [`crate::irq::inject::decide`] as a board's would be.
struct ApicBoard<'c> {
    lapic: crate::irq::lapic::LocalApic<&'c crate::time::ManualClock>,
}

impl Interrupts for ApicBoard<'_> {
    fn decide(&mut self, guest: &GuestEventState) -> Decision {
        let mut chips = crate::irq::router::Chips {
            pic: None,
            ioapic: None,
            lapic: Some(&mut self.lapic),
        };
        crate::irq::inject::decide(guest, &mut chips, None)
    }
    fn next_deadline_ns(&self) -> Option<u64> {
        None
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn local_apic(&mut self) -> Option<&mut dyn apicv::ApicModel> {
        Some(&mut self.lapic)
    }
}

impl Platform for ApicBoard<'_> {
    fn interrupts(&mut self) -> Option<&mut dyn Interrupts> {
        Some(self)
    }
}

fn apic_board(clock: &crate::time::ManualClock) -> ApicBoard<'_> {
    let mut lapic = crate::irq::lapic::LocalApic::new(
        crate::irq::lapic::LapicConfig::new(0, 1_000_000_000),
        clock,
    );
    crate::device::Mmio::mmio_write(&mut lapic, 0xF0, AccessWidth::Dword, 0x1FF);
    ApicBoard { lapic }
}

fn cr8(access: ponte_arch::vmx::exit::CrAccessType) -> VmExit {
    VmExit::CrAccess(ponte_arch::vmx::exit::CrAccess { cr: 8, access })
}

#[test]
fn cr8_moves_are_the_lapic_tpr_bits_7_to_4() {
    use ponte_arch::vmx::exit::CrAccessType::{MovFrom, MovTo};
    let policy = policy();
    let clock = crate::time::ManualClock::new(0);
    let mut board = apic_board(&clock);
    let script = vec![
        (cr8(MovTo { gpr: 3 }), 4),    // mov cr8, rbx (rbx = 5)
        (cr8(MovFrom { gpr: 12 }), 4), // mov r12, cr8
        (cr8(MovTo { gpr: 4 }), 4),    // mov cr8, rsp: bits 63:4 set
    ];
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, script);
    cpu.regs.rbx = 5;
    cpu.regs.r12 = u64::MAX;
    cpu.vmcs.write(GuestN::Rsp, 0x7FF0).unwrap();
    let mut dispatch = Dispatcher::new(&policy, 39);
    assert_eq!(dispatch.run(&mut cpu, &mut board), Stop::TripleFault);
    // SDM "CR8": the write sets TPR[7:4], TPR[3:0] = 0; the read
    // zero-extends TPR[7:4].
    assert_eq!(board.lapic.tpr(), 0x50);
    assert_eq!(cpu.regs.r12, 5);
    // The reserved-bit write faulted: RIP stays on the MOV, TPR kept.
    assert_eq!(cpu.rip(), 0x1008);

    // Without a LAPIC model, CR8 is not the run loop's to answer.
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![(cr8(MovTo { gpr: 0 }), 4)]);
    let mut board = InterruptBoard {
        interrupts: ScriptedInterrupts::new(vec![enter(None, false, false)]),
    };
    assert!(matches!(
        Dispatcher::new(&policy, 39).run(&mut cpu, &mut board),
        Stop::Unhandled(VmExit::CrAccess(_))
    ));
}

fn test_page() -> &'static mut ponte_arch::vmx::Page4K {
    std::boxed::Box::leak(std::boxed::Box::new(ponte_arch::vmx::Page4K::zeroed()))
}

#[test]
fn apic_access_exits_are_performed_like_the_xapic_pages_mmio() {
    use ponte_arch::vmx::exit::ApicAccess;
    let mut ram = vec![0u8; 0x10000];
    // mov [rdi+0x104], ebx ; mov eax, [rdi+0x100]
    ram[0x8000..0x8006].copy_from_slice(&[0x89, 0x9f, 0x04, 0x01, 0x00, 0x00]);
    ram[0x8006..0x800c].copy_from_slice(&[0x8b, 0x87, 0x00, 0x01, 0x00, 0x00]);
    let mut board = MmioBoard::new(&mut ram, 0xFEE0_0000);
    let access = |offset, access_type| {
        VmExit::ApicAccess(ApicAccess {
            offset,
            access_type,
            asynchronous: false,
        })
    };
    let script = vec![
        (access(0x104, ApicAccess::LINEAR_WRITE), 0),
        (access(0x100, ApicAccess::LINEAR_READ), 0),
        // A linear access during event delivery cannot be emulated.
        (access(0x100, 3), 0),
    ];
    let mut cpu = ScriptedCpu::new(Mode::Protected, 0x8000, script);
    cpu.vmcs.write(GuestN::Cr0, 0x11).unwrap();
    cpu.regs.rdi = 0xFEE0_0000;
    cpu.regs.rbx = 0x1234_5678;
    let policy = policy();
    let apic = apicv::VirtualApic::new(
        apicv::ApicVirtualization::TprShadow,
        test_page(),
        test_page(),
        0xFEE0_0000,
    )
    .unwrap();
    let mut dispatch = Dispatcher::new(&policy, 39).with_virtual_apic(Some(apic));
    let stop = dispatch.run(&mut cpu, &mut board);
    assert!(
        matches!(stop, Stop::Unhandled(VmExit::ApicAccess(a)) if a.access_type == 3),
        "{stop:?}"
    );
    assert_eq!(board.writes, vec![(0x104, AccessWidth::Dword, 0x1234_5678)]);
    assert_eq!(cpu.rip(), 0x800c, "both instructions performed");
    assert_eq!(dispatch.virtual_apic().unwrap().stats().apic_accesses, 2);
}

#[test]
fn with_virtual_interrupt_delivery_a_request_wakes_hlt_through_rvi() {
    let policy = policy();
    let clock = crate::time::ManualClock::new(0);
    let mut board = apic_board(&clock);
    let script = vec![(VmExit::Hlt, 1)];
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, script);
    cpu.vmcs.write(GuestN::Rflags, 0x202).unwrap();
    let apic = apicv::VirtualApic::new(
        apicv::ApicVirtualization::VirtualInterruptDelivery,
        test_page(),
        test_page(),
        0xFEE0_0000,
    )
    .unwrap();
    let mut dispatch = Dispatcher::new(&policy, 39).with_virtual_apic(Some(apic));
    // The guest halts with IF=1; a fixed vector is requested meanwhile.
    let stop = {
        board
            .lapic
            .request_vector(0x41, crate::irq::msi::TriggerMode::Edge);
        dispatch.run(&mut cpu, &mut board)
    };
    assert_eq!(stop, Stop::TripleFault);
    // Not injected: the processor delivers it from RVI (SDM 30.2.1), and the
    // halted vCPU was woken for it.
    assert_eq!(cpu.injected(), 0);
    assert_eq!(cpu.vmcs.read(Guest16::InterruptStatus), Ok(0x41));
    // The run loop wrote the VMCS fields the integrator left to it.
    let page = dispatch.virtual_apic().unwrap().page().address();
    assert_eq!(cpu.vmcs.read(Control64::VirtualApicAddress), Ok(page));
    assert!(!dispatch.halted);
    assert_eq!(dispatch.injected_interrupts(), 0);
    assert_eq!(
        dispatch
            .virtual_apic()
            .unwrap()
            .page()
            .read(ponte_arch::vmx::apic::offset::VIRR + 0x20),
        1 << 1
    );
    // With IF=0 the halted vCPU stays asleep: nothing can wake it.
    let mut cpu = ScriptedCpu::new(Mode::Long, 0x1000, vec![(VmExit::Hlt, 1)]);
    let apic = apicv::VirtualApic::new(
        apicv::ApicVirtualization::VirtualInterruptDelivery,
        test_page(),
        test_page(),
        0xFEE0_0000,
    )
    .unwrap();
    let mut dispatch = Dispatcher::new(&policy, 39).with_virtual_apic(Some(apic));
    assert_eq!(dispatch.run(&mut cpu, &mut board), Stop::Halted);
}
