/* Writes and reads back pc-testdev's MMIO window at 0xff000000 with every
   width, sign- and zero-extending loads, and read-modify-writes. The
   appliance checks the device saw exactly these accesses, in order. */
    .include "common.inc"
    .set IOMEM, 0xff000000
    .text
    .globl _start
_start:
    mov edi, IOMEM

    /* Byte, word, dword and qword stores, each read back at its width. */
    mov byte ptr [rdi + 0x10], 0x85
    mov al, [rdi + 0x10]
    cmp al, 0x85
    FAIL_IF_NE 1
    mov word ptr [rdi + 0x20], 0xbeef
    mov ax, [rdi + 0x20]
    cmp ax, 0xbeef
    FAIL_IF_NE 2
    mov dword ptr [rdi + 0x40], 0x89abcdef
    mov eax, [rdi + 0x40]
    cmp eax, 0x89abcdef
    FAIL_IF_NE 3
    mov rdx, 0x0123456789abcdef
    mov [rdi + 0x80], rdx
    mov rbx, [rdi + 0x80]
    cmp rbx, rdx
    FAIL_IF_NE 4

    /* Loads that extend: 0x85 and 0xbeef are negative. */
    movsx rcx, byte ptr [rdi + 0x10]
    mov rax, 0xffffffffffffff85
    cmp rcx, rax
    FAIL_IF_NE 5
    movzx ecx, byte ptr [rdi + 0x10]
    cmp rcx, 0x85
    FAIL_IF_NE 6
    movsx ecx, word ptr [rdi + 0x20]
    mov eax, 0xffffbeef
    cmp rcx, rax                     /* 32-bit destination: upper half zero */
    FAIL_IF_NE 7
    movzx rcx, word ptr [rdi + 0x20]
    cmp rcx, 0xbeef
    FAIL_IF_NE 8

    /* Read-modify-writes on the device, then read back. */
    and dword ptr [rdi + 0x40], 0x0ff00ff0
    mov eax, [rdi + 0x40]
    cmp eax, 0x09a00de0
    FAIL_IF_NE 9
    or word ptr [rdi + 0x20], 0x0110
    mov ax, [rdi + 0x20]
    cmp ax, 0xbfff
    FAIL_IF_NE 10
    mov rdx, 0xf000000000000000
    or [rdi + 0x80], rdx
    mov rbx, 0xf123456789abcdef
    mov rax, [rdi + 0x80]
    cmp rax, rbx
    FAIL_IF_NE 11
    /* AND into a register: the device is read, not written. */
    mov eax, 0xffff0000
    and eax, [rdi + 0x40]
    cmp eax, 0x09a00000
    FAIL_IF_NE 12
    PASS
