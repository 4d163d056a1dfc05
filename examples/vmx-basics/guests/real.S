/* Real-mode guest, entered at 0000:8000 by an unrestricted-guest vCPU. */
    .intel_syntax noprefix
    .include "checks.inc"
    .code16
    .text
    .globl _start
_start:
    CHECKS
