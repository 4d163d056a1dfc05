//! Virtio 1.x devices for PC guests, reached over PCI.
//!
//! - [`queue`]: split virtqueues, with every driver-written index, length
//!   and flag checked ([`QueueError`]).
//! - [`device`]: the [`VirtioDevice`] contract between a transport and a
//!   device type, the device status bits and the transport feature bits.
//! - [`pci`]: the virtio PCI transport ([`VirtioPci`]): the modern interface
//!   (vendor capabilities for common, notify, ISR and device configuration
//!   in one memory BAR) and, for transitional devices, the legacy I/O BAR
//!   (left out of modern-only functions at compile time); interrupts are
//!   INTx with the ISR status register (no MSI-X).
//! - [`block`]: virtio-blk ([`VirtioBlock`]) over a [`BlockBackend`].
//!
//! Nothing allocates: queues are fixed arrays, data moves through a
//! fixed-size bounce buffer, guest memory is reached only through
//! [`ponte_kernel::memory::GuestMemory`]. A driver that breaks the rules
//! puts the device into NEEDS_RESET with the typed error kept for the
//! integrator ([`VirtioPci::last_error`]); nothing panics.
//!
//! # Wiring a disk
//!
//! The integrator adapts its disk image to [`BlockBackend`], wraps it in a
//! [`VirtioBlock`] and a [`VirtioPci`] function holding its guest memory and
//! interrupt line, attaches the function to the PCI bus, places the BARs as
//! firmware would, and registers the bus for the configuration ports, the
//! I/O window and the memory window:
//!
//! ```
//! use core::cell::Cell;
//! use ponte_kernel::device::{AccessWidth, Mmio, PortIo};
//! use ponte_kernel::irq::LineSet;
//! use ponte_kernel::memory::{GuestMemory, MemoryError};
//! use ponte_pci::bus::ResourceWindow;
//! use ponte_pci::PciBus;
//! use ponte_virtio::pci::{Transitional, VirtioPci, MODERN_BAR};
//! use ponte_virtio::{BlockBackend, VirtioBlock};
//!
//! /// Guest RAM (the image implements this over the host memory backing it).
//! #[derive(Clone, Copy)]
//! struct Ram<'a>(&'a [Cell<u8>]);
//! impl GuestMemory for Ram<'_> {
//!     fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
//!         let len = buf.len() as u64;
//!         let cells = usize::try_from(addr).ok()
//!             .and_then(|a| self.0.get(a..a.checked_add(buf.len())?))
//!             .ok_or(MemoryError::NotRam { addr, len })?;
//!         buf.iter_mut().zip(cells).for_each(|(b, c)| *b = c.get());
//!         Ok(())
//!     }
//!     fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
//!         let len = data.len() as u64;
//!         let cells = usize::try_from(addr).ok()
//!             .and_then(|a| self.0.get(a..a.checked_add(data.len())?))
//!             .ok_or(MemoryError::NotRam { addr, len })?;
//!         data.iter().zip(cells).for_each(|(b, c)| c.set(*b));
//!         Ok(())
//!     }
//! }
//!
//! /// The disk image (an appliance adapts its VHD `Disk` the same way:
//! /// `read_at`, `write_at`, `flush`, `write_zeroes` and its size).
//! struct Image([u8; 4096]);
//! impl BlockBackend for Image {
//!     type Error = ();
//!     fn capacity(&self) -> u64 { self.0.len() as u64 }
//!     fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ()> {
//!         let at = offset as usize;
//!         buf.copy_from_slice(&self.0[at..at + buf.len()]);
//!         Ok(())
//!     }
//!     fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), ()> {
//!         let at = offset as usize;
//!         self.0[at..at + data.len()].copy_from_slice(data);
//!         Ok(())
//!     }
//!     fn flush(&mut self) -> Result<(), ()> { Ok(()) }
//! }
//!
//! static LINES: LineSet<24> = LineSet::new();
//! let ram: Vec<Cell<u8>> = (0..0x10000).map(|_| Cell::new(0)).collect();
//!
//! // GSI 11 for the disk's INTA#; the board describes it as level-triggered,
//! // active low, in _PRT (device 3, pin 0 -> GSI 11) or the MP table, and
//! // firmware's interrupt line register says 11 for PIC-mode guests.
//! let mut disk = VirtioPci::new(
//!     VirtioBlock::new(Image([0; 4096]), b"ponte-vhd-0"),
//!     Ram(&ram),
//!     LINES.line(11).unwrap(),
//!     Transitional,
//! ).unwrap();
//! disk.header_mut().set_interrupt_line(11);
//!
//! let mut bus: PciBus<'_, 4> = PciBus::new();
//! let slot = bus.attach(3, 0, &mut disk).unwrap();
//! bus.assign_resources(
//!     ResourceWindow { base: 0xFE00_0000, size: 0x0080_0000 },
//!     ResourceWindow { base: 0xC000, size: 0x1000 },
//! ).unwrap();
//! bus.set_mmio_window_base(0xFE00_0000);
//!
//! // The exit dispatch sends ports 0xCF8..=0xCFF and 0xC000..=0xCFFF to the
//! // bus as a PortIo device, and 0xFE00_0000..0xFE80_0000 to it as an Mmio
//! // device (offsets relative to the window base).
//! bus.io_write(0xCF8, AccessWidth::Dword, 0x8000_1800); // 00:03.0, register 0
//! assert_eq!(bus.io_read(0xCFC, AccessWidth::Dword), 0x1001_1AF4);
//! let modern = bus.bar_region(slot, MODERN_BAR).unwrap();
//! let num_queues = Mmio::mmio_read(&mut bus, modern.base - 0xFE00_0000 + 0x12, AccessWidth::Word);
//! assert_eq!(num_queues, 1);
//!
//! // An integrator that maps BARs elsewhere watches the generation after each
//! // configuration access and re-reads `bus.regions()` when it changes.
//! let _seen = bus.generation();
//! ```
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
