//! Assembles the interrupt test guests (`guests/*.S`) into flat binaries loaded at 0x8000
//! (the 32-bit ones and the 64-bit `apic_virt`).

fn main() {
    ponte_guest_build::assemble(
        ponte_guest_build::Bits::Bits32,
        0x8000,
        &[
            "pic_pit",
            "ioapic_level",
            "lapic_timer",
            "x2apic",
            "nmi",
            "hlt_wake",
            "if_held",
            "inject_bench",
        ],
    );
    ponte_guest_build::assemble(ponte_guest_build::Bits::Bits64, 0x8000, &["apic_virt"]);
}
