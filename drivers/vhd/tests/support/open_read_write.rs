//! Body of the `open_read_write` fuzz target, shared by the fuzzer
//! (`fuzz/fuzz_targets/open_read_write.rs`) and by the corpus test
//! (`tests/fuzz_corpus.rs`), which runs it over every committed seed on
//! stable Rust.
//!
//! Input layout (all integers little-endian):
//!
//! ```text
//! flags: u8                bit 0: accept bad checksums; bits 1-2: bitmap
//!                          cache slots (default, 1, 3, 1024)
//! image_len: u16, image    the image to open (clamped to what is left)
//! parent_len: u16, parent  served by the resolver for every parent request
//! ops: 7 bytes each        kind u8, offset u32, length u16
//! ```
//!
//! Whatever the bytes, the library must answer with values or typed errors,
//! never panic. When it does accept an image, it must behave like a disk:
//! every successful write reads back at once, and after flush and reopen
//! every byte written since reads back, through commit and compaction.

use std::collections::BTreeMap;

use ponte_vhd::{
    check, Disk, Error, LocatorHint, OpenOptions, ParentRequest, ParentResolver, VecDevice,
    VecStorage,
};

/// Largest image a run may grow to.
const DEVICE_LIMIT: u64 = 4 << 20;
/// Longest access.
const MAX_ACCESS: u64 = 8192;
/// Most operations run per input.
const MAX_OPS: usize = 48;

type FuzzDisk = Disk<VecDevice, Vec<u32>, 4>;

/// Serves the fuzz-provided parent to every request.
struct OneParent {
    parent: Option<Vec<u8>>,
}

impl ParentResolver<VecDevice> for OneParent {
    fn open_parent(
        &mut self,
        _request: &ParentRequest<'_>,
        _hint: Option<&LocatorHint<'_>>,
    ) -> Option<VecDevice> {
        self.parent.as_ref().map(|bytes| device(bytes.clone()))
    }
}

fn device(bytes: Vec<u8>) -> VecDevice {
    let mut dev = VecDevice::from_bytes(bytes);
    dev.capacity_limit = DEVICE_LIMIT;
    dev
}

/// Reads input fields front to back; missing bytes read as zero.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ])
    }
    fn u32(&mut self) -> u32 {
        let mut w = [0u8; 4];
        for (d, s) in w.iter_mut().zip(self.take(4)) {
            *d = *s;
        }
        u32::from_le_bytes(w)
    }
}

/// What the disk must hold: bytes written (or zeroed) since open.
#[derive(Default)]
struct Shadow {
    bytes: BTreeMap<u64, u8>,
}

impl Shadow {
    fn set(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.bytes.insert(offset + i as u64, b);
        }
    }
    /// A failed write may have landed partly: those bytes are unknown.
    fn forget(&mut self, offset: u64, len: u64) {
        let keys: Vec<u64> = self
            .bytes
            .range(offset..offset.saturating_add(len))
            .map(|(&k, _)| k)
            .collect();
        for k in keys {
            self.bytes.remove(&k);
        }
    }
    fn verify(&self, disk: &mut FuzzDisk, when: &str) {
        for (&at, &want) in &self.bytes {
            let mut got = [0u8; 1];
            disk.read_at(at, &mut got)
                .unwrap_or_else(|e| panic!("{when}: reading byte {at} written before: {e:?}"));
            assert_eq!(
                got[0], want,
                "{when}: byte {at} differs from what was written"
            );
        }
    }
}

fn options(flags: u8) -> OpenOptions {
    OpenOptions {
        writable: true,
        writable_parents: true,
        accept_bad_checksums: flags & 1 != 0,
        bitmap_cache_slots: match (flags >> 1) & 3 {
            0 => OpenOptions::default().bitmap_cache_slots,
            1 => 1,
            2 => 3,
            _ => 1024,
        },
    }
}

fn open(image: Vec<u8>, flags: u8, resolver: &mut OneParent) -> Result<FuzzDisk, Error> {
    Disk::open(device(image), &options(flags), &mut VecStorage, resolver)
}

/// Writes the data of an operation: a pattern derived from its position.
fn pattern(offset: u64, len: usize, seed: u8) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i).wrapping_mul(0x9E37_79B1) >> 13) as u8 ^ seed)
        .collect()
}

/// Gives back the devices of a flushed disk and reopens the chain from
/// their bytes; a flushed image must check clean of fatal problems and
/// reopen.
fn reopen(disk: FuzzDisk, flags: u8, resolver: &mut OneParent) -> FuzzDisk {
    let mut devices = disk.into_devices();
    let top = devices.next().map(|d| d.bytes).unwrap_or_default();
    if let Some(parent) = devices.next() {
        // The parent may have been written by a commit.
        resolver.parent = Some(parent.bytes);
    }
    drop(devices);
    let summary = check(
        device(top.clone()),
        &options(flags),
        &mut VecStorage,
        &mut |_| {},
    )
    .expect("check of a flushed image runs");
    assert_eq!(
        summary.fatal, 0,
        "a flushed image checks without fatal problems"
    );
    open(top, flags, resolver).expect("a flushed image reopens")
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let mut input = Cursor(data);
    let flags = input.u8();
    let image_len = usize::from(input.u16());
    let image = input.take(image_len).to_vec();
    let parent_len = usize::from(input.u16());
    let parent = input.take(parent_len).to_vec();
    let mut resolver = OneParent {
        parent: (!parent.is_empty()).then_some(parent),
    };

    // Checking never panics, whatever the bytes.
    let _ = check(
        device(image.clone()),
        &options(flags),
        &mut VecStorage,
        &mut |_| {},
    );

    let Ok(mut disk) = open(image, flags, &mut resolver) else {
        return;
    };
    assert_eq!(disk.info().virtual_size, disk.size());
    let size = disk.size();
    let mut shadow = Shadow::default();
    let mut scratch = [0u8; 1024];
    let mut buf = vec![0u8; MAX_ACCESS as usize];
    for n in 0..MAX_OPS {
        if input.0.is_empty() {
            break;
        }
        let kind = input.u8();
        let raw_offset = u64::from(input.u32());
        let len = u64::from(input.u16()) % (MAX_ACCESS + 1);
        // Mostly inside the disk, sometimes across or beyond its end.
        let offset = raw_offset % size.saturating_add(1024);
        match kind % 8 {
            0 | 1 => {
                let out = &mut buf[..len as usize];
                let in_range = offset.checked_add(len).is_some_and(|e| e <= size);
                match disk.read_at(offset, out) {
                    Ok(()) => assert!(in_range, "read beyond the end succeeded"),
                    Err(Error::OutOfRange { .. }) => assert!(!in_range),
                    Err(_) => {}
                }
            }
            2 | 3 => {
                let data = pattern(offset, len as usize, kind);
                match disk.write_at(offset, &data) {
                    Ok(()) => {
                        let out = &mut buf[..len as usize];
                        disk.read_at(offset, out).expect("read back a write");
                        assert!(*out == data[..], "a write reads back at once");
                        shadow.set(offset, &data);
                    }
                    Err(Error::OutOfRange { .. }) => {}
                    Err(_) => shadow.forget(offset, len),
                }
            }
            4 => match disk.write_zeroes(offset, len) {
                Ok(()) => {
                    let out = &mut buf[..len as usize];
                    disk.read_at(offset, out).expect("read back zeroes");
                    assert!(out.iter().all(|&b| b == 0), "zeroed range reads zeros");
                    shadow.set(offset, &vec![0u8; len as usize]);
                }
                Err(Error::OutOfRange { .. }) => {}
                Err(_) => shadow.forget(offset, len),
            },
            5 => {
                let _ = disk.flush();
            }
            6 => {
                if raw_offset & 1 == 0 {
                    let _ = disk.compact(&mut scratch);
                } else {
                    let _ = disk.commit(&mut scratch);
                }
                shadow.verify(&mut disk, &format!("after maintenance op {n}"));
            }
            _ => {
                if disk.flush().is_err() {
                    return;
                }
                disk = reopen(disk, flags, &mut resolver);
                shadow.verify(&mut disk, &format!("after reopen at op {n}"));
            }
        }
    }
    if disk.flush().is_err() {
        return;
    }
    let mut disk = reopen(disk, flags, &mut resolver);
    shadow.verify(&mut disk, "after flush and reopen");
}
