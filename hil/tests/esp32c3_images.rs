//! The ESP32-C3's images, decoded: the factory image and a bundle built from the real firmware
//! ELF by espflash, read back here as the ROM, the second-stage boot loader and the core read
//! them. The decoders below are written from ESP-IDF's formats, not taken from espflash, so a
//! mistake in how the runner drives espflash shows.
//!
//! Needs the firmware's ELF: `HIL_ESP32C3_ELF`, else
//! `target/riscv32imc-unknown-none-elf/release/ota-esp32c3-fw` (built by
//! `cargo build --release -p ota-port-esp32c3 --target riscv32imc-unknown-none-elf`). Without it
//! the tests print why and pass, unless `HIL_REQUIRE_ESP32C3=1` (CI sets it after building the
//! firmware), which makes a missing ELF a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use md5::Digest as _;
use ota_app::image::Behaviour;
use ota_app::partitions;
use ota_hil::esp32c3::image;

const HIL: &str = env!("CARGO_BIN_EXE_hil");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The firmware's ELF, or `None` (said on stderr) when it is missing and not required.
fn elf_path() -> Option<PathBuf> {
    let required = std::env::var_os("HIL_REQUIRE_ESP32C3").is_some_and(|v| v == "1");
    let path = match std::env::var_os("HIL_ESP32C3_ELF") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace().join("target"), PathBuf::from);
            target.join("riscv32imc-unknown-none-elf/release/ota-esp32c3-fw")
        }
    };
    if path.is_file() {
        return Some(path);
    }
    assert!(!required, "HIL_REQUIRE_ESP32C3=1 but the firmware's ELF {} is missing", path.display());
    eprintln!(
        "esp32c3_images: skipped: no firmware ELF at {} (build it, or set HIL_ESP32C3_ELF; HIL_REQUIRE_ESP32C3=1 makes this a failure)",
        path.display()
    );
    None
}

fn built(path: &Path) -> image::Built {
    image::build(&std::fs::read(path).unwrap()).unwrap()
}

/// An app image as ESP-IDF's `esp_image_header_t` and segment headers describe it.
struct Decoded {
    chip_id: u16,
    segments: Vec<(u32, usize)>,
    len_bytes: usize,
}

/// Decodes and checks an app image: magic, chip, segments, the checksum byte, the SHA-256.
fn decode_app(bytes: &[u8]) -> Decoded {
    assert_eq!(bytes[0], 0xE9, "image magic");
    let count = bytes[1] as usize;
    assert!((1..=16).contains(&count), "{count} segments");
    let chip_id = u16::from_le_bytes([bytes[12], bytes[13]]);
    assert_eq!(bytes[23], 1, "a SHA-256 is appended");
    let mut at = 24;
    let mut checksum = 0xEF_u8;
    let mut segments = Vec::new();
    for _ in 0..count {
        let address = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8;
        checksum = bytes[at..at + len].iter().fold(checksum, |sum, b| sum ^ b);
        segments.push((address, len));
        at += len;
    }
    // Padding to 16 bytes, the checksum in the block's last byte.
    let checksum_at = (at + 1).next_multiple_of(16) - 1;
    assert_eq!(bytes[checksum_at], checksum, "checksum byte at {checksum_at:#x}");
    let digest_at = checksum_at + 1;
    let digest = sha2::Sha256::digest(&bytes[..digest_at]);
    assert_eq!(&bytes[digest_at..digest_at + 32], &digest[..], "appended SHA-256");
    Decoded { chip_id, segments, len_bytes: digest_at + 32 }
}

/// One entry of an ESP-IDF partition table.
#[derive(Debug, PartialEq)]
struct Partition {
    name: String,
    kind: u8,
    subtype: u8,
    offset: u32,
    size: u32,
}

/// Decodes a binary partition table: 32-byte entries (magic 0x50AA), then the MD5 entry
/// (0xEBEB, 14 bytes 0xFF, the MD5 of the entries before it), then 0xFF.
fn decode_table(bytes: &[u8]) -> Vec<Partition> {
    let mut partitions = Vec::new();
    for (index, entry) in bytes.chunks(32).enumerate() {
        match [entry[0], entry[1]] {
            [0xAA, 0x50] => {
                let name = &entry[12..28];
                let len = name.iter().position(|&b| b == 0).unwrap_or(16);
                partitions.push(Partition {
                    name: String::from_utf8(name[..len].to_vec()).unwrap(),
                    kind: entry[2],
                    subtype: entry[3],
                    offset: u32::from_le_bytes(entry[4..8].try_into().unwrap()),
                    size: u32::from_le_bytes(entry[8..12].try_into().unwrap()),
                });
            }
            [0xEB, 0xEB] => {
                assert!(entry[2..16].iter().all(|&b| b == 0xFF), "MD5 entry padding");
                let md5 = md5::Md5::digest(&bytes[..index * 32]);
                assert_eq!(&entry[16..32], &md5[..], "the MD5 entry matches the entries before it");
                return partitions;
            }
            other => panic!("entry {index} starts {other:02x?}, neither a partition nor the MD5 entry"),
        }
    }
    panic!("the table has no MD5 entry");
}

/// Defect: the firmware had no `ota_flash_program`/`ota_flash_erase`, so the board's cut at
/// flash operation N (a probe-rs breakpoint on them) could not be armed on it.
#[test]
fn the_firmware_exports_the_flash_operations_a_cut_breaks_on() {
    let Some(path) = elf_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let elf = ota_hil::qemu::elf::Elf::parse(&bytes).unwrap();
    for name in ["ota_flash_program", "ota_flash_erase"] {
        let address = elf.symbol(name).unwrap_or_else(|| panic!("{} has no {name}", path.display()));
        assert!(
            (0x4200_0000..0x4280_0000).contains(&address),
            "{name} at {address:#x} runs from flash (IROM)"
        );
    }
}

#[test]
fn the_factory_image_decodes_as_the_boot_chain_reads_it() {
    let Some(path) = elf_path() else { return };
    let built = built(&path);
    let config = ota_hil::board::config::Esp32c3Config { elf: Some(path.clone()), ..esp32c3_config() };
    let factory = ota_hil::cmd::image::factory("esp32c3", &config, "1.0.0").unwrap();
    let flash = &factory.image;
    assert_eq!(flash.len(), 4 << 20);

    // The second-stage boot loader at 0: an ESP image for the ESP32-C3.
    let boot = decode_app(&flash[..partitions::BOOT_LOADER_MAX_BYTES as usize]);
    assert_eq!(boot.chip_id, 5, "ESP32-C3");
    assert_eq!(&flash[..boot.len_bytes], &built.boot_loader[..boot.len_bytes]);

    // The partition table at 0x8000, as the map says.
    let at = partitions::PARTITION_TABLE_OFFSET as usize;
    let table = decode_table(&flash[at..at + 0x1000]);
    let names: Vec<(&str, u8, u8, u32, u32)> =
        table.iter().map(|p| (p.name.as_str(), p.kind, p.subtype, p.offset, p.size)).collect();
    assert_eq!(
        names,
        [
            ("otadata", 1, 0x00, 0x9000, 0x2000),
            ("otastate", 1, 0x06, 0xb000, 0x2000),
            ("phy_init", 1, 0x01, 0xd000, 0x1000),
            ("ota_0", 0, 0x10, 0x10000, 0x180000),
            ("ota_1", 0, 0x11, 0x190000, 0x180000),
            ("fs_0", 1, 0x83, 0x310000, 0x78000),
            ("fs_1", 1, 0x83, 0x388000, 0x78000),
        ]
    );
    let layout = partitions::layout();
    assert_eq!(table[3].offset, layout.app[0].offset);
    assert_eq!(table[1].offset, layout.boot_state[0].offset);

    // otadata erased: the boot loader boots ota_0.
    let ota = partitions::OTADATA_OFFSET as usize;
    assert!(flash[ota..ota + partitions::OTADATA_BYTES as usize].iter().all(|&b| b == 0xFF));

    // The app in ota_0: an ESP32-C3 image whose descriptor says 1.0.0, healthy.
    let app_at = layout.app[0].offset as usize;
    let app = decode_app(&flash[app_at..app_at + layout.app[0].size_bytes as usize]);
    assert_eq!(app.chip_id, 5);
    assert!(app.segments.len() >= 2, "{:x?}", app.segments);
    assert!(
        app.segments.iter().any(|&(address, _)| (0x3c00_0000..0x3c80_0000).contains(&address)),
        "a DROM segment"
    );
    let app_bytes = &flash[app_at..app_at + app.len_bytes];
    let descriptor = ota_app::image::find_header(app_bytes).expect("the app descriptor in the first 4 KiB");
    assert_eq!(
        ota_app::image::parse_header(&app_bytes[descriptor..]),
        (Behaviour::Healthy, Some("1.0.0".into()))
    );

    // The boot state at 0xb000, through the core's own decoder: slot 0 committed, its image's
    // length and digest those of the app in ota_0.
    let mut mem = flash[..partitions::FLASH_BYTES as usize].to_vec();
    let mut ram = ota_core::flash::RamFlash::<4, 4096>::with_contents(&mut mem);
    let located = ota_core::log::read(&mut ram, &layout).unwrap().expect("a boot-state record");
    let state = located.record.state;
    assert_eq!(state.active, ota_core::layout::Slot::S0);
    assert!(state.committed, "{state:?}");
    assert_eq!(state.slots[0].version.as_str(), "1.0.0");
    assert_eq!(state.slots[0].app_len_bytes as usize, app.len_bytes);
}

#[test]
fn a_bundle_carries_the_patched_image_for_either_slot() {
    let Some(path) = elf_path() else { return };
    let dir = std::env::temp_dir().join(format!("hil-esp32c3-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let board = dir.join("board.toml");
    std::fs::write(&board, format!("kind = \"esp32c3\"\n[esp32c3]\nusb = \"303a:1001\"\nelf = {:?}\n", path))
        .unwrap();
    let out = dir.join("fw.zip");
    let output = Command::new(HIL)
        .args(["bundle", "--board"])
        .arg(&board)
        .args(["--name", "ota-esp32c3-fw", "--version", "2.0.0", "--behaviour", "never-commits", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let zip = std::fs::read(&out).unwrap();
    let entries = ota_bundle::read_entries(&zip).unwrap();
    let manifest = entries.iter().find(|e| e.name == "manifest.json").unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(manifest.data(&zip)).unwrap();
    assert_eq!(manifest["platform"], "esp32c3");
    assert_eq!(manifest["version"], "2.0.0");
    let app = entries.iter().find(|e| e.name == "ota-esp32c3-fw.bin").unwrap().data(&zip);
    let decoded = decode_app(app);
    assert_eq!(decoded.chip_id, 5);
    assert_eq!(decoded.len_bytes, app.len());
    let at = ota_app::image::find_header(app).unwrap();
    assert_eq!(ota_app::image::parse_header(&app[at..]), (Behaviour::NeverCommits, Some("2.0.0".into())));
    // Only the descriptor, the checksum byte and the SHA-256 differ from espflash's image.
    let built = built(&path);
    let differing: Vec<usize> = (0..app.len()).filter(|&i| app[i] != built.app[i]).collect();
    assert!(differing.iter().all(|&i| (at..at + 40).contains(&i) || i + 33 >= app.len()), "{differing:x?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The shipped board file's settings, for building images.
fn esp32c3_config() -> ota_hil::board::config::Esp32c3Config {
    let config = ota_hil::board::config::load(&workspace().join("boards/esp32c3.toml")).unwrap();
    match config.backend {
        ota_hil::board::config::Backend::Esp32c3(esp) => esp,
        other => panic!("{other:?}"),
    }
}
