//! ept-basics: one guest per run, chosen by the command line, each proving
//! a part of ponte's EPT and guest-memory layer end to end:
//!
//! - `large-pages [ram=<MiB>]`: RAM (512 MiB unless given) mapped with the
//!   largest pages alignment and capabilities allow, checked page by page
//!   through `EptTables::translate`; the guest writes and reads back a
//!   pattern in every 2 MiB, and the appliance finds it in host memory.
//! - `mmio`: the guest uses pc-testdev's MMIO window at every width, with
//!   extending loads and read-modify-writes; the device's record of the
//!   accesses must match the guest program exactly.
//! - `mmio-bench`: RDTSC-bracketed MMIO reads; prints the median round trip.
//! - `readonly`: a write to a page the EPT makes read-only stops the run
//!   loop with the violation; the appliance checks the reported addresses,
//!   makes the page writable, invalidates and resumes the guest.
//! - `dirty`: dirty logging reports exactly the pages the guest wrote, in
//!   two rounds with a harvest between them.
//! - `unmapped`: reads and writes of guest-physical addresses nothing owns
//!   complete (reads as all ones) and are reported to the board.
//!
//! The guests report through isa-debug-exit: status 1 is a pass,
//! `(N << 1) | 1` names the failed check N.
#![no_std]
#![no_main]

use heapless::Vec;
use ponte_arch::{
    boot::{finish, BootInfo, Outcome},
    ept::{
        EptCapabilities, EptTables, EptViolation, HostRam, MemoryType, PageSize, Permissions,
        UniformHostMemory,
    },
    memory::HostMemory,
    or_fail, println,
    vmx::{GuestState, Vcpu, VmExit, Vmx},
};
use ponte_kernel::{
    bus::PortBus,
    cpuid::{CpuidPolicy, GuestCpu},
    decode::mmio::{handle_ept_violation, MmioError, UnclaimedAccess, VcpuState, WriteBack},
    device::{AccessWidth, Mmio},
    irq::lines::Line,
    loader::paging::identity_map,
    memory::{GuestLayout, GuestMemory},
    mmio_devices::MmioDevices,
    vcpu::{Dispatcher, Platform, Stop, StopRequest},
    vm::{appliance_controls, build_vcpu, BuiltVcpu},
};
use ponte_qemu_devices::{
    debug_exit::DebugExit,
    pc_testdev::{PcTestDev, IOMEM_BASE, IOMEM_LEN},
};

ponte_arch::entry!(main);

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const ENTRY: u64 = 0x8000;
const STACK: u64 = 0x7000;
/// Where the appliance leaves a guest its parameters (`PARAMS` in
/// guests/common.inc).
const PARAMS: u64 = 0x6000;
const PAGE_TABLES: u64 = 0x1_0000;
/// Where guests leave results (`RESULTS` in guests/common.inc).
const RESULTS: u64 = 0x10_0000;
/// The guest's page tables map this much, MMIO and holes included.
const GUEST_MAPPED: u64 = 4 * GIB;
/// A reserved hole in the layout (`HOLE` in guests/unmapped.S).
const HOLE: u64 = 0xd000_0000;
const HOLE_LEN: u64 = 0x1000_0000;
/// A second RAM region of the `large-pages` guest: at 1 GiB, too short for
/// a 1 GiB page, two 2 MiB pages and a 1 MiB tail of 4 KiB pages.
const EXTRA_RAM_BASE: u64 = GIB;
const EXTRA_RAM_LEN: u64 = 5 * MIB;
/// RAM of every guest but `large-pages` and `dirty`.
const SMALL_RAM: u64 = 16 * MIB;
/// The MMIO window's device index in the layout and the MMIO device slice.
const TESTDEV: usize = 0;

const LARGE_PAGES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/large_pages.bin"));
const MMIO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mmio.bin"));
const MMIO_BENCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mmio_bench.bin"));
const READONLY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/readonly.bin"));
const DIRTY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dirty.bin"));
const UNMAPPED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/unmapped.bin"));

macro_rules! check {
    ($condition:expr, $($reason:tt)+) => {
        if !$condition {
            finish(Outcome::Fail, format_args!($($reason)+));
        }
    };
}

type Layout = GuestLayout<HostRam, usize, 4>;

/// One access the test device saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Access {
    write: bool,
    offset: u64,
    width: AccessWidth,
    /// The value written, or the value the device returned.
    value: u64,
}

const fn read(offset: u64, width: AccessWidth, value: u64) -> Access {
    Access {
        write: false,
        offset,
        width,
        value,
    }
}

const fn write(offset: u64, width: AccessWidth, value: u64) -> Access {
    Access {
        write: true,
        offset,
        width,
        value,
    }
}

use AccessWidth::{Byte, Dword, Qword, Word};

/// What guests/mmio.S does to the device, in order.
const MMIO_SCRIPT: [Access; 22] = [
    write(0x10, Byte, 0x85),
    read(0x10, Byte, 0x85),
    write(0x20, Word, 0xbeef),
    read(0x20, Word, 0xbeef),
    write(0x40, Dword, 0x89ab_cdef),
    read(0x40, Dword, 0x89ab_cdef),
    write(0x80, Qword, 0x0123_4567_89ab_cdef),
    read(0x80, Qword, 0x0123_4567_89ab_cdef),
    // movsx rcx, byte; movzx ecx, byte; movsx ecx, word; movzx rcx, word
    read(0x10, Byte, 0x85),
    read(0x10, Byte, 0x85),
    read(0x20, Word, 0xbeef),
    read(0x20, Word, 0xbeef),
    // and dword [0x40], 0x0ff00ff0, then read back
    read(0x40, Dword, 0x89ab_cdef),
    write(0x40, Dword, 0x09a0_0de0),
    read(0x40, Dword, 0x09a0_0de0),
    // or word [0x20], 0x0110, then read back
    read(0x20, Word, 0xbeef),
    write(0x20, Word, 0xbfff),
    read(0x20, Word, 0xbfff),
    // or qword [0x80], rdx, then read back
    read(0x80, Qword, 0x0123_4567_89ab_cdef),
    write(0x80, Qword, 0xf123_4567_89ab_cdef),
    read(0x80, Qword, 0xf123_4567_89ab_cdef),
    // and eax, [0x40]: read only
    read(0x40, Dword, 0x09a0_0de0),
];

/// pc-testdev with a record of every MMIO access it served.
struct RecordingTestDev {
    device: PcTestDev<'static, Line<'static, 24>>,
    log: Vec<Access, 32>,
    accesses: usize,
}

impl RecordingTestDev {
    fn record(&mut self, access: Access) {
        self.accesses = self.accesses.saturating_add(1);
        // The log keeps the first accesses; `accesses` counts them all.
        let _ = self.log.push(access);
    }
}

impl Mmio for RecordingTestDev {
    fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        let value = self.device.mmio_read(offset, width);
        self.record(read(offset, width, value));
        value
    }

    fn mmio_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
        self.record(write(offset, width, value));
        self.device.mmio_write(offset, width, value);
    }
}

/// The board: isa-debug-exit on the ports, pc-testdev's window on the
/// layout, and a record of accesses nothing owns.
struct Board {
    ports: PortBus<1>,
    exit: DebugExit,
    layout: Layout,
    testdev: RecordingTestDev,
    unclaimed: Vec<UnclaimedAccess, 16>,
    unclaimed_count: usize,
}

impl Platform for Board {
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        self.ports.read(&mut [&mut self.exit], port, width)
    }
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        self.ports.write(&mut [&mut self.exit], port, width, value);
    }
    fn stop_request(&mut self) -> Option<StopRequest> {
        self.exit
            .take_exit_request()
            .map(|r| StopRequest::ExitStatus(r.status()))
    }
    fn ept_violation(
        &mut self,
        violation: &EptViolation,
        vcpu: &VcpuState,
    ) -> Option<Result<WriteBack, MmioError>> {
        let mut devices: [&mut dyn Mmio; 1] = [&mut self.testdev];
        let mut bus = MmioDevices::new(&mut devices);
        Some(handle_ept_violation(
            &self.layout,
            &mut bus,
            violation,
            vcpu,
        ))
    }
    fn unclaimed_access(&mut self, access: UnclaimedAccess) {
        self.unclaimed_count = self.unclaimed_count.saturating_add(1);
        let _ = self.unclaimed.push(access);
    }
}

/// What every mode works with.
struct Machine<'a> {
    vmx: Vmx,
    vcpu: Vcpu,
    board: Board,
    ept: EptTables<&'a mut HostMemory>,
    eptp: u64,
    ram_size: u64,
}

impl Machine<'_> {
    /// Makes the processor forget cached translations of the tables.
    fn invalidate(&self) {
        or_fail!(self.vmx.invept(Some(self.eptp)), "INVEPT");
    }

    /// Fails the run unless `stop` is the guest's pass through the exit port.
    fn expect_pass(&mut self, stop: Stop, mode: &str) {
        match stop {
            Stop::Requested(StopRequest::ExitStatus(1)) => {}
            Stop::Requested(StopRequest::ExitStatus(status)) => finish(
                Outcome::Fail,
                format_args!("{mode} guest failed check {}", status >> 1),
            ),
            other => finish(
                Outcome::Fail,
                format_args!(
                    "{mode} guest stopped: {other:?} at RIP {:#x}",
                    self.guest_rip()
                ),
            ),
        }
    }

    fn guest_rip(&mut self) -> u64 {
        use ponte_arch::vmx::{vmcs::GuestN, VmcsExt};
        self.vcpu.vmcs().read(GuestN::Rip).unwrap_or(u64::MAX)
    }
}

fn command_value(boot: &BootInfo, key: &str) -> Option<u64> {
    boot.command_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn main(boot: BootInfo, mut memory: HostMemory) -> ! {
    let modes = [
        "large-pages",
        "mmio-bench",
        "mmio",
        "readonly",
        "dirty",
        "unmapped",
    ];
    let Some(mode) = modes.into_iter().find(|m| boot.has_argument(m)) else {
        finish(
            Outcome::Fail,
            format_args!("no mode on the command line (one of {modes:?})"),
        )
    };
    let ram_size = match mode {
        "large-pages" => command_value(&boot, "ram").unwrap_or(512) * MIB,
        "dirty" => 128 * MIB,
        _ => SMALL_RAM,
    };
    let program = match mode {
        "large-pages" => LARGE_PAGES,
        "mmio" => MMIO,
        "mmio-bench" => MMIO_BENCH,
        "readonly" => READONLY,
        "dirty" => DIRTY,
        _ => UNMAPPED,
    };

    let vmx = or_fail!(memory.enable_vmx(), "VMX bring-up");
    let caps = *vmx.caps();
    // Guest RAM aligned as the largest page that fits in it, so the host
    // side allows what the guest side does.
    let align = if ram_size >= GIB { GIB } else { 2 * MIB };
    let ram = or_fail!(memory.ram(ram_size, align), "guest RAM");
    let ram_host = ram.host_physical();
    let window = or_fail!(memory.bytes(IOMEM_LEN), "pc-testdev window");
    let mut layout: Layout = GuestLayout::new();
    or_fail!(layout.add_ram(0, ram), "layout");
    if mode == "large-pages" {
        let extra = or_fail!(memory.ram(EXTRA_RAM_LEN, 2 * MIB), "guest RAM");
        or_fail!(layout.add_ram(EXTRA_RAM_BASE, extra), "layout");
    }
    or_fail!(
        layout.add_mmio(IOMEM_BASE, IOMEM_LEN as u64, TESTDEV),
        "layout"
    );
    or_fail!(layout.reserve(HOLE, HOLE_LEN), "layout");
    let cr3 = or_fail!(
        identity_map(&layout, PAGE_TABLES, GUEST_MAPPED),
        "guest page tables"
    );
    or_fail!(layout.write(ENTRY, program), "loading the guest");

    let settings = or_fail!(
        appliance_controls(false, false).reconcile(&caps),
        "VMX controls"
    );
    let guest_cpu = GuestCpu {
        apic_id: 0,
        apic: false,
        x2apic: false,
        tsc_deadline: false,
        tsc_khz: None,
        apic_timer_khz: None,
    };
    let cpuid: CpuidPolicy<96> = or_fail!(CpuidPolicy::for_this_cpu(&guest_cpu), "CPUID policy");
    let tsc_seed = ponte_arch::cpu::tsc();
    let guest = GuestState::long_mode(cr3, ENTRY, STACK);
    let BuiltVcpu { mut vcpu, ept, .. } = or_fail!(
        build_vcpu(&vmx, &mut memory, &settings, &guest, |ept| {
            Ok(layout.map_ram_into(ept, &UniformHostMemory(MemoryType::WriteBack))?)
        }),
        "vCPU"
    );
    // Failed entries are explained by the pre-flight checker in the log.
    vcpu.explain_entry_failures();
    let ept_caps = *ept.capabilities();
    let eptp = ept.eptp().bits();
    println!(
        "ept-basics: {mode} guest, {} MiB RAM at host {ram_host:#x}; EPT 2 MiB pages: {}, 1 GiB pages: {}, A/D flags: {}",
        ram_size / MIB,
        ept_caps.pages_2m,
        ept_caps.pages_1g,
        ept_caps.accessed_dirty
    );

    let lines = core::array::from_fn(|_| None);
    let mut board = Board {
        ports: PortBus::new(),
        exit: DebugExit::standard(),
        layout,
        testdev: RecordingTestDev {
            device: PcTestDev::new(lines, or_fail!(window.try_into(), "pc-testdev window")),
            log: Vec::new(),
            accesses: 0,
        },
        unclaimed: Vec::new(),
        unclaimed_count: 0,
    };
    or_fail!(board.ports.add(0xf4, 4, 0), "port bus");
    let mut machine = Machine {
        vmx,
        vcpu,
        board,
        ept,
        eptp,
        ram_size,
    };
    let mut dispatch = Dispatcher::new(&cpuid, caps.phys_addr_bits);
    match mode {
        "large-pages" => large_pages(&mut machine, &mut dispatch),
        "mmio" => mmio(&mut machine, &mut dispatch),
        "mmio-bench" => mmio_bench(&mut machine, &mut dispatch),
        "readonly" => readonly(&mut machine, &mut dispatch),
        "dirty" => dirty(&mut machine, &mut dispatch, tsc_seed),
        _ => unmapped(&mut machine, &mut dispatch),
    }
}

fn write_param(m: &Machine, index: u64, value: u64) {
    or_fail!(
        m.board.layout.write_u64(PARAMS + 8 * index, value),
        "guest parameters"
    );
}

/// A RAM region of the layout: guest-physical start, length, host-physical
/// start.
#[derive(Clone, Copy)]
struct RamRegion {
    start: u64,
    len: u64,
    host: u64,
}

impl RamRegion {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    /// The largest page that may map `gpa` of this region: the page must
    /// lie inside the region, be aligned in both address spaces and be a
    /// size the processor's EPT supports (SDM 29.3.2: 2 MiB pages need
    /// IA32_VMX_EPT_VPID_CAP bit 16, 1 GiB pages bit 17).
    fn largest_page(&self, gpa: u64, caps: &EptCapabilities) -> PageSize {
        let candidates = [
            (PageSize::Size1G, caps.pages_1g && caps.pages_2m),
            (PageSize::Size2M, caps.pages_2m),
        ];
        for (size, supported) in candidates {
            let bytes = size.bytes();
            let base = gpa & !(bytes - 1);
            let inside = base >= self.start && base + bytes <= self.end();
            if supported && inside && (self.host + (base - self.start)).is_multiple_of(bytes) {
                return size;
            }
        }
        PageSize::Size4K
    }
}

/// The layout's RAM regions.
fn ram_regions(layout: &Layout) -> Vec<RamRegion, 4> {
    let mut regions = Vec::new();
    for r in layout.regions() {
        if let ponte_kernel::memory::RegionKind::Ram(backing) = &r.kind {
            let _ = regions.push(RamRegion {
                start: r.start,
                len: r.len,
                host: backing.host_physical(),
            });
        }
    }
    regions
}

/// Checks that every page of `region` is mapped where the region's host
/// memory is, RWX, by the largest page allowed; prints the page sizes.
fn check_page_sizes(m: &Machine, region: &RamRegion) {
    let caps = m.ept.capabilities();
    let mut counts = [0u64; 3];
    let mut gpa = region.start;
    while gpa < region.end() {
        let Some(t) = m.ept.translate(gpa) else {
            finish(Outcome::Fail, format_args!("RAM at {gpa:#x} is not mapped"));
        };
        let expected = region.largest_page(gpa, caps);
        check!(
            t.page_size == expected,
            "{gpa:#x} is mapped by a {:?} page, the largest allowed is {expected:?}",
            t.page_size
        );
        let host = region.host + (gpa - region.start);
        check!(
            t.host_physical == host,
            "{gpa:#x} leads to host {:#x}, not {host:#x}",
            t.host_physical
        );
        check!(
            t.attributes.permissions == Permissions::ALL,
            "{gpa:#x} has permissions {:?}",
            t.attributes.permissions
        );
        counts[usize::from(t.page_size.level() - 1)] += 1;
        gpa += t.page_size.bytes();
    }
    println!(
        "ept: RAM [{:#x}, {:#x}) mapped by {} x 1 GiB, {} x 2 MiB, {} x 4 KiB pages, each the largest alignment and capabilities allow (host {:#x})",
        region.start,
        region.end(),
        counts[2],
        counts[1],
        counts[0],
        region.host,
    );
}

/// Checks the large-pages guest's pattern in host memory over `[from,
/// to)` in steps of `step`; returns how many steps hold it and how many of
/// their leaves are dirty.
fn check_pattern(m: &Machine, from: u64, to: u64, step: u64) -> (u64, u64) {
    let (mut ranges, mut dirty) = (0, 0);
    let mut gpa = from;
    while gpa < to {
        let first = or_fail!(m.board.layout.read_u64(gpa), "reading guest RAM");
        let last = or_fail!(m.board.layout.read_u64(gpa + step - 8), "reading guest RAM");
        check!(
            first == gpa ^ PATTERN && last == !(gpa ^ PATTERN),
            "host memory at {gpa:#x} holds {first:#x}/{last:#x}, not the guest's pattern"
        );
        if m.ept.translate(gpa).is_some_and(|t| t.dirty) {
            dirty += 1;
        }
        ranges += 1;
        gpa += step;
    }
    (ranges, dirty)
}

const STEP_2M: u64 = 2 * MIB;
/// `PATTERN` in guests/large_pages.S.
const PATTERN: u64 = 0x5a5a_a5a5_c3c3_3c3c;

fn large_pages<const C: usize>(m: &mut Machine, dispatch: &mut Dispatcher<'_, C>) -> ! {
    let regions = ram_regions(&m.board.layout);
    check!(
        regions.len() == 2,
        "expected two RAM regions, the layout has {}",
        regions.len()
    );
    for region in &regions {
        check_page_sizes(m, region);
    }
    for hole in [m.ram_size, EXTRA_RAM_BASE + EXTRA_RAM_LEN, IOMEM_BASE, HOLE] {
        check!(
            m.ept.translate(hole).is_none(),
            "{hole:#x} is not RAM but is mapped"
        );
    }
    write_param(m, 0, m.ram_size);
    write_param(m, 1, EXTRA_RAM_BASE);
    write_param(m, 2, EXTRA_RAM_LEN);
    let stop = dispatch.run(&mut m.vcpu, &mut m.board);
    m.expect_pass(stop, "large-pages");
    // The guest's pattern is where the tables say: in host memory at the
    // same offsets of the blocks.
    let (large, large_dirty) = check_pattern(m, STEP_2M, m.ram_size, STEP_2M);
    let (small, small_dirty) =
        check_pattern(m, EXTRA_RAM_BASE, EXTRA_RAM_BASE + EXTRA_RAM_LEN, 4096);
    if m.ept.capabilities().accessed_dirty {
        check!(
            large_dirty == large && small_dirty == small,
            "only {large_dirty} of {large} 2 MiB and {small_dirty} of {small} 4 KiB ranges the guest wrote have a dirty leaf"
        );
    }
    finish(
        Outcome::Pass,
        format_args!(
            "large-pages guest wrote and read back all {large} 2 MiB ranges of {} MiB and all {small} 4 KiB ranges of the second region; host memory holds its pattern; their leaves are dirty",
            m.ram_size / MIB
        ),
    )
}

fn mmio<const C: usize>(m: &mut Machine, dispatch: &mut Dispatcher<'_, C>) -> ! {
    let stop = dispatch.run(&mut m.vcpu, &mut m.board);
    m.expect_pass(stop, "mmio");
    let device = &m.board.testdev;
    let script = &MMIO_SCRIPT[..];
    check!(
        device.accesses == script.len() && device.log.as_slice() == script,
        "the device saw {} accesses {:?}, expected {script:?}",
        device.accesses,
        device.log
    );
    check!(
        m.board.unclaimed_count == 0,
        "unclaimed accesses: {:?}",
        m.board.unclaimed
    );
    for width in [Byte, Word, Dword, Qword] {
        let (reads, writes) = script
            .iter()
            .filter(|a| a.width == width)
            .fold((0, 0), |(r, w), a| {
                (r + usize::from(!a.write), w + usize::from(a.write))
            });
        println!(
            "mmio: {}-byte accesses: {writes} writes, {reads} reads, offsets, widths and values as the guest made them",
            width.bytes()
        );
    }
    finish(
        Outcome::Pass,
        format_args!(
            "mmio guest passed; the device saw exactly its {} accesses (widths 1, 2, 4, 8, MOVZX/MOVSX, AND/OR read-modify-writes)",
            script.len()
        ),
    )
}

/// `COUNT` in guests/mmio_bench.S.
const BENCH_COUNT: u64 = 2000;

fn mmio_bench<const C: usize>(m: &mut Machine, dispatch: &mut Dispatcher<'_, C>) -> ! {
    let stop = dispatch.run(&mut m.vcpu, &mut m.board);
    m.expect_pass(stop, "mmio-bench");
    check!(
        m.board.testdev.accesses as u64 == BENCH_COUNT,
        "the device saw {} reads, the guest made {BENCH_COUNT}",
        m.board.testdev.accesses
    );
    // A histogram over the plausible range: under Bochs the deltas are all
    // alike.
    let mut histogram = [0u16; 8192];
    for i in 0..BENCH_COUNT {
        let delta = or_fail!(m.board.layout.read_u32(RESULTS + 4 * i), "results") as usize;
        histogram[delta.min(histogram.len() - 1)] += 1;
    }
    let mut seen = 0;
    let mut median = u32::MAX;
    for (delta, &count) in histogram.iter().enumerate() {
        seen += u64::from(count);
        if seen * 2 >= BENCH_COUNT {
            median = delta as u32;
            break;
        }
    }
    check!(
        (median as usize) < histogram.len() - 1,
        "median MMIO round trip beyond {} ticks",
        histogram.len() - 1
    );
    println!("bench ept.mmio_roundtrip {median} tsc");
    finish(
        Outcome::Pass,
        format_args!("median MMIO read round trip {median} TSC ticks over {BENCH_COUNT} reads"),
    )
}

/// The page the `readonly` guest writes, and where in it (`TARGET`).
const READONLY_PAGE: u64 = 0x40_0000;
const READONLY_TARGET: u64 = 0x238;
/// `ALIAS` and `VALUE` in guests/readonly.S.
const ALIAS: u64 = 0x80_0000_0000;
const READONLY_VALUE: u64 = 0x0fed_cba9_8765_4321;
const READONLY_BEFORE: u64 = 0x600d_f00d_0000_0001;

fn page_size_at(m: &Machine, gpa: u64) -> Option<(PageSize, Permissions)> {
    m.ept
        .translate(gpa)
        .map(|t| (t.page_size, t.attributes.permissions))
}

fn readonly<const C: usize>(m: &mut Machine, dispatch: &mut Dispatcher<'_, C>) -> ! {
    let target = READONLY_PAGE + READONLY_TARGET;
    // Linear ALIAS + x maps x: PML4 entry 1 shares entry 0's PDPT.
    let pml4e = or_fail!(m.board.layout.read_u64(PAGE_TABLES), "page tables");
    or_fail!(
        m.board.layout.write_u64(PAGE_TABLES + 8, pml4e),
        "page tables"
    );
    or_fail!(m.board.layout.write_u64(target, READONLY_BEFORE), "RAM");
    write_param(m, 0, READONLY_PAGE);
    write_param(m, 1, READONLY_BEFORE);
    let before = page_size_at(m, READONLY_PAGE);
    or_fail!(
        m.ept
            .protect(READONLY_PAGE, 4096, Permissions::READ_EXECUTE),
        "protecting the page"
    );
    m.invalidate();
    let protected = page_size_at(m, READONLY_PAGE);
    let neighbour = page_size_at(m, READONLY_PAGE + 4096);
    println!("readonly: page {READONLY_PAGE:#x} was {before:?}, now {protected:?}; its neighbour {neighbour:?}");
    check!(
        protected == Some((PageSize::Size4K, Permissions::READ_EXECUTE))
            && neighbour == Some((PageSize::Size4K, Permissions::ALL)),
        "protecting one page gave {protected:?}, its neighbour {neighbour:?}"
    );

    let stop = dispatch.run(&mut m.vcpu, &mut m.board);
    let Stop::Unhandled(VmExit::EptViolation {
        qualification,
        gpa,
        gla,
    }) = stop
    else {
        finish(
            Outcome::Fail,
            format_args!("expected the write's EPT violation, the run loop stopped with {stop:?}"),
        );
    };
    let violation = EptViolation::from_exit(qualification.0, gpa, gla.unwrap_or(0));
    println!("readonly: violation {violation:?}");
    check!(
        violation.guest_physical == target
            && violation.guest_linear == Some(ALIAS + target)
            && violation.write
            && !violation.read
            && !violation.fetch
            && violation.allowed == Permissions::READ_EXECUTE
            && violation.final_translation,
        "the violation should be a write at guest-physical {target:#x}, linear {:#x}, to a read-execute page, got {violation:?}",
        ALIAS + target
    );
    let still = or_fail!(m.board.layout.read_u64(target), "RAM");
    check!(
        still == READONLY_BEFORE,
        "the refused write changed memory: {still:#x}"
    );

    or_fail!(
        m.ept.protect(READONLY_PAGE, 4096, Permissions::ALL),
        "unprotecting the page"
    );
    m.invalidate();
    let after = page_size_at(m, READONLY_PAGE);
    println!("readonly: page writable again: {after:?}; resuming the guest at its write");
    check!(
        after.is_some_and(|(_, p)| p == Permissions::ALL),
        "the page is {after:?} after unprotecting"
    );
    let stop = dispatch.run(&mut m.vcpu, &mut m.board);
    m.expect_pass(stop, "readonly");
    let value = or_fail!(m.board.layout.read_u64(target), "RAM");
    check!(
        value == READONLY_VALUE,
        "host memory at {target:#x} holds {value:#x}, not the guest's write"
    );
    finish(
        Outcome::Pass,
        format_args!(
            "readonly guest's write stopped at {target:#x} (linear {:#x}), completed after unprotecting; guest and host see {value:#x}",
            ALIAS + target
        ),
    )
}

/// The window the `dirty` guest writes: 64 MiB from 64 MiB.
const DIRTY_BASE: u64 = 64 * MIB;
const DIRTY_LEN: u64 = 64 * MIB;
const DIRTY_PAGES: u64 = DIRTY_LEN / 4096;
const DIRTY_WORDS: usize = (DIRTY_PAGES / 64) as usize;
const WRITES_PER_ROUND: u64 = 50;
/// The guest's LCG (guests/dirty.S).
const LCG_MULTIPLIER: u64 = 6364136223846793005;
const LCG_INCREMENT: u64 = 1442695040888963407;

/// The pages a round of the guest writes from `seed`, as a bitmap like
/// `harvest_dirty`'s, and how many distinct pages that is.
fn written_pages(seed: u64) -> ([u64; DIRTY_WORDS], u64) {
    let mut bitmap = [0u64; DIRTY_WORDS];
    let mut x = seed;
    for _ in 0..WRITES_PER_ROUND {
        x = x.wrapping_mul(LCG_MULTIPLIER).wrapping_add(LCG_INCREMENT);
        let page = (x >> 33) & (DIRTY_PAGES - 1);
        bitmap[(page / 64) as usize] |= 1 << (page % 64);
    }
    let distinct = bitmap.iter().map(|w| u64::from(w.count_ones())).sum();
    (bitmap, distinct)
}

/// Harvests the window and compares it with the pages written from `seed`
/// (`None`: nothing was written).
fn harvest_and_compare(m: &mut Machine, seed: Option<u64>, round: &str) -> u64 {
    let mut bitmap = [0u64; DIRTY_WORDS];
    let reported = or_fail!(
        m.ept.harvest_dirty(DIRTY_BASE, DIRTY_LEN, &mut bitmap),
        "harvesting dirty pages"
    );
    // Harvest, then invalidate: the processor must see the cleared flags.
    m.invalidate();
    let (expected, distinct) = seed.map_or(([0; DIRTY_WORDS], 0), written_pages);
    if bitmap != expected {
        for (i, (got, want)) in bitmap.iter().zip(&expected).enumerate() {
            if got != want {
                println!(
                    "dirty: pages {:#x}..: reported {got:#018x}, written {want:#018x}",
                    DIRTY_BASE + i as u64 * 64 * 4096
                );
            }
        }
        finish(
            Outcome::Fail,
            format_args!("{round}: harvest reports {reported} pages, the guest wrote {distinct}"),
        );
    }
    check!(
        reported == distinct,
        "{round}: harvest counts {reported} pages, its bitmap has {distinct}"
    );
    println!("dirty: {round}: harvest reports {reported} pages, exactly the pages written since the last harvest");
    reported
}

fn dirty<const C: usize>(m: &mut Machine, dispatch: &mut Dispatcher<'_, C>, tsc: u64) -> ! {
    if !m.ept.capabilities().accessed_dirty {
        finish(
            Outcome::Fail,
            format_args!("this processor's EPT has no accessed and dirty flags"),
        );
    }
    let seeds = [tsc, tsc.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15];
    let read_seed = tsc.rotate_left(13);
    for (i, value) in [
        DIRTY_BASE,
        DIRTY_PAGES,
        WRITES_PER_ROUND,
        seeds[0],
        seeds[1],
        read_seed,
    ]
    .into_iter()
    .enumerate()
    {
        write_param(m, i as u64, value);
    }
    println!(
        "dirty: window [{DIRTY_BASE:#x}, {:#x}), {WRITES_PER_ROUND} writes a round, seeds {:#x} and {:#x}",
        DIRTY_BASE + DIRTY_LEN,
        seeds[0],
        seeds[1]
    );
    let before = page_size_at(m, DIRTY_BASE);
    or_fail!(
        m.ept.start_dirty_logging(DIRTY_BASE, DIRTY_LEN),
        "starting dirty logging"
    );
    m.invalidate();
    let logging = page_size_at(m, DIRTY_BASE + DIRTY_LEN - 4096);
    println!("dirty: logging splits {before:?} into {logging:?}");
    check!(
        logging.is_some_and(|(size, _)| size == PageSize::Size4K),
        "dirty logging left {logging:?}"
    );
    harvest_and_compare(m, None, "before the guest runs");

    let stop = dispatch.run(&mut m.vcpu, &mut m.board);
    check!(
        stop == Stop::Halted,
        "round one should end with HLT, the run loop stopped with {stop:?}"
    );
    let first = harvest_and_compare(m, Some(seeds[0]), "round one");
    let stop = dispatch.run(&mut m.vcpu, &mut m.board);
    m.expect_pass(stop, "dirty");
    let second = harvest_and_compare(m, Some(seeds[1]), "round two");
    harvest_and_compare(m, None, "after round two");
    or_fail!(
        m.ept.stop_dirty_logging(DIRTY_BASE, DIRTY_LEN),
        "stopping dirty logging"
    );
    let after = page_size_at(m, DIRTY_BASE);
    println!("dirty: logging stopped, window mapped by {after:?} again");
    check!(
        after == before,
        "after logging the window is {after:?}, before it was {before:?}"
    );
    finish(
        Outcome::Pass,
        format_args!(
            "dirty logging reported exactly the guest's {first} and {second} written pages in two rounds, nothing it only read"
        ),
    )
}

/// `PAST_RAM` in guests/unmapped.S.
const PAST_RAM: u64 = 0x2000_0000;

fn unclaimed(guest_physical: u64, write: bool, width: AccessWidth) -> UnclaimedAccess {
    UnclaimedAccess {
        guest_physical,
        write,
        width,
    }
}

fn unmapped<const C: usize>(m: &mut Machine, dispatch: &mut Dispatcher<'_, C>) -> ! {
    let stop = dispatch.run(&mut m.vcpu, &mut m.board);
    m.expect_pass(stop, "unmapped");
    let expected = [
        unclaimed(HOLE, false, Byte),
        unclaimed(HOLE + 2, false, Word),
        unclaimed(HOLE + 4, false, Dword),
        unclaimed(HOLE + 8, false, Qword),
        unclaimed(HOLE + 0x10, true, Dword),
        unclaimed(HOLE + 0x10, false, Dword),
        unclaimed(PAST_RAM, true, Qword),
        unclaimed(PAST_RAM + 1, false, Byte),
    ];
    check!(
        m.board.unclaimed_count == expected.len() && m.board.unclaimed.as_slice() == expected,
        "the board was told of {} accesses {:?}, expected {expected:?}",
        m.board.unclaimed_count,
        m.board.unclaimed
    );
    check!(
        m.board.testdev.accesses == 0,
        "the test device saw {:?}",
        m.board.testdev.log
    );
    for access in &expected {
        println!(
            "unmapped: {} of {} bytes at {:#x} reported to the board",
            if access.write { "write" } else { "read" },
            access.width.bytes(),
            access.guest_physical
        );
    }
    finish(
        Outcome::Pass,
        format_args!(
            "unmapped guest passed: {} accesses to nothing reported, reads all ones, writes dropped",
            expected.len()
        ),
    )
}
