//! Test doubles shared by the device tests.

use core::cell::RefCell;
use ponte_kernel::irq::InterruptLine;
use std::rc::Rc;
use std::vec::Vec;

/// A line that records every level it is driven to.
#[derive(Clone, Default)]
pub struct RecordingLine(Rc<RefCell<Vec<bool>>>);

impl RecordingLine {
    /// The last level driven.
    pub fn level(&self) -> bool {
        self.0.borrow().last().copied().unwrap_or(false)
    }

    /// Every level driven, in order.
    pub fn transitions(&self) -> Vec<bool> {
        self.0.borrow().clone()
    }
}

impl InterruptLine for RecordingLine {
    fn set_level(&self, asserted: bool) {
        self.0.borrow_mut().push(asserted);
    }

    fn pulse(&self) {
        self.0.borrow_mut().extend([true, false]);
    }
}
