//! `hil bundle`: builds a Mongoose OS compatible `fw.zip` with `ota-bundle`, as
//! `mos create-fw-bundle` lays it out: `manifest.json` first, stored entries, the real sizes and
//! CRC-32 in every local header, `cs_sha1` and `cs_sha256` for every part.
//!
//! | part  | key, `type` | entry        | data                                                        |
//! |-------|-------------|--------------|-------------------------------------------------------------|
//! | app   | `app`, app  | `<name>.bin` | `--app FILE`, a simulated image (`--sim-app`, `--app-kib`), or a board's firmware (`--board`) |
//! | fs    | `fs`, fs    | `fs.img`     | a LittleFS image of `--fs-kib` KiB holding `--fs-dir`'s files |
//!
//! With `--board boards/esp32c3.toml` the app is the ESP32-C3 firmware's app image, built from
//! its ELF by espflash, with its app descriptor written for `--version` and `--behaviour` and its
//! checksum and SHA-256 computed again (`esp32c3::image::patch`); the platform defaults to the
//! board's (give `--fs-kib 480`, its fs slot, for an fs part).
//!
//! The fs part also carries `fs_size` and `fs_block_size`, as mos writes them. With `--folder`
//! every entry sits under `<name>-<version>/`, as `mgos_fw_meta.py` puts it.
//!
//! Every input is checked before anything is written, against the limits of the device that will
//! read the bundle: the boot record's version and build id, the manifest reader's name and
//! platform, the merge's file names and count, the LittleFS image's space (tried on a RAM flash
//! first, so the image builder never panics). The bundle goes to a temporary file beside `--out`
//! and is renamed over it, so an error never leaves half a file.

use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ota_bundle::{Bundle, PartSpec};
use ota_core::flash::RamFlash;
use ota_core::layout::Region;
use ota_core::manifest::{Name, Platform};
use ota_core::merge::{MERGE_FILES_MAX, TEMP_NAME};
use ota_core::state::{BuildId, Label, Version};
use ota_sim::image::{Behaviour, HEADER_BYTES, Image};
use ota_sim::lfs;
use sha1::Digest as _;

use super::CommandError;

/// Block size of the LittleFS image: the ESP32's erase unit, and the simulator's.
pub const FS_BLOCK_BYTES: u32 = 4096;
/// Largest app image or fs image accepted: 16 MiB, the largest flash a Mongoose OS board has.
pub const IMAGE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Smallest fs image: LittleFS needs two blocks for its superblock pair.
pub const FS_MIN_KIB: u32 = 2 * FS_BLOCK_BYTES / 1024;
/// The user config file that Mongoose OS's docs say never to ship in an image.
const USER_CONFIG: &str = "conf9.json";

// Any accepted `--fs-kib` or `--app-kib` is a `u32` number of bytes, and a bundle of both stays
// far below the 4 GiB a zip without zip64 holds.
const _: () = assert!(2 * IMAGE_MAX_BYTES < u32::MAX as u64);

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("app_image").required(true).args(["app", "sim_app", "board"])))]
pub struct Args {
    /// Firmware name: the manifest's `name`, the app entry `<name>.bin` (at most 32 bytes).
    #[arg(long)]
    pub name: String,
    /// Firmware version, recorded in the device's boot record (at most 24 bytes).
    #[arg(long)]
    pub version: String,
    /// Platform the bundle is for; a device takes it when it equals the device's own, ignoring
    /// case ("esp32" for the simulator). At most 16 bytes. With `--board`: the board's.
    #[arg(long, required_unless_present = "board")]
    pub platform: Option<String>,
    /// Build id, recorded in the boot record (at most 54 bytes) [default: the version].
    #[arg(long, value_name = "ID")]
    pub build_id: Option<String>,
    /// The app image, a file.
    #[arg(long, value_name = "FILE")]
    pub app: Option<PathBuf>,
    /// A simulated app image instead: healthy, crashes-at-boot, hangs, never-commits or
    /// commits-after=SECONDS.
    #[arg(long, value_name = "BEHAVIOUR", value_parser = parse_behaviour)]
    pub sim_app: Option<Behaviour>,
    /// A board file: the app is the board's firmware, built from its ELF (kind esp32c3).
    #[arg(long, value_name = "FILE")]
    pub board: Option<PathBuf>,
    /// With `--board`: what the firmware does (its app descriptor): healthy, crashes-at-boot,
    /// hangs, never-commits or commits-after=SECONDS.
    #[arg(long, value_name = "BEHAVIOUR", value_parser = parse_behaviour, requires = "board", default_value = "healthy")]
    pub behaviour: Behaviour,
    /// Size of the simulated app image, in KiB.
    #[arg(long, value_name = "N", default_value_t = 64, conflicts_with = "app")]
    pub app_kib: u32,
    /// A folder whose top-level regular files go into the fs part's LittleFS image.
    #[arg(long, value_name = "DIR")]
    pub fs_dir: Option<PathBuf>,
    /// Size of the LittleFS image, in KiB: the device's fs slot size (64 on the simulator).
    #[arg(long, value_name = "N", default_value_t = 64, requires = "fs_dir")]
    pub fs_kib: u32,
    /// Put every entry under `<name>-<version>/`, as mgos_fw_meta.py does.
    #[arg(long)]
    pub folder: bool,
    /// The bundle to write.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `--sim-app`'s values.
fn parse_behaviour(text: &str) -> Result<Behaviour, String> {
    match text {
        "healthy" => Ok(Behaviour::Healthy),
        "crashes-at-boot" => Ok(Behaviour::CrashesAtBoot),
        "hangs" => Ok(Behaviour::Hangs),
        "never-commits" => Ok(Behaviour::NeverCommits),
        _ => {
            let seconds = text.strip_prefix("commits-after=").ok_or_else(|| {
                "expected healthy, crashes-at-boot, hangs, never-commits or commits-after=SECONDS".to_string()
            })?;
            let seconds = seconds.parse().map_err(|_| {
                format!("commits-after= takes whole seconds (0 to {}), not {seconds:?}", u32::MAX)
            })?;
            Ok(Behaviour::CommitsAfter { seconds })
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let written = build(&args)?;
    print!("{written}");
    Ok(ExitCode::SUCCESS)
}

/// What [`build`] wrote, for the report.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub zip: Vec<u8>,
    pub folder: String,
    /// The fs image's files and their sizes, when there is an fs part.
    pub fs_files: Option<Vec<(String, usize)>>,
    pub fs_kib: u32,
}

/// Checks every input, builds the bundle and writes it to `args.out`. Nothing is written on error.
pub fn build(args: &Args) -> Result<Written, CommandError> {
    let build_id = args.build_id.as_deref().unwrap_or(&args.version);
    check_labels(args, build_id)?;
    check_out(&args.out)?;
    let app = app_image(args)?;
    let fs = args.fs_dir.as_deref().map(|dir| fs_image(dir, args.fs_kib)).transpose()?;
    let mut bundle = Bundle::new(&args.name, &platform(args)?).version(&args.version).build_id(build_id);
    if args.folder {
        bundle = bundle.in_folder();
    }
    let app_src = format!("{}.bin", args.name);
    bundle = bundle.part(PartSpec::new("app", &app_src, app).kind("app"));
    let mut fs_files = None;
    if let Some(fs) = fs {
        let fs_size_bytes = args.fs_kib * 1024;
        let part = PartSpec::new("fs", "fs.img", fs.image)
            .kind("fs")
            .extra("fs_size", &fs_size_bytes.to_string())
            .extra("fs_block_size", &FS_BLOCK_BYTES.to_string());
        bundle = bundle.part(part);
        fs_files = Some(fs.files);
    }
    let zip = bundle.build();
    write_atomically(&args.out, &zip)?;
    Ok(Written { path: args.out.clone(), zip, folder: bundle.folder(), fs_files, fs_kib: args.fs_kib })
}

/// The manifest fields against the device's limits: the manifest reader's labels and the boot
/// record's version and build id.
fn check_labels(args: &Args, build_id: &str) -> Result<(), CommandError> {
    let _: Name = check_label("--name", &args.name, "the device's manifest reader")?;
    let _: Platform = check_label("--platform", &platform(args)?, "the device's manifest reader")?;
    let _: Version = check_label("--version", &args.version, "a boot record")?;
    let _: BuildId = check_label("--build-id", build_id, "a boot record")?;
    for (flag, value) in [("--name", &args.name), ("--version", &args.version)] {
        if value.contains('/') {
            return Err(CommandError::new(format!(
                "{flag} {value:?} holds a '/': it names the entry <name>.bin and the folder \
                 <name>-<version>/, and the device strips one folder only; nothing was written"
            ))
            .help(format!("use a {} without '/'", &flag[2..])));
        }
    }
    Ok(())
}

/// `value` as a label of `N` bytes, the capacity of the device's field it goes to.
fn check_label<const N: usize>(flag: &str, value: &str, holder: &str) -> Result<Label<N>, CommandError> {
    if value.is_empty() {
        return Err(CommandError::new(format!("{flag} is empty; nothing was written"))
            .help(format!("give {flag} a value")));
    }
    if value.len() > N {
        return Err(CommandError::new(format!(
            "{flag} {value:?} is {} bytes, more than the {N} {holder} holds; nothing was written",
            value.len()
        ))
        .help(format!("shorten it to {N} bytes or fewer")));
    }
    Label::new(value).ok_or_else(|| {
        CommandError::new(format!("{flag} {value:?} holds a NUL byte; nothing was written"))
            .help("remove the NUL byte")
    })
}

/// The output's folder must exist and the output must not be a folder.
fn check_out(out: &Path) -> Result<(), CommandError> {
    if out.is_dir() {
        return Err(CommandError::new(format!("-o {} is a folder; nothing was written", out.display()))
            .help(format!("name a file in it, such as {}", out.join("fw.zip").display())));
    }
    let folder = out_folder(out);
    if !folder.is_dir() {
        return Err(CommandError::new(format!(
            "the output folder {} does not exist; nothing was written",
            folder.display()
        ))
        .help(format!("create it first (mkdir -p {}) or write elsewhere", folder.display())));
    }
    Ok(())
}

fn out_folder(out: &Path) -> &Path {
    match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// The bundle's platform: `--platform`, else the board's.
fn platform(args: &Args) -> Result<String, CommandError> {
    match (&args.platform, &args.board) {
        (Some(platform), _) => Ok(platform.clone()),
        (None, Some(board)) => Ok(board_config(board)?.platform),
        (None, None) => unreachable!("clap requires --platform without --board"),
    }
}

fn board_config(path: &Path) -> Result<crate::board::config::BoardConfig, CommandError> {
    crate::board::config::load(path).map_err(|e| {
        CommandError::new(format!("{e}; nothing was written"))
            .help("see boards/README.md for the keys of a board file")
    })
}

/// The app image of a board's firmware, its descriptor written for this bundle.
fn board_app(args: &Args, board: &Path) -> Result<Vec<u8>, CommandError> {
    let config = board_config(board)?;
    let crate::board::config::Backend::Esp32c3(esp) = &config.backend else {
        return Err(CommandError::new(format!(
            "--board {}: kind {:?} builds no firmware image; nothing was written",
            board.display(),
            config.kind()
        ))
        .help(
            "--board takes an ESP32-C3 board file (kind = \"esp32c3\"); use --app or --sim-app otherwise",
        ));
    };
    let built = super::image::build_from_elf(Some(esp))?;
    crate::esp32c3::image::patch(&built.app, &args.version, args.behaviour)
        .map_err(|e| CommandError::new(format!("{e}; nothing was written")))
}

/// The app part's data: the file given, a simulated image, or a board's firmware.
fn app_image(args: &Args) -> Result<Vec<u8>, CommandError> {
    if let Some(board) = &args.board {
        return board_app(args, board);
    }
    let Some(path) = &args.app else {
        let behaviour = args.sim_app.expect("clap requires --app or --sim-app");
        let len_bytes = u64::from(args.app_kib) * 1024;
        if len_bytes == 0 || len_bytes > IMAGE_MAX_BYTES {
            return Err(CommandError::new(format!(
                "--app-kib {} is out of range: a simulated image holds its {HEADER_BYTES}-byte header \
                 and at most {} KiB; nothing was written",
                args.app_kib,
                IMAGE_MAX_BYTES / 1024
            ))
            .help("give --app-kib from 1 to the device's app slot size (256 on the simulator)"));
        }
        return Ok(Image::new(&args.version, len_bytes as usize).behaviour(behaviour).bytes());
    };
    let data = read_limited(path).map_err(|error| {
        CommandError::new(format!(
            "the app image {} cannot be read: {error}; nothing was written",
            path.display()
        ))
        .help("give --app the built firmware file, or --sim-app healthy for a simulated one")
    })?;
    if data.is_empty() {
        return Err(CommandError::new(format!(
            "the app image {} is empty; nothing was written",
            path.display()
        ))
        .help("a device refuses an empty part (\"Malformed archive: part app is empty\"); give the built firmware"));
    }
    Ok(data)
}

/// The file's bytes, refusing a file over [`IMAGE_MAX_BYTES`] before reading it.
fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let metadata = fs::metadata(path).map_err(|e| e.to_string())?;
    if metadata.is_dir() {
        return Err("it is a folder".to_string());
    }
    if metadata.len() > IMAGE_MAX_BYTES {
        return Err(format!(
            "it is {} bytes, more than {} MiB, the largest flash a Mongoose OS board has",
            metadata.len(),
            IMAGE_MAX_BYTES >> 20
        ));
    }
    fs::read(path).map_err(|e| e.to_string())
}

/// A LittleFS image and the files it holds, with their sizes.
struct FsImage {
    image: Vec<u8>,
    files: Vec<(String, usize)>,
}

/// The LittleFS image of `dir`'s top-level files, checked to fit before it is built.
fn fs_image(dir: &Path, fs_kib: u32) -> Result<FsImage, CommandError> {
    check_fs_kib(fs_kib)?;
    let region_bytes = fs_kib * 1024;
    let listed = list_fs_dir(dir)?;
    let total_bytes: u64 = listed.iter().map(|file| file.len_bytes).sum();
    if total_bytes > u64::from(region_bytes) {
        let why = "together they are larger than the image".to_string();
        return Err(too_big(dir, listed.len(), total_bytes, fs_kib, &why));
    }
    let files = read_fs_files(listed)?;
    if files.iter().any(|(name, _)| name == USER_CONFIG) {
        eprintln!(
            "warning: {} holds {USER_CONFIG}, the device's user config: Mongoose OS says \"Never put \
             files like conf9.json in your firmware\", since the image's copy replaces the device's",
            dir.display()
        );
    }
    let borrowed: Vec<(&str, &[u8])> =
        files.iter().map(|(name, data)| (name.as_str(), data.as_slice())).collect();
    if let Err(error) = try_fit(region_bytes, &borrowed) {
        return Err(too_big(dir, files.len(), total_bytes, fs_kib, &error));
    }
    let image = lfs::build_image(region_bytes, FS_BLOCK_BYTES, &borrowed);
    let files = files.into_iter().map(|(name, data)| (name, data.len())).collect();
    Ok(FsImage { image, files })
}

fn too_big(dir: &Path, count: usize, total_bytes: u64, fs_kib: u32, why: &str) -> CommandError {
    let count = if count == 1 { "1 file".to_string() } else { format!("{count} files") };
    CommandError::new(format!(
        "the files of {} ({count}, {total_bytes} bytes) do not fit a {fs_kib} KiB LittleFS image: {why}; \
         nothing was written",
        dir.display()
    ))
    .help("give --fs-kib the device's fs slot size if it is larger, or ship fewer or smaller files")
}

fn check_fs_kib(fs_kib: u32) -> Result<(), CommandError> {
    let block_kib = FS_BLOCK_BYTES / 1024;
    let in_range = (FS_MIN_KIB..=(IMAGE_MAX_BYTES / 1024) as u32).contains(&fs_kib);
    if in_range && fs_kib.is_multiple_of(block_kib) {
        return Ok(());
    }
    Err(CommandError::new(format!(
        "--fs-kib {fs_kib} cannot size a LittleFS image of {block_kib} KiB blocks: it takes a whole \
         number of blocks, from {FS_MIN_KIB} to {} KiB; nothing was written",
        IMAGE_MAX_BYTES / 1024
    ))
    .help("give --fs-kib the device's fs slot size in KiB (64 on the simulator)"))
}

/// Writes the files once into a RAM flash of the image's geometry, as [`lfs::build_image`] will,
/// so that a file that does not fit is an error here rather than a panic there.
fn try_fit(region_bytes: u32, files: &[(&str, &[u8])]) -> Result<(), String> {
    let mut mem = vec![0xff; region_bytes as usize];
    let mut flash = RamFlash::<4, { FS_BLOCK_BYTES as usize }>::new(&mut mem);
    let region = Region::new(0, region_bytes);
    lfs::format(&mut flash, region).map_err(lfs_error)?;
    let mut fs = lfs::LfsFs::mount(&mut flash, region).map_err(lfs_error)?;
    for (name, data) in files {
        fs.write_file(name, data)
            .map_err(|e| format!("adding {name} ({} bytes): {}", data.len(), lfs_error(e)))?;
    }
    Ok(())
}

/// littlefs's failure without the advice for a device's filesystem, which a trial image does not need.
fn lfs_error<E: std::fmt::Debug>(error: lfs::Error<E>) -> String {
    match error {
        lfs::Error::Lfs { op, code, .. } => format!("littlefs {op} failed: {code}"),
        other => other.to_string(),
    }
}

/// A regular file of the fs folder, not read yet.
struct Listed {
    name: String,
    path: PathBuf,
    len_bytes: u64,
}

/// The top-level regular files of `dir`, sorted by name, each checked against what the device's
/// filesystem and merge take.
fn list_fs_dir(dir: &Path) -> Result<Vec<Listed>, CommandError> {
    let shown = dir.display();
    let refuse = |what: String, help: &str| {
        CommandError::new(format!("the fs folder {shown} {what}; nothing was written")).help(help.to_string())
    };
    let listing = fs::read_dir(dir).map_err(|e| match e.kind() {
        ErrorKind::NotFound => {
            refuse("does not exist".to_string(), "give --fs-dir the folder of the filesystem's files")
        }
        _ if dir.exists() && !dir.is_dir() => {
            refuse("is not a folder".to_string(), "give --fs-dir the folder of the filesystem's files")
        }
        _ => refuse(format!("cannot be listed: {e}"), "check its permissions"),
    })?;
    let mut files = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| refuse(format!("cannot be listed: {e}"), "check its permissions"))?;
        let Ok(name) = entry.file_name().into_string() else {
            let lossy = entry.file_name().to_string_lossy().into_owned();
            return Err(refuse(format!("holds {lossy:?}, whose name is not UTF-8"), "rename it in UTF-8"));
        };
        check_fs_name(dir, &name)?;
        let path = entry.path();
        // Followed through symbolic links: a link to a file ships the file.
        let metadata = fs::metadata(&path).map_err(|e| {
            refuse(format!("holds {name:?}, which cannot be read: {e}"), "check the file and its permissions")
        })?;
        if metadata.is_dir() {
            return Err(refuse(
                format!(
                    "holds the subfolder {name:?}: the device merges the top level only, so the image \
                     holds top-level files only"
                ),
                &format!("move the files of {name:?} up into {shown}, or leave them out"),
            ));
        }
        if !metadata.is_file() {
            return Err(refuse(format!("holds {name:?}, which is not a regular file"), "leave it out"));
        }
        files.push(Listed { name, path, len_bytes: metadata.len() });
        if files.len() > MERGE_FILES_MAX as usize {
            return Err(refuse(
                format!(
                    "holds more than {MERGE_FILES_MAX} files, the most the device's merge lists: the \
                     next update would fail"
                ),
                "ship fewer files",
            ));
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn read_fs_files(listed: Vec<Listed>) -> Result<Vec<(String, Vec<u8>)>, CommandError> {
    listed
        .into_iter()
        .map(|file| {
            let data = read_limited(&file.path).map_err(|e| {
                CommandError::new(format!("{} cannot be read: {e}; nothing was written", file.path.display()))
                    .help("check the file and its permissions")
            })?;
            Ok((file.name, data))
        })
        .collect()
}

/// A file name the device's filesystem merge takes: at most `ota_core::fs::NAME_MAX_BYTES`, no
/// `/`, not the merge's temporary name.
fn check_fs_name(dir: &Path, name: &str) -> Result<(), CommandError> {
    let max_bytes = ota_core::fs::NAME_MAX_BYTES;
    let what = if name.len() > max_bytes {
        format!(
            "holds {name:?}, a {}-byte name; the device's merge takes names of at most {max_bytes} bytes",
            name.len()
        )
    } else if name.contains('/') || name.contains('\0') {
        format!("holds {name:?}; a device file name holds no '/' nor NUL")
    } else if name == TEMP_NAME {
        format!("holds {TEMP_NAME:?}, the merge's temporary file, which the device removes at the first boot")
    } else {
        return Ok(());
    };
    Err(CommandError::new(format!("the fs folder {} {what}; nothing was written", dir.display()))
        .help("rename the file or leave it out"))
}

/// Writes `data` to a temporary file beside `out`, then renames it over `out`.
fn write_atomically(out: &Path, data: &[u8]) -> Result<(), CommandError> {
    let file_name =
        out.file_name().map_or_else(|| "bundle".into(), |name| name.to_string_lossy().into_owned());
    let temp = out_folder(out).join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = fs::write(&temp, data).and_then(|()| fs::rename(&temp, out));
    result.map_err(|error| {
        // The temporary file may or may not exist; either way it must not stay.
        let _ = fs::remove_file(&temp);
        CommandError::new(format!("cannot write {}: {error}; nothing was written", out.display()))
            .help("check the output folder's permissions and free space")
    })
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = ota_bundle::read_entries(&self.zip).expect("a bundle just built reads back");
        let folder = if self.folder.is_empty() { String::new() } else { format!(", under {}", self.folder) };
        writeln!(
            f,
            "wrote {} ({} bytes, {} stored entries, manifest.json first{folder})",
            self.path.display(),
            self.zip.len(),
            entries.len()
        )?;
        for entry in &entries {
            let data = entry.data(&self.zip);
            let name = entry.name.strip_prefix(self.folder.as_str()).unwrap_or(&entry.name);
            let mut line = format!("  {name:<24} {:>8} bytes", data.len());
            if name != ota_bundle::MANIFEST_NAME {
                let _ = write!(line, "  sha1 {}", hex(&sha1::Sha1::digest(data)));
            }
            writeln!(f, "{line}")?;
        }
        if let Some(fs_files) = &self.fs_files {
            let files: Vec<String> =
                fs_files.iter().map(|(name, len)| format!("{name} ({len} bytes)")).collect();
            let files = if files.is_empty() { "no files".to_string() } else { files.join(", ") };
            writeln!(
                f,
                "  fs.img: LittleFS, {} KiB, {} KiB blocks: {files}",
                self.fs_kib,
                FS_BLOCK_BYTES / 1024
            )?;
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
