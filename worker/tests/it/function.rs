//! The test functions' maths and the `function` trainer's segments.

use crate::{TestReporter, job_with, resumed, with_budget};
use hpo_proto::ParamValue::{self, Categorical, Float, Int};
use hpo_worker::functions::{self, NAMES, TestFunction};
use hpo_worker::trainer::{FunctionTrainer, TrainEnd, TrainError, Trainer, TrialJob};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn function_job(
    function: &str,
    epochs: u32,
    seed: u64,
    x: &[f64],
    extra: &[(&str, ParamValue)],
) -> TrialJob {
    let names: Vec<String> = (1..=x.len()).map(|i| format!("x{i}")).collect();
    let params: Vec<(&str, ParamValue)> = names
        .iter()
        .zip(x)
        .map(|(n, v)| (n.as_str(), Float(*v)))
        .collect();
    let mut settings = vec![("function", Categorical(function.to_string()))];
    settings.extend(extra.iter().cloned());
    let mut job = job_with("", epochs, seed, &params, &settings);
    job.assignment.trainer.kind = "function".to_string();
    job.assignment.metric = "value".to_string();
    job
}

fn invalid(job: &TrialJob) -> String {
    let mut r = TestReporter::default();
    let err = FunctionTrainer.train(job, &mut r).unwrap_err();
    assert!(r.reports.is_empty(), "reported before failing: {err}");
    match err {
        TrainError::Invalid(m) => m,
        other => panic!("expected an invalid setting, got {other}"),
    }
}

#[test]
fn function_names_match_the_catalogue() {
    let names: Vec<&str> = TestFunction::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(names, NAMES);
    let info = hpo_proto::trainers::lookup("function").unwrap();
    assert!(info.open_numeric && !info.needs_dataset);
    for f in TestFunction::ALL {
        assert_eq!(TestFunction::parse(f.name()), Some(f));
        assert_eq!(f.domain().len(), f.dim(), "{f:?}");
        assert_eq!(functions::domain(f.name()), f.domain());
        assert_eq!(functions::optimum(f.name()), f.optimum());
        // The catalogue's about text states each one's domain.
        assert!(info.about.contains(f.name()), "{f:?}");
    }
    assert!(functions::domain("nope").is_empty());
    assert!(functions::optimum("nope").is_nan());
}

#[test]
fn function_published_minimizers_reach_the_published_minimum() {
    let published = [
        ("branin", 0.397887),
        ("hartmann3", -3.86278),
        ("hartmann6", -3.32237),
        ("rosenbrock4", 0.0),
        ("ackley5", 0.0),
        ("levy4", 0.0),
    ];
    for (name, minimum) in published {
        let f = TestFunction::parse(name).unwrap();
        assert!(
            (f.optimum() - minimum).abs() <= 1e-5,
            "{name}: optimum {} vs published {minimum}",
            f.optimum()
        );
        for x in f.minimizers() {
            assert_eq!(x.len(), f.dim());
            let (lo, hi): (Vec<f64>, Vec<f64>) = f.domain().into_iter().unzip();
            assert!(
                x.iter()
                    .zip(&lo)
                    .zip(&hi)
                    .all(|((v, l), h)| l <= v && v <= h)
            );
            let v = f.eval(&x);
            assert!(
                (v - minimum).abs() <= 1e-4 * minimum.abs().max(1.0) / 10.0,
                "{name} at {x:?}: {v} vs {minimum}"
            );
            // Not below the stated optimum, and within 1e-6 of it.
            assert!(v >= f.optimum() - 1e-9, "{name} at {x:?}: {v}");
            assert!(v - f.optimum() <= 1e-6, "{name} at {x:?}: {v}");
        }
    }
}

#[test]
fn function_exact_minima_and_known_values() {
    use std::f64::consts::PI;
    // Branin's minimum is s·t = 10/(8π) exactly, where the square is zero.
    assert!((functions::branin(PI, 2.275) - 10.0 / (8.0 * PI)).abs() < 1e-12);
    assert!((functions::branin(-PI, 12.275) - 10.0 / (8.0 * PI)).abs() < 1e-12);
    // Hand-checked points: Branin at the origin is (−6)² + 10(1 − t) + 10.
    let t = 1.0 / (8.0 * PI);
    assert!((functions::branin(0.0, 0.0) - (36.0 + 10.0 * (1.0 - t) + 10.0)).abs() < 1e-12);
    // Rosenbrock at the origin: (d − 1) terms of (0 − 1)².
    assert_eq!(functions::rosenbrock(&[0.0; 4]), 3.0);
    assert_eq!(functions::rosenbrock(&[1.0, 2.0]), 100.0);
    // Ackley at (1, …, 1): −20·e^−0.2 − e^cos(2π) + 20 + e = 20(1 − e^−0.2).
    let ones = functions::ackley(&[1.0; 5]);
    assert!(
        (ones - 20.0 * (1.0 - (-0.2f64).exp())).abs() < 1e-12,
        "{ones}"
    );
    assert_eq!(functions::ackley(&[0.0; 5]), 0.0);
    // Levy at 1 is 0; at x = −3 (w = 0) each term is known in closed form.
    assert!(functions::levy(&[1.0; 4]).abs() < 1e-20);
    let w0 = functions::levy(&[-3.0; 4]);
    let expected = 3.0 * (1.0 + 10.0 * 1f64.sin().powi(2)) + 1.0;
    assert!((w0 - expected).abs() < 1e-12, "{w0} vs {expected}");
    // Hartmann far from every P row: each term vanishes.
    assert!(functions::hartmann3([100.0; 3]).abs() < 1e-300);
    assert!(functions::hartmann6([100.0; 6]).abs() < 1e-300);
    // At a P row with the largest α (3.2) the exponent of that term is 0.
    let row4 = [0.0381, 0.5743, 0.8828];
    assert!(
        functions::hartmann3(row4) < -3.2,
        "{}",
        functions::hartmann3(row4)
    );
}

/// A central-difference gradient.
fn gradient(f: TestFunction, x: &[f64]) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[i] += h;
            down[i] -= h;
            (f.eval(&up) - f.eval(&down)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn function_minimizers_are_stationary_points() {
    // A wrong coefficient would move the minimum off the published point; the
    // published points have about six significant digits, so the gradient
    // there is small but not zero.
    for f in TestFunction::ALL {
        // Ackley has a kink at its minimum; its value there is checked above.
        if f == TestFunction::Ackley5 {
            continue;
        }
        for x in f.minimizers() {
            let g = gradient(f, &x);
            let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(norm < 1e-3, "{f:?} at {x:?}: gradient {g:?}");
        }
    }
}

/// A few thousand steps of a simple compass search from `x`, kept in `box_`.
fn compass_search(f: TestFunction, mut x: Vec<f64>, box_: &[(f64, f64)]) -> (Vec<f64>, f64) {
    let mut best = f.eval(&x);
    let mut step: Vec<f64> = box_.iter().map(|(l, h)| (h - l) / 10.0).collect();
    for _ in 0..20_000 {
        let mut improved = false;
        for i in 0..x.len() {
            for sign in [1.0, -1.0] {
                let mut y = x.clone();
                y[i] = (y[i] + sign * step[i]).clamp(box_[i].0, box_[i].1);
                let v = f.eval(&y);
                if v < best {
                    (x, best, improved) = (y, v, true);
                }
            }
        }
        if !improved {
            step.iter_mut().for_each(|s| *s /= 2.0);
            if step.iter().all(|s| *s < 1e-10) {
                break;
            }
        }
    }
    (x, best)
}

#[test]
fn function_local_search_finds_nothing_below_the_minimum() {
    let mut rng = StdRng::seed_from_u64(11);
    for f in [
        TestFunction::Branin,
        TestFunction::Hartmann3,
        TestFunction::Hartmann6,
    ] {
        let domain = f.domain();
        let mut lowest = f64::INFINITY;
        for _ in 0..40 {
            let x0: Vec<f64> = domain.iter().map(|(l, h)| rng.gen_range(*l..=*h)).collect();
            let (_, v) = compass_search(f, x0, &domain);
            assert!(v >= f.optimum() - 1e-9, "{f:?}: {v} below {}", f.optimum());
            lowest = lowest.min(v);
        }
        assert!(
            lowest - f.optimum() < 1e-6,
            "{f:?}: best local minimum {lowest}, optimum {}",
            f.optimum()
        );
    }
    // From next to the published minimiser the search ends on it.
    for f in [TestFunction::Hartmann3, TestFunction::Hartmann6] {
        let published = &f.minimizers()[0];
        let (x, v) = compass_search(f, published.clone(), &f.domain());
        assert!((v - f.optimum()).abs() < 1e-9, "{f:?}: {v}");
        for (a, b) in x.iter().zip(published) {
            assert!((a - b).abs() < 1e-4, "{f:?}: {x:?} vs {published:?}");
        }
    }
}

#[test]
fn function_random_points_are_never_below_the_minimum() {
    for f in TestFunction::ALL {
        let mut rng = StdRng::seed_from_u64(7);
        let domain = f.domain();
        for _ in 0..10_000 {
            let x: Vec<f64> = domain.iter().map(|(l, h)| rng.gen_range(*l..=*h)).collect();
            let v = f.eval(&x);
            assert!(v.is_finite(), "{f:?} at {x:?}: {v}");
            assert!(v >= f.optimum() - 1e-9, "{f:?} at {x:?}: {v}");
        }
    }
}

#[test]
fn function_trainer_reports_value_and_regret_each_step() {
    let x = [1.0, 2.0];
    let job = function_job("branin", 3, 5, &x, &[]);
    let mut r = TestReporter::default();
    assert_eq!(
        FunctionTrainer.train(&job, &mut r).unwrap(),
        TrainEnd::Finished
    );
    assert_eq!(r.steps(), [1, 2, 3]);
    let f = functions::branin(1.0, 2.0);
    for values in r.values() {
        assert_eq!(values.len(), 2, "{values:?}");
        assert_eq!(values["value"], f);
        assert!((values["regret"] - (f - functions::optimum("branin"))).abs() < 1e-12);
    }

    // One step by default, at the optimum: regret ~0.
    let job = function_job(
        "hartmann6",
        1,
        5,
        &TestFunction::Hartmann6.minimizers()[0],
        &[],
    );
    let mut r = TestReporter::default();
    assert_eq!(
        FunctionTrainer.train(&job, &mut r).unwrap(),
        TrainEnd::Finished
    );
    assert_eq!(r.steps(), [1]);
    assert!(r.last("regret") >= 0.0 && r.last("regret") < 1e-6);

    // Integer parameters (an int-typed search space) are read as numbers, and
    // an input may be fixed as a setting instead of searched.
    let mut job = function_job("rosenbrock4", 1, 5, &[1.0, 1.0, 1.0], &[]);
    job.assignment.params.insert("x3".to_string(), Int(1));
    job.assignment
        .trainer
        .settings
        .insert("x4".to_string(), Float(1.0));
    let mut r = TestReporter::default();
    FunctionTrainer.train(&job, &mut r).unwrap();
    assert_eq!(r.last("value"), 0.0);
}

#[test]
fn function_trainer_offset_decays_to_the_value() {
    let x = [0.5, 0.5, 0.5];
    let job = function_job("hartmann3", 4, 5, &x, &[("offset", Float(2.0))]);
    let mut r = TestReporter::default();
    FunctionTrainer.train(&job, &mut r).unwrap();
    let f = functions::hartmann3([0.5; 3]);
    let values: Vec<f64> = r.values().iter().map(|v| v["value"]).collect();
    let expected = [f + 1.5, f + 1.0, f + 0.5, f];
    for (v, e) in values.iter().zip(expected) {
        assert!((v - e).abs() < 1e-12, "{values:?}");
    }
    // The regret is the configuration's, the same every step.
    for v in r.values() {
        assert!((v["regret"] - (f - functions::optimum("hartmann3"))).abs() < 1e-12);
    }
}

#[test]
fn function_trainer_pause_then_resume_matches_an_uninterrupted_run() {
    let job = function_job(
        "levy4",
        6,
        9,
        &[0.3, -2.0, 4.0, 7.5],
        &[("noise", Float(0.5)), ("offset", Float(1.0))],
    );
    crate::pause_then_resume_matches_an_uninterrupted_run(&FunctionTrainer, &job);
}

#[test]
fn function_trainer_budget_below_the_maximum_ends_paused_at_the_budget() {
    let job = function_job("ackley5", 9, 1, &[0.1, 0.2, 0.3, 0.4, 0.5], &[]);
    let mut first = TestReporter::default();
    let TrainEnd::Paused { step, checkpoint } = FunctionTrainer
        .train(&with_budget(&job, 3), &mut first)
        .unwrap()
    else {
        panic!("expected a pause at the budget");
    };
    assert_eq!((step, first.steps()), (3, vec![1, 2, 3]));
    let mut second = TestReporter::default();
    let end = FunctionTrainer
        .train(&resumed(&job, 3, &checkpoint, 9), &mut second)
        .unwrap();
    assert_eq!(
        (end, second.steps()),
        (TrainEnd::Finished, vec![4, 5, 6, 7, 8, 9])
    );
}

#[test]
fn function_trainer_stops_and_saves_the_final_model() {
    let job = function_job("branin", 5, 1, &[0.0, 0.0], &[]);
    let mut r = TestReporter {
        stop_at: Some(2),
        ..Default::default()
    };
    assert_eq!(
        FunctionTrainer.train(&job, &mut r).unwrap(),
        TrainEnd::Stopped
    );
    assert_eq!(r.steps(), [1, 2]);
    let mut r = TestReporter {
        stop_now: true,
        ..Default::default()
    };
    assert_eq!(
        FunctionTrainer.train(&job, &mut r).unwrap(),
        TrainEnd::Stopped
    );
    assert!(r.reports.is_empty());

    let mut job = function_job("branin", 1, 1, &[0.0, 0.0], &[]);
    job.assignment.save_final = true;
    let mut r = TestReporter::default();
    let TrainEnd::FinishedSaved { checkpoint } = FunctionTrainer.train(&job, &mut r).unwrap()
    else {
        panic!("expected the final model");
    };
    let mut again = TestReporter::default();
    let end = FunctionTrainer
        .train(&resumed(&job, 1, &checkpoint, 1), &mut again)
        .unwrap();
    assert!(matches!(end, TrainEnd::FinishedSaved { .. }), "{end:?}");
    assert!(again.steps().is_empty());
}

#[test]
fn function_trainer_refuses_a_corrupt_or_mismatched_checkpoint() {
    let job = function_job("branin", 6, 1, &[0.0, 0.0], &[]);
    let cases: [(&[u8], &str); 3] = [
        (b"simulated step 2", "not one of the function trainer"),
        (b"function step 3", "of step 3"),
        (b"", "not one of the function trainer"),
    ];
    for (bytes, expected) in cases {
        let m = invalid(&resumed(&job, 2, bytes, 6));
        assert!(m.contains(expected), "{bytes:?}: {m}");
    }
    let mut missing = resumed(&job, 2, b"function step 2", 6);
    missing.resume = None;
    assert!(invalid(&missing).contains("needs the checkpoint"));
}

#[test]
fn function_trainer_names_a_missing_parameter_and_the_dimension() {
    let m = invalid(&function_job("hartmann6", 1, 1, &[0.5; 5], &[]));
    assert!(m.contains("`x6`") && m.contains("6 dimensions"), "{m}");
    let m = invalid(&function_job("branin", 1, 1, &[], &[]));
    assert!(m.contains("`x1`") && m.contains("2 dimensions"), "{m}");
    // An input too many, or a misspelt one, is an error too.
    let m = invalid(&function_job("branin", 1, 1, &[0.0, 0.0, 0.0], &[]));
    assert!(m.contains("`x3`") && m.contains("x1..x2"), "{m}");
    let mut job = function_job("branin", 1, 1, &[0.0, 0.0], &[]);
    job.assignment.params.insert("x01".to_string(), Float(0.0));
    assert!(invalid(&job).contains("`x01`"));
    // A non-numeric input.
    let mut job = function_job("branin", 1, 1, &[0.0], &[]);
    job.assignment
        .params
        .insert("x2".to_string(), Categorical("a".to_string()));
    assert!(invalid(&job).contains("`x2` must be a number"));
}

#[test]
fn function_trainer_refuses_an_unknown_or_missing_function() {
    let m = invalid(&function_job("nope", 1, 1, &[0.0, 0.0], &[]));
    assert!(m.contains("\"nope\""), "{m}");
    for name in NAMES {
        assert!(m.contains(name), "{m}");
    }
    let mut job = function_job("branin", 1, 1, &[0.0, 0.0], &[]);
    job.assignment.trainer.settings.remove("function");
    let m = invalid(&job);
    assert!(m.contains("`function`") && m.contains("branin"), "{m}");
    let m = invalid(&function_job(
        "branin",
        1,
        1,
        &[0.0, 0.0],
        &[("noise", Float(-1.0))],
    ));
    assert!(m.contains("`noise` must be >= 0"), "{m}");
    // Data fractions are not a resource it has.
    let mut job = function_job("branin", 1, 1, &[0.0, 0.0], &[]);
    job.assignment.resource = hpo_proto::Resource::DataFraction;
    assert!(invalid(&job).contains("data_fraction"));
}

#[test]
fn function_trainer_noise_is_deterministic_per_seed() {
    let x = [2.0, 3.0];
    let run = |seed: u64, noise: f64| -> Vec<f64> {
        let job = function_job("branin", 20, seed, &x, &[("noise", Float(noise))]);
        let mut r = TestReporter::default();
        FunctionTrainer.train(&job, &mut r).unwrap();
        r.values().iter().map(|v| v["value"]).collect()
    };
    let f = functions::branin(2.0, 3.0);
    let a = run(3, 1.0);
    assert_eq!(a, run(3, 1.0));
    assert_ne!(a, run(4, 1.0));
    // Steps draw different noise, of about the standard deviation asked for.
    let deviations: Vec<f64> = a.iter().map(|v| v - f).collect();
    assert!(
        deviations.windows(2).all(|w| w[0] != w[1]),
        "{deviations:?}"
    );
    assert!(deviations.iter().all(|d| d.abs() < 6.0), "{deviations:?}");
    // Scaled with `noise`, and none without it.
    let b: Vec<f64> = run(3, 2.0).iter().map(|v| v - f).collect();
    for (da, db) in deviations.iter().zip(&b) {
        assert!((2.0 * da - db).abs() < 1e-9);
    }
    assert!(run(3, 0.0).iter().all(|v| *v == f));
    // The draws are standard normal: mean ~0 and variance ~1 over many seeds.
    let draws: Vec<f64> = (0..4000).map(|s| run(s, 1.0)[0] - f).collect();
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
    assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "{mean} {var}");
}
