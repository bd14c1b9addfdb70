//! Bad input to the xtask ends with one clear line and a non-zero exit status, before
//! anything is built or booted.
#![forbid(unsafe_code)]

use clap::Parser as _;
use tests::{Arch, Error, options, workspace};
use xtask::cli::Cli;
use xtask::loader::LoaderChoice;

fn expect_one_line(error: &Error, needles: &[&str]) {
    let line = error.to_string();
    assert!(!line.contains('\n'), "not one line: {line:?}");
    assert!(line.starts_with("xtask: error: "), "{line:?}");
    assert_ne!(error.exit_code(), 0);
    for needle in needles {
        assert!(
            line.contains(needle),
            "{line:?} does not mention {needle:?}"
        );
    }
}

#[test]
fn missing_firmware_file_names_file_and_variable() {
    for (arch, variable, package) in [
        (Arch::X86_64, "OVMF_CODE", "ovmf"),
        (Arch::Aarch64, "AAVMF_VARS", "qemu-efi-aarch64"),
    ] {
        let missing = format!("/nonexistent/keel-test/{variable}.fd");
        let workspace = workspace().with_var(variable, Some(&missing));
        let error = xtask::boot::boot(&workspace, &options(arch, "bad-firmware", "test=boot"))
            .expect_err("a missing firmware file must fail");
        expect_one_line(&error, &[&missing, variable, package]);
    }
}

#[test]
fn loader_limine_without_binaries_says_where_it_looked() {
    let empty = workspace().images_dir().join("empty-limine-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let workspace = workspace().with_var("LIMINE_DIR", empty.to_str());
    for arch in Arch::ALL {
        let dirs = xtask::loader::search_dirs(&workspace);
        if xtask::loader::find_limine(&dirs, arch).is_some() {
            tests::note(format_args!(
                "skipping --loader limine on {arch}: Limine is installed"
            ));
            continue;
        }
        let mut options = options(arch, "bad-limine", "test=boot");
        options.loader = LoaderChoice::Limine;
        let error = xtask::boot::boot(&workspace, &options)
            .expect_err("--loader limine without binaries must fail");
        expect_one_line(
            &error,
            &[
                empty.to_str().unwrap(),
                "/usr/share/limine",
                "LIMINE_DIR",
                "8.x",
            ],
        );
    }
}

#[test]
fn unknown_arch_and_bad_options_are_usage_errors() {
    for args in [
        &["xtask", "build", "--arch", "riscv64"][..],
        &["xtask", "test", "--arch", "x86"],
        &["xtask", "image", "--loader", "grub"],
        &["xtask", "qemu-aarch64", "--gic", "4"],
    ] {
        let error = Cli::try_parse_from(args).expect_err("clap rejects it");
        assert_ne!(error.exit_code(), 0, "{args:?}");
    }
    let cli = Cli::try_parse_from(["xtask", "qemu-x86", "--gic", "2", "--timeout", "1"]).unwrap();
    let error = xtask::cli::run(&workspace(), cli).expect_err("--gic is AArch64 only");
    expect_one_line(&error, &["--gic"]);
}

#[test]
fn multi_line_cmdline_is_rejected() {
    let error = xtask::boot::boot(&workspace(), &options(Arch::X86_64, "bad-cmdline", "a\nb"))
        .expect_err("a command line with a line break must fail");
    expect_one_line(&error, &["--cmdline"]);
}
