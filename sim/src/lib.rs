#![doc = include_str!("../README.md")]

pub mod device;
pub mod flash;
pub mod image;
pub mod rng;
pub mod schedule;
pub mod sweep;

/// LittleFS in a filesystem slot: the `ota-lfs` crate, under the name the simulator's users know.
pub use ota_lfs as lfs;

/// Two filesystems of one flash at once: [`ota_lfs::Shared`], under its old path.
pub mod shared {
    pub use ota_lfs::Shared;
}
