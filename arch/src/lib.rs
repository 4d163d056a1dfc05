//! The x86_64 layer of ponte: the only code that executes privileged or
//! virtualization instructions.
//!
//! - [`boot`]: the image runtime: entry, console, CPU tables, boot information, run results.
//! - [`cpu`]: identification of the processor and its VMX capability MSRs.
//! - [`memory`]: the image's free host memory, handed out as owned pages and RAM blocks.
//! - [`vmx`]: VT-x bring-up, the typed VMCS, controls, VM entry and exit.
//! - [`ept`]: extended page tables.
//! - [`port`]: the I/O port contract for host device drivers and its `in`/`out` implementation.
//!
//! Everything that can be computed without executing a privileged
//! instruction (capability decoding, control reconciliation, VMCS setup over
//! an in-memory VMCS, EPT tables in ordinary memory) builds and is tested on
//! the host; the instructions themselves sit behind small `unsafe` functions
//! with a `SAFETY:` comment each.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod boot;
pub mod cpu;
pub mod ept;
pub mod memory;
pub mod port;
pub mod vmx;
