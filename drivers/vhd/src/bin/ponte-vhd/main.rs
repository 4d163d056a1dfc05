//! `ponte-vhd`: create, inspect, check, convert, write, commit and compact
//! VHD images from the command line, through the `ponte-vhd` library and
//! its file backend.
//!
//! Every failure (bad arguments, unreadable or malformed images) ends with a
//! message on stderr and a non-zero exit status: 2 for usage errors, 1 for
//! everything else (including `check` finding problems).

mod args;
mod json;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use args::{parse_size, Args};
use ponte_vhd::create::{
    create_differencing, create_dynamic, create_fixed, CreateOptions, SizeMode,
};
use ponte_vhd::format::{vhd_timestamp_from_unix, DEFAULT_BLOCK_SIZE, SECTOR_SIZE};
use ponte_vhd::{
    check, DiskType, Error, FileDevice, FileResolver, Info, IoError, OpenOptions, ParentPaths,
    Uuid, VecStorage,
};

/// Longest chain of differencing images the tool opens.
const MAX_CHAIN: usize = 16;
/// Copy buffer of export, import, write, commit and compact.
const CHUNK: usize = 1 << 20;

type FileDisk = ponte_vhd::Disk<FileDevice, Vec<u32>, MAX_CHAIN>;

const USAGE: &str = "\
usage: ponte-vhd <command> [options]

commands:
  create --type fixed|dynamic --size <bytes> [--block-size <bytes>]
         [--size-mode chs|exact] OUT
  create --type differencing --parent PARENT [--block-size <bytes>] OUT
  info [--json] IMAGE
  check IMAGE
  export IMAGE OUT.raw
  import RAW OUT --type fixed|dynamic [--block-size <bytes>]
         [--size-mode chs|exact]
  write IMAGE --offset <bytes> INPUT
  commit CHILD
  compact IMAGE

Sizes are bytes, or a number with a K, M, G or T (binary) suffix.
--size-mode exact (default) keeps the size and records it for readers that
use the current size field; chs rounds the size down to the CHS geometry.";

/// A failure: the message and whether it is a usage error.
enum Failure {
    Usage(String),
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "create" => cmd_create(rest),
        "info" => cmd_info(rest),
        "check" => cmd_check(rest),
        "export" => cmd_export(rest),
        "import" => cmd_import(rest),
        "write" => cmd_write(rest),
        "commit" => cmd_commit(rest),
        "compact" => cmd_compact(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(usage(format!("unknown command {other:?}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("ponte-vhd {command}: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("ponte-vhd {command}: {message}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------
// Messages

/// A readable description of a library error.
fn describe(e: &Error) -> String {
    match e {
        Error::Io(IoError::Os { code }) => {
            format!("I/O error: {}", std::io::Error::from_raw_os_error(*code))
        }
        Error::Io(IoError::OutOfBounds {
            offset,
            len,
            device_len,
        }) => format!(
            "the file ends at {device_len} bytes, but {len} bytes at offset {offset} are needed"
        ),
        Error::Io(other) => format!("I/O error: {other:?}"),
        Error::Malformed(p) => format!("malformed image: {p:?}"),
        Error::ParentNotFound { uuid } => format!(
            "parent image {uuid} not found (looked for it through the parent locators and the \
             parent name, relative to the child's folder)"
        ),
        Error::OutOfRange { offset, len, size } => {
            format!("{len} bytes at offset {offset} do not fit in the virtual disk of {size} bytes")
        }
        Error::InvalidParameter {
            name: "size",
            value,
        } => format!(
            "invalid size {value}: a size is a non-zero multiple of 512 bytes, at most 2 TiB for \
             dynamic images"
        ),
        Error::InvalidParameter {
            name: "block_size",
            value,
        } => format!("invalid block size {value}: a power of two from 512 bytes to 256 MiB"),
        Error::InvalidParameter { name, value } => format!("invalid {name}: {value}"),
        other => format!("{other:?}"),
    }
}

fn at(path: &Path, e: &Error) -> String {
    format!("{}: {}", path.display(), describe(e))
}

fn io_at(path: &Path, e: &std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

// ---------------------------------------------------------------------------
// Opening

/// Opens the image at `path` with its parents, found relative to the
/// image's folder.
fn open_disk(path: &Path, writable: bool, writable_parents: bool) -> Result<FileDisk, String> {
    let dev = FileDevice::open(path, writable).map_err(|e| io_at(path, &e))?;
    let options = OpenOptions {
        writable,
        writable_parents,
        ..OpenOptions::default()
    };
    let mut resolver = FileResolver::for_child(path, writable_parents);
    FileDisk::open(dev, &options, &mut VecStorage, &mut resolver).map_err(|e| at(path, &e))
}

/// The path of every image of an opened chain, top first (parents where
/// the resolver found them).
fn chain_paths(top: &Path, disk: FileDisk) -> Vec<PathBuf> {
    disk.into_devices()
        .enumerate()
        .map(|(i, dev)| match (i, dev.path()) {
            (0, _) => top.to_path_buf(),
            (_, Some(path)) => path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
            (_, None) => PathBuf::from("?"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// create

fn random_uuid() -> Uuid {
    let mut b = [0u8; 16];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if random.is_err() {
        // No random source: derive one from the clock and the process.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut x = now as u64 ^ (u64::from(std::process::id()) << 32) | 1;
        for byte in b.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
    }
    // RFC 4122 version 4, variant 1.
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    Uuid(b)
}

fn now_vhd() -> u32 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    vhd_timestamp_from_unix(unix)
}

fn parse_type(text: Option<&str>) -> Result<DiskType, Failure> {
    match text {
        Some("fixed") => Ok(DiskType::Fixed),
        Some("dynamic") => Ok(DiskType::Dynamic),
        Some("differencing") => Ok(DiskType::Differencing),
        Some(other) => Err(usage(format!(
            "--type {other:?}: expected fixed, dynamic or differencing"
        ))),
        None => Err(usage("--type is required")),
    }
}

fn parse_size_mode(text: Option<&str>) -> Result<SizeMode, Failure> {
    match text {
        None | Some("exact") => Ok(SizeMode::CurrentSizeExact),
        Some("chs") => Ok(SizeMode::ChsExact),
        Some(other) => Err(usage(format!(
            "--size-mode {other:?}: expected chs or exact"
        ))),
    }
}

fn parse_block_size(args: &Args) -> Result<Option<u32>, Failure> {
    let Some(text) = args.option("block-size") else {
        return Ok(None);
    };
    let bytes = parse_size("block-size", text).map_err(usage)?;
    u32::try_from(bytes)
        .map(Some)
        .map_err(|_| usage(format!("--block-size {bytes}: larger than 4 GiB")))
}

/// A new, empty file for an image; an existing file is never replaced.
fn new_image_file(out: &Path) -> Result<FileDevice, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{}: already exists; remove it first", out.display())
            }
            _ => io_at(out, &e),
        })?;
    Ok(FileDevice::from_file(file, true).with_path(out))
}

/// Creates the image file for a new fixed or dynamic image.
fn create_plain(out: &Path, kind: DiskType, options: &CreateOptions) -> Result<(), String> {
    let mut dev = new_image_file(out)?;
    let made = match kind {
        DiskType::Fixed => create_fixed(&mut dev, options),
        _ => create_dynamic(&mut dev, options),
    };
    if let Err(e) = made {
        drop(dev);
        let _ = std::fs::remove_file(out);
        return Err(at(out, &e));
    }
    Ok(())
}

fn cmd_create(raw: &[String]) -> Result<(), Failure> {
    let args = Args::parse(
        raw,
        &["type", "size", "block-size", "size-mode", "parent"],
        &[],
    )
    .map_err(usage)?;
    let [out] = args.positionals(["OUT"]).map_err(usage)?;
    let out = Path::new(out);
    let kind = parse_type(args.option("type"))?;
    let block_size = parse_block_size(&args)?;
    if kind == DiskType::Differencing {
        for option in ["size", "size-mode"] {
            if args.option(option).is_some() {
                return Err(usage(format!(
                    "--{option} does not apply to differencing images (they take the parent's size)"
                )));
            }
        }
        let parent = args
            .option("parent")
            .ok_or_else(|| usage("--type differencing needs --parent"))?;
        return Ok(create_child(Path::new(parent), out, block_size)?);
    }
    if args.option("parent").is_some() {
        return Err(usage("--parent applies only to --type differencing"));
    }
    if kind == DiskType::Fixed && block_size.is_some() {
        return Err(usage("--block-size applies only to dynamic images"));
    }
    let size = parse_size(
        "size",
        args.option("size")
            .ok_or_else(|| usage("--size is required"))?,
    )
    .map_err(usage)?;
    let mut options = CreateOptions::new(size, random_uuid(), now_vhd());
    options.block_size = block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    options.size_mode = parse_size_mode(args.option("size-mode"))?;
    create_plain(out, kind, &options)?;
    let disk = open_disk(out, false, false)?;
    println!(
        "created {} ({} image, {} bytes)",
        out.display(),
        type_name(disk.info().disk_type),
        disk.size()
    );
    Ok(())
}

fn create_child(parent: &Path, out: &Path, block_size: Option<u32>) -> Result<(), String> {
    // The parent must open (with its own parents) before a child is made.
    let parent_disk = open_disk(parent, false, false)?;
    let parent_info = parent_disk.info();
    drop(parent_disk);
    let paths = ParentPaths::new(out, parent).map_err(|e| io_at(parent, &e))?;
    let link = paths.link();
    let block_size = block_size
        .or(parent_info.block_size)
        .unwrap_or(DEFAULT_BLOCK_SIZE);
    let mut parent_dev = FileDevice::open(parent, false).map_err(|e| io_at(parent, &e))?;
    let mut dev = new_image_file(out)?;
    let made = create_differencing(
        &mut dev,
        &mut parent_dev,
        &link,
        block_size,
        random_uuid(),
        now_vhd(),
    );
    drop(dev);
    if let Err(e) = made {
        let _ = std::fs::remove_file(out);
        return Err(at(out, &e));
    }
    let disk = open_disk(out, false, false)?;
    println!(
        "created {} (differencing image over {}, {} bytes)",
        out.display(),
        paths.relative,
        disk.size()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// info

fn type_name(t: DiskType) -> &'static str {
    match t {
        DiskType::Fixed => "fixed",
        DiskType::Dynamic => "dynamic",
        DiskType::Differencing => "differencing",
    }
}

fn four_cc(b: [u8; 4]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                char::from(c)
            } else {
                '.'
            }
        })
        .collect::<String>()
}

fn info_json(info: &Info, path: &Path, file_size: u64, depth: usize, chain: &[String]) -> String {
    let parent_name: String = info.parent_name_chars().collect();
    let mut o = json::Object::default();
    o.str("filename", &path.to_string_lossy())
        .str("type", type_name(info.disk_type))
        .num("virtual_size", info.virtual_size)
        .num("current_size", info.current_size)
        .num("original_size", info.original_size)
        .num("file_size", file_size)
        .raw(
            "geometry",
            format!(
                "{{\"cylinders\": {}, \"heads\": {}, \"sectors_per_track\": {}}}",
                info.geometry.cylinders, info.geometry.heads, info.geometry.sectors_per_track
            ),
        )
        .opt_num("block_size", info.block_size.map(u64::from))
        .opt_num("max_table_entries", info.max_table_entries.map(u64::from))
        .num("allocated_blocks", u64::from(info.allocated_blocks))
        .str("creator_app", &four_cc(info.creator_app))
        .str(
            "creator_version",
            &format!(
                "{}.{}",
                info.creator_version >> 16,
                info.creator_version & 0xFFFF
            ),
        )
        .str("creator_host_os", &four_cc(info.creator_host_os))
        .num("timestamp", u64::from(info.timestamp))
        .str("uuid", &info.uuid.to_string())
        .bool("saved_state", info.saved_state)
        .opt_str(
            "parent_uuid",
            info.parent_uuid.map(|u| u.to_string()).as_deref(),
        )
        .opt_num("parent_timestamp", info.parent_timestamp.map(u64::from))
        .opt_str(
            "parent_name",
            info.parent_uuid.map(|_| parent_name.as_str()),
        )
        .num("chain_depth", depth as u64)
        .raw("chain", json::array(chain, 2));
    o.render(0)
}

fn cmd_info(raw: &[String]) -> Result<(), Failure> {
    let args = Args::parse(raw, &[], &["json"]).map_err(usage)?;
    let [image] = args.positionals(["IMAGE"]).map_err(usage)?;
    let path = Path::new(image);
    let disk = open_disk(path, false, false)?;
    let infos: Vec<Info> = (0..disk.depth())
        .filter_map(|i| disk.layer_info(i))
        .collect();
    let depth = disk.depth();
    let info = disk.info();
    let paths = chain_paths(path, disk);
    let file_size = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| io_at(path, &e))?;
    if args.flag("json") {
        let chain: Vec<String> = infos
            .iter()
            .zip(&paths)
            .map(|(i, p)| {
                let mut o = json::Object::default();
                o.str("filename", &p.to_string_lossy())
                    .str("type", type_name(i.disk_type))
                    .str("uuid", &i.uuid.to_string());
                o.render_inline()
            })
            .collect();
        println!("{}", info_json(&info, path, file_size, depth, &chain));
        return Ok(());
    }
    println!("image: {}", path.display());
    println!("type: {}", type_name(info.disk_type));
    println!("virtual size: {} bytes", info.virtual_size);
    println!(
        "current size: {} bytes (original {})",
        info.current_size, info.original_size
    );
    println!("file size: {file_size} bytes");
    println!(
        "geometry: {}/{}/{} (C/H/S)",
        info.geometry.cylinders, info.geometry.heads, info.geometry.sectors_per_track
    );
    if let Some(bs) = info.block_size {
        println!("block size: {bs} bytes");
        println!(
            "allocated blocks: {} of {}",
            info.allocated_blocks,
            info.max_table_entries.unwrap_or(0)
        );
    }
    println!(
        "creator: {:?} version {}.{} on {:?}",
        four_cc(info.creator_app),
        info.creator_version >> 16,
        info.creator_version & 0xFFFF,
        four_cc(info.creator_host_os)
    );
    println!(
        "timestamp: {} (seconds since 2000-01-01 UTC)",
        info.timestamp
    );
    println!("uuid: {}", info.uuid);
    if info.saved_state {
        println!("saved state: yes");
    }
    if let Some(parent) = info.parent_uuid {
        let name: String = info.parent_name_chars().collect();
        println!("parent uuid: {parent}");
        println!("parent name: {name}");
        println!(
            "parent timestamp: {}",
            info.parent_timestamp.unwrap_or_default()
        );
    }
    println!("chain depth: {depth}");
    for (i, p) in paths.iter().enumerate().skip(1) {
        println!("  parent {i}: {}", p.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// check

/// Checks one image file; prints its problems and returns their number.
fn check_file(path: &Path) -> Result<usize, String> {
    let dev = FileDevice::open(path, false).map_err(|e| io_at(path, &e))?;
    let mut problems = 0;
    let summary = check(dev, &OpenOptions::default(), &mut VecStorage, &mut |p| {
        problems += 1;
        println!("{}: problem: {p:?}", path.display());
    })
    .map_err(|e| at(path, &e))?;
    if summary.leaked_bytes > 0 {
        println!(
            "{}: note: {} bytes unused by any block (reclaimed by compact)",
            path.display(),
            summary.leaked_bytes
        );
    }
    Ok(problems.max(summary.problems))
}

fn cmd_check(raw: &[String]) -> Result<(), Failure> {
    let args = Args::parse(raw, &[], &[]).map_err(usage)?;
    let [image] = args.positionals(["IMAGE"]).map_err(usage)?;
    let path = Path::new(image);
    let mut problems = check_file(path)?;
    if problems == 0 {
        // The image itself is sound: its parents must be found and sound.
        match open_disk(path, false, false) {
            Ok(disk) => {
                for parent in chain_paths(path, disk).iter().skip(1) {
                    problems += check_file(parent)?;
                }
            }
            Err(message) => {
                println!("{message}");
                problems += 1;
            }
        }
    }
    if problems == 0 {
        println!("{}: no problems found", path.display());
        Ok(())
    } else {
        Err(format!(
            "{}: {problems} problem{} found",
            path.display(),
            if problems == 1 { "" } else { "s" }
        )
        .into())
    }
}

// ---------------------------------------------------------------------------
// export, import, write

fn cmd_export(raw: &[String]) -> Result<(), Failure> {
    let args = Args::parse(raw, &[], &[]).map_err(usage)?;
    let [image, out] = args.positionals(["IMAGE", "OUT.raw"]).map_err(usage)?;
    let (path, out) = (Path::new(image), Path::new(out));
    let mut disk = open_disk(path, false, false)?;
    let size = disk.size();
    let file = File::create(out).map_err(|e| io_at(out, &e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let n = (size - pos).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..n];
        disk.read_at(pos, chunk).map_err(|e| at(path, &e))?;
        // Zeros stay holes of the output file.
        if chunk.iter().any(|&b| b != 0) {
            file.write_all_at(chunk, pos).map_err(|e| io_at(out, &e))?;
        }
        pos += n as u64;
    }
    file.set_len(size).map_err(|e| io_at(out, &e))?;
    file.sync_all().map_err(|e| io_at(out, &e))?;
    println!("exported {} bytes to {}", size, out.display());
    Ok(())
}

/// Copies `len` bytes of `input` into `disk` at `offset`, skipping chunks
/// of zeros when `skip_zeros` (they read as zeros already).
fn copy_into(
    disk: &mut FileDisk,
    image: &Path,
    input: &mut impl Read,
    input_path: &Path,
    offset: u64,
    len: u64,
    skip_zeros: bool,
) -> Result<(), String> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..n];
        input.read_exact(chunk).map_err(|e| io_at(input_path, &e))?;
        if !(skip_zeros && chunk.iter().all(|&b| b == 0)) {
            disk.write_at(offset + done, chunk)
                .map_err(|e| at(image, &e))?;
        }
        done += n as u64;
    }
    disk.flush().map_err(|e| at(image, &e))
}

fn cmd_import(raw: &[String]) -> Result<(), Failure> {
    let args = Args::parse(raw, &["type", "block-size", "size-mode"], &[]).map_err(usage)?;
    let [input, out] = args.positionals(["RAW", "OUT"]).map_err(usage)?;
    let (input, out) = (Path::new(input), Path::new(out));
    let kind = parse_type(args.option("type"))?;
    if kind == DiskType::Differencing {
        return Err(usage("import makes fixed or dynamic images"));
    }
    let block_size = parse_block_size(&args)?;
    if kind == DiskType::Fixed && block_size.is_some() {
        return Err(usage("--block-size applies only to dynamic images"));
    }
    let mut raw_file = File::open(input).map_err(|e| io_at(input, &e))?;
    let raw_len = raw_file.metadata().map_err(|e| io_at(input, &e))?.len();
    if raw_len == 0 {
        return Err(format!("{}: empty file", input.display()).into());
    }
    // A partial last sector is padded with zeros.
    let size = raw_len.next_multiple_of(SECTOR_SIZE);
    let mut options = CreateOptions::new(size, random_uuid(), now_vhd());
    options.block_size = block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    options.size_mode = parse_size_mode(args.option("size-mode"))?;
    if options.size_mode == SizeMode::ChsExact {
        let chs = ponte_vhd::Geometry::for_size(size).size();
        if chs < size {
            return Err(format!(
                "{}: {raw_len} bytes do not fit the CHS size {chs}; use --size-mode exact",
                input.display()
            )
            .into());
        }
    }
    create_plain(out, kind, &options)?;
    let mut disk = open_disk(out, true, false)?;
    copy_into(&mut disk, out, &mut raw_file, input, 0, raw_len, true)?;
    let info = disk.info();
    println!(
        "imported {} bytes into {} ({} image, {} blocks allocated)",
        raw_len,
        out.display(),
        type_name(info.disk_type),
        info.allocated_blocks
    );
    Ok(())
}

fn cmd_write(raw: &[String]) -> Result<(), Failure> {
    let args = Args::parse(raw, &["offset"], &[]).map_err(usage)?;
    let [image, input] = args.positionals(["IMAGE", "INPUT"]).map_err(usage)?;
    let (path, input) = (Path::new(image), Path::new(input));
    let offset = parse_size(
        "offset",
        args.option("offset")
            .ok_or_else(|| usage("--offset is required"))?,
    )
    .map_err(usage)?;
    let mut file = File::open(input).map_err(|e| io_at(input, &e))?;
    let len = file.metadata().map_err(|e| io_at(input, &e))?.len();
    let mut disk = open_disk(path, true, false)?;
    let size = disk.size();
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(format!(
            "{}: {len} bytes at offset {offset} do not fit in the virtual disk of {size} bytes",
            path.display()
        )
        .into());
    }
    copy_into(&mut disk, path, &mut file, input, offset, len, false)?;
    println!("wrote {len} bytes at offset {offset} of {}", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------
// commit, compact

fn cmd_commit(raw: &[String]) -> Result<(), Failure> {
    let args = Args::parse(raw, &[], &[]).map_err(usage)?;
    let [child] = args.positionals(["CHILD"]).map_err(usage)?;
    let path = Path::new(child);
    let mut disk = open_disk(path, false, true)?;
    if disk.info().disk_type != DiskType::Differencing {
        return Err(format!(
            "{}: a {} image has no parent to commit into",
            path.display(),
            type_name(disk.info().disk_type)
        )
        .into());
    }
    let mut scratch = vec![0u8; CHUNK];
    let stats = disk.commit(&mut scratch).map_err(|e| at(path, &e))?;
    disk.flush().map_err(|e| at(path, &e))?;
    let parent = chain_paths(path, disk)
        .get(1)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!(
        "committed {} sectors ({} bytes) of {} into {parent}",
        stats.sectors,
        stats.sectors * SECTOR_SIZE,
        path.display()
    );
    Ok(())
}

fn cmd_compact(raw: &[String]) -> Result<(), Failure> {
    let args = Args::parse(raw, &[], &[]).map_err(usage)?;
    let [image] = args.positionals(["IMAGE"]).map_err(usage)?;
    let path = Path::new(image);
    let mut disk = open_disk(path, true, false)?;
    if disk.info().disk_type == DiskType::Fixed {
        return Err(format!("{}: a fixed image cannot be compacted", path.display()).into());
    }
    let mut scratch = vec![0u8; CHUNK];
    let stats = disk.compact(&mut scratch).map_err(|e| at(path, &e))?;
    disk.flush().map_err(|e| at(path, &e))?;
    println!(
        "compacted {}: {} empty blocks freed, {} blocks moved, {} -> {} bytes",
        path.display(),
        stats.dropped_blocks,
        stats.moved_blocks,
        stats.old_len,
        stats.new_len
    );
    Ok(())
}
