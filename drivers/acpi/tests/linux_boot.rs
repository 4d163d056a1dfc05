//! Debian's Linux 6.1 booted with ponte's loader and ACPI tables, under
//! QEMU's PC machine (i440FX + PIIX4, whose PM registers sit at 0x600) with
//! two vCPUs, the second brought up from the MADT.
//!
//! The loader and the table builder fill a model of guest memory; every
//! page they wrote is handed to QEMU with `-device loader` (applied at
//! reset, before the firmware runs), and a boot sector puts the CPU in the
//! entry state the loader describes: 32-bit protected mode with EBX for
//! PVH, or long mode on the loader's page tables and GDT with RSI for a
//! bzImage. The firmware's own ACPI tables are ignored by Linux, which gets
//! the RSDP from the loader. The initramfs prints a marker and powers off
//! through `\_S5` and PM1a_CNT, which ends QEMU.
//!
//! Needs `qemu-system-x86_64` and three files named by environment
//! variables: `PONTE_BUSYBOX` (a static busybox), and `PONTE_LINUX_VMLINUX`
//! and/or `PONTE_LINUX_BZIMAGE`; each test is skipped with a message when
//! what it needs is missing.

use ponte_acpi::tables::{BOOT_ARCH_8042, BOOT_ARCH_LEGACY_DEVICES, BOOT_ARCH_VGA_NOT_PRESENT};
use ponte_acpi::{
    AcpiConfig, DsdtConfig, FadtConfig, HpetConfig, InterruptOverride, IoWindow, MadtConfig,
    MmioWindow, OemInfo, PciRoot, VirtioMmio,
};
use ponte_kernel::loader::linux::{
    self, BootArea, LinuxConfig, LinuxEntry, LoadedLinux, MemoryRegion, MemoryType,
};
use ponte_kernel::loader::{Module, RamRange};
use ponte_kernel::memory::{GuestMemory, MemoryError};
use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Guest RAM as the loader sees it: the firmware keeps the EBDA from
/// 0x9fc00 and its high tables near the top of QEMU's 256 MiB, so the guest
/// is given less.
const RAM: [RamRange; 2] = [
    RamRange::new(0, 0x9_fc00),
    RamRange::new(0x10_0000, 0xc00_0000 - 0x10_0000),
];
/// Above 1 MiB: the firmware's stack and data live below.
const BOOT_AREA: BootArea = BootArea {
    boot_info: 0x20_0000,
    cmdline: 0x20_1000,
    page_tables: 0x20_2000,
    gdt: 0x20_8000,
};
const ACPI_BASE: u64 = 0x30_0000;
const ACPI_SIZE: u64 = 0x1_0000;
const MARKER: &str = "PONTE-USERSPACE-OK";

/// One RAM range's bytes and which of its pages were written.
struct TrackedRange {
    range: RamRange,
    bytes: RefCell<Vec<u8>>,
    dirty: RefCell<Vec<bool>>,
}

/// Guest memory remembering which pages were written.
struct TrackedMemory {
    ranges: Vec<TrackedRange>,
}

impl TrackedMemory {
    fn new(ram: &[RamRange]) -> Self {
        Self {
            ranges: ram
                .iter()
                .map(|r| {
                    let len = r.len as usize;
                    TrackedRange {
                        range: *r,
                        bytes: RefCell::new(vec![0; len]),
                        dirty: RefCell::new(vec![false; len.div_ceil(4096)]),
                    }
                })
                .collect(),
        }
    }

    /// Runs of written pages as (guest address, bytes).
    fn written(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for t in &self.ranges {
            let (r, data, dirty) = (t.range, t.bytes.borrow(), t.dirty.borrow());
            let mut page = 0;
            while page < dirty.len() {
                if !dirty[page] {
                    page += 1;
                    continue;
                }
                let first = page;
                while page < dirty.len() && dirty[page] {
                    page += 1;
                }
                let bytes = data[first * 4096..(page * 4096).min(data.len())].to_vec();
                out.push((r.start + first as u64 * 4096, bytes));
            }
        }
        out
    }
}

impl GuestMemory for TrackedMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        let t = self
            .ranges
            .iter()
            .find(|t| t.range.contains(addr, len))
            .ok_or(MemoryError::NotRam { addr, len })?;
        let off = (addr - t.range.start) as usize;
        buf.copy_from_slice(&t.bytes.borrow()[off..off + buf.len()]);
        Ok(())
    }
    fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let len = bytes.len() as u64;
        let t = self
            .ranges
            .iter()
            .find(|t| t.range.contains(addr, len))
            .ok_or(MemoryError::NotRam { addr, len })?;
        let off = (addr - t.range.start) as usize;
        t.bytes.borrow_mut()[off..off + bytes.len()].copy_from_slice(bytes);
        let last = off + bytes.len().max(1) - 1;
        t.dirty.borrow_mut()[off / 4096..=last / 4096].fill(true);
        Ok(())
    }
}

/// A newc cpio archive with /dev/console, busybox and an /init script.
fn initramfs(busybox: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut inode = 100u32;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)| {
        inode += 1;
        let fields = [
            inode,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    // Prints the marker and the ACPI devices Linux enumerated from the
    // DSDT, then powers off.
    let init = [
        "#!/bin/busybox sh",
        &format!("/bin/busybox echo {MARKER}"),
        "/bin/busybox mkdir /sys",
        "/bin/busybox mount -t sysfs sysfs /sys",
        "/bin/busybox ls /sys/bus/acpi/devices",
        "/bin/busybox poweroff -f",
        "",
    ]
    .join("\n");
    entry(&mut out, "dev", 0o040755, &[], (0, 0));
    entry(&mut out, "dev/console", 0o020600, &[], (5, 1));
    entry(&mut out, "bin", 0o040755, &[], (0, 0));
    entry(&mut out, "bin/busybox", 0o100755, busybox, (0, 0));
    entry(&mut out, "init", 0o100755, init.as_bytes(), (0, 0));
    entry(&mut out, "TRAILER!!!", 0, &[], (0, 0));
    out
}

/// Tables describing QEMU's PC machine.
fn tables(mem: &TrackedMemory) -> u64 {
    static OVERRIDES: [InterruptOverride; 2] = InterruptOverride::pc_defaults(9);
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
    static MMIO: [MmioWindow; 1] = [MmioWindow {
        start: 0xc000_0000,
        end: 0xfebf_ffff,
    }];
    // No device answers there: Linux enumerates it all the same.
    static VIRTIO: [VirtioMmio; 1] = [VirtioMmio {
        base: 0xd000_0000,
        len: 0x200,
        gsi: 5,
        edge: true,
    }];
    let config = AcpiConfig {
        oem: OemInfo {
            oem_id: *b"PONTE ",
            oem_table_id: *b"PONTEVM ",
            oem_revision: 1,
            creator_id: *b"PNTE",
            creator_revision: 1,
        },
        madt: MadtConfig {
            apic_ids: &[0, 1],
            local_apic_address: 0xfee0_0000,
            pcat_compat: true,
            io_apic_id: 0,
            io_apic_address: 0xfec0_0000,
            io_apic_gsi_base: 0,
            overrides: &OVERRIDES,
            nmi_lint: 1,
        },
        fadt: FadtConfig {
            sci_irq: 9,
            pm1a_event_block: 0x600,
            pm1a_control_block: 0x604,
            pm_timer_block: Some(0x608),
            reset: Some((0xcf9, 6)),
            boot_arch: BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_VGA_NOT_PRESENT | BOOT_ARCH_8042,
        },
        hpet: Some(HpetConfig {
            event_timer_block_id: 0x8086_a201,
            address: 0xfed0_0000,
            min_tick: 128,
        }),
        mcfg: None,
        dsdt: DsdtConfig {
            pci: Some(PciRoot {
                segment: 0,
                bus_start: 0,
                bus_end: 0xff,
                io_windows: &IO,
                mmio_windows: &MMIO,
                irq_routes: &[],
            }),
            com1: true,
            virtio_mmio: &VIRTIO,
            // PIIX4 powers off on SLP_TYP 0.
            s5_sleep_type: 0,
        },
    };
    let mut scratch = vec![0u8; ACPI_SIZE as usize];
    ponte_acpi::write(mem, &config, ACPI_BASE, &mut scratch)
        .unwrap()
        .rsdp
}

/// A boot sector (loaded at 0x7c00, entered in real mode) that sets up the
/// loader's entry state and jumps to the kernel.
fn boot_sector(entry: &LinuxEntry) -> Vec<u8> {
    const ORIGIN: u32 = 0x7c00;
    const GDT_AT: usize = 0x100;
    const GDTR_AT: usize = 0x120;
    let mut s = Vec::new();
    let imm32 = |s: &mut Vec<u8>, v: u32| s.extend_from_slice(&v.to_le_bytes());
    s.extend_from_slice(&[0xfa, 0x31, 0xc0, 0x8e, 0xd8]); // cli; xor ax,ax; mov ds,ax
    s.extend_from_slice(&[0x66, 0x0f, 0x01, 0x16]); // lgdtl [gdtr]
    s.extend_from_slice(&(ORIGIN as u16 + GDTR_AT as u16).to_le_bytes());
    let (gdt_base, gdt_limit) = match entry {
        LinuxEntry::Pvh(e) => {
            s.extend_from_slice(&[0x0f, 0x20, 0xc0]); // mov eax,cr0
            s.extend_from_slice(&[0x66, 0x83, 0xc8, 0x01]); // or eax,1
            s.extend_from_slice(&[0x0f, 0x22, 0xc0]); // mov cr0,eax
            s.extend_from_slice(&[0x66, 0xea]); // ljmpl 0x08:next
            let next = ORIGIN + s.len() as u32 + 6;
            imm32(&mut s, next);
            s.extend_from_slice(&[0x08, 0x00]);
            // 32-bit: flat data segments, EBX, jump to the entry.
            s.extend_from_slice(&[0x66, 0xb8, 0x10, 0x00]); // mov ax,0x10
            for sreg in [0xd8, 0xc0, 0xd0, 0xe0, 0xe8] {
                s.extend_from_slice(&[0x8e, sreg]); // mov ds/es/ss/fs/gs,ax
            }
            s.push(0xbb); // mov ebx,imm32
            imm32(&mut s, e.ebx);
            s.push(0xb8); // mov eax,imm32
            imm32(&mut s, e.eip);
            s.extend_from_slice(&[0xff, 0xe0]); // jmp eax
            (ORIGIN + GDT_AT as u32, 23u16)
        }
        LinuxEntry::Long64(e) => {
            s.extend_from_slice(&[0x66, 0xb8]); // mov eax,imm32
            imm32(&mut s, e.cr3 as u32);
            s.extend_from_slice(&[0x0f, 0x22, 0xd8]); // mov cr3,eax
            s.extend_from_slice(&[0x0f, 0x20, 0xe0]); // mov eax,cr4
            s.extend_from_slice(&[0x66, 0x83, 0xc8, 0x20]); // or eax,PAE
            s.extend_from_slice(&[0x0f, 0x22, 0xe0]); // mov cr4,eax
            s.extend_from_slice(&[0x66, 0xb9, 0x80, 0x00, 0x00, 0xc0]); // mov ecx,EFER
            s.extend_from_slice(&[0x0f, 0x32]); // rdmsr
            s.extend_from_slice(&[0x66, 0x0d, 0x00, 0x01, 0x00, 0x00]); // or eax,LME
            s.extend_from_slice(&[0x0f, 0x30]); // wrmsr
            s.extend_from_slice(&[0x0f, 0x20, 0xc0]); // mov eax,cr0
            s.extend_from_slice(&[0x66, 0x0d, 0x01, 0x00, 0x00, 0x80]); // or eax,PE|PG
            s.extend_from_slice(&[0x0f, 0x22, 0xc0]); // mov cr0,eax
            s.extend_from_slice(&[0x66, 0xea]); // ljmpl __BOOT_CS:next
            let next = ORIGIN + s.len() as u32 + 6;
            imm32(&mut s, next);
            s.extend_from_slice(&e.cs.selector.to_le_bytes());
            // 64-bit: __BOOT_DS, RSI, jump to the entry.
            s.extend_from_slice(&[0x66, 0xb8]); // mov ax,imm16
            s.extend_from_slice(&e.ds.selector.to_le_bytes());
            for sreg in [0xd8, 0xc0, 0xd0] {
                s.extend_from_slice(&[0x8e, sreg]); // mov ds/es/ss,ax
            }
            s.push(0xbe); // mov esi,imm32 (zero-extended into RSI)
            imm32(&mut s, e.rsi as u32);
            s.push(0xb8); // mov eax,imm32
            imm32(&mut s, e.rip as u32);
            s.extend_from_slice(&[0xff, 0xe0]); // jmp rax
            (e.gdtr_base as u32, e.gdtr_limit)
        }
    };
    assert!(s.len() <= GDT_AT);
    s.resize(512, 0);
    // Flat 32-bit code (0x08) and data (0x10) for the PVH path.
    s[GDT_AT + 8..GDT_AT + 16].copy_from_slice(&0x00cf_9b00_0000_ffffu64.to_le_bytes());
    s[GDT_AT + 16..GDT_AT + 24].copy_from_slice(&0x00cf_9300_0000_ffffu64.to_le_bytes());
    s[GDTR_AT..GDTR_AT + 2].copy_from_slice(&gdt_limit.to_le_bytes());
    s[GDTR_AT + 2..GDTR_AT + 6].copy_from_slice(&gdt_base.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

fn input(var: &str) -> Option<Vec<u8>> {
    match std::env::var(var) {
        Ok(path) => Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{var}={path}: {e}"))),
        Err(_) => {
            // Written to the stream itself: the harness would hide eprintln!.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: set {var} to run this boot test"
            );
            None
        }
    }
}

fn qemu_present() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        let _ = writeln!(std::io::stderr(), "SKIPPED: qemu-system-x86_64 not found");
    }
    ok
}

/// Loads `kernel` with tables and initramfs, boots it under QEMU and
/// returns the serial console's output.
fn boot(kernel_var: &str, name: &str) -> Option<(LoadedLinux, String)> {
    let kernel = input(kernel_var)?;
    let busybox = input("PONTE_BUSYBOX")?;
    if !qemu_present() {
        return None;
    }
    let mem = TrackedMemory::new(&RAM);
    let rsdp = tables(&mem);
    let initrd = initramfs(&busybox);
    let reserved = [
        MemoryRegion::new(ACPI_BASE, ACPI_SIZE, MemoryType::Acpi),
        MemoryRegion::new(0xfec0_0000, 0x1000, MemoryType::Reserved),
        MemoryRegion::new(0xfed0_0000, 0x1000, MemoryType::Reserved),
        MemoryRegion::new(0xfee0_0000, 0x1000, MemoryType::Reserved),
    ];
    let loaded = linux::load(
        &mem,
        &LinuxConfig {
            kernel: &kernel,
            cmdline: "console=ttyS0,115200 rdinit=/init panic=-1",
            initrd: Some(Module {
                data: &initrd,
                cmdline: "initramfs",
            }),
            ram: &RAM,
            reserved: &reserved,
            rsdp: Some(rsdp),
            boot_area: BOOT_AREA,
        },
    )
    .unwrap();

    let dir: PathBuf =
        std::env::temp_dir().join(format!("ponte-linux-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("boot.img");
    let mut sector = boot_sector(&loaded.entry);
    sector.resize(1 << 20, 0);
    std::fs::write(&disk, sector).unwrap();
    let serial = dir.join("serial.log");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-M", "pc", "-m", "256", "-smp", "2", "-nodefaults"])
        .args(["-display", "none"])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide", disk.display()));
    for (i, (addr, bytes)) in mem.written().iter().enumerate() {
        let blob = dir.join(format!("blob{i}.bin"));
        std::fs::write(&blob, bytes).unwrap();
        cmd.arg("-device").arg(format!(
            "loader,file={},addr={addr:#x},force-raw=on",
            blob.display()
        ));
    }
    let status = run_with_timeout(&mut cmd, Duration::from_secs(180));
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status, "QEMU did not power off in time:\n{log}");
    Some((loaded, log))
}

/// Runs `cmd`, killing it after `limit`; whether it exited successfully.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> bool {
    let mut child = cmd.spawn().expect("qemu-system-x86_64 starts");
    let step = Duration::from_millis(200);
    for _ in 0..(limit.as_millis() / step.as_millis()) {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(step);
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn check_log(log: &str, initrd_start: u64) {
    for expected in [
        "BIOS-e820: [mem 0x0000000000300000-0x000000000030ffff] ACPI data",
        "BIOS-e820: [mem 0x00000000000a0000-0x00000000000fffff] reserved",
        "ACPI: RSDP 0x0000000000300000 000024 (v02 PONTE )",
        "ACPI: FACP 0x",
        "ACPI: INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2 dfl dfl)",
        "ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 low level)",
        "ACPI: LAPIC_NMI (acpi_id[0xff] dfl dfl lint[0x1])",
        "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])",
        "smp: Brought up 1 node, 2 CPUs",
        "Command line: console=ttyS0,115200 rdinit=/init panic=-1",
        MARKER,
        "PNP0A03:00",
        "PNP0501:00",
        "LNRO0005:00",
        "ACPI: PM: Preparing to enter system sleep state S5",
    ] {
        assert!(
            log.contains(expected),
            "boot log lacks `{expected}`:\n{log}"
        );
    }
    let ramdisk = format!("RAMDISK: [mem {initrd_start:#010x}-");
    assert!(log.contains(&ramdisk), "boot log lacks `{ramdisk}`:\n{log}");
}

#[test]
fn debian_vmlinux_boots_through_pvh() {
    let Some((loaded, log)) = boot("PONTE_LINUX_VMLINUX", "pvh") else {
        return;
    };
    assert!(matches!(loaded.entry, LinuxEntry::Pvh(_)));
    check_log(&log, loaded.initrd.unwrap().start);
}

#[test]
fn debian_bzimage_boots_through_the_64_bit_entry() {
    let Some((loaded, log)) = boot("PONTE_LINUX_BZIMAGE", "bzimage") else {
        return;
    };
    assert!(matches!(loaded.entry, LinuxEntry::Long64(_)));
    check_log(&log, loaded.initrd.unwrap().start);
}
