//! The image's own console: COM1 (16550, 115200 8N1, polled) mirrored to the
//! emulators' debug port 0xE9, and the `log` backend that writes to it.

use core::fmt::{self, Write};

use x86::io::{inb, outb};

const COM1: u16 = 0x3F8;
const DEBUG_PORT: u16 = 0xE9;
/// Upper bound on polls of the line status register per byte, so that a
/// missing or stuck UART cannot hang the console.
const THRE_POLL_LIMIT: u32 = 100_000;

/// Writes formatted text to COM1 and port 0xE9. Stateless: every value is the
/// same console.
#[derive(Clone, Copy, Debug, Default)]
pub struct Console;

impl Console {
    /// Programs COM1 for 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init() {
        // SAFETY: port I/O to the COM1 UART registers only; the image owns the
        // UART and nothing else drives it.
        unsafe {
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x80);
            outb(COM1, 0x01);
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x03);
            outb(COM1 + 2, 0xC7);
            outb(COM1 + 4, 0x03);
        }
    }

    /// Writes one byte, translating `\n` into `\r\n` on the UART.
    pub fn write_byte(byte: u8) {
        if byte == b'\n' {
            Self::put(b'\r');
        }
        Self::put(byte);
    }

    /// Waits (boundedly) until the UART has sent every byte, so that output
    /// written just before the machine stops is not lost.
    pub fn drain() {
        // SAFETY: reads the COM1 line status register only.
        let mut polls = 0;
        while unsafe { inb(COM1 + 5) } & 0x40 == 0 && polls < THRE_POLL_LIMIT {
            polls += 1;
        }
    }

    fn put(byte: u8) {
        // SAFETY: reads the COM1 line status register and writes its transmit
        // register and the debug port; no memory is touched.
        unsafe {
            let mut polls = 0;
            while inb(COM1 + 5) & 0x20 == 0 && polls < THRE_POLL_LIMIT {
                polls += 1;
            }
            outb(COM1, byte);
            outb(DEBUG_PORT, byte);
        }
    }
}

/// Text printed as is. `str`'s own `Display` honours a width and a
/// precision, and with them brings the formatter's padding code into the
/// image; text that needs neither prints through this, a plain write.
#[derive(Clone, Copy, Debug)]
pub struct Verbatim<'a>(pub &'a str);

impl fmt::Display for Verbatim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Console {
    /// Prints `line` and a line break: what [`println!`](crate::println)
    /// expands to, out of line so that each call site stays small.
    #[inline(never)]
    pub fn print_line(line: fmt::Arguments<'_>) {
        let _ = Console.write_fmt(line);
        Self::write_byte(b'\n');
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(Self::write_byte);
        Ok(())
    }
}

/// Prints to the console, like `print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::boot::Console, format_args!($($arg)*));
    }};
}

/// Prints a line to the console, like `println!`.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::boot::Console::print_line(format_args!($($arg)*)) };
}

/// The `log` backend: one line per record, `[LEVEL target] message`.
struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            // The level in a column five wide: the names are four or five
            // letters.
            let level = record.level().as_str();
            let fill = if level.len() < 5 { " " } else { "" };
            crate::println!(
                "[{}{} {}] {}",
                Verbatim(level),
                Verbatim(fill),
                Verbatim(record.target()),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Installs the console as the `log` backend at `level`.
pub fn init_logger(level: log::LevelFilter) {
    // An image installs its logger once; a second call keeps the first.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
