use super::*;
use std::vec::Vec;

#[derive(Default)]
struct FakeSource {
    nmi: bool,
    /// Requested vectors; the last one is acknowledged first.
    vectors: Vec<u8>,
    vanish_on_ack: bool,
    acked: Vec<u8>,
}

impl InterruptSource for FakeSource {
    fn nmi_pending(&self) -> bool {
        self.nmi
    }
    fn take_nmi(&mut self) {
        self.nmi = false;
    }
    fn interrupt_pending(&self) -> bool {
        !self.vectors.is_empty()
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        if self.vanish_on_ack {
            self.vectors.clear();
            return None;
        }
        let v = self.vectors.pop()?;
        self.acked.push(v);
        Some(v)
    }
}

fn running(interrupts_enabled: bool, interruptibility: u32) -> GuestEventState {
    GuestEventState {
        interrupts_enabled,
        interruptibility,
        activity: ActivityState::Active,
        idt_vectoring: None,
    }
}

fn enter(d: Decision) -> EntryDecision {
    match d {
        Decision::Enter(e) => e,
        other => panic!("expected entry, got {other:?}"),
    }
}

#[test]
fn interruption_info_encoding() {
    // SDM Table "Format of the VM-Entry Interruption-Information Field".
    assert_eq!(
        EventInjection::external(0x30).interruption_info(),
        0x8000_0030
    );
    assert_eq!(EventInjection::nmi().interruption_info(), 0x8000_0202);
    let pf = EventInjection::from_idt_vectoring(0x8000_0B0E, 0x2, 7).unwrap();
    assert_eq!(pf.kind, EventKind::HardwareException);
    assert_eq!(pf.error_code, Some(2));
    assert_eq!(pf.instruction_len, 0, "only software events keep a length");
    assert_eq!(pf.interruption_info(), 0x8000_0B0E);
    let int80 = EventInjection::from_idt_vectoring(0x8000_0480, 0, 2).unwrap();
    assert_eq!(int80.kind, EventKind::SoftwareInterrupt);
    assert_eq!(int80.instruction_len, 2);
    assert_eq!(EventInjection::from_idt_vectoring(0x0000_0030, 0, 0), None);
    // Bit 12 (undefined in IDT-vectoring info) is not copied.
    assert_eq!(
        EventInjection::from_idt_vectoring(0x8000_1030, 0, 0)
            .unwrap()
            .interruption_info(),
        0x8000_0030
    );
    assert_eq!(ActivityState::from_raw(1), ActivityState::Hlt);
    assert_eq!(ActivityState::from_raw(3), ActivityState::WaitForSipi);
}

#[test]
fn interrupt_injected_when_the_guest_can_take_it() {
    let mut src = FakeSource {
        vectors: std::vec![0x41],
        ..Default::default()
    };
    let e = enter(decide(&running(true, 0), &mut src, None));
    assert_eq!(e.inject, Some(EventInjection::external(0x41)));
    assert!(!e.interrupt_window && !e.nmi_window && !e.wake);
    assert_eq!(src.acked, [0x41]);

    // Two requests: the first goes in, the second waits for a window.
    let mut src = FakeSource {
        vectors: std::vec![0x41, 0x61],
        ..Default::default()
    };
    let e = enter(decide(&running(true, 0), &mut src, None));
    assert_eq!(e.inject, Some(EventInjection::external(0x61)));
    assert!(e.interrupt_window);
    assert_eq!(src.acked, [0x61]);
}

#[test]
fn interrupt_window_when_if_clear_or_shadowed() {
    for (rflags_if, blocking) in [
        (false, 0),
        (true, interruptibility::STI),
        (true, interruptibility::MOV_SS),
    ] {
        let mut src = FakeSource {
            vectors: std::vec![0x41],
            ..Default::default()
        };
        let e = enter(decide(&running(rflags_if, blocking), &mut src, None));
        assert_eq!(e.inject, None);
        assert!(e.interrupt_window);
        assert!(src.acked.is_empty(), "not acknowledged");
    }
    // Nothing pending: no window.
    let e = enter(decide(&running(false, 0), &mut FakeSource::default(), None));
    assert_eq!(e, EntryDecision::default());
}

#[test]
fn nmi_before_interrupts_and_nmi_window_when_blocked() {
    let mut src = FakeSource {
        nmi: true,
        vectors: std::vec![0x41],
        ..Default::default()
    };
    let e = enter(decide(&running(true, 0), &mut src, None));
    assert_eq!(e.inject, Some(EventInjection::nmi()));
    assert!(
        e.interrupt_window,
        "the interrupt waits for the next window"
    );
    assert!(!src.nmi);
    assert!(src.acked.is_empty());

    // Blocking by NMI: window exiting, and the interrupt goes in meanwhile.
    let mut src = FakeSource {
        nmi: true,
        vectors: std::vec![0x41],
        ..Default::default()
    };
    let e = enter(decide(
        &running(true, interruptibility::NMI),
        &mut src,
        None,
    ));
    assert!(e.nmi_window);
    assert_eq!(e.inject, Some(EventInjection::external(0x41)));
    assert!(src.nmi, "still pending");

    // MOV-SS blocking blocks NMI injection too.
    let mut src = FakeSource {
        nmi: true,
        ..Default::default()
    };
    let e = enter(decide(
        &running(true, interruptibility::MOV_SS),
        &mut src,
        None,
    ));
    assert!(e.nmi_window && e.inject.is_none());
}

#[test]
fn interrupted_event_is_reinjected_first() {
    let mut src = FakeSource {
        nmi: true,
        vectors: std::vec![0x41],
        ..Default::default()
    };
    let pf = EventInjection::from_idt_vectoring(0x8000_0B0E, 0x4, 0).unwrap();
    let guest = GuestEventState {
        idt_vectoring: Some(pf),
        ..running(true, 0)
    };
    let e = enter(decide(&guest, &mut src, None));
    assert_eq!(e.inject, Some(pf));
    assert!(e.nmi_window && e.interrupt_window);
    assert!(src.nmi && src.acked.is_empty(), "nothing consumed");
}

#[test]
fn halted_vcpu_sleeps_until_deliverable_or_deadline() {
    let halted = |rflags_if| GuestEventState {
        activity: ActivityState::Hlt,
        ..running(rflags_if, 0)
    };
    assert_eq!(
        decide(&halted(true), &mut FakeSource::default(), Some(5_000)),
        Decision::Sleep {
            until_ns: Some(5_000)
        }
    );
    // IF=0: an interrupt does not wake HLT.
    let mut src = FakeSource {
        vectors: std::vec![0x41],
        ..Default::default()
    };
    assert_eq!(
        decide(&halted(false), &mut src, None),
        Decision::Sleep { until_ns: None }
    );
    // IF=1: it does, and the activity state goes back to active.
    let e = enter(decide(&halted(true), &mut src, None));
    assert_eq!(e.inject, Some(EventInjection::external(0x41)));
    assert!(e.wake);
    // `sti; hlt`: the STI shadow reported with the HLT state does not block.
    let mut src = FakeSource {
        vectors: std::vec![0x42],
        ..Default::default()
    };
    let guest = GuestEventState {
        interruptibility: interruptibility::STI,
        ..halted(true)
    };
    let e = enter(decide(&guest, &mut src, None));
    assert_eq!(e.inject, Some(EventInjection::external(0x42)));
    // An NMI wakes even with IF=0.
    let mut src = FakeSource {
        nmi: true,
        ..Default::default()
    };
    let e = enter(decide(&halted(false), &mut src, None));
    assert_eq!(e.inject, Some(EventInjection::nmi()));
    assert!(e.wake);
    // Shutdown and wait-for-SIPI never take interrupts here.
    let mut src = FakeSource {
        vectors: std::vec![0x41],
        ..Default::default()
    };
    for activity in [ActivityState::Shutdown, ActivityState::WaitForSipi] {
        let guest = GuestEventState {
            activity,
            ..running(true, 0)
        };
        assert_eq!(
            decide(&guest, &mut src, Some(9)),
            Decision::Sleep { until_ns: Some(9) }
        );
    }
}

#[test]
fn vanished_request_injects_nothing() {
    let mut src = FakeSource {
        vectors: std::vec![0x41],
        vanish_on_ack: true,
        ..Default::default()
    };
    let e = enter(decide(&running(true, 0), &mut src, None));
    assert_eq!(e, EntryDecision::default());
}

#[test]
fn end_to_end_with_pic_ioapic_and_lapic() {
    use crate::device::{AccessWidth, Mmio, PortIo};
    use crate::irq::ioapic::{IoApic, IoApicVersion, IOREGSEL, IOWIN};
    use crate::irq::lapic::{reg, LapicConfig, LocalApic};
    use crate::irq::pic::DualPic;
    use crate::irq::router::{Chips, IrqRouter};
    use crate::irq::{InterruptLine, LineSet};
    use crate::time::ManualClock;

    let clock = ManualClock::new(0);
    let lines = LineSet::<24>::new();
    let mut pic = DualPic::new();
    for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
        pic.io_write(port, AccessWidth::Byte, value);
    }
    let mut ioapic = IoApic::new(0, IoApicVersion::V11);
    ioapic.mmio_write(IOREGSEL, AccessWidth::Dword, 0x10 + 2 * 4);
    ioapic.mmio_write(IOWIN, AccessWidth::Dword, 0x34);
    let mut lapic = LocalApic::new(LapicConfig::new(0, 1_000_000_000), &clock);
    lapic.mmio_write(u64::from(reg::SVR), AccessWidth::Dword, 0x1FF);
    let mut router = IrqRouter::<24>::pc_default();
    // The serial port on GSI 4 pulses its line.
    let com1 = lines.line(4).unwrap();
    com1.pulse();
    let mut chips = Chips {
        pic: Some(&mut pic),
        ioapic: Some(&mut ioapic),
        lapic: Some(&mut lapic),
    };
    router.sync(&lines, &mut chips);
    let next = chips.next_timer_deadline_ns();
    let e = enter(decide(&running(true, 0), &mut chips, next));
    // LINT0 is masked: the IOAPIC's vector is injected, not the PIC's.
    assert_eq!(e.inject, Some(EventInjection::external(0x34)));
    assert!(lapic.isr().contains(0x34));
}
