//! The ESP32-C3's slot selection under power cuts (`ota_sim::esp`): ESP-IDF's otadata, a model
//! of its second-stage boot loader and the application's early init, on the strict NOR model.
//!
//!     cargo run --release -p ota-sim --example otadata -- --app-kib 64 --script all
//!     cargo run --release -p ota-sim --example otadata -- --script revert --point 41:during
//!
//! Every mutating flash operation of an update, a commit, a revert, and an update to an image
//! that crashes or hangs at boot (each with the reboots that follow) is cut before, during and
//! after; the board is powered on again, the core must decide on the partition its plan names,
//! and the board must end running a verified image, the boot state's active one, which otadata
//! names; and so again after one more reset. Exit code: 0 when every point held, 1 when one failed (each printed with its replay
//! line), 2 on bad usage.

use std::process::ExitCode;
use std::time::Instant;

use ota_sim::esp::{self, Fixture, Script};
use ota_sim::flash::CutWhen;

const USAGE: &str = "usage: otadata [--app-kib N] [--script update|commit|revert|crash|hang|all] [--op-step N] [--seed N] [--point OP:WHEN]";

struct Args {
    app_kib: usize,
    scripts: Vec<Script>,
    op_step: u64,
    seed: u64,
    point: Option<(u64, CutWhen)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { app_kib: 64, scripts: Script::ALL.to_vec(), op_step: 1, seed: 7, point: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |s: String| s.parse::<u64>().map_err(|_| format!("not a number: {s}"));
        match flag.as_str() {
            "--app-kib" => args.app_kib = number(value()?)? as usize,
            "--op-step" => args.op_step = number(value()?)?.max(1),
            "--seed" => args.seed = number(value()?)?,
            "--script" => {
                let name = value()?;
                args.scripts = Script::parse(&name).ok_or_else(|| format!("unknown script {name}"))?;
            }
            "--point" => {
                let text = value()?;
                let (op, when) =
                    text.split_once(':').ok_or_else(|| format!("--point OP:WHEN, not {text}"))?;
                let when = match when {
                    "before" => CutWhen::Before,
                    "during" => CutWhen::During,
                    "after" => CutWhen::After,
                    _ => return Err(format!("WHEN is before, during or after, not {when}")),
                };
                args.point = Some((number(op.to_string())?, when));
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let app_bytes = args.app_kib * 1024;
    if let Some((at_op, when)) = args.point {
        let mut failed = false;
        for &script in &args.scripts {
            let fixture = Fixture::new(script, app_bytes);
            match esp::cut_point(&fixture, args.seed, at_op, when) {
                Ok(log) => {
                    println!("{script} cut {when} op {at_op}: ok\n  boots: {}", log.join("\n  boots: "))
                }
                Err((why, log)) => {
                    failed = true;
                    println!(
                        "{script} cut {when} op {at_op}: FAILED: {why}\n  boots: {}",
                        log.join("\n  boots: ")
                    );
                }
            }
        }
        return if failed { ExitCode::from(1) } else { ExitCode::SUCCESS };
    }
    let started = Instant::now();
    let report = esp::sweep(&args.scripts, app_bytes, args.op_step, args.seed);
    for (script, ops) in &report.ops {
        println!("otadata sweep: {script}: {ops} flash operations, each cut before, during and after");
    }
    for failure in &report.failures {
        println!("FAILED {failure}");
        println!(
            "  replay: cargo run --release -p ota-sim --example otadata -- --app-kib {} --seed {} --script {} --point {}:{}",
            args.app_kib, args.seed, failure.script, failure.at_op, failure.when
        );
    }
    println!(
        "otadata sweep: {} points, {} failures, {} KiB image, {:.1} s",
        report.points,
        report.failures.len(),
        args.app_kib,
        started.elapsed().as_secs_f64()
    );
    if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
