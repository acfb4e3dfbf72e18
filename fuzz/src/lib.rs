//! What the fuzz targets share: how an input decides the chunks its payload is fed in.
//!
//! An input is a header and a payload:
//!
//! | bytes             | meaning                                                          |
//! |-------------------|------------------------------------------------------------------|
//! | `0`               | flags: bits 0–2 are `n - 1`, bits 3–7 belong to the target       |
//! | `1 ..= n`         | chunk lengths, used in turn and cycled (see [`chunk_len`])       |
//! | `n + 1 ..`        | the payload: a bundle, an HTTP request, a UART byte stream, …    |
//!
//! `fuzz/seed.sh` puts a header such as `00 40` (flags 0, one length: 65-byte chunks) before its seeds.

/// An input split into its target flags (bits 3–7 of the first byte, shifted down), its chunk
/// lengths and its payload. `None` for an input too short to hold its header.
pub fn split(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&flags, rest) = data.split_first()?;
    let n = usize::from(flags & 7) + 1;
    if rest.len() < n {
        return None;
    }
    let (lengths, payload) = rest.split_at(n);
    Some((flags >> 3, lengths, payload))
}

/// The chunk length a header byte stands for: 1 to 128 bytes below 0x80, then steps of 64
/// bytes up to 8 KiB, so that both a byte at a time and pieces larger than the updater's work
/// buffer are reachable.
pub fn chunk_len(byte: u8) -> usize {
    if byte < 0x80 { usize::from(byte) + 1 } else { usize::from(byte - 0x7f) * 64 }
}

/// `payload` cut into the chunks `lengths` describe, cycling through them.
pub fn chunks<'a>(lengths: &'a [u8], payload: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = payload;
    let mut lengths = lengths.iter().cycle();
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = chunk_len(*lengths.next()?).min(rest.len());
        let (chunk, after) = rest.split_at(len);
        rest = after;
        Some(chunk)
    })
}
