//! Where L1 reads run: a few reader threads, shared by every store in the process, that
//! run read transactions (queries, counts, probes) off the async runtime, and short
//! reads on their caller's thread ([`inline`]).
//!
//! tokio's blocking pool starts a thread for every read that finds none idle, so fifty
//! concurrent REQs ran on fifty threads over two cores, and each read paid a thread
//! wake-up and sleep (futex calls and context switches: a fifth of a node's samples
//! while serving feed queries). Here a fixed number of threads take reads from one
//! queue; while reads are waiting a thread goes from one to the next without sleeping,
//! and at most as many reads run at once as there are threads, which the cores could
//! not run any faster in parallel anyway.
//!
//! A few long reads (a COUNT over most of the store, say) could hold every thread and
//! leave short ones queued behind them for as long as they run: a read still queued
//! after [`RESCUE_AFTER`] is taken back by its caller and run on tokio's blocking pool,
//! which starts a thread for it. Each read runs once: whoever takes it from its slot
//! first (a reader thread or its caller) runs it.
//!
//! Handing a read to a reader thread and its answer back costs more than most REQs'
//! reads themselves (two thread wake-ups; a fifth of a node's CPU per REQ), so a short
//! read runs on its caller's thread first ([`inline`]), under a budget of steps (index
//! entries walked, records read). A read that runs out of steps is abandoned and run
//! again here, so a worker of the async runtime spends at most the budget on any one
//! read; one that took long anyway and read from storage (a cold disk) turns inline
//! reads off for a moment.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use eventstore::StoreError;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A queued read, until a reader thread or its caller takes it.
struct Slot(Mutex<Option<Job>>);

impl Slot {
    fn take(&self) -> Option<Job> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// How long a read may wait for a reader thread before its caller runs it on the
/// blocking pool: far beyond the queueing of short reads on a busy node (a few
/// milliseconds), short next to a client's patience.
const RESCUE_AFTER: Duration = Duration::from_millis(50);

/// Reads taken back from the queue and run on the blocking pool (all stores).
static RESCUED: AtomicU64 = AtomicU64::new(0);

/// How many reads waited [`RESCUE_AFTER`] for a reader thread and ran on tokio's
/// blocking pool instead, since the process started: a figure that keeps rising means
/// long reads hold the reader threads.
pub fn reads_rescued() -> u64 {
    RESCUED.load(Ordering::Relaxed)
}

/// Reads answered on their caller's thread, and reads that ran out of steps there and
/// ran again on a reader thread (all stores).
static INLINE: AtomicU64 = AtomicU64::new(0);
static OVER_BUDGET: AtomicU64 = AtomicU64::new(0);
/// Inline reads that took longer than [`SLOW_INLINE`] and read from storage (each
/// turned inline reads off for [`INLINE_PAUSE`]).
static SLOW: AtomicU64 = AtomicU64::new(0);
/// Inline reads are off until this many milliseconds after [`epoch`].
static PAUSED_UNTIL: AtomicU64 = AtomicU64::new(0);

/// An inline read that takes this long (wall time) was waiting for something: far
/// above what its budget of steps costs in memory (half a millisecond). On a loaded
/// machine that is often a core (a few milliseconds); when the thread also read from
/// storage, it was most likely pages of a cold file, which a runtime worker must not
/// wait for.
const SLOW_INLINE: Duration = Duration::from_millis(10);
/// How long such a read turns inline reads off: every read meanwhile runs on the
/// reader threads, as if inline reads did not exist. Short, because the storage read
/// may have been the node's own code paged in while the machine was busy (seen in
/// the first seconds of a node's reads).
const INLINE_PAUSE: Duration = Duration::from_millis(250);

/// Where L1 reads ran since the process started (all stores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadPlaces {
    /// Answered on the caller's thread within their budget.
    pub inline: u64,
    /// Ran out of steps on the caller's thread and ran again on a reader thread.
    pub over_budget: u64,
    /// Inline reads slow (10 ms) and reading from storage: each turned inline reads
    /// off for 250 ms.
    pub slow: u64,
}

/// Where L1 reads ran ([`ReadPlaces`]).
pub fn read_places() -> ReadPlaces {
    ReadPlaces {
        inline: INLINE.load(Ordering::Relaxed),
        over_budget: OVER_BUDGET.load(Ordering::Relaxed),
        slow: SLOW.load(Ordering::Relaxed),
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

/// The error a read returns when it runs out of steps: never seen outside this crate.
#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an inline L1 read ran out of steps")
    }
}

impl std::error::Error for OverBudget {}

pub(crate) fn over_budget() -> StoreError {
    StoreError::Backend(Box::new(OverBudget))
}

/// Runs `f` on this thread with `steps` to spend, unless inline reads are off
/// (`steps` 0, or paused after a slow one). `None`: not run, or it ran out of steps;
/// either way the caller runs the read on a reader thread ([`run`]).
pub(crate) fn inline<T>(
    steps: u32,
    f: impl FnOnce(u32) -> Result<T, StoreError>,
) -> Option<Result<T, StoreError>> {
    if steps == 0 {
        return None;
    }
    let start = Instant::now();
    let paused = PAUSED_UNTIL.load(Ordering::Relaxed);
    if paused != 0 && millis_since_epoch(start) < paused {
        return None;
    }
    // A read that panics fails its caller, as on a reader thread, instead of unwinding
    // through the caller's task.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(steps)))
        .unwrap_or_else(|_| Err(StoreError::Backend("an inline L1 read panicked".into())));
    let took = start.elapsed();
    // A loaded machine also makes reads slow (the thread waits for a core); only one
    // that read from storage turns inline reads off.
    if took >= SLOW_INLINE && read_from_storage() {
        SLOW.fetch_add(1, Ordering::Relaxed);
        PAUSED_UNTIL.store(
            millis_since_epoch(start + took + INLINE_PAUSE),
            Ordering::Relaxed,
        );
        tracing::debug!(
            ?took,
            "an inline L1 read was slow; L1 reads run on the reader threads for a while"
        );
    }
    match r {
        Err(StoreError::Backend(e)) if e.is::<OverBudget>() => {
            OVER_BUDGET.fetch_add(1, Ordering::Relaxed);
            None
        }
        r => {
            INLINE.fetch_add(1, Ordering::Relaxed);
            Some(r)
        }
    }
}

/// Whether this thread read from storage (not the page cache) since it last asked,
/// from Linux's per-thread I/O accounting; where that cannot be read, yes. The first
/// time a thread asks only sets its baseline (it may have read from storage for other
/// reasons since it started). Costs a file read, so it is asked only about slow reads:
/// the storage read it sees may be older than this read (anything since the thread's
/// last slow one), and a cold disk is noticed at a worker's second slow read, not its
/// first. Reading the figure around every read would cost more than the hand-off
/// inline reads save.
fn read_from_storage() -> bool {
    thread_local! {
        static READ_BYTES: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    }
    let now = std::fs::read_to_string("/proc/thread-self/io")
        .ok()
        .and_then(|io| storage_read_bytes(&io));
    let Some(now) = now else { return true };
    READ_BYTES.with(|last| last.replace(Some(now)).is_some_and(|last| now > last))
}

/// The `read_bytes` figure of a `/proc/<pid>/io` file.
fn storage_read_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Threads started; with none, reads go to tokio's blocking pool instead.
    started: AtomicUsize,
}

struct Queue {
    jobs: VecDeque<Arc<Slot>>,
    /// Threads waiting for a job: a new job wakes one only if there is one.
    idle: usize,
}

/// Threads in the pool: twice the cores (a read may wait on the disk for a page not
/// cached), at least 4 and at most 32.
fn threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).clamp(4, 32)
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                idle: 0,
            }),
            ready: Condvar::new(),
            started: AtomicUsize::new(0),
        }));
        for i in 0..threads() {
            // A pool that cannot start a thread still has the others.
            match std::thread::Builder::new()
                .name(format!("layer1-reader-{i}"))
                .spawn(move || pool.work())
            {
                Ok(_) => {
                    pool.started.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "cannot start an L1 reader thread"),
            }
        }
        pool
    })
}

impl Pool {
    fn work(&self) {
        loop {
            let slot = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(slot) = q.jobs.pop_front() {
                        break slot;
                    }
                    q.idle += 1;
                    q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                    q.idle -= 1;
                }
            };
            // Empty when its caller took it back (`RESCUE_AFTER`).
            if let Some(job) = slot.take() {
                // A read that panics fails only its own caller (its answer is dropped).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        }
    }
}

/// Runs `f` on a reader thread and returns its result.
pub(crate) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let pool = pool();
    if pool.started.load(Ordering::Relaxed) == 0 {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
    }
    let (tx, mut rx) = oneshot::channel();
    let slot = Arc::new(Slot(Mutex::new(Some(Box::new(move || drop(tx.send(f())))))));
    {
        let mut q = pool.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.jobs.push_back(slot.clone());
        if q.idle > 0 {
            pool.ready.notify_one();
        }
    }
    // A caller that stops waiting (a closed subscription, a client gone) takes its read
    // out of the queue: nobody runs it.
    let _unwanted = Unwanted(slot.clone());
    let failed = || StoreError::Backend("an L1 read failed on its reader thread".into());
    if let Ok(r) = tokio::time::timeout(RESCUE_AFTER, &mut rx).await {
        return r.map_err(|_| failed())?;
    }
    // Still waiting. If still queued, every thread is busy with something long: this
    // read gets a thread of its own. Otherwise a reader thread is running it.
    if let Some(job) = slot.take() {
        RESCUED.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("an L1 read waited for a reader thread; running it on the blocking pool");
        // A panic there drops the answer's sender: the caller gets an error, as above.
        drop(tokio::task::spawn_blocking(job));
    }
    rx.await.map_err(|_| failed())?
}

/// Takes a read out of its slot when its caller is dropped.
struct Unwanted(Arc<Slot>);

impl Drop for Unwanted {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool is shared by the whole test binary: tests that hold every thread (or
    /// count where reads ran) take turns.
    static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[test]
    fn an_inline_read_runs_here_within_its_budget_and_is_given_up_past_it() {
        let here = std::thread::current().id();
        // A slow read elsewhere in this binary that read from storage pauses inline
        // reads for a moment: wait that out.
        let ran_here = (0..400).find_map(|_| {
            let r = inline(10, |steps| {
                assert_eq!(steps, 10);
                Ok(std::thread::current().id())
            });
            if r.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            r
        });
        assert_eq!(ran_here.expect("inline reads stayed paused").unwrap(), here);

        let before = read_places();
        assert!(inline(10, |_| Err::<(), _>(over_budget())).is_none());
        assert!(read_places().over_budget > before.over_budget);
        let other = inline(10, |_| Err::<(), _>(StoreError::Closed));
        assert!(
            matches!(other, None | Some(Err(StoreError::Closed))),
            "other failures are the read's answer"
        );

        let mut ran = false;
        assert!(
            inline(0, |_| {
                ran = true;
                Ok(())
            })
            .is_none()
        );
        assert!(!ran, "no steps: never run inline");
    }

    #[test]
    fn storage_reads_are_read_from_the_io_accounting() {
        let io = "rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 0\nread_bytes: 8192\nwrite_bytes: 0\n";
        assert_eq!(storage_read_bytes(io), Some(8192));
        assert_eq!(storage_read_bytes("rchar: 1\n"), None);
        if std::path::Path::new("/proc/thread-self/io").exists() {
            // The first question sets a baseline; nothing read from storage since.
            let _ = read_from_storage();
            assert!(!read_from_storage());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_reads_at_once_all_answer_on_a_few_threads() {
        let _turn = TURNS.lock().await;
        let rescued = reads_rescued();
        let names = Mutex::new(std::collections::HashMap::new());
        let names = std::sync::Arc::new(names);
        let mut waiting = Vec::new();
        for i in 0..200u64 {
            let names = names.clone();
            waiting.push(tokio::spawn(run(move || {
                let me = std::thread::current().name().unwrap_or("").to_owned();
                *names.lock().unwrap().entry(me).or_insert(0u64) += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
                Ok(i * 2)
            })));
        }
        for (i, w) in waiting.into_iter().enumerate() {
            assert_eq!(w.await.unwrap().unwrap(), i as u64 * 2);
        }
        // Only a read that waited RESCUE_AFTER (a machine far too loaded) ran elsewhere.
        let names = names.lock().unwrap();
        let elsewhere: u64 = names
            .iter()
            .filter(|(n, _)| !n.starts_with("layer1-reader-"))
            .map(|(_, c)| c)
            .sum();
        assert!(
            names.len() <= threads() + 1 && elsewhere <= reads_rescued() - rescued,
            "reads ran on {names:?}"
        );
    }

    #[tokio::test]
    async fn a_read_that_panics_fails_its_caller_and_the_pool_goes_on() {
        let failed = run::<u8>(|| panic!("a read that panics")).await;
        assert!(failed.is_err());
        for _ in 0..threads() * 2 {
            assert_eq!(run(|| Ok(7u8)).await.unwrap(), 7);
        }
    }

    /// Holds every reader thread until `release` is dropped; returns once all hold.
    async fn hold_every_thread() -> (
        std::sync::mpsc::Sender<()>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        // Holds that started, and those on a reader thread: on a loaded machine one may
        // wait RESCUE_AFTER and run elsewhere, leaving a reader thread free; another
        // hold then goes in, until every reader thread holds one.
        let started = Arc::new(AtomicUsize::new(0));
        let on_readers = Arc::new(AtomicUsize::new(0));
        let mut long = Vec::new();
        while on_readers.load(Ordering::SeqCst) < threads() {
            if started.load(Ordering::SeqCst) < long.len() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let missing = threads() - on_readers.load(Ordering::SeqCst);
            for _ in 0..missing {
                let (held, started, on_readers) =
                    (held.clone(), started.clone(), on_readers.clone());
                long.push(tokio::spawn(async move {
                    run(move || {
                        let name = std::thread::current().name().map(str::to_owned);
                        if name.is_some_and(|n| n.starts_with("layer1-reader-")) {
                            on_readers.fetch_add(1, Ordering::SeqCst);
                        }
                        started.fetch_add(1, Ordering::SeqCst);
                        // Blocks until the sender is dropped.
                        let _ = held.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        Ok(())
                    })
                    .await
                    .unwrap();
                }));
            }
        }
        (release, long)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_read_does_not_wait_for_long_ones_holding_every_thread() {
        let _turn = TURNS.lock().await;
        let (release, long) = hold_every_thread().await;
        let before = reads_rescued();
        // Without the rescue this waits until the long reads end, i.e. for ever here.
        let short = tokio::time::timeout(Duration::from_secs(30), run(|| Ok(5u8))).await;
        assert_eq!(short.expect("the short read was stuck").unwrap(), 5);
        assert!(reads_rescued() > before);
        assert!(
            long.iter().all(|l| !l.is_finished()),
            "the long reads are still running"
        );
        drop(release);
        for l in long {
            l.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_whose_caller_stopped_waiting_never_runs() {
        let _turn = TURNS.lock().await;
        let (release, long) = hold_every_thread().await;
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let read = run(move || {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        // Gives up well before the rescue would run it elsewhere.
        assert!(
            tokio::time::timeout(Duration::from_millis(5), read)
                .await
                .is_err()
        );
        drop(release);
        for l in long {
            l.await.unwrap();
        }
        // Everything queued after it has run, so its slot has been passed by.
        for _ in 0..threads() * 2 {
            run(|| Ok(())).await.unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
