//! Decoding of the guest instructions behind an exit that does not describe its own operands (MMIO).
