//! Group commit: one writer task turns the items that concurrent callers submit into few
//! transactions, and each caller waits for its own items to be committed.
//!
//! SQLite has a single writer, and on PostgreSQL every commit is a WAL flush: a transaction
//! per request makes every request queue for the writer and pay a commit of its own. Here the
//! writer takes everything waiting (up to a bound), commits it at once, and answers each
//! submission with the outputs of its own items, in order. A caller is answered only after the
//! commit returned, so an acknowledgement means durable. The audit log
//! ([`crate::audit`]) does the same with its own statement shapes.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// What the writer commits: a batch of items in one transaction.
pub trait Sink: Send + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Commits `items` together and returns one output per item, in order; an error fails
    /// every submission of the batch.
    fn commit(&mut self, items: Vec<Self::Item>) -> impl Future<Output = Result<Vec<Self::Output>, String>> + Send;

    /// Called once nothing has arrived for [`IDLE`]: a sink that keeps a connection while
    /// items keep coming (so that a batch costs its statements' round trips, not also a pool
    /// acquire and the ping sqlx sends on release) gives it back here.
    fn idle(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// How long the writer waits for items before it tells the sink it is idle.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a submission was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupCommitError {
    #[error("the writer has stopped")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

type Reply<O> = oneshot::Sender<Result<Vec<O>, GroupCommitError>>;

struct Submission<I, O> {
    items: Vec<I>,
    done: Reply<O>,
}

/// A handle on a running writer; cloning it shares the writer.
#[derive(Debug)]
pub struct GroupCommit<I, O> {
    tx: mpsc::Sender<Submission<I, O>>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts the writer for `sink`. A batch holds at most `max_items` items, unless a single
    /// submission is larger (it is never split, so that it commits all or nothing); at most
    /// `queue` submissions wait, further callers wait for room (back-pressure, never a drop).
    /// The writer stops when the last handle is dropped.
    pub fn start<S: Sink<Item = I, Output = O>>(sink: S, max_items: usize, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(write_loop(sink, rx, max_items.max(1)));
        Self { tx }
    }

    /// Submits `items` and waits until they are committed: one output per item, in order.
    pub async fn submit(&self, items: Vec<I>) -> Result<Vec<O>, GroupCommitError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (done, committed) = oneshot::channel();
        self.tx.send(Submission { items, done }).await.map_err(|_| GroupCommitError::Stopped)?;
        committed.await.map_err(|_| GroupCommitError::Stopped)?
    }
}

async fn write_loop<S: Sink>(mut sink: S, mut rx: mpsc::Receiver<Submission<S::Item, S::Output>>, max_items: usize) {
    // A submission taken off the channel that did not fit the previous batch.
    let mut carried: Option<Submission<S::Item, S::Output>> = None;
    loop {
        let first = match carried.take() {
            Some(s) => s,
            None => {
                let next = match tokio::time::timeout(IDLE, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        sink.idle().await;
                        rx.recv().await
                    }
                };
                match next {
                    Some(s) => s,
                    None => return,
                }
            }
        };
        let mut batch = vec![first];
        let mut size = batch.iter().map(|s| s.items.len()).sum::<usize>();
        while size < max_items {
            match rx.try_recv() {
                Ok(s) if size + s.items.len() <= max_items => {
                    size += s.items.len();
                    batch.push(s);
                }
                Ok(s) => {
                    carried = Some(s);
                    break;
                }
                Err(_) => break,
            }
        }
        let mut counts = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(size);
        for s in batch {
            counts.push(s.items.len());
            replies.push(s.done);
            items.extend(s.items);
        }
        match sink.commit(items).await {
            Ok(outputs) if outputs.len() == size => {
                let mut outputs = outputs.into_iter();
                for (n, done) in counts.into_iter().zip(replies) {
                    let _ = done.send(Ok(outputs.by_ref().take(n).collect()));
                }
            }
            Ok(outputs) => {
                let reason = format!("the writer returned {} outputs for {size} items", outputs.len());
                fail(replies, &reason);
            }
            Err(reason) => fail(replies, &reason),
        }
    }
}

fn fail<O>(replies: Vec<Reply<O>>, reason: &str) {
    tracing::error!(error = %reason, submissions = replies.len(), "group commit failed");
    for done in replies {
        let _ = done.send(Err(GroupCommitError::Failed(reason.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the size of every batch; output = item * 10.
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl Sink for Recorder {
        type Item = u32;
        type Output = u32;

        async fn commit(&mut self, items: Vec<u32>) -> Result<Vec<u32>, String> {
            if items.contains(&999) {
                return Err("unlucky".into());
            }
            self.0.lock().map_err(|e| e.to_string())?.push(items.len());
            tokio::task::yield_now().await;
            Ok(items.into_iter().map(|i| i * 10).collect())
        }
    }

    #[tokio::test]
    async fn each_caller_gets_its_own_outputs_and_batches_are_bounded() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let writer = GroupCommit::start(Recorder(sizes.clone()), 8, 64);
        let calls: Vec<_> = (0..20u32)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move { w.submit(vec![i, i + 100]).await })
            })
            .collect();
        for (i, call) in (0..20u32).zip(calls) {
            assert_eq!(call.await.ok(), Some(Ok(vec![i * 10, (i + 100) * 10])));
        }
        let sizes = sizes.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|n| *n <= 8), "{sizes:?}");
        // A submission larger than a batch is committed whole.
        assert_eq!(writer.submit((0..12).collect()).await.map(|o| o.len()), Ok(12));
        assert!(matches!(writer.submit(vec![999]).await, Err(GroupCommitError::Failed(_))));
    }

    /// Counts the calls of `idle`; output = item.
    struct Idler(Arc<Mutex<usize>>);

    impl Sink for Idler {
        type Item = u32;
        type Output = u32;

        async fn commit(&mut self, items: Vec<u32>) -> Result<Vec<u32>, String> {
            Ok(items)
        }

        async fn idle(&mut self) {
            if let Ok(mut n) = self.0.lock() {
                *n += 1;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_is_told_once_when_nothing_arrives_for_a_while() {
        let idled = Arc::new(Mutex::new(0));
        let idle_calls = || idled.lock().map(|n| *n).unwrap_or(usize::MAX);
        let writer = GroupCommit::start(Idler(idled.clone()), 8, 8);
        assert_eq!(writer.submit(vec![1]).await, Ok(vec![1]));
        assert_eq!(idle_calls(), 0);
        // Paused time: the sleep completes as soon as every task waits, the writer's timer first.
        tokio::time::sleep(IDLE * 3).await;
        assert_eq!(idle_calls(), 1, "told once, not once per period");
        assert_eq!(writer.submit(vec![2, 3]).await, Ok(vec![2, 3]));
        tokio::time::sleep(IDLE * 2).await;
        assert_eq!(idle_calls(), 2);
    }
}
