//! VT-x: capabilities, the typed VMCS, controls, VM entry and VM exits.
