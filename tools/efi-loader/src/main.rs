//! `efi-loader`: a UEFI application that boots a Limine-protocol kernel the way Limine
//! does, for the part of the protocol Keel uses (DESIGN.md §4). It exists because Limine
//! binaries cannot be installed everywhere Keel is built; where they can, Limine is used.
//!
//! The decisions live in the library (`lib.rs`, host-tested); this binary is the UEFI
//! glue: files, firmware tables, allocations, and the jump (see `efi/mod.rs` for the
//! order of events). On the host it builds to an empty program so that
//! `cargo test -p efi-loader` works.
#![cfg_attr(target_os = "uefi", no_std)]
#![cfg_attr(target_os = "uefi", no_main)]

#[cfg(target_os = "uefi")]
extern crate alloc;

#[cfg(target_os = "uefi")]
mod efi;

#[cfg(not(target_os = "uefi"))]
fn main() {}

#[cfg(target_os = "uefi")]
mod entry {
    use uefi::{Status, boot, println};

    use crate::efi::ERROR_PAUSE;

    #[uefi::entry]
    fn main() -> Status {
        if uefi::helpers::init().is_err() {
            return Status::ABORTED;
        }
        let message = crate::efi::run();
        println!("keel-efi-loader: error: {message}");
        boot::stall(ERROR_PAUSE);
        Status::LOAD_ERROR
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        if crate::efi::boot_services_active() {
            println!("keel-efi-loader: internal error: {info}");
            boot::stall(ERROR_PAUSE);
            // SAFETY: exiting the image with an error status hands control back to the
            // firmware's boot manager; the loader's state is abandoned, nothing runs after.
            let _ = unsafe {
                boot::exit(
                    boot::image_handle(),
                    Status::ABORTED,
                    0,
                    core::ptr::null_mut(),
                )
            };
        }
        crate::efi::fatal("panic after ExitBootServices")
    }
}
