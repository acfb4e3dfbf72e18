#![doc = include_str!("../README.md")]

pub mod app;
pub mod board;
pub mod config;
pub mod file_flash;
pub mod net;
pub mod service;

/// The protocol layers live in `ota-proto`; these paths stay so that code written against
/// `ota_firmware::rpc` and `ota_firmware::http` keeps compiling.
pub use ota_proto::{http, rpc};
