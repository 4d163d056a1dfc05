//! The 8254 programmable interval timer of a PC (ports 0x40-0x43) and the
//! system control port B (0x61) that gates channel 2 and shows its output.
//!
//! [`Pit`] follows the Intel 8254 data sheet: three 16-bit down counters
//! clocked at 1.193182 MHz, modes 0-5, access modes LSB, MSB and LSB-then-MSB,
//! counter latch and read-back commands (count and status), binary or BCD
//! counting. Counts and OUT levels are computed from the clock when read:
//! nothing runs between guest accesses.
//!
//! Channel 0's OUT drives the system timer interrupt: the model pulses its
//! line once for each rising edge of OUT seen by [`Pit::poll`] (edges that
//! pile up between two polls coalesce into one pulse, as an edge-triggered
//! request does, and are counted in [`Pit::coalesced_edges`]). Which
//! controller pins that line reaches is the router's business.
//! [`Pit::next_event_ns`] tells the run loop when the next edge is due.
//!
//! Simplifications: a new count written while a mode 3 counter runs is
//! loaded at the end of the current cycle (the data sheet says half-cycle);
//! channels 0 and 1 have their gate tied high, channel 2's gate is port 0x61
//! bit 0; only edges produced by counting raise the interrupt (not the OUT
//! level set by a control word).

use ponte_kernel::device::{AccessWidth, PortIo};
use ponte_kernel::irq::InterruptLine;
use ponte_kernel::time::{first_ns_at_tick, ticks_at, Clock};

/// Input clock of every channel, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Channel 0 data port.
pub const CHANNEL0_PORT: u16 = 0x40;
/// Channel 2 data port.
pub const CHANNEL2_PORT: u16 = 0x42;
/// Mode/command port.
pub const COMMAND_PORT: u16 = 0x43;
/// System control port B.
pub const PORT_B: u16 = 0x61;

/// Period of the DRAM refresh toggle seen in port 0x61 bit 4.
const REFRESH_PERIOD_NS: u64 = 15_085;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Lsb,
    Msb,
    LsbMsb,
}

impl Access {
    fn bits(self) -> u8 {
        match self {
            Self::Lsb => 1,
            Self::Msb => 2,
            Self::LsbMsb => 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counting {
    /// Control word written, no count yet (or mode 1/5 waiting for a gate
    /// trigger).
    Idle,
    /// Counting since absolute tick `start` (the tick at which the count
    /// was loaded into the counting element).
    Running { start: u64 },
    /// Mode 0/4 with the gate low: counting suspended after `elapsed`
    /// ticks.
    Suspended { elapsed: u64 },
}

#[derive(Clone, Debug)]
struct Channel {
    mode: u8,
    bcd: bool,
    access: Access,
    /// The count register as written (raw, BCD-encoded if `bcd`).
    count_register: u16,
    /// The first byte of an LSB-then-MSB write, waiting for the second.
    pending_lsb: Option<u8>,
    read_msb_next: bool,
    latched_count: Option<u16>,
    latched_msb_next: bool,
    latched_status: Option<u8>,
    counting: Counting,
    /// Count loaded (N, 1..=65536 or 1..=10000).
    initial: u32,
    /// A count was written (mode 1/5) that waits for a gate trigger.
    count_written: bool,
    /// Status bit 6: set by a control word or count write, cleared once
    /// the count is loaded into the counting element.
    null_count: bool,
    gate: bool,
    /// OUT before the first count is loaded.
    idle_out: bool,
    /// Mode 2/3: a count written while counting, loaded at absolute tick
    /// `.0` (the end of the current cycle) as `.1`.
    pending_reload: Option<(u64, u32)>,
}

impl Channel {
    /// A channel after power-up, its gate input at `gate`.
    fn new(gate: bool) -> Self {
        Self {
            mode: 0,
            bcd: false,
            access: Access::LsbMsb,
            count_register: 0,
            pending_lsb: None,
            read_msb_next: false,
            latched_count: None,
            latched_msb_next: false,
            latched_status: None,
            counting: Counting::Idle,
            initial: 0x10000,
            count_written: false,
            null_count: true,
            gate,
            idle_out: false,
            pending_reload: None,
        }
    }

    fn modulus(&self) -> u64 {
        if self.bcd {
            10_000
        } else {
            0x10000
        }
    }

    /// Ticks the counting element has counted at absolute tick `t`; `None`
    /// before the count is loaded.
    fn elapsed(&self, t: u64) -> Option<u64> {
        match self.counting {
            Counting::Idle => None,
            Counting::Running { start } => t.checked_sub(start),
            Counting::Suspended { elapsed } => Some(elapsed),
        }
    }

    /// Loads a pending mode 2/3 count once its cycle has ended by tick `t`.
    /// Out of line: every port access settles the channels it touches.
    #[inline(never)]
    fn settle(&mut self, t: u64) {
        if let Some((at, initial)) = self.pending_reload {
            if t >= at {
                self.initial = initial;
                self.counting = Counting::Running { start: at };
                self.pending_reload = None;
            }
        }
    }

    /// This channel as it is at tick `t`, pending reload applied.
    fn settled(&self, t: u64) -> Self {
        let mut c = self.clone();
        c.settle(t);
        c
    }

    fn gate_stops_periodic(&self) -> bool {
        matches!(self.mode, 2 | 3) && !self.gate
    }

    /// OUT at absolute tick `t` (data sheet waveforms). Out of line: the
    /// status byte, port 0x61 and [`Pit::out`] share it.
    #[inline(never)]
    fn out(&self, t: u64) -> bool {
        if self.gate_stops_periodic() {
            return true;
        }
        let Some(d) = self.elapsed(t) else {
            return self.idle_out;
        };
        let n = u64::from(self.initial);
        match self.mode {
            0 | 1 => d >= n,
            2 => d % n != n - 1,
            3 => d % n < n.div_ceil(2),
            _ => d != n,
        }
    }

    /// The counting element at absolute tick `t` (binary value).
    fn count(&self, t: u64) -> u64 {
        let n = u64::from(self.initial);
        let m = self.modulus();
        let Some(d) = self.elapsed(t) else {
            return n % m;
        };
        match self.mode {
            2 => n - d % n,
            3 => {
                let p = d % n;
                let high = n.div_ceil(2);
                let (phase, first) = if p < high { (p, 0) } else { (p - high, 1) };
                if n % 2 == 0 {
                    n - 2 * phase
                } else if phase == 0 {
                    n
                } else if first == 0 {
                    n - 1 - 2 * (phase - 1)
                } else {
                    n - 1 - 2 * phase
                }
            }
            _ => (n + m - d % m) % m,
        }
    }

    /// Rising edges of OUT in the ticks `(t0, t1]` while running.
    fn rising_edges(&self, t0: u64, t1: u64) -> u64 {
        let (Counting::Running { start }, false) = (self.counting, self.gate_stops_periodic())
        else {
            return 0;
        };
        if t1 <= t0 || t1 < start {
            return 0;
        }
        let d0 = t0.saturating_sub(start);
        let d1 = t1 - start;
        let n = u64::from(self.initial);
        let at = |edge: u64| u64::from(d0 < edge && edge <= d1);
        match self.mode {
            0 | 1 => at(n),
            2 | 3 if n > 1 => d1 / n - d0 / n,
            4 | 5 => at(n + 1),
            _ => 0,
        }
    }

    /// The absolute tick of the first rising edge of OUT after tick `t`.
    fn next_rising_edge(&self, t: u64) -> Option<u64> {
        let (Counting::Running { start }, false) = (self.counting, self.gate_stops_periodic())
        else {
            return None;
        };
        let d = t.checked_sub(start);
        let n = u64::from(self.initial);
        let after = |edge: u64| match d {
            Some(d) if d >= edge => None,
            _ => Some(start.saturating_add(edge)),
        };
        match self.mode {
            0 | 1 => after(n),
            2 | 3 if n > 1 => {
                let k = d.map_or(0, |d| d / n) + 1;
                Some(start.saturating_add(k.saturating_mul(n)))
            }
            4 | 5 => after(n + 1),
            _ => None,
        }
    }

    fn status(&self, t: u64) -> u8 {
        let null_count =
            self.null_count && !matches!(self.counting, Counting::Running { start } if t >= start);
        (u8::from(self.out(t)) << 7)
            | (u8::from(null_count) << 6)
            | (self.access.bits() << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn encode(&self, count: u64) -> u16 {
        if self.bcd {
            // A count is at most 0x10000: it fits the u32.
            crate::bcd::from_binary(count as u32, 4) as u16
        } else {
            count as u16
        }
    }

    fn decode_initial(&self) -> u32 {
        let raw = u32::from(self.count_register);
        let value = if self.bcd {
            crate::bcd::to_binary(raw, 4)
        } else {
            raw
        };
        if value == 0 {
            self.modulus() as u32
        } else {
            value
        }
    }

    fn write_control(&mut self, value: u8) {
        self.access = match (value >> 4) & 3 {
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::LsbMsb,
        };
        let mode = (value >> 1) & 7;
        self.mode = if mode > 5 { mode - 4 } else { mode };
        self.bcd = value & 1 != 0;
        self.pending_lsb = None;
        self.read_msb_next = false;
        self.latched_count = None;
        self.latched_status = None;
        self.counting = Counting::Idle;
        self.pending_reload = None;
        self.count_written = false;
        self.null_count = true;
        self.idle_out = self.mode != 0;
    }

    // The writes below expect the channel settled at `t` (see
    // `Pit::io_write`).

    fn latch_count(&mut self, t: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.encode(self.count(t)));
            self.latched_msb_next = false;
        }
    }

    fn latch_status(&mut self, t: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(t));
        }
    }

    fn read(&mut self, t: u64) -> u8 {
        self.settle(t);
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        // A latched count and the live count are read out by the same
        // byte sequence, each with its own LSB/MSB flip-flop.
        let access = self.access;
        let latched = self.latched_count;
        let (value, msb_next) = match latched {
            Some(latched) => (latched, &mut self.latched_msb_next),
            None => (self.encode(self.count(t)), &mut self.read_msb_next),
        };
        let msb = match access {
            Access::Lsb => false,
            Access::Msb => true,
            Access::LsbMsb => core::mem::replace(msb_next, !*msb_next),
        };
        if latched.is_some() && (msb || access == Access::Lsb) {
            // The whole latched count has been read.
            self.latched_count = None;
            self.latched_msb_next = false;
        }
        if msb {
            (value >> 8) as u8
        } else {
            value as u8
        }
    }

    fn write(&mut self, t: u64, value: u8) {
        let complete = match self.access {
            Access::Lsb => {
                self.count_register = u16::from(value);
                true
            }
            Access::Msb => {
                self.count_register = u16::from(value) << 8;
                true
            }
            Access::LsbMsb => match self.pending_lsb.take() {
                None => {
                    self.pending_lsb = Some(value);
                    if self.mode == 0 {
                        // Mode 0: writing the first byte stops counting.
                        if let Some(elapsed) = self.elapsed(t) {
                            self.counting = Counting::Suspended { elapsed };
                        }
                    }
                    false
                }
                Some(lsb) => {
                    self.count_register = u16::from(lsb) | (u16::from(value) << 8);
                    true
                }
            },
        };
        if complete {
            self.load(t);
        }
    }

    /// A new count is complete in the count register.
    fn load(&mut self, t: u64) {
        let initial = self.decode_initial();
        self.null_count = true;
        if let (2 | 3, Counting::Running { start }, true) = (self.mode, self.counting, self.gate) {
            if t >= start {
                // Data sheet: a count written while counting does not
                // disturb the current cycle; it is loaded at its end.
                let n = u64::from(self.initial);
                let cycles = (t - start) / n + 1;
                let at = start.saturating_add(cycles.saturating_mul(n));
                self.pending_reload = Some((at, initial));
                return;
            }
        }
        self.initial = initial;
        self.pending_reload = None;
        match self.mode {
            1 | 5 => {
                // Loaded by the next gate trigger.
                self.count_written = true;
                self.counting = Counting::Idle;
                self.idle_out = true;
            }
            _ => {
                self.count_written = false;
                self.counting = if self.gate || matches!(self.mode, 2 | 3) {
                    Counting::Running { start: t + 1 }
                } else {
                    Counting::Suspended { elapsed: 0 }
                };
                self.idle_out = self.mode != 0;
            }
        }
    }

    fn set_gate(&mut self, t: u64, high: bool) {
        if high == self.gate {
            return;
        }
        self.gate = high;
        match (self.mode, high) {
            (0 | 4, false) => {
                if let Some(elapsed) = self.elapsed(t) {
                    self.counting = Counting::Suspended { elapsed };
                }
            }
            (0 | 4, true) => {
                if let Counting::Suspended { elapsed } = self.counting {
                    self.counting = Counting::Running {
                        start: t.saturating_sub(elapsed),
                    };
                }
            }
            (1 | 5, true) => {
                self.count_written = false;
                self.counting = Counting::Running { start: t + 1 };
            }
            (2 | 3, true) if !matches!(self.counting, Counting::Idle) => {
                // A rising gate reloads the counter, with a count written
                // meanwhile if there is one.
                if let Some((_, initial)) = self.pending_reload.take() {
                    self.initial = initial;
                }
                self.counting = Counting::Running { start: t + 1 };
            }
            _ => {}
        }
    }
}

/// The 8254 with port 0x61. See the module documentation.
#[derive(Debug)]
pub struct Pit<C: Clock, L: InterruptLine> {
    clock: C,
    irq0: L,
    channels: [Channel; 3],
    port_b: u8,
    polled_tick: u64,
    coalesced: u64,
}

impl<C: Clock, L: InterruptLine> Pit<C, L> {
    /// A PIT after power-up: no counts loaded, channel 2 gate low.
    pub fn new(clock: C, irq0: L) -> Self {
        let polled_tick = ticks_at(clock.now_ns(), PIT_HZ);
        // Channels 0 and 1 have their gates tied high; channel 2's gate is
        // port 0x61 bit 0, low after reset.
        let channels = core::array::from_fn(|index| Channel::new(index != 2));
        Self {
            clock,
            irq0,
            channels,
            port_b: 0,
            polled_tick,
            coalesced: 0,
        }
    }

    fn tick(&self) -> u64 {
        ticks_at(self.clock.now_ns(), PIT_HZ)
    }

    /// OUT of `channel` (0-2) now; false for another channel number.
    pub fn out(&self, channel: usize) -> bool {
        let t = self.tick();
        self.channels
            .get(channel)
            .is_some_and(|c| c.settled(t).out(t))
    }

    /// Pulses the channel 0 line if OUT rose since the previous poll.
    pub fn poll(&mut self) {
        self.poll_at(self.tick());
    }

    /// [`Pit::poll`] at tick `t`.
    fn poll_at(&mut self, t: u64) {
        let channel = &mut self.channels[0];
        let mut from = self.polled_tick;
        let mut edges = 0;
        if let Some((at, _)) = channel.pending_reload {
            if at <= t {
                // Edges of the old cycle up to the reload, then the new one.
                edges += channel.rising_edges(from, at);
                channel.settle(at);
                from = from.max(at);
            }
        }
        edges += channel.rising_edges(from, t);
        self.polled_tick = self.polled_tick.max(t);
        if edges > 0 {
            self.irq0.pulse();
            self.coalesced = self.coalesced.saturating_add(edges - 1);
        }
    }

    /// Rising edges of channel 0 that were merged into an earlier pulse
    /// because nobody polled in between.
    pub fn coalesced_edges(&self) -> u64 {
        self.coalesced
    }

    /// When channel 0's OUT next rises (the next timer interrupt), if it
    /// will. May be in the past if a poll is overdue.
    pub fn next_event_ns(&self) -> Option<u64> {
        self.channels[0]
            .next_rising_edge(self.polled_tick)
            .map(|tick| first_ns_at_tick(tick, PIT_HZ))
    }

    fn write_command(&mut self, t: u64, value: u8) {
        let select = value >> 6;
        if select == 3 {
            // Read-back: bit 5 = don't latch count, bit 4 = don't latch
            // status, bits 3:1 select channels 2:0.
            for (i, channel) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 {
                    channel.latch_count(t);
                }
                if value & 0x10 == 0 {
                    channel.latch_status(t);
                }
            }
            return;
        }
        let channel = &mut self.channels[usize::from(select)];
        if (value >> 4) & 3 == 0 {
            channel.latch_count(t);
        } else {
            channel.write_control(value);
        }
    }

    fn read_port_b(&mut self, now_ns: u64, t: u64) -> u8 {
        let refresh = (now_ns / REFRESH_PERIOD_NS) & 1 != 0;
        let channel2 = &mut self.channels[2];
        channel2.settle(t);
        (self.port_b & 0x0F) | (u8::from(refresh) << 4) | (u8::from(channel2.out(t)) << 5)
    }

    fn write_port_b(&mut self, t: u64, value: u8) {
        self.port_b = value & 0x0F;
        self.channels[2].set_gate(t, value & 1 != 0);
    }
}

/// A board's interrupt system polls the timer before every VM entry.
impl<C: Clock, L: InterruptLine> ponte_kernel::irq::board::PolledTimer for Pit<C, L> {
    fn poll(&mut self) {
        Pit::poll(self);
    }
    fn next_event_ns(&self) -> Option<u64> {
        Pit::next_event_ns(self)
    }
}

impl<C: Clock, L: InterruptLine> PortIo for Pit<C, L> {
    /// Ports 0x40-0x42 (counters), 0x43 (reads 0xFF), 0x61.
    fn io_read(&mut self, port: u16, _width: AccessWidth) -> u32 {
        let now_ns = self.clock.now_ns();
        let t = ticks_at(now_ns, PIT_HZ);
        u32::from(match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].read(t),
            PORT_B => self.read_port_b(now_ns, t),
            _ => 0xFF,
        })
    }

    /// Ports 0x40-0x42 (counters), 0x43 (control word), 0x61.
    fn io_write(&mut self, port: u16, _width: AccessWidth, value: u32) {
        // Edges up to now belong to the old programming, and so do the
        // reloads due by now: every channel method below sees its channel
        // settled.
        let t = self.tick();
        self.poll_at(t);
        for channel in &mut self.channels {
            channel.settle(t);
        }
        let value = value as u8;
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].write(t, value),
            COMMAND_PORT => self.write_command(t, value),
            PORT_B => self.write_port_b(t, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
