//! The guest-physical address space: RAM regions backed by host memory,
//! MMIO regions owned by devices, reserved holes, and nothing elsewhere.
//!
//! Regions are kept sorted in a fixed-capacity list (`N`, chosen by the
//! integrator); registering a region that overlaps another is refused with
//! the two ranges named. [`GuestLayout`] implements [`GuestMemory`] over its
//! RAM regions: an access may span adjacent RAM regions and is checked whole
//! before any byte moves.

use heapless::Vec;
use ponte_arch::ept::{EptError, EptTables, FrameAllocator, HostMemoryTypes, MappingAttributes};

use super::{GuestMemory, MemoryError, RamBacking};

/// Why the layout's RAM could not be put into EPT tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptPopulateError {
    /// The RAM region at `start` has a backing without a host-physical
    /// address (it cannot be mapped for the processor).
    NoHostAddress {
        /// The region's guest-physical start.
        start: u64,
    },
    /// The tables refused the mapping of the region at `start`.
    Ept {
        /// The region's guest-physical start.
        start: u64,
        /// Why.
        error: EptError,
    },
}

/// What a region of the guest-physical address space is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind<B, D> {
    /// Guest RAM backed by `B`.
    Ram(B),
    /// Registers of the device the integrator calls `D`.
    Mmio(D),
    /// A hole kept free on purpose: nothing may be registered there and
    /// accesses find nothing.
    Reserved,
}

/// One registered range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region<B, D> {
    /// First guest-physical address.
    pub start: u64,
    /// Length in bytes (not zero).
    pub len: u64,
    /// What is there.
    pub kind: RegionKind<B, D>,
}

impl<B, D> Region<B, D> {
    /// One past the last address (never wraps: checked at registration).
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Why a region could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The region has length zero.
    Empty {
        /// Its start.
        start: u64,
    },
    /// The region wraps around the end of the address space.
    Wraps {
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// The region overlaps one already registered.
    Overlap {
        /// Start of the new region.
        start: u64,
        /// Length of the new region.
        len: u64,
        /// Start of the registered region it overlaps.
        existing_start: u64,
        /// Length of the registered region it overlaps.
        existing_len: u64,
    },
    /// All `N` slots are used.
    Full {
        /// The capacity.
        capacity: usize,
    },
}

/// What a guest-physical address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a, B, D> {
    /// RAM: the backing and the offset in it.
    Ram {
        /// The region's backing.
        backing: &'a B,
        /// Offset of the address in the region.
        offset: u64,
        /// Bytes from the address to the end of the region.
        remaining: u64,
    },
    /// Device registers.
    Mmio {
        /// The owning device.
        device: D,
        /// Offset of the address in the device's region.
        offset: u64,
        /// Bytes from the address to the end of the region.
        remaining: u64,
    },
    /// A reserved hole or no region at all.
    Nothing,
}

/// The guest-physical address space of one VM, with room for `N` regions.
#[derive(Clone, Debug)]
pub struct GuestLayout<B, D, const N: usize> {
    regions: Vec<Region<B, D>, N>,
}

impl<B, D, const N: usize> Default for GuestLayout<B, D, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B, D, const N: usize> GuestLayout<B, D, N> {
    /// An empty address space.
    pub const fn new() -> Self {
        Self {
            regions: Vec::new(),
        }
    }

    /// Registers `kind` at `[start, start + len)`.
    pub fn add(&mut self, start: u64, len: u64, kind: RegionKind<B, D>) -> Result<(), LayoutError> {
        if len == 0 {
            return Err(LayoutError::Empty { start });
        }
        let end = start
            .checked_add(len)
            .ok_or(LayoutError::Wraps { start, len })?;
        let at = self.regions.partition_point(|r| r.start < start);
        for neighbour in [at.checked_sub(1), Some(at)].into_iter().flatten() {
            if let Some(r) = self.regions.get(neighbour) {
                if r.start < end && start < r.end() {
                    return Err(LayoutError::Overlap {
                        start,
                        len,
                        existing_start: r.start,
                        existing_len: r.len,
                    });
                }
            }
        }
        self.regions
            .insert(at, Region { start, len, kind })
            .map_err(|_| LayoutError::Full { capacity: N })
    }

    /// Registers MMIO registers of `device` at `[start, start + len)`.
    pub fn add_mmio(&mut self, start: u64, len: u64, device: D) -> Result<(), LayoutError> {
        self.add(start, len, RegionKind::Mmio(device))
    }

    /// Keeps `[start, start + len)` free.
    pub fn reserve(&mut self, start: u64, len: u64) -> Result<(), LayoutError> {
        self.add(start, len, RegionKind::Reserved)
    }

    /// The registered regions, by address.
    pub fn regions(&self) -> &[Region<B, D>] {
        &self.regions
    }

    fn index_of(&self, addr: u64) -> Option<usize> {
        let after = self.regions.partition_point(|r| r.start <= addr);
        let i = after.checked_sub(1)?;
        (addr < self.regions.get(i)?.end()).then_some(i)
    }
}

impl<B: RamBacking, D: Copy, const N: usize> GuestLayout<B, D, N> {
    /// Registers RAM backed by `backing` at `start`; its length is the
    /// backing's size.
    pub fn add_ram(&mut self, start: u64, backing: B) -> Result<(), LayoutError> {
        let len = backing.size();
        self.add(start, len, RegionKind::Ram(backing))
    }

    /// Maps every RAM region into `tables` with RAM attributes (RWX,
    /// write-back, combined with the host's types from `host`), leaving MMIO
    /// regions and holes unmapped so that guest accesses to them exit as EPT
    /// violations. Regions must be 4 KiB aligned in address and size.
    pub fn map_ram_into<A: FrameAllocator, H: HostMemoryTypes + ?Sized>(
        &self,
        tables: &mut EptTables<A>,
        host: &H,
    ) -> Result<(), EptPopulateError> {
        for r in self.regions.iter() {
            if let RegionKind::Ram(backing) = &r.kind {
                let hpa = backing
                    .host_physical()
                    .ok_or(EptPopulateError::NoHostAddress { start: r.start })?;
                tables
                    .map_with_host_types(r.start, hpa, r.len, MappingAttributes::RAM, host)
                    .map_err(|error| EptPopulateError::Ept {
                        start: r.start,
                        error,
                    })?;
            }
        }
        Ok(())
    }

    /// What `addr` is.
    pub fn lookup(&self, addr: u64) -> Lookup<'_, B, D> {
        let Some(r) = self.index_of(addr).and_then(|i| self.regions.get(i)) else {
            return Lookup::Nothing;
        };
        let offset = addr - r.start;
        let remaining = r.len - offset;
        match &r.kind {
            RegionKind::Ram(backing) => Lookup::Ram {
                backing,
                offset,
                remaining,
            },
            RegionKind::Mmio(device) => Lookup::Mmio {
                device: *device,
                offset,
                remaining,
            },
            RegionKind::Reserved => Lookup::Nothing,
        }
    }

    /// The indices of the RAM regions that cover `[addr, addr + len)`
    /// without a gap, or why not.
    fn ram_span(&self, addr: u64, len: u64) -> Result<(usize, usize), MemoryError> {
        let end = addr
            .checked_add(len)
            .ok_or(MemoryError::Overflow { addr, len })?;
        if len == 0 {
            return Ok((0, 0));
        }
        let not_ram = MemoryError::NotRam { addr, len };
        let first = self.index_of(addr).ok_or(not_ram)?;
        let mut i = first;
        loop {
            let r = self.regions.get(i).ok_or(not_ram)?;
            if !matches!(r.kind, RegionKind::Ram(_)) {
                return Err(not_ram);
            }
            if r.end() >= end {
                return Ok((first, i + 1));
            }
            match self.regions.get(i + 1) {
                Some(next) if next.start == r.end() => i += 1,
                _ => return Err(not_ram),
            }
        }
    }

    /// Runs `f(backing, offset in backing, range in the access)` for each
    /// RAM piece of a checked access.
    fn pieces(
        &self,
        addr: u64,
        len: u64,
        mut f: impl FnMut(&B, u64, core::ops::Range<usize>) -> Result<(), MemoryError>,
    ) -> Result<(), MemoryError> {
        let (first, last) = self.ram_span(addr, len)?;
        let end = addr + len;
        let span = self
            .regions
            .get(first..last)
            .ok_or(MemoryError::NotRam { addr, len })?;
        for r in span {
            let RegionKind::Ram(backing) = &r.kind else {
                return Err(MemoryError::NotRam { addr, len });
            };
            let from = addr.max(r.start);
            let to = end.min(r.end());
            let range = (from - addr) as usize..(to - addr) as usize;
            f(backing, from - r.start, range)?;
        }
        Ok(())
    }
}

impl<B: RamBacking, D: Copy, const N: usize> GuestMemory for GuestLayout<B, D, N> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        let not_ram = MemoryError::NotRam { addr, len };
        self.pieces(addr, len, |backing, offset, range| {
            let piece = buf.get_mut(range).ok_or(not_ram)?;
            backing.read(offset, piece).map_err(|_| not_ram)
        })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let len = data.len() as u64;
        let not_ram = MemoryError::NotRam { addr, len };
        self.pieces(addr, len, |backing, offset, range| {
            let piece = data.get(range).ok_or(not_ram)?;
            backing.write(offset, piece).map_err(|_| not_ram)
        })
    }

    fn check_range(&self, addr: u64, len: u64) -> Result<(), MemoryError> {
        self.ram_span(addr, len).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use std::vec;

    type Layout<'a> = GuestLayout<&'a [Cell<u8>], u8, 8>;

    #[test]
    fn overlapping_registrations_are_refused_with_both_ranges() {
        let mut low = vec![0u8; 0x1000];
        let low = Cell::from_mut(&mut low[..]).as_slice_of_cells();
        let mut layout: Layout = GuestLayout::new();
        layout.add_ram(0x1000, low).unwrap();
        layout.add_mmio(0x3000, 0x1000, 1).unwrap();
        layout.reserve(0x5000, 0x1000).unwrap();
        // Touching at either end is fine.
        layout.add_mmio(0x2000, 0x1000, 2).unwrap();
        layout.add_mmio(0x4000, 0x1000, 3).unwrap();
        assert_eq!(
            layout.add_mmio(0x1fff, 2, 9),
            Err(LayoutError::Overlap {
                start: 0x1fff,
                len: 2,
                existing_start: 0x1000,
                existing_len: 0x1000
            })
        );
        assert_eq!(
            layout.add_mmio(0x0, 0x10_0000, 9),
            Err(LayoutError::Overlap {
                start: 0,
                len: 0x10_0000,
                existing_start: 0x1000,
                existing_len: 0x1000
            })
        );
        assert_eq!(
            layout.add_mmio(0x5800, 1, 9),
            Err(LayoutError::Overlap {
                start: 0x5800,
                len: 1,
                existing_start: 0x5000,
                existing_len: 0x1000
            })
        );
        assert_eq!(
            layout.add_mmio(0x9000, 0, 9),
            Err(LayoutError::Empty { start: 0x9000 })
        );
        assert_eq!(
            layout.add_mmio(u64::MAX, 2, 9),
            Err(LayoutError::Wraps {
                start: u64::MAX,
                len: 2
            })
        );
        layout.add_mmio(0xffff_ffff_ffff_f000, 0xfff, 4).unwrap();
        layout.add_mmio(0x6000, 1, 5).unwrap();
        layout.add_mmio(0x7000, 1, 6).unwrap();
        assert_eq!(
            layout.add_mmio(0x9000, 1, 8),
            Err(LayoutError::Full { capacity: 8 })
        );
        let starts: std::vec::Vec<u64> = layout.regions().iter().map(|r| r.start).collect();
        assert_eq!(
            starts,
            [
                0x1000,
                0x2000,
                0x3000,
                0x4000,
                0x5000,
                0x6000,
                0x7000,
                0xffff_ffff_ffff_f000
            ]
        );
    }

    /// A backing that claims a host-physical address (what `HostRam` does in
    /// an identity-mapped image) over ordinary cells.
    struct Placed<'a>(&'a [Cell<u8>], u64);

    impl RamBacking for Placed<'_> {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read(
            &self,
            offset: u64,
            buf: &mut [u8],
        ) -> Result<(), super::super::BackingOutOfBounds> {
            self.0.read(offset, buf)
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), super::super::BackingOutOfBounds> {
            self.0.write(offset, data)
        }
        fn host_physical(&self) -> Option<u64> {
            Some(self.1)
        }
    }

    #[test]
    fn ram_regions_go_into_the_ept_and_mmio_stays_out() {
        use ponte_arch::ept::{
            EptCapabilities, EptFrame, FramePool, MemoryType, PageSize, UniformHostMemory,
        };
        let mut a = vec![0u8; 0x2000];
        let mut b = vec![0u8; 0x1000];
        let a = Cell::from_mut(&mut a[..]).as_slice_of_cells();
        let b = Cell::from_mut(&mut b[..]).as_slice_of_cells();
        let mut layout: GuestLayout<Placed, u8, 4> = GuestLayout::new();
        layout.add_ram(0, Placed(a, 0x10_0000)).unwrap();
        layout.add_mmio(0x2000, 0x1000, 1).unwrap();
        layout.add_ram(0x3000, Placed(b, 0x20_0000)).unwrap();
        let frames: std::vec::Vec<EptFrame> = (0..8).map(|_| EptFrame::new()).collect();
        let pool = FramePool::with_host_physical_base(&frames, 0x4000_0000).unwrap();
        let mut ept = EptTables::new(pool, EptCapabilities::FULL).unwrap();
        let wb = UniformHostMemory(MemoryType::WriteBack);
        layout.map_ram_into(&mut ept, &wb).unwrap();
        let t = ept.translate(0x1234).unwrap();
        assert_eq!(
            (t.host_physical, t.page_size),
            (0x10_1234, PageSize::Size4K)
        );
        assert_eq!(t.attributes, MappingAttributes::RAM);
        assert_eq!(ept.translate(0x2000), None, "MMIO is not mapped");
        assert_eq!(ept.translate(0x3008).unwrap().host_physical, 0x20_0008);

        let mut cells_only: GuestLayout<&[Cell<u8>], u8, 2> = GuestLayout::new();
        cells_only.add_ram(0x5000, b).unwrap();
        assert_eq!(
            cells_only.map_ram_into(&mut ept, &wb),
            Err(EptPopulateError::NoHostAddress { start: 0x5000 })
        );
    }

    #[test]
    fn lookups_classify_addresses() {
        let mut ram = vec![0u8; 0x2000];
        let ram = Cell::from_mut(&mut ram[..]).as_slice_of_cells();
        let mut layout: Layout = GuestLayout::new();
        layout.add_ram(0, ram).unwrap();
        layout.add_mmio(0xfee0_0000, 0x1000, 7).unwrap();
        layout.reserve(0x2000, 0x1000).unwrap();
        assert!(matches!(
            layout.lookup(0x1ffe),
            Lookup::Ram {
                offset: 0x1ffe,
                remaining: 2,
                ..
            }
        ));
        assert_eq!(
            layout.lookup(0xfee0_0300),
            Lookup::Mmio {
                device: 7,
                offset: 0x300,
                remaining: 0xd00
            }
        );
        assert_eq!(layout.lookup(0x2000), Lookup::Nothing);
        assert_eq!(layout.lookup(0xfee0_1000), Lookup::Nothing);
        assert_eq!(layout.lookup(u64::MAX), Lookup::Nothing);
    }

    #[test]
    fn accesses_cross_adjacent_ram_regions_and_are_all_or_nothing() {
        let mut a = vec![0u8; 0x1000];
        let mut b = vec![0u8; 0x1000];
        let mut c = vec![0u8; 0x1000];
        let a = Cell::from_mut(&mut a[..]).as_slice_of_cells();
        let b = Cell::from_mut(&mut b[..]).as_slice_of_cells();
        let c = Cell::from_mut(&mut c[..]).as_slice_of_cells();
        let mut layout: Layout = GuestLayout::new();
        layout.add_ram(0x1000, a).unwrap();
        layout.add_ram(0x2000, b).unwrap();
        // A gap, then more RAM, then MMIO right after it.
        layout.add_ram(0x4000, c).unwrap();
        layout.add_mmio(0x5000, 0x1000, 1).unwrap();

        layout.write(0x1ffc, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(a[0xffc].get(), 1);
        assert_eq!(b[3].get(), 8);
        assert_eq!(layout.read_u64(0x1ffc).unwrap(), 0x0807_0605_0403_0201);
        layout.write_u32(0x2ffe, 0xaabb_ccdd).unwrap_err();
        assert_eq!(
            layout.write(0x2ffe, &[9; 4]),
            Err(MemoryError::NotRam {
                addr: 0x2ffe,
                len: 4
            })
        );
        assert_eq!(b[0xffe].get(), 0, "nothing written before the gap");
        assert_eq!(
            layout.write(0x4ffe, &[9; 4]),
            Err(MemoryError::NotRam {
                addr: 0x4ffe,
                len: 4
            })
        );
        assert_eq!(c[0xffe].get(), 0, "nothing written before the MMIO region");
        assert_eq!(
            layout.read(u64::MAX, &mut [0; 2]),
            Err(MemoryError::Overflow {
                addr: u64::MAX,
                len: 2
            })
        );
        layout.read(0x3000, &mut []).unwrap();

        layout
            .write_slice(0x1ff8, &[0x1111u32, 0x2222, 0x3333])
            .unwrap();
        let mut back = [0u32; 3];
        layout.read_slice(0x1ff8, &mut back).unwrap();
        assert_eq!(back, [0x1111, 0x2222, 0x3333]);
        assert_eq!(b[0].get(), 0x33);
        assert!(layout.write_slice(0x2ffc, &[1u32, 2]).is_err());
        assert_eq!(b[0xffc].get(), 0, "slice write refused whole");

        // copy_within across the region boundary, overlapping forwards.
        for i in 0..16u8 {
            layout.write_u8(0x1ff0 + u64::from(i), i).unwrap();
        }
        layout.copy_within(0x1ff0, 0x1ff4, 16).unwrap();
        let mut out = [0u8; 20];
        layout.read(0x1ff0, &mut out).unwrap();
        assert_eq!(&out[4..], &(0..16).collect::<std::vec::Vec<u8>>()[..]);
        assert!(layout.copy_within(0x1ff0, 0x2ff8, 16).is_err());
        layout.fill(0x4000, 0x1000, 0xaa).unwrap();
        assert!(c.iter().all(|x| x.get() == 0xaa));
        assert!(layout.fill(0x4000, 0x1001, 0).is_err());
        assert_eq!(c[0].get(), 0xaa);
        assert_eq!(layout.check_range(0x1000, 0x2000), Ok(()));
    }
}
