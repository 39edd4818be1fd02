//! One suite, every backend: each test below runs against the in-memory and
//! the sled storage, so they cannot drift apart.
#![allow(clippy::unwrap_used)]

use super::*;
use hpo_proto::ParamValue;

fn spec() -> StudySpec {
    StudySpec::parse(
        r#"
name = "conformance"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 10
[trainer]
kind = "simulated"
epochs = 3
[params]
x = { type = "float", low = 0.0, high = 1.0 }
"#,
        "conformance.toml",
    )
    .unwrap()
}

fn params(x: f64) -> Params {
    [("x".to_string(), ParamValue::Float(x))]
        .into_iter()
        .collect()
}

fn w(name: &str) -> WorkerId {
    WorkerId(name.into())
}

fn values(loss: f64) -> MetricValues {
    [("loss".to_string(), loss)].into_iter().collect()
}

pub fn studies_get_sequential_ids_and_end_once(s: &dyn Storage) {
    let a = s.create_study(spec(), "toml a".into(), 1, 10).unwrap();
    let b = s.create_study(spec(), "toml b".into(), 2, 11).unwrap();
    assert!(b.id > a.id);
    assert_eq!(s.study(a.id).unwrap().unwrap().study_toml, "toml a");
    assert_eq!(s.studies().unwrap().len(), 2);
    let ended = s
        .end_study(a.id, StudyState::Cancelled, "cancelled", 20)
        .unwrap();
    assert_eq!(ended.state, StudyState::Cancelled);
    assert!(matches!(
        s.end_study(a.id, StudyState::Completed, "max_trials", 21),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(s.study(a.id).unwrap().unwrap().end_reason, "cancelled");
    assert!(matches!(
        s.end_study(StudyId(999), StudyState::Completed, "x", 1),
        Err(StorageError::NotFound(_))
    ));
}

pub fn trials_are_numbered_and_claimed_in_order(s: &dyn Storage) {
    let st = s.create_study(spec(), String::new(), 1, 0).unwrap();
    for i in 0..3 {
        let t = s
            .create_trial(st.id, params(i as f64 / 10.0), Placement::default(), 5)
            .unwrap();
        assert_eq!(t.id.number, i);
        assert_eq!(t.state, TrialState::Waiting);
    }
    let c = s.claim_trial(st.id, &w("w1"), "cpu:0", 6).unwrap().unwrap();
    assert_eq!(
        (c.id.number, c.attempt, c.state),
        (0, 1, TrialState::Running)
    );
    assert_eq!(c.worker, Some(w("w1")));
    let c = s.claim_trial(st.id, &w("w2"), "cpu:0", 6).unwrap().unwrap();
    assert_eq!(c.id.number, 1);
    let c = s.claim_trial(st.id, &w("w1"), "cpu:0", 6).unwrap().unwrap();
    assert_eq!(c.id.number, 2);
    assert!(
        s.claim_trial(st.id, &w("w1"), "cpu:0", 6)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        s.create_trial(StudyId(999), params(0.0), Placement::default(), 1),
        Err(StorageError::NotFound(_))
    ));
}

pub fn claims_from_many_threads_never_collide(s: &dyn Storage) {
    let st = s.create_study(spec(), String::new(), 1, 0).unwrap();
    for i in 0..200 {
        s.create_trial(st.id, params(i as f64), Placement::default(), 0)
            .unwrap();
    }
    let claimed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for k in 0..8 {
            let claimed = &claimed;
            scope.spawn(move || {
                let worker = w(&format!("w{k}"));
                while let Some(t) = s.claim_trial(st.id, &worker, "cpu:0", 1).unwrap() {
                    claimed.lock().unwrap().push(t.id.number);
                }
            });
        }
    });
    let mut got = claimed.into_inner().unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<u32>>());
}

pub fn metrics_are_idempotent_per_attempt_and_step(s: &dyn Storage) {
    let st = s.create_study(spec(), String::new(), 1, 0).unwrap();
    let t = s
        .create_trial(st.id, params(0.5), Placement::default(), 0)
        .unwrap();
    // Not running yet.
    assert!(matches!(
        s.append_metrics(t.id, 1, 1, &values(1.0)),
        Err(StorageError::Conflict(_))
    ));
    s.claim_trial(st.id, &w("w"), "cpu:0", 1).unwrap();
    assert!(s.append_metrics(t.id, 1, 1, &values(1.0)).unwrap());
    assert!(!s.append_metrics(t.id, 1, 1, &values(9.0)).unwrap());
    assert!(s.append_metrics(t.id, 1, 2, &values(0.5)).unwrap());
    // A stale attempt is refused.
    assert!(matches!(
        s.append_metrics(t.id, 2, 3, &values(0.1)),
        Err(StorageError::Conflict(_))
    ));
    let m = s.metrics(t.id).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0].values["loss"], 1.0,
        "the first report of a step is kept"
    );
    assert_eq!(s.trial(t.id).unwrap().unwrap().last_step, Some(2));
}

pub fn requeue_keeps_history_and_counts_lost_leases(s: &dyn Storage) {
    let st = s.create_study(spec(), String::new(), 1, 0).unwrap();
    let t = s
        .create_trial(st.id, params(0.5), Placement::default(), 0)
        .unwrap();
    s.claim_trial(st.id, &w("a"), "cpu:0", 1).unwrap();
    s.append_metrics(t.id, 1, 1, &values(1.0)).unwrap();
    let r = s
        .requeue_trial(t.id, Requeue::LeaseLost, "worker a vanished")
        .unwrap();
    assert_eq!(
        (r.state, r.lost_leases, r.attempt),
        (TrialState::Waiting, 1, 1)
    );
    assert!(matches!(
        s.requeue_trial(t.id, Requeue::LeaseLost, "again"),
        Err(StorageError::Conflict(_))
    ));
    let c = s.claim_trial(st.id, &w("b"), "cpu:0", 2).unwrap().unwrap();
    assert_eq!((c.attempt, c.last_step), (2, None));
    s.append_metrics(t.id, 2, 1, &values(0.9)).unwrap();
    let r = s
        .requeue_trial(t.id, Requeue::Interrupted, "worker b shut down")
        .unwrap();
    assert_eq!(r.lost_leases, 1, "an interruption is not a lost lease");
    assert_eq!(
        s.metrics(t.id).unwrap().len(),
        2,
        "both attempts' metrics are kept"
    );
}

pub fn finish_refuses_terminal_trials(s: &dyn Storage) {
    let st = s.create_study(spec(), String::new(), 1, 0).unwrap();
    let t = s
        .create_trial(st.id, params(0.5), Placement::default(), 0)
        .unwrap();
    s.claim_trial(st.id, &w("a"), "cpu:0", 1).unwrap();
    let f = s
        .finish_trial(t.id, TrialState::Completed, Some(0.25), "", 9)
        .unwrap();
    assert_eq!(
        (f.state, f.value, f.ended_at_ms),
        (TrialState::Completed, Some(0.25), 9)
    );
    assert!(matches!(
        s.finish_trial(t.id, TrialState::Failed, None, "late", 10),
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        s.append_metrics(t.id, 1, 2, &values(0.1)),
        Err(StorageError::Conflict(_))
    ));
    let again = s.trial(t.id).unwrap().unwrap();
    assert_eq!(
        (again.state, again.value),
        (TrialState::Completed, Some(0.25))
    );
    assert!(matches!(
        s.finish_trial(t.id, TrialState::Running, None, "", 1),
        Err(StorageError::Conflict(_))
    ));
    // A waiting trial can be cancelled without ever running.
    let t2 = s
        .create_trial(st.id, params(0.1), Placement::default(), 0)
        .unwrap();
    s.finish_trial(t2.id, TrialState::Cancelled, None, "cancelled", 3)
        .unwrap();
    assert!(s.claim_trial(st.id, &w("a"), "cpu:0", 4).unwrap().is_none());
    assert!(matches!(
        s.finish_trial(
            TrialId {
                study: st.id,
                number: 77
            },
            TrialState::Failed,
            None,
            "",
            1
        ),
        Err(StorageError::NotFound(_))
    ));
}

pub fn studies_are_isolated(s: &dyn Storage) {
    let a = s.create_study(spec(), String::new(), 1, 0).unwrap();
    let b = s.create_study(spec(), String::new(), 1, 0).unwrap();
    s.create_trial(a.id, params(0.1), Placement::default(), 0)
        .unwrap();
    s.create_trial(b.id, params(0.2), Placement::default(), 0)
        .unwrap();
    s.create_trial(b.id, params(0.3), Placement::default(), 0)
        .unwrap();
    assert_eq!(s.trials(a.id).unwrap().len(), 1);
    assert_eq!(s.trials(b.id).unwrap().len(), 2);
    let c = s.claim_trial(a.id, &w("w"), "cpu:0", 0).unwrap().unwrap();
    assert_eq!(c.id.study, a.id);
    assert!(s.claim_trial(a.id, &w("w"), "cpu:0", 0).unwrap().is_none());
}

/// Reads a log the way a follower does, from `offset`, checking the slice
/// lines up with the total.
fn read_log(s: &dyn Storage, t: TrialId, offset: u64) -> TrialLogView {
    let l = s.trial_log(t, offset).unwrap();
    assert_eq!(l.start + l.text.len() as u64, l.total, "{l:?}");
    l
}

pub fn logs_keep_each_chunk_once_in_order(s: &dyn Storage) {
    let st = s.create_study(spec(), String::new(), 1, 0).unwrap();
    let t = s
        .create_trial(st.id, params(0.5), Placement::default(), 0)
        .unwrap();
    let other = s
        .create_trial(st.id, params(0.6), Placement::default(), 0)
        .unwrap();
    assert_eq!(read_log(s, t.id, 0), TrialLogView::default());
    s.claim_trial(st.id, &w("a"), "cpu:0", 1).unwrap();
    s.append_log(t.id, 1, 0, "hello\n", 1 << 20).unwrap();
    s.append_log(t.id, 1, 6, "world\n", 1 << 20).unwrap();
    // A retried chunk, and one overlapping what was received.
    s.append_log(t.id, 1, 0, "hello\n", 1 << 20).unwrap();
    s.append_log(t.id, 1, 3, "lo\nworld\nmore\n", 1 << 20)
        .unwrap();
    let l = read_log(s, t.id, 0);
    assert_eq!(
        (l.text.as_str(), l.start, l.total, l.dropped),
        ("hello\nworld\nmore\n", 0, 17, 0)
    );
    // The worker dropped 3 bytes: a marker line stands for them.
    s.append_log(t.id, 1, 20, "x\n", 1 << 20).unwrap();
    let l = read_log(s, t.id, 12);
    assert_eq!(l.text, "more\n[hpo: 3 bytes of output dropped]\nx\n");
    assert_eq!(l.start, 12);
    let total = l.total;
    assert_eq!(read_log(s, t.id, total).text, "");
    assert_eq!(read_log(s, t.id, total + 50).start, total);
    // The trial ends; the next attempt's stream follows (a trial can be
    // requeued and rerun), and the tail of the older one arriving late is
    // ignored.
    s.requeue_trial(t.id, Requeue::Interrupted, "").unwrap();
    s.claim_trial(st.id, &w("b"), "cpu:0", 2).unwrap();
    s.append_log(t.id, 2, 0, "again\n", 1 << 20).unwrap();
    s.append_log(t.id, 1, 22, "late\n", 1 << 20).unwrap();
    let l = read_log(s, t.id, total);
    assert_eq!((l.text.as_str(), l.start), ("again\n", total));
    // A finished trial's log still takes the tail of its program.
    s.finish_trial(t.id, TrialState::Failed, None, "crashed", 3)
        .unwrap();
    s.append_log(t.id, 2, 6, "Traceback\n", 1 << 20).unwrap();
    assert!(read_log(s, t.id, 0).text.ends_with("again\nTraceback\n"));
    // Logs are per trial.
    assert_eq!(read_log(s, other.id, 0).total, 0);
    let unknown = TrialId {
        study: st.id,
        number: 77,
    };
    assert!(matches!(
        s.append_log(unknown, 1, 0, "x", 1 << 20),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.trial_log(unknown, 0),
        Err(StorageError::NotFound(_))
    ));
}

pub fn logs_drop_their_oldest_lines_past_the_bound(s: &dyn Storage) {
    let st = s.create_study(spec(), String::new(), 1, 0).unwrap();
    let t = s
        .create_trial(st.id, params(0.5), Placement::default(), 0)
        .unwrap();
    s.claim_trial(st.id, &w("a"), "cpu:0", 1).unwrap();
    let mut stream = String::new();
    let mut follower = String::new();
    let mut next = 0u64;
    for i in 0..200 {
        let chunk = format!("epoch {i:03}: loss {:.4}\n", 1.0 / (i + 1) as f64);
        s.append_log(t.id, 1, stream.len() as u64, &chunk, 1024)
            .unwrap();
        stream.push_str(&chunk);
        if i % 60 == 0 {
            let l = read_log(s, t.id, next);
            assert!(l.start >= next);
            follower.push_str(&l.text);
            next = l.total;
        }
    }
    let l = read_log(s, t.id, 0);
    assert_eq!(l.total, stream.len() as u64);
    assert!(l.text.len() <= 1024, "{}", l.text.len());
    let marker = format!("[hpo: earlier output dropped ({} bytes)]\n", l.dropped);
    assert!(l.text.starts_with(&marker), "{}", l.text);
    // Cut at a line: what follows the marker is the stream's last lines.
    let kept = &l.text[marker.len()..];
    assert!(kept.starts_with("epoch "), "{kept}");
    assert!(stream.ends_with(kept));
    assert_eq!(l.dropped as usize, stream.len() - kept.len());
    // The follower, reading every 60 chunks, fell behind the bound: it saw
    // markers where it missed output, and never a byte twice.
    let l = read_log(s, t.id, next);
    follower.push_str(&l.text);
    assert!(follower.contains("[hpo: earlier output dropped ("));
    assert!(follower.ends_with("epoch 199: loss 0.0050\n"));
    for i in 0..200 {
        assert!(follower.matches(&format!("epoch {i:03}:")).count() <= 1);
    }
}

pub fn pause_keeps_the_checkpoint_and_promotion_resumes_it(s: &dyn Storage) {
    let st = s.create_study(spec(), String::new(), 1, 0).unwrap();
    let first = Placement {
        bracket: 1,
        rung: 0,
        budget: 3,
    };
    let t = s.create_trial(st.id, params(0.5), first, 0).unwrap();
    assert_eq!(t.placement, first);
    s.claim_trial(st.id, &w("a"), "cpu:0", 1).unwrap();
    for step in 1..=3 {
        s.append_metrics(t.id, 1, step, &values(1.0 / step as f64))
            .unwrap();
    }
    let ck = CheckpointRef {
        trial: t.id,
        attempt: 1,
        step: 3,
        size: 10,
        crc32: 42,
    };
    // Only the attempt that is running may pause, with its own checkpoint.
    assert!(matches!(
        s.pause_trial(t.id, 2, ck.clone(), Some(0.3), "rung 0"),
        Err(StorageError::Conflict(_))
    ));
    let other = CheckpointRef {
        attempt: 7,
        ..ck.clone()
    };
    assert!(matches!(
        s.pause_trial(t.id, 1, other, Some(0.3), "rung 0"),
        Err(StorageError::Conflict(_))
    ));
    let p = s
        .pause_trial(t.id, 1, ck.clone(), Some(0.3), "rung 0")
        .unwrap();
    assert_eq!(
        (p.state, p.value, p.last_step, p.checkpoint.as_ref()),
        (TrialState::Paused, Some(0.3), Some(3), Some(&ck))
    );
    // A paused trial is not claimable, and not requeueable.
    assert!(s.claim_trial(st.id, &w("b"), "cpu:0", 2).unwrap().is_none());
    assert!(matches!(
        s.requeue_trial(t.id, Requeue::LeaseLost, "x"),
        Err(StorageError::Conflict(_))
    ));
    let second = Placement {
        bracket: 1,
        rung: 1,
        budget: 9,
    };
    let w2 = s.promote_trial(t.id, second).unwrap();
    assert_eq!((w2.state, w2.placement), (TrialState::Waiting, second));
    assert!(matches!(
        s.promote_trial(t.id, second),
        Err(StorageError::Conflict(_))
    ));
    let c = s.claim_trial(st.id, &w("b"), "cpu:0", 3).unwrap().unwrap();
    assert_eq!(
        (c.attempt, c.checkpoint.as_ref(), c.placement),
        (2, Some(&ck), second)
    );
    // A lost lease after a resume keeps the checkpoint for the next attempt.
    s.append_metrics(t.id, 2, 4, &values(0.2)).unwrap();
    let r = s.requeue_trial(t.id, Requeue::LeaseLost, "gone").unwrap();
    assert_eq!(r.checkpoint.as_ref(), Some(&ck));
    let c = s.claim_trial(st.id, &w("c"), "cpu:0", 4).unwrap().unwrap();
    assert_eq!((c.attempt, c.checkpoint), (3, Some(ck)));
    // A paused trial can be stopped for good (the study ends).
    let t2 = s.create_trial(st.id, params(0.1), first, 5).unwrap();
    s.claim_trial(st.id, &w("d"), "cpu:0", 5).unwrap();
    let ck2 = CheckpointRef {
        trial: t2.id,
        attempt: 1,
        step: 1,
        size: 1,
        crc32: 1,
    };
    s.append_metrics(t2.id, 1, 1, &values(0.5)).unwrap();
    s.pause_trial(t2.id, 1, ck2, Some(0.5), "rung 0").unwrap();
    let f = s
        .finish_trial(t2.id, TrialState::Stopped, Some(0.5), "not promoted", 6)
        .unwrap();
    assert_eq!(f.state, TrialState::Stopped);
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[test]
            fn studies() {
                let (s, _keep) = $make;
                studies_get_sequential_ids_and_end_once(&s);
            }
            #[test]
            fn trials() {
                let (s, _keep) = $make;
                trials_are_numbered_and_claimed_in_order(&s);
            }
            #[test]
            fn concurrent_claims() {
                let (s, _keep) = $make;
                claims_from_many_threads_never_collide(&s);
            }
            #[test]
            fn metrics() {
                let (s, _keep) = $make;
                metrics_are_idempotent_per_attempt_and_step(&s);
            }
            #[test]
            fn requeue() {
                let (s, _keep) = $make;
                requeue_keeps_history_and_counts_lost_leases(&s);
            }
            #[test]
            fn finish() {
                let (s, _keep) = $make;
                finish_refuses_terminal_trials(&s);
            }
            #[test]
            fn pause_and_promote() {
                let (s, _keep) = $make;
                pause_keeps_the_checkpoint_and_promotion_resumes_it(&s);
            }
            #[test]
            fn isolation() {
                let (s, _keep) = $make;
                studies_are_isolated(&s);
            }
            #[test]
            fn logs() {
                let (s, _keep) = $make;
                logs_keep_each_chunk_once_in_order(&s);
            }
            #[test]
            fn bounded_logs() {
                let (s, _keep) = $make;
                logs_drop_their_oldest_lines_past_the_bound(&s);
            }
        }
    };
}

suite!(memory, (MemoryStorage::new(), ()));
suite!(sled, {
    let dir = tempfile::tempdir().unwrap();
    (
        SledStorage::open(dir.path(), Durability::Process).unwrap(),
        dir,
    )
});

#[test]
fn sled_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (study, trial) = {
        let s = SledStorage::open(dir.path(), Durability::Process).unwrap();
        let st = s.create_study(spec(), "kept".into(), 3, 0).unwrap();
        let t = s
            .create_trial(st.id, params(0.5), Placement::default(), 0)
            .unwrap();
        s.create_trial(st.id, params(0.6), Placement::default(), 0)
            .unwrap();
        s.claim_trial(st.id, &w("a"), "cpu:0", 1).unwrap();
        s.append_metrics(t.id, 1, 1, &values(0.7)).unwrap();
        s.flush().unwrap();
        (st.id, t.id)
    };
    let s = SledStorage::open(dir.path(), Durability::Process).unwrap();
    assert_eq!(s.study(study).unwrap().unwrap().seed, 3);
    assert_eq!(s.trial(trial).unwrap().unwrap().state, TrialState::Running);
    assert_eq!(s.metrics(trial).unwrap()[0].values["loss"], 0.7);
    // The waiting index was rebuilt: trial 1 is still claimable.
    assert_eq!(
        s.claim_trial(study, &w("b"), "cpu:0", 2)
            .unwrap()
            .unwrap()
            .id
            .number,
        1
    );
    assert_eq!(
        s.create_study(spec(), String::new(), 1, 0).unwrap().id.0,
        study.0 + 1
    );
}

/// What `kill -9` leaves: the data dir as it is on disk while the store is
/// open, nothing flushed. Everything a verb returned from must be in it.
#[test]
fn sled_keeps_every_returned_write_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), Durability::Process).unwrap();
    let st = s.create_study(spec(), "crash".into(), 5, 0).unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        let t = s
            .create_trial(st.id, params(i as f64 / 100.0), Placement::default(), 0)
            .unwrap();
        s.claim_trial(st.id, &w("a"), "cpu:0", 1).unwrap();
        for step in 1..=3 {
            s.append_metrics(t.id, 1, step, &values(step as f64))
                .unwrap();
        }
        if i % 2 == 0 {
            s.finish_trial(t.id, TrialState::Completed, Some(i as f64), "", 2)
                .unwrap();
        }
        ids.push(t.id);
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    let r = SledStorage::open(copy.path(), Durability::Process).unwrap();
    assert_eq!(r.study(st.id).unwrap().unwrap().seed, 5);
    for (i, id) in ids.iter().enumerate() {
        let t = r.trial(*id).unwrap().unwrap();
        if i % 2 == 0 {
            assert_eq!(
                (t.state, t.value, t.last_step),
                (TrialState::Completed, Some(i as f64), Some(3))
            );
        } else {
            assert_eq!((t.state, t.last_step), (TrialState::Running, Some(3)));
        }
        assert_eq!(r.metrics(*id).unwrap().len(), 3, "trial {id}");
    }
    drop(s);
}

#[test]
fn sled_sync_mode_waits_for_sync() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), Durability::Sync).unwrap();
    assert!(!s.durable_on_return());
    s.create_study(spec(), String::new(), 1, 0).unwrap();
    s.sync().unwrap();
    let p = SledStorage::open(tempfile::tempdir().unwrap().path(), Durability::Process).unwrap();
    assert!(p.durable_on_return());
}

/// Log appends are in the redo log like every other verb: what `kill -9`
/// leaves has every appended chunk, and a reopened store goes on from there.
#[test]
fn sled_keeps_every_returned_log_chunk_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), Durability::Process).unwrap();
    let st = s.create_study(spec(), "logs".into(), 5, 0).unwrap();
    let t = s
        .create_trial(st.id, params(0.5), Placement::default(), 0)
        .unwrap();
    s.claim_trial(st.id, &w("a"), "cpu:0", 1).unwrap();
    let mut stream = String::new();
    for i in 0..300 {
        let chunk = format!("line {i} ünïcode\n");
        s.append_log(t.id, 1, stream.len() as u64, &chunk, 2048)
            .unwrap();
        stream.push_str(&chunk);
    }
    let before = s.trial_log(t.id, 0).unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    let r = SledStorage::open(copy.path(), Durability::Process).unwrap();
    assert_eq!(r.trial_log(t.id, 0).unwrap(), before);
    // The header came back too: a retried chunk is still a duplicate.
    r.append_log(t.id, 1, 0, "line 0 ünïcode\n", 2048).unwrap();
    assert_eq!(r.trial_log(t.id, 0).unwrap(), before);
    r.append_log(t.id, 1, stream.len() as u64, "end\n", 2048)
        .unwrap();
    let after = r.trial_log(t.id, before.total).unwrap();
    assert_eq!((after.text.as_str(), after.start), ("end\n", before.total));
    drop(s);
}
