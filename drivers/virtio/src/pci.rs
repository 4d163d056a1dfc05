//! The virtio PCI transport (virtio 1.1, section 4.1).
//!
//! [`VirtioPci`] is a [`PciFunction`] that puts a [`VirtioDevice`] on a
//! [`ponte_pci::PciBus`]. It owns the device status state machine, feature
//! negotiation, the queues' configuration, the ISR status register and the
//! device's INTx# line.
//!
//! Register layout:
//!
//! - BAR 1, 32-bit memory, [`MODERN_BAR_SIZE`] bytes: common configuration at
//!   [`layout::COMMON`], ISR at [`layout::ISR`], device configuration at
//!   [`layout::DEVICE`], queue notifications at [`layout::NOTIFY`] + 4 ×
//!   queue index (`notify_off_multiplier` 4). Each is described by a
//!   vendor-specific capability (ID 0x09) in configuration space, followed
//!   by the PCI configuration access capability, whose `pci_cfg_data`
//!   reaches any BAR register through configuration cycles.
//! - BAR 0, I/O, only for [`Transitional`] devices: the legacy (virtio
//!   0.9.5) register block, device configuration at 0x14.
//!
//! The transport is a type parameter ([`VirtioPciTransport`]): a [`Modern`]
//! function carries no code of the legacy interface.
//!
//! Modern devices have device ID 0x1040 + type, transitional ones the legacy
//! ID (0x1001 for block) with the type in the subsystem ID. A driver that
//! writes to the legacy block before FEATURES_OK is a legacy driver until the
//! next reset (32 feature bits, no FEATURES_OK step, queue rings from a page
//! frame number).
//!
//! Interrupts are INTx# only (no MSI-X capability): when a notification
//! completed buffers and the driver did not set VIRTQ_AVAIL_F_NO_INTERRUPT,
//! ISR bit 0 is set; a device error sets NEEDS_RESET and ISR bit 1 (a
//! configuration change). The line is held while the ISR is non-zero and the
//! command register does not disable INTx; reading the ISR clears it.
//! Queues are processed only while bus mastering is enabled.

use core::fmt;
use core::marker::PhantomData;

use ponte_kernel::device::AccessWidth;
use ponte_kernel::irq::InterruptLine;
use ponte_kernel::memory::GuestMemory;
use ponte_pci::header::{BarKind, BarRegion, ConfigHeader, HeaderError, PciIds};
use ponte_pci::{InterruptPin, PciFunction};

use crate::device::{features, status, DeviceError, VirtioDevice};
use crate::queue::{SplitQueue, AVAIL_F_NO_INTERRUPT};

/// The virtio PCI vendor ID.
pub const VENDOR_ID: u16 = 0x1AF4;

/// Modern device IDs are this plus the virtio device type.
pub const MODERN_DEVICE_ID_BASE: u16 = 0x1040;

/// The BAR holding the legacy register block (transitional devices).
pub const LEGACY_BAR: usize = 0;

/// The BAR holding the modern register regions.
pub const MODERN_BAR: usize = 1;

/// Size of the modern BAR.
pub const MODERN_BAR_SIZE: u64 = 0x4000;

/// Size of the legacy I/O BAR.
pub const LEGACY_BAR_SIZE: u64 = 0x100;

/// Most queues a device may have on this transport.
pub const MAX_QUEUES: usize = 4;

/// "No MSI-X vector", what the vector registers read without MSI-X.
pub const NO_VECTOR: u16 = 0xFFFF;

/// Offsets of the regions inside the modern BAR.
pub mod layout {
    /// Common configuration (`struct virtio_pci_common_cfg`).
    pub const COMMON: u64 = 0x0000;
    /// Length of the common configuration.
    pub const COMMON_LEN: u64 = 0x38;
    /// ISR status byte.
    pub const ISR: u64 = 0x1000;
    /// Device-specific configuration.
    pub const DEVICE: u64 = 0x2000;
    /// Room for the device configuration.
    pub const DEVICE_LEN_MAX: u64 = 0x1000;
    /// Queue notification addresses.
    pub const NOTIFY: u64 = 0x3000;
    /// Bytes between two queues' notification addresses.
    pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
}

/// `cfg_type` values of the virtio vendor capabilities.
pub mod cap_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications.
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
    /// PCI configuration access to the BARs.
    pub const PCI_CFG: u8 = 5;
}

/// Offsets in the legacy register block.
pub mod legacy {
    /// Device features, bits 0..32 (read).
    pub const DEVICE_FEATURES: u64 = 0x00;
    /// Driver features, bits 0..32.
    pub const DRIVER_FEATURES: u64 = 0x04;
    /// Selected queue's page frame number.
    pub const QUEUE_PFN: u64 = 0x08;
    /// Selected queue's size (read).
    pub const QUEUE_SIZE: u64 = 0x0C;
    /// Queue select.
    pub const QUEUE_SELECT: u64 = 0x0E;
    /// Queue notify (write the queue index).
    pub const QUEUE_NOTIFY: u64 = 0x10;
    /// Device status.
    pub const STATUS: u64 = 0x12;
    /// ISR status (read clears).
    pub const ISR: u64 = 0x13;
    /// Device configuration, without MSI-X.
    pub const CONFIG: u64 = 0x14;
}

/// Which interfaces a [`VirtioPci`] function offers: [`Modern`] or
/// [`Transitional`]. A type rather than a value, so that a function built
/// without the legacy interface carries none of its code.
pub trait VirtioPciTransport {
    /// Whether the legacy interface is offered too.
    const LEGACY: bool;
}

/// Virtio 1.x only: device ID 0x1040 + type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modern;

/// Modern and legacy interfaces: the legacy device ID and an I/O BAR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transitional;

impl VirtioPciTransport for Modern {
    const LEGACY: bool = false;
}

impl VirtioPciTransport for Transitional {
    const LEGACY: bool = true;
}

/// Why a function could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioPciError {
    /// The configuration header refused a BAR or capability.
    Header(HeaderError),
    /// The device has more queues than [`MAX_QUEUES`].
    TooManyQueues {
        /// The device's queue count.
        count: u16,
    },
    /// The device configuration does not fit its region.
    ConfigTooLarge {
        /// The device's configuration length.
        len: u64,
    },
    /// A transitional device was asked for a type without a legacy ID.
    NoLegacyId {
        /// The device type.
        device_type: u16,
    },
}

impl fmt::Display for VirtioPciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(e) => write!(f, "configuration header: {e}"),
            Self::TooManyQueues { count } => write!(f, "{count} queues (at most {MAX_QUEUES})"),
            Self::ConfigTooLarge { len } => write!(f, "device configuration of {len} bytes"),
            Self::NoLegacyId { device_type } => {
                write!(f, "device type {device_type} has no transitional ID")
            }
        }
    }
}

impl From<HeaderError> for VirtioPciError {
    fn from(e: HeaderError) -> Self {
        Self::Header(e)
    }
}

/// The legacy PCI device ID of a virtio device type (virtio 1.1, 4.1.2.1).
pub const fn transitional_device_id(device_type: u16) -> Option<u16> {
    match device_type {
        1 => Some(0x1000),
        2 => Some(0x1001),
        3 => Some(0x1003),
        4 => Some(0x1005),
        5 => Some(0x1002),
        8 => Some(0x1004),
        9 => Some(0x1009),
        _ => None,
    }
}

fn le_extract(bytes: &[u8], offset: u64, width: AccessWidth) -> u64 {
    let mut value = 0u64;
    for i in 0..width.bytes() {
        let byte = offset
            .checked_add(i as u64)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| bytes.get(at).copied())
            .unwrap_or(0);
        value |= u64::from(byte) << (8 * i);
    }
    value
}

/// Adds the vendor-specific capability describing the region of the modern
/// BAR at `offset`, `length` bytes long. Not generic and out of line: one
/// copy serves every region of every device type.
#[inline(never)]
fn add_region_capability(
    header: &mut ConfigHeader,
    cfg_type: u8,
    offset: u64,
    length: u32,
) -> Result<u8, HeaderError> {
    // struct virtio_pci_cap after cap_vndr and cap_next: cap_len, cfg_type,
    // bar, id, padding[2], offset, length; the notify capability adds
    // notify_off_multiplier.
    let mut body = [0u8; 18];
    let cap_len: u8 = if cfg_type == cap_type::NOTIFY { 20 } else { 16 };
    body[0] = cap_len;
    body[1] = cfg_type;
    body[2] = MODERN_BAR as u8;
    body[6..10].copy_from_slice(&(offset as u32).to_le_bytes());
    body[10..14].copy_from_slice(&length.to_le_bytes());
    body[14..18].copy_from_slice(&layout::NOTIFY_OFF_MULTIPLIER.to_le_bytes());
    header.add_capability(0x09, &body[..usize::from(cap_len) - 2])
}

/// A virtio device of type `D` as a PCI function, reaching guest memory
/// through `M`, interrupting through `L` and offering the interfaces of
/// transport `T`.
pub struct VirtioPci<M, D, L, T = Modern> {
    header: ConfigHeader,
    pci_cfg_cap: u8,
    transport: PhantomData<T>,
    device: D,
    mem: M,
    line: L,
    line_level: bool,
    status: u8,
    legacy_driver: bool,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    negotiated: u64,
    queue_select: u16,
    queues: [SplitQueue; MAX_QUEUES],
    queue_count: u16,
    isr: u8,
    last_error: Option<DeviceError>,
}

impl<M: GuestMemory, D: VirtioDevice, L: InterruptLine, T: VirtioPciTransport>
    VirtioPci<M, D, L, T>
{
    /// Wraps `device`, offering the interfaces of the transport passed
    /// ([`Modern`] or [`Transitional`]). The function uses INTA#; its interrupt line
    /// register is 0xFF (unknown) until the integrator sets it through
    /// [`VirtioPci::header_mut`]. BARs are unplaced until firmware or the
    /// guest assigns them.
    pub fn new(device: D, mem: M, line: L, _transport: T) -> Result<Self, VirtioPciError> {
        let device_type = device.device_type();
        let queue_count = device.queue_count();
        if usize::from(queue_count) > MAX_QUEUES {
            return Err(VirtioPciError::TooManyQueues { count: queue_count });
        }
        let config_len = device.config_len();
        if config_len > layout::DEVICE_LEN_MAX {
            return Err(VirtioPciError::ConfigTooLarge { len: config_len });
        }
        let (class_code, subclass, prog_if) = device.pci_class();
        let (device_id, revision_id, subsystem_id) = if T::LEGACY {
            (
                transitional_device_id(device_type)
                    .ok_or(VirtioPciError::NoLegacyId { device_type })?,
                0,
                device_type,
            )
        } else {
            (MODERN_DEVICE_ID_BASE + device_type, 1, 0x1100)
        };
        let mut header = ConfigHeader::new(PciIds {
            vendor_id: VENDOR_ID,
            device_id,
            revision_id,
            class_code,
            subclass,
            prog_if,
            subsystem_vendor_id: VENDOR_ID,
            subsystem_id,
        });
        if T::LEGACY {
            header.set_bar(LEGACY_BAR, BarKind::Io, LEGACY_BAR_SIZE)?;
        }
        header.set_bar(
            MODERN_BAR,
            BarKind::Memory32 {
                prefetchable: false,
            },
            MODERN_BAR_SIZE,
        )?;
        let notify_len = u32::from(queue_count) * layout::NOTIFY_OFF_MULTIPLIER;
        let regions = [
            (cap_type::COMMON, layout::COMMON, layout::COMMON_LEN as u32),
            (cap_type::NOTIFY, layout::NOTIFY, notify_len),
            (cap_type::ISR, layout::ISR, 1),
            (cap_type::DEVICE, layout::DEVICE, config_len as u32),
        ];
        for (cfg_type, offset, length) in regions {
            add_region_capability(&mut header, cfg_type, offset, length)?;
        }
        // The PCI configuration access capability (struct
        // virtio_pci_cfg_cap): bar, offset and length are the driver's to
        // write, and pci_cfg_data is a window onto the BAR they select.
        let mut body = [0u8; 18];
        body[0] = 20;
        body[1] = cap_type::PCI_CFG;
        let pci_cfg_cap = header.add_capability(0x09, &body)?;
        header.set_write_mask(pci_cfg_cap + 4, &[0xFF]);
        header.set_write_mask(pci_cfg_cap + 8, &[0xFF; 12]);
        header.set_interrupt_pin(Some(InterruptPin::IntA));
        header.set_interrupt_line(0xFF);
        // Queues past the device's count stay at size 0.
        let queues = core::array::from_fn(|i| {
            let max_size = if i < usize::from(queue_count) {
                device.queue_max_size(i as u16)
            } else {
                0
            };
            SplitQueue::new(max_size)
        });
        Ok(Self {
            header,
            pci_cfg_cap,
            transport: PhantomData,
            device,
            mem,
            line,
            line_level: false,
            status: 0,
            legacy_driver: false,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            negotiated: 0,
            queue_select: 0,
            queues,
            queue_count,
            isr: 0,
            last_error: None,
        })
    }

    /// The configuration header (e.g. to set the interrupt line register).
    pub fn header_mut(&mut self) -> &mut ConfigHeader {
        &mut self.header
    }

    /// The configuration header.
    pub fn header(&self) -> &ConfigHeader {
        &self.header
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The interrupt line.
    pub fn line(&self) -> &L {
        &self.line
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The ISR status register, without clearing it.
    pub fn isr(&self) -> u8 {
        self.isr
    }

    /// The features the driver accepted (valid from FEATURES_OK, or from
    /// DRIVER_OK for a legacy driver).
    pub fn negotiated_features(&self) -> u64 {
        self.negotiated
    }

    /// Every feature offered.
    pub fn offered_features(&self) -> u64 {
        self.device.device_features() | features::VERSION_1 | features::RING_INDIRECT_DESC
    }

    /// The error that put the device into NEEDS_RESET, if any.
    pub fn last_error(&self) -> Option<DeviceError> {
        self.last_error
    }

    /// Queue `index`.
    pub fn queue(&self, index: u16) -> Option<&SplitQueue> {
        if index < self.queue_count {
            self.queues.get(usize::from(index))
        } else {
            None
        }
    }

    fn update_intx(&mut self) {
        let level = self.header.set_interrupt_pending(self.isr != 0);
        if level != self.line_level {
            self.line_level = level;
            self.line.set_level(level);
        }
    }

    /// Puts the device into NEEDS_RESET for `error`. Cold and out of line:
    /// a driver that follows the rules never gets here.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, error: DeviceError) {
        self.last_error = Some(error);
        self.status |= status::NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            // Buffers completed before the error are in the used ring too.
            self.isr |= 0x3;
            self.update_intx();
        }
    }

    fn reset(&mut self) {
        self.status = 0;
        self.legacy_driver = false;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.negotiated = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.isr = 0;
        self.last_error = None;
        self.device.reset();
        self.update_intx();
    }

    /// Whether a legacy driver drives the device (never, without the
    /// legacy interface).
    fn legacy_driver(&self) -> bool {
        T::LEGACY && self.legacy_driver
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.offered_features() == 0
            && self.driver_features & features::VERSION_1 != 0
    }

    /// The driver writes the device status register.
    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let kept = old & !status::NEEDS_RESET;
        let requested = value & !status::NEEDS_RESET;
        if requested & kept != kept {
            // Only a reset clears bits.
            return;
        }
        let mut new = requested | (old & status::NEEDS_RESET);
        let rising = new & !old;
        if rising & status::FEATURES_OK != 0 {
            if new & status::DRIVER != 0 && !self.legacy_driver() && self.features_acceptable() {
                self.negotiated = self.driver_features;
            } else {
                new &= !status::FEATURES_OK;
            }
        }
        if rising & status::DRIVER_OK != 0 {
            let ready = if self.legacy_driver() {
                new & status::DRIVER != 0
            } else {
                new & status::FEATURES_OK != 0
            };
            if ready {
                if self.legacy_driver() {
                    self.negotiated = self.driver_features & self.offered_features() & 0xFFFF_FFFF;
                }
                self.device.activate(self.negotiated);
            } else {
                new &= !status::DRIVER_OK;
            }
        }
        self.status = new;
    }

    fn selected_queue(&mut self) -> Option<&mut SplitQueue> {
        if self.queue_select < self.queue_count {
            self.queues.get_mut(usize::from(self.queue_select))
        } else {
            None
        }
    }

    /// Handles the driver's notification of queue `index`.
    fn notify(&mut self, index: u16) {
        let running = status::DRIVER_OK;
        if self.status & (running | status::NEEDS_RESET) != running || !self.header.bus_master() {
            return;
        }
        if index >= self.queue_count {
            return;
        }
        let Some(queue) = self.queues.get_mut(usize::from(index)) else {
            return;
        };
        if !queue.is_ready() {
            return;
        }
        match self.device.process_queue(index, queue, &self.mem) {
            Ok(0) => {}
            Ok(_) => match queue.avail_flags(&self.mem) {
                Ok(flags) if flags & AVAIL_F_NO_INTERRUPT != 0 => {}
                Ok(_) => {
                    self.isr |= 1;
                    self.update_intx();
                }
                Err(error) => self.fail(DeviceError::Queue {
                    queue: index,
                    error,
                }),
            },
            Err(e) => self.fail(e),
        }
    }

    fn touches_pci_cfg_data(&self, offset: u8, width: AccessWidth) -> bool {
        let data = u16::from(self.pci_cfg_cap) + 16;
        let (start, end) = (u16::from(offset), u16::from(offset) + width.bytes() as u16);
        start < data + 4 && data < end
    }

    /// The BAR access the PCI configuration access capability selects:
    /// a length of 1, 2 or 4, an offset aligned to it and inside the BAR.
    fn pci_cfg_target(&self) -> Option<(usize, u64, AccessWidth)> {
        let cap = self.pci_cfg_cap;
        let bar = self.header.read(cap + 4, AccessWidth::Byte) as usize;
        let at = u64::from(self.header.read(cap + 8, AccessWidth::Dword));
        let len = self.header.read(cap + 12, AccessWidth::Dword);
        let width = match len {
            1 => AccessWidth::Byte,
            2 => AccessWidth::Word,
            4 => AccessWidth::Dword,
            _ => return None,
        };
        let (_, size) = self.header.bar_definition(bar)?;
        let end = at.checked_add(u64::from(len))?;
        (at & (u64::from(len) - 1) == 0 && end <= size).then_some((bar, at, width))
    }

    fn read_isr(&mut self) -> u8 {
        let isr = self.isr;
        self.isr = 0;
        self.update_intx();
        isr
    }

    fn common_bytes(&self) -> [u8; layout::COMMON_LEN as usize] {
        let mut c = [0u8; layout::COMMON_LEN as usize];
        let offered = self.offered_features();
        let device_features = match self.device_feature_select {
            0 => offered as u32,
            1 => (offered >> 32) as u32,
            _ => 0,
        };
        let driver_features = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        c[0x00..0x04].copy_from_slice(&self.device_feature_select.to_le_bytes());
        c[0x04..0x08].copy_from_slice(&device_features.to_le_bytes());
        c[0x08..0x0C].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        c[0x0C..0x10].copy_from_slice(&driver_features.to_le_bytes());
        c[0x10..0x12].copy_from_slice(&NO_VECTOR.to_le_bytes());
        c[0x12..0x14].copy_from_slice(&self.queue_count.to_le_bytes());
        c[0x14] = self.status;
        c[0x15] = 0; // config_generation: the configuration never changes.
        c[0x16..0x18].copy_from_slice(&self.queue_select.to_le_bytes());
        let select = self.queue_select;
        if let Some(q) = self.queue(select) {
            let (desc, avail, used) = q.addresses();
            c[0x18..0x1A].copy_from_slice(&q.size().to_le_bytes());
            c[0x1A..0x1C].copy_from_slice(&NO_VECTOR.to_le_bytes());
            c[0x1C..0x1E].copy_from_slice(&u16::from(q.is_ready()).to_le_bytes());
            c[0x1E..0x20].copy_from_slice(&select.to_le_bytes());
            c[0x20..0x28].copy_from_slice(&desc.to_le_bytes());
            c[0x28..0x30].copy_from_slice(&avail.to_le_bytes());
            c[0x30..0x38].copy_from_slice(&used.to_le_bytes());
        }
        c
    }

    fn common_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
        let len = width.bytes() as u64;
        let Some(end) = offset.checked_add(len).filter(|&e| e <= layout::COMMON_LEN) else {
            return;
        };
        let mut c = self.common_bytes();
        let start = offset as usize;
        c[start..end as usize].copy_from_slice(&value.to_le_bytes()[..width.bytes()]);
        let u16_at = |at: usize| u16::from_le_bytes([c[at], c[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        let touches = |at: u64, size: u64| offset < at + size && at < end;
        if touches(0x00, 4) {
            self.device_feature_select = u32_at(0x00);
        }
        if touches(0x08, 4) {
            self.driver_feature_select = u32_at(0x08);
        }
        if touches(0x0C, 4) && self.status & status::FEATURES_OK == 0 {
            let v = u64::from(u32_at(0x0C));
            match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | v,
                1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | v << 32,
                _ => {}
            }
        }
        if touches(0x14, 1) {
            self.write_status(c[0x14]);
        }
        if touches(0x16, 2) {
            self.queue_select = u16_at(0x16);
        }
        if touches(0x18, 2) {
            let size = u16_at(0x18);
            if let Some(q) = self.selected_queue() {
                q.set_size(size);
            }
        }
        if touches(0x20, 24) {
            let (desc, avail, used) = (u64_at(0x20), u64_at(0x28), u64_at(0x30));
            if let Some(q) = self.selected_queue() {
                q.set_addresses(desc, avail, used);
            }
        }
        if touches(0x1C, 2) && u16_at(0x1C) == 1 {
            self.enable_selected_queue(None);
        }
    }

    /// Enables the selected queue from the rings the driver set or, for a
    /// legacy driver, from the page frame number `legacy_pfn` (0 disables
    /// it); rings that do not validate put the device into NEEDS_RESET. Out
    /// of line: both register blocks enable queues this way.
    #[inline(never)]
    fn enable_selected_queue(&mut self, legacy_pfn: Option<u32>) {
        let select = self.queue_select;
        let result = match (self.selected_queue(), legacy_pfn) {
            (Some(q), Some(pfn)) => q.set_legacy_pfn(pfn),
            (Some(q), None) if !q.is_ready() => q.enable(),
            _ => Ok(()),
        };
        if let Err(error) = result {
            self.fail(DeviceError::Queue {
                queue: select,
                error,
            });
        }
    }

    fn device_config_read(&self, offset: u64, width: AccessWidth) -> u64 {
        let mut buf = [0u8; 8];
        self.device.config_read(offset, &mut buf[..width.bytes()]);
        le_extract(&buf, 0, width)
    }

    fn modern_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        match offset {
            o if o < layout::ISR => le_extract(&self.common_bytes(), o, width),
            layout::ISR => u64::from(self.read_isr()),
            o if (layout::DEVICE..layout::NOTIFY).contains(&o) => {
                self.device_config_read(o - layout::DEVICE, width)
            }
            _ => 0,
        }
    }

    fn modern_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
        match offset {
            o if o < layout::ISR => self.common_write(o, width, value),
            o if (layout::DEVICE..layout::NOTIFY).contains(&o) => {
                let bytes = value.to_le_bytes();
                self.device
                    .config_write(o - layout::DEVICE, &bytes[..width.bytes()]);
            }
            o if o >= layout::NOTIFY => {
                let slot = o - layout::NOTIFY;
                let multiplier = u64::from(layout::NOTIFY_OFF_MULTIPLIER);
                let index = u16::try_from(slot / multiplier);
                if let (0, Ok(index)) = (slot & (multiplier - 1), index) {
                    self.notify(index);
                }
            }
            _ => {}
        }
    }

    fn legacy_bytes(&self) -> [u8; legacy::CONFIG as usize] {
        let mut c = [0u8; legacy::CONFIG as usize];
        c[0..4].copy_from_slice(&(self.offered_features() as u32).to_le_bytes());
        c[4..8].copy_from_slice(&(self.driver_features as u32).to_le_bytes());
        let select = self.queue_select;
        if let Some(q) = self.queue(select) {
            c[8..12].copy_from_slice(&q.legacy_pfn().to_le_bytes());
            c[12..14].copy_from_slice(&q.max_size().to_le_bytes());
        }
        c[14..16].copy_from_slice(&select.to_le_bytes());
        c[0x12] = self.status;
        c
    }

    fn legacy_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        if offset >= legacy::CONFIG {
            return self.device_config_read(offset - legacy::CONFIG, width);
        }
        let mut value = le_extract(&self.legacy_bytes(), offset, width);
        if offset <= legacy::ISR && legacy::ISR < offset + width.bytes() as u64 {
            value |= u64::from(self.read_isr()) << (8 * (legacy::ISR - offset));
        }
        value
    }

    fn legacy_write(&mut self, offset: u64, width: AccessWidth, value: u64) {
        if self.status & status::FEATURES_OK == 0 {
            // A modern driver never touches this block; a driver that does
            // is a legacy driver until the next reset.
            self.legacy_driver = true;
        }
        if !self.legacy_driver {
            return;
        }
        if offset >= legacy::CONFIG {
            let bytes = value.to_le_bytes();
            self.device
                .config_write(offset - legacy::CONFIG, &bytes[..width.bytes()]);
            return;
        }
        match (offset, width) {
            (legacy::DRIVER_FEATURES, AccessWidth::Dword)
                if self.status & status::DRIVER_OK == 0 =>
            {
                self.driver_features = value & 0xFFFF_FFFF;
            }
            (legacy::QUEUE_PFN, AccessWidth::Dword) => {
                self.enable_selected_queue(Some(value as u32));
            }
            (legacy::QUEUE_SELECT, AccessWidth::Word) => self.queue_select = value as u16,
            (legacy::QUEUE_NOTIFY, AccessWidth::Word) => self.notify(value as u16),
            (legacy::STATUS, AccessWidth::Byte) => self.write_status(value as u8),
            _ => {}
        }
    }
}

impl<M: GuestMemory, D: VirtioDevice, L: InterruptLine, T: VirtioPciTransport> PciFunction
    for VirtioPci<M, D, L, T>
{
    fn config_read(&mut self, offset: u8, width: AccessWidth) -> u32 {
        if self.touches_pci_cfg_data(offset, width) {
            if let Some((bar, at, w)) = self.pci_cfg_target() {
                let value = self.bar_read(bar, at, w);
                let bytes = value.to_le_bytes();
                self.header
                    .set_bytes(self.pci_cfg_cap + 16, &bytes[..w.bytes()]);
            }
        }
        self.header.read(offset, width)
    }

    fn config_write(&mut self, offset: u8, width: AccessWidth, value: u32) {
        self.header.write(offset, width, value);
        if self.touches_pci_cfg_data(offset, width) {
            if let Some((bar, at, w)) = self.pci_cfg_target() {
                let data = self.header.read(self.pci_cfg_cap + 16, w);
                self.bar_write(bar, at, w, u64::from(data));
            }
        }
        // The interrupt-disable bit may have changed.
        self.update_intx();
    }

    fn bar_region(&self, bar: usize) -> Option<BarRegion> {
        self.header.bar_region(bar)
    }

    fn bar_read(&mut self, bar: usize, offset: u64, width: AccessWidth) -> u64 {
        match bar {
            MODERN_BAR => self.modern_read(offset, width),
            LEGACY_BAR if T::LEGACY => self.legacy_read(offset, width),
            _ => width.mask(),
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, width: AccessWidth, value: u64) {
        match bar {
            MODERN_BAR => self.modern_write(offset, width, value),
            LEGACY_BAR if T::LEGACY => self.legacy_write(offset, width, value),
            _ => {}
        }
    }
}
