/* Two rounds of writes to pseudo-random pages of a window, with reads of
   other pages in between; HLT ends round one (the appliance harvests the
   dirty log and resumes), the exit port ends round two.
   PARAMS: +0 window base, +8 window pages (a power of two), +16 writes per
   round, +24 round-one seed, +32 round-two seed, +40 seed of the reads.
   Page n of round r is (x >> 33) & (pages - 1), x the n-th value of the
   64-bit LCG x' = x * 6364136223846793005 + 1442695040888963407 started at
   the round's seed; the qword written is at offset (x & 0xff8) and holds x.
   1: a written qword does not read back. */
    .include "common.inc"
    .set MULTIPLIER, 6364136223846793005
    .set INCREMENT, 1442695040888963407
    .text
    .globl _start
_start:
    mov r12, [PARAMS]                /* window base */
    mov r13, [PARAMS + 8]
    dec r13                          /* page mask */
    mov r14, MULTIPLIER
    mov r15, INCREMENT
    mov rbx, [PARAMS + 24]

    mov r10, [PARAMS + 40]
    lea rbp, [rip + round1_done]
    jmp round
round1_done:
    hlt                              /* the appliance harvests here */
    mov rbx, [PARAMS + 32]
    mov r10, [PARAMS + 40]
    add r10, 1
    lea rbp, [rip + round2_done]
    jmp round
round2_done:
    PASS

/* One round: rbx = seed, r10 = seed of the reads, rbp = where to go back. */
round:
    mov r11, [PARAMS + 16]
write_page:
    imul rbx, r14
    add rbx, r15
    mov rax, rbx
    shr rax, 33
    and rax, r13
    shl rax, 12
    add rax, r12
    mov rdx, rbx
    and rdx, 0xff8
    mov [rax + rdx], rbx
    cmp [rax + rdx], rbx
    FAIL_IF_NE 1
    /* A read of another page, which must not count as dirty. */
    imul r10, r14
    add r10, r15
    mov rax, r10
    shr rax, 33
    and rax, r13
    shl rax, 12
    add rax, r12
    mov rax, [rax]
    dec r11
    jnz write_page
    jmp rbp
