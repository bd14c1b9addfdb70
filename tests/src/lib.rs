//! QEMU integration tests (skeleton).
