//! Building appliance images and the GRUB ISOs that boot them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{cargo, run_quiet, target_dir};

/// A file GRUB loads next to the image as a Multiboot2 module.
#[derive(Clone, Debug)]
pub struct Module {
    /// The file on the host.
    pub path: PathBuf,
    /// The module's command line (its name first).
    pub name: String,
}

/// Builds `example` for the image target and returns its ELF.
pub fn build(example: &str) -> Result<PathBuf, String> {
    let mut build = cargo();
    build.args([
        "build",
        "--quiet",
        "--release",
        "--target",
        "x86_64-unknown-none",
        "--package",
        example,
    ]);
    run_quiet(&mut build)?;
    let elf = target_dir()
        .join("x86_64-unknown-none/release")
        .join(example);
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!("{} was not built", elf.display()))
    }
}

/// Size in bytes of `elf` once stripped of symbols and debug information.
pub fn stripped_size(elf: &Path) -> Result<u64, String> {
    let stripped = elf.with_extension("stripped");
    run_quiet(Command::new("strip").arg("-o").arg(&stripped).arg(elf))?;
    fs::metadata(&stripped)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", stripped.display()))
}

/// Makes a BIOS-bootable ISO in `dir` with GRUB loading `elf` with
/// `command_line` and `modules`.
pub fn iso(
    dir: &Path,
    elf: &Path,
    command_line: &str,
    modules: &[Module],
) -> Result<PathBuf, String> {
    let tree = dir.join("iso");
    let _ = fs::remove_dir_all(&tree);
    let boot = tree.join("boot");
    fs::create_dir_all(boot.join("grub")).map_err(|e| e.to_string())?;
    fs::copy(elf, boot.join("ponte.elf")).map_err(|e| format!("{}: {e}", elf.display()))?;
    let mut config = String::from("set timeout=0\nset default=0\nmenuentry \"ponte\" {\n");
    config.push_str(&format!("  multiboot2 /boot/ponte.elf {command_line}\n"));
    for (i, module) in modules.iter().enumerate() {
        let file = format!("module{i}");
        // A hard link where possible: modules can be large.
        let target = boot.join(&file);
        if fs::hard_link(&module.path, &target).is_err() {
            fs::copy(&module.path, &target)
                .map_err(|e| format!("{}: {e}", module.path.display()))?;
        }
        config.push_str(&format!("  module2 /boot/{file} {}\n", module.name));
    }
    config.push_str("  boot\n}\n");
    fs::write(boot.join("grub/grub.cfg"), config).map_err(|e| e.to_string())?;
    let iso = dir.join("boot.iso");
    run_quiet(
        Command::new("grub-mkrescue")
            .arg("-o")
            .arg(&iso)
            .arg(&tree)
            .arg("--install-modules=multiboot2 normal iso9660 biosdisk part_msdos")
            .args(["--locales=", "--fonts=", "--themes="]),
    )?;
    Ok(iso)
}
