/* HLT with RFLAGS.IF=1 sleeps until an interrupt: the LAPIC timer (one-shot,
   500 us, vector 0x40) wakes it ROUNDS times. Each wake must come from the
   timer (the handler ran), no earlier than the timer's expiry.
   REPORT: +0 wakes, +4 shortest sleep in TSC ticks, +8 one timer period. */
    .include "common.inc"
    .set VECTOR, 0x40
    .set ROUNDS, 5

main:
    SET_GATE VECTOR, timer
    mov dword ptr [APIC_SVR], 0x1ff
    mov dword ptr [APIC_TIMER_DIVIDE], 0xb      /* divide by 1 */
    mov dword ptr [APIC_LVT_TIMER], VECTOR
    call tsc_khz
    shr eax, 1                          /* 500 us of TSC */
    mov [REPORT + 8], eax
    mov dword ptr [REPORT + 4], 0xffffffff
    xor ebx, ebx
1:
    rdtsc
    mov edi, eax
    mov dword ptr [APIC_TIMER_INITIAL], 500000
    sti
    hlt
    cli
    rdtsc
    sub eax, edi
    cmp eax, [REPORT + 4]
    jae 2f
    mov [REPORT + 4], eax
2:  inc ebx
    cmp [wakes], ebx
    FAIL_IF_NE 1                        /* HLT returned without the timer */
    cmp ebx, ROUNDS
    jb 1b
    mov [REPORT], ebx
    /* Slept at least the timer's period (less rounding). */
    mov eax, [REPORT + 8]
    mov ecx, eax
    shr ecx, 10
    sub eax, ecx
    cmp [REPORT + 4], eax
    jae 3f
    FAIL 2
3:  PASS

timer:
    inc dword ptr [wakes]
    mov dword ptr [APIC_EOI], 0
    iret

    .balign 4
wakes: .long 0
