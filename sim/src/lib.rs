#![doc = include_str!("../README.md")]

pub mod device;
pub mod esp;
pub mod faults;
pub mod flash;
pub mod rng;
pub mod schedule;
pub mod sweep;

/// The firmware-behaviour model lives in the application; the simulator builds images with it.
pub use ota_app::image;
/// LittleFS lives in its own portable crate; the simulator's tests and fixtures use it.
pub use ota_lfs as lfs;
/// One flash, several users at once.
pub mod shared {
    pub use ota_lfs::Shared;
}
