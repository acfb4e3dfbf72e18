//! `hil sweep`: the simulator's exhaustive power-cut sweeps and random fault schedules, for the
//! built-in scripts or for a pair of bundles of your own, with the benchmark's figures.
//!
//! ```text
//! hil sweep --script all --app-kib 128            every cut of an update, a rollback, a snapshot
//! hil sweep --from v1.zip --to v2.zip --depth 2   your bundles: v1 provisioned, v2 pushed
//! hil sweep --script update --point 57:during     replay one point, with the device's trace
//! hil sweep --random 500 --steps 30               seeded random fault schedules
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use ota_sim::schedule;
use ota_sim::sweep::{self, Fixture, Point, Script};

use super::CommandError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What the swept part does: update, rollback, snapshot, or all.
    #[arg(long, default_value = "update")]
    pub script: String,
    /// App image sizes in KiB, comma-separated: one sweep each.
    #[arg(long, default_value = "128", value_delimiter = ',')]
    pub app_kib: Vec<usize>,
    /// The firmware's work buffer (how much one program writes), comma-separated.
    #[arg(long, default_value = "4096", value_delimiter = ',')]
    pub buf_bytes: Vec<usize>,
    /// 2 also cuts the power at every operation of each recovery.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub depth: u8,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads. Default: every core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Provision this bundle instead of the built-in v1 (with --to).
    #[arg(long, requires = "to", value_name = "BUNDLE")]
    pub from: Option<PathBuf>,
    /// Push this bundle instead of the built-in v2 (with --from).
    #[arg(long, requires = "from", value_name = "BUNDLE")]
    pub to: Option<PathBuf>,
    /// Replay one point (OP:WHEN or OP:WHEN+OP:WHEN) and print the device's trace.
    #[arg(long, value_name = "POINT")]
    pub point: Option<String>,
    /// Run this many random fault schedules (seeds from --seed) instead of sweeps.
    #[arg(long, value_name = "N")]
    pub random: Option<u64>,
    /// Steps per random schedule.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// One JSON line per sweep.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    if let Some(schedules) = args.random {
        return Ok(random(&args, schedules));
    }
    let scripts = match args.script.as_str() {
        "all" => Script::ALL.to_vec(),
        name => vec![Script::parse(name).ok_or_else(|| {
            CommandError::new(format!("unknown script {name:?}"))
                .help("use update, rollback, snapshot or all")
        })?],
    };
    if let Some(b) = args.buf_bytes.iter().find(|&&b| !(1024..=65536).contains(&b) || b % 4 != 0) {
        return Err(CommandError::new(format!(
            "--buf-bytes {b}: a work buffer is 1024 to 65536 bytes, a multiple of 4"
        )));
    }
    if args.app_kib.contains(&0) {
        return Err(CommandError::new("--app-kib must be at least 1"));
    }
    if let Some(point) = &args.point {
        let point: Point = point.parse().map_err(CommandError::new)?;
        return replay(&args, scripts[0], point);
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut failed = false;
    for &app_kib in &args.app_kib {
        for &buf_bytes in &args.buf_bytes {
            for &script in &scripts {
                let fixture = fixture(&args, script, app_kib, buf_bytes)?;
                let summary = sweep::sweep(&fixture, script, args.depth, threads);
                print_summary(&args, &summary, script, app_kib, buf_bytes, threads);
                failed |= !summary.failures.is_empty();
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn fixture(args: &Args, script: Script, app_kib: usize, buf_bytes: usize) -> Result<Fixture, CommandError> {
    let fixture = match (&args.from, &args.to) {
        (Some(from), Some(to)) => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| CommandError::new(format!("cannot read {}: {e}", p.display())))
            };
            Fixture::from_bundles(read(from)?, read(to)?, args.seed).map_err(|e| {
                CommandError::new(e)
                    .help("both bundles need an app part (type app, or a part named app or fw)")
            })?
        }
        _ => Fixture::for_script(script, app_kib * 1024, args.seed),
    };
    Ok(fixture.with_work_buffer(buf_bytes))
}

fn print_summary(
    args: &Args,
    summary: &sweep::Summary,
    script: Script,
    app_kib: usize,
    buf_bytes: usize,
    threads: usize,
) {
    if args.json {
        println!("{}", summary.json_line(script, app_kib, buf_bytes, args.depth, threads, args.seed));
    } else {
        println!(
            "{}: {app_kib} KiB app, {buf_bytes}-byte buffer, depth {}, {} flash ops, {} points on {threads} threads, {} failures, {:.2} s ({:.4} ms a point)",
            script.name(),
            args.depth,
            summary.script_ops,
            summary.points,
            summary.failures.len(),
            summary.seconds,
            summary.ms_per_point()
        );
    }
    for failure in summary.failures.iter().take(10) {
        eprintln!("FAILED at point {} (seed {}): {}", failure.point, args.seed, failure.what);
        eprintln!(
            "  replay: hil sweep --script {} --app-kib {app_kib} --buf-bytes {buf_bytes} --seed {} --point {}",
            script.name(),
            args.seed,
            failure.point
        );
    }
}

fn replay(args: &Args, script: Script, point: Point) -> Result<ExitCode, CommandError> {
    let fixture = fixture(args, script, args.app_kib[0], args.buf_bytes[0])?;
    let (result, trace) = sweep::replay(&fixture, script, point);
    for line in &trace {
        println!("{line}");
    }
    Ok(match result {
        Ok(()) => {
            println!("point {point}: every invariant held");
            ExitCode::SUCCESS
        }
        Err(what) => {
            eprintln!("FAILED at point {point} (seed {}): {what}", args.seed);
            ExitCode::from(1)
        }
    })
}

fn random(args: &Args, schedules: u64) -> ExitCode {
    let batch = schedule::run_many(args.seed, schedules, args.steps);
    batch.print(|seed| format!("hil sweep --random 1 --seed {seed} --steps {}", args.steps));
    if batch.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
