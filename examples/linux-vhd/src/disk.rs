//! The guest's disk: a VHD image opened with ponte-vhd, offered to the
//! guest as a virtio-blk function on PCI.
//!
//! The image comes from the `disk` boot module. Module memory is read-only,
//! so the image is copied into host memory with room to grow (blocks the
//! guest allocates are appended), and the guest's writes stay there for the
//! run: the appliance flushes the disk and reports its state at poweroff.

use core::cell::RefCell;

use ponte_arch::{boot::BootInfo, ept::HostRam, memory::HostMemory, println};
use ponte_kernel::{
    irq::lines::Line,
    memory::{GuestLayout, GuestMemory, MemoryError},
};
use ponte_vhd::{BlockDevice, Disk, NoParents, OpenOptions, SliceDevice, SlicePool};
use ponte_virtio::{pci::VirtioPci, BlockBackend, VirtioBlock};

use crate::board::Dev;

/// Room the image may grow by in host memory.
const GROWTH: usize = 8 << 20;
/// BAT cache words the caller provides (two per BAT entry: the table and
/// its scratch copy): enough for a 1 GiB disk of 2 MiB blocks.
pub const BAT_WORDS: usize = 2 * 512;

/// A VHD disk (a dynamic or fixed image, no parents) in host memory.
pub type VhdDisk<'w> = Disk<SliceDevice<'static>, &'w mut [u32], 1>;

/// Guest RAM as the virtio device reaches it.
#[derive(Clone, Copy)]
pub struct GuestRam<'a>(pub &'a GuestLayout<HostRam, Dev, 8>);

impl GuestMemory for GuestRam<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.0.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.0.write(addr, data)
    }
}

/// The virtio-blk backend: the disk, shared with the appliance, which
/// flushes it and reads its state at the end of the run.
pub struct VhdBackend<'a, 'w>(pub &'a RefCell<VhdDisk<'w>>);

impl BlockBackend for VhdBackend<'_, '_> {
    type Error = ponte_vhd::Error;
    fn capacity(&self) -> u64 {
        self.0.borrow().size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.borrow_mut().flush()
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), Self::Error> {
        self.0.borrow_mut().write_zeroes(offset, len)
    }
}

/// The virtio-blk PCI function.
pub type DiskFunction<'a, 'w> =
    VirtioPci<GuestRam<'a>, VirtioBlock<VhdBackend<'a, 'w>>, Line<'static, 24>>;

/// Opens the `disk` module's image, if there is one; a module that is not
/// a VHD image ends the run.
pub fn open<'w>(
    boot: &BootInfo,
    memory: &mut HostMemory,
    words: &'w mut [u32],
) -> Option<VhdDisk<'w>> {
    let module = boot.module("disk")?;
    let bytes = module.bytes();
    let room = crate::or_fail!(memory.bytes(bytes.len() + GROWTH), "disk buffer");
    let mut device = SliceDevice::empty(room);
    crate::or_fail!(device.write_at(0, bytes), "disk copy");
    let options = OpenOptions {
        writable: true,
        ..OpenOptions::default()
    };
    let disk = crate::or_fail!(
        Disk::open(device, &options, &mut SlicePool::new(words), &mut NoParents),
        "opening the disk"
    );
    println!(
        "linux-vhd: disk of {} bytes from a {}-byte image",
        disk.size(),
        bytes.len()
    );
    Some(disk)
}
