//! Group commit: one writer task turns the items that concurrent callers submit into few
//! transactions, and each caller waits for its own items to be committed.
//!
//! SQLite has a single writer, and on PostgreSQL every commit is a WAL flush: a transaction
//! per request makes every request queue for the writer and pay a commit of its own. Here the
//! writer takes everything waiting (up to a bound, or what the sink takes at once: the rest
//! joins the next batch), commits it at once, and answers each
//! submission with the outputs of its own items, in order. A caller is answered only after the
//! commit returned, so an acknowledgement means durable. The audit log
//! ([`crate::audit`]) is one such writer.

use std::collections::VecDeque;
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

    /// How many of `waiting` items (at least one) to commit now; the rest wait for the next
    /// batch, with whatever arrives meanwhile. A sink whose statements come in a few sizes
    /// (so that its connection prepares few) takes one statement's worth.
    fn batch_len(&self, waiting: usize) -> usize {
        waiting
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
    // Submissions taken off the channel and not yet committed, and their items' number.
    let mut queue: VecDeque<Submission<S::Item, S::Output>> = VecDeque::new();
    let mut queued = 0usize;
    loop {
        if queue.is_empty() {
            let next = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    sink.idle().await;
                    rx.recv().await
                }
            };
            let Some(first) = next else { return };
            queued += first.items.len();
            queue.push_back(first);
        }
        // Whatever else is waiting, up to a batch's worth: more stays in the channel, so that a
        // backlog still pushes back on callers.
        while queued < max_items {
            match rx.try_recv() {
                Ok(s) => {
                    queued += s.items.len();
                    queue.push_back(s);
                }
                Err(_) => break,
            }
        }
        // Whole submissions from the front, as many items as the sink takes at once of those
        // waiting (the first one always: a submission is never split). What stays joins the
        // items that arrive meanwhile, so that the next batch is a full one too.
        let take = sink.batch_len(queued.min(max_items)).clamp(1, max_items);
        let mut size = 0;
        let mut counts = Vec::new();
        let mut replies = Vec::new();
        let mut items = Vec::with_capacity(take);
        while let Some(s) = queue.pop_front_if(|next| counts.is_empty() || size + next.items.len() <= take) {
            size += s.items.len();
            counts.push(s.items.len());
            replies.push(s.done);
            items.extend(s.items);
        }
        queued -= size;
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

    /// Records the size of every batch and holds each batch until the test lets it go; takes
    /// the largest power of two of the items waiting.
    struct Gated {
        sizes: Arc<Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Sink for Gated {
        type Item = u32;
        type Output = u32;

        async fn commit(&mut self, items: Vec<u32>) -> Result<Vec<u32>, String> {
            self.sizes.lock().map_err(|e| e.to_string())?.push(items.len());
            self.gate.acquire().await.map_err(|e| e.to_string())?.forget();
            Ok(items)
        }

        fn batch_len(&self, waiting: usize) -> usize {
            1 << waiting.ilog2()
        }
    }

    /// Yields until `done` holds (the test runtime has one thread: the writer runs meanwhile).
    async fn until(done: impl Fn() -> bool) {
        while !done() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_batch_is_as_long_as_the_sink_takes_and_the_rest_joins_the_next() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let writer = GroupCommit::start(Gated { sizes: sizes.clone(), gate: gate.clone() }, 64, 64);
        let batches = || sizes.lock().map(|s| s.clone()).unwrap_or_default();
        let in_channel = |w: &GroupCommit<u32, u32>| w.tx.max_capacity() - w.tx.capacity();
        let submit = |items: std::ops::Range<u32>| -> Vec<_> {
            items
                .map(|i| {
                    let w = writer.clone();
                    tokio::spawn(async move { w.submit(vec![i]).await })
                })
                .collect()
        };
        let mut calls = submit(0..1);
        until(|| batches().len() == 1).await;
        // 13 wait while the first batch commits: 8 go next, 5 stay.
        calls.extend(submit(1..14));
        until(|| in_channel(&writer) == 13).await;
        gate.add_permits(1);
        until(|| batches().len() == 2).await;
        // 3 more arrive while those 8 commit, and make a full batch with the 5 that stayed.
        calls.extend(submit(14..17));
        until(|| in_channel(&writer) == 3).await;
        gate.add_permits(16);
        for (i, call) in (0..17u32).zip(calls) {
            assert_eq!(call.await.ok(), Some(Ok(vec![i])));
        }
        assert_eq!(batches(), vec![1, 8, 8]);
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
