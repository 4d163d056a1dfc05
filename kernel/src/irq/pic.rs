//! The virtual 8259A pair of a PC: master at ports 0x20/0x21, slave at
//! 0xA0/0xA1 cascaded on master IR2, and the edge/level control registers
//! (ELCR) at 0x4D0/0x4D1.
//!
//! [`DualPic`] models the 8259A data sheet: initialization (ICW1-ICW4),
//! OCW1 (mask), OCW2 (non-specific/specific EOI, rotation, set priority),
//! OCW3 (read IRR/ISR, poll, special mask mode), auto-EOI, special fully
//! nested mode, fully nested priorities with rotation, edge and level
//! triggering (ICW1 LTIM or ELCR). The processor side is
//! [`DualPic::interrupt_output`] (INT) and [`DualPic::acknowledge`] (the INTA
//! cycle that returns the vector).
//!
//! Edge-triggered requests are latched by the rising edge and kept until
//! acknowledged even if the input falls again, because a device pulse is
//! shorter than any INTA cycle here; a level-triggered request that goes
//! away before INTA produces the spurious IR7 (IR15 on the slave, with the
//! master's IR2 in service) that the data sheet describes. Only 8086 mode
//! is modelled (vectors from ICW2), whatever ICW4 bit 0 says.

use crate::device::{AccessWidth, PortIo};

/// Master command port.
pub const MASTER_COMMAND: u16 = 0x20;
/// Master data port.
pub const MASTER_DATA: u16 = 0x21;
/// Slave command port.
pub const SLAVE_COMMAND: u16 = 0xA0;
/// Slave data port.
pub const SLAVE_DATA: u16 = 0xA1;
/// ELCR of the master (IRQ 0-7).
pub const ELCR_MASTER: u16 = 0x4D0;
/// ELCR of the slave (IRQ 8-15).
pub const ELCR_SLAVE: u16 = 0x4D1;
/// The master input the slave's INT drives.
pub const CASCADE_IRQ: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InitStep {
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug)]
struct Pic8259 {
    input: u8,
    irr: u8,
    isr: u8,
    imr: u8,
    elcr: u8,
    elcr_mask: u8,
    vector_base: u8,
    /// The IR with the lowest priority (7 after ICW1).
    lowest: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    level_triggered_all: bool,
    single: bool,
    icw4_needed: bool,
    cascade: u8,
    step: InitStep,
    is_master: bool,
}

impl Pic8259 {
    fn new(is_master: bool) -> Self {
        Self {
            input: 0,
            irr: 0,
            isr: 0,
            imr: 0,
            elcr: 0,
            // IRQ 0, 1, 2 (master) and 8, 13 (slave) are edge only.
            elcr_mask: if is_master { 0xF8 } else { 0xDE },
            vector_base: 0,
            lowest: 7,
            read_isr: false,
            poll: false,
            special_mask: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            level_triggered_all: false,
            single: false,
            icw4_needed: false,
            cascade: 0,
            step: InitStep::Ready,
            is_master,
        }
    }

    fn level_mode(&self, irq: u8) -> bool {
        self.level_triggered_all || self.elcr & (1 << irq) != 0
    }

    // Out of line: every change of the cascade input drives it too.
    #[inline(never)]
    fn set_input(&mut self, irq: u8, high: bool) {
        let bit = 1u8 << irq;
        let was_high = self.input & bit != 0;
        if high {
            self.input |= bit;
        } else {
            self.input &= !bit;
        }
        if self.level_mode(irq) {
            if high {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if high && !was_high {
            self.irr |= bit;
        }
    }

    /// Priority rank of the highest-priority set bit of `mask` (0 best).
    fn best_rank(&self, mask: u8) -> Option<u8> {
        // Rotated so that the bit of rank 0 (the IRQ after the lowest
        // priority one) is bit 0.
        let by_rank = mask.rotate_right(u32::from((self.lowest + 1) & 7));
        (by_rank != 0).then(|| by_rank.trailing_zeros() as u8)
    }

    fn irq_of_rank(&self, rank: u8) -> u8 {
        (rank + self.lowest + 1) & 7
    }

    /// The request the chip would signal on INT, if any.
    fn highest_request(&self) -> Option<u8> {
        let rank = self.best_rank(self.irr & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && self.is_master {
            in_service &= !(1 << CASCADE_IRQ);
        }
        let current = self.best_rank(in_service).unwrap_or(8);
        (rank < current).then_some(self.irq_of_rank(rank))
    }

    /// The INTA cycle for `irq`.
    // Out of line: the pair acknowledges on the master and on the slave.
    #[inline(never)]
    fn acknowledge(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.lowest = irq;
            }
        } else {
            self.isr |= bit;
        }
        if !self.level_mode(irq) {
            self.irr &= !bit;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1.
            self.level_triggered_all = value & 0x08 != 0;
            self.single = value & 0x02 != 0;
            self.icw4_needed = value & 0x01 != 0;
            self.imr = 0;
            self.isr = 0;
            self.lowest = 7;
            self.special_mask = false;
            self.read_isr = false;
            self.poll = false;
            if !self.icw4_needed {
                self.auto_eoi = false;
                self.special_fully_nested = false;
            }
            self.rotate_on_auto_eoi = false;
            // The edge sense latch is reset: an edge input must go low and
            // high again; a level input that is high still requests.
            // The inputs `level_mode` says are level-triggered.
            let level_mask = if self.level_triggered_all {
                0xFF
            } else {
                self.elcr
            };
            self.irr = self.input & level_mask;
            self.step = InitStep::Icw2;
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x04 != 0 {
                self.poll = true;
            }
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2.
            let level = value & 7;
            match value >> 5 {
                0b001 | 0b101 => {
                    if let Some(rank) = self.best_rank(self.isr) {
                        let irq = self.irq_of_rank(rank);
                        self.isr &= !(1 << irq);
                        if value >> 5 == 0b101 {
                            self.lowest = irq;
                        }
                    }
                }
                0b011 => self.isr &= !(1 << level),
                0b111 => {
                    self.isr &= !(1 << level);
                    self.lowest = level;
                }
                0b100 => self.rotate_on_auto_eoi = true,
                0b000 => self.rotate_on_auto_eoi = false,
                0b110 => self.lowest = level,
                _ => {}
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.step {
            InitStep::Icw2 => {
                self.vector_base = value & 0xF8;
                self.step = if !self.single {
                    InitStep::Icw3
                } else if self.icw4_needed {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw3 => {
                self.cascade = value;
                self.step = if self.icw4_needed {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw4 => {
                self.auto_eoi = value & 0x02 != 0;
                self.special_fully_nested = value & 0x10 != 0;
                self.step = InitStep::Ready;
            }
            InitStep::Ready => self.imr = value,
        }
    }

    /// The edge/level control register takes the bits of the inputs that
    /// may be level-triggered.
    fn write_elcr(&mut self, value: u8) {
        self.elcr = value & self.elcr_mask;
    }

    /// Poll command read: like INTA, but returns 0x80 | level (0 if none).
    fn poll_read(&mut self) -> u8 {
        match self.highest_request() {
            Some(irq) => {
                self.acknowledge(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    /// A read of the command port (`command`) or the data port: the poll
    /// answer after a poll command, else the IRR or ISR (as OCW3 chose) or
    /// the IMR.
    fn read_port(&mut self, command: bool) -> u8 {
        if core::mem::take(&mut self.poll) {
            self.poll_read()
        } else if !command {
            self.imr
        } else if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }
}

/// The master/slave 8259A pair. See the module documentation.
#[derive(Clone, Debug)]
pub struct DualPic {
    master: Pic8259,
    slave: Pic8259,
}

impl Default for DualPic {
    fn default() -> Self {
        Self::new()
    }
}

impl DualPic {
    /// Both chips in their power-up state (uninitialised, nothing masked).
    pub fn new() -> Self {
        Self {
            master: Pic8259::new(true),
            slave: Pic8259::new(false),
        }
    }

    /// Drives ISA interrupt request `irq` (0-15). IRQ 2 is the cascade input,
    /// driven by the slave only: requests for it (and beyond 15) are ignored.
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        match irq {
            0..=7 if irq != CASCADE_IRQ => self.master.set_input(irq, high),
            8..=15 => {
                self.slave.set_input(irq - 8, high);
                self.update_cascade();
            }
            _ => {}
        }
    }

    /// Drives the master's IR2 from the slave's INT output.
    // Out of line: after every change of the slave and every INTA cycle.
    #[inline(never)]
    fn update_cascade(&mut self) {
        let slave_int = self.slave.highest_request().is_some();
        self.master.set_input(CASCADE_IRQ, slave_int);
    }

    /// The INT output of the master: an interrupt is requested.
    pub fn interrupt_output(&self) -> bool {
        self.master.highest_request().is_some()
    }

    /// The INTA cycle: returns the vector and moves the request into
    /// service (unless auto-EOI). Without a request, the master answers
    /// with its IR7 vector and nothing in service (spurious IRQ 7); if the
    /// slave's request vanished, the slave answers IR7 (spurious IRQ 15) and
    /// the master's IR2 goes into service.
    pub fn acknowledge(&mut self) -> u8 {
        let Some(irq) = self.master.highest_request() else {
            return self.master.vector_base | 7;
        };
        let vector = if irq == CASCADE_IRQ && !self.master.single {
            match self.slave.highest_request() {
                Some(slave_irq) => {
                    self.slave.acknowledge(slave_irq);
                    self.slave.vector_base | slave_irq
                }
                None => self.slave.vector_base | 7,
            }
        } else {
            self.master.vector_base | irq
        };
        self.master.acknowledge(irq);
        // The slave releases INT during the INTA sequence, so a further
        // slave request shows as a new edge on IR2.
        self.master.set_input(CASCADE_IRQ, false);
        self.update_cascade();
        vector
    }

    /// IRR of both chips (slave in bits 15:8).
    pub fn irr(&self) -> u16 {
        u16::from(self.master.irr) | (u16::from(self.slave.irr) << 8)
    }

    /// ISR of both chips (slave in bits 15:8).
    pub fn isr(&self) -> u16 {
        u16::from(self.master.isr) | (u16::from(self.slave.isr) << 8)
    }

    /// IMR of both chips (slave in bits 15:8).
    pub fn imr(&self) -> u16 {
        u16::from(self.master.imr) | (u16::from(self.slave.imr) << 8)
    }

    fn read_byte(&mut self, port: u16) -> u8 {
        match port {
            MASTER_COMMAND | MASTER_DATA => self.master.read_port(port == MASTER_COMMAND),
            SLAVE_COMMAND | SLAVE_DATA => {
                let v = self.slave.read_port(port == SLAVE_COMMAND);
                self.update_cascade();
                v
            }
            ELCR_MASTER => self.master.elcr,
            ELCR_SLAVE => self.slave.elcr,
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, port: u16, value: u8) {
        match port {
            MASTER_COMMAND => self.master.write_command(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_COMMAND => self.slave.write_command(value),
            SLAVE_DATA => self.slave.write_data(value),
            ELCR_MASTER => self.master.write_elcr(value),
            ELCR_SLAVE => self.slave.write_elcr(value),
            _ => {}
        }
        self.update_cascade();
    }
}

impl PortIo for DualPic {
    /// Byte registers; a word access at 0x4D0 covers both ELCRs, other
    /// ports answer in their low byte.
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        if port == ELCR_MASTER && width != AccessWidth::Byte {
            return u32::from(self.master.elcr) | (u32::from(self.slave.elcr) << 8);
        }
        u32::from(self.read_byte(port))
    }

    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        if port == ELCR_MASTER && width != AccessWidth::Byte {
            self.master.write_elcr(value as u8);
            self.slave.write_elcr((value >> 8) as u8);
            self.update_cascade();
            return;
        }
        self.write_byte(port, value as u8);
    }
}

#[cfg(test)]
mod tests;
