//! Assembles the 32-bit guest programs in `guests/` with the GNU assembler
//! and links each as a flat binary loaded at 0x8000 (binutils).
use std::{env, path::PathBuf, process::Command};

const GUESTS: &[&str] = &[
    "pic_pit",
    "ioapic_level",
    "lapic_timer",
    "x2apic",
    "nmi",
    "hlt_wake",
    "if_held",
    "inject_bench",
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
            .arg("--32")
            .arg("-Iguests")
            .arg("-o")
            .arg(&object)
            .arg(format!("guests/{guest}.S")));
        run(Command::new("ld")
            .args([
                "-m",
                "elf_i386",
                "-Ttext=0x8000",
                "-e",
                "_start",
                "--oformat=binary",
            ])
            .arg("-o")
            .arg(out.join(format!("{guest}.bin")))
            .arg(&object));
    }
}
