//! The CMOS real-time clock of a PC (Motorola MC146818A and compatibles) at
//! ports 0x70 (index, bit 7 = NMI disable) and 0x71 (data).
//!
//! [`Rtc`] keeps the time as seconds at a point of the [`Clock`] and shows
//! it through the time registers in BCD or binary, 12- or 24-hour format
//! (register B), with the update-in-progress bit of register A in the last
//! 244 us before each second's update. Register B's SET bit freezes the time
//! for the guest to write it. The periodic (rate from register A), alarm
//! and update-ended interrupts set their flags in register C; IRQF raises
//! the interrupt line, and reading register C clears the flags and lowers
//! it. The rest of the 128 bytes is NVRAM, including the memory size bytes
//! the firmware convention defines ([`Rtc::set_memory_size`]).
//!
//! Simplifications: the day of the week is derived from the date (writes to
//! it are ignored); a change of the data mode or hour format reinterprets
//! the time instead of leaving the stored bytes alone; the first update
//! after SET is cleared comes one second later, not half a second.

use ponte_kernel::device::{AccessWidth, PortIo};
use ponte_kernel::irq::InterruptLine;
use ponte_kernel::time::{first_ns_at_tick, ticks_at, Clock, NS_PER_SEC};

use crate::bcd;

/// Index port.
pub const INDEX_PORT: u16 = 0x70;
/// Data port.
pub const DATA_PORT: u16 = 0x71;

/// Register numbers.
pub mod reg {
    /// Seconds.
    pub const SECONDS: u8 = 0x00;
    /// Seconds alarm.
    pub const SECONDS_ALARM: u8 = 0x01;
    /// Minutes.
    pub const MINUTES: u8 = 0x02;
    /// Minutes alarm.
    pub const MINUTES_ALARM: u8 = 0x03;
    /// Hours.
    pub const HOURS: u8 = 0x04;
    /// Hours alarm.
    pub const HOURS_ALARM: u8 = 0x05;
    /// Day of the week, 1 = Sunday.
    pub const DAY_OF_WEEK: u8 = 0x06;
    /// Day of the month.
    pub const DAY_OF_MONTH: u8 = 0x07;
    /// Month.
    pub const MONTH: u8 = 0x08;
    /// Year within the century.
    pub const YEAR: u8 = 0x09;
    /// Register A: UIP, divider, rate select.
    pub const A: u8 = 0x0A;
    /// Register B: SET, PIE, AIE, UIE, SQWE, DM, 24/12, DSE.
    pub const B: u8 = 0x0B;
    /// Register C: IRQF, PF, AF, UF (read-only, cleared by reading).
    pub const C: u8 = 0x0C;
    /// Register D: valid RAM and time.
    pub const D: u8 = 0x0D;
    /// Century (the PC/ACPI convention).
    pub const CENTURY: u8 = 0x32;
}

const A_UIP: u8 = 0x80;
const A_DIVIDER_NORMAL: u8 = 0x20;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
/// The time base of the divider chain.
const RTC_BASE_HZ: u64 = 32_768;
/// UIP is set this long before each update.
const UIP_LEAD_NS: u64 = 244_000;
const SECS_PER_DAY: i64 = 86_400;

/// A calendar date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2024.
    pub year: i64,
    /// 1-12.
    pub month: u8,
    /// 1-31.
    pub day: u8,
    /// 0-23.
    pub hour: u8,
    /// 0-59.
    pub minute: u8,
    /// 0-59.
    pub second: u8,
}

impl DateTime {
    /// The date and time `secs` seconds after 1970-01-01 00:00:00.
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(SECS_PER_DAY);
        // The time of day and the day of the era are never negative: they
        // are worked out unsigned, which divides by constants in less code.
        let tod = secs.rem_euclid(SECS_PER_DAY) as u32;
        // Civil-from-days over 400-year eras (proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097) as u32;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = i64::from(yoe) + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: (tod / 3600) as u8,
            minute: (tod / 60 % 60) as u8,
            second: (tod % 60) as u8,
        }
    }

    /// Seconds since 1970-01-01 00:00:00; out-of-range fields are clamped
    /// (a day past the month's end rolls into the next month).
    pub fn to_unix(&self) -> i64 {
        let month = u32::from(self.month.clamp(1, 12));
        let day = u32::from(self.day.clamp(1, 31));
        // Counted from 400 BC (one era early), the year (-1..=9999) is never
        // negative: the era arithmetic is unsigned, which divides by
        // constants in less code.
        let year = (self.year.clamp(0, 9999) + 400) as u32 - u32::from(month <= 2);
        let era = i64::from(year / 400) - 1;
        let yoe = year % 400;
        let mp = if month > 2 { month - 3 } else { month + 9 };
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + i64::from(doe) - 719_468;
        days * SECS_PER_DAY
            + i64::from(self.hour.min(23)) * 3600
            + i64::from(self.minute.min(59)) * 60
            + i64::from(self.second.min(59))
    }

    /// Day of the week as the RTC counts it: 1 = Sunday ... 7 = Saturday.
    pub fn day_of_week(&self) -> u8 {
        let days = self.to_unix().div_euclid(SECS_PER_DAY);
        // 1970-01-01 was a Thursday.
        ((days + 4).rem_euclid(7) + 1) as u8
    }
}

/// The CMOS RTC and NVRAM. See the module documentation.
#[derive(Debug)]
pub struct Rtc<C: Clock, L: InterruptLine> {
    clock: C,
    irq: L,
    index: u8,
    nmi_disabled: bool,
    ram: [u8; 128],
    /// Unix seconds at `base_ns` (the start of that second).
    base_secs: i64,
    base_ns: u64,
    /// The time fields while updates are halted (SET or divider stopped),
    /// kept as written so fields can be set in any order.
    frozen: Option<DateTime>,
    flags: u8,
    checked_ns: u64,
}

impl<C: Clock, L: InterruptLine> Rtc<C, L> {
    /// An RTC showing `unix_secs` (seconds since 1970) now, register A =
    /// 0x26 (32.768 kHz divider, 1024 Hz rate), register B = 0x02 (24-hour,
    /// BCD), no interrupts enabled.
    pub fn new(clock: C, irq: L, unix_secs: i64) -> Self {
        let now = clock.now_ns();
        let mut ram = [0u8; 128];
        ram[usize::from(reg::A)] = 0x26;
        ram[usize::from(reg::B)] = B_24H;
        Self {
            clock,
            irq,
            index: 0,
            nmi_disabled: false,
            ram,
            base_secs: unix_secs,
            base_ns: now,
            frozen: None,
            flags: 0,
            checked_ns: now,
        }
    }

    /// Whether the guest has set the NMI-disable bit (port 0x70 bit 7); the
    /// run loop holds NMIs back while it is set.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// Fills the memory size bytes: 0x15/0x16 base memory (640 KiB),
    /// 0x17/0x18 and 0x30/0x31 KiB above 1 MiB (at most 0xFFFF),
    /// 0x34/0x35 64 KiB blocks above 16 MiB (at most 0xFFFF) and
    /// 0x5B-0x5D 64 KiB blocks above 4 GiB.
    pub fn set_memory_size(&mut self, below_4g: u64, above_4g: u64) {
        const MIB: u64 = 1 << 20;
        let ext_kib = (below_4g.saturating_sub(MIB) / 1024).min(0xFFFF) as u16;
        let above_16m = (below_4g.saturating_sub(16 * MIB) >> 16).min(0xFFFF) as u16;
        let above_4g = (above_4g >> 16).min(0xFF_FFFF) as u32;
        let ram = &mut self.ram;
        ram[0x15..0x17].copy_from_slice(&640u16.to_le_bytes());
        ram[0x17..0x19].copy_from_slice(&ext_kib.to_le_bytes());
        ram[0x30..0x32].copy_from_slice(&ext_kib.to_le_bytes());
        ram[0x34..0x36].copy_from_slice(&above_16m.to_le_bytes());
        ram[0x5B..0x5E].copy_from_slice(&above_4g.to_le_bytes()[..3]);
    }

    fn reg_a(&self) -> u8 {
        self.ram[usize::from(reg::A)]
    }

    fn reg_b(&self) -> u8 {
        self.ram[usize::from(reg::B)]
    }

    fn divider_running(&self) -> bool {
        self.reg_a() & 0x70 == A_DIVIDER_NORMAL
    }

    /// Seconds and nanoseconds into that second, now.
    fn now_time(&self, now: u64) -> (i64, u64) {
        if let Some(dt) = self.frozen {
            return (dt.to_unix(), 0);
        }
        let elapsed = now.saturating_sub(self.base_ns);
        let whole = (elapsed / NS_PER_SEC) as i64;
        (self.base_secs.saturating_add(whole), elapsed % NS_PER_SEC)
    }

    /// The current time as the guest sees it.
    pub fn date_time(&self) -> DateTime {
        self.frozen
            .unwrap_or_else(|| DateTime::from_unix(self.now_time(self.clock.now_ns()).0))
    }

    fn periodic_ticks(&self) -> Option<u64> {
        let rs = self.reg_a() & 0xF;
        match rs {
            0 => None,
            1 => Some(1 << 7),
            2 => Some(1 << 8),
            _ => Some(1 << (rs - 1)),
        }
    }

    fn alarm_matches(&self, secs: i64) -> bool {
        let tod = secs.rem_euclid(SECS_PER_DAY);
        let fields = [
            (reg::HOURS_ALARM, tod / 3600),
            (reg::MINUTES_ALARM, tod / 60 % 60),
            (reg::SECONDS_ALARM, tod % 60),
        ];
        fields.iter().all(|&(r, value)| {
            // Register numbers are below 0x80, the size of `ram`.
            let alarm = self.ram[usize::from(r & 0x7F)];
            alarm & 0xC0 == 0xC0 || alarm == self.encode_field(r, value as u8)
        })
    }

    /// Sets the flags of every event between the last check and `now`, and
    /// drives the line from IRQF.
    fn catch_up(&mut self, now: u64) {
        let t0 = self.checked_ns;
        if now > t0 {
            if self.divider_running() {
                if let Some(period) = self.periodic_ticks() {
                    let k0 = ticks_at(t0.saturating_sub(self.base_ns), RTC_BASE_HZ) / period;
                    let k1 = ticks_at(now.saturating_sub(self.base_ns), RTC_BASE_HZ) / period;
                    if k1 > k0 {
                        self.flags |= C_PF;
                    }
                }
            }
            if self.frozen.is_none() {
                let (s0, _) = self.now_time(t0.max(self.base_ns));
                let (s1, _) = self.now_time(now);
                if s1 > s0 {
                    self.flags |= C_UF;
                    // At most a day of updates: later ones repeat the alarm
                    // times of earlier ones.
                    let first = s1.saturating_sub(SECS_PER_DAY - 1).max(s0 + 1);
                    let updates = (s1 - first) as u32 + 1;
                    if (0..updates).any(|k| self.alarm_matches(first + i64::from(k))) {
                        self.flags |= C_AF;
                    }
                }
            }
            self.checked_ns = now;
        }
        let enabled = self.reg_b() & (B_PIE | B_AIE | B_UIE);
        self.irq.set_level(self.flags & enabled != 0);
    }

    /// Brings the interrupt flags and the line up to date; the run loop
    /// calls it at [`Rtc::next_event_ns`].
    pub fn poll(&mut self) {
        let now = self.clock.now_ns();
        self.catch_up(now);
    }

    /// When the next enabled interrupt is due, if one can raise the line
    /// (none while IRQF is still set: the line is already high).
    pub fn next_event_ns(&self) -> Option<u64> {
        let b = self.reg_b();
        if self.flags & b & (B_PIE | B_AIE | B_UIE) != 0 || !self.divider_running() {
            return None;
        }
        let now = self.checked_ns;
        let mut next: Option<u64> = None;
        if b & B_PIE != 0 {
            if let Some(period) = self.periodic_ticks() {
                let k = ticks_at(now.saturating_sub(self.base_ns), RTC_BASE_HZ) / period + 1;
                let at = self
                    .base_ns
                    .saturating_add(first_ns_at_tick(k.saturating_mul(period), RTC_BASE_HZ));
                next = Some(at);
            }
        }
        if b & (B_AIE | B_UIE) != 0 && self.frozen.is_none() {
            // The next update (alarms are checked at updates too).
            let elapsed = now.saturating_sub(self.base_ns);
            let at = self
                .base_ns
                .saturating_add((elapsed / NS_PER_SEC + 1).saturating_mul(NS_PER_SEC));
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    fn binary(&self) -> bool {
        self.reg_b() & B_BINARY != 0
    }

    /// The register byte of time field `index` (a time or alarm register)
    /// holding `value`, in the data mode and hour format of register B. Out
    /// of line: reads and the alarm comparison share it.
    #[inline(never)]
    fn encode_field(&self, index: u8, value: u8) -> u8 {
        let (value, pm) = match index {
            reg::HOURS | reg::HOURS_ALARM if self.reg_b() & B_24H == 0 => {
                let h12 = match value % 12 {
                    0 => 12,
                    h => h,
                };
                (h12, if value >= 12 { 0x80 } else { 0 })
            }
            _ => (value, 0),
        };
        let encoded = if self.binary() {
            value
        } else {
            bcd::from_binary(u32::from(value), 2) as u8
        };
        encoded | pm
    }

    /// The value of time register `index` holding `byte`: the inverse of
    /// [`Rtc::encode_field`], BCD digits above 9 read as 9.
    fn decode_field(&self, index: u8, byte: u8) -> u8 {
        let twelve_hour = index == reg::HOURS && self.reg_b() & B_24H == 0;
        let digits = if twelve_hour { byte & 0x7F } else { byte };
        let value = if self.binary() {
            digits
        } else {
            bcd::to_binary(u32::from(digits), 2) as u8
        };
        match (twelve_hour, byte & 0x80 != 0) {
            (false, _) => value,
            (true, false) => value % 12,
            (true, true) => value % 12 + 12,
        }
    }

    /// Reads register `index` (0x00-0x7F).
    pub fn read_register(&mut self, index: u8) -> u8 {
        let now = self.clock.now_ns();
        self.catch_up(now);
        let (secs, subsec) = self.now_time(now);
        let index = index & 0x7F;
        let time_register = matches!(
            index,
            reg::SECONDS
                | reg::MINUTES
                | reg::HOURS
                | reg::DAY_OF_WEEK
                | reg::DAY_OF_MONTH
                | reg::MONTH
                | reg::YEAR
                | reg::CENTURY
        );
        if time_register {
            // One conversion and one encoding for every time register.
            let dt = self.frozen.unwrap_or_else(|| DateTime::from_unix(secs));
            let century = dt.year.div_euclid(100);
            let value = match index {
                reg::SECONDS => dt.second,
                reg::MINUTES => dt.minute,
                reg::HOURS => dt.hour,
                reg::DAY_OF_WEEK => dt.day_of_week(),
                reg::DAY_OF_MONTH => dt.day,
                reg::MONTH => dt.month,
                reg::YEAR => (dt.year - century * 100) as u8,
                _ => century.clamp(0, 99) as u8,
            };
            return self.encode_field(index, value);
        }
        match index {
            reg::A => {
                let uip = self.frozen.is_none()
                    && self.divider_running()
                    && subsec >= NS_PER_SEC - UIP_LEAD_NS;
                self.reg_a() | if uip { A_UIP } else { 0 }
            }
            reg::C => {
                let enabled = self.reg_b() & (B_PIE | B_AIE | B_UIE);
                let irqf = if self.flags & enabled != 0 { C_IRQF } else { 0 };
                let value = self.flags | irqf;
                self.flags = 0;
                self.irq.lower();
                value
            }
            // Valid RAM and time.
            reg::D => 0x80,
            i => self.ram[usize::from(i)],
        }
    }

    /// Writes register `index` (0x00-0x7F).
    pub fn write_register(&mut self, index: u8, value: u8) {
        let now = self.clock.now_ns();
        self.catch_up(now);
        let index = index & 0x7F;
        match index {
            reg::SECONDS
            | reg::MINUTES
            | reg::HOURS
            | reg::DAY_OF_MONTH
            | reg::MONTH
            | reg::YEAR
            | reg::CENTURY => self.write_time_field(now, index, value),
            reg::DAY_OF_WEEK | reg::C | reg::D => {}
            reg::A => {
                let was_running = self.divider_running();
                self.ram[usize::from(reg::A)] = value & 0x7F;
                if was_running != self.divider_running() {
                    self.set_halted(now, !self.divider_running() || self.reg_b() & B_SET != 0);
                }
            }
            reg::B => {
                let mut value = value;
                if value & B_SET != 0 {
                    // Data sheet: SET clears UIE.
                    value &= !B_UIE;
                }
                self.ram[usize::from(reg::B)] = value;
                self.set_halted(now, value & B_SET != 0 || !self.divider_running());
            }
            i => self.ram[usize::from(i)] = value,
        }
        self.catch_up(now);
    }

    fn set_halted(&mut self, now: u64, halted: bool) {
        match (self.frozen, halted) {
            (None, true) => self.frozen = Some(DateTime::from_unix(self.now_time(now).0)),
            (Some(dt), false) => {
                self.frozen = None;
                self.base_secs = dt.to_unix();
                self.base_ns = now;
                self.checked_ns = now;
            }
            _ => {}
        }
    }

    fn write_time_field(&mut self, now: u64, index: u8, value: u8) {
        let (secs, subsec) = self.now_time(now);
        let mut dt = self.frozen.unwrap_or_else(|| DateTime::from_unix(secs));
        let value = self.decode_field(index, value);
        let century = dt.year.div_euclid(100);
        match index {
            reg::SECONDS => dt.second = value.min(59),
            reg::MINUTES => dt.minute = value.min(59),
            reg::HOURS => dt.hour = value.min(23),
            reg::DAY_OF_MONTH => dt.day = value.clamp(1, 31),
            reg::MONTH => dt.month = value.clamp(1, 12),
            reg::YEAR => dt.year = century * 100 + i64::from(value % 100),
            _ => dt.year = i64::from(value) * 100 + (dt.year - century * 100),
        }
        if self.frozen.is_some() {
            self.frozen = Some(dt);
        } else {
            // Keep the phase within the second.
            self.base_secs = dt.to_unix();
            self.base_ns = now.saturating_sub(subsec);
            self.checked_ns = now;
        }
    }
}

/// A board's interrupt system polls the timer before every VM entry.
impl<C: Clock, L: InterruptLine> ponte_kernel::irq::board::PolledTimer for Rtc<C, L> {
    fn poll(&mut self) {
        Rtc::poll(self);
    }
    fn next_event_ns(&self) -> Option<u64> {
        Rtc::next_event_ns(self)
    }
}

impl<C: Clock, L: InterruptLine> PortIo for Rtc<C, L> {
    /// 0x71 reads the selected register; 0x70 is write-only (reads 0xFF).
    fn io_read(&mut self, port: u16, _width: AccessWidth) -> u32 {
        match port {
            DATA_PORT => u32::from(self.read_register(self.index)),
            _ => 0xFF,
        }
    }

    /// 0x70 selects a register (bits 6:0) and sets NMI disable (bit 7);
    /// 0x71 writes the selected register.
    fn io_write(&mut self, port: u16, _width: AccessWidth, value: u32) {
        let value = value as u8;
        match port {
            INDEX_PORT => {
                self.index = value & 0x7F;
                self.nmi_disabled = value & 0x80 != 0;
            }
            DATA_PORT => self.write_register(self.index, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
