//! The image's GDT (with a 64-bit TSS, which VMX host state requires) and its
//! IDT, whose exception handlers print the fault and end the run as failed.

use core::{fmt, mem::size_of, ptr::addr_of};

use super::{finish, Outcome, Verbatim};

/// Selector of the 64-bit code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment (also used for SS).
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the task-state segment.
pub const TSS_SELECTOR: u16 = 0x18;

const IST_STACK_SIZE: usize = 16 * 1024;

/// The 64-bit task-state segment.
#[repr(C, packed(4))]
struct TaskStateSegment {
    reserved0: u32,
    privilege_stacks: [u64; 3],
    reserved1: u64,
    interrupt_stacks: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    io_map_base: u16,
}

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

#[repr(C, packed(2))]
struct DescriptorTablePointer {
    limit: u16,
    base: u64,
}

static mut TSS: TaskStateSegment = TaskStateSegment {
    reserved0: 0,
    privilege_stacks: [0; 3],
    reserved1: 0,
    interrupt_stacks: [0; 7],
    reserved2: 0,
    reserved3: 0,
    io_map_base: size_of::<TaskStateSegment>() as u16,
};
static mut GDT: [u64; 5] = [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0, 0];
static mut IDT: [IdtEntry; 32] = [IdtEntry {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attributes: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; 32];
static mut DOUBLE_FAULT_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);

extern "C" {
    static ponte_exception_stubs: [u64; 32];
}

/// Loads the GDT (with the TSS) and the exception IDT on the boot CPU.
pub(super) fn init() {
    // SAFETY: runs once on the boot CPU before anything else uses these
    // tables, with interrupts disabled; the statics live for the whole run, so
    // the descriptors loaded into GDTR, IDTR and TR stay valid.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).interrupt_stacks[0] = (&raw const DOUBLE_FAULT_STACK) as u64 + IST_STACK_SIZE as u64;
        let base = tss as u64;
        let limit = size_of::<TaskStateSegment>() as u64 - 1;
        let gdt = &raw mut GDT;
        (*gdt)[3] = (limit & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        (*gdt)[4] = base >> 32;

        let idt = &raw mut IDT;
        let stubs = &*addr_of!(ponte_exception_stubs);
        for (vector, entry) in (*idt).iter_mut().enumerate() {
            let handler = stubs[vector];
            *entry = IdtEntry {
                offset_low: handler as u16,
                selector: CODE_SELECTOR,
                // #DF (8) and NMI (2) run on their own stack.
                ist: if vector == 8 || vector == 2 { 1 } else { 0 },
                attributes: 0x8E,
                offset_mid: (handler >> 16) as u16,
                offset_high: (handler >> 32) as u32,
                reserved: 0,
            };
        }

        let gdtr = DescriptorTablePointer {
            limit: (size_of::<[u64; 5]>() - 1) as u16,
            base: gdt as u64,
        };
        let idtr = DescriptorTablePointer {
            limit: (size_of::<[IdtEntry; 32]>() - 1) as u16,
            base: idt as u64,
        };
        core::arch::asm!(
            "lgdt [{gdtr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:e}",
            "mov es, {ds:e}",
            "mov ss, {ds:e}",
            "ltr {tr:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &gdtr,
            idtr = in(reg) &idtr,
            cs = in(reg) u64::from(CODE_SELECTOR),
            ds = in(reg) u32::from(DATA_SELECTOR),
            tr = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
    }
}

/// Registers and fault information saved by an exception stub.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// RAX, RBX, RCX, RDX, RSI, RDI, RBP, R8-R15, as the stub pushed them.
    registers: [u64; 15],
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization exception",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security exception",
    "reserved 31",
];

/// The names of [`ExceptionFrame::registers`], three characters each.
const REGISTER_NAMES: &str = "raxrbxrcxrdxrsirdirbpr8 r9 r10r11r12r13r14r15";

impl fmt::Display for ExceptionFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = EXCEPTION_NAMES
            .get(self.vector as usize)
            .copied()
            .unwrap_or("unknown");
        writeln!(
            f,
            "exception {} ({}), error code {:#x}",
            self.vector,
            Verbatim(name),
            self.error_code
        )?;
        write!(
            f,
            "  rip {:#018x} cs {:#x} rflags {:#x} rsp {:#018x} ss {:#x}",
            self.rip, self.cs, self.rflags, self.rsp, self.ss
        )?;
        // Four registers a line, in frame order.
        for (i, value) in self.registers.iter().enumerate() {
            let separator = if i % 4 == 0 { "\n  " } else { " " };
            let name = REGISTER_NAMES.get(3 * i..3 * i + 3).unwrap_or("");
            write!(f, "{}{} {value:#018x}", Verbatim(separator), Verbatim(name))?;
        }
        Ok(())
    }
}

#[no_mangle]
extern "C" fn ponte_exception(frame: &ExceptionFrame) -> ! {
    crate::println!("{frame}");
    if frame.vector == 14 {
        // SAFETY: reading CR2 has no side effect.
        let address = unsafe { x86::controlregs::cr2() };
        crate::println!("  cr2 {address:#018x}");
    }
    finish(
        Outcome::Fail,
        format_args!("unexpected exception {}", frame.vector),
    )
}

core::arch::global_asm!(
    r#"
    .section .text.ponte_exceptions, "ax"
    .irp vector, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
ponte_exception_\vector:
    push 0
    push \vector
    jmp ponte_exception_common
    .endr
    .irp vector, 8,10,11,12,13,14,17,21,29,30
ponte_exception_\vector:
    push \vector
    jmp ponte_exception_common
    .endr

ponte_exception_common:
    push r15
    push r14
    push r13
    push r12
    push r11
    push r10
    push r9
    push r8
    push rbp
    push rdi
    push rsi
    push rdx
    push rcx
    push rbx
    push rax
    mov rdi, rsp
    call ponte_exception
    ud2

    .section .rodata.ponte_exceptions, "a"
    .balign 8
    .global ponte_exception_stubs
ponte_exception_stubs:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad ponte_exception_\vector
    .endr
"#
);
