//! The reader threads: a few threads, shared by every store in the process, that run
//! read transactions (queries, counts, probes) off the async runtime.
//!
//! tokio's blocking pool starts a thread for every read that finds none idle, so fifty
//! concurrent REQs ran on fifty threads over two cores, and each read paid a thread
//! wake-up and sleep (futex calls and context switches: a fifth of a node's samples
//! while serving feed queries). Here a fixed number of threads take reads from one
//! queue; while reads are waiting a thread goes from one to the next without sleeping,
//! and at most as many reads run at once as there are threads, which the cores could
//! not run any faster in parallel anyway.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use eventstore::StoreError;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Threads started; with none, reads go to tokio's blocking pool instead.
    started: AtomicUsize,
}

struct Queue {
    jobs: VecDeque<Job>,
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
            let job = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    q.idle += 1;
                    q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                    q.idle -= 1;
                }
            };
            // A read that panics fails only its own caller (its answer is dropped).
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
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
    let (tx, rx) = oneshot::channel();
    {
        let mut q = pool.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.jobs.push_back(Box::new(move || drop(tx.send(f()))));
        if q.idle > 0 {
            pool.ready.notify_one();
        }
    }
    rx.await
        .map_err(|_| StoreError::Backend("an L1 read failed on its reader thread".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_reads_at_once_all_answer_on_a_few_threads() {
        let names = Mutex::new(std::collections::HashSet::new());
        let names = std::sync::Arc::new(names);
        let mut waiting = Vec::new();
        for i in 0..200u64 {
            let names = names.clone();
            waiting.push(tokio::spawn(run(move || {
                let me = std::thread::current().name().unwrap_or("").to_owned();
                names.lock().unwrap().insert(me);
                std::thread::sleep(std::time::Duration::from_micros(200));
                Ok(i * 2)
            })));
        }
        for (i, w) in waiting.into_iter().enumerate() {
            assert_eq!(w.await.unwrap().unwrap(), i as u64 * 2);
        }
        let names = names.lock().unwrap();
        assert!(
            names.len() <= threads() && names.iter().all(|n| n.starts_with("layer1-reader-")),
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
}
