//! Bootable disk images: a GPT disk with one FAT EFI system partition, built in Rust.
//!
//! The partition holds the UEFI loader at the removable-media path (`EFI/BOOT/BOOTX64.EFI`
//! or `BOOTAA64.EFI`), `limine.conf`, the kernel at `/boot/keel` and each user program at
//! `/boot/<name>`. The FAT file system is formatted in memory and written into the file at
//! the partition's offset; the GPT (with its protective MBR) is written around it. No
//! external tool (mtools, xorriso, mkfs) is involved.
//!
//! `limine.conf` uses Limine 8 syntax and names the kernel with both `kernel_path` (Limine 8)
//! and `path` (Limine 9 and later), so one image boots under `efi-loader` and any Limine ≥ 8.
//! With [`Contents::fixed_hhdm`] it adds `randomise_hhdm_base: no`, which fixes the HHDM at
//! its lowest address (benchmarks want reproducible runs); otherwise the loader randomises
//! the HHDM base on every boot, as Limine does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Arch, Context, Error, Result};

/// Sector size of the image.
const SECTOR: u64 = 512;
/// Partition alignment and the space reserved before it (1 MiB, as partitioning tools do).
const ALIGN: u64 = 1 << 20;
/// The smallest ESP we make: large enough that the FAT is FAT32, which the UEFI
/// specification names for system partitions.
const MIN_ESP: u64 = 64 << 20;
/// Where the kernel lives on the ESP.
pub const KERNEL_PATH: &str = "boot/keel";

/// Everything that goes onto the ESP.
#[derive(Clone, Debug)]
pub struct Contents {
    pub arch: Arch,
    /// The UEFI application installed as `EFI/BOOT/BOOT<arch>.EFI`.
    pub loader: Vec<u8>,
    /// The kernel ELF.
    pub kernel: Vec<u8>,
    /// `(name, ELF)` of each user program, packed as a module with command line `name`.
    pub modules: Vec<(String, Vec<u8>)>,
    /// The kernel command line.
    pub cmdline: String,
    /// Fix the HHDM base (`randomise_hhdm_base: no`) instead of letting the loader
    /// randomise it.
    pub fixed_hhdm: bool,
}

/// The `limine.conf` for a kernel command line and a list of module names; `fixed_hhdm`
/// asks for the HHDM at its fixed base.
pub fn limine_conf(cmdline: &str, modules: &[&str], fixed_hhdm: bool) -> String {
    let mut text = String::from("timeout: 0\n\n/Keel\n    protocol: limine\n");
    // Limine 8 calls it `kernel_path`; Limine 9 renamed it `path`. Each ignores the other.
    text.push_str(&format!("    kernel_path: boot():/{KERNEL_PATH}\n"));
    text.push_str(&format!("    path: boot():/{KERNEL_PATH}\n"));
    if !cmdline.is_empty() {
        text.push_str(&format!("    cmdline: {cmdline}\n"));
    }
    if fixed_hhdm {
        text.push_str("    randomise_hhdm_base: no\n");
    }
    for name in modules {
        text.push_str(&format!("    module_path: boot():/boot/{name}\n"));
        text.push_str(&format!("    module_cmdline: {name}\n"));
    }
    text
}

/// Check that a kernel command line fits in one `limine.conf` line.
pub fn check_cmdline(cmdline: &str) -> Result<()> {
    if cmdline.contains(['\n', '\r']) {
        return Err(Error::new(
            "the kernel command line must be one line; remove the line breaks from --cmdline",
        ));
    }
    Ok(())
}

/// Write the disk image to `path` (replacing it) and return its size in bytes.
pub fn write(path: &Path, contents: &Contents) -> Result<u64> {
    check_cmdline(&contents.cmdline)?;
    let names: Vec<&str> = contents
        .modules
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let conf = limine_conf(&contents.cmdline, &names, contents.fixed_hhdm);

    let mut files: Vec<(String, &[u8])> = vec![
        (
            format!("EFI/BOOT/{}", contents.arch.efi_boot_file()),
            &contents.loader,
        ),
        ("limine.conf".to_owned(), conf.as_bytes()),
        (KERNEL_PATH.to_owned(), &contents.kernel),
    ];
    for (name, elf) in &contents.modules {
        files.push((format!("boot/{name}"), elf));
    }

    let payload: u64 = files.iter().map(|(_, data)| data.len() as u64).sum();
    // Room for FAT overhead, cluster slack and a user copying a file or two in by hand.
    let esp_size = round_up((payload + payload / 4 + (8 << 20)).max(MIN_ESP), ALIGN);
    let esp = format_esp(esp_size, &files)
        .context(|| format!("cannot build the FAT partition for {}", path.display()))?;

    let total = ALIGN + esp_size + ALIGN;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    }
    // Write under a name of its own and rename: a QEMU still running the previous image
    // keeps the file it opened, and never sees a half-written one.
    let temp = unique_sibling(path, "tmp");
    let written = write_disk(&temp, total, &esp)
        .and_then(|()| fs::rename(&temp, path))
        .context(|| format!("cannot write {}", path.display()));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    Ok(total)
}

/// A name next to `path` that no other run and no other call of this process uses:
/// `<stem>.<what>-<pid>-<n>.<extension>`.
fn unique_sibling(path: &Path, what: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let extension = path.extension().map_or(String::new(), |extension| {
        format!(".{}", extension.to_string_lossy())
    });
    path.with_file_name(format!(
        "{stem}.{what}-{}-{n}{extension}",
        std::process::id()
    ))
}

/// The images of QEMU runs in progress ([`write_for_run`]), until [`RunImage::claim`].
static RUN_IMAGES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Write the image one QEMU run boots: a file of its own (so two runs at once never share
/// an image or its write lock), also published at `path` for the user when `publish` is
/// set (replacing what was there atomically). Returns the run's file and the image's size;
/// [`RunImage::claim`] takes the file over, to remove it when QEMU has ended.
pub fn write_for_run(path: &Path, contents: &Contents, publish: bool) -> Result<(PathBuf, u64)> {
    if let Some(dir) = path.parent() {
        remove_stale_run_images(dir);
    }
    let run = unique_sibling(path, RUN);
    let size = write(&run, contents)?;
    RUN_IMAGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(run.clone());
    if !publish {
        return Ok((run, size));
    }
    let temp = unique_sibling(path, "tmp");
    let published = fs::hard_link(&run, &temp)
        .or_else(|_| fs::copy(&run, &temp).map(|_| ()))
        .and_then(|()| fs::rename(&temp, path))
        .context(|| format!("cannot write {}", path.display()));
    if published.is_err() {
        let _ = fs::remove_file(&temp);
        drop(RunImage::claim(&run));
    }
    published?;
    Ok((run, size))
}

/// What names a run's image ([`write_for_run`]).
const RUN: &str = "run";

/// Remove the run images and firmware variables a killed xtask left behind in `dir` (their
/// process is gone).
fn remove_stale_run_images(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // `<stem>.run-<pid>-<n>.img`, `<stem>.tmp-<pid>-<n>.img` and the firmware
        // variables of a run, `vars-<arch>-<pid>-<n>.fd`.
        let pid = match name.strip_prefix("vars-") {
            Some(rest) => rest.split('-').nth(1),
            None => name
                .split_once(&format!(".{RUN}-"))
                .or_else(|| name.split_once(".tmp-"))
                .and_then(|(_, rest)| rest.split('-').next()),
        };
        let Some(pid) = pid.and_then(|pid| pid.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && Path::new("/proc/self").exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A run's image file, removed when dropped (when its QEMU has ended).
#[derive(Debug)]
pub struct RunImage(PathBuf);

impl RunImage {
    /// Take over the file [`write_for_run`] wrote for `path`; `None` for any other image.
    pub fn claim(path: &Path) -> Option<RunImage> {
        let mut images = RUN_IMAGES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = images.iter().position(|image| image == path)?;
        Some(RunImage(images.swap_remove(at)))
    }
}

impl Drop for RunImage {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn round_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// Format a FAT volume of `size` bytes in memory and copy `files` onto it.
fn format_esp(size: u64, files: &[(String, &[u8])]) -> io::Result<Vec<u8>> {
    let mut volume = Cursor::new(vec![0u8; size as usize]);
    let options = fatfs::FormatVolumeOptions::new().volume_label(*b"KEEL ESP   ");
    fatfs::format_volume(&mut volume, options)?;
    volume.seek(SeekFrom::Start(0))?;
    {
        let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())?;
        for (path, data) in files {
            let root = fs.root_dir();
            let mut dir = root;
            let mut parts: Vec<&str> = path.split('/').collect();
            let name = parts.pop().expect("split yields at least one part");
            for part in parts {
                dir = dir.create_dir(part)?; // opens it when it exists
            }
            let mut file = dir.create_file(name)?;
            file.truncate()?;
            file.write_all(data)?;
        }
        fs.unmount()?;
    }
    Ok(volume.into_inner())
}

/// Write the protective MBR, the GPT and the ESP (at [`ALIGN`]) into a `total`-byte file.
fn write_disk(path: &Path, total: u64, esp: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(total)?;
    // Skip the all-zero stretches of the ESP: the file reads back zeros there anyway, and
    // most file systems keep it sparse.
    const CHUNK: usize = 64 << 10;
    for (index, chunk) in esp.chunks(CHUNK).enumerate() {
        if chunk.iter().any(|&byte| byte != 0) {
            file.seek(SeekFrom::Start(ALIGN + (index * CHUNK) as u64))?;
            file.write_all(chunk)?;
        }
    }

    let sectors = total / SECTOR;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut file).map_err(io::Error::other)?;

    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(file, None)
        .map_err(io::Error::other)?;
    disk.add_partition_at(
        "EFI system partition",
        1,
        ALIGN / SECTOR,
        esp.len() as u64 / SECTOR,
        gpt::partition_types::EFI,
        0,
    )
    .map_err(io::Error::other)?;
    let file = disk.write().map_err(io::Error::other)?;
    file.sync_all()
}

/// Read one file of the ESP back out of an image (`path` relative to the ESP root, with
/// `/` separators), checking the GPT on the way. For tests and for debugging images.
pub fn read_esp_file(image: &Path, path: &str) -> Result<Vec<u8>> {
    let what = || format!("cannot read {path} from {}", image.display());
    let file = File::open(image).context(what)?;
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(file)
        .map_err(|error| Error::new(format!("{}: no valid GPT: {error}", what())))?;
    let esp = disk
        .partitions()
        .values()
        .find(|partition| partition.part_type_guid == gpt::partition_types::EFI)
        .ok_or_else(|| Error::new(format!("{}: no EFI system partition", what())))?;
    let start = esp.first_lba * SECTOR;
    let length = (esp.last_lba + 1 - esp.first_lba) * SECTOR;
    let mut file = disk.take_device();
    let mut volume = vec![0u8; length as usize];
    file.seek(SeekFrom::Start(start)).context(what)?;
    file.read_exact(&mut volume).context(what)?;

    let mut volume = Cursor::new(volume);
    let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new()).context(what)?;
    let mut data = Vec::new();
    fs.root_dir()
        .open_file(path)
        .context(what)?
        .read_to_end(&mut data)
        .context(what)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file path in a directory of its own (per process and test), removed with
    /// everything in it when dropped, so no test leaves an image behind.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("keel-xtask-image-{}-{name}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            Self(dir.join(name))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn conf_names_kernel_both_ways_and_every_module() {
        let conf = limine_conf("test=boot", &["init", "console"], false);
        assert_eq!(
            conf,
            "timeout: 0\n\n/Keel\n    protocol: limine\n    kernel_path: boot():/boot/keel\n    \
             path: boot():/boot/keel\n    cmdline: test=boot\n    module_path: boot():/boot/init\n    \
             module_cmdline: init\n    module_path: boot():/boot/console\n    \
             module_cmdline: console\n"
        );
        assert!(!limine_conf("", &["init"], false).contains("cmdline: \n"));
        assert!(!limine_conf("", &["init"], false).contains("randomise_hhdm_base"));
        assert!(limine_conf("", &["init"], true).contains("    randomise_hhdm_base: no\n"));
        assert!(check_cmdline("a\nb").is_err());
    }

    #[test]
    fn each_run_boots_its_own_image_and_the_path_holds_the_last() {
        let scratch = Scratch::new("run.img");
        let path = scratch.0.clone();
        let contents = |cmdline: &str| Contents {
            arch: Arch::X86_64,
            loader: b"MZ loader".to_vec(),
            kernel: b"\x7fELF kernel".to_vec(),
            modules: Vec::new(),
            cmdline: cmdline.to_owned(),
            fixed_hhdm: false,
        };
        let (first, _) = write_for_run(&path, &contents("one"), true).unwrap();
        let (second, _) = write_for_run(&path, &contents("two"), true).unwrap();
        assert_ne!(first, second);
        let conf = |image: &Path| String::from_utf8(read_esp_file(image, "limine.conf").unwrap());
        assert!(conf(&first).unwrap().contains("cmdline: one"));
        assert!(conf(&second).unwrap().contains("cmdline: two"));
        assert!(conf(&path).unwrap().contains("cmdline: two"));
        let claimed = RunImage::claim(&first).unwrap();
        assert!(RunImage::claim(&first).is_none());
        drop(claimed);
        assert!(!first.exists());
        drop(RunImage::claim(&second));
        assert!(!second.exists() && path.exists());
    }

    #[test]
    fn an_unpublished_run_leaves_nothing_behind() {
        let scratch = Scratch::new("unpublished.img");
        let path = scratch.0.clone();
        let contents = Contents {
            arch: Arch::X86_64,
            loader: b"MZ loader".to_vec(),
            kernel: b"\x7fELF kernel".to_vec(),
            modules: Vec::new(),
            cmdline: String::new(),
            fixed_hhdm: false,
        };
        let (run, _) = write_for_run(&path, &contents, false).unwrap();
        assert!(run.exists() && !path.exists());
        drop(RunImage::claim(&run));
        assert!(!run.exists() && !path.exists());
    }

    #[test]
    fn image_reads_back() {
        let scratch = Scratch::new("read-back.img");
        let path = scratch.0.clone();
        let kernel: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let contents = Contents {
            arch: Arch::Aarch64,
            loader: b"MZ loader".to_vec(),
            kernel: kernel.clone(),
            modules: vec![("init".to_owned(), b"\x7fELF init".to_vec())],
            cmdline: "test=boot quiet".to_owned(),
            fixed_hhdm: false,
        };
        let size = write(&path, &contents).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), size);

        // The GPT: one EFI system partition, aligned, inside the disk, with a protective MBR.
        let disk = gpt::GptConfig::new().open(&path).unwrap();
        let partitions: Vec<_> = disk.partitions().values().collect();
        assert_eq!(partitions.len(), 1);
        assert_eq!(partitions[0].part_type_guid, gpt::partition_types::EFI);
        assert_eq!(partitions[0].first_lba * SECTOR, ALIGN);
        assert!((partitions[0].last_lba + 1) * SECTOR <= size - 33 * SECTOR);
        let mut mbr = File::open(&path).unwrap();
        let mbr = gpt::mbr::ProtectiveMBR::from_disk(&mut mbr, gpt::disk::LogicalBlockSize::Lb512)
            .unwrap();
        assert_eq!(mbr.partition(0).unwrap().os_type, 0xEE);

        // The FAT: every file where the loader and the kernel look for it.
        assert_eq!(
            read_esp_file(&path, "EFI/BOOT/BOOTAA64.EFI").unwrap(),
            b"MZ loader"
        );
        assert_eq!(read_esp_file(&path, "boot/keel").unwrap(), kernel);
        assert_eq!(read_esp_file(&path, "boot/init").unwrap(), b"\x7fELF init");
        let conf = String::from_utf8(read_esp_file(&path, "limine.conf").unwrap()).unwrap();
        assert_eq!(conf, limine_conf("test=boot quiet", &["init"], false));
        assert!(conf.contains("    kernel_path: boot():/boot/keel\n"));
        assert!(conf.contains("    path: boot():/boot/keel\n"));
        assert!(conf.contains("    cmdline: test=boot quiet\n"));
        assert!(conf.contains("    module_path: boot():/boot/init\n    module_cmdline: init\n"));
        assert!(read_esp_file(&path, "EFI/BOOT/BOOTX64.EFI").is_err());

        // Writing again replaces the image rather than appending to it.
        let again = Contents {
            cmdline: String::new(),
            ..contents
        };
        write(&path, &again).unwrap();
        let conf = String::from_utf8(read_esp_file(&path, "limine.conf").unwrap()).unwrap();
        assert!(!conf.contains("cmdline: test"));
        fs::remove_file(&path).unwrap();
    }
}
