//! Interoperability with other VHD implementations: qemu-img (qemu-utils)
//! and vhdiinfo (libvhdi-utils).
//!
//! - Images made and filled by qemu-img read byte-identical to the raw data
//!   they were filled from, at the size qemu reports.
//! - Images made and written by ponte open in qemu-img at the size ponte
//!   reports, compare equal to the raw data with `qemu-img compare`, and are
//!   reported by vhdiinfo with the same size and type.
//! - Differencing chains (which qemu-img cannot read: it ignores parents)
//!   read like a reference built from the writes, and vhdiinfo sees them as
//!   differencing images naming their parent.
//!
//! Each test is skipped, with a message naming the tool, when the tool is
//! not installed.
#![cfg(feature = "std")]

use std::path::{Path, PathBuf};
use std::process::Command;

use ponte_vhd::create::{
    create_differencing, create_dynamic, create_fixed, CreateOptions, ParentLink, SizeMode,
};
use ponte_vhd::{Disk, DiskType, FileDevice, FileResolver, OpenOptions, Uuid, VecStorage};

type FileDisk = Disk<FileDevice, Vec<u32>, 8>;

/// xorshift64*: deterministic test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Whether `tool` runs; prints why the test is skipped when it does not.
fn have(tool: &str, version_flag: &str, test: &str) -> bool {
    let ok = Command::new(tool)
        .arg(version_flag)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("interop: {tool} is not installed; skipping {test}");
    }
    ok
}

fn have_qemu_img(test: &str) -> bool {
    have("qemu-img", "--version", test)
}

fn have_vhdiinfo(test: &str) -> bool {
    have("vhdiinfo", "-V", test)
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("ponte-vhd-interop-{}-{name}", std::process::id()));
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

/// Runs `program` and returns its stdout; panics with its output if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}

/// The number following `"key":` in qemu-img's JSON output.
fn json_number(json: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\":");
    let at = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pattern.len();
    let digits: String = json[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("bad {key} in {json}"))
}

/// Virtual size as `qemu-img info -f vpc --output=json` reports it.
fn qemu_size(image: &Path) -> u64 {
    let json = run(
        "qemu-img",
        &["info", "-f", "vpc", "--output=json", s(image)],
    );
    assert!(json.contains("\"format\": \"vpc\""), "{json}");
    json_number(&json, "virtual-size")
}

/// Disk type and media size as vhdiinfo reports them.
fn vhdiinfo(image: &Path) -> (String, u64, String) {
    let text = run("vhdiinfo", &[s(image)]);
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let media = field("Media size");
    let bytes = media
        .rsplit_once('(')
        .and_then(|(_, b)| b.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no media size in vhdiinfo output:\n{text}"));
    (field("Disk type"), bytes, field("Parent identifier"))
}

/// Raw data of `len` bytes: random sectors, with runs of zeros (whole
/// blocks and partial ones) so that sparse writers leave holes.
fn raw_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let run = (rng.below(3 << 20) as usize + 1).min(len - at);
        if rng.below(3) != 0 {
            rng.fill(&mut data[at..at + run]);
        }
        at += run;
    }
    data
}

fn open(path: &Path, writable: bool) -> FileDisk {
    let dev = FileDevice::open(path, writable).expect("open image file");
    let options = OpenOptions {
        writable,
        ..OpenOptions::default()
    };
    let mut resolver = FileResolver::for_child(path, false);
    Disk::open(dev, &options, &mut VecStorage, &mut resolver).expect("ponte opens the image")
}

fn read_all(disk: &mut FileDisk) -> Vec<u8> {
    let mut out = vec![0u8; disk.size() as usize];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        disk.read_at(i as u64 * (1 << 20), chunk)
            .expect("read through ponte");
    }
    out
}

fn uuid(seed: u64) -> Uuid {
    let mut b = [0u8; 16];
    Rng::new(seed).fill(&mut b);
    Uuid(b)
}

// ---------------------------------------------------------------------------
// qemu-img writes, ponte reads

fn qemu_made_reads_back(subformat: &str, force_size: bool, size: u64, seed: u64) {
    let test = format!("qemu-made {subformat} image of {size} bytes");
    if !have_qemu_img(&test) {
        return;
    }
    let dir = Scratch::new(&format!("qemu-{subformat}-{force_size}-{size}"));
    let image = dir.path("qemu.vhd");
    let raw = dir.path("source.raw");
    let options = format!(
        "subformat={subformat},force_size={}",
        if force_size { "on" } else { "off" }
    );
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            &options,
            s(&image),
            &size.to_string(),
        ],
    );
    let qsize = qemu_size(&image);
    if force_size {
        assert_eq!(qsize, size, "qemu keeps a forced size");
    } else {
        assert!(qsize >= size, "qemu rounds the size up to CHS");
    }
    let data = raw_data(qsize as usize, seed);
    std::fs::write(&raw, &data).expect("write raw source");
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "vpc",
            s(&raw),
            s(&image),
        ],
    );
    let mut disk = open(&image, false);
    assert_eq!(
        disk.size(),
        qsize,
        "{test}: ponte and qemu agree on the size"
    );
    let want = if subformat == "fixed" {
        DiskType::Fixed
    } else {
        DiskType::Dynamic
    };
    assert_eq!(disk.info().disk_type, want);
    let read = read_all(&mut disk);
    assert!(
        read == data,
        "{test}: ponte reads what qemu-img convert wrote (first difference at byte {:?})",
        read.iter().zip(&data).position(|(a, b)| a != b)
    );
    // Blocks qemu left unallocated are holes ponte also sees as such.
    if want == DiskType::Dynamic {
        let block = disk.info().block_size.expect("dynamic images have blocks") as usize;
        let nonzero_blocks = data
            .chunks(block)
            .filter(|c| c.iter().any(|&b| b != 0))
            .count() as u32;
        assert!(disk.info().allocated_blocks >= nonzero_blocks);
    }
    let mut problems = Vec::new();
    let dev = FileDevice::open(&image, false).expect("open");
    ponte_vhd::check(dev, &OpenOptions::default(), &mut VecStorage, &mut |p| {
        problems.push(*p)
    })
    .expect("check runs");
    assert!(problems.is_empty(), "{test}: {problems:?}");
}

#[test]
fn qemu_dynamic_chs_rounded_sizes() {
    // 10 MiB and 33 MiB + 3 sectors are not CHS-representable: qemu rounds
    // them up and ponte must read the rounded size.
    qemu_made_reads_back("dynamic", false, 10 << 20, 1);
    qemu_made_reads_back("dynamic", false, (33 << 20) + 1536, 2);
}

#[test]
fn qemu_dynamic_forced_sizes() {
    qemu_made_reads_back("dynamic", true, 10_000_384, 3);
    qemu_made_reads_back("dynamic", true, (33 << 20) + 1536, 4);
}

#[test]
fn qemu_fixed_chs_rounded_sizes() {
    qemu_made_reads_back("fixed", false, 10_000_384, 5);
    qemu_made_reads_back("fixed", false, 24 << 20, 6);
}

#[test]
fn qemu_fixed_forced_sizes() {
    qemu_made_reads_back("fixed", true, 10_000_384, 7);
    qemu_made_reads_back("fixed", true, 24 << 20, 8);
}

// ---------------------------------------------------------------------------
// ponte writes, qemu-img and vhdiinfo read

/// Writes `data` into `disk` in pieces of random lengths at unaligned
/// boundaries, skipping some zero runs so that holes stay unallocated.
fn write_in_pieces(disk: &mut FileDisk, data: &[u8], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut at = 0usize;
    while at < data.len() {
        let n = (rng.below(700_000) as usize + 1).min(data.len() - at);
        let piece = &data[at..at + n];
        if piece.iter().any(|&b| b != 0) || rng.below(2) == 0 {
            disk.write_at(at as u64, piece)
                .expect("write through ponte");
        }
        at += n;
    }
    disk.flush().expect("flush");
}

fn ponte_made_reads_in_qemu(kind: DiskType, mode: SizeMode, size: u64, block_size: u32) {
    let test = format!("ponte-made {kind:?} image of {size} bytes ({mode:?})");
    let qemu = have_qemu_img(&test);
    let vhdi = have_vhdiinfo(&test);
    let dir = Scratch::new(&format!("ponte-{kind:?}-{mode:?}-{size}-{block_size}"));
    let image = dir.path("ponte.vhd");
    let raw = dir.path("expected.raw");
    let mut options = CreateOptions::new(size, uuid(size), 700_000_000);
    options.size_mode = mode;
    options.block_size = block_size;
    let mut dev = FileDevice::create(&image).expect("create file");
    match kind {
        DiskType::Fixed => create_fixed(&mut dev, &options),
        _ => create_dynamic(&mut dev, &options),
    }
    .expect("create image");
    drop(dev);
    let mut disk = open(&image, true);
    let vsize = disk.size();
    match mode {
        SizeMode::CurrentSizeExact => assert_eq!(vsize, size),
        SizeMode::ChsExact => {
            assert!(vsize <= size);
            assert_eq!(vsize, disk.info().geometry.size());
        }
    }
    let data = raw_data(vsize as usize, size ^ u64::from(block_size));
    write_in_pieces(&mut disk, &data, size);
    drop(disk);
    std::fs::write(&raw, &data).expect("write reference");
    if qemu {
        assert_eq!(qemu_size(&image), vsize, "{test}: qemu reads ponte's size");
        run(
            "qemu-img",
            &[
                "compare",
                "-q",
                "-f",
                "vpc",
                "-F",
                "raw",
                s(&image),
                s(&raw),
            ],
        );
    }
    if vhdi {
        let (kind_name, media, _) = vhdiinfo(&image);
        let want = if kind == DiskType::Fixed {
            "Fixed"
        } else {
            "Dynamic"
        };
        assert_eq!(kind_name, want, "{test}: vhdiinfo type");
        assert_eq!(media, vsize, "{test}: vhdiinfo size");
    }
    // ponte reads back what it wrote, after reopening.
    let mut disk = open(&image, false);
    assert!(read_all(&mut disk) == data, "{test}: ponte reads back");
}

#[test]
fn ponte_dynamic_exact_sizes() {
    ponte_made_reads_in_qemu(
        DiskType::Dynamic,
        SizeMode::CurrentSizeExact,
        10 << 20,
        2 << 20,
    );
    ponte_made_reads_in_qemu(
        DiskType::Dynamic,
        SizeMode::CurrentSizeExact,
        10_000_384,
        64 << 10,
    );
    ponte_made_reads_in_qemu(
        DiskType::Dynamic,
        SizeMode::CurrentSizeExact,
        (5 << 20) + 512,
        4096,
    );
}

#[test]
fn ponte_dynamic_chs_sizes() {
    ponte_made_reads_in_qemu(DiskType::Dynamic, SizeMode::ChsExact, 10_000_384, 2 << 20);
    ponte_made_reads_in_qemu(DiskType::Dynamic, SizeMode::ChsExact, 33 << 20, 512 << 10);
}

#[test]
fn ponte_fixed_sizes() {
    ponte_made_reads_in_qemu(DiskType::Fixed, SizeMode::CurrentSizeExact, 10_000_384, 0);
    ponte_made_reads_in_qemu(DiskType::Fixed, SizeMode::CurrentSizeExact, 24 << 20, 0);
    ponte_made_reads_in_qemu(DiskType::Fixed, SizeMode::ChsExact, 10_000_384, 0);
}

/// qemu-img writes into an image ponte created; ponte reads it back.
#[test]
fn qemu_fills_ponte_made_dynamic() {
    let test = "qemu-img convert into a ponte-made dynamic image";
    if !have_qemu_img(test) {
        return;
    }
    let dir = Scratch::new("qemu-fills-ponte");
    let image = dir.path("ponte.vhd");
    let raw = dir.path("source.raw");
    let size = 12_345_344;
    let mut options = CreateOptions::new(size, uuid(9), 700_000_000);
    options.block_size = 1 << 20;
    let mut dev = FileDevice::create(&image).expect("create file");
    create_dynamic(&mut dev, &options).expect("create image");
    drop(dev);
    let data = raw_data(size as usize, 9);
    std::fs::write(&raw, &data).expect("write raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "vpc",
            s(&raw),
            s(&image),
        ],
    );
    let mut disk = open(&image, false);
    assert_eq!(disk.size(), size);
    assert!(read_all(&mut disk) == data, "{test}");
}

// ---------------------------------------------------------------------------
// Differencing chains

#[test]
fn differencing_chain_matches_reference_and_vhdiinfo() {
    let test = "differencing chain";
    let dir = Scratch::new("diff");
    std::fs::create_dir_all(dir.path("children")).expect("mkdir");
    let base = dir.path("base.vhd");
    let mid = dir.path("children/mid.vhd");
    let top = dir.path("children/top.vhd");
    let size: u64 = 9 << 20;
    let mut options = CreateOptions::new(size, uuid(20), 700_000_000);
    options.block_size = 1 << 20;
    let mut dev = FileDevice::create(&base).expect("create base");
    create_dynamic(&mut dev, &options).expect("create base image");
    drop(dev);

    // Reference: the raw disk every layer's writes produce, in order.
    let mut reference = raw_data(size as usize, 20);
    let mut disk = open(&base, true);
    write_in_pieces(&mut disk, &reference, 21);
    drop(disk);

    let mut rng = Rng::new(22);
    for (child, parent, relative, id) in [
        (&mid, &base, "../base.vhd", 23u64),
        (&top, &mid, "mid.vhd", 24),
    ] {
        let mut dev = FileDevice::create(child).expect("create child");
        let mut parent_dev = FileDevice::open(parent, false).expect("open parent");
        let name = parent.file_name().and_then(|n| n.to_str()).expect("name");
        let link = ParentLink {
            relative_path: relative,
            absolute_path: None,
            name,
        };
        create_differencing(
            &mut dev,
            &mut parent_dev,
            &link,
            64 << 10,
            uuid(id),
            700_000_100,
        )
        .expect("create child image");
        drop(dev);
        let mut disk = open(child, true);
        for _ in 0..40 {
            let off = rng.below(size - 1) as usize;
            let len = (rng.below(200_000) as usize + 1).min(size as usize - off);
            let mut piece = vec![0u8; len];
            if rng.below(4) != 0 {
                rng.fill(&mut piece);
            }
            disk.write_at(off as u64, &piece).expect("write child");
            reference[off..off + len].copy_from_slice(&piece);
        }
        disk.flush().expect("flush child");
    }
    let mut disk = open(&top, false);
    assert_eq!(disk.depth(), 3, "{test}: top, mid and base are found");
    assert!(
        read_all(&mut disk) == reference,
        "{test}: chain reads the reference"
    );
    drop(disk);

    // vhdiinfo sees a differencing image naming its parent.
    if have_vhdiinfo(test) {
        let (kind, media, parent) = vhdiinfo(&top);
        assert_eq!(kind, "Differential");
        assert_eq!(media, size);
        assert_eq!(parent, uuid(23).to_string());
    }
}
