//! The PC board the Linux guest runs on: port and MMIO devices, device
//! MSRs, and the interrupt system the run loop consults before each entry.

use ponte_arch::{boot::Console, ept::EptViolation, ept::HostRam, println};
use ponte_kernel::{
    bus::PortBus,
    decode::mmio::{handle_ept_violation, MmioBus, MmioError, VcpuState, WriteBack},
    device::{AccessWidth, Mmio},
    irq::{
        inject::{decide, Decision, GuestEventState},
        ioapic::{IoApic, IoApicVersion},
        lapic::{ApicFault, LapicConfig, LocalApic},
        lines::{Line, LineSet},
        pic::DualPic,
        router::{Chips, GsiRoute, IrqRouter, RouteError},
    },
    memory::GuestLayout,
    msr::GeneralProtection,
    time::{Clock, TscClock},
    vcpu::{apicv::ApicModel, Interrupts, Platform, StopRequest},
};
use ponte_pci::{bus::ResourceWindow, PciBus};
use ponte_serial::{Serial, SerialSink};
use ponte_timer::{pit::Pit, rtc::Rtc};

use crate::disk::DiskFunction;
use crate::pm::Pm1a;
use crate::{
    DISK_GSI, DISK_SLOT, LAPIC_BASE, PCI_IO_BASE, PCI_IO_SIZE, PCI_MMIO_BASE, PCI_MMIO_SIZE,
    PM1A_CONTROL, PM1A_EVENT, S5_SLEEP_TYPE,
};

/// The board's interrupt lines, indexed by GSI.
pub static LINES: LineSet<24> = LineSet::new();

/// Owners of the MMIO regions of the guest's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dev {
    /// The IOAPIC's register window.
    IoApic,
    /// The local APIC's xAPIC page.
    Lapic,
    /// The PCI memory window (BARs).
    Pci,
    /// The PCI configuration spaces as an ECAM window.
    Ecam,
}

/// IA32_MCG_CAP: bank count in bits 7:0, MCG_CTL present in bit 8.
const IA32_MCG_CAP: u32 = 0x179;
/// IA32_MCG_STATUS.
const IA32_MCG_STATUS: u32 = 0x17a;

/// The marker the guest's init prints first (see the runner's guest assets).
const INIT_MARKER: &[u8] = b"PONTE-GUEST:";
/// The guest's spelling of the image's result marker: a guest line never
/// reaches the console as a result line of the image.
const GUEST_RESULT_MARKER: &[u8] = b"PONTE-RESULT(guest):";

/// Follows a byte stream for one marker; `feed` says when it completes.
/// The markers here do not overlap themselves (no proper prefix is also a
/// suffix), so a mismatch can restart at the current byte.
struct Marker {
    text: &'static [u8],
    matched: usize,
}

impl Marker {
    const fn new(text: &'static [u8]) -> Self {
        Self { text, matched: 0 }
    }

    /// Takes the next byte; true when it completes the marker.
    fn feed(&mut self, byte: u8) -> bool {
        if self.text.get(self.matched) != Some(&byte) {
            self.matched = 0;
        }
        if self.text.get(self.matched) == Some(&byte) {
            self.matched += 1;
        }
        if self.matched == self.text.len() {
            self.matched = 0;
            return true;
        }
        false
    }
}

/// COM1's output: the appliance's console, watched for init's first line.
/// The image's result marker is renamed in guest output
/// ([`GUEST_RESULT_MARKER`]), so the guest cannot speak for the image.
pub struct ConsoleSink {
    init: Marker,
    result: Marker,
    /// Whether init's marker has been seen.
    pub init_seen: bool,
}

impl ConsoleSink {
    fn new() -> Self {
        Self {
            init: Marker::new(INIT_MARKER),
            result: Marker::new(ponte_arch::boot::RESULT_MARKER.as_bytes()),
            init_seen: false,
        }
    }

    fn emit(byte: u8) {
        if byte != b'\r' {
            Console::write_byte(byte);
        }
    }
}

impl SerialSink for ConsoleSink {
    fn write_byte(&mut self, byte: u8) {
        if self.init.feed(byte) {
            self.init_seen = true;
        }
        let held = self.result.matched;
        let completed = self.result.feed(byte);
        let matched = self.result.matched;
        let released: &[u8] = if completed {
            GUEST_RESULT_MARKER
        } else if matched == 0 || matched <= held {
            // The bytes held back as a possible marker were not one: out
            // they go, then this byte unless it starts a new match.
            self.result.text.get(..held).unwrap_or_default()
        } else {
            &[]
        };
        released.iter().copied().for_each(Self::emit);
        if !completed && matched == 0 {
            Self::emit(byte);
        }
    }
}

/// The guest's CPUID hides x2APIC: its support is left out.
type Lapic<'c> = LocalApic<&'c TscClock, false>;

/// Port-bus device indices.
const PIC: u8 = 0;
const PIT: u8 = 1;
const RTC: u8 = 2;
const COM1: u8 = 3;
const PM: u8 = 4;
const PCI: u8 = 5;

/// The board's port ranges: first port, count, port-bus device index. A
/// table in read-only data, walked once by [`Board::new`].
const PORT_MAP: &[(u16, u16, u8)] = &[
    (0x20, 2, PIC),
    (0xa0, 2, PIC),
    (0x4d0, 2, PIC),
    (0x40, 4, PIT),
    (0x61, 1, PIT),
    (0x70, 2, RTC),
    (0x3f8, 8, COM1),
    (PM1A_EVENT, 4, PM),
    (PM1A_CONTROL, 2, PM),
    (0xcf8, 8, PCI),
    (PCI_IO_BASE, PCI_IO_SIZE, PCI),
];

/// Every device of the board.
pub struct Board<'a> {
    ports: PortBus<16>,
    pic: DualPic,
    ioapic: IoApic,
    lapic: Lapic<'a>,
    pit: Pit<&'a TscClock, Line<'static, 24>>,
    rtc: Rtc<&'a TscClock, Line<'static, 24>>,
    com1: Serial<Line<'static, 24>, ConsoleSink>,
    pm: Pm1a,
    pci: PciBus<'a, 4>,
    router: IrqRouter<24>,
    clock: &'a TscClock,
    layout: &'a GuestLayout<HostRam, Dev, 8>,
    stopped: Option<StopRequest>,
}

/// Why the board could not be assembled.
pub enum BoardError {
    /// A port range clashes or the bus is full.
    Ports(ponte_kernel::bus::PortBusError),
    /// The PCI bus refused a function or the resource windows.
    Pci(ponte_pci::BusError),
    /// A line number outside the line set.
    NoLine(usize),
    /// The interrupt router refused a route.
    Route(RouteError),
}

impl core::fmt::Debug for BoardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Ports(e) => write!(f, "port bus: {e:?}"),
            Self::Pci(e) => write!(f, "PCI bus: {e:?}"),
            Self::NoLine(gsi) => write!(f, "no interrupt line {gsi}"),
            Self::Route(e) => write!(f, "interrupt route: {e:?}"),
        }
    }
}

impl From<ponte_kernel::bus::PortBusError> for BoardError {
    fn from(e: ponte_kernel::bus::PortBusError) -> Self {
        Self::Ports(e)
    }
}

impl From<ponte_pci::BusError> for BoardError {
    fn from(e: ponte_pci::BusError) -> Self {
        Self::Pci(e)
    }
}

fn line(gsi: usize) -> Result<Line<'static, 24>, BoardError> {
    LINES.line(gsi).ok_or(BoardError::NoLine(gsi))
}

impl<'a> Board<'a> {
    /// The board over `layout`, with `disk` on PCI slot [`DISK_SLOT`] if given.
    // Out of line, the board is built in place rather than assembled from
    // pieces main's code kept apart.
    #[inline(never)]
    pub fn new(
        clock: &'a TscClock,
        layout: &'a GuestLayout<HostRam, Dev, 8>,
        tsc_hz: u64,
    ) -> Result<Self, BoardError> {
        let mut lapic_config = LapicConfig::new(0, tsc_hz);
        lapic_config.timer_hz = crate::CRYSTAL_HZ;
        let mut board = Board {
            ports: PortBus::new(),
            pic: DualPic::new(),
            ioapic: IoApic::new(1, IoApicVersion::V20),
            lapic: LocalApic::xapic_only(lapic_config, clock),
            pit: Pit::new(clock, line(0)?),
            rtc: Rtc::new(clock, line(8)?, 1_785_000_000),
            com1: Serial::new(0x3f8, line(4)?, ConsoleSink::new()),
            pm: Pm1a::new(PM1A_EVENT, PM1A_CONTROL),
            pci: PciBus::new(),
            router: IrqRouter::pc_default(),
            clock,
            layout,
            stopped: None,
        };
        // Reset state: xAPIC enabled at the default base, BSP.
        let _ = board.lapic.set_apic_base(LAPIC_BASE | (1 << 11) | (1 << 8));
        board.rtc.set_memory_size(crate::GUEST_RAM, 0);
        // The SCI is wired active-low to the IOAPIC (its MADT override says
        // level, active low), as PCI interrupts are.
        board
            .router
            .set_route(
                usize::from(crate::SCI_IRQ),
                GsiRoute::both(crate::SCI_IRQ, crate::SCI_IRQ).active_low(),
            )
            .map_err(BoardError::Route)?;
        for &(first, count, device) in PORT_MAP {
            board.ports.add(first, count, usize::from(device))?;
        }
        Ok(board)
    }

    /// Attaches the disk to the PCI bus (whose host bridge is 00:00.0) and
    /// places the BARs as firmware would.
    pub fn attach_pci<'w: 'a>(
        &mut self,
        disk: Option<&'a mut DiskFunction<'a, 'w>>,
    ) -> Result<(), BoardError> {
        if let Some(disk) = disk {
            disk.header_mut().set_interrupt_line(DISK_GSI as u8);
            self.pci.attach(DISK_SLOT, 0, disk)?;
        }
        self.pci.assign_resources(
            ResourceWindow {
                base: PCI_MMIO_BASE,
                size: PCI_MMIO_SIZE,
            },
            ResourceWindow {
                base: u64::from(PCI_IO_BASE),
                size: u64::from(PCI_IO_SIZE),
            },
        )?;
        self.pci.set_mmio_window_base(PCI_MMIO_BASE);
        Ok(())
    }

    /// Whether init has printed its marker.
    pub fn init_printed(&self) -> bool {
        self.com1.sink().init_seen
    }

    /// Prints the state that explains a failed run.
    pub fn report(&self) {
        println!(
            "linux-vhd: lapic isr {} irr {}, pic irr {:#x}",
            self.lapic.isr(),
            self.lapic.irr(),
            self.pic.irr()
        );
    }
}

impl Board<'_> {
    /// When the PIT or the RTC next wants to interrupt, if either will.
    /// Out of line: both the injection decision and the run loop ask.
    #[inline(never)]
    fn timer_deadline_ns(&self) -> Option<u64> {
        earliest(self.pit.next_event_ns(), self.rtc.next_event_ns())
    }

    /// Reads `port`, or writes `value` to it, through the port bus (a write
    /// returns 0). Out of line: reads and writes share the device table.
    #[inline(never)]
    fn port_access(&mut self, port: u16, width: AccessWidth, value: Option<u32>) -> u32 {
        let ports = &self.ports;
        let mut devices = [
            &mut self.pic as &mut dyn ponte_kernel::device::PortIo,
            &mut self.pit,
            &mut self.rtc,
            &mut self.com1,
            &mut self.pm,
            &mut self.pci,
        ];
        match value {
            None => ports.read(&mut devices, port, width),
            Some(value) => {
                ports.write(&mut devices, port, width, value);
                0
            }
        }
    }
}

/// The MMIO devices, borrowed for one access.
struct MmioDevices<'b, 'a> {
    ioapic: &'b mut IoApic,
    lapic: &'b mut Lapic<'a>,
    pci: &'b mut PciBus<'a, 4>,
}

impl MmioBus<Dev> for MmioDevices<'_, '_> {
    fn mmio_read(&mut self, device: Dev, offset: u64, width: AccessWidth) -> u64 {
        match device {
            Dev::IoApic => self.ioapic.mmio_read(offset, width),
            Dev::Lapic => self.lapic.mmio_read(offset, width),
            Dev::Pci => Mmio::mmio_read(self.pci, offset, width),
            Dev::Ecam => self.pci.ecam_read(offset, width),
        }
    }
    fn mmio_write(&mut self, device: Dev, offset: u64, width: AccessWidth, value: u64) {
        match device {
            Dev::IoApic => self.ioapic.mmio_write(offset, width, value),
            Dev::Lapic => self.lapic.mmio_write(offset, width, value),
            Dev::Pci => Mmio::mmio_write(self.pci, offset, width, value),
            Dev::Ecam => self.pci.ecam_write(offset, width, value),
        }
    }
}

fn apic_fault(
    msr: u32,
    written: Option<u64>,
    fault: ApicFault,
) -> Option<Result<(), GeneralProtection>> {
    match fault {
        ApicFault::NotApicMsr { .. } => None,
        _ => Some(Err(GeneralProtection { msr, written })),
    }
}

impl Platform for Board<'_> {
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        self.port_access(port, width, None)
    }

    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        self.port_access(port, width, Some(value));
        if let Some(sleep_type) = self.pm.take_sleep_request() {
            if sleep_type == S5_SLEEP_TYPE {
                self.stopped = Some(StopRequest::PowerOff);
            } else {
                println!("linux-vhd: guest asked for sleep type {sleep_type}, ignored");
            }
        }
    }

    fn msr_read(&mut self, msr: u32) -> Option<Result<u64, GeneralProtection>> {
        // The machine-check architecture with no error-reporting banks:
        // MCG_CAP reads 0 banks and no MCG_CTL; MCG_STATUS reads clear.
        if msr == IA32_MCG_CAP || msr == IA32_MCG_STATUS {
            return Some(Ok(0));
        }
        match self.lapic.read_msr(msr) {
            Ok(value) => Some(Ok(value)),
            Err(fault) => apic_fault(msr, None, fault).map(|r| r.map(|()| 0)),
        }
    }

    fn msr_write(&mut self, msr: u32, value: u64) -> Option<Result<(), GeneralProtection>> {
        match msr {
            // SDM: MCG_CAP is read-only; MCG_STATUS takes only zero.
            IA32_MCG_CAP => {
                return Some(Err(GeneralProtection {
                    msr,
                    written: Some(value),
                }))
            }
            IA32_MCG_STATUS => {
                return Some(if value == 0 {
                    Ok(())
                } else {
                    Err(GeneralProtection {
                        msr,
                        written: Some(value),
                    })
                })
            }
            _ => {}
        }
        match self.lapic.write_msr(msr, value) {
            Ok(()) => Some(Ok(())),
            Err(fault) => apic_fault(msr, Some(value), fault),
        }
    }

    fn stop_request(&mut self) -> Option<StopRequest> {
        self.stopped.take()
    }

    fn ept_violation(
        &mut self,
        violation: &EptViolation,
        vcpu: &VcpuState,
    ) -> Option<Result<WriteBack, MmioError>> {
        let mut devices = MmioDevices {
            ioapic: &mut self.ioapic,
            lapic: &mut self.lapic,
            pci: &mut self.pci,
        };
        Some(handle_ept_violation(
            self.layout,
            &mut devices,
            violation,
            vcpu,
        ))
    }

    fn interrupts(&mut self) -> Option<&mut dyn Interrupts> {
        Some(self)
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Interrupts for Board<'_> {
    fn decide(&mut self, guest: &GuestEventState) -> Decision {
        self.pit.poll();
        self.rtc.poll();
        let timers = self.timer_deadline_ns();
        let mut chips = Chips {
            pic: Some(&mut self.pic),
            ioapic: Some(&mut self.ioapic),
            lapic: Some(&mut self.lapic),
        };
        self.router.sync(&LINES, &mut chips);
        let next = earliest(chips.next_timer_deadline_ns(), timers);
        decide(guest, &mut chips, next)
    }

    fn next_deadline_ns(&self) -> Option<u64> {
        earliest(
            self.lapic.next_timer_deadline_ns(),
            self.timer_deadline_ns(),
        )
    }

    fn local_apic(&mut self) -> Option<&mut dyn ApicModel> {
        Some(&mut self.lapic)
    }

    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }
}
