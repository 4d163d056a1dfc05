/* Touches all of RAM in two regions. PARAMS: +0 the size of the RAM at 0
   (a multiple of 2 MiB), +8 and +16 base and length of a second RAM region
   (a multiple of 4 KiB). From 2 MiB on in the first region, and from its
   start in the second, writes a pattern derived from the address at the
   first and the last qword of every STEP bytes (2 MiB, then 4 KiB); then
   reads every one back.
   1, 3: a first qword reads back wrong; 2, 4: a last qword does. */
    .include "common.inc"
    .set PATTERN, 0x5a5aa5a5c3c33c3c

/* Writes then checks [rdi, r8) in steps of r10 bytes. */
.macro TOUCH code_first, code_last
    mov rsi, rdi
write\@:
    mov rax, rsi
    xor rax, r9
    mov [rsi], rax
    not rax
    mov [rsi + r10 - 8], rax
    add rsi, r10
    cmp rsi, r8
    jb write\@
    mov rsi, rdi
read\@:
    mov rax, rsi
    xor rax, r9
    cmp [rsi], rax
    FAIL_IF_NE \code_first
    not rax
    cmp [rsi + r10 - 8], rax
    FAIL_IF_NE \code_last
    add rsi, r10
    cmp rsi, r8
    jb read\@
.endm

    .text
    .globl _start
_start:
    mov r9, PATTERN
    mov rdi, 0x200000
    mov r8, [PARAMS]
    mov r10, 0x200000
    TOUCH 1, 2
    mov rdi, [PARAMS + 8]
    mov r8, rdi
    add r8, [PARAMS + 16]
    mov r10, 0x1000
    TOUCH 3, 4
    PASS
