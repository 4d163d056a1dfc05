//! Debian packages the runner needs, installed on demand when running as root.

use std::process::Command;

/// Packages every emulator run and the host tests need (`qemu-utils` and
/// `libvhdi-utils` provide the `qemu-img` and `vhdiinfo` that ponte-vhd's
/// interop tests compare against).
pub const EMULATION: &[&str] = &[
    "bochs",
    "bochsbios",
    "vgabios",
    "grub-pc-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "qemu-system-x86",
    "qemu-utils",
    "libvhdi-utils",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Whether the runner runs as root (and may call apt-get update/install).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes sure every package in `packages` is installed: installs the missing
/// ones through apt-get when running as root, otherwise names the command to
/// run and fails.
pub fn ensure(packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        return Err(format!(
            "missing Debian packages; run: sudo apt-get update && sudo apt-get install -y {list}"
        ));
    }
    eprintln!("installing Debian packages: {list}");
    let quiet = |c: &mut Command| {
        c.env("DEBIAN_FRONTEND", "noninteractive");
    };
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    quiet(&mut update);
    crate::run_quiet(&mut update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing);
    quiet(&mut install);
    crate::run_quiet(&mut install)?;
    match missing.iter().find(|p| !installed(p)) {
        Some(p) => Err(format!("apt-get did not install {p}")),
        None => Ok(()),
    }
}
