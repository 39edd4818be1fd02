//! Group commit: a reply that acknowledges a write waits until the write is
//! durable, and one flush covers every write that was waiting for it.
//!
//! Workers treat an acknowledged report as stored and never resend it, so the
//! coordinator must not answer before the data would survive `kill -9`. One
//! flush per request would cap throughput at the disk's sync rate; batching
//! the waiters makes the cost per request fall as load rises.

use crate::storage::Storage;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Durable {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl Durable {
    /// Starts the flusher task. It ends when every `Durable` is dropped.
    pub fn start(storage: Arc<dyn Storage>) -> (Durable, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(w) = rx.try_recv() {
                    batch.push(w);
                }
                let s = storage.clone();
                let result = match tokio::task::spawn_blocking(move || s.flush()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("flush task failed: {e}")),
                };
                if let Err(e) = &result {
                    tracing::error!(error = %e, "storage flush failed");
                }
                for w in batch {
                    let _ = w.send(result.clone());
                }
            }
        });
        (Durable { tx }, task)
    }

    /// Returns once every write made before the call is durable.
    pub async fn sync(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| "storage flusher has stopped".to_string())?;
        rx.await
            .map_err(|_| "storage flusher has stopped".to_string())?
    }
}
