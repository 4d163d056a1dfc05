//! One image file of a chain: validation on open, the cached BAT, sector
//! bitmaps, block allocation and the ordering of metadata writes.
//!
//! # Crash invariant
//!
//! After a power cut between any two device writes, with writes issued since
//! the last device flush reaching the medium in any order or not at all, the
//! file opens, checks clean and holds everything written before the last
//! completed [`crate::Disk::flush`]:
//!
//! 1. The footer copy at offset 0 and the dynamic header are written only at
//!    creation, never afterwards, so they are always valid.
//! 2. A new block goes where the footer is (`next_alloc`): the footer is
//!    written again past the new block, then the block's first bitmap
//!    sector overwrites the old footer, then data follows. Until its BAT
//!    entry is on the medium nothing references the block: it is leaked
//!    space. If the cut leaves the file ending in anything but a footer,
//!    open takes the copy at offset 0 ([`Summary::tail_footer_missing`]);
//!    if the end holds a footer-shaped sector that differs from the copy
//!    (guest data), the copy wins. Either way the next append or flush
//!    writes the footer back at the end.
//! 3. A BAT entry or a sector bitmap bit reaches the device only after a
//!    device flush made durable what it exposes (data, the block's
//!    initialised bitmap). BAT and bitmap updates are queued in memory
//!    (dirty BAT sectors, dirty bitmap slots) and written by
//!    [`Layer::sync`]: flush, metadata, flush. A dirty bitmap slot needed
//!    for another sector is written the same way, with everything queued.
//!    Before the second flush any subset of the queued metadata may be on
//!    the medium; each subset is a valid image, because bits are only ever
//!    set and a BAT entry only changes to "unallocated" or to a block in
//!    space no durable entry references.
//! 4. Space is given back only after nothing durable references it: blocks
//!    moved by compaction are copied into unreferenced holes, their new
//!    entries synced, the footer written at the new end and flushed, and
//!    only then is the file truncated.
//!
//! # Read path
//!
//! Sector bitmaps are cached in a direct-mapped cache whose size the
//! integrator chooses ([`OpenOptions::bitmap_cache_slots`]), in the table
//! storage. A block known to have every sector present (allocated so by
//! ponte, or whose single bitmap sector reads back all ones, or filled by
//! writes) carries a mark in memory, and reads of it skip the bitmap. The
//! mark is cleared whenever the block's BAT entry changes, and recomputed
//! whenever its bitmap changes. Blocks larger than 2 MiB, whose bitmap
//! spans several sectors, are marked only when ponte allocates them. Marks
//! are never written to the device, so they play no part in the crash
//! invariant.

use crate::device::BlockDevice;
use crate::error::{Error, IoError, Problem, Region, Structure};
use crate::format::{
    be_u32, bitmap_size, check_cookie, DiskType, DynamicHeader, Footer, LocatorCode,
    BAT_UNALLOCATED, FOOTER_COOKIE, FOOTER_SIZE, HEADER_COOKIE, HEADER_SIZE, LOCATOR_SLOTS,
    MAX_BLOCK_SIZE, MAX_DYNAMIC_SIZE, MAX_FIXED_SIZE, MIN_BLOCK_SIZE, SECTOR_SIZE,
};
use crate::storage::{marks_len, table_words, TableStorage, BITMAP_SLOT_WORDS};

/// Longest parent locator ponte decodes, in bytes.
pub const MAX_LOCATOR_LEN: u32 = 2048;
/// BAT sectors whose update may be pending before a forced sync.
const DIRTY_BAT_MAX: usize = 16;
/// Words of bits in one bitmap sector.
const BITMAP_SECTOR_WORDS: usize = SECTOR_SIZE as usize / 4;
/// Layout of a bitmap cache slot ([`BITMAP_SLOT_WORDS`] words): the block,
/// the bitmap sector index (with [`SLOT_DIRTY`]), then the bits.
const SLOT_BLOCK: usize = 0;
const SLOT_INDEX: usize = 1;
const SLOT_BITS: usize = 2;
const _: () = assert!(BITMAP_SLOT_WORDS == SLOT_BITS + BITMAP_SECTOR_WORDS);
/// Block word of a slot holding nothing (no block has this number).
const SLOT_EMPTY: u32 = u32::MAX;
/// Index word flag: the slot's bits are not on the device yet.
const SLOT_DIRTY: u32 = 1 << 31;
/// Sectors covered by one bitmap sector.
pub(crate) const BITS_PER_BITMAP_SECTOR: u64 = SECTOR_SIZE * 8;

/// Options for opening an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open the top image for writing.
    pub writable: bool,
    /// Open parents for writing too (needed by [`crate::Disk::commit`]).
    pub writable_parents: bool,
    /// Accept footers and headers whose checksum is wrong (for recovery);
    /// the problem is still reported by [`crate::check`].
    pub accept_bad_checksums: bool,
    /// Sector bitmap sectors cached per dynamic or differencing image, in
    /// the image's table storage ([`crate::storage`] gives the sizing).
    /// At least one is used, and never more than the image has bitmap
    /// sectors. The cache is direct-mapped: a bitmap sector has one place,
    /// so a cache covering every bitmap sector of an image never misses
    /// twice for the same sector.
    pub bitmap_cache_slots: usize,
}

/// Bitmap cache slots of [`OpenOptions::default`].
pub const DEFAULT_BITMAP_CACHE_SLOTS: usize = 8;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            writable: false,
            writable_parents: false,
            accept_bad_checksums: false,
            bitmap_cache_slots: DEFAULT_BITMAP_CACHE_SLOTS,
        }
    }
}

/// Statistics gathered while validating an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of problems reported.
    pub problems: usize,
    /// Number of fatal problems (those that make opening fail).
    pub fatal: usize,
    /// Number of allocated blocks.
    pub allocated_blocks: u32,
    /// Bytes between the end of the metadata and the end of the file that
    /// neither a block nor the footer uses (left by interrupted appends,
    /// freed blocks or moved blocks; [`crate::Disk::compact`] reclaims them).
    pub leaked_bytes: u64,
    /// The file does not end with a footer (an append was interrupted); the
    /// copy at offset 0 was used. Not a problem: the next append or
    /// compaction writes the footer again.
    pub tail_footer_missing: bool,
}

/// Geometry of the sparse part of a dynamic or differencing image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sparse {
    pub entries: u32,
    pub block_size: u64,
    pub bitmap_len: u64,
    pub table_offset: u64,
}

impl Sparse {
    pub fn span(&self) -> u64 {
        self.bitmap_len + self.block_size
    }
    pub fn sectors_per_block(&self) -> u64 {
        self.block_size / SECTOR_SIZE
    }
    /// The block holding byte `off` of the virtual disk, and the offset in
    /// it. Block sizes are powers of two (checked on open): a shift and a
    /// mask, without a division or its divide-by-zero panic path.
    pub fn locate(&self, off: u64) -> (u64, u64) {
        (
            off >> self.block_size.trailing_zeros(),
            off & (self.block_size - 1),
        )
    }
}

/// Marks that an operation on a layer failed. The error itself is held by
/// the layer where it arose ([`Layer::fail`]) until the public call that
/// started the operation takes it ([`take_fault`]): passed up through the
/// I/O path, this one-byte marker costs a test and a branch per step where
/// the 40-byte [`Error`] is copied at every step.
#[derive(Debug)]
pub(crate) struct Failed;

/// Outcome of an internal step on a layer.
pub(crate) type Step<T = ()> = Result<T, Failed>;

/// Takes the error recorded by the layer of `layers` that failed (and
/// clears any other), once, where a public call returns it.
#[cold]
#[inline(never)]
pub(crate) fn take_fault<D, B>(layers: &mut [Layer<D, B>]) -> Error {
    let mut found = None;
    for l in layers {
        if let Some(e) = l.fault.take() {
            found.get_or_insert(e);
        }
    }
    // Every `Failed` is made by `Layer::fail`, which records the error
    // first; an OS error without a code (-1) stands in should that not
    // hold.
    found.unwrap_or(Error::Io(IoError::Os { code: -1 }))
}

/// One opened image file.
pub(crate) struct Layer<D, B> {
    pub dev: D,
    pub footer: Footer,
    pub kind: DiskType,
    pub size: u64,
    pub writable: bool,
    pub sparse: Option<Sparse>,
    /// The dynamic header (dynamic and differencing images); kept apart
    /// from the small `Sparse` so that the I/O path copies only the
    /// geometry.
    pub header: Option<DynamicHeader>,
    table: Option<B>,
    /// Offset where the next block goes (where the footer is).
    pub next_alloc: u64,
    /// End of the last metadata structure, rounded up to a sector.
    pub metadata_end: u64,
    /// The file holds unreferenced bytes past `next_alloc` that must be cut
    /// before the first allocation (tail footer was unusable).
    truncate_before_alloc: bool,
    /// The file did not end with a footer when opened.
    pub tail_footer_missing: bool,
    dirty_bat: [u32; DIRTY_BAT_MAX],
    dirty_bat_len: usize,
    /// Bitmap cache slots in the table storage (layout in `storage`).
    cache_slots: usize,
    /// Slots holding bits not written to the device yet.
    dirty_slots: usize,
    /// The error of the step that failed, until [`take_fault`] takes it.
    fault: Option<Error>,
}

/// A footer as read from the device, before it is decoded: footers are
/// compared and chosen on their bytes, and only the chosen one is decoded.
struct RawFooter {
    raw: [u8; FOOTER_SIZE],
    /// Offset it was read at.
    pos: u64,
}

impl RawFooter {
    /// Reads `n` bytes (512, or 511 for old images) at `pos`; the rest of
    /// the 512 bytes are zero. Filled in place: footers are not moved.
    fn read<D, B>(&mut self, layer: &mut Layer<D, B>, pos: u64, n: usize) -> Step
    where
        D: BlockDevice,
        B: AsRef<[u32]> + AsMut<[u32]>,
    {
        self.raw = [0; FOOTER_SIZE];
        self.pos = pos;
        layer.read(pos, self.raw.get_mut(..n).unwrap_or(&mut []))
    }
    fn cookie_ok(&self) -> bool {
        self.raw[..8] == FOOTER_COOKIE
    }
    fn stored(&self) -> u32 {
        be_u32(&self.raw, 64)
    }
    fn computed(&self) -> u32 {
        Footer::compute_checksum(&self.raw)
    }
    /// Cookie and checksum right.
    fn valid(&self) -> bool {
        self.cookie_ok() && self.stored() == self.computed()
    }
    /// A dynamic (3) or differencing (4) footer.
    fn sparse(&self) -> bool {
        self.cookie_ok() && matches!(be_u32(&self.raw, 60), 3 | 4)
    }
    /// Same fields: bytes 8..85 hold every field after the cookie.
    fn same_fields(&self, other: &RawFooter) -> bool {
        self.raw[..85] == other.raw[..85]
    }
    fn bad_checksum(&self, structure: Structure) -> Problem {
        Problem::BadChecksum {
            structure,
            stored: self.stored(),
            computed: self.computed(),
        }
    }
}

const EMPTY_FOOTER: RawFooter = RawFooter {
    raw: [0; FOOTER_SIZE],
    pos: 0,
};

struct Reporter<'a> {
    sink: &'a mut dyn FnMut(&Problem),
    summary: &'a mut Summary,
    first_fatal: Option<Problem>,
}

// Out of line: the open path reports from dozens of places.
impl Reporter<'_> {
    #[inline(never)]
    fn fatal(&mut self, p: Problem) {
        (self.sink)(&p);
        self.summary.problems += 1;
        self.summary.fatal += 1;
        if self.first_fatal.is_none() {
            self.first_fatal = Some(p);
        }
    }
    #[inline(never)]
    fn warn(&mut self, p: Problem) {
        (self.sink)(&p);
        self.summary.problems += 1;
    }
    #[inline(never)]
    fn stop(&mut self, p: Problem) -> Error {
        self.fatal(p);
        Error::Malformed(self.first_fatal.unwrap_or(p))
    }
}

/// Sorts block numbers by the sector their BAT entry names, equal sectors
/// by block number. A heapsort: O(n log n) on any table without recursion
/// or memory of its own, in a fraction of the code of core's sort.
pub(crate) fn sort_by_sector(blocks: &mut [u32], bat: &[u32]) {
    let n = blocks.len();
    for root in (0..n / 2).rev() {
        sift_down(blocks, bat, root);
    }
    for end in (1..n).rev() {
        blocks.swap(0, end);
        sift_down(blocks.get_mut(..end).unwrap_or(&mut []), bat, 0);
    }
}

/// Moves the entry at `root` of the heap `blocks` down to its place.
/// Positions are looked up checked: the heap arithmetic keeps them in
/// range, and the sort needs no panic paths to say so.
fn sift_down(blocks: &mut [u32], bat: &[u32], mut root: usize) {
    let key = |block: u32| (bat.get(block as usize).copied().unwrap_or(0), block);
    loop {
        let child = 2 * root + 1;
        let (Some(&r), Some(&c)) = (blocks.get(root), blocks.get(child)) else {
            break;
        };
        let (child, c) = match blocks.get(child + 1) {
            Some(&right) if key(c) < key(right) => (child + 1, right),
            _ => (child, c),
        };
        if key(r) >= key(c) {
            break;
        }
        blocks.swap(root, child);
        root = child;
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1 && a.0 < a.1 && b.0 < b.1
}

impl<D: BlockDevice, B: AsRef<[u32]> + AsMut<[u32]>> Layer<D, B> {
    /// A layer over `dev` that knows nothing of its image yet: what
    /// [`Layer::inspect_in_place`] fills.
    pub fn blank(dev: D, writable: bool) -> Self {
        Layer {
            dev,
            footer: Footer::BLANK,
            kind: DiskType::Fixed,
            size: 0,
            writable,
            sparse: None,
            header: None,
            table: None,
            next_alloc: 0,
            metadata_end: 0,
            truncate_before_alloc: false,
            tail_footer_missing: false,
            dirty_bat: [0; DIRTY_BAT_MAX],
            dirty_bat_len: 0,
            cache_slots: 0,
            dirty_slots: 0,
            fault: None,
        }
    }

    /// Validates the image on `dev` and opens it. Every problem found goes
    /// to `sink`; the first fatal one makes this fail.
    #[cfg(test)]
    pub fn inspect<T: TableStorage<B> + ?Sized>(
        dev: D,
        options: &OpenOptions,
        writable: bool,
        tables: &mut T,
        sink: &mut dyn FnMut(&Problem),
        summary: &mut Summary,
    ) -> Result<Self, Error> {
        let mut layer = Layer::blank(dev, writable);
        layer.inspect_in_place(options, tables, sink, summary)?;
        Ok(layer)
    }

    /// Validates the image on the device of a [`Layer::blank`] and fills
    /// the layer in place (a layer returned by value would be copied on
    /// its way into the chain). Every problem found goes to `sink`; the
    /// first fatal one makes this fail.
    // Out of line: inlined into `Disk::open`, its one caller in an image,
    // it makes the image larger.
    #[inline(never)]
    pub fn inspect_in_place<T: TableStorage<B> + ?Sized>(
        &mut self,
        options: &OpenOptions,
        tables: &mut T,
        sink: &mut dyn FnMut(&Problem),
        summary: &mut Summary,
    ) -> Result<(), Error> {
        let layer = self;
        let mut r = Reporter {
            sink,
            summary,
            first_fatal: None,
        };
        let len = layer.dev.len()?;
        if len < FOOTER_SIZE as u64 {
            return Err(r.stop(Problem::FileTooSmall { len }));
        }
        let accept = options.accept_bad_checksums;
        // Choose the footer: the tail, else the copy at offset 0 (only
        // dynamic and differencing images have one; a fixed image's sector
        // 0 is guest data).
        let mut footers = [EMPTY_FOOTER, EMPTY_FOOTER, EMPTY_FOOTER];
        let [head, tail, old] = &mut footers;
        if head.read(layer, 0, FOOTER_SIZE).is_err() {
            return Err(layer.take_fault());
        }
        let head = &*head;
        let head_ok = head.valid() && head.sparse();
        if tail
            .read(layer, len - FOOTER_SIZE as u64, FOOTER_SIZE)
            .is_err()
        {
            return Err(layer.take_fault());
        }
        let mut tail = &*tail;
        if !tail.cookie_ok() {
            // Old images end with a 511-byte footer (no last reserved
            // byte).
            if old.read(layer, len - 511, 511).is_err() {
                return Err(layer.take_fault());
            }
            if old.cookie_ok() {
                tail = old;
            }
        }
        let (chosen, limit, tail_ok) = if tail.valid() {
            if tail.sparse() && !(head_ok && head.same_fields(tail)) {
                // The copy at offset 0 is never rewritten; a different tail
                // may be guest data left at the end by an interrupted
                // append, so the copy wins.
                r.warn(Problem::FooterCopyMismatch);
                (if head_ok { head } else { tail }, tail.pos, true)
            } else {
                (tail, tail.pos, true)
            }
        } else if tail.cookie_ok() {
            let p = tail.bad_checksum(Structure::Footer);
            if head_ok {
                r.warn(p);
                (head, len, false)
            } else if accept {
                r.warn(p);
                (tail, tail.pos, true)
            } else {
                return Err(r.stop(p));
            }
        } else if head_ok || (accept && head.sparse()) {
            // No footer at the end: an append interrupted before the footer
            // was moved leaves exactly this; the copy at offset 0 is used
            // and the unreferenced tail is leaked space.
            r.summary.tail_footer_missing = true;
            if !head_ok {
                r.warn(head.bad_checksum(Structure::FooterCopy));
            }
            (head, len, false)
        } else {
            let mut found = [0u8; 8];
            found.copy_from_slice(&tail.raw[..8]);
            return Err(r.stop(Problem::BadCookie {
                structure: Structure::Footer,
                found,
            }));
        };
        // Every choice has the cookie.
        let footer = Footer::decode(&chosen.raw);
        if footer.format_version >> 16 != 1 {
            return Err(r.stop(Problem::UnsupportedFooterVersion {
                version: footer.format_version,
            }));
        }
        let Some(kind) = footer.kind() else {
            return Err(r.stop(Problem::UnknownDiskType {
                value: footer.disk_type,
            }));
        };
        let size = footer.virtual_size();
        let max = if kind == DiskType::Fixed {
            MAX_FIXED_SIZE
        } else {
            MAX_DYNAMIC_SIZE
        };
        if size > max {
            return Err(r.stop(Problem::SizeOutOfRange { size, max }));
        }
        layer.footer = footer;
        layer.kind = kind;
        layer.size = size;
        layer.next_alloc = limit;
        if kind == DiskType::Fixed {
            if size > limit {
                return Err(r.stop(Problem::FixedDataTruncated {
                    size,
                    file_len: len,
                }));
            }
            return match r.first_fatal {
                Some(p) => Err(Error::Malformed(p)),
                None => Ok(()),
            };
        }

        // Dynamic header.
        let data_offset = footer.data_offset;
        if data_offset
            .checked_add(HEADER_SIZE as u64)
            .is_none_or(|end| end > limit)
        {
            return Err(r.stop(Problem::DataOffsetOutOfFile {
                data_offset,
                file_len: len,
            }));
        }
        let mut raw = [0u8; HEADER_SIZE];
        if layer.read(data_offset, &mut raw).is_err() {
            return Err(layer.take_fault());
        }
        if let Err(p) = check_cookie(&raw, HEADER_COOKIE, Structure::DynamicHeader) {
            return Err(r.stop(p));
        }
        let header = &*layer.header.insert(DynamicHeader::decode(&raw));
        let computed = DynamicHeader::compute_checksum(&raw);
        if computed != header.checksum {
            let p = Problem::BadChecksum {
                structure: Structure::DynamicHeader,
                stored: header.checksum,
                computed,
            };
            if accept {
                r.warn(p);
            } else {
                return Err(r.stop(p));
            }
        }
        if header.header_version >> 16 != 1 {
            return Err(r.stop(Problem::UnsupportedHeaderVersion {
                version: header.header_version,
            }));
        }
        let bs = header.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(r.stop(Problem::BlockSizeInvalid { block_size: bs }));
        }
        let block_size = u64::from(bs);
        let entries = header.max_table_entries;
        let needed = size.div_ceil(block_size);
        if u64::from(entries) < needed {
            return Err(r.stop(Problem::TableTooSmall {
                max_table_entries: entries,
                needed,
            }));
        }
        let max_entries = MAX_DYNAMIC_SIZE.div_ceil(block_size);
        if u64::from(entries) > max_entries {
            return Err(r.stop(Problem::TableTooLarge {
                max_table_entries: entries,
                max: max_entries,
            }));
        }
        let table_offset = header.table_offset;
        let table_len = u64::from(entries) * 4;
        if table_offset
            .checked_add(table_len)
            .is_none_or(|end| end > limit)
        {
            return Err(r.stop(Problem::TableOutOfFile {
                table_offset,
                table_len,
                limit,
            }));
        }
        let sparse = Sparse {
            entries,
            block_size,
            bitmap_len: bitmap_size(bs),
            table_offset,
        };

        // Metadata regions, for the overlap checks.
        let mut regions = [(Region::Footer, 0u64, 0u64); 3 + LOCATOR_SLOTS];
        let mut nreg = 0;
        regions[nreg] = (Region::FooterCopy, 0, FOOTER_SIZE as u64);
        nreg += 1;
        regions[nreg] = (
            Region::DynamicHeader,
            data_offset,
            data_offset + HEADER_SIZE as u64,
        );
        nreg += 1;
        regions[nreg] = (Region::Bat, table_offset, table_offset + table_len);
        nreg += 1;
        if kind == DiskType::Differencing {
            for (slot, loc) in header.locators.iter().enumerate() {
                if loc.code == LocatorCode::None {
                    continue;
                }
                let space = loc.space_bytes();
                let end = loc.data_offset.checked_add(u64::from(loc.data_length));
                if u64::from(loc.data_length) > space || end.is_none_or(|e| e > limit) {
                    r.fatal(Problem::LocatorOutOfRange {
                        slot: slot as u8,
                        data_offset: loc.data_offset,
                        data_length: loc.data_length,
                        space,
                        limit,
                    });
                    continue;
                }
                if crate::resolve::hint_rank(loc.code).is_some()
                    && loc.data_length > MAX_LOCATOR_LEN
                {
                    r.fatal(Problem::LocatorTooLong {
                        slot: slot as u8,
                        data_length: loc.data_length,
                    });
                }
                // One region per slot: there is always room.
                if let Some(region) = regions.get_mut(nreg) {
                    *region = (
                        Region::Locator(slot as u8),
                        loc.data_offset,
                        loc.data_offset + u64::from(loc.data_length),
                    );
                    nreg += 1;
                }
            }
        }
        let regions = regions.get(..nreg).unwrap_or_default();
        let mut rest = regions;
        while let Some((a, later)) = rest.split_first() {
            for b in later {
                if overlaps((a.1, a.2), (b.1, b.2)) {
                    r.fatal(Problem::MetadataOverlap {
                        first: a.0,
                        second: b.0,
                    });
                }
            }
            rest = later;
        }
        let metadata_end = regions
            .iter()
            .map(|g| g.2)
            .max()
            .unwrap_or(0)
            .next_multiple_of(SECTOR_SIZE);

        // The table storage (layout in `storage`): the BAT, scratch of the
        // same length for sorting blocks by offset, the fully-present marks
        // (none set yet) and the bitmap cache (empty).
        let image_bitmap_sectors = u64::from(entries) * (sparse.bitmap_len / SECTOR_SIZE);
        let cache_slots = u64::try_from(options.bitmap_cache_slots)
            .unwrap_or(u64::MAX)
            .min(image_bitmap_sectors)
            .max(1);
        let cache_slots = usize::try_from(cache_slots).unwrap_or(1);
        let words = table_words(entries, cache_slots);
        let mut table = tables.table(words)?;
        let available = table.as_ref().len();
        let Some(storage) = table.as_mut().get_mut(..words) else {
            return Err(Error::StorageTooSmall {
                needed: words,
                available,
            });
        };
        // `words` covers every part: the checked splits never fall short.
        let (bat, rest) = storage
            .split_at_mut_checked(entries as usize)
            .unwrap_or_default();
        let (scratch, rest) = rest
            .split_at_mut_checked(entries as usize)
            .unwrap_or_default();
        let (marks, cache) = rest
            .split_at_mut_checked(marks_len(entries))
            .unwrap_or_default();
        marks.fill(0);
        for slot in cache.chunks_exact_mut(BITMAP_SLOT_WORDS).take(cache_slots) {
            slot[SLOT_BLOCK] = SLOT_EMPTY;
            slot[SLOT_INDEX] = 0;
        }
        layer.cache_slots = cache_slots;
        let mut buf = [0u8; 4096];
        let mut offset = table_offset;
        for words in bat.chunks_mut(buf.len() / 4) {
            let bytes = buf.get_mut(..words.len() * 4).unwrap_or(&mut []);
            if layer.read(offset, bytes).is_err() {
                return Err(layer.take_fault());
            }
            words_from_be(bytes, words);
            offset += bytes.len() as u64;
        }

        // Blocks: inside the file, clear of metadata, not overlapping.
        let span = sparse.span();
        let mut allocated = 0usize;
        let mut block_end_max = metadata_end;
        for (i, &sector) in bat.iter().enumerate() {
            if sector == BAT_UNALLOCATED {
                continue;
            }
            let start = u64::from(sector) * SECTOR_SIZE;
            let end = start + span;
            let block = i as u32;
            if end > limit {
                r.fatal(Problem::BlockOutOfFile {
                    block,
                    sector,
                    limit,
                });
                continue;
            }
            let mut clear = true;
            for g in regions {
                if overlaps((start, end), (g.1, g.2)) {
                    r.fatal(Problem::BlockOverlapsMetadata {
                        block,
                        sector,
                        region: g.0,
                    });
                    clear = false;
                }
            }
            if clear {
                // At most one per BAT entry: `scratch` has room.
                if let Some(slot) = scratch.get_mut(allocated) {
                    *slot = block;
                }
                allocated += 1;
                block_end_max = block_end_max.max(end);
            }
        }
        let sorted = scratch.get_mut(..allocated).unwrap_or_default();
        sort_by_sector(sorted, bat);
        // The previous block: number, sector, end.
        let mut prev: Option<(u32, u32, u64)> = None;
        for &i in sorted.iter() {
            let sector = bat.get(i as usize).copied().unwrap_or(0);
            let start = u64::from(sector) * SECTOR_SIZE;
            if let Some((p, p_sector, p_end)) = prev {
                if start < p_end {
                    r.fatal(Problem::BlocksOverlap {
                        first: p,
                        second: i,
                        first_sector: p_sector,
                        second_sector: sector,
                    });
                    continue;
                }
            }
            prev = Some((i, sector, start + span));
        }
        r.summary.allocated_blocks = allocated as u32;
        let used = metadata_end.saturating_add(allocated as u64 * span);
        r.summary.leaked_bytes = limit.saturating_sub(used);
        layer.tail_footer_missing = !tail_ok;

        // Blocks start on sector boundaries (BAT entries count sectors).
        layer.next_alloc =
            if tail_ok { limit } else { block_end_max }.next_multiple_of(SECTOR_SIZE);
        layer.truncate_before_alloc = !tail_ok && len > layer.next_alloc;
        if layer.next_alloc < metadata_end {
            layer.next_alloc = metadata_end;
        }
        layer.metadata_end = metadata_end;
        layer.sparse = Some(sparse);
        layer.table = Some(table);
        match r.first_fatal {
            Some(p) => Err(Error::Malformed(p)),
            None => Ok(()),
        }
    }

    /// Records `e` as the error of the failing step.
    #[cold]
    #[inline(never)]
    pub fn fail(&mut self, e: Error) -> Failed {
        self.fault = Some(e);
        Failed
    }

    /// Takes the error this layer recorded.
    pub fn take_fault(&mut self) -> Error {
        take_fault(core::slice::from_mut(self))
    }

    /// Records a device failure; the one place its error becomes an
    /// [`Error`].
    #[cold]
    #[inline(never)]
    fn device_failed(&mut self, e: IoError) -> Failed {
        self.fail(Error::Io(e))
    }

    /// Reads the device.
    #[inline(never)]
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Step {
        self.dev
            .read_at(offset, buf)
            .map_err(|e| self.device_failed(e))
    }

    /// Writes the device.
    #[inline(never)]
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Step {
        self.dev
            .write_at(offset, data)
            .map_err(|e| self.device_failed(e))
    }

    /// Flushes the device.
    #[inline(never)]
    pub fn flush_dev(&mut self) -> Step {
        self.dev.flush().map_err(|e| self.device_failed(e))
    }

    /// Truncates or grows the device.
    pub fn set_dev_len(&mut self, len: u64) -> Step {
        self.dev.set_len(len).map_err(|e| self.device_failed(e))
    }

    /// Fails an operation that needs a dynamic or differencing image.
    #[cold]
    #[inline(never)]
    fn not_sparse(&mut self) -> Failed {
        self.fail(Error::WrongDiskType { found: self.kind })
    }

    /// The BAT (empty for fixed images).
    pub fn bat(&self) -> &[u32] {
        match (&self.table, &self.sparse) {
            (Some(t), Some(s)) => t.as_ref().get(..s.entries as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    fn bat_mut(&mut self) -> &mut [u32] {
        match (&mut self.table, &self.sparse) {
            (Some(t), Some(s)) => t.as_mut().get_mut(..s.entries as usize).unwrap_or(&mut []),
            _ => &mut [],
        }
    }

    /// BAT and the sorting scratch of the same length.
    pub fn bat_and_scratch(&mut self) -> (&mut [u32], &mut [u32]) {
        match (&mut self.table, &self.sparse) {
            (Some(t), Some(s)) => {
                let n = s.entries as usize;
                match t.as_mut().get_mut(..2 * n) {
                    Some(w) => w.split_at_mut(n),
                    None => (&mut [], &mut []),
                }
            }
            _ => (&mut [], &mut []),
        }
    }

    /// Byte offset of block `block`'s bitmap, if allocated.
    pub fn block_base(&self, block: u64) -> Option<u64> {
        let e = *self.bat().get(usize::try_from(block).ok()?)?;
        (e != BAT_UNALLOCATED).then(|| u64::from(e) * SECTOR_SIZE)
    }

    /// Number of allocated blocks.
    pub fn allocated_blocks(&self) -> u32 {
        self.bat().iter().filter(|&&e| e != BAT_UNALLOCATED).count() as u32
    }

    /// The whole table storage (empty for fixed images).
    fn words(&self) -> &[u32] {
        match &self.table {
            Some(t) => t.as_ref(),
            None => &[],
        }
    }

    fn words_mut(&mut self) -> &mut [u32] {
        match &mut self.table {
            Some(t) => t.as_mut(),
            None => &mut [],
        }
    }

    fn entries(&self) -> u32 {
        self.sparse.map_or(0, |s| s.entries)
    }

    /// Word of the table storage holding the fully-present mark of `block`
    /// (`None` past the BAT), and the mark's bit in it.
    fn mark_of(&self, block: u32) -> Option<(usize, u32)> {
        let entries = self.entries();
        (block < entries).then(|| {
            (
                2 * entries as usize + block as usize / 32,
                1 << (block % 32),
            )
        })
    }

    /// Whether every sector of `block` is known to be present, so that its
    /// sector bitmap need not be read. The mark describes the bitmap as
    /// this layer sees it (the device's copy with the queued bit updates).
    #[inline(never)]
    fn is_full(&self, block: u32) -> bool {
        self.mark_of(block)
            .and_then(|(at, bit)| Some(self.words().get(at)? & bit != 0))
            .unwrap_or(false)
    }

    fn set_full(&mut self, block: u32, full: bool) {
        let Some((at, bit)) = self.mark_of(block) else {
            return;
        };
        if let Some(w) = self.words_mut().get_mut(at) {
            if full {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// Word offset of the cache slot where bitmap sector `index` of `block`
    /// goes (direct-mapped: each bitmap sector of the image has one slot).
    /// The sector's number in the image, folded with how many times the
    /// slots wrapped below it: a cache as large as the image maps one
    /// sector per slot, and a smaller one spreads strided accesses (every
    /// other block, say) over all its slots.
    #[inline(never)]
    fn slot_at(&self, block: u32, index: u64) -> usize {
        let entries = self.entries();
        let bitmap_sectors = self.sparse.map_or(1, |s| s.bitmap_len / SECTOR_SIZE);
        let key = u64::from(block) * bitmap_sectors + index;
        let slots = self.cache_slots.max(1) as u64;
        let slot = (key ^ (key / slots)) % slots;
        2 * entries as usize + marks_len(entries) + slot as usize * BITMAP_SLOT_WORDS
    }

    /// The block and index words of the slot at `at`.
    fn slot_tag(&self, at: usize) -> (u32, u32) {
        match self.words().get(at..at + SLOT_BITS) {
            Some(tag) => (tag[SLOT_BLOCK], tag[SLOT_INDEX]),
            None => (SLOT_EMPTY, 0),
        }
    }

    fn set_slot_tag(&mut self, at: usize, block: u32, index: u32) {
        if let Some(tag) = self.words_mut().get_mut(at..at + SLOT_BITS) {
            tag[SLOT_BLOCK] = block;
            tag[SLOT_INDEX] = index;
        }
    }

    /// The bits of the slot at `at` (`None` if the storage is too short:
    /// [`Layer::slot_missing`] reports it).
    #[inline(never)]
    fn slot_bits(&self, at: usize) -> Option<&SectorBits> {
        self.words()
            .get(at + SLOT_BITS..at + BITMAP_SLOT_WORDS)
            .and_then(|w| w.try_into().ok())
    }

    #[inline(never)]
    fn slot_bits_mut(&mut self, at: usize) -> Option<&mut SectorBits> {
        self.words_mut()
            .get_mut(at + SLOT_BITS..at + BITMAP_SLOT_WORDS)
            .and_then(|w| w.try_into().ok())
    }

    /// Fails for want of the storage of the slot at `at`.
    #[cold]
    #[inline(never)]
    fn slot_missing(&mut self, at: usize) -> Failed {
        let available = self.words().len();
        self.fail(Error::StorageTooSmall {
            needed: at + BITMAP_SLOT_WORDS,
            available,
        })
    }

    /// Gives the slot at `at` to bitmap sector `index` of `block`, clean,
    /// holding `bytes`. A dirty occupant is written first, with everything
    /// else queued (`sync`), so no update is lost.
    fn fill_slot(&mut self, at: usize, block: u32, index: u32, bytes: &SectorBytes) -> Step {
        if self.slot_tag(at).1 & SLOT_DIRTY != 0 {
            self.sync()?;
        }
        let Some(bits) = self.slot_bits_mut(at) else {
            return Err(self.slot_missing(at));
        };
        words_from_be(bytes, bits);
        self.set_slot_tag(at, block, index);
        Ok(())
    }

    /// The slot holding bitmap sector `index` of `block`, read from the
    /// device on a miss. A block whose only bitmap sector reads back with
    /// every sector present is marked fully present.
    fn slot_of(&mut self, block: u32, index: u64) -> Step<usize> {
        let Some(sparse) = self.sparse else {
            return Err(self.not_sparse());
        };
        let at = self.slot_at(block, index);
        let (tag_block, tag_index) = self.slot_tag(at);
        if tag_block == block && u64::from(tag_index & !SLOT_DIRTY) == index {
            return Ok(at);
        }
        let (Some(base), Ok(index32)) = (self.block_base(u64::from(block)), u32::try_from(index))
        else {
            return Err(self.fail(Error::Io(IoError::OutOfBounds {
                offset: u64::from(block),
                len: 0,
                device_len: 0,
            })));
        };
        let mut bytes = [0u8; SECTOR_SIZE as usize];
        self.read(base + index * SECTOR_SIZE, &mut bytes)?;
        self.fill_slot(at, block, index32, &bytes)?;
        if sparse.bitmap_len == SECTOR_SIZE {
            let sectors = sparse.sectors_per_block() as usize;
            let Some(bits) = self.slot_bits(at) else {
                return Err(self.slot_missing(at));
            };
            let full = run_end(bits, 0, sectors, true) == sectors;
            self.set_full(block, full);
        }
        Ok(at)
    }

    /// Length of the run of sectors starting at `sector` (within block
    /// `block`, before `end`) whose bitmap bits all equal the first one's;
    /// returns (present, run end). A block marked fully present is
    /// answered without its bitmap.
    pub fn run(&mut self, block: u32, sector: u64, end: u64) -> Step<(bool, u64)> {
        if sector < end && self.is_full(block) {
            return Ok((true, end));
        }
        let mut k = sector;
        let mut value = None;
        while k < end {
            let index = k / BITS_PER_BITMAP_SECTOR;
            let at = self.slot_of(block, index)?;
            let Some(bits) = self.slot_bits(at) else {
                return Err(self.slot_missing(at));
            };
            let first = (k % BITS_PER_BITMAP_SECTOR) as usize;
            let stop =
                ((end - index * BITS_PER_BITMAP_SECTOR).min(BITS_PER_BITMAP_SECTOR)) as usize;
            let v = *value.get_or_insert(bit(bits, first));
            let e = run_end(bits, first, stop, v);
            k = index * BITS_PER_BITMAP_SECTOR + e as u64;
            if e < stop {
                break;
            }
        }
        Ok((value.unwrap_or(false), k.min(end)))
    }

    /// Marks sectors `[first, end)` of `block` present in the bitmap (queued
    /// until the next sync). Changing a block's bitmap recomputes its
    /// fully-present mark; a marked block has every bit set already.
    pub fn set_bits(&mut self, block: u32, first: u64, end: u64) -> Step {
        if self.is_full(block) {
            return Ok(());
        }
        let Some(sparse) = self.sparse else {
            return Err(self.not_sparse());
        };
        let mut k = first;
        while k < end {
            let index = k / BITS_PER_BITMAP_SECTOR;
            let at = self.slot_of(block, index)?;
            let start = (k % BITS_PER_BITMAP_SECTOR) as usize;
            let stop =
                ((end - index * BITS_PER_BITMAP_SECTOR).min(BITS_PER_BITMAP_SECTOR)) as usize;
            let Some(bits) = self.slot_bits_mut(at) else {
                return Err(self.slot_missing(at));
            };
            if set_run(bits, start, stop) {
                let full = sparse.bitmap_len == SECTOR_SIZE && {
                    let sectors = sparse.sectors_per_block() as usize;
                    run_end(bits, 0, sectors, true) == sectors
                };
                let (_, tag_index) = self.slot_tag(at);
                if tag_index & SLOT_DIRTY == 0 {
                    self.set_slot_tag(at, block, tag_index | SLOT_DIRTY);
                    self.dirty_slots += 1;
                }
                self.set_full(block, full);
            }
            k = index * BITS_PER_BITMAP_SECTOR + stop as u64;
        }
        Ok(())
    }

    fn mark_bat_dirty(&mut self, block: u32) -> Step {
        let sector = block / 128;
        if self.dirty_bat().contains(&sector) {
            return Ok(());
        }
        if self.dirty_bat_len == DIRTY_BAT_MAX {
            self.sync()?;
        }
        // A sync empties the queue: there is room.
        if let Some(slot) = self.dirty_bat.get_mut(self.dirty_bat_len) {
            *slot = sector;
            self.dirty_bat_len += 1;
        }
        Ok(())
    }

    /// The BAT sectors queued for the next sync.
    fn dirty_bat(&self) -> &[u32] {
        self.dirty_bat.get(..self.dirty_bat_len).unwrap_or_default()
    }

    /// Sets a BAT entry in memory; written at the next sync.
    pub fn set_bat(&mut self, block: u32, entry: u32) -> Step {
        // Queue first: queueing may sync, which must not see the new entry
        // before its block is complete.
        self.mark_bat_dirty(block)?;
        if let Some(e) = self.bat_mut().get_mut(block as usize) {
            *e = entry;
        }
        self.forget_block(block);
        Ok(())
    }

    /// Drops cached bitmap sectors of a block (freed or moved), queued bit
    /// updates included, and its fully-present mark.
    pub fn forget_block(&mut self, block: u32) {
        self.set_full(block, false);
        let bitmap_sectors = self.sparse.map_or(0, |s| s.bitmap_len / SECTOR_SIZE);
        for index in 0..bitmap_sectors {
            let at = self.slot_at(block, index);
            let (tag_block, tag_index) = self.slot_tag(at);
            if tag_block == block && u64::from(tag_index & !SLOT_DIRTY) == index {
                if tag_index & SLOT_DIRTY != 0 {
                    self.dirty_slots = self.dirty_slots.saturating_sub(1);
                }
                self.set_slot_tag(at, SLOT_EMPTY, 0);
            }
        }
    }

    /// Whether metadata updates are queued.
    pub fn has_pending(&self) -> bool {
        self.dirty_bat_len > 0 || self.dirty_slots > 0
    }

    /// Writes queued metadata in crash-safe order: flush (data durable),
    /// bitmaps and BAT sectors, flush.
    pub fn sync(&mut self) -> Step {
        if !self.has_pending() {
            return Ok(());
        }
        self.flush_dev()?;
        let entries = self.entries();
        let cache_at = 2 * entries as usize + marks_len(entries);
        // One sector buffer for the bitmaps and the BAT sectors.
        let mut bytes = [0u8; SECTOR_SIZE as usize];
        for slot in 0..self.cache_slots {
            if self.dirty_slots == 0 {
                break;
            }
            let at = cache_at + slot * BITMAP_SLOT_WORDS;
            let (block, tag_index) = self.slot_tag(at);
            if tag_index & SLOT_DIRTY == 0 {
                continue;
            }
            let index = tag_index & !SLOT_DIRTY;
            let Some(bits) = self.slot_bits(at) else {
                return Err(self.slot_missing(at));
            };
            words_to_be(bits, &mut bytes);
            if let Some(base) = self.block_base(u64::from(block)) {
                self.write(base + u64::from(index) * SECTOR_SIZE, &bytes)?;
            }
            self.set_slot_tag(at, block, index);
            self.dirty_slots -= 1;
        }
        let table_offset = match self.sparse {
            Some(s) => s.table_offset,
            None => 0,
        };
        let dirty_bat = self.dirty_bat;
        for &sector in dirty_bat.get(..self.dirty_bat_len).unwrap_or_default() {
            let sector = sector as usize;
            let bat = self.bat();
            let first = sector * 128;
            let last = (first + 128).min(bat.len());
            let Some(entries) = bat.get(first..last) else {
                continue;
            };
            words_to_be(entries, &mut bytes);
            // At most 128 entries: the sector holds them.
            let n = entries.len() * 4;
            let data = bytes.get(..n).unwrap_or_default();
            self.write(table_offset + first as u64 * 4, data)?;
        }
        self.dirty_bat_len = 0;
        self.flush_dev()?;
        Ok(())
    }

    /// Records that the file now ends with a footer at `end` (after
    /// compaction).
    pub fn set_end(&mut self, end: u64) {
        self.next_alloc = end;
        self.truncate_before_alloc = false;
    }
    /// Writes the footer back at the end of a file opened without one:
    /// unreferenced bytes past the last block are cut first.
    pub fn restore_tail(&mut self) -> Step {
        if !self.tail_footer_missing || !self.writable {
            return Ok(());
        }
        self.sync()?;
        self.set_dev_len(self.next_alloc)?;
        self.write(self.next_alloc, &self.footer.to_bytes())?;
        self.flush_dev()?;
        self.tail_footer_missing = false;
        self.truncate_before_alloc = false;
        Ok(())
    }

    /// Places a new block for `block` at the end of the file: footer moved
    /// first, then the bitmap initialised (all ones when `present`), then
    /// the BAT entry queued for the next sync.
    ///
    /// Crash invariant (module documentation, point 2 and 3): the block is
    /// unreferenced until a sync writes its BAT entry after a device flush,
    /// so a cut anywhere in here or before that sync leaves leaked space and
    /// the previous, valid image.
    pub fn allocate(&mut self, block: u32, present: bool) -> Step<u64> {
        let Some(sparse) = self.sparse else {
            return Err(self.not_sparse());
        };
        let base = self.next_alloc;
        let new_end = base + sparse.span();
        if new_end / SECTOR_SIZE > u64::from(u32::MAX) {
            return Err(self.fail(Error::Io(IoError::CapacityExceeded {
                requested: new_end,
                capacity: u64::from(u32::MAX) * SECTOR_SIZE,
            })));
        }
        if self.truncate_before_alloc {
            // Unreferenced bytes past the last block: cut them so that the
            // new block's data area reads as zeros.
            self.set_dev_len(base)?;
            self.truncate_before_alloc = false;
        }
        self.tail_footer_missing = false;
        let footer = self.footer.to_bytes();
        self.write(new_end, &footer)?;
        let fill = if present { 0xFF } else { 0x00 };
        let chunk = [fill; SECTOR_SIZE as usize];
        let mut at = 0;
        while at < sparse.bitmap_len {
            // Zeros past the first sector are already there (fresh space);
            // the first sector held the old footer.
            if at > 0 && !present {
                break;
            }
            self.write(base + at, &chunk)?;
            at += SECTOR_SIZE;
        }
        self.next_alloc = new_end;
        self.set_bat(block, (base / SECTOR_SIZE) as u32)?;
        if present {
            self.set_full(block, true);
        } else {
            // Prime the cache with the bitmap sector just written.
            let at = self.slot_at(block, 0);
            self.fill_slot(at, block, 0, &chunk)?;
        }
        Ok(base)
    }
}

/// Reads big-endian words from `bytes`, four bytes each, as many as both
/// hold (the BAT and bitmap sectors on the device). Out of line: one copy
/// for the BAT load and the bitmap cache.
#[inline(never)]
fn words_from_be(bytes: &[u8], words: &mut [u32]) {
    for (w, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Writes `words` big-endian into `bytes`, as many as both hold; the
/// inverse of [`words_from_be`].
#[inline(never)]
fn words_to_be(words: &[u32], bytes: &mut [u8]) {
    for (b, w) in bytes.chunks_exact_mut(4).zip(words) {
        b.copy_from_slice(&w.to_be_bytes());
    }
}

/// One bitmap sector as cached: 128 words, each read big-endian from four
/// bytes, so the most significant bit of word 0 is sector 0.
type SectorBits = [u32; BITMAP_SECTOR_WORDS];
type SectorBytes = [u8; SECTOR_SIZE as usize];

/// Bit `i` of a bitmap sector.
fn bit(bits: &SectorBits, i: usize) -> bool {
    bits[i / 32] & (0x8000_0000 >> (i % 32)) != 0
}

/// End of the run of bits equal to `v` starting at `i`, before `end`
/// (`end` at most the sector's 4096 bits).
#[inline(never)]
fn run_end(bits: &SectorBits, i: usize, end: usize, v: bool) -> usize {
    let flip = if v { u32::MAX } else { 0 };
    let mut k = i;
    while k < end {
        let w = k / 32;
        // `end` is within the sector: the word is always there.
        let Some(&word) = bits.get(w) else { break };
        let differ = (word ^ flip) & (u32::MAX >> (k % 32));
        if differ != 0 {
            return (w * 32 + differ.leading_zeros() as usize).min(end);
        }
        k = (w + 1) * 32;
    }
    end
}

/// Sets bits `[start, end)`; returns whether any was clear.
fn set_run(bits: &mut SectorBits, start: usize, end: usize) -> bool {
    let mut changed = false;
    let mut k = start;
    while k < end {
        let w = k / 32;
        let from = (k % 32) as u32;
        let to = (end - w * 32).min(32) as u32;
        // Bits from..to counted from the most significant.
        let below = u32::MAX.checked_shr(to).unwrap_or(0);
        let mask = (u32::MAX >> from) & !below;
        if bits[w] & mask != mask {
            bits[w] |= mask;
            changed = true;
        }
        k = (w + 1) * 32;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create_dynamic, CreateOptions};
    use crate::device::SliceDevice;
    use crate::format::Uuid;
    use crate::storage::SlicePool;

    #[test]
    fn a_new_block_entry_drops_the_fully_present_mark() {
        // 16 blocks of 8 sectors, one bitmap cache slot.
        let mut mem = std::vec![0u8; 256 << 10];
        let mut dev = SliceDevice::empty(&mut mem);
        let mut create = CreateOptions::new(64 << 10, Uuid([3; 16]), 0);
        create.block_size = 4096;
        create_dynamic(&mut dev, &create).unwrap();
        let mut words = std::vec![0u32; table_words(16, 1)];
        let options = OpenOptions {
            writable: true,
            bitmap_cache_slots: 1,
            ..OpenOptions::default()
        };
        let mut layer = Layer::inspect(
            dev,
            &options,
            true,
            &mut SlicePool::new(&mut words),
            &mut |_| {},
            &mut Summary::default(),
        )
        .unwrap();
        layer.allocate(0, true).unwrap();
        let empty = layer.allocate(1, false).unwrap();
        assert!(layer.is_full(0));
        assert!(!layer.is_full(1));
        assert_eq!(layer.run(0, 0, 8).unwrap(), (true, 8));
        assert_eq!(layer.run(1, 0, 8).unwrap(), (false, 8));

        // Block 1 moves into block 0's entry (its bitmap says: no sector
        // present); the mark of the old entry must not answer for it.
        layer.set_bat(1, BAT_UNALLOCATED).unwrap();
        layer.set_bat(0, (empty / SECTOR_SIZE) as u32).unwrap();
        assert!(!layer.is_full(0));
        assert_eq!(layer.run(0, 0, 8).unwrap(), (false, 8));

        // Bits set one run at a time: marked once the last one is set.
        layer.set_bits(0, 0, 3).unwrap();
        assert!(!layer.is_full(0));
        assert_eq!(layer.run(0, 0, 8).unwrap(), (true, 3));
        assert_eq!(layer.run(0, 3, 8).unwrap(), (false, 8));
        layer.set_bits(0, 3, 8).unwrap();
        assert!(layer.is_full(0));
        assert_eq!(layer.run(0, 2, 8).unwrap(), (true, 8));
        // Queued, and written by the next sync.
        assert!(layer.has_pending());
        layer.sync().unwrap();
        assert!(!layer.has_pending());
        let mut bitmap = [0u8; 1];
        layer.dev.read_at(empty, &mut bitmap).unwrap();
        assert_eq!(bitmap, [0xFF]);
    }

    #[test]
    fn every_other_block_spreads_over_all_slots() {
        // 64 blocks of 8 sectors, 8 slots: partial writes to blocks 0, 2,
        // .., 14 each leave a dirty bitmap; none may push out another (that
        // would cost a sync: two device flushes).
        let mut mem = std::vec![0u8; 512 << 10];
        let mut dev = SliceDevice::empty(&mut mem);
        let mut create = CreateOptions::new(256 << 10, Uuid([4; 16]), 0);
        create.block_size = 4096;
        create_dynamic(&mut dev, &create).unwrap();
        let mut words = std::vec![0u32; table_words(64, 8)];
        let options = OpenOptions {
            writable: true,
            bitmap_cache_slots: 8,
            ..OpenOptions::default()
        };
        let mut layer = Layer::inspect(
            dev,
            &options,
            true,
            &mut SlicePool::new(&mut words),
            &mut |_| {},
            &mut Summary::default(),
        )
        .unwrap();
        for block in (0..16).step_by(2) {
            layer.allocate(block, false).unwrap();
            layer.set_bits(block, 1, 2).unwrap();
        }
        assert_eq!(layer.dirty_slots, 8);
        for block in (0..16).step_by(2) {
            assert_eq!(layer.run(block, 0, 8).unwrap(), (false, 1));
            assert_eq!(layer.run(block, 1, 8).unwrap(), (true, 2));
        }
        assert_eq!(layer.dirty_slots, 8);
    }

    #[test]
    fn bit_runs_follow_the_bitmap_bit_order() {
        // Byte 0's most significant bit is sector 0 (read big-endian into
        // words, so word 0's most significant bit).
        let mut bits: SectorBits = [0; BITMAP_SECTOR_WORDS];
        bits[0] = u32::from_be_bytes([0b1110_0000, 0, 0, 0]);
        assert!(bit(&bits, 0) && bit(&bits, 2) && !bit(&bits, 3));
        assert_eq!(run_end(&bits, 0, 4096, true), 3);
        assert_eq!(run_end(&bits, 3, 4096, false), 4096);
        assert_eq!(run_end(&bits, 3, 40, false), 40);
        assert!(set_run(&mut bits, 31, 65));
        assert!(!set_run(&mut bits, 40, 64));
        assert_eq!(bits[0], 0xE000_0001);
        assert_eq!(bits[1], u32::MAX);
        assert_eq!(bits[2], 0x8000_0000);
        assert_eq!(run_end(&bits, 31, 4096, true), 65);
        assert!(set_run(&mut bits, 4064, 4096));
        assert_eq!(bits[127], u32::MAX);
        assert_eq!(run_end(&bits, 4064, 4096, true), 4096);
    }

    #[test]
    fn blocks_sort_by_sector_then_block_number() {
        // Sectors in every order, with ties, over many table sizes.
        let mut seed = 0x2545_f491_u32;
        for n in 0..200u32 {
            let bat: std::vec::Vec<u32> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed % (n / 2 + 1)
                })
                .collect();
            let mut blocks: std::vec::Vec<u32> = (0..n).rev().collect();
            sort_by_sector(&mut blocks, &bat);
            for pair in blocks.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                assert!(
                    (bat[a as usize], a) < (bat[b as usize], b),
                    "{n} blocks: block {a} (sector {}) before block {b} (sector {})",
                    bat[a as usize],
                    bat[b as usize]
                );
            }
            assert_eq!(blocks.len(), n as usize, "no block lost");
        }
    }
}
