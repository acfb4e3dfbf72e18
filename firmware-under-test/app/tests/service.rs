//! The device application and its RPC services on a RAM flash: the OTA.* methods of §5 end to
//! end, through reboots.

use base64::Engine as _;
use ota_app::app::{self, App, Settings, Start, Tick};
use ota_app::image::{Behaviour, Image};
use ota_app::service::{self, PullRequest, Reply};
use ota_app::{Event, Stamped};
use ota_bundle::Bundle;
use ota_core::flash::RamFlash;
use ota_core::layout::Region;
use ota_core::layout::{Layout, Slot};
use ota_core::updater::Updater;
use serde_json::{Value, json};

type Flash<'a> = RamFlash<'a, 4, 4096>;

const APP_SLOT_BYTES: u32 = 128 * 1024;
const FS_SLOT_BYTES: u32 = 64 * 1024;
const FLASH_BYTES: usize = (2 * 4096 + 2 * APP_SLOT_BYTES + 2 * FS_SLOT_BYTES) as usize;

/// Two boot-state areas, two app slots, two fs slots, as on the simulator.
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

/// Boots `flash`, and the events the boot produced.
fn start(flash: Flash<'_>, now_ms: u64) -> (Start<Flash<'_>>, Vec<Event>) {
    let mut events = Vec::new();
    let start = app::start(flash, layout(), settings(), now_ms, &mut events);
    (start, events.into_iter().map(|s: Stamped| s.event).collect())
}

fn settings() -> Settings {
    Settings { platform: "host".into(), ..Settings::default() }
}

fn bundle(version: &str, app: Vec<u8>) -> Vec<u8> {
    let fs = ota_lfs::build_image(64 * 1024, 4096, &[("app.json", version.as_bytes())]);
    Bundle::new("fw", "host").version(version).build_id(&format!("b-{version}")).app(app).fs(fs).build()
}

/// A device provisioned with a headerless v1 (an ordinary application), booted.
fn device(mem: &mut [u8]) -> App<Flash<'_>> {
    let layout = layout();
    let mut flash = Flash::new(mem);
    let v1 = bundle("1.0.0", vec![0x11; 20_000]);
    let device = ota_core::updater::Device {
        arch: ota_core::manifest::Platform::new("host").unwrap(),
        app_part: None,
    };
    let mut updater = Updater::begin_provision(&mut flash, &layout, device, vec![0u8; 4096]).unwrap();
    updater.process(&mut flash, &v1).unwrap();
    updater.finish(&mut flash).unwrap();
    let _ = layout;
    running(start(flash, 0).0)
}

fn running<F>(start: Start<F>) -> App<F> {
    match start {
        Start::Running(app) => *app,
        Start::Reset { .. } => panic!("reset"),
        Start::Hung { slot, .. } => panic!("hung in {slot}"),
        Start::Bricked { why, .. } => panic!("bricked: {why}"),
    }
}

fn call<F: ota_app::Flash>(
    app: &mut App<F>,
    method: &str,
    params: Value,
    now_ms: u64,
) -> Result<Value, (i32, String)> {
    match service::dispatch(app, method, &params, now_ms, now_ms) {
        Reply::Result(v) => Ok(v),
        Reply::Error(e) => Err((e.code, e.message)),
        Reply::Pull(p) => panic!("unexpected pull {p:?}"),
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Pushes `zip` with OTA.Begin/Write/End in 512-byte writes, retrying every fifth write.
fn push<F: ota_app::Flash>(app: &mut App<F>, zip: &[u8], commit_timeout: u32) -> Value {
    call(app, "OTA.Begin", json!({"timeout": 600, "commit_timeout": commit_timeout, "size": zip.len()}), 0)
        .unwrap();
    for (i, chunk) in zip.chunks(512).enumerate() {
        let offset = i * 512;
        call(app, "OTA.Write", json!({"offset": offset, "data": b64(chunk)}), 0).unwrap();
        if i % 5 == 0 {
            // mos retries a write with the same offset: acknowledged, not applied twice.
            call(app, "OTA.Write", json!({"offset": offset, "data": b64(chunk)}), 0).unwrap();
        }
    }
    call(app, "OTA.End", Value::Null, 0).unwrap()
}

fn reboot<'a>(mut app: App<Flash<'a>>, now_ms: u64) -> App<Flash<'a>> {
    assert_eq!(app.tick(now_ms), Tick::Reboot { why: "scheduled reboot".into() });
    running(start(app.into_flash(), now_ms).0)
}

#[test]
fn an_update_over_rpc_reboots_into_an_uncommitted_image_that_commits_on_request() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    assert_eq!(call(&mut app, "Sys.GetInfo", Value::Null, 0).unwrap()["fw_version"], "1.0.0");
    call(
        &mut app,
        "FS.Put",
        json!({"filename": "conf9.json", "data": b64(br#"{"device": {"id": "site-7"}}"#)}),
        0,
    )
    .unwrap();
    let end = push(&mut app, &bundle("2.0.0", vec![0x22; 30_000]), 300);
    assert_eq!(end, json!({"state": 3, "msg": "Update applied, finalizing"}));
    assert_eq!(app.tick(99), Tick::Nothing, "the reply goes out before the reboot");
    let mut app = reboot(app, 100);
    assert_eq!(app.slot(), Slot::S1);
    let info = call(&mut app, "Sys.GetInfo", Value::Null, 100).unwrap();
    assert_eq!(
        (info["fw_version"].clone(), info["id"].clone()),
        (json!("2.0.0"), json!("site-7")),
        "conf9.json was merged"
    );
    let state = call(&mut app, "OTA.GetBootState", Value::Null, 100).unwrap();
    assert_eq!(
        state,
        json!({"active_slot": 1, "is_committed": false, "revert_slot": 0, "commit_timeout": 300})
    );
    call(&mut app, "OTA.Commit", Value::Null, 200).unwrap();
    assert_eq!(call(&mut app, "OTA.Commit", Value::Null, 200).unwrap_err().0, -1, "already committed");
    assert_eq!(app.tick(400_000), Tick::Nothing, "a committed image is never reverted");
}

#[test]
fn a_missed_commit_reverts_at_the_deadline() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    push(&mut app, &bundle("2.0.0", vec![0x22; 30_000]), 30);
    let mut app = reboot(app, 100);
    assert_eq!(app.next_due_ms(), Some(30_100));
    assert_eq!(app.tick(30_099), Tick::Nothing);
    assert_eq!(app.tick(30_100), Tick::Reboot { why: "commit timer expired; reverted".into() });
    let mut app = running(start(app.into_flash(), 30_100).0);
    assert_eq!((app.slot(), app.version().0), (Slot::S0, "1.0.0".to_string()));
}

#[test]
fn a_simulated_healthy_image_commits_itself_and_a_crashing_one_reverts() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    push(&mut app, &bundle("2.0.0", Image::new("2.0.0", 30_000).bytes()), 300);
    let mut app = reboot(app, 100);
    assert!(app.is_committed());
    push(
        &mut app,
        &bundle("3.0.0", Image::new("3.0.0", 30_000).behaviour(Behaviour::CrashesAtBoot).bytes()),
        300,
    );
    app.tick(0);
    let flash = app.into_flash();
    let (Start::Reset { flash }, events) = start(flash, 0) else { panic!("a crash at boot resets") };
    assert_eq!(events.last(), Some(&Event::Crashed));
    let mut app = running(start(flash, 0).0);
    assert_eq!((app.slot(), app.version().0), (Slot::S1, "2.0.0".to_string()));
}

#[test]
fn bad_requests_change_nothing() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let before = call(&mut app, "OTA.GetBootState", Value::Null, 0).unwrap();
    assert_eq!(
        call(&mut app, "Foo.Bar", Value::Null, 0).unwrap_err(),
        (404, "No handler for Foo.Bar".into())
    );
    assert_eq!(
        call(&mut app, "OTA.Write", json!({"offset": 0, "data": "AAAA"}), 0).unwrap_err().1,
        "No update in progress; call OTA.Begin first"
    );
    assert_eq!(
        call(&mut app, "OTA.Begin", json!({"size": -1}), 0).unwrap_err().1,
        "Malformed request: size must be a non-negative integer"
    );
    call(&mut app, "OTA.Begin", json!({"size": 1000}), 0).unwrap();
    assert_eq!(
        call(&mut app, "OTA.Begin", Value::Null, 0).unwrap_err().1,
        "Another update is in progress (Rpc); call OTA.End to abort it"
    );
    let gap = call(&mut app, "OTA.Write", json!({"offset": 512, "data": b64(&[0; 16])}), 0).unwrap_err();
    assert_eq!(gap.1, "Write at offset 512 leaves a gap: 0 bytes received so far; nothing applied");
    let garbage =
        call(&mut app, "OTA.Write", json!({"offset": 0, "data": b64(b"<html>not a zip</html>")}), 0)
            .unwrap_err();
    assert!(garbage.1.starts_with("Malformed archive (invalid file header) at offset 0"), "{}", garbage.1);
    assert_eq!(call(&mut app, "OTA.Status", Value::Null, 0).unwrap()["state"], 2);
    assert_eq!(call(&mut app, "OTA.GetBootState", Value::Null, 0).unwrap(), before);
    assert_eq!(call(&mut app, "OTA.SetBootState", json!({}), 0).unwrap_err().0, -2);
    assert_eq!(call(&mut app, "OTA.Revert", Value::Null, 0).unwrap_err().0, -1);
}

#[test]
fn ota_update_asks_the_caller_to_pull() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let pull = service::dispatch(
        &mut app,
        "OTA.Update",
        &json!({"url": "http://127.0.0.1:1/fw.zip", "commit_timeout": 300}),
        0,
        0,
    );
    assert_eq!(
        pull,
        Reply::Pull(PullRequest {
            url: "http://127.0.0.1:1/fw.zip".into(),
            commit_timeout_s: 300,
            ignore_same_version: false
        })
    );
    let old_form = service::dispatch(
        &mut app,
        "OTA.Update",
        &json!({"section": "firmware", "blob_url": "http://h/fw.zip"}),
        0,
        0,
    );
    assert!(matches!(old_form, Reply::Pull(PullRequest { ref url, .. }) if url == "http://h/fw.zip"));
    assert!(matches!(service::dispatch(&mut app, "OTA.Update", &json!({}), 0, 0), Reply::Error(_)));
}

// ---- Regression tests, each named after the defect it pins ----

/// The user's configuration, written before the update.
const USER_CONF: &[u8] = br#"{"device": {"id": "site-7"}}"#;

fn write_conf<F: ota_app::Flash>(app: &mut App<F>) {
    call(app, "FS.Put", json!({"filename": "conf9.json", "data": b64(USER_CONF)}), 0).unwrap();
}

fn boot_state<F: ota_app::Flash>(app: &mut App<F>) -> Value {
    call(app, "OTA.GetBootState", Value::Null, 0).unwrap()
}

/// Boots until a firmware runs, at most three boots, as a port's boot loop does.
fn boot_until_running(mut flash: Flash<'_>, now_ms: u64) -> (App<Flash<'_>>, Vec<Event>) {
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (started, events) = start(flash, now_ms);
        seen.extend(events);
        match started {
            Start::Running(app) => return (*app, seen),
            Start::Reset { flash: f } => flash = f,
            Start::Hung { .. } => panic!("hung: {seen:?}"),
            Start::Bricked { why, .. } => panic!("bricked: {why}; {seen:?}"),
        }
    }
    panic!("no firmware ran in three boots: {seen:?}")
}

/// A push with `commit_timeout` 0 (`curl -F file=@fw.zip http://IP/update`, no timeout field)
/// was committed by the running 1.0.0 before it rebooted: 2.0.0 never had its trial boot, and
/// the first-boot merge never ran.
#[test]
fn commit_timeout_0_commits_only_after_the_new_images_first_healthy_boot() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    write_conf(&mut app);
    push(&mut app, &bundle("2.0.0", vec![0x22; 30_000]), 0);
    for now_ms in [0, 50, 99] {
        assert_eq!(app.tick(now_ms), Tick::Nothing);
        assert_eq!(boot_state(&mut app)["is_committed"], true, "the running 1.0.0 is committed");
        assert_eq!(boot_state(&mut app)["active_slot"], 0, "and it is what runs");
    }
    let (mut app, events) = boot_until_running(reboot_flash(app, 100), 100);
    assert!(
        events.contains(&Event::Boot { slot: 1, reason: ota_app::event::BootReason::Trial }),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::Merged { .. })), "{events:?}");
    assert_eq!(app.tick(100), Tick::Nothing);
    assert_eq!(
        boot_state(&mut app),
        json!({"active_slot": 1, "is_committed": true, "revert_slot": -1, "commit_timeout": 0}),
        "committed once it ran"
    );
    assert_eq!(app.read_file("conf9.json").unwrap().as_deref(), Some(USER_CONF));
}

/// The same push of a 2.0.0 that crashes at boot bricked the board ("8 boots in a row").
#[test]
fn commit_timeout_0_with_an_image_that_crashes_at_boot_rolls_back_instead_of_bricking() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    write_conf(&mut app);
    let crashing = Image::new("2.0.0", 30_000).behaviour(Behaviour::CrashesAtBoot).bytes();
    push(&mut app, &bundle("2.0.0", crashing), 0);
    assert_eq!(app.tick(50), Tick::Nothing);
    let (mut app, events) = boot_until_running(reboot_flash(app, 100), 100);
    assert!(events.contains(&Event::Crashed), "{events:?}");
    assert_eq!((app.slot(), app.version().0), (Slot::S0, "1.0.0".to_string()));
    assert_eq!(boot_state(&mut app)["is_committed"], true);
    assert_eq!(app.read_file("conf9.json").unwrap().as_deref(), Some(USER_CONF));
}

/// A bundle with no fs part, pushed with `commit_timeout` 0, left an unmountable filesystem.
#[test]
fn commit_timeout_0_and_a_bundle_without_an_fs_part_keeps_conf9_and_a_mountable_filesystem() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    write_conf(&mut app);
    let no_fs =
        Bundle::new("fw", "host").version("2.0.0").build_id("b-2.0.0").app(vec![0x22; 30_000]).build();
    push(&mut app, &no_fs, 0);
    assert_eq!(app.tick(50), Tick::Nothing, "the running 1.0.0's timer does not commit 2.0.0");
    let (mut app, _) = boot_until_running(reboot_flash(app, 100), 100);
    app.tick(100);
    assert_eq!((app.slot(), app.is_committed()), (Slot::S1, true));
    assert_eq!(app.read_file("conf9.json").unwrap().as_deref(), Some(USER_CONF));
    push(&mut app, &bundle("3.0.0", vec![0x33; 30_000]), 0);
    let (mut app, _) = boot_until_running(reboot_flash(app, 200), 200);
    assert_eq!(app.version().0, "3.0.0", "later updates still work");
}

/// `OTA.Commit` on the running 1.0.0 after an update was applied, before the reboot, committed
/// the recorded active slot: the new image, which had never run.
#[test]
fn ota_commit_before_the_reboot_never_commits_the_image_that_has_not_run() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    push(&mut app, &bundle("2.0.0", vec![0x22; 30_000]), 300);
    let refused = call(&mut app, "OTA.Commit", Value::Null, 50).unwrap_err();
    assert_eq!(
        refused.1,
        "the running slot 0 is not the active slot 1 (its image has not run yet); nothing committed"
    );
    let (mut app, events) = boot_until_running(reboot_flash(app, 100), 100);
    assert!(
        events.contains(&Event::Boot { slot: 1, reason: ota_app::event::BootReason::Trial }),
        "{events:?}"
    );
    assert_eq!(boot_state(&mut app)["is_committed"], false, "2.0.0 is on its trial");
}

/// `Sys.Reboot {"delay_ms": 18446744073709551615}` overflowed and killed the serial thread.
#[test]
fn sys_reboot_with_a_delay_that_overflows_is_refused_naming_the_bound() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let refused = call(&mut app, "Sys.Reboot", json!({"delay_ms": u64::MAX}), 1_000).unwrap_err();
    assert_eq!(refused.1, "delay_ms must be at most 604800000 (one week); no reboot scheduled");
    assert_eq!(app.next_due_ms(), None, "nothing was scheduled");
    call(&mut app, "Sys.Reboot", json!({"delay_ms": 604_800_000u64}), u64::MAX - 10).unwrap();
    assert_eq!(app.next_due_ms(), Some(u64::MAX), "time saturates");
}

/// `OTA.Begin {"timeout": 18446744073709551}` overflowed seconds to milliseconds and killed the
/// timer thread.
#[test]
fn ota_begin_with_a_timeout_that_overflows_is_refused_naming_the_bound() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let refused = call(&mut app, "OTA.Begin", json!({"timeout": 18_446_744_073_709_551u64}), 0).unwrap_err();
    assert_eq!(refused.1, "Malformed request: timeout must be at most 604800 s");
    assert_eq!(call(&mut app, "OTA.Status", Value::Null, 0).unwrap()["state"], 0, "no session opened");
}

/// `"update": {"interval": 18446744073709551615}` in conf9.json killed the timer thread at
/// every boot.
#[test]
fn an_update_interval_that_overflows_turns_polling_off_and_says_why() {
    let config = ota_app::config::Config::from_user_file(
        Some(br#"{"update": {"url": "http://127.0.0.1:9/fw.zip", "interval": 18446744073709551615}}"#),
        &settings(),
    );
    assert_eq!(config.update_interval_s, 0, "polling is off");
    assert_eq!(
        config.problem.as_deref(),
        Some("update.interval 18446744073709551615 is over 604800 s (one week): polling is off")
    );
}

/// Client A's remaining POST bytes landed in the session client B opened with `OTA.Begin`
/// after an `OTA.End`.
#[test]
fn a_stale_upload_never_writes_into_another_session() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let zip = bundle("2.0.0", vec![0x22; 30_000]);
    let options = ota_core::updater::UpdateOptions::default();
    let a = app.update_begin(ota_app::Source::Push, options, None, None, 0).unwrap();
    app.update_data(a, &zip[..1000], 0).unwrap();
    let ended = call(&mut app, "OTA.End", Value::Null, 0).unwrap_err();
    assert_eq!(ended.1, "Update aborted: the Push update was stopped by OTA.End");
    call(&mut app, "OTA.Begin", json!({"size": zip.len()}), 0).unwrap();
    let stale = app.update_data(a, &zip[1000..2000], 0).unwrap_err();
    assert_eq!(
        stale.message,
        "this upload's update session has ended; another (Rpc) runs now; nothing written"
    );
    assert_eq!(app.update_received(), Some(0), "B's session took none of A's bytes");
    for (i, chunk) in zip.chunks(4096).enumerate() {
        call(&mut app, "OTA.Write", json!({"offset": i * 4096, "data": b64(chunk)}), 0).unwrap();
    }
    assert_eq!(call(&mut app, "OTA.End", Value::Null, 0).unwrap()["msg"], "Update applied, finalizing");
}

/// `ignore_same_version` after the file part of a push was dropped: a same-version bundle was
/// written and rebooted into.
#[test]
fn ignore_same_version_after_the_bundle_still_skips_the_running_version() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let same = bundle("1.0.0", vec![0x11; 20_000]);
    let options = ota_core::updater::UpdateOptions::default();
    let id = app.update_begin(ota_app::Source::Push, options, None, None, 0).unwrap();
    app.update_data(id, &same, 0).unwrap();
    app.update_set_ignore_same_version(id, true).unwrap();
    assert_eq!(app.update_end(id, 0).unwrap(), ota_app::Finished::UpToDate);
    assert_eq!(app.next_due_ms(), None, "no reboot follows");
}

/// A reboot the application asked for: the flash back, for the next start.
fn reboot_flash(mut app: App<Flash<'_>>, now_ms: u64) -> Flash<'_> {
    assert!(matches!(app.tick(now_ms), Tick::Reboot { .. }), "a reboot is due at {now_ms}");
    app.into_flash()
}

/// Transports without a console read the typed events through `Sys.Events`.
#[test]
fn sys_events_returns_the_typed_events_since_a_number() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let all = call(&mut app, "Sys.Events", Value::Null, 0).unwrap();
    let events = all["events"].as_array().unwrap();
    assert_eq!(events[1]["event"], "boot", "{all}");
    assert_eq!(events[1]["reason"]["kind"], "committed");
    let next = all["next"].as_u64().unwrap();
    call(&mut app, "OTA.Begin", json!({"size": 10}), 5).unwrap();
    let later = call(&mut app, "Sys.Events", json!({"since": next}), 5).unwrap();
    assert_eq!(
        later["events"],
        json!([{"ms": 5, "ops": 0, "event": "update_started", "source": "rpc", "commit_timeout_s": 0}])
    );
    assert_eq!(later["dropped"], 0);
}

/// Polling (§6.2) is the application's: with `update.url` and `update.interval` in conf9.json,
/// `tick` asks the port for a pull every interval, with `ignore_same_version`.
#[test]
fn polling_from_conf9_is_due_every_interval_and_asks_the_port_to_pull() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let conf = br#"{"update": {"url": "http://127.0.0.1:9/fw.zip", "interval": 60, "commit_timeout": 30}}"#;
    call(&mut app, "FS.Put", json!({"filename": "conf9.json", "data": b64(conf)}), 0).unwrap();
    assert_eq!(app.next_due_ms(), Some(60_000));
    assert_eq!(app.tick(59_999), Tick::Nothing);
    let pull = PullRequest {
        url: "http://127.0.0.1:9/fw.zip".into(),
        commit_timeout_s: 30,
        ignore_same_version: true,
    };
    assert_eq!(app.tick(60_000), Tick::Pull(pull.clone()));
    assert_eq!(app.next_due_ms(), Some(120_000));
    call(&mut app, "OTA.Begin", json!({}), 60_001).unwrap();
    assert_eq!(app.tick(120_000), Tick::Nothing, "no poll while an update runs");
    assert!(call(&mut app, "OTA.End", Value::Null, 120_001).is_err(), "an empty update ends refused");
    assert_eq!(app.tick(180_000), Tick::Pull(pull), "polling goes on once the session ended");
}

#[test]
fn start_booted_after_the_boot_loaders_decision_is_start() {
    // A board whose boot loader is its own binary decides once, then hands the outcome to the
    // application: the trial boot with its merge must go exactly as `start` does it.
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    call(&mut app, "FS.Put", json!({"filename": "conf9.json", "data": b64(br#"{"a": 1}"#)}), 0).unwrap();
    push(&mut app, &bundle("2.0.0", vec![0x22; 30_000]), 300);
    drop(app);
    let mut copy = mem.clone();

    let mut whole = Vec::new();
    let whole_start = app::start(Flash::with_contents(&mut mem), layout(), settings(), 100, &mut whole);

    let mut flash = Flash::with_contents(&mut copy);
    let mut buf = vec![0u8; 4096];
    let outcome = ota_core::boot::boot(&mut flash, &layout(), &mut buf).unwrap();
    let ota_core::boot::BootOutcome::Boot { slot, reason, first_boot, merge_from, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((slot, first_boot, merge_from), (Slot::S1, true, Some(Slot::S0)));
    let booted = app::Booted { slot, reason: reason.into(), first_boot, merge_from };
    let mut split = vec![Stamped { ms: 100, ops: 0, event: Event::Phase { phase: ota_app::Phase::Boot } }];
    let split_start = app::start_booted(flash, layout(), settings(), booted, 100, &mut split);

    assert_eq!(whole, split);
    let (mut whole_app, mut split_app) = (running(whole_start), running(split_start));
    assert_eq!(boot_state(&mut whole_app), boot_state(&mut split_app));
    drop((whole_app, split_app));
    assert!(mem == copy, "both flashes hold the same bytes");
}

/// An ESP32-C3 app image carries its image header, a segment header and ESP-IDF's app descriptor
/// before the bytes the link places, so `ota_app::image`'s header sits at 0x120 there. The
/// application read the header at offset 0 only, so such an image booted as an ordinary healthy
/// application whatever its header said: a hang or a crash at boot was never reproduced.
#[test]
fn a_header_after_esp_idfs_app_descriptor_still_sets_the_behaviour() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut app = device(&mut mem);
    let mut image = vec![0xe9_u8; 30_000];
    image[0x120..0x120 + 40]
        .copy_from_slice(&Image::new("2.0.0", 40).behaviour(Behaviour::NeverCommits).bytes());
    push(&mut app, &bundle("2.0.0", image), 300);
    let app = reboot(app, 100);
    assert_eq!((app.slot(), app.behaviour()), (Slot::S1, Behaviour::NeverCommits));
}
