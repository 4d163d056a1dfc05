//! Extended page tables: the guest-physical to host-physical translation.
