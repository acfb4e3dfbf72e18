//! The serial framing of Mongoose OS RPC (rpc-uart's `mgos_rpc_channel_uart.c` on the device,
//! `mos`'s `codec/stream.go` and `serial.go` on the host), both directions, incremental.
//!
//! On the wire:
//!
//! | bytes | meaning | [`Decoder`] item | the device answers |
//! |---|---|---|---|
//! | `{json}\n` | a frame on its own line | [`Item::Frame`], [`Style::LINE`] | a frame |
//! | `{json}1a2b3c4d\n` | the same with the CRC-32 (IEEE) of the JSON as 8 hex digits | [`Style::LINE_CRC`] | a frame |
//! | `{json}1a2b3c4d,x,y\n` | CRC then more comma-separated metadata (ignored) | as above | a frame |
//! | `\n"""{json}1a2b3c4d"""\n` | the legacy wrapper, as `mos` sends it | [`Style::QUOTED_CRC`] | a frame |
//! | `"""\x04"""\n\n` | the `mos` handshake, every 200 ms until answered | [`Item::Eot`], [`Item::EmptyLine`] | [`EOT_REPLY`], [`EMPTY_LINE_REPLY`] |
//! | `\x04\n` | a bare EOT frame | [`Item::Eot`] | [`EOT_REPLY`] |
//! | `\n` or `\r\n` or blanks | an empty line | [`Item::EmptyLine`] | [`EMPTY_LINE_REPLY`] |
//! | `0x11`, `0x13` | XON, XOFF software flow control | stripped, never seen | |
//! | anything else | console output, line noise | [`Item::Junk`] | nothing |
//!
//! How the [`Decoder`] reads a line, in order:
//!
//! 1. XON and XOFF are removed wherever they appear. `\n` ends the line in every state: a frame
//!    never spans lines.
//! 2. Before a `{`, bytes are junk, reported as one [`Item::Junk`] when the `{` or the end of the
//!    line comes (in pieces of `max_frame_bytes` for longer junk). `"""` there is a delimiter: the
//!    text it closes is an EOT if it is just 0x04, junk otherwise; after blank text it opens a
//!    wrapped frame.
//! 3. From the `{`, the JSON is scanned with string and escape awareness until its braces balance
//!    (a `}` inside a string does not count). More than `max_frame_bytes` of JSON drops the frame:
//!    the rest of the line is skipped and [`Item::Oversized`] reported at the newline. A line that
//!    ends before the braces balance is junk.
//! 4. After the closing `}`, up to [`META_MAX_BYTES`] of metadata follow on the same line, ended by
//!    `\n` or by a closing `"""`. Blank metadata: a frame without CRC. 8 hex digits (then
//!    optionally `,` and anything): the CRC, checked, and a mismatch reports [`Item::BadCrc`] and
//!    drops the frame. Anything else: the whole text is junk.
//! 5. A byte ≥ 0x80 inside a frame (from its `{` to its end) clears it, as the device clears its
//!    receive buffer, reported as [`Item::Cleared`]; the decoder then reads on as before a `{`.
//!    Outside a frame such a byte is junk like any other.
//!
//! So the decoder holds at most `max_frame_bytes + META_MAX_BYTES + HELD_QUOTES_MAX` bytes whatever
//! it is fed (the last term: up to two `"` after full metadata, held back because they may start
//! the closing `"""`), and its items do not depend on how the input was split into chunks.
//!
//! The [`Encoder`] frames replies the way the peer frames its requests: once the peer has sent a
//! frame with a good CRC, every reply carries one; once it has used `"""`, every reply is wrapped.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem;

/// The default largest JSON text of one frame. Mongoose OS's `rpc.max_frame_size` is 4096, but an
/// `OTA.Write` of 512 raw bytes is about 700 bytes of base64 plus the envelope, and clients may
/// send larger chunks, so the decoder defaults to twice that.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8192;

/// The most metadata (CRC and further fields) accepted after a frame's closing `}`.
pub const META_MAX_BYTES: usize = 64;

/// The `"` held back after the metadata because they may start a closing `"""`: counted in
/// [`Decoder::buffered_bytes`] and in [`Item::Cleared`] on top of the frame and its metadata.
pub const HELD_QUOTES_MAX: usize = 2;

/// End of transmission: a frame of just this byte asks the device to answer [`EOT_REPLY`].
pub const EOT: u8 = 0x04;
/// Software flow control bytes, which never occur in JSON and are stripped on receipt.
pub const XON: u8 = 0x11;
/// See [`XON`].
pub const XOFF: u8 = 0x13;

/// What `mos` sends every 200 ms until the device answers: a wrapped EOT and an empty line.
pub const HANDSHAKE: &[u8] = b"\"\"\"\x04\"\"\"\n\n";
/// The device's answer to an EOT frame.
pub const EOT_REPLY: &[u8] = b"\"\"\"\x04\"\"\"";
/// The device's answer to an empty line.
pub const EMPTY_LINE_REPLY: &[u8] = b"\n";

const DELIMITER: &[u8] = b"\"\"\"";
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The CRC-32 (IEEE, as zlib and Go's `crc32.ChecksumIEEE`) that frames carry.
pub fn crc32(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

/// How a frame was framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Style {
    /// 8 hex digits of CRC-32 follow the JSON.
    pub crc: bool,
    /// The legacy `"""` delimiter wraps the frame.
    pub quotes: bool,
}

impl Style {
    pub const LINE: Style = Style { crc: false, quotes: false };
    pub const LINE_CRC: Style = Style { crc: true, quotes: false };
    pub const QUOTED: Style = Style { crc: false, quotes: true };
    /// What `mos` sends.
    pub const QUOTED_CRC: Style = Style { crc: true, quotes: true };
    pub const ALL: [Style; 4] = [Style::LINE, Style::LINE_CRC, Style::QUOTED, Style::QUOTED_CRC];

    /// Every feature either style uses.
    pub fn union(self, other: Style) -> Style {
        Style { crc: self.crc || other.crc, quotes: self.quotes || other.quotes }
    }
}

/// One thing the [`Decoder`] found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A frame's JSON text (framing and CRC removed), not yet parsed, and how it was framed.
    Frame { json: Vec<u8>, style: Style },
    /// A frame whose CRC did not match, dropped. `len` is its JSON length in bytes.
    BadCrc { len: usize, crc_received: u32, crc_computed: u32 },
    /// An EOT frame (`"""\x04"""` or a line of just 0x04); the device answers [`EOT_REPLY`].
    Eot,
    /// A line with nothing but blanks; the device answers [`EMPTY_LINE_REPLY`].
    EmptyLine,
    /// Bytes that are not a frame: console output, noise, text before a `{`, broken frames.
    Junk(Vec<u8>),
    /// A frame whose JSON passed the limit, dropped; `len` bytes were skipped from its `{` to the
    /// end of the line.
    Oversized { len: usize },
    /// A byte ≥ 0x80 arrived inside a frame, which was dropped with the `len` bytes held for it.
    Cleared { byte: u8, len: usize },
}

impl Item {
    /// What the device sends back for this item at the framing level, if anything. Frames get
    /// their replies from the RPC layer; a client answers nothing.
    pub fn device_reply(&self) -> Option<&'static [u8]> {
        match self {
            Item::Eot => Some(EOT_REPLY),
            Item::EmptyLine => Some(EMPTY_LINE_REPLY),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Before a `{`: `buf` holds junk.
    Prefix,
    /// Inside the JSON object: `buf` holds it from its `{`.
    Object { depth: usize, in_string: bool, escaped: bool },
    /// After the closing `}`: `buf[..json_len]` is the JSON, the rest metadata.
    Meta,
    /// Skipping an oversized frame to the end of the line.
    Discard { len: usize },
}

/// The incremental receiver: feed it bytes in chunks of any size, get [`Item`]s.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame_bytes: usize,
    scan: Scan,
    buf: Vec<u8>,
    json_len: usize,
    /// `"` bytes held back (0 to 2) outside the JSON, in case the next one makes `"""`.
    quotes_pending: u8,
    /// This segment began right after a `"""` that opened it.
    opened_by_quotes: bool,
    /// Junk from this segment was already reported, so it is neither blank nor an EOT.
    prefix_flushed: bool,
    /// Nothing but blanks so far on this line.
    line_blank: bool,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder {
    /// A decoder that drops frames whose JSON is longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Decoder {
        assert!(
            max_frame_bytes >= 2,
            "a frame needs at least `{{}}`, got max_frame_bytes = {max_frame_bytes}"
        );
        Decoder {
            max_frame_bytes,
            scan: Scan::Prefix,
            buf: Vec::new(),
            json_len: 0,
            quotes_pending: 0,
            opened_by_quotes: false,
            prefix_flushed: false,
            line_blank: true,
        }
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Bytes held for an unfinished line; never more than
    /// `max_frame_bytes + META_MAX_BYTES + HELD_QUOTES_MAX`.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() + usize::from(self.quotes_pending)
    }

    /// Consumes `bytes`, calling `on_item` for each item completed, in stream order.
    pub fn feed(&mut self, bytes: &[u8], mut on_item: impl FnMut(Item)) {
        for &byte in bytes {
            self.step(byte, &mut on_item);
        }
    }

    /// [`Decoder::feed`], collecting the items.
    pub fn decode(&mut self, bytes: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        self.feed(bytes, |item| items.push(item));
        items
    }

    fn step(&mut self, byte: u8, out: &mut impl FnMut(Item)) {
        match (byte, self.scan) {
            (XON | XOFF, _) => {}
            (b'\n', _) => self.end_line(out),
            (_, Scan::Prefix) => self.prefix_byte(byte, out),
            (0x80.., Scan::Object { .. } | Scan::Meta) => self.clear(byte, out),
            (_, Scan::Object { .. }) => self.object_byte(byte),
            (_, Scan::Meta) => self.meta_byte(byte, out),
            // A line can be longer than `usize` counts on a 32-bit board (4 GiB of noise without
            // a newline); the count stops at the largest value rather than wrap.
            (_, Scan::Discard { len }) => self.scan = Scan::Discard { len: len.saturating_add(1) },
        }
    }

    fn prefix_byte(&mut self, byte: u8, out: &mut impl FnMut(Item)) {
        self.line_blank &= is_blank(byte);
        if byte == b'"' {
            self.quotes_pending += 1;
            if self.quotes_pending == 3 {
                self.quotes_pending = 0;
                self.prefix_delimiter(out);
            }
            return;
        }
        self.release_quotes_into_prefix(out);
        if byte == b'{' {
            self.flush_prefix(out);
            self.prefix_flushed = false;
            self.buf.push(byte);
            self.scan = Scan::Object { depth: 1, in_string: false, escaped: false };
            return;
        }
        self.push_junk(byte, out);
    }

    /// A `"""` before any `{`: it closes an EOT or junk, or opens a wrapped frame after blanks.
    fn prefix_delimiter(&mut self, out: &mut impl FnMut(Item)) {
        let blank = !self.prefix_flushed && self.buf.iter().all(|&b| is_blank(b));
        if !self.prefix_flushed && trim_blanks(&self.buf) == [EOT] {
            self.buf.clear();
            out(Item::Eot);
        } else {
            self.flush_prefix(out);
        }
        self.opened_by_quotes = blank;
        self.prefix_flushed = false;
    }

    fn object_byte(&mut self, byte: u8) {
        if self.buf.len() == self.max_frame_bytes {
            self.scan = Scan::Discard { len: self.buf.len() + 1 };
            self.buf.clear();
            return;
        }
        self.buf.push(byte);
        let Scan::Object { depth, in_string, escaped } = &mut self.scan else {
            unreachable!("object_byte runs in the Object state only")
        };
        if *in_string {
            match byte {
                _ if *escaped => *escaped = false,
                b'\\' => *escaped = true,
                b'"' => *in_string = false,
                _ => {}
            }
            return;
        }
        match byte {
            b'"' => *in_string = true,
            b'{' => *depth += 1,
            b'}' if *depth == 1 => {
                self.json_len = self.buf.len();
                self.scan = Scan::Meta;
            }
            b'}' => *depth -= 1,
            _ => {}
        }
    }

    fn meta_byte(&mut self, byte: u8, out: &mut impl FnMut(Item)) {
        if byte == b'"' {
            self.quotes_pending += 1;
            if self.quotes_pending == 3 {
                self.quotes_pending = 0;
                self.finish_frame(Style::QUOTED, out);
                self.start_segment();
            }
            return;
        }
        self.release_quotes_into_meta(out);
        self.push_meta(byte, out);
    }

    fn end_line(&mut self, out: &mut impl FnMut(Item)) {
        match self.scan {
            Scan::Prefix => self.release_quotes_into_prefix(out),
            Scan::Meta => self.release_quotes_into_meta(out),
            Scan::Object { .. } | Scan::Discard { .. } => {}
        }
        match self.scan {
            Scan::Prefix if self.line_blank => {
                self.buf.clear();
                out(Item::EmptyLine);
            }
            Scan::Prefix if !self.prefix_flushed && trim_blanks(&self.buf) == [EOT] => {
                self.buf.clear();
                out(Item::Eot);
            }
            Scan::Prefix => self.flush_prefix(out),
            // The line ended before the braces balanced: not a frame.
            Scan::Object { .. } => out(Item::Junk(mem::take(&mut self.buf))),
            Scan::Meta => self.finish_frame(Style::LINE, out),
            Scan::Discard { len } => out(Item::Oversized { len }),
        }
        self.start_segment();
        self.line_blank = true;
    }

    /// Reports the frame in `buf` (or why it is not one); `closing` says how its end was framed.
    fn finish_frame(&mut self, closing: Style, out: &mut impl FnMut(Item)) {
        let quotes = self.opened_by_quotes || closing.quotes;
        let (json, meta) = self.buf.split_at(self.json_len);
        let meta = trim_blanks(meta);
        let item = if meta.is_empty() {
            Item::Frame { json: json.to_vec(), style: Style { crc: false, quotes } }
        } else if let Some(crc_received) = parse_crc(meta) {
            let crc_computed = crc32(json);
            if crc_received == crc_computed {
                Item::Frame { json: json.to_vec(), style: Style { crc: true, quotes } }
            } else {
                Item::BadCrc { len: json.len(), crc_received, crc_computed }
            }
        } else {
            Item::Junk(self.buf.clone())
        };
        self.buf.clear();
        out(item);
    }

    /// A byte ≥ 0x80 inside a frame: drop what is held for it and read on as before a `{`.
    fn clear(&mut self, byte: u8, out: &mut impl FnMut(Item)) {
        let len = self.buffered_bytes();
        self.start_segment();
        out(Item::Cleared { byte, len });
    }

    fn start_segment(&mut self) {
        self.buf.clear();
        self.json_len = 0;
        self.scan = Scan::Prefix;
        self.quotes_pending = 0;
        self.opened_by_quotes = false;
        self.prefix_flushed = false;
    }

    fn release_quotes_into_prefix(&mut self, out: &mut impl FnMut(Item)) {
        for _ in 0..mem::take(&mut self.quotes_pending) {
            self.push_junk(b'"', out);
        }
    }

    fn release_quotes_into_meta(&mut self, out: &mut impl FnMut(Item)) {
        for _ in 0..mem::take(&mut self.quotes_pending) {
            self.push_meta(b'"', out);
        }
    }

    fn push_junk(&mut self, byte: u8, out: &mut impl FnMut(Item)) {
        if self.buf.len() == self.max_frame_bytes {
            self.flush_prefix(out);
            self.prefix_flushed = true;
        }
        self.buf.push(byte);
    }

    /// Metadata beyond [`META_MAX_BYTES`] makes the frame junk, and the rest of the line too.
    fn push_meta(&mut self, byte: u8, out: &mut impl FnMut(Item)) {
        if !matches!(self.scan, Scan::Meta) {
            self.push_junk(byte, out);
            return;
        }
        if self.buf.len() - self.json_len == META_MAX_BYTES {
            out(Item::Junk(mem::take(&mut self.buf)));
            self.start_segment();
            self.prefix_flushed = true;
            self.push_junk(byte, out);
            return;
        }
        self.buf.push(byte);
    }

    /// Reports the junk held, unless it is only blanks.
    fn flush_prefix(&mut self, out: &mut impl FnMut(Item)) {
        if self.buf.iter().all(|&b| is_blank(b)) {
            self.buf.clear();
        } else {
            out(Item::Junk(self.buf.clone()));
            self.buf.clear();
        }
    }
}

fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r')
}

fn trim_blanks(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| !is_blank(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| !is_blank(b)).map_or(start, |last| last + 1);
    &bytes[start..end]
}

/// The CRC in metadata: exactly 8 hex digits, then the end or a `,` and further fields.
fn parse_crc(meta: &[u8]) -> Option<u32> {
    let (digits, rest) = meta.split_at_checked(8)?;
    if !digits.iter().all(u8::is_ascii_hexdigit) || !(rest.is_empty() || rest[0] == b',') {
        return None;
    }
    let digits = core::str::from_utf8(digits).expect("hex digits are ASCII");
    Some(u32::from_str_radix(digits, 16).expect("8 hex digits fit in u32"))
}

/// Frames `json` in `style`: `{json}[crc]\n`, or `\n"""{json}[crc]"""\n` with quotes.
///
/// The JSON is made line-safe first, which leaves a valid JSON text's value unchanged: characters
/// above U+007F become `\uXXXX` escapes, raw tab, CR and LF (whitespace between tokens) become
/// spaces, and other control bytes become `\u00XX`. So the output never holds a byte ≥ 0x80, an
/// EOT, XON or XOFF, and its only newlines are the delimiters. The CRC covers the bytes sent.
pub fn encode(json: &[u8], style: Style) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 2 * DELIMITER.len() + 10);
    if style.quotes {
        out.push(b'\n');
        out.extend_from_slice(DELIMITER);
    }
    let start = out.len();
    push_line_safe(&mut out, json);
    if style.crc {
        let crc = crc32(&out[start..]);
        out.extend_from_slice(format!("{crc:08x}").as_bytes());
    }
    if style.quotes {
        out.extend_from_slice(DELIMITER);
    }
    out.push(b'\n');
    out
}

fn push_line_safe(out: &mut Vec<u8>, json: &[u8]) {
    if json.iter().all(|&b| (0x20..0x80).contains(&b)) {
        out.extend_from_slice(json);
        return;
    }
    for c in String::from_utf8_lossy(json).chars() {
        match c {
            '\t' | '\n' | '\r' => out.push(b' '),
            ' '..='\u{7f}' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
                }
            }
        }
    }
}

/// The sending side of a connection: frames each reply the way the peer has framed its requests
/// so far, as rpc-uart does (its `crc_used` and `delim_1_used` flags never reset).
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    style: Style,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Frames `json`, a reply to a frame that came in `request_style`: with CRC if the peer ever
    /// sent a good CRC, wrapped in `"""` if it ever used them.
    pub fn encode(&mut self, json: &[u8], request_style: Style) -> Vec<u8> {
        self.style = self.style.union(request_style);
        encode(json, self.style)
    }

    /// The style replies use now.
    pub fn style(&self) -> Style {
        self.style
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_the_ieee_one_that_zlib_and_go_compute() {
        // Go: crc32.ChecksumIEEE([]byte("123456789")) == 0xcbf43926, the catalogue check value.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn crc_metadata_is_eight_hex_digits_then_optional_fields() {
        assert_eq!(parse_crc(b"0a0B0c0D"), Some(0x0a0b_0c0d));
        assert_eq!(parse_crc(b"0a0b0c0d,x,y"), Some(0x0a0b_0c0d));
        assert_eq!(parse_crc(b"+a0b0c0d"), None);
        assert_eq!(parse_crc(b"0a0b0c0"), None);
        assert_eq!(parse_crc(b"0a0b0c0d0"), None);
        assert_eq!(parse_crc(b"0a0b0c0g"), None);
    }

    #[test]
    fn trim_blanks_keeps_the_middle() {
        assert_eq!(trim_blanks(b" \r\x04\t "), b"\x04");
        assert_eq!(trim_blanks(b"   "), b"");
    }

    #[test]
    fn line_safe_escapes_what_would_break_the_line() {
        let mut out = Vec::new();
        push_line_safe(&mut out, "{\"k\":\"é\x11\"}\r\n".as_bytes());
        assert_eq!(out, br#"{"k":"\u00e9\u0011"}  "#);
    }
}
