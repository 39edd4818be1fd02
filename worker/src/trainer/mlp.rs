//! The libtorch trainers: `mlp` (a multi-layer perceptron), `cnn` (conv
//! blocks and a dense head) and `resnet` (a small residual network), one
//! training loop over the [`Model`] of [`super::models`]. Each trains on one
//! of the data sets of [`crate::data`] (the convolutional ones on image sets
//! only), reporting `train_loss`, `val_loss` and `val_accuracy` after each
//! epoch (with `Resource::DataFraction`, once per segment, after
//! `trainer.epochs` epochs on its share of the data).
//!
//! # Randomness
//!
//! A trial must give the same metrics when run twice with the same seed on
//! CPU, even while another slot trains on another thread. libtorch's random
//! generator is process-global (`tch::manual_seed` reseeds it for every
//! thread), so two concurrent trials drawing from it would interleave their
//! draws at random. This trainer therefore never draws from it: all of its
//! randomness comes from per-trial `StdRng`s derived from the trial's seed:
//!
//! - the initial weights are drawn on the CPU and copied into the variables;
//! - the epoch's shuffle is a permutation drawn on the CPU, copied to the
//!   device once per epoch, and batches are `index_select`s of it;
//! - dropout masks are drawn on the CPU per batch (for the MLP, layers ×
//!   batch × hidden floats, about 256 KiB for one layer of 512 units and
//!   batches of 128; for a CNN, one mask of the conv stack's output and one
//!   of the head's) rather than with `Tensor::dropout`, which uses the
//!   global generator. The cost is small next to the batch's matrix
//!   products on CPU; on a GPU it is one small host-to-device copy per
//!   batch, and only with dropout.
//!
//! Hence no `tch::manual_seed` either: it would only disturb other users of
//! the global generator. What remains is libtorch's arithmetic, which is
//! deterministic on CPU for a fixed thread count (not necessarily on CUDA).
//!
//! # Pause and resume
//!
//! A paused trial's checkpoint holds the weights, the model's buffers
//! (batch norm's running statistics), the optimizer's buffers and step
//! count, and the step. The shuffle and dropout generators of an
//! epoch are seeded from (trial seed, epoch) rather than carried over from
//! the previous epoch, so their state needs no saving: a trial resumed after
//! epoch k draws what an uninterrupted one draws, and on CPU its metrics are
//! bit-identical. The optimizers are written out here (`Optimizer`)
//! because `tch::nn::Optimizer` keeps its state inside libtorch, out of
//! reach of a checkpoint.

use super::models::{Activation, Arch, Model, ModelKind, Pass, parameter_count};
use super::schedule::{LrSchedule, Schedule, parse_schedule};
use super::{Reporter, TrainEnd, TrainError, Trainer, TrialJob};
use crate::data::{
    Augment, Balance, DATA_SEED, DataCache, Dataset, augment_with_fill, balanced_rows,
    parse_augment, parse_balance,
};
// The metrics the tch trainers report (any may be the objective or drive
// early stopping): the submit-time check's list.
use hpo_proto::trainers::TCH_METRICS as METRICS;
use hpo_proto::{Assignment, Decision, MetricValues, ParamValue, Resource};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;
use tch::{Kind, Reduction, TchError, Tensor};

/// Training throughput, reported with each epoch's metrics (a measurement,
/// so the one value that differs between two runs of the same seed).
pub const SAMPLES_PER_SEC: &str = "samples_per_sec";

/// The `mlp` trainer: a multi-layer perceptron on any data set.
pub struct MlpTrainer {
    data: Arc<DataCache>,
}

impl MlpTrainer {
    pub fn new(data: Arc<DataCache>) -> Self {
        MlpTrainer { data }
    }
}

impl Trainer for MlpTrainer {
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError> {
        train(ModelKind::Mlp, &self.data, job, reporter)
    }
}

/// The `cnn` trainer: conv blocks and a dense head, on image sets.
pub struct CnnTrainer {
    data: Arc<DataCache>,
}

impl CnnTrainer {
    pub fn new(data: Arc<DataCache>) -> Self {
        CnnTrainer { data }
    }
}

impl Trainer for CnnTrainer {
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError> {
        train(ModelKind::Cnn, &self.data, job, reporter)
    }
}

/// The `resnet` trainer: a small residual network, on image sets.
pub struct ResNetTrainer {
    data: Arc<DataCache>,
}

impl ResNetTrainer {
    pub fn new(data: Arc<DataCache>) -> Self {
        ResNetTrainer { data }
    }
}

impl Trainer for ResNetTrainer {
    fn train(&self, job: &TrialJob, reporter: &mut dyn Reporter) -> Result<TrainEnd, TrainError> {
        train(ModelKind::ResNet, &self.data, job, reporter)
    }
}

/// One segment of a trial of a `kind` model.
fn train(
    kind: ModelKind,
    cache: &DataCache,
    job: &TrialJob,
    reporter: &mut dyn Reporter,
) -> Result<TrainEnd, TrainError> {
    // Settings are checked before anything else, so a bad trial fails
    // at once even when a stop is pending or the data set is large.
    let config = Config::from_assignment(kind, &job.assignment)?;
    check_segment(job)?;
    if reporter.stop_requested() {
        return Ok(TrainEnd::Stopped);
    }
    let data = cache.get(&job.assignment.trainer.dataset, DATA_SEED)?;
    if kind.needs_images() && data.image_shape().is_none() {
        return Err(TrainError::Invalid(format!(
            "the {} trainer needs an image data set (idx:DIR, such as MNIST or Fashion-MNIST); `{}` is not one",
            kind.name(),
            job.assignment.trainer.dataset
        )));
    }
    // The non-`f_` calls of tch (the optimizer's step, for one) panic on
    // a libtorch error such as CUDA running out of memory. That is a
    // failed trial, not a reason to lose the slot's thread.
    catch_unwind(AssertUnwindSafe(|| run(&config, &data, job, reporter))).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("libtorch panicked");
        Err(TrainError::Torch(msg.to_string()))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OptimizerKind {
    Adam,
    AdamW,
    Sgd,
    RmsProp,
}

/// One trial's configuration: the model's architecture and the training
/// settings, defaults filled in and ranges checked.
#[derive(Debug, Clone, PartialEq)]
struct Config {
    arch: Arch,
    settings: Settings,
}

/// What every model's training shares, defaults filled in and ranges
/// checked. (The fields up to `activation` and `dropout` are the MLP's
/// former configuration, in its order: see [`fingerprint`].)
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    activation: Activation,
    dropout: f64,
    optimizer: OptimizerKind,
    lr: f64,
    momentum: f64,
    /// sgd: Nesterov momentum.
    nesterov: bool,
    weight_decay: f64,
    /// L1 penalty on the weights (not the biases), added to the loss.
    l1: f64,
    /// Cross-entropy against targets smoothed by this much.
    label_smoothing: f64,
    /// Largest gradient norm (over all parameters); 0: no clipping.
    grad_clip: f64,
    /// Early stopping inside the trial: epochs without improvement of
    /// `early_stopping_metric` before the trial ends (0: off).
    patience: u32,
    early_stopping_metric: String,
    /// At an early stop, put back the weights of the best epoch.
    restore_best: bool,
    /// The learning rate's schedule over the run, and its linear warm-up.
    schedule: LrSchedule,
    warmup_epochs: f64,
    /// Random crops, shifts and flips of training images.
    augment: Augment,
    /// Over- or undersampling of the training set's classes.
    balance: Balance,
    batch_size: i64,
    /// 0: the whole training set.
    train_subset: usize,
    epochs: u32,
    seed: u64,
}

/// Looks a parameter up in the searched values first, then in the fixed
/// settings: a study may search a parameter or pin it.
pub(super) struct ParamSource<'a> {
    assignment: &'a Assignment,
}

impl ParamSource<'_> {
    pub(super) fn get(&self, name: &str) -> Option<&ParamValue> {
        self.assignment
            .params
            .get(name)
            .or_else(|| self.assignment.trainer.settings.get(name))
    }

    /// A number (an integer is accepted where a float is expected: a fixed
    /// `weight_decay = 0` reads as an integer), checked by `valid`.
    pub(super) fn float(
        &self,
        name: &str,
        default: f64,
        valid: impl Fn(f64) -> bool,
        expected: &str,
    ) -> Result<f64, TrainError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        match value.as_f64() {
            Some(v) if v.is_finite() && valid(v) => Ok(v),
            _ => Err(invalid(name, expected, value)),
        }
    }

    /// An integer; a float with no fractional part (`256.0`) is accepted.
    pub(super) fn int(
        &self,
        name: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, TrainError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        match as_int(value) {
            Some(v) if range.contains(&v) => Ok(v),
            _ => Err(invalid(
                name,
                &format!("an integer from {} to {}", range.start(), range.end()),
                value,
            )),
        }
    }

    /// An integer that must be one of `allowed` (a kernel size).
    pub(super) fn int_of(
        &self,
        name: &str,
        default: i64,
        allowed: &[i64],
    ) -> Result<i64, TrainError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        match as_int(value) {
            Some(v) if allowed.contains(&v) => Ok(v),
            _ => {
                let names: Vec<String> = allowed.iter().map(i64::to_string).collect();
                Err(invalid(
                    name,
                    &format!("one of {}", names.join(", ")),
                    value,
                ))
            }
        }
    }

    pub(super) fn choice<T: Copy>(
        &self,
        name: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, TrainError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        let found = match value {
            ParamValue::Categorical(s) => options.iter().find(|(o, _)| o == s),
            _ => None,
        };
        if let Some((_, v)) = found {
            return Ok(*v);
        }
        let names: Vec<&str> = options.iter().map(|(o, _)| *o).collect();
        Err(invalid(
            name,
            &format!("one of {}", names.join(", ")),
            value,
        ))
    }
}

/// An integer, or a float with no fractional part (`256.0`).
fn as_int(value: &ParamValue) -> Option<i64> {
    match value {
        ParamValue::Int(v) => Some(*v),
        ParamValue::Float(v) if v.fract() == 0.0 && v.abs() < 9e15 => Some(*v as i64),
        _ => None,
    }
}

fn invalid(name: &str, expected: &str, got: &ParamValue) -> TrainError {
    TrainError::Invalid(format!("{name} must be {expected}, got `{got}`"))
}

impl Config {
    fn from_assignment(kind: ModelKind, assignment: &Assignment) -> Result<Self, TrainError> {
        let p = ParamSource { assignment };
        let name = kind.name();
        let epochs = assignment.trainer.epochs;
        if epochs == 0 {
            return Err(TrainError::Invalid(format!(
                "epochs must be at least 1 for the {name} trainer"
            )));
        }
        if assignment.trainer.dataset.trim().is_empty() {
            return Err(TrainError::Invalid(format!(
                "the {name} trainer needs a data set (trainer.dataset)"
            )));
        }
        let arch = Arch::parse(kind, &p)?;
        Ok(Config {
            arch,
            settings: Settings::from_assignment(&p, assignment)?,
        })
    }
}

impl Settings {
    fn from_assignment(p: &ParamSource<'_>, assignment: &Assignment) -> Result<Self, TrainError> {
        let epochs = assignment.trainer.epochs;
        let (schedule, warmup_epochs) =
            parse_schedule(&|name| p.get(name).cloned()).map_err(TrainError::Invalid)?;
        Ok(Settings {
            activation: p.choice("activation", Activation::Relu, Activation::CHOICES)?,
            dropout: p.float(
                "dropout",
                0.0,
                |v| (0.0..1.0).contains(&v),
                "a number in [0, 1)",
            )?,
            optimizer: p.choice(
                "optimizer",
                OptimizerKind::Adam,
                &[
                    ("adam", OptimizerKind::Adam),
                    ("adamw", OptimizerKind::AdamW),
                    ("sgd", OptimizerKind::Sgd),
                    ("rmsprop", OptimizerKind::RmsProp),
                ],
            )?,
            lr: p.float("lr", 1e-3, |v| v > 0.0, "a positive number")?,
            momentum: p.float(
                "momentum",
                0.9,
                |v| (0.0..1.0).contains(&v),
                "a number in [0, 1)",
            )?,
            nesterov: p.int("nesterov", 0, 0..=1)? == 1,
            weight_decay: p.float("weight_decay", 0.0, |v| v >= 0.0, "a number >= 0")?,
            l1: p.float("l1", 0.0, |v| v >= 0.0, "a number >= 0")?,
            label_smoothing: p.float(
                "label_smoothing",
                0.0,
                |v| (0.0..1.0).contains(&v),
                "a number in [0, 1)",
            )?,
            grad_clip: p.float("grad_clip", 0.0, |v| v >= 0.0, "a number >= 0 (0: off)")?,
            patience: p.int("early_stopping_patience", 0, 0..=100_000)? as u32,
            early_stopping_metric: match p.get("early_stopping_metric") {
                None => assignment.metric.clone(),
                Some(ParamValue::Categorical(m)) if METRICS.contains(&m.as_str()) => m.clone(),
                Some(other) => {
                    return Err(invalid(
                        "early_stopping_metric",
                        &format!("one of {}", METRICS.join(", ")),
                        other,
                    ));
                }
            },
            restore_best: p.int("restore_best", 1, 0..=1)? == 1,
            schedule,
            warmup_epochs,
            augment: parse_augment(&|name| p.get(name).cloned()).map_err(TrainError::Invalid)?,
            balance: parse_balance(&|name| p.get(name).cloned()).map_err(TrainError::Invalid)?,
            batch_size: p.int("batch_size", 128, 1..=1 << 24)?,
            train_subset: p.int("train_subset", 0, 0..=i64::MAX)? as usize,
            epochs,
            seed: assignment.seed,
        })
    }
}

/// Detached copies of `tensors`, on their devices.
fn copies(tensors: &[Tensor]) -> Result<Vec<Tensor>, TchError> {
    tch::no_grad(|| {
        tensors
            .iter()
            .map(|t| {
                let mut copy = Tensor::f_zeros_like(t)?;
                copy.f_copy_(t)?;
                Ok(copy)
            })
            .collect()
    })
}

/// Adam's and AdamW's constants: tch's (and PyTorch's) defaults.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const RMS_ALPHA: f64 = 0.99;

/// SGD with momentum, Adam and AdamW, written out with in-place tensor ops
/// rather than taken from `tch::nn::Optimizer`, whose state (momentum and
/// moment buffers, step count) lives in libtorch where it can be neither
/// saved nor restored: a paused trial must resume with exactly that state.
///
/// The updates are PyTorch's (dampening 0, no Nesterov, no AMSGrad): for sgd
/// and adam `weight_decay` is an L2 term added to the gradient, for adamw it
/// is decoupled (the weights shrink by `lr × wd` before the Adam step).
struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    params: Vec<Tensor>,
    /// sgd: the momentum buffers (none when momentum is 0); adam(w): the
    /// first-moment estimates (`exp_avg`).
    first: Vec<Tensor>,
    /// adam(w): the second-moment estimates (`exp_avg_sq`); sgd: none.
    second: Vec<Tensor>,
    /// Updates done so far (Adam's bias correction depends on it).
    steps: u64,
    /// Early stopping's state; `best` holds the best epoch's weights when
    /// they are to be restored (saved with the checkpoint).
    stop: EarlyStop,
    best: Vec<Tensor>,
    /// The model's buffers (batch norm's running statistics), saved with
    /// the weights, and their copies at the best epoch (with `best`).
    buffers: Vec<Tensor>,
    best_buffers: Vec<Tensor>,
    /// `weight_decay` and `-lr` as 0-dimensional tensors on the device, for
    /// `addcmul_`: a scaled in-place add in one kernel, without a temporary
    /// (tch's `add_` has no `alpha`).
    weight_decay_t: Tensor,
    neg_lr_t: Tensor,
}

impl Optimizer {
    fn new(config: &Settings, params: Vec<Tensor>) -> Result<Self, TchError> {
        let zeros = || {
            params
                .iter()
                .map(Tensor::f_zeros_like)
                .collect::<Result<Vec<_>, _>>()
        };
        // Zero buffers give the same first update as PyTorch's "buffer =
        // gradient on the first step": momentum × 0 + g is g exactly.
        let (first, second) = match config.optimizer {
            OptimizerKind::Sgd if config.momentum > 0.0 => (zeros()?, Vec::new()),
            OptimizerKind::Sgd => (Vec::new(), Vec::new()),
            OptimizerKind::Adam | OptimizerKind::AdamW => (zeros()?, zeros()?),
            OptimizerKind::RmsProp => (Vec::new(), zeros()?),
        };
        let device = params.first().map_or(tch::Device::Cpu, Tensor::device);
        Ok(Optimizer {
            kind: config.optimizer,
            lr: config.lr,
            momentum: config.momentum,
            nesterov: config.nesterov,
            weight_decay: config.weight_decay,
            best: if config.patience > 0 && config.restore_best {
                copies(&params)?
            } else {
                Vec::new()
            },
            params,
            first,
            second,
            steps: 0,
            stop: EarlyStop::default(),
            buffers: Vec::new(),
            best_buffers: Vec::new(),
            weight_decay_t: Tensor::f_scalar_tensor(config.weight_decay, (Kind::Float, device))?,
            neg_lr_t: Tensor::f_scalar_tensor(-config.lr, (Kind::Float, device))?,
        })
    }

    /// Keeps (handles on) the model's buffers, to save and restore them
    /// with the weights, and their best epoch's copies when the best
    /// weights are kept.
    fn track_buffers(&mut self, buffers: Vec<Tensor>) -> Result<(), TchError> {
        if !self.best.is_empty() {
            self.best_buffers = copies(&buffers)?;
        }
        self.buffers = buffers;
        Ok(())
    }

    /// Sets the learning rate of the next updates (a schedule's step).
    fn set_lr(&mut self, lr: f64) -> Result<(), TchError> {
        self.lr = lr;
        let _ = self.neg_lr_t.f_fill_(-lr)?;
        Ok(())
    }

    fn zero_grad(&self) -> Result<(), TchError> {
        for p in &self.params {
            let mut g = p.f_grad()?;
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), TchError> {
        self.steps += 1;
        let (lr, wd) = (self.lr, self.weight_decay);
        // Adam's bias corrections, folded so the update is one `addcdiv_`:
        // lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)
        //   = m / ((sqrt(v) + eps·sqrt(bc2)) / (lr·sqrt(bc2)/bc1)).
        let t = self.steps as f64;
        let bc1 = 1.0 - BETA1.powf(t);
        let bc2_sqrt = (1.0 - BETA2.powf(t)).sqrt();
        let eps = EPS * bc2_sqrt;
        let neg_step_size = -lr * bc2_sqrt / bc1;
        tch::no_grad(|| {
            for i in 0..self.params.len() {
                let p = &mut self.params[i];
                let mut g = p.f_grad()?;
                if !g.defined() {
                    continue;
                }
                // The gradient is scratch space: it is zeroed before the
                // next backward pass.
                if wd != 0.0 && self.kind != OptimizerKind::AdamW {
                    let _ = g.f_addcmul_(p, &self.weight_decay_t)?;
                }
                match self.kind {
                    OptimizerKind::Sgd => {
                        let direction = match self.first.get_mut(i) {
                            Some(buf) => {
                                let _ = buf.f_mul_scalar_(self.momentum)?;
                                let _ = buf.f_add_(&g)?;
                                if self.nesterov {
                                    // g + momentum · buf, in the gradient's scratch space.
                                    let _ = g.f_add_(&buf.f_mul_scalar(self.momentum)?)?;
                                    g
                                } else {
                                    buf.shallow_clone()
                                }
                            }
                            None => g,
                        };
                        let _ = p.f_addcmul_(&direction, &self.neg_lr_t)?;
                    }
                    OptimizerKind::RmsProp => {
                        // PyTorch's defaults: alpha 0.99, eps 1e-8, no
                        // momentum, not centred.
                        let v = &mut self.second[i];
                        let _ = v.f_lerp_(&g.f_mul(&g)?, 1.0 - RMS_ALPHA)?;
                        let mut denom = v.f_sqrt()?;
                        let _ = denom.f_add_scalar_(EPS)?;
                        let _ = denom.f_div_scalar_(-lr)?;
                        let _ = p.f_addcdiv_(&g, &denom)?;
                    }
                    OptimizerKind::Adam | OptimizerKind::AdamW => {
                        if self.kind == OptimizerKind::AdamW && wd != 0.0 {
                            let _ = p.f_mul_scalar_(1.0 - lr * wd)?;
                        }
                        let (m, v) = (&mut self.first[i], &mut self.second[i]);
                        let _ = m.f_lerp_(&g, 1.0 - BETA1)?;
                        let _ = v.f_lerp_(&g.f_mul(&g)?, 1.0 - BETA2)?;
                        let mut denom = v.f_sqrt()?;
                        let _ = denom.f_add_scalar_(eps)?;
                        let _ = denom.f_div_scalar_(neg_step_size)?;
                        let _ = p.f_addcdiv_(m, &denom)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// The tensors a checkpoint holds, named by kind and position (an
    /// MLP has no buffers: its checkpoints are what they were before the
    /// buffers existed).
    fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        [
            ("p", &self.params),
            ("f", &self.first),
            ("s", &self.second),
            ("b", &self.best),
            ("r", &self.buffers),
            ("q", &self.best_buffers),
        ]
        .into_iter()
        .flat_map(|(prefix, tensors)| {
            tensors
                .iter()
                .enumerate()
                .map(move |(i, t)| (format!("{prefix}{i}"), t))
        })
        .collect()
    }
}

/// A checkpoint starts with this (8 bytes), then the format version.
/// The magic names the trainer, so that a checkpoint of one model kind is
/// refused by another with a clear message.
fn magic(kind: ModelKind) -> &'static [u8; 8] {
    match kind {
        ModelKind::Mlp => b"hpo-mlp\0",
        ModelKind::Cnn => b"hpo-cnn\0",
        ModelKind::ResNet => b"hpo-res\0",
    }
}
const KINDS: [ModelKind; 3] = [ModelKind::Mlp, ModelKind::Cnn, ModelKind::ResNet];
const FORMAT_VERSION: u32 = 2;
/// Magic, version, step, fingerprint, optimizer steps, early stopping's
/// best value, best epoch and epochs since, payload length and its CRC-32.
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 4 + 4 + 8 + 4;

/// Identifies what a checkpoint may be resumed by: every setting that shapes
/// the tensors or the training path. FNV-1a over a canonical text, so that
/// it is the same on every worker and build.
///
/// The MLP's text is the one it had before the other models existed (one
/// struct of its architecture's and the training's fields), so that its
/// checkpoints stay resumable; the other models' texts name their kind and
/// architecture.
fn fingerprint(config: &Config, a: &Assignment) -> u64 {
    let settings = format!("{:?}", config.settings);
    let model = match &config.arch {
        Arch::Mlp { hidden, layers } => format!(
            "MlpConfig {{ hidden: {hidden}, layers: {layers}, {}",
            settings.split_once("{ ").map_or("", |(_, fields)| fields)
        ),
        arch => format!("{arch:?} {settings}"),
    };
    let text = format!(
        "{model}|{}|{}|{}",
        a.trainer.dataset,
        a.resource.as_str(),
        a.max_resource
    );
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The checkpoint after `step`: a header, then the weights and optimizer
/// buffers in libtorch's serialization format. The random state is the step
/// itself (see [`epoch_rng`]).
fn save(
    kind: ModelKind,
    opt: &Optimizer,
    step: u32,
    fingerprint: u64,
) -> Result<Vec<u8>, TrainError> {
    let mut payload = Vec::new();
    Tensor::save_multi_to_stream(&opt.named_tensors(), &mut payload)?;
    let mut crc = flate2::Crc::new();
    crc.update(&payload);
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(magic(kind));
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&step.to_le_bytes());
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    bytes.extend_from_slice(&opt.steps.to_le_bytes());
    bytes.extend_from_slice(&opt.stop.best.unwrap_or(f64::NAN).to_bits().to_le_bytes());
    bytes.extend_from_slice(&opt.stop.best_epoch.to_le_bytes());
    bytes.extend_from_slice(&opt.stop.since.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc.sum().to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Restores the state `save` wrote into `opt`, after checking that the
/// bytes are whole, of this format, of this configuration and of `step`.
fn restore(
    kind: ModelKind,
    bytes: &[u8],
    opt: &mut Optimizer,
    step: u32,
    fingerprint: u64,
    device: tch::Device,
) -> Result<(), TrainError> {
    let bad =
        |why: String| TrainError::Invalid(format!("cannot resume from the checkpoint: {why}"));
    if let Some(other) = KINDS
        .into_iter()
        .find(|&k| k != kind && bytes.starts_with(magic(k)))
    {
        return Err(bad(format!(
            "it is a checkpoint of the {} trainer, this trial is of the {} trainer",
            other.name(),
            kind.name()
        )));
    }
    if bytes.len() < HEADER_LEN || !bytes.starts_with(magic(kind)) {
        return Err(bad(format!(
            "not a checkpoint of the {} trainer ({} bytes)",
            kind.name(),
            bytes.len()
        )));
    }
    let mut at = magic(kind).len();
    let mut take = |n: usize| {
        let field = &bytes[at..at + n];
        at += n;
        field
    };
    let u32_at = |b: &[u8]| b.iter().rev().fold(0u32, |v, &x| (v << 8) | u32::from(x));
    let u64_at = |b: &[u8]| b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x));
    let version = u32_at(take(4));
    let saved_step = u32_at(take(4));
    let saved_fingerprint = u64_at(take(8));
    let opt_steps = u64_at(take(8));
    let best = f64::from_bits(u64_at(take(8)));
    let best_epoch = u32_at(take(4));
    let since = u32_at(take(4));
    let len = u64_at(take(8));
    let crc = u32_at(take(4));
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this worker reads version {FORMAT_VERSION}"
        )));
    }
    if saved_fingerprint != fingerprint {
        return Err(bad(
            "it was saved by a trial of another configuration (parameters, data set, seed or schedule differ)"
                .to_string(),
        ));
    }
    if saved_step != step {
        return Err(bad(format!(
            "it is of step {saved_step}, the trial resumes after step {step}"
        )));
    }
    let payload = &bytes[HEADER_LEN..];
    let mut check = flate2::Crc::new();
    check.update(payload);
    if payload.len() as u64 != len || check.sum() != crc {
        return Err(bad(format!(
            "it is truncated or corrupt ({} bytes of tensors, {len} expected)",
            payload.len()
        )));
    }
    let loaded: HashMap<String, Tensor> =
        Tensor::load_multi_from_stream_with_device(Cursor::new(payload), device)
            .map_err(|e| bad(format!("libtorch cannot read its tensors: {e}")))?
            .into_iter()
            .collect();
    let mut targets = opt.named_tensors();
    if loaded.len() != targets.len() {
        return Err(bad(format!(
            "it holds {} tensors, this trial has {}",
            loaded.len(),
            targets.len()
        )));
    }
    tch::no_grad(|| {
        for (name, target) in &mut targets {
            let source = loaded
                .get(name.as_str())
                .ok_or_else(|| bad(format!("tensor {name} is missing")))?;
            if source.size() != target.size() || source.kind() != target.kind() {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, the trial's is {:?} {:?}",
                    source.kind(),
                    source.size(),
                    target.kind(),
                    target.size()
                )));
            }
            // A shallow clone shares the variable's storage: copying into it
            // restores the variable itself, on its device.
            target.shallow_clone().f_copy_(source)?;
        }
        Ok::<_, TrainError>(())
    })?;
    opt.steps = opt_steps;
    opt.stop = EarlyStop {
        best: (!best.is_nan()).then_some(best),
        best_epoch,
        since,
    };
    Ok(())
}

/// The seeds of a trial's independent random streams, all drawn from its
/// seed, so that e.g. adding dropout changes neither the initial weights nor
/// the shuffles of an otherwise identical trial.
struct Seeds {
    init: u64,
    shuffle: u64,
    dropout: u64,
    /// The fixed order of the training set that data-fraction budgets take
    /// their prefixes of.
    subset: u64,
    /// Augmentation's random crops, shifts and flips (drawn last, so the
    /// other streams are what they were before it existed).
    augment: u64,
}

impl Seeds {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Seeds {
            init: rng.r#gen(),
            shuffle: rng.r#gen(),
            dropout: rng.r#gen(),
            subset: rng.r#gen(),
            augment: rng.r#gen(),
        }
    }
}

/// SplitMix64's finaliser: a bijection of u64 that scatters nearby inputs.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator for `stream` at `epoch`: each epoch's shuffle and dropout
/// masks are a function of the trial's seed and the epoch alone, so the
/// random state to checkpoint is just the epoch, and a trial resumed at
/// epoch k draws exactly what an uninterrupted one would.
fn epoch_rng(stream: u64, epoch: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix64(stream ^ splitmix64(epoch)))
}

/// Draws inverted-dropout masks from a per-trial generator: each unit is
/// kept with probability 1-p and scaled by 1/(1-p), as `Tensor::dropout`
/// does, but without libtorch's global generator. Buffers are reused across
/// batches; the generator is replaced at each epoch ([`epoch_rng`]).
pub(super) struct DropoutMasks {
    pub(super) rng: StdRng,
    /// Units are dropped when a uniform u16 is below this.
    threshold: u16,
    scale: f32,
    bits: Vec<u16>,
    values: Vec<f32>,
}

impl DropoutMasks {
    pub(super) fn new(p: f64) -> Self {
        let threshold = (p * 65_536.0).round().min(65_535.0) as u16;
        // Scale by the probability actually used, so the mask's expectation
        // is exactly 1 despite rounding p to 1/65536.
        let scale = (65_536.0 / (65_536.0 - f64::from(threshold))) as f32;
        DropoutMasks {
            rng: StdRng::seed_from_u64(0),
            threshold,
            scale,
            bits: Vec::new(),
            values: Vec::new(),
        }
    }

    /// The masks of `layers` layers of `width` units for `rows` rows.
    pub(super) fn draw(
        &mut self,
        layers: usize,
        rows: i64,
        width: i64,
        device: tch::Device,
    ) -> Result<Tensor, TchError> {
        self.draw_shape(&[layers as i64, rows, width], device)
    }

    /// A mask of `shape`, drawn in row-major order.
    pub(super) fn draw_shape(
        &mut self,
        shape: &[i64],
        device: tch::Device,
    ) -> Result<Tensor, TchError> {
        let n = shape.iter().product::<i64>().max(0) as usize;
        self.bits.resize(n, 0);
        self.rng.fill(self.bits.as_mut_slice());
        self.values.clear();
        let (threshold, scale) = (self.threshold, self.scale);
        self.values.extend(
            self.bits
                .iter()
                .map(|&b| if b < threshold { 0.0 } else { scale }),
        );
        Tensor::f_from_slice(&self.values)?
            .f_view(shape)?
            .f_to_device(device)
    }
}

/// The first `round(n × budget / max)` examples (at least a batch, at most
/// all) of a fixed permutation of the `n` training examples: a larger budget
/// trains on a superset of a smaller one's examples.
fn fraction_rows(seed: u64, n: i64, budget: u32, max: u32, batch: i64) -> Vec<i64> {
    let mut rows: Vec<i64> = (0..n).collect();
    rows.shuffle(&mut StdRng::seed_from_u64(seed));
    let share = (n as f64 * f64::from(budget) / f64::from(max.max(1))).round() as i64;
    rows.truncate(share.max(batch.min(n)).min(n) as usize);
    rows
}

/// Checks the segment's bounds before any work: a resume must come with
/// its bytes and stay within the budget, which stays within the maximum.
fn check_segment(job: &TrialJob) -> Result<(), TrainError> {
    let a = &job.assignment;
    let (start, budget, max) = (job.start_step(), a.budget, a.max_resource);
    if max == 0 || budget > max || start > budget {
        return Err(TrainError::Invalid(format!(
            "a segment from step {start} to budget {budget} of max_resource {max} is out of order"
        )));
    }
    if start > 0 && job.resume.is_none() {
        return Err(TrainError::Invalid(format!(
            "resuming after step {start} needs the checkpoint's bytes"
        )));
    }
    Ok(())
}

/// Everything one epoch of training needs.
struct Training<'a> {
    config: &'a Settings,
    schedule: Schedule,
    model: &'a dyn Model,
    /// The weights the L1 penalty applies to.
    penalised: Vec<Tensor>,
    opt: Optimizer,
    masks: Option<DropoutMasks>,
    seeds: Seeds,
    train_x: Tensor,
    train_y: Tensor,
    /// One output, mean squared error on standardised targets.
    regression: bool,
    /// Image augmentation: the images' layout, the padding's value (their
    /// black) and the epoch's generator; None when off.
    augment: Option<(crate::data::ImageShape, StdRng)>,
    device: tch::Device,
}

impl Training<'_> {
    /// One pass over `rows` (indices into the training tensors) in the
    /// order of `key`'s shuffle; the mean training loss, or None if a stop
    /// was requested between batches.
    fn epoch(
        &mut self,
        rows: &[i64],
        key: u64,
        reporter: &dyn Reporter,
    ) -> Result<Option<f64>, TrainError> {
        let mut order = rows.to_vec();
        order.shuffle(&mut epoch_rng(self.seeds.shuffle, key));
        if let Some(masks) = self.masks.as_mut() {
            masks.rng = epoch_rng(self.seeds.dropout, key);
        }
        if let Some((_, rng)) = self.augment.as_mut() {
            *rng = epoch_rng(self.seeds.augment, key);
        }
        let n = order.len() as i64;
        let perm = Tensor::f_from_slice(&order)?.f_to_device(self.device)?;
        // Summed on the device and read once per epoch: reading each batch's
        // loss would synchronise with a GPU at every step.
        let mut loss_sum = Tensor::f_zeros([], (Kind::Double, self.device))?;
        let mut start = 0;
        while start < n {
            if reporter.stop_requested() {
                return Ok(None);
            }
            let rows = self.config.batch_size.min(n - start);
            let idx = perm.f_narrow(0, start, rows)?;
            let mut xs = self.train_x.f_index_select(0, &idx)?;
            let ys = self.train_y.f_index_select(0, &idx)?;
            if let Some((shape, rng)) = self.augment.as_mut() {
                let images = xs.f_view([rows, shape.channels, shape.height, shape.width])?;
                let fill = f64::from(shape.background);
                xs = augment_with_fill(&images, &self.config.augment, fill, rng)?
                    .f_view([rows, -1])?;
            }
            let logits = self.model.forward(&xs, Pass::Train(self.masks.as_mut()))?;
            let loss = if self.regression {
                logits.f_squeeze_dim(-1)?.f_mse_loss(&ys, Reduction::Mean)?
            } else {
                logits.f_cross_entropy_loss::<Tensor>(
                    &ys,
                    None,
                    Reduction::Mean,
                    -100,
                    self.config.label_smoothing,
                )?
            };
            self.opt.zero_grad()?;
            if self.config.l1 > 0.0 {
                // The reported loss stays the data's; the penalty only
                // shapes the gradient.
                let mut penalty = Tensor::f_zeros([], (Kind::Float, self.device))?;
                for w in &self.penalised {
                    penalty = penalty.f_add(&w.f_abs()?.f_sum(Kind::Float)?)?;
                }
                loss.f_add(&penalty.f_mul_scalar(self.config.l1)?)?
                    .f_backward()?;
            } else {
                loss.f_backward()?;
            }
            if self.config.grad_clip > 0.0 {
                let _ = clip_grad_norm(&self.opt.params, self.config.grad_clip)?;
            }
            // The update count survives a pause, so a resumed trial goes on
            // along the same schedule.
            let lr = self.schedule.lr_at(self.opt.steps);
            if lr != self.opt.lr {
                self.opt.set_lr(lr)?;
            }
            self.opt.step()?;
            let _ = loss_sum.f_add_(&loss.detach().f_mul_scalar(rows as f64)?)?;
            start += rows;
        }
        Ok(Some(loss_sum.f_double_value(&[])? / n.max(1) as f64))
    }
}

fn run(
    whole: &Config,
    data: &Dataset,
    job: &TrialJob,
    reporter: &mut dyn Reporter,
) -> Result<TrainEnd, TrainError> {
    let (config, kind) = (&whole.settings, whole.arch.kind());
    let a = &job.assignment;
    let device = job.device.to_tch();
    // One copy of the data per trial, moved to the device once.
    let limit = (config.train_subset > 0).then_some(config.train_subset);
    let (train_x, train_y) = data.train_tensors(limit, device)?;
    let (val_x, val_y) = data.val_tensors(device)?;
    let n_train = train_y.size()[0];
    let n_val = val_y.size()[0];
    // Regression trains on standardised targets (one output unit, mean
    // squared error) and reports its metrics in the targets' own units.
    let target = data.target_stats();
    let train_y = match target {
        Some(t) => train_y.f_sub_scalar(t.mean)?.f_div_scalar(t.std)?,
        None => train_y,
    };

    let seeds = Seeds::new(config.seed);
    let model = whole.arch.build(
        &mut StdRng::seed_from_u64(seeds.init),
        config.activation,
        data.features,
        data.image_shape(),
        if target.is_some() { 1 } else { data.classes },
        device,
    )?;
    let model = model.as_ref();
    let mut opt = Optimizer::new(config, model.parameters())?;
    opt.track_buffers(model.buffers())?;
    let fingerprint = fingerprint(whole, a);
    let start = job.start_step();
    if let Some(bytes) = &job.resume {
        restore(kind, bytes, &mut opt, start, fingerprint, device)?;
    }
    reporter.log(&format!(
        "{}; {} trainable parameters\n",
        model.summary(),
        parameter_count(model)
    ));
    let augment = match data.image_shape() {
        _ if config.augment.is_off() => None,
        Some(shape) => Some((shape, epoch_rng(seeds.augment, 0))),
        None => {
            return Err(TrainError::Invalid(format!(
                "augmentation is for image data sets; `{}` is not one",
                a.trainer.dataset
            )));
        }
    };
    // Balancing repeats or drops training rows (classification only).
    let rows: Vec<i64> = match config.balance {
        Balance::None => (0..n_train).collect(),
        _ if target.is_some() => {
            return Err(TrainError::Invalid(
                "balance is for classification data sets; this one is a regression".into(),
            ));
        }
        mode => {
            let labels = Vec::<i64>::try_from(train_y.f_to_device(tch::Device::Cpu)?)?;
            balanced_rows(&labels, mode, seeds.subset)
        }
    };
    let steps_per_epoch = (rows.len().max(1) as u64).div_ceil(config.batch_size as u64);
    let mut training = Training {
        schedule: Schedule::new(
            config.schedule,
            config.lr,
            config.warmup_epochs,
            steps_per_epoch,
            config.epochs,
        ),
        config,
        model,
        penalised: model.penalised(),
        opt,
        masks: (config.dropout > 0.0).then(|| DropoutMasks::new(config.dropout)),
        seeds,
        train_x,
        train_y,
        regression: target.is_some(),
        augment,
        device,
    };
    let classes = data.classes as usize;
    let val_labels = match target {
        Some(_) => Vec::new(),
        None => Vec::<i64>::try_from(val_y.f_to_device(tch::Device::Cpu)?)?,
    };
    let metrics = |train_loss: f64| {
        if let Some(t) = target {
            let (loss, r) = evaluate_regression(model, &val_x, data.val_targets(), t)?;
            let mut values = MetricValues::from([
                ("train_loss".to_string(), train_loss),
                ("val_loss".to_string(), loss),
            ]);
            r.insert_into("val_", &mut values);
            return Ok(values);
        }
        let e = evaluate(model, &val_x, &val_y, n_val, classes == 2)?;
        let mut values = MetricValues::from([("train_loss".to_string(), train_loss)]);
        crate::metrics::classification(&e.predicted, &val_labels, classes, e.scores.as_deref())
            .insert_into("val_", &mut values);
        values.insert("val_loss".to_string(), e.loss);
        values.insert("val_accuracy".to_string(), e.accuracy);
        Ok::<_, TrainError>(values)
    };

    let budget = a.budget;
    match a.resource {
        Resource::Epochs => {
            for epoch in start + 1..=budget {
                let started = Instant::now();
                let Some(train_loss) = training.epoch(&rows, u64::from(epoch), reporter)? else {
                    return Ok(TrainEnd::Stopped);
                };
                let rate = rows.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
                if reporter.stop_requested() {
                    return Ok(TrainEnd::Stopped);
                }
                let mut values = metrics(train_loss)?;
                values.insert(SAMPLES_PER_SEC.to_string(), rate);
                let early_stop = config.patience > 0
                    && training.opt.observe(
                        epoch,
                        values.get(&config.early_stopping_metric).copied(),
                        minimized(&config.early_stopping_metric),
                        config.patience,
                    )?;
                match reporter.report(epoch, values) {
                    Decision::Continue if early_stop => {
                        // Ended by its own early stopping: a completed trial.
                        training.opt.restore_best()?;
                        return if a.save_final {
                            Ok(TrainEnd::FinishedSaved {
                                checkpoint: save(kind, &training.opt, a.max_resource, fingerprint)?,
                            })
                        } else {
                            Ok(TrainEnd::Finished)
                        };
                    }
                    Decision::Continue => {}
                    Decision::Stop => return Ok(TrainEnd::Stopped),
                    Decision::Pause => {
                        return Ok(TrainEnd::Paused {
                            step: epoch,
                            checkpoint: save(kind, &training.opt, epoch, fingerprint)?,
                        });
                    }
                }
            }
        }
        Resource::DataFraction if start < budget => {
            let rows = fraction_rows(
                training.seeds.subset,
                n_train,
                budget,
                a.max_resource,
                config.batch_size,
            );
            let mut train_loss = f64::NAN;
            let started = Instant::now();
            for epoch in 1..=config.epochs {
                // Keys of (budget, epoch): each segment has its own shuffles.
                let key = (u64::from(budget) << 32) | u64::from(epoch);
                match training.epoch(&rows, key, reporter)? {
                    Some(loss) => train_loss = loss,
                    None => return Ok(TrainEnd::Stopped),
                }
            }
            let rate = (rows.len() as f64 * f64::from(config.epochs))
                / started.elapsed().as_secs_f64().max(1e-9);
            if reporter.stop_requested() {
                return Ok(TrainEnd::Stopped);
            }
            let mut values = metrics(train_loss)?;
            values.insert(SAMPLES_PER_SEC.to_string(), rate);
            match reporter.report(budget, values) {
                Decision::Continue => {}
                Decision::Stop => return Ok(TrainEnd::Stopped),
                Decision::Pause => {
                    return Ok(TrainEnd::Paused {
                        step: budget,
                        checkpoint: save(kind, &training.opt, budget, fingerprint)?,
                    });
                }
            }
        }
        // Resumed at its budget already: nothing to train in this segment.
        Resource::DataFraction => {}
    }
    super::segment_end(job, budget, || {
        save(kind, &training.opt, budget, fingerprint)
    })
}

/// Whether lower is better for a metric, by its name: losses and errors.
fn minimized(metric: &str) -> bool {
    ["loss", "error", "rmse", "mae", "mse"]
        .iter()
        .any(|k| metric.contains(k))
}

/// Early stopping inside a trial: the best value of the watched metric so
/// far, its epoch, and the epochs since it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct EarlyStop {
    best: Option<f64>,
    best_epoch: u32,
    since: u32,
}

impl Optimizer {
    /// Records one epoch's value; true once `patience` epochs passed
    /// without improvement. Keeps a copy of the best weights when they are
    /// to be restored.
    fn observe(
        &mut self,
        epoch: u32,
        value: Option<f64>,
        minimize: bool,
        patience: u32,
    ) -> Result<bool, TchError> {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            self.stop.since += 1;
            return Ok(self.stop.since >= patience);
        };
        let better = match self.stop.best {
            None => true,
            Some(b) if minimize => v < b,
            Some(b) => v > b,
        };
        if better {
            self.stop = EarlyStop {
                best: Some(v),
                best_epoch: epoch,
                since: 0,
            };
            tch::no_grad(|| {
                let kept = self.best.iter().zip(&self.params);
                for (b, p) in kept.chain(self.best_buffers.iter().zip(&self.buffers)) {
                    b.shallow_clone().f_copy_(p)?;
                }
                Ok::<_, TchError>(())
            })?;
        } else {
            self.stop.since += 1;
        }
        Ok(self.stop.since >= patience)
    }

    /// Puts the best epoch's weights (and buffers) back (when they were kept).
    fn restore_best(&mut self) -> Result<(), TchError> {
        tch::no_grad(|| {
            let kept = self.params.iter().zip(&self.best);
            for (p, b) in kept.chain(self.buffers.iter().zip(&self.best_buffers)) {
                p.shallow_clone().f_copy_(b)?;
            }
            Ok(())
        })
    }
}

/// Scales the gradients so that their global L2 norm is at most `max`, as
/// PyTorch's `clip_grad_norm_` does (without reading the norm back, which
/// would synchronise with a GPU at every step); the norm before, as a
/// 0-dimensional tensor.
fn clip_grad_norm(params: &[Tensor], max: f64) -> Result<Tensor, TchError> {
    tch::no_grad(|| {
        let device = params.first().map_or(tch::Device::Cpu, Tensor::device);
        let mut sq = Tensor::f_zeros([], (Kind::Float, device))?;
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.f_grad())
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(Tensor::defined)
            .collect();
        for g in &grads {
            sq = sq.f_add(&g.f_square()?.f_sum(Kind::Float)?)?;
        }
        let norm = sq.f_sqrt()?;
        let coef = norm
            .f_add_scalar(1e-6)?
            .f_reciprocal()?
            .f_mul_scalar(max)?
            .f_clamp_max(1.0)?;
        for g in &grads {
            let _ = g.shallow_clone().f_mul_(&coef)?;
        }
        Ok(norm)
    })
}

/// A regression model on the validation set: the mean squared error in
/// standardised units (what training minimises), and RMSE, MAE and R² in
/// the targets' own.
fn evaluate_regression(
    model: &dyn Model,
    xs: &Tensor,
    targets: &[f32],
    t: crate::data::TargetStats,
) -> Result<(f64, crate::metrics::Regression), TchError> {
    tch::no_grad(|| {
        let n = xs.size()[0];
        let mut predicted = Vec::with_capacity(n as usize);
        let mut start = 0;
        while start < n {
            let rows = model.eval_rows().min(n - start);
            let out = model
                .forward(&xs.f_narrow(0, start, rows)?, Pass::Eval)?
                .f_squeeze_dim(-1)?
                .f_to_kind(Kind::Double)?
                .f_to_device(tch::Device::Cpu)?;
            predicted.extend(
                Vec::<f64>::try_from(out)?
                    .into_iter()
                    .map(|p| p * t.std + t.mean),
            );
            start += rows;
        }
        let targets: Vec<f64> = targets.iter().map(|&y| f64::from(y)).collect();
        let r = crate::metrics::regression(&predicted, &targets);
        Ok(((r.rmse / t.std).powi(2), r))
    })
}

/// The validation set's mean cross-entropy, accuracy, predicted classes
/// and (binary tasks) scores of class 1.
struct Evaluation {
    loss: f64,
    accuracy: f64,
    predicted: Vec<i64>,
    scores: Option<Vec<f64>>,
}

/// Evaluates on the validation set in batches of the model's
/// `eval_rows`, without dropout or gradients.
fn evaluate(
    model: &dyn Model,
    xs: &Tensor,
    ys: &Tensor,
    n: i64,
    binary: bool,
) -> Result<Evaluation, TchError> {
    tch::no_grad(|| {
        let device = xs.device();
        let mut loss_sum = Tensor::f_zeros([], (Kind::Double, device))?;
        let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
        let mut predicted = Vec::new();
        let mut scores = Vec::new();
        let mut start = 0;
        while start < n {
            let rows = model.eval_rows().min(n - start);
            let x = xs.f_narrow(0, start, rows)?;
            let y = ys.f_narrow(0, start, rows)?;
            let logits = model.forward(&x, Pass::Eval)?;
            let classes = logits.f_argmax(-1, false)?;
            predicted.extend(Vec::<i64>::try_from(
                classes.f_to_device(tch::Device::Cpu)?,
            )?);
            if binary {
                let p = logits
                    .f_softmax(-1, Kind::Double)?
                    .f_select(1, 1)?
                    .f_to_device(tch::Device::Cpu)?;
                scores.extend(Vec::<f64>::try_from(p)?);
            }
            let _ = loss_sum.f_add_(&logits.f_cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Sum,
                -100,
                0.0,
            )?)?;
            let _ = correct.f_add_(&classes.f_eq_tensor(&y)?.f_sum(Kind::Int64)?)?;
            start += rows;
        }
        let n = n.max(1) as f64;
        Ok(Evaluation {
            loss: loss_sum.f_double_value(&[])? / n,
            accuracy: correct.f_int64_value(&[])? as f64 / n,
            predicted,
            scores: binary.then_some(scores),
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tch::nn::{self, OptimizerConfig};

    fn config(optimizer: OptimizerKind, momentum: f64, weight_decay: f64) -> Settings {
        Settings {
            activation: Activation::Relu,
            dropout: 0.0,
            optimizer,
            lr: 0.05,
            momentum,
            nesterov: false,
            weight_decay,
            l1: 0.0,
            label_smoothing: 0.0,
            grad_clip: 0.0,
            patience: 0,
            early_stopping_metric: "val_loss".into(),
            restore_best: true,
            schedule: LrSchedule::Constant,
            warmup_epochs: 0.0,
            augment: Augment::default(),
            balance: Balance::None,
            batch_size: 8,
            train_subset: 0,
            epochs: 1,
            seed: 1,
        }
    }

    /// Our optimizers follow tch's (libtorch's) update rules: a few steps
    /// on the same least-squares problem end at the same weights, up to
    /// float rounding (the formulas are rearranged).
    #[test]
    fn optimizers_match_tch() {
        let cases = [
            (OptimizerKind::Sgd, 0.9, 0.01, false),
            (OptimizerKind::Sgd, 0.9, 0.01, true),
            (OptimizerKind::Sgd, 0.0, 0.0, false),
            (OptimizerKind::Adam, 0.0, 0.01, false),
            (OptimizerKind::Adam, 0.0, 0.0, false),
            (OptimizerKind::AdamW, 0.0, 0.05, false),
            (OptimizerKind::RmsProp, 0.0, 0.0, false),
            (OptimizerKind::RmsProp, 0.0, 0.01, false),
        ];
        let init: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 4.0).collect();
        let init = Tensor::from_slice(&init).view([3, 4]);
        let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25]).view([4, 1]);
        let y = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).view([3, 1]);
        let loss = |w: &Tensor| (w.matmul(&x) - &y).square().sum(Kind::Float);
        for (kind, momentum, wd, nesterov) in cases {
            let config = Settings {
                nesterov,
                ..config(kind, momentum, wd)
            };
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let theirs = vs.root().var_copy("w", &init);
            let mut reference = match kind {
                OptimizerKind::Sgd => nn::Sgd {
                    momentum,
                    wd,
                    nesterov,
                    ..Default::default()
                }
                .build(&vs, config.lr),
                OptimizerKind::RmsProp => nn::RmsProp {
                    wd,
                    ..Default::default()
                }
                .build(&vs, config.lr),
                OptimizerKind::Adam => nn::Adam {
                    wd,
                    ..Default::default()
                }
                .build(&vs, config.lr),
                OptimizerKind::AdamW => nn::AdamW {
                    wd,
                    ..Default::default()
                }
                .build(&vs, config.lr),
            }
            .unwrap();
            let ours = init.copy().set_requires_grad(true);
            let mut opt = Optimizer::new(&config, vec![ours.shallow_clone()]).unwrap();
            for _ in 0..5 {
                reference.backward_step(&loss(&theirs));
                opt.zero_grad().unwrap();
                loss(&ours).backward();
                opt.step().unwrap();
            }
            let diff = (&ours - &theirs).abs().max().double_value(&[]);
            let moved = (&ours - &init).abs().max().double_value(&[]);
            assert!(
                diff < 1e-5,
                "{kind:?} wd {wd} nesterov {nesterov}: differs by {diff}"
            );
            assert!(moved > 1e-2, "{kind:?}: the weights did not move");
        }
    }

    /// A gradient above the bound is scaled to it, one below is untouched.
    #[test]
    fn gradients_are_clipped_to_the_global_norm() {
        let a = Tensor::from_slice(&[3.0f32, 0.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.0f32, 4.0]).set_requires_grad(true);
        // Gradients (3, 0) and (0, 4): global norm 5.
        (&a * Tensor::from_slice(&[3.0f32, 0.0]) / 2.0 * &a)
            .sum(Kind::Float)
            .backward();
        (&b * Tensor::from_slice(&[0.0f32, 4.0]) / 8.0 * &b)
            .sum(Kind::Float)
            .backward();
        let grads = |ts: &[&Tensor]| -> Vec<f64> {
            ts.iter()
                .flat_map(|t| Vec::<f64>::try_from(t.grad().to_kind(Kind::Double)).unwrap())
                .collect()
        };
        assert_eq!(grads(&[&a, &b]), [9.0, 0.0, 0.0, 4.0]);
        let params = [a.shallow_clone(), b.shallow_clone()];
        let norm = clip_grad_norm(&params, 1.0).unwrap().double_value(&[]);
        assert!((norm - 97f64.sqrt()).abs() < 1e-4, "{norm}");
        let after: f64 = grads(&[&a, &b]).iter().map(|g| g * g).sum::<f64>().sqrt();
        assert!((after - 1.0).abs() < 1e-4, "clipped to 1: {after}");
        let before = grads(&[&a, &b]);
        let _ = clip_grad_norm(&params, 10.0).unwrap();
        assert_eq!(grads(&[&a, &b]), before, "below the bound: untouched");
    }

    /// Early stopping counts epochs without improvement, in the metric's
    /// direction, and puts the best epoch's weights back.
    #[test]
    fn early_stopping_keeps_and_restores_the_best_epoch() {
        let config = Settings {
            patience: 2,
            ..config(OptimizerKind::Sgd, 0.0, 0.0)
        };
        let w = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut opt = Optimizer::new(&config, vec![w.shallow_clone()]).unwrap();
        let set = |v: f32| tch::no_grad(|| w.shallow_clone().copy_(&Tensor::from_slice(&[v])));
        set(1.0);
        assert!(!opt.observe(1, Some(0.5), true, 2).unwrap());
        set(2.0);
        assert!(!opt.observe(2, Some(0.4), true, 2).unwrap(), "improved");
        set(3.0);
        assert!(!opt.observe(3, Some(0.45), true, 2).unwrap());
        set(4.0);
        assert!(
            opt.observe(4, Some(f64::NAN), true, 2).unwrap(),
            "two epochs without improvement"
        );
        assert_eq!(opt.stop.best_epoch, 2);
        opt.restore_best().unwrap();
        assert_eq!(w.double_value(&[0]), 2.0, "the weights of epoch 2");
        // Maximised metrics improve upwards.
        let mut up = Optimizer::new(&config, vec![w.shallow_clone()]).unwrap();
        assert!(!up.observe(1, Some(0.5), false, 2).unwrap());
        assert!(!up.observe(2, Some(0.6), false, 2).unwrap());
        assert_eq!(up.stop.best, Some(0.6));
        assert!(minimized("val_loss") && !minimized("val_accuracy"));
    }

    /// A model's buffers (batch norm's running statistics) are kept and
    /// put back with the best epoch's weights, and named in checkpoints.
    #[test]
    fn early_stopping_restores_buffers_too() {
        let plain = config(OptimizerKind::Sgd, 0.0, 0.0);
        let stopping = Settings {
            patience: 1,
            ..plain.clone()
        };
        let w = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let running = Tensor::from_slice(&[10.0f32]);
        let mut opt = Optimizer::new(&stopping, vec![w.shallow_clone()]).unwrap();
        opt.track_buffers(vec![running.shallow_clone()]).unwrap();
        let names: Vec<String> = opt.named_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["p0", "b0", "r0", "q0"]);
        assert!(!opt.observe(1, Some(0.5), true, 1).unwrap());
        let _ = running.shallow_clone().fill_(20.0);
        assert!(opt.observe(2, Some(0.6), true, 1).unwrap());
        opt.restore_best().unwrap();
        assert_eq!(running.double_value(&[0]), 10.0);
        // Without early stopping's best weights, no copies either.
        let mut opt = Optimizer::new(&plain, vec![w]).unwrap();
        opt.track_buffers(vec![running]).unwrap();
        let names: Vec<String> = opt.named_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["p0", "r0"]);
    }

    fn assignment(kind: &str, params: &[(&str, ParamValue)]) -> Assignment {
        Assignment {
            trial: hpo_proto::TrialId {
                study: hpo_proto::StudyId(1),
                number: 0,
            },
            attempt: 0,
            study_name: "t".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            trainer: hpo_proto::TrainerConfig {
                kind: kind.into(),
                dataset: "synthetic:spirals".into(),
                epochs: 5,
                ..Default::default()
            },
            seed: 7,
            metric: "val_accuracy".into(),
            resource: Resource::Epochs,
            budget: 5,
            max_resource: 5,
            resume: None,
            save_final: false,
        }
    }

    /// The MLP's fingerprints are those of the release before the other
    /// models (computed then): its paused trials and kept models stay
    /// resumable. The convolutional models' differ by kind and architecture.
    #[test]
    fn mlp_fingerprints_are_unchanged_and_kinds_differ() {
        let fp = |kind: ModelKind, params: &[(&str, ParamValue)]| {
            let a = assignment(kind.name(), params);
            fingerprint(&Config::from_assignment(kind, &a).unwrap(), &a)
        };
        let cat = |s: &str| ParamValue::Categorical(s.into());
        assert_eq!(fp(ModelKind::Mlp, &[]), 0x8673_ee38_88f9_e408);
        let many = [
            ("hidden", ParamValue::Int(64)),
            ("layers", ParamValue::Int(3)),
            ("dropout", ParamValue::Float(0.25)),
            ("lr_schedule", cat("one_cycle")),
            ("augment_hflip", ParamValue::Int(1)),
            ("activation", cat("gelu")),
            ("optimizer", cat("sgd")),
            ("balance", cat("oversample")),
        ];
        assert_eq!(fp(ModelKind::Mlp, &many), 0x1dab_c8d9_fc30_ce11);
        let cnn = fp(ModelKind::Cnn, &[]);
        assert_ne!(cnn, fp(ModelKind::ResNet, &[]));
        assert_ne!(
            cnn,
            fp(ModelKind::Cnn, &[("kernel_size", ParamValue::Int(5))])
        );
        assert_ne!(cnn, fp(ModelKind::Mlp, &[]));
    }
}
