//! `hil sweep`: the simulator's exhaustive power-cut sweeps and random fault schedules, for the
//! built-in scripts or for a pair of bundles of your own, with the benchmark's figures.
//!
//! ```text
//! hil sweep --script all --app-kib 128            every cut of an update, a rollback, a snapshot
//! hil sweep --from v1.zip --to v2.zip --depth 2   your bundles: v1 provisioned, v2 pushed
//! hil sweep --script update --point 57:during     replay one point, with the device's trace
//! hil sweep --random 500 --steps 30               seeded random fault schedules
//! hil sweep --script all --depth 3                three cuts in a row
//! hil sweep --script all --retry                  a cut, then one in the retried action
//! hil sweep --erased 0x00 --sectors stm32f4       on another flash (any sweep)
//! hil sweep --bit-flips --script all              every bit of the boot-state areas flipped
//! hil sweep --stuck-bits --cycles 24 --app-kib 16 every bit stuck at 0 and at 1, 24 updates
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use ota_sim::device::SectorMap;
use ota_sim::faults::{self, Bits, FaultPoint, FaultSummary};
use ota_sim::schedule;
use ota_sim::sweep::{self, Fixture, Plan, Point, Script};

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
    /// 2 also cuts the power at every operation of each recovery; 3 at every operation of the
    /// recovery from that cut too.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub depth: u8,
    /// After each cut and its recovery, run the interrupted action again and cut it at each of
    /// its operations.
    #[arg(long, conflicts_with = "depth")]
    pub retry: bool,
    /// What an erased byte reads as: 0xff or 0x00.
    #[arg(long, default_value = "0xff", value_parser = parse_erased)]
    pub erased: u8,
    /// The flash's sector map: uniform (4 KiB) or stm32f4 (16, 64, 128 KiB; 128 KiB erase units).
    #[arg(long, default_value = "uniform", value_parser = parse_sectors)]
    pub sectors: SectorMap,
    /// Flip every bit of both boot-state areas, one at a time, in each device state of the script.
    #[arg(long)]
    pub bit_flips: bool,
    /// Stick every bit of both boot-state areas at 0 and at 1, one at a time, then run update cycles.
    #[arg(long)]
    pub stuck_bits: bool,
    /// Update cycles of each stuck-bit point.
    #[arg(long, default_value_t = 24)]
    pub cycles: usize,
    /// Only these bits of the two areas (FROM..TO), for --bit-flips and --stuck-bits.
    #[arg(long, value_name = "FROM..TO", value_parser = parse_bits)]
    pub bits: Option<std::ops::Range<u32>>,
    /// Every N-th bit only: a bounded slice.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub bit_step: u32,
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
    /// Replay one point (OP:WHEN, up to two more +OP:WHEN) and print the device's trace.
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
    if args.bit_flips || args.stuck_bits {
        return fault_sweeps(&args, &scripts, threads);
    }
    let mut failed = false;
    for &app_kib in &args.app_kib {
        for &buf_bytes in &args.buf_bytes {
            for &script in &scripts {
                let fixture = fixture(&args, script, app_kib, buf_bytes)?;
                let summary = sweep::sweep_plan(&fixture, script, plan(&args), threads);
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
    Ok(fixture.with_work_buffer(buf_bytes).on_flash(args.erased, args.sectors))
}

fn plan(args: &Args) -> Plan {
    if args.retry { Plan::Retry } else { Plan::Depth(args.depth) }
}

/// The flags that choose the flash, as a summary and a replay line repeat them.
fn flash_flags(args: &Args) -> String {
    let mut flags = String::new();
    if args.erased != 0xff {
        flags += &format!(" --erased 0x{:02x}", args.erased);
    }
    if args.sectors != SectorMap::Uniform {
        flags += &format!(" --sectors {}", args.sectors.name());
    }
    flags
}

/// The flash and the plan, as a replay line repeats them.
fn flags(args: &Args) -> String {
    if args.retry { format!("{} --retry", flash_flags(args)) } else { flash_flags(args) }
}

fn parse_erased(text: &str) -> Result<u8, String> {
    match text {
        "0xff" | "0xFF" => Ok(0xff),
        "0x00" | "0" => Ok(0x00),
        other => Err(format!("the erased value is 0xff or 0x00, not {other:?}")),
    }
}

fn parse_sectors(text: &str) -> Result<SectorMap, String> {
    SectorMap::parse(text).ok_or_else(|| format!("the sector map is uniform or stm32f4, not {text:?}"))
}

fn parse_bits(text: &str) -> Result<std::ops::Range<u32>, String> {
    let (from, to) = text.split_once("..").ok_or_else(|| format!("bits are FROM..TO, not {text:?}"))?;
    let number = |t: &str| t.parse::<u32>().map_err(|_| format!("{t:?} is not a bit number"));
    Ok(number(from)?..number(to)?)
}

/// `--bit-flips` (each script) and `--stuck-bits`, on the first size and buffer given.
fn fault_sweeps(args: &Args, scripts: &[Script], threads: usize) -> Result<ExitCode, CommandError> {
    let (app_kib, buf_bytes) = (args.app_kib[0], args.buf_bytes[0]);
    let bits = Bits { range: args.bits.clone(), step: args.bit_step };
    let mut failed = false;
    let mut report = |what: String, summary: &FaultSummary, again: String| {
        println!(
            "{what}, {app_kib} KiB app{}: {} points on {threads} threads, {} failures, {:.2} s ({:.4} ms a point)",
            flash_flags(args),
            summary.points,
            summary.failures.len(),
            summary.seconds,
            summary.ms_per_point()
        );
        for failure in summary.failures.iter().take(10) {
            let (FaultPoint::Flip { bit, .. } | FaultPoint::Stuck { bit, .. }) = failure.point;
            eprintln!("FAILED: {}: {}", failure.point, failure.what);
            eprintln!(
                "  replay: hil sweep {again} --app-kib {app_kib} --buf-bytes {buf_bytes}{} --bits {bit}..{}",
                flags(args),
                bit + 1
            );
        }
        failed |= !summary.failures.is_empty();
    };
    if args.bit_flips {
        for &script in scripts {
            let fixture = fixture(args, script, app_kib, buf_bytes)?;
            let summary = faults::bit_flips(&fixture, script, &bits, threads);
            let what = format!("bit flips: {} script, {} device states", script.name(), summary.states);
            report(what, &summary, format!("--bit-flips --script {}", script.name()));
        }
    }
    if args.stuck_bits {
        let fixture = fixture(args, Script::Update, app_kib, buf_bytes)?;
        let summary = faults::stuck_bits(&fixture, args.cycles, &bits, threads);
        let what = format!("stuck bits: at 0 and at 1, {} update cycles each", args.cycles);
        report(what, &summary, format!("--stuck-bits --cycles {}", args.cycles));
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
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
            "{}: {app_kib} KiB app, {buf_bytes}-byte buffer, {}{}, {} flash ops, {} points on {threads} threads, {} failures, {:.2} s ({:.4} ms a point)",
            script.name(),
            plan(args).name(),
            flash_flags(args),
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
            "  replay: hil sweep --script {} --app-kib {app_kib} --buf-bytes {buf_bytes} --seed {}{} --point {}",
            script.name(),
            args.seed,
            flags(args),
            failure.point
        );
    }
}

fn replay(args: &Args, script: Script, point: Point) -> Result<ExitCode, CommandError> {
    let fixture = fixture(args, script, args.app_kib[0], args.buf_bytes[0])?;
    let (result, trace) = sweep::replay_plan(&fixture, script, plan(args), point);
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
