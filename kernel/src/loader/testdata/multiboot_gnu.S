.section .multiboot, "a"
.align 4
.long 0x1BADB002
.long 0x00000003
.long -(0x1BADB002 + 0x00000003)
.text
.globl _start
_start:
    mov $0xf4, %dx
    xor %eax, %eax
    out %al, %dx
1:  hlt
    jmp 1b
.data
msg: .asciz "hello from data"
.bss
.align 16
stack: .skip 0x2000
