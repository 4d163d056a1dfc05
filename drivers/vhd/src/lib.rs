//! VHD disk images.
#![no_std]
