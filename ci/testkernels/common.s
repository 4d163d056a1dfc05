# Shared part of ponte's test kernels, `.include`d by mb1.s and mb2.s.
#
# A test kernel is entered by its loader in 32-bit protected mode with paging
# off and stays there. Each boot-protocol file parses its own information
# block and then jumps to `run_checks`, which runs every check below in turn,
# prints "check <name>: ok ..." on COM1 for each, and ends QEMU through
# isa-debug-exit (port 0xf4), whose exit status is (code << 1) | 1:
#
#   code  status  meaning
#   0x10    33    every check held
#   0x20    65    wrong boot-loader magic in EAX
#   0x21    67    no command line, or one without a NUL in its first 4 KiB
#   0x22    69    the command line lacks the word REQUIRED_ARGUMENT
#   0x23    71    memory information (mem_lower/mem_upper) missing or insane
#   0x24    73    memory map missing, malformed or insane
#   0x25    75    fw_cfg signature or interface ID wrong
#   0x26    77    fw_cfg RAM size disagrees with the memory information
#   0x27    79    fw_cfg CPU count out of range
#   0x28    81    local APIC disabled or not at 0xfee00000
#   0x29    83    IOAPIC too small, or its redirection entry did not read back
#   0x2a    85    level interrupt taken while IF=0, or not pending meanwhile
#   0x2b    87    level interrupt not delivered again after EOI (line high)
#   0x2c    89    interrupt after the line was lowered, or state left behind
#   0x2d    91    masked entry delivered, or not delivered when unmasked
#   0x2e    93    the interrupt handler saw the wrong CPU/APIC state
#   0x2f    95    pc-testdev MMIO window did not behave as memory
#   0x30    97    unexpected exception
#   0x31    99    CPUID, an MSR, CR4, VMCALL or IA32_APIC_BASE broke the
#                 architecture (see cpu.s)
#   0x32   101    COM1's transmitter-empty interrupt not delivered once
#   0x38   113    every check held, but the command line says fail-on-purpose
#
# The interrupt comes from pc-testdev: a byte write of 1/0 to port
# 0x2000 + n sets ISA line n high/low (QEMU's hw/misc/pc-testdev.c calls
# qemu_set_irq on ISA IRQ n, which QEMU only has for n < 16). ISA line 5 is
# used: no device of QEMU's default PC machine drives it (10 and 11 carry the
# PCI INTx lines after the BIOS routes them), and on the PC machine ISA line n
# reaches IOAPIC pin n for every n but 0. The 8259s are masked, so the IOAPIC
# alone delivers it, as a level-triggered, active-high, fixed interrupt to the
# local APIC of the boot processor.
#
# Every check follows the architecture (Intel SDM, 82093AA data sheet, the
# Multiboot specifications); QEMU 7.2's TCG met each one. Where an emulator
# is known to deviate, the check must still follow the architecture and the
# kernel must print the deviation.

.intel_syntax noprefix
.code32

.set COM1, 0x3f8
.set FW_CFG_SELECTOR, 0x510
.set FW_CFG_DATA, 0x511
.set DEBUG_EXIT_PORT, 0xf4
.set IRQ_LINE, 5
.set IRQ_LINE_PORT, 0x2000 + IRQ_LINE
.set IRQ_VECTOR, 0x40
.set SPURIOUS_VECTOR, 0xff
.set IOAPIC, 0xfec00000
.set IOAPIC_ENTRY, 0x10 + 2 * IRQ_LINE
.set REDIR_LEVEL, 1 << 15
.set REDIR_MASKED, 1 << 16
.set REDIR_REMOTE_IRR, 1 << 14
.set LAPIC_DEFAULT_BASE, 0xfee00000
.set LAPIC_VECTOR_REG, (IRQ_VECTOR / 32) * 0x10
.set LAPIC_VECTOR_BIT, 1 << (IRQ_VECTOR % 32)
.set TESTDEV_IOMEM, 0xff000000
.set WAIT_LOOPS, 10000000
.set QUIET_LOOPS, 100000

.set EXIT_PASS, 0x10
.set EXIT_MAGIC, 0x20
.set EXIT_CMDLINE, 0x21
.set EXIT_ARGUMENT, 0x22
.set EXIT_MEMINFO, 0x23
.set EXIT_MMAP, 0x24
.set EXIT_FWCFG_ID, 0x25
.set EXIT_FWCFG_RAM, 0x26
.set EXIT_FWCFG_CPUS, 0x27
.set EXIT_LAPIC, 0x28
.set EXIT_IOAPIC, 0x29
.set EXIT_IRQ_HELD, 0x2a
.set EXIT_IRQ_AGAIN, 0x2b
.set EXIT_IRQ_LOWERED, 0x2c
.set EXIT_IRQ_MASK, 0x2d
.set EXIT_IRQ_HANDLER, 0x2e
.set EXIT_MMIO, 0x2f
.set EXIT_EXCEPTION, 0x30
.set EXIT_SERIAL_IRQ, 0x32
.set EXIT_ON_PURPOSE, 0x38

# Prints `text` on COM1.
.macro say text
    .pushsection .rodata
.Lsay\@: .asciz "\text"
    .popsection
    push esi
    mov esi, offset .Lsay\@
    call puts
    pop esi
.endm

# Unless condition `cc` holds (flags as for `j\cc`), fails with `code`.
.macro require cc, code, why
    j\cc .Lok\@
    .pushsection .rodata
.Lwhy\@: .asciz "\why"
    .popsection
    mov esi, offset .Lwhy\@
    mov al, \code
    jmp fail
.Lok\@:
.endm

# Entry: zeroes the bss, keeps EAX (magic) and EBX (information block),
# installs a GDT, an IDT and a stack, masks the 8259s and sets up COM1.
.macro kernel_entry banner
    cli
    cld
    mov edx, eax
    mov edi, offset image_bss_start
    mov ecx, offset image_bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd
    mov [boot_magic], edx
    mov [boot_info], ebx
    mov esp, offset stack_top
    call cpu_setup
    say "\banner"
    call newline
.endm

.section .note.GNU-stack, "", @progbits

.section .rodata
.balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff        # 0x08: flat 32-bit code
    .quad 0x00cf92000000ffff        # 0x10: flat 32-bit data
gdt_descriptor:
    .short gdt_descriptor - gdt - 1
    .long gdt
idt_descriptor:
    .short 256 * 8 - 1
    .long idt
required_argument:  .asciz "ponte-testkernel"
fail_argument:      .asciz "fail-on-purpose"
.balign 8
iomem_pattern:      .quad 0x0123456789abcdef

.section .bss
.balign 16
idt:            .skip 256 * 8
stack:          .skip 16384
stack_top:
boot_magic:     .long 0
boot_info:      .long 0
command_line:   .long 0
mem_upper_kib:  .long 0
mmap_entries:   .long 0
kernel_in_map:  .long 0
available_lo:   .long 0
available_hi:   .long 0
ram_lo:         .long 0
ram_hi:         .long 0
lapic_base:     .long 0
irq_count:      .long 0
irq_lower_at:   .long 0
irq_faults:     .long 0
spurious_count: .long 0

.text
# GDT, segments, IDT (exceptions 0-31, the test vector, the spurious vector),
# 8259s masked, COM1 at 115200 8N1.
cpu_setup:
    lgdt [gdt_descriptor]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov eax, offset 1f
    push 0x08
    push eax
    retf
1:  xor ecx, ecx
2:  mov eax, ecx
    shl eax, 4
    add eax, offset exception_stubs
    call set_gate
    inc ecx
    cmp ecx, 32
    jb 2b
    mov ecx, IRQ_VECTOR
    mov eax, offset irq_handler
    call set_gate
    mov ecx, SPURIOUS_VECTOR
    mov eax, offset spurious_handler
    call set_gate
    lidt [idt_descriptor]
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
    mov dx, COM1 + 1
    xor al, al
    out dx, al                      # no UART interrupts
    mov dx, COM1 + 3
    mov al, 0x80
    out dx, al                      # DLAB
    mov dx, COM1
    mov al, 1
    out dx, al                      # divisor 1: 115200 baud
    inc dx
    xor al, al
    out dx, al
    mov dx, COM1 + 3
    mov al, 3
    out dx, al                      # 8N1
    mov dx, COM1 + 2
    mov al, 0x07
    out dx, al                      # FIFOs on and cleared
    ret

# Interrupt gate for vector ECX to handler EAX.
set_gate:
    lea edx, [idt + ecx * 8]
    mov [edx], ax
    mov word ptr [edx + 2], 0x08
    mov word ptr [edx + 4], 0x8e00
    shr eax, 16
    mov [edx + 6], ax
    ret

# Writes AL to COM1 once the transmitter holding register is empty (LSR bit
# 5), waiting a bounded time so a missing UART cannot hang the kernel.
putc:
    push ecx
    push edx
    push eax
    mov ecx, 1000000
    mov dx, COM1 + 5
1:  in al, dx
    test al, 0x20
    jnz 2f
    loop 1b
2:  pop eax
    mov dx, COM1
    out dx, al
    pop edx
    pop ecx
    ret

# Prints the NUL-terminated string at ESI.
puts:
    push esi
    push eax
1:  lodsb
    test al, al
    jz 2f
    call putc
    jmp 1b
2:  pop eax
    pop esi
    ret

newline:
    push eax
    mov al, 13
    call putc
    mov al, 10
    call putc
    pop eax
    ret

# Prints EAX as 0x and eight hexadecimal digits (print_hex_digits: without
# the 0x).
print_hex:
    say "0x"
print_hex_digits:
    pushad
    mov edx, eax
    mov ecx, 8
1:  rol edx, 4
    mov al, dl
    and al, 0xf
    add al, '0'
    cmp al, '9'
    jbe 2f
    add al, 'a' - '9' - 1
2:  call putc
    loop 1b
    popad
    ret

# Prints EAX in decimal.
print_dec:
    pushad
    mov ecx, 10
    xor ebx, ebx
1:  xor edx, edx
    div ecx
    push edx
    inc ebx
    test eax, eax
    jnz 1b
2:  pop eax
    add al, '0'
    call putc
    dec ebx
    jnz 2b
    popad
    ret

# Sets ZF when the NUL-terminated string at ESI contains the one at EDI.
contains:
    pushad
1:  xor ebx, ebx
2:  mov al, [edi + ebx]
    test al, al
    jz 3f
    cmp al, [esi + ebx]
    jne 4f
    inc ebx
    jmp 2b
4:  cmp byte ptr [esi], 0
    je 5f
    inc esi
    jmp 1b
5:  or al, 1                        # not found: ZF clear (AL is nonzero)
3:  popad
    ret

# Selects fw_cfg item AX.
fw_cfg_select:
    push edx
    mov dx, FW_CFG_SELECTOR
    out dx, ax
    pop edx
    ret

# Reads the next four bytes of the selected fw_cfg item into EAX (LE).
fw_cfg_read32:
    push ecx
    push edx
    mov dx, FW_CFG_DATA
    mov ecx, 4
1:  in al, dx
    ror eax, 8
    loop 1b
    pop edx
    pop ecx
    ret


.balign 16
exception_stubs:
.irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    push \vector
    jmp exception
.endr

exception:
    cmp dword ptr [fault_resume], 0
    jne expected_fault              # a check of cpu.s expects it
    say "unexpected exception, vector "
    pop eax
    call print_dec
    say ", stack "
    mov eax, [esp]
    call print_hex
    say " "
    mov eax, [esp + 4]
    call print_hex
    say " "
    mov eax, [esp + 8]
    call print_hex
    call newline
    mov esi, offset exception_why
    mov al, EXIT_EXCEPTION
    jmp fail
.pushsection .rodata
exception_why: .asciz "unexpected exception"
.popsection

# Prints the reason at ESI and exits with code AL.
fail:
    mov bl, al
    say "testkernel: FAIL "
    call puts
    say " (exit code "
    movzx eax, bl
    call print_hex
    say ")"
    call newline
    mov al, bl
# Exits with code AL through isa-debug-exit; halts if nothing listens there.
exit:
    out DEBUG_EXIT_PORT, al
    cli
1:  hlt
    jmp 1b
