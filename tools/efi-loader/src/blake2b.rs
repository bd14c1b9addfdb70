//! BLAKE2b-512 (RFC 7693), to check the `#<hash>` suffix Limine allows on file paths.

const IV: [u64; 8] = [
    0x6a09_e667_f3bc_c908,
    0xbb67_ae85_84ca_a73b,
    0x3c6e_f372_fe94_f82b,
    0xa54f_f53a_5f1d_36f1,
    0x510e_527f_ade6_82d1,
    0x9b05_688c_2b3e_6c1f,
    0x1f83_d9ab_fb41_bd6b,
    0x5be0_cd19_137e_2179,
];

const SIGMA: [[usize; 16]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

fn mix(v: &mut [u64; 16], (a, b, c, d): (usize, usize, usize, usize), x: u64, y: u64) {
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
}

fn compress(state: &mut [u64; 8], block: &[u8; 128], counter: u128, last: bool) {
    let mut message = [0u64; 16];
    for (word, bytes) in message.iter_mut().zip(block.chunks_exact(8)) {
        *word = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
    }
    let mut v = [0u64; 16];
    v[..8].copy_from_slice(state);
    v[8..].copy_from_slice(&IV);
    v[12] ^= counter as u64;
    v[13] ^= (counter >> 64) as u64;
    if last {
        v[14] = !v[14];
    }
    for round in 0..12 {
        let s = &SIGMA[round % 10];
        mix(&mut v, (0, 4, 8, 12), message[s[0]], message[s[1]]);
        mix(&mut v, (1, 5, 9, 13), message[s[2]], message[s[3]]);
        mix(&mut v, (2, 6, 10, 14), message[s[4]], message[s[5]]);
        mix(&mut v, (3, 7, 11, 15), message[s[6]], message[s[7]]);
        mix(&mut v, (0, 5, 10, 15), message[s[8]], message[s[9]]);
        mix(&mut v, (1, 6, 11, 12), message[s[10]], message[s[11]]);
        mix(&mut v, (2, 7, 8, 13), message[s[12]], message[s[13]]);
        mix(&mut v, (3, 4, 9, 14), message[s[14]], message[s[15]]);
    }
    for i in 0..8 {
        state[i] ^= v[i] ^ v[i + 8];
    }
}

/// The 64-byte BLAKE2b digest of `data`.
pub fn blake2b_512(data: &[u8]) -> [u8; 64] {
    let mut state = IV;
    state[0] ^= 0x0101_0000 ^ 64;
    let mut offset = 0;
    while data.len() - offset > 128 {
        let block: &[u8; 128] = data[offset..offset + 128].try_into().unwrap_or(&[0; 128]);
        offset += 128;
        compress(&mut state, block, offset as u128, false);
    }
    let mut last = [0u8; 128];
    last[..data.len() - offset].copy_from_slice(&data[offset..]);
    compress(&mut state, &last, data.len() as u128, true);
    let mut digest = [0u8; 64];
    for (bytes, word) in digest.chunks_exact_mut(8).zip(state) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    digest
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
        // 128 and 129 bytes take different paths; they must differ and be stable.
        let a = blake2b_512(&[7; 128]);
        let b = blake2b_512(&[7; 129]);
        assert_ne!(a, b);
        assert_eq!(a, blake2b_512(&[7; 128]));
    }
}
