/* The local APIC as a 64-bit guest uses it, whatever the hypervisor
   virtualizes: self-IPIs through the xAPIC ICR, the task priority through
   CR8 and through the xAPIC TPR (each masking and then releasing a request,
   and each read back through the other), priority order of two requests
   held by IF=0, a LAPIC timer interrupt that wakes HLT, and a
   level-triggered, active-low IOAPIC line (GSI 20 through pc-testdev)
   delivered again after each EOI while it stays raised.

   Every LAPIC vector goes to one handler that logs it and sends EOI; the
   guest compares the log with what must have arrived, in order.
   REPORT: +0 vectors logged, +4 level deliveries, +8 of them again after
   an EOI, +16.. the log (one vector per slot, 8 slots).
   Entered in 64-bit mode, identity-mapped (4 GiB), at 0x8000. */

    .intel_syntax noprefix
    .code64

    .set EXIT_PORT, 0xf4
    .set REPORT, 0x100000
    .set REPORT_UNEXPECTED, REPORT + 0x3c
    .set UNEXPECTED_CHECK, 0x7f
    .set IDT, 0x1000
    .set APIC, 0xfee00000
    .set IOAPIC, 0xfec00000
    .set TESTDEV_IRQ, 0x2000
    .set LOG_SLOTS, 8

    /* xAPIC register offsets (the base is in R15) */
    .set TPR, 0x80
    .set EOI, 0xb0
    .set SVR, 0xf0
    .set ISR, 0x100
    .set TMR, 0x180
    .set IRR, 0x200
    .set ICR_LOW, 0x300
    .set LVT_TIMER, 0x320
    .set TIMER_INITIAL, 0x380
    .set TIMER_DIVIDE, 0x3e0

    .set GSI, 20
    .set LEVEL_VECTOR, 0x60
    .set DELIVERIES, 3

.macro FAIL code
    mov al, \code
    out EXIT_PORT, al
99: hlt
    jmp 99b
.endm

/* Fails with `code` unless the flags say equal. */
.macro FAIL_IF_NE code
    je 98f
    FAIL \code
98:
.endm

/* Fails with `code` unless logged vector number `index` is `vector`. */
.macro EXPECT_LOGGED index, vector, code
    cmp dword ptr [REPORT + 16 + 4 * \index], \vector
    FAIL_IF_NE \code
.endm

/* Fails with `code` unless `count` vectors were logged. */
.macro EXPECT_COUNT count, code
    cmp dword ptr [REPORT], \count
    FAIL_IF_NE \code
.endm

.macro SET_GATE vector, handler
    mov eax, \vector
    lea rbx, [rip + \handler]
    call set_gate
.endm

/* A fixed, edge self-IPI (ICR shorthand "self") of `vector`. */
.macro SELF_IPI vector
    mov dword ptr [r15 + ICR_LOW], 0x44000 | \vector
.endm

    .text
    .globl _start
_start:
    lgdt [rip + gdt_pointer]
    lea rax, [rip + 1f]
    push 0x08
    push rax
    retfq
1:  mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    /* 256 gates, each to its unexpected-vector stub. */
    xor eax, eax
    lea rbx, [rip + unexpected_stubs]
2:  call set_gate
    add rbx, 10
    inc eax
    cmp eax, 256
    jne 2b
    lidt [rip + idt_pointer]
    mov r15, APIC
    mov r14, IOAPIC
    jmp main

/* EAX = vector, RBX = handler; clobbers RCX, RDX. */
set_gate:
    mov edx, eax
    shl edx, 4
    add edx, IDT
    mov ecx, ebx
    and ecx, 0xffff
    or ecx, 0x00080000
    mov [rdx], ecx
    mov ecx, ebx
    and ecx, 0xffff0000
    or ecx, 0x8e00
    mov [rdx + 4], ecx
    mov rcx, rbx
    shr rcx, 32
    mov [rdx + 8], ecx
    mov dword ptr [rdx + 12], 0
    ret

/* Waits about ECX TSC ticks without exits. Clobbers EAX, EDX, ESI. */
spin_ticks:
    rdtsc
    mov esi, eax
1:  pause
    rdtsc
    sub eax, esi
    cmp eax, ecx
    jb 1b
    ret

/* Gives a request time to arrive (or to show that it does not). */
settle:
    push rcx
    mov ecx, 20000
    call spin_ticks
    pop rcx
    ret

main:
    .irp vector, 0x38, 0x40, 0x45, 0x50, 0x55, 0x68
    SET_GATE \vector, logged_\vector
    .endr
    SET_GATE LEVEL_VECTOR, level_handler
    mov dword ptr [r15 + SVR], 0x1ff
    sti

    /* 1: a self-IPI arrives. */
    SELF_IPI 0x40
    call settle
    EXPECT_COUNT 1, 1
    EXPECT_LOGGED 0, 0x40, 1

    /* 2-5: CR8 = 5 masks class 4 until CR8 = 3; the xAPIC TPR reads 0x50. */
    mov eax, 5
    mov cr8, rax
    SELF_IPI 0x45
    call settle
    EXPECT_COUNT 1, 2
    mov rax, cr8
    cmp rax, 5
    FAIL_IF_NE 3
    cmp dword ptr [r15 + TPR], 0x50
    FAIL_IF_NE 4
    mov eax, 3
    mov cr8, rax
    call settle
    EXPECT_COUNT 2, 5
    EXPECT_LOGGED 1, 0x45, 5

    /* 6-8: the xAPIC TPR = 0x60 masks class 5 (CR8 reads 6) until it is 0. */
    mov dword ptr [r15 + TPR], 0x60
    SELF_IPI 0x55
    call settle
    EXPECT_COUNT 2, 6
    mov rax, cr8
    cmp rax, 6
    FAIL_IF_NE 7
    mov dword ptr [r15 + TPR], 0
    call settle
    EXPECT_COUNT 3, 8
    EXPECT_LOGGED 2, 0x55, 8

    /* 9-10: two requests held by IF=0 arrive highest first after STI. */
    cli
    SELF_IPI 0x38
    SELF_IPI 0x68
    call settle
    EXPECT_COUNT 3, 9
    sti
    call settle
    EXPECT_COUNT 5, 10
    EXPECT_LOGGED 3, 0x68, 10
    EXPECT_LOGGED 4, 0x38, 10

    /* 11: a one-shot LAPIC timer (vector 0x50, 100 us) wakes HLT. */
    mov dword ptr [r15 + TIMER_DIVIDE], 0xb
    mov dword ptr [r15 + LVT_TIMER], 0x50
    mov dword ptr [r15 + TIMER_INITIAL], 100000
    mov ecx, 1000
3:  hlt
    cmp dword ptr [REPORT], 6
    je 4f
    loop 3b
4:  EXPECT_COUNT 6, 11
    EXPECT_LOGGED 5, 0x50, 11

    /* 12-17: GSI 20, level and active low, to vector 0x60: delivered again
       after each EOI while raised; the third delivery lowers it. */
    mov dword ptr [r14], 0x10 + 2 * GSI
    mov dword ptr [r14 + 0x10], 0xa000 | LEVEL_VECTOR
    mov dword ptr [r14], 0x11 + 2 * GSI
    mov dword ptr [r14 + 0x10], 0
    mov dx, TESTDEV_IRQ + GSI
    mov al, 1
    out dx, al
    mov ecx, 100000
    call spin_ticks
    cmp dword ptr [REPORT + 4], DELIVERIES
    FAIL_IF_NE 15
    cmp dword ptr [REPORT + 8], DELIVERIES - 1
    FAIL_IF_NE 15
    mov dword ptr [r14], 0x10 + 2 * GSI
    test dword ptr [r14 + 0x10], 1 << 14
    FAIL_IF_NE 16                       /* Remote IRR still set */
    mov eax, [r15 + ISR + 0x30]
    or eax, [r15 + IRR + 0x30]
    test eax, 1
    FAIL_IF_NE 17                       /* 0x60 still in service or requested */
    EXPECT_COUNT 6, 18                  /* nothing else arrived */

    xor eax, eax
    out EXIT_PORT, al
5:  hlt
    jmp 5b

/* The logged vectors: record the vector, EOI, return. */
    .irp vector, 0x38, 0x40, 0x45, 0x50, 0x55, 0x68
logged_\vector:
    push rax
    mov eax, \vector
    jmp record
    .endr

record:
    push rbx
    mov ebx, [REPORT]
    cmp ebx, LOG_SLOTS
    jae 1f
    mov [REPORT + 16 + rbx * 4], eax
1:  inc dword ptr [REPORT]
    mov dword ptr [r15 + EOI], 0
    pop rbx
    pop rax
    iretq

level_handler:
    push rax
    push rdx
    inc dword ptr [REPORT + 4]
    cmp dword ptr [REPORT + 4], 1
    je 1f
    inc dword ptr [REPORT + 8]
1:  /* Remote IRR set, 0x60 in service and level-triggered. */
    mov dword ptr [r14], 0x10 + 2 * GSI
    test dword ptr [r14 + 0x10], 1 << 14
    jnz 2f
    FAIL 12
2:  test dword ptr [r15 + ISR + 0x30], 1
    jnz 3f
    FAIL 13
3:  test dword ptr [r15 + TMR + 0x30], 1
    jnz 4f
    FAIL 14
4:  cmp dword ptr [REPORT + 4], DELIVERIES
    jb 5f
    mov dx, TESTDEV_IRQ + GSI
    xor al, al
    out dx, al
5:  mov dword ptr [r15 + EOI], 0
    pop rdx
    pop rax
    iretq

unexpected_stubs:
    .set vector, 0
    .rept 256
    .byte 0x68                          /* push imm32 */
    .long vector
    .byte 0xe9                          /* jmp rel32 */
    .long unexpected - (. + 4)
    .set vector, vector + 1
    .endr

unexpected:
    pop rax
    mov [REPORT_UNEXPECTED], eax
    FAIL UNEXPECTED_CHECK

    .balign 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff            /* 0x10: flat data */
gdt_pointer:
    .word gdt_pointer - gdt - 1
    .quad gdt
idt_pointer:
    .word 256 * 16 - 1
    .quad IDT
