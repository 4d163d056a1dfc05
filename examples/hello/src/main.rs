//! hello: boots, reports what VT-x the processor offers, and passes.
//!
//! The command-line word `panic` makes it panic instead, so that the runner
//! can prove that it notices a failing image.
#![no_std]
#![no_main]

use ponte_arch::{
    boot::{finish, BootInfo, Outcome},
    cpu,
    memory::HostMemory,
    println,
};

ponte_arch::entry!(main);

fn main(boot: BootInfo, memory: HostMemory) -> ! {
    println!("hello from ponte; command line {:?}", boot.command_line);
    let usable: u64 = boot.usable_memory().map(|r| r.end - r.start).sum();
    println!(
        "usable RAM {} KiB, {} KiB free for the hypervisor, {} boot modules",
        usable / 1024,
        memory.free_bytes() / 1024,
        boot.modules.len()
    );
    if boot.has_argument("panic") {
        panic!("requested by the command line");
    }

    let vendor = cpu::vendor();
    let vendor = core::str::from_utf8(&vendor).unwrap_or("?");
    if !cpu::has_vmx() {
        finish(
            Outcome::Pass,
            format_args!("VT-x absent on this {vendor} processor"),
        );
    }
    let feature_control = cpu::feature_control().unwrap_or(0);
    println!("VT-x present on {vendor}; IA32_FEATURE_CONTROL {feature_control:#x}");
    for (index, value) in cpu::vmx_capability_msrs() {
        println!("vmx-msr {index:#x} {value:#018x}");
    }
    finish(
        Outcome::Pass,
        format_args!("VT-x present on this {vendor} processor"),
    )
}
