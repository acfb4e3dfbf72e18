#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod app;
pub mod config;
pub mod event;
pub mod image;
pub mod otadata;
pub mod partitions;
pub mod service;
pub mod shadow;
pub mod web;

pub use app::{
    App, Booted, Finished, Flash, RpcError, SessionId, Settings, Start, Tick, start, start_booted,
};
pub use event::{BootReason, Event, Phase, Source, Stamped};
