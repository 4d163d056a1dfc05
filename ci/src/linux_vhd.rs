//! The linux-vhd appliance in the runner: Debian's kernel booted under
//! ponte over a VHD chain whose writable child lives on the machine's IDE
//! hard disk.
//!
//! The assets come from [`crate::linux_assets`]: the `vmlinux`, the
//! initramfs and the base VHD go to GRUB as modules (`vmlinux`,
//! `initramfs`, `disk`); a fresh differencing child of the base, kept in a
//! [`ponte_ata::disk_file::DiskFile`] on a raw image, is the hard disk.
//!
//! - [`run`]: `cargo xtask run linux-vhd` (the default demo): one boot with
//!   the guest console shown live.
//! - [`scenario`]: two boots over the same hard disk (the second must read
//!   what the first wrote), then the child taken off the disk must pass
//!   `ponte-vhd check`, open in `qemu-img info -f vpc`, and its export must
//!   show both boots' writes on top of the base's content.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    cargo,
    emulator::{self, HardDisk, Machine, RunReport, Verdict},
    image::{self, Module},
    linux_assets::{self, guest},
    run_quiet,
};

/// The appliance's package name.
pub const EXAMPLE: &str = "linux-vhd";
/// Room the child image may grow to on the hard disk.
const CHILD_CAPACITY: u64 = 24 << 20;
/// Seconds one boot may take in Bochs.
pub const BOOT_TIMEOUT_SECS: u64 = 900;

/// The ISO (with its modules) and the hard disk of one run directory.
pub struct Prepared {
    /// The bootable ISO.
    pub iso: PathBuf,
    /// The raw hard-disk image holding the child VHD.
    pub hard_disk: PathBuf,
    /// The base VHD (the child's parent).
    pub base: PathBuf,
}

/// Builds the appliance, prepares the assets, makes a fresh child of the
/// base on a new hard disk in `dir`, and an ISO booting the appliance with
/// `command_line`.
pub fn prepare(dir: &Path, command_line: &str) -> Result<Prepared, String> {
    let elf = image::build(EXAMPLE)?;
    let assets = linux_assets::prepare()?;
    let child = dir.join("child.vhd");
    linux_assets::fresh_child(&assets.base_vhd, &child)?;
    let hard_disk = dir.join("hard-disk.img");
    linux_assets::ata_disk_image(&child, &hard_disk, CHILD_CAPACITY)?;
    let modules = [
        Module {
            path: assets.vmlinux.clone(),
            name: "vmlinux".into(),
        },
        Module {
            path: assets.initramfs.clone(),
            name: "initramfs".into(),
        },
        Module {
            path: assets.base_vhd.clone(),
            name: "disk".into(),
        },
    ];
    let iso = image::iso(dir, &elf, command_line, &modules)?;
    Ok(Prepared {
        iso,
        hard_disk,
        base: assets.base_vhd,
    })
}

/// `cargo xtask run linux-vhd`: one boot, console streamed.
pub fn run(machine: &Machine, dir: &Path, command_line: &str) -> Result<RunReport, String> {
    let prepared = prepare(dir, command_line)?;
    eprintln!(
        "booting {EXAMPLE} in {} ({}) with hard disk {}; console follows",
        machine.emulator.name(),
        machine.cpu,
        prepared.hard_disk.display()
    );
    emulator::boot_with_disk(
        machine,
        &prepared.iso,
        dir,
        true,
        Some(&HardDisk {
            path: prepared.hard_disk,
        }),
    )
}

/// One boot without streaming, for the benchmarks: boot to userspace in
/// emulated instructions (see [`guest::boot_to_userspace`]), the `bench`
/// lines its console printed (hypervisor memory overhead) and the image's
/// stripped size as `image.linux_appliance`.
pub fn bench(dir: &Path) -> Result<(u64, Vec<String>), String> {
    let prepared = prepare(dir, "")?;
    let report = emulator::boot_with_disk(
        &machine(),
        &prepared.iso,
        dir,
        false,
        Some(&HardDisk {
            path: prepared.hard_disk,
        }),
    )?;
    if report.verdict() != Verdict::Pass {
        return Err(format!(
            "{EXAMPLE}: {} (logs in {})",
            report.summary(),
            dir.display()
        ));
    }
    if !report.console.contains("guest tsc offset 0") {
        return Err(format!(
            "{EXAMPLE}: the guest's TSC was not the host's (no `guest tsc offset 0`; logs in {})",
            dir.display()
        ));
    }
    let ticks = guest::boot_to_userspace(&report.console).ok_or(format!(
        "{EXAMPLE}: no `{}` and `{}` lines (logs in {})",
        guest::KERNEL_ENTRY_TSC,
        guest::INIT_TSC,
        dir.display()
    ))?;
    let mut lines: Vec<String> = report
        .console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("bench "))
        .map(str::to_string)
        .collect();
    let size = image::stripped_size(&image::build(EXAMPLE)?)?;
    lines.push(format!("bench image.linux_appliance {size} bytes"));
    Ok((ticks, lines))
}

/// The bare-machine counterpart of the appliance: the same kernel and
/// initramfs entered the same way, without VMX.
pub const NATIVE_EXAMPLE: &str = "linux-native";

/// linux-native's boot modules: the `vmlinux` and `initramfs` the
/// appliance boots.
pub fn native_modules(_dir: &Path) -> Result<Vec<Module>, String> {
    let assets = linux_assets::prepare()?;
    Ok(vec![
        Module {
            path: assets.vmlinux,
            name: "vmlinux".into(),
        },
        Module {
            path: assets.initramfs,
            name: "initramfs".into(),
        },
    ])
}

/// One boot of linux-native on the appliance's machine: emulated
/// instructions from the jump into the kernel to init's first instruction,
/// counted as for the appliance. The run must end with the guest's result
/// line ([`guest::BARE_MACHINE_PASS`]).
pub fn native_bench(dir: &Path) -> Result<u64, String> {
    let elf = image::build(NATIVE_EXAMPLE)?;
    let modules = native_modules(dir)?;
    let iso = image::iso(dir, &elf, "", &modules)?;
    let report = emulator::boot(&machine(), &iso, dir, false)?;
    if report.verdict() != Verdict::Pass || !report.console.contains(guest::BARE_MACHINE_PASS) {
        return Err(format!(
            "{NATIVE_EXAMPLE}: {} (logs in {})",
            report.summary(),
            dir.display()
        ));
    }
    guest::boot_to_userspace(&report.console).ok_or(format!(
        "{NATIVE_EXAMPLE}: no `{}` and `{}` lines (logs in {})",
        guest::KERNEL_ENTRY_TSC,
        guest::INIT_TSC,
        dir.display()
    ))
}

/// The scenario: two boots, then the checks on the child. Returns whether
/// it held and what to print.
pub fn scenario(dir: &Path, machine: &Machine) -> Result<(bool, String), String> {
    let prepared = prepare(dir, "")?;
    let disk = HardDisk {
        path: prepared.hard_disk.clone(),
    };
    let mut notes = Vec::new();
    for generation in 0..2u64 {
        let boot_dir = dir.join(format!("boot{}", generation + 1));
        fs::create_dir_all(&boot_dir).map_err(|e| e.to_string())?;
        let report =
            emulator::boot_with_disk(machine, &prepared.iso, &boot_dir, false, Some(&disk))?;
        let expected = guest::pass_line(generation);
        if report.verdict() != Verdict::Pass || !report.console.contains(&expected) {
            return Ok((
                false,
                format!(
                    "FAILED: boot {} ({}): console lacks {expected:?} (logs in {})",
                    generation + 1,
                    report.summary(),
                    boot_dir.display()
                ),
            ));
        }
        notes.push(format!(
            "boot {} {:.0} s",
            generation + 1,
            report.elapsed.as_secs_f64()
        ));
    }
    if let Err(e) = check_child(dir, &prepared) {
        return Ok((false, format!("FAILED: {e} (files in {})", dir.display())));
    }
    Ok((
        true,
        format!(
            "passed ({}; child checked, opened by qemu-img, exported)",
            notes.join(", ")
        ),
    ))
}

/// The checks on the child image the guest left on the hard disk.
fn check_child(dir: &Path, prepared: &Prepared) -> Result<(), String> {
    // The child must sit next to its parent's name for the resolver.
    let child = dir.join("child-after.vhd");
    linux_assets::file_from_disk_image(&prepared.hard_disk, &child)?;
    let base_link = dir.join(
        prepared
            .base
            .file_name()
            .ok_or("the base has no file name")?,
    );
    if !base_link.exists() {
        fs::copy(&prepared.base, &base_link).map_err(|e| e.to_string())?;
    }
    // ponte-vhd check, the command-line tool.
    run_quiet(
        cargo()
            .args([
                "run",
                "--quiet",
                "--package",
                "ponte-vhd",
                "--features",
                "cli",
            ])
            .args(["--bin", "ponte-vhd", "--", "check"])
            .arg(&child),
    )
    .map_err(|e| format!("ponte-vhd check: {e}"))?;
    // qemu-img reads it as a VHD (it ignores the parent).
    run_quiet(
        Command::new("qemu-img")
            .args(["info", "-f", "vpc"])
            .arg(&child),
    )
    .map_err(|e| format!("qemu-img info: {e}"))?;
    // The export: the base's layout with two boots recorded on top.
    let raw = dir.join("child-after.raw");
    linux_assets::export_raw(&child, &raw)?;
    let bytes = fs::read(&raw).map_err(|e| e.to_string())?;
    let text_at = |sector: u64| -> String {
        let start = (sector * 512) as usize;
        let s = &bytes[start.min(bytes.len())..(start + 512).min(bytes.len())];
        String::from_utf8_lossy(s)
            .trim_end_matches('\0')
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let expect = [
        (guest::HEADER_SECTOR, guest::HEADER_TEXT.to_string()),
        (guest::GENERATION_SECTOR, "PONTE-GEN 2".to_string()),
        (guest::BOOT_RECORD_SECTOR, "PONTE-BOOT 2".to_string()),
    ];
    for (sector, text) in expect {
        let found = text_at(sector);
        if found != text {
            return Err(format!(
                "export: sector {sector} reads {found:?}, not {text:?}"
            ));
        }
    }
    let payload = guest::payload();
    let start = (guest::PAYLOAD_SECTOR * 512) as usize;
    if bytes.get(start..start + payload.len()) != Some(&payload[..]) {
        return Err("export: the base's payload does not show through".into());
    }
    Ok(())
}

/// The machine the scenario boots.
pub fn machine() -> Machine {
    Machine {
        emulator: emulator::Emulator::Bochs,
        cpu: "corei7_skylake_x".into(),
        memory_mib: 256,
        timeout: Duration::from_secs(BOOT_TIMEOUT_SECS),
    }
}
