//! ota-shadow (§6.3 of the reference): the device watches `desired.ota.url` in its shadow and
//! updates itself from it. This is the behaviour without the network: the port hands in what the
//! broker delivered and carries out what comes back ([`ShadowOut`]).
//!
//! | when | what the application does |
//! |------|---------------------------|
//! | the shadow connects ([`App::shadow_connected`]) | reads `ota_state.json`: an update that landed is committed (`shadow.autocommit`) and reported with code 0, and the delta cleared; one that rolled back or was cut short is reported with a negative code |
//! | a delta or `get/accepted` arrives ([`App::shadow_document`]) | a new `ota.url` is saved to `ota_state.json`, reported (code 1) and pulled; the URL already saved does nothing; a malformed document is reported and starts nothing |
//! | the pull ends ([`App::shadow_pull_ended`], under the same lock as the update's end) | success: marked applied before the reboot; failure: reported, the saved URL dropped and the delta left uncleared, so the next connection retries |
//!
//! `ota_state.json` is `{"url": U, "from": "<version> <build id>", "applied": bool}`: `from`
//! names the firmware that started the update, so after a reboot the application tells an update
//! that landed (another firmware runs) from one that rolled back (the same firmware runs and the
//! update was applied). It lives on the filesystem, so the first-boot merge carries it into the
//! new image. A rolled-back URL stays saved: the same URL again does nothing, so a firmware that
//! never commits is not installed over and over; a new URL is needed.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use ota_proto::mqtt::{self, OtaReport, ShadowTopic};
use serde::{Deserialize, Serialize};

use crate::app::{App, Flash, RpcError};
use crate::service::PullRequest;

/// The file the shadow's state lives in (the name Mongoose OS uses).
pub const STATE_FILE: &str = "ota_state.json";
/// The commit timeout of a shadow update when `update.commit_timeout` is 0: the README's five
/// minutes, so that the image waits for the shadow to connect before it commits.
pub const COMMIT_TIMEOUT_DEFAULT_S: u32 = 300;

/// What the port carries out for the shadow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowOut {
    /// Publish `{"state": {"reported": {"ota": …}}}` on `…/shadow/update`.
    Report(OtaReport),
    /// The update the delta asked for is done: clear the delta.
    ClearDelta,
    /// Pull this bundle, then call [`App::shadow_pull_ended`] with how it went.
    Pull(PullRequest),
}

/// `ota_state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SavedState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    applied: bool,
}

impl<F: Flash> App<F> {
    fn shadow_state(&mut self) -> SavedState {
        let bytes = self.read_file(STATE_FILE).ok().flatten();
        bytes.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn shadow_save(&mut self, state: &SavedState) -> Result<(), RpcError> {
        let bytes = serde_json::to_vec(state).map_err(|e| RpcError::new(-1, e.to_string()))?;
        self.write_file(STATE_FILE, &bytes)
    }

    fn running_identity(&mut self) -> String {
        let (version, build_id) = self.version();
        format!("{version} {build_id}")
    }

    /// The shadow connected (at boot, or again after the broker went away).
    pub fn shadow_connected(&mut self, now_ms: u64) -> Vec<ShadowOut> {
        let config = self.config();
        if !config.shadow_ota_enable {
            return Vec::new();
        }
        let mut state = self.shadow_state();
        let Some(url) = state.url.clone() else { return Vec::new() };
        let running = self.running_identity();
        let report =
            |code: i64, message: String| ShadowOut::Report(OtaReport { url: url.clone(), code, message });
        if running != state.from {
            // Another firmware runs: the update landed.
            if self.is_committed() {
                return vec![
                    report(0, format!("Update committed: {}", self.version().0)),
                    ShadowOut::ClearDelta,
                ];
            }
            if !config.shadow_autocommit {
                return vec![report(
                    1,
                    "Update applied, waiting for commit (shadow.autocommit is off)".into(),
                )];
            }
            return match self.commit(now_ms) {
                Ok(()) => {
                    vec![report(0, format!("Update committed: {}", self.version().0)), ShadowOut::ClearDelta]
                }
                Err(e) => vec![report(-1, format!("commit failed: {}", e.message))],
            };
        }
        if state.applied {
            // The firmware that started the update runs again: the new one was not committed.
            let message =
                format!("rolled back: the update from {url} was not committed; {} runs", self.version().0);
            return vec![report(-1, message)];
        }
        // The update was cut short before it was applied (a power cut, a reset): try again.
        state.url = None;
        let _ = self.shadow_save(&state);
        vec![report(
            -1,
            "update interrupted before it was applied; the running firmware stays, retrying".into(),
        )]
    }

    /// A document on `…/update/delta` or `…/get/accepted`.
    pub fn shadow_document(&mut self, which: ShadowTopic, payload: &[u8], now_ms: u64) -> Vec<ShadowOut> {
        let _ = now_ms;
        let config = self.config();
        if !config.shadow_ota_enable {
            return Vec::new();
        }
        let url = match mqtt::desired_url(which, payload) {
            Ok(Some(url)) => url,
            Ok(None) => return Vec::new(),
            Err(e) => {
                let url = self.shadow_state().url.unwrap_or_default();
                return vec![ShadowOut::Report(OtaReport { url, code: -1, message: e.to_string() })];
            }
        };
        let saved = self.shadow_state();
        if saved.url.as_deref() == Some(url.as_str()) {
            return Vec::new();
        }
        let state = SavedState { url: Some(url.clone()), from: self.running_identity(), applied: false };
        if let Err(e) = self.shadow_save(&state) {
            let message = format!("cannot save {STATE_FILE}: {}; no update started", e.message);
            return vec![ShadowOut::Report(OtaReport { url, code: -1, message })];
        }
        let commit_timeout_s = match config.update_commit_timeout_s {
            0 => COMMIT_TIMEOUT_DEFAULT_S,
            s => s,
        };
        vec![
            ShadowOut::Report(OtaReport { url: url.clone(), code: 1, message: "Updating".into() }),
            ShadowOut::Pull(PullRequest { url, commit_timeout_s, ignore_same_version: true }),
        ]
    }

    /// The shadow's pull of `url` ended with Mongoose OS's status message or an error. The port
    /// calls it under the same lock as the update's end, before the reboot can run.
    pub fn shadow_pull_ended(
        &mut self,
        url: &str,
        outcome: Result<&str, RpcError>,
        now_ms: u64,
    ) -> Vec<ShadowOut> {
        let _ = now_ms;
        let mut state = self.shadow_state();
        let report =
            |code: i64, message: String| ShadowOut::Report(OtaReport { url: url.into(), code, message });
        match outcome {
            Ok(message) if message.contains("same as current") || message == "Not Modified" => {
                vec![report(0, format!("{message}: nothing to do")), ShadowOut::ClearDelta]
            }
            Ok(message) => {
                state.applied = true;
                match self.shadow_save(&state) {
                    Ok(()) => vec![report(1, message.into())],
                    Err(e) => vec![report(1, format!("{message} (cannot save {STATE_FILE}: {})", e.message))],
                }
            }
            Err(e) => {
                state.url = None;
                let _ = self.shadow_save(&state);
                let message = format!(
                    "{} (code {}); the running firmware stays, the delta is kept for a retry",
                    e.message, e.code
                );
                vec![report(-1, message)]
            }
        }
    }
}
