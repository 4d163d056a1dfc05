//! An appliance's boot sequence for a Linux guest: ACPI tables at the top of
//! RAM, an MP table at the end of base memory, both reserved in the memory
//! map, then a PVH `vmlinux` loaded with the RSDP address; checked by
//! reading guest memory back as Linux would.

use ponte_acpi::tables::BOOT_ARCH_LEGACY_DEVICES;
use ponte_acpi::{
    mptable, AcpiConfig, DsdtConfig, FadtConfig, InterruptOverride, MadtConfig, OemInfo,
};
use ponte_kernel::loader::linux::{
    self, BootArea, LinuxConfig, LinuxEntry, MemoryRegion, MemoryType,
};
use ponte_kernel::loader::{Module, RamRange};
use ponte_kernel::memory::{GuestMemory, MemoryError};
use std::cell::RefCell;

const LOW: RamRange = RamRange::new(0, 0xa_0000);
const HIGH: RamRange = RamRange::new(0x10_0000, 0x3f0_0000); // to 64 MiB
const RAM: [RamRange; 2] = [LOW, HIGH];
const ACPI_BASE: u64 = 0x3ff_0000;
const ACPI_SIZE: u64 = 0x1_0000;
const MP_BASE: u64 = 0x9_fc00;
const KERNEL_PADDR: u64 = 0x100_0000;
const KERNEL_ENTRY: u64 = KERNEL_PADDR + 0x850;

struct Ram(Vec<(RamRange, RefCell<Vec<u8>>)>);

impl GuestMemory for Ram {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        let (r, data) = self
            .0
            .iter()
            .find(|(r, _)| r.contains(addr, len))
            .ok_or(MemoryError::NotRam { addr, len })?;
        let off = (addr - r.start) as usize;
        buf.copy_from_slice(&data.borrow()[off..off + buf.len()]);
        Ok(())
    }
    fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let len = bytes.len() as u64;
        let (r, data) = self
            .0
            .iter()
            .find(|(r, _)| r.contains(addr, len))
            .ok_or(MemoryError::NotRam { addr, len })?;
        let off = (addr - r.start) as usize;
        data.borrow_mut()[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

impl Ram {
    fn u32(&self, addr: u64) -> u32 {
        let mut b = [0; 4];
        self.read(addr, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn u64(&self, addr: u64) -> u64 {
        let mut b = [0; 8];
        self.read(addr, &mut b).unwrap();
        u64::from_le_bytes(b)
    }
}

/// A minimal ELF64 `vmlinux`: one PT_LOAD at `KERNEL_PADDR` and a PT_NOTE
/// holding the Xen PVH entry note (8-byte descriptor, as Linux 6.1 has).
fn vmlinux() -> Vec<u8> {
    let mut f = vec![0u8; 0x2000];
    f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    let put = |f: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        f[off..off + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut f, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut f, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut f, 54, &56u16.to_le_bytes());
    put(&mut f, 56, &2u16.to_le_bytes());
    // PT_LOAD: file 0x1000..0x2000 at KERNEL_PADDR, 0x4000 in memory.
    put(&mut f, 64, &1u32.to_le_bytes());
    put(&mut f, 64 + 8, &0x1000u64.to_le_bytes());
    put(&mut f, 64 + 24, &KERNEL_PADDR.to_le_bytes());
    put(&mut f, 64 + 32, &0x1000u64.to_le_bytes());
    put(&mut f, 64 + 40, &0x4000u64.to_le_bytes());
    // PT_NOTE at 0x200: namesz 4, descsz 8, type 18, "Xen\0", entry.
    put(&mut f, 120, &4u32.to_le_bytes());
    put(&mut f, 120 + 8, &0x200u64.to_le_bytes());
    put(&mut f, 120 + 32, &24u64.to_le_bytes());
    put(&mut f, 0x200, &4u32.to_le_bytes());
    put(&mut f, 0x204, &8u32.to_le_bytes());
    put(&mut f, 0x208, &18u32.to_le_bytes());
    put(&mut f, 0x20c, b"Xen\0");
    put(&mut f, 0x210, &KERNEL_ENTRY.to_le_bytes());
    f
}

#[test]
fn acpi_mp_table_and_pvh_kernel_share_one_memory_map() {
    let mem = Ram(RAM
        .iter()
        .map(|r| (*r, RefCell::new(vec![0; r.len as usize])))
        .collect());

    // 1. ACPI tables at the top of RAM.
    let overrides = InterruptOverride::pc_defaults(9);
    let acpi_config = AcpiConfig {
        oem: OemInfo {
            oem_id: *b"PONTE ",
            oem_table_id: *b"PONTEVM ",
            oem_revision: 1,
            creator_id: *b"PNTE",
            creator_revision: 1,
        },
        madt: MadtConfig {
            apic_ids: &[0],
            local_apic_address: 0xfee0_0000,
            pcat_compat: true,
            io_apic_id: 1,
            io_apic_address: 0xfec0_0000,
            io_apic_gsi_base: 0,
            overrides: &overrides,
            nmi_lint: 1,
        },
        fadt: FadtConfig {
            sci_irq: 9,
            pm1a_event_block: 0x600,
            pm1a_control_block: 0x604,
            pm_timer_block: None,
            reset: None,
            boot_arch: BOOT_ARCH_LEGACY_DEVICES,
        },
        hpet: None,
        mcfg: None,
        dsdt: DsdtConfig {
            pci: None,
            com1: true,
            virtio_mmio: &[],
            s5_sleep_type: 5,
        },
    };
    let mut scratch = vec![0u8; ACPI_SIZE as usize];
    let acpi = ponte_acpi::write(&mem, &acpi_config, ACPI_BASE, &mut scratch).unwrap();
    assert!(acpi.len <= ACPI_SIZE);

    // 2. The MP table at the end of base memory.
    let mp_config = mptable::MpConfig {
        oem_id: *b"PONTE   ",
        product_id: *b"PONTEVM     ",
        apic_ids: &[0],
        cpu_signature: 0x600,
        cpu_features: 0x201,
        local_apic_address: 0xfee0_0000,
        io_apic_id: 1,
        io_apic_address: 0xfec0_0000,
        pci_routes: &[],
    };
    let mp = mptable::write(&mem, &mp_config, MP_BASE, &mut scratch).unwrap();

    // 3. The kernel, told where the RSDP is, with both regions reserved.
    let reserved = [
        MemoryRegion::new(MP_BASE, 0xa_0000 - MP_BASE, MemoryType::Reserved),
        MemoryRegion::new(ACPI_BASE, ACPI_SIZE, MemoryType::Acpi),
        MemoryRegion::new(0xfec0_0000, 0x1000, MemoryType::Reserved),
        MemoryRegion::new(0xfee0_0000, 0x1000, MemoryType::Reserved),
    ];
    let kernel = vmlinux();
    let initrd = vec![0x5au8; 0x3000];
    let loaded = linux::load(
        &mem,
        &LinuxConfig {
            kernel: &kernel,
            cmdline: "console=ttyS0 rdinit=/init",
            initrd: Some(Module {
                data: &initrd,
                cmdline: "",
            }),
            ram: &RAM,
            reserved: &reserved,
            rsdp: Some(acpi.rsdp),
            boot_area: BootArea::LOW_MEMORY,
        },
    )
    .unwrap();
    let LinuxEntry::Pvh(entry) = loaded.entry else {
        panic!("PVH expected")
    };
    assert_eq!(u64::from(entry.eip), KERNEL_ENTRY);

    // What Linux reads: the RSDP from hvm_start_info, the tables behind it
    // untouched by the loader, and a memory map keeping them reserved.
    let start_info = u64::from(entry.ebx);
    assert_eq!(mem.u64(start_info + 32), acpi.rsdp);
    let mut rsdp = [0u8; 8];
    mem.read(acpi.rsdp, &mut rsdp).unwrap();
    assert_eq!(&rsdp, b"RSD PTR ");
    assert_eq!(mem.u64(acpi.rsdp + 24), acpi.xsdt);
    assert_eq!(mem.u32(acpi.xsdt), u32::from_le_bytes(*b"XSDT"));
    assert_eq!(mem.u32(mp.floating_pointer), u32::from_le_bytes(*b"_MP_"));
    let memmap = mem.u64(start_info + 40);
    let entries: Vec<(u64, u64, u32)> = (0..u64::from(mem.u32(start_info + 48)))
        .map(|i| {
            let e = memmap + 24 * i;
            (mem.u64(e), mem.u64(e + 8), mem.u32(e + 16))
        })
        .collect();
    assert_eq!(
        entries,
        [
            (0, MP_BASE, 1),
            (MP_BASE, 0x10_0000 - MP_BASE, 2),
            (0x10_0000, ACPI_BASE - 0x10_0000, 1),
            (ACPI_BASE, ACPI_SIZE, 3),
            (0xfec0_0000, 0x1000, 2),
            (0xfee0_0000, 0x1000, 2),
        ]
    );
    let initrd_at = loaded.initrd.unwrap();
    assert!(initrd_at.end <= ACPI_BASE);
}
