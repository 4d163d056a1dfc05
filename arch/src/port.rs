//! The host's I/O ports: the [`PortAccess`] contract that drivers of host
//! devices (such as an ATA disk controller) are written against, and
//! [`HostPorts`], its implementation with the `in`/`out` instructions.
//!
//! Drivers take any `PortAccess`, so their protocol logic is tested on the
//! host against device models; only `HostPorts` touches hardware.

/// Byte and word access to an I/O port space.
pub trait PortAccess {
    /// Reads a byte from `port`.
    fn read8(&mut self, port: u16) -> u8;
    /// Writes a byte to `port`.
    fn write8(&mut self, port: u16, value: u8);
    /// Reads a 16-bit word from `port`.
    fn read16(&mut self, port: u16) -> u16;
    /// Writes a 16-bit word to `port`.
    fn write16(&mut self, port: u16, value: u16);
    /// Reads `buf.len()` words from `port`, in order (a data FIFO).
    fn read16_block(&mut self, port: u16, buf: &mut [u16]) {
        for word in buf {
            *word = self.read16(port);
        }
    }
    /// Writes the words of `buf` to `port`, in order.
    fn write16_block(&mut self, port: u16, buf: &[u16]) {
        for &word in buf {
            self.write16(port, word);
        }
    }
}

impl<T: PortAccess + ?Sized> PortAccess for &mut T {
    fn read8(&mut self, port: u16) -> u8 {
        (**self).read8(port)
    }
    fn write8(&mut self, port: u16, value: u8) {
        (**self).write8(port, value)
    }
    fn read16(&mut self, port: u16) -> u16 {
        (**self).read16(port)
    }
    fn write16(&mut self, port: u16, value: u16) {
        (**self).write16(port, value)
    }
    fn read16_block(&mut self, port: u16, buf: &mut [u16]) {
        (**self).read16_block(port, buf)
    }
    fn write16_block(&mut self, port: u16, buf: &[u16]) {
        (**self).write16_block(port, buf)
    }
}

/// The processor's I/O ports, accessed with `in`, `out`, `rep insw` and
/// `rep outsw`.
#[derive(Debug)]
pub struct HostPorts {
    _private: (),
}

impl HostPorts {
    /// Access to the host's ports.
    ///
    /// # Safety
    ///
    /// The caller runs with I/O privilege (CPL 0 or IOPL 3) and owns the
    /// devices at every port it will access through the value: accesses
    /// have side effects on those devices, and nothing else may drive them
    /// at the same time.
    pub unsafe fn new() -> Self {
        Self { _private: () }
    }
}

impl PortAccess for HostPorts {
    fn read8(&mut self, port: u16) -> u8 {
        // SAFETY: `HostPorts::new`'s caller guarantees I/O privilege and
        // ownership of the device at `port`; `in` touches no memory.
        unsafe { x86::io::inb(port) }
    }

    fn write8(&mut self, port: u16, value: u8) {
        // SAFETY: as in `read8`; `out` touches no memory.
        unsafe { x86::io::outb(port, value) }
    }

    fn read16(&mut self, port: u16) -> u16 {
        // SAFETY: as in `read8`.
        unsafe { x86::io::inw(port) }
    }

    fn write16(&mut self, port: u16, value: u16) {
        // SAFETY: as in `write8`.
        unsafe { x86::io::outw(port, value) }
    }

    fn read16_block(&mut self, port: u16, buf: &mut [u16]) {
        // SAFETY: as in `read8` for the port. `rep insw` stores RCX words at
        // [RDI] going up (the ABI keeps DF clear): exactly `buf`, which is
        // borrowed mutably for the duration.
        unsafe {
            core::arch::asm!(
                "rep insw",
                in("dx") port,
                inout("rdi") buf.as_mut_ptr() => _,
                inout("rcx") buf.len() => _,
                options(nostack, preserves_flags)
            );
        }
    }

    fn write16_block(&mut self, port: u16, buf: &[u16]) {
        // SAFETY: as in `write8` for the port. `rep outsw` loads RCX words
        // from [RSI] going up: exactly `buf`, only read.
        unsafe {
            core::arch::asm!(
                "rep outsw",
                in("dx") port,
                inout("rsi") buf.as_ptr() => _,
                inout("rcx") buf.len() => _,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Records every access; reads return a counter.
    #[derive(Default)]
    struct Recorder {
        log: Vec<(char, u16, u16)>,
        next: u16,
    }

    impl PortAccess for Recorder {
        fn read8(&mut self, port: u16) -> u8 {
            self.next += 1;
            self.log.push(('r', port, self.next));
            self.next as u8
        }
        fn write8(&mut self, port: u16, value: u8) {
            self.log.push(('w', port, u16::from(value)));
        }
        fn read16(&mut self, port: u16) -> u16 {
            self.next += 1;
            self.log.push(('R', port, self.next));
            self.next
        }
        fn write16(&mut self, port: u16, value: u16) {
            self.log.push(('W', port, value));
        }
    }

    #[test]
    fn block_transfers_default_to_word_accesses_in_order() {
        // Through the forwarding implementation for `&mut T`.
        fn read_three(mut ports: impl PortAccess) -> [u16; 3] {
            let mut buf = [0u16; 3];
            ports.read16_block(0x1f0, &mut buf);
            buf
        }
        let mut ports = Recorder::default();
        let buf = read_three(&mut ports);
        assert_eq!(buf, [1, 2, 3]);
        ports.write16_block(0x170, &[7, 8]);
        assert_eq!(
            ports.log,
            [
                ('R', 0x1f0, 1),
                ('R', 0x1f0, 2),
                ('R', 0x1f0, 3),
                ('W', 0x170, 7),
                ('W', 0x170, 8)
            ]
        );
    }
}
