# The checks both test kernels share, `.include`d after common.s. The
# boot-protocol file calls check_command_line, check_memory_info and
# memory_map_entry (once per entry) while it parses its information block,
# then jumps to run_checks.

.text
run_checks:
    cmp dword ptr [mmap_entries], 0
    require ne, EXIT_MMAP, "memory map has no entries"
    mov eax, [available_lo]
    or eax, [available_hi]
    require nz, EXIT_MMAP, "memory map has no available memory"
    say "check memory-map: ok, "
    mov eax, [mmap_entries]
    call print_dec
    say " entries, available "
    mov eax, [available_hi]
    call print_hex
    mov eax, [available_lo]
    call print_hex_digits
    call newline

# fw_cfg over the legacy I/O interface: signature, ID, RAM size, CPU counts.
    xor eax, eax
    call fw_cfg_select
    call fw_cfg_read32
    cmp eax, 0x554d4551             # "QEMU"
    require e, EXIT_FWCFG_ID, "fw_cfg signature (item 0) is not QEMU"
    mov eax, 1
    call fw_cfg_select
    call fw_cfg_read32
    test al, 1
    require nz, EXIT_FWCFG_ID, "fw_cfg ID (item 1) lacks the traditional interface"
    say "check fw_cfg-signature: ok, QEMU, ID "
    call print_hex
    call newline
    mov eax, 3                      # FW_CFG_RAM_SIZE, 64-bit LE
    call fw_cfg_select
    call fw_cfg_read32
    mov [ram_lo], eax
    call fw_cfg_read32
    mov [ram_hi], eax
    mov eax, [ram_lo]
    mov edx, [ram_hi]
    sub eax, [available_lo]
    sbb edx, [available_hi]
    require nc, EXIT_FWCFG_RAM, "memory map has more available memory than fw_cfg's RAM size"
    test edx, edx
    require z, EXIT_FWCFG_RAM, "memory map lacks over 4 GiB of fw_cfg's RAM size"
    cmp eax, 16 << 20
    require be, EXIT_FWCFG_RAM, "memory map lacks over 16 MiB of fw_cfg's RAM size"
    mov ebx, eax
    mov eax, [ram_lo]
    mov edx, [ram_hi]
    shrd eax, edx, 10               # RAM size in KiB, saturated
    shr edx, 10
    jz 1f
    or eax, -1
1:  mov ecx, [mem_upper_kib]
    add ecx, 1024
    cmp ecx, eax
    require be, EXIT_FWCFG_RAM, "1 MiB + mem_upper exceeds fw_cfg's RAM size"
    mov edx, eax
    cmp edx, 3 << 20                # below 4 GiB, QEMU's PC keeps at least 3 GiB
    jbe 2f
    mov edx, 3 << 20
2:  add ecx, 16384
    cmp ecx, edx
    require ae, EXIT_FWCFG_RAM, "1 MiB + mem_upper falls over 16 MiB short of fw_cfg's RAM size"
    say "check fw_cfg-ram-size: ok, "
    shr eax, 10
    call print_dec
    say " MiB; the memory map offers all but "
    mov eax, ebx
    shr eax, 10
    call print_dec
    say " KiB of it"
    call newline
    mov eax, 5                      # FW_CFG_NB_CPUS, 16-bit
    call fw_cfg_select
    call fw_cfg_read32
    movzx ebx, ax
    mov eax, 0x0f                   # FW_CFG_MAX_CPUS, 16-bit
    call fw_cfg_select
    call fw_cfg_read32
    movzx eax, ax
    test ebx, ebx
    require nz, EXIT_FWCFG_CPUS, "fw_cfg CPU count (item 5) is 0"
    cmp ebx, eax
    require be, EXIT_FWCFG_CPUS, "fw_cfg CPU count (item 5) exceeds its maximum (item 0x0f)"
    say "check fw_cfg-cpus: ok, "
    xchg eax, ebx
    call print_dec
    say " of at most "
    mov eax, ebx
    call print_dec
    call newline

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

# pc-testdev's 64 KiB window at 0xff000000 behaves as little-endian memory
# for naturally aligned accesses of 1, 2 and 4 bytes (plain MOVs), and of 8
# bytes through SSE2's MOVQ once SSE is enabled (32-bit code has no 8-byte
# general-purpose access).
    mov eax, 1
    cpuid
    mov ebp, edx
    mov ebx, TESTDEV_IOMEM
    mov dword ptr [ebx], 0x11223344
    cmp dword ptr [ebx], 0x11223344
    require e, EXIT_MMIO, "4-byte read differs from the 4-byte write"
    cmp byte ptr [ebx], 0x44
    require e, EXIT_MMIO, "byte 0 of a 4-byte write reads wrong"
    cmp byte ptr [ebx + 3], 0x11
    require e, EXIT_MMIO, "byte 3 of a 4-byte write reads wrong"
    cmp word ptr [ebx + 2], 0x1122
    require e, EXIT_MMIO, "2-byte read at offset 2 reads wrong"
    mov byte ptr [ebx + 4], 0x55
    mov byte ptr [ebx + 5], 0xaa
    mov word ptr [ebx + 6], 0xbeef
    cmp dword ptr [ebx + 4], 0xbeefaa55
    require e, EXIT_MMIO, "1- and 2-byte writes do not compose into the 4-byte read"
    mov dword ptr [ebx + 0xfffc], 0xcafef00d
    cmp dword ptr [ebx + 0xfffc], 0xcafef00d
    require e, EXIT_MMIO, "the window's last 4 bytes read wrong"
    cmp dword ptr [ebx], 0x11223344
    require e, EXIT_MMIO, "a write at offset 0xfffc changed offset 0"
    say "check testdev-mmio: ok, widths 1, 2, 4"
    call newline
    test ebp, 1 << 26
    jnz 1f
    say "testdev-mmio-8: skipped, the processor lacks SSE2"
    call newline
    jmp 2f
1:  mov eax, cr0
    and eax, ~(1 << 2)              # EM off
    or eax, 1 << 1                  # MP on
    mov cr0, eax
    mov eax, cr4
    or eax, (1 << 9) | (1 << 10)    # OSFXSR, OSXMMEXCPT
    mov cr4, eax
    movq xmm0, qword ptr [iomem_pattern]
    movq qword ptr [ebx + 8], xmm0
    cmp dword ptr [ebx + 8], 0x89abcdef
    require e, EXIT_MMIO, "low half of an 8-byte write reads wrong"
    cmp dword ptr [ebx + 12], 0x01234567
    require e, EXIT_MMIO, "high half of an 8-byte write reads wrong"
    mov dword ptr [ebx + 16], 0x76543210
    mov dword ptr [ebx + 20], 0xfedcba98
    movq xmm1, qword ptr [ebx + 16]
    movd eax, xmm1
    cmp eax, 0x76543210
    require e, EXIT_MMIO, "low half of an 8-byte read reads wrong"
    psrlq xmm1, 32
    movd eax, xmm1
    cmp eax, 0xfedcba98
    require e, EXIT_MMIO, "high half of an 8-byte read reads wrong"
    say "check testdev-mmio-8: ok, SSE2 MOVQ load and store"
    call newline

2:  mov esi, [command_line]
    mov edi, offset fail_argument
    call contains
    require ne, EXIT_ON_PURPOSE, "requested by fail-on-purpose, after every check held"
    say "testkernel: PASS, every check held"
    call newline
    mov al, EXIT_PASS
    jmp exit

# These three keep every register.
# Checks the command line at ESI (already known to be present).
check_command_line:
    pushad
    xor ecx, ecx
1:  cmp byte ptr [esi + ecx], 0
    je 2f
    inc ecx
    cmp ecx, 4096
    require b, EXIT_CMDLINE, "command line has no NUL in its first 4 KiB"
    jmp 1b
2:  mov [command_line], esi
    say "command line: '"
    call puts
    say "'"
    call newline
    mov edi, offset required_argument
    call contains
    require e, EXIT_ARGUMENT, "command line lacks the word ponte-testkernel"
    say "check command-line: ok, contains ponte-testkernel"
    call newline
    popad
    ret

# Records mem_lower (EAX) and mem_upper (EDX), in KiB.
check_memory_info:
    pushad
    cmp eax, 640
    require be, EXIT_MEMINFO, "mem_lower above 640 KiB"
    mov [mem_upper_kib], edx
    cmp edx, 1024
    require ae, EXIT_MEMINFO, "mem_upper below 1 MiB"
    say "check memory-info: ok, mem_lower "
    call print_dec
    say " KiB, mem_upper "
    mov eax, edx
    call print_dec
    say " KiB"
    call newline
    popad
    ret

# Counts the memory-map entry at ESI (u64 base, u64 length, u32 type), adding
# the length of available (type 1) entries.
memory_map_entry:
    pushad
    say "  map "
    mov eax, [esi + 4]
    call print_hex
    mov eax, [esi]
    call print_hex_digits
    say " +"
    mov eax, [esi + 12]
    call print_hex
    mov eax, [esi + 8]
    call print_hex_digits
    say " type "
    mov eax, [esi + 16]
    call print_dec
    call newline
    inc dword ptr [mmap_entries]
    cmp dword ptr [esi + 16], 1
    jne 1f
    mov eax, [esi + 8]
    add [available_lo], eax
    mov eax, [esi + 12]
    adc [available_hi], eax
1:  popad
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

