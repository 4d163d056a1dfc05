use super::*;
use crate::time::ManualClock;

const TSC_HZ: u64 = 1_000_000_000;

fn apic(clock: &ManualClock) -> LocalApic<&ManualClock> {
    let mut config = LapicConfig::new(0, TSC_HZ);
    config.timer_hz = 100_000_000;
    LocalApic::new(config, clock)
}

fn w(a: &mut LocalApic<&ManualClock>, offset: u32, value: u32) {
    a.mmio_write(u64::from(offset), AccessWidth::Dword, u64::from(value));
}

fn r(a: &mut LocalApic<&ManualClock>, offset: u32) -> u32 {
    a.mmio_read(u64::from(offset), AccessWidth::Dword) as u32
}

fn enabled(clock: &ManualClock) -> LocalApic<&ManualClock> {
    let mut a = apic(clock);
    w(&mut a, reg::SVR, 0x1FF);
    a
}

#[test]
fn power_up_state_matches_the_sdm() {
    let clock = ManualClock::new(0);
    let mut a = LocalApic::new(LapicConfig::new(3, TSC_HZ), &clock);
    assert_eq!(a.apic_base(), 0xFEE0_0000 | (1 << 11) | (1 << 8));
    assert_eq!(a.mmio_base(), Some(0xFEE0_0000));
    assert_eq!(r(&mut a, reg::ID), 3 << 24);
    // Version 0x14, max LVT entry 6 (CMCI present), no directed EOI.
    assert_eq!(r(&mut a, reg::VERSION), 0x0006_0014);
    assert_eq!(r(&mut a, reg::SVR), 0xFF);
    assert_eq!(r(&mut a, reg::DFR), 0xFFFF_FFFF);
    for off in [
        reg::LVT_TIMER,
        reg::LVT_THERMAL,
        reg::LVT_PERF,
        reg::LVT_LINT0,
        reg::LVT_LINT1,
        reg::LVT_ERROR,
        reg::LVT_CMCI,
    ] {
        assert_eq!(r(&mut a, off), 0x0001_0000, "LVT {off:#x} masked");
    }
    assert!(!a.is_enabled(), "software-disabled until SVR bit 8 is set");
    assert_eq!(Lvt::ALL.len(), 7);
}

#[test]
fn ppr_follows_tpr_and_in_service_class() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    a.request_vector(0x51, TriggerMode::Edge);
    a.request_vector(0x3F, TriggerMode::Edge);
    assert_eq!(a.pending_vector(), Some(0x51));
    // TPR class 5 masks class 5.
    w(&mut a, reg::TPR, 0x50);
    assert_eq!(r(&mut a, reg::PPR), 0x50);
    assert_eq!(a.pending_vector(), None);
    // TPR class 4 lets class 5 through, but not class 3.
    w(&mut a, reg::TPR, 0x4F);
    assert_eq!(a.pending_vector(), Some(0x51));
    assert_eq!(a.acknowledge(), Some(0x51));
    assert!(a.isr().contains(0x51) && !a.irr().contains(0x51));
    // ISRV class 5 > TPR class 4: PPR = 0x50 (ISRV[7:4], low bits 0).
    assert_eq!(a.ppr(), 0x50);
    // Same class as in service: held; higher class: delivered (nesting).
    a.request_vector(0x5F, TriggerMode::Edge);
    assert_eq!(a.pending_vector(), None);
    a.request_vector(0x61, TriggerMode::Edge);
    assert_eq!(a.pending_vector(), Some(0x61));
    assert_eq!(a.acknowledge(), Some(0x61));
    // TPR above ISRV wins: PPR = TPR with its low bits.
    a.set_tpr(0x7A);
    assert_eq!(a.ppr(), 0x7A);
    a.set_tpr(0);
    // EOI clears the highest in-service vector only.
    w(&mut a, reg::EOI, 0);
    assert!(!a.isr().contains(0x61) && a.isr().contains(0x51));
    assert_eq!(a.pending_vector(), None, "0x5F is same class as 0x51");
    w(&mut a, reg::EOI, 0);
    assert_eq!(a.pending_vector(), Some(0x5F));
    // ISR/IRR registers show the bits at SDM offsets.
    assert_eq!(r(&mut a, reg::IRR + 0x20), 1 << 31);
    assert_eq!(r(&mut a, reg::IRR + 0x10), 1 << 31);
}

#[test]
fn level_eoi_is_handed_to_the_router_unless_suppressed() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    a.request_vector(0x40, TriggerMode::Level);
    a.request_vector(0x30, TriggerMode::Edge);
    assert_eq!(r(&mut a, reg::TMR + 0x20), 1);
    a.acknowledge();
    w(&mut a, reg::EOI, 0);
    assert_eq!(a.take_level_eoi(), Some(0x40));
    assert_eq!(a.take_level_eoi(), None);
    a.acknowledge();
    w(&mut a, reg::EOI, 0);
    assert_eq!(a.take_level_eoi(), None, "edge vector: no broadcast");

    let mut config = LapicConfig::new(0, TSC_HZ);
    config.directed_eoi = true;
    let mut b = LocalApic::new(config, &clock);
    assert_eq!(r(&mut b, reg::VERSION) >> 24, 1);
    w(&mut b, reg::SVR, 0x11FF);
    b.request_vector(0x40, TriggerMode::Level);
    b.acknowledge();
    w(&mut b, reg::EOI, 0);
    assert_eq!(b.take_level_eoi(), None, "EOI broadcast suppressed");
    // Without directed EOI support, bit 12 is not writable.
    w(&mut a, reg::SVR, 0x11FF);
    assert_eq!(r(&mut a, reg::SVR), 0x1FF);
}

#[test]
fn esr_is_write_before_read_and_illegal_vectors_are_refused() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    a.request_vector(7, TriggerMode::Edge);
    assert!(a.irr().is_empty());
    assert_eq!(r(&mut a, reg::ESR), 0, "not visible before a write");
    w(&mut a, reg::ESR, 0);
    assert_eq!(r(&mut a, reg::ESR), esr::RECEIVE_ILLEGAL_VECTOR);
    w(&mut a, reg::ESR, 0);
    assert_eq!(r(&mut a, reg::ESR), 0);
    // Sending an illegal vector; the unmasked LVT error raises its vector.
    w(&mut a, reg::LVT_ERROR, 0xEE);
    w(&mut a, reg::ICR_LOW, 0x0004_0005);
    w(&mut a, reg::ESR, 0);
    assert_eq!(r(&mut a, reg::ESR), esr::SEND_ILLEGAL_VECTOR);
    assert!(a.irr().contains(0xEE));
    // Reserved register offset.
    r(&mut a, 0x040);
    w(&mut a, reg::ESR, 0);
    assert_eq!(r(&mut a, reg::ESR), esr::ILLEGAL_REGISTER);
}

#[test]
fn software_disable_masks_lvts_and_drops_fixed_interrupts() {
    let clock = ManualClock::new(0);
    let mut a = apic(&clock);
    w(&mut a, reg::LVT_TIMER, 0x30);
    assert_eq!(r(&mut a, reg::LVT_TIMER), 0x0001_0030, "mask stays set");
    a.request_vector(0x30, TriggerMode::Edge);
    assert!(a.irr().is_empty());
    w(&mut a, reg::SVR, 0x1FF);
    w(&mut a, reg::LVT_TIMER, 0x30);
    assert_eq!(r(&mut a, reg::LVT_TIMER), 0x30);
    w(&mut a, reg::SVR, 0x0FF);
    assert_eq!(r(&mut a, reg::LVT_TIMER), 0x0001_0030, "disable sets masks");
    // Read-only bits: delivery status (12) and LINT remote IRR (14).
    w(&mut a, reg::SVR, 0x1FF);
    w(&mut a, reg::LVT_LINT0, 0x0000_5700);
    assert_eq!(r(&mut a, reg::LVT_LINT0), 0x0000_0700);
}

#[test]
fn divide_configuration_encoding() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    // SDM: bits 3,1,0: 000=2 001=4 010=8 011=16 100=32 101=64 110=128 111=1.
    let table = [
        (0x0, 2),
        (0x1, 4),
        (0x2, 8),
        (0x3, 16),
        (0x8, 32),
        (0x9, 64),
        (0xA, 128),
        (0xB, 1),
    ];
    for (code, divisor) in table {
        w(&mut a, reg::TIMER_DIVIDE, code);
        assert_eq!(a.timer.divisor(), divisor, "code {code:#x}");
    }
    w(&mut a, reg::TIMER_DIVIDE, 0xFFFF_FFFF);
    assert_eq!(r(&mut a, reg::TIMER_DIVIDE), 0xB);
}

#[test]
fn one_shot_counts_down_with_divider_and_fires_once() {
    let clock = ManualClock::new(1_000);
    let mut a = enabled(&clock);
    w(&mut a, reg::LVT_TIMER, 0x40);
    w(&mut a, reg::TIMER_DIVIDE, 0x3); // divide by 16: 100 MHz / 16 = 160 ns per count
    w(&mut a, reg::TIMER_INITIAL, 1000);
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 1000);
    clock.advance(1_600);
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 990);
    clock.advance(159);
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 990);
    assert_eq!(a.next_timer_deadline_ns(), Some(1_000 + 160_000));
    clock.set(1_000 + 159_999);
    a.poll_timer();
    assert!(a.irr().is_empty());
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 1);
    clock.set(1_000 + 160_000);
    a.poll_timer();
    assert!(a.irr().contains(0x40));
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 0);
    assert_eq!(a.next_timer_deadline_ns(), None);
    assert_eq!(r(&mut a, reg::TIMER_INITIAL), 1000);
}

#[test]
fn periodic_reloads_and_coalesces_missed_periods() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    w(&mut a, reg::LVT_TIMER, 0x0002_0041); // periodic
    w(&mut a, reg::TIMER_DIVIDE, 0xB); // divide by 1: 10 ns per count
    w(&mut a, reg::TIMER_INITIAL, 100); // period 1000 ns
    clock.set(500);
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 50);
    clock.set(1_000);
    a.poll_timer();
    assert!(a.irr().contains(0x41));
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 100, "reloaded");
    assert_eq!(a.next_timer_deadline_ns(), Some(2_000));
    a.acknowledge();
    a.eoi();
    clock.set(1_990);
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 1);
    a.poll_timer();
    assert!(a.irr().is_empty());
    clock.set(10_500);
    a.poll_timer();
    assert!(a.irr().contains(0x41));
    assert_eq!(a.next_timer_deadline_ns(), Some(11_000));
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 50);
    // Masked: keeps counting, no interrupt, no wake-up deadline.
    a.acknowledge();
    a.eoi();
    w(&mut a, reg::LVT_TIMER, 0x0003_0041);
    assert_eq!(a.next_timer_deadline_ns(), None);
    clock.set(11_000);
    a.poll_timer();
    assert!(a.irr().is_empty());
    // Writing 0 stops the timer.
    w(&mut a, reg::TIMER_INITIAL, 0);
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 0);
}

#[test]
fn divider_change_keeps_the_current_count() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    w(&mut a, reg::LVT_TIMER, 0x41);
    w(&mut a, reg::TIMER_DIVIDE, 0xB);
    w(&mut a, reg::TIMER_INITIAL, 100);
    clock.set(300);
    w(&mut a, reg::TIMER_DIVIDE, 0x0); // now 20 ns per count
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 70);
    clock.set(500);
    assert_eq!(r(&mut a, reg::TIMER_CURRENT), 60);
    assert_eq!(a.next_timer_deadline_ns(), Some(300 + 70 * 20));
}

#[test]
fn tsc_deadline_mode() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    // One-shot mode: the deadline MSR ignores writes and reads 0.
    a.write_msr(MSR_TSC_DEADLINE, 5_000).unwrap();
    assert_eq!(a.read_msr(MSR_TSC_DEADLINE), Ok(0));
    w(&mut a, reg::LVT_TIMER, 0x0004_0050);
    assert_eq!(a.timer_mode(), TimerMode::TscDeadline);
    // Initial count is ignored and the current count reads 0.
    w(&mut a, reg::TIMER_INITIAL, 1234);
    assert_eq!(r(&mut a, reg::TIMER_INITIAL), 0);
    a.write_msr(MSR_TSC_DEADLINE, 5_000).unwrap();
    assert_eq!(a.read_msr(MSR_TSC_DEADLINE), Ok(5_000));
    assert_eq!(a.next_timer_deadline_ns(), Some(5_000));
    clock.set(4_999);
    assert_eq!(a.guest_tsc(), 4_999);
    a.poll_timer();
    assert!(a.irr().is_empty());
    clock.set(5_000);
    a.poll_timer();
    assert!(a.irr().contains(0x50));
    assert_eq!(a.read_msr(MSR_TSC_DEADLINE), Ok(0), "cleared when it fires");
    // Zero disarms; a switch out of the mode disarms.
    a.write_msr(MSR_TSC_DEADLINE, 9_000).unwrap();
    a.write_msr(MSR_TSC_DEADLINE, 0).unwrap();
    assert_eq!(a.next_timer_deadline_ns(), None);
    a.write_msr(MSR_TSC_DEADLINE, 9_000).unwrap();
    w(&mut a, reg::LVT_TIMER, 0x50);
    assert_eq!(a.next_timer_deadline_ns(), None);
    w(&mut a, reg::LVT_TIMER, 0x0004_0050);
    assert_eq!(a.read_msr(MSR_TSC_DEADLINE), Ok(0));
    // A deadline in the past fires at the next poll.
    clock.set(20_000);
    a.write_msr(MSR_TSC_DEADLINE, 10).unwrap();
    a.acknowledge();
    a.eoi();
    a.poll_timer();
    assert!(a.irr().contains(0x50));
}

#[test]
fn x2apic_mode_switch_rules() {
    let clock = ManualClock::new(0);
    let mut a = apic(&clock);
    let en = 1u64 << 11;
    let extd = 1u64 << 10;
    let base = DEFAULT_APIC_BASE | (1 << 8);
    // xAPIC -> x2APIC is allowed.
    a.write_msr(MSR_APIC_BASE, base | en | extd).unwrap();
    assert_eq!(a.mode(), ApicMode::X2Apic);
    assert_eq!(a.mmio_base(), None);
    // x2APIC -> xAPIC is not.
    assert_eq!(
        a.write_msr(MSR_APIC_BASE, base | en),
        Err(ApicFault::InvalidTransition {
            from: ApicMode::X2Apic,
            value: base | en
        })
    );
    // EN=0, EXTD=1 is invalid from anywhere.
    assert!(matches!(
        a.write_msr(MSR_APIC_BASE, base | extd),
        Err(ApicFault::InvalidTransition { .. })
    ));
    // x2APIC -> disabled is allowed, and resets the registers.
    a.write_msr(0x80F, 0x1FF).unwrap();
    a.write_msr(MSR_APIC_BASE, base).unwrap();
    assert_eq!(a.mode(), ApicMode::Disabled);
    // disabled -> x2APIC is not.
    assert!(a.write_msr(MSR_APIC_BASE, base | en | extd).is_err());
    // disabled -> xAPIC is, at a relocated base.
    a.write_msr(MSR_APIC_BASE, 0xFED0_0000 | en).unwrap();
    assert_eq!(a.mode(), ApicMode::XApic);
    assert_eq!(a.mmio_base(), Some(0xFED0_0000));
    assert_eq!(r(&mut a, reg::SVR), 0xFF, "reset by the disable");
    assert_eq!(a.read_msr(MSR_APIC_BASE), Ok(0xFED0_0000 | en | (1 << 8)));
    // Reserved bits: bit 9, and address bits beyond MAXPHYADDR (39).
    assert_eq!(
        a.write_msr(MSR_APIC_BASE, DEFAULT_APIC_BASE | en | (1 << 9)),
        Err(ApicFault::ReservedBaseBits {
            value: DEFAULT_APIC_BASE | en | (1 << 9)
        })
    );
    assert!(a.write_msr(MSR_APIC_BASE, (1 << 40) | en).is_err());
    // No x2APIC offered: EXTD faults.
    let mut config = LapicConfig::new(0, TSC_HZ);
    config.x2apic = false;
    let mut b = LocalApic::new(config, &clock);
    assert!(b.write_msr(MSR_APIC_BASE, base | en | extd).is_err());
    assert_eq!(b.mode(), ApicMode::XApic);
}

#[test]
fn x2apic_msr_access_rules() {
    let clock = ManualClock::new(0);
    let mut a = LocalApic::new(LapicConfig::new(0x23, TSC_HZ), &clock);
    assert_eq!(
        a.read_msr(0x802),
        Err(ApicFault::NotInX2ApicMode { msr: 0x802 })
    );
    a.write_msr(MSR_APIC_BASE, DEFAULT_APIC_BASE | 0xD00)
        .unwrap();
    assert_eq!(a.read_msr(0x802), Ok(0x23), "32-bit x2APIC ID");
    // LDR: cluster 0x23 >> 4 = 2 in bits 31:16, bit 0x23 & 0xF = 3.
    assert_eq!(a.read_msr(0x80D), Ok(0x0002_0008));
    assert_eq!(a.read_msr(0x803), Ok(0x0006_0014));
    assert_eq!(a.read_msr(0x80B), Err(ApicFault::WriteOnly { msr: 0x80B }));
    assert_eq!(a.read_msr(0x83F), Err(ApicFault::WriteOnly { msr: 0x83F }));
    assert_eq!(
        a.read_msr(0x80E),
        Err(ApicFault::NoSuchRegister { msr: 0x80E })
    );
    assert_eq!(
        a.read_msr(0x831),
        Err(ApicFault::NoSuchRegister { msr: 0x831 })
    );
    assert_eq!(
        a.read_msr(0x801),
        Err(ApicFault::NoSuchRegister { msr: 0x801 })
    );
    assert_eq!(
        a.write_msr(0x802, 1),
        Err(ApicFault::ReadOnly {
            msr: 0x802,
            value: 1
        })
    );
    assert_eq!(
        a.write_msr(0x820, 1),
        Err(ApicFault::ReadOnly {
            msr: 0x820,
            value: 1
        })
    );
    assert_eq!(
        a.write_msr(0x80B, 1),
        Err(ApicFault::ReservedBits {
            msr: 0x80B,
            value: 1
        })
    );
    assert_eq!(
        a.write_msr(0x828, 1),
        Err(ApicFault::ReservedBits {
            msr: 0x828,
            value: 1
        })
    );
    assert!(a.write_msr(0x808, 1 << 32).is_err());
    // Reserved bits of TPR, SVR (focus checking, bit 9), LVT timer (bit
    // 19), divide configuration (bit 2).
    for (msr, value) in [
        (0x808, 0x100),
        (0x80F, 0x2FF),
        (0x832, 0x8_0000),
        (0x83E, 0x4),
    ] {
        assert_eq!(
            a.write_msr(msr, value),
            Err(ApicFault::ReservedBits { msr, value }),
            "MSR {msr:#x}"
        );
    }
    // Read-only status bits are not reserved: LINT0 delivery status and
    // remote IRR are accepted and ignored.
    a.write_msr(0x835, 0x5700).unwrap();
    assert_eq!(
        a.read_msr(0x835),
        Ok(0x1_0700),
        "masked: SVR not enabled yet"
    );
    assert_eq!(a.read_msr(0x10), Err(ApicFault::NotApicMsr { msr: 0x10 }));
    a.write_msr(0x80F, 0x1FF).unwrap();
    // SELF_IPI.
    assert!(a.write_msr(0x83F, 0x100).is_err());
    a.write_msr(0x83F, 0x45).unwrap();
    assert!(a.irr().contains(0x45));
    // ICR: fixed to own 32-bit ID, physical.
    a.write_msr(0x830, (0x23u64 << 32) | 0x46).unwrap();
    assert!(a.irr().contains(0x46));
    assert_eq!(a.read_msr(0x830), Ok((0x23u64 << 32) | 0x46));
    assert_eq!(a.remote_ipis(), None);
    // NMI to self by shorthand; INIT to self.
    a.write_msr(0x830, (1 << 18) | (4 << 8)).unwrap();
    assert!(a.take_nmi());
    a.write_msr(0x830, (0x23u64 << 32) | (5 << 8) | (1 << 14))
        .unwrap();
    assert!(a.take_init());
    // Another destination: recorded, not delivered here.
    a.write_msr(0x830, (7u64 << 32) | 0x47).unwrap();
    a.write_msr(0x830, (3 << 18) | 0x48).unwrap();
    assert!(!a.irr().contains(0x47) && !a.irr().contains(0x48));
    assert_eq!(a.remote_ipis().map(|r| r.count), Some(2));
    // All including self: local delivery and a record.
    a.write_msr(0x830, (2 << 18) | 0x49).unwrap();
    assert!(a.irr().contains(0x49));
    assert_eq!(a.remote_ipis().map(|r| r.count), Some(3));
    // The xAPIC page is gone.
    assert_eq!(a.mmio_read(0x20, AccessWidth::Dword), 0xFFFF_FFFF);
}

#[test]
fn without_x2apic_support_the_apic_stays_an_xapic() {
    let clock = ManualClock::new(0);
    // Offered in the configuration, but not built in: the type decides.
    let mut a = LocalApic::xapic_only(LapicConfig::new(0x23, TSC_HZ), &clock);
    let en = 1u64 << 11;
    let extd = 1u64 << 10;
    let base = DEFAULT_APIC_BASE | (1 << 8);
    assert_eq!(
        a.write_msr(MSR_APIC_BASE, base | en | extd),
        Err(ApicFault::InvalidTransition {
            from: ApicMode::XApic,
            value: base | en | extd
        })
    );
    assert_eq!(a.mode(), ApicMode::XApic);
    assert!(!a.is_x2apic());
    // The configuration it reports does not offer x2APIC either.
    assert!(!a.config().x2apic);
    assert_eq!(a.read_msr(MSR_APIC_BASE), Ok(base | en));
    // The x2APIC MSRs fault as outside x2APIC mode.
    assert_eq!(
        a.read_msr(0x802),
        Err(ApicFault::NotInX2ApicMode { msr: 0x802 })
    );
    assert_eq!(
        a.write_msr(0x83F, 0x45),
        Err(ApicFault::NotInX2ApicMode { msr: 0x83F })
    );
    // Nor is x2APIC reachable through the disabled state.
    a.write_msr(MSR_APIC_BASE, base).unwrap();
    assert_eq!(a.mode(), ApicMode::Disabled);
    assert!(a.write_msr(MSR_APIC_BASE, base | en | extd).is_err());
    a.write_msr(MSR_APIC_BASE, base | en).unwrap();
    // The xAPIC works as with x2APIC support: 8-bit ID in bits 31:24,
    // SELF_IPI absent from the page, an ICR IPI to its own ID delivered.
    let mut w = |offset: u32, value: u32| {
        a.mmio_write(u64::from(offset), AccessWidth::Dword, u64::from(value))
    };
    w(reg::SVR, 0x1FF);
    w(reg::ICR_HIGH, 0x2300_0000);
    w(reg::ICR_LOW, 0x51);
    w(reg::SELF_IPI, 0x52);
    assert_eq!(
        a.mmio_read(u64::from(reg::ID), AccessWidth::Dword),
        0x2300_0000
    );
    assert!(a.irr().contains(0x51));
    assert!(!a.irr().contains(0x52));
    assert_eq!(
        a.mmio_read(u64::from(reg::ESR), AccessWidth::Dword),
        0,
        "not visible before the ESR write"
    );
    a.mmio_write(u64::from(reg::ESR), AccessWidth::Dword, 0);
    assert_eq!(
        a.mmio_read(u64::from(reg::ESR), AccessWidth::Dword),
        u64::from(esr::ILLEGAL_REGISTER),
        "SELF_IPI is no xAPIC register"
    );
    assert!(a.matches(Destination::Physical(0x23)));
    assert!(a.matches(Destination::Physical(0xFF)));
    assert!(!a.matches(Destination::Physical(0x24)));
}

#[test]
fn xapic_icr_and_mmio_width_decoding() {
    let clock = ManualClock::new(0);
    let mut a = LocalApic::new(LapicConfig::new(2, TSC_HZ), &clock);
    w(&mut a, reg::SVR, 0x1FF);
    // Byte reads inside the version register 0x00060014.
    assert_eq!(a.mmio_read(0x30, AccessWidth::Byte), 0x14);
    assert_eq!(a.mmio_read(0x32, AccessWidth::Byte), 0x06);
    assert_eq!(a.mmio_read(0x32, AccessWidth::Word), 0x0006);
    assert_eq!(a.mmio_read(0x34, AccessWidth::Dword), 0);
    // Misaligned or narrow writes do not reach the register.
    a.mmio_write(0x84, AccessWidth::Dword, 0x20);
    a.mmio_write(0x80, AccessWidth::Byte, 0x20);
    assert_eq!(a.tpr(), 0);
    // ICR: destination in ICR high bits 31:24; the low write sends.
    w(&mut a, reg::ICR_HIGH, 0x0200_0000);
    w(&mut a, reg::ICR_LOW, 0x0000_0051);
    assert!(a.irr().contains(0x51));
    assert_eq!(
        r(&mut a, reg::ICR_LOW) & (1 << 12),
        0,
        "delivery status idle"
    );
    w(&mut a, reg::ICR_HIGH, 0x0500_0000);
    w(&mut a, reg::ICR_LOW, 0x0000_0052);
    assert!(!a.irr().contains(0x52));
    assert_eq!(a.remote_ipis().map(|r| r.icr >> 56), Some(5));
    // INIT level de-assert is ignored.
    w(&mut a, reg::ICR_LOW, 0x0000_8500);
    assert!(!a.take_init());
}

#[test]
fn logical_destinations_flat_and_cluster() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    w(&mut a, reg::LDR, 0x0400_0000); // logical ID bit 2
    assert!(a.matches(Destination::Logical(0x04)));
    assert!(a.matches(Destination::Logical(0x0C)));
    assert!(!a.matches(Destination::Logical(0x03)));
    assert!(a.matches(Destination::Logical(0xFF)));
    // Cluster model: cluster 3, member bit 1.
    w(&mut a, reg::DFR, 0x0FFF_FFFF);
    w(&mut a, reg::LDR, 0x3200_0000);
    assert!(a.matches(Destination::Logical(0x32)));
    assert!(a.matches(Destination::Logical(0x36)));
    assert!(!a.matches(Destination::Logical(0x22)));
    assert!(a.matches(Destination::Physical(0)));
    assert!(a.matches(Destination::Physical(0xFF)));
    assert!(!a.matches(Destination::Physical(1)));
}

#[test]
fn lint0_extint_and_lint1_nmi() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    assert!(!a.accepts_pic_interrupts(), "LINT0 masked at reset");
    w(&mut a, reg::LVT_LINT0, 0x700);
    assert!(a.accepts_pic_interrupts());
    w(&mut a, reg::LVT_LINT0, 0x1_0700);
    assert!(!a.accepts_pic_interrupts());
    w(&mut a, reg::LVT_LINT1, 0x400);
    a.lint_edge(true);
    assert!(a.nmi_pending());
    // Globally disabled: INTR goes straight to the core.
    a.set_apic_base(DEFAULT_APIC_BASE).unwrap();
    assert!(a.accepts_pic_interrupts());
    assert!(!a.matches(Destination::Physical(0)));
}

#[test]
fn values_for_apic_virtualization() {
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    assert_eq!(a.tpr_threshold(), 0);
    assert_eq!(a.guest_interrupt_status(), 0);
    a.request_vector(0x51, TriggerMode::Edge);
    a.set_tpr(0x60);
    // 0x51 is masked by TPR class 6: CR8 writes below class 5 must exit.
    assert_eq!(a.tpr_threshold(), 5);
    a.set_tpr(0x40);
    assert_eq!(a.tpr_threshold(), 0, "deliverable: no threshold needed");
    a.acknowledge();
    a.request_vector(0x42, TriggerMode::Level);
    // RVI 0x42, SVI 0x51.
    assert_eq!(a.guest_interrupt_status(), 0x5142);
    // Vector 0x42 is bit 2 of TMR word 2, i.e. bit 2 of bitmap qword 1.
    assert_eq!(a.eoi_exit_bitmap(), [0, 1 << 2, 0, 0]);
}

#[test]
fn interrupt_generations_change_whenever_tpr_irr_isr_or_tmr_change() {
    // Whoever copies these registers (APIC virtualization) skips the copy
    // while the generation stays the same: no change may go unannounced.
    let clock = ManualClock::new(0);
    let mut a = enabled(&clock);
    let snapshot = |a: &LocalApic<&ManualClock>| {
        let words = |set: &VectorSet| -> [u32; 8] { core::array::from_fn(|i| set.word(i)) };
        (a.tpr(), words(a.irr()), words(a.isr()), words(a.tmr()))
    };
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let mut changes = 0;
    for step in 0..4000 {
        let before = (snapshot(&a), a.interrupt_generations());
        let vector = next(256) as u8;
        match next(14) {
            0 => a.request_vector(vector, TriggerMode::Edge),
            1 => a.request_vector(vector, TriggerMode::Level),
            2 => a.set_tpr(vector & 0xF0),
            3 => w(&mut a, reg::TPR, u32::from(vector)),
            4 => w(&mut a, reg::EOI, 0),
            5 => {
                a.acknowledge();
            }
            6 => a.accept_delivered(vector),
            7 => a.end_of_interrupt(vector),
            // A self-IPI through the ICR; an illegal vector reaches the ESR
            // and the error LVT.
            8 => w(&mut a, reg::ICR_LOW, (1 << 18) | u32::from(vector)),
            9 => w(&mut a, reg::LVT_ERROR, u32::from(vector)),
            10 => w(&mut a, reg::SVR, if next(2) == 0 { 0xFF } else { 0x1FF }),
            11 if next(16) == 0 => {
                // Global disable (resets the registers) and enable.
                a.set_apic_base(DEFAULT_APIC_BASE).unwrap();
                a.set_apic_base(DEFAULT_APIC_BASE | (1 << 11)).unwrap();
                w(&mut a, reg::SVR, 0x1FF);
            }
            12 => a.lint_edge(next(2) == 0),
            _ => {
                let _ = a.take_level_eoi();
            }
        }
        let after = (snapshot(&a), a.interrupt_generations());
        assert_eq!(after.1.any, a.interrupt_generation());
        if after.0 != before.0 {
            changes += 1;
            assert_ne!(
                after.1.any, before.1.any,
                "step {step}: a change kept generation {:?}",
                before.1
            );
        }
        let moved = [
            (
                after.0 .0 != before.0 .0,
                after.1.tpr != before.1.tpr,
                "TPR",
            ),
            (
                after.0 .1 != before.0 .1,
                after.1.irr != before.1.irr,
                "IRR",
            ),
            (
                after.0 .2 != before.0 .2,
                after.1.isr != before.1.isr,
                "ISR",
            ),
            (
                after.0 .3 != before.0 .3,
                after.1.tmr != before.1.tmr,
                "TMR",
            ),
        ];
        for (changed, counted, register) in moved {
            assert!(
                !changed || counted,
                "step {step}: the {register} changed, its generation did not"
            );
        }
    }
    assert!(changes > 800, "only {changes} changes");
}
