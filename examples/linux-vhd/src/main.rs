//! linux-vhd: Debian's stock Linux kernel under ponte.
//!
//! Boot modules (GRUB `module2`, named by their first word):
//! - `vmlinux`: the uncompressed kernel, entered through its PVH note;
//! - `initramfs`: handed to the kernel as its initrd;
//! - `disk` (optional): a VHD image, copied into host memory and offered to
//!   the guest as a virtio-blk disk on PCI.
//!
//! The board: guest RAM at 0, ACPI tables (RSDP, XSDT, FADT with the PM1a
//! blocks, MADT, DSDT with the PCI root, COM1 and `\_S5`) at its top, the
//! 8259A pair, IOAPIC and local APIC, PIT, CMOS RTC, a 16550 on COM1 whose
//! output goes to the appliance's console as the guest writes it, the PM1a
//! registers, and a PCI host bridge (configuration mechanism #1).
//!
//! The run ends when the guest powers off (`\_S5` through PM1a_CNT): the
//! disk is flushed, and the result line says how far the guest got.
//! Command-line word: `stats` prints exit counts.
//!
//! Boot time is measured inside the run, as on the bare machine (the
//! linux-native image): the image prints `kernel entry tsc N` just before
//! the first VM entry, the guest's init prints its own TSC; the guest's
//! TSC is the host's (the VMCS TSC offset stays 0, checked and printed as
//! `guest tsc offset N` at the end).
#![no_std]
#![no_main]

mod board;
mod disk;
mod platform;
mod pm;

/// The firmware tables, built from [`platform`] by the build script.
mod firmware_tables {
    include!(concat!(env!("OUT_DIR"), "/firmware_tables.rs"));
}

use ponte_arch::{
    boot::{finish, BootInfo, ErrorReport, Outcome, Verbatim},
    ept::{EptTables, MemoryType, UniformHostMemory},
    memory::HostMemory,
    or_fail, println,
    vmx::{
        controls::PinControl,
        vmcs::{Control64, GuestN, ReadOnly32, ReadOnlyN},
        GuestState, MsrBitmap, Vcpu, VmcsExt,
    },
};
use ponte_kernel::{
    cpu_state::Cr4Policy,
    cpuid::{CpuidPolicy, CpuidResult, GuestCpu, TIMING_LEAF},
    loader::{
        linux::{self, BootArea, LinuxConfig, LinuxEntry, MemoryRegion, MemoryType as E820},
        Module, RamRange,
    },
    memory::{GuestLayout, GuestMemory},
    time::TscClock,
    vcpu::{
        apicv::{ApicVirtualization, VirtualApic},
        Dispatcher, PreemptionTimer, Stop, StopRequest,
    },
    vm::{appliance_controls, configure_vmcs},
};

use board::{Board, Dev};
use firmware_tables::{ACPI_TABLES, RSDP, SMBIOS_TABLES};
pub use platform::*;

ponte_arch::entry!(main);

/// The LAPIC timer's input clock and the core crystal CPUID 0x15 names.
pub const CRYSTAL_HZ: u64 = 25_000_000;
/// The kernel's command line.
///
/// `tsc=reliable`: every clock of this board (PIT, RTC, LAPIC timer) is
/// derived from the TSC, so the TSC cannot drift against them; Linux's
/// clocksource watchdog would otherwise compare it with jiffies, which lag
/// whenever ticks coalesce while the guest keeps interrupts off.
const CMDLINE: &str = "console=ttyS0,115200 rdinit=/init panic=-1 tsc=reliable";

fn main(boot: BootInfo, mut memory: HostMemory) -> ! {
    let free_at_start = memory.free_bytes();
    let Some(kernel) = boot.module("vmlinux") else {
        finish(Outcome::Fail, format_args!("no vmlinux module"))
    };
    let Some(initramfs) = boot.module("initramfs") else {
        finish(Outcome::Fail, format_args!("no initramfs module"))
    };
    let kernel = kernel.bytes();
    let initramfs = initramfs.bytes();
    let extra_cmdline = boot
        .command_line
        .split_once("--")
        .map_or("", |(_, after)| after.trim_ascii());
    let tsc_hz = ponte_arch::cpu::tsc_hz();
    println!(
        "linux-vhd: kernel {} bytes, initramfs {} bytes, TSC {} Hz",
        kernel.len(),
        initramfs.len(),
        tsc_hz
    );

    let vmx = or_fail!(memory.enable_vmx(), "VMX bring-up");
    let caps = vmx.caps();
    let ram = or_fail!(memory.ram(GUEST_RAM, 2 << 20), "guest RAM");
    let mut layout: GuestLayout<_, Dev, 8> = GuestLayout::new();
    or_fail!(layout.add_ram(0, ram), "layout");
    or_fail!(
        layout.add_mmio(IOAPIC_BASE, APIC_WINDOW_SIZE, Dev::IoApic),
        "layout"
    );
    or_fail!(
        layout.add_mmio(LAPIC_BASE, APIC_WINDOW_SIZE, Dev::Lapic),
        "layout"
    );
    or_fail!(
        layout.add_mmio(PCI_MMIO_BASE, PCI_MMIO_SIZE, Dev::Pci),
        "layout"
    );
    or_fail!(
        layout.add_mmio(ECAM_BASE, ponte_pci::ECAM_BUS_SIZE, Dev::Ecam),
        "layout"
    );

    // The guest.
    or_fail!(layout.write(ACPI_BASE, ACPI_TABLES), "ACPI tables");
    or_fail!(layout.write(SMBIOS_BASE, SMBIOS_TABLES), "SMBIOS");
    let loaded = or_fail!(
        load_kernel(&layout, kernel, initramfs, RSDP, extra_cmdline),
        "loading Linux"
    );
    let LinuxEntry::Pvh(entry) = loaded.entry else {
        finish(Outcome::Fail, format_args!("the kernel has no PVH entry"))
    };
    println!(
        "linux-vhd: kernel at {:#x}..{:#x}, entry {:#x}",
        loaded.kernel_start, loaded.kernel_end, entry.eip
    );
    if let Some(initrd) = loaded.initrd {
        println!(
            "linux-vhd: initramfs at {:#x}..{:#x}",
            initrd.start, initrd.end
        );
    }
    let mut guest = or_fail!(
        GuestState::protected_mode_flat(caps, entry.eip, 0),
        "guest state"
    );
    guest.cr0 = entry.cr0;
    guest.cr4 = entry.cr4;
    guest.rflags = entry.rflags;

    // The disk, before the EPT tables take the rest of host memory.
    let mut table_words = [0u32; disk::TABLE_WORDS];
    let free_before_disk = memory.free_bytes();
    let (disk, persistence) = match disk::open(&boot, &mut memory, &mut table_words) {
        Some((disk, persistence)) => (Some(core::cell::RefCell::new(disk)), Some(persistence)),
        None => (None, None),
    };
    let disk_bytes = free_before_disk - memory.free_bytes();

    // The local APIC is virtualized as far as the processor allows.
    let settings = or_fail!(
        ApicVirtualization::best(caps)
            .require_controls(appliance_controls(false, false).prefer(PinControl::PreemptionTimer),)
            .reconcile(caps),
        "VMX controls"
    );
    let mut vcpu = or_fail!(
        Vcpu::new(&vmx, or_fail!(memory.page(), "VMCS page")),
        "VMCS"
    );
    let mut msr_bitmap = MsrBitmap::intercept_all(or_fail!(memory.page(), "MSR bitmap page"));
    let host = memory.host_state();
    let ept_caps = ponte_arch::ept::EptCapabilities::from_ept_vpid_cap(caps.ept_vpid.0, 39);
    let virtual_apic = or_fail!(
        VirtualApic::from_host_memory(
            ApicVirtualization::from_settings(&settings),
            &mut memory,
            LAPIC_BASE
        ),
        "APIC virtualization"
    );
    let mut ept = or_fail!(EptTables::new(&mut memory, ept_caps), "EPT");
    if let Some(apic) = &virtual_apic {
        or_fail!(apic.map_access_page(&mut ept), "APIC-access page");
    }
    or_fail!(
        layout.map_ram_into(&mut ept, &UniformHostMemory(MemoryType::WriteBack)),
        "EPT mapping"
    );
    or_fail!(
        configure_vmcs(
            vcpu.vmcs(),
            caps,
            &settings,
            &host,
            &guest,
            ept.eptp().bits(),
            &mut msr_bitmap
        ),
        "VMCS setup"
    );
    vcpu.regs_mut().rbx = u64::from(entry.ebx);

    let cpuid: CpuidPolicy<128> = or_fail!(cpuid_policy(tsc_hz), "CPUID policy");
    // CR4 writes of bits the guest's CPUID does not offer exit and get #GP;
    // the run loop performs the CR0/CR4 writes the masks catch.
    let cr4_policy = Cr4Policy::from_cpuid(&cpuid);
    or_fail!(cr4_policy.install(vcpu.vmcs()), "CR4 guest/host mask");
    let clock = TscClock::new(tsc_hz);
    let mut function = disk.as_ref().map(|disk| disk::function(disk, &layout));
    let mut board = or_fail!(Board::new(&clock, &layout, tsc_hz), "board");
    or_fail!(board.attach_pci(function.as_mut()), "PCI");
    // Everything taken from host memory except guest RAM and the disk's
    // own bytes, plus the image (code, data, stacks).
    let taken = free_at_start - ept.allocator().free_bytes();
    let overhead = taken - GUEST_RAM - disk_bytes + (boot.image.end - boot.image.start);
    println!("bench mem.hypervisor_overhead {overhead} bytes");

    let mut dispatch = Dispatcher::new(&cpuid, ept_caps.physical_address_bits)
        .with_preemption_timer(PreemptionTimer {
            rate: caps.misc.preemption_timer_rate,
            tsc_hz,
        })
        .with_control_registers(cr4_policy, [caps.cr0, caps.cr4])
        // The board's LAPIC has no x2APIC mode, so the x2APIC MSRs are
        // never virtualized.
        .with_virtual_apic(virtual_apic);
    vcpu.set_accounting(boot.has_argument("stats"));
    println!("kernel entry tsc {}", ponte_arch::cpu::tsc());
    let reason = match dispatch.run(&mut vcpu, &mut board) {
        Stop::Requested(StopRequest::PowerOff) => Verbatim("powered off"),
        Stop::Requested(StopRequest::Reset) => Verbatim("reset"),
        other => {
            let vmcs = vcpu.vmcs();
            let rip = vmcs.read(GuestN::Rip).unwrap_or(0);
            let exit = vmcs.read(ReadOnly32::ExitReason).unwrap_or(0);
            let qualification = vmcs.read(ReadOnlyN::ExitQualification).unwrap_or(0);
            println!("{}", vcpu.stats());
            board.report();
            finish(
                Outcome::Fail,
                format_args!(
                    "guest stopped at RIP {rip:#x}, exit reason {exit:#x}, qualification {qualification:#x}: {}",
                    ErrorReport(&other)
                ),
            )
        }
    };
    if boot.has_argument("stats") {
        println!("{}", vcpu.stats());
    }
    // The guest's TSC is the host's plus this offset: 0 unless the guest
    // wrote IA32_TSC, in which case its init line is on another clock.
    let tsc_offset = or_fail!(vcpu.vmcs().read(Control64::TscOffset), "TSC offset");
    println!("guest tsc offset {}", tsc_offset as i64);

    let disk_state = match &disk {
        Some(disk) => {
            let mut disk = disk.borrow_mut();
            or_fail!(disk.flush(), "flushing the disk");
            Some((
                disk.allocated_blocks(),
                Verbatim(persistence.map_or("", disk::Persistence::place)),
            ))
        }
        None => None,
    };
    match (board.init_printed(), disk_state) {
        (false, _) => finish(
            Outcome::Fail,
            format_args!("guest {reason} before init printed"),
        ),
        (true, Some((blocks, persistence))) => finish(
            Outcome::Pass,
            format_args!(
                "guest reached userspace and {reason}; disk flushed, {blocks} blocks allocated, writes kept in {persistence}"
            ),
        ),
        (true, None) => finish(
            Outcome::Pass,
            format_args!("guest reached userspace and {reason}"),
        ),
    }
}

/// Loads the kernel (an ELF vmlinux entered through its PVH note) and the
/// initramfs with the memory map of this board.
pub fn load_kernel(
    mem: &impl ponte_kernel::memory::GuestMemory,
    kernel: &[u8],
    initramfs: &[u8],
    rsdp: u64,
    extra_cmdline: &str,
) -> Result<linux::LoadedLinux, linux::LinuxError> {
    static RAM: [RamRange; 1] = [RamRange::new(0, GUEST_RAM)];
    static RESERVED: [MemoryRegion; 4] = [
        MemoryRegion::new(ACPI_BASE, ACPI_SIZE, E820::Acpi),
        MemoryRegion::new(IOAPIC_BASE, APIC_WINDOW_SIZE, E820::Reserved),
        MemoryRegion::new(LAPIC_BASE, APIC_WINDOW_SIZE, E820::Reserved),
        // Linux uses an MCFG window only if the memory map reserves it.
        MemoryRegion::new(ECAM_BASE, ponte_pci::ECAM_BUS_SIZE, E820::Reserved),
    ];
    let mut cmdline: heapless::String<512> = heapless::String::new();
    let _ = cmdline.push_str(CMDLINE);
    if !extra_cmdline.is_empty() {
        let _ = cmdline.push(' ');
        let _ = cmdline.push_str(extra_cmdline);
    }
    linux::pvh::load(
        mem,
        &LinuxConfig {
            kernel,
            cmdline: &cmdline,
            initrd: Some(Module {
                data: initramfs,
                cmdline: "initramfs",
            }),
            ram: &RAM,
            reserved: &RESERVED,
            rsdp: Some(rsdp),
            boot_area: BootArea::LOW_MEMORY,
        },
    )
}

/// What CPUID tells Linux.
///
/// The kernel's policy for this processor (what ponte does not emulate
/// hidden; leaf 0x15 naming the LAPIC timer's clock as the crystal and the
/// TSC rate the hypervisor measured, which Linux 6.1's `native_calibrate_tsc`
/// takes as known, so it calibrates nothing). Leaf 0x40000000 carries
/// ponte's own signature with the timing leaf 0x40000010 (TSC and LAPIC
/// kHz) for guests that read it. Not KVM's "KVMKVMKVM": Linux would then
/// look for kvmclock and other paravirtual features through KVM MSRs this
/// board does not have; not VMware's "VMwareVMware": Linux 6.1 asks
/// VMware's backdoor I/O port (GETHZ) for the frequency, not the leaf.
fn cpuid_policy(tsc_hz: u64) -> Result<CpuidPolicy<128>, ponte_kernel::cpuid::CpuidTableFull> {
    let tsc_khz = (tsc_hz / 1000) as u32;
    let crystal_khz = (CRYSTAL_HZ / 1000) as u32;
    let guest_cpu = GuestCpu {
        apic_id: 0,
        apic: true,
        // Linux 6.1 keeps xAPIC mode without interrupt remapping anyway.
        x2apic: false,
        tsc_deadline: false,
        tsc_khz: Some(tsc_khz),
        apic_timer_khz: Some(crystal_khz),
    };
    let mut cpuid: CpuidPolicy<128> = CpuidPolicy::for_this_cpu(&guest_cpu)?;
    // "ponte-linux!" with the timing leaf as the highest.
    cpuid.set(
        0x4000_0000,
        None,
        CpuidResult {
            eax: TIMING_LEAF,
            ebx: u32::from_le_bytes(*b"pont"),
            ecx: u32::from_le_bytes(*b"e-li"),
            edx: u32::from_le_bytes(*b"nux!"),
        },
    )?;
    Ok(cpuid)
}
