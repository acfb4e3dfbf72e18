//! The MQTT channel's envelope rules and the shadow documents (`ota_proto::mqtt`).

use ota_proto::mqtt::{self, Dropped, OtaReport, ShadowDocError, ShadowTopic};
use ota_proto::rpc::frame::Id;

#[test]
fn a_device_subscribes_to_its_rpc_topic_and_everything_under_it() {
    assert_eq!(mqtt::rpc_sub_topics("dev1"), ["dev1/rpc".to_string(), "dev1/rpc/#".to_string()]);
    assert_eq!(mqtt::reply_topic(&mqtt::client_src("dev1", "hil-7")), "dev1/rpc-resp/hil-7/rpc");
}

#[test]
fn a_whole_frame_on_the_rpc_topic_is_a_request() {
    let req =
        mqtt::rpc_request("dev1", "dev1/rpc", br#"{"id":5,"src":"me","method":"Sys.GetInfo"}"#).unwrap();
    assert_eq!(
        (req.id, req.method.as_str(), req.src.as_deref()),
        (Some(Id::from(5u64)), "Sys.GetInfo", Some("me"))
    );
}

#[test]
fn the_topic_suffix_names_the_method_of_a_frame_without_one() {
    let req = mqtt::rpc_request("dev1", "dev1/rpc/OTA.Status", br#"{"id":"a","src":"me","params":{"x":1}}"#)
        .unwrap();
    assert_eq!((req.method.as_str(), req.params["x"].as_i64()), ("OTA.Status", Some(1)));
}

#[test]
fn a_request_with_an_id_but_no_src_is_dropped() {
    let dropped = mqtt::rpc_request("dev1", "dev1/rpc", br#"{"id":1,"method":"Sys.GetInfo"}"#);
    assert_eq!(dropped.unwrap_err(), Dropped::NoSrc);
    // A notification needs nowhere to reply, so it runs.
    assert!(mqtt::rpc_request("dev1", "dev1/rpc", br#"{"method":"Sys.GetInfo"}"#).is_ok());
}

#[test]
fn other_topics_and_other_dsts_are_dropped() {
    let frame = br#"{"id":1,"src":"me","method":"Sys.GetInfo"}"#;
    assert_eq!(mqtt::rpc_request("dev1", "dev2/rpc", frame).unwrap_err(), Dropped::NotOurTopic);
    assert_eq!(mqtt::rpc_request("dev1", "dev1/rpcx", frame).unwrap_err(), Dropped::NotOurTopic);
    let elsewhere = br#"{"id":1,"src":"me","dst":"dev2","method":"Sys.GetInfo"}"#;
    assert_eq!(mqtt::rpc_request("dev1", "dev1/rpc", elsewhere).unwrap_err(), Dropped::WrongDst);
    assert!(matches!(mqtt::rpc_request("dev1", "dev1/rpc", b"{no"), Err(Dropped::BadFrame(_))));
}

#[test]
fn shadow_topics_are_aws_iot_s() {
    assert_eq!(mqtt::shadow_topic("d", ShadowTopic::UpdateDelta), "$aws/things/d/shadow/update/delta");
    assert_eq!(mqtt::shadow_topic("d", ShadowTopic::GetAccepted), "$aws/things/d/shadow/get/accepted");
    assert_eq!(mqtt::parse_shadow_topic("d", "$aws/things/d/shadow/get"), Some(ShadowTopic::Get));
    assert_eq!(mqtt::parse_shadow_topic("d", "$aws/things/e/shadow/get"), None);
}

#[test]
fn the_desired_url_comes_from_a_delta_or_a_get_document() {
    let delta = mqtt::delta_doc("http://h/fw.zip");
    assert_eq!(
        mqtt::desired_url(ShadowTopic::UpdateDelta, delta.as_bytes()).unwrap().as_deref(),
        Some("http://h/fw.zip")
    );
    let get = br#"{"state":{"desired":{"ota":{"url":"u"}},"delta":{"ota":{"url":"u"}}}}"#;
    assert_eq!(mqtt::desired_url(ShadowTopic::GetAccepted, get).unwrap().as_deref(), Some("u"));
    let in_sync = br#"{"state":{"desired":{"ota":{"url":"u"}}}}"#;
    assert_eq!(mqtt::desired_url(ShadowTopic::GetAccepted, in_sync).unwrap(), None);
    // A cleared retained delta is an empty message.
    assert_eq!(mqtt::desired_url(ShadowTopic::UpdateDelta, b"").unwrap(), None);
}

#[test]
fn a_malformed_shadow_document_says_the_firmware_stays() {
    let texts: Vec<String> =
        [&b"{not json"[..], b"[1]", br#"{"version":3}"#, br#"{"state":{"ota":{"url":7}}}"#]
            .iter()
            .map(|doc| mqtt::desired_url(ShadowTopic::UpdateDelta, doc).unwrap_err().to_string())
            .collect();
    insta::assert_snapshot!(texts.join("\n"));
    assert!(matches!(
        mqtt::desired_url(ShadowTopic::UpdateDelta, br#"{"state":{"ota":{"url":7}}}"#),
        Err(ShadowDocError::UrlNotAString)
    ));
}

#[test]
fn a_reported_document_reads_back() {
    let report = OtaReport { url: "u".into(), code: -1, message: "pull failed".into() };
    assert_eq!(OtaReport::from_doc(report.to_doc().as_bytes()).unwrap(), report);
}
