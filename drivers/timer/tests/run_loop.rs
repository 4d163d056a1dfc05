//! The timers, the interrupt controllers and the injection decision driven
//! together the way a run loop drives them, against a scripted guest.

use ponte_kernel::device::{AccessWidth, Mmio, PortIo};
use ponte_kernel::irq::inject::{decide, ActivityState, Decision, EventInjection, GuestEventState};
use ponte_kernel::irq::ioapic::{IoApic, IoApicVersion, IOREGSEL, IOWIN};
use ponte_kernel::irq::lapic::{reg, LapicConfig, LocalApic};
use ponte_kernel::irq::pic::DualPic;
use ponte_kernel::irq::router::{Chips, IrqRouter};
use ponte_kernel::irq::LineSet;
use ponte_kernel::time::{first_ns_at_tick, Clock, ManualClock};
use ponte_timer::pit::{Pit, COMMAND_PORT, PIT_HZ};
use ponte_timer::rtc::{self, Rtc};

fn earliest(deadlines: &[Option<u64>]) -> Option<u64> {
    deadlines.iter().flatten().copied().min()
}

fn halted_guest() -> GuestEventState {
    GuestEventState {
        interrupts_enabled: true,
        interruptibility: 0,
        activity: ActivityState::Hlt,
        idt_vectoring: None,
    }
}

fn init_pic(pic: &mut DualPic, mask_master: u8, mask_slave: u8) {
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xA0, 0x11),
        (0xA1, 0x28),
        (0xA1, 0x02),
        (0xA1, 0x01),
        (0x21, mask_master),
        (0xA1, mask_slave),
    ] {
        pic.io_write(port, AccessWidth::Byte, u32::from(value));
    }
}

#[test]
fn pit_ticks_reach_a_halted_vcpu_through_the_ioapic() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pit = Pit::new(&clock, lines.line(0).unwrap());
    let mut pic = DualPic::new();
    init_pic(&mut pic, 0xFF, 0xFF);
    let mut ioapic = IoApic::new(0, IoApicVersion::V11);
    // The PIT (GSI 0) arrives on pin 2: vector 0x30, edge, physical 0.
    ioapic.mmio_write(IOREGSEL, AccessWidth::Dword, 0x14);
    ioapic.mmio_write(IOWIN, AccessWidth::Dword, 0x30);
    let mut lapic = LocalApic::new(LapicConfig::new(0, 1_000_000_000), &clock);
    lapic.mmio_write(u64::from(reg::SVR), AccessWidth::Dword, 0x1FF);
    let mut router = IrqRouter::<24>::pc_default();

    // The guest programs 1000 Hz: mode 2, count 1193, at tick 0.
    pit.io_write(COMMAND_PORT, AccessWidth::Byte, 0x34);
    pit.io_write(0x40, AccessWidth::Byte, 1193 & 0xFF);
    pit.io_write(0x40, AccessWidth::Byte, 1193 >> 8);

    let mut guest = halted_guest();
    let mut injected_at = Vec::new();
    for _ in 0..10 {
        // The vCPU is halted: the loop sleeps until the next deadline.
        let decision = {
            let mut chips = Chips {
                pic: Some(&mut pic),
                ioapic: Some(&mut ioapic),
                lapic: Some(&mut lapic),
            };
            router.sync(&lines, &mut chips);
            let next = earliest(&[chips.next_timer_deadline_ns(), pit.next_event_ns()]);
            decide(&guest, &mut chips, next)
        };
        let Decision::Sleep { until_ns: Some(t) } = decision else {
            panic!("expected to sleep, got {decision:?}");
        };
        clock.set(t);
        pit.poll();
        let mut chips = Chips {
            pic: Some(&mut pic),
            ioapic: Some(&mut ioapic),
            lapic: Some(&mut lapic),
        };
        router.sync(&lines, &mut chips);
        let Decision::Enter(entry) = decide(&guest, &mut chips, None) else {
            panic!("the tick must wake the vCPU");
        };
        assert_eq!(entry.inject, Some(EventInjection::external(0x30)));
        assert!(entry.wake);
        injected_at.push(clock.now_ns());
        // The guest handler runs with the activity state active, EOIs
        // and halts again.
        guest.activity = ActivityState::Active;
        lapic.mmio_write(u64::from(reg::EOI), AccessWidth::Dword, 0);
        guest.activity = ActivityState::Hlt;
    }
    // Loaded at tick 1, OUT rises every 1193 ticks after that.
    for (k, &t) in injected_at.iter().enumerate() {
        let tick = 1 + 1193 * (k as u64 + 1);
        assert_eq!(t, first_ns_at_tick(tick, PIT_HZ), "tick {k}");
    }
    assert_eq!(pit.coalesced_edges(), 0);
    assert!(lapic.isr().is_empty());
    // The PIC saw the same edges on IRQ0 but is masked.
    assert_eq!(pic.irr() & 1, 1);
    assert!(!pic.interrupt_output());
}

#[test]
fn rtc_periodic_interrupt_through_the_slave_pic_of_a_pic_only_appliance() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<16>::new();
    let mut rtc = Rtc::new(&clock, lines.line(8).unwrap(), 1_700_000_000);
    let mut pic = DualPic::new();
    init_pic(&mut pic, 0x00, 0x00);
    let mut router = IrqRouter::<16>::new();
    for gsi in [1usize, 3, 4, 8, 12] {
        router
            .set_route(gsi, ponte_kernel::irq::router::GsiRoute::pic(gsi as u8))
            .unwrap();
    }
    // 1024 Hz periodic interrupt.
    rtc.io_write(rtc::INDEX_PORT, AccessWidth::Byte, u32::from(rtc::reg::B));
    rtc.io_write(rtc::DATA_PORT, AccessWidth::Byte, 0x42);

    let mut guest = halted_guest();
    let mut times = Vec::new();
    for round in 0..6 {
        let next = rtc.next_event_ns();
        if round == 5 {
            // The handler of round 4 did not read register C: IRQF stays
            // set, the line stays high, no new edge, nothing to wait for.
            assert_eq!(next, None);
            break;
        }
        clock.set(next.expect("periodic interrupt armed"));
        rtc.poll();
        let mut chips = Chips::<&ManualClock> {
            pic: Some(&mut pic),
            ioapic: None,
            lapic: None,
        };
        router.sync(&lines, &mut chips);
        let Decision::Enter(entry) = decide(&guest, &mut chips, None) else {
            panic!("IRQ 8 must wake the vCPU");
        };
        // IRQ 8 is IR0 of the slave: vector 0x28, cascaded through IR2.
        assert_eq!(entry.inject, Some(EventInjection::external(0x28)));
        assert_eq!(pic.isr(), (1 << 8) | (1 << 2));
        times.push(clock.now_ns());
        guest.activity = ActivityState::Active;
        if round < 4 {
            rtc.io_write(rtc::INDEX_PORT, AccessWidth::Byte, u32::from(rtc::reg::C));
            let c = rtc.io_read(rtc::DATA_PORT, AccessWidth::Byte);
            assert_eq!(c & 0xC0, 0xC0, "IRQF and PF");
        }
        pic.io_write(0xA0, AccessWidth::Byte, 0x20);
        pic.io_write(0x20, AccessWidth::Byte, 0x20);
        guest.activity = ActivityState::Hlt;
    }
    // 1024 Hz: 976562.5 ns apart, on the 32.768 kHz grid.
    let expected: Vec<u64> = (1..=5).map(|k| first_ns_at_tick(32 * k, 32_768)).collect();
    assert_eq!(times, expected);
}

#[test]
fn lapic_timer_wakes_the_vcpu_when_the_loop_sleeps_until_its_deadline() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<1>::new();
    let mut lapic = LocalApic::new(LapicConfig::new(0, 1_000_000_000), &clock);
    for (offset, value) in [
        (reg::SVR, 0x1FF),
        (reg::LVT_TIMER, 0x2_00EC),   // periodic, vector 0xEC
        (reg::TIMER_DIVIDE, 0x3),     // divide by 16
        (reg::TIMER_INITIAL, 62_500), // 1 ms at 1 GHz / 16
    ] {
        lapic.mmio_write(u64::from(offset), AccessWidth::Dword, value);
    }
    let mut router = IrqRouter::<1>::new();
    let guest = halted_guest();
    for k in 1..=3u64 {
        let mut chips = Chips {
            pic: None,
            ioapic: None,
            lapic: Some(&mut lapic),
        };
        router.sync(&lines, &mut chips);
        let next = chips.next_timer_deadline_ns();
        assert_eq!(
            decide(&guest, &mut chips, next),
            Decision::Sleep {
                until_ns: Some(k * 1_000_000)
            }
        );
        clock.set(k * 1_000_000);
        router.sync(&lines, &mut chips);
        let Decision::Enter(entry) = decide(&guest, &mut chips, None) else {
            panic!("timer must wake the vCPU");
        };
        assert_eq!(entry.inject, Some(EventInjection::external(0xEC)));
        lapic.eoi();
    }
}

#[test]
fn hostile_port_traffic_never_panics() {
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
    let clock = ManualClock::new(0);
    let lines = LineSet::<16>::new();
    let mut pit = Pit::new(&clock, lines.line(0).unwrap());
    let mut rtc = Rtc::new(&clock, lines.line(8).unwrap(), i64::MAX / 2);
    let mut rng = Lcg(42);
    for _ in 0..50_000 {
        let r = rng.next();
        let value = (r >> 24) as u32;
        match r % 8 {
            0 => pit.io_write(0x40 + (r >> 8) as u16 % 4, AccessWidth::Byte, value),
            1 => {
                pit.io_read(0x40 + (r >> 8) as u16 % 4, AccessWidth::Byte);
            }
            2 => pit.io_write(0x61, AccessWidth::Byte, value),
            3 => rtc.io_write(0x70 + (r >> 8) as u16 % 2, AccessWidth::Byte, value),
            4 => {
                rtc.io_read(0x71, AccessWidth::Byte);
            }
            5 => clock.advance((r >> 8) % 3_000_000_000),
            _ => {
                pit.poll();
                rtc.poll();
                if let Some(t) = earliest(&[pit.next_event_ns(), rtc.next_event_ns()]) {
                    assert!(t < u64::MAX);
                }
            }
        }
    }
}
