# ponte's Multiboot (v1) test kernel: `qemu-system-x86_64 -kernel mb1.elf
# -append "ponte-testkernel" -device pc-testdev -device isa-debug-exit,...`.
#
# The header sets flags bit 16 and carries the a.out-kludge addresses, so a
# loader places the image from the header alone, whatever the ELF class (QEMU
# refuses ELF64 Multiboot kernels without it). Flags bit 1 asks for memory
# information. The checks are listed in common.s.

.include "common.s"
.include "checks.s"
.include "interrupts.s"
.include "cpu.s"

.set MB1_HEADER_MAGIC, 0x1badb002
.set MB1_HEADER_FLAGS, (1 << 1) | (1 << 16)
.set MB1_LOADER_MAGIC, 0x2badb002
.set MB1_MAX_MAP_ENTRIES, 256

.section .multiboot, "a"
.balign 4
multiboot_header:
    .long MB1_HEADER_MAGIC
    .long MB1_HEADER_FLAGS
    .long -(MB1_HEADER_MAGIC + MB1_HEADER_FLAGS)
    .long multiboot_header          # header_addr
    .long image_start               # load_addr
    .long image_load_end            # load_end_addr
    .long image_bss_end             # bss_end_addr
    .long _start                    # entry_addr

.text
.globl _start
_start:
    kernel_entry "ponte test kernel (Multiboot v1)"
    mov eax, [boot_magic]
    cmp eax, MB1_LOADER_MAGIC
    require e, EXIT_MAGIC, "EAX lacks the Multiboot loader magic 0x2badb002"
    say "check boot-magic: ok, "
    call print_hex
    call newline
    mov ebx, [boot_info]
    say "information block at "
    mov eax, ebx
    call print_hex
    say ", flags "
    mov eax, [ebx]
    call print_hex
    call newline

    test dword ptr [ebx], 1 << 2
    require nz, EXIT_CMDLINE, "information flags lack the command line (bit 2)"
    mov esi, [ebx + 16]
    call check_command_line

    test dword ptr [ebx], 1 << 0
    require nz, EXIT_MEMINFO, "information flags lack mem_lower/mem_upper (bit 0)"
    mov eax, [ebx + 4]
    mov edx, [ebx + 8]
    call check_memory_info

    test dword ptr [ebx], 1 << 3
    jz 1f
    say "modules: "
    mov eax, [ebx + 20]
    call print_dec
    call newline

# Memory map: entries of a u32 size (not counting itself, at least 20),
# then u64 base, u64 length, u32 type.
1:  test dword ptr [ebx], 1 << 6
    require nz, EXIT_MMAP, "information flags lack the memory map (bit 6)"
    mov esi, [ebx + 48]
    mov edi, esi
    add edi, [ebx + 44]
    require nc, EXIT_MMAP, "memory map wraps around 4 GiB"
    mov ecx, MB1_MAX_MAP_ENTRIES
2:  cmp esi, edi
    jae 3f
    mov eax, edi
    sub eax, esi
    cmp eax, 24
    require ae, EXIT_MMAP, "memory map ends inside an entry"
    mov edx, [esi]
    cmp edx, 20
    require ae, EXIT_MMAP, "memory map entry smaller than 20 bytes"
    cmp edx, 4096
    require be, EXIT_MMAP, "memory map entry larger than 4 KiB"
    add esi, 4
    call memory_map_entry
    add esi, edx
    loop 2b
    test ecx, ecx
    require nz, EXIT_MMAP, "memory map has more than 256 entries"
3:  jmp run_checks
