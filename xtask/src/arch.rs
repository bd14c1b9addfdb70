//! The two architectures and everything the xtask needs to know per architecture.

use std::fmt;

/// A Keel architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The name used on the command line, in `KEEL_TEST_ARCH` and in the kernel banner.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Parse [`Arch::name`].
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|arch| arch.name() == name)
    }

    /// The kernel's target. AArch64 uses the soft-float target: kernel code must not touch
    /// FP/SIMD registers (they belong to user threads and are switched eagerly).
    pub fn kernel_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none-softfloat",
        }
    }

    /// The target of user programs.
    pub fn user_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none",
        }
    }

    /// The target of `tools/efi-loader`.
    pub fn loader_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-uefi",
            Arch::Aarch64 => "aarch64-unknown-uefi",
        }
    }

    /// The removable-media boot file name UEFI looks for (`\EFI\BOOT\BOOT<arch>.EFI`).
    pub fn efi_boot_file(self) -> &'static str {
        match self {
            Arch::X86_64 => "BOOTX64.EFI",
            Arch::Aarch64 => "BOOTAA64.EFI",
        }
    }

    /// The QEMU system emulator.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The `qemu-<arch>` subcommand that boots this architecture.
    pub fn qemu_subcommand(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-x86",
            Arch::Aarch64 => "qemu-aarch64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--arch x86_64|aarch64|all`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchChoice {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
    #[default]
    #[value(name = "all")]
    All,
}

impl ArchChoice {
    pub fn arches(self) -> Vec<Arch> {
        match self {
            ArchChoice::X86_64 => vec![Arch::X86_64],
            ArchChoice::Aarch64 => vec![Arch::Aarch64],
            ArchChoice::All => Arch::ALL.to_vec(),
        }
    }

    /// The value of `--arch` / `KEEL_TEST_ARCH` for this choice.
    pub fn name(self) -> &'static str {
        match self {
            ArchChoice::X86_64 => "x86_64",
            ArchChoice::Aarch64 => "aarch64",
            ArchChoice::All => "all",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(Arch::from_name(arch.name()), Some(arch));
        }
        assert_eq!(Arch::from_name("riscv64"), None);
        assert_eq!(ArchChoice::All.arches(), Arch::ALL.to_vec());
    }
}
