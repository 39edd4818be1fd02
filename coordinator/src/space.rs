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

/// Where `value` lies in the parameter's unit interval: the inverse of
/// [`from_unit`], so `from_unit(spec, to_unit(spec, v)?) == v` for every `v`
/// in the space (up to float rounding on log scales). A value on a grid (a
/// step, an integer, a category) maps to the middle of the sub-interval that
/// `from_unit` sends to it; a number outside the range is clamped into
/// [0, 1]. None when the value cannot belong to the parameter: the wrong kind
/// (a float for an int parameter), a category not among the choices, or a
/// number that is not finite.
pub fn to_unit(spec: &ParamSpec, value: &ParamValue) -> Option<f64> {
    let u = match (spec, value) {
        (
            ParamSpec::Float {
                low,
                high,
                log: true,
                ..
            },
            ParamValue::Float(v),
        ) => {
            let (a, b) = (low.ln(), high.ln());
            if b > a {
                (v.max(*low).ln() - a) / (b - a)
            } else {
                0.5
            }
        }
        (
            ParamSpec::Float {
                low,
                high,
                step: Some(step),
                ..
            },
            ParamValue::Float(v),
        ) => {
            let n = ((high - low) / step + 1e-9).floor() + 1.0;
            let i = ((v - low) / step).round().clamp(0.0, n - 1.0);
            (i + 0.5) / n
        }
        (ParamSpec::Float { low, high, .. }, ParamValue::Float(v)) => {
            if high > low {
                (v - low) / (high - low)
            } else {
                0.5
            }
        }
        (
            ParamSpec::Int {
                low,
                high,
                log: true,
                ..
            },
            ParamValue::Int(v),
        ) => {
            let (a, b) = ((*low as f64 - 0.5).max(0.5).ln(), (*high as f64 + 0.5).ln());
            ((*v as f64).max(0.5).ln() - a) / (b - a)
        }
        (
            ParamSpec::Int {
                low, high, step, ..
            },
            ParamValue::Int(v),
        ) => {
            let step = (*step).max(1);
            let n = ((high - low) / step + 1) as f64;
            let i = (((v - low) as f64) / step as f64)
                .round()
                .clamp(0.0, n - 1.0);
            (i + 0.5) / n
        }
        (ParamSpec::Categorical { choices }, v) => {
            let i = choices.iter().position(|c| c == v)?;
            (i as f64 + 0.5) / choices.len() as f64
        }
        _ => return None,
    };
    u.is_finite().then(|| u.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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

    fn every_kind() -> Vec<ParamSpec> {
        vec![
            ParamSpec::Float {
                low: 1e-4,
                high: 1e-1,
                log: true,
                step: None,
            },
            ParamSpec::Float {
                low: -2.0,
                high: 3.0,
                log: false,
                step: None,
            },
            ParamSpec::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: Some(0.1),
            },
            ParamSpec::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: Some(0.3),
            },
            ParamSpec::Int {
                low: 32,
                high: 512,
                log: false,
                step: 32,
            },
            ParamSpec::Int {
                low: -3,
                high: 7,
                log: false,
                step: 1,
            },
            ParamSpec::Int {
                low: 1,
                high: 1000,
                log: true,
                step: 1,
            },
            ParamSpec::Categorical {
                choices: vec![
                    ParamValue::Categorical("a".into()),
                    ParamValue::Int(2),
                    ParamValue::Float(0.5),
                ],
            },
        ]
    }

    fn close(spec: &ParamSpec, a: &ParamValue, b: &ParamValue) -> bool {
        match (spec, a, b) {
            (ParamSpec::Float { .. }, ParamValue::Float(x), ParamValue::Float(y)) => {
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            _ => a == b,
        }
    }

    #[test]
    fn to_unit_inverts_from_unit() {
        for s in &every_kind() {
            for k in 0..=1000 {
                let v = from_unit(s, k as f64 / 1000.0);
                let u = to_unit(s, &v).unwrap_or_else(|| panic!("{s:?}: {v:?} has no unit"));
                assert!((0.0..=1.0).contains(&u), "{s:?}: {v:?} -> {u}");
                let back = from_unit(s, u);
                assert!(close(s, &back, &v), "{s:?}: {v:?} -> {u} -> {back:?}");
            }
        }
    }

    #[test]
    fn to_unit_is_monotone_and_centres_grid_values() {
        let s = ParamSpec::Int {
            low: 0,
            high: 3,
            log: false,
            step: 1,
        };
        let us: Vec<f64> = (0..4)
            .map(|i| to_unit(&s, &ParamValue::Int(i)).unwrap())
            .collect();
        assert_eq!(us, vec![0.125, 0.375, 0.625, 0.875]);
        let f = ParamSpec::Float {
            low: 1.0,
            high: 100.0,
            log: true,
            step: None,
        };
        assert!((to_unit(&f, &ParamValue::Float(10.0)).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(to_unit(&f, &ParamValue::Float(1.0)), Some(0.0));
        assert_eq!(to_unit(&f, &ParamValue::Float(100.0)), Some(1.0));
    }

    #[test]
    fn to_unit_refuses_what_cannot_belong_and_clamps_the_rest() {
        let f = ParamSpec::Float {
            low: 0.0,
            high: 1.0,
            log: false,
            step: None,
        };
        assert_eq!(to_unit(&f, &ParamValue::Int(0)), None);
        assert_eq!(to_unit(&f, &ParamValue::Float(f64::NAN)), None);
        assert_eq!(to_unit(&f, &ParamValue::Float(7.0)), Some(1.0));
        assert_eq!(to_unit(&f, &ParamValue::Float(-7.0)), Some(0.0));
        let i = ParamSpec::Int {
            low: 1,
            high: 4,
            log: false,
            step: 1,
        };
        assert_eq!(to_unit(&i, &ParamValue::Float(2.0)), None);
        let c = ParamSpec::Categorical {
            choices: vec![ParamValue::Categorical("x".into())],
        };
        assert_eq!(to_unit(&c, &ParamValue::Categorical("y".into())), None);
        assert_eq!(to_unit(&c, &ParamValue::Categorical("x".into())), Some(0.5));
    }
}
