use super::*;

fn out(pic: &mut DualPic, port: u16, value: u8) {
    pic.io_write(port, AccessWidth::Byte, u32::from(value));
}

fn inb(pic: &mut DualPic, port: u16) -> u8 {
    pic.io_read(port, AccessWidth::Byte) as u8
}

/// The PC initialisation sequence (as Linux's init_8259A does): edge,
/// cascade, ICW4; master vectors 0x30, slave on IR2 with vectors 0x38.
fn initialised(icw4: u8) -> DualPic {
    let mut pic = DualPic::new();
    out(&mut pic, 0x20, 0x11);
    out(&mut pic, 0x21, 0x30);
    out(&mut pic, 0x21, 0x04);
    out(&mut pic, 0x21, icw4);
    out(&mut pic, 0xA0, 0x11);
    out(&mut pic, 0xA1, 0x38);
    out(&mut pic, 0xA1, 0x02);
    out(&mut pic, 0xA1, icw4);
    pic
}

fn pulse(pic: &mut DualPic, irq: u8) {
    pic.set_irq(irq, true);
    pic.set_irq(irq, false);
}

#[test]
fn fully_nested_priority_and_non_specific_eoi() {
    let mut pic = initialised(0x01);
    assert_eq!(pic.imr(), 0);
    pulse(&mut pic, 3);
    pulse(&mut pic, 1);
    assert!(pic.interrupt_output());
    assert_eq!(pic.acknowledge(), 0x31, "IR1 beats IR3");
    assert_eq!(pic.isr(), 1 << 1);
    // IR3 has lower priority than IR1 in service: held.
    assert!(!pic.interrupt_output());
    // IR0 has higher priority: nests.
    pulse(&mut pic, 0);
    assert_eq!(pic.acknowledge(), 0x30);
    assert_eq!(pic.isr(), 0b11);
    // Non-specific EOI clears the highest-priority in-service bit (IR0).
    out(&mut pic, 0x20, 0x20);
    assert_eq!(pic.isr(), 0b10);
    out(&mut pic, 0x20, 0x20);
    assert_eq!(pic.acknowledge(), 0x33);
}

#[test]
fn mask_hides_request_but_irr_and_isr_are_readable() {
    let mut pic = initialised(0x01);
    out(&mut pic, 0x21, 1 << 4);
    assert_eq!(inb(&mut pic, 0x21), 1 << 4);
    pulse(&mut pic, 4);
    assert!(!pic.interrupt_output());
    // OCW3 read IRR (0x0A), then ISR (0x0B).
    out(&mut pic, 0x20, 0x0A);
    assert_eq!(inb(&mut pic, 0x20), 1 << 4);
    out(&mut pic, 0x21, 0);
    assert_eq!(pic.acknowledge(), 0x34);
    out(&mut pic, 0x20, 0x0B);
    assert_eq!(inb(&mut pic, 0x20), 1 << 4);
    out(&mut pic, 0x20, 0x0A);
    assert_eq!(inb(&mut pic, 0x20), 0, "edge request cleared by INTA");
}

#[test]
fn edge_requests_coalesce_in_irr() {
    let mut pic = initialised(0x01);
    pulse(&mut pic, 4);
    pulse(&mut pic, 4);
    pulse(&mut pic, 4);
    assert_eq!(pic.acknowledge(), 0x34);
    out(&mut pic, 0x20, 0x20);
    assert!(!pic.interrupt_output(), "three edges, one interrupt");
    // A line held high gives no second edge.
    pic.set_irq(4, true);
    pic.acknowledge();
    out(&mut pic, 0x20, 0x20);
    pic.set_irq(4, true);
    assert!(!pic.interrupt_output());
}

#[test]
fn auto_eoi_leaves_nothing_in_service() {
    let mut pic = initialised(0x03);
    pulse(&mut pic, 5);
    assert_eq!(pic.acknowledge(), 0x35);
    assert_eq!(pic.isr(), 0);
    pulse(&mut pic, 6);
    assert!(pic.interrupt_output(), "no EOI needed");
}

#[test]
fn level_request_is_redelivered_after_eoi_while_raised() {
    let mut pic = initialised(0x01);
    out(&mut pic, 0x4D0, 1 << 5);
    pic.set_irq(5, true);
    assert_eq!(pic.acknowledge(), 0x35);
    assert!(!pic.interrupt_output(), "in service");
    out(&mut pic, 0x20, 0x20);
    assert!(pic.interrupt_output(), "still raised after EOI");
    assert_eq!(pic.acknowledge(), 0x35);
    pic.set_irq(5, false);
    out(&mut pic, 0x20, 0x20);
    assert!(!pic.interrupt_output());
}

#[test]
fn elcr_reserved_bits_read_zero() {
    let mut pic = initialised(0x01);
    out(&mut pic, 0x4D0, 0xFF);
    out(&mut pic, 0x4D1, 0xFF);
    // IRQ 0, 1, 2, 8 and 13 cannot be level triggered.
    assert_eq!(inb(&mut pic, 0x4D0), 0xF8);
    assert_eq!(inb(&mut pic, 0x4D1), 0xDE);
    assert_eq!(pic.io_read(0x4D0, AccessWidth::Word), 0xDEF8);
    // A word write sets both, with the same reserved bits.
    pic.io_write(0x4D0, AccessWidth::Word, 0x2120);
    assert_eq!(inb(&mut pic, 0x4D0), 0x20);
    assert_eq!(inb(&mut pic, 0x4D1), 0x00);
    pic.io_write(0x4D0, AccessWidth::Word, 0xFFFF);
    assert_eq!(pic.io_read(0x4D0, AccessWidth::Word), 0xDEF8);
}

#[test]
fn cascade_through_the_slave() {
    let mut pic = initialised(0x01);
    pulse(&mut pic, 10);
    assert!(pic.interrupt_output());
    assert_eq!(pic.acknowledge(), 0x3A);
    assert_eq!(pic.isr(), (1 << 10) | (1 << 2));
    // Slave EOI then master EOI, as the guest does.
    out(&mut pic, 0xA0, 0x20);
    out(&mut pic, 0x20, 0x20);
    assert_eq!(pic.isr(), 0);
    // Two slave requests in a row are both delivered.
    pulse(&mut pic, 12);
    pulse(&mut pic, 9);
    assert_eq!(pic.acknowledge(), 0x39);
    out(&mut pic, 0xA0, 0x20);
    out(&mut pic, 0x20, 0x20);
    assert_eq!(pic.acknowledge(), 0x3C);
    // Masking IR2 on the master hides the whole slave.
    out(&mut pic, 0xA0, 0x20);
    out(&mut pic, 0x20, 0x20);
    out(&mut pic, 0x21, 1 << 2);
    pulse(&mut pic, 14);
    assert!(!pic.interrupt_output());
    // The cascade input cannot be driven from outside.
    let mut pic = initialised(0x01);
    pic.set_irq(2, true);
    assert!(!pic.interrupt_output());
}

#[test]
fn spurious_irq7_and_irq15_when_the_request_vanishes() {
    let mut pic = initialised(0x01);
    // Nothing requested at all.
    assert_eq!(pic.acknowledge(), 0x37);
    assert_eq!(pic.isr(), 0, "spurious IR7 is not put in service");
    // Level request withdrawn before INTA.
    out(&mut pic, 0x4D0, 1 << 5);
    pic.set_irq(5, true);
    assert!(pic.interrupt_output());
    pic.set_irq(5, false);
    assert_eq!(pic.acknowledge(), 0x37);
    assert_eq!(pic.isr(), 0);
    // Slave level request withdrawn after the master latched IR2:
    // the slave answers IR7 (IRQ 15), the master puts IR2 in service.
    out(&mut pic, 0x4D1, 1 << 3);
    pic.set_irq(11, true);
    pic.set_irq(11, false);
    assert_eq!(pic.acknowledge(), 0x3F);
    assert_eq!(pic.isr(), 1 << 2);
}

#[test]
fn specific_eoi_and_rotation() {
    let mut pic = initialised(0x01);
    pulse(&mut pic, 1);
    pulse(&mut pic, 6);
    assert_eq!(pic.acknowledge(), 0x31);
    // Specific EOI for level 6 does not touch IR1.
    out(&mut pic, 0x20, 0x66);
    assert_eq!(pic.isr(), 1 << 1);
    // Rotate on non-specific EOI: IR1 becomes the lowest priority.
    out(&mut pic, 0x20, 0xA0);
    assert_eq!(pic.isr(), 0);
    pulse(&mut pic, 1);
    // Priority is now 2,3,4,5,6,7,0,1: IR6 first.
    assert_eq!(pic.acknowledge(), 0x36);
    out(&mut pic, 0x20, 0x20);
    assert_eq!(pic.acknowledge(), 0x31);
    out(&mut pic, 0x20, 0x20);
    // Set priority: IR4 lowest, so IR5 is the highest.
    out(&mut pic, 0x20, 0xC4);
    pulse(&mut pic, 4);
    pulse(&mut pic, 0);
    pulse(&mut pic, 5);
    assert_eq!(pic.acknowledge(), 0x35);
    // Rotate on specific EOI for level 5: IR5 lowest, IR6 highest.
    out(&mut pic, 0x20, 0xE5);
    assert_eq!(pic.acknowledge(), 0x30);
}

#[test]
fn rotate_in_auto_eoi_mode() {
    let mut pic = initialised(0x03);
    out(&mut pic, 0x20, 0x80);
    pulse(&mut pic, 0);
    assert_eq!(pic.acknowledge(), 0x30);
    // IR0 is now the lowest: IR7 beats it.
    pulse(&mut pic, 0);
    pulse(&mut pic, 7);
    assert_eq!(pic.acknowledge(), 0x37);
}

#[test]
fn special_mask_mode_lets_lower_levels_through() {
    let mut pic = initialised(0x01);
    pulse(&mut pic, 3);
    assert_eq!(pic.acknowledge(), 0x33);
    pulse(&mut pic, 5);
    assert!(!pic.interrupt_output());
    // Mask IR3 and enter special mask mode (OCW3 ESMM|SMM).
    out(&mut pic, 0x21, 1 << 3);
    out(&mut pic, 0x20, 0x68);
    assert!(pic.interrupt_output());
    assert_eq!(pic.acknowledge(), 0x35);
    // Leave it: IR3 in service blocks lower levels again.
    out(&mut pic, 0x20, 0x63); // specific EOI 3
    out(&mut pic, 0x20, 0x48);
    out(&mut pic, 0x20, 0x65); // specific EOI 5
    out(&mut pic, 0x21, 0);
    assert_eq!(pic.isr(), 0);
}

#[test]
fn poll_mode_reads_the_level_and_acknowledges() {
    let mut pic = initialised(0x01);
    pulse(&mut pic, 6);
    out(&mut pic, 0x20, 0x0C);
    assert_eq!(inb(&mut pic, 0x20), 0x86);
    assert_eq!(pic.isr(), 1 << 6);
    out(&mut pic, 0x20, 0x0C);
    assert_eq!(inb(&mut pic, 0x20), 0x00, "nothing pending");
    // The poll is a one-shot: the next read is IRR again.
    assert_eq!(inb(&mut pic, 0x20), 0);
}

#[test]
fn icw1_resets_mask_and_edge_sense() {
    let mut pic = initialised(0x01);
    out(&mut pic, 0x21, 0xFF);
    pic.set_irq(3, true);
    let mut pic2 = pic.clone();
    out(&mut pic2, 0x20, 0x11);
    out(&mut pic2, 0x21, 0x30);
    out(&mut pic2, 0x21, 0x04);
    out(&mut pic2, 0x21, 0x01);
    assert_eq!(pic2.imr() & 0xFF, 0, "ICW1 clears the mask");
    assert!(!pic2.interrupt_output(), "held edge input needs a new rise");
    pic2.set_irq(3, false);
    pic2.set_irq(3, true);
    assert_eq!(pic2.acknowledge(), 0x33);
    // ICW1 LTIM makes every input level-triggered.
    out(&mut pic2, 0x20, 0x19);
    out(&mut pic2, 0x21, 0x30);
    out(&mut pic2, 0x21, 0x04);
    out(&mut pic2, 0x21, 0x01);
    assert!(pic2.interrupt_output(), "level input high requests");
    // Single mode without ICW4: two bytes only, then IMR.
    let mut single = DualPic::new();
    out(&mut single, 0x20, 0x12);
    out(&mut single, 0x21, 0x08);
    out(&mut single, 0x21, 0xFE);
    assert_eq!(single.imr() & 0xFF, 0xFE);
}

#[test]
fn special_fully_nested_mode_lets_higher_slave_requests_nest() {
    for (icw4, nests) in [(0x01, false), (0x11, true)] {
        let mut pic = initialised(icw4);
        pulse(&mut pic, 9);
        assert_eq!(pic.acknowledge(), 0x39);
        // IRQ 8 outranks IRQ 9 on the slave, but the master sees both on IR2.
        pulse(&mut pic, 8);
        assert_eq!(
            pic.interrupt_output(),
            nests,
            "ICW4 {icw4:#x}: IR2 in service blocks the slave unless SFNM"
        );
        if nests {
            assert_eq!(pic.acknowledge(), 0x38);
            assert_eq!(pic.isr(), (1 << 8) | (1 << 9) | (1 << 2));
        }
    }
}
