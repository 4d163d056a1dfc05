//! Decoder tests against encodings written by hand from the SDM's opcode
//! tables (Vol. 2, chapter 2 and appendix A).

use super::*;

fn d64(bytes: &[u8]) -> Instruction {
    decode(bytes, CpuMode::Bits64).unwrap_or_else(|e| panic!("{bytes:02x?}: {e:?}"))
}

fn mem(base: Option<u8>, index: Option<(u8, u8)>, displacement: i64) -> MemoryOperand {
    MemoryOperand {
        segment: None,
        base,
        index,
        displacement,
        rip_relative: false,
        address_size: 8,
    }
}

fn load(reg: u8, width: AccessWidth) -> Operation {
    Operation::Load {
        destination: Gpr::new(reg),
        destination_width: width,
        extension: Extension::None,
    }
}

#[test]
fn mov_loads_and_stores_with_modrm_sib_and_displacement() {
    // mov eax, [rdi+0x100]
    let i = d64(&[0x8b, 0x87, 0x00, 0x01, 0x00, 0x00]);
    assert_eq!(i.length, 6);
    assert_eq!(i.width, AccessWidth::Dword);
    assert_eq!(i.operation, load(0, AccessWidth::Dword));
    assert_eq!(i.memory, mem(Some(7), None, 0x100));
    // mov rax, [rdi]
    let i = d64(&[0x48, 0x8b, 0x07]);
    assert_eq!((i.length, i.width), (3, AccessWidth::Qword));
    assert_eq!(i.operation, load(0, AccessWidth::Qword));
    // mov [rdi], eax
    let i = d64(&[0x89, 0x07]);
    assert_eq!((i.length, i.width), (2, AccessWidth::Dword));
    assert_eq!(
        i.operation,
        Operation::Store {
            source: Source::Register(Gpr::new(0))
        }
    );
    // mov [rdi], ax (66 prefix)
    let i = d64(&[0x66, 0x89, 0x07]);
    assert_eq!((i.length, i.width), (3, AccessWidth::Word));
    // mov [rdi+4], r8d (REX.R)
    let i = d64(&[0x44, 0x89, 0x47, 0x04]);
    assert_eq!(i.length, 4);
    assert_eq!(
        i.operation,
        Operation::Store {
            source: Source::Register(Gpr::new(8))
        }
    );
    assert_eq!(i.memory, mem(Some(7), None, 4));
    // mov eax, [r12] (SIB with REX.B base, no index)
    let i = d64(&[0x41, 0x8b, 0x04, 0x24]);
    assert_eq!(i.length, 4);
    assert_eq!(i.memory, mem(Some(12), None, 0));
    // mov eax, [rcx*4+0x1000] (SIB, no base, disp32)
    let i = d64(&[0x8b, 0x04, 0x8d, 0x00, 0x10, 0x00, 0x00]);
    assert_eq!(i.length, 7);
    assert_eq!(i.memory, mem(None, Some((1, 4)), 0x1000));
    // mov r9, [rbx+r10*8-0x10] (REX.WRX)
    let i = d64(&[0x4e, 0x8b, 0x4c, 0xd3, 0xf0]);
    assert_eq!(i.length, 5);
    assert_eq!(i.operation, load(9, AccessWidth::Qword));
    assert_eq!(i.memory, mem(Some(3), Some((10, 8)), -0x10));
    // mov eax, [rip-8]
    let i = d64(&[0x8b, 0x05, 0xf8, 0xff, 0xff, 0xff]);
    assert_eq!(i.length, 6);
    assert!(i.memory.rip_relative);
    assert_eq!(i.memory.displacement, -8);
    // mov eax, gs:[rdi]
    let i = d64(&[0x65, 0x8b, 0x07]);
    assert_eq!(i.memory.segment, Some(Segment::Gs));
}

#[test]
fn byte_registers_follow_the_rex_rules() {
    // mov [rdi], al ; mov [rdi], ah ; mov [rdi], spl (REX makes 4 = SPL)
    assert_eq!(
        d64(&[0x88, 0x07]).operation,
        Operation::Store {
            source: Source::Register(Gpr::new(0))
        }
    );
    assert_eq!(
        d64(&[0x88, 0x27]).operation,
        Operation::Store {
            source: Source::Register(Gpr {
                number: 0,
                high_byte: true
            })
        }
    );
    assert_eq!(
        d64(&[0x40, 0x88, 0x27]).operation,
        Operation::Store {
            source: Source::Register(Gpr::new(4))
        }
    );
    // mov bh, [rsi]
    let i = d64(&[0x8a, 0x3e]);
    assert_eq!(i.width, AccessWidth::Byte);
    assert_eq!(
        i.operation,
        Operation::Load {
            destination: Gpr {
                number: 3,
                high_byte: true
            },
            destination_width: AccessWidth::Byte,
            extension: Extension::None
        }
    );
    // A REX before a legacy prefix is ignored: 48 66 89 07 is mov [rdi], ax.
    let i = d64(&[0x48, 0x66, 0x89, 0x07]);
    assert_eq!((i.length, i.width), (4, AccessWidth::Word));
}

#[test]
fn immediates_and_moffs() {
    // mov dword [rdi], 0x12345678
    let i = d64(&[0xc7, 0x07, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!(i.length, 6);
    assert_eq!(
        i.operation,
        Operation::Store {
            source: Source::Immediate(0x1234_5678)
        }
    );
    // mov qword [rdi], -1 (imm32 sign-extended)
    let i = d64(&[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!((i.length, i.width), (7, AccessWidth::Qword));
    assert_eq!(
        i.operation,
        Operation::Store {
            source: Source::Immediate(u64::MAX)
        }
    );
    // mov word [rdi], 0x1234
    let i = d64(&[0x66, 0xc7, 0x07, 0x34, 0x12]);
    assert_eq!((i.length, i.width), (5, AccessWidth::Word));
    assert_eq!(
        i.operation,
        Operation::Store {
            source: Source::Immediate(0x1234)
        }
    );
    // mov byte [rdi+0x10], 0xab
    let i = d64(&[0xc6, 0x47, 0x10, 0xab]);
    assert_eq!((i.length, i.width), (4, AccessWidth::Byte));
    assert_eq!(
        i.operation,
        Operation::Store {
            source: Source::Immediate(0xab)
        }
    );
    // mov eax, [0xfee00000] (moffs64)
    let i = d64(&[0xa1, 0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0]);
    assert_eq!(i.length, 9);
    assert_eq!(i.operation, load(0, AccessWidth::Dword));
    assert_eq!(i.memory.displacement, 0xfee0_0000);
    // mov [0xfee00030], eax in 32-bit mode (moffs32)
    let i = decode(&[0xa3, 0x30, 0x00, 0xe0, 0xfe], CpuMode::Bits32).unwrap();
    assert_eq!(i.length, 5);
    assert_eq!(
        i.operation,
        Operation::Store {
            source: Source::Register(Gpr::new(0))
        }
    );
    // mov al, [moffs32] with 67 in 64-bit mode
    let i = d64(&[0x67, 0xa0, 0x00, 0x10, 0x00, 0x00]);
    assert_eq!((i.length, i.width), (6, AccessWidth::Byte));
}

#[test]
fn movzx_movsx_and_read_modify_write_forms() {
    // movzx eax, byte [rdi]
    let i = d64(&[0x0f, 0xb6, 0x07]);
    assert_eq!((i.length, i.width), (3, AccessWidth::Byte));
    assert_eq!(
        i.operation,
        Operation::Load {
            destination: Gpr::new(0),
            destination_width: AccessWidth::Dword,
            extension: Extension::Zero
        }
    );
    // movsx rax, word [rdi]
    let i = d64(&[0x48, 0x0f, 0xbf, 0x07]);
    assert_eq!((i.length, i.width), (4, AccessWidth::Word));
    assert_eq!(
        i.operation,
        Operation::Load {
            destination: Gpr::new(0),
            destination_width: AccessWidth::Qword,
            extension: Extension::Sign
        }
    );
    // xchg [rdi], eax
    assert_eq!(
        d64(&[0x87, 0x07]).operation,
        Operation::Exchange {
            register: Gpr::new(0)
        }
    );
    // lock or [rdi], eax
    let i = d64(&[0xf0, 0x09, 0x07]);
    assert!(i.lock);
    assert_eq!(
        i.operation,
        Operation::Logic {
            op: LogicOp::Or,
            source: Source::Register(Gpr::new(0)),
            register_destination: false
        }
    );
    // or dword [rdi], 1 (83 /1 ib)
    let i = d64(&[0x83, 0x0f, 0x01]);
    assert_eq!((i.length, i.width), (3, AccessWidth::Dword));
    assert_eq!(
        i.operation,
        Operation::Logic {
            op: LogicOp::Or,
            source: Source::Immediate(1),
            register_destination: false
        }
    );
    // and dword [rdi+4], 0xff (81 /4 id)
    let i = d64(&[0x81, 0x67, 0x04, 0xff, 0x00, 0x00, 0x00]);
    assert_eq!(i.length, 7);
    assert_eq!(
        i.operation,
        Operation::Logic {
            op: LogicOp::And,
            source: Source::Immediate(0xff),
            register_destination: false
        }
    );
    // and eax, [rdi]
    assert_eq!(
        d64(&[0x23, 0x07]).operation,
        Operation::Logic {
            op: LogicOp::And,
            source: Source::Register(Gpr::new(0)),
            register_destination: true
        }
    );
    // test [rdi], eax ; test byte [rdi], 1
    assert_eq!(
        d64(&[0x85, 0x07]).operation,
        Operation::Test {
            source: Source::Register(Gpr::new(0))
        }
    );
    let i = d64(&[0xf6, 0x07, 0x01]);
    assert_eq!((i.length, i.width), (3, AccessWidth::Byte));
    assert_eq!(
        i.operation,
        Operation::Test {
            source: Source::Immediate(1)
        }
    );
    // stosb ; rep stosq
    let i = d64(&[0xaa]);
    assert_eq!((i.length, i.width), (1, AccessWidth::Byte));
    assert_eq!(i.operation, Operation::StoreString { repeat: false });
    assert_eq!(i.memory.segment, Some(Segment::Es));
    let i = d64(&[0xf3, 0x48, 0xab]);
    assert_eq!((i.length, i.width), (3, AccessWidth::Qword));
    assert_eq!(i.operation, Operation::StoreString { repeat: true });
}

fn d32(bytes: &[u8]) -> Instruction {
    decode(bytes, CpuMode::Bits32).unwrap_or_else(|e| panic!("{bytes:02x?}: {e:?}"))
}

fn mem32(base: Option<u8>, displacement: i64) -> MemoryOperand {
    MemoryOperand {
        address_size: 4,
        ..mem(base, None, displacement)
    }
}

#[test]
fn cmp_with_immediate_and_register_operands() {
    let compare = |source, register_first| Operation::Compare {
        source,
        register_first,
    };
    // 80 /7 ib: cmp byte [ebx+3], 0x11
    let i = d32(&[0x80, 0x7b, 0x03, 0x11]);
    assert_eq!((i.length, i.width), (4, AccessWidth::Byte));
    assert_eq!(i.operation, compare(Source::Immediate(0x11), false));
    assert_eq!(i.memory, mem32(Some(3), 3));
    // 66 81 /7 iw: cmp word [ebx+2], 0x1122
    let i = d32(&[0x66, 0x81, 0x7b, 0x02, 0x22, 0x11]);
    assert_eq!((i.length, i.width), (6, AccessWidth::Word));
    assert_eq!(i.operation, compare(Source::Immediate(0x1122), false));
    // 81 /7 id with disp32: cmp dword [ebx+0xfffc], 0xcafef00d
    let i = d32(&[0x81, 0xbb, 0xfc, 0xff, 0, 0, 0x0d, 0xf0, 0xfe, 0xca]);
    assert_eq!((i.length, i.width), (10, AccessWidth::Dword));
    assert_eq!(i.memory, mem32(Some(3), 0xfffc));
    // The immediate is sign-extended to 64 bits; emulation masks it to the
    // access width.
    assert_eq!(
        i.operation,
        compare(Source::Immediate(0xffff_ffff_cafe_f00d), false)
    );
    // 83 /7 ib: cmp dword [ebx], -1 (sign-extended imm8)
    let i = d32(&[0x83, 0x3b, 0xff]);
    assert_eq!((i.length, i.width), (3, AccessWidth::Dword));
    assert_eq!(i.operation, compare(Source::Immediate(u64::MAX), false));
    // REX.W 83 /7: cmp qword [rdi], 1
    let i = d64(&[0x48, 0x83, 0x3f, 0x01]);
    assert_eq!((i.length, i.width), (4, AccessWidth::Qword));
    // 38 /r: cmp [ebx], ah (no REX: reg 4 is AH)
    let i = d32(&[0x38, 0x23]);
    let ah = Gpr {
        number: 0,
        high_byte: true,
    };
    assert_eq!((i.length, i.width), (2, AccessWidth::Byte));
    assert_eq!(i.operation, compare(Source::Register(ah), false));
    // 3B /r: cmp eax, [ebx]: the register is the minuend.
    let i = d32(&[0x3b, 0x03]);
    assert_eq!(i.width, AccessWidth::Dword);
    assert_eq!(i.operation, compare(Source::Register(Gpr::new(0)), true));
    // 3A /r with REX: cmp spl, [rdi]
    let i = d64(&[0x40, 0x3a, 0x27]);
    assert_eq!(i.operation, compare(Source::Register(Gpr::new(4)), true));
    // 4C 39 /r: cmp [rdi], r9
    let i = d64(&[0x4c, 0x39, 0x0f]);
    assert_eq!(i.width, AccessWidth::Qword);
    assert_eq!(i.operation, compare(Source::Register(Gpr::new(9)), false));
    // 80 /6 is XOR, not decoded; CMP between registers has no memory.
    assert_eq!(
        decode(&[0x80, 0x33, 0x01], CpuMode::Bits32)
            .unwrap_err()
            .kind,
        DecodeErrorKind::Unsupported
    );
    assert_eq!(
        decode(&[0x39, 0xc3], CpuMode::Bits32).unwrap_err().kind,
        DecodeErrorKind::NotMemory
    );
}

#[test]
fn sse2_movq_between_xmm_and_memory() {
    // 66 0F D6 /r: movq [ebx+8], xmm0
    let i = d32(&[0x66, 0x0f, 0xd6, 0x43, 0x08]);
    assert_eq!((i.length, i.width), (5, AccessWidth::Qword));
    assert_eq!(i.operation, Operation::StoreXmm { register: 0 });
    assert_eq!(i.memory, mem32(Some(3), 8));
    // F3 0F 7E /r: movq xmm1, [ebx+16]
    let i = d32(&[0xf3, 0x0f, 0x7e, 0x4b, 0x10]);
    assert_eq!((i.length, i.width), (5, AccessWidth::Qword));
    assert_eq!(i.operation, Operation::LoadXmm { register: 1 });
    assert_eq!(i.memory, mem32(Some(3), 16));
    // The 66 operand-size prefix does not make the access 2 bytes.
    assert_eq!(d64(&[0x66, 0x0f, 0xd6, 0x07]).width, AccessWidth::Qword);
    // REX.R after the mandatory prefix: xmm15, xmm8; REX.B: [r9].
    let i = d64(&[0x66, 0x44, 0x0f, 0xd6, 0x3f]);
    assert_eq!(i.operation, Operation::StoreXmm { register: 15 });
    let i = d64(&[0xf3, 0x45, 0x0f, 0x7e, 0x01]);
    assert_eq!(i.operation, Operation::LoadXmm { register: 8 });
    assert_eq!(i.memory, mem(Some(9), None, 0));
    // Other mandatory prefixes name other instructions: 0F D6 alone and
    // F2 0F 7E are undefined, 0F 7E is MMX MOVD, 66 0F 7E is MOVD r/m, xmm.
    for bytes in [
        &[0x0f, 0xd6, 0x07][..],
        &[0xf3, 0x0f, 0xd6, 0x07],
        &[0xf2, 0x0f, 0x7e, 0x07],
        &[0x0f, 0x7e, 0x07],
        &[0x66, 0x0f, 0x7e, 0x07],
        &[0x66, 0xf3, 0x0f, 0x7e, 0x07],
    ] {
        assert_eq!(
            decode(bytes, CpuMode::Bits64).unwrap_err().kind,
            DecodeErrorKind::Unsupported,
            "{bytes:02x?}"
        );
    }
    // Register operands (MOVQ xmm, xmm) do not touch memory.
    assert_eq!(
        decode(&[0xf3, 0x0f, 0x7e, 0xc1], CpuMode::Bits32)
            .unwrap_err()
            .kind,
        DecodeErrorKind::NotMemory
    );
    // F3 still means REP for ordinary instructions.
    assert_eq!(
        decode(&[0xf3, 0x0f, 0xb6, 0x07], CpuMode::Bits64)
            .unwrap_err()
            .kind,
        DecodeErrorKind::UnexpectedRepeat
    );
}

#[test]
fn sixteen_bit_addressing() {
    // mov ax, [bx+2] in a 16-bit code segment
    let i = decode(&[0x8b, 0x47, 0x02], CpuMode::Bits16).unwrap();
    assert_eq!((i.length, i.width), (3, AccessWidth::Word));
    assert_eq!(i.memory.base, Some(3));
    assert_eq!(i.memory.displacement, 2);
    assert_eq!(i.memory.address_size, 2);
    // mov cx, [0x1234] (mod 00, r/m 110: disp16)
    let i = decode(&[0x8b, 0x0e, 0x34, 0x12], CpuMode::Bits16).unwrap();
    assert_eq!(i.length, 4);
    assert_eq!(i.operation, load(1, AccessWidth::Word));
    assert_eq!((i.memory.base, i.memory.displacement), (None, 0x1234));
    // 66 in a 16-bit segment: mov [bp+si-1], eax
    let i = decode(&[0x66, 0x89, 0x42, 0xff], CpuMode::Bits16).unwrap();
    assert_eq!((i.length, i.width), (4, AccessWidth::Dword));
    assert_eq!((i.memory.base, i.memory.index), (Some(5), Some((6, 1))));
    // 67 in a 32-bit segment switches to 16-bit addressing: mov eax, [di]
    let i = decode(&[0x67, 0x8b, 0x05], CpuMode::Bits32).unwrap();
    assert_eq!((i.length, i.width), (3, AccessWidth::Dword));
    assert_eq!(i.memory.base, Some(7));
    // In a 32-bit segment, mod 00 r/m 101 is an absolute disp32.
    let i = decode(&[0x8b, 0x05, 0x00, 0x00, 0xe0, 0xfe], CpuMode::Bits32).unwrap();
    assert!(!i.memory.rip_relative);
    assert_eq!(i.memory.displacement, 0xfee0_0000u32 as i32 as i64);
}

#[test]
fn unknown_or_malformed_bytes_give_typed_errors() {
    let err = decode(&[0x0f, 0x0b], CpuMode::Bits64).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::Unsupported);
    assert_eq!(err.bytes(), &[0x0f, 0x0b]);
    // mov eax, eax has no memory operand.
    assert_eq!(
        decode(&[0x8b, 0xc0], CpuMode::Bits64).unwrap_err().kind,
        DecodeErrorKind::NotMemory
    );
    assert_eq!(
        decode(&[0x8b], CpuMode::Bits64).unwrap_err().kind,
        DecodeErrorKind::Truncated
    );
    assert_eq!(
        decode(&[], CpuMode::Bits64).unwrap_err().kind,
        DecodeErrorKind::Truncated
    );
    assert_eq!(
        decode(&[0x8b, 0x87, 0x00, 0x01], CpuMode::Bits64)
            .unwrap_err()
            .kind,
        DecodeErrorKind::Truncated
    );
    assert_eq!(
        decode(&[0x66; 20], CpuMode::Bits64).unwrap_err().kind,
        DecodeErrorKind::TooLong
    );
    assert_eq!(
        decode(&[0x66; 20], CpuMode::Bits64)
            .unwrap_err()
            .bytes()
            .len(),
        15
    );
    assert_eq!(
        decode(&[0xf3, 0x89, 0x07], CpuMode::Bits64)
            .unwrap_err()
            .kind,
        DecodeErrorKind::UnexpectedRepeat
    );
    // 48 is DEC EAX outside 64-bit mode: not an MMIO instruction.
    assert_eq!(
        decode(&[0x48, 0x8b, 0x07], CpuMode::Bits32)
            .unwrap_err()
            .kind,
        DecodeErrorKind::Unsupported
    );
    // c7 /1 is not MOV.
    assert_eq!(
        decode(&[0xc7, 0x0f, 0, 0, 0, 0], CpuMode::Bits64)
            .unwrap_err()
            .kind,
        DecodeErrorKind::Unsupported
    );
    // VEX-encoded loads are outside the supported set.
    assert_eq!(
        decode(&[0xc5, 0xfa, 0x6f, 0x07], CpuMode::Bits64)
            .unwrap_err()
            .kind,
        DecodeErrorKind::Unsupported
    );
}

#[test]
fn every_byte_sequence_decodes_or_fails_without_panicking() {
    // Deterministic xorshift over short random sequences and all 2-byte
    // prefixes of the opcode space.
    let mut state = 0x1234_5678_9abc_def0u64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        let len = (state >> 60) as usize % 9;
        for mode in [CpuMode::Bits16, CpuMode::Bits32, CpuMode::Bits64] {
            if let Ok(i) = decode(&bytes[..len], mode) {
                assert!(usize::from(i.length) <= len);
            }
        }
    }
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            let bytes = [a, b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            if let Ok(i) = decode(&bytes, CpuMode::Bits64) {
                assert!(i.length >= 2 || a == 0xaa || a == 0xab);
            }
        }
    }
}
