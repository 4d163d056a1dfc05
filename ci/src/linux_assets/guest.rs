//! What the Linux guest does: `/init`, a small program that reads the TSC
//! first thing in userspace and prints it ([`INIT_SOURCE`]), then
//! `/init.sh`, which on ponte checks the disk (the raw test layout the base
//! image holds, verified and recorded by `/disk-check`) and on the bare
//! machine reports that Linux reached init.
//!
//! Boot time is counted from inside both runs the same way: the image
//! prints `kernel entry tsc N` (the TSC just before it enters the kernel:
//! the first VM entry under ponte, the jump on the bare machine), init
//! prints `PONTE-GUEST: init tsc N`; [`boot_to_userspace`] subtracts. Under
//! Bochs the TSC counts emulated instructions, ponte's own exit handling
//! included, and ponte gives the guest the host's TSC (offset 0).
//!
//! Layout of the virtual disk (512-byte sectors, 2 MiB VHD blocks):
//! - sector [`HEADER_SECTOR`] (block 0): the text [`HEADER_TEXT`];
//! - sectors [`PAYLOAD_SECTOR`].. ([`PAYLOAD_SECTORS`] of them, straddling
//!   the boundary of blocks 0 and 1): pseudo-random bytes, every sector
//!   distinct, also shipped in the initramfs as `/payload` for `cmp`;
//! - sector [`GENERATION_SECTOR`] (block 2): `PONTE-GEN <n>`, the number of
//!   boots that updated the disk (0 in the base image);
//! - sector [`BOOT_RECORD_SECTOR`] (block 3, unallocated in the base):
//!   `PONTE-BOOT <n>`, written by the boot that set generation n.
//!
//! A boot checks all four, then writes generation n+1 and its boot record,
//! so a second boot over the same differencing image proves that the first
//! boot's writes reached the child and the base's content still shows
//! through.

/// Marker starting every line the guest prints about its progress.
pub const MARKER: &str = "PONTE-GUEST:";
/// Size of the virtual disk.
pub const DISK_SIZE: u64 = 16 << 20;
/// Sector of the header.
pub const HEADER_SECTOR: u64 = 0;
/// The header's text (followed by a newline and zeros).
pub const HEADER_TEXT: &str = "PONTE-DISK 1";
/// First sector of the payload.
pub const PAYLOAD_SECTOR: u64 = 3840;
/// Length of the payload in sectors (256 KiB, across the 2 MiB boundary).
pub const PAYLOAD_SECTORS: u64 = 512;
/// Sector of the generation record.
pub const GENERATION_SECTOR: u64 = 8192;
/// Sector of the last boot's record.
pub const BOOT_RECORD_SECTOR: u64 = 12288;
/// The modules virtio-blk over PCI needs, in an order where each comes
/// after its dependencies (their `depends=` in Debian 6.1's `.modinfo`):
/// virtio needs virtio_ring; virtio_pci needs virtio_ring, virtio,
/// virtio_pci_modern_dev and virtio_pci_legacy_dev; virtio_blk needs
/// virtio and virtio_ring. The runner checks this order against the
/// modules it ships.
pub const MODULES: [&str; 6] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
];
// The layout as documented: the payload crosses the first 2 MiB block
// boundary (sector 4096), the records sit in blocks 2 and 3, all inside the
// disk.
const _: () = assert!(PAYLOAD_SECTOR < 4096 && PAYLOAD_SECTOR + PAYLOAD_SECTORS > 4096);
const _: () = assert!(GENERATION_SECTOR * 512 / (2 << 20) == 2);
const _: () = assert!(BOOT_RECORD_SECTOR * 512 / (2 << 20) == 3);
const _: () = assert!((BOOT_RECORD_SECTOR + 1) * 512 <= DISK_SIZE);

/// Busybox applets the scripts call, linked to `/bin/busybox`.
pub const APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "dd", "cmp", "tr", "head", "sleep", "sync", "poweroff", "cat", "ls",
    "mkdir", "uname", "grep",
];

/// GNU assembler source of `/init` (x86-64 Linux, static).
pub const INIT_SOURCE: &str = include_str!("init.S");
/// What `/init` prints before the TSC value.
pub const INIT_TSC: &str = "PONTE-GUEST: init tsc ";
/// What the images print before the TSC value at the kernel's entry.
pub const KERNEL_ENTRY_TSC: &str = "kernel entry tsc ";
/// The result line init prints on the bare machine, where no image is left
/// to print one.
pub const BARE_MACHINE_PASS: &str = "PONTE-RESULT: PASS Linux reached init on the bare machine";

/// The `grep` pattern of `/proc/cpuinfo`'s line saying the CPU runs under a
/// hypervisor.
pub const HYPERVISOR_FLAG: &str = "^flags.* hypervisor";

/// The number after the first `marker` on a line of `console`.
fn value_after(console: &str, marker: &str) -> Option<u64> {
    console.lines().find_map(|line| {
        let rest = line.split_once(marker)?.1;
        let digits: &str = &rest[..rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len())];
        digits.parse().ok()
    })
}

/// TSC ticks from the kernel's entry to init's first instruction, from the
/// two lines a run printed; `None` if either is missing or init's is not
/// later.
pub fn boot_to_userspace(console: &str) -> Option<u64> {
    let entry = value_after(console, KERNEL_ENTRY_TSC)?;
    let init = value_after(console, INIT_TSC)?;
    init.checked_sub(entry).filter(|&t| t > 0)
}

/// The line a successful boot prints, having found `generation`.
pub fn pass_line(generation: u64) -> String {
    format!(
        "{MARKER} PASS generation {generation} -> {}",
        generation + 1
    )
}

/// The payload's bytes: xorshift64 output from a fixed seed.
pub fn payload() -> Vec<u8> {
    let mut state: u64 = 0x706f_6e74_6520_6469;
    let mut out = Vec::with_capacity((PAYLOAD_SECTORS * 512) as usize);
    while out.len() < (PAYLOAD_SECTORS * 512) as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

/// The writes that make a blank disk into the base image: (byte offset,
/// bytes).
pub fn base_writes() -> Vec<(u64, Vec<u8>)> {
    let text = |s: &str| {
        let mut sector = format!("{s}\n").into_bytes();
        sector.resize(512, 0);
        sector
    };
    vec![
        (HEADER_SECTOR * 512, text(HEADER_TEXT)),
        (PAYLOAD_SECTOR * 512, payload()),
        (GENERATION_SECTOR * 512, text("PONTE-GEN 0")),
    ]
}

/// `/disk-check DISK PAYLOAD`: checks the layout on DISK and records a boot.
pub fn disk_check_script() -> String {
    format!(
        r#"#!/bin/sh
# Checks the test layout of disk $1 against the payload file $2, then
# records this boot: generation n+1 and its boot record.
disk=$1
payload=$2
scratch=${{TMPDIR:-/tmp}}/payload.read
say() {{ echo "{MARKER} $*"; }}
fail() {{ say "FAIL $*"; exit 1; }}
# text_at SECTOR: the first line of a sector, zeros dropped.
text_at() {{ dd if="$disk" bs=512 skip="$1" count=1 2>/dev/null | tr -d '\000' | head -n 1; }}
# put SECTOR TEXT: one sector holding TEXT and a newline, zero-padded.
put() {{ printf '%s\n' "$2" | dd of="$disk" bs=512 seek="$1" conv=notrunc,sync 2>/dev/null; }}

header=$(text_at {HEADER_SECTOR})
[ "$header" = "{HEADER_TEXT}" ] || fail "header is '$header', expected '{HEADER_TEXT}'"
say "header ok"
dd if="$disk" of="$scratch" bs=512 skip={PAYLOAD_SECTOR} count={PAYLOAD_SECTORS} 2>/dev/null || fail "cannot read the payload"
cmp -s "$scratch" "$payload" || fail "payload differs from the base image's"
say "payload ok ({PAYLOAD_SECTORS} sectors at {PAYLOAD_SECTOR})"
record=$(text_at {GENERATION_SECTOR})
case "$record" in
"PONTE-GEN "*) generation=${{record#PONTE-GEN }} ;;
*) fail "generation record is '$record'" ;;
esac
case "$generation" in
''|*[!0-9]*) fail "generation '$generation' is not a number" ;;
esac
say "generation $generation"
boot=$(text_at {BOOT_RECORD_SECTOR})
if [ "$generation" -eq 0 ]; then
    [ -z "$boot" ] || fail "boot record is '$boot' before any boot"
else
    [ "$boot" = "PONTE-BOOT $generation" ] || fail "boot record is '$boot', expected 'PONTE-BOOT $generation'"
fi
say "boot record ok"
next=$((generation + 1))
put {GENERATION_SECTOR} "PONTE-GEN $next" || fail "cannot write generation $next"
put {BOOT_RECORD_SECTOR} "PONTE-BOOT $next" || fail "cannot write boot record $next"
sync
[ "$(text_at {GENERATION_SECTOR})" = "PONTE-GEN $next" ] || fail "generation $next does not read back"
say "PASS generation $generation -> $next"
"#
    )
}

/// `/init.sh`, run by `/init`: mounts; under a hypervisor (ponte: CPUID's
/// hypervisor bit, a `hypervisor` flag in `/proc/cpuinfo`) loads the virtio
/// modules, waits for `/dev/vda`, runs `/disk-check`; on the bare machine,
/// which has no disk for it, prints [`BARE_MACHINE_PASS`]. Then powers off.
pub fn init_script() -> String {
    let modules = MODULES.join(" ");
    format!(
        r#"#!/bin/sh
say() {{ echo "{MARKER} $*"; }}
stop() {{ say "powering off"; sync; poweroff -f; }}
say "init started on $(uname -r)"
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || {{ say "FAIL cannot mount proc, sys, dev"; stop; }}
say "mounted proc, sys, devtmpfs"
if ! grep -qw '{HYPERVISOR_FLAG}' /proc/cpuinfo; then
    say "bare machine (no hypervisor flag): no disk to check"
    echo "{BARE_MACHINE_PASS}"
    stop
fi
for module in {modules}; do
    insmod /lib/modules/$module.ko || {{ say "FAIL insmod $module"; stop; }}
    say "loaded $module"
done
waited=0
while [ ! -b /dev/vda ]; do
    if [ "$waited" -ge 100 ]; then
        say "FAIL no /dev/vda after 10 s; block devices: $(ls /sys/block)"
        stop
    fi
    sleep 0.1
    waited=$((waited + 1))
done
say "found /dev/vda ($(cat /sys/block/vda/size) sectors)"
/bin/sh /disk-check /dev/vda /payload
stop
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, process::Command};

    /// A raw disk holding the base layout, in a fresh directory.
    fn base_disk(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ponte-guest-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut disk = vec![0u8; DISK_SIZE as usize];
        for (offset, bytes) in base_writes() {
            disk[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        fs::write(dir.join("disk.raw"), disk).unwrap();
        fs::write(dir.join("payload"), payload()).unwrap();
        fs::write(dir.join("disk-check"), disk_check_script()).unwrap();
        (dir.clone(), dir.join("disk.raw"))
    }

    /// Runs the disk check with the host's POSIX shell; returns whether it
    /// succeeded and its output.
    fn check(dir: &std::path::Path) -> (bool, String) {
        let out = Command::new("sh")
            .arg(dir.join("disk-check"))
            .arg(dir.join("disk.raw"))
            .arg(dir.join("payload"))
            .env("TMPDIR", dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn sector(disk: &[u8], lba: u64) -> &[u8] {
        &disk[(lba * 512) as usize..(lba * 512 + 512) as usize]
    }

    #[test]
    fn payload_sectors_are_distinct() {
        let p = payload();
        assert_eq!(p.len() as u64, PAYLOAD_SECTORS * 512);
        let mut sectors: Vec<&[u8]> = p.chunks(512).collect();
        sectors.sort();
        sectors.dedup();
        assert_eq!(sectors.len() as u64, PAYLOAD_SECTORS, "sectors distinct");
    }

    #[test]
    fn each_boot_finds_the_previous_generation_and_writes_the_next() {
        let (dir, raw) = base_disk("generations");
        let (ok, out) = check(&dir);
        assert!(ok, "{out}");
        assert!(out.contains("PONTE-GUEST: header ok"), "{out}");
        assert!(out.contains("PONTE-GUEST: payload ok"), "{out}");
        assert!(out.contains(&pass_line(0)), "{out}");
        let disk = fs::read(&raw).unwrap();
        assert_eq!(disk.len() as u64, DISK_SIZE, "written in place");
        assert_eq!(&sector(&disk, GENERATION_SECTOR)[..12], b"PONTE-GEN 1\n");
        assert!(sector(&disk, GENERATION_SECTOR)[12..]
            .iter()
            .all(|&b| b == 0));
        assert_eq!(&sector(&disk, BOOT_RECORD_SECTOR)[..13], b"PONTE-BOOT 1\n");
        let (ok, out) = check(&dir);
        assert!(ok && out.contains(&pass_line(1)), "{out}");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_changed_payload_sector_or_header_fails_the_boot() {
        let (dir, raw) = base_disk("corrupt");
        let mut disk = fs::read(&raw).unwrap();
        disk[((PAYLOAD_SECTOR + PAYLOAD_SECTORS - 1) * 512 + 7) as usize] ^= 1;
        fs::write(&raw, &disk).unwrap();
        let (ok, out) = check(&dir);
        assert!(!ok);
        assert!(out.contains("PONTE-GUEST: FAIL payload differs"), "{out}");
        assert!(!out.contains("PASS"), "{out}");

        let (dir, raw) = base_disk("header");
        let mut disk = fs::read(&raw).unwrap();
        disk[0] = b'X';
        fs::write(&raw, &disk).unwrap();
        let (ok, out) = check(&dir);
        assert!(
            !ok && out.contains("FAIL header is 'XONTE-DISK 1'"),
            "{out}"
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_lost_boot_record_fails_the_next_boot() {
        let (dir, raw) = base_disk("lost");
        assert!(check(&dir).0);
        let mut disk = fs::read(&raw).unwrap();
        let at = (BOOT_RECORD_SECTOR * 512) as usize;
        disk[at..at + 512].fill(0);
        fs::write(&raw, &disk).unwrap();
        let (ok, out) = check(&dir);
        assert!(!ok, "{out}");
        assert!(
            out.contains("FAIL boot record is '', expected 'PONTE-BOOT 1'"),
            "{out}"
        );
    }

    #[test]
    fn init_prints_the_tsc_first_then_runs_the_script() {
        let dir = std::env::temp_dir().join(format!("ponte-guest-init-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let program = crate::linux_assets::assemble_init(&dir).unwrap();
        assert_eq!(&program[..4], b"\x7fELF");
        assert_eq!(
            crate::linux_assets::assemble_init(&dir).unwrap(),
            program,
            "reproducible"
        );
        let run = || {
            Command::new(dir.join("init"))
                .env_clear()
                .env("PONTE_PROBE", "1")
                .output()
                .unwrap()
        };
        let first = run();
        let second = run();
        let stdout = String::from_utf8(first.stdout).unwrap();
        let line = stdout.lines().next().unwrap();
        let value: u64 = line
            .strip_prefix(INIT_TSC)
            .unwrap_or_else(|| panic!("{line:?}"))
            .parse()
            .unwrap();
        assert!(value > 0);
        assert!(
            stdout.ends_with('\n') && stdout.lines().count() == 1,
            "{stdout:?}"
        );
        let later = value_after(&String::from_utf8(second.stdout).unwrap(), INIT_TSC).unwrap();
        assert!(later > value, "the TSC is read at each run");
        // On the host there is no /init.sh: the shell it runs says so.
        let stderr = String::from_utf8_lossy(&first.stderr);
        assert!(stderr.contains("/init.sh"), "{stderr}");
        assert!(!first.status.success());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn boot_time_is_init_tsc_minus_kernel_entry_tsc() {
        let console = "linux-vhd: kernel at 0x1000000\r\nkernel entry tsc 1000\r\n\
                       [    0.0] Linux version 6.1\r\nPONTE-GUEST: init tsc 1500000\r\n\
                       PONTE-GUEST: init started\r\n";
        assert_eq!(boot_to_userspace(console), Some(1_499_000));
        assert_eq!(boot_to_userspace("kernel entry tsc 1000\n"), None);
        assert_eq!(boot_to_userspace("PONTE-GUEST: init tsc 5\n"), None);
        assert_eq!(
            boot_to_userspace("kernel entry tsc 9\nPONTE-GUEST: init tsc 5\n"),
            None,
            "init before the entry is no measurement"
        );
        assert_eq!(
            boot_to_userspace("kernel entry tsc x\nPONTE-GUEST: init tsc 5\n"),
            None
        );
    }

    #[test]
    fn the_hypervisor_test_tells_ponte_from_the_bare_machine() {
        let matches = |cpuinfo: &str| {
            let mut child = Command::new("grep")
                .args(["-qw", HYPERVISOR_FLAG])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(cpuinfo.as_bytes())
                .unwrap();
            child.wait().unwrap().success()
        };
        let flags = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae";
        assert!(matches(&format!("{flags} hypervisor lahf_lm\n")));
        assert!(matches(&format!("{flags} hypervisor\n")));
        assert!(!matches(&format!("{flags} lahf_lm\n")));
        assert!(!matches("model name\t: hypervisor\nflags\t\t: fpu\n"));
        let init = init_script();
        let bare = init.find(BARE_MACHINE_PASS).unwrap();
        assert!(bare < init.find("insmod").unwrap());
        assert!(init.find("mount -t proc").unwrap() < init.find("/proc/cpuinfo").unwrap());
    }

    #[test]
    fn init_loads_every_module_before_waiting_for_the_disk() {
        let init = init_script();
        assert!(init.starts_with("#!/bin/sh\n"));
        let modules_at = init.find("for module in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk;").unwrap();
        let wait_at = init.find("[ ! -b /dev/vda ]").unwrap();
        assert!(modules_at < wait_at);
        assert!(init.contains("poweroff -f"));
        for applet in [
            "mount ",
            "insmod ",
            "sleep ",
            "poweroff ",
            "cat ",
            "ls ",
            "uname ",
        ] {
            assert!(init.contains(applet), "{applet}");
            assert!(APPLETS.contains(&applet.trim_end()), "{applet}");
        }
        let check = disk_check_script();
        for applet in ["dd", "cmp", "tr", "head", "sync"] {
            assert!(check.contains(&format!("{applet} ")), "{applet}");
            assert!(APPLETS.contains(&applet), "{applet}");
        }
    }
}
