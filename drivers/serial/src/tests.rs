//! Register behaviour checked against the PC16550D data sheet.

use super::*;
use core::cell::RefCell;
use std::rc::Rc;
use std::vec::Vec;

/// A line that records every level it is driven to.
#[derive(Clone, Default)]
struct RecordingLine(Rc<RefCell<Vec<bool>>>);

impl RecordingLine {
    fn level(&self) -> bool {
        self.0.borrow().last().copied().unwrap_or(false)
    }
    fn transitions(&self) -> Vec<bool> {
        self.0.borrow().clone()
    }
}

impl InterruptLine for RecordingLine {
    fn set_level(&self, asserted: bool) {
        self.0.borrow_mut().push(asserted);
    }
    fn pulse(&self) {
        self.0.borrow_mut().extend([true, false]);
    }
}

#[derive(Default)]
struct VecSink(Vec<u8>);

impl SerialSink for VecSink {
    fn write_byte(&mut self, byte: u8) {
        self.0.push(byte);
    }
}

const BASE: u16 = COM1_BASE;

fn uart() -> (Serial<RecordingLine, VecSink>, RecordingLine) {
    let line = RecordingLine::default();
    (Serial::new(BASE, line.clone(), VecSink::default()), line)
}

fn rd(u: &mut Serial<RecordingLine, VecSink>, offset: u16) -> u8 {
    u.io_read(BASE + offset, AccessWidth::Byte) as u8
}

fn wr(u: &mut Serial<RecordingLine, VecSink>, offset: u16, value: u8) {
    u.io_write(BASE + offset, AccessWidth::Byte, u32::from(value));
}

#[test]
fn reset_values_match_the_data_sheet() {
    let (mut u, line) = uart();
    assert_eq!(rd(&mut u, reg::IER), 0);
    assert_eq!(
        rd(&mut u, reg::IIR_FCR),
        0x01,
        "IIR resets to 'no interrupt'"
    );
    assert_eq!(rd(&mut u, reg::LCR), 0);
    assert_eq!(rd(&mut u, reg::MCR), 0);
    assert_eq!(rd(&mut u, reg::LSR), 0x60, "THRE and TEMT only");
    // No deltas at reset; the state bits follow the (ready) host inputs.
    assert_eq!(rd(&mut u, reg::MSR), 0xb0);
    assert!(line.transitions().is_empty());
}

#[test]
fn transmitted_bytes_reach_the_sink_and_lsr_stays_ready() {
    let (mut u, _) = uart();
    for &b in b"ok\n" {
        assert_eq!(rd(&mut u, reg::LSR) & 0x60, 0x60);
        wr(&mut u, reg::DATA, b);
    }
    assert_eq!(u.sink().0, b"ok\n");
}

#[test]
fn divisor_latch_is_behind_dlab() {
    let (mut u, _) = uart();
    wr(&mut u, reg::LCR, 0x80 | 0x03);
    wr(&mut u, reg::DATA, 0x01);
    wr(&mut u, reg::IER, 0x00);
    assert_eq!(u.divisor(), 1, "115200 baud");
    assert_eq!(rd(&mut u, reg::DATA), 0x01);
    assert_eq!(rd(&mut u, reg::IER), 0x00);
    // While DLAB is set, data writes do not transmit and IER is untouched.
    assert!(u.sink().0.is_empty());
    wr(&mut u, reg::LCR, 0x03);
    assert_eq!(rd(&mut u, reg::IER), 0, "IER unchanged by the DLM write");
    wr(&mut u, reg::IER, 0x05);
    assert_eq!(rd(&mut u, reg::IER), 0x05);
    assert_eq!(u.divisor(), 1);
    assert_eq!(rd(&mut u, reg::LCR), 0x03);
}

#[test]
fn ier_keeps_only_the_four_defined_bits() {
    let (mut u, _) = uart();
    wr(&mut u, reg::IER, 0xff);
    assert_eq!(rd(&mut u, reg::IER), 0x0f);
}

#[test]
fn scratch_register_holds_a_byte() {
    let (mut u, _) = uart();
    wr(&mut u, reg::SCR, 0x5a);
    assert_eq!(rd(&mut u, reg::SCR), 0x5a);
}

#[test]
fn received_byte_sets_dr_and_is_read_from_rbr() {
    let (mut u, _) = uart();
    assert_eq!(rd(&mut u, reg::LSR) & lsr::DR, 0);
    u.push_input(b'x').unwrap();
    assert_eq!(rd(&mut u, reg::LSR) & lsr::DR, lsr::DR);
    assert_eq!(rd(&mut u, reg::DATA), b'x');
    assert_eq!(rd(&mut u, reg::LSR) & lsr::DR, 0);
}

#[test]
fn without_fifo_the_receiver_holds_one_byte() {
    let (mut u, _) = uart();
    u.push_input(1).unwrap();
    assert_eq!(u.push_input(2), Err(InputError::Full { queued: 1 }));
    assert_eq!(rd(&mut u, reg::DATA), 1);
    u.push_input(2).unwrap();
    assert_eq!(rd(&mut u, reg::DATA), 2);
}

#[test]
fn fifo_mode_queues_sixteen_bytes_in_order_and_reports_fifo_bits() {
    let (mut u, _) = uart();
    wr(&mut u, reg::IIR_FCR, fcr::ENABLE);
    assert_eq!(
        rd(&mut u, reg::IIR_FCR),
        0xc1,
        "FIFO bits 7:6 set, no interrupt"
    );
    for i in 0..16u8 {
        u.push_input(i).unwrap();
    }
    assert_eq!(u.input_space(), 0);
    assert!(u.push_input(99).is_err(), "host input is refused, not lost");
    for i in 0..16u8 {
        assert_eq!(rd(&mut u, reg::DATA), i);
    }
    assert_eq!(rd(&mut u, reg::LSR) & lsr::DR, 0);
}

#[test]
fn fcr_clear_rx_and_fifo_toggle_empty_the_receiver() {
    let (mut u, _) = uart();
    wr(&mut u, reg::IIR_FCR, fcr::ENABLE);
    u.push_input(1).unwrap();
    u.push_input(2).unwrap();
    wr(&mut u, reg::IIR_FCR, fcr::ENABLE | fcr::CLEAR_RX);
    assert_eq!(rd(&mut u, reg::LSR) & lsr::DR, 0);
    u.push_input(3).unwrap();
    wr(&mut u, reg::IIR_FCR, 0);
    assert_eq!(
        rd(&mut u, reg::LSR) & lsr::DR,
        0,
        "disabling the FIFOs clears them"
    );
    assert_eq!(rd(&mut u, reg::IIR_FCR) & 0xc0, 0);
}

#[test]
fn thre_interrupt_needs_out2_and_is_cleared_by_iir_read() {
    let (mut u, line) = uart();
    wr(&mut u, reg::IER, ier::THRE);
    // THRE is pending, but OUT2 gates the line on a PC.
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::THRE);
    assert!(!line.level());
    wr(&mut u, reg::IER, 0);
    wr(&mut u, reg::MCR, mcr::OUT2);
    wr(&mut u, reg::IER, ier::THRE);
    assert!(line.level(), "rising ETBEI with THR empty raises THRE");
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::THRE);
    assert!(!line.level(), "reading IIR cleared the THRE source");
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::NONE);
    // Writing THR (transmission completes at once) re-arms it.
    wr(&mut u, reg::DATA, b'a');
    assert!(line.level());
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::THRE);
    assert!(!line.level());
}

#[test]
fn rewriting_ier_without_a_rising_etbei_does_not_rearm_thre() {
    let (mut u, line) = uart();
    wr(&mut u, reg::MCR, mcr::OUT2);
    wr(&mut u, reg::IER, ier::THRE);
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::THRE);
    wr(&mut u, reg::IER, ier::THRE | ier::MS);
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::NONE);
    assert!(!line.level());
}

#[test]
fn linux_thre_probe_sees_an_interrupt_on_each_enable() {
    // The 8250 driver's THRE test: enable, read IIR, disable, enable, read IIR.
    let (mut u, _) = uart();
    wr(&mut u, reg::IER, ier::THRE);
    let iir1 = rd(&mut u, reg::IIR_FCR);
    wr(&mut u, reg::IER, 0);
    wr(&mut u, reg::IER, ier::THRE);
    let iir2 = rd(&mut u, reg::IIR_FCR);
    assert_eq!(iir1 & 0x01, 0);
    assert_eq!(iir2 & 0x01, 0, "no UART_BUG_THRE");
}

#[test]
fn rda_interrupt_raised_by_input_and_cleared_by_reading_rbr() {
    let (mut u, line) = uart();
    wr(&mut u, reg::MCR, mcr::OUT2);
    wr(&mut u, reg::IER, ier::RDA);
    assert!(!line.level());
    u.push_input(b'k').unwrap();
    assert!(line.level());
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::RDA);
    assert!(line.level(), "IIR read does not clear RDA");
    assert_eq!(rd(&mut u, reg::DATA), b'k');
    assert!(!line.level());
    assert_eq!(line.transitions(), [true, false]);
}

#[test]
fn fifo_trigger_level_selects_rda_or_character_timeout() {
    let (mut u, _) = uart();
    wr(&mut u, reg::IER, ier::RDA);
    // Trigger level 4 bytes (FCR bits 7:6 = 01).
    wr(&mut u, reg::IIR_FCR, fcr::ENABLE | 0x40);
    u.push_input(1).unwrap();
    assert_eq!(rd(&mut u, reg::IIR_FCR), 0xc0 | iir::TIMEOUT);
    for b in 2..=4 {
        u.push_input(b).unwrap();
    }
    assert_eq!(rd(&mut u, reg::IIR_FCR), 0xc0 | iir::RDA);
    rd(&mut u, reg::DATA);
    assert_eq!(rd(&mut u, reg::IIR_FCR), 0xc0 | iir::TIMEOUT);
}

#[test]
fn priorities_follow_the_data_sheet_order() {
    let (mut u, _) = uart();
    wr(&mut u, reg::MCR, mcr::LOOP);
    wr(&mut u, reg::IER, 0x0f);
    // Entering loopback with all modem outputs off drops CTS, DSR and DCD
    // (the host inputs were on): modem status deltas. Enabling ETBEI arms
    // THRE, the loopback bytes give received data, the second one an overrun.
    wr(&mut u, reg::DATA, 1);
    wr(&mut u, reg::DATA, 2); // overrun: single holding register
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::RLS);
    assert_eq!(
        rd(&mut u, reg::LSR) & (lsr::OE | lsr::DR),
        lsr::OE | lsr::DR
    );
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::RDA);
    assert_eq!(
        rd(&mut u, reg::DATA),
        1,
        "the first byte survives the overrun"
    );
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::THRE);
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::MS);
    let msr_value = rd(&mut u, reg::MSR);
    assert_eq!(msr_value & msr::DELTAS, msr::DCTS | msr::DDSR | msr::DDCD);
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::NONE);
}

#[test]
fn loopback_echoes_transmit_into_receive_and_not_to_the_sink() {
    let (mut u, _) = uart();
    wr(&mut u, reg::MCR, mcr::LOOP);
    wr(&mut u, reg::DATA, 0xa5);
    assert!(u.sink().0.is_empty());
    assert_eq!(rd(&mut u, reg::LSR) & lsr::DR, lsr::DR);
    assert_eq!(rd(&mut u, reg::DATA), 0xa5);
}

#[test]
fn loopback_maps_modem_outputs_to_inputs() {
    let (mut u, _) = uart();
    wr(&mut u, reg::MCR, mcr::LOOP);
    rd(&mut u, reg::MSR); // clear the deltas of entering loopback
    wr(&mut u, reg::MCR, mcr::LOOP | mcr::RTS);
    assert_eq!(rd(&mut u, reg::MSR), msr::CTS | msr::DCTS);
    wr(&mut u, reg::MCR, mcr::LOOP | mcr::RTS | mcr::DTR);
    assert_eq!(rd(&mut u, reg::MSR), msr::CTS | msr::DSR | msr::DDSR);
    wr(&mut u, reg::MCR, mcr::LOOP | mcr::OUT1);
    assert_eq!(rd(&mut u, reg::MSR), msr::RI | msr::DCTS | msr::DDSR);
    // RI falling edge sets TERI; OUT2 drives DCD.
    wr(&mut u, reg::MCR, mcr::LOOP | mcr::OUT2);
    assert_eq!(rd(&mut u, reg::MSR), msr::DCD | msr::TERI | msr::DDCD);
    assert_eq!(rd(&mut u, reg::MSR), msr::DCD, "deltas cleared by the read");
}

#[test]
fn loopback_disconnects_the_irq_even_with_out2() {
    let (mut u, line) = uart();
    wr(&mut u, reg::IER, ier::RDA);
    wr(&mut u, reg::MCR, mcr::LOOP | mcr::OUT2);
    wr(&mut u, reg::DATA, 7);
    assert_eq!(
        rd(&mut u, reg::IIR_FCR),
        iir::RDA,
        "the UART itself sees the interrupt"
    );
    assert!(!line.level(), "but the OUT2 pin is inactive in loopback");
    wr(&mut u, reg::MCR, mcr::OUT2);
    assert!(line.level(), "leaving loopback connects the line");
}

#[test]
fn host_modem_input_changes_raise_modem_status() {
    let (mut u, line) = uart();
    wr(&mut u, reg::MCR, mcr::OUT2);
    wr(&mut u, reg::IER, ier::MS);
    assert!(!line.level());
    u.set_modem_inputs(msr::DSR | msr::DCD | msr::RI);
    assert!(line.level());
    assert_eq!(rd(&mut u, reg::IIR_FCR), iir::MS);
    assert_eq!(
        rd(&mut u, reg::MSR),
        msr::DSR | msr::DCD | msr::RI | msr::DCTS
    );
    assert!(
        !line.level(),
        "reading MSR clears the modem status interrupt"
    );
    u.set_modem_inputs(msr::DSR | msr::DCD);
    assert_eq!(rd(&mut u, reg::MSR), msr::DSR | msr::DCD | msr::TERI);
}

#[test]
fn lsr_read_clears_overrun() {
    let (mut u, _) = uart();
    wr(&mut u, reg::MCR, mcr::LOOP);
    wr(&mut u, reg::DATA, 1);
    wr(&mut u, reg::DATA, 2);
    assert_eq!(rd(&mut u, reg::LSR) & lsr::OE, lsr::OE);
    assert_eq!(rd(&mut u, reg::LSR) & lsr::OE, 0);
}

#[test]
fn wide_accesses_split_into_byte_registers() {
    let (mut u, _) = uart();
    // A word write at base+3 sets LCR (low byte) and MCR (high byte).
    u.io_write(BASE + reg::LCR, AccessWidth::Word, 0x0b03);
    assert_eq!(rd(&mut u, reg::LCR), 0x03);
    assert_eq!(rd(&mut u, reg::MCR), 0x0b);
    // A dword read at base+4: MCR, LSR, MSR, SCR.
    wr(&mut u, reg::SCR, 0x42);
    let v = u.io_read(BASE + reg::MCR, AccessWidth::Dword);
    assert_eq!(v & 0xff, 0x0b);
    assert_eq!((v >> 8) & 0xff, 0x60);
    assert_eq!(v >> 24, 0x42);
    // Bytes beyond the eight ports read as an empty ISA bus.
    assert_eq!(u.io_read(BASE + reg::SCR, AccessWidth::Word) >> 8, 0xff);
}

#[test]
fn reading_an_empty_rbr_returns_zero_without_underflow() {
    let (mut u, _) = uart();
    assert_eq!(rd(&mut u, reg::DATA), 0);
    assert_eq!(rd(&mut u, reg::LSR) & lsr::DR, 0);
}

#[test]
fn larger_fifo_capacity_is_honoured() {
    let line = RecordingLine::default();
    let mut u: Serial<_, _, 64> = Serial::new(BASE, line, VecSink::default());
    u.io_write(
        BASE + reg::IIR_FCR,
        AccessWidth::Byte,
        u32::from(fcr::ENABLE),
    );
    for i in 0..64 {
        u.push_input(i as u8).unwrap();
    }
    assert_eq!(u.push_input(0), Err(InputError::Full { queued: 64 }));
}
