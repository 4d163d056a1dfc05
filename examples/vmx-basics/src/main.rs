//! vmx-basics: one guest per run, chosen by the command line (`real`,
//! `protected`, `long`, or `bench` for the CPUID round-trip benchmark), or
//! `broken`: every deliberately broken VMCS configuration of ponte-arch,
//! checked against both the pre-flight checker and the CPU.
//!
//! With `expect-refusal`, the run passes only if building the guest state is
//! refused with a typed error (a real-mode guest without unrestricted guest).
//!
//! The guest checks the answers it gets to CPUID, IN/OUT through QEMU's
//! pc-testdev scratch register, WRMSR/RDMSR, an unknown VMCALL and HLT, then
//! reports through isa-debug-exit: status 1 is a pass, `(N << 1) | 1` names
//! the failed check N.
#![no_std]
#![no_main]

use ponte_arch::{
    boot::{finish, BootInfo, Outcome},
    memory::HostMemory,
    or_fail, println,
    vmx::{
        broken::baseline_request, check_vm_entry, ControlSettings, ExpectedOutcome, GuestState,
        HostState, MsrBitmap, Page4K, RunError, Vcpu, VmExit, VmcsError, Vmx, VmxCapabilities,
        BROKEN_CONFIGS,
    },
};
use ponte_kernel::{
    bus::PortBus,
    cpuid::{CpuidPolicy, CpuidResult, GuestCpu},
    device::AccessWidth,
    irq::lines::LineSet,
    loader::paging::{identity_map, identity_map_32},
    memory::GuestMemory,
    vcpu::{Dispatcher, Platform, Stop, StopRequest},
    vm::{
        appliance_controls, build_vcpu, configure_vmcs, needs_identity_paging,
        protected_mode_paging_off, BuiltVcpu, LinearRam,
    },
};
use ponte_qemu_devices::{debug_exit::DebugExit, pc_testdev::PcTestDev};

ponte_arch::entry!(main);

const RAM_SIZE: u64 = 8 << 20;
const ENTRY: u64 = 0x8000;
const STACK: u64 = 0x7000;
const PAGE_TABLES: u64 = 0x1_0000;
/// Where the benchmark guest stores its 10,000 measured round trips.
const BENCH_RESULTS: u64 = 0x10_0000;
const BENCH_COUNT: usize = 10_000;
/// RAX at the guest's HLT: the guest reached the HLT check.
const HALT_MARK: u64 = 0x484c_5421;

const REAL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/real.bin"));
const PROTECTED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/protected.bin"));
const LONG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/long.bin"));
const BENCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpuid_bench.bin"));

/// The board: pc-testdev and isa-debug-exit on the port bus.
struct Board {
    bus: PortBus<8>,
    testdev: PcTestDev<'static, ponte_kernel::irq::lines::Line<'static, 24>>,
    exit: DebugExit,
}

impl Platform for Board {
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        self.bus
            .read(&mut [&mut self.testdev, &mut self.exit], port, width)
    }
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        self.bus
            .write(&mut [&mut self.testdev, &mut self.exit], port, width, value);
    }
    fn stop_request(&mut self) -> Option<StopRequest> {
        self.exit
            .take_exit_request()
            .map(|r| StopRequest::ExitStatus(r.status()))
    }
}

static LINES: LineSet<24> = LineSet::new();

fn main(boot: BootInfo, mut memory: HostMemory) -> ! {
    let mode = ["real", "protected", "long", "bench", "broken"]
        .into_iter()
        .find(|m| boot.has_argument(m))
        .unwrap_or("long");
    let vmx = or_fail!(memory.enable_vmx(), "VMX bring-up");
    let caps = *vmx.caps();
    let ram = LinearRam::new(or_fail!(memory.ram(RAM_SIZE, 2 << 20), "guest RAM"));
    let window = or_fail!(
        memory.bytes(ponte_qemu_devices::pc_testdev::IOMEM_LEN),
        "pc-testdev window"
    );

    let (program, guest) = match mode {
        "real" => (REAL, GuestState::real_mode(&caps, 0, ENTRY as u16)),
        "protected" => {
            if needs_identity_paging(&caps) {
                or_fail!(
                    identity_map_32(&ram, PAGE_TABLES),
                    "identity page directory"
                );
            }
            let state =
                protected_mode_paging_off(&caps, ENTRY as u32, STACK as u32, PAGE_TABLES as u32);
            (PROTECTED, Ok(state))
        }
        _ => {
            // long, bench and broken: a 64-bit guest.
            let cr3 = or_fail!(
                identity_map(&ram, PAGE_TABLES, RAM_SIZE),
                "guest page tables"
            );
            (
                if mode == "bench" { BENCH } else { LONG },
                Ok(GuestState::long_mode(cr3, ENTRY, STACK)),
            )
        }
    };
    let guest = match guest {
        Ok(guest) => guest,
        // `expect-refusal`: the processor lacks what this guest needs, and
        // the run passes if the library says exactly what is missing.
        Err(refusal) if boot.has_argument("expect-refusal") => finish(
            Outcome::Pass,
            format_args!("{mode} guest refused: {refusal:?}"),
        ),
        Err(e) => finish(Outcome::Fail, format_args!("guest state: {e:?}")),
    };
    if boot.has_argument("expect-refusal") {
        finish(Outcome::Fail, format_args!("{mode} guest was not refused"));
    }
    or_fail!(ram.write(ENTRY, program), "loading the guest");

    let settings = or_fail!(
        appliance_controls(
            mode == "real",
            mode == "protected" && needs_identity_paging(&caps)
        )
        .reconcile(&caps),
        "VMX controls"
    );
    println!("vmx-basics: {mode} guest, controls {settings:?}");
    let host = memory.host_state();
    let mut broken_pages: heapless::Vec<&'static mut Page4K, 32> = heapless::Vec::new();
    if mode == "broken" {
        for _ in BROKEN_CONFIGS {
            let _ = broken_pages.push(or_fail!(memory.page(), "VMCS pages"));
        }
    }
    let BuiltVcpu {
        mut vcpu,
        ept,
        mut msr_bitmap,
    } = or_fail!(
        build_vcpu(&vmx, &mut memory, &settings, &guest, |ept| Ok(
            ram.map_into(ept)?
        )),
        "vCPU"
    );
    // Failed entries are explained by the pre-flight checker in the log.
    vcpu.explain_entry_failures();
    let eptp = ept.eptp().bits();

    if mode == "broken" {
        let baseline = or_fail!(baseline_request().reconcile(&caps), "baseline controls");
        let (tried, deviations) = run_broken_configurations(
            &boot,
            broken_pages,
            &vmx,
            &caps,
            &baseline,
            &host,
            &guest,
            eptp,
            &mut msr_bitmap,
        );
        finish(Outcome::Pass, format_args!("{tried} broken configurations named by the checker and refused by the CPU as the SDM says; {deviations} known deviations"));
    }

    let guest_cpu = GuestCpu {
        apic_id: 0,
        apic: false,
        x2apic: false,
        tsc_deadline: false,
        tsc_khz: None,
        apic_timer_khz: None,
    };
    let mut cpuid: CpuidPolicy<96> =
        or_fail!(CpuidPolicy::for_this_cpu(&guest_cpu), "CPUID policy");
    let signature = CpuidResult {
        eax: 0x4000_0000,
        ebx: 0x746e_6f70,
        ecx: 0x6162_2d65,
        edx: 0x2173_6369,
    };
    or_fail!(cpuid.set(0x4000_0000, None, signature), "CPUID policy");

    let lines = core::array::from_fn(|gsi| LINES.line(gsi));
    let mut board = Board {
        bus: PortBus::new(),
        testdev: PcTestDev::new(lines, or_fail!(window.try_into(), "pc-testdev window")),
        exit: DebugExit::standard(),
    };
    for (first, count) in ponte_qemu_devices::pc_testdev::PORT_RANGES {
        or_fail!(board.bus.add(first, count, 0), "port bus");
    }
    or_fail!(board.bus.add(0xF4, 4, 1), "port bus");

    let mut dispatch = Dispatcher::new(&cpuid, caps.phys_addr_bits);
    vcpu.set_accounting(boot.has_argument("stats"));
    let mut halts = 0;
    let status = loop {
        match dispatch.run(&mut vcpu, &mut board) {
            Stop::Requested(StopRequest::ExitStatus(status)) => break status,
            Stop::Halted if vcpu.regs().rax == HALT_MARK && halts == 0 => halts += 1,
            other => {
                println!("{}", vcpu.stats());
                finish(
                    Outcome::Fail,
                    format_args!("{mode} guest stopped: {other:?}"),
                )
            }
        }
    };
    println!("{}", vcpu.stats());
    if status != 1 {
        finish(
            Outcome::Fail,
            format_args!("{mode} guest failed check {}", status >> 1),
        );
    }
    if mode == "bench" {
        let median = median_round_trip(&ram);
        println!("bench vmx.cpuid_exit_roundtrip {median} tsc");
        finish(
            Outcome::Pass,
            format_args!("median CPUID exit round trip {median} TSC ticks"),
        );
    }
    finish(
        Outcome::Pass,
        format_args!("{mode} guest passed every check, {halts} HLT"),
    )
}

/// Runs every broken configuration that applies to this CPU on a fresh
/// baseline VMCS: the pre-flight checker must name its rule, and the CPU,
/// entered with the checker bypassed, must fail the entry as the SDM says.
/// Returns how many behaved as the SDM says and how many deviated as the
/// command line says they do; any other mismatch ends the run as failed.
#[allow(clippy::too_many_arguments)]
fn run_broken_configurations(
    boot: &BootInfo,
    pages: heapless::Vec<&'static mut Page4K, 32>,
    vmx: &Vmx,
    caps: &VmxCapabilities,
    settings: &ControlSettings,
    host: &HostState,
    guest: &GuestState,
    eptp: u64,
    msr_bitmap: &mut MsrBitmap,
) -> (usize, usize) {
    let (mut tried, mut deviations) = (0, 0);
    for (config, page) in BROKEN_CONFIGS.iter().zip(pages) {
        if !(config.applies)(caps) {
            println!("broken {}: does not apply to this CPU", config.name);
            continue;
        }
        let mut vcpu = or_fail!(Vcpu::new(vmx, page), "VMCS");
        vcpu.explain_entry_failures();
        or_fail!(
            configure_vmcs(vcpu.vmcs(), caps, settings, host, guest, eptp, msr_bitmap),
            "VMCS setup"
        );
        let before = check_vm_entry(vcpu.vmcs(), caps);
        if !before.is_clean() {
            finish(
                Outcome::Fail,
                format_args!(
                    "baseline for {} is not clean: {:?}",
                    config.name, before.violations
                ),
            );
        }
        or_fail!((config.mutate)(vcpu.vmcs(), caps), "breaking the VMCS");
        if !check_vm_entry(vcpu.vmcs(), caps).has(config.rule) {
            finish(
                Outcome::Fail,
                format_args!("checker missed {} ({})", config.name, config.rule.name()),
            );
        }
        let outcome = match vcpu.run() {
            Err(RunError::Entry(VmcsError::Failed(error))) => {
                Ok(ExpectedOutcome::InstructionError(error.number()))
            }
            Ok(VmExit::EntryFailure {
                raw, qualification, ..
            }) => Ok(ExpectedOutcome::EntryFailure {
                reason: raw as u16,
                qualification,
            }),
            other => Err(other),
        };
        // `deviates=<name>` on the command line names a configuration the
        // emulator is known to enter although the SDM says it must refuse
        // it; it must deviate exactly so, and nothing else may.
        let known_deviation = boot
            .command_line
            .split_whitespace()
            .any(|w| w.strip_prefix("deviates=") == Some(config.name));
        match (outcome, known_deviation) {
            (Ok(outcome), false) if outcome == config.outcome => {}
            (Err(other), true) => {
                println!("broken {}: checker names {}; this CPU deviates from the SDM: {other:?}", config.name, config.rule.name());
                deviations += 1;
                continue;
            }
            (outcome, _) => finish(
                Outcome::Fail,
                format_args!("{}: expected {:?} (deviation named: {known_deviation}), the CPU gave {outcome:?}", config.name, config.outcome),
            ),
        }
        println!(
            "broken {}: checker names {}, CPU gives {:?}",
            config.name,
            config.rule.name(),
            config.outcome
        );
        tried += 1;
    }
    (tried, deviations)
}

/// The median of the benchmark guest's measured round trips.
fn median_round_trip(ram: &LinearRam) -> u32 {
    // A histogram over the plausible range: deltas are small and, under
    // Bochs, all alike.
    let mut histogram = [0u16; 4096];
    let mut bytes = [0u8; 4];
    for i in 0..BENCH_COUNT as u64 {
        if ram.read(BENCH_RESULTS + 4 * i, &mut bytes).is_ok() {
            let delta = u32::from_le_bytes(bytes) as usize;
            histogram[delta.min(histogram.len() - 1)] += 1;
        }
    }
    let mut seen = 0;
    for (delta, &count) in histogram.iter().enumerate() {
        seen += usize::from(count);
        if seen * 2 >= BENCH_COUNT {
            return delta as u32;
        }
    }
    u32::MAX
}
