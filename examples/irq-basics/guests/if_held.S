/* Interrupts held while RFLAGS.IF=0 and delivered right after STI (after
   the one-instruction STI shadow):
   - a line: pc-testdev raises GSI 5 (IOAPIC pin 5, edge, vector 0x50)
     during CLI; nothing arrives for 1 ms; after STI the handler has run by
     the instruction after the shadow;
   - a timer: the LAPIC timer (one-shot, 200 us, vector 0x51) expires during
     a 1 ms CLI section; its vector waits in the IRR; after STI it arrives
     the same way.
   REPORT: +0 line deliveries, +4 timer deliveries. */
    .include "common.inc"
    .set GSI, 5
    .set LINE_VECTOR, 0x50
    .set TIMER_VECTOR, 0x51

main:
    SET_GATE LINE_VECTOR, line
    SET_GATE TIMER_VECTOR, timer
    mov dword ptr [APIC_SVR], 0x1ff
    IOAPIC_ROUTE GSI, LINE_VECTOR, 0
    call tsc_khz
    mov [khz], eax

    /* A line raised during CLI. */
    cli
    mov dx, TESTDEV_IRQ + GSI
    mov al, 1
    out dx, al
    mov ecx, [khz]
    call spin_ticks
    cmp dword ptr [lines], 0
    FAIL_IF_NE 1                        /* delivered with IF=0 */
    test dword ptr [APIC_IRR + 0x20], 1 << (LINE_VECTOR - 0x40)
    jnz 1f
    FAIL 2                              /* not requested */
1:  sti
    nop                                 /* STI shadow */
    mov eax, [lines]
    cmp eax, 1
    FAIL_IF_NE 3
    mov dx, TESTDEV_IRQ + GSI
    xor al, al
    out dx, al

    /* A timer expiring during CLI. */
    cli
    mov dword ptr [APIC_TIMER_DIVIDE], 0xb
    mov dword ptr [APIC_LVT_TIMER], TIMER_VECTOR
    mov dword ptr [APIC_TIMER_INITIAL], 200000
    mov ecx, [khz]
    call spin_ticks
    cmp dword ptr [timers], 0
    FAIL_IF_NE 4
    mov eax, [APIC_TIMER_CURRENT]
    test eax, eax
    FAIL_IF_NE 5                        /* the timer has not expired */
    test dword ptr [APIC_IRR + 0x20], 1 << (TIMER_VECTOR - 0x40)
    jnz 2f
    FAIL 5
2:  sti
    nop
    mov eax, [timers]
    cmp eax, 1
    FAIL_IF_NE 6
    mov eax, [lines]
    mov [REPORT], eax
    mov eax, [timers]
    mov [REPORT + 4], eax
    PASS

line:
    inc dword ptr [lines]
    mov dword ptr [APIC_EOI], 0
    iret

timer:
    inc dword ptr [timers]
    mov dword ptr [APIC_EOI], 0
    iret

    .balign 4
khz: .long 0
lines: .long 0
timers: .long 0
