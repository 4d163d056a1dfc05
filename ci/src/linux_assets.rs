//! The Linux guest's assets: Debian's stock kernel as an uncompressed
//! `vmlinux` for the PVH entry, an initramfs with busybox, the virtio
//! modules, `/init` (assembled here with the host's binutils) and the disk
//! test ([`guest`]), and the VHD disks it runs on.
//!
//! Everything derived from Debian's packages is kept in the target
//! directory, keyed by the package versions, and rebuilt only when missing;
//! the base image is deterministic (fixed UUID and timestamp), so a child
//! made over it stays valid when the base is prepared again.
//!
//! `cargo xtask linux-assets [--qemu]` prepares them and prints paths and
//! versions; `--qemu` also boots the guest twice in QEMU (TCG) over a raw
//! export of a fresh differencing child (QEMU ignores VHD parents).
//! For appliances that keep the child on an emulated IDE disk,
//! [`ata_disk_image`] puts it in a ponte-ata disk file, and
//! `--child-from-disk IMAGE OUT` copies it back out for inspection.

pub mod cpio;
pub mod guest;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use ponte_vhd::create::{create_differencing, create_dynamic, CreateOptions};
use ponte_vhd::{
    BlockDevice, Disk, FileDevice, FileResolver, NoParents, OpenOptions, ParentPaths, Uuid,
    VecStorage,
};

use crate::{run_quiet, target_dir};

/// The metapackage naming the current kernel package.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// Debian's statically linked busybox.
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Bumped when the initramfs or base image layout changes, so cached
/// assets of an older layout are not reused.
const LAYOUT_REVISION: u32 = 1;
/// The xz stream magic (`FD 37 7A 58 5A 00`).
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
/// VHD block size of the disks.
const BLOCK_SIZE: u32 = 2 << 20;

/// Prepared assets and where they came from.
#[derive(Clone, Debug)]
pub struct LinuxAssets {
    /// Kernel package name (e.g. `linux-image-6.1.0-56-amd64`).
    pub kernel_package: String,
    /// Its version.
    pub kernel_version: String,
    /// busybox-static's version.
    pub busybox_version: String,
    /// The uncompressed kernel ELF.
    pub vmlinux: PathBuf,
    /// Its PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub pvh_entry: u64,
    /// The uncompressed newc initramfs.
    pub initramfs: PathBuf,
    /// The dynamic base VHD holding the test layout.
    pub base_vhd: PathBuf,
}

/// One `prepare` at a time in this process (scenarios run in threads).
static PREPARING: Mutex<()> = Mutex::new(());

/// Prepares (or finds cached) the kernel, initramfs and base disk.
pub fn prepare() -> Result<LinuxAssets, String> {
    let _guard = PREPARING.lock().unwrap_or_else(|e| e.into_inner());
    let [depends] = <[String; 1]>::try_from(show_fields(&[KERNEL_METAPACKAGE], "Depends")?)
        .map_err(|_| "one Depends field".to_string())?;
    let kernel_package = kernel_in(&depends)?;
    let versions = show_fields(&[&kernel_package, BUSYBOX_PACKAGE], "Version")?;
    let [kernel_version, busybox_version] =
        <[String; 2]>::try_from(versions).map_err(|_| "two Version fields".to_string())?;
    let dir = target_dir().join("ponte/linux-assets").join(format!(
        "{kernel_package}_{kernel_version}+busybox_{}+layout{LAYOUT_REVISION}",
        busybox_version.replace(':', "%3a")
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let kernel_tree = unpacked(&dir, &kernel_package, &kernel_version, "kernel")?;
    let busybox_tree = unpacked(&dir, BUSYBOX_PACKAGE, &busybox_version, "busybox")?;
    let release = kernel_package
        .strip_prefix("linux-image-")
        .ok_or(format!("{kernel_package} is not a linux-image package"))?;

    let vmlinux = dir.join("vmlinux");
    if !vmlinux.is_file() {
        let vmlinuz = kernel_tree.join(format!("boot/vmlinuz-{release}"));
        extract_vmlinux(&vmlinuz, &vmlinux)?;
    }
    let pvh_entry = check_vmlinux(&vmlinux)?;

    let initramfs = dir.join("initramfs.cpio");
    let modules_dir = kernel_tree.join(format!("lib/modules/{release}"));
    let init = assemble_init(&dir)?;
    let archive = build_initramfs(&busybox_tree.join("bin/busybox"), &modules_dir, &init)?;
    write_if_changed(&initramfs, &archive)?;

    let base_vhd = dir.join("base.vhd");
    if !base_vhd.is_file() {
        let identity = format!("{kernel_package} {kernel_version} {busybox_version}");
        create_base(&base_vhd, &identity)?;
    }
    Ok(LinuxAssets {
        kernel_package,
        kernel_version,
        busybox_version,
        vmlinux,
        pvh_entry,
        initramfs,
        base_vhd,
    })
}

/// `apt-cache`/`apt-get` output, updating the package lists once (as root)
/// if the first attempt fails.
fn apt(program: &str, args: &[&str], dir: Option<&Path>) -> Result<String, String> {
    let attempt = || {
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command.output()
    };
    let describe = format!("{program} {}", args.join(" "));
    let output = attempt().map_err(|e| format!("cannot run {describe}: {e}"))?;
    let succeeded = |o: &std::process::Output| {
        o.status.success() && (program == "apt-get" || !o.stdout.is_empty())
    };
    if succeeded(&output) {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let first_error = String::from_utf8_lossy(&output.stderr).into_owned();
    if !crate::packages::is_root() {
        return Err(format!(
            "{describe} failed ({first_error}); the package lists may be missing: run `sudo apt-get update` and retry"
        ));
    }
    eprintln!("{describe} failed; running apt-get update");
    crate::run_quiet(Command::new("apt-get").args(["update", "-q"]))?;
    let output = attempt().map_err(|e| format!("cannot run {describe}: {e}"))?;
    if succeeded(&output) {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{describe} failed after apt-get update: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `field` of each package's candidate in one `apt-cache show` (a call
/// takes seconds on a loaded machine).
fn show_fields(packages: &[&str], field: &str) -> Result<Vec<String>, String> {
    let mut args = vec!["show", "--no-all-versions"];
    args.extend_from_slice(packages);
    let text = apt("apt-cache", &args, None)?;
    packages
        .iter()
        .map(|package| {
            field_of(&text, package, field)
                .ok_or(format!("apt-cache show {package} has no {field}"))
        })
        .collect()
}

/// `field` in the paragraph of `package` in `apt-cache show` output.
fn field_of(text: &str, package: &str, field: &str) -> Option<String> {
    let value_in = |paragraph: &str, name: &str| {
        paragraph
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .map(str::to_string)
    };
    text.split("\n\n")
        .find(|p| value_in(p, "Package").as_deref() == Some(package))
        .and_then(|p| value_in(p, field))
}

/// The kernel package a `Depends:` field of the metapackage names.
fn kernel_in(depends: &str) -> Result<String, String> {
    depends
        .split(',')
        .map(|d| d.trim().split(' ').next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64"))
        .map(str::to_string)
        .ok_or(format!(
            "{KERNEL_METAPACKAGE} depends on no kernel: {depends}"
        ))
}

/// Downloads `package` at `version` into `dir` and unpacks it into
/// `dir/name`, unless done before.
fn unpacked(dir: &Path, package: &str, version: &str, name: &str) -> Result<PathBuf, String> {
    let tree = dir.join(name);
    let done = dir.join(format!("{name}.unpacked"));
    if done.is_file() {
        return Ok(tree);
    }
    let deb = dir.join(format!("{name}.deb"));
    if !deb.is_file() {
        let downloads = dir.join("download");
        let _ = fs::remove_dir_all(&downloads);
        fs::create_dir_all(&downloads).map_err(|e| e.to_string())?;
        let spec = format!("{package}={version}");
        eprintln!("downloading {spec}");
        apt("apt-get", &["download", "-q", &spec], Some(&downloads))?;
        let file = fs::read_dir(&downloads)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or(format!("apt-get download {spec} left no .deb"))?;
        fs::rename(&file, &deb).map_err(|e| e.to_string())?;
    }
    let _ = fs::remove_dir_all(&tree);
    run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    fs::write(&done, format!("{package} {version}\n")).map_err(|e| e.to_string())?;
    Ok(tree)
}

/// Where the compressed kernel starts in a bzImage: the setup header's
/// `payload_offset` (0x248) counts from the protected-mode code, which
/// follows `setup_sects` (0x1f1, 0 meaning 4) sectors and the boot sector.
/// Falls back to the first xz magic if the header does not point at one.
pub fn xz_payload_offset(bzimage: &[u8]) -> Option<usize> {
    let header_says = || {
        if bzimage.get(0x202..0x206)? != b"HdrS" {
            return None;
        }
        let setup_sects = match *bzimage.get(0x1f1)? {
            0 => 4,
            n => usize::from(n),
        };
        let offset = u32::from_le_bytes(bzimage.get(0x248..0x24c)?.try_into().ok()?);
        let at = (setup_sects + 1) * 512 + usize::try_from(offset).ok()?;
        (bzimage.get(at..at + 6)? == XZ_MAGIC).then_some(at)
    };
    header_says().or_else(|| bzimage.windows(6).position(|w| w == XZ_MAGIC))
}

/// Decompresses the xz payload of `vmlinuz` into `out` with `xz`.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<(), String> {
    let image = fs::read(vmlinuz).map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
    let at = xz_payload_offset(&image).ok_or(format!("{}: no xz payload", vmlinuz.display()))?;
    let payload = out.with_extension("xz");
    fs::write(&payload, &image[at..]).map_err(|e| e.to_string())?;
    let partial = out.with_extension("partial");
    let file = fs::File::create(&partial).map_err(|e| e.to_string())?;
    // The payload is followed by the bzImage's trailer: one stream only.
    let status = Command::new("xz")
        .args(["--decompress", "--stdout", "--single-stream"])
        .arg(&payload)
        .stdout(file)
        .status()
        .map_err(|e| format!("cannot run xz: {e}"))?;
    let _ = fs::remove_file(&payload);
    if !status.success() {
        return Err(format!("xz failed on the payload of {}", vmlinuz.display()));
    }
    fs::rename(&partial, out).map_err(|e| e.to_string())
}

/// Checks that `vmlinux` is an ELF the PVH loader accepts and returns its
/// entry, as found by the loader itself.
pub fn check_vmlinux(vmlinux: &Path) -> Result<u64, String> {
    let bytes = fs::read(vmlinux).map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    pvh_entry(&bytes).map_err(|e| format!("{}: {e}", vmlinux.display()))
}

/// The PVH entry of an ELF kernel image (note `XEN_ELFNOTE_PHYS32_ENTRY`,
/// type 18, name "Xen").
pub fn pvh_entry(elf: &[u8]) -> Result<u64, String> {
    ponte_kernel::loader::linux::pvh::find_entry(elf).map_err(|e| format!("{e}"))
}

/// The `depends=` list in a module's `.modinfo` strings.
fn module_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a module of the kernel tree by name, decompressing `.ko.xz`.
fn read_module(modules_dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    let order = fs::read_to_string(modules_dir.join("modules.order"))
        .map_err(|e| format!("{}/modules.order: {e}", modules_dir.display()))?;
    let relative = order
        .lines()
        .find(|l| {
            let file = l.rsplit('/').next().unwrap_or(l);
            let stem = file.trim_end_matches(".xz").trim_end_matches(".ko");
            stem.replace('-', "_") == name
        })
        .ok_or(format!("{name} is not in modules.order"))?;
    // modules.order names `.ko`; the package may ship `.ko.xz`.
    let plain = modules_dir.join(relative.trim_end_matches(".xz"));
    if plain.is_file() {
        return fs::read(&plain).map_err(|e| format!("{}: {e}", plain.display()));
    }
    let compressed = modules_dir.join(format!("{}.xz", relative.trim_end_matches(".xz")));
    let output = Command::new("xz")
        .args(["--decompress", "--stdout"])
        .arg(&compressed)
        .output()
        .map_err(|e| format!("cannot run xz: {e}"))?;
    if !output.status.success() {
        return Err(format!("xz failed on {}", compressed.display()));
    }
    Ok(output.stdout)
}

/// Assembles and links `/init` ([`guest::INIT_SOURCE`]) in `dir` with the
/// host's binutils: a static x86-64 executable, stripped, without a build
/// id, so the same source gives the same bytes.
pub fn assemble_init(dir: &Path) -> Result<Vec<u8>, String> {
    let source = dir.join("init.S");
    let object = dir.join("init.o");
    let program = dir.join("init");
    fs::write(&source, guest::INIT_SOURCE).map_err(|e| format!("{}: {e}", source.display()))?;
    run_quiet(
        Command::new("as")
            .arg("--64")
            .arg("-o")
            .arg(&object)
            .arg(&source),
    )?;
    run_quiet(
        Command::new("ld")
            .args(["-m", "elf_x86_64", "-static", "--build-id=none", "-s"])
            .arg("-o")
            .arg(&program)
            .arg(&object),
    )?;
    fs::read(&program).map_err(|e| format!("{}: {e}", program.display()))
}

/// The initramfs: busybox and its applet links, device nodes, the virtio
/// modules (checked to be listed after their dependencies), `/init` (the
/// program `init`), the scripts and the payload.
fn build_initramfs(busybox: &Path, modules_dir: &Path, init: &[u8]) -> Result<Vec<u8>, String> {
    let mut archive = cpio::CpioWriter::new();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        archive.directory(dir, 0o755);
    }
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.char_device("dev/null", 0o666, 1, 3);
    let busybox_bytes = fs::read(busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    archive.file("bin/busybox", 0o755, &busybox_bytes);
    for applet in guest::APPLETS {
        archive.symlink(&format!("bin/{applet}"), "busybox");
    }
    for (index, name) in guest::MODULES.iter().enumerate() {
        let module = read_module(modules_dir, name)?;
        for dependency in module_depends(&module) {
            if !guest::MODULES[..index].contains(&dependency.as_str()) {
                return Err(format!(
                    "{name} depends on {dependency}, which is not loaded before it"
                ));
            }
        }
        archive.file(&format!("lib/modules/{name}.ko"), 0o644, &module);
    }
    archive.file("init", 0o755, init);
    archive.file("init.sh", 0o755, guest::init_script().as_bytes());
    archive.file("disk-check", 0o755, guest::disk_check_script().as_bytes());
    archive.file("payload", 0o644, &guest::payload());
    Ok(archive.finish())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let partial = path.with_extension("partial");
    fs::write(&partial, bytes).map_err(|e| format!("{}: {e}", partial.display()))?;
    fs::rename(&partial, path).map_err(|e| e.to_string())
}

/// A UUID derived from `text` (FNV-1a), so equal inputs give equal images.
fn uuid_from(text: &str) -> Uuid {
    let mut bytes = [0u8; 16];
    for (half, seed) in [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4]
        .iter()
        .enumerate()
    {
        let mut hash = *seed;
        for b in text.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x100_0000_01b3);
        }
        bytes[half * 8..half * 8 + 8].copy_from_slice(&hash.to_be_bytes());
    }
    // Version 4 layout bits, as random UUIDs carry.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(bytes)
}

type FileDisk = Disk<FileDevice, Vec<u32>, 2>;

/// Writes the base image: a dynamic VHD holding [`guest::base_writes`].
fn create_base(path: &Path, identity: &str) -> Result<(), String> {
    let partial = path.with_extension("partial");
    let _ = fs::remove_file(&partial);
    let err = |e: ponte_vhd::Error| format!("{}: {e}", partial.display());
    let mut dev =
        FileDevice::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut options = CreateOptions::new(guest::DISK_SIZE, uuid_from(identity), 0);
    options.block_size = BLOCK_SIZE;
    create_dynamic(&mut dev, &options).map_err(err)?;
    let writable = OpenOptions {
        writable: true,
        ..OpenOptions::default()
    };
    let mut disk: FileDisk =
        Disk::open(dev, &writable, &mut VecStorage, &mut NoParents).map_err(err)?;
    for (offset, bytes) in guest::base_writes() {
        disk.write_at(offset, &bytes).map_err(err)?;
    }
    disk.flush().map_err(err)?;
    drop(disk);
    fs::rename(&partial, path).map_err(|e| e.to_string())
}

/// Creates a fresh differencing image over `base` at `child` (replacing
/// it), the parent located by absolute and relative path.
pub fn fresh_child(base: &Path, child: &Path) -> Result<(), String> {
    let _ = fs::remove_file(child);
    let paths = ParentPaths::new(child, base).map_err(|e| format!("{}: {e}", base.display()))?;
    let link = paths.link();
    let mut parent = FileDevice::open(base, false).map_err(|e| e.to_string())?;
    let mut dev = FileDevice::create(child).map_err(|e| format!("{}: {e}", child.display()))?;
    let uuid = uuid_from(&format!("{} {:?}", child.display(), Instant::now()));
    create_differencing(&mut dev, &mut parent, &link, BLOCK_SIZE, uuid, 0)
        .map_err(|e| format!("{}: {e}", child.display()))?;
    dev.flush()
        .map_err(|e| format!("{}: {e:?}", child.display()))?;
    Ok(())
}

/// Opens an image with its parents, found next to it.
fn open_chain(path: &Path, writable: bool) -> Result<FileDisk, String> {
    let dev = FileDevice::open(path, writable).map_err(|e| format!("{}: {e}", path.display()))?;
    let options = OpenOptions {
        writable,
        ..OpenOptions::default()
    };
    let mut resolver = FileResolver::for_child(path, false);
    Disk::open(dev, &options, &mut VecStorage, &mut resolver)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes what the guest sees of the image chain at `image` to a raw file.
pub fn export_raw(image: &Path, raw: &Path) -> Result<(), String> {
    let mut disk = open_chain(image, false)?;
    let mut bytes = vec![0u8; usize::try_from(disk.size()).map_err(|e| e.to_string())?];
    disk.read_at(0, &mut bytes)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    fs::write(raw, bytes).map_err(|e| format!("{}: {e}", raw.display()))
}

/// Bytes per cylinder of the geometry Bochs autodetects (16 heads, 63
/// sectors per track): disk images are made a multiple of it.
const CYLINDER_BYTES: u64 = 16 * 63 * 512;

/// Makes `image`, a raw hard-disk image for an appliance, holding `vhd` as
/// a [`ponte_ata::disk_file::DiskFile`] at offset 0 with room for the file
/// to grow to at least `capacity` bytes. The size is a whole number of
/// 16-head, 63-sector cylinders, so Bochs takes the file as it is.
pub fn ata_disk_image(vhd: &Path, image: &Path, capacity: u64) -> Result<(), String> {
    use ponte_ata::disk_file::{DiskFile, HEADER_SIZE};
    let bytes = fs::read(vhd).map_err(|e| format!("{}: {e}", vhd.display()))?;
    let wanted = capacity.max(bytes.len() as u64) + HEADER_SIZE;
    let total = wanted.div_ceil(CYLINDER_BYTES) * CYLINDER_BYTES;
    let _ = fs::remove_file(image);
    let dev = FileDevice::create(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let err = |e: String| format!("{}: {e}", image.display());
    let mut file = DiskFile::format(dev, 0, total).map_err(|e| err(format!("{e:?}")))?;
    file.write_at(0, &bytes)
        .map_err(|e| err(format!("{e:?}")))?;
    file.flush().map_err(|e| err(format!("{e:?}")))?;
    let mut dev = file.into_inner();
    dev.set_len(total).map_err(|e| err(format!("{e:?}")))?;
    dev.flush().map_err(|e| err(format!("{e:?}")))
}

/// Copies the file kept in a disk image made by [`ata_disk_image`] (as the
/// guest left it) to `out`.
pub fn file_from_disk_image(image: &Path, out: &Path) -> Result<(), String> {
    use ponte_ata::disk_file::DiskFile;
    let dev = FileDevice::open(image, false).map_err(|e| format!("{}: {e}", image.display()))?;
    let total = fs::metadata(image).map_err(|e| e.to_string())?.len();
    let err = |e: String| format!("{}: {e}", image.display());
    let mut file = DiskFile::open(dev, 0, total).map_err(|e| err(format!("{e:?}")))?;
    let len = file.len().map_err(|e| err(format!("{e:?}")))?;
    let mut bytes = vec![0u8; usize::try_from(len).map_err(|e| e.to_string())?];
    file.read_at(0, &mut bytes)
        .map_err(|e| err(format!("{e:?}")))?;
    fs::write(out, bytes).map_err(|e| format!("{}: {e}", out.display()))
}

/// The kernel command line the guest boots with.
pub const COMMAND_LINE: &str = "console=ttyS0,115200 rdinit=/init panic=-1";

/// `cargo xtask linux-assets [--qemu]`.
pub fn command(args: &[String]) -> Result<(), String> {
    let qemu = match args {
        [] => false,
        [flag] if flag == "--qemu" => true,
        [flag, image, out] if flag == "--child-from-disk" => {
            file_from_disk_image(Path::new(image), Path::new(out))?;
            println!("{out}: the file kept in {image}");
            return Ok(());
        }
        _ => {
            return Err(
                "usage: cargo xtask linux-assets [--qemu | --child-from-disk IMAGE OUT]".into(),
            )
        }
    };
    let started = Instant::now();
    let assets = prepare()?;
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "kernel package {} {}",
        assets.kernel_package, assets.kernel_version
    );
    println!("busybox-static {}", assets.busybox_version);
    println!(
        "vmlinux {} ({} bytes, PVH entry {:#x})",
        assets.vmlinux.display(),
        size(&assets.vmlinux),
        assets.pvh_entry
    );
    println!(
        "initramfs {} ({} bytes)",
        assets.initramfs.display(),
        size(&assets.initramfs)
    );
    println!(
        "base {} ({} bytes, virtual {} bytes)",
        assets.base_vhd.display(),
        size(&assets.base_vhd),
        guest::DISK_SIZE
    );
    let dir = crate::work_dir("linux-assets")?;
    let child = dir.join("child.vhd");
    fresh_child(&assets.base_vhd, &child)?;
    println!("child {} ({} bytes)", child.display(), size(&child));
    let disk = dir.join("ata-disk.img");
    ata_disk_image(&child, &disk, 64 << 20)?;
    println!(
        "ata disk {} ({} bytes: the child in a disk file, room for 64 MiB)",
        disk.display(),
        size(&disk)
    );
    println!("command line {COMMAND_LINE}");
    println!("prepared in {:.1} s", started.elapsed().as_secs_f64());
    if qemu {
        qemu_check(&assets, &child, &dir)?;
    }
    Ok(())
}

/// Boots the guest twice in QEMU over a raw export of `child`, expecting
/// generations 0 and 1.
fn qemu_check(assets: &LinuxAssets, child: &Path, dir: &Path) -> Result<(), String> {
    let raw = dir.join("child.raw");
    export_raw(child, &raw)?;
    for generation in 0..2 {
        let serial = dir.join(format!("qemu-boot{generation}.txt"));
        let mut command = Command::new("qemu-system-x86_64");
        command
            .arg("-kernel")
            .arg(&assets.vmlinux)
            .arg("-initrd")
            .arg(&assets.initramfs)
            .args(["-append", COMMAND_LINE])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", raw.display()))
            .args([
                "-m",
                "256",
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()));
        let run = crate::emulator::supervise(
            &mut command,
            "qemu",
            &serial,
            &dir.join(format!("qemu-boot{generation}.out")),
            Duration::from_secs(120),
            false,
        )?;
        let progress: Vec<&str> = run
            .console
            .lines()
            .filter(|l| l.contains(guest::MARKER))
            .collect();
        for line in &progress {
            println!("  {}", line.trim_end());
        }
        let pass = guest::pass_line(generation);
        if !run.console.contains(&pass) {
            return Err(format!(
                "QEMU boot {generation}: no `{pass}` (console in {})",
                serial.display()
            ));
        }
        println!(
            "qemu boot {generation}: passed in {:.1} s",
            run.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 executable with one PT_NOTE segment holding `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little-endian
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        f[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        f[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f.extend_from_slice(notes);
        f
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn the_pvh_note_is_found_after_other_notes() {
        // Debian's vmlinux: a GNU build id, then Xen notes, the entry as 8 bytes.
        let mut notes = note(b"GNU\0", 3, &[0xab; 20]);
        notes.extend(note(b"Xen\0", 6, b"linux\0"));
        notes.extend(note(b"Xen\0", 18, &0x100_0850u64.to_le_bytes()));
        assert_eq!(pvh_entry(&elf_with_notes(&notes)), Ok(0x100_0850));
    }

    #[test]
    fn a_kernel_without_the_note_or_with_it_under_another_name_is_refused() {
        let gnu = note(b"GNU\0", 18, &0x100_0850u32.to_le_bytes());
        assert!(pvh_entry(&elf_with_notes(&gnu)).is_err());
        let other_type = note(b"Xen\0", 17, &0x100_0850u32.to_le_bytes());
        assert!(pvh_entry(&elf_with_notes(&other_type)).is_err());
        assert!(pvh_entry(b"MZ not an ELF").is_err());
    }

    /// The start of a bzImage: boot sector and setup, header fields only.
    fn bzimage(setup_sects: u8, payload_offset: u32, payload_at: usize) -> Vec<u8> {
        let mut f = vec![0u8; payload_at + 64];
        f[0x1f1] = setup_sects;
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
        f[payload_at..payload_at + 6].copy_from_slice(&XZ_MAGIC);
        f
    }

    #[test]
    fn the_payload_is_where_the_setup_header_points() {
        // 27 setup sectors + the boot sector = 0x3800; payload 0x3ac past it.
        let mut f = bzimage(27, 0x3ac, 0x3800 + 0x3ac);
        // An earlier, stray magic is not taken when the header is right.
        f[0x400..0x406].copy_from_slice(&XZ_MAGIC);
        assert_eq!(xz_payload_offset(&f), Some(0x3800 + 0x3ac));
        // setup_sects 0 means 4.
        assert_eq!(
            xz_payload_offset(&bzimage(0, 0x10, 5 * 512 + 0x10)),
            Some(5 * 512 + 0x10)
        );
        // A header that misses the stream falls back to the scan.
        assert_eq!(xz_payload_offset(&bzimage(27, 0x10, 0x5000)), Some(0x5000));
        assert_eq!(xz_payload_offset(&[0u8; 1024]), None);
    }

    #[test]
    fn versions_and_the_kernel_come_from_each_packages_paragraph() {
        let text = "Package: linux-image-6.1.0-56-amd64\nSource: linux-signed-amd64 (6.1.192+2)\n\
                    Version: 6.1.192-2\nDepends: kmod\n\n\
                    Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\n\n";
        assert_eq!(
            field_of(text, "busybox-static", "Version").as_deref(),
            Some("1:1.35.0-4+deb12u1+b1")
        );
        assert_eq!(
            field_of(text, "linux-image-6.1.0-56-amd64", "Version").as_deref(),
            Some("6.1.192-2")
        );
        assert_eq!(field_of(text, "busybox", "Version"), None);
        assert_eq!(
            kernel_in("linux-image-6.1.0-56-amd64 (= 6.1.192-2), linux-base").as_deref(),
            Ok("linux-image-6.1.0-56-amd64")
        );
        assert!(kernel_in("linux-base").is_err());
    }

    #[test]
    fn module_dependencies_come_from_modinfo_strings() {
        let ko = b"\x7fELF...\0license=GPL\0depends=virtio_ring,virtio\0name=virtio_blk\0";
        assert_eq!(module_depends(ko), ["virtio_ring", "virtio"]);
        assert!(module_depends(b"\0depends=\0name=virtio_ring\0").is_empty());
    }

    #[test]
    fn the_base_image_holds_the_layout_and_a_child_reads_through_it() {
        let dir = std::env::temp_dir().join(format!("ponte-linux-base-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let base = dir.join("base.vhd");
        create_base(&base, "test").unwrap();
        let first = fs::read(&base).unwrap();
        // Deterministic: the same identity gives the same bytes.
        fs::remove_file(&base).unwrap();
        create_base(&base, "test").unwrap();
        assert_eq!(fs::read(&base).unwrap(), first);

        fs::create_dir_all(dir.join("run")).unwrap();
        let child = dir.join("run/child.vhd");
        fresh_child(&base, &child).unwrap();
        let raw = dir.join("child.raw");
        export_raw(&child, &raw).unwrap();
        let bytes = fs::read(&raw).unwrap();
        assert_eq!(bytes.len() as u64, guest::DISK_SIZE);
        for (offset, data) in guest::base_writes() {
            assert_eq!(
                &bytes[offset as usize..offset as usize + data.len()],
                &data[..]
            );
        }
        // A write through the child stays out of the base.
        let mut disk = open_chain(&child, true).unwrap();
        disk.write_at(guest::GENERATION_SECTOR * 512, b"PONTE-GEN 1\n")
            .unwrap();
        disk.flush().unwrap();
        drop(disk);
        assert_eq!(fs::read(&base).unwrap(), first);
        let mut disk = open_chain(&child, false).unwrap();
        let mut sector = [0u8; 12];
        disk.read_at(guest::GENERATION_SECTOR * 512, &mut sector)
            .unwrap();
        assert_eq!(&sector, b"PONTE-GEN 1\n");
        // On an ATA disk image: the file comes back byte for byte, and the
        // image is whole Bochs cylinders.
        let image = dir.join("ata.img");
        ata_disk_image(&child, &image, 8 << 20).unwrap();
        let image_len = fs::metadata(&image).unwrap().len();
        assert_eq!(image_len % CYLINDER_BYTES, 0);
        assert!(image_len >= (8 << 20) + 512);
        let back = dir.join("child-back.vhd");
        file_from_disk_image(&image, &back).unwrap();
        assert_eq!(fs::read(&back).unwrap(), fs::read(&child).unwrap());
        let _ = fs::remove_dir_all(dir);
    }
}
