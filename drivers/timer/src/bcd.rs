//! Packed binary-coded decimal, four bits a digit: the 8254 counts in four
//! BCD digits and the MC146818A shows its time in two when set to BCD mode.

/// The low `digits` decimal digits of `value` as packed BCD. Out of line
/// (like [`to_binary`]): the PIT's counts and the RTC's fields share it.
#[inline(never)]
pub(crate) fn from_binary(mut value: u32, digits: u32) -> u32 {
    let mut bcd = 0;
    for i in 0..digits {
        bcd |= (value % 10) << (4 * i);
        value /= 10;
    }
    bcd
}

/// The value of the low `digits` packed BCD digits of `bcd`; a digit nibble
/// above 9 counts as 9.
#[inline(never)]
pub(crate) fn to_binary(bcd: u32, digits: u32) -> u32 {
    let mut value = 0;
    for i in (0..digits).rev() {
        value = value * 10 + ((bcd >> (4 * i)) & 0xF).min(9);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::{from_binary, to_binary};

    #[test]
    fn each_decimal_digit_takes_one_nibble() {
        assert_eq!(from_binary(1234, 4), 0x1234);
        assert_eq!(from_binary(59, 2), 0x59);
        assert_eq!(from_binary(7, 2), 0x07);
        // Only the requested digits are kept: 12345 counts as 2345.
        assert_eq!(from_binary(12_345, 4), 0x2345);
        assert_eq!(to_binary(0x9999, 4), 9999);
        assert_eq!(to_binary(0x0010, 4), 10);
        assert_eq!(to_binary(0x23, 2), 23);
    }

    #[test]
    fn digits_above_nine_read_as_nine() {
        assert_eq!(to_binary(0xFA, 2), 99);
        assert_eq!(to_binary(0x1F, 2), 19);
        assert_eq!(to_binary(0xA0B0, 4), 9090);
        // Nibbles past the requested digits are ignored.
        assert_eq!(to_binary(0x1259, 2), 59);
    }
}
