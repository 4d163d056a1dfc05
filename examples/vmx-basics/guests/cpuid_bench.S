/* 64-bit guest measuring CPUID exit round trips with RDTSC. Each of COUNT
   deltas is stored as a 32-bit value at RESULTS; then the run ends through
   the exit port with status 1. Under Bochs the TSC counts instructions, so
   each delta is the exact cost of one exit and entry plus two RDTSCs. */
    .intel_syntax noprefix
    .code64
    .set COUNT, 10000
    .set RESULTS, 0x100000
    .text
    .globl _start
_start:
    mov rdi, RESULTS
    mov r8d, COUNT
1:
    lfence
    rdtsc
    mov esi, eax
    xor eax, eax
    cpuid
    rdtsc
    sub eax, esi
    mov [rdi], eax
    add rdi, 4
    dec r8d
    jnz 1b
    xor eax, eax
    out 0xf4, al
    hlt
