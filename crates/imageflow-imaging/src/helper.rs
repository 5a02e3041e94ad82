//! A second core for the independent halves of one image (luma and chroma), from a
//! few threads that live as long as the process.
//!
//! A thread per request costs a `clone`, a fresh stack and cold thread-locals (the
//! resizer's scratch buffers) every time. Here the second half is offered to a helper
//! thread instead, and taken back by the caller if no helper has started it by the
//! time the first half is done: under load, when every core is busy, a request never
//! waits behind other requests' halves, and the work done is the same.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `a` here and `b` on a helper thread when one is free, else `b` here after `a`.
/// A panic in either half resumes in the caller.
pub(crate) fn join<A, B>(a: impl FnOnce() -> A, b: impl FnOnce() -> B + Send + 'static) -> (A, B)
where
    B: Send + 'static,
{
    let Some(helpers) = helpers() else {
        return (a(), b());
    };
    let offered = Arc::new(Mutex::new(Some(b)));
    let (done, finished) = mpsc::sync_channel(1);
    let theirs = Arc::clone(&offered);
    let job: Job = Box::new(move || {
        let taken = theirs.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(b) = taken {
            // The caller waits on this channel for as long as it lives.
            let _ = done.send(catch_unwind(AssertUnwindSafe(b)));
        }
    });
    // A helper that has gone (it cannot, short of a bug) leaves the job here.
    let _ = helpers.send(job);
    let first = a();
    let mine = offered
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let second = match mine {
        Some(b) => b(),
        None => match finished.recv() {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => panic!("an image helper thread dropped a started job"),
        },
    };
    (first, second)
}

/// The queue to the helper threads (one fewer than the cores), or `None` on one core.
fn helpers() -> Option<&'static mpsc::Sender<Job>> {
    static HELPERS: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    HELPERS
        .get_or_init(|| {
            let cores = thread::available_parallelism().map_or(1, |n| n.get());
            if cores < 2 {
                return None;
            }
            let (queue, jobs) = mpsc::channel::<Job>();
            let jobs = Arc::new(Mutex::new(jobs));
            let mut started = 0;
            for i in 0..cores - 1 {
                let jobs = Arc::clone(&jobs);
                let spawned = thread::Builder::new()
                    .name(format!("image-helper-{i}"))
                    .spawn(move || serve(&jobs));
                started += usize::from(spawned.is_ok());
            }
            (started > 0).then_some(queue)
        })
        .as_ref()
}

fn serve(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while running it.
        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_both_results_in_order() {
        assert_eq!(join(|| 1, || "two"), (1, "two"));
    }

    #[test]
    fn every_second_half_runs_exactly_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let runs = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..4)
            .map(|t| {
                let runs = Arc::clone(&runs);
                thread::spawn(move || {
                    for i in 0..200usize {
                        let counted = Arc::clone(&runs);
                        let (a, b) = join(
                            || i * 2,
                            move || {
                                counted.fetch_add(1, Ordering::SeqCst);
                                i + t
                            },
                        );
                        assert_eq!((a, b), (i * 2, i + t));
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 800);
    }

    #[test]
    fn a_panic_in_the_second_half_reaches_the_caller() {
        let result = catch_unwind(|| join(|| 1, || -> u8 { panic!("bad plane") }));
        let panic = result.unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"bad plane"));
        // The helpers are still there for the next request.
        assert_eq!(join(|| 3, || 4), (3, 4));
    }
}
