//! QEMU's firmware configuration device (fw_cfg), legacy I/O interface.
//!
//! Per QEMU's docs/specs/fw_cfg.rst and hw/nvram/fw_cfg.c, on x86 the device
//! decodes two ports: a 16-bit write to 0x510 selects an item (and resets the
//! data offset to 0); each byte read from 0x511 (QEMU's combined region also
//! answers byte reads at 0x510) returns the next byte of the selected item,
//! and 0 once past its end or for an item that does not exist. Data writes
//! are ignored (QEMU 2.4 and later). After reset the signature is selected.
//!
//! Items: signature "QEMU" (0x00), id (0x01, bit 0 "traditional interface";
//! the DMA interface, bit 1, is not implemented), UUID (0x02, zero), RAM size
//! (0x03, u64), nographic (0x04), number of CPUs (0x05, u16), boot menu
//! (0x0e), max CPUs (0x0f), the NUMA table (0x0d: u64 node count 0, then one
//! zero u64 per CPU, as QEMU builds it without NUMA nodes), the Linux-style
//! kernel, initrd and command line items (0x07-0x15) when the integrator sets
//! them, and the file directory (0x19).
//!
//! The directory holds `FILES` slots, like QEMU's `file_slots`: its item is
//! `4 + 64 * FILES` bytes long (a big-endian count, then 64-byte entries of
//! big-endian size, big-endian selector, reserved u16 and a NUL-terminated
//! name of at most 55 characters; unused slots are zero). Files are kept
//! sorted by name and numbered from selector 0x20 in that order, as QEMU does
//! for current machine types.

use ponte_kernel::device::{AccessWidth, PortIo};

/// Selector register port (16-bit, little-endian).
pub const SELECTOR_PORT: u16 = 0x510;
/// Data register port (8-bit).
pub const DATA_PORT: u16 = 0x511;

/// Well-known selector keys (QEMU's `FW_CFG_*`).
pub mod key {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Feature bitmap: bit 0 traditional interface, bit 1 DMA.
    pub const ID: u16 = 0x01;
    /// VM UUID, 16 bytes.
    pub const UUID: u16 = 0x02;
    /// RAM size in bytes, u64 little-endian.
    pub const RAM_SIZE: u16 = 0x03;
    /// Whether there is no graphical console, u16.
    pub const NOGRAPHIC: u16 = 0x04;
    /// Boot CPU count, u16.
    pub const NB_CPUS: u16 = 0x05;
    /// Kernel load address, u32.
    pub const KERNEL_ADDR: u16 = 0x07;
    /// Kernel size, u32.
    pub const KERNEL_SIZE: u16 = 0x08;
    /// Initrd load address, u32.
    pub const INITRD_ADDR: u16 = 0x0a;
    /// Initrd size, u32.
    pub const INITRD_SIZE: u16 = 0x0b;
    /// NUMA table: u64 node count, per-CPU node, per-node memory.
    pub const NUMA: u16 = 0x0d;
    /// Boot menu enabled, u16.
    pub const BOOT_MENU: u16 = 0x0e;
    /// Highest CPU count (APIC ID limit), u16.
    pub const MAX_CPUS: u16 = 0x0f;
    /// Kernel image bytes.
    pub const KERNEL_DATA: u16 = 0x11;
    /// Initrd bytes.
    pub const INITRD_DATA: u16 = 0x12;
    /// Command line load address, u32.
    pub const CMDLINE_ADDR: u16 = 0x13;
    /// Command line size including its NUL, u32.
    pub const CMDLINE_SIZE: u16 = 0x14;
    /// Command line bytes with a terminating NUL.
    pub const CMDLINE_DATA: u16 = 0x15;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x19;
    /// Selector of the first file.
    pub const FILE_FIRST: u16 = 0x20;
    /// Bit 15: architecture-specific item.
    pub const ARCH_LOCAL: u16 = 0x8000;
    /// Bit 14: write channel (writes are ignored anyway).
    pub const WRITE_CHANNEL: u16 = 0x4000;
}

/// `FW_CFG_ID` value: traditional interface only, no DMA.
pub const FEATURES: u32 = 0x1;
/// Longest file name, including the terminating NUL.
pub const MAX_NAME: usize = 56;
/// Size of one file directory entry.
pub const DIR_ENTRY_SIZE: usize = 64;

/// Why a file could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwCfgError {
    /// The name is empty, longer than 55 bytes, or contains a NUL.
    BadName {
        /// Length of the offending name.
        len: usize,
    },
    /// A file of that name exists already.
    DuplicateName,
    /// All directory slots are used.
    DirectoryFull {
        /// The directory's capacity.
        capacity: usize,
    },
    /// The blob is longer than the 32-bit size field can say.
    TooLarge {
        /// Length of the blob.
        len: usize,
    },
}

#[derive(Clone, Copy)]
struct File<'a> {
    name: [u8; MAX_NAME],
    data: &'a [u8],
}

/// The contents of one selectable item, computed on demand so the device
/// holds no copies.
#[derive(Clone, Copy)]
enum Item<'a> {
    None,
    Bytes(&'a [u8]),
    /// Bytes followed by one NUL.
    CString(&'a [u8]),
    /// A little-endian integer of `len` bytes.
    Le {
        value: u64,
        len: u8,
    },
    Zeros(u32),
    Directory,
}

/// The fw_cfg device with room for `FILES` named blobs.
pub struct FwCfg<'a, const FILES: usize> {
    ram_size: u64,
    cpus: u16,
    kernel: Option<(u32, &'a [u8])>,
    initrd: Option<(u32, &'a [u8])>,
    cmdline: Option<(u32, &'a [u8])>,
    files: [Option<File<'a>>; FILES],
    file_count: usize,
    selected: u16,
    offset: u32,
}

impl<'a, const FILES: usize> FwCfg<'a, FILES> {
    /// A device reporting `ram_size` bytes of RAM and `cpus` CPUs, with the
    /// signature selected (its reset state).
    pub fn new(ram_size: u64, cpus: u16) -> Self {
        Self {
            ram_size,
            cpus,
            kernel: None,
            initrd: None,
            cmdline: None,
            files: [None; FILES],
            file_count: 0,
            selected: key::SIGNATURE,
            offset: 0,
        }
    }

    /// Publishes the kernel (`KERNEL_ADDR`, `KERNEL_SIZE`, `KERNEL_DATA`).
    pub fn set_kernel(&mut self, load_addr: u32, data: &'a [u8]) -> Result<(), FwCfgError> {
        Self::check_len(data.len())?;
        self.kernel = Some((load_addr, data));
        Ok(())
    }

    /// Publishes the initrd (`INITRD_ADDR`, `INITRD_SIZE`, `INITRD_DATA`).
    pub fn set_initrd(&mut self, load_addr: u32, data: &'a [u8]) -> Result<(), FwCfgError> {
        Self::check_len(data.len())?;
        self.initrd = Some((load_addr, data));
        Ok(())
    }

    /// Publishes the command line (without NUL; the device appends one as
    /// QEMU does, and `CMDLINE_SIZE` counts it).
    pub fn set_cmdline(&mut self, load_addr: u32, cmdline: &'a [u8]) -> Result<(), FwCfgError> {
        Self::check_len(cmdline.len().saturating_add(1))?;
        self.cmdline = Some((load_addr, cmdline));
        Ok(())
    }

    fn check_len(len: usize) -> Result<(), FwCfgError> {
        if u32::try_from(len).is_err() {
            return Err(FwCfgError::TooLarge { len });
        }
        Ok(())
    }

    /// Adds a named blob to the directory. Names sort the directory, so the
    /// selector of a file is known once all files are added:
    /// [`FwCfg::file_selector`].
    pub fn add_file(&mut self, name: &str, data: &'a [u8]) -> Result<(), FwCfgError> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= MAX_NAME || bytes.contains(&0) {
            return Err(FwCfgError::BadName { len: bytes.len() });
        }
        Self::check_len(data.len())?;
        if self.file_index(name).is_some() {
            return Err(FwCfgError::DuplicateName);
        }
        if self.file_count >= FILES {
            return Err(FwCfgError::DirectoryFull { capacity: FILES });
        }
        let mut stored = [0u8; MAX_NAME];
        stored[..bytes.len()].copy_from_slice(bytes);
        // Insertion point keeps the files sorted by name (strcmp order).
        let mut index = self.file_count;
        while index > 0 {
            match &self.files[index - 1] {
                Some(f) if f.name > stored => index -= 1,
                _ => break,
            }
        }
        let mut i = self.file_count;
        while i > index {
            self.files[i] = self.files[i - 1];
            i -= 1;
        }
        self.files[index] = Some(File { name: stored, data });
        self.file_count += 1;
        Ok(())
    }

    fn file_index(&self, name: &str) -> Option<usize> {
        let bytes = name.as_bytes();
        self.files[..self.file_count].iter().position(|f| {
            f.as_ref().is_some_and(|f| {
                let len = f.name.iter().position(|&b| b == 0).unwrap_or(MAX_NAME);
                &f.name[..len] == bytes
            })
        })
    }

    /// The selector the guest uses for the file `name`.
    pub fn file_selector(&self, name: &str) -> Option<u16> {
        self.file_index(name).map(|i| key::FILE_FIRST + i as u16)
    }

    /// The currently selected key.
    pub fn selected(&self) -> u16 {
        self.selected
    }

    /// Selects `selector`, as a 16-bit write to the selector port does.
    pub fn select(&mut self, selector: u16) {
        self.selected = selector;
        self.offset = 0;
    }

    /// Puts the device in its reset state (signature selected).
    pub fn reset(&mut self) {
        self.select(key::SIGNATURE);
    }

    fn item(&self, selector: u16) -> Item<'a> {
        // The write-channel bit only asked for writability; QEMU masks it off.
        if selector & key::ARCH_LOCAL != 0 {
            return Item::None;
        }
        let k = selector & !key::WRITE_CHANNEL;
        let le32 = |v: u32| Item::Le {
            value: u64::from(v),
            len: 4,
        };
        let le16 = |v: u16| Item::Le {
            value: u64::from(v),
            len: 2,
        };
        match k {
            key::SIGNATURE => Item::Bytes(b"QEMU"),
            key::ID => le32(FEATURES),
            key::UUID => Item::Zeros(16),
            key::RAM_SIZE => Item::Le {
                value: self.ram_size,
                len: 8,
            },
            key::NOGRAPHIC => le16(1),
            key::NB_CPUS | key::MAX_CPUS => le16(self.cpus),
            key::BOOT_MENU => le16(0),
            key::NUMA => Item::Zeros((1 + u32::from(self.cpus)) * 8),
            key::KERNEL_ADDR => self.kernel.map_or(Item::None, |(a, _)| le32(a)),
            key::KERNEL_SIZE => self
                .kernel
                .map_or(Item::None, |(_, d)| le32(d.len() as u32)),
            key::KERNEL_DATA => self.kernel.map_or(Item::None, |(_, d)| Item::Bytes(d)),
            key::INITRD_ADDR => self.initrd.map_or(Item::None, |(a, _)| le32(a)),
            key::INITRD_SIZE => self
                .initrd
                .map_or(Item::None, |(_, d)| le32(d.len() as u32)),
            key::INITRD_DATA => self.initrd.map_or(Item::None, |(_, d)| Item::Bytes(d)),
            key::CMDLINE_ADDR => self.cmdline.map_or(Item::None, |(a, _)| le32(a)),
            key::CMDLINE_SIZE => self
                .cmdline
                .map_or(Item::None, |(_, d)| le32(d.len() as u32 + 1)),
            key::CMDLINE_DATA => self.cmdline.map_or(Item::None, |(_, d)| Item::CString(d)),
            key::FILE_DIR => Item::Directory,
            k if k >= key::FILE_FIRST => {
                let index = usize::from(k - key::FILE_FIRST);
                match self.files.get(index) {
                    Some(Some(f)) => Item::Bytes(f.data),
                    _ => Item::None,
                }
            }
            _ => Item::None,
        }
    }

    fn item_len(&self, item: Item<'a>) -> u32 {
        match item {
            Item::None => 0,
            Item::Bytes(d) => d.len() as u32,
            Item::CString(d) => d.len() as u32 + 1,
            Item::Le { len, .. } => u32::from(len),
            Item::Zeros(n) => n,
            Item::Directory => (4 + DIR_ENTRY_SIZE * FILES) as u32,
        }
    }

    fn item_byte(&self, item: Item<'a>, offset: u32) -> u8 {
        let at = offset as usize;
        match item {
            Item::None | Item::Zeros(_) => 0,
            Item::Bytes(d) => d.get(at).copied().unwrap_or(0),
            Item::CString(d) => d.get(at).copied().unwrap_or(0),
            Item::Le { value, len } => {
                if offset < u32::from(len) {
                    (value >> (8 * offset)) as u8
                } else {
                    0
                }
            }
            Item::Directory => self.directory_byte(at),
        }
    }

    fn directory_byte(&self, at: usize) -> u8 {
        if at < 4 {
            return (self.file_count as u32).to_be_bytes()[at];
        }
        let slot = (at - 4) / DIR_ENTRY_SIZE;
        let within = (at - 4) % DIR_ENTRY_SIZE;
        let Some(Some(file)) = self.files.get(slot) else {
            return 0;
        };
        match within {
            0..=3 => (file.data.len() as u32).to_be_bytes()[within],
            4..=5 => (key::FILE_FIRST + slot as u16).to_be_bytes()[within - 4],
            6..=7 => 0,
            _ => file.name[within - 8],
        }
    }

    /// Reads the next byte of the selected item (0 past its end).
    pub fn read_data_byte(&mut self) -> u8 {
        let item = self.item(self.selected);
        if self.offset >= self.item_len(item) {
            return 0;
        }
        let byte = self.item_byte(item, self.offset);
        self.offset += 1;
        byte
    }
}

impl<const FILES: usize> PortIo for FwCfg<'_, FILES> {
    /// Byte reads at the selector or data port read data; other reads are
    /// not valid on QEMU's I/O interface and return all ones.
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        match (port, width) {
            (SELECTOR_PORT | DATA_PORT, AccessWidth::Byte) => u32::from(self.read_data_byte()),
            _ => u32::MAX,
        }
    }

    /// A 16-bit write at the selector port selects; byte writes are data
    /// writes, which QEMU ignores; anything else is not decoded.
    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        if port == SELECTOR_PORT && width == AccessWidth::Word {
            self.select(value as u16);
        }
    }
}

#[cfg(test)]
mod tests;
