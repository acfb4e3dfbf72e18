//! The engine on the simulator board, with scenarios built from the model directly.

use std::path::PathBuf;

use ota_hil::board::config::SimConfig;
use ota_hil::board::sim::SimBoard;
use ota_hil::board::{Board, BoardInfo, BoardResult, Capabilities, PushRequest, PushResult, Refusal, Status};
use ota_hil::engine;
use ota_hil::progress::Quiet;
use ota_hil::result::{EventKind, Lane, Outcome, Trial};
use ota_hil::scenario::model::*;

fn spec(version: &str) -> BundleSpec {
    BundleSpec {
        name: "app".into(),
        version: version.into(),
        build_id: format!("hil/{version}"),
        platform: None,
        behaviour: Behaviour::Healthy,
        app_bytes: 24 * 1024,
        files: vec![("app.json".into(), format!("{{\"version\": \"{version}\"}}").into_bytes())],
        defect: None,
    }
}

fn step(action: Action) -> Step {
    Step { line: 1, action, cut: None, timeout_ms: 60_000, devices: vec![0] }
}

fn push(bundle: BundleSpec, expect: PushExpect) -> Action {
    Action::Push(Push {
        bundle: BundleSource::Spec(bundle),
        transport: Transport::Rpc,
        commit_timeout_s: 300,
        ignore_same_version: false,
        chunk_bytes: 512,
        expect,
    })
}

fn expect(version: &str, committed: bool) -> Action {
    Action::Expect(Expect { version: Some(version.into()), committed: Some(committed), ..Expect::default() })
}

const CONF: &[u8] = br#"{"device": {"id": "field-7"}}"#;

/// Provision v1, power on, write conf9.json.
fn base() -> Vec<Step> {
    vec![
        step(Action::Provision { bundle: BundleSource::Spec(spec("1.0.0")) }),
        step(Action::PowerOn),
        step(Action::WriteFile { name: "conf9.json".into(), content: CONF.to_vec() }),
    ]
}

fn scenario(steps: Vec<Step>) -> Scenario {
    Scenario {
        name: "test".into(),
        file: PathBuf::from("test.toml"),
        description: String::new(),
        devices: 1,
        steps,
    }
}

fn sim() -> SimBoard {
    SimBoard::new("sim", "esp32", SimConfig::default())
}

fn run(steps: Vec<Step>) -> Trial {
    engine::run_trial(&scenario(steps), &mut sim(), 1, &mut Quiet)
}

#[test]
fn an_update_runs_and_the_timeline_shows_its_writes() {
    let mut steps = base();
    steps.push(step(push(spec("2.0.0"), PushExpect::Applied)));
    steps.push(step(Action::Expect(Expect {
        version: Some("2.0.0".into()),
        active_slot: Some(1),
        revert_slot: Some(None),
        committed: Some(true),
        files: vec![
            ("conf9.json".into(), Some(CONF.to_vec())),
            ("app.json".into(), Some(br#"{"version": "2.0.0"}"#.to_vec())),
        ],
        ..Expect::default()
    })));
    let trial = run(steps);
    assert_eq!(trial.outcome, Outcome::Passed, "{:#?}", trial.console);
    let wrote = |lane| {
        trial
            .timeline
            .iter()
            .any(|e| matches!(e.kind, EventKind::Write { lane: l, .. } if l == lane) && e.step == 3)
    };
    assert!(wrote(Lane::App(1)) && wrote(Lane::Fs(1)) && wrote(Lane::BootState));
    assert!(!wrote(Lane::App(0)), "the running slot is never written by an update");
    assert!(
        trial
            .timeline
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Boot { slot: 1, reason } if reason == "Trial"))
    );
}

#[test]
fn a_cut_at_half_the_upload_leaves_v1_running() {
    let mut steps = base();
    let mut cut = step(push(spec("2.0.0"), PushExpect::PowerLost));
    cut.cut = Some(Cut::AtFraction(0.5));
    steps.push(cut);
    steps.push(step(Action::PowerOn));
    steps.push(step(Action::Expect(Expect {
        version: Some("1.0.0".into()),
        committed: Some(true),
        files: vec![("conf9.json".into(), Some(CONF.to_vec()))],
        ..Expect::default()
    })));
    let trial = run(steps);
    assert_eq!(trial.outcome, Outcome::Passed, "{:#?}", trial.console);
    assert!(
        trial
            .timeline
            .iter()
            .any(|e| matches!(&e.kind, EventKind::PowerCut { how, .. } if how.contains("50%"))),
        "{:#?}",
        trial.timeline
    );
}

#[test]
fn cuts_at_named_phases_land_where_they_say() {
    // Finalize: the record never lands, v1 stays. Merge: v2 was on trial, flag B is clear, so
    // the next boot reverts. Commit (the healthy firmware's own commit): same.
    for (phase, version) in [
        (Phase::Finalize, "1.0.0"),
        (Phase::Boot, "2.0.0"),
        (Phase::Merge, "1.0.0"),
        (Phase::Commit, "1.0.0"),
        (Phase::Write, "1.0.0"),
    ] {
        let mut steps = base();
        let mut cut = step(push(spec("2.0.0"), PushExpect::PowerLost));
        cut.cut = Some(Cut::AtPhase(phase));
        steps.push(cut);
        steps.push(step(Action::PowerOn));
        steps.push(step(expect(version, true)));
        let trial = run(steps);
        assert_eq!(trial.outcome, Outcome::Passed, "{phase:?}: {:#?}", trial.console);
    }
}

#[test]
fn a_phase_the_step_does_not_have_is_an_error_that_says_what_it_did() {
    let mut steps = base();
    let mut cut = step(Action::Wait { ms: 1000 });
    cut.cut = Some(Cut::AtPhase(Phase::Merge));
    steps.push(cut);
    let trial = run(steps);
    let Outcome::Error { message } = trial.outcome else { panic!("{:?}", trial.outcome) };
    assert_eq!(message, "step 4 (line 1): this step has no merge phase on the simulator (it did: nothing)");
}

#[test]
fn a_failed_expectation_names_every_mismatch() {
    let mut steps = base();
    steps.push(step(Action::Expect(Expect {
        version: Some("9.9.9".into()),
        active_slot: Some(1),
        files: vec![("conf9.json".into(), None)],
        ..Expect::default()
    })));
    let trial = run(steps);
    let Outcome::Failed { step, message, .. } = trial.outcome else { panic!("{:?}", trial.outcome) };
    assert_eq!(step, 3);
    insta::assert_snapshot!(message, @r#"version is "1.0.0", expected "9.9.9"; active slot is 0, expected 1; conf9.json exists, expected it absent"#);
}

#[test]
fn a_refusal_is_checked_against_its_text_and_unchanged_compares_with_before() {
    let mut bad = spec("2.0.0");
    bad.platform = Some("esp8266".into());
    let mut steps = base();
    steps.push(step(push(bad, PushExpect::Refused { message: "Wrong platform".into() })));
    steps.push(step(Action::Expect(Expect {
        unchanged: true,
        version: Some("1.0.0".into()),
        ..Expect::default()
    })));
    let trial = run(steps);
    assert_eq!(trial.outcome, Outcome::Passed, "{:#?}", trial.console);

    let mut steps = base();
    steps.push(step(push(spec("2.0.0"), PushExpect::Applied)));
    steps.push(step(Action::Expect(Expect { unchanged: true, ..Expect::default() })));
    let Outcome::Failed { message, .. } = run(steps).outcome else {
        panic!("an applied update changes the device")
    };
    assert!(message.starts_with("the device changed: it was running 1.0.0 in slot 0"), "{message}");
}

#[test]
fn a_wrong_push_outcome_fails_with_what_the_device_said() {
    let mut steps = base();
    steps.push(step(push(spec("2.0.0"), PushExpect::UpToDate)));
    let Outcome::Failed { message, .. } = run(steps).outcome else { panic!() };
    assert!(message.starts_with("push of app 2.0.0 ("), "{message}");
    assert!(message.ends_with("over rpc: applied; expected up to date"), "{message}");
}

/// A board that delegates to the simulator but has fewer capabilities, to check that the
/// engine skips on capabilities and never on the backend kind.
struct Limited {
    inner: SimBoard,
    capabilities: Capabilities,
}

impl Board for Limited {
    fn info(&self) -> &BoardInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }
    fn start_trial(&mut self, seed: u64) -> BoardResult<()> {
        self.inner.start_trial(seed)
    }
    fn provision(&mut self, bundle: &[u8]) -> BoardResult<()> {
        self.inner.provision(bundle)
    }
    fn power_on(&mut self) -> BoardResult<()> {
        self.inner.power_on()
    }
    fn power_cut(&mut self) -> BoardResult<()> {
        self.inner.power_cut()
    }
    fn arm_cut(&mut self, cut: Cut) -> BoardResult<()> {
        self.inner.arm_cut(cut)
    }
    fn disarm_cut(&mut self) -> BoardResult<()> {
        self.inner.disarm_cut()
    }
    fn push(&mut self, request: &PushRequest<'_>) -> BoardResult<PushResult> {
        self.inner.push(request)
    }
    fn wait(&mut self, ms: u64) -> BoardResult<()> {
        self.inner.wait(ms)
    }
    fn commit(&mut self) -> BoardResult<Result<(), Refusal>> {
        self.inner.commit()
    }
    fn revert(&mut self) -> BoardResult<Result<(), Refusal>> {
        self.inner.revert()
    }
    fn reboot(&mut self) -> BoardResult<()> {
        self.inner.reboot()
    }
    fn snapshot(
        &mut self,
        set_as_revert: bool,
        commit_timeout_s: Option<u32>,
    ) -> BoardResult<Result<u8, Refusal>> {
        self.inner.snapshot(set_as_revert, commit_timeout_s)
    }
    fn write_file(&mut self, name: &str, content: &[u8]) -> BoardResult<Result<(), Refusal>> {
        self.inner.write_file(name, content)
    }
    fn read_file(&mut self, name: &str) -> BoardResult<Result<Option<Vec<u8>>, Refusal>> {
        self.inner.read_file(name)
    }
    fn status(&mut self) -> BoardResult<Status> {
        self.inner.status()
    }
    fn device_ms(&self) -> u64 {
        self.inner.device_ms()
    }
    fn drain_events(&mut self) -> Vec<(u64, EventKind)> {
        self.inner.drain_events()
    }
    fn drain_console(&mut self) -> Vec<String> {
        self.inner.drain_console()
    }
}

#[test]
fn a_board_without_a_transport_or_a_cut_skips_with_the_reason() {
    let capabilities = Capabilities {
        transports: vec![Transport::Http],
        cut_at_op: true,
        cut_at_fraction: false,
        cut_at_phase: false,
        cut_at_every_op: false,
        sweep: false,
        virtual_time: false,
        no_power_cut: None,
    };
    let mut board = Limited { inner: sim(), capabilities };
    let mut steps = base();
    steps.push(step(push(spec("2.0.0"), PushExpect::Applied)));
    let trial = engine::run_trial(&scenario(steps), &mut board, 1, &mut Quiet);
    assert_eq!(trial.outcome, Outcome::Skipped { reason: "board sim has no rpc transport (line 1)".into() });
    let mut steps = base();
    let mut cut = step(Action::PowerOn);
    cut.cut = Some(Cut::AtPhase(Phase::Boot));
    steps.push(cut);
    let trial = engine::run_trial(&scenario(steps), &mut board, 1, &mut Quiet);
    assert_eq!(
        trial.outcome,
        Outcome::Skipped { reason: "board sim cannot cut the power at a named phase (line 1)".into() }
    );
}

#[test]
fn a_board_without_a_shadow_or_enough_devices_skips_with_the_reason() {
    let mut steps = base();
    steps.push(step(Action::Shadow(ShadowDesired::Url("http://127.0.0.1:9/fw.zip".into()))));
    let trial = engine::run_trial(&scenario(steps), &mut sim(), 1, &mut Quiet);
    assert_eq!(trial.outcome, Outcome::Skipped { reason: "board sim has no MQTT shadow (line 1)".into() });
    let reported =
        Expect { reported: Some(ReportedExpect { code: Some(0), message: None }), ..Expect::default() };
    let trial = engine::run_trial(&scenario(vec![step(Action::Expect(reported))]), &mut sim(), 1, &mut Quiet);
    assert_eq!(trial.outcome, Outcome::Skipped { reason: "board sim has no MQTT shadow (line 1)".into() });
    let fleet = Scenario { devices: 3, ..scenario(base()) };
    let trial = engine::run_trial(&fleet, &mut sim(), 1, &mut Quiet);
    assert_eq!(
        trial.outcome,
        Outcome::Skipped { reason: "board sim drives 1 device(s); the scenario needs 3".into() }
    );
}

#[test]
fn a_seed_gives_the_same_trial() {
    let steps = || {
        let mut steps = base();
        let mut cut = step(push(spec("2.0.0"), PushExpect::PowerLost));
        cut.cut = Some(Cut::AtOp { op: 9, when: CutWhen::During });
        steps.push(cut);
        steps.push(step(Action::PowerOn));
        steps
    };
    let (a, b) = (run(steps()), run(steps()));
    assert_eq!((a.timeline, a.console), (b.timeline, b.console));
}
