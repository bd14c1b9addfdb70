//! Pure logic of the loader (skeleton: being written).
#![cfg_attr(not(test), no_std)]
