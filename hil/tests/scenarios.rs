//! Every scenario in `scenarios/` passes on the simulator board, and the traces of the main ones
//! are pinned: a change in what the device does shows up as a snapshot diff.

use std::path::PathBuf;

use ota_hil::board::config::BoardConfig;
use ota_hil::board::{self};
use ota_hil::engine;
use ota_hil::progress::Quiet;
use ota_hil::report;
use ota_hil::result::{Outcome, Trial};
use ota_hil::scenario;

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn run(file: &str) -> Trial {
    let scenario = scenario::load(&scenarios_dir().join(file)).unwrap_or_else(|e| panic!("{e}"));
    let mut board = board::open(&BoardConfig::default_sim());
    engine::run_trial(&scenario, board.as_mut(), 1, &mut Quiet)
}

#[test]
fn every_scenario_passes_on_the_simulator() {
    let files = scenario::collect(&[scenarios_dir()]).unwrap();
    assert!(files.len() >= 11, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let trial = run(&name);
        // The shadow scenarios need a broker and a fleet (boards/virtual-mqtt.toml): the
        // simulator skips them, saying why.
        let needs_a_broker = matches!(&trial.outcome, Outcome::Skipped { reason }
            if reason.contains("no MQTT shadow") || reason.contains("the scenario needs 3"));
        assert!(
            trial.outcome == Outcome::Passed || needs_a_broker,
            "{name}: {:?}\n{}",
            trial.outcome,
            report::console_text(&trial)
        );
    }
}

#[test]
fn the_power_loss_trace() {
    insta::assert_snapshot!(report::console_text(&run("power_loss.toml")));
}

#[test]
fn the_missed_commit_trace() {
    insta::assert_snapshot!(report::console_text(&run("missed_commit.toml")));
}

#[test]
fn the_bad_bundles_trace() {
    insta::assert_snapshot!(report::console_text(&run("bad_bundles.toml")));
}
