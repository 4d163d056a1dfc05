//! Assembles the EPT test guests (`guests/*.S`) into flat binaries loaded at 0x8000.

fn main() {
    ponte_guest_build::assemble(
        ponte_guest_build::Bits::Bits64,
        0x8000,
        &[
            "large_pages",
            "mmio",
            "mmio_bench",
            "readonly",
            "dirty",
            "unmapped",
        ],
    );
}
