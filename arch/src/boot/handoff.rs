//! Handing the machine to a kernel's 32-bit PVH entry without VMX: the
//! image leaves long mode and jumps, and never runs again.
//!
//! The state at the jump is what the PVH boot ABI (Xen's
//! `docs/misc/pvh.pandoc`) promises: 32-bit protected mode with paging off,
//! a flat 32-bit code segment and flat read/write data segments, CR0 with
//! only PE (and the hard-wired ET) set, CR4 zero, EFER.LME clear, RFLAGS
//! with IF and TF clear, EBX holding the physical address of the
//! `hvm_start_info`. The way out of long mode follows the SDM (Vol. 3,
//! 10.8.5.4): a far return to a 32-bit code segment (compatibility mode),
//! CR0.PG cleared (which clears EFER.LMA), then EFER.LME cleared.

use crate::memory::HostMemory;

use super::Console;

/// Leaves long mode and jumps to the 32-bit PVH entry `entry` with EBX =
/// `start_info`. Consumes the image's memory: nothing of the image runs
/// again. Before the jump the console is drained and the IDT emptied, so an
/// exception before the kernel installs its own IDT shuts the machine down
/// (triple fault) instead of entering the image's handlers with the
/// kernel's state. The caller is expected to have loaded a kernel whose PVH
/// entry is `entry` and written its `hvm_start_info` at `start_info`; both
/// addresses are physical.
pub fn enter_pvh32(memory: HostMemory, entry: u32, start_info: u32) -> ! {
    drop(memory);
    Console::drain();
    #[cfg(target_os = "none")]
    // SAFETY: runs at CPL 0 in 64-bit mode on the identity map, inside the
    // image (its code, the handoff GDT and the stack are below 4 GiB and
    // identity-mapped, so execution continues across the paging switch).
    // Rust code never runs again: interrupts are off, the IDT is empty and
    // the routine ends in the jump to `entry`.
    unsafe {
        ponte_enter_pvh32(entry, start_info)
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (entry, start_info);
        unreachable!("the PVH handoff runs only in an image")
    }
}

#[cfg(target_os = "none")]
extern "C" {
    /// The handoff itself: `entry` in EDI, `start_info` in ESI.
    fn ponte_enter_pvh32(entry: u32, start_info: u32) -> !;
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .text.ponte_handoff, "ax"
    .code64
    .global ponte_enter_pvh32
ponte_enter_pvh32:
    cli
    cld
    lidt [rip + ponte_handoff_idt_ptr]
    lgdt [rip + ponte_handoff_gdt_ptr]
    push 0x08
    lea rax, [rip + 2f]
    push rax
    retfq

    .code32
2:
    mov eax, 0x10
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    /* Paging off: the processor leaves IA-32e mode (EFER.LMA clears). */
    mov eax, cr0
    and eax, 0x7fffffff
    mov cr0, eax
    /* EFER.LME off. */
    mov ecx, 0xc0000080
    rdmsr
    and eax, 0xfffffeff
    wrmsr
    /* CR4 zero, then CR0 with only PE and ET. */
    xor eax, eax
    mov cr4, eax
    mov eax, 0x11
    mov cr0, eax
    mov ebx, esi
    xor eax, eax
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor ebp, ebp
    jmp edi
    .code64

    .section .rodata.ponte_handoff, "a"
    .balign 16
ponte_handoff_gdt:
    .quad 0
    /* 0x08: flat 32-bit code, execute/read, accessed. */
    .quad 0x00CF9B000000FFFF
    /* 0x10: flat 32-bit data, read/write, accessed. */
    .quad 0x00CF93000000FFFF
ponte_handoff_gdt_ptr:
    .short ponte_handoff_gdt_ptr - ponte_handoff_gdt - 1
    .quad ponte_handoff_gdt
    .balign 16
ponte_handoff_idt_ptr:
    .short 0
    .quad 0
"#
);
