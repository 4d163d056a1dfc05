//! `cargo xtask bench`: one line per figure, `bench <name> <value> <unit>`.
//! `PONTE_BENCH_ONLY=linux,vhd` runs only the groups named (see
//! [`ONLY_VARIABLE`]).
//!
//! - `image.<example>`: stripped size of each appliance image.
//! - `vhd.*`, `qemu.*`, `raw.*`: VHD throughput of ponte-vhd's file backend
//!   and of `qemu-img bench` on the same 1 GiB images, through the page
//!   cache, with a raw file's page-cache copy as the limit (measured by the
//!   `vhd-bench` example of ponte-vhd, which documents each workload).
//! - `ept.map_4gib`, `ept.map_4gib_4k_only`: host time to build the EPT
//!   map of 4 GiB of RAM on empty tables, with the largest pages and with
//!   4 KiB pages only (ponte-arch's `bench_map_4gib` test, in release).
//! - `linux.boot_to_userspace`, `mem.hypervisor_overhead`,
//!   `image.linux_appliance`: Debian's kernel under the linux-vhd appliance
//!   (see `linux_vhd::bench`).
//! - `linux.native_boot`: the same kernel and initramfs entered the same
//!   way on the bare machine (the linux-native image), in the same run;
//!   `linux.virtualization_overhead`: the ratio of the two boot counts.
//! - Guest-measured figures: appliance runs in Bochs listed in
//!   [`GUEST_BENCHMARKS`], whose console prints the `bench` lines itself
//!   (under Bochs the guest's TSC counts instructions, so they are exact).

use std::{process::Command, time::Duration};

use crate::{
    cargo,
    emulator::{self, Emulator, Machine, Verdict},
    examples, image, packages, run_quiet, scenarios, target_dir, work_dir,
};

/// Appliance runs whose console prints `bench <name> <value> <unit>` lines:
/// (example, command line).
pub const GUEST_BENCHMARKS: &[(&str, &str)] = &[
    // Median of 10,000 CPUID exit round trips through the full dispatch.
    ("vmx-basics", "bench"),
    // Median of 2,000 MMIO reads of pc-testdev's window: EPT violation,
    // instruction fetch and decode, device access and entry.
    ("ept-basics", "mmio-bench"),
    // Median of 1,000 line raises by a guest OUT to pc-testdev, to the first
    // instruction of the handler (IOAPIC, LAPIC): with the local APIC
    // virtualized as far as the processor allows (on Skylake-X the processor
    // delivers the vector from RVI and virtualizes the EOI), then with the
    // software path forced (the run loop injects the vector; the EOI exits).
    ("irq-basics", "bench"),
    ("irq-basics", "bench apic=software"),
];

/// The environment variable that limits `cargo xtask bench` to some groups:
/// a comma-separated list of `images`, `ept`, `guests`, `vhd`, `linux`
/// (unset: all of them).
pub const ONLY_VARIABLE: &str = "PONTE_BENCH_ONLY";

/// A benchmark group: prints its lines, or says why it could not.
type Group = fn() -> Result<(), String>;

/// The benchmark groups, in the order they run.
const GROUPS: [(&str, Group); 5] = [
    ("images", image_sizes),
    ("ept", ept_map),
    ("guests", guest_benchmarks),
    ("vhd", vhd),
    ("linux", linux),
];

/// Whether group `name` runs under the filter `only` (the value of
/// [`ONLY_VARIABLE`], if set).
fn selected(only: Option<&str>, name: &str) -> bool {
    only.is_none_or(|list| list.split(',').any(|g| g.trim() == name))
}

/// Prints every benchmark figure (or those of the groups [`ONLY_VARIABLE`]
/// names); a failing group does not stop the others.
pub fn run() -> Result<(), String> {
    let only = std::env::var(ONLY_VARIABLE).ok();
    if let Some(list) = &only {
        if let Some(unknown) = list
            .split(',')
            .map(str::trim)
            .find(|g| !GROUPS.iter().any(|(name, _)| name == g))
        {
            return Err(format!(
                "{ONLY_VARIABLE}: no benchmark group {unknown:?} (groups: images, ept, guests, vhd, linux)"
            ));
        }
    }
    let mut result = Ok(());
    for (name, group) in GROUPS {
        if selected(only.as_deref(), name) {
            result = result.and(group());
        }
    }
    result
}

/// Debian's Linux under the linux-vhd appliance in Bochs and on the bare
/// machine (linux-native), booted side by side: emulated instructions from
/// the kernel's entry to init's first instruction, counted the same way in
/// both runs (the image prints the TSC, which counts instructions under
/// Bochs, just before entering the kernel; init prints it first thing),
/// their ratio, the hypervisor's memory outside guest RAM, and the stripped
/// image size.
fn linux() -> Result<(), String> {
    packages::ensure(packages::EMULATION)?;
    // Build once before the two runs start building in parallel.
    crate::linux_assets::prepare()?;
    image::build(crate::linux_vhd::EXAMPLE)?;
    image::build(crate::linux_vhd::NATIVE_EXAMPLE)?;
    let vhd_dir = work_dir("bench-linux-vhd")?;
    let native_dir = work_dir("bench-linux-native")?;
    let (ponte, native) = std::thread::scope(|scope| {
        let ponte = scope.spawn(|| crate::linux_vhd::bench(&vhd_dir));
        let native = crate::linux_vhd::native_bench(&native_dir);
        let ponte = ponte
            .join()
            .unwrap_or_else(|_| Err("the linux-vhd run panicked".into()));
        (ponte, native)
    });
    let (ponte, lines) = ponte?;
    println!("bench linux.boot_to_userspace {ponte} insn");
    for line in lines {
        println!("{line}");
    }
    let native = native?;
    println!("bench linux.native_boot {native} insn");
    println!(
        "bench linux.virtualization_overhead {:.4} ratio",
        ponte as f64 / native as f64
    );
    Ok(())
}

/// Boots each run of [`GUEST_BENCHMARKS`] in Bochs and prints its lines.
fn guest_benchmarks() -> Result<(), String> {
    packages::ensure(packages::EMULATION)?;
    for (example, command_line) in GUEST_BENCHMARKS {
        let elf = image::build(example)?;
        // Only letters, digits and dashes: grub-mkrescue takes a path with
        // '=' for a graft point.
        let dir = work_dir(&format!(
            "bench-{example}-{}",
            command_line.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ))?;
        let iso = image::iso(&dir, &elf, command_line, &[])?;
        let machine = Machine {
            emulator: Emulator::Bochs,
            cpu: scenarios::DEFAULT.cpu.into(),
            memory_mib: scenarios::DEFAULT.memory_mib,
            timeout: Duration::from_secs(600),
        };
        let report = emulator::boot(&machine, &iso, &dir, false)?;
        if report.verdict() != Verdict::Pass {
            return Err(format!(
                "{example} {command_line}: {} (logs in {})",
                report.summary(),
                dir.display()
            ));
        }
        for line in report.console.lines().map(|l| l.trim_end_matches('\r')) {
            if line.starts_with("bench ") {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// Times building a 4 GiB EPT map on the host (ponte-arch's benchmark
/// test, built with optimisations) and prints its lines.
fn ept_map() -> Result<(), String> {
    let output = cargo()
        .args([
            "test",
            "--quiet",
            "--release",
            "--package",
            "ponte-arch",
            "--lib",
            "ept::tests::bench_map_4gib",
            "--",
            "--exact",
            "--nocapture",
        ])
        .output()
        .map_err(|e| format!("cannot run the EPT benchmark: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("bench ")).collect();
    if !output.status.success() || lines.is_empty() {
        return Err(format!(
            "EPT benchmark failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// Prints the stripped size of every appliance image.
fn image_sizes() -> Result<(), String> {
    for example in examples() {
        let elf = image::build(&example)?;
        println!(
            "bench image.{example} {} bytes",
            image::stripped_size(&elf)?
        );
    }
    Ok(())
}

/// Builds and runs the VHD throughput benchmark; its lines go to stdout.
fn vhd() -> Result<(), String> {
    packages::ensure(&["qemu-utils"])?;
    run_quiet(cargo().args([
        "build",
        "--release",
        "--package",
        "ponte-vhd",
        "--features",
        "cli",
        "--example",
        "vhd-bench",
    ]))?;
    let program = target_dir().join("release/examples/vhd-bench");
    // Under target/, on the same file system as the build.
    let dir = work_dir("bench-vhd")?;
    let status = Command::new(&program)
        .arg(&dir)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", program.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_selects_named_groups_only() {
        assert!(GROUPS.iter().all(|(name, _)| selected(None, name)));
        assert!(selected(Some("linux"), "linux"));
        assert!(!selected(Some("linux"), "vhd"));
        assert!(selected(Some("vhd, linux"), "linux"));
        assert!(selected(Some("vhd,linux"), "vhd"));
        assert!(!selected(Some("linuxx"), "linux"));
        assert!(!selected(Some(""), "images"));
    }
}
