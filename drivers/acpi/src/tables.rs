//! Fixed-layout ACPI tables (ACPI 6.5 chapter 5.2): the RSDP, the common
//! table header and checksum, XSDT, FADT, FACS, MADT, HPET and MCFG.
//!
//! Each writer fills a byte slice at the table's offset in the region being
//! built; the caller fixes checksums once the contents are complete.

use crate::AcpiError;

/// Size of the common description table header.
pub const HEADER_SIZE: usize = 36;
/// Size of the ACPI 2.0+ RSDP.
pub const RSDP_SIZE: usize = 36;
/// Bytes the RSDP's first checksum covers (the ACPI 1.0 part).
pub const RSDP_V1_SIZE: usize = 20;
/// Size of the FADT, revision 6 (with the hypervisor vendor identity).
pub const FADT_SIZE: usize = 276;
/// FADT major revision.
pub const FADT_REVISION: u8 = 6;
/// FADT minor revision (ACPI 6.5).
pub const FADT_MINOR_REVISION: u8 = 5;
/// Size of the FACS.
pub const FACS_SIZE: usize = 64;
/// Size of the HPET table.
pub const HPET_SIZE: usize = 56;
/// Size of the MCFG with one allocation.
pub const MCFG_SIZE: usize = 60;
/// MADT revision.
pub const MADT_REVISION: u8 = 5;
/// DSDT revision: 2 makes AML integers 64 bits wide.
pub const DSDT_REVISION: u8 = 2;

/// The byte that makes `bytes` sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b)))
}

/// Identification written into every header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OemInfo {
    /// OEM ID.
    pub oem_id: [u8; 6],
    /// OEM table ID.
    pub oem_table_id: [u8; 8],
    /// OEM revision.
    pub oem_revision: u32,
    /// Creator ID (of the tool that built the tables).
    pub creator_id: [u8; 4],
    /// Creator revision.
    pub creator_revision: u32,
}

pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes the header of a table of `len` bytes (checksum left 0).
pub fn header(
    table: &mut [u8],
    signature: &[u8; 4],
    len: usize,
    revision: u8,
    oem: &OemInfo,
) -> Result<(), AcpiError> {
    let len32 = u32::try_from(len).map_err(|_| AcpiError::TableTooLarge { len })?;
    write_header(table, signature, len32, revision, oem);
    Ok(())
}

/// [`header`] once the length is known to fit. Out of line: every table
/// starts this way, while the length check folds away where it is known.
#[inline(never)]
fn write_header(table: &mut [u8], signature: &[u8; 4], len: u32, revision: u8, oem: &OemInfo) {
    table[0..4].copy_from_slice(signature);
    put32(table, 4, len);
    table[8] = revision;
    table[9] = 0;
    table[10..16].copy_from_slice(&oem.oem_id);
    table[16..24].copy_from_slice(&oem.oem_table_id);
    put32(table, 24, oem.oem_revision);
    table[28..32].copy_from_slice(&oem.creator_id);
    put32(table, 32, oem.creator_revision);
}

/// Sets the header checksum of the table in `table` (its whole length).
#[inline(never)]
pub fn fix_checksum(table: &mut [u8]) {
    table[9] = 0;
    table[9] = checksum(table);
}

/// Writes the RSDP (revision 2) pointing at the XSDT, with both checksums.
pub fn rsdp(out: &mut [u8], oem_id: &[u8; 6], xsdt: u64) {
    out[..RSDP_SIZE].fill(0);
    out[0..8].copy_from_slice(b"RSD PTR ");
    out[9..15].copy_from_slice(oem_id);
    out[15] = 2;
    put32(out, 16, 0); // RsdtAddress: no RSDT, the XSDT serves ACPI 2.0+.
    put32(out, 20, RSDP_SIZE as u32);
    put64(out, 24, xsdt);
    out[8] = checksum(&out[..RSDP_V1_SIZE]);
    out[32] = checksum(&out[..RSDP_SIZE]);
}

/// Writes the FACS (version 2; no waking vector, no global lock owner).
pub fn facs(out: &mut [u8]) {
    out[..FACS_SIZE].fill(0);
    out[0..4].copy_from_slice(b"FACS");
    put32(out, 4, FACS_SIZE as u32);
    out[32] = 2;
}

/// A Generic Address Structure (ACPI 5.2.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenericAddress {
    /// Address space: 0 system memory, 1 system I/O.
    pub space_id: u8,
    /// Register width in bits.
    pub bit_width: u8,
    /// Register offset in bits.
    pub bit_offset: u8,
    /// Access size: 0 undefined, 1 byte, 2 word, 3 dword, 4 qword.
    pub access_size: u8,
    /// Address.
    pub address: u64,
}

impl GenericAddress {
    /// An I/O port register of `bytes` bytes (access size left to the
    /// register's width, as QEMU describes PM blocks).
    pub const fn io(port: u16, bytes: u8) -> Self {
        Self {
            space_id: 1,
            bit_width: bytes * 8,
            bit_offset: 0,
            access_size: 0,
            address: port as u64,
        }
    }

    /// The all-zero "not present" address.
    pub const NONE: GenericAddress = GenericAddress {
        space_id: 0,
        bit_width: 0,
        bit_offset: 0,
        access_size: 0,
        address: 0,
    };

    pub(crate) fn write(&self, out: &mut [u8], off: usize) {
        out[off] = self.space_id;
        out[off + 1] = self.bit_width;
        out[off + 2] = self.bit_offset;
        out[off + 3] = self.access_size;
        put64(out, off + 4, self.address);
    }
}

/// FADT flag: WBINVD works.
pub const FADT_WBINVD: u32 = 1 << 0;
/// FADT flag: C1 is supported on all processors.
pub const FADT_PROC_C1: u32 = 1 << 2;
/// FADT flag: no fixed-feature power button.
pub const FADT_PWR_BUTTON: u32 = 1 << 4;
/// FADT flag: no fixed-feature sleep button.
pub const FADT_SLP_BUTTON: u32 = 1 << 5;
/// FADT flag: RTC wake status is not in the fixed register space.
pub const FADT_FIX_RTC: u32 = 1 << 6;
/// FADT flag: the PM timer is 32 bits wide.
pub const FADT_TMR_VAL_EXT: u32 = 1 << 8;
/// FADT flag: the reset register is supported.
pub const FADT_RESET_REG_SUP: u32 = 1 << 10;
/// FADT flag: hardware-reduced ACPI (never set here).
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;

/// IA-PC boot architecture flag: legacy (ISA) devices are present.
pub const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
/// IA-PC boot architecture flag: an 8042 keyboard controller is present.
pub const BOOT_ARCH_8042: u16 = 1 << 1;
/// IA-PC boot architecture flag: VGA is not present.
pub const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// IA-PC boot architecture flag: MSI must not be enabled.
pub const BOOT_ARCH_MSI_NOT_SUPPORTED: u16 = 1 << 3;
/// IA-PC boot architecture flag: no CMOS RTC.
pub const BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// The FADT's hardware description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FadtConfig {
    /// The SCI's ISA IRQ (9 on PCs); its trigger and polarity come from the
    /// MADT's interrupt source override.
    pub sci_irq: u16,
    /// PM1a event block: 4 ports (PM1_STS, PM1_EN).
    pub pm1a_event_block: u16,
    /// PM1a control block: 2 ports (SCI_EN bit 0, SLP_TYP bits 12:10,
    /// SLP_EN bit 13).
    pub pm1a_control_block: u16,
    /// The 32-bit ACPI PM timer (3.579545 MHz) at these 4 ports, if any.
    pub pm_timer_block: Option<u16>,
    /// A reset register: port and value (e.g. 0xcf9 and 0x06).
    pub reset: Option<(u16, u8)>,
    /// IA-PC boot architecture flags (`BOOT_ARCH_*`).
    pub boot_arch: u16,
}

/// Writes the FADT (revision 6.5, not hardware-reduced).
pub fn fadt(
    out: &mut [u8],
    oem: &OemInfo,
    config: &FadtConfig,
    facs: u64,
    dsdt: u64,
) -> Result<(), AcpiError> {
    out[..FADT_SIZE].fill(0);
    header(out, b"FACP", FADT_SIZE, FADT_REVISION, oem)?;
    // The FACS goes in exactly one of FIRMWARE_CTRL and X_FIRMWARE_CTRL
    // (ACPICA installs it twice when both are set); the DSDT in X_DSDT and,
    // when it fits, also in DSDT.
    match u32::try_from(facs) {
        Ok(low) => put32(out, 36, low),
        Err(_) => put64(out, 132, facs),
    }
    put32(out, 40, u32::try_from(dsdt).unwrap_or(0));
    put16(out, 46, config.sci_irq);
    // SMI_CMD 0: the platform is always in ACPI mode (SCI_EN reads 1).
    put32(out, 56, config.pm1a_event_block.into());
    put32(out, 64, config.pm1a_control_block.into());
    out[88] = 4; // PM1_EVT_LEN
    out[89] = 2; // PM1_CNT_LEN
    let mut flags = FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_FIX_RTC;
    if let Some(timer) = config.pm_timer_block {
        put32(out, 76, timer.into());
        out[91] = 4; // PM_TMR_LEN
        flags |= FADT_TMR_VAL_EXT;
        GenericAddress::io(timer, 4).write(out, 208);
    }
    // C2/C3 are not supported: latencies above 100 and 1000 us say so.
    put16(out, 96, 101);
    put16(out, 98, 1001);
    put16(out, 109, config.boot_arch);
    if let Some((port, value)) = config.reset {
        flags |= FADT_RESET_REG_SUP;
        GenericAddress {
            space_id: 1,
            bit_width: 8,
            bit_offset: 0,
            access_size: 1,
            address: port.into(),
        }
        .write(out, 116);
        out[128] = value;
    }
    put32(out, 112, flags);
    out[131] = FADT_MINOR_REVISION;
    put64(out, 140, dsdt);
    GenericAddress::io(config.pm1a_event_block, 4).write(out, 148);
    GenericAddress::io(config.pm1a_control_block, 2).write(out, 172);
    Ok(())
}

/// Polarity of an interrupt source override (MPS INTI flags bits 1:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// Conforms to the bus (ISA: active high).
    Conforming = 0,
    /// Active high.
    ActiveHigh = 1,
    /// Active low.
    ActiveLow = 3,
}

/// Trigger mode of an interrupt source override (MPS INTI flags bits 3:2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Conforms to the bus (ISA: edge).
    Conforming = 0,
    /// Edge.
    Edge = 1,
    /// Level.
    Level = 3,
}

/// An ISA IRQ that reaches the IOAPIC on another GSI or with other flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptOverride {
    /// ISA IRQ.
    pub irq: u8,
    /// GSI.
    pub gsi: u32,
    /// Polarity.
    pub polarity: Polarity,
    /// Trigger mode.
    pub trigger: Trigger,
}

impl InterruptOverride {
    /// INTI flags (ACPI table 5.50).
    pub fn flags(&self) -> u16 {
        self.polarity as u16 | ((self.trigger as u16) << 2)
    }

    /// The PC's usual overrides: the PIT's IRQ 0 on GSI 2 (as the 8254
    /// output reaches IOAPIC input 2), and the SCI level-triggered,
    /// active-low on its own GSI.
    pub const fn pc_defaults(sci_irq: u8) -> [InterruptOverride; 2] {
        [
            InterruptOverride {
                irq: 0,
                gsi: 2,
                polarity: Polarity::Conforming,
                trigger: Trigger::Conforming,
            },
            InterruptOverride {
                irq: sci_irq,
                gsi: sci_irq as u32,
                polarity: Polarity::ActiveLow,
                trigger: Trigger::Level,
            },
        ]
    }
}

/// MADT flag: a dual 8259 is present (PCAT_COMPAT).
pub const MADT_PCAT_COMPAT: u32 = 1;
/// MADT structure: Processor Local APIC.
pub const MADT_LOCAL_APIC: u8 = 0;
/// MADT structure: I/O APIC.
pub const MADT_IO_APIC: u8 = 1;
/// MADT structure: Interrupt Source Override.
pub const MADT_INTERRUPT_OVERRIDE: u8 = 2;
/// MADT structure: Local APIC NMI.
pub const MADT_LOCAL_APIC_NMI: u8 = 4;
/// MADT structure: Processor Local x2APIC.
pub const MADT_LOCAL_X2APIC: u8 = 9;
/// MADT structure: Local x2APIC NMI.
pub const MADT_LOCAL_X2APIC_NMI: u8 = 0x0a;
/// Local APIC flag: enabled.
pub const LAPIC_ENABLED: u32 = 1;

/// The interrupt controllers the MADT describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtConfig<'a> {
    /// Local APIC IDs of the vCPUs, in ACPI processor UID order (UID =
    /// index). IDs of 255 or more switch every entry to x2APIC form.
    pub apic_ids: &'a [u32],
    /// Local APIC base (0xfee00000).
    pub local_apic_address: u32,
    /// Whether a dual 8259 is present.
    pub pcat_compat: bool,
    /// IOAPIC ID.
    pub io_apic_id: u8,
    /// IOAPIC base (0xfec00000).
    pub io_apic_address: u32,
    /// First GSI of the IOAPIC.
    pub io_apic_gsi_base: u32,
    /// Interrupt source overrides.
    pub overrides: &'a [InterruptOverride],
    /// The LINT input wired to NMI (1 on PCs).
    pub nmi_lint: u8,
}

impl MadtConfig<'_> {
    /// Whether the processor entries must be x2APIC ones.
    pub fn uses_x2apic(&self) -> bool {
        self.apic_ids.iter().any(|&id| id >= 0xff) || self.apic_ids.len() > 255
    }

    /// The MADT's length.
    pub fn len(&self) -> usize {
        let (cpu, nmi) = if self.uses_x2apic() { (16, 12) } else { (8, 6) };
        HEADER_SIZE + 8 + cpu * self.apic_ids.len() + 12 + 10 * self.overrides.len() + nmi
    }

    /// Whether there are no processors (never a valid machine).
    pub fn is_empty(&self) -> bool {
        self.apic_ids.is_empty()
    }
}

/// Writes the MADT (`len` from [`MadtConfig::len`]).
pub fn madt(out: &mut [u8], oem: &OemInfo, config: &MadtConfig<'_>) -> Result<(), AcpiError> {
    let len = config.len();
    out[..len].fill(0);
    header(out, b"APIC", len, MADT_REVISION, oem)?;
    put32(out, 36, config.local_apic_address);
    put32(
        out,
        40,
        if config.pcat_compat {
            MADT_PCAT_COMPAT
        } else {
            0
        },
    );
    // Each entry is assembled whole and copied once: a bounds check per
    // entry rather than per field.
    let mut at = HEADER_SIZE + 8;
    let mut append = |entry: &[u8]| {
        out[at..at + entry.len()].copy_from_slice(entry);
        at += entry.len();
    };
    let x2apic = config.uses_x2apic();
    let [e0, e1, e2, e3] = LAPIC_ENABLED.to_le_bytes();
    for (uid, &id) in config.apic_ids.iter().enumerate() {
        if x2apic {
            let [i0, i1, i2, i3] = id.to_le_bytes();
            let [u0, u1, u2, u3] = (uid as u32).to_le_bytes();
            let kind = MADT_LOCAL_X2APIC;
            append(&[
                kind, 16, 0, 0, i0, i1, i2, i3, e0, e1, e2, e3, u0, u1, u2, u3,
            ]);
        } else {
            append(&[MADT_LOCAL_APIC, 8, uid as u8, id as u8, e0, e1, e2, e3]);
        }
    }
    let [a0, a1, a2, a3] = config.io_apic_address.to_le_bytes();
    let [g0, g1, g2, g3] = config.io_apic_gsi_base.to_le_bytes();
    let id = config.io_apic_id;
    append(&[MADT_IO_APIC, 12, id, 0, a0, a1, a2, a3, g0, g1, g2, g3]);
    for o in config.overrides {
        let [g0, g1, g2, g3] = o.gsi.to_le_bytes();
        let [f0, f1] = o.flags().to_le_bytes();
        // Bus 0: ISA.
        let kind = MADT_INTERRUPT_OVERRIDE;
        append(&[kind, 10, 0, o.irq, g0, g1, g2, g3, f0, f1]);
    }
    let lint = config.nmi_lint;
    if x2apic {
        // Flags 0 (conforming: edge, active high), all processors, LINT#,
        // 3 reserved bytes.
        let (kind, all) = (MADT_LOCAL_X2APIC_NMI, 0xff);
        append(&[kind, 12, 0, 0, all, all, all, all, lint, 0, 0, 0]);
    } else {
        // All processors, flags 0 (conforming), LINT#.
        append(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, lint]);
    }
    Ok(())
}

/// The HPET's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HpetConfig {
    /// Event Timer Block ID: the low 32 bits of the HPET's capabilities
    /// register (revision, timer count, counter size, legacy replacement,
    /// vendor).
    pub event_timer_block_id: u32,
    /// Base of its registers (0xfed00000).
    pub address: u64,
    /// Minimum clock tick in periodic mode.
    pub min_tick: u16,
}

/// Writes the HPET table (revision 1).
pub fn hpet(out: &mut [u8], oem: &OemInfo, config: &HpetConfig) -> Result<(), AcpiError> {
    out[..HPET_SIZE].fill(0);
    header(out, b"HPET", HPET_SIZE, 1, oem)?;
    put32(out, 36, config.event_timer_block_id);
    GenericAddress {
        space_id: 0,
        bit_width: 64,
        bit_offset: 0,
        access_size: 0,
        address: config.address,
    }
    .write(out, 40);
    out[52] = 0; // HPET number
    put16(out, 53, config.min_tick);
    out[55] = 0; // no page protection
    Ok(())
}

/// The PCI Express memory-mapped configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McfgConfig {
    /// Base of the ECAM window (bus 0's configuration space).
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// First bus decoded.
    pub bus_start: u8,
    /// Last bus decoded.
    pub bus_end: u8,
}

/// Writes the MCFG (revision 1, one allocation).
pub fn mcfg(out: &mut [u8], oem: &OemInfo, config: &McfgConfig) -> Result<(), AcpiError> {
    if config.bus_end < config.bus_start {
        return Err(AcpiError::BadRange {
            start: config.bus_start.into(),
            end: config.bus_end.into(),
        });
    }
    out[..MCFG_SIZE].fill(0);
    header(out, b"MCFG", MCFG_SIZE, 1, oem)?;
    put64(out, 44, config.base);
    put16(out, 52, config.segment);
    out[54] = config.bus_start;
    out[55] = config.bus_end;
    Ok(())
}
