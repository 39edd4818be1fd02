//! Every sampler: proposals lie in the space and a seed fixes the sequence.
#![allow(clippy::unwrap_used)]

use super::*;
use std::collections::HashSet;

fn spec(algorithm: &str) -> StudySpec {
    StudySpec::parse(
        &format!(
            r#"
name = "s"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "{algorithm}"
max_trials = 24
[trainer]
kind = "simulated"
epochs = 1
[params]
a = {{ type = "float", low = 0.0, high = 1.0, step = 0.5 }}
b = {{ type = "int", low = 1, high = 4 }}
c = ["x", "y"]
"#
        ),
        "s.toml",
    )
    .unwrap()
}

fn run(s: &mut dyn Sampler, n: u32) -> Vec<Params> {
    (0..n).filter_map(|i| s.propose(i, &[])).collect()
}

fn in_space(spec: &StudySpec, p: &Params) -> bool {
    p.len() == spec.params.len()
        && spec
            .params
            .iter()
            .all(|(k, s)| p.get(k).is_some_and(|v| s.contains(v)))
}

#[test]
fn every_sampler_stays_in_the_space_and_is_reproducible() {
    for algo in ["grid", "random", "sobol", "tpe", "gp"] {
        let spec = spec(algo);
        let a = run(&mut *for_study(&spec, 42), 24);
        assert!(!a.is_empty());
        assert!(a.iter().all(|p| in_space(&spec, p)), "{algo}");
        let b = run(&mut *for_study(&spec, 42), 24);
        assert_eq!(a, b, "{algo}: same seed, same sequence");
    }
}

#[test]
fn grid_covers_each_point_exactly_once_then_stops() {
    let spec = spec("grid");
    let mut g = GridSampler::new(&spec);
    assert_eq!(g.size(), 3 * 4 * 2);
    let points = run(&mut g, 100);
    assert_eq!(points.len(), 24);
    let unique: HashSet<String> = points.iter().map(|p| format!("{p:?}")).collect();
    assert_eq!(unique.len(), 24);
}

#[test]
fn random_depends_on_seed_and_trial_number_only() {
    let spec = spec("random");
    let mut a = RandomSampler::new(&spec, 1);
    let mut b = RandomSampler::new(&spec, 2);
    let sa = run(&mut a, 24);
    assert_ne!(sa, run(&mut b, 24));
    // Out of order: trial 5 alone is the same as trial 5 in a sequence.
    assert_eq!(RandomSampler::new(&spec, 1).propose(5, &[]).unwrap(), sa[5]);
}

#[test]
fn enqueued_configurations_come_first_then_the_sampler() {
    for algo in ["random", "sobol", "tpe", "gp"] {
        let text = format!(
            r#"
name = "s"
seed = 4
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "{algo}"
max_trials = 24
enqueue = [{{ b = 3, c = "y" }}, {{ b = 1, c = "x" }}]
[trainer]
kind = "simulated"
epochs = 1
[params]
b = {{ type = "int", low = 1, high = 4 }}
c = ["x", "y"]
"#
        );
        let spec = StudySpec::parse(&text, "s.toml").unwrap();
        let mut s = for_study(&spec, 4);
        let first = s.propose(0, &[]).unwrap();
        assert_eq!(first, spec.search.enqueue[0], "{algo}");
        assert_eq!(s.propose(1, &[]).unwrap(), spec.search.enqueue[1], "{algo}");
        // Then the algorithm's own proposals, inside the space.
        let third = s.propose(2, &[]).unwrap();
        assert!(in_space(&spec, &third), "{algo}");
        let mut plain = spec.clone();
        plain.search.enqueue.clear();
        assert_eq!(
            third,
            for_study(&plain, 4).propose(2, &[]).unwrap(),
            "{algo}: trial 2 is the sampler's trial 2"
        );
    }
}
