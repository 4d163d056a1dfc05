//! testkernel: runs a test kernel written for `qemu-system-x86_64 -kernel X
//! -append ARGS -initrd F` unmodified, and reports the status QEMU would
//! exit with.
//!
//! The first boot module is the kernel (Multiboot v1 or v2, whichever header
//! it carries); its module command line is the kernel's name followed by its
//! arguments (`-append`). A second module, if any, is handed to the kernel as
//! its Multiboot module (`-initrd`). `mem=MiB` on the image's command line
//! sets the guest's RAM (default 128 MiB).
//!
//! The guest is entered as both Multiboot specifications say: 32-bit
//! protected mode, paging off, EAX the loader magic, EBX the information
//! block. Its machine is QEMU's PC with the test devices of the profile the
//! kernels are written for:
//!
//! - isa-debug-exit at 0xf4 (`iosize=4`): a write of N ends the run with
//!   status `(N << 1) | 1`;
//! - fw_cfg on the legacy I/O ports 0x510/0x511 (signature, RAM size, one
//!   CPU);
//! - pc-testdev: scratch ports, the flush-page port, the interrupt-line ports
//!   0x2000-0x2017 (one per GSI, through the interrupt router), and its 64 KiB
//!   window at 0xff000000, which behaves as memory and which the guest
//!   reaches through MMIO emulation, as QEMU's guests reach its iomem region;
//! - COM1 (16550A at 0x3f8, IRQ 4), whose output this image prints on its
//!   own console as it arrives;
//! - Bochs' port 0x8900 `Shutdown` convention;
//! - the PC interrupt architecture: both 8259As, the IOAPIC at 0xFEC00000,
//!   the local APIC (xAPIC page at `IA32_APIC_BASE`, which may move it, and
//!   the x2APIC MSRs) and the 8254 PIT.
//!
//! When the guest writes isa-debug-exit, the image prints
//! `PONTE-GUEST-EXIT: status N`; when it halts for good, powers off, resets
//! or triple-faults without having written there, status 0 (QEMU with
//! `-no-reboot` exits 0 then). Either way the run passes: it ran the guest
//! to an end, and the runner compares the status.
#![no_std]
#![no_main]

use ponte_arch::{
    boot::{finish, BootInfo, Console, Outcome},
    ept::{EptViolation, HostRam, MemoryType, UniformHostMemory},
    memory::HostMemory,
    or_fail, println,
    vmx::{controls::PinControl, vmcs::GuestN, VmcsExt},
};
use ponte_kernel::{
    bus::PortBus,
    cpu_state::{adjust_cpuid_for_apic, Cr4Policy},
    cpuid::{CpuidPolicy, CpuidResult, GuestCpu},
    decode::mmio::{handle_ept_violation, MmioBus, MmioError, VcpuState, WriteBack},
    device::{AccessWidth, Mmio, PortIo},
    irq::{
        board::{InterruptMmio, PcInterrupts, PolledTimer, PIC_PORT_RANGES},
        ioapic::DEFAULT_IOAPIC_BASE,
        lapic::{ApicMode, LapicConfig, DEFAULT_APIC_BASE, MSR_APIC_BASE},
        lines::{Line, LineSet},
    },
    loader::{self, BootConfig, InfoPlacement, Module, RamRange},
    memory::{BackingOutOfBounds, GuestLayout, RamBacking},
    msr::GeneralProtection,
    time::TscClock,
    vcpu::{Dispatcher, Interrupts, Platform, PreemptionTimer, Stop, StopRequest},
    vm::{
        appliance_controls, build_vcpu, needs_identity_paging, protected_mode_paging_off, BuiltVcpu,
    },
};
use ponte_qemu_devices::{
    debug_exit::DebugExit,
    fw_cfg::{self, FwCfg},
    pc_testdev::{self, PcTestDev},
    shutdown::{ShutdownPort, SHUTDOWN_PORT},
};
use ponte_serial::{Serial, SerialSink, COM1_BASE, PORT_COUNT};
use ponte_timer::pit::Pit;

ponte_arch::entry!(main);

/// Guest RAM when the command line names none, in MiB.
const DEFAULT_RAM_MIB: u64 = 128;
/// The least guest RAM that holds low memory, a kernel at 1 MiB and room.
const MIN_RAM_MIB: u64 = 4;
/// Conventional memory ends here; the ISA hole (VGA, ROMs) follows.
const LOW_RAM_END: u64 = 0xA_0000;
/// Extended memory starts here.
const HIGH_RAM_START: u64 = 0x10_0000;
/// Interrupt lines (GSIs) of the board: the IOAPIC's 24 pins.
const GSIS: usize = 24;
/// COM1's ISA interrupt.
const COM1_GSI: usize = 4;
/// The PIT's ISA interrupt.
const PIT_GSI: usize = 0;
/// The PIT's counter ports and port 0x61 (speaker gate, OUT2).
const PIT_PORTS: [(u16, u16); 2] = [(0x40, 4), (0x61, 1)];
/// The size of the IOAPIC's and the xAPIC's MMIO pages.
const CONTROLLER_PAGE: u64 = 0x1000;

static LINES: LineSet<GSIS> = LineSet::new();

/// A RAM region of the guest's layout: a block of host memory the image
/// keeps for the whole run. Copyable, so the layout can be rebuilt when the
/// guest moves its local APIC.
#[derive(Clone, Copy, Debug)]
struct Ram<'r>(&'r HostRam);

impl RamBacking for Ram<'_> {
    fn size(&self) -> u64 {
        RamBacking::size(self.0)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingOutOfBounds> {
        RamBacking::read(self.0, offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackingOutOfBounds> {
        RamBacking::write(self.0, offset, data)
    }
    fn host_physical(&self) -> Option<u64> {
        RamBacking::host_physical(self.0)
    }
}

/// The devices behind the layout's MMIO regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    IoApic,
    LocalApic,
    TestDevWindow,
}

type Layout<'r> = GuestLayout<Ram<'r>, Device, 8>;
type GuestLine = Line<'static, GSIS>;

/// The guest's COM1 output, copied to the image's console.
struct GuestConsole;

impl SerialSink for GuestConsole {
    fn write_byte(&mut self, byte: u8) {
        // The console turns `\n` into `\r\n` itself.
        if byte != b'\r' {
            Console::write_byte(byte);
        }
    }
}

/// The 8254 as one of the interrupt system's polled timers.
struct PitTimer(Pit<TscClock, GuestLine>);

impl PolledTimer for PitTimer {
    fn poll(&mut self) {
        self.0.poll();
    }
    fn next_event_ns(&self) -> Option<u64> {
        self.0.next_event_ns()
    }
}

type Irq = PcInterrupts<'static, TscClock, PitTimer, GSIS>;

/// The devices behind MMIO regions (the interrupt controllers' pages and
/// pc-testdev's window), as the MMIO emulation reaches them.
struct MmioDevices<'a> {
    irq: &'a mut Irq,
    testdev: &'a mut PcTestDev<'static, GuestLine>,
}

impl MmioBus<Device> for MmioDevices<'_> {
    fn mmio_read(&mut self, device: Device, offset: u64, width: AccessWidth) -> u64 {
        match device {
            Device::IoApic => self.irq.mmio_read(InterruptMmio::IoApic, offset, width),
            // The layout holds the xAPIC page where IA32_APIC_BASE puts it.
            Device::LocalApic => self.irq.lapic.mmio_read(offset, width),
            Device::TestDevWindow => self.testdev.mmio_read(offset, width),
        }
    }
    fn mmio_write(&mut self, device: Device, offset: u64, width: AccessWidth, value: u64) {
        match device {
            Device::IoApic => self
                .irq
                .mmio_write(InterruptMmio::IoApic, offset, width, value),
            Device::LocalApic => self.irq.lapic.mmio_write(offset, width, value),
            Device::TestDevWindow => self.testdev.mmio_write(offset, width, value),
        }
    }
}

/// QEMU's PC with the test devices. Port-bus device indices follow the
/// order of the devices in `with_ports!`.
struct Board<'r> {
    bus: PortBus<16>,
    exit: DebugExit,
    fw_cfg: FwCfg<'static, 1>,
    testdev: PcTestDev<'static, GuestLine>,
    com1: Serial<GuestLine, GuestConsole>,
    shutdown: ShutdownPort,
    irq: Irq,
    /// Everything but the xAPIC page.
    fixed_layout: Layout<'r>,
    /// `fixed_layout` plus the xAPIC page where the local APIC has it.
    layout: Layout<'r>,
    lapic_page: Option<u64>,
}

impl Board<'_> {
    /// Puts the xAPIC page where `IA32_APIC_BASE` now has it (or nowhere,
    /// when the local APIC is disabled or in x2APIC mode). A page moved onto
    /// RAM is not reachable: RAM keeps the address.
    fn place_lapic_page(&mut self) {
        let page = self.irq.lapic.mmio_base();
        if page == self.lapic_page {
            return;
        }
        self.layout = self.fixed_layout.clone();
        if let Some(base) = page {
            if let Err(e) = self
                .layout
                .add_mmio(base, CONTROLLER_PAGE, Device::LocalApic)
            {
                log::warn!("xAPIC page at {base:#x} not reachable: {e:?}");
            }
        }
        self.lapic_page = page;
    }
}

/// Calls `$body` with `$devices`, the board's port devices in bus order.
macro_rules! with_ports {
    ($board:ident, |$devices:ident| $body:expr) => {{
        let mut $devices: [&mut dyn PortIo; 7] = [
            &mut $board.exit,
            &mut $board.fw_cfg,
            &mut $board.testdev,
            &mut $board.com1,
            &mut $board.shutdown,
            &mut $board.irq.pic,
            &mut $board.irq.timers.0,
        ];
        $body
    }};
}

impl Platform for Board<'_> {
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        let bus = &self.bus;
        with_ports!(self, |devices| bus.read(&mut devices, port, width))
    }
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        let bus = &self.bus;
        with_ports!(self, |devices| bus.write(&mut devices, port, width, value));
    }
    fn msr_read(&mut self, msr: u32) -> Option<Result<u64, GeneralProtection>> {
        self.irq.msr_read(msr)
    }
    fn msr_write(&mut self, msr: u32, value: u64) -> Option<Result<(), GeneralProtection>> {
        let result = self.irq.msr_write(msr, value);
        if msr == MSR_APIC_BASE {
            self.place_lapic_page();
        }
        result
    }
    fn adjust_cpuid(&mut self, leaf: u32, _subleaf: u32, answer: &mut CpuidResult) {
        let enabled = self.irq.lapic.mode() != ApicMode::Disabled;
        adjust_cpuid_for_apic(leaf, enabled, answer);
    }
    fn stop_request(&mut self) -> Option<StopRequest> {
        if let Some(page) = self.testdev.take_flushed_page() {
            // RAM is mapped once and never remapped, and the window is not
            // mapped at all: there is no stale translation to drop.
            log::debug!("pc-testdev flush of page {page:#x}");
        }
        if let Some(request) = self.exit.take_exit_request() {
            return Some(StopRequest::ExitStatus(request.status()));
        }
        self.shutdown
            .take_shutdown_request()
            .then_some(StopRequest::PowerOff)
    }
    fn ept_violation(
        &mut self,
        violation: &EptViolation,
        vcpu: &VcpuState,
    ) -> Option<Result<WriteBack, MmioError>> {
        Some(handle_ept_violation(
            &self.layout,
            &mut MmioDevices {
                irq: &mut self.irq,
                testdev: &mut self.testdev,
            },
            violation,
            vcpu,
        ))
    }
    fn interrupts(&mut self) -> Option<&mut dyn Interrupts> {
        Some(&mut self.irq)
    }
}

/// The guest's RAM size from `mem=MiB` on the command line.
fn ram_mib(boot: &BootInfo) -> u64 {
    boot.command_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mem=")?.parse().ok())
        .unwrap_or(DEFAULT_RAM_MIB)
}

fn main(boot: BootInfo, mut memory: HostMemory) -> ! {
    let Some(kernel) = boot.modules.first() else {
        finish(
            Outcome::Fail,
            format_args!("no kernel: pass it as the first boot module"),
        );
    };
    let kernel_name = kernel.name.split_whitespace().next().unwrap_or("kernel");
    let initrd = boot.modules.get(1).map(|m| Module {
        data: m.bytes(),
        cmdline: m.name,
    });
    let mib = ram_mib(&boot);
    if !(MIN_RAM_MIB..=3072).contains(&mib) {
        finish(
            Outcome::Fail,
            format_args!("mem={mib}: between {MIN_RAM_MIB} and 3072 MiB"),
        );
    }
    let ram_size = mib << 20;

    let vmx = or_fail!(memory.enable_vmx(), "VMX bring-up");
    let caps = *vmx.caps();
    let ram = or_fail!(memory.ram(ram_size, 2 << 20), "guest RAM");
    let testdev_registers = or_fail!(memory.bytes(pc_testdev::IOMEM_LEN), "pc-testdev registers");

    // RAM from 0 (page 0 and low memory are the guest's, writable), the
    // pc-testdev window, the IOAPIC; the xAPIC page is placed by the board.
    // The window is QEMU's iomem region, an MMIO region there: each access
    // exits and is emulated on the device's buffer.
    let mut fixed_layout = Layout::new();
    or_fail!(fixed_layout.add_ram(0, Ram(&ram)), "layout");
    or_fail!(
        fixed_layout.add_mmio(
            pc_testdev::IOMEM_BASE,
            pc_testdev::IOMEM_LEN as u64,
            Device::TestDevWindow
        ),
        "layout"
    );
    or_fail!(
        fixed_layout.add_mmio(DEFAULT_IOAPIC_BASE, CONTROLLER_PAGE, Device::IoApic),
        "layout"
    );

    // Without unrestricted guest, the guest runs on an identity map in the
    // last page of RAM, which the memory map leaves out.
    let identity_directory = ram_size - 4096;
    let ranges = [
        RamRange::new(0, LOW_RAM_END),
        RamRange::new(HIGH_RAM_START, identity_directory - HIGH_RAM_START),
    ];
    let modules: &[Module<'_>] = match &initrd {
        Some(initrd) => core::slice::from_ref(initrd),
        None => &[],
    };
    let config = BootConfig {
        kernel: kernel.bytes(),
        kernel_name,
        cmdline: kernel.arguments(),
        modules,
        ram: &ranges,
        boot_loader_name: "ponte",
        info_placement: InfoPlacement::AfterKernel,
    };
    let loaded = match loader::load(&fixed_layout, &config) {
        Ok(loaded) => loaded,
        Err(e) => finish(
            Outcome::Fail,
            format_args!("cannot load {kernel_name}: {e}"),
        ),
    };
    println!(
        "testkernel: {kernel_name} ({:?}) at {:#x}-{:#x}, entry {:#x}, information at {:#x}, \
         {mib} MiB, arguments '{}'",
        loaded.protocol,
        loaded.kernel_start,
        loaded.kernel_end,
        loaded.entry.eip,
        loaded.info_addr,
        config.cmdline
    );

    let identity_paging = needs_identity_paging(&caps);
    if identity_paging {
        or_fail!(
            ponte_kernel::loader::paging::identity_map_32(&fixed_layout, identity_directory),
            "identity page directory"
        );
    }
    let guest = protected_mode_paging_off(&caps, loaded.entry.eip, 0, identity_directory as u32);
    let settings = or_fail!(
        appliance_controls(false, identity_paging)
            .prefer(PinControl::PreemptionTimer)
            .reconcile(&caps),
        "VMX controls"
    );
    let BuiltVcpu {
        mut vcpu,
        ept: _tables,
        ..
    } = or_fail!(
        build_vcpu(&vmx, &mut memory, &settings, &guest, |ept| {
            Ok(fixed_layout.map_ram_into(ept, &UniformHostMemory(MemoryType::WriteBack))?)
        }),
        "vCPU"
    );
    // Failed entries are explained by the pre-flight checker in the log.
    vcpu.explain_entry_failures();
    let registers = vcpu.regs_mut();
    registers.rax = u64::from(loaded.entry.eax);
    registers.rbx = u64::from(loaded.entry.ebx);

    let guest_cpu = GuestCpu {
        apic_id: 0,
        apic: true,
        x2apic: true,
        tsc_deadline: false,
        tsc_khz: None,
        apic_timer_khz: None,
    };
    let cpuid: CpuidPolicy<96> = or_fail!(CpuidPolicy::for_this_cpu(&guest_cpu), "CPUID policy");
    // Setting a CR4 bit the guest's CPUID does not offer exits, and the
    // dispatch raises #GP for it as such a processor would.
    let cr4_policy = Cr4Policy::from_cpuid(&cpuid);
    or_fail!(cr4_policy.install(vcpu.vmcs()), "CR4 mask");

    let tsc_hz = ponte_arch::cpu::tsc_hz();
    let clock = TscClock::new(tsc_hz);
    let line = |gsi: usize| match LINES.line(gsi) {
        Some(line) => line,
        None => finish(Outcome::Fail, format_args!("no interrupt line {gsi}")),
    };
    let mut lapic = LapicConfig::new(0, tsc_hz);
    lapic.phys_addr_bits = caps.phys_addr_bits;
    let irq = PcInterrupts::new(
        &LINES,
        clock,
        0,
        lapic,
        DEFAULT_APIC_BASE,
        PitTimer(Pit::new(clock, line(PIT_GSI))),
    );
    let mut board = Board {
        bus: PortBus::new(),
        exit: DebugExit::standard(),
        fw_cfg: FwCfg::new(ram_size, 1),
        testdev: PcTestDev::new(
            core::array::from_fn(|gsi| LINES.line(gsi)),
            or_fail!(testdev_registers.try_into(), "pc-testdev registers"),
        ),
        com1: Serial::new(COM1_BASE, line(COM1_GSI), GuestConsole),
        shutdown: ShutdownPort::new(),
        irq,
        layout: fixed_layout.clone(),
        fixed_layout,
        lapic_page: None,
    };
    board.place_lapic_page();
    let mut ports = [
        (ponte_qemu_devices::debug_exit::DEFAULT_BASE, 4, 0),
        (fw_cfg::SELECTOR_PORT, 2, 1),
        (COM1_BASE, PORT_COUNT, 3),
        (SHUTDOWN_PORT, 1, 4),
    ]
    .into_iter()
    .chain(pc_testdev::PORT_RANGES.map(|(first, count)| (first, count, 2)))
    .chain(PIC_PORT_RANGES.map(|(first, count)| (first, count, 5)))
    .chain(PIT_PORTS.map(|(first, count)| (first, count, 6)));
    if let Some(e) =
        ports.find_map(|(first, count, device)| board.bus.add(first, count, device).err())
    {
        finish(Outcome::Fail, format_args!("port bus: {e:?}"));
    }

    let mut dispatch = Dispatcher::new(&cpuid, caps.phys_addr_bits)
        .with_control_registers(cr4_policy, [caps.cr0, caps.cr4]);
    if settings.has(PinControl::PreemptionTimer) {
        dispatch = dispatch.with_preemption_timer(PreemptionTimer {
            rate: caps.misc.preemption_timer_rate,
            tsc_hz,
        });
    }
    let status = match dispatch.run(&mut vcpu, &mut board) {
        Stop::Requested(StopRequest::ExitStatus(status)) => status,
        stop @ (Stop::Requested(_) | Stop::Halted | Stop::TripleFault) => {
            println!("testkernel: the guest stopped without writing isa-debug-exit: {stop:?}");
            0
        }
        other => finish(
            Outcome::Fail,
            format_args!(
                "guest stopped at RIP {:#x}: {other:?}",
                vcpu.vmcs().read(GuestN::Rip).unwrap_or(0)
            ),
        ),
    };
    println!();
    println!("PONTE-GUEST-EXIT: status {status}");
    finish(
        Outcome::Pass,
        format_args!("{kernel_name} ran to exit status {status}"),
    )
}
