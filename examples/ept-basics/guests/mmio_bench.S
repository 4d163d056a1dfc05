/* Measures COUNT RDTSC-bracketed 32-bit reads of pc-testdev's MMIO window,
   each a full EPT-violation exit, emulation and entry; stores each delta as
   a 32-bit value at RESULTS. */
    .include "common.inc"
    .set IOMEM, 0xff000000
    .set COUNT, 2000
    .text
    .globl _start
_start:
    mov edi, IOMEM
    mov r9, RESULTS
    mov r8d, COUNT
measure:
    lfence
    rdtsc
    mov esi, eax
    mov ecx, [rdi]
    rdtsc
    sub eax, esi
    mov [r9], eax
    add r9, 4
    dec r8d
    jnz measure
    PASS
