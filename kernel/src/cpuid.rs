//! What CPUID tells a guest.
//!
//! A [`CpuidPolicy`] is a fixed-capacity table of leaves answered on every
//! CPUID exit. It is built from the host's own answers ([`CpuidPolicy::from_host`])
//! with what the guest must not see removed — VMX, SMX, MONITOR/MWAIT,
//! performance monitoring, thermal and power management, more than one
//! logical processor, and features whose instructions or MSRs the
//! hypervisor does not emulate (XSAVE, whose XSETBV exits; TSC_ADJUST; TSX;
//! the speculation-control MSRs) — and what a guest should know added: the
//! hypervisor bit, its APIC id, and the TSC frequency the hypervisor
//! actually provides (leaf 0x15 with the LAPIC timer's clock as the crystal,
//! 0x16, and the hypervisor timing leaf 0x40000010), so that the guest does
//! not calibrate against a clock that is not there. Hypervisor
//! interfaces (Hyper-V, Xen) add their own leaves with [`CpuidPolicy::set`].

use heapless::Vec;

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

impl From<[u32; 4]> for CpuidResult {
    /// From EAX, EBX, ECX, EDX in that order.
    fn from([eax, ebx, ecx, edx]: [u32; 4]) -> Self {
        Self { eax, ebx, ecx, edx }
    }
}

/// One answered leaf; `subleaf` is `None` for leaves that ignore ECX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    leaf: u32,
    subleaf: Option<u32>,
    result: CpuidResult,
}

/// The table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidTableFull {
    /// The table's capacity.
    pub capacity: usize,
}

/// What the guest's processor looks like beyond the host's features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCpu {
    /// The vCPU's initial APIC id.
    pub apic_id: u8,
    /// The guest has a local APIC (CPUID.1:EDX.APIC).
    pub apic: bool,
    /// The local APIC offers x2APIC mode (CPUID.1:ECX.x2APIC).
    pub x2apic: bool,
    /// The LAPIC timer offers TSC-deadline mode (CPUID.1:ECX bit 24).
    pub tsc_deadline: bool,
    /// The guest TSC frequency in kHz, if known.
    pub tsc_khz: Option<u32>,
    /// The LAPIC timer (bus) frequency in kHz, if known.
    pub apic_timer_khz: Option<u32>,
}

/// Leaves whose answer depends on ECX (SDM Vol. 2A, CPUID).
const fn has_subleaves(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7 | 0xB | 0xD | 0xF | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1F | 0x8000_001D
    )
}

/// How many subleaves of a subleaf-indexed leaf the policy copies from the host.
const SUBLEAVES_COPIED: u32 = 4;
/// Highest basic leaf the policy copies from the host.
const MAX_BASIC_LEAF: u32 = 0x1F;
/// Highest extended leaf the policy copies from the host.
const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;
/// The hypervisor timing leaf (TSC and bus frequency in kHz), as read by Linux.
pub const TIMING_LEAF: u32 = 0x4000_0010;

mod bits {
    pub const ECX1_MONITOR: u32 = 1 << 3;
    pub const ECX1_VMX: u32 = 1 << 5;
    pub const ECX1_SMX: u32 = 1 << 6;
    pub const ECX1_EST: u32 = 1 << 7;
    pub const ECX1_TM2: u32 = 1 << 8;
    pub const ECX1_PDCM: u32 = 1 << 15;
    pub const ECX1_X2APIC: u32 = 1 << 21;
    pub const ECX1_TSC_DEADLINE: u32 = 1 << 24;
    pub const ECX1_HYPERVISOR: u32 = 1 << 31;
    pub const EDX1_ACPI: u32 = 1 << 22;
    pub const EDX1_TM: u32 = 1 << 29;
    pub const EDX1_PBE: u32 = 1 << 31;
    pub const EDX1_APIC: u32 = 1 << 9;
    pub const EDX1_HTT: u32 = 1 << 28;
    pub const ECX1_FMA: u32 = 1 << 12;
    pub const ECX1_XSAVE: u32 = 1 << 26;
    pub const ECX1_OSXSAVE: u32 = 1 << 27;
    pub const ECX1_AVX: u32 = 1 << 28;
    pub const ECX1_F16C: u32 = 1 << 29;
    pub const EBX7_TSC_ADJUST: u32 = 1 << 1;
    pub const EBX7_HLE: u32 = 1 << 4;
    pub const EBX7_RTM: u32 = 1 << 11;
    /// MD_CLEAR, IBRS/IBPB, STIBP, L1D_FLUSH, ARCH_CAPABILITIES, SSBD.
    pub const EDX7_SPECULATION: u32 =
        (1 << 10) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29) | (1 << 31);
    pub const EBX7_SGX: u32 = 1 << 2;
    pub const EBX7_INTEL_PT: u32 = 1 << 25;
    pub const ECX7_WAITPKG: u32 = 1 << 5;
    pub const ECX7_SGX_LC: u32 = 1 << 30;
}

/// The guest's CPUID, answered from a table of up to `N` leaves.
#[derive(Clone, Debug)]
pub struct CpuidPolicy<const N: usize> {
    entries: Vec<Entry, N>,
}

impl<const N: usize> Default for CpuidPolicy<N> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<const N: usize> CpuidPolicy<N> {
    /// A policy copied from the host's CPUID (`host(leaf, subleaf)`) and
    /// adjusted for a single-vCPU guest described by `guest`.
    pub fn from_host(
        host: impl Fn(u32, u32) -> CpuidResult,
        guest: &GuestCpu,
    ) -> Result<Self, CpuidTableFull> {
        let mut policy = Self::default();
        let max_basic = host(0, 0).eax.min(MAX_BASIC_LEAF);
        let max_extended = host(0x8000_0000, 0)
            .eax
            .clamp(0x8000_0000, MAX_EXTENDED_LEAF);
        let basic = 0..=max_basic;
        let extended = 0x8000_0000..=max_extended;
        for leaf in basic.chain(extended) {
            if has_subleaves(leaf) {
                for subleaf in 0..SUBLEAVES_COPIED {
                    policy.set(leaf, Some(subleaf), host(leaf, subleaf))?;
                }
            } else {
                policy.set(leaf, None, host(leaf, 0))?;
            }
        }
        policy.set(
            0,
            None,
            CpuidResult {
                eax: max_basic,
                ..host(0, 0)
            },
        )?;
        policy.set(
            0x8000_0000,
            None,
            CpuidResult {
                eax: max_extended,
                ..host(0x8000_0000, 0)
            },
        )?;
        policy.adjust_for(guest)?;
        Ok(policy)
    }

    /// A policy copied from the processor the image runs on (see
    /// [`CpuidPolicy::from_host`]).
    pub fn for_this_cpu(guest: &GuestCpu) -> Result<Self, CpuidTableFull> {
        Self::from_host(
            |leaf, subleaf| ponte_arch::cpu::cpuid(leaf, subleaf).into(),
            guest,
        )
    }

    fn adjust_for(&mut self, guest: &GuestCpu) -> Result<(), CpuidTableFull> {
        use bits::*;
        let mut leaf1 = self.lookup(1, 0);
        leaf1.ecx &= !(ECX1_MONITOR | ECX1_VMX | ECX1_SMX | ECX1_EST | ECX1_TM2 | ECX1_PDCM);
        leaf1.ecx &= !(ECX1_X2APIC | ECX1_TSC_DEADLINE);
        // XSETBV exits and is not emulated: no XSAVE and nothing built on it.
        leaf1.ecx &= !(ECX1_XSAVE | ECX1_OSXSAVE | ECX1_AVX | ECX1_FMA | ECX1_F16C);
        leaf1.ecx |= ECX1_HYPERVISOR;
        if guest.apic && guest.x2apic {
            leaf1.ecx |= ECX1_X2APIC;
        }
        if guest.apic && guest.tsc_deadline {
            leaf1.ecx |= ECX1_TSC_DEADLINE;
        }
        leaf1.edx &= !(EDX1_ACPI | EDX1_TM | EDX1_PBE | EDX1_HTT | EDX1_APIC);
        if guest.apic {
            leaf1.edx |= EDX1_APIC;
        }
        // EBX: APIC id in 31:24, one logical processor in 23:16, keep CLFLUSH size and brand.
        leaf1.ebx = (leaf1.ebx & 0xFFFF) | (1 << 16) | (u32::from(guest.apic_id) << 24);
        self.set(1, None, leaf1)?;

        for subleaf in 0..SUBLEAVES_COPIED {
            // Deterministic cache parameters: one logical processor per cache.
            if let Some(cache) = self.answer_mut(4, Some(subleaf)) {
                cache.eax &= 0x3FF;
            }
        }
        if let Some(leaf7) = self.answer_mut(7, Some(0)) {
            leaf7.ebx &= !(EBX7_SGX | EBX7_INTEL_PT | EBX7_TSC_ADJUST | EBX7_HLE | EBX7_RTM);
            leaf7.ecx &= !(ECX7_WAITPKG | ECX7_SGX_LC);
            leaf7.edx &= !EDX7_SPECULATION;
        }
        // No thermal/power management, no performance monitoring, no SGX,
        // no processor trace: those leaves read as zero.
        for leaf in [0x5, 0x6, 0xA] {
            if let Some(result) = self.answer_mut(leaf, None) {
                *result = CpuidResult::default();
            }
        }
        for leaf in [0xD, 0x12, 0x14] {
            for subleaf in 0..SUBLEAVES_COPIED {
                if let Some(result) = self.answer_mut(leaf, Some(subleaf)) {
                    *result = CpuidResult::default();
                }
            }
        }
        // Topology: one thread of one core; x2APIC id in EDX.
        for leaf in [0xB, 0x1F] {
            for subleaf in 0..SUBLEAVES_COPIED {
                if let Some(result) = self.answer_mut(leaf, Some(subleaf)) {
                    let level = match subleaf {
                        0 => CpuidResult {
                            eax: 0,
                            ebx: 1,
                            ecx: 0x100,
                            edx: 0,
                        },
                        1 => CpuidResult {
                            eax: 0,
                            ebx: 1,
                            ecx: 0x201,
                            edx: 0,
                        },
                        n => CpuidResult {
                            eax: 0,
                            ebx: 0,
                            ecx: n,
                            edx: 0,
                        },
                    };
                    *result = CpuidResult {
                        edx: u32::from(guest.apic_id),
                        ..level
                    };
                }
            }
        }
        if let Some(tsc_khz) = guest.tsc_khz {
            // Leaf 0x15: TSC Hz = ECX (crystal Hz) * EBX / EAX. Guests that
            // find it (Linux on Intel) also clock the LAPIC timer from the
            // crystal, so the crystal is the LAPIC timer's clock when known
            // (1 kHz otherwise). Leaf 0 must reach 0x16 for it to be read.
            let crystal_khz = guest.apic_timer_khz.filter(|&k| k != 0).unwrap_or(1);
            let mut leaf0 = self.lookup(0, 0);
            if leaf0.eax < 0x16 {
                leaf0.eax = 0x16;
                self.set(0, None, leaf0)?;
            }
            let crystal = CpuidResult {
                eax: crystal_khz,
                ebx: tsc_khz,
                ecx: crystal_khz.saturating_mul(1000),
                edx: 0,
            };
            self.set(0x15, None, crystal)?;
            let mhz = tsc_khz / 1000;
            let bus_mhz = guest.apic_timer_khz.map_or(0, |k| k / 1000);
            self.set(
                0x16,
                None,
                CpuidResult {
                    eax: mhz,
                    ebx: mhz,
                    ecx: bus_mhz,
                    edx: 0,
                },
            )?;
            let timing = CpuidResult {
                eax: tsc_khz,
                ebx: guest.apic_timer_khz.unwrap_or(0),
                ecx: 0,
                edx: 0,
            };
            self.set(TIMING_LEAF, None, timing)?;
        }
        Ok(())
    }

    /// Answers `leaf`/`subleaf` with `result` (`subleaf` `None` for every ECX).
    // Out of line: building a policy calls it a few dozen times.
    #[inline(never)]
    pub fn set(
        &mut self,
        leaf: u32,
        subleaf: Option<u32>,
        result: CpuidResult,
    ) -> Result<(), CpuidTableFull> {
        if let Some(answer) = self.answer_mut(leaf, subleaf) {
            *answer = result;
            return Ok(());
        }
        self.entries
            .push(Entry {
                leaf,
                subleaf,
                result,
            })
            .map_err(|_| CpuidTableFull { capacity: N })
    }

    fn find(&self, leaf: u32, subleaf: Option<u32>) -> Option<usize> {
        position(&self.entries, leaf, subleaf)
    }

    /// The stored answer for exactly `leaf`/`subleaf`, if the table has one.
    fn answer_mut(&mut self, leaf: u32, subleaf: Option<u32>) -> Option<&mut CpuidResult> {
        let i = self.find(leaf, subleaf)?;
        self.entries.get_mut(i).map(|e| &mut e.result)
    }

    /// The guest's answer to CPUID with EAX = `leaf`, ECX = `subleaf`.
    ///
    /// A leaf above the highest basic leaf (and outside the extended and
    /// hypervisor ranges) answers like the highest basic leaf, as Intel
    /// processors do; unknown leaves in the other ranges answer zeros.
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        lookup(&self.entries, leaf, subleaf)
    }
}

/// The index of the entry for exactly `leaf`/`subleaf`.
#[inline(never)]
fn position(entries: &[Entry], leaf: u32, subleaf: Option<u32>) -> Option<usize> {
    entries
        .iter()
        .position(|e| e.leaf == leaf && e.subleaf == subleaf)
}

/// [`CpuidPolicy::lookup`] over the table's entries (one copy for every
/// capacity).
#[inline(never)]
fn lookup(entries: &[Entry], leaf: u32, subleaf: u32) -> CpuidResult {
    if let Some(result) = entry(entries, leaf, subleaf) {
        return result;
    }
    let max_basic = entry(entries, 0, 0).map_or(0, |r| r.eax);
    let in_other_range = (0x4000_0000..0x5000_0000).contains(&leaf) || leaf >= 0x8000_0000;
    if leaf > max_basic && !in_other_range {
        return entry(entries, max_basic, subleaf).unwrap_or_default();
    }
    CpuidResult::default()
}

/// The answer of the first entry for `leaf` that applies to `subleaf`.
fn entry(entries: &[Entry], leaf: u32, subleaf: u32) -> Option<CpuidResult> {
    entries
        .iter()
        .find(|e| e.leaf == leaf && e.subleaf.is_none_or(|s| s == subleaf))
        .map(|e| e.result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with VMX, MONITOR, x2APIC, perfmon and 4 logical processors,
    /// like the processors Bochs emulates.
    fn host(leaf: u32, subleaf: u32) -> CpuidResult {
        match (leaf, subleaf) {
            (0, _) => CpuidResult {
                eax: 0x16,
                ebx: 0x756e_6547,
                ecx: 0x6c65_746e,
                edx: 0x4965_6e69,
            },
            (1, _) => CpuidResult {
                eax: 0x5_0654,
                ebx: 0x0304_0800,
                ecx: 0xFFFA_3223,
                edx: 0xBFEB_FBFF,
            },
            (4, 0) => CpuidResult {
                eax: 0x1C00_4121,
                ebx: 0x01C0_003F,
                ecx: 0x3F,
                edx: 0,
            },
            (7, 0) => CpuidResult {
                eax: 0,
                ebx: 0x0200_0004,
                ecx: 0x4000_0020,
                edx: 0,
            },
            (0xA, _) => CpuidResult {
                eax: 0x0730_0404,
                ..Default::default()
            },
            (0xB, 0) => CpuidResult {
                eax: 1,
                ebx: 2,
                ecx: 0x100,
                edx: 3,
            },
            (0x15, _) => CpuidResult {
                eax: 2,
                ebx: 0x11c,
                ecx: 0,
                edx: 0,
            },
            (0x16, _) => CpuidResult {
                eax: 3500,
                ebx: 3500,
                ecx: 100,
                edx: 0,
            },
            (0x8000_0000, _) => CpuidResult {
                eax: 0x8000_0008,
                ..Default::default()
            },
            (0x8000_0001, _) => CpuidResult {
                ecx: 0x121,
                edx: 0x2C10_0800,
                ..Default::default()
            },
            _ => CpuidResult::default(),
        }
    }

    const GUEST: GuestCpu = GuestCpu {
        apic_id: 0,
        apic: true,
        x2apic: true,
        tsc_deadline: false,
        tsc_khz: Some(50_000),
        apic_timer_khz: Some(1_000_000 / 1000),
    };

    fn policy() -> CpuidPolicy<96> {
        CpuidPolicy::from_host(host, &GUEST).unwrap()
    }

    #[test]
    fn vendor_and_ranges_come_from_the_host() {
        let p = policy();
        let leaf0 = p.lookup(0, 0);
        assert_eq!(
            (leaf0.ebx, leaf0.edx, leaf0.ecx),
            (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
        );
        assert_eq!(leaf0.eax, 0x16);
        assert_eq!(p.lookup(0x8000_0000, 0).eax, 0x8000_0008);
        assert_eq!(p.lookup(0x8000_0001, 0).edx, 0x2C10_0800);
    }

    #[test]
    fn virtualization_and_power_features_are_hidden_hypervisor_bit_set() {
        let leaf1 = policy().lookup(1, 0);
        assert_eq!(leaf1.ecx & bits::ECX1_VMX, 0, "nested VMX is not offered");
        assert_eq!(leaf1.ecx & bits::ECX1_MONITOR, 0);
        assert_eq!(leaf1.ecx & bits::ECX1_SMX, 0);
        assert_ne!(leaf1.ecx & bits::ECX1_HYPERVISOR, 0);
        assert_ne!(leaf1.ecx & bits::ECX1_X2APIC, 0);
        assert_eq!(
            leaf1.ecx & bits::ECX1_TSC_DEADLINE,
            0,
            "not offered by GUEST"
        );
        assert_eq!(leaf1.edx & bits::EDX1_HTT, 0);
        assert_ne!(leaf1.edx & bits::EDX1_APIC, 0);
        assert_eq!(leaf1.ebx >> 16, 1, "APIC id 0, one logical processor");
        assert_eq!(leaf1.ebx & 0xFFFF, 0x0800, "CLFLUSH line size kept");
        assert_eq!(
            policy().lookup(0xA, 0),
            CpuidResult::default(),
            "no perfmon"
        );
        assert_eq!(policy().lookup(7, 0).ebx & bits::EBX7_SGX, 0);
        assert_eq!(leaf1.ecx & bits::ECX1_XSAVE, 0, "XSETBV is not emulated");
        assert_eq!(policy().lookup(7, 0).ebx & bits::EBX7_RTM, 0);
        assert_eq!(policy().lookup(0xD, 0), CpuidResult::default());
    }

    #[test]
    fn apic_flags_follow_the_guest_description() {
        let no_apic = GuestCpu {
            apic: false,
            ..GUEST
        };
        let p: CpuidPolicy<96> = CpuidPolicy::from_host(host, &no_apic).unwrap();
        let leaf1 = p.lookup(1, 0);
        assert_eq!(leaf1.edx & bits::EDX1_APIC, 0);
        assert_eq!(leaf1.ecx & bits::ECX1_X2APIC, 0, "x2APIC needs an APIC");
        let deadline = GuestCpu {
            tsc_deadline: true,
            apic_id: 3,
            ..GUEST
        };
        let p: CpuidPolicy<96> = CpuidPolicy::from_host(host, &deadline).unwrap();
        assert_ne!(p.lookup(1, 0).ecx & bits::ECX1_TSC_DEADLINE, 0);
        assert_eq!(p.lookup(1, 0).ebx >> 24, 3);
        assert_eq!(p.lookup(0xB, 0).edx, 3, "x2APIC id in leaf 0xB");
    }

    #[test]
    fn tsc_frequency_is_reported_where_guests_look() {
        let p = policy();
        let l15 = p.lookup(0x15, 0);
        assert_eq!(
            u64::from(l15.ecx) * u64::from(l15.ebx) / u64::from(l15.eax),
            50_000_000
        );
        assert_eq!(
            l15.ecx, 1_000_000,
            "the crystal is the LAPIC timer's 1 MHz clock"
        );
        assert_eq!(p.lookup(0x16, 0).eax, 50);
        assert_eq!(
            p.lookup(TIMING_LEAF, 0),
            CpuidResult {
                eax: 50_000,
                ebx: 1000,
                ecx: 0,
                edx: 0
            }
        );
    }

    #[test]
    fn leaves_beyond_the_maximum_answer_like_intel() {
        let mut p = policy();
        p.set(
            0x4000_0000,
            None,
            CpuidResult {
                eax: 0x4000_0010,
                ebx: 1,
                ecx: 2,
                edx: 3,
            },
        )
        .unwrap();
        // Above the basic maximum (0x16): the highest basic leaf's answer.
        assert_eq!(p.lookup(0x30, 0), p.lookup(0x16, 0));
        // Unknown extended or hypervisor leaves: zeros.
        assert_eq!(p.lookup(0x8000_0010, 0), CpuidResult::default());
        assert_eq!(p.lookup(0x4000_0100, 0), CpuidResult::default());
        assert_eq!(
            p.lookup(0x4000_0000, 7).ecx,
            2,
            "subleaf ignored for a leaf set with None"
        );
    }

    #[test]
    fn subleaves_are_distinct_and_table_capacity_is_reported() {
        let p = policy();
        assert_eq!(p.lookup(4, 0).eax & 0x3FF, 0x121);
        assert_eq!(
            p.lookup(4, 0).eax >> 14,
            0,
            "no sharing threads in the cache leaf"
        );
        assert_eq!(p.lookup(4, 1), CpuidResult::default());
        let small = CpuidPolicy::<4>::from_host(host, &GUEST);
        assert_eq!(small.unwrap_err(), CpuidTableFull { capacity: 4 });
    }
}
