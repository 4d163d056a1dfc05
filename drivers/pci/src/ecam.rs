//! The enhanced configuration access mechanism (ECAM, PCI Express "MMCONFIG"):
//! every function's configuration space as 4 KiB of memory.
//!
//! Inside the window the integrator maps (and describes to the guest in an
//! ACPI MCFG table, reserved in its memory map), the byte at offset
//! `bus << 20 | device << 15 | function << 12 | register` is byte `register`
//! of that function's configuration space. The first 256 bytes are the same
//! registers configuration mechanism #1 reaches; the extended space above
//! them reads as zero for a function that exists (an extended capability
//! header of zero ends the list: no extended capabilities) and drops writes.
//! Absent functions read all ones, as with mechanism #1.
//!
//! Configuration requests are at most a dword: a quadword access is served
//! as its two dwords, and an access that crosses a dword boundary is cut
//! there like in [`PciBus::config_read`].

use ponte_kernel::device::AccessWidth;

use crate::bus::PciBus;
use crate::function::PciAddress;

/// Bytes of window per bus: 32 devices × 8 functions × 4 KiB.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

/// Bytes of configuration space per function in the ECAM window.
const FUNCTION_SPACE: u64 = 1 << 12;

/// The conventional (mechanism #1) part of a function's space.
const CONVENTIONAL_SPACE: u64 = 0x100;

/// Which function and register an ECAM window offset names, if the bus
/// number fits (windows cover at most 256 buses).
fn decode(offset: u64) -> Option<(PciAddress, u64)> {
    let bus = u8::try_from(offset >> 20).ok()?;
    let device = ((offset >> 15) & 0x1F) as u8;
    let function = ((offset >> 12) & 0x7) as u8;
    Some((
        PciAddress::new(bus, device, function)?,
        offset % FUNCTION_SPACE,
    ))
}

impl<const N: usize> PciBus<'_, N> {
    /// A read at `offset` inside the ECAM window (whose offset 0 is bus 0,
    /// device 0, function 0).
    pub fn ecam_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        if width == AccessWidth::Qword {
            let low = self.ecam_read(offset, AccessWidth::Dword);
            let high = offset.checked_add(4).map_or(u64::from(u32::MAX), |o| {
                self.ecam_read(o, AccessWidth::Dword)
            });
            return low | high << 32;
        }
        let Some((address, register)) = decode(offset) else {
            return width.mask();
        };
        if register < CONVENTIONAL_SPACE {
            return u64::from(self.config_read(address, register as u8, width));
        }
        if self.has_function(address) {
            0
        } else {
            width.mask()
        }
    }

    /// A write at `offset` inside the ECAM window.
    pub fn ecam_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
        if width == AccessWidth::Qword {
            self.ecam_write(offset, AccessWidth::Dword, value & 0xFFFF_FFFF);
            if let Some(high) = offset.checked_add(4) {
                self.ecam_write(high, AccessWidth::Dword, value >> 32);
            }
            return;
        }
        if let Some((address, register)) = decode(offset) {
            if register < CONVENTIONAL_SPACE {
                self.config_write(address, register as u8, width, value as u32);
            }
        }
    }
}
