//! Virtio devices over PCI.
#![no_std]
#![deny(missing_docs)]
