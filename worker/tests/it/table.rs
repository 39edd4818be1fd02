//! Tabular learning curves: the `table` module and the `table` trainer, on
//! a small hand-written table and (with `HPO_TEST_DATA`) on LCBench.

use crate::{TestReporter, job_with, resumed, with_budget};
use hpo_proto::ParamValue::{self, Categorical, Float, Int};
use hpo_proto::{Direction, Params};
use hpo_worker::table::{Table, TableError};
use hpo_worker::trainer::{TableTrainer, TrainEnd, TrainError, Trainer, TrialJob};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Ids out of file order, and ids 3 and 1 with the same parameters (ties go
/// to the lower id).
const CONFIGS: &str = "config_id,lr,layers
0,0.001,1
3,0.01,2
1,0.01,2
2,0.1,3
";

/// Config 0's cumulative time dips at step 3 (3.0 → 2.5); rows of
/// different configurations interleave; a blank line is skipped.
const CURVES: &str = "config_id,step,time,acc,loss
0,1,1.0,0.5,2.0
0,2,3.0,0.6,1.5
1,1,2.0,0.7,1.0
0,3,2.5,0.65,1.4

0,4,4.0,0.8,1.0
1,2,4.0,0.75,0.9
1,3,6.0,0.9,0.5
1,4,8.0,0.85,0.6
3,1,1.0,0.1,3.0
3,2,2.0,0.2,2.5
3,3,3.0,0.3,2.4
3,4,4.0,0.4,2.3
2,1,1.0,0.6,1.1
2,2,2.0,0.6,1.0
2,3,3.0,0.6,0.9
2,4,4.0,0.95,0.4
";

/// Writes the small table into `dir`: configs.csv, curves.csv and a gzip
/// copy, curves.csv.gz.
fn small_table(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let configs = dir.join("configs.csv");
    let curves = dir.join("curves.csv");
    let gz = dir.join("curves.csv.gz");
    std::fs::write(&configs, CONFIGS).unwrap();
    std::fs::write(&curves, CURVES).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    encoder.write_all(CURVES.as_bytes()).unwrap();
    encoder.finish().unwrap();
    (configs, curves, gz)
}

fn params(kv: &[(&str, ParamValue)]) -> Params {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn table_reads_plain_and_gzip_curves_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, gz) = small_table(dir.path());
    let table = Table::load(&configs, &curves).unwrap();
    let zipped = Table::load(&configs, &gz).unwrap();
    assert_eq!(table.len(), 4);
    assert_eq!(table.param_names(), ["lr", "layers"]);
    assert_eq!(table.metric_names(), ["time", "acc", "loss"]);
    assert_eq!(table.step_column(), "step");
    for c in 0..table.len() {
        assert_eq!(table.steps(c), 4);
        for step in 1..=4 {
            assert_eq!(table.metrics(c, step), zipped.metrics(c, step));
        }
    }
    // Indices follow the configs file; ids are the file's.
    let ids: Vec<i64> = (0..4).map(|c| table.config_id(c)).collect();
    assert_eq!(ids, [0, 3, 1, 2]);
    assert_eq!(table.index_of(1), Some(2));
    assert_eq!(table.param_values(3), [0.1, 3.0]);

    let id1 = table.index_of(1).unwrap();
    let m = table.metrics(id1, 3).unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!((m["time"], m["acc"], m["loss"]), (6.0, 0.9, 0.5));
    assert_eq!(
        table.metric(id1, 3, table.metric_index("acc").unwrap()),
        Some(0.9)
    );
    assert_eq!(table.metrics(id1, 0), None);
    assert_eq!(table.metrics(id1, 5), None);
    assert_eq!(table.metrics(99, 1), None);
    assert_eq!(table.steps(99), 0);
}

#[test]
fn table_step_cost_charges_only_time_past_the_running_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, _) = small_table(dir.path());
    let table = Table::load(&configs, &curves).unwrap();
    // Config 0: cumulative 1, 3, 2.5 (a dip), 4.
    let costs: Vec<f64> = (1..=4).map(|s| table.step_cost(0, s)).collect();
    assert_eq!(costs, [1.0, 2.0, 0.0, 1.0]);
    assert_eq!(costs.iter().sum::<f64>(), 4.0);
    assert_eq!(table.step_cost(0, 5), 0.0);
    let time = table.metric_index("time").unwrap();
    assert_eq!(table.step_cost_by(time, 2, 2), 2.0);
}

#[test]
fn table_best_final_is_the_best_last_step() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, _) = small_table(dir.path());
    let table = Table::load(&configs, &curves).unwrap();
    // Final acc: 0.8, 0.4, 0.85, 0.95 (config 1 peaks at 0.9 before its end).
    assert_eq!(table.best_final("acc", Direction::Maximize), Some(0.95));
    assert_eq!(table.best_final("loss", Direction::Minimize), Some(0.4));
    assert_eq!(table.best_final("nope", Direction::Minimize), None);
}

#[test]
fn table_nearest_uses_quantiles_and_breaks_ties_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, _) = small_table(dir.path());
    let table = Table::load(&configs, &curves).unwrap();
    let nearest = |kv: &[(&str, ParamValue)]| table.config_id(table.nearest(&params(kv)).unwrap());
    // Each configuration's own values; ids 1 and 3 tie, 1 wins.
    assert_eq!(nearest(&[("lr", Float(0.001)), ("layers", Int(1))]), 0);
    assert_eq!(nearest(&[("lr", Float(0.01)), ("layers", Int(2))]), 1);
    assert_eq!(nearest(&[("lr", Float(0.1)), ("layers", Float(3.0))]), 2);
    // Outside the table's range: clamped to its ends.
    assert_eq!(nearest(&[("lr", Float(5.0)), ("layers", Int(9))]), 2);
    assert_eq!(nearest(&[("lr", Float(1e-9)), ("layers", Int(-3))]), 0);
    // Quantile space, not raw values. (lr 0.1, layers 2.4) is at quantiles
    // (1, 0.7): config 2 at (1, 1) is nearer than config 1 at (0.5, 0.5).
    // In raw units, layers' gap of 0.6 would outweigh lr's 0.09 and pick 1.
    assert_eq!(nearest(&[("lr", Float(0.1)), ("layers", Float(2.4))]), 2);
    // Between two distinct values the quantile is interpolated: lr 0.04 is
    // at 0.67, layers 2 at 0.5, so config 1 (0.5, 0.5) is nearest.
    assert_eq!(nearest(&[("lr", Float(0.04)), ("layers", Int(2))]), 1);
    // Extra parameters are ignored.
    assert_eq!(
        nearest(&[
            ("lr", Float(0.1)),
            ("layers", Int(3)),
            ("other", Categorical("x".into()))
        ]),
        2
    );

    let err = table.nearest(&params(&[("lr", Float(0.1))])).unwrap_err();
    assert!(
        matches!(&err, TableError::MissingParam(p) if p == "layers"),
        "{err}"
    );
    assert!(err.to_string().contains("`layers`"), "{err}");
    let err = table
        .nearest(&params(&[
            ("lr", Categorical("big".into())),
            ("layers", Int(1)),
        ]))
        .unwrap_err();
    assert!(
        matches!(&err, TableError::NotNumeric { name, .. } if name == "lr"),
        "{err}"
    );
}

#[test]
fn table_format_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, _) = small_table(dir.path());
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cases = [
        (
            write("a.csv", "config_id,epochs,acc\n0,1,0.5\n"),
            "curves",
            "a.csv:1: needs a step column",
        ),
        (
            write("b.csv", "config_id,step,acc\n0,1,0.5\n0,2,high\n"),
            "curves",
            "b.csv:3: column `acc` must be numeric, got `high`",
        ),
        (
            write("c.csv", "config_id,step,acc\n0,1,0.5\n0,3,0.6\n"),
            "curves",
            "c.csv:3: config 0: step 3 where step 2 was expected",
        ),
        (
            write("d.csv", "config_id,step,acc\n7,1,0.5\n"),
            "curves",
            "d.csv:2: config id 7 is not in",
        ),
        (
            write("e.csv", "config_id,step,acc\n0,1\n"),
            "curves",
            "e.csv:2: 2 fields where the header has 3",
        ),
        (
            write("f.csv", "config_id,lr,layers\n0,0.1,deep\n"),
            "configs",
            "f.csv:2: column `layers` must be numeric, got `deep`",
        ),
        (
            write("h.csv", "config_id,lr,layers\n0,0.1,1\n1,nan,2\n"),
            "configs",
            "h.csv:3: column `lr` must be finite, got `nan`",
        ),
        (
            write("g.csv", "config_id,lr\n0,0.1\n0,0.2\n"),
            "configs",
            "g.csv:3: config id 0 appears twice",
        ),
    ];
    for (path, which, expected) in cases {
        let err = if which == "curves" {
            Table::load(&configs, &path).unwrap_err()
        } else {
            Table::load(&path, &curves).unwrap_err()
        };
        assert!(matches!(err, TableError::Format { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err} / {expected}");
    }
    let err = Table::load(dir.path().join("missing.csv"), &curves).unwrap_err();
    assert!(matches!(err, TableError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.csv"), "{err}");
}

#[test]
fn table_cache_loads_a_pair_once() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, gz) = small_table(dir.path());
    let a = Table::cached(&configs, &curves).unwrap();
    let b = Table::cached(&configs, &curves).unwrap();
    let c = Table::cached(&configs, &gz).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert!(!std::sync::Arc::ptr_eq(&a, &c));
}

/// A `table` trial on `curves` with the lr/layers of the small table.
fn table_job(
    configs: &Path,
    curves: &Path,
    epochs: u32,
    params: &[(&str, ParamValue)],
    extra: &[(&str, ParamValue)],
) -> TrialJob {
    let mut settings = vec![("configs", Categorical(configs.display().to_string()))];
    settings.extend(extra.iter().cloned());
    let mut job = job_with(&curves.display().to_string(), epochs, 1, params, &settings);
    job.assignment.trainer.kind = "table".to_string();
    job
}

#[test]
fn table_trainer_replays_the_nearest_curve() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, _, gz) = small_table(dir.path());
    let table = Table::load(&configs, &gz).unwrap();
    // Near config 2 (lr 0.1, layers 3), with layers pinned as a setting.
    let job = table_job(
        &configs,
        &gz,
        4,
        &[("lr", Float(0.08))],
        &[("layers", Int(3))],
    );
    let mut reporter = TestReporter::default();
    assert_eq!(
        TableTrainer.train(&job, &mut reporter).unwrap(),
        TrainEnd::Finished
    );
    let c = table.index_of(2).unwrap();
    let expected: Vec<_> = (1..=4).map(|s| (s, table.metrics(c, s).unwrap())).collect();
    assert_eq!(reporter.history(), expected);
}

#[test]
fn table_trainer_pauses_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, _) = small_table(dir.path());
    let job = table_job(
        &configs,
        &curves,
        4,
        &[("lr", Float(0.01)), ("layers", Int(2))],
        &[],
    );
    let mut whole = TestReporter::default();
    TableTrainer.train(&job, &mut whole).unwrap();

    let mut first = TestReporter {
        pause_at: Some(1),
        ..Default::default()
    };
    let TrainEnd::Paused { step, checkpoint } = TableTrainer.train(&job, &mut first).unwrap()
    else {
        panic!("expected a pause");
    };
    assert_eq!(step, 1);
    let mut second = TestReporter::default();
    let TrainEnd::Paused {
        step,
        checkpoint: checkpoint2,
    } = TableTrainer
        .train(&resumed(&job, 1, &checkpoint, 3), &mut second)
        .unwrap()
    else {
        panic!("expected a pause at the budget");
    };
    assert_eq!(step, 3);
    let mut third = TestReporter::default();
    let end = TableTrainer
        .train(&resumed(&job, 3, &checkpoint2, 4), &mut third)
        .unwrap();
    assert_eq!(end, TrainEnd::Finished);
    let mut pieces = first.history();
    pieces.extend(second.history());
    pieces.extend(third.history());
    assert_eq!(pieces, whole.history());

    // A checkpoint of another configuration, of another step, or garbage.
    let other = table_job(
        &configs,
        &curves,
        4,
        &[("lr", Float(0.1)), ("layers", Int(3))],
        &[],
    );
    for (job, step, bytes, expected) in [
        (&other, 1, checkpoint.as_slice(), "nearest configuration"),
        (&job, 2, checkpoint.as_slice(), "of step 1"),
        (&job, 1, b"junk".as_slice(), "not one of the table trainer"),
    ] {
        let err = TableTrainer
            .train(&resumed(job, step, bytes, 4), &mut TestReporter::default())
            .unwrap_err();
        assert!(
            matches!(&err, TrainError::Invalid(m) if m.contains(expected)),
            "{err} / {expected}"
        );
    }
}

#[test]
fn table_trainer_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, _) = small_table(dir.path());
    let near = [("lr", Float(0.01)), ("layers", Int(2))];
    let run = |job: TrialJob| {
        let mut reporter = TestReporter::default();
        let err = TableTrainer.train(&job, &mut reporter).unwrap_err();
        assert!(reporter.reports.is_empty(), "{err}");
        err
    };
    // Longer than the table's curves.
    let err = run(table_job(&configs, &curves, 6, &near, &[]));
    assert!(
        matches!(&err, TrainError::Invalid(m) if m.contains("4 steps") && m.contains("6")),
        "{err}"
    );
    // A configs column the trial lacks.
    let err = run(table_job(&configs, &curves, 4, &[("lr", Float(0.01))], &[]));
    assert!(
        matches!(&err, TrainError::Invalid(m) if m.contains("`layers`")),
        "{err}"
    );
    // No configs setting; a missing file; a time column that is not there.
    let mut job = table_job(&configs, &curves, 4, &near, &[]);
    job.assignment.trainer.settings.remove("configs");
    let err = run(job);
    assert!(err.to_string().contains("configs"), "{err}");
    let err = run(table_job(
        &configs,
        &dir.path().join("nope.csv"),
        4,
        &near,
        &[],
    ));
    assert!(err.to_string().contains("nope.csv"), "{err}");
    let err = run(table_job(
        &configs,
        &curves,
        4,
        &near,
        &[
            ("time_scale", Float(1.0)),
            ("time_column", Categorical("secs".into())),
        ],
    ));
    assert!(err.to_string().contains("`secs`"), "{err}");
    let err = run(table_job(
        &configs,
        &curves,
        4,
        &near,
        &[("time_scale", Float(-1.0))],
    ));
    assert!(err.to_string().contains("time_scale"), "{err}");
}

#[test]
fn table_trainer_sleeps_the_scaled_step_cost() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves, _) = small_table(dir.path());
    // Config 0: costs 1, 2, 0, 1 seconds; at 0.03 s per second, 120 ms.
    let job = table_job(
        &configs,
        &curves,
        4,
        &[("lr", Float(0.001)), ("layers", Int(1))],
        &[("time_scale", Float(0.03))],
    );
    let mut reporter = TestReporter::default();
    let start = Instant::now();
    TableTrainer.train(&job, &mut reporter).unwrap();
    let gaps: Vec<f64> = reporter
        .reports
        .iter()
        .scan(start, |previous, (_, _, at)| {
            let gap = at.duration_since(*previous).as_secs_f64();
            *previous = *at;
            Some(gap)
        })
        .collect();
    let expected = [0.03, 0.06, 0.0, 0.03];
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(*gap >= want && *gap < want + 0.5, "{gaps:?}");
    }
    // A stop request cuts a long sleep short.
    let slow = table_job(
        &configs,
        &curves,
        4,
        &[("lr", Float(0.001)), ("layers", Int(1))],
        &[("time_scale", Float(100.0))],
    );
    let mut reporter = TestReporter {
        stop_after_polls: Some(3),
        ..Default::default()
    };
    let start = Instant::now();
    assert_eq!(
        TableTrainer.train(&slow, &mut reporter).unwrap(),
        TrainEnd::Stopped
    );
    assert!(start.elapsed().as_secs_f64() < 1.0);
}

/// LCBench task 3945, from `$HPO_TEST_DATA/yahpo-lcbench` or the
/// repository's `shared/data` beside the workspace; `None` (and a note on
/// stderr) when neither has it.
fn lcbench() -> Option<(PathBuf, PathBuf)> {
    let mut roots = Vec::new();
    if let Some(root) = std::env::var_os("HPO_TEST_DATA").filter(|v| !v.is_empty()) {
        roots.push(PathBuf::from(root));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let found = roots
        .iter()
        .map(|r| r.join("yahpo-lcbench"))
        .find_map(|dir| {
            let configs = dir.join("configs.csv");
            let curves = dir.join("curves").join("task_3945.csv.gz");
            (configs.is_file() && curves.is_file()).then_some((configs, curves))
        });
    if found.is_none() {
        eprintln!(
            "skipping: LCBench task 3945 not found under {roots:?} (set HPO_TEST_DATA to a folder holding yahpo-lcbench/)"
        );
    }
    found
}

#[test]
fn lcbench_task_3945_loads_and_replays_config_17() {
    let Some((configs, curves)) = lcbench() else {
        return;
    };
    let start = Instant::now();
    let table = Table::load(&configs, &curves).unwrap();
    eprintln!("LCBench task 3945 loaded in {:.1?}", start.elapsed());
    assert_eq!(table.len(), 1000);
    assert_eq!(
        table.param_names(),
        [
            "batch_size",
            "learning_rate",
            "momentum",
            "weight_decay",
            "num_layers",
            "max_units",
            "max_dropout"
        ]
    );
    assert_eq!(table.step_column(), "epoch");
    assert_eq!(table.steps(17), 52);
    // tasks.csv: the best final val_accuracy is 99.631.
    assert_eq!(
        table.best_final("val_accuracy", Direction::Maximize),
        Some(99.631)
    );

    // Config 17's own parameters find config 17.
    let own: Params = table
        .param_names()
        .iter()
        .zip(table.param_values(17))
        .map(|(name, v)| (name.clone(), Float(*v)))
        .collect();
    assert_eq!(table.nearest(&own).unwrap(), 17);
    assert_eq!(table.config_id(17), 17);

    // Replayed: the table's val_accuracy per epoch (`zcat ... | awk -F,
    // '$1==17'`: 34.342, 74.554, 83.487 ... 90.797).
    let params: Vec<(&str, ParamValue)> =
        own.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let job = table_job(&configs, &curves, 52, &params, &[]);
    let mut whole = TestReporter::default();
    assert_eq!(
        TableTrainer.train(&job, &mut whole).unwrap(),
        TrainEnd::Finished
    );
    let accuracy: Vec<f64> = whole.values().iter().map(|v| v["val_accuracy"]).collect();
    assert_eq!(accuracy.len(), 52);
    assert_eq!(accuracy[..3], [34.342, 74.554, 83.487]);
    assert_eq!(accuracy[51], 90.797);
    for (step, values) in whole.history() {
        assert_eq!(Some(values), table.metrics(17, step));
    }
    assert_eq!(whole.values()[0]["time"], 37.74);

    // Paused at epoch 5 and resumed: the same curve.
    let mut first = TestReporter::default();
    let TrainEnd::Paused { step, checkpoint } = TableTrainer
        .train(&with_budget(&job, 5), &mut first)
        .unwrap()
    else {
        panic!("expected a pause at the budget");
    };
    let mut rest = TestReporter::default();
    TableTrainer
        .train(&resumed(&job, step, &checkpoint, 52), &mut rest)
        .unwrap();
    let mut pieces = first.history();
    pieces.extend(rest.history());
    assert_eq!(pieces, whole.history());
}
