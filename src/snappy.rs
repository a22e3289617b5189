//! The Snappy block format (not the framing format): remote_write sends its requests
//! in it, and the built-in rule components are embedded in it (`build.rs` compresses
//! them with this same file; about half the bytes of the appliance binary they took).
//! A greedy single-probe matcher is enough for both, and a decoder that checks every
//! length and offset, so a corrupt input is an error, never a panic or an overread.
//!
//! Self-contained on purpose: `build.rs` includes this file as a module.

/// Compress into the Snappy block format.
pub fn compress(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 2 + 16);
    let mut n = input.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    // Blocks of 64 KiB: copy offsets then fit in two bytes.
    for block in input.chunks(1 << 16) {
        compress_block(block, &mut out);
    }
    out
}

fn compress_block(block: &[u8], out: &mut Vec<u8>) {
    const HASH_BITS: u32 = 15;
    let mut table = vec![0u32; 1 << HASH_BITS];
    let hash = |at: usize| {
        let v = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
        (v.wrapping_mul(0x1e35_a7bd) >> (32 - HASH_BITS)) as usize
    };
    // The match at `at` through the hash table (and remember `at`): (offset, length).
    let probe = |table: &mut Vec<u32>, at: usize| -> Option<(usize, usize)> {
        if at + 4 > block.len() {
            return None;
        }
        let h = hash(at);
        let candidate = table[h] as usize;
        table[h] = at as u32;
        if candidate >= at || block[candidate..candidate + 4] != block[at..at + 4] {
            return None;
        }
        let mut len = 4;
        while at + len < block.len() && block[candidate + len] == block[at + len] {
            len += 1;
        }
        Some((at - candidate, len))
    };
    let (mut i, mut literal_start) = (0usize, 0usize);
    while i + 4 <= block.len() {
        let Some((mut offset, mut len)) = probe(&mut table, i) else {
            i += 1;
            continue;
        };
        // Lazy: a longer match one byte later is worth a literal byte.
        if let Some((next_offset, next_len)) = probe(&mut table, i + 1) {
            if next_len > len + 1 {
                i += 1;
                (offset, len) = (next_offset, next_len);
            }
        }
        literal(out, &block[literal_start..i]);
        copy(out, offset, len);
        // Remember positions inside the match too: later repeats find them.
        for at in (i + 1..i + len).take_while(|at| at + 4 <= block.len()) {
            table[hash(at)] = at as u32;
        }
        i += len;
        literal_start = i;
    }
    literal(out, &block[literal_start..]);
}

fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len() - 1;
    if n < 60 {
        out.push((n as u8) << 2);
    } else {
        let len_bytes = (32 - (n as u32).leading_zeros()).div_ceil(8) as usize;
        out.push(((59 + len_bytes) as u8) << 2);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..len_bytes]);
    }
    out.extend_from_slice(bytes);
}

/// Copies: a one-byte offset (tag 1) when it fits (4 to 11 bytes, offset under
/// 2048), else a two-byte offset (tag 2), at most 64 bytes each.
fn copy(out: &mut Vec<u8>, offset: usize, mut len: usize) {
    while len > 0 {
        if (4..=11).contains(&len) && offset < 2048 {
            out.push(((((offset >> 8) as u8) << 5) | (((len - 4) as u8) << 2)) | 1);
            out.push(offset as u8);
            return;
        }
        // Never leave a remainder under 4: it could not take the short form.
        let piece = if len > 64 && len - 64 < 4 { 60 } else { len.min(64) };
        out.push((((piece - 1) as u8) << 2) | 2);
        out.extend_from_slice(&(offset as u16).to_le_bytes());
        len -= piece;
    }
}

/// Why a Snappy input could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt(pub &'static str);

/// Decompress a Snappy block, refusing anything announcing more than `max_len` bytes.
pub fn decompress(input: &[u8], max_len: usize) -> Result<Vec<u8>, Corrupt> {
    let (len, mut at) = read_varint(input).ok_or(Corrupt("bad length header"))?;
    if len > max_len as u64 {
        return Err(Corrupt("longer than allowed"));
    }
    let len = len as usize;
    let mut out = Vec::with_capacity(len);
    while at < input.len() {
        let tag = input[at];
        at += 1;
        let (copy_len, offset) = match tag & 3 {
            0 => {
                let mut n = (tag >> 2) as usize;
                if n >= 60 {
                    let bytes = n - 59;
                    let raw = input.get(at..at + bytes).ok_or(Corrupt("truncated literal length"))?;
                    n = raw.iter().rev().fold(0usize, |acc, b| (acc << 8) | *b as usize);
                    at += bytes;
                }
                let n = n + 1;
                let bytes = input.get(at..at + n).ok_or(Corrupt("truncated literal"))?;
                if out.len() + n > len {
                    return Err(Corrupt("more data than announced"));
                }
                out.extend_from_slice(bytes);
                at += n;
                continue;
            }
            1 => {
                let b = *input.get(at).ok_or(Corrupt("truncated copy"))?;
                at += 1;
                (4 + ((tag >> 2) & 7) as usize, (((tag >> 5) as usize) << 8) | b as usize)
            }
            2 => {
                let b = input.get(at..at + 2).ok_or(Corrupt("truncated copy"))?;
                at += 2;
                (1 + (tag >> 2) as usize, u16::from_le_bytes([b[0], b[1]]) as usize)
            }
            _ => {
                let b = input.get(at..at + 4).ok_or(Corrupt("truncated copy"))?;
                at += 4;
                (1 + (tag >> 2) as usize, u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            }
        };
        if offset == 0 || offset > out.len() {
            return Err(Corrupt("copy from before the start"));
        }
        if out.len() + copy_len > len {
            return Err(Corrupt("more data than announced"));
        }
        let start = out.len() - offset;
        for i in 0..copy_len {
            out.push(out[start + i]);
        }
    }
    if out.len() != len {
        return Err(Corrupt("less data than announced"));
    }
    Ok(out)
}

fn read_varint(input: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in input.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_round_trips_through_a_reference_decoder() {
        let mut series = Vec::new();
        for i in 0..2000 {
            let host = format!("plc-{}", i % 37);
            let mut labels = [("__name__", "monserv_up"), ("hostname", host.as_str()), ("site", "north")];
            crate::export::wire::encode_series(&mut series, &mut labels, (i % 2) as f64, 1_764_676_800_000 + i);
        }
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a".to_vec(),
            b"abcdabcdabcdabcdabcdabcdabcd".to_vec(),
            (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            vec![0u8; 300_000],
            series,
        ];
        for input in inputs {
            let compressed = compress(&input);
            let back = snap::raw::Decoder::new().decompress_vec(&compressed).unwrap();
            assert_eq!(back, input);
            if input.len() > 10_000 {
                assert!(compressed.len() < input.len() / 2, "{} -> {}", input.len(), compressed.len());
            }
        }
    }

    #[test]
    fn the_decoder_reads_the_reference_encoder_and_refuses_corrupt_input() {
        let text: Vec<u8> = (0..100_000u32).flat_map(|i| format!("host-{} ok;", i % 97).into_bytes()).collect();
        let reference = snap::raw::Encoder::new().compress_vec(&text).unwrap();
        assert_eq!(decompress(&reference, 1 << 30).unwrap(), text);
        assert_eq!(decompress(&compress(&text), 1 << 30).unwrap(), text);
        assert_eq!(decompress(&reference, 1000), Err(Corrupt("longer than allowed")));
        // Every truncation and a flipped byte anywhere: an error or other bytes, never a panic.
        let small = compress(b"abcabcabcabcabcabcabc-xyz-abcabcabc");
        for cut in 0..small.len() {
            assert!(decompress(&small[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        for i in 0..small.len() {
            for bit in 0..8 {
                let mut bad = small.clone();
                bad[i] ^= 1 << bit;
                let _ = decompress(&bad, 1 << 20);
            }
        }
        assert_eq!(decompress(&[5, 0b0000_0110, 1, 0], 100), Err(Corrupt("copy from before the start")));
    }
}
