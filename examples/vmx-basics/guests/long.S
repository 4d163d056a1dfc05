/* 64-bit guest, identity-mapped by the appliance, entered at 0x8000. */
    .intel_syntax noprefix
    .include "checks.inc"
    .code64
    .text
    .globl _start
_start:
    CHECKS
