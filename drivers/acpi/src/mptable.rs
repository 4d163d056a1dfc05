//! The Intel MultiProcessor Specification 1.4 table, for guests booted
//! without ACPI (Linux with `acpi=off`) or too old for it.
//!
//! The MP floating pointer structure (16 bytes, "_MP_") points at the MP
//! configuration table ("PCMP") that follows it. The table lists the
//! processors (the first is the bootstrap processor), the buses (PCI bus 0
//! when PCI routes are given, then ISA), the IOAPIC, the I/O interrupt
//! assignments and the local interrupt assignments of the PC's virtual-wire
//! setup: the 8259's ExtINT on IOAPIC pin 0 and on every LINT0, ISA IRQ 0
//! on pin 2, the other ISA IRQs on their own pins, PCI INTx
//! level-triggered and active-low on the pins of their routes, NMI on
//! LINT1.
//!
//! Linux looks for the floating pointer in the first KiB of the EBDA, the
//! last KiB of base memory (0x9fc00 with 640 KiB) and 0xf0000-0xfffff; the
//! integrator writes the region at one of those and reports it reserved in
//! the E820 map.

use crate::dsdt::PciIrqRoute;
use crate::tables::{checksum, put16, put32};
use crate::AcpiError;
use ponte_kernel::memory::GuestMemory;

/// Size of the floating pointer structure.
pub const FLOATING_POINTER_SIZE: usize = 16;
/// Size of the configuration table header.
pub const HEADER_SIZE: usize = 44;
/// Size of a processor entry.
pub const PROCESSOR_ENTRY_SIZE: usize = 20;
/// Size of every other base entry.
pub const ENTRY_SIZE: usize = 8;
/// Specification revision 1.4.
pub const SPEC_REVISION: u8 = 4;

/// Entry type: processor.
pub const ENTRY_PROCESSOR: u8 = 0;
/// Entry type: bus.
pub const ENTRY_BUS: u8 = 1;
/// Entry type: I/O APIC.
pub const ENTRY_IO_APIC: u8 = 2;
/// Entry type: I/O interrupt assignment.
pub const ENTRY_IO_INTERRUPT: u8 = 3;
/// Entry type: local interrupt assignment.
pub const ENTRY_LOCAL_INTERRUPT: u8 = 4;

/// Interrupt type: vectored interrupt from the IOAPIC redirection entry.
pub const INT_TYPE_INT: u8 = 0;
/// Interrupt type: NMI.
pub const INT_TYPE_NMI: u8 = 1;
/// Interrupt type: the 8259's external interrupt.
pub const INT_TYPE_EXTINT: u8 = 3;
/// Interrupt flags: level-triggered, active-low.
pub const FLAGS_LEVEL_LOW: u16 = 0x000f;
/// Local APIC version reported (integrated APIC).
pub const LOCAL_APIC_VERSION: u8 = 0x14;
/// IOAPIC version reported (82093AA).
pub const IO_APIC_VERSION: u8 = 0x11;
/// Processor flag: enabled.
pub const CPU_ENABLED: u8 = 1;
/// Processor flag: bootstrap processor.
pub const CPU_BOOTSTRAP: u8 = 2;

/// What the MP table describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpConfig<'a> {
    /// OEM ID (8 bytes, space-padded).
    pub oem_id: [u8; 8],
    /// Product ID (12 bytes, space-padded).
    pub product_id: [u8; 12],
    /// Local APIC IDs (below 255); the first is the bootstrap processor.
    pub apic_ids: &'a [u8],
    /// CPU signature (CPUID.1:EAX) reported for every processor.
    pub cpu_signature: u32,
    /// Feature flags (CPUID.1:EDX) reported for every processor.
    pub cpu_features: u32,
    /// Local APIC base.
    pub local_apic_address: u32,
    /// IOAPIC ID (distinct from every local APIC ID).
    pub io_apic_id: u8,
    /// IOAPIC base.
    pub io_apic_address: u32,
    /// PCI INTx routes (to IOAPIC pins); none means no PCI bus.
    pub pci_routes: &'a [PciIrqRoute],
}

/// Where the MP structures went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpLayout {
    /// The floating pointer structure (the region's start).
    pub floating_pointer: u64,
    /// The configuration table.
    pub table: u64,
    /// Bytes used from the floating pointer: report them reserved.
    pub len: u64,
}

/// Number of ISA IRQs described.
const ISA_IRQS: u8 = 16;

impl MpConfig<'_> {
    fn entry_count(&self) -> usize {
        let buses = if self.pci_routes.is_empty() { 1 } else { 2 };
        // ExtINT on pin 0, ISA IRQs 0-15 except the cascade (IRQ 2), PCI
        // routes, ExtINT and NMI local assignments.
        self.apic_ids.len() + buses + 1 + 1 + 15 + self.pci_routes.len() + 2
    }

    /// Length of the configuration table.
    pub fn table_len(&self) -> usize {
        HEADER_SIZE
            + PROCESSOR_ENTRY_SIZE * self.apic_ids.len()
            + ENTRY_SIZE * (self.entry_count() - self.apic_ids.len())
    }
}

/// Builds the floating pointer and configuration table into `buf`, which
/// stands for guest memory at `base` (16-byte aligned, below 4 GiB).
pub fn build(config: &MpConfig<'_>, base: u64, buf: &mut [u8]) -> Result<MpLayout, AcpiError> {
    if base & 15 != 0 {
        return Err(AcpiError::Misaligned { base });
    }
    if config.apic_ids.is_empty() {
        return Err(AcpiError::NoProcessors);
    }
    if config.apic_ids.len() > 254 || config.apic_ids.contains(&0xff) {
        return Err(AcpiError::TooManyProcessors {
            count: config.apic_ids.len(),
        });
    }
    if config.pci_routes.len() > 512 {
        return Err(AcpiError::TooManyDevices {
            count: config.pci_routes.len(),
        });
    }
    let table_len = config.table_len();
    let len = FLOATING_POINTER_SIZE + table_len;
    let table_addr = base + FLOATING_POINTER_SIZE as u64;
    let end = base.checked_add(len as u64).ok_or(AcpiError::Overflow)?;
    if end > 1 << 32 {
        return Err(AcpiError::Overflow);
    }
    if buf.len() < len {
        return Err(AcpiError::BufferTooSmall {
            needed: len,
            capacity: buf.len(),
        });
    }
    buf[..len].fill(0);

    let fp = &mut buf[..FLOATING_POINTER_SIZE];
    fp[0..4].copy_from_slice(b"_MP_");
    put32(fp, 4, table_addr as u32);
    fp[8] = 1; // length in 16-byte units
    fp[9] = SPEC_REVISION;
    // Feature bytes 0: a configuration table is present; no IMCR (the
    // machine runs in virtual-wire mode).
    fp[10] = checksum(fp);

    let t = &mut buf[FLOATING_POINTER_SIZE..len];
    t[0..4].copy_from_slice(b"PCMP");
    put16(t, 4, table_len as u16);
    t[6] = SPEC_REVISION;
    t[8..16].copy_from_slice(&config.oem_id);
    t[16..28].copy_from_slice(&config.product_id);
    put16(t, 34, config.entry_count() as u16);
    put32(t, 36, config.local_apic_address);

    let mut at = HEADER_SIZE;
    for (i, &id) in config.apic_ids.iter().enumerate() {
        let e = &mut t[at..at + PROCESSOR_ENTRY_SIZE];
        e[0] = ENTRY_PROCESSOR;
        e[1] = id;
        e[2] = LOCAL_APIC_VERSION;
        e[3] = CPU_ENABLED | if i == 0 { CPU_BOOTSTRAP } else { 0 };
        put32(e, 4, config.cpu_signature);
        put32(e, 8, config.cpu_features);
        at += PROCESSOR_ENTRY_SIZE;
    }
    let mut entry = |bytes: [u8; 8]| {
        t[at..at + ENTRY_SIZE].copy_from_slice(&bytes);
        at += ENTRY_SIZE;
    };
    let (pci_bus, isa_bus) = if config.pci_routes.is_empty() {
        (None, 0)
    } else {
        (Some(0u8), 1)
    };
    if let Some(bus) = pci_bus {
        entry([ENTRY_BUS, bus, b'P', b'C', b'I', b' ', b' ', b' ']);
    }
    entry([ENTRY_BUS, isa_bus, b'I', b'S', b'A', b' ', b' ', b' ']);
    let a = config.io_apic_address.to_le_bytes();
    entry([
        ENTRY_IO_APIC,
        config.io_apic_id,
        IO_APIC_VERSION,
        1,
        a[0],
        a[1],
        a[2],
        a[3],
    ]);
    let apic = config.io_apic_id;
    let io_int = |kind: u8, flags: u16, bus: u8, irq: u8, pin: u8| {
        let f = flags.to_le_bytes();
        [ENTRY_IO_INTERRUPT, kind, f[0], f[1], bus, irq, apic, pin]
    };
    entry(io_int(INT_TYPE_EXTINT, 0, isa_bus, 0, 0));
    for irq in (0..ISA_IRQS).filter(|&irq| irq != 2) {
        let pin = if irq == 0 { 2 } else { irq };
        entry(io_int(INT_TYPE_INT, 0, isa_bus, irq, pin));
    }
    if let Some(bus) = pci_bus {
        for route in config.pci_routes {
            if route.slot > 31 || route.pin > 3 {
                return Err(AcpiError::BadPciRoute {
                    slot: route.slot,
                    pin: route.pin,
                });
            }
            let pin = u8::try_from(route.gsi).map_err(|_| AcpiError::BadIrq { irq: route.gsi })?;
            let source = (route.slot << 2) | route.pin;
            entry(io_int(INT_TYPE_INT, FLAGS_LEVEL_LOW, bus, source, pin));
        }
    }
    // Local interrupts to every local APIC (ID 0xff).
    entry([
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_EXTINT,
        0,
        0,
        isa_bus,
        0,
        0xff,
        0,
    ]);
    entry([
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_NMI,
        0,
        0,
        isa_bus,
        0,
        0xff,
        1,
    ]);
    t[7] = checksum(t);

    Ok(MpLayout {
        floating_pointer: base,
        table: table_addr,
        len: len as u64,
    })
}

/// Builds the MP structures into `scratch` (see [`build`]) and copies them
/// into guest memory at `base`.
pub fn write(
    mem: &impl GuestMemory,
    config: &MpConfig<'_>,
    base: u64,
    scratch: &mut [u8],
) -> Result<MpLayout, AcpiError> {
    let layout = build(config, base, scratch)?;
    mem.write(base, &scratch[..layout.len as usize])?;
    Ok(layout)
}
