//! Hostile and damaged images: each defect gives its typed error (or
//! problem from `check`) with the offending values, never a panic.
#![cfg(feature = "std")]
mod common;
use common::*;

use ponte_vhd::format::{DynamicHeader, Footer, LocatorCode};
use ponte_vhd::{
    check, Disk, Error, OpenOptions, Problem, Region, Structure, VecDevice, VecStorage,
};

type D = Disk<VecDevice, Vec<u32>, 8>;

fn try_open(dev: VecDevice, options: &OpenOptions) -> Result<D, Error> {
    Disk::open(dev, options, &mut VecStorage, &mut MemResolver::default())
}

fn problems(dev: &VecDevice) -> Vec<Problem> {
    let mut out = Vec::new();
    check(
        &mut dev.clone(),
        &OpenOptions::default(),
        &mut VecStorage,
        &mut |p| out.push(*p),
    )
    .unwrap();
    out
}

fn header(dev: &VecDevice) -> DynamicHeader {
    DynamicHeader::parse(dev.bytes[512..1536].try_into().unwrap()).unwrap()
}

/// Rewrites the dynamic header (with a correct checksum).
fn set_header(dev: &mut VecDevice, h: &DynamicHeader) {
    dev.bytes[512..1536].copy_from_slice(&h.to_bytes());
}

fn footer(dev: &VecDevice) -> Footer {
    let n = dev.bytes.len();
    Footer::parse(dev.bytes[n - 512..].try_into().unwrap()).unwrap()
}

/// Rewrites both footer copies (with correct checksums).
fn set_footer(dev: &mut VecDevice, f: &Footer) {
    let n = dev.bytes.len();
    let b = f.to_bytes();
    dev.bytes[n - 512..].copy_from_slice(&b);
    if f.disk_type != 2 {
        dev.bytes[..512].copy_from_slice(&b);
    }
}

fn set_bat(dev: &mut VecDevice, block: usize, entry: u32) {
    let t = header(dev).table_offset as usize + 4 * block;
    dev.bytes[t..t + 4].copy_from_slice(&entry.to_be_bytes());
}

/// A dynamic image with blocks 0 and 1 allocated.
fn two_blocks() -> VecDevice {
    let mut d = open(
        dynamic(8 << 20, 1 << 20, 1),
        &rw(),
        &mut MemResolver::default(),
    );
    d.write_at(0, &[1; 4096]).unwrap();
    d.write_at(1 << 20, &[2; 4096]).unwrap();
    d.flush().unwrap();
    d.into_devices().next().unwrap()
}

#[test]
fn truncated_files() {
    for len in [0usize, 1, 100, 511] {
        let dev = VecDevice::from_bytes(vec![0; len]);
        assert_eq!(
            try_open(dev, &OpenOptions::default()).err(),
            Some(Error::Malformed(Problem::FileTooSmall { len: len as u64 }))
        );
    }
    // Only the footer copy and part of the header survive.
    let mut dev = two_blocks();
    dev.bytes.truncate(1000);
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::DataOffsetOutOfFile {
            data_offset: 512,
            file_len: 1000
        }))
    );
    // The second block is cut: the tail footer is gone, the copy at 0 is
    // used, and the block no longer fits.
    let mut dev = two_blocks();
    let second = u32::from_be_bytes(dev.bytes[1536 + 4..1536 + 8].try_into().unwrap());
    let cut = second as usize * 512 + 4096;
    dev.bytes.truncate(cut);
    let err = try_open(dev.clone(), &OpenOptions::default()).err();
    assert_eq!(
        err,
        Some(Error::Malformed(Problem::BlockOutOfFile {
            block: 1,
            sector: second,
            limit: cut as u64
        }))
    );
    // A fixed image shorter than its size.
    let mut dev = fixed(1 << 20, 1);
    let f = footer(&dev);
    dev.bytes.drain(0..4096);
    let _ = f;
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::FixedDataTruncated {
            size: 1 << 20,
            file_len: (1 << 20) + 512 - 4096
        }))
    );
}

#[test]
fn bad_footer_checksum() {
    let mut dev = fixed(1 << 20, 1);
    let n = dev.bytes.len();
    dev.bytes[n - 512 + 24] ^= 0x01; // timestamp
    let f = footer(&dev);
    let computed = Footer::compute_checksum(dev.bytes[n - 512..].try_into().unwrap());
    let want = Problem::BadChecksum {
        structure: Structure::Footer,
        stored: f.checksum,
        computed,
    };
    assert_eq!(computed, f.checksum.wrapping_sub(1));
    assert_eq!(
        try_open(dev.clone(), &OpenOptions::default()).err(),
        Some(Error::Malformed(want))
    );
    assert_eq!(problems(&dev), vec![want]);
    // Accepted explicitly, for recovery.
    let lenient = OpenOptions {
        accept_bad_checksums: true,
        ..OpenOptions::default()
    };
    let d = try_open(dev, &lenient).unwrap();
    assert_eq!(d.size(), 1 << 20);
}

#[test]
fn bad_tail_footer_falls_back_to_copy() {
    let mut dev = two_blocks();
    let n = dev.bytes.len();
    dev.bytes[n - 512..n - 504].copy_from_slice(b"garbage!");
    let mut d = try_open(dev.clone(), &OpenOptions::default()).unwrap();
    let mut buf = [0u8; 4096];
    d.read_at(1 << 20, &mut buf).unwrap();
    assert_eq!(buf, [2; 4096]);
    // A file not ending with a footer is what an interrupted append
    // leaves: not a problem, reported in the summary.
    assert_eq!(problems(&dev), vec![]);
    let s = check(
        &mut dev.clone(),
        &OpenOptions::default(),
        &mut VecStorage,
        &mut |_| {},
    )
    .unwrap();
    assert!(s.tail_footer_missing);
    // A flush of a writable disk puts the footer back at the end.
    let mut d = try_open(dev.clone(), &rw()).unwrap();
    d.flush().unwrap();
    let fixed_dev = d.into_devices().next().unwrap();
    assert_eq!(fixed_dev.bytes.len(), n);
    assert_eq!(fixed_dev.bytes[n - 512..], fixed_dev.bytes[..512]);
    // So does the next append.
    let mut d = try_open(dev, &rw()).unwrap();
    d.write_at(5 << 20, &[3; 512]).unwrap();
    d.flush().unwrap();
    let dev = d.into_devices().next().unwrap();
    let s = check(
        &mut dev.clone(),
        &OpenOptions::default(),
        &mut VecStorage,
        &mut |_| {},
    )
    .unwrap();
    assert!(!s.tail_footer_missing);
    assert_eq!(s.problems, 0);
    let mut d = try_open(dev, &OpenOptions::default()).unwrap();
    d.read_at(5 << 20, &mut buf[..512]).unwrap();
    assert_eq!(buf[..512], [3; 512]);
}

#[test]
fn damaged_tail_footer_of_dynamic_image() {
    let mut dev = two_blocks();
    let n = dev.bytes.len();
    dev.bytes[n - 512 + 40] ^= 0x10; // original size
    let raw: [u8; 512] = dev.bytes[n - 512..].try_into().unwrap();
    let f = Footer::parse(&raw).unwrap();
    let want = Problem::BadChecksum {
        structure: Structure::Footer,
        stored: f.checksum,
        computed: Footer::compute_checksum(&raw),
    };
    assert_eq!(problems(&dev), vec![want]);
    // The copy at offset 0 is intact, so the image opens.
    let mut d = try_open(dev, &OpenOptions::default()).unwrap();
    let mut buf = [0u8; 8];
    d.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [1; 8]);
}

#[test]
fn tail_differing_from_copy_loses_to_copy() {
    // A tail footer that parses but differs from the copy (e.g. guest data
    // shaped like a footer at the end of an interrupted append) is not
    // trusted.
    let mut dev = two_blocks();
    let n = dev.bytes.len();
    let mut f = footer(&dev);
    f.current_size = 4 << 20;
    let b = f.to_bytes();
    dev.bytes[n - 512..].copy_from_slice(&b);
    assert_eq!(problems(&dev), vec![Problem::FooterCopyMismatch]);
    let d = try_open(dev, &OpenOptions::default()).unwrap();
    assert_eq!(d.size(), 8 << 20);
}

/// Recomputes the checksum of the footer at `at` (the one's complement of
/// the sum of its bytes, the checksum field counted as zero).
fn reseal_footer(dev: &mut VecDevice, at: usize) {
    let sum = !dev.bytes[at..at + 512]
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    dev.bytes[at + 64..at + 68].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn tail_differing_only_in_reserved_bytes_is_the_same_footer() {
    // Bytes 85..512 of a footer are reserved: a tail and a copy that
    // differ only there (one reserved byte set in each, so the checksums
    // agree too) hold the same footer, and nothing is reported.
    let mut dev = two_blocks();
    let n = dev.bytes.len();
    dev.bytes[100] = 1;
    dev.bytes[n - 512 + 101] = 1;
    reseal_footer(&mut dev, 0);
    reseal_footer(&mut dev, n - 512);
    assert_ne!(dev.bytes[..512], dev.bytes[n - 512..]);
    assert_eq!(problems(&dev), vec![]);
    assert_eq!(
        try_open(dev, &OpenOptions::default()).unwrap().size(),
        8 << 20
    );
}

#[test]
fn missing_tail_with_damaged_copy_opens_only_for_recovery() {
    // No footer at the end and a copy whose checksum is wrong: the file
    // has no trustworthy footer, so opening fails with the tail's cookie;
    // recovery takes the copy and reports its checksum.
    let mut dev = two_blocks();
    let n = dev.bytes.len();
    dev.bytes[n - 512..n - 504].copy_from_slice(b"garbage!");
    dev.bytes[67] ^= 0x01; // the copy's stored checksum, lowest byte
    assert_eq!(
        try_open(dev.clone(), &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::BadCookie {
            structure: Structure::Footer,
            found: *b"garbage!",
        }))
    );
    let stored = u32::from_be_bytes(dev.bytes[64..68].try_into().unwrap());
    let lenient = OpenOptions {
        accept_bad_checksums: true,
        ..OpenOptions::default()
    };
    let mut found = Vec::new();
    let summary = check(&mut dev.clone(), &lenient, &mut VecStorage, &mut |p| {
        found.push(*p)
    })
    .unwrap();
    assert_eq!(
        found,
        vec![Problem::BadChecksum {
            structure: Structure::FooterCopy,
            stored,
            // Flipping the low bit of the stored value is what made it wrong.
            computed: stored ^ 0x01,
        }]
    );
    assert!(summary.tail_footer_missing);
    let mut d = try_open(dev, &lenient).unwrap();
    let mut buf = [0u8; 8];
    d.read_at(1 << 20, &mut buf).unwrap();
    assert_eq!(buf, [2; 8]);
}

#[test]
fn old_511_byte_footer_is_accepted() {
    let mut dev = fixed(1 << 20, 1);
    dev.bytes.pop();
    let d = try_open(dev, &OpenOptions::default()).unwrap();
    assert_eq!(d.size(), 1 << 20);
}

#[test]
fn bad_header_checksum() {
    let mut dev = two_blocks();
    dev.bytes[512 + 28] ^= 0x80; // max table entries, high byte
    let raw: [u8; 1024] = dev.bytes[512..1536].try_into().unwrap();
    let h = DynamicHeader::parse(&raw).unwrap();
    let want = Problem::BadChecksum {
        structure: Structure::DynamicHeader,
        stored: h.checksum,
        computed: DynamicHeader::compute_checksum(&raw),
    };
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(want))
    );
    // Only the checksum wrong, accepted for recovery.
    let mut dev = two_blocks();
    dev.bytes[512 + 36] ^= 0xFF;
    assert!(try_open(dev.clone(), &OpenOptions::default()).is_err());
    let lenient = OpenOptions {
        accept_bad_checksums: true,
        ..OpenOptions::default()
    };
    let mut d = try_open(dev, &lenient).unwrap();
    let mut buf = [0u8; 16];
    d.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [1; 16]);
}

#[test]
fn bat_entry_outside_file() {
    let mut dev = two_blocks();
    let limit = dev.bytes.len() as u64 - 512;
    set_bat(&mut dev, 3, 0x00F0_0000);
    let want = Problem::BlockOutOfFile {
        block: 3,
        sector: 0x00F0_0000,
        limit,
    };
    assert_eq!(
        try_open(dev.clone(), &OpenOptions::default()).err(),
        Some(Error::Malformed(want))
    );
    assert_eq!(problems(&dev), vec![want]);
}

#[test]
fn overlapping_bat_entries() {
    let mut dev = two_blocks();
    let first = u32::from_be_bytes(dev.bytes[1536..1540].try_into().unwrap());
    // Block 5 starts 8 sectors into block 0.
    set_bat(&mut dev, 5, first + 8);
    let got = problems(&dev);
    assert_eq!(
        got,
        vec![Problem::BlocksOverlap {
            first: 0,
            second: 5,
            first_sector: first,
            second_sector: first + 8
        }]
    );
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(got[0]))
    );
    // Two entries naming the same block.
    let mut dev = two_blocks();
    let first = u32::from_be_bytes(dev.bytes[1536..1540].try_into().unwrap());
    set_bat(&mut dev, 7, first);
    assert!(matches!(
        problems(&dev)[..],
        [Problem::BlocksOverlap { first_sector, second_sector, .. }]
            if first_sector == first && second_sector == first
    ));
}

#[test]
fn block_overlapping_metadata() {
    let mut dev = two_blocks();
    set_bat(&mut dev, 2, 2); // sector 2 = byte 1024, inside the dynamic header
    let got = problems(&dev);
    assert!(got.contains(&Problem::BlockOverlapsMetadata {
        block: 2,
        sector: 2,
        region: Region::DynamicHeader
    }));
    assert!(got.contains(&Problem::BlockOverlapsMetadata {
        block: 2,
        sector: 2,
        region: Region::Bat
    }));
    assert!(try_open(dev, &OpenOptions::default()).is_err());
}

#[test]
fn absurd_block_sizes() {
    for bs in [0u32, 3, 256, 1000, 3 << 20, 1 << 31, u32::MAX] {
        let mut dev = two_blocks();
        let mut h = header(&dev);
        h.block_size = bs;
        set_header(&mut dev, &h);
        assert_eq!(
            try_open(dev, &OpenOptions::default()).err(),
            Some(Error::Malformed(Problem::BlockSizeInvalid {
                block_size: bs
            })),
            "{bs}"
        );
    }
}

#[test]
fn absurd_sizes_and_tables() {
    let mut dev = two_blocks();
    let mut f = footer(&dev);
    f.current_size = 1 << 60;
    set_footer(&mut dev, &f);
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::SizeOutOfRange {
            size: 1 << 60,
            max: 1 << 41
        }))
    );
    // Size larger than the table covers.
    let mut dev = two_blocks();
    let mut f = footer(&dev);
    f.current_size = 9 << 20;
    set_footer(&mut dev, &f);
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::TableTooSmall {
            max_table_entries: 8,
            needed: 9
        }))
    );
    // A table of 2^32-1 entries.
    let mut dev = two_blocks();
    let mut h = header(&dev);
    h.max_table_entries = u32::MAX;
    set_header(&mut dev, &h);
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::TableTooLarge {
            max_table_entries: u32::MAX,
            max: 1 << 21
        }))
    );
    // A table past the end of the file.
    let mut dev = two_blocks();
    let mut h = header(&dev);
    h.table_offset = u64::MAX - 2;
    set_header(&mut dev, &h);
    assert!(matches!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::TableOutOfFile { table_offset, table_len: 32, .. }))
            if table_offset == u64::MAX - 2
    ));
    // Unknown disk type.
    let mut dev = two_blocks();
    let mut f = footer(&dev);
    f.disk_type = 5;
    set_footer(&mut dev, &f);
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::UnknownDiskType { value: 5 }))
    );
    // Data offset far away.
    let mut dev = two_blocks();
    let mut f = footer(&dev);
    f.data_offset = u64::MAX - 10;
    set_footer(&mut dev, &f);
    assert!(matches!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::DataOffsetOutOfFile { data_offset, .. }))
            if data_offset == u64::MAX - 10
    ));
}

fn child_image() -> (VecDevice, VecDevice) {
    let base = dynamic(4 << 20, 1 << 20, 1);
    let child = child_of(&base, 1 << 20, 2);
    (base, child)
}

#[test]
fn locator_lengths_out_of_range() {
    let (_, child) = child_image();
    let limit = child.bytes.len() as u64 - 512;
    let h = header(&child);
    let slot = h
        .locators
        .iter()
        .position(|l| l.code == LocatorCode::W2ru)
        .unwrap();
    // Longer than its reserved space.
    let mut dev = child.clone();
    let mut h2 = h;
    h2.locators[slot].data_length = 513;
    set_header(&mut dev, &h2);
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::LocatorOutOfRange {
            slot: slot as u8,
            data_offset: h.locators[slot].data_offset,
            data_length: 513,
            space: 512,
            limit
        }))
    );
    // Data beyond the end of the file.
    let mut dev = child.clone();
    let mut h2 = h;
    h2.locators[slot].data_offset = limit - 4;
    set_header(&mut dev, &h2);
    assert!(matches!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::LocatorOutOfRange { data_offset, .. })) if data_offset == limit - 4
    ));
    // Huge space counted in bytes, data longer than ponte decodes.
    let mut dev = child.clone();
    let mut h2 = h;
    h2.locators[slot].data_space = 1 << 20;
    h2.locators[slot].data_length = 3000;
    h2.locators[slot].data_offset = 0;
    set_header(&mut dev, &h2);
    let got = problems(&dev);
    assert!(got.contains(&Problem::LocatorTooLong {
        slot: slot as u8,
        data_length: 3000
    }));
    // Offset + length overflowing.
    let mut dev = child;
    let mut h2 = h;
    h2.locators[slot].data_offset = u64::MAX;
    set_header(&mut dev, &h2);
    assert!(matches!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::Malformed(Problem::LocatorOutOfRange {
            data_offset: u64::MAX,
            ..
        }))
    ));
}

#[test]
fn parent_resolution_failures() {
    let (base, child) = child_image();
    // No parent to be found.
    assert_eq!(
        try_open(child.clone(), &OpenOptions::default()).err(),
        Some(Error::ParentNotFound { uuid: uuid(1) })
    );
    // A device with another UUID is not taken as the parent.
    let mut r = MemResolver::default();
    let other = dynamic(4 << 20, 1 << 20, 9);
    r.images.push((uuid(1), other));
    assert_eq!(
        Disk::<VecDevice, Vec<u32>, 8>::open(
            child.clone(),
            &OpenOptions::default(),
            &mut VecStorage,
            &mut r
        )
        .err(),
        Some(Error::ParentNotFound { uuid: uuid(1) })
    );
    // A chain deeper than the limit.
    let grandchild = child_of(&child, 1 << 20, 3);
    let mut r = MemResolver::default();
    r.add(base.clone());
    r.add(child.clone());
    assert_eq!(
        Disk::<VecDevice, Vec<u32>, 2>::open(
            grandchild,
            &OpenOptions::default(),
            &mut VecStorage,
            &mut r
        )
        .err(),
        Some(Error::ChainTooDeep { limit: 2 })
    );
    // Exactly at the limit is fine.
    let grandchild = child_of(&child, 1 << 20, 3);
    let mut r = MemResolver::default();
    r.add(base.clone());
    r.add(child.clone());
    let d = Disk::<VecDevice, Vec<u32>, 3>::open(
        grandchild,
        &OpenOptions::default(),
        &mut VecStorage,
        &mut r,
    )
    .unwrap();
    assert_eq!(d.depth(), 3);
    // A cycle: the child names itself as parent.
    let mut dev = child.clone();
    let mut h = header(&dev);
    h.parent_uuid = uuid(2);
    set_header(&mut dev, &h);
    assert_eq!(
        try_open(dev, &OpenOptions::default()).err(),
        Some(Error::ParentCycle { uuid: uuid(2) })
    );
    // A two-image cycle: A -> B -> A.
    let a = child.clone();
    let mut b = child_of(&a, 1 << 20, 3);
    let mut hb = header(&b);
    hb.parent_uuid = uuid(2);
    set_header(&mut b, &hb);
    let mut a2 = a.clone();
    let mut ha = header(&a2);
    ha.parent_uuid = uuid(3);
    set_header(&mut a2, &ha);
    let mut r = MemResolver::default();
    r.add(a2.clone());
    r.add(b.clone());
    r.add(a2);
    assert_eq!(
        Disk::<VecDevice, Vec<u32>, 8>::open(b, &OpenOptions::default(), &mut VecStorage, &mut r)
            .err(),
        Some(Error::ParentCycle { uuid: uuid(3) })
    );
}

#[test]
fn reads_and_writes_out_of_range() {
    let mut d = open(
        dynamic(1 << 20, 1 << 20, 1),
        &rw(),
        &mut MemResolver::default(),
    );
    let mut buf = [0u8; 2];
    assert_eq!(
        d.read_at((1 << 20) - 1, &mut buf),
        Err(Error::OutOfRange {
            offset: (1 << 20) - 1,
            len: 2,
            size: 1 << 20
        })
    );
    assert!(d.read_at(u64::MAX, &mut buf).is_err());
    assert!(d.write_at(u64::MAX - 1, &buf).is_err());
    let mut ro = open(
        dynamic(1 << 20, 1 << 20, 1),
        &OpenOptions::default(),
        &mut MemResolver::default(),
    );
    assert_eq!(ro.write_at(0, &buf), Err(Error::ReadOnly));
}

#[test]
fn random_corruption_never_panics() {
    let (base, child) = child_image();
    let mut with_data = two_blocks();
    with_data.bytes[2048] = 0; // keep the buffer type simple
    let samples = [with_data, child, fixed(256 << 10, 4)];
    let mut rng = Rng::new(99);
    for round in 0..1500 {
        let mut dev = samples[round % samples.len()].clone();
        let n = dev.bytes.len();
        for _ in 0..1 + rng.below(6) {
            // Corrupt metadata-rich areas: the first 8 KiB and the footer.
            let at = if rng.below(2) == 0 {
                rng.below(8192.min(n as u64)) as usize
            } else {
                n - 1 - rng.below(512) as usize
            };
            dev.bytes[at] = rng.next() as u8;
        }
        if rng.below(8) == 0 {
            dev.bytes.truncate(rng.below(n as u64) as usize);
        }
        let lenient = OpenOptions {
            accept_bad_checksums: rng.below(2) == 0,
            writable: true,
            ..OpenOptions::default()
        };
        let _ = problems(&dev);
        let mut r = MemResolver::default();
        r.add(base.clone());
        if let Ok(mut d) = D::open(dev, &lenient, &mut VecStorage, &mut r) {
            let size = d.size();
            let mut buf = vec![0u8; size.min(3 << 20) as usize];
            let _ = d.read_at(0, &mut buf);
            let w = vec![7u8; 1000.min(size as usize / 2)];
            let _ = d.write_at(size / 3, &w);
            let _ = d.flush();
        }
    }
}

#[test]
fn long_mac_alias_locator_is_not_decoded_and_accepted() {
    // A "Mac " alias blob is opaque to ponte: only its range is checked.
    let (base, child) = child_image();
    let mut dev = child;
    let mut h = header(&dev);
    let slot = h
        .locators
        .iter()
        .position(|l| l.code == LocatorCode::MacX)
        .unwrap();
    // Room for the blob between the last structure and the footer.
    let n = dev.bytes.len();
    let footer_bytes = dev.bytes.split_off(n - 512);
    dev.bytes.extend_from_slice(&[0xA5; 3072]);
    dev.bytes.extend_from_slice(&footer_bytes);
    h.locators[slot].code = LocatorCode::Mac;
    h.locators[slot].data_offset = (n - 512) as u64;
    h.locators[slot].data_length = 3000;
    h.locators[slot].data_space = 6;
    set_header(&mut dev, &h);
    assert_eq!(problems(&dev), vec![]);
    let mut r = MemResolver::default();
    r.add(base);
    assert!(Disk::<VecDevice, Vec<u32>, 8>::open(
        dev,
        &OpenOptions::default(),
        &mut VecStorage,
        &mut r
    )
    .is_ok());
}
