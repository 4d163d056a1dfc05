/* Writes to a page the appliance made read-only in the EPT, through a
   linear alias 512 GiB up (PML4 entry 1 points at the identity map's PDPT),
   so the violation names both addresses. PARAMS+0: the page's
   guest-physical address; PARAMS+8: the value the appliance left at offset
   TARGET in it.
   1: the page does not read as the appliance left it (reads must work);
   2: the write did not land; 3: the neighbouring qword changed. */
    .include "common.inc"
    .set ALIAS, 0x8000000000
    .set TARGET, 0x238
    .set VALUE, 0x0fedcba987654321
    .text
    .globl _start
_start:
    mov rsi, [PARAMS]
    mov rax, [rsi + TARGET]
    cmp rax, [PARAMS + 8]
    FAIL_IF_NE 1
    mov rbx, [rsi + TARGET + 8]
    mov rdi, ALIAS
    add rdi, rsi
    mov rcx, VALUE
    mov [rdi + TARGET], rcx          /* EPT violation: the appliance resumes here */
    cmp [rsi + TARGET], rcx
    FAIL_IF_NE 2
    cmp [rsi + TARGET + 8], rbx
    FAIL_IF_NE 3
    PASS
