/* A level-triggered, active-low line through the IOAPIC: pc-testdev drives
   GSI 20 (IOAPIC pin 20, wired active-low as PCI INTx), routed to vector
   0x60. The handler checks Remote IRR and the LAPIC's ISR and TMR, and sends
   EOI while the line is still asserted: the IOAPIC must deliver it again.
   On the third delivery the handler lowers the line before its EOI: no
   delivery may follow.
   REPORT: +0 deliveries, +4 deliveries while the line was still raised
   after an EOI. */
    .include "common.inc"
    .set GSI, 20
    .set VECTOR, 0x60
    .set DELIVERIES, 3

main:
    SET_GATE VECTOR, handler
    mov dword ptr [APIC_SVR], 0x1ff
    /* Vector 0x60, fixed, physical, active low (bit 13), level (bit 15),
       unmasked; destination APIC 0. */
    IOAPIC_ROUTE GSI, 0xa000 | VECTOR, 0
    mov dword ptr [IOAPIC], 0x10 + 2 * GSI
    mov eax, [IOAPIC_WIN]
    cmp eax, 0xa000 | VECTOR
    FAIL_IF_NE 1                        /* redirection entry does not read back */
    sti
    /* Raise the line: the handler runs right after this OUT. */
    mov dx, TESTDEV_IRQ + GSI
    mov al, 1
    out dx, al
    /* Give any further delivery time to arrive: 1 ms at 50 MHz and more. */
    mov ecx, 100000
    call spin_ticks
    mov eax, [deliveries]
    mov [REPORT], eax
    cmp eax, DELIVERIES
    FAIL_IF_NE 2                        /* not re-delivered, or delivered after lowering */
    /* Remote IRR clear, nothing in service or requested. */
    mov dword ptr [IOAPIC], 0x10 + 2 * GSI
    test dword ptr [IOAPIC_WIN], 1 << 14
    FAIL_IF_NE 3
    mov eax, [APIC_ISR + 0x30]
    or eax, [APIC_IRR + 0x30]
    test eax, 1
    FAIL_IF_NE 4
    mov eax, [redelivered]
    mov [REPORT + 4], eax
    cmp eax, DELIVERIES - 1
    FAIL_IF_NE 5
    PASS

handler:
    push eax
    push edx
    inc dword ptr [deliveries]
    /* Delivered while the line had been left raised after an EOI? */
    cmp dword ptr [deliveries], 1
    je 1f
    inc dword ptr [redelivered]
1:
    /* Remote IRR set while the interrupt is in service. */
    mov dword ptr [IOAPIC], 0x10 + 2 * GSI
    test dword ptr [IOAPIC_WIN], 1 << 14
    jnz 2f
    FAIL 6
2:
    /* Vector 0x60 is bit 0 of ISR/TMR word 3, and level-triggered. */
    test dword ptr [APIC_ISR + 0x30], 1
    jnz 3f
    FAIL 7
3:  test dword ptr [APIC_TMR + 0x30], 1
    jnz 4f
    FAIL 8
4:
    cmp dword ptr [deliveries], DELIVERIES
    jb 5f
    /* Last one: lower the line before the EOI. */
    mov dx, TESTDEV_IRQ + GSI
    xor al, al
    out dx, al
5:
    mov dword ptr [APIC_EOI], 0
    pop edx
    pop eax
    iret

    .balign 4
deliveries: .long 0
redelivered: .long 0
