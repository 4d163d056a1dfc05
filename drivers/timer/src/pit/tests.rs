use super::*;
use core::cell::Cell;
use ponte_kernel::time::ManualClock;

#[derive(Default)]
struct RecordingLine {
    pulses: Cell<u32>,
}

impl InterruptLine for &RecordingLine {
    fn set_level(&self, _asserted: bool) {
        panic!("the PIT pulses its line");
    }
    fn pulse(&self) {
        self.pulses.set(self.pulses.get() + 1);
    }
}

type TestPit<'a> = Pit<&'a ManualClock, &'a RecordingLine>;

fn out(pit: &mut TestPit<'_>, port: u16, value: u8) {
    pit.io_write(port, AccessWidth::Byte, u32::from(value));
}

fn inb(pit: &mut TestPit<'_>, port: u16) -> u8 {
    pit.io_read(port, AccessWidth::Byte) as u8
}

/// Sets the clock to the first nanosecond of PIT tick `tick`.
fn at_tick(clock: &ManualClock, tick: u64) {
    clock.set(first_ns_at_tick(tick, PIT_HZ));
}

/// Latches channel `ch` and reads the 16-bit count (LSB-then-MSB access).
fn latched(pit: &mut TestPit<'_>, ch: u8) -> u16 {
    out(pit, COMMAND_PORT, ch << 6);
    let lo = inb(pit, 0x40 + u16::from(ch));
    let hi = inb(pit, 0x40 + u16::from(ch));
    u16::from(lo) | (u16::from(hi) << 8)
}

#[test]
fn mode2_rate_generator_counts_and_pulses_low_for_one_clock() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0x34); // ch0, LSB then MSB, mode 2, binary
    out(&mut pit, CHANNEL0_PORT, 0xE8);
    out(&mut pit, CHANNEL0_PORT, 0x03); // N = 1000, written at tick 0
    assert!(pit.out(0), "mode 2 OUT starts high");
    // Loaded on the next clock (tick 1): N, N-1, ... 2, 1 (OUT low), N.
    at_tick(&clock, 1);
    assert_eq!(latched(&mut pit, 0), 1000);
    at_tick(&clock, 501);
    assert_eq!(latched(&mut pit, 0), 500);
    at_tick(&clock, 999);
    assert_eq!(latched(&mut pit, 0), 2);
    assert!(pit.out(0));
    at_tick(&clock, 1000);
    assert_eq!(latched(&mut pit, 0), 1);
    assert!(!pit.out(0), "low while the count is 1");
    at_tick(&clock, 1001);
    assert_eq!(latched(&mut pit, 0), 1000, "reloaded");
    assert!(pit.out(0));
    // The rising edge at tick 1001 is the interrupt, delivered by the poll
    // every port write starts with (here the latch command), once.
    assert_eq!(line.pulses.get(), 1);
    pit.poll();
    assert_eq!(line.pulses.get(), 1);
    assert_eq!(pit.next_event_ns(), Some(first_ns_at_tick(2001, PIT_HZ)));
    // Three periods without a poll: one pulse, two coalesced.
    at_tick(&clock, 4001);
    pit.poll();
    assert_eq!(line.pulses.get(), 2);
    assert_eq!(pit.coalesced_edges(), 2);
    at_tick(&clock, 5000);
    pit.poll();
    assert_eq!(line.pulses.get(), 2, "no edge before tick 5001");
}

#[test]
fn mode3_square_wave_even_and_odd_counts() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0x36); // ch0, LSB/MSB, mode 3
    out(&mut pit, CHANNEL0_PORT, 10);
    out(&mut pit, CHANNEL0_PORT, 0);
    // Even N: high N/2 clocks, low N/2 clocks, counting down by two.
    let expect = [
        (true, 10),
        (true, 8),
        (true, 6),
        (true, 4),
        (true, 2),
        (false, 10),
        (false, 8),
        (false, 6),
        (false, 4),
        (false, 2),
        (true, 10),
    ];
    for (d, (level, count)) in expect.iter().enumerate() {
        at_tick(&clock, 1 + d as u64);
        assert_eq!(pit.out(0), *level, "OUT at d={d}");
        assert_eq!(latched(&mut pit, 0), *count, "count at d={d}");
    }
    // Odd N = 5: high (N+1)/2 = 3 clocks (5, 4, 2), low (N-1)/2 = 2 clocks
    // (5, 2): the data sheet's "decrement by 1, then by 2; after the reload,
    // by 3, then by 2".
    out(&mut pit, COMMAND_PORT, 0x36);
    let start = 100;
    at_tick(&clock, start - 1);
    out(&mut pit, CHANNEL0_PORT, 5);
    out(&mut pit, CHANNEL0_PORT, 0);
    let expect = [
        (true, 5),
        (true, 4),
        (true, 2),
        (false, 5),
        (false, 2),
        (true, 5),
    ];
    for (d, (level, count)) in expect.iter().enumerate() {
        at_tick(&clock, start + d as u64);
        assert_eq!(pit.out(0), *level, "odd OUT at d={d}");
        assert_eq!(latched(&mut pit, 0), *count, "odd count at d={d}");
    }
}

#[test]
fn mode0_interrupt_on_terminal_count() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0x30); // ch0, LSB/MSB, mode 0
    assert!(!pit.out(0), "OUT goes low on the control word");
    out(&mut pit, CHANNEL0_PORT, 100);
    out(&mut pit, CHANNEL0_PORT, 0);
    // OUT goes high N + 1 clocks after the count is written.
    assert_eq!(pit.next_event_ns(), Some(first_ns_at_tick(101, PIT_HZ)));
    at_tick(&clock, 100);
    assert!(!pit.out(0));
    assert_eq!(latched(&mut pit, 0), 1);
    at_tick(&clock, 101);
    assert!(pit.out(0));
    assert_eq!(latched(&mut pit, 0), 0);
    // The counter keeps counting down through 0xFFFF, OUT stays high.
    at_tick(&clock, 103);
    assert_eq!(latched(&mut pit, 0), 0xFFFE);
    pit.poll();
    assert_eq!(line.pulses.get(), 1);
    assert_eq!(pit.next_event_ns(), None, "one shot");
    at_tick(&clock, 70_000);
    pit.poll();
    assert_eq!(line.pulses.get(), 1);
}

#[test]
fn counter_latch_holds_the_value_until_read() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0x34);
    out(&mut pit, CHANNEL0_PORT, 0);
    out(&mut pit, CHANNEL0_PORT, 0); // N = 65536
    at_tick(&clock, 11);
    out(&mut pit, COMMAND_PORT, 0x00);
    at_tick(&clock, 500);
    // A second latch before the first is read is ignored.
    out(&mut pit, COMMAND_PORT, 0x00);
    let lo = inb(&mut pit, CHANNEL0_PORT);
    let hi = inb(&mut pit, CHANNEL0_PORT);
    assert_eq!(u16::from(lo) | (u16::from(hi) << 8), (65536 - 10) as u16);
    // Unlatched reads follow the counter, LSB then MSB.
    let lo = inb(&mut pit, CHANNEL0_PORT);
    let hi = inb(&mut pit, CHANNEL0_PORT);
    assert_eq!(u16::from(lo) | (u16::from(hi) << 8), (65536 - 499) as u16);
}

#[test]
fn read_back_latches_status_then_count() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0xB4); // ch2, LSB/MSB, mode 2
                                       // Read-back status of channel 2 (bit 5 set: no count latch).
    out(&mut pit, COMMAND_PORT, 0xE8);
    // OUT high, null count (no count yet), RW=11, mode 010, binary.
    assert_eq!(inb(&mut pit, CHANNEL2_PORT), 0b1111_0100);
    out(&mut pit, PORT_B, 0x01); // gate high
    out(&mut pit, CHANNEL2_PORT, 0x34);
    out(&mut pit, CHANNEL2_PORT, 0x12);
    at_tick(&clock, 5);
    // Read-back count and status of channels 0 and 2 (0xC0 | 0x0A).
    out(&mut pit, COMMAND_PORT, 0xCA);
    assert_eq!(
        inb(&mut pit, CHANNEL2_PORT),
        0b1011_0100,
        "count loaded: null count clear"
    );
    let lo = inb(&mut pit, CHANNEL2_PORT);
    let hi = inb(&mut pit, CHANNEL2_PORT);
    assert_eq!(u16::from(lo) | (u16::from(hi) << 8), 0x1234 - 4);
    // Channel 0 was never programmed: mode 0, OUT low.
    assert_eq!(inb(&mut pit, CHANNEL0_PORT) & 0x8E, 0);
}

#[test]
fn port_61_gates_channel_2_and_shows_its_output() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    // Linux's PIT calibration: gate on, speaker off, ch2 mode 0.
    let b = inb(&mut pit, PORT_B);
    out(&mut pit, PORT_B, (b & !0x02) | 0x01);
    out(&mut pit, COMMAND_PORT, 0xB0);
    out(&mut pit, CHANNEL2_PORT, 0xFF);
    out(&mut pit, CHANNEL2_PORT, 0xFF);
    assert_eq!(inb(&mut pit, PORT_B) & 0x23, 0x01, "OUT2 low, gate on");
    at_tick(&clock, 0xFFFF);
    assert_eq!(inb(&mut pit, PORT_B) & 0x20, 0);
    at_tick(&clock, 0x10000);
    assert_eq!(inb(&mut pit, PORT_B) & 0x20, 0x20, "terminal count");
    assert_eq!(line.pulses.get(), 0, "channel 2 raises no interrupt");

    // Gate low suspends mode 0 counting.
    out(&mut pit, COMMAND_PORT, 0xB0);
    out(&mut pit, CHANNEL2_PORT, 100);
    out(&mut pit, CHANNEL2_PORT, 0);
    let t0 = 0x10000;
    at_tick(&clock, t0 + 11);
    out(&mut pit, PORT_B, 0x00);
    let frozen = latched(&mut pit, 2);
    assert_eq!(frozen, 90);
    at_tick(&clock, t0 + 500);
    assert_eq!(latched(&mut pit, 2), 90);
    out(&mut pit, PORT_B, 0x01);
    at_tick(&clock, t0 + 510);
    assert_eq!(latched(&mut pit, 2), 80);
    // Bits 0-3 read back, the refresh toggle flips every 15.085 us.
    clock.set(first_ns_at_tick(t0 + 1000, PIT_HZ) / 15_085 * 15_085);
    let r0 = inb(&mut pit, PORT_B) & 0x10;
    clock.advance(15_085);
    assert_ne!(inb(&mut pit, PORT_B) & 0x10, r0);
}

#[test]
fn mode1_and_mode5_are_triggered_by_the_gate() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0xB2); // ch2, mode 1
    out(&mut pit, CHANNEL2_PORT, 10);
    out(&mut pit, CHANNEL2_PORT, 0);
    at_tick(&clock, 50);
    assert!(pit.out(2), "waits for a trigger");
    out(&mut pit, PORT_B, 0x01);
    at_tick(&clock, 51);
    assert!(!pit.out(2), "one-shot pulse starts");
    at_tick(&clock, 60);
    assert!(!pit.out(2));
    at_tick(&clock, 61);
    assert!(pit.out(2));
    // Retriggerable: a new rising edge restarts the pulse.
    out(&mut pit, PORT_B, 0x00);
    out(&mut pit, PORT_B, 0x01);
    at_tick(&clock, 62);
    assert!(!pit.out(2));

    // Mode 5: OUT low for one clock when the count expires.
    out(&mut pit, PORT_B, 0x00);
    out(&mut pit, COMMAND_PORT, 0xBA);
    out(&mut pit, CHANNEL2_PORT, 4);
    out(&mut pit, CHANNEL2_PORT, 0);
    out(&mut pit, PORT_B, 0x01); // trigger at tick 62: loaded at 63
    let levels: std::vec::Vec<bool> = (63..70)
        .map(|t| {
            at_tick(&clock, t);
            pit.out(2)
        })
        .collect();
    assert_eq!(levels, [true, true, true, true, false, true, true]);
}

#[test]
fn mode4_software_strobe_interrupts_once() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0x38); // ch0, mode 4
    out(&mut pit, CHANNEL0_PORT, 3);
    out(&mut pit, CHANNEL0_PORT, 0);
    at_tick(&clock, 4);
    assert!(!pit.out(0), "strobe when the count reaches 0");
    at_tick(&clock, 5);
    assert!(pit.out(0));
    pit.poll();
    assert_eq!(line.pulses.get(), 1);
}

#[test]
fn bcd_and_single_byte_access_modes() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0x35); // ch0, LSB/MSB, mode 2, BCD
    out(&mut pit, CHANNEL0_PORT, 0x00);
    out(&mut pit, CHANNEL0_PORT, 0x01); // 0100 BCD = 100
    at_tick(&clock, 2);
    assert_eq!(latched(&mut pit, 0), 0x0099);
    at_tick(&clock, 101);
    assert_eq!(latched(&mut pit, 0), 0x0100, "period of 100");
    // BCD 0 means 10000.
    out(&mut pit, COMMAND_PORT, 0x31);
    out(&mut pit, CHANNEL0_PORT, 0);
    out(&mut pit, CHANNEL0_PORT, 0);
    at_tick(&clock, 103);
    assert_eq!(latched(&mut pit, 0), 0x9999);

    // LSB only: the MSB is zero.
    out(&mut pit, COMMAND_PORT, 0x14);
    out(&mut pit, CHANNEL0_PORT, 0x20);
    at_tick(&clock, 104);
    assert_eq!(inb(&mut pit, CHANNEL0_PORT), 0x20);
    // MSB only: the LSB is zero; reads return the MSB.
    out(&mut pit, COMMAND_PORT, 0x24);
    out(&mut pit, CHANNEL0_PORT, 0x01);
    at_tick(&clock, 105);
    assert_eq!(inb(&mut pit, CHANNEL0_PORT), 0x01);
    at_tick(&clock, 105 + 16);
    assert_eq!(inb(&mut pit, CHANNEL0_PORT), 0x00, "256 - 16 = 0x00F0");
    // Unused ports.
    assert_eq!(inb(&mut pit, COMMAND_PORT), 0xFF);
    assert!(!pit.out(5));
}

#[test]
fn mode2_new_count_loads_at_the_end_of_the_current_cycle() {
    let clock = ManualClock::new(0);
    let line = RecordingLine::default();
    let mut pit = Pit::new(&clock, &line);
    out(&mut pit, COMMAND_PORT, 0x34);
    out(&mut pit, CHANNEL0_PORT, 100);
    out(&mut pit, CHANNEL0_PORT, 0); // N = 100, loaded at tick 1
    at_tick(&clock, 51);
    out(&mut pit, CHANNEL0_PORT, 50);
    out(&mut pit, CHANNEL0_PORT, 0);
    // The current cycle is not disturbed.
    at_tick(&clock, 60);
    assert_eq!(latched(&mut pit, 0), 41);
    at_tick(&clock, 100);
    assert_eq!(latched(&mut pit, 0), 1);
    assert!(!pit.out(0));
    assert_eq!(pit.next_event_ns(), Some(first_ns_at_tick(101, PIT_HZ)));
    // Tick 101: the new count is loaded; cycles of 50 from there.
    at_tick(&clock, 101);
    assert!(pit.out(0));
    assert_eq!(latched(&mut pit, 0), 50);
    at_tick(&clock, 150);
    assert_eq!(latched(&mut pit, 0), 1);
    at_tick(&clock, 151);
    assert_eq!(latched(&mut pit, 0), 50);
    // Edges at ticks 101 and 151, each seen by a poll (port writes poll).
    pit.poll();
    assert_eq!(line.pulses.get(), 2);
    assert_eq!(pit.next_event_ns(), Some(first_ns_at_tick(201, PIT_HZ)));

    // A reload crossed by a single late poll: old edge at 251 (N = 50),
    // new cycles of 20 from there: 271, 291.
    at_tick(&clock, 231);
    out(&mut pit, CHANNEL0_PORT, 20);
    out(&mut pit, CHANNEL0_PORT, 0);
    let before = line.pulses.get();
    at_tick(&clock, 300);
    pit.poll();
    assert_eq!(line.pulses.get(), before + 1);
    assert_eq!(pit.coalesced_edges(), 2);
    assert_eq!(latched(&mut pit, 0), 20 - (300 - 291));
}
