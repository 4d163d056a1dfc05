//! The guest's disk: a VHD image chain opened with ponte-vhd, offered to
//! the guest as a virtio-blk function on PCI.
//!
//! The base image comes from the `disk` boot module, whose memory is
//! read-only.
//!
//! - With a hard disk on the primary IDE channel's slave (the machine's
//!   CD-ROM is the master) holding a [`DiskFile`], the file is a
//!   differencing image whose parent is the base, read in place: the
//!   guest's writes go to the hard disk through ponte-ata and survive the
//!   run.
//! - Without one, the base itself is the disk, copied into host memory with
//!   room to grow, and the guest's writes stay there for the run.
//!
//! The appliance flushes the disk at poweroff and reports its state.

use core::cell::RefCell;

use ponte_arch::{
    boot::{BootInfo, ErrorReport},
    ept::HostRam,
    memory::HostMemory,
    port::IdeChannelPorts,
    println,
};
use ponte_ata::{disk_file::DiskFile, AtaDisk, Channel, Drive};
use ponte_kernel::{
    irq::lines::Line,
    memory::{GuestLayout, GuestMemory, MemoryError},
};
use ponte_vhd::{
    BlockDevice, Disk, IoError, LocatorHint, OpenOptions, ParentRequest, ParentResolver,
    ReadOnlySliceDevice, SliceDevice, SlicePool,
};
use ponte_virtio::{
    pci::{Modern, VirtioPci},
    BlockBackend, VirtioBlock,
};

use crate::board::{Dev, LINES};
use crate::DISK_GSI;

/// Room the in-memory image may grow by.
const GROWTH: usize = 8 << 20;
/// Table words the caller provides for the chain (BAT, scratch, marks and
/// bitmap cache of each image; see `ponte_vhd::storage`).
pub const TABLE_WORDS: usize = 4096;

/// The hard disk holding the child image.
type AtaFile = DiskFile<AtaDisk<IdeChannelPorts>>;

/// Where one image of the chain lives.
pub enum Backing {
    /// A boot module's bytes, read in place (module memory is read-only).
    Module(ReadOnlySliceDevice<'static>),
    /// A copy of a boot module in host memory.
    Memory(SliceDevice<'static>),
    /// A file on the IDE hard disk.
    Ata(AtaFile),
}

impl BlockDevice for Backing {
    fn len(&mut self) -> Result<u64, IoError> {
        match self {
            Self::Module(d) => d.len(),
            Self::Memory(d) => d.len(),
            Self::Ata(d) => d.len(),
        }
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        match self {
            Self::Module(d) => d.read_at(offset, buf),
            Self::Memory(d) => d.read_at(offset, buf),
            Self::Ata(d) => d.read_at(offset, buf),
        }
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        match self {
            Self::Module(d) => d.write_at(offset, buf),
            Self::Memory(d) => d.write_at(offset, buf),
            Self::Ata(d) => d.write_at(offset, buf),
        }
    }
    fn flush(&mut self) -> Result<(), IoError> {
        match self {
            Self::Module(d) => d.flush(),
            Self::Memory(d) => d.flush(),
            Self::Ata(d) => d.flush(),
        }
    }
    fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        match self {
            Self::Module(d) => d.set_len(len),
            Self::Memory(d) => d.set_len(len),
            Self::Ata(d) => d.set_len(len),
        }
    }
}

/// The parent of the hard disk's image: the base from the boot module
/// (its UUID is checked by ponte-vhd against the child's header).
struct ModuleParent(Option<&'static [u8]>);

impl ParentResolver<Backing> for ModuleParent {
    fn open_parent(
        &mut self,
        _request: &ParentRequest<'_>,
        _hint: Option<&LocatorHint<'_>>,
    ) -> Option<Backing> {
        self.0
            .take()
            .map(|bytes| Backing::Module(ReadOnlySliceDevice(bytes)))
    }
}

/// The disk: a base image, or a differencing child over it.
pub type VhdDisk<'w> = Disk<Backing, &'w mut [u32], 2>;

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

/// The virtio-blk function over `disk`, its interrupt on [`DISK_GSI`];
/// a modern (virtio 1.x) device, which Linux's virtio_pci drives, so the
/// image carries no legacy interface. Out of line, so that the function is
/// built where it is returned.
#[inline(never)]
pub fn function<'a, 'w>(
    disk: &'a RefCell<VhdDisk<'w>>,
    layout: &'a GuestLayout<HostRam, Dev, 8>,
) -> DiskFunction<'a, 'w> {
    let line = ponte_arch::or_fail!(LINES.line(DISK_GSI as usize).ok_or(DISK_GSI), "disk line");
    ponte_arch::or_fail!(
        VirtioPci::new(
            VirtioBlock::new(VhdBackend(disk), b"ponte-vhd-0"),
            GuestRam(layout),
            line,
            Modern,
        ),
        "virtio-blk"
    )
}

/// Where the disk's writes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// To the differencing image on the IDE hard disk.
    HardDisk,
    /// To host memory, lost at the end of the run.
    Memory,
}

impl Persistence {
    /// Where the writes are, in words.
    pub fn place(self) -> &'static str {
        match self {
            Self::HardDisk => "the IDE hard disk's differencing image",
            Self::Memory => "host memory, lost at the end of the run",
        }
    }
}

/// The IDE hard disk's file, if the machine has one.
fn hard_disk_file() -> Option<AtaFile> {
    let ports = IdeChannelPorts::new(Channel::PRIMARY.command_block, Channel::PRIMARY.control)?;
    let mut disk = match AtaDisk::open(ports, Channel::PRIMARY, Drive::Slave) {
        Ok(disk) => disk,
        Err(e) => {
            println!("linux-vhd: no IDE hard disk ({})", ErrorReport(&e));
            return None;
        }
    };
    let len = disk.len().ok()?;
    match DiskFile::open(disk, 0, len) {
        Ok(file) => Some(file),
        Err(e) => {
            println!(
                "linux-vhd: the IDE hard disk holds no disk file ({})",
                ErrorReport(&e)
            );
            None
        }
    }
}

/// Opens the disk chain, if there is a `disk` module; an image that does
/// not open ends the run.
pub fn open<'w>(
    boot: &BootInfo,
    memory: &mut HostMemory,
    words: &'w mut [u32],
) -> Option<(VhdDisk<'w>, Persistence)> {
    let module = boot.module("disk")?;
    let bytes = module.bytes();
    let (top, parent, persistence) = match hard_disk_file() {
        // The base is only read, in place.
        Some(file) => (Backing::Ata(file), Some(bytes), Persistence::HardDisk),
        None => {
            let room = ponte_arch::or_fail!(memory.bytes(bytes.len() + GROWTH), "disk buffer");
            let mut base = SliceDevice::empty(room);
            ponte_arch::or_fail!(base.write_at(0, bytes), "disk copy");
            (Backing::Memory(base), None, Persistence::Memory)
        }
    };
    let options = OpenOptions {
        writable: true,
        ..OpenOptions::default()
    };
    let disk = ponte_arch::or_fail!(
        Disk::open(
            top,
            &options,
            &mut SlicePool::new(words),
            &mut ModuleParent(parent)
        ),
        "opening the disk"
    );
    println!(
        "linux-vhd: disk of {} bytes ({:?}, {} blocks allocated), writes go to {:?}",
        disk.size(),
        disk.disk_type(),
        disk.allocated_blocks(),
        persistence
    );
    Some((disk, persistence))
}
