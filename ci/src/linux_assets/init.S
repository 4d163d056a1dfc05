/* /init of the Linux guest, the first code the kernel runs in userspace:
   reads the TSC, prints "PONTE-GUEST: init tsc <N>" to its standard output
   (the console the kernel opened for init) in one write, then runs
   /bin/sh /init.sh with the environment the kernel gave it. If that exec
   fails it says so and exits, which panics the kernel. */
    .intel_syntax noprefix
    .text
    .global _start
_start:
    rdtsc
    shl rdx, 32
    or rax, rdx
    /* The line is built backwards from line_end: newline, digits, prefix. */
    lea rdi, [rip + line_end]
    dec rdi
    mov byte ptr [rdi], 10
    mov ecx, 10
1:
    xor edx, edx
    div rcx
    add dl, 0x30
    dec rdi
    mov [rdi], dl
    test rax, rax
    jnz 1b
    lea rsi, [rip + prefix_end]
    lea r8, [rip + prefix]
2:
    dec rsi
    dec rdi
    mov al, [rsi]
    mov [rdi], al
    cmp rsi, r8
    jne 2b
    /* write(1, line, length) */
    lea rdx, [rip + line_end]
    sub rdx, rdi
    mov rsi, rdi
    mov edi, 1
    mov eax, 1
    syscall
    /* execve("/bin/sh", {"/bin/sh", "/init.sh", NULL}, envp): envp follows
       argc, the argument pointers and their NULL on the initial stack. */
    mov rcx, [rsp]
    lea rdx, [rsp + rcx * 8 + 16]
    lea rdi, [rip + shell]
    lea rsi, [rip + arguments]
    mov eax, 59
    syscall
    /* Still here: the exec failed. */
    mov edi, 1
    lea rsi, [rip + failed]
    mov edx, failed_end - failed
    mov eax, 1
    syscall
    mov edi, 127
    mov eax, 60
    syscall
    hlt

    .data
prefix:
    .ascii "PONTE-GUEST: init tsc "
prefix_end:
line:
    .skip 32
line_end:
shell:
    .asciz "/bin/sh"
script:
    .asciz "/init.sh"
    .balign 8
arguments:
    .quad shell, script, 0
failed:
    .ascii "PONTE-GUEST: FAIL /init cannot run /bin/sh /init.sh\n"
failed_end:
