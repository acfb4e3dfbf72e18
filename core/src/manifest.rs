//! The `manifest.json` of a Mongoose OS bundle (§1.2 of the reference), parsed without allocation.
//!
//! | key         | level | type              | kept as                                               |
//! |-------------|-------|-------------------|-------------------------------------------------------|
//! | `name`      | top   | string, optional  | [`Manifest::name`], at most 32 bytes                  |
//! | `platform`  | top   | string, required  | [`Manifest::platform`], at most 16 bytes              |
//! | `version`   | top   | string, optional  | [`Manifest::version`], at most 24 bytes               |
//! | `build_id`  | top   | string, optional  | [`Manifest::build_id`], at most 54 bytes              |
//! | `parts`     | top   | object, required  | [`Manifest::parts`], [`PARTS_MAX`], keys of 32 bytes  |
//! | `type`      | part  | string            | [`Part::kind`], at most 32 bytes                      |
//! | `src`       | part  | string            | [`Part::src`], at most 50 bytes                       |
//! | `size`      | part  | integer (`20000.0` too) | [`Part::size_bytes`], `u32`                     |
//! | `addr`      | part  | integer (`4096.0` too)  | [`Part::addr`], `u32`                           |
//! | `cs_sha1`   | part  | 40 hex digits     | [`Part::cs_sha1`], either case                        |
//! | `cs_sha256` | part  | 64 hex digits     | [`Part::cs_sha256`], either case                      |
//! | `update`    | part  | bool              | [`Part::update`]                                      |
//!
//! Any other key, at either level, is skipped whatever its value (`description`,
//! `build_timestamp`, `fill`, `ptn`, `encrypt`, extra attributes), and whatever bytes its key or
//! string values hold (UTF-8 or not), as Mongoose OS skips them.
//!
//! The bounds and why: `version` is stored in the boot-state record's 24 bytes
//! ([`crate::state::VERSION_MAX_BYTES`]), so a longer one is refused rather than cut (two
//! versions cut alike would compare equal); `build_id` likewise holds 54. `name` (32) and
//! `platform` (16) are longer than any mos writes. Numbers past `u32` are refused only under
//! `size` and `addr`; elsewhere any number is skipped. A key the parser reads may
//! appear once; a duplicate of a skipped key is not detected, as it is not used.

use crate::json::{self, ErrorKind, Key, Parser};
use crate::state::{BuildId, Label, Version};

/// Parts one manifest may list. ESP32 bundles list 6 to 8 (boot, pt, otadata, nvs, app, fs,
/// and extra data partitions); 12 leaves room while the [`Manifest`] (about 190 bytes a part)
/// keeps the whole `Updater` under 4 KiB.
pub const PARTS_MAX: usize = 12;
pub type Name = Label<32>;
pub type Platform = Label<16>;
pub type PartName = Label<PART_NAME_MAX_BYTES>;
pub type Src = Label<50>;

/// Part keys are partition-like names (ESP-IDF partition labels are at most 16 bytes); 32
/// leaves room for longer keys of extra data parts.
const PART_NAME_MAX_BYTES: usize = 32;

/// Longest key that can be one the parser reads; longer keys are skipped with their values.
const KEY_MAX_BYTES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub name: PartName,
    /// The `type` field (`app`, `fs`, `boot`, ...), if present.
    pub kind: Option<PartName>,
    pub src: Option<Src>,
    pub size_bytes: Option<u32>,
    pub addr: Option<u32>,
    pub cs_sha1: Option<[u8; 20]>,
    pub cs_sha256: Option<[u8; 32]>,
    /// The `update` field (boot loader parts only).
    pub update: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: Option<Name>,
    pub platform: Platform,
    pub version: Option<Version>,
    pub build_id: Option<BuildId>,
    pub parts: heapless::Vec<Part, PARTS_MAX>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// "Failed to parse manifest", at a byte offset.
    Parse {
        offset: u32,
    },
    /// "Required manifest field missing"
    Missing {
        field: &'static str,
    },
    /// A field is longer than its storage.
    TooLong {
        field: &'static str,
        max_bytes: u32,
    },
    /// A field has the wrong JSON type or an impossible value.
    BadValue {
        field: &'static str,
    },
    /// `cs_sha1`/`cs_sha256` is not 40/64 hex digits.
    BadChecksum {
        part: PartName,
        field: &'static str,
    },
    TooManyParts,
}

impl core::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const PARSE: &str = "Failed to parse manifest";
        match *self {
            ManifestError::Parse { offset } => write!(f, "{PARSE} (invalid JSON at byte {offset})"),
            ManifestError::Missing { field } => write!(f, "Required manifest field missing: {field}"),
            ManifestError::TooLong { field, max_bytes } => {
                write!(f, "{PARSE} ({field} is longer than {max_bytes} bytes)")
            }
            ManifestError::BadValue { field } => {
                write!(f, "{PARSE} ({field} has the wrong type or an impossible value)")
            }
            ManifestError::BadChecksum { part, field } => {
                let digits = if field == "cs_sha256" { 64 } else { 40 };
                write!(f, "{PARSE} ({field} of part {part} is not {digits} hex digits)")
            }
            ManifestError::TooManyParts => write!(f, "{PARSE} (more than {PARTS_MAX} parts)"),
        }
    }
}

/// Shows bytes as lower-case hex, as manifests write checksums.
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl Part {
    /// A part with its name and no field given.
    pub fn named(name: PartName) -> Part {
        Part {
            name,
            kind: None,
            src: None,
            size_bytes: None,
            addr: None,
            cs_sha1: None,
            cs_sha256: None,
            update: None,
        }
    }
}

impl Manifest {
    /// Parses `manifest.json`. `platform` and `parts` are required; `name`, `version` and
    /// `build_id` are optional, as real bundles lack some of them.
    pub fn parse(json: &[u8]) -> Result<Manifest, ManifestError> {
        let mut p = Parser::new(json);
        p.begin_object().map_err(parse_error)?;
        let mut top = Top::default();
        let mut key_buf = [0u8; KEY_MAX_BYTES];
        while let Some(key) = p.next_key(&mut key_buf).map_err(parse_error)? {
            top.read_field(&mut p, key)?;
        }
        p.end().map_err(parse_error)?;
        Ok(Manifest {
            name: top.name,
            platform: top.platform.ok_or(ManifestError::Missing { field: "platform" })?,
            version: top.version,
            build_id: top.build_id,
            parts: top.parts.ok_or(ManifestError::Missing { field: "parts" })?,
        })
    }

    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name.as_str() == name)
    }
}

/// The top-level fields read so far.
#[derive(Default)]
struct Top {
    name: Option<Name>,
    platform: Option<Platform>,
    version: Option<Version>,
    build_id: Option<BuildId>,
    parts: Option<heapless::Vec<Part, PARTS_MAX>>,
}

impl Top {
    fn read_field(&mut self, p: &mut Parser<'_>, key: Key<'_>) -> Result<(), ManifestError> {
        match key {
            Key::Str("name") => set_once(p, &mut self.name, |p| label(p, "name")),
            Key::Str("platform") => set_once(p, &mut self.platform, |p| label(p, "platform")),
            Key::Str("version") => set_once(p, &mut self.version, |p| label(p, "version")),
            Key::Str("build_id") => set_once(p, &mut self.build_id, |p| label(p, "build_id")),
            Key::Str("parts") => set_once(p, &mut self.parts, parse_parts),
            _ => p.skip_value().map_err(parse_error),
        }
    }
}

/// The `parts` object: one [`Part`] per key, in document order.
fn parse_parts(p: &mut Parser<'_>) -> Result<heapless::Vec<Part, PARTS_MAX>, ManifestError> {
    p.begin_object().map_err(|e| value_error(e, "parts", 0))?;
    let mut parts = heapless::Vec::new();
    let mut key_buf = [0u8; PART_NAME_MAX_BYTES];
    while let Some(key) = p.next_key(&mut key_buf).map_err(parse_error)? {
        let name = match key {
            Key::Str(name) => PartName::new(name).ok_or(ManifestError::BadValue { field: "part name" })?,
            Key::TooLong => {
                let max_bytes = PART_NAME_MAX_BYTES as u32;
                return Err(ManifestError::TooLong { field: "part name", max_bytes });
            }
            Key::NotUtf8 => return Err(ManifestError::BadValue { field: "part name" }),
        };
        if parts.iter().any(|part: &Part| part.name == name) {
            return Err(ManifestError::Parse { offset: p.key_offset() });
        }
        if parts.is_full() {
            return Err(ManifestError::TooManyParts);
        }
        let part = parse_part(p, name)?;
        parts.push(part).map_err(|_| ManifestError::TooManyParts)?;
    }
    Ok(parts)
}

/// One part's object.
fn parse_part(p: &mut Parser<'_>, name: PartName) -> Result<Part, ManifestError> {
    p.begin_object().map_err(|e| value_error(e, "part", 0))?;
    let mut part = Part::named(name);
    let mut key_buf = [0u8; KEY_MAX_BYTES];
    while let Some(key) = p.next_key(&mut key_buf).map_err(parse_error)? {
        match key {
            Key::Str("type") => set_once(p, &mut part.kind, |p| label(p, "type")),
            Key::Str("src") => set_once(p, &mut part.src, |p| label(p, "src")),
            Key::Str("size") => set_once(p, &mut part.size_bytes, |p| integer(p, "size")),
            Key::Str("addr") => set_once(p, &mut part.addr, |p| integer(p, "addr")),
            Key::Str("cs_sha1") => set_once(p, &mut part.cs_sha1, |p| checksum(p, name, "cs_sha1")),
            Key::Str("cs_sha256") => set_once(p, &mut part.cs_sha256, |p| checksum(p, name, "cs_sha256")),
            Key::Str("update") => {
                set_once(p, &mut part.update, |p| p.bool().map_err(|e| value_error(e, "update", 0)))
            }
            _ => p.skip_value().map_err(parse_error),
        }?;
    }
    Ok(part)
}

/// Reads a value into `slot`; a second value for the same key is a parse error at its key.
fn set_once<T>(
    p: &mut Parser<'_>,
    slot: &mut Option<T>,
    read: impl FnOnce(&mut Parser<'_>) -> Result<T, ManifestError>,
) -> Result<(), ManifestError> {
    if slot.is_some() {
        return Err(ManifestError::Parse { offset: p.key_offset() });
    }
    *slot = Some(read(p)?);
    Ok(())
}

fn label<const N: usize>(p: &mut Parser<'_>, field: &'static str) -> Result<Label<N>, ManifestError> {
    p.label::<N>().map_err(|e| value_error(e, field, N as u32))
}

fn integer(p: &mut Parser<'_>, field: &'static str) -> Result<u32, ManifestError> {
    p.u32().map_err(|e| value_error(e, field, 0))
}

/// A checksum of `N` bytes written as `2 * N` hex digits, either case.
fn checksum<const N: usize>(
    p: &mut Parser<'_>,
    part: PartName,
    field: &'static str,
) -> Result<[u8; N], ManifestError> {
    let bad = ManifestError::BadChecksum { part, field };
    let mut buf = [0u8; 64];
    let text = match p.string(&mut buf) {
        Ok(text) => text.as_bytes(),
        Err(json::Error { kind: ErrorKind::TooLong, .. }) => return Err(bad),
        Err(e) => return Err(value_error(e, field, 0)),
    };
    if text.len() != 2 * N {
        return Err(bad);
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16).ok_or(bad)?;
        let low = char::from(pair[1]).to_digit(16).ok_or(bad)?;
        *byte = (high * 16 + low) as u8;
    }
    Ok(out)
}

/// A JSON error where the document is not JSON (or too deep) is a parse error at its offset.
fn parse_error(e: json::Error) -> ManifestError {
    ManifestError::Parse { offset: e.offset }
}

/// A JSON error while reading `field`, whose storage holds `max_bytes`.
fn value_error(e: json::Error, field: &'static str, max_bytes: u32) -> ManifestError {
    match e.kind {
        ErrorKind::Syntax | ErrorKind::TooDeep => parse_error(e),
        ErrorKind::TooLong => ManifestError::TooLong { field, max_bytes },
        ErrorKind::WrongType | ErrorKind::NotInteger | ErrorKind::OutOfRange | ErrorKind::Nul => {
            ManifestError::BadValue { field }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::string::{String, ToString};
    use std::vec::Vec;

    /// `manifest.json` of `cesanta/ccm-test-fw` `bin/f401test_2.0.0.zip`, §1.4 of the reference.
    const F401TEST: &str = r#"{
 "name": "f401test",
 "platform": "ccm_host",
 "parts": {
  "host_fw": {
   "src": "f401test_2.0.0.bin",
   "addr": 134217728,
   "size": 14432,
   "cs_sha1": "abc7cb34cfd1b8024b2d72e7cbe628ee7272dfc1",
   "cs_sha256": "2d242df4d8b74492ef33b9924abb40e83d4c50d33f011ede6f27c53ea36fbaa9"
  }
 }
}"#;

    /// An ESP32 bundle as `mos build` makes it, with the keys the stock updater ignores.
    const ESP32: &str = r#"{
  "name": "myapp", "platform": "esp32", "version": "1.0",
  "build_id": "20181126-182907/2.8.0-47-g7db8cdacf-dirty-mos9",
  "build_timestamp": "2018-11-26T18:29:07Z", "description": "An app",
  "parts": {
    "boot": {"type": "boot", "addr": 4096, "src": "bootloader.bin", "size": 21088, "encrypt": true,
             "update": false, "cs_sha1": "ABCDEF0123456789abcdef0123456789ABCDEF01"},
    "pt": {"type": "pt", "addr": 32768, "src": "partitions_mgos.bin", "size": 3072},
    "otadata": {"type": "otadata", "ptn": "otadata", "size": 8192, "fill": 255},
    "nvs": {"type": "nvs", "addr": 36864, "size": 16384, "fill": 255, "flash": false},
    "app": {"type": "app", "ptn": "app_0", "addr": 65536, "src": "myapp.bin", "size": 1375120,
            "encrypt": true, "cs_sha1": "0123456789abcdef0123456789abcdef01234567"},
    "fs": {"type": "fs", "ptn": "fs_0", "src": "fs.img", "size": 262144, "fs_size": 262144,
           "fs_block_size": 4096, "fs_erase_size": 4096, "fs_page_size": 256}
  },
  "extra_attr": [1, 2.5, {"nested": [null, true, -3e-7]}, "x"],
  "another": null
}"#;

    fn hex<const N: usize>(text: &str) -> [u8; N] {
        let mut out = [0; N];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn part(name: &str) -> Part {
        Part::named(PartName::new(name).unwrap())
    }

    /// Byte offset of the `n`th (from 0) `needle` in `doc`.
    fn offset_of(doc: &str, needle: &str, n: usize) -> u32 {
        doc.match_indices(needle).nth(n).unwrap().0 as u32
    }

    #[test]
    fn parses_a_real_mos_bundle_manifest() {
        let m = Manifest::parse(F401TEST.as_bytes()).unwrap();
        let expected = Part {
            src: Src::new("f401test_2.0.0.bin"),
            addr: Some(134217728),
            size_bytes: Some(14432),
            cs_sha1: Some(hex("abc7cb34cfd1b8024b2d72e7cbe628ee7272dfc1")),
            cs_sha256: Some(hex("2d242df4d8b74492ef33b9924abb40e83d4c50d33f011ede6f27c53ea36fbaa9")),
            ..part("host_fw")
        };
        assert_eq!(
            m,
            Manifest {
                name: Name::new("f401test"),
                platform: Platform::new("ccm_host").unwrap(),
                version: None,
                build_id: None,
                parts: heapless::Vec::from_slice(&[expected]).unwrap(),
            }
        );
        assert_eq!(m.part("host_fw"), Some(&expected));
        assert_eq!(m.part("app"), None);
    }

    #[test]
    fn parses_an_esp32_manifest_and_ignores_what_it_does_not_use() {
        let m = Manifest::parse(ESP32.as_bytes()).unwrap();
        assert_eq!(m.platform.as_str(), "esp32");
        assert_eq!(m.version, Version::new("1.0"));
        assert_eq!(m.build_id, BuildId::new("20181126-182907/2.8.0-47-g7db8cdacf-dirty-mos9"));
        let names: Vec<&str> = m.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["boot", "pt", "otadata", "nvs", "app", "fs"]);
        let boot = Part {
            kind: PartName::new("boot"),
            addr: Some(4096),
            src: Src::new("bootloader.bin"),
            size_bytes: Some(21088),
            update: Some(false),
            cs_sha1: Some(hex("abcdef0123456789abcdef0123456789abcdef01")),
            ..part("boot")
        };
        assert_eq!(m.part("boot"), Some(&boot));
        let otadata = Part { kind: PartName::new("otadata"), size_bytes: Some(8192), ..part("otadata") };
        assert_eq!(m.part("otadata"), Some(&otadata));
        let fs = m.part("fs").unwrap();
        assert_eq!((fs.kind, fs.src, fs.size_bytes), (PartName::new("fs"), Src::new("fs.img"), Some(262144)));
        assert_eq!(m.part("app").unwrap().addr, Some(65536));
    }

    #[test]
    fn parses_a_manifest_with_version_and_build_id() {
        let doc = r#"{"name":"myapp","version":"1.2.3","build_id":"20261122-101500/1.2.3-g0abc123",
            "platform":"esp32c3","parts":{"app":{"type":"app","src":"myapp.bin","size":4}}}"#;
        let m = Manifest::parse(doc.as_bytes()).unwrap();
        assert_eq!(m.name, Name::new("myapp"));
        assert_eq!(m.version, Version::new("1.2.3"));
        assert_eq!(m.build_id, BuildId::new("20261122-101500/1.2.3-g0abc123"));
        let app = Part {
            kind: PartName::new("app"),
            src: Src::new("myapp.bin"),
            size_bytes: Some(4),
            ..part("app")
        };
        assert_eq!(m.parts[..], [app]);
    }

    #[test]
    fn strings_are_unescaped() {
        let doc = r#"{"platform":"esp\u0033\u0032","name":"caf\u00e9 \ud83d\ude00 \"q\" a\/b\\",
            "parts":{"\u0061pp":{"src":"dir\/app.bin"}}}"#;
        let m = Manifest::parse(doc.as_bytes()).unwrap();
        assert_eq!(m.platform.as_str(), "esp32");
        assert_eq!(m.name.unwrap().as_str(), "café 😀 \"q\" a/b\\");
        assert_eq!(m.part("app").unwrap().src, Src::new("dir/app.bin"));
    }

    #[test]
    fn labels_fill_their_storage_exactly() {
        let doc = format!(
            r#"{{"platform":"{}","name":"{}","parts":{{"{}":{{}}}}}}"#,
            "p".repeat(16),
            "é".repeat(16),
            "n".repeat(16)
        );
        let m = Manifest::parse(doc.as_bytes()).unwrap();
        assert_eq!(m.name.unwrap().as_str().len(), 32);
        assert_eq!(m.parts[0].name.as_str().len(), 16);
    }

    #[test]
    fn empty_parts_are_accepted() {
        // The updater, not the parser, decides what an update needs.
        let m = Manifest::parse(br#"{"platform":"esp32","parts":{}}"#).unwrap();
        assert!(m.parts.is_empty());
        assert_eq!(m.name, None);
    }

    fn check_err(doc: &str, expected: ManifestError) {
        assert_eq!(Manifest::parse(doc.as_bytes()), Err(expected), "{doc}");
    }

    #[test]
    fn documents_that_are_not_json_are_parse_errors_at_their_offset() {
        use ManifestError::Parse;
        check_err("", Parse { offset: 0 });
        check_err("[]", Parse { offset: 0 });
        check_err(r#""manifest""#, Parse { offset: 0 });
        check_err(&F401TEST[..F401TEST.len() - 1], Parse { offset: F401TEST.len() as u32 - 1 });
        check_err(&format!("{F401TEST}}}"), Parse { offset: F401TEST.len() as u32 });
        check_err(r#"{"platform":"x","parts":{},}"#, Parse { offset: 27 });
        check_err(r#"{"platform":"x" "parts":{}}"#, Parse { offset: 16 });
        check_err(r#"{"platform":"x","parts":{"a":{"size":01}}}"#, Parse { offset: 38 });
        check_err(r#"{"platform":"x","parts":{"a":{"src":"a\qb"}}}"#, Parse { offset: 38 });
        check_err(r#"{"platform":"x","parts":{"a":{"src":"\ud800"}}}"#, Parse { offset: 37 });
        let deep = format!(r#"{{"platform":"x","parts":{{}},"attr":{}1{}}}"#, "[".repeat(16), "]".repeat(16));
        check_err(&deep, Parse { offset: 34 + 15 });
        let fine = format!(r#"{{"platform":"x","parts":{{}},"attr":{}1{}}}"#, "[".repeat(15), "]".repeat(15));
        assert!(Manifest::parse(fine.as_bytes()).is_ok());
    }

    #[test]
    fn duplicate_keys_are_parse_errors_at_the_second_key() {
        let doc = r#"{"platform":"x","parts":{},"platform":"y"}"#;
        check_err(doc, ManifestError::Parse { offset: offset_of(doc, "\"platform\"", 1) });
        let doc = r#"{"platform":"x","parts":{"app":{},"app":{}}}"#;
        check_err(doc, ManifestError::Parse { offset: offset_of(doc, "\"app\"", 1) });
        let doc = r#"{"platform":"x","parts":{"app":{"size":1,"size":1}}}"#;
        check_err(doc, ManifestError::Parse { offset: offset_of(doc, "\"size\"", 1) });
        let doc = r#"{"platform":"x","parts":{},"parts":{}}"#;
        check_err(doc, ManifestError::Parse { offset: offset_of(doc, "\"parts\"", 1) });
        // Keys the parser skips may repeat: their values are not used.
        assert!(
            Manifest::parse(br#"{"platform":"x","parts":{"a":{"fill":1,"fill":2}},"x":1,"x":2}"#).is_ok()
        );
    }

    #[test]
    fn platform_and_parts_are_required() {
        check_err(r#"{"name":"a","parts":{}}"#, ManifestError::Missing { field: "platform" });
        check_err(r#"{"platform":"esp32"}"#, ManifestError::Missing { field: "parts" });
        check_err("{}", ManifestError::Missing { field: "platform" });
    }

    #[test]
    fn strings_longer_than_their_storage_are_too_long() {
        let cases = [
            ("name", "n".repeat(33), 32),
            ("platform", "p".repeat(17), 16),
            ("version", "v".repeat(25), 24),
            ("build_id", "b".repeat(55), 54),
        ];
        for (field, value, max_bytes) in cases {
            let doc = format!(r#"{{"platform":"x","parts":{{}},"{field}":"{value}"}}"#).replacen(
                r#""platform":"x","#,
                if field == "platform" { "" } else { r#""platform":"x","# },
                1,
            );
            check_err(&doc, ManifestError::TooLong { field, max_bytes });
        }
        let doc = format!(r#"{{"platform":"x","parts":{{"p":{{"src":"{}"}}}}}}"#, "s".repeat(51));
        check_err(&doc, ManifestError::TooLong { field: "src", max_bytes: 50 });
        let doc = format!(r#"{{"platform":"x","parts":{{"p":{{"type":"{}"}}}}}}"#, "t".repeat(33));
        check_err(&doc, ManifestError::TooLong { field: "type", max_bytes: 32 });
        let doc = format!(r#"{{"platform":"x","parts":{{"{}":{{}}}}}}"#, "n".repeat(33));
        check_err(&doc, ManifestError::TooLong { field: "part name", max_bytes: 32 });
    }

    #[test]
    fn values_of_the_wrong_type_or_range_are_bad() {
        let part_field =
            |field: &str, value: &str| format!(r#"{{"platform":"x","parts":{{"p":{{"{field}":{value}}}}}}}"#);
        for (field, value) in [
            ("size", r#""14432""#),
            ("size", "1.5"),
            ("size", "1e3"),
            ("size", "-1"),
            ("size", "4294967296"),
            ("addr", "null"),
            ("update", r#""true""#),
            ("type", "1"),
            ("src", "[]"),
            ("cs_sha1", "true"),
            ("cs_sha256", "{}"),
        ] {
            check_err(&part_field(field, value), ManifestError::BadValue { field });
        }
        check_err(r#"{"platform":1,"parts":{}}"#, ManifestError::BadValue { field: "platform" });
        check_err(r#"{"platform":"x","parts":[]}"#, ManifestError::BadValue { field: "parts" });
        check_err(r#"{"platform":"x","parts":{"p":"app.bin"}}"#, ManifestError::BadValue { field: "part" });
        check_err(r#"{"platform":"x\u0000","parts":{}}"#, ManifestError::BadValue { field: "platform" });
        check_err(
            r#"{"platform":"x","parts":{"a\u0000":{}}}"#,
            ManifestError::BadValue { field: "part name" },
        );
    }

    #[test]
    fn checksums_must_be_exact_hex_digits() {
        let app = PartName::new("app").unwrap();
        let sha1 = ManifestError::BadChecksum { part: app, field: "cs_sha1" };
        let sha256 = ManifestError::BadChecksum { part: app, field: "cs_sha256" };
        let doc = |field: &str, value: &str| {
            format!(r#"{{"platform":"x","parts":{{"app":{{"{field}":"{value}"}}}}}}"#)
        };
        let digits = "0123456789abcdef".repeat(5);
        for (field, value, expected) in [
            ("cs_sha1", &digits[..39], sha1),
            ("cs_sha1", &digits[..41], sha1),
            ("cs_sha1", "", sha1),
            ("cs_sha1", &format!("{}g", &digits[..39]), sha1),
            ("cs_sha1", &format!("{} ", &digits[..39]), sha1),
            ("cs_sha256", &digits[..63], sha256),
            ("cs_sha256", &digits[..65], sha256),
            ("cs_sha256", &digits[..40], sha256),
        ] {
            check_err(&doc(field, value), expected);
        }
        let m = Manifest::parse(doc("cs_sha256", &digits[..64].to_uppercase()).as_bytes()).unwrap();
        assert_eq!(m.parts[0].cs_sha256, Some(hex(&digits[..64])));
    }

    #[test]
    fn more_than_eight_parts_are_too_many() {
        let parts = |n: usize| (0..n).map(|i| format!(r#""p{i}":{{}}"#)).collect::<Vec<_>>().join(",");
        let doc = |n| format!(r#"{{"platform":"x","parts":{{{}}}}}"#, parts(n));
        assert_eq!(Manifest::parse(doc(PARTS_MAX).as_bytes()).map(|m| m.parts.len()), Ok(PARTS_MAX));
        check_err(&doc(PARTS_MAX + 1), ManifestError::TooManyParts);
    }

    #[test]
    fn error_texts() {
        let errors = [
            ManifestError::Parse { offset: 17 },
            ManifestError::Missing { field: "platform" },
            ManifestError::TooLong { field: "src", max_bytes: 50 },
            ManifestError::BadValue { field: "size" },
            ManifestError::BadChecksum { part: PartName::new("app").unwrap(), field: "cs_sha1" },
            ManifestError::BadChecksum { part: PartName::new("fs").unwrap(), field: "cs_sha256" },
            ManifestError::TooManyParts,
        ];
        let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        insta::assert_snapshot!(texts.join("\n"), @r"
        Failed to parse manifest (invalid JSON at byte 17)
        Required manifest field missing: platform
        Failed to parse manifest (src is longer than 50 bytes)
        Failed to parse manifest (size has the wrong type or an impossible value)
        Failed to parse manifest (cs_sha1 of part app is not 40 hex digits)
        Failed to parse manifest (cs_sha256 of part fs is not 64 hex digits)
        Failed to parse manifest (more than 12 parts)
        ");
        assert_eq!(Hex(&[0x3f, 0x94, 0x0b, 0x00]).to_string(), "3f940b00");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            // Any input gives a manifest or an error; parse errors point inside the input.
            if let Err(ManifestError::Parse { offset }) = Manifest::parse(&bytes) {
                prop_assert!(offset as usize <= bytes.len());
            }
        }

        #[test]
        fn any_change_to_a_real_manifest_never_panics(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            // Near-valid manifests reach every field reader; each returns a value or an error.
            let mut doc = ESP32.as_bytes().to_vec();
            let at = at.index(doc.len());
            doc[at] = byte;
            let _ = Manifest::parse(&doc);
            let _ = Manifest::parse(&doc[..cut.index(doc.len() + 1)]);
        }
    }

    #[test]
    fn parsed_values_do_not_depend_on_whitespace() {
        let squeezed: String = F401TEST.chars().filter(|c| !c.is_whitespace()).collect();
        let spread = F401TEST.replace(':', " \t:\r\n ").replace(',', "\n,\n");
        let m = Manifest::parse(F401TEST.as_bytes());
        assert_eq!(Manifest::parse(squeezed.as_bytes()), m);
        assert_eq!(Manifest::parse(spread.as_bytes()), m);
    }

    // Issue 9, defect 6: fields Mongoose OS accepts were refused: more than 8 parts, a part key
    // over 16 bytes, `"size": 20000.0`, and non-UTF-8 bytes under a key the device never reads.
    #[test]
    fn fields_mongoose_os_accepts_are_refused() {
        let parts: Vec<String> = (0..11).map(|i| format!("\"p{i}\": {{\"size\": {i}}}")).collect();
        let doc = format!(
            r#"{{"platform": "esp32", "parts": {{"app": {{"src": "a.bin"}}, {}}}}}"#,
            parts.join(",")
        );
        assert_eq!(Manifest::parse(doc.as_bytes()).map(|m| m.parts.len()), Ok(12));
        let doc = r#"{"platform": "esp32", "parts": {"app": {"src": "a.bin"},
            "a_part_key_of_thirty_two_bytes__": {"src": "b.bin", "type": "data"}}}"#;
        let m = Manifest::parse(doc.as_bytes()).unwrap();
        assert_eq!(m.parts[1].name.as_str(), "a_part_key_of_thirty_two_bytes__");
        let doc =
            r#"{"platform": "esp32", "parts": {"app": {"src": "a.bin", "size": 20000.0, "addr": 4096.00}}}"#;
        let app = Manifest::parse(doc.as_bytes()).unwrap().parts[0];
        assert_eq!((app.size_bytes, app.addr), (Some(20000), Some(4096)));
        let doc = r#"{"platform": "esp32", "parts": {"app": {"src": "a.bin", "size": 20000.5}}}"#;
        assert_eq!(Manifest::parse(doc.as_bytes()), Err(ManifestError::BadValue { field: "size" }));
        let mut doc = br#"{"platform": "esp32", "note": "caf?", "k?y": [1], "parts": {"app": {"src": "a.bin", "x": "?"}}}"#.to_vec();
        for at in doc.iter().enumerate().filter(|(_, b)| **b == b'?').map(|(i, _)| i).collect::<Vec<_>>() {
            doc[at] = 0xe9; // Latin-1 'é': not UTF-8.
        }
        assert_eq!(Manifest::parse(&doc).map(|m| m.parts.len()), Ok(1));
    }
}
