#![doc = include_str!("../README.md")]

pub mod flash;
pub mod rng;
