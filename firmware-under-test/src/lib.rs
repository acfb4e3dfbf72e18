#![doc = include_str!("../README.md")]

pub mod app;
pub mod board;
pub mod config;
pub mod file_flash;
pub mod http;
pub mod rpc;
pub mod service;
