//! The sector bitmap cache and the fully-present block marks, observed from
//! outside: the device reads they save (a wrapper device records every
//! read), and identical results against a flat model of the disk whatever
//! the cache size.
#![cfg(feature = "std")]
mod common;
use common::*;

use std::cell::RefCell;
use std::rc::Rc;

use ponte_vhd::format::{DynamicHeader, HEADER_SIZE};
use ponte_vhd::storage::{table_words, BITMAP_SLOT_WORDS};
use ponte_vhd::{
    check, BlockDevice, Disk, Error, IoError, LocatorHint, NoParents, OpenOptions, ParentRequest,
    ParentResolver, SlicePool, VecDevice, VecStorage,
};

/// Offsets of the device reads seen so far.
type ReadLog = Rc<RefCell<Vec<u64>>>;

/// A device that records the offset of every read.
struct Counting {
    dev: VecDevice,
    reads: ReadLog,
}

impl Counting {
    fn new(dev: VecDevice) -> (Counting, ReadLog) {
        let reads = ReadLog::default();
        (
            Counting {
                dev,
                reads: reads.clone(),
            },
            reads,
        )
    }
}

impl BlockDevice for Counting {
    fn len(&mut self) -> Result<u64, IoError> {
        self.dev.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.reads.borrow_mut().push(offset);
        self.dev.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.dev.write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.dev.flush()
    }
    fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        self.dev.set_len(len)
    }
}

/// Hands out one prepared parent, whatever is asked.
struct OneParent(Option<Counting>);

impl ParentResolver<Counting> for OneParent {
    fn open_parent(
        &mut self,
        _: &ParentRequest<'_>,
        hint: Option<&LocatorHint<'_>>,
    ) -> Option<Counting> {
        match hint {
            Some(_) => None,
            None => self.0.take(),
        }
    }
}

type CountingDisk = Disk<Counting, Vec<u32>, 2>;

fn slots(n: usize, writable: bool) -> OpenOptions {
    OpenOptions {
        writable,
        bitmap_cache_slots: n,
        ..OpenOptions::default()
    }
}

/// Byte offset of the sector bitmap of `block`, from the image's own BAT
/// (dynamic header at offset 512, as ponte creates it).
fn bitmap_offset(image: &VecDevice, block: u64) -> u64 {
    let raw: &[u8; HEADER_SIZE] = image.bytes[512..512 + HEADER_SIZE].try_into().unwrap();
    let header = DynamicHeader::parse(raw).expect("dynamic header");
    let at = (header.table_offset + 4 * block) as usize;
    let entry = u32::from_be_bytes(image.bytes[at..at + 4].try_into().unwrap());
    assert_ne!(entry, u32::MAX, "block {block} is allocated");
    u64::from(entry) * 512
}

fn reads_at(log: &ReadLog, offset: u64) -> usize {
    log.borrow().iter().filter(|&&o| o == offset).count()
}

fn pattern(offset: u64, len: usize, seed: u8) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i).wrapping_mul(0x9E37_79B1) >> 11) as u8 ^ seed)
        .collect()
}

const BLOCK: u64 = 64 << 10;

#[test]
fn fully_present_blocks_are_read_without_their_bitmap() {
    // Blocks 0 and 1 written through ponte: allocated with every sector
    // present (a dynamic image has no parent to fall back to).
    let mut d = open(
        dynamic(1 << 20, BLOCK as u32, 1),
        &rw(),
        &mut Default::default(),
    );
    d.write_at(100, &pattern(100, 5000, 1)).unwrap();
    d.write_at(BLOCK + 7, &pattern(BLOCK + 7, 3000, 2)).unwrap();
    d.flush().unwrap();
    let image = d.into_devices().next().unwrap();
    let bitmaps = [bitmap_offset(&image, 0), bitmap_offset(&image, 1)];

    // One cache slot and reads alternating between the two blocks: every
    // read would miss the cache. Each bitmap reads back all ones once,
    // after which its block is answered from the mark.
    let (dev, reads) = Counting::new(image);
    let mut d: CountingDisk =
        Disk::open(dev, &slots(1, true), &mut VecStorage, &mut NoParents).unwrap();
    for round in 0..20u64 {
        for (block, seed) in [(0u64, 1u8), (1, 2)] {
            let start = if block == 0 { 100 } else { BLOCK + 7 };
            let off = start + round * 97;
            let mut got = vec![0u8; 512];
            d.read_at(off, &mut got).unwrap();
            assert_eq!(got, pattern(off, 512, seed), "block {block} round {round}");
        }
    }
    assert_eq!(reads_at(&reads, bitmaps[0]), 1, "bitmap of block 0");
    assert_eq!(reads_at(&reads, bitmaps[1]), 1, "bitmap of block 1");

    // A block allocated in this session is known to be full from the start:
    // its bitmap is never read, not even by a partial-sector write.
    let reads_before_write = reads.borrow().len();
    d.write_at(5 * BLOCK + 3, &pattern(5 * BLOCK + 3, 10, 3))
        .unwrap();
    d.write_at(5 * BLOCK + 700, &pattern(5 * BLOCK + 700, 10, 4))
        .unwrap();
    let mut got = vec![0u8; 2048];
    d.read_at(5 * BLOCK, &mut got).unwrap();
    assert_eq!(got[3..13], pattern(5 * BLOCK + 3, 10, 3)[..]);
    assert_eq!(got[700..710], pattern(5 * BLOCK + 700, 10, 4)[..]);
    assert!(got[..3].iter().chain(&got[13..700]).all(|&b| b == 0));
    d.flush().unwrap();
    let image = d.into_devices().next().unwrap();
    // The new block went where the footer was, which open did read.
    let bitmap5 = bitmap_offset(&image.dev, 5);
    let since_write = reads.borrow()[reads_before_write..].to_vec();
    assert!(
        !since_write.contains(&bitmap5),
        "bitmap of the new block read: {since_write:?}"
    );
}

/// A differencing child over a filled parent: block 0 of the child holds
/// sectors 0..4 only; `CHILD_SEED` marks the child's data.
fn child_with_partial_block() -> (VecDevice, VecDevice) {
    let mut parent = open(
        dynamic(1 << 20, BLOCK as u32, 1),
        &rw(),
        &mut Default::default(),
    );
    parent
        .write_at(0, &pattern(0, 1 << 20, PARENT_SEED))
        .unwrap();
    parent.flush().unwrap();
    let parent = parent.into_devices().next().unwrap();
    let mut r = MemResolver::default();
    r.add(parent.clone());
    let mut child = open(child_of(&parent, BLOCK as u32, 2), &rw(), &mut r);
    child.write_at(0, &pattern(0, 2048, CHILD_SEED)).unwrap();
    // A second partial block, to compete for the single cache slot.
    child
        .write_at(3 * BLOCK, &pattern(3 * BLOCK, 512, CHILD_SEED))
        .unwrap();
    child.flush().unwrap();
    let child = child.into_devices().next().unwrap();
    (child, parent)
}

const PARENT_SEED: u8 = 0x11;
const CHILD_SEED: u8 = 0x77;

/// What the chain must read for `[off, off + len)` when the child holds
/// `[0, held)` of block 0 and `[3 * BLOCK, 3 * BLOCK + 512)`.
fn expected(off: u64, len: usize, held: u64) -> Vec<u8> {
    (off..off + len as u64)
        .map(|at| {
            let child = at < held || (3 * BLOCK..3 * BLOCK + 512).contains(&at);
            let seed = if child { CHILD_SEED } else { PARENT_SEED };
            pattern(at, 1, seed)[0]
        })
        .collect()
}

#[test]
fn a_partial_block_is_not_marked_until_its_bitmap_fills() {
    let (child, parent) = child_with_partial_block();
    let child_bitmap = bitmap_offset(&child, 0);
    let (dev, reads) = Counting::new(child);
    let (parent_dev, _) = Counting::new(parent);
    let mut d: CountingDisk = Disk::open(
        dev,
        &slots(1, true),
        &mut VecStorage,
        &mut OneParent(Some(parent_dev)),
    )
    .unwrap();
    // Partly present: sectors 4.. come from the parent, and with one slot
    // shared with block 3 the bitmap is read again on every alternation.
    for round in 0..5 {
        let mut got = vec![0u8; 4096];
        d.read_at(0, &mut got).unwrap();
        assert_eq!(got, expected(0, 4096, 2048), "round {round}");
        d.read_at(3 * BLOCK, &mut got).unwrap();
        assert_eq!(got, expected(3 * BLOCK, 4096, 2048), "round {round}");
    }
    assert_eq!(reads_at(&reads, child_bitmap), 5);

    // Writing the rest of block 0 sets its last bits: the block is now
    // fully present and answered without its bitmap.
    d.write_at(2048, &pattern(2048, BLOCK as usize - 2048, CHILD_SEED))
        .unwrap();
    let before = reads_at(&reads, child_bitmap);
    for round in 0..5 {
        let mut got = vec![0u8; 4096];
        d.read_at(BLOCK - 4096, &mut got).unwrap();
        assert_eq!(got, expected(BLOCK - 4096, 4096, BLOCK), "round {round}");
        d.read_at(3 * BLOCK, &mut got).unwrap();
        assert_eq!(got, expected(3 * BLOCK, 4096, BLOCK), "round {round}");
    }
    assert_eq!(reads_at(&reads, child_bitmap), before);

    // On the device the bitmap is all ones after the flush: reopened, it is
    // read once and then trusted.
    d.flush().unwrap();
    let mut devices = d.into_devices();
    let child = devices.next().unwrap().dev;
    let parent = devices.next().unwrap().dev;
    let (dev, reads) = Counting::new(child);
    let (parent_dev, _) = Counting::new(parent);
    let mut d: CountingDisk = Disk::open(
        dev,
        &slots(1, false),
        &mut VecStorage,
        &mut OneParent(Some(parent_dev)),
    )
    .unwrap();
    for _ in 0..5 {
        let mut got = vec![0u8; 4096];
        d.read_at(0, &mut got).unwrap();
        assert_eq!(got, expected(0, 4096, BLOCK));
        d.read_at(3 * BLOCK, &mut got).unwrap();
        assert_eq!(got, expected(3 * BLOCK, 4096, BLOCK));
    }
    assert_eq!(reads_at(&reads, child_bitmap), 1);
}

#[test]
fn a_cache_covering_every_bitmap_reads_each_once() {
    // 16 blocks, each partly held by the child: a 16-slot cache holds every
    // bitmap sector in its own slot; a 1024-slot request is cut to 16.
    let mut parent = open(
        dynamic(1 << 20, BLOCK as u32, 1),
        &rw(),
        &mut Default::default(),
    );
    parent
        .write_at(0, &pattern(0, 1 << 20, PARENT_SEED))
        .unwrap();
    parent.flush().unwrap();
    let parent = parent.into_devices().next().unwrap();
    let mut r = MemResolver::default();
    r.add(parent.clone());
    let mut child = open(child_of(&parent, BLOCK as u32, 2), &rw(), &mut r);
    for b in 0..16 {
        child
            .write_at(b * BLOCK + 512, &pattern(b * BLOCK + 512, 512, CHILD_SEED))
            .unwrap();
    }
    child.flush().unwrap();
    let child = child.into_devices().next().unwrap();
    let bitmaps: Vec<u64> = (0..16).map(|b| bitmap_offset(&child, b)).collect();
    for requested in [16, 1024] {
        let (dev, reads) = Counting::new(child.clone());
        let (parent_dev, _) = Counting::new(parent.clone());
        let mut d: CountingDisk = Disk::open(
            dev,
            &slots(requested, false),
            &mut VecStorage,
            &mut OneParent(Some(parent_dev)),
        )
        .unwrap();
        let mut rng = Rng::new(requested as u64);
        for _ in 0..400 {
            let b = rng.below(16);
            let off = b * BLOCK + rng.below(4) * 512;
            let mut got = vec![0u8; 1024];
            d.read_at(off, &mut got).unwrap();
            let want: Vec<u8> = (off..off + 1024)
                .map(|at| {
                    let held = (b * BLOCK + 512..b * BLOCK + 1024).contains(&at);
                    pattern(at, 1, if held { CHILD_SEED } else { PARENT_SEED })[0]
                })
                .collect();
            assert_eq!(got, want);
        }
        for (b, &at) in bitmaps.iter().enumerate() {
            assert!(
                reads_at(&reads, at) <= 1,
                "{requested} slots: bitmap of block {b} read {} times",
                reads_at(&reads, at)
            );
        }
    }
}

#[test]
fn storage_sizing_follows_the_documented_layout() {
    // 16 entries, 8 slots: 2 x 16 words of BAT and scratch, one word of
    // marks, 8 slots of 2 + 128 words.
    assert_eq!(BITMAP_SLOT_WORDS, 130);
    assert_eq!(table_words(16, 8), 2 * 16 + 1 + 8 * 130);
    assert_eq!(table_words(33, 1), 2 * 33 + 2 + 130);
    // No slot still means one.
    assert_eq!(table_words(16, 0), table_words(16, 1));
    assert_eq!(table_words(u32::MAX, usize::MAX), usize::MAX);

    let image = dynamic(4 << 20, 256 << 10, 1);
    for (requested, used) in [(0, 1), (1, 1), (5, 5), (16, 16), (1 << 40, 16)] {
        // Exactly the words for the slots used (at most the image's 16
        // bitmap sectors) suffice; one fewer does not.
        let need = table_words(16, used);
        let mut words = vec![0xDEAD_BEEFu32; need];
        let mut d: Disk<VecDevice, &mut [u32], 1> = Disk::open(
            image.clone(),
            &slots(requested, true),
            &mut SlicePool::new(&mut words),
            &mut NoParents,
        )
        .unwrap_or_else(|e| panic!("{requested} slots: {e:?}"));
        // The storage held garbage: nothing of it may be taken for a mark
        // or a cached bitmap.
        d.write_at(300 << 10, &pattern(300 << 10, 700, 5)).unwrap();
        let mut got = vec![0u8; 2048];
        d.read_at(299 << 10, &mut got).unwrap();
        assert!(got[..1024].iter().all(|&b| b == 0));
        assert_eq!(got[1024..1724], pattern(300 << 10, 700, 5)[..]);
        d.flush().unwrap();

        let mut words = vec![0u32; need - 1];
        let r: Result<Disk<VecDevice, &mut [u32], 1>, _> = Disk::open(
            image.clone(),
            &slots(requested, true),
            &mut SlicePool::new(&mut words),
            &mut NoParents,
        );
        assert_eq!(
            r.err(),
            Some(Error::StorageTooSmall {
                needed: need,
                available: need - 1
            })
        );
    }
}

/// A flat model of the virtual disk, one byte per byte.
struct Flat(Vec<u8>);

/// Runs one random workload on a chain (a dynamic parent, partly filled,
/// under a differencing child) with `slots` cache slots; every read is
/// checked against the model. Returns the images' bytes.
fn workload(seed: u64, block: u32, slots_n: usize) -> (Vec<u8>, Vec<u8>) {
    const SIZE: u64 = 10 << 20;
    let block64 = u64::from(block);
    let mut rng = Rng::new(seed);
    let mut model = Flat(vec![0; SIZE as usize]);
    let options = OpenOptions {
        writable: true,
        bitmap_cache_slots: slots_n,
        ..OpenOptions::default()
    };
    // The parent: some whole and some partial blocks.
    let mut parent: Disk<VecDevice, Vec<u32>, 1> = Disk::open(
        dynamic(SIZE, block, 1),
        &options,
        &mut VecStorage,
        &mut NoParents,
    )
    .unwrap();
    for _ in 0..12 {
        let off = rng.below(SIZE - 1);
        let len = (1 + rng.below((block64 * 2).min(256 << 10))).min(SIZE - off) as usize;
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        parent.write_at(off, &data).unwrap();
        model.0[off as usize..off as usize + len].copy_from_slice(&data);
    }
    parent.flush().unwrap();
    let parent = parent.into_devices().next().unwrap();
    let mut r = MemResolver::default();
    r.add(parent.clone());
    let mut d: MemDisk = Disk::open(
        child_of(&parent, block, 2),
        &options,
        &mut VecStorage,
        &mut r,
    )
    .unwrap();
    for op in 0..150 {
        match rng.below(10) {
            0..=3 => {
                let off = rng.below(SIZE - 1);
                let len = (1 + rng.below(3000)).min(SIZE - off) as usize;
                let mut data = vec![0u8; len];
                rng.fill(&mut data);
                d.write_at(off, &data).unwrap();
                model.0[off as usize..off as usize + len].copy_from_slice(&data);
            }
            4 => {
                // Whole blocks and ragged ends.
                let off = rng.below(SIZE / 512) * 512;
                let len = (rng.below(2 * block64) / 512 * 512).min(SIZE - off);
                d.write_zeroes(off, len).unwrap();
                model.0[off as usize..(off + len) as usize].fill(0);
            }
            5 => d.flush().unwrap(),
            6 if op % 3 == 0 => {
                // Dropping a disk does not flush.
                d.flush().unwrap();
                let mut devices: Vec<VecDevice> = d.into_devices().collect();
                let top = devices.remove(0);
                let mut r = MemResolver::default();
                r.add(devices.remove(0));
                d = Disk::open(top, &options, &mut VecStorage, &mut r).unwrap();
            }
            6 => {
                d.compact(&mut [0u8; 8192]).unwrap();
            }
            _ => {
                // Anywhere, or across a block boundary.
                let off = match rng.below(2) {
                    0 => rng.below(SIZE - 1),
                    _ => (1 + rng.below(SIZE / block64 - 1)) * block64 - 1 - rng.below(4096),
                };
                let len = (1 + rng.below((3 * block64).min(48 << 10))).min(SIZE - off) as usize;
                let mut got = vec![0u8; len];
                d.read_at(off, &mut got).unwrap();
                assert!(
                    got == model.0[off as usize..off as usize + len],
                    "seed {seed} block {block} slots {slots_n} op {op}: read at {off} len {len}"
                );
            }
        }
    }
    d.flush().unwrap();
    let mut all = vec![0u8; SIZE as usize];
    d.read_at(0, &mut all).unwrap();
    if let Some(at) = (0..all.len()).find(|&i| all[i] != model.0[i]) {
        panic!("seed {seed} block {block} slots {slots_n}: final contents differ at {at}");
    }
    let mut devices = d.into_devices();
    let top = devices.next().unwrap();
    let parent = devices.next().unwrap();
    let summary = check(
        top.clone(),
        &OpenOptions::default(),
        &mut VecStorage,
        &mut |p| panic!("seed {seed} block {block} slots {slots_n}: {p:?}"),
    )
    .unwrap();
    assert_eq!(summary.problems, 0);
    (top.bytes, parent.bytes)
}

#[test]
fn any_cache_size_reads_like_the_model_and_writes_the_same_image() {
    // Block sizes: 8 sectors (bitmap mostly padding), 128 sectors, and
    // 8192 sectors (a bitmap of two sectors). Slot counts: one, a few that
    // share slots unevenly, and more than the image has bitmap sectors.
    for (seed, block) in [(1u64, 4096u32), (2, 64 << 10), (3, 4 << 20), (4, 64 << 10)] {
        let reference = workload(seed, block, 1);
        for slots_n in [2, 3, 8, 1024] {
            let images = workload(seed, block, slots_n);
            assert!(
                images == reference,
                "seed {seed} block {block}: {slots_n} slots write other bytes than one slot"
            );
        }
    }
}
