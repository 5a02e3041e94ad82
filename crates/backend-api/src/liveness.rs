//! Replica liveness, in one place. Every replica heartbeats the executions it
//! owns; an execution whose owner stopped heartbeating is requeued (queue
//! mode, at most [`MAX_REQUEUES`] times) or failed with the reason; a replica
//! stops its local run of an execution that was cancelled or taken over
//! elsewhere; and in queue mode a replica with room adopts executions that
//! waited in the queue too long (a consumer group with no live member).

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    db::Db,
    engine::Engine,
    events::ProgressEvent,
    executions::{self, ExecutionQueue},
    model::ExecutionStatus,
};

/// How often an execution may go back to the queue after its replica died,
/// so a run that kills replicas stops somewhere.
pub const MAX_REQUEUES: i64 = 3;

#[derive(Clone, Copy, Debug)]
pub struct LivenessSettings {
    /// How often this replica heartbeats its executions.
    pub heartbeat: Duration,
    /// After how long without a heartbeat an execution's replica counts as dead.
    pub stale_after: Duration,
}

/// The liveness work of one replica.
#[derive(Clone, Debug)]
pub struct Liveness {
    engine: Engine,
    db: Db,
    settings: LivenessSettings,
    /// Queue mode: where interrupted executions go back to.
    queue: Option<Arc<dyn ExecutionQueue>>,
}

impl Liveness {
    pub fn new(
        engine: Engine,
        db: Db,
        settings: LivenessSettings,
        queue: Option<Arc<dyn ExecutionQueue>>,
    ) -> Self {
        Self {
            engine,
            db,
            settings,
            queue,
        }
    }

    /// One round now, then one per heartbeat period, until `stop`.
    pub async fn maintain(&self, stop: CancellationToken) {
        loop {
            self.beat().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.settings.heartbeat) => {}
            }
        }
    }

    /// One round: heartbeat, stop what ended elsewhere, recover what dead
    /// replicas left.
    pub async fn beat(&self) {
        let owner = self.engine.owner();
        if let Err(err) = self.db.heartbeat(owner).await {
            tracing::warn!(error = %err, "heartbeat failed; the database is unreachable");
            return;
        }
        self.stop_runs_ended_elsewhere().await;
        if let Some(queue) = &self.queue {
            self.requeue_stale(queue).await;
        }
        self.fail_stale().await;
    }

    /// Ended elsewhere (a cancel on another replica), or no longer ours (a
    /// replica that thought this one dead requeued it and someone else took
    /// it): stop, so it does not run twice for long.
    async fn stop_runs_ended_elsewhere(&self) {
        for (id, token) in self.engine.local_runs() {
            match self.db.execution_owner(&id).await {
                Ok(Some((status, _, _))) if status.is_terminal() => token.cancel(),
                Ok(Some((ExecutionStatus::Running, owner, _))) if owner != self.engine.owner() => {
                    tracing::warn!(execution_id = %id, now_owned_by = %owner, "execution taken over by another replica; stopping here");
                    token.cancel();
                }
                _ => {}
            }
        }
    }

    async fn requeue_stale(&self, queue: &Arc<dyn ExecutionQueue>) {
        let ids = match self
            .db
            .requeue_stale(self.settings.stale_after, MAX_REQUEUES)
            .await
        {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(error = %err, "cannot requeue interrupted executions");
                return;
            }
        };
        for id in ids {
            tracing::warn!(execution_id = %id, "requeued: the replica running it stopped");
            self.engine.events().publish(ProgressEvent::execution(
                &id,
                ExecutionStatus::Pending.as_str(),
                "requeued: the backend replica running it stopped",
            ));
            // The broker's acknowledgement can take seconds; the heartbeat must not wait.
            let (queue, db) = (queue.clone(), self.db.clone());
            tokio::spawn(async move { executions::requeue(queue.as_ref(), &db, &id).await });
        }
    }

    async fn fail_stale(&self) {
        match self.db.reap_stale(self.settings.stale_after).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(count = ids.len(), ids = ?ids, "failed executions whose replica stopped");
                for id in ids {
                    self.engine.metrics().execution_finished("failed", None);
                    self.engine.events().publish(ProgressEvent::execution(
                        &id,
                        ExecutionStatus::Failed.as_str(),
                        "interrupted: the backend replica running it stopped",
                    ));
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot check for interrupted executions"),
        }
    }

    /// Queue mode: adopts executions that waited in the queue longer than
    /// `after` while this replica has room (see [`Db::stale_queued`]).
    pub fn spawn_adopter(&self, after: Duration, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let tick = (after / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(tick) => {}
                }
                this.adopt(after).await;
            }
        });
    }

    /// One round of adoption; the ids it claimed.
    pub async fn adopt(&self, after: Duration) -> Vec<String> {
        let room = self.engine.room();
        if room == 0 {
            return Vec::new();
        }
        let ids = match self.db.stale_queued(after, room as i64).await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::debug!(error = %err, "cannot look for stale queued executions");
                return Vec::new();
            }
        };
        let mut adopted = Vec::new();
        for id in ids {
            let (submission, claimed) = match executions::stored_submission(
                &self.db,
                self.engine.buckets(),
                &id,
                Default::default(),
            )
            .await
            {
                Ok(run) => run,
                Err(reason) => {
                    tracing::warn!(execution_id = %id, error = %reason, "cannot adopt a queued execution");
                    continue;
                }
            };
            if self.engine.submit(submission).is_ok()
                && matches!(
                    tokio::time::timeout(Duration::from_secs(30), claimed).await,
                    Ok(Ok(true))
                )
            {
                tracing::warn!(execution_id = %id, waited_s = after.as_secs_f64(), "adopted a queued execution nobody consumed");
                adopted.push(id);
            }
        }
        adopted
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use serde_json::json;

    use super::{Liveness, LivenessSettings};
    use crate::{
        db::{QUEUE_OWNER, Timestamp},
        model::ExecutionStatus,
        testing::{FakeQueue, Harness, Reply, pipeline, resize, wait_final},
    };

    const SETTINGS: LivenessSettings = LivenessSettings {
        heartbeat: Duration::from_millis(20),
        stale_after: Duration::from_millis(50),
    };

    fn liveness(h: &Harness, queue: Option<Arc<FakeQueue>>) -> Liveness {
        let queue = queue.map(|q| q as Arc<dyn super::ExecutionQueue>);
        Liveness::new(h.engine.clone(), h.db.clone(), SETTINGS, queue)
    }

    /// An execution another replica started and then stopped heartbeating.
    async fn orphan(h: &Harness, id: &str) {
        let p = pipeline(json!([resize("a", 10, &[])]));
        h.record(id, &p, "dead-replica").await;
        assert!(
            h.db.start_execution(id, "dead-replica", Timestamp::now())
                .await
                .unwrap()
        );
        tokio::time::sleep(SETTINGS.stale_after * 2).await;
    }

    #[tokio::test]
    async fn a_dead_replicas_execution_is_failed_with_the_reason() {
        let h = Harness::new().await;
        orphan(&h, "orphan").await;
        let mut events = h.engine.events().subscribe();
        liveness(&h, None).beat().await;
        let record = h.execution("orphan").await;
        assert_eq!(record.status, ExecutionStatus::Failed);
        assert!(record.error.unwrap().contains("replica running it stopped"));
        let end = wait_final(&mut events, "orphan").await;
        assert_eq!(end.last().unwrap().status, "failed");
    }

    #[tokio::test]
    async fn this_replicas_own_executions_are_kept_alive() {
        let h = Harness::new().await;
        h.fake.script("resize:10", [Reply::Hang]);
        let p = pipeline(json!([resize("a", 10, &[])]));
        let run = h.record("mine", &p, h.engine.owner()).await;
        h.engine.submit(run).unwrap();
        h.until_calls(1).await;
        let live = liveness(&h, None);
        for _ in 0..4 {
            tokio::time::sleep(SETTINGS.stale_after).await;
            live.beat().await;
        }
        assert_eq!(h.execution("mine").await.status, ExecutionStatus::Running);
        assert!(!h.fake.calls()[0].dropped);
    }

    #[tokio::test]
    async fn queue_mode_requeues_a_dead_replicas_execution() {
        let h = Harness::new().await;
        orphan(&h, "orphan").await;
        let queue = Arc::new(FakeQueue::default());
        liveness(&h, Some(queue.clone())).beat().await;
        let (status, owner, _) = h.db.execution_owner("orphan").await.unwrap().unwrap();
        assert_eq!(
            (status, owner.as_str()),
            (ExecutionStatus::Pending, QUEUE_OWNER)
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while queue.sent.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the requeued execution never reached the queue");
        assert_eq!(queue.sent.lock().unwrap()[0].execution_id, "orphan");
    }

    #[tokio::test]
    async fn a_local_run_cancelled_on_another_replica_stops_at_the_next_beat() {
        let h = Harness::new().await;
        h.fake.script("resize:10", [Reply::Hang]);
        let p = pipeline(json!([resize("a", 10, &[])]));
        let run = h.record("elsewhere", &p, h.engine.owner()).await;
        h.engine.submit(run).unwrap();
        h.until_calls(1).await;
        // What another replica's cancel writes.
        h.db.finish_execution(
            "elsewhere",
            ExecutionStatus::Cancelled,
            Some("cancelled by request"),
            Timestamp::now(),
            None,
        )
        .await
        .unwrap();
        liveness(&h, None).beat().await;
        h.until_idle().await;
        assert!(h.fake.calls()[0].dropped);
        assert_eq!(
            h.execution("elsewhere").await.status,
            ExecutionStatus::Cancelled
        );
    }

    #[tokio::test]
    async fn a_queued_execution_nobody_took_is_adopted_by_a_replica_with_room() {
        let h = Harness::new().await;
        let p = pipeline(json!([resize("a", 10, &[])]));
        h.record("waiting", &p, QUEUE_OWNER).await;
        let live = liveness(&h, Some(Arc::new(FakeQueue::default())));
        // Not yet: it has not waited long enough.
        assert!(live.adopt(Duration::from_secs(3600)).await.is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut events = h.engine.events().subscribe();
        assert_eq!(live.adopt(Duration::from_millis(10)).await, ["waiting"]);
        wait_final(&mut events, "waiting").await;
        assert_eq!(
            h.execution("waiting").await.status,
            ExecutionStatus::Completed
        );
    }
}
