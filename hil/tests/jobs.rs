//! `hil run --jobs N`: trials on N boards at once give the same reports, in the same order, as
//! one board after the other.

use std::path::PathBuf;
use std::time::Duration;

use ota_hil::board::config::BoardConfig;
use ota_hil::board::{self, Board};
use ota_hil::engine;
use ota_hil::progress::Quiet;
use ota_hil::report::{json, junit};
use ota_hil::result::{Run, RunInfo, Trial};
use ota_hil::scenario::{self, Scenario};

fn scenarios() -> Vec<Scenario> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = scenario::collect(&[dir]).unwrap();
    files.iter().map(|f| scenario::load(f).unwrap_or_else(|e| panic!("{e}"))).collect()
}

/// The run's reports with wall-clock times zeroed: the one thing that may differ between runs.
fn reports(mut trials: Vec<Trial>) -> (String, String) {
    for trial in &mut trials {
        trial.duration = Duration::ZERO;
    }
    let run = Run { trials, seed: 7, duration: Duration::ZERO, log_dir: None, info: RunInfo::default() };
    (json::to_string(&run), junit::to_string(&run))
}

/// The sweeps' console lines give their wall time (`0.22 s`, `(2.53 s)`): `#.## s` instead.
fn without_wall_seconds(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        for (i, word) in words.iter().enumerate() {
            let number = word.trim_start_matches('(');
            let seconds = words.get(i + 1).is_some_and(|next| next.starts_with('s'))
                && number.contains('.')
                && number.parse::<f64>().is_ok();
            out.push_str(if seconds { "#.##" } else { word });
            out.push(if i + 1 < words.len() { ' ' } else { '\n' });
        }
    }
    out
}

#[test]
fn two_jobs_give_the_reports_of_one_in_the_same_order() {
    let scenarios = scenarios();
    let config = BoardConfig::default_sim();
    let open = |worker: usize| -> Box<dyn Board> { board::open(&config.for_worker(worker)) };
    let one = engine::run_trials(&scenarios, 1, 7, &open, &mut Quiet);
    let two = engine::run_trials(&scenarios, 2, 7, &open, &mut Quiet);
    let names: Vec<&str> = two.iter().map(|t| t.scenario.as_str()).collect();
    let expected: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, expected, "trials come back in scenario order");
    let (json_one, junit_one) = reports(one);
    let (json_two, junit_two) = reports(two);
    assert_eq!(json_one, json_two);
    let (junit_one, junit_two) = (without_wall_seconds(&junit_one), without_wall_seconds(&junit_two));
    let differ: Vec<(&str, &str)> =
        junit_one.lines().zip(junit_two.lines()).filter(|(a, b)| a != b).collect();
    assert!(differ.is_empty(), "{differ:#?}");
    assert_eq!(junit_one, junit_two);
}

/// Each worker of a parallel run gets a flash file of its own when the board file names one.
#[test]
fn every_worker_has_its_own_flash_file() {
    let text = "kind = \"virtual\"\n[virtual]\nflash_file = \"flash.bin\"\n";
    let config = ota_hil::board::config::parse(text, std::path::Path::new("boards/v.toml")).unwrap();
    let flash = |worker: usize| match config.for_worker(worker).backend {
        ota_hil::board::config::Backend::Virtual(v) => v.flash_file.unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(flash(0), PathBuf::from("boards/flash.bin"));
    assert_eq!(flash(1), PathBuf::from("boards/flash-2.bin"));
    assert_eq!(flash(2), PathBuf::from("boards/flash-3.bin"));
}
