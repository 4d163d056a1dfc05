//! Test doubles: guest memory over cells, a recording interrupt line, an
//! in-memory disk, and a driver that lays out rings the way Linux does.

use core::cell::{Cell, RefCell};
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use ponte_kernel::irq::InterruptLine;
use ponte_kernel::memory::{GuestMemory, MemoryError};

use crate::block::BlockBackend;
use crate::queue::desc_flags;

/// Guest RAM from address 0, one cell per byte.
#[derive(Clone, Copy)]
pub struct TestMemory<'a>(pub &'a [Cell<u8>]);

impl TestMemory<'_> {
    fn range(&self, addr: u64, len: usize) -> Result<core::ops::Range<usize>, MemoryError> {
        let len64 = len as u64;
        let end = addr
            .checked_add(len64)
            .ok_or(MemoryError::Overflow { addr, len: len64 })?;
        if end > self.0.len() as u64 {
            return Err(MemoryError::NotRam { addr, len: len64 });
        }
        Ok(addr as usize..end as usize)
    }
}

impl GuestMemory for TestMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let r = self.range(addr, buf.len())?;
        for (b, c) in buf.iter_mut().zip(&self.0[r]) {
            *b = c.get();
        }
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let r = self.range(addr, data.len())?;
        for (b, c) in data.iter().zip(&self.0[r]) {
            c.set(*b);
        }
        Ok(())
    }
}

/// `size` bytes of zeroed guest RAM.
pub fn ram(size: usize) -> Vec<Cell<u8>> {
    (0..size).map(|_| Cell::new(0)).collect()
}

pub fn poke(ram: &[Cell<u8>], addr: u64, data: &[u8]) {
    TestMemory(ram).write(addr, data).unwrap();
}

pub fn peek(ram: &[Cell<u8>], addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    TestMemory(ram).read(addr, &mut v).unwrap();
    v
}

pub fn peek_u16(ram: &[Cell<u8>], addr: u64) -> u16 {
    let b = peek(ram, addr, 2);
    u16::from_le_bytes([b[0], b[1]])
}

pub fn peek_u32(ram: &[Cell<u8>], addr: u64) -> u32 {
    let b = peek(ram, addr, 4);
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A line that records every level it is driven to.
#[derive(Clone, Default)]
pub struct RecordingLine(pub Rc<RefCell<Vec<bool>>>);

impl RecordingLine {
    pub fn level(&self) -> bool {
        self.0.borrow().last().copied().unwrap_or(false)
    }

    pub fn transitions(&self) -> Vec<bool> {
        self.0.borrow().clone()
    }
}

impl InterruptLine for RecordingLine {
    fn set_level(&self, asserted: bool) {
        self.0.borrow_mut().push(asserted);
    }

    fn pulse(&self) {
        self.0.borrow_mut().extend([true, false]);
    }
}

/// Backend failure injected by a test.
#[derive(Debug, PartialEq, Eq)]
pub struct DiskFailure;

/// A disk in a vector, with a flush counter and failure injection.
#[derive(Default)]
pub struct MemDisk {
    pub data: Vec<u8>,
    pub flushes: usize,
    pub fail_reads: bool,
    pub fail_writes: bool,
    pub read_only: bool,
    /// Largest buffer any single call was given.
    pub largest_call: usize,
}

impl MemDisk {
    pub fn new(sectors: usize) -> Self {
        let data = (0..sectors * 512)
            .map(|i| (i / 512) as u8 ^ (i as u8))
            .collect();
        Self {
            data,
            ..Self::default()
        }
    }
}

impl BlockBackend for MemDisk {
    type Error = DiskFailure;

    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskFailure> {
        self.largest_call = self.largest_call.max(buf.len());
        if self.fail_reads {
            return Err(DiskFailure);
        }
        let at = offset as usize;
        buf.copy_from_slice(&self.data[at..at + buf.len()]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskFailure> {
        self.largest_call = self.largest_call.max(data.len());
        if self.fail_writes {
            return Err(DiskFailure);
        }
        let at = offset as usize;
        self.data[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskFailure> {
        self.flushes += 1;
        Ok(())
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// Where the test driver keeps its rings.
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x3000;
pub const USED: u64 = 0x4000;
pub const INDIRECT: u64 = 0x6000;

/// One buffer of a chain the test driver builds: address, length, whether
/// the device writes it.
pub type Buf = (u64, u32, bool);

/// The driver side of one split queue of `size` entries at [`DESC`],
/// [`AVAIL`] and [`USED`], filling descriptors from index 0 upwards as
/// Linux's virtio_ring does for a fresh queue.
pub struct RingDriver<'a> {
    pub ram: &'a [Cell<u8>],
    pub size: u16,
    pub next_desc: u16,
    pub avail_idx: u16,
}

impl<'a> RingDriver<'a> {
    pub fn new(ram: &'a [Cell<u8>], size: u16) -> Self {
        Self {
            ram,
            size,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    pub fn write_desc(&self, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        poke(self.ram, table + 16 * u64::from(index), &d);
    }

    /// Publishes `head` in the available ring and bumps the index.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        poke(self.ram, AVAIL + 4 + 2 * slot, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        poke(self.ram, AVAIL + 2, &self.avail_idx.to_le_bytes());
    }

    /// Puts `bufs` in consecutive descriptors chained with NEXT and makes
    /// the chain available; returns its head.
    pub fn submit(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == bufs.len();
            let flags = if writable { desc_flags::WRITE } else { 0 }
                | if last { 0 } else { desc_flags::NEXT };
            self.write_desc(DESC, index, addr, len, flags, (index + 1) % self.size);
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    /// Puts `bufs` in an indirect table at [`INDIRECT`] referenced by one
    /// descriptor, as Linux does when INDIRECT_DESC is negotiated and a
    /// request has more than one buffer; returns the head.
    pub fn submit_indirect(&mut self, bufs: &[Buf]) -> u16 {
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let flags = if writable { desc_flags::WRITE } else { 0 }
                | if last { 0 } else { desc_flags::NEXT };
            self.write_desc(INDIRECT, i as u16, addr, len, flags, i as u16 + 1);
        }
        let head = self.next_desc;
        self.write_desc(
            DESC,
            head,
            INDIRECT,
            16 * bufs.len() as u32,
            desc_flags::INDIRECT,
            0,
        );
        self.next_desc = (head + 1) % self.size;
        self.publish(head);
        head
    }

    pub fn used_idx(&self) -> u16 {
        peek_u16(self.ram, USED + 2)
    }

    /// Used element `n`: (id, len).
    pub fn used(&self, n: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(n % self.size);
        (peek_u32(self.ram, at), peek_u32(self.ram, at + 4))
    }
}

/// A virtio-blk request header.
pub fn blk_header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    h
}
