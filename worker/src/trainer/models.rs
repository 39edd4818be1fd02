//! The models of the libtorch trainers (`mlp`, `cnn`, `resnet`) behind one
//! [`Model`] trait, so that [`super::mlp`]'s training loop (optimizers,
//! schedules, early stopping, checkpoints) is the same for all of them.
//!
//! Every model draws its initial weights from the trial's init stream on
//! the CPU, and its dropout masks from the epoch's dropout stream
//! ([`DropoutMasks`]): never from libtorch's process-global generator, so
//! that concurrent trials cannot disturb each other (see `mlp.rs`).
//!
//! The building blocks here ([`Linear`], [`Conv`], [`BatchNorm`]) hold their
//! variables as plain tensors; a model hands out its trainable ones
//! ([`Model::parameters`]) and its running statistics ([`Model::buffers`])
//! in a fixed order, which is what a checkpoint names them by.

use super::TrainError;
use super::cnn::{Cnn, CnnArch, ResNet, ResNetArch};
use super::mlp::{DropoutMasks, ParamSource};
use crate::data::ImageShape;
use rand::Rng;
use rand::rngs::StdRng;
use tch::{Kind, TchError, Tensor};

/// Validation rows per forward pass of the MLP: bounds evaluation memory
/// (hidden width × this many floats per layer) without many small passes.
pub(super) const EVAL_BATCH: i64 = 2048;

/// Floats the largest activation of one evaluation pass may hold: convolutional
/// models evaluate in batches of `EVAL_FLOATS / (floats per example)` rows
/// (about 64 MiB per activation).
const EVAL_FLOATS: i64 = 1 << 24;

/// Batch norm's constants: PyTorch's defaults.
const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;

/// Which model a trainer builds: the trainer kind's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Mlp,
    Cnn,
    ResNet,
}

impl ModelKind {
    /// The trainer's name in a study file (`trainer.kind`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
            ModelKind::ResNet => "resnet",
        }
    }

    /// Whether the model needs images (`[n, c, h, w]` batches).
    pub(super) fn needs_images(self) -> bool {
        self != ModelKind::Mlp
    }
}

/// A model's architecture: what shapes its tensors (with the input's
/// shape and the number of outputs).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arch {
    Mlp { hidden: i64, layers: usize },
    Cnn(CnnArch),
    ResNet(ResNetArch),
}

impl Arch {
    /// Reads the architecture's parameters of `kind`, defaults filled in.
    pub(super) fn parse(kind: ModelKind, p: &ParamSource<'_>) -> Result<Self, TrainError> {
        Ok(match kind {
            ModelKind::Mlp => Arch::Mlp {
                hidden: p.int("hidden", 128, 1..=65_536)?,
                layers: p.int("layers", 1, 1..=64)? as usize,
            },
            ModelKind::Cnn => Arch::Cnn(CnnArch::parse(p)?),
            ModelKind::ResNet => Arch::ResNet(ResNetArch::parse(p)?),
        })
    }

    pub(super) fn kind(&self) -> ModelKind {
        match self {
            Arch::Mlp { .. } => ModelKind::Mlp,
            Arch::Cnn(_) => ModelKind::Cnn,
            Arch::ResNet(_) => ModelKind::ResNet,
        }
    }

    /// Creates the model's variables on `device`, drawn from `rng`.
    /// `image` is the input's layout (required by the convolutional
    /// models), `features` its flat width.
    pub(super) fn build(
        &self,
        rng: &mut StdRng,
        activation: Activation,
        features: i64,
        image: Option<ImageShape>,
        outputs: i64,
        device: tch::Device,
    ) -> Result<Box<dyn Model>, TrainError> {
        let need_image = || {
            image.ok_or_else(|| {
                TrainError::Invalid(format!(
                    "the {} trainer needs an image data set",
                    self.kind().name()
                ))
            })
        };
        Ok(match self {
            Arch::Mlp { hidden, layers } => Box::new(Mlp::new(
                rng, features, outputs, *hidden, *layers, activation, device,
            )?),
            Arch::Cnn(arch) => Box::new(Cnn::new(
                rng,
                arch,
                need_image()?,
                outputs,
                activation,
                device,
            )?),
            Arch::ResNet(arch) => Box::new(ResNet::new(
                rng,
                arch,
                need_image()?,
                outputs,
                activation,
                device,
            )?),
        })
    }
}

/// What a forward pass is for.
pub(super) enum Pass<'a> {
    /// Evaluation: no dropout, batch norm on its running statistics.
    Eval,
    /// Training: batch norm on the batch's statistics (updating the running
    /// ones), and dropout masks drawn from the generator when there is one.
    Train(Option<&'a mut DropoutMasks>),
}

impl Pass<'_> {
    pub(super) fn training(&self) -> bool {
        matches!(self, Pass::Train(_))
    }

    /// `h` with inverted dropout applied (in training with dropout on),
    /// its mask drawn in `h`'s shape.
    pub(super) fn dropout(&mut self, h: Tensor) -> Result<Tensor, TchError> {
        match self {
            Pass::Train(Some(masks)) => {
                let mask = masks.draw_shape(&h.size(), h.device())?;
                h.f_mul(&mask)
            }
            _ => Ok(h),
        }
    }
}

/// A model the training loop of [`super::mlp`] can train.
pub(super) trait Model {
    /// Outputs (logits, or one value for regression) for a batch of flat
    /// rows `[n, features]`; image models view them as `[n, c, h, w]`.
    fn forward(&self, xs: &Tensor, pass: Pass<'_>) -> Result<Tensor, TchError>;
    /// Handles on the trainable variables, in a fixed order: the optimizer
    /// updates them in place and the checkpoint names them by position.
    fn parameters(&self) -> Vec<Tensor>;
    /// The variables the L1 penalty applies to: the weights of linear and
    /// convolutional layers (not biases, not batch norm's scales and shifts).
    fn penalised(&self) -> Vec<Tensor>;
    /// State that is not trained but changes in training: batch norm's
    /// running mean, variance and batch count. Saved in checkpoints, so a
    /// resumed trial evaluates as an uninterrupted one.
    fn buffers(&self) -> Vec<Tensor> {
        Vec::new()
    }
    /// Rows per evaluation pass.
    fn eval_rows(&self) -> i64 {
        EVAL_BATCH
    }
    /// One line for the trial's log: the layers and their widths.
    fn summary(&self) -> String;
}

/// The number of trainable values of a model.
pub(super) fn parameter_count(model: &dyn Model) -> i64 {
    model.parameters().iter().map(Tensor::numel).sum::<usize>() as i64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activation {
    Relu,
    Tanh,
    Gelu,
    Sigmoid,
}

impl Activation {
    pub(super) const CHOICES: &[(&str, Activation)] = &[
        ("relu", Activation::Relu),
        ("tanh", Activation::Tanh),
        ("gelu", Activation::Gelu),
        ("sigmoid", Activation::Sigmoid),
    ];

    pub(super) fn apply(self, h: &Tensor) -> Result<Tensor, TchError> {
        match self {
            Activation::Relu => h.f_relu(),
            Activation::Tanh => h.f_tanh(),
            Activation::Gelu => h.f_gelu("none"),
            Activation::Sigmoid => h.f_sigmoid(),
        }
    }

    /// He initialisation suits ReLU-like units (it keeps the activations'
    /// scale through deep stacks), Glorot the saturating ones.
    pub(super) fn he(self) -> bool {
        matches!(self, Activation::Relu | Activation::Gelu)
    }
}

/// How a layer's weights are drawn, all uniform in `[-bound, bound]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Init {
    /// He: `bound = sqrt(6 / fan_in)`, zero biases (the MLP's ReLU-like
    /// hidden layers: keeps the activations' scale through deep stacks).
    He,
    /// Glorot: `bound = sqrt(6 / (fan_in + fan_out))`, zero biases (the
    /// MLP's tanh/sigmoid and output layers).
    Glorot,
    /// PyTorch's default for `nn.Linear` and `nn.Conv2d` (Kaiming-uniform
    /// with `a = sqrt(5)`): `bound = 1 / sqrt(fan_in)`, biases too. The
    /// convolutional models use it, so that they train as the same model
    /// written in PyTorch does.
    Torch,
}

impl Init {
    /// `fan_in` and `fan_out` count the kernel's area for a convolution.
    fn bound(self, fan_in: i64, fan_out: i64) -> f32 {
        match self {
            Init::He => (6.0 / fan_in as f64).sqrt() as f32,
            Init::Glorot => (6.0 / (fan_in + fan_out) as f64).sqrt() as f32,
            Init::Torch => (1.0 / fan_in as f64).sqrt() as f32,
        }
    }

    /// A bias of `n` values: zero, or for `Torch` uniform like the weights.
    fn bias(
        self,
        rng: &mut StdRng,
        n: i64,
        fan_in: i64,
        device: tch::Device,
    ) -> Result<Tensor, TchError> {
        match self {
            Init::Torch => uniform(rng, &[n], self.bound(fan_in, n), device),
            Init::He | Init::Glorot => constant(&[n], 0.0, device),
        }
    }
}

/// A trainable variable of `shape` on `device`, uniform in `[-bound, bound]`,
/// drawn from `rng` on the CPU in row-major order and copied over: a fresh
/// leaf on the device (not a view of the host buffer), as a `VarStore`
/// would make it.
pub(super) fn uniform(
    rng: &mut StdRng,
    shape: &[i64],
    bound: f32,
    device: tch::Device,
) -> Result<Tensor, TchError> {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.gen_range(-bound..=bound)).collect();
    let init = Tensor::f_from_slice(&values)?.f_view(shape)?;
    let mut weight = Tensor::f_zeros(shape, (Kind::Float, device))?;
    tch::no_grad(|| weight.f_copy_(&init))?;
    weight.f_set_requires_grad(true)
}

/// A trainable variable of `shape` filled with `value`.
pub(super) fn constant(shape: &[i64], value: f64, device: tch::Device) -> Result<Tensor, TchError> {
    Tensor::f_full(shape, value, (Kind::Float, device))?.f_set_requires_grad(true)
}

/// A linear layer's variables.
pub(super) struct Linear {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
}

impl Linear {
    /// Weights drawn by `init`, then the bias.
    pub(super) fn new(
        rng: &mut StdRng,
        fan_in: i64,
        fan_out: i64,
        init: Init,
        device: tch::Device,
    ) -> Result<Self, TchError> {
        let bound = init.bound(fan_in, fan_out);
        let weight = uniform(rng, &[fan_out, fan_in], bound, device)?;
        Ok(Linear {
            weight,
            bias: init.bias(rng, fan_out, fan_in, device)?,
        })
    }

    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        xs.f_linear(&self.weight, Some(&self.bias))
    }

    pub(super) fn parameters(&self) -> [Tensor; 2] {
        [self.weight.shallow_clone(), self.bias.shallow_clone()]
    }
}

/// A 2-d convolution with a square kernel of odd size, 'same' padding
/// (`kernel / 2`), and a bias only when no batch norm follows; initialised
/// as PyTorch's `nn.Conv2d` ([`Init::Torch`]).
pub(super) struct Conv {
    pub(super) weight: Tensor,
    pub(super) bias: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl Conv {
    pub(super) fn new(
        rng: &mut StdRng,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        device: tch::Device,
    ) -> Result<Self, TchError> {
        let area = kernel * kernel;
        let bound = Init::Torch.bound(c_in * area, c_out * area);
        Ok(Conv {
            weight: uniform(rng, &[c_out, c_in, kernel, kernel], bound, device)?,
            bias: None,
            stride,
            padding: kernel / 2,
        })
    }

    /// The same convolution with a bias (drawn right after the weights,
    /// as PyTorch does).
    pub(super) fn with_bias(mut self, rng: &mut StdRng) -> Result<Self, TchError> {
        let size = self.weight.size();
        let fan_in = size[1..].iter().product();
        let bias = Init::Torch.bias(rng, size[0], fan_in, self.weight.device())?;
        self.bias = Some(bias);
        Ok(self)
    }

    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        xs.f_conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }

    pub(super) fn parameters(&self) -> Vec<Tensor> {
        std::iter::once(&self.weight)
            .chain(self.bias.as_ref())
            .map(Tensor::shallow_clone)
            .collect()
    }

    /// The output's side for an input of side `n`.
    pub(super) fn out_side(&self, n: i64) -> i64 {
        let kernel = self.weight.size()[2];
        (n + 2 * self.padding - kernel) / self.stride + 1
    }
}

/// Batch normalisation over the channels of `[n, c, h, w]`: a scale and a
/// shift (trained), and the running mean and variance (buffers) that
/// evaluation uses, updated in training with PyTorch's momentum 0.1.
pub(super) struct BatchNorm {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    /// Training batches seen (PyTorch's `num_batches_tracked`); kept for a
    /// checkpoint's completeness, the momentum being fixed.
    batches: Tensor,
}

impl BatchNorm {
    pub(super) fn new(channels: i64, device: tch::Device) -> Result<Self, TchError> {
        Ok(BatchNorm {
            weight: constant(&[channels], 1.0, device)?,
            bias: constant(&[channels], 0.0, device)?,
            running_mean: Tensor::f_zeros([channels], (Kind::Float, device))?,
            running_var: Tensor::f_ones([channels], (Kind::Float, device))?,
            batches: Tensor::f_zeros([], (Kind::Int64, device))?,
        })
    }

    pub(super) fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let size = xs.size();
        let values_per_channel = size[0] * size[2..].iter().product::<i64>();
        if train && values_per_channel < 2 {
            // One value per channel has no variance to fold into the running
            // statistics (PyTorch refuses it): normalise by the batch alone.
            return xs.f_batch_norm(
                Some(&self.weight),
                Some(&self.bias),
                None::<&Tensor>,
                None,
                true,
                BN_MOMENTUM,
                BN_EPS,
                true,
            );
        }
        if train {
            let _ = tch::no_grad(|| self.batches.shallow_clone().f_add_scalar_(1))?;
        }
        xs.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }

    pub(super) fn parameters(&self) -> [Tensor; 2] {
        [self.weight.shallow_clone(), self.bias.shallow_clone()]
    }

    pub(super) fn buffers(&self) -> [Tensor; 3] {
        [
            self.running_mean.shallow_clone(),
            self.running_var.shallow_clone(),
            self.batches.shallow_clone(),
        ]
    }
}

/// Rows per evaluation pass of a model whose largest activation holds
/// `floats` values per example.
pub(super) fn eval_rows_for(floats: i64) -> i64 {
    (EVAL_FLOATS / floats.max(1)).clamp(16, EVAL_BATCH)
}

/// The `mlp` trainer's model: `layers` hidden layers of `hidden` units.
pub(super) struct Mlp {
    hidden: Vec<Linear>,
    output: Linear,
    activation: Activation,
    width: i64,
    features: i64,
}

impl Mlp {
    /// Creates the variables on `device` with weights drawn from `rng`:
    /// He-uniform for ReLU-like hidden layers, Glorot-uniform for
    /// tanh/sigmoid and the output layer; zero biases.
    pub(super) fn new(
        rng: &mut StdRng,
        features: i64,
        outputs: i64,
        hidden: i64,
        layers: usize,
        activation: Activation,
        device: tch::Device,
    ) -> Result<Self, TchError> {
        let init = if activation.he() {
            Init::He
        } else {
            Init::Glorot
        };
        let mut stack = Vec::with_capacity(layers);
        let mut width = features;
        for _ in 0..layers {
            stack.push(Linear::new(rng, width, hidden, init, device)?);
            width = hidden;
        }
        let output = Linear::new(rng, width, outputs, Init::Glorot, device)?;
        Ok(Mlp {
            hidden: stack,
            output,
            activation,
            width: hidden,
            features,
        })
    }
}

impl Model for Mlp {
    /// Hidden layers first, weight before bias.
    fn parameters(&self) -> Vec<Tensor> {
        self.hidden
            .iter()
            .chain(std::iter::once(&self.output))
            .flat_map(Linear::parameters)
            .collect()
    }

    fn penalised(&self) -> Vec<Tensor> {
        self.hidden
            .iter()
            .chain(std::iter::once(&self.output))
            .map(|l| l.weight.shallow_clone())
            .collect()
    }

    /// In training with dropout, the masks of all hidden layers are drawn
    /// at once (`[layers, batch, hidden]`) before the pass.
    fn forward(&self, xs: &Tensor, pass: Pass<'_>) -> Result<Tensor, TchError> {
        let masks = match pass {
            Pass::Train(Some(masks)) => {
                Some(masks.draw(self.hidden.len(), xs.size()[0], self.width, xs.device())?)
            }
            _ => None,
        };
        let mut h = xs.shallow_clone();
        for (i, layer) in self.hidden.iter().enumerate() {
            h = self.activation.apply(&layer.forward(&h)?)?;
            if let Some(masks) = &masks {
                h = h.f_mul(&masks.f_select(0, i as i64)?)?;
            }
        }
        self.output.forward(&h)
    }

    fn summary(&self) -> String {
        let mut widths = vec![self.features.to_string()];
        widths.extend(self.hidden.iter().map(|_| self.width.to_string()));
        widths.push(self.output.bias.size()[0].to_string());
        format!("mlp {} ({:?})", widths.join("-"), self.activation)
    }
}
