//! The PIT as one of the timers of a PC board's interrupt system
//! (`PcInterrupts`), driven the way the run loop drives it.

use ponte_kernel::device::{AccessWidth, PortIo};
use ponte_kernel::irq::board::PcInterrupts;
use ponte_kernel::irq::inject::{ActivityState, Decision, EventInjection, GuestEventState};
use ponte_kernel::irq::lapic::{reg, LapicConfig, DEFAULT_APIC_BASE};
use ponte_kernel::irq::LineSet;
use ponte_kernel::time::{first_ns_at_tick, ManualClock};
use ponte_kernel::vcpu::Interrupts;
use ponte_timer::pit::{Pit, COMMAND_PORT, PIT_HZ};

#[test]
fn pit_rate_generator_wakes_a_halted_vcpu_on_its_own_ticks_through_the_pic() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let pit = Pit::new(&clock, lines.line(0).unwrap());
    let mut pc = PcInterrupts::new(
        &lines,
        &clock,
        0,
        LapicConfig::new(0, 1_000_000_000),
        DEFAULT_APIC_BASE,
        pit,
    );
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, 0xFE),
    ] {
        assert!(pc.io_write(port, AccessWidth::Byte, value));
    }
    for (register, value) in [(reg::SVR, 0x1FF), (reg::LVT_LINT0, 0x700)] {
        pc.mmio_write(
            ponte_kernel::irq::board::InterruptMmio::LocalApic,
            u64::from(register),
            AccessWidth::Dword,
            value,
        );
    }
    // Channel 0, mode 2, 1193 counts: 1000.15 Hz.
    pc.timers.io_write(COMMAND_PORT, AccessWidth::Byte, 0x34);
    pc.timers.io_write(0x40, AccessWidth::Byte, 1193 & 0xFF);
    pc.timers.io_write(0x40, AccessWidth::Byte, 1193 >> 8);
    let halted = GuestEventState {
        interrupts_enabled: true,
        interruptibility: 0,
        activity: ActivityState::Hlt,
        idt_vectoring: None,
    };
    for k in 1..=5u64 {
        let Decision::Sleep { until_ns: Some(t) } = pc.decide(&halted) else {
            panic!("nothing pending before tick {k}");
        };
        // The count loads one input clock after the write, and OUT falls
        // (IRQ0 rises) every 1193 clocks after that (8254 data sheet, mode 2).
        assert_eq!(t, first_ns_at_tick(1 + 1193 * k, PIT_HZ));
        clock.set(t);
        let Decision::Enter(entry) = pc.decide(&halted) else {
            panic!("tick {k} must wake the vCPU");
        };
        assert_eq!(entry.inject, Some(EventInjection::external(0x20)));
        pc.io_write(0x20, AccessWidth::Byte, 0x20);
    }
}
