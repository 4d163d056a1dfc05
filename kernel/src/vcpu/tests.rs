use std::{vec, vec::Vec};

use ponte_arch::vmx::{
    exit::IoAccess,
    vmcs::{Control32, Control64, Guest32, GuestN, ReadOnly32},
    MemVmcs, VmExit, VmcsExt,
};

use super::*;
use crate::cpuid::CpuidResult;

/// A vCPU that replays exits, each with its instruction length.
struct ScriptedCpu {
    script: Vec<(VmExit, u32)>,
    next: usize,
    vmcs: MemVmcs,
    regs: GuestRegisters,
    tsc: u64,
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

    fn run(&mut self) -> Result<VmExit, RunError> {
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
        Ok(exit)
    }

    fn registers(&mut self) -> &mut GuestRegisters {
        &mut self.regs
    }

    fn vmcs(&mut self) -> &mut MemVmcs {
        &mut self.vmcs
    }

    fn host_tsc(&self) -> u64 {
        self.tsc
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
fn a_next_rip_outside_the_segment_raises_gp_instead_of_failing_entry() {
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
    // Real mode: beyond IP 0xFFFF.
    let mut cpu = ScriptedCpu::new(Mode::Real, 0xFFFF, vec![]);
    cpu.vmcs
        .set(ReadOnly32::ExitInstructionLength as u32, 1)
        .unwrap();
    skip_instruction(&mut cpu.vmcs).unwrap();
    assert_eq!(cpu.injected(), gp_info());
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
