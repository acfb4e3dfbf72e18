//! ota-shadow's behaviour (`ota_app::shadow`) on a RAM flash: the documents the broker would
//! deliver go in, the reports, pulls and delta clears come out, through reboots.

use ota_app::app::{self, App, Settings, Start, Tick};
use ota_app::shadow::{STATE_FILE, ShadowOut};
use ota_app::{RpcError, Source};
use ota_bundle::Bundle;
use ota_core::flash::RamFlash;
use ota_core::layout::{Layout, Region, Slot};
use ota_core::updater::{UpdateOptions, Updater};
use ota_proto::mqtt::{self, OtaReport, ShadowTopic};

type Flash<'a> = RamFlash<'a, 4, 4096>;

const APP_SLOT_BYTES: u32 = 128 * 1024;
const FS_SLOT_BYTES: u32 = 64 * 1024;
const FLASH_BYTES: usize = (2 * 4096 + 2 * APP_SLOT_BYTES + 2 * FS_SLOT_BYTES) as usize;
const URL: &str = "http://127.0.0.1:9/fw-2.zip";

fn layout() -> Layout {
    let (e, app, fs) = (4096, APP_SLOT_BYTES, FS_SLOT_BYTES);
    Layout::new(
        e,
        4,
        [Region::new(0, e), Region::new(e, e)],
        [Region::new(2 * e, app), Region::new(2 * e + app, app)],
        [Region::new(2 * e + 2 * app, fs), Region::new(2 * e + 2 * app + fs, fs)],
    )
    .unwrap()
}

fn bundle(version: &str) -> Vec<u8> {
    let fs = ota_lfs::build_image(64 * 1024, 4096, &[("app.json", version.as_bytes())]);
    let app = vec![version.as_bytes()[0]; 20_000];
    Bundle::new("fw", "host").version(version).build_id(&format!("b-{version}")).app(app).fs(fs).build()
}

fn boot(flash: Flash<'_>, now_ms: u64) -> App<Flash<'_>> {
    let settings = Settings { platform: "host".into(), ..Settings::default() };
    match app::start(flash, layout(), settings, now_ms, &mut Vec::new()) {
        Start::Running(app) => *app,
        _ => panic!("the firmware does not run"),
    }
}

/// A device running a headerless 1.0.0 (an application that waits for its commit), with
/// `conf9.json` as given.
fn device<'a>(mem: &'a mut [u8], conf9: &str) -> App<Flash<'a>> {
    let mut flash = Flash::new(mem);
    let arch = ota_core::manifest::Platform::new("host").unwrap();
    let device = ota_core::updater::Device { arch, app_part: None };
    let mut updater = Updater::begin_provision(&mut flash, &layout(), device, vec![0u8; 4096]).unwrap();
    updater.process(&mut flash, &bundle("1.0.0")).unwrap();
    updater.finish(&mut flash).unwrap();
    let mut app = boot(flash, 0);
    app.write_file("conf9.json", conf9.as_bytes()).unwrap();
    app
}

const AUTOCOMMIT: &str = r#"{"device": {"id": "d1"}, "shadow": {"autocommit": true}}"#;

fn delta(app: &mut App<Flash<'_>>, url: &str) -> Vec<ShadowOut> {
    app.shadow_document(ShadowTopic::UpdateDelta, mqtt::delta_doc(url).as_bytes(), 0)
}

fn report(url: &str, code: i64, message: &str) -> ShadowOut {
    ShadowOut::Report(OtaReport { url: url.into(), code, message: message.into() })
}

/// Carries out the pull the way a port does: the bundle streamed into a pull session, then the
/// shadow told how it ended.
fn pull(app: &mut App<Flash<'_>>, out: &[ShadowOut], zip: Option<&[u8]>) -> Vec<ShadowOut> {
    let Some(ShadowOut::Pull(request)) = out.last() else { panic!("no pull in {out:?}") };
    let options = UpdateOptions { commit_timeout_s: request.commit_timeout_s, ignore_same_version: true };
    let id = app.update_begin(Source::Pull, options, None, None, 0).unwrap();
    let outcome = match zip {
        Some(zip) => app.update_data(id, zip, 0).and_then(|()| app.update_end(id, 0)).map(|f| f.message()),
        None => {
            app.update_abort(id, "pull failed: connection refused", 0);
            Err(RpcError::new(-1, "connection refused"))
        }
    };
    app.shadow_pull_ended(&request.url, outcome, 0)
}

fn reboot<'a>(mut app: App<Flash<'a>>, now_ms: u64) -> App<Flash<'a>> {
    assert!(matches!(app.tick(now_ms), Tick::Reboot { .. }));
    boot(app.into_flash(), now_ms)
}

#[test]
fn a_new_desired_url_is_saved_reported_pulled_and_committed_after_the_reconnect() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem, AUTOCOMMIT);
    let out = delta(&mut app, URL);
    assert_eq!(out[0], report(URL, 1, "Updating"));
    assert!(matches!(&out[1], ShadowOut::Pull(p) if p.url == URL && p.commit_timeout_s == 300));
    let saved = app.read_file(STATE_FILE).unwrap().unwrap();
    assert!(String::from_utf8(saved).unwrap().contains(URL));
    assert_eq!(pull(&mut app, &out, Some(&bundle("2.0.0"))), [report(URL, 1, "Update applied, finalizing")]);
    let mut app = reboot(app, 100);
    assert_eq!((app.slot(), app.is_committed()), (Slot::S1, false));
    assert_eq!(app.shadow_connected(200), [report(URL, 0, "Update committed: 2.0.0"), ShadowOut::ClearDelta]);
    assert!(app.is_committed());
    // The retained delta may arrive again before it is cleared: the same URL does nothing.
    assert_eq!(delta(&mut app, URL), []);
}

#[test]
fn the_same_url_twice_does_nothing() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem, AUTOCOMMIT);
    let out = delta(&mut app, URL);
    assert_eq!(out.len(), 2);
    let get = format!(r#"{{"state": {{"delta": {{"ota": {{"url": "{URL}"}}}}}}}}"#);
    assert_eq!(app.shadow_document(ShadowTopic::GetAccepted, get.as_bytes(), 0), []);
    assert_eq!(delta(&mut app, URL), []);
}

#[test]
fn a_malformed_document_is_reported_and_starts_nothing() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem, AUTOCOMMIT);
    let out = app.shadow_document(ShadowTopic::UpdateDelta, br#"{"state": {"ota": {"url": 42}}}"#, 0);
    let [ShadowOut::Report(r)] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(r.code, -1);
    assert!(r.message.contains("the running firmware stays"), "{}", r.message);
    assert_eq!(app.read_file(STATE_FILE).unwrap(), None);
    assert_eq!(app.update_source(), None);
}

#[test]
fn a_failed_pull_is_reported_keeps_the_firmware_and_is_retried() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem, AUTOCOMMIT);
    let out = delta(&mut app, URL);
    let failed = pull(&mut app, &out, None);
    let [ShadowOut::Report(r)] = failed.as_slice() else { panic!("{failed:?}") };
    assert_eq!(r.code, -1);
    assert!(r.message.contains("the delta is kept for a retry"), "{}", r.message);
    assert_eq!((app.slot(), app.version().0), (Slot::S0, "1.0.0".to_string()));
    // The delta stays, so the next delivery of the same URL tries again.
    assert!(matches!(delta(&mut app, URL).last(), Some(ShadowOut::Pull(_))));
}

#[test]
fn a_refused_bundle_is_reported_and_keeps_the_firmware() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem, AUTOCOMMIT);
    let out = delta(&mut app, URL);
    let mut zip = bundle("2.0.0");
    zip.truncate(zip.len() / 2);
    zip.extend_from_slice(&[0u8; 64]);
    let Some(ShadowOut::Pull(request)) = out.last() else { panic!() };
    let options = UpdateOptions { commit_timeout_s: 300, ignore_same_version: true };
    let id = app.update_begin(Source::Pull, options, None, None, 0).unwrap();
    let outcome = app.update_data(id, &zip, 0).and_then(|()| app.update_end(id, 0)).map(|f| f.message());
    let ended = app.shadow_pull_ended(&request.url, outcome, 0);
    let [ShadowOut::Report(r)] = ended.as_slice() else { panic!("{ended:?}") };
    assert_eq!(r.code, -1, "{}", r.message);
    assert_eq!(app.tick(1_000), Tick::Nothing, "no reboot");
    assert_eq!((app.slot(), app.is_committed()), (Slot::S0, true));
}

#[test]
fn a_missed_commit_rolls_back_and_reports_so() {
    let mut mem = vec![0u8; FLASH_BYTES];
    // Without autocommit and without anyone calling OTA.Commit, the deadline passes.
    let mut app = device(&mut mem, r#"{"device": {"id": "d1"}, "update": {"commit_timeout": 5}}"#);
    let out = delta(&mut app, URL);
    pull(&mut app, &out, Some(&bundle("2.0.0")));
    let mut app = reboot(app, 100);
    assert_eq!(
        app.shadow_connected(200),
        [report(URL, 1, "Update applied, waiting for commit (shadow.autocommit is off)")]
    );
    let mut app = reboot(app, 100 + 5_000);
    assert_eq!((app.slot(), app.version().0), (Slot::S0, "1.0.0".to_string()));
    assert_eq!(
        app.shadow_connected(6_000),
        [report(URL, -1, &format!("rolled back: the update from {URL} was not committed; 1.0.0 runs"))]
    );
    // The delta stays, but the same URL is not installed again.
    assert_eq!(delta(&mut app, URL), []);
}

#[test]
fn ota_enable_false_turns_the_shadow_off() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem, r#"{"shadow": {"ota_enable": false}}"#);
    assert_eq!(delta(&mut app, URL), []);
    assert_eq!(app.shadow_connected(0), []);
    assert_eq!(app.read_file(STATE_FILE).unwrap(), None);
}
