//! A board's MMIO devices as one [`MmioBus`]: a slice of `&mut dyn Mmio`
//! addressed by index, for boards whose [`crate::memory::GuestLayout`] names
//! each MMIO region by the index of its device. This is what a board hands
//! to [`crate::decode::mmio::handle_ept_violation`] in its
//! [`crate::vcpu::Platform::ept_violation`].
//!
//! An index without a device behaves as an empty bus: reads return all
//! ones, writes are dropped. Values passed either way are cut to the
//! access width.

use crate::decode::mmio::MmioBus;
use crate::device::{AccessWidth, Mmio};

/// Devices addressed by their index in a slice.
pub struct MmioDevices<'s, 'd> {
    devices: &'s mut [&'d mut dyn Mmio],
}

impl<'s, 'd> MmioDevices<'s, 'd> {
    /// The bus over `devices`: layout device id `i` is `devices[i]`.
    pub fn new(devices: &'s mut [&'d mut dyn Mmio]) -> Self {
        Self { devices }
    }
}

impl MmioBus<usize> for MmioDevices<'_, '_> {
    fn mmio_read(&mut self, device: usize, offset: u64, width: AccessWidth) -> u64 {
        match self.devices.get_mut(device) {
            Some(d) => d.mmio_read(offset, width) & width.mask(),
            None => width.mask(),
        }
    }

    fn mmio_write(&mut self, device: usize, offset: u64, width: AccessWidth, value: u64) {
        if let Some(d) = self.devices.get_mut(device) {
            d.mmio_write(offset, width, value & width.mask());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::mmio::emulate;
    use crate::decode::{decode, CpuMode};
    use crate::memory::GuestLayout;
    use core::cell::Cell;
    use std::vec;
    use std::vec::Vec;

    /// Records what it sees; reads return `fill`.
    struct Recorder {
        fill: u64,
        seen: Vec<(bool, u64, AccessWidth, u64)>,
    }

    impl Mmio for Recorder {
        fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
            self.seen.push((false, offset, width, self.fill));
            self.fill
        }
        fn mmio_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
            self.seen.push((true, offset, width, value));
        }
    }

    #[test]
    fn accesses_reach_the_device_the_layout_names_cut_to_width() {
        let mut ram = vec![0u8; 0x1000];
        let cells = Cell::from_mut(&mut ram[..]).as_slice_of_cells();
        let mut layout: GuestLayout<&[Cell<u8>], usize, 4> = GuestLayout::new();
        layout.add_ram(0, cells).unwrap();
        layout.add_mmio(0xfe00_0000, 0x1000, 0).unwrap();
        layout.add_mmio(0xfe00_1000, 0x1000, 1).unwrap();
        layout.add_mmio(0xfe00_2000, 0x1000, 7).unwrap();
        let mut a = Recorder {
            fill: 0x1111_2222_3333_4444,
            seen: Vec::new(),
        };
        let mut b = Recorder {
            fill: 0xffff_ffff_ffff_ff80,
            seen: Vec::new(),
        };
        let regs = Default::default();
        // mov eax, [rdi]: a dword read of a device that returns more bits.
        let load = decode(&[0x8b, 0x07], CpuMode::Bits64).unwrap();
        // mov byte [rdi], 0xab
        let store = decode(&[0xc6, 0x07, 0xab], CpuMode::Bits64).unwrap();
        {
            let mut devices: [&mut dyn Mmio; 2] = [&mut a, &mut b];
            let mut bus = MmioDevices::new(&mut devices);
            let wb = emulate(&layout, &mut bus, 0xfe00_1010, &load, &regs).unwrap();
            assert_eq!(wb.registers.gpr[0], 0xffff_ff80);
            emulate(&layout, &mut bus, 0xfe00_0004, &store, &regs).unwrap();
            // Device id 7 has no device: all ones, nothing recorded.
            let wb = emulate(&layout, &mut bus, 0xfe00_2000, &load, &regs).unwrap();
            assert_eq!(wb.registers.gpr[0], 0xffff_ffff);
            assert_eq!(wb.unclaimed, None, "the region is claimed by the layout");
            emulate(&layout, &mut bus, 0xfe00_2000, &store, &regs).unwrap();
            // Direct calls cut values to the access width.
            bus.mmio_write(1, 8, AccessWidth::Word, 0x1234_5678);
            assert_eq!(bus.mmio_read(0, 0, AccessWidth::Byte), 0x44);
        }
        assert_eq!(
            a.seen,
            [
                (true, 4, AccessWidth::Byte, 0xab),
                (false, 0, AccessWidth::Byte, 0x1111_2222_3333_4444)
            ]
        );
        assert_eq!(
            b.seen,
            [
                (false, 0x10, AccessWidth::Dword, 0xffff_ffff_ffff_ff80),
                (true, 8, AccessWidth::Word, 0x5678)
            ]
        );
    }
}
