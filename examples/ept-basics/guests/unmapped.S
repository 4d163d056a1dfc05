/* Reads and writes guest-physical addresses nothing owns: a reserved hole
   (0xd0000000) and an address past the end of RAM (0x20000000). Reads give
   all ones at every width; writes are dropped; the guest goes on. */
    .include "common.inc"
    .set HOLE, 0xd0000000
    .set PAST_RAM, 0x20000000
    .text
    .globl _start
_start:
    mov edi, HOLE
    xor eax, eax
    mov al, [rdi]
    cmp eax, 0xff
    FAIL_IF_NE 1
    xor eax, eax
    mov ax, [rdi + 2]
    cmp eax, 0xffff
    FAIL_IF_NE 2
    mov rax, 0x1234567800000000
    mov eax, [rdi + 4]               /* zero-extends: upper half cleared */
    mov rcx, 0xffffffff
    cmp rax, rcx
    FAIL_IF_NE 3
    mov rax, [rdi + 8]
    cmp rax, -1
    FAIL_IF_NE 4
    mov dword ptr [rdi + 0x10], 0x12345678
    mov eax, [rdi + 0x10]
    cmp eax, 0xffffffff
    FAIL_IF_NE 5
    mov esi, PAST_RAM
    mov qword ptr [rsi], 0
    movzx eax, byte ptr [rsi + 1]
    cmp eax, 0xff
    FAIL_IF_NE 6
    PASS
