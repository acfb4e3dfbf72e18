//! The validated scenario: what the engine runs. Built from the raw TOML types by
//! [`super::parse`]; every value here has been checked, every path resolved against the scenario
//! file, every duration typed.
//!
//! A scenario says what happens, not where: the same file runs on the simulator, a virtual board
//! or a real board. A step a board cannot carry out (a transport it lacks, a cut it cannot make)
//! skips the whole scenario on that board, with the reason.

use std::path::PathBuf;

pub use ota_sim::image::Behaviour;
pub use ota_sim::sweep::Script;

/// One scenario file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The `name` key, or the file stem.
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    /// Devices the scenario drives (`devices = N`, default 1); a board with fewer skips it.
    pub devices: usize,
    pub steps: Vec<Step>,
}

/// One `[[step]]`: an action, optionally with a power cut armed for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// 1-based line of the `[[step]]` header in the file, for messages.
    pub line: usize,
    pub action: Action,
    /// A power cut that strikes during this step.
    pub cut: Option<Cut>,
    /// How long the step may take on a board with real time; on the simulator time is virtual
    /// and a step never waits. Default 60 s.
    pub timeout_ms: u64,
    /// The devices the step acts on, in order (`device = N` or `"all"`; default the first).
    pub devices: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Factory-flash `bundle` into slot 0, committed; the device is then off.
    Provision {
        bundle: BundleSource,
    },
    /// The user writes a file on the running firmware's filesystem (such as `conf9.json`).
    WriteFile {
        name: String,
        content: Vec<u8>,
    },
    /// Send a bundle to the device.
    Push(Push),
    PowerCut,
    PowerOn,
    /// Let time pass.
    Wait {
        ms: u64,
    },
    /// `OTA.Commit`.
    Commit {
        expect: CallExpect,
    },
    /// `OTA.Revert`.
    Revert {
        expect: CallExpect,
    },
    Reboot,
    /// `OTA.CreateSnapshot`.
    Snapshot {
        set_as_revert: bool,
        commit_timeout_s: Option<u32>,
        expect: CallExpect,
    },
    Expect(Expect),
    /// Sets the desired state of the device's shadow (ota-shadow, §6.3): the device updates
    /// itself when it is, or next comes, online.
    Shadow(ShadowDesired),
    /// An exhaustive power-cut sweep, on boards that can snapshot their flash.
    Sweep(SweepSpec),
}

/// What a `shadow` step sets.
#[derive(Clone, Debug, PartialEq)]
pub enum ShadowDesired {
    /// `desired.ota.url` names this bundle, served by the runner.
    Bundle(BundleSource),
    /// `desired.ota.url` is this URL as it is (one that does not answer, say).
    Url(String),
    /// This text is the delta document as it is (a malformed one, say).
    Doc(String),
}

/// The device's reported `ota` state (`expect = { reported = { code = 0, message = "…" } }`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportedExpect {
    /// The code: 0 done, negative failed, positive in progress.
    pub code: Option<i64>,
    /// Text the message contains.
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    pub bundle: BundleSource,
    pub transport: Transport,
    pub commit_timeout_s: u32,
    pub ignore_same_version: bool,
    /// Bytes per write (RPC `OTA.Write` chunk, or the pace of an HTTP body). Default 512.
    pub chunk_bytes: usize,
    /// How the push must end. Default: `Applied`, or `PowerLost` when the step has a cut.
    pub expect: PushExpect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `OTA.Begin`, `OTA.Write`..., `OTA.End` over the RPC channel.
    Rpc,
    /// `POST /update`, multipart.
    Http,
    /// The device downloads the bundle from a URL the runner serves (`OTA.Update {url}`).
    Pull,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Rpc => "rpc",
            Transport::Http => "http",
            Transport::Pull => "pull",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum PushExpect {
    /// The device applied it and rebooted into it.
    Applied,
    /// "Version is the same as current": nothing written, no reboot.
    UpToDate,
    /// Refused with a message that contains this text.
    Refused { message: String },
    /// The power went during the push.
    PowerLost,
}

/// What a commit, revert or snapshot call must give.
#[derive(Clone, Debug, PartialEq)]
pub enum CallExpect {
    Ok,
    /// An error whose message contains this text.
    Error {
        message: String,
    },
}

/// Where a power cut strikes, within its step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cut {
    /// At the step's `op`-th mutating flash operation (0-based), before, during or after it.
    AtOp { op: u64, when: CutWhen },
    /// When this fraction of the bundle has been sent (0.0 to 1.0 exclusive).
    AtFraction(f64),
    /// At the first flash operation of a named phase of the step.
    AtPhase(Phase),
    /// Before every flash operation of the step in turn (a push only): the engine replays the
    /// steps before it for each operation, cuts there, powers on and checks that the device runs
    /// a whole image with the files it was given; it ends when the step completes uncut. Boards
    /// never see it: the engine arms [`Cut::AtOp`] once per point.
    AtEveryOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutWhen {
    Before,
    During,
    After,
}

/// Named phases a cut can aim at: the application's own phase markers, so every board cuts at
/// the same step.
pub use ota_app::Phase;

/// A bundle: a file (resolved against the scenario file) or one the runner builds.
#[derive(Clone, Debug, PartialEq)]
pub enum BundleSource {
    File(PathBuf),
    Spec(BundleSpec),
}

/// A bundle the runner builds with `ota-bundle`: a simulated firmware image of `app_bytes`
/// (its header names the version and behaviour) and a LittleFS image holding `files`.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleSpec {
    /// Default "app".
    pub name: String,
    pub version: String,
    /// Default: "<version>" prefixed with "hil/".
    pub build_id: String,
    /// Default: the board's platform.
    pub platform: Option<String>,
    /// Default healthy.
    pub behaviour: Behaviour,
    /// Default 64 KiB.
    pub app_bytes: usize,
    /// Files of the fs image, in order. Default: `app.json` naming the version.
    pub files: Vec<(String, Vec<u8>)>,
    /// A deliberate defect, for bad-bundle scenarios.
    pub defect: Option<Defect>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Defect {
    /// `cs_sha1` of the app part is wrong.
    BadChecksum,
    /// The local-header CRC-32 of the app entry is wrong.
    BadCrc,
    /// The app entry says it is deflated.
    Compressed,
    /// The app entry is a streaming entry (sizes after the data).
    Streaming,
    /// Only this fraction of the bundle is sent, and the upload ends.
    Truncated(f64),
    /// The app is one byte larger than the slot.
    TooBig,
    /// Not a zip at all.
    NotAZip,
    /// The manifest is not the first entry.
    ManifestNotFirst,
}

/// What must hold now. Every field is optional; each given one is checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expect {
    /// The running firmware's version.
    pub version: Option<String>,
    pub active_slot: Option<u8>,
    /// `Some(None)`: no revert slot.
    pub revert_slot: Option<Option<u8>>,
    pub committed: Option<bool>,
    /// Files on the running firmware's filesystem: `Some(content)` or `None` for "absent".
    pub files: Vec<(String, Option<Vec<u8>>)>,
    /// The boot state and running version are what they were before the previous step.
    pub unchanged: bool,
    /// The device is a brick (for negative tests of the runner itself; a real scenario never
    /// expects this).
    pub bricked: Option<bool>,
    /// The shadow's reported state, checked first: the board waits (within the step's timeout)
    /// until the device reports a final code (not in progress) or one this accepts.
    pub reported: Option<ReportedExpect>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    pub scripts: Vec<Script>,
    /// Default 64.
    pub app_kib: usize,
    /// 1 or 2. Default 1.
    pub depth: u8,
    /// Random fault schedules to run after the sweeps. Default 0.
    pub random_schedules: u64,
    /// Steps per random schedule. Default 30.
    pub random_steps: usize,
}
