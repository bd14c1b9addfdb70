//! Memory sizes as people type and read them: `init`'s manifest (`budget=4M`), the shell's
//! `spawn budget=…` and `mem`.
//!
//! A size is decimal digits with an optional binary suffix: `K` (KiB), `M` (MiB), `G`
//! (GiB); no suffix means bytes. At most [`SIZE_MAX`]; anything else is refused.

use core::fmt;

/// The largest size accepted (1 TiB): far beyond any memory budget, far below overflow.
pub const SIZE_MAX: u64 = 1 << 40;

/// The bytes `text` names, if it is a size (see the module docs).
pub fn parse(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() || digits.len() > 13 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let bytes = value.checked_mul(1 << shift)?;
    (bytes <= SIZE_MAX).then_some(bytes)
}

/// A byte count for people: whole KiB, or MiB with one decimal from 10 MiB on.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = self.0 / 1024;
        if kib < 10 * 1024 {
            write!(formatter, "{kib} KiB")
        } else {
            let tenths = self.0 * 10 / (1 << 20);
            write!(formatter, "{}.{} MiB", tenths / 10, tenths % 10)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse("4096"), Some(4096));
        assert_eq!(parse("4K"), Some(4096));
        assert_eq!(parse("16M"), Some(16 << 20));
        assert_eq!(parse("2g"), Some(2 << 30));
        assert_eq!(parse("1024G"), Some(SIZE_MAX));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for text in [
            "",
            "K",
            "-1",
            "1.5M",
            "1T",
            "0x10",
            "1025G",
            "99999999999999",
            "1 M",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn bytes_print() {
        assert_eq!(Bytes(4096).to_string(), "4 KiB");
        assert_eq!(Bytes(9 << 20).to_string(), "9216 KiB");
        assert_eq!(Bytes(16 << 20).to_string(), "16.0 MiB");
        assert_eq!(Bytes((220 << 20) + (512 << 10)).to_string(), "220.5 MiB");
    }
}
