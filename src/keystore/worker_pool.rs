//! A pool of threads, each owning one state `W` (a PKCS#11 session), that run jobs for callers
//! who wait at most a fixed time. A caller that gives up gets [`KeystoreError::Unavailable`];
//! its job, if still queued behind a stuck call, is dropped rather than run late, so a request
//! that failed does not change anything afterwards. When the stuck call returns, the pool
//! serves again by itself.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::KeystoreError;

type Job<W> = Box<dyn FnOnce(&mut W) + Send>;

/// Worker threads and the queue feeding them; the threads end when the pool is dropped.
pub struct WorkerPool<W> {
    jobs: mpsc::Sender<Job<W>>,
    timeout: Duration,
    what: &'static str,
}

impl<W: Send + 'static> WorkerPool<W> {
    /// One thread per state in `workers`, named `<what>-<n>`.
    pub fn start(
        what: &'static str,
        workers: Vec<W>,
        timeout: Duration,
    ) -> Result<Self, std::io::Error> {
        let (jobs, receiver) = mpsc::channel::<Job<W>>();
        let receiver = Arc::new(Mutex::new(receiver));
        for (n, mut worker) in workers.into_iter().enumerate() {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("{what}-{n}"))
                .spawn(move || loop {
                    let job = {
                        let receiver = receiver.lock().unwrap_or_else(|p| p.into_inner());
                        receiver.recv()
                    };
                    match job {
                        Ok(job) => job(&mut worker),
                        Err(_) => return, // the pool was dropped
                    }
                })?;
        }
        Ok(Self {
            jobs,
            timeout,
            what,
        })
    }

    /// Runs `work` on a worker, waiting at most the timeout.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut W) -> Result<T, KeystoreError> + Send + 'static,
    ) -> Result<T, KeystoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let deadline = Instant::now() + self.timeout;
        let job: Job<W> = Box::new(move |worker| {
            // The caller gave up (503) while this job waited behind a stuck call: doing it now
            // would change the backend after the request failed, so it is dropped.
            if Instant::now() >= deadline {
                return;
            }
            let _ = reply.send(work(worker));
        });
        self.jobs.send(job).map_err(|_| {
            KeystoreError::Unavailable(format!("the {} workers stopped", self.what))
        })?;
        match answer.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(KeystoreError::Unavailable(format!(
                "the {} did not answer within {:?}",
                self.what, self.timeout
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(KeystoreError::Unavailable(format!(
                "a {} worker failed",
                self.what
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn a_stuck_call_times_out_drops_late_jobs_and_recovers() {
        let pool = WorkerPool::start("test", vec![()], Duration::from_millis(200)).unwrap();
        assert_eq!(pool.run(|_| Ok(1)).unwrap(), 1);

        // A call that hangs longer than the timeout: the caller gets Unavailable in time.
        let started = Instant::now();
        let stuck = pool.run(|_| {
            std::thread::sleep(Duration::from_millis(700));
            Ok(2)
        });
        assert!(matches!(stuck, Err(KeystoreError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_millis(600));

        // A job queued behind it also times out, and is never run afterwards.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let queued = pool.run(move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(3)
        });
        assert!(matches!(queued, Err(KeystoreError::Unavailable(_))));

        // Once the stuck call returns, the pool serves again by itself.
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(pool.run(|_| Ok(4)).unwrap(), 4);
        assert!(
            !ran.load(Ordering::SeqCst),
            "a job whose caller gave up ran late"
        );
    }

    #[test]
    fn workers_keep_their_own_state() {
        let pool = WorkerPool::start("test", vec![0u32], Duration::from_secs(5)).unwrap();
        for expected in 1..=3 {
            let seen = pool
                .run(|n: &mut u32| {
                    *n += 1;
                    Ok(*n)
                })
                .unwrap();
            assert_eq!(seen, expected);
        }
    }
}
