//! Assembles a real-, protected- and long-mode guest and the CPUID benchmark guest (`guests/*.S`) into flat binaries loaded at 0x8000.

fn main() {
    ponte_guest_build::assemble(
        ponte_guest_build::Bits::Bits64,
        0x8000,
        &["real", "protected", "long", "cpuid_bench"],
    );
}
