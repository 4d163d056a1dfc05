//! The hardware-independent core of ponte.
//!
//! This crate owns everything a hypervisor does that is not a privileged
//! instruction: the guest's physical address space and safe access to it
//! ([`memory`]), the contracts between the core and device models
//! ([`device`]), interrupt lines and their routing ([`irq`]) and the notion of
//! time shared by timers ([`time`]). It builds for `x86_64-unknown-none` and is
//! tested on the host.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod bus;
pub mod cpu_state;
pub mod cpuid;
pub mod decode;
pub mod device;
pub mod irq;
pub mod loader;
pub mod memory;
pub mod mmio_devices;
pub mod msr;
pub mod time;
pub mod vcpu;
pub mod vm;
