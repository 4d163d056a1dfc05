/* 32-bit protected-mode guest, paging off, flat segments, entered at 0x8000. */
    .intel_syntax noprefix
    .include "checks.inc"
    .code32
    .text
    .globl _start
_start:
    CHECKS
