//! Builds the guest programs of test appliances from a build script: each
//! GNU assembler source `guests/<name>.S` is assembled and linked as a flat
//! binary at a load address, written to `$OUT_DIR/<name>.bin` for
//! `include_bytes!`. Needs binutils (`as`, `ld`), which every machine that
//! builds Rust for the host has.

use std::{env, path::PathBuf, process::Command};

/// The object format the guests are assembled for. A 64-bit object may
/// still hold `.code16` and `.code32` sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bits {
    /// `as --32`, `ld -m elf_i386`.
    Bits32,
    /// `as --64`, `ld -m elf_x86_64`.
    Bits64,
}

/// Assembles `guests/<name>.S` for each name and links it at
/// `load_address` (entry `_start`) into `$OUT_DIR/<name>.bin`. Panics with
/// the failing command, as a build script should.
pub fn assemble(bits: Bits, load_address: u64, guests: &[&str]) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    let (as_flag, emulation) = match bits {
        Bits::Bits32 => ("--32", "elf_i386"),
        Bits::Bits64 => ("--64", "elf_x86_64"),
    };
    println!("cargo:rerun-if-changed=guests");
    for guest in guests {
        let object = out.join(format!("{guest}.o"));
        run(Command::new("as")
            .arg(as_flag)
            .arg("-Iguests")
            .arg("-o")
            .arg(&object)
            .arg(format!("guests/{guest}.S")));
        run(Command::new("ld")
            .args(["-m", emulation, "-e", "_start", "--oformat=binary"])
            .arg(format!("-Ttext={load_address:#x}"))
            .arg("-o")
            .arg(out.join(format!("{guest}.bin")))
            .arg(&object));
    }
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}
