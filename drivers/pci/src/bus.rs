//! Bus 0 behind the host bridge: configuration mechanism #1 and BAR routing.
//!
//! [`PciBus`] is the [`PortIo`] device for ports [`CONFIG_ADDRESS_PORT`]
//! (0xCF8, dword accesses only) and [`CONFIG_DATA_PORT`]`..=0xCFF`. A dword
//! written to CONFIG_ADDRESS selects, when bit 31 is set, bus (bits 23:16),
//! device (15:11), function (10:8) and the dword register (7:2); the data
//! ports then reach that register, bytes 0xCFC..=0xCFF being its bytes 0..=3,
//! so byte and word accesses work at any offset inside the dword. With bit 31
//! clear, or for a function nobody attached (including every bus but 0), the
//! data ports read all ones and drop writes. Byte and word accesses to
//! 0xCF8..=0xCFB are not configuration cycles (on a PIIX, 0xCF9 is the reset
//! control register): they read all ones, and an integrator that models reset
//! control claims 0xCF9 before the bus.
//!
//! The host bridge ([`HostBridge`]) answers at 00:00.0; other functions are
//! attached with [`PciBus::attach`]. After every configuration write the bus
//! asks the written function where its BARs decode; when that changed, the
//! [`PciBus::generation`] counter increases, and [`PciBus::memory_bar_read`] and
//! friends route accesses to the new places. An integrator that maps BARs
//! (EPT, port bitmaps) compares the generation after each configuration exit.
//!
//! The bus is also a [`PortIo`] device for every other port (I/O BARs) and an
//! [`Mmio`] device for the PCI memory window
//! ([`PciBus::set_mmio_window_base`]), so an integrator can register it for
//! 0xCF8..=0xCFF, its I/O window and its memory window and be done: BARs
//! the guest moves inside those windows are followed without any mapping
//! change.

use core::fmt;

use ponte_kernel::device::{AccessWidth, Mmio, PortIo};

use crate::function::{PciAddress, PciFunction};
use crate::header::{command, offset, BarKind, BarRegion, BAR_COUNT};
use crate::host_bridge::HostBridge;

/// The CONFIG_ADDRESS register port.
pub const CONFIG_ADDRESS_PORT: u16 = 0xCF8;
/// The first CONFIG_DATA port; the window is `0xCFC..=0xCFF`.
pub const CONFIG_DATA_PORT: u16 = 0xCFC;

/// CONFIG_ADDRESS bit 31: accesses to CONFIG_DATA are configuration cycles.
pub const CONFIG_ENABLE: u32 = 1 << 31;
/// The bits of CONFIG_ADDRESS that hold state (bits 30:24 and 1:0 are
/// reserved and read as zero).
const CONFIG_ADDRESS_BITS: u32 = CONFIG_ENABLE | 0x00FF_FFFC;

/// Why a function could not be attached or resources not assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// Device number over 31 or function number over 7.
    BadAddress {
        /// Device number asked for.
        device: u8,
        /// Function number asked for.
        function: u8,
    },
    /// A function is already at this address (00:00.0 is the host bridge).
    Occupied {
        /// The address asked for.
        address: PciAddress,
    },
    /// Every slot of the bus is taken.
    Full {
        /// The bus's capacity in functions.
        capacity: usize,
    },
    /// A BAR does not fit in what is left of its window.
    NoSpace {
        /// The function.
        address: PciAddress,
        /// The BAR index.
        bar: usize,
        /// The BAR's size.
        size: u64,
    },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadAddress { device, function } => {
                write!(f, "no PCI function {device:#x}.{function}")
            }
            Self::Occupied { address } => write!(f, "{address} is already attached"),
            Self::Full { capacity } => write!(f, "the bus holds {capacity} functions"),
            Self::NoSpace { address, bar, size } => {
                write!(f, "BAR {bar} of {address} ({size:#x} bytes) does not fit")
            }
        }
    }
}

/// An address range the firmware-style assignment places BARs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceWindow {
    /// First address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

struct Slot<'a> {
    address: PciAddress,
    function: &'a mut dyn PciFunction,
    regions: [Option<BarRegion>; BAR_COUNT],
}

/// Bus 0 with the host bridge at 00:00.0 and up to `N` more functions.
pub struct PciBus<'a, const N: usize> {
    config_address: u32,
    host_bridge: HostBridge,
    slots: [Option<Slot<'a>>; N],
    generation: u64,
    mmio_window_base: u64,
}

impl<const N: usize> Default for PciBus<'_, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, const N: usize> PciBus<'a, N> {
    /// A bus with only the host bridge.
    pub fn new() -> Self {
        Self {
            config_address: 0,
            host_bridge: HostBridge::new(),
            slots: [const { None }; N],
            generation: 0,
            mmio_window_base: 0,
        }
    }

    /// Attaches `function` at 00:`device`.`function_number`. A device with
    /// functions other than 0 must also have function 0, or guests that scan
    /// function 0 first never find it; function 0 then reports itself
    /// multi-function in its header type.
    pub fn attach(
        &mut self,
        device: u8,
        function_number: u8,
        function: &'a mut dyn PciFunction,
    ) -> Result<PciAddress, BusError> {
        let address = PciAddress::new(0, device, function_number).ok_or(BusError::BadAddress {
            device,
            function: function_number,
        })?;
        if address == Self::host_bridge_address() || self.slot_index(address).is_some() {
            return Err(BusError::Occupied { address });
        }
        let free = self
            .slots
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(BusError::Full { capacity: N })?;
        let mut slot = Slot {
            address,
            function,
            regions: [None; BAR_COUNT],
        };
        for (bar, region) in slot.regions.iter_mut().enumerate() {
            *region = slot.function.bar_region(bar);
        }
        if slot.regions.iter().any(Option::is_some) {
            self.generation = self.generation.wrapping_add(1);
        }
        *free = Some(slot);
        Ok(address)
    }

    /// Sets the guest-physical address that offset 0 of the
    /// [`Mmio`] implementation stands for: the integrator registers the bus
    /// as the device of its PCI memory window (say `0xE000_0000..0xFEC0_0000`)
    /// and sets the window's base here.
    pub fn set_mmio_window_base(&mut self, base: u64) {
        self.mmio_window_base = base;
    }

    /// The host bridge's address, 00:00.0.
    pub const fn host_bridge_address() -> PciAddress {
        PciAddress::HOST_BRIDGE
    }

    /// The address of the function in slot `index`, if one is attached.
    fn slot_address(&self, index: usize) -> Option<PciAddress> {
        self.slots.get(index)?.as_ref().map(|slot| slot.address)
    }

    fn slot_index(&self, address: PciAddress) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.address == address))
    }

    /// Whether a function (the host bridge or an attached one) answers at
    /// `address`.
    pub fn has_function(&self, address: PciAddress) -> bool {
        address == Self::host_bridge_address() || self.slot_index(address).is_some()
    }

    fn has_other_functions(&self, device: u8) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|s| s.address.device() == device && s.address.function() != 0)
    }

    /// Increases whenever some BAR starts or stops decoding or moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where BAR `bar` of the function at `address` decodes now.
    pub fn bar_region(&self, address: PciAddress, bar: usize) -> Option<BarRegion> {
        let slot = self
            .slots
            .get(self.slot_index(address)?)
            .and_then(Option::as_ref)?;
        *slot.regions.get(bar)?
    }

    /// Every decoding BAR: `(function, BAR index, region)`.
    pub fn regions(&self) -> impl Iterator<Item = (PciAddress, usize, BarRegion)> + use<'_, 'a, N> {
        self.slots.iter().flatten().flat_map(|s| {
            s.regions
                .iter()
                .enumerate()
                .filter_map(move |(bar, r)| r.map(|r| (s.address, bar, r)))
        })
    }

    /// A configuration read of the function at `address` (all ones if there
    /// is none). An access that would cross a dword boundary reads the bytes
    /// up to the boundary; the bytes past it read as ones, as configuration
    /// cycles never cross a dword.
    pub fn config_read(&mut self, address: PciAddress, offset: u8, width: AccessWidth) -> u32 {
        let width = narrow_to_dword(width);
        let len = width.bytes() as u8;
        let room = 4 - offset % 4;
        if len <= room {
            return self.config_read_in_dword(address, offset, width);
        }
        let mut value = 0;
        for i in 0..len {
            let byte = if i < room {
                self.config_read_in_dword(address, offset + i, AccessWidth::Byte)
            } else {
                0xFF
            };
            value |= byte << (8 * i);
        }
        value
    }

    fn config_read_in_dword(&mut self, address: PciAddress, offset: u8, width: AccessWidth) -> u32 {
        let mask = width.mask() as u32;
        let value = if address == Self::host_bridge_address() {
            self.host_bridge.config_read(offset, width)
        } else if let Some(i) = self.slot_index(address) {
            let multi = address.function() == 0 && self.has_other_functions(address.device());
            let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
                return mask;
            };
            let mut value = slot.function.config_read(offset, width);
            let header_type = offset::HEADER_TYPE;
            if multi && offset <= header_type && header_type - offset < width.bytes() as u8 {
                value |= 0x80 << (8 * (header_type - offset));
            }
            value
        } else {
            mask
        };
        value & mask
    }

    /// A configuration write to the function at `address` (dropped if there
    /// is none). An access that would cross a dword boundary writes only the
    /// bytes up to the boundary.
    pub fn config_write(
        &mut self,
        address: PciAddress,
        offset: u8,
        width: AccessWidth,
        value: u32,
    ) {
        let width = narrow_to_dword(width);
        let len = width.bytes() as u8;
        let room = 4 - offset % 4;
        if len <= room {
            self.config_write_in_dword(address, offset, width, value);
            return;
        }
        for i in 0..room {
            self.config_write_in_dword(address, offset + i, AccessWidth::Byte, value >> (8 * i));
        }
    }

    fn config_write_in_dword(
        &mut self,
        address: PciAddress,
        offset: u8,
        width: AccessWidth,
        value: u32,
    ) {
        if address == Self::host_bridge_address() {
            self.host_bridge.config_write(offset, width, value);
            return;
        }
        let Some(i) = self.slot_index(address) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        slot.function.config_write(offset, width, value);
        let mut moved = false;
        for (bar, region) in slot.regions.iter_mut().enumerate() {
            let now = slot.function.bar_region(bar);
            moved |= now != *region;
            *region = now;
        }
        if moved {
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// The function and register CONFIG_ADDRESS selects, if bit 31 is set.
    fn selected(&self) -> Option<(PciAddress, u8)> {
        let a = self.config_address;
        if a & CONFIG_ENABLE == 0 {
            return None;
        }
        let address = PciAddress::new(
            (a >> 16) as u8,
            ((a >> 11) & 0x1F) as u8,
            ((a >> 8) & 7) as u8,
        )?;
        Some((address, (a & 0xFC) as u8))
    }

    /// A read of CONFIG_DATA at `byte` (0-3) into it. The selected register
    /// is dword-aligned, so an access running past 0xCFF is one crossing the
    /// register's dword, which [`PciBus::config_read`] already splits.
    fn data_read(&mut self, byte: u8, width: AccessWidth) -> u32 {
        let Some((address, register)) = self.selected() else {
            return width.mask() as u32;
        };
        self.config_read(address, register + byte, width)
    }

    /// A write of CONFIG_DATA at `byte` (0-3) into it, split like
    /// [`PciBus::data_read`].
    fn data_write(&mut self, byte: u8, width: AccessWidth, value: u32) {
        if let Some((address, register)) = self.selected() {
            self.config_write(address, register + byte, width, value);
        }
    }

    /// A memory read at guest-physical `addr`, if some memory BAR decodes all
    /// of `addr..addr + width`.
    pub fn memory_bar_read(&mut self, addr: u64, width: AccessWidth) -> Option<u64> {
        let (i, bar, offset) = self.find(addr, width, true)?;
        let slot = self.slots.get_mut(i).and_then(Option::as_mut)?;
        Some(slot.function.bar_read(bar, offset, width) & width.mask())
    }

    /// A memory write at guest-physical `addr`; `false` if no memory BAR
    /// decodes it.
    pub fn memory_bar_write(&mut self, addr: u64, width: AccessWidth, value: u64) -> bool {
        let Some((i, bar, offset)) = self.find(addr, width, true) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        slot.function
            .bar_write(bar, offset, width, value & width.mask());
        true
    }

    /// A port read, if some I/O BAR decodes all of `port..port + width`.
    pub fn io_bar_read(&mut self, port: u16, width: AccessWidth) -> Option<u32> {
        let (i, bar, offset) = self.find(u64::from(port), width, false)?;
        let slot = self.slots.get_mut(i).and_then(Option::as_mut)?;
        Some((slot.function.bar_read(bar, offset, width) & width.mask()) as u32)
    }

    /// A port write; `false` if no I/O BAR decodes it.
    pub fn io_bar_write(&mut self, port: u16, width: AccessWidth, value: u32) -> bool {
        let Some((i, bar, offset)) = self.find(u64::from(port), width, false) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        slot.function
            .bar_write(bar, offset, width, u64::from(value) & width.mask());
        true
    }

    fn find(&self, addr: u64, width: AccessWidth, memory: bool) -> Option<(usize, usize, u64)> {
        let len = width.bytes() as u64;
        self.slots.iter().enumerate().find_map(|(i, s)| {
            let s = s.as_ref()?;
            s.regions.iter().enumerate().find_map(|(bar, r)| {
                let r = r.as_ref()?;
                if r.kind.is_memory() != memory {
                    return None;
                }
                r.offset_of(addr, len).map(|offset| (i, bar, offset))
            })
        })
    }

    /// The dword at `at` of `address` read back after writing all ones to
    /// it, the original value restored: a BAR's size mask.
    fn size_mask(&mut self, address: PciAddress, at: u8) -> u32 {
        let original = self.config_read(address, at, AccessWidth::Dword);
        self.config_write(address, at, AccessWidth::Dword, u32::MAX);
        let mask = self.config_read(address, at, AccessWidth::Dword);
        self.config_write(address, at, AccessWidth::Dword, original);
        mask
    }

    /// Sizes BAR `bar` of `address` the way firmware and operating systems
    /// do: write all ones, read back the mask, restore. Returns its kind and
    /// size, or `None` for an unimplemented BAR (or the upper half of a
    /// 64-bit one, which the lower half's probe covers).
    #[inline(never)]
    pub fn probe_bar(&mut self, address: PciAddress, bar: usize) -> Option<(BarKind, u64)> {
        if bar >= BAR_COUNT {
            return None;
        }
        let at = offset::BAR0 + 4 * bar as u8;
        let mask = self.size_mask(address, at);
        if mask == 0 || mask == u32::MAX {
            // Unimplemented, or no function at all.
            return None;
        }
        if mask & 1 != 0 {
            let mut bits = mask & !3;
            if bits & 0xFFFF_0000 == 0 {
                // Upper 16 bits hardwired to zero: the 64 KiB x86 I/O space.
                bits |= 0xFFFF_0000;
            }
            let size = u64::from((!bits).wrapping_add(1));
            return (size != 0).then_some((BarKind::Io, size));
        }
        let prefetchable = mask & 0x8 != 0;
        match (mask >> 1) & 3 {
            0 => {
                let size = u64::from((!(mask & !0xF)).wrapping_add(1));
                (size != 0).then_some((BarKind::Memory32 { prefetchable }, size))
            }
            2 if bar + 1 < BAR_COUNT => {
                let high_mask = self.size_mask(address, at + 4);
                let bits = u64::from(high_mask) << 32 | u64::from(mask & !0xF);
                let size = (!bits).wrapping_add(1);
                (size != 0).then_some((BarKind::Memory64 { prefetchable }, size))
            }
            _ => None,
        }
    }

    /// Places every BAR of every attached function, as firmware does before
    /// the operating system starts: memory BARs (32- and 64-bit) in `memory`,
    /// I/O BARs in `io`, each naturally aligned, largest first; then enables
    /// the function's memory and I/O decoding. The guest may move them later.
    pub fn assign_resources(
        &mut self,
        memory: ResourceWindow,
        io: ResourceWindow,
    ) -> Result<(), BusError> {
        let mut sizes = [[None; BAR_COUNT]; N];
        for (i, bars) in sizes.iter_mut().enumerate() {
            let Some(address) = self.slot_address(i) else {
                continue;
            };
            let cmd = self.config_read(address, offset::COMMAND, AccessWidth::Word);
            let decode = u32::from(command::IO_SPACE | command::MEMORY_SPACE);
            self.config_write(address, offset::COMMAND, AccessWidth::Word, cmd & !decode);
            for (bar, size) in bars.iter_mut().enumerate() {
                *size = self.probe_bar(address, bar);
            }
        }
        let mut memory_next = memory.base;
        let mut io_next = io.base;
        // Largest first keeps natural alignment from wasting space.
        while let Some((i, bar, kind, size)) = take_largest(&mut sizes) {
            let Some(address) = self.slot_address(i) else {
                continue;
            };
            let (next, window) = if kind.is_memory() {
                (&mut memory_next, memory)
            } else {
                (&mut io_next, io)
            };
            let no_space = BusError::NoSpace { address, bar, size };
            let base = next.checked_next_multiple_of(size).ok_or(no_space)?;
            let end = base.checked_add(size).ok_or(no_space)?;
            let limit = match kind {
                BarKind::Io => 0x1_0000,
                BarKind::Memory32 { .. } => 0x1_0000_0000,
                BarKind::Memory64 { .. } => u64::MAX,
            };
            if end > window.base.saturating_add(window.size) || end > limit {
                return Err(no_space);
            }
            *next = end;
            let at = offset::BAR0 + 4 * bar as u8;
            self.config_write(address, at, AccessWidth::Dword, base as u32);
            if matches!(kind, BarKind::Memory64 { .. }) {
                self.config_write(address, at + 4, AccessWidth::Dword, (base >> 32) as u32);
            }
            let enable = if kind.is_memory() {
                command::MEMORY_SPACE
            } else {
                command::IO_SPACE
            };
            let cmd = self.config_read(address, offset::COMMAND, AccessWidth::Word);
            self.config_write(
                address,
                offset::COMMAND,
                AccessWidth::Word,
                cmd | u32::from(enable),
            );
        }
        Ok(())
    }
}

/// What probing found of one BAR: its kind and size, if it is implemented.
type ProbedBar = Option<(BarKind, u64)>;

type Probed = [[ProbedBar; BAR_COUNT]];

/// Takes the largest BAR left out of `sizes`: its slot, BAR index, kind
/// and size.
fn take_largest(sizes: &mut Probed) -> Option<(usize, usize, BarKind, u64)> {
    let mut best: Option<(usize, usize, &mut ProbedBar)> = None;
    let mut best_size = 0;
    for (i, bars) in sizes.iter_mut().enumerate() {
        for (bar, entry) in bars.iter_mut().enumerate() {
            if let Some((_, size)) = *entry {
                if best.is_none() || size > best_size {
                    best_size = size;
                    best = Some((i, bar, entry));
                }
            }
        }
    }
    let (i, bar, entry) = best?;
    let (kind, size) = entry.take()?;
    Some((i, bar, kind, size))
}

/// Configuration cycles are at most a dword wide.
fn narrow_to_dword(width: AccessWidth) -> AccessWidth {
    if width == AccessWidth::Qword {
        AccessWidth::Dword
    } else {
        width
    }
}

impl<const N: usize> PortIo for PciBus<'_, N> {
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        let width = narrow_to_dword(width);
        match port {
            CONFIG_ADDRESS_PORT if width == AccessWidth::Dword => self.config_address,
            CONFIG_DATA_PORT..=0xCFF => self.data_read((port - CONFIG_DATA_PORT) as u8, width),
            _ => self.io_bar_read(port, width).unwrap_or(width.mask() as u32),
        }
    }

    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        let width = narrow_to_dword(width);
        match port {
            CONFIG_ADDRESS_PORT if width == AccessWidth::Dword => {
                self.config_address = value & CONFIG_ADDRESS_BITS;
            }
            CONFIG_DATA_PORT..=0xCFF => {
                self.data_write((port - CONFIG_DATA_PORT) as u8, width, value)
            }
            _ => {
                self.io_bar_write(port, width, value);
            }
        }
    }
}

/// The PCI memory window: accesses at `offset` go to the memory BAR that
/// decodes `window base + offset`; nobody's addresses read as all ones and
/// drop writes.
impl<const N: usize> Mmio for PciBus<'_, N> {
    fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        self.mmio_window_base
            .checked_add(offset)
            .and_then(|addr| self.memory_bar_read(addr, width))
            .unwrap_or(width.mask())
    }

    fn mmio_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
        if let Some(addr) = self.mmio_window_base.checked_add(offset) {
            self.memory_bar_write(addr, width, value);
        }
    }
}
