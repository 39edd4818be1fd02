//! The GP sampler: its numerics (erfcx, log EI, MLL gradients, the
//! posterior), the proposals' validity and determinism, and its search
//! quality on Branin and on a categorical problem.
#![allow(clippy::unwrap_used)]

use super::acq::{erfc, erfcx, log_h};
use super::kernel::{Layout, Prior, Workspace, fit, neg_log_posterior};
use super::posterior::Posterior;
use super::*;
use hpo_proto::ParamValue;
use std::collections::BTreeMap;

fn spec(params: &str, direction: &str) -> StudySpec {
    StudySpec::parse(
        &format!(
            r#"
name = "g"
[objective]
metric = "loss"
direction = "{direction}"
[search]
algorithm = "gp"
max_trials = 100
[trainer]
kind = "simulated"
epochs = 1
[params]
{params}
"#
        ),
        "g.toml",
    )
    .unwrap()
}

fn float(p: &Params, k: &str) -> f64 {
    match p[k] {
        ParamValue::Float(v) => v,
        ref v => panic!("{k}: {v:?}"),
    }
}

/// Runs `n` sequential trials, each finished before the next is proposed.
fn run(s: &mut GpSampler, n: u32, f: &dyn Fn(&Params) -> f64) -> Vec<TrialView> {
    run_any(s, n, f)
}

fn lcg(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn erfcx_matches_reference_values() {
    // exp(x^2) erfc(x) from an independent implementation (1-ulp erfc).
    let reference = [
        (0.0, 1.0),
        (0.3, 7.345_993_345_676_551e-1),
        (0.5, 6.156_903_441_929_259e-1),
        (1.0, 4.275_835_761_558_07e-1),
        (1.5, 3.215_854_164_543_175e-1),
        (1.99, 2.564_678_367_195_299e-1),
        (2.0, 2.553_956_763_105_057e-1),
        (2.01, 2.543_318_765_608_182e-1),
        (2.5, 2.108_063_640_611_436e-1),
        (3.0, 1.790_011_511_813_899e-1),
        (5.0, 1.107_046_377_330_687e-1),
        (8.0, 6.998_516_620_088_092e-2),
        (17.0, 3.313_049_999_972_553e-2),
        (25.0, 2.254_957_243_264_136e-2),
    ];
    for (x, want) in reference {
        let got = erfcx(x);
        assert!(
            ((got - want) / want).abs() < 1e-12,
            "erfcx({x}) = {got}, want {want}"
        );
    }
    assert!((erfc(1.0) - 1.572_992_070_502_851_3e-1).abs() < 1e-15);
    assert!((erfc(-1.0) - (2.0 - 1.572_992_070_502_851_3e-1)).abs() < 1e-15);
    assert!(((erfc(4.0) - 1.541_725_790_028_002e-8) / 1.541_725_790_028_002e-8).abs() < 1e-12);
}

/// h(z) = phi(z) + z Phi(z), straight from the definition.
fn h_direct(z: f64) -> f64 {
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    pdf + z * 0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

#[test]
fn log_ei_is_finite_far_into_the_tail_and_matches_ei_where_representable() {
    // Where EI is representable the two agree.
    let mut z = -37.0;
    while z <= 6.0 {
        let h = h_direct(z);
        assert!(h > 0.0 && h.is_finite(), "h({z}) = {h}");
        let (lh, ratio) = log_h(z);
        assert!(
            (lh - h.ln()).abs() < 1e-9 * h.ln().abs().max(1.0),
            "z = {z}: log_h {lh} vs ln h {}",
            h.ln()
        );
        // d ln h / dz = Phi / h.
        let phi = 0.5 * erfc(-z / std::f64::consts::SQRT_2);
        assert!(
            (ratio - phi / h).abs() < 1e-7 * (phi / h).abs().max(1.0),
            "z = {z}: ratio {ratio} vs {}",
            phi / h
        );
        z += 0.25;
    }
    // Plain EI underflows to 0 at z = -40; log EI stays finite, smooth and
    // increasing, with the asymptotic form -z^2/2 - ln(2 pi)/2 - 2 ln|z|.
    assert_eq!(h_direct(-40.0), 0.0);
    let mut prev = f64::NEG_INFINITY;
    for z in [
        -1e150, -1e10, -1e5, -1e3, -100.0, -40.0, -25.5, -25.0, -24.5, -10.0,
    ] {
        let (lh, ratio) = log_h(z);
        assert!(lh.is_finite() && ratio.is_finite(), "z = {z}: {lh} {ratio}");
        assert!(lh > prev, "log h not increasing at {z}");
        prev = lh;
        let asym = -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln() - 2.0 * z.abs().ln();
        if z < -1e3 {
            assert!(
                (lh - asym).abs() < 1e-5 * asym.abs(),
                "z = {z}: {lh} vs {asym}"
            );
        }
        if z > -1e6 {
            let e = 1e-6 * z.abs().max(1.0);
            let fd = (log_h(z + e).0 - log_h(z - e).0) / (2.0 * e);
            assert!(
                (fd - ratio).abs() < 1e-5 * ratio.abs().max(1.0),
                "z = {z}: d/dz {ratio} vs {fd}"
            );
        }
    }
    // Continuity across the switch to the asymptotic series.
    let (e, slope) = (1e-9, log_h(-25.0).1);
    let jump = log_h(-25.0 + e).0 - log_h(-25.0 - e).0 - 2.0 * e * slope;
    assert!(jump.abs() < 1e-10, "jump {jump} at -25");
}

/// Two numeric dimensions and a categorical parameter of three choices.
fn mixed_layout() -> Layout {
    Layout {
        dims: 5,
        groups: 3,
        group_of_dim: vec![0, 1, 2, 2, 2],
    }
}

fn mixed_points(n: usize, state: &mut u64) -> (Vec<f64>, Vec<f64>) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for _ in 0..n {
        let a = lcg(state);
        let b = lcg(state);
        let c = (lcg(state) * 3.0) as usize;
        x.extend([a, b, 0.0, 0.0, 0.0]);
        let at = x.len() - 3 + c;
        x[at] = 1.0;
        y.push((3.0 * a).sin() + b * b + 0.5 * c as f64 + 0.1 * lcg(state));
    }
    (x, standardise(&y))
}

#[test]
fn mll_gradient_matches_finite_differences() {
    let layout = mixed_layout();
    let prior = Prior::new(&layout);
    let mut state = 3;
    let (x, y) = mixed_points(30, &mut state);
    let mut ws = Workspace::new(y.len());
    for theta in [
        vec![-1.0, -0.5, 0.3, 0.2, -4.0],
        vec![0.5, -2.0, -1.0, -0.7, -10.0],
        prior.default_theta(),
    ] {
        let mut grad = vec![0.0; theta.len()];
        let f0 = neg_log_posterior(&theta, &x, &y, &layout, &prior, Some(&mut grad), &mut ws);
        assert!(f0.is_finite());
        for i in 0..theta.len() {
            let e = 1e-5;
            let mut tp = theta.clone();
            tp[i] += e;
            let mut tm = theta.clone();
            tm[i] -= e;
            let fp = neg_log_posterior(&tp, &x, &y, &layout, &prior, None, &mut ws);
            let fm = neg_log_posterior(&tm, &x, &y, &layout, &prior, None, &mut ws);
            let fd = (fp - fm) / (2.0 * e);
            assert!(
                (fd - grad[i]).abs() < 1e-5 * fd.abs().max(1.0),
                "theta {theta:?}, component {i}: analytic {} vs finite difference {fd}",
                grad[i]
            );
        }
    }
}

#[test]
fn posterior_mean_interpolates_noiseless_observations() {
    let layout = mixed_layout();
    let mut state = 11;
    let (x, y) = mixed_points(40, &mut state);
    // Length scales 0.3, signal 1, noise at its floor.
    let theta = vec![0.3f64.ln(), 0.3f64.ln(), 0.0, 0.0, kernel::NOISE_FLOOR.ln()];
    let post = Posterior::new(&layout, &theta, &x, &y, &[]).unwrap();
    let preds = post.predict_batch(&x);
    for (i, &(mu, var)) in preds.iter().enumerate() {
        assert!((mu - y[i]).abs() < 1e-3, "row {i}: mean {mu} vs {}", y[i]);
        assert!(var < 1e-3, "row {i}: variance {var}");
    }
    let best = y.iter().copied().fold(f64::INFINITY, f64::min);
    assert!((post.best - best).abs() < 1e-3);
}

#[test]
fn prediction_gradients_match_finite_differences() {
    let layout = mixed_layout();
    let mut state = 5;
    let (x, y) = mixed_points(25, &mut state);
    let pending = vec![0.4, 0.4, 0.0, 1.0, 0.0, 0.45, 0.42, 0.0, 1.0, 0.0];
    let theta = vec![-1.2, -0.8, 0.0, 0.1, -5.0];
    let post = Posterior::new(&layout, &theta, &x, &y, &pending).unwrap();
    let mut s = post.scratch();
    let (mut dmu, mut dvar) = (vec![0.0; 5], vec![0.0; 5]);
    let p = [0.37, 0.52, 0.0, 1.0, 0.0];
    let (mu, var) = post.predict_grad(&p, &mut s, &mut dmu, &mut dvar);
    let batch = post.predict_batch(&p);
    assert!((batch[0].0 - mu).abs() < 1e-10 && (batch[0].1 - var).abs() < 1e-10);
    for j in 0..2 {
        let e = 1e-6;
        let mut pp = p;
        pp[j] += e;
        let mut pm = p;
        pm[j] -= e;
        let (a, b) = (post.predict_batch(&pp)[0], post.predict_batch(&pm)[0]);
        let (fmu, fvar) = ((a.0 - b.0) / (2.0 * e), (a.1 - b.1) / (2.0 * e));
        assert!(
            (fmu - dmu[j]).abs() < 1e-5 * fmu.abs().max(1.0),
            "dmu[{j}] {} vs {fmu}",
            dmu[j]
        );
        assert!(
            (fvar - dvar[j]).abs() < 1e-5 * fvar.abs().max(1.0),
            "dvar[{j}] {} vs {fvar}",
            dvar[j]
        );
    }
}

#[test]
fn lbfgs_minimises_a_boxed_rosenbrock() {
    let f = |x: &[f64], g: &mut [f64]| {
        let (a, b) = (x[0], x[1]);
        g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
        g[1] = 200.0 * (b - a * a);
        (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
    };
    let opt = lbfgs::Options {
        max_iter: 500,
        max_evals: 2000,
        memory: 8,
        pgtol: 1e-10,
        ftol: 0.0,
        first_step: 0.1,
    };
    let m = lbfgs::minimize(f, &[-1.2, 1.0], &[-2.0, -2.0], &[2.0, 2.0], &opt);
    assert!(
        (m.x[0] - 1.0).abs() < 1e-5 && (m.x[1] - 1.0).abs() < 1e-5,
        "{m:?}"
    );
    // With the optimum cut off by the box, the answer sits on the bound.
    let m = lbfgs::minimize(f, &[-1.2, 1.0], &[-2.0, -2.0], &[0.5, 2.0], &opt);
    assert!(
        (m.x[0] - 0.5).abs() < 1e-9 && (m.x[1] - 0.25).abs() < 1e-4,
        "{m:?}"
    );
}

#[test]
fn warm_starts_come_from_the_largest_power_of_two_below_up_to_256() {
    assert_eq!(warm_anchor(8), None);
    assert_eq!(warm_anchor(9), Some(8));
    assert_eq!(warm_anchor(16), Some(8));
    assert_eq!(warm_anchor(17), Some(16));
    assert_eq!(warm_anchor(256), Some(128));
    assert_eq!(warm_anchor(257), Some(256));
    assert_eq!(warm_anchor(1000), Some(256));
}

#[test]
fn a_warm_start_reaches_the_cold_fit() {
    // The fit on 40 points warm-started from the fit on their first 20
    // finds a posterior as good as the cold three-start fit.
    let layout = mixed_layout();
    let mut state = 11;
    let (x, y) = mixed_points(40, &mut state);
    let dims = layout.dims;
    let half = fit(&x[..20 * dims], &y[..20], &layout, 3, None);
    let warm = fit(&x, &y, &layout, 3, Some(&half));
    let cold = fit(&x, &y, &layout, 3, None);
    let prior = Prior::new(&layout);
    let mut ws = Workspace::new(40);
    let f = |t: &[f64], ws: &mut Workspace| neg_log_posterior(t, &x, &y, &layout, &prior, None, ws);
    let (fw, fc) = (f(&warm, &mut ws), f(&cold, &mut ws));
    assert!(
        fw.is_finite() && fw <= fc + 0.05 * fc.abs().max(1.0),
        "warm {fw} cold {fc}"
    );
}

#[test]
fn refit_points_follow_the_schedule() {
    assert_eq!(refit_point(1), 1);
    assert_eq!(refit_point(64), 64);
    assert_eq!(refit_point(65), 64);
    assert_eq!(refit_point(70), 70);
    assert_eq!(refit_point(75), 70);
    for n in 65..5000 {
        let r = refit_point(n);
        assert!(r <= n && r * 110 >= n * 100, "{n} -> {r}");
    }
}

const MIXED: &str = r#"
lr = { type = "float", low = 1e-5, high = 1e-1, log = true }
dropout = { type = "float", low = 0.0, high = 0.5, step = 0.05 }
depth = { type = "int", low = 1, high = 8 }
width = { type = "int", low = 16, high = 512, step = 16 }
batch = { type = "int", low = 1, high = 1024, log = true }
act = ["relu", "tanh", "gelu"]
"#;

fn mixed_value(p: &Params) -> f64 {
    let lr = float(p, "lr").log10() + 3.0;
    let dropout = float(p, "dropout") - 0.2;
    let depth = match p["depth"] {
        ParamValue::Int(v) => v as f64 - 3.0,
        _ => panic!(),
    };
    let act = if p["act"] == ParamValue::Categorical("gelu".into()) {
        0.0
    } else {
        1.0
    };
    lr * lr + dropout * dropout + 0.1 * depth * depth + act
}

#[test]
fn proposals_stay_inside_a_mixed_space() {
    let spec = spec(MIXED, "minimize");
    let mut random = super::super::RandomSampler::new(&spec, 3);
    let mut history: Vec<TrialView> = (0..18)
        .map(|number| {
            let params = random.propose(number, &[]).unwrap();
            let (state, value) = match number % 6 {
                4 => (TrialState::Failed, None),
                5 => (TrialState::Running, None),
                _ => (TrialState::Completed, Some(mixed_value(&params))),
            };
            TrialView {
                number,
                params,
                state,
                value,
            }
        })
        .collect();
    let mut gp = GpSampler::new(&spec, 9);
    for number in 18..30 {
        let p = gp.propose(number, &history).unwrap();
        assert_eq!(p.len(), spec.params.len());
        for (k, s) in &spec.params {
            assert!(s.contains(&p[k]), "{k}: {:?} outside {s:?}", p[k]);
        }
        let value = mixed_value(&p);
        history.push(TrialView {
            number,
            params: p,
            state: TrialState::Completed,
            value: Some(value),
        });
    }
}

fn branin(p: &Params) -> f64 {
    let (x1, x2) = (float(p, "x1"), float(p, "x2"));
    let pi = std::f64::consts::PI;
    let b = 5.1 / (4.0 * pi * pi);
    let c = 5.0 / pi;
    let t = 1.0 / (8.0 * pi);
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

const BRANIN: &str = r#"
x1 = { type = "float", low = -5.0, high = 10.0 }
x2 = { type = "float", low = 0.0, high = 15.0 }
"#;
const BRANIN_MIN: f64 = 0.397_887_357_729_738;

#[test]
fn same_seed_and_history_give_the_same_proposals() {
    let spec = spec(BRANIN, "minimize");
    // 20 trials: fits from 9 observations on start warm from the fit on 8.
    let a = run(&mut GpSampler::new(&spec, 7), 20, &branin);
    let b = run(&mut GpSampler::new(&spec, 7), 20, &branin);
    let pa: Vec<&Params> = a.iter().map(|t| &t.params).collect();
    let pb: Vec<&Params> = b.iter().map(|t| &t.params).collect();
    assert_eq!(pa, pb);
    // A fresh sampler (a restarted coordinator) given the same history
    // proposes what the running one did.
    let last = a.len() - 1;
    let fresh = GpSampler::new(&spec, 7)
        .propose(last as u32, &a[..last])
        .unwrap();
    assert_eq!(&fresh, pa[last]);
    // A sampler whose warm-start chain was built on other data (an early
    // trial's value changed, as when trials finish out of order) rebuilds
    // it: it proposes what a fresh one does.
    let mut changed = a[..last].to_vec();
    changed[3].value = Some(100.0);
    let mut used = GpSampler::new(&spec, 7);
    let _ = used.propose(last as u32, &changed).unwrap();
    assert_eq!(&used.propose(last as u32, &a[..last]).unwrap(), pa[last]);
    let c = run(&mut GpSampler::new(&spec, 8), 16, &branin);
    assert_ne!(pa, c.iter().map(|t| &t.params).collect::<Vec<_>>());
}

#[test]
fn pending_trials_spread_parallel_proposals() {
    let spec = spec(BRANIN, "minimize");
    for seed in [1, 2, 21] {
        let mut gp = GpSampler::new(&spec, seed);
        let mut history = run(&mut gp, 12, &branin);
        let mut proposed = Vec::new();
        for number in 12..20 {
            let p = gp.propose(number, &history).unwrap();
            proposed.push(((float(&p, "x1") + 5.0) / 15.0, float(&p, "x2") / 15.0));
            history.push(TrialView {
                number,
                params: p,
                state: TrialState::Running,
                value: None,
            });
        }
        let mut min_d = f64::INFINITY;
        for i in 0..proposed.len() {
            for j in 0..i {
                let (a, b) = (proposed[i], proposed[j]);
                min_d = min_d.min((a.0 - b.0).hypot(a.1 - b.1));
            }
        }
        assert!(
            min_d > 0.02,
            "seed {seed}: eight proposals with seven running: {proposed:?}, min distance {min_d}"
        );
    }
}

#[test]
fn fantasies_keep_the_mean_and_shrink_the_variance() {
    let layout = mixed_layout();
    let mut state = 17;
    let (x, y) = mixed_points(20, &mut state);
    let theta = vec![-1.0, -1.0, 0.0, 0.0, -6.0];
    let pending = [0.31, 0.77, 1.0, 0.0, 0.0];
    let plain = Posterior::new(&layout, &theta, &x, &y, &[]).unwrap();
    let believer = Posterior::new(&layout, &theta, &x, &y, &pending).unwrap();
    let near = [0.33, 0.75, 1.0, 0.0, 0.0];
    let far = [0.9, 0.1, 0.0, 0.0, 1.0];
    for p in [&pending[..], &near, &far] {
        let (a, b) = (plain.predict_batch(p)[0], believer.predict_batch(p)[0]);
        assert!(
            (a.0 - b.0).abs() < 1e-6,
            "mean moved at {p:?}: {} -> {}",
            a.0,
            b.0
        );
        assert!(b.1 <= a.1 + 1e-12);
    }
    let (a, b) = (
        plain.predict_batch(&pending)[0],
        believer.predict_batch(&pending)[0],
    );
    assert!(
        b.1 < 1e-4 * a.1,
        "variance at the pending point {} -> {}",
        a.1,
        b.1
    );
    assert!(believer.near_pending(&near, 0.1) && !believer.near_pending(&far, 0.1));
}

fn best_regret(history: &[TrialView]) -> f64 {
    history
        .iter()
        .filter_map(|t| t.value)
        .fold(f64::INFINITY, f64::min)
        - BRANIN_MIN
}

#[test]
fn finds_the_branin_minimum_within_fifty_evaluations() {
    let spec = spec(BRANIN, "minimize");
    let mut hits = 0;
    let mut regrets = Vec::new();
    for seed in 0..5 {
        let h = run(&mut GpSampler::new(&spec, seed), 50, &branin);
        let r = best_regret(&h);
        regrets.push(r);
        hits += usize::from(r < 0.01);
    }
    let mut random = Vec::new();
    for seed in 0..5 {
        let mut s = super::super::RandomSampler::new(&spec, seed);
        random.push(best_regret(&run_any(&mut s, 50, &branin)));
    }
    println!("gp regrets after 50: {regrets:?}; random: {random:?}");
    assert!(hits >= 4, "regret < 0.01 in {hits} of 5 seeds: {regrets:?}");
}

fn run_any(s: &mut dyn Sampler, n: u32, f: &dyn Fn(&Params) -> f64) -> Vec<TrialView> {
    let mut history = Vec::new();
    for number in 0..n {
        let params = s.propose(number, &history).unwrap();
        let value = f(&params);
        history.push(TrialView {
            number,
            params,
            state: TrialState::Completed,
            value: Some(value),
        });
    }
    history
}

#[test]
fn finds_the_best_categorical_choice() {
    let spec = spec(
        r#"
x = { type = "float", low = 0.0, high = 1.0 }
kind = ["a", "b", "c", "d"]
"#,
        "maximize",
    );
    let offsets: BTreeMap<&str, f64> = [("a", 0.0), ("b", 0.5), ("c", 1.0), ("d", 0.3)].into();
    let f = |p: &Params| {
        let ParamValue::Categorical(k) = &p["kind"] else {
            panic!()
        };
        offsets[k.as_str()] - (float(p, "x") - 0.3).powi(2)
    };
    for seed in 0..3 {
        let h = run(&mut GpSampler::new(&spec, seed), 20, &f);
        let best = h
            .iter()
            .max_by(|a, b| a.value.unwrap().total_cmp(&b.value.unwrap()))
            .unwrap();
        assert_eq!(
            best.params["kind"],
            ParamValue::Categorical("c".into()),
            "seed {seed}"
        );
        assert!(
            (float(&best.params, "x") - 0.3).abs() < 0.05,
            "seed {seed}: {:?}",
            best.params
        );
    }
}

#[test]
fn a_configuration_already_tried_is_not_proposed_again() {
    // The optimum sits on a bound and `y` does not matter: the acquisition's
    // maximum keeps rounding onto configurations already tried.
    let spec = spec(
        r#"
x = { type = "float", low = 0.0, high = 1.0 }
y = { type = "int", low = 0, high = 3 }
"#,
        "minimize",
    );
    for seed in 0..3 {
        let h = run(&mut GpSampler::new(&spec, seed), 30, &|p| float(p, "x"));
        for i in 0..h.len() {
            for j in 0..i {
                assert_ne!(h[i].params, h[j].params, "seed {seed}: trials {j} and {i}");
            }
        }
    }
}
