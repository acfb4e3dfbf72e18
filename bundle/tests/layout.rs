//! The byte layout of good bundles, the manifest text, and `read_entries` on what the builder writes.

mod common;

use common::{bytes, central_directory, crc32, sample, sample_entries};
use ota_bundle::{Bundle, Defect, DefectError, PartSpec, ReadError, json_string, read_entries};
use proptest::prelude::*;

#[test]
fn manifest_comes_first_then_one_stored_entry_per_src_sorted() {
    let zip = sample().build();
    let entries = read_entries(&zip).unwrap();
    let expected = sample_entries();
    assert_eq!(entries.len(), expected.len());
    for (entry, (name, data)) in entries.iter().zip(&expected) {
        assert_eq!(entry.name, *name);
        assert_eq!((entry.method, entry.flags), (0, 0), "entry {name}: method 0, flags 0");
        assert_eq!(entry.crc32, crc32(data), "entry {name}: real CRC-32 in the local header");
        assert_eq!(entry.compressed_size_bytes as usize, data.len(), "entry {name}");
        assert_eq!(entry.uncompressed_size_bytes as usize, data.len(), "entry {name}");
        assert_eq!(entry.descriptor, None, "entry {name}: no data descriptor");
        assert!(entry.extra.is_empty(), "entry {name}: no extra field");
        assert_eq!(entry.data(&zip), data.as_slice(), "entry {name}");
    }
}

#[test]
fn local_headers_are_laid_out_as_mos_writes_them() {
    let zip = sample().build();
    for entry in read_entries(&zip).unwrap() {
        let at = entry.header_offset as usize;
        let header = &zip[at..at + 30];
        // Signature, version 20, flags 0, method 0, time 0, date 0.
        assert_eq!(header[..14], [0x50, 0x4b, 3, 4, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0], "entry {}", entry.name);
        assert_eq!(header[28..30], [0, 0], "entry {}: no extra field", entry.name);
        assert_eq!(entry.data_offset as usize, at + 30 + entry.name.len());
    }
}

#[test]
fn central_directory_points_at_each_local_header() {
    let zip = sample().build();
    let local = read_entries(&zip).unwrap();
    let (central, end) = central_directory(&zip);
    assert_eq!(central.len(), local.len());
    for (c, l) in central.iter().zip(&local) {
        assert_eq!(c.name, l.name);
        assert_eq!((c.version_made_by, c.version_needed), (20, 20), "entry {}", c.name);
        assert_eq!((c.flags, c.method), (l.flags, l.method), "entry {}", c.name);
        assert_eq!(c.crc32, l.crc32, "entry {}", c.name);
        assert_eq!(c.compressed_size_bytes, l.compressed_size_bytes, "entry {}", c.name);
        assert_eq!(c.uncompressed_size_bytes, l.uncompressed_size_bytes, "entry {}", c.name);
        assert_eq!(c.header_offset, l.header_offset, "entry {}", c.name);
    }
    let last = local.last().unwrap();
    let entries_end = last.data_offset + last.data_len_bytes;
    assert_eq!(end.directory_offset, entries_end, "the central directory follows the last entry");
    assert_eq!(end.directory_offset + end.directory_bytes, zip.len() as u32 - 22);
    assert_eq!((end.entries_on_disk, end.entries_total, end.comment_bytes), (4, 4, 0));
}

#[test]
fn in_folder_puts_every_entry_under_name_dash_version() {
    let zip = sample().in_folder().build();
    let names: Vec<String> = read_entries(&zip).unwrap().into_iter().map(|entry| entry.name).collect();
    assert_eq!(
        names,
        ["demo-1.0.3/manifest.json", "demo-1.0.3/a.bin", "demo-1.0.3/demo.bin", "demo-1.0.3/fs.img"]
    );
    let central: Vec<String> = central_directory(&zip).0.into_iter().map(|entry| entry.name).collect();
    assert_eq!(central, names);
    // The manifest's src values stay base names.
    assert_eq!(sample().in_folder().manifest_json(), sample().manifest_json());

    let unversioned = Bundle::new("demo", "esp32").in_folder().app(vec![1]).build();
    let names: Vec<String> =
        read_entries(&unversioned).unwrap().into_iter().map(|entry| entry.name).collect();
    assert_eq!(names, ["demo/manifest.json", "demo/demo.bin"]);
}

#[test]
fn manifest_follows_mos_key_order_and_indent() {
    let bundle = sample()
        .description("Demo <firmware> & \"friends\"")
        .build_timestamp("2024-01-01T00:00:00Z")
        .attr("zz_extra", "[1,2]")
        .attr("aa_extra", &json_string("x"));
    insta::assert_snapshot!(bundle.manifest_json(), @r#"
    {
     "name": "demo",
     "platform": "esp32",
     "description": "Demo \u003cfirmware\u003e \u0026 \"friends\"",
     "version": "1.0.3",
     "build_id": "20240101-000000/1.0.3",
     "build_timestamp": "2024-01-01T00:00:00Z",
     "parts": {
      "app": {
       "type": "app",
       "src": "demo.bin",
       "size": 1000,
       "cs_sha1": "a9e610e929b04ee9d10225add49798612db5df04",
       "cs_sha256": "d028495fd3bbf57a2e876cdb15519a8aefcb9d0ec9bd35da28a1be9176c84b54"
      },
      "fs": {
       "type": "fs",
       "src": "fs.img",
       "size": 300,
       "cs_sha1": "2bf50a5c5ca54cd78817ff655dcd617aff826eb5",
       "cs_sha256": "ba9eabc10ab8c15e889eada799935571dacc4ba7c5b5203a61008638dc78d922"
      },
      "nvs": {
       "size": 16,
       "fill": 255
      },
      "zeta": {
       "type": "boot",
       "src": "a.bin",
       "addr": 4096,
       "size": 77,
       "cs_sha1": "367408c5ff60f6b7bcb47d3565f27f34fa16fd15",
       "cs_sha256": "b73bee32b7d713ef8a2963a6d724d4971fe92d06014b0756f6f37ad0aee506cf",
       "update": true
      }
     },
     "aa_extra": "x",
     "zz_extra": [1,2]
    }
    "#);
}

#[test]
fn manifest_checksums_are_lower_case_hex_of_the_data() {
    use sha1::Digest as _;
    let data = bytes(1000, 1);
    let manifest = Bundle::new("demo", "esp32").app(data.clone()).manifest_json();
    let sha1: String = sha1::Sha1::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    let sha256: String = sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    assert!(manifest.contains(&format!("\"cs_sha1\": \"{sha1}\"")), "{manifest}");
    assert!(manifest.contains(&format!("\"cs_sha256\": \"{sha256}\"")), "{manifest}");
}

#[test]
fn manifest_leaves_out_what_mos_leaves_out() {
    // mos marshals with omitempty: an empty platform, an empty part's size, unset fields vanish.
    let bundle = Bundle::new("demo", "").part(PartSpec::new("empty", "empty.bin", vec![]).without_sha256());
    insta::assert_snapshot!(bundle.manifest_json(), @r#"
    {
     "name": "demo",
     "parts": {
      "empty": {
       "src": "empty.bin",
       "cs_sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709"
      }
     }
    }
    "#);
    assert_eq!(
        Bundle::new("demo", "esp32").manifest_json(),
        "{\n \"name\": \"demo\",\n \"platform\": \"esp32\",\n \"parts\": {}\n}"
    );
}

#[test]
fn parts_sharing_a_src_share_one_entry() {
    let data = bytes(10, 9);
    let zip = Bundle::new("demo", "esp32")
        .part(PartSpec::new("one", "same.bin", data.clone()))
        .part(PartSpec::new("two", "same.bin", data.clone()))
        .build();
    let names: Vec<String> = read_entries(&zip).unwrap().into_iter().map(|entry| entry.name).collect();
    assert_eq!(names, ["manifest.json", "same.bin"]);
}

#[test]
fn a_part_of_the_same_name_replaces_the_earlier_one() {
    let bundle = Bundle::new("demo", "esp32").app(vec![1, 2, 3]).app(vec![4, 5]);
    assert_eq!(bundle, Bundle::new("demo", "esp32").app(vec![4, 5]));
}

#[test]
fn builder_misuse_panics_with_a_message() {
    let message = |result: std::thread::Result<Bundle>| match result {
        Ok(_) => String::from("no panic"),
        Err(payload) => payload.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    let clash = std::panic::catch_unwind(|| {
        Bundle::new("demo", "esp32").part(PartSpec::new("a", "x.bin", vec![1])).part(PartSpec::new(
            "b",
            "x.bin",
            vec![2],
        ))
    });
    insta::assert_snapshot!(message(clash), @r#"parts "a" and "b" both have src "x.bin" but different data; a bundle holds one entry per src"#);
    let generated = std::panic::catch_unwind(|| Bundle::new("demo", "esp32").attr("version", "\"1\""));
    insta::assert_snapshot!(message(generated), @r#"Bundle::attr("version"): the builder writes "version" itself; use Bundle::new or the method of that name"#);
    let generated = std::panic::catch_unwind(|| {
        Bundle::new("demo", "esp32").part(PartSpec::new("app", "a.bin", vec![]).extra("size", "1"))
    });
    insta::assert_snapshot!(message(generated), @r#"PartSpec::extra("size") on part "app": the builder writes "size" itself"#);
}

#[test]
fn non_ascii_names_set_the_utf8_flag_as_go_does() {
    let zip = Bundle::new("démo", "esp32").app(vec![1]).build();
    let flags: Vec<u16> = read_entries(&zip).unwrap().iter().map(|entry| entry.flags).collect();
    assert_eq!(flags, [0, 0x0800]);
    assert_eq!(central_directory(&zip).0[1].flags, 0x0800);
}

#[test]
fn building_twice_gives_the_same_bytes() {
    assert_eq!(sample().build(), sample().build());
}

#[test]
fn check_defect_explains_what_is_wrong() {
    let bundle = sample();
    let check = |defect: Defect| bundle.check_defect(&defect).unwrap_err();
    let unknown_part = check(Defect::WrongSha1 { part: "ap".to_string() });
    assert!(matches!(unknown_part, DefectError::UnknownPart { .. }));
    insta::assert_snapshot!(unknown_part, @r#"
    the defect names part "ap", which the bundle does not have; no bundle built
    help: name one of its parts: app, fs, nvs, zeta
    "#);
    insta::assert_snapshot!(check(Defect::WrongCrc { entry: "demo-1.0.3/demo.bin".to_string() }), @r#"
    the defect names entry "demo-1.0.3/demo.bin", which the bundle does not have; no bundle built
    help: name one of its entries, without the folder: manifest.json, a.bin, demo.bin, fs.img
    "#);
    insta::assert_snapshot!(check(Defect::MissingEntry { part: "nvs".to_string() }), @r#"
    the defect needs the zip entry of part "nvs", which has no src; no bundle built
    help: give the part a src, or aim the defect at a part that has one
    "#);
    let empty = Bundle::new("demo", "esp32").app(vec![]);
    insta::assert_snapshot!(empty.check_defect(&Defect::CorruptData { part: "app".to_string() }).unwrap_err(), @r#"
    the defect corrupts a byte of part "app", which has no data; no bundle built
    help: give the part some data, or aim the defect at another part
    "#);
    assert_eq!(bundle.check_defect(&Defect::ManifestNotFirst), Ok(()));
    assert_eq!(bundle.check_defect(&Defect::Streaming { entry: "fs.img".to_string() }), Ok(()));
}

#[test]
fn read_entries_reports_damaged_archives() {
    let zip = sample().build();
    assert_eq!(read_entries(&[]), Ok(vec![]));
    let truncated = read_entries(&zip[..100]).unwrap_err();
    assert!(matches!(truncated, ReadError::Truncated { .. }));
    insta::assert_snapshot!(truncated, @r"
    the archive ends inside an entry's data at offset 0x2b (needs 831 bytes, 57 left)
    help: the file was cut short; build or download it again
    ");
    insta::assert_snapshot!(read_entries(&zip[..40]).unwrap_err(), @r"
    the archive ends inside an entry name at offset 0x1e (needs 13 bytes, 10 left)
    help: the file was cut short; build or download it again
    ");
    insta::assert_snapshot!(read_entries(b"not a zip at all").unwrap_err(), @r"
    no zip header at offset 0x0 (found 0x20746f6e, expected a local header 0x04034b50, a central directory 0x02014b50 or an end record 0x06054b50)
    help: this is not a zip archive, or an entry's size in its local header is wrong
    ");
    // A streaming entry whose descriptor was cut off.
    let streaming = sample().build_with(Defect::Streaming { entry: "fs.img".to_string() });
    let fs = read_entries(&streaming).unwrap().into_iter().find(|entry| entry.name == "fs.img").unwrap();
    let cut = &streaming[..(fs.data_offset + fs.data_len_bytes) as usize];
    insta::assert_snapshot!(read_entries(cut).unwrap_err(), @r#"
    entry "fs.img" sets flag bit 3 (sizes after the data) but no data descriptor matches its data at offset 0x80c
    help: the archive is damaged; build it again
    "#);
}

fn arbitrary_bundle() -> impl Strategy<Value = (Bundle, Vec<(String, Vec<u8>)>)> {
    let part = ("[a-z]{1,8}", "[a-z]{1,8}\\.bin", proptest::collection::vec(any::<u8>(), 0..300));
    (proptest::collection::btree_map("[a-z]{1,8}", part, 0..5), any::<bool>(), "[0-9]\\.[0-9]").prop_map(
        |(parts, in_folder, version)| {
            let mut bundle = Bundle::new("fw", "esp32").version(&version);
            if in_folder {
                bundle = bundle.in_folder();
            }
            let mut expected = std::collections::BTreeMap::new();
            for (name, (_, src, data)) in parts {
                // Different data under one src would be a builder misuse: give each src its first data.
                let data = expected.entry(src.clone()).or_insert(data).clone();
                bundle = bundle.part(PartSpec::new(&name, &src, data));
            }
            let folder = bundle.folder();
            let manifest = (format!("{folder}manifest.json"), bundle.manifest_json().into_bytes());
            let parts = expected.into_iter().map(|(src, data)| (format!("{folder}{src}"), data));
            (bundle, std::iter::once(manifest).chain(parts).collect())
        },
    )
}

proptest! {
    /// Invariant: `read_entries` on any built bundle gives back every entry's name and data, in the
    /// order the builder wrote them, with a matching CRC-32 and method 0, flags 0.
    #[test]
    fn read_entries_round_trips_every_built_bundle((bundle, expected) in arbitrary_bundle()) {
        let zip = bundle.build();
        let entries = read_entries(&zip).unwrap();
        let found: Vec<(String, Vec<u8>)> =
            entries.iter().map(|entry| (entry.name.clone(), entry.data(&zip).to_vec())).collect();
        prop_assert_eq!(found, expected);
        for entry in &entries {
            prop_assert_eq!((entry.method, entry.flags), (0, 0));
            prop_assert_eq!(entry.crc32, crc32(entry.data(&zip)));
        }
        prop_assert_eq!(central_directory(&zip).0.len(), entries.len());
    }
}
