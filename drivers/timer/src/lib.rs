//! Platform timers of a PC as device models: the 8254 programmable interval
//! timer with the port 0x61 speaker/gate register ([`pit`]) and the CMOS
//! real-time clock with its NVRAM ([`rtc`]).
//!
//! Both are lazy: counts, outputs and clock registers are computed from a
//! [`ponte_kernel::time::Clock`] when the guest reads them, and each model
//! tells the run loop when its next interrupt is due (`next_event_ns`) so the
//! loop can stop the guest then (VMX-preemption timer) and call `poll`,
//! which drives the interrupt line. Lines are generic
//! ([`ponte_kernel::irq::InterruptLine`]); where they go is the router's
//! business.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

mod bcd;
pub mod pit;
pub mod rtc;
