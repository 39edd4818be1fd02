//! Ships a trial's log (its program's output) to the coordinator.
//!
//! The training thread only appends to a buffer; a task per trial sends it
//! in chunks with `AppendLog`, each tagged with its offset in the attempt's
//! stream so a retried chunk is stored once. While the coordinator is
//! unreachable the buffer is bounded like the stored log: the oldest text
//! goes, and the gap in offsets tells the coordinator to write a marker.

use hpo_proto::TrialId;
use hpo_sdk::WorkerClient;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The study file's `trainer.max_log_kib` when it gives none.
pub const DEFAULT_MAX_LOG_KIB: u64 = 1024;
/// Most text per AppendLog call.
const CHUNK: usize = 256 * 1024;
/// Send at least this often while output arrives.
const PERIOD: Duration = Duration::from_millis(250);

#[derive(Default)]
struct State {
    pending: String,
    /// Offset in the attempt's stream of `pending`'s first byte.
    offset: u64,
    max: usize,
    closed: bool,
    /// Set when the coordinator refused logs for good (an older one).
    refused: bool,
}

/// The buffer the training thread writes to; cheap to clone.
#[derive(Clone)]
pub struct LogShipper {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogShipper {
    pub fn new(max_bytes: u64) -> Self {
        LogShipper {
            state: Arc::new(Mutex::new(State {
                max: max_bytes.max(1024) as usize,
                ..State::default()
            })),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Appends text; never blocks on the network.
    pub fn push(&self, text: &str) {
        let mut s = lock(&self.state);
        if s.refused || text.is_empty() {
            return;
        }
        s.pending.push_str(text);
        if s.pending.len() > s.max {
            let mut cut = s.pending.len() - s.max;
            while !s.pending.is_char_boundary(cut) {
                cut += 1;
            }
            s.pending.drain(..cut);
            s.offset += cut as u64;
        }
        if s.pending.len() >= CHUNK {
            self.notify.notify_one();
        }
    }

    /// Sends the buffer until `close` and the buffer is empty.
    pub async fn run(self, client: WorkerClient, trial: TrialId, attempt: u32) {
        let mut delay = Duration::from_millis(200);
        loop {
            let (offset, text, closed) = {
                let s = lock(&self.state);
                let mut end = s.pending.len().min(CHUNK);
                while !s.pending.is_char_boundary(end) {
                    end -= 1;
                }
                (s.offset, s.pending[..end].to_string(), s.closed)
            };
            if text.is_empty() {
                if closed {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(PERIOD) => {}
                    _ = self.notify.notified() => {}
                }
                continue;
            }
            match client.append_log(trial, attempt, offset, &text).await {
                Ok(()) => {
                    delay = Duration::from_millis(200);
                    let mut s = lock(&self.state);
                    // Text may have been dropped from the front meanwhile.
                    let sent_end = offset + text.len() as u64;
                    if sent_end > s.offset {
                        let n = ((sent_end - s.offset) as usize).min(s.pending.len());
                        s.pending.drain(..n);
                        s.offset = sent_end;
                    }
                }
                Err(e) if e.is_transient() => {
                    tracing::debug!(study = %trial.study, trial = trial.number, error = %e, "log not delivered, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::warn!(study = %trial.study, trial = trial.number, error = %e, "coordinator did not take the trial's log; dropping it");
                    let mut s = lock(&self.state);
                    s.refused = true;
                    s.pending.clear();
                    return;
                }
            }
        }
    }

    /// Marks the end of the log: `run` sends what is left and returns.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.notify.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_keeps_the_newest_text_and_counts_what_it_dropped() {
        let s = LogShipper::new(1024);
        s.push(&"a".repeat(1000));
        s.push(&"é".repeat(100)); // 200 bytes, two per char
        let st = lock(&s.state);
        assert!(st.pending.len() <= 1024);
        assert_eq!(st.offset + st.pending.len() as u64, 1200);
        assert!(st.pending.ends_with('é'));
    }
}
