#![allow(clippy::unwrap_used)]

use super::*;

const GOOD: &str = r#"
name = "fashion-mlp"
seed = 7
[objective]
metric = "val_accuracy"
direction = "maximize"
[search]
algorithm = "random"
max_trials = 20
max_parallel = 4
max_duration = "30m"
target = 0.90
[trainer]
kind = "mlp"
dataset = "fashion-mnist"
epochs = 10
batch_size = 128
[params]
lr = { type = "float", low = 1e-4, high = 1e-1, log = true }
hidden = { type = "int", low = 32, high = 512, step = 32 }
optimizer = { type = "categorical", choices = ["adam", "sgd"] }
"#;

fn err(text: &str) -> String {
    StudySpec::parse(text, "study.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn parses_the_reference_study() {
    let s = StudySpec::parse(GOOD, "study.toml").unwrap();
    assert_eq!(s.name, "fashion-mlp");
    assert_eq!(s.seed, Some(7));
    assert_eq!(s.objective.direction, Direction::Maximize);
    assert_eq!(s.objective.scope, Scope::Last);
    assert_eq!(s.search.algorithm, Algorithm::Random);
    assert_eq!(s.search.max_trials, 20);
    assert_eq!(s.search.max_parallel, 4);
    assert_eq!(s.search.max_duration, Some(Duration::from_secs(1800)));
    assert_eq!(s.search.target, Some(0.9));
    assert_eq!(s.search.max_retries, 2);
    assert_eq!(s.trainer.epochs, 10);
    assert_eq!(
        s.trainer.settings.get("batch_size"),
        Some(&ParamValue::Int(128))
    );
    assert_eq!(
        s.params.get("hidden"),
        Some(&ParamSpec::Int {
            low: 32,
            high: 512,
            log: false,
            step: 32
        })
    );
    assert_eq!(s.params.len(), 3);
}

#[test]
fn log_float_needs_positive_low() {
    let text = GOOD.replace("low = 1e-4", "low = 0.0");
    assert_eq!(
        err(&text),
        "study.toml: params.lr.low: must be > 0 when log = true"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let text = GOOD.replace("max_parallel = 4", "max_paralel = 4");
    let e = err(&text);
    assert!(
        e.starts_with("study.toml: search.max_paralel: unknown key"),
        "{e}"
    );
    let text = format!("colour = \"red\"\n{GOOD}");
    assert!(err(&text).starts_with("study.toml: colour: unknown key"));
}

#[test]
fn parameters_unknown_to_the_trainer_are_rejected() {
    let text = GOOD.replace("hidden = {", "hiden = {");
    let e = err(&text);
    assert!(
        e.starts_with("study.toml: params.hiden: trainer `mlp` has no parameter `hiden`"),
        "{e}"
    );
    let text = GOOD.replace("batch_size = 128", "batchsize = 128");
    assert!(err(&text).starts_with("study.toml: trainer.batchsize: unknown setting"));
}

#[test]
fn values_the_trainer_cannot_take_are_rejected() {
    let text = GOOD.replace("[\"adam\", \"sgd\"]", "[\"adam\", \"adagrad\"]");
    let e = err(&text);
    assert!(
        e.contains("params.optimizer: unknown value \"adagrad\""),
        "{e}"
    );
    let text = GOOD.replace("type = \"int\", low = 32", "type = \"float\", low = 32");
    assert!(err(&text).contains("params.hidden: expected type = \"int\""));
}

#[test]
fn type_errors_name_the_key_and_expectation() {
    let text = GOOD.replace("epochs = 10", "epochs = \"ten\"");
    assert_eq!(
        err(&text),
        "study.toml: trainer.epochs: expected an integer, got a string"
    );
    let text = GOOD.replace("direction = \"maximize\"", "direction = \"up\"");
    assert_eq!(
        err(&text),
        "study.toml: objective.direction: expected \"maximize\" or \"minimize\", got \"up\""
    );
    let text = GOOD.replace("max_duration = \"30m\"", "max_duration = \"soon\"");
    assert!(err(&text).starts_with("study.toml: search.max_duration: expected a duration"));
}

#[test]
fn missing_sections_and_keys_are_named() {
    let text = GOOD.replace("[objective]", "[objectiv]");
    assert!(err(&text).starts_with("study.toml: objectiv: unknown key"));
    let text = GOOD.replace("metric = \"val_accuracy\"\n", "");
    assert_eq!(
        err(&text),
        "study.toml: objective.metric: missing (expected a string)"
    );
}

#[test]
fn bad_toml_names_the_file() {
    let e = err("name = ");
    assert!(e.starts_with("study.toml: invalid toml"), "{e}");
}

#[test]
fn bounds_are_checked() {
    let text = GOOD.replace("low = 32, high = 512", "low = 512, high = 32");
    assert!(err(&text).starts_with("study.toml: params.hidden.high: must be >= low"));
    let text = GOOD.replace("step = 32", "step = 100");
    assert!(err(&text).contains("must be a multiple of step"));
    let text = GOOD.replace("max_trials = 20", "max_trials = 0");
    assert!(err(&text).starts_with("study.toml: search.max_trials: must be between 1"));
}

#[test]
fn grid_needs_finite_parameters_and_defaults_max_trials_to_its_size() {
    let text = GOOD
        .replace("algorithm = \"random\"", "algorithm = \"grid\"")
        .replace("max_trials = 20\n", "");
    assert!(err(&text).starts_with("study.toml: params.lr: grid search needs a finite set"));
    let text = text.replace(
        "lr = { type = \"float\", low = 1e-4, high = 1e-1, log = true }",
        "lr = [1e-2, 1e-3, 1e-4]",
    );
    let s = StudySpec::parse(&text, "g.toml").unwrap();
    assert_eq!(s.grid_size(), Some(3 * 16 * 2));
    assert_eq!(s.search.max_trials, 96);
    // A budget beyond the grid is capped at its size; a smaller one is kept.
    let big = text.replace(
        "algorithm = \"grid\"",
        "algorithm = \"grid\"\nmax_trials = 500",
    );
    assert_eq!(
        StudySpec::parse(&big, "g.toml").unwrap().search.max_trials,
        96
    );
    let small = text.replace(
        "algorithm = \"grid\"",
        "algorithm = \"grid\"\nmax_trials = 10",
    );
    assert_eq!(
        StudySpec::parse(&small, "g.toml")
            .unwrap()
            .search
            .max_trials,
        10
    );
}

#[test]
fn grid_values_cover_float_steps_exactly() {
    let p = ParamSpec::Float {
        low: 0.0,
        high: 1.0,
        log: false,
        step: Some(0.25),
    };
    let v = p.grid_values().unwrap();
    assert_eq!(v.len(), 5);
    assert_eq!(v[4], ParamValue::Float(1.0));
}

#[test]
fn a_setting_may_not_also_be_searched() {
    let text = GOOD.replace("batch_size = 128", "hidden = 64");
    assert!(err(&text).contains("trainer.hidden: is also a searched parameter"));
}

#[test]
fn simulated_trainer_takes_any_numeric_parameter() {
    let text = r#"
name = "sim"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 5
[trainer]
kind = "simulated"
epochs = 3
step_ms = 1
[params]
x = { type = "float", low = 0.0, high = 1.0 }
y = { type = "int", low = 0, high = 4 }
"#;
    let s = StudySpec::parse(text, "sim.toml").unwrap();
    assert_eq!(s.search.max_parallel, 5);
    assert!(s.seed.is_none());
}

#[test]
fn unsupported_version_is_rejected() {
    let text = format!("version = 2\n{GOOD}");
    assert!(err(&text).starts_with("study.toml: version: unsupported study file version 2"));
}

fn with_schedule(schedule: &str) -> String {
    format!("{GOOD}\n[schedule]\n{schedule}\n")
}

#[test]
fn a_study_without_schedule_trains_every_trial_fully() {
    let s = StudySpec::parse(GOOD, "study.toml").unwrap();
    assert_eq!(s.schedule.algorithm, SchedulerKind::None);
    assert_eq!(s.schedule.resource, Resource::Epochs);
    assert_eq!(s.schedule.max_resource, 10, "the trainer's epochs");
    assert_eq!(s.search.max_total_resource, None);
}

#[test]
fn parses_a_hyperband_schedule() {
    let s = StudySpec::parse(
        &with_schedule(
            "algorithm = \"hyperband\"\nmin_resource = 1\nreduction_factor = 3\nbrackets = 2",
        ),
        "study.toml",
    )
    .unwrap();
    assert_eq!(s.schedule.algorithm, SchedulerKind::Hyperband);
    assert_eq!(
        (
            s.schedule.min_resource,
            s.schedule.max_resource,
            s.schedule.reduction_factor
        ),
        (1, 10, 3)
    );
    assert_eq!(s.schedule.brackets, Some(2));
    assert_eq!(s.schedule.grace_period, 1, "defaults to min_resource");
    assert!(!s.schedule.keep_best);
    let keep = StudySpec::parse(
        &with_schedule("algorithm = \"asha\"\nkeep_best = true"),
        "s.toml",
    )
    .unwrap();
    assert!(keep.schedule.keep_best);
    for kind in SchedulerKind::ALL {
        let s = StudySpec::parse(
            &with_schedule(&format!("algorithm = \"{}\"", kind.as_str())),
            "study.toml",
        )
        .unwrap();
        assert_eq!(s.schedule.algorithm, kind);
    }
}

#[test]
fn max_resource_may_stand_in_for_epochs_but_not_contradict_them() {
    let no_epochs =
        with_schedule("algorithm = \"asha\"\nmax_resource = 27").replace("epochs = 10\n", "");
    let s = StudySpec::parse(&no_epochs, "study.toml").unwrap();
    assert_eq!((s.trainer.epochs, s.schedule.max_resource), (27, 27));
    assert_eq!(
        err(&with_schedule("algorithm = \"asha\"\nmax_resource = 27")),
        "study.toml: schedule.max_resource: is 27 but trainer.epochs is 10: with resource = \"epochs\" the full budget is the trainer's epochs (set one of them, or both equal)"
    );
    assert_eq!(
        err(&GOOD.replace("epochs = 10\n", "")),
        "study.toml: trainer.epochs: missing (expected an integer >= 1)"
    );
}

#[test]
fn bad_schedules_name_the_key() {
    assert_eq!(
        err(&with_schedule("algorithm = \"asha\"\nmin_resource = 10")),
        "study.toml: schedule.min_resource: must be less than max_resource (10), got 10: with one budget level there is nothing to stop early"
    );
    assert_eq!(
        err(&with_schedule("algorithm = \"asha\"\nreduction_factor = 1")),
        "study.toml: schedule.reduction_factor: must be at least 2 (a rung keeps its best 1/reduction_factor), got 1"
    );
    assert_eq!(
        err(&with_schedule("algorithm = \"pbt\"")),
        "study.toml: schedule.algorithm: expected one of: none, median, successive_halving, asha, hyperband, async_hyperband, got \"pbt\""
    );
    assert_eq!(
        err(&with_schedule("algorithm = \"hyperband\"\nbrackets = 4")),
        "study.toml: schedule.brackets: must be at most 3 for min_resource = 1, max_resource = 10, reduction_factor = 3, got 4"
    );
    assert_eq!(
        err(&with_schedule(
            "algorithm = \"asha\"\nresource = \"data_fraction\""
        )),
        "study.toml: schedule.max_resource: missing (resource = \"data_fraction\" needs the number of levels: a budget b trains on b / max_resource of the data)"
    );
    assert_eq!(
        err(&with_schedule("algorithm = \"asha\"\nresource = \"steps\"")),
        "study.toml: schedule.resource: expected \"epochs\" or \"data_fraction\", got \"steps\""
    );
    assert_eq!(
        err(&with_schedule("algorithm = \"asha\"\neta = 3")),
        "study.toml: schedule.eta: unknown key (expected one of: algorithm, resource, min_resource, max_resource, reduction_factor, grace_period, min_trials, brackets, keep_best)"
    );
}

#[test]
fn data_fraction_is_for_trainers_that_support_it() {
    let s = StudySpec::parse(
        &with_schedule(
            "algorithm = \"asha\"\nresource = \"data_fraction\"\nmin_resource = 1\nmax_resource = 9",
        ),
        "study.toml",
    )
    .unwrap();
    assert_eq!(s.schedule.resource, Resource::DataFraction);
    assert_eq!((s.schedule.max_resource, s.trainer.epochs), (9, 10));
    let simulated = r#"
name = "s"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 4
max_total_resource = 100
[trainer]
kind = "simulated"
epochs = 9
[params]
x = { type = "float", low = 0.0, high = 1.0 }
[schedule]
algorithm = "asha"
resource = "data_fraction"
max_resource = 9
"#;
    assert_eq!(
        err(simulated),
        "study.toml: schedule.resource: trainer `simulated` does not support resource \"data_fraction\" (it supports: epochs)"
    );
    let ok = StudySpec::parse(
        &simulated.replace("resource = \"data_fraction\"\n", ""),
        "s.toml",
    )
    .unwrap();
    assert_eq!(ok.search.max_total_resource, Some(100));
}

#[test]
fn hyperband_levels() {
    assert_eq!(levels(1, 81, 3), 4);
    assert_eq!(levels(1, 52, 3), 3);
    assert_eq!(levels(1, 16, 2), 4);
    assert_eq!(levels(5, 4, 3), 0);
}

const BRANIN: &str = r#"
name = "branin"
seed = 3
[objective]
metric = "value"
direction = "minimize"
[search]
algorithm = "random"
max_trials = 50
max_parallel = 4
[trainer]
kind = "function"
function = "branin"
epochs = 1
[params]
x1 = { type = "float", low = -5.0, high = 10.0 }
x2 = { type = "float", low = 0.0, high = 15.0 }
"#;

#[test]
fn function_trainer_study_parses() {
    let s = StudySpec::parse(BRANIN, "branin.toml").unwrap();
    assert_eq!(s.trainer.kind, "function");
    assert_eq!(s.trainer.epochs, 1);
    assert_eq!(
        s.trainer.settings.get("function"),
        Some(&ParamValue::Categorical("branin".to_string()))
    );
    assert_eq!(
        s.params.get("x1"),
        Some(&ParamSpec::Float {
            low: -5.0,
            high: 10.0,
            log: false,
            step: None
        })
    );
    // The optional noise and offset settings.
    let noisy = BRANIN.replace("epochs = 1\n", "epochs = 4\nnoise = 0.1\noffset = 2\n");
    let s = StudySpec::parse(&noisy, "branin.toml").unwrap();
    assert_eq!(
        s.trainer.settings.get("noise"),
        Some(&ParamValue::Float(0.1))
    );
    assert_eq!(s.trainer.settings.get("offset"), Some(&ParamValue::Int(2)));
}

#[test]
fn function_trainer_refuses_an_unknown_function_naming_the_known_ones() {
    assert_eq!(
        err(&BRANIN.replace("\"branin\"\nepochs", "\"nope\"\nepochs")),
        "study.toml: trainer.function: unknown value \"nope\" (expected one of: branin, hartmann3, hartmann6, rosenbrock4, ackley5, levy4)"
    );
    let negative = BRANIN.replace("epochs = 1\n", "epochs = 1\nnoise = -0.5\n");
    assert!(
        err(&negative).contains("trainer.noise"),
        "{}",
        err(&negative)
    );
}

fn with_search(extra: &str) -> String {
    GOOD.replace("target = 0.90\n", &format!("target = 0.90\n{extra}\n"))
}

#[test]
fn enqueued_configurations_are_checked_against_the_space() {
    let s = StudySpec::parse(
        &with_search(
            r#"enqueue = [{ lr = 0.01, hidden = 64, optimizer = "adam" }, { lr = 1, hidden = 512, optimizer = "sgd" }]"#,
        ),
        "study.toml",
    );
    // lr = 1 is above high = 0.1.
    assert_eq!(
        s.unwrap_err().to_string(),
        "study.toml: search.enqueue[1].lr: 1 is outside the search space of params.lr"
    );
    let s = StudySpec::parse(
        &with_search(r#"enqueue = [{ lr = 0.01, hidden = 64, optimizer = "adam" }]"#),
        "study.toml",
    )
    .unwrap();
    assert_eq!(s.search.enqueue.len(), 1);
    assert_eq!(
        s.search.enqueue[0].get("hidden"),
        Some(&ParamValue::Int(64))
    );
    assert_eq!(
        err(&with_search(r#"enqueue = [{ lr = 0.01, hidden = 64 }]"#)),
        "study.toml: search.enqueue[0]: missing parameter `optimizer`"
    );
    assert_eq!(
        err(&with_search(
            r#"enqueue = [{ lr = 0.01, hidden = 64, optimizer = "adam", depth = 3 }]"#
        )),
        "study.toml: search.enqueue[0].depth: not a parameter in [params]"
    );
    assert_eq!(
        err(&with_search(
            r#"enqueue = [{ lr = "fast", hidden = 64, optimizer = "adam" }]"#
        )),
        "study.toml: search.enqueue[0].lr: expected a value of params.lr, got a string"
    );
}

#[test]
fn gp_refuses_spaces_beyond_its_dimension_limit() {
    let study = |choices: usize| {
        let c: Vec<String> = (0..choices).map(|i| format!("\"c{i}\"")).collect();
        format!(
            r#"
name = "gp"
[objective]
metric = "loss"
direction = "minimize"
[search]
algorithm = "gp"
max_trials = 10
[trainer]
kind = "simulated"
epochs = 1
[params]
x = {{ type = "float", low = 0.0, high = 1.0 }}
y = {{ type = "int", low = 1, high = 9 }}
z = [{}]
"#,
            c.join(", ")
        )
    };
    assert_eq!(
        err(&study(70)),
        "study.toml: search.algorithm: gp models at most 64 dimensions (a categorical parameter counts one per choice) and this space has 72: use \"tpe\", or fewer choices"
    );
    assert!(StudySpec::parse(&study(62), "s.toml").is_ok());
}

#[test]
fn warm_start_names_earlier_studies_for_model_based_samplers() {
    let tpe = GOOD.replace("algorithm = \"random\"", "algorithm = \"tpe\"");
    let s = StudySpec::parse(
        &tpe.replace(
            "target = 0.90\n",
            "target = 0.90\nwarm_start = [\"old\", 3]\n",
        ),
        "study.toml",
    )
    .unwrap();
    assert_eq!(
        s.search.warm_start,
        vec!["old".to_string(), "3".to_string()]
    );
    assert_eq!(
        err(&with_search("warm_start = [\"old\"]")),
        "study.toml: search.warm_start: only the model-based samplers (tpe, gp, bohb) learn from earlier studies, not random"
    );
    assert_eq!(
        err(&tpe.replace("target = 0.90\n", "target = 0.90\nwarm_start = \"old\"\n")),
        "study.toml: search.warm_start: expected an array of study names such as [\"earlier-study\"], got a string"
    );
    assert_eq!(
        err(&tpe.replace("target = 0.90\n", "target = 0.90\nwarm_start = [true]\n")),
        "study.toml: search.warm_start[0]: expected a study name or id, got a boolean"
    );
}

#[test]
fn bohb_needs_a_hyperband_schedule() {
    let bohb = GOOD.replace("algorithm = \"random\"", "algorithm = \"bohb\"");
    assert_eq!(
        err(&bohb),
        "study.toml: search.algorithm: bohb proposes for Hyperband's budgets: set [schedule] algorithm = \"hyperband\" or \"async_hyperband\" (it is \"none\")"
    );
    for kind in ["hyperband", "async_hyperband"] {
        let s = StudySpec::parse(
            &format!("{bohb}\n[schedule]\nalgorithm = \"{kind}\"\n"),
            "study.toml",
        )
        .unwrap();
        assert_eq!(s.search.algorithm, Algorithm::Bohb);
    }
}

const CNN: &str = r#"
name = "fashion-cnn"
[objective]
metric = "val_accuracy"
direction = "maximize"
[search]
algorithm = "random"
max_trials = 8
[trainer]
kind = "cnn"
dataset = "idx:/data/fashion-mnist"
epochs = 3
batch_norm = 1
[params]
lr = { type = "float", low = 1e-4, high = 1e-2, log = true }
conv_layers = { type = "int", low = 1, high = 3 }
channels = [16, 32, 64]
kernel_size = [3, 5]
pool = ["max", "avg", "none"]
"#;

/// The convolutional trainers take their architecture's parameters and the
/// mlp's training settings; a kernel size they cannot use is refused at
/// submit time naming its key, fixed or searched.
#[test]
fn cnn_and_resnet_studies_check_their_architecture() {
    let s = StudySpec::parse(CNN, "cnn.toml").unwrap();
    assert_eq!(s.trainer.kind, "cnn");
    assert_eq!(s.params.len(), 5);
    // The mlp's training settings are shared ...
    let shared = CNN.replace(
        "batch_norm = 1\n",
        "batch_norm = 1\noptimizer = \"sgd\"\naugment_hflip = 1\n",
    );
    StudySpec::parse(&shared, "cnn.toml").unwrap();
    // ... its architecture's are not.
    assert!(
        err(&CNN.replace("batch_norm = 1\n", "layers = 2\n"))
            .starts_with("study.toml: trainer.layers: unknown setting for trainer `cnn`"),
        "{}",
        err(&CNN.replace("batch_norm = 1\n", "layers = 2\n"))
    );

    assert_eq!(
        err(&CNN
            .replace("batch_norm = 1\n", "kernel_size = 4\n")
            .replace("kernel_size = [3, 5]\n", "")),
        "study.toml: trainer.kernel_size: kernel_size must be one of 3, 5, 7, got 4"
    );
    assert_eq!(
        err(&CNN.replace("kernel_size = [3, 5]", "kernel_size = [3, 4]")),
        "study.toml: params.kernel_size: kernel_size must be one of 3, 5, 7, got 4"
    );
    // A range would sample 4 and 6: kernel sizes are searched as choices.
    assert_eq!(
        err(&CNN.replace(
            "kernel_size = [3, 5]",
            "kernel_size = { type = \"int\", low = 3, high = 7 }"
        )),
        "study.toml: params.kernel_size: expected type = \"categorical\""
    );
    for (bad, key) in [
        (
            "conv_layers = { type = \"int\", low = 1, high = 7 }",
            "params.conv_layers",
        ),
        ("channels = [2, 32]", "params.channels"),
        ("pool = [\"max\", \"min\"]", "params.pool"),
    ] {
        let name = key.trim_start_matches("params.");
        let line = CNN
            .lines()
            .find(|l| l.starts_with(&format!("{name} =")))
            .unwrap();
        let e = err(&CNN.replace(line, bad));
        assert!(e.starts_with(&format!("study.toml: {key}: ")), "{e}");
    }

    let resnet = CNN
        .replace("kind = \"cnn\"", "kind = \"resnet\"")
        .replace("batch_norm = 1\n", "preactivation = 1\n")
        .replace("conv_layers = { type = \"int\", low = 1, high = 3 }\nchannels = [16, 32, 64]\nkernel_size = [3, 5]\npool = [\"max\", \"avg\", \"none\"]\n", "depth = { type = \"int\", low = 1, high = 4 }\nwidth = [8, 16, 32]\nstages = [2, 3]\n");
    let s = StudySpec::parse(&resnet, "resnet.toml").unwrap();
    assert_eq!(s.params.len(), 4);
    let e = err(&resnet.replace("stages = [2, 3]", "stages = [2, 4]"));
    assert!(e.starts_with("study.toml: params.stages: "), "{e}");
    let e = err(&resnet.replace("preactivation = 1\n", "kernel_size = 3\n"));
    assert!(
        e.starts_with("study.toml: trainer.kernel_size: unknown setting for trainer `resnet`"),
        "{e}"
    );
}
