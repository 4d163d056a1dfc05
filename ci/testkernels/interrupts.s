# The interrupt checks, `.include`d after common.s: a pc-testdev line,
# raised and lowered by port writes, reaches the CPU through the IOAPIC and
# the local APIC as a level-triggered interrupt (see common.s for the line
# and its routing).

.set COM1_VECTOR, 0x41
.set COM1_IOAPIC_ENTRY, 0x10 + 2 * 4

.section .bss
com1_count:     .long 0
com1_iir:       .long 0

.text
interrupt_checks:
# Local APIC: enabled at its default base, software-enabled, TPR 0.
    mov ecx, 0x1b                   # IA32_APIC_BASE
    rdmsr
    test eax, 1 << 11
    require nz, EXIT_LAPIC, "IA32_APIC_BASE says the local APIC is disabled"
    and eax, 0xfffff000
    or edx, edx
    require z, EXIT_LAPIC, "local APIC above 4 GiB"
    cmp eax, LAPIC_DEFAULT_BASE
    require e, EXIT_LAPIC, "local APIC not at 0xfee00000"
    mov [lapic_base], eax
    mov ebx, eax
    mov dword ptr [ebx + 0x80], 0
    mov eax, [ebx + 0xf0]
    mov al, SPURIOUS_VECTOR
    or eax, 0x100
    mov [ebx + 0xf0], eax
    mov edi, [ebx + 0x20]
    shr edi, 24
    say "check lapic: ok, base 0xfee00000, id "
    mov eax, edi
    call print_dec
    say ", software-enabled"
    call newline

# IOAPIC pin IRQ_LINE: vector IRQ_VECTOR, fixed, physical, active high,
# level-triggered, unmasked, to this processor's local APIC.
    mov eax, 1
    call ioapic_read
    shr eax, 16
    movzx esi, al
    cmp esi, IRQ_LINE
    require ae, EXIT_IOAPIC, "IOAPIC has no redirection entry for the test line"
    mov eax, IOAPIC_ENTRY + 1
    mov edx, edi
    shl edx, 24
    call ioapic_write
    mov eax, IOAPIC_ENTRY
    mov edx, IRQ_VECTOR | REDIR_LEVEL
    call ioapic_write
    call ioapic_read
    and eax, 0x1afff                # all but delivery status and remote IRR
    cmp eax, IRQ_VECTOR | REDIR_LEVEL
    require e, EXIT_IOAPIC, "redirection entry low half did not read back"
    mov eax, IOAPIC_ENTRY + 1
    call ioapic_read
    shr eax, 24
    cmp eax, edi
    require e, EXIT_IOAPIC, "redirection entry destination did not read back"
    say "check ioapic: ok, "
    lea eax, [esi + 1]
    call print_dec
    say " pins; pin 5 -> vector 0x40, level, active high, unmasked"
    call newline

# Raised while IF=0: held pending, not taken. The IOAPIC sets remote IRR
# when the local APIC accepts the level interrupt into its IRR (82093AA), and
# the local APIC sets the TMR bit then (SDM vol. 3, "Interrupt Acceptance
# for Fixed Interrupts").
    mov dword ptr [irq_lower_at], 3
    mov dx, IRQ_LINE_PORT
    mov al, 1
    out dx, al
    mov ecx, QUIET_LOOPS
1:  pause
    loop 1b
    cmp dword ptr [irq_count], 0
    require e, EXIT_IRQ_HELD, "interrupt taken while IF=0"
    test dword ptr [ebx + 0x200 + LAPIC_VECTOR_REG], LAPIC_VECTOR_BIT
    require nz, EXIT_IRQ_HELD, "raised line not pending in the local APIC's IRR"
    mov eax, IOAPIC_ENTRY
    call ioapic_read
    test eax, REDIR_REMOTE_IRR
    require nz, EXIT_IRQ_HELD, "remote IRR clear while the local APIC holds the interrupt"
    say "check irq-held-while-if-clear: ok, pending in IRR, remote IRR set"
    call newline

# With IF=1: the handler EOIs twice with the line still high and is entered
# again each time; on the third entry it lowers the line before the EOI,
# after which nothing more arrives.
    mov eax, 3
    call take_interrupts
    cmp eax, 3
    require ae, EXIT_IRQ_AGAIN, "level interrupt not delivered again after EOI while the line stayed high"
    require e, EXIT_IRQ_LOWERED, "interrupt delivered after the line was lowered and EOI sent"
    say "check irq-level-redelivery: ok, 3 deliveries of one raise, one per EOI"
    call newline
    mov eax, IOAPIC_ENTRY
    call ioapic_read
    test eax, REDIR_REMOTE_IRR
    require z, EXIT_IRQ_LOWERED, "remote IRR still set after the final EOI"
    test dword ptr [ebx + 0x200 + LAPIC_VECTOR_REG], LAPIC_VECTOR_BIT
    require z, EXIT_IRQ_LOWERED, "vector still pending in IRR after the line was lowered"
    test dword ptr [ebx + 0x100 + LAPIC_VECTOR_REG], LAPIC_VECTOR_BIT
    require z, EXIT_IRQ_LOWERED, "vector still in service (ISR) after EOI"
    say "check irq-lowered: ok, none after lowering; remote IRR, IRR, ISR clear"
    call newline

# A masked entry holds the raised line; unmasking delivers it once. (The
# 82093AA ignores level changes on a masked pin, but the pin is sampled by
# level: still high when unmasked, it is delivered.)
    mov dword ptr [irq_lower_at], 4
    mov eax, IOAPIC_ENTRY
    mov edx, IRQ_VECTOR | REDIR_LEVEL | REDIR_MASKED
    call ioapic_write
    mov dx, IRQ_LINE_PORT
    mov al, 1
    out dx, al
    xor eax, eax
    call take_interrupts
    cmp eax, 3
    require e, EXIT_IRQ_MASK, "masked redirection entry delivered"
    mov eax, IOAPIC_ENTRY
    mov edx, IRQ_VECTOR | REDIR_LEVEL
    call ioapic_write
    mov eax, 4
    call take_interrupts
    cmp eax, 4
    require e, EXIT_IRQ_MASK, "line raised while masked not delivered exactly once on unmask"
    say "check irq-mask: ok, held while masked, delivered once when unmasked"
    call newline
    mov eax, [irq_faults]
    test eax, eax
    jz 1f
    say "handler faults "
    call print_hex
    call newline
1:  require z, EXIT_IRQ_HANDLER, "handler state wrong (1: IF set in handler, 2: IF clear before, 4: ISR clear, 8: TMR clear)"
    say "check irq-handler-state: ok, IF clear inside and set before; ISR and TMR set; spurious "
    mov eax, [spurious_count]
    call print_dec
    call newline

# COM1's transmitter-empty interrupt: with MCR.OUT2 set (the PC gates the
# UART's interrupt output with it), enabling it while the transmitter is
# empty raises it at once (PC16550D data sheet), on ISA IRQ 4, which the
# IOAPIC's pin 4 delivers as an edge. Reading IIR, which reports it,
# clears it; the handler then turns it off.
    mov ecx, COM1_VECTOR
    mov eax, offset com1_handler
    call set_gate
    mov ebx, [lapic_base]
    mov edx, [ebx + 0x20]           # this processor's APIC ID, bits 31:24
    and edx, 0xff000000
    mov eax, COM1_IOAPIC_ENTRY + 1
    call ioapic_write
    mov eax, COM1_IOAPIC_ENTRY
    mov edx, COM1_VECTOR            # fixed, physical, active high, edge
    call ioapic_write
    mov dx, COM1 + 4
    mov al, 0x0b                    # DTR, RTS, OUT2
    out dx, al
    mov dx, COM1 + 1
    mov al, 0x02                    # ETBEI
    out dx, al
    mov ecx, WAIT_LOOPS
    sti
1:  cmp dword ptr [com1_count], 0
    jne 2f
    pause
    loop 1b
2:  mov ecx, QUIET_LOOPS
3:  pause
    loop 3b
    cli
    mov eax, COM1_IOAPIC_ENTRY
    mov edx, COM1_VECTOR | REDIR_MASKED
    call ioapic_write
    mov dx, COM1 + 1
    xor al, al
    out dx, al
    mov dx, COM1 + 4
    out dx, al
    cmp dword ptr [com1_count], 1
    require e, EXIT_SERIAL_IRQ, "COM1's THRE interrupt not delivered exactly once"
    movzx eax, byte ptr [com1_iir]
    and al, 0x0f
    cmp al, 0x02
    require e, EXIT_SERIAL_IRQ, "IIR did not report THRE in COM1's interrupt handler"
    say "check com1-irq: ok, THRE on IRQ 4 through IOAPIC pin 4, IIR "
    movzx eax, byte ptr [com1_iir]
    call print_hex
    call newline
    ret

# COM1's interrupt: counts, reads IIR, disables the UART's interrupts, EOI.
com1_handler:
    pushad
    inc dword ptr [com1_count]
    mov dx, COM1 + 2
    in al, dx
    mov [com1_iir], al
    mov dx, COM1 + 1
    xor al, al
    out dx, al
    mov ebx, [lapic_base]
    mov dword ptr [ebx + 0xb0], 0
    popad
    iret

# Reads 32-bit register EAX of the IOAPIC into EAX.
ioapic_read:
    mov [IOAPIC], eax
    mov eax, [IOAPIC + 0x10]
    ret

# Writes EDX to register EAX of the IOAPIC.
ioapic_write:
    mov [IOAPIC], eax
    mov [IOAPIC + 0x10], edx
    ret

# Waits (bounded) until the handler has run EAX times in all, with IF set,
# then lets QUIET_LOOPS more iterations pass with IF set, and clears IF.
# Returns the count in EAX.
take_interrupts:
    mov ecx, WAIT_LOOPS
    sti
1:  cmp [irq_count], eax
    jae 2f
    pause
    loop 1b
2:  mov ecx, QUIET_LOOPS
3:  pause
    loop 3b
    cli
    mov eax, [irq_count]
    ret

# The test vector: counts, checks what the CPU and local APIC show while it
# runs, lowers the line on the chosen count, and signals EOI.
irq_handler:
    pushad
    inc dword ptr [irq_count]
    pushfd
    pop eax
    test eax, 0x200
    jz 1f
    or dword ptr [irq_faults], 1    # IF not cleared by the interrupt gate
1:  test dword ptr [esp + 40], 0x200
    jnz 1f
    or dword ptr [irq_faults], 2    # the interrupted code had IF clear
1:  mov ebx, [lapic_base]
    test dword ptr [ebx + 0x100 + LAPIC_VECTOR_REG], LAPIC_VECTOR_BIT
    jnz 1f
    or dword ptr [irq_faults], 4    # not in service (ISR)
1:  test dword ptr [ebx + 0x180 + LAPIC_VECTOR_REG], LAPIC_VECTOR_BIT
    jnz 1f
    or dword ptr [irq_faults], 8    # not marked level-triggered (TMR)
1:  mov eax, [irq_count]
    cmp eax, [irq_lower_at]
    jne 1f
    mov dx, IRQ_LINE_PORT
    xor al, al
    out dx, al
1:  mov dword ptr [ebx + 0xb0], 0   # EOI
    popad
    iret

spurious_handler:
    inc dword ptr [spurious_count]
    iret
