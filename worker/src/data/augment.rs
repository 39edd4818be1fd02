//! Random image augmentation for a batch: crop with padding, translation and
//! horizontal flip, as one gather per batch.

use hpo_proto::ParamValue;
use rand::Rng;
use tch::{TchError, Tensor};

/// The settings [`parse_augment`] reads.
pub const AUGMENT_SETTINGS: &[&str] = &["augment_crop_padding", "augment_hflip", "augment_shift"];

/// The largest padding or shift the settings accept, in pixels.
const MAX_PIXELS: i64 = 64;

/// Which random transformations [`augment`] applies to each image. The
/// default, all off, leaves images as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    /// Random crop with padding: pad each side by this many pixels, then
    /// crop back to the original size at a random offset (0 = off).
    pub crop_padding: i64,
    /// Flip each image left to right with probability 1/2.
    pub hflip: bool,
    /// Random translation by up to this many pixels in each direction, x and
    /// y drawn independently (0 = off).
    pub max_shift: i64,
}

impl Augment {
    /// Whether every transformation is off.
    pub fn is_off(&self) -> bool {
        self.crop_padding == 0 && !self.hflip && self.max_shift == 0
    }
}

/// Reads [`Augment`] from settings: `augment_crop_padding` and
/// `augment_shift` (integers from 0 to 64, pixels) and `augment_hflip` (0 or
/// 1; `true`/`false` also accepted). Missing settings are off.
pub fn parse_augment(get: &dyn Fn(&str) -> Option<ParamValue>) -> Result<Augment, String> {
    let pixels = |name: &str| -> Result<i64, String> {
        let Some(value) = get(name) else {
            return Ok(0);
        };
        let as_int = match &value {
            ParamValue::Int(v) => Some(*v),
            ParamValue::Float(v) if v.fract() == 0.0 && v.abs() < 9e15 => Some(*v as i64),
            ParamValue::Categorical(s) => s.trim().parse().ok(),
            ParamValue::Float(_) => None,
        };
        as_int
            .filter(|v| (0..=MAX_PIXELS).contains(v))
            .ok_or_else(|| {
                format!("{name} must be an integer from 0 to {MAX_PIXELS}, got `{value}`")
            })
    };
    let hflip = match get("augment_hflip") {
        None => false,
        Some(value) => {
            let flag = match &value {
                ParamValue::Int(v) => Some(*v),
                ParamValue::Float(v) if v.fract() == 0.0 => Some(*v as i64),
                ParamValue::Float(_) => None,
                ParamValue::Categorical(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "0" | "false" | "no" | "off" => Some(0),
                    "1" | "true" | "yes" | "on" => Some(1),
                    _ => None,
                },
            };
            match flag {
                Some(0) => false,
                Some(1) => true,
                _ => return Err(format!("augment_hflip must be 0 or 1, got `{value}`")),
            }
        }
    };
    Ok(Augment {
        crop_padding: pixels("augment_crop_padding")?,
        hflip,
        max_shift: pixels("augment_shift")?,
    })
}

/// [`augment_with_fill`] with zero as the fill: pixels that come from
/// outside the image (the padding of a crop, the edge a shift uncovers) are
/// 0. For standardised images, where black is not 0, pass the data set's
/// [`ImageShape::background`](super::ImageShape) to [`augment_with_fill`]
/// instead.
pub fn augment(batch: &Tensor, opts: &Augment, rng: &mut impl Rng) -> Result<Tensor, TchError> {
    augment_with_fill(batch, opts, 0.0, rng)
}

/// Applies random augmentation to each image of a batch, independently, and
/// returns a batch of the same shape, kind and device.
///
/// The batch is `[n, channels, height, width]`, `[n, height, width]` (one
/// channel) or `[n, height × width]`, square images flattened row-major as
/// the data sets store them. Each image is, in this order, cropped at a
/// random offset from its zero-padded self (`crop_padding`), translated by a
/// random offset (`max_shift`) and flipped left to right with probability
/// 1/2 (`hflip`); pixels that come from outside the image are `fill`. All
/// channels of an image move together.
///
/// The random draws come from `rng` alone (per image: the crop offset, the
/// shift, the flip), so a seeded `rng` gives the same output every time.
/// With everything off the input is returned as it is (a shallow clone,
/// sharing its storage) and `rng` is not used.
pub fn augment_with_fill(
    batch: &Tensor,
    opts: &Augment,
    fill: f64,
    rng: &mut impl Rng,
) -> Result<Tensor, TchError> {
    if opts.crop_padding < 0 || opts.max_shift < 0 {
        return Err(TchError::Shape(format!(
            "augment: crop_padding and max_shift must be >= 0, got {} and {}",
            opts.crop_padding, opts.max_shift
        )));
    }
    let dims = batch.size();
    let (n, channels, height, width) = match dims[..] {
        [n, c, h, w] => (n, c, h, w),
        [n, h, w] => (n, 1, h, w),
        [n, f] => {
            let side = (f as f64).sqrt().round() as i64;
            if side * side != f {
                return Err(TchError::Shape(format!(
                    "augment: a flat batch [n, features] needs square images, got {f} features"
                )));
            }
            (n, 1, side, side)
        }
        _ => {
            return Err(TchError::Shape(format!(
                "augment: expected a batch of images [n, c, h, w], [n, h, w] or [n, h*w], got {dims:?}"
            )));
        }
    };
    if opts.is_off() {
        return Ok(batch.shallow_clone());
    }
    let pixels = (height * width) as usize;
    // For each image and output pixel, the source pixel, or -1 for `fill`.
    let mut index = Vec::with_capacity(n as usize * pixels);
    let p = opts.crop_padding;
    let m = opts.max_shift;
    for _ in 0..n {
        // Cropping the padded image at (oy, ox) moves its content by
        // (p - oy, p - ox).
        let (crop_y, crop_x) = if p > 0 {
            (p - rng.gen_range(0..=2 * p), p - rng.gen_range(0..=2 * p))
        } else {
            (0, 0)
        };
        let (shift_y, shift_x) = if m > 0 {
            (rng.gen_range(-m..=m), rng.gen_range(-m..=m))
        } else {
            (0, 0)
        };
        let flip = opts.hflip && rng.gen_bool(0.5);
        let (dy, dx) = (crop_y + shift_y, crop_x + shift_x);
        for y in 0..height {
            for x in 0..width {
                // Undo the flip, then the shift, then the crop. Each step
                // checks its own bounds: a pixel pushed out of the image by
                // the crop stays out even if the shift would bring it back.
                let x = if flip { width - 1 - x } else { x };
                let (y1, x1) = (y - shift_y, x - shift_x);
                let (y0, x0) = (y - dy, x - dx);
                let inside = |y: i64, x: i64| (0..height).contains(&y) && (0..width).contains(&x);
                index.push(if inside(y1, x1) && inside(y0, x0) {
                    y0 * width + x0
                } else {
                    -1
                });
            }
        }
    }
    let device = batch.device();
    let index = Tensor::f_from_slice(&index)?
        .f_view([n, 1, height * width])?
        .f_to_device(device)?;
    let outside = index.f_lt(0)?;
    let gathered = batch.f_reshape([n, channels, height * width])?.f_gather(
        2,
        &index
            .f_clamp_min(0)?
            .f_expand([n, channels, height * width], false)?,
        false,
    )?;
    gathered.f_masked_fill(&outside, fill)?.f_reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, ParamValue)]) -> impl Fn(&str) -> Option<ParamValue> {
        let map: HashMap<String, ParamValue> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn settings_parse_with_defaults_and_errors() {
        assert_eq!(parse_augment(&settings(&[])), Ok(Augment::default()));
        let got = parse_augment(&settings(&[
            ("augment_crop_padding", ParamValue::Int(4)),
            ("augment_hflip", ParamValue::Int(1)),
            ("augment_shift", ParamValue::Float(2.0)),
        ]));
        assert_eq!(
            got,
            Ok(Augment {
                crop_padding: 4,
                hflip: true,
                max_shift: 2
            })
        );
        assert_eq!(
            parse_augment(&settings(&[(
                "augment_hflip",
                ParamValue::Categorical("false".into())
            )])),
            Ok(Augment::default())
        );
        assert_eq!(
            parse_augment(&settings(&[("augment_hflip", ParamValue::Int(2))])),
            Err("augment_hflip must be 0 or 1, got `2`".to_string())
        );
        assert_eq!(
            parse_augment(&settings(&[("augment_shift", ParamValue::Int(-1))])),
            Err("augment_shift must be an integer from 0 to 64, got `-1`".to_string())
        );
        assert!(
            parse_augment(&settings(&[(
                "augment_crop_padding",
                ParamValue::Float(1.5)
            )]))
            .is_err()
        );
    }
}
