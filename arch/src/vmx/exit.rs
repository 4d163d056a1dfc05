//! VM exits: every basic exit reason of the SDM (Vol. 3D Appendix C) and the
//! decoded exit qualifications and interruption information (Vol. 3C 28.2).

macro_rules! exit_reasons {
    ($($name:ident = $n:literal,)*) => {
        /// Basic VM-exit reasons (exit reason bits 15:0).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u16)]
        pub enum BasicExitReason { $(#[doc = concat!("Basic exit reason ", stringify!($n), ".")] $name = $n,)* }
        impl BasicExitReason {
            /// Decodes bits 15:0 of the exit reason; `None` for numbers the SDM does not define.
            pub const fn from_number(n: u16) -> Option<Self> {
                match n { $($n => Some(Self::$name),)* _ => None }
            }
            /// Every defined reason.
            pub const ALL: &'static [BasicExitReason] = &[$(Self::$name,)*];
        }
    };
}
exit_reasons! {
    ExceptionOrNmi = 0, ExternalInterrupt = 1, TripleFault = 2, InitSignal = 3, StartupIpi = 4,
    IoSmi = 5, OtherSmi = 6, InterruptWindow = 7, NmiWindow = 8, TaskSwitch = 9, Cpuid = 10,
    Getsec = 11, Hlt = 12, Invd = 13, Invlpg = 14, Rdpmc = 15, Rdtsc = 16, Rsm = 17, Vmcall = 18,
    Vmclear = 19, Vmlaunch = 20, Vmptrld = 21, Vmptrst = 22, Vmread = 23, Vmresume = 24,
    Vmwrite = 25, Vmxoff = 26, Vmxon = 27, CrAccess = 28, MovDr = 29, IoInstruction = 30,
    Rdmsr = 31, Wrmsr = 32, EntryFailInvalidGuestState = 33, EntryFailMsrLoading = 34,
    Mwait = 36, MonitorTrapFlag = 37, Monitor = 39, Pause = 40, EntryFailMachineCheck = 41,
    TprBelowThreshold = 43, ApicAccess = 44, VirtualizedEoi = 45, GdtrIdtrAccess = 46,
    LdtrTrAccess = 47, EptViolation = 48, EptMisconfiguration = 49, Invept = 50, Rdtscp = 51,
    PreemptionTimerExpired = 52, Invvpid = 53, WbinvdOrWbnoinvd = 54, Xsetbv = 55,
    ApicWrite = 56, Rdrand = 57, Invpcid = 58, Vmfunc = 59, Encls = 60, Rdseed = 61,
    PageModificationLogFull = 62, Xsaves = 63, Xrstors = 64, Pconfig = 65, SppRelatedEvent = 66,
    Umwait = 67, Tpause = 68, Loadiwkey = 69, Enclv = 70, SgxConflict = 71,
    EnqcmdPasidTranslationFailure = 72, EnqcmdsPasidTranslationFailure = 73, BusLock = 74,
    InstructionTimeout = 75, Seamcall = 76, Tdcall = 77, Rdmsrlist = 78, Wrmsrlist = 79,
}

/// Number of counter slots needed to index by basic exit reason.
pub const EXIT_REASON_SLOTS: usize = 80;

/// Exit reason bit 31: VM-entry failure.
pub const EXIT_REASON_ENTRY_FAILURE: u32 = 1 << 31;

/// Type of an interruption (bits 10:8 of interruption information).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptionType {
    /// External interrupt (0).
    ExternalInterrupt = 0,
    /// Reserved (1).
    Reserved = 1,
    /// NMI (2).
    Nmi = 2,
    /// Hardware exception (3).
    HardwareException = 3,
    /// Software interrupt, INT n (4).
    SoftwareInterrupt = 4,
    /// Privileged software exception, INT1 (5).
    PrivilegedSoftwareException = 5,
    /// Software exception, INT3 or INTO (6).
    SoftwareException = 6,
    /// Other event (7).
    OtherEvent = 7,
}

/// VM-exit/VM-entry/IDT-vectoring interruption information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptionInfo(pub u32);

impl InterruptionInfo {
    /// An event to inject: `vector` of `kind`, with the error-code flag.
    pub const fn new(vector: u8, kind: InterruptionType, has_error_code: bool) -> Self {
        InterruptionInfo(
            1 << 31 | (has_error_code as u32) << 11 | (kind as u32) << 8 | vector as u32,
        )
    }
    /// Valid (bit 31).
    pub const fn valid(self) -> bool {
        self.0 & (1 << 31) != 0
    }
    /// Vector (bits 7:0).
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }
    /// Interruption type (bits 10:8).
    pub const fn kind(self) -> InterruptionType {
        match (self.0 >> 8) & 7 {
            0 => InterruptionType::ExternalInterrupt,
            1 => InterruptionType::Reserved,
            2 => InterruptionType::Nmi,
            3 => InterruptionType::HardwareException,
            4 => InterruptionType::SoftwareInterrupt,
            5 => InterruptionType::PrivilegedSoftwareException,
            6 => InterruptionType::SoftwareException,
            _ => InterruptionType::OtherEvent,
        }
    }
    /// Error code valid (bit 11).
    pub const fn has_error_code(self) -> bool {
        self.0 & (1 << 11) != 0
    }
    /// NMI unblocking due to IRET (bit 12).
    pub const fn nmi_unblocking(self) -> bool {
        self.0 & (1 << 12) != 0
    }
}

/// Access type of a control-register access (qualification bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccessType {
    /// MOV to CR from general register `gpr`.
    MovTo {
        /// GPR index (0 RAX .. 15 R15).
        gpr: u8,
    },
    /// MOV from CR to general register `gpr`.
    MovFrom {
        /// GPR index (0 RAX .. 15 R15).
        gpr: u8,
    },
    /// CLTS.
    Clts,
    /// LMSW with the 16-bit source; `memory` when the operand was in memory.
    Lmsw {
        /// Source data (bits 31:16).
        source: u16,
        /// Operand type (bit 6): memory.
        memory: bool,
    },
}

/// Control-register access qualification (SDM table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    /// Control register number (bits 3:0).
    pub cr: u8,
    /// The access.
    pub access: CrAccessType,
}

impl CrAccess {
    /// Decodes the exit qualification.
    pub const fn decode(q: u64) -> Self {
        let gpr = ((q >> 8) & 0xf) as u8;
        CrAccess {
            cr: (q & 0xf) as u8,
            access: match (q >> 4) & 3 {
                0 => CrAccessType::MovTo { gpr },
                1 => CrAccessType::MovFrom { gpr },
                2 => CrAccessType::Clts,
                _ => CrAccessType::Lmsw {
                    source: (q >> 16) as u16,
                    memory: q & (1 << 6) != 0,
                },
            },
        }
    }
}

/// MOV DR qualification (SDM table 28-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovDr {
    /// Debug register number (bits 2:0).
    pub dr: u8,
    /// Direction (bit 4): true for MOV from DR.
    pub from_dr: bool,
    /// General register (bits 11:8).
    pub gpr: u8,
}

impl MovDr {
    /// Decodes the exit qualification.
    pub const fn decode(q: u64) -> Self {
        MovDr {
            dr: (q & 7) as u8,
            from_dr: q & (1 << 4) != 0,
            gpr: ((q >> 8) & 0xf) as u8,
        }
    }
}

/// I/O instruction qualification (SDM table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    /// Port (bits 31:16).
    pub port: u16,
    /// Access size in bytes: 1, 2 or 4 (bits 2:0 hold size - 1).
    pub size: u8,
    /// Direction (bit 3): IN/INS.
    pub input: bool,
    /// String instruction (bit 4).
    pub string: bool,
    /// REP prefixed (bit 5).
    pub rep: bool,
    /// Operand encoding (bit 6): port given as immediate (else in DX).
    pub immediate: bool,
}

impl IoAccess {
    /// Decodes the exit qualification.
    pub const fn decode(q: u64) -> Self {
        IoAccess {
            port: (q >> 16) as u16,
            size: (q & 7) as u8 + 1,
            input: q & (1 << 3) != 0,
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            immediate: q & (1 << 6) != 0,
        }
    }
}

/// EPT-violation qualification (SDM table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation(pub u64);

impl EptViolation {
    /// Data read (bit 0).
    pub const fn read(self) -> bool {
        self.0 & 1 != 0
    }
    /// Data write (bit 1).
    pub const fn write(self) -> bool {
        self.0 & 2 != 0
    }
    /// Instruction fetch (bit 2).
    pub const fn fetch(self) -> bool {
        self.0 & 4 != 0
    }
    /// The guest-physical address was readable (bit 3).
    pub const fn readable(self) -> bool {
        self.0 & 8 != 0
    }
    /// Writable (bit 4).
    pub const fn writable(self) -> bool {
        self.0 & 0x10 != 0
    }
    /// Executable, for supervisor-mode linear addresses with mode-based execute (bit 5).
    pub const fn executable(self) -> bool {
        self.0 & 0x20 != 0
    }
    /// Executable for user-mode linear addresses (bit 6).
    pub const fn user_executable(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// The guest linear-address field is valid (bit 7).
    pub const fn linear_address_valid(self) -> bool {
        self.0 & 0x80 != 0
    }
    /// With bit 7: the access was to the translated linear address, not a
    /// paging-structure entry (bit 8).
    pub const fn linear_translation(self) -> bool {
        self.0 & 0x100 != 0
    }
    /// NMI unblocking due to IRET (bit 12).
    pub const fn nmi_unblocking(self) -> bool {
        self.0 & (1 << 12) != 0
    }
    /// Shadow-stack access (bit 13).
    pub const fn shadow_stack(self) -> bool {
        self.0 & (1 << 13) != 0
    }
}

/// Source of a task switch (qualification bits 31:30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchSource {
    /// CALL instruction.
    Call,
    /// IRET instruction.
    Iret,
    /// JMP instruction.
    Jmp,
    /// Task gate in the IDT.
    TaskGate,
}

/// Task-switch qualification (SDM table 28-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSwitch {
    /// Selector of the new TSS (bits 15:0).
    pub selector: u16,
    /// Source (bits 31:30).
    pub source: TaskSwitchSource,
}

impl TaskSwitch {
    /// Decodes the exit qualification.
    pub const fn decode(q: u64) -> Self {
        TaskSwitch {
            selector: q as u16,
            source: match (q >> 30) & 3 {
                0 => TaskSwitchSource::Call,
                1 => TaskSwitchSource::Iret,
                2 => TaskSwitchSource::Jmp,
                _ => TaskSwitchSource::TaskGate,
            },
        }
    }
}

/// APIC-access qualification (SDM table 28-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicAccess {
    /// Offset within the APIC page (bits 11:0), for linear accesses.
    pub offset: u16,
    /// Access type (bits 15:12): 0 linear read, 1 linear write, 2 linear
    /// fetch, 3 linear during event delivery, 10 guest-physical during event
    /// delivery, 15 guest-physical fetch or execution.
    pub access_type: u8,
    /// Asynchronous to instruction execution (bit 16).
    pub asynchronous: bool,
}

impl ApicAccess {
    /// Access type 0: a linear read during instruction execution.
    pub const LINEAR_READ: u8 = 0;
    /// Access type 1: a linear write during instruction execution.
    pub const LINEAR_WRITE: u8 = 1;

    /// Decodes the exit qualification.
    pub const fn decode(q: u64) -> Self {
        ApicAccess {
            offset: (q & 0xfff) as u16,
            access_type: ((q >> 12) & 0xf) as u8,
            asynchronous: q & (1 << 16) != 0,
        }
    }

    /// Whether the access was a data read or write by an instruction (types
    /// 0 and 1): the instruction has not executed and can be emulated on the
    /// APIC's registers at [`ApicAccess::offset`]. The other types (fetches,
    /// accesses during event delivery, guest-physical accesses) cannot.
    pub const fn is_instruction_data_access(self) -> bool {
        self.access_type == Self::LINEAR_READ || self.access_type == Self::LINEAR_WRITE
    }
}

/// A VM exit as [`super::Vcpu::run`] reports it, with the data its handler needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmExit {
    /// Exception or NMI (reason 0).
    ExceptionOrNmi {
        /// VM-exit interruption information.
        info: InterruptionInfo,
        /// Error code, when the information says one was delivered.
        error_code: Option<u32>,
        /// Exit qualification (#PF: linear address, #DB: DR6-like bits).
        qualification: u64,
    },
    /// External interrupt (reason 1); the information is valid with
    /// "acknowledge interrupt on exit".
    ExternalInterrupt(InterruptionInfo),
    /// Triple fault (reason 2).
    TripleFault,
    /// Interrupt window open (reason 7).
    InterruptWindow,
    /// NMI window open (reason 8).
    NmiWindow,
    /// Task switch (reason 9).
    TaskSwitch(TaskSwitch),
    /// CPUID with the leaf (EAX) and subleaf (ECX).
    Cpuid {
        /// EAX.
        leaf: u32,
        /// ECX.
        subleaf: u32,
    },
    /// HLT (reason 12).
    Hlt,
    /// VMCALL (reason 18).
    Vmcall,
    /// Control-register access (reason 28).
    CrAccess(CrAccess),
    /// MOV DR (reason 29).
    MovDr(MovDr),
    /// I/O instruction (reason 30).
    Io(IoAccess),
    /// RDMSR of ECX (reason 31).
    Rdmsr {
        /// ECX.
        msr: u32,
    },
    /// WRMSR of EDX:EAX to ECX (reason 32).
    Wrmsr {
        /// ECX.
        msr: u32,
        /// EDX:EAX.
        value: u64,
    },
    /// TPR below threshold (reason 43, trap-like: after a write that lowered
    /// the virtual TPR below the TPR threshold).
    TprBelowThreshold,
    /// APIC access (reason 44, fault-like: the access has not happened).
    ApicAccess(ApicAccess),
    /// Virtualized EOI (reason 45, trap-like): the guest's EOI of `vector`,
    /// set in the EOI-exit bitmap, was performed on the virtual-APIC page.
    VirtualizedEoi {
        /// The vector whose EOI was virtualized (qualification bits 7:0).
        vector: u8,
    },
    /// APIC write (reason 56, trap-like): the guest wrote the register at
    /// `offset` of the virtual-APIC page; the value is there.
    ApicWrite {
        /// Page offset of the register written (qualification bits 11:0).
        offset: u16,
    },
    /// EPT violation (reason 48).
    EptViolation {
        /// Qualification.
        qualification: EptViolation,
        /// Guest-physical address.
        gpa: u64,
        /// Guest linear address, when valid.
        gla: Option<u64>,
    },
    /// EPT misconfiguration at `gpa` (reason 49).
    EptMisconfiguration {
        /// Guest-physical address.
        gpa: u64,
    },
    /// The preemption timer counted down to zero (reason 52).
    PreemptionTimer,
    /// VM entry failed after the instruction checks (exit reason bit 31):
    /// reason 33 (guest state, qualification 0 default, 2 PDPTE, 3 NMI
    /// injection, 4 VMCS link pointer), 34 (MSR loading, qualification = the
    /// failing entry's 1-based index) or 41 (machine check).
    EntryFailure {
        /// The basic reason (33, 34 or 41), or `None` if undefined.
        reason: Option<BasicExitReason>,
        /// The raw exit reason.
        raw: u32,
        /// Exit qualification.
        qualification: u64,
    },
    /// Any other exit; read its qualification with
    /// [`super::Vcpu::exit_qualification`] if needed.
    Other {
        /// The basic reason, or `None` if undefined.
        reason: Option<BasicExitReason>,
        /// The raw exit reason.
        raw: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualification_follows_sdm_table_28_5() {
        // OUT DX, AL to 0x3f8: size 0 (1 byte), direction 0 (out), DX operand.
        let q = 0x03f8_0000;
        assert_eq!(
            IoAccess::decode(q),
            IoAccess {
                port: 0x3f8,
                size: 1,
                input: false,
                string: false,
                rep: false,
                immediate: false
            }
        );
        // REP INSW from port 0x1f0 via DX: size 1, in, string, rep.
        let q = 0x01f0_0000 | 1 | 1 << 3 | 1 << 4 | 1 << 5;
        assert_eq!(
            IoAccess::decode(q),
            IoAccess {
                port: 0x1f0,
                size: 2,
                input: true,
                string: true,
                rep: true,
                immediate: false
            }
        );
        // IN EAX, 0x71 (immediate): size 3 (4 bytes).
        let q = 0x0071_0000 | 3 | 1 << 3 | 1 << 6;
        let io = IoAccess::decode(q);
        assert_eq!(
            (io.port, io.size, io.input, io.immediate),
            (0x71, 4, true, true)
        );
    }

    #[test]
    fn cr_and_dr_qualifications_follow_sdm_tables_28_3_and_28_4() {
        // MOV CR3, RBX: cr 3, type 0, register 3.
        assert_eq!(
            CrAccess::decode(0x0303),
            CrAccess {
                cr: 3,
                access: CrAccessType::MovTo { gpr: 3 }
            }
        );
        // MOV R12, CR8: type 1, register 12.
        assert_eq!(
            CrAccess::decode(0x0c18),
            CrAccess {
                cr: 8,
                access: CrAccessType::MovFrom { gpr: 12 }
            }
        );
        assert_eq!(CrAccess::decode(0x20).access, CrAccessType::Clts);
        // LMSW from memory with source 0x0011.
        assert_eq!(
            CrAccess::decode(0x0011_0000 | 3 << 4 | 1 << 6).access,
            CrAccessType::Lmsw {
                source: 0x11,
                memory: true
            }
        );
        // MOV RAX, DR6 (from DR, register 0) and MOV DR7, R9.
        assert_eq!(
            MovDr::decode(0x16),
            MovDr {
                dr: 6,
                from_dr: true,
                gpr: 0
            }
        );
        assert_eq!(
            MovDr::decode(0x0907),
            MovDr {
                dr: 7,
                from_dr: false,
                gpr: 9
            }
        );
    }

    #[test]
    fn ept_violation_qualification_follows_sdm_table_28_7() {
        // Write to a read-only, executable page through a valid linear translation,
        // with NMI unblocking due to IRET.
        let v = EptViolation(0b10 | 1 << 3 | 1 << 5 | 1 << 7 | 1 << 8 | 1 << 12);
        assert!(v.write() && !v.read() && !v.fetch());
        assert!(v.readable() && !v.writable() && v.executable());
        assert!(v.linear_address_valid() && v.linear_translation() && v.nmi_unblocking());
        let fetch = EptViolation(0b100);
        assert!(fetch.fetch() && !fetch.linear_address_valid() && !fetch.readable());
    }

    #[test]
    fn interruption_info_task_switch_and_apic_access_layouts() {
        // #PF (vector 14) hardware exception with error code, valid.
        let pf = InterruptionInfo(0x8000_0b0e);
        assert!(pf.valid() && pf.has_error_code());
        assert_eq!(
            (pf.vector(), pf.kind()),
            (14, InterruptionType::HardwareException)
        );
        assert_eq!(
            InterruptionInfo::new(14, InterruptionType::HardwareException, true),
            pf
        );
        // NMI: vector 2, type 2, with NMI unblocking.
        let nmi = InterruptionInfo(0x8000_1202);
        assert_eq!(
            (nmi.vector(), nmi.kind(), nmi.nmi_unblocking()),
            (2, InterruptionType::Nmi, true)
        );
        let ts = TaskSwitch::decode(3 << 30 | 0x28);
        assert_eq!(
            ts,
            TaskSwitch {
                selector: 0x28,
                source: TaskSwitchSource::TaskGate
            }
        );
        assert_eq!(
            TaskSwitch::decode(1 << 30 | 0x30).source,
            TaskSwitchSource::Iret
        );
        assert_eq!(
            ApicAccess::decode(0x1_10b0),
            ApicAccess {
                offset: 0xb0,
                access_type: 1,
                asynchronous: true
            }
        );
        // SDM table 28-6: type 0 linear read, 1 linear write, 3 during event
        // delivery, 15 guest-physical fetch.
        assert!(ApicAccess::decode(0x0_0080).is_instruction_data_access());
        assert!(ApicAccess::decode(0x0_1300).is_instruction_data_access());
        assert!(!ApicAccess::decode(0x0_3080).is_instruction_data_access());
        assert!(!ApicAccess::decode(0x0_f000).is_instruction_data_access());
    }

    #[test]
    fn exit_reasons_cover_the_sdm_numbering() {
        assert_eq!(
            BasicExitReason::from_number(10),
            Some(BasicExitReason::Cpuid)
        );
        assert_eq!(
            BasicExitReason::from_number(30),
            Some(BasicExitReason::IoInstruction)
        );
        assert_eq!(
            BasicExitReason::from_number(48),
            Some(BasicExitReason::EptViolation)
        );
        assert_eq!(
            BasicExitReason::from_number(52),
            Some(BasicExitReason::PreemptionTimerExpired)
        );
        // 35, 38 and 42 are unused by the SDM.
        for n in [35, 38, 42, 80] {
            assert_eq!(BasicExitReason::from_number(n), None);
        }
        assert_eq!(BasicExitReason::ALL.len(), 80 - 3);
        assert!(BasicExitReason::ALL
            .iter()
            .all(|&r| (r as usize) < EXIT_REASON_SLOTS));
    }
}
