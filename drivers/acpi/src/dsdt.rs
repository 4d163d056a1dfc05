//! The DSDT's definition block: the PCI root bridge with its resources and
//! interrupt routing, the legacy COM1 port, virtio-mmio devices and the S5
//! sleep state for poweroff.
//!
//! The ASL it corresponds to:
//!
//! ```text
//! Scope (\_SB) {
//!     Device (PCI0) {
//!         Name (_HID, EisaId ("PNP0A03"))
//!         Name (_UID, 0)  Name (_SEG, segment)  Name (_BBN, bus_start)
//!         Name (_CRS, ResourceTemplate () {
//!             WordBusNumber (..., bus_start, bus_end, ...)
//!             IO (Decode16, 0x0CF8, 0x0CF8, 1, 8)
//!             WordIO (...) per I/O window
//!             DWordMemory (...) / QWordMemory (...) per MMIO window
//!         })
//!         Name (_PRT, Package () { Package () { 0xSSSSFFFF, pin, 0, gsi }, ... })
//!     }
//!     Device (COM1) {
//!         Name (_HID, EisaId ("PNP0501"))  Name (_UID, 1)
//!         Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 1, 8) IRQNoFlags () { 4 } })
//!     }
//!     Device (VRnn) {
//!         Name (_HID, "LNRO0005")  Name (_UID, n)
//!         Name (_CRS, ResourceTemplate () { Memory32Fixed (...) Interrupt (...) { gsi } })
//!     }
//! }
//! Name (\_S5, Package () { slp_typ, slp_typ, 0, 0 })
//! ```
//!
//! `_PRT` entries name GSIs directly (source 0), so Linux routes PCI INTx
//! level-triggered, active-low through the IOAPIC. virtio-mmio devices are
//! matched by Linux's `virtio_mmio` driver through the `LNRO0005` id, the
//! only way to find them on x86 when `VIRTIO_MMIO_CMDLINE_DEVICES` is off.

use crate::aml::Aml;
use crate::AcpiError;

/// An inclusive I/O port window forwarded to PCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoWindow {
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
}

/// An inclusive MMIO window forwarded to PCI (a DWordMemory descriptor below
/// 4 GiB, a QWordMemory one otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioWindow {
    /// First address.
    pub start: u64,
    /// Last address.
    pub end: u64,
}

/// A PCI INTx routed to an IOAPIC input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIrqRoute {
    /// Device (slot) number on the root bus, 0-31.
    pub slot: u8,
    /// Pin: 0 = INTA# .. 3 = INTD#.
    pub pin: u8,
    /// The GSI the pin drives.
    pub gsi: u32,
}

/// The PCI root bridge `\_SB.PCI0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciRoot<'a> {
    /// PCI segment group (`_SEG`).
    pub segment: u16,
    /// First bus number (`_BBN`).
    pub bus_start: u8,
    /// Last bus number.
    pub bus_end: u8,
    /// I/O windows (besides the configuration ports 0xcf8-0xcff, which the
    /// bridge consumes).
    pub io_windows: &'a [IoWindow],
    /// MMIO windows.
    pub mmio_windows: &'a [MmioWindow],
    /// INTx routing.
    pub irq_routes: &'a [PciIrqRoute],
}

/// A virtio-mmio transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmio {
    /// Base of its register window.
    pub base: u32,
    /// Size of the window (0x200 for version 2 transports).
    pub len: u32,
    /// Its interrupt.
    pub gsi: u32,
    /// Edge-triggered (true) or level-triggered (false), active high.
    pub edge: bool,
}

/// What the DSDT describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DsdtConfig<'a> {
    /// The PCI root bridge, if the machine has PCI.
    pub pci: Option<PciRoot<'a>>,
    /// COM1 at 0x3f8, IRQ 4.
    pub com1: bool,
    /// virtio-mmio devices, `\_SB.VR00` onwards (at most 256).
    pub virtio_mmio: &'a [VirtioMmio],
    /// The SLP_TYP value for S5 (written to PM1a_CNT and PM1b_CNT).
    pub s5_sleep_type: u8,
}

/// Writes the DSDT's AML (the definition block's body, after the header).
pub fn write_body(aml: &mut Aml<'_>, config: &DsdtConfig<'_>) -> Result<(), AcpiError> {
    aml.scope("\\_SB_", |a| {
        if let Some(pci) = &config.pci {
            pci_root(a, pci)?;
        }
        if config.com1 {
            a.device("COM1", |a| {
                name_eisa_id(a, "_HID", "PNP0501")?;
                name_integer(a, "_UID", 1)?;
                a.name("_CRS", |a| {
                    a.resource_template(|r| {
                        r.io(0x3f8, 8)?;
                        r.irq(4)
                    })
                })
            })?;
        }
        if config.virtio_mmio.len() > 256 {
            return Err(AcpiError::TooManyDevices {
                count: config.virtio_mmio.len(),
            });
        }
        for (i, dev) in config.virtio_mmio.iter().enumerate() {
            let mut name = *b"VR00";
            name[2] = hex_digit(i >> 4);
            name[3] = hex_digit(i & 0xf);
            // Upper-case hex digits and letters: always a valid segment.
            let name =
                core::str::from_utf8(&name).map_err(|_| AcpiError::BadName { position: 0 })?;
            a.device(name, |a| {
                a.name("_HID", |a| a.string("LNRO0005"))?;
                name_integer(a, "_UID", i as u64)?;
                a.name("_CRS", |a| {
                    a.resource_template(|r| {
                        r.memory32_fixed(dev.base, dev.len, true)?;
                        r.interrupt(dev.gsi, dev.edge, false, false)
                    })
                })
            })?;
        }
        Ok(())
    })?;
    aml.name("\\_S5_", |a| {
        a.package(|p| {
            p.integer(config.s5_sleep_type.into())?;
            p.integer(config.s5_sleep_type.into())?;
            p.integer(0)?;
            p.integer(0)
        })
    })
}

/// `Name(path, value)` with an integer value, as most names here are; out
/// of line so that each use is one call.
#[inline(never)]
fn name_integer(a: &mut Aml<'_>, path: &str, value: u64) -> Result<(), AcpiError> {
    a.name(path, |a| a.integer(value))
}

/// `Name(path, EisaId(id))`.
#[inline(never)]
fn name_eisa_id(a: &mut Aml<'_>, path: &str, id: &str) -> Result<(), AcpiError> {
    a.name(path, |a| a.eisa_id(id))
}

fn hex_digit(n: usize) -> u8 {
    b"0123456789ABCDEF"[n & 0xf]
}

fn pci_root(a: &mut Aml<'_>, pci: &PciRoot<'_>) -> Result<(), AcpiError> {
    if pci.bus_end < pci.bus_start {
        return Err(AcpiError::BadRange {
            start: pci.bus_start.into(),
            end: pci.bus_end.into(),
        });
    }
    a.device("PCI0", |a| {
        name_eisa_id(a, "_HID", "PNP0A03")?;
        name_integer(a, "_UID", 0)?;
        name_integer(a, "_SEG", pci.segment.into())?;
        name_integer(a, "_BBN", pci.bus_start.into())?;
        a.name("_CRS", |a| {
            a.resource_template(|r| {
                r.word_bus_number(pci.bus_start, pci.bus_end)?;
                r.io(0xcf8, 8)?;
                for w in pci.io_windows {
                    r.word_io(w.start, w.end)?;
                }
                for w in pci.mmio_windows {
                    match (u32::try_from(w.start), u32::try_from(w.end)) {
                        (Ok(start), Ok(end)) => r.dword_memory(start, end, false)?,
                        _ => r.qword_memory(w.start, w.end, false)?,
                    }
                }
                Ok(())
            })
        })?;
        a.name("_PRT", |a| {
            a.package(|p| {
                for route in pci.irq_routes {
                    if route.slot > 31 || route.pin > 3 {
                        return Err(AcpiError::BadPciRoute {
                            slot: route.slot,
                            pin: route.pin,
                        });
                    }
                    p.package(|e| {
                        e.dword((u32::from(route.slot) << 16) | 0xffff)?;
                        e.integer(route.pin.into())?;
                        e.integer(0)?;
                        e.integer(route.gsi.into())
                    })?;
                }
                Ok(())
            })
        })
    })
}
