//! `cargo xtask bench`: one line per figure, `bench <name> <value> <unit>`.
//!
//! - `image.<example>`: stripped size of each appliance image.
//! - `vhd.*`, `qemu.*`, `raw.*`: VHD throughput of ponte-vhd's file backend
//!   and of `qemu-img bench` on the same 1 GiB images, through the page
//!   cache, with a raw file's page-cache copy as the limit (measured by the
//!   `vhd-bench` example of ponte-vhd, which documents each workload).

use std::process::Command;

use crate::{cargo, examples, image, packages, run_quiet, target_dir, work_dir};

/// Prints every benchmark figure; a failing group does not stop the others.
pub fn run() -> Result<(), String> {
    let images = image_sizes();
    let vhd = vhd();
    images.and(vhd)
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
