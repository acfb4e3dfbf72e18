//! `hil image --board boards/esp32c3.toml -o factory.bin`: the ESP32-C3's factory image, a
//! 4 MiB flash as it leaves the factory (`esp32c3::image::factory_image`): espflash's boot loader
//! at 0, the partition table at 0x8000, the boot state at 0xb000 naming slot 0 committed, the
//! firmware's app image (its descriptor written for `--version`) in ota_0, fs_0 formatted with
//! the board file's Wi-Fi in `conf9.json`. `--bundle` also writes the bundle it provisioned.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ota_app::image::Behaviour;
use ota_app::partitions;

use super::CommandError;
use crate::board::config::{self, Backend, Esp32c3Config};
use crate::esp32c3::{self, image};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board file (kind = "esp32c3").
    #[arg(long, value_name = "FILE")]
    pub board: PathBuf,
    /// The firmware's version in the factory image.
    #[arg(long, default_value = "factory")]
    pub version: String,
    /// The factory image to write (4 MiB).
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also write the bundle the image was provisioned from (fw.zip).
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let (board, esp) = load_esp32c3(&args.board)?;
    let factory = factory(&board.platform, &esp, &args.version)?;
    write(&args.out, &factory.image)?;
    if let Some(path) = &args.bundle {
        write(path, &factory.bundle)?;
    }
    print!("{}", factory.describe(&args.out));
    Ok(ExitCode::SUCCESS)
}

/// A board file that must be an ESP32-C3's.
pub fn load_esp32c3(path: &Path) -> Result<(config::BoardConfig, Esp32c3Config), CommandError> {
    let board = config::load(path).map_err(|e| {
        CommandError::new(e.to_string()).help("see boards/README.md for the keys of a board file")
    })?;
    match &board.backend {
        Backend::Esp32c3(esp) => {
            let esp = esp.clone();
            Ok((board, esp))
        }
        _ => Err(CommandError::new(format!(
            "{}: kind {:?} is not a board hil flashes; nothing was written",
            path.display(),
            board.kind()
        ))
        .help("give an ESP32-C3 board file such as boards/esp32c3.toml")),
    }
}

/// espflash's images from the firmware's ELF (the board file's, `HIL_ESP32C3_ELF`, or the
/// default path).
pub fn build_from_elf(config: Option<&Esp32c3Config>) -> Result<image::Built, CommandError> {
    let path = esp32c3::elf_path(config);
    let elf = image::read_elf(&path).map_err(|e| {
        CommandError::new(format!("{e}; nothing was written"))
            .help(format!("build it: {}", esp32c3::BUILD_ELF))
    })?;
    image::build(&elf).map_err(|e| CommandError::new(format!("{}: {e}; nothing was written", path.display())))
}

/// A factory image and what it was made of.
pub struct Factory {
    pub built: image::Built,
    pub bundle: Vec<u8>,
    pub image: Vec<u8>,
}

/// The factory bundle (the firmware, healthy, at `version`; an empty fs) provisioned into a
/// factory image, with the board's Wi-Fi given.
pub fn factory(platform: &str, config: &Esp32c3Config, version: &str) -> Result<Factory, CommandError> {
    let built = build_from_elf(Some(config))?;
    let app = image::patch(&built.app, version, Behaviour::Healthy).map_err(CommandError::new)?;
    let layout = partitions::layout();
    let fs = ota_sim::lfs::build_image(layout.fs[0].size_bytes, partitions::ERASE_BYTES, &[]);
    let bundle = ota_bundle::Bundle::new("ota-esp32c3-fw", platform)
        .version(version)
        .build_id(version)
        .app(app)
        .fs(fs)
        .build();
    let mut flash = image::factory_image(&built, platform, &bundle).map_err(CommandError::new)?;
    if let Some(wifi) = &config.wifi {
        let pass = crate::board::esp32c3::wifi_pass(&wifi.pass).map_err(|e| CommandError {
            message: format!("{}; nothing was written", e.message),
            help: e.help,
        })?;
        image::give_conf9(&mut flash, &image::wifi_conf9(&wifi.ssid, pass.as_deref()))
            .map_err(CommandError::new)?;
    }
    Ok(Factory { built, bundle, image: flash })
}

impl Factory {
    /// What the image holds, where, for the terminal.
    pub fn describe(&self, out: &Path) -> String {
        let layout = partitions::layout();
        let app = image::parse(&self.built.app).expect("checked when built");
        let mut text = format!("wrote {} ({} bytes)\n", out.display(), self.image.len());
        text += &format!(
            "  {:#08x}  boot loader       {:>7} bytes\n",
            partitions::BOOT_LOADER_OFFSET,
            self.built.boot_loader.len()
        );
        text += &format!(
            "  {:#08x}  partition table   {:>7} bytes\n",
            partitions::PARTITION_TABLE_OFFSET,
            self.built.partition_table.len()
        );
        text += &format!(
            "  {:#08x}  otadata           erased (the boot loader boots ota_0)\n",
            partitions::OTADATA_OFFSET
        );
        text += &format!("  {:#08x}  boot state        slot 0 committed\n", layout.boot_state[0].offset);
        text += &format!(
            "  {:#08x}  ota_0 app image   {:>7} bytes, {} segments, entry {:#x}\n",
            layout.app[0].offset,
            self.built.app.len(),
            app.segments.len(),
            app.entry
        );
        text += &format!("  {:#08x}  fs_0              LittleFS\n", layout.fs[0].offset);
        text
    }
}

/// Writes `data` to a temporary file beside `path`, then renames it over `path`.
pub fn write(path: &Path, data: &[u8]) -> Result<(), CommandError> {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, data)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| CommandError::new(format!("cannot write {}: {e}", path.display())))
}
