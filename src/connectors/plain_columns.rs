//! The column types the JSON-lines and CSV encoders write themselves, row by row with a typed
//! loop per column; a batch with any other type goes to arrow's writer.

use arrow::array::{ArrayRef, AsArray, BooleanArray, GenericStringArray, PrimitiveArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};

/// A column a plain encoder writes.
pub(super) enum Column<'a> {
    Int8(&'a PrimitiveArray<Int8Type>),
    Int16(&'a PrimitiveArray<Int16Type>),
    Int32(&'a PrimitiveArray<Int32Type>),
    Int64(&'a PrimitiveArray<Int64Type>),
    UInt8(&'a PrimitiveArray<UInt8Type>),
    UInt16(&'a PrimitiveArray<UInt16Type>),
    UInt32(&'a PrimitiveArray<UInt32Type>),
    UInt64(&'a PrimitiveArray<UInt64Type>),
    Float32(&'a PrimitiveArray<Float32Type>),
    Float64(&'a PrimitiveArray<Float64Type>),
    Boolean(&'a BooleanArray),
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
}

/// `array` as a column a plain encoder writes, if it is one.
pub(super) fn column(array: &ArrayRef) -> Option<Column<'_>> {
    Some(match array.data_type() {
        DataType::Int8 => Column::Int8(array.as_primitive()),
        DataType::Int16 => Column::Int16(array.as_primitive()),
        DataType::Int32 => Column::Int32(array.as_primitive()),
        DataType::Int64 => Column::Int64(array.as_primitive()),
        DataType::UInt8 => Column::UInt8(array.as_primitive()),
        DataType::UInt16 => Column::UInt16(array.as_primitive()),
        DataType::UInt32 => Column::UInt32(array.as_primitive()),
        DataType::UInt64 => Column::UInt64(array.as_primitive()),
        DataType::Float32 => Column::Float32(array.as_primitive()),
        DataType::Float64 => Column::Float64(array.as_primitive()),
        DataType::Boolean => Column::Boolean(array.as_boolean()),
        DataType::Utf8 => Column::Utf8(array.as_string()),
        DataType::LargeUtf8 => Column::LargeUtf8(array.as_string()),
        _ => return None,
    })
}

/// The bytes a short string is copied in: a fixed-size copy is a few moves, where a copy of
/// the value's own length is a call to `memcpy`.
pub(crate) const WIDE: usize = 16;

/// The [`WIDE`] bytes of `bytes` from `start`, to copy a value of `len` bytes there from: None
/// when the value is longer or the bytes end too soon (copy it at its own length).
pub(crate) fn wide_window(bytes: &[u8], start: usize, len: usize) -> Option<&[u8; WIDE]> {
    let window = bytes.get(start..start.checked_add(WIDE)?)?;
    (len <= WIDE).then(|| window.try_into().ok()).flatten()
}

/// An integer type the plain encoders write.
pub(super) trait PlainInteger: Copy {
    /// Whether the value is below zero, and its magnitude.
    fn sign_and_magnitude(self) -> (bool, u64);
}

macro_rules! plain_integer {
    (signed: $($signed:ty),*; unsigned: $($unsigned:ty),*) => {
        $(impl PlainInteger for $signed {
            #[inline(always)]
            fn sign_and_magnitude(self) -> (bool, u64) {
                (self < 0, u64::from(self.unsigned_abs()))
            }
        })*
        $(impl PlainInteger for $unsigned {
            #[inline(always)]
            fn sign_and_magnitude(self) -> (bool, u64) {
                (false, u64::from(self))
            }
        })*
    };
}

plain_integer!(signed: i8, i16, i32, i64; unsigned: u8, u16, u32, u64);

/// Magnitudes below this have at most 16 digits, which [`sixteen_digits`] makes at once.
const SIXTEEN_DIGITS: u64 = 10_000_000_000_000_000;

/// Appends an integer's decimal digits, as arrow writes them: a `-` when it is negative, then
/// the digits of its magnitude with no leading zeros.
///
/// Below 10¹⁶ in magnitude (every timestamp in milliseconds or microseconds, say) the 16
/// digits are made at once in SSE2 lanes and the leading zeros shifted out: about 87
/// instructions in the encoders' row loops, where lexical took about 119 for a 13-digit
/// value (counted by cachegrind, docs/benchmarks.md). They are stored in
/// place, in room made by copying a fixed-size array (a few moves), where `resize` calls
/// `memset` and a copy of their own length calls `memcpy`.
#[inline(always)]
pub(super) fn write_integer<N: PlainInteger>(value: N, out: &mut Vec<u8>) {
    let (negative, magnitude) = value.sign_and_magnitude();
    let Some((text, len)) = sixteen_digits(magnitude) else {
        return write_long_integer(negative, magnitude, out);
    };
    let at = out.len();
    out.extend_from_slice(&[b'-'; 17]);
    let start = at + usize::from(negative);
    out[start..start + 16].copy_from_slice(&text);
    out.truncate(start + len);
}

/// [`write_integer`] for magnitudes of 10¹⁶ and above, by lexical. Out of line, so that the
/// common case inlined into the row loops keeps its registers.
#[cold]
#[inline(never)]
fn write_long_integer(negative: bool, magnitude: u64, out: &mut Vec<u8>) {
    if negative {
        out.push(b'-');
    }
    let at = out.len();
    out.extend_from_slice(&[0; 20]);
    let written = lexical_core::write(magnitude, &mut out[at..]).len();
    out.truncate(at + written);
}

/// The digits of `magnitude` when it is below 10¹⁶, as the bytes of 16 (the first its first
/// digit, those after the last any) and how many there are; None above.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sixteen_digits(magnitude: u64) -> Option<([u8; 16], usize)> {
    if magnitude >= SIXTEEN_DIGITS {
        return None;
    }
    // SAFETY: SSE2 is part of every x86-64 target.
    let (text, leading_zeros) = unsafe { sixteen_lanes_text(magnitude) };
    // One digit stays when all are zeros: the 16th lane is never counted.
    let len = 16 - leading_zeros;
    Some(((text >> (8 * leading_zeros)).to_le_bytes(), len))
}

/// [`sixteen_digits`] by lexical, for the other targets.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn sixteen_digits(magnitude: u64) -> Option<([u8; 16], usize)> {
    if magnitude >= SIXTEEN_DIGITS {
        return None;
    }
    let mut text = [0; 20];
    let len = lexical_core::write(magnitude, &mut text).len();
    let mut digits = [0; 16];
    digits.copy_from_slice(&text[..16]);
    Some((digits, len))
}

/// The 16 ASCII digits of `n` (below 10¹⁶), the first in the low byte, and how many of the
/// first 15 are leading zeros.
///
/// Each step splits every lane into two lanes of half its width, quotient and remainder, at
/// once (eights into fours, fours into pairs, pairs into digits), the quotient first. Every
/// division is a multiply and a shift of the same width in all lanes: with a shift of its own
/// per lane, LLVM widens the lanes and takes three times the instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sixteen_lanes_text(n: u64) -> (u128, usize) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_mul_epu32, _mm_mulhi_epu16, _mm_mullo_epi16,
        _mm_or_si128, _mm_set1_epi16, _mm_set1_epi32, _mm_set1_epi8, _mm_set_epi64x,
        _mm_slli_epi16, _mm_slli_epi32, _mm_slli_epi64, _mm_srli_epi16, _mm_srli_epi64,
        _mm_storeu_si128, _mm_sub_epi16, _mm_sub_epi32,
    };
    // Two 64-bit lanes of eight digits each.
    let eights = _mm_set_epi64x((n % 100_000_000) as i64, (n / 100_000_000) as i64);
    // x / 10⁴ is (x * 0xd1b71759) >> 45 below 10⁸.
    let quotients = _mm_srli_epi64::<45>(_mm_mul_epu32(
        eights,
        _mm_set1_epi32(0xd1b7_1759_u32 as i32),
    ));
    let remainders = _mm_sub_epi32(eights, _mm_mul_epu32(quotients, _mm_set1_epi32(10_000)));
    let fours = _mm_or_si128(quotients, _mm_slli_epi64::<32>(remainders));
    // x / 100 is (x * 5243) >> 19 below 10⁴.
    let quotients = _mm_srli_epi16::<3>(_mm_mulhi_epu16(fours, _mm_set1_epi16(5243)));
    let remainders = _mm_sub_epi16(fours, _mm_mullo_epi16(quotients, _mm_set1_epi16(100)));
    let pairs = _mm_or_si128(quotients, _mm_slli_epi32::<16>(remainders));
    // x / 10 is (x * 6554) >> 16 below 100.
    let quotients = _mm_mulhi_epu16(pairs, _mm_set1_epi16(6554));
    let remainders = _mm_sub_epi16(pairs, _mm_mullo_epi16(quotients, _mm_set1_epi16(10)));
    let digits = _mm_or_si128(quotients, _mm_slli_epi16::<8>(remainders));
    let zeros = _mm_set1_epi8(b'0' as i8);
    let text = _mm_or_si128(digits, zeros);
    let zero_lanes = _mm_movemask_epi8(_mm_cmpeq_epi8(text, zeros)) as u32;
    let leading_zeros = (!zero_lanes | 0x8000).trailing_zeros() as usize;
    let mut bytes = [0u8; 16];
    _mm_storeu_si128(bytes.as_mut_ptr().cast(), text);
    (u128::from_le_bytes(bytes), leading_zeros)
}

/// The fractional digits [`short_decimal`] writes at most, as the scale they make.
const DECIMAL_SCALE: u64 = 10_000;

/// ASCII `0` in every byte of a word.
const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// Appends `value` and returns true when it is the double nearest a decimal of at most four
/// fractional digits, from 0.0001 to below 10⁸ in magnitude: the shortest digits that read
/// back to it, in plain notation (`243019.69`, `-0.0012`, `5.0`), which is what ryu and Żmij
/// write for it. Returns false, and appends nothing, for any other value.
///
/// Why those digits are the shortest: below 10⁸ the doubles are less than 2⁻²⁵ apart, so
/// the decimals that read back to `value` span less than 0.0001, and only one multiple of
/// 0.0001 is among them. A decimal of fewer digits is such a multiple too, so it is that one.
///
/// It takes about 150 instructions a value, where Żmij and the copy out of its buffer take
/// about 190: the digits are made at once in words, with no branch on them, and stored
/// straight into `out`.
#[inline(always)]
pub(crate) fn short_decimal(value: f64, out: &mut Vec<u8>) -> bool {
    let magnitude = value.abs();
    if !(1e-4..1e8).contains(&magnitude) {
        return false;
    }
    let scale = DECIMAL_SCALE as f64;
    // Below 2⁵³ the conversions are exact, and the division rounds as reading the text does.
    // (Signed, since a signed conversion is one instruction and an unsigned one several.)
    let scaled = (magnitude * scale + 0.5) as i64;
    if scaled as f64 / scale != magnitude {
        return false;
    }
    let scaled = scaled as u64;
    // Eight digits of the whole part, the first in the low byte; its leading zeros are the
    // low zero bytes, all but one cut off.
    let digits = eight_digits((scaled / DECIMAL_SCALE) as u32);
    let leading = (digits.trailing_zeros() / 8).min(7);
    let whole_text = (digits | ASCII_ZEROS) >> (8 * leading);
    let whole_len = 8 - leading as usize;
    // The point and four fractional digits; the trailing zeros, all but one, cut off.
    let fraction = four_digits((scaled % DECIMAL_SCALE) as u32);
    let places = 4 - (fraction.leading_zeros() / 8).min(3) as usize;
    let fraction_text = u64::from(b'.') | (u64::from(fraction | ASCII_ZEROS as u32) << 8);
    let sign = usize::from(value.is_sign_negative());
    let at = out.len();
    out.extend_from_slice(&[b'-'; 24]);
    let room = &mut out[at + sign..];
    room[..8].copy_from_slice(&whole_text.to_le_bytes());
    room[whole_len..whole_len + 8].copy_from_slice(&fraction_text.to_le_bytes());
    out.truncate(at + sign + whole_len + 1 + places);
    true
}

/// The eight decimal digits of `n` (below 10⁸) as the bytes of a word, the first in the low
/// byte: each step splits every lane of the word into two of half its width, at once.
fn eight_digits(n: u32) -> u64 {
    let fours = u64::from(n / 10_000) | (u64::from(n % 10_000) << 32);
    // x / 100 is (x * 10486) >> 20 below 10⁴, and x / 10 is (x * 103) >> 10 below 100.
    let hundreds = ((fours * 10486) >> 20) & 0x0000_007f_0000_007f;
    let pairs = hundreds | ((fours - hundreds * 100) << 16);
    let tens = ((pairs * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | ((pairs - tens * 10) << 8)
}

/// The four decimal digits of `n` (below 10⁴) as the bytes of a word, the first in the low
/// byte (as [`eight_digits`]).
fn four_digits(n: u32) -> u32 {
    let pairs = (n / 100) | ((n % 100) << 16);
    let tens = ((pairs * 103) >> 10) & 0x000f_000f;
    tens | ((pairs - tens * 10) << 8)
}

/// Batches the encoders' tests compare with arrow's writers.
#[cfg(test)]
pub(super) mod fixtures {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, LargeStringArray,
        StringArray, UInt64Array,
    };
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    /// A batch of `columns` (name, values), every field nullable.
    pub fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        let arrays = columns.into_iter().map(|(_, a)| a).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch")
    }

    /// Generated rows as a batch of columns `i` (BIGINT), `f` (DOUBLE) and `s` (VARCHAR).
    pub fn generated(rows: &[(Option<i64>, Option<f64>, Option<String>)]) -> RecordBatch {
        batch(vec![
            (
                "i",
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            ),
            (
                "f",
                Arc::new(rows.iter().map(|r| r.1).collect::<Float64Array>()),
            ),
            (
                "s",
                Arc::new(rows.iter().map(|r| r.2.clone()).collect::<StringArray>()),
            ),
        ])
    }

    /// Eight rows of every plain type at its edges: extreme integers, non-finite and
    /// shortest-digit floats, NULLs, and strings with quotes, separators, escapes and wide
    /// characters (a column name, too, that JSON must escape).
    pub fn edge_values() -> RecordBatch {
        let floats = [
            0.1 + 0.2,
            -0.0,
            1e16,
            f64::NAN,
            f64::INFINITY,
            0.0,
            5.0,
            1.5e-7,
        ];
        let floats = floats
            .into_iter()
            .enumerate()
            .map(|(i, f)| (i != 5).then_some(f));
        let singles = [0.1, f32::NEG_INFINITY, 0.0, 3.0, 1e20, -2.5, f32::MAX, 0.0];
        let singles = singles
            .into_iter()
            .enumerate()
            .map(|(i, f)| (i != 2).then_some(f));
        let strings = [
            Some("plain"),
            Some("a \"q\" b"),
            Some("back\\slash, comma"),
            Some("tab\tnew\nline\u{1}\r"),
            None,
            Some(""),
            Some("é ☃ ; \u{7f}"),
            Some("/"),
        ];
        let large = [
            Some("x"),
            None,
            Some("\"y\""),
            Some(""),
            Some("z;w"),
            Some("w|v"),
            Some("v"),
            Some("u"),
        ];
        let booleans = [
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(true),
            Some(false),
            None,
            Some(false),
        ];
        batch(vec![
            ("f", Arc::new(floats.collect::<Float64Array>())),
            ("g", Arc::new(singles.collect::<Float32Array>())),
            (
                "s \"quoted\"\n",
                Arc::new(StringArray::from(strings.to_vec())),
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![
                    Some(i64::MIN),
                    Some(i64::MAX),
                    None,
                    Some(0),
                    Some(-1),
                    Some(42),
                    Some(7),
                    Some(8),
                ])),
            ),
            (
                "u",
                Arc::new(UInt64Array::from(vec![
                    Some(u64::MAX),
                    None,
                    Some(0),
                    Some(1),
                    Some(2),
                    Some(3),
                    Some(4),
                    Some(5),
                ])),
            ),
            ("b", Arc::new(BooleanArray::from(booleans.to_vec()))),
            ("l", Arc::new(LargeStringArray::from(large.to_vec()))),
        ])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What [`short_decimal`] writes of `value`, if anything, after a byte already there.
    fn short(value: f64) -> Option<String> {
        let mut out = vec![b'x'];
        if !short_decimal(value, &mut out) {
            assert_eq!(out, b"x", "nothing appended when false");
            return None;
        }
        assert_eq!(out[0], b'x');
        Some(String::from_utf8_lossy(&out[1..]).into_owned())
    }

    /// Żmij's text of `value`, which arrow-csv's ryu writes too in plain notation.
    fn zmij(value: f64) -> String {
        zmij::Buffer::new().format(value).to_string()
    }

    #[test]
    fn short_decimals_are_written_and_the_rest_left() {
        assert_eq!(short(243019.69).as_deref(), Some("243019.69"));
        assert_eq!(short(-0.0012).as_deref(), Some("-0.0012"));
        assert_eq!(short(5.0).as_deref(), Some("5.0"));
        assert_eq!(short(0.0001).as_deref(), Some("0.0001"));
        assert_eq!(short(99_999_999.999_9).as_deref(), Some("99999999.9999"));
        assert_eq!(short(1200.5).as_deref(), Some("1200.5"));
        // Powers of two, whose gap to the double below is half the one above.
        assert_eq!(short(1024.0).as_deref(), Some("1024.0"));
        assert_eq!(short(0.5).as_deref(), Some("0.5"));
        assert_eq!(short(0.0625).as_deref(), Some("0.0625"));
        assert_eq!(short(2f64.powi(26)).as_deref(), Some("67108864.0"));
        assert_eq!(short(2f64.powi(26).next_down()), None);
        for value in [
            0.1 + 0.2,
            243019.69000000003,
            0.00005,
            0.00015,
            1e8,
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(short(value), None, "{value}");
        }
    }

    /// What [`write_integer`] writes of `value`, after a byte already there.
    fn integer<N: PlainInteger>(value: N) -> String {
        let mut out = vec![b'x'];
        write_integer(value, &mut out);
        assert_eq!(out[0], b'x');
        String::from_utf8_lossy(&out[1..]).into_owned()
    }

    #[test]
    fn integers_are_written_as_rust_formats_them() {
        let mut edges = vec![i64::MIN, i64::MIN + 1, i64::MAX, 0, -1];
        for power in 0..19 {
            let p = 10i64.pow(power);
            edges.extend([p - 1, p, p + 1, -p + 1, -p, -p - 1]);
        }
        for value in edges {
            assert_eq!(integer(value), value.to_string());
        }
        for value in [
            0,
            9,
            10,
            9_999_999_999_999_999,
            10_000_000_000_000_000,
            u64::MAX,
        ] {
            assert_eq!(integer(value), value.to_string());
        }
        assert_eq!(integer(i8::MIN), "-128");
        assert_eq!(integer(i16::MIN), "-32768");
        assert_eq!(integer(i32::MIN), "-2147483648");
        assert_eq!(integer(u8::MAX), "255");
        assert_eq!(integer(u32::MAX), "4294967295");
    }

    #[test]
    fn integers_keep_what_is_already_written() {
        let mut out = b"a,".to_vec();
        write_integer(-42i64, &mut out);
        out.push(b',');
        write_integer(1_704_067_198_236i64, &mut out);
        out.push(b',');
        write_integer(12_345_678_901_234_567_890u64, &mut out);
        assert_eq!(out, b"a,-42,1704067198236,12345678901234567890");
    }

    proptest! {
        /// The digits made in a word are those of the number's own text.
        #[test]
        fn digits_in_a_word_are_the_numbers_digits(n in 0u32..100_000_000) {
            let eight = (eight_digits(n) | ASCII_ZEROS).to_le_bytes();
            prop_assert_eq!(String::from_utf8_lossy(&eight), format!("{n:08}"));
            let four = (four_digits(n % 10_000) | ASCII_ZEROS as u32).to_le_bytes();
            prop_assert_eq!(String::from_utf8_lossy(&four), format!("{:04}", n % 10_000));
        }

        /// Any integer, of any number of digits, is written as Rust formats it.
        #[test]
        fn any_integer_is_written_as_rust_formats_it(bits: u64, digits in 1u32..20) {
            let value = bits % 10u64.pow(digits);
            prop_assert_eq!(integer(value), value.to_string());
            prop_assert_eq!(integer(bits as i64), (bits as i64).to_string());
            let negated = (value as i64).wrapping_neg();
            prop_assert_eq!(integer(negated), negated.to_string());
            prop_assert_eq!(integer(value as i32), (value as i32).to_string());
        }

        /// Every decimal of up to four places in range, and every product of a price and a
        /// quantity, is written as Żmij writes it, when it is written.
        #[test]
        fn short_decimals_are_zmijs_text(
            whole in 0u64..100_000_000,
            fraction in 0u64..10_000,
            places in 0u32..=4,
            negative: bool,
            cents in 1i64..10_000_000,
            quantity in 1i64..100_000,
        ) {
            let scale = 10u64.pow(places);
            let text = format!("{}{whole}.{:0width$}", if negative { "-" } else { "" }, fraction % scale, width = places as usize);
            let value: f64 = text.parse().expect("decimal");
            if let Some(written) = short(value) {
                prop_assert_eq!(written, zmij(value));
            } else {
                prop_assert!(value.abs() < 1e-4, "{} was not written", text);
            }
            let product = (cents as f64 / 100.0) * quantity as f64;
            if let Some(written) = short(product) {
                prop_assert_eq!(written, zmij(product));
            }
        }

        /// Whatever the double, what is written is Żmij's text.
        #[test]
        fn any_double_written_is_zmijs_text(bits: u64, scale in -8i32..12) {
            let value = f64::from_bits(bits);
            for value in [value, (value.fract() * 1e4).round() / 1e4 * 10f64.powi(scale)] {
                if let Some(written) = short(value) {
                    prop_assert_eq!(written, zmij(value));
                }
            }
        }
    }
}
