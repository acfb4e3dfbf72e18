//! Where things live on flash: two boot-state areas, two app slots, two filesystem slots.
//!
//! All six regions sit in one flash device, addressed by absolute byte offsets. Every region starts
//! and ends on an erase boundary, so erasing one region never touches another.
//!
//! | region          | holds                                                               |
//! |-----------------|---------------------------------------------------------------------|
//! | `boot_state[0]` | boot-state record log, area 0 (see [`crate::state`])                |
//! | `boot_state[1]` | boot-state record log, area 1                                       |
//! | `app[0]`        | app image of slot 0; its last erase unit holds the image descriptor |
//! | `app[1]`        | app image of slot 1; its last erase unit holds the image descriptor |
//! | `fs[0]`         | filesystem image paired with app slot 0                             |
//! | `fs[1]`         | filesystem image paired with app slot 1                             |

use crate::state::RECORD_SIZE_BYTES;

/// One of the two app/filesystem slot pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    S0 = 0,
    S1 = 1,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::S0, Slot::S1];

    /// The slot that is not `self`.
    pub const fn other(self) -> Slot {
        match self {
            Slot::S0 => Slot::S1,
            Slot::S1 => Slot::S0,
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// The slot numbered `n` (0 or 1), as it appears on the wire and in records.
    pub const fn from_index(n: u32) -> Option<Slot> {
        match n {
            0 => Some(Slot::S0),
            1 => Some(Slot::S1),
            _ => None,
        }
    }
}

impl core::fmt::Display for Slot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "slot {}", self.index())
    }
}

/// A byte range of the flash device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: u32,
    pub size_bytes: u32,
}

impl Region {
    pub const fn new(offset: u32, size_bytes: u32) -> Region {
        Region { offset, size_bytes }
    }

    /// One past the last byte. Computed in `u64` so that a region at the top of a 4 GiB space does
    /// not wrap.
    pub const fn end(&self) -> u64 {
        self.offset as u64 + self.size_bytes as u64
    }

    const fn overlaps(&self, other: &Region) -> bool {
        (self.offset as u64) < other.end() && (other.offset as u64) < self.end()
    }
}

/// Why a [`Layout`] was refused. Each variant names the region at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The write size is zero, or the erase size is not a multiple of it.
    BadGeometry { erase_size_bytes: u32, write_size_bytes: u32 },
    /// A boot-state record is not a whole number of write units.
    RecordNotWriteAligned { write_size_bytes: u32 },
    /// A region does not start or end on an erase boundary.
    NotEraseAligned { region: RegionName },
    /// A region is empty.
    Empty { region: RegionName },
    /// A boot-state area holds fewer than two pairs of records (each record is kept twice).
    BootStateAreaTooSmall { area: u8 },
    /// Two regions share bytes.
    Overlap { first: RegionName, second: RegionName },
    /// A region ends past the flash capacity.
    OutOfFlash { region: RegionName, capacity_bytes: u32 },
    /// An erase unit of the region starts or ends inside this sector of the flash's sector map,
    /// so erasing it would fail (or erase more than the unit).
    SectorSplit { region: RegionName, sector_offset: u32, sector_bytes: u32 },
}

/// `count` consecutive sectors of `sector_bytes` each: one run of a flash's sector map, which
/// lists runs from offset 0 (an STM32F4: 4 of 16 KiB, 1 of 64 KiB, 7 of 128 KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorRun {
    pub count: u32,
    pub sector_bytes: u32,
}

/// A region's name, for error messages.
/// Where an offset falls in a sector map.
enum SectorAt {
    /// On a sector boundary (the map's end included).
    Boundary,
    Inside {
        offset: u64,
        bytes: u32,
    },
    PastTheMap {
        capacity_bytes: u32,
    },
}

const fn sector_at(sectors: &[SectorRun], at: u64) -> SectorAt {
    let mut start: u64 = 0;
    let mut run = 0;
    while run < sectors.len() {
        let SectorRun { count, sector_bytes } = sectors[run];
        let end = start + count as u64 * sector_bytes as u64;
        if at < end {
            let into = (at - start) % sector_bytes as u64;
            if into == 0 {
                return SectorAt::Boundary;
            }
            return SectorAt::Inside { offset: at - into, bytes: sector_bytes };
        }
        start = end;
        run += 1;
    }
    if at == start {
        return SectorAt::Boundary;
    }
    SectorAt::PastTheMap { capacity_bytes: if start > u32::MAX as u64 { u32::MAX } else { start as u32 } }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionName {
    BootState(u8),
    App(Slot),
    Fs(Slot),
}

impl core::fmt::Display for RegionName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegionName::BootState(n) => write!(f, "boot-state area {n}"),
            RegionName::App(s) => write!(f, "app {s}"),
            RegionName::Fs(s) => write!(f, "fs {s}"),
        }
    }
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::BadGeometry { erase_size_bytes, write_size_bytes } => write!(
                f,
                "erase size {erase_size_bytes} is not a non-zero multiple of write size {write_size_bytes}"
            ),
            LayoutError::RecordNotWriteAligned { write_size_bytes } => write!(
                f,
                "a {RECORD_SIZE_BYTES}-byte boot-state record is not a whole number of {write_size_bytes}-byte write units"
            ),
            LayoutError::NotEraseAligned { region } => {
                write!(f, "{region} does not start and end on an erase boundary")
            }
            LayoutError::Empty { region } => write!(f, "{region} is empty"),
            LayoutError::BootStateAreaTooSmall { area } => {
                write!(
                    f,
                    "boot-state area {area} holds fewer than two pairs of records ({} bytes)",
                    4 * RECORD_SIZE_BYTES
                )
            }
            LayoutError::Overlap { first, second } => write!(f, "{first} overlaps {second}"),
            LayoutError::OutOfFlash { region, capacity_bytes } => {
                write!(f, "{region} ends past the flash capacity of {capacity_bytes} bytes")
            }
            LayoutError::SectorSplit { region, sector_offset, sector_bytes } => write!(
                f,
                "{region} is erased in units that split the {sector_bytes}-byte sector at 0x{sector_offset:x}: \
                 every erase unit must be whole sectors"
            ),
        }
    }
}

/// The flash map of a device. Build it with [`Layout::new`], which checks the geometry; in a
/// `const` the checks run at compile time:
///
/// ```
/// use ota_core::layout::{Layout, Region};
/// const LAYOUT: Layout = match Layout::new(
///     4096, 4,
///     [Region::new(0, 4096), Region::new(4096, 4096)],
///     [Region::new(0x2000, 0x10000), Region::new(0x12000, 0x10000)],
///     [Region::new(0x22000, 0x8000), Region::new(0x2a000, 0x8000)],
/// ) {
///     Ok(layout) => layout,
///     Err(_) => panic!("bad flash layout"),
/// };
/// assert_eq!(LAYOUT.records_per_area(), 16);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub erase_size_bytes: u32,
    pub write_size_bytes: u32,
    /// What an erased byte reads as: 0xff on almost every NOR part.
    pub erased_byte: u8,
    pub boot_state: [Region; 2],
    pub app: [Region; 2],
    pub fs: [Region; 2],
}

impl Layout {
    pub const fn new(
        erase_size_bytes: u32,
        write_size_bytes: u32,
        boot_state: [Region; 2],
        app: [Region; 2],
        fs: [Region; 2],
    ) -> Result<Layout, LayoutError> {
        if write_size_bytes == 0
            || erase_size_bytes == 0
            || !erase_size_bytes.is_multiple_of(write_size_bytes)
        {
            return Err(LayoutError::BadGeometry { erase_size_bytes, write_size_bytes });
        }
        if !(RECORD_SIZE_BYTES as u32).is_multiple_of(write_size_bytes) {
            return Err(LayoutError::RecordNotWriteAligned { write_size_bytes });
        }
        let layout = Layout { erase_size_bytes, write_size_bytes, erased_byte: 0xff, boot_state, app, fs };
        let names = Layout::region_names();
        let regions = layout.regions();
        let mut i = 0;
        while i < regions.len() {
            let region = regions[i];
            if region.size_bytes == 0 {
                return Err(LayoutError::Empty { region: names[i] });
            }
            if !region.offset.is_multiple_of(erase_size_bytes)
                || !region.size_bytes.is_multiple_of(erase_size_bytes)
            {
                return Err(LayoutError::NotEraseAligned { region: names[i] });
            }
            let mut j = i + 1;
            while j < regions.len() {
                if region.overlaps(&regions[j]) {
                    return Err(LayoutError::Overlap { first: names[i], second: names[j] });
                }
                j += 1;
            }
            i += 1;
        }
        let mut area = 0;
        while area < 2 {
            if boot_state[area].size_bytes < 4 * RECORD_SIZE_BYTES as u32 {
                return Err(LayoutError::BootStateAreaTooSmall { area: area as u8 });
            }
            area += 1;
        }
        Ok(layout)
    }

    /// The same layout on a flash whose erased bytes read as `erased_byte`.
    pub const fn with_erased_byte(mut self, erased_byte: u8) -> Layout {
        self.erased_byte = erased_byte;
        self
    }

    /// The same layout, checked against the flash's sector map: every erase unit of every region
    /// must start and end on sector boundaries, since the core erases one unit at a time. A
    /// 16 KiB unit inside a 128 KiB sector is refused here, naming the sector, rather than
    /// failing at every erase later. Bounded by the regions' erase units times the map's runs.
    pub const fn with_sectors(self, sectors: &[SectorRun]) -> Result<Layout, LayoutError> {
        let names = Layout::region_names();
        let regions = self.regions();
        let mut i = 0;
        while i < regions.len() {
            let region = regions[i];
            let mut at = region.offset as u64;
            while at <= region.end() {
                match sector_at(sectors, at) {
                    SectorAt::Boundary => {}
                    SectorAt::Inside { offset, bytes } => {
                        let (sector_offset, sector_bytes) = (offset as u32, bytes);
                        return Err(LayoutError::SectorSplit {
                            region: names[i],
                            sector_offset,
                            sector_bytes,
                        });
                    }
                    SectorAt::PastTheMap { capacity_bytes } => {
                        return Err(LayoutError::OutOfFlash { region: names[i], capacity_bytes });
                    }
                }
                at += self.erase_size_bytes as u64;
            }
            i += 1;
        }
        Ok(self)
    }

    /// Checks that every region fits in a flash of `capacity_bytes`.
    pub fn check_capacity(&self, capacity_bytes: u32) -> Result<(), LayoutError> {
        let names = Layout::region_names();
        for (region, name) in self.regions().iter().zip(names) {
            if region.end() > capacity_bytes as u64 {
                return Err(LayoutError::OutOfFlash { region: name, capacity_bytes });
            }
        }
        Ok(())
    }

    /// The six regions in a fixed order: boot-state areas, app slots, fs slots.
    pub const fn regions(&self) -> [Region; 6] {
        [self.boot_state[0], self.boot_state[1], self.app[0], self.app[1], self.fs[0], self.fs[1]]
    }

    const fn region_names() -> [RegionName; 6] {
        [
            RegionName::BootState(0),
            RegionName::BootState(1),
            RegionName::App(Slot::S0),
            RegionName::App(Slot::S1),
            RegionName::Fs(Slot::S0),
            RegionName::Fs(Slot::S1),
        ]
    }

    pub const fn app(&self, slot: Slot) -> Region {
        self.app[slot.index()]
    }

    pub const fn fs(&self, slot: Slot) -> Region {
        self.fs[slot.index()]
    }

    /// The last erase unit of `slot`'s app region: it holds the slot's image descriptor
    /// ([`crate::state::Descriptor`]), so writing the descriptor never erases image bytes.
    pub const fn descriptor(&self, slot: Slot) -> Region {
        let app = self.app(slot);
        let unit =
            if app.size_bytes < self.erase_size_bytes { app.size_bytes } else { self.erase_size_bytes };
        Region::new(app.offset + app.size_bytes - unit, unit)
    }

    /// The largest app image `slot` holds: its region less the descriptor's erase unit.
    pub const fn app_capacity_bytes(&self, slot: Slot) -> u32 {
        self.app(slot).size_bytes - self.descriptor(slot).size_bytes
    }

    /// How many records one boot-state area holds (the smaller of the two areas).
    pub const fn records_per_area(&self) -> u32 {
        let a = self.boot_state[0].size_bytes;
        let b = self.boot_state[1].size_bytes;
        let smaller = if a < b { a } else { b };
        smaller / RECORD_SIZE_BYTES as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(
        bs: [(u32, u32); 2],
        app: [(u32, u32); 2],
        fs: [(u32, u32); 2],
    ) -> Result<Layout, LayoutError> {
        let r = |(o, s): (u32, u32)| Region::new(o, s);
        Layout::new(4096, 4, bs.map(r), app.map(r), fs.map(r))
    }

    #[test]
    fn accepts_a_well_formed_layout() {
        let layout = regions(
            [(0, 4096), (4096, 4096)],
            [(0x2000, 0x4000), (0x6000, 0x4000)],
            [(0xa000, 0x2000), (0xc000, 0x2000)],
        )
        .unwrap();
        assert_eq!(layout.records_per_area(), 16);
        assert_eq!(layout.check_capacity(0xe000), Ok(()));
        assert_eq!(
            layout.check_capacity(0xd000),
            Err(LayoutError::OutOfFlash { region: RegionName::Fs(Slot::S1), capacity_bytes: 0xd000 })
        );
    }

    #[test]
    fn refuses_misaligned_overlapping_and_small_regions() {
        let misaligned = regions(
            [(0, 4096), (4096, 4096)],
            [(0x2000, 0x4100), (0x7000, 0x4000)],
            [(0xb000, 0x2000), (0xd000, 0x2000)],
        );
        assert_eq!(misaligned, Err(LayoutError::NotEraseAligned { region: RegionName::App(Slot::S0) }));
        let overlap = regions(
            [(0, 4096), (4096, 4096)],
            [(0x2000, 0x4000), (0x5000, 0x4000)],
            [(0xa000, 0x2000), (0xc000, 0x2000)],
        );
        assert_eq!(
            overlap,
            Err(LayoutError::Overlap { first: RegionName::App(Slot::S0), second: RegionName::App(Slot::S1) })
        );
        let bad_geometry = Layout::new(
            4096,
            3,
            [Region::new(0, 4096); 2],
            [Region::new(0, 4096); 2],
            [Region::new(0, 4096); 2],
        );
        assert_eq!(
            bad_geometry,
            Err(LayoutError::BadGeometry { erase_size_bytes: 4096, write_size_bytes: 3 })
        );
        let big_unit = Layout::new(
            1024,
            512,
            [Region::new(0, 1024); 2],
            [Region::new(0, 1024); 2],
            [Region::new(0, 1024); 2],
        );
        assert_eq!(big_unit, Err(LayoutError::RecordNotWriteAligned { write_size_bytes: 512 }));
        let small = Layout::new(
            256,
            4,
            [Region::new(0, 768), Region::new(768, 1024)],
            [Region::new(2048, 256), Region::new(2304, 256)],
            [Region::new(2560, 256), Region::new(2816, 256)],
        );
        assert_eq!(small, Err(LayoutError::BootStateAreaTooSmall { area: 0 }));
    }
}
