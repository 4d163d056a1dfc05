//! `cargo xtask run-kernel`: boots a test kernel written for
//! `qemu-system-x86_64 -kernel X -append ARGS -initrd F` and exits with the
//! status QEMU gives for it, streaming the kernel's COM1 output meanwhile.
//!
//! The status is the same whichever emulator runs the kernel:
//! `(N << 1) | 1` when the kernel wrote N to isa-debug-exit (port 0xf4), 0
//! when it stopped without writing there (QEMU's `-no-reboot` ends the run on
//! a reset or triple fault), [`TIMEOUT_STATUS`] when it ran past the timeout.
//! The runner itself failing gives [`RUNNER_ERROR_STATUS`].
//!
//! `--emulator qemu` is the reference. `--emulator ponte` (the default) boots
//! the `testkernel` appliance in Bochs with the kernel as its first Multiboot2
//! module (ARGS on the module's command line after the kernel's name) and
//! the initrd as the second; the appliance runs the kernel on QEMU's PC test
//! profile, prints its COM1 output and then [`GUEST_EXIT_MARKER`] with the
//! status QEMU would have given.

use std::{
    env, fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus},
    time::Duration,
};

use crate::{emulator, image, image::Module, packages, work_dir};

/// Status when the kernel ran past the timeout (as `timeout(1)` reports it).
pub const TIMEOUT_STATUS: i32 = 124;
/// Status when the runner could not run the kernel at all.
pub const RUNNER_ERROR_STATUS: u8 = 125;
/// The line the test-kernel appliance prints when the guest ended, followed
/// by ` status N`.
pub const GUEST_EXIT_MARKER: &str = "PONTE-GUEST-EXIT:";
/// The appliance that runs test kernels under ponte.
pub const APPLIANCE: &str = "testkernel";
/// Bochs RAM beyond the guest's: the appliance's image, page tables, EPT
/// tables and device buffers.
const APPLIANCE_OVERHEAD_MIB: u32 = 64;

/// What runs the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelEmulator {
    /// QEMU, the reference: `-kernel`, or GRUB for Multiboot2 kernels.
    Qemu,
    /// ponte's test-kernel appliance (`examples/testkernel`) in Bochs.
    Ponte,
}

impl KernelEmulator {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Ponte => "ponte",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "qemu" => Ok(Self::Qemu),
            "ponte" => Ok(Self::Ponte),
            other => Err(format!("unknown emulator {other:?} (qemu or ponte)")),
        }
    }
}

/// One run of a kernel.
#[derive(Clone, Debug)]
pub struct KernelRun {
    /// The kernel image (ELF, Multiboot or whatever QEMU's `-kernel` takes).
    pub kernel: PathBuf,
    /// Its command line (`-append`).
    pub append: String,
    /// A file passed as `-initrd` (a Multiboot module for Multiboot kernels).
    pub initrd: Option<PathBuf>,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// What runs the kernel.
    pub emulator: KernelEmulator,
    /// Bochs CPU model, for `--emulator ponte`.
    pub cpu: String,
    /// How long the kernel may run.
    pub timeout: Duration,
}

/// What a kernel run produced.
#[derive(Clone, Debug)]
pub struct KernelReport {
    /// The status, as described in the module documentation.
    pub status: i32,
    /// Everything the kernel wrote to COM1.
    pub console: String,
    /// Wall-clock duration.
    pub elapsed: Duration,
}

/// How QEMU is made to boot a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuBoot {
    /// `-kernel` (Multiboot v1, Linux, PVH ELF: QEMU's loaders).
    KernelOption,
    /// A GRUB ISO with `multiboot2`: the kernel has a Multiboot2 header and
    /// no Multiboot v1 one, and QEMU 7.2's `-kernel` has no Multiboot2 loader.
    GrubIso,
}

/// Reads a little-endian u32 at `offset`, if the image is that long.
fn le32(image: &[u8], offset: usize) -> Option<u32> {
    let bytes = image.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Whether a Multiboot header with a valid checksum starts at `offset`: magic,
/// then two words (v1: flags, checksum; v2: architecture, length) and, for
/// v2, the checksum, all summing to zero.
fn header_at(image: &[u8], offset: usize, magic: u32, words: usize) -> bool {
    le32(image, offset) == Some(magic)
        && (0..words)
            .map(|i| le32(image, offset + 4 * i))
            .try_fold(0u32, |sum, word| Some(sum.wrapping_add(word?)))
            == Some(0)
}

/// How QEMU boots `image`: see [`QemuBoot`]. The Multiboot v1 header is
/// searched as the specification places it (4-byte aligned, first 8 KiB),
/// the Multiboot2 one likewise (8-byte aligned, first 32 KiB).
pub fn qemu_boot_method(image: &[u8]) -> QemuBoot {
    let multiboot1 = (0..8192)
        .step_by(4)
        .any(|offset| header_at(image, offset, 0x1BAD_B002, 3));
    let multiboot2 = (0..32768)
        .step_by(8)
        .any(|offset| header_at(image, offset, 0xE852_50D6, 4));
    if multiboot2 && !multiboot1 {
        QemuBoot::GrubIso
    } else {
        QemuBoot::KernelOption
    }
}

/// The status of a QEMU process that ended with `exit` (`None`: stopped by
/// the timeout). QEMU's own status already is the kernel's.
pub fn qemu_status(exit: Option<ExitStatus>) -> i32 {
    match exit {
        None => TIMEOUT_STATUS,
        Some(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    }
}

/// What `status` says about the kernel.
pub fn describe_status(status: i32) -> String {
    match status {
        0 => "the kernel stopped without writing to isa-debug-exit".into(),
        1 => "the kernel wrote 0x00 to isa-debug-exit, or QEMU itself failed".into(),
        TIMEOUT_STATUS => "the kernel ran past the timeout".into(),
        s if s > 0 && s < 512 && s % 2 == 1 => {
            format!("the kernel wrote {:#04x} to isa-debug-exit", s >> 1)
        }
        s => format!("the emulator failed (status {s})"),
    }
}

/// Runs `run`, keeping logs in `dir`; with `stream`, the kernel's console is
/// copied to standard output as it arrives.
pub fn run(run: &KernelRun, dir: &Path, stream: bool) -> Result<KernelReport, String> {
    match run.emulator {
        KernelEmulator::Qemu => run_qemu(run, dir, stream),
        KernelEmulator::Ponte => run_ponte(run, dir, stream),
    }
}

/// The status in the appliance's [`GUEST_EXIT_MARKER`] line, if it printed
/// one.
pub fn guest_exit_status(console: &str) -> Option<i32> {
    console.lines().find_map(|line| {
        let rest = line.split_once(GUEST_EXIT_MARKER)?.1.trim();
        rest.strip_prefix("status")?.trim().parse().ok()
    })
}

/// The status of a ponte run: the guest's, [`TIMEOUT_STATUS`] when Bochs ran
/// past the timeout, an error when the appliance could not run the guest,
/// and 0 when it stopped without saying (as QEMU does when the machine
/// stops without an isa-debug-exit write).
pub fn ponte_status(report: &emulator::RunReport) -> Result<i32, String> {
    if report.timed_out {
        return Ok(TIMEOUT_STATUS);
    }
    if let Some(status) = guest_exit_status(&report.console) {
        return Ok(status);
    }
    match &report.result {
        Some((emulator::Verdict::Fail, reason)) => {
            Err(format!("the test-kernel appliance failed: {reason}"))
        }
        _ => Ok(0),
    }
}

/// The modules of a ponte run: the kernel, named by its file name and
/// followed by its arguments, then the initrd under its file name.
pub fn ponte_modules(run: &KernelRun) -> Vec<Module> {
    let file_name = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kernel".into())
    };
    let mut kernel_line = file_name(&run.kernel);
    if !run.append.trim().is_empty() {
        kernel_line.push(' ');
        kernel_line.push_str(run.append.trim());
    }
    let mut modules = vec![Module {
        path: run.kernel.clone(),
        name: kernel_line,
    }];
    modules.extend(run.initrd.iter().map(|path| Module {
        path: path.clone(),
        name: file_name(path),
    }));
    modules
}

fn run_ponte(run: &KernelRun, dir: &Path, stream: bool) -> Result<KernelReport, String> {
    let elf = image::build(APPLIANCE)?;
    let iso = image::iso(
        dir,
        &elf,
        &format!("mem={}", run.memory_mib),
        &ponte_modules(run),
    )?;
    if stream {
        eprintln!(
            "booting {} in ponte's {APPLIANCE} appliance in Bochs ({}); console follows",
            run.kernel.display(),
            run.cpu
        );
    }
    let machine = emulator::Machine {
        emulator: emulator::Emulator::Bochs,
        cpu: run.cpu.clone(),
        memory_mib: run.memory_mib.saturating_add(APPLIANCE_OVERHEAD_MIB),
        timeout: run.timeout,
    };
    let report = emulator::boot(&machine, &iso, dir, stream)?;
    Ok(KernelReport {
        status: ponte_status(&report)?,
        console: report.console,
        elapsed: report.elapsed,
    })
}

fn run_qemu(run: &KernelRun, dir: &Path, stream: bool) -> Result<KernelReport, String> {
    let image = fs::read(&run.kernel).map_err(|e| format!("{}: {e}", run.kernel.display()))?;
    let serial = dir.join("serial.txt");
    if stream {
        eprintln!("booting {} in QEMU; console follows", run.kernel.display());
    }
    let mut command = Command::new("qemu-system-x86_64");
    match qemu_boot_method(&image) {
        QemuBoot::KernelOption => {
            command.arg("-kernel").arg(&run.kernel);
            if !run.append.is_empty() {
                command.arg("-append").arg(&run.append);
            }
            if let Some(initrd) = &run.initrd {
                command.arg("-initrd").arg(initrd);
            }
        }
        QemuBoot::GrubIso => {
            if stream {
                eprintln!(
                    "Multiboot2 kernel: booting it from a GRUB ISO (QEMU's -kernel lacks it)"
                );
            }
            let modules: Vec<Module> = run
                .initrd
                .iter()
                .map(|path| Module {
                    path: path.clone(),
                    name: path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                })
                .collect();
            command
                .arg("-cdrom")
                .arg(image::iso(dir, &run.kernel, &run.append, &modules)?);
        }
    }
    command
        .args(["-m", &run.memory_mib.to_string()])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-device", "pc-testdev"]);
    let log = dir.join("emulator.out");
    let ended = emulator::supervise(&mut command, "qemu", &serial, &log, run.timeout, stream)?;
    Ok(KernelReport {
        status: qemu_status(ended.exit),
        console: ended.console,
        elapsed: ended.elapsed,
    })
}

/// `cargo xtask run-kernel <kernel> [--append ARGS] [--initrd FILE]
/// [--memory MiB] [--emulator qemu|ponte] [--cpu MODEL] [--timeout SECS]`.
pub fn command(args: &[String]) -> ExitCode {
    match parse_and_run(args) {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(RUNNER_ERROR_STATUS)),
        Err(message) => {
            eprintln!("xtask run-kernel: {message}");
            ExitCode::from(RUNNER_ERROR_STATUS)
        }
    }
}

fn parse_and_run(args: &[String]) -> Result<i32, String> {
    let mut run = KernelRun {
        kernel: PathBuf::new(),
        append: String::new(),
        initrd: None,
        memory_mib: 256,
        emulator: KernelEmulator::Ponte,
        cpu: crate::scenarios::DEFAULT.cpu.into(),
        timeout: Duration::from_secs(120),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--append" => run.append = value()?,
            "--initrd" => run.initrd = Some(absolute(value()?)?),
            "--memory" => {
                run.memory_mib = value()?.parse().map_err(|e| format!("--memory: {e}"))?
            }
            "--emulator" => run.emulator = KernelEmulator::parse(&value()?)?,
            "--cpu" => run.cpu = value()?,
            "--timeout" => {
                let seconds = value()?.parse().map_err(|e| format!("--timeout: {e}"))?;
                run.timeout = Duration::from_secs(seconds);
            }
            other if !other.starts_with("--") && run.kernel.as_os_str().is_empty() => {
                run.kernel = absolute(other.to_string())?;
            }
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if run.kernel.as_os_str().is_empty() {
        return Err(
            "usage: cargo xtask run-kernel <kernel> [--append ARGS] [--initrd FILE] \
                    [--memory MiB] [--emulator qemu|ponte] [--cpu <bochs model>] \
                    [--timeout SECS]"
                .into(),
        );
    }
    packages::ensure(packages::EMULATION)?;
    let name = run
        .kernel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = work_dir(&format!("run-kernel-{name}"))?;
    let report = self::run(&run, &dir, true)?;
    eprintln!(
        "\n{name} in {}: status {} ({}) after {:.1} s; logs in {}",
        run.emulator.name(),
        report.status,
        describe_status(report.status),
        report.elapsed.as_secs_f64(),
        dir.display()
    );
    Ok(report.status)
}

/// `path` made absolute against the directory `cargo xtask` was started in
/// (cargo runs the runner there; the emulators run elsewhere).
fn absolute(path: String) -> Result<PathBuf, String> {
    let path = PathBuf::from(path);
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    if path.is_absolute() {
        return Ok(path);
    }
    env::current_dir()
        .map(|dir| dir.join(&path))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with `words` at byte `offset`, little-endian.
    fn image_with(offset: usize, words: &[u32]) -> Vec<u8> {
        let mut image = vec![0u8; offset + 4 * words.len() + 64];
        for (i, word) in words.iter().enumerate() {
            image[offset + 4 * i..offset + 4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
        image
    }

    const MB2_HEADER: [u32; 4] = [0xE852_50D6, 0, 16, 0u32.wrapping_sub(0xE852_50D6 + 16)];

    #[test]
    fn multiboot2_only_kernels_boot_through_grub() {
        assert_eq!(
            qemu_boot_method(&image_with(4096, &MB2_HEADER)),
            QemuBoot::GrubIso
        );
        // Past 32 KiB, or misaligned, it is not a header.
        assert_eq!(
            qemu_boot_method(&image_with(32768, &MB2_HEADER)),
            QemuBoot::KernelOption
        );
        assert_eq!(
            qemu_boot_method(&image_with(4100, &MB2_HEADER)),
            QemuBoot::KernelOption
        );
        // A wrong checksum is no header either.
        let mut bad = MB2_HEADER;
        bad[3] ^= 1;
        assert_eq!(
            qemu_boot_method(&image_with(4096, &bad)),
            QemuBoot::KernelOption
        );
    }

    #[test]
    fn a_multiboot1_header_keeps_qemus_kernel_option() {
        let flags = 1 << 16;
        let mb1 = [0x1BAD_B002, flags, 0u32.wrapping_sub(0x1BAD_B002 + flags)];
        let mut both = image_with(4096, &MB2_HEADER);
        both.resize(9000, 0);
        both[8000..8012].copy_from_slice(&image_with(0, &mb1)[..12]);
        assert_eq!(qemu_boot_method(&both), QemuBoot::KernelOption);
        // A v1 header beyond 8 KiB does not count.
        let mut late = image_with(4096, &MB2_HEADER);
        late.resize(9000, 0);
        late[8192..8204].copy_from_slice(&image_with(0, &mb1)[..12]);
        assert_eq!(qemu_boot_method(&late), QemuBoot::GrubIso);
        // Truncated images are read without panicking.
        assert_eq!(
            qemu_boot_method(&[0x02, 0xB0, 0xAD]),
            QemuBoot::KernelOption
        );
    }

    #[test]
    fn status_is_qemus_or_124_after_the_timeout() {
        assert_eq!(qemu_status(None), 124);
        assert_eq!(qemu_status(Some(ExitStatus::from_raw(33 << 8))), 33);
        assert_eq!(qemu_status(Some(ExitStatus::from_raw(0))), 0);
        // Killed by SIGKILL (9): 128 + 9, as a shell reports it.
        assert_eq!(qemu_status(Some(ExitStatus::from_raw(9))), 137);
    }

    #[test]
    fn ponte_status_comes_from_the_appliances_line() {
        let report = |console: &str, result, timed_out| emulator::RunReport {
            result,
            timed_out,
            inconsistency: None,
            elapsed: Duration::from_secs(1),
            console: console.into(),
        };
        let pass = Some((emulator::Verdict::Pass, String::new()));
        let line = "check x: ok\r\nPONTE-GUEST-EXIT: status 113\r\nPONTE-RESULT: PASS\r\n";
        assert_eq!(ponte_status(&report(line, pass.clone(), false)), Ok(113));
        // Past the timeout, whatever was printed.
        assert_eq!(ponte_status(&report(line, None, true)), Ok(124));
        // No line: the machine stopped without a status, as QEMU reports it.
        assert_eq!(ponte_status(&report("booted\n", pass, false)), Ok(0));
        // The appliance could not run the guest: the runner failed.
        let failed = Some((emulator::Verdict::Fail, "cannot load mb1.elf".into()));
        assert!(ponte_status(&report("", failed, false))
            .unwrap_err()
            .contains("cannot load mb1.elf"));
        assert_eq!(guest_exit_status("PONTE-GUEST-EXIT: status x"), None);
    }

    #[test]
    fn ponte_gets_the_kernel_with_its_arguments_then_the_initrd() {
        let run = KernelRun {
            kernel: PathBuf::from("/k/mb1.elf"),
            append: " ponte-testkernel fail-on-purpose ".into(),
            initrd: Some(PathBuf::from("/k/initrd.img")),
            memory_mib: 128,
            emulator: KernelEmulator::Ponte,
            cpu: "corei7_skylake_x".into(),
            timeout: Duration::from_secs(1),
        };
        let modules = ponte_modules(&run);
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[0].path, PathBuf::from("/k/mb1.elf"));
        assert_eq!(modules[0].name, "mb1.elf ponte-testkernel fail-on-purpose");
        assert_eq!(modules[1].name, "initrd.img");
        let bare = KernelRun {
            append: String::new(),
            initrd: None,
            ..run
        };
        let modules = ponte_modules(&bare);
        assert_eq!(modules.len(), 1);
        assert_eq!(modules[0].name, "mb1.elf");
    }

    #[test]
    fn statuses_are_explained() {
        assert!(describe_status(33).contains("wrote 0x10"));
        assert!(describe_status(0).contains("without writing"));
        assert!(describe_status(124).contains("timeout"));
        assert!(describe_status(2).contains("emulator failed"));
    }
}
