//! The `mlp` trainer: a multi-layer perceptron trained with libtorch on one
//! of the data sets of [`crate::data`], reporting `train_loss`, `val_loss` and
//! `val_accuracy` after each epoch.
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
//! - dropout masks are drawn on the CPU per batch (layers × batch × hidden
//!   floats, about 256 KiB for one layer of 512 units and batches of 128)
//!   rather than with `Tensor::dropout`, which uses the global generator.
//!   The cost is small next to the batch's matrix products on CPU; on a GPU
//!   it is one small host-to-device copy per batch, and only with dropout.
//!
//! Hence no `tch::manual_seed` either: it would only disturb other users of
//! the global generator. What remains is libtorch's arithmetic, which is
//! deterministic on CPU for a fixed thread count (not necessarily on CUDA).

use super::{Reporter, TrainEnd, TrainError, Trainer, TrialJob};
use crate::data::{DATA_SEED, DataCache, Dataset};
use hpo_proto::{Assignment, Decision, MetricValues, ParamValue};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Reduction, TchError, Tensor};

/// Validation rows per forward pass: bounds evaluation memory (hidden width
/// × this many floats per layer) without many small passes.
const EVAL_BATCH: i64 = 2048;

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
        // Settings are checked before anything else, so a bad trial fails
        // at once even when a stop is pending or the data set is large.
        let config = MlpConfig::from_assignment(&job.assignment)?;
        if reporter.stop_requested() {
            return Ok(TrainEnd::Stopped);
        }
        let data = self.data.get(&job.assignment.trainer.dataset, DATA_SEED)?;
        // The non-`f_` calls of tch (the optimizer's step, for one) panic on
        // a libtorch error such as CUDA running out of memory. That is a
        // failed trial, not a reason to lose the slot's thread.
        catch_unwind(AssertUnwindSafe(|| run(&config, &data, job, reporter))).unwrap_or_else(
            |panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("libtorch panicked");
                Err(TrainError::Torch(msg.to_string()))
            },
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Relu,
    Tanh,
    Gelu,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OptimizerKind {
    Adam,
    AdamW,
    Sgd,
}

/// One trial's hyperparameters, defaults filled in and ranges checked.
#[derive(Debug, Clone, PartialEq)]
struct MlpConfig {
    hidden: i64,
    layers: usize,
    activation: Activation,
    dropout: f64,
    optimizer: OptimizerKind,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    batch_size: i64,
    /// 0: the whole training set.
    train_subset: usize,
    epochs: u32,
    seed: u64,
}

/// Looks a parameter up in the searched values first, then in the fixed
/// settings: a study may search a parameter or pin it.
struct ParamSource<'a> {
    assignment: &'a Assignment,
}

impl ParamSource<'_> {
    fn get(&self, name: &str) -> Option<&ParamValue> {
        self.assignment
            .params
            .get(name)
            .or_else(|| self.assignment.trainer.settings.get(name))
    }

    /// A number (an integer is accepted where a float is expected: a fixed
    /// `weight_decay = 0` reads as an integer), checked by `valid`.
    fn float(
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
    fn int(
        &self,
        name: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, TrainError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        let as_int = match value {
            ParamValue::Int(v) => Some(*v),
            ParamValue::Float(v) if v.fract() == 0.0 && v.abs() < 9e15 => Some(*v as i64),
            _ => None,
        };
        match as_int {
            Some(v) if range.contains(&v) => Ok(v),
            _ => Err(invalid(
                name,
                &format!("an integer from {} to {}", range.start(), range.end()),
                value,
            )),
        }
    }

    fn choice<T: Copy>(
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

fn invalid(name: &str, expected: &str, got: &ParamValue) -> TrainError {
    TrainError::Invalid(format!("{name} must be {expected}, got `{got}`"))
}

impl MlpConfig {
    fn from_assignment(assignment: &Assignment) -> Result<Self, TrainError> {
        let p = ParamSource { assignment };
        let epochs = assignment.trainer.epochs;
        if epochs == 0 {
            return Err(TrainError::Invalid(
                "epochs must be at least 1 for the mlp trainer".to_string(),
            ));
        }
        if assignment.trainer.dataset.trim().is_empty() {
            return Err(TrainError::Invalid(
                "the mlp trainer needs a data set (trainer.dataset)".to_string(),
            ));
        }
        Ok(MlpConfig {
            hidden: p.int("hidden", 128, 1..=65_536)?,
            layers: p.int("layers", 1, 1..=64)? as usize,
            activation: p.choice(
                "activation",
                Activation::Relu,
                &[
                    ("relu", Activation::Relu),
                    ("tanh", Activation::Tanh),
                    ("gelu", Activation::Gelu),
                    ("sigmoid", Activation::Sigmoid),
                ],
            )?,
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
                ],
            )?,
            lr: p.float("lr", 1e-3, |v| v > 0.0, "a positive number")?,
            momentum: p.float(
                "momentum",
                0.9,
                |v| (0.0..1.0).contains(&v),
                "a number in [0, 1)",
            )?,
            weight_decay: p.float("weight_decay", 0.0, |v| v >= 0.0, "a number >= 0")?,
            batch_size: p.int("batch_size", 128, 1..=1 << 24)?,
            train_subset: p.int("train_subset", 0, 0..=i64::MAX)? as usize,
            epochs,
            seed: assignment.seed,
        })
    }
}

/// A linear layer's variables.
struct Layer {
    weight: Tensor,
    bias: Tensor,
}

struct Mlp {
    hidden: Vec<Layer>,
    output: Layer,
    activation: Activation,
}

impl Mlp {
    /// Builds the variables in `vs` with weights drawn from `rng`: He-uniform
    /// for ReLU-like hidden layers (keeps the activations' scale through deep
    /// stacks), Glorot-uniform for tanh/sigmoid and the output layer; zero
    /// biases. Not libtorch's initialisers: see the module doc.
    fn new(
        vs: &nn::VarStore,
        rng: &mut StdRng,
        features: i64,
        classes: i64,
        config: &MlpConfig,
    ) -> Result<Self, TchError> {
        let root = vs.root();
        let mut layer = |name: String, fan_in: i64, fan_out: i64, he: bool| {
            let bound = if he {
                (6.0 / fan_in as f64).sqrt()
            } else {
                (6.0 / (fan_in + fan_out) as f64).sqrt()
            } as f32;
            let values: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| rng.gen_range(-bound..=bound))
                .collect();
            let path = root.sub(name);
            let init = Tensor::f_from_slice(&values)?.f_view([fan_out, fan_in])?;
            Ok::<_, TchError>(Layer {
                weight: path.f_var_copy("weight", &init)?,
                bias: path.f_zeros("bias", &[fan_out])?,
            })
        };
        let he = matches!(config.activation, Activation::Relu | Activation::Gelu);
        let mut hidden = Vec::with_capacity(config.layers);
        let mut width = features;
        for i in 0..config.layers {
            hidden.push(layer(format!("hidden{i}"), width, config.hidden, he)?);
            width = config.hidden;
        }
        let output = layer("output".to_string(), width, classes, false)?;
        Ok(Mlp {
            hidden,
            output,
            activation: config.activation,
        })
    }

    /// Logits for `xs`. `masks`, in training only, holds one scaled dropout
    /// mask per hidden layer (`[layers, batch, hidden]`).
    fn forward(&self, xs: &Tensor, masks: Option<&Tensor>) -> Result<Tensor, TchError> {
        let mut h = xs.shallow_clone();
        for (i, layer) in self.hidden.iter().enumerate() {
            h = h.f_linear(&layer.weight, Some(&layer.bias))?;
            h = match self.activation {
                Activation::Relu => h.f_relu()?,
                Activation::Tanh => h.f_tanh()?,
                Activation::Gelu => h.f_gelu("none")?,
                Activation::Sigmoid => h.f_sigmoid()?,
            };
            if let Some(masks) = masks {
                h = h.f_mul(&masks.f_select(0, i as i64)?)?;
            }
        }
        h.f_linear(&self.output.weight, Some(&self.output.bias))
    }
}

/// Draws inverted-dropout masks from a per-trial generator: each unit is
/// kept with probability 1-p and scaled by 1/(1-p), as `Tensor::dropout`
/// does, but without libtorch's global generator. Buffers are reused across
/// batches.
struct DropoutMasks {
    rng: StdRng,
    /// Units are dropped when a uniform u16 is below this.
    threshold: u16,
    scale: f32,
    bits: Vec<u16>,
    values: Vec<f32>,
}

impl DropoutMasks {
    fn new(rng: StdRng, p: f64) -> Self {
        let threshold = (p * 65_536.0).round().min(65_535.0) as u16;
        // Scale by the probability actually used, so the mask's expectation
        // is exactly 1 despite rounding p to 1/65536.
        let scale = (65_536.0 / (65_536.0 - f64::from(threshold))) as f32;
        DropoutMasks {
            rng,
            threshold,
            scale,
            bits: Vec::new(),
            values: Vec::new(),
        }
    }

    fn draw(
        &mut self,
        layers: usize,
        rows: i64,
        width: i64,
        device: tch::Device,
    ) -> Result<Tensor, TchError> {
        let n = layers * rows as usize * width as usize;
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
            .f_view([layers as i64, rows, width])?
            .f_to_device(device)
    }
}

fn run(
    config: &MlpConfig,
    data: &Dataset,
    job: &TrialJob,
    reporter: &mut dyn Reporter,
) -> Result<TrainEnd, TrainError> {
    let device = job.device.to_tch();
    // One copy of the data per trial, moved to the device once.
    let limit = (config.train_subset > 0).then_some(config.train_subset);
    let (train_x, train_y) = data.train_tensors(limit, device)?;
    let (val_x, val_y) = data.val_tensors(device)?;
    let n_train = train_y.size()[0];
    let n_val = val_y.size()[0];

    // Separate streams, so e.g. adding dropout does not change the initial
    // weights or the shuffle of an otherwise identical trial.
    let mut seeds = StdRng::seed_from_u64(config.seed);
    let mut init_rng = StdRng::seed_from_u64(seeds.r#gen());
    let mut shuffle_rng = StdRng::seed_from_u64(seeds.r#gen());
    let mut masks = (config.dropout > 0.0)
        .then(|| DropoutMasks::new(StdRng::seed_from_u64(seeds.r#gen()), config.dropout));

    let vs = nn::VarStore::new(device);
    let model = Mlp::new(&vs, &mut init_rng, data.features, data.classes, config)?;
    let mut opt = match config.optimizer {
        OptimizerKind::Adam => nn::Adam {
            wd: config.weight_decay,
            ..Default::default()
        }
        .build(&vs, config.lr)?,
        OptimizerKind::AdamW => nn::AdamW {
            wd: config.weight_decay,
            ..Default::default()
        }
        .build(&vs, config.lr)?,
        OptimizerKind::Sgd => nn::Sgd {
            momentum: config.momentum,
            wd: config.weight_decay,
            ..Default::default()
        }
        .build(&vs, config.lr)?,
    };

    let mut order: Vec<i64> = (0..n_train).collect();
    for epoch in 1..=config.epochs {
        order.shuffle(&mut shuffle_rng);
        let perm = Tensor::f_from_slice(&order)?.f_to_device(device)?;
        // Summed on the device and read once per epoch: reading each batch's
        // loss would synchronise with a GPU at every step.
        let mut loss_sum = Tensor::f_zeros([], (Kind::Double, device))?;
        let mut start = 0;
        while start < n_train {
            if reporter.stop_requested() {
                return Ok(TrainEnd::Stopped);
            }
            let rows = config.batch_size.min(n_train - start);
            let idx = perm.f_narrow(0, start, rows)?;
            let xs = train_x.f_index_select(0, &idx)?;
            let ys = train_y.f_index_select(0, &idx)?;
            let mask = match masks.as_mut() {
                Some(m) => Some(m.draw(config.layers, rows, config.hidden, device)?),
                None => None,
            };
            let logits = model.forward(&xs, mask.as_ref())?;
            let loss =
                logits.f_cross_entropy_loss::<Tensor>(&ys, None, Reduction::Mean, -100, 0.0)?;
            opt.zero_grad();
            loss.f_backward()?;
            opt.step();
            let _ = loss_sum.f_add_(&loss.detach().f_mul_scalar(rows as f64)?)?;
            start += rows;
        }
        if reporter.stop_requested() {
            return Ok(TrainEnd::Stopped);
        }
        let train_loss = loss_sum.f_double_value(&[])? / n_train as f64;
        let (val_loss, val_accuracy) = evaluate(&model, &val_x, &val_y, n_val)?;
        let values = MetricValues::from([
            ("train_loss".to_string(), train_loss),
            ("val_loss".to_string(), val_loss),
            ("val_accuracy".to_string(), val_accuracy),
        ]);
        if reporter.report(epoch, values) == Decision::Stop {
            return Ok(TrainEnd::Stopped);
        }
    }
    Ok(TrainEnd::Finished)
}

/// Mean cross-entropy and accuracy on the validation set, in batches of
/// [`EVAL_BATCH`], without dropout or gradients.
fn evaluate(model: &Mlp, xs: &Tensor, ys: &Tensor, n: i64) -> Result<(f64, f64), TchError> {
    tch::no_grad(|| {
        let device = xs.device();
        let mut loss_sum = Tensor::f_zeros([], (Kind::Double, device))?;
        let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
        let mut start = 0;
        while start < n {
            let rows = EVAL_BATCH.min(n - start);
            let x = xs.f_narrow(0, start, rows)?;
            let y = ys.f_narrow(0, start, rows)?;
            let logits = model.forward(&x, None)?;
            let _ = loss_sum.f_add_(&logits.f_cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Sum,
                -100,
                0.0,
            )?)?;
            let _ = correct.f_add_(
                &logits
                    .f_argmax(-1, false)?
                    .f_eq_tensor(&y)?
                    .f_sum(Kind::Int64)?,
            )?;
            start += rows;
        }
        let n = n.max(1) as f64;
        Ok((
            loss_sum.f_double_value(&[])? / n,
            correct.f_int64_value(&[])? as f64 / n,
        ))
    })
}
