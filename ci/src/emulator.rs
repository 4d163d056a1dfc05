//! Booting an ISO in Bochs or QEMU and reading the image's result.
//!
//! The image reports its result itself (`PONTE-RESULT: PASS|FAIL <reason>` on
//! COM1); the runner only reads it. No result line, a hang past the timeout,
//! or an emulator that disagrees with the line (QEMU's exit status) is a
//! failure.

use std::{
    fmt, fs,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The marker the image prints before its result (see ponte-arch's `boot`).
pub const RESULT_MARKER: &str = "PONTE-RESULT:";

/// Which emulator boots the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulator {
    /// Bochs: VT-x with EPT, speed about 50 M instructions/s.
    Bochs,
    /// QEMU with TCG: no VT-x, fast.
    Qemu,
}

impl Emulator {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bochs => "bochs",
            Self::Qemu => "qemu",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "bochs" => Ok(Self::Bochs),
            "qemu" => Ok(Self::Qemu),
            other => Err(format!("unknown emulator {other:?} (bochs or qemu)")),
        }
    }
}

/// The emulated machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Emulator to use.
    pub emulator: Emulator,
    /// Bochs CPU model (`cpu: model=`); ignored by QEMU.
    pub cpu: String,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// How long the run may take before it counts as hung.
    pub timeout: Duration,
}

/// The image's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The image printed PASS.
    Pass,
    /// The image printed FAIL.
    Fail,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The verdict and reason printed by the image, if it printed one.
    pub result: Option<(Verdict, String)>,
    /// Whether the run was stopped by the timeout.
    pub timed_out: bool,
    /// A disagreement between the emulator and the result line, if any.
    pub inconsistency: Option<String>,
    /// Wall-clock duration.
    pub elapsed: Duration,
    /// Everything the image wrote to COM1.
    pub console: String,
}

impl RunReport {
    /// The verdict that counts: the image's, unless the run hung or the
    /// emulator contradicted it.
    pub fn verdict(&self) -> Verdict {
        match (&self.result, self.timed_out, &self.inconsistency) {
            (Some((v, _)), false, None) => *v,
            _ => Verdict::Fail,
        }
    }

    /// A one-line explanation of the verdict.
    pub fn summary(&self) -> String {
        if self.timed_out {
            return format!("no result within {} s", self.elapsed.as_secs());
        }
        if let Some(why) = &self.inconsistency {
            return why.clone();
        }
        match &self.result {
            Some((_, reason)) => reason.clone(),
            None => "the image printed no result".into(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
        })
    }
}

/// Finds the image's result line in its console output.
pub fn parse_result(console: &str) -> Option<(Verdict, String)> {
    console.lines().find_map(|line| {
        let rest = line
            .trim_end_matches('\r')
            .split_once(RESULT_MARKER)?
            .1
            .trim_start();
        let (word, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let verdict = match word {
            "PASS" => Verdict::Pass,
            "FAIL" => Verdict::Fail,
            _ => return None,
        };
        Some((verdict, reason.trim().to_string()))
    })
}

/// Boots `iso` on `machine`, keeping logs in `dir`. With `stream`, the
/// image's console is copied to standard output as it arrives.
pub fn boot(machine: &Machine, iso: &Path, dir: &Path, stream: bool) -> Result<RunReport, String> {
    boot_with_disk(machine, iso, dir, stream, None)
}

/// A raw image file attached to the emulated IDE controller as a hard
/// disk: the primary channel's slave (the CD-ROM is its master), so an
/// appliance finds it at ports 0x1F0/0x3F6, device 1, in both emulators.
/// What the guest writes goes to the file and survives the run.
#[derive(Clone, Debug)]
pub struct HardDisk {
    /// The image file; its size must be a non-zero multiple of 512 bytes.
    pub path: PathBuf,
}

/// Sectors per track and heads Bochs gets for a flat image: it addresses
/// only cylinders x heads x sectors of the file, so the product must be the
/// file's sector count exactly. The first (largest) heads and sectors per
/// track that divide it with at most 65535 cylinders are taken.
pub fn bochs_geometry(size: u64) -> Result<(u64, u64, u64), String> {
    if size == 0 || !size.is_multiple_of(512) {
        return Err(format!(
            "a Bochs hard disk must be a non-zero multiple of 512 bytes, not {size}"
        ));
    }
    let sectors = size / 512;
    for heads in (1..=16).rev() {
        for spt in (1..=63).rev() {
            let track = heads * spt;
            if sectors.is_multiple_of(track) && sectors / track <= 65535 {
                return Ok((sectors / track, heads, spt));
            }
        }
    }
    Err(format!(
        "no Bochs geometry (at most 65535 cylinders, 16 heads, 63 sectors) holds exactly \
         {sectors} sectors; pad the image to a multiple of {} bytes",
        16 * 63 * 512
    ))
}

/// [`boot`] with an optional hard disk (see [`HardDisk`]); without one the
/// emulators are configured exactly as by [`boot`].
pub fn boot_with_disk(
    machine: &Machine,
    iso: &Path,
    dir: &Path,
    stream: bool,
    disk: Option<&HardDisk>,
) -> Result<RunReport, String> {
    let serial = dir.join("serial.txt");
    let mut command = match machine.emulator {
        Emulator::Bochs => bochs_command(machine, iso, dir, &serial, disk)?,
        Emulator::Qemu => qemu_command(machine, iso, &serial, disk),
    };
    let run = supervise(
        &mut command,
        machine.emulator.name(),
        &serial,
        &dir.join("emulator.out"),
        machine.timeout,
        stream,
    )?;
    let result = parse_result(&run.console);
    let inconsistency = match (machine.emulator, run.exit, &result) {
        (Emulator::Qemu, Some(status), Some((verdict, _))) => {
            let expected = match verdict {
                Verdict::Pass => 33,
                Verdict::Fail => 35,
            };
            (status.code() != Some(expected)).then(|| {
                format!("image said {verdict} but QEMU exited with {status}, not {expected}")
            })
        }
        _ => None,
    };
    Ok(RunReport {
        result,
        timed_out: run.exit.is_none(),
        inconsistency,
        elapsed: run.elapsed,
        console: run.console,
    })
}

/// What an emulator process left behind.
#[derive(Clone, Debug)]
pub struct Supervised {
    /// The process's exit status; `None` if the timeout stopped it.
    pub exit: Option<ExitStatus>,
    /// Everything the guest wrote to its serial port.
    pub console: String,
    /// Wall-clock duration.
    pub elapsed: Duration,
}

/// What Bochs prints when every display port it may listen on (5900-5949)
/// is taken by other emulators: it stops before running anything.
const BOCHS_NO_DISPLAY_PORT: &str = "RFB could not bind any port";
/// How often an emulator that could not start for lack of a display port is
/// started again.
const START_ATTEMPTS: u32 = 5;

/// Runs the emulator `command` (called `name` in errors) with standard input
/// closed and its own output in `log`, follows the guest's serial output in
/// the file `serial` (emptied first), copying it to standard output as it
/// arrives when `stream` is set, and kills the process after `timeout`.
///
/// An emulator that stopped before the guest ran because other emulators on
/// the machine hold every display port is started again a few times: that is
/// the machine's state, not the image's result.
pub fn supervise(
    command: &mut Command,
    name: &str,
    serial: &Path,
    log: &Path,
    timeout: Duration,
    stream: bool,
) -> Result<Supervised, String> {
    let mut attempt = 1;
    loop {
        let run = supervise_once(command, name, serial, log, timeout, stream)?;
        let no_port = fs::read_to_string(log).is_ok_and(|l| l.contains(BOCHS_NO_DISPLAY_PORT));
        if !(no_port && run.console.is_empty()) || attempt == START_ATTEMPTS {
            return Ok(run);
        }
        eprintln!(
            "{name} found no free display port; starting it again ({attempt}/{START_ATTEMPTS})"
        );
        thread::sleep(Duration::from_secs(u64::from(attempt) * 2));
        attempt += 1;
    }
}

fn supervise_once(
    command: &mut Command,
    name: &str,
    serial: &Path,
    log: &Path,
    timeout: Duration,
    stream: bool,
) -> Result<Supervised, String> {
    let _ = fs::remove_file(serial);
    fs::write(serial, b"").map_err(|e| format!("{}: {e}", serial.display()))?;
    let log = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let mut console = Vec::new();
    let exit = loop {
        follow(serial, &mut console, stream);
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    follow(serial, &mut console, stream);
    Ok(Supervised {
        exit,
        console: String::from_utf8_lossy(&console).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// Appends what `path` gained since `sink` was last filled.
fn follow(path: &Path, sink: &mut Vec<u8>, stream: bool) {
    let Ok(mut file) = fs::File::open(path) else {
        return;
    };
    if file.seek(SeekFrom::Start(sink.len() as u64)).is_err() {
        return;
    }
    let start = sink.len();
    let _ = file.read_to_end(sink);
    if stream && sink.len() > start {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&sink[start..]);
        let _ = out.flush();
    }
}

/// The bochsrc line attaching `disk` as the primary channel's slave.
fn bochs_disk_line(disk: &HardDisk) -> Result<String, String> {
    let size = fs::metadata(&disk.path)
        .map_err(|e| format!("{}: {e}", disk.path.display()))?
        .len();
    let (cylinders, heads, spt) =
        bochs_geometry(size).map_err(|e| format!("{}: {e}", disk.path.display()))?;
    Ok(format!(
        "ata0-slave: type=disk, mode=flat, path=\"{}\", cylinders={cylinders}, heads={heads}, spt={spt}\n",
        disk.path.display()
    ))
}

fn bochs_command(
    machine: &Machine,
    iso: &Path,
    dir: &Path,
    serial: &Path,
    disk: Option<&HardDisk>,
) -> Result<Command, String> {
    let mut config = format!(
        "megs: {memory}\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
         cpu: model={cpu}, count=1, ips=50000000, reset_on_triple_fault=0\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         display_library: rfb, options=\"timeout=0\"\n\
         com1: enabled=1, mode=file, dev={serial}\n\
         port_e9_hack: enabled=1\n\
         speaker: enabled=0\n\
         mouse: enabled=0\n\
         log: {log}\n\
         clock: sync=none, time0=946684800\n",
        memory = machine.memory_mib,
        cpu = machine.cpu,
        iso = iso.display(),
        serial = serial.display(),
        log = dir.join("bochs.log").display(),
    );
    if let Some(disk) = disk {
        config.push_str(&bochs_disk_line(disk)?);
    }
    let config_path = dir.join("bochsrc");
    fs::write(&config_path, config).map_err(|e| e.to_string())?;
    // Debian's Bochs is built with its debugger: "c" continues at once.
    let commands: PathBuf = dir.join("bochs.rc");
    fs::write(&commands, "c\n").map_err(|e| e.to_string())?;
    let mut command = Command::new("bochs");
    command
        .arg("-q")
        .arg("-f")
        .arg(&config_path)
        .arg("-rc")
        .arg(&commands);
    Ok(command)
}

fn qemu_command(machine: &Machine, iso: &Path, serial: &Path, disk: Option<&HardDisk>) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .arg("-cdrom")
        .arg(iso)
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-m", &machine.memory_mib.to_string()])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x01"]);
    if let Some(disk) = disk {
        // Index 1: the primary channel's slave (-cdrom takes index 2).
        command.arg("-drive").arg(format!(
            "file={},format=raw,if=ide,index=1,media=disk",
            disk.path.display()
        ));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_is_found_with_reason() {
        let out = "boot\r\nPONTE-RESULT: PASS all good here\r\n";
        assert_eq!(
            parse_result(out),
            Some((Verdict::Pass, "all good here".into()))
        );
        let out = "x\nPONTE-RESULT: FAIL panic: at foo.rs:3\n";
        assert_eq!(
            parse_result(out),
            Some((Verdict::Fail, "panic: at foo.rs:3".into()))
        );
    }

    #[test]
    fn no_or_malformed_result_line_is_no_result() {
        assert_eq!(parse_result("booted\nhalted\n"), None);
        assert_eq!(parse_result("PONTE-RESULT: MAYBE\n"), None);
        assert_eq!(parse_result("PONTE-RESULT:"), None);
    }

    #[test]
    fn bochs_geometry_covers_the_image_exactly() {
        // 16 heads x 63 sectors, as bximage makes them.
        assert_eq!(bochs_geometry(20 * 16 * 63 * 512), Ok((20, 16, 63)));
        // 16 MiB: 32768 sectors = 2^15, so the largest track is 16 x 32.
        assert_eq!(bochs_geometry(16 << 20), Ok((64, 16, 32)));
        for size in [512, 16 << 20, 6_295_552, 3 * 7 * 512, 1 << 30] {
            let (c, h, s) = bochs_geometry(size).unwrap();
            assert_eq!(c * h * s * 512, size, "{size}");
            assert!(c <= 65535 && h <= 16 && s <= 63, "{size}: {c}/{h}/{s}");
        }
        assert!(bochs_geometry(0).is_err());
        assert!(bochs_geometry(1000).is_err());
        // A prime sector count above 65535 has no geometry.
        assert!(bochs_geometry(65537 * 512).is_err());
    }

    #[test]
    fn the_bochs_disk_line_names_the_file_and_its_geometry() {
        let dir = std::env::temp_dir().join(format!("ponte-bochs-disk-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        fs::write(&path, vec![0u8; 2 * 16 * 63 * 512]).unwrap();
        let line = bochs_disk_line(&HardDisk { path: path.clone() }).unwrap();
        assert_eq!(
            line,
            format!(
                "ata0-slave: type=disk, mode=flat, path=\"{}\", cylinders=2, heads=16, spt=63\n",
                path.display()
            )
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn hung_or_contradicted_runs_fail() {
        let base = RunReport {
            result: Some((Verdict::Pass, String::new())),
            timed_out: false,
            inconsistency: None,
            elapsed: Duration::from_secs(1),
            console: String::new(),
        };
        assert_eq!(base.verdict(), Verdict::Pass);
        assert_eq!(
            RunReport {
                timed_out: true,
                ..base.clone()
            }
            .verdict(),
            Verdict::Fail
        );
        assert_eq!(
            RunReport {
                inconsistency: Some("x".into()),
                ..base.clone()
            }
            .verdict(),
            Verdict::Fail
        );
        assert_eq!(
            RunReport {
                result: None,
                ..base
            }
            .verdict(),
            Verdict::Fail
        );
    }
}
