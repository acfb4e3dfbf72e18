#![doc = include_str!("../README.md")]

mod manifest;
mod zip;

use std::collections::BTreeMap;
use std::fmt;

use sha1::Digest as _;

use manifest::Value;
pub use manifest::json_string;
pub use zip::{
    Descriptor, ENTRIES_MAX, Entry, FLAG_DATA_DESCRIPTOR, FLAG_UTF8_NAME, METHOD_DEFLATE, METHOD_STORED,
    ReadError, read_entries,
};
use zip::{EntrySpec, LocalFault};

/// Name of the manifest entry (after the optional folder), always the first entry of a good bundle.
pub const MANIFEST_NAME: &str = "manifest.json";

/// A firmware bundle to build: the manifest's top-level fields and the parts.
///
/// Defaults: no `description`, `version`, `build_id`, `build_timestamp` nor extra attributes, no
/// parts, entries at the archive's root (no folder). See the crate documentation for the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    name: String,
    platform: String,
    description: Option<String>,
    version: Option<String>,
    build_id: Option<String>,
    build_timestamp: Option<String>,
    /// Extra top-level keys and their raw JSON values.
    attrs: BTreeMap<String, String>,
    /// Parts by name: the manifest lists them sorted by name, as Go marshals a map.
    parts: BTreeMap<String, PartSpec>,
    in_folder: bool,
}

impl Bundle {
    /// A bundle for firmware `name` on `platform` (e.g. `esp32`, `ccm_host`). An empty name or
    /// platform is left out of the manifest, as mos leaves out empty strings: that is how to build
    /// a manifest without `platform`.
    pub fn new(name: &str, platform: &str) -> Bundle {
        Bundle {
            name: name.to_string(),
            platform: platform.to_string(),
            description: None,
            version: None,
            build_id: None,
            build_timestamp: None,
            attrs: BTreeMap::new(),
            parts: BTreeMap::new(),
            in_folder: false,
        }
    }

    /// Sets the `description` field.
    pub fn description(mut self, description: &str) -> Bundle {
        self.description = Some(description.to_string());
        self
    }

    /// Sets the `version` field (e.g. `1.0.3`).
    pub fn version(mut self, version: &str) -> Bundle {
        self.version = Some(version.to_string());
        self
    }

    /// Sets the `build_id` field (e.g. `20181126-182907/2.8.0-47-g7db8cdacf-dirty-mos9`).
    pub fn build_id(mut self, build_id: &str) -> Bundle {
        self.build_id = Some(build_id.to_string());
        self
    }

    /// Sets the `build_timestamp` field, written as a JSON string (mos writes RFC 3339).
    pub fn build_timestamp(mut self, timestamp: &str) -> Bundle {
        self.build_timestamp = Some(timestamp.to_string());
        self
    }

    /// Adds the extra top-level key `key` with `json_value`, raw JSON written as given (quote
    /// strings with [`json_string`]). Extra keys follow `parts`, sorted; setting a key again
    /// replaces its value.
    ///
    /// # Panics
    /// If `key` is one of the keys the builder writes itself (`name`, `platform`, `description`,
    /// `version`, `build_id`, `build_timestamp`, `parts`): use their methods.
    pub fn attr(mut self, key: &str, json_value: &str) -> Bundle {
        assert!(
            !manifest::TOP_KEYS.contains(&key),
            "Bundle::attr({key:?}): the builder writes {key:?} itself; use Bundle::new or the method of that name"
        );
        self.attrs.insert(key.to_string(), json_value.to_string());
        self
    }

    /// Puts every entry under one folder, as `mgos_fw_meta.py` does: `<name>-<version>/`, or
    /// `<name>/` when there is no version. The manifest's `src` values stay base names.
    pub fn in_folder(mut self) -> Bundle {
        self.in_folder = true;
        self
    }

    /// Adds `part`, replacing any part of the same name.
    ///
    /// # Panics
    /// If another part has the same non-empty `src` but different data (a bundle holds one entry
    /// per `src`), or if `src` is `manifest.json`.
    pub fn part(mut self, part: PartSpec) -> Bundle {
        assert!(
            part.src != MANIFEST_NAME,
            "part {:?}: src {MANIFEST_NAME:?} is the manifest's entry",
            part.name
        );
        let clash = self.parts.values().find(|other| {
            other.name != part.name
                && !part.src.is_empty()
                && other.src == part.src
                && other.data != part.data
        });
        if let Some(other) = clash {
            panic!(
                "parts {:?} and {:?} both have src {:?} but different data; a bundle holds one entry per src",
                other.name, part.name, part.src
            );
        }
        self.parts.insert(part.name.clone(), part);
        self
    }

    /// Adds part `app` of type `app` with src `<name>.bin`, both checksums and no extra keys.
    pub fn app(self, data: Vec<u8>) -> Bundle {
        let src = format!("{}.bin", self.name);
        self.part(PartSpec::new("app", &src, data).kind("app"))
    }

    /// Adds part `fs` of type `fs` with src `fs.img`, both checksums and no extra keys.
    pub fn fs(self, data: Vec<u8>) -> Bundle {
        self.part(PartSpec::new("fs", "fs.img", data).kind("fs"))
    }

    /// The folder that prefixes every entry name (with its trailing `/`), or `""` at the root.
    pub fn folder(&self) -> String {
        match (&self.in_folder, &self.version) {
            (false, _) => String::new(),
            (true, Some(version)) => format!("{}-{version}/", self.name),
            (true, None) => format!("{}/", self.name),
        }
    }

    /// The `manifest.json` text of a good bundle, byte for byte what mos writes.
    pub fn manifest_json(&self) -> String {
        self.render_manifest(None)
    }

    /// Builds the bundle: `manifest.json` first, then one stored entry per distinct `src`, sorted,
    /// then the central directory.
    pub fn build(&self) -> Vec<u8> {
        self.assemble(None)
    }

    /// Builds the bundle with one deliberate `defect`; everything else stays as [`Bundle::build`]
    /// makes it.
    ///
    /// # Panics
    /// If `defect` names a part or an entry this bundle lacks (see [`Bundle::check_defect`]).
    pub fn build_with(&self, defect: Defect) -> Vec<u8> {
        if let Err(error) = self.check_defect(&defect) {
            panic!("{error}");
        }
        self.assemble(Some(&defect))
    }

    /// Checks that `defect` can be applied to this bundle: the part or entry it names exists, a part
    /// to corrupt has data in an entry, a part whose entry goes missing has one.
    pub fn check_defect(&self, defect: &Defect) -> Result<(), DefectError> {
        if let Some(entry) = defect.entry() {
            let known = entry == MANIFEST_NAME || self.parts.values().any(|part| part.src == entry);
            if !known {
                let entries = self.entry_names();
                return Err(DefectError::UnknownEntry { entry: entry.to_string(), entries });
            }
        }
        let Some(name) = defect.part() else { return Ok(()) };
        let Some(part) = self.parts.get(name) else {
            let parts = self.parts.keys().cloned().collect();
            return Err(DefectError::UnknownPart { part: name.to_string(), parts });
        };
        let needs_entry = matches!(defect, Defect::MissingEntry { .. } | Defect::CorruptData { .. });
        if needs_entry && part.src.is_empty() {
            return Err(DefectError::NoEntry { part: name.to_string() });
        }
        if matches!(defect, Defect::CorruptData { .. }) && part.data.is_empty() {
            return Err(DefectError::EmptyData { part: name.to_string() });
        }
        Ok(())
    }

    /// Entry names without the folder, in the order a good bundle holds them.
    fn entry_names(&self) -> Vec<String> {
        let srcs: std::collections::BTreeSet<&str> =
            self.parts.values().map(|part| part.src.as_str()).filter(|src| !src.is_empty()).collect();
        std::iter::once(MANIFEST_NAME).chain(srcs).map(str::to_string).collect()
    }

    fn assemble(&self, defect: Option<&Defect>) -> Vec<u8> {
        let manifest = self.render_manifest(defect);
        let entries = self.entry_specs(manifest, defect);
        let mut out = Vec::new();
        let records = zip::write_entries(&mut out, &entries);
        if !matches!(defect, Some(Defect::NoCentralDirectory)) {
            zip::write_central_directory(&mut out, &records);
        }
        out
    }

    fn render_manifest(&self, defect: Option<&Defect>) -> String {
        let string = |key: &str, value: &str| (key.to_string(), Value::Raw(json_string(value)));
        let mut fields: Vec<(String, Value)> = Vec::new();
        let optional = [
            ("name", Some(&self.name).filter(|name| !name.is_empty())),
            ("platform", Some(&self.platform).filter(|platform| !platform.is_empty())),
            ("description", self.description.as_ref()),
            ("version", self.version.as_ref()),
            ("build_id", self.build_id.as_ref()),
            ("build_timestamp", self.build_timestamp.as_ref()),
        ];
        fields.extend(optional.iter().filter_map(|(key, value)| value.map(|value| string(key, value))));
        let parts =
            self.parts.values().map(|part| (part.name.clone(), part.manifest_value(defect))).collect();
        fields.push(("parts".to_string(), Value::Object(parts)));
        fields.extend(self.attrs.iter().map(|(key, value)| (key.clone(), Value::Raw(value.clone()))));
        manifest::order_fields(&mut fields, &manifest::TOP_KEYS);
        manifest::render(&Value::Object(fields))
    }

    /// The entries in archive order, with the defect's changes to the entry list and data applied
    /// and the folder prefixed.
    fn entry_specs(&self, manifest: String, defect: Option<&Defect>) -> Vec<EntrySpec> {
        let mut sources: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for part in self.parts.values().filter(|part| !part.src.is_empty()) {
            let corrupt = matches!(defect, Some(Defect::CorruptData { part: name }) if *name == part.name);
            if corrupt {
                let mut data = part.data.clone();
                let middle = data.len() / 2;
                data[middle] ^= 0xff;
                // Inserted over any other part's copy of the same src, so the corruption sticks.
                sources.insert(&part.src, data);
            } else {
                sources.entry(&part.src).or_insert_with(|| part.data.clone());
            }
        }
        if let Some(Defect::MissingEntry { part }) = defect {
            // Removed after the loop, so no other part with the same src brings the entry back.
            sources.remove(self.parts[part].src.as_str());
        }
        let manifest = EntrySpec {
            name: MANIFEST_NAME.to_string(),
            data: manifest.into_bytes(),
            fault: LocalFault::None,
        };
        let parts = sources.into_iter().map(|(src, data)| EntrySpec {
            name: src.to_string(),
            data,
            fault: LocalFault::None,
        });
        let mut entries: Vec<EntrySpec> = if matches!(defect, Some(Defect::ManifestNotFirst)) {
            parts.chain([manifest]).collect()
        } else {
            [manifest].into_iter().chain(parts).collect()
        };
        let folder = self.folder();
        for entry in &mut entries {
            entry.fault = defect.map_or(LocalFault::None, |defect| defect.local_fault(&entry.name));
            entry.name.insert_str(0, &folder);
        }
        entries
    }
}

/// One part of a bundle: its manifest entry and, when `src` is not empty, its zip entry.
///
/// Defaults: no `type`, both `cs_sha1` and `cs_sha256`, no extra keys. `size` is the data's length
/// (left out when 0, as mos leaves it out). A part with an empty `src` has no zip entry and no `src`
/// key (like mos's `fill` parts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartSpec {
    name: String,
    kind: Option<String>,
    src: String,
    data: Vec<u8>,
    cs_sha1: bool,
    cs_sha256: bool,
    /// Whether the manifest gives `size` (Mongoose OS then takes it from the zip local header).
    size: bool,
    /// Extra part keys and their raw JSON values.
    extra: BTreeMap<String, String>,
}

impl PartSpec {
    /// Part `name` whose data is stored in the zip entry `src` (a base name, e.g. `app.bin`).
    pub fn new(name: &str, src: &str, data: Vec<u8>) -> PartSpec {
        PartSpec {
            name: name.to_string(),
            kind: None,
            src: src.to_string(),
            data,
            cs_sha1: true,
            cs_sha256: true,
            size: true,
            extra: BTreeMap::new(),
        }
    }

    /// Sets the part's `type` (`app`, `fs`, `boot`, ...).
    pub fn kind(mut self, kind: &str) -> PartSpec {
        self.kind = Some(kind.to_string());
        self
    }

    /// Leaves `cs_sha1` out of the manifest.
    pub fn without_sha1(mut self) -> PartSpec {
        self.cs_sha1 = false;
        self
    }

    /// Leaves `size` out of the manifest: the device takes it from the zip local header.
    pub fn without_size(mut self) -> PartSpec {
        self.size = false;
        self
    }

    /// Leaves `cs_sha256` out of the manifest.
    pub fn without_sha256(mut self) -> PartSpec {
        self.cs_sha256 = false;
        self
    }

    /// Adds the extra part key `key` (e.g. `addr`, `ptn`, `update`, `fill`) with `json_value`, raw
    /// JSON written as given (quote strings with [`json_string`]). Keys mos knows take their place
    /// in mos's order (`addr` after `src`, `ptn` after `cs_sha256`, ...); others follow, sorted.
    /// Setting a key again replaces its value.
    ///
    /// # Panics
    /// If `key` is one the builder writes itself: `type` (use [`PartSpec::kind`]), `src`, `size`,
    /// `cs_sha1`, `cs_sha256` (use [`Defect`] to get them wrong).
    pub fn extra(mut self, key: &str, json_value: &str) -> PartSpec {
        assert!(
            !manifest::PART_KEYS_GENERATED.contains(&key),
            "PartSpec::extra({key:?}) on part {:?}: the builder writes {key:?} itself",
            self.name
        );
        self.extra.insert(key.to_string(), json_value.to_string());
        self
    }

    /// This part's object in `parts`, with the defect's changes to its fields.
    fn manifest_value(&self, defect: Option<&Defect>) -> Value {
        let aimed = defect.filter(|defect| defect.part() == Some(self.name.as_str()));
        let wrong_sha1 = matches!(aimed, Some(Defect::WrongSha1 { .. }));
        let wrong_sha256 = matches!(aimed, Some(Defect::WrongSha256 { .. }));
        let size_bytes = self.data.len() + usize::from(matches!(aimed, Some(Defect::WrongSize { .. })));
        let mut fields: Vec<(String, Value)> =
            self.extra.iter().map(|(key, value)| (key.clone(), Value::Raw(value.clone()))).collect();
        let mut push = |key: &str, text: String| fields.push((key.to_string(), Value::Raw(text)));
        if let Some(kind) = &self.kind {
            push("type", json_string(kind));
        }
        if !self.src.is_empty() {
            push("src", json_string(&self.src));
        }
        if size_bytes > 0 && self.size {
            push("size", size_bytes.to_string());
        }
        if self.cs_sha1 || wrong_sha1 {
            push("cs_sha1", checksum_hex(sha1::Sha1::digest(&self.data).to_vec(), wrong_sha1));
        }
        if self.cs_sha256 || wrong_sha256 {
            push("cs_sha256", checksum_hex(sha2::Sha256::digest(&self.data).to_vec(), wrong_sha256));
        }
        manifest::order_part_fields(&mut fields);
        Value::Object(fields)
    }
}

/// The quoted lower-case hex of `digest`, with its first byte inverted when `wrong`.
fn checksum_hex(mut digest: Vec<u8>, wrong: bool) -> String {
    if wrong {
        digest[0] ^= 0xff;
    }
    format!("\"{}\"", manifest::hex(&digest))
}

/// One deliberate fault in a built bundle. `part` names a part (a key of `parts`); `entry` names a
/// zip entry without the folder (`manifest.json` or a part's `src`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Defect {
    /// The entry's local-header CRC-32 is inverted; the central directory keeps the right one.
    WrongCrc { entry: String },
    /// The part's `cs_sha1` has its first byte inverted (written even if the part leaves it out);
    /// the data is intact.
    WrongSha1 { part: String },
    /// The part's `cs_sha256` has its first byte inverted (written even if the part leaves it out).
    WrongSha256 { part: String },
    /// The part's `size` in the manifest is one more than its data; the zip sizes are right.
    WrongSize { part: String },
    /// The entry's local header says method 8 (deflate); its data stays stored and its sizes equal,
    /// and the central directory still says method 0.
    Compressed { entry: String },
    /// The entry is written as a streaming writer writes it: flag bit 3 set, CRC-32 and sizes 0 in
    /// the local header, a data descriptor (`PK\7\8`, CRC-32, sizes) after the data.
    Streaming { entry: String },
    /// `manifest.json` is the last entry instead of the first.
    ManifestNotFirst,
    /// The part stays in the manifest but the zip entry of its `src` is left out.
    MissingEntry { part: String },
    /// The middle byte of the part's data is inverted after its checksums were computed; the zip's
    /// CRC-32 and sizes match the corrupted data, so only `cs_sha1` and `cs_sha256` catch it.
    CorruptData { part: String },
    /// The archive ends after the last entry's data: no central directory, no end record.
    NoCentralDirectory,
}

impl Defect {
    /// The part this defect is aimed at, if it is aimed at a part.
    pub fn part(&self) -> Option<&str> {
        match self {
            Defect::WrongSha1 { part }
            | Defect::WrongSha256 { part }
            | Defect::WrongSize { part }
            | Defect::MissingEntry { part }
            | Defect::CorruptData { part } => Some(part),
            _ => None,
        }
    }

    /// The entry this defect is aimed at, if it is aimed at an entry.
    pub fn entry(&self) -> Option<&str> {
        match self {
            Defect::WrongCrc { entry } | Defect::Compressed { entry } | Defect::Streaming { entry } => {
                Some(entry)
            }
            _ => None,
        }
    }

    fn local_fault(&self, entry_name: &str) -> LocalFault {
        match self {
            _ if self.entry() != Some(entry_name) => LocalFault::None,
            Defect::WrongCrc { .. } => LocalFault::WrongCrc,
            Defect::Compressed { .. } => LocalFault::Compressed,
            Defect::Streaming { .. } => LocalFault::Streaming,
            _ => LocalFault::None,
        }
    }
}

/// Why a [`Defect`] cannot be applied to a bundle (see [`Bundle::check_defect`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefectError {
    /// The defect names a part the bundle does not have.
    UnknownPart { part: String, parts: Vec<String> },
    /// The defect names an entry the bundle does not have.
    UnknownEntry { entry: String, entries: Vec<String> },
    /// The defect needs the part's zip entry, but the part has no `src`.
    NoEntry { part: String },
    /// The defect corrupts the part's data, but the part has none.
    EmptyData { part: String },
}

impl fmt::Display for DefectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefectError::UnknownPart { part, parts } => {
                write!(f, "the defect names part {part:?}, which the bundle does not have; no bundle built")?;
                write!(f, "\nhelp: name one of its parts: {}", parts.join(", "))
            }
            DefectError::UnknownEntry { entry, entries } => {
                write!(
                    f,
                    "the defect names entry {entry:?}, which the bundle does not have; no bundle built"
                )?;
                write!(f, "\nhelp: name one of its entries, without the folder: {}", entries.join(", "))
            }
            DefectError::NoEntry { part } => write!(
                f,
                "the defect needs the zip entry of part {part:?}, which has no src; no bundle built\n\
                 help: give the part a src, or aim the defect at a part that has one"
            ),
            DefectError::EmptyData { part } => write!(
                f,
                "the defect corrupts a byte of part {part:?}, which has no data; no bundle built\n\
                 help: give the part some data, or aim the defect at another part"
            ),
        }
    }
}

impl std::error::Error for DefectError {}
