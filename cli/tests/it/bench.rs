//! `hpo bench`: the simulated cluster, on a small hand-made table and (when
//! the shared data is there) on LCBench, checking the shape the
//! early-stopping schedulers must show.

use super::*;
use serde_json::Value;
use std::fmt::Write as _;

/// 30 configurations of one parameter `x`; accuracy peaks at x = 0.7 and
/// rises with epochs; each epoch costs 1 + x simulated seconds.
fn small_table(dir: &Path) -> (String, String) {
    let mut configs = String::from("config_id,x\n");
    let mut curves = String::from("config_id,epoch,time,acc\n");
    for c in 0..30 {
        let x = c as f64 / 29.0;
        writeln!(configs, "{c},{x}").unwrap();
        for e in 1..=9 {
            let acc = (1.0 - (x - 0.7).abs()) * (1.0 - 0.5 / e as f64);
            writeln!(curves, "{c},{e},{},{acc}", e as f64 * (1.0 + x)).unwrap();
        }
    }
    let (cp, vp) = (dir.join("configs.csv"), dir.join("curves.csv"));
    std::fs::write(&cp, configs).unwrap();
    std::fs::write(&vp, curves).unwrap();
    (
        cp.to_str().unwrap().to_string(),
        vp.to_str().unwrap().to_string(),
    )
}

fn study(configs: &str, curves: &str) -> String {
    format!(
        r#"
name = "small"
[objective]
metric = "acc"
direction = "maximize"
[search]
algorithm = "random"
max_trials = 1000
max_parallel = 4
max_total_resource = 200
[trainer]
kind = "table"
dataset = "{curves}"
configs = "{configs}"
epochs = 9
[schedule]
algorithm = "asha"
min_resource = 1
reduction_factor = 3
[params]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"#
    )
}

fn runs(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn by_scheduler<'a>(runs: &'a [Value], name: &str) -> &'a Value {
    runs.iter().find(|r| r["scheduler"] == name).unwrap()
}

#[test]
fn bench_simulates_a_cluster_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (configs, curves) = small_table(dir.path());
    let path = dir.path().join("small.toml");
    std::fs::write(&path, study(&configs, &curves)).unwrap();
    let args = [
        "bench",
        path.to_str().unwrap(),
        "--workers",
        "4",
        "--json",
        "--scheduler",
        "none,median,successive_halving,asha,hyperband,async_hyperband",
    ];
    let first = runs(&run(&args));
    assert_eq!(first.len(), 6);
    for r in &first {
        let epochs = r["epochs"].as_u64().unwrap();
        // The budget, plus at most one epoch per worker that was running.
        assert!((200..=204).contains(&epochs), "{r}");
        let regret = r["regret"].as_f64().unwrap();
        assert!((0.0..0.5).contains(&regret), "{r}");
        assert!(r["wall_s"].as_f64().unwrap() > 0.0);
    }
    for name in ["none", "median", "asha", "async_hyperband"] {
        let u = by_scheduler(&first, name)["utilisation"].as_f64().unwrap();
        assert!(u >= 0.99, "{name} keeps every worker busy: {u}");
    }
    let sha = by_scheduler(&first, "successive_halving")["utilisation"]
        .as_f64()
        .unwrap();
    assert!(sha < 0.9, "synchronous rungs leave workers idle: {sha}");
    // Same study, same seeds: the same simulation.
    assert_eq!(first, runs(&run(&args)));
    // The plain report names its figures.
    let out = run(&["bench", path.to_str().unwrap(), "--workers", "4"]);
    let report = text(&out.stdout);
    for want in [
        "best acc over simulated time",
        "regret",
        "epochs in",
        "utilisation",
    ] {
        assert!(report.contains(want), "{report}");
    }
}

#[test]
fn bench_refuses_studies_of_other_trainers() {
    let out = run(&[
        "bench",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/simulated.toml"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("trainer.kind: hpo bench simulates the `table` trainer"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lcbench_shows_what_early_stopping_must_show() {
    let Some(data) = std::env::var_os("HPO_TEST_DATA") else {
        eprintln!("skipped: HPO_TEST_DATA is not set (the shared data folder with yahpo-lcbench)");
        return;
    };
    let root = Path::new(&data).join("yahpo-lcbench");
    if !root.exists() {
        eprintln!("skipped: {} is absent", root.display());
        return;
    }
    let text_ = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/lcbench.toml"
    ))
    .unwrap()
    .replace("../shared/data/yahpo-lcbench", root.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lcbench.toml");
    std::fs::write(&path, text_).unwrap();
    let all = runs(&run(&[
        "bench",
        path.to_str().unwrap(),
        "--workers",
        "64",
        "--json",
        "--scheduler",
        "none,successive_halving,asha,hyperband,async_hyperband",
    ]));
    for name in ["asha", "async_hyperband"] {
        let u = by_scheduler(&all, name)["utilisation"].as_f64().unwrap();
        assert!(u >= 0.99, "{name}: utilisation {u}");
    }
    let sha = by_scheduler(&all, "successive_halving")["utilisation"]
        .as_f64()
        .unwrap();
    assert!(sha < 0.99, "successive halving: utilisation {sha}");
    // Hyperband reaches random search's final value with at most a third of
    // random search's epochs.
    let random = by_scheduler(&all, "none");
    let target = random["best"].as_f64().unwrap();
    let random_epochs = random["epochs"].as_f64().unwrap();
    let hb = by_scheduler(&all, "hyperband");
    let reached = hb["trajectory"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["best"].as_f64().unwrap() >= target)
        .map(|p| p["epochs"].as_f64().unwrap());
    let epochs = reached.expect("hyperband reaches random search's best");
    assert!(
        epochs <= random_epochs / 3.0,
        "hyperband needed {epochs} epochs, random search {random_epochs}"
    );
}

#[test]
fn bench_samplers_runs_studies_through_a_real_worker() {
    let out = run(&[
        "bench-samplers",
        "--functions",
        "branin,hartmann3",
        "--samplers",
        "random,sobol,tpe,gp",
        "--parallel",
        "1,3",
        "--seeds",
        "1",
        "--evals",
        "12",
        "--json",
    ]);
    let all = runs(&out);
    assert_eq!(all.len(), 2 * 4 * 2);
    for r in &all {
        let regret: Vec<f64> = r["regret"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(regret.len(), 12, "{r}");
        assert!(regret.iter().all(|v| *v >= -1e-9), "{r}");
        assert!(
            regret.windows(2).all(|w| w[1] <= w[0]),
            "best so far never worsens: {r}"
        );
    }
}
