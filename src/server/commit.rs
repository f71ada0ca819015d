//! The commit queue: one committer thread per open workspace log, so that
//! every `POST …/events` waiting at a moment shares one append and one
//! `fdatasync`.
//!
//! Left to the library's group commit, each request held a blocking
//! thread that parked until a leader's sync covered it and was woken
//! again: several thread switches per event, which cost more than the
//! sync on a VM. Here a request encodes its events on its own blocking
//! task (validation runs in parallel and an invalid event refuses that
//! request alone), queues the records and awaits its receipts without
//! holding a thread. The committer takes everything queued, appends it
//! with one [`Log::append_batch`] and answers each request with its own
//! receipts, in order.
//!
//! Under replicated durability (`chainlog serve --bucket`), an append is
//! answered only once its records are in the bucket: the committer hands
//! each appended batch to the workspace's acknowledger thread, which waits
//! for the replication ([`Replication`]) in order and then answers, while the
//! committer appends the next batch.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::event::record::provenance_len;
use crate::event::{EncodeRecord, EventError};
use crate::format::frame;
use crate::format::segment::{data_end_limit, HEADER_BYTES};
use crate::limits::MAX_BATCH_EVENTS;
use crate::log::{Log, Receipt};

/// One request's events, validated and encoded as records.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Records {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
    /// The bytes the records take in a segment, framed and padded, with
    /// their provenance prefix.
    framed_bytes: u64,
    /// Who appends them (the API key's id), recorded in each record: a
    /// batch combining several requests keeps each one's own.
    appender: String,
}

impl Records {
    /// Room for `events` records appended by `appender`.
    pub(crate) fn with_capacity(events: usize, appender: String) -> Records {
        Records {
            bytes: Vec::with_capacity(events * 256),
            ends: Vec::with_capacity(events),
            framed_bytes: 0,
            appender,
        }
    }

    /// Validates and encodes one more event; on error nothing is added.
    pub(crate) fn push<E: EncodeRecord>(&mut self, event: &E) -> Result<(), EventError> {
        let start = self.bytes.len();
        event.encode_record(&mut self.bytes)?;
        self.ends.push(self.bytes.len());
        let record_len = provenance_len(&self.appender) + self.bytes.len() - start;
        self.framed_bytes += frame::padded_len(record_len) as u64;
        Ok(())
    }

    /// How many records.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn iter(&self) -> impl Iterator<Item = Encoded<'_>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| Encoded {
            body: &self.bytes[start..end],
            appender: &self.appender,
        })
    }
}

/// A record body encoded (and so validated) by [`Records::push`], with who
/// appends it: appending it copies its bytes.
struct Encoded<'a> {
    body: &'a [u8],
    appender: &'a str,
}

impl EncodeRecord for Encoded<'_> {
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), EventError> {
        out.extend_from_slice(self.body);
        Ok(())
    }

    fn appender(&self) -> Option<&str> {
        Some(self.appender)
    }
}

/// Why a request's records were not appended.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CommitError {
    /// The server is stopping; the queue takes nothing more.
    #[error("the workspace's commit queue is closed")]
    Closed,
    /// The combined append failed (every request in it gets the error).
    #[error(transparent)]
    Append(Arc<Error>),
    /// The committer stopped without answering (it panicked).
    #[error("the committer stopped without answering")]
    Lost,
    /// Appended here, but not acknowledged as replicated (replicated
    /// durability only): the records may or may not survive this node.
    #[error(transparent)]
    NotReplicated(Arc<NotReplicated>),
}

/// Why appended records were not acknowledged as replicated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotReplicated {
    /// The bucket did not take them within the acknowledgement timeout.
    #[error("not replicated in time: {0}")]
    Timeout(String),
    /// This node lost the workspace's lease: another node writes it now.
    #[error("this node no longer holds the workspace: {0}")]
    Fenced(String),
}

/// How a replicated workspace waits until its records below `next_seq`
/// are durable in the bucket (blocking).
pub(crate) trait Replication: Send + Sync + 'static {
    /// Returns once records below `next_seq` are replicated, or why not.
    fn wait(&self, next_seq: u64) -> Result<(), NotReplicated>;
}

/// What a committer sends back to a request.
type Answer = Result<Vec<Receipt>, CommitError>;

/// An appended batch waiting for its replication: the log's next seq after
/// it, and each request's reply with its receipts.
type Appended = (u64, Vec<(oneshot::Sender<Answer>, Vec<Receipt>)>);

/// A request waiting in the queue.
#[derive(Debug)]
struct Waiting {
    records: Records,
    reply: oneshot::Sender<Answer>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a request is queued or the queue closes.
    wake: Condvar,
}

/// A workspace log's commit queue and its thread. The thread alone holds
/// the log: once [`Committer::close`] returns, the committer no longer
/// keeps it open.
#[derive(Debug)]
pub(crate) struct Committer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The acknowledger, under replicated durability: it ends once the
    /// committer's thread has ended and it has answered everything.
    acks: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    /// Starts the committer of `log`, named after its workspace.
    pub(crate) fn start(workspace: &str, log: Arc<Log>) -> Result<Committer, Error> {
        Committer::start_replicated(workspace, log, None)
    }

    /// Starts the committer of `log`; with `replication`, each request is
    /// answered only once `replication` says its records are replicated.
    pub(crate) fn start_replicated(
        workspace: &str,
        log: Arc<Log>,
        replication: Option<Arc<dyn Replication>>,
    ) -> Result<Committer, Error> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        // Well under a segment: requests are combined only while the
        // append cannot fail for being larger than a segment.
        let max_bytes = (data_end_limit(log.options().segment_bytes) - HEADER_BYTES) / 4;
        let (acks, ack_thread) = match replication {
            Some(replication) => {
                let (tx, rx) = mpsc::channel::<Appended>();
                let thread = std::thread::Builder::new()
                    .name(format!("ack-{workspace}"))
                    .spawn(move || acknowledge(&rx, &*replication))
                    .map_err(|e| Error::io(format!("the ack thread of {workspace}"), e))?;
                (Some(tx), Some(thread))
            }
            None => (None, None),
        };
        let thread = std::thread::Builder::new()
            .name(format!("commit-{workspace}"))
            .spawn(move || run(&theirs, &log, max_bytes, acks.as_ref()))
            .map_err(|e| Error::io(format!("the commit thread of {workspace}"), e))?;
        Ok(Committer {
            shared,
            thread: Mutex::new(Some(thread)),
            acks: Mutex::new(ack_thread),
        })
    }

    /// Appends `records` (in the order queued, contiguous) and returns
    /// their receipts once they are durable under the log's policy.
    pub(crate) async fn commit(&self, records: Records) -> Result<Vec<Receipt>, CommitError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.shared.queue.lock();
            if queue.closed {
                return Err(CommitError::Closed);
            }
            queue.waiting.push_back(Waiting { records, reply });
        }
        self.shared.wake.notify_one();
        match answer.await {
            Ok(answer) => answer,
            Err(_) => Err(CommitError::Lost),
        }
    }

    /// Requests waiting to be appended (not counting a batch being
    /// appended now).
    pub(crate) fn depth(&self) -> usize {
        self.shared.queue.lock().waiting.len()
    }

    /// Takes nothing more, appends what is queued and waits for the thread
    /// to end. Blocking.
    pub(crate) fn close(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            // A panic was already reported; its requests were answered
            // `Lost` when their replies were dropped.
            let _ = thread.join();
        }
        // The committer's end dropped the channel: the acknowledger answers
        // what it holds and ends.
        if let Some(thread) = self.acks.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Closes the queue when the committer's thread ends, however it ends: if
/// it panicked, the requests still queued are answered `Lost` (their
/// replies dropped) and later ones `Closed`, instead of waiting forever.
struct CloseOnExit<'a>(&'a Shared);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.queue.lock();
        queue.closed = true;
        queue.waiting.clear();
    }
}

/// The committer's loop: until closed and drained, take what is queued and
/// append it.
fn run(shared: &Shared, log: &Log, max_bytes: u64, acks: Option<&mpsc::Sender<Appended>>) {
    let _close = CloseOnExit(shared);
    loop {
        let batch = {
            let mut queue = shared.queue.lock();
            while queue.waiting.is_empty() && !queue.closed {
                shared.wake.wait(&mut queue);
            }
            if queue.waiting.is_empty() {
                return;
            }
            take(&mut queue.waiting, max_bytes)
        };
        append(log, batch, acks);
    }
}

/// The acknowledger's loop: for each appended batch in order, wait until it
/// is replicated, then answer its requests.
fn acknowledge(appended: &mpsc::Receiver<Appended>, replication: &dyn Replication) {
    let answer_all = |replies: Vec<(oneshot::Sender<Answer>, Vec<Receipt>)>,
                      answer: &Result<(), CommitError>| {
        for (reply, receipts) in replies {
            let _ = reply.send(answer.clone().map(|()| receipts));
        }
    };
    for (next_seq, replies) in appended {
        let answer = replication
            .wait(next_seq)
            .map_err(|why| CommitError::NotReplicated(Arc::new(why)));
        answer_all(replies, &answer);
        if answer.is_err() {
            // The batches queued behind a failed wait fail with it: each
            // would otherwise wait a whole timeout after the one before, and
            // a request's answer take several.
            while let Ok((_, replies)) = appended.try_recv() {
                answer_all(replies, &answer);
            }
        }
    }
}

/// The requests at the front of the queue that one append may hold: at
/// most [`MAX_BATCH_EVENTS`] events and `max_bytes`, except that a request
/// over either bound alone goes alone (and meets the library's own limits,
/// as it would without the queue).
fn take(waiting: &mut VecDeque<Waiting>, max_bytes: u64) -> Vec<Waiting> {
    let (mut events, mut bytes, mut count) = (0, 0, 0);
    for w in waiting.iter() {
        let (more_events, more_bytes) = (events + w.records.len(), bytes + w.records.framed_bytes);
        if count > 0 && (more_events > MAX_BATCH_EVENTS || more_bytes > max_bytes) {
            break;
        }
        (events, bytes, count) = (more_events, more_bytes, count + 1);
    }
    waiting.drain(..count).collect()
}

/// Appends the batch's records with one call and answers every request:
/// its own receipts (through the acknowledger, when there is one), or the
/// error for all.
fn append(log: &Log, batch: Vec<Waiting>, acks: Option<&mpsc::Sender<Appended>>) {
    let records: Vec<Encoded<'_>> = batch.iter().flat_map(|w| w.records.iter()).collect();
    match log.append_batch(&records) {
        Ok(receipts) => {
            drop(records);
            let next_seq = receipts.last().map_or(0, |r| r.seq + 1);
            let mut receipts = receipts.into_iter();
            let replies = batch.into_iter().map(|w| {
                let mine: Vec<Receipt> = receipts.by_ref().take(w.records.len()).collect();
                (w.reply, mine)
            });
            match acks {
                Some(acks) => {
                    // The acknowledger ends only after this thread: a send
                    // fails only if it panicked, and then the replies
                    // dropped answer `Lost`.
                    let _ = acks.send((next_seq, replies.collect()));
                }
                None => {
                    for (reply, mine) in replies {
                        // A request that gave up (its client left) needs no answer.
                        let _ = reply.send(Ok(mine));
                    }
                }
            }
        }
        Err(e) => {
            drop(records);
            let e = CommitError::Append(Arc::new(e));
            for w in batch {
                let _ = w.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::log::{Durability, Options};
    use crate::Timestamp;

    fn records_of(actor: &str, count: usize) -> Records {
        let mut records = Records::with_capacity(count, format!("key-{actor}"));
        for i in 0..count {
            let event = Event::new(Timestamp::now(), "pcap.download", format!("{actor}-{i}"));
            records.push(&event).unwrap();
        }
        records
    }

    fn waiting(records: Records) -> Waiting {
        Waiting {
            records,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn encoded_records_append_what_the_events_append() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            durability: Durability::Always,
            ..Options::default()
        };
        let direct = Log::create(dir.path().join("direct"), options.clone()).unwrap();
        let queued = Log::create(dir.path().join("queued"), options).unwrap();
        let events: Vec<Event> = (0..5)
            .map(|i| Event::new(Timestamp::from_unix_nanos(i), "a.b", format!("x{i}")))
            .collect();
        // Two requests from two keys, appended in one batch.
        let mut first = Records::with_capacity(3, "key-1".into());
        let mut second = Records::with_capacity(2, "key-2".into());
        for (i, e) in events.iter().enumerate() {
            let records = if i < 3 { &mut first } else { &mut second };
            records.push(e).unwrap();
        }
        let bad = Event::new(Timestamp::now(), "", "x");
        assert!(second.push(&bad).is_err());
        assert_eq!(first.len() + second.len(), 5);
        let encoded: Vec<Encoded<'_>> = first.iter().chain(second.iter()).collect();
        direct.append_batch(&events).unwrap();
        queued.append_batch(&encoded).unwrap();
        let stored =
            |log: &Log| -> Vec<Event> { log.iter_from(0).map(|r| r.unwrap().event).collect() };
        assert_eq!(stored(&direct), events);
        assert_eq!(stored(&queued), events);
        // Each request's records say who appended them.
        let appenders: Vec<Option<String>> =
            queued.iter_from(0).map(|r| r.unwrap().appender).collect();
        let expected = ["key-1", "key-1", "key-1", "key-2", "key-2"];
        assert_eq!(appenders, expected.map(|k| Some(k.to_string())));
        let defaults: Vec<Option<String>> =
            direct.iter_from(0).map(|r| r.unwrap().appender).collect();
        assert_eq!(
            defaults,
            vec![Some(crate::log::DEFAULT_APPENDER.to_string()); 5]
        );
    }

    #[test]
    fn a_batch_stops_at_the_bounds_but_takes_one_request_always() {
        let one = records_of("a", 1).framed_bytes;
        let mut queue: VecDeque<Waiting> = (0..5).map(|_| waiting(records_of("a", 1))).collect();
        assert_eq!(take(&mut queue, 3 * one).len(), 3);
        assert_eq!(take(&mut queue, 3 * one).len(), 2);
        queue.push_back(waiting(records_of("big", 10)));
        queue.push_back(waiting(records_of("a", 1)));
        assert_eq!(take(&mut queue, 3 * one)[0].records.len(), 10);
        assert_eq!(take(&mut queue, 3 * one).len(), 1);
        queue.push_back(waiting(records_of("a", MAX_BATCH_EVENTS - 1)));
        queue.push_back(waiting(records_of("a", 2)));
        assert_eq!(take(&mut queue, u64::MAX).len(), 1);
        assert_eq!(take(&mut queue, u64::MAX).len(), 1);
    }

    fn always(dir: &std::path::Path, segment_bytes: u64) -> Arc<Log> {
        let options = Options {
            durability: Durability::Always,
            segment_bytes,
            ..Options::default()
        };
        Arc::new(Log::create(dir, options).unwrap())
    }

    /// Queues requests while the committer cannot take them, so that they
    /// are all waiting at once; returns their answers.
    fn queue_at_once(
        committer: &Committer,
        requests: Vec<Records>,
        then_close: bool,
    ) -> Vec<oneshot::Receiver<Answer>> {
        let mut queue = committer.shared.queue.lock();
        let answers = requests
            .into_iter()
            .map(|records| {
                let (reply, answer) = oneshot::channel();
                queue.waiting.push_back(Waiting { records, reply });
                answer
            })
            .collect();
        queue.closed = then_close;
        drop(queue);
        committer.shared.wake.notify_one();
        answers
    }

    #[test]
    fn close_appends_what_is_queued_and_releases_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = always(dir.path(), Options::default().segment_bytes);
        let committer = Committer::start("acme", log.clone()).unwrap();
        let requests = (0..20).map(|i| records_of(&format!("c{i}"), 3)).collect();
        let answers = queue_at_once(&committer, requests, true);
        committer.close();
        for (i, answer) in answers.into_iter().enumerate() {
            let receipts = answer.blocking_recv().unwrap().unwrap();
            let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, (i as u64 * 3..i as u64 * 3 + 3).collect::<Vec<_>>());
            let first = log.iter_from(seqs[0]).next().unwrap().unwrap();
            assert_eq!(first.event.actor, format!("c{i}-0"));
            assert_eq!(first.hash, receipts[0].hash);
        }
        assert_eq!(log.state().durable_next_seq, 60);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(
            runtime.block_on(committer.commit(records_of("late", 1))),
            Err(CommitError::Closed)
        ));
        let log = Arc::try_unwrap(log).expect("the committer let go of the log");
        log.close().unwrap();
    }

    #[test]
    fn a_request_too_large_for_a_segment_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = always(dir.path(), crate::format::segment::MIN_SEGMENT_BYTES);
        let committer = Committer::start("acme", log.clone()).unwrap();
        let mut huge = Records::with_capacity(600, "key-huge".into());
        for i in 0..600 {
            let mut event = Event::new(Timestamp::now(), "a.b", format!("huge-{i}"));
            event.resource = Some("x".repeat(250));
            huge.push(&event).unwrap();
        }
        assert!(huge.framed_bytes > crate::format::segment::MIN_SEGMENT_BYTES);
        let requests = vec![records_of("before", 2), huge, records_of("after", 2)];
        let answers: Vec<Answer> = queue_at_once(&committer, requests, false)
            .into_iter()
            .map(|a| a.blocking_recv().unwrap())
            .collect();
        assert_eq!(answers[0].as_ref().unwrap().len(), 2);
        assert!(
            matches!(
                &answers[1],
                Err(CommitError::Append(e)) if matches!(**e, Error::BatchTooLarge { .. })
            ),
            "{:?}",
            answers[1]
        );
        let after: Vec<u64> = answers[2].as_ref().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(after, [2, 3]);
    }

    /// Replicated up to a fixed seq: later records time out.
    struct ReplicatedUpTo(u64);

    impl Replication for ReplicatedUpTo {
        fn wait(&self, next_seq: u64) -> Result<(), NotReplicated> {
            if next_seq <= self.0 {
                Ok(())
            } else {
                Err(NotReplicated::Timeout(format!("{next_seq} > {}", self.0)))
            }
        }
    }

    #[test]
    fn a_replicated_workspace_answers_only_what_the_replication_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let log = always(dir.path(), Options::default().segment_bytes);
        let replication: Arc<dyn Replication> = Arc::new(ReplicatedUpTo(2));
        let committer =
            Committer::start_replicated("acme", log.clone(), Some(replication)).unwrap();
        let first = queue_at_once(&committer, vec![records_of("a", 2)], false);
        let first = first.into_iter().next().unwrap().blocking_recv().unwrap();
        assert_eq!(first.unwrap().len(), 2);
        let second = queue_at_once(&committer, vec![records_of("b", 2)], false);
        let second = second.into_iter().next().unwrap().blocking_recv().unwrap();
        assert!(
            matches!(&second, Err(CommitError::NotReplicated(why)) if matches!(**why, NotReplicated::Timeout(_))),
            "{second:?}"
        );
        // Appended here all the same: only the acknowledgement is withheld.
        assert_eq!(log.state().next_seq, 4);
        committer.close();
    }
}
