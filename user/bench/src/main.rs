//! `bench`: the user-mode benchmarks of issue 10, started by the kernel's `bench` scenario
//! from the boot module of the same name (`cargo xtask bench` runs it under QEMU
//! `-icount shift=0`, where the counter [`rt::counter`] reads counts guest instructions).
//!
//! The kernel passes `mode | iterations << 8`. [`RUN`] runs every benchmark: warm-up,
//! then `iterations` samples, each the counter delta around one operation minus the delta
//! of an empty measurement; a sample with a timer tick inside its window is discarded and
//! counted. One line per benchmark:
//! `bench <name> min=… median=… max=… samples=… discarded=… switches=… space_switches=…
//! tlb_flushes=… [kernel=…]` (kernel events per operation, in hundredths; on AArch64 also
//! the mean instructions per operation spent at EL1, from a second PMU counter).
//! [`YIELD_PARTNER`] yields forever: the other thread of the `yield` benchmark.
//! [`SPAWN_EXIT`] exits at once and [`FAULT`] loads from an unmapped page at once: the
//! processes of the kernel-measured `spawn` and `page_fault` benchmarks.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use abi::{BenchCounter, Error, MAP_WRITE, PAGE_SIZE};
use rt::println;

const RUN: u64 = 0;
const YIELD_PARTNER: u64 = 1;
const SPAWN_EXIT: u64 = 2;
/// Load from an unmapped page at once (the kernel's `page_fault` benchmark).
const FAULT: u64 = 3;
/// Never mapped in a bench process.
const UNMAPPED: u64 = 0x0000_1000_0000_0000;
/// The most samples one benchmark keeps (they live on the 64 KiB user stack).
const MAX_SAMPLES: usize = 2000;
/// Where `map_unmap` maps (free in every bench process).
const SCRATCH: u64 = 0x0000_2000_0000_0000;

/// The kernel counters reported per operation.
const EVENTS: [BenchCounter; 3] = [
    BenchCounter::Switches,
    BenchCounter::SpaceSwitches,
    BenchCounter::TlbFlushes,
];

rt::entry!(main);

fn main(argument: u64) -> i64 {
    match argument & 0xff {
        RUN => match run((argument >> 8) as usize) {
            Ok(()) => 0,
            Err(error) => {
                println!("bench: a benchmarked call failed: {error:?}");
                1
            }
        },
        YIELD_PARTNER => loop {
            let _ = rt::yield_now();
        },
        SPAWN_EXIT => 0,
        FAULT => i64::from(rt::fault::touch_unmapped(UNMAPPED)),
        _ => 2,
    }
}

/// One benchmark's results, in instructions per operation.
struct Stats {
    min: u64,
    median: u64,
    max: u64,
    samples: usize,
    discarded: usize,
    /// Kernel events per operation, times 100, over the kept samples.
    events: [u64; EVENTS.len()],
    /// Mean kernel-mode instructions per operation, where the counter can split them.
    kernel: Option<u64>,
}

fn counter(which: BenchCounter) -> Result<u64, Error> {
    rt::bench_counter(which)
}

/// Warm up, then take `iterations` samples of `operation`; each sample is the counter delta
/// minus `empty`, divided by `per` (operations per call of `operation`).
fn measure(
    iterations: usize,
    empty: u64,
    per: u64,
    mut operation: impl FnMut() -> Result<(), Error>,
) -> Result<Stats, Error> {
    let iterations = iterations.clamp(1, MAX_SAMPLES);
    for _ in 0..(iterations / 10).max(10) {
        operation()?;
    }
    let mut samples = [0u64; MAX_SAMPLES];
    let mut kept = 0;
    let mut discarded = 0;
    let mut events = [0u64; EVENTS.len()];
    let mut kernel: Option<u64> = None;
    while kept < iterations {
        let mut before = [0u64; EVENTS.len()];
        for (slot, which) in before.iter_mut().zip(EVENTS) {
            *slot = counter(which)?;
        }
        let ticks = counter(BenchCounter::Ticks)?;
        let kernel_start = rt::counter::read_kernel();
        let start = rt::counter::read();
        operation()?;
        let end = rt::counter::read();
        let kernel_end = rt::counter::read_kernel();
        if counter(BenchCounter::Ticks)? != ticks {
            discarded += 1;
            continue;
        }
        for ((total, which), before) in events.iter_mut().zip(EVENTS).zip(before) {
            *total += counter(which)? - before;
        }
        if let (Some(start), Some(end)) = (kernel_start, kernel_end) {
            kernel = Some(kernel.unwrap_or(0) + (end - start));
        }
        samples[kept] = (end - start).saturating_sub(empty) / per;
        kept += 1;
    }
    let samples = &mut samples[..kept];
    samples.sort_unstable();
    let per_operation = |total: u64| total * 100 / (kept as u64 * per);
    Ok(Stats {
        min: samples[0],
        median: samples[kept / 2],
        max: samples[kept - 1],
        samples: kept,
        discarded,
        events: events.map(per_operation),
        kernel: kernel.map(|total| total / (kept as u64 * per)),
    })
}

fn report(name: &str, stats: &Stats) {
    let hundredths = |value: u64| (value / 100, value % 100);
    let (switches, switches_frac) = hundredths(stats.events[0]);
    let (spaces, spaces_frac) = hundredths(stats.events[1]);
    let (flushes, flushes_frac) = hundredths(stats.events[2]);
    let (kernel, kernel_value) = match stats.kernel {
        Some(value) => (" kernel=", value),
        None => ("", 0),
    };
    if kernel.is_empty() {
        println!(
            "bench {name} min={} median={} max={} samples={} discarded={} switches={switches}.{switches_frac:02} space_switches={spaces}.{spaces_frac:02} tlb_flushes={flushes}.{flushes_frac:02}",
            stats.min, stats.median, stats.max, stats.samples, stats.discarded
        );
    } else {
        println!(
            "bench {name} min={} median={} max={} samples={} discarded={} switches={switches}.{switches_frac:02} space_switches={spaces}.{spaces_frac:02} tlb_flushes={flushes}.{flushes_frac:02}{kernel}{kernel_value}",
            stats.min, stats.median, stats.max, stats.samples, stats.discarded
        );
    }
}

fn run(iterations: usize) -> Result<(), Error> {
    // The empty measurement: two counter reads back to back (constant under icount).
    let empty = measure(iterations, 0, 1, || Ok(()))?;
    println!(
        "bench: empty measurement {} instructions (subtracted from every sample)",
        empty.min
    );
    let empty = empty.min;
    report(
        "null_syscall",
        &measure(iterations, empty, 1, || rt::null().map(drop))?,
    );
    // One sample is this thread → partner → this thread: two yields and two switches.
    report(
        "yield",
        &measure(iterations, empty, 2, || rt::yield_now().map(drop))?,
    );
    report(
        "map_unmap",
        &measure(iterations, empty, 1, || {
            rt::memory_map(SCRATCH, PAGE_SIZE, MAP_WRITE)?;
            rt::memory_unmap(SCRATCH, PAGE_SIZE).map(drop)
        })?,
    );
    Ok(())
}
