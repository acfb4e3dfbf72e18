//! `hil flash --board boards/esp32c3.toml`: writes the factory image to the attached board (the
//! one `hil image` builds, or `--image FILE`) with the board file's flasher, then resets it.
//! A board that is not attached is one line and exit 2.

use std::path::PathBuf;
use std::process::ExitCode;

use ota_app::partitions;

use super::CommandError;
use crate::board::esp32c3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board file (kind = "esp32c3").
    #[arg(long, value_name = "FILE")]
    pub board: PathBuf,
    /// A factory image to write (4 MiB, from `hil image`); default: built now from the ELF.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// The firmware's version, when the image is built now.
    #[arg(long, default_value = "factory", conflicts_with = "image")]
    pub version: String,
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let (board, config) = super::image::load_esp32c3(&args.board)?;
    let port = esp32c3::attached(&config)
        .map_err(|e| CommandError::new(format!("board {}: {e}; nothing was flashed", board.name)))?;
    let image = match &args.image {
        Some(path) => {
            let image = std::fs::read(path)
                .map_err(|e| CommandError::new(format!("cannot read {}: {e}", path.display())))?;
            if image.len() != partitions::FLASH_BYTES as usize {
                return Err(CommandError::new(format!(
                    "{} is {} bytes, not a {} MiB factory image; nothing was flashed",
                    path.display(),
                    image.len(),
                    partitions::FLASH_BYTES >> 20
                ))
                .help("make one with `hil image --board FILE -o factory.bin`"));
            }
            image
        }
        None => super::image::factory(&board.platform, &config, &args.version)?.image,
    };
    println!("flashing {} bytes to {} with {}", image.len(), port.display(), config.flasher.name());
    esp32c3::write_flash(&config, &port, &[(0, &image)], &mut |line| println!("  {line}")).map_err(|e| {
        CommandError::new(e).help("check the cable, that nothing else holds the port, and the board file")
    })?;
    println!("flashed; the board boots ota_0");
    Ok(ExitCode::SUCCESS)
}
