/* The LAPIC timer (xAPIC registers) in its three modes, vector 0x40, its
   input clock and the TSC frequency read from CPUID leaf 0x40000010:
   - one-shot, 1 ms (divide by 16): fires once, not early, within 250 us of
     its start, the current count runs down and stays 0 afterwards (the
     allowance covers the hypervisor's exit paths: under Bochs some
     thousands of emulated instructions, i.e. TSC ticks, each);
   - periodic, 1 ms: PERIODS periods take PERIODS ms of TSC within 0.1 %,
     and writing 0 to the initial count stops it;
   - TSC-deadline (CPUID.1:ECX[24]): fires at or after IA32_TSC_DEADLINE,
     within 250 us, clears the MSR; a deadline in the past fires at once.
   The guest busy-waits: every expiry arrives through the VMX-preemption
   timer.
   REPORT: +0 TSC kHz, +4 one-shot TSC ticks, +8 expected; +12 periods,
   +16 their TSC ticks, +20 expected; +24 TSC-deadline lateness (ticks). */
    .include "common.inc"
    .set VECTOR, 0x40
    .set PERIODS, 20

main:
    call tsc_khz
    mov [REPORT], eax
    test eax, eax
    jnz 1f
    FAIL 1
1:
    mov eax, 0x40000010
    cpuid
    cmp ebx, 1000000                    /* timer input clock 1 GHz, in kHz */
    FAIL_IF_NE 2
    SET_GATE VECTOR, timer
    mov dword ptr [APIC_SVR], 0x1ff
    sti

    /* One-shot: 62500 counts at 1 GHz / 16 = 1 ms. */
    mov dword ptr [APIC_TIMER_DIVIDE], 0x3
    mov dword ptr [APIC_LVT_TIMER], VECTOR
    rdtsc
    mov edi, eax
    mov dword ptr [APIC_TIMER_INITIAL], 62500
    mov eax, [APIC_TIMER_CURRENT]
    test eax, eax
    jnz 2f
    FAIL 3                              /* not counting */
2:  cmp eax, 62500
    jbe 3f
    FAIL 3
3:  call wait_fire                      /* fired = 1 */
    mov eax, [fired_lo]
    sub eax, edi
    mov [REPORT + 4], eax
    mov ecx, [REPORT]
    mov [REPORT + 8], ecx
    /* Not early (beyond rounding), at most 250 us late. */
    mov edx, ecx
    shr edx, 10
    sub ecx, edx
    cmp eax, ecx
    jae 4f
    FAIL 4
4:  mov ecx, [REPORT]
    mov edx, ecx
    shr edx, 2
    add ecx, edx
    cmp eax, ecx
    jbe 5f
    FAIL 4
5:  /* 3 ms more: no second expiry, the count stays 0. */
    mov ecx, [REPORT]
    imul ecx, ecx, 3
    call spin_ticks
    cmp dword ptr [fired], 1
    FAIL_IF_NE 5
    mov eax, [APIC_TIMER_CURRENT]
    test eax, eax
    FAIL_IF_NE 5

    /* Periodic, 1 ms. Time PERIODS periods between two handler entries. */
    mov dword ptr [APIC_LVT_TIMER], 0x20000 | VECTOR
    mov dword ptr [APIC_TIMER_INITIAL], 62500
    call wait_fire
    mov edi, [fired_lo]
    mov ebx, [fired]
    add ebx, PERIODS
    rdtsc
    mov esi, eax
    mov ecx, [REPORT]
    imul ecx, ecx, 2 * PERIODS          /* twice the expected time */
6:  pause
    cmp [fired], ebx
    jae 61f
    rdtsc
    sub eax, esi
    cmp eax, ecx
    jb 6b
    FAIL 12
61:
    mov eax, [fired_lo]
    sub eax, edi
    mov [REPORT + 16], eax
    mov dword ptr [REPORT + 12], PERIODS
    mov eax, [REPORT]
    imul eax, eax, PERIODS
    mov [REPORT + 20], eax
    mov ecx, eax
    shr ecx, 10                         /* 0.1 % */
    mov eax, [REPORT + 16]
    sub eax, [REPORT + 20]
    jns 7f
    neg eax
7:  cmp eax, ecx
    jbe 8f
    FAIL 6
8:  /* Initial count 0 stops it. */
    mov dword ptr [APIC_TIMER_INITIAL], 0
    mov ebx, [fired]
    mov ecx, [REPORT]
    imul ecx, ecx, 3
    call spin_ticks
    cmp [fired], ebx
    FAIL_IF_NE 7

    /* TSC-deadline mode. */
    mov eax, 1
    cpuid
    test ecx, 1 << 24
    jnz 9f
    FAIL 8
9:  mov dword ptr [APIC_LVT_TIMER], 0x40000 | VECTOR
    mov ebx, [fired]
    rdtsc
    mov ecx, [REPORT]
    shl ecx, 1                          /* 2 ms */
    add eax, ecx
    adc edx, 0
    mov [deadline_lo], eax
    mov [deadline_hi], edx
    mov ecx, 0x6e0
    wrmsr
    call wait_fire
    mov eax, [fired_lo]
    mov edx, [fired_hi]
    sub eax, [deadline_lo]
    sbb edx, [deadline_hi]
    mov [REPORT + 24], eax
    test edx, edx
    FAIL_IF_NE 9                        /* early (or absurdly late) */
    mov ecx, [REPORT]
    shr ecx, 2                          /* 250 us */
    cmp eax, ecx
    jbe 10f
    FAIL 9
10: mov ecx, 0x6e0
    rdmsr
    or eax, edx
    FAIL_IF_NE 10                       /* the MSR is cleared when it fires */
    /* A deadline already passed fires at once. */
    mov ebx, [fired]
    mov ecx, 0x6e0
    mov eax, 1
    xor edx, edx
    wrmsr
    nop
    mov eax, [fired]
    sub eax, ebx
    cmp eax, 1
    FAIL_IF_NE 11
    PASS

/* Waits (busy, at most 10 ms of TSC) for the next expiry after the count in
   `fired` at entry. Clobbers EAX, ECX, EDX, ESI. */
wait_fire:
    mov edx, [fired]
    push edx
    rdtsc
    mov esi, eax
    mov ecx, [REPORT]
    imul ecx, ecx, 10
1:  pause
    pop edx
    push edx
    cmp [fired], edx
    jne 2f
    rdtsc
    sub eax, esi
    cmp eax, ecx
    jb 1b
    FAIL 12                             /* timer never fired */
2:  pop edx
    ret

timer:
    push eax
    push edx
    rdtsc
    mov [fired_lo], eax
    mov [fired_hi], edx
    inc dword ptr [fired]
    mov dword ptr [APIC_EOI], 0
    pop edx
    pop eax
    iret

    .balign 4
fired: .long 0
fired_lo: .long 0
fired_hi: .long 0
deadline_lo: .long 0
deadline_hi: .long 0
