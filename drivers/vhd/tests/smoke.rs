//! A large random workload on a dynamic image, read back before and
//! after reopening.
#![cfg(feature = "std")]
mod common;
use common::*;

#[test]
fn dynamic_roundtrip() {
    let dev = dynamic(64 << 20, 2 << 20, 1);
    let mut r = MemResolver::default();
    let mut d = open(dev, &rw(), &mut r);
    let mut rng = Rng::new(1);
    let mut model = vec![0u8; 64 << 20];
    for _ in 0..200 {
        let off = rng.below(64 << 20);
        let len = rng.below(300_000).min((64 << 20) - off) as usize;
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf);
        d.write_at(off, &buf).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&buf);
    }
    d.flush().unwrap();
    let mut out = vec![0u8; 64 << 20];
    d.read_at(0, &mut out).unwrap();
    assert!(out == model);
    let dev = d.into_devices().next().unwrap();
    let mut d = open(dev, &rw(), &mut r);
    let mut out = vec![0u8; 64 << 20];
    d.read_at(0, &mut out).unwrap();
    assert!(out == model);
}
