//! Kubernetes Events, published by a background worker so that they never hold up a
//! reconciliation. Deletions are the critical path; Events are for people and may trail
//! them by a little under load.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{decision::EventSpec, telemetry::Metrics};

/// Most Events waiting to be published; beyond it new ones are dropped and counted.
pub const QUEUE: usize = 10_000;

/// Most Event writes in flight at once.
pub const IN_FLIGHT: usize = 4;

/// Longest Event note Kubernetes accepts is 1 kB.
const MAX_NOTE: usize = 1000;

struct Job {
    event: Event,
    reference: ObjectReference,
}

/// Queues Events for the background worker.
#[derive(Clone)]
pub struct EventPublisher {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    /// Events queued or being written.
    unfinished: Arc<AtomicUsize>,
}

impl EventPublisher {
    /// Starts the worker on the current Tokio runtime.
    pub fn start(client: Client, reporter: Reporter, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        // Repeated Events of one object (retries) fold into a series through the
        // recorder's cache, which drops entries older than six minutes by itself: nothing
        // is left behind for objects that are gone.
        let recorder = Recorder::new(client, reporter);
        let worker_metrics = metrics.clone();
        let unfinished = Arc::new(AtomicUsize::new(0));
        let worker_unfinished = unfinished.clone();
        tokio::spawn(
            tokio_stream_from(rx).for_each_concurrent(IN_FLIGHT, move |job| {
                let recorder = recorder.clone();
                let metrics = worker_metrics.clone();
                let unfinished = worker_unfinished.clone();
                async move {
                    match recorder.publish(&job.event, &job.reference).await {
                        Ok(()) => metrics.kube_write("event"),
                        Err(e) => warn!(
                            name = ?job.reference.name,
                            namespace = ?job.reference.namespace,
                            error = %e,
                            "publishing Event failed"
                        ),
                    }
                    unfinished.fetch_sub(1, Ordering::AcqRel);
                }
            }),
        );
        Self {
            tx,
            metrics,
            unfinished,
        }
    }

    /// Waits until every queued Event is written, at most `deadline`: at shutdown, so that
    /// the last outcomes reach the resources. Returns how many were left unwritten.
    pub async fn flush(&self, deadline: Duration) -> usize {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = self.unfinished.load(Ordering::Acquire);
            if left == 0 || tokio::time::Instant::now() >= until {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queues an Event about `reference`.
    pub fn publish(&self, spec: &EventSpec, reference: ObjectReference) {
        let event = Event {
            type_: if spec.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: spec.reason.as_str().to_string(),
            note: Some(truncate_note(&spec.note)),
            action: spec.action.to_string(),
            secondary: None,
        };
        self.unfinished.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(Job { event, reference }).is_err() {
            self.unfinished.fetch_sub(1, Ordering::AcqRel);
            self.metrics.event_dropped();
            debug!("Event queue full; Event dropped");
        }
    }
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Job>) -> impl futures::Stream<Item = Job> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn truncate_note(note: &str) -> String {
    if note.len() <= MAX_NOTE {
        return note.to_string();
    }
    let mut end = MAX_NOTE;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}
