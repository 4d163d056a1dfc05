//! Byte layouts, checksums, geometry and size rules checked against values
//! worked out by hand from the VHD specification.
#![cfg(feature = "std")]
mod common;
use common::*;

use ponte_vhd::create::{create_dynamic, create_fixed, CreateOptions, SizeMode};
use ponte_vhd::format::{
    bitmap_size, checksum, DynamicHeader, Footer, Geometry, LocatorCode, ParentLocator,
    CREATOR_CURRENT_SIZE, FOOTER_SIZE,
};
use ponte_vhd::{BlockDevice, DiskType, Uuid, VecDevice};

#[test]
fn checksum_of_cookie_only_sector() {
    // "conectix" = 99+111+110+101+99+116+105+120 = 861; !861 = 0xFFFFFCA2.
    let mut b = [0u8; 512];
    b[..8].copy_from_slice(b"conectix");
    assert_eq!(checksum(&b, 64..68), 0xFFFF_FCA2);
    // Bytes of the checksum field itself do not count.
    b[64..68].copy_from_slice(&[0xAB, 0xCD, 0xEF, 0x01]);
    assert_eq!(checksum(&b, 64..68), 0xFFFF_FCA2);
    // One more byte of value 3 elsewhere: 864 -> 0xFFFFFC9F.
    b[100] = 3;
    assert_eq!(checksum(&b, 64..68), 0xFFFF_FC9F);
}

#[test]
fn stored_checksum_complements_byte_sum() {
    // The specification's definition: checksum = one's complement of the
    // sum of all other bytes, so sum + checksum == 0xFFFFFFFF.
    let f = ponte_vhd::create::new_footer(
        DiskType::Dynamic,
        &CreateOptions::new(10 << 20, uuid(9), 12345),
    )
    .unwrap();
    let b = f.to_bytes();
    let sum: u32 = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, &x)| u32::from(x))
        .sum();
    let stored = u32::from_be_bytes([b[64], b[65], b[66], b[67]]);
    assert_eq!(sum.wrapping_add(stored), 0xFFFF_FFFF);
    let h = DynamicHeader::parse(&{
        let mut dev = dynamic(10 << 20, 2 << 20, 1);
        let mut raw = [0u8; 1024];
        dev.read_at(512, &mut raw).unwrap();
        raw
    })
    .unwrap();
    let hb = h.to_bytes();
    let sum: u32 = hb
        .iter()
        .enumerate()
        .filter(|(i, _)| !(36..40).contains(i))
        .map(|(_, &x)| u32::from(x))
        .sum();
    assert_eq!(sum.wrapping_add(h.checksum), 0xFFFF_FFFF);
}

fn g(c: u16, h: u8, s: u8) -> Geometry {
    Geometry {
        cylinders: c,
        heads: h,
        sectors_per_track: s,
    }
}

#[test]
fn geometry_matches_hand_computed_values() {
    // 10 MiB = 20480 sectors: spt 17, cth 1204, heads ceil(1204/1024)=2 -> 4,
    // cylinders 1204/4 = 301.
    assert_eq!(Geometry::for_size(10 << 20), g(301, 4, 17));
    // 64 MiB = 131072: cth 7710, heads 8, 7710 < 8192, cylinders 963.
    assert_eq!(Geometry::for_size(64 << 20), g(963, 8, 17));
    // 100 MiB = 204800: cth 12047, heads 12, cylinders 1003.
    assert_eq!(Geometry::for_size(100 << 20), g(1003, 12, 17));
    // 200 MiB = 409600: heads 24 > 16 -> spt 31, cth 13212 < 16384,
    // cylinders 825.
    assert_eq!(Geometry::for_size(200 << 20), g(825, 16, 31));
    // 1 GiB = 2097152: -> spt 31 cth 67650 >= 16384 -> spt 63, cth 33288,
    // cylinders 2080.
    assert_eq!(Geometry::for_size(1 << 30), g(2080, 16, 63));
    // 65535*16*63 sectors: the 255-sector branch, cth 259056, cyl 16191.
    assert_eq!(Geometry::for_size(65535 * 16 * 63 * 512), g(16191, 16, 255));
    // Beyond 65535*16*255 sectors: clamped to the maximal geometry.
    let max = Geometry::for_size(200 << 30);
    assert_eq!(max, g(65535, 16, 255));
    assert!(max.is_maximal());
    // Rounding down: 64 MiB describes 963*8*17 = 130968 sectors.
    assert_eq!(Geometry::for_size(64 << 20).size(), 130968 * 512);
}

#[test]
fn footer_byte_layout() {
    let f = Footer {
        features: 2,
        format_version: 0x0001_0000,
        data_offset: 0x0102_0304_0506_0708,
        timestamp: 0x1122_3344,
        creator_app: *b"abcd",
        creator_version: 0x0005_0003,
        creator_host_os: *b"Wi2k",
        original_size: 0x0000_0001_0000_0000,
        current_size: 0x0000_0002_0000_0000,
        geometry: g(0x1234, 0x10, 0x3F),
        disk_type: 3,
        checksum: 0,
        uuid: Uuid([0xA0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xAF]),
        saved_state: 1,
    };
    let b = f.to_bytes();
    assert_eq!(&b[0..8], b"conectix");
    assert_eq!(&b[8..12], &[0, 0, 0, 2]);
    assert_eq!(&b[12..16], &[0, 1, 0, 0]);
    assert_eq!(&b[16..24], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&b[24..28], &[0x11, 0x22, 0x33, 0x44]);
    assert_eq!(&b[28..32], b"abcd");
    assert_eq!(&b[32..36], &[0, 5, 0, 3]);
    assert_eq!(&b[36..40], b"Wi2k");
    assert_eq!(&b[40..48], &[0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(&b[48..56], &[0, 0, 0, 2, 0, 0, 0, 0]);
    assert_eq!(&b[56..60], &[0x12, 0x34, 0x10, 0x3F]);
    assert_eq!(&b[60..64], &[0, 0, 0, 3]);
    assert_eq!(b[68], 0xA0);
    assert_eq!(b[83], 0xAF);
    assert_eq!(b[84], 1);
    assert!(b[85..].iter().all(|&x| x == 0));
    let back = Footer::parse(&b).unwrap();
    assert!(back.checksum_ok(&b));
    assert_eq!(
        Footer {
            checksum: back.checksum,
            ..f
        },
        back
    );
}

#[test]
fn header_byte_layout() {
    let mut name = [0u16; 256];
    name[0] = u16::from(b'p');
    name[1] = 0x00E9; // é
    let mut locators = [ParentLocator::EMPTY; 8];
    locators[7] = ParentLocator {
        code: LocatorCode::W2ru,
        data_space: 1,
        data_length: 0x20,
        data_offset: 0x0000_0000_0000_1800,
    };
    let h = DynamicHeader {
        data_offset: u64::MAX,
        table_offset: 1536,
        header_version: 0x0001_0000,
        max_table_entries: 0x0000_0102,
        block_size: 0x0020_0000,
        checksum: 0,
        parent_uuid: Uuid([7; 16]),
        parent_timestamp: 0x0A0B_0C0D,
        parent_name: name,
        locators,
    };
    let b = h.to_bytes();
    assert_eq!(&b[0..8], b"cxsparse");
    assert_eq!(&b[8..16], &[0xFF; 8]);
    assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 6, 0]);
    assert_eq!(&b[24..28], &[0, 1, 0, 0]);
    assert_eq!(&b[28..32], &[0, 0, 1, 2]);
    assert_eq!(&b[32..36], &[0, 0x20, 0, 0]);
    assert_eq!(&b[40..56], &[7; 16]);
    assert_eq!(&b[56..60], &[0x0A, 0x0B, 0x0C, 0x0D]);
    assert_eq!(&b[60..64], &[0; 4]);
    // Parent name is UTF-16 big-endian.
    assert_eq!(&b[64..68], &[0, b'p', 0x00, 0xE9]);
    let loc = 576 + 7 * 24;
    assert_eq!(&b[loc..loc + 4], b"W2ru");
    assert_eq!(&b[loc + 4..loc + 8], &[0, 0, 0, 1]);
    assert_eq!(&b[loc + 8..loc + 12], &[0, 0, 0, 0x20]);
    assert_eq!(&b[loc + 12..loc + 16], &[0; 4]);
    assert_eq!(&b[loc + 16..loc + 24], &[0, 0, 0, 0, 0, 0, 0x18, 0]);
    assert!(b[768..].iter().all(|&x| x == 0));
    let back = DynamicHeader::parse(&b).unwrap();
    assert!(back.checksum_ok(&b));
    assert_eq!(back.parent_name_units(), &[u16::from(b'p'), 0xE9]);
    assert_eq!(
        DynamicHeader {
            checksum: back.checksum,
            ..h
        },
        back
    );
}

#[test]
fn bitmap_sizes_are_padded_to_sectors() {
    // 2 MiB: 4096 sectors -> 512 bytes. 512 KiB: 1024 sectors -> 128 bytes
    // padded to 512. 8 MiB: 16384 sectors -> 2048 bytes.
    assert_eq!(bitmap_size(2 << 20), 512);
    assert_eq!(bitmap_size(512 << 10), 512);
    assert_eq!(bitmap_size(8 << 20), 2048);
    assert_eq!(bitmap_size(512), 512);
}

fn footer_with(creator: &[u8; 4], current: u64, geometry: Geometry) -> Footer {
    let mut f =
        ponte_vhd::create::new_footer(DiskType::Dynamic, &CreateOptions::new(current, uuid(1), 0))
            .unwrap();
    f.creator_app = *creator;
    f.current_size = current;
    f.geometry = geometry;
    f
}

#[test]
fn virtual_size_follows_qemu_10_creator_rules() {
    let cur = 64 << 20;
    let geo = Geometry::for_size(cur);
    let chs = 130968 * 512;
    assert_eq!(footer_with(b"vpc ", cur, geo).virtual_size(), chs);
    assert_eq!(footer_with(b"qemu", cur, geo).virtual_size(), chs);
    for creator in [
        b"vbox", b"win ", b"qem2", b"d2v ", b"wa\0\0", b"tap\0", b"pnte",
    ] {
        assert_eq!(footer_with(creator, cur, geo).virtual_size(), cur);
    }
    // Maximal geometry: current size even for "vpc ".
    let big = 200u64 << 30;
    assert_eq!(
        footer_with(b"vpc ", big, g(65535, 16, 255)).virtual_size(),
        big
    );
}

#[test]
fn created_dynamic_image_layout() {
    let mut dev = VecDevice::new();
    let o = CreateOptions::new(10 << 20, uuid(3), 77);
    create_dynamic(&mut dev, &o).unwrap();
    let b = &dev.bytes;
    // 10 MiB / 2 MiB = 5 entries -> 20 bytes of BAT padded to 512.
    assert_eq!(b.len(), 512 + 1024 + 512 + 512);
    assert_eq!(&b[0..512], &b[b.len() - 512..]);
    assert_eq!(&b[512..520], b"cxsparse");
    assert!(b[1536..2048].iter().all(|&x| x == 0xFF));
    let f = Footer::parse(b[0..512].try_into().unwrap()).unwrap();
    assert_eq!(f.data_offset, 512);
    assert_eq!(f.disk_type, 3);
    assert_eq!(f.current_size, 10 << 20);
    assert_eq!(f.creator_app, CREATOR_CURRENT_SIZE);
    assert_eq!(f.timestamp, 77);
    let h = DynamicHeader::parse(b[512..1536].try_into().unwrap()).unwrap();
    assert_eq!(h.table_offset, 1536);
    assert_eq!(h.max_table_entries, 5);
    assert_eq!(h.block_size, 2 << 20);
}

#[test]
fn chs_exact_rounds_size_down_to_geometry() {
    let mut dev = VecDevice::new();
    let mut o = CreateOptions::new(64 << 20, uuid(4), 0);
    o.size_mode = SizeMode::ChsExact;
    let f = create_fixed(&mut dev, &o).unwrap();
    assert_eq!(f.current_size, 130968 * 512);
    assert_eq!(f.geometry, g(963, 8, 17));
    assert_eq!(dev.bytes.len() as u64, 130968 * 512 + FOOTER_SIZE as u64);
    assert_eq!(f.virtual_size(), 130968 * 512);
    // Readers applying the CHS rule see the same size.
    assert_eq!(f.geometry.size(), f.current_size);
    // Past 65535x16x255 sectors the geometry is maximal and readers use the
    // current size: 200 GiB stays 200 GiB.
    let mut o = CreateOptions::new(200 << 30, uuid(4), 0);
    o.size_mode = SizeMode::ChsExact;
    let f = ponte_vhd::create::new_footer(DiskType::Dynamic, &o).unwrap();
    assert_eq!(f.geometry, g(65535, 16, 255));
    assert_eq!(f.current_size, 200 << 30);
    assert_eq!(f.virtual_size(), 200 << 30);
}

#[test]
fn differencing_bitmap_bit_order() {
    // Writing sectors 0 and 9 of block 0 must set the MSB of byte 0 and bit
    // 0x40 of byte 1.
    // The parent holds data in the same block, which must not be copied.
    let mut base = dynamic(4 << 20, 2 << 20, 1);
    {
        let mut d = open(base, &rw(), &mut MemResolver::default());
        d.write_at(0, &[0x77; 64 * 512]).unwrap();
        d.flush().unwrap();
        base = d.into_devices().next().unwrap();
    }
    let base_bytes = base.bytes.clone();
    let child = child_of(&base, 2 << 20, 2);
    let mut r = MemResolver::default();
    r.add(base);
    let mut d = open(child, &rw(), &mut r);
    d.write_at(0, &[0x11; 512]).unwrap();
    d.write_at(9 * 512, &[0x22; 512]).unwrap();
    d.flush().unwrap();
    let mut devs = d.into_devices();
    let dev = devs.next().unwrap();
    let parent = devs.next().unwrap();
    let h = DynamicHeader::parse(dev.bytes[512..1536].try_into().unwrap()).unwrap();
    let t = h.table_offset as usize;
    let entry = u32::from_be_bytes(dev.bytes[t..t + 4].try_into().unwrap());
    let bitmap = entry as usize * 512;
    assert_eq!(dev.bytes[bitmap], 0x80);
    assert_eq!(dev.bytes[bitmap + 1], 0x40);
    assert!(dev.bytes[bitmap + 2..bitmap + 512].iter().all(|&x| x == 0));
    assert!(dev.bytes[bitmap + 512..bitmap + 1024]
        .iter()
        .all(|&x| x == 0x11));
    // Sectors 1..9 and 10..64 of the child's block hold nothing copied from
    // the parent.
    assert!(dev.bytes[bitmap + 1024..bitmap + 10 * 512]
        .iter()
        .all(|&x| x == 0));
    assert!(dev.bytes[bitmap + 11 * 512..bitmap + 65 * 512]
        .iter()
        .all(|&x| x == 0));
    // And the parent was not written.
    assert!(parent.bytes == base_bytes);
}

#[test]
fn hand_made_bitmap_selects_child_or_parent() {
    // Byte 0 = 0x5A = 0101_1010: sectors 1, 3, 4, 6 come from the child.
    let mut base = dynamic(4 << 20, 2 << 20, 1);
    {
        let mut r = MemResolver::default();
        let mut d = open(base, &rw(), &mut r);
        d.write_at(0, &[0xBB; 8 * 512]).unwrap();
        d.flush().unwrap();
        base = d.into_devices().next().unwrap();
    }
    let mut child = child_of(&base, 2 << 20, 2);
    // Allocate block 0 of the child by hand at the footer's place.
    let len = child.bytes.len();
    let footer: Vec<u8> = child.bytes[len - 512..].to_vec();
    let block_at = len - 512;
    let span = 512 + (2 << 20);
    child.bytes.resize(block_at + span + 512, 0);
    child.bytes[block_at + span..].copy_from_slice(&footer);
    child.bytes[block_at] = 0x5A;
    for s in 0..8 {
        child.bytes[block_at + 512 + s * 512..block_at + 1024 + s * 512].fill(0xC0 + s as u8);
    }
    let h = DynamicHeader::parse(child.bytes[512..1536].try_into().unwrap()).unwrap();
    let t = h.table_offset as usize;
    child.bytes[t..t + 4].copy_from_slice(&((block_at / 512) as u32).to_be_bytes());
    let mut r = MemResolver::default();
    r.add(base);
    let mut d = open(child, &OpenOptions::default(), &mut r);
    let mut out = vec![0u8; 8 * 512];
    d.read_at(0, &mut out).unwrap();
    for s in 0..8 {
        let want = if [1, 3, 4, 6].contains(&s) {
            0xC0 + s as u8
        } else {
            0xBB
        };
        assert!(
            out[s * 512..(s + 1) * 512].iter().all(|&x| x == want),
            "sector {s}"
        );
    }
}

use ponte_vhd::OpenOptions;
