//! The type-0 configuration header of a PCI function (PCI Local Bus
//! Specification 3.0, chapter 6).
//!
//! [`ConfigHeader`] keeps the 256 bytes of a function's configuration space
//! together with a per-byte write mask and a per-byte write-one-to-clear mask,
//! so every register behaves as the specification says without per-register
//! code: read-only identification, the writable bits of the command register,
//! the read-only address-type bits and size-aligned address bits of each base
//! address register (BAR). Writing all ones to a BAR and reading it back
//! therefore yields the size mask, which is how guests size BARs.
//!
//! Capabilities are appended with [`ConfigHeader::add_capability`], which
//! links them into the list that starts at the capabilities pointer (0x34)
//! and sets the "capabilities list" status bit.

use core::fmt;

use ponte_kernel::device::AccessWidth;

use crate::intx::InterruptPin;

/// Size of the configuration space reachable through mechanism #1.
pub const CONFIG_SPACE_SIZE: usize = 256;

/// Number of base address registers in a type-0 header.
pub const BAR_COUNT: usize = 6;

/// Offset of the first capability: the first byte after the type-0 header.
pub const FIRST_CAPABILITY_OFFSET: u8 = 0x40;

/// Register offsets of the type-0 header.
pub mod offset {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: u8 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u8 = 0x02;
    /// Command (16 bits).
    pub const COMMAND: u8 = 0x04;
    /// Status (16 bits).
    pub const STATUS: u8 = 0x06;
    /// Revision ID.
    pub const REVISION_ID: u8 = 0x08;
    /// Programming interface.
    pub const PROG_IF: u8 = 0x09;
    /// Sub-class code.
    pub const SUBCLASS: u8 = 0x0A;
    /// Base class code.
    pub const CLASS_CODE: u8 = 0x0B;
    /// Cache line size.
    pub const CACHE_LINE_SIZE: u8 = 0x0C;
    /// Latency timer.
    pub const LATENCY_TIMER: u8 = 0x0D;
    /// Header type (bit 7: multi-function device).
    pub const HEADER_TYPE: u8 = 0x0E;
    /// Base address register 0; BAR `n` is at `BAR0 + 4 * n`.
    pub const BAR0: u8 = 0x10;
    /// Subsystem vendor ID (16 bits).
    pub const SUBSYSTEM_VENDOR_ID: u8 = 0x2C;
    /// Subsystem ID (16 bits).
    pub const SUBSYSTEM_ID: u8 = 0x2E;
    /// Expansion ROM base address (not implemented: reads as zero).
    pub const EXPANSION_ROM: u8 = 0x30;
    /// Capabilities pointer.
    pub const CAPABILITIES_POINTER: u8 = 0x34;
    /// Interrupt line (written by firmware, read by the operating system).
    pub const INTERRUPT_LINE: u8 = 0x3C;
    /// Interrupt pin (0: none, 1..=4: INTA#..INTD#).
    pub const INTERRUPT_PIN: u8 = 0x3D;
}

/// Command register bits.
pub mod command {
    /// Respond to I/O space accesses (I/O BARs decode).
    pub const IO_SPACE: u16 = 1 << 0;
    /// Respond to memory space accesses (memory BARs decode).
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// The function may master the bus (DMA into guest memory).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Parity error response.
    pub const PARITY_ERROR_RESPONSE: u16 = 1 << 6;
    /// SERR# enable.
    pub const SERR: u16 = 1 << 8;
    /// The function must not assert its INTx# pin.
    pub const INTERRUPT_DISABLE: u16 = 1 << 10;
    /// The bits this header implements as writable.
    pub const WRITABLE: u16 =
        IO_SPACE | MEMORY_SPACE | BUS_MASTER | PARITY_ERROR_RESPONSE | SERR | INTERRUPT_DISABLE;
}

/// Status register bits.
pub mod status {
    /// The function's INTx# is pending (independent of INTERRUPT_DISABLE).
    pub const INTERRUPT_STATUS: u16 = 1 << 3;
    /// The capabilities pointer at 0x34 is valid.
    pub const CAPABILITIES_LIST: u16 = 1 << 4;
    /// The error bits, cleared by writing one.
    pub const ERROR_BITS: u16 = (1 << 8) | (0x1F << 11);
}

/// Base address register type bits.
mod bar_bits {
    /// Bit 0 of an I/O BAR.
    pub const IO: u32 = 0x1;
    /// Bits 2:1 = 10b: 64-bit memory BAR.
    pub const MEMORY_64: u32 = 0x4;
    /// Bit 3: prefetchable memory.
    pub const PREFETCHABLE: u32 = 0x8;
    /// Address bits of a memory BAR's low dword.
    pub const MEMORY_ADDRESS_MASK: u32 = !0xF;
    /// Address bits of an I/O BAR (x86 I/O space is 64 KiB; bits 31:16 are
    /// hardwired to zero).
    pub const IO_ADDRESS_MASK: u32 = 0xFFFC;
}

/// The identification registers of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    /// Vendor ID (0xFFFF is reserved: it is what an absent function reads).
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision_id: u8,
    /// Base class code (e.g. 0x01 mass storage, 0x06 bridge).
    pub class_code: u8,
    /// Sub-class code.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
}

/// What a base address register decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O space (at most 256 bytes, below 64 KiB).
    Io,
    /// 32-bit memory space.
    Memory32 {
        /// Reads have no side effects and may be merged.
        prefetchable: bool,
    },
    /// 64-bit memory space; occupies this BAR and the next one.
    Memory64 {
        /// Reads have no side effects and may be merged.
        prefetchable: bool,
    },
}

impl BarKind {
    /// Whether the BAR decodes memory (as opposed to I/O) space.
    pub const fn is_memory(self) -> bool {
        !matches!(self, Self::Io)
    }

    /// The read-only type bits in the BAR's low dword.
    const fn type_bits(self) -> u32 {
        match self {
            Self::Io => bar_bits::IO,
            Self::Memory32 { prefetchable } => {
                if prefetchable {
                    bar_bits::PREFETCHABLE
                } else {
                    0
                }
            }
            Self::Memory64 { prefetchable } => {
                bar_bits::MEMORY_64
                    | if prefetchable {
                        bar_bits::PREFETCHABLE
                    } else {
                        0
                    }
            }
        }
    }
}

/// Where a BAR currently decodes: the guest (or firmware) chose `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRegion {
    /// Address space and width.
    pub kind: BarKind,
    /// First address (port number for I/O BARs); a multiple of `size`.
    pub base: u64,
    /// Size in bytes, a power of two.
    pub size: u64,
}

impl BarRegion {
    /// The offset of `addr..addr + len` inside the region, if all of it is
    /// inside.
    pub fn offset_of(&self, addr: u64, len: u64) -> Option<u64> {
        let offset = addr.checked_sub(self.base)?;
        let end = offset.checked_add(len)?;
        (end <= self.size).then_some(offset)
    }
}

/// Why a header could not be built as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The BAR index is not 0..=5, or a 64-bit BAR was asked at index 5.
    BarIndex {
        /// The index asked for.
        index: usize,
        /// The kind asked for.
        kind: BarKind,
    },
    /// The BAR (or, for a 64-bit BAR, its upper half) is already defined.
    BarInUse {
        /// The index already in use.
        index: usize,
    },
    /// The size is not a power of two or outside the range the kind allows
    /// (I/O: 4..=256 bytes; 32-bit memory: 16 bytes..=2 GiB; 64-bit memory:
    /// 16 bytes..=2^63).
    BarSize {
        /// The kind asked for.
        kind: BarKind,
        /// The size asked for.
        size: u64,
    },
    /// The capability does not fit in what is left of configuration space.
    CapabilityTooLarge {
        /// Bytes the capability needs, header included.
        needed: usize,
        /// Bytes still free.
        free: usize,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BarIndex { index, kind } => write!(f, "no BAR {index} for a {kind:?} BAR"),
            Self::BarInUse { index } => write!(f, "BAR {index} is already defined"),
            Self::BarSize { kind, size } => {
                write!(f, "size {size:#x} is invalid for a {kind:?} BAR")
            }
            Self::CapabilityTooLarge { needed, free } => {
                write!(f, "capability needs {needed} bytes, {free} are free")
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarSlot {
    Unused,
    Defined { kind: BarKind, size: u64 },
    UpperHalf,
}

/// A function's type-0 configuration space.
#[derive(Clone, Debug)]
pub struct ConfigHeader {
    bytes: [u8; CONFIG_SPACE_SIZE],
    write_mask: [u8; CONFIG_SPACE_SIZE],
    clear_mask: [u8; CONFIG_SPACE_SIZE],
    bars: [BarSlot; BAR_COUNT],
    next_capability: usize,
    last_capability: u8,
}

impl ConfigHeader {
    /// A header with `ids`, no BARs, no interrupt pin and no capabilities.
    pub fn new(ids: PciIds) -> Self {
        let mut header = Self {
            bytes: [0; CONFIG_SPACE_SIZE],
            write_mask: [0; CONFIG_SPACE_SIZE],
            clear_mask: [0; CONFIG_SPACE_SIZE],
            bars: [BarSlot::Unused; BAR_COUNT],
            next_capability: usize::from(FIRST_CAPABILITY_OFFSET),
            last_capability: 0,
        };
        header.put16(offset::VENDOR_ID, ids.vendor_id);
        header.put16(offset::DEVICE_ID, ids.device_id);
        header.bytes[usize::from(offset::REVISION_ID)] = ids.revision_id;
        header.bytes[usize::from(offset::PROG_IF)] = ids.prog_if;
        header.bytes[usize::from(offset::SUBCLASS)] = ids.subclass;
        header.bytes[usize::from(offset::CLASS_CODE)] = ids.class_code;
        header.put16(offset::SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor_id);
        header.put16(offset::SUBSYSTEM_ID, ids.subsystem_id);
        let [lo, hi] = command::WRITABLE.to_le_bytes();
        header.write_mask[usize::from(offset::COMMAND)] = lo;
        header.write_mask[usize::from(offset::COMMAND) + 1] = hi;
        let [lo, hi] = status::ERROR_BITS.to_le_bytes();
        header.clear_mask[usize::from(offset::STATUS)] = lo;
        header.clear_mask[usize::from(offset::STATUS) + 1] = hi;
        for reg in [
            offset::CACHE_LINE_SIZE,
            offset::LATENCY_TIMER,
            offset::INTERRUPT_LINE,
        ] {
            header.write_mask[usize::from(reg)] = 0xFF;
        }
        header
    }

    fn put16(&mut self, at: u8, value: u16) {
        let at = usize::from(at);
        self.bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    fn put32(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn get16(&self, at: u8) -> u16 {
        let at = usize::from(at);
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn get32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[at..at + 4]);
        u32::from_le_bytes(b)
    }

    /// Defines BAR `index` as `kind` of `size` bytes, unplaced (address 0).
    /// A 64-bit memory BAR also takes BAR `index + 1`.
    pub fn set_bar(&mut self, index: usize, kind: BarKind, size: u64) -> Result<(), HeaderError> {
        let is_64 = matches!(kind, BarKind::Memory64 { .. });
        let last = if is_64 {
            index.checked_add(1)
        } else {
            Some(index)
        };
        if !matches!(last, Some(l) if l < BAR_COUNT) {
            return Err(HeaderError::BarIndex { index, kind });
        }
        let (min, max) = match kind {
            BarKind::Io => (4, 256),
            BarKind::Memory32 { .. } => (16, 1 << 31),
            BarKind::Memory64 { .. } => (16, 1 << 63),
        };
        if !size.is_power_of_two() || size < min || size > max {
            return Err(HeaderError::BarSize { kind, size });
        }
        for i in index..=index + usize::from(is_64) {
            if self.bars[i] != BarSlot::Unused {
                return Err(HeaderError::BarInUse { index: i });
            }
        }
        self.bars[index] = BarSlot::Defined { kind, size };
        let at = usize::from(offset::BAR0) + 4 * index;
        let address_mask = !(size - 1);
        let low_mask = match kind {
            BarKind::Io => bar_bits::IO_ADDRESS_MASK,
            _ => bar_bits::MEMORY_ADDRESS_MASK,
        } & (address_mask as u32);
        self.put32(at, kind.type_bits());
        self.write_mask[at..at + 4].copy_from_slice(&low_mask.to_le_bytes());
        if is_64 {
            self.bars[index + 1] = BarSlot::UpperHalf;
            let high_mask = (address_mask >> 32) as u32;
            self.put32(at + 4, 0);
            self.write_mask[at + 4..at + 8].copy_from_slice(&high_mask.to_le_bytes());
        }
        Ok(())
    }

    /// The kind and size BAR `index` was defined with (`None` for an unused
    /// BAR or the upper half of a 64-bit BAR).
    pub fn bar_definition(&self, index: usize) -> Option<(BarKind, u64)> {
        match self.bars.get(index) {
            Some(&BarSlot::Defined { kind, size }) => Some((kind, size)),
            _ => None,
        }
    }

    /// Where BAR `index` decodes now: `None` if it is not defined, its
    /// address space is disabled in the command register, it is at address
    /// zero (unassigned), or it would run past the end of its address space.
    pub fn bar_region(&self, index: usize) -> Option<BarRegion> {
        let (kind, size) = self.bar_definition(index)?;
        let enable = if kind.is_memory() {
            command::MEMORY_SPACE
        } else {
            command::IO_SPACE
        };
        if self.command() & enable == 0 {
            return None;
        }
        let at = usize::from(offset::BAR0) + 4 * index;
        let low = self.get32(at);
        let base = match kind {
            BarKind::Io => u64::from(low & bar_bits::IO_ADDRESS_MASK),
            BarKind::Memory32 { .. } => u64::from(low & bar_bits::MEMORY_ADDRESS_MASK),
            BarKind::Memory64 { .. } => {
                u64::from(self.get32(at + 4)) << 32 | u64::from(low & bar_bits::MEMORY_ADDRESS_MASK)
            }
        };
        let end = base.checked_add(size)?;
        let limit = match kind {
            BarKind::Io => 0x1_0000,
            BarKind::Memory32 { .. } => 0x1_0000_0000,
            BarKind::Memory64 { .. } => u64::MAX,
        };
        (base != 0 && end <= limit).then_some(BarRegion { kind, base, size })
    }

    /// Sets the interrupt pin register (`None`: the function uses no INTx#).
    pub fn set_interrupt_pin(&mut self, pin: Option<InterruptPin>) {
        self.bytes[usize::from(offset::INTERRUPT_PIN)] =
            pin.map_or(0, InterruptPin::register_value);
    }

    /// The interrupt pin register decoded.
    pub fn interrupt_pin(&self) -> Option<InterruptPin> {
        InterruptPin::from_register(self.bytes[usize::from(offset::INTERRUPT_PIN)])
    }

    /// Sets the interrupt line register, as firmware does to tell the
    /// operating system which IRQ the pin reaches (0xFF: unknown).
    pub fn set_interrupt_line(&mut self, line: u8) {
        self.bytes[usize::from(offset::INTERRUPT_LINE)] = line;
    }

    /// The interrupt line register.
    pub fn interrupt_line(&self) -> u8 {
        self.bytes[usize::from(offset::INTERRUPT_LINE)]
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.get16(offset::COMMAND)
    }

    /// The status register.
    pub fn status(&self) -> u16 {
        self.get16(offset::STATUS)
    }

    /// Whether the function may read and write guest memory (bus master).
    pub fn bus_master(&self) -> bool {
        self.command() & command::BUS_MASTER != 0
    }

    /// Records whether the function's interrupt condition is pending (status
    /// bit 3) and returns the level its INTx# pin must have: pending and not
    /// masked by the command register's interrupt-disable bit.
    pub fn set_interrupt_pending(&mut self, pending: bool) -> bool {
        let mut status = self.status();
        if pending {
            status |= status::INTERRUPT_STATUS;
        } else {
            status &= !status::INTERRUPT_STATUS;
        }
        self.put16(offset::STATUS, status);
        self.intx_level()
    }

    /// The level the INTx# pin must have now.
    pub fn intx_level(&self) -> bool {
        self.status() & status::INTERRUPT_STATUS != 0
            && self.command() & command::INTERRUPT_DISABLE == 0
    }

    /// Appends a capability with ID `id` whose bytes after the ID and next
    /// pointer are `body`; returns its offset. Capability bodies are
    /// read-only to the guest.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u8, HeaderError> {
        let at = self.next_capability;
        let needed = body.len().saturating_add(2);
        let free = CONFIG_SPACE_SIZE.saturating_sub(at);
        let too_large = HeaderError::CapabilityTooLarge { needed, free };
        let Ok(at_byte) = u8::try_from(at) else {
            return Err(too_large);
        };
        // Past the end of configuration space unless it fits.
        let Some([cap_id, next, rest @ ..]) = self.bytes.get_mut(at..at.saturating_add(needed))
        else {
            return Err(too_large);
        };
        *cap_id = id;
        *next = 0;
        rest.copy_from_slice(body);
        // The previous capability's next pointer (the capabilities pointer
        // register for the first), a byte inside configuration space.
        let link = if self.last_capability == 0 {
            let status = self.status() | status::CAPABILITIES_LIST;
            self.put16(offset::STATUS, status);
            usize::from(offset::CAPABILITIES_POINTER)
        } else {
            usize::from(self.last_capability) + 1
        };
        if let Some(link) = self.bytes.get_mut(link) {
            *link = at_byte;
        }
        self.last_capability = at_byte;
        // Capabilities start on dword boundaries.
        self.next_capability = (at + needed + 3) & !3;
        Ok(at_byte)
    }

    /// Reads `width` bytes at `offset` (at most 4; bytes past the end of
    /// configuration space read as all ones).
    pub fn read(&self, offset: u8, width: AccessWidth) -> u32 {
        let mut value = 0u32;
        for i in 0..width.bytes().min(4) {
            let byte = self
                .bytes
                .get(usize::from(offset) + i)
                .copied()
                .unwrap_or(0xFF);
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// Writes the low `width` bytes of `value` at `offset`; read-only bits
    /// keep their value and write-one-to-clear bits are cleared by ones.
    pub fn write(&mut self, offset: u8, width: AccessWidth, value: u32) {
        for i in 0..width.bytes().min(4) {
            let at = usize::from(offset) + i;
            if at >= CONFIG_SPACE_SIZE {
                break;
            }
            let new = (value >> (8 * i)) as u8;
            let old = self.bytes[at];
            let mask = self.write_mask[at];
            self.bytes[at] = ((old & !mask) | (new & mask)) & !(new & self.clear_mask[at]);
        }
    }

    /// Makes the bytes of `mask` at `offset` writable by the guest where
    /// `mask` has ones (for writable fields inside capabilities).
    pub fn set_write_mask(&mut self, offset: u8, mask: &[u8]) {
        let at = usize::from(offset);
        for (i, m) in mask.iter().enumerate() {
            if let Some(slot) = self.write_mask.get_mut(at + i) {
                *slot = *m;
            }
        }
    }

    /// Stores `data` at `offset` as the device, ignoring the write masks
    /// (for registers whose value the device computes on access). Bytes past
    /// the end of configuration space are dropped.
    pub fn set_bytes(&mut self, offset: u8, data: &[u8]) {
        let at = usize::from(offset);
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = self.bytes.get_mut(at + i) {
                *slot = *b;
            }
        }
    }

    /// The raw configuration space.
    pub fn bytes(&self) -> &[u8; CONFIG_SPACE_SIZE] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor_id: 0x1AF4,
            device_id: 0x1042,
            revision_id: 1,
            class_code: 0x01,
            subclass: 0x00,
            prog_if: 0,
            subsystem_vendor_id: 0x1AF4,
            subsystem_id: 0x0040,
        }
    }

    #[test]
    fn identification_is_little_endian_and_read_only() {
        let mut h = ConfigHeader::new(ids());
        assert_eq!(h.read(0, AccessWidth::Dword), 0x1042_1AF4);
        assert_eq!(h.read(0x08, AccessWidth::Dword), 0x0100_0001);
        assert_eq!(h.read(0x2C, AccessWidth::Dword), 0x0040_1AF4);
        h.write(0, AccessWidth::Dword, 0xDEAD_BEEF);
        h.write(0x08, AccessWidth::Dword, 0xFFFF_FFFF);
        assert_eq!(h.read(0, AccessWidth::Dword), 0x1042_1AF4);
        assert_eq!(h.read(0x08, AccessWidth::Dword), 0x0100_0001);
        assert_eq!(h.read(offset::HEADER_TYPE, AccessWidth::Byte), 0);
    }

    #[test]
    fn command_keeps_only_implemented_bits_and_status_errors_clear_on_one() {
        let mut h = ConfigHeader::new(ids());
        h.write(offset::COMMAND, AccessWidth::Word, 0xFFFF);
        assert_eq!(h.command(), 0x0547);
        // Status is not writable: ones to the error bits clear them, and
        // they are clear already.
        h.write(offset::STATUS, AccessWidth::Word, 0xFFFF);
        assert_eq!(h.status(), 0);
    }

    #[test]
    fn bar_definitions_are_validated() {
        let mut h = ConfigHeader::new(ids());
        let mem = BarKind::Memory64 {
            prefetchable: false,
        };
        assert_eq!(
            h.set_bar(5, mem, 0x1000),
            Err(HeaderError::BarIndex {
                index: 5,
                kind: mem
            })
        );
        assert_eq!(
            h.set_bar(0, BarKind::Io, 512),
            Err(HeaderError::BarSize {
                kind: BarKind::Io,
                size: 512
            })
        );
        assert_eq!(
            h.set_bar(0, mem, 0x3000),
            Err(HeaderError::BarSize {
                kind: mem,
                size: 0x3000
            })
        );
        h.set_bar(2, mem, 0x4000).unwrap();
        assert_eq!(
            h.set_bar(3, BarKind::Io, 32),
            Err(HeaderError::BarInUse { index: 3 })
        );
        assert_eq!(
            h.set_bar(1, mem, 0x4000),
            Err(HeaderError::BarInUse { index: 2 })
        );
    }

    #[test]
    fn capability_space_runs_out_with_a_typed_error() {
        let mut h = ConfigHeader::new(ids());
        let body = [0u8; 80];
        assert_eq!(h.add_capability(0x09, &body), Ok(0x40));
        // 0x40 + 82 = 0x92, aligned to 0x94; 0x94 + 82 = 0xE6, aligned to
        // 0xE8, leaving 24 bytes.
        assert_eq!(h.add_capability(0x09, &body), Ok(0x94));
        assert_eq!(
            h.add_capability(0x09, &body),
            Err(HeaderError::CapabilityTooLarge {
                needed: 82,
                free: 24
            })
        );
        // The failed capability left the list as it was.
        assert_eq!(h.read(0x95, AccessWidth::Byte), 0);
        assert_eq!(h.add_capability(0x05, &[0; 22]), Ok(0xE8));
        assert_eq!(h.read(0x95, AccessWidth::Byte), 0xE8);
    }
}
