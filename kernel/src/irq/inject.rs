//! What the next VM entry injects: a pure decision over plain inputs.
//!
//! [`decide`] takes the guest's event state as the VMCS reports it
//! ([`GuestEventState`]: RFLAGS.IF, interruptibility state, activity state,
//! the IDT-vectoring information of the exit) and an [`InterruptSource`]
//! (the interrupt controllers, see [`super::router::Chips`]) and returns a
//! [`Decision`]: enter with an event in the VM-entry interruption-information
//! field and/or with interrupt-window or NMI-window exiting, or stay halted
//! until a given time. The run loop applies it with a few VMWRITEs; nothing
//! here touches VMX.
//!
//! Order (Intel SDM Vol. 3C, "Event Injection" and "Interrupt-Window
//! Exiting and Virtual-Interrupt Delivery"): an event an exit interrupted is
//! re-injected first; then an NMI when no blocking by NMI, STI or MOV SS is
//! in effect (else NMI-window exiting); then a maskable interrupt when
//! RFLAGS.IF = 1 and there is no STI/MOV-SS blocking (else interrupt-window
//! exiting; also after an injection while a further request is pending, so
//! it goes in as soon as the handler re-enables interrupts). A halted vCPU
//! wakes for an NMI, or for an interrupt while RFLAGS.IF = 1; otherwise it
//! sleeps until the next timer deadline.
//!
//! # Run loop protocol
//!
//! At every exit: handle the exit (a HLT exit skips the instruction, clears
//! STI/MOV-SS blocking and sets the activity state to HLT, as the processor
//! would be halted), then run [`super::router::IrqRouter::sync`] and
//! `decide`. For `Enter`, write the VM-entry interruption-information field
//! (and error code, instruction length) from [`EntryDecision::inject`], set
//! or clear the interrupt-window and NMI-window exiting controls, and when
//! [`EntryDecision::wake`] is set write the activity state "active" and
//! clear STI/MOV-SS blocking. For [`Decision::Sleep`], wait until the
//! deadline (or until a line changes), then sync and decide again. The
//! VMX-preemption timer is set to the earliest of the LAPIC, PIT and RTC
//! deadlines so lazy timers fire on time while the guest runs.
//!
//! # With APIC virtualization
//!
//! With the TPR shadow ([`crate::vcpu::apicv`]) the decision is the same:
//! the run loop first copies the guest's virtual TPR into the LAPIC, so
//! [`decide`] sees the TPR the guest set without exits. With virtual-
//! interrupt delivery the processor delivers the LAPIC's fixed vectors from
//! RVI itself: the LAPIC then hides them from the source
//! ([`super::lapic::LocalApic::set_processor_delivery`]) and [`decide`] only
//! handles re-injection, NMIs and the 8259A's ExtINT.

/// What the interrupt controllers offer the vCPU.
pub trait InterruptSource {
    /// An NMI is pending.
    fn nmi_pending(&self) -> bool;
    /// The processor starts delivering the NMI.
    fn take_nmi(&mut self);
    /// A maskable interrupt is requested (INTR from the 8259A or a LAPIC
    /// vector above the PPR).
    fn interrupt_pending(&self) -> bool;
    /// The interrupt acknowledge cycle: the vector to deliver, now in
    /// service. `None` if the request went away.
    fn acknowledge_interrupt(&mut self) -> Option<u8>;
}

/// Guest interruptibility-state bits (VMCS field 0x4824).
pub mod interruptibility {
    /// Blocking by STI.
    pub const STI: u32 = 1 << 0;
    /// Blocking by MOV SS / POP SS.
    pub const MOV_SS: u32 = 1 << 1;
    /// Blocking by SMI.
    pub const SMI: u32 = 1 << 2;
    /// Blocking by NMI.
    pub const NMI: u32 = 1 << 3;
}

/// Guest activity state (VMCS field 0x4826).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivityState {
    /// 0: executing.
    Active,
    /// 1: halted by HLT.
    Hlt,
    /// 2: shutdown (triple fault).
    Shutdown,
    /// 3: waiting for a start-up IPI.
    WaitForSipi,
}

impl ActivityState {
    /// Decodes the VMCS value (unknown values read as active).
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            1 => Self::Hlt,
            2 => Self::Shutdown,
            3 => Self::WaitForSipi,
            _ => Self::Active,
        }
    }
}

/// Interruption type (bits 10:8 of the interruption-information fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// 0: external interrupt.
    ExternalInterrupt,
    /// 2: NMI.
    Nmi,
    /// 3: hardware exception.
    HardwareException,
    /// 4: software interrupt (INT n).
    SoftwareInterrupt,
    /// 5: privileged software exception (INT1).
    PrivilegedSoftwareException,
    /// 6: software exception (INT3, INTO).
    SoftwareException,
    /// 7: other event (MTF); 1 is reserved and decodes here too.
    Other,
}

impl EventKind {
    const fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => Self::ExternalInterrupt,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            _ => Self::Other,
        }
    }

    const fn bits(self) -> u32 {
        match self {
            Self::ExternalInterrupt => 0,
            Self::Nmi => 2,
            Self::HardwareException => 3,
            Self::SoftwareInterrupt => 4,
            Self::PrivilegedSoftwareException => 5,
            Self::SoftwareException => 6,
            Self::Other => 7,
        }
    }

    /// Whether re-injection needs the VM-entry instruction length.
    pub const fn is_software(self) -> bool {
        matches!(
            self,
            Self::SoftwareInterrupt | Self::PrivilegedSoftwareException | Self::SoftwareException
        )
    }
}

/// One event for the VM-entry interruption-information field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventInjection {
    /// Interruption type.
    pub kind: EventKind,
    /// Vector.
    pub vector: u8,
    /// Error code to deliver (VM-entry exception error code).
    pub error_code: Option<u32>,
    /// VM-entry instruction length (software events only).
    pub instruction_len: u32,
}

impl EventInjection {
    /// An external interrupt with `vector`.
    pub const fn external(vector: u8) -> Self {
        Self {
            kind: EventKind::ExternalInterrupt,
            vector,
            error_code: None,
            instruction_len: 0,
        }
    }

    /// An NMI (vector 2).
    pub const fn nmi() -> Self {
        Self {
            kind: EventKind::Nmi,
            vector: 2,
            error_code: None,
            instruction_len: 0,
        }
    }

    /// Decodes the IDT-vectoring information field (0x4408) of an exit,
    /// with the IDT-vectoring error code (0x440A) and the VM-exit
    /// instruction length (0x440C). `None` when bit 31 (valid) is clear.
    pub const fn from_idt_vectoring(
        info: u32,
        error_code: u32,
        instruction_len: u32,
    ) -> Option<Self> {
        if info & (1 << 31) == 0 {
            return None;
        }
        let kind = EventKind::from_bits(info >> 8);
        Some(Self {
            kind,
            vector: info as u8,
            error_code: if info & (1 << 11) != 0 {
                Some(error_code)
            } else {
                None
            },
            instruction_len: if kind.is_software() {
                instruction_len
            } else {
                0
            },
        })
    }

    /// The VM-entry interruption-information field (0x4016): vector, type,
    /// deliver-error-code (bit 11), valid (bit 31).
    pub const fn interruption_info(&self) -> u32 {
        let mut info = (1 << 31) | (self.kind.bits() << 8) | self.vector as u32;
        if self.error_code.is_some() {
            info |= 1 << 11;
        }
        info
    }
}

/// The guest's event state at an exit, as read from the VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestEventState {
    /// RFLAGS.IF.
    pub interrupts_enabled: bool,
    /// Guest interruptibility state (see [`interruptibility`]).
    pub interruptibility: u32,
    /// Guest activity state.
    pub activity: ActivityState,
    /// The event the exit interrupted (IDT-vectoring information).
    pub idt_vectoring: Option<EventInjection>,
}

/// How to enter the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryDecision {
    /// The event to inject through the VM-entry interruption-information
    /// field.
    pub inject: Option<EventInjection>,
    /// Set interrupt-window exiting (an interrupt waits for RFLAGS.IF or
    /// for STI/MOV-SS blocking to end); clear it otherwise.
    pub interrupt_window: bool,
    /// Set NMI-window exiting (an NMI waits for NMI blocking to end); clear
    /// it otherwise.
    pub nmi_window: bool,
    /// Write the activity state "active" and clear STI/MOV-SS blocking in
    /// the interruptibility state (VM entry refuses an external interrupt
    /// or NMI under either): the injected event wakes a halted vCPU.
    pub wake: bool,
}

/// The outcome of [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Enter the guest with these settings.
    Enter(EntryDecision),
    /// Do not enter: the vCPU is halted (or shut down, or waiting for a
    /// start-up IPI) and nothing can wake it now. Sleep until `until_ns`
    /// (the earliest timer deadline; `None` = until a line changes), then
    /// sync and decide again.
    Sleep {
        /// When to look again.
        until_ns: Option<u64>,
    },
}

/// Decides the next entry; see the module documentation. `next_timer_ns` is
/// the earliest deadline of the vCPU's timers (LAPIC, PIT, RTC), used when
/// the vCPU sleeps. Acknowledges the interrupt or NMI it decides to inject.
pub fn decide(
    guest: &GuestEventState,
    source: &mut impl InterruptSource,
    next_timer_ns: Option<u64>,
) -> Decision {
    let halted = guest.activity != ActivityState::Active;
    if matches!(
        guest.activity,
        ActivityState::Shutdown | ActivityState::WaitForSipi
    ) {
        return Decision::Sleep {
            until_ns: next_timer_ns,
        };
    }
    // A halted vCPU has executed past the instruction that opened an
    // STI/MOV-SS shadow (`sti; hlt`), so the shadow no longer blocks.
    let shadow =
        !halted && guest.interruptibility & (interruptibility::STI | interruptibility::MOV_SS) != 0;
    let nmi_blocked = shadow || guest.interruptibility & interruptibility::NMI != 0;
    let mut entry = EntryDecision::default();
    // One exit for every entry: the decision is assembled in one place.
    'decided: {
        if let Some(event) = guest.idt_vectoring {
            entry.inject = Some(event);
            entry.nmi_window = source.nmi_pending();
            entry.interrupt_window = source.interrupt_pending();
            break 'decided;
        }

        if source.nmi_pending() {
            if !nmi_blocked {
                source.take_nmi();
                entry.inject = Some(EventInjection::nmi());
                entry.wake = halted;
                entry.interrupt_window = source.interrupt_pending();
                break 'decided;
            }
            entry.nmi_window = true;
        }

        if source.interrupt_pending() {
            if guest.interrupts_enabled && !shadow {
                if let Some(vector) = source.acknowledge_interrupt() {
                    entry.inject = Some(EventInjection::external(vector));
                    entry.wake = halted;
                    // A request that outranks the one now in service (a
                    // higher class) goes in as soon as the handler opens a
                    // window.
                    entry.interrupt_window = source.interrupt_pending();
                    break 'decided;
                }
            } else {
                entry.interrupt_window = true;
            }
        }

        if halted {
            return Decision::Sleep {
                until_ns: next_timer_ns,
            };
        }
    }
    Decision::Enter(entry)
}

#[cfg(test)]
mod tests;
