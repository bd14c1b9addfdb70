//! The xtask as a daily tool: two boots of the same image path at once both run (each QEMU
//! boots an image of its own), and a killed xtask takes its QEMU with it.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{Arch, BOOT_TIMEOUT, Ending, Serial, boot, expect_ending, options, selected};

/// Two terminals running `cargo xtask qemu-<arch> --cmdline test=boot --timeout 120`: the
/// same default image path, written and booted twice at once.
fn two_boots_at_once(arch: Arch) {
    if !selected(arch, &format!("concurrent boots on {arch}")) {
        return;
    }
    let mut options = options(arch, "concurrent", "test=boot");
    // As the command line does: the image stays at its path.
    options.keep_image = true;
    options.qemu.timeout = Some(Duration::from_secs(120));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let options = options.clone();
            std::thread::spawn(move || boot(&options))
        })
        .collect();
    for run in runs {
        let outcome = run.join().expect("a boot thread panicked");
        let mut serial = Serial::new(&outcome);
        serial.expect(&format!("Keel {} {arch}", env!("CARGO_PKG_VERSION")));
        expect_ending(&outcome, &Ending::Exit(0));
    }
    // Each run removed its own copy; the path holds the last image written.
    let image = options.image.expect("tests name their image");
    assert!(image.exists(), "{} is gone", image.display());
    assert!(
        run_images_of(&image).is_empty(),
        "run images left behind: {:?}",
        run_images_of(&image)
    );
    std::fs::remove_file(&image).expect("the published image can be removed");
}

/// The files next to `image` that are per-run copies of it.
fn run_images_of(image: &Path) -> Vec<String> {
    let stem = image.file_stem().unwrap().to_string_lossy().into_owned();
    std::fs::read_dir(image.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("{stem}.run-")))
        .collect()
}

/// The variable that makes [`orphan_child`] boot: `<arch>:<image path>`.
const CHILD_VAR: &str = "KEEL_TEST_ORPHAN_BOOT";

/// The process the orphan test kills: an xtask booting a kernel that never powers off.
#[test]
#[ignore = "run by the killed-xtask tests as the process they kill"]
fn orphan_child() {
    let Ok(value) = std::env::var(CHILD_VAR) else {
        return;
    };
    let (arch, image) = value.split_once(':').expect("<arch>:<image>");
    let arch = Arch::from_name(arch).expect("an architecture");
    let mut options = options(arch, "orphan", "");
    options.image = Some(image.into());
    let _ = boot(&options);
}

/// The processes whose command line contains `marker`.
fn processes_naming(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}

/// `kill -9` of the xtask while QEMU runs: QEMU is gone within a few seconds.
fn killed_xtask_leaves_no_qemu(arch: Arch) {
    if !selected(arch, &format!("killed-xtask test on {arch}")) {
        return;
    }
    if !Path::new("/proc/self/cmdline").exists() {
        tests::note("skipping the killed-xtask test: no /proc to find QEMU in");
        return;
    }
    let marker = format!("test-{arch}-orphan-{}", std::process::id());
    let image = tests::workspace()
        .images_dir()
        .join(format!("{marker}.img"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "orphan_child", "--ignored", "--nocapture"])
        .env(CHILD_VAR, format!("{arch}:{}", image.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let qemu = loop {
        let found = processes_naming(&marker);
        if !found.is_empty() {
            break found;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the xtask ended ({status}) before QEMU started");
        }
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "QEMU did not start within {} s",
            BOOT_TIMEOUT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let the firmware get going: QEMU is busy, not just starting.
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    while !processes_naming(&marker).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "QEMU ({qemu:?}) still runs 10 s after its xtask was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The killed run could not remove its image copies; the next run would.
    for name in run_images_of(&image) {
        let _ = std::fs::remove_file(image.with_file_name(name));
    }
    let _ = std::fs::remove_file(&image);
}

#[test]
fn two_boots_at_once_x86_64() {
    two_boots_at_once(Arch::X86_64);
}

#[test]
fn two_boots_at_once_aarch64() {
    two_boots_at_once(Arch::Aarch64);
}

#[test]
fn killed_xtask_leaves_no_qemu_x86_64() {
    killed_xtask_leaves_no_qemu(Arch::X86_64);
}

#[test]
fn killed_xtask_leaves_no_qemu_aarch64() {
    killed_xtask_leaves_no_qemu(Arch::Aarch64);
}
