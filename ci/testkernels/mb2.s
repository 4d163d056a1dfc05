# ponte's Multiboot2 test kernel. QEMU 7.2's -kernel has no Multiboot2
# loader, so under QEMU it boots from a GRUB ISO (`multiboot2 /boot/mb2.elf
# ponte-testkernel`); GRUB loads it through its ELF headers. The checks are
# listed in common.s.

.include "common.s"
.include "checks.s"
.include "interrupts.s"
.include "cpu.s"

.set MB2_HEADER_MAGIC, 0xe85250d6
.set MB2_LOADER_MAGIC, 0x36d76289
.set MB2_MAX_INFO_SIZE, 0x10000
.set TAG_COMMAND_LINE, 1
.set TAG_MODULE, 3
.set TAG_BASIC_MEMINFO, 4
.set TAG_MEMORY_MAP, 6

.section .multiboot, "a"
.balign 8
multiboot2_header:
    .long MB2_HEADER_MAGIC
    .long 0                         # i386 protected mode
    .long multiboot2_header_end - multiboot2_header
    .long -(MB2_HEADER_MAGIC + (multiboot2_header_end - multiboot2_header))
    .short 0, 0                     # end tag
    .long 8
multiboot2_header_end:

.section .bss
tags_seen:      .long 0
modules:        .long 0

.text
.globl _start
_start:
    kernel_entry "ponte test kernel (Multiboot2)"
    mov eax, [boot_magic]
    cmp eax, MB2_LOADER_MAGIC
    require e, EXIT_MAGIC, "EAX lacks the Multiboot2 loader magic 0x36d76289"
    say "check boot-magic: ok, "
    call print_hex
    call newline
    mov ebx, [boot_info]
    mov edi, [ebx]
    say "information block at "
    mov eax, ebx
    call print_hex
    say ", "
    mov eax, edi
    call print_dec
    say " bytes"
    call newline
    cmp edi, 16
    require ae, EXIT_MMAP, "information block shorter than its header and end tag"
    cmp edi, MB2_MAX_INFO_SIZE
    require be, EXIT_MMAP, "information block larger than 64 KiB"
    add edi, ebx
    lea esi, [ebx + 8]

# Tags: u32 type, u32 size (with the header), padded to 8 bytes; type 0 ends.
1:  mov eax, edi
    sub eax, esi
    require nc, EXIT_MMAP, "information block ends without an end tag"
    cmp eax, 8
    require ae, EXIT_MMAP, "information block ends without an end tag"
    mov ecx, [esi + 4]
    cmp ecx, 8
    require ae, EXIT_MMAP, "tag smaller than its header"
    cmp ecx, eax
    require be, EXIT_MMAP, "tag runs past the information block"
    mov edx, [esi]
    test edx, edx
    jz 9f
    cmp edx, TAG_COMMAND_LINE
    jne 2f
    or dword ptr [tags_seen], 1
    push esi
    add esi, 8
    call check_command_line
    pop esi
    jmp 8f
2:  cmp edx, TAG_BASIC_MEMINFO
    jne 3f
    cmp ecx, 16
    require ae, EXIT_MEMINFO, "basic memory information tag too small"
    or dword ptr [tags_seen], 2
    mov eax, [esi + 8]
    mov edx, [esi + 12]
    call check_memory_info
    jmp 8f
3:  cmp edx, TAG_MODULE
    jne 4f
    inc dword ptr [modules]
    jmp 8f
4:  cmp edx, TAG_MEMORY_MAP
    jne 8f
    cmp ecx, 16
    require ae, EXIT_MMAP, "memory map tag too small"
    mov edx, [esi + 8]              # entry size
    cmp edx, 24
    require ae, EXIT_MMAP, "memory map entries smaller than 24 bytes"
    or dword ptr [tags_seen], 4
    push esi
    push edi
    lea edi, [esi + ecx]
    add esi, 16
5:  mov eax, edi
    sub eax, esi
    cmp eax, edx
    jb 6f
    call memory_map_entry
    add esi, edx
    jmp 5b
6:  pop edi
    pop esi
8:  add ecx, 7
    and ecx, ~7
    add esi, ecx
    jmp 1b

9:  test dword ptr [tags_seen], 1
    require nz, EXIT_CMDLINE, "no command-line tag"
    test dword ptr [tags_seen], 2
    require nz, EXIT_MEMINFO, "no basic memory information tag"
    test dword ptr [tags_seen], 4
    require nz, EXIT_MMAP, "no memory map tag"
    say "modules: "
    mov eax, [modules]
    call print_dec
    call newline
    jmp run_checks
