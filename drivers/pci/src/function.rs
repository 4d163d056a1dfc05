//! The contract between the bus and a PCI function, and function addresses.

use core::fmt;

use ponte_kernel::device::AccessWidth;

use crate::header::BarRegion;

/// Bus, device and function numbers of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    bus: u8,
    device: u8,
    function: u8,
}

impl PciAddress {
    /// 00:00.0, where the host bridge answers.
    pub const HOST_BRIDGE: Self = Self {
        bus: 0,
        device: 0,
        function: 0,
    };

    /// The address `bus:device.function`, if `device < 32` and `function < 8`.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Self> {
        if device < 32 && function < 8 {
            Some(Self {
                bus,
                device,
                function,
            })
        } else {
            None
        }
    }

    /// Bus number.
    pub const fn bus(self) -> u8 {
        self.bus
    }

    /// Device number (0..32).
    pub const fn device(self) -> u8 {
        self.device
    }

    /// Function number (0..8).
    pub const fn function(self) -> u8 {
        self.function
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// A PCI function as the bus sees it.
///
/// Configuration accesses never cross a dword boundary: `offset % 4 +
/// width` is at most 4, and `offset + width` at most 256. BAR accesses are
/// inside the region [`PciFunction::bar_region`] reported for `bar`, with
/// `offset` relative to its base.
pub trait PciFunction {
    /// Reads `width` bytes of configuration space at `offset`.
    fn config_read(&mut self, offset: u8, width: AccessWidth) -> u32;

    /// Writes the low `width` bytes of `value` to configuration space.
    fn config_write(&mut self, offset: u8, width: AccessWidth, value: u32);

    /// Where BAR `bar` (0..6) decodes now, or `None` if it does not decode
    /// (undefined, unassigned, or its address space disabled).
    fn bar_region(&self, bar: usize) -> Option<BarRegion>;

    /// Reads `width` bytes at `offset` inside BAR `bar`.
    fn bar_read(&mut self, bar: usize, offset: u64, width: AccessWidth) -> u64;

    /// Writes the low `width` bytes of `value` at `offset` inside BAR `bar`.
    fn bar_write(&mut self, bar: usize, offset: u64, width: AccessWidth, value: u64);
}
