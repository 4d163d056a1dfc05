use super::*;
use crate::device::{AccessWidth, Mmio, PortIo};
use crate::irq::ioapic::{IoApicVersion, IOREGSEL, IOWIN};
use crate::irq::lapic::{reg, LapicConfig};
use crate::irq::InterruptLine;
use crate::time::ManualClock;

struct Board {
    pic: DualPic,
    ioapic: IoApic,
    lapic: LocalApic<&'static ManualClock>,
    router: IrqRouter<24>,
}

fn clock() -> &'static ManualClock {
    std::boxed::Box::leak(std::boxed::Box::new(ManualClock::new(0)))
}

impl Board {
    fn new(clock: &'static ManualClock) -> Self {
        let mut pic = DualPic::new();
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, 0x28),
            (0xA1, 0x02),
            (0xA1, 0x01),
        ] {
            pic.io_write(port, AccessWidth::Byte, value);
        }
        let mut lapic = LocalApic::new(LapicConfig::new(0, 1_000_000_000), clock);
        lapic.mmio_write(u64::from(reg::SVR), AccessWidth::Dword, 0x1FF);
        Self {
            pic,
            ioapic: IoApic::new(0, IoApicVersion::V11),
            lapic,
            router: IrqRouter::pc_default(),
        }
    }

    fn program(&mut self, pin: u8, low: u32) {
        let io = &mut self.ioapic;
        io.mmio_write(IOREGSEL, AccessWidth::Dword, u64::from(0x10 + 2 * pin));
        io.mmio_write(IOWIN, AccessWidth::Dword, u64::from(low));
    }

    fn sync<const N: usize>(&mut self, lines: &LineSet<N>) {
        let mut chips = Chips {
            pic: Some(&mut self.pic),
            ioapic: Some(&mut self.ioapic),
            lapic: Some(&mut self.lapic),
        };
        self.router.sync(lines, &mut chips);
    }

    fn chips(&mut self) -> Chips<'_, &'static ManualClock> {
        Chips {
            pic: Some(&mut self.pic),
            ioapic: Some(&mut self.ioapic),
            lapic: Some(&mut self.lapic),
        }
    }
}

#[test]
fn pc_default_table() {
    let r = IrqRouter::<24>::pc_default();
    assert_eq!(r.route(0), Some(GsiRoute::both(0, 2)));
    assert_eq!(r.route(2), Some(GsiRoute::NONE));
    assert_eq!(r.route(8), Some(GsiRoute::both(8, 8)));
    assert_eq!(r.route(19), Some(GsiRoute::ioapic(19).active_low()));
    assert_eq!(r.route(24), None);
}

#[test]
fn a_pulse_reaches_both_controllers() {
    let lines = LineSet::<24>::new();
    let mut b = Board::new(clock());
    b.program(2, 0x30);
    lines.line(0).unwrap().pulse();
    b.sync(&lines);
    // GSI 0 -> PIC IRQ0 and IOAPIC pin 2 (interrupt source override).
    assert_eq!(b.pic.irr() & 1, 1);
    assert!(b.lapic.irr().contains(0x30));
    // A second sync without a new pulse delivers nothing more.
    b.lapic.acknowledge();
    b.lapic.eoi();
    b.sync(&lines);
    assert!(b.lapic.irr().is_empty());
}

#[test]
fn level_line_is_redelivered_after_eoi_while_raised() {
    let lines = LineSet::<24>::new();
    let mut b = Board::new(clock());
    // PCI line on GSI 20: level, active low, vector 0x50.
    b.program(20, 0x0000_A050);
    let line = lines.line(20).unwrap();
    b.sync(&lines);
    assert!(
        b.lapic.irr().is_empty(),
        "deasserted line is electrically high"
    );
    line.raise();
    b.sync(&lines);
    assert_eq!(b.lapic.acknowledge(), Some(0x50));
    b.sync(&lines);
    assert!(b.lapic.irr().is_empty(), "remote IRR holds it");
    b.lapic
        .mmio_write(u64::from(reg::EOI), AccessWidth::Dword, 0);
    b.sync(&lines);
    assert!(b.lapic.irr().contains(0x50), "re-delivered: still raised");
    assert_eq!(b.lapic.acknowledge(), Some(0x50));
    line.lower();
    b.lapic.eoi();
    b.sync(&lines);
    assert!(b.lapic.irr().is_empty());
    assert_eq!(b.ioapic.redirection(20) & (1 << 14), 0, "remote IRR clear");
}

#[test]
fn routes_change_at_run_time() {
    let lines = LineSet::<24>::new();
    let mut b = Board::new(clock());
    b.program(5, 0x0000_8045);
    b.program(7, 0x0000_8047);
    // Level on the PIC too (ELCR), so its IRR follows the input.
    b.pic.io_write(0x4D0, AccessWidth::Byte, 1 << 5);
    let line = lines.line(5).unwrap();
    line.raise();
    b.sync(&lines);
    assert_eq!(b.lapic.acknowledge(), Some(0x45));
    assert_eq!(b.pic.irr() & (1 << 5), 1 << 5);
    b.router.set_route(5, GsiRoute::ioapic(7)).unwrap();
    b.lapic.eoi();
    b.sync(&lines);
    // The old pin sees the line fall, the new one sees it high.
    assert_eq!(b.lapic.acknowledge(), Some(0x47));
    assert!(b.lapic.irr().is_empty());
    assert_eq!(b.pic.irr() & (1 << 5), 0, "no longer on the PIC");
    // Refused routes.
    assert_eq!(
        b.router.set_route(30, GsiRoute::NONE),
        Err(RouteError::NoSuchGsi {
            gsi: 30,
            capacity: 24
        })
    );
    assert_eq!(
        b.router.set_route(1, GsiRoute::pic(2)),
        Err(RouteError::BadPicIrq { irq: 2 })
    );
    assert_eq!(
        b.router.set_route(1, GsiRoute::ioapic(24)),
        Err(RouteError::BadIoApicPin { pin: 24 })
    );
}

#[test]
fn msi_goes_straight_to_the_lapic() {
    let mut b = Board::new(clock());
    let mut router = IrqRouter::<0>::new();
    router
        .deliver_msi(0xFEE0_0000, 0x0061, &mut b.chips())
        .unwrap();
    assert!(b.lapic.irr().contains(0x61));
    assert!(!b.lapic.tmr().contains(0x61));
    router
        .deliver_msi(0xFEE0_0000, 0xC062, &mut b.chips())
        .unwrap();
    assert!(b.lapic.tmr().contains(0x62), "level MSI sets TMR");
    router
        .deliver_msi(0xFEE0_5000, 0x0063, &mut b.chips())
        .unwrap();
    assert!(!b.lapic.irr().contains(0x63));
    assert_eq!(router.undelivered(), 1);
    assert!(router
        .deliver_msi(0xFEC0_0000, 0x63, &mut b.chips())
        .is_err());
}

#[test]
fn pic_reaches_the_cpu_through_lint0_or_alone() {
    let lines = LineSet::<24>::new();
    let mut b = Board::new(clock());
    lines.line(4).unwrap().pulse();
    b.sync(&lines);
    b.lapic
        .request_vector(0x80, crate::irq::msi::TriggerMode::Edge);
    {
        let chips = b.chips();
        // LINT0 masked: only the LAPIC vector counts.
        assert!(chips.interrupt_pending());
    }
    assert_eq!(b.chips().acknowledge_interrupt(), Some(0x80));
    b.lapic.eoi();
    assert!(!b.chips().interrupt_pending());
    // Virtual wire: LINT0 in ExtINT mode, unmasked.
    b.lapic
        .mmio_write(u64::from(reg::LVT_LINT0), AccessWidth::Dword, 0x700);
    b.lapic
        .request_vector(0x81, crate::irq::msi::TriggerMode::Edge);
    assert_eq!(
        b.chips().acknowledge_interrupt(),
        Some(0x24),
        "ExtINT first"
    );
    assert_eq!(b.chips().acknowledge_interrupt(), Some(0x81));

    // An appliance with a PIC only.
    let mut pic = b.pic.clone();
    lines.line(3).unwrap().pulse();
    let mut chips: Chips<'_, &ManualClock> = Chips {
        pic: Some(&mut pic),
        ioapic: None,
        lapic: None,
    };
    IrqRouter::<24>::pc_default().sync(&lines, &mut chips);
    assert!(chips.interrupt_pending());
    assert_eq!(chips.acknowledge_interrupt(), Some(0x23));
    assert!(!chips.nmi_pending());
}

#[test]
fn sync_fires_the_lapic_timer_and_reports_its_deadline() {
    let clock = clock();
    let lines = LineSet::<24>::new();
    let mut b = Board::new(clock);
    b.lapic
        .mmio_write(u64::from(reg::LVT_TIMER), AccessWidth::Dword, 0xEF);
    b.lapic
        .mmio_write(u64::from(reg::TIMER_DIVIDE), AccessWidth::Dword, 0xB);
    b.lapic
        .mmio_write(u64::from(reg::TIMER_INITIAL), AccessWidth::Dword, 500);
    assert_eq!(b.chips().next_timer_deadline_ns(), Some(500));
    clock.set(500);
    b.sync(&lines);
    assert!(b.lapic.irr().contains(0xEF));
}

/// A small deterministic generator for hostile register traffic.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 16
    }
}

#[test]
fn hostile_register_traffic_never_panics_and_keeps_invariants() {
    let clock = clock();
    let lines = LineSet::<24>::new();
    let mut b = Board::new(clock);
    let mut rng = Lcg(0x5EED);
    let widths = [
        AccessWidth::Byte,
        AccessWidth::Word,
        AccessWidth::Dword,
        AccessWidth::Qword,
    ];
    for _ in 0..20_000 {
        let r = rng.next();
        let value = rng.next() << 16 ^ rng.next();
        let width = widths[(r % 4) as usize];
        match (r >> 2) % 10 {
            0 => {
                let port = [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1][(r >> 8) as usize % 6];
                b.pic.io_write(port, width, value as u32);
            }
            1 => {
                let port = [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1][(r >> 8) as usize % 6];
                b.pic.io_read(port, width);
            }
            2 => b.ioapic.mmio_write((r >> 8) % 0x50, width, value),
            3 => {
                b.ioapic.mmio_read((r >> 8) % 0x50, width);
            }
            4 => b.lapic.mmio_write((r >> 8) % 0x1100, width, value),
            5 => {
                b.lapic.mmio_read((r >> 8) % 0x1100, width);
            }
            6 => {
                let msr = [0x1B, 0x6E0, 0x800 + ((r >> 8) % 0x100) as u32][(r >> 20) as usize % 3];
                let _ = b.lapic.write_msr(msr, value);
                let _ = b.lapic.read_msr(msr);
            }
            7 => {
                let line = lines.line((r >> 8) as usize % 24).unwrap();
                match (r >> 16) % 3 {
                    0 => line.raise(),
                    1 => line.lower(),
                    _ => line.pulse(),
                }
            }
            8 => clock.advance((r >> 8) % 5_000_000),
            _ => {
                let _ = b.router.set_route(
                    (r >> 8) as usize % 30,
                    GsiRoute::both((r >> 16) as u8 % 18, (r >> 24) as u8 % 26),
                );
                let mut chips = Chips {
                    pic: Some(&mut b.pic),
                    ioapic: Some(&mut b.ioapic),
                    lapic: Some(&mut b.lapic),
                };
                let _ =
                    b.router
                        .deliver_msi(0xFEE0_0000 | (value & 0xFF00C), value as u32, &mut chips);
            }
        }
        b.sync(&lines);
        // Invariants: what the LAPIC offers beats its PPR class, and what
        // the chips hand out is a real vector.
        if let Some(v) = b.lapic.pending_vector() {
            assert!(v & 0xF0 > b.lapic.ppr() & 0xF0);
            assert!(v >= 16);
        }
        if r & 7 == 0 {
            let mut chips = b.chips();
            if chips.interrupt_pending() {
                chips.acknowledge_interrupt();
            }
            if r & 0x18 == 0 {
                b.lapic.eoi();
            }
        }
    }
}
