//! The integration scenarios `cargo xtask test` runs: an image, the machine
//! it boots on, and the result the image must report.
//!
//! To add one, append an entry to [`SCENARIOS`]. A scenario whose image is
//! meant to fail (to prove the harness notices) expects [`Verdict::Fail`].
//! A scenario that boots one of ponte's test kernels ([`Boot::TestKernel`])
//! expects an exit status instead.

use std::path::Path;

use crate::{
    emulator::{Emulator, Verdict},
    image::Module,
    testkernels::{self, TestKernel},
};

/// Prepares the boot modules of a scenario in the given directory.
pub type PrepareModules = fn(&Path) -> Result<Vec<Module>, String>;

/// What a scenario boots and how its result is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// The appliance image `example`, which prints a PONTE-RESULT line;
    /// `expect` is the verdict it must print.
    Appliance,
    /// One of ponte's test kernels, with `command_line` as its arguments,
    /// whose result is its exit status (see `run_kernel`). Under
    /// [`Emulator::Qemu`] it is the reference run; under [`Emulator::Bochs`]
    /// it runs in ponte's test-kernel appliance (`run-kernel --emulator
    /// ponte`).
    TestKernel {
        /// The kernel.
        kernel: TestKernel,
        /// The status the run must end with.
        status: i32,
    },
    /// The linux-vhd appliance booted twice over one hard disk, then the
    /// child VHD checked (see `linux_vhd::scenario`).
    LinuxVhd,
}

/// One integration scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Unique name, shown in the summary.
    pub name: &'static str,
    /// The example (package under `examples/`) that is booted.
    pub example: &'static str,
    /// The image's command line.
    pub command_line: &'static str,
    /// Emulator to boot in.
    pub emulator: Emulator,
    /// Bochs CPU model.
    pub cpu: &'static str,
    /// Guest machine RAM in MiB.
    pub memory_mib: u32,
    /// Seconds before the run counts as hung.
    pub timeout_secs: u64,
    /// The verdict the image must report.
    pub expect: Verdict,
    /// Text the console must contain for the scenario to hold.
    pub console_contains: &'static [&'static str],
    /// Prepares boot modules in the given directory, if the image needs any.
    pub modules: Option<PrepareModules>,
    /// What is booted, and how its result is read.
    pub boots: Boot,
}

/// Defaults for a scenario entry; entries override what differs.
pub const DEFAULT: Scenario = Scenario {
    name: "",
    example: "hello",
    command_line: "",
    emulator: Emulator::Bochs,
    cpu: "corei7_skylake_x",
    memory_mib: 256,
    timeout_secs: 120,
    expect: Verdict::Pass,
    console_contains: &[],
    modules: None,
    boots: Boot::Appliance,
};

/// Every scenario, in the order they are started.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "hello-bochs",
        console_contains: &["VT-x present on GenuineIntel", "vmx-msr 0x480 "],
        ..DEFAULT
    },
    Scenario {
        name: "hello-bochs-penryn",
        cpu: "core2_penryn_t9600",
        console_contains: &["VT-x present on GenuineIntel", "vmx-msr 0x48b "],
        ..DEFAULT
    },
    Scenario {
        name: "hello-qemu",
        emulator: Emulator::Qemu,
        console_contains: &["VT-x absent on this AuthenticAMD processor"],
        ..DEFAULT
    },
    Scenario {
        name: "harness-panic-bochs",
        command_line: "panic",
        expect: Verdict::Fail,
        // hello prints no panic messages (no diagnostics feature): the
        // location names the panic.
        console_contains: &["panic at examples/hello/src/main.rs"],
        ..DEFAULT
    },
    Scenario {
        name: "harness-panic-qemu",
        command_line: "panic",
        emulator: Emulator::Qemu,
        expect: Verdict::Fail,
        console_contains: &["panic at examples/hello/src/main.rs"],
        ..DEFAULT
    },
    Scenario {
        name: "vmx-real-bochs",
        command_line: "real",
        console_contains: &["real guest passed every check, 1 HLT"],
        ..VMX_BASICS
    },
    Scenario {
        name: "vmx-protected-bochs",
        command_line: "protected",
        console_contains: &["protected guest passed every check, 1 HLT"],
        ..VMX_BASICS
    },
    Scenario {
        name: "vmx-long-bochs",
        command_line: "long",
        console_contains: &["long guest passed every check, 1 HLT"],
        ..VMX_BASICS
    },
    // Bochs 2.7 enters a guest whose RIP is not canonical (SDM 27.3.1.4
    // says the entry must fail): the image must see exactly that deviation.
    Scenario {
        name: "vmx-broken-vmcs-bochs",
        command_line: "broken deviates=guest_rip_noncanonical",
        console_contains: &[
            "25 broken configurations named by the checker and refused by the CPU as the SDM says",
        ],
        ..VMX_BASICS
    },
    Scenario {
        name: "vmx-broken-vmcs-lynnfield",
        command_line: "broken deviates=guest_rip_noncanonical",
        cpu: "corei5_lynnfield_750",
        console_contains: &[
            "24 broken configurations named by the checker and refused by the CPU as the SDM says",
        ],
        ..VMX_BASICS
    },
    Scenario {
        name: "vmx-real-refused-lynnfield",
        command_line: "real expect-refusal",
        cpu: "corei5_lynnfield_750",
        console_contains: &[
            "real guest refused: MissingCapability(Proc2Control(UnrestrictedGuest))",
        ],
        ..VMX_BASICS
    },
    Scenario {
        name: "vmx-protected-lynnfield",
        command_line: "protected",
        cpu: "corei5_lynnfield_750",
        console_contains: &["protected guest passed every check"],
        ..VMX_BASICS
    },
    Scenario {
        name: "vmx-long-lynnfield",
        command_line: "long",
        cpu: "corei5_lynnfield_750",
        console_contains: &["long guest passed every check"],
        ..VMX_BASICS
    },
    // ponte's EPT and guest-memory layer, one guest per part.
    Scenario {
        name: "ept-large-pages-bochs",
        command_line: "large-pages",
        memory_mib: 1024,
        console_contains: &[
            "ept: RAM [0x0, 0x20000000) mapped by 0 x 1 GiB, 256 x 2 MiB, 0 x 4 KiB pages, each the largest alignment and capabilities allow",
            "ept: RAM [0x40000000, 0x40500000) mapped by 0 x 1 GiB, 2 x 2 MiB, 256 x 4 KiB pages, each the largest",
            "large-pages guest wrote and read back all 255 2 MiB ranges of 512 MiB and all 1280 4 KiB ranges of the second region; host memory holds its pattern; their leaves are dirty",
        ],
        ..EPT_BASICS
    },
    Scenario {
        name: "ept-mmio-bochs",
        command_line: "mmio",
        console_contains: &[
            "mmio: 8-byte accesses: 2 writes, 3 reads",
            "the device saw exactly its 22 accesses (widths 1, 2, 4, 8, MOVZX/MOVSX, AND/OR read-modify-writes)",
        ],
        ..EPT_BASICS
    },
    Scenario {
        name: "ept-readonly-bochs",
        command_line: "readonly",
        console_contains: &[
            "readonly guest's write stopped at 0x400238 (linear 0x8000400238), completed after unprotecting",
        ],
        ..EPT_BASICS
    },
    Scenario {
        name: "ept-dirty-bochs",
        command_line: "dirty",
        console_contains: &[
            "dirty: round one: harvest reports",
            "dirty: after round two: harvest reports 0 pages",
            "dirty logging reported exactly the guest's",
        ],
        ..EPT_BASICS
    },
    Scenario {
        name: "ept-unmapped-bochs",
        command_line: "unmapped",
        console_contains: &[
            "unmapped: write of 8 bytes at 0x20000000 reported to the board",
            "unmapped guest passed: 8 accesses to nothing reported, reads all ones, writes dropped",
        ],
        ..EPT_BASICS
    },
    // ponte's test kernels in the reference emulator. The Multiboot v1 kernel
    // boots with QEMU's -kernel; QEMU 7.2's -kernel has no Multiboot2 loader,
    // so the Multiboot2 kernel boots from a GRUB ISO (`multiboot2`).
    Scenario {
        name: "testkernel-mb1-qemu",
        command_line: testkernels::REQUIRED_ARGUMENT,
        emulator: Emulator::Qemu,
        console_contains: testkernels::PASSED,
        boots: Boot::TestKernel {
            kernel: TestKernel::Multiboot1,
            status: testkernels::PASS_STATUS,
        },
        ..DEFAULT
    },
    Scenario {
        name: "testkernel-mb2-qemu",
        command_line: testkernels::REQUIRED_ARGUMENT,
        emulator: Emulator::Qemu,
        console_contains: testkernels::PASSED,
        boots: Boot::TestKernel {
            kernel: TestKernel::Multiboot2,
            status: testkernels::PASS_STATUS,
        },
        ..DEFAULT
    },
    Scenario {
        name: "testkernel-mb1-fail-qemu",
        command_line: "ponte-testkernel fail-on-purpose",
        emulator: Emulator::Qemu,
        console_contains: testkernels::FAILED_ON_PURPOSE,
        boots: Boot::TestKernel {
            kernel: TestKernel::Multiboot1,
            status: testkernels::FAIL_ON_PURPOSE_STATUS,
        },
        ..DEFAULT
    },
    // The same kernels, unmodified, in ponte's test-kernel appliance in
    // Bochs (`run-kernel --emulator ponte`): the same statuses as QEMU's.
    Scenario {
        name: "testkernel-mb1-ponte",
        command_line: testkernels::REQUIRED_ARGUMENT,
        console_contains: testkernels::PASSED_UNDER_PONTE,
        boots: Boot::TestKernel {
            kernel: TestKernel::Multiboot1,
            status: testkernels::PASS_STATUS,
        },
        ..DEFAULT
    },
    Scenario {
        name: "testkernel-mb2-ponte",
        command_line: testkernels::REQUIRED_ARGUMENT,
        console_contains: testkernels::PASSED_UNDER_PONTE,
        boots: Boot::TestKernel {
            kernel: TestKernel::Multiboot2,
            status: testkernels::PASS_STATUS,
        },
        ..DEFAULT
    },
    Scenario {
        name: "testkernel-mb1-fail-ponte",
        command_line: "ponte-testkernel fail-on-purpose",
        console_contains: testkernels::FAILED_ON_PURPOSE_UNDER_PONTE,
        boots: Boot::TestKernel {
            kernel: TestKernel::Multiboot1,
            status: testkernels::FAIL_ON_PURPOSE_STATUS,
        },
        ..DEFAULT
    },
    // Interrupt delivery through ponte's routing, controllers, timers and
    // run loop: one guest per path, each reporting its own verdict.
    Scenario {
        name: "irq-pic-pit-bochs",
        command_line: "pic-pit",
        console_contains: &[
            "pic-pit: 50 IRQ0 ticks of PIT mode 2 (count 1193) through the 8259A and virtual wire took",
            "pic-pit guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "irq-ioapic-level-bochs",
        command_line: "ioapic-level",
        console_contains: &[
            "delivered 3 times, 2 of them again after an EOI while the line stayed raised; none after it was lowered",
            "ioapic-level guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "irq-lapic-timer-bochs",
        command_line: "lapic-timer",
        console_contains: &[
            "lapic-timer: one-shot 1 ms fired after",
            "periodic: 20 periods in",
            "TSC-deadline fired",
            "a past deadline fired at once",
            "lapic-timer guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "irq-x2apic-bochs",
        command_line: "x2apic",
        console_contains: &[
            "4 #GPs as required",
            "1 SELF_IPI, 1 ICR IPI, 1 MSR-programmed timer expiry delivered",
            "x2apic guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "irq-nmi-bochs",
        command_line: "nmi",
        console_contains: &[
            "nmi: 2 NMIs through the ICR taken with IF=0, 0 nested",
            "nmi guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "irq-hlt-wake-bochs",
        command_line: "hlt-wake",
        console_contains: &[
            "HLT with IF=1 woken 5 times by the LAPIC timer",
            "hlt-wake guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "irq-if-held-bochs",
        command_line: "if-held",
        console_contains: &[
            "after STI 1 line and 1 timer interrupt arrived after the STI shadow",
            "if-held guest passed every check",
        ],
        ..IRQ_BASICS
    },
    // APIC virtualization: one 64-bit guest (self-IPIs, TPR through CR8
    // and the xAPIC page, priority order, LAPIC timer, a level-triggered
    // IOAPIC line) under each tier; the appliance fails the run unless the
    // exit counts show the tier at work.
    Scenario {
        name: "irq-apic-virt-bochs",
        command_line: "apic-virt",
        console_contains: &[
            "APIC virtualization virtual-interrupts (best offered: virtual-interrupts)",
            "of the model's requests delivered by the processor from RVI; 0 injected by the run loop; 0 interrupt-window exits;",
            "apic-virt: APIC virtualization virtual-interrupts shown at work",
            "apic-virt guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "irq-apic-virt-tpr-shadow-bochs",
        command_line: "apic-virt",
        cpu: "corei7_sandy_bridge_2600k",
        console_contains: &[
            "APIC virtualization tpr-shadow (best offered: tpr-shadow)",
            "; 0 CR8 exits;",
            "apic-virt: APIC virtualization tpr-shadow shown at work",
            "apic-virt guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "irq-apic-virt-software-bochs",
        command_line: "apic-virt apic=software",
        console_contains: &[
            "APIC virtualization software (best offered: virtual-interrupts)",
            "; 4 CR8 exits;",
            "apic-virt: APIC virtualization software shown at work",
            "apic-virt guest passed every check",
        ],
        ..IRQ_BASICS
    },
    // x2APIC mode with the TPR shadow: the processor virtualizes the TPR
    // MSR, the run loop the rest.
    Scenario {
        name: "irq-x2apic-tpr-shadow-bochs",
        command_line: "x2apic",
        cpu: "corei7_sandy_bridge_2600k",
        console_contains: &[
            "APIC virtualization tpr-shadow (best offered: tpr-shadow)",
            "x2APIC MSR writes virtualized at the end: yes",
            "1 SELF_IPI, 1 ICR IPI, 1 MSR-programmed timer expiry delivered",
            "x2apic guest passed every check",
        ],
        ..IRQ_BASICS
    },
    Scenario {
        name: "linux-vhd",
        example: "linux-vhd",
        timeout_secs: 2 * 900 + 300,
        boots: Boot::LinuxVhd,
        ..DEFAULT
    },
    // The same kernel and initramfs on the bare machine: the image jumps to
    // the PVH entry, so the result line comes from the guest's init.
    Scenario {
        name: "linux-native",
        example: crate::linux_vhd::NATIVE_EXAMPLE,
        timeout_secs: 900,
        console_contains: &[
            crate::linux_assets::guest::KERNEL_ENTRY_TSC,
            crate::linux_assets::guest::INIT_TSC,
            crate::linux_assets::guest::BARE_MACHINE_PASS,
        ],
        modules: Some(crate::linux_vhd::native_modules),
        ..DEFAULT
    },
];

/// Scenarios of the VT-x core: guests in each mode, and a processor without
/// unrestricted guest.
const VMX_BASICS: Scenario = Scenario {
    example: "vmx-basics",
    ..DEFAULT
};

/// Scenarios of the interrupt path (the `irq-basics` appliance).
const IRQ_BASICS: Scenario = Scenario {
    example: "irq-basics",
    ..DEFAULT
};

/// Scenarios of the EPT and guest-memory layer.
const EPT_BASICS: Scenario = Scenario {
    example: "ept-basics",
    ..DEFAULT
};

/// The scenario named `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_nonempty() {
        for (i, a) in SCENARIOS.iter().enumerate() {
            assert!(!a.name.is_empty());
            assert!(
                SCENARIOS[i + 1..].iter().all(|b| b.name != a.name),
                "duplicate {}",
                a.name
            );
        }
    }

    #[test]
    fn test_kernel_statuses_are_proven_to_be_read() {
        let statuses = |kernel_status: fn(i32) -> bool| {
            SCENARIOS.iter().any(
                |s| matches!(s.boots, Boot::TestKernel { status, .. } if kernel_status(status)),
            )
        };
        assert!(statuses(|s| s == testkernels::PASS_STATUS));
        assert!(statuses(|s| s != testkernels::PASS_STATUS));
    }

    #[test]
    fn the_harness_proves_itself_under_both_emulators() {
        let appliances = || SCENARIOS.iter().filter(|s| s.boots == Boot::Appliance);
        for emulator in [Emulator::Bochs, Emulator::Qemu] {
            assert!(appliances().any(|s| s.emulator == emulator && s.expect == Verdict::Fail));
            assert!(appliances().any(|s| s.emulator == emulator && s.expect == Verdict::Pass));
        }
    }
}
