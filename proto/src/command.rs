//! The `command` trainer's contract, shared by the study file check (at
//! submit time) and the worker (per segment): the placeholders a command
//! may use, the environment a trial's program sees, and the local trial
//! protocol the SDKs speak to the worker.

use std::collections::BTreeMap;

/// Placeholders a `trainer.command` argument may hold, filled per segment.
/// `{params.NAME}` is also accepted for any parameter. `{{` and `}}` are
/// literal braces.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("study", "the study's id"),
    ("study_name", "the study's name"),
    ("trial", "the trial's number in its study"),
    ("attempt", "the attempt (segment) number"),
    ("seed", "the trial's seed"),
    ("budget", "the resource level to train to in this segment"),
    ("max_resource", "the full budget (the trainer's epochs)"),
    (
        "start_step",
        "the step a resumed segment starts after (0 when fresh)",
    ),
    (
        "checkpoint_dir",
        "the trial's checkpoint folder (holds the checkpoint to resume from)",
    ),
    ("params_json", "the parameters as one JSON object"),
];

/// Environment variables the worker sets for a trial's program (the SDKs
/// read them; scripts may too).
pub mod env {
    /// The local endpoint (`127.0.0.1:PORT`) of the trial protocol.
    pub const ENDPOINT: &str = "HPO_ENDPOINT";
    /// The secret to present in the endpoint's `hello`.
    pub const TOKEN: &str = "HPO_TOKEN";
    pub const STUDY: &str = "HPO_STUDY";
    pub const STUDY_NAME: &str = "HPO_STUDY_NAME";
    pub const TRIAL: &str = "HPO_TRIAL";
    pub const ATTEMPT: &str = "HPO_ATTEMPT";
    pub const SEED: &str = "HPO_SEED";
    /// The parameters as a JSON object (numbers, and strings for categorical
    /// values).
    pub const PARAMS: &str = "HPO_PARAMS";
    pub const BUDGET: &str = "HPO_BUDGET";
    pub const MAX_RESOURCE: &str = "HPO_MAX_RESOURCE";
    /// "epochs" or "data_fraction".
    pub const RESOURCE: &str = "HPO_RESOURCE";
    pub const START_STEP: &str = "HPO_START_STEP";
    /// The objective's metric name.
    pub const METRIC: &str = "HPO_METRIC";
    /// Save the checkpoint here; on a resume it holds the saved one.
    pub const CHECKPOINT_DIR: &str = "HPO_CHECKPOINT_DIR";
    /// The trial protocol's version the worker speaks.
    pub const PROTOCOL: &str = "HPO_TRIAL_PROTOCOL";
}

/// Version of the local trial protocol (JSON lines over TCP on loopback):
/// bumped on any change an SDK of the previous version would misread.
pub const TRIAL_PROTOCOL_VERSION: u32 = 1;

/// Lines a program prints on stdout to report without an SDK:
/// `hpo-metric {"step": 3, "val_loss": 0.41}`.
pub const METRIC_LINE_PREFIX: &str = "hpo-metric ";

/// The placeholders of one argument, in order, or a message saying what is
/// wrong with it (an unknown name, a lone brace).
pub fn placeholders(arg: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    fill(arg, |name| {
        names.push(name.to_string());
        Some(String::new())
    })?;
    Ok(names)
}

/// Checks a placeholder name against the known ones and the parameters.
pub fn check_placeholder(name: &str, params: &[&str]) -> Result<(), String> {
    if PLACEHOLDERS.iter().any(|(n, _)| *n == name) {
        return Ok(());
    }
    if let Some(p) = name.strip_prefix("params.") {
        if params.contains(&p) {
            return Ok(());
        }
        return Err(format!(
            "unknown parameter `{p}` in {{{name}}} (parameters: {})",
            params.join(", ")
        ));
    }
    let known: Vec<String> = PLACEHOLDERS
        .iter()
        .map(|(n, _)| format!("{{{n}}}"))
        .collect();
    Err(format!(
        "unknown placeholder {{{name}}} (expected one of: {}, {{params.NAME}}; write {{{{ for a literal brace)",
        known.join(", ")
    ))
}

/// Fills `{name}` placeholders with `value(name)`; `{{` and `}}` are
/// literal braces. None from `value` is an unknown placeholder.
pub fn fill(arg: &str, mut value: impl FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let rest = &arg[i + 1..];
                let end = rest.find('}').ok_or_else(|| {
                    format!("unclosed `{{` in \"{arg}\" (write {{{{ for a literal brace)")
                })?;
                let name = &rest[..end];
                if name.is_empty() || name.contains('{') {
                    return Err(format!("bad placeholder in \"{arg}\""));
                }
                let v = value(name).ok_or_else(|| format!("unknown placeholder {{{name}}}"))?;
                out.push_str(&v);
                for _ in 0..name.chars().count() + 1 {
                    chars.next();
                }
            }
            '}' => {
                return Err(format!(
                    "lone `}}` in \"{arg}\" (write }}}} for a literal brace)"
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `--name value` arguments for the parameters, in name order.
pub fn param_flags(params: &crate::Params) -> Vec<String> {
    let mut out = Vec::with_capacity(params.len() * 2);
    for (name, value) in params {
        out.push(format!("--{name}"));
        out.push(value.to_string());
    }
    out
}

/// The parameters as a JSON object: floats and integers as numbers,
/// categorical values as strings.
pub fn params_json(params: &crate::Params) -> String {
    let map: BTreeMap<&str, serde_json::Value> = params
        .iter()
        .map(|(k, v)| {
            let j = match v {
                crate::ParamValue::Float(f) => serde_json::Number::from_f64(*f)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
                crate::ParamValue::Int(i) => serde_json::Value::from(*i),
                crate::ParamValue::Categorical(s) => serde_json::Value::from(s.as_str()),
            };
            (k.as_str(), j)
        })
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_literal_braces() {
        let got = fill("--epochs={budget}/{{x}}", |n| {
            (n == "budget").then(|| "3".to_string())
        })
        .unwrap();
        assert_eq!(got, "--epochs=3/{x}");
        assert_eq!(
            placeholders("{trial}-{params.lr}").unwrap(),
            ["trial", "params.lr"]
        );
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(
            fill("{budget", |_| Some(String::new()))
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            fill("a}b", |_| Some(String::new()))
                .unwrap_err()
                .contains("lone")
        );
        assert!(fill("{}", |_| Some(String::new())).is_err());
        assert!(
            check_placeholder("budgte", &["lr"])
                .unwrap_err()
                .contains("unknown placeholder {budgte}")
        );
        assert!(
            check_placeholder("params.momentum", &["lr"])
                .unwrap_err()
                .contains("`momentum`")
        );
        assert!(check_placeholder("params.lr", &["lr"]).is_ok());
    }

    #[test]
    fn params_become_json_and_flags() {
        let p: crate::Params = [
            ("lr".to_string(), crate::ParamValue::Float(0.5)),
            ("layers".to_string(), crate::ParamValue::Int(3)),
            (
                "opt".to_string(),
                crate::ParamValue::Categorical("adam".into()),
            ),
        ]
        .into();
        assert_eq!(params_json(&p), r#"{"layers":3,"lr":0.5,"opt":"adam"}"#);
        assert_eq!(
            param_flags(&p),
            ["--layers", "3", "--lr", "0.5", "--opt", "adam"]
        );
    }
}
