//! The public API end to end: allocation-free use over caller memory,
//! zeroing, compaction, info and the file backend with parent lookup.
#![cfg(feature = "std")]
mod common;
use common::*;

use ponte_vhd::create::{create_differencing, create_dynamic, CreateOptions, ParentLink, SizeMode};
use ponte_vhd::format::CREATOR_CURRENT_SIZE;
use ponte_vhd::{
    check, BlockDevice, Disk, DiskType, Error, FileDevice, FileResolver, Geometry, NoParents,
    OpenOptions, SliceDevice, SlicePool, VecStorage,
};

#[test]
fn works_over_caller_memory_without_allocation() {
    // Image bytes and BAT storage both come from the caller.
    let mut mem = vec![0u8; 700 << 10];
    // 16 entries: 2 x 16 words of BAT and scratch, 1 of block marks, 8
    // default bitmap cache slots of 130.
    let mut words = [0u32; 2 * 16 + 1 + 8 * 130];
    let mut dev = SliceDevice::empty(&mut mem);
    let mut o = CreateOptions::new(4 << 20, uuid(1), 0);
    o.block_size = 256 << 10;
    create_dynamic(&mut dev, &o).unwrap();
    let mut pool = SlicePool::new(&mut words);
    let mut d: Disk<SliceDevice<'_>, &mut [u32], 1> =
        Disk::open(dev, &rw(), &mut pool, &mut NoParents).unwrap();
    d.write_at(1000, &[0xAA; 3000]).unwrap();
    d.write_at((4 << 20) - 10, &[0xBB; 10]).unwrap();
    d.flush().unwrap();
    let mut buf = [0u8; 4000];
    d.read_at(0, &mut buf).unwrap();
    assert!(buf[..1000].iter().all(|&b| b == 0));
    assert!(buf[1000..4000].iter().all(|&b| b == 0xAA));
    assert_eq!(d.info().allocated_blocks, 2);
    // The memory is full: a third block does not fit in 700 KiB, and the
    // failed allocation changes nothing.
    let err = d.write_at(2 << 20, &[1; 1]).unwrap_err();
    assert!(matches!(
        err,
        Error::Io(ponte_vhd::IoError::CapacityExceeded { .. })
    ));
    d.read_at(0, &mut buf).unwrap();
    assert!(buf[1000..4000].iter().all(|&b| b == 0xAA));
    assert_eq!(d.info().allocated_blocks, 2);
    d.flush().unwrap();
    let dev = d.into_devices().next().unwrap();
    let mut problems = 0;
    let mut words = [0u32; 2 * 16 + 1 + 8 * 130];
    check(
        dev,
        &OpenOptions::default(),
        &mut SlicePool::new(&mut words),
        &mut |_| problems += 1,
    )
    .unwrap();
    assert_eq!(problems, 0);
}

#[test]
fn table_storage_too_small() {
    let dev = dynamic(4 << 20, 256 << 10, 1);
    // 16 entries need 2 x 16 + 1 words and 8 default cache slots of 130.
    let mut words = [0u32; 2 * 16 + 1 + 8 * 130 - 1];
    let mut pool = SlicePool::new(&mut words);
    let r: Result<Disk<_, &mut [u32], 1>, _> =
        Disk::open(dev, &OpenOptions::default(), &mut pool, &mut NoParents);
    assert_eq!(
        r.err(),
        Some(Error::StorageTooSmall {
            needed: 2 * 16 + 1 + 8 * 130,
            available: 2 * 16 + 1 + 8 * 130 - 1
        })
    );
}

#[test]
fn write_zeroes_frees_dynamic_blocks_and_covers_parent() {
    let block = 64u64 << 10;
    let mut d = open(
        dynamic(1 << 20, block as u32, 1),
        &rw(),
        &mut MemResolver::default(),
    );
    d.write_at(0, &vec![7u8; (4 * block) as usize]).unwrap();
    assert_eq!(d.info().allocated_blocks, 4);
    // Blocks 1 and 2 whole, half of block 0 and of block 3.
    d.write_zeroes(block / 2, 3 * block).unwrap();
    assert_eq!(d.info().allocated_blocks, 2);
    assert_eq!(d.allocated_blocks(), 2);
    assert_eq!(d.disk_type(), DiskType::Dynamic);
    let mut buf = vec![0u8; (4 * block) as usize];
    d.read_at(0, &mut buf).unwrap();
    let half = (block / 2) as usize;
    assert!(buf[..half].iter().all(|&b| b == 7));
    assert!(buf[half..half + 3 * block as usize].iter().all(|&b| b == 0));
    assert!(buf[half + 3 * block as usize..].iter().all(|&b| b == 7));
    d.flush().unwrap();
    let base = d.into_devices().next().unwrap();
    // In a child, zeroing must hide the parent's data.
    let child = child_of(&base, block as u32, 2);
    let mut r = MemResolver::default();
    r.add(base);
    let mut c = open(child, &rw(), &mut r);
    c.write_zeroes(0, 2 * block).unwrap();
    c.flush().unwrap();
    c.read_at(0, &mut buf).unwrap();
    assert!(buf[..2 * block as usize].iter().all(|&b| b == 0));
    assert!(buf[(3 * block + block / 2) as usize..]
        .iter()
        .all(|&b| b == 7));
}

#[test]
fn compact_drops_zero_blocks_and_shrinks_file() {
    let block = 64u64 << 10;
    let size = 2u64 << 20;
    let mut d = open(
        dynamic(size, block as u32, 1),
        &rw(),
        &mut MemResolver::default(),
    );
    let mut rng = Rng::new(3);
    let mut model = vec![0u8; size as usize];
    // 32 blocks written; then every other one zeroed by writing zeros (so
    // the blocks stay allocated but hold nothing).
    rng.fill(&mut model);
    d.write_at(0, &model).unwrap();
    for b in (0..32).step_by(2) {
        let r = (b * block) as usize..((b + 1) * block) as usize;
        model[r.clone()].fill(0);
        d.write_at(b * block, &model[r]).unwrap();
    }
    d.flush().unwrap();
    assert_eq!(d.info().allocated_blocks, 32);
    let stats = d.compact(&mut [0u8; 16384]).unwrap();
    assert_eq!(stats.dropped_blocks, 16);
    // The 8 highest surviving blocks move into the 8 lowest holes... every
    // hole below the last kept block gets one.
    assert_eq!(stats.moved_blocks, 8);
    let span = block + 512;
    assert_eq!(stats.old_len - stats.new_len, 16 * span);
    let mut got = vec![0u8; size as usize];
    d.read_at(0, &mut got).unwrap();
    assert!(got == model);
    let dev = d.into_devices().next().unwrap();
    assert_eq!(dev.bytes.len() as u64, stats.new_len);
    let mut problems = Vec::new();
    let s = check(
        &mut dev.clone(),
        &OpenOptions::default(),
        &mut VecStorage,
        &mut |p| problems.push(*p),
    )
    .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.leaked_bytes, 0);
    assert_eq!(s.allocated_blocks, 16);
    let mut d = open(dev, &rw(), &mut MemResolver::default());
    d.read_at(0, &mut got).unwrap();
    assert!(got == model);
}

#[test]
fn info_describes_image() {
    let mut dev = ponte_vhd::VecDevice::new();
    let mut o = CreateOptions::new(100 << 20, uuid(5), 4242);
    o.block_size = 512 << 10;
    o.size_mode = SizeMode::ChsExact;
    create_dynamic(&mut dev, &o).unwrap();
    let base = dev.clone();
    let mut d = open(dev, &rw(), &mut MemResolver::default());
    d.write_at(0, &[1; 10]).unwrap();
    let i = d.info();
    assert_eq!(i.disk_type, DiskType::Dynamic);
    // 100 MiB -> 1003/12/17 = 204612 sectors.
    assert_eq!(
        i.geometry,
        Geometry {
            cylinders: 1003,
            heads: 12,
            sectors_per_track: 17
        }
    );
    assert_eq!(i.virtual_size, 204612 * 512);
    assert_eq!(i.block_size, Some(512 << 10));
    assert_eq!(i.max_table_entries, Some(200));
    assert_eq!(i.allocated_blocks, 1);
    assert_eq!(&i.creator_app, b"pnte");
    assert_eq!(&i.creator_host_os, b"Wi2k");
    assert_eq!(i.timestamp, 4242);
    assert_eq!(i.uuid, uuid(5));
    assert_eq!(i.parent_uuid, None);
    let child = child_of(&base, 2 << 20, 6);
    let mut r = MemResolver::default();
    r.add(base);
    let c = open(child, &OpenOptions::default(), &mut r);
    let ci = c.info();
    assert_eq!(ci.disk_type, DiskType::Differencing);
    assert_eq!(ci.parent_uuid, Some(uuid(5)));
    assert_eq!(ci.parent_timestamp, Some(4242));
    assert_eq!(ci.virtual_size, 204612 * 512);
    assert_eq!(ci.parent_name_chars().collect::<String>(), "parent.vhd");
    assert_eq!(c.depth(), 2);
    assert_eq!(c.layer_info(1).unwrap().uuid, uuid(5));
    // Current-size mode keeps the size and marks it for qemu.
    let f = ponte_vhd::create::new_footer(
        DiskType::Dynamic,
        &CreateOptions::new(100 << 20, uuid(1), 0),
    )
    .unwrap();
    assert_eq!(f.current_size, 100 << 20);
    assert_eq!(f.creator_app, CREATOR_CURRENT_SIZE);
    assert_eq!(f.virtual_size(), 100 << 20);
}

#[test]
fn files_and_parent_lookup_through_locators() {
    let dir = std::env::temp_dir().join(format!("ponte-vhd-api-{}", std::process::id()));
    let sub = dir.join("children");
    std::fs::create_dir_all(&sub).unwrap();
    let base_path = dir.join("base.vhd");
    let child_path = sub.join("child.vhd");
    let mut base = FileDevice::create(&base_path).unwrap();
    create_dynamic(&mut base, &CreateOptions::new(8 << 20, uuid(1), 0)).unwrap();
    {
        let mut d: Disk<FileDevice, Vec<u32>, 4> =
            Disk::open(base, &rw(), &mut VecStorage, &mut NoParents).unwrap();
        d.write_at(4096, b"from the base").unwrap();
        d.flush().unwrap();
    }
    let mut base = FileDevice::open(&base_path, false).unwrap();
    let mut child = FileDevice::create(&child_path).unwrap();
    let link = ParentLink {
        relative_path: "../base.vhd",
        absolute_path: None,
        name: "base.vhd",
    };
    create_differencing(&mut child, &mut base, &link, 2 << 20, uuid(2), 0).unwrap();
    drop(child);
    let child = FileDevice::open(&child_path, true).unwrap();
    let mut resolver = FileResolver::for_child(&child_path, false);
    let mut d: Disk<FileDevice, Vec<u32>, 4> =
        Disk::open(child, &rw(), &mut VecStorage, &mut resolver).unwrap();
    let mut buf = [0u8; 13];
    d.read_at(4096, &mut buf).unwrap();
    assert_eq!(&buf, b"from the base");
    d.write_at(4100, b"CHILD").unwrap();
    d.flush().unwrap();
    d.read_at(4096, &mut buf).unwrap();
    assert_eq!(&buf, b"fromCHILDbase");
    // Each device knows where it was opened; the parent's is where the
    // relative locator led.
    let paths: Vec<_> = d
        .into_devices()
        .map(|dev| dev.path().map(|p| p.canonicalize().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            Some(child_path.canonicalize().unwrap()),
            Some(base_path.canonicalize().unwrap())
        ]
    );
    let file = std::fs::File::open(&base_path).unwrap();
    let dev = FileDevice::from_file(file, false);
    assert_eq!(dev.path(), None);
    assert_eq!(dev.with_path(&base_path).path(), Some(base_path.as_path()));
    // The base file is unchanged.
    let mut base = FileDevice::open(&base_path, false).unwrap();
    assert!(base.len().unwrap() > 0);
    let mut d: Disk<FileDevice, Vec<u32>, 1> = Disk::open(
        base,
        &OpenOptions::default(),
        &mut VecStorage,
        &mut NoParents,
    )
    .unwrap();
    d.read_at(4096, &mut buf).unwrap();
    assert_eq!(&buf, b"from the base");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compact_differencing_drops_blocks_holding_no_sector() {
    let block = 64u64 << 10;
    let mut base = dynamic(1 << 20, block as u32, 1);
    {
        let mut d = open(base, &rw(), &mut MemResolver::default());
        d.write_at(0, &vec![0x33u8; 1 << 20]).unwrap();
        d.flush().unwrap();
        base = d.into_devices().next().unwrap();
    }
    let child = child_of(&base, block as u32, 2);
    let mut r = MemResolver::default();
    r.add(base.clone());
    let mut d = open(child, &rw(), &mut r);
    d.write_at(100, &[0x44; 10]).unwrap(); // block 0
    d.write_at(block + 100, &[0x55; 10]).unwrap(); // block 1
    d.flush().unwrap();
    let mut child = d.into_devices().next().unwrap();
    // Clear block 0's bitmap by hand: it now holds no sector.
    let h = ponte_vhd::format::DynamicHeader::parse(child.bytes[512..1536].try_into().unwrap())
        .unwrap();
    let t = h.table_offset as usize;
    let b0 = u32::from_be_bytes(child.bytes[t..t + 4].try_into().unwrap()) as usize * 512;
    child.bytes[b0..b0 + 512].fill(0);
    let mut r = MemResolver::default();
    r.add(base);
    let mut d = open(child, &rw(), &mut r);
    let stats = d.compact(&mut [0u8; 4096]).unwrap();
    assert_eq!((stats.dropped_blocks, stats.moved_blocks), (1, 1));
    assert_eq!(stats.old_len - stats.new_len, block + 512);
    let mut buf = [0u8; 120];
    d.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x33));
    d.read_at(block, &mut buf).unwrap();
    assert!(buf[..100].iter().all(|&b| b == 0x33));
    assert!(buf[100..110].iter().all(|&b| b == 0x55));
    assert!(buf[110..].iter().all(|&b| b == 0x33));
    let dev = d.into_devices().next().unwrap();
    let s = check(dev, &OpenOptions::default(), &mut VecStorage, &mut |p| {
        panic!("{p:?}")
    })
    .unwrap();
    assert_eq!((s.allocated_blocks, s.leaked_bytes), (1, 0));
}

/// A device whose reads fail with `code` while `failing` is set.
struct FailingReads {
    dev: ponte_vhd::VecDevice,
    failing: std::rc::Rc<std::cell::Cell<bool>>,
    code: i32,
}

impl FailingReads {
    fn new(dev: ponte_vhd::VecDevice, code: i32) -> (Self, std::rc::Rc<std::cell::Cell<bool>>) {
        let failing = std::rc::Rc::new(std::cell::Cell::new(false));
        let d = FailingReads {
            dev,
            failing: failing.clone(),
            code,
        };
        (d, failing)
    }
}

impl BlockDevice for FailingReads {
    fn len(&mut self) -> Result<u64, ponte_vhd::IoError> {
        self.dev.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ponte_vhd::IoError> {
        if self.failing.get() {
            return Err(ponte_vhd::IoError::Os { code: self.code });
        }
        self.dev.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), ponte_vhd::IoError> {
        self.dev.write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), ponte_vhd::IoError> {
        self.dev.flush()
    }
    fn set_len(&mut self, len: u64) -> Result<(), ponte_vhd::IoError> {
        self.dev.set_len(len)
    }
}

struct OneParent(Option<FailingReads>);

impl ponte_vhd::ParentResolver<FailingReads> for OneParent {
    fn open_parent(
        &mut self,
        _: &ponte_vhd::ParentRequest<'_>,
        hint: Option<&ponte_vhd::LocatorHint<'_>>,
    ) -> Option<FailingReads> {
        hint.is_none().then(|| self.0.take()).flatten()
    }
}

#[test]
fn a_failed_device_read_is_reported_with_the_error_of_the_image_that_failed() {
    let os = |code| Error::Io(ponte_vhd::IoError::Os { code });
    // At open: the footer read of the image fails.
    let (top, failing) = FailingReads::new(dynamic(1 << 20, 64 << 10, 1), 9);
    failing.set(true);
    let err = Disk::<_, Vec<u32>, 2>::open(top, &rw(), &mut VecStorage, &mut NoParents)
        .err()
        .expect("open fails");
    assert_eq!(err, os(9));

    // In a chain: the child (code 9) over its fixed parent (code 7),
    // whose every sector is read from its device.
    let parent = fixed(1 << 20, 2);
    let child = child_of(&parent, 64 << 10, 3);
    let (parent, parent_failing) = FailingReads::new(parent, 7);
    let (child, child_failing) = FailingReads::new(child, 9);
    let mut d: Disk<_, Vec<u32>, 2> =
        Disk::open(child, &rw(), &mut VecStorage, &mut OneParent(Some(parent))).unwrap();
    assert_eq!(d.depth(), 2);
    d.write_at(0, &[0xAA; 512]).unwrap();
    let mut buf = [0u8; 512];
    // A sector the child does not hold is read from the parent: its
    // error, not the child's, is the one returned.
    parent_failing.set(true);
    assert_eq!(d.read_at(512, &mut buf), Err(os(7)));
    // A sector the child holds does not reach the parent.
    d.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0xAA; 512]);
    parent_failing.set(false);
    child_failing.set(true);
    assert_eq!(d.read_at(0, &mut buf), Err(os(9)));
    // Once the device reads again, so does the disk: no error is left
    // behind to be returned by a later failure.
    child_failing.set(false);
    d.read_at(512, &mut buf).unwrap();
    assert_eq!(buf, [0; 512]);
    parent_failing.set(true);
    assert_eq!(d.read_at(512, &mut buf), Err(os(7)));
}
