# Processor checks, `.include`d after common.s and run after the interrupt
# checks: what a guest sees of CPUID, MSRs, CR4, VMCALL and IA32_APIC_BASE.
#
# Each check follows the architecture (Intel SDM vol. 2 CPUID, RDMSR/WRMSR,
# MOV to CR4, VMCALL; vol. 3 "Local APIC Status and Location"). QEMU 7.2's
# TCG deviates in places: it answers MSRs it does not know without #GP,
# takes reserved bits of IA32_APIC_BASE and IA32_EFER and non-canonical
# FS_BASE values, and keeps a local APIC at its reset
# base (it can neither move it nor enable it again once disabled). It also
# never completes a MOV to CR4 that must raise #GP, so that check runs only
# under a hypervisor that answered VMCALL. Where TCG deviates, the
# kernel prints `check <name>: deviation, ...` instead of `ok` and
# carries on, so a run shows which behaviour it met; the runner's scenarios
# say which line each emulator must print.

.set EXIT_CPU, 0x31
.set MSR_APIC_BASE, 0x1b
.set MSR_EFER, 0xc0000080
.set MSR_FS_BASE, 0xc0000100
.set UNKNOWN_MSR, 0x12345678
.set APIC_BASE_ENABLE, 1 << 11
.set APIC_RELOCATED, 0xfeb00000
.set CPUID1_EDX_WANTED, (1 << 0) | (1 << 4) | (1 << 5) | (1 << 9)
.set UNKNOWN_HYPERCALL, 0x7fff0000
.set HYPERCALL_ENOSYS, -1000
.set GP_VECTOR, 13
.set UD_VECTOR, 6
# Vectors that push an error code: 8, 10-14 and 17.
.set ERROR_CODE_VECTORS, (1 << 8) | (0x1f << 10) | (1 << 17)

# Arms the fault catcher: the next exception resumes at `resume` with its
# vector in fault_vector (-1: none).
.macro catch_fault resume
    mov dword ptr [fault_vector], -1
    mov dword ptr [fault_resume], offset \resume
.endm

.section .bss
hypervisor_answers: .long 0
fault_resume:   .long 0
fault_vector:   .long 0
vendor:         .skip 16
saved_base_lo:  .long 0
saved_base_hi:  .long 0

.text
# Entered from `exception` while fault_resume is armed, with the vector on
# top of the stack: drops the vector and error code, resumes at
# fault_resume, disarms.
expected_fault:
    pop eax
    mov [fault_vector], eax
    mov edx, ERROR_CODE_VECTORS
    bt edx, eax
    jnc 1f
    add esp, 4
1:  mov eax, [fault_resume]
    mov [esp], eax
    mov dword ptr [fault_resume], 0
    iret

cpu_checks:
# CPUID: leaf 1 exists and shows the FPU, TSC, MSRs and the (enabled,
# just used) local APIC.
    xor eax, eax
    cpuid
    mov [vendor], ebx
    mov [vendor + 4], edx
    mov [vendor + 8], ecx
    cmp eax, 1
    require ae, EXIT_CPU, "CPUID's highest basic leaf is below 1"
    mov eax, 1
    cpuid
    and edx, CPUID1_EDX_WANTED
    cmp edx, CPUID1_EDX_WANTED
    require e, EXIT_CPU, "CPUID.1:EDX lacks FPU, TSC, MSR or APIC"
    say "check cpuid: ok, vendor "
    mov esi, offset vendor
    call puts
    say ", FPU TSC MSR APIC"
    call newline

# MSRs: an MSR that does not exist faults on RDMSR and WRMSR; a reserved
# bit of IA32_APIC_BASE (bit 0) or IA32_EFER (bit 1) faults on WRMSR.
    mov ecx, UNKNOWN_MSR
    catch_fault 1f
    rdmsr
1:  mov dword ptr [fault_resume], 0
    cmp dword ptr [fault_vector], GP_VECTOR
    je 2f
    say "check msr-unknown: deviation, RDMSR of MSR 0x12345678 gave "
    call print_hex
    say " without #GP"
    call newline
    jmp 3f
2:  mov ecx, UNKNOWN_MSR
    xor eax, eax
    xor edx, edx
    catch_fault 1f
    wrmsr
1:  mov dword ptr [fault_resume], 0
    cmp dword ptr [fault_vector], GP_VECTOR
    require e, EXIT_CPU, "WRMSR of a nonexistent MSR did not raise #GP (RDMSR did)"
    say "check msr-unknown: ok, RDMSR and WRMSR of MSR 0x12345678 raise #GP"
    call newline
3:  mov ecx, MSR_APIC_BASE
    rdmsr
    or eax, 1
    catch_fault 1f
    wrmsr
1:  mov dword ptr [fault_resume], 0
    cmp dword ptr [fault_vector], GP_VECTOR
    je 2f
    mov ecx, MSR_APIC_BASE
    rdmsr
    and eax, ~1
    wrmsr
    say "check msr-apic-base-reserved: deviation, IA32_APIC_BASE took reserved bit 0 without #GP"
    call newline
    jmp 3f
2:  say "check msr-apic-base-reserved: ok, IA32_APIC_BASE bit 0 raises #GP"
    call newline
3:  mov ecx, MSR_EFER
    rdmsr
    or eax, 1 << 1
    catch_fault 1f
    wrmsr
1:  mov dword ptr [fault_resume], 0
    cmp dword ptr [fault_vector], GP_VECTOR
    je 2f
    mov ecx, MSR_EFER
    rdmsr
    and eax, ~(1 << 1)
    wrmsr
    say "check msr-efer-reserved: deviation, IA32_EFER took reserved bit 1 without #GP"
    call newline
    jmp 3f
2:  say "check msr-efer-reserved: ok, IA32_EFER bit 1 raises #GP"
    call newline

# A non-canonical IA32_FS_BASE faults (the MSR exists with long mode).
3:  mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 4f
    mov eax, 0x80000001
    cpuid
    test edx, 1 << 29
    jz 4f
    mov ecx, MSR_FS_BASE
    xor eax, eax
    mov edx, 0x80000000
    catch_fault 1f
    wrmsr
1:  mov dword ptr [fault_resume], 0
    cmp dword ptr [fault_vector], GP_VECTOR
    je 2f
    xor eax, eax
    xor edx, edx
    wrmsr
    say "check msr-noncanonical: deviation, IA32_FS_BASE took 0x8000000000000000 without #GP"
    call newline
    jmp 5f
2:  say "check msr-noncanonical: ok, IA32_FS_BASE 0x8000000000000000 raises #GP"
    call newline
    jmp 5f
4:  say "msr-noncanonical: skipped, no long mode"
    call newline

5:
# VMCALL: a hypervisor answers an unknown hypercall with -1000 (KVM's
# -ENOSYS); without one, VMCALL raises #UD.
    mov eax, UNKNOWN_HYPERCALL
    catch_fault 1f
    vmcall
1:  mov dword ptr [fault_resume], 0
    cmp dword ptr [fault_vector], UD_VECTOR
    jne 2f
    say "check vmcall: ok, #UD: no hypervisor answers"
    call newline
    jmp 4f
2:  cmp dword ptr [fault_vector], -1
    require e, EXIT_CPU, "VMCALL raised an exception other than #UD"
    cmp eax, HYPERCALL_ENOSYS
    require e, EXIT_CPU, "unknown hypercall did not return -1000"
    say "check vmcall: ok, unknown hypercall answered -1000"
    call newline
    mov dword ptr [hypervisor_answers], 1

# CR4: a reserved bit (15) and VMXE without VMX in CPUID fault, and CR4
# keeps its value. Only under a hypervisor that answered VMCALL: QEMU 7.2's
# TCG never completes such a MOV to CR4 (it neither faults nor moves on).
4:  cmp dword ptr [hypervisor_answers], 0
    jne 6f
    say "cr4-reserved: skipped, no hypervisor answered VMCALL"
    call newline
    jmp 3f
6:
    mov edi, cr4
    mov eax, edi
    or eax, 1 << 15
    catch_fault 1f
    mov cr4, eax
1:  mov dword ptr [fault_resume], 0
    cmp dword ptr [fault_vector], GP_VECTOR
    require e, EXIT_CPU, "MOV to CR4 with reserved bit 15 did not raise #GP"
    mov eax, 1
    cpuid
    test ecx, 1 << 5
    jnz 2f
    mov eax, edi
    or eax, 1 << 13
    catch_fault 1f
    mov cr4, eax
1:  mov dword ptr [fault_resume], 0
    cmp dword ptr [fault_vector], GP_VECTOR
    require e, EXIT_CPU, "MOV to CR4 setting VMXE without VMX in CPUID did not raise #GP"
2:  mov eax, cr4
    cmp eax, edi
    require e, EXIT_CPU, "CR4 changed by writes that raised #GP"
    say "check cr4-reserved: ok, bit 15 and VMXE (no VMX in CPUID) raise #GP, CR4 unchanged"
    call newline

# IA32_APIC_BASE: disabling the local APIC clears CPUID.1:EDX.APIC; it can
# be enabled again at another base (Pentium 4 and later), where its
# registers answer, and moved back.
3:  mov ecx, MSR_APIC_BASE
    rdmsr
    mov [saved_base_lo], eax
    mov [saved_base_hi], edx
    and eax, ~APIC_BASE_ENABLE
    wrmsr
    mov eax, 1
    cpuid
    say "apic-base: CPUID.1:EDX.APIC while disabled: "
    mov eax, edx
    shr eax, 9
    and eax, 1
    call print_dec
    call newline
    mov ecx, MSR_APIC_BASE
    mov eax, [saved_base_lo]
    and eax, 0xfff
    or eax, APIC_RELOCATED | APIC_BASE_ENABLE
    xor edx, edx
    wrmsr
    rdmsr
    test eax, APIC_BASE_ENABLE
    jz 6f
    and eax, 0xfffff000
    cmp eax, APIC_RELOCATED
    jne 7f
    mov eax, [APIC_RELOCATED + 0x30]
    cmp al, 0x10
    jb 8f
    cmp al, 0x15
    ja 8f
    mov ebx, eax
    mov ecx, MSR_APIC_BASE
    mov eax, [saved_base_lo]
    mov edx, [saved_base_hi]
    wrmsr
    mov eax, [LAPIC_DEFAULT_BASE + 0x30]
    cmp eax, ebx
    require e, EXIT_CPU, "local APIC did not answer at its default base again"
    say "check apic-base: ok, disabled, re-enabled at 0xfeb00000 (version "
    mov eax, ebx
    call print_hex
    say "), moved back"
    call newline
    ret
6:  say "check apic-base: deviation, the local APIC stays disabled when IA32_APIC_BASE enables it again"
    call newline
    ret
7:  say "check apic-base: deviation, IA32_APIC_BASE keeps base "
    call print_hex
    say " when 0xfeb00000 is written"
    call newline
    ret
8:  say "check apic-base: deviation, nothing answers at the new base 0xfeb00000 (version register "
    call print_hex
    say ")"
    call newline
    ret
