//! linux-native: Debian's stock Linux kernel on the bare machine, entered
//! through its PVH note by the same loader as linux-vhd, without VMX.
//!
//! Boot modules (GRUB `module2`, named by their first word): `vmlinux`, the
//! uncompressed kernel, and `initramfs`, its initrd.
//!
//! The image loads the kernel as linux-vhd does (same loader, command line
//! (words after `--` on the image's command line are appended, as there),
//! initramfs and boot structures at the same addresses) with the machine's
//! own memory map, its RAM cut at [`LINUX_RAM_END`] so the kernel manages
//! as much RAM as linux-vhd's guest; then it prints `kernel entry tsc N`
//! and leaves long mode into the kernel's 32-bit PVH entry. Linux runs on
//! the emulator's own devices: its BIOS's ACPI tables (the RSDP is left for
//! Linux to find), 8259A, IOAPIC, local APIC, PIT and COM1.
//!
//! The kernel must go at its link address (16 MiB up), where GRUB tends to
//! have put the modules: a module inside Linux's RAM is first moved above
//! it, then the destination of every structure the loader writes (as
//! [`linux::plan`] says) is claimed from host memory, and the kernel is
//! loaded there. The image never regains control: the guest's init prints
//! the run's result (see the runner's guest assets).
#![no_std]
#![no_main]

use ponte_arch::{
    boot::{enter_pvh32, finish, BootInfo, Outcome},
    cpu,
    ept::HostRam,
    memory::HostMemory,
    or_fail, println,
};
use ponte_kernel::{
    loader::{
        linux::{self, BootArea, LinuxConfig, LinuxEntry},
        Module,
    },
    memory::GuestLayout,
};

ponte_arch::entry!(main);

/// Linux's RAM ends here: the size of linux-vhd's guest RAM, so both runs
/// boot the same kernel over the same amount of memory. The RAM above
/// holds the modules while they are loaded.
pub const LINUX_RAM_END: u64 = 128 << 20;
/// The kernel's command line: linux-vhd's.
const CMDLINE: &str = "console=ttyS0,115200 rdinit=/init panic=-1 tsc=reliable";
/// Most ranges the loader writes (kernel, initramfs, boot information,
/// command line).
const MAX_DESTINATIONS: usize = linux::MAX_CLAIMS;

fn main(boot: BootInfo, mut memory: HostMemory) -> ! {
    let Some(kernel) = boot.module("vmlinux") else {
        finish(Outcome::Fail, format_args!("no vmlinux module"))
    };
    let Some(initramfs) = boot.module("initramfs") else {
        finish(Outcome::Fail, format_args!("no initramfs module"))
    };
    println!(
        "linux-native: image {:#x?}, loader information {:#x?}, vmlinux {:#x?}, initramfs {:#x?}",
        boot.image, boot.loader_info, kernel.range, initramfs.range
    );
    let (ram, reserved) = or_fail!(
        linux::firmware_layout(&boot.memory_map, LINUX_RAM_END),
        "the machine's memory map"
    );

    // Modules inside Linux's RAM move above it, out of every destination.
    let linux_ram = 0..LINUX_RAM_END;
    let mut module_bytes = |module: &ponte_arch::boot::BootModule| {
        if module.range.start < linux_ram.end && linux_ram.start < module.range.end {
            or_fail!(
                memory.move_module(module, linux_ram.clone()),
                "moving a module out of Linux's RAM"
            )
        } else {
            module.bytes()
        }
    };
    let kernel = module_bytes(kernel);
    let initramfs = module_bytes(initramfs);

    // Words after `--` on the image's command line go to the kernel's, as
    // on linux-vhd.
    let extra = boot
        .command_line
        .split_once("--")
        .map_or("", |(_, after)| after.trim());
    // The emulated processor's CPUID names a TSC rate it does not run at;
    // under ponte the guest learns the rate the hypervisor measured from
    // CPUID leaf 0x15. Here the command line tells the kernel the same
    // measured rate, so both kernels time their delays alike. `reboot=t`:
    // a kernel that panics (panic=-1) restarts through a triple fault,
    // which ends the emulator's run instead of booting this image again.
    let mut cmdline: heapless::String<512> = heapless::String::new();
    let tsc_khz = cpu::tsc_hz() / 1000;
    let separator = if extra.is_empty() { "" } else { " " };
    let joined = core::fmt::Write::write_fmt(
        &mut cmdline,
        format_args!("{CMDLINE} tsc_early_khz={tsc_khz} reboot=t{separator}{extra}"),
    );
    if joined.is_err() {
        finish(
            Outcome::Fail,
            format_args!("kernel command line longer than 512 bytes"),
        );
    }
    let config = LinuxConfig {
        kernel,
        cmdline: &cmdline,
        initrd: Some(Module {
            data: initramfs,
            cmdline: "initramfs",
        }),
        ram: &ram,
        reserved: &reserved,
        rsdp: None,
        boot_area: BootArea::LOW_MEMORY,
    };
    let plan = or_fail!(linux::plan(&config), "placing Linux");
    let mut destination: GuestLayout<HostRam, (), MAX_DESTINATIONS> = GuestLayout::new();
    for (what, range) in plan.footprint(&config.boot_area) {
        let block = match memory.claim(range.start, range.end - range.start) {
            Ok(block) => block,
            Err(e) => finish(
                Outcome::Fail,
                format_args!("claiming the {what:?} at {range:#x?}: {e:?}"),
            ),
        };
        or_fail!(destination.add_ram(range.start, block), "destination");
    }
    let loaded = or_fail!(linux::load(&destination, &config), "loading Linux");
    let LinuxEntry::Pvh(entry) = loaded.entry else {
        finish(Outcome::Fail, format_args!("the kernel has no PVH entry"))
    };
    println!(
        "linux-native: kernel at {:#x}..{:#x}, initramfs at {:#x?}, entry {:#x}, hvm_start_info at {:#x}",
        loaded.kernel_start, loaded.kernel_end, loaded.initrd, entry.eip, entry.ebx
    );
    println!("kernel entry tsc {}", cpu::tsc());
    enter_pvh32(memory, entry.eip, entry.ebx)
}
