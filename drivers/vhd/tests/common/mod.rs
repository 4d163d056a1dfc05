//! Helpers shared by the integration tests: a deterministic PRNG, a parent
//! resolver over in-memory images and image constructors.
#![allow(dead_code)]

use ponte_vhd::create::{
    create_differencing, create_dynamic, create_fixed, CreateOptions, ParentLink,
};
use ponte_vhd::{
    Disk, LocatorHint, OpenOptions, ParentRequest, ParentResolver, Uuid, VecDevice, VecStorage,
};

/// xorshift64* — small, deterministic, good enough for workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub fn uuid(n: u8) -> Uuid {
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = n.wrapping_mul(31).wrapping_add(i as u8 * 7 + 1);
    }
    Uuid(u)
}

pub type MemDisk = Disk<VecDevice, Vec<u32>, 8>;

/// Resolves parents by UUID among in-memory images, ignoring hints; records
/// the hints it was offered.
#[derive(Default)]
pub struct MemResolver {
    pub images: Vec<(Uuid, VecDevice)>,
    pub hints: Vec<(u8, String)>,
}

impl MemResolver {
    pub fn add(&mut self, dev: VecDevice) {
        let mut d = dev.clone();
        let f = ponte_vhd::create::read_footer(&mut d).expect("footer");
        self.images.push((f.uuid, dev));
    }
}

impl ParentResolver<VecDevice> for MemResolver {
    fn open_parent(
        &mut self,
        request: &ParentRequest<'_>,
        hint: Option<&LocatorHint<'_>>,
    ) -> Option<VecDevice> {
        if let Some(h) = hint {
            self.hints.push((h.slot, h.path.to_string()));
            return None;
        }
        let i = self.images.iter().position(|(u, _)| *u == request.uuid)?;
        Some(self.images.remove(i).1)
    }
}

pub fn dynamic(size: u64, block_size: u32, id: u8) -> VecDevice {
    let mut dev = VecDevice::new();
    let mut o = CreateOptions::new(size, uuid(id), 1000);
    o.block_size = block_size;
    create_dynamic(&mut dev, &o).expect("create dynamic");
    dev
}

pub fn fixed(size: u64, id: u8) -> VecDevice {
    let mut dev = VecDevice::new();
    create_fixed(&mut dev, &CreateOptions::new(size, uuid(id), 1000)).expect("create fixed");
    dev
}

pub fn child_of(parent: &VecDevice, block_size: u32, id: u8) -> VecDevice {
    let mut dev = VecDevice::new();
    let mut p = parent.clone();
    let link = ParentLink {
        relative_path: "parent.vhd",
        absolute_path: None,
        name: "parent.vhd",
    };
    create_differencing(&mut dev, &mut p, &link, block_size, uuid(id), 2000).expect("create child");
    dev
}

pub fn rw() -> OpenOptions {
    OpenOptions {
        writable: true,
        ..OpenOptions::default()
    }
}

pub fn open(dev: VecDevice, options: &OpenOptions, resolver: &mut MemResolver) -> MemDisk {
    Disk::open(dev, options, &mut VecStorage, resolver).expect("open")
}
