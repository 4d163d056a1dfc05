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
//!
//! Exit and shutdown requests are plain state: the device cannot stop a vCPU,
//! so the appliance polls (`take_*`) after dispatching an access.
//!
//! # Wiring
//!
//! ```
//! use ponte_kernel::device::{AccessWidth, Mmio, PortIo};
//! use ponte_kernel::irq::InterruptLine;
//! use ponte_qemu_devices::debug_exit::DebugExit;
//! use ponte_qemu_devices::fw_cfg::{self, FwCfg};
//! use ponte_qemu_devices::pc_testdev::{self, PcTestDev};
//! use ponte_kernel::bus::PortBus;
//! use ponte_qemu_devices::shutdown::{ShutdownPort, SHUTDOWN_PORT};
//!
//! /// The integrator's handle on one interrupt router input.
//! struct Gsi(u8);
//! impl InterruptLine for Gsi {
//!     fn set_level(&self, _asserted: bool) { /* drive router input self.0 */ }
//!     fn pulse(&self) {}
//! }
//!
//! static E820: [u8; 20] = [0; 20];
//! let mut iomem = [0u8; pc_testdev::IOMEM_LEN]; // a static buffer in an image
//!
//! let mut exit = DebugExit::standard();
//! let mut fw: FwCfg<'_, 4> = FwCfg::new(256 << 20, 1);
//! fw.add_file("etc/e820", &E820).unwrap();
//! let mut testdev = PcTestDev::new(core::array::from_fn(|n| Some(Gsi(n as u8))), &mut iomem);
//! let mut shutdown = ShutdownPort::new();
//!
//! let mut bus: PortBus<8> = PortBus::new();
//! bus.add(0xf4, 4, 0).unwrap();
//! bus.add(fw_cfg::SELECTOR_PORT, 2, 1).unwrap();
//! for (first, count) in pc_testdev::PORT_RANGES {
//!     bus.add(first, count, 2).unwrap();
//! }
//! bus.add(SHUTDOWN_PORT, 1, 3).unwrap();
//!
//! // An I/O exit: the guest wrote 0 to port 0xf4.
//! let mut devices: [&mut dyn PortIo; 4] = [&mut exit, &mut fw, &mut testdev, &mut shutdown];
//! bus.write(&mut devices, 0xf4, AccessWidth::Byte, 0);
//! // An MMIO exit inside pc-testdev's window.
//! let gpa = pc_testdev::IOMEM_BASE + 0x10;
//! testdev.mmio_write(gpa - pc_testdev::IOMEM_BASE, AccessWidth::Dword, 7);
//!
//! // After dispatch, the appliance polls for requests to end the run.
//! let request = exit.take_exit_request().unwrap();
//! assert_eq!(request.process_exit_code(), 1); // what `qemu ... ; echo $?` prints
//! assert!(!shutdown.take_shutdown_request());
//! ```
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod debug_exit;
pub mod fw_cfg;
pub mod pc_testdev;
pub mod shutdown;

#[cfg(test)]
mod test_support;
