//! Performing a decoded MMIO access on the device that owns the address,
//! and the whole EPT-violation path: fetch, decode, dispatch.
//!
//! [`emulate`] takes the faulting guest-physical address, a decoded
//! [`Instruction`] and the guest's registers, calls the owning device
//! through an [`MmioBus`], and returns a [`WriteBack`]: the registers and
//! flags to store and how far RIP advances. Accesses to addresses nothing
//! owns complete as a bus without a device would (reads return all ones,
//! writes are dropped) and are reported in [`WriteBack::unclaimed`].
//! [`handle_ept_violation`] adds fetching the instruction through the
//! guest's page tables.

use ponte_arch::ept::EptViolation;

use super::{
    decode_kind, CpuMode, DecodeError, Extension, Gpr, Instruction, LogicOp, Operation, Source,
};
use crate::device::AccessWidth;
use crate::memory::translate::{translate, Access, PagingContext, TranslateError};
use crate::memory::{GuestLayout, GuestMemory, Lookup, RamBacking};

/// The devices behind MMIO regions, addressed by the id the integrator gave
/// each region in the [`GuestLayout`].
pub trait MmioBus<D> {
    /// Reads `width` bytes at `offset` of `device`'s region.
    fn mmio_read(&mut self, device: D, offset: u64, width: AccessWidth) -> u64;
    /// Writes the low `width` bytes of `value` at `offset` of `device`'s region.
    fn mmio_write(&mut self, device: D, offset: u64, width: AccessWidth, value: u64);
}

/// RFLAGS.CF.
pub const RFLAGS_CF: u64 = 1 << 0;
/// RFLAGS.PF.
pub const RFLAGS_PF: u64 = 1 << 2;
/// RFLAGS.AF.
pub const RFLAGS_AF: u64 = 1 << 4;
/// RFLAGS.ZF.
pub const RFLAGS_ZF: u64 = 1 << 6;
/// RFLAGS.SF.
pub const RFLAGS_SF: u64 = 1 << 7;
/// RFLAGS.DF.
pub const RFLAGS_DF: u64 = 1 << 10;
/// RFLAGS.OF.
pub const RFLAGS_OF: u64 = 1 << 11;
const ARITHMETIC_FLAGS: u64 = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF;

/// The guest's general-purpose registers (SDM order, see [`Gpr`]), RFLAGS
/// and the low halves of its XMM registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15.
    pub gpr: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
    /// Bits 63:0 of XMM0-XMM15 (what MOVQ moves).
    pub xmm: [u64; 16],
}

impl Registers {
    /// The low `width` bytes of `reg` (bits 15:8 for a high-byte register).
    // Out of line: the emulator reads registers at several sites, each of
    // which carried its own copy of the high-byte and mask selection.
    #[inline(never)]
    pub fn read(&self, reg: Gpr, width: AccessWidth) -> u64 {
        let value = self.gpr[usize::from(reg.number & 15)];
        if reg.high_byte {
            (value >> 8) & 0xff
        } else {
            value & width.mask()
        }
    }

    /// Writes `value` to `reg` as an instruction with a `width`-byte
    /// destination does: 4 bytes zero-extend into 64, 1 and 2 bytes merge.
    pub fn write(&mut self, reg: Gpr, width: AccessWidth, value: u64) {
        let slot = &mut self.gpr[usize::from(reg.number & 15)];
        *slot = if reg.high_byte {
            (*slot & !0xff00) | ((value & 0xff) << 8)
        } else {
            match width {
                AccessWidth::Qword => value,
                AccessWidth::Dword => value & 0xffff_ffff,
                w => (*slot & !w.mask()) | (value & w.mask()),
            }
        };
    }
}

/// What the guest's state becomes after an emulated access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteBack {
    /// The registers after the instruction.
    pub registers: Registers,
    /// Bit `n` set: general-purpose register `n` changed.
    pub changed: u16,
    /// RFLAGS changed.
    pub rflags_changed: bool,
    /// Bit `n` set: XMM register `n` was loaded by MOVQ: bits 63:0 become
    /// `registers.xmm[n]` and bits 127:64 become zero.
    pub xmm_loaded: u16,
    /// Bytes to add to RIP (0 when a REP STOS still has iterations left and
    /// the guest re-executes it).
    pub rip_advance: u64,
    /// The access reached no device or RAM.
    pub unclaimed: Option<UnclaimedAccess>,
}

/// An access to a guest-physical address nothing owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnclaimedAccess {
    /// The address.
    pub guest_physical: u64,
    /// The access was a write (else a read).
    pub write: bool,
    /// Its width.
    pub width: AccessWidth,
}

/// Why an MMIO access could not be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The address is guest RAM: the violation is a permission matter (a
    /// write to a read-only page, dirty tracking) for the caller.
    Ram {
        /// The address.
        guest_physical: u64,
    },
    /// The access runs past the end of the device's region.
    CrossesRegion {
        /// The address.
        guest_physical: u64,
        /// The access width.
        width: AccessWidth,
        /// Bytes left in the region from the address.
        remaining: u64,
    },
    /// The instruction could not be fetched: inject the page fault (or #GP
    /// for a non-canonical RIP) or report the memory error.
    Fetch(TranslateError),
    /// The instruction could not be decoded.
    Decode(DecodeError),
    /// The processor's walk of the guest's own page tables reached an
    /// address that is not RAM (the guest put a page table there).
    GuestPageWalk {
        /// The address.
        guest_physical: u64,
    },
    /// The guest fetched instructions from an address that is not RAM.
    InstructionFetch {
        /// The address.
        guest_physical: u64,
    },
    /// The violation reports a write but the decoded instruction only reads
    /// (the instruction bytes changed after the access, for example): not
    /// emulated, so no device sees an access the guest did not make.
    DirectionMismatch {
        /// The address.
        guest_physical: u64,
        /// The decoded instruction.
        instruction: Instruction,
    },
}

enum Target<D> {
    Device(D, u64),
    Nothing,
}

fn target<B: RamBacking, D: Copy, const N: usize>(
    layout: &GuestLayout<B, D, N>,
    guest_physical: u64,
    width: AccessWidth,
) -> Result<Target<D>, MmioError> {
    match layout.lookup(guest_physical) {
        Lookup::Ram { .. } => Err(MmioError::Ram { guest_physical }),
        Lookup::Mmio {
            device,
            offset,
            remaining,
        } => {
            if remaining < width.bytes() as u64 {
                Err(MmioError::CrossesRegion {
                    guest_physical,
                    width,
                    remaining,
                })
            } else {
                Ok(Target::Device(device, offset))
            }
        }
        Lookup::Nothing => Ok(Target::Nothing),
    }
}

/// Flags after AND/OR/TEST with result `value` of `width`: CF = OF = 0,
/// SF, ZF and PF from the result, AF cleared (undefined in the SDM).
fn logic_flags(rflags: u64, value: u64, width: AccessWidth) -> u64 {
    let value = value & width.mask();
    let mut flags = rflags & !ARITHMETIC_FLAGS;
    if value == 0 {
        flags |= RFLAGS_ZF;
    }
    if value >> (width.bytes() * 8 - 1) & 1 != 0 {
        flags |= RFLAGS_SF;
    }
    if (value as u8).count_ones() & 1 == 0 {
        flags |= RFLAGS_PF;
    }
    flags
}

/// Flags after CMP (SUB) of `subtrahend` from `minuend`, both `width`
/// wide (SDM Vol. 1, 3.4.3.1 and appendix A): CF the borrow out of the top
/// bit, OF a signed overflow, SF the result's top bit, ZF a zero result,
/// AF the borrow out of bit 3, PF an even number of ones in the result's low
/// byte. Other RFLAGS bits are kept.
fn subtraction_flags(rflags: u64, minuend: u64, subtrahend: u64, width: AccessWidth) -> u64 {
    let mask = width.mask();
    let (a, b) = (minuend & mask, subtrahend & mask);
    let result = a.wrapping_sub(b) & mask;
    let top = width.bytes() as u32 * 8 - 1;
    let mut flags = logic_flags(rflags, result, width);
    if a < b {
        flags |= RFLAGS_CF;
    }
    if ((a ^ b) & (a ^ result)) >> top & 1 != 0 {
        flags |= RFLAGS_OF;
    }
    if (a ^ b ^ result) & 0x10 != 0 {
        flags |= RFLAGS_AF;
    }
    flags
}

fn extend(value: u64, from: AccessWidth, extension: Extension) -> u64 {
    match extension {
        Extension::Sign => {
            let shift = 64 - from.bytes() as u32 * 8;
            (((value << shift) as i64) >> shift) as u64
        }
        Extension::None | Extension::Zero => value & from.mask(),
    }
}

/// Performs the access of `instruction` at `guest_physical` on the owning
/// device and returns the guest state that results.
pub fn emulate<B: RamBacking, D: Copy, const N: usize>(
    layout: &GuestLayout<B, D, N>,
    bus: &mut impl MmioBus<D>,
    guest_physical: u64,
    instruction: &Instruction,
    registers: &Registers,
) -> Result<WriteBack, MmioError> {
    let target = target(layout, guest_physical, instruction.width)?;
    let mut out = WriteBack {
        registers: *registers,
        changed: 0,
        rflags_changed: false,
        xmm_loaded: 0,
        rip_advance: u64::from(instruction.length),
        unclaimed: None,
    };
    perform(
        &mut out,
        bus,
        target,
        guest_physical,
        instruction,
        registers,
    );
    Ok(out)
}

/// The device access and register updates of [`emulate`], into `out`
/// (which starts as `registers` with RIP advanced by the instruction).
fn perform<D: Copy>(
    out: &mut WriteBack,
    bus: &mut impl MmioBus<D>,
    target: Target<D>,
    guest_physical: u64,
    instruction: &Instruction,
    registers: &Registers,
) {
    let width = instruction.width;
    let mut read = |out: &mut WriteBack| match target {
        Target::Device(device, offset) => bus.mmio_read(device, offset, width) & width.mask(),
        Target::Nothing => {
            out.unclaimed = Some(UnclaimedAccess {
                guest_physical,
                write: false,
                width,
            });
            width.mask()
        }
    };
    // Reads happen before writes, so a read-modify-write reports the write.
    let source_value = |source: Source| match source {
        Source::Register(reg) => registers.read(reg, width),
        Source::Immediate(imm) => imm & width.mask(),
    };
    let mut store: Option<u64> = None;
    match instruction.operation {
        Operation::Load {
            destination,
            destination_width,
            extension,
        } => {
            let value = extend(read(out), width, extension);
            out.registers.write(destination, destination_width, value);
            out.changed |= 1 << destination.number;
        }
        Operation::Store { source } => store = Some(source_value(source)),
        Operation::StoreString { repeat } => {
            let counter_mask = match instruction.memory.address_size {
                2 => 0xffff,
                4 => 0xffff_ffff,
                _ => u64::MAX,
            };
            let count = registers.gpr[1] & counter_mask;
            if repeat && count == 0 {
                return;
            }
            store = Some(registers.read(Gpr::new(0), width));
            let step = width.bytes() as u64;
            let rdi = registers.gpr[7];
            let moved = if registers.rflags & RFLAGS_DF != 0 {
                rdi.wrapping_sub(step)
            } else {
                rdi.wrapping_add(step)
            };
            out.registers.gpr[7] = (rdi & !counter_mask) | (moved & counter_mask);
            out.changed |= 1 << 7;
            if repeat {
                let left = count - 1;
                out.registers.gpr[1] = (registers.gpr[1] & !counter_mask) | left;
                out.changed |= 1 << 1;
                if left != 0 {
                    out.rip_advance = 0;
                }
            }
        }
        Operation::Logic {
            op,
            source,
            register_destination,
        } => {
            let memory = read(out);
            let other = source_value(source);
            let result = match op {
                LogicOp::And => memory & other,
                LogicOp::Or => memory | other,
            };
            out.registers.rflags = logic_flags(registers.rflags, result, width);
            out.rflags_changed = true;
            match (register_destination, source) {
                (true, Source::Register(reg)) => {
                    out.registers.write(reg, width, result);
                    out.changed |= 1 << reg.number;
                }
                _ => store = Some(result),
            }
        }
        Operation::Test { source } => {
            let result = read(out) & source_value(source);
            out.registers.rflags = logic_flags(registers.rflags, result, width);
            out.rflags_changed = true;
        }
        Operation::Exchange { register } => {
            let old = read(out);
            store = Some(registers.read(register, width));
            out.registers.write(register, width, old);
            out.changed |= 1 << register.number;
        }
        Operation::Compare {
            source,
            register_first,
        } => {
            let memory = read(out);
            let other = source_value(source);
            let (minuend, subtrahend) = if register_first {
                (other, memory)
            } else {
                (memory, other)
            };
            out.registers.rflags = subtraction_flags(registers.rflags, minuend, subtrahend, width);
            out.rflags_changed = true;
        }
        Operation::LoadXmm { register } => {
            let register = usize::from(register & 15);
            out.registers.xmm[register] = read(out);
            out.xmm_loaded |= 1 << register;
        }
        Operation::StoreXmm { register } => {
            store = Some(registers.xmm[usize::from(register & 15)]);
        }
    }
    if let Some(value) = store {
        match target {
            Target::Device(device, offset) => bus.mmio_write(device, offset, width, value),
            Target::Nothing => {
                out.unclaimed = Some(UnclaimedAccess {
                    guest_physical,
                    write: true,
                    width,
                })
            }
        }
    }
}

/// Reads up to 15 instruction bytes at linear address `rip_linear` into
/// `bytes`, translating each page separately. Returns how many were read:
/// fewer than 15 when the next page cannot be fetched, with the fault that
/// stopped it (the decoder then asks for more only if the instruction
/// really continues there).
pub fn fetch_instruction<M: GuestMemory + ?Sized>(
    mem: &M,
    paging: &PagingContext,
    rip_linear: u64,
    bytes: &mut [u8; 15],
) -> Result<(usize, Option<TranslateError>), TranslateError> {
    let first = translate(mem, paging, rip_linear, Access::Execute)?;
    let in_first = first.bytes_to_page_end().min(15) as usize;
    mem.read(first.physical, &mut bytes[..in_first])
        .map_err(TranslateError::Memory)?;
    if in_first == 15 {
        return Ok((15, None));
    }
    let next = rip_linear.wrapping_add(in_first as u64);
    let second = translate(mem, paging, next, Access::Execute).and_then(|t| {
        mem.read(t.physical, &mut bytes[in_first..])
            .map_err(TranslateError::Memory)
    });
    match second {
        Ok(()) => Ok((15, None)),
        Err(e) => Ok((in_first, Some(e))),
    }
}

/// The vCPU state an EPT-violation handler needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuState {
    /// General-purpose registers and RFLAGS.
    pub registers: Registers,
    /// The linear address of the instruction (CS base + RIP).
    pub rip_linear: u64,
    /// Control registers, EFER and CPL for the instruction fetch.
    pub paging: PagingContext,
    /// The code segment's mode.
    pub mode: CpuMode,
}

/// Handles an EPT violation on an address that is not RAM: fetches and
/// decodes the faulting instruction, performs the access on the owning
/// device (or reports it as unclaimed) and returns the state to write back.
// Out of line: inlined, its write-back was copied once more where the
// error paths join it in the caller.
#[inline(never)]
pub fn handle_ept_violation<B: RamBacking, D: Copy, const N: usize>(
    layout: &GuestLayout<B, D, N>,
    bus: &mut impl MmioBus<D>,
    violation: &EptViolation,
    vcpu: &VcpuState,
) -> Result<WriteBack, MmioError> {
    let guest_physical = violation.guest_physical;
    if let Lookup::Ram { .. } = layout.lookup(guest_physical) {
        return Err(MmioError::Ram { guest_physical });
    }
    if violation.guest_linear.is_some() && !violation.final_translation {
        return Err(MmioError::GuestPageWalk { guest_physical });
    }
    if violation.fetch {
        return Err(MmioError::InstructionFetch { guest_physical });
    }
    let mut bytes = [0u8; 15];
    let (len, second_page) = fetch_instruction(layout, &vcpu.paging, vcpu.rip_linear, &mut bytes)
        .map_err(MmioError::Fetch)?;
    let instruction = match decode_kind(&bytes[..len], vcpu.mode) {
        Ok(i) => i,
        Err(kind) => {
            return Err(match (kind, second_page) {
                (super::DecodeErrorKind::Truncated, Some(fault)) => MmioError::Fetch(fault),
                _ => MmioError::Decode(DecodeError::new(kind, &bytes[..len])),
            })
        }
    };
    let only_reads = matches!(
        instruction.operation,
        Operation::Load { .. }
            | Operation::Test { .. }
            | Operation::Compare { .. }
            | Operation::LoadXmm { .. }
            | Operation::Logic {
                register_destination: true,
                ..
            }
    );
    if violation.write && only_reads {
        return Err(MmioError::DirectionMismatch {
            guest_physical,
            instruction,
        });
    }
    emulate(layout, bus, guest_physical, &instruction, &vcpu.registers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::memory::translate::{PageFault, CR0_PG, CR4_PAE, EFER_LMA};
    use core::cell::Cell;
    use std::vec;
    use std::vec::Vec;

    type Layout<'a> = GuestLayout<&'a [Cell<u8>], u8, 4>;

    /// Device 1: registers that read back as `0x8000_0000_0000_0080 | offset`
    /// (so sign bits show) and record writes.
    #[derive(Default)]
    struct Bus {
        writes: Vec<(u8, u64, AccessWidth, u64)>,
        reads: Vec<(u8, u64, AccessWidth)>,
    }

    impl MmioBus<u8> for Bus {
        fn mmio_read(&mut self, device: u8, offset: u64, width: AccessWidth) -> u64 {
            self.reads.push((device, offset, width));
            0x8000_0000_0000_0080 | offset
        }
        fn mmio_write(&mut self, device: u8, offset: u64, width: AccessWidth, value: u64) {
            self.writes.push((device, offset, width, value));
        }
    }

    const DEV: u64 = 0xfee0_0000;

    fn with_layout(f: impl FnOnce(&Layout, &[Cell<u8>])) {
        let mut buf = vec![0u8; 0x10000];
        let cells = Cell::from_mut(&mut buf[..]).as_slice_of_cells();
        let mut layout: Layout = GuestLayout::new();
        layout.add_ram(0, cells).unwrap();
        layout.add_mmio(DEV, 0x1000, 1).unwrap();
        layout.reserve(0xfec0_0000, 0x1000).unwrap();
        f(&layout, cells);
    }

    fn run(layout: &Layout, bus: &mut Bus, gpa: u64, bytes: &[u8], regs: &Registers) -> WriteBack {
        let i = decode(bytes, CpuMode::Bits64).unwrap();
        emulate(layout, bus, gpa, &i, regs).unwrap()
    }

    #[test]
    fn loads_extend_into_registers_as_the_sdm_says() {
        with_layout(|layout, _| {
            let mut bus = Bus::default();
            let regs = Registers {
                gpr: [u64::MAX; 16],
                rflags: 0x2,
                ..Registers::default()
            };
            // mov eax, [rdi+0x100]: 32-bit destination zero-extends.
            let wb = run(
                layout,
                &mut bus,
                DEV + 0x100,
                &[0x8b, 0x87, 0, 1, 0, 0],
                &regs,
            );
            assert_eq!(wb.registers.gpr[0], 0x0000_0180);
            assert_eq!(
                (wb.changed, wb.rip_advance, wb.rflags_changed),
                (1, 6, false)
            );
            assert_eq!(bus.reads, [(1, 0x100, AccessWidth::Dword)]);
            // mov al, [rdi]: 8-bit destination merges.
            let wb = run(layout, &mut bus, DEV + 4, &[0x8a, 0x07], &regs);
            assert_eq!(wb.registers.gpr[0], 0xffff_ffff_ffff_ff84);
            // mov ch, [rdi]: bits 15:8 of RCX.
            let wb = run(layout, &mut bus, DEV + 4, &[0x8a, 0x2f], &regs);
            assert_eq!(wb.registers.gpr[1], 0xffff_ffff_ffff_84ff);
            assert_eq!(wb.changed, 1 << 1);
            // mov ax, [rdi]: 16-bit merges.
            let wb = run(layout, &mut bus, DEV + 4, &[0x66, 0x8b, 0x07], &regs);
            assert_eq!(wb.registers.gpr[0], 0xffff_ffff_ffff_0084);
            // movsx rax, byte [rdi]: 0x84 is negative.
            let wb = run(layout, &mut bus, DEV + 4, &[0x48, 0x0f, 0xbe, 0x07], &regs);
            assert_eq!(wb.registers.gpr[0], 0xffff_ffff_ffff_ff84);
            // movzx eax, word [rdi]
            let wb = run(layout, &mut bus, DEV + 4, &[0x0f, 0xb7, 0x07], &regs);
            assert_eq!(wb.registers.gpr[0], 0x84);
            // mov rax, [rdi]
            let wb = run(layout, &mut bus, DEV + 8, &[0x48, 0x8b, 0x07], &regs);
            assert_eq!(wb.registers.gpr[0], 0x8000_0000_0000_0088);
        });
    }

    #[test]
    fn stores_rmw_and_exchange_reach_the_device() {
        with_layout(|layout, _| {
            let mut bus = Bus::default();
            let mut regs = Registers::default();
            regs.gpr[0] = 0x1122_3344_5566_7788;
            regs.gpr[8] = 0xdead_beef;
            // mov [rdi], ax ; mov [rdi+4], r8d ; mov byte [rdi], 0xab ; mov [rdi], ah
            run(layout, &mut bus, DEV, &[0x66, 0x89, 0x07], &regs);
            run(layout, &mut bus, DEV + 4, &[0x44, 0x89, 0x47, 0x04], &regs);
            run(
                layout,
                &mut bus,
                DEV + 0x10,
                &[0xc6, 0x47, 0x10, 0xab],
                &regs,
            );
            run(layout, &mut bus, DEV, &[0x88, 0x27], &regs);
            assert_eq!(
                bus.writes,
                [
                    (1, 0, AccessWidth::Word, 0x7788),
                    (1, 4, AccessWidth::Dword, 0xdead_beef),
                    (1, 0x10, AccessWidth::Byte, 0xab),
                    (1, 0, AccessWidth::Byte, 0x77),
                ]
            );
            bus.writes.clear();
            // or dword [rdi], 1: reads 0x80000080|0, writes 0x81, flags from
            // the 32-bit result (SF clear, PF: 0x81 has two bits set -> even).
            let wb = run(layout, &mut bus, DEV, &[0x83, 0x0f, 0x01], &regs);
            assert_eq!(bus.writes, [(1, 0, AccessWidth::Dword, 0x81)]);
            assert!(wb.rflags_changed);
            assert_eq!(
                wb.registers.rflags & (RFLAGS_ZF | RFLAGS_SF | RFLAGS_PF),
                RFLAGS_PF
            );
            // test byte [rdi], 1: 0x80 & 1 = 0 -> ZF, PF; no write.
            bus.writes.clear();
            regs.rflags = RFLAGS_CF | RFLAGS_OF;
            let wb = run(layout, &mut bus, DEV, &[0xf6, 0x07, 0x01], &regs);
            assert!(bus.writes.is_empty());
            assert_eq!(wb.registers.rflags, RFLAGS_ZF | RFLAGS_PF);
            // and eax, [rdi]: register destination, memory untouched.
            let wb = run(layout, &mut bus, DEV + 0xc, &[0x23, 0x07], &regs);
            assert_eq!(wb.registers.gpr[0], 0x5566_7788 & 0x8c);
            assert!(bus.writes.is_empty());
            // xchg [rdi], eax
            let wb = run(layout, &mut bus, DEV + 0x20, &[0x87, 0x07], &regs);
            assert_eq!(bus.writes, [(1, 0x20, AccessWidth::Dword, 0x5566_7788)]);
            assert_eq!(
                wb.registers.gpr[0], 0xa0,
                "bit 63 of the read is beyond the dword"
            );
        });
    }

    /// Device 2: 4 KiB that behave as little-endian memory.
    struct Window(Vec<u8>);

    impl MmioBus<u8> for Window {
        fn mmio_read(&mut self, _device: u8, offset: u64, width: AccessWidth) -> u64 {
            let at = offset as usize;
            let mut bytes = [0u8; 8];
            bytes[..width.bytes()].copy_from_slice(&self.0[at..at + width.bytes()]);
            u64::from_le_bytes(bytes)
        }
        fn mmio_write(&mut self, _device: u8, offset: u64, width: AccessWidth, value: u64) {
            let at = offset as usize;
            self.0[at..at + width.bytes()].copy_from_slice(&value.to_le_bytes()[..width.bytes()]);
        }
    }

    const WINDOW: u64 = 0xff00_0000;

    fn with_window(f: impl FnOnce(&GuestLayout<&[Cell<u8>], u8, 4>, &mut Window)) {
        let mut layout = GuestLayout::new();
        layout.add_mmio(WINDOW, 0x1000, 2).unwrap();
        f(&layout, &mut Window(vec![0; 0x1000]));
    }

    /// Runs `bytes` (32-bit code) on the window at offset 0 holding `memory`,
    /// with EAX = `eax` and EBX at the window, and returns the write-back.
    fn compare32(bytes: &[u8], memory: u64, eax: u64, rflags: u64) -> WriteBack {
        let mut out = None;
        with_window(|layout, window| {
            window.0[..8].copy_from_slice(&memory.to_le_bytes());
            let mut regs = Registers {
                rflags,
                ..Registers::default()
            };
            regs.gpr[0] = eax;
            regs.gpr[3] = WINDOW;
            let i = decode(bytes, CpuMode::Bits32).unwrap();
            let wb = emulate(layout, window, WINDOW, &i, &regs).unwrap();
            assert_eq!(
                &window.0[..8],
                &memory.to_le_bytes(),
                "CMP writes no memory"
            );
            assert_eq!(wb.registers.gpr, regs.gpr, "CMP writes no register");
            assert_eq!((wb.changed, wb.xmm_loaded), (0, 0));
            assert!(wb.rflags_changed);
            assert_eq!(wb.rip_advance, bytes.len() as u64);
            out = Some(wb);
        });
        out.unwrap()
    }

    const CF: u64 = RFLAGS_CF;
    const PF: u64 = RFLAGS_PF;
    const AF: u64 = RFLAGS_AF;
    const ZF: u64 = RFLAGS_ZF;
    const SF: u64 = RFLAGS_SF;
    const OF: u64 = RFLAGS_OF;

    #[test]
    fn cmp_sets_the_flags_of_the_subtraction_per_width() {
        // Bit 1 (always one), IF and DF are kept; stale CF/OF/SF are not.
        let kept = 0x2 | (1 << 9) | RFLAGS_DF;
        let stale = kept | CF | OF | SF | AF;
        let cases: &[(&[u8], u64, u64, u64)] = &[
            // cmp byte [ebx], 0x44 with 0x44: equal -> ZF, PF (0 ones).
            (&[0x80, 0x3b, 0x44], 0x44, 0, ZF | PF),
            // 0x00 - 0x01 = 0xff: borrow out of bit 7 and bit 3, 8 ones.
            (&[0x80, 0x3b, 0x01], 0x00, 0, CF | AF | SF | PF),
            // 0x80 - 0x01 = 0x7f: -128 - 1 overflows; 7 ones (odd).
            (&[0x80, 0x3b, 0x01], 0x80, 0, OF | AF),
            // 0x7f - 0xff = 0x80: 127 - (-1) overflows, unsigned borrow.
            (&[0x80, 0x3b, 0xff], 0x7f, 0, CF | OF | SF),
            // Only the byte is compared: 0x1144 vs 0x44 is equal.
            (&[0x80, 0x3b, 0x44], 0x1144, 0, ZF | PF),
            // cmp word [ebx], 0x8000 with 0: 0 - (-32768) overflows.
            (&[0x66, 0x81, 0x3b, 0x00, 0x80], 0, 0, CF | OF | SF | PF),
            // cmp word [ebx+2], 0x1122 (the test kernels' encoding; the
            // access lands at the violation's address, offset 0 here).
            (&[0x66, 0x81, 0x7b, 0x02, 0x22, 0x11], 0x1122, 0, ZF | PF),
            // cmp dword [ebx], 0x11223344, equal.
            (
                &[0x81, 0x3b, 0x44, 0x33, 0x22, 0x11],
                0x1122_3344,
                0,
                ZF | PF,
            ),
            // cmp dword [ebx], 2 (imm8) with 1: 0xffffffff.
            (&[0x83, 0x3b, 0x02], 1, 0, CF | AF | SF | PF),
            // cmp dword [ebx], -1 (imm8 sign-extended to 32 bits): equal.
            (&[0x83, 0x3b, 0xff], 0xffff_ffff, 0, ZF | PF),
            // 0x8000_0000 - 1 = 0x7fff_ffff: signed overflow, AF.
            (&[0x83, 0x3b, 0x01], 0x8000_0000, 0, OF | AF | PF),
            // cmp [ebx], eax: memory 1 minus EAX 2 borrows.
            (&[0x39, 0x03], 1, 2, CF | AF | SF | PF),
            // cmp eax, [ebx]: EAX 2 minus memory 1 = 1 (one bit: odd).
            (&[0x3b, 0x03], 1, 2, 0),
            // cmp [ebx], ah: memory 0x30 minus AH 0x10 = 0x20; 0x30 - 0x10
            // borrows nothing.
            (&[0x38, 0x23], 0x30, 0x1000, 0),
            // cmp ah, [ebx]: AH 0x10 minus 0x30 = 0xe0 borrows.
            (&[0x3a, 0x23], 0x30, 0x1000, CF | SF),
            // cmp al, [ebx] with AL 0x10, memory 0x01: 0x0f, AF from bit 3.
            (&[0x3a, 0x03], 0x01, 0x10, AF | PF),
        ];
        for &(bytes, memory, eax, flags) in cases {
            let wb = compare32(bytes, memory, eax, stale);
            assert_eq!(
                wb.registers.rflags,
                kept | flags,
                "{bytes:02x?} memory {memory:#x} eax {eax:#x}"
            );
        }
    }

    #[test]
    fn cmp_qword_in_64_bit_mode() {
        with_window(|layout, window| {
            window.0[..8].copy_from_slice(&0x7fff_ffff_ffff_ffffu64.to_le_bytes());
            let mut regs = Registers {
                rflags: 0x2,
                ..Registers::default()
            };
            regs.gpr[7] = WINDOW;
            // cmp qword [rdi], -1: imm8 sign-extended to 64 bits;
            // 0x7fff..ff - 0xffff..ff = 0x8000..00.
            let i = decode(&[0x48, 0x83, 0x3f, 0xff], CpuMode::Bits64).unwrap();
            let wb = emulate(layout, window, WINDOW, &i, &regs).unwrap();
            assert_eq!(wb.registers.rflags, 0x2 | CF | OF | SF | PF);
            // cmp [rdi], r9 with R9 equal.
            regs.gpr[9] = 0x7fff_ffff_ffff_ffff;
            let i = decode(&[0x4c, 0x39, 0x0f], CpuMode::Bits64).unwrap();
            let wb = emulate(layout, window, WINDOW, &i, &regs).unwrap();
            assert_eq!(wb.registers.rflags, 0x2 | ZF | PF);
        });
    }

    #[test]
    fn movq_moves_the_low_half_of_xmm_registers() {
        with_window(|layout, window| {
            let mut regs = Registers::default();
            regs.gpr[3] = WINDOW;
            regs.xmm[0] = 0x0123_4567_89ab_cdef;
            regs.xmm[15] = 0xfedc_ba98_7654_3210;
            // movq [ebx+8], xmm0
            let i = decode(&[0x66, 0x0f, 0xd6, 0x43, 0x08], CpuMode::Bits32).unwrap();
            let wb = emulate(layout, window, WINDOW + 8, &i, &regs).unwrap();
            assert_eq!(
                &window.0[8..16],
                &[0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01]
            );
            assert_eq!(
                (wb.changed, wb.xmm_loaded, wb.rflags_changed),
                (0, 0, false)
            );
            assert_eq!(wb.rip_advance, 5);
            // movq xmm1, [ebx+16]
            window.0[16..24].copy_from_slice(&[0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe]);
            let i = decode(&[0xf3, 0x0f, 0x7e, 0x4b, 0x10], CpuMode::Bits32).unwrap();
            let wb = emulate(layout, window, WINDOW + 16, &i, &regs).unwrap();
            assert_eq!(wb.registers.xmm[1], 0xfedc_ba98_7654_3210);
            assert_eq!(wb.xmm_loaded, 1 << 1);
            assert_eq!((wb.changed, wb.rflags_changed), (0, false));
            assert_eq!(wb.registers.xmm[0], regs.xmm[0]);
            // 64-bit mode, REX.R: movq [rdi], xmm15 ; movq xmm8, [rdi]
            regs.gpr[7] = WINDOW + 0x20;
            let i = decode(&[0x66, 0x44, 0x0f, 0xd6, 0x3f], CpuMode::Bits64).unwrap();
            emulate(layout, window, WINDOW + 0x20, &i, &regs).unwrap();
            assert_eq!(&window.0[0x20..0x28], &regs.xmm[15].to_le_bytes());
            let i = decode(&[0xf3, 0x44, 0x0f, 0x7e, 0x07], CpuMode::Bits64).unwrap();
            let wb = emulate(layout, window, WINDOW + 0x20, &i, &regs).unwrap();
            assert_eq!((wb.registers.xmm[8], wb.xmm_loaded), (regs.xmm[15], 1 << 8));
        });
    }

    #[test]
    fn a_write_violation_on_a_reading_cmp_or_movq_load_is_refused() {
        with_layout(|layout, _| {
            let paging = map_code(layout);
            let vcpu = VcpuState {
                registers: Registers::default(),
                rip_linear: 0x40_0000,
                paging,
                mode: CpuMode::Bits64,
            };
            let write = EptViolation::from_exit(0x182, DEV, 0);
            let mut bus = Bus::default();
            for bytes in [&[0x80, 0x3f, 0x01][..], &[0xf3, 0x0f, 0x7e, 0x07]] {
                layout.write(0x5000, bytes).unwrap();
                assert!(matches!(
                    handle_ept_violation(layout, &mut bus, &write, &vcpu),
                    Err(MmioError::DirectionMismatch { .. })
                ));
            }
            assert!(bus.reads.is_empty() && bus.writes.is_empty());
        });
    }

    #[test]
    fn rep_stos_emulates_one_iteration_per_exit() {
        with_layout(|layout, _| {
            let mut bus = Bus::default();
            let mut regs = Registers::default();
            regs.gpr[0] = 0xaaaa_5555;
            regs.gpr[1] = 2;
            regs.gpr[7] = DEV + 8;
            // rep stosd: first exit stores once, RCX 2 -> 1, RDI += 4, RIP stays.
            let wb = run(layout, &mut bus, DEV + 8, &[0xf3, 0xab], &regs);
            assert_eq!(bus.writes, [(1, 8, AccessWidth::Dword, 0xaaaa_5555)]);
            assert_eq!((wb.registers.gpr[1], wb.registers.gpr[7]), (1, DEV + 12));
            assert_eq!(wb.rip_advance, 0);
            let wb = run(layout, &mut bus, DEV + 12, &[0xf3, 0xab], &wb.registers);
            assert_eq!((wb.registers.gpr[1], wb.registers.gpr[7]), (0, DEV + 16));
            assert_eq!(wb.rip_advance, 2);
            // With DF set, stosb moves RDI down.
            regs.rflags = RFLAGS_DF;
            let wb = run(layout, &mut bus, DEV + 8, &[0xaa], &regs);
            assert_eq!(wb.registers.gpr[7], DEV + 7);
            assert_eq!(bus.writes.len(), 3);
        });
    }

    #[test]
    fn nothing_ram_and_region_ends_are_reported() {
        with_layout(|layout, _| {
            let mut bus = Bus::default();
            let regs = Registers::default();
            // A read of the reserved hole returns all ones and is reported.
            let wb = run(layout, &mut bus, 0xfec0_0000, &[0x8b, 0x07], &regs);
            assert_eq!(wb.registers.gpr[0], 0xffff_ffff);
            assert_eq!(
                wb.unclaimed,
                Some(UnclaimedAccess {
                    guest_physical: 0xfec0_0000,
                    write: false,
                    width: AccessWidth::Dword
                })
            );
            let wb = run(layout, &mut bus, 0x1_0000_0000, &[0x66, 0x89, 0x07], &regs);
            assert_eq!(
                wb.unclaimed,
                Some(UnclaimedAccess {
                    guest_physical: 0x1_0000_0000,
                    write: true,
                    width: AccessWidth::Word
                })
            );
            assert!(bus.reads.is_empty() && bus.writes.is_empty());
            let i = decode(&[0x8b, 0x07], CpuMode::Bits64).unwrap();
            assert_eq!(
                emulate(layout, &mut bus, 0x100, &i, &regs),
                Err(MmioError::Ram {
                    guest_physical: 0x100
                })
            );
            assert_eq!(
                emulate(layout, &mut bus, DEV + 0xffe, &i, &regs),
                Err(MmioError::CrossesRegion {
                    guest_physical: DEV + 0xffe,
                    width: AccessWidth::Dword,
                    remaining: 2
                })
            );
        });
    }

    /// 4-level tables: linear 0x40_0000 -> 0x5000, 0x40_1000 -> 0x9000.
    fn map_code(mem: &Layout) -> PagingContext {
        mem.write_u64(0x1000, 0x2000 | 3).unwrap();
        mem.write_u64(0x2000, 0x3000 | 3).unwrap();
        mem.write_u64(0x3000 + 2 * 8, 0x4000 | 3).unwrap();
        mem.write_u64(0x4000, 0x5000 | 3).unwrap();
        mem.write_u64(0x4000 + 8, 0x9000 | 3).unwrap();
        PagingContext {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8),
            cpl: 0,
            physical_address_bits: 40,
        }
    }

    #[test]
    fn violation_handler_fetches_across_a_page_boundary() {
        with_layout(|layout, _| {
            let paging = map_code(layout);
            // mov eax, [rdi+0x100] split over the two pages.
            layout.write(0x5ffe, &[0x8b, 0x87]).unwrap();
            layout.write(0x9000, &[0x00, 0x01, 0x00, 0x00]).unwrap();
            let vcpu = VcpuState {
                registers: Registers::default(),
                rip_linear: 0x40_0ffe,
                paging,
                mode: CpuMode::Bits64,
            };
            // Read (bit 0), nothing allowed, linear valid and final (7, 8).
            let violation = EptViolation::from_exit(0x181, DEV + 0x100, 0x1234);
            let mut bus = Bus::default();
            let wb = handle_ept_violation(layout, &mut bus, &violation, &vcpu).unwrap();
            assert_eq!(wb.registers.gpr[0], 0x180);
            assert_eq!(wb.rip_advance, 6);
            // Second page absent: the instruction needs it, so its #PF is
            // what the guest gets.
            layout.write_u64(0x4000 + 8, 0).unwrap();
            assert_eq!(
                handle_ept_violation(layout, &mut bus, &violation, &vcpu),
                Err(MmioError::Fetch(TranslateError::PageFault(PageFault {
                    address: 0x40_1000,
                    error_code: 0
                })))
            );
            // An instruction wholly in the first page does not need it.
            layout.write(0x5ffe, &[0x89, 0x07]).unwrap();
            let wb = handle_ept_violation(layout, &mut bus, &violation, &vcpu).unwrap();
            assert_eq!(wb.rip_advance, 2);
            assert_eq!(bus.writes, [(1, 0x100, AccessWidth::Dword, 0)]);
            // Undecodable bytes come back with the bytes.
            layout.write(0x5ffe, &[0x0f, 0x0b]).unwrap();
            match handle_ept_violation(layout, &mut bus, &violation, &vcpu) {
                Err(MmioError::Decode(e)) => assert_eq!(&e.bytes()[..2], &[0x0f, 0x0b]),
                other => panic!("{other:?}"),
            }
            // A write violation whose instruction only reads is refused.
            layout.write(0x5ffe, &[0x8b, 0x07]).unwrap();
            let write = EptViolation::from_exit(0x182, DEV + 0x100, 0);
            let refused = handle_ept_violation(layout, &mut bus, &write, &vcpu);
            assert!(
                matches!(
                    refused,
                    Err(MmioError::DirectionMismatch { guest_physical, .. })
                        if guest_physical == DEV + 0x100
                ),
                "{refused:?}"
            );
            // Executing from MMIO is not emulated.
            let fetch = EptViolation::from_exit(0x184, DEV, 0);
            assert_eq!(
                handle_ept_violation(layout, &mut bus, &fetch, &vcpu),
                Err(MmioError::InstructionFetch {
                    guest_physical: DEV
                })
            );
            // Linear address valid (7) but bit 8 clear: the guest's page walk.
            let walk = EptViolation::from_exit(0x81, DEV, 0x1234);
            assert_eq!(
                handle_ept_violation(layout, &mut bus, &walk, &vcpu),
                Err(MmioError::GuestPageWalk {
                    guest_physical: DEV
                })
            );
            assert_eq!(bus.writes.len(), 1, "refused violations reach no device");
            // A violation on RAM is the caller's.
            let on_ram = EptViolation::from_exit(0x182, 0x8000, 0);
            assert_eq!(
                handle_ept_violation(layout, &mut bus, &on_ram, &vcpu),
                Err(MmioError::Ram {
                    guest_physical: 0x8000
                })
            );
        });
    }
}
