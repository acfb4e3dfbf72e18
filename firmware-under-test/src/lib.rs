#![doc = include_str!("../README.md")]

pub mod board;
pub mod file_flash;
pub mod http;
pub mod rpc;

/// The application, the RPC services and the configuration live in `ota-app`; the virtual
/// board is their host port.
pub use ota_app::{app, config, service};
