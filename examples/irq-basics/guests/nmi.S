/* An NMI sent to itself through the xAPIC ICR (delivery mode NMI, physical
   destination 0) reaches vector 2 even with RFLAGS.IF=0. Inside the NMI
   handler a second NMI is sent: NMIs are blocked until IRET, so it must
   not nest, and must arrive right after the IRET.
   REPORT: +0 NMIs taken, +4 nested NMIs (must be 0). */
    .include "common.inc"

main:
    SET_GATE 2, nmi
    mov dword ptr [APIC_SVR], 0x1ff
    cli
    mov dword ptr [APIC_ICR_HIGH], 0
    mov dword ptr [APIC_ICR_LOW], 0x400
    /* Both NMIs have been taken by now (the second right after IRET). */
    mov eax, [nmis]
    mov [REPORT], eax
    mov ecx, [nested]
    mov [REPORT + 4], ecx
    cmp eax, 2
    FAIL_IF_NE 1
    test ecx, ecx
    FAIL_IF_NE 2
    /* The ICR's delivery status is idle again. */
    test dword ptr [APIC_ICR_LOW], 1 << 12
    FAIL_IF_NE 3
    PASS

nmi:
    cmp dword ptr [in_nmi], 0
    je 1f
    inc dword ptr [nested]
1:  mov dword ptr [in_nmi], 1
    inc dword ptr [nmis]
    cmp dword ptr [nmis], 1
    jne 2f
    /* A second NMI while this one is being handled: held until IRET. */
    mov dword ptr [APIC_ICR_LOW], 0x400
    cmp dword ptr [nmis], 1
    je 2f
    FAIL 4                              /* delivered inside the handler */
2:  mov dword ptr [in_nmi], 0
    iret

    .balign 4
nmis: .long 0
nested: .long 0
in_nmi: .long 0
