//! The device application and its RPC services on a RAM flash: the OTA.* methods of §5 end to
//! end, through reboots.

use base64::Engine as _;
use ota_bundle::Bundle;
use ota_core::flash::RamFlash;
use ota_core::layout::{Layout, Slot};
use ota_core::updater::Updater;
use ota_firmware::app::{self, App, Settings, Start, Tick};
use ota_firmware::service::{self, PullRequest, Reply};
use ota_sim::image::{Behaviour, Image};
use serde_json::{Value, json};

type Flash<'a> = RamFlash<'a, 4, 4096>;

fn layout() -> Layout {
    ota_sim::device::Config { app_slot_bytes: 128 * 1024, fs_slot_bytes: 64 * 1024, ..Default::default() }
        .layout()
}

fn settings() -> Settings {
    Settings { platform: "host".into(), ..Settings::default() }
}

fn bundle(version: &str, app: Vec<u8>) -> Vec<u8> {
    let fs = ota_sim::lfs::build_image(64 * 1024, 4096, &[("app.json", version.as_bytes())]);
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
    running(app::start(flash, layout, settings(), 0))
}

fn running<F>(start: Start<F>) -> App<F> {
    match start {
        Start::Running(app) => *app,
        Start::Reset { why, .. } => panic!("reset: {why}"),
        Start::Hung { slot, .. } => panic!("hung in {slot}"),
        Start::Bricked { why, .. } => panic!("bricked: {why}"),
    }
}

fn call<F: embedded_storage::nor_flash::NorFlash>(
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
fn push<F: embedded_storage::nor_flash::NorFlash>(
    app: &mut App<F>,
    zip: &[u8],
    commit_timeout: u32,
) -> Value {
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
    running(app::start(app.into_flash(), layout(), settings(), now_ms))
}

#[test]
fn an_update_over_rpc_reboots_into_an_uncommitted_image_that_commits_on_request() {
    let mut mem = vec![
        0u8;
        ota_sim::device::Config { app_slot_bytes: 128 * 1024, fs_slot_bytes: 64 * 1024, ..Default::default() }
            .flash_bytes() as usize
    ];
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
    let mut mem = vec![
        0u8;
        ota_sim::device::Config { app_slot_bytes: 128 * 1024, fs_slot_bytes: 64 * 1024, ..Default::default() }
            .flash_bytes() as usize
    ];
    let mut app = device(&mut mem);
    push(&mut app, &bundle("2.0.0", vec![0x22; 30_000]), 30);
    let mut app = reboot(app, 100);
    assert_eq!(app.next_due_ms(), Some(30_100));
    assert_eq!(app.tick(30_099), Tick::Nothing);
    assert_eq!(app.tick(30_100), Tick::Reboot { why: "commit timer expired; reverted".into() });
    let mut app = running(app::start(app.into_flash(), layout(), settings(), 30_100));
    assert_eq!((app.slot(), app.version().0), (Slot::S0, "1.0.0".to_string()));
}

#[test]
fn a_simulated_healthy_image_commits_itself_and_a_crashing_one_reverts() {
    let mut mem = vec![
        0u8;
        ota_sim::device::Config { app_slot_bytes: 128 * 1024, fs_slot_bytes: 64 * 1024, ..Default::default() }
            .flash_bytes() as usize
    ];
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
    let Start::Reset { flash, why } = app::start(flash, layout(), settings(), 0) else {
        panic!("a crash at boot resets")
    };
    assert_eq!(why, "firmware crashed at boot");
    let mut app = running(app::start(flash, layout(), settings(), 0));
    assert_eq!((app.slot(), app.version().0), (Slot::S1, "2.0.0".to_string()));
}

#[test]
fn bad_requests_change_nothing() {
    let mut mem = vec![
        0u8;
        ota_sim::device::Config { app_slot_bytes: 128 * 1024, fs_slot_bytes: 64 * 1024, ..Default::default() }
            .flash_bytes() as usize
    ];
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
    let mut mem = vec![
        0u8;
        ota_sim::device::Config { app_slot_bytes: 128 * 1024, fs_slot_bytes: 64 * 1024, ..Default::default() }
            .flash_bytes() as usize
    ];
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
