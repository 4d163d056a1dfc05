//! Virtio 1.x devices for PC guests, reached over PCI.
//!
//! - [`queue`]: split virtqueues, with every driver-written index, length
//!   and flag checked ([`QueueError`]).
//! - [`device`]: the [`VirtioDevice`] contract between a transport and a
//!   device type, the device status bits and the transport feature bits.
//! - [`pci`]: the virtio PCI transport ([`VirtioPci`]): the modern interface
//!   (vendor capabilities for common, notify, ISR and device configuration
//!   in one memory BAR) and, for transitional devices, the legacy I/O BAR;
//!   interrupts are INTx with the ISR status register (no MSI-X).
//! - [`block`]: virtio-blk ([`VirtioBlock`]) over a [`BlockBackend`].
//!
//! Nothing allocates: queues are fixed arrays, data moves through a
//! fixed-size bounce buffer, guest memory is reached only through
//! [`ponte_kernel::memory::GuestMemory`]. A driver that breaks the rules
//! puts the device into NEEDS_RESET with the typed error kept for the
//! integrator ([`VirtioPci::last_error`]); nothing panics.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod block;
pub mod device;
pub mod pci;
pub mod queue;

pub use block::{BlockBackend, BlockRequestError, VirtioBlock};
pub use device::{DeviceError, VirtioDevice};
pub use pci::{VirtioPci, VirtioPciError, VirtioPciTransport};
pub use queue::{QueueError, SplitQueue};

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
