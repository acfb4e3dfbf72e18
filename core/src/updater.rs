//! The streaming updater: the layer-1 API of Mongoose OS (§2 of the reference) in Rust.
//!
//! [`Updater::begin`] reads the boot state; [`Updater::process`] takes the bundle in chunks of any
//! size; [`Updater::finish`] writes the new slot's image descriptor ([`crate::descriptor`]) and
//! the one boot-state record that makes the new slot active;
//! dropping the updater (or [`Updater::abort`]) abandons the update. Only the inactive slots are
//! written before `finish`, so until its record lands the running image and its state are
//! untouched, whatever fails and wherever the power is cut.
//!
//! | phase            | input it waits for                   | what it writes                    |
//! |------------------|--------------------------------------|-----------------------------------|
//! | manifest         | `manifest.json`, the first entry     | nothing (buffered, then checked)  |
//! | parts            | entries, in any order                | the inactive app and fs slots     |
//! | write finished   | nothing: the central directory came  | nothing                           |
//! | finish           |                                      | the new slot's descriptor, then one boot-state record |
//!
//! A part is matched to its entry by the manifest's `src`. The `app` part (by key `app` or `fw`,
//! `type = "app"`, or the device's own app part name) goes to the inactive app slot, the `fs` part
//! (key `fs` or `type = "fs"`) to the inactive fs slot; other parts are read, CRC-checked and
//! skipped. Each written part is erased one erase unit ahead of the data, programmed in
//! [`STAGE_MAX_BYTES`] pieces (write units that hold only erased bytes are left unprogrammed, so
//! a filesystem image's free space stays truly erased), read back, and checked against the
//! manifest's `cs_sha1` and `cs_sha256`, whichever are present; a written part must give at
//! least one. A part's size is the manifest's `size`, which must equal the local header's, or
//! the local header's when the manifest leaves it out. `manifest.json` is held whole in the work
//! buffer, so the buffer bounds it: give at least [`MANIFEST_MAX_BYTES`] (Mongoose OS's manifest
//! bound) to take every manifest a real device takes; a manifest that does not fit is refused
//! with its true size from the local header.

use embedded_storage::nor_flash::NorFlash;

use crate::descriptor;
use crate::flash::{self, Digests, FlashError, digest_region};
use crate::layout::{Layout, Region, Slot};
use crate::log::{self, AppendError, Located};
use crate::manifest::{Manifest, ManifestError, Part, PartName, Platform, Src};
use crate::state::{BootState, Descriptor, SlotInfo};
use crate::zip::{ZipError, ZipEvent, ZipReader};

/// The smallest work buffer [`Updater::begin`] accepts. The buffer also bounds the manifest.
pub const WORK_BUFFER_MIN_BYTES: usize = 1024;
/// Data is programmed in pieces of at most this many bytes (rounded down to the write size).
pub const STAGE_MAX_BYTES: usize = 4096;
/// The largest `manifest.json` a Mongoose OS device takes. A port gives the updater a work
/// buffer of at least this many bytes, so that every real bundle's manifest fits, and keeps its
/// programs to the size its flash driver wants with [`Updater::set_program_bytes_max`].
pub const MANIFEST_MAX_BYTES: usize = 5 * 1024;
const MANIFEST_NAME: &str = "manifest.json";

/// How the update is to run. The default commits on the first healthy boot and applies a bundle
/// even when it holds the running version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateOptions {
    /// Seconds the new image has to commit itself; 0 commits on its first healthy boot.
    pub commit_timeout_s: u32,
    /// End successfully, writing nothing, when the bundle's version and build id both equal the
    /// running image's.
    pub ignore_same_version: bool,
}

/// What the device is, for the manifest checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    /// A bundle's `platform` must equal this, ignoring case ("esp32", "host"). Mongoose OS
    /// matched a prefix, which let an `esp32c3` bundle onto an `esp32`; an exact match does not.
    pub arch: Platform,
    /// A part key that also names the app, besides `app` and `fw` (the real `ccm_host` bundles
    /// call it `host_fw`).
    pub app_part: Option<PartName>,
}

/// Where a part goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    App,
    Fs,
}

impl Role {
    fn region(self, layout: &Layout, slot: Slot) -> Region {
        match self {
            Role::App => layout.app(slot),
            Role::Fs => layout.fs(slot),
        }
    }
}

/// Where one role's part stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartState {
    /// The manifest lists no such part.
    Absent,
    Pending(Part),
    /// Written and verified, or already in place ("digest matches").
    Done {
        part: Part,
        digests: Digests,
        written: bool,
    },
}

/// The part being received now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    role: Role,
    part: Part,
    size_bytes: u32,
    /// Bytes of the part received so far (staged or programmed).
    received_bytes: u32,
    /// Bytes of the part programmed so far.
    programmed_bytes: u32,
    /// The part's region is erased up to this offset from its start.
    erased_bytes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Manifest,
    Parts,
    /// Receiving a part for which nothing is written: an unknown part, or one already in place.
    Skipping,
    Writing,
    WriteFinished,
    /// Same version: the rest of the stream is ignored, nothing is written.
    UpToDate,
    Failed(UpdateErrorKind),
    Done,
}

/// What [`Updater::process`] says after a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Send more data.
    NeedMore,
    /// The archive is complete: call [`Updater::finish`].
    WriteFinished,
    /// The bundle holds the running version; nothing will be written. Call [`Updater::finish`].
    UpToDate,
}

/// How an update ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new slot is active and on trial: reboot into it. "Update applied, finalizing"
    Applied { slot: Slot, state: Located },
    /// Same version as running: nothing written, no reboot. "Version is the same as current"
    UpToDate,
    /// Factory provisioning wrote slot 0 as committed.
    Provisioned { state: Located },
}

impl Outcome {
    /// The status message Mongoose OS gives for this outcome.
    pub fn message(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "Update applied, finalizing",
            Outcome::UpToDate => "Version is the same as current",
            Outcome::Provisioned { .. } => "Provisioned slot 0",
        }
    }
}

/// What went wrong. Mongoose OS's message comes first in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateErrorKind {
    NotProvisioned,
    NotCommitted {
        active: Slot,
    },
    WorkBufferTooSmall {
        len_bytes: u32,
    },
    /// A zip error, in the entry being read when it struck (if any).
    Zip {
        error: ZipError,
        entry: Option<Src>,
    },
    Manifest(ManifestError),
    ManifestNotFirst,
    ManifestTooLarge {
        len_bytes: u32,
        max_bytes: u32,
    },
    WrongPlatform {
        bundle: Platform,
        device: Platform,
    },
    NoAppPart,
    DuplicateEntry {
        part: PartName,
    },
    SizeMismatch {
        part: PartName,
        manifest_bytes: u32,
        archive_bytes: u32,
    },
    TooBig {
        part: PartName,
        size_bytes: u32,
        slot_bytes: u32,
    },
    EmptyPart {
        part: PartName,
    },
    /// A part that would be written gives neither `cs_sha1` nor `cs_sha256`: nothing could
    /// check what lands in the slot.
    NoDigest {
        part: PartName,
    },
    DigestMismatch {
        part: PartName,
        algorithm: &'static str,
        expected: [u8; 4],
        found: [u8; 4],
    },
    MissingPart {
        part: PartName,
        src: Src,
    },
    /// `finish` came before the central directory.
    Incomplete,
    Aborted,
    Flash(FlashError),
    StateWrite(AppendError),
}

/// An update error: what was wrong, and what stays unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateError {
    pub kind: UpdateErrorKind,
    /// The slot that stays active, or `None` for a device that has no boot state.
    pub running: Option<Slot>,
}

struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl core::fmt::Display for UpdateErrorKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use UpdateErrorKind::*;
        match self {
            NotProvisioned => f.write_str("OTA is not supported: no boot state (device not provisioned)"),
            NotCommitted { active } => {
                write!(
                    f,
                    "Previous update is not committed ({active} is on trial); commit or revert it first"
                )
            }
            WorkBufferTooSmall { len_bytes } => {
                write!(f, "work buffer of {len_bytes} bytes is smaller than {WORK_BUFFER_MIN_BYTES}")
            }
            Zip { error, entry: Some(entry) } => write!(f, "{error} in entry {entry}"),
            Zip { error, entry: None } => write!(f, "{error}"),
            Manifest(e) => write!(f, "{e}"),
            ManifestNotFirst => f.write_str("Malformed archive: the first entry is not manifest.json"),
            ManifestTooLarge { len_bytes, max_bytes } => write!(
                f,
                "Failed to parse manifest: manifest.json is {len_bytes} bytes; the work buffer holds {max_bytes}"
            ),
            WrongPlatform { bundle, device } => {
                write!(f, "Wrong platform: bundle is for \"{bundle}\", device is \"{device}\"")
            }
            NoAppPart => f.write_str("Incomplete update package: the manifest has no app part"),
            DuplicateEntry { part } => write!(f, "Malformed archive: part {part} appears twice"),
            SizeMismatch { part, manifest_bytes, archive_bytes } => write!(
                f,
                "Size mismatch in part {part}: manifest says {manifest_bytes} bytes, archive holds {archive_bytes}"
            ),
            TooBig { part, size_bytes, slot_bytes } => {
                write!(f, "Image too big: part {part} is {size_bytes} bytes, the slot holds {slot_bytes}")
            }
            EmptyPart { part } => write!(f, "Malformed archive: part {part} is empty"),
            NoDigest { part } => {
                write!(f, "Invalid checksum format: part {part} gives neither cs_sha1 nor cs_sha256")
            }
            DigestMismatch { part, algorithm, expected, found } => write!(
                f,
                "Digest mismatch: {algorithm} of part {part} (expected {}…, found {}…)",
                Hex(expected),
                Hex(found)
            ),
            MissingPart { part, src } => {
                write!(f, "Incomplete update package: part {part} ({src}) is not in the archive")
            }
            Incomplete => f.write_str("Update aborted: the archive ended before its central directory"),
            Aborted => f.write_str("Update aborted"),
            Flash(e) => write!(f, "{e}"),
            StateWrite(e) => write!(f, "Failed to set boot config: {e}"),
        }
    }
}

impl core::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.running {
            Some(slot) => {
                write!(f, "{}; {} not marked bootable, {slot} stays active", self.kind, slot.other())
            }
            None => write!(f, "{}; nothing marked bootable", self.kind),
        }
    }
}

/// A streaming update in progress. It holds no flash: pass the same flash to every call. Its
/// work buffer `B` is anything that lends a byte slice: `&mut [u8]` (a stack or static buffer),
/// or an owned buffer where the update must outlive the caller's frame (a session kept between
/// RPC calls). With an owned buffer it clones: a simulator saves an update in progress with its
/// flash and resumes it from there.
#[derive(Clone)]
pub struct Updater<B: AsMut<[u8]>> {
    layout: Layout,
    device: Device,
    options: UpdateOptions,
    /// The boot state at `begin`; `None` when provisioning a blank device.
    current: Option<Located>,
    /// The slot the firmware runs from; the state is taken as it sees it.
    running: Slot,
    target: Slot,
    provisioning: bool,
    phase: Phase,
    zip: ZipReader,
    manifest: Option<Manifest>,
    app: PartState,
    fs: PartState,
    part: Option<Current>,
    /// Manifest bytes, then staged part data, then read-back pieces.
    buf: B,
    /// Bytes of `buf` in use: the manifest so far, or staged part data.
    buffered: usize,
    /// The most one program writes ([`Updater::set_program_bytes_max`]).
    program_bytes_max: usize,
    /// The entry being read, for error messages.
    entry: Option<Src>,
}

impl<B: AsMut<[u8]>> Updater<B> {
    /// Starts an update of the slot that is not `running` (the slot the boot loader booted,
    /// which can differ from the recorded active slot when its state write failed). The state is
    /// taken as the running image sees it ([`BootState::seen_from`]): an image recorded but never
    /// booted is overwritten, the running one never. Refused on a device with no boot state, and
    /// while the running image is on trial (its revert slot is the one that would be written).
    pub fn begin<F: NorFlash>(
        flash: &mut F,
        layout: &Layout,
        running: Slot,
        device: Device,
        options: UpdateOptions,
        buf: B,
    ) -> Result<Updater<B>, UpdateError> {
        let current = log::read(flash, layout).map_err(|e| fail(UpdateErrorKind::Flash(e), None))?;
        let Some(current) = current else {
            return Err(fail(UpdateErrorKind::NotProvisioned, None));
        };
        let state = current.record.state.seen_from(running);
        if !state.committed {
            return Err(fail(UpdateErrorKind::NotCommitted { active: state.active }, Some(state.active)));
        }
        Updater::new(layout, device, options, Some(current), running, running.other(), buf)
    }

    /// Starts a factory provisioning: the bundle goes to slot 0, and `finish` records it as the
    /// committed active image whatever the state said before. For blank devices and factory
    /// stations only: it may overwrite the running image.
    pub fn begin_provision<F: NorFlash>(
        flash: &mut F,
        layout: &Layout,
        device: Device,
        buf: B,
    ) -> Result<Updater<B>, UpdateError> {
        let current = log::read(flash, layout).map_err(|e| fail(UpdateErrorKind::Flash(e), None))?;
        let running = current.map_or(Slot::S0, |c| c.record.state.active);
        let mut updater =
            Updater::new(layout, device, UpdateOptions::default(), current, running, Slot::S0, buf)?;
        updater.provisioning = true;
        Ok(updater)
    }

    fn new(
        layout: &Layout,
        device: Device,
        options: UpdateOptions,
        current: Option<Located>,
        running: Slot,
        target: Slot,
        mut buf: B,
    ) -> Result<Updater<B>, UpdateError> {
        let len_bytes = buf.as_mut().len();
        if len_bytes < WORK_BUFFER_MIN_BYTES {
            let running = current.map(|_| running);
            return Err(fail(UpdateErrorKind::WorkBufferTooSmall { len_bytes: len_bytes as u32 }, running));
        }
        Ok(Updater {
            layout: *layout,
            device,
            options,
            current,
            running,
            target,
            provisioning: false,
            phase: Phase::Manifest,
            zip: ZipReader::new(),
            manifest: None,
            app: PartState::Absent,
            fs: PartState::Absent,
            part: None,
            buf,
            buffered: 0,
            program_bytes_max: STAGE_MAX_BYTES,
            entry: None,
        })
    }

    /// Sets the commit timeout the finishing record will carry. It is only used by
    /// [`Updater::finish`], so it may arrive after the bundle (a `commit_timeout` form field
    /// after the file part of `POST /update`).
    pub fn set_commit_timeout_s(&mut self, commit_timeout_s: u32) {
        self.options.commit_timeout_s = commit_timeout_s;
    }

    /// Sets whether a bundle of the running version is skipped. It may arrive after the bundle
    /// (an `ignore_same_version` form field after the file part): [`Updater::finish`] then
    /// reports [`Outcome::UpToDate`] and writes no record.
    pub fn set_ignore_same_version(&mut self, ignore_same_version: bool) {
        self.options.ignore_same_version = ignore_same_version;
    }

    /// Keeps each program to at most `bytes` (rounded down to the write size, at least one
    /// write unit; never more than [`STAGE_MAX_BYTES`]), whatever the work buffer's size: a
    /// port whose buffer is large enough for [`MANIFEST_MAX_BYTES`] still programs in the pieces
    /// its flash driver wants.
    pub fn set_program_bytes_max(&mut self, bytes: usize) {
        self.program_bytes_max = bytes.min(STAGE_MAX_BYTES);
    }

    /// The slot being written.
    pub fn target(&self) -> Slot {
        self.target
    }

    /// The manifest, once it has been read and checked.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Bytes of the bundle consumed so far.
    pub fn position(&self) -> u32 {
        self.zip.position()
    }

    fn running(&self) -> Option<Slot> {
        self.current.map(|_| self.running)
    }

    /// The boot state as the running image sees it.
    fn seen(&self) -> Option<BootState> {
        self.current.map(|c| c.record.state.seen_from(self.running))
    }

    fn fail(&mut self, kind: UpdateErrorKind) -> UpdateError {
        self.phase = Phase::Failed(kind);
        fail(kind, self.running())
    }

    /// Takes the next piece of the bundle, of any length. After an error every later call
    /// returns the same error.
    pub fn process<F: NorFlash>(&mut self, flash: &mut F, mut chunk: &[u8]) -> Result<Progress, UpdateError> {
        loop {
            match self.phase {
                Phase::Failed(kind) => return Err(fail(kind, self.running())),
                Phase::UpToDate => return Ok(Progress::UpToDate),
                Phase::WriteFinished | Phase::Done => return Ok(Progress::WriteFinished),
                _ => {}
            }
            if chunk.is_empty() {
                return Ok(Progress::NeedMore);
            }
            let (consumed, event) = match self.zip.feed(chunk) {
                Ok((n, event)) => (n, event.map(|e| Event::from_zip(e, chunk))),
                Err(error) => return Err(self.fail(UpdateErrorKind::Zip { error, entry: self.entry })),
            };
            let rest = &chunk[consumed..];
            if let Some(event) = event {
                let data = match event {
                    Event::Data(ref range) => &chunk[range.clone()],
                    _ => &[],
                };
                if let Err(kind) = self.on_event(flash, event, data) {
                    return Err(self.fail(kind));
                }
            }
            chunk = rest;
        }
    }

    fn on_event<F: NorFlash>(
        &mut self,
        flash: &mut F,
        event: Event,
        data: &[u8],
    ) -> Result<(), UpdateErrorKind> {
        // A header error strikes before its entry's name is known: only data errors (a CRC)
        // belong to a named entry.
        match event {
            Event::Start { name, .. } => self.entry = name,
            Event::End | Event::Finished => self.entry = None,
            Event::Data(_) => {}
        }
        match (self.phase, event) {
            (Phase::Manifest, Event::Start { name, .. })
                if name.map(|n| n == MANIFEST_NAME) != Some(true) =>
            {
                Err(UpdateErrorKind::ManifestNotFirst)
            }
            (Phase::Manifest, Event::Start { size_bytes, .. }) => self.check_manifest_size(size_bytes),
            (Phase::Manifest, Event::Data(_)) => self.buffer_manifest(data),
            (Phase::Manifest, Event::End) => self.on_manifest(),
            (Phase::Manifest, Event::Finished) => Err(UpdateErrorKind::ManifestNotFirst),
            (Phase::Parts, Event::Start { name: Some(name), size_bytes }) => {
                self.on_entry(flash, name, size_bytes)
            }
            (Phase::Parts, Event::Start { name: None, .. }) => {
                self.phase = Phase::Skipping;
                Ok(())
            }
            (Phase::Parts, Event::Finished) => self.on_archive_end(),
            (Phase::Skipping, Event::End) => {
                self.phase = Phase::Parts;
                Ok(())
            }
            (Phase::Writing, Event::Data(_)) => self.on_data(flash, data),
            (Phase::Writing, Event::End) => self.on_part_end(flash),
            // Skipped data, and events the zip reader never sends in these phases.
            _ => Ok(()),
        }
    }

    /// The whole manifest is held in the work buffer; its size is known from the local header,
    /// so a manifest that does not fit is refused before any of it is read, with its true size.
    fn check_manifest_size(&mut self, size_bytes: u32) -> Result<(), UpdateErrorKind> {
        let max_bytes = self.buf.as_mut().len() as u32;
        if size_bytes > max_bytes {
            return Err(UpdateErrorKind::ManifestTooLarge { len_bytes: size_bytes, max_bytes });
        }
        Ok(())
    }

    fn buffer_manifest(&mut self, data: &[u8]) -> Result<(), UpdateErrorKind> {
        let end = self.buffered + data.len();
        if end > self.buf.as_mut().len() {
            let max_bytes = self.buf.as_mut().len() as u32;
            return Err(UpdateErrorKind::ManifestTooLarge { len_bytes: end as u32, max_bytes });
        }
        self.buf.as_mut()[self.buffered..end].copy_from_slice(data);
        self.buffered = end;
        Ok(())
    }

    /// The manifest is complete (its CRC matched): parse and check it, and plan the parts.
    fn on_manifest(&mut self) -> Result<(), UpdateErrorKind> {
        let manifest =
            Manifest::parse(&self.buf.as_mut()[..self.buffered]).map_err(UpdateErrorKind::Manifest)?;
        self.buffered = 0;
        // Kept even when a check below refuses it: the caller can say what the bundle was.
        let manifest = self.manifest.insert(manifest);
        if !manifest.platform.as_str().eq_ignore_ascii_case(self.device.arch.as_str()) {
            return Err(UpdateErrorKind::WrongPlatform {
                bundle: manifest.platform,
                device: self.device.arch,
            });
        }
        for part in &manifest.parts {
            let role = role_of(part, &self.device);
            if role.is_some() && part.cs_sha1.is_none() && part.cs_sha256.is_none() {
                return Err(UpdateErrorKind::NoDigest { part: part.name });
            }
            match role {
                Some(Role::App) if self.app == PartState::Absent => self.app = PartState::Pending(*part),
                Some(Role::Fs) if self.fs == PartState::Absent => self.fs = PartState::Pending(*part),
                Some(_) => return Err(UpdateErrorKind::DuplicateEntry { part: part.name }),
                None => {}
            }
        }
        if self.app == PartState::Absent {
            return Err(UpdateErrorKind::NoAppPart);
        }
        let same = self.is_running_version();
        self.phase = if same { Phase::UpToDate } else { Phase::Parts };
        Ok(())
    }

    fn is_running_version(&self) -> bool {
        let Some(manifest) = &self.manifest else { return false };
        let (Some(version), Some(build_id), Some(seen)) = (manifest.version, manifest.build_id, self.seen())
        else {
            return false;
        };
        let running = seen.active_info();
        self.options.ignore_same_version
            && !self.provisioning
            && running.version == version
            && running.build_id == build_id
    }

    fn on_entry<F: NorFlash>(
        &mut self,
        flash: &mut F,
        name: Src,
        size_bytes: u32,
    ) -> Result<(), UpdateErrorKind> {
        let matches = |state: &PartState| match state {
            PartState::Pending(p) | PartState::Done { part: p, .. } => p.src == Some(name),
            PartState::Absent => false,
        };
        let role = if matches(&self.app) {
            Role::App
        } else if matches(&self.fs) {
            Role::Fs
        } else {
            self.phase = Phase::Skipping;
            return Ok(());
        };
        let PartState::Pending(part) = *self.state_of(role) else {
            let PartState::Done { part, .. } = *self.state_of(role) else { unreachable!() };
            return Err(UpdateErrorKind::DuplicateEntry { part: part.name });
        };
        self.check_size(role, &part, size_bytes)?;
        // From here on the part carries its size: the manifest's, checked above, or the local
        // header's when the manifest leaves it out (as Mongoose OS takes it).
        let part = Part { size_bytes: Some(size_bytes), ..part };
        if let Some(digests) = self.already_in_place(flash, role, &part, size_bytes)? {
            *self.state_of_mut(role) = PartState::Done { part, digests, written: false };
            self.phase = Phase::Skipping;
            return Ok(());
        }
        let current =
            Current { role, part, size_bytes, received_bytes: 0, programmed_bytes: 0, erased_bytes: 0 };
        self.part = Some(current);
        self.buffered = 0;
        self.phase = Phase::Writing;
        Ok(())
    }

    fn state_of(&self, role: Role) -> &PartState {
        match role {
            Role::App => &self.app,
            Role::Fs => &self.fs,
        }
    }

    fn state_of_mut(&mut self, role: Role) -> &mut PartState {
        match role {
            Role::App => &mut self.app,
            Role::Fs => &mut self.fs,
        }
    }

    fn check_size(&self, role: Role, part: &Part, size_bytes: u32) -> Result<(), UpdateErrorKind> {
        if let Some(manifest_bytes) = part.size_bytes
            && manifest_bytes != size_bytes
        {
            return Err(UpdateErrorKind::SizeMismatch {
                part: part.name,
                manifest_bytes,
                archive_bytes: size_bytes,
            });
        }
        if size_bytes == 0 {
            return Err(UpdateErrorKind::EmptyPart { part: part.name });
        }
        let slot_bytes = match role {
            Role::App => self.layout.app_capacity_bytes(self.target),
            Role::Fs => self.layout.fs(self.target).size_bytes,
        };
        if size_bytes > slot_bytes {
            return Err(UpdateErrorKind::TooBig { part: part.name, size_bytes, slot_bytes });
        }
        Ok(())
    }

    /// "Skip writing app (digest matches)": when the boot state says the target slot may already
    /// hold this image (same length), hash it, and skip the part if every manifest digest matches.
    fn already_in_place<F: NorFlash>(
        &mut self,
        flash: &mut F,
        role: Role,
        part: &Part,
        size_bytes: u32,
    ) -> Result<Option<Digests>, UpdateErrorKind> {
        let Some(current) = self.current else { return Ok(None) };
        let recorded = current.record.state.slot(self.target);
        let recorded_bytes = match role {
            Role::App => recorded.app_len_bytes,
            Role::Fs => recorded.fs_len_bytes,
        };
        if recorded_bytes != size_bytes || (part.cs_sha1.is_none() && part.cs_sha256.is_none()) {
            return Ok(None);
        }
        let region = role.region(&self.layout, self.target);
        let digests = digest_region(flash, region.offset, size_bytes, self.buf.as_mut())
            .map_err(UpdateErrorKind::Flash)?;
        Ok(digest_mismatch(part, &digests).is_none().then_some(digests))
    }

    fn stage_len(&mut self) -> usize {
        let write = self.layout.write_size_bytes as usize;
        let bytes = core::cmp::min(self.buf.as_mut().len(), self.program_bytes_max);
        (bytes / write * write).max(write)
    }

    fn on_data<F: NorFlash>(&mut self, flash: &mut F, mut data: &[u8]) -> Result<(), UpdateErrorKind> {
        let stage_len = self.stage_len();
        while !data.is_empty() {
            let n = core::cmp::min(stage_len - self.buffered, data.len());
            self.buf.as_mut()[self.buffered..self.buffered + n].copy_from_slice(&data[..n]);
            self.buffered += n;
            data = &data[n..];
            if self.buffered == stage_len {
                self.flush(flash)?;
            }
        }
        Ok(())
    }

    /// Programs the staged bytes, padded with erased bytes to the write size, erasing the erase
    /// units they reach first.
    fn flush<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), UpdateErrorKind> {
        let mut part = self.part.expect("a part is being written");
        let region = part.role.region(&self.layout, self.target);
        let write = self.layout.write_size_bytes as usize;
        let padded = self.buffered.div_ceil(write) * write;
        let erased_byte = self.layout.erased_byte;
        self.buf.as_mut()[self.buffered..padded].fill(erased_byte);
        let end = part.programmed_bytes + padded as u32;
        self.erase_until(flash, &mut part, region, end)?;
        let at = region.offset + part.programmed_bytes;
        let (write, erased) = (self.layout.write_size_bytes, self.layout.erased_byte);
        flash::program_data(flash, at, &self.buf.as_mut()[..padded], write, erased)
            .map_err(UpdateErrorKind::Flash)?;
        part.received_bytes += self.buffered as u32;
        part.programmed_bytes = end;
        self.buffered = 0;
        self.part = Some(part);
        Ok(())
    }

    /// Erases the part's region one erase unit at a time until `end` bytes of it are erased.
    fn erase_until<F: NorFlash>(
        &mut self,
        flash: &mut F,
        part: &mut Current,
        region: Region,
        end: u32,
    ) -> Result<(), UpdateErrorKind> {
        let unit = self.layout.erase_size_bytes;
        while part.erased_bytes < end {
            let from = region.offset + part.erased_bytes;
            flash::erase(flash, from, from + unit).map_err(UpdateErrorKind::Flash)?;
            part.erased_bytes += unit;
        }
        Ok(())
    }

    /// The part's data is complete and its CRC matched: program the rest, read it back, check it.
    fn on_part_end<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), UpdateErrorKind> {
        if self.buffered > 0 {
            self.flush(flash)?;
        }
        let mut part = self.part.take().expect("a part is being written");
        let region = part.role.region(&self.layout, self.target);
        if part.role == Role::Fs {
            // The filesystem owns its whole region: no stale blocks of the old one stay behind.
            self.erase_until(flash, &mut part, region, region.size_bytes)?;
        }
        let digests = digest_region(flash, region.offset, part.size_bytes, self.buf.as_mut())
            .map_err(UpdateErrorKind::Flash)?;
        if let Some(kind) = digest_mismatch(&part.part, &digests) {
            return Err(kind);
        }
        *self.state_of_mut(part.role) = PartState::Done { part: part.part, digests, written: true };
        self.phase = Phase::Parts;
        Ok(())
    }

    fn on_archive_end(&mut self) -> Result<(), UpdateErrorKind> {
        for state in [self.app, self.fs] {
            if let PartState::Pending(part) = state {
                let src = part.src.unwrap_or(Src::EMPTY);
                return Err(UpdateErrorKind::MissingPart { part: part.name, src });
            }
        }
        self.phase = Phase::WriteFinished;
        Ok(())
    }

    /// Ends the update. After the archive is complete this writes the boot-state record that
    /// makes the new slot active and uncommitted (both first-boot flags and merge-fs set); after
    /// [`Progress::UpToDate`] it writes nothing.
    pub fn finish<F: NorFlash>(mut self, flash: &mut F) -> Result<Outcome, UpdateError> {
        match self.phase {
            Phase::UpToDate => return Ok(Outcome::UpToDate),
            Phase::WriteFinished if self.is_running_version() => return Ok(Outcome::UpToDate),
            Phase::WriteFinished => {}
            Phase::Failed(kind) => return Err(fail(kind, self.running())),
            _ => return Err(self.fail(UpdateErrorKind::Incomplete)),
        }
        let next = self.next_state();
        let descriptor = Descriptor {
            generation: self.current.map_or(1, |c| c.record.seq.wrapping_add(1)),
            commit_timeout_s: next.commit_timeout_s,
            info: *next.slot(self.target),
        };
        descriptor::write(flash, &self.layout, self.target, &descriptor)
            .map_err(|e| self.fail(UpdateErrorKind::StateWrite(AppendError::Flash(e))))?;
        let located = log::append(flash, &self.layout, self.current.as_ref(), &next)
            .map_err(|e| self.fail(UpdateErrorKind::StateWrite(e)))?;
        self.phase = Phase::Done;
        if self.provisioning {
            Ok(Outcome::Provisioned { state: located })
        } else {
            Ok(Outcome::Applied { slot: self.target, state: located })
        }
    }

    fn next_state(&self) -> BootState {
        let PartState::Done { digests, part, .. } = self.app else {
            unreachable!("checked at the archive end")
        };
        let manifest = self.manifest.as_ref().expect("the manifest was read");
        let fs_len_bytes = match self.fs {
            PartState::Done { part, .. } => part.size_bytes.unwrap_or(0),
            _ => 0,
        };
        let info = SlotInfo {
            app_len_bytes: part.size_bytes.expect("a done part carries its archive size (on_entry)"),
            app_sha256: digests.sha256,
            fs_len_bytes,
            version: manifest.version.unwrap_or_default(),
            build_id: manifest.build_id.unwrap_or_default(),
        };
        match self.seen().filter(|_| !self.provisioning) {
            Some(running) => {
                let mut slots = running.slots;
                slots[self.target.index()] = info;
                BootState {
                    active: self.target,
                    revert: Some(running.active),
                    committed: false,
                    first_boot_a: true,
                    first_boot_b: true,
                    merge_fs: true,
                    commit_timeout_s: self.options.commit_timeout_s,
                    slots,
                }
            }
            None => BootState::provisioned(Slot::S0, info),
        }
    }

    /// Abandons the update. Nothing is marked bootable; the inactive slot holds a partial image
    /// that no record points at.
    pub fn abort(mut self) -> UpdateError {
        self.fail(UpdateErrorKind::Aborted)
    }
}

/// Where `device` puts a manifest part: the app (`type = "app"`, key `app` or `fw`, or the
/// device's own app part name), the filesystem (`type = "fs"` or key `fs`), or nowhere (`None`:
/// read, CRC-checked and skipped, as Mongoose OS's "Not interesting" parts).
pub fn role_of(part: &Part, device: &Device) -> Option<Role> {
    let app_part = device.app_part.as_ref().map(|p| p.as_str());
    role_by_name(part.name.as_str(), part.kind.as_ref().map(|k| k.as_str()), app_part)
}

/// [`role_of`] on a part's key and `type`, for tools that read manifests their own way.
pub fn role_by_name(name: &str, kind: Option<&str>, app_part: Option<&str>) -> Option<Role> {
    if kind == Some("app") || name == "app" || name == "fw" || app_part == Some(name) {
        Some(Role::App)
    } else if kind == Some("fs") || name == "fs" {
        Some(Role::Fs)
    } else {
        None
    }
}

fn fail(kind: UpdateErrorKind, running: Option<Slot>) -> UpdateError {
    UpdateError { kind, running }
}

/// The first manifest digest that `digests` does not match.
fn digest_mismatch(part: &Part, digests: &Digests) -> Option<UpdateErrorKind> {
    let prefix = |d: &[u8]| -> [u8; 4] { [d[0], d[1], d[2], d[3]] };
    if let Some(expected) = part.cs_sha1
        && expected != digests.sha1
    {
        let (expected, found) = (prefix(&expected), prefix(&digests.sha1));
        return Some(UpdateErrorKind::DigestMismatch {
            part: part.name,
            algorithm: "cs_sha1",
            expected,
            found,
        });
    }
    if let Some(expected) = part.cs_sha256
        && expected != digests.sha256
    {
        let (expected, found) = (prefix(&expected), prefix(&digests.sha256));
        return Some(UpdateErrorKind::DigestMismatch {
            part: part.name,
            algorithm: "cs_sha256",
            expected,
            found,
        });
    }
    None
}

/// A zip event with its data as a range of the chunk, so that the reader's borrow ends here.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    /// `name` is `None` when it cannot be a part's `src` (it holds a NUL): such an entry is
    /// skipped, or refused where the manifest is due.
    Start {
        name: Option<Src>,
        size_bytes: u32,
    },
    Data(core::ops::Range<usize>),
    End,
    Finished,
}

impl Event {
    fn from_zip(event: ZipEvent<'_>, chunk: &[u8]) -> Event {
        match event {
            ZipEvent::EntryStart { name, size_bytes, .. } => {
                Event::Start { name: Src::new(name), size_bytes }
            }
            ZipEvent::Data(data) => {
                let start = data.as_ptr() as usize - chunk.as_ptr() as usize;
                Event::Data(start..start + data.len())
            }
            ZipEvent::EntryEnd => Event::End,
            ZipEvent::End => Event::Finished,
        }
    }
}
