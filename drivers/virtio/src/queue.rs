//! Split virtqueues (virtio 1.1, section 2.6), read and written only through
//! [`GuestMemory`].
//!
//! The driver owns the descriptor table and the available ring, the device
//! the used ring. Everything the driver wrote is hostile: the available index
//! may run ahead by more than the queue size, a head or `next` index may be
//! out of range, a chain may loop, an address plus length may wrap, an
//! indirect table may be empty, misaligned in length, nested or huge. Each of
//! these is a [`QueueError`] naming the offending values; walking a chain
//! visits each descriptor at most once (a bitmap of visited indexes), so no
//! loop runs longer than the table it walks.

use core::fmt;
use core::sync::atomic::{fence, Ordering};

use ponte_kernel::memory::{GuestMemory, MemoryError};

/// The largest queue size this crate accepts (the specification allows
/// 32768; chain walking keeps a visited bitmap of this many bits).
pub const QUEUE_SIZE_LIMIT: u16 = 1024;

/// Size of one descriptor in the table.
pub const DESCRIPTOR_SIZE: u64 = 16;

/// Descriptor flags.
pub mod desc_flags {
    /// The chain continues at `next`.
    pub const NEXT: u16 = 1;
    /// The buffer is device-writable (otherwise device-readable).
    pub const WRITE: u16 = 2;
    /// The buffer is a table of descriptors.
    pub const INDIRECT: u16 = 4;
}

/// Available ring flag: the driver does not want an interrupt when buffers
/// are used.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Which driver- or device-area a failed guest-memory access was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingPart {
    /// The descriptor table.
    DescriptorTable,
    /// The available (driver) ring.
    AvailableRing,
    /// The used (device) ring.
    UsedRing,
    /// An indirect descriptor table.
    IndirectTable,
}

/// What was wrong with a queue or a chain the driver built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// A ring or table is not (entirely) guest RAM.
    Memory {
        /// Where the access was.
        part: RingPart,
        /// The failed access.
        error: MemoryError,
    },
    /// The queue is used before it was enabled.
    NotReady,
    /// The queue size is zero, not a power of two, or over the maximum.
    InvalidSize {
        /// The size the driver set.
        size: u16,
        /// The device's maximum for this queue.
        max: u16,
    },
    /// A ring address is misaligned (table 16, available 2, used 4 bytes) or
    /// the ring runs past the end of the address space.
    BadRingAddress {
        /// Which ring.
        part: RingPart,
        /// Its address.
        addr: u64,
    },
    /// The available index claims more new buffers than the queue holds.
    AvailIndexAhead {
        /// The driver's available index.
        avail_idx: u16,
        /// The next entry the device would consume.
        next_avail: u16,
        /// Queue size.
        size: u16,
    },
    /// A chain head in the available ring is not a descriptor index.
    HeadOutOfRange {
        /// The head index.
        head: u16,
        /// Queue size.
        size: u16,
    },
    /// A `next` field names a descriptor outside its table.
    NextOutOfRange {
        /// The descriptor holding the bad `next`.
        index: u16,
        /// The `next` value.
        next: u16,
        /// Number of descriptors in the table (queue size or indirect
        /// table length).
        table_len: u16,
    },
    /// The chain comes back to a descriptor it already visited.
    Loop {
        /// The descriptor visited twice.
        index: u16,
        /// Whether the loop is inside an indirect table.
        indirect: bool,
    },
    /// The chain has more buffers than the caller has room for (a limit
    /// the device advertises, such as virtio-blk's `seg_max` plus two).
    TooManySegments {
        /// The caller's limit.
        limit: usize,
    },
    /// A buffer's address plus length wraps the address space.
    BufferOverflow {
        /// Descriptor index.
        index: u16,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A device-readable buffer follows a device-writable one.
    ReadableAfterWritable {
        /// Descriptor index of the readable buffer.
        index: u16,
    },
    /// An indirect descriptor inside an indirect table.
    NestedIndirect {
        /// Index inside the indirect table.
        index: u16,
    },
    /// An indirect descriptor that also has the NEXT flag.
    IndirectWithNext {
        /// Descriptor index.
        index: u16,
    },
    /// An indirect table whose length is zero, not a multiple of 16, or
    /// longer than [`QUEUE_SIZE_LIMIT`] descriptors.
    BadIndirectLength {
        /// Descriptor index.
        index: u16,
        /// The table length in bytes.
        len: u32,
    },
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Memory { part, error } => write!(f, "{part:?}: {error}"),
            Self::NotReady => write!(f, "queue used before it was enabled"),
            Self::InvalidSize { size, max } => write!(f, "queue size {size} (maximum {max})"),
            Self::BadRingAddress { part, addr } => write!(f, "{part:?} at {addr:#x}"),
            Self::AvailIndexAhead {
                avail_idx,
                next_avail,
                size,
            } => write!(
                f,
                "available index {avail_idx} is more than {size} past {next_avail}"
            ),
            Self::HeadOutOfRange { head, size } => {
                write!(f, "chain head {head} in a queue of {size}")
            }
            Self::NextOutOfRange {
                index,
                next,
                table_len,
            } => write!(
                f,
                "descriptor {index} chains to {next} in a table of {table_len}"
            ),
            Self::Loop { index, indirect } => {
                write!(
                    f,
                    "chain loops at descriptor {index} (indirect: {indirect})"
                )
            }
            Self::TooManySegments { limit } => write!(f, "chain has more than {limit} buffers"),
            Self::BufferOverflow { index, addr, len } => {
                write!(f, "descriptor {index}: {addr:#x}+{len:#x} wraps")
            }
            Self::ReadableAfterWritable { index } => {
                write!(f, "readable descriptor {index} after a writable one")
            }
            Self::NestedIndirect { index } => write!(f, "indirect descriptor {index} is nested"),
            Self::IndirectWithNext { index } => {
                write!(f, "indirect descriptor {index} also has NEXT")
            }
            Self::BadIndirectLength { index, len } => {
                write!(f, "indirect descriptor {index} has table length {len}")
            }
        }
    }
}

/// One descriptor as the driver wrote it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest-physical buffer address.
    pub addr: u64,
    /// Buffer length in bytes.
    pub len: u32,
    /// [`desc_flags`].
    pub flags: u16,
    /// Next descriptor when `flags` has NEXT.
    pub next: u16,
}

impl Descriptor {
    /// Decodes the 16-byte little-endian layout.
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        Self {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }
}

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address; `addr + len` does not wrap.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes this buffer (otherwise it reads it).
    pub device_writable: bool,
}

/// The shape of a chain [`SplitQueue::read_chain`] collected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainInfo {
    /// Number of segments stored.
    pub segments: usize,
    /// Total bytes of the device-readable segments (which come first).
    pub readable_len: u64,
    /// Total bytes of the device-writable segments.
    pub writable_len: u64,
}

const BITMAP_WORDS: usize = QUEUE_SIZE_LIMIT as usize / 64;

struct Visited([u64; BITMAP_WORDS]);

impl Visited {
    /// Marks `index`; false if it was marked already.
    fn mark(&mut self, index: u16) -> bool {
        let (word, bit) = (usize::from(index) / 64, index % 64);
        let Some(w) = self.0.get_mut(word) else {
            return false;
        };
        let fresh = *w & (1 << bit) == 0;
        *w |= 1 << bit;
        fresh
    }
}

/// The device's view of one split virtqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitQueue {
    max_size: u16,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    next_avail: u16,
    next_used: u16,
}

impl SplitQueue {
    /// A disabled queue whose size starts at (and may not exceed)
    /// `max_size`, itself clamped to [`QUEUE_SIZE_LIMIT`].
    pub const fn new(max_size: u16) -> Self {
        let max_size = if max_size > QUEUE_SIZE_LIMIT {
            QUEUE_SIZE_LIMIT
        } else {
            max_size
        };
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
            next_avail: 0,
            next_used: 0,
        }
    }

    /// Back to the state after [`SplitQueue::new`].
    pub fn reset(&mut self) {
        *self = Self::new(self.max_size);
    }

    /// The largest size the driver may set.
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// The size the driver set (initially the maximum).
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Whether the driver enabled the queue.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Descriptor table, available ring and used ring addresses.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc_table, self.avail_ring, self.used_ring)
    }

    /// Sets the size; takes effect only while the queue is disabled.
    pub fn set_size(&mut self, size: u16) {
        if !self.ready {
            self.size = size;
        }
    }

    /// Sets the three ring addresses; takes effect only while the queue is
    /// disabled.
    pub fn set_addresses(&mut self, desc_table: u64, avail_ring: u64, used_ring: u64) {
        if !self.ready {
            self.desc_table = desc_table;
            self.avail_ring = avail_ring;
            self.used_ring = used_ring;
        }
    }

    /// Sets the rings from a legacy page frame number: the descriptor table
    /// at `pfn * 4096`, the available ring right after it, the used ring at
    /// the next 4096-byte boundary (virtio 0.9.5 layout). `pfn` 0 disables
    /// the queue.
    pub fn set_legacy_pfn(&mut self, pfn: u32) -> Result<(), QueueError> {
        if pfn == 0 {
            self.reset();
            return Ok(());
        }
        let size = u64::from(self.size);
        let desc = u64::from(pfn) << 12;
        let avail = desc + DESCRIPTOR_SIZE * size;
        let used = (avail + 6 + 2 * size).next_multiple_of(4096);
        self.ready = false;
        self.set_addresses(desc, avail, used);
        self.enable()
    }

    /// The PFN [`SplitQueue::set_legacy_pfn`] was given (0 when disabled).
    pub fn legacy_pfn(&self) -> u32 {
        if self.ready {
            (self.desc_table >> 12) as u32
        } else {
            0
        }
    }

    /// Validates the size and ring addresses and enables the queue.
    pub fn enable(&mut self) -> Result<(), QueueError> {
        let size = self.size;
        if size == 0 || !size.is_power_of_two() || size > self.max_size {
            return Err(QueueError::InvalidSize {
                size,
                max: self.max_size,
            });
        }
        let n = u64::from(size);
        for (part, addr, align, len) in [
            (
                RingPart::DescriptorTable,
                self.desc_table,
                16,
                DESCRIPTOR_SIZE * n,
            ),
            (RingPart::AvailableRing, self.avail_ring, 2, 6 + 2 * n),
            (RingPart::UsedRing, self.used_ring, 4, 6 + 8 * n),
        ] {
            if addr % align != 0 || addr.checked_add(len).is_none() {
                return Err(QueueError::BadRingAddress { part, addr });
            }
        }
        self.ready = true;
        Ok(())
    }

    fn read_u16<M: GuestMemory>(mem: &M, part: RingPart, addr: u64) -> Result<u16, QueueError> {
        let mut b = [0u8; 2];
        mem.read(addr, &mut b)
            .map_err(|error| QueueError::Memory { part, error })?;
        Ok(u16::from_le_bytes(b))
    }

    /// The available ring's flags.
    pub fn avail_flags<M: GuestMemory>(&self, mem: &M) -> Result<u16, QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        Self::read_u16(mem, RingPart::AvailableRing, self.avail_ring)
    }

    /// Takes the next chain head the driver made available, if any.
    pub fn pop_available<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<u16>, QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        let avail_idx = Self::read_u16(mem, RingPart::AvailableRing, self.avail_ring + 2)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending > self.size {
            return Err(QueueError::AvailIndexAhead {
                avail_idx,
                next_avail: self.next_avail,
                size: self.size,
            });
        }
        if pending == 0 {
            return Ok(None);
        }
        // The ring entry is read only after the index that published it.
        fence(Ordering::Acquire);
        let slot = u64::from(self.next_avail % self.size);
        let head = Self::read_u16(mem, RingPart::AvailableRing, self.avail_ring + 4 + 2 * slot)?;
        if head >= self.size {
            return Err(QueueError::HeadOutOfRange {
                head,
                size: self.size,
            });
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(head))
    }

    /// Walks the chain starting at `head`, following NEXT and at most one
    /// indirect table, and stores its buffers in `out`. Fails on the first
    /// malformed descriptor; never visits a descriptor twice.
    pub fn read_chain<M: GuestMemory>(
        &self,
        mem: &M,
        head: u16,
        out: &mut [Segment],
    ) -> Result<ChainInfo, QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        if head >= self.size {
            return Err(QueueError::HeadOutOfRange {
                head,
                size: self.size,
            });
        }
        let mut info = ChainInfo::default();
        let mut visited = Visited([0; BITMAP_WORDS]);
        let mut table = self.desc_table;
        let mut table_len = self.size;
        let mut part = RingPart::DescriptorTable;
        let mut indirect = false;
        let mut index = head;
        loop {
            if !visited.mark(index) {
                return Err(QueueError::Loop { index, indirect });
            }
            let mut raw = [0u8; 16];
            // index < table_len <= QUEUE_SIZE_LIMIT, and the table was
            // checked not to wrap.
            mem.read(table + DESCRIPTOR_SIZE * u64::from(index), &mut raw)
                .map_err(|error| QueueError::Memory { part, error })?;
            let d = Descriptor::from_bytes(&raw);
            if d.flags & desc_flags::INDIRECT != 0 {
                if indirect {
                    return Err(QueueError::NestedIndirect { index });
                }
                if d.flags & desc_flags::NEXT != 0 {
                    return Err(QueueError::IndirectWithNext { index });
                }
                let count = u64::from(d.len) / DESCRIPTOR_SIZE;
                if d.len == 0
                    || u64::from(d.len) % DESCRIPTOR_SIZE != 0
                    || count > u64::from(QUEUE_SIZE_LIMIT)
                    || d.addr.checked_add(u64::from(d.len)).is_none()
                {
                    return Err(QueueError::BadIndirectLength { index, len: d.len });
                }
                indirect = true;
                table = d.addr;
                table_len = count as u16;
                part = RingPart::IndirectTable;
                visited = Visited([0; BITMAP_WORDS]);
                index = 0;
                continue;
            }
            if d.addr.checked_add(u64::from(d.len)).is_none() {
                return Err(QueueError::BufferOverflow {
                    index,
                    addr: d.addr,
                    len: d.len,
                });
            }
            let writable = d.flags & desc_flags::WRITE != 0;
            if !writable && info.writable_len > 0 {
                return Err(QueueError::ReadableAfterWritable { index });
            }
            let limit = out.len();
            let slot = out
                .get_mut(info.segments)
                .ok_or(QueueError::TooManySegments { limit })?;
            *slot = Segment {
                addr: d.addr,
                len: d.len,
                device_writable: writable,
            };
            info.segments += 1;
            if writable {
                info.writable_len += u64::from(d.len);
            } else {
                info.readable_len += u64::from(d.len);
            }
            if d.flags & desc_flags::NEXT == 0 {
                return Ok(info);
            }
            if d.next >= table_len {
                return Err(QueueError::NextOutOfRange {
                    index,
                    next: d.next,
                    table_len,
                });
            }
            index = d.next;
        }
    }

    /// Returns chain `head` to the driver with `len` bytes written into its
    /// device-writable buffers: the used element first, then the index.
    pub fn add_used<M: GuestMemory>(
        &mut self,
        mem: &M,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        let slot = u64::from(self.next_used % self.size);
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        let used = |error| QueueError::Memory {
            part: RingPart::UsedRing,
            error,
        };
        mem.write(self.used_ring + 4 + 8 * slot, &elem)
            .map_err(used)?;
        self.next_used = self.next_used.wrapping_add(1);
        // The element must be visible before the index that publishes it.
        fence(Ordering::Release);
        mem.write(self.used_ring + 2, &self.next_used.to_le_bytes())
            .map_err(used)
    }

    /// The next available-ring entry the device will consume.
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// The used index the device last published.
    pub fn next_used(&self) -> u16 {
        self.next_used
    }
}
