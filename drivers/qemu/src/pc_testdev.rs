//! QEMU's `pc-testdev` (hw/misc/pc-testdev.c), used by kvm-unit-tests.
//!
//! Ports and window, as QEMU maps them:
//! - 0xe0-0xe3, "ioport": a 32-bit scratch register. An access of width N at
//!   port 0xe0 + k reads or writes bytes k..k+N of it (little-endian); QEMU
//!   rejects unaligned accesses, so those are dropped (reads return all ones).
//! - 0xe4, "flush page": a 32-bit write of a guest-physical address. QEMU
//!   maps that page on the host and `mprotect`s it to PROT_NONE and back,
//!   which makes KVM drop its mapping of the page (through its MMU notifier)
//!   so the next guest access faults and refills it: a test of the
//!   hypervisor's second-level mapping invalidation, not of guest-visible
//!   state, since the page's contents do not change. Here the guest memory
//!   mapping is static, so the write is accepted and has no effect on the
//!   guest; the page address is kept for an integrator that wants to
//!   invalidate its EPT entry ([`PcTestDev::take_flushed_page`]). Only
//!   32-bit writes are valid; reads return 0.
//! - 0xe8-0xeb, "ioport-byte": the same scratch register, reached through an
//!   interface QEMU implements byte by byte; the guest sees the same result.
//! - 0x2000-0x2017, "irq-line": a byte write to 0x2000 + n sets interrupt
//!   line n to `value != 0`. Only byte accesses are valid. Reads return 0 in
//!   QEMU, and do here; the current levels are available to the integrator
//!   through [`PcTestDev::line_level`]. (QEMU takes n from its ISA IRQs and
//!   aborts for n > 15; here lines 16-23 reach whatever the integrator
//!   supplies, typically IOAPIC pins.)
//! - guest-physical 0xff000000, "iomem": 64 KiB of RAM-like storage behind
//!   MMIO, little-endian accesses of 1, 2, 4 or 8 bytes. Bytes of an access
//!   beyond the window read as 0 and are not written.

use ponte_kernel::device::{AccessWidth, Mmio, PortIo};
use ponte_kernel::irq::InterruptLine;

/// First scratch port.
pub const SCRATCH_PORT: u16 = 0xe0;
/// Flush-page port.
pub const FLUSH_PORT: u16 = 0xe4;
/// First port of the byte-wise scratch interface.
pub const SCRATCH_BYTE_PORT: u16 = 0xe8;
/// First interrupt-line port.
pub const IRQ_PORT: u16 = 0x2000;
/// Number of interrupt-line ports.
pub const IRQ_LINES: usize = 24;
/// Guest-physical base of the MMIO window.
pub const IOMEM_BASE: u64 = 0xff00_0000;
/// Size of the MMIO window.
pub const IOMEM_LEN: usize = 0x1_0000;

/// The port ranges the device decodes, as `(first port, count)`, for
/// registering it with a port dispatcher.
pub const PORT_RANGES: [(u16, u16); 4] = [
    (SCRATCH_PORT, 4),
    (FLUSH_PORT, 4),
    (SCRATCH_BYTE_PORT, 4),
    (IRQ_PORT, IRQ_LINES as u16),
];

/// The `pc-testdev` device, driving up to 24 integrator-supplied lines.
///
/// The 64 KiB behind the MMIO window are borrowed from the integrator (a
/// static buffer, say), so the device itself stays small enough to live on
/// a hypervisor stack.
pub struct PcTestDev<'m, L: InterruptLine> {
    scratch: u32,
    flushed_page: Option<u64>,
    lines: [Option<L>; IRQ_LINES],
    levels: [bool; IRQ_LINES],
    iomem: &'m mut [u8; IOMEM_LEN],
}

impl<'m, L: InterruptLine> PcTestDev<'m, L> {
    /// A device whose interrupt-line port n drives `lines[n]` (writes to a
    /// port without a line only record the level) and whose MMIO window is
    /// backed by `iomem`, zeroed here as QEMU's starts out.
    pub fn new(lines: [Option<L>; IRQ_LINES], iomem: &'m mut [u8; IOMEM_LEN]) -> Self {
        iomem.fill(0);
        Self {
            scratch: 0,
            flushed_page: None,
            lines,
            levels: [false; IRQ_LINES],
            iomem,
        }
    }

    /// The level the guest last set on line `n` (false for n >= 24).
    pub fn line_level(&self, n: usize) -> bool {
        self.levels.get(n).copied().unwrap_or(false)
    }

    /// The page (4 KiB aligned guest-physical address) the guest last asked
    /// to flush, if any; clears it.
    pub fn take_flushed_page(&mut self) -> Option<u64> {
        self.flushed_page.take()
    }

    /// The 32-bit scratch register.
    pub fn scratch(&self) -> u32 {
        self.scratch
    }

    /// Scratch access at byte `k` of the register; None when QEMU would
    /// reject it as unaligned.
    fn scratch_mask(k: u16, width: AccessWidth) -> Option<(u32, u32)> {
        let bytes = width.bytes() as u16;
        if bytes > 4 || !k.is_multiple_of(bytes) {
            return None;
        }
        let shift = u32::from(k) * 8;
        let mask = (width.mask() as u32) << shift;
        Some((mask, shift))
    }

    fn scratch_read(&self, k: u16, width: AccessWidth) -> u32 {
        match Self::scratch_mask(k, width) {
            Some((mask, shift)) => (self.scratch & mask) >> shift,
            None => u32::MAX,
        }
    }

    fn scratch_write(&mut self, k: u16, width: AccessWidth, value: u32) {
        if let Some((mask, shift)) = Self::scratch_mask(k, width) {
            self.scratch = (self.scratch & !mask) | ((value << shift) & mask);
        }
    }

    fn set_line(&mut self, n: usize, level: bool) {
        if let Some(slot) = self.levels.get_mut(n) {
            *slot = level;
            if let Some(Some(line)) = self.lines.get(n) {
                line.set_level(level);
            }
        }
    }
}

impl<L: InterruptLine> PortIo for PcTestDev<'_, L> {
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        match port {
            0xe0..=0xe3 => self.scratch_read(port - SCRATCH_PORT, width),
            0xe8..=0xeb => self.scratch_read(port - SCRATCH_BYTE_PORT, width),
            FLUSH_PORT => 0,
            0x2000..=0x2017 if width == AccessWidth::Byte => 0,
            _ => u32::MAX,
        }
    }

    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        match port {
            0xe0..=0xe3 => self.scratch_write(port - SCRATCH_PORT, width, value),
            0xe8..=0xeb => self.scratch_write(port - SCRATCH_BYTE_PORT, width, value),
            FLUSH_PORT if width == AccessWidth::Dword => {
                self.flushed_page = Some(u64::from(value) & !0xfff);
            }
            0x2000..=0x2017 if width == AccessWidth::Byte => {
                self.set_line(usize::from(port - IRQ_PORT), value as u8 != 0);
            }
            _ => {}
        }
    }
}

impl<L: InterruptLine> Mmio for PcTestDev<'_, L> {
    fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        let mut value = 0u64;
        for i in 0..width.bytes() {
            let byte = offset
                .checked_add(i as u64)
                .and_then(|a| usize::try_from(a).ok())
                .and_then(|a| self.iomem.get(a))
                .copied()
                .unwrap_or(0);
            value |= u64::from(byte) << (8 * i);
        }
        value
    }

    fn mmio_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
        for i in 0..width.bytes() {
            let slot = offset
                .checked_add(i as u64)
                .and_then(|a| usize::try_from(a).ok())
                .and_then(|a| self.iomem.get_mut(a));
            if let Some(slot) = slot {
                *slot = (value >> (8 * i)) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::RecordingLine;
    use std::boxed::Box;
    use std::vec;

    fn device() -> (
        PcTestDev<'static, RecordingLine>,
        [RecordingLine; IRQ_LINES],
    ) {
        let lines: [RecordingLine; IRQ_LINES] = core::array::from_fn(|_| RecordingLine::default());
        let mut iomem: Box<[u8; IOMEM_LEN]> = vec![0xee; IOMEM_LEN].try_into().unwrap();
        iomem[0x100] = 0x77;
        let dev = PcTestDev::new(
            core::array::from_fn(|i| {
                if i == 23 {
                    None
                } else {
                    Some(lines[i].clone())
                }
            }),
            Box::leak(iomem),
        );
        (dev, lines)
    }

    #[test]
    fn iomem_starts_zeroed() {
        let (mut d, _) = device();
        assert_eq!(d.mmio_read(0x100, AccessWidth::Qword), 0);
        assert_eq!(d.mmio_read(0xfff8, AccessWidth::Qword), 0);
    }

    #[test]
    fn scratch_reads_back_per_width_and_offset() {
        let (mut d, _) = device();
        d.io_write(0xe0, AccessWidth::Dword, 0x1122_3344);
        assert_eq!(d.io_read(0xe0, AccessWidth::Dword), 0x1122_3344);
        assert_eq!(d.io_read(0xe0, AccessWidth::Byte), 0x44);
        assert_eq!(d.io_read(0xe1, AccessWidth::Byte), 0x33);
        assert_eq!(d.io_read(0xe3, AccessWidth::Byte), 0x11);
        assert_eq!(d.io_read(0xe2, AccessWidth::Word), 0x1122);
        d.io_write(0xe2, AccessWidth::Byte, 0xaa);
        assert_eq!(d.io_read(0xe0, AccessWidth::Dword), 0x11aa_3344);
        d.io_write(0xe0, AccessWidth::Word, 0xbeef);
        assert_eq!(d.io_read(0xe0, AccessWidth::Dword), 0x11aa_beef);
        assert_eq!(d.scratch(), 0x11aa_beef);
    }

    #[test]
    fn byte_scratch_ports_share_the_register() {
        let (mut d, _) = device();
        d.io_write(0xe8, AccessWidth::Dword, 0xcafe_f00d);
        assert_eq!(d.io_read(0xe0, AccessWidth::Dword), 0xcafe_f00d);
        d.io_write(0xe1, AccessWidth::Byte, 0x12);
        assert_eq!(d.io_read(0xe9, AccessWidth::Byte), 0x12);
        assert_eq!(d.io_read(0xea, AccessWidth::Word), 0xcafe);
    }

    #[test]
    fn unaligned_scratch_accesses_are_rejected_like_qemu() {
        let (mut d, _) = device();
        d.io_write(0xe0, AccessWidth::Dword, 0x1122_3344);
        d.io_write(0xe1, AccessWidth::Word, 0xffff);
        d.io_write(0xe2, AccessWidth::Dword, 0xffff_ffff);
        assert_eq!(d.io_read(0xe0, AccessWidth::Dword), 0x1122_3344);
        assert_eq!(d.io_read(0xe3, AccessWidth::Word), u32::MAX);
    }

    #[test]
    fn flush_port_takes_a_dword_address_and_changes_nothing_visible() {
        let (mut d, _) = device();
        d.io_write(0xe0, AccessWidth::Dword, 7);
        d.io_write(FLUSH_PORT, AccessWidth::Byte, 0x1234);
        assert_eq!(d.take_flushed_page(), None, "only 32-bit writes are valid");
        d.io_write(FLUSH_PORT, AccessWidth::Dword, 0x0012_3456);
        assert_eq!(d.take_flushed_page(), Some(0x0012_3000));
        assert_eq!(d.take_flushed_page(), None);
        assert_eq!(d.io_read(FLUSH_PORT, AccessWidth::Dword), 0);
        assert_eq!(d.io_read(0xe0, AccessWidth::Dword), 7);
    }

    #[test]
    fn irq_ports_raise_and_lower_their_lines() {
        let (mut d, lines) = device();
        d.io_write(0x2004, AccessWidth::Byte, 1);
        assert_eq!(lines[4].transitions(), [true]);
        assert!(d.line_level(4));
        d.io_write(0x2004, AccessWidth::Byte, 0x80);
        d.io_write(0x2004, AccessWidth::Byte, 0);
        assert_eq!(lines[4].transitions(), [true, true, false]);
        assert!(!d.line_level(4));
        // Only the low byte counts: 0x100 is a zero byte.
        d.io_write(0x2010, AccessWidth::Byte, 0x100);
        assert_eq!(lines[16].transitions(), [false]);
        d.io_write(0x2016, AccessWidth::Byte, 0xff);
        assert!(lines[22].level());
        assert_eq!(
            d.io_read(0x2016, AccessWidth::Byte),
            0,
            "reads return 0 as in QEMU"
        );
        // A port without a line still records the level.
        d.io_write(0x2017, AccessWidth::Byte, 1);
        assert!(d.line_level(23));
    }

    #[test]
    fn irq_ports_accept_bytes_only() {
        let (mut d, lines) = device();
        d.io_write(0x2001, AccessWidth::Word, 0x0101);
        d.io_write(0x2002, AccessWidth::Dword, 1);
        assert!(lines.iter().all(|l| l.transitions().is_empty()));
        assert_eq!(d.io_read(0x2001, AccessWidth::Word), u32::MAX);
        assert!(!d.line_level(99));
    }

    #[test]
    fn iomem_is_little_endian_ram_for_all_widths() {
        let (mut d, _) = device();
        d.mmio_write(0x10, AccessWidth::Qword, 0x0807_0605_0403_0201);
        assert_eq!(d.mmio_read(0x10, AccessWidth::Byte), 0x01);
        assert_eq!(d.mmio_read(0x11, AccessWidth::Word), 0x0302);
        assert_eq!(d.mmio_read(0x13, AccessWidth::Dword), 0x0706_0504);
        assert_eq!(d.mmio_read(0x10, AccessWidth::Qword), 0x0807_0605_0403_0201);
        d.mmio_write(0x12, AccessWidth::Word, 0xaabb);
        assert_eq!(d.mmio_read(0x10, AccessWidth::Dword), 0xaabb_0201);
        d.mmio_write(0xfff8, AccessWidth::Qword, u64::MAX);
        assert_eq!(d.mmio_read(0xfff8, AccessWidth::Qword), u64::MAX);
    }

    #[test]
    fn iomem_accesses_beyond_the_window_are_clean() {
        let (mut d, _) = device();
        d.mmio_write(0xfffe, AccessWidth::Dword, 0x4433_2211);
        assert_eq!(
            d.mmio_read(0xfffe, AccessWidth::Dword),
            0x2211,
            "bytes past 64 KiB read 0"
        );
        assert_eq!(d.mmio_read(0xfffe, AccessWidth::Word), 0x2211);
        d.mmio_write(0x1_0000, AccessWidth::Byte, 5);
        assert_eq!(d.mmio_read(0x1_0000, AccessWidth::Byte), 0);
        d.mmio_write(u64::MAX, AccessWidth::Qword, u64::MAX);
        assert_eq!(d.mmio_read(u64::MAX - 1, AccessWidth::Qword), 0);
        assert_eq!(
            d.mmio_read(0, AccessWidth::Qword),
            0,
            "nothing wrapped to the start"
        );
    }
}
