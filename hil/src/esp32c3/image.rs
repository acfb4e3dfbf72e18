//! ESP32-C3 images, built offline from the firmware's ELF with espflash as a library: the
//! second-stage boot loader (espflash's bundled ESP-IDF one), the partition table made from
//! `ota_app::partitions::PARTITION_CSV`, and the app image. The runner then writes what espflash
//! does not know about: the app descriptor of each bundle (`ota_app::image`), and the boot state.
//!
//! An app image, as the ROM and the second-stage boot loader read it (ESP-IDF's
//! `esp_image_header_t`):
//!
//! | bytes           | field                                                          |
//! |-----------------|----------------------------------------------------------------|
//! | 0               | magic 0xE9                                                     |
//! | 1               | segment count                                                  |
//! | 2, 3            | SPI mode; flash size and frequency                             |
//! | 4..8            | entry point                                                    |
//! | 12..14          | chip id (5: ESP32-C3)                                          |
//! | 23              | 1 when a SHA-256 follows the image                             |
//! | 24..            | segments: load address, length (u32 LE each), then the data    |
//! | after them      | padding to 16 bytes, the last padding byte a checksum: 0xEF XOR every data byte |
//! | then            | SHA-256 of everything before it (when byte 23 says so)         |
//!
//! A bundle's app is the one built image with its descriptor patched, so the checksum byte and
//! the SHA-256 are computed again ([`seal`]); the boot loader refuses an image whose either does
//! not hold.

use std::ops::Range;
use std::path::Path;

use espflash::flasher::{FlashData, FlashFrequency, FlashMode, FlashSettings, FlashSize};
use espflash::image_format::idf::IdfBootloaderFormat;
use espflash::target::{Chip, XtalFrequency};
use ota_app::image::Behaviour;
use ota_app::partitions;
use sha2::Digest as _;

/// The first byte of every ESP image.
pub const IMAGE_MAGIC: u8 = 0xE9;
/// ESP-IDF's chip id of the ESP32-C3 (`esp_chip_id_t`).
pub const CHIP_ID_ESP32C3: u16 = 5;
/// `esp_image_header_t`, then each segment's `esp_image_segment_header_t`.
pub const HEADER_BYTES: usize = 24;
const SEGMENT_HEADER_BYTES: usize = 8;
/// The ROM loads at most 16 segments.
pub const SEGMENTS_MAX: usize = 16;
const CHECKSUM_SEED: u8 = 0xEF;
const DIGEST_BYTES: usize = 32;
/// The partition table's place and its largest size (one sector).
pub const PARTITION_TABLE_MAX_BYTES: usize = 0x1000;
/// The app partition espflash places the app in: slot 0, which a factory image boots.
const FACTORY_APP_PARTITION: &str = "ota_0";

/// What espflash made of the firmware's ELF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// ESP-IDF's second-stage boot loader, for flash offset 0.
    pub boot_loader: Vec<u8>,
    /// The binary partition table (with its MD5 entry), for [`partitions::PARTITION_TABLE_OFFSET`].
    pub partition_table: Vec<u8>,
    /// The app image as it goes into ota_0 or ota_1 (the two are byte-identical).
    pub app: Vec<u8>,
}

/// Builds the three images from the firmware's ELF. Blocking: espflash reads the ELF and its
/// bundled boot loader.
pub fn build(elf: &[u8]) -> Result<Built, String> {
    let settings =
        FlashSettings::new(Some(FlashMode::Dio), Some(FlashSize::_4Mb), Some(FlashFrequency::_80Mhz));
    let flash_data = FlashData::new(settings, 0, None, Chip::Esp32c3, XtalFrequency::_40Mhz);
    // espflash reads a partition table from a file only: the map's CSV goes through one.
    let csv = CsvFile::write(partitions::PARTITION_CSV)?;
    let format = IdfBootloaderFormat::new(
        elf,
        &flash_data,
        Some(csv.path()),
        None,
        Some(partitions::PARTITION_TABLE_OFFSET),
        Some(FACTORY_APP_PARTITION),
    )
    .map_err(|e| format!("espflash cannot make an ESP32-C3 image of the ELF: {e}"))?;
    let mut boot_loader = None;
    let mut partition_table = None;
    let mut app = None;
    let app_offset = partitions::layout().app[0].offset;
    for segment in format.flash_segments() {
        match segment.addr {
            0 => boot_loader = Some(segment.data.into_owned()),
            a if a == partitions::PARTITION_TABLE_OFFSET => partition_table = Some(segment.data.into_owned()),
            a if a == app_offset => app = Some(segment.data.into_owned()),
            a => return Err(format!("espflash placed a segment at {a:#x}, outside the partition map")),
        }
    }
    let missing = |what: &str| format!("espflash made no {what}");
    let built = Built {
        boot_loader: boot_loader.ok_or_else(|| missing("boot loader"))?,
        partition_table: partition_table.ok_or_else(|| missing("partition table"))?,
        app: app.ok_or_else(|| missing(&format!("app image at ota_0 ({app_offset:#x})")))?,
    };
    if built.boot_loader.len() > partitions::BOOT_LOADER_MAX_BYTES as usize {
        return Err(format!(
            "the boot loader is {} bytes, more than the {} bytes before the partition table",
            built.boot_loader.len(),
            partitions::BOOT_LOADER_MAX_BYTES
        ));
    }
    if built.partition_table.len() > PARTITION_TABLE_MAX_BYTES {
        return Err(format!(
            "the partition table is {} bytes, more than a sector",
            built.partition_table.len()
        ));
    }
    check(&built.app).map_err(|e| format!("espflash's app image: {e}"))?;
    if ota_app::image::find_header(&built.app).is_none() {
        return Err(format!(
            "the app image holds no app descriptor (magic {:?}) in its first {} bytes: bundles could not say their version and behaviour",
            String::from_utf8_lossy(&ota_app::image::MAGIC),
            ota_app::image::HEADER_SEARCH_BYTES
        ));
    }
    Ok(built)
}

/// The ELF's bytes, read.
pub fn read_elf(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the firmware ELF {}: {e}", path.display()))
}

/// A temporary file holding the partition CSV, removed when dropped.
struct CsvFile(std::path::PathBuf);

impl CsvFile {
    fn write(text: &str) -> Result<CsvFile, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("hil-esp32c3-partitions-{}-{n}.csv", std::process::id()));
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(CsvFile(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for CsvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where an app image's parts are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub chip_id: u16,
    pub entry: u32,
    /// Each segment's load address and where its data lies in the image.
    pub segments: Vec<(u32, Range<usize>)>,
    /// The checksum byte's offset.
    pub checksum_at: usize,
    /// The SHA-256's offset, when one is appended.
    pub digest_at: Option<usize>,
}

impl Layout {
    /// The image's length: through the checksum, and the SHA-256 when there is one.
    pub fn len_bytes(&self) -> usize {
        self.digest_at.map_or(self.checksum_at + 1, |at| at + DIGEST_BYTES)
    }
}

/// Reads an app image's header and walks its segments; checks nothing but the bounds.
pub fn parse(image: &[u8]) -> Result<Layout, String> {
    if image.len() < HEADER_BYTES {
        return Err(format!("{} bytes is shorter than the {HEADER_BYTES}-byte image header", image.len()));
    }
    if image[0] != IMAGE_MAGIC {
        return Err(format!("the first byte is {:#04x}, not the image magic {IMAGE_MAGIC:#04x}", image[0]));
    }
    let count = usize::from(image[1]);
    if count == 0 || count > SEGMENTS_MAX {
        return Err(format!("{count} segments; an image has 1 to {SEGMENTS_MAX}"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().expect("4 bytes"));
    let mut at = HEADER_BYTES;
    let mut segments = Vec::with_capacity(count);
    for index in 0..count {
        if image.len() < at + SEGMENT_HEADER_BYTES {
            return Err(format!("segment {index}'s header at {at:#x} runs past the image's end"));
        }
        let (address, len) = (u32_at(at), u32_at(at + 4) as usize);
        let data = at + SEGMENT_HEADER_BYTES..at + SEGMENT_HEADER_BYTES + len;
        if data.end > image.len() {
            return Err(format!(
                "segment {index} ({len} bytes at {:#x}) runs past the image's end",
                data.start
            ));
        }
        at = data.end;
        segments.push((address, data));
    }
    // The checksum is the last byte of the 16-byte block the segments end in.
    let checksum_at = (at + 1).next_multiple_of(16) - 1;
    let digest_at = (image[23] == 1).then_some(checksum_at + 1);
    let layout = Layout {
        chip_id: u16::from_le_bytes([image[12], image[13]]),
        entry: u32_at(4),
        segments,
        checksum_at,
        digest_at,
    };
    if layout.len_bytes() > image.len() {
        return Err(format!(
            "the image is {} bytes; its checksum and digest need {}",
            image.len(),
            layout.len_bytes()
        ));
    }
    Ok(layout)
}

/// The checksum byte the segments' data gives.
fn checksum(image: &[u8], layout: &Layout) -> u8 {
    let data = layout.segments.iter().flat_map(|(_, range)| &image[range.clone()]);
    data.fold(CHECKSUM_SEED, |sum, byte| sum ^ byte)
}

/// Checks an app image as the boot loader does: its layout, checksum byte and SHA-256.
pub fn check(image: &[u8]) -> Result<Layout, String> {
    let layout = parse(image)?;
    let want = checksum(image, &layout);
    if image[layout.checksum_at] != want {
        return Err(format!(
            "checksum byte at {:#x} is {:#04x}, the segments give {want:#04x}",
            layout.checksum_at, image[layout.checksum_at]
        ));
    }
    if let Some(at) = layout.digest_at {
        let digest = sha2::Sha256::digest(&image[..at]);
        if image[at..at + DIGEST_BYTES] != digest[..] {
            return Err(format!("the SHA-256 at {at:#x} is not the image's"));
        }
    }
    Ok(layout)
}

/// Computes the checksum byte and the SHA-256 again, after the image's data changed.
pub fn seal(image: &mut [u8]) -> Result<(), String> {
    let layout = parse(image)?;
    image[layout.checksum_at] = checksum(image, &layout);
    if let Some(at) = layout.digest_at {
        let digest = sha2::Sha256::digest(&image[..at]);
        image[at..at + DIGEST_BYTES].copy_from_slice(&digest);
    }
    Ok(())
}

/// The built app image with its app descriptor written for `version` and `behaviour`, sealed
/// again. The descriptor must lie inside one segment's data, where the firmware reads it from
/// flash; anything else (a header's bytes, padding) is refused, so a patch never breaks the
/// image's structure. The built image is left as it was.
pub fn patch(built: &[u8], version: &str, behaviour: Behaviour) -> Result<Vec<u8>, String> {
    let layout = check(built)?;
    let at = ota_app::image::find_header(built).ok_or_else(|| {
        format!(
            "the app image has no app descriptor in its first {} bytes",
            ota_app::image::HEADER_SEARCH_BYTES
        )
    })?;
    let field = at..at + ota_app::image::HEADER_BYTES;
    if !layout.segments.iter().any(|(_, data)| data.start <= field.start && field.end <= data.end) {
        return Err(format!("the app descriptor at {at:#x} is not inside one segment's data"));
    }
    let mut app = built.to_vec();
    ota_app::image::write_header(&mut app[field], version, behaviour)
        .map_err(|e| format!("cannot write the app descriptor for {version}: {e}"))?;
    seal(&mut app)?;
    Ok(app)
}

/// The factory image: a 4 MiB flash as it leaves the factory. 0xFF everywhere; the bundle
/// provisioned by `ota-core` (its app in ota_0, its fs in fs_0, the boot state naming slot 0
/// committed) through the same path as the QEMU board's flash file; then espflash's boot loader
/// at 0 and partition table at 0x8000. otadata stays erased, so the boot loader boots ota_0.
pub fn factory_image(built: &Built, platform: &str, bundle: &[u8]) -> Result<Vec<u8>, String> {
    let mut image = vec![0xFF_u8; partitions::FLASH_BYTES as usize];
    crate::board::device::provision(&mut image, platform, bundle)?;
    let overlay = |image: &mut Vec<u8>, at: u32, bytes: &[u8]| {
        let at = at as usize;
        image[at..at + bytes.len()].copy_from_slice(bytes);
    };
    overlay(&mut image, partitions::BOOT_LOADER_OFFSET, &built.boot_loader);
    overlay(&mut image, partitions::PARTITION_TABLE_OFFSET, &built.partition_table);
    Ok(image)
}

/// Writes `conf9` into fs_0 of a factory image as `conf9.json`, merged over the one the bundle
/// brought (its keys kept unless `conf9` sets them), as a factory would configure the device.
pub fn give_conf9(image: &mut [u8], conf9: &str) -> Result<(), String> {
    let layout = partitions::layout();
    let region = layout.fs(ota_core::layout::Slot::S0);
    let mapped = &mut image[..partitions::FLASH_BYTES as usize];
    let mut flash = ota_core::flash::RamFlash::<4, 4096>::with_contents(mapped);
    let lfs = |e: ota_sim::lfs::Error<_>| format!("conf9.json in fs_0: {e:?}");
    let mut fs = ota_sim::lfs::LfsFs::mount(&mut flash, region).map_err(lfs)?;
    let mut merged: serde_json::Value = serde_json::from_str(conf9).map_err(|e| e.to_string())?;
    if let Some(old) = fs.read_to_vec("conf9.json").map_err(lfs)? {
        let mut old: serde_json::Value = serde_json::from_slice(&old)
            .map_err(|e| format!("the bundle's conf9.json is not JSON ({e}); cannot add the Wi-Fi to it"))?;
        merge(&mut old, merged);
        merged = old;
    }
    fs.write_file("conf9.json", merged.to_string().as_bytes()).map_err(lfs)
}

/// `over`'s keys into `base`, objects merged key by key.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, over) => *base = over,
    }
}

/// `conf9.json` as the board is given it: `wifi.sta` from the board file.
pub fn wifi_conf9(ssid: &str, pass: Option<&str>) -> String {
    let mut sta = serde_json::json!({ "enable": true, "ssid": ssid });
    if let Some(pass) = pass {
        sta["pass"] = serde_json::json!(pass);
    }
    serde_json::json!({ "wifi": { "sta": sta } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of two segments, as espflash lays one out, sealed.
    fn image(data: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_BYTES];
        out[0] = IMAGE_MAGIC;
        out[1] = data.len() as u8;
        out[12..14].copy_from_slice(&CHIP_ID_ESP32C3.to_le_bytes());
        out[23] = 1;
        for (i, bytes) in data.iter().enumerate() {
            out.extend((0x3c00_0000_u32 + i as u32 * 0x1000).to_le_bytes());
            out.extend((bytes.len() as u32).to_le_bytes());
            out.extend(*bytes);
        }
        let end = (out.len() + 1).next_multiple_of(16);
        out.resize(end + DIGEST_BYTES, 0);
        seal(&mut out).unwrap();
        out
    }

    fn descriptor(version: &str) -> Vec<u8> {
        ota_app::image::Image::new(version, ota_app::image::HEADER_BYTES).bytes()
    }

    #[test]
    fn a_patched_image_passes_the_boot_loaders_checks() {
        let built = image(&[b"rodata..", &[descriptor("1.0").as_slice(), b"more"].concat(), b"code"]);
        assert_eq!(check(&built).unwrap().segments.len(), 3);
        let app = patch(&built, "2.0-rc1", Behaviour::NeverCommits).unwrap();
        let layout = check(&app).unwrap();
        assert_eq!(app.len(), built.len());
        assert_eq!(layout.len_bytes(), app.len());
        let at = ota_app::image::find_header(&app).unwrap();
        assert_eq!(
            ota_app::image::parse_header(&app[at..]),
            (Behaviour::NeverCommits, Some("2.0-rc1".into()))
        );
        // The unsealed patch is what the boot loader would refuse.
        let mut unsealed = built.clone();
        ota_app::image::write_header(&mut unsealed[at..], "2.0-rc1", Behaviour::NeverCommits).unwrap();
        assert!(check(&unsealed).unwrap_err().starts_with("checksum byte at"), "{:?}", check(&unsealed));
    }

    #[test]
    fn broken_images_are_refused_with_the_reason() {
        let good = image(&[&descriptor("1.0")]);
        let mut bad_digest = good.clone();
        let last = bad_digest.len() - 1;
        bad_digest[last] ^= 1;
        assert_eq!(check(&bad_digest).unwrap_err(), "the SHA-256 at 0x50 is not the image's");
        assert_eq!(check(&good[..40]).unwrap_err(), "segment 0 (40 bytes at 0x20) runs past the image's end");
        assert_eq!(check(&[0u8; 30]).unwrap_err(), "the first byte is 0x00, not the image magic 0xe9");
        let mut no_descriptor = image(&[b"nothing here"]);
        seal(&mut no_descriptor).unwrap();
        assert!(patch(&no_descriptor, "1.0", Behaviour::Healthy).unwrap_err().contains("no app descriptor"));
    }

    #[test]
    fn the_wifi_credentials_go_under_wifi_sta() {
        assert_eq!(
            wifi_conf9("lab", Some("secret12")),
            r#"{"wifi":{"sta":{"enable":true,"pass":"secret12","ssid":"lab"}}}"#
        );
    }
}
