//! QEMU-compatible test devices, so that test kernels written for
//! `qemu-system-x86_64 -kernel` run unchanged.
//!
//! This crate owns:
//! - [`debug_exit`]: QEMU's `isa-debug-exit` (a write of N asks to exit with
//!   status `(N << 1) | 1`);
//! - [`fw_cfg`]: QEMU's firmware configuration device on its legacy I/O ports
//!   (selector 0x510, data 0x511), with a file directory of borrowed blobs;
//! - [`pc_testdev`]: QEMU's `pc-testdev` (scratch ports, page flush port,
//!   interrupt-line ports, a 64 KiB RAM-like MMIO window);
//! - [`shutdown`]: the Bochs port 0x8900 "Shutdown" convention;
//! - [`port_bus`]: a small fixed-capacity table routing I/O ports to devices.
//!
//! Exit and shutdown requests are plain state: the device cannot stop a vCPU,
//! so the appliance polls (`take_*`) after dispatching an access.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod debug_exit;
pub mod fw_cfg;
pub mod pc_testdev;
pub mod port_bus;
pub mod shutdown;

#[cfg(test)]
mod test_support;
