//! Power cuts at every device write of randomized workloads.
//!
//! The device keeps what the last flush made durable plus an arbitrary
//! subset of the writes issued since (writes between flushes may reach the
//! medium in any order, or not at all). After the cut the image must open,
//! check clean, hold every byte flushed before the cut, and every other
//! byte must come from a write issued after that flush.
#![cfg(feature = "std")]
mod common;
use common::*;

use ponte_vhd::{check, BlockDevice, Disk, IoError, OpenOptions, VecDevice, VecStorage};

#[derive(Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn apply(dev: &mut VecDevice, op: &Op) {
    match op {
        Op::Write(off, data) => dev.write_at(*off, data).unwrap(),
        Op::SetLen(len) => dev.set_len(*len).unwrap(),
    }
}

/// A device that loses power at event number `cut_at` (writes, length
/// changes and flushes are events).
struct CrashDevice {
    current: VecDevice,
    durable: VecDevice,
    log: Vec<Op>,
    writes: usize,
    cut_at: Option<usize>,
    dead: bool,
}

impl CrashDevice {
    fn new(dev: VecDevice, cut_at: Option<usize>) -> Self {
        CrashDevice {
            current: dev.clone(),
            durable: dev,
            log: Vec::new(),
            writes: 0,
            cut_at,
            dead: false,
        }
    }
    fn op(&mut self, op: Op) -> Result<(), IoError> {
        if self.dead || self.cut_at == Some(self.writes) {
            self.dead = true;
            return Err(IoError::Os { code: 5 });
        }
        self.writes += 1;
        apply(&mut self.current, &op);
        self.log.push(op);
        Ok(())
    }
    /// What survives: the durable state plus the writes since the last
    /// flush that `keep` selects, in issue order.
    fn after_cut(&self, keep: &mut dyn FnMut(usize) -> bool) -> VecDevice {
        let mut d = self.durable.clone();
        for (i, op) in self.log.iter().enumerate() {
            if keep(i) {
                apply(&mut d, op);
            }
        }
        d
    }
}

impl BlockDevice for CrashDevice {
    fn len(&mut self) -> Result<u64, IoError> {
        self.current.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if self.dead {
            return Err(IoError::Os { code: 5 });
        }
        self.current.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.op(Op::Write(offset, buf.to_vec()))
    }
    fn flush(&mut self) -> Result<(), IoError> {
        // Power may also fail while a flush is under way.
        if self.dead || self.cut_at == Some(self.writes) {
            self.dead = true;
            return Err(IoError::Os { code: 5 });
        }
        self.writes += 1;
        for op in std::mem::take(&mut self.log) {
            apply(&mut self.durable, &op);
        }
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        self.op(Op::SetLen(len))
    }
}

struct Resolver(Option<VecDevice>);

impl ponte_vhd::ParentResolver<CrashDevice> for Resolver {
    fn open_parent(
        &mut self,
        _: &ponte_vhd::ParentRequest<'_>,
        hint: Option<&ponte_vhd::LocatorHint<'_>>,
    ) -> Option<CrashDevice> {
        if hint.is_some() {
            return None;
        }
        self.0.clone().map(|d| CrashDevice::new(d, None))
    }
}

const SIZE: u64 = 1 << 20;

enum Step {
    Write(u64, Vec<u8>),
    Zero(u64, u64),
    Flush,
    Compact,
}

fn workload(seed: u64, block: u64) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    // Block 1 is filled early and zeroed by ordinary writes before the
    // compaction, which then frees it and moves a later block into it.
    let mut first = vec![0u8; block as usize];
    rng.fill(&mut first);
    steps.push(Step::Write(block, first));
    for i in 0..26 {
        match rng.below(10) {
            0..=5 => {
                let off = if rng.below(2) == 0 {
                    rng.below(SIZE / 512) * 512
                } else {
                    rng.below(SIZE - 1)
                };
                let len = (1 + rng.below(block + 1500)).min(SIZE - off);
                let mut data = vec![0u8; len as usize];
                rng.fill(&mut data);
                steps.push(Step::Write(off, data));
            }
            6 => {
                let b = rng.below(SIZE / block);
                let n = 1 + rng.below(2);
                steps.push(Step::Zero(b * block, (n * block).min(SIZE - b * block)));
            }
            _ => steps.push(Step::Flush),
        }
        if i == 18 {
            steps.push(Step::Write(block, vec![0; block as usize]));
            steps.push(Step::Flush);
            steps.push(Step::Compact);
        }
    }
    steps.push(Step::Flush);
    steps
}

/// Runs the workload until the device dies; returns the disk content as of
/// the last completed flush and the writes issued after it.
fn run(
    disk: &mut Disk<CrashDevice, Vec<u32>, 4>,
    steps: &[Step],
    start: Vec<u8>,
) -> (Vec<u8>, Vec<(u64, Vec<u8>)>) {
    let mut model = start.clone();
    let mut flushed = start;
    let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
    for step in steps {
        let ok = match step {
            Step::Write(off, data) => {
                model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
                pending.push((*off, data.clone()));
                disk.write_at(*off, data).is_ok()
            }
            Step::Zero(off, len) => {
                model[*off as usize..(*off + *len) as usize].fill(0);
                pending.push((*off, vec![0; *len as usize]));
                disk.write_zeroes(*off, *len).is_ok()
            }
            Step::Flush => {
                let ok = disk.flush().is_ok();
                if ok {
                    flushed = model.clone();
                    pending.clear();
                }
                ok
            }
            Step::Compact => disk.compact(&mut [0u8; 4096]).is_ok(),
        };
        if !ok {
            break;
        }
    }
    (flushed, pending)
}

fn verify(
    after: VecDevice,
    parent: &Option<VecDevice>,
    flushed: &[u8],
    pending: &[(u64, Vec<u8>)],
    ctx: &str,
) {
    let mut problems = Vec::new();
    check(
        &mut after.clone(),
        &OpenOptions::default(),
        &mut VecStorage,
        &mut |p| problems.push(*p),
    )
    .unwrap();
    assert!(problems.is_empty(), "{ctx}: {problems:?}");
    let options = OpenOptions {
        writable: true,
        ..OpenOptions::default()
    };
    let mut d: Disk<CrashDevice, Vec<u32>, 4> = Disk::open(
        CrashDevice::new(after, None),
        &options,
        &mut VecStorage,
        &mut Resolver(parent.clone()),
    )
    .unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
    let mut got = vec![0u8; SIZE as usize];
    d.read_at(0, &mut got).unwrap();
    for (i, (&g, &f)) in got.iter().zip(flushed).enumerate() {
        if g != f {
            let i64 = i as u64;
            let explained = pending.iter().any(|(off, data)| {
                i64 >= *off && i64 < off + data.len() as u64 && data[(i64 - off) as usize] == g
            });
            assert!(explained, "{ctx}: byte {i} is {g:#x}, flushed {f:#x}");
        }
    }
    // The image keeps working after the cut: a new write lands and survives.
    d.write_at(SIZE - 700, &[0x5A; 700]).unwrap();
    d.flush().unwrap();
    let dev = d.into_devices().next().unwrap().current;
    let mut problems = Vec::new();
    check(
        &mut dev.clone(),
        &OpenOptions::default(),
        &mut VecStorage,
        &mut |p| problems.push(*p),
    )
    .unwrap();
    assert!(problems.is_empty(), "{ctx} after rewrite: {problems:?}");
    let mut d: Disk<CrashDevice, Vec<u32>, 4> = Disk::open(
        CrashDevice::new(dev, None),
        &OpenOptions::default(),
        &mut VecStorage,
        &mut Resolver(parent.clone()),
    )
    .unwrap();
    let mut tail = [0u8; 700];
    d.read_at(SIZE - 700, &mut tail).unwrap();
    assert_eq!(tail, [0x5A; 700], "{ctx}");
}

fn crash_every_write(image: VecDevice, parent: Option<VecDevice>, block: u64, seed: u64) {
    let steps = workload(seed, block);
    let options = OpenOptions {
        writable: true,
        ..OpenOptions::default()
    };
    let start = match &parent {
        Some(p) => {
            let mut r = MemResolver::default();
            let mut d = open(p.clone(), &OpenOptions::default(), &mut r);
            let mut all = vec![0u8; SIZE as usize];
            d.read_at(0, &mut all).unwrap();
            all
        }
        None => vec![0u8; SIZE as usize],
    };
    // Dry run: how many device events the workload makes.
    let mut disk: Disk<CrashDevice, Vec<u32>, 4> = Disk::open(
        CrashDevice::new(image.clone(), None),
        &options,
        &mut VecStorage,
        &mut Resolver(parent.clone()),
    )
    .unwrap();
    run(&mut disk, &steps, start.clone());
    let total = disk.into_devices().next().unwrap().writes;
    assert!(total > 20, "workload too small: {total}");
    eprintln!("seed {seed}: {total} device events");
    let mut rng = Rng::new(seed ^ 0xC0FFEE);
    for k in 0..=total {
        let mut disk: Disk<CrashDevice, Vec<u32>, 4> = Disk::open(
            CrashDevice::new(image.clone(), Some(k)),
            &options,
            &mut VecStorage,
            &mut Resolver(parent.clone()),
        )
        .unwrap();
        let (flushed, pending) = run(&mut disk, &steps, start.clone());
        let dev = disk.into_devices().next().unwrap();
        // Three outcomes of the unflushed writes: all lost, all kept, a
        // random subset kept.
        let survivors = [
            dev.after_cut(&mut |_| false),
            dev.after_cut(&mut |_| true),
            dev.after_cut(&mut |_| rng.below(2) == 0),
        ];
        for (v, after) in survivors.into_iter().enumerate() {
            verify(
                after,
                &parent,
                &flushed,
                &pending,
                &format!("seed {seed} cut {k} variant {v}"),
            );
        }
    }
}

#[test]
fn dynamic_image_survives_power_cut_at_every_write() {
    let block = 32 << 10;
    crash_every_write(dynamic(SIZE, block as u32, 1), None, block, 11);
}

#[test]
fn differencing_image_survives_power_cut_at_every_write() {
    let block = 64 << 10;
    let mut base = dynamic(SIZE, 256 << 10, 1);
    {
        let mut r = MemResolver::default();
        let mut d = open(base, &rw(), &mut r);
        let mut rng = Rng::new(5);
        let mut data = vec![0u8; SIZE as usize];
        rng.fill(&mut data);
        d.write_at(0, &data[..(SIZE / 2) as usize]).unwrap();
        d.flush().unwrap();
        base = d.into_devices().next().unwrap();
    }
    let child = child_of(&base, block as u32, 2);
    crash_every_write(child, Some(base), block, 12);
}
