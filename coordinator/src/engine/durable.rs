//! Group commit: a reply that acknowledges a write waits until the write has
//! the storage's promised durability, and one `sync` covers every reply that
//! was waiting for it.
//!
//! Workers treat an acknowledged report as stored and never resend it, so the
//! coordinator must not answer before the data would survive what the storage
//! promises. A sync per request would cap throughput at the disk's sync rate;
//! batching the waiters makes the cost per request fall as load rises. Where
//! the storage's writes are durable when its verbs return (the default for
//! sled, whose log write reaches the OS at once), no reply waits at all.

use crate::storage::Storage;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

enum Msg {
    Wait(Waiter),
    Stop,
}

pub struct Durable {
    /// None when the storage needs no sync before a reply.
    tx: Option<mpsc::Sender<Msg>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Durable {
    /// Starts the syncing thread where the storage needs one. A dedicated
    /// thread (not `spawn_blocking`) saves a hand-off per batch.
    pub fn start(storage: Arc<dyn Storage>) -> Durable {
        if storage.durable_on_return() {
            return Durable {
                tx: None,
                thread: Mutex::new(None),
            };
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("hpo-sync".into())
            .spawn(move || sync_loop(storage, rx))
            .ok();
        Durable {
            tx: thread.is_some().then_some(tx),
            thread: Mutex::new(thread),
        }
    }

    /// Returns once every write made before the call is durable.
    pub async fn sync(&self) -> Result<(), String> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let (wtx, wrx) = oneshot::channel();
        tx.send(Msg::Wait(wtx))
            .map_err(|_| "storage sync thread has stopped".to_string())?;
        wrx.await
            .map_err(|_| "storage sync thread has stopped".to_string())?
    }

    /// Stops the syncing thread after it has answered every waiter.
    pub fn stop(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Stop);
        }
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn sync_loop(storage: Arc<dyn Storage>, rx: mpsc::Receiver<Msg>) {
    let mut stopping = false;
    while !stopping {
        let mut batch = Vec::new();
        match rx.recv() {
            Ok(Msg::Wait(w)) => batch.push(w),
            Ok(Msg::Stop) | Err(_) => return,
        }
        while let Ok(m) = rx.try_recv() {
            match m {
                Msg::Wait(w) => batch.push(w),
                Msg::Stop => stopping = true,
            }
        }
        let result = storage.sync().map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "storage sync failed");
        }
        for w in batch {
            let _ = w.send(result.clone());
        }
    }
}
