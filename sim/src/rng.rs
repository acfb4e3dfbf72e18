//! The simulator's only source of randomness: a small, seeded, splittable PRNG.
//!
//! A run has one master seed. Each component (the flash's fault model, a bit-flip injector, the
//! network, ...) takes its own generator with [`Rng::derive`], which mixes a stable hash of the
//! component's name into the parent's *seed*, not into its current state. So adding a component,
//! or drawing more numbers in one, never changes what another component draws, and a failure can
//! be replayed from the master seed alone.
//!
//! The generator is xoshiro256** seeded through SplitMix64 (Blackman and Vigna's recommendation).
//! It is not cryptographic, and nothing here needs it to be.

/// A deterministic pseudo-random generator that remembers the seed it was built from.
///
/// Not `Copy`: copying a generator silently replays its numbers, which is almost always a bug.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    seed: u64,
    state: [u64; 4],
}

impl Rng {
    /// A generator for `seed`. Equal seeds give equal sequences, on every platform.
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        // Four consecutive SplitMix64 outputs are distinct, so the state is never all zero.
        let state = [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)];
        Rng { seed, state }
    }

    /// The seed this generator was built from (print it with a replay command).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A generator for the named component, independent of how many numbers `self` has drawn and
    /// of which other components exist.
    pub fn derive(&self, component: &str) -> Rng {
        Rng::new(mix64(self.seed ^ mix64(fnv1a64(component.as_bytes()))))
    }

    /// The next 64 random bits (xoshiro256**).
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform number in `0..n`, without modulo bias (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0) has no value to return");
        let mut product = u128::from(self.next_u64()) * u128::from(n);
        if (product as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (product as u64) < threshold {
                product = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (product >> 64) as u64
    }

    /// Fills `buf` with random bytes, eight per draw.
    pub fn fill_bytes(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mix64(*x)
}

/// SplitMix64's finaliser: a bijection that spreads every input bit over the output.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a: a hash of a component name that stays the same across Rust versions and platforms
/// (`std`'s `DefaultHasher` promises neither).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_seeds_give_equal_sequences() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(42).next_u64(), Rng::new(43).next_u64());
    }

    // Pins the stream: a change here reorders every recorded seed's faults, so it must be deliberate.
    #[test]
    fn stream_is_stable_across_releases() {
        // SplitMix64's first output for seed 0 is a published test vector.
        assert_eq!(splitmix64(&mut 0), 0xe220_a839_7b1d_cdaf);
        let mut rng = Rng::new(0);
        let first = [rng.next_u64(), rng.next_u64(), rng.next_u64()];
        assert_eq!(first, [0x99ec_5f36_cb75_f2b4, 0xbf6e_1f78_4956_452a, 0x1a5f_849d_4933_e6e0]);
    }

    #[test]
    fn derive_ignores_draws_and_sibling_components() {
        let master = Rng::new(7);
        let flash = master.derive("flash");
        let mut drawn = Rng::new(7);
        drawn.next_u64();
        let _network = drawn.derive("network");
        assert_eq!(drawn.derive("flash"), flash);
        assert_ne!(master.derive("flash"), master.derive("flash2"));
        assert_ne!(master.derive("flash"), Rng::new(8).derive("flash"));
        assert_ne!(master.derive("a").derive("b"), master.derive("b").derive("a"));
    }

    #[test]
    fn below_stays_in_range_and_reaches_both_ends() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = rng.below(5);
            assert!(v < 5);
            seen[v as usize] = true;
        }
        assert_eq!(seen, [true; 5]);
        assert_eq!(rng.below(1), 0);
        assert!(rng.below(u64::MAX) < u64::MAX);
    }

    #[test]
    fn fill_bytes_fills_odd_lengths_deterministically() {
        let mut a = [0u8; 13];
        let mut b = [0u8; 13];
        Rng::new(5).fill_bytes(&mut a);
        Rng::new(5).fill_bytes(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, [0u8; 13]);
    }
}
