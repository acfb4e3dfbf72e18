#![doc = include_str!("../README.md")]

pub mod device;
pub mod flash;
pub mod image;
pub mod lfs;
pub mod rng;
pub mod schedule;
pub mod shared;
pub mod sweep;
