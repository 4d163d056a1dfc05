//! Guest-virtual (linear) to guest-physical translation by walking the
//! guest's own page tables through [`GuestMemory`] (SDM Vol. 3A, chapter 4).
//!
//! All paging modes: none (CR0.PG = 0), 32-bit (with CR4.PSE 4 MiB pages),
//! PAE, 4-level and 5-level (CR4.LA57). Present, write (with CR0.WP and
//! user/supervisor), user/supervisor, NX (with EFER.NXE), SMEP and reserved
//! bits are honoured; a failing walk gives the #PF error code to inject and
//! the faulting address for CR2. The walk only reads: it does not set the
//! guest's accessed and dirty flags. PAE PDPTEs are read from memory at CR3
//! (the processor uses the copies loaded with CR3, which the VMCS holds in
//! its guest PDPTE fields). SMAP and protection keys are not modelled.

use super::{GuestMemory, MemoryError};

/// CR0.WP: supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging enabled.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: 64-bit entries.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP: supervisor fetches from user pages fault.
pub const CR4_SMEP: u64 = 1 << 20;
/// EFER.LMA: IA-32e mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: the execute-disable bit is in use.
pub const EFER_NXE: u64 = 1 << 11;

/// #PF error code bit 0: the page was present (a protection or reserved-bit fault).
pub const PF_PRESENT: u32 = 1 << 0;
/// #PF error code bit 1: the access was a write.
pub const PF_WRITE: u32 = 1 << 1;
/// #PF error code bit 2: the access was made at CPL 3.
pub const PF_USER: u32 = 1 << 2;
/// #PF error code bit 3: a reserved bit was set in a paging-structure entry.
pub const PF_RESERVED: u32 = 1 << 3;
/// #PF error code bit 4: the access was an instruction fetch.
pub const PF_FETCH: u32 = 1 << 4;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const EXECUTE_DISABLE: u64 = 1 << 63;

/// The guest state that decides how a linear address is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingContext {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER (LMA must reflect IA-32e mode).
    pub efer: u64,
    /// Current privilege level (0-3); 3 makes accesses user-mode.
    pub cpl: u8,
    /// The guest's physical-address width (CPUID 0x8000_0008 EAX\[7:0\]);
    /// entry bits from it up to bit 51 are reserved.
    pub physical_address_bits: u8,
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// The paging mode selected by CR0, CR4 and EFER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG = 0: linear is physical (32 bits).
    Off,
    /// 32-bit paging.
    Bits32,
    /// PAE paging.
    Pae,
    /// 4-level paging.
    Level4,
    /// 5-level paging.
    Level5,
}

/// A page fault to inject: CR2 and the error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The faulting linear address (for CR2).
    pub address: u64,
    /// The error code pushed by #PF.
    pub error_code: u32,
}

/// Why a linear address has no physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslateError {
    /// The guest's own tables refuse it: inject this #PF.
    PageFault(PageFault),
    /// The address is not canonical: the access raises #GP (or #SS), not #PF.
    NonCanonical {
        /// The address.
        address: u64,
    },
    /// A paging-structure entry is not in guest RAM.
    Memory(MemoryError),
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translated {
    /// The guest-physical address.
    pub physical: u64,
    /// Size of the page that maps it (bytes; 4 GiB when paging is off).
    pub page_size: u64,
}

impl Translated {
    /// Bytes from the address to the end of its page.
    pub fn bytes_to_page_end(&self) -> u64 {
        self.page_size - (self.physical & (self.page_size - 1))
    }
}

impl PagingContext {
    /// The paging mode.
    pub fn mode(&self) -> PagingMode {
        if self.cr0 & CR0_PG == 0 {
            PagingMode::Off
        } else if self.cr4 & CR4_PAE == 0 {
            PagingMode::Bits32
        } else if self.efer & EFER_LMA == 0 {
            PagingMode::Pae
        } else if self.cr4 & CR4_LA57 == 0 {
            PagingMode::Level4
        } else {
            PagingMode::Level5
        }
    }

    fn address_mask(&self) -> u64 {
        let bits = self.physical_address_bits.clamp(32, 52);
        ((1u64 << bits) - 1) & !0xfff
    }

    /// Bits of a 64-bit entry that are reserved whatever the level.
    fn reserved_mask(&self) -> u64 {
        let above_width = 0x000f_ffff_ffff_f000 & !self.address_mask();
        let nx = if self.efer & EFER_NXE == 0 {
            EXECUTE_DISABLE
        } else {
            0
        };
        above_width | nx
    }

    // Out of line: every failing step of every walk builds one.
    #[inline(never)]
    fn fault(&self, linear: u64, access: Access, present: bool, reserved: bool) -> TranslateError {
        let mut code = 0;
        if present || reserved {
            code |= PF_PRESENT;
        }
        if reserved {
            code |= PF_RESERVED;
        }
        if access == Access::Write {
            code |= PF_WRITE;
        }
        if self.cpl == 3 {
            code |= PF_USER;
        }
        let fetch_reported =
            self.cr4 & CR4_SMEP != 0 || (self.cr4 & CR4_PAE != 0 && self.efer & EFER_NXE != 0);
        if access == Access::Execute && fetch_reported {
            code |= PF_FETCH;
        }
        TranslateError::PageFault(PageFault {
            address: linear,
            error_code: code,
        })
    }

    /// Whether an access is allowed given the combined rights of the walk.
    fn allowed(&self, access: Access, writable: bool, user_page: bool, no_execute: bool) -> bool {
        let user = self.cpl == 3;
        match access {
            Access::Read => !user || user_page,
            Access::Write => {
                if user {
                    user_page && writable
                } else {
                    writable || self.cr0 & CR0_WP == 0
                }
            }
            Access::Execute => {
                !no_execute
                    && if user {
                        user_page
                    } else {
                        !(user_page && self.cr4 & CR4_SMEP != 0)
                    }
            }
        }
    }
}

/// Translates `linear` for `access` under `ctx`, reading the guest's page
/// tables from `mem`.
pub fn translate<M: GuestMemory + ?Sized>(
    mem: &M,
    ctx: &PagingContext,
    linear: u64,
    access: Access,
) -> Result<Translated, TranslateError> {
    match ctx.mode() {
        PagingMode::Off => Ok(Translated {
            physical: linear & 0xffff_ffff,
            page_size: 1 << 32,
        }),
        PagingMode::Bits32 => walk_32bit(mem, ctx, linear & 0xffff_ffff, access),
        PagingMode::Pae => walk_pae(mem, ctx, linear & 0xffff_ffff, access),
        mode @ (PagingMode::Level4 | PagingMode::Level5) => {
            // 9 linear-address bits per level above the 12-bit page offset.
            let levels = if mode == PagingMode::Level5 { 5 } else { 4 };
            check_canonical(linear, 12 + 9 * u32::from(levels))?;
            walk_64bit(
                mem,
                ctx,
                linear,
                access,
                ctx.cr3 & ctx.address_mask(),
                levels,
                (true, true),
            )
        }
    }
}

fn check_canonical(linear: u64, bits: u32) -> Result<(), TranslateError> {
    let shift = 64 - bits;
    if (((linear << shift) as i64) >> shift) as u64 == linear {
        Ok(())
    } else {
        Err(TranslateError::NonCanonical { address: linear })
    }
}

fn walk_32bit<M: GuestMemory + ?Sized>(
    mem: &M,
    ctx: &PagingContext,
    linear: u64,
    access: Access,
) -> Result<Translated, TranslateError> {
    let pde_addr = (ctx.cr3 & 0xffff_f000) + ((linear >> 22) << 2);
    let pde = u64::from(mem.read_u32(pde_addr).map_err(TranslateError::Memory)?);
    if pde & PRESENT == 0 {
        return Err(ctx.fault(linear, access, false, false));
    }
    if ctx.cr4 & CR4_PSE != 0 && pde & PAGE_SIZE_BIT != 0 {
        // PSE-36: PDE bits 20:13 hold physical-address bits 39:32, as many
        // as the physical-address width has; the rest up to bit 21 are reserved.
        let high_bits = u32::from(ctx.physical_address_bits.clamp(32, 40)) - 32;
        let reserved = (0x3fe000u64) & !(((1u64 << high_bits) - 1) << 13);
        if pde & reserved != 0 {
            return Err(ctx.fault(linear, access, true, true));
        }
        if !ctx.allowed(access, pde & WRITABLE != 0, pde & USER != 0, false) {
            return Err(ctx.fault(linear, access, true, false));
        }
        let high = ((pde >> 13) & 0xff) << 32;
        return Ok(Translated {
            physical: (pde & 0xffc0_0000) | high | (linear & 0x3f_ffff),
            page_size: 1 << 22,
        });
    }
    let pte_addr = (pde & 0xffff_f000) + (((linear >> 12) & 0x3ff) << 2);
    let pte = u64::from(mem.read_u32(pte_addr).map_err(TranslateError::Memory)?);
    if pte & PRESENT == 0 {
        return Err(ctx.fault(linear, access, false, false));
    }
    let writable = pde & pte & WRITABLE != 0;
    let user = pde & pte & USER != 0;
    if !ctx.allowed(access, writable, user, false) {
        return Err(ctx.fault(linear, access, true, false));
    }
    Ok(Translated {
        physical: (pte & 0xffff_f000) | (linear & 0xfff),
        page_size: 1 << 12,
    })
}

fn walk_pae<M: GuestMemory + ?Sized>(
    mem: &M,
    ctx: &PagingContext,
    linear: u64,
    access: Access,
) -> Result<Translated, TranslateError> {
    let pdpte_addr = (ctx.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8;
    let pdpte = mem.read_u64(pdpte_addr).map_err(TranslateError::Memory)?;
    if pdpte & PRESENT == 0 {
        return Err(ctx.fault(linear, access, false, false));
    }
    // PDPTE bits 2:1, 8:5 and 63 are reserved, as are bits above the width.
    let address_mask = ctx.address_mask();
    let reserved = 0x1e6 | EXECUTE_DISABLE | (0x000f_ffff_ffff_f000 & !address_mask);
    if pdpte & reserved != 0 {
        return Err(ctx.fault(linear, access, true, true));
    }
    walk_64bit(
        mem,
        ctx,
        linear,
        access,
        pdpte & address_mask,
        2,
        (true, true),
    )
}

/// Walks 64-bit entries from `table` at `top_level` (5 = PML5E ... 1 = PTE).
fn walk_64bit<M: GuestMemory + ?Sized>(
    mem: &M,
    ctx: &PagingContext,
    linear: u64,
    access: Access,
    mut table: u64,
    top_level: u8,
    (mut writable, mut user): (bool, bool),
) -> Result<Translated, TranslateError> {
    let mut no_execute = false;
    let reserved = ctx.reserved_mask();
    for level in (1..=top_level).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let index = (linear >> shift) & 0x1ff;
        let entry = mem
            .read_u64(table + index * 8)
            .map_err(TranslateError::Memory)?;
        if entry & PRESENT == 0 {
            return Err(ctx.fault(linear, access, false, false));
        }
        let large = level > 1 && entry & PAGE_SIZE_BIT != 0;
        let large_reserved = if large {
            // Bit 12 is PAT; address bits below the page size are reserved.
            ((1u64 << shift) - 1) & !0x1fff
        } else {
            0
        };
        if entry & (reserved | large_reserved) != 0 || (large && level > 3) {
            return Err(ctx.fault(linear, access, true, true));
        }
        writable &= entry & WRITABLE != 0;
        user &= entry & USER != 0;
        no_execute |= entry & EXECUTE_DISABLE != 0;
        if level == 1 || large {
            if !ctx.allowed(access, writable, user, no_execute) {
                return Err(ctx.fault(linear, access, true, false));
            }
            let size = 1u64 << shift;
            return Ok(Translated {
                physical: (entry & ctx.address_mask() & !(size - 1)) | (linear & (size - 1)),
                page_size: size,
            });
        }
        table = entry & ctx.address_mask();
    }
    Err(ctx.fault(linear, access, false, false))
}

#[cfg(test)]
mod tests {
    use super::super::GuestLayout;
    use super::*;
    use core::cell::Cell;
    use std::vec;

    type Ram<'a> = GuestLayout<&'a [Cell<u8>], (), 2>;

    fn ctx(cr0: u64, cr4: u64, efer: u64, cr3: u64, cpl: u8) -> PagingContext {
        PagingContext {
            cr0,
            cr3,
            cr4,
            efer,
            cpl,
            physical_address_bits: 40,
        }
    }

    const PG: u64 = CR0_PG | 1;
    const LONG: u64 = EFER_LMA | (1 << 8);

    /// A 4-level hierarchy: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
    /// 0x0000_7f00_0040_3000 (user, RW) -> 0x9000; the PD also holds a 2 MiB
    /// supervisor read-only NX page; the PDPT a 1 GiB page.
    fn build_4level(mem: &Ram) {
        let la: u64 = 0x0000_7f00_0040_3000;
        let (i4, i3, i2, i1) = (
            (la >> 39) & 0x1ff,
            (la >> 30) & 0x1ff,
            (la >> 21) & 0x1ff,
            (la >> 12) & 0x1ff,
        );
        mem.write_u64(0x1000 + i4 * 8, 0x2000 | 0x7).unwrap();
        mem.write_u64(0x2000 + i3 * 8, 0x3000 | 0x7).unwrap();
        mem.write_u64(0x3000 + i2 * 8, 0x4000 | 0x7).unwrap();
        mem.write_u64(0x4000 + i1 * 8, 0x9000 | 0x7).unwrap();
        // Next PT entry: present, user, read-only.
        mem.write_u64(0x4000 + (i1 + 1) * 8, 0xa000 | 0x5).unwrap();
        // PD entry i2 + 1: 2 MiB page at 0x20_0000, supervisor, read-only, NX.
        mem.write_u64(0x3000 + (i2 + 1) * 8, 0x20_0000 | 0x81 | EXECUTE_DISABLE)
            .unwrap();
        // PDPT entry i3 + 1: 1 GiB page at 0x4000_0000, supervisor RW.
        mem.write_u64(0x2000 + (i3 + 1) * 8, 0x4000_0000 | 0x83)
            .unwrap();
    }

    fn with_ram(f: impl FnOnce(&Ram)) {
        let mut buf = vec![0u8; 0x10000];
        let cells = Cell::from_mut(&mut buf[..]).as_slice_of_cells();
        let mut mem: Ram = GuestLayout::new();
        mem.add_ram(0, cells).unwrap();
        f(&mem);
    }

    #[test]
    fn four_level_walk_translates_and_faults_with_sdm_error_codes() {
        with_ram(|mem| {
            build_4level(mem);
            let la = 0x0000_7f00_0040_3000u64;
            let user = ctx(PG | CR0_WP, CR4_PAE, LONG | EFER_NXE, 0x1000, 3);
            let t = translate(mem, &user, la + 0x123, Access::Write).unwrap();
            assert_eq!(
                t,
                Translated {
                    physical: 0x9123,
                    page_size: 0x1000
                }
            );
            assert_eq!(t.bytes_to_page_end(), 0x1000 - 0x123);
            // Read-only user page: a user write faults with P|W|U.
            assert_eq!(
                translate(mem, &user, la + 0x1000, Access::Write),
                Err(TranslateError::PageFault(PageFault {
                    address: la + 0x1000,
                    error_code: PF_PRESENT | PF_WRITE | PF_USER
                }))
            );
            // Supervisor write to it: faults with WP set, allowed without.
            let sup = PagingContext { cpl: 0, ..user };
            assert_eq!(
                translate(mem, &sup, la + 0x1000, Access::Write),
                Err(TranslateError::PageFault(PageFault {
                    address: la + 0x1000,
                    error_code: PF_PRESENT | PF_WRITE
                }))
            );
            let no_wp = PagingContext { cr0: PG, ..sup };
            assert_eq!(
                translate(mem, &no_wp, la + 0x1000, Access::Write)
                    .unwrap()
                    .physical,
                0xa000
            );
            // Not present: P clear; a fetch reports I/D with NXE.
            assert_eq!(
                translate(mem, &user, la + 0x2000, Access::Execute),
                Err(TranslateError::PageFault(PageFault {
                    address: la + 0x2000,
                    error_code: PF_USER | PF_FETCH
                }))
            );
            // 2 MiB page: supervisor read works; user read faults; fetch
            // faults on NX.
            let big = la - 0x3000 + 0x20_0000 + 0x1234;
            assert_eq!(
                translate(mem, &sup, big, Access::Read).unwrap(),
                Translated {
                    physical: 0x20_1234,
                    page_size: 0x20_0000
                }
            );
            assert_eq!(
                translate(mem, &user, big, Access::Read),
                Err(TranslateError::PageFault(PageFault {
                    address: big,
                    error_code: PF_PRESENT | PF_USER
                }))
            );
            assert_eq!(
                translate(mem, &sup, big, Access::Execute),
                Err(TranslateError::PageFault(PageFault {
                    address: big,
                    error_code: PF_PRESENT | PF_FETCH
                }))
            );
            // Without NXE, bit 63 is reserved: RSVD fault.
            let no_nxe = PagingContext { efer: LONG, ..sup };
            assert_eq!(
                translate(mem, &no_nxe, big, Access::Read),
                Err(TranslateError::PageFault(PageFault {
                    address: big,
                    error_code: PF_PRESENT | PF_RESERVED
                }))
            );
            // 1 GiB page.
            let huge = (la & !0x3fff_ffff) + 0x4000_0000 + 0x12_3456;
            assert_eq!(
                translate(mem, &sup, huge, Access::Write).unwrap(),
                Translated {
                    physical: 0x4012_3456,
                    page_size: 0x4000_0000
                }
            );
            // SMEP: supervisor fetch from the user page faults.
            let smep = PagingContext {
                cr4: CR4_PAE | CR4_SMEP,
                ..sup
            };
            assert_eq!(
                translate(mem, &smep, la, Access::Execute),
                Err(TranslateError::PageFault(PageFault {
                    address: la,
                    error_code: PF_PRESENT | PF_FETCH
                }))
            );
            assert!(translate(mem, &sup, la, Access::Execute).is_ok());
            // Non-canonical.
            assert_eq!(
                translate(mem, &sup, 0x0000_8000_0000_0000, Access::Read),
                Err(TranslateError::NonCanonical {
                    address: 0x0000_8000_0000_0000
                })
            );
        });
    }

    #[test]
    fn reserved_address_bits_and_tables_outside_ram() {
        with_ram(|mem| {
            let la = 0x40_0000u64;
            // PML4[0] -> 0x2000, PDPT[0] -> 0x3000, PD[2]: 2 MiB page with bit 13 set.
            mem.write_u64(0x1000, 0x2000 | 3).unwrap();
            mem.write_u64(0x2000, 0x3000 | 3).unwrap();
            mem.write_u64(0x3000 + 2 * 8, 0x40_0000 | (1 << 13) | 0x83)
                .unwrap();
            let sup = ctx(PG, CR4_PAE, LONG, 0x1000, 0);
            assert_eq!(
                translate(mem, &sup, la, Access::Read),
                Err(TranslateError::PageFault(PageFault {
                    address: la,
                    error_code: PF_PRESENT | PF_RESERVED
                }))
            );
            // A PDE with an address bit beyond the 40-bit width.
            mem.write_u64(0x3000 + 2 * 8, (1 << 45) | 0x83).unwrap();
            assert!(matches!(
                translate(mem, &sup, la, Access::Read),
                Err(TranslateError::PageFault(PageFault {
                    error_code: 0x9,
                    ..
                }))
            ));
            // A PD pointing outside guest RAM.
            mem.write_u64(0x3000 + 2 * 8, 0x100_0000 | 3).unwrap();
            assert!(matches!(
                translate(mem, &sup, la, Access::Read),
                Err(TranslateError::Memory(MemoryError::NotRam {
                    addr: 0x100_0000,
                    ..
                }))
            ));
        });
    }

    #[test]
    fn five_level_walk_uses_the_pml5() {
        with_ram(|mem| {
            // 57-bit canonical address with PML5 index 1.
            let la: u64 = 1 << 48 | 0x5000;
            mem.write_u64(0x1000 + 8, 0x2000 | 3).unwrap(); // PML5[1]
            mem.write_u64(0x2000, 0x3000 | 3).unwrap(); // PML4[0]
            mem.write_u64(0x3000, 0x4000 | 3).unwrap(); // PDPT[0]
            mem.write_u64(0x4000, 0x5000 | 3).unwrap(); // PD[0]
            mem.write_u64(0x5000 + 5 * 8, 0xe000 | 3).unwrap(); // PT[5]
            let five = ctx(PG, CR4_PAE | CR4_LA57, LONG, 0x1000, 0);
            assert_eq!(
                translate(mem, &five, la | 0x10, Access::Read)
                    .unwrap()
                    .physical,
                0xe010
            );
            // The same address is non-canonical with 4 levels.
            let four = ctx(PG, CR4_PAE, LONG, 0x1000, 0);
            assert_eq!(
                translate(mem, &four, la, Access::Read),
                Err(TranslateError::NonCanonical { address: la })
            );
            // PS in a PML5E is reserved.
            mem.write_u64(0x1000 + 8, 0x2000 | 0x83).unwrap();
            assert!(matches!(
                translate(mem, &five, la, Access::Read),
                Err(TranslateError::PageFault(PageFault {
                    error_code: 0x9,
                    ..
                }))
            ));
        });
    }

    #[test]
    fn pae_walk_reads_pdptes_at_cr3() {
        with_ram(|mem| {
            // CR3 = 0x1020 (32-byte aligned); PDPTE[3] -> PD 0x2000.
            let la: u64 = 0xc020_1abc;
            mem.write_u64(0x1020 + 3 * 8, 0x2000 | 1).unwrap();
            mem.write_u64(0x2000 + 8, 0x3000 | 7).unwrap(); // PD[1]
            mem.write_u64(0x3000 + 8, 0x7000 | 5).unwrap(); // PT[1] user RO
            let pae = ctx(PG | CR0_WP, CR4_PAE, EFER_NXE, 0x1020, 3);
            assert_eq!(
                translate(mem, &pae, la, Access::Read).unwrap().physical,
                0x7abc
            );
            assert_eq!(
                translate(mem, &pae, la, Access::Write),
                Err(TranslateError::PageFault(PageFault {
                    address: la,
                    error_code: PF_PRESENT | PF_WRITE | PF_USER
                }))
            );
            // A PDPTE with R/W (bit 1) set: reserved in PAE paging.
            mem.write_u64(0x1020 + 3 * 8, 0x2000 | 3).unwrap();
            assert_eq!(
                translate(mem, &pae, la, Access::Read),
                Err(TranslateError::PageFault(PageFault {
                    address: la,
                    error_code: PF_PRESENT | PF_RESERVED | PF_USER
                }))
            );
            // PDPTE[0] absent.
            assert_eq!(
                translate(mem, &pae, 0x1000, Access::Read),
                Err(TranslateError::PageFault(PageFault {
                    address: 0x1000,
                    error_code: PF_USER
                }))
            );
        });
    }

    #[test]
    fn thirty_two_bit_walk_with_pse_pages() {
        with_ram(|mem| {
            // PD at 0x1000. PDE[1]: PT at 0x2000 (user RW); PTE[3] -> 0x8000.
            mem.write_u32(0x1000 + 4, 0x2000 | 7).unwrap();
            mem.write_u32(0x2000 + 3 * 4, 0x8000 | 7).unwrap();
            // PDE[2]: 4 MiB page at physical 0x1_0080_0000 (bit 13 = PA bit 32).
            mem.write_u32(0x1000 + 2 * 4, 0x0080_0000 | (1 << 13) | 0x83)
                .unwrap();
            let pse = ctx(PG, CR4_PSE, 0, 0x1000, 0);
            assert_eq!(
                translate(mem, &pse, 0x40_3010, Access::Write)
                    .unwrap()
                    .physical,
                0x8010
            );
            assert_eq!(
                translate(mem, &pse, 0x80_0000 + 0x12_3456, Access::Read).unwrap(),
                Translated {
                    physical: 0x1_0092_3456,
                    page_size: 0x40_0000
                }
            );
            // Bit 21 of a 4 MiB PDE is reserved.
            mem.write_u32(0x1000 + 2 * 4, 0x0080_0000 | (1 << 21) | 0x83)
                .unwrap();
            assert_eq!(
                translate(mem, &pse, 0x80_0000, Access::Read),
                Err(TranslateError::PageFault(PageFault {
                    address: 0x80_0000,
                    error_code: PF_PRESENT | PF_RESERVED
                }))
            );
            // Without CR4.PSE, PS is ignored and the PDE is a table pointer.
            mem.write_u32(0x1000 + 2 * 4, 0x2000 | 0x83).unwrap();
            let no_pse = ctx(PG, 0, 0, 0x1000, 0);
            assert_eq!(
                translate(mem, &no_pse, 0x80_3000, Access::Read)
                    .unwrap()
                    .physical,
                0x8000
            );
            // A fetch fault in 32-bit paging without SMEP has no I/D bit.
            assert_eq!(
                translate(mem, &no_pse, 0xc000_0000, Access::Execute),
                Err(TranslateError::PageFault(PageFault {
                    address: 0xc000_0000,
                    error_code: 0
                }))
            );
            // Upper address bits are dropped outside IA-32e mode.
            assert_eq!(
                translate(mem, &no_pse, 0x1_0040_3000, Access::Read)
                    .unwrap()
                    .physical,
                0x8000
            );
        });
    }

    #[test]
    fn paging_off_is_identity_on_32_bits() {
        with_ram(|mem| {
            let real = ctx(0, 0, 0, 0, 0);
            assert_eq!(real.mode(), PagingMode::Off);
            assert_eq!(
                translate(mem, &real, 0x1_000f_fff0, Access::Execute)
                    .unwrap()
                    .physical,
                0x000f_fff0
            );
        });
    }
}
