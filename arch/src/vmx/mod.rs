//! VT-x: capabilities, the typed VMCS, controls, VM entry and VM exits.
//!
//! - [`caps`]: the IA32_VMX_* capability MSRs decoded into [`VmxCapabilities`],
//!   from the CPU or from recordings.
//! - [`vmcs`]: every VMCS field, typed by width and access, behind
//!   [`VmcsAccess`] (hardware [`ActiveVmcs`], in-memory [`MemVmcs`]).
//! - [`controls`]: every control bit by name and the reconciliation of wanted
//!   controls with the allowed ones ([`ControlRequest::reconcile`]).
//! - [`state`]: guest-state builders and the host state of the running CPU.
//! - [`exit`]: exit reasons, qualifications and the [`VmExit`] enum.
//! - [`vcpu`]: VMXON/VMXOFF ([`Vmx`]), VMCS regions, the run loop ([`Vcpu`]).
//! - [`bitmap`]: MSR and I/O bitmaps, VPIDs, the preemption timer.
//! - [`check`]: the VM-entry pre-flight checker ([`check_vm_entry`]).
//! - [`broken`]: broken configurations naming the rule they violate.
//! - [`apic`]: the virtual-APIC page of APIC virtualization.
//!
//! # Example
//!
//! ```no_run
//! use ponte_arch::vmx::*;
//!
//! static mut VMXON: Page4K = Page4K::zeroed();
//! static mut VMCS: Page4K = Page4K::zeroed();
//! static mut MSRS: Page4K = Page4K::zeroed();
//!
//! fn hypervisor(guest_cr3: u64, entry: u64, stack: u64) -> Result<(), &'static str> {
//!     // SAFETY: CPL 0, 64-bit mode, TR loaded, identity mapping; each page used once.
//!     let (vmxon, vmcs, msrs) = unsafe {
//!         let p = (&raw mut VMXON, &raw mut VMCS, &raw mut MSRS);
//!         (&mut *p.0, &mut *p.1, &mut *p.2)
//!     };
//!     // Bring-up: feature control, fixed CR0/CR4 bits, VMXON.
//!     let vmx = unsafe { Vmx::enable(vmxon) }.map_err(|_| "no VMX")?;
//!     let caps = *vmx.caps();
//!     // Controls: required ones fail loudly, preferred ones are dropped if absent.
//!     let controls = ControlRequest::new()
//!         .require(ProcControl::HltExiting)
//!         .require(ProcControl::UseMsrBitmaps)
//!         .require(EntryControl::Ia32eModeGuest)
//!         .prefer(ExitControl::LoadEfer)
//!         .prefer(EntryControl::LoadEfer)
//!         .reconcile(&caps)
//!         .map_err(|_| "CPU lacks a required control")?;
//!     // Guest and host state; VMCLEAR + VMPTRLD happen in Vcpu::new.
//!     let mut vcpu = Vcpu::new(&vmx, vmcs).map_err(|_| "VMCS")?;
//!     // Failed entries name the violated checks in the log.
//!     vcpu.explain_entry_failures();
//!     let host = unsafe { HostState::from_current_cpu() };
//!     let guest = GuestState::long_mode(guest_cr3, entry, stack);
//!     vcpu.setup(&controls, &host, &guest).map_err(|_| "VMWRITE")?;
//!     MsrBitmap::pass_through(msrs).write_to(vcpu.vmcs()).map_err(|_| "VMWRITE")?;
//!     debug_assert!(check_vm_entry(vcpu.vmcs(), &caps).is_clean());
//!     // Run loop.
//!     loop {
//!         match vcpu.run().map_err(|_| "VM entry failed")? {
//!             VmExit::Cpuid { leaf, subleaf } => {
//!                 let r = vcpu.regs_mut();
//!                 (r.rax, r.rbx, r.rcx, r.rdx) = (0, 0, 0, 0);
//!                 let _ = (leaf, subleaf);
//!                 vcpu.skip_instruction().map_err(|_| "VMREAD")?;
//!             }
//!             VmExit::Hlt => break,
//!             other => {
//!                 log::warn!("unhandled exit {other:?}");
//!                 break;
//!             }
//!         }
//!     }
//!     log::info!("{}", vcpu.stats());
//!     Ok(())
//! }
//! ```

pub mod apic;
pub mod bitmap;
pub mod broken;
pub mod caps;
pub mod check;
pub mod controls;
pub mod exit;
mod hw;
pub mod state;
pub mod vcpu;
pub mod vmcs;

pub use apic::VirtualApicPage;
pub use bitmap::{
    arm_preemption_timer, assign_vpid, preemption_timer_value, IoBitmap, MsrBitmap, VpidAllocator,
};
pub use broken::{BrokenConfig, ExpectedOutcome, BROKEN_CONFIGS};
pub use caps::{RawVmxMsrs, VmxCapabilities};
pub use check::{check_vm_entry, Report, Rule, Violation};
pub use controls::{
    Control, ControlRequest, ControlSettings, EntryControl, ExitControl, PinControl, Proc2Control,
    ProcControl,
};
pub use exit::{BasicExitReason, InterruptionInfo, InterruptionType, VmExit};
pub use state::{GuestState, HostState, Segment};
pub use vcpu::{setup_vmcs, ExitStats, GuestRegisters, RunError, Vcpu, Vmcs, Vmx, VmxError};
pub use vmcs::{ActiveVmcs, MemVmcs, VmInstructionError, VmcsAccess, VmcsError, VmcsExt};

/// A 4-KiB, 4-KiB-aligned page (VMXON region, VMCS, bitmaps). ponte images
/// are identity-mapped, so a page's address is its physical address.
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct Page4K(pub [u8; 4096]);

impl Page4K {
    /// A zeroed page.
    pub const fn zeroed() -> Self {
        Page4K([0; 4096])
    }
    /// Physical address (identity mapping).
    pub fn phys_addr(&self) -> u64 {
        self as *const Page4K as u64
    }
}

#[cfg(test)]
mod tests;
