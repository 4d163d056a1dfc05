//! ponte's own test kernels (`ci/testkernels/`): small GNU assembler
//! programs, written for `qemu-system-x86_64 -kernel` and pc-testdev, that
//! check what a PC and its boot loader give them and report through
//! isa-debug-exit. They are assembled and linked on every use (a few
//! milliseconds), so a changed source or included file is always picked up.
//!
//! `ci/testkernels/common.s` lists the checks and the exit code of each.

use std::{fs, path::PathBuf, process::Command};

use crate::{run_quiet, work_dir, workspace_root};

/// QEMU's exit status when a kernel reports that every check held (code 0x10
/// written to isa-debug-exit: `(0x10 << 1) | 1`).
pub const PASS_STATUS: i32 = 33;
/// QEMU's exit status when every check held but the command line asked the
/// kernel to fail (`fail-on-purpose`, code 0x38).
pub const FAIL_ON_PURPOSE_STATUS: i32 = 113;
/// The word the kernels require on their command line, to prove the loader
/// passed the arguments along.
pub const REQUIRED_ARGUMENT: &str = "ponte-testkernel";

/// One of ponte's test kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKernel {
    /// Multiboot v1 with the a.out-kludge addresses (header flags bit 16).
    Multiboot1,
    /// Multiboot2 (booted through GRUB under QEMU, whose `-kernel` lacks it).
    Multiboot2,
}

/// Builds the console-line list of a run in which every check held, ending
/// with the given lines.
macro_rules! every_check_then {
    ($($last:literal),*) => {
        &[
            "check boot-magic: ok",
            "check command-line: ok",
            "check memory-info: ok",
            "check memory-map: ok",
            "check fw_cfg-signature: ok",
            "check fw_cfg-ram-size: ok",
            "check fw_cfg-cpus: ok",
            "check lapic: ok",
            "check ioapic: ok",
            "check irq-held-while-if-clear: ok",
            "check irq-level-redelivery: ok",
            "check irq-lowered: ok",
            "check irq-mask: ok",
            "check irq-handler-state: ok",
            "check com1-irq: ok",
            "check cpuid: ok",
            "check msr-unknown: ",
            "check msr-apic-base-reserved: ",
            "check msr-efer-reserved: ",
            "check msr-noncanonical: ",
            "check vmcall: ok",
            "check apic-base: ",
            "check testdev-mmio: ok",
            "check testdev-mmio-8: ok",
            $($last),*
        ]
    };
}

/// The console lines of a run in which every check held under QEMU 7.2's
/// TCG, which deviates from the architecture where `cpu.s` says, ending
/// with the given lines.
macro_rules! under_qemu_tcg_then {
    ($($last:literal),*) => {
        every_check_then!(
            "check msr-unknown: deviation, RDMSR of MSR 0x12345678 gave",
            "check msr-apic-base-reserved: deviation",
            "check msr-efer-reserved: deviation",
            "check msr-noncanonical: deviation",
            "check vmcall: ok, #UD: no hypervisor answers",
            "cr4-reserved: skipped",
            "check apic-base: deviation",
            $($last),*
        )
    };
}

/// The console lines of a run in which every check held under ponte,
/// which must behave as the architecture says in every check of `cpu.s`,
/// ending with the given lines.
macro_rules! under_ponte_then {
    ($($last:literal),*) => {
        every_check_then!(
            "check cpuid: ok, vendor GenuineIntel",
            "check msr-unknown: ok, RDMSR and WRMSR of MSR 0x12345678 raise #GP",
            "check msr-apic-base-reserved: ok",
            "check msr-efer-reserved: ok",
            "check msr-noncanonical: ok",
            "check vmcall: ok, unknown hypercall answered -1000",
            "check cr4-reserved: ok",
            "apic-base: CPUID.1:EDX.APIC while disabled: 0",
            "check apic-base: ok, disabled, re-enabled at 0xfeb00000",
            $($last),*
        )
    };
}

/// Console lines of a run under QEMU in which every check held.
pub const PASSED: &[&str] = under_qemu_tcg_then!("testkernel: PASS");
/// Console lines of a run under QEMU in which every check held and
/// `fail-on-purpose` then made the kernel fail.
pub const FAILED_ON_PURPOSE: &[&str] =
    under_qemu_tcg_then!("testkernel: FAIL requested by fail-on-purpose");
/// Console lines of a run under ponte in which every check held.
pub const PASSED_UNDER_PONTE: &[&str] = under_ponte_then!("testkernel: PASS");
/// Console lines of a run under ponte in which every check held and
/// `fail-on-purpose` then made the kernel fail.
pub const FAILED_ON_PURPOSE_UNDER_PONTE: &[&str] =
    under_ponte_then!("testkernel: FAIL requested by fail-on-purpose");

impl TestKernel {
    /// Every test kernel.
    pub const ALL: [Self; 2] = [Self::Multiboot1, Self::Multiboot2];

    /// Base name of the source file and of the built ELF.
    pub fn name(self) -> &'static str {
        match self {
            Self::Multiboot1 => "mb1",
            Self::Multiboot2 => "mb2",
        }
    }

    /// Where [`TestKernel::build`] leaves the ELF.
    pub fn elf(self) -> Result<PathBuf, String> {
        Ok(work_dir("testkernels")?.join(format!("{}.elf", self.name())))
    }

    /// Assembles and links the kernel from source; returns its ELF.
    pub fn build(self) -> Result<PathBuf, String> {
        let sources = workspace_root().join("ci/testkernels");
        let out = work_dir("testkernels")?;
        // Unique intermediate names, renamed into place at the end, so a
        // concurrent build never exposes a half-written kernel.
        let unique = format!("{}.{}", self.name(), std::process::id());
        let object = out.join(format!("{unique}.o"));
        let linked = out.join(format!("{unique}.elf"));
        run_quiet(
            Command::new("as")
                .arg("--32")
                .arg("-I")
                .arg(&sources)
                .arg("-o")
                .arg(&object)
                .arg(sources.join(format!("{}.s", self.name()))),
        )?;
        let linking = run_quiet(
            Command::new("ld")
                .args(["-m", "elf_i386", "-T"])
                .arg(sources.join("link.ld"))
                .arg("-o")
                .arg(&linked)
                .arg(&object),
        );
        let _ = fs::remove_file(&object);
        linking?;
        let elf = self.elf()?;
        fs::rename(&linked, &elf).map_err(|e| format!("{}: {e}", elf.display()))?;
        Ok(elf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_kernel::{qemu_boot_method, QemuBoot};

    #[test]
    fn kernels_build_and_carry_the_header_of_their_protocol() {
        for (kernel, boot) in [
            (TestKernel::Multiboot1, QemuBoot::KernelOption),
            (TestKernel::Multiboot2, QemuBoot::GrubIso),
        ] {
            let elf = kernel.build().unwrap();
            let image = fs::read(&elf).unwrap();
            assert_eq!(qemu_boot_method(&image), boot, "{}", kernel.name());
        }
    }

    /// The kernels' sources, concatenated.
    fn sources() -> String {
        [
            "common.s",
            "checks.s",
            "interrupts.s",
            "cpu.s",
            "mb1.s",
            "mb2.s",
        ]
        .iter()
        .map(|f| fs::read_to_string(workspace_root().join("ci/testkernels").join(f)).unwrap())
        .collect()
    }

    /// The value of `.set NAME, 0x..` in the sources.
    fn exit_code(sources: &str, name: &str) -> i32 {
        let line = sources
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!(".set {name}, 0x")))
            .unwrap_or_else(|| panic!("{name} not set"));
        i32::from_str_radix(line.trim(), 16).unwrap()
    }

    #[test]
    fn statuses_follow_isa_debug_exit_from_the_kernels_codes() {
        let sources = sources();
        assert_eq!(PASS_STATUS, (exit_code(&sources, "EXIT_PASS") << 1) | 1);
        assert_eq!(
            FAIL_ON_PURPOSE_STATUS,
            (exit_code(&sources, "EXIT_ON_PURPOSE") << 1) | 1
        );
        assert!(sources.contains(&format!(".asciz \"{REQUIRED_ARGUMENT}\"")));
    }

    #[test]
    fn every_expected_console_line_is_printed_by_the_sources() {
        let sources = sources();
        let lists = [
            PASSED,
            FAILED_ON_PURPOSE,
            PASSED_UNDER_PONTE,
            FAILED_ON_PURPOSE_UNDER_PONTE,
        ];
        for line in lists.iter().flat_map(|l| l.iter()) {
            // A failure is printed as "testkernel: FAIL " and then its reason.
            let printed = line.strip_prefix("testkernel: FAIL ").unwrap_or(line);
            // The vendor string and the APIC bit come from CPUID at run time.
            let printed = printed.strip_suffix("GenuineIntel").unwrap_or(printed);
            let printed = printed
                .strip_suffix('0')
                .filter(|p| p.ends_with("while disabled: "))
                .unwrap_or(printed);
            assert!(sources.contains(printed), "no kernel prints {line:?}");
        }
    }
}
