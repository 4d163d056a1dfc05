//! Assembles the guest programs in `guests/` into flat binaries in OUT_DIR
//! with the GNU assembler and objcopy (binutils).
use std::{env, path::PathBuf, process::Command};

const GUESTS: &[&str] = &[
    "large_pages",
    "mmio",
    "mmio_bench",
    "readonly",
    "dirty",
    "unmapped",
];

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));
    println!("cargo:rerun-if-changed=guests");
    for guest in GUESTS {
        let object = out.join(format!("{guest}.o"));
        run(Command::new("as")
            .arg("--64")
            .arg("-Iguests")
            .arg("-o")
            .arg(&object)
            .arg(format!("guests/{guest}.S")));
        let binary = out.join(format!("{guest}.bin"));
        run(Command::new("objcopy")
            .args(["-O", "binary", "-j", ".text"])
            .arg(&object)
            .arg(&binary));
    }
}
