//! The ACPI fixed-hardware power-management registers the FADT points at:
//! the PM1a event block (PM1_STS and PM1_EN, two 16-bit registers) and the
//! PM1a control block (PM1_CNT, 16 bits), ACPI 6.5 section 4.8.
//!
//! The machine has no SMI command port, so it is always in ACPI mode:
//! PM1_CNT reads with SCI_EN set. No fixed event (power button, timer
//! overflow) is ever raised, so the SCI stays low. Writing SLP_EN with a
//! sleep type is a request to enter that sleeping state, which the board
//! reads with [`Pm1a::take_sleep_request`]; the guest's poweroff is
//! SLP_TYP of `\_S5` with SLP_EN.

use ponte_kernel::device::{AccessWidth, PortIo};

/// PM1_CNT.SCI_EN: the machine is in ACPI mode.
const SCI_EN: u16 = 1 << 0;
/// PM1_CNT.SLP_EN: enter the sleeping state of SLP_TYP (write-only).
const SLP_EN: u16 = 1 << 13;
/// PM1_CNT.SLP_TYP, bits 12:10.
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
/// PM1_STS bits software may clear: none is ever set (no fixed event
/// happens on this machine).
const STATUS_WRITABLE: u16 = 0;
/// PM1_EN bits of the fixed events ACPI defines (TMR_EN 0, GBL_EN 5,
/// PWRBTN_EN 8, SLPBTN_EN 9, RTC_EN 10): they hold what the OS writes, as
/// it reads them back to check, though their events never occur.
const ENABLE_WRITABLE: u16 = (1 << 0) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 10);

/// The PM1a event and control blocks at `event_base` (4 ports) and
/// `control_base` (2 ports).
#[derive(Debug)]
pub struct Pm1a {
    event_base: u16,
    control_base: u16,
    status: u16,
    enable: u16,
    control: u16,
    sleep_request: Option<u8>,
}

impl Pm1a {
    /// The blocks at the FADT's `PM1a_EVT_BLK` and `PM1a_CNT_BLK`.
    pub const fn new(event_base: u16, control_base: u16) -> Self {
        Self {
            event_base,
            control_base,
            status: 0,
            enable: 0,
            control: SCI_EN,
            sleep_request: None,
        }
    }

    /// The sleep type the guest asked for with SLP_EN, once.
    pub fn take_sleep_request(&mut self) -> Option<u8> {
        self.sleep_request.take()
    }

    /// The 16-bit register containing `port` and the byte's offset in it.
    fn register(&self, port: u16) -> Option<(u8, u16)> {
        let event = port.wrapping_sub(self.event_base);
        let control = port.wrapping_sub(self.control_base);
        match (event, control) {
            (0..=1, _) => Some((0, event * 8)),
            (2..=3, _) => Some((1, (event - 2) * 8)),
            (_, 0..=1) => Some((2, control * 8)),
            _ => None,
        }
    }

    fn read16(&self, register: u8) -> u16 {
        match register {
            0 => self.status,
            1 => self.enable,
            // SLP_EN always reads as zero.
            _ => self.control & !SLP_EN,
        }
    }

    fn write16(&mut self, register: u8, value: u16, mask: u16) {
        match register {
            // Write-one-to-clear.
            0 => self.status &= !(value & mask & STATUS_WRITABLE),
            1 => self.enable = (self.enable & !mask) | (value & mask & ENABLE_WRITABLE),
            _ => {
                // SCI_EN is owned by the hardware without SMI_CMD.
                let writable = mask & !SCI_EN & !SLP_EN;
                self.control = (self.control & !writable) | (value & writable);
                if value & mask & SLP_EN != 0 {
                    self.sleep_request =
                        Some(((self.control & SLP_TYP_MASK) >> SLP_TYP_SHIFT) as u8);
                }
            }
        }
    }
}

impl PortIo for Pm1a {
    fn io_read(&mut self, port: u16, width: AccessWidth) -> u32 {
        let Some((register, shift)) = self.register(port) else {
            return width.mask() as u32;
        };
        let value = u32::from(self.read16(register)) >> shift;
        // A dword read covers PM1_STS and PM1_EN together.
        let value = if width == AccessWidth::Dword && register == 0 && shift == 0 {
            value | (u32::from(self.enable) << 16)
        } else {
            value
        };
        value & width.mask() as u32
    }

    fn io_write(&mut self, port: u16, width: AccessWidth, value: u32) {
        let Some((register, shift)) = self.register(port) else {
            return;
        };
        let bits = (value & width.mask() as u32) << shift;
        let mask = ((width.mask() as u32) << shift) as u16;
        self.write16(register, bits as u16, mask);
        if width == AccessWidth::Dword && register == 0 && shift == 0 {
            self.write16(1, (value >> 16) as u16, 0xffff);
        }
    }
}
