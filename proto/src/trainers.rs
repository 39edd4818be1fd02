//! What each built-in trainer accepts. The coordinator checks a study's
//! parameters against this table at submit time, so a misspelt parameter is an
//! error before any compute is spent rather than in the middle of training.

use crate::domain::{ParamValue, Resource};

#[derive(Debug)]
pub enum KnownKind {
    Float,
    Int,
    Choice(&'static [&'static str]),
    /// An integer from a short list (a kernel size): searched as choices.
    IntChoice(&'static [i64]),
    /// Any value (open trainers ignore what they cannot use).
    Any,
    /// A string, such as a file path.
    Text,
}

impl KnownKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            KnownKind::Float => "float",
            KnownKind::Int => "int",
            KnownKind::Choice(_) | KnownKind::IntChoice(_) => "categorical",
            KnownKind::Any => "float",
            KnownKind::Text => "string",
        }
    }
}

#[derive(Debug)]
pub struct KnownParam {
    pub name: &'static str,
    pub kind: KnownKind,
    /// Inclusive bounds on the value.
    pub min: f64,
    pub max: f64,
    pub help: &'static str,
}

impl KnownParam {
    /// Checks one concrete value; the message says what was expected.
    pub fn check_value(&self, value: &ParamValue) -> Result<(), String> {
        match (&self.kind, value) {
            (KnownKind::Any, _) => Ok(()),
            (KnownKind::Text, ParamValue::Categorical(_)) => Ok(()),
            (KnownKind::Text, other) => Err(format!("expected a string, got {other}")),
            (KnownKind::Choice(options), ParamValue::Categorical(s)) => {
                if options.contains(&s.as_str()) {
                    Ok(())
                } else {
                    Err(format!(
                        "unknown value \"{s}\" (expected one of: {})",
                        options.join(", ")
                    ))
                }
            }
            (KnownKind::Choice(options), other) => Err(format!(
                "expected one of: {}, got {other}",
                options.join(", ")
            )),
            (KnownKind::IntChoice(options), ParamValue::Int(v)) if options.contains(v) => Ok(()),
            (KnownKind::IntChoice(options), other) => {
                let names: Vec<String> = options.iter().map(i64::to_string).collect();
                Err(format!(
                    "{} must be one of {}, got {other}",
                    self.name,
                    names.join(", ")
                ))
            }
            (KnownKind::Int, ParamValue::Int(v)) => self.check_range(*v as f64),
            (KnownKind::Int, other) => Err(format!("expected an integer, got {other}")),
            (KnownKind::Float, ParamValue::Float(v)) => self.check_range(*v),
            (KnownKind::Float, ParamValue::Int(v)) => self.check_range(*v as f64),
            (KnownKind::Float, other) => Err(format!("expected a number, got \"{other}\"")),
        }
    }

    fn check_range(&self, v: f64) -> Result<(), String> {
        if v < self.min || v > self.max {
            Err(format!(
                "{} must be between {} and {}, got {v}",
                self.name, self.min, self.max
            ))
        } else {
            Ok(())
        }
    }
}

#[derive(Debug)]
pub struct TrainerInfo {
    pub name: &'static str,
    pub about: &'static str,
    pub needs_dataset: bool,
    pub params: &'static [KnownParam],
    /// Parameters shared with other trainers (the libtorch trainers'
    /// training settings), after `params`.
    pub shared: &'static [KnownParam],
    /// Accepts any parameter name (the simulated trainer's objective is a
    /// function of whatever numeric values it is given).
    pub open_numeric: bool,
    /// What `[schedule] resource` may be for this trainer.
    pub resources: &'static [Resource],
}

/// For `open_numeric` trainers: the shape of any unlisted parameter.
static OPEN_NUMERIC: KnownParam = KnownParam {
    name: "parameter",
    kind: KnownKind::Any,
    min: f64::MIN,
    max: f64::MAX,
    help: "any numeric parameter",
};

impl TrainerInfo {
    pub fn param(&self, name: &str) -> Option<&KnownParam> {
        self.all_params()
            .find(|p| p.name == name)
            .or(if self.open_numeric {
                Some(&OPEN_NUMERIC)
            } else {
                None
            })
    }

    pub fn param_names(&self) -> Vec<&'static str> {
        self.all_params().map(|p| p.name).collect()
    }

    /// Its own parameters, then the shared ones.
    pub fn all_params(&self) -> impl Iterator<Item = &'static KnownParam> + use<> {
        self.params.iter().chain(self.shared)
    }
}

const ACTIVATIONS: &[&str] = &["relu", "tanh", "gelu", "sigmoid"];
const OPTIMIZERS: &[&str] = &["adam", "adamw", "sgd", "rmsprop"];
/// The learning-rate schedules (`hpo_worker::trainer::schedule`).
pub const SCHEDULES: &[&str] = &[
    "constant",
    "step",
    "exponential",
    "cosine",
    "cosine_restarts",
    "one_cycle",
];
/// How the mlp trainer evens out classes (`hpo_worker::data::Balance`).
const BALANCE: &[&str] = &["none", "oversample", "undersample"];
/// What the tch trainers (mlp, cnn, resnet) report each epoch.
pub const TCH_METRICS: &[&str] = &[
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_precision",
    "val_recall",
    "val_f1",
    "val_auc",
    "val_rmse",
    "val_mae",
    "val_r2",
];
/// The `function` trainer's test functions (`hpo_worker::functions::NAMES`).
pub const FUNCTIONS: &[&str] = &[
    "branin",
    "hartmann3",
    "hartmann6",
    "rosenbrock4",
    "ackley5",
    "levy4",
];

/// The `mlp` trainer's model.
static MLP_PARAMS: &[KnownParam] = &[
    KnownParam {
        name: "hidden",
        kind: KnownKind::Int,
        min: 1.0,
        max: 65536.0,
        help: "units per hidden layer",
    },
    KnownParam {
        name: "layers",
        kind: KnownKind::Int,
        min: 1.0,
        max: 64.0,
        help: "number of hidden layers",
    },
    KnownParam {
        name: "activation",
        kind: KnownKind::Choice(ACTIVATIONS),
        min: 0.0,
        max: 0.0,
        help: "hidden activation",
    },
    KnownParam {
        name: "dropout",
        kind: KnownKind::Float,
        min: 0.0,
        max: 0.95,
        help: "dropout after each hidden layer",
    },
];

/// The `cnn` trainer's model.
static CNN_PARAMS: &[KnownParam] = &[
    KnownParam {
        name: "conv_layers",
        kind: KnownKind::Int,
        min: 1.0,
        max: 6.0,
        help: "conv blocks (default 2)",
    },
    KnownParam {
        name: "channels",
        kind: KnownKind::Int,
        min: 4.0,
        max: 512.0,
        help: "the first block's channels, doubling per block up to 1024 (default 32)",
    },
    KnownParam {
        name: "kernel_size",
        kind: KnownKind::IntChoice(&[3, 5, 7]),
        min: 3.0,
        max: 7.0,
        help: "3, 5 or 7: the convolutions' kernel, 'same' padding (default 3; search it as choices: [3, 5, 7])",
    },
    KnownParam {
        name: "batch_norm",
        kind: KnownKind::Int,
        min: 0.0,
        max: 1.0,
        help: "batch norm after each convolution (1, default) or a bias (0)",
    },
    KnownParam {
        name: "pool",
        kind: KnownKind::Choice(&["max", "avg", "none"]),
        min: 0.0,
        max: 0.0,
        help: "2x2 pooling after each block while the map is at least 2x2: max (default), avg or none",
    },
    KnownParam {
        name: "hidden",
        kind: KnownKind::Int,
        min: 0.0,
        max: 65536.0,
        help: "units of the dense head's hidden layer (default 128; 0: none)",
    },
    KnownParam {
        name: "activation",
        kind: KnownKind::Choice(ACTIVATIONS),
        min: 0.0,
        max: 0.0,
        help: "activation of the blocks and the head (default relu)",
    },
    KnownParam {
        name: "dropout",
        kind: KnownKind::Float,
        min: 0.0,
        max: 0.95,
        help: "dropout after the conv stack and after the head's hidden layer (default 0)",
    },
];

/// The `resnet` trainer's model.
static RESNET_PARAMS: &[KnownParam] = &[
    KnownParam {
        name: "depth",
        kind: KnownKind::Int,
        min: 1.0,
        max: 8.0,
        help: "residual blocks per stage (default 2)",
    },
    KnownParam {
        name: "stages",
        kind: KnownKind::Int,
        min: 2.0,
        max: 3.0,
        help: "stages, each after the first halving the map and doubling the channels (default 3)",
    },
    KnownParam {
        name: "width",
        kind: KnownKind::Int,
        min: 8.0,
        max: 256.0,
        help: "channels of the stem and the first stage (default 16)",
    },
    KnownParam {
        name: "preactivation",
        kind: KnownKind::Int,
        min: 0.0,
        max: 1.0,
        help: "pre-activation blocks, batch norm and activation before each convolution (1), or the original post-activation ones (0, default)",
    },
    KnownParam {
        name: "activation",
        kind: KnownKind::Choice(ACTIVATIONS),
        min: 0.0,
        max: 0.0,
        help: "activation of the blocks (default relu)",
    },
    KnownParam {
        name: "dropout",
        kind: KnownKind::Float,
        min: 0.0,
        max: 0.95,
        help: "dropout before the linear head (default 0)",
    },
];

/// The training settings of the libtorch trainers (`mlp`, `cnn`, `resnet`).
static TRAINING: &[KnownParam] = &[
    KnownParam {
        name: "optimizer",
        kind: KnownKind::Choice(OPTIMIZERS),
        min: 0.0,
        max: 0.0,
        help: "adam, adamw, sgd (with momentum) or rmsprop",
    },
    KnownParam {
        name: "lr_schedule",
        kind: KnownKind::Choice(SCHEDULES),
        min: 0.0,
        max: 0.0,
        help: "the learning rate over the run: constant (default), step, exponential, cosine, cosine_restarts (SGDR) or one_cycle",
    },
    KnownParam {
        name: "warmup_epochs",
        kind: KnownKind::Float,
        min: 0.0,
        max: 1e5,
        help: "linear warm-up of the learning rate over this many epochs (default 0; not with one_cycle)",
    },
    KnownParam {
        name: "lr_step_size",
        kind: KnownKind::Int,
        min: 1.0,
        max: 1e6,
        help: "step: epochs between decays (default 10)",
    },
    KnownParam {
        name: "lr_gamma",
        kind: KnownKind::Float,
        min: 1e-12,
        max: 1.0,
        help: "step, exponential: the decay factor (default 0.1 for step, 0.95 for exponential)",
    },
    KnownParam {
        name: "lr_min",
        kind: KnownKind::Float,
        min: 0.0,
        max: 10.0,
        help: "cosine, cosine_restarts: the lowest learning rate (default 0)",
    },
    KnownParam {
        name: "sgdr_t0",
        kind: KnownKind::Int,
        min: 1.0,
        max: 1e6,
        help: "cosine_restarts: epochs of the first period (default 10)",
    },
    KnownParam {
        name: "sgdr_t_mult",
        kind: KnownKind::Int,
        min: 1.0,
        max: 100.0,
        help: "cosine_restarts: each period is this many times longer (default 1)",
    },
    KnownParam {
        name: "one_cycle_pct",
        kind: KnownKind::Float,
        min: 1e-6,
        max: 0.999999,
        help: "one_cycle: share of the run spent rising to lr (default 0.3)",
    },
    KnownParam {
        name: "one_cycle_div",
        kind: KnownKind::Float,
        min: 1.000001,
        max: 1e9,
        help: "one_cycle: starts at lr / this (default 25)",
    },
    KnownParam {
        name: "one_cycle_final_div",
        kind: KnownKind::Float,
        min: 1.000001,
        max: 1e12,
        help: "one_cycle: ends at lr / (one_cycle_div × this) (default 1e4)",
    },
    KnownParam {
        name: "augment_crop_padding",
        kind: KnownKind::Int,
        min: 0.0,
        max: 64.0,
        help: "images: random crops after padding by this many pixels (default 0: off)",
    },
    KnownParam {
        name: "augment_hflip",
        kind: KnownKind::Int,
        min: 0.0,
        max: 1.0,
        help: "images: random horizontal flips (1) or none (0, default)",
    },
    KnownParam {
        name: "augment_shift",
        kind: KnownKind::Int,
        min: 0.0,
        max: 64.0,
        help: "images: random shifts of up to this many pixels (default 0: off)",
    },
    KnownParam {
        name: "balance",
        kind: KnownKind::Choice(BALANCE),
        min: 0.0,
        max: 0.0,
        help: "classes: oversample the minority, undersample the majority, or none (default)",
    },
    KnownParam {
        name: "nesterov",
        kind: KnownKind::Int,
        min: 0.0,
        max: 1.0,
        help: "sgd: Nesterov momentum (1) or plain (0, default)",
    },
    KnownParam {
        name: "l1",
        kind: KnownKind::Float,
        min: 0.0,
        max: 1.0,
        help: "L1 penalty on the weights, added to the loss (default 0)",
    },
    KnownParam {
        name: "label_smoothing",
        kind: KnownKind::Float,
        min: 0.0,
        max: 0.99,
        help: "cross-entropy against targets smoothed by this much (default 0)",
    },
    KnownParam {
        name: "grad_clip",
        kind: KnownKind::Float,
        min: 0.0,
        max: 1e6,
        help: "largest global gradient norm, larger ones are scaled down (default 0: off)",
    },
    KnownParam {
        name: "early_stopping_patience",
        kind: KnownKind::Int,
        min: 0.0,
        max: 100_000.0,
        help: "end the trial after this many epochs without improvement of early_stopping_metric (default 0: off)",
    },
    KnownParam {
        name: "early_stopping_metric",
        kind: KnownKind::Choice(TCH_METRICS),
        min: 0.0,
        max: 0.0,
        help: "the metric early stopping watches (default: the objective); losses are minimised, others maximised",
    },
    KnownParam {
        name: "restore_best",
        kind: KnownKind::Int,
        min: 0.0,
        max: 1.0,
        help: "at an early stop, put back the best epoch's weights (1, default) or keep the last (0)",
    },
    KnownParam {
        name: "lr",
        kind: KnownKind::Float,
        min: 1e-12,
        max: 10.0,
        help: "learning rate",
    },
    KnownParam {
        name: "momentum",
        kind: KnownKind::Float,
        min: 0.0,
        max: 0.999,
        help: "sgd momentum",
    },
    KnownParam {
        name: "weight_decay",
        kind: KnownKind::Float,
        min: 0.0,
        max: 1.0,
        help: "L2 penalty (decoupled for adamw)",
    },
    KnownParam {
        name: "batch_size",
        kind: KnownKind::Int,
        min: 1.0,
        max: 65536.0,
        help: "examples per step",
    },
    KnownParam {
        name: "train_subset",
        kind: KnownKind::Int,
        min: 0.0,
        max: 1e9,
        help: "train on the first N examples only (0: all)",
    },
];

pub static TRAINERS: &[TrainerInfo] = &[
    TrainerInfo {
        name: "mlp",
        about: "a multi-layer perceptron trained with libtorch; reports train_loss, val_loss, val_accuracy and the macro val_precision, val_recall, val_f1 (and val_auc for two classes) per epoch; on a regression set (csv:...?task=regression) train_loss, val_loss (mean squared error of standardised targets), val_rmse, val_mae and val_r2",
        needs_dataset: true,
        open_numeric: false,
        resources: &[Resource::Epochs, Resource::DataFraction],
        params: MLP_PARAMS,
        shared: TRAINING,
    },
    TrainerInfo {
        name: "cnn",
        about: "a convolutional network trained with libtorch on an image data set (idx:DIR, such as Fashion-MNIST): conv_layers blocks of a 'same'-padded convolution, batch norm, the activation and 2x2 pooling, channels doubling per block, then a dense head; the mlp's training settings, reporting its metrics",
        needs_dataset: true,
        open_numeric: false,
        resources: &[Resource::Epochs, Resource::DataFraction],
        params: CNN_PARAMS,
        shared: TRAINING,
    },
    TrainerInfo {
        name: "resnet",
        about: "a small residual network trained with libtorch on an image data set (idx:DIR, such as Fashion-MNIST): a 3x3 stem convolution, stages of depth basic residual blocks (two 3x3 convolutions with batch norm; channels doubling and stride-2 downsampling between stages, 1x1 convolutions on the shortcut where shapes change), global average pooling and a linear head; the mlp's training settings, reporting its metrics",
        needs_dataset: true,
        open_numeric: false,
        resources: &[Resource::Epochs, Resource::DataFraction],
        params: RESNET_PARAMS,
        shared: TRAINING,
    },
    TrainerInfo {
        name: "simulated",
        about: "no training: a closed-form objective of the numeric parameters per step, for tests, benchmarks and dry runs",
        needs_dataset: false,
        open_numeric: true,
        resources: &[Resource::Epochs],
        shared: &[],
        params: &[
            KnownParam {
                name: "step_ms",
                kind: KnownKind::Int,
                min: 0.0,
                max: 3_600_000.0,
                help: "sleep per step, in milliseconds",
            },
            KnownParam {
                name: "fail_at_step",
                kind: KnownKind::Int,
                min: 0.0,
                max: 1e9,
                help: "fail the trial at this step (tests)",
            },
        ],
    },
    TrainerInfo {
        name: "function",
        about: "no training: a standard test function of global optimisation at x1..xd (to minimise), for sampler benchmarks; reports value and regret (value minus the global minimum). Standard domains and minima: branin x1 in [-5, 10], x2 in [0, 15], min 0.397887; hartmann3 [0, 1]^3, min -3.86278; hartmann6 [0, 1]^6, min -3.32237; rosenbrock4 [-5, 10]^4, min 0; ackley5 [-32.768, 32.768]^5, min 0; levy4 [-10, 10]^4, min 0",
        needs_dataset: false,
        open_numeric: true,
        resources: &[Resource::Epochs],
        shared: &[],
        params: &[
            KnownParam {
                name: "function",
                kind: KnownKind::Choice(FUNCTIONS),
                min: 0.0,
                max: 0.0,
                help: "the test function (required); its parameters are x1..xd",
            },
            KnownParam {
                name: "noise",
                kind: KnownKind::Float,
                min: 0.0,
                max: 1e12,
                help: "standard deviation of Gaussian noise on each value, seeded by the trial (default 0)",
            },
            KnownParam {
                name: "offset",
                kind: KnownKind::Float,
                min: 0.0,
                max: 1e12,
                help: "value at step s of E is f(x) + (1 - s/E) * offset: a learning curve for multi-fidelity schedulers (default 0)",
            },
        ],
    },
    TrainerInfo {
        name: "table",
        about: "replays learning curves from a table (e.g. LCBench): the nearest configuration in `configs` to the proposed one, its metrics per step from `dataset` (a CSV, or .csv.gz, of config_id, step, metrics)",
        needs_dataset: true,
        open_numeric: true,
        resources: &[Resource::Epochs],
        shared: &[],
        params: &[
            KnownParam {
                name: "configs",
                kind: KnownKind::Text,
                min: 0.0,
                max: 0.0,
                help: "CSV of config_id and one column per parameter",
            },
            KnownParam {
                name: "time_column",
                kind: KnownKind::Text,
                min: 0.0,
                max: 0.0,
                help: "metric column with the cumulative training seconds (default \"time\")",
            },
            KnownParam {
                name: "time_scale",
                kind: KnownKind::Float,
                min: 0.0,
                max: 1e6,
                help: "sleep this many seconds per simulated second (default 0: no sleep)",
            },
        ],
    },
    TrainerInfo {
        name: "command",
        about: "your own program, started once per trial segment: `command` (an array: the program and its arguments, with placeholders such as {budget}), `working_dir`, `env` (a table of strings), `param_flags` (also pass --name value). It reports through the hpo SDK (Rust or Python) or by printing `hpo-metric {\"step\": 1, \"loss\": 0.5}` lines; its stdout and stderr are the trial's log",
        needs_dataset: false,
        open_numeric: true,
        resources: &[Resource::Epochs, Resource::DataFraction],
        shared: &[],
        params: &[
            KnownParam {
                name: "timeout",
                kind: KnownKind::Int,
                min: 1.0,
                max: 31_536_000.0,
                help: "seconds one segment may run before it is killed and the trial fails (default: no limit)",
            },
            KnownParam {
                name: "stop_grace",
                kind: KnownKind::Int,
                min: 0.0,
                max: 3600.0,
                help: "seconds a program told to stop or pause has to exit before its process group is killed (default 10)",
            },
            KnownParam {
                name: "max_log_kib",
                kind: KnownKind::Int,
                min: 1.0,
                max: 1_048_576.0,
                help: "the trial's log is kept to this many KiB, the oldest output dropped with a marker (default 1024)",
            },
        ],
    },
    TrainerInfo {
        name: "external",
        about: "trials run by an ask-and-tell client (the SDKs' `ask` and `tell`) in its own process; workers never take them",
        needs_dataset: false,
        open_numeric: true,
        resources: &[Resource::Epochs],
        shared: &[],
        params: &[],
    },
];

/// The keys of `[trainer]` that only `kind = "command"` reads; they travel
/// in `TrainerConfig`'s own fields, not in `settings`.
pub const COMMAND_KEYS: &[&str] = &["command", "env", "working_dir", "param_flags"];

pub fn lookup(name: &str) -> Option<&'static TrainerInfo> {
    TRAINERS.iter().find(|t| t.name == name)
}

pub fn names() -> Vec<&'static str> {
    TRAINERS.iter().map(|t| t.name).collect()
}
