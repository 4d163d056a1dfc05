//! Puts the image linker script on the link search path of every binary that
//! depends on this crate (they pass `-Tponte.ld`, see `.cargo/config.toml`).
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));
    fs::copy("ponte.ld", out.join("ponte.ld")).expect("copy ponte.ld");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=ponte.ld");
}
