//! Differencing chains against an independent model: one map
//! sector -> contents per image; a read takes each sector from the topmost
//! image that holds it, zeros below the base.
#![cfg(feature = "std")]
mod common;
use common::*;

use std::collections::BTreeMap;

use ponte_vhd::format::{DynamicHeader, LocatorCode, ParentLocator};
use ponte_vhd::{
    Disk, Error, LocatorHint, OpenOptions, ParentRequest, ParentResolver, VecDevice, VecStorage,
};

const SIZE: u64 = 6 << 20;

/// Per-image sector maps, base first.
struct Model {
    layers: Vec<BTreeMap<u64, [u8; 512]>>,
}

impl Model {
    fn sector(&self, upto: usize, s: u64) -> [u8; 512] {
        for layer in self.layers[..upto].iter().rev() {
            if let Some(d) = layer.get(&s) {
                return *d;
            }
        }
        [0; 512]
    }
    fn read(&self, upto: usize, offset: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        while pos < offset + len as u64 {
            let s = pos / 512;
            let sec = self.sector(upto, s);
            let a = (pos % 512) as usize;
            let n = (512 - a).min((offset + len as u64 - pos) as usize);
            out.extend_from_slice(&sec[a..a + n]);
            pos += n as u64;
        }
        out
    }
    /// A write to the top image: sectors it does not hold yet are first
    /// completed from below.
    fn write(&mut self, offset: u64, data: &[u8]) {
        let top = self.layers.len();
        let mut pos = offset;
        let mut i = 0;
        while i < data.len() {
            let s = pos / 512;
            let a = (pos % 512) as usize;
            let n = (512 - a).min(data.len() - i);
            let mut sec = self.sector(top, s);
            sec[a..a + n].copy_from_slice(&data[i..i + n]);
            self.layers[top - 1].insert(s, sec);
            pos += n as u64;
            i += n;
        }
    }
}

fn random_write(rng: &mut Rng, block: u64) -> (u64, Vec<u8>) {
    let (off, len) = match rng.below(4) {
        // Whole sectors.
        0 => {
            let s = rng.below(SIZE / 512);
            let n = 1 + rng.below(16).min(SIZE / 512 - s - 1);
            (s * 512, n * 512)
        }
        // Unaligned, small.
        1 => {
            let off = rng.below(SIZE - 1);
            (off, 1 + rng.below(700).min(SIZE - off - 1))
        }
        // Across a block boundary.
        2 => {
            let b = 1 + rng.below(SIZE / block - 1);
            let back = 1 + rng.below(1500);
            let off = b * block - back.min(b * block);
            (off, (back + 1 + rng.below(1500)).min(SIZE - off))
        }
        // Large, unaligned, up to two blocks.
        _ => {
            let off = rng.below(SIZE - 1);
            (off, 1 + rng.below(2 * block).min(SIZE - off - 1))
        }
    };
    let mut data = vec![0u8; len as usize];
    rng.fill(&mut data);
    (off, data)
}

fn reopen(d: Disk<VecDevice, Vec<u32>, 8>, parents: usize) -> Disk<VecDevice, Vec<u32>, 8> {
    let mut devs: Vec<VecDevice> = d.into_devices().collect();
    assert_eq!(devs.len(), parents + 1);
    let top = devs.remove(0);
    let mut r = MemResolver::default();
    for p in devs {
        r.add(p);
    }
    open(top, &rw(), &mut r)
}

fn run_chain(seed: u64, depth: usize) {
    let mut rng = Rng::new(seed);
    let blocks = [4096u32, 64 << 10, 512 << 10, 2 << 20];
    let base_block = blocks[rng.below(4) as usize];
    let mut model = Model {
        layers: vec![BTreeMap::new()],
    };
    let mut images: Vec<VecDevice> = Vec::new();
    let mut top = if rng.below(3) == 0 {
        fixed(SIZE, 1)
    } else {
        dynamic(SIZE, base_block, 1)
    };
    for level in 0..=depth {
        let block = u64::from(blocks[rng.below(4) as usize]);
        if level > 0 {
            let parent = images.last().unwrap();
            top = child_of(parent, block as u32, level as u8 + 1);
            model.layers.push(BTreeMap::new());
        }
        let mut r = MemResolver::default();
        for p in &images {
            r.add(p.clone());
        }
        let mut d = open(top, &rw(), &mut r);
        assert_eq!(d.depth(), level + 1);
        let parents_before: Vec<Vec<u8>> = images.iter().map(|p| p.bytes.clone()).collect();
        for op in 0..40 {
            let (off, data) = random_write(&mut rng, block.max(4096));
            d.write_at(off, &data).unwrap();
            model.write(off, &data);
            // Read back a random range and a range around the write.
            let roff = rng.below(SIZE - 1);
            let rlen = (1 + rng.below(3 * block)).min(SIZE - roff) as usize;
            let mut got = vec![0u8; rlen];
            d.read_at(roff, &mut got).unwrap();
            assert!(
                got == model.read(model.layers.len(), roff, rlen),
                "seed {seed} op {op}"
            );
            let mut got = vec![0u8; data.len()];
            d.read_at(off, &mut got).unwrap();
            assert!(got == data, "seed {seed} op {op} readback");
            if op % 4 == 3 {
                if rng.below(2) == 0 {
                    d.flush().unwrap();
                } else {
                    d.flush().unwrap();
                    d = reopen(d, level);
                }
            }
        }
        d.flush().unwrap();
        // Full comparison, then the parents must be untouched.
        let mut all = vec![0u8; SIZE as usize];
        d.read_at(0, &mut all).unwrap();
        assert!(
            all == model.read(model.layers.len(), 0, SIZE as usize),
            "seed {seed} level {level}"
        );
        let devs: Vec<VecDevice> = d.into_devices().collect();
        for (i, p) in devs[1..].iter().enumerate() {
            assert!(
                p.bytes == parents_before[parents_before.len() - 1 - i],
                "parent changed"
            );
        }
        // The check finds nothing wrong with the image just written.
        let mut problems = Vec::new();
        let s = ponte_vhd::check(
            &mut devs[0].clone(),
            &OpenOptions::default(),
            &mut VecStorage,
            &mut |p| problems.push(*p),
        )
        .unwrap();
        assert_eq!(problems, vec![], "seed {seed}");
        assert_eq!(s.problems, 0);
        top = devs[0].clone();
        images.push(top.clone());
    }
    // Every intermediate image, opened as top with its parents, still reads
    // as its own layer of the model.
    for upto in 1..images.len() {
        let mut r = MemResolver::default();
        for p in &images[..upto - 1] {
            r.add(p.clone());
        }
        let mut d = open(images[upto - 1].clone(), &OpenOptions::default(), &mut r);
        let mut all = vec![0u8; SIZE as usize];
        d.read_at(0, &mut all).unwrap();
        assert!(
            all == model.read(upto, 0, SIZE as usize),
            "seed {seed} image {upto}"
        );
    }
}

#[test]
fn chain_depth_1() {
    for seed in 0..3 {
        run_chain(100 + seed, 1);
    }
}

#[test]
fn chain_depth_2() {
    for seed in 0..2 {
        run_chain(200 + seed, 2);
    }
}

#[test]
fn chain_depth_3() {
    run_chain(300, 3);
}

#[test]
fn chain_depth_4() {
    run_chain(400, 4);
}

#[test]
fn commit_merges_child_into_parent() {
    let mut rng = Rng::new(7);
    let base = dynamic(SIZE, 512 << 10, 1);
    let child = child_of(&base, 64 << 10, 2);
    let mut model = Model {
        layers: vec![BTreeMap::new(), BTreeMap::new()],
    };
    // Base content.
    let mut r = MemResolver::default();
    let mut b = open(base, &rw(), &mut r);
    model.layers.truncate(1);
    for _ in 0..20 {
        let (off, data) = random_write(&mut rng, 512 << 10);
        b.write_at(off, &data).unwrap();
        model.write(off, &data);
    }
    b.flush().unwrap();
    let base = b.into_devices().next().unwrap();
    let child = {
        // Recreate the child over the written base (same UUID).
        let _ = child;
        child_of(&base, 64 << 10, 2)
    };
    model.layers.push(BTreeMap::new());
    let mut r = MemResolver::default();
    r.add(base);
    let options = OpenOptions {
        writable: true,
        writable_parents: true,
        ..OpenOptions::default()
    };
    let mut d = Disk::<_, _, 8>::open(child, &options, &mut VecStorage, &mut r).unwrap();
    for _ in 0..30 {
        let (off, data) = random_write(&mut rng, 64 << 10);
        d.write_at(off, &data).unwrap();
        model.write(off, &data);
    }
    d.flush().unwrap();
    let stats = d.commit(&mut [0u8; 8192]).unwrap();
    let child_sectors: u64 = model.layers[1].len() as u64;
    assert_eq!(stats.sectors, child_sectors);
    let mut devs = d.into_devices();
    let _child = devs.next().unwrap();
    let parent = devs.next().unwrap();
    let mut r = MemResolver::default();
    let mut p = open(parent, &OpenOptions::default(), &mut r);
    let mut all = vec![0u8; SIZE as usize];
    p.read_at(0, &mut all).unwrap();
    assert!(all == model.read(2, 0, SIZE as usize));
}

#[test]
fn commit_needs_writable_parent() {
    let base = dynamic(SIZE, 2 << 20, 1);
    let child = child_of(&base, 2 << 20, 2);
    let mut r = MemResolver::default();
    r.add(base);
    let mut d = open(child, &rw(), &mut r);
    d.write_at(0, &[1; 512]).unwrap();
    assert_eq!(d.commit(&mut [0u8; 512]), Err(Error::ReadOnly));
}

#[test]
fn locator_hints_are_offered_in_order() {
    let base = dynamic(SIZE, 2 << 20, 1);
    let mut child = VecDevice::new();
    let link = ponte_vhd::create::ParentLink {
        relative_path: "../img/base disk.vhd",
        absolute_path: Some("/srv/img/base disk.vhd"),
        name: "base disk.vhd",
    };
    ponte_vhd::create::create_differencing(
        &mut child,
        &mut base.clone(),
        &link,
        2 << 20,
        uuid(2),
        5,
    )
    .unwrap();
    let mut r = MemResolver::default();
    r.add(base);
    let d = open(child, &OpenOptions::default(), &mut r);
    let info = d.info();
    assert_eq!(info.parent_uuid, Some(uuid(1)));
    assert_eq!(
        info.parent_name_chars().collect::<String>(),
        "base disk.vhd"
    );
    let paths: Vec<&str> = r.hints.iter().map(|(_, p)| p.as_str()).collect();
    // W2ru (slot 1) first, then W2ku (slot 0), then MacX (slot 2).
    assert_eq!(
        paths,
        vec![
            "..\\img\\base disk.vhd",
            "\\srv\\img\\base disk.vhd",
            "/srv/img/base disk.vhd"
        ]
    );
    assert_eq!(
        r.hints.iter().map(|h| h.0).collect::<Vec<_>>(),
        vec![1, 0, 2]
    );
}

/// Resolves only through a hint with the expected path.
struct HintOnly {
    want: &'static str,
    parent: Option<VecDevice>,
    seen: Vec<(u8, LocatorCode, String)>,
}

impl ParentResolver<VecDevice> for HintOnly {
    fn open_parent(
        &mut self,
        _: &ParentRequest<'_>,
        hint: Option<&LocatorHint<'_>>,
    ) -> Option<VecDevice> {
        let h = hint?;
        self.seen.push((h.slot, h.code, h.path.to_string()));
        (h.path == self.want).then(|| self.parent.take()).flatten()
    }
}

#[test]
fn locator_in_any_slot_with_space_in_bytes() {
    let base = dynamic(SIZE, 2 << 20, 1);
    let mut child = child_of(&base, 2 << 20, 2);
    let mut h = DynamicHeader::parse(child.bytes[512..1536].try_into().unwrap()).unwrap();
    // Keep only the W2ru locator, moved to slot 6 with its space in bytes
    // (as Hyper-V writes it), and add a MacX URL in slot 3 whose data is
    // written over the W2ku data.
    let w2ru = h
        .locators
        .iter()
        .position(|l| l.code == LocatorCode::W2ru)
        .unwrap();
    let w2ku = h
        .locators
        .iter()
        .position(|l| l.code == LocatorCode::W2ku)
        .unwrap();
    let mut moved = h.locators[w2ru];
    moved.data_space = 512;
    let mut mac = h.locators[w2ku];
    let url = b"file://localhost/images/my%20base.vhd";
    let at = mac.data_offset as usize;
    child.bytes[at..at + url.len()].copy_from_slice(url);
    mac.code = LocatorCode::MacX;
    mac.data_length = url.len() as u32;
    h.locators = [ParentLocator::EMPTY; 8];
    h.locators[6] = moved;
    h.locators[3] = mac;
    child.bytes[512..1536].copy_from_slice(&h.to_bytes());
    let mut r = HintOnly {
        want: "/images/my base.vhd",
        parent: Some(base),
        seen: Vec::new(),
    };
    let d = Disk::<VecDevice, Vec<u32>, 4>::open(
        child,
        &OpenOptions::default(),
        &mut VecStorage,
        &mut r,
    )
    .unwrap();
    assert_eq!(d.depth(), 2);
    assert_eq!(
        r.seen,
        vec![
            (6, LocatorCode::W2ru, ".\\parent.vhd".to_string()),
            (3, LocatorCode::MacX, "/images/my base.vhd".to_string()),
        ]
    );
}
