#![doc = include_str!("../README.md")]

pub mod board;
pub mod cmd;
pub mod engine;
pub mod progress;
pub mod report;
pub mod result;
pub mod scenario;
