//! `cargo xtask`: builds ponte's appliance images, boots them in Bochs and
//! QEMU, and runs every test.
//!
//! - `image <example>`: builds the example and its ISO; prints the stripped
//!   ELF size.
//! - `run [<example>] [--emulator bochs|qemu] [--cpu <model>] [--append ARGS]
//!   [--disk FILE]`: boots it and streams its console (default: the demo
//!   appliance in Bochs); `--disk` attaches FILE as the primary IDE
//!   channel's slave hard disk.
//! - `run-kernel <kernel> [--append ARGS] [--initrd FILE] [--memory MiB]
//!   [--emulator qemu|ponte] [--cpu <model>] [--timeout SECS]`: boots a test
//!   kernel written for `qemu-system-x86_64 -kernel` and exits with the status
//!   QEMU gives for it (see `run_kernel`).
//! - `test [<scenario>...]`: host tests, clippy, rustfmt, rustdoc, then every
//!   integration scenario (or the named ones), two emulators at a time.
//! - `bench`: prints `bench <name> <value> <unit>` lines.
//! - `linux-assets [--qemu | --child-from-disk IMAGE OUT]`: prepares the
//!   Linux guest's kernel, initramfs and disks (see `linux_assets`); `--qemu`
//!   boots them twice in QEMU.

mod bench;
mod emulator;
mod image;
mod linux_assets;
mod linux_vhd;
mod packages;
mod run_kernel;
mod scenarios;
mod testkernels;

use std::{
    env,
    path::PathBuf,
    process::{Command, ExitCode},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use emulator::{Emulator, Machine, Verdict};
use scenarios::{Boot, Scenario, SCENARIOS};
use testkernels::TestKernel;

/// The appliance `cargo xtask run` boots without arguments.
const DEMO: &str = "linux-vhd";
/// How many emulators run at once.
const PARALLEL_EMULATORS: usize = 2;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("image") => image_command(&args[1..]),
        Some("run") => run_command(&args[1..]),
        Some("run-kernel") => return run_kernel::command(&args[1..]),
        Some("test") => test_command(&args[1..]),
        Some("bench") => bench::run(),
        Some("linux-assets") => linux_assets::command(&args[1..]),
        _ => Err(
            "usage: cargo xtask image <example> | run [<example>] [--emulator bochs|qemu] \
                  [--cpu <bochs model>] [--append ARGS] [--disk FILE] | run-kernel <kernel> [--append ARGS] \
                  [--initrd FILE] [--memory MiB] [--emulator qemu|ponte] [--cpu <bochs model>] \
                  [--timeout SECS] | test [<scenario>...] | bench | linux-assets [--qemu]"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the runner's crate sits in `ci/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ci/ has a parent")
        .to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Where the runner keeps ISOs, logs and downloads.
pub fn work_dir(name: &str) -> Result<PathBuf, String> {
    let dir = target_dir().join("ponte").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// A `cargo` command in the workspace root.
pub fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs `command`, capturing its output; on failure returns the tail of it.
pub fn run_quiet(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{command:?} failed ({}):\n{}",
        output.status,
        tail.join("\n")
    ))
}

/// Runs `command` with its output shown; fails if it fails.
fn run_shown(step: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("== {step}");
    let status = command.status().map_err(|e| format!("{step}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn image_command(args: &[String]) -> Result<(), String> {
    let [example] = args else {
        return Err("usage: cargo xtask image <example>".into());
    };
    packages::ensure(packages::EMULATION)?;
    let elf = image::build(example)?;
    let size = image::stripped_size(&elf)?;
    let iso = image::iso(&work_dir(example)?, &elf, "", &[])?;
    println!(
        "image {example}: {size} bytes (stripped ELF {})",
        elf.display()
    );
    println!("iso {}", iso.display());
    Ok(())
}

fn run_command(args: &[String]) -> Result<(), String> {
    let mut example = DEMO.to_string();
    let mut machine = Machine {
        emulator: Emulator::Bochs,
        cpu: scenarios::DEFAULT.cpu.into(),
        memory_mib: scenarios::DEFAULT.memory_mib,
        timeout: Duration::from_secs(3600),
    };
    let mut append = String::new();
    let mut disk = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--emulator" => machine.emulator = Emulator::parse(&value()?)?,
            "--disk" => {
                disk = Some(emulator::HardDisk {
                    path: PathBuf::from(value()?),
                })
            }
            "--cpu" => machine.cpu = value()?,
            "--append" => append = value()?,
            "--memory" => {
                machine.memory_mib = value()?.parse().map_err(|e| format!("--memory: {e}"))?
            }
            other if !other.starts_with("--") => example = other.to_string(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    packages::ensure(packages::EMULATION)?;
    if example == linux_vhd::EXAMPLE {
        let dir = work_dir(&format!("run-{example}"))?;
        let report = linux_vhd::run(&machine, &dir, &append)?;
        eprintln!(
            "\n{example}: {} ({}) after {:.1} s",
            report.verdict(),
            report.summary(),
            report.elapsed.as_secs_f64()
        );
        return match report.verdict() {
            Verdict::Pass => Ok(()),
            Verdict::Fail => Err(format!("the run failed; logs in {}", dir.display())),
        };
    }
    let elf = image::build(&example)?;
    let dir = work_dir(&format!("run-{example}"))?;
    // The bare-machine Linux baseline boots the appliance's kernel and
    // initramfs; other examples take no modules.
    let modules = if example == linux_vhd::NATIVE_EXAMPLE {
        linux_vhd::native_modules(&dir)?
    } else {
        Vec::new()
    };
    let iso = image::iso(&dir, &elf, &append, &modules)?;
    eprintln!(
        "booting {example} in {} ({}); console follows",
        machine.emulator.name(),
        machine.cpu
    );
    let report = emulator::boot_with_disk(&machine, &iso, &dir, true, disk.as_ref())?;
    eprintln!(
        "\n{example}: {} ({}) after {:.1} s",
        report.verdict(),
        report.summary(),
        report.elapsed.as_secs_f64()
    );
    match report.verdict() {
        Verdict::Pass => Ok(()),
        Verdict::Fail => Err(format!("the run failed; logs in {}", dir.display())),
    }
}

/// The outcome of one scenario.
struct ScenarioResult {
    scenario: &'static Scenario,
    held: bool,
    text: String,
    seconds: f64,
}

fn run_scenario(scenario: &'static Scenario) -> ScenarioResult {
    let started = Instant::now();
    let outcome = match scenario.boots {
        Boot::Appliance => run_appliance_scenario(scenario),
        Boot::TestKernel { kernel, status } => run_kernel_scenario(scenario, kernel, status),
        Boot::LinuxVhd => work_dir(&format!("scenarios/{}", scenario.name)).and_then(|dir| {
            let machine = Machine {
                timeout: Duration::from_secs(linux_vhd::BOOT_TIMEOUT_SECS),
                ..linux_vhd::machine()
            };
            linux_vhd::scenario(&dir, &machine)
        }),
    };
    let (held, text) = outcome.unwrap_or_else(|e| (false, format!("FAILED: {e}")));
    ScenarioResult {
        scenario,
        held,
        text,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The lines of `scenario.console_contains` that `console` lacks.
fn missing_lines(scenario: &Scenario, console: &str) -> Vec<&'static str> {
    scenario
        .console_contains
        .iter()
        .copied()
        .filter(|t| !console.contains(t))
        .collect()
}

/// Boots an appliance image and reads its PONTE-RESULT line.
fn run_appliance_scenario(scenario: &'static Scenario) -> Result<(bool, String), String> {
    let dir = work_dir(&format!("scenarios/{}", scenario.name))?;
    let modules = match scenario.modules {
        Some(prepare) => prepare(&dir)?,
        None => Vec::new(),
    };
    let elf = target_dir()
        .join("x86_64-unknown-none/release")
        .join(scenario.example);
    let iso = image::iso(&dir, &elf, scenario.command_line, &modules)?;
    let machine = Machine {
        emulator: scenario.emulator,
        cpu: scenario.cpu.into(),
        memory_mib: scenario.memory_mib,
        timeout: Duration::from_secs(scenario.timeout_secs),
    };
    let report = emulator::boot(&machine, &iso, &dir, false)?;
    let verdict = report.verdict();
    let missing = missing_lines(scenario, &report.console);
    let held = verdict == scenario.expect && missing.is_empty();
    let text = match (held, verdict, scenario.expect) {
        (true, Verdict::Pass, _) => "passed".to_string(),
        (true, Verdict::Fail, _) => format!("failed as expected ({})", report.summary()),
        (false, _, _) if verdict == scenario.expect => {
            format!(
                "FAILED: console lacks {missing:?} (logs in {})",
                dir.display()
            )
        }
        (false, v, e) => format!(
            "FAILED: expected {e}, got {v}: {} (logs in {})",
            report.summary(),
            dir.display()
        ),
    };
    Ok((held, text))
}

/// Boots one of ponte's test kernels (built beforehand by `test_command`)
/// and compares its exit status with `expected`.
fn run_kernel_scenario(
    scenario: &'static Scenario,
    kernel: TestKernel,
    expected: i32,
) -> Result<(bool, String), String> {
    let dir = work_dir(&format!("scenarios/{}", scenario.name))?;
    let run = run_kernel::KernelRun {
        kernel: kernel.elf()?,
        append: scenario.command_line.into(),
        initrd: None,
        memory_mib: scenario.memory_mib,
        emulator: match scenario.emulator {
            Emulator::Qemu => run_kernel::KernelEmulator::Qemu,
            Emulator::Bochs => run_kernel::KernelEmulator::Ponte,
        },
        cpu: scenario.cpu.into(),
        timeout: Duration::from_secs(scenario.timeout_secs),
    };
    let report = run_kernel::run(&run, &dir, false)?;
    let missing = missing_lines(scenario, &report.console);
    let status = report.status;
    let text = if status != expected {
        format!(
            "FAILED: expected status {expected}, got {status}: {} (logs in {})",
            run_kernel::describe_status(status),
            dir.display()
        )
    } else if !missing.is_empty() {
        format!(
            "FAILED: console lacks {missing:?} (logs in {})",
            dir.display()
        )
    } else if status == testkernels::PASS_STATUS {
        "passed".to_string()
    } else {
        format!(
            "failed as expected (status {status}: {})",
            run_kernel::describe_status(status)
        )
    };
    Ok((status == expected && missing.is_empty(), text))
}

fn test_command(args: &[String]) -> Result<(), String> {
    let selected: Vec<&'static Scenario> = if args.is_empty() {
        SCENARIOS.iter().collect()
    } else {
        args.iter()
            .map(|name| scenarios::find(name).ok_or(format!("no scenario named {name}")))
            .collect::<Result<_, _>>()?
    };
    packages::ensure(packages::EMULATION)?;
    let mut failures = Vec::new();
    if args.is_empty() {
        for (step, command) in static_checks() {
            if let Err(e) = run_shown(step, &mut { command }) {
                failures.push(e);
            }
        }
    }

    let mut examples: Vec<&str> = selected
        .iter()
        .filter(|s| s.boots == Boot::Appliance)
        .map(|s| s.example)
        .collect();
    examples.sort_unstable();
    examples.dedup();
    for example in examples {
        image::build(example)?;
    }
    if selected
        .iter()
        .any(|s| matches!(s.boots, Boot::TestKernel { .. }))
    {
        for kernel in TestKernel::ALL {
            kernel.build()?;
        }
    }
    eprintln!(
        "== {} integration scenarios, {PARALLEL_EMULATORS} at a time",
        selected.len()
    );
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..PARALLEL_EMULATORS {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(scenario) = selected.get(index) else {
                    break;
                };
                let result = run_scenario(scenario);
                eprintln!("   {:<28} {}", scenario.name, result.text);
                results
                    .lock()
                    .expect("no thread panics holding it")
                    .push((index, result));
            });
        }
    });
    let mut results = results.into_inner().expect("threads joined");
    results.sort_by_key(|(index, _)| *index);

    println!(
        "\n{:<28} {:<6} {:<26} {:>8}  result",
        "scenario", "emu", "cpu", "seconds"
    );
    for (_, r) in &results {
        let cpu = if r.scenario.emulator == Emulator::Bochs {
            r.scenario.cpu
        } else {
            "-"
        };
        println!(
            "{:<28} {:<6} {:<26} {:>8.1}  {}",
            r.scenario.name,
            r.scenario.emulator.name(),
            cpu,
            r.seconds,
            r.text
        );
    }
    let held = results.iter().filter(|(_, r)| r.held).count();
    let failed = results.len() - held;
    failures.extend(
        results
            .iter()
            .filter(|(_, r)| !r.held)
            .map(|(_, r)| format!("scenario {}", r.scenario.name)),
    );
    println!("\nscenarios: {held} passed, {failed} failed");
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failures.join(", ")))
    }
}

/// Host tests and code checks, in the order they run.
fn static_checks() -> Vec<(&'static str, Command)> {
    let mut test = cargo();
    test.args(["test", "--all-features"]);
    // Images build ponte-arch without its `diagnostics` feature; its tests
    // cover both ways.
    let mut test_terse_arch = cargo();
    test_terse_arch.args(["test", "--package", "ponte-arch", "--lib"]);
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    let mut clippy_images = cargo();
    clippy_images.args(["clippy", "--release", "--target", "x86_64-unknown-none"]);
    for example in examples() {
        clippy_images.args(["--package", &example]);
    }
    clippy_images.args(["--", "-D", "warnings"]);
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    let mut doc = cargo();
    doc.args(["doc", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    vec![
        ("host tests (cargo test)", test),
        (
            "host tests (ponte-arch without diagnostics)",
            test_terse_arch,
        ),
        ("clippy (host crates)", clippy),
        ("clippy (images)", clippy_images),
        ("rustfmt", fmt),
        ("rustdoc", doc),
    ]
}

/// The packages under `examples/`.
pub fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("examples"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
