//! Test support shared by the fuzz and soak tests of `tracer` and `migrator`
//! (issue 10): a seedable input generator, an allocation guard, and the
//! message of a caught panic. Not shipped; a dev-dependency only.
//!
//! A fuzz test binary installs the guard as its global allocator:
//! `#[global_allocator] static GLOBAL: testkit::Guard = testkit::Guard;`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The largest single allocation seen (the generator's own inputs included).
pub static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Allocations above this many bytes are refused (`FUZZ_ALLOC_LIMIT`; default 512 MiB).
pub static LIMIT: AtomicUsize = AtomicUsize::new(512 << 20);
/// The seed of the case running now, printed when an allocation is refused.
pub static CASE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Allocation guard: forwards to the system allocator but refuses (the
/// process then aborts) any single allocation above [`LIMIT`], after writing
/// the case seed to stderr without allocating. A length field of 2^63 that
/// reaches an allocation is thereby a test failure even when the machine could
/// satisfy it.
pub struct Guard;

fn note(size: usize) -> bool {
    LARGEST.fetch_max(size, Ordering::Relaxed);
    if size <= LIMIT.load(Ordering::Relaxed) {
        return true;
    }
    let msg = b"\nfuzz: refused an allocation above FUZZ_ALLOC_LIMIT (unbounded allocation) in the case with seed:\n";
    // SAFETY: writing valid static bytes to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    let mut digits = [b'\n'; 21];
    let mut v = CASE.load(Ordering::Relaxed);
    for i in (0..20).rev() {
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    // SAFETY: as above, a stack buffer.
    unsafe { libc::write(2, digits.as_ptr().cast(), digits.len()) };
    false
}

// SAFETY: forwards to the system allocator; refusing (null) is allowed by the contract.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !note(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !note(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if !note(new) {
            return std::ptr::null_mut();
        }
        // SAFETY: `p` came from `System` with layout `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

/// splitmix64: small, seedable, good enough to generate inputs.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    /// A 64-bit length/offset field worth trying against a buffer of `len` bytes.
    pub fn interesting(&mut self, len: usize) -> u64 {
        const V: &[u64] = &[
            0,
            1,
            2,
            0x7f,
            0x80,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x1_0000_0000,
            1 << 62,
            1 << 63,
            u64::MAX,
            u64::MAX - 1,
            i64::MAX as u64,
        ];
        match self.below(4) {
            0 => len as u64 + self.below(3) as u64,
            1 => (len as u64).wrapping_sub(self.below(16) as u64),
            _ => V[self.below(V.len())],
        }
    }

    /// A 32-bit count/length field worth trying around `len`.
    pub fn interesting32(&mut self, len: usize) -> u32 {
        const V: &[u32] = &[
            0,
            1,
            2,
            63,
            64,
            65,
            0xff,
            0xffff,
            0x1_0000,
            0x1_0001,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
        ];
        match self.below(3) {
            0 => (len as u32)
                .wrapping_add(self.below(5) as u32)
                .wrapping_sub(2),
            _ => V[self.below(V.len())],
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// What [`fuzz`] did.
pub struct Outcome {
    pub cases: u64,
    pub secs: f64,
    /// The first case's seed (case `i` used `seed + i`).
    pub seed: u64,
    /// One line per case that panicked, with the environment that reproduces it.
    pub failures: Vec<String>,
}

/// Runs `case` on generated inputs within the budget from the environment:
/// `FUZZ_SECS` (default 3) seconds, at most `FUZZ_CASES` cases, seeds from
/// `FUZZ_SEED` (default: the clock), the allocation guard's limit from
/// `FUZZ_ALLOC_LIMIT`. Each case gets its own seeded [`Rng`]; a panic is
/// caught and recorded with its seed (the default hook prints one line).
pub fn fuzz(mut case: impl FnMut(&mut Rng)) -> Outcome {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(l) = env("FUZZ_ALLOC_LIMIT") {
        LIMIT.store(l as usize, Ordering::Relaxed);
    }
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let secs = env("FUZZ_SECS").unwrap_or(3.0);
    let max_cases = env("FUZZ_CASES").map(|c| c as u64).unwrap_or(u64::MAX);
    LARGEST.store(0, Ordering::Relaxed);
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "fuzz: panic: {}",
            format!("{info}").lines().next().unwrap_or("")
        )
    }));
    let t0 = std::time::Instant::now();
    let (mut n, mut failures) = (0u64, Vec::new());
    while n < max_cases && t0.elapsed().as_secs_f64() < secs {
        let s = seed.wrapping_add(n);
        CASE.store(s, Ordering::Relaxed);
        let mut rng = Rng(s);
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut rng))) {
            failures.push(format!(
                "FUZZ_SEED={s} FUZZ_CASES=1: {}",
                panic_message(&*e)
            ));
        }
        n += 1;
    }
    std::panic::set_hook(prev);
    CASE.store(u64::MAX, Ordering::Relaxed);
    Outcome {
        cases: n,
        secs: t0.elapsed().as_secs_f64(),
        seed,
        failures,
    }
}

impl Outcome {
    /// Prints `RELIABILITY fuzz <target> cases=N secs=S failures=F max_alloc=B
    /// seed=X<extra>` (read by scripts/reliability.sh) and fails the test if
    /// any case panicked.
    pub fn report(&self, target: &str, extra: &str) {
        println!(
            "RELIABILITY fuzz {target} cases={} secs={:.1} failures={} max_alloc={} seed={}{extra}",
            self.cases,
            self.secs,
            self.failures.len(),
            LARGEST.load(Ordering::Relaxed),
            self.seed
        );
        assert!(
            self.failures.is_empty(),
            "{target}: {} of {} cases panicked:\n{}",
            self.failures.len(),
            self.cases,
            self.failures.join("\n")
        );
    }
}
