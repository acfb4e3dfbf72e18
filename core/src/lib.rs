#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

pub mod flash;
pub mod fs;
pub mod layout;
pub mod manifest;
pub mod merge;
pub mod state;
pub mod zip;

mod json;
