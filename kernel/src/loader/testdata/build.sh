#!/bin/sh
# Rebuilds the loader's real-toolchain fixtures from their sources.
# multiboot_gnu.elf: Multiboot ELF32 from GNU as/ld, as test kernels for
#   qemu -kernel are usually built. Layout (readelf -l): one PT_LOAD at
#   0x100000, file offset 0x60, filesz 0x1010, memsz 0x3010; entry 0x10000c;
#   "hello from data" at 0x101000; bss 0x101010..0x103010.
# multiboot2_rustc.elf: Multiboot2 ELF64 from rustc for x86_64-unknown-none.
#   Layout: PT_LOAD 0x200000 (offset 0xe8, 0x1c bytes), PT_LOAD 0x201000
#   (offset 0x104, filesz 0x10, memsz 0x2010); entry 0x200018.
set -e
cd "$(dirname "$0")"
tmp=$(mktemp -d)
as --32 -o "$tmp/k.o" multiboot_gnu.S
ld -m elf_i386 -nostdlib -static -n -T multiboot_gnu.ld -o "$tmp/k.elf" "$tmp/k.o"
strip -o multiboot_gnu.elf "$tmp/k.elf"
rustc --edition 2021 --target x86_64-unknown-none -C panic=abort \
    -C relocation-model=static -C opt-level=s -C link-arg=-Tmultiboot2_rustc.ld \
    -C link-arg=--nmagic -C strip=symbols -o multiboot2_rustc.elf multiboot2_rustc.rs
rm -r "$tmp"
