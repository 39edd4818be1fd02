//! The convolutional models: the `cnn` trainer's stack of conv blocks with a
//! dense head, and the `resnet` trainer's small residual network. Both take
//! an image set's flat rows and view them as `[n, c, h, w]`
//! ([`ImageShape`]); their training is [`super::mlp`]'s.

use super::TrainError;
use super::mlp::ParamSource;
use super::models::{Activation, BatchNorm, Conv, Init, Linear, Model, Pass, eval_rows_for};
use crate::data::ImageShape;
use rand::rngs::StdRng;
use tch::{Kind, TchError, Tensor};

/// Channels of a `cnn` block are at most this many: doubling from 512
/// over six blocks would otherwise ask for 16384.
pub(super) const MAX_CHANNELS: i64 = 1024;

/// The kernel sizes a `cnn` accepts (odd, so 'same' padding is exact).
pub(super) const KERNEL_SIZES: &[i64] = &[3, 5, 7];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pool {
    Max,
    Avg,
    None,
}

/// The `cnn` trainer's architecture.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CnnArch {
    /// Conv blocks (conv, batch norm, activation, pooling).
    pub(super) conv_layers: usize,
    /// The first block's channels; each next block doubles them (up to
    /// [`MAX_CHANNELS`]).
    pub(super) channels: i64,
    pub(super) kernel_size: i64,
    pub(super) batch_norm: bool,
    /// 2×2 pooling after each block while the map is at least 2×2.
    pub(super) pool: Pool,
    /// Units of the dense head's hidden layer; 0: none.
    pub(super) hidden: i64,
}

impl CnnArch {
    pub(super) fn parse(p: &ParamSource<'_>) -> Result<Self, TrainError> {
        Ok(CnnArch {
            conv_layers: p.int("conv_layers", 2, 1..=6)? as usize,
            channels: p.int("channels", 32, 4..=512)?,
            kernel_size: p.int_of("kernel_size", 3, KERNEL_SIZES)?,
            batch_norm: p.int("batch_norm", 1, 0..=1)? == 1,
            pool: p.choice(
                "pool",
                Pool::Max,
                &[("max", Pool::Max), ("avg", Pool::Avg), ("none", Pool::None)],
            )?,
            hidden: p.int("hidden", 128, 0..=65_536)?,
        })
    }

    /// Each block's output channels.
    fn widths(&self) -> Vec<i64> {
        (0..self.conv_layers)
            .map(|i| (self.channels << i).min(MAX_CHANNELS))
            .collect()
    }
}

/// One conv block: convolution, optional batch norm, activation, and
/// optional 2×2 pooling.
struct ConvBlock {
    conv: Conv,
    norm: Option<BatchNorm>,
    pool: bool,
}

/// Conv blocks, then a dense head: flatten, optional hidden layer, output.
/// Dropout (when on) after the conv stack and after the hidden layer.
pub(super) struct Cnn {
    shape: ImageShape,
    blocks: Vec<ConvBlock>,
    pool: Pool,
    hidden: Option<Linear>,
    output: Linear,
    activation: Activation,
    /// Floats of the largest activation per example (evaluation batches).
    largest: i64,
    summary: String,
}

impl Cnn {
    /// Creates the variables on `device`, drawn from `rng` in layer order
    /// as PyTorch initialises `nn.Conv2d` and `nn.Linear` ([`Init::Torch`]),
    /// batch norm's scales 1 and shifts 0.
    pub(super) fn new(
        rng: &mut StdRng,
        arch: &CnnArch,
        shape: ImageShape,
        outputs: i64,
        activation: Activation,
        device: tch::Device,
    ) -> Result<Self, TchError> {
        let (mut c, mut h, mut w) = (shape.channels, shape.height, shape.width);
        let mut largest = c * h * w;
        let mut blocks = Vec::with_capacity(arch.conv_layers);
        let mut sides = Vec::new();
        for width in arch.widths() {
            let conv = Conv::new(rng, c, width, arch.kernel_size, 1, device)?;
            let (conv, norm) = if arch.batch_norm {
                (conv, Some(BatchNorm::new(width, device)?))
            } else {
                (conv.with_bias(rng)?, None)
            };
            c = width;
            largest = largest.max(c * h * w);
            let pool = arch.pool != Pool::None && h.min(w) >= 2;
            if pool {
                (h, w) = (h / 2, w / 2);
            }
            sides.push(format!("{c}@{h}x{w}"));
            blocks.push(ConvBlock { conv, norm, pool });
        }
        let flat = c * h * w;
        let hidden = if arch.hidden > 0 {
            Some(Linear::new(rng, flat, arch.hidden, Init::Torch, device)?)
        } else {
            None
        };
        let head_in = if arch.hidden > 0 { arch.hidden } else { flat };
        let output = Linear::new(rng, head_in, outputs, Init::Torch, device)?;
        let summary = format!(
            "cnn {}x{}x{} -> {} ({}x{} kernels{}, {:?} pooling, {:?}) -> {}{outputs}",
            shape.channels,
            shape.height,
            shape.width,
            sides.join(" -> "),
            arch.kernel_size,
            arch.kernel_size,
            if arch.batch_norm { ", batch norm" } else { "" },
            arch.pool,
            activation,
            if arch.hidden > 0 {
                format!("{} -> ", arch.hidden)
            } else {
                String::new()
            },
        );
        Ok(Cnn {
            shape,
            blocks,
            pool: arch.pool,
            hidden,
            output,
            activation,
            largest,
            summary,
        })
    }
}

/// `xs`'s rows as images.
fn images(xs: &Tensor, shape: &ImageShape) -> Result<Tensor, TchError> {
    xs.f_view([-1, shape.channels, shape.height, shape.width])
}

impl Model for Cnn {
    fn forward(&self, xs: &Tensor, mut pass: Pass<'_>) -> Result<Tensor, TchError> {
        let train = pass.training();
        let mut h = images(xs, &self.shape)?;
        for block in &self.blocks {
            h = block.conv.forward(&h)?;
            if let Some(norm) = &block.norm {
                h = norm.forward(&h, train)?;
            }
            h = self.activation.apply(&h)?;
            if block.pool {
                h = match self.pool {
                    Pool::Max => h.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?,
                    Pool::Avg => h.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None)?,
                    Pool::None => h,
                };
            }
        }
        h = pass.dropout(h)?;
        let n = h.size()[0];
        h = h.f_view([n, -1])?;
        if let Some(hidden) = &self.hidden {
            h = self.activation.apply(&hidden.forward(&h)?)?;
            h = pass.dropout(h)?;
        }
        self.output.forward(&h)
    }

    /// Block by block (kernel, bias or batch norm's scale and shift), then
    /// the head's layers, weight before bias.
    fn parameters(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        for block in &self.blocks {
            out.extend(block.conv.parameters());
            if let Some(norm) = &block.norm {
                out.extend(norm.parameters());
            }
        }
        for layer in self.hidden.iter().chain(std::iter::once(&self.output)) {
            out.extend(layer.parameters());
        }
        out
    }

    fn penalised(&self) -> Vec<Tensor> {
        self.blocks
            .iter()
            .map(|b| &b.conv.weight)
            .chain(
                self.hidden
                    .iter()
                    .chain(std::iter::once(&self.output))
                    .map(|l| &l.weight),
            )
            .map(Tensor::shallow_clone)
            .collect()
    }

    fn buffers(&self) -> Vec<Tensor> {
        self.blocks
            .iter()
            .filter_map(|b| b.norm.as_ref())
            .flat_map(BatchNorm::buffers)
            .collect()
    }

    fn eval_rows(&self) -> i64 {
        eval_rows_for(self.largest)
    }

    fn summary(&self) -> String {
        self.summary.clone()
    }
}

/// The `resnet` trainer's architecture.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ResNetArch {
    /// Residual blocks per stage.
    pub(super) depth: usize,
    /// Stages; each after the first halves the map (stride 2) and doubles
    /// the channels.
    pub(super) stages: usize,
    /// The stem's and first stage's channels.
    pub(super) width: i64,
    /// Pre-activation blocks (batch norm and activation before each conv,
    /// He et al. 2016) rather than the original post-activation ones.
    pub(super) preactivation: bool,
}

impl ResNetArch {
    pub(super) fn parse(p: &ParamSource<'_>) -> Result<Self, TrainError> {
        Ok(ResNetArch {
            depth: p.int("depth", 2, 1..=8)? as usize,
            stages: p.int("stages", 3, 2..=3)? as usize,
            width: p.int("width", 16, 8..=256)?,
            preactivation: p.int("preactivation", 0, 0..=1)? == 1,
        })
    }
}

/// A basic residual block: two 3×3 convolutions, the first with the block's
/// stride, and a 1×1 convolution on the shortcut when the shape changes.
///
/// Post-activation: `act(bn2(conv2(act(bn1(conv1(x))))) + s(x))` with
/// `s` the identity or a 1×1 convolution and batch norm. Pre-activation:
/// `a = act(bn1(x))`, `conv2(act(bn2(conv1(a)))) + s`, `s` being `x` or a
/// 1×1 convolution of `a`.
struct Residual {
    norm1: BatchNorm,
    conv1: Conv,
    norm2: BatchNorm,
    conv2: Conv,
    shortcut: Option<(Conv, Option<BatchNorm>)>,
}

/// A stem convolution, `stages` stages of `depth` residual blocks, global
/// average pooling and a linear head (dropout, when on, before it).
pub(super) struct ResNet {
    shape: ImageShape,
    preactivation: bool,
    stem: Conv,
    /// Post-activation: after the stem; pre-activation: before the pooling.
    norm: BatchNorm,
    blocks: Vec<Residual>,
    output: Linear,
    activation: Activation,
    largest: i64,
    summary: String,
}

impl ResNet {
    /// Creates the variables on `device`, drawn from `rng` in layer order
    /// (stem, blocks, head) as PyTorch initialises `nn.Conv2d` and
    /// `nn.Linear` ([`Init::Torch`]), batch norm's scales 1 and shifts 0.
    pub(super) fn new(
        rng: &mut StdRng,
        arch: &ResNetArch,
        shape: ImageShape,
        outputs: i64,
        activation: Activation,
        device: tch::Device,
    ) -> Result<Self, TchError> {
        let pre = arch.preactivation;
        let stem = Conv::new(rng, shape.channels, arch.width, 3, 1, device)?;
        let (mut h, mut w) = (shape.height, shape.width);
        let mut c = arch.width;
        let mut largest = (c * h * w).max(shape.channels * h * w);
        let mut blocks = Vec::with_capacity(arch.depth * arch.stages);
        let mut sides = Vec::new();
        for stage in 0..arch.stages {
            let width = arch.width << stage;
            for block in 0..arch.depth {
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                let conv1 = Conv::new(rng, c, width, 3, stride, device)?;
                (h, w) = (conv1.out_side(h), conv1.out_side(w));
                let conv2 = Conv::new(rng, width, width, 3, 1, device)?;
                let shortcut = if stride != 1 || c != width {
                    let conv = Conv::new(rng, c, width, 1, stride, device)?;
                    let norm = if pre {
                        None
                    } else {
                        Some(BatchNorm::new(width, device)?)
                    };
                    Some((conv, norm))
                } else {
                    None
                };
                blocks.push(Residual {
                    norm1: BatchNorm::new(if pre { c } else { width }, device)?,
                    conv1,
                    norm2: BatchNorm::new(width, device)?,
                    conv2,
                    shortcut,
                });
                c = width;
                largest = largest.max(c * h * w);
            }
            sides.push(format!("{c}@{h}x{w}"));
        }
        let output = Linear::new(rng, c, outputs, Init::Torch, device)?;
        let norm = BatchNorm::new(if pre { c } else { arch.width }, device)?;
        let summary = format!(
            "resnet {}x{}x{} -> stem {} -> {} stages of {} {} blocks ({}) -> average pool -> {outputs} ({:?})",
            shape.channels,
            shape.height,
            shape.width,
            arch.width,
            arch.stages,
            arch.depth,
            if pre {
                "pre-activation"
            } else {
                "post-activation"
            },
            sides.join(", "),
            activation,
        );
        Ok(ResNet {
            shape,
            preactivation: pre,
            stem,
            norm,
            blocks,
            output,
            activation,
            largest,
            summary,
        })
    }

    fn block(&self, b: &Residual, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let act = |t: &Tensor| self.activation.apply(t);
        if self.preactivation {
            let a = act(&b.norm1.forward(x, train)?)?;
            let y = b.conv1.forward(&a)?;
            let y = b.conv2.forward(&act(&b.norm2.forward(&y, train)?)?)?;
            let s = match &b.shortcut {
                Some((conv, _)) => conv.forward(&a)?,
                None => x.shallow_clone(),
            };
            y.f_add(&s)
        } else {
            let y = act(&b.norm1.forward(&b.conv1.forward(x)?, train)?)?;
            let y = b.norm2.forward(&b.conv2.forward(&y)?, train)?;
            let s = match &b.shortcut {
                Some((conv, Some(norm))) => norm.forward(&conv.forward(x)?, train)?,
                Some((conv, None)) => conv.forward(x)?,
                None => x.shallow_clone(),
            };
            act(&y.f_add(&s)?)
        }
    }
}

impl Model for ResNet {
    fn forward(&self, xs: &Tensor, mut pass: Pass<'_>) -> Result<Tensor, TchError> {
        let train = pass.training();
        let mut h = self.stem.forward(&images(xs, &self.shape)?)?;
        if !self.preactivation {
            h = self.activation.apply(&self.norm.forward(&h, train)?)?;
        }
        for block in &self.blocks {
            h = self.block(block, &h, train)?;
        }
        if self.preactivation {
            h = self.activation.apply(&self.norm.forward(&h, train)?)?;
        }
        let pooled = h.f_mean_dim([2i64, 3].as_slice(), false, Kind::Float)?;
        self.output.forward(&pass.dropout(pooled)?)
    }

    /// Stem, then block by block (first convolution and its batch norm,
    /// second, shortcut), the head last; the extra batch norm (after the
    /// stem, or before the pooling) comes right after the stem.
    fn parameters(&self) -> Vec<Tensor> {
        let mut out = self.stem.parameters();
        out.extend(self.norm.parameters());
        for b in &self.blocks {
            out.extend(b.norm1.parameters());
            out.extend(b.conv1.parameters());
            out.extend(b.norm2.parameters());
            out.extend(b.conv2.parameters());
            if let Some((conv, norm)) = &b.shortcut {
                out.extend(conv.parameters());
                if let Some(norm) = norm {
                    out.extend(norm.parameters());
                }
            }
        }
        out.extend(self.output.parameters());
        out
    }

    fn penalised(&self) -> Vec<Tensor> {
        let mut out = vec![self.stem.weight.shallow_clone()];
        for b in &self.blocks {
            out.push(b.conv1.weight.shallow_clone());
            out.push(b.conv2.weight.shallow_clone());
            if let Some((conv, _)) = &b.shortcut {
                out.push(conv.weight.shallow_clone());
            }
        }
        out.push(self.output.weight.shallow_clone());
        out
    }

    fn buffers(&self) -> Vec<Tensor> {
        let mut out: Vec<Tensor> = self.norm.buffers().into();
        for b in &self.blocks {
            out.extend(b.norm1.buffers());
            out.extend(b.norm2.buffers());
            if let Some((_, Some(norm))) = &b.shortcut {
                out.extend(norm.buffers());
            }
        }
        out
    }

    fn eval_rows(&self) -> i64 {
        eval_rows_for(self.largest)
    }

    fn summary(&self) -> String {
        self.summary.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::models::parameter_count;
    use super::*;
    use rand::SeedableRng;

    fn shape(channels: i64, height: i64, width: i64) -> ImageShape {
        ImageShape {
            channels,
            height,
            width,
            background: 0.0,
        }
    }

    fn cnn_arch() -> CnnArch {
        CnnArch {
            conv_layers: 2,
            channels: 32,
            kernel_size: 3,
            batch_norm: true,
            pool: Pool::Max,
            hidden: 128,
        }
    }

    fn resnet_arch() -> ResNetArch {
        ResNetArch {
            depth: 2,
            stages: 3,
            width: 16,
            preactivation: false,
        }
    }

    fn rows(n: i64, s: &ImageShape) -> Tensor {
        let features = s.channels * s.height * s.width;
        Tensor::arange(n * features, (Kind::Float, tch::Device::Cpu))
            .view([n, features])
            .sin()
    }

    /// Output shape in training and evaluation, parameters and buffers.
    fn check(model: &dyn Model, s: &ImageShape, outputs: i64, parameters: i64, norms: usize) {
        let xs = rows(5, s);
        for pass in [Pass::Eval, Pass::Train(None)] {
            let out = model.forward(&xs, pass).unwrap();
            assert_eq!(out.size(), [5, outputs]);
        }
        assert_eq!(parameter_count(model), parameters, "{}", model.summary());
        assert_eq!(model.buffers().len(), 3 * norms);
        for p in model.parameters() {
            assert!(p.requires_grad());
        }
        for b in model.buffers() {
            assert!(!b.requires_grad());
        }
    }

    fn cnn(arch: &CnnArch, s: ImageShape, outputs: i64) -> Cnn {
        let mut rng = StdRng::seed_from_u64(1);
        Cnn::new(
            &mut rng,
            arch,
            s,
            outputs,
            Activation::Relu,
            tch::Device::Cpu,
        )
        .unwrap()
    }

    fn resnet(arch: &ResNetArch, s: ImageShape, outputs: i64) -> ResNet {
        let mut rng = StdRng::seed_from_u64(1);
        ResNet::new(
            &mut rng,
            arch,
            s,
            outputs,
            Activation::Relu,
            tch::Device::Cpu,
        )
        .unwrap()
    }

    #[test]
    fn cnn_shapes_and_parameter_counts() {
        // Fashion-MNIST with the defaults: 1→32 (3×3, batch norm) at 28×28,
        // pooled to 14×14; 32→64, pooled to 7×7; 3136→128→10.
        let s = shape(1, 28, 28);
        let expected = (32 * 9 + 64) + (64 * 32 * 9 + 128) + (3136 * 128 + 128) + (128 * 10 + 10);
        assert_eq!(expected, 421_738);
        check(&cnn(&cnn_arch(), s, 10), &s, 10, expected, 2);

        // No batch norm (biases instead), 5×5 kernels, average pooling down
        // to 1×1 (8→4→2→1), no hidden layer: 16 features into 2 outputs.
        let s = shape(3, 8, 8);
        let arch = CnnArch {
            conv_layers: 3,
            channels: 4,
            kernel_size: 5,
            batch_norm: false,
            pool: Pool::Avg,
            hidden: 0,
        };
        let expected = (4 * 3 * 25 + 4) + (8 * 4 * 25 + 8) + (16 * 8 * 25 + 16) + (16 * 2 + 2);
        check(&cnn(&arch, s, 2), &s, 2, expected, 0);

        // Pooling stops once the map is below 2×2; no pooling at all keeps
        // the input's size (7×7 kernels, 'same' padding).
        let s = shape(1, 4, 4);
        let arch = CnnArch {
            conv_layers: 4,
            channels: 4,
            kernel_size: 7,
            hidden: 8,
            ..cnn_arch()
        };
        let convs = [(1, 4), (4, 8), (8, 16), (16, 32)]
            .iter()
            .map(|(i, o)| o * i * 49 + 2 * o)
            .sum::<i64>();
        check(
            &cnn(&arch, s, 3),
            &s,
            3,
            convs + (32 * 8 + 8) + (8 * 3 + 3),
            4,
        );
        let arch = CnnArch {
            conv_layers: 1,
            pool: Pool::None,
            ..arch
        };
        let expected = (4 * 49 + 8) + (4 * 16 * 8 + 8) + (8 * 3 + 3);
        check(&cnn(&arch, s, 3), &s, 3, expected, 1);

        // Channels double per block, up to the cap.
        let arch = CnnArch {
            conv_layers: 6,
            channels: 256,
            ..cnn_arch()
        };
        assert_eq!(arch.widths(), [256, 512, 1024, 1024, 1024, 1024]);
    }

    #[test]
    fn resnet_shapes_and_parameter_counts() {
        // Post-activation, 3 stages of 2 blocks from 16 channels on 28×28
        // (28, 14, 7): 1×1 shortcuts with batch norm where the shape changes.
        let s = shape(1, 28, 28);
        let block = |c_in: i64, c: i64| {
            let shortcut = if c_in == c { 0 } else { c * c_in + 2 * c };
            c * c_in * 9 + 2 * c + c * c * 9 + 2 * c + shortcut
        };
        let expected = 16 * 9
            + 32
            + 2 * block(16, 16)
            + block(16, 32)
            + block(32, 32)
            + block(32, 64)
            + block(64, 64)
            + (64 * 10 + 10);
        assert_eq!(expected, 174_970);
        let model = resnet(&resnet_arch(), s, 10);
        // Batch norms: the stem's, two per block, one per projection.
        check(&model, &s, 10, expected, 1 + 2 * 6 + 2);
        assert!(model.summary().contains("64@7x7"), "{}", model.summary());

        // Pre-activation, 2 stages of 1 block from 8 channels on 3×32×32:
        // batch norm before each convolution, plain 1×1 projections, and a
        // final batch norm before the pooling.
        let s = shape(3, 32, 32);
        let arch = ResNetArch {
            depth: 1,
            stages: 2,
            width: 8,
            preactivation: true,
        };
        let expected = 8 * 3 * 9
            + 2 * 16
            + (2 * 8 + 8 * 8 * 9 + 2 * 8 + 8 * 8 * 9)
            + (2 * 8 + 16 * 8 * 9 + 2 * 16 + 16 * 16 * 9 + 16 * 8)
            + (16 * 5 + 5);
        let model = resnet(&arch, s, 5);
        check(&model, &s, 5, expected, 1 + 2 * 2);
        assert!(model.summary().contains("16@16x16"), "{}", model.summary());

        // Odd sides shrink as PyTorch's stride-2 convolutions do: 5, 3, 2.
        let s = shape(1, 5, 5);
        let model = resnet(&resnet_arch(), s, 2);
        assert!(model.summary().contains("64@2x2"), "{}", model.summary());
        check(&model, &s, 2, parameter_count(&model), 15);
    }

    /// Training updates batch norm's running statistics with momentum 0.1
    /// (unbiased variance, as PyTorch does); evaluation uses them and leaves
    /// them alone.
    #[test]
    fn batch_norm_tracks_running_statistics() {
        let norm = BatchNorm::new(1, tch::Device::Cpu).unwrap();
        let xs = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 6.0]).view([2, 1, 1, 2]);
        let [mean, var, batches] = norm.buffers();
        let train = norm.forward(&xs, true).unwrap();
        // Mean 3, unbiased variance 14/3.
        assert!((mean.double_value(&[0]) - 0.3).abs() < 1e-6);
        assert!((var.double_value(&[0]) - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6);
        assert_eq!(batches.int64_value(&[]), 1);
        // Normalised by the batch: mean 0.
        assert!(train.mean(Kind::Float).double_value(&[]).abs() < 1e-6);
        let eval = norm.forward(&xs, false).unwrap();
        let expected = (1.0 - 0.3) / (0.9 + 0.1 * 14.0 / 3.0 + 1e-5f64).sqrt();
        assert!((eval.double_value(&[0, 0, 0, 0]) - expected).abs() < 1e-5);
        assert_eq!(batches.int64_value(&[]), 1);
        // A single value per channel normalises but leaves the statistics.
        let one = Tensor::from_slice(&[5.0f32]).view([1, 1, 1, 1]);
        let _ = norm.forward(&one, true).unwrap();
        assert_eq!(batches.int64_value(&[]), 1);
        assert!((mean.double_value(&[0]) - 0.3).abs() < 1e-6);
    }

    /// The same seed draws the same weights; dropout masks come from the
    /// generator handed in, never libtorch's.
    #[test]
    fn weights_and_dropout_are_seeded() {
        let s = shape(1, 8, 8);
        let weights = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let model = Cnn::new(
                &mut rng,
                &cnn_arch(),
                s,
                3,
                Activation::Gelu,
                tch::Device::Cpu,
            )
            .unwrap();
            model.parameters()
        };
        let (a, b, c) = (weights(1), weights(1), weights(2));
        assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
        assert!(!a[0].equal(&c[0]));

        let model = cnn(&cnn_arch(), s, 3);
        let xs = rows(4, &s);
        let run = |seed| {
            let mut masks = super::super::mlp::DropoutMasks::new(0.5);
            masks.rng = StdRng::seed_from_u64(seed);
            model.forward(&xs, Pass::Train(Some(&mut masks))).unwrap()
        };
        assert!(run(3).equal(&run(3)));
        assert!(!run(3).equal(&run(4)));
        assert!(!run(3).equal(&model.forward(&xs, Pass::Train(None)).unwrap()));
    }
}
