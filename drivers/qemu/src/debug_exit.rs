//! QEMU's `isa-debug-exit` device.
//!
//! In QEMU (hw/misc/debugexit.c) a guest write of any width from 1 to 4 bytes
//! to any port of the device's range ends the emulator with exit status
//! `(value << 1) | 1`, the value being the written data of the access width;
//! the port offset is not used. Reads return 0. QEMU's defaults are
//! `iobase=0x501,iosize=2`; test kernels pass `iobase=0xf4,iosize=4`.
//!
//! Here the write records an [`ExitRequest`] that the appliance takes after
//! dispatching the access.

use ponte_kernel::device::{AccessWidth, PortIo};

/// The port test kernels use (`-device isa-debug-exit,iobase=0xf4`).
pub const DEFAULT_BASE: u16 = 0xf4;
/// The range size of our profile (`iosize=4`).
pub const DEFAULT_SIZE: u16 = 4;

/// A guest's request to end the run, as `isa-debug-exit` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRequest {
    /// The value written, masked to the access width.
    pub value: u32,
    /// The width of the write.
    pub width: AccessWidth,
    /// The port written.
    pub port: u16,
}

impl ExitRequest {
    /// The status QEMU passes to `exit()`: `(value << 1) | 1`.
    pub fn status(&self) -> u64 {
        (u64::from(self.value) << 1) | 1
    }

    /// The exit code a host shell sees for that status (its low 8 bits), e.g.
    /// 1 for a write of 0, 3 for a write of 1.
    pub fn process_exit_code(&self) -> u8 {
        self.status() as u8
    }
}

/// The `isa-debug-exit` device over `[base, base + size)`.
#[derive(Debug)]
pub struct DebugExit {
    base: u16,
    size: u16,
    request: Option<ExitRequest>,
}

impl DebugExit {
    /// A device decoding `size` ports from `base` (QEMU's `iobase`/`iosize`).
    /// The range is clipped at the end of the port space.
    pub const fn new(base: u16, size: u16) -> Self {
        Self {
            base,
            size,
            request: None,
        }
    }

    /// The device at 0xf4 with 4 ports, as test kernels expect.
    pub const fn standard() -> Self {
        Self::new(DEFAULT_BASE, DEFAULT_SIZE)
    }

    /// First port decoded.
    pub const fn base(&self) -> u16 {
        self.base
    }

    /// Number of ports decoded.
    pub const fn size(&self) -> u16 {
        self.size
    }

    /// Whether `port` belongs to the device.
    pub fn decodes(&self, port: u16) -> bool {
        port.wrapping_sub(self.base) < self.size && port >= self.base
    }

    /// The pending exit request, if the guest wrote one; clears it.
    pub fn take_exit_request(&mut self) -> Option<ExitRequest> {
        self.request.take()
    }

    /// The pending exit request without clearing it.
    pub fn exit_request(&self) -> Option<ExitRequest> {
        self.request
    }
}

impl PortIo for DebugExit {
    fn io_read(&mut self, port: u16, _width: AccessWidth) -> u32 {
        if self.decodes(port) {
            0
        } else {
            u32::MAX
        }
    }

    /// Records the first write until taken: QEMU would have exited on it, so
    /// later writes before the appliance polls do not replace it.
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        if !self.decodes(port) || width == AccessWidth::Qword || self.request.is_some() {
            return;
        }
        self.request = Some(ExitRequest {
            value: (u64::from(value) & width.mask()) as u32,
            width,
            port,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_of_n_exits_with_n_shifted_or_one() {
        let mut dev = DebugExit::standard();
        assert_eq!(dev.take_exit_request(), None);
        dev.io_write(0xf4, AccessWidth::Byte, 0);
        let req = dev.take_exit_request().unwrap();
        assert_eq!(req.status(), 1);
        assert_eq!(req.process_exit_code(), 1);
        dev.io_write(0xf4, AccessWidth::Byte, 1);
        assert_eq!(dev.take_exit_request().unwrap().status(), 3);
        dev.io_write(0xf4, AccessWidth::Byte, 0x10);
        assert_eq!(dev.take_exit_request().unwrap().status(), 0x21);
    }

    #[test]
    fn value_is_masked_to_the_access_width() {
        let mut dev = DebugExit::standard();
        dev.io_write(0xf4, AccessWidth::Byte, 0x1234_5678);
        assert_eq!(dev.take_exit_request().unwrap().value, 0x78);
        dev.io_write(0xf4, AccessWidth::Word, 0x1234_5678);
        assert_eq!(dev.take_exit_request().unwrap().value, 0x5678);
        dev.io_write(0xf4, AccessWidth::Dword, 0xffff_ffff);
        let req = dev.take_exit_request().unwrap();
        assert_eq!(req.status(), 0x1_ffff_ffff);
        assert_eq!(req.process_exit_code(), 0xff);
    }

    #[test]
    fn every_port_of_the_range_exits_and_others_do_not() {
        let mut dev = DebugExit::standard();
        for port in 0xf4..0xf8 {
            dev.io_write(port, AccessWidth::Byte, 2);
            assert_eq!(dev.take_exit_request().unwrap().port, port);
        }
        dev.io_write(0xf3, AccessWidth::Byte, 2);
        dev.io_write(0xf8, AccessWidth::Byte, 2);
        assert_eq!(dev.take_exit_request(), None);
    }

    #[test]
    fn reads_return_zero_inside_and_all_ones_outside() {
        let mut dev = DebugExit::new(0x501, 2);
        assert_eq!(dev.io_read(0x501, AccessWidth::Byte), 0);
        assert_eq!(dev.io_read(0x502, AccessWidth::Byte), 0);
        assert_eq!(dev.io_read(0x503, AccessWidth::Byte), u32::MAX);
        assert_eq!(dev.take_exit_request(), None, "reads do not exit");
    }

    #[test]
    fn first_request_is_kept_until_taken() {
        let mut dev = DebugExit::standard();
        dev.io_write(0xf4, AccessWidth::Byte, 5);
        dev.io_write(0xf4, AccessWidth::Byte, 6);
        assert_eq!(dev.exit_request().unwrap().value, 5);
        assert_eq!(dev.take_exit_request().unwrap().value, 5);
        assert_eq!(dev.take_exit_request(), None);
    }

    #[test]
    fn range_at_the_top_of_the_port_space_does_not_wrap() {
        let mut dev = DebugExit::new(0xfffe, 4);
        dev.io_write(0x0000, AccessWidth::Byte, 1);
        assert_eq!(dev.take_exit_request(), None);
        dev.io_write(0xffff, AccessWidth::Byte, 1);
        assert!(dev.take_exit_request().is_some());
    }
}
