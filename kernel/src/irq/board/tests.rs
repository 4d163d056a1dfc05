use super::*;
use crate::irq::inject::{interruptibility, ActivityState, EventInjection};
use crate::irq::ioapic::{IOREGSEL, IOWIN};
use crate::irq::lapic::{reg, ApicMode, DEFAULT_APIC_BASE};
use crate::irq::{InterruptLine, Line};
use crate::time::ManualClock;

/// A periodic timer pulsing one line every `period_ns`, as a PIT in
/// rate-generator mode does.
struct PulseTimer<'c, 'l> {
    clock: &'c ManualClock,
    line: Line<'l, 24>,
    next_ns: u64,
    period_ns: u64,
}

impl PolledTimer for PulseTimer<'_, '_> {
    fn poll(&mut self) {
        if self.clock.now_ns() >= self.next_ns {
            self.line.pulse();
            // Missed periods coalesce into one edge.
            while self.next_ns <= self.clock.now_ns() {
                self.next_ns += self.period_ns;
            }
        }
    }
    fn next_event_ns(&self) -> Option<u64> {
        Some(self.next_ns)
    }
}

fn guest(activity: ActivityState, interrupts_enabled: bool) -> GuestEventState {
    GuestEventState {
        interrupts_enabled,
        interruptibility: 0,
        activity,
        idt_vectoring: None,
    }
}

fn board<'c, T: PolledTimer>(
    lines: &'c LineSet<24>,
    clock: &'c ManualClock,
    timers: T,
) -> PcInterrupts<'c, &'c ManualClock, T, 24> {
    PcInterrupts::new(
        lines,
        clock,
        0,
        LapicConfig::new(0, 1_000_000_000),
        DEFAULT_APIC_BASE,
        timers,
    )
}

fn injected(decision: Decision) -> Option<EventInjection> {
    match decision {
        Decision::Enter(entry) => entry.inject,
        Decision::Sleep { .. } => None,
    }
}

fn lapic_write(
    pc: &mut PcInterrupts<'_, &ManualClock, impl PolledTimer, 24>,
    register: u32,
    value: u32,
) {
    pc.mmio_write(
        InterruptMmio::LocalApic,
        u64::from(register),
        AccessWidth::Dword,
        u64::from(value),
    );
}

fn ioapic_write(
    pc: &mut PcInterrupts<'_, &ManualClock, impl PolledTimer, 24>,
    index: u8,
    value: u32,
) {
    pc.mmio_write(
        InterruptMmio::IoApic,
        IOREGSEL,
        AccessWidth::Dword,
        u64::from(index),
    );
    pc.mmio_write(
        InterruptMmio::IoApic,
        IOWIN,
        AccessWidth::Dword,
        u64::from(value),
    );
}

#[test]
fn a_timer_on_irq0_wakes_a_halted_vcpu_through_the_pic_and_virtual_wire() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let timer = PulseTimer {
        clock: &clock,
        line: lines.line(0).unwrap(),
        next_ns: 1_000_000,
        period_ns: 1_000_000,
    };
    let mut pc = board(&lines, &clock, [timer]);
    // The guest: master PIC at 0x20, only IRQ0 unmasked; the LAPIC
    // software-enabled with LINT0 in ExtINT mode (virtual wire).
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, 0xFE),
    ] {
        assert!(pc.io_write(port, AccessWidth::Byte, value));
    }
    assert_eq!(pc.io_read(0x21, AccessWidth::Byte), Some(0xFE));
    lapic_write(&mut pc, reg::SVR, 0x1FF);
    lapic_write(&mut pc, reg::LVT_LINT0, 0x700);

    for k in 1..=3u64 {
        // Halted: sleep until the timer's deadline, which is the earliest.
        assert_eq!(pc.next_deadline_ns(), Some(k * 1_000_000));
        assert_eq!(
            pc.decide(&guest(ActivityState::Hlt, true)),
            Decision::Sleep {
                until_ns: Some(k * 1_000_000)
            }
        );
        clock.set(k * 1_000_000);
        let Decision::Enter(entry) = pc.decide(&guest(ActivityState::Hlt, true)) else {
            panic!("IRQ0 must wake the vCPU");
        };
        assert_eq!(entry.inject, Some(EventInjection::external(0x20)));
        assert!(entry.wake);
        // Non-specific EOI.
        assert!(pc.io_write(0x20, AccessWidth::Byte, 0x20));
    }
}

#[test]
fn without_virtual_wire_the_pic_does_not_reach_the_cpu() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pc = board(&lines, &clock, ());
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, 0x00),
    ] {
        pc.io_write(port, AccessWidth::Byte, value);
    }
    lines.line(1).unwrap().pulse();
    // LINT0 is masked after reset (SDM: LVT entries reset masked).
    assert_eq!(
        injected(pc.decide(&guest(ActivityState::Active, true))),
        None
    );
    // Globally disabling the APIC connects INTR straight to the core.
    assert_eq!(pc.msr_write(MSR_APIC_BASE, 0), Some(Ok(())));
    assert_eq!(
        injected(pc.decide(&guest(ActivityState::Active, true))),
        Some(EventInjection::external(0x21))
    );
}

#[test]
fn a_level_line_through_the_ioapic_is_delivered_again_after_eoi_while_raised() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pc = board(&lines, &clock, ());
    lapic_write(&mut pc, reg::SVR, 0x1FF);
    // GSI 10 -> pin 10 (PC default), vector 0x40, level, active-high,
    // physical destination 0.
    ioapic_write(&mut pc, 0x10 + 2 * 10, 0x0000_8040);
    ioapic_write(&mut pc, 0x11 + 2 * 10, 0);
    let line = lines.line(10).unwrap();
    line.raise();
    let running = guest(ActivityState::Active, true);
    for _ in 0..3 {
        assert_eq!(
            injected(pc.decide(&running)),
            Some(EventInjection::external(0x40))
        );
        // In service, Remote IRR set: nothing more until the EOI.
        assert_eq!(injected(pc.decide(&running)), None);
        assert_ne!(pc.ioapic.redirection(10) & (1 << 14), 0, "remote IRR");
        lapic_write(&mut pc, reg::EOI, 0);
    }
    line.lower();
    assert_eq!(injected(pc.decide(&running)), None);
    assert_eq!(pc.ioapic.redirection(10) & (1 << 14), 0);
    assert!(pc.lapic.irr().is_empty() && pc.lapic.isr().is_empty());
}

#[test]
fn an_interrupt_held_by_if_0_asks_for_the_window_and_is_delivered_after_sti() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pc = board(&lines, &clock, ());
    lapic_write(&mut pc, reg::SVR, 0x1FF);
    // Self-IPI through the ICR (shorthand self, fixed).
    lapic_write(&mut pc, reg::ICR_LOW, 0x0004_0051);
    let Decision::Enter(held) = pc.decide(&guest(ActivityState::Active, false)) else {
        panic!("a running vCPU is entered");
    };
    assert_eq!(held.inject, None);
    assert!(held.interrupt_window);
    // STI executed: the shadow still blocks for one instruction.
    let mut after_sti = guest(ActivityState::Active, true);
    after_sti.interruptibility = interruptibility::STI;
    assert_eq!(injected(pc.decide(&after_sti)), None);
    assert_eq!(
        injected(pc.decide(&guest(ActivityState::Active, true))),
        Some(EventInjection::external(0x51))
    );
}

#[test]
fn lapic_msrs_and_the_xapic_page_follow_the_mode() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pc = board(&lines, &clock, ());
    // BSP, enabled, at the default base (SDM: 0xFEE00900 after reset).
    assert_eq!(pc.msr_read(MSR_APIC_BASE), Some(Ok(0xFEE0_0900)));
    assert_eq!(pc.msr_read(0x10), None, "IA32_TSC is not the LAPIC's");
    assert_eq!(pc.msr_write(0x277, 0), None);
    // x2APIC registers outside x2APIC mode fault.
    assert_eq!(
        pc.msr_read(0x802),
        Some(Err(GeneralProtection {
            msr: 0x802,
            written: None
        }))
    );
    let id = pc.mmio_read(
        InterruptMmio::LocalApic,
        u64::from(reg::VERSION),
        AccessWidth::Dword,
    );
    assert_eq!(id & 0xFF, 0x14);
    // Into x2APIC: the page is gone, the MSRs answer.
    assert_eq!(pc.msr_write(MSR_APIC_BASE, 0xFEE0_0D00), Some(Ok(())));
    assert_eq!(pc.lapic.mode(), ApicMode::X2Apic);
    assert_eq!(
        pc.mmio_read(
            InterruptMmio::LocalApic,
            u64::from(reg::VERSION),
            AccessWidth::Dword
        ),
        0xFFFF_FFFF
    );
    assert_eq!(
        pc.msr_read(0x803).map(|r| r.map(|v| v & 0xFF)),
        Some(Ok(0x14))
    );
    // x2APIC back to xAPIC is an invalid transition: #GP.
    assert_eq!(
        pc.msr_write(MSR_APIC_BASE, 0xFEE0_0900),
        Some(Err(GeneralProtection {
            msr: MSR_APIC_BASE,
            written: Some(0xFEE0_0900)
        }))
    );
    // The x2APIC self-IPI register reaches the IRR.
    assert_eq!(pc.msr_write(0x80F, 0x1FF), Some(Ok(())));
    assert_eq!(pc.msr_write(0x83F, 0x61), Some(Ok(())));
    assert_eq!(
        injected(pc.decide(&guest(ActivityState::Active, true))),
        Some(EventInjection::external(0x61))
    );
}

#[test]
fn a_moved_xapic_page_no_longer_answers_at_the_layouts_address() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pc = board(&lines, &clock, ());
    assert_eq!(pc.msr_write(MSR_APIC_BASE, 0xFED0_0900), Some(Ok(())));
    pc.mmio_write(
        InterruptMmio::LocalApic,
        u64::from(reg::SVR),
        AccessWidth::Dword,
        0x1FF,
    );
    assert!(!pc.lapic.is_enabled());
    assert_eq!(
        pc.mmio_read(
            InterruptMmio::LocalApic,
            u64::from(reg::SVR),
            AccessWidth::Dword
        ),
        0xFFFF_FFFF
    );
}

#[test]
fn the_next_deadline_is_the_earliest_of_the_lapic_timer_and_the_boards_timers() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let slow = PulseTimer {
        clock: &clock,
        line: lines.line(0).unwrap(),
        next_ns: 5_000_000,
        period_ns: 5_000_000,
    };
    let fast = PulseTimer {
        clock: &clock,
        line: lines.line(8).unwrap(),
        next_ns: 3_000_000,
        period_ns: 3_000_000,
    };
    let mut pc = board(&lines, &clock, (slow, fast));
    assert_eq!(pc.next_deadline_ns(), Some(3_000_000));
    // One-shot LAPIC timer: 1000 ticks of a 1 GHz clock divided by 2.
    lapic_write(&mut pc, reg::SVR, 0x1FF);
    lapic_write(&mut pc, reg::LVT_TIMER, 0x30);
    lapic_write(&mut pc, reg::TIMER_DIVIDE, 0);
    lapic_write(&mut pc, reg::TIMER_INITIAL, 1000);
    assert_eq!(pc.next_deadline_ns(), Some(2_000));
    clock.set(2_000);
    assert_eq!(
        injected(pc.decide(&guest(ActivityState::Active, true))),
        Some(EventInjection::external(0x30))
    );
    assert_eq!(pc.next_deadline_ns(), Some(3_000_000));
    assert_eq!(pc.now_ns(), 2_000);
}

#[test]
fn an_msi_reaches_the_lapic_and_a_bad_address_is_refused() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pc = board(&lines, &clock, ());
    lapic_write(&mut pc, reg::SVR, 0x1FF);
    assert_eq!(pc.deliver_msi(0xFEE0_0000, 0x4055), Ok(()));
    assert_eq!(
        injected(pc.decide(&guest(ActivityState::Active, true))),
        Some(EventInjection::external(0x55))
    );
    assert!(pc.deliver_msi(0xFED0_0000, 0x55).is_err());
}

#[test]
fn ports_outside_the_pics_are_left_to_the_board() {
    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pc = board(&lines, &clock, ());
    for port in [0x1F, 0x22, 0x40, 0x9F, 0xA2, 0x4CF, 0x4D2] {
        assert_eq!(pc.io_read(port, AccessWidth::Byte), None, "{port:#x}");
        assert!(!pc.io_write(port, AccessWidth::Byte, 0), "{port:#x}");
    }
    for port in [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1] {
        assert!(pc.io_read(port, AccessWidth::Byte).is_some(), "{port:#x}");
    }
}
