//! Decoding of the guest instructions behind an exit that does not describe its own operands (MMIO).
//!
//! An EPT violation on a device's registers reports the guest-physical
//! address but neither the width, the direction's register nor the
//! instruction length (undefined for these exits), so the faulting
//! instruction is fetched ([`mmio::fetch_instruction`]) and decoded here.
//! The decoder covers what compilers emit for MMIO accessors: MOV in all its
//! memory forms (88/89/8A/8B, C6/C7, A0-A3 moffs), MOVZX/MOVSX (0F B6/B7/BE/BF),
//! XCHG (86/87), TEST (84/85, F6/F7 /0), AND and OR with register or
//! immediate (20-23, 08-0B, 80/81/83 /1 and /4), CMP with register or
//! immediate (38-3B, 80/81/83 /7), STOS (AA/AB, with REP) and SSE2's MOVQ
//! between an XMM register and memory (66 0F D6 store, F3 0F 7E load), with
//! legacy prefixes, REX, and 16/32/64-bit addressing (ModRM, SIB,
//! displacement, RIP-relative). Anything else is a typed error carrying the
//! bytes; the decoder never panics and reads at most 15 bytes.
//! [`mmio`] performs a decoded access on the owning device.

use crate::device::AccessWidth;

pub mod mmio;

/// The longest x86 instruction.
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// The processor mode the instruction executes in (its default operand and
/// address sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real mode, virtual-8086 mode or a 16-bit code segment.
    Bits16,
    /// A 32-bit code segment (protected or compatibility mode).
    Bits32,
    /// 64-bit mode (CS.L = 1 in IA-32e mode).
    Bits64,
}

/// A general-purpose register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpr {
    /// Register number in SDM order: 0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX,
    /// 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8-15 = R8-R15.
    pub number: u8,
    /// The operand is bits 15:8 of register `number` (AH, CH, DH, BH).
    pub high_byte: bool,
}

impl Gpr {
    /// The register `number`, low bits.
    pub const fn new(number: u8) -> Self {
        Self {
            number,
            high_byte: false,
        }
    }
}

/// Where a value written to memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A register (its low `width` bytes).
    Register(Gpr),
    /// An immediate, already sign-extended to 64 bits where the SDM says so.
    Immediate(u64),
}

/// How a loaded value reaches a wider destination register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// Same width as the access (MOV).
    None,
    /// Zero-extended (MOVZX).
    Zero,
    /// Sign-extended (MOVSX).
    Sign,
}

/// What the instruction does with the memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Read memory into a register.
    Load {
        /// The destination register.
        destination: Gpr,
        /// The destination's width (wider than the access for MOVZX/MOVSX).
        destination_width: AccessWidth,
        /// How the value is extended.
        extension: Extension,
    },
    /// Write a register or an immediate to memory.
    Store {
        /// The value's source.
        source: Source,
    },
    /// STOS: write AL/AX/EAX/RAX to ES:\[rDI\], advance rDI by the width
    /// (backwards with RFLAGS.DF), repeated rCX times with REP.
    StoreString {
        /// A REP prefix is present.
        repeat: bool,
    },
    /// Read memory, AND or OR it with a source, write the result back to
    /// memory (destination memory) or to the register (destination
    /// register), and set the flags.
    Logic {
        /// AND or OR.
        op: LogicOp,
        /// The other operand.
        source: Source,
        /// The result goes to this register instead of memory.
        register_destination: bool,
    },
    /// TEST: read memory, AND with the source, set flags only.
    Test {
        /// The other operand.
        source: Source,
    },
    /// XCHG: memory to the register and the register to memory.
    Exchange {
        /// The register.
        register: Gpr,
    },
    /// CMP: read memory, subtract as SUB does and set CF, OF, SF, ZF, AF
    /// and PF from the subtraction; nothing else changes.
    Compare {
        /// The other operand.
        source: Source,
        /// The register is the minuend (`CMP r, r/m`, 3A/3B); otherwise
        /// memory is (`CMP r/m, r` and `CMP r/m, imm`).
        register_first: bool,
    },
    /// MOVQ xmm, m64 (F3 0F 7E): load 8 bytes into bits 63:0 of an XMM
    /// register and zero bits 127:64.
    LoadXmm {
        /// The XMM register number (0-15).
        register: u8,
    },
    /// MOVQ m64, xmm (66 0F D6): store bits 63:0 of an XMM register.
    StoreXmm {
        /// The XMM register number (0-15).
        register: u8,
    },
}

/// The logic operation of [`Operation::Logic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicOp {
    /// Bitwise AND.
    And,
    /// Bitwise OR.
    Or,
}

/// A segment register named by a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// ES (26).
    Es,
    /// CS (2E).
    Cs,
    /// SS (36).
    Ss,
    /// DS (3E).
    Ds,
    /// FS (64).
    Fs,
    /// GS (65).
    Gs,
}

/// The memory operand's address expression (for checks and for guests
/// whose violation reports no linear address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOperand {
    /// A segment override prefix.
    pub segment: Option<Segment>,
    /// Base register.
    pub base: Option<u8>,
    /// Index register and scale (1, 2, 4, 8).
    pub index: Option<(u8, u8)>,
    /// Displacement (sign-extended; for moffs, the full offset).
    pub displacement: i64,
    /// The address is relative to the next instruction's RIP.
    pub rip_relative: bool,
    /// Address size in bytes (2, 4 or 8).
    pub address_size: u8,
}

/// A decoded instruction with a memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// Length in bytes (what RIP advances by).
    pub length: u8,
    /// Width of the memory access.
    pub width: AccessWidth,
    /// What it does.
    pub operation: Operation,
    /// The memory operand.
    pub memory: MemoryOperand,
    /// A LOCK prefix is present.
    pub lock: bool,
}

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The bytes end before the instruction does.
    Truncated,
    /// More than 15 bytes of prefixes.
    TooLong,
    /// An opcode (or opcode extension) outside the supported set.
    Unsupported,
    /// The ModRM byte names a register, not memory: no MMIO access.
    NotMemory,
    /// REP/REPNE on an instruction other than STOS.
    UnexpectedRepeat,
}

/// Undecodable bytes, with the bytes (up to 15) for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// What went wrong.
    pub kind: DecodeErrorKind,
    /// The first bytes given.
    pub bytes: [u8; MAX_INSTRUCTION_LEN],
    /// How many of `bytes` were given.
    pub len: u8,
}

impl DecodeError {
    /// A `kind` error on `bytes` (the first [`MAX_INSTRUCTION_LEN`] kept).
    pub(super) fn new(kind: DecodeErrorKind, bytes: &[u8]) -> Self {
        let mut copy = [0u8; MAX_INSTRUCTION_LEN];
        let len = bytes.len().min(MAX_INSTRUCTION_LEN);
        copy[..len].copy_from_slice(&bytes[..len]);
        DecodeError {
            kind,
            bytes: copy,
            len: len as u8,
        }
    }

    /// The bytes given.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    #[inline(never)]
    fn byte(&mut self) -> Result<u8, DecodeErrorKind> {
        if self.at >= MAX_INSTRUCTION_LEN {
            return Err(DecodeErrorKind::TooLong);
        }
        let b = *self.bytes.get(self.at).ok_or(DecodeErrorKind::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    /// A little-endian value of `n` bytes, sign-extended.
    fn signed(&mut self, n: usize) -> Result<i64, DecodeErrorKind> {
        let v = self.unsigned(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(((v << shift) as i64) >> shift)
    }

    /// A little-endian value of `n` bytes (at most 8).
    fn unsigned(&mut self, n: usize) -> Result<u64, DecodeErrorKind> {
        let mut v: u64 = 0;
        for i in 0..n {
            v |= u64::from(self.byte()?) << (8 * i);
        }
        Ok(v)
    }
}

#[derive(Default, Clone, Copy)]
struct Prefixes {
    operand_size: bool,
    address_size: bool,
    segment: Option<Segment>,
    lock: bool,
    repeat: bool,
    /// The last of F2/F3 (the one that selects an SSE instruction).
    last_repeat: Option<u8>,
    rex: u8,
}

impl Prefixes {
    fn w(&self) -> bool {
        self.rex & 8 != 0
    }
    fn r(&self) -> u8 {
        (self.rex & 4) << 1
    }
    fn x(&self) -> u8 {
        (self.rex & 2) << 2
    }
    fn b(&self) -> u8 {
        (self.rex & 1) << 3
    }
}

/// Decodes the instruction at the start of `bytes` (at most 15 are read)
/// executing in `mode`.
pub fn decode(bytes: &[u8], mode: CpuMode) -> Result<Instruction, DecodeError> {
    decode_kind(bytes, mode).map_err(|kind| DecodeError::new(kind, bytes))
}

/// [`decode`] with only the kind of error: a caller that keeps the
/// instruction receives it as decoded, where converting the result first
/// copied it field by field.
pub(super) fn decode_kind(bytes: &[u8], mode: CpuMode) -> Result<Instruction, DecodeErrorKind> {
    decode_inner(&mut Reader { bytes, at: 0 }, mode)
}

/// What follows the opcode of an instruction with a ModRM byte, decided
/// before the ModRM byte is read.
#[derive(Clone, Copy)]
enum ModrmForm {
    /// MOVQ between an XMM register (ModRM.reg) and m64.
    Xmm {
        /// 66 0F D6 (else F3 0F 7E).
        store: bool,
    },
    /// MOVZX/MOVSX of a `width` memory operand into ModRM.reg.
    Extend(AccessWidth, Extension),
    /// An operation between ModRM.reg and memory (88-8B, 86/87, 84/85, AND,
    /// OR, CMP).
    Register,
    /// An operation between memory and an immediate, chosen by ModRM.reg
    /// (C6/C7, F6/F7, 80/81/83).
    Immediate,
}

fn decode_inner(r: &mut Reader<'_>, mode: CpuMode) -> Result<Instruction, DecodeErrorKind> {
    let mut p = Prefixes::default();
    let opcode = loop {
        let b = r.byte()?;
        match b {
            0x66 => p.operand_size = true,
            0x67 => p.address_size = true,
            0x26 => p.segment = Some(Segment::Es),
            0x2e => p.segment = Some(Segment::Cs),
            0x36 => p.segment = Some(Segment::Ss),
            0x3e => p.segment = Some(Segment::Ds),
            0x64 => p.segment = Some(Segment::Fs),
            0x65 => p.segment = Some(Segment::Gs),
            0xf0 => p.lock = true,
            0xf2 | 0xf3 => {
                p.repeat = true;
                p.last_repeat = Some(b);
            }
            0x40..=0x4f if mode == CpuMode::Bits64 => {
                p.rex = b;
                continue;
            }
            _ => break b,
        }
        // A REX prefix counts only directly before the opcode.
        p.rex = 0;
    };
    let operand_size: usize = match (mode, p.w(), p.operand_size) {
        (CpuMode::Bits64, true, _) => 8,
        (CpuMode::Bits16, _, false) | (CpuMode::Bits32 | CpuMode::Bits64, _, true) => 2,
        _ => 4,
    };
    let address_size: u8 = match (mode, p.address_size) {
        (CpuMode::Bits64, false) => 8,
        (CpuMode::Bits64, true) | (CpuMode::Bits32, false) | (CpuMode::Bits16, true) => 4,
        _ => 2,
    };
    let full = AccessWidth::from_bytes(operand_size).unwrap_or(AccessWidth::Dword);
    let byte_op = opcode & 1 == 0;
    // The access width of the forms whose low opcode bit selects byte or
    // full size.
    let width = if byte_op { AccessWidth::Byte } else { full };
    let no_repeat = |p: &Prefixes| {
        if p.repeat {
            Err(DecodeErrorKind::UnexpectedRepeat)
        } else {
            Ok(())
        }
    };
    let mut memory = MemoryOperand {
        segment: p.segment,
        base: None,
        index: None,
        displacement: 0,
        rip_relative: false,
        address_size,
    };

    let form = match opcode {
        0xa0..=0xa3 => {
            no_repeat(&p)?;
            memory.displacement = r.unsigned(usize::from(address_size))? as i64;
            let rax = Gpr::new(0);
            let operation = if opcode < 0xa2 {
                Operation::Load {
                    destination: rax,
                    destination_width: width,
                    extension: Extension::None,
                }
            } else {
                Operation::Store {
                    source: Source::Register(rax),
                }
            };
            return Ok(instruction(r, &p, width, operation, memory));
        }
        0xaa | 0xab => {
            memory.segment = Some(Segment::Es);
            memory.base = Some(7);
            let operation = Operation::StoreString { repeat: p.repeat };
            return Ok(instruction(r, &p, width, operation, memory));
        }
        0x0f => {
            let second = r.byte()?;
            // The SSE2 MOVQ forms: 66 0F D6 /r stores xmm to m64, F3 0F 7E
            // /r loads m64 into xmm. The mandatory prefix selects the
            // instruction, so 66 and F3 together (or F2) name another one.
            match (second, p.operand_size, p.last_repeat) {
                (0xd6, true, None) => ModrmForm::Xmm { store: true },
                (0x7e, false, Some(0xf3)) => ModrmForm::Xmm { store: false },
                (0xd6 | 0x7e, _, _) => return Err(DecodeErrorKind::Unsupported),
                _ => {
                    no_repeat(&p)?;
                    match second {
                        0xb6 => ModrmForm::Extend(AccessWidth::Byte, Extension::Zero),
                        0xb7 => ModrmForm::Extend(AccessWidth::Word, Extension::Zero),
                        0xbe => ModrmForm::Extend(AccessWidth::Byte, Extension::Sign),
                        0xbf => ModrmForm::Extend(AccessWidth::Word, Extension::Sign),
                        _ => return Err(DecodeErrorKind::Unsupported),
                    }
                }
            }
        }
        _ => {
            no_repeat(&p)?;
            match opcode {
                0x88
                | 0x89
                | 0x8a
                | 0x8b
                | 0x86
                | 0x87
                | 0x84
                | 0x85
                | 0x20..=0x23
                | 0x08..=0x0b
                | 0x38..=0x3b => ModrmForm::Register,
                0xc6 | 0xc7 | 0xf6 | 0xf7 | 0x80 | 0x81 | 0x83 => ModrmForm::Immediate,
                _ => return Err(DecodeErrorKind::Unsupported),
            }
        }
    };

    let reg = modrm(r, &p, mode, &mut memory)?;
    let (width, operation) = match form {
        ModrmForm::Xmm { store } => {
            let operation = if store {
                Operation::StoreXmm { register: reg }
            } else {
                Operation::LoadXmm { register: reg }
            };
            (AccessWidth::Qword, operation)
        }
        ModrmForm::Extend(width, extension) => {
            let operation = Operation::Load {
                destination: Gpr::new(reg),
                destination_width: full,
                extension,
            };
            (width, operation)
        }
        ModrmForm::Register => {
            let reg = if byte_op && p.rex == 0 && (4..8).contains(&reg) {
                Gpr {
                    number: reg - 4,
                    high_byte: true,
                }
            } else {
                Gpr::new(reg)
            };
            let operation = match opcode {
                0x88 | 0x89 => Operation::Store {
                    source: Source::Register(reg),
                },
                0x8a | 0x8b => Operation::Load {
                    destination: reg,
                    destination_width: width,
                    extension: Extension::None,
                },
                0x86 | 0x87 => Operation::Exchange { register: reg },
                0x84 | 0x85 => Operation::Test {
                    source: Source::Register(reg),
                },
                0x38..=0x3b => Operation::Compare {
                    source: Source::Register(reg),
                    register_first: opcode & 2 != 0,
                },
                _ => Operation::Logic {
                    op: if opcode >= 0x20 {
                        LogicOp::And
                    } else {
                        LogicOp::Or
                    },
                    source: Source::Register(reg),
                    register_destination: opcode & 2 != 0,
                },
            };
            (width, operation)
        }
        ModrmForm::Immediate => {
            let ext = reg & 7;
            // A full-size immediate is 16 bits for 16-bit operands, else 32
            // bits sign-extended; 83 takes 8 bits sign-extended.
            let imm = match opcode {
                0x83 => r.signed(1)? as u64,
                _ if byte_op => r.unsigned(1)?,
                _ => r.signed(operand_size.min(4))? as u64,
            };
            let source = Source::Immediate(imm);
            let width = if opcode == 0x83 { full } else { width };
            let operation = match (opcode, ext) {
                (0xc6 | 0xc7, 0) => Operation::Store { source },
                (0xf6 | 0xf7, 0) => Operation::Test { source },
                (0x80 | 0x81 | 0x83, 1 | 4) => Operation::Logic {
                    op: if ext == 4 { LogicOp::And } else { LogicOp::Or },
                    source,
                    register_destination: false,
                },
                (0x80 | 0x81 | 0x83, 7) => Operation::Compare {
                    source,
                    register_first: false,
                },
                _ => return Err(DecodeErrorKind::Unsupported),
            };
            (width, operation)
        }
    };
    Ok(instruction(r, &p, width, operation, memory))
}

/// The decoded instruction, `r` having read all of it.
fn instruction(
    r: &Reader<'_>,
    p: &Prefixes,
    width: AccessWidth,
    operation: Operation,
    memory: MemoryOperand,
) -> Instruction {
    Instruction {
        length: r.at as u8,
        width,
        operation,
        memory,
        lock: p.lock,
    }
}

/// Decodes ModRM (and SIB, displacement) into `memory` (which holds the
/// segment and address size); returns the reg field (with REX.R).
fn modrm(
    r: &mut Reader<'_>,
    p: &Prefixes,
    mode: CpuMode,
    memory: &mut MemoryOperand,
) -> Result<u8, DecodeErrorKind> {
    let m = r.byte()?;
    let mo = m >> 6;
    let reg = ((m >> 3) & 7) | p.r();
    let rm = m & 7;
    if mo == 3 {
        return Err(DecodeErrorKind::NotMemory);
    }
    if memory.address_size == 2 {
        // 16-bit addressing: BX=3, BP=5, SI=6, DI=7.
        let (base, index) = match rm {
            0 => (Some(3), Some(6)),
            1 => (Some(3), Some(7)),
            2 => (Some(5), Some(6)),
            3 => (Some(5), Some(7)),
            4 => (Some(6), None),
            5 => (Some(7), None),
            6 if mo == 0 => (None, None),
            6 => (Some(5), None),
            _ => (Some(3), None),
        };
        memory.base = base;
        memory.index = index.map(|i| (i, 1));
        memory.displacement = match (mo, rm) {
            (0, 6) | (2, _) => r.signed(2)?,
            (1, _) => r.signed(1)?,
            _ => 0,
        };
        return Ok(reg);
    }
    let mut disp32 = mo == 2;
    if rm == 4 {
        let sib = r.byte()?;
        let index = ((sib >> 3) & 7) | p.x();
        if index != 4 {
            memory.index = Some((index, 1 << (sib >> 6)));
        }
        if sib & 7 == 5 && mo == 0 {
            disp32 = true;
        } else {
            memory.base = Some((sib & 7) | p.b());
        }
    } else if rm == 5 && mo == 0 {
        disp32 = true;
        memory.rip_relative = mode == CpuMode::Bits64;
    } else {
        memory.base = Some(rm | p.b());
    }
    memory.displacement = if disp32 {
        r.signed(4)?
    } else if mo == 1 {
        r.signed(1)?
    } else {
        0
    };
    Ok(reg)
}

#[cfg(test)]
mod tests;
