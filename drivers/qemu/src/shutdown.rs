//! The port 0x8900 "Shutdown" convention of Bochs (and of old QEMU).
//!
//! The guest writes the bytes of "Shutdown" one after another to port
//! 0x8900; the emulator powers off after the last one. A byte that does not
//! continue the sequence resets the matcher (as in Bochs), so only an
//! uninterrupted "Shutdown" counts. The completed sequence records a
//! shutdown request the appliance takes after dispatch.

use ponte_kernel::device::{AccessWidth, PortIo};

/// The port.
pub const SHUTDOWN_PORT: u16 = 0x8900;
/// The byte sequence that requests a shutdown.
pub const SHUTDOWN_STRING: &[u8; 8] = b"Shutdown";

/// The shutdown port.
#[derive(Debug, Default)]
pub struct ShutdownPort {
    matched: usize,
    requested: bool,
}

impl ShutdownPort {
    /// A port with nothing matched.
    pub const fn new() -> Self {
        Self {
            matched: 0,
            requested: false,
        }
    }

    /// Whether the guest completed "Shutdown" since the last call; clears it.
    pub fn take_shutdown_request(&mut self) -> bool {
        core::mem::take(&mut self.requested)
    }

    fn feed(&mut self, byte: u8) {
        if SHUTDOWN_STRING.get(self.matched) == Some(&byte) {
            self.matched += 1;
            if self.matched == SHUTDOWN_STRING.len() {
                self.requested = true;
                self.matched = 0;
            }
        } else {
            self.matched = 0;
        }
    }
}

impl PortIo for ShutdownPort {
    fn io_read(&mut self, _port: u16, _width: AccessWidth) -> u32 {
        u32::MAX
    }

    /// Bytes of a wider write are fed low byte first, as an 8-bit ISA port
    /// receives them.
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        if port != SHUTDOWN_PORT {
            return;
        }
        for i in 0..width.bytes().min(4) {
            self.feed((value >> (8 * i)) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(p: &mut ShutdownPort, bytes: &[u8]) {
        for &b in bytes {
            p.io_write(SHUTDOWN_PORT, AccessWidth::Byte, u32::from(b));
        }
    }

    #[test]
    fn the_full_string_requests_shutdown_once() {
        let mut p = ShutdownPort::new();
        send(&mut p, b"Shutdow");
        assert!(!p.take_shutdown_request());
        send(&mut p, b"n");
        assert!(p.take_shutdown_request());
        assert!(!p.take_shutdown_request());
    }

    #[test]
    fn another_byte_resets_the_matcher() {
        let mut p = ShutdownPort::new();
        send(&mut p, b"ShutXdown");
        assert!(!p.take_shutdown_request());
        send(&mut p, b"SShutdown");
        // The second 'S' broke the first attempt and was not a new start.
        assert!(!p.take_shutdown_request());
        send(&mut p, b"Shutdown");
        assert!(p.take_shutdown_request());
    }

    #[test]
    fn other_ports_and_wide_writes() {
        let mut p = ShutdownPort::new();
        for &b in b"Shutdown" {
            p.io_write(0x8901, AccessWidth::Byte, u32::from(b));
        }
        assert!(!p.take_shutdown_request());
        p.io_write(
            SHUTDOWN_PORT,
            AccessWidth::Dword,
            u32::from_le_bytes(*b"Shut"),
        );
        p.io_write(
            SHUTDOWN_PORT,
            AccessWidth::Dword,
            u32::from_le_bytes(*b"down"),
        );
        assert!(p.take_shutdown_request());
        assert_eq!(p.io_read(SHUTDOWN_PORT, AccessWidth::Byte), u32::MAX);
    }
}
