//! VHD disk images (Microsoft Virtual Hard Disk format): fixed, dynamic and
//! differencing images, opened over any byte-addressed [`BlockDevice`].
//!
//! - [`format`]: on-disk structures, checksums, CHS geometry, size rules.
//! - [`device`]: the [`BlockDevice`] contract and backends: caller memory
//!   ([`SliceDevice`]), read-only bytes in place ([`ReadOnlySliceDevice`]),
//!   a growable vector (`VecDevice`, feature `alloc`) and
//!   files (`FileDevice`, feature `std`).
//! - [`Disk`]: an image and its parents, read and written at any offset;
//!   [`Disk::write_zeroes`], [`Disk::commit`], [`Disk::compact`], [`Disk::info`].
//! - [`check`]: every problem of an image, typed, with values.
//! - [`create`]: new fixed, dynamic and differencing images.
//! - [`resolve`]: how differencing images find their parents.
//! - [`storage`]: where BAT caches and bitmap caches live, and how large
//!   they are.
//!
//! Without `alloc` nothing is allocated: BAT caches, block marks and sector
//! bitmap caches come from a caller's slice ([`SlicePool`], sized by
//! [`storage::table_words`]), parents from the integrator's
//! [`ParentResolver`], and the chain depth is the const parameter `N` of
//! [`Disk`]. The read and write paths never allocate, with or without
//! `alloc`.
//!
//! Writes are durable after [`Disk::flush`]; dropping a disk does not flush.
//! A power cut at any moment leaves an image that opens, checks clean and
//! holds everything flushed before it (see the crash invariant documented
//! with the allocation code).
//!
//! # Example
//!
//! A dynamic image in caller memory, without an allocator:
//!
//! ```
//! use ponte_vhd::create::{create_dynamic, CreateOptions};
//! use ponte_vhd::storage::table_words;
//! use ponte_vhd::{Disk, NoParents, OpenOptions, SliceDevice, SlicePool, Uuid};
//!
//! let mut image = [0u8; 64 * 1024];
//! let mut dev = SliceDevice::empty(&mut image);
//! let mut create = CreateOptions::new(8 << 20, Uuid([1; 16]), 0);
//! create.block_size = 4096;
//! create_dynamic(&mut dev, &create)?;
//!
//! // 2048 BAT entries and a 16-slot bitmap cache: 2 x 2048 words of BAT
//! // cache and scratch, 64 of block marks, 16 x 130 of cached bitmaps.
//! const WORDS: usize = table_words(2048, 16);
//! let mut words = [0u32; WORDS];
//! let options = OpenOptions {
//!     writable: true,
//!     bitmap_cache_slots: 16,
//!     ..OpenOptions::default()
//! };
//! let mut disk: Disk<_, _, 1> =
//!     Disk::open(dev, &options, &mut SlicePool::new(&mut words), &mut NoParents)?;
//! disk.write_at(3 * 4096 + 100, b"hello")?;
//! disk.flush()?;
//! let mut buf = [0u8; 5];
//! disk.read_at(3 * 4096 + 100, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! assert_eq!(disk.info().allocated_blocks, 1);
//! # Ok::<(), ponte_vhd::Error>(())
//! ```
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
pub use device::{BlockDevice, ReadOnlySliceDevice, SliceDevice};
pub use disk::{check, CommitStats, CompactStats, Disk, Info};
pub use error::{Error, IoError, Problem, Region, Structure};
pub use format::{DiskType, Footer, Geometry, Uuid};
pub use layer::{OpenOptions, Summary, DEFAULT_BITMAP_CACHE_SLOTS, MAX_LOCATOR_LEN};
#[cfg(feature = "std")]
pub use resolve::{FileResolver, ParentPaths};
pub use resolve::{LocatorHint, NoParents, ParentRequest, ParentResolver};
#[cfg(feature = "alloc")]
pub use storage::VecStorage;
pub use storage::{SlicePool, TableStorage};
