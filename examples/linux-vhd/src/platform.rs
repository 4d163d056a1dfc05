//! The board's address map and the firmware tables that describe it to
//! the guest (ACPI, SMBIOS). Only constants: the image uses them to wire
//! the board, and the build script turns the tables into the bytes the
//! image copies into guest memory, so that the image carries no table
//! builder.

use ponte_acpi::smbios::SmbiosConfig;
use ponte_acpi::tables::{BOOT_ARCH_LEGACY_DEVICES, BOOT_ARCH_VGA_NOT_PRESENT};
use ponte_acpi::{
    AcpiConfig, DsdtConfig, FadtConfig, InterruptOverride, IoWindow, MadtConfig, McfgConfig,
    MmioWindow, OemInfo, PciIrqRoute, PciRoot,
};

/// Guest RAM, from guest-physical 0.
pub const GUEST_RAM: u64 = 128 << 20;
/// Bytes for the ACPI tables at the top of guest RAM, reported as ACPI memory.
pub const ACPI_SIZE: u64 = 0x1_0000;
/// Where the ACPI tables (the RSDP first) start.
pub const ACPI_BASE: u64 = GUEST_RAM - ACPI_SIZE;
/// The IOAPIC's register page.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// The local APIC's register page, at its default base.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Bytes of the IOAPIC's and the local APIC's register windows: a page each.
pub const APIC_WINDOW_SIZE: u64 = 0x1000;
/// The PCI memory window, where the BARs go.
pub const PCI_MMIO_BASE: u64 = 0xfe00_0000;
/// Size of the PCI memory window.
pub const PCI_MMIO_SIZE: u64 = 0x80_0000;
/// The SMBIOS entry point, where a guest booted without UEFI scans for it
/// (in the legacy hole, reserved in the memory map).
pub const SMBIOS_BASE: u64 = 0xf_0000;
/// What the machine says about itself through SMBIOS.
pub static SMBIOS: SmbiosConfig<'static> = SmbiosConfig {
    bios_vendor: "ponte",
    bios_version: env!("CARGO_PKG_VERSION"),
    bios_date: "11/25/2026",
    manufacturer: "ponte",
    product: "linux-vhd",
    version: env!("CARGO_PKG_VERSION"),
    serial: "0",
    uuid: [0; 16],
    family: "ponte appliance",
};
/// The ECAM window (bus 0 only), described by the MCFG table.
pub const ECAM_BASE: u64 = 0xe000_0000;
/// First port of the PCI I/O window.
pub const PCI_IO_BASE: u16 = 0xc000;
/// Ports in the PCI I/O window.
pub const PCI_IO_SIZE: u16 = 0x1000;
/// The FADT's PM1a event block (status and enable registers).
pub const PM1A_EVENT: u16 = 0x600;
/// The FADT's PM1a control block.
pub const PM1A_CONTROL: u16 = 0x604;
/// `\_S5`'s SLP_TYP.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The SCI's ISA IRQ.
pub const SCI_IRQ: u8 = 9;
/// The disk's PCI slot.
pub const DISK_SLOT: u8 = 3;
/// GSI of the disk's INTA# (IOAPIC pin 16, level-triggered, active low, as
/// PCI interrupts are).
pub const DISK_GSI: u32 = 16;

/// The ISA IRQ 0 and SCI overrides of a PC.
static OVERRIDES: [InterruptOverride; 2] = InterruptOverride::pc_defaults(SCI_IRQ);
/// The PCI root's I/O windows: all ports but configuration mechanism #1.
static IO: [IoWindow; 2] = [
    IoWindow {
        start: 0,
        end: 0xcf7,
    },
    IoWindow {
        start: 0xd00,
        end: 0xffff,
    },
];
/// The PCI root's memory window, where the BARs go.
static MMIO: [MmioWindow; 1] = [MmioWindow {
    start: PCI_MMIO_BASE,
    end: PCI_MMIO_BASE + PCI_MMIO_SIZE - 1,
}];
/// The disk's INTA# routing (`_PRT`).
static ROUTES: [PciIrqRoute; 1] = [PciIrqRoute {
    slot: DISK_SLOT,
    pin: 0,
    gsi: DISK_GSI,
}];

/// The ACPI tables' configuration: RSDP, XSDT, FADT with the PM1a
/// blocks, MADT, MCFG and a DSDT with the PCI root, COM1 and `\_S5`.
pub static ACPI: AcpiConfig<'static> = AcpiConfig {
    oem: OemInfo {
        oem_id: *b"PONTE ",
        oem_table_id: *b"LINUXVHD",
        oem_revision: 1,
        creator_id: *b"PNTE",
        creator_revision: 1,
    },
    madt: MadtConfig {
        apic_ids: &[0],
        local_apic_address: LAPIC_BASE as u32,
        pcat_compat: true,
        io_apic_id: 1,
        io_apic_address: IOAPIC_BASE as u32,
        io_apic_gsi_base: 0,
        overrides: &OVERRIDES,
        nmi_lint: 1,
    },
    fadt: FadtConfig {
        sci_irq: SCI_IRQ as u16,
        pm1a_event_block: PM1A_EVENT,
        pm1a_control_block: PM1A_CONTROL,
        pm_timer_block: None,
        reset: None,
        boot_arch: BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_VGA_NOT_PRESENT,
    },
    hpet: None,
    mcfg: Some(McfgConfig {
        base: ECAM_BASE,
        segment: 0,
        bus_start: 0,
        bus_end: 0,
    }),
    dsdt: DsdtConfig {
        pci: Some(PciRoot {
            segment: 0,
            bus_start: 0,
            bus_end: 0,
            io_windows: &IO,
            mmio_windows: &MMIO,
            irq_routes: &ROUTES,
        }),
        com1: true,
        virtio_mmio: &[],
        s5_sleep_type: S5_SLEEP_TYPE,
    },
};
