//! Time as the device models and interrupt controllers see it.
//!
//! Timers (PIT, LAPIC timer, RTC) are state machines evaluated lazily: they
//! read the current time from a [`Clock`] when the guest looks at them or when
//! the hypervisor asks when the next one fires, so no host timer interrupt is
//! needed while a guest runs.

/// A monotonic source of time in nanoseconds.
pub trait Clock {
    /// Nanoseconds since an arbitrary fixed origin; never decreases.
    fn now_ns(&self) -> u64;
}
