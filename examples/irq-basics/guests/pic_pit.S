/* PIC + PIT: channel 0 in mode 2 at 1193 counts (1000.15 Hz), the master
   8259A remapped to vector 0x20 and reaching the CPU through the LAPIC's
   virtual wire (LINT0 in ExtINT mode). The guest busy-waits (no exits) for
   TICKS IRQ0 interrupts, which arrive through the VMX-preemption timer, and
   compares the TSC time they took with TICKS periods at the TSC frequency
   of CPUID leaf 0x40000010, within 0.1 %.
   REPORT: +0 TSC kHz, +4 ticks, +8 measured TSC ticks, +12 expected,
   +16 the kHz of CPUID leaf 0x15 (0 when it is absent). */
    .include "common.inc"
    .set TICKS, 50
    .set PIT_COUNT, 1193

main:
    call tsc_khz
    mov [REPORT], eax
    test eax, eax
    jnz 1f
    FAIL 1                              /* no TSC frequency offered */
1:
    /* Leaf 0x15, when the policy offers it, names the same frequency:
       ECX * EBX / EAX Hz. REPORT + 16: its kHz, 0 when absent. */
    xor eax, eax
    cpuid
    cmp eax, 0x15
    jb 2f
    mov eax, 0x15
    cpuid
    test eax, eax
    jz 2f
    test ebx, ebx
    jz 2f
    mov esi, eax
    mov eax, ecx
    mul ebx
    div esi                             /* Hz */
    xor edx, edx
    mov ecx, 1000
    div ecx
    mov [REPORT + 16], eax
    cmp eax, [REPORT]
    FAIL_IF_NE 6                        /* leaf 0x15 disagrees */
2:
    SET_GATE 0x20, irq0
    /* Master at 0x20, slave at 0x28, cascade on IR2; only IRQ0 unmasked. */
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xa1, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x02
    out 0xa1, al
    mov al, 0x01
    out 0x21, al
    out 0xa1, al
    mov al, 0xfe
    out 0x21, al
    mov al, 0xff
    out 0xa1, al
    in al, 0x21
    cmp al, 0xfe
    FAIL_IF_NE 2                        /* IMR does not read back */
    /* Virtual wire: APIC software-enabled, LINT0 ExtINT. */
    mov dword ptr [APIC_SVR], 0x1ff
    mov dword ptr [APIC_LVT_LINT0], 0x700

    /* PIT channel 0: lobyte/hibyte, mode 2, binary. */
    mov al, 0x34
    out 0x43, al
    mov al, PIT_COUNT & 0xff
    out 0x40, al
    mov al, PIT_COUNT >> 8
    out 0x40, al
    sti

    /* Synchronise on a tick, then time TICKS more, spinning without exits
       (each wait bounded by twice its length in TSC ticks). */
    mov ebx, [ticks]
    inc ebx
    mov ecx, [REPORT]
    shl ecx, 1                          /* 2 ms */
    call wait_ticks
    rdtsc
    mov edi, eax
    mov ebx, [ticks]
    add ebx, TICKS
    mov ecx, [REPORT]
    imul ecx, ecx, 2 * TICKS
    call wait_ticks
    rdtsc
    sub eax, edi
    mov [REPORT + 8], eax
    mov dword ptr [REPORT + 4], TICKS
    cli

    /* Expected: TICKS * 1193 / 1193182 s at kHz * 1000 per second. */
    mov eax, TICKS * PIT_COUNT * 1000
    mul dword ptr [REPORT]
    mov ecx, 1193182
    div ecx
    mov [REPORT + 12], eax
    /* |measured - expected| <= expected / 1024 (0.1 %): the PIT model and
       the guest TSC read the same counter, so what remains is the kHz
       rounding of the TSC frequency (< 0.003 % here) and the difference in
       delivery latency between the first and the last tick (a few hundred
       TSC ticks against 50 ms). */
    mov ecx, eax
    shr ecx, 10
    mov eax, [REPORT + 8]
    sub eax, [REPORT + 12]
    jns 3f
    neg eax
3:  cmp eax, ecx
    jbe 4f
    FAIL 3                              /* tick rate off */
4:
    /* The counter reads back within its period (latch, lobyte, hibyte). */
    xor al, al
    out 0x43, al
    in al, 0x40
    mov cl, al
    in al, 0x40
    mov ch, al
    cmp cx, PIT_COUNT
    jbe 5f
    FAIL 4
5:
    /* Nothing left in service at the master (OCW3: read ISR). */
    mov al, 0x0b
    out 0x20, al
    in al, 0x20
    test al, al
    FAIL_IF_NE 5
    PASS

/* Waits (busy) until `ticks` reaches EBX, at most ECX TSC ticks.
   Clobbers EAX, EDX, ESI. */
wait_ticks:
    rdtsc
    mov esi, eax
1:  pause
    cmp [ticks], ebx
    jae 2f
    rdtsc
    sub eax, esi
    cmp eax, ecx
    jb 1b
    FAIL 7                              /* the PIT stopped ticking */
2:  ret

irq0:
    inc dword ptr [ticks]
    push eax
    mov al, 0x20                        /* non-specific EOI */
    out 0x20, al
    pop eax
    iret

    .balign 4
ticks: .long 0
