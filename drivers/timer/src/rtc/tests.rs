use super::*;
use core::cell::Cell;
use ponte_kernel::time::ManualClock;

#[derive(Default)]
struct LevelLine {
    level: Cell<bool>,
    rises: Cell<u32>,
}

impl InterruptLine for &LevelLine {
    fn set_level(&self, asserted: bool) {
        if asserted && !self.level.get() {
            self.rises.set(self.rises.get() + 1);
        }
        self.level.set(asserted);
    }
    fn pulse(&self) {
        panic!("the RTC drives a level");
    }
}

/// 2023-11-14 22:13:20 UTC, a Tuesday.
const T0: i64 = 1_700_000_000;
const SEC: u64 = NS_PER_SEC;

type TestRtc<'a> = Rtc<&'a ManualClock, &'a LevelLine>;

fn rd(rtc: &mut TestRtc<'_>, index: u8) -> u8 {
    rtc.io_write(INDEX_PORT, AccessWidth::Byte, u32::from(index));
    rtc.io_read(DATA_PORT, AccessWidth::Byte) as u8
}

fn wr(rtc: &mut TestRtc<'_>, index: u8, value: u8) {
    rtc.io_write(INDEX_PORT, AccessWidth::Byte, u32::from(index));
    rtc.io_write(DATA_PORT, AccessWidth::Byte, u32::from(value));
}

#[test]
fn calendar_conversion() {
    let dt = DateTime::from_unix(T0);
    assert_eq!(
        dt,
        DateTime {
            year: 2023,
            month: 11,
            day: 14,
            hour: 22,
            minute: 13,
            second: 20
        }
    );
    assert_eq!(dt.to_unix(), T0);
    assert_eq!(dt.day_of_week(), 3, "Tuesday, Sunday = 1");
    assert_eq!(
        DateTime::from_unix(0).day_of_week(),
        5,
        "1970-01-01 Thursday"
    );
    // Leap day 2000 and the day after.
    let leap = DateTime {
        year: 2000,
        month: 2,
        day: 29,
        hour: 0,
        minute: 0,
        second: 0,
    };
    assert_eq!(leap.to_unix(), 951_782_400);
    assert_eq!(DateTime::from_unix(951_782_400 + 86_400).month, 3);
}

#[test]
fn calendar_conversion_before_1970_and_across_eras() {
    // Seconds of the proleptic Gregorian calendar, as other calendar
    // libraries count them.
    let cases = [
        ((1, 1, 1, 0, 0, 0), -62_135_596_800),
        ((1600, 2, 29, 12, 0, 1), -11_670_955_199),
        ((1900, 3, 1, 0, 0, 0), -2_203_891_200),
        ((1969, 12, 31, 23, 59, 59), -1),
        ((9999, 12, 31, 23, 59, 59), 253_402_300_799),
    ];
    for ((year, month, day, hour, minute, second), secs) in cases {
        let dt = DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        };
        assert_eq!(DateTime::from_unix(secs), dt, "{secs}");
        assert_eq!(dt.to_unix(), secs, "{dt:?}");
    }
}

#[test]
fn time_registers_in_bcd_24_hour() {
    let clock = ManualClock::new(0);
    let line = LevelLine::default();
    let mut rtc = Rtc::new(&clock, &line, T0);
    assert_eq!(rd(&mut rtc, reg::SECONDS), 0x20);
    assert_eq!(rd(&mut rtc, reg::MINUTES), 0x13);
    assert_eq!(rd(&mut rtc, reg::HOURS), 0x22);
    assert_eq!(rd(&mut rtc, reg::DAY_OF_WEEK), 0x03);
    assert_eq!(rd(&mut rtc, reg::DAY_OF_MONTH), 0x14);
    assert_eq!(rd(&mut rtc, reg::MONTH), 0x11);
    assert_eq!(rd(&mut rtc, reg::YEAR), 0x23);
    assert_eq!(rd(&mut rtc, reg::CENTURY), 0x20);
    assert_eq!(rd(&mut rtc, reg::A), 0x26);
    assert_eq!(rd(&mut rtc, reg::B), 0x02);
    assert_eq!(rd(&mut rtc, reg::D), 0x80, "valid RAM and time");
    // Time runs with the clock.
    clock.advance(61 * SEC);
    assert_eq!(rd(&mut rtc, reg::SECONDS), 0x21);
    assert_eq!(rd(&mut rtc, reg::MINUTES), 0x14);
}

#[test]
fn binary_and_12_hour_formats() {
    let clock = ManualClock::new(0);
    let line = LevelLine::default();
    let mut rtc = Rtc::new(&clock, &line, T0);
    // 12-hour BCD: 22h is 10 PM: 0x10 with bit 7.
    wr(&mut rtc, reg::B, 0x00);
    assert_eq!(rd(&mut rtc, reg::HOURS), 0x90);
    // Binary, 12-hour: 10 | PM.
    wr(&mut rtc, reg::B, B_BINARY);
    assert_eq!(rd(&mut rtc, reg::HOURS), 0x8A);
    assert_eq!(rd(&mut rtc, reg::SECONDS), 20);
    assert_eq!(rd(&mut rtc, reg::YEAR), 23);
    // Midnight and noon in 12-hour mode are 12.
    wr(&mut rtc, reg::HOURS, 12); // 12 AM
    wr(&mut rtc, reg::B, B_BINARY | B_24H);
    assert_eq!(rd(&mut rtc, reg::HOURS), 0);
    wr(&mut rtc, reg::B, B_BINARY);
    wr(&mut rtc, reg::HOURS, 0x80 | 12); // 12 PM
    wr(&mut rtc, reg::B, B_BINARY | B_24H);
    assert_eq!(rd(&mut rtc, reg::HOURS), 12);
}

#[test]
fn set_bit_freezes_the_time_for_writing() {
    let clock = ManualClock::new(0);
    let line = LevelLine::default();
    let mut rtc = Rtc::new(&clock, &line, T0);
    wr(&mut rtc, reg::B, B_SET | B_24H | B_UIE);
    assert_eq!(rd(&mut rtc, reg::B) & B_UIE, 0, "SET clears UIE");
    for (r, v) in [
        (reg::SECONDS, 0x59),
        (reg::MINUTES, 0x59),
        (reg::HOURS, 0x23),
        (reg::DAY_OF_MONTH, 0x29),
        (reg::MONTH, 0x02),
        (reg::YEAR, 0x24),
    ] {
        wr(&mut rtc, r, v);
    }
    clock.advance(5 * SEC);
    assert_eq!(rd(&mut rtc, reg::SECONDS), 0x59, "frozen");
    assert_eq!(rd(&mut rtc, reg::A) & A_UIP, 0, "no update while SET");
    wr(&mut rtc, reg::B, B_24H);
    clock.advance(SEC);
    // 2024 is a leap year: Feb 29 23:59:59 + 1 s = Fri Mar 1 00:00:00.
    assert_eq!(rd(&mut rtc, reg::SECONDS), 0x00);
    assert_eq!(rd(&mut rtc, reg::HOURS), 0x00);
    assert_eq!(rd(&mut rtc, reg::DAY_OF_MONTH), 0x01);
    assert_eq!(rd(&mut rtc, reg::MONTH), 0x03);
    assert_eq!(rd(&mut rtc, reg::DAY_OF_WEEK), 6);
    // Century register: 20xx -> 19xx.
    wr(&mut rtc, reg::CENTURY, 0x19);
    assert_eq!(rtc.date_time().year, 1924);
}

#[test]
fn update_in_progress_before_each_update() {
    let clock = ManualClock::new(0);
    let line = LevelLine::default();
    let mut rtc = Rtc::new(&clock, &line, T0);
    clock.set(SEC - 244_001);
    assert_eq!(rd(&mut rtc, reg::A) & A_UIP, 0);
    clock.set(SEC - 244_000);
    assert_eq!(rd(&mut rtc, reg::A) & A_UIP, A_UIP);
    assert_eq!(rd(&mut rtc, reg::SECONDS), 0x20);
    clock.set(SEC);
    assert_eq!(rd(&mut rtc, reg::A) & A_UIP, 0);
    assert_eq!(rd(&mut rtc, reg::SECONDS), 0x21);
    // UIP is read-only.
    wr(&mut rtc, reg::A, 0xA6);
    assert_eq!(rd(&mut rtc, reg::A), 0x26);
}

#[test]
fn periodic_interrupt_at_the_register_a_rate() {
    let clock = ManualClock::new(0);
    let line = LevelLine::default();
    let mut rtc = Rtc::new(&clock, &line, T0);
    assert_eq!(rtc.next_event_ns(), None, "nothing enabled");
    wr(&mut rtc, reg::B, B_24H | B_PIE);
    // RS = 6: 1024 Hz, a period of 976562.5 ns.
    assert_eq!(rtc.next_event_ns(), Some(976_563));
    clock.set(976_562);
    rtc.poll();
    assert!(!line.level.get());
    clock.set(976_563);
    rtc.poll();
    assert!(line.level.get());
    assert_eq!(rtc.next_event_ns(), None, "IRQF already set");
    assert_eq!(rd(&mut rtc, reg::C), C_IRQF | C_PF);
    assert!(!line.level.get(), "reading C lowers the line");
    assert_eq!(rd(&mut rtc, reg::C), 0);
    // RS = 15: 2 Hz.
    wr(&mut rtc, reg::A, 0x2F);
    assert_eq!(rtc.next_event_ns(), Some(SEC / 2));
    // RS = 0: off. The flag is set without PIE, but IRQF is not.
    wr(&mut rtc, reg::A, 0x20);
    assert_eq!(rtc.next_event_ns(), None);
    wr(&mut rtc, reg::A, 0x26);
    wr(&mut rtc, reg::B, B_24H);
    clock.advance(SEC / 100);
    assert_eq!(rd(&mut rtc, reg::C) & (C_IRQF | C_PF), C_PF);
}

#[test]
fn update_ended_and_alarm_interrupts() {
    let clock = ManualClock::new(0);
    let line = LevelLine::default();
    let mut rtc = Rtc::new(&clock, &line, T0);
    // No periodic rate, so PF stays clear.
    wr(&mut rtc, reg::A, 0x20);
    wr(&mut rtc, reg::B, B_24H | B_UIE);
    assert_eq!(rtc.next_event_ns(), Some(SEC));
    clock.set(SEC);
    rtc.poll();
    assert_eq!(line.rises.get(), 1);
    assert_eq!(rd(&mut rtc, reg::C), C_IRQF | C_UF);

    // Alarm at 22:13:23 (two updates from 22:13:21).
    wr(&mut rtc, reg::HOURS_ALARM, 0x22);
    wr(&mut rtc, reg::MINUTES_ALARM, 0x13);
    wr(&mut rtc, reg::SECONDS_ALARM, 0x23);
    wr(&mut rtc, reg::B, B_24H | B_AIE);
    clock.set(2 * SEC);
    rtc.poll();
    assert!(!line.level.get(), "22:13:22: no match");
    assert_eq!(rd(&mut rtc, reg::C), C_UF, "UF without UIE: no IRQF");
    clock.set(3 * SEC);
    rtc.poll();
    assert!(line.level.get());
    assert_eq!(rd(&mut rtc, reg::C), C_IRQF | C_AF | C_UF);
    // Don't-care values (0xC0-0xFF) match every second.
    wr(&mut rtc, reg::SECONDS_ALARM, 0xFF);
    wr(&mut rtc, reg::MINUTES_ALARM, 0xC0);
    wr(&mut rtc, reg::HOURS_ALARM, 0xC0);
    clock.set(4 * SEC);
    assert_eq!(rd(&mut rtc, reg::C), C_IRQF | C_AF | C_UF);
    // A day without polling still finds the alarm.
    wr(&mut rtc, reg::HOURS_ALARM, 0x05);
    wr(&mut rtc, reg::MINUTES_ALARM, 0x00);
    wr(&mut rtc, reg::SECONDS_ALARM, 0x00);
    clock.advance(30 * 3600 * SEC);
    assert_eq!(rd(&mut rtc, reg::C), C_IRQF | C_AF | C_UF);
}

#[test]
fn nmi_disable_bit_and_nvram() {
    let clock = ManualClock::new(0);
    let line = LevelLine::default();
    let mut rtc = Rtc::new(&clock, &line, T0);
    rtc.io_write(INDEX_PORT, AccessWidth::Byte, 0x80 | 0x40);
    assert!(rtc.nmi_disabled());
    rtc.io_write(DATA_PORT, AccessWidth::Byte, 0x5A);
    assert_eq!(rd(&mut rtc, 0x40), 0x5A, "index without bit 7");
    assert!(!rtc.nmi_disabled());
    assert_eq!(rtc.io_read(INDEX_PORT, AccessWidth::Byte), 0xFF);
    // Registers C and D are read-only.
    wr(&mut rtc, reg::D, 0);
    assert_eq!(rd(&mut rtc, reg::D), 0x80);

    // 32 MiB below 4 GiB, 1 GiB above.
    rtc.set_memory_size(32 << 20, 1 << 30);
    // (32 - 1) MiB = 31744 KiB = 0x7C00.
    assert_eq!((rd(&mut rtc, 0x30), rd(&mut rtc, 0x31)), (0x00, 0x7C));
    assert_eq!((rd(&mut rtc, 0x17), rd(&mut rtc, 0x18)), (0x00, 0x7C));
    // (32 - 16) MiB in 64 KiB = 256.
    assert_eq!((rd(&mut rtc, 0x34), rd(&mut rtc, 0x35)), (0x00, 0x01));
    // 1 GiB in 64 KiB = 0x4000.
    assert_eq!(
        (rd(&mut rtc, 0x5B), rd(&mut rtc, 0x5C), rd(&mut rtc, 0x5D)),
        (0x00, 0x40, 0x00)
    );
    assert_eq!((rd(&mut rtc, 0x15), rd(&mut rtc, 0x16)), (0x80, 0x02));
    // Large memory saturates the 16-bit fields.
    rtc.set_memory_size(3 << 30, 0);
    assert_eq!((rd(&mut rtc, 0x30), rd(&mut rtc, 0x31)), (0xFF, 0xFF));
    // (3 GiB - 16 MiB) / 64 KiB = 0xBF00.
    assert_eq!((rd(&mut rtc, 0x34), rd(&mut rtc, 0x35)), (0x00, 0xBF));
}
