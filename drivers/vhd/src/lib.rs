//! VHD disk images (Microsoft Virtual Hard Disk format): fixed, dynamic and
//! differencing images, opened over any byte-addressed [`BlockDevice`].
//!
//! - [`format`]: on-disk structures, checksums, CHS geometry, size rules.
//! - [`device`]: the [`BlockDevice`] contract and backends: caller memory
//!   ([`SliceDevice`]), a growable vector (`VecDevice`, feature `alloc`) and
//!   files (`FileDevice`, feature `std`).
//! - [`Disk`]: an image and its parents, read and written at any offset;
//!   [`Disk::write_zeroes`], [`Disk::commit`], [`Disk::compact`], [`Disk::info`].
//! - [`check`]: every problem of an image, typed, with values.
//! - [`create`]: new fixed, dynamic and differencing images.
//! - [`resolve`]: how differencing images find their parents.
//! - [`storage`]: where BAT caches live.
//!
//! Without `alloc` nothing is allocated: BAT caches come from a caller's
//! slice ([`SlicePool`]), parents from the integrator's [`ParentResolver`],
//! and the chain depth is the const parameter `N` of [`Disk`]. The read and
//! write paths never allocate, with or without `alloc`.
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod create;
pub mod device;
mod disk;
pub mod error;
pub mod format;
mod layer;
pub mod resolve;
pub mod storage;

#[cfg(feature = "std")]
pub use device::FileDevice;
#[cfg(feature = "alloc")]
pub use device::VecDevice;
pub use device::{BlockDevice, SliceDevice};
pub use disk::{check, CommitStats, CompactStats, Disk, Info};
pub use error::{Error, IoError, Problem, Region, Structure};
pub use format::{DiskType, Footer, Geometry, Uuid};
pub use layer::{OpenOptions, Summary, MAX_LOCATOR_LEN};
#[cfg(feature = "std")]
pub use resolve::FileResolver;
pub use resolve::{LocatorHint, NoParents, ParentRequest, ParentResolver};
#[cfg(feature = "alloc")]
pub use storage::VecStorage;
pub use storage::{SlicePool, TableStorage};
