//! The Multiboot2 header and the 32-bit entry that reaches long mode.
//!
//! A Multiboot2 loader enters `ponte_start32` in 32-bit protected mode with
//! paging off, EAX holding the loader magic and EBX the boot information.
//! The entry identity-maps the first 4 GiB with 2 MiB pages (the top GiB,
//! where the local APIC, IOAPIC and other MMIO live, uncacheable), except
//! for one unmapped guard page below the boot stack (its 2 MiB are mapped
//! with 4 KiB pages), enables long mode and calls
//! `ponte_boot_entry64(magic, info)`.

core::arch::global_asm!(
    r#"
    .section .multiboot2_header, "a"
    .balign 8
ponte_mb2_header:
    .long 0xE85250D6
    .long 0
    .long ponte_mb2_header_end - ponte_mb2_header
    .long 0x100000000 - 0xE85250D6 - (ponte_mb2_header_end - ponte_mb2_header)
    .short 0
    .short 0
    .long 8
ponte_mb2_header_end:

    .section .boot.text, "ax"
    .code32
    .global ponte_start32
ponte_start32:
    cli
    cld
    mov esp, offset ponte_boot_stack_top
    mov edi, eax
    mov esi, ebx

    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 3f
    mov eax, 0x80000001
    cpuid
    test edx, 0x20000000
    jz 3f

    mov eax, offset ponte_boot_pdpt
    or eax, 3
    mov dword ptr [ponte_boot_pml4], eax

    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 12
    add eax, offset ponte_boot_pd
    or eax, 3
    mov dword ptr [ponte_boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 2b

    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    cmp ecx, 1536
    jb 4f
    or eax, 0x18
4:
    mov dword ptr [ponte_boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jb 2b

    /* The 2 MiB holding the guard page below the boot stack: 4 KiB pages,
       all present but the guard, so that a stack overflow faults (and the
       double fault, on its own stack, ends the run) instead of silently
       overwriting what lies below. */
    mov eax, offset ponte_boot_stack_guard
    shr eax, 21
    mov edx, eax
    shl edx, 21
    xor ecx, ecx
6:
    mov ebx, ecx
    shl ebx, 12
    add ebx, edx
    cmp ebx, offset ponte_boot_stack_guard
    je 7f
    or ebx, 3
    jmp 8f
7:
    xor ebx, ebx
8:
    mov dword ptr [ponte_boot_pt + ecx * 8], ebx
    inc ecx
    cmp ecx, 512
    jb 6b
    mov ebx, offset ponte_boot_pt
    or ebx, 3
    mov dword ptr [ponte_boot_pd + eax * 8], ebx

    mov eax, offset ponte_boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80010001
    mov cr0, eax

    lgdt [ponte_boot_gdt_ptr]
    mov eax, 0x08
    push eax
    mov eax, offset ponte_start64
    push eax
    retf

3:
    mov dx, 0xE9
    mov al, 'L'
    out dx, al
    mov al, 'M'
    out dx, al
    mov al, '?'
    out dx, al
5:
    hlt
    jmp 5b

    .code64
ponte_start64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset ponte_boot_stack_top
    xor ebp, ebp
    call ponte_boot_entry64
    ud2

    .section .rodata.ponte_boot, "a"
    .balign 8
ponte_boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
ponte_boot_gdt_ptr:
    .short ponte_boot_gdt_ptr - ponte_boot_gdt - 1
    .long ponte_boot_gdt

    .section .bss.ponte_boot, "aw", @nobits
    .balign 4096
ponte_boot_pml4:
    .skip 4096
ponte_boot_pdpt:
    .skip 4096
ponte_boot_pd:
    .skip 4096 * 4
ponte_boot_pt:
    .skip 4096
ponte_boot_stack_guard:
    .skip 4096
    .global ponte_boot_stack_top
    /* 128 KiB: appliances keep their boards, memory maps and loader
       structures on the stack, several KiB per frame. */
ponte_boot_stack:
    .skip 131072
ponte_boot_stack_top:
"#
);
