/* Injection latency: COUNT times, read the TSC and raise GSI 5 through
   pc-testdev (an OUT that exits; the appliance raises the line; the next
   entry injects vector 0x50 through the IOAPIC and LAPIC); the handler's
   first instruction reads the TSC. Each delta goes to RESULTS (32-bit) for
   the appliance's median. Under Bochs the TSC counts instructions, so each
   delta is the exact cost of the path. */
    .include "common.inc"
    .set GSI, 5
    .set VECTOR, 0x50
    .set COUNT, 1000
    .set RESULTS, 0x200000

main:
    SET_GATE VECTOR, handler
    mov dword ptr [APIC_SVR], 0x1ff
    IOAPIC_ROUTE GSI, VECTOR, 0
    sti
    mov edi, RESULTS
    mov ebx, COUNT
1:  lfence
    rdtsc
    mov [start], eax
    mov dx, TESTDEV_IRQ + GSI
    mov al, 1
    out dx, al
    /* The handler ran before this instruction. */
    mov eax, [taken]
    sub eax, [start]
    mov [edi], eax
    add edi, 4
    mov dx, TESTDEV_IRQ + GSI
    xor al, al
    out dx, al
    dec ebx
    jnz 1b
    mov eax, [handled]
    mov [REPORT], eax
    cmp eax, COUNT
    FAIL_IF_NE 1
    PASS

handler:
    rdtsc
    mov [taken], eax
    inc dword ptr [handled]
    mov dword ptr [APIC_EOI], 0
    iret

    .balign 4
start: .long 0
taken: .long 0
handled: .long 0
