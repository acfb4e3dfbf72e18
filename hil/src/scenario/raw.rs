//! The raw layer: the scenario file as serde reads it, before any value is checked.
//!
//! Every table refuses unknown keys (`deny_unknown_fields`), so a misspelt key is an error that
//! names it, never a silent default. A key that takes more than one shape (`commit = true` or
//! `commit = { expect_error = "…" }`, a bundle as a path or a spec table) is a [`Loose`]: serde
//! keeps whatever the file holds, and the validation in `parse.rs` says what it expected, with
//! the key and the line. Values that validation reports on are [`Spanned`] for their position.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// The whole file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: Option<Spanned<String>>,
    pub description: Option<String>,
    pub devices: Option<Spanned<i64>>,
    #[serde(default)]
    pub step: Vec<Spanned<RawStep>>,
}

/// One `[[step]]`: exactly one action key, plus `cut` and `timeout`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a step table ([[step]])")]
pub struct RawStep {
    pub provision: Option<Spanned<Loose<RawBundleSpec>>>,
    pub write_file: Option<Spanned<RawWriteFile>>,
    pub push: Option<Spanned<RawPush>>,
    pub power_on: Option<Spanned<bool>>,
    pub power_cut: Option<Spanned<bool>>,
    pub wait: Option<Spanned<Scalar>>,
    pub commit: Option<Spanned<Loose<RawCall>>>,
    pub revert: Option<Spanned<Loose<RawCall>>>,
    pub reboot: Option<Spanned<bool>>,
    pub snapshot: Option<Spanned<Loose<RawSnapshot>>>,
    pub expect: Option<Spanned<RawExpect>>,
    pub sweep: Option<Spanned<RawSweep>>,
    pub shadow: Option<Spanned<RawShadow>>,
    pub cut: Option<Spanned<RawCut>>,
    pub timeout: Option<Spanned<Scalar>>,
    pub device: Option<Spanned<Scalar>>,
}

/// `shadow = { bundle = … }`, `{ url = "…" }` or `{ doc = "…" }`: exactly one.
#[derive(Debug, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a shadow table { bundle = … } or { url = \"…\" } or { doc = \"…\" }"
)]
pub struct RawShadow {
    pub bundle: Option<Spanned<Loose<RawBundleSpec>>>,
    pub url: Option<Spanned<String>>,
    pub doc: Option<Spanned<String>>,
}

/// `reported = { code = 0, message = "…" }` of an expect.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReported {
    pub code: Option<i64>,
    pub message: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table { name = \"…\", content = \"…\" }")]
pub struct RawWriteFile {
    pub name: Spanned<String>,
    pub content: Spanned<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a push table { bundle = …, transport = \"rpc\", … }")]
pub struct RawPush {
    pub bundle: Spanned<Loose<RawBundleSpec>>,
    pub transport: Option<Spanned<String>>,
    pub commit_timeout: Option<Spanned<Scalar>>,
    pub ignore_same_version: Option<bool>,
    pub chunk_bytes: Option<Spanned<i64>>,
    pub expect: Option<Spanned<Loose<RawRefused>>>,
}

/// `expect = { refused = "…" }` of a push.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefused {
    pub refused: Spanned<String>,
}

/// A bundle the runner builds.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundleSpec {
    pub version: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub build_id: Option<Spanned<String>>,
    pub platform: Option<Spanned<String>>,
    pub behaviour: Option<Spanned<Loose<RawCommitsAfter>>>,
    pub app_kib: Option<Spanned<i64>>,
    pub app_bytes: Option<Spanned<i64>>,
    pub files: Option<Spanned<Entries<String>>>,
    pub defect: Option<Spanned<Loose<RawTruncated>>>,
}

/// `behaviour = { commits_after = "10s" }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommitsAfter {
    pub commits_after: Spanned<Scalar>,
}

/// `defect = { truncated = 0.5 }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTruncated {
    pub truncated: Spanned<f64>,
}

/// `commit = { … }`, `revert = { … }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCall {
    pub expect_error: Option<Spanned<String>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshot {
    pub set_as_revert: Option<bool>,
    pub commit_timeout: Option<Spanned<Scalar>>,
    pub expect_error: Option<Spanned<String>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a cut table { at_op = …, at_fraction = … or at_phase = … }")]
pub struct RawCut {
    pub at_op: Option<Spanned<i64>>,
    pub when: Option<Spanned<String>>,
    pub at_fraction: Option<Spanned<f64>>,
    pub at_phase: Option<Spanned<String>>,
    pub at_every_op: Option<Spanned<bool>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "an expect table { version = \"…\", committed = true, … }")]
pub struct RawExpect {
    pub version: Option<Spanned<String>>,
    pub active_slot: Option<Spanned<i64>>,
    pub revert_slot: Option<Spanned<Scalar>>,
    pub committed: Option<bool>,
    pub unchanged: Option<bool>,
    pub bricked: Option<bool>,
    pub files: Option<Spanned<Entries<Scalar>>>,
    pub reported: Option<RawReported>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a sweep table { scripts = \"all\", depth = 1, … }")]
pub struct RawSweep {
    pub scripts: Option<Spanned<Scalar>>,
    pub app_kib: Option<Spanned<i64>>,
    pub depth: Option<Spanned<i64>>,
    pub random_schedules: Option<Spanned<i64>>,
    pub random_steps: Option<Spanned<i64>>,
}

/// Whatever a key holds, for keys that take more than one shape. A table is read as `T` (with
/// `T`'s own checks); a list holds [`Scalar`]s. Validation turns the shape it finds into a model
/// value or an error that says which shapes the key accepts.
#[derive(Debug)]
pub enum Loose<T> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Spanned<Scalar>>),
    Table(T),
}

/// A [`Loose`] that never holds a table the validation reads: any table is kept as
/// [`Loose::Table`] and refused there.
pub type Scalar = Loose<IgnoredAny>;

impl<T> Loose<T> {
    /// The value's shape for a message: `found the number 301`.
    pub fn what(&self) -> String {
        match self {
            Loose::Bool(b) => format!("{b}"),
            Loose::Int(n) => format!("the number {n}"),
            Loose::Float(x) => format!("the number {x}"),
            Loose::Str(s) => format!("the string {s:?}"),
            Loose::List(_) => "a list".to_string(),
            Loose::Table(_) => "a table".to_string(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor(PhantomData))
    }
}

struct LooseVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for LooseVisitor<T> {
    type Value = Loose<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, a number, a string, a list or a table")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v).map(Loose::Int).map_err(|_| E::custom(format!("the number {v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Loose::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Loose::Table)
    }
}

/// A table of names to values (`files = { "conf9.json" = "…" }`), each with its position, in
/// the order the deserializer gives them (the `toml` crate sorts a table's keys by name).
#[derive(Debug)]
pub struct Entries<V>(pub Vec<(Spanned<String>, Spanned<V>)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

struct EntriesVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
    type Value = Entries<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of file names")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Entries(entries))
    }
}
