//! The validation layer: [`RawScenario`] into the [`model`](super::model), or the first error,
//! naming the file, the dotted key (`step[3].push.transport`, steps counted from 1 as a reader
//! counts the `[[step]]` headers) and the line.
//!
//! Serde's own errors (a TOML syntax error, an unknown key, a missing key, a value of the wrong
//! type) carry a byte span; [`key_at`] finds the key at that span in the parsed document. Errors
//! found here use the spans the raw layer kept.

use std::ops::{Range, RangeInclusive};
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ScenarioError;
use super::model::{
    Action, Behaviour, BundleSource, BundleSpec, CallExpect, Cut, CutWhen, Defect, Expect, Phase, Push,
    PushExpect, ReportedExpect, Scenario, Script, ShadowDesired, Step, SweepSpec, Transport,
};
use super::raw::{
    Entries, Loose, RawBundleSpec, RawCall, RawCommitsAfter, RawCut, RawExpect, RawPush, RawRefused,
    RawScenario, RawShadow, RawSnapshot, RawStep, RawSweep, RawTruncated, RawWriteFile, Scalar,
};

type Result<T> = std::result::Result<T, ScenarioError>;

/// A step's timeout when it gives none.
const STEP_TIMEOUT_MS: u64 = 60_000;
const STEPS_MAX: usize = 1000;
/// The longest duration accepted anywhere: 30 days.
const DURATION_MAX_MS: u64 = 30 * 24 * 3_600_000;
/// Bytes of the simulated image header's version field (`ota_sim::image`).
const VERSION_MAX_BYTES: usize = 24;
/// 16 MiB, the largest ESP32 flash.
const APP_KIB: RangeInclusive<i64> = 1..=16 * 1024;
const APP_BYTES: RangeInclusive<i64> = ota_sim::image::HEADER_BYTES as i64..=16 * 1024 * 1024;
const APP_KIB_DEFAULT: usize = 64;
const CHUNK_BYTES: RangeInclusive<i64> = 1..=65_536;
const CHUNK_BYTES_DEFAULT: usize = 512;
/// As many files as the first-boot merge copies.
const FILES_MAX: usize = ota_core::merge::MERGE_FILES_MAX as usize;
const RANDOM_SCHEDULES: RangeInclusive<i64> = 0..=1_000_000;
const RANDOM_STEPS: RangeInclusive<i64> = 1..=10_000;
const RANDOM_STEPS_DEFAULT: usize = 30;

/// The action keys, in the order the README lists them.
const ACTIONS: &str = "provision, write_file, push, power_on, power_cut, wait, commit, revert, reboot, snapshot, \
                       expect, sweep, shadow";
/// The most devices a scenario drives.
const DEVICES: RangeInclusive<i64> = 1..=64;
/// Steps a `cut` is refused on: nothing there writes flash, or the step is the cut itself.
const NO_CUT: [&str; 5] = ["provision", "power_cut", "expect", "sweep", "shadow"];

/// Parses and validates `text`, read from `file`; paths resolve against `file`'s folder.
pub fn scenario(file: &Path, text: &str) -> Result<Scenario> {
    let raw: RawScenario = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    let cx = Cx { file, text, dir: file.parent().unwrap_or(Path::new("")) };
    let name = match &raw.name {
        Some(name) => non_empty(&cx, "name", name)?,
        None => file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if raw.step.is_empty() {
        return Err(ScenarioError::whole_file(file, "a scenario needs at least one [[step]]".to_string()));
    }
    if raw.step.len() > STEPS_MAX {
        let message = format!("{} steps; at most {STEPS_MAX} are accepted", raw.step.len());
        return Err(cx.error("step", raw.step[STEPS_MAX].span(), message));
    }
    let devices = match &raw.devices {
        Some(n) => int_in(&cx, "devices", n, DEVICES)? as usize,
        None => 1,
    };
    let steps = raw.step.iter().enumerate().map(|(i, s)| step(&cx, i, s, devices)).collect::<Result<_>>()?;
    let description = raw.description.unwrap_or_default();
    Ok(Scenario { name, file: file.to_path_buf(), description, devices, steps })
}

/// The file being validated, for errors and paths.
struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    dir: &'a Path,
}

impl Cx<'_> {
    fn error(&self, key: &str, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_path_buf(),
            line: Some(line_of(self.text, span.start)),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

fn step(cx: &Cx, index: usize, raw: &Spanned<RawStep>, devices: usize) -> Result<Step> {
    let key = format!("step[{}]", index + 1);
    let line = line_of(cx.text, raw.span().start);
    let kind = action_kind(cx, &key, raw)?;
    let raw = raw.get_ref();
    let cut = match &raw.cut {
        Some(c) => Some(cut(cx, &format!("{key}.cut"), kind, c)?),
        None => None,
    };
    let action = action(cx, &key, raw, cut.is_some())?;
    let timeout_ms = match &raw.timeout {
        Some(t) => positive_duration_ms(cx, &format!("{key}.timeout"), t)?,
        None => STEP_TIMEOUT_MS,
    };
    let devices = match &raw.device {
        Some(d) => step_devices(cx, &format!("{key}.device"), d, devices)?,
        None => vec![0],
    };
    Ok(Step { line, action, cut, timeout_ms, devices })
}

/// `device = N` (0-based, below the scenario's `devices`) or `device = "all"`.
fn step_devices(cx: &Cx, key: &str, v: &Spanned<Scalar>, devices: usize) -> Result<Vec<usize>> {
    match v.get_ref() {
        Loose::Int(n) if (0..devices as i64).contains(n) => Ok(vec![*n as usize]),
        Loose::Str(s) if s == "all" => Ok((0..devices).collect()),
        other => Err(cx.error(
            key,
            v.span(),
            format!(
                "expected a device number from 0 to {} (the scenario has devices = {devices}) or \"all\"; found {}",
                devices - 1,
                other.what()
            ),
        )),
    }
}

fn shadow(cx: &Cx, key: &str, v: &Spanned<RawShadow>) -> Result<Action> {
    let raw = v.get_ref();
    let desired = match (&raw.bundle, &raw.url, &raw.doc) {
        (Some(bundle), None, None) => {
            ShadowDesired::Bundle(bundle_source(cx, &format!("{key}.bundle"), bundle)?)
        }
        (None, Some(url), None) => ShadowDesired::Url(non_empty(cx, &format!("{key}.url"), url)?),
        (None, None, Some(doc)) => ShadowDesired::Doc(doc.get_ref().clone()),
        _ => {
            let message = "a shadow step sets exactly one of bundle (served by the runner), url or doc";
            return Err(cx.error(key, v.span(), message));
        }
    };
    Ok(Action::Shadow(desired))
}

/// The name of the step's one action key.
fn action_kind(cx: &Cx, key: &str, raw: &Spanned<RawStep>) -> Result<&'static str> {
    let step = raw.get_ref();
    let mut given: Vec<(&'static str, Range<usize>)> = [
        ("provision", step.provision.as_ref().map(Spanned::span)),
        ("write_file", step.write_file.as_ref().map(Spanned::span)),
        ("push", step.push.as_ref().map(Spanned::span)),
        ("power_on", step.power_on.as_ref().map(Spanned::span)),
        ("power_cut", step.power_cut.as_ref().map(Spanned::span)),
        ("wait", step.wait.as_ref().map(Spanned::span)),
        ("commit", step.commit.as_ref().map(Spanned::span)),
        ("revert", step.revert.as_ref().map(Spanned::span)),
        ("reboot", step.reboot.as_ref().map(Spanned::span)),
        ("snapshot", step.snapshot.as_ref().map(Spanned::span)),
        ("expect", step.expect.as_ref().map(Spanned::span)),
        ("sweep", step.sweep.as_ref().map(Spanned::span)),
        ("shadow", step.shadow.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(name, span)| Some((name, span?)))
    .collect();
    // In file order, so the error points at the second action the reader wrote.
    given.sort_by_key(|(_, span)| span.start);
    match given.as_slice() {
        [] => Err(cx.error(key, raw.span(), format!("a step needs one action key: one of {ACTIONS}"))),
        [(name, _)] => Ok(name),
        [(first, _), (second, span), ..] => {
            let message = format!(
                "a step has exactly one action; this one has {first} and {second} (start a new [[step]] \
                 for each action)"
            );
            Err(cx.error(key, span.clone(), message))
        }
    }
}

fn action(cx: &Cx, key: &str, raw: &RawStep, has_cut: bool) -> Result<Action> {
    let at = |name: &str| format!("{key}.{name}");
    if let Some(v) = &raw.provision {
        return Ok(Action::Provision { bundle: bundle_source(cx, &at("provision"), v)? });
    }
    if let Some(v) = &raw.write_file {
        return write_file(cx, &at("write_file"), v);
    }
    if let Some(v) = &raw.push {
        return push(cx, &at("push"), v.get_ref(), has_cut).map(Action::Push);
    }
    if let Some(v) = &raw.power_on {
        return flag(cx, &at("power_on"), v).map(|()| Action::PowerOn);
    }
    if let Some(v) = &raw.power_cut {
        return flag(cx, &at("power_cut"), v).map(|()| Action::PowerCut);
    }
    if let Some(v) = &raw.wait {
        return Ok(Action::Wait { ms: duration_ms(cx, &at("wait"), v)? });
    }
    if let Some(v) = &raw.commit {
        return Ok(Action::Commit { expect: call(cx, &at("commit"), v)? });
    }
    if let Some(v) = &raw.revert {
        return Ok(Action::Revert { expect: call(cx, &at("revert"), v)? });
    }
    if let Some(v) = &raw.reboot {
        return flag(cx, &at("reboot"), v).map(|()| Action::Reboot);
    }
    if let Some(v) = &raw.snapshot {
        return snapshot(cx, &at("snapshot"), v);
    }
    if let Some(v) = &raw.expect {
        return expect(cx, &at("expect"), v).map(Action::Expect);
    }
    if let Some(v) = &raw.sweep {
        return sweep(cx, &at("sweep"), v.get_ref()).map(Action::Sweep);
    }
    if let Some(v) = &raw.shadow {
        return shadow(cx, &at("shadow"), v);
    }
    unreachable!("action_kind found exactly one action key")
}

/// `power_on = true` and the like: `false` would read as "do not", which is no step at all.
fn flag(cx: &Cx, key: &str, v: &Spanned<bool>) -> Result<()> {
    if *v.get_ref() {
        return Ok(());
    }
    let name = key.rsplit('.').next().unwrap_or(key);
    Err(cx.error(
        key,
        v.span(),
        format!("{name} = false does nothing; write {name} = true or remove the step"),
    ))
}

fn write_file(cx: &Cx, key: &str, v: &Spanned<RawWriteFile>) -> Result<Action> {
    let raw = v.get_ref();
    let name = file_name(cx, &format!("{key}.name"), &raw.name)?;
    Ok(Action::WriteFile { name, content: raw.content.get_ref().clone().into_bytes() })
}

fn push(cx: &Cx, key: &str, raw: &RawPush, has_cut: bool) -> Result<Push> {
    let at = |name: &str| format!("{key}.{name}");
    let bundle = bundle_source(cx, &at("bundle"), &raw.bundle)?;
    let transport = match &raw.transport {
        Some(t) => one_of(cx, &at("transport"), t, "transport", TRANSPORTS)?,
        None => Transport::Rpc,
    };
    let commit_timeout_s = match &raw.commit_timeout {
        Some(t) => seconds(cx, &at("commit_timeout"), t)?,
        None => 0,
    };
    let chunk_bytes = match &raw.chunk_bytes {
        Some(c) => int_in(cx, &at("chunk_bytes"), c, CHUNK_BYTES)? as usize,
        None => CHUNK_BYTES_DEFAULT,
    };
    let expect = match &raw.expect {
        Some(e) => push_expect(cx, &at("expect"), e)?,
        None if has_cut => PushExpect::PowerLost,
        None => PushExpect::Applied,
    };
    let ignore_same_version = raw.ignore_same_version.unwrap_or(false);
    Ok(Push { bundle, transport, commit_timeout_s, ignore_same_version, chunk_bytes, expect })
}

const TRANSPORTS: &[(&str, Transport)] =
    &[("rpc", Transport::Rpc), ("http", Transport::Http), ("pull", Transport::Pull)];

const OUTCOMES: &[(&str, PushExpect)] = &[
    ("applied", PushExpect::Applied),
    ("up-to-date", PushExpect::UpToDate),
    ("power-lost", PushExpect::PowerLost),
];

fn push_expect(cx: &Cx, key: &str, v: &Spanned<Loose<RawRefused>>) -> Result<PushExpect> {
    const OR: &str = "or { refused = \"…\" }";
    match v.get_ref() {
        Loose::Str(s) => choose(cx, key, v.span(), s, "push outcome", OUTCOMES, OR),
        Loose::Table(t) => {
            Ok(PushExpect::Refused { message: non_empty(cx, &format!("{key}.refused"), &t.refused)? })
        }
        other => Err(cx.error(
            key,
            v.span(),
            format!("expected one of {}, {OR}; found {}", names(OUTCOMES), other.what()),
        )),
    }
}

/// `"fixtures/v2.zip"` (resolved against the scenario's folder, and it must exist) or a spec table.
fn bundle_source(cx: &Cx, key: &str, v: &Spanned<Loose<RawBundleSpec>>) -> Result<BundleSource> {
    match v.get_ref() {
        Loose::Str(path) => bundle_file(cx, key, v.span(), path),
        Loose::Table(spec) => bundle_spec(cx, key, spec).map(BundleSource::Spec),
        other => Err(cx.error(
            key,
            v.span(),
            format!(
                "expected a bundle: a path to a .zip (\"fixtures/v2.zip\") or a spec table \
                 ({{ version = \"2.0.0\" }}); found {}",
                other.what()
            ),
        )),
    }
}

fn bundle_file(cx: &Cx, key: &str, span: Range<usize>, path: &str) -> Result<BundleSource> {
    if path.is_empty() {
        return Err(cx.error(key, span, "the bundle path is empty; expected a path to a .zip"));
    }
    let resolved = cx.dir.join(path);
    if resolved.is_file() {
        return Ok(BundleSource::File(resolved));
    }
    let message = if resolved.is_dir() {
        format!("{} is a folder; expected a bundle file (.zip)", resolved.display())
    } else {
        format!(
            "no bundle file at {} (the path {path:?} is relative to the scenario's folder)",
            resolved.display()
        )
    };
    Err(cx.error(key, span, message))
}

fn bundle_spec(cx: &Cx, key: &str, raw: &RawBundleSpec) -> Result<BundleSpec> {
    let at = |name: &str| format!("{key}.{name}");
    let version = version(cx, &at("version"), &raw.version)?;
    let name = match &raw.name {
        Some(n) => non_empty(cx, &at("name"), n)?,
        None => "app".to_string(),
    };
    let build_id = match &raw.build_id {
        Some(b) => non_empty(cx, &at("build_id"), b)?,
        None => format!("hil/{version}"),
    };
    let platform = match &raw.platform {
        Some(p) => Some(non_empty(cx, &at("platform"), p)?),
        None => None,
    };
    let behaviour = match &raw.behaviour {
        Some(b) => behaviour(cx, &at("behaviour"), b)?,
        None => Behaviour::Healthy,
    };
    let app_bytes = app_bytes(cx, key, raw)?;
    let files = match &raw.files {
        Some(files) => spec_files(cx, &at("files"), files)?,
        None => vec![("app.json".to_string(), format!("{{\"version\": \"{version}\"}}").into_bytes())],
    };
    let defect = match &raw.defect {
        Some(d) => Some(defect(cx, &at("defect"), d)?),
        None => None,
    };
    Ok(BundleSpec { name, version, build_id, platform, behaviour, app_bytes, files, defect })
}

fn version(cx: &Cx, key: &str, v: &Spanned<String>) -> Result<String> {
    let version = non_empty(cx, key, v)?;
    if version.len() > VERSION_MAX_BYTES || version.contains('\0') {
        let message = format!(
            "version {version:?} does not fit the image header: at most {VERSION_MAX_BYTES} bytes, no NUL"
        );
        return Err(cx.error(key, v.span(), message));
    }
    Ok(version)
}

fn app_bytes(cx: &Cx, key: &str, raw: &RawBundleSpec) -> Result<usize> {
    match (&raw.app_kib, &raw.app_bytes) {
        (Some(_), Some(bytes)) => {
            Err(cx.error(&format!("{key}.app_bytes"), bytes.span(), "give app_kib or app_bytes, not both"))
        }
        (Some(kib), None) => Ok(int_in(cx, &format!("{key}.app_kib"), kib, APP_KIB)? as usize * 1024),
        (None, Some(bytes)) => Ok(int_in(cx, &format!("{key}.app_bytes"), bytes, APP_BYTES)? as usize),
        (None, None) => Ok(APP_KIB_DEFAULT * 1024),
    }
}

fn spec_files(cx: &Cx, key: &str, v: &Spanned<Entries<String>>) -> Result<Vec<(String, Vec<u8>)>> {
    let entries = &v.get_ref().0;
    if entries.len() > FILES_MAX {
        let message = format!("{} files; at most {FILES_MAX} are accepted", entries.len());
        return Err(cx.error(key, v.span(), message));
    }
    entries
        .iter()
        .map(|(name, content)| {
            let name = file_name(cx, &format!("{key}.{}", key_part(name.get_ref())), name)?;
            Ok((name, content.get_ref().clone().into_bytes()))
        })
        .collect()
}

const BEHAVIOURS: &[(&str, Behaviour)] = &[
    ("healthy", Behaviour::Healthy),
    ("crashes-at-boot", Behaviour::CrashesAtBoot),
    ("hangs", Behaviour::Hangs),
    ("never-commits", Behaviour::NeverCommits),
];

fn behaviour(cx: &Cx, key: &str, v: &Spanned<Loose<RawCommitsAfter>>) -> Result<Behaviour> {
    const OR: &str = "or { commits_after = \"10s\" }";
    match v.get_ref() {
        Loose::Str(s) => choose(cx, key, v.span(), s, "behaviour", BEHAVIOURS, OR),
        Loose::Table(t) => {
            let key = format!("{key}.commits_after");
            let ms = duration_ms(cx, &key, &t.commits_after)?;
            let seconds = whole_seconds(cx, &key, t.commits_after.span(), ms)?;
            Ok(Behaviour::CommitsAfter { seconds })
        }
        other => Err(cx.error(
            key,
            v.span(),
            format!("expected one of {}, {OR}; found {}", names(BEHAVIOURS), other.what()),
        )),
    }
}

const DEFECTS: &[(&str, Defect)] = &[
    ("bad-checksum", Defect::BadChecksum),
    ("bad-crc", Defect::BadCrc),
    ("compressed", Defect::Compressed),
    ("streaming", Defect::Streaming),
    ("too-big", Defect::TooBig),
    ("not-a-zip", Defect::NotAZip),
    ("manifest-not-first", Defect::ManifestNotFirst),
];

fn defect(cx: &Cx, key: &str, v: &Spanned<Loose<RawTruncated>>) -> Result<Defect> {
    const OR: &str = "or { truncated = 0.5 }";
    match v.get_ref() {
        Loose::Str(s) => choose(cx, key, v.span(), s, "defect", DEFECTS, OR),
        Loose::Table(t) => {
            let fraction = fraction(cx, &format!("{key}.truncated"), &t.truncated)?;
            Ok(Defect::Truncated(fraction))
        }
        other => Err(cx.error(
            key,
            v.span(),
            format!("expected one of {}, {OR}; found {}", names(DEFECTS), other.what()),
        )),
    }
}

fn cut(cx: &Cx, key: &str, kind: &str, v: &Spanned<RawCut>) -> Result<Cut> {
    if NO_CUT.contains(&kind) {
        let message = format!(
            "a cut does not go with {kind}; it goes with write_file, push, power_on, wait, commit, \
             revert, reboot and snapshot"
        );
        return Err(cx.error(key, v.span(), message));
    }
    let raw = v.get_ref();
    let at = |name: &str| format!("{key}.{name}");
    let given: Vec<(&str, Range<usize>)> = [
        ("at_op", raw.at_op.as_ref().map(Spanned::span)),
        ("at_fraction", raw.at_fraction.as_ref().map(Spanned::span)),
        ("at_phase", raw.at_phase.as_ref().map(Spanned::span)),
        ("at_every_op", raw.at_every_op.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(name, span)| Some((name, span?)))
    .collect();
    if let [(first, _), (second, span), ..] = given.as_slice() {
        let message = format!(
            "a cut takes one of at_op, at_fraction, at_phase or at_every_op; found {first} and {second}"
        );
        return Err(cx.error(&at(second), span.clone(), message));
    }
    if let (Some(when), None) = (&raw.when, &raw.at_op) {
        return Err(cx.error(&at("when"), when.span(), "when goes with at_op only"));
    }
    if let Some(op) = &raw.at_op {
        let op = int_in(cx, &at("at_op"), op, 0..=i64::MAX)? as u64;
        let when = match &raw.when {
            Some(w) => one_of(cx, &at("when"), w, "cut timing", WHENS)?,
            None => CutWhen::During,
        };
        return Ok(Cut::AtOp { op, when });
    }
    if let Some(f) = &raw.at_fraction {
        if kind != "push" {
            let message = format!(
                "at_fraction (a fraction of the upload) goes with push only, not {kind}; use at_op or \
                 at_phase"
            );
            return Err(cx.error(&at("at_fraction"), f.span(), message));
        }
        return fraction(cx, &at("at_fraction"), f).map(Cut::AtFraction);
    }
    if let Some(phase) = &raw.at_phase {
        return one_of(cx, &at("at_phase"), phase, "phase", PHASES).map(Cut::AtPhase);
    }
    if let Some(every) = &raw.at_every_op {
        if kind != "push" || !*every.get_ref() {
            let message = format!("at_every_op = true goes with push only (found it with {kind})");
            return Err(cx.error(&at("at_every_op"), every.span(), message));
        }
        return Ok(Cut::AtEveryOp);
    }
    Err(cx.error(key, v.span(), "a cut needs one of at_op, at_fraction or at_phase"))
}

const WHENS: &[(&str, CutWhen)] =
    &[("before", CutWhen::Before), ("during", CutWhen::During), ("after", CutWhen::After)];

const PHASES: &[(&str, Phase)] = &[
    ("write", Phase::Write),
    ("finalize", Phase::Finalize),
    ("boot", Phase::Boot),
    ("merge", Phase::Merge),
    ("commit", Phase::Commit),
    ("revert", Phase::Revert),
    ("snapshot", Phase::Snapshot),
];

/// `commit = true` or `commit = { expect_error = "…" }` (and `revert`).
fn call(cx: &Cx, key: &str, v: &Spanned<Loose<RawCall>>) -> Result<CallExpect> {
    match v.get_ref() {
        Loose::Bool(true) => Ok(CallExpect::Ok),
        Loose::Table(t) => call_expect(cx, key, &t.expect_error),
        other => {
            let name = key.rsplit('.').next().unwrap_or(key);
            let message = format!(
                "expected {name} = true or {name} = {{ expect_error = \"…\" }}; found {}",
                other.what()
            );
            Err(cx.error(key, v.span(), message))
        }
    }
}

fn call_expect(cx: &Cx, key: &str, expect_error: &Option<Spanned<String>>) -> Result<CallExpect> {
    match expect_error {
        Some(e) => Ok(CallExpect::Error { message: non_empty(cx, &format!("{key}.expect_error"), e)? }),
        None => Ok(CallExpect::Ok),
    }
}

fn snapshot(cx: &Cx, key: &str, v: &Spanned<Loose<RawSnapshot>>) -> Result<Action> {
    match v.get_ref() {
        Loose::Bool(true) => {
            Ok(Action::Snapshot { set_as_revert: false, commit_timeout_s: None, expect: CallExpect::Ok })
        }
        Loose::Table(t) => {
            let commit_timeout_s = match &t.commit_timeout {
                Some(s) => Some(seconds(cx, &format!("{key}.commit_timeout"), s)?),
                None => None,
            };
            let expect = call_expect(cx, key, &t.expect_error)?;
            Ok(Action::Snapshot { set_as_revert: t.set_as_revert.unwrap_or(false), commit_timeout_s, expect })
        }
        other => Err(cx.error(
            key,
            v.span(),
            format!(
                "expected snapshot = true or a table {{ set_as_revert = …, commit_timeout = …, \
                 expect_error = \"…\" }}; found {}",
                other.what()
            ),
        )),
    }
}

fn expect(cx: &Cx, key: &str, v: &Spanned<RawExpect>) -> Result<Expect> {
    let raw = v.get_ref();
    let at = |name: &str| format!("{key}.{name}");
    let version = match &raw.version {
        Some(s) => Some(non_empty(cx, &at("version"), s)?),
        None => None,
    };
    let active_slot = match &raw.active_slot {
        Some(slot) => Some(int_in(cx, &at("active_slot"), slot, 0..=1)? as u8),
        None => None,
    };
    let revert_slot = match &raw.revert_slot {
        Some(slot) => Some(revert_slot(cx, &at("revert_slot"), slot)?),
        None => None,
    };
    let files = match &raw.files {
        Some(files) => expect_files(cx, &at("files"), files.get_ref())?,
        None => Vec::new(),
    };
    let unchanged = raw.unchanged.unwrap_or(false);
    let expect = Expect {
        version,
        active_slot,
        revert_slot,
        committed: raw.committed,
        files,
        unchanged,
        bricked: raw.bricked,
        reported: raw.reported.as_ref().map(|r| ReportedExpect { code: r.code, message: r.message.clone() }),
    };
    if expect == Expect::default() {
        let message = "an expect checks nothing; give at least one of version, active_slot, revert_slot, \
                       committed, unchanged = true, bricked, files, reported";
        return Err(cx.error(key, v.span(), message));
    }
    Ok(expect)
}

fn revert_slot(cx: &Cx, key: &str, v: &Spanned<Scalar>) -> Result<Option<u8>> {
    match v.get_ref() {
        Loose::Int(n @ 0..=1) => Ok(Some(*n as u8)),
        Loose::Str(s) if s == "none" => Ok(None),
        other => Err(cx.error(key, v.span(), format!("expected 0, 1 or \"none\"; found {}", other.what()))),
    }
}

fn expect_files(cx: &Cx, key: &str, entries: &Entries<Scalar>) -> Result<Vec<(String, Option<Vec<u8>>)>> {
    entries
        .0
        .iter()
        .map(|(name, content)| {
            let key = format!("{key}.{}", key_part(name.get_ref()));
            let name = file_name(cx, &key, name)?;
            match content.get_ref() {
                Loose::Str(s) => Ok((name, Some(s.clone().into_bytes()))),
                Loose::Bool(false) => Ok((name, None)),
                other => Err(cx.error(
                    &key,
                    content.span(),
                    format!(
                        "expected the file's content (a string) or false for \"absent\"; found {}",
                        other.what()
                    ),
                )),
            }
        })
        .collect()
}

fn sweep(cx: &Cx, key: &str, raw: &RawSweep) -> Result<SweepSpec> {
    let at = |name: &str| format!("{key}.{name}");
    let scripts = match &raw.scripts {
        Some(s) => scripts(cx, &at("scripts"), s)?,
        None => Script::ALL.to_vec(),
    };
    let app_kib = match &raw.app_kib {
        Some(kib) => int_in(cx, &at("app_kib"), kib, APP_KIB)? as usize,
        None => APP_KIB_DEFAULT,
    };
    let depth = match &raw.depth {
        Some(d) => int_in(cx, &at("depth"), d, 1..=2)? as u8,
        None => 1,
    };
    let random_schedules = match &raw.random_schedules {
        Some(n) => int_in(cx, &at("random_schedules"), n, RANDOM_SCHEDULES)? as u64,
        None => 0,
    };
    let random_steps = match &raw.random_steps {
        Some(n) => int_in(cx, &at("random_steps"), n, RANDOM_STEPS)? as usize,
        None => RANDOM_STEPS_DEFAULT,
    };
    Ok(SweepSpec { scripts, app_kib, depth, random_schedules, random_steps })
}

fn scripts(cx: &Cx, key: &str, v: &Spanned<Scalar>) -> Result<Vec<Script>> {
    let expected = format!("expected \"all\", a script name or a list of them ({})", script_names());
    match v.get_ref() {
        Loose::Str(s) if s == "all" => Ok(Script::ALL.to_vec()),
        Loose::Str(s) => Ok(vec![script(cx, key, v.span(), s)?]),
        Loose::List(items) if items.is_empty() => {
            Err(cx.error(key, v.span(), format!("{expected}; found []")))
        }
        Loose::List(items) => {
            let mut scripts = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let key = format!("{key}[{}]", i + 1);
                let Loose::Str(name) = item.get_ref() else {
                    let message = format!(
                        "expected a script name ({}); found {}",
                        script_names(),
                        item.get_ref().what()
                    );
                    return Err(cx.error(&key, item.span(), message));
                };
                let script = script(cx, &key, item.span(), name)?;
                if scripts.contains(&script) {
                    return Err(cx.error(&key, item.span(), format!("script {name:?} is listed twice")));
                }
                scripts.push(script);
            }
            Ok(scripts)
        }
        other => Err(cx.error(key, v.span(), format!("{expected}; found {}", other.what()))),
    }
}

fn script(cx: &Cx, key: &str, span: Range<usize>, name: &str) -> Result<Script> {
    Script::parse(name).ok_or_else(|| {
        let message = format!("unknown script {name:?}; expected \"all\" or one of {}", script_names());
        cx.error(key, span, message)
    })
}

fn script_names() -> String {
    Script::ALL.map(Script::name).join(", ")
}

/// A file in the filesystem's root, as the core's merge names it.
fn file_name(cx: &Cx, key: &str, v: &Spanned<String>) -> Result<String> {
    let name = v.get_ref();
    let wrong = if name.is_empty() {
        "a file name cannot be empty".to_string()
    } else if name.contains('/') || name == "." || name == ".." {
        format!(
            "file name {name:?}: files live in the filesystem's root, so a name has no '/' and is not . or .."
        )
    } else if name.len() > ota_core::fs::NAME_MAX_BYTES {
        format!(
            "file name {name:?} is {} bytes; at most {} are accepted",
            name.len(),
            ota_core::fs::NAME_MAX_BYTES
        )
    } else {
        return Ok(name.clone());
    };
    Err(cx.error(key, v.span(), wrong))
}

fn non_empty(cx: &Cx, key: &str, v: &Spanned<String>) -> Result<String> {
    if v.get_ref().is_empty() {
        return Err(cx.error(key, v.span(), "expected a non-empty string; found \"\""));
    }
    Ok(v.get_ref().clone())
}

fn int_in(cx: &Cx, key: &str, v: &Spanned<i64>, range: RangeInclusive<i64>) -> Result<i64> {
    let n = *v.get_ref();
    if range.contains(&n) {
        return Ok(n);
    }
    let message = match (*range.start(), *range.end()) {
        (lo, i64::MAX) => format!("expected a number from {lo} up; found {n}"),
        (lo, hi) if hi == lo + 1 => format!("expected {lo} or {hi}; found {n}"),
        (lo, hi) => format!("expected a number from {lo} to {hi}; found {n}"),
    };
    Err(cx.error(key, v.span(), message))
}

/// A fraction strictly between 0 and 1.
fn fraction(cx: &Cx, key: &str, v: &Spanned<f64>) -> Result<f64> {
    let f = *v.get_ref();
    if f > 0.0 && f < 1.0 {
        return Ok(f);
    }
    Err(cx.error(
        key,
        v.span(),
        format!("expected a fraction between 0 and 1 (both excluded), such as 0.5; found {f:?}"),
    ))
}

/// A string that must be one of `choices`.
fn one_of<T: Clone>(cx: &Cx, key: &str, v: &Spanned<String>, what: &str, choices: &[(&str, T)]) -> Result<T> {
    choose(cx, key, v.span(), v.get_ref(), what, choices, "")
}

/// `or` names the other shapes the key accepts, for the message.
fn choose<T: Clone>(
    cx: &Cx,
    key: &str,
    span: Range<usize>,
    text: &str,
    what: &str,
    choices: &[(&str, T)],
    or: &str,
) -> Result<T> {
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
        return Ok(value.clone());
    }
    let or = if or.is_empty() { String::new() } else { format!(", {or}") };
    Err(cx.error(key, span, format!("unknown {what} {text:?}; expected one of {}{or}", names(choices))))
}

fn names<T>(choices: &[(&str, T)]) -> String {
    choices.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// A duration: a string with a unit. A bare number is refused: "300" could be seconds or ms.
fn duration_ms(cx: &Cx, key: &str, v: &Spanned<Scalar>) -> Result<u64> {
    let message = match v.get_ref() {
        Loose::Str(s) => match parse_duration_ms(s) {
            Ok(ms) => return Ok(ms),
            Err(message) => message,
        },
        Loose::Int(n) => format!("a duration needs a unit: write \"{n}s\" (the units are ms, s, m and h)"),
        other => {
            format!("expected a duration such as \"250ms\", \"5s\", \"2m\" or \"1h\"; found {}", other.what())
        }
    };
    Err(cx.error(key, v.span(), message))
}

fn positive_duration_ms(cx: &Cx, key: &str, v: &Spanned<Scalar>) -> Result<u64> {
    match duration_ms(cx, key, v)? {
        0 => Err(cx.error(key, v.span(), "expected a duration above zero, such as \"60s\"")),
        ms => Ok(ms),
    }
}

/// The runner's one duration syntax (`crate::duration`, shared with the command line), bounded.
fn parse_duration_ms(text: &str) -> std::result::Result<u64, String> {
    match crate::duration::parse_duration_ms(text)? {
        ms if ms > DURATION_MAX_MS => {
            Err(format!("duration {text:?} is longer than 30 days, the longest accepted"))
        }
        ms => Ok(ms),
    }
}

/// A number of seconds (`300`) or a duration of whole seconds (`"5m"`).
fn seconds(cx: &Cx, key: &str, v: &Spanned<Scalar>) -> Result<u32> {
    match v.get_ref() {
        Loose::Int(n) => u32::try_from(*n).map_err(|_| {
            cx.error(key, v.span(), format!("expected a number of seconds from 0 to {}; found {n}", u32::MAX))
        }),
        Loose::Str(_) => {
            let ms = duration_ms(cx, key, v)?;
            whole_seconds(cx, key, v.span(), ms)
        }
        other => Err(cx.error(
            key,
            v.span(),
            format!("expected a number of seconds (300) or a duration (\"5m\"); found {}", other.what()),
        )),
    }
}

fn whole_seconds(cx: &Cx, key: &str, span: Range<usize>, ms: u64) -> Result<u32> {
    if !ms.is_multiple_of(1000) {
        return Err(cx.error(key, span, format!("expected whole seconds; found {ms} ms")));
    }
    // DURATION_MAX_MS keeps every duration's seconds within u32.
    Ok(u32::try_from(ms / 1000).expect("30 days of seconds fit u32"))
}

/// A key as it is written in a dotted path: bare when TOML allows it, quoted otherwise.
fn key_part(name: &str) -> String {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// 1-based line of byte offset `pos`.
fn line_of(text: &str, pos: usize) -> usize {
    let end = pos.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// An error from `toml` (syntax, or serde's unknown key, missing key, wrong type), with the
/// line and the key its span points at.
fn toml_error(file: &Path, text: &str, error: &toml::de::Error) -> ScenarioError {
    let span = error.span();
    let message = error
        .message()
        .replacen("unknown field", "unknown key", 1)
        .replacen("missing field", "missing key", 1)
        .replacen(", expected", "; expected", 1);
    ScenarioError {
        file: file.to_path_buf(),
        line: span.as_ref().map(|s| line_of(text, s.start)),
        key: span.and_then(|s| key_at(text, s.start)),
        message,
    }
}

/// The dotted key whose key or value holds byte `pos`, the deepest one; `None` when the text does
/// not parse (a syntax error has a line but no key) or `pos` is outside every key.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    table_key_at(doc.get_ref(), pos, &mut path).then(|| path.concat())
}

fn table_key_at(table: &DeTable<'_>, pos: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        let dot = if path.is_empty() { "" } else { "." };
        path.push(format!("{dot}{}", key_part(key.get_ref())));
        if value_key_at(value, pos, path) || key.span().contains(&pos) || value.span().contains(&pos) {
            return true;
        }
        path.pop();
    }
    false
}

/// Whether a key inside `value` holds `pos`; the path then names it.
fn value_key_at(value: &Spanned<DeValue<'_>>, pos: usize, path: &mut Vec<String>) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => table_key_at(table, pos, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(format!("[{}]", i + 1));
                if value_key_at(item, pos, path) || item.span().contains(&pos) {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}
