//! Property tests of the EPT tables against a reference model, and
//! scenario tests for splitting, merging, host memory types, dirty logging
//! and misconfiguration reports.

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use core::sync::atomic::Ordering;

use super::entry::{ACCESSED, ADDRESS_MASK, DIRTY, LARGE_PAGE, PERMISSION_MASK};
use super::*;

const KIB4: u64 = 1 << 12;
const MIB2: u64 = 1 << 21;
const GIB1: u64 = 1 << 30;
const SPACE: u64 = 64 * GIB1;

/// xorshift64*: a small deterministic generator for the property tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn frames(n: usize) -> Vec<EptFrame> {
    (0..n).map(|_| EptFrame::new()).collect()
}

fn pool(frames: &[EptFrame]) -> FramePool<'_> {
    // Host-physical addresses far from the guest's, so a mix-up shows.
    FramePool::with_host_physical_base(frames, 0x3000_0000_0000).unwrap()
}

/// The reference: disjoint, coalesced intervals `start -> (end, hpa, attrs)`.
#[derive(Default)]
struct Model(BTreeMap<u64, (u64, u64, MappingAttributes)>);

impl Model {
    /// Removes `[a, b)` and returns the removed pieces.
    fn carve(&mut self, a: u64, b: u64) -> Vec<(u64, u64, u64, MappingAttributes)> {
        let hit: Vec<_> = self
            .0
            .iter()
            .filter(|(&s, &(e, _, _))| s < b && a < e)
            .map(|(&s, &v)| (s, v))
            .collect();
        let mut inside = Vec::new();
        for (s, (e, h, attrs)) in hit {
            self.0.remove(&s);
            if s < a {
                self.0.insert(s, (a, h, attrs));
            }
            if e > b {
                self.0.insert(b, (e, h + (b - s), attrs));
            }
            let (is, ie) = (s.max(a), e.min(b));
            inside.push((is, ie, h + (is - s), attrs));
        }
        inside
    }

    fn coalesce(&mut self) {
        let mut out: BTreeMap<u64, (u64, u64, MappingAttributes)> = BTreeMap::new();
        let mut last: Option<(u64, u64, u64, MappingAttributes)> = None;
        for (&s, &(e, h, attrs)) in &self.0 {
            match last {
                Some((ls, le, lh, la)) if le == s && la == attrs && lh + (le - ls) == h => {
                    last = Some((ls, e, lh, la));
                }
                _ => {
                    if let Some((ls, le, lh, la)) = last {
                        out.insert(ls, (le, lh, la));
                    }
                    last = Some((s, e, h, attrs));
                }
            }
        }
        if let Some((ls, le, lh, la)) = last {
            out.insert(ls, (le, lh, la));
        }
        self.0 = out;
    }

    fn map(&mut self, a: u64, hpa: u64, len: u64, attrs: MappingAttributes) {
        self.carve(a, a + len);
        self.0.insert(a, (a + len, hpa, attrs));
        self.coalesce();
    }

    fn unmap(&mut self, a: u64, len: u64) {
        self.carve(a, a + len);
    }

    fn protect(&mut self, a: u64, len: u64, p: Permissions) {
        for (s, e, h, attrs) in self.carve(a, a + len) {
            let attrs = MappingAttributes {
                permissions: p,
                ..attrs
            };
            self.0.insert(s, (e, h, attrs));
        }
        self.coalesce();
    }

    fn find(&self, gpa: u64) -> Option<(u64, u64, u64, MappingAttributes)> {
        let (&s, &(e, h, a)) = self.0.range(..=gpa).next_back()?;
        (gpa < e).then_some((s, e, h, a))
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(s, (e, _, _))| e - s).sum()
    }

    /// The page size the tables must use at `gpa`: the largest allowed one
    /// whose aligned block is one linear, uniform, aligned piece of the model.
    fn expected_size(&self, gpa: u64, caps: &EptCapabilities) -> Option<u64> {
        let (s, e, h, _) = self.find(gpa)?;
        for (level, size) in [(3, GIB1), (2, MIB2)] {
            let block = gpa & !(size - 1);
            if caps.leaf_allowed(level)
                && block >= s
                && block + size <= e
                && (h + (block - s)) & (size - 1) == 0
            {
                return Some(size);
            }
        }
        Some(KIB4)
    }
}

/// Every leaf of the tables as `(gpa, size, entry)`, checking on the way that
/// every non-root table has a present entry; returns the tables reached.
fn leaves<A: FrameAllocator>(tables: &EptTables<A>) -> (Vec<(u64, u64, u64)>, usize) {
    let alloc = tables.allocator();
    let mut out = Vec::new();
    let mut count = 0;
    let mut stack = vec![(tables.root(), 4u8, 0u64)];
    while let Some((table, level, base)) = stack.pop() {
        count += 1;
        let frame = alloc.frame(table).expect("table from the allocator");
        let span = 1u64 << (12 + 9 * (level as u32 - 1));
        let mut present = 0;
        for (i, e) in frame.0.iter().enumerate() {
            let e = e.load(Ordering::Relaxed);
            if e & PERMISSION_MASK == 0 {
                continue;
            }
            present += 1;
            let gpa = base + i as u64 * span;
            if level == 1 || e & LARGE_PAGE != 0 {
                out.push((gpa, span, e));
            } else {
                assert_eq!(e & 0xf8, 0, "table reference with bits 7:3 set");
                stack.push((e & ADDRESS_MASK, level - 1, gpa));
            }
        }
        assert!(
            level == 4 || present > 0,
            "empty table left at level {level}"
        );
    }
    (out, count)
}

fn check_against_model(tables: &EptTables<&mut FramePool<'_>>, model: &Model, rng: &mut Rng) {
    let caps = *tables.capabilities();
    let (leaves, table_count) = leaves(tables);
    assert_eq!(
        table_count,
        tables.allocator().frames_in_use(),
        "leaked or lost tables"
    );
    let mut mapped = 0;
    for &(gpa, size, entry) in &leaves {
        let (s, e, h, attrs) = model
            .find(gpa)
            .unwrap_or_else(|| panic!("leaf at {gpa:#x} not in the model"));
        assert!(
            gpa + size <= e && gpa >= s,
            "leaf {gpa:#x}+{size:#x} crosses the model"
        );
        assert_eq!(entry & ADDRESS_MASK, h + (gpa - s), "hpa of {gpa:#x}");
        assert_eq!(
            MappingAttributes::from_leaf(entry),
            Ok(attrs),
            "attributes at {gpa:#x}"
        );
        assert_eq!(
            Some(size),
            model.expected_size(gpa, &caps),
            "page size at {gpa:#x}"
        );
        mapped += size;
    }
    assert_eq!(mapped, model.total(), "mapped bytes");
    for _ in 0..64 {
        let gpa = rng.below(SPACE) & !0xfff | rng.below(4096);
        match (model.find(gpa), tables.translate(gpa)) {
            (None, None) => {}
            (Some((s, _, h, attrs)), Some(t)) => {
                assert_eq!(t.host_physical, h + (gpa - s));
                assert_eq!(t.attributes, attrs);
            }
            (m, t) => panic!("at {gpa:#x}: model {m:?}, tables {t:?}"),
        }
    }
}

fn random_range(rng: &mut Rng, largest_unit: u64) -> (u64, u64) {
    let unit = match rng.below(8) {
        0..=3 => KIB4,
        4..=6 => MIB2,
        _ => GIB1,
    }
    .min(largest_unit);
    // Half the small operations hit a 16 MiB window around the 3 GiB
    // boundary, so that they meet, overlap and complete each other's tables.
    let mut start = if unit != GIB1 && rng.below(2) == 0 {
        3 * GIB1 - 8 * MIB2 + rng.below(16 * MIB2 / unit) * unit
    } else {
        rng.below(SPACE / unit) * unit
    };
    if rng.below(4) == 0 {
        start += rng.below(8) * KIB4;
    }
    let mut len = (1 + rng.below(if unit == KIB4 { 40 } else { 3 })) * unit;
    if rng.below(4) == 0 {
        len += rng.below(600) * KIB4;
    }
    start = start.min(SPACE - KIB4);
    len = len.min(SPACE - start);
    (start, len)
}

fn random_permissions(rng: &mut Rng, caps: &EptCapabilities) -> Permissions {
    loop {
        let bits = rng.below(8);
        let p = Permissions::new(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
        if p.validate(caps).is_ok() {
            return p;
        }
    }
}

fn run_property(caps: EptCapabilities, seed: u64, steps: usize) {
    let storage = frames(6000);
    let mut pool = pool(&storage);
    let mut rng = Rng(seed);
    // 1 GiB-sized operations on 4 KiB-only tables would be slow to check.
    let largest_unit = if caps.pages_2m { GIB1 } else { MIB2 };
    {
        let mut tables = EptTables::new(&mut pool, caps).unwrap();
        let mut model = Model::default();
        for step in 0..steps {
            let (gpa, len) = random_range(&mut rng, largest_unit);
            match rng.below(10) {
                0..=4 => {
                    // Half the mappings share one linear offset, so that
                    // neighbouring operations build mergeable tables.
                    let hpa_base = if rng.below(2) == 0 {
                        gpa + 64 * GIB1
                    } else {
                        rng.below(256) * GIB1 + gpa % GIB1
                    };
                    // Misalign the host side now and then, by 4 KiB only for
                    // small ranges (a misaligned GiB would be 262144 leaves).
                    let hpa = match rng.below(8) {
                        0..=4 => hpa_base,
                        5 | 6 => hpa_base + rng.below(8) * MIB2,
                        _ if len <= 64 * MIB2 => hpa_base + rng.below(8) * KIB4,
                        _ => hpa_base,
                    };
                    let attrs = if rng.below(2) == 0 {
                        MappingAttributes::RAM
                    } else {
                        MappingAttributes {
                            permissions: random_permissions(&mut rng, &caps),
                            memory_type: if rng.below(3) == 0 {
                                MemoryType::Uncacheable
                            } else {
                                MemoryType::WriteBack
                            },
                            ignore_pat: rng.below(2) == 0,
                        }
                    };
                    tables.map(gpa, hpa, len, attrs).unwrap();
                    model.map(gpa, hpa, len, attrs);
                }
                5..=7 => {
                    tables.unmap(gpa, len).unwrap();
                    model.unmap(gpa, len);
                }
                _ => {
                    let p = if rng.below(2) == 0 {
                        Permissions::ALL
                    } else {
                        random_permissions(&mut rng, &caps)
                    };
                    tables.protect(gpa, len, p).unwrap();
                    model.protect(gpa, len, p);
                }
            }
            let _ = step;
            check_against_model(&tables, &model, &mut rng);
        }
        tables.unmap(0, SPACE).unwrap();
        assert_eq!(tables.allocator().frames_in_use(), 1, "only the PML4 stays");
    }
    assert_eq!(
        pool.frames_in_use(),
        0,
        "dropping the tables frees the PML4"
    );
}

#[test]
fn random_operations_match_the_model_with_all_page_sizes() {
    for seed in [1, 0x9e37_79b9_7f4a_7c15] {
        run_property(EptCapabilities::FULL, seed, 200);
    }
}

#[test]
fn random_operations_match_the_model_with_2mib_pages_only() {
    let caps = EptCapabilities {
        pages_1g: false,
        execute_only: false,
        ..EptCapabilities::FULL
    };
    run_property(caps, 7, 300);
}

#[test]
fn random_operations_match_the_model_with_4kib_pages_only() {
    run_property(EptCapabilities::MINIMAL, 42, 120);
}

#[test]
fn four_gib_of_ram_uses_1gib_pages_or_4kib_tables() {
    let storage = frames(2100);
    let mut pool = pool(&storage);
    {
        let mut t = EptTables::new(&mut pool, EptCapabilities::FULL).unwrap();
        t.map(0, 0x1_0000_0000, 4 * GIB1, MappingAttributes::RAM)
            .unwrap();
        // PML4 + one PDPT holding four 1 GiB leaves.
        assert_eq!(t.allocator().frames_in_use(), 2);
        let tr = t.translate(0x1234_5678).unwrap();
        assert_eq!(tr.host_physical, 0x1_1234_5678);
        assert_eq!(tr.page_size, PageSize::Size1G);
    }
    {
        let mut t = EptTables::new(&mut pool, EptCapabilities::MINIMAL).unwrap();
        t.map(0, 0x1_0000_0000, 4 * GIB1, MappingAttributes::RAM)
            .unwrap();
        // PML4 + PDPT + 4 PDs + 2048 PTs.
        assert_eq!(t.allocator().frames_in_use(), 2 + 4 + 2048);
        let tr = t.translate(4 * GIB1 - 1).unwrap();
        assert_eq!(tr.host_physical, 0x1_0000_0000 + 4 * GIB1 - 1);
        assert_eq!(tr.page_size, PageSize::Size4K);
        assert_eq!(t.translate(4 * GIB1), None);
    }
    assert_eq!(pool.frames_in_use(), 0);
}

#[test]
fn cutting_a_1gib_page_splits_it_and_restoring_merges_it() {
    let storage = frames(16);
    let mut pool = pool(&storage);
    let mut t = EptTables::new(&mut pool, EptCapabilities::FULL).unwrap();
    t.map(GIB1, 0x40_0000_0000, GIB1, MappingAttributes::RAM)
        .unwrap();
    let page = GIB1 + 5 * MIB2 + 3 * KIB4;
    t.protect(page, KIB4, Permissions::READ).unwrap();
    // PML4, PDPT, PD, PT.
    assert_eq!(t.allocator().frames_in_use(), 4);
    let ro = t.translate(page).unwrap();
    assert_eq!(ro.page_size, PageSize::Size4K);
    assert_eq!(ro.attributes.permissions, Permissions::READ);
    assert_eq!(ro.host_physical, 0x40_0000_0000 + 5 * MIB2 + 3 * KIB4);
    assert_eq!(
        t.translate(page + KIB4).unwrap().page_size,
        PageSize::Size4K
    );
    assert_eq!(t.translate(GIB1).unwrap().page_size, PageSize::Size2M);
    assert_eq!(
        t.translate(GIB1).unwrap().attributes.permissions,
        Permissions::ALL
    );
    t.protect(page, KIB4, Permissions::ALL).unwrap();
    assert_eq!(t.allocator().frames_in_use(), 2);
    assert_eq!(t.translate(page).unwrap().page_size, PageSize::Size1G);
    // Unmapping one 4 KiB page in the middle, then mapping it back.
    t.unmap(page, KIB4).unwrap();
    assert_eq!(t.translate(page), None);
    t.map(
        page,
        0x40_0000_0000 + 5 * MIB2 + 3 * KIB4,
        KIB4,
        MappingAttributes::RAM,
    )
    .unwrap();
    assert_eq!(t.translate(page).unwrap().page_size, PageSize::Size1G);
    assert_eq!(t.allocator().frames_in_use(), 2);
}

#[test]
fn misaligned_hpa_falls_back_to_smaller_pages() {
    let storage = frames(16);
    let mut pool = pool(&storage);
    let mut t = EptTables::new(&mut pool, EptCapabilities::FULL).unwrap();
    // gpa 1 GiB-aligned, hpa only 2 MiB-aligned: 512 2 MiB pages.
    t.map(0, 0x20_0000, GIB1, MappingAttributes::RAM).unwrap();
    assert_eq!(t.translate(0).unwrap().page_size, PageSize::Size2M);
    // hpa 4 KiB-aligned only: 4 KiB pages.
    t.map(GIB1, 0x1000, 2 * MIB2, MappingAttributes::RAM)
        .unwrap();
    assert_eq!(
        t.translate(GIB1 + MIB2).unwrap().page_size,
        PageSize::Size4K
    );
    assert_eq!(
        t.translate(GIB1 + MIB2).unwrap().host_physical,
        0x1000 + MIB2
    );
}

#[test]
fn host_mtrr_types_override_and_limit_page_sizes() {
    let storage = frames(16);
    let mut pool = pool(&storage);
    let mut t = EptTables::new(&mut pool, EptCapabilities::FULL).unwrap();
    let mut mtrrs: MtrrRanges<4> = MtrrRanges::new(MemoryType::WriteBack);
    mtrrs
        .add(0xa_0000, 0x2_0000, MemoryType::Uncacheable)
        .unwrap();
    t.map_with_host_types(0, 0, GIB1, MappingAttributes::RAM, &mtrrs)
        .unwrap();
    let vga = t.translate(0xb_8000).unwrap();
    assert_eq!(vga.attributes.memory_type, MemoryType::Uncacheable);
    assert_eq!(vga.page_size, PageSize::Size4K);
    let low = t.translate(0x9_f000).unwrap();
    assert_eq!(low.attributes.memory_type, MemoryType::WriteBack);
    assert_eq!(low.page_size, PageSize::Size4K);
    let high = t.translate(0x20_0000).unwrap();
    assert_eq!(high.attributes.memory_type, MemoryType::WriteBack);
    assert_eq!(high.page_size, PageSize::Size2M);
}

#[test]
fn refuses_bad_input_with_typed_errors() {
    let storage = frames(8);
    let mut pool = pool(&storage);
    let caps = EptCapabilities {
        execute_only: false,
        ..EptCapabilities::FULL
    };
    let mut t = EptTables::new(&mut pool, caps).unwrap();
    assert_eq!(
        t.map(0x1800, 0, KIB4, MappingAttributes::RAM),
        Err(EptError::Misaligned {
            guest_physical: 0x1800,
            host_physical: 0,
            len: KIB4
        })
    );
    assert_eq!(
        t.map(
            GUEST_PHYSICAL_LIMIT - KIB4,
            0,
            2 * KIB4,
            MappingAttributes::RAM
        ),
        Err(EptError::GuestRangeTooLarge {
            guest_physical: GUEST_PHYSICAL_LIMIT - KIB4,
            len: 2 * KIB4
        })
    );
    assert_eq!(
        t.unmap(!0xfffu64, KIB4 * 2),
        Err(EptError::GuestRangeTooLarge {
            guest_physical: !0xfffu64,
            len: KIB4 * 2
        })
    );
    assert_eq!(
        t.map(0, (1 << 46) - KIB4, 2 * KIB4, MappingAttributes::RAM),
        Err(EptError::HostRangeTooLarge {
            host_physical: (1 << 46) - KIB4,
            len: 2 * KIB4
        })
    );
    let write_only = MappingAttributes {
        permissions: Permissions::new(false, true, false),
        ..MappingAttributes::RAM
    };
    assert_eq!(
        t.map(0, 0, KIB4, write_only),
        Err(EptError::Permissions(PermissionError::WriteWithoutRead {
            execute: false
        }))
    );
    assert_eq!(
        t.protect(0, KIB4, Permissions::new(false, true, true)),
        Err(EptError::Permissions(PermissionError::WriteWithoutRead {
            execute: true
        }))
    );
    assert_eq!(
        t.protect(0, KIB4, Permissions::EXECUTE_ONLY),
        Err(EptError::Permissions(
            PermissionError::ExecuteOnlyUnsupported
        ))
    );
    assert_eq!(
        t.harvest_dirty(0, KIB4 * 65, &mut [0]),
        Err(EptError::BitmapTooSmall {
            needed: 2,
            given: 1
        })
    );
    assert_eq!(t.allocator().frames_in_use(), 1, "nothing was built");
}

#[test]
fn running_out_of_frames_reports_progress_and_stays_consistent() {
    let storage = frames(5);
    let mut pool = pool(&storage);
    let mut t = EptTables::new(&mut pool, EptCapabilities::MINIMAL).unwrap();
    // PML4 + PDPT + PD + 2 PTs fit: the third 2 MiB block does not.
    let err = t.map(0, 0, 3 * MIB2, MappingAttributes::RAM).unwrap_err();
    assert_eq!(
        err,
        EptError::OutOfFrames {
            completed_up_to: 2 * MIB2
        }
    );
    assert!(t.translate(2 * MIB2 - KIB4).is_some());
    assert!(t.translate(2 * MIB2).is_none());
    t.unmap(0, GUEST_PHYSICAL_LIMIT).unwrap();
    assert_eq!(t.allocator().frames_in_use(), 1);
}

#[test]
fn dirty_harvest_reads_and_clears_per_page_and_per_large_page() {
    let storage = frames(8);
    let mut pool = pool(&storage);
    let mut t = EptTables::new(&mut pool, EptCapabilities::FULL).unwrap();
    t.map(0, 0, MIB2, MappingAttributes::RAM).unwrap();
    t.map(MIB2, 0x100_0000, 16 * KIB4, MappingAttributes::RAM)
        .unwrap();
    // Pretend the processor wrote the 2 MiB page at 0 and 4 KiB pages 1 and 5
    // of the second range: set D in the leaves as it would.
    let set_dirty = |t: &EptTables<&mut FramePool<'_>>, gpa: u64| {
        let walk = t.walk(gpa);
        let level = walk
            .entries
            .iter()
            .position(|e| e.is_some_and(|e| e & LARGE_PAGE != 0));
        let mut table = t.root();
        for l in (1..=4u8).rev() {
            let idx = ((gpa >> (12 + 9 * (l as u32 - 1))) & 0x1ff) as usize;
            let e = &t.allocator().frame(table).unwrap().0[idx];
            let v = e.load(Ordering::Relaxed);
            if l == 1 || Some(usize::from(l - 1)) == level {
                e.fetch_or(DIRTY | ACCESSED, Ordering::Relaxed);
                return;
            }
            table = v & ADDRESS_MASK;
        }
    };
    set_dirty(&t, 0x1000);
    set_dirty(&t, MIB2 + KIB4);
    set_dirty(&t, MIB2 + 5 * KIB4);
    assert!(t.translate(0).unwrap().dirty);
    let mut bitmap = [u64::MAX; 16];
    // The whole 2 MiB page is 512 bits, then bits 512 + 1 and 512 + 5.
    let n = t.harvest_dirty(0, MIB2 + 16 * KIB4, &mut bitmap).unwrap();
    assert_eq!(n, 512 + 2);
    assert!(bitmap[..8].iter().all(|&w| w == u64::MAX));
    assert_eq!(bitmap[8], 0b10_0010);
    assert_eq!(bitmap[9], u64::MAX, "words past the range are untouched");
    assert!(!t.translate(0).unwrap().dirty);
    assert_eq!(t.harvest_dirty(0, MIB2 + 16 * KIB4, &mut bitmap), Ok(0));
    assert!(bitmap[..9].iter().all(|&w| w == 0));
    // A harvest that cuts a dirty large page reports its part and keeps it dirty.
    set_dirty(&t, 0);
    let mut small = [0u64; 1];
    assert_eq!(
        t.harvest_dirty(MIB2 - 2 * KIB4, 2 * KIB4, &mut small),
        Ok(2)
    );
    assert_eq!(small[0], 0b11);
    assert!(t.translate(0).unwrap().dirty);
    let no_ad = EptCapabilities {
        accessed_dirty: false,
        ..EptCapabilities::FULL
    };
    let storage2 = frames(2);
    let mut pool2 = FramePool::with_host_physical_base(&storage2, 0x1000).unwrap();
    let mut t2 = EptTables::new(&mut pool2, no_ad).unwrap();
    assert_eq!(
        t2.harvest_dirty(0, KIB4, &mut small),
        Err(EptError::AccessedDirtyDisabled)
    );
    assert!(!t2.eptp().accessed_dirty());
    // Without any INVEPT type, invalidation is refused before the instruction.
    let none = EptCapabilities::MINIMAL;
    let storage3 = frames(1);
    let t3 = EptTables::new(
        FramePool::with_host_physical_base(&storage3, 0x1000).unwrap(),
        none,
    )
    .unwrap();
    // SAFETY: MINIMAL offers no INVEPT type, so no instruction executes.
    assert_eq!(
        unsafe { t3.invalidate() },
        Err(InvalidationError::Unsupported)
    );
}

#[test]
fn dirty_logging_splits_to_4kib_and_stopping_merges_back() {
    let storage = frames(600);
    let mut pool = pool(&storage);
    let mut t = EptTables::new(&mut pool, EptCapabilities::FULL).unwrap();
    t.map(GIB1, 0x80_0000_0000, GIB1, MappingAttributes::RAM)
        .unwrap();
    t.map(2 * GIB1, 0x90_0000_0000, MIB2, MappingAttributes::DEVICE)
        .unwrap();
    assert_eq!(t.allocator().frames_in_use(), 3);
    t.start_dirty_logging(GIB1, GIB1 + MIB2).unwrap();
    // PML4, PDPT, one PD and 512 PTs for the GiB; a PD and a PT for the 2 MiB.
    assert_eq!(t.allocator().frames_in_use(), 2 + 1 + 512 + 1 + 1);
    for gpa in [GIB1, GIB1 + 0x1234_5000, 2 * GIB1 - KIB4, 2 * GIB1 + 0x1000] {
        let tr = t.translate(gpa).unwrap();
        assert_eq!(tr.page_size, PageSize::Size4K, "at {gpa:#x}");
    }
    assert_eq!(
        t.translate(GIB1 + 0x1234_5678).unwrap().host_physical,
        0x80_1234_5678
    );
    assert_eq!(
        t.translate(2 * GIB1 + 8).unwrap().attributes,
        MappingAttributes::DEVICE
    );
    // New mappings during logging use 4 KiB pages too.
    t.map(4 * GIB1, 0x40_0000_0000, MIB2, MappingAttributes::RAM)
        .unwrap();
    assert_eq!(t.translate(4 * GIB1).unwrap().page_size, PageSize::Size4K);
    // One written page is one bit.
    let walk = t.walk(GIB1 + 0x5000);
    assert!(walk.entries[0].is_some());
    let mut table = t.root();
    for l in (2..=4u8).rev() {
        let idx = (((GIB1 + 0x5000) >> (12 + 9 * (l as u32 - 1))) & 0x1ff) as usize;
        table = t.allocator().frame(table).unwrap().0[idx].load(Ordering::Relaxed) & ADDRESS_MASK;
    }
    t.allocator().frame(table).unwrap().0[5].fetch_or(DIRTY, Ordering::Relaxed);
    let mut bitmap = [0u64; 4096];
    assert_eq!(t.harvest_dirty(GIB1, GIB1, &mut bitmap), Ok(1));
    assert_eq!(bitmap[0], 1 << 5);
    t.stop_dirty_logging(GIB1, GIB1 + MIB2).unwrap();
    t.stop_dirty_logging(4 * GIB1, MIB2).unwrap();
    assert_eq!(
        t.translate(GIB1 + 0x5000).unwrap().page_size,
        PageSize::Size1G
    );
    assert_eq!(t.translate(2 * GIB1).unwrap().page_size, PageSize::Size2M);
    assert_eq!(t.translate(4 * GIB1).unwrap().page_size, PageSize::Size2M);
    // PML4, PDPT, PD for the 2 MiB at 2 GiB, PD for the 2 MiB at 4 GiB.
    assert_eq!(t.allocator().frames_in_use(), 4);
}

#[test]
fn walk_reports_a_misconfigured_entry() {
    let storage = frames(8);
    let mut pool = pool(&storage);
    let mut t = EptTables::new(&mut pool, EptCapabilities::FULL).unwrap();
    t.map(0x20_0000, 0x20_0000, KIB4, MappingAttributes::RAM)
        .unwrap();
    let good = t.walk(0x20_0123);
    assert!(good.misconfiguration.is_none());
    assert_eq!(good.translation.unwrap().host_physical, 0x20_0123);
    assert!(good.entries.iter().all(Option::is_some));
    // Corrupt the PTE's memory type to the reserved value 2, as a stray
    // write would.
    let pte = good.entries[0].unwrap();
    let mut table = t.root();
    for l in (2..=4u8).rev() {
        let idx = ((0x20_0000u64 >> (12 + 9 * (l as u32 - 1))) & 0x1ff) as usize;
        table = t.allocator().frame(table).unwrap().0[idx].load(Ordering::Relaxed) & ADDRESS_MASK;
    }
    let bad = (pte & !0x38) | (2 << 3);
    t.allocator().frame(table).unwrap().0[0x200 & 0x1ff].store(bad, Ordering::Relaxed);
    let walk = t.walk(0x20_0000);
    assert_eq!(
        walk.misconfiguration,
        Some((1, bad, Misconfiguration::ReservedMemoryType(2)))
    );
    assert_eq!(walk.translation, None);
    assert_eq!(t.walk(0x20_1000).entries[0], Some(0), "unmapped PTE read");
    assert_eq!(
        t.walk(0x40_0000).entries[0],
        None,
        "no PT below an absent PDE"
    );
    assert_eq!(t.walk(0x40_0000).entries[1], Some(0));
}

/// Maps 4 GiB of RAM at guest-physical 0 and returns the elapsed time: the
/// host benchmark of the EPT builder.
fn time_map_4gib(caps: EptCapabilities) -> std::time::Duration {
    let storage = frames(2100);
    // Touch every frame first, as an image's pool is resident memory: the
    // host's first-touch page faults are not part of what is measured.
    for f in &storage {
        f.0[0].store(1, Ordering::Relaxed);
    }
    let mut pool = pool(&storage);
    let mut t = EptTables::new(&mut pool, caps).unwrap();
    let start = std::time::Instant::now();
    map_ram_benchmark(&mut t, 4 * GIB1).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        t.translate(4 * GIB1 - KIB4).unwrap().host_physical,
        4 * GIB1 - KIB4
    );
    elapsed
}

#[test]
fn bench_map_4gib() {
    let full = time_map_4gib(EptCapabilities::FULL);
    let small = time_map_4gib(EptCapabilities::MINIMAL);
    std::println!("bench ept.map_4gib {} us", full.as_micros());
    std::println!("bench ept.map_4gib_4k_only {} us", small.as_micros());
}
