//! Builds the board's ACPI tables and SMBIOS structures on the host, from
//! the constants in `src/platform.rs`, so that the image only copies their
//! bytes into guest memory. Writes `firmware_tables.rs` to `OUT_DIR`.

use std::{env, fs, path::PathBuf};

// The image's module, compiled here for its table configurations; the rest
// of the address map is the image's business.
#[allow(dead_code)]
#[path = "src/platform.rs"]
mod platform;

fn main() {
    println!("cargo:rerun-if-changed=src/platform.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));

    let mut acpi = vec![0u8; platform::ACPI_SIZE as usize];
    let layout = ponte_acpi::build(&platform::ACPI, platform::ACPI_BASE, &mut acpi)
        .unwrap_or_else(|e| panic!("ACPI tables: {e:?}"));
    acpi.truncate(layout.len as usize);
    let mut smbios = vec![0u8; ponte_acpi::smbios::MAX_SIZE];
    let smbios_len =
        ponte_acpi::smbios::write(&mut smbios, platform::SMBIOS_BASE, &platform::SMBIOS)
            .unwrap_or_else(|e| panic!("SMBIOS: {e:?}"));
    smbios.truncate(smbios_len);

    let acpi_file = out.join("acpi.bin");
    let smbios_file = out.join("smbios.bin");
    fs::write(&acpi_file, &acpi).expect("write acpi.bin");
    fs::write(&smbios_file, &smbios).expect("write smbios.bin");
    let source = format!(
        "/// The ACPI tables, to be copied to [`ACPI_BASE`](crate::platform::ACPI_BASE).\n\
         pub static ACPI_TABLES: &[u8] = include_bytes!({acpi_file:?});\n\
         /// Where the RSDP lies in guest memory.\n\
         pub const RSDP: u64 = {rsdp:#x};\n\
         /// The SMBIOS entry point and structures, to be copied to\n\
         /// [`SMBIOS_BASE`](crate::platform::SMBIOS_BASE).\n\
         pub static SMBIOS_TABLES: &[u8] = include_bytes!({smbios_file:?});\n",
        rsdp = layout.rsdp,
    );
    fs::write(out.join("firmware_tables.rs"), source).expect("write firmware_tables.rs");
}
