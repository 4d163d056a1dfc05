//! A PCI bus as a PC guest sees it: one host bridge, one bus, a fixed number
//! of functions.
//!
//! - [`header`]: the type-0 configuration header every function presents:
//!   identification, command/status, base address registers (BARs) with the
//!   size-probing protocol, interrupt line/pin and the capability list.
//! - [`function`]: the [`PciFunction`] contract between the bus and a device
//!   model, and [`PciAddress`].
//! - [`bus`]: [`PciBus`], configuration mechanism #1 (ports `0xCF8` and
//!   `0xCFC..=0xCFF`) as a [`ponte_kernel::device::PortIo`] device, routing
//!   of memory and I/O accesses to the BARs wherever the guest placed them,
//!   and a firmware-style BAR assignment.
//! - [`ecam`]: the same configuration spaces as a memory window (ECAM),
//!   which guests find through an ACPI MCFG table.
//! - [`host_bridge`]: the host bridge itself at 00:00.0.
//! - [`intx`]: legacy INTx pins and the routing the integrator describes to
//!   the guest.
//!
//! The bus is no heap and no dynamic allocation: its capacity is the const
//! parameter `N`, and functions are borrowed `&mut dyn PciFunction`.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod bus;
pub mod ecam;
pub mod function;
pub mod header;
pub mod host_bridge;
pub mod intx;

pub use bus::{BusError, PciBus, CONFIG_ADDRESS_PORT, CONFIG_DATA_PORT};
pub use ecam::ECAM_BUS_SIZE;
pub use function::{PciAddress, PciFunction};
pub use header::{BarKind, BarRegion, ConfigHeader, HeaderError, PciIds};
pub use host_bridge::HostBridge;
pub use intx::InterruptPin;

#[cfg(test)]
mod tests;
