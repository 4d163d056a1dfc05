//! The runtime every ponte image starts in.
//!
//! A Multiboot2 loader (GRUB) enters the image in 32-bit protected mode;
//! [`start`](self) reaches long mode on an identity map of the first 4 GiB,
//! then this module sets up the console ([`Console`], also the `log`
//! backend), the GDT with a TSS and the exception IDT, collects the loader's
//! memory map, command line and modules into a [`BootInfo`] and calls the
//! image's `main`, named with [`entry!`](crate::entry).
//!
//! An image that hands the machine to a kernel instead leaves long mode
//! with [`enter_pvh32`].
//!
//! A run ends with [`finish`]: a `PONTE-RESULT: PASS|FAIL <reason>` line on
//! the console, then the exit conventions of both emulators (QEMU's
//! isa-debug-exit at port 0xf4, Bochs' "Shutdown" string at port 0x8900).
//! Panics and unexpected exceptions end the run as failed.

mod console;
#[cfg(target_os = "none")]
mod cpu_tables;
mod handoff;
#[cfg(target_os = "none")]
mod start;

use core::{
    fmt,
    ops::Range,
    sync::atomic::{AtomicU64, Ordering},
};

pub use console::{init_logger, Console, Verbatim};
pub use handoff::enter_pvh32;
use heapless::Vec;

/// How many memory-map entries [`BootInfo`] keeps.
pub const MAX_MEMORY_REGIONS: usize = 64;
/// How many boot modules [`BootInfo`] keeps.
pub const MAX_MODULES: usize = 16;
/// The first physical address the image may use freely; below it lie the
/// real-mode IVT, BIOS data, option ROMs and the BIOS itself.
pub const LOW_MEMORY_END: u64 = 0x10_0000;

/// What a range of the firmware's memory map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// RAM free for the image to use.
    Usable,
    /// ACPI tables, reclaimable once read.
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Faulty RAM.
    Defective,
    /// Anything else: firmware, MMIO, unknown types.
    Reserved,
}

/// One range of the firmware's memory map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Physical addresses covered (end exclusive).
    pub range: Range<u64>,
    /// What the range holds.
    pub kind: MemoryKind,
}

/// A file the loader placed in memory next to the image. Only the boot
/// runtime makes modules (the type is non-exhaustive), so `range` is always
/// memory the loader filled and the runtime keeps reserved, until the image
/// moves the module ([`HostMemory::move_module`](crate::memory::HostMemory::move_module)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BootModule {
    /// Physical addresses of its bytes as the loader placed them (end
    /// exclusive).
    pub range: Range<u64>,
    /// The module's command line as given to the loader (by convention its
    /// name followed by arguments).
    pub name: &'static str,
    /// Its entry in [`MODULE_SLOTS`].
    pub(crate) slot: usize,
}

/// Where a module's bytes are, shared by every copy of its [`BootModule`]:
/// the loader's range, whether it was borrowed, and where it was moved.
struct ModuleSlot {
    start: AtomicU64,
    len: AtomicU64,
    /// [`UNTOUCHED`], [`BORROWED`], or the address of the moved copy.
    state: AtomicU64,
}

/// Neither borrowed nor moved.
const UNTOUCHED: u64 = 0;
/// Its bytes were borrowed where the loader put them.
const BORROWED: u64 = 1;

#[allow(clippy::declare_interior_mutable_const)] // Only to initialise the array.
const EMPTY_SLOT: ModuleSlot = ModuleSlot {
    start: AtomicU64::new(0),
    len: AtomicU64::new(0),
    state: AtomicU64::new(UNTOUCHED),
};
/// The modules' locations, filled once by the runtime before `main`.
static MODULE_SLOTS: [ModuleSlot; MAX_MODULES] = [EMPTY_SLOT; MAX_MODULES];

impl BootModule {
    /// Records a module the loader placed at `range` in slot `slot`.
    #[cfg_attr(not(target_os = "none"), allow(dead_code))]
    fn register(slot: usize, range: Range<u64>, name: &'static str) -> Option<Self> {
        let entry = MODULE_SLOTS.get(slot)?;
        entry.start.store(range.start, Ordering::SeqCst);
        entry
            .len
            .store(range.end.saturating_sub(range.start), Ordering::SeqCst);
        entry.state.store(UNTOUCHED, Ordering::SeqCst);
        Some(Self { range, name, slot })
    }

    fn entry(&self) -> Option<&'static ModuleSlot> {
        MODULE_SLOTS.get(self.slot)
    }

    /// The module's bytes: where the loader put them, or where they were
    /// moved to.
    pub fn bytes(&self) -> &'static [u8] {
        if let Some(moved) = self.moved_bytes() {
            return moved;
        }
        let Some(entry) = self.entry() else {
            return &[];
        };
        // Once borrowed, the loader's copy is never given up (see
        // `record_move`). A failed exchange means borrowed or moved.
        let _ =
            entry
                .state
                .compare_exchange(UNTOUCHED, BORROWED, Ordering::SeqCst, Ordering::SeqCst);
        if let Some(moved) = self.moved_bytes() {
            return moved;
        }
        let start = entry.start.load(Ordering::SeqCst);
        let len = entry.len.load(Ordering::SeqCst) as usize;
        // SAFETY: slots are filled only by the runtime, from the loader's
        // module tags; that memory is identity-mapped, a reserved range no
        // allocator hands out and nothing writes, and it stays so: the state
        // is now BORROWED, so `move_module` never gives it up.
        unsafe { core::slice::from_raw_parts(start as *const u8, len) }
    }

    /// The moved copy's bytes, if the module was moved.
    pub(crate) fn moved_bytes(&self) -> Option<&'static [u8]> {
        let entry = self.entry()?;
        let at = entry.state.load(Ordering::SeqCst);
        if at == UNTOUCHED || at == BORROWED {
            return None;
        }
        let len = entry.len.load(Ordering::SeqCst) as usize;
        // SAFETY: `record_move` stored the address of a copy of `len`
        // bytes allocated for the module for the rest of the run and never
        // written again.
        Some(unsafe { core::slice::from_raw_parts(at as *const u8, len) })
    }

    /// Whether the bytes were borrowed where the loader put them.
    pub(crate) fn is_borrowed(&self) -> bool {
        self.entry()
            .is_some_and(|e| e.state.load(Ordering::SeqCst) == BORROWED)
    }

    /// Records that the module now lives at `to` (a copy of its bytes);
    /// false if its bytes were borrowed first (or it has no slot).
    pub(crate) fn record_move(&self, to: u64) -> bool {
        self.entry().is_some_and(|e| {
            to > BORROWED
                && e.state
                    .compare_exchange(UNTOUCHED, to, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
        })
    }

    /// The module's arguments: its command line after the first word
    /// (words are separated by ASCII whitespace, as loaders write them).
    pub fn arguments(&self) -> &'static str {
        let line = self.name.trim_ascii_start();
        line.find(|c: char| c.is_ascii_whitespace())
            .map_or("", |i| line[i..].trim_ascii_start())
    }
}

/// What the image learns from its loader.
#[derive(Clone, Debug, Default)]
pub struct BootInfo {
    /// The firmware memory map, at most [`MAX_MEMORY_REGIONS`] entries.
    pub memory_map: Vec<MemoryRegion, MAX_MEMORY_REGIONS>,
    /// Boot modules, at most [`MAX_MODULES`].
    pub modules: Vec<BootModule, MAX_MODULES>,
    /// The image's command line.
    pub command_line: &'static str,
    /// Physical addresses of the image itself (end exclusive).
    pub image: Range<u64>,
    /// Physical addresses of the loader's information block (end exclusive).
    pub loader_info: Range<u64>,
}

impl BootInfo {
    /// The usable RAM ranges of the memory map.
    pub fn usable_memory(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.memory_map
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .map(|r| r.range.clone())
    }

    /// Ranges that no allocator may hand out: low memory (firmware), the
    /// image, the loader's information block and every module.
    pub fn reserved_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        [
            0..LOW_MEMORY_END,
            self.image.clone(),
            self.loader_info.clone(),
        ]
        .into_iter()
        .chain(self.modules.iter().map(|m| m.range.clone()))
    }

    /// The first module whose name (first word of its command line) is `name`.
    pub fn module(&self, name: &str) -> Option<&BootModule> {
        self.modules
            .iter()
            .find(|m| m.name.split_ascii_whitespace().next() == Some(name))
    }

    /// Whether the image's command line contains the word `word`.
    pub fn has_argument(&self, word: &str) -> bool {
        self.command_line
            .split_ascii_whitespace()
            .any(|w| w == word)
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything the image checked held.
    Pass,
    /// Something the image checked did not hold, or it crashed.
    Fail,
}

impl Outcome {
    /// The word the runner looks for.
    pub const fn word(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
        }
    }

    /// The value written to QEMU's isa-debug-exit port; QEMU then exits with
    /// status `(value << 1) | 1`: 33 for a pass, 35 for a failure.
    pub const fn debug_exit_value(self) -> u8 {
        match self {
            Self::Pass => 0x10,
            Self::Fail => 0x11,
        }
    }
}

/// The marker that starts the result line on the console.
pub const RESULT_MARKER: &str = "PONTE-RESULT:";
const QEMU_DEBUG_EXIT_PORT: u16 = 0xF4;
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// Ends the run: prints `PONTE-RESULT: PASS|FAIL <reason>` and stops the
/// emulator (QEMU through isa-debug-exit, Bochs through port 0x8900). On a
/// machine with neither, the CPU halts with interrupts off.
pub fn finish(outcome: Outcome, reason: fmt::Arguments<'_>) -> ! {
    crate::println!(
        "{} {} {reason}",
        Verbatim(RESULT_MARKER),
        Verbatim(outcome.word())
    );
    Console::drain();
    // SAFETY: both ports are the emulators' exit devices, owned by the image;
    // on hardware without them the writes go nowhere. Halting with
    // interrupts off is the intended end of the run.
    unsafe {
        x86::io::outb(QEMU_DEBUG_EXIT_PORT, outcome.debug_exit_value());
        for byte in b"Shutdown" {
            x86::io::outb(BOCHS_SHUTDOWN_PORT, *byte);
        }
        loop {
            core::arch::asm!("cli", "hlt", options(nomem, nostack));
        }
    }
}

/// An error as the image prints it. With ponte-arch's `diagnostics` feature
/// it is the error's `Debug` form, every field included. Without it, only the
/// error's type is named: the image then carries none of the errors'
/// formatting code, which is a large part of a small image, and a failing
/// step is still named by its caller ([`or_fail!`](crate::or_fail)). Turn the
/// feature on to see the values.
pub struct ErrorReport<'a, E>(pub &'a E);

impl<E: fmt::Debug> fmt::Display for ErrorReport<'_, E> {
    #[cfg(feature = "diagnostics")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }

    #[cfg(not(feature = "diagnostics"))]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ErrorType(core::any::type_name::<E>()), f)
    }
}

/// Unwraps a `Result`, or ends the run as failed naming `what` and the
/// error (see [`ErrorReport`]):
/// `let vmx = or_fail!(memory.enable_vmx(), "VMX bring-up");`.
#[macro_export]
macro_rules! or_fail {
    ($result:expr, $what:literal) => {
        match $result {
            Ok(value) => value,
            Err(e) => $crate::boot::fail_step($what, &e),
        }
    };
}

/// Ends the run as failed: step `what` returned `error` (see
/// [`ErrorReport`]). Each step that can fail costs its caller a call, not
/// the formatting: with the `diagnostics` feature this is out of line;
/// without it, it only passes the error's type name on to one function
/// shared by every error type.
#[cold]
#[cfg_attr(feature = "diagnostics", inline(never))]
#[cfg_attr(not(feature = "diagnostics"), inline(always))]
pub fn fail_step<E: fmt::Debug>(what: &str, error: &E) -> ! {
    #[cfg(feature = "diagnostics")]
    finish(
        Outcome::Fail,
        format_args!("{}: {}", Verbatim(what), ErrorReport(error)),
    );
    #[cfg(not(feature = "diagnostics"))]
    {
        let _ = error;
        fail_step_of_type(what, core::any::type_name::<E>())
    }
}

/// [`fail_step`] without details, shared by every error type.
#[cfg(not(feature = "diagnostics"))]
#[cold]
#[inline(never)]
fn fail_step_of_type(what: &str, type_name: &str) -> ! {
    finish(
        Outcome::Fail,
        format_args!("{}: {}", Verbatim(what), ErrorType(type_name)),
    )
}

/// An error's type name, as [`ErrorReport`] prints it without details.
#[cfg(not(feature = "diagnostics"))]
struct ErrorType<'a>(&'a str);

#[cfg(not(feature = "diagnostics"))]
impl fmt::Display for ErrorType<'_> {
    // Out of line: every `ErrorReport` instance calls this one copy.
    #[inline(never)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(" (details with ponte-arch's diagnostics feature)")
    }
}

/// Names the image's `main`, a `fn(BootInfo, HostMemory) -> !` called once
/// boot is done with what the loader said and the free host memory.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        fn ponte_main(boot: $crate::boot::BootInfo, memory: $crate::memory::HostMemory) -> ! {
            let main: fn($crate::boot::BootInfo, $crate::memory::HostMemory) -> ! = $main;
            main(boot, memory)
        }
    };
}

#[cfg(target_os = "none")]
mod runtime {
    use super::*;
    use crate::memory::HostMemory;

    const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;

    extern "Rust" {
        fn ponte_main(boot: BootInfo, memory: HostMemory) -> !;
    }

    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }

    #[no_mangle]
    extern "C" fn ponte_boot_entry64(magic: u32, info: u32) -> ! {
        Console::init();
        init_logger(log::LevelFilter::Info);
        cpu_tables::init();
        crate::cpu::mask_legacy_pic();
        crate::cpu::enable_sse_moves();
        if magic != MULTIBOOT2_MAGIC {
            finish(
                Outcome::Fail,
                format_args!("loader magic {magic:#x} is not Multiboot2"),
            );
        }
        let boot = read_multiboot2(info);
        // SAFETY: the boot page tables identity-map the first 4 GiB; the
        // firmware's usable ranges are RAM, and the reserved ranges of
        // `boot` name everything else in use: firmware, the image (with its
        // stacks and tables), the loader's information and the modules;
        // this is the only HostMemory.
        let memory = match unsafe { HostMemory::new(&boot) } {
            Ok(memory) => memory,
            Err(e) => finish(
                Outcome::Fail,
                format_args!("memory map unusable: {}", ErrorReport(&e)),
            ),
        };
        // SAFETY: `ponte_main` is defined by the image through `entry!` with
        // exactly this signature.
        unsafe { ponte_main(boot, memory) }
    }

    /// Room in the image for the loader's information block. The block is
    /// copied here when it fits, so that the memory the loader put it in is
    /// free for the image (a kernel loaded at a fixed address, say) instead
    /// of a reserved hole wherever the loader chose.
    const LOADER_INFO_ROOM: usize = 8192;

    #[repr(C, align(8))]
    struct LoaderInfoCopy([u8; LOADER_INFO_ROOM]);

    /// Where the boot information is read from: a copy inside the image if
    /// the block fits in [`LOADER_INFO_ROOM`], else the block where it lies.
    fn loader_info_in_image(info: u32) -> usize {
        static mut COPY: LoaderInfoCopy = LoaderInfoCopy([0; LOADER_INFO_ROOM]);
        // SAFETY: the loader passed `info` in EBX with the Multiboot2 magic:
        // an 8-byte aligned, identity-mapped block whose first dword is its
        // total size. Runs once, before `main`, on the only CPU, so nothing
        // else touches COPY; the copy is bounded by the room.
        unsafe {
            let size = core::ptr::read(info as usize as *const u32) as usize;
            if !(8..=LOADER_INFO_ROOM).contains(&size) {
                return info as usize;
            }
            let copy = &raw mut COPY;
            core::ptr::copy_nonoverlapping(
                info as usize as *const u8,
                (*copy).0.as_mut_ptr(),
                size,
            );
            (*copy).0.as_ptr() as usize
        }
    }

    fn read_multiboot2(info: u32) -> BootInfo {
        use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

        let info = loader_info_in_image(info);

        // SAFETY: `info` is the loader's boot information block or its copy
        // in the image, identity-mapped, and nothing overwrites it: the copy
        // is the image's, and a block left in place is a reserved range from
        // here on.
        static mut LOADER_INFO: Option<BootInformation<'static>> = None;
        let mbi = match unsafe { BootInformation::load(info as *const BootInformationHeader) } {
            Ok(mbi) => mbi,
            Err(e) => finish(
                Outcome::Fail,
                format_args!("bad Multiboot2 information: {}", ErrorReport(&e)),
            ),
        };
        // SAFETY: runs once, before `main`, on the only CPU; the block it
        // describes stays in place for the whole run, so the strings borrowed
        // from it are 'static.
        let mbi: &'static BootInformation<'static> = unsafe {
            let slot = &raw mut LOADER_INFO;
            (*slot).insert(mbi)
        };
        let mut boot = BootInfo {
            image: (&raw const __image_start) as u64..(&raw const __image_end) as u64,
            loader_info: mbi.start_address() as u64..mbi.end_address() as u64,
            ..BootInfo::default()
        };
        if let Some(line) = mbi.command_line_tag().and_then(|t| t.cmdline().ok()) {
            boot.command_line = line;
        }
        if let Some(map) = mbi.memory_map_tag() {
            for area in map.memory_areas() {
                let kind = match area.typ() {
                    MemoryAreaType::Available => MemoryKind::Usable,
                    MemoryAreaType::AcpiAvailable => MemoryKind::AcpiReclaimable,
                    MemoryAreaType::ReservedHibernate => MemoryKind::AcpiNvs,
                    MemoryAreaType::Defective => MemoryKind::Defective,
                    _ => MemoryKind::Reserved,
                };
                let start = area.start_address();
                let region = MemoryRegion {
                    range: start..start.saturating_add(area.size()),
                    kind,
                };
                if boot.memory_map.push(region).is_err() {
                    log::warn!("memory map has more than {MAX_MEMORY_REGIONS} entries; the rest is ignored");
                    break;
                }
            }
        }
        for module in mbi.module_tags() {
            let name = module.cmdline().unwrap_or("");
            let range = u64::from(module.start_address())..u64::from(module.end_address());
            let registered = BootModule::register(boot.modules.len(), range, name);
            if registered.and_then(|m| boot.modules.push(m).ok()).is_none() {
                log::warn!("more than {MAX_MODULES} boot modules; the rest is ignored");
                break;
            }
        }
        boot
    }

    /// A panic ends the run. Its message is printed with the `diagnostics`
    /// feature; without it the location alone names the panic, and the
    /// messages' formatting stays out of the image.
    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        #[cfg(feature = "diagnostics")]
        let message = info.message();
        #[cfg(not(feature = "diagnostics"))]
        let message = Verbatim("message with ponte-arch's diagnostics feature");
        match info.location() {
            Some(at) => finish(
                Outcome::Fail,
                format_args!(
                    "panic at {}:{}:{}: {message}",
                    Verbatim(at.file()),
                    at.line(),
                    at.column()
                ),
            ),
            None => finish(Outcome::Fail, format_args!("panic: {message}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorReport, Verbatim};
    use std::format;

    #[test]
    fn verbatim_text_is_written_whole_and_unpadded() {
        assert_eq!(format!("[{}]", Verbatim("rip rsp")), "[rip rsp]");
        assert_eq!(format!("[{:>9.2}]", Verbatim("VMLAUNCH")), "[VMLAUNCH]");
        assert_eq!(format!("[{}]", Verbatim("")), "[]");
    }

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug only
    enum ProbeError {
        TooLarge { len: u64 },
    }

    #[test]
    fn error_report_prints_details_only_with_diagnostics() {
        let report = format!("{}", ErrorReport(&ProbeError::TooLarge { len: 7 }));
        if cfg!(feature = "diagnostics") {
            assert_eq!(report, "TooLarge { len: 7 }");
        } else {
            assert!(
                report.starts_with("ponte_arch::boot::tests::ProbeError"),
                "{report}"
            );
            assert!(!report.contains("TooLarge"), "{report}");
        }
    }
}
