//! The first-boot filesystem merge, over an in-memory filesystem that counts its calls and can
//! lose power at any one of them.

use std::collections::BTreeMap;

use ota_core::fs::{FileSystem, NAME_MAX_BYTES};
use ota_core::merge::{
    FileName, MERGE_FILES_MAX, MergeError, MergeReport, NewOp, OldOp, TEMP_NAME, merge, merge_filtered,
};
use proptest::prelude::*;

type Files = BTreeMap<String, Vec<u8>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemFsError {
    NotFound,
    NameTooLong,
    WriteBeyondEnd,
    PowerCut,
}

/// What a power cut during a call leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CutEffect {
    /// The call had no effect.
    Lost,
    /// A write landed its first half; other calls are atomic and had no effect.
    Torn,
    /// The call took effect, but the caller never learnt it.
    Landed,
}

const CUT_EFFECTS: [CutEffect; 3] = [CutEffect::Lost, CutEffect::Torn, CutEffect::Landed];

/// Calls a [`MemFs`] received, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Calls {
    list: u64,
    exists: u64,
    read: u64,
    write: u64,
    remove: u64,
    rename: u64,
}

impl Calls {
    fn total(&self) -> u64 {
        self.list + self.exists + self.read + self.mutating()
    }

    fn mutating(&self) -> u64 {
        self.write + self.remove + self.rename
    }
}

/// A flat filesystem in memory, listed in name order. `cut_power_at(n, effect)` makes the
/// `n`-th call (counting every kind from 0) fail with `effect`, and every later call fail until
/// `power_on()`.
#[derive(Clone, Debug, Default)]
struct MemFs {
    files: Files,
    calls: Calls,
    cut: Option<(u64, CutEffect)>,
    powered_off: bool,
}

impl MemFs {
    fn with(files: &[(&str, &[u8])]) -> MemFs {
        MemFs { files: files.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect(), ..MemFs::default() }
    }

    fn from_files(files: &Files) -> MemFs {
        MemFs { files: files.clone(), ..MemFs::default() }
    }

    fn cut_power_at(&mut self, call: u64, effect: CutEffect) {
        self.cut = Some((call, effect));
    }

    fn power_on(&mut self) {
        self.cut = None;
        self.powered_off = false;
    }

    /// Counts a call; `Some(effect)` when power is cut during it.
    fn enter(&mut self, count: fn(&mut Calls) -> &mut u64) -> Result<Option<CutEffect>, MemFsError> {
        let index = self.calls.total();
        *count(&mut self.calls) += 1;
        if self.powered_off {
            return Err(MemFsError::PowerCut);
        }
        match self.cut {
            Some((at, effect)) if at == index => {
                self.powered_off = true;
                Ok(Some(effect))
            }
            _ => Ok(None),
        }
    }

    fn do_write(&mut self, name: &str, offset: u32, data: &[u8]) -> Result<(), MemFsError> {
        let offset = offset as usize;
        if offset == 0 {
            self.files.insert(name.to_string(), Vec::new());
        }
        let file = self.files.get_mut(name).ok_or(MemFsError::NotFound)?;
        if offset > file.len() {
            return Err(MemFsError::WriteBeyondEnd);
        }
        file.truncate(offset);
        file.extend_from_slice(data);
        Ok(())
    }

    fn do_remove(&mut self, name: &str) -> Result<(), MemFsError> {
        self.files.remove(name).map(drop).ok_or(MemFsError::NotFound)
    }

    fn do_rename(&mut self, from: &str, to: &str) -> Result<(), MemFsError> {
        let data = self.files.remove(from).ok_or(MemFsError::NotFound)?;
        self.files.insert(to.to_string(), data);
        Ok(())
    }
}

impl FileSystem for MemFs {
    type Error = MemFsError;

    fn list(&mut self, index: u32, name: &mut [u8]) -> Result<Option<usize>, MemFsError> {
        if self.enter(|c| &mut c.list)?.is_some() {
            return Err(MemFsError::PowerCut);
        }
        let Some(found) = self.files.keys().nth(index as usize) else { return Ok(None) };
        let out = name.get_mut(..found.len()).ok_or(MemFsError::NameTooLong)?;
        out.copy_from_slice(found.as_bytes());
        Ok(Some(found.len()))
    }

    fn exists(&mut self, name: &str) -> Result<bool, MemFsError> {
        if self.enter(|c| &mut c.exists)?.is_some() {
            return Err(MemFsError::PowerCut);
        }
        Ok(self.files.contains_key(name))
    }

    fn read(&mut self, name: &str, offset: u32, buf: &mut [u8]) -> Result<usize, MemFsError> {
        if self.enter(|c| &mut c.read)?.is_some() {
            return Err(MemFsError::PowerCut);
        }
        let file = self.files.get(name).ok_or(MemFsError::NotFound)?;
        let rest = file.get(offset as usize..).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }

    fn write(&mut self, name: &str, offset: u32, data: &[u8]) -> Result<(), MemFsError> {
        match self.enter(|c| &mut c.write)? {
            None => return self.do_write(name, offset, data),
            Some(CutEffect::Lost) => {}
            Some(CutEffect::Torn) => drop(self.do_write(name, offset, &data[..data.len() / 2])),
            Some(CutEffect::Landed) => drop(self.do_write(name, offset, data)),
        }
        Err(MemFsError::PowerCut)
    }

    fn remove(&mut self, name: &str) -> Result<(), MemFsError> {
        match self.enter(|c| &mut c.remove)? {
            None => return self.do_remove(name),
            Some(CutEffect::Lost | CutEffect::Torn) => {}
            Some(CutEffect::Landed) => drop(self.do_remove(name)),
        }
        Err(MemFsError::PowerCut)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), MemFsError> {
        match self.enter(|c| &mut c.rename)? {
            None => return self.do_rename(from, to),
            Some(CutEffect::Lost | CutEffect::Torn) => {}
            Some(CutEffect::Landed) => drop(self.do_rename(from, to)),
        }
        Err(MemFsError::PowerCut)
    }
}

/// What a merge of `old` into `new` must leave: the new files (without a temporary file), plus
/// the old files it lacks that `should_copy` accepts.
fn expected_merge(old: &Files, new: &Files, should_copy: impl Fn(&str) -> bool) -> Files {
    let mut out: Files =
        new.iter().filter(|(n, _)| *n != TEMP_NAME).map(|(n, d)| (n.clone(), d.clone())).collect();
    for (name, data) in old {
        if name != TEMP_NAME && should_copy(name) && !new.contains_key(name) {
            out.insert(name.clone(), data.clone());
        }
    }
    out
}

fn assert_old_never_written(old: &MemFs, before: &Files) {
    assert_eq!(
        (old.calls.write, old.calls.remove, old.calls.rename),
        (0, 0, 0),
        "the old filesystem was written"
    );
    assert_eq!(old.calls.exists, 0);
    assert_eq!(&old.files, before);
}

fn name(s: &str) -> FileName {
    FileName::new(s).unwrap()
}

#[test]
fn user_config_survives_and_image_files_win() {
    let mut old = MemFs::with(&[
        ("conf0.json", b"{\"old\":true}"),
        ("conf9.json", b"{\"wifi\":{\"sta\":{\"ssid\":\"home\"}}}"),
        ("index.html", b"old page"),
    ]);
    let mut new =
        MemFs::with(&[("app.js", b"load()"), ("conf0.json", b"{\"new\":true}"), ("index.html", b"")]);
    let before = old.files.clone();

    let report = merge(&mut old, &mut new, &mut [0; 128]).unwrap();

    assert_eq!(
        report,
        MergeReport { copied: 1, kept_new: 2, skipped: 0, bytes_copied: 32, removed_leftover_temp: false }
    );
    let want = MemFs::with(&[
        ("app.js", b"load()"),
        ("conf0.json", b"{\"new\":true}"),
        ("conf9.json", b"{\"wifi\":{\"sta\":{\"ssid\":\"home\"}}}"),
        ("index.html", b""),
    ]);
    assert_eq!(new.files, want.files);
    assert_old_never_written(&old, &before);
    // The copy went through the temporary file, in one write and one rename.
    assert_eq!((new.calls.write, new.calls.rename, new.calls.remove), (1, 1, 0));
}

#[test]
fn a_second_merge_changes_nothing() {
    let mut old = MemFs::with(&[("conf9.json", b"user"), ("updater.dat", b"state")]);
    let mut new = MemFs::with(&[("conf0.json", b"image")]);
    let first = merge(&mut old, &mut new, &mut [0; 16]).unwrap();
    let after_first = new.files.clone();

    let second = merge(&mut old, &mut new, &mut [0; 16]).unwrap();

    assert_eq!((first.copied, first.kept_new), (2, 0));
    assert_eq!((second.copied, second.kept_new, second.bytes_copied), (0, 2, 0));
    assert_eq!(new.files, after_first);
}

#[test]
fn leftover_temp_file_is_removed_and_never_copied() {
    let mut old = MemFs::with(&[(TEMP_NAME, b"old junk"), ("conf9.json", b"user")]);
    let mut new = MemFs::with(&[(TEMP_NAME, b"half a cop"), ("conf0.json", b"image")]);

    let report = merge(&mut old, &mut new, &mut [0; 4]).unwrap();

    assert!(report.removed_leftover_temp);
    assert_eq!((report.copied, report.kept_new, report.skipped), (1, 0, 1));
    let want = MemFs::with(&[("conf0.json", b"image"), ("conf9.json", b"user")]);
    assert_eq!(new.files, want.files);
}

#[test]
fn zero_length_files_are_copied_and_kept() {
    let mut old = MemFs::with(&[("empty.old", b""), ("empty.both", b"old")]);
    let mut new = MemFs::with(&[("empty.both", b"")]);

    let report = merge(&mut old, &mut new, &mut [0; 8]).unwrap();

    assert_eq!((report.copied, report.kept_new, report.bytes_copied), (1, 1, 0));
    let want = MemFs::with(&[("empty.both", b""), ("empty.old", b"")]);
    assert_eq!(new.files, want.files);
}

#[test]
fn files_larger_than_the_buffer_are_copied_whole() {
    let big: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    for buf_len in [1, 3, 128, 999, 1000, 4096] {
        let mut old = MemFs::with(&[("big.bin", &big), ("seven", b"1234567")]);
        let mut new = MemFs::default();

        let report = merge(&mut old, &mut new, &mut vec![0; buf_len]).unwrap();

        assert_eq!(report.bytes_copied, 1007, "buffer of {buf_len} bytes");
        assert_eq!(new.files, old.files, "buffer of {buf_len} bytes");
    }
}

#[test]
fn the_filter_decides_which_missing_files_are_copied() {
    let mut old = MemFs::with(&[("boot.log", b"log"), ("conf9.json", b"user"), ("conf0.json", b"old")]);
    let mut new = MemFs::with(&[("conf0.json", b"image")]);
    let mut asked = Vec::new();

    let report = merge_filtered(&mut old, &mut new, &mut [0; 8], |name| {
        asked.push(name.to_string());
        !name.ends_with(".log")
    })
    .unwrap();

    assert_eq!((report.copied, report.kept_new, report.skipped), (1, 1, 1));
    assert_eq!(new.files.keys().collect::<Vec<_>>(), ["conf0.json", "conf9.json"]);
    assert_eq!(asked, ["boot.log", "conf0.json", "conf9.json"]);
}

#[test]
fn too_many_files_is_refused_before_writing() {
    let files: Files = (0..=MERGE_FILES_MAX).map(|i| (format!("f{i:03}"), vec![i as u8])).collect();
    let mut old = MemFs::from_files(&files);
    let mut new = MemFs::with(&[(TEMP_NAME, b"left over")]);

    let err = merge(&mut old, &mut new, &mut [0; 8]).unwrap_err();

    assert_eq!(err, MergeError::TooManyFiles { files_max: MERGE_FILES_MAX });
    assert_eq!(new.calls, Calls::default(), "the new filesystem was touched");
    assert_eq!(old.calls.list, u64::from(MERGE_FILES_MAX) + 1);

    // One file fewer is merged.
    old.files.pop_last();
    let report = merge(&mut old, &mut new, &mut [0; 8]).unwrap();
    assert_eq!(report.copied, MERGE_FILES_MAX);
}

#[test]
fn a_name_too_long_is_refused_before_writing() {
    let long = format!("{}é.json", "a".repeat(NAME_MAX_BYTES - 1));
    let mut old = MemFs::with(&[("conf9.json", b"user"), (&long, b"x")]);
    let mut new = MemFs::default();

    let err = merge(&mut old, &mut new, &mut [0; 8]).unwrap_err();

    // The prefix stops before the two-byte `é` that straddles the limit.
    let prefix = name(&"a".repeat(NAME_MAX_BYTES - 1));
    assert_eq!(err, MergeError::NameTooLong { index: 0, len_bytes: NAME_MAX_BYTES + 6, prefix });
    assert_eq!(new.calls, Calls::default());

    // A name of exactly NAME_MAX_BYTES is merged.
    let longest = "b".repeat(NAME_MAX_BYTES);
    let mut old = MemFs::with(&[(&longest, b"x")]);
    assert_eq!(merge(&mut old, &mut new, &mut [0; 8]).unwrap().copied, 1);
    assert!(new.files.contains_key(&longest));
}

#[test]
fn a_name_longer_than_the_listing_buffer_is_the_old_filesystems_error() {
    let mut old = MemFs::with(&[(&"n".repeat(300), b"x")]);
    let mut new = MemFs::default();

    let err = merge(&mut old, &mut new, &mut [0; 8]).unwrap_err();

    assert_eq!(
        err,
        MergeError::Old { op: OldOp::List, index: 0, file: FileName::EMPTY, error: MemFsError::NameTooLong }
    );
    assert_eq!(new.calls, Calls::default());
}

#[test]
fn invalid_names_are_refused_before_writing() {
    for bad in ["", "dir/file", "nul\0name"] {
        let mut old = MemFs::with(&[(bad, b"x")]);
        let mut new = MemFs::default();
        let err = merge(&mut old, &mut new, &mut [0; 8]).unwrap_err();
        assert_eq!(err, MergeError::NameInvalid { index: 0 }, "name {bad:?}");
        assert_eq!(new.calls, Calls::default());
    }
}

#[test]
fn old_filesystem_errors_name_the_call_and_the_file() {
    let mut old = MemFs::with(&[("conf9.json", b"0123456789")]);
    let mut new = MemFs::default();
    // Calls on old: list 0, list 1 (end), list 0, read at 0, read at 4 (cut).
    old.cut_power_at(4, CutEffect::Lost);

    let err = merge(&mut old, &mut new, &mut [0; 4]).unwrap_err();

    assert_eq!(
        err,
        MergeError::Old {
            op: OldOp::Read { offset: 4 },
            index: 0,
            file: name("conf9.json"),
            error: MemFsError::PowerCut
        }
    );
    // The partial copy is only under the temporary name.
    assert_eq!(new.files.keys().collect::<Vec<_>>(), [TEMP_NAME]);
    old.power_on();
    merge(&mut old, &mut new, &mut [0; 4]).unwrap();
    assert_eq!(new.files, old.files);
}

#[test]
fn error_texts_say_what_failed_and_what_is_unchanged() {
    type E = MergeError<MemFsError, MemFsError>;
    let file = name("conf9.json");
    let texts = [
        E::Old { op: OldOp::List, index: 3, file: FileName::EMPTY, error: MemFsError::PowerCut },
        E::Old { op: OldOp::Read { offset: 128 }, index: 3, file, error: MemFsError::NotFound },
        E::New { op: NewOp::Exists, file, error: MemFsError::PowerCut },
        E::New { op: NewOp::RemoveTemp, file: name(TEMP_NAME), error: MemFsError::PowerCut },
        E::New { op: NewOp::WriteTemp { offset: 256 }, file, error: MemFsError::PowerCut },
        E::New { op: NewOp::RenameTemp, file, error: MemFsError::PowerCut },
        E::TooManyFiles { files_max: MERGE_FILES_MAX },
        E::NameTooLong { index: 7, len_bytes: 70, prefix: name("abc") },
        E::NameInvalid { index: 2 },
        E::FileTooLarge { index: 0, file },
    ]
    .map(|e| e.to_string())
    .join("\n");
    insta::assert_snapshot!(texts, @r"
    filesystem merge failed: listing entry 3 of the old root failed (PowerCut); the old filesystem is untouched; the merge can be run again
    filesystem merge failed: reading conf9.json from the old filesystem at offset 128 failed (NotFound); the old filesystem is untouched; the merge can be run again
    filesystem merge failed: checking for conf9.json on the new filesystem failed (PowerCut); the old filesystem is untouched; the merge can be run again
    filesystem merge failed: removing the leftover .ota-merge.tmp from the new filesystem failed (PowerCut); the old filesystem is untouched; the merge can be run again
    filesystem merge failed: writing the copy of conf9.json to .ota-merge.tmp at offset 256 on the new filesystem failed (PowerCut); the old filesystem is untouched; the merge can be run again
    filesystem merge failed: renaming .ota-merge.tmp to conf9.json on the new filesystem failed (PowerCut); the old filesystem is untouched; the merge can be run again
    filesystem merge failed: the old root holds more than 128 files; the old filesystem is untouched and the new one was not written
    filesystem merge failed: entry 7 of the old root has a 70-byte name (abc…), longer than 64 bytes; the old filesystem is untouched and the new one was not written
    filesystem merge failed: entry 2 of the old root has a name that is empty, not UTF-8, or holds NUL or '/'; the old filesystem is untouched and the new one was not written
    filesystem merge failed: conf9.json in the old filesystem is longer than 4294967295 bytes and was not copied; the old filesystem is untouched
    ");
}

fn file_name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-d]{1,2}",
        1 => Just("conf9.json".to_string()),
        1 => Just(TEMP_NAME.to_string()),
    ]
}

fn files_strategy(len_bytes_max: usize) -> impl Strategy<Value = Files> {
    prop::collection::btree_map(
        file_name_strategy(),
        prop::collection::vec(any::<u8>(), 0..len_bytes_max),
        0..10,
    )
}

/// A filter refusing names that start with `refused`, if any.
fn filter(refused: Option<char>) -> impl Fn(&str) -> bool {
    move |name: &str| refused.is_none_or(|c| !name.starts_with(c))
}

proptest! {
    #[test]
    fn merge_keeps_new_files_and_adds_missing_old_ones(
        old_files in files_strategy(300),
        new_files in files_strategy(300),
        buf_len in 1usize..70,
        refused in prop::option::of(prop::sample::select(vec!['a', 'b', 'c'])),
    ) {
        // Invariant: after a merge the new filesystem holds its own files unchanged (but for a
        // file under the reserved temporary name), plus exactly the old files it lacked that the
        // filter accepts, and no temporary file.
        let mut old = MemFs::from_files(&old_files);
        let mut new = MemFs::from_files(&new_files);

        let report = merge_filtered(&mut old, &mut new, &mut vec![0; buf_len], filter(refused)).unwrap();

        prop_assert_eq!(&new.files, &expected_merge(&old_files, &new_files, filter(refused)));
        let copied: Vec<usize> = old_files
            .iter()
            .filter(|(n, _)| *n != TEMP_NAME && filter(refused)(n) && !new_files.contains_key(*n))
            .map(|(_, d)| d.len())
            .collect();
        prop_assert_eq!(report.copied as usize, copied.len());
        prop_assert_eq!(report.bytes_copied, copied.iter().sum::<usize>() as u64);
        prop_assert_eq!(report.copied + report.kept_new + report.skipped, old_files.len() as u32);
        prop_assert_eq!(report.removed_leftover_temp, new_files.contains_key(TEMP_NAME));
    }

    #[test]
    fn merge_never_writes_the_old_filesystem(
        old_files in files_strategy(100),
        new_files in files_strategy(100),
        buf_len in 1usize..40,
        cut_at in prop::option::of(0u64..200),
        refused in prop::option::of(prop::sample::select(vec!['a', 'b'])),
    ) {
        // Invariant: whatever happens to the new filesystem, the old one only receives list and
        // read calls, and its files stay as they were.
        let mut old = MemFs::from_files(&old_files);
        let mut new = MemFs::from_files(&new_files);
        if let Some(at) = cut_at {
            new.cut_power_at(at, CutEffect::Landed);
        }

        let _ = merge_filtered(&mut old, &mut new, &mut vec![0; buf_len], filter(refused));
        new.power_on();
        merge_filtered(&mut old, &mut new, &mut vec![0; buf_len], filter(refused)).unwrap();

        assert_old_never_written(&old, &old_files);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn interrupted_merge_rerun_gives_the_same_result(
        old_files in files_strategy(60),
        new_files in files_strategy(60),
        buf_len in 4usize..40,
        second_cut in prop::option::of((0u64..100, prop::sample::select(CUT_EFFECTS.to_vec()))),
    ) {
        // Invariant: a merge cut at any call on the new filesystem, with any effect of that call,
        // then run again (and possibly cut again) until it completes, leaves exactly the new
        // filesystem an uninterrupted merge leaves.
        let mut clean = MemFs::from_files(&new_files);
        merge(&mut MemFs::from_files(&old_files), &mut clean, &mut vec![0; buf_len]).unwrap();
        let calls = clean.calls.total();

        for at in 0..calls {
            for effect in CUT_EFFECTS {
                let mut old = MemFs::from_files(&old_files);
                let mut new = MemFs::from_files(&new_files);
                new.cut_power_at(at, effect);
                let err = merge(&mut old, &mut new, &mut vec![0; buf_len]).unwrap_err();
                prop_assert!(
                    matches!(err, MergeError::New { error: MemFsError::PowerCut, .. }),
                    "cut at call {} ({:?}) gave {:?}", at, effect, err
                );
                prop_assert!(
                    new.files.iter().all(|(n, d)| n == TEMP_NAME || clean.files.get(n) == Some(d)),
                    "cut at call {} ({:?}) left a file the clean merge does not have", at, effect
                );

                new.power_on();
                new.calls = Calls::default();
                if let Some((second_at, second_effect)) = second_cut {
                    new.cut_power_at(second_at, second_effect);
                    let _ = merge(&mut old, &mut new, &mut vec![0; buf_len]);
                    new.power_on();
                }
                merge(&mut old, &mut new, &mut vec![0; buf_len]).unwrap();

                prop_assert_eq!(&new.files, &clean.files, "cut at call {} ({:?})", at, effect);
            }
        }
    }
}
