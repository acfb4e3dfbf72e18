//! Power-cut sweeps and random fault schedules from the command line, with figures.
//!
//!     cargo run --release -p ota-sim --example sweep -- --app-kib 128 --json
//!     cargo run --release -p ota-sim --example sweep -- --app-kib 128 --depth 2 --json
//!     cargo run --release -p ota-sim --example sweep -- --script all
//!     cargo run --release -p ota-sim --example sweep -- --point 57:during      (replay one point)
//!     cargo run --release -p ota-sim --example sweep -- --random --seed 7 --steps 40
//!     cargo run --release -p ota-sim --example sweep -- --random --schedules 500
//!     cargo run --release -p ota-sim --example sweep -- --script all --dump points.txt
//!
//!     cargo run --release -p ota-sim --example sweep -- --script all --depth 3
//!     cargo run --release -p ota-sim --example sweep -- --script all --retry
//!     cargo run --release -p ota-sim --example sweep -- --script all --erased 0x00 --sectors stm32f4
//!     cargo run --release -p ota-sim --example sweep -- --bit-flips --script all
//!     cargo run --release -p ota-sim --example sweep -- --stuck-bits --cycles 24 --app-kib 16
//!     cargo run --release -p ota-sim --example sweep -- --stuck-bits --bit-step 97   (a slice)
//!
//!     cargo run --release -p ota-sim --example sweep -- --bench
//!
//! `--erased` and `--sectors` choose the flash (erased value 0xff or 0x00; sector map uniform, or
//! stm32f4: 16, 64 and 128 KiB sectors, the core erasing 128 KiB units) for every sweep.
//! `--depth 3` cuts three times in a row; `--retry` cuts once, lets the device recover, runs the
//! interrupted action again and cuts it at each of its operations. `--bit-flips` and
//! `--stuck-bits` sweep every bit of both boot-state areas (`ota_sim::faults`); `--bits FROM..TO`
//! and `--bit-step N` take a part of them, and a failure's replay line names its bit.
//!
//! `--bench` prints the figures that matter, each next to the SHA-256 of an image of the same size
//! measured in the same run (just before and just after the sweep) (the ratio holds on a busy machine where times do not): ms a point by
//! image size on one thread, the full matrix, depth two at 1 MiB, random schedules a second, and
//! the peak resident memory.
//!
//! `--dump FILE` writes one line a point (script, app KiB, buffer bytes, depth, point, the hash of
//! the trace the point noted, outcome), sorted, so that two builds can be compared with `diff`.
//!
//! Exit code: 0 when every invariant held, 1 when one broke (each failure is printed with its
//! seed and a one-line replay command), 2 on bad usage.

use std::process::ExitCode;

use ota_sim::device::SectorMap;
use ota_sim::faults::{self, Bits, FaultSummary};
use ota_sim::schedule;
use ota_sim::sweep::{self, Fixture, Plan, Point, Script};

struct Args {
    /// One sweep per size, buffer and script: a matrix when several are given.
    app_kibs: Vec<usize>,
    buf_bytes: Vec<usize>,
    depth: u8,
    json: bool,
    scripts: Vec<Script>,
    threads: usize,
    seed: u64,
    point: Option<Point>,
    random: bool,
    steps: usize,
    schedules: u64,
    /// Where to write every point's result, one line each, to compare two builds.
    dump: Option<std::path::PathBuf>,
    bench: bool,
    retry: bool,
    erased: u8,
    sectors: SectorMap,
    bit_flips: bool,
    stuck_bits: bool,
    cycles: usize,
    bits: Bits,
}

const USAGE: &str = "usage: sweep [--app-kib N] [--depth 1|2|3 | --retry] [--script update|rollback|snapshot|all] [--threads N] \
[--seed N] [--buf-bytes N[,N...]] [--point OP:WHEN[+OP:WHEN[+OP:WHEN]]] [--json] [--dump FILE]   (--app-kib takes a list too: 128,1024)
       [--erased 0xff|0x00] [--sectors uniform|stm32f4]   (the flash, for every sweep)
       sweep --bit-flips [--script S] [--bits FROM..TO] [--bit-step N]
       sweep --stuck-bits [--cycles N] [--bits FROM..TO] [--bit-step N]
       sweep --random [--seed N] [--steps N] [--schedules N]
       sweep --bench [--threads N]";

fn parse_args() -> Result<Args, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = Args {
        app_kibs: vec![128],
        buf_bytes: vec![4096],
        depth: 1,
        json: false,
        scripts: vec![Script::Update],
        threads,
        seed: 0,
        point: None,
        random: false,
        steps: 40,
        schedules: 1,
        dump: None,
        bench: false,
        retry: false,
        erased: 0xff,
        sectors: SectorMap::Uniform,
        bit_flips: false,
        stuck_bits: false,
        cycles: 24,
        bits: Bits::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--app-kib" => args.app_kibs = list(&flag, &value()?)?,
            "--buf-bytes" => args.buf_bytes = list(&flag, &value()?)?,
            "--depth" => args.depth = number(&flag, &value()?)?,
            "--threads" => args.threads = number(&flag, &value()?)?,
            "--seed" => args.seed = number(&flag, &value()?)?,
            "--steps" => args.steps = number(&flag, &value()?)?,
            "--schedules" => args.schedules = number(&flag, &value()?)?,
            "--dump" => args.dump = Some(value()?.into()),
            "--json" => args.json = true,
            "--bench" => args.bench = true,
            "--random" => args.random = true,
            "--retry" => args.retry = true,
            "--bit-flips" => args.bit_flips = true,
            "--stuck-bits" => args.stuck_bits = true,
            "--cycles" => args.cycles = number(&flag, &value()?)?,
            "--bit-step" => args.bits.step = number(&flag, &value()?)?,
            "--bits" => {
                let text = value()?;
                let (from, to) =
                    text.split_once("..").ok_or_else(|| format!("--bits is FROM..TO, not {text:?}"))?;
                args.bits.range = Some(number(&flag, from)?..number(&flag, to)?);
            }
            "--erased" => {
                args.erased = match value()?.as_str() {
                    "0xff" | "0xFF" => 0xff,
                    "0x00" | "0" => 0x00,
                    other => return Err(format!("--erased is 0xff or 0x00, not {other:?}")),
                }
            }
            "--sectors" => {
                let name = value()?;
                args.sectors = SectorMap::parse(&name)
                    .ok_or_else(|| format!("--sectors is uniform or stm32f4, not {name:?}"))?;
            }
            "--script" => {
                let name = value()?;
                args.scripts = match name.as_str() {
                    "all" => Script::ALL.to_vec(),
                    other => vec![Script::parse(other).ok_or_else(|| format!("unknown script {other:?}"))?],
                }
            }
            "--point" => args.point = Some(value()?.parse()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !(1..=3).contains(&args.depth) {
        return Err(format!("--depth is 1, 2 or 3, not {}", args.depth));
    }
    if args.retry && args.depth != 1 {
        return Err("--retry cuts the retried action once: leave out --depth".into());
    }
    if args.bits.step == 0 {
        return Err("--bit-step must be at least 1".into());
    }
    if args.app_kibs.contains(&0) {
        return Err("--app-kib must be at least 1".into());
    }
    if let Some(b) = args.buf_bytes.iter().find(|&&b| !(1024..=65536).contains(&b) || b % 4 != 0) {
        return Err(format!("--buf-bytes {b}: a work buffer is 1024 to 65536 bytes, a multiple of 4"));
    }
    if args.point.is_some() && (args.app_kibs.len() > 1 || args.buf_bytes.len() > 1) {
        return Err("--point replays one sweep: give one --app-kib and one --buf-bytes".into());
    }
    Ok(args)
}

fn list(flag: &str, text: &str) -> Result<Vec<usize>, String> {
    text.split(',').map(|t| number(flag, t)).collect()
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{flag} takes a number, not {text:?}"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("error: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.bench {
        bench(&args);
        return ExitCode::SUCCESS;
    }
    if args.random {
        return random(&args);
    }
    if args.bit_flips || args.stuck_bits {
        return fault_sweeps(&args);
    }
    if let Some(point) = args.point {
        return replay(&args, point);
    }
    let mut dump = match args.dump.as_ref().map(std::fs::File::create).transpose() {
        Ok(file) => file.map(std::io::BufWriter::new),
        Err(e) => {
            eprintln!("error: cannot create the dump file: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let (mut points, mut seconds, mut runs) = (0, 0.0, 0);
    for &app_kib in &args.app_kibs {
        for &buf_bytes in &args.buf_bytes {
            for &script in &args.scripts {
                let summary = run_sweep(&args, script, app_kib, buf_bytes);
                if let Some(out) = &mut dump
                    && let Err(e) = write_dump(out, &summary, script, app_kib, buf_bytes, args.depth)
                {
                    eprintln!("error: cannot write the dump file: {e}");
                    return ExitCode::from(2);
                }
                failed |= !summary.failures.is_empty();
                points += summary.points;
                seconds += summary.seconds;
                runs += 1;
            }
        }
    }
    if runs > 1 {
        let ms_per_point = seconds * 1000.0 / points.max(1) as f64;
        if args.json {
            println!(
                "{{\"total\":true,\"sweeps\":{runs},\"points\":{points},\"seconds\":{seconds:.3},\"ms_per_point\":{ms_per_point:.4}}}"
            );
        } else {
            println!("total: {runs} sweeps, {points} points, {seconds:.2} s ({ms_per_point:.4} ms a point)");
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// The flags that choose the flash and the plan, as a replay line repeats them.
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

fn replay_command(args: &Args, script: Script, app_kib: usize, buf_bytes: usize, point: Point) -> String {
    let plan = if args.retry { " --retry".to_string() } else { String::new() };
    format!(
        "cargo run --release -p ota-sim --example sweep -- --script {} --app-kib {app_kib} --buf-bytes {buf_bytes} --seed {}{}{plan} --point {point}",
        script.name(),
        args.seed,
        flash_flags(args)
    )
}

fn plan(args: &Args) -> Plan {
    if args.retry { Plan::Retry } else { Plan::Depth(args.depth) }
}

fn fixture(args: &Args, script: Script, app_kib: usize, buf_bytes: usize) -> Fixture {
    Fixture::for_script(script, app_kib * 1024, args.seed)
        .with_work_buffer(buf_bytes)
        .on_flash(args.erased, args.sectors)
}

fn run_sweep(args: &Args, script: Script, app_kib: usize, buf_bytes: usize) -> sweep::Summary {
    let fixture = fixture(args, script, app_kib, buf_bytes);
    let summary = if args.dump.is_some() {
        sweep::sweep_recording_points(&fixture, script, args.depth, args.threads)
    } else {
        sweep::sweep_plan(&fixture, script, plan(args), args.threads)
    };
    let ms_per_point = summary.ms_per_point();
    if args.json {
        println!("{}", summary.json_line(script, app_kib, buf_bytes, args.depth, args.threads, args.seed));
    } else {
        println!(
            "{}: {} KiB app, {buf_bytes}-byte buffer, {}{}, {} flash ops in the script, {} points on {} threads, {} failures, {:.2} s ({:.4} ms a point)",
            script.name(),
            app_kib,
            plan(args).name(),
            flash_flags(args),
            summary.script_ops,
            summary.points,
            args.threads,
            summary.failures.len(),
            summary.seconds,
            ms_per_point
        );
    }
    for failure in summary.failures.iter().take(10) {
        eprintln!("FAILED at point {} (seed {}): {}", failure.point, args.seed, failure.what);
        eprintln!("  replay: {}", replay_command(args, script, app_kib, buf_bytes, failure.point));
    }
    summary
}

/// One line a point: script, sizes, depth, point, trace hash, outcome.
fn write_dump(
    out: &mut impl std::io::Write,
    summary: &sweep::Summary,
    script: Script,
    app_kib: usize,
    buf_bytes: usize,
    depth: u8,
) -> std::io::Result<()> {
    for result in &summary.results {
        writeln!(out, "{} {app_kib} {buf_bytes} {depth} {}", script.name(), result.dump_line())?;
    }
    out.flush()
}

fn replay(args: &Args, point: Point) -> ExitCode {
    let script = args.scripts[0];
    let fixture = fixture(args, script, args.app_kibs[0], args.buf_bytes[0]);
    let (result, trace) = sweep::replay_plan(&fixture, script, plan(args), point);
    for line in &trace {
        println!("{line}");
    }
    match result {
        Ok(()) => {
            println!("point {point}: every invariant held");
            ExitCode::SUCCESS
        }
        Err(what) => {
            eprintln!("FAILED at point {point} (seed {}): {what}", args.seed);
            ExitCode::from(1)
        }
    }
}

/// `--bit-flips` (each script given) and `--stuck-bits`, on the first size and buffer given.
fn fault_sweeps(args: &Args) -> ExitCode {
    let (app_kib, buf_bytes) = (args.app_kibs[0], args.buf_bytes[0]);
    let mut failed = false;
    let mut report = |what: String, summary: &FaultSummary, replay: &str| {
        println!(
            "{what}, {app_kib} KiB app{}: {} points on {} threads, {} failures, {:.2} s ({:.4} ms a point)",
            flash_flags(args),
            summary.points,
            args.threads,
            summary.failures.len(),
            summary.seconds,
            summary.ms_per_point()
        );
        for failure in summary.failures.iter().take(10) {
            let bit = match failure.point {
                faults::FaultPoint::Flip { bit, .. } | faults::FaultPoint::Stuck { bit, .. } => bit,
            };
            eprintln!("FAILED: {}: {}", failure.point, failure.what);
            eprintln!(
                "  replay: cargo run --release -p ota-sim --example sweep -- {replay} --app-kib {app_kib} --buf-bytes {buf_bytes}{} --bits {bit}..{}",
                flash_flags(args),
                bit + 1
            );
            if summary.points <= 2 {
                for line in &failure.trace {
                    eprintln!("{line}");
                }
            }
        }
        failed |= !summary.failures.is_empty();
    };
    if args.bit_flips {
        for &script in &args.scripts {
            let fixture = fixture(args, script, app_kib, buf_bytes);
            let summary = faults::bit_flips(&fixture, script, &args.bits, args.threads);
            let what = format!("bit flips: {} script, {} device states", script.name(), summary.states);
            report(what, &summary, &format!("--bit-flips --script {}", script.name()));
        }
    }
    if args.stuck_bits {
        let fixture = fixture(args, Script::Update, app_kib, buf_bytes);
        let summary = faults::stuck_bits(&fixture, args.cycles, &args.bits, args.threads);
        let what = format!("stuck bits: at 0 and at 1, {} update cycles each", args.cycles);
        report(what, &summary, &format!("--stuck-bits --cycles {}", args.cycles));
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn random(args: &Args) -> ExitCode {
    let batch = schedule::run_many(args.seed, args.schedules, args.steps);
    batch.print(|seed| {
        format!(
            "cargo run --release -p ota-sim --example sweep -- --random --seed {seed} --steps {}",
            args.steps
        )
    });
    if batch.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// Image sizes of the figures and of the full matrix.
const BENCH_KIBS: [usize; 7] = [16, 32, 64, 128, 256, 512, 1024];

fn bench(args: &Args) {
    use std::time::Instant;
    println!("ms a point, update script, 4096-byte buffer, 1 thread, against one SHA-256 of the image:");
    println!(
        "{:>8} {:>9} {:>8} {:>12} {:>12} {:>12}",
        "app KiB", "flash ops", "points", "ms a point", "SHA-256 ms", "point/hash"
    );
    let mut sha_ms_1mib = 0.0;
    for app_kib in BENCH_KIBS {
        let fixture = Fixture::for_script(Script::Update, app_kib * 1024, args.seed);
        let sha_before_ms = sha256_ms(app_kib * 1024);
        let summary = sweep::sweep(&fixture, Script::Update, 1, 1);
        let sha_ms = (sha_before_ms + sha256_ms(app_kib * 1024)) / 2.0;
        if app_kib == 1024 {
            sha_ms_1mib = sha_ms;
        }
        let ms = summary.ms_per_point();
        println!(
            "{app_kib:>8} {:>9} {:>8} {ms:>12.4} {sha_ms:>12.4} {:>12.3}",
            summary.script_ops,
            summary.points,
            ms / sha_ms
        );
    }
    let started = Instant::now();
    let mut points = 0;
    for app_kib in BENCH_KIBS {
        for buf_bytes in [1024, 2048, 4096] {
            for script in Script::ALL {
                let fixture =
                    Fixture::for_script(script, app_kib * 1024, args.seed).with_work_buffer(buf_bytes);
                points += sweep::sweep(&fixture, script, 1, args.threads).points;
            }
        }
    }
    let matrix_s = started.elapsed().as_secs_f64();
    println!(
        "full matrix (7 sizes x 3 buffers x 3 scripts, {} threads): {points} points, {matrix_s:.2} s",
        args.threads
    );
    let fixture = Fixture::for_script(Script::Update, 1024 * 1024, args.seed);
    let depth_two = sweep::sweep(&fixture, Script::Update, 2, args.threads);
    println!(
        "depth 2 at 1 MiB ({} threads): {} points, {:.2} s ({:.4} ms a point, {:.3} x SHA-256 of 1 MiB)",
        args.threads,
        depth_two.points,
        depth_two.seconds,
        depth_two.ms_per_point(),
        depth_two.ms_per_point() / sha_ms_1mib
    );
    let batch = schedule::run_many(args.seed, 200, args.steps);
    println!(
        "random schedules of {} steps: {:.1} a second ({} in {:.2} s, {} failed)",
        args.steps,
        batch.count as f64 / batch.seconds,
        batch.count,
        batch.seconds,
        batch.failures.len()
    );
    println!("peak resident memory: {}", peak_rss().unwrap_or_else(|| "unknown".into()));
}

/// Milliseconds of one SHA-256 of `bytes` bytes: the median of nine batches of at least 10 ms,
/// so that a burst of load on a shared machine moves it little.
fn sha256_ms(bytes: usize) -> f64 {
    use sha2::Digest as _;
    let data: Vec<u8> = (0..bytes).map(|i| (i * 31 + 7) as u8).collect();
    let mut sink = 0u8;
    let mut batches: Vec<f64> = (0..9)
        .map(|_| {
            let started = std::time::Instant::now();
            let mut rounds = 0u32;
            while rounds < 2 || started.elapsed().as_secs_f64() < 0.01 {
                sink ^= sha2::Sha256::digest(std::hint::black_box(&data))[0];
                rounds += 1;
            }
            started.elapsed().as_secs_f64() * 1000.0 / rounds as f64
        })
        .collect();
    std::hint::black_box(sink);
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

/// `VmHWM` of this process, from /proc (Linux).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line["VmHWM:".len()..].trim().to_string())
}
