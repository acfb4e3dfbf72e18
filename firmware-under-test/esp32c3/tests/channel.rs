//! The port's RPC channel on the host: the firmware's application on a RAM copy of the ESP32-C3
//! partition map, fed the bytes a serial port would carry.

use ota_app::app::{App, Settings, Start};
use ota_app::image::Image;
use ota_app::service::PullRequest;
use ota_bundle::Bundle;
use ota_core::flash::RamFlash;
use ota_core::updater::{Device, Updater};
use ota_port_esp32c3::channel::{self, Channel};
use ota_port_esp32c3::{LAYOUT, PLATFORM};

type Flash<'a> = RamFlash<'a, 4, 4096>;

fn running(mem: &mut [u8]) -> App<Flash<'_>> {
    let mut flash = Flash::new(mem);
    let zip = Bundle::new("fw", PLATFORM)
        .version("1.0.0")
        .build_id("b-1")
        .app(Image::new("1.0.0", 20_000).bytes())
        .build();
    let device = Device { arch: ota_core::manifest::Platform::new(PLATFORM).unwrap(), app_part: None };
    let mut updater = Updater::begin_provision(&mut flash, &LAYOUT, device, vec![0u8; 4096]).unwrap();
    updater.process(&mut flash, &zip).unwrap();
    updater.finish(&mut flash).unwrap();
    ota_lfs::format(&mut flash, LAYOUT.fs(ota_core::layout::Slot::S0)).unwrap();
    let settings = Settings { platform: PLATFORM.into(), ..Settings::default() };
    match ota_app::start(flash, LAYOUT, settings, 0, &mut Vec::new()) {
        Start::Running(app) => *app,
        _ => panic!("v1 does not run"),
    }
}

#[test]
fn a_request_in_pieces_is_answered_in_the_style_it_came_in() {
    let mut mem = vec![0u8; ota_app::partitions::FLASH_BYTES as usize];
    let mut app = running(&mut mem);
    let mut channel = Channel::default();
    let request = b"{\"id\":7,\"method\":\"OTA.Status\"}\n";
    assert!(channel.feed(&mut app, &request[..10], 5).is_empty());
    let reply = String::from_utf8(channel.feed(&mut app, &request[10..], 5)).unwrap();
    assert!(reply.starts_with("{\"id\":7,") && reply.ends_with("}\n"), "{reply}");
    assert!(reply.contains("\"result\"") && reply.contains("\"partition\":0"), "{reply}");
    // mos's handshake.
    assert!(!channel.feed(&mut app, b"\"\"\"\x04\"\"\"\n\n", 6).is_empty());
    let unknown =
        String::from_utf8(channel.feed(&mut app, b"{\"id\":8,\"method\":\"No.Such\"}\n", 7)).unwrap();
    assert!(unknown.contains("\"error\"") && unknown.contains("404"), "{unknown}");
}

#[test]
fn an_ota_update_by_url_runs_the_ports_pull_and_is_refused_without_a_network() {
    let mut mem = vec![0u8; ota_app::partitions::FLASH_BYTES as usize];
    let mut app = running(&mut mem);
    let frame = br#"{"id":9,"method":"OTA.Update","params":{"url":"http://10.0.0.2/fw.zip"}}"#;
    let refused = channel::frame_reply(&mut app, frame, 5, None).unwrap().unwrap();
    assert!(refused.contains("\"error\"") && refused.contains("no network"), "{refused}");
    let mut urls = Vec::new();
    let mut pull = |_: &mut App<Flash<'_>>, request: &PullRequest| {
        urls.push(request.url.clone());
        Ok("Not Modified")
    };
    let pulled = channel::frame_reply(&mut app, frame, 6, Some(&mut pull)).unwrap().unwrap();
    assert!(pulled.contains("\"result\"") && pulled.contains("Not Modified"), "{pulled}");
    assert_eq!(urls, ["http://10.0.0.2/fw.zip"]);
}
