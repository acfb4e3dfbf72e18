//! The streaming updater end to end: bundles built by `ota-bundle`, applied to a RAM flash.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use ota_bundle::{Bundle, Defect, PartSpec};
use ota_core::boot::{self, BootOutcome, BootReason};
use ota_core::layout::{Layout, Region, Slot};
use ota_core::log;
use ota_core::manifest::{PartName, Platform};
use ota_core::state::{BootState, BuildId, SlotInfo, Version};
use ota_core::updater::{Device, Outcome, Progress, UpdateError, UpdateErrorKind, UpdateOptions, Updater};
use proptest::prelude::*;
use sha2::Digest as _;

/// 4 KiB erase units: boot-state areas of 4 KiB, app slots of 64 KiB, fs slots of 16 KiB.
const LAYOUT: Layout = match Layout::new(
    4096,
    4,
    [Region::new(0, 4096), Region::new(4096, 4096)],
    [Region::new(0x2000, 0x10000), Region::new(0x12000, 0x10000)],
    [Region::new(0x22000, 0x4000), Region::new(0x26000, 0x4000)],
) {
    Ok(l) => l,
    Err(_) => panic!("test layout"),
};
const FLASH_BYTES: usize = 0x2a000;

/// A RAM flash that counts programs and erases.
#[derive(Clone)]
struct Flash {
    mem: Vec<u8>,
    programs: u32,
    erases: u32,
}

impl Flash {
    fn new() -> Flash {
        Flash { mem: vec![0xff; FLASH_BYTES], programs: 0, erases: 0 }
    }

    fn region(&self, region: Region) -> &[u8] {
        &self.mem[region.offset as usize..region.end() as usize]
    }

    /// The parts of flash an update must never change: the boot-state log and the running slots.
    fn untouchable(&self, running: Slot) -> Vec<u8> {
        [LAYOUT.boot_state[0], LAYOUT.boot_state[1], LAYOUT.app(running), LAYOUT.fs(running)]
            .iter()
            .flat_map(|r| self.region(*r).to_vec())
            .collect()
    }
}

impl ErrorType for Flash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let src = self
            .mem
            .get(offset as usize..offset as usize + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        assert!(
            from.is_multiple_of(4096) && to.is_multiple_of(4096),
            "erase [{from:#x}, {to:#x}) is aligned"
        );
        self.erases += 1;
        self.mem[from as usize..to as usize].fill(0xff);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        assert!(
            offset.is_multiple_of(4) && bytes.len().is_multiple_of(4),
            "program at {offset:#x} is aligned"
        );
        self.programs += 1;
        for (cell, b) in self.mem[offset as usize..].iter_mut().zip(bytes) {
            *cell &= b;
        }
        Ok(())
    }
}

fn device() -> Device {
    Device { arch: Platform::new("esp32").unwrap(), app_part: None }
}

fn app_image(version: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ version).collect()
}

fn bundle(version: &str, app: Vec<u8>) -> Bundle {
    Bundle::new("demo", "esp32")
        .version(version)
        .build_id(&format!("build-{version}"))
        .app(app)
        .fs(vec![0x5a; 6000])
}

/// Applies `zip` in chunks of `chunk` bytes.
fn apply(
    flash: &mut Flash,
    zip: &[u8],
    chunk: usize,
    options: UpdateOptions,
) -> Result<Outcome, UpdateError> {
    let mut buf = [0u8; 2048];
    let running = running_of(flash);
    let mut updater = Updater::begin(flash, &LAYOUT, running, device(), options, &mut buf)?;
    for piece in zip.chunks(chunk.max(1)) {
        if updater.process(flash, piece)? != Progress::NeedMore {
            break;
        }
    }
    updater.finish(flash)
}

/// A device provisioned with v1 in slot 0, committed.
fn provisioned() -> Flash {
    let mut flash = Flash::new();
    let zip = bundle("1.0.0", app_image(1, 20_000)).build();
    let mut buf = [0u8; 2048];
    let mut updater = Updater::begin_provision(&mut flash, &LAYOUT, device(), &mut buf).unwrap();
    assert_eq!(updater.process(&mut flash, &zip).unwrap(), Progress::WriteFinished);
    assert!(matches!(updater.finish(&mut flash).unwrap(), Outcome::Provisioned { .. }));
    flash
}

/// The slot a device boots from: the recorded active slot once its state is committed, as
/// [`apply`]'s scenarios always boot before updating again.
fn running_of(flash: &mut Flash) -> Slot {
    state(flash).active
}

fn state(flash: &mut Flash) -> BootState {
    log::read(flash, &LAYOUT).unwrap().unwrap().record.state
}

#[test]
fn an_update_writes_the_inactive_slot_and_one_record() {
    let mut flash = provisioned();
    let v1 = state(&mut flash);
    let app = app_image(2, 30_001);
    let zip = bundle("2.0.0", app.clone()).build();
    let options = UpdateOptions { commit_timeout_s: 300, ignore_same_version: false };
    let outcome = apply(&mut flash, &zip, zip.len(), options).unwrap();
    assert!(matches!(outcome, Outcome::Applied { slot: Slot::S1, .. }));
    assert_eq!(outcome.message(), "Update applied, finalizing");
    let s = state(&mut flash);
    assert_eq!((s.active, s.revert, s.committed), (Slot::S1, Some(Slot::S0), false));
    assert!(s.first_boot_a && s.first_boot_b && s.merge_fs);
    assert_eq!(s.commit_timeout_s, 300);
    assert_eq!(s.slots[0], v1.slots[0], "the running slot's record is kept");
    let expected = SlotInfo {
        app_len_bytes: 30_001,
        app_sha256: sha2::Sha256::digest(&app).into(),
        fs_len_bytes: 6000,
        version: Version::new("2.0.0").unwrap(),
        build_id: BuildId::new("build-2.0.0").unwrap(),
    };
    assert_eq!(s.slots[1], expected);
    assert_eq!(&flash.region(LAYOUT.app(Slot::S1))[..app.len()], &app[..]);
    assert!(flash.region(LAYOUT.fs(Slot::S1))[..6000].iter().all(|&b| b == 0x5a));
    assert!(
        flash.region(LAYOUT.fs(Slot::S1))[6000..].iter().all(|&b| b == 0xff),
        "fs region erased past the image"
    );
    // The boot loader gives it its trial.
    let outcome = boot::boot(&mut flash, &LAYOUT, &mut [0; 512]).unwrap();
    assert!(matches!(outcome, BootOutcome::Boot { slot: Slot::S1, reason: BootReason::Trial, .. }));
}

#[test]
fn a_bundle_in_a_folder_with_parts_by_type_applies() {
    let mut flash = provisioned();
    let zip = Bundle::new("demo", "ESP32")
        .version("3.0")
        .in_folder()
        .part(PartSpec::new("boot", "bootloader.bin", vec![1; 100]).kind("boot"))
        .part(PartSpec::new("firmware", "demo.bin", app_image(3, 9000)).kind("app").without_sha1())
        .part(PartSpec::new("filesystem", "fs.bin", vec![2; 100]).kind("fs").without_sha256())
        .build();
    let outcome = apply(&mut flash, &zip, 333, UpdateOptions::default()).unwrap();
    assert!(matches!(outcome, Outcome::Applied { slot: Slot::S1, .. }));
    assert_eq!(state(&mut flash).slots[1].app_len_bytes, 9000);
}

#[test]
fn an_uncommitted_device_refuses_a_second_update() {
    let mut flash = provisioned();
    let zip = bundle("2.0.0", app_image(2, 1000)).build();
    apply(&mut flash, &zip, 4096, UpdateOptions::default()).unwrap();
    let err = apply(&mut flash, &zip, 4096, UpdateOptions::default()).unwrap_err();
    assert_eq!(err.kind, UpdateErrorKind::NotCommitted { active: Slot::S1 });
    insta::assert_snapshot!(err.to_string(), @"Previous update is not committed (slot 1 is on trial); commit or revert it first; slot 0 not marked bootable, slot 1 stays active");
}

#[test]
fn the_same_version_is_skipped_when_asked() {
    let mut flash = provisioned();
    let before = flash.mem.clone();
    let zip = bundle("1.0.0", app_image(1, 20_000)).build();
    let options = UpdateOptions { commit_timeout_s: 0, ignore_same_version: true };
    assert_eq!(apply(&mut flash, &zip, 100, options), Ok(Outcome::UpToDate));
    assert_eq!(flash.mem, before, "nothing written");
    // Without the option it is applied like any other bundle.
    let outcome = apply(&mut flash, &zip, 100, UpdateOptions::default()).unwrap();
    assert!(matches!(outcome, Outcome::Applied { slot: Slot::S1, .. }));
}

#[test]
fn a_part_already_in_place_is_not_written_again() {
    let mut flash = provisioned();
    let v2 = bundle("2.0.0", app_image(2, 12_000)).build();
    apply(&mut flash, &v2, 4096, UpdateOptions::default()).unwrap();
    ota_core::control::commit(&mut flash, &LAYOUT, Slot::S1).unwrap();
    // Back to v1: slot 0 still holds it.
    let v1 = bundle("1.0.0", app_image(1, 20_000)).build();
    let programs = flash.programs;
    let outcome = apply(&mut flash, &v1, 4096, UpdateOptions::default()).unwrap();
    assert!(matches!(outcome, Outcome::Applied { slot: Slot::S0, .. }));
    // Slot 0 still holds v1's app and fs (same lengths, same digests): only the slot's
    // descriptor (a new generation) and the record (in its two copies) are written.
    assert_eq!(flash.programs - programs, 1 + log::COPIES);
    assert_eq!(&flash.region(LAYOUT.app(Slot::S0))[..20_000], &app_image(1, 20_000)[..]);
}

fn expect_error(zip: &[u8], chunk: usize) -> UpdateError {
    let mut flash = provisioned();
    let before = flash.untouchable(Slot::S0);
    let err = apply(&mut flash, zip, chunk, UpdateOptions::default()).unwrap_err();
    assert_eq!(flash.untouchable(Slot::S0), before, "{err}: the boot state and running slot are unchanged");
    err
}

#[test]
fn bad_bundles_are_refused_with_their_message_and_nothing_changes() {
    let good = bundle("2.0.0", app_image(2, 5000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong crc", good.build_with(Defect::WrongCrc { entry: "demo.bin".into() })),
        ("wrong sha1", good.build_with(Defect::WrongSha1 { part: "app".into() })),
        ("wrong sha256", good.build_with(Defect::WrongSha256 { part: "fs".into() })),
        ("wrong size", good.build_with(Defect::WrongSize { part: "app".into() })),
        ("compressed", good.build_with(Defect::Compressed { entry: "demo.bin".into() })),
        ("streaming", good.build_with(Defect::Streaming { entry: "fs.img".into() })),
        ("manifest not first", good.build_with(Defect::ManifestNotFirst)),
        ("missing entry", good.build_with(Defect::MissingEntry { part: "fs".into() })),
        ("corrupt data", good.build_with(Defect::CorruptData { part: "app".into() })),
        ("wrong platform", Bundle::new("demo", "esp8266").app(app_image(2, 100)).build()),
        ("too big", bundle("2.0.0", app_image(2, 0xf001)).build()),
        ("no app part", Bundle::new("demo", "esp32").fs(vec![1; 10]).build()),
        ("not a zip", b"<html>404 Not Found</html>".to_vec()),
    ];
    let mut texts = String::new();
    for (name, zip) in &cases {
        let whole = expect_error(zip, zip.len());
        let bytewise = expect_error(zip, 1);
        assert_eq!(whole, bytewise, "{name}: the same error whatever the chunking");
        texts += &format!("{name}: {whole}\n");
    }
    insta::assert_snapshot!(texts);
}

#[test]
fn a_truncated_bundle_is_incomplete_at_finish() {
    let zip = bundle("2.0.0", app_image(2, 5000)).build();
    let central = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    // A cut inside the central directory is a complete archive: only earlier cuts are truncations.
    for cut in [10, 200, zip.len() / 2, central, central + 3] {
        let err = expect_error(&zip[..cut], 64);
        assert_eq!(err.kind, UpdateErrorKind::Incomplete, "cut at {cut}");
    }
    let no_cd = bundle("2.0.0", app_image(2, 5000)).build_with(Defect::NoCentralDirectory);
    assert_eq!(expect_error(&no_cd, 512).kind, UpdateErrorKind::Incomplete);
    insta::assert_snapshot!(expect_error(&zip[..200], 64).to_string(), @"Update aborted: the archive ended before its central directory; slot 1 not marked bootable, slot 0 stays active");
}

#[test]
fn the_real_ccm_host_bundles_apply() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/real-bundles");
    if !std::path::Path::new(dir).is_dir() {
        assert!(std::env::var_os("CI").is_none(), "CI runs with ../shared beside the checkout");
        println!("skipped: {dir} is absent");
        return;
    }
    let device = Device {
        arch: Platform::new("ccm_host").unwrap(),
        app_part: Some(PartName::new("host_fw").unwrap()),
    };
    for board in ["f072test", "f303test", "f401test"] {
        let v1 = std::fs::read(format!("{dir}/{board}_1.0.0.zip")).unwrap();
        let v2 = std::fs::read(format!("{dir}/{board}_2.0.0.zip")).unwrap();
        let mut flash = Flash::new();
        let mut buf = [0u8; 2048];
        let mut updater = Updater::begin_provision(&mut flash, &LAYOUT, device, &mut buf).unwrap();
        for piece in v1.chunks(512) {
            updater.process(&mut flash, piece).unwrap();
        }
        updater.finish(&mut flash).unwrap();
        let mut updater =
            Updater::begin(&mut flash, &LAYOUT, Slot::S0, device, UpdateOptions::default(), &mut buf)
                .unwrap();
        for piece in v2.chunks(97) {
            updater.process(&mut flash, piece).unwrap();
        }
        let manifest = updater.manifest().unwrap().clone();
        assert!(manifest.version.is_none() && manifest.build_id.is_none(), "real bundles have neither");
        let part = manifest.part("host_fw").unwrap();
        let outcome = updater.finish(&mut flash).unwrap();
        assert!(matches!(outcome, Outcome::Applied { slot: Slot::S1, .. }), "{board}");
        let s = state(&mut flash);
        assert_eq!(Some(s.slots[1].app_len_bytes), part.size_bytes);
        assert_eq!(Some(s.slots[1].app_sha256), part.cs_sha256, "{board}: read back and verified");
    }
}

#[test]
fn sizes_of_the_core_types() {
    // Figures for the closing note: what a device must reserve.
    let updater = std::mem::size_of::<Updater<&'static mut [u8]>>();
    let state = std::mem::size_of::<BootState>();
    println!("size_of::<Updater<&mut [u8]>>() = {updater} bytes");
    println!("size_of::<BootState>() = {state} bytes");
    println!("boot-state record on flash = {} bytes", ota_core::state::RECORD_SIZE_BYTES);
    println!("work buffer: at least {} bytes", ota_core::updater::WORK_BUFFER_MIN_BYTES);
    assert!(updater < 4096 && state < 512);
}

/// The flash and outcome of applying `zip` to a freshly provisioned device in `chunk`-byte pieces.
fn run(zip: &[u8], chunk: usize) -> (Result<Outcome, UpdateError>, Vec<u8>) {
    let mut flash = provisioned();
    let outcome =
        apply(&mut flash, zip, chunk, UpdateOptions { commit_timeout_s: 60, ignore_same_version: false });
    (outcome, flash.mem)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    // Invariant: the result of an update (outcome and every flash byte) does not depend on how
    // the bundle was split into chunks.
    #[test]
    fn any_split_of_a_bundle_into_chunks_gives_the_same_result(
        cuts in proptest::collection::vec(1usize..3000, 1..40),
    ) {
        let zip = bundle("2.0.0", app_image(2, 7000)).build();
        let (expected, expected_mem) = run(&zip, zip.len());
        let mut flash = provisioned();
        let mut buf = [0u8; 2048];
        let mut updater = Updater::begin(&mut flash, &LAYOUT, Slot::S0, device(), UpdateOptions { commit_timeout_s: 60, ignore_same_version: false }, &mut buf).unwrap();
        let mut rest = &zip[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*cut).min(rest.len()));
            updater.process(&mut flash, piece).unwrap();
            rest = tail;
        }
        let outcome = updater.finish(&mut flash);
        prop_assert_eq!(outcome, expected);
        prop_assert!(flash.mem == expected_mem);
    }

    // Invariant: a bundle with any one byte changed either fails with the boot state and the
    // running slot unchanged, or (a byte the updater ignores) gives exactly the clean result;
    // it never panics.
    #[test]
    fn any_single_byte_change_errs_with_the_state_unchanged_or_gives_the_same_result(
        at in 0usize..100_000,
        xor in 1u8..=255,
        chunk in 1usize..5000,
    ) {
        let zip = bundle("2.0.0", app_image(2, 3000)).build();
        let (clean, clean_mem) = run(&zip, zip.len());
        let mut bad = zip.clone();
        let at = at % bad.len();
        bad[at] ^= xor;
        let mut flash = provisioned();
        let before = flash.untouchable(Slot::S0);
        match apply(&mut flash, &bad, chunk, UpdateOptions { commit_timeout_s: 60, ignore_same_version: false }) {
            Err(_) => prop_assert!(flash.untouchable(Slot::S0) == before),
            Ok(outcome) => {
                prop_assert_eq!(Ok(outcome), clean);
                prop_assert!(flash.mem == clean_mem, "byte {} changed yet the update differs", at);
            }
        }
    }
}

// Issue 9, defect 6: a part without `size` made `Updater::finish` panic ("size checked against
// the archive"); Mongoose OS takes the size from the local header. An fs part without `size`
// was recorded as "no fs shipped" and formatted away at the first boot.
#[test]
fn a_part_without_size_panics() {
    let mut flash = provisioned();
    let app = app_image(2, 9000);
    let zip = Bundle::new("demo", "esp32")
        .version("2.0.0")
        .part(PartSpec::new("app", "demo.bin", app.clone()).kind("app").without_size())
        .part(PartSpec::new("fs", "fs.img", vec![0x5a; 6000]).kind("fs").without_size())
        .build();
    for chunk in [zip.len(), 100] {
        let mut flash = flash.clone();
        let outcome = apply(&mut flash, &zip, chunk, UpdateOptions::default()).unwrap();
        assert!(matches!(outcome, Outcome::Applied { slot: Slot::S1, .. }));
        let s = state(&mut flash);
        assert_eq!((s.slots[1].app_len_bytes, s.slots[1].fs_len_bytes), (9000, 6000));
    }
    // Reverted, then applied again: slot 1 already holds it, and the size still comes from the
    // archive.
    apply(&mut flash, &zip, 4096, UpdateOptions::default()).unwrap();
    ota_core::control::revert(&mut flash, &LAYOUT, Slot::S1).unwrap();
    let programs = flash.programs;
    apply(&mut flash, &zip, 4096, UpdateOptions::default()).unwrap();
    assert_eq!(
        flash.programs - programs,
        1 + log::COPIES,
        "only the descriptor and the record's copies are written"
    );
    let s = state(&mut flash);
    assert_eq!((s.slots[1].app_len_bytes, s.slots[1].fs_len_bytes), (9000, 6000));
}

// Issue 9, defect 6: an app with neither `cs_sha1` nor `cs_sha256` (and zip CRC 0) was applied,
// booted and committed. Mongoose OS requires a digest: a written part without one is refused.
#[test]
fn a_part_with_no_digest_is_applied() {
    let zip = Bundle::new("demo", "esp32")
        .version("2.0.0")
        .part(PartSpec::new("app", "demo.bin", app_image(2, 900)).kind("app").without_sha1().without_sha256())
        .build();
    let err = expect_error(&zip, 512);
    assert!(format!("{:?}", err.kind).starts_with("NoDigest"), "{err}");
    insta::assert_snapshot!(err.to_string(), @"Invalid checksum format: part app gives neither cs_sha1 nor cs_sha256; slot 1 not marked bootable, slot 0 stays active");
}

// Issue 9, defect 6: `platform: esp32c3` was accepted by an `esp32` device through a prefix
// match. The platform is matched exactly (ignoring case, as `ESP32` bundles exist).
#[test]
fn a_platform_prefix_is_accepted() {
    let zip = Bundle::new("demo", "esp32c3").version("2.0.0").app(app_image(2, 900)).build();
    let err = expect_error(&zip, 512);
    assert!(matches!(err.kind, UpdateErrorKind::WrongPlatform { .. }), "{err}");
    // Exact, but not case-sensitive: "ESP32" bundles exist.
    let zip = Bundle::new("demo", "ESP32").version("2.0.0").app(app_image(2, 900)).build();
    assert!(apply(&mut provisioned(), &zip, 512, UpdateOptions::default()).is_ok());
}

// Issue 9, defect 6: a manifest over the work buffer was refused with a size that depended on
// the chunking ("manifest.json is 4565 bytes" for a 5,301-byte and a 70,301-byte manifest
// alike). The refusal gives the size from the local header.
#[test]
fn a_large_manifest_is_refused_with_a_size_that_depends_on_the_chunking() {
    for pad in [5_000, 70_000] {
        let zip =
            bundle("2.0.0", app_image(2, 900)).attr("padding", &format!("\"{}\"", "x".repeat(pad))).build();
        let whole = expect_error(&zip, zip.len());
        let small = expect_error(&zip, 7);
        assert_eq!(whole, small);
        let UpdateErrorKind::ManifestTooLarge { len_bytes, max_bytes } = whole.kind else {
            panic!("{whole}")
        };
        assert!(len_bytes as usize > pad && (len_bytes as usize) < pad + 600, "{len_bytes} for {pad}");
        assert_eq!(max_bytes, 2048);
    }
    // With a buffer that holds it, a 5 KiB manifest is taken.
    let zip =
        bundle("2.0.0", app_image(2, 900)).attr("padding", &format!("\"{}\"", "x".repeat(4800))).build();
    let mut flash = provisioned();
    let mut buf = vec![0u8; 8192];
    let mut updater =
        Updater::begin(&mut flash, &LAYOUT, Slot::S0, device(), UpdateOptions::default(), &mut buf[..])
            .unwrap();
    updater.process(&mut flash, &zip).unwrap();
    assert!(matches!(updater.finish(&mut flash), Ok(Outcome::Applied { .. })));
}

// A boot whose state write failed boots a slot other than the recorded active one: a trial that
// could not be recorded (TrialSkipped) boots the committed revert slot, and a fallback that could
// not be recorded boots the other slot while the record still names the broken one committed.
// `Updater::begin` targeted the slot after the RECORDED active slot, so after that fallback it
// would have written over the image that runs. It must target the slot that is not running.
#[test]
fn an_update_after_an_unrecorded_boot_targets_the_slot_not_running() {
    let v2 = bundle("2.0.0", app_image(2, 9000)).build();
    let v3 = bundle("3.0.0", app_image(3, 7000)).build();
    // TrialSkipped: v2 recorded on trial in slot 1, slot 0 runs.
    let mut flash = provisioned();
    apply(&mut flash, &v2, 4096, UpdateOptions::default()).unwrap();
    let running_bytes = flash.region(LAYOUT.app(Slot::S0)).to_vec();
    let outcome = apply_from(&mut flash, Slot::S0, &v3).unwrap();
    assert!(matches!(outcome, Outcome::Applied { slot: Slot::S1, .. }), "{outcome:?}");
    let s = state(&mut flash);
    assert_eq!((s.active, s.revert, s.committed), (Slot::S1, Some(Slot::S0), false));
    assert_eq!(s.slots[1].version, Version::new("3.0.0").unwrap());
    assert_eq!(flash.region(LAYOUT.app(Slot::S0)), &running_bytes[..], "the running image is untouched");
    // An unrecorded fallback: the record names slot 1 committed, slot 0 runs.
    let mut flash = provisioned();
    apply(&mut flash, &v2, 4096, UpdateOptions::default()).unwrap();
    ota_core::control::commit(&mut flash, &LAYOUT, Slot::S1).unwrap();
    let running_bytes = flash.region(LAYOUT.app(Slot::S0)).to_vec();
    let outcome = apply_from(&mut flash, Slot::S0, &v3).unwrap();
    assert!(matches!(outcome, Outcome::Applied { slot: Slot::S1, .. }), "{outcome:?}");
    assert_eq!(flash.region(LAYOUT.app(Slot::S0)), &running_bytes[..], "the running image is untouched");
    let s = state(&mut flash);
    assert_eq!((s.active, s.revert), (Slot::S1, Some(Slot::S0)));
    // The running image's own trial still refuses a second update.
    let mut flash = provisioned();
    apply(&mut flash, &v2, 4096, UpdateOptions::default()).unwrap();
    let err = apply_from(&mut flash, Slot::S1, &v3).unwrap_err();
    assert_eq!(err.kind, UpdateErrorKind::NotCommitted { active: Slot::S1 });
}

/// Applies `zip` whole on a device whose firmware runs from `running`.
fn apply_from(flash: &mut Flash, running: Slot, zip: &[u8]) -> Result<Outcome, UpdateError> {
    let mut buf = [0u8; 2048];
    let mut updater = Updater::begin(flash, &LAYOUT, running, device(), UpdateOptions::default(), &mut buf)?;
    updater.process(flash, zip)?;
    updater.finish(flash)
}

/// Every bit of both boot-state areas programmed: no record decodes.
fn destroy_records(flash: &mut Flash) {
    for area in LAYOUT.boot_state {
        flash.mem[area.offset as usize..area.end() as usize].fill(0);
    }
}

fn boot_once(flash: &mut Flash) -> (Slot, BootReason, bool) {
    match boot::boot(flash, &LAYOUT, &mut [0; 512]).unwrap() {
        BootOutcome::Boot { slot, reason, first_boot, .. } => (slot, reason, first_boot),
        other => panic!("expected a boot, got {other:?}"),
    }
}

// Issue 9, defect 5: when no boot-state record decodes (the only record pair of a freshly
// provisioned device destroyed), the boot loader said "not provisioned", a brick, although slot
// 0 held an image that verifies. Each written slot now carries a descriptor of its image: an
// image that verifies against it boots, and an erased flash is still "not provisioned".
#[test]
fn no_valid_state_but_a_verifying_image_bricks() {
    let mut blank = Flash::new();
    assert_eq!(boot::boot(&mut blank, &LAYOUT, &mut [0; 512]), Ok(BootOutcome::NotProvisioned));
    let mut flash = provisioned();
    let v1 = state(&mut flash).slots[0];
    destroy_records(&mut flash);
    assert_eq!(boot_once(&mut flash), (Slot::S0, BootReason::Recovered, false));
    let s = state(&mut flash);
    assert_eq!((s.active, s.committed, s.revert, s.slots[0]), (Slot::S0, true, None, v1));
    assert_eq!(boot_once(&mut flash), (Slot::S0, BootReason::Committed, false));
    // It updates as before.
    let v2 = bundle("2.0.0", app_image(2, 9000)).build();
    assert!(matches!(
        apply(&mut flash, &v2, 512, UpdateOptions::default()),
        Ok(Outcome::Applied { slot: Slot::S1, .. })
    ));
}

// With no valid state and both slots verifying, the newest image written gets a trial (with
// the commit timeout it was written with) and the other is its revert slot: whichever of the
// two is healthy ends committed, and no image is committed before it ran.
#[test]
fn with_no_valid_state_the_newest_verifying_image_gets_a_trial() {
    let v2 = bundle("2.0.0", app_image(2, 9000)).build();
    let options = UpdateOptions { commit_timeout_s: 300, ignore_same_version: false };
    let mut flash = provisioned();
    apply(&mut flash, &v2, 512, options).unwrap();
    destroy_records(&mut flash);
    let mut committed = flash.clone();
    assert_eq!(boot_once(&mut flash), (Slot::S1, BootReason::Recovered, true));
    let s = state(&mut flash);
    assert_eq!((s.active, s.revert, s.committed, s.commit_timeout_s), (Slot::S1, Some(Slot::S0), false, 300));
    assert!(!s.merge_fs && s.first_boot_a && !s.first_boot_b);
    // No commit: back to the other image, committed.
    assert_eq!(boot_once(&mut flash), (Slot::S0, BootReason::Reverted { from: Slot::S1 }, false));
    // A commit keeps it.
    assert_eq!(boot_once(&mut committed), (Slot::S1, BootReason::Recovered, true));
    ota_core::control::commit(&mut committed, &LAYOUT, Slot::S1).unwrap();
    assert_eq!(boot_once(&mut committed), (Slot::S1, BootReason::Committed, false));
}

// With no valid state, an image that does not verify against its descriptor never boots.
#[test]
fn with_no_valid_state_an_image_that_does_not_verify_never_boots() {
    let v2 = bundle("2.0.0", app_image(2, 9000)).build();
    let mut flash = provisioned();
    apply(&mut flash, &v2, 512, UpdateOptions::default()).unwrap();
    destroy_records(&mut flash);
    let s1 = LAYOUT.app(Slot::S1).offset as usize;
    flash.mem[s1 + 100] ^= 1;
    let mut neither = flash.clone();
    assert_eq!(boot_once(&mut flash), (Slot::S0, BootReason::Recovered, false));
    assert_eq!((state(&mut flash).active, state(&mut flash).committed), (Slot::S0, true));
    let s0 = LAYOUT.app(Slot::S0).offset as usize;
    neither.mem[s0 + 100] ^= 1;
    assert_eq!(boot::boot(&mut neither, &LAYOUT, &mut [0; 512]), Ok(BootOutcome::NoBootableImage));
}
