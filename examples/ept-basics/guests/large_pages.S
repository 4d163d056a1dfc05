/* Touches all of RAM: PARAMS+0 holds its size (a multiple of 2 MiB).
   From 2 MiB on, writes a pattern derived from the address at the first and
   the last qword of every 2 MiB, and at the last qword of RAM; then reads
   every one back.
   1: a first qword reads back wrong; 2: a last qword reads back wrong. */
    .include "common.inc"
    .set STEP, 0x200000
    .set PATTERN, 0x5a5aa5a5c3c33c3c
    .text
    .globl _start
_start:
    mov r8, [PARAMS]                 /* RAM size */
    mov r9, PATTERN
    mov rdi, STEP
write_loop:
    mov rax, rdi
    xor rax, r9
    mov [rdi], rax
    not rax
    mov [rdi + STEP - 8], rax
    add rdi, STEP
    cmp rdi, r8
    jb write_loop

    mov rdi, STEP
read_loop:
    mov rax, rdi
    xor rax, r9
    cmp [rdi], rax
    FAIL_IF_NE 1
    not rax
    cmp [rdi + STEP - 8], rax
    FAIL_IF_NE 2
    add rdi, STEP
    cmp rdi, r8
    jb read_loop
    PASS
