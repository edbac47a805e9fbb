//! Liveness of the write path, for the systemd watchdog.
//!
//! A wedged journal writer (an fsync that never returns) or a wedged shard
//! (a sled call that never returns) leaves the HTTP side running: webhooks
//! would time out one by one while the process looks alive. So the watchdog
//! ping (`WATCHDOG=1`) is tied to the threads that could hang, end to end:
//! the [`Prober`] thread asks the journal writer for a barrier, which runs on
//! the writer thread between group commits and puts a probe into every shard
//! queue behind the events already there; the probe completes when the last
//! shard takes it, and that is a [`Heartbeat`] beat. Anything stuck on the
//! way (writer, any shard) stops the beats, the daemon's watchdog thread then
//! withholds `WATCHDOG=1`, and systemd restarts the daemon
//! (`WatchdogSec=`, `Restart=on-failure`).
//!
//! Invariants: at most one probe is outstanding (a wedged writer never
//! accumulates probes); a beat means every shard took the probe after every
//! event queued before it; while the core is deliberately down (start-up,
//! store reopen, shutdown) the heartbeat is *excused* and does not ask for a
//! restart.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, RecvTimeoutError, Sender};

use super::ingest::IngestCtx;
use super::shard::ShardMsg;
use super::Pipeline;
use crate::journal::Appender;

/// When the write path last proved alive.
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last completed probe.
    last_ms: AtomicU64,
    /// Probes completed since start.
    beats: AtomicU64,
    /// No core is running on purpose: nothing to probe, nothing wedged.
    excused: AtomicBool,
}

impl Heartbeat {
    /// A heartbeat that starts excused (start-up replays the journal first).
    pub fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            beats: AtomicU64::new(0),
            excused: AtomicBool::new(true),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn beat(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
        self.beats.fetch_add(1, Ordering::AcqRel);
    }

    /// Probes completed so far.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Acquire)
    }

    /// Time since the last completed probe.
    pub fn age(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Acquire)),
        )
    }

    /// Mark the core as deliberately down (true) or probed again (false).
    pub fn set_excused(&self, excused: bool) {
        if !excused {
            // A fresh core gets a full period before it is judged.
            self.last_ms.store(self.now_ms(), Ordering::Release);
        }
        self.excused.store(excused, Ordering::Release);
    }

    pub fn excused(&self) -> bool {
        self.excused.load(Ordering::Acquire)
    }

    /// Whether the watchdog may be pinged: excused, or a probe completed
    /// within `max_age`.
    pub fn alive(&self, max_age: Duration) -> bool {
        self.excused() || self.age() <= max_age
    }
}

/// One probe on its way through the shards.
pub(crate) struct Probe {
    remaining: AtomicUsize,
    beat: Arc<Heartbeat>,
}

impl Probe {
    /// A shard took the probe; the last one beats the heart.
    pub(crate) fn arrive(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.beat.beat();
        }
    }

    fn done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }
}

/// The thread that sends probes every `interval`, one at a time.
pub struct Prober {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    pub fn spawn(
        pipeline: Arc<Pipeline>,
        journal: Appender<IngestCtx>,
        heartbeat: Arc<Heartbeat>,
        interval: Duration,
    ) -> std::io::Result<Prober> {
        let (stop, stop_rx) = bounded::<()>(1);
        heartbeat.set_excused(false);
        let thread = std::thread::Builder::new()
            .name("liveness-probe".into())
            .spawn(move || {
                let senders = pipeline.shard_senders();
                loop {
                    let probe = Arc::new(Probe {
                        remaining: AtomicUsize::new(senders.len()),
                        beat: heartbeat.clone(),
                    });
                    let (for_writer, shards) = (probe.clone(), senders.clone());
                    // Blocks only while the writer's queue is full.
                    let sent = journal.barrier(Box::new(move |_| {
                        for s in &shards {
                            let _ = s.send(ShardMsg::Probe(for_writer.clone()));
                        }
                    }));
                    if sent.is_err() {
                        return; // the journal is closed: the core is stopping
                    }
                    // Wait for this probe (however long), then one interval.
                    loop {
                        match stop_rx.recv_timeout(interval) {
                            Err(RecvTimeoutError::Timeout) if probe.done() => break,
                            Err(RecvTimeoutError::Timeout) => {}
                            _ => return,
                        }
                    }
                }
            })?;
        Ok(Prober {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stop probing (before the journal and shards stop).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalConfig, JournalReader};
    use crate::pipeline::ingest::ShardSink;
    use crate::pipeline::numbers::Numbers;
    use crate::pipeline::PipelineConfig;
    use crate::store::Store;

    const INTERVAL: Duration = Duration::from_millis(20);

    /// Wait (bounded) for `cond`.
    fn until(what: &str, cond: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn beats_stop_while_the_writer_or_a_shard_is_wedged_and_resume_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db"), 1 << 20).unwrap());
        let cfg = PipelineConfig {
            shards: 3,
            shard_queue: 64,
            pin_threads: false,
        };
        let journal_dir = dir.path().join("journal");
        let pipeline = Arc::new(
            Pipeline::start(
                store,
                Arc::new(Numbers::new(Vec::new(), Vec::new())),
                JournalReader::new(&journal_dir),
                &cfg,
            )
            .unwrap(),
        );
        let (journal, _) = Journal::open(JournalConfig::new(&journal_dir)).unwrap();
        let handle = journal.start(ShardSink::new(pipeline.clone())).unwrap();
        let beat = Heartbeat::new();
        assert!(beat.excused() && beat.alive(Duration::ZERO));
        let prober =
            Prober::spawn(pipeline.clone(), handle.appender(), beat.clone(), INTERVAL).unwrap();
        assert!(!beat.excused());
        until("three beats", || beat.beats() >= 3);

        // A writer stuck inside a barrier (as in an fsync that never returns).
        let (release, stalled) = bounded::<()>(0);
        let (entered_tx, entered) = bounded::<()>(1);
        handle
            .appender()
            .barrier(Box::new(move |_| {
                let _ = entered_tx.send(());
                let _ = stalled.recv();
            }))
            .unwrap();
        entered.recv().unwrap();
        let before = beat.beats();
        std::thread::sleep(INTERVAL * 10);
        // At most the probe already past the writer completes.
        assert!(
            beat.beats() <= before + 1,
            "beats went on with a wedged writer"
        );
        assert!(!beat.alive(INTERVAL * 5), "age {:?}", beat.age());
        drop(release);
        until("beats after the writer recovers", || {
            beat.beats() >= before + 3
        });
        assert!(beat.alive(INTERVAL * 5));

        // One wedged shard among three.
        let (release, stalled) = bounded::<()>(0);
        let (entered_tx, entered) = bounded::<()>(1);
        pipeline.shard_senders()[1]
            .send(ShardMsg::Stall {
                entered: entered_tx,
                until: stalled,
            })
            .unwrap();
        entered.recv().unwrap();
        let before = beat.beats();
        std::thread::sleep(INTERVAL * 10);
        assert!(
            beat.beats() <= before + 1,
            "beats went on with a wedged shard"
        );
        assert!(!beat.alive(INTERVAL * 5), "age {:?}", beat.age());
        drop(release);
        until("beats after the shard recovers", || {
            beat.beats() >= before + 3
        });

        prober.stop();
        beat.set_excused(true);
        assert!(beat.alive(Duration::ZERO));
        handle.shutdown().unwrap();
        pipeline.stop();
    }
}
