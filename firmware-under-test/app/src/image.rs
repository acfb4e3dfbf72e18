//! The simulated firmware image: what the "firmware" in a slot does is read from its first bytes.
//! On a bare-metal port the same header is the real image's app descriptor (as ESP-IDF's
//! `esp_app_desc_t`): [`write_header`] patches it into the one built binary.
//!
//! | bytes  | field       | meaning                                                        |
//! |--------|-------------|----------------------------------------------------------------|
//! | 0..8   | magic       | `b"OTASIMFW"`                                                   |
//! | 8      | format      | 1                                                              |
//! | 9      | behaviour   | 0 healthy, 1 crashes at boot, 2 hangs, 3 never commits, 4 commits after N s |
//! | 10..12 | reserved    | 0                                                              |
//! | 12..16 | parameter   | `u32` LE: for behaviour 4, the seconds after boot it commits   |
//! | 16..40 | version     | UTF-8, NUL-padded                                              |
//! | 40..   | body        | filler derived from the version, up to the image length        |
//!
//! An image without the magic behaves as [`Behaviour::Healthy`], so any real app image boots.
//!
//! The behaviours, on the device:
//! - **Healthy**: initialises, then commits at once (as an app that calls `OTA.Commit` when it
//!   has checked itself).
//! - **CrashesAtBoot**: resets before its initialisation completes: never commits.
//! - **Hangs**: stops before its initialisation completes; the watchdog resets the device.
//! - **NeverCommits**: runs, and never calls commit: the commit timer decides (a timeout of 0
//!   still commits on the first healthy boot, as Mongoose OS does).
//! - **CommitsAfter(s)**: runs, and commits `s` seconds after boot.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

pub const MAGIC: [u8; 8] = *b"OTASIMFW";
pub const HEADER_BYTES: usize = 40;
const VERSION_BYTES: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Healthy,
    CrashesAtBoot,
    Hangs,
    NeverCommits,
    CommitsAfter { seconds: u32 },
}

/// A simulated firmware image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub version: String,
    pub behaviour: Behaviour,
    pub len_bytes: usize,
}

impl Image {
    /// A healthy image of `len_bytes` (at least [`HEADER_BYTES`]).
    pub fn new(version: &str, len_bytes: usize) -> Image {
        Image { version: version.to_string(), behaviour: Behaviour::Healthy, len_bytes }
    }

    pub fn behaviour(mut self, behaviour: Behaviour) -> Image {
        self.behaviour = behaviour;
        self
    }

    /// The image's bytes. The body is a function of the version, so two versions differ
    /// everywhere and the same version is always the same bytes.
    pub fn bytes(&self) -> Vec<u8> {
        assert!(self.len_bytes >= HEADER_BYTES, "an image holds at least its {HEADER_BYTES}-byte header");
        assert!(
            self.version.len() <= VERSION_BYTES && !self.version.contains('\0'),
            "version fits the header"
        );
        let mut out = Vec::with_capacity(self.len_bytes);
        out.resize(HEADER_BYTES, 0);
        write_header(&mut out, &self.version, self.behaviour).expect("checked above");
        let mut x = self.version.bytes().fold(0x9e37_79b9_u32, |h, b| h.rotate_left(5) ^ b as u32);
        while out.len() < self.len_bytes {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.extend_from_slice(&x.to_le_bytes()[..(self.len_bytes - out.len()).min(4)]);
        }
        out
    }
}

/// Writes the header (the app descriptor) at the start of `image`: a port's one built binary
/// becomes every bundle's image this way (versions, behaviours) without another compile. The
/// bytes past the header are left as they are.
pub fn write_header(image: &mut [u8], version: &str, behaviour: Behaviour) -> Result<(), HeaderError> {
    if image.len() < HEADER_BYTES {
        return Err(HeaderError::TooShort { len_bytes: image.len() });
    }
    if version.len() > VERSION_BYTES || version.contains('\0') {
        return Err(HeaderError::BadVersion { version: version.to_string() });
    }
    let (code, parameter) = match behaviour {
        Behaviour::Healthy => (0u8, 0u32),
        Behaviour::CrashesAtBoot => (1, 0),
        Behaviour::Hangs => (2, 0),
        Behaviour::NeverCommits => (3, 0),
        Behaviour::CommitsAfter { seconds } => (4, seconds),
    };
    image[..8].copy_from_slice(&MAGIC);
    image[8..12].copy_from_slice(&[1, code, 0, 0]);
    image[12..16].copy_from_slice(&parameter.to_le_bytes());
    let mut field = [0u8; VERSION_BYTES];
    field[..version.len()].copy_from_slice(version.as_bytes());
    image[16..HEADER_BYTES].copy_from_slice(&field);
    Ok(())
}

/// Why [`write_header`] wrote nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    TooShort { len_bytes: usize },
    BadVersion { version: String },
}

impl core::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeaderError::TooShort { len_bytes } => write!(
                f,
                "the image is {len_bytes} bytes, shorter than the {HEADER_BYTES}-byte header; nothing written"
            ),
            HeaderError::BadVersion { version } => write!(
                f,
                "version {version:?} does not fit the header (at most {VERSION_BYTES} bytes, no NUL); nothing written"
            ),
        }
    }
}

/// How far into an image [`find_header`] looks: an ESP32-C3 app image carries its image header,
/// a segment header and ESP-IDF's own `esp_app_desc_t` before the first bytes the link places, so
/// the descriptor cannot be at offset 0 there.
pub const HEADER_SEARCH_BYTES: usize = 4096;

/// Where the header starts in an image whose header need not come first (an ESP32-C3 app image):
/// the first 4-byte-aligned offset within [`HEADER_SEARCH_BYTES`] that holds the magic and format
/// 1, or `None`. An image built with the header at offset 0 (the QEMU port's) gives `Some(0)`.
pub fn find_header(image: &[u8]) -> Option<usize> {
    let end = image.len().min(HEADER_SEARCH_BYTES);
    (0..end)
        .step_by(4)
        .find(|&at| image.len() >= at + HEADER_BYTES && image[at..at + 8] == MAGIC && image[at + 8] == 1)
}

/// What the header of a booted image says: its behaviour and version (`None` for an image
/// without the header, which boots as healthy).
pub fn parse_header(bytes: &[u8]) -> (Behaviour, Option<String>) {
    if bytes.len() < HEADER_BYTES || bytes[..8] != MAGIC || bytes[8] != 1 {
        return (Behaviour::Healthy, None);
    }
    let parameter = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    let behaviour = match bytes[9] {
        1 => Behaviour::CrashesAtBoot,
        2 => Behaviour::Hangs,
        3 => Behaviour::NeverCommits,
        4 => Behaviour::CommitsAfter { seconds: parameter },
        _ => Behaviour::Healthy,
    };
    let raw = &bytes[16..HEADER_BYTES];
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    (behaviour, core::str::from_utf8(&raw[..len]).ok().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_round_trips_its_header() {
        for behaviour in [
            Behaviour::Healthy,
            Behaviour::CrashesAtBoot,
            Behaviour::Hangs,
            Behaviour::NeverCommits,
            Behaviour::CommitsAfter { seconds: 42 },
        ] {
            let bytes = Image::new("2.0.0", 1000).behaviour(behaviour).bytes();
            assert_eq!(bytes.len(), 1000);
            assert_eq!(parse_header(&bytes), (behaviour, Some("2.0.0".to_string())));
        }
    }

    #[test]
    fn an_image_without_the_header_is_healthy() {
        assert_eq!(parse_header(&[0xff; 64]), (Behaviour::Healthy, None));
        assert_eq!(parse_header(b"short"), (Behaviour::Healthy, None));
    }

    #[test]
    fn write_header_patches_only_the_header() {
        let mut image = [0x5a_u8; 300];
        write_header(&mut image, "3.1.4", Behaviour::CommitsAfter { seconds: 7 }).unwrap();
        assert_eq!(parse_header(&image), (Behaviour::CommitsAfter { seconds: 7 }, Some("3.1.4".to_string())));
        assert!(image[HEADER_BYTES..].iter().all(|&b| b == 0x5a));
        let made = Image::new("3.1.4", 300).behaviour(Behaviour::CommitsAfter { seconds: 7 }).bytes();
        assert_eq!(image[..HEADER_BYTES], made[..HEADER_BYTES]);
    }

    #[test]
    fn write_header_refuses_and_leaves_the_image_unchanged() {
        let mut short = [0xff_u8; 39];
        assert_eq!(
            write_header(&mut short, "1.0", Behaviour::Healthy).unwrap_err().to_string(),
            "the image is 39 bytes, shorter than the 40-byte header; nothing written"
        );
        assert!(short.iter().all(|&b| b == 0xff));
        let mut image = [0xff_u8; 64];
        let long = "1.0.0-a-very-long-prerelease";
        assert_eq!(
            write_header(&mut image, long, Behaviour::Healthy).unwrap_err().to_string(),
            "version \"1.0.0-a-very-long-prerelease\" does not fit the header (at most 24 bytes, no NUL); nothing written"
        );
        assert!(image.iter().all(|&b| b == 0xff));
    }

    #[test]
    fn find_header_finds_it_where_the_link_put_it() {
        let mut image = [0u8; 512];
        assert_eq!(find_header(&image), None);
        write_header(&mut image[0x40..], "1.2.3", Behaviour::Hangs).unwrap();
        assert_eq!(find_header(&image), Some(0x40));
        assert_eq!(parse_header(&image[0x40..]), (Behaviour::Hangs, Some("1.2.3".to_string())));
        let at_start = Image::new("1.0.0", 100).bytes();
        assert_eq!(find_header(&at_start), Some(0));
        // A magic cut off by the end of the image is not a header.
        assert_eq!(find_header(&image[..0x40 + HEADER_BYTES - 1]), None);
    }

    #[test]
    fn versions_differ_in_their_bodies() {
        let a = Image::new("1.0.0", 4096).bytes();
        let b = Image::new("2.0.0", 4096).bytes();
        let differing = a[HEADER_BYTES..].iter().zip(&b[HEADER_BYTES..]).filter(|(x, y)| x != y).count();
        assert!(differing > 4000, "{differing} of 4056 body bytes differ");
    }
}
