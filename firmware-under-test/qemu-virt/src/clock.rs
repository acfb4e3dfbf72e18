//! The device clock: milliseconds the application sees, on mtime, that a test rig may freeze,
//! resume and step (`Board.Clock`), and that never run backwards across a reset.
//!
//! It lives in a RAM block of its own ([`BLOCK_ADDRESS`]) that neither binary links anything
//! into: RAM survives a reset (QMP `system_reset`, a `sifive_test` reboot), so the clock goes on
//! where it was. A new QEMU process starts with zeroed RAM; then the clock starts from the
//! **loader word** ([`LOADER_WORD_ADDRESS`]), which the runner writes at every reset with
//! `-device loader,addr=0x87ffff00,data=WORD,data-len=8`, and which is read only when the block
//! is absent. Without a loader word (a person's `hil up`) the clock starts at 0 and runs free.
//!
//! | loader word bits | meaning |
//! |------------------|---------|
//! | 48..64           | [`LOADER_MAGIC`] (`0xc10c`) |
//! | 47               | 1: the clock starts frozen |
//! | 0..47            | the start value, in ms |
//!
//! mtime counts at 10 MHz ([`TICKS_PER_MS`]). If it reads lower than the block last saw (a
//! reset that restarted it), the clock continues from the last value it gave.

/// Where the clock's block lives: the top page of `virt`'s 128 MiB of RAM, outside both
/// binaries' sections and stacks.
pub const BLOCK_ADDRESS: usize = 0x87ff_f000;
/// Where the runner's loader word lives.
pub const LOADER_WORD_ADDRESS: usize = 0x87ff_ff00;
pub const LOADER_MAGIC: u64 = 0xc10c;
/// mtime ticks per millisecond: `virt`'s timebase is 10 MHz.
pub const TICKS_PER_MS: u64 = 10_000;

const BLOCK_MAGIC: u32 = 0xc10c_b10c;
const START_MS_MASK: u64 = (1 << 47) - 1;

/// The loader word for a clock that starts at `start_ms`, frozen or running.
pub const fn loader_word(start_ms: u64, frozen: bool) -> u64 {
    LOADER_MAGIC << 48 | (frozen as u64) << 47 | (start_ms & START_MS_MASK)
}

/// How [`Clock::power_on`] found the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOn {
    /// The block was there: the clock goes on.
    Kept,
    /// A cold start, from the loader word.
    Loaded { start_ms: u64, frozen: bool },
    /// A cold start without a loader word: from 0, running.
    Free,
}

/// The clock's RAM block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    magic: u32,
    frozen: u32,
    /// Device time at `base_ticks` (or, frozen, now).
    base_ms: u64,
    base_ticks: u64,
    /// mtime at the last reading, to notice a restarted mtime.
    last_ticks: u64,
}

impl Clock {
    /// Takes the clock over at power-on: keeps a block that is there, else starts from the
    /// loader word (or from 0, running).
    pub fn power_on(&mut self, loader_word: u64, ticks: u64) -> PowerOn {
        if self.magic == BLOCK_MAGIC {
            if ticks < self.last_ticks {
                let ms = self.read(self.last_ticks);
                self.base_ms = ms;
                self.base_ticks = ticks;
            }
            self.last_ticks = ticks;
            return PowerOn::Kept;
        }
        let (start_ms, frozen, how) = if loader_word >> 48 == LOADER_MAGIC {
            let (start_ms, frozen) = (loader_word & START_MS_MASK, loader_word >> 47 & 1 == 1);
            (start_ms, frozen, PowerOn::Loaded { start_ms, frozen })
        } else {
            (0, false, PowerOn::Free)
        };
        *self = Clock {
            magic: BLOCK_MAGIC,
            frozen: frozen as u32,
            base_ms: start_ms,
            base_ticks: ticks,
            last_ticks: ticks,
        };
        how
    }

    fn read(&self, ticks: u64) -> u64 {
        if self.frozen != 0 {
            return self.base_ms;
        }
        self.base_ms.saturating_add(ticks.saturating_sub(self.base_ticks) / TICKS_PER_MS)
    }

    /// Device time at mtime `ticks`.
    pub fn now_ms(&mut self, ticks: u64) -> u64 {
        self.last_ticks = self.last_ticks.max(ticks);
        self.read(ticks)
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen != 0
    }

    /// Stops the clock where it is.
    pub fn freeze(&mut self, ticks: u64) {
        self.base_ms = self.now_ms(ticks);
        self.frozen = 1;
    }

    /// Lets a frozen clock run again from where it stopped.
    pub fn resume(&mut self, ticks: u64) {
        if self.frozen != 0 {
            self.base_ticks = ticks;
            self.last_ticks = self.last_ticks.max(ticks);
            self.frozen = 0;
        }
    }

    /// Sets a frozen clock to `ms`, never backwards.
    pub fn set_frozen_ms(&mut self, ms: u64) {
        debug_assert!(self.frozen != 0, "only a frozen clock is stepped");
        self.base_ms = self.base_ms.max(ms);
    }

    /// The mtime at which a running clock reaches `ms` (`None` while frozen: it never does).
    pub fn ticks_at(&self, ms: u64) -> Option<u64> {
        if self.frozen != 0 {
            return None;
        }
        let ahead_ms = ms.saturating_sub(self.base_ms);
        Some(self.base_ticks.saturating_add(ahead_ms.saturating_mul(TICKS_PER_MS)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_start_takes_the_loader_word_and_a_reset_keeps_the_block() {
        let mut clock = Clock::default();
        let word = loader_word(5_000, true);
        assert_eq!(clock.power_on(word, 123), PowerOn::Loaded { start_ms: 5_000, frozen: true });
        assert_eq!(clock.now_ms(10_000_000), 5_000, "frozen");
        clock.set_frozen_ms(305_000);
        // The runner's loader rewrites the word at every reset: the block wins.
        assert_eq!(clock.power_on(word, 50), PowerOn::Kept);
        assert_eq!(clock.now_ms(60), 305_000);
    }

    #[test]
    fn without_a_loader_word_the_clock_runs_free_from_0() {
        let mut clock = Clock::default();
        assert_eq!(clock.power_on(0, 1_000), PowerOn::Free);
        assert_eq!(clock.now_ms(1_000 + 25 * TICKS_PER_MS), 25);
        assert_eq!(clock.ticks_at(40), Some(1_000 + 40 * TICKS_PER_MS));
    }

    #[test]
    fn device_time_never_runs_backwards_when_mtime_restarts() {
        let mut clock = Clock::default();
        clock.power_on(loader_word(100, false), 0);
        assert_eq!(clock.now_ms(70 * TICKS_PER_MS), 170);
        // A reset that restarts mtime at 0.
        assert_eq!(clock.power_on(loader_word(100, false), 0), PowerOn::Kept);
        assert_eq!(clock.now_ms(0), 170);
        assert_eq!(clock.now_ms(TICKS_PER_MS), 171);
    }

    #[test]
    fn freeze_resume_and_steps() {
        let mut clock = Clock::default();
        clock.power_on(0, 0);
        clock.freeze(7 * TICKS_PER_MS);
        assert_eq!(clock.now_ms(99 * TICKS_PER_MS), 7);
        assert_eq!(clock.ticks_at(8), None);
        clock.set_frozen_ms(3);
        assert_eq!(clock.now_ms(99 * TICKS_PER_MS), 7, "never backwards");
        clock.set_frozen_ms(20);
        clock.resume(100 * TICKS_PER_MS);
        assert_eq!(clock.now_ms(102 * TICKS_PER_MS), 22);
    }
}
