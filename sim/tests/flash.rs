//! The strict NOR model: its rules, counters, faults and snapshots.

use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use ota_core::flash::RegionDigests;
use ota_sim::flash::{
    Counters, CutWhen, Geometry, Matched, Op, PowerCut, SimError, SimFlash, Violation, ViolationKind,
};
use ota_sim::rng::Rng;
use proptest::prelude::*;

const KIB: u32 = 1024;

type Flash = SimFlash<4, 4096>;

/// 64 KiB of 4 KiB sectors, erased to 0xFF.
fn uniform(seed: u64) -> Flash {
    SimFlash::new(&Geometry::uniform(64 * KIB, 4 * KIB), Rng::new(seed))
}

/// An STM32F4-like map: four 16 KiB sectors, then 64 KiB sectors.
fn stm32_like() -> Flash {
    let geometry = Geometry::new(256 * KIB).sectors(4, 16 * KIB).sectors_to_end(64 * KIB);
    SimFlash::new(&geometry, Rng::new(1))
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

fn bits_differing(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[derive(Clone, Copy, Debug)]
enum Req {
    Read(u32, usize),
    Program(u32, usize),
    Erase(u32, u32),
}

fn send(flash: &mut Flash, req: Req) -> Result<(), SimError> {
    match req {
        Req::Read(offset, len) => flash.read(offset, &mut vec![0; len]),
        Req::Program(offset, len) => flash.write(offset, &vec![0x00; len]),
        Req::Erase(from, to) => flash.erase(from, to),
    }
}

/// Sends `req` to a uniform flash whose 0x2000..0x2010 is programmed and whose byte 0x3001 had
/// bit 2 flipped in erased cells, and checks that exactly `expect` is reported and nothing changed.
fn check_violation(req: Req, expect: (ViolationKind, u32, NorFlashErrorKind)) {
    let (kind, offset, nor_kind) = expect;
    let mut flash = uniform(1);
    flash.write(0x2000, &[0x00; 16]).unwrap();
    flash.flip_bit(0x3001, 2);
    let before = flash.contents(0..64 * KIB);

    let err = send(&mut flash, req).unwrap_err();
    let op = match req {
        Req::Read(..) => Op::Read,
        Req::Program(..) => Op::Program,
        Req::Erase(..) => Op::Erase,
    };
    let violation = Violation { op, kind, offset };
    assert_eq!(err, SimError::Violation(violation), "{req:?}");
    assert_eq!(err.kind(), nor_kind, "{req:?}");
    assert_eq!(flash.violations(), [violation], "{req:?}");
    assert_eq!(flash.contents(0..64 * KIB), before, "{req:?} changed the flash");
    assert!(flash.is_powered());
}

#[test]
fn each_strictness_rule_is_caught_with_its_offset() {
    use NorFlashErrorKind as N;
    use ViolationKind as V;
    check_violation(Req::Program(0x1002, 4), (V::Misaligned, 0x1002, N::NotAligned));
    // The offset named is where the partial write unit starts.
    check_violation(Req::Program(0x1000, 6), (V::Misaligned, 0x1004, N::NotAligned));
    check_violation(Req::Program(0xfffc, 8), (V::OutOfBounds, 0xfffc, N::OutOfBounds));
    check_violation(Req::Read(0xfff0, 17), (V::OutOfBounds, 0xfff0, N::OutOfBounds));
    check_violation(Req::Erase(0x1000, 0x1800), (V::Misaligned, 0x1800, N::NotAligned));
    check_violation(Req::Erase(0x0800, 0x1000), (V::Misaligned, 0x0800, N::NotAligned));
    check_violation(Req::Erase(0x2000, 0x1000), (V::OutOfBounds, 0x2000, N::OutOfBounds));
    check_violation(Req::Erase(0x0000, 0x11000), (V::OutOfBounds, 0x11000, N::OutOfBounds));
    // The first programmed unit is named, not the start of the request.
    check_violation(Req::Program(0x1ffc, 12), (V::Reprogram, 0x2000, N::Other));
    check_violation(Req::Program(0x200c, 4), (V::Reprogram, 0x200c, N::Other));
    // Byte 0x3001 reads 0xfb; programming it to 0xff would need bit 2 raised again.
    let mut flash = uniform(1);
    flash.flip_bit(0x3001, 2);
    assert_eq!(
        flash.write(0x3000, &[0xff; 4]),
        Err(SimError::Violation(Violation {
            op: Op::Program,
            kind: ViolationKind::BitTowardErased,
            offset: 0x3001
        }))
    );
    flash.write(0x3000, &[0x00; 4]).unwrap();
    assert_eq!(flash.contents(0x3000..0x3004), [0; 4]);
}

#[test]
fn valid_requests_at_the_edges_are_accepted() {
    let mut flash = uniform(1);
    flash.write(0xfffc, &[1, 2, 3, 4]).unwrap();
    flash.write(0x1000, &[]).unwrap();
    flash.erase(0x1000, 0x1000).unwrap();
    flash.erase(0xf000, 0x10000).unwrap();
    let mut buf = [0; 0x10000];
    flash.read(0, &mut buf).unwrap();
    flash.read(0x10000, &mut []).unwrap();
    assert_eq!(flash.violations(), []);
}

#[test]
fn program_after_erase_is_legal_again() {
    let mut flash = uniform(1);
    flash.write(0x2000, &[0x12; 8]).unwrap();
    assert!(flash.needs_erase(0x2000) && flash.needs_erase(0x2007) && !flash.needs_erase(0x2008));
    flash.erase(0x2000, 0x3000).unwrap();
    assert!(!flash.needs_erase(0x2000));
    assert_eq!(flash.contents(0x2000..0x2008), [0xff; 8]);
    flash.write(0x2000, &[0x34; 8]).unwrap();
    assert_eq!(flash.contents(0x2000..0x2008), [0x34; 8]);
    assert_eq!(flash.violations(), []);
}

#[test]
fn a_stuck_bit_keeps_its_value_through_programs_and_erases_and_is_no_violation() {
    let mut flash = uniform(1);
    flash.write(0x2000, &[0x0f; 4]).unwrap();
    // Stuck at 1 on a programmed 0: it reads 1 at once.
    flash.stick_bit(0x2000, 4, true);
    assert_eq!(flash.contents(0x2000..0x2004), [0x1f, 0x0f, 0x0f, 0x0f]);
    flash.erase(0x2000, 0x3000).unwrap();
    // Stuck at 0 in an erased cell: a program that wants it 1 lands elsewhere and is legal.
    flash.stick_bit(0x2001, 0, false);
    assert_eq!(flash.contents(0x2000..0x2002), [0xff, 0xfe]);
    flash.write(0x2000, &[0xef, 0xff, 0xff, 0xff]).unwrap();
    assert_eq!(flash.contents(0x2000..0x2004), [0xff, 0xfe, 0xff, 0xff], "bit 4 of 0x2000 stays 1");
    assert_eq!(flash.violations(), []);
    // A snapshot carries the stuck bits; restoring one from before drops them.
    let stuck = flash.snapshot();
    flash.erase(0x2000, 0x3000).unwrap();
    assert_eq!(flash.contents(0x2000..0x2002), [0xff, 0xfe]);
    flash.restore(&stuck);
    assert_eq!(flash.contents(0x2000..0x2002), [0xff, 0xfe]);
}

#[test]
fn erased_value_zero_programs_only_set_bits() {
    // Small sectors inside one page exercise the partial-page erase path.
    let geometry = Geometry::uniform(8 * KIB, 256).erased_value(0x00);
    let mut flash: SimFlash<1, 256> = SimFlash::new(&geometry, Rng::new(1));
    assert_eq!(flash.erased_value(), 0x00);
    assert_eq!(flash.contents(0..8 * KIB), vec![0x00; 8 * KIB as usize]);
    flash.write(0x100, &[0x5a, 0xff]).unwrap();
    assert_eq!(flash.contents(0x100..0x103), [0x5a, 0xff, 0x00]);
    assert_eq!(
        flash.write(0x101, &[0x00]),
        Err(SimError::Violation(Violation {
            op: Op::Program,
            kind: ViolationKind::Reprogram,
            offset: 0x101
        }))
    );
    // A flipped bit in an erased cell reads 1; only an erase can bring it back to 0.
    flash.flip_bit(0x200, 7);
    assert_eq!(
        flash.write(0x200, &[0x01]),
        Err(SimError::Violation(Violation {
            op: Op::Program,
            kind: ViolationKind::BitTowardErased,
            offset: 0x200
        }))
    );
    flash.write(0x200, &[0x81]).unwrap();
    flash.erase(0x100, 0x200).unwrap();
    assert_eq!(flash.contents(0x100..0x102), [0x00, 0x00]);
    assert_eq!(flash.contents(0x200..0x201), [0x81], "the next sector is untouched");
    assert!(!flash.needs_erase(0x100) && flash.needs_erase(0x200));
    assert_eq!(flash.violations().len(), 2);
}

#[test]
fn non_uniform_sector_map_erases_whole_sectors_only() {
    let mut flash = stm32_like();
    assert_eq!(flash.sector_containing(0x5000), 0x4000..0x8000);
    assert_eq!(flash.sector_containing(0x10000), 0x10000..0x20000);
    assert_eq!(flash.sector_containing(0x3ffff), 0x30000..0x40000);
    flash.load(0, &vec![0x00; 256 * KIB as usize]);

    flash.erase(0x4000, 0x8000).unwrap();
    // 64 KiB erase units would fit ERASE but not this map: 0x18000 is inside a 64 KiB sector.
    assert_eq!(
        flash.erase(0x10000, 0x18000),
        Err(SimError::Violation(Violation {
            op: Op::Erase,
            kind: ViolationKind::Misaligned,
            offset: 0x18000
        }))
    );
    assert_eq!(
        flash.erase(0x2000, 0x4000).unwrap_err(),
        SimError::Violation(Violation { op: Op::Erase, kind: ViolationKind::Misaligned, offset: 0x2000 })
    );
    flash.erase(0xc000, 0x20000).unwrap();

    let bytes = flash.contents(0..256 * KIB);
    let erased = |r: std::ops::Range<usize>| bytes[r].iter().all(|&b| b == 0xff);
    let zero = |r: std::ops::Range<usize>| bytes[r].iter().all(|&b| b == 0x00);
    assert!(zero(0..0x4000) && erased(0x4000..0x8000) && zero(0x8000..0xc000));
    assert!(erased(0xc000..0x20000) && zero(0x20000..0x40000));
}

#[test]
fn counters_count_every_call_made_with_power() {
    let mut flash = uniform(1);
    let mut buf = [0; 16];
    flash.read(0, &mut buf).unwrap();
    flash.read(0x100, &mut buf[..4]).unwrap();
    flash.write(0, &[0; 8]).unwrap();
    flash.write(0, &[0; 4]).unwrap_err(); // rejected, still counted
    flash.erase(0, 0x1000).unwrap();
    let _ = flash.read(0x20000, &mut buf); // out of bounds, still counted
    let expect = Counters { reads: 3, programs: 2, erases: 1, bytes_read: 36, bytes_programmed: 12 };
    assert_eq!(flash.counters(), expect);
    assert_eq!(flash.mutating_ops(), 3);

    flash.power_cut();
    flash.read(0, &mut buf).unwrap_err();
    flash.write(0, &[0; 4]).unwrap_err();
    flash.erase(0, 0x1000).unwrap_err();
    assert_eq!(flash.counters(), expect, "calls without power never reach the device");

    // Set-up and inspection go around the device.
    flash.power_on();
    flash.load(0x100, &[1, 2, 3]);
    flash.flip_bit(0x100, 0);
    let _ = flash.contents(0..0x1000);
    assert_eq!(flash.counters(), expect);
}

/// Programs 64 bytes at 0x1000 with `cut` armed for it, on a flash seeded with `seed`.
fn cut_program(seed: u64, when: CutWhen) -> (Flash, Result<(), SimError>) {
    let mut flash = uniform(seed);
    flash.write(0x0ffc, &[0x00; 4]).unwrap();
    let at_op = flash.mutating_ops();
    flash.power_cut_at(PowerCut { at_op, when });
    let result = flash.write(0x1000, &pattern(64, 0));
    (flash, result)
}

#[test]
fn program_cut_before_changes_nothing() {
    let (flash, result) = cut_program(1, CutWhen::Before);
    let cut = SimError::PowerCut { op: Op::Program, offset: 0x1000, op_index: 1, when: CutWhen::Before };
    assert_eq!(result, Err(cut));
    assert_eq!(result.unwrap_err().kind(), NorFlashErrorKind::Other);
    assert_eq!(flash.contents(0x1000..0x1040), [0xff; 64]);
    assert!(!flash.needs_erase(0x1000));
    assert!(!flash.is_powered() && flash.armed_power_cut().is_none());
}

#[test]
fn program_cut_after_lands_but_reports_the_cut() {
    let (flash, result) = cut_program(1, CutWhen::After);
    let cut = SimError::PowerCut { op: Op::Program, offset: 0x1000, op_index: 1, when: CutWhen::After };
    assert_eq!(result, Err(cut));
    assert_eq!(flash.contents(0x1000..0x1040), pattern(64, 0));
    assert!(flash.needs_erase(0x1000) && flash.needs_erase(0x103c));
    assert!(!flash.is_powered());
}

#[test]
fn program_cut_during_lands_a_prefix_and_tears_one_unit() {
    let new = pattern(64, 0);
    for seed in 0..20 {
        let (flash, result) = cut_program(seed, CutWhen::During);
        assert!(matches!(result, Err(SimError::PowerCut { when: CutWhen::During, .. })));
        let got = flash.contents(0x1000..0x1040);
        // The needs-erase bits say which unit was in flight: the last one marked.
        let marked = (0..16).take_while(|u| flash.needs_erase(0x1000 + u * 4)).count();
        assert!((1..=16).contains(&marked), "seed {seed}: the unit in flight is marked");
        assert!((marked as u32..16).all(|u| !flash.needs_erase(0x1000 + u * 4)), "seed {seed}");
        let torn = (marked - 1) * 4;
        assert_eq!(got[..torn], new[..torn], "seed {seed}: the prefix landed");
        for i in torn..torn + 4 {
            assert_eq!((got[i] ^ 0xff) & (got[i] ^ new[i]), 0, "seed {seed}: byte {i} is old or new per bit");
        }
        assert!(got[torn + 4..].iter().all(|&b| b == 0xff), "seed {seed}: the rest is untouched");
        assert_eq!(flash.contents(0x0ffc..0x1000), [0; 4], "seed {seed}: neighbours untouched");
    }
}

#[test]
fn torn_program_is_reproducible_by_seed() {
    let run = |seed| cut_program(seed, CutWhen::During).0.contents(0x1000..0x1040);
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn torn_units_need_an_erase_and_recovery_is_clean() {
    let (mut flash, _) = cut_program(3, CutWhen::During);
    flash.power_on();
    let marked = (0..16).take_while(|u| flash.needs_erase(0x1000 + u * 4)).count() as u32;
    let torn = 0x1000 + (marked - 1) * 4;
    let reprogram = Violation { op: Op::Program, kind: ViolationKind::Reprogram, offset: torn };
    assert_eq!(flash.write(torn, &[0; 4]), Err(SimError::Violation(reprogram)));
    flash.clear_violations();

    flash.erase(0x1000, 0x2000).unwrap();
    flash.write(0x1000, &pattern(64, 0)).unwrap();
    assert_eq!(flash.contents(0x1000..0x1040), pattern(64, 0));
    assert_eq!(flash.violations(), []);
}

#[test]
fn torn_program_of_wide_units_mixes_bits_across_the_whole_unit() {
    // 256-byte units take several random words each.
    let mut flash: SimFlash<256, 4096> = SimFlash::new(&Geometry::new(16 * KIB), Rng::new(5));
    flash.power_cut_at(PowerCut { at_op: 0, when: CutWhen::During });
    flash.write(0, &[0x00; 256]).unwrap_err();
    let got = flash.contents(0..256);
    let zeros: u32 = got.iter().map(|b| b.count_zeros()).sum();
    assert!((700..1350).contains(&zeros), "about half of 2048 bits cleared, got {zeros}");
}

/// Erases 0x1000..0x4000 (three sectors holding 0x0f) with `cut` armed for it.
fn cut_erase(seed: u64, when: CutWhen) -> (Flash, Result<(), SimError>) {
    let mut flash = uniform(seed);
    flash.load(0, &vec![0x0f; 0x5000]);
    flash.power_cut_at(PowerCut { at_op: 0, when });
    let result = flash.erase(0x1000, 0x4000);
    (flash, result)
}

#[test]
fn erase_cut_before_and_after() {
    let (flash, result) = cut_erase(1, CutWhen::Before);
    assert_eq!(
        result,
        Err(SimError::PowerCut { op: Op::Erase, offset: 0x1000, op_index: 0, when: CutWhen::Before })
    );
    assert_eq!(flash.contents(0..0x5000), vec![0x0f; 0x5000]);
    assert!(flash.needs_erase(0x1000));

    let (flash, result) = cut_erase(1, CutWhen::After);
    assert!(matches!(result, Err(SimError::PowerCut { when: CutWhen::After, .. })));
    let bytes = flash.contents(0..0x5000);
    assert!(bytes[..0x1000].iter().chain(&bytes[0x4000..]).all(|&b| b == 0x0f));
    assert!(bytes[0x1000..0x4000].iter().all(|&b| b == 0xff));
    assert!(!flash.needs_erase(0x1000) && !flash.needs_erase(0x3ffc) && flash.needs_erase(0x4000));
}

#[test]
fn erase_cut_during_erases_leading_sectors_and_leaves_residue_in_the_next() {
    let mut residue_sectors = [0; 3];
    for seed in 0..30 {
        let (flash, result) = cut_erase(seed, CutWhen::During);
        assert!(matches!(result, Err(SimError::PowerCut { when: CutWhen::During, .. })));
        let bytes = flash.contents(0..0x5000);
        let sector = |i: usize| &bytes[0x1000 * i..0x1000 * (i + 1)];
        let done = (1..4).take_while(|&i| sector(i).iter().all(|&b| b == 0xff)).count();
        let residue = 1 + done;
        assert!(residue < 4, "seed {seed}: one sector is left with residue");
        residue_sectors[done] += 1;
        let got = sector(residue);
        assert!(got.iter().all(|&b| b & 0x0f == 0x0f), "seed {seed}: erased bits stay erased");
        assert!(got.iter().any(|&b| b != 0x0f) && got.iter().any(|&b| b != 0xff), "seed {seed}: residue");
        assert!((residue + 1..4).all(|i| sector(i).iter().all(|&b| b == 0x0f)), "seed {seed}: later kept");
        assert!(sector(0).iter().chain(sector(4)).all(|&b| b == 0x0f), "seed {seed}: outside kept");
        for i in 1..4 {
            let start = 0x1000 * i as u32;
            let dirty = i >= residue;
            assert_eq!(flash.needs_erase(start), dirty, "seed {seed}: sector {i}");
            assert_eq!(flash.needs_erase(start + 0xffc), dirty, "seed {seed}: sector {i}");
        }
    }
    assert!(residue_sectors.iter().all(|&n| n > 0), "every sector can be the one in flight");
}

#[test]
fn interrupted_erase_residue_must_be_erased_before_programming() {
    let (mut flash, _) = cut_erase(2, CutWhen::During);
    flash.power_on();
    let sector = (1..4).find(|&i| flash.contents(0x1000 * i..0x1000 * i + 0x1000) != [0xff; 0x1000]).unwrap();
    let start = 0x1000 * sector;
    // Even cells that happen to read as erased are unreliable after an interrupted erase.
    let kind = ViolationKind::Reprogram;
    assert_eq!(
        flash.write(start, &[0x0f; 4]),
        Err(SimError::Violation(Violation { op: Op::Program, kind, offset: start }))
    );
    flash.erase(start, start + 0x1000).unwrap();
    flash.write(start, &[0x0f; 4]).unwrap();
    assert_eq!(flash.violations().len(), 1);
}

#[test]
fn power_stays_off_until_power_on() {
    let (mut flash, _) = cut_program(1, CutWhen::After);
    let counters = flash.counters();
    let mut buf = [0; 4];
    assert_eq!(flash.read(0x10, &mut buf), Err(SimError::PowerOff { op: Op::Read, offset: 0x10 }));
    assert_eq!(flash.write(0x20, &[0; 4]), Err(SimError::PowerOff { op: Op::Program, offset: 0x20 }));
    assert_eq!(flash.erase(0, 0x1000), Err(SimError::PowerOff { op: Op::Erase, offset: 0 }));
    assert_eq!(flash.counters(), counters);
    assert_eq!(flash.contents(0x20..0x24), [0xff; 4]);

    flash.power_on();
    flash.read(0x1000, &mut buf).unwrap();
    assert_eq!(buf, pattern(4, 0)[..]);
    flash.write(0x20, &[0; 4]).unwrap();
}

#[test]
fn a_second_cut_can_strike_the_recovery() {
    let (mut flash, _) = cut_program(1, CutWhen::During);
    flash.power_on();
    let next = flash.mutating_ops();
    flash.power_cut_at(PowerCut { at_op: next + 1, when: CutWhen::Before });
    flash.erase(0x1000, 0x2000).unwrap();
    let err = flash.write(0x1000, &[0; 4]).unwrap_err();
    assert_eq!(
        err,
        SimError::PowerCut { op: Op::Program, offset: 0x1000, op_index: next + 1, when: CutWhen::Before }
    );
    assert_eq!(flash.contents(0x1000..0x1004), [0xff; 4]);
}

#[test]
fn a_cut_armed_for_a_violation_reports_the_violation_and_cuts() {
    let mut flash = uniform(1);
    flash.power_cut_at(PowerCut { at_op: 0, when: CutWhen::After });
    let err = flash.write(2, &[0; 4]).unwrap_err();
    assert_eq!(
        err,
        SimError::Violation(Violation { op: Op::Program, kind: ViolationKind::Misaligned, offset: 2 })
    );
    assert!(!flash.is_powered());
    assert_eq!(flash.contents(0..8), [0xff; 8]);
}

#[test]
fn snapshot_restore_returns_bytes_tracking_counters_and_faults() {
    let mut flash = uniform(9);
    flash.write(0x1000, &pattern(32, 1)).unwrap();
    let snap = flash.snapshot();
    let (bytes, counters) = (flash.contents(0..64 * KIB), flash.counters());

    flash.erase(0x1000, 0x2000).unwrap();
    flash.write(0x2000, &pattern(32, 2)).unwrap();
    flash.write(0x2000, &[0; 4]).unwrap_err();
    flash.fail_programs_in(0x8000..0x9000);
    flash.power_cut_at(PowerCut { at_op: flash.mutating_ops(), when: CutWhen::During });
    flash.write(0x3000, &pattern(64, 3)).unwrap_err();

    flash.restore(&snap);
    assert_eq!(flash.contents(0..64 * KIB), bytes);
    assert_eq!(flash.counters(), counters, "counters come back, so op indices line up");
    assert!(flash.needs_erase(0x1000) && !flash.needs_erase(0x2000) && !flash.needs_erase(0x3000));
    assert_eq!(flash.violations(), []);
    assert!(flash.is_powered());
    flash.write(0x8000, &[0; 4]).unwrap();

    // The fault RNG comes back too: the same cut tears the same way.
    let torn = |flash: &mut Flash| {
        flash.power_cut_at(PowerCut { at_op: flash.mutating_ops(), when: CutWhen::During });
        flash.write(0x3000, &pattern(64, 3)).unwrap_err();
        flash.contents(0x3000..0x3040)
    };
    flash.restore(&snap);
    let first = torn(&mut flash);
    flash.restore(&snap);
    assert_eq!(torn(&mut flash), first);
}

#[test]
fn snapshot_restores_into_another_flash_on_another_thread() {
    let mut flash = uniform(1);
    flash.write(0x4000, &pattern(4096, 4)).unwrap();
    let snap = flash.snapshot();
    let expect = flash.contents(0..64 * KIB);
    let got = std::thread::spawn(move || {
        let mut other = uniform(2);
        other.restore(&snap);
        other.contents(0..64 * KIB)
    })
    .join()
    .unwrap();
    assert_eq!(got, expect);
}

#[test]
fn failing_range_rejects_programs_and_allows_erases() {
    let mut flash = uniform(1);
    flash.fail_programs_in(0x2010..0x2020);
    assert_eq!(flash.write(0x2000, &[0; 0x20]), Err(SimError::ProgramFailed { offset: 0x2000 }));
    assert_eq!(flash.write(0x201c, &[0; 4]).unwrap_err().kind(), NorFlashErrorKind::Other);
    assert_eq!(flash.contents(0x2000..0x2020), [0xff; 0x20]);
    assert!(!flash.needs_erase(0x2010));
    flash.write(0x2000, &[0; 0x10]).unwrap();
    flash.write(0x2020, &[0; 4]).unwrap();
    flash.erase(0x2000, 0x3000).unwrap();
    assert_eq!(flash.violations(), [], "a failing device is not a caller bug");

    flash.clear_failing_programs();
    flash.write(0x2010, &[0; 4]).unwrap();
}

#[test]
fn bit_flips_change_data_but_not_tracking() {
    let mut flash = uniform(1);
    flash.write(0, &pattern(4096, 5)).unwrap();
    flash.flip_bit(3, 0);
    assert_eq!(flash.contents(3..4), [pattern(4, 5)[3] ^ 1]);

    let flipped = |seed| {
        let mut f = uniform(1);
        f.write(0, &pattern(4096, 5)).unwrap();
        f.flip_random_bits(0x100..0x300, 40, &mut Rng::new(seed));
        f
    };
    let (a, b, c) = (flipped(1), flipped(1), flipped(2));
    let clean = pattern(4096, 5);
    assert_eq!(bits_differing(&a.contents(0..4096), &clean), 40, "40 distinct bits");
    assert_eq!(a.contents(0..0x100), clean[..0x100]);
    assert_eq!(a.contents(0x300..0x1000), clean[0x300..]);
    assert_eq!(a.contents(0..4096), b.contents(0..4096));
    assert_ne!(a.contents(0..4096), c.contents(0..4096));
    assert!(a.needs_erase(0x100) && !a.needs_erase(0x1000));

    // Every bit of a small region.
    let mut all = uniform(1);
    all.flip_random_bits(0x10..0x12, 16, &mut Rng::new(3));
    assert_eq!(all.contents(0x10..0x12), [0, 0]);
}

#[test]
fn load_marks_non_erased_units_as_programmed() {
    let mut flash = uniform(1);
    flash.load(0x1002, &[0x11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x22]);
    assert!(flash.needs_erase(0x1000) && !flash.needs_erase(0x1004) && flash.needs_erase(0x1008));
    assert_eq!(
        flash.contents(0x1000..0x100c),
        [0xff, 0xff, 0x11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x22, 0xff, 0xff]
    );
    flash.write(0x1004, &[0; 4]).unwrap();
    assert!(flash.write(0x1008, &[0; 4]).is_err());
    flash.load(0x1008, &[0xff; 4]);
    flash.write(0x1008, &[0; 4]).unwrap();
    assert_eq!(flash.violations().len(), 1);
}

#[test]
fn reads_return_stored_bytes_across_pages() {
    let mut flash = uniform(1);
    let data = pattern(10_000, 6);
    flash.write(0x0ff0, &data[..9_996]).unwrap();
    let mut buf = vec![0; 9_996];
    flash.read(0x0ff0, &mut buf).unwrap();
    assert_eq!(buf, data[..9_996]);
}

#[test]
fn error_texts_name_the_operation_offset_and_remedy() {
    let texts = [
        (
            SimError::Violation(Violation {
                op: Op::Program,
                kind: ViolationKind::Reprogram,
                offset: 0x2000,
            }),
            "strict flash violation: program at 0x2000 hits a write unit that was programmed, torn or \
             half-erased since its last erase",
        ),
        (
            SimError::Violation(Violation {
                op: Op::Erase,
                kind: ViolationKind::Misaligned,
                offset: 0x18000,
            }),
            "strict flash violation: erase misaligned at 0x18000: not a sector boundary",
        ),
        (
            SimError::Violation(Violation { op: Op::Program, kind: ViolationKind::Misaligned, offset: 0x2 }),
            "strict flash violation: program misaligned at 0x2: not a write-unit boundary",
        ),
        (
            SimError::Violation(Violation { op: Op::Read, kind: ViolationKind::OutOfBounds, offset: 0xfff0 }),
            "strict flash violation: read at 0xfff0 is outside the flash",
        ),
        (
            SimError::Violation(Violation {
                op: Op::Program,
                kind: ViolationKind::BitTowardErased,
                offset: 0x5,
            }),
            "strict flash violation: program at 0x5 would move a bit back toward the erased value, which \
             only an erase can do",
        ),
        (
            SimError::PowerCut { op: Op::Erase, offset: 0x1000, op_index: 17, when: CutWhen::During },
            "power cut during erase at 0x1000 (mutating op 17)",
        ),
        (
            SimError::PowerOff { op: Op::Read, offset: 0x10 },
            "read at 0x10 refused: the flash has no power since a cut; power_on() restores it",
        ),
        (
            SimError::ProgramFailed { offset: 0x40 },
            "program at 0x40 failed in a failing range; the flash is unchanged",
        ),
    ];
    for (err, text) in texts {
        assert_eq!(err.to_string(), text);
    }
}

#[test]
fn debug_summarises_without_dumping_the_flash() {
    let mut flash = stm32_like();
    flash.write(0, &[0; 4]).unwrap();
    let text = format!("{flash:?}");
    assert!(text.len() < 400, "{text}");
    assert!(text.contains("size_bytes: 0x40000") && text.contains("sectors: 7"), "{text}");
    assert!(format!("{:?}", flash.snapshot()).len() < 200);
}

#[test]
fn sim_flash_and_snapshot_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Flash>();
    send_sync::<ota_sim::flash::Snapshot>();
}

#[derive(Clone, Debug)]
enum Action {
    Program { unit: u32, data: Vec<u8> },
    Erase { sector: u32 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0u32..4096, prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(unit, data)| Action::Program { unit, data }),
        1 => (0u32..4).prop_map(|sector| Action::Erase { sector }),
    ]
}

proptest! {
    // A program (accepted or not) only moves bits away from the erased value; only an erase moves
    // them back. Unaligned lengths, reprograms and out-of-range requests are all in the mix.
    #[test]
    fn a_program_only_moves_bits_away_from_the_erased_value(
        erased in prop::sample::select(vec![0xffu8, 0x00]),
        actions in prop::collection::vec(action(), 1..40),
    ) {
        let geometry = Geometry::uniform(16 * KIB, 4 * KIB).erased_value(erased);
        let mut flash: Flash = SimFlash::new(&geometry, Rng::new(1));
        for action in actions {
            let before = flash.contents(0..16 * KIB);
            match action {
                Action::Program { unit, data } => {
                    let _ = flash.write(unit * 4, &data);
                    let after = flash.contents(0..16 * KIB);
                    for (i, (&old, &new)) in before.iter().zip(&after).enumerate() {
                        // A bit at the erased value in `new` was at the erased value in `old`.
                        prop_assert_eq!(!(new ^ erased) & (old ^ erased), 0, "byte 0x{:x}", i);
                    }
                }
                Action::Erase { sector } => {
                    let range = sector * 4 * KIB..(sector + 1) * 4 * KIB;
                    flash.erase(range.start, range.end).unwrap();
                    prop_assert!(flash.contents(range).iter().all(|&b| b == erased));
                }
            }
        }
    }

    // A torn program leaves every bit at its old or its new value, and nothing outside the write
    // changes.
    #[test]
    fn a_torn_program_leaves_every_bit_old_or_new(
        seed in any::<u64>(),
        unit in 0u32..1000,
        data in prop::collection::vec(any::<u8>(), 1..64).prop_map(|mut d| { d.truncate(d.len() / 4 * 4); d }),
        neighbours in prop::collection::vec(any::<u8>(), 16 * 1024),
    ) {
        prop_assume!(!data.is_empty());
        let mut flash = SimFlash::<4, 4096>::new(&Geometry::new(16 * KIB), Rng::new(seed));
        let (start, end) = (unit as usize * 4, unit as usize * 4 + data.len());
        let mut old = neighbours;
        old[start..end].fill(0xff);
        flash.load(0, &old);
        flash.power_cut_at(PowerCut { at_op: 0, when: CutWhen::During });
        prop_assert!(flash.write(unit * 4, &data).is_err());
        let after = flash.contents(0..16 * KIB);
        prop_assert_eq!(&after[..start], &old[..start]);
        prop_assert_eq!(&after[end..], &old[end..]);
        for i in start..end {
            let (o, n, a) = (old[i], data[i - start], after[i]);
            prop_assert_eq!((a ^ o) & (a ^ n), 0, "byte 0x{:x}: old {:02x} new {:02x} got {:02x}", i, o, n, a);
        }
    }

    // An interrupted erase never un-erases a bit, and leaves everything outside its range alone.
    #[test]
    fn an_interrupted_erase_keeps_erased_bits_erased(
        seed in any::<u64>(),
        erased in prop::sample::select(vec![0xffu8, 0x00]),
        first in 0u32..8,
        count in 0u32..8,
        old in prop::collection::vec(any::<u8>(), 32 * 1024),
    ) {
        let geometry = Geometry::uniform(32 * KIB, 4 * KIB).erased_value(erased);
        let mut flash: Flash = SimFlash::new(&geometry, Rng::new(seed));
        flash.load(0, &old);
        let (from, to) = (first * 4 * KIB, (first + count).min(8) * 4 * KIB);
        flash.power_cut_at(PowerCut { at_op: 0, when: CutWhen::During });
        prop_assert!(flash.erase(from, to).is_err());
        let after = flash.contents(0..32 * KIB);
        prop_assert_eq!(&after[..from as usize], &old[..from as usize]);
        prop_assert_eq!(&after[to as usize..], &old[to as usize..]);
        for i in from as usize..to as usize {
            prop_assert_eq!(!(old[i] ^ erased) & (after[i] ^ erased), 0, "byte 0x{:x}", i);
        }
    }
}

// ---- Digests by page identity and compares that skip matched pages ----

fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// A cached digest once let the boot loader verify the revert slot after the power had gone
/// (a cut while writing the trial's state): the boot then went on as `TrialSkipped` where the
/// read it replaces would have failed. Without power a flash knows no digest.
#[test]
fn a_flash_without_power_knows_no_digest() {
    let mut flash = uniform(1);
    flash.load(0, &pattern(8 * KIB as usize, 3));
    let digest = ota_core::flash::sha256_region_known(&mut flash, 0, 8 * KIB, &mut [0; 512]).unwrap();
    assert_eq!(flash.known_sha256(0, 8 * KIB), Some(digest), "remembered while the pages stay");
    flash.power_cut();
    assert_eq!(flash.known_sha256(0, 8 * KIB), None);
    assert!(ota_core::flash::sha256_region_known(&mut flash, 0, 8 * KIB, &mut [0; 512]).is_err());
}

#[derive(Clone, Debug)]
enum Change {
    Load { offset: u32, len: u32, salt: u8 },
    Erase { sector: u32 },
    Flip { offset: u32, bit: u8 },
    Snapshot,
    Restore { which: usize },
    Digest { region: usize },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0..64 * KIB, 1..9000u32, any::<u8>()).prop_map(|(offset, len, salt)| Change::Load {
            offset: offset.min(64 * KIB - 1),
            len: len.min(64 * KIB - offset.min(64 * KIB - 1)),
            salt
        }),
        (0..16u32).prop_map(|sector| Change::Erase { sector }),
        (0..64 * KIB, 0..8u8).prop_map(|(offset, bit)| Change::Flip { offset, bit }),
        Just(Change::Snapshot),
        any::<usize>().prop_map(|which| Change::Restore { which }),
        any::<usize>().prop_map(|region| Change::Digest { region }),
    ]
}

/// Regions asked for again and again, so that the cache answers: page-aligned or not.
const REGIONS: [(u32, u32); 4] =
    [(0, 16 * KIB), (8 * KIB, 20 * KIB + 100), (4 * KIB + 3, 9), (60 * KIB, 4 * KIB)];

proptest! {
    // Invariant: whatever the history of loads, erases, bit flips, snapshots and restores, the
    // digest a flash gives from its cache equals the SHA-256 of the region's bytes, and a compare
    // that skips pages matched before says what a plain compare says.
    #[test]
    fn a_cached_digest_and_a_skipping_compare_equal_the_plain_ones(
        changes in prop::collection::vec(change(), 1..60),
    ) {
        let mut flash = uniform(1);
        let mut snapshots = vec![flash.snapshot()];
        let expected: std::sync::Arc<[u8]> = pattern(16 * KIB as usize, 7).into();
        let mut matched = Matched::new(0, expected.clone());
        for change in changes {
            match change {
                Change::Load { offset, len, salt } => {
                    // Half the loads write the expected bytes, so that the compare can hold.
                    let bytes = if salt % 2 == 0 { expected[..].to_vec() } else { pattern(len as usize, salt) };
                    let offset = if salt % 2 == 0 { 0 } else { offset };
                    flash.load(offset, &bytes);
                }
                Change::Erase { sector } => flash.erase(sector * 4 * KIB, (sector + 1) * 4 * KIB).unwrap(),
                Change::Flip { offset, bit } => flash.flip_bit(offset, bit),
                Change::Snapshot => snapshots.push(flash.snapshot()),
                Change::Restore { which } => flash.restore(&snapshots[which % snapshots.len()]),
                Change::Digest { region } => {
                    let (offset, len) = REGIONS[region % REGIONS.len()];
                    let got = ota_core::flash::sha256_region_known(&mut flash, offset, len, &mut [0; 1000]).unwrap();
                    prop_assert_eq!(got, sha256_of(&flash.contents(offset..offset + len)));
                }
            }
            let plain = flash.contents(0..16 * KIB)[..] == expected[..];
            prop_assert_eq!(flash.holds(&mut matched), plain);
        }
    }
}
