/* x2APIC mode through IA32_APIC_BASE and the x2APIC MSRs:
   - CPUID.1:ECX[21] offers x2APIC; IA32_APIC_BASE reads 0xFEE00900 (BSP,
     enabled, default base);
   - an x2APIC MSR outside x2APIC mode raises #GP;
   - EN=1 EXTD=1 enters x2APIC: the ID and version MSRs answer, the xAPIC
     page reads all ones;
   - x2APIC -> xAPIC and EN=0 EXTD=1 are invalid transitions: #GP;
   - a non-zero EOI write is reserved: #GP;
   - SELF_IPI (MSR 0x83F) and a physical fixed IPI to ID 0 through the
     64-bit ICR (MSR 0x830) deliver their vectors at once;
   - the timer through MSRs 0x832/0x83E/0x838 fires (one-shot, 100 us).
   REPORT: +0 #GPs taken, +4 self-IPIs, +8 ICR IPIs, +12 timer expiries. */
    .include "common.inc"
    .set GP_EXPECTED, 4

/* WRMSR `msr` with EDX:EAX = `high`:`low`. */
.macro WRMSR_ msr, low, high
    mov ecx, \msr
    mov eax, \low
    mov edx, \high
    wrmsr
.endm

main:
    SET_GATE 13, general_protection
    SET_GATE 0x70, self_ipi
    SET_GATE 0x72, icr_ipi
    SET_GATE 0x71, timer
    mov eax, 1
    cpuid
    test ecx, 1 << 21
    jnz 1f
    FAIL 1
1:  mov ecx, 0x1b
    rdmsr
    cmp eax, 0xfee00900
    FAIL_IF_NE 2
    test edx, edx
    FAIL_IF_NE 2
    /* x2APIC ID register while in xAPIC mode: #GP, EAX untouched. */
    mov ecx, 0x802
    mov eax, 0x5a5a5a5a
    rdmsr
    cmp dword ptr [gp], 1
    FAIL_IF_NE 3
    /* Into x2APIC mode. */
    WRMSR_ 0x1b, 0xfee00d00, 0
    cmp dword ptr [gp], 1
    FAIL_IF_NE 4
    mov ecx, 0x1b
    rdmsr
    cmp eax, 0xfee00d00
    FAIL_IF_NE 4
    mov ecx, 0x802                      /* x2APIC ID = initial APIC ID 0 */
    rdmsr
    test eax, eax
    FAIL_IF_NE 5
    mov ecx, 0x803                      /* version 0x14 */
    rdmsr
    cmp al, 0x14
    FAIL_IF_NE 5
    mov eax, [APIC_VERSION]
    cmp eax, 0xffffffff
    FAIL_IF_NE 6                        /* the xAPIC page is gone */
    /* Invalid transitions: x2APIC -> xAPIC, and EN=0 with EXTD=1. */
    WRMSR_ 0x1b, 0xfee00900, 0
    cmp dword ptr [gp], 2
    FAIL_IF_NE 7
    WRMSR_ 0x1b, 0xfee00500, 0
    cmp dword ptr [gp], 3
    FAIL_IF_NE 7
    mov ecx, 0x1b
    rdmsr
    cmp eax, 0xfee00d00
    FAIL_IF_NE 7                        /* still in x2APIC mode */
    /* Software-enable through SVR; a non-zero EOI is reserved. */
    WRMSR_ 0x80f, 0x1ff, 0
    WRMSR_ 0x80b, 1, 0
    cmp dword ptr [gp], GP_EXPECTED
    FAIL_IF_NE 8
    sti
    /* SELF_IPI. */
    WRMSR_ 0x83f, 0x70, 0
    cmp dword ptr [self_ipis], 1
    FAIL_IF_NE 9
    /* ICR: fixed, physical, destination 0 in bits 63:32. */
    WRMSR_ 0x830, 0x72, 0
    cmp dword ptr [icr_ipis], 1
    FAIL_IF_NE 10
    /* Timer: divide by 1, one-shot, 100000 counts at 1 GHz. */
    WRMSR_ 0x83e, 0xb, 0
    WRMSR_ 0x832, 0x71, 0
    WRMSR_ 0x838, 100000, 0
    call tsc_khz
    mov ecx, eax                        /* wait at most 1 ms */
    rdtsc
    mov esi, eax
2:  pause
    cmp dword ptr [timers], 1
    je 3f
    rdtsc
    sub eax, esi
    cmp eax, ecx
    jb 2b
    FAIL 11
3:  mov eax, [gp]
    mov [REPORT], eax
    mov eax, [self_ipis]
    mov [REPORT + 4], eax
    mov eax, [icr_ipis]
    mov [REPORT + 8], eax
    mov eax, [timers]
    mov [REPORT + 12], eax
    PASS

/* #GP from RDMSR/WRMSR (2 bytes): count it and skip the instruction. */
general_protection:
    inc dword ptr [gp]
    add esp, 4                          /* error code */
    add dword ptr [esp], 2
    iret

.macro X2APIC_HANDLER name, counter
\name:
    push eax
    push ecx
    push edx
    inc dword ptr [\counter]
    mov ecx, 0x80b
    xor eax, eax
    xor edx, edx
    wrmsr
    pop edx
    pop ecx
    pop eax
    iret
.endm
    X2APIC_HANDLER self_ipi, self_ipis
    X2APIC_HANDLER icr_ipi, icr_ipis
    X2APIC_HANDLER timer, timers

    .balign 4
gp: .long 0
self_ipis: .long 0
icr_ipis: .long 0
timers: .long 0
