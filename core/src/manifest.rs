//! The `manifest.json` of a Mongoose OS bundle (§1.2 of the reference), parsed without allocation.

use crate::state::{BuildId, Label, Version};

pub const PARTS_MAX: usize = 8;
pub type Name = Label<32>;
pub type Platform = Label<16>;
pub type PartName = Label<16>;
pub type Src = Label<50>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub name: PartName,
    /// The `type` field (`app`, `fs`, `boot`, ...), if present.
    pub kind: Option<PartName>,
    pub src: Option<Src>,
    pub size_bytes: Option<u32>,
    pub addr: Option<u32>,
    pub cs_sha1: Option<[u8; 20]>,
    pub cs_sha256: Option<[u8; 32]>,
    /// The `update` field (boot loader parts only).
    pub update: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: Option<Name>,
    pub platform: Platform,
    pub version: Option<Version>,
    pub build_id: Option<BuildId>,
    pub parts: heapless::Vec<Part, PARTS_MAX>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// "Failed to parse manifest", at a byte offset.
    Parse {
        offset: u32,
    },
    /// "Required manifest field missing"
    Missing {
        field: &'static str,
    },
    /// A field is longer than its storage.
    TooLong {
        field: &'static str,
        max_bytes: u32,
    },
    /// A field has the wrong JSON type or an impossible value.
    BadValue {
        field: &'static str,
    },
    /// `cs_sha1`/`cs_sha256` is not 40/64 hex digits.
    BadChecksum {
        part: PartName,
        field: &'static str,
    },
    TooManyParts,
}

impl Manifest {
    pub fn parse(json: &[u8]) -> Result<Manifest, ManifestError> {
        let _ = json;
        todo!()
    }

    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name.as_str() == name)
    }
}
