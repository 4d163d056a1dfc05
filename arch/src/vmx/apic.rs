//! The virtual-APIC page of APIC virtualization (SDM Vol. 3C, "APIC
//! Virtualization and Virtual Interrupts"): the 4-KiB page the processor
//! reads and writes in place of the local APIC's registers while the guest
//! runs with "use TPR shadow" (VTPR at 080H), "virtual-interrupt delivery"
//! (VPPR 0A0H, VEOI 0B0H, VISR 100H-170H, VIRR 200H-270H) and "APIC-register
//! virtualization" (every register the guest may read without an exit).
//!
//! [`VirtualApicPage`] owns one such page (or another page the guest may
//! reach, such as the APIC-access page). The processor changes it while the
//! guest runs, behind the compiler's back, so every access is volatile and
//! word-sized at the 32-bit register slots the SDM defines.

use super::Page4K;

/// Offsets of the registers in the virtual-APIC page that the processor
/// itself uses (the layout is the xAPIC page's).
pub mod offset {
    /// Virtual task-priority register (VTPR).
    pub const VTPR: u32 = 0x080;
    /// Virtual processor-priority register (VPPR).
    pub const VPPR: u32 = 0x0A0;
    /// Virtual end-of-interrupt register (VEOI).
    pub const VEOI: u32 = 0x0B0;
    /// Virtual in-service register, eight 32-bit words 16 bytes apart (VISR).
    pub const VISR: u32 = 0x100;
    /// Virtual trigger-mode register, eight words (VTMR).
    pub const VTMR: u32 = 0x180;
    /// Virtual interrupt-request register, eight words (VIRR).
    pub const VIRR: u32 = 0x200;
}

/// One virtual-APIC page (see the module documentation).
#[derive(Debug)]
pub struct VirtualApicPage<'a> {
    page: &'a mut Page4K,
}

impl<'a> VirtualApicPage<'a> {
    /// Takes `page` as a virtual-APIC page and clears it.
    pub fn new(page: &'a mut Page4K) -> Self {
        let mut this = Self { page };
        this.fill(0);
        this
    }

    /// The page's physical address (ponte images are identity-mapped), for
    /// the VMCS's virtual-APIC address.
    pub fn address(&self) -> u64 {
        self.page.phys_addr()
    }

    /// The 32-bit word at `offset` (bits 1:0 of the offset are ignored, as
    /// are bits above 11).
    pub fn read(&self, offset: u32) -> u32 {
        let index = (offset & 0xFFC) as usize;
        let word = self.page.0[index..index + 4].as_ptr().cast::<u32>();
        // SAFETY: `word` points at 4 bytes inside the page, 4-byte aligned
        // (the page is 4-KiB aligned and the index a multiple of 4); the
        // volatile read sees what the processor wrote during guest
        // execution.
        unsafe { core::ptr::read_volatile(word) }
    }

    /// Writes the 32-bit word at `offset` (bits 1:0 and above 11 ignored).
    pub fn write(&mut self, offset: u32, value: u32) {
        let index = (offset & 0xFFC) as usize;
        let word = self.page.0[index..index + 4].as_mut_ptr().cast::<u32>();
        // SAFETY: as for `read`; the page is borrowed mutably, so nothing
        // else in the host writes it at the same time.
        unsafe { core::ptr::write_volatile(word, value) }
    }

    /// Sets every word of the page to `value`.
    pub fn fill(&mut self, value: u32) {
        for slot in (0..0x1000).step_by(4) {
            self.write(slot, value);
        }
    }

    /// The 256-bit register (VISR, VTMR, VIRR) at `base` as eight words,
    /// vectors 0-31 first.
    pub fn read_vectors(&self, base: u32) -> [u32; 8] {
        // Spelled out: the loop `from_fn` makes is not unrolled.
        let word = |index: u32| self.read(base + 16 * index);
        [
            word(0),
            word(1),
            word(2),
            word(3),
            word(4),
            word(5),
            word(6),
            word(7),
        ]
    }

    /// Writes the 256-bit register at `base` from eight words, vectors 0-31
    /// first.
    pub fn write_vectors(&mut self, base: u32, words: &[u32; 8]) {
        for (i, &word) in words.iter().enumerate() {
            self.write(base + 16 * i as u32, word);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::boxed::Box;

    #[test]
    fn registers_are_words_at_the_sdm_offsets() {
        let page = Box::leak(Box::new(Page4K([0xAA; 4096])));
        let mut apic = VirtualApicPage::new(page);
        assert_eq!(apic.read(offset::VTPR), 0, "a new page is cleared");
        apic.write(offset::VTPR, 0x50);
        apic.write(offset::VTPR + 2, 0x60); // low bits of the offset ignored
        assert_eq!(apic.read(offset::VTPR), 0x60);
        let words = [1, 2, 3, 4, 5, 6, 7, 0x8000_0000];
        apic.write_vectors(offset::VIRR, &words);
        assert_eq!(apic.read_vectors(offset::VIRR), words);
        // VIRR word 7 holds vectors 224-255 at 270H; VISR is untouched.
        assert_eq!(apic.read(0x270), 0x8000_0000);
        assert_eq!(apic.read_vectors(offset::VISR), [0; 8]);
        assert_eq!(apic.address() & 0xFFF, 0);
        apic.fill(u32::MAX);
        assert_eq!(apic.read(0xFFC), u32::MAX);
        assert_eq!(apic.read(offset::VTPR), u32::MAX);
    }
}
