//! `hil inspect BUNDLE [--json]`: what a firmware bundle holds and whether a device would take it.
//!
//! It prints the manifest, the zip entries as their local headers describe them (read with
//! `ota_bundle::read_entries`), and for each part its size, its entry, whether `cs_sha1` and
//! `cs_sha256` hold, and where the device's updater puts it (the rule of `role_of` in
//! `core/src/updater.rs`: type `app` or key `app`/`fw` to the app slot, type `fs` or key `fs` to
//! the fs slot, anything else skipped). Then it walks the bundle as the device does, with
//! `ota_core::zip::ZipReader` and `ota_core::manifest::Manifest::parse`, and says whether the
//! updater accepts its structure, with the updater's own message when it does not. What depends on
//! the device rather than the bundle (the platform, slot sizes, the work buffer) is not judged.
//!
//! A bundle whose only candidate for the app is a part with another key (the real `ccm_host`
//! bundles call it `host_fw`) is refused by a stock updater ("Incomplete update package"), and
//! accepted by a device that names that key its app part (`ota_core::updater::Device::app_part`):
//! inspect accepts it and says so in a note.
//!
//! Exit codes: 0 every checksum holds and the updater accepts the structure; 1 a checksum fails or
//! the updater refuses the bundle (a file that is not a zip included); 2 the file cannot be read.
//!
//! # `--json`
//!
//! One object:
//!
//! | field            | type                 | meaning                                                 |
//! |------------------|----------------------|---------------------------------------------------------|
//! | `file`           | string               | the path as given                                       |
//! | `size_bytes`     | integer              | the file's size                                         |
//! | `ok`             | bool                 | true when `problems` is empty (exit code 0)             |
//! | `manifest`       | object or null       | `name`, `platform`, `version`, `build_id` (each a string or null) and `other` (every other top-level key but `parts`, with its JSON value); null when there is no readable manifest |
//! | `manifest_error` | string or null       | why the manifest could not be shown                     |
//! | `entries`        | array                | one object per local header, in archive order: `name` (as stored), `method` (number), `method_name` (`stored`, `deflate` or `method N`), `flags` (number), `flag_names` (strings), `compressed_size_bytes` and `uncompressed_size_bytes` (from the local header), `data_bytes` (bytes of data that follow), `header_offset`, `data_descriptor` (bool), `crc32` (8 hex digits: the header's, or the data descriptor's), `crc` (`ok`, `mismatch` or `unchecked`), `crc_found` (hex of the data's CRC-32, or null when unchecked), `crc_note` (why unchecked, or null) |
//! | `entries_error`  | string or null       | why the listing stopped early (not a zip, truncated...) |
//! | `parts`          | array                | one object per manifest part: `name`, `type`, `src` (strings or null), `size_bytes` (the manifest's `size` or null), `data_bytes` (the entry's size, or null when there is no entry), `entry` (`found`, `missing` or `no src`), `size` (`ok`, `mismatch`, `absent` or `invalid`), `cs_sha1` and `cs_sha256` (each `{status, expected, found}`: status `ok`, `mismatch`, `absent`, `invalid` or `unchecked`; expected and found as hex strings or null), `placement` (`app`, `fs` or `skipped`), `placement_note` (a sentence), `other` (every other key with its JSON value) |
//! | `updater`        | object               | `accepts` (bool), `message` (the updater's error text when it refuses, else null), `notes` (strings) |
//! | `problems`       | array of strings     | every reason for exit code 1, one sentence each         |

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use ota_bundle::{Entry, FLAG_DATA_DESCRIPTOR, FLAG_UTF8_NAME, METHOD_DEFLATE, METHOD_STORED, read_entries};
use ota_core::flash::RamFlash;
use ota_core::layout::{Layout, Region};
use ota_core::manifest::{Manifest, PartName, Platform};
use ota_core::updater::{
    Device, MANIFEST_MAX_BYTES, Progress, Role, UpdateErrorKind, Updater, WORK_BUFFER_MIN_BYTES, role_by_name,
};
use serde::Serialize;
use serde_json::Value;
use sha1::Digest as _;

use super::CommandError;

/// Largest file inspect reads: far above any firmware flash, far below what memory allows.
pub const FILE_MAX_BYTES: u64 = 256 * 1024 * 1024;
const MANIFEST_NAME: &str = "manifest.json";
const FLAG_ENCRYPTED: u16 = 1;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle (fw.zip) to inspect.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Print one JSON object instead of text (fields in the module documentation).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let shown = args.bundle.display().to_string();
    let zip = read_bundle(&args.bundle)?;
    let report = inspect(&shown, &zip);
    if args.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serialises");
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(report.exit_code())
}

fn read_bundle(path: &std::path::Path) -> Result<Vec<u8>, CommandError> {
    let cannot = |why: String| {
        CommandError::new(format!("cannot read {}: {why}", path.display()))
            .help("give the path of a firmware bundle (fw.zip)")
    };
    let metadata = std::fs::metadata(path).map_err(|e| cannot(e.to_string()))?;
    if metadata.is_dir() {
        return Err(cannot("it is a folder".to_string()));
    }
    if metadata.len() > FILE_MAX_BYTES {
        let len = metadata.len();
        return Err(cannot(format!(
            "it is {len} bytes; no firmware bundle is over {} MiB",
            FILE_MAX_BYTES >> 20
        )));
    }
    std::fs::read(path).map_err(|e| cannot(e.to_string()))
}

/// Everything inspect found in one bundle.
#[derive(Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub size_bytes: u64,
    pub ok: bool,
    pub manifest: Option<ManifestView>,
    pub manifest_error: Option<String>,
    pub entries: Vec<EntryView>,
    pub entries_error: Option<String>,
    pub parts: Vec<PartView>,
    pub updater: UpdaterView,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ManifestView {
    pub name: Option<String>,
    pub platform: Option<String>,
    pub version: Option<String>,
    pub build_id: Option<String>,
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct EntryView {
    pub name: String,
    pub method: u16,
    pub method_name: String,
    pub flags: u16,
    pub flag_names: Vec<&'static str>,
    pub compressed_size_bytes: u32,
    pub uncompressed_size_bytes: u32,
    pub data_bytes: u32,
    pub header_offset: u32,
    pub data_descriptor: bool,
    pub crc32: String,
    pub crc: &'static str,
    pub crc_found: Option<String>,
    pub crc_note: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct PartView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub src: Option<String>,
    pub size_bytes: Option<u64>,
    pub data_bytes: Option<u64>,
    pub entry: &'static str,
    pub size: &'static str,
    pub cs_sha1: Check,
    pub cs_sha256: Check,
    pub placement: &'static str,
    pub placement_note: String,
    pub other: BTreeMap<String, Value>,
}

/// One manifest checksum against the part's data.
#[derive(Debug, Serialize)]
pub struct Check {
    pub status: &'static str,
    pub expected: Option<String>,
    pub found: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UpdaterView {
    pub accepts: bool,
    pub message: Option<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn exit_code(&self) -> ExitCode {
        if self.ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
    }
}

/// Inspects the bundle `zip`; `file` is how to name it.
pub fn inspect(file: &str, zip: &[u8]) -> Report {
    let (entries, entries_error) = match read_entries(zip) {
        Ok(entries) => (entries, None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    let (manifest_json, manifest_error) = manifest_json(&entries, zip, entries_error.is_some());
    let updater = updater_view(zip);
    let mut parts = Vec::new();
    if let Some(Value::Object(top)) = &manifest_json
        && let Some(Value::Object(listed)) = top.get("parts")
    {
        for (name, value) in listed {
            parts.push(part_view(name, value, &entries, zip, updater.app_part.as_deref()));
        }
    }
    let entry_views: Vec<EntryView> = entries.iter().map(|entry| entry_view(entry, zip)).collect();
    let problems =
        problems(&entry_views, &parts, &updater.view, entries_error.as_deref(), manifest_error.as_deref());
    Report {
        file: file.to_string(),
        size_bytes: zip.len() as u64,
        ok: problems.is_empty(),
        manifest: manifest_json.as_ref().and_then(manifest_view),
        manifest_error,
        entries: entry_views,
        entries_error,
        parts,
        updater: updater.view,
        problems,
    }
}

/// An entry's name as the device sees it: without its first path component, if it has one.
fn stripped(name: &str) -> &str {
    name.split_once('/').map_or(name, |(_, rest)| rest)
}

/// The manifest entry's JSON, or why there is none to show.
fn manifest_json(entries: &[Entry], zip: &[u8], listing_failed: bool) -> (Option<Value>, Option<String>) {
    let Some(entry) = entries.iter().find(|entry| stripped(&entry.name) == MANIFEST_NAME) else {
        let why = if listing_failed {
            "no manifest.json entry before the listing stopped"
        } else {
            "the archive holds no manifest.json entry"
        };
        return (None, Some(why.to_string()));
    };
    if entry.method != METHOD_STORED {
        return (None, Some(format!("manifest.json is compressed (method {}); not shown", entry.method)));
    }
    // Bytes that are not UTF-8 under keys no device reads are shown replaced, as devices skip them.
    let text = String::from_utf8_lossy(entry.data(zip));
    match serde_json::from_str::<Value>(&text) {
        Ok(value @ Value::Object(_)) => (Some(value), None),
        Ok(_) => (None, Some("manifest.json is JSON but not an object".to_string())),
        Err(error) => (None, Some(format!("manifest.json is not JSON: {error}"))),
    }
}

fn manifest_view(json: &Value) -> Option<ManifestView> {
    let top = json.as_object()?;
    let text = |key: &str| {
        top.get(key).map(|value| value.as_str().map_or_else(|| value.to_string(), str::to_string))
    };
    let known = ["name", "platform", "version", "build_id", "parts"];
    let other = top.iter().filter(|(key, _)| !known.contains(&key.as_str()));
    Some(ManifestView {
        name: text("name"),
        platform: text("platform"),
        version: text("version"),
        build_id: text("build_id"),
        other: other.map(|(key, value)| (key.clone(), value.clone())).collect(),
    })
}

fn entry_view(entry: &Entry, zip: &[u8]) -> EntryView {
    let method_name = match entry.method {
        METHOD_STORED => "stored".to_string(),
        METHOD_DEFLATE => "deflate".to_string(),
        other => format!("method {other}"),
    };
    let mut flag_names = Vec::new();
    for (bit, name) in [
        (FLAG_ENCRYPTED, "encrypted"),
        (FLAG_DATA_DESCRIPTOR, "data descriptor"),
        (FLAG_UTF8_NAME, "utf-8 name"),
    ] {
        if entry.flags & bit != 0 {
            flag_names.push(name);
        }
    }
    let header_crc = entry.descriptor.map_or(entry.crc32, |descriptor| descriptor.crc32);
    let (crc, crc_found, crc_note) = if entry.method != METHOD_STORED {
        ("unchecked", None, Some("the CRC-32 is of the uncompressed data, and inspect decompresses nothing"))
    } else {
        let found = crc32(entry.data(zip));
        match (found == header_crc, header_crc) {
            (true, _) => ("ok", Some(found), None),
            (false, 0) => {
                ("unchecked", Some(found), Some("the header's CRC-32 is 0, which the device does not check"))
            }
            (false, _) => ("mismatch", Some(found), None),
        }
    };
    EntryView {
        name: entry.name.clone(),
        method: entry.method,
        method_name,
        flags: entry.flags,
        flag_names,
        compressed_size_bytes: entry.compressed_size_bytes,
        uncompressed_size_bytes: entry.uncompressed_size_bytes,
        data_bytes: entry.data_len_bytes,
        header_offset: entry.header_offset,
        data_descriptor: entry.descriptor.is_some(),
        crc32: format!("{header_crc:08x}"),
        crc,
        crc_found: crc_found.map(|found| format!("{found:08x}")),
        crc_note,
    }
}

fn part_view(name: &str, value: &Value, entries: &[Entry], zip: &[u8], app_part: Option<&str>) -> PartView {
    let empty = serde_json::Map::new();
    let fields = value.as_object().unwrap_or(&empty);
    let string = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_string);
    let (kind, src) = (string("type"), string("src"));
    let entry = src.as_deref().and_then(|src| entries.iter().find(|entry| stripped(&entry.name) == src));
    // Compressed data is not the part's data: its checksums cannot be checked without inflating.
    let data = entry.filter(|entry| entry.method == METHOD_STORED).map(|entry| entry.data(zip));
    let size_value = fields.get("size");
    let size_bytes = size_value.and_then(Value::as_u64);
    let data_bytes = entry.map(|entry| u64::from(entry.data_len_bytes));
    let size = match (size_value, size_bytes, data_bytes) {
        (None, _, _) => "absent",
        (Some(_), None, _) => "invalid",
        (Some(_), Some(_), None) => "unchecked",
        (Some(_), Some(manifest), Some(archive)) if manifest == archive => "ok",
        _ => "mismatch",
    };
    let sha1 = data.map(|data| hex(&sha1::Sha1::digest(data)));
    let sha256 = data.map(|data| hex(&sha2::Sha256::digest(data)));
    let (placement, placement_note) = placement(name, kind.as_deref(), app_part);
    let known = ["type", "src", "size", "cs_sha1", "cs_sha256"];
    PartView {
        name: name.to_string(),
        kind,
        src: src.clone(),
        size_bytes,
        data_bytes,
        entry: match (&src, entry) {
            (None, _) => "no src",
            (Some(_), None) => "missing",
            (Some(_), Some(_)) => "found",
        },
        size,
        cs_sha1: check(fields.get("cs_sha1"), sha1, 40),
        cs_sha256: check(fields.get("cs_sha256"), sha256, 64),
        placement,
        placement_note,
        other: fields
            .iter()
            .filter(|(key, _)| !known.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn placement(name: &str, kind: Option<&str>, app_part: Option<&str>) -> (&'static str, String) {
    match role_by_name(name, kind, None) {
        Some(Role::App) if kind == Some("app") => ("app", "the inactive app slot (type app)".to_string()),
        Some(Role::App) => ("app", format!("the inactive app slot (key {name})")),
        Some(Role::Fs) if kind == Some("fs") => ("fs", "the inactive fs slot (type fs)".to_string()),
        Some(Role::Fs) => ("fs", format!("the inactive fs slot (key {name})")),
        None if app_part == Some(name) => (
            "skipped",
            format!(
                "skipped by a stock updater (its app is type app, or key app or fw); a device that \
                 names {name:?} its app part (Device::app_part) writes it to the app slot"
            ),
        ),
        None => (
            "skipped",
            "skipped: neither an app nor an fs part; the updater reads it and writes nothing".to_string(),
        ),
    }
}

/// A manifest checksum (`expected`, a JSON value) against the data's (`found`, `None` when there
/// is no data to hash).
fn check(expected: Option<&Value>, found: Option<String>, digits: usize) -> Check {
    let Some(expected) = expected else {
        return Check { status: "absent", expected: None, found };
    };
    let Some(text) =
        expected.as_str().filter(|text| text.len() == digits && text.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Check { status: "invalid", expected: Some(expected.to_string()), found };
    };
    let text = text.to_ascii_lowercase();
    let status = match &found {
        None => "unchecked",
        Some(found) if *found == text => "ok",
        Some(_) => "mismatch",
    };
    Check { status, expected: Some(text), found }
}

/// The updater's verdict and the app part name it needed, if any.
struct Verdict {
    view: UpdaterView,
    app_part: Option<String>,
}

/// Walks the bundle as a stock updater does; when that finds no app part, walks it again as a
/// device that names the first part with an entry but no role its app part.
fn updater_view(zip: &[u8]) -> Verdict {
    let mut notes = Vec::new();
    let (result, manifest) = walk(zip, None);
    if let Some(len) = manifest_len(zip)
        && len > WORK_BUFFER_MIN_BYTES
    {
        notes.push(format!(
            "manifest.json is {len} bytes: a device whose work buffer is the smallest the updater takes \
             ({WORK_BUFFER_MIN_BYTES} bytes) refuses it; ota-app's update session holds \
             {MANIFEST_MAX_BYTES}, Mongoose OS's bound"
        ));
    }
    let stock = match result {
        Ok(()) => {
            return Verdict { view: UpdaterView { accepts: true, message: None, notes }, app_part: None };
        }
        Err(error) => error,
    };
    let candidate = manifest.as_ref().and_then(|manifest| {
        let mut roleless = manifest.parts.iter().filter(|part| {
            part.src.is_some()
                && role_by_name(part.name.as_str(), part.kind.as_ref().map(|k| k.as_str()), None).is_none()
        });
        roleless.next().map(|part| part.name)
    });
    if let (UpdateErrorKind::NoAppPart, Some(app_part)) = (stock, candidate) {
        let (result, _) = walk(zip, Some(app_part));
        notes.push(format!(
            "a stock updater refuses it (\"{stock}\"); a device that names {:?} its app part accepts it",
            app_part.as_str()
        ));
        let view = match result {
            Ok(()) => UpdaterView { accepts: true, message: None, notes },
            Err(error) => UpdaterView { accepts: false, message: Some(error.to_string()), notes },
        };
        return Verdict { view, app_part: Some(app_part.as_str().to_string()) };
    }
    Verdict { view: UpdaterView { accepts: false, message: Some(stock.to_string()), notes }, app_part: None }
}

/// The size of the first entry when it is the manifest.
fn manifest_len(zip: &[u8]) -> Option<usize> {
    let entries = read_entries(zip).ok()?;
    let first = entries.first().filter(|entry| stripped(&entry.name) == MANIFEST_NAME)?;
    Some(first.data_len_bytes as usize)
}

/// The device's own reading of `zip`: the real updater, run on a RAM flash with slots as large as
/// the archive (no part is larger), so its verdict is the device's by construction, for a
/// damaged archive too. It judges the structure only: the bundle's own platform is taken as the
/// device's (an empty one, which no device takes, is refused) and no slot is too small (both
/// depend on the device). Returns the first error, as the updater reports it, and the manifest
/// if it parsed.
fn walk(zip: &[u8], app_part: Option<PartName>) -> (Result<(), UpdateErrorKind>, Option<Manifest>) {
    const UNIT: u32 = 4096;
    let largest = u32::try_from(zip.len()).unwrap_or(u32::MAX);
    // One more erase unit for the slot's image descriptor (`Layout::descriptor`).
    let slot = largest.clamp(1, REPLAY_SLOT_MAX_BYTES).next_multiple_of(UNIT) + UNIT;
    let region = |n: u32| Region::new(2 * UNIT + n * slot, slot);
    let boot_state = [Region::new(0, UNIT), Region::new(UNIT, UNIT)];
    let Ok(layout) = Layout::new(UNIT, 4, boot_state, [region(0), region(1)], [region(2), region(3)]) else {
        unreachable!("slots are whole erase units and do not overlap")
    };
    let mut mem = vec![0u8; (2 * UNIT + 4 * slot) as usize];
    let mut flash = RamFlash::<4, 4096>::new(&mut mem);
    let arch = bundle_platform(zip).filter(|p| !p.is_empty()).unwrap_or(Platform::new("a device").unwrap());
    let device = Device { arch, app_part };
    // A work buffer as large as any manifest, so that the buffer's size (a device setting,
    // reported as a note) does not decide the verdict.
    let mut buf = vec![0u8; zip.len().clamp(WORK_BUFFER_MIN_BYTES, 1 << 20)];
    let mut updater = match Updater::begin_provision(&mut flash, &layout, device, &mut buf) {
        Ok(updater) => updater,
        Err(e) => return (Err(e.kind), None),
    };
    let processed = updater.process(&mut flash, zip);
    let manifest = updater.manifest().cloned();
    let result = match processed {
        Ok(Progress::NeedMore) => Err(UpdateErrorKind::Incomplete),
        Ok(_) => updater.finish(&mut flash).map(|_| ()).map_err(|e| e.kind),
        Err(e) => Err(e.kind),
    };
    (result, manifest)
}

/// The platform the bundle's manifest names, when its first entry reads and parses: read as the
/// device reads it, so that damage after the manifest does not hide the platform.
fn bundle_platform(zip: &[u8]) -> Option<Platform> {
    let mut reader = ota_core::zip::ZipReader::new();
    let mut manifest = Vec::new();
    let mut rest = zip;
    while !rest.is_empty() {
        let (consumed, event) = reader.feed(rest).ok()?;
        if consumed == 0 && event.is_none() {
            return None;
        }
        match event {
            Some(ota_core::zip::ZipEvent::Data(data)) => manifest.extend_from_slice(data),
            Some(ota_core::zip::ZipEvent::EntryEnd) => {
                return Some(Manifest::parse(&manifest).ok()?.platform);
            }
            Some(ota_core::zip::ZipEvent::End) => return None,
            _ => {}
        }
        rest = &rest[consumed..];
    }
    None
}

/// Larger entries are replayed with slots of this size, so that a huge file cannot make inspect
/// allocate without bound; the updater then says the part is too big.
const REPLAY_SLOT_MAX_BYTES: u32 = 64 << 20;

/// Every reason for exit code 1, one sentence each.
fn problems(
    entries: &[EntryView],
    parts: &[PartView],
    updater: &UpdaterView,
    entries_error: Option<&str>,
    manifest_error: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(error) = entries_error {
        let first_line = error.lines().next().unwrap_or(error);
        out.push(format!("the entries cannot all be read: {first_line}"));
    }
    // A manifest the device's own parser takes (the updater accepts the bundle) but this tool's
    // JSON reader cannot show, such as a number past f64 under a key no device reads, is shown
    // as an error line, not counted as a problem: the device's verdict decides.
    if let Some(error) = manifest_error.filter(|_| !updater.accepts) {
        out.push(format!("the manifest cannot be shown: {error}"));
    }
    for entry in entries.iter().filter(|entry| entry.crc == "mismatch") {
        let found = entry.crc_found.as_deref().unwrap_or("?");
        out.push(format!("CRC-32 mismatch in entry {} (header {}, data {found})", entry.name, entry.crc32));
    }
    for part in parts {
        out.extend(part_problems(part));
    }
    if let Some(message) = &updater.message {
        out.push(format!("the updater refuses the bundle: {message}"));
    }
    out
}

fn part_problems(part: &PartView) -> Vec<String> {
    let mut out = Vec::new();
    let name = &part.name;
    if part.entry == "missing" {
        let src = part.src.as_deref().unwrap_or("");
        out.push(format!("part {name}: its src {src} is not in the archive"));
    }
    if part.size == "mismatch" || part.size == "invalid" {
        let manifest = part.size_bytes.map_or("not a size".to_string(), |size| format!("{size} bytes"));
        let archive = part.data_bytes.map_or("no entry".to_string(), |size| format!("{size} bytes"));
        out.push(format!("part {name}: size mismatch (manifest {manifest}, archive {archive})"));
    }
    for (field, check) in [("cs_sha1", &part.cs_sha1), ("cs_sha256", &part.cs_sha256)] {
        let expected = check.expected.as_deref().unwrap_or("");
        match check.status {
            "mismatch" => {
                let found = check.found.as_deref().unwrap_or("");
                out.push(format!("{field} mismatch in part {name} (expected {expected}, found {found})"));
            }
            "invalid" => out.push(format!(
                "{field} of part {name} is not {} hex digits: {expected}",
                if field == "cs_sha1" { 40 } else { 64 }
            )),
            _ => {}
        }
    }
    out
}

/// CRC-32 (ISO-HDLC, the zip one). The core's table is private to it and hil does not depend on
/// the `crc` crate; a byte-wise table is fast enough for a bundle.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                bit += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &byte| TABLE[((c ^ u32::from(byte)) & 0xff) as usize] ^ (c >> 8))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn or_absent(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("(absent)")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {} bytes", self.file, self.size_bytes)?;
        self.fmt_manifest(f)?;
        self.fmt_entries(f)?;
        self.fmt_parts(f)?;
        self.fmt_verdict(f)
    }
}

impl Report {
    fn fmt_manifest(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nmanifest")?;
        let Some(manifest) = &self.manifest else {
            return writeln!(f, "  {}", self.manifest_error.as_deref().unwrap_or("none"));
        };
        writeln!(f, "  name       {}", or_absent(&manifest.name))?;
        writeln!(f, "  platform   {}", or_absent(&manifest.platform))?;
        writeln!(f, "  version    {}", or_absent(&manifest.version))?;
        writeln!(f, "  build_id   {}", or_absent(&manifest.build_id))?;
        for (key, value) in &manifest.other {
            writeln!(f, "  {key:<10} {value}")?;
        }
        Ok(())
    }

    fn fmt_entries(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nentries ({})", self.entries.len())?;
        let width = self.entries.iter().map(|entry| entry.name.len()).max().unwrap_or(0);
        for entry in &self.entries {
            let flags = match entry.flag_names.is_empty() {
                true => format!("{:#06x}", entry.flags),
                false => format!("{:#06x} ({})", entry.flags, entry.flag_names.join(", ")),
            };
            let sizes = if entry.data_descriptor {
                format!("{} bytes (sizes in a data descriptor)", entry.data_bytes)
            } else if entry.compressed_size_bytes != entry.uncompressed_size_bytes {
                format!(
                    "{} bytes (compressed {})",
                    entry.uncompressed_size_bytes, entry.compressed_size_bytes
                )
            } else {
                format!("{} bytes", entry.uncompressed_size_bytes)
            };
            let crc = match (entry.crc, &entry.crc_found) {
                ("ok", _) => "ok".to_string(),
                ("mismatch", Some(found)) => format!("MISMATCH (data {found})"),
                (_, _) => format!("unchecked: {}", entry.crc_note.unwrap_or("")),
            };
            writeln!(
                f,
                "  {:<width$}  {:<7}  flags {flags}  {sizes}  crc32 {} {crc}",
                entry.name, entry.method_name, entry.crc32
            )?;
        }
        if let Some(error) = &self.entries_error {
            writeln!(f, "  the listing stopped: {}", error.replace('\n', "\n  "))?;
        }
        Ok(())
    }

    fn fmt_parts(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nparts ({})", self.parts.len())?;
        for part in &self.parts {
            let kind = part.kind.as_deref().map_or(String::new(), |kind| format!(" (type {kind})"));
            writeln!(f, "  {}{kind}", part.name)?;
            let size = match (part.size, part.size_bytes, part.data_bytes) {
                ("absent", _, _) => "no size in the manifest".to_string(),
                ("ok", Some(size), _) => format!("size {size} ok"),
                (_, Some(manifest), Some(archive)) => {
                    format!("size MISMATCH: manifest {manifest}, archive {archive}")
                }
                (status, _, _) => format!("size {status}"),
            };
            let src = match (part.entry, &part.src, part.data_bytes) {
                ("found", Some(src), Some(bytes)) => format!("{src}: {bytes} bytes, {size}"),
                ("missing", Some(src), _) => format!("{src}: MISSING from the archive"),
                _ => "none (the part has no data in the archive)".to_string(),
            };
            writeln!(f, "    src        {src}")?;
            for (field, check) in [("cs_sha1", &part.cs_sha1), ("cs_sha256", &part.cs_sha256)] {
                writeln!(f, "    {field:<10} {}", check_text(check))?;
            }
            writeln!(f, "    goes to    {}", part.placement_note)?;
            if !part.other.is_empty() {
                let other: Vec<String> =
                    part.other.iter().map(|(key, value)| format!("{key} {value}")).collect();
                writeln!(f, "    other      {}", other.join(", "))?;
            }
        }
        Ok(())
    }

    fn fmt_verdict(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nupdater")?;
        match &self.updater.message {
            None => writeln!(
                f,
                "  accepts the structure: stored entries with sizes and CRC-32 in their local headers, \
                 manifest.json first, every part it writes present and matching"
            )?,
            Some(message) => writeln!(f, "  REFUSES: {message}")?,
        }
        for note in &self.updater.notes {
            writeln!(f, "  note: {note}")?;
        }
        if self.ok {
            return writeln!(f, "\nok: every checksum holds and the updater accepts the structure");
        }
        writeln!(
            f,
            "\nFAILED: {} problem{}",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

fn check_text(check: &Check) -> String {
    let expected = check.expected.as_deref().unwrap_or("");
    match (check.status, &check.found) {
        ("ok", _) => format!("ok {expected}"),
        ("mismatch", Some(found)) => format!("MISMATCH: expected {expected}, found {found}"),
        ("absent", _) => "absent".to_string(),
        ("invalid", _) => format!("INVALID: {expected} is not a hex digest"),
        _ => format!("unchecked (no stored data): expected {expected}"),
    }
}
