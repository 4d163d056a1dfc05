//! The `ponte-vhd` command-line tool, run as a user would: every command's
//! effect on image files, and clean failures (message, exit status 1 or 2,
//! never a panic) on malformed images and bad arguments.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ponte-vhd");

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ponte-vhd-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        Scratch(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tool(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run ponte-vhd")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the tool and requires success; returns stdout.
fn ok(args: &[&str]) -> String {
    let o = tool(args);
    assert!(
        o.status.success(),
        "ponte-vhd {args:?} failed:\n{}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs the tool and requires a clean failure with `code`.
fn fails(args: &[&str], code: i32) -> String {
    let o = tool(args);
    let all = text(&o);
    assert_eq!(o.status.code(), Some(code), "ponte-vhd {args:?}:\n{all}");
    assert!(
        !all.contains("panicked"),
        "ponte-vhd {args:?} panicked:\n{all}"
    );
    assert!(!o.stderr.is_empty(), "ponte-vhd {args:?} says nothing");
    all
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The number after `"key":` in `info --json` output.
fn json_number(json: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\": ");
    let at = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("{key} in {json}"))
        + pattern.len();
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {json}"))
}

fn json_string<'a>(json: &'a str, key: &str) -> &'a str {
    let pattern = format!("\"{key}\": \"");
    let at = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("{key} in {json}"))
        + pattern.len();
    let end = json[at..].find('"').expect("closing quote");
    &json[at..at + end]
}

fn info(image: &Path) -> String {
    ok(&["info", "--json", s(image)])
}

/// Deterministic bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

#[test]
fn create_reports_type_and_size() {
    let dir = Scratch::new("create");
    let dynamic = dir.path("d.vhd");
    let fixed = dir.path("f.vhd");
    let chs = dir.path("c.vhd");
    ok(&[
        "create",
        "--type",
        "dynamic",
        "--size",
        "10000384",
        "--block-size",
        "65536",
        s(&dynamic),
    ]);
    ok(&["create", "--type", "fixed", "--size", "3M", s(&fixed)]);
    ok(&[
        "create",
        "--type",
        "dynamic",
        "--size",
        "10000384",
        "--size-mode",
        "chs",
        s(&chs),
    ]);
    // An existing file is never replaced, even by a failing create.
    let before = std::fs::read(&dynamic).unwrap();
    let out = fails(
        &["create", "--type", "fixed", "--size", "1M", s(&dynamic)],
        1,
    );
    assert!(out.contains("already exists"), "{out}");
    fails(
        &["create", "--type", "fixed", "--size", "1000", s(&dynamic)],
        1,
    );
    assert!(
        std::fs::read(&dynamic).unwrap() == before,
        "image left as it was"
    );
    let j = info(&dynamic);
    assert_eq!(json_string(&j, "type"), "dynamic");
    assert_eq!(json_number(&j, "virtual_size"), 10_000_384);
    assert_eq!(json_number(&j, "block_size"), 65536);
    assert_eq!(json_number(&j, "allocated_blocks"), 0);
    assert_eq!(json_number(&j, "chain_depth"), 1);
    let j = info(&fixed);
    assert_eq!(json_string(&j, "type"), "fixed");
    assert_eq!(json_number(&j, "virtual_size"), 3 << 20);
    // A fixed image is its data plus a 512-byte footer.
    assert_eq!(std::fs::metadata(&fixed).unwrap().len(), (3 << 20) + 512);
    // CHS mode: 10000384 bytes = 19532 sectors; the specification's
    // algorithm gives 287 cylinders x 4 heads x 17 sectors = 19516 sectors.
    let j = info(&chs);
    assert_eq!(json_number(&j, "virtual_size"), 19516 * 512);
}

#[test]
fn differencing_child_finds_parent_relative_to_its_folder() {
    let dir = Scratch::new("diff");
    std::fs::create_dir_all(dir.path("tree/base")).unwrap();
    std::fs::create_dir_all(dir.path("tree/kids")).unwrap();
    let parent = dir.path("tree/base/parent.vhd");
    let child = dir.path("tree/kids/child.vhd");
    ok(&["create", "--type", "dynamic", "--size", "4M", s(&parent)]);
    let pj = info(&parent);
    ok(&[
        "create",
        "--type",
        "differencing",
        "--parent",
        s(&parent),
        s(&child),
    ]);
    let cj = info(&child);
    assert_eq!(json_string(&cj, "type"), "differencing");
    assert_eq!(json_number(&cj, "virtual_size"), 4 << 20);
    assert_eq!(json_number(&cj, "chain_depth"), 2);
    assert_eq!(json_string(&cj, "parent_uuid"), json_string(&pj, "uuid"));
    assert_eq!(json_string(&cj, "parent_name"), "parent.vhd");

    // Move the whole tree: the relative locator still leads to the parent.
    let moved = dir.path("moved");
    std::fs::rename(dir.path("tree"), &moved).unwrap();
    let child = moved.join("kids/child.vhd");
    let parent = moved.join("base/parent.vhd");
    assert_eq!(json_number(&info(&child), "chain_depth"), 2);
    // The parent is named where it was found.
    let text = ok(&["info", s(&child)]);
    let line = format!("  parent 1: {}", parent.canonicalize().unwrap().display());
    assert!(text.lines().any(|l| l == line), "{text}");
    ok(&["check", s(&child)]);

    // A different image in the parent's place is not the parent.
    std::fs::remove_file(&parent).unwrap();
    ok(&["create", "--type", "dynamic", "--size", "4M", s(&parent)]);
    let out = fails(&["info", s(&child)], 1);
    assert!(out.contains("not found"), "{out}");
    fails(&["check", s(&child)], 1);
}

#[test]
fn write_export_import_commit_compact() {
    let dir = Scratch::new("data");
    let parent = dir.path("parent.vhd");
    let child = dir.path("child.vhd");
    let input = dir.path("input.bin");
    let raw = dir.path("out.raw");
    let size = 6usize << 20;
    ok(&[
        "create",
        "--type",
        "dynamic",
        "--size",
        &size.to_string(),
        "--block-size",
        "1M",
        s(&parent),
    ]);
    let mut expected = vec![0u8; size];
    let first = pattern(700_001, 1);
    std::fs::write(&input, &first).unwrap();
    ok(&["write", s(&parent), "--offset", "1000", s(&input)]);
    expected[1000..1000 + first.len()].copy_from_slice(&first);

    ok(&[
        "create",
        "--type",
        "differencing",
        "--parent",
        s(&parent),
        s(&child),
    ]);
    let second = pattern(1_500_000, 2);
    std::fs::write(&input, &second).unwrap();
    ok(&["write", s(&child), "--offset", "3333333", s(&input)]);
    let mut with_child = expected.clone();
    with_child[3_333_333..3_333_333 + second.len()].copy_from_slice(&second);

    ok(&["export", s(&child), s(&raw)]);
    assert!(std::fs::read(&raw).unwrap() == with_child, "child export");
    ok(&["export", s(&parent), s(&raw)]);
    assert!(std::fs::read(&raw).unwrap() == expected, "parent untouched");

    // Writing past the end is refused before anything is written.
    let out = fails(&["write", s(&child), "--offset", "6291000", s(&input)], 1);
    assert!(out.contains("do not fit"), "{out}");

    ok(&["commit", s(&child)]);
    ok(&["export", s(&parent), s(&raw)]);
    assert!(
        std::fs::read(&raw).unwrap() == with_child,
        "committed parent"
    );
    ok(&["check", s(&parent)]);

    // Import: zero blocks stay unallocated; export gives the data back.
    let mut sparse = vec![0u8; 5 << 20];
    sparse[(2 << 20) + 17..(2 << 20) + 517].copy_from_slice(&pattern(500, 3));
    sparse[(5 << 20) - 1] = 9;
    std::fs::write(&input, &sparse).unwrap();
    let imported = dir.path("imported.vhd");
    ok(&[
        "import",
        s(&input),
        s(&imported),
        "--type",
        "dynamic",
        "--block-size",
        "1M",
    ]);
    let j = info(&imported);
    assert_eq!(json_number(&j, "virtual_size"), 5 << 20);
    assert_eq!(
        json_number(&j, "allocated_blocks"),
        2,
        "blocks 2 and 4 only"
    );
    ok(&["export", s(&imported), s(&raw)]);
    assert!(std::fs::read(&raw).unwrap() == sparse, "import round trip");
    let fixed = dir.path("imported-fixed.vhd");
    ok(&["import", s(&input), s(&fixed), "--type", "fixed"]);
    ok(&["export", s(&fixed), s(&raw)]);
    assert!(
        std::fs::read(&raw).unwrap() == sparse,
        "fixed import round trip"
    );

    // Compact: zeroing block 2 lets compact free it and shrink the file.
    std::fs::write(&input, vec![0u8; 1 << 20]).unwrap();
    ok(&["write", s(&imported), "--offset", "2097152", s(&input)]);
    let before = std::fs::metadata(&imported).unwrap().len();
    ok(&["compact", s(&imported)]);
    let after = std::fs::metadata(&imported).unwrap().len();
    assert!(after < before, "compact shrinks {before} -> {after}");
    assert_eq!(json_number(&info(&imported), "allocated_blocks"), 1);
    sparse[2 << 20..3 << 20].fill(0);
    ok(&["export", s(&imported), s(&raw)]);
    assert!(std::fs::read(&raw).unwrap() == sparse, "compacted data");
    ok(&["check", s(&imported)]);
}

/// Byte images that are not valid VHDs, each broken in one way.
fn malformed_images(dir: &Scratch) -> Vec<PathBuf> {
    let good = dir.path("good.vhd");
    ok(&[
        "create",
        "--type",
        "dynamic",
        "--size",
        "2M",
        "--block-size",
        "512K",
        s(&good),
    ]);
    std::fs::write(dir.path("in.bin"), pattern(4096, 7)).unwrap();
    ok(&["write", s(&good), "--offset", "0", s(&dir.path("in.bin"))]);
    let bytes = std::fs::read(&good).unwrap();
    let len = bytes.len();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("short", bytes[..100].to_vec()),
        ("garbage", pattern(3000, 5)),
    ];
    // Tail footer checksum wrong, and the head copy broken too.
    let mut b = bytes.clone();
    b[len - 512 + 40] ^= 1;
    b[0] = b'x';
    cases.push(("bad-footers", b));
    // Header cookie broken.
    let mut b = bytes.clone();
    b[512] = b'x';
    cases.push(("bad-header", b));
    // BAT entry 0 (at 1536) points far beyond the file; header checksum
    // stays valid because the BAT is not covered by it.
    let mut b = bytes.clone();
    b[1536..1540].copy_from_slice(&0x00F0_0000u32.to_be_bytes());
    cases.push(("bat-beyond-file", b));
    // Block size 3 (not a power of two), header checksum fixed up.
    let mut b = bytes.clone();
    b[512 + 32..512 + 36].copy_from_slice(&3u32.to_be_bytes());
    let sum: u32 = b[512..1536]
        .iter()
        .enumerate()
        .filter(|(i, _)| !(36..40).contains(i))
        .fold(0u32, |a, (_, &x)| a.wrapping_add(u32::from(x)));
    b[512 + 36..512 + 40].copy_from_slice(&(!sum).to_be_bytes());
    cases.push(("bad-block-size", b));
    // Truncated in the middle of a block.
    cases.push(("truncated", bytes[..len - 2000].to_vec()));
    cases
        .into_iter()
        .map(|(name, b)| {
            let p = dir.path(&format!("{name}.vhd"));
            std::fs::write(&p, b).unwrap();
            p
        })
        .collect()
}

#[test]
fn malformed_images_fail_cleanly() {
    let dir = Scratch::new("malformed");
    let input = dir.path("data.bin");
    std::fs::write(&input, pattern(1000, 1)).unwrap();
    let raw = dir.path("x.raw");
    for image in malformed_images(&dir) {
        let p = s(&image);
        fails(&["check", p], 1);
        fails(&["info", p], 1);
        fails(&["info", "--json", p], 1);
        fails(&["export", p, s(&raw)], 1);
        fails(&["write", p, "--offset", "0", s(&input)], 1);
        fails(&["commit", p], 1);
        fails(&["compact", p], 1);
        fails(
            &["create", "--type", "differencing", "--parent", p, s(&raw)],
            1,
        );
    }
    fails(&["info", s(&dir.path("missing.vhd"))], 1);
}

#[test]
fn bad_arguments_fail_with_usage() {
    let dir = Scratch::new("args");
    let out = s(&dir.path("o.vhd")).to_string();
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["info"],
        vec!["info", "a", "b"],
        vec!["info", "--bogus", "a"],
        vec!["create", &out],
        vec!["create", "--type", "dynamic", &out],
        vec!["create", "--type", "sparse", "--size", "1M", &out],
        vec!["create", "--type", "dynamic", "--size", "12Q", &out],
        vec![
            "create",
            "--type",
            "dynamic",
            "--size",
            "99999999999999999999",
            &out,
        ],
        vec![
            "create",
            "--type",
            "dynamic",
            "--size",
            "1M",
            "--size-mode",
            "x",
            &out,
        ],
        vec![
            "create",
            "--type",
            "fixed",
            "--size",
            "1M",
            "--block-size",
            "4096",
            &out,
        ],
        vec!["create", "--type", "differencing", &out],
        vec!["write", &out, "input"],
        vec!["import", "raw", &out],
    ] {
        fails(&args, 2);
    }
    // Values the library refuses are failures, not usage errors.
    fails(&["create", "--type", "dynamic", "--size", "1000", &out], 1);
    fails(
        &[
            "create",
            "--type",
            "dynamic",
            "--size",
            "1M",
            "--block-size",
            "3000",
            &out,
        ],
        1,
    );
    fails(&["create", "--type", "dynamic", "--size", "3T", &out], 1);
}
