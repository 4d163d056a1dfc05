//! 256-bit sets of interrupt vectors, laid out as the LAPIC's IRR, ISR and
//! TMR registers are (eight 32-bit words, vector `v` in bit `v % 32` of word
//! `v / 32`).

/// The indexes of the set bits of `mask`, lowest first: the vectors of one
/// word of a [`VectorSet`] (plus 32 times its index), or the pins of a
/// mask of interrupt inputs.
pub(crate) fn set_bits(mut mask: u32) -> impl Iterator<Item = u8> {
    core::iter::from_fn(move || {
        (mask != 0).then(|| {
            let bit = mask.trailing_zeros() as u8;
            mask &= mask - 1;
            bit
        })
    })
}

/// A set of interrupt vectors 0..=255.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorSet {
    words: [u32; 8],
}

impl VectorSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { words: [0; 8] }
    }

    /// Adds `vector`.
    pub fn insert(&mut self, vector: u8) {
        self.words[usize::from(vector >> 5)] |= 1 << (vector & 31);
    }

    /// Removes `vector`.
    pub fn remove(&mut self, vector: u8) {
        self.words[usize::from(vector >> 5)] &= !(1 << (vector & 31));
    }

    /// Whether `vector` is in the set.
    pub const fn contains(&self, vector: u8) -> bool {
        self.words[(vector >> 5) as usize] & (1 << (vector & 31)) != 0
    }

    /// The highest vector in the set (the highest priority one).
    pub fn highest(&self) -> Option<u8> {
        (0..8u8).rev().find_map(|i| {
            let w = self.words[usize::from(i)];
            (w != 0).then(|| i * 32 + (31 - w.leading_zeros() as u8))
        })
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Word `index` (0..8) as the LAPIC register at offset base + 0x10 *
    /// index shows it; 0 for an index out of range.
    pub fn word(&self, index: usize) -> u32 {
        self.words.get(index).copied().unwrap_or(0)
    }

    /// Removes and returns the lowest vector, for draining a set in order.
    pub fn take_lowest(&mut self) -> Option<u8> {
        let (i, w) = self.words.iter().enumerate().find(|(_, w)| **w != 0)?;
        let vector = (i as u8) * 32 + w.trailing_zeros() as u8;
        self.remove(vector);
        Some(vector)
    }
}

/// The vectors in hex, lowest first: `{0x30, 0xef}`, or `{}` when empty.
impl core::fmt::Display for VectorSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("{")?;
        let mut separator = "";
        for (index, &word) in (0u8..).zip(&self.words) {
            for bit in set_bits(word) {
                f.write_str(separator)?;
                write!(f, "{:#x}", index * 32 + bit)?;
                separator = ", ";
            }
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_its_vectors_in_hex_lowest_first() {
        use std::string::ToString;
        let mut s = VectorSet::new();
        assert_eq!(s.to_string(), "{}");
        s.insert(0xef);
        s.insert(0x30);
        s.insert(0x1f);
        s.insert(0x20);
        assert_eq!(s.to_string(), "{0x1f, 0x20, 0x30, 0xef}");
    }

    #[test]
    fn register_layout_matches_the_lapic() {
        let mut s = VectorSet::new();
        s.insert(0x31);
        s.insert(0xFF);
        // SDM Figure "IRR, ISR and TMR": vector 0x31 is bit 17 of the
        // register at offset +0x10 (vectors 32-63).
        assert_eq!(s.word(1), 1 << 17);
        assert_eq!(s.word(7), 1 << 31);
        assert_eq!(s.word(8), 0);
        assert_eq!(s.highest(), Some(0xFF));
        s.remove(0xFF);
        assert_eq!(s.highest(), Some(0x31));
        assert!(s.contains(0x31) && !s.contains(0x30));
        assert_eq!(s.take_lowest(), Some(0x31));
        assert!(s.is_empty());
        assert_eq!(s.highest(), None);
    }
}
