//! A streaming `multipart/form-data` parser, and the upload form of `POST /update` on top of it.
//!
//! [`MultipartParser`] takes the body in pieces of any size and gives each part's head, its data
//! and its end. Data is handed out as slices of the input; only a tail that could be the start of
//! the next delimiter (`CRLF--boundary`, at most 73 bytes) is held back until the next piece
//! shows whether it is one.
//!
//! [`UploadForm`] applies Mongoose OS's rule (ota-http-server, §6.1 of the reference): **any part
//! that has a filename is the firmware bundle**, whatever its field name (`file`, `filedata`);
//! other fields are short values (at most [`FIELD_VALUE_MAX_BYTES`]) collected for the end of the
//! request, so `commit_timeout` may come before or after the file.
//!
//! ```
//! use ota_proto::http::multipart::{UploadEvent, UploadForm};
//! use ota_proto::http::HttpError;
//!
//! let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.zip\"\r\n\r\n\
//!              PK...\r\n--XyZ\r\nContent-Disposition: form-data; name=\"commit_timeout\"\r\n\r\n\
//!              300\r\n--XyZ--\r\n";
//! let mut form = UploadForm::new("multipart/form-data; boundary=XyZ").unwrap();
//! let mut bundle = Vec::new();
//! for piece in body.chunks(7) {
//!     form.feed(piece, |event| -> Result<(), HttpError> {
//!         if let UploadEvent::BundleData(bytes) = event {
//!             bundle.extend_from_slice(bytes);
//!         }
//!         Ok(())
//!     })
//!     .unwrap();
//! }
//! form.finish().unwrap();
//! assert_eq!(bundle, b"PK...");
//! assert_eq!(form.field("commit_timeout"), Some("300"));
//! ```

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ops::Range;

use super::{
    HttpError, find_header, is_token, quoted, quoted_bytes, split_header_line, take_line, trim_line_end,
};

/// The longest boundary RFC 2046 allows.
pub const BOUNDARY_MAX_BYTES: usize = 70;
/// At most this many parts in a body.
pub const PARTS_MAX: usize = 16;
/// At most this many bytes in one part's head, its final empty line included.
pub const PART_HEAD_MAX_BYTES: usize = 1024;
/// At most this many header fields in one part's head.
pub const PART_HEADERS_MAX: usize = 8;
/// At most this many bytes before the first boundary; a body without its boundary is refused
/// here rather than read to its end.
pub const PREAMBLE_MAX_BYTES: usize = 1024;
/// The longest value of a non-file field that [`UploadForm`] collects (Mongoose OS keeps about
/// 50 bytes).
pub const FIELD_VALUE_MAX_BYTES: usize = 50;

/// The head of one part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartHead {
    /// The `name` of its `Content-Disposition: form-data`.
    pub name: String,
    /// The `filename`, as sent (curl and browsers send `"` as `%22`; it is not decoded).
    pub filename: Option<String>,
    /// The part's `Content-Type`, if it has one (curl sends none for `-F file=@-`).
    pub content_type: Option<String>,
}

/// What the parser found in the pieces fed so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultipartEvent<'a> {
    PartStart(PartHead),
    /// The next bytes of the current part's data; never empty.
    PartData(&'a [u8]),
    PartEnd,
    /// The closing boundary came; whatever follows it is ignored.
    End,
}

/// Reads the boundary from a `multipart/form-data` Content-Type, quoted or not.
pub fn boundary_from_content_type(content_type: &str) -> Result<String, HttpError> {
    let (kind, params) = header_params(content_type)
        .map_err(|e| HttpError::bad_request(format!("bad Content-Type {}: {e}", quoted(content_type))))?;
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(HttpError::bad_request(format!(
            "Content-Type {} is not multipart/form-data",
            quoted(content_type)
        )));
    }
    let Some(boundary) = param(&params, "boundary") else {
        return Err(HttpError::bad_request(format!("Content-Type {} has no boundary", quoted(content_type))));
    };
    check_boundary(boundary)?;
    Ok(boundary.to_string())
}

/// RFC 2046 §5.1.1: 1 to 70 of `bchars`, not ending with a space. The delimiter search relies
/// on it: a boundary never holds CR, so a delimiter can only start at a CR.
fn check_boundary(boundary: &str) -> Result<(), HttpError> {
    let bchar = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    let fits = (1..=BOUNDARY_MAX_BYTES).contains(&boundary.len());
    if fits && boundary.bytes().all(bchar) && !boundary.ends_with(' ') {
        return Ok(());
    }
    Err(HttpError::bad_request(format!(
        "boundary {} is not 1 to {BOUNDARY_MAX_BYTES} of the characters RFC 2046 allows",
        quoted(boundary)
    )))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Preamble,
    /// Right after a delimiter: `--` ends the body, transport padding and CRLF start a part.
    AfterDelimiter,
    AfterDelimiterDash,
    Padding {
        seen_cr: bool,
    },
    PartHead,
    PartData,
    Done,
    Failed(HttpError),
}

/// What [`MultipartParser::scan`] found in the input, given what was held back.
enum Scan {
    /// `rest[..data_len]` is data, then a delimiter ends just before `rest[end]`.
    Delimiter { data_len: usize, end: usize },
    /// All of `rest` is used: `rest[..data_len]` is data, the remainder is held back.
    Tail { data_len: usize },
    /// The held-back bytes did not grow into a delimiter: they are data.
    HeldIsData,
}

/// An event before it is tied to the input or to the held-back bytes.
enum Found {
    PartStart(PartHead),
    Data(Range<usize>),
    HeldData,
    PartEnd,
    End,
}

/// A streaming `multipart/form-data` parser. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct MultipartParser {
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    state: State,
    /// A prefix of the delimiter seen at the end of the last piece.
    held: Vec<u8>,
    /// `held` was handed out as data and is cleared at the next step.
    held_given_out: bool,
    line: Vec<u8>,
    head_bytes: usize,
    head_fields: Vec<(String, String)>,
    /// Parts started so far; the current part is number `parts`.
    parts: usize,
    part_name: String,
    part_data_bytes: u64,
    preamble_bytes: usize,
}

impl MultipartParser {
    /// A parser for a body whose boundary is `boundary` (without the leading `--`).
    pub fn new(boundary: &str) -> Result<Self, HttpError> {
        check_boundary(boundary)?;
        Ok(MultipartParser {
            delimiter: [b"\r\n--", boundary.as_bytes()].concat(),
            state: State::Preamble,
            // The first boundary may open the body with no CRLF before it: start as if one came.
            held: b"\r\n".to_vec(),
            held_given_out: false,
            line: Vec::new(),
            head_bytes: 0,
            head_fields: Vec::new(),
            parts: 0,
            part_name: String::new(),
            part_data_bytes: 0,
            preamble_bytes: 0,
        })
    }

    /// A parser for a body sent with this `Content-Type` header value.
    pub fn from_content_type(content_type: &str) -> Result<Self, HttpError> {
        Self::new(&boundary_from_content_type(content_type)?)
    }

    /// Parses `input` and calls `on_event` for each event in it, in order. Stops at the first
    /// error, the parser's or `on_event`'s; after one, stop feeding.
    pub fn feed<E: From<HttpError>>(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(MultipartEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = input;
        loop {
            let (used, event) = self.step(rest)?;
            rest = &rest[used..];
            match event {
                Some(event) => on_event(event)?,
                None => return Ok(()),
            }
        }
    }

    /// Says whether the body was complete when it ended: `Ok` once the closing boundary came,
    /// an error that says where the body was cut otherwise.
    pub fn finish(&self) -> Result<(), HttpError> {
        let close = format!("--{}--", String::from_utf8_lossy(&self.delimiter[4..]));
        let cut = |where_: String| {
            Err(HttpError::bad_request(format!(
                "body ended {where_}; the closing boundary {} never came",
                quoted(&close)
            )))
        };
        match &self.state {
            State::Done => Ok(()),
            State::Failed(error) => Err(error.clone()),
            State::Preamble => cut("before the first boundary".to_string()),
            State::PartHead => cut(format!("inside the head of part {}", self.parts)),
            State::PartData => cut(format!(
                "inside part {} ({}) after {} data bytes",
                self.parts,
                quoted(&self.part_name),
                self.part_data_bytes
            )),
            State::AfterDelimiter | State::AfterDelimiterDash | State::Padding { .. } => {
                cut(format!("right after boundary {}", self.parts + 1))
            }
        }
    }

    /// Parses from the start of `input` up to the next event. Returns how many bytes it used and
    /// the event, or `None` when it used all of `input` and needs more. Once the body is done it
    /// uses everything and gives nothing.
    pub fn step<'s>(&'s mut self, input: &'s [u8]) -> Result<(usize, Option<MultipartEvent<'s>>), HttpError> {
        if self.held_given_out {
            self.held.clear();
            self.held_given_out = false;
        }
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        let (used, found) = match self.step_inner(input) {
            Ok(step) => step,
            Err(error) => {
                self.state = State::Failed(error.clone());
                return Err(error);
            }
        };
        let event = found.map(|found| match found {
            Found::PartStart(head) => MultipartEvent::PartStart(head),
            Found::Data(range) => MultipartEvent::PartData(&input[range]),
            Found::HeldData => MultipartEvent::PartData(&self.held),
            Found::PartEnd => MultipartEvent::PartEnd,
            Found::End => MultipartEvent::End,
        });
        Ok((used, event))
    }

    fn step_inner(&mut self, input: &[u8]) -> Result<(usize, Option<Found>), HttpError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Done => return Ok((input.len(), None)),
                State::Failed(_) => unreachable!("step returns the error first"),
                State::PartData => return Ok(self.part_data(input, used)),
                State::Preamble => match self.scan(rest) {
                    Scan::Delimiter { data_len, end } => {
                        self.skip_preamble(data_len)?;
                        used += end;
                        self.state = State::AfterDelimiter;
                    }
                    Scan::Tail { data_len } => {
                        self.skip_preamble(data_len)?;
                        return Ok((input.len(), None));
                    }
                    Scan::HeldIsData => {
                        let held = core::mem::take(&mut self.held);
                        self.skip_preamble(held.len())?;
                    }
                },
                _ if rest.is_empty() => return Ok((used, None)),
                State::AfterDelimiter | State::AfterDelimiterDash | State::Padding { .. } => {
                    used += 1;
                    if self.after_delimiter(rest[0])? {
                        self.state = State::Done;
                        return Ok((input.len(), Some(Found::End)));
                    }
                }
                State::PartHead => {
                    let (n, head) = self.part_head_line(rest)?;
                    used += n;
                    if let Some(head) = head {
                        return Ok((used, Some(Found::PartStart(head))));
                    }
                }
            }
        }
    }

    /// One step inside a part's data, from `input[used..]`.
    fn part_data(&mut self, input: &[u8], used: usize) -> (usize, Option<Found>) {
        let data = |len: usize| (len > 0).then_some(Found::Data(used..used + len));
        match self.scan(&input[used..]) {
            Scan::Delimiter { data_len, .. } if data_len > 0 => {
                // Hand out the data first; the next step finds the delimiter at the start.
                self.part_data_bytes += data_len as u64;
                (used + data_len, data(data_len))
            }
            Scan::Delimiter { end, .. } => {
                self.state = State::AfterDelimiter;
                (used + end, Some(Found::PartEnd))
            }
            Scan::Tail { data_len } => {
                self.part_data_bytes += data_len as u64;
                (input.len(), data(data_len))
            }
            Scan::HeldIsData => {
                self.part_data_bytes += self.held.len() as u64;
                self.held_given_out = true;
                (used, Some(Found::HeldData))
            }
        }
    }

    /// Looks for the delimiter at the start of `rest`, continuing the prefix held back from the
    /// last piece, or anywhere in `rest` when nothing is held. A delimiter can only start at a
    /// CR: the boundary has none.
    fn scan(&mut self, rest: &[u8]) -> Scan {
        let delimiter = &self.delimiter;
        if !self.held.is_empty() {
            let matched = self.held.len();
            let n = rest.len().min(delimiter.len() - matched);
            if rest[..n] != delimiter[matched..matched + n] {
                return Scan::HeldIsData;
            }
            if matched + n == delimiter.len() {
                self.held.clear();
                return Scan::Delimiter { data_len: 0, end: n };
            }
            self.held.extend_from_slice(rest);
            return Scan::Tail { data_len: 0 };
        }
        let mut from = 0;
        while let Some(i) = rest[from..].iter().position(|&b| b == b'\r') {
            let at = from + i;
            let candidate = &rest[at..];
            if candidate.len() >= delimiter.len() {
                if candidate.starts_with(delimiter) {
                    return Scan::Delimiter { data_len: at, end: at + delimiter.len() };
                }
            } else if delimiter.starts_with(candidate) {
                self.held.extend_from_slice(candidate);
                return Scan::Tail { data_len: at };
            }
            from = at + 1;
        }
        Scan::Tail { data_len: rest.len() }
    }

    fn skip_preamble(&mut self, bytes: usize) -> Result<(), HttpError> {
        self.preamble_bytes += bytes;
        if self.preamble_bytes <= PREAMBLE_MAX_BYTES {
            return Ok(());
        }
        let first = String::from_utf8_lossy(&self.delimiter[2..]).into_owned();
        Err(HttpError::bad_request(format!(
            "no boundary {} in the first {PREAMBLE_MAX_BYTES} bytes of the body",
            quoted(&first)
        )))
    }

    /// Reads one byte after a delimiter. Returns whether it ended the body.
    fn after_delimiter(&mut self, byte: u8) -> Result<bool, HttpError> {
        self.state = match (&self.state, byte) {
            (State::AfterDelimiter, b'-') => State::AfterDelimiterDash,
            (State::AfterDelimiterDash, b'-') => return Ok(true),
            (State::AfterDelimiter | State::Padding { seen_cr: false }, b' ' | b'\t') => {
                State::Padding { seen_cr: false }
            }
            (State::AfterDelimiter | State::Padding { seen_cr: false }, b'\r') => {
                State::Padding { seen_cr: true }
            }
            (State::AfterDelimiter | State::Padding { .. }, b'\n') => self.start_part()?,
            _ => {
                return Err(HttpError::bad_request(format!(
                    "boundary {} is followed by {}, not by CRLF or `--`",
                    self.parts + 1,
                    quoted_bytes(&[byte])
                )));
            }
        };
        Ok(false)
    }

    fn start_part(&mut self) -> Result<State, HttpError> {
        if self.parts == PARTS_MAX {
            return Err(HttpError::bad_request(format!("body has more than {PARTS_MAX} parts")));
        }
        self.parts += 1;
        self.head_bytes = 0;
        self.head_fields.clear();
        self.part_name.clear();
        self.part_data_bytes = 0;
        Ok(State::PartHead)
    }

    /// Collects one line of a part's head. Returns the bytes used and, after the empty line
    /// that ends the head, the head.
    fn part_head_line(&mut self, rest: &[u8]) -> Result<(usize, Option<PartHead>), HttpError> {
        let part = self.parts;
        let Some((n, complete)) = take_line(&mut self.line, rest, PART_HEAD_MAX_BYTES - self.head_bytes)
        else {
            return Err(HttpError::bad_request(format!(
                "head of part {part} is longer than {PART_HEAD_MAX_BYTES} bytes"
            )));
        };
        if !complete {
            return Ok((n, None));
        }
        self.head_bytes += self.line.len();
        let line = core::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(trim_line_end(&line));
        if text.is_empty() {
            let head = part_head(part, &self.head_fields)?;
            self.part_name.clone_from(&head.name);
            self.state = State::PartData;
            return Ok((n, Some(head)));
        }
        if self.head_fields.len() == PART_HEADERS_MAX {
            return Err(HttpError::bad_request(format!(
                "part {part} has more than {PART_HEADERS_MAX} header fields"
            )));
        }
        let (name, value) =
            split_header_line(&text).map_err(|e| HttpError::bad_request(format!("part {part}: {e}")))?;
        self.head_fields.push((name.to_string(), value.to_string()));
        Ok((n, None))
    }
}

/// Builds a part's head from its header fields: `Content-Disposition: form-data; name=...` is
/// required.
fn part_head(part: usize, fields: &[(String, String)]) -> Result<PartHead, HttpError> {
    let bad = |what: String| HttpError::bad_request(format!("part {part}: {what}"));
    let Some(disposition) = find_header(fields, "Content-Disposition") else {
        return Err(bad("no Content-Disposition header".to_string()));
    };
    let (kind, params) = header_params(disposition)
        .map_err(|e| bad(format!("bad Content-Disposition {}: {e}", quoted(disposition))))?;
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(bad(format!("Content-Disposition is {}, not form-data", quoted(&kind))));
    }
    let Some(name) = param(&params, "name") else {
        return Err(bad(format!("Content-Disposition {} has no name", quoted(disposition))));
    };
    Ok(PartHead {
        name: name.to_string(),
        filename: param(&params, "filename").map(str::to_string),
        content_type: find_header(fields, "Content-Type").map(str::to_string),
    })
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Splits a header value like `form-data; name="file"; filename="fw.zip"` into its first word
/// and its parameters, names lowercased. Quoted values end at the next `"`, with no backslash
/// escapes, as the HTML standard encodes form data (a `"` in a filename is sent as `%22`).
fn header_params(value: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (kind, mut rest) = value.split_once(';').unwrap_or((value, ""));
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return Ok((kind.trim().to_string(), params));
        }
        let Some((name, after)) = rest.split_once('=') else {
            return Err(format!("parameter {} has no value", quoted(rest)));
        };
        let name = name.trim();
        if !is_token(name) {
            return Err(format!("bad parameter name {}", quoted(name)));
        }
        let after = after.trim_start_matches([' ', '\t']);
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted_value) => match quoted_value.split_once('"') {
                Some((value, after)) => (value, after),
                None => return Err(format!("parameter {name} has no closing quote")),
            },
            None => {
                let (value, after) = after.split_at(after.find(';').unwrap_or(after.len()));
                (value.trim_end_matches([' ', '\t']), after)
            }
        };
        let after = after.trim_start_matches([' ', '\t']);
        if !after.is_empty() && !after.starts_with(';') {
            return Err(format!("unexpected {} after parameter {name}", quoted(after)));
        }
        params.push((name.to_ascii_lowercase(), value.to_string()));
        rest = after;
    }
}

/// What an upload form gives: the bundle's bytes as they arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadEvent<'a> {
    /// A part with a (non-empty) filename started: it is the bundle.
    BundleStart {
        field: String,
        filename: String,
    },
    /// The next bytes of the bundle; never empty.
    BundleData(&'a [u8]),
    BundleEnd,
    /// The body is complete; [`UploadForm::fields`] holds every other field.
    End,
}

#[derive(Clone, Debug)]
enum Current {
    Between,
    Bundle,
    Field { name: String, value: Vec<u8> },
}

/// The body of `POST /update`, read the way Mongoose OS's ota-http-server reads it. See the
/// [module documentation](self).
#[derive(Clone, Debug)]
pub struct UploadForm {
    parser: MultipartParser,
    current: Current,
    fields: Vec<(String, String)>,
    bundle_seen: bool,
    failed: Option<HttpError>,
}

impl UploadForm {
    /// A form for a body sent with this `Content-Type` header value.
    pub fn new(content_type: &str) -> Result<Self, HttpError> {
        Ok(UploadForm {
            parser: MultipartParser::from_content_type(content_type)?,
            current: Current::Between,
            fields: Vec::new(),
            bundle_seen: false,
            failed: None,
        })
    }

    /// Parses the next piece of the body and calls `on_event` for each bundle event in it.
    /// A second file part, a field longer than [`FIELD_VALUE_MAX_BYTES`] or a field that is
    /// not UTF-8 is an error; after any error, stop feeding.
    pub fn feed<E: From<HttpError>>(
        &mut self,
        piece: &[u8],
        mut on_event: impl FnMut(UploadEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(error) = &self.failed {
            return Err(error.clone().into());
        }
        let UploadForm { parser, current, fields, bundle_seen, failed } = self;
        let mut fail = |error: HttpError| -> E {
            *failed = Some(error.clone());
            error.into()
        };
        parser.feed(piece, |event| match event {
            MultipartEvent::PartStart(head) => match head.filename {
                // Mongoose OS reads an empty filename (a file input left empty) as a plain field.
                Some(filename) if !filename.is_empty() => {
                    if core::mem::replace(bundle_seen, true) {
                        return Err(fail(second_file(&head.name, &filename)));
                    }
                    *current = Current::Bundle;
                    on_event(UploadEvent::BundleStart { field: head.name, filename })
                }
                _ => {
                    *current = Current::Field { name: head.name, value: Vec::new() };
                    Ok(())
                }
            },
            MultipartEvent::PartData(bytes) => match current {
                Current::Bundle => on_event(UploadEvent::BundleData(bytes)),
                Current::Field { name, value } if value.len() + bytes.len() > FIELD_VALUE_MAX_BYTES => {
                    Err(fail(HttpError::bad_request(format!(
                        "field {} is longer than {FIELD_VALUE_MAX_BYTES} bytes",
                        quoted(name)
                    ))))
                }
                Current::Field { value, .. } => {
                    value.extend_from_slice(bytes);
                    Ok(())
                }
                Current::Between => unreachable!("data comes only inside a part"),
            },
            MultipartEvent::PartEnd => match core::mem::replace(current, Current::Between) {
                Current::Bundle => on_event(UploadEvent::BundleEnd),
                Current::Field { name, value } => match String::from_utf8(value) {
                    Ok(value) => {
                        fields.push((name, value));
                        Ok(())
                    }
                    Err(_) => {
                        Err(fail(HttpError::bad_request(format!("field {} is not UTF-8", quoted(&name)))))
                    }
                },
                Current::Between => unreachable!("a part ends only after it started"),
            },
            MultipartEvent::End => on_event(UploadEvent::End),
        })
    }

    /// Says whether the body was complete when it ended; see [`MultipartParser::finish`].
    pub fn finish(&self) -> Result<(), HttpError> {
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => self.parser.finish(),
        }
    }

    /// Whether a bundle part has started.
    pub fn has_bundle(&self) -> bool {
        self.bundle_seen
    }

    /// The non-file fields completed so far, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The last value of the non-file field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn second_file(field: &str, filename: &str) -> HttpError {
    HttpError::bad_request(format!(
        "a second file part (field {}, filename {}) follows the bundle; upload one file",
        quoted(field),
        quoted(filename)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_params_read_quoted_and_bare_values() {
        let (kind, params) = header_params("form-data; name=\"file\"; filename=\"a b;c.zip\"").unwrap();
        assert_eq!(kind, "form-data");
        assert_eq!(params, [("name".into(), "file".into()), ("filename".into(), "a b;c.zip".into())]);
        let (kind, params) = header_params("multipart/form-data;Boundary=abc ;x=\"\"").unwrap();
        assert_eq!(kind, "multipart/form-data");
        assert_eq!(params, [("boundary".into(), "abc".into()), ("x".into(), String::new())]);
        assert!(header_params("form-data; name=\"file").is_err());
        assert!(header_params("form-data; name").is_err());
        assert!(header_params("form-data; name=\"a\"b").is_err());
    }

    #[test]
    fn boundaries_follow_rfc_2046() {
        assert_eq!(boundary_from_content_type("multipart/form-data; boundary=\"a b\"").unwrap(), "a b");
        assert!(boundary_from_content_type("multipart/form-data; boundary=\"a \"").is_err());
        assert!(
            boundary_from_content_type(&format!("multipart/form-data; boundary={}", "x".repeat(71))).is_err()
        );
        assert!(boundary_from_content_type("multipart/form-data; boundary=a\"b").is_err());
    }
}
