//! Extended page tables: the guest-physical to host-physical translation.
//!
//! - [`EptCapabilities`]: what the processor's EPT supports, decoded from
//!   `IA32_VMX_EPT_VPID_CAP` (bit positions in [`capabilities::bits`]).
//! - [`EptTables`]: 4-level tables over frames from a [`FrameAllocator`]
//!   (such as [`FramePool`]): map, unmap and protect ranges with 4 KiB,
//!   2 MiB and 1 GiB pages chosen automatically, split and merged as ranges
//!   change, permissions and memory types checked against the SDM's
//!   misconfiguration rules, the host's MTRR types honoured
//!   ([`HostMemoryTypes`]), walks for misconfiguration reports, and dirty
//!   logging from the EPT dirty flags.
//! - [`Eptp`], [`invept`], [`invvpid`]: the EPT pointer and TLB invalidation.
//! - [`EptViolation`]: the exit qualification of an EPT violation.
//! - [`HostRam`]: identity-mapped host memory that backs guest RAM.

pub mod capabilities;
mod entry;
mod frames;
mod host_ram;
mod host_types;
mod instructions;
mod tables;
mod violation;

#[cfg(test)]
mod tests;

pub use capabilities::EptCapabilities;
pub use entry::{
    MappingAttributes, MemoryType, Misconfiguration, PermissionError, Permissions,
    ReservedMemoryType,
};
pub use frames::{EptFrame, FrameAllocator, FramePool};
pub use host_ram::{HostRam, HostRamOutOfBounds};
pub use host_types::{HostMemoryTypes, MtrrRangeError, MtrrRanges, UniformHostMemory};
pub use instructions::{invept, invvpid, Eptp, InvalidationError, InveptKind, InvvpidKind};
pub use tables::{
    EptError, EptTables, EptWalk, PageSize, Translation, GUEST_PHYSICAL_LIMIT, PAGE_SIZE,
};
pub use violation::EptViolation;

/// Maps `[0, len)` of guest RAM onto host-physical `[0, len)` with RAM
/// attributes: the operation `cargo xtask bench` times as `ept.map_4gib`
/// (with `len` = 4 GiB) on an empty table.
pub fn map_ram_benchmark<A: FrameAllocator>(
    tables: &mut EptTables<A>,
    len: u64,
) -> Result<(), EptError> {
    tables.map(0, 0, len, MappingAttributes::RAM)
}
