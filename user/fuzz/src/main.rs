//! `fuzz`: a seeded system-call fuzzer, started by the kernel from the boot module of the
//! same name (scenarios `fuzz` and `fuzz-leak`, DESIGN.md §8).
//!
//! Each fuzzing process runs a main thread that makes `calls` system calls chosen by a
//! xorshift generator from its seed: every number (known, unknown, random), handles that
//! are valid, stale, of the wrong type or without the right, addresses that are null, in
//! the kernel half, unmapped, unaligned, at `USER_END ± 4096`, wrapping or straddling a
//! mapped and an unmapped page, pages remapped with other permissions between calls (IPC
//! buffers included), lengths and flags with reserved bits, IPC with random labels, word
//! counts and capability transfers, capability tables filled through several growths,
//! and register images for `thread_write_registers`. Around it, helper threads block in
//! `recv`, `call`, `send`, `wait` and `reply_recv` (and are killed there), loop, or write
//! random register images; child processes run a shorter fuzz of their own and are killed,
//! signalled and watched.
//!
//! The main thread never makes a call that could block it for good: a blocking call gets a
//! handle that cannot be waited on (stale, out of range, of another type, or a copy
//! without the right) or a malformed `info`; the blocking itself is the helpers' part, and
//! the main thread ends them with `thread_kill`.
//!
//! # Argument (set by the kernel for the first processes, by a fuzzer for its children)
//! bits 0..2 role ([`ROLE_TOP`], [`ROLE_CHILD`]), bit 2 single mode ([`SINGLE`]), bits 3..6
//! the process's index, bits 6..8 zero, bits 8..32 the calls to make, bits 32..64 the seed.
//! Any other argument (a random spawn) ends the process at once.
//!
//! # Repeatability
//! The main thread's choices depend only on its generator and on the results of its own
//! calls. In single mode (one fuzzing process, `procs=1`) nothing else changes those
//! results: helpers and children never end on their own (so a kill always finds them
//! alive, and a child's object charge goes only with its kill), every thread runs at the
//! main thread's priority and a kill is followed by an uncounted yield, so killed threads
//! have ended (and freed their slots) before the next call; no thread of this process
//! receives capabilities, and none is created that would die on its own. So a seed
//! repeats the same figures. With several processes they share an endpoint, a
//! notification and the thread slots, and the figures vary with scheduling.
//!
//! # Capabilities of a process the kernel starts (`ROLE_TOP`)
//! slot 0 the `fuzz` image (`READ MAP GRANT`), 1 an endpoint and 2 a notification shared by
//! all fuzzing processes (all rights), 3 system information (`READ GRANT`).
//!
//! # Output
//! `fuzz N …` lines with the figures (calls by number, errors by code, kills, spawns), the
//! last calls made (a ring of 16, also kept at [`RING`] for the kernel to print if it
//! panics), and `ok fuzz N …` or `not ok fuzz N: …` (a status that is no `abi::Error`
//! code). The process exits 0, or 1 after an anomaly.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use abi::{Handle, ObjectType, PAGE_SIZE, Rights, Syscall, UserRegisters};
use rt::println;
use rt::registers;

rt::entry!(main);

const ROLE_MASK: u64 = 0b11;
const ROLE_TOP: u64 = 0;
const ROLE_CHILD: u64 = 1;
const SINGLE: u64 = 1 << 2;
const INDEX_SHIFT: u32 = 3;
const INDEX_MASK: u64 = 0b111;
const RESERVED: u64 = 0b11 << 6;
const CALLS_SHIFT: u32 = 8;
const CALLS_MASK: u64 = 0xff_ffff;
const SEED_SHIFT: u32 = 32;

/// Pages the fuzzer maps, unmaps and remaps at random (IPC buffers and message data).
const SCRATCH: u64 = 0x0000_1000_0000_0000;
const SCRATCH_PAGES: u64 = 16;
/// Helper-thread stacks: one slot of [`STACK_PAGES`] pages each, a guard page between.
/// Never in the random address pool.
const STACKS: u64 = 0x0000_2000_0000_0000;
const STACK_PAGES: u64 = 4;
const STACK_SLOT: u64 = (STACK_PAGES + 1) * PAGE_SIZE;
/// The ring of the last calls (also read by the kernel's panic report in the `fuzz`
/// scenario). Never in the random address pool.
pub const RING: u64 = 0x0000_3000_0000_0000;
const RING_MAGIC: u64 = 0x676e_6972_7a7a_7566;
const RING_ENTRIES: u64 = 16;
const RING_WORDS: u64 = 8;
const USER_END: u64 = 0x0000_8000_0000_0000;
/// Where this program is linked (user/user.ld), and a bound on its size.
const IMAGE: u64 = 0x40_0000;
const IMAGE_SPAN: u64 = 0x100_0000;

/// Helper threads alive at once, and children.
const MAX_HELPERS: usize = 5;
const MAX_CHILDREN: usize = 3;
const MAX_STRAYS: usize = 4;
/// Capabilities the fuzzer remembers.
const MAX_KNOWN: usize = 48;
const MAX_STALE: usize = 16;
/// Capabilities one table fill makes at most: past the table's first size, so it grows
/// (and shrinks back when they go).
const FILL_MAX: usize = 8 * abi::CAP_TABLE_INITIAL_SLOTS;

/// What a helper thread does, forever (it ends only when killed).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Recv = 0,
    Call = 1,
    Send = 2,
    Wait = 3,
    ReplyRecv = 4,
    Spin = 5,
    Jump = 6,
}

const OPS: [Op; 7] = [
    Op::Recv,
    Op::Call,
    Op::Send,
    Op::Wait,
    Op::ReplyRecv,
    Op::Spin,
    Op::Jump,
];

/// What each helper slot runs: its op, handle, seed and IPC buffer (0: none), written by
/// the main thread before `thread_create`.
static HELPER_OP: [AtomicU64; MAX_HELPERS] = [const { AtomicU64::new(0) }; MAX_HELPERS];
static HELPER_HANDLE: [AtomicU64; MAX_HELPERS] = [const { AtomicU64::new(0) }; MAX_HELPERS];
static HELPER_SEED: [AtomicU64; MAX_HELPERS] = [const { AtomicU64::new(0) }; MAX_HELPERS];
static HELPER_BUFFER: [AtomicU64; MAX_HELPERS] = [const { AtomicU64::new(0) }; MAX_HELPERS];
/// Whether single mode is on (helpers read it).
static SINGLE_MODE: AtomicU64 = AtomicU64::new(0);

/// Every system-call number the ABI defines.
const NUMBERS: &[u64] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 0x20, 0x21,
    0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
    0x40, 0x41,
];
/// Counted per number up to here; larger numbers share the last bucket.
const NUMBER_BUCKETS: usize = 0x43;

/// xorshift64*: small, fast, and the same sequence for the same seed on both machines.
#[derive(Clone, Copy)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 once, so nearby seeds start far apart; never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.next() % bound
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// An address from the pool: bad ones of every class, and scratch pages.
fn address(rng: &mut Rng) -> u64 {
    let page = SCRATCH + rng.below(SCRATCH_PAGES) * PAGE_SIZE;
    match rng.below(20) {
        0 => 0,
        // Low addresses, none inside this program's image (0x40_0000..): a thread started
        // there would run this program's code with random registers.
        1 => rng.pick(&[1, 8, 0xfff, PAGE_SIZE, 0x10_0000]),
        2 => rng.pick(&[
            0xffff_8000_0000_0000,
            0xffff_ffff_8000_0000,
            0xffff_ffff_ffff_f000,
            u64::MAX,
        ]),
        // Around the end of the user half; never inside the main thread's stack (just
        // below `USER_END - PAGE_SIZE`), which a call's output or a thread would overwrite.
        3 => rng.pick(&[
            USER_END - PAGE_SIZE,
            USER_END - 8,
            USER_END,
            USER_END + PAGE_SIZE,
        ]),
        4 => page + 1 + rng.below(PAGE_SIZE - 1),
        5 => page + PAGE_SIZE - 8 * (1 + rng.below(4)),
        6 => rng.next(),
        7 => rng.next() & 0x0000_7fff_ffff_f000,
        8 => SCRATCH + SCRATCH_PAGES * PAGE_SIZE,
        _ => page,
    }
}

/// A stack pointer from the address pool, never inside the main thread's stack (its top
/// is `USER_END - PAGE_SIZE`): a thread running there would overwrite the main thread's
/// frames.
fn stack_address(rng: &mut Rng) -> u64 {
    const MAIN_STACK: core::ops::RangeInclusive<u64> =
        USER_END - PAGE_SIZE - 0x1_0000..=USER_END - PAGE_SIZE;
    let address = address(rng);
    if MAIN_STACK.contains(&address) {
        USER_END - 8
    } else {
        address
    }
}

/// A length from the pool.
fn length(rng: &mut Rng) -> u64 {
    match rng.below(12) {
        0 => 0,
        1 => rng.pick(&[1, 7, 8, 255, 256, 257]),
        2 => rng.pick(&[4095, 4097, 8191]),
        3 => UserRegisters::SIZE as u64,
        4 => rng.pick(&[u64::MAX, 1 << 63, USER_END, u64::MAX - PAGE_SIZE + 1]),
        5 => rng.next(),
        6 => rng.pick(&[16 * PAGE_SIZE, 17 * PAGE_SIZE, 64 * 1024]),
        7 | 8 => 2 * PAGE_SIZE,
        _ => PAGE_SIZE,
    }
}

/// A small number, a boundary or anything.
fn number_argument(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => rng.below(8),
        1 => rng.below(64),
        2 => rng.pick(&[0x1ff, 0x200, 0xffff, 0x1_0000, u32::MAX as u64, u64::MAX]),
        3 => 1 << rng.below(64),
        _ => rng.next(),
    }
}

/// An `info` word: mostly well formed, sometimes with reserved bits or counts too large.
fn info(rng: &mut Rng) -> u64 {
    let label = rng.next() & 0xffff_ffff;
    let words = match rng.below(6) {
        0..=2 => rng.below(5),
        3 => rng.below(513),
        4 => rng.pick(&[511, 512, 513, 1023]),
        _ => rng.below(16),
    };
    let caps = if rng.chance(3) { rng.below(8) } else { 0 };
    let mut raw = label | words << 32 | caps << 48;
    if rng.chance(8) {
        raw |= 1 << rng.pick(&[42u64, 45, 47, 51, 56, 63]);
    }
    raw
}

/// A malformed `info` (reserved bits or a count beyond its maximum): refused before any
/// blocking.
fn bad_info(rng: &mut Rng) -> u64 {
    let label = rng.next() & 0xffff_ffff;
    match rng.below(3) {
        0 => label | 1 << rng.pick(&[42u64, 43, 46, 47, 51, 55, 60, 63]),
        1 => label | (513 + rng.below(511)) << 32,
        _ => label | (5 + rng.below(3)) << 48,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KnownKind {
    Endpoint,
    Notification,
    Memory,
    System,
    /// A copy holding none of the rights a blocking call needs.
    Reduced,
    Other,
}

#[derive(Clone, Copy)]
struct Known {
    handle: u64,
    kind: KnownKind,
}

#[derive(Clone, Copy)]
struct Helper {
    handle: u64,
    op: Op,
}

/// The state of one fuzzing process's main thread.
struct Fuzz {
    rng: Rng,
    index: u64,
    top: bool,
    single: bool,
    seed: u64,
    budget: u64,
    made: u64,
    ring: bool,
    counts: [u64; NUMBER_BUCKETS + 1],
    /// By status: 0 success, 1..=8 the `abi::Error` codes, 9 anything else.
    errors: [u64; 10],
    known: [Option<Known>; MAX_KNOWN],
    stale: [u64; MAX_STALE],
    stale_next: usize,
    /// Scratch page state: 0 unmapped, else the `memory_map` flags + 1.
    scratch: [u8; SCRATCH_PAGES as usize],
    helpers: [Option<Helper>; MAX_HELPERS],
    children: [Option<u64>; MAX_CHILDREN],
    /// Threads started at random places by a random `thread_create`.
    strays: [Option<u64>; MAX_STRAYS],
    /// The image handle the kernel gave (0: none), kept apart from the known handles.
    image: u64,
    spawns: u64,
    kills: u64,
    thread_kills: u64,
    helpers_made: u64,
    anomalies: u64,
    first_anomaly: (u64, u64),
}

fn main(argument: u64) -> i64 {
    let role = argument & ROLE_MASK;
    if argument & RESERVED != 0 || (role != ROLE_TOP && role != ROLE_CHILD) {
        return 0;
    }
    let seed = argument >> SEED_SHIFT;
    let budget = (argument >> CALLS_SHIFT) & CALLS_MASK;
    let index = (argument >> INDEX_SHIFT) & INDEX_MASK;
    let single = argument & SINGLE != 0;
    SINGLE_MODE.store(u64::from(single), Ordering::Relaxed);
    let mut fuzz = Fuzz {
        rng: Rng::new(seed ^ index << 40 ^ role << 48),
        index,
        top: role == ROLE_TOP,
        single,
        seed,
        budget,
        made: 0,
        ring: false,
        counts: [0; NUMBER_BUCKETS + 1],
        errors: [0; 10],
        known: [None; MAX_KNOWN],
        stale: [0; MAX_STALE],
        stale_next: 0,
        scratch: [0; SCRATCH_PAGES as usize],
        helpers: [None; MAX_HELPERS],
        children: [None; MAX_CHILDREN],
        strays: [None; MAX_STRAYS],
        image: 0,
        spawns: 0,
        kills: 0,
        thread_kills: 0,
        helpers_made: 0,
        anomalies: 0,
        first_anomaly: (0, 0),
    };
    if fuzz.top {
        println!(
            "fuzz {index}: seed {seed} calls {budget}{}",
            if single { " (single)" } else { "" }
        );
    }
    fuzz.setup();
    while fuzz.made < fuzz.budget {
        fuzz.step();
    }
    fuzz.finish()
}

impl Fuzz {
    /// The ring page, the helper stacks, the capabilities the process starts with.
    fn setup(&mut self) {
        self.ring = rt::memory_map(RING, PAGE_SIZE, abi::MAP_WRITE).is_ok();
        if self.ring {
            rt::fault::user_word(RING).store(RING_MAGIC, Ordering::Relaxed);
            rt::fault::user_word(RING + 8).store(self.seed, Ordering::Relaxed);
        }
        for slot in 0..MAX_HELPERS as u64 {
            let _ = rt::memory_map(
                STACKS + slot * STACK_SLOT,
                STACK_PAGES * PAGE_SIZE,
                abi::MAP_WRITE,
            );
        }
        for page in 0..4 {
            self.map_scratch(page, abi::MAP_WRITE);
        }
        // Learn the first slots' kinds (children get theirs from their parent).
        for slot in 0..8 {
            let handle = Handle::new(slot, 1).raw();
            let (status, value) = self.sys(Syscall::CapIdentify.number(), [handle, 0, 0, 0, 0, 0]);
            if status != 0 {
                continue;
            }
            let kind = match ObjectType::from_number(value as u32) {
                Some(ObjectType::Endpoint) => KnownKind::Endpoint,
                Some(ObjectType::Notification) => KnownKind::Notification,
                // The image is kept apart (no random call deletes it).
                Some(ObjectType::Memory) => {
                    self.image = handle;
                    continue;
                }
                Some(ObjectType::System) => KnownKind::System,
                // A child's own thread (slot 0) and siblings: never handed to random calls
                // (a child that killed its own thread would end on its own).
                _ => continue,
            };
            self.remember(handle, kind);
        }
    }

    fn map_scratch(&mut self, page: u64, flags: u64) {
        let address = SCRATCH + page * PAGE_SIZE;
        let (status, _) = self.sys(
            Syscall::MemoryMap.number(),
            [address, PAGE_SIZE, flags, 0, 0, 0],
        );
        if status == 0 {
            self.scratch[page as usize] = flags as u8 + 1;
        }
    }

    /// One system call, counted and recorded in the ring.
    fn sys(&mut self, number: u64, arguments: [u64; 6]) -> (u64, u64) {
        let (status, value) = rt::syscall_registers(number, arguments);
        self.record(number, &arguments[..4], status, value);
        (status, value)
    }

    /// One IPC call, counted and recorded.
    fn ipc(&mut self, number: u64, handle: u64, info: u64, words: [u64; 4]) -> u64 {
        let registers = rt::ipc_registers(number, handle, info, words);
        self.record(
            number,
            &[handle, info, words[0], words[1]],
            registers.status,
            registers.info,
        );
        registers.status
    }

    fn record(&mut self, number: u64, arguments: &[u64], status: u64, value: u64) {
        self.made += 1;
        self.counts[(number as usize).min(NUMBER_BUCKETS)] += 1;
        let code = if status <= 8 { status as usize } else { 9 };
        self.errors[code] += 1;
        if code == 9 && self.anomalies == 0 {
            self.first_anomaly = (number, status);
        }
        if code == 9 {
            self.anomalies += 1;
        }
        if self.ring {
            let slot = self.made % RING_ENTRIES;
            let base = RING + 8 * RING_WORDS * (1 + slot);
            let words = [
                self.made,
                number,
                arguments[0],
                arguments[1],
                arguments[2],
                arguments[3],
                status,
                value,
            ];
            for (offset, word) in words.into_iter().enumerate() {
                rt::fault::user_word(base + 8 * offset as u64).store(word, Ordering::Relaxed);
            }
            rt::fault::user_word(RING + 16).store(self.made, Ordering::Relaxed);
        }
    }

    fn remember(&mut self, handle: u64, kind: KnownKind) {
        let index = match self.known.iter().position(Option::is_none) {
            Some(index) => index,
            None => self.rng.below(MAX_KNOWN as u64) as usize,
        };
        self.known[index] = Some(Known { handle, kind });
    }

    fn forget(&mut self, handle: u64) {
        for entry in &mut self.known {
            if entry.is_some_and(|known| known.handle == handle) {
                *entry = None;
            }
        }
        self.stale[self.stale_next % MAX_STALE] = handle;
        self.stale_next += 1;
    }

    /// A known capability of `kind` (any kind for `None`).
    fn known_of(&mut self, kind: Option<KnownKind>) -> Option<u64> {
        let start = self.rng.below(MAX_KNOWN as u64) as usize;
        (0..MAX_KNOWN)
            .map(|offset| self.known[(start + offset) % MAX_KNOWN])
            .find_map(|entry| {
                entry
                    .filter(|known| kind.is_none_or(|kind| known.kind == kind))
                    .map(|known| known.handle)
            })
    }

    /// A handle of any class: known, stale, null, out of range, never issued, random.
    fn handle(&mut self) -> u64 {
        match self.rng.below(10) {
            0 => Handle::NULL.raw(),
            1 => self.stale[self.rng.below(MAX_STALE as u64) as usize],
            2 => Handle::new(self.rng.below(200) as u32 | 0x8000_0000, 1).raw(),
            3 => Handle::new(self.rng.below(130) as u32, 0).raw(),
            4 => self.rng.next() | 1 << 31,
            _ => self.known_of(None).unwrap_or(0),
        }
    }

    /// A handle no blocking call can wait on: it fails the lookup, the type or the rights.
    fn unwaitable_handle(&mut self, number: u64) -> u64 {
        let wrong_type = if number == Syscall::Wait.number() {
            self.known_of(Some(KnownKind::Endpoint))
        } else {
            self.known_of(Some(KnownKind::Notification))
        };
        match self.rng.below(6) {
            0 => Handle::NULL.raw(),
            1 => self.stale[self.rng.below(MAX_STALE as u64) as usize],
            2 => Handle::new(self.rng.below(1 << 20) as u32 | 0x8000_0000, 1).raw(),
            3 => self.known_of(Some(KnownKind::Reduced)).unwrap_or(0),
            4 => wrong_type.unwrap_or(0),
            _ if self.image != 0 => self.image,
            _ => self.known_of(Some(KnownKind::System)).unwrap_or(0),
        }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=29 => self.raw_call(),
            30..=37 => self.create(),
            38..=45 => self.derive(),
            46..=50 => self.delete(),
            51..=56 => self.notify(),
            57..=62 => self.remap(),
            63..=66 => self.fill_buffer(),
            67..=74 => self.start_helper(None),
            75..=80 => self.control_helper(),
            81..=84 => self.spawn_child(),
            85..=88 => self.watch_child(),
            89..=91 => self.start_helper(Some(Op::Jump)),
            92..=93 => self.own_registers(),
            94..=96 => self.bad_ipc(),
            97..=98 => self.pause(),
            _ => self.fill_table(),
        }
    }

    /// Any number with arguments from the pools, made safe for the main thread.
    fn raw_call(&mut self) {
        let number = match self.rng.below(8) {
            0 => self.rng.next(),
            1 => self.rng.below(0x60),
            _ => self.rng.pick(NUMBERS),
        };
        let mut arguments = [0u64; 6];
        for argument in &mut arguments {
            *argument = match self.rng.below(4) {
                0 => self.handle(),
                1 => address(&mut self.rng),
                2 => length(&mut self.rng),
                _ => number_argument(&mut self.rng),
            };
        }
        match Syscall::from_number(number) {
            // The main thread ends only when it has made its calls.
            Some(Syscall::Exit) => return self.pause(),
            Some(Syscall::ThreadWriteRegisters) if arguments[0] == 0 => {
                arguments[2] = UserRegisters::SIZE as u64 + 8 * (1 + self.rng.below(4));
            }
            Some(
                Syscall::Send | Syscall::Recv | Syscall::Call | Syscall::ReplyRecv | Syscall::Wait,
            ) => {
                let handle = self.unwaitable_handle(number);
                let info = info(&mut self.rng);
                let _ = self.ipc(number, handle, info, [arguments[2]; 4]);
                return;
            }
            Some(Syscall::ThreadSetPriority) if self.single => {
                arguments[1] = arguments[1].max(abi::PRIORITY_NORMAL);
            }
            Some(Syscall::Sleep) => arguments[0] = self.rng.pick(&[0, 1, 2, 10_001, u64::MAX]),
            Some(Syscall::TestSleep) => arguments[0] = self.rng.pick(&[0, 1, 101, u64::MAX]),
            Some(Syscall::MemoryUnmap) if touches_kept(arguments[0], arguments[1]) => {
                arguments[0] = 0xffff_8000_0000_0000;
            }
            Some(Syscall::ThreadCreate) => {
                // A thread started at a random place dies of a fault on its own: only
                // with several processes, and seldom (each death prints a report). Never
                // inside this program's image: it would run this program's code.
                if self.single || !self.rng.chance(16) {
                    arguments[1] |= 8;
                }
                if (IMAGE..IMAGE + IMAGE_SPAN).contains(&arguments[0]) {
                    arguments[0] = 0x10_0000;
                }
                if arguments[1] > USER_END - PAGE_SIZE - 0x2_0000 && arguments[1] <= USER_END {
                    arguments[1] = USER_END - 8;
                }
            }
            Some(Syscall::ProcessSpawn) => {
                if self.single {
                    arguments[3] = arguments[3].max(abi::PRIORITY_NORMAL);
                }
                if self.children.iter().all(Option::is_some) {
                    let slot = self.rng.below(MAX_CHILDREN as u64) as usize;
                    self.kill_child(slot);
                }
                // Mostly a child that ends at once (a random argument); sometimes a fuzzer.
                arguments[4] = if self.rng.chance(4) {
                    self.child_argument()
                } else {
                    self.rng.next() | RESERVED
                };
            }
            _ => {}
        }
        let (status, value) = self.sys(number, arguments);
        if status != 0 {
            return;
        }
        match Syscall::from_number(number) {
            Some(Syscall::MemoryMap | Syscall::MemoryUnmap) => {
                let mapped = number == Syscall::MemoryMap.number();
                for page in 0..SCRATCH_PAGES {
                    let at = SCRATCH + page * PAGE_SIZE;
                    if at >= arguments[0] && at - arguments[0] < arguments[1] {
                        self.scratch[page as usize] =
                            if mapped { arguments[2] as u8 + 1 } else { 0 };
                    }
                }
            }
            Some(Syscall::ProcessSpawn) => self.adopt(value),
            Some(Syscall::CapDelete) => self.forget(arguments[0]),
            Some(Syscall::CapCopy | Syscall::CapMint) => self.remember(value, KnownKind::Other),
            Some(Syscall::EndpointCreate) => self.remember(value, KnownKind::Endpoint),
            Some(Syscall::NotificationCreate) => self.remember(value, KnownKind::Notification),
            Some(Syscall::ThreadCreate) => {
                // Started at a random place, it ends by its fault, or by a kill before the
                // main thread exits (the last thread's ending is the process's).
                let slot = self.rng.below(MAX_STRAYS as u64) as usize;
                self.end_stray(slot);
                self.strays[slot] = Some(value);
            }
            _ => {}
        }
    }

    fn create(&mut self) {
        let number = if self.rng.chance(2) {
            Syscall::EndpointCreate
        } else {
            Syscall::NotificationCreate
        };
        let (status, value) = self.sys(number.number(), [0; 6]);
        if status == 0 {
            let kind = if number == Syscall::EndpointCreate {
                KnownKind::Endpoint
            } else {
                KnownKind::Notification
            };
            self.remember(value, kind);
        }
    }

    /// Copies (some reduced below every blocking right), badged mints, identifies.
    fn derive(&mut self) {
        let source = self.handle();
        match self.rng.below(4) {
            0 => {
                let mask = (Rights::GRANT | Rights::MAP | Rights::EXECUTE | Rights::CONTROL).bits();
                let (status, value) = self.sys(
                    Syscall::CapCopy.number(),
                    [source, u64::from(mask), 0, 0, 0, 0],
                );
                if status == 0 {
                    self.remember(value, KnownKind::Reduced);
                }
            }
            1 => {
                let mask = number_argument(&mut self.rng);
                let (status, value) =
                    self.sys(Syscall::CapCopy.number(), [source, mask, 0, 0, 0, 0]);
                if status == 0 {
                    // A copy with all the source's rights may block: keep it as its kind.
                    let kind = self.kind_of(value);
                    self.remember(value, kind);
                }
            }
            2 => {
                let badge = number_argument(&mut self.rng);
                let mask = number_argument(&mut self.rng) & 0x3ff;
                let (status, value) =
                    self.sys(Syscall::CapMint.number(), [source, badge, mask, 0, 0, 0]);
                if status == 0 {
                    let kind = self.kind_of(value);
                    self.remember(value, kind);
                }
            }
            _ => {
                let _ = self.sys(Syscall::CapIdentify.number(), [source, 0, 0, 0, 0, 0]);
            }
        }
    }

    /// A new handle's kind, as far as blocking goes: `Reduced` when it holds none of
    /// `READ WRITE CALL WAIT`.
    fn kind_of(&mut self, handle: u64) -> KnownKind {
        let (status, value) = self.sys(Syscall::CapIdentify.number(), [handle, 0, 0, 0, 0, 0]);
        if status != 0 {
            return KnownKind::Other;
        }
        let rights = Rights::from_bits_truncate((value >> 32) as u32);
        let blocking = Rights::READ | Rights::WRITE | Rights::CALL | Rights::WAIT;
        match ObjectType::from_number(value as u32) {
            _ if rights.intersection(blocking).is_empty() => KnownKind::Reduced,
            Some(ObjectType::Endpoint) => KnownKind::Endpoint,
            Some(ObjectType::Notification) => KnownKind::Notification,
            Some(ObjectType::Memory) => KnownKind::Memory,
            Some(ObjectType::System) => KnownKind::System,
            _ => KnownKind::Other,
        }
    }

    fn delete(&mut self) {
        let handle = self.handle();
        let (status, _) = self.sys(Syscall::CapDelete.number(), [handle, 0, 0, 0, 0, 0]);
        if status == 0 {
            self.forget(handle);
        }
    }

    fn notify(&mut self) {
        let handle = match self.rng.below(3) {
            0 => self.handle(),
            _ => self.known_of(Some(KnownKind::Notification)).unwrap_or(0),
        };
        if self.rng.chance(2) {
            let bits = number_argument(&mut self.rng);
            let _ = self.sys(Syscall::Signal.number(), [handle, bits, 0, 0, 0, 0]);
        } else {
            let _ = self.sys(Syscall::Poll.number(), [handle, 0, 0, 0, 0, 0]);
        }
    }

    /// Unmap a scratch page, or map one with other permissions (IPC buffers included).
    fn remap(&mut self) {
        let page = self.rng.below(SCRATCH_PAGES);
        let address = SCRATCH + page * PAGE_SIZE;
        if self.scratch[page as usize] != 0 {
            let pages = if self.rng.chance(4) { 2 } else { 1 };
            let (status, _) = self.sys(
                Syscall::MemoryUnmap.number(),
                [address, pages * PAGE_SIZE, 0, 0, 0, 0],
            );
            if status == 0 {
                for index in page..(page + pages).min(SCRATCH_PAGES) {
                    self.scratch[index as usize] = 0;
                }
            }
        } else {
            let flags = self
                .rng
                .pick(&[0, abi::MAP_WRITE, abi::MAP_WRITE, abi::MAP_EXECUTE]);
            self.map_scratch(page, flags);
        }
    }

    /// Write handles (live, stale, duplicated) and words into a writable scratch page, and
    /// perhaps make it the main thread's IPC buffer.
    fn fill_buffer(&mut self) {
        let page = self.rng.below(SCRATCH_PAGES);
        if self.scratch[page as usize] == abi::MAP_WRITE as u8 + 1 {
            let base = SCRATCH + page * PAGE_SIZE;
            let first = self.handle();
            for index in 0..8u64 {
                let word = match self.rng.below(4) {
                    0 => first,
                    1 => self.handle(),
                    _ => self.rng.next(),
                };
                rt::fault::user_word(base + 8 * index).store(word, Ordering::Relaxed);
            }
        }
        let buffer = if self.rng.chance(4) {
            address(&mut self.rng)
        } else {
            SCRATCH + page * PAGE_SIZE
        };
        let _ = self.sys(Syscall::IpcBufferSet.number(), [buffer, 0, 0, 0, 0, 0]);
    }

    /// Start a helper thread in a free slot (killing one when all are taken).
    fn start_helper(&mut self, op: Option<Op>) {
        let slot = match self.helpers.iter().position(Option::is_none) {
            Some(slot) => slot,
            None => {
                let slot = self.rng.below(MAX_HELPERS as u64) as usize;
                self.kill_helper(slot);
                slot
            }
        };
        let op = op.unwrap_or_else(|| self.rng.pick(&OPS[..6]));
        let handle = match op {
            Op::Recv | Op::Call | Op::Send | Op::ReplyRecv => match self.rng.below(4) {
                0 => self.handle(),
                _ => self.known_of(Some(KnownKind::Endpoint)).unwrap_or(0),
            },
            Op::Wait => match self.rng.below(4) {
                0 => self.handle(),
                _ => self.known_of(Some(KnownKind::Notification)).unwrap_or(0),
            },
            Op::Spin | Op::Jump => 0,
        };
        // In single mode no thread of this process receives capabilities (no buffer).
        let buffer = if self.single || self.rng.chance(3) {
            0
        } else {
            SCRATCH + self.rng.below(SCRATCH_PAGES) * PAGE_SIZE
        };
        HELPER_OP[slot].store(op as u64, Ordering::Relaxed);
        HELPER_HANDLE[slot].store(handle, Ordering::Relaxed);
        HELPER_SEED[slot].store(self.rng.next(), Ordering::Relaxed);
        HELPER_BUFFER[slot].store(buffer, Ordering::Relaxed);
        let stack_top = STACKS + slot as u64 * STACK_SLOT + STACK_PAGES * PAGE_SIZE;
        // In single mode every thread stays at the main thread's priority, so that a yield
        // lets each of them run.
        let lower = self.rng.below(2);
        let priority = abi::PRIORITY_NORMAL - if self.single { 0 } else { lower };
        let (status, value) = self.sys(
            Syscall::ThreadCreate.number(),
            [
                helper as extern "C" fn(u64) -> ! as usize as u64,
                stack_top,
                slot as u64,
                priority,
                0,
                0,
            ],
        );
        if status == 0 {
            self.helpers[slot] = Some(Helper { handle: value, op });
            self.helpers_made += 1;
        }
    }

    fn kill_helper(&mut self, slot: usize) {
        if let Some(helper) = self.helpers[slot].take() {
            let (status, _) =
                self.sys(Syscall::ThreadKill.number(), [helper.handle, 0, 0, 0, 0, 0]);
            if status == 0 {
                self.thread_kills += 1;
            }
            let _ = self.sys(Syscall::CapDelete.number(), [helper.handle, 0, 0, 0, 0, 0]);
            self.let_the_killed_end();
        }
    }

    /// In single mode, let a killed thread or process end before going on: a yield, not
    /// counted, after which every other thread of this priority has run (a killed one
    /// ends when it runs). So the thread and object counts the next calls meet do not
    /// depend on when the timer preempts.
    fn let_the_killed_end(&self) {
        if self.single {
            let _ = rt::yield_now();
        }
    }

    /// Kill a helper (blocked or not), change its priority, or kill twice.
    fn control_helper(&mut self) {
        let slot = self.rng.below(MAX_HELPERS as u64) as usize;
        let Some(helper) = self.helpers[slot] else {
            return self.start_helper(None);
        };
        match self.rng.below(3) {
            0 => {
                let mut priority = self.rng.pick(&[1, 7, 8, 9, 31, 32, u64::MAX]);
                if self.single {
                    priority = priority.max(abi::PRIORITY_NORMAL);
                }
                let _ = self.sys(
                    Syscall::ThreadSetPriority.number(),
                    [helper.handle, priority, 0, 0, 0, 0],
                );
            }
            _ => {
                let _ = helper.op;
                self.kill_helper(slot);
            }
        }
    }

    /// A child fuzzer's argument: a short run, no children of its own.
    fn child_argument(&mut self) -> u64 {
        let calls = 200 + self.rng.below(1500);
        let single = if self.single { SINGLE } else { 0 };
        ROLE_CHILD
            | single
            | self.index << INDEX_SHIFT
            | calls << CALLS_SHIFT
            | (self.rng.next() & 0xffff_ffff) << SEED_SHIFT
    }

    fn adopt(&mut self, process: u64) {
        self.spawns += 1;
        match self.children.iter().position(Option::is_none) {
            Some(slot) => self.children[slot] = Some(process),
            None => {
                // No room to watch it: end it now.
                let (status, _) = self.sys(Syscall::ProcessKill.number(), [process, 0, 0, 0, 0, 0]);
                if status == 0 {
                    self.kills += 1;
                }
                let _ = self.sys(Syscall::CapDelete.number(), [process, 0, 0, 0, 0, 0]);
                self.let_the_killed_end();
            }
        }
    }

    fn end_stray(&mut self, slot: usize) {
        if let Some(thread) = self.strays[slot].take() {
            let _ = self.sys(Syscall::ThreadKill.number(), [thread, 0, 0, 0, 0, 0]);
            let _ = self.sys(Syscall::CapDelete.number(), [thread, 0, 0, 0, 0, 0]);
        }
    }

    fn kill_child(&mut self, slot: usize) {
        if let Some(process) = self.children[slot].take() {
            let (status, _) = self.sys(Syscall::ProcessKill.number(), [process, 0, 0, 0, 0, 0]);
            if status == 0 {
                self.kills += 1;
            }
            let _ = self.sys(Syscall::CapDelete.number(), [process, 0, 0, 0, 0, 0]);
            self.let_the_killed_end();
        }
    }

    /// Spawn a child fuzzer with a list of capabilities: shared objects, siblings,
    /// duplicates, and now and then a stale handle, one without `GRANT` or too many.
    fn spawn_child(&mut self) {
        if !self.top {
            return self.raw_call();
        }
        if self.children.iter().all(Option::is_some) {
            let slot = self.rng.below(MAX_CHILDREN as u64) as usize;
            self.kill_child(slot);
        }
        // A spawn is charged to the object quota, which creating keeps nearly full: make
        // room now and then.
        if self.rng.chance(2) {
            for kind in [KnownKind::Endpoint, KnownKind::Notification] {
                if let Some(handle) = self.known_of(Some(kind)) {
                    let (status, _) =
                        self.sys(Syscall::CapDelete.number(), [handle, 0, 0, 0, 0, 0]);
                    if status == 0 {
                        self.forget(handle);
                    }
                }
            }
        }
        let mut list = [0u64; 18];
        let mut count = 0;
        for (place, kind) in [
            KnownKind::Endpoint,
            KnownKind::Notification,
            KnownKind::Endpoint,
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(handle) = self.known_of(Some(kind)) {
                list[place] = handle;
                count = place + 1;
            }
        }
        // A sibling to kill (never in single mode: its death would depend on timing).
        if !self.single
            && let Some(sibling) = self.children.iter().flatten().next()
        {
            list[count] = *sibling;
            count += 1;
        }
        match self.rng.below(10) {
            0 => {
                list[count] = list[0];
                count += 1;
            }
            1 => {
                list[count] = self.handle();
                count += 1;
            }
            2 => count = 17,
            _ => {}
        }
        let pointer = if self.rng.chance(10) {
            address(&mut self.rng)
        } else {
            list.as_ptr() as u64
        };
        let image = if self.rng.chance(10) {
            self.handle()
        } else {
            self.image
        };
        let mut priority = self.rng.pick(&[abi::PRIORITY_NORMAL, 7, 1, 9, 32]);
        if self.single {
            priority = priority.max(abi::PRIORITY_NORMAL);
        }
        let argument = self.child_argument();
        // The child's budget: the default share, shares that fit, one too small for any
        // image, one beyond any parent's.
        let budget = self.rng.pick(&[0, 0, 1 << 20, 4 << 20, 64 << 10, u64::MAX]);
        let (status, value) = self.sys(
            Syscall::ProcessSpawn.number(),
            [image, pointer, count as u64, priority, argument, budget],
        );
        if status == 0 {
            self.adopt(value);
        }
    }

    /// Status, id, death binding, or a kill of a child.
    fn watch_child(&mut self) {
        let slot = self.rng.below(MAX_CHILDREN as u64) as usize;
        let Some(process) = self.children[slot] else {
            return self.notify();
        };
        match self.rng.below(4) {
            0 => {
                let _ = self.sys(Syscall::ProcessStatus.number(), [process, 0, 0, 0, 0, 0]);
            }
            1 => {
                let _ = self.sys(Syscall::ProcessId.number(), [process, 0, 0, 0, 0, 0]);
            }
            2 => {
                let notification = self.known_of(Some(KnownKind::Notification)).unwrap_or(0);
                let bits = number_argument(&mut self.rng);
                let _ = self.sys(
                    Syscall::ProcessBindDeath.number(),
                    [process, notification, bits, 0, 0, 0],
                );
            }
            _ => self.kill_child(slot),
        }
    }

    /// `thread_write_registers` on this thread with an image it refuses: a wrong length,
    /// another thread, or an unreadable pointer.
    fn own_registers(&mut self) {
        let image = registers::starting_at(0, 0, 0);
        let (thread, pointer, length) = match self.rng.below(3) {
            0 => (
                0,
                core::ptr::from_ref(&image) as u64,
                UserRegisters::SIZE as u64 - 8,
            ),
            1 => (
                1 + self.rng.below(8),
                core::ptr::from_ref(&image) as u64,
                UserRegisters::SIZE as u64,
            ),
            _ => {
                let mut pointer = address(&mut self.rng);
                // Readable scratch would hold a valid image only by chance: zeroes are not.
                if (SCRATCH..SCRATCH + SCRATCH_PAGES * PAGE_SIZE).contains(&pointer) {
                    pointer = 0xffff_ffff_8000_0000;
                }
                (0, pointer, UserRegisters::SIZE as u64)
            }
        };
        let _ = self.sys(
            Syscall::ThreadWriteRegisters.number(),
            [thread, pointer, length, 0, 0, 0],
        );
    }

    /// IPC the main thread may make: malformed messages to real endpoints, and replies
    /// with random contents when it holds no caller.
    fn bad_ipc(&mut self) {
        let endpoint = self.known_of(Some(KnownKind::Endpoint)).unwrap_or(0);
        let words = [
            self.rng.next(),
            self.rng.next(),
            self.rng.next(),
            self.rng.next(),
        ];
        match self.rng.below(3) {
            0 => {
                let number = self.rng.pick(&[
                    Syscall::Send.number(),
                    Syscall::Call.number(),
                    Syscall::ReplyRecv.number(),
                ]);
                let malformed = bad_info(&mut self.rng);
                let _ = self.ipc(number, endpoint, malformed, words);
            }
            _ => {
                let info = info(&mut self.rng);
                let _ = self.ipc(Syscall::Reply.number(), endpoint, info, words);
            }
        }
    }

    fn pause(&mut self) {
        let (number, ticks) = match self.rng.below(3) {
            0 => (Syscall::Yield.number(), 0),
            1 => (Syscall::Sleep.number(), 1),
            _ => (Syscall::Null.number(), 0),
        };
        let _ = self.sys(number, [ticks, 0, 0, 0, 0, 0]);
    }

    /// Fill the capability table through several growths (up to [`FILL_MAX`]
    /// capabilities, or until the budget refuses), then delete those (the table shrinks
    /// again).
    fn fill_table(&mut self) {
        let mut made = [0u64; FILL_MAX];
        let mut count = 0;
        let source = self.known_of(Some(KnownKind::Notification));
        while count < made.len() {
            let (status, value) = match source {
                Some(source) if self.rng.chance(2) => {
                    self.sys(Syscall::CapCopy.number(), [source, 0x1ff, 0, 0, 0, 0])
                }
                _ => self.sys(Syscall::NotificationCreate.number(), [0; 6]),
            };
            if status != 0 {
                break;
            }
            made[count] = value;
            count += 1;
        }
        for &handle in &made[..count] {
            let _ = self.sys(Syscall::CapDelete.number(), [handle, 0, 0, 0, 0, 0]);
            self.stale[self.stale_next % MAX_STALE] = handle;
            self.stale_next += 1;
        }
    }

    /// End the helpers and children, print the figures, and exit.
    fn finish(&mut self) -> i64 {
        for slot in 0..MAX_HELPERS {
            self.kill_helper(slot);
        }
        for slot in 0..MAX_CHILDREN {
            self.kill_child(slot);
        }
        for slot in 0..MAX_STRAYS {
            self.end_stray(slot);
        }
        if !self.top {
            // In single mode a child ends by its parent's kill, never at a moment the
            // timer chose.
            if self.single {
                loop {
                    let _ = rt::proc::sleep(100);
                }
            }
            return 0;
        }
        let index = self.index;
        println!(
            "fuzz {index}: {} calls, {} helper threads ({} killed), {} spawns, {} kills",
            self.made, self.helpers_made, self.thread_kills, self.spawns, self.kills
        );
        let mut line = rt::print::Line::new();
        let mut written = 0;
        for (number, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if written == 0 {
                let _ = core::fmt::write(&mut line, format_args!("fuzz {index} calls:"));
            }
            let _ = core::fmt::write(&mut line, format_args!(" {number:#x}={count}"));
            written += 1;
            if written == 12 {
                line.flush();
                line = rt::print::Line::new();
                written = 0;
            }
        }
        if written != 0 {
            line.flush();
        }
        let e = &self.errors;
        println!(
            "fuzz {index} errors: ok={} InvalidArgument={} BadAddress={} OutOfMemory={} PeerDied={} InvalidHandle={} PermissionDenied={} NoSpace={} NotSupported={} other={}",
            e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8], e[9]
        );
        self.print_ring();
        if self.anomalies == 0 {
            println!(
                "ok fuzz {index} made {} calls, every status an abi::Error code",
                self.made
            );
            0
        } else {
            let (number, status) = self.first_anomaly;
            println!(
                "not ok fuzz {index}: {} statuses that are no abi::Error code (first: call {number:#x} returned {status:#x}); seed {}",
                self.anomalies, self.seed
            );
            1
        }
    }

    /// The last calls, oldest first, two to a line.
    fn print_ring(&self) {
        if !self.ring {
            return;
        }
        let index = self.index;
        let first = self.made.saturating_sub(RING_ENTRIES - 1).max(1);
        let mut call = first;
        while call <= self.made {
            let mut line = rt::print::Line::new();
            let _ = core::fmt::write(&mut line, format_args!("fuzz {index} last:"));
            for _ in 0..2 {
                if call > self.made {
                    break;
                }
                let base = RING + 8 * RING_WORDS * (1 + call % RING_ENTRIES);
                let word =
                    |offset: u64| rt::fault::user_word(base + 8 * offset).load(Ordering::Relaxed);
                let _ = core::fmt::write(
                    &mut line,
                    format_args!(
                        " #{} {:#x}({:#x},{:#x},{:#x},{:#x})={}",
                        word(0),
                        word(1),
                        word(2),
                        word(3),
                        word(4),
                        word(5),
                        word(6)
                    ),
                );
                call += 1;
            }
            line.flush();
        }
    }
}

/// Whether `[address, address + length)` touches the helper stacks or the ring (never
/// unmapped by a random call).
fn touches_kept(address: u64, length: u64) -> bool {
    let end = address.saturating_add(length.max(1));
    let kept = [
        (STACKS, STACKS + MAX_HELPERS as u64 * STACK_SLOT),
        (RING, RING + PAGE_SIZE),
    ];
    kept.iter()
        .any(|&(start, stop)| address < stop && end > start)
        || address.checked_add(length).is_none()
}

/// A helper thread: its slot's op, forever, until it is killed. After an error it sleeps a
/// tick (so a helper with a bad handle costs little).
extern "C" fn helper(slot: u64) -> ! {
    let slot = (slot as usize).min(MAX_HELPERS - 1);
    let op = HELPER_OP[slot].load(Ordering::Relaxed);
    let handle = HELPER_HANDLE[slot].load(Ordering::Relaxed);
    let mut rng = Rng::new(HELPER_SEED[slot].load(Ordering::Relaxed));
    let buffer = HELPER_BUFFER[slot].load(Ordering::Relaxed);
    if buffer != 0 {
        let _ = rt::ipc::ipc_buffer_set(buffer);
    }
    let single = SINGLE_MODE.load(Ordering::Relaxed) != 0;
    loop {
        let words = [rng.next(), rng.next(), rng.next(), rng.next()];
        let status = match OPS.get(op as usize).copied().unwrap_or(Op::Spin) {
            Op::Recv => {
                let got = rt::ipc_registers(Syscall::Recv.number(), handle, 0, words);
                if got.status == 0 && rng.chance(2) {
                    let _ = rt::ipc_registers(Syscall::Reply.number(), 0, info(&mut rng), words);
                }
                got.status
            }
            Op::Call => {
                rt::ipc_registers(Syscall::Call.number(), handle, info(&mut rng), words).status
            }
            Op::Send => {
                rt::ipc_registers(Syscall::Send.number(), handle, info(&mut rng), words).status
            }
            Op::Wait => rt::ipc_registers(Syscall::Wait.number(), handle, 0, words).status,
            Op::ReplyRecv => {
                rt::ipc_registers(Syscall::ReplyRecv.number(), handle, info(&mut rng), words).status
            }
            Op::Spin => {
                let _ = rt::null();
                let _ = rt::yield_now();
                0
            }
            Op::Jump => jump(&mut rng, slot, single),
        };
        if status != 0 {
            let _ = rt::proc::sleep(1 + rng.below(3));
        }
    }
}

/// `thread_write_registers` with a random image. Most are refused; a valid one lands in
/// [`landed`] on this slot's stack; outside single mode, one in 64 is valid but starts at a
/// random user address, and the thread dies of the fault.
fn jump(rng: &mut Rng, slot: usize, single: bool) -> u64 {
    let stack_top = STACKS + slot as u64 * STACK_SLOT + STACK_PAGES * PAGE_SIZE;
    let mut image = registers::starting_at(
        landed as extern "C" fn(u64) -> ! as usize as u64,
        stack_top,
        0x1a4d,
    );
    // In single mode only images that are refused or land safely: a helper that dies on
    // its own would make the main thread's kill results depend on timing.
    match rng.below(12) {
        0 if !single => image.instruction_pointer = address(rng),
        1 if !single => image.stack_pointer = stack_address(rng),
        2 if !single => image.flags = rng.next(),
        3 => image.flags = registers::PRIVILEGED_FLAGS,
        4 => image.fpu_control = rng.next(),
        5 => image.fpu_control = registers::BAD_FPU_CONTROL,
        6 => image.fpu_status = rng.next(),
        7 => image.general = core::array::from_fn(|_| rng.next()),
        8 if !single => image.instruction_pointer = rng.next(),
        9 if !single && rng.chance(64) => image.instruction_pointer = SCRATCH + 0x10,
        0 | 1 | 2 | 8 => image.instruction_pointer = 0xffff_ffff_8000_0000 + rng.below(1 << 20),
        _ => {}
    }
    match registers::write(0, &image) {
        Ok(_) => 0,
        Err(error) => u64::from(error.code()),
    }
}

/// Where a valid register image lands: wait here until killed.
extern "C" fn landed(_: u64) -> ! {
    loop {
        let _ = rt::proc::sleep(5);
    }
}
