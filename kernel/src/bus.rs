//! Routing I/O ports to devices: a fixed-capacity table of port ranges.
//!
//! The bus holds no devices, only `(first port, count, device index)`
//! entries; dispatch takes the integrator's devices as a slice of
//! `&mut dyn PortIo` and calls the one whose range holds the port, so one
//! device may own several ranges (pc-testdev has four). Ports nobody claims
//! read as all ones and drop writes, as on an ISA bus.

use crate::device::{AccessWidth, PortIo};

/// Why a range could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortBusError {
    /// The range is empty or runs past port 0xffff.
    BadRange {
        /// First port.
        first: u16,
        /// Number of ports.
        count: u16,
    },
    /// The range overlaps one already added.
    Overlap {
        /// First port of the existing range.
        existing_first: u16,
        /// Its number of ports.
        existing_count: u16,
    },
    /// The table is full.
    Full {
        /// The table's capacity.
        capacity: usize,
    },
}

#[derive(Clone, Copy, Debug)]
struct Range {
    first: u16,
    count: u16,
    device: usize,
}

impl Range {
    fn contains(&self, port: u16) -> bool {
        port >= self.first && port - self.first < self.count
    }
}

/// Up to `N` port ranges, each routed to a device index.
#[derive(Debug)]
pub struct PortBus<const N: usize> {
    ranges: [Option<Range>; N],
    len: usize,
}

impl<const N: usize> Default for PortBus<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PortBus<N> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            ranges: [None; N],
            len: 0,
        }
    }

    /// Routes ports `first..first + count` to device `device` (an index into
    /// the slice given to [`PortBus::read`] and [`PortBus::write`]).
    pub fn add(&mut self, first: u16, count: u16, device: usize) -> Result<(), PortBusError> {
        let last = u32::from(first) + u32::from(count);
        if count == 0 || last > 0x1_0000 {
            return Err(PortBusError::BadRange { first, count });
        }
        for r in self
            .ranges
            .get(..self.len)
            .unwrap_or_default()
            .iter()
            .flatten()
        {
            let r_last = u32::from(r.first) + u32::from(r.count);
            if u32::from(first) < r_last && u32::from(r.first) < last {
                return Err(PortBusError::Overlap {
                    existing_first: r.first,
                    existing_count: r.count,
                });
            }
        }
        let slot = self
            .ranges
            .get_mut(self.len)
            .ok_or(PortBusError::Full { capacity: N })?;
        *slot = Some(Range {
            first,
            count,
            device,
        });
        self.len += 1;
        Ok(())
    }

    /// The device index owning `port`.
    pub fn lookup(&self, port: u16) -> Option<usize> {
        self.ranges
            .get(..self.len)
            .unwrap_or_default()
            .iter()
            .flatten()
            .find(|r| r.contains(port))
            .map(|r| r.device)
    }

    /// Reads `port` from its device; all ones (of the width) when unclaimed
    /// or when the index has no device in `devices`.
    pub fn read(&self, devices: &mut [&mut dyn PortIo], port: u16, width: AccessWidth) -> u32 {
        match self.lookup(port).and_then(|i| devices.get_mut(i)) {
            Some(dev) => dev.io_read(port, width),
            None => width.mask() as u32,
        }
    }

    /// Writes `port` on its device; dropped when unclaimed.
    pub fn write(
        &self,
        devices: &mut [&mut dyn PortIo],
        port: u16,
        width: AccessWidth,
        value: u32,
    ) {
        if let Some(dev) = self.lookup(port).and_then(|i| devices.get_mut(i)) {
            dev.io_write(port, width, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{vec, vec::Vec};

    /// Records every access with the port it saw; reads return the port.
    #[derive(Default)]
    struct Recorder(Vec<(u16, AccessWidth, Option<u32>)>);

    impl PortIo for Recorder {
        fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
            self.0.push((port, width, None));
            u32::from(port)
        }
        fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
            self.0.push((port, width, Some(value)));
        }
    }

    #[test]
    fn routes_ports_to_their_devices() {
        let mut bus: PortBus<4> = PortBus::new();
        bus.add(0xf4, 4, 0).unwrap();
        bus.add(0x8900, 1, 1).unwrap();
        bus.add(0x20, 2, 1).unwrap();
        let (mut first, mut second) = (Recorder::default(), Recorder::default());
        {
            let mut devices: [&mut dyn PortIo; 2] = [&mut first, &mut second];
            bus.write(&mut devices, 0xf6, AccessWidth::Byte, 1);
            bus.write(&mut devices, 0x8900, AccessWidth::Word, 0x53);
            assert_eq!(bus.read(&mut devices, 0x21, AccessWidth::Byte), 0x21);
            assert_eq!(
                bus.read(&mut devices, 0x80, AccessWidth::Word),
                0xffff,
                "nobody at 0x80"
            );
            bus.write(&mut devices, 0x80, AccessWidth::Byte, 1);
        }
        assert_eq!(first.0, vec![(0xf6, AccessWidth::Byte, Some(1))]);
        assert_eq!(
            second.0,
            vec![
                (0x8900, AccessWidth::Word, Some(0x53)),
                (0x21, AccessWidth::Byte, None)
            ],
            "one device may own several ranges"
        );
    }

    #[test]
    fn rejects_overlaps_bad_ranges_and_overflow() {
        let mut bus: PortBus<2> = PortBus::new();
        bus.add(0x3f8, 8, 0).unwrap();
        assert_eq!(
            bus.add(0x3ff, 2, 1),
            Err(PortBusError::Overlap {
                existing_first: 0x3f8,
                existing_count: 8
            })
        );
        assert_eq!(
            bus.add(0x3f0, 0, 1),
            Err(PortBusError::BadRange {
                first: 0x3f0,
                count: 0
            })
        );
        assert_eq!(
            bus.add(0xffff, 2, 1),
            Err(PortBusError::BadRange {
                first: 0xffff,
                count: 2
            })
        );
        bus.add(0xffff, 1, 1).unwrap();
        assert_eq!(bus.add(0x10, 1, 2), Err(PortBusError::Full { capacity: 2 }));
        assert_eq!(bus.lookup(0xffff), Some(1));
        assert_eq!(bus.lookup(0x3f7), None);
        assert_eq!(bus.lookup(0x400), None);
        assert_eq!(bus.lookup(0x3fa), Some(0));
    }

    #[test]
    fn an_index_without_a_device_reads_all_ones() {
        let mut bus: PortBus<1> = PortBus::new();
        bus.add(0x60, 1, 5).unwrap();
        let mut devices: [&mut dyn PortIo; 0] = [];
        assert_eq!(bus.read(&mut devices, 0x60, AccessWidth::Byte), 0xff);
    }
}
