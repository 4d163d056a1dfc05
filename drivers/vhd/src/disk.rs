//! The virtual disk seen by a guest: an image and its chain of parents,
//! read and written at any byte offset, plus the maintenance operations
//! (zeroing, commit, compaction) and [`Info`].

use crate::device::BlockDevice;
use crate::error::{Error, IoError, Problem};
use crate::format::{
    DiskType, Footer, Geometry, Uuid, BAT_UNALLOCATED, FOOTER_SIZE, LOCATOR_SLOTS,
    PARENT_NAME_UNITS, SECTOR_SIZE,
};
use crate::layer::{
    sort_by_sector, take_fault, Failed, Layer, OpenOptions, Step, Summary, MAX_LOCATOR_LEN,
};
use crate::resolve::{decode_locator, hint_rank, LocatorHint, ParentRequest, ParentResolver};
use crate::storage::TableStorage;

/// An opened VHD image with its parents (at most `N` images in the chain).
///
/// Reads and writes never allocate. Writes may be queued: call
/// [`Disk::flush`] before dropping the disk to make them durable.
///
/// The value holds each image's headers inline (about 1 KiB per image, `N`
/// images), plus the devices and table storage handles; BAT caches and
/// bitmap caches live in the table storage ([`crate::storage`]).
/// Integrators without a heap keep it in a static or a long-lived frame.
pub struct Disk<D, B, const N: usize = 8> {
    layers: heapless::Vec<Layer<D, B>, N>,
    size: u64,
    writable: bool,
}

/// Description of one image, as shown by `info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// Size seen by the guest, in bytes.
    pub virtual_size: u64,
    /// The footer's current size field.
    pub current_size: u64,
    /// The footer's original size field.
    pub original_size: u64,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Block size (dynamic and differencing images).
    pub block_size: Option<u32>,
    /// Number of BAT entries (dynamic and differencing images).
    pub max_table_entries: Option<u32>,
    /// Number of allocated blocks.
    pub allocated_blocks: u32,
    /// Creator application.
    pub creator_app: [u8; 4],
    /// Creator version.
    pub creator_version: u32,
    /// Creator host OS.
    pub creator_host_os: [u8; 4],
    /// Creation time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// The image's UUID.
    pub uuid: Uuid,
    /// Saved-state flag.
    pub saved_state: bool,
    /// Parent UUID (differencing images).
    pub parent_uuid: Option<Uuid>,
    /// Parent modification time (differencing images).
    pub parent_timestamp: Option<u32>,
    /// Parent name, UTF-16 units; the first `parent_name_len` are valid.
    pub parent_name: [u16; PARENT_NAME_UNITS],
    /// Number of valid units in `parent_name`.
    pub parent_name_len: usize,
}

impl Info {
    /// The parent name decoded (invalid UTF-16 becomes U+FFFD).
    pub fn parent_name_chars(&self) -> impl Iterator<Item = char> + '_ {
        char::decode_utf16(self.parent_name[..self.parent_name_len].iter().copied())
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
    }
}

/// Result of [`Disk::compact`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Blocks freed because they held nothing (zeros, or no sector of a
    /// differencing image).
    pub dropped_blocks: u32,
    /// Blocks moved towards the start of the file.
    pub moved_blocks: u32,
    /// File length before.
    pub old_len: u64,
    /// File length after.
    pub new_len: u64,
}

/// Result of [`Disk::commit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Sectors copied into the parent.
    pub sectors: u64,
}

/// Reads the footer of a device the way open does, without validation;
/// used to compare a candidate parent's UUID.
fn peek_uuid<D: BlockDevice>(dev: &mut D) -> Option<Uuid> {
    let len = dev.len().ok()?;
    if len < FOOTER_SIZE as u64 {
        return None;
    }
    let mut raw = [0u8; FOOTER_SIZE];
    for at in [len - FOOTER_SIZE as u64, len - 511, 0] {
        raw.fill(0);
        let n = if at == len - 511 { 511 } else { FOOTER_SIZE };
        if dev.read_at(at, &mut raw[..n]).is_ok() {
            if let Some(uuid) = Footer::uuid_of(&raw) {
                return Some(uuid);
            }
        }
    }
    None
}

fn info_of<D, B: AsRef<[u32]> + AsMut<[u32]>>(l: &Layer<D, B>) -> Info
where
    D: BlockDevice,
{
    let f = &l.footer;
    let header = l.header.as_ref();
    let diff = l.kind == DiskType::Differencing;
    let mut parent_name = [0u16; PARENT_NAME_UNITS];
    let mut parent_name_len = 0;
    if let (true, Some(h)) = (diff, &header) {
        let units = h.parent_name_units();
        parent_name[..units.len()].copy_from_slice(units);
        parent_name_len = units.len();
    }
    Info {
        disk_type: l.kind,
        virtual_size: l.size,
        current_size: f.current_size,
        original_size: f.original_size,
        geometry: f.geometry,
        block_size: header.map(|h| h.block_size),
        max_table_entries: header.map(|h| h.max_table_entries),
        allocated_blocks: l.allocated_blocks(),
        creator_app: f.creator_app,
        creator_version: f.creator_version,
        creator_host_os: f.creator_host_os,
        timestamp: f.timestamp,
        uuid: f.uuid,
        saved_state: f.saved_state != 0,
        parent_uuid: header.filter(|_| diff).map(|h| h.parent_uuid),
        parent_timestamp: header.filter(|_| diff).map(|h| h.parent_timestamp),
        parent_name,
        parent_name_len,
    }
}

impl<D: BlockDevice, B: AsRef<[u32]> + AsMut<[u32]>, const N: usize> Disk<D, B, N> {
    /// Opens the image on `dev` and, for a differencing image, its parents
    /// through `resolver` (each parent's UUID is checked, a UUID seen twice
    /// is a cycle, more than `N` images is refused). BAT caches come from
    /// `tables`.
    pub fn open<T, R>(
        dev: D,
        options: &OpenOptions,
        tables: &mut T,
        resolver: &mut R,
    ) -> Result<Self, Error>
    where
        T: TableStorage<B> + ?Sized,
        R: ParentResolver<D> + ?Sized,
    {
        let mut layers: heapless::Vec<Layer<D, B>, N> = heapless::Vec::new();
        // One pass per image, top first: the top image opens as asked, the
        // parents as `writable_parents` asks, each checked against the UUID
        // its child records.
        let mut dev = dev;
        let mut want = None;
        // Counts of the problems found, which open does not report.
        let mut summary = Summary::default();
        loop {
            let writable = match want {
                None => options.writable,
                Some(_) => options.writable_parents,
            };
            // Pushed blank and filled in its place: the layer is not
            // moved. The push fails only for a chain limit of 0 (the depth
            // check below stops the loop at `N`).
            let Some(layer) = push_blank(&mut layers, dev, writable) else {
                return Err(Error::ChainTooDeep { limit: N });
            };
            layer.inspect_in_place(options, tables, &mut |_| {}, &mut summary)?;
            let depth = layers.len();
            let Some(last) = layers.last() else { break };
            if let Some(expected) = want {
                if last.footer.uuid != expected {
                    return Err(Error::Malformed(Problem::ParentUuidMismatch {
                        expected,
                        found: last.footer.uuid,
                    }));
                }
            }
            let Some(header) = last
                .header
                .as_ref()
                .filter(|_| last.kind == DiskType::Differencing)
            else {
                break;
            };
            let parent_uuid = header.parent_uuid;
            if layers.iter().any(|l| l.footer.uuid == parent_uuid) {
                return Err(Error::ParentCycle { uuid: parent_uuid });
            }
            if depth == N {
                return Err(Error::ChainTooDeep { limit: N });
            }
            let Some(Layer {
                dev: child,
                header: Some(header),
                ..
            }) = layers.last_mut()
            else {
                break;
            };
            dev = find_parent(child, header, depth, resolver)?;
            want = Some(parent_uuid);
        }
        Ok(Disk {
            size: layers.first().map_or(0, |top| top.size),
            layers,
            writable: options.writable,
        })
    }

    /// Size of the virtual disk in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of images in the chain (1 for fixed and dynamic images).
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// The top image's type: what [`Disk::info`] says, without building
    /// the rest of the description.
    pub fn disk_type(&self) -> DiskType {
        self.layers[0].kind
    }

    /// Blocks allocated in the top image (0 for a fixed image): what
    /// [`Disk::info`] says, without building the rest of the description.
    pub fn allocated_blocks(&self) -> u32 {
        self.layers[0].allocated_blocks()
    }

    /// Description of the top image.
    pub fn info(&self) -> Info {
        // A disk always holds its top image (open pushes it first).
        info_of(&self.layers[0])
    }

    /// Description of image `index` of the chain (0 is the top).
    pub fn layer_info(&self, index: usize) -> Option<Info> {
        self.layers.get(index).map(info_of)
    }

    /// Gives back the devices, top first.
    pub fn into_devices(self) -> impl Iterator<Item = D> {
        self.layers.into_iter().map(|l| l.dev)
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<(), Error> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::OutOfRange {
                offset,
                len: len as u64,
                size: self.size,
            }),
        }
    }

    /// Reads `buf.len()` bytes at `offset`. Runs of sectors held by one
    /// image are read with one device read straight into `buf`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.check_range(offset, buf.len())?;
        read_chain(&mut self.layers, offset, buf).map_err(|Failed| take_fault(&mut self.layers))
    }

    /// Writes `data` at `offset`, allocating blocks as needed. Only the top
    /// image is written.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        self.check_range(offset, data.len())?;
        let (top, lower) = split(&mut self.layers)?;
        write_chain(top, lower, offset, data).map_err(|Failed| take_fault(&mut self.layers))
    }

    /// Makes every completed write durable, then writes queued metadata in
    /// the crash-safe order (see the `layer` module).
    pub fn flush(&mut self) -> Result<(), Error> {
        flush_chain(&mut self.layers).map_err(|Failed| take_fault(&mut self.layers))
    }

    /// The error a maintenance operation stopped with.
    fn stopped<T>(&mut self, result: Result<T, Stop>) -> Result<T, Error> {
        result.map_err(|stop| match stop {
            Stop::Failed => take_fault(&mut self.layers),
            Stop::Error(e) => e,
        })
    }

    /// Makes `[offset, offset + len)` read as zeros. Whole blocks of a
    /// dynamic image are freed (their space is reclaimed by
    /// [`Disk::compact`]); whole blocks of a differencing image are
    /// allocated with every sector present and no data written; the rest is
    /// written with zeros.
    pub fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        let result = self.zero_range(offset, len);
        self.stopped(result)
    }

    fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), Stop> {
        if !self.writable {
            return Err(Error::ReadOnly.into());
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.size)
            .ok_or(Error::OutOfRange {
                offset,
                len,
                size: self.size,
            })?;
        let mut pos = offset;
        while pos < end {
            let (top, _) = split(&mut self.layers)?;
            let (whole, n) = match top.sparse {
                Some(sp) => {
                    let (_, in_block) = sp.locate(pos);
                    let n = (sp.block_size - in_block).min(end - pos);
                    (in_block == 0 && n == sp.block_size, n)
                }
                None => (false, end - pos),
            };
            let block = top.sparse.map(|sp| sp.locate(pos).0).unwrap_or(0) as u32;
            let allocated = top.block_base(u64::from(block)).is_some();
            match (top.kind, whole) {
                (DiskType::Dynamic, true) => {
                    if allocated {
                        top.set_bat(block, BAT_UNALLOCATED)?;
                    }
                }
                (DiskType::Dynamic, false) if !allocated => {}
                (DiskType::Differencing, true) if !allocated => {
                    top.allocate(block, true)?;
                }
                _ => {
                    // Zeros from the stack: a constant buffer would take
                    // its size in every image's file.
                    let zeros = [0u8; 512];
                    let mut done = 0;
                    while done < n {
                        let m = (n - done).min(zeros.len() as u64);
                        let (top, lower) = split(&mut self.layers)?;
                        write_chain(top, lower, pos + done, &zeros[..m as usize])?;
                        done += m;
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Copies every sector the top (differencing) image holds into its
    /// parent, through `scratch` (at least 512 bytes; larger is faster).
    /// The parent must have been opened writable
    /// ([`OpenOptions::writable_parents`]); the top image is left unchanged.
    pub fn commit(&mut self, scratch: &mut [u8]) -> Result<CommitStats, Error> {
        let result = self.commit_top(scratch);
        self.stopped(result)
    }

    fn commit_top(&mut self, scratch: &mut [u8]) -> Result<CommitStats, Stop> {
        let chunk = scratch.len() / SECTOR_SIZE as usize * SECTOR_SIZE as usize;
        if chunk == 0 {
            return Err(Error::BufferTooSmall {
                needed: SECTOR_SIZE as usize,
                available: scratch.len(),
            }
            .into());
        }
        let (top, lower) = split(&mut self.layers)?;
        let Some((parent, below)) = lower
            .split_first_mut()
            .filter(|_| top.kind == DiskType::Differencing)
        else {
            return Err(Error::NoParent.into());
        };
        if !parent.writable {
            return Err(Error::ReadOnly.into());
        }
        let sp = top.sparse.ok_or(Error::NoParent)?;
        let spb = sp.sectors_per_block();
        let mut stats = CommitStats::default();
        for block in 0..sp.entries {
            let Some(base) = top.block_base(u64::from(block)) else {
                continue;
            };
            let vstart = u64::from(block) * sp.block_size;
            let sectors = spb.min(top.size.saturating_sub(vstart) / SECTOR_SIZE);
            let mut k = 0;
            while k < sectors {
                let (present, e) = top.run(block, k, sectors)?;
                if present {
                    let mut at = k * SECTOR_SIZE;
                    let stop = e * SECTOR_SIZE;
                    while at < stop {
                        let m = ((stop - at) as usize).min(chunk);
                        let buf = &mut scratch[..m];
                        top.read(base + sp.bitmap_len + at, buf)?;
                        write_chain(parent, below, vstart + at, buf)?;
                        at += m as u64;
                    }
                    stats.sectors += e - k;
                }
                k = e;
            }
        }
        if parent.has_pending() {
            parent.sync()?;
        } else {
            parent.flush_dev()?;
        }
        Ok(stats)
    }

    /// Frees blocks that hold nothing (all zeros in a dynamic image, no
    /// present sector in a differencing one), moves the last blocks into the
    /// holes and truncates the file. `scratch` (at least 512 bytes) is the
    /// copy buffer. Every step keeps the crash invariant.
    pub fn compact(&mut self, scratch: &mut [u8]) -> Result<CompactStats, Error> {
        let result = self.compact_top(scratch);
        self.stopped(result)
    }

    fn compact_top(&mut self, scratch: &mut [u8]) -> Result<CompactStats, Stop> {
        if !self.writable {
            return Err(Error::ReadOnly.into());
        }
        let chunk = scratch.len() / SECTOR_SIZE as usize * SECTOR_SIZE as usize;
        if chunk == 0 {
            return Err(Error::BufferTooSmall {
                needed: SECTOR_SIZE as usize,
                available: scratch.len(),
            }
            .into());
        }
        self.flush()?;
        let (top, _) = split(&mut self.layers)?;
        let sp = top.sparse.ok_or(Error::WrongDiskType { found: top.kind })?;
        let mut stats = CompactStats {
            old_len: top.dev.len()?,
            ..CompactStats::default()
        };
        let spb = sp.sectors_per_block();
        // 1. Free empty blocks.
        for block in 0..sp.entries {
            let Some(base) = top.block_base(u64::from(block)) else {
                continue;
            };
            let mut empty = true;
            let mut k = 0;
            while k < spb && empty {
                let (present, e) = top.run(block, k, spb)?;
                if present {
                    if top.kind == DiskType::Differencing {
                        empty = false;
                    } else {
                        let mut at = k * SECTOR_SIZE;
                        while at < e * SECTOR_SIZE && empty {
                            let m = ((e * SECTOR_SIZE - at) as usize).min(chunk);
                            top.read(base + sp.bitmap_len + at, &mut scratch[..m])?;
                            empty = scratch[..m].iter().all(|&b| b == 0);
                            at += m as u64;
                        }
                    }
                }
                k = e;
            }
            if empty {
                top.set_bat(block, BAT_UNALLOCATED)?;
                stats.dropped_blocks += 1;
            }
        }
        top.sync()?;

        // 2. Move the highest blocks into holes, lowest hole first. Targets
        // lie below every block not yet processed, so no target is the old
        // place of a moved block whose new BAT entry is still queued.
        let span = sp.span();
        let n = {
            let (bat, idx) = top.bat_and_scratch();
            let mut n = 0;
            for (i, &e) in bat.iter().enumerate() {
                if e != BAT_UNALLOCATED {
                    idx[n] = i as u32;
                    n += 1;
                }
            }
            sort_by_sector(&mut idx[..n], bat);
            n
        };
        let entry_at = |top: &mut Layer<D, B>, i: usize| -> (u32, u64) {
            let (bat, idx) = top.bat_and_scratch();
            let b = idx[i];
            (b, u64::from(bat[b as usize]) * SECTOR_SIZE)
        };
        let mut cursor = top.metadata_end;
        let (mut i, mut j) = (0usize, n);
        loop {
            while i < j {
                let (_, start) = entry_at(top, i);
                if start < cursor + span {
                    cursor = cursor.max(start + span);
                    i += 1;
                } else {
                    break;
                }
            }
            if i >= j {
                break;
            }
            j -= 1;
            let (block, old) = entry_at(top, j);
            let mut at = 0;
            while at < span {
                let m = ((span - at) as usize).min(chunk);
                top.read(old + at, &mut scratch[..m])?;
                top.write(cursor + at, &scratch[..m])?;
                at += m as u64;
            }
            top.set_bat(block, (cursor / SECTOR_SIZE) as u32)?;
            stats.moved_blocks += 1;
            cursor += span;
        }
        top.sync()?;

        // 3. Footer at the new end, then cut the file.
        let new_end = cursor.max(top.metadata_end);
        if new_end < top.next_alloc {
            let footer = top.footer.to_bytes();
            top.write(new_end, &footer)?;
            top.flush_dev()?;
            top.set_dev_len(new_end + FOOTER_SIZE as u64)?;
            top.flush_dev()?;
            top.set_end(new_end);
        }
        stats.new_len = top.dev.len()?;
        Ok(stats)
    }
}

/// Flushes every writable image of `layers`: queued metadata in the
/// crash-safe order, the footer back at the end of a file opened without.
fn flush_chain<D, B>(layers: &mut [Layer<D, B>]) -> Step
where
    D: BlockDevice,
    B: AsRef<[u32]> + AsMut<[u32]>,
{
    for l in layers.iter_mut().filter(|l| l.writable) {
        if l.has_pending() {
            l.sync()?;
        } else {
            l.flush_dev()?;
        }
        l.restore_tail()?;
    }
    Ok(())
}

/// How a maintenance operation stopped: with the error a layer recorded,
/// or with one of its own.
enum Stop {
    Failed,
    Error(Error),
}

impl From<Failed> for Stop {
    fn from(_: Failed) -> Self {
        Stop::Failed
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

impl From<IoError> for Stop {
    fn from(e: IoError) -> Self {
        Stop::Error(Error::Io(e))
    }
}

/// Appends a [`Layer::blank`] over `dev` to `layers`; `None` if they are
/// full.
// Out of line: the blank layer is built in its place, once.
#[inline(never)]
fn push_blank<D, B, const N: usize>(
    layers: &mut heapless::Vec<Layer<D, B>, N>,
    dev: D,
    writable: bool,
) -> Option<&mut Layer<D, B>>
where
    D: BlockDevice,
    B: AsRef<[u32]> + AsMut<[u32]>,
{
    layers.push(Layer::blank(dev, writable)).ok()?;
    layers.last_mut()
}

/// The top image and the images below it.
type TopAndLower<'a, D, B> = (&'a mut Layer<D, B>, &'a mut [Layer<D, B>]);

fn split<D, B>(layers: &mut [Layer<D, B>]) -> Result<TopAndLower<'_, D, B>, Error> {
    layers.split_first_mut().ok_or(Error::NoParent)
}

/// Looks for the parent of `child` through the resolver, hint by hint.
fn find_parent<D, R>(
    child: &mut D,
    header: &crate::format::DynamicHeader,
    depth: usize,
    resolver: &mut R,
) -> Result<D, Error>
where
    D: BlockDevice,
    R: ParentResolver<D> + ?Sized,
{
    let request = ParentRequest {
        uuid: header.parent_uuid,
        timestamp: header.parent_timestamp,
        name: header.parent_name_units(),
        depth,
    };
    let mut raw = [0u8; MAX_LOCATOR_LEN as usize];
    let mut text = [0u8; MAX_LOCATOR_LEN as usize * 3 / 2];
    // Every slot for each of the five hint ranks in turn, then one try
    // without a hint: one place asks the resolver, so the device it gives
    // is moved out from one place.
    const RANKS: usize = 5;
    for step in 0..=RANKS * LOCATOR_SLOTS {
        let (rank, slot) = (step / LOCATOR_SLOTS, step % LOCATOR_SLOTS);
        let hint = match header.locators.get(slot).filter(|_| rank < RANKS) {
            Some(loc) => {
                if hint_rank(loc.code) != Some(rank as u8) || loc.data_length > MAX_LOCATOR_LEN {
                    continue;
                }
                let raw = &mut raw[..loc.data_length as usize];
                if child.read_at(loc.data_offset, raw).is_err() {
                    continue;
                }
                let Some(path) = decode_locator(loc.code, raw, &mut text) else {
                    continue;
                };
                Some(LocatorHint {
                    slot: slot as u8,
                    code: loc.code,
                    path,
                })
            }
            None => None,
        };
        if let Some(mut dev) = resolver.open_parent(&request, hint.as_ref()) {
            if peek_uuid(&mut dev) == Some(request.uuid) {
                return Ok(dev);
            }
        }
    }
    Err(Error::ParentNotFound { uuid: request.uuid })
}

/// Reads from the chain `layers` (top first); below the last image, and
/// beyond an image's size, the disk reads as zeros.
fn read_chain<D, B>(layers: &mut [Layer<D, B>], offset: u64, buf: &mut [u8]) -> Step
where
    D: BlockDevice,
    B: AsRef<[u32]> + AsMut<[u32]>,
{
    let Some((top, lower)) = layers.split_first_mut() else {
        buf.fill(0);
        return Ok(());
    };
    let inside = top.size.saturating_sub(offset).min(buf.len() as u64) as usize;
    let (buf, beyond) = buf.split_at_mut(inside);
    beyond.fill(0);
    let Some(sp) = top.sparse else {
        return top.read(offset, buf);
    };
    let mut pos = 0usize;
    while pos < buf.len() {
        let off = offset + pos as u64;
        let (block, in_block) = sp.locate(off);
        let n = ((sp.block_size - in_block) as usize).min(buf.len() - pos);
        // In range by construction (n <= buf.len() - pos): checked
        // slicing, without a panic path.
        let chunk = buf.get_mut(pos..pos + n).unwrap_or_default();
        let base = top.block_base(block);
        let end = in_block + n as u64;
        let mut k = in_block / SECTOR_SIZE;
        let last = end.div_ceil(SECTOR_SIZE);
        // Runs of sectors present in this image or not; an unallocated
        // block is one run, not present, read whole from below.
        while k < last {
            let (present, e) = match base {
                Some(_) => top.run(block as u32, k, last)?,
                None => (false, last),
            };
            let a = (k * SECTOR_SIZE).max(in_block);
            let b = (e * SECTOR_SIZE).min(end);
            let part = chunk
                .get_mut((a - in_block) as usize..(b - in_block) as usize)
                .unwrap_or_default();
            match base {
                Some(base) if present => top.read(base + sp.bitmap_len + a, part)?,
                _ => read_chain(lower, off - in_block + a, part)?,
            }
            k = e;
        }
        pos += n;
    }
    Ok(())
}

/// Writes to `top`; sectors only partly written and not yet held by `top`
/// are completed from the images `lower` below it.
fn write_chain<D, B>(
    top: &mut Layer<D, B>,
    lower: &mut [Layer<D, B>],
    offset: u64,
    data: &[u8],
) -> Step
where
    D: BlockDevice,
    B: AsRef<[u32]> + AsMut<[u32]>,
{
    if !top.writable {
        return Err(top.fail(Error::ReadOnly));
    }
    match offset.checked_add(data.len() as u64) {
        Some(end) if end <= top.size => {}
        _ => {
            let size = top.size;
            return Err(top.fail(Error::OutOfRange {
                offset,
                len: data.len() as u64,
                size,
            }));
        }
    }
    let Some(sp) = top.sparse else {
        return top.write(offset, data);
    };
    let mut pos = 0usize;
    while pos < data.len() {
        let off = offset + pos as u64;
        let (block, in_block) = sp.locate(off);
        let block = block as u32;
        let n = ((sp.block_size - in_block) as usize).min(data.len() - pos);
        let base = match top.block_base(u64::from(block)) {
            Some(b) => b,
            None => top.allocate(block, top.kind != DiskType::Differencing)?,
        };
        let block_start = off - in_block;
        let data_base = base + sp.bitmap_len;
        // In range by construction (n <= data.len() - pos): checked
        // slicing, without a panic path.
        let bytes = data.get(pos..pos + n).unwrap_or_default();
        let end = in_block + n as u64;
        // A leading partial sector, the whole sectors (one device write,
        // then their bits), a trailing partial sector.
        let mut a = in_block;
        while a < end {
            let k = a / SECTOR_SIZE;
            let whole = a.is_multiple_of(SECTOR_SIZE) && end - a >= SECTOR_SIZE;
            let stop = if whole {
                end / SECTOR_SIZE * SECTOR_SIZE
            } else {
                ((k + 1) * SECTOR_SIZE).min(end)
            };
            let piece = bytes
                .get((a - in_block) as usize..(stop - in_block) as usize)
                .unwrap_or_default();
            if whole {
                top.write(data_base + a, piece)?;
                top.set_bits(block, k, stop / SECTOR_SIZE)?;
            } else {
                write_partial(top, lower, block, data_base, block_start, k, a, piece)?;
            }
            a = stop;
        }
        pos += n;
    }
    Ok(())
}

/// Writes part of sector `k` of a block: in place if the image holds the
/// sector, else read-modify-write of the sector from the images below.
#[allow(clippy::too_many_arguments)]
fn write_partial<D, B>(
    top: &mut Layer<D, B>,
    lower: &mut [Layer<D, B>],
    block: u32,
    data_base: u64,
    block_start: u64,
    k: u64,
    from: u64,
    bytes: &[u8],
) -> Step
where
    D: BlockDevice,
    B: AsRef<[u32]> + AsMut<[u32]>,
{
    let (present, _) = top.run(block, k, k + 1)?;
    if present {
        top.write(data_base + from, bytes)?;
        return Ok(());
    }
    let mut sector = [0u8; SECTOR_SIZE as usize];
    read_chain(lower, block_start + k * SECTOR_SIZE, &mut sector)?;
    let at = (from - k * SECTOR_SIZE) as usize;
    // The piece lies in the sector (the caller cuts at sector bounds).
    if let Some(dst) = sector.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    top.write(data_base + k * SECTOR_SIZE, &sector)?;
    top.set_bits(block, k, k + 1)
}

/// Validates the single image on `dev` and reports every problem found to
/// `report` (parents are not opened). Fails only when the device fails or
/// no BAT storage can be had; the returned summary counts the problems.
/// An image is clean when `summary.problems == 0`; leaked space is not a
/// problem.
pub fn check<D, B, T>(
    dev: D,
    options: &OpenOptions,
    tables: &mut T,
    report: &mut dyn FnMut(&Problem),
) -> Result<Summary, Error>
where
    D: BlockDevice,
    B: AsRef<[u32]> + AsMut<[u32]>,
    T: TableStorage<B> + ?Sized,
{
    let mut summary = Summary::default();
    let mut layer = Layer::<D, B>::blank(dev, false);
    match layer.inspect_in_place(options, tables, report, &mut summary) {
        Ok(_) | Err(Error::Malformed(_)) => Ok(summary),
        Err(e) => Err(e),
    }
}
