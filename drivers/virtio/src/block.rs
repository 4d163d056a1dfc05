//! virtio-blk (virtio 1.1, section 5.2) over a [`BlockBackend`].
//!
//! A request is a chain whose device-readable part starts with the 16-byte
//! header (type, reserved, sector) followed, for writes, by the data; its
//! device-writable part holds, for reads, the data and ends with the status
//! byte. The framing of those bytes into descriptors is free (Linux uses one
//! descriptor for the header, one per data segment and one for the status),
//! so requests are handled as two byte streams over the chain's segments.
//!
//! Data moves between guest memory and the backend through a fixed-size
//! bounce buffer, [`BOUNCE_SIZE`] bytes at a time. The status byte is written
//! after the data; the used length counts the data bytes written plus the
//! status byte. Supported requests: IN, OUT, FLUSH, GET_ID and (when
//! negotiated) WRITE_ZEROES; others complete with UNSUPP. Requests outside
//! the disk, or not a whole number of sectors, complete with IOERR, as do
//! backend failures. A header or status byte the chain has no room for is a
//! malformed request ([`BlockRequestError`]): the device needs a reset.

use core::fmt;

use ponte_kernel::memory::{GuestMemory, MemoryError};

use crate::device::{DeviceError, VirtioDevice};
use crate::queue::{ChainInfo, QueueError, Segment, SplitQueue};

/// The virtio device ID of a block device.
pub const DEVICE_TYPE_BLOCK: u16 = 2;

/// The unit of `sector` and `capacity`.
pub const SECTOR_SIZE: u64 = 512;

/// Size of the request header.
pub const HEADER_SIZE: u64 = 16;

/// Length of the GET_ID identification string.
pub const ID_LEN: usize = 20;

/// Data segments per request the device accepts (advertised as `seg_max`);
/// a chain holds at most two more buffers (header and status).
pub const SEG_MAX: u32 = 126;

/// Buffers per chain: data segments plus header and status.
pub const MAX_CHAIN_SEGMENTS: usize = SEG_MAX as usize + 2;

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;

/// Bytes moved per backend call.
pub const BOUNCE_SIZE: usize = 4096;

/// Largest WRITE_ZEROES range in sectors (advertised).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 21;

/// Ranges per WRITE_ZEROES request (advertised).
pub const MAX_WRITE_ZEROES_SEG: u32 = 1;

/// Length of the configuration space (up to `write_zeroes_may_unmap` and
/// its padding).
pub const CONFIG_LEN: u64 = 0x3C;

/// virtio-blk feature bits.
pub mod features {
    /// `size_max` is valid (not offered: any segment size is handled).
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The disk is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// FLUSH requests are supported.
    pub const FLUSH: u64 = 1 << 9;
    /// WRITE_ZEROES requests are supported.
    pub const WRITE_ZEROES: u64 = 1 << 14;
}

/// Request types.
pub mod request {
    /// Read sectors.
    pub const IN: u32 = 0;
    /// Write sectors.
    pub const OUT: u32 = 1;
    /// Make completed writes durable.
    pub const FLUSH: u32 = 4;
    /// Read the identification string.
    pub const GET_ID: u32 = 8;
    /// Discard sectors (not supported).
    pub const DISCARD: u32 = 11;
    /// Write zeroes to sector ranges.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Request status values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// The request failed.
    pub const IOERR: u8 = 1;
    /// The request type is not supported.
    pub const UNSUPP: u8 = 2;
}

/// The storage behind a virtio-blk device.
///
/// Offsets are in bytes; the device only asks for whole sectors inside
/// [`BlockBackend::capacity`].
pub trait BlockBackend {
    /// What went wrong in the backend.
    type Error: fmt::Debug;

    /// Size of the disk in bytes (rounded down to whole sectors by the
    /// device).
    fn capacity(&self) -> u64;

    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Self::Error>;

    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), Self::Error>;

    /// Writes `len` zero bytes at `offset`. The default writes a zero buffer
    /// repeatedly; backends that can do better (sparse images) override it.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), Self::Error> {
        const ZEROES: [u8; 512] = [0; 512];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ZEROES.len() as u64);
            self.write_at(offset + done, &ZEROES[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Whether writes are refused (offered to the guest as VIRTIO_BLK_F_RO).
    fn read_only(&self) -> bool {
        false
    }
}

/// A block request the device cannot even answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockRequestError {
    /// The device-readable part is shorter than the header.
    HeaderTooShort {
        /// Bytes of device-readable buffers in the chain.
        readable_len: u64,
    },
    /// The chain has no device-writable byte for the status.
    NoStatusByte,
    /// A data, header or status buffer is not guest RAM.
    Memory(MemoryError),
}

impl fmt::Display for BlockRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeaderTooShort { readable_len } => {
                write!(f, "{readable_len} readable bytes cannot hold the header")
            }
            Self::NoStatusByte => write!(f, "no writable byte for the status"),
            Self::Memory(e) => write!(f, "buffer: {e}"),
        }
    }
}

impl From<MemoryError> for BlockRequestError {
    fn from(e: MemoryError) -> Self {
        Self::Memory(e)
    }
}

/// Which way bytes move between the chain's buffers and the device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Out of the device-readable buffers.
    FromGuest,
    /// Into the device-writable buffers.
    ToGuest,
}

/// Marks that a guest-memory access of a request failed. The error itself
/// is kept where it arose (the device's `memory_fault`, written by
/// [`stream_copy`]) until [`VirtioBlock::execute`] takes it: passed up
/// through the request path, this marker costs a test and a branch per step
/// where the [`MemoryError`] is copied at every step.
struct Failed;

/// Outcome of a step of a request that moves data through guest memory.
type Step<T> = Result<T, Failed>;

/// Copies `buf.len()` bytes between `buf` and the device-readable
/// ([`Direction::FromGuest`]) or device-writable ([`Direction::ToGuest`])
/// stream of `segments`, starting `pos` bytes into that stream. A failed
/// access is recorded in `fault`.
fn stream_copy<M: GuestMemory>(
    mem: &M,
    segments: &[Segment],
    direction: Direction,
    mut pos: u64,
    mut buf: &mut [u8],
    fault: &mut Option<MemoryError>,
) -> Step<()> {
    let to_guest = direction == Direction::ToGuest;
    for s in segments.iter().filter(|s| s.device_writable == to_guest) {
        if buf.is_empty() {
            break;
        }
        let len = u64::from(s.len);
        if pos >= len {
            pos -= len;
            continue;
        }
        // The rest of the buffer is consumed from the front.
        let n = (len - pos).min(buf.len() as u64) as usize;
        let (chunk, rest) = core::mem::take(&mut buf).split_at_mut(n);
        let done = if to_guest {
            mem.write(s.addr + pos, chunk)
        } else {
            mem.read(s.addr + pos, chunk)
        };
        if let Err(error) = done {
            *fault = Some(error);
            return Err(Failed);
        }
        buf = rest;
        pos = 0;
    }
    Ok(())
}

/// What a request did: its status and the data bytes it wrote to the guest.
struct Outcome {
    status: u8,
    data_written: u64,
}

impl Outcome {
    const fn status(status: u8) -> Self {
        Self {
            status,
            data_written: 0,
        }
    }
}

/// What [`VirtioBlock::serve_next`] did with the available ring.
enum Served {
    /// A chain was handled and returned.
    Used,
    /// The driver made nothing more available.
    Empty,
    /// The chain cannot be answered; it is not returned.
    Malformed(BlockRequestError),
}

/// A virtio-blk device.
pub struct VirtioBlock<B> {
    backend: B,
    id: [u8; ID_LEN],
    features: u64,
    bounce: [u8; BOUNCE_SIZE],
    backend_errors: u64,
    /// The guest-memory error of the request being handled, until
    /// [`VirtioBlock::execute`] takes it.
    memory_fault: Option<MemoryError>,
}

impl<B: BlockBackend> VirtioBlock<B> {
    /// A device over `backend` whose GET_ID string is `id` (at most 20
    /// bytes are kept; shorter strings are padded with zeroes).
    pub fn new(backend: B, id: &[u8]) -> Self {
        let mut stored = [0; ID_LEN];
        let n = id.len().min(ID_LEN);
        stored[..n].copy_from_slice(&id[..n]);
        Self {
            backend,
            id: stored,
            features: 0,
            bounce: [0; BOUNCE_SIZE],
            backend_errors: 0,
            memory_fault: None,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Number of requests that failed in the backend (completed with IOERR).
    pub fn backend_errors(&self) -> u64 {
        self.backend_errors
    }

    /// Disk size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.backend.capacity() / SECTOR_SIZE
    }

    /// The byte offset of `len` bytes at `sector`, if they are whole sectors
    /// inside the disk.
    fn disk_range(&self, sector: u64, len: u64) -> Option<u64> {
        let offset = sector.checked_mul(SECTOR_SIZE)?;
        let end = offset.checked_add(len)?;
        (len & (SECTOR_SIZE - 1) == 0 && end <= self.capacity_sectors() * SECTOR_SIZE)
            .then_some(offset)
    }

    fn note<T, E>(&mut self, r: Result<T, E>) -> Result<T, u8> {
        r.map_err(|_| {
            self.backend_errors += 1;
            status::IOERR
        })
    }

    /// Moves `len` bytes between the disk at `offset` and the request's
    /// data buffers (after the header for writes), through the bounce
    /// buffer; a backend failure ends the request with IOERR.
    fn transfer<M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &[Segment],
        direction: Direction,
        offset: u64,
        len: u64,
    ) -> Step<Outcome> {
        let to_guest = direction == Direction::ToGuest;
        // Only data written into the guest's buffers counts in the used
        // length.
        let written = |done: u64| if to_guest { done } else { 0 };
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(BOUNCE_SIZE as u64) as usize;
            let at = offset + done;
            let r = if to_guest {
                self.backend.read_at(at, &mut self.bounce[..n])
            } else {
                let pos = HEADER_SIZE + done;
                stream_copy(
                    mem,
                    segments,
                    direction,
                    pos,
                    &mut self.bounce[..n],
                    &mut self.memory_fault,
                )?;
                self.backend.write_at(at, &self.bounce[..n])
            };
            if self.note(r).is_err() {
                return Ok(Outcome {
                    status: status::IOERR,
                    data_written: written(done),
                });
            }
            if to_guest {
                stream_copy(
                    mem,
                    segments,
                    direction,
                    done,
                    &mut self.bounce[..n],
                    &mut self.memory_fault,
                )?;
            }
            done += n as u64;
        }
        Ok(Outcome {
            status: status::OK,
            data_written: written(len),
        })
    }

    fn write_zeroes<M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &[Segment],
        payload_len: u64,
    ) -> Step<Outcome> {
        if self.features & features::WRITE_ZEROES == 0 {
            return Ok(Outcome::status(status::UNSUPP));
        }
        if self.backend.read_only() {
            return Ok(Outcome::status(status::IOERR));
        }
        let ranges = payload_len / 16;
        if payload_len & 15 != 0 || ranges == 0 {
            return Ok(Outcome::status(status::IOERR));
        }
        if ranges > u64::from(MAX_WRITE_ZEROES_SEG) {
            return Ok(Outcome::status(status::UNSUPP));
        }
        for i in 0..ranges {
            let mut raw = [0u8; 16];
            stream_copy(
                mem,
                segments,
                Direction::FromGuest,
                HEADER_SIZE + 16 * i,
                &mut raw,
                &mut self.memory_fault,
            )?;
            let sector = u64::from_le_bytes([
                raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
            ]);
            let sectors = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
            let flags = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]);
            // Bit 0 is "unmap", a hint; the others are reserved.
            if flags & !1 != 0 || sectors > MAX_WRITE_ZEROES_SECTORS {
                return Ok(Outcome::status(status::UNSUPP));
            }
            let len = u64::from(sectors) * SECTOR_SIZE;
            let Some(offset) = self.disk_range(sector, len) else {
                return Ok(Outcome::status(status::IOERR));
            };
            let r = self.backend.write_zeroes(offset, len);
            if self.note(r).is_err() {
                return Ok(Outcome::status(status::IOERR));
            }
        }
        Ok(Outcome::status(status::OK))
    }

    /// Handles one request; returns the used length.
    fn execute<M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &[Segment],
        info: &ChainInfo,
    ) -> Result<u32, BlockRequestError> {
        if info.readable_len < HEADER_SIZE {
            return Err(BlockRequestError::HeaderTooShort {
                readable_len: info.readable_len,
            });
        }
        if info.writable_len == 0 {
            return Err(BlockRequestError::NoStatusByte);
        }
        // Past the shape checks only guest memory can fail: the access
        // that failed kept its error, taken once here.
        self.execute_in_memory(mem, segments, info)
            .map_err(|Failed| BlockRequestError::Memory(self.take_memory_fault()))
    }

    /// Takes the guest-memory error the failed request recorded. Cold and
    /// out of line: a driver that follows the rules never gets here.
    #[cold]
    #[inline(never)]
    fn take_memory_fault(&mut self) -> MemoryError {
        // Every `Failed` is made by `stream_copy`, which records the error
        // first; an empty access at address 0 stands in should that not hold.
        self.memory_fault
            .take()
            .unwrap_or(MemoryError::NotRam { addr: 0, len: 0 })
    }

    /// [`VirtioBlock::execute`] once the chain has room for the header and
    /// the status byte.
    fn execute_in_memory<M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &[Segment],
        info: &ChainInfo,
    ) -> Step<u32> {
        let mut header = [0u8; HEADER_SIZE as usize];
        stream_copy(
            mem,
            segments,
            Direction::FromGuest,
            0,
            &mut header,
            &mut self.memory_fault,
        )?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ]);
        let status_pos = info.writable_len - 1;
        let payload_len = info.readable_len - HEADER_SIZE;
        let outcome = match kind {
            request::IN => match self.disk_range(sector, status_pos) {
                Some(offset) if status_pos < u64::from(u32::MAX) => {
                    self.transfer(mem, segments, Direction::ToGuest, offset, status_pos)?
                }
                _ => Outcome::status(status::IOERR),
            },
            request::OUT => match self.disk_range(sector, payload_len) {
                _ if self.backend.read_only() => Outcome::status(status::IOERR),
                Some(offset) => {
                    self.transfer(mem, segments, Direction::FromGuest, offset, payload_len)?
                }
                None => Outcome::status(status::IOERR),
            },
            request::FLUSH => {
                let r = self.backend.flush();
                match self.note(r) {
                    Ok(()) => Outcome::status(status::OK),
                    Err(s) => Outcome::status(s),
                }
            }
            request::GET_ID => {
                let n = status_pos.min(ID_LEN as u64) as usize;
                let mut id = self.id;
                stream_copy(
                    mem,
                    segments,
                    Direction::ToGuest,
                    0,
                    &mut id[..n],
                    &mut self.memory_fault,
                )?;
                Outcome {
                    status: status::OK,
                    data_written: n as u64,
                }
            }
            request::WRITE_ZEROES => self.write_zeroes(mem, segments, payload_len)?,
            _ => Outcome::status(status::UNSUPP),
        };
        let mut status_byte = [outcome.status];
        stream_copy(
            mem,
            segments,
            Direction::ToGuest,
            status_pos,
            &mut status_byte,
            &mut self.memory_fault,
        )?;
        // data_written <= status_pos < u32::MAX, checked above for IN.
        Ok(u32::try_from(outcome.data_written + 1).unwrap_or(u32::MAX))
    }

    /// Takes the next available chain, handles it and returns it to the
    /// driver. Queue errors pass through unchanged, so the caller converts
    /// them in one place.
    fn serve_next<M: GuestMemory>(
        &mut self,
        queue: &mut SplitQueue,
        mem: &M,
        segments: &mut [Segment],
    ) -> Result<Served, QueueError> {
        let Some(head) = queue.pop_available(mem)? else {
            return Ok(Served::Empty);
        };
        let info = queue.read_chain(mem, head, segments)?;
        let len = match self.execute(mem, &segments[..info.segments], &info) {
            Ok(len) => len,
            Err(e) => return Ok(Served::Malformed(e)),
        };
        queue.add_used(mem, head, len)?;
        Ok(Served::Used)
    }

    fn config_bytes(&self) -> [u8; CONFIG_LEN as usize] {
        let mut c = [0u8; CONFIG_LEN as usize];
        c[0..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c[48..52].copy_from_slice(&MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&MAX_WRITE_ZEROES_SEG.to_le_bytes());
        c
    }
}

impl<B: BlockBackend> VirtioDevice for VirtioBlock<B> {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_BLOCK
    }

    fn pci_class(&self) -> (u8, u8, u8) {
        // Mass storage, "SCSI" sub-class, as other virtio-blk implementations
        // report it.
        (0x01, 0x00, 0x00)
    }

    fn device_features(&self) -> u64 {
        let ro = if self.backend.read_only() {
            features::RO
        } else {
            features::WRITE_ZEROES
        };
        features::SEG_MAX | features::BLK_SIZE | features::FLUSH | ro
    }

    fn queue_count(&self) -> u16 {
        1
    }

    fn queue_max_size(&self, _index: u16) -> u16 {
        QUEUE_SIZE
    }

    fn config_len(&self) -> u64 {
        CONFIG_LEN
    }

    fn config_read(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| config.get(at).copied())
                .unwrap_or(0);
        }
    }

    fn config_write(&mut self, _offset: u64, _data: &[u8]) {
        // Every field is read-only without VIRTIO_BLK_F_CONFIG_WCE.
    }

    fn activate(&mut self, features: u64) {
        self.features = features;
    }

    fn reset(&mut self) {
        self.features = 0;
    }

    fn process_queue<M: GuestMemory>(
        &mut self,
        index: u16,
        queue: &mut SplitQueue,
        mem: &M,
    ) -> Result<u16, DeviceError> {
        let mut segments = [Segment::default(); MAX_CHAIN_SEGMENTS];
        let mut used = 0u16;
        for _ in 0..queue.size() {
            match self.serve_next(queue, mem, &mut segments) {
                Ok(Served::Used) => used += 1,
                Ok(Served::Empty) => break,
                Ok(Served::Malformed(e)) => return Err(DeviceError::Block(e)),
                Err(error) => {
                    return Err(DeviceError::Queue {
                        queue: index,
                        error,
                    })
                }
            }
        }
        Ok(used)
    }
}
