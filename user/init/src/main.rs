//! `init`, Keel's root task (DESIGN.md §7).
//!
//! Today it is packed into every image as the boot module named `init` so the boot path,
//! module loading and the banner's module list are exercised end to end; the kernel does
//! not start it yet. It gains system calls, server start-up and supervision with issues 8
//! and 9.
#![no_std]
#![no_main]

/// Entry point named by `ENTRY(_start)` in `user/user.ld`.
#[unsafe(no_mangle)]
extern "C" fn _start() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
