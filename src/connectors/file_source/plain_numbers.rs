//! Numbers of the plain CSV path, parsed eight digits at a time, or sixteen (with the dot of a
//! float) in one SSE2 register. A field is given as its span of the block, so the 8 or 16
//! bytes that end at its last digit can be loaded at once (the bytes before the field are
//! masked off): no loop per digit, and no branch on the field's length beyond "up to 8" or
//! "up to 16". A field too near the block's start for that goes the byte-at-a-time way.

/// `data[start..end]` as `-?[0-9]{1,18}`: an integer no BIGINT overflows on.
#[inline]
pub(super) fn plain_int(data: &[u8], start: usize, end: usize) -> Option<i64> {
    let field = data.get(start..end)?;
    let (negative, first) = match field.first() {
        Some(b'-') => (true, start + 1),
        _ => (false, start),
    };
    if !(1..=18).contains(&(end - first)) {
        return None;
    }
    let value = digits(data, first, end)?;
    // At most 18 digits: below 10^18, within an i64.
    let value = value as i64;
    Some(if negative { -value } else { value })
}

/// `data[start..end]` as `-?[0-9]+(\.[0-9]+)?`, with correct rounding (as arrow-csv's parser).
#[inline]
pub(super) fn plain_float(data: &[u8], start: usize, end: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if let Some(value) = vector_float(data, start, end) {
        return Some(value);
    }
    scalar_float(data, start, end)
}

/// [`plain_float`] a word at a time: the other targets' way, the fallback for a field the
/// vector way leaves, and the reference it is tested against.
#[inline]
fn scalar_float(data: &[u8], start: usize, end: usize) -> Option<f64> {
    if end.checked_sub(start)? <= 8 {
        if let Some(value) = short_float(data, start, end) {
            return Some(value);
        }
    }
    any_float(data, start, end)
}

/// A float field of up to 15 digits and a dot, read in one SSE2 register (every x86-64 has
/// it): the dot is found by a compare, the digits before it move up one lane over it, and
/// they are joined as [`long_value`] joins them. None when the field is not one of those, or
/// lies too near the block's start for the 16 bytes (the scalar way decides).
#[cfg(target_arch = "x86_64")]
#[inline]
fn vector_float(data: &[u8], start: usize, end: usize) -> Option<f64> {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm_slli_si128,
    };
    let negative = *data.get(start)? == b'-';
    // The digits and the dot, after the sign.
    let len = end.checked_sub(start + usize::from(negative))?;
    if !(1..=16).contains(&len) {
        return None;
    }
    let bytes: &[u8; 16] = data.get(end.checked_sub(16)?..end)?.try_into().ok()?;
    // SAFETY: SSE2 is part of every x86-64 target, and the load reads the 16 bytes of `bytes`.
    unsafe {
        let field = FieldLanes::new(bytes, len);
        let dots = _mm_movemask_epi8(_mm_and_si128(
            _mm_cmpeq_epi8(field.text, _mm_set1_epi8(b'.' as i8)),
            field.kept,
        )) as u32;
        // At most one dot, with a digit on either side.
        if dots & dots.wrapping_sub(1) != 0 {
            return None;
        }
        let fraction = match dots {
            0 => 0,
            _ => 15 - dots.trailing_zeros() as usize,
        };
        if dots != 0 && (fraction == 0 || fraction + 1 == len) {
            return None;
        }
        // Clinger's fast path, as `any_float`'s: up to 15 digits.
        if len - usize::from(dots != 0) > 15 {
            return None;
        }
        if field.digits_bits | dots != 0xffff {
            return None;
        }
        let digits = field.digits;
        // Lanes up to the dot's take their left neighbour's digit: the dot is gone, and the
        // digits are one number. (No dot: no lane moves.)
        let dot = match dots {
            0 => -1,
            _ => dots.trailing_zeros() as i8,
        };
        let moved = _mm_cmpgt_epi8(_mm_set1_epi8(dot + 1), lane_numbers());
        let joined = _mm_or_si128(
            _mm_and_si128(moved, _mm_slli_si128::<1>(digits)),
            _mm_andnot_si128(moved, digits),
        );
        let (high, low) = sixteen_lanes_value(joined);
        let mantissa = u64::from(high) * 100_000_000 + u64::from(low);
        // Below 10^15, so an i64 too, whose conversion is one instruction.
        let value = mantissa as i64 as f64 / POWERS_OF_TEN[fraction];
        Some(if negative { -value } else { value })
    }
}

/// A float field of 1 to 8 bytes, read as one word: the dot is found in it and taken out,
/// and the digits left are one integer. None when it is not a plain float, or lies too near
/// the block's start for a word (the general path decides).
#[inline]
fn short_float(data: &[u8], start: usize, end: usize) -> Option<f64> {
    let bytes: [u8; 8] = data.get(end.checked_sub(8)?..end)?.try_into().ok()?;
    let mut word = u64::from_le_bytes(bytes);
    let negative = *data.get(start)? == b'-';
    // The digits and the dot: the word's top `number` bytes.
    let number = (end - start)
        .checked_sub(usize::from(negative))
        .filter(|&n| n > 0)?;
    let dots = zero_bytes(word ^ DOTS) & !low_bytes(8 - number);
    // No dot, or one (without POPCNT, which x86-64 does not promise, a count takes a dozen
    // instructions).
    let (digits, fraction) = match (dots == 0, dots & dots.wrapping_sub(1) == 0) {
        (true, _) => (number, 0),
        (false, true) => {
            let dot = (dots.trailing_zeros() / 8) as usize;
            // The bytes below the dot move up one, over it.
            word = (word & !low_bytes(dot + 1)) | ((word & low_bytes(dot)) << 8);
            let fraction = 7 - dot;
            // At least one digit on either side of the dot.
            if fraction == 0 || fraction + 1 == number {
                return None;
            }
            (number - 1, fraction)
        }
        _ => return None,
    };
    // At most 8 digits, so a u32: converting one to a double is one instruction, where a
    // u64 takes four.
    let mantissa = u32::try_from(digits_of_word(word, digits)?).ok()?;
    let value = f64::from(mantissa) / POWERS_OF_TEN[fraction];
    Some(if negative { -value } else { value })
}

/// A float field of any length.
fn any_float(data: &[u8], start: usize, end: usize) -> Option<f64> {
    let field = data.get(start..end)?;
    let (negative, first) = match field.first() {
        Some(b'-') => (true, start + 1),
        _ => (false, start),
    };
    let (whole_end, fraction) = match data[first..end].iter().rposition(|&b| b == b'.') {
        Some(dot) => (first + dot, end - (first + dot + 1)),
        None => (end, 0),
    };
    let whole = whole_end - first;
    if whole == 0 || (whole_end < end && fraction == 0) {
        return None;
    }
    // Clinger's fast path: a mantissa below 2^53 and a power of ten up to 10^22 are both
    // exact doubles, so one correctly rounded division is the correctly rounded value.
    if whole + fraction > 15 {
        let digits = |from: usize, to: usize| data[from..to].iter().all(u8::is_ascii_digit);
        if !digits(first, whole_end) || !digits(end - fraction, end) {
            return None;
        }
        return std::str::from_utf8(field).ok()?.parse().ok();
    }
    let mut mantissa = digits(data, first, whole_end)?;
    if fraction > 0 {
        mantissa = mantissa * POWERS_OF_TEN_U64[fraction] + digits(data, end - fraction, end)?;
    }
    // Below 10^15, so an i64 too, whose conversion is one instruction.
    let value = mantissa as i64 as f64 / POWERS_OF_TEN[fraction];
    Some(if negative { -value } else { value })
}

/// The value of the 1 to 18 ASCII digits `data[start..end]`: by words where they can be
/// loaded, else one by one.
#[inline]
fn digits(data: &[u8], start: usize, end: usize) -> Option<u64> {
    digits_value(data, start, end).or_else(|| digits_one_by_one(data.get(start..end)?))
}

/// The value of the 1 to 16 ASCII digits `data[start..end]`, read as one or two words; None
/// when one is not a digit, or the words would start before `data` does.
#[inline(always)]
fn digits_value(data: &[u8], start: usize, end: usize) -> Option<u64> {
    match end.checked_sub(start)? {
        0 => None,
        n @ 1..=8 => word_value(data, end, n),
        n @ 9..=16 => long_value(data, end, n),
        _ => None,
    }
}

/// The value of the `n` (9 to 16) digits that end at `data[end]`, from the 16 bytes before
/// `end`, with SSE2 (every x86-64 has it): the digits are checked and joined in pairs, fours
/// and eights in a few instructions, where two words take twice as many.
#[cfg(target_arch = "x86_64")]
#[inline]
fn long_value(data: &[u8], end: usize, n: usize) -> Option<u64> {
    let bytes: &[u8; 16] = data.get(end.checked_sub(16)?..end)?.try_into().ok()?;
    // SAFETY: SSE2 is part of every x86-64 target, and the load reads the 16 bytes of `bytes`.
    let (high, low) = unsafe {
        let field = FieldLanes::new(bytes, n);
        if field.digits_bits != 0xffff {
            return None;
        }
        sixteen_lanes_value(field.digits)
    };
    Some(u64::from(high) * 100_000_000 + u64::from(low))
}

/// Each lane's own number, 0 to 15.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn lane_numbers() -> std::arch::x86_64::__m128i {
    std::arch::x86_64::_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
}

/// The 16 bytes that end at a field's end, as SSE2 lanes, for the field's last `len` bytes.
#[cfg(target_arch = "x86_64")]
struct FieldLanes {
    /// The bytes as they are.
    text: std::arch::x86_64::__m128i,
    /// All ones in the field's lanes (the last `len`), zero before them.
    kept: std::arch::x86_64::__m128i,
    /// Each of the field's bytes less `'0'`; zero before the field.
    digits: std::arch::x86_64::__m128i,
    /// A bit per lane that is a digit, or lies before the field.
    digits_bits: u32,
}

#[cfg(target_arch = "x86_64")]
impl FieldLanes {
    /// The lanes of `bytes` for a field of its last `len` (1 to 16) bytes.
    #[inline]
    unsafe fn new(bytes: &[u8; 16], len: usize) -> Self {
        use std::arch::x86_64::{
            _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_min_epu8,
            _mm_movemask_epi8, _mm_set1_epi8, _mm_sub_epi8,
        };
        let text = _mm_loadu_si128(bytes.as_ptr().cast());
        // Byte `i` is the field's when `i > 15 - len`.
        let kept = _mm_cmpgt_epi8(lane_numbers(), _mm_set1_epi8(15 - len as i8));
        let digits = _mm_and_si128(_mm_sub_epi8(text, _mm_set1_epi8(b'0' as i8)), kept);
        // A digit is at most 9 as an unsigned byte; anything else wraps above it.
        let digit = _mm_cmpeq_epi8(_mm_min_epu8(digits, _mm_set1_epi8(9)), digits);
        FieldLanes {
            text,
            kept,
            digits,
            digits_bits: _mm_movemask_epi8(digit) as u32,
        }
    }
}

/// The number whose 16 digits are the lanes of `digits` (each 0 to 9), the first in lane 0, as
/// its first eight and its last eight: each step multiplies the earlier (more significant) of
/// two neighbours and adds, pairs, then fours, then eights.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn sixteen_lanes_value(digits: std::arch::x86_64::__m128i) -> (u32, u32) {
    use std::arch::x86_64::{
        _mm_cvtsi128_si32, _mm_madd_epi16, _mm_packs_epi32, _mm_setr_epi16, _mm_setzero_si128,
        _mm_srli_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };
    let zero = _mm_setzero_si128();
    let tens = _mm_setr_epi16(10, 1, 10, 1, 10, 1, 10, 1);
    let pairs = _mm_packs_epi32(
        _mm_madd_epi16(_mm_unpacklo_epi8(digits, zero), tens),
        _mm_madd_epi16(_mm_unpackhi_epi8(digits, zero), tens),
    );
    let fours = _mm_madd_epi16(pairs, _mm_setr_epi16(100, 1, 100, 1, 100, 1, 100, 1));
    let eights = _mm_madd_epi16(
        _mm_packs_epi32(fours, fours),
        _mm_setr_epi16(10_000, 1, 10_000, 1, 0, 0, 0, 0),
    );
    (
        _mm_cvtsi128_si32(eights) as u32,
        _mm_cvtsi128_si32(_mm_srli_si128::<4>(eights)) as u32,
    )
}

/// [`long_value`] as two words: the other targets' way, and the reference the SSE2 one is
/// tested against.
#[cfg(any(test, not(target_arch = "x86_64")))]
#[inline]
fn long_value_by_words(data: &[u8], end: usize, n: usize) -> Option<u64> {
    Some(word_value(data, end - 8, n - 8)? * 100_000_000 + word_value(data, end, 8)?)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn long_value(data: &[u8], end: usize, n: usize) -> Option<u64> {
    long_value_by_words(data, end, n)
}

/// The value of the `n` (1 to 8) digits that end at `data[end]`, from the word of the eight
/// bytes before `end`, its first `8 - n` set to `'0'`.
#[inline]
fn word_value(data: &[u8], end: usize, n: usize) -> Option<u64> {
    let bytes: [u8; 8] = data.get(end.checked_sub(8)?..end)?.try_into().ok()?;
    digits_of_word(u64::from_le_bytes(bytes), n)
}

/// The value of the `n` (1 to 8) digits that are the top bytes of `word`; its low `8 - n`
/// bytes are set to `'0'`.
#[inline]
fn digits_of_word(word: u64, n: usize) -> Option<u64> {
    // Little-endian: the first of the eight bytes is the word's low byte, so the bytes
    // before the digits are its low `8 - n` bytes.
    let before = low_bytes(8 - n);
    let word = (word & !before) | (ZEROS & before);
    // Every byte 0x30..=0x39: its high nibble is 3, and adding 6 leaves it 3.
    let nibbles = (word & HIGH_NIBBLES) | ((word.wrapping_add(SIXES) & HIGH_NIBBLES) >> 4);
    if nibbles != THREES {
        return None;
    }
    // Pairs of digits, then fours, then the eight: each step joins neighbours, the earlier
    // (more significant) one in the lower byte.
    let v = word - ZEROS;
    let v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    Some((v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff)
}

/// A mask of the low `n` (0 to 8) bytes of a word.
#[inline]
fn low_bytes(n: usize) -> u64 {
    u64::MAX.checked_shr(64 - 8 * n as u32).unwrap_or(0)
}

/// The high bit of each zero byte of `word`, exactly (no borrow runs into the next byte).
#[inline]
fn zero_bytes(word: u64) -> u64 {
    !(((word & LOW_BITS) + LOW_BITS) | word | LOW_BITS)
}

const LOW_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const DOTS: u64 = 0x2e2e_2e2e_2e2e_2e2e;

/// The value of 1 to 18 ASCII digits, one at a time.
fn digits_one_by_one(digits: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for &b in digits {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

const ZEROS: u64 = 0x3030_3030_3030_3030;
const SIXES: u64 = 0x0606_0606_0606_0606;
const THREES: u64 = 0x3333_3333_3333_3333;
const HIGH_NIBBLES: u64 = 0xf0f0_f0f0_f0f0_f0f0;

/// 10^0 ..= 10^22, each exact as a double.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// 10^0 ..= 10^15, the fraction digits the fast path takes.
const POWERS_OF_TEN_U64: [u64; 16] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `text` parsed at the end of a block, after `pad` bytes of another field, and at its
    /// very start (where words cannot be loaded and digits go one by one).
    fn placed(text: &str, pad: usize) -> Vec<(Vec<u8>, usize, usize)> {
        let mut after = vec![b'7'; pad];
        after.extend_from_slice(text.as_bytes());
        vec![
            (after, pad, pad + text.len()),
            (text.as_bytes().to_vec(), 0, text.len()),
        ]
    }

    proptest! {
        /// The fast path's division rounds as the full parser does, on both sides of its
        /// 15-digit bound.
        #[test]
        fn plain_floats_are_the_correctly_rounded_value(
            text in "-?[0-9]{1,12}(\\.[0-9]{1,12})?", pad in 0usize..20
        ) {
            let want: f64 = text.parse().expect("a float");
            for (data, start, end) in placed(&text, pad) {
                let got = plain_float(&data, start, end).expect("plain");
                prop_assert_eq!(got.to_bits(), want.to_bits());
            }
        }

        /// Integers of up to 18 digits read as `str::parse` reads them, wherever they lie.
        #[test]
        fn plain_ints_are_their_value(text in "-?[0-9]{1,18}", pad in 0usize..20) {
            let want: i64 = text.parse().expect("an integer");
            for (data, start, end) in placed(&text, pad) {
                prop_assert_eq!(plain_int(&data, start, end), Some(want));
            }
        }

        /// Any other text is not a plain number: the plain path hands its chunk to arrow-csv.
        #[test]
        fn other_text_is_not_a_plain_number(text in "[-+0-9.e :/a]{0,20}", pad in 0usize..20) {
            let int_like = text.strip_prefix('-').unwrap_or(&text);
            let is_int = !int_like.is_empty()
                && int_like.len() <= 18
                && int_like.bytes().all(|b| b.is_ascii_digit());
            let (whole, fraction) = int_like.split_once('.').unwrap_or((int_like, "1"));
            let is_float = !whole.is_empty()
                && !fraction.is_empty()
                && whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit());
            for (data, start, end) in placed(&text, pad) {
                prop_assert_eq!(plain_int(&data, start, end).is_some(), is_int);
                prop_assert_eq!(plain_float(&data, start, end).is_some(), is_float, "{}", text);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    proptest! {
        /// Digits, dots and signs, or not quite those, read with SSE2 as a word at a time
        /// reads them, wherever in the 16 bytes the field starts.
        #[test]
        fn floats_are_read_as_the_scalar_way_reads_them(
            bytes in prop::collection::vec(
                prop_oneof![
                    12 => b'0'..=b'9',
                    2 => Just(b'.'),
                    1 => Just(b'-'),
                    1 => Just(b'/'),
                    1 => any::<u8>(),
                ],
                16..26,
            ),
            len in 0usize..18,
        ) {
            let end = bytes.len();
            let start = end - len.min(end);
            let vector = vector_float(&bytes, start, end).map(f64::to_bits);
            // Where the vector way reads a value, it is the scalar way's.
            if vector.is_some() {
                prop_assert_eq!(vector, scalar_float(&bytes, start, end).map(f64::to_bits));
            }
        }

        /// Nine to sixteen digits, or not quite digits, read with SSE2 as by two words.
        #[test]
        fn long_digits_are_read_as_two_words_read_them(
            bytes in prop::collection::vec(
                prop_oneof![8 => b'0'..=b'9', 1 => Just(b'/'), 1 => Just(b':'), 1 => any::<u8>()],
                16..24,
            ),
            n in 9usize..=16,
        ) {
            let end = bytes.len();
            prop_assert_eq!(long_value(&bytes, end, n), long_value_by_words(&bytes, end, n));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn prices_are_read_in_one_register() {
        let read = |field: &str| {
            let data = format!("{}{field}", ",".repeat(16));
            vector_float(data.as_bytes(), 16, data.len())
        };
        assert_eq!(read("282.91"), Some(282.91));
        assert_eq!(read("-0.5"), Some(-0.5));
        assert_eq!(read("5"), Some(5.0));
        assert_eq!(read("123456789012.345"), Some(123456789012.345));
        for field in ["1.", ".5", "-", "1.2.3", "1-2", "1234567890123456", "1e5"] {
            assert_eq!(read(field), None, "{field}");
        }
    }

    #[test]
    fn digits_next_to_other_bytes_are_read_alone() {
        let data = b"x9;12345678901234567;-0.5;1.;.5;1.2.3";
        assert_eq!(plain_int(data, 1, 2), Some(9));
        assert_eq!(plain_int(data, 3, 20), Some(12_345_678_901_234_567));
        assert_eq!(plain_float(data, 21, 25), Some(-0.5));
        assert_eq!(plain_float(data, 26, 28), None);
        assert_eq!(plain_float(data, 29, 31), None);
        assert_eq!(plain_float(data, 32, 37), None);
        assert_eq!(plain_int(data, 0, 2), None);
    }
}
