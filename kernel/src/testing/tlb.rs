//! Scenario `tlb` (DESIGN.md §8): TLB consistency between CPUs, on a machine started with
//! several CPUs (`--smp 4`). The secondaries activate a user address space and read its
//! pages through `copy_from_user` (so their TLBs cache the translations); the boot CPU
//! unmaps, write-protects and destroys, and each secondary's next access must see the
//! change at once: a fault where a stale translation would still have read or written.
//! Also: the space's active mask names exactly the CPUs that activated it; a CPU spinning
//! on a kernel lock answers the request of the CPU that holds the lock (else both hang);
//! and more spaces than address-space tags (a cap of 16 ASIDs on AArch64) all keep their
//! own memory while two CPUs activate them in turn.
//!
//! The boot CPU asks a secondary for something as the `smp` scenario does (request slot,
//! reschedule IPI, answer slot): the secondary's idle loop calls `smp::on_wake`, which
//! hands the request to [`on_wake`] first. The boot CPU answers TLB requests while it
//! waits (`SecondaryCpus::service_ipi_work`), since a secondary may be sending it one.

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use arch_api::tlb::CpuMask;
use arch_api::{MAX_CPUS, PAGE_SIZE, PageFlags, Paging, SecondaryCpus, SelfTest};

use crate::mm::frames::{self, KernelFrames};
use crate::obj::process::{AddressSpace, activate_kernel_only};
use crate::sync::{Lock, level};
use crate::testing::ktest::Suite;
use crate::{Cpu, println};

const NOTHING: u8 = 0;
/// Activate [`SPACE`], then read the word at [`ADDRESS`].
const ACTIVATE_READ: u8 = 1;
/// Read the word at [`ADDRESS`] in whatever space is active.
const READ: u8 = 2;
/// Write [`WRITTEN`] at [`ADDRESS`].
const WRITE: u8 = 3;
/// Activate [`SPACE`], say so ([`SPINNING`]), then take [`TEST_LOCK`].
const ACTIVATE_LOCK: u8 = 4;
/// Activate each of the [`SPACES`] twice in turn and count the reads that see their own
/// word.
const WALK: u8 = 5;

/// The answer to a read or write that faulted.
const FAULT: u64 = u64::MAX;
/// What [`WRITE`] stores.
const WRITTEN: u64 = 0x5717_e5ee_0000_0001;

static REQUEST: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(NOTHING) }; MAX_CPUS];
static ANSWERED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static ANSWER: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The address space of the request (`&AddressSpace` of the boot CPU's, alive while it
/// waits for the answer).
static SPACE: AtomicUsize = AtomicUsize::new(0);
static ADDRESS: AtomicU64 = AtomicU64::new(0);
/// The spaces of [`WALK`] (a slice: pointer and length).
static SPACES: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));
/// Set by a secondary just before it takes [`TEST_LOCK`].
static SPINNING: AtomicBool = AtomicBool::new(false);
/// The lock the boot CPU holds while it destroys a space a secondary spins with.
static TEST_LOCK: Lock<()> = Lock::new(level::TEST_TLB, ());

/// Polls before a request counts as unanswered.
const ANSWER_POLLS: u64 = 1 << 28;

/// The user address of the first test page; the others follow it in the same last-level
/// table (so unmapping one never prunes a table).
const BASE: u64 = 0x40_0000;

/// On a secondary CPU after each wake-up: answer the boot CPU's request, if any. Returns
/// whether there was one.
pub fn on_wake(index: usize) -> bool {
    let Some(request) = REQUEST.get(index) else {
        return false;
    };
    let answer = match request.swap(NOTHING, Ordering::AcqRel) {
        NOTHING => return false,
        ACTIVATE_READ => {
            // SAFETY: the boot CPU stored the address of a live space it keeps until the
            // answer.
            Cpu::activate(unsafe { &*(SPACE.load(Ordering::Acquire) as *const AddressSpace) });
            read_word(ADDRESS.load(Ordering::Acquire))
        }
        READ => read_word(ADDRESS.load(Ordering::Acquire)),
        WRITE => match Cpu::copy_to_user(ADDRESS.load(Ordering::Acquire), &WRITTEN.to_le_bytes()) {
            Ok(()) => 0,
            Err(_) => FAULT,
        },
        ACTIVATE_LOCK => {
            // SAFETY: as for `ACTIVATE_READ`.
            Cpu::activate(unsafe { &*(SPACE.load(Ordering::Acquire) as *const AddressSpace) });
            SPINNING.store(true, Ordering::Release);
            drop(TEST_LOCK.lock());
            0
        }
        WALK => walk(),
        _ => return false,
    };
    ANSWER[index].store(answer, Ordering::Relaxed);
    ANSWERED[index].store(true, Ordering::Release);
    true
}

/// The word at the user address `address` of the active space, or [`FAULT`].
fn read_word(address: u64) -> u64 {
    let mut bytes = [0u8; 8];
    match Cpu::copy_from_user(&mut bytes, address) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => FAULT,
    }
}

/// Activate each space of [`SPACES`] in turn, twice, and count the reads of [`BASE`] that
/// see the space's own number.
fn walk() -> u64 {
    let (pointer, length) = (
        SPACES.0.load(Ordering::Acquire),
        SPACES.1.load(Ordering::Acquire),
    );
    // SAFETY: the boot CPU stored a live slice of spaces it keeps (unmoved) until the
    // answer.
    let spaces = unsafe { core::slice::from_raw_parts(pointer as *const AddressSpace, length) };
    let mut good = 0;
    for _ in 0..2 {
        for (number, space) in spaces.iter().enumerate() {
            Cpu::activate(space);
            if read_word(BASE) == number as u64 {
                good += 1;
            }
        }
    }
    activate_kernel_only();
    good
}

/// Post `request` for secondary `index` and wake it.
fn post(index: u32, request: u8) {
    let slot = index as usize;
    ANSWERED[slot].store(false, Ordering::Relaxed);
    REQUEST[slot].store(request, Ordering::Release);
    Cpu::send_ipi(arch_api::IpiTarget::Cpu(index), arch_api::Ipi::Reschedule);
}

/// Wait for secondary `index`'s answer, answering TLB requests meanwhile.
fn answer(index: u32) -> Result<u64, &'static str> {
    let slot = index as usize;
    for _ in 0..ANSWER_POLLS {
        if ANSWERED[slot].load(Ordering::Acquire) {
            return Ok(ANSWER[slot].load(Ordering::Relaxed));
        }
        Cpu::service_ipi_work();
        core::hint::spin_loop();
    }
    Err("no answer")
}

fn ask(index: u32, request: u8) -> Result<u64, &'static str> {
    post(index, request);
    answer(index)
}

fn secondaries() -> Vec<u32> {
    (1..MAX_CPUS as u32)
        .filter(|&index| Cpu::is_online(index))
        .collect()
}

fn mask_of(cpus: &[u32]) -> CpuMask {
    cpus.iter().fold(0, |mask, &cpu| mask | (1 << cpu))
}

const USER_DATA: PageFlags = PageFlags {
    writable: true,
    executable: false,
    user: true,
    device: false,
};

/// A new frame holding `word`, mapped at `address` of `space`.
fn map_word(space: &mut AddressSpace, address: u64, word: u64) -> Result<u64, &'static str> {
    let frame = frames::allocate_zeroed().ok_or("no frame")?;
    // SAFETY: a frame this test owns, written through the HHDM.
    unsafe { (frames::virtual_address(frame) as *mut u64).write_volatile(word) };
    if Cpu::map_user(space, address, frame, USER_DATA, &mut KernelFrames).is_err() {
        let _ = frames::free(frame);
        return Err("cannot map a user page");
    }
    Ok(frame)
}

/// Destroy `space`, freeing its tables, with the frames `data` its pages mapped.
fn destroy(space: AddressSpace, data: &[u64]) {
    Cpu::destroy(space, &mut |table| {
        let _ = frames::free(table);
    });
    for &frame in data {
        let _ = frames::free(frame);
    }
}

/// `tlb`: see the module docs.
pub fn scenario(_: usize) {
    let mut suite = Suite::new();
    let cpus = secondaries();
    suite.check(
        &format!("tlb {} secondary CPUs online", cpus.len()),
        if cpus.len() < 2 {
            Err("fewer than two (boot with --smp 3 or more)")
        } else {
            Ok(())
        },
    );
    if cpus.len() < 2 {
        suite.finish()
    }
    let outcome = shootdowns(&mut suite, &cpus);
    suite.check("tlb shootdown scenario set up", outcome);
    let outcome = lock_spin(&cpus);
    suite.check(
        &format!(
            "tlb cpu {} spinning on a kernel lock answers the destroy of the lock holder",
            cpus[0]
        ),
        outcome,
    );
    tags(&mut suite, cpus[0]);
    suite.finish()
}

/// The unmap, protect and destroy checks (module docs).
fn shootdowns(suite: &mut Suite, cpus: &[u32]) -> Result<(), &'static str> {
    const WORDS: [u64; 3] = [0x0a11_0000_0000_0001, 0x0a11_0000_0000_0002, 0];
    let mut space = Cpu::new_address_space(&mut KernelFrames).map_err(|_| "no address space")?;
    let mut data = Vec::new();
    for (page, word) in WORDS.into_iter().enumerate() {
        match map_word(&mut space, BASE + page as u64 * PAGE_SIZE, word) {
            Ok(frame) => data.push(frame),
            Err(why) => {
                destroy(space, &data);
                return Err(why);
            }
        }
    }
    let [read_page, write_page, kept_page] = [0u64, 2, 1].map(|page| BASE + page * PAGE_SIZE);

    SPACE.store(core::ptr::from_ref(&space) as usize, Ordering::Release);
    ADDRESS.store(read_page, Ordering::Release);
    for &cpu in cpus {
        suite.check(
            &format!("tlb cpu {cpu} reads a user page of a space it activated"),
            match ask(cpu, ACTIVATE_READ) {
                Ok(word) if word == WORDS[0] => Ok(()),
                Ok(FAULT) => Err("the read faulted"),
                Ok(_) => Err("read the wrong word"),
                Err(why) => Err(why),
            },
        );
    }
    let expected = mask_of(cpus);
    let mask = Cpu::active_cpus(&space);
    suite.check(
        &format!("tlb active mask {mask:#b} names exactly the CPUs that activated the space"),
        if mask == expected {
            Ok(())
        } else {
            Err("differs from the secondaries that activated it")
        },
    );
    Cpu::activate(&space);
    let with_boot = Cpu::active_cpus(&space);
    activate_kernel_only();
    let without_boot = Cpu::active_cpus(&space);
    suite.check(
        &format!(
            "tlb cpu 0 enters the mask on activation ({with_boot:#b}) and leaves it on a \
             switch ({without_boot:#b})"
        ),
        if with_boot == expected | 1 && without_boot == expected {
            Ok(())
        } else {
            Err("wrong mask")
        },
    );

    // Unmap while the secondaries hold the translation (cpu 0 does not have the space
    // active, so only the shootdown can reach their TLBs).
    let unmapped = Cpu::unmap_user(&mut space, read_page, &mut KernelFrames);
    suite.check(
        "tlb unmap of a page the secondaries have cached returns its frame",
        match unmapped {
            Ok(frame) if frame == data[0] => Ok(()),
            _ => Err("unmap failed"),
        },
    );
    for &cpu in cpus {
        suite.check(
            &format!("tlb cpu {cpu} faults on the page as soon as the unmap returned"),
            match ask(cpu, READ) {
                Ok(FAULT) => Ok(()),
                Ok(word) if word == WORDS[0] => Err("read the unmapped frame: stale translation"),
                Ok(_) => Err("read something"),
                Err(why) => Err(why),
            },
        );
    }

    // Write-protect while the secondaries hold a writable translation.
    ADDRESS.store(write_page, Ordering::Release);
    let mut writes = Ok(());
    for &cpu in cpus {
        if ask(cpu, WRITE) != Ok(0) {
            writes = Err("a secondary could not write the writable page");
        }
    }
    suite.check("tlb secondaries write a writable user page", writes);
    let read_only = PageFlags {
        writable: false,
        ..USER_DATA
    };
    suite.check(
        "tlb protect to read-only",
        Cpu::protect_user(&mut space, write_page, read_only).map_err(|_| "protect failed"),
    );
    for &cpu in cpus {
        suite.check(
            &format!("tlb cpu {cpu} cannot write the page as soon as the protect returned"),
            match ask(cpu, WRITE) {
                Ok(FAULT) => match ask(cpu, READ) {
                    Ok(WRITTEN) => Ok(()),
                    _ => Err("cannot read it either"),
                },
                Ok(_) => Err("the write went through: stale translation"),
                Err(why) => Err(why),
            },
        );
    }

    // Destroy while every secondary has the space active and a page of it cached.
    ADDRESS.store(kept_page, Ordering::Release);
    let mut cached = Ok(());
    for &cpu in cpus {
        if ask(cpu, READ) != Ok(WORDS[1]) {
            cached = Err("a secondary could not read the page");
        }
    }
    suite.check(
        "tlb secondaries read a page of the space before its destroy",
        cached,
    );
    let before = Cpu::active_cpus(&space);
    destroy(space, &data[1..]);
    let _ = frames::free(data[0]);
    suite.check(
        &format!("tlb destroy of a space active on {before:#b} returns"),
        if before == expected {
            Ok(())
        } else {
            Err("the mask lost CPUs before the destroy")
        },
    );
    for &cpu in cpus {
        suite.check(
            &format!("tlb cpu {cpu} left the destroyed space before its tables were freed"),
            match ask(cpu, READ) {
                Ok(FAULT) => Ok(()),
                Ok(_) => Err("still reads through the destroyed space's tables"),
                Err(why) => Err(why),
            },
        );
    }
    Ok(())
}

/// Secondary `cpus[0]` activates a space, then spins on [`TEST_LOCK`], which the boot CPU
/// holds while it destroys that space: the destroy waits for the secondary to leave the
/// space, which it can only do from its lock spin.
fn lock_spin(cpus: &[u32]) -> Result<(), &'static str> {
    let cpu = cpus[0];
    let mut space = Cpu::new_address_space(&mut KernelFrames).map_err(|_| "no address space")?;
    let frame = match map_word(&mut space, BASE, 7) {
        Ok(frame) => frame,
        Err(why) => {
            destroy(space, &[]);
            return Err(why);
        }
    };
    SPACE.store(core::ptr::from_ref(&space) as usize, Ordering::Release);
    ADDRESS.store(BASE, Ordering::Release);
    SPINNING.store(false, Ordering::Relaxed);
    let held = TEST_LOCK.lock();
    post(cpu, ACTIVATE_LOCK);
    let mut spinning = false;
    for _ in 0..ANSWER_POLLS {
        if SPINNING.load(Ordering::Acquire) {
            spinning = true;
            break;
        }
        core::hint::spin_loop();
    }
    // Let it reach the spin (it cannot take the lock: held here).
    for _ in 0..100_000 {
        core::hint::spin_loop();
    }
    let active = Cpu::active_cpus(&space);
    // Collect the tables without the frame allocator's lock (a lower level than the one
    // held), and free them after.
    let mut tables = [0u64; 16];
    let mut count = 0;
    Cpu::destroy(space, &mut |table| {
        if let Some(slot) = tables.get_mut(count) {
            *slot = table;
        }
        count += 1;
    });
    drop(held);
    let answered = answer(cpu);
    for &table in tables.iter().take(count) {
        let _ = frames::free(table);
    }
    let read_after = ask(cpu, READ);
    let _ = frames::free(frame);
    if !spinning {
        return Err("the secondary never reached the lock");
    }
    if active != 1 << cpu {
        return Err("the space was not active on the secondary");
    }
    answered?;
    match read_after {
        Ok(FAULT) => Ok(()),
        Ok(_) => Err("the secondary still translates through the destroyed space"),
        Err(why) => Err(why),
    }
}

/// More spaces than tags: each keeps its own memory while the boot CPU and `cpu` activate
/// them all in turn, at the same time.
fn tags(suite: &mut Suite, cpu: u32) {
    const SPACES_COUNT: usize = 40;
    const CAP: u32 = 16;
    let capped = Cpu::limit_space_tags(Some(CAP));
    let rollovers_before = Cpu::space_tag_rollovers();
    let mut spaces: Vec<AddressSpace> = Vec::new();
    let mut data = Vec::new();
    let mut made = Ok(());
    for number in 0..SPACES_COUNT {
        let Ok(mut space) = Cpu::new_address_space(&mut KernelFrames) else {
            made = Err("no address space");
            break;
        };
        match map_word(&mut space, BASE, number as u64) {
            Ok(frame) => data.push(frame),
            Err(why) => {
                destroy(space, &[]);
                made = Err(why);
                break;
            }
        }
        spaces.push(space);
    }
    let walked = made.and_then(|()| {
        SPACES.0.store(spaces.as_ptr() as usize, Ordering::Release);
        SPACES.1.store(spaces.len(), Ordering::Release);
        post(cpu, WALK);
        let mine = walk();
        let theirs = answer(cpu)?;
        let expected = 2 * SPACES_COUNT as u64;
        if mine != expected {
            Err("cpu 0 read another space's word")
        } else if theirs != expected {
            Err("the secondary read another space's word")
        } else {
            Ok(())
        }
    });
    let rollovers = Cpu::space_tag_rollovers()
        .zip(rollovers_before)
        .map(|(after, before)| after - before);
    let cap = if capped {
        format!("a cap of {CAP} tags, {} rollovers", rollovers.unwrap_or(0))
    } else {
        "no tag cap on this architecture".into()
    };
    suite.check(
        &format!(
            "tlb {SPACES_COUNT} spaces ({cap}) each see their own memory on cpu 0 and cpu {cpu}"
        ),
        walked.and(match rollovers {
            Some(0) if capped => Err("the tags never rolled over"),
            _ => Ok(()),
        }),
    );
    for space in spaces {
        destroy(space, &[]);
    }
    for frame in data {
        let _ = frames::free(frame);
    }
    Cpu::limit_space_tags(None);
    println!("tlb: done");
}
