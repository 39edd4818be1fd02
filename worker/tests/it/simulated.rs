//! The `simulated` trainer's segments: pause, resume and budgets.

use crate::{TestReporter, job, resumed, with_budget};
use hpo_proto::ParamValue::Float;
use hpo_worker::trainer::{SimulatedTrainer, TrainEnd, TrainError, Trainer, TrialJob};

fn simulated_job(epochs: u32) -> TrialJob {
    job("", epochs, 1, &[("x", Float(0.3)), ("y", Float(0.9))])
}

#[test]
fn simulated_pause_then_resume_matches_an_uninterrupted_run() {
    let job = simulated_job(6);
    crate::pause_then_resume_matches_an_uninterrupted_run(&SimulatedTrainer, &job);
}

#[test]
fn simulated_budget_below_the_maximum_ends_paused_at_the_budget() {
    let job = simulated_job(9);
    let mut first = TestReporter::default();
    let TrainEnd::Paused { step, checkpoint } = SimulatedTrainer
        .train(&with_budget(&job, 3), &mut first)
        .unwrap()
    else {
        panic!("expected a pause at the budget");
    };
    assert_eq!((step, first.steps()), (3, vec![1, 2, 3]));

    // The next rung: 3 → 6, paused again; then 6 → 9, finished.
    let mut second = TestReporter::default();
    let TrainEnd::Paused {
        step,
        checkpoint: second_checkpoint,
    } = SimulatedTrainer
        .train(&resumed(&job, 3, &checkpoint, 6), &mut second)
        .unwrap()
    else {
        panic!("expected a pause at the second budget");
    };
    assert_eq!((step, second.steps()), (6, vec![4, 5, 6]));
    let mut third = TestReporter::default();
    let end = SimulatedTrainer
        .train(&resumed(&job, 6, &second_checkpoint, 9), &mut third)
        .unwrap();
    assert_eq!((end, third.steps()), (TrainEnd::Finished, vec![7, 8, 9]));
}

#[test]
fn simulated_refuses_a_corrupt_or_mismatched_checkpoint() {
    let job = simulated_job(6);
    let cases: [(&[u8], &str); 3] = [
        (b"garbage", "not one of the simulated trainer"),
        (b"simulated step 3", "of step 3"),
        (b"", "not one of the simulated trainer"),
    ];
    for (bytes, expected) in cases {
        let mut reporter = TestReporter::default();
        let err = SimulatedTrainer
            .train(&resumed(&job, 2, bytes, 6), &mut reporter)
            .unwrap_err();
        assert!(
            matches!(&err, TrainError::Invalid(m) if m.contains(expected)),
            "{bytes:?}: {err}"
        );
        assert!(reporter.reports.is_empty());
    }
    // A resume without its bytes.
    let mut missing = resumed(&job, 2, b"simulated step 2", 6);
    missing.resume = None;
    let err = SimulatedTrainer
        .train(&missing, &mut TestReporter::default())
        .unwrap_err();
    assert!(err.to_string().contains("needs the checkpoint"), "{err}");
}

#[test]
fn simulated_final_model_is_a_checkpoint_at_the_last_step() {
    let mut job = simulated_job(3);
    job.assignment.save_final = true;
    let mut r = TestReporter::default();
    let TrainEnd::FinishedSaved { checkpoint } = SimulatedTrainer.train(&job, &mut r).unwrap()
    else {
        panic!("expected the final model");
    };
    assert_eq!(r.steps(), [1, 2, 3]);
    // It is a checkpoint like any other: resuming at the end trains nothing.
    let mut again = TestReporter::default();
    let end = SimulatedTrainer
        .train(&resumed(&job, 3, &checkpoint, 3), &mut again)
        .unwrap();
    assert!(matches!(end, TrainEnd::FinishedSaved { .. }), "{end:?}");
    assert!(again.steps().is_empty());
}
