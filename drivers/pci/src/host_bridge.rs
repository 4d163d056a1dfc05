//! The host bridge at 00:00.0.
//!
//! It carries the identification of an Intel 82441FX (440FX) PMC, class
//! "host bridge" (06/00/00), as PC guests expect to find a host bridge at
//! 00:00.0. It has no BARs and no interrupt pin; the chipset registers beyond
//! the standard header (PAM, SMRAM) are not modelled and read as zero.

use ponte_kernel::device::AccessWidth;

use crate::function::PciFunction;
use crate::header::{BarRegion, ConfigHeader, PciIds};

/// Identification of the host bridge.
pub const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor_id: 0x8086,
    device_id: 0x1237,
    revision_id: 0x02,
    class_code: 0x06,
    subclass: 0x00,
    prog_if: 0x00,
    subsystem_vendor_id: 0,
    subsystem_id: 0,
};

/// The host bridge function.
#[derive(Clone, Debug)]
pub struct HostBridge {
    header: ConfigHeader,
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBridge {
    /// A host bridge with the 440FX identification.
    pub fn new() -> Self {
        Self {
            header: ConfigHeader::new(HOST_BRIDGE_IDS),
        }
    }
}

impl PciFunction for HostBridge {
    fn config_read(&mut self, offset: u8, width: AccessWidth) -> u32 {
        self.header.read(offset, width)
    }

    fn config_write(&mut self, offset: u8, width: AccessWidth, value: u32) {
        self.header.write(offset, width, value);
    }

    fn bar_region(&self, bar: usize) -> Option<BarRegion> {
        self.header.bar_region(bar)
    }

    fn bar_read(&mut self, _bar: usize, _offset: u64, width: AccessWidth) -> u64 {
        width.mask()
    }

    fn bar_write(&mut self, _bar: usize, _offset: u64, _width: AccessWidth, _value: u64) {}
}
