//! Keel's aarch64 architecture crate (skeleton: being written).
#![no_std]

use arch_api::{EarlyError, EarlyInfo, ExitCode, FrameSource, Platform};

pub struct Cpu;

impl Platform for Cpu {
    const NAME: &'static str = "aarch64";
    fn early_init(_info: &EarlyInfo<'_>, _frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
        unimplemented!()
    }
    fn console_write(_bytes: &[u8]) {}
    fn start_timer(_hz: u32) -> Result<(), EarlyError> {
        unimplemented!()
    }
    fn wait_for_interrupt() {}
    fn power_off(_code: ExitCode) -> ! {
        loop {}
    }
}
