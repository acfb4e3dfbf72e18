//! Strict NOR flash model.
//!
//! [`SimFlash`] implements `embedded_storage`'s [`ReadNorFlash`] and [`NorFlash`] as strictly as
//! MCUboot's `SimFlash`, and adds the faults a power-cut sweep needs. It is built for speed: a
//! sweep runs an update thousands of times, so a read or a program is a `memcpy` plus one bitmap
//! check per 64 write units, and a snapshot is a vector of page pointers.
//!
//! # Strictness
//!
//! Every rule is checked before anything changes. A request that breaks one changes nothing,
//! returns [`SimError::Violation`] and is recorded in [`SimFlash::violations`], so that a sweep can
//! assert that none happened: a violation is a bug in the caller, not a fault of the device.
//!
//! | Rule | [`ViolationKind`] | Offset named | `NorFlashErrorKind` |
//! |---|---|---|---|
//! | a read, program or erase stays inside the flash | `OutOfBounds` | the request's start (`to` for an erase whose end is past the flash) | `OutOfBounds` |
//! | a program starts and ends on write-unit (`WRITE`) boundaries | `Misaligned` | the start, or the partial unit at the end | `NotAligned` |
//! | an erase starts and ends on boundaries of the sector map | `Misaligned` | `from` or `to` | `NotAligned` |
//! | a write unit is programmed at most once between erases | `Reprogram` | the first such unit | `Other` |
//! | a program never moves a bit back toward the erased value | `BitTowardErased` | the first such byte | `Other` |
//!
//! One bit per write unit records whether the unit *needs an erase*: a program sets it, an erase
//! clears it. A torn program and an interrupted erase set it too (see below), so the recovery's
//! erase-then-program is legal and a program over torn cells without an erase is a `Reprogram`.
//! [`SimFlash::load`] sets it for every unit that does not read as erased. Bit flips leave it
//! alone; a flip in an erased, unprogrammed unit therefore makes a later program of that unit a
//! `BitTowardErased` violation, so inject flips into programmed data.
//!
//! # Operations, counters and fault points
//!
//! Every call made while the power is on reaches the device and is counted, whether it succeeds,
//! breaks a rule or is cut. Fault points are indexed over *mutating* operations only, programs and
//! erases, because a read cannot tear anything: the operation index of a program or erase is
//! [`SimFlash::mutating_ops`] just before the call, starting at 0. Calls made while the power is
//! off are refused with [`SimError::PowerOff`] and not counted.
//!
//! # Faults
//!
//! Random choices come from the flash's own [`Rng`] (derive it from the master seed), so a fault
//! is the same for the same seed and history, and different for another seed.
//!
//! | Fault | What the flash holds afterwards | What the caller sees |
//! |---|---|---|
//! | [`CutWhen::Before`] op *n* | unchanged: the operation never starts | `PowerCut` |
//! | [`CutWhen::After`] op *n* | the operation's full effect | `PowerCut`: the power dies before the call returns |
//! | `During` a program of *k* units | a random number `0..k` of leading units land in full; the next unit holds, bit by bit at random, its old or its new value; later units are untouched | `PowerCut` |
//! | `During` an erase of *k* sectors | a random number `0..k` of leading sectors are erased; every byte of the next sector holds residue: bits already erased stay erased, the others are random; later sectors are untouched | `PowerCut` |
//! | [`SimFlash::fail_programs_in`] | a program touching the range changes nothing; erases work | `ProgramFailed` |
//! | [`SimFlash::flip_bit`], [`SimFlash::flip_random_bits`] | the bits inverted in the stored data | nothing, until the data is read |
//!
//! The landed units of a torn program, its unit in flight and every unit of a sector left with
//! residue need an erase afterwards. A partially erased cell may read as erased and still fail to
//! hold a program, so the residue sector counts as unerased even where its bytes read as erased.
//! After any cut every call, reads included, returns `PowerOff` until [`SimFlash::power_on`].
//! A cut armed for an operation that breaks a rule still cuts the power, but the violation is what
//! the caller sees, and nothing lands. A cut that strikes a program into a failing range lands
//! nothing either, and the caller sees the cut.
//!
//! # Snapshots
//!
//! The flash is stored as 4 KiB copy-on-write pages (`Arc<Page>`, cloned on first change, with the
//! needs-erase bits inside the page), and erasing a whole page points it at one shared erased
//! page. [`SimFlash::snapshot`] and [`SimFlash::restore`] copy page pointers, never bytes, and
//! capture the whole device: bytes, needs-erase bits, counters (so operation indices line up after a
//! restore), power, the armed cut, failing ranges, violations and the fault RNG's state. A snapshot
//! can be restored into any flash of the same size, on any thread.
//!
//! # Page identity
//!
//! A shared page is never changed in place, so a page pointer that is still alive names fixed
//! bytes. Two things use that. The flash implements the core's `RegionDigests`: it remembers the
//! SHA-256 of a region with the pages it was computed from, and gives it again while the region
//! is covered by those very pages and the power is on, so a boot over an unchanged image does not
//! hash it again (such a digest reads nothing and counts no read). [`SimFlash::holds`] compares a
//! region with expected bytes and skips the pages a [`Matched`] found equal before.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use ota_core::flash::RegionDigests;

use crate::rng::Rng;

/// Bytes per copy-on-write page. Write units never straddle a page.
pub const PAGE_BYTES: usize = 4096;
const BITMAP_WORDS: usize = PAGE_BYTES / 64;
const ERASED_VALUES: [u8; 2] = [0xff, 0x00];

/// Size, sector map and erased value of a simulated flash chip.
///
/// The sector map is a list of runs of equal sectors, from offset 0; an erase must cover whole
/// sectors. Without any run the flash has uniform sectors of `ERASE` bytes. Checked by
/// [`SimFlash::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    size_bytes: u32,
    runs: Vec<SectorRun>,
    erased_value: u8,
}

/// `count` consecutive sectors of `sector_bytes` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorRun {
    pub count: u32,
    pub sector_bytes: u32,
}

impl Geometry {
    /// `size_bytes` of flash erased to 0xFF, with uniform `ERASE`-size sectors until runs are added.
    pub fn new(size_bytes: u32) -> Geometry {
        Geometry { size_bytes, runs: Vec::new(), erased_value: 0xff }
    }

    /// `size_bytes` of flash with uniform sectors of `sector_bytes`.
    pub fn uniform(size_bytes: u32, sector_bytes: u32) -> Geometry {
        Geometry::new(size_bytes).sectors_to_end(sector_bytes)
    }

    /// Appends `count` sectors of `sector_bytes`.
    pub fn sectors(mut self, count: u32, sector_bytes: u32) -> Geometry {
        self.runs.push(SectorRun { count, sector_bytes });
        self
    }

    /// Fills the rest of the flash with sectors of `sector_bytes`, e.g. `.sectors(4, 16 KiB)
    /// .sectors_to_end(64 KiB)`.
    pub fn sectors_to_end(self, sector_bytes: u32) -> Geometry {
        let mapped = self.mapped_bytes();
        assert!(sector_bytes > 0 && mapped <= u64::from(self.size_bytes), "sector map overflows the flash");
        let rest = u64::from(self.size_bytes) - mapped;
        assert!(
            rest.is_multiple_of(u64::from(sector_bytes)),
            "the last 0x{rest:x} bytes are not a whole number of 0x{sector_bytes:x}-byte sectors"
        );
        let count = (rest / u64::from(sector_bytes)) as u32;
        self.sectors(count, sector_bytes)
    }

    /// The value every byte reads after an erase: 0xFF (the default; a program clears bits) or
    /// 0x00 (a program sets bits).
    pub fn erased_value(mut self, value: u8) -> Geometry {
        self.erased_value = value;
        self
    }

    pub fn size_bytes(&self) -> u32 {
        self.size_bytes
    }

    fn mapped_bytes(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.count) * u64::from(r.sector_bytes)).sum()
    }

    /// Sector start offsets followed by the flash size, checked against `erase_bytes`.
    fn boundaries(&self, erase_bytes: usize) -> Vec<u32> {
        assert!(ERASED_VALUES.contains(&self.erased_value), "erased value must be 0xFF or 0x00");
        assert!(
            (self.size_bytes as usize).is_multiple_of(erase_bytes),
            "flash size is a whole number of erase units"
        );
        let runs = if self.runs.is_empty() {
            vec![SectorRun { count: self.size_bytes / erase_bytes as u32, sector_bytes: erase_bytes as u32 }]
        } else {
            self.runs.clone()
        };
        let mut boundaries = vec![0u32];
        let mut at: u64 = 0;
        for run in &runs {
            assert!(
                run.sector_bytes > 0 && (run.sector_bytes as usize).is_multiple_of(erase_bytes),
                "sector size 0x{:x} is not a multiple of the 0x{erase_bytes:x}-byte erase unit",
                run.sector_bytes
            );
            for _ in 0..run.count {
                at += u64::from(run.sector_bytes);
                assert!(at <= u64::from(self.size_bytes), "sector map overflows the flash");
                boundaries.push(at as u32);
            }
        }
        assert!(
            at == u64::from(self.size_bytes),
            "sector map covers 0x{at:x} of 0x{:x} bytes",
            self.size_bytes
        );
        boundaries
    }
}

/// A flash operation, as named in errors and violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Program,
    Erase,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Program => "program",
            Op::Erase => "erase",
        })
    }
}

/// Which strictness rule a request broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A program off write-unit boundaries, or an erase off sector boundaries.
    Misaligned,
    /// Past the end of the flash (or an erase with `from > to`).
    OutOfBounds,
    /// A program of a write unit that was programmed, torn or left with erase residue since its
    /// last erase.
    Reprogram,
    /// A program that would need to move a bit back toward the erased value.
    BitTowardErased,
}

impl ViolationKind {
    fn nor_kind(self) -> NorFlashErrorKind {
        match self {
            ViolationKind::Misaligned => NorFlashErrorKind::NotAligned,
            ViolationKind::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            ViolationKind::Reprogram | ViolationKind::BitTowardErased => NorFlashErrorKind::Other,
        }
    }
}

/// A broken strictness rule: a bug in the code driving the flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub op: Op,
    pub kind: ViolationKind,
    pub offset: u32,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, offset) = (self.op, self.offset);
        match (self.kind, op) {
            (ViolationKind::Misaligned, Op::Erase) => {
                write!(f, "erase misaligned at 0x{offset:x}: not a sector boundary")
            }
            (ViolationKind::Misaligned, _) => {
                write!(f, "{op} misaligned at 0x{offset:x}: not a write-unit boundary")
            }
            (ViolationKind::OutOfBounds, _) => write!(f, "{op} at 0x{offset:x} is outside the flash"),
            (ViolationKind::Reprogram, _) => write!(
                f,
                "{op} at 0x{offset:x} hits a write unit that was programmed, torn or half-erased \
                 since its last erase"
            ),
            (ViolationKind::BitTowardErased, _) => write!(
                f,
                "{op} at 0x{offset:x} would move a bit back toward the erased value, which only an \
                 erase can do"
            ),
        }
    }
}

/// When an armed power cut strikes its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutWhen {
    /// The operation never starts.
    Before,
    /// The operation is torn: see the module documentation for what lands.
    During,
    /// The operation completes, then the power dies before the call returns.
    After,
}

impl fmt::Display for CutWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CutWhen::Before => "before",
            CutWhen::During => "during",
            CutWhen::After => "after",
        })
    }
}

/// A power cut armed for mutating operation `at_op` (see [`SimFlash::mutating_ops`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerCut {
    pub at_op: u64,
    pub when: CutWhen,
}

/// Why a flash call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The request broke a strictness rule and changed nothing.
    Violation(Violation),
    /// An armed power cut struck this call; the power is now off.
    PowerCut { op: Op, offset: u32, op_index: u64, when: CutWhen },
    /// The power is off; nothing changed.
    PowerOff { op: Op, offset: u32 },
    /// The program touched a range set up by [`SimFlash::fail_programs_in`]; nothing changed.
    ProgramFailed { offset: u32 },
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimError::Violation(v) => v.kind.nor_kind(),
            SimError::PowerCut { .. } | SimError::PowerOff { .. } | SimError::ProgramFailed { .. } => {
                NorFlashErrorKind::Other
            }
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SimError::Violation(v) => write!(f, "strict flash violation: {v}"),
            SimError::PowerCut { op, offset, op_index, when } => {
                write!(f, "power cut {when} {op} at 0x{offset:x} (mutating op {op_index})")
            }
            SimError::PowerOff { op, offset } => write!(
                f,
                "{op} at 0x{offset:x} refused: the flash has no power since a cut; power_on() restores it"
            ),
            SimError::ProgramFailed { offset } => {
                write!(f, "program at 0x{offset:x} failed in a failing range; the flash is unchanged")
            }
        }
    }
}

impl std::error::Error for SimError {}

/// Calls that reached the device (the power was on), successful or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub reads: u64,
    pub programs: u64,
    pub erases: u64,
    pub bytes_read: u64,
    /// The lengths of all program calls, including rejected and cut ones.
    pub bytes_programmed: u64,
}

impl Counters {
    /// Programs plus erases: the index the next mutating operation will have.
    pub fn mutating_ops(&self) -> u64 {
        self.programs + self.erases
    }
}

#[derive(Clone)]
struct Page {
    bytes: [u8; PAGE_BYTES],
    /// One bit per write unit of the page: set while the unit needs an erase before a program.
    needs_erase: [u64; BITMAP_WORDS],
}

/// Everything but the pages: small, cloned whole by a snapshot.
#[derive(Clone)]
struct State {
    counters: Counters,
    powered: bool,
    armed_cut: Option<PowerCut>,
    failing_programs: Vec<Range<u32>>,
    /// Bits that keep one value whatever is programmed or erased ([`SimFlash::stick_bit`]).
    stuck: Vec<StuckBit>,
    violations: Vec<Violation>,
    rng: Rng,
}

/// A bit that reads `value` whatever a program or an erase does to it: a worn or defective cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StuckBit {
    pub offset: u32,
    /// 0 = least significant.
    pub bit: u8,
    pub value: bool,
}

/// The complete state of a [`SimFlash`], sharing its unchanged pages.
#[derive(Clone)]
pub struct Snapshot {
    size_bytes: u32,
    pages: Vec<Arc<Page>>,
    state: State,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("size_bytes", &format_args!("0x{:x}", self.size_bytes))
            .field("pages", &self.pages.len())
            .field("counters", &self.state.counters)
            .finish_non_exhaustive()
    }
}

/// A strict NOR flash with `WRITE`-byte program units and `ERASE`-byte erase units, with fault
/// injection and cheap snapshots. See the module documentation for the rules and fault models.
pub struct SimFlash<const WRITE: usize, const ERASE: usize> {
    size_bytes: u32,
    erased_value: u8,
    /// Sector start offsets, then `size_bytes`.
    boundaries: Vec<u32>,
    pages: Vec<Arc<Page>>,
    erased_page: Arc<Page>,
    state: State,
    /// Every mutating operation that reached the device, when logging is on. Outside the
    /// snapshotted state: a log records what happened, restores included.
    op_log: Option<Vec<OpRecord>>,
    /// Region digests by page identity. Outside the snapshotted state too: an entry stays true
    /// across restores, since it names the pages it was computed from.
    digests: DigestCache,
}

/// The SHA-256 of regions, each with the pages that covered the region when it was hashed.
///
/// **Invariant:** an entry's digest is the SHA-256 of its region's bytes in its pages. It holds
/// because an entry keeps its pages alive (so their addresses are not reused) and a shared page
/// is never changed in place (`Arc::make_mut` copies it first), so the same page pointers over
/// the same region mean the same bytes.
#[derive(Default)]
struct DigestCache {
    entries: Vec<DigestEntry>,
    /// The entry the next new one replaces, once the cache is full.
    next: usize,
}

struct DigestEntry {
    offset: u32,
    len_bytes: u32,
    pages: Vec<Arc<Page>>,
    sha256: [u8; 32],
}

/// Regions a cache remembers: the two app slots, a few versions each.
const DIGEST_ENTRIES: usize = 8;

/// One mutating operation, as [`SimFlash::take_op_log`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Its mutating-operation index.
    pub index: u64,
    pub op: Op,
    pub offset: u32,
    pub len_bytes: u32,
}

impl<const WRITE: usize, const ERASE: usize> SimFlash<WRITE, ERASE> {
    /// An erased, powered flash. `rng` drives torn programs and interrupted erases; derive it from
    /// the run's master seed. Panics if the geometry does not fit `WRITE` and `ERASE`.
    pub fn new(geometry: &Geometry, rng: Rng) -> Self {
        const { assert!(WRITE > 0 && PAGE_BYTES.is_multiple_of(WRITE) && ERASE.is_multiple_of(WRITE)) };
        let boundaries = geometry.boundaries(ERASE);
        let erased_value = geometry.erased_value;
        let erased_page =
            Arc::new(Page { bytes: [erased_value; PAGE_BYTES], needs_erase: [0; BITMAP_WORDS] });
        let page_count = (geometry.size_bytes as usize).div_ceil(PAGE_BYTES);
        SimFlash {
            size_bytes: geometry.size_bytes,
            erased_value,
            boundaries,
            pages: vec![erased_page.clone(); page_count],
            erased_page,
            state: State {
                counters: Counters::default(),
                powered: true,
                armed_cut: None,
                failing_programs: Vec::new(),
                stuck: Vec::new(),
                violations: Vec::new(),
                rng,
            },
            op_log: None,
            digests: DigestCache::default(),
        }
    }

    pub fn size_bytes(&self) -> u32 {
        self.size_bytes
    }

    pub fn erased_value(&self) -> u8 {
        self.erased_value
    }

    /// The sector holding `offset`.
    pub fn sector_containing(&self, offset: u32) -> Range<u32> {
        assert!(offset < self.size_bytes, "offset 0x{offset:x} is outside the flash");
        let i = self.boundaries.partition_point(|&b| b <= offset) - 1;
        self.boundaries[i]..self.boundaries[i + 1]
    }

    pub fn counters(&self) -> Counters {
        self.state.counters
    }

    /// The index the next program or erase will have.
    pub fn mutating_ops(&self) -> u64 {
        self.state.counters.mutating_ops()
    }

    /// Every strictness rule broken so far, oldest first.
    pub fn violations(&self) -> &[Violation] {
        &self.state.violations
    }

    pub fn clear_violations(&mut self) {
        self.state.violations.clear();
    }

    /// Whether the write unit holding `offset` must be erased before it may be programmed.
    pub fn needs_erase(&self, offset: u32) -> bool {
        assert!(offset < self.size_bytes, "offset 0x{offset:x} is outside the flash");
        let (page, at) = (offset as usize / PAGE_BYTES, offset as usize % PAGE_BYTES);
        let unit = at / WRITE;
        self.pages[page].needs_erase[unit / 64] >> (unit % 64) & 1 == 1
    }

    // ---- Power ----

    pub fn is_powered(&self) -> bool {
        self.state.powered
    }

    /// Cuts the power now, between operations.
    pub fn power_cut(&mut self) {
        self.state.powered = false;
    }

    /// Arms a cut for a future mutating operation, replacing any armed one.
    pub fn power_cut_at(&mut self, cut: PowerCut) {
        let next = self.mutating_ops();
        assert!(cut.at_op >= next, "power cut armed for op {} but op {next} is next", cut.at_op);
        self.state.armed_cut = Some(cut);
    }

    pub fn armed_power_cut(&self) -> Option<PowerCut> {
        self.state.armed_cut
    }

    pub fn disarm_power_cut(&mut self) {
        self.state.armed_cut = None;
    }

    /// Restores the power. The flash keeps whatever the cut left in it.
    pub fn power_on(&mut self) {
        self.state.powered = true;
    }

    // ---- Faults in the stored data ----

    /// Makes every program touching `range` fail and change nothing, from now on. Erases still work.
    pub fn fail_programs_in(&mut self, range: Range<u32>) {
        self.state.failing_programs.push(range);
    }

    pub fn clear_failing_programs(&mut self) {
        self.state.failing_programs.clear();
    }

    /// Sticks bit `bit` of the byte at `offset` at `value`, from now on: it reads so at once,
    /// and no program or erase changes it. A program that would need to change it is not a
    /// strictness violation (the device does not know), it just does not land there: reading
    /// back is how software finds out.
    pub fn stick_bit(&mut self, offset: u32, bit: u8, value: bool) {
        assert!(offset < self.size_bytes && bit < 8, "bit {bit} at 0x{offset:x} is outside the flash");
        self.state.stuck.push(StuckBit { offset, bit, value });
        self.apply_stuck(offset as usize, offset as usize + 1);
    }

    /// Forces the stuck bits in `from..to` to their values.
    fn apply_stuck(&mut self, from: usize, to: usize) {
        for i in 0..self.state.stuck.len() {
            let StuckBit { offset, bit, value } = self.state.stuck[i];
            let at = offset as usize;
            if at < from || at >= to {
                continue;
            }
            let page = Arc::make_mut(&mut self.pages[at / PAGE_BYTES]);
            let cell = &mut page.bytes[at % PAGE_BYTES];
            if value {
                *cell |= 1 << bit;
            } else {
                *cell &= !(1 << bit);
            }
        }
    }

    /// Inverts bit `bit` (0 = least significant) of the byte at `offset`.
    pub fn flip_bit(&mut self, offset: u32, bit: u8) {
        assert!(offset < self.size_bytes && bit < 8, "bit {bit} at 0x{offset:x} is outside the flash");
        let page = Arc::make_mut(&mut self.pages[offset as usize / PAGE_BYTES]);
        page.bytes[offset as usize % PAGE_BYTES] ^= 1 << bit;
    }

    /// Inverts `n` distinct bits chosen uniformly in `region` (Floyd's sampling, `n` draws).
    pub fn flip_random_bits(&mut self, region: Range<u32>, n: u32, rng: &mut Rng) {
        assert!(region.start <= region.end && region.end <= self.size_bytes, "flip region outside the flash");
        let bits = u64::from(region.end - region.start) * 8;
        assert!(u64::from(n) <= bits, "cannot flip {n} distinct bits in {bits}");
        let mut chosen: Vec<u64> = Vec::with_capacity(n as usize);
        for j in bits - u64::from(n)..bits {
            let t = rng.below(j + 1);
            chosen.push(if chosen.contains(&t) { j } else { t });
        }
        for bit in chosen {
            self.flip_bit(region.start + (bit / 8) as u32, (bit % 8) as u8);
        }
    }

    // ---- Back doors for set-up and checks: no power, no counting, no strictness ----

    /// Writes `bytes` at `offset` as a factory would, replacing the content. Every write unit it
    /// touches then needs an erase exactly when it does not read as erased.
    pub fn load(&mut self, offset: u32, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        assert!(
            end <= self.size_bytes as usize,
            "load of 0x{:x} bytes at 0x{offset:x} overflows",
            bytes.len()
        );
        let erased = self.erased_value;
        for (p, at, from, n) in chunks(offset as usize, bytes.len()) {
            let page = Arc::make_mut(&mut self.pages[p]);
            page.bytes[at..at + n].copy_from_slice(&bytes[from..from + n]);
            let first = at / WRITE;
            for unit in first..(at + n).div_ceil(WRITE) {
                let cells = &page.bytes[unit * WRITE..(unit + 1) * WRITE];
                let mask = 1u64 << (unit % 64);
                if cells.iter().all(|&b| b == erased) {
                    page.needs_erase[unit / 64] &= !mask;
                } else {
                    page.needs_erase[unit / 64] |= mask;
                }
            }
        }
    }

    /// Copies the stored bytes at `offset` into `buf`.
    pub fn peek(&self, offset: u32, buf: &mut [u8]) {
        let end = offset as usize + buf.len();
        assert!(end <= self.size_bytes as usize, "peek of 0x{:x} bytes at 0x{offset:x} overflows", buf.len());
        self.copy_out(offset as usize, buf);
    }

    /// The stored bytes of `range`.
    pub fn contents(&self, range: Range<u32>) -> Vec<u8> {
        let mut out = vec![0; range.len()];
        self.peek(range.start, &mut out);
        out
    }

    /// Whether the flash holds exactly `matched`'s bytes at its offset, compared in place a page
    /// at a time. A page `matched` found equal before, and that is still the same page, is not
    /// compared again.
    pub fn holds(&self, matched: &mut Matched) -> bool {
        let (offset, bytes) = (matched.offset as usize, &matched.bytes[..]);
        assert!(
            offset + bytes.len() <= self.size_bytes as usize,
            "compare of 0x{:x} bytes at 0x{offset:x} overflows",
            bytes.len()
        );
        let first = offset / PAGE_BYTES;
        chunks(offset, bytes.len()).all(|(p, at, from, n)| {
            let page = &self.pages[p];
            let known = &mut matched.pages[p - first];
            if known.as_ref().is_some_and(|known| Arc::ptr_eq(known, page)) {
                return true;
            }
            let equal = page.bytes[at..at + n] == bytes[from..from + n];
            if equal {
                *known = Some(page.clone());
            }
            equal
        })
    }

    // ---- Snapshots ----

    /// Starts (or stops) recording every mutating operation that reaches the device, for
    /// timelines. Off by default: sweeps do not pay for it.
    pub fn log_ops(&mut self, on: bool) {
        self.op_log = on.then(Vec::new);
    }

    /// The operations recorded since the last call.
    pub fn take_op_log(&mut self) -> Vec<OpRecord> {
        self.op_log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The whole device state, in O(pages) pointer copies.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { size_bytes: self.size_bytes, pages: self.pages.clone(), state: self.state.clone() }
    }

    /// Returns to `snapshot`'s state, counters and fault RNG included, in O(pages) pointer copies.
    pub fn restore(&mut self, snapshot: &Snapshot) {
        assert_eq!(snapshot.size_bytes, self.size_bytes, "snapshot of a flash of another size");
        self.pages.clone_from(&snapshot.pages);
        self.state.clone_from(&snapshot.state);
    }

    // ---- The operations ----

    fn read_bytes(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), SimError> {
        if !self.state.powered {
            return Err(SimError::PowerOff { op: Op::Read, offset });
        }
        self.state.counters.reads += 1;
        self.state.counters.bytes_read += buf.len() as u64;
        if !self.in_bounds(offset, buf.len()) {
            let violation = Violation { op: Op::Read, kind: ViolationKind::OutOfBounds, offset };
            return Err(self.reject(violation, None));
        }
        self.copy_out(offset as usize, buf);
        Ok(())
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), SimError> {
        let cut = self.begin_mutation(Op::Program, offset, data.len() as u32)?;
        self.state.counters.programs += 1;
        self.state.counters.bytes_programmed += data.len() as u64;
        if let Err(violation) = self.check_program(offset, data) {
            return Err(self.reject(violation, cut));
        }
        let fails = self.state.failing_programs.iter().any(|r| overlaps(r, offset, data.len()));
        match cut {
            None if fails => Err(SimError::ProgramFailed { offset }),
            None => {
                self.land_program(offset as usize, data);
                Ok(())
            }
            Some(cut) => {
                match cut.when {
                    _ if fails => {}
                    CutWhen::Before => {}
                    CutWhen::During => self.tear_program(offset as usize, data),
                    CutWhen::After => self.land_program(offset as usize, data),
                }
                Err(self.cut_power(Op::Program, offset, cut))
            }
        }
    }

    fn erase_sectors(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let cut = self.begin_mutation(Op::Erase, from, to.saturating_sub(from))?;
        self.state.counters.erases += 1;
        if let Err(violation) = self.check_erase(from, to) {
            return Err(self.reject(violation, cut));
        }
        let Some(cut) = cut else {
            self.erase_range(from as usize, to as usize);
            return Ok(());
        };
        match cut.when {
            CutWhen::Before => {}
            CutWhen::During => self.interrupt_erase(from, to),
            CutWhen::After => self.erase_range(from as usize, to as usize),
        }
        Err(self.cut_power(Op::Erase, from, cut))
    }

    /// Refuses the call without power; otherwise takes the cut armed for this operation, if any.
    fn begin_mutation(&mut self, op: Op, offset: u32, len_bytes: u32) -> Result<Option<PowerCut>, SimError> {
        if !self.state.powered {
            return Err(SimError::PowerOff { op, offset });
        }
        let index = self.mutating_ops();
        if let Some(log) = &mut self.op_log {
            log.push(OpRecord { index, op, offset, len_bytes });
        }
        match self.state.armed_cut {
            Some(cut) if cut.at_op == index => {
                self.state.armed_cut = None;
                Ok(Some(cut))
            }
            _ => Ok(None),
        }
    }

    fn reject(&mut self, violation: Violation, cut: Option<PowerCut>) -> SimError {
        self.state.violations.push(violation);
        if cut.is_some() {
            self.state.powered = false;
        }
        SimError::Violation(violation)
    }

    fn cut_power(&mut self, op: Op, offset: u32, cut: PowerCut) -> SimError {
        self.state.powered = false;
        SimError::PowerCut { op, offset, op_index: cut.at_op, when: cut.when }
    }

    fn in_bounds(&self, offset: u32, len: usize) -> bool {
        offset as usize + len <= self.size_bytes as usize
    }

    fn check_program(&self, offset: u32, data: &[u8]) -> Result<(), Violation> {
        let violation = |kind, offset| Violation { op: Op::Program, kind, offset };
        if !self.in_bounds(offset, data.len()) {
            return Err(violation(ViolationKind::OutOfBounds, offset));
        }
        if !(offset as usize).is_multiple_of(WRITE) {
            return Err(violation(ViolationKind::Misaligned, offset));
        }
        if !data.len().is_multiple_of(WRITE) {
            let partial = offset as usize + data.len() / WRITE * WRITE;
            return Err(violation(ViolationKind::Misaligned, partial as u32));
        }
        let erased = self.erased_value;
        for (p, at, from, n) in chunks(offset as usize, data.len()) {
            let page = &self.pages[p];
            if let Some(unit) = first_set(&page.needs_erase, at / WRITE, (at + n) / WRITE) {
                return Err(violation(ViolationKind::Reprogram, (p * PAGE_BYTES + unit * WRITE) as u32));
            }
            let cells = &page.bytes[at..at + n];
            if let Some(byte) = first_toward_erased(cells, &data[from..from + n], erased)
                && !self.only_stuck_bits_differ(p * PAGE_BYTES + at, cells, &data[from..from + n])
            {
                return Err(violation(ViolationKind::BitTowardErased, (p * PAGE_BYTES + at + byte) as u32));
            }
        }
        Ok(())
    }

    /// True when every bit that `new` would move back toward the erased value in `cells` (at
    /// flash offset `offset`) is a stuck bit: the cell cannot hold it, but the program is legal.
    fn only_stuck_bits_differ(&self, offset: usize, cells: &[u8], new: &[u8]) -> bool {
        if self.state.stuck.is_empty() {
            return false;
        }
        let erased = self.erased_value;
        cells.iter().zip(new).enumerate().all(|(i, (&cell, &new))| {
            // Bits at their programmed value (away from erased) that `new` wants erased.
            let toward_erased = (cell ^ erased) & !(new ^ erased);
            let stuck: u8 = self
                .state
                .stuck
                .iter()
                .filter(|s| s.offset as usize == offset + i)
                .fold(0, |mask, s| mask | 1 << s.bit);
            toward_erased & !stuck == 0
        })
    }

    fn check_erase(&self, from: u32, to: u32) -> Result<(), Violation> {
        let violation = |kind, offset| Violation { op: Op::Erase, kind, offset };
        if from > to {
            return Err(violation(ViolationKind::OutOfBounds, from));
        }
        if to > self.size_bytes {
            return Err(violation(ViolationKind::OutOfBounds, to));
        }
        for offset in [from, to] {
            if self.boundaries.binary_search(&offset).is_err() {
                return Err(violation(ViolationKind::Misaligned, offset));
            }
        }
        Ok(())
    }

    /// A checked program: every unit is erased and the data only moves bits away from the erased
    /// value, so the result is the data itself.
    fn land_program(&mut self, offset: usize, data: &[u8]) {
        for (p, at, from, n) in chunks(offset, data.len()) {
            let page = Arc::make_mut(&mut self.pages[p]);
            page.bytes[at..at + n].copy_from_slice(&data[from..from + n]);
            set_range(&mut page.needs_erase, at / WRITE, (at + n) / WRITE);
        }
        self.apply_stuck(offset, offset + data.len());
    }

    fn tear_program(&mut self, offset: usize, data: &[u8]) {
        let units = data.len() / WRITE;
        if units == 0 {
            return;
        }
        let landed = self.state.rng.below(units as u64) as usize * WRITE;
        self.land_program(offset, &data[..landed]);
        let at = offset + landed;
        let page = Arc::make_mut(&mut self.pages[at / PAGE_BYTES]);
        let cells = &mut page.bytes[at % PAGE_BYTES..at % PAGE_BYTES + WRITE];
        let new = &data[landed..landed + WRITE];
        // Each bit keeps its old value or takes its new one, independently.
        for (cells, new) in cells.chunks_mut(8).zip(new.chunks(8)) {
            let mask = self.state.rng.next_u64().to_le_bytes();
            for ((cell, &new), &mask) in cells.iter_mut().zip(new).zip(&mask) {
                *cell ^= (*cell ^ new) & mask;
            }
        }
        let unit = at % PAGE_BYTES / WRITE;
        set_range(&mut page.needs_erase, unit, unit + 1);
        self.apply_stuck(at, at + WRITE);
    }

    fn erase_range(&mut self, from: usize, to: usize) {
        let end = self.size_bytes as usize;
        for (p, at, _, n) in chunks(from, to - from) {
            let whole = at == 0 && n == PAGE_BYTES.min(end - p * PAGE_BYTES);
            if whole {
                self.pages[p].clone_from(&self.erased_page);
            } else if !Arc::ptr_eq(&self.pages[p], &self.erased_page) {
                let page = Arc::make_mut(&mut self.pages[p]);
                page.bytes[at..at + n].fill(self.erased_value);
                clear_range(&mut page.needs_erase, at / WRITE, (at + n) / WRITE);
            }
        }
        self.apply_stuck(from, to);
    }

    /// Erases a random number of leading sectors, leaves residue in the next one.
    fn interrupt_erase(&mut self, from: u32, to: u32) {
        let first = self.boundaries.binary_search(&from).expect("checked boundary");
        let last = self.boundaries.binary_search(&to).expect("checked boundary");
        if first == last {
            return;
        }
        let done = first + self.state.rng.below((last - first) as u64) as usize;
        let (mid, end) = (self.boundaries[done] as usize, self.boundaries[done + 1] as usize);
        self.erase_range(from as usize, mid);
        let erased = self.erased_value;
        for (p, at, _, n) in chunks(mid, end - mid) {
            let page = Arc::make_mut(&mut self.pages[p]);
            // Bits already erased stay erased; each of the others is erased or not at random.
            for cells in page.bytes[at..at + n].chunks_mut(8) {
                let mask = self.state.rng.next_u64().to_le_bytes();
                for (cell, &mask) in cells.iter_mut().zip(&mask) {
                    *cell ^= (*cell ^ erased) & mask;
                }
            }
            set_range(&mut page.needs_erase, at / WRITE, (at + n) / WRITE);
        }
        self.apply_stuck(mid, end);
    }

    fn copy_out(&self, offset: usize, buf: &mut [u8]) {
        for (p, at, from, n) in chunks(offset, buf.len()) {
            buf[from..from + n].copy_from_slice(&self.pages[p].bytes[at..at + n]);
        }
    }
}

impl<const WRITE: usize, const ERASE: usize> fmt::Debug for SimFlash<WRITE, ERASE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.pages.iter().filter(|p| Arc::ptr_eq(p, &self.erased_page)).count();
        f.debug_struct("SimFlash")
            .field("size_bytes", &format_args!("0x{:x}", self.size_bytes))
            .field("write_bytes", &WRITE)
            .field("erase_bytes", &ERASE)
            .field("sectors", &(self.boundaries.len() - 1))
            .field("erased_value", &format_args!("0x{:02x}", self.erased_value))
            .field("erased_pages", &format_args!("{shared}/{}", self.pages.len()))
            .field("powered", &self.state.powered)
            .field("armed_cut", &self.state.armed_cut)
            .field("failing_programs", &self.state.failing_programs)
            .field("violations", &self.state.violations.len())
            .field("counters", &self.state.counters)
            .finish()
    }
}

impl<const WRITE: usize, const ERASE: usize> RegionDigests for SimFlash<WRITE, ERASE> {
    /// The digest of the region when its pages are, one for one, those of a remembered entry.
    /// Never without power: reading would fail then, so a digest must not be given either.
    fn known_sha256(&mut self, offset: u32, len_bytes: u32) -> Option<[u8; 32]> {
        if !self.state.powered {
            return None;
        }
        let pages = self.pages_of(offset, len_bytes)?;
        let entry = self.digests.entries.iter().find(|e| {
            e.offset == offset
                && e.len_bytes == len_bytes
                && e.pages.iter().zip(pages).all(|(a, b)| Arc::ptr_eq(a, b))
        })?;
        Some(entry.sha256)
    }

    fn remember_sha256(&mut self, offset: u32, len_bytes: u32, sha256: &[u8; 32]) {
        let Some(pages) = self.pages_of(offset, len_bytes) else { return };
        let entry = DigestEntry { offset, len_bytes, pages: pages.to_vec(), sha256: *sha256 };
        let cache = &mut self.digests;
        if let Some(same) = cache.entries.iter_mut().find(|e| e.offset == offset && e.len_bytes == len_bytes)
        {
            *same = entry;
        } else if cache.entries.len() < DIGEST_ENTRIES {
            cache.entries.push(entry);
        } else {
            cache.entries[cache.next] = entry;
            cache.next = (cache.next + 1) % DIGEST_ENTRIES;
        }
    }
}

impl<const WRITE: usize, const ERASE: usize> SimFlash<WRITE, ERASE> {
    /// The pages covering a non-empty region inside the flash.
    fn pages_of(&self, offset: u32, len_bytes: u32) -> Option<&[Arc<Page>]> {
        let end = offset.checked_add(len_bytes)?;
        if len_bytes == 0 || end > self.size_bytes {
            return None;
        }
        Some(&self.pages[offset as usize / PAGE_BYTES..(end as usize).div_ceil(PAGE_BYTES)])
    }
}

/// Bytes expected at an offset of a flash, with the pages found to hold them, so that comparing
/// again skips those pages while they are the same pages ([`SimFlash::holds`]). Holding a page
/// keeps it alive, and a shared page is never changed in place, so the same page still holds the
/// bytes it was found to hold.
#[derive(Clone)]
pub struct Matched {
    offset: u32,
    bytes: Arc<[u8]>,
    pages: Vec<Option<Arc<Page>>>,
}

impl Matched {
    pub fn new(offset: u32, bytes: Arc<[u8]>) -> Matched {
        let first = offset as usize / PAGE_BYTES;
        let last = (offset as usize + bytes.len()).div_ceil(PAGE_BYTES);
        Matched { offset, bytes, pages: vec![None; last - first] }
    }

    pub fn offset(&self) -> u32 {
        self.offset
    }

    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for SimFlash<WRITE, ERASE> {
    type Error = SimError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for SimFlash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        self.read_bytes(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.size_bytes as usize
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for SimFlash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        self.erase_sectors(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        self.program(offset, bytes)
    }
}

/// Splits `len` bytes from `offset` at page boundaries into `(page, offset in page, offset in
/// the caller's buffer, length)`.
fn chunks(offset: usize, len: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        if done == len {
            return None;
        }
        let at = offset + done;
        let n = (PAGE_BYTES - at % PAGE_BYTES).min(len - done);
        let chunk = (at / PAGE_BYTES, at % PAGE_BYTES, done, n);
        done += n;
        Some(chunk)
    })
}

/// The first byte where programming `new` over `cells` would move a bit back toward the erased
/// value: where the new bit is erased and the stored one is not. One OR-fold over 8-byte words
/// keeps the common case branch-free; only a failure looks for the byte.
fn first_toward_erased(cells: &[u8], new: &[u8], erased: u8) -> Option<usize> {
    let toward_erased = |old: u8, new: u8| !(new ^ erased) & (old ^ erased);
    let word = u64::from_ne_bytes([erased; 8]);
    let (old_words, new_words) = (cells.chunks_exact(8), new.chunks_exact(8));
    let tail = old_words.remainder().iter().zip(new_words.remainder());
    let load = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("8 bytes"));
    let words = old_words.zip(new_words).fold(0, |acc, (o, n)| acc | (!(load(n) ^ word) & (load(o) ^ word)));
    let bytes = tail.fold(0, |acc, (&o, &n)| acc | toward_erased(o, n));
    if words == 0 && bytes == 0 {
        return None;
    }
    cells.iter().zip(new).position(|(&o, &n)| toward_erased(o, n) != 0)
}

fn overlaps(range: &Range<u32>, offset: u32, len: usize) -> bool {
    (range.start as usize) < offset as usize + len && offset < range.end
}

/// Calls `f(word, mask)` for the bits `from..to` of a bitmap, one word at a time.
fn for_each_word(from: usize, to: usize, mut f: impl FnMut(usize, u64)) {
    let mut bit = from;
    while bit < to {
        let (word, low) = (bit / 64, bit % 64);
        let high = (to - word * 64).min(64);
        let width = high - low;
        let mask = if width == 64 { u64::MAX } else { ((1u64 << width) - 1) << low };
        f(word, mask);
        bit = word * 64 + high;
    }
}

fn first_set(bits: &[u64; BITMAP_WORDS], from: usize, to: usize) -> Option<usize> {
    let mut first = None;
    for_each_word(from, to, |word, mask| {
        let hits = bits[word] & mask;
        if first.is_none() && hits != 0 {
            first = Some(word * 64 + hits.trailing_zeros() as usize);
        }
    });
    first
}

fn set_range(bits: &mut [u64; BITMAP_WORDS], from: usize, to: usize) {
    for_each_word(from, to, |word, mask| bits[word] |= mask);
}

fn clear_range(bits: &mut [u64; BITMAP_WORDS], from: usize, to: usize) {
    for_each_word(from, to, |word, mask| bits[word] &= !mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flash = SimFlash<4, 4096>;

    fn flash(size_bytes: u32) -> Flash {
        SimFlash::new(&Geometry::new(size_bytes), Rng::new(1))
    }

    #[test]
    fn bitmap_ranges_cross_words() {
        let mut bits = [0u64; BITMAP_WORDS];
        set_range(&mut bits, 60, 130);
        assert_eq!(first_set(&bits, 0, 60), None);
        assert_eq!(first_set(&bits, 0, 4096), Some(60));
        assert_eq!(first_set(&bits, 129, 4096), Some(129));
        assert_eq!(first_set(&bits, 130, 4096), None);
        clear_range(&mut bits, 64, 128);
        assert_eq!(first_set(&bits, 61, 4096), Some(61));
        assert_eq!(first_set(&bits, 64, 4096), Some(128));
        set_range(&mut bits, 0, 4096);
        assert!(bits.iter().all(|&w| w == u64::MAX));
    }

    #[test]
    fn chunks_split_at_page_boundaries() {
        let got: Vec<_> = chunks(4000, 5000).collect();
        assert_eq!(got, [(0, 4000, 0, 96), (1, 0, 96, 4096), (2, 0, 4192, 808)]);
        assert_eq!(chunks(0, 0).count(), 0);
    }

    // A snapshot must share pages, not copy them: that is what makes a sweep cheap.
    #[test]
    fn snapshot_shares_pages_and_erase_shares_the_erased_page() {
        let mut f = flash(64 * 1024);
        f.write(0, &[0; 8]).unwrap();
        let snap = f.snapshot();
        assert!(f.pages.iter().zip(&snap.pages).all(|(a, b)| Arc::ptr_eq(a, b)));
        f.write(8, &[0; 8]).unwrap();
        assert!(!Arc::ptr_eq(&f.pages[0], &snap.pages[0]), "a change copies only its page");
        assert!(Arc::ptr_eq(&f.pages[1], &snap.pages[1]));
        f.erase(0, 4096).unwrap();
        assert!(Arc::ptr_eq(&f.pages[0], &f.erased_page));
        f.restore(&snap);
        assert!(Arc::ptr_eq(&f.pages[0], &snap.pages[0]));
    }
}
