//! Throughput of ponte-vhd's file backend against `qemu-img bench` on the
//! same image files, and the page-cache copy of a raw file as the limit.
//!
//! `vhd-bench DIR` creates 1 GiB images in DIR (a raw file, a filled dynamic
//! image, an empty dynamic image per write run, a differencing child over
//! the filled image) and prints `bench <name> <MB/s> MB/s` lines (MB = 10^6
//! bytes):
//!
//! - `vhd.seq_read_dynamic`, `qemu.seq_read_dynamic`: 1 MiB reads in order,
//!   4 passes over the filled dynamic image.
//! - `vhd.rand4k_read_dynamic`, `qemu.rand4k_read_dynamic`: 4 KiB reads
//!   scattered over the whole disk: offset i * STRIDE modulo the size, with a
//!   stride that visits every 4 KiB slot once in a shuffled order (qemu-img
//!   bench can only step by a fixed amount, so both use that order).
//! - `vhd.alloc_write_dynamic`, `qemu.alloc_write_dynamic`: 1 MiB writes in
//!   order into an empty dynamic image, allocating every block; ponte's
//!   figure includes its final flush.
//! - `vhd.rand4k_read_diff`: scattered 4 KiB reads through a differencing
//!   child holding parts of half of the blocks.
//! - `raw.seq_read`: 1 MiB `pread`s of a raw file of the same size.
//!
//! Both sides go through the page cache (qemu `-t writeback -i threads`,
//! ponte's buffered file I/O), reads after a warm-up pass that loads the file
//! into it, one request at a time (qemu `-d 1`, as ponte's device models
//! issue them), into page-aligned buffers (as guest memory is). Each figure
//! is the best of `ROUNDS` runs, ponte and qemu alternating, so that load
//! from other processes disturbs both alike. ponte opens each image with a
//! sector bitmap cache of `BITMAP_CACHE_SLOTS` slots.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ponte_vhd::create::{create_differencing, create_dynamic, CreateOptions, ParentLink};
use ponte_vhd::{Disk, FileDevice, FileResolver, OpenOptions, Uuid, VecStorage};

const SIZE: u64 = 1 << 30;
const BLOCK: u32 = 2 << 20;
const SEQ_BUF: usize = 1 << 20;
const SEQ_PASSES: u64 = 4;
const RAND_BUF: usize = 4096;
const RAND_COUNT: u64 = 100_000;
/// Runs per figure; the best is printed.
const ROUNDS: usize = 3;
/// Sector bitmap cache slots per image: one per bitmap sector of these
/// images (512 blocks of 2 MiB, one bitmap sector each), 260 KiB of table
/// storage per image, as an integrator serving disks of this size may
/// choose.
const BITMAP_CACHE_SLOTS: usize = 512;
/// An odd number of 4 KiB slots: coprime with the 2^18 slots of the disk,
/// so consecutive reads land about 158 MiB apart and no slot repeats.
const STRIDE: u64 = 40_503 * RAND_BUF as u64;

type FileDisk = Disk<FileDevice, Vec<u32>, 4>;

/// A zeroed buffer of `len` bytes starting on a page boundary.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let storage = vec![0u8; len + 4096];
        let start = storage.as_ptr().align_offset(4096);
        Aligned {
            storage,
            start,
            len,
        }
    }
    fn get(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn fail(message: String) -> ! {
    eprintln!("vhd-bench: {message}");
    std::process::exit(1)
}

fn ok<T, E: std::fmt::Debug>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| fail(format!("{what}: {e:?}")))
}

fn mbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

fn line(name: &str, value: f64) {
    println!("bench {name} {value:.0} MB/s");
}

fn best(runs: &[f64]) -> f64 {
    runs.iter().copied().fold(0.0, f64::max)
}

/// Deterministic, incompressible-looking data for chunk `i`.
fn fill(buf: &mut [u8], i: u64) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn uuid(n: u8) -> Uuid {
    Uuid([n; 16])
}

fn open(path: &Path, writable: bool) -> FileDisk {
    let dev = ok("open", FileDevice::open(path, writable));
    let options = OpenOptions {
        writable,
        bitmap_cache_slots: BITMAP_CACHE_SLOTS,
        ..OpenOptions::default()
    };
    let mut resolver = FileResolver::for_child(path, false);
    ok(
        "open image",
        Disk::open(dev, &options, &mut VecStorage, &mut resolver),
    )
}

fn new_dynamic(path: &Path, id: u8) {
    let mut dev = ok("create", FileDevice::create(path));
    let mut options = CreateOptions::new(SIZE, uuid(id), 700_000_000);
    options.block_size = BLOCK;
    ok("create dynamic", create_dynamic(&mut dev, &options));
}

/// Reads the whole file once so that it sits in the page cache.
fn warm(path: &Path) {
    let file = ok("open for warm-up", File::open(path));
    let len = ok("stat", file.metadata()).len();
    let mut buf = vec![0u8; SEQ_BUF];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(SEQ_BUF as u64) as usize;
        ok("warm-up read", file.read_exact_at(&mut buf[..n], at));
        at += n as u64;
    }
}

/// Fills `path` (raw) and `dynamic` (through ponte) with the same data.
fn prepare_sources(raw: &Path, dynamic: &Path) {
    let file = ok("create raw", File::create(raw));
    new_dynamic(dynamic, 1);
    let mut disk = open(dynamic, true);
    let mut buf = Aligned::new(SEQ_BUF);
    let buf = buf.get();
    for i in 0..SIZE / SEQ_BUF as u64 {
        fill(buf, i);
        ok("write raw", file.write_all_at(buf, i * SEQ_BUF as u64));
        ok("write dynamic", disk.write_at(i * SEQ_BUF as u64, buf));
    }
    ok("flush", disk.flush());
    ok("sync raw", file.sync_all());
}

/// A differencing child of `parent` holding 64 KiB runs in every other
/// 128 KiB of every other block.
fn prepare_child(parent: &Path, child: &Path) {
    let mut dev = ok("create child", FileDevice::create(child));
    let mut parent_dev = ok("open parent", FileDevice::open(parent, false));
    let name = parent
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| fail("parent name".into()));
    let link = ParentLink {
        relative_path: name,
        absolute_path: None,
        name,
    };
    ok(
        "create differencing",
        create_differencing(
            &mut dev,
            &mut parent_dev,
            &link,
            BLOCK,
            uuid(2),
            700_000_100,
        ),
    );
    drop(dev);
    let mut disk = open(child, true);
    let mut buf = vec![0u8; 64 << 10];
    for block in (0..SIZE / u64::from(BLOCK)).step_by(2) {
        for run in (0..u64::from(BLOCK)).step_by(128 << 10) {
            fill(&mut buf, block ^ run);
            let at = block * u64::from(BLOCK) + run;
            ok("write child", disk.write_at(at, &buf));
        }
    }
    ok("flush child", disk.flush());
}

fn seq_read(disk: &mut FileDisk) -> f64 {
    let mut buf = Aligned::new(SEQ_BUF);
    let buf = buf.get();
    let start = Instant::now();
    for pass in 0..SEQ_PASSES {
        let mut at = 0;
        while at < SIZE {
            ok("read", disk.read_at(at, buf));
            at += SEQ_BUF as u64;
        }
        std::hint::black_box((pass, &buf));
    }
    mbps(SIZE * SEQ_PASSES, start.elapsed().as_secs_f64())
}

fn rand_read(disk: &mut FileDisk) -> f64 {
    let mut buf = Aligned::new(RAND_BUF);
    let buf = buf.get();
    let mut at = 0u64;
    let start = Instant::now();
    for _ in 0..RAND_COUNT {
        ok("read", disk.read_at(at, buf));
        at = (at + STRIDE) % SIZE;
    }
    std::hint::black_box(&buf);
    mbps(RAND_COUNT * RAND_BUF as u64, start.elapsed().as_secs_f64())
}

fn alloc_write(path: &Path) -> f64 {
    new_dynamic(path, 3);
    let mut disk = open(path, true);
    let mut buf = Aligned::new(SEQ_BUF);
    let buf = buf.get();
    buf.fill(0xA5);
    let start = Instant::now();
    let mut at = 0;
    while at < SIZE {
        ok("write", disk.write_at(at, buf));
        at += SEQ_BUF as u64;
    }
    ok("flush", disk.flush());
    mbps(SIZE, start.elapsed().as_secs_f64())
}

fn raw_seq_read(path: &Path) -> f64 {
    let file = ok("open raw", File::open(path));
    let mut buf = Aligned::new(SEQ_BUF);
    let buf = buf.get();
    let start = Instant::now();
    for _ in 0..SEQ_PASSES {
        let mut at = 0;
        while at < SIZE {
            ok("read raw", file.read_exact_at(buf, at));
            at += SEQ_BUF as u64;
        }
        std::hint::black_box(&buf);
    }
    mbps(SIZE * SEQ_PASSES, start.elapsed().as_secs_f64())
}

/// Runs `qemu-img bench` and returns MB/s from its elapsed time.
fn qemu_bench(image: &Path, args: &[&str], count: u64, buf: usize) -> Option<f64> {
    let out = Command::new("qemu-img")
        .args(["bench", "-f", "vpc", "-t", "writeback", "-i", "threads"])
        .args(args)
        .args(["-c", &count.to_string(), "-s", &buf.to_string()])
        .arg(image)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "vhd-bench: qemu-img bench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    // "Run completed in 1.234 seconds."
    let seconds: f64 = text
        .split("completed in ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(mbps(count * buf as u64, seconds))
}

fn have_qemu_img() -> bool {
    Command::new("qemu-img")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| fail("usage: vhd-bench DIR".into())),
    );
    ok("create directory", std::fs::create_dir_all(&dir));
    let raw = dir.join("source.raw");
    let dynamic = dir.join("filled.vhd");
    let child = dir.join("child.vhd");
    let alloc = dir.join("alloc.vhd");
    prepare_sources(&raw, &dynamic);
    prepare_child(&dynamic, &child);
    let qemu = have_qemu_img();
    if !qemu {
        eprintln!("vhd-bench: qemu-img is not installed; no qemu figures");
    }
    let seq_count = SIZE * SEQ_PASSES / SEQ_BUF as u64;
    let stride = STRIDE.to_string();

    warm(&raw);
    let raw_runs: Vec<f64> = (0..ROUNDS).map(|_| raw_seq_read(&raw)).collect();
    line("raw.seq_read", best(&raw_runs));

    warm(&dynamic);
    let mut disk = open(&dynamic, false);
    let (mut ponte, mut other) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ponte.push(seq_read(&mut disk));
        if qemu {
            other.extend(qemu_bench(&dynamic, &["-d", "1"], seq_count, SEQ_BUF));
        }
    }
    line("vhd.seq_read_dynamic", best(&ponte));
    let seq_qemu = best(&other);
    let (mut ponte, mut other) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ponte.push(rand_read(&mut disk));
        if qemu {
            other.extend(qemu_bench(
                &dynamic,
                &["-d", "1", "-S", &stride],
                RAND_COUNT,
                RAND_BUF,
            ));
        }
    }
    drop(disk);
    line("vhd.rand4k_read_dynamic", best(&ponte));
    let rand_qemu = best(&other);

    let (mut ponte, mut other) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS.min(2) {
        ponte.push(alloc_write(&alloc));
        if qemu {
            new_dynamic(&alloc, 3);
            other.extend(qemu_bench(
                &alloc,
                &["-d", "1", "-w", "--pattern=165"],
                SIZE / SEQ_BUF as u64,
                SEQ_BUF,
            ));
        }
    }
    line("vhd.alloc_write_dynamic", best(&ponte));
    let alloc_qemu = best(&other);

    warm(&child);
    let mut disk = open(&child, false);
    let runs: Vec<f64> = (0..ROUNDS).map(|_| rand_read(&mut disk)).collect();
    line("vhd.rand4k_read_diff", best(&runs));
    drop(disk);

    if qemu {
        line("qemu.seq_read_dynamic", seq_qemu);
        line("qemu.rand4k_read_dynamic", rand_qemu);
        line("qemu.alloc_write_dynamic", alloc_qemu);
    }
    for path in [&raw, &dynamic, &child, &alloc] {
        let _ = std::fs::remove_file(path);
    }
}
