//! Time as the device models and interrupt controllers see it.
//!
//! Timers (PIT, LAPIC timer, RTC) are state machines evaluated lazily: they
//! read the current time from a [`Clock`] when the guest looks at them or when
//! the hypervisor asks when the next one fires, so no host timer interrupt is
//! needed while a guest runs.
//!
//! This module also owns the conversions between nanoseconds and ticks of a
//! counter running at a given frequency ([`ticks_at`], [`first_ns_at_tick`]),
//! so that every timer rounds the same way, and [`ManualClock`], a clock that
//! only moves when told to (tests, deterministic replay). The conversions are
//! kept out of line: their 128-bit arithmetic would otherwise be repeated at
//! every timer register access that uses them.

use core::sync::atomic::{AtomicU64, Ordering};

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// A monotonic source of time in nanoseconds.
pub trait Clock {
    /// Nanoseconds since an arbitrary fixed origin; never decreases.
    fn now_ns(&self) -> u64;
}

impl<T: Clock + ?Sized> Clock for &T {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// Number of whole ticks of a `hz` counter that have elapsed in `ns`
/// nanoseconds (rounded down). Saturates at `u64::MAX`; `hz == 0` gives 0.
#[inline(never)]
pub const fn ticks_at(ns: u64, hz: u64) -> u64 {
    let ticks = (ns as u128 * hz as u128) / NS_PER_SEC as u128;
    if ticks > u64::MAX as u128 {
        u64::MAX
    } else {
        ticks as u64
    }
}

/// The first nanosecond at which [`ticks_at`] reaches `ticks` (rounded up),
/// so that `ticks_at(first_ns_at_tick(t, hz), hz) >= t`. Saturates at
/// `u64::MAX`; `hz == 0` gives `u64::MAX` (never).
#[inline(never)]
pub const fn first_ns_at_tick(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return u64::MAX;
    }
    let num = ticks as u128 * NS_PER_SEC as u128;
    let ns = num.div_ceil(hz as u128);
    if ns > u64::MAX as u128 {
        u64::MAX
    } else {
        ns as u64
    }
}

/// The processor's time-stamp counter as a clock, counting `hz` per second
/// (see `ponte_arch::cpu::tsc_hz`). Conversions multiply by a 32.32
/// fixed-point factor computed once, so reading the clock costs no division.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscClock {
    hz: u64,
    /// Nanoseconds per tick, times 2^32.
    ns_per_tick: u128,
}

impl TscClock {
    /// A clock over a TSC running at `hz` (at least 1).
    pub const fn new(hz: u64) -> Self {
        let hz = if hz == 0 { 1 } else { hz };
        Self {
            hz,
            // Rounded up: the error stays below one nanosecond for the first
            // 2^32 ticks, and whole results (7 ticks at 3.5 GHz) come out whole.
            ns_per_tick: ((NS_PER_SEC as u128) << 32).div_ceil(hz as u128),
        }
    }

    /// The TSC frequency.
    pub const fn hz(&self) -> u64 {
        self.hz
    }

    /// Nanoseconds for `ticks` TSC ticks (saturating; within a nanosecond
    /// for up to 2^32 ticks, one part in 2^32 beyond).
    #[inline(never)]
    pub const fn ticks_to_ns(&self, ticks: u64) -> u64 {
        let ns = (ticks as u128 * self.ns_per_tick) >> 32;
        if ns > u64::MAX as u128 {
            u64::MAX
        } else {
            ns as u64
        }
    }
}

impl Clock for TscClock {
    #[inline(never)]
    fn now_ns(&self) -> u64 {
        self.ticks_to_ns(ponte_arch::cpu::tsc())
    }
}

/// A clock that moves only when told to: for host tests and for replaying a
/// run deterministically. Shared through `&ManualClock` (which is a
/// [`Clock`] too), so a test can advance the time every timer sees.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_ns`.
    pub const fn new(start_ns: u64) -> Self {
        Self {
            now: AtomicU64::new(start_ns),
        }
    }

    /// Moves the clock forward by `delta_ns` (saturating).
    pub fn advance(&self, delta_ns: u64) {
        let now = self.now.load(Ordering::Relaxed);
        self.set(now.saturating_add(delta_ns));
    }

    /// Sets the clock to `ns`; an earlier time than now is ignored, so the
    /// clock stays monotonic.
    pub fn set(&self, ns: u64) {
        self.now.fetch_max(ns, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversions_round_consistently() {
        // 1.193182 MHz: one tick is 838.095... ns.
        let hz = 1_193_182;
        assert_eq!(ticks_at(838, hz), 0);
        assert_eq!(ticks_at(839, hz), 1);
        assert_eq!(first_ns_at_tick(1, hz), 839);
        assert_eq!(ticks_at(NS_PER_SEC, hz), hz);
        for t in [0u64, 1, 2, 65_535, 65_536, 1 << 40] {
            let ns = first_ns_at_tick(t, hz);
            assert!(ticks_at(ns, hz) >= t);
            if ns > 0 {
                assert!(ticks_at(ns - 1, hz) < t);
            }
        }
        assert_eq!(first_ns_at_tick(5, 0), u64::MAX);
        assert_eq!(ticks_at(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn manual_clock_is_monotonic() {
        let clock = ManualClock::new(100);
        clock.advance(50);
        assert_eq!(clock.now_ns(), 150);
        clock.set(10);
        fn read(clock: impl Clock) -> u64 {
            clock.now_ns()
        }
        assert_eq!(read(&clock), 150, "a shared reference is a clock too");
        clock.advance(u64::MAX);
        assert_eq!(clock.now_ns(), u64::MAX);
    }

    #[test]
    fn tsc_ticks_convert_to_nanoseconds() {
        let clock = TscClock::new(50_000_000);
        assert_eq!(clock.ticks_to_ns(50_000_000), NS_PER_SEC);
        assert_eq!(clock.ticks_to_ns(1), 20);
        assert_eq!(TscClock::new(3_500_000_000).ticks_to_ns(7), 2);
        assert_eq!(
            TscClock::new(3_500_000_000).ticks_to_ns(3_500_000_000),
            NS_PER_SEC
        );
        assert_eq!(
            TscClock::new(3_500_000_000).ticks_to_ns(3_500_000_001),
            NS_PER_SEC
        );
        assert_eq!(TscClock::new(1).ticks_to_ns(u64::MAX), u64::MAX);
        assert_eq!(TscClock::new(0).hz(), 1);
    }
}
