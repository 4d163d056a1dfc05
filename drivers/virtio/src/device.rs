//! The contract between a virtio transport and a device type.
//!
//! The transport ([`crate::pci`]) owns what every virtio device shares: the
//! device status, feature negotiation, the queues' configuration and the
//! interrupt. A device type owns its feature bits, its configuration space
//! and what a buffer in its queues means.

use core::fmt;

use ponte_kernel::memory::GuestMemory;

use crate::block::BlockRequestError;
use crate::queue::{QueueError, SplitQueue};

/// Device status bits (virtio 1.1, section 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: queues may be used.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const NEEDS_RESET: u8 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Feature bits the transport offers or requires.
pub mod features {
    /// Indirect descriptors (VIRTIO_RING_F_INDIRECT_DESC).
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// Used/available event indexes (VIRTIO_RING_F_EVENT_IDX); not offered.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// Virtio 1.x (VIRTIO_F_VERSION_1); required by the modern interface.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Why a device stopped: it is in NEEDS_RESET until the driver resets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// A queue or chain was malformed.
    Queue {
        /// The queue index.
        queue: u16,
        /// What was wrong.
        error: QueueError,
    },
    /// A block request was malformed.
    Block(BlockRequestError),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queue { queue, error } => write!(f, "queue {queue}: {error}"),
            Self::Block(e) => write!(f, "block request: {e}"),
        }
    }
}

/// A virtio device type behind a transport.
pub trait VirtioDevice {
    /// The virtio device ID (2 for a block device).
    fn device_type(&self) -> u16;

    /// PCI base class, sub-class and programming interface.
    fn pci_class(&self) -> (u8, u8, u8);

    /// The device-specific feature bits offered (bits 0..=23 and above 40);
    /// the transport adds its own.
    fn device_features(&self) -> u64;

    /// Number of queues.
    fn queue_count(&self) -> u16;

    /// Largest size of queue `index`.
    fn queue_max_size(&self, index: u16) -> u16;

    /// Length of the device configuration space in bytes.
    fn config_len(&self) -> u64;

    /// Reads configuration bytes at `offset`; bytes past the end read zero.
    fn config_read(&self, offset: u64, data: &mut [u8]);

    /// Writes configuration bytes at `offset` (read-only fields ignore it).
    fn config_write(&mut self, offset: u64, data: &[u8]);

    /// The driver set DRIVER_OK with `features` negotiated.
    fn activate(&mut self, features: u64);

    /// The driver reset the device.
    fn reset(&mut self);

    /// Handles every buffer the driver made available in queue `index` (at
    /// most the queue size of them) and returns how many it used. On an
    /// error the chain being handled is not returned to the driver.
    fn process_queue<M: GuestMemory>(
        &mut self,
        index: u16,
        queue: &mut SplitQueue,
        mem: &M,
    ) -> Result<u16, DeviceError>;
}
