#![doc = include_str!("../README.md")]
#![cfg_attr(target_os = "none", no_std)]

/// The platform the application reports and a bundle must name.
pub const PLATFORM: &str = "esp32c3";

/// The app descriptor's initial bytes: `ota_app::image`'s header (magic, format 1, healthy, this
/// build's version), the same as `ota_app::image::Image::new(version, ..)` writes.
pub const fn descriptor() -> [u8; ota_app::image::HEADER_BYTES] {
    let mut d = [0u8; ota_app::image::HEADER_BYTES];
    let mut i = 0;
    while i < 8 {
        d[i] = ota_app::image::MAGIC[i];
        i += 1;
    }
    d[8] = 1;
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let mut i = 0;
    while i < version.len() && i < 24 {
        d[16 + i] = version[i];
        i += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use ota_app::image::{Behaviour, find_header, parse_header};

    #[test]
    fn the_descriptor_is_ota_apps_header() {
        let d = super::descriptor();
        assert_eq!(find_header(&d), Some(0));
        assert_eq!(parse_header(&d), (Behaviour::Healthy, Some(env!("CARGO_PKG_VERSION").into())));
    }
}
