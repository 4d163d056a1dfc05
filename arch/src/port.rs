//! The host's I/O ports: the [`PortAccess`] contract that drivers of host
//! devices (such as an ATA disk controller) are written against,
//! [`HostPorts`], its implementation with the `in`/`out` instructions, and
//! [`IdeChannelPorts`], a safe handle limited to one IDE channel's ports.
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

/// The current privilege level: the low two bits of CS.
fn current_privilege_level() -> u16 {
    let cs: u16;
    // SAFETY: reading CS into a register has no side effect.
    unsafe {
        core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags));
    }
    cs & 3
}

/// The ports of one legacy IDE channel: its eight command-block registers
/// and its Device Control / Alternate Status register. Accesses to any
/// other port are not performed: reads return all ones (an empty bus),
/// writes are dropped.
///
/// Safe to create: it exists only at CPL 0, where `in` and `out` are
/// permitted, and the task-file registers move data by PIO only (a device
/// reaches memory only through bus-master DMA, programmed at other ports),
/// so no access through it can touch memory.
#[derive(Debug)]
pub struct IdeChannelPorts {
    ports: HostPorts,
    command_block: u16,
    control: u16,
}

impl IdeChannelPorts {
    /// The channel whose command block starts at `command_block` (0x1F0
    /// primary, 0x170 secondary) with its control register at `control`
    /// (0x3F6, 0x376); `None` unless running at CPL 0.
    pub fn new(command_block: u16, control: u16) -> Option<Self> {
        if current_privilege_level() != 0 {
            return None;
        }
        Some(Self {
            // SAFETY: CPL 0 was just checked, and every access is limited to
            // the channel's task-file ports by `allowed` (see the type's
            // documentation).
            ports: unsafe { HostPorts::new() },
            command_block,
            control,
        })
    }

    fn allowed(&self, port: u16) -> bool {
        port == self.control
            || port
                .checked_sub(self.command_block)
                .is_some_and(|offset| offset < 8)
    }
}

impl PortAccess for IdeChannelPorts {
    fn read8(&mut self, port: u16) -> u8 {
        if self.allowed(port) {
            self.ports.read8(port)
        } else {
            0xff
        }
    }
    fn write8(&mut self, port: u16, value: u8) {
        if self.allowed(port) {
            self.ports.write8(port, value)
        }
    }
    fn read16(&mut self, port: u16) -> u16 {
        if self.allowed(port) {
            self.ports.read16(port)
        } else {
            0xffff
        }
    }
    fn write16(&mut self, port: u16, value: u16) {
        if self.allowed(port) {
            self.ports.write16(port, value)
        }
    }
    fn read16_block(&mut self, port: u16, buf: &mut [u16]) {
        if self.allowed(port) {
            self.ports.read16_block(port, buf)
        } else {
            buf.fill(0xffff)
        }
    }
    fn write16_block(&mut self, port: u16, buf: &[u16]) {
        if self.allowed(port) {
            self.ports.write16_block(port, buf)
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
    fn ide_ports_exist_only_at_cpl_0() {
        // Host tests run in user mode (CPL 3), where `in` would fault.
        assert_eq!(current_privilege_level(), 3);
        assert!(IdeChannelPorts::new(0x1f0, 0x3f6).is_none());
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
