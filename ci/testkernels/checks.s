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
    cmp dword ptr [kernel_in_map], 0
    require ne, EXIT_MMAP, "no available memory-map entry holds 1 MiB, where the kernel is"
    say "check memory-map: ok, "
    mov eax, [mmap_entries]
    call print_dec
    say " entries, available "
    mov eax, [available_hi]
    call print_hex
    mov eax, [available_lo]
    call print_hex_digits
    say ", 1 MiB among it"
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

    call interrupt_checks
    call cpu_checks

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
# the length of available (type 1) entries and noting one that holds 1 MiB.
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
    cmp dword ptr [esi + 4], 0      # does it hold 1 MiB, where the kernel is?
    jne 1f
    mov eax, [esi]
    cmp eax, 0x100000
    ja 1f
    cmp dword ptr [esi + 12], 0
    jne 2f
    mov edx, 0x100000
    sub edx, eax
    cmp [esi + 8], edx
    jbe 1f
2:  mov dword ptr [kernel_in_map], 1
1:  popad
    ret


