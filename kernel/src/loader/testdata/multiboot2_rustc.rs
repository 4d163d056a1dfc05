//! A minimal Multiboot2 guest kernel used as a loader test fixture.
#![no_std]
#![no_main]

const MAGIC: u32 = 0xE852_50D6;
const LEN: u32 = 24;

#[used]
#[link_section = ".multiboot2"]
static HEADER: [u32; 6] = [
    MAGIC,
    0,
    LEN,
    0u32.wrapping_sub(MAGIC.wrapping_add(LEN)),
    0,
    8,
];

#[used]
#[no_mangle]
static mut GREETING: [u8; 16] = *b"hello from data\0";

#[used]
#[no_mangle]
static mut SCRATCH: [u8; 0x2000] = [0; 0x2000];

#[no_mangle]
pub extern "C" fn _start() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
