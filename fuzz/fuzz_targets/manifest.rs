//! The manifest parser, `Manifest::parse`, on `manifest.json` bytes.
//!
//! Checks: no panic; a refusal displays; an accepted manifest's parts can each be looked up by
//! name and say where the updater would put them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::manifest::{Manifest, PartName, Platform};
use ota_core::updater::{Device, role_of};

fuzz_target!(|data: &[u8]| {
    match Manifest::parse(data) {
        Ok(manifest) => {
            let device = Device {
                arch: Platform::new("ccm_host").unwrap(),
                app_part: Some(PartName::new("host_fw").unwrap()),
            };
            for part in &manifest.parts {
                assert!(
                    manifest.part(part.name.as_str()).is_some(),
                    "part {:?} is not found by its name",
                    part.name
                );
                let _ = role_of(part, &device);
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
