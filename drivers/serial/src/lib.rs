//! A 16550A UART as found on a PC's COM ports.
//!
//! This crate owns the register model of the National Semiconductor PC16550D
//! (the "16550A"): receive/transmit holding registers, interrupt enable and
//! identification, FIFO control, line control with the divisor latch, modem
//! control (loopback, OUT2), line and modem status and the scratch register.
//!
//! Transmission is instantaneous: a byte written to THR goes straight to the
//! integrator's [`SerialSink`] (typically the host's own console), so LSR
//! always reports THRE and TEMT and a polled console never waits. Received
//! bytes are queued by the integrator with [`Serial::push_input`] into a
//! receive FIFO of fixed capacity; the guest reads them through RBR.
//!
//! Interrupts follow the PC wiring: the UART's INTR output reaches the
//! interrupt line only while MCR.OUT2 is set (the PC gates the IRQ driver with
//! OUT2), and in loopback mode the OUT2 pin is forced inactive, so the line is
//! low. The device never injects anything: it drives an [`InterruptLine`].
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

use ponte_kernel::device::{AccessWidth, PortIo};
use ponte_kernel::irq::InterruptLine;

/// Where the guest's transmitted bytes go.
pub trait SerialSink {
    /// Takes one byte the guest wrote to the transmit holding register.
    fn write_byte(&mut self, byte: u8);
}

/// Register offsets from the UART's base port.
pub mod reg {
    /// Receiver buffer (read) / transmitter holding (write); divisor latch LSB when LCR.DLAB = 1.
    pub const DATA: u16 = 0;
    /// Interrupt enable; divisor latch MSB when LCR.DLAB = 1.
    pub const IER: u16 = 1;
    /// Interrupt identification (read) / FIFO control (write).
    pub const IIR_FCR: u16 = 2;
    /// Line control.
    pub const LCR: u16 = 3;
    /// Modem control.
    pub const MCR: u16 = 4;
    /// Line status.
    pub const LSR: u16 = 5;
    /// Modem status.
    pub const MSR: u16 = 6;
    /// Scratch.
    pub const SCR: u16 = 7;
}

/// Interrupt enable register bits.
pub mod ier {
    /// Received data available (and character timeout in FIFO mode).
    pub const RDA: u8 = 0x01;
    /// Transmitter holding register empty.
    pub const THRE: u8 = 0x02;
    /// Receiver line status.
    pub const RLS: u8 = 0x04;
    /// Modem status.
    pub const MS: u8 = 0x08;
}

/// Interrupt identification register values and bits.
pub mod iir {
    /// Bit 0: no interrupt pending.
    pub const NONE: u8 = 0x01;
    /// Receiver line status (highest priority).
    pub const RLS: u8 = 0x06;
    /// Received data available (FIFO at or above the trigger level).
    pub const RDA: u8 = 0x04;
    /// Character timeout: data below the trigger level waits in the FIFO.
    pub const TIMEOUT: u8 = 0x0c;
    /// Transmitter holding register empty.
    pub const THRE: u8 = 0x02;
    /// Modem status (lowest priority).
    pub const MS: u8 = 0x00;
    /// Bits 7:6, set while the FIFOs are enabled.
    pub const FIFO_ENABLED: u8 = 0xc0;
}

/// FIFO control register bits.
pub mod fcr {
    /// Enable both FIFOs.
    pub const ENABLE: u8 = 0x01;
    /// Clear the receive FIFO (self-clearing).
    pub const CLEAR_RX: u8 = 0x02;
    /// Clear the transmit FIFO (self-clearing).
    pub const CLEAR_TX: u8 = 0x04;
    /// DMA mode select (no effect here).
    pub const DMA_MODE: u8 = 0x08;
    /// Receive trigger level field, bits 7:6 (1, 4, 8 or 14 bytes).
    pub const TRIGGER_MASK: u8 = 0xc0;
}

/// Line control register bits.
pub mod lcr {
    /// Divisor latch access bit.
    pub const DLAB: u8 = 0x80;
    /// Set break.
    pub const BREAK: u8 = 0x40;
}

/// Modem control register bits.
pub mod mcr {
    /// Data terminal ready.
    pub const DTR: u8 = 0x01;
    /// Request to send.
    pub const RTS: u8 = 0x02;
    /// User output 1.
    pub const OUT1: u8 = 0x04;
    /// User output 2; on a PC it enables the IRQ output.
    pub const OUT2: u8 = 0x08;
    /// Local loopback.
    pub const LOOP: u8 = 0x10;
    /// Bits that exist in the 16550A's MCR.
    pub const MASK: u8 = 0x1f;
}

/// Line status register bits.
pub mod lsr {
    /// Data ready.
    pub const DR: u8 = 0x01;
    /// Overrun error.
    pub const OE: u8 = 0x02;
    /// Parity error.
    pub const PE: u8 = 0x04;
    /// Framing error.
    pub const FE: u8 = 0x08;
    /// Break interrupt.
    pub const BI: u8 = 0x10;
    /// Transmitter holding register empty.
    pub const THRE: u8 = 0x20;
    /// Transmitter empty.
    pub const TEMT: u8 = 0x40;
    /// Error in the receive FIFO.
    pub const FIFO_ERROR: u8 = 0x80;
}

/// Modem status register bits.
pub mod msr {
    /// Delta clear to send.
    pub const DCTS: u8 = 0x01;
    /// Delta data set ready.
    pub const DDSR: u8 = 0x02;
    /// Trailing edge ring indicator.
    pub const TERI: u8 = 0x04;
    /// Delta data carrier detect.
    pub const DDCD: u8 = 0x08;
    /// Clear to send.
    pub const CTS: u8 = 0x10;
    /// Data set ready.
    pub const DSR: u8 = 0x20;
    /// Ring indicator.
    pub const RI: u8 = 0x40;
    /// Data carrier detect.
    pub const DCD: u8 = 0x80;
    /// The four delta bits.
    pub const DELTAS: u8 = 0x0f;
}

/// Base port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Base port of COM2.
pub const COM2_BASE: u16 = 0x2f8;
/// Number of ports a UART decodes.
pub const PORT_COUNT: u16 = 8;
/// Depth of the 16550A's receive FIFO.
pub const FIFO_DEPTH: usize = 16;

/// The host side of the modem lines, as seen on the UART's inputs while not
/// in loopback: a console that is always ready (CTS, DSR, DCD asserted).
const DEFAULT_MODEM_INPUTS: u8 = msr::CTS | msr::DSR | msr::DCD;

/// Why the integrator's input was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputError {
    /// The receive FIFO (or the single holding register while FIFOs are off)
    /// is full; the byte was not taken. Retry after the guest reads.
    Full {
        /// Bytes already waiting.
        queued: usize,
    },
}

/// A fixed-capacity ring of received bytes.
struct RxFifo<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
}

impl<const N: usize> RxFifo<N> {
    const fn new() -> Self {
        Self {
            buf: [0; N],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) -> bool {
        if self.len >= N {
            return false;
        }
        let tail = (self.head + self.len) % N;
        self.buf[tail] = byte;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        // `head` is always below N (it only advances modulo N).
        let byte = *self.buf.get(self.head)?;
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(byte)
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// A 16550A UART at `base`, driving `line` and sending output to `sink`.
///
/// `RX` is the receive FIFO's capacity in FIFO mode; the 16550A has
/// [`FIFO_DEPTH`] (16) bytes. With FIFOs disabled (FCR bit 0 clear, the state
/// after reset) the receiver holds a single byte, as the data sheet says.
pub struct Serial<L: InterruptLine, S: SerialSink, const RX: usize = FIFO_DEPTH> {
    base: u16,
    line: L,
    sink: S,
    rx: RxFifo<RX>,
    divisor: u16,
    ier: u8,
    fcr: u8,
    lcr: u8,
    mcr: u8,
    /// Error bits of LSR (only OE occurs here) latched until LSR is read.
    lsr_errors: u8,
    /// MSR with the delta bits as latched; the state bits are recomputed.
    msr_deltas: u8,
    /// Host-side modem inputs (CTS, DSR, RI, DCD in MSR bit positions).
    modem_inputs: u8,
    scr: u8,
    /// The THRE interrupt is pending (armed) until IIR reports it or THR is written.
    thre_pending: bool,
    line_level: bool,
}

impl<L: InterruptLine, S: SerialSink, const RX: usize> Serial<L, S, RX> {
    /// A UART at `base` in its reset state (data sheet table "UART reset
    /// configuration"): IER, FCR, LCR, MCR zero, LSR = THRE | TEMT, IIR = 1.
    ///
    /// The divisor latch is not defined by reset; it starts at 12 (9600 baud
    /// from the PC's 1.8432 MHz clock).
    pub fn new(base: u16, line: L, sink: S) -> Self {
        const { assert!(RX > 0, "the receive FIFO needs at least one byte") };
        Self {
            base,
            line,
            sink,
            rx: RxFifo::new(),
            divisor: 12,
            ier: 0,
            fcr: 0,
            lcr: 0,
            mcr: 0,
            lsr_errors: 0,
            msr_deltas: 0,
            modem_inputs: DEFAULT_MODEM_INPUTS,
            scr: 0,
            thre_pending: false,
            line_level: false,
        }
    }

    /// The first of the eight ports the UART decodes.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// The divisor latch value the guest programmed.
    pub fn divisor(&self) -> u16 {
        self.divisor
    }

    /// The line control register (data bits, stop bits, parity, DLAB, break).
    pub fn line_control(&self) -> u8 {
        self.lcr
    }

    /// The sink receiving transmitted bytes.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink, mutably (e.g. to flush it).
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The interrupt line.
    pub fn line(&self) -> &L {
        &self.line
    }

    /// Bytes the receiver can still take before [`Serial::push_input`] fails.
    pub fn input_space(&self) -> usize {
        self.rx_capacity().saturating_sub(self.rx.len)
    }

    /// Queues one byte from the host as if it arrived on the serial input.
    ///
    /// Fails without taking the byte when the receiver is full, so nothing
    /// the host sends is lost: retry after the guest has read.
    pub fn push_input(&mut self, byte: u8) -> Result<(), InputError> {
        if self.rx.len >= self.rx_capacity() || !self.rx.push(byte) {
            return Err(InputError::Full {
                queued: self.rx.len,
            });
        }
        self.update_interrupt();
        Ok(())
    }

    /// Sets the host side of the modem inputs (MSR bit positions: CTS 0x10,
    /// DSR 0x20, RI 0x40, DCD 0x80; other bits ignored), latching the delta
    /// bits as the UART does: DCTS, DDSR and DDCD on any change, TERI when RI
    /// goes from on to off.
    pub fn set_modem_inputs(&mut self, inputs: u8) {
        let before = self.modem_state();
        self.modem_inputs = inputs & 0xf0;
        let after = self.modem_state();
        self.latch_modem_deltas(before, after);
        self.update_interrupt();
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() {
            RX
        } else {
            1
        }
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & fcr::ENABLE != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & mcr::LOOP != 0
    }

    fn dlab(&self) -> bool {
        self.lcr & lcr::DLAB != 0
    }

    /// Receive FIFO trigger level in bytes (FCR bits 7:6).
    fn trigger_level(&self) -> usize {
        match self.fcr >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    /// The upper four MSR bits as the UART sees its inputs. In loopback the
    /// modem outputs feed the inputs: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
    fn modem_state(&self) -> u8 {
        if self.loopback() {
            let mut state = 0;
            if self.mcr & mcr::RTS != 0 {
                state |= msr::CTS;
            }
            if self.mcr & mcr::DTR != 0 {
                state |= msr::DSR;
            }
            if self.mcr & mcr::OUT1 != 0 {
                state |= msr::RI;
            }
            if self.mcr & mcr::OUT2 != 0 {
                state |= msr::DCD;
            }
            state
        } else {
            self.modem_inputs
        }
    }

    fn latch_modem_deltas(&mut self, before: u8, after: u8) {
        let changed = before ^ after;
        if changed & msr::CTS != 0 {
            self.msr_deltas |= msr::DCTS;
        }
        if changed & msr::DSR != 0 {
            self.msr_deltas |= msr::DDSR;
        }
        if changed & msr::DCD != 0 {
            self.msr_deltas |= msr::DDCD;
        }
        if before & msr::RI != 0 && after & msr::RI == 0 {
            self.msr_deltas |= msr::TERI;
        }
    }

    /// LSR as the guest reads it. The only receive error this model can
    /// produce is overrun (no line noise, no break), so PE, FE, BI and the
    /// FIFO error bit 7 stay clear.
    fn lsr(&self) -> u8 {
        let mut value = lsr::THRE | lsr::TEMT | self.lsr_errors;
        if self.rx.len > 0 {
            value |= lsr::DR;
        }
        value
    }

    /// The highest-priority enabled interrupt, as IIR bits 3:0.
    fn pending_interrupt(&self) -> u8 {
        if self.ier & ier::RLS != 0 && self.lsr_errors != 0 {
            return iir::RLS;
        }
        if self.ier & ier::RDA != 0 && self.rx.len > 0 {
            if !self.fifo_enabled() || self.rx.len >= self.trigger_level() {
                return iir::RDA;
            }
            // Below the trigger level a real UART raises the character
            // timeout after four character times without activity. Nothing
            // else arrives in the meantime here, so the timeout is due at once.
            return iir::TIMEOUT;
        }
        if self.ier & ier::THRE != 0 && self.thre_pending {
            return iir::THRE;
        }
        if self.ier & ier::MS != 0 && self.msr_deltas != 0 {
            return iir::MS;
        }
        iir::NONE
    }

    fn update_interrupt(&mut self) {
        let intr = self.pending_interrupt() != iir::NONE;
        // The PC routes INTR through a driver enabled by OUT2; in loopback the
        // OUT2 pin is forced inactive, which disconnects the line.
        let out2_pin = self.mcr & mcr::OUT2 != 0 && !self.loopback();
        let level = intr && out2_pin;
        if level != self.line_level {
            self.line_level = level;
            self.line.set_level(level);
        }
    }

    fn receive_looped_back(&mut self, byte: u8) {
        if self.rx.len >= self.rx_capacity() || !self.rx.push(byte) {
            // The receiver is full: the new character is lost and OE is set,
            // as on the UART (FIFO mode: the FIFO keeps its contents).
            self.lsr_errors |= lsr::OE;
        }
    }

    fn read_register(&mut self, offset: u16) -> u8 {
        match offset {
            reg::DATA if self.dlab() => self.divisor as u8,
            reg::DATA => {
                let byte = self.rx.pop().unwrap_or(0);
                self.update_interrupt();
                byte
            }
            reg::IER if self.dlab() => (self.divisor >> 8) as u8,
            reg::IER => self.ier,
            reg::IIR_FCR => {
                let id = self.pending_interrupt();
                if id == iir::THRE {
                    // Reading IIR while it reports THRE clears that source.
                    self.thre_pending = false;
                    self.update_interrupt();
                }
                if self.fifo_enabled() {
                    id | iir::FIFO_ENABLED
                } else {
                    id
                }
            }
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => {
                let value = self.lsr();
                self.lsr_errors = 0;
                self.update_interrupt();
                value
            }
            reg::MSR => {
                let value = self.modem_state() | self.msr_deltas;
                self.msr_deltas = 0;
                self.update_interrupt();
                value
            }
            reg::SCR => self.scr,
            _ => 0xff,
        }
    }

    fn write_register(&mut self, offset: u16, value: u8) {
        match offset {
            reg::DATA if self.dlab() => {
                self.divisor = (self.divisor & 0xff00) | u16::from(value);
            }
            reg::DATA => {
                if self.loopback() {
                    self.receive_looped_back(value);
                } else {
                    self.sink.write_byte(value);
                }
                // Transmission completes at once: THR is empty again, which
                // re-arms the THRE interrupt (writing THR clears the old one).
                self.thre_pending = true;
                self.update_interrupt();
            }
            reg::IER if self.dlab() => {
                self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8);
            }
            reg::IER => {
                let before = self.ier;
                self.ier = value & 0x0f;
                // Enabling ETBEI while THR is empty raises THRE even if an
                // earlier IIR read cleared it (rising edge, as PCs rely on).
                if before & ier::THRE == 0 && self.ier & ier::THRE != 0 {
                    self.thre_pending = true;
                }
                self.update_interrupt();
            }
            reg::IIR_FCR => {
                let enable_changed = (self.fcr ^ value) & fcr::ENABLE != 0;
                if enable_changed || value & fcr::CLEAR_RX != 0 {
                    self.rx.clear();
                }
                // The transmit FIFO is always empty here; CLEAR_TX has nothing to do.
                self.fcr = value & (fcr::ENABLE | fcr::DMA_MODE | fcr::TRIGGER_MASK);
                if self.fcr & fcr::ENABLE == 0 {
                    // Trigger and DMA bits are only writable with the FIFOs on.
                    self.fcr = 0;
                }
                self.update_interrupt();
            }
            reg::LCR => self.lcr = value,
            reg::MCR => {
                let before = self.modem_state();
                self.mcr = value & mcr::MASK;
                let after = self.modem_state();
                self.latch_modem_deltas(before, after);
                self.update_interrupt();
            }
            // LSR is read-only for software (writes are for factory test).
            reg::LSR | reg::MSR => {}
            reg::SCR => self.scr = value,
            _ => {}
        }
    }
}

impl<L: InterruptLine, S: SerialSink, const RX: usize> PortIo for Serial<L, S, RX> {
    /// Reads the register at `port - base`. The UART is an 8-bit device: a
    /// wider access reaches consecutive registers byte by byte, low byte
    /// first, as the ISA bus splits it; ports outside the eight read as 0xff.
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        let mut value = 0u32;
        for i in 0..width.bytes().min(4) {
            let offset = port.wrapping_sub(self.base).wrapping_add(i as u16);
            let byte = if offset < PORT_COUNT {
                self.read_register(offset)
            } else {
                0xff
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// Writes the register at `port - base`, byte by byte for wider accesses.
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        for i in 0..width.bytes().min(4) {
            let offset = port.wrapping_sub(self.base).wrapping_add(i as u16);
            if offset < PORT_COUNT {
                self.write_register(offset, (value >> (8 * i)) as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests;
