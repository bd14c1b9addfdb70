//! BLAKE2b-512, to check the `#<hash>` suffix Limine allows on file paths. The hashing is
//! RustCrypto's `blake2` (`no_std`); this module only compares the digest with the hex
//! text of the configuration.

use blake2::{Blake2b512, Digest};

/// The 64-byte BLAKE2b digest of `data`.
pub fn blake2b_512(data: &[u8]) -> [u8; 64] {
    Blake2b512::digest(data).into()
}

/// Whether `data` hashes to `hex` (128 hex digits, any case).
pub fn matches_hex(data: &[u8], hex: &str) -> bool {
    let digest = blake2b_512(data);
    hex.len() == 128
        && digest
            .iter()
            .zip(hex.as_bytes().chunks_exact(2))
            .all(|(byte, pair)| {
                core::str::from_utf8(pair)
                    .ok()
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    == Some(*byte)
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419d25e1031afee585313896444934eb04b903a685b1448b755d56f701afe9be2ce";
    const ABC: &str = "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923";

    #[test]
    fn rfc_7693_vectors() {
        assert!(matches_hex(b"", EMPTY));
        assert!(matches_hex(b"abc", ABC));
        assert!(matches_hex(b"abc", &ABC.to_ascii_uppercase()));
        assert!(!matches_hex(b"abd", ABC));
        assert!(!matches_hex(b"abc", &ABC[..126]));
    }

    #[test]
    fn block_boundaries() {
        let a = blake2b_512(&[7; 128]);
        let b = blake2b_512(&[7; 129]);
        assert_ne!(a, b);
        assert_eq!(a, blake2b_512(&[7; 128]));
    }
}
