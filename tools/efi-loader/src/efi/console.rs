//! The boot menu's whole job: wait `timeout` seconds for a choice, then boot the default
//! entry. A digit picks entry 1–9, Enter boots the default at once.

use core::time::Duration;

use efi_loader::config::{Config, Timeout};
use uefi::proto::console::text::Key;
use uefi::{boot, println, system};

fn key() -> Option<char> {
    match system::with_stdin(|input| input.read_key()) {
        Ok(Some(Key::Printable(character))) => Some(char::from(character)),
        _ => None,
    }
}

/// The 1-based number of the entry to boot.
pub fn choose_entry(config: &Config) -> usize {
    let default = config.default_entry;
    let steps = match config.timeout {
        Timeout::Seconds(0) => return default,
        Timeout::Seconds(seconds) => Some(seconds * 10),
        Timeout::Never => None,
    };
    for (index, entry) in config.entries.iter().enumerate() {
        let marker = if index + 1 == default { '*' } else { ' ' };
        println!(
            "{marker} {}: {:indent$}{}",
            index + 1,
            "",
            entry.name,
            indent = 2 * (entry.depth - 1)
        );
    }
    match config.timeout {
        Timeout::Seconds(seconds) => println!(
            "booting entry {default} in {seconds} s (a digit picks another, Enter boots now)"
        ),
        Timeout::Never => println!("press a digit to pick an entry, Enter to boot entry {default}"),
    }
    let mut waited = 0;
    while steps.is_none_or(|steps| waited < steps) {
        match key() {
            Some('\r' | '\n') => return default,
            Some(digit @ '1'..='9') => {
                let number = digit as usize - '0' as usize;
                if number <= config.entries.len() {
                    return number;
                }
            }
            _ => {}
        }
        boot::stall(Duration::from_millis(100));
        waited += 1;
    }
    default
}
