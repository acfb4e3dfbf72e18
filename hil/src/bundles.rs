//! The bytes of a scenario's bundles: read from a file, or built from a [`BundleSpec`] with
//! `ota-bundle` — a simulated firmware image (its header names the version and behaviour) and a
//! LittleFS image of the spec's files, sized for the board's filesystem slot.

use ota_bundle::{Bundle, Defect as BundleDefect};
use ota_sim::image::Image;

use crate::board::BoardInfo;
use crate::scenario::model::{BundleSource, BundleSpec, Defect};

/// The erase unit of the boards' filesystems (LittleFS block size).
const FS_BLOCK_BYTES: u32 = 4096;

/// What a bundle looks like when it reaches the board: its bytes, and how many of them are sent
/// before the upload ends (a truncated upload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub bytes: Vec<u8>,
    pub label: String,
}

pub fn build(source: &BundleSource, board: &BoardInfo) -> Result<Built, String> {
    match source {
        BundleSource::File(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read bundle {}: {e}", path.display()))?;
            Ok(Built { bytes, label: path.display().to_string() })
        }
        BundleSource::Spec(spec) => build_spec(spec, board),
    }
}

fn build_spec(spec: &BundleSpec, board: &BoardInfo) -> Result<Built, String> {
    let app_bytes = match spec.defect {
        Some(Defect::TooBig) => board.app_slot_bytes as usize + 1,
        _ => spec.app_bytes,
    };
    if app_bytes < ota_sim::image::HEADER_BYTES {
        return Err(format!("app of {app_bytes} bytes is smaller than the image header"));
    }
    let app = match &board.app_image {
        Some(built) => patched(built, &spec.version, spec.behaviour, app_bytes, spec.defect)?,
        None => Image::new(&spec.version, app_bytes).behaviour(spec.behaviour).bytes(),
    };
    let files: Vec<(&str, &[u8])> = spec.files.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    let fs = ota_sim::lfs::build_image(board.fs_slot_bytes, FS_BLOCK_BYTES, &files);
    let platform = spec.platform.clone().unwrap_or_else(|| board.platform.clone());
    let bundle =
        Bundle::new(&spec.name, &platform).version(&spec.version).build_id(&spec.build_id).app(app).fs(fs);
    let app_src = format!("{}.bin", spec.name);
    let mut label = format!("{} {}", spec.name, spec.version);
    let bytes = match spec.defect {
        None | Some(Defect::TooBig) => bundle.build(),
        Some(Defect::BadChecksum) => bundle.build_with(BundleDefect::WrongSha1 { part: "app".into() }),
        Some(Defect::BadCrc) => bundle.build_with(BundleDefect::WrongCrc { entry: app_src }),
        Some(Defect::Compressed) => bundle.build_with(BundleDefect::Compressed { entry: app_src }),
        Some(Defect::Streaming) => bundle.build_with(BundleDefect::Streaming { entry: app_src }),
        Some(Defect::ManifestNotFirst) => bundle.build_with(BundleDefect::ManifestNotFirst),
        Some(Defect::NotAZip) => b"<html><body>404 Not Found</body></html>\n".to_vec(),
        Some(Defect::Truncated(fraction)) => {
            let whole = bundle.build();
            let keep = (whole.len() as f64 * fraction) as usize;
            whole[..keep].to_vec()
        }
    };
    if let Some(defect) = spec.defect {
        label += &format!(" ({})", defect_name(defect));
    }
    Ok(Built { bytes, label })
}

/// The board's one built firmware image with its app descriptor written for this bundle
/// (`ota_app::image::write_header`): every version and behaviour from one binary, no compile.
/// A "too big" app is the image padded past the slot.
fn patched(
    built: &[u8],
    version: &str,
    behaviour: ota_app::image::Behaviour,
    too_big_bytes: usize,
    defect: Option<Defect>,
) -> Result<Vec<u8>, String> {
    // An ESP image (the ESP32-C3 board's) holds its descriptor inside a segment, behind a
    // checksum and a SHA-256 the boot loader checks; the QEMU board's starts with it.
    let mut app = if built.first() == Some(&crate::esp32c3::image::IMAGE_MAGIC) {
        crate::esp32c3::image::patch(built, version, behaviour)?
    } else {
        let mut app = built.to_vec();
        ota_app::image::write_header(&mut app, version, behaviour)
            .map_err(|e| format!("cannot write the app descriptor for {version}: {e}"))?;
        app
    };
    if defect == Some(Defect::TooBig) && app.len() < too_big_bytes {
        app.resize(too_big_bytes, 0);
    }
    Ok(app)
}

pub fn defect_name(defect: Defect) -> String {
    match defect {
        Defect::BadChecksum => "bad checksum".into(),
        Defect::BadCrc => "bad CRC".into(),
        Defect::Compressed => "compressed entry".into(),
        Defect::Streaming => "streaming entry".into(),
        Defect::Truncated(f) => format!("truncated at {:.0}%", f * 100.0),
        Defect::TooBig => "app larger than the slot".into(),
        Defect::NotAZip => "not a zip".into(),
        Defect::ManifestNotFirst => "manifest not first".into(),
    }
}
