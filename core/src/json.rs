//! A bounded, allocation-free JSON pull parser for the manifest.
//!
//! The caller walks the document it expects: [`Parser::begin_object`], then
//! [`Parser::next_key`] until it returns `None`, reading each value with a typed reader
//! ([`Parser::string`], [`Parser::label`], [`Parser::u32`], [`Parser::bool`], a nested object)
//! or dropping it with [`Parser::skip_value`], then [`Parser::end`]. Strings are decoded (all
//! escapes, `\uXXXX` surrogate pairs included) into a buffer the caller owns.
//!
//! Every loop consumes at least one byte per turn, so none runs longer than the input; nesting is
//! bounded by [`DEPTH_MAX`] and the skipper keeps its stack in one `u32`, so nothing recurses.

use crate::state::Label;

/// Deepest nesting of objects and arrays, counted from the top-level value; deeper is an error.
pub(crate) const DEPTH_MAX: u32 = 16;

// The skipper keeps one bit per open container.
const _: () = assert!(DEPTH_MAX <= u32::BITS);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Not JSON, or a document that ends early.
    Syntax,
    /// Objects and arrays nested deeper than [`DEPTH_MAX`].
    TooDeep,
    /// A well-formed value of another type than the one asked for.
    WrongType,
    /// A number with a fraction or an exponent where an integer was asked for.
    NotInteger,
    /// An integer outside the range asked for.
    OutOfRange,
    /// A string longer than the buffer or label it goes into.
    TooLong,
    /// A string holding NUL (`\u0000`), which labels refuse.
    Nul,
}

/// What went wrong and where: `offset` is the byte offset in the document of the value (or the
/// byte) at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Error {
    pub offset: u32,
    pub kind: ErrorKind,
}

/// The type of the value that starts at the current position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

/// An object key as [`Parser::next_key`] read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key<'b> {
    Str(&'b str),
    /// Longer than the caller's buffer; the key was read and checked, its text dropped.
    TooLong,
    /// Not UTF-8, so not a key the caller reads; its value can still be skipped.
    NotUtf8,
}

pub(crate) struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    depth: u32,
    /// Just after `{` or `[`: the next member takes no comma.
    first: bool,
    /// Where the key that [`Parser::next_key`] returned last starts.
    key_offset: usize,
}

/// Decoded string bytes going into a caller's buffer; what does not fit is counted, not kept.
/// What [`Parser::scan_string`] read: the decoded length, whether it overflowed the buffer, and
/// where its first byte that is not UTF-8 is, if any.
struct Scanned {
    len: usize,
    overflow: bool,
    not_utf8_at: Option<usize>,
}

struct Out<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflow: bool,
}

impl Out<'_> {
    fn push(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(room) if !self.overflow => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => self.overflow = true,
        }
    }
}

impl<'a> Parser<'a> {
    pub(crate) fn new(src: &'a [u8]) -> Parser<'a> {
        Parser { src, pos: 0, depth: 0, first: false, key_offset: 0 }
    }

    /// Byte offset of the key [`Parser::next_key`] returned last.
    pub(crate) fn key_offset(&self) -> u32 {
        offset_u32(self.key_offset)
    }

    /// The type of the next value, after whitespace; a byte that starts no value is a syntax error.
    pub(crate) fn kind(&mut self) -> Result<Kind, Error> {
        match self.peek() {
            Some(b'{') => Ok(Kind::Object),
            Some(b'[') => Ok(Kind::Array),
            Some(b'"') => Ok(Kind::String),
            Some(b'-' | b'0'..=b'9') => Ok(Kind::Number),
            Some(b't' | b'f') => Ok(Kind::Bool),
            Some(b'n') => Ok(Kind::Null),
            _ => Err(self.error(ErrorKind::Syntax)),
        }
    }

    /// Enters an object: `{`.
    pub(crate) fn begin_object(&mut self) -> Result<(), Error> {
        self.expect_kind(Kind::Object)?;
        self.open()?;
        self.first = true;
        Ok(())
    }

    /// The next key of the object being read, with its `:` consumed, or `None` after its `}`.
    /// The caller then reads or skips the value before asking for the next key.
    pub(crate) fn next_key<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<Key<'b>>, Error> {
        let first = core::mem::replace(&mut self.first, false);
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                self.depth = self.depth.saturating_sub(1);
                return Ok(None);
            }
            Some(b',') if !first => {
                self.pos += 1;
                self.peek();
            }
            Some(b'"') if first => {}
            _ => return Err(self.error(ErrorKind::Syntax)),
        }
        self.key_offset = self.pos;
        if self.peek() != Some(b'"') {
            return Err(self.error(ErrorKind::Syntax));
        }
        let scanned = self.scan_string(buf)?;
        self.expect_byte(b':')?;
        if scanned.not_utf8_at.is_some() {
            return Ok(Some(Key::NotUtf8));
        }
        if scanned.overflow {
            return Ok(Some(Key::TooLong));
        }
        match buf.get(..scanned.len).map(core::str::from_utf8) {
            Some(Ok(key)) => Ok(Some(Key::Str(key))),
            _ => Err(Error { offset: self.key_offset(), kind: ErrorKind::Syntax }),
        }
    }

    /// A string, decoded into `buf`.
    pub(crate) fn string<'b>(&mut self, buf: &'b mut [u8]) -> Result<&'b str, Error> {
        self.expect_kind(Kind::String)?;
        let start = self.pos;
        let Scanned { len, overflow, not_utf8_at } = self.scan_string(buf)?;
        if let Some(offset) = not_utf8_at {
            return Err(Error { offset: offset_u32(offset), kind: ErrorKind::Syntax });
        }
        let at = |kind| Error { offset: offset_u32(start), kind };
        if overflow {
            return Err(at(ErrorKind::TooLong));
        }
        // Raw runs are checked as UTF-8 and escapes decode to whole characters.
        buf.get(..len).and_then(|s| core::str::from_utf8(s).ok()).ok_or(at(ErrorKind::Syntax))
    }

    /// A string that fits a [`Label`] of `N` bytes and holds no NUL.
    pub(crate) fn label<const N: usize>(&mut self) -> Result<Label<N>, Error> {
        let start = self.peek_offset();
        let mut buf = [0u8; N];
        let s = self.string(&mut buf)?;
        Label::new(s).ok_or(Error { offset: start, kind: ErrorKind::Nul })
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let start = self.peek_offset();
        let value = self.i64()?;
        u32::try_from(value).map_err(|_| Error { offset: start, kind: ErrorKind::OutOfRange })
    }

    /// An integer within `i64`: no exponent, and a fraction only of zeros (`20000.0`, as
    /// tools that write every number as a float give sizes).
    pub(crate) fn i64(&mut self) -> Result<i64, Error> {
        self.expect_kind(Kind::Number)?;
        let start = self.pos;
        let integer = self.scan_number()?;
        let at = |kind| Error { offset: offset_u32(start), kind };
        let mut text = &self.src[start..self.pos];
        if !integer {
            match text.iter().position(|&b| b == b'.') {
                Some(dot) if text[dot + 1..].iter().all(|&b| b == b'0') => text = &text[..dot],
                _ => return Err(at(ErrorKind::NotInteger)),
            }
        }
        let (negative, digits) = match text.split_first() {
            Some((b'-', digits)) => (true, digits),
            _ => (false, text),
        };
        let mut value: i64 = 0;
        for &digit in digits {
            let digit = i64::from(digit - b'0');
            let next = value.checked_mul(10);
            // Negative values accumulate downwards so that i64::MIN fits.
            let next = if negative {
                next.and_then(|v| v.checked_sub(digit))
            } else {
                next.and_then(|v| v.checked_add(digit))
            };
            value = next.ok_or(at(ErrorKind::OutOfRange))?;
        }
        Ok(value)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, Error> {
        self.expect_kind(Kind::Bool)?;
        if self.literal(b"true") {
            return Ok(true);
        }
        if self.literal(b"false") {
            return Ok(false);
        }
        Err(self.error(ErrorKind::Syntax))
    }

    /// Reads past one value of any type, checking its syntax and its depth.
    pub(crate) fn skip_value(&mut self) -> Result<(), Error> {
        let base = self.depth;
        // One bit per container opened here, the innermost lowest: 1 for an object.
        let mut objects: u32 = 0;
        loop {
            // A value is due.
            match self.kind()? {
                Kind::Object | Kind::Array => {
                    let is_object = self.src.get(self.pos) == Some(&b'{');
                    self.open()?;
                    objects = (objects << 1) | u32::from(is_object);
                    let close = if is_object { b'}' } else { b']' };
                    if self.peek() != Some(close) {
                        if is_object {
                            self.skip_key()?;
                        }
                        continue;
                    }
                    self.pos += 1;
                    self.depth -= 1;
                    objects >>= 1;
                }
                Kind::String => {
                    self.scan_string(&mut [])?;
                }
                Kind::Number => {
                    self.scan_number()?;
                }
                Kind::Bool | Kind::Null => self.skip_literal()?,
            }
            if self.close_containers(base, &mut objects)? {
                return Ok(());
            }
        }
    }

    /// Only whitespace may follow the top-level value.
    pub(crate) fn end(&mut self) -> Result<(), Error> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error(ErrorKind::Syntax)),
        }
    }

    /// After a value inside [`Parser::skip_value`]: closes the containers that end here. Returns
    /// true when the skipped value is complete, false when a comma announced another value.
    fn close_containers(&mut self, base: u32, objects: &mut u32) -> Result<bool, Error> {
        while self.depth > base {
            let in_object = *objects & 1 == 1;
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    if in_object {
                        self.skip_key()?;
                    }
                    return Ok(false);
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                _ => return Err(self.error(ErrorKind::Syntax)),
            }
            self.pos += 1;
            self.depth -= 1;
            *objects >>= 1;
        }
        Ok(true)
    }

    /// A key and its colon, inside [`Parser::skip_value`].
    fn skip_key(&mut self) -> Result<(), Error> {
        if self.peek() != Some(b'"') {
            return Err(self.error(ErrorKind::Syntax));
        }
        self.scan_string(&mut [])?;
        self.expect_byte(b':')
    }

    fn skip_literal(&mut self) -> Result<(), Error> {
        for word in [&b"true"[..], b"false", b"null"] {
            if self.literal(word) {
                return Ok(());
            }
        }
        Err(self.error(ErrorKind::Syntax))
    }

    /// Consumes `word` if it comes next.
    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.src.get(self.pos..).is_some_and(|rest| rest.starts_with(word));
        if found {
            self.pos += word.len();
        }
        found
    }

    /// `{` or `[`, one level deeper.
    fn open(&mut self) -> Result<(), Error> {
        if self.depth >= DEPTH_MAX {
            return Err(self.error(ErrorKind::TooDeep));
        }
        self.pos += 1;
        self.depth += 1;
        Ok(())
    }

    fn expect_kind(&mut self, want: Kind) -> Result<(), Error> {
        if self.kind()? != want {
            return Err(self.error(ErrorKind::WrongType));
        }
        Ok(())
    }

    fn expect_byte(&mut self, byte: u8) -> Result<(), Error> {
        if self.peek() != Some(byte) {
            return Err(self.error(ErrorKind::Syntax));
        }
        self.pos += 1;
        Ok(())
    }

    /// Skips whitespace and shows the next byte.
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
        self.src.get(self.pos).copied()
    }

    fn peek_offset(&mut self) -> u32 {
        self.peek();
        offset_u32(self.pos)
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error { offset: offset_u32(self.pos), kind }
    }
}

/// Strings and numbers: the scanners behind the typed readers and the skipper.
impl Parser<'_> {
    /// Reads a string from its opening quote, decoding it into `buf`, to its end whether it
    /// overflows `buf` or is not UTF-8: a string that is only skipped (a value under a key the
    /// reader never uses) may hold any bytes, as Mongoose OS's parser takes them.
    fn scan_string(&mut self, buf: &mut [u8]) -> Result<Scanned, Error> {
        let mut out = Out { buf, len: 0, overflow: false };
        let mut not_utf8_at = None;
        self.pos += 1;
        while self.pos < self.src.len() {
            let run_start = self.pos;
            while let Some(&byte) = self.src.get(self.pos) {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Escapes are ASCII and UTF-8 never uses ASCII inside a character, so each raw run
            // must be UTF-8 on its own.
            let run = &self.src[run_start..self.pos];
            if let Err(e) = core::str::from_utf8(run) {
                not_utf8_at = not_utf8_at.or(Some(run_start + e.valid_up_to()));
            }
            out.push(run);
            match self.src.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Scanned { len: out.len, overflow: out.overflow, not_utf8_at });
                }
                Some(b'\\') => self.scan_escape(&mut out)?,
                _ => return Err(self.error(ErrorKind::Syntax)),
            }
        }
        Err(self.error(ErrorKind::Syntax))
    }

    /// Decodes one escape, from its backslash.
    fn scan_escape(&mut self, out: &mut Out<'_>) -> Result<(), Error> {
        let start = self.pos;
        let simple = match self.src.get(self.pos + 1) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let c = self.scan_unicode_escape()?;
                out.push(c.encode_utf8(&mut [0; 4]).as_bytes());
                return Ok(());
            }
            _ => return Err(Error { offset: offset_u32(start), kind: ErrorKind::Syntax }),
        };
        self.pos += 2;
        out.push(&[simple]);
        Ok(())
    }

    /// `\uXXXX`, or a surrogate pair `\uD8xx\uDCxx`, from the backslash.
    fn scan_unicode_escape(&mut self) -> Result<char, Error> {
        let start = self.pos;
        let fail = Error { offset: offset_u32(start), kind: ErrorKind::Syntax };
        let high = self.hex4(self.pos + 2).ok_or(fail)?;
        self.pos += 6;
        let code = match high {
            0xd800..=0xdbff => {
                if self.src.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(fail);
                }
                let low = self.hex4(self.pos + 2).ok_or(fail)?;
                if !(0xdc00..=0xdfff).contains(&low) {
                    return Err(fail);
                }
                self.pos += 6;
                0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(fail),
            _ => high,
        };
        char::from_u32(code).ok_or(fail)
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.src.get(at..at + 4)?;
        digits.iter().try_fold(0, |value, &d| Some((value << 4) | char::from(d).to_digit(16)?))
    }

    /// Reads a number by JSON's grammar; returns whether it is an integer (no fraction, no
    /// exponent).
    fn scan_number(&mut self) -> Result<bool, Error> {
        let start = self.pos;
        let fail = Error { offset: offset_u32(start), kind: ErrorKind::Syntax };
        if self.src.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.src.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(fail),
        }
        let mut integer = true;
        if self.src.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(fail);
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.src.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.src.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(fail);
            }
            integer = false;
        }
        Ok(integer)
    }

    /// Consumes decimal digits; returns how many.
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.src.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }
}

fn offset_u32(offset: usize) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;
    use std::{format, vec};

    fn err(offset: u32, kind: ErrorKind) -> Error {
        Error { offset, kind }
    }

    /// Decodes the one string that `doc` holds.
    fn string(doc: &[u8]) -> Result<String, Error> {
        let mut p = Parser::new(doc);
        let mut buf = [0u8; 64];
        let s = String::from(p.string(&mut buf)?);
        p.end()?;
        Ok(s)
    }

    fn integer(doc: &str) -> Result<i64, Error> {
        let mut p = Parser::new(doc.as_bytes());
        let value = p.i64()?;
        p.end()?;
        Ok(value)
    }

    /// Skips the one value that `doc` holds.
    fn skip(doc: &str) -> Result<(), Error> {
        let mut p = Parser::new(doc.as_bytes());
        p.skip_value()?;
        p.end()
    }

    #[test]
    fn strings_decode_every_escape() {
        for (doc, text) in [
            (r#""plain""#, "plain"),
            (r#""""#, ""),
            (r#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{c}\n\r\t"),
            (r#""caf\u00e9 \u00E9""#, "café é"),
            (r#""\u0041\u20ac""#, "A€"),
            (r#""\ud83d\ude00!""#, "😀!"),
            (r#""\uD834\uDD1E""#, "𝄞"),
            ("\"raw ütf-8 ✓\"", "raw ütf-8 ✓"),
            (" \t\r\n\"spaced\" \n", "spaced"),
        ] {
            assert_eq!(string(doc.as_bytes()).as_deref(), Ok(text), "{doc}");
        }
    }

    #[test]
    fn bad_strings_are_syntax_errors_where_they_go_wrong() {
        for (doc, offset) in [
            (&br#""\ud83d""#[..], 1),
            (br#""\ude00""#, 1),
            (br#""\ud83d\u0041""#, 1),
            (br#""ab\x""#, 3),
            (br#""\u12""#, 1),
            (br#""\u12G4""#, 1),
            (b"\"a\nb\"", 2),
            (b"\"unterminated", 13),
            (b"\"back\\", 5),
            (b"\"ok \xff\"", 4),
            (b"\"cut \xe2\x82\"", 5),
        ] {
            let got = string(doc);
            assert_eq!(got, Err(err(offset, ErrorKind::Syntax)), "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn a_string_longer_than_its_buffer_is_too_long() {
        let mut p = Parser::new(br#" "12345""#);
        assert_eq!(p.string(&mut [0; 4]), Err(err(1, ErrorKind::TooLong)));
        let mut p = Parser::new(br#""\u00e9\u00e9""#);
        assert_eq!(p.string(&mut [0; 3]), Err(err(0, ErrorKind::TooLong)));
        let mut p = Parser::new(br#""1234""#);
        assert_eq!(p.string(&mut [0; 4]), Ok("1234"));
    }

    #[test]
    fn labels_refuse_nul() {
        let mut p = Parser::new(br#""a\u0000b""#);
        assert_eq!(p.label::<8>(), Err(err(0, ErrorKind::Nul)));
        let mut p = Parser::new(br#""ab""#);
        assert_eq!(p.label::<8>().map(|l| l.as_str() == "ab"), Ok(true));
    }

    #[test]
    fn integers_follow_json_grammar_within_i64() {
        for (doc, value) in [
            ("0", 0),
            ("-0", 0),
            ("134217728", 134217728),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(integer(doc), Ok(value), "{doc}");
        }
        for (doc, expected) in [
            ("9223372036854775808", err(0, ErrorKind::OutOfRange)),
            ("-9223372036854775809", err(0, ErrorKind::OutOfRange)),
            ("1.5", err(0, ErrorKind::NotInteger)),
            ("1e3", err(0, ErrorKind::NotInteger)),
            ("  -2.5E-3", err(2, ErrorKind::NotInteger)),
            ("-", err(0, ErrorKind::Syntax)),
            ("1.", err(0, ErrorKind::Syntax)),
            ("1e+", err(0, ErrorKind::Syntax)),
            ("01", err(1, ErrorKind::Syntax)),
            ("12a", err(2, ErrorKind::Syntax)),
            (".5", err(0, ErrorKind::Syntax)),
            ("+1", err(0, ErrorKind::Syntax)),
            ("\"12\"", err(0, ErrorKind::WrongType)),
        ] {
            assert_eq!(integer(doc), Err(expected), "{doc}");
        }
        let u32_of = |doc: &str| Parser::new(doc.as_bytes()).u32();
        assert_eq!(u32_of("4294967295"), Ok(u32::MAX));
        assert_eq!(u32_of(" 4294967296"), Err(err(1, ErrorKind::OutOfRange)));
        assert_eq!(u32_of("-1"), Err(err(0, ErrorKind::OutOfRange)));
    }

    #[test]
    fn booleans_and_wrong_types() {
        assert_eq!(Parser::new(b"true").bool(), Ok(true));
        assert_eq!(Parser::new(b" false").bool(), Ok(false));
        assert_eq!(Parser::new(b"tru").bool(), Err(err(0, ErrorKind::Syntax)));
        assert_eq!(Parser::new(b"null").bool(), Err(err(0, ErrorKind::WrongType)));
        assert_eq!(Parser::new(b"[1]").begin_object(), Err(err(0, ErrorKind::WrongType)));
        assert_eq!(Parser::new(b"").begin_object(), Err(err(0, ErrorKind::Syntax)));
        assert_eq!(Parser::new(b"}").kind(), Err(err(0, ErrorKind::Syntax)));
    }

    #[test]
    fn any_value_can_be_skipped() {
        for doc in [
            r#"{"a":[1,2,{"b":null}],"c":"x\"}","d":{},"e":[],"f":-1.5e+10,"g":[true,false]}"#,
            "[]",
            "{}",
            " [ [ [ ] ] , { } ] ",
            "1.5e-3",
            r#""s""#,
            "true",
            "null",
        ] {
            assert_eq!(skip(doc), Ok(()), "{doc}");
        }
    }

    #[test]
    fn malformed_values_cannot_be_skipped() {
        for (doc, offset) in [
            ("[1,]", 3),
            (r#"{"a":1,}"#, 7),
            (r#"{"a" 1}"#, 5),
            ("[1 2]", 3),
            ("{1:2}", 1),
            ("]", 0),
            ("[}", 1),
            (r#"{"a":1]"#, 6),
            ("[1", 2),
            ("nul", 0),
            ("[,1]", 1),
        ] {
            assert_eq!(skip(doc), Err(err(offset, ErrorKind::Syntax)), "{doc}");
        }
    }

    #[test]
    fn nesting_deeper_than_16_is_refused() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(skip(&nested(DEPTH_MAX as usize)), Ok(()));
        assert_eq!(skip(&nested(DEPTH_MAX as usize + 1)), Err(err(DEPTH_MAX, ErrorKind::TooDeep)));
        assert_eq!(skip(&"[".repeat(100_000)), Err(err(DEPTH_MAX, ErrorKind::TooDeep)));
        let objects = format!("{}1{}", r#"{"k":"#.repeat(17), "}".repeat(17));
        assert_eq!(skip(&objects), Err(err(16 * 5, ErrorKind::TooDeep)));
        // The depth counts from the top: one object entered leaves 15 levels to skip.
        let mut p = Parser::new(b"{\"a\":[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}");
        p.begin_object().unwrap();
        assert!(matches!(p.next_key(&mut [0; 4]), Ok(Some(Key::Str("a")))));
        assert_eq!(p.skip_value(), Err(err(20, ErrorKind::TooDeep)));
    }

    /// Walks an object of objects and skips everything else; returns the keys seen, nested ones
    /// as `outer.inner`.
    fn walk(doc: &str) -> Result<Vec<String>, Error> {
        let mut p = Parser::new(doc.as_bytes());
        let mut keys = Vec::new();
        let mut buf = [0u8; 8];
        p.begin_object()?;
        while let Some(key) = p.next_key(&mut buf)? {
            let key = match key {
                Key::Str(key) => String::from(key),
                Key::TooLong => String::from("<long>"),
                Key::NotUtf8 => String::from("<not utf-8>"),
            };
            if p.kind()? != Kind::Object {
                p.skip_value()?;
                keys.push(key);
                continue;
            }
            p.begin_object()?;
            let mut inner = [0u8; 8];
            while let Some(Key::Str(name)) = p.next_key(&mut inner)? {
                keys.push(format!("{key}.{name}"));
                p.skip_value()?;
            }
        }
        p.end()?;
        Ok(keys)
    }

    #[test]
    fn objects_are_walked_key_by_key() {
        let doc = r#"{"a":1,"b":{"x":{"deep":{}},"y":[]},"a_very_long_key":"v","c":{}}"#;
        assert_eq!(walk(doc), Ok(vec!["a".into(), "b.x".into(), "b.y".into(), "<long>".into()]));
        assert_eq!(walk("{}"), Ok(vec![]));
        assert_eq!(walk(r#"{"a":1 "b":2}"#), Err(err(7, ErrorKind::Syntax)));
        assert_eq!(walk(r#"{,"a":1}"#), Err(err(1, ErrorKind::Syntax)));
        assert_eq!(walk(r#"{"a":1,}"#), Err(err(7, ErrorKind::Syntax)));
        assert_eq!(walk(r#"{"a" 1}"#), Err(err(5, ErrorKind::Syntax)));
        assert_eq!(walk(r#"{"a":1} x"#), Err(err(8, ErrorKind::Syntax)));
        assert_eq!(walk(r#"{"a":1"#), Err(err(6, ErrorKind::Syntax)));
    }

    #[test]
    fn skipping_a_value_that_ends_in_an_object_leaves_the_next_key_readable() {
        // The skipper once left the "just opened" flag set, so the comma after a skipped
        // `{...}` value was refused.
        assert_eq!(
            walk(r#"{"a":[{}],"b":{"c":{"d":{}},"e":1}}"#),
            Ok(vec!["a".into(), "b.c".into(), "b.e".into()])
        );
    }

    /// Writes `s` as a JSON string, escaping the characters `escape` picks with `\u`.
    fn encode(s: &str, escape: &[bool]) -> String {
        let mut out = String::from("\"");
        for (i, c) in s.chars().enumerate() {
            let forced = escape.get(i % escape.len().max(1)).copied().unwrap_or(false);
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if forced || (c as u32) < 0x20 => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn any_string_escaped_any_way_decodes_to_itself(
            s in "\\PC{0,16}|[\\x00-\\x7f]{0,16}|[😀𝄞é\"\\\\/]{0,12}",
            escape in prop::collection::vec(any::<bool>(), 0..8),
        ) {
            // Escapes, surrogate pairs included, and raw UTF-8 decode to the same text.
            let doc = encode(&s, &escape);
            let mut p = Parser::new(doc.as_bytes());
            let mut buf = [0u8; 128];
            prop_assert_eq!(p.string(&mut buf), Ok(s.as_str()));
            prop_assert_eq!(p.end(), Ok(()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            // Whatever the input, every reader returns a value or an error at an offset within it.
            for read in 0..4 {
                let mut p = Parser::new(&bytes);
                let result = match read {
                    0 => p.skip_value(),
                    1 => p.string(&mut [0; 16]).map(drop),
                    2 => p.i64().map(drop),
                    _ => walk(&String::from_utf8_lossy(&bytes)).map(drop),
                };
                if let Err(e) = result {
                    prop_assert!(e.offset as usize <= bytes.len() * 3);
                }
            }
        }

        #[test]
        fn arbitrary_json_like_text_never_panics(
            doc in "[\\[\\]{}\",:0-9a-z\\\\.eE+ -]{0,120}",
        ) {
            // Text made of JSON's own characters reaches the deeper states of the skipper.
            let _ = skip(&doc);
            let _ = walk(&doc);
        }
    }
}
