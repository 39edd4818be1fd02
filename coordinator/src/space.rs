//! The search space seen as the unit cube: every parameter maps a coordinate
//! u in [0, 1) to a value, so samplers work on numbers and never special-case
//! parameter types.

use hpo_proto::ParamValue;
use hpo_proto::study::ParamSpec;

/// The parameter's value at unit coordinate `u` (clamped into [0, 1)).
pub fn from_unit(spec: &ParamSpec, u: f64) -> ParamValue {
    let u = if u.is_finite() {
        u.clamp(0.0, 1.0 - f64::EPSILON)
    } else {
        0.0
    };
    match spec {
        ParamSpec::Float {
            low,
            high,
            log: true,
            ..
        } => {
            let (a, b) = (low.ln(), high.ln());
            ParamValue::Float((a + u * (b - a)).exp().clamp(*low, *high))
        }
        ParamSpec::Float {
            low,
            high,
            step: Some(step),
            ..
        } => {
            let n = ((high - low) / step + 1e-9).floor() + 1.0;
            let i = (u * n).floor().min(n - 1.0);
            ParamValue::Float(low + i * step)
        }
        ParamSpec::Float { low, high, .. } => ParamValue::Float(low + u * (high - low)),
        ParamSpec::Int {
            low,
            high,
            log: true,
            ..
        } => {
            // Widen by half a unit each side so the end points are as likely
            // as their neighbours once rounded.
            let (a, b) = ((*low as f64 - 0.5).max(0.5).ln(), (*high as f64 + 0.5).ln());
            let v = (a + u * (b - a)).exp().round() as i64;
            ParamValue::Int(v.clamp(*low, *high))
        }
        ParamSpec::Int {
            low, high, step, ..
        } => {
            let n = ((high - low) / step + 1) as f64;
            let i = (u * n).floor().min(n - 1.0) as i64;
            ParamValue::Int(low + i * step)
        }
        ParamSpec::Categorical { choices } => {
            let i =
                ((u * choices.len() as f64).floor() as usize).min(choices.len().saturating_sub(1));
            choices[i].clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_points_stay_in_range() {
        let specs = [
            ParamSpec::Float {
                low: 1e-4,
                high: 1e-1,
                log: true,
                step: None,
            },
            ParamSpec::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: Some(0.1),
            },
            ParamSpec::Int {
                low: 32,
                high: 512,
                log: false,
                step: 32,
            },
            ParamSpec::Int {
                low: 1,
                high: 1000,
                log: true,
                step: 1,
            },
            ParamSpec::Categorical {
                choices: vec![ParamValue::Int(1), ParamValue::Int(2)],
            },
        ];
        for s in &specs {
            for u in [0.0, 1e-12, 0.5, 0.999_999, 1.0, -3.0, f64::NAN] {
                let v = from_unit(s, u);
                assert!(s.contains(&v), "{s:?} at {u} gave {v:?}");
            }
        }
    }

    #[test]
    fn stepped_ints_reach_both_ends() {
        let s = ParamSpec::Int {
            low: 32,
            high: 512,
            log: false,
            step: 32,
        };
        assert_eq!(from_unit(&s, 0.0), ParamValue::Int(32));
        assert_eq!(from_unit(&s, 0.9999), ParamValue::Int(512));
    }
}
