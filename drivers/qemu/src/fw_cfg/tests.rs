//! fw_cfg behaviour checked against QEMU's docs/specs/fw_cfg.rst and fw_cfg.c.

use super::*;
use std::vec::Vec;

fn select<const N: usize>(dev: &mut FwCfg<'_, N>, selector: u16) {
    dev.io_write(SELECTOR_PORT, AccessWidth::Word, u32::from(selector));
}

fn read<const N: usize>(dev: &mut FwCfg<'_, N>, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| dev.io_read(DATA_PORT, AccessWidth::Byte) as u8)
        .collect()
}

#[test]
fn signature_is_qemu_and_selected_at_reset() {
    let mut dev: FwCfg<'_, 4> = FwCfg::new(128 << 20, 1);
    assert_eq!(read(&mut dev, 4), b"QEMU", "signature selected after reset");
    select(&mut dev, key::SIGNATURE);
    assert_eq!(
        read(&mut dev, 6),
        b"QEMU\0\0",
        "reads past the end return 0"
    );
}

#[test]
fn selecting_resets_the_offset() {
    let mut dev: FwCfg<'_, 4> = FwCfg::new(0, 1);
    select(&mut dev, key::SIGNATURE);
    assert_eq!(read(&mut dev, 2), b"QE");
    select(&mut dev, key::SIGNATURE);
    assert_eq!(read(&mut dev, 4), b"QEMU");
}

#[test]
fn id_reports_the_traditional_interface_without_dma() {
    let mut dev: FwCfg<'_, 4> = FwCfg::new(0, 1);
    select(&mut dev, key::ID);
    assert_eq!(read(&mut dev, 4), [1, 0, 0, 0]);
}

#[test]
fn ram_size_and_cpu_counts_are_little_endian() {
    let mut dev: FwCfg<'_, 4> = FwCfg::new(0x1_2345_6000, 3);
    select(&mut dev, key::RAM_SIZE);
    assert_eq!(
        read(&mut dev, 9),
        [0x00, 0x60, 0x45, 0x23, 0x01, 0, 0, 0, 0]
    );
    select(&mut dev, key::NB_CPUS);
    assert_eq!(read(&mut dev, 2), [3, 0]);
    select(&mut dev, key::MAX_CPUS);
    assert_eq!(read(&mut dev, 2), [3, 0]);
}

#[test]
fn numa_table_has_zero_nodes_and_one_word_per_cpu() {
    let mut dev: FwCfg<'_, 4> = FwCfg::new(0, 2);
    select(&mut dev, key::NUMA);
    // u64 node count (0), then a node per CPU; nothing after 24 bytes.
    let bytes = read(&mut dev, 32);
    assert!(bytes.iter().all(|&b| b == 0));
    // The item length is observable through the offset: reading stops
    // advancing at 24, so a fresh select and 24 reads consume it exactly.
    select(&mut dev, key::NUMA);
    read(&mut dev, 24);
    assert_eq!(dev.offset, 24);
    read(&mut dev, 1);
    assert_eq!(dev.offset, 24);
}

#[test]
fn unknown_and_arch_selectors_read_zero() {
    let mut dev: FwCfg<'_, 4> = FwCfg::new(0, 1);
    for sel in [
        0x0006,
        0x0018,
        0x8000,
        0x8003,
        0x3fff,
        0xffff,
        key::FILE_FIRST,
    ] {
        select(&mut dev, sel);
        assert_eq!(read(&mut dev, 4), [0, 0, 0, 0], "selector {sel:#x}");
    }
}

#[test]
fn write_channel_bit_selects_the_same_item_and_data_writes_are_ignored() {
    let mut dev: FwCfg<'_, 4> = FwCfg::new(0, 1);
    select(&mut dev, key::WRITE_CHANNEL | key::SIGNATURE);
    dev.io_write(DATA_PORT, AccessWidth::Byte, u32::from(b'X'));
    assert_eq!(read(&mut dev, 4), b"QEMU");
}

#[test]
fn byte_reads_at_the_selector_port_read_data_and_wide_reads_are_invalid() {
    let mut dev: FwCfg<'_, 4> = FwCfg::new(0, 1);
    assert_eq!(
        dev.io_read(SELECTOR_PORT, AccessWidth::Byte),
        u32::from(b'Q')
    );
    assert_eq!(dev.io_read(DATA_PORT, AccessWidth::Word), u32::MAX);
    assert_eq!(
        dev.io_read(DATA_PORT, AccessWidth::Byte),
        u32::from(b'E'),
        "no advance on invalid reads"
    );
    // A byte write at the selector port is a data write, not a select.
    dev.io_write(SELECTOR_PORT, AccessWidth::Byte, 0x01);
    assert_eq!(dev.io_read(DATA_PORT, AccessWidth::Byte), u32::from(b'M'));
}

#[test]
fn file_directory_bytes_follow_the_spec_layout() {
    static E820: [u8; 20] = [7; 20];
    static HELLO: [u8; 5] = *b"hello";
    let mut dev: FwCfg<'_, 3> = FwCfg::new(0, 1);
    dev.add_file("opt/org.example/hello", &HELLO).unwrap();
    dev.add_file("etc/e820", &E820).unwrap();
    select(&mut dev, key::FILE_DIR);
    let dir = read(&mut dev, 4 + 64 * 3);
    assert_eq!(&dir[0..4], &[0, 0, 0, 2], "big-endian count");
    // Sorted by name: "etc/e820" < "opt/...".
    let e0 = &dir[4..68];
    assert_eq!(&e0[0..4], &[0, 0, 0, 20], "big-endian size");
    assert_eq!(&e0[4..6], &[0x00, 0x20], "big-endian selector 0x20");
    assert_eq!(&e0[6..8], &[0, 0]);
    assert_eq!(&e0[8..16], b"etc/e820");
    assert!(e0[16..].iter().all(|&b| b == 0), "NUL-padded name");
    let e1 = &dir[68..132];
    assert_eq!(&e1[0..4], &[0, 0, 0, 5]);
    assert_eq!(&e1[4..6], &[0x00, 0x21]);
    assert_eq!(&e1[8..8 + 21], b"opt/org.example/hello");
    assert_eq!(e1[8 + 21], 0);
    assert!(
        dir[132..].iter().all(|&b| b == 0),
        "the unused slot is zero"
    );
    // The directory's length covers all slots, like QEMU's.
    read(&mut dev, 1);
    assert_eq!(dev.offset as usize, 4 + 64 * 3);
    // Reading the files through their selectors.
    assert_eq!(dev.file_selector("opt/org.example/hello"), Some(0x21));
    select(&mut dev, 0x21);
    assert_eq!(read(&mut dev, 6), b"hello\0");
    select(&mut dev, 0x20);
    assert_eq!(read(&mut dev, 20), [7; 20]);
}

#[test]
fn file_errors_are_typed() {
    static D: [u8; 1] = [0];
    let mut dev: FwCfg<'_, 1> = FwCfg::new(0, 1);
    assert_eq!(dev.add_file("", &D), Err(FwCfgError::BadName { len: 0 }));
    let long = "x".repeat(56);
    assert_eq!(
        dev.add_file(&long, &D),
        Err(FwCfgError::BadName { len: 56 })
    );
    let longest = "y".repeat(55);
    dev.add_file(&longest, &D).unwrap();
    assert_eq!(dev.add_file(&longest, &D), Err(FwCfgError::DuplicateName));
    assert_eq!(
        dev.add_file("z", &D),
        Err(FwCfgError::DirectoryFull { capacity: 1 })
    );
    assert_eq!(
        dev.add_file("a\0b", &D),
        Err(FwCfgError::BadName { len: 3 })
    );
}

#[test]
fn kernel_initrd_and_cmdline_items() {
    static K: [u8; 3] = [1, 2, 3];
    static I: [u8; 2] = [9, 8];
    let mut dev: FwCfg<'_, 1> = FwCfg::new(0, 1);
    select(&mut dev, key::KERNEL_SIZE);
    assert_eq!(read(&mut dev, 4), [0; 4], "absent until set");
    dev.set_kernel(0x10_0000, &K).unwrap();
    dev.set_initrd(0x20_0000, &I).unwrap();
    dev.set_cmdline(0x2_0000, b"console=ttyS0").unwrap();
    select(&mut dev, key::KERNEL_ADDR);
    assert_eq!(read(&mut dev, 4), [0, 0, 0x10, 0]);
    select(&mut dev, key::KERNEL_SIZE);
    assert_eq!(read(&mut dev, 4), [3, 0, 0, 0]);
    select(&mut dev, key::KERNEL_DATA);
    assert_eq!(read(&mut dev, 4), [1, 2, 3, 0]);
    select(&mut dev, key::INITRD_ADDR);
    assert_eq!(read(&mut dev, 4), [0, 0, 0x20, 0]);
    select(&mut dev, key::INITRD_SIZE);
    assert_eq!(read(&mut dev, 4), [2, 0, 0, 0]);
    select(&mut dev, key::INITRD_DATA);
    assert_eq!(read(&mut dev, 2), [9, 8]);
    select(&mut dev, key::CMDLINE_SIZE);
    assert_eq!(read(&mut dev, 4), [14, 0, 0, 0], "length counts the NUL");
    select(&mut dev, key::CMDLINE_DATA);
    assert_eq!(read(&mut dev, 15), b"console=ttyS0\0\0");
    select(&mut dev, key::CMDLINE_ADDR);
    assert_eq!(read(&mut dev, 4), [0, 0, 2, 0]);
}
