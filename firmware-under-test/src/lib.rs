#![doc = include_str!("../README.md")]

pub mod board;
pub mod file_flash;
pub mod net;

/// The protocol layers live in `ota-proto`; these paths stay so that code written against
/// `ota_firmware::rpc` and `ota_firmware::http` keeps compiling.
pub use ota_proto::{http, rpc};

/// The application, the RPC services and the configuration live in `ota-app`; the virtual
/// board is their host port.
pub use ota_app::{app, config, service};
