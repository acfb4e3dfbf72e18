#![doc = include_str!("../README.md")]

pub mod board;
pub mod broker;
pub mod bundles;
pub mod cmd;
pub mod duration;
pub mod engine;
pub mod esp32c3;
pub mod mqtt_client;
pub mod progress;
pub mod qemu;
pub mod report;
pub mod result;
pub mod rpc_client;
pub mod scenario;
