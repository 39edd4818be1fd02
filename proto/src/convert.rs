//! Wire <-> domain conversions, done once at the service edge.

use crate::domain::*;
use crate::pb;
use std::collections::HashMap;

/// A wire message that cannot become a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("invalid field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl From<&ParamValue> for pb::ParamValue {
    fn from(v: &ParamValue) -> Self {
        use pb::param_value::Kind;
        let kind = match v {
            ParamValue::Float(f) => Kind::Float(*f),
            ParamValue::Int(i) => Kind::Int(*i),
            ParamValue::Categorical(s) => Kind::Categorical(s.clone()),
        };
        pb::ParamValue { kind: Some(kind) }
    }
}

impl TryFrom<pb::ParamValue> for ParamValue {
    type Error = ConvertError;
    fn try_from(v: pb::ParamValue) -> Result<Self, ConvertError> {
        use pb::param_value::Kind;
        match v.kind {
            Some(Kind::Float(f)) => Ok(ParamValue::Float(f)),
            Some(Kind::Int(i)) => Ok(ParamValue::Int(i)),
            Some(Kind::Categorical(s)) => Ok(ParamValue::Categorical(s)),
            None => Err(ConvertError::Missing("param_value.kind")),
        }
    }
}

pub fn params_to_pb(p: &Params) -> HashMap<String, pb::ParamValue> {
    p.iter().map(|(k, v)| (k.clone(), v.into())).collect()
}

pub fn params_from_pb(p: HashMap<String, pb::ParamValue>) -> Result<Params, ConvertError> {
    p.into_iter()
        .map(|(k, v)| Ok((k, ParamValue::try_from(v)?)))
        .collect()
}

impl From<TrialId> for pb::TrialRef {
    fn from(t: TrialId) -> Self {
        pb::TrialRef {
            study_id: t.study.0,
            number: t.number,
        }
    }
}

impl From<pb::TrialRef> for TrialId {
    fn from(t: pb::TrialRef) -> Self {
        TrialId {
            study: StudyId(t.study_id),
            number: t.number,
        }
    }
}

/// The trial reference of a request, which must be present.
pub fn trial_ref(t: Option<pb::TrialRef>) -> Result<TrialId, ConvertError> {
    t.map(TrialId::from).ok_or(ConvertError::Missing("trial"))
}

pub fn worker_id(s: String) -> Result<WorkerId, ConvertError> {
    if s.trim().is_empty() {
        return Err(ConvertError::Missing("worker_id"));
    }
    if s.len() > 256 {
        return Err(invalid("worker_id", "longer than 256 bytes"));
    }
    Ok(WorkerId(s))
}

impl From<TrialState> for pb::TrialState {
    fn from(s: TrialState) -> Self {
        match s {
            TrialState::Waiting => pb::TrialState::Waiting,
            TrialState::Running => pb::TrialState::Running,
            TrialState::Paused => pb::TrialState::Paused,
            TrialState::Completed => pb::TrialState::Completed,
            TrialState::Failed => pb::TrialState::Failed,
            TrialState::Stopped => pb::TrialState::Stopped,
            TrialState::Cancelled => pb::TrialState::Cancelled,
        }
    }
}

pub fn trial_state(v: i32) -> Result<TrialState, ConvertError> {
    match pb::TrialState::try_from(v) {
        Ok(pb::TrialState::Waiting) => Ok(TrialState::Waiting),
        Ok(pb::TrialState::Running) => Ok(TrialState::Running),
        Ok(pb::TrialState::Paused) => Ok(TrialState::Paused),
        Ok(pb::TrialState::Completed) => Ok(TrialState::Completed),
        Ok(pb::TrialState::Failed) => Ok(TrialState::Failed),
        Ok(pb::TrialState::Stopped) => Ok(TrialState::Stopped),
        Ok(pb::TrialState::Cancelled) => Ok(TrialState::Cancelled),
        Ok(pb::TrialState::Unspecified) => Err(ConvertError::Missing("state")),
        Err(_) => Err(invalid("state", format!("unknown trial state {v}"))),
    }
}

impl From<StudyState> for pb::StudyState {
    fn from(s: StudyState) -> Self {
        match s {
            StudyState::Running => pb::StudyState::Running,
            StudyState::Completed => pb::StudyState::Completed,
            StudyState::Cancelled => pb::StudyState::Cancelled,
        }
    }
}

pub fn study_state(v: i32) -> Result<StudyState, ConvertError> {
    match pb::StudyState::try_from(v) {
        Ok(pb::StudyState::Running) => Ok(StudyState::Running),
        Ok(pb::StudyState::Completed) => Ok(StudyState::Completed),
        Ok(pb::StudyState::Cancelled) => Ok(StudyState::Cancelled),
        Ok(pb::StudyState::Unspecified) => Err(ConvertError::Missing("state")),
        Err(_) => Err(invalid("state", format!("unknown study state {v}"))),
    }
}

impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Continue => pb::Decision::Continue,
            Decision::Stop => pb::Decision::Stop,
            Decision::Pause => pb::Decision::Pause,
        }
    }
}

pub fn decision(v: i32) -> Result<Decision, ConvertError> {
    match pb::Decision::try_from(v) {
        Ok(pb::Decision::Continue) => Ok(Decision::Continue),
        Ok(pb::Decision::Stop) => Ok(Decision::Stop),
        Ok(pb::Decision::Pause) => Ok(Decision::Pause),
        Ok(pb::Decision::Unspecified) => Err(ConvertError::Missing("decision")),
        Err(_) => Err(invalid("decision", format!("unknown decision {v}"))),
    }
}

/// The outcome of a FinishTrial request; `reason` goes with a failure,
/// `paused_step` with a pause.
pub fn outcome(v: i32, reason: String, paused_step: u32) -> Result<Outcome, ConvertError> {
    match pb::Outcome::try_from(v) {
        Ok(pb::Outcome::Completed) => Ok(Outcome::Completed),
        Ok(pb::Outcome::Failed) => Ok(Outcome::Failed(if reason.is_empty() {
            "trainer failed without a reason".into()
        } else {
            reason
        })),
        Ok(pb::Outcome::Interrupted) => Ok(Outcome::Interrupted),
        Ok(pb::Outcome::Paused) if paused_step == 0 => Err(ConvertError::Missing("paused_step")),
        Ok(pb::Outcome::Paused) => Ok(Outcome::Paused { step: paused_step }),
        Ok(pb::Outcome::Unspecified) => Err(ConvertError::Missing("outcome")),
        Err(_) => Err(invalid("outcome", format!("unknown outcome {v}"))),
    }
}

/// The wire triple (outcome, reason, paused_step) of a domain outcome.
pub fn outcome_to_pb(o: &Outcome) -> (pb::Outcome, String, u32) {
    match o {
        Outcome::Completed => (pb::Outcome::Completed, String::new(), 0),
        Outcome::Failed(r) => (pb::Outcome::Failed, r.clone(), 0),
        Outcome::Interrupted => (pb::Outcome::Interrupted, String::new(), 0),
        Outcome::Paused { step } => (pb::Outcome::Paused, String::new(), *step),
    }
}

impl From<&CheckpointRef> for pb::CheckpointInfo {
    fn from(c: &CheckpointRef) -> Self {
        pb::CheckpointInfo {
            trial: Some(pb::TrialRef {
                study_id: c.trial.study.0,
                number: c.trial.number,
            }),
            attempt: c.attempt,
            step: c.step,
            size: c.size,
            crc32: c.crc32,
        }
    }
}

impl TryFrom<pb::CheckpointInfo> for CheckpointRef {
    type Error = ConvertError;
    fn try_from(c: pb::CheckpointInfo) -> Result<Self, ConvertError> {
        if c.step == 0 {
            return Err(ConvertError::Missing("checkpoint.step"));
        }
        Ok(CheckpointRef {
            trial: trial_ref(c.trial)?,
            attempt: c.attempt,
            step: c.step,
            size: c.size,
            crc32: c.crc32,
        })
    }
}

pub fn resource(s: &str) -> Result<Resource, ConvertError> {
    match s {
        "" | "epochs" => Ok(Resource::Epochs),
        "data_fraction" => Ok(Resource::DataFraction),
        other => Err(invalid("resource", format!("unknown resource \"{other}\""))),
    }
}

impl From<&Assignment> for pb::TrialAssignment {
    fn from(a: &Assignment) -> Self {
        pb::TrialAssignment {
            study_id: a.trial.study.0,
            number: a.trial.number,
            attempt: a.attempt,
            study_name: a.study_name.clone(),
            params: params_to_pb(&a.params),
            trainer: Some(pb::TrainerConfig {
                kind: a.trainer.kind.clone(),
                dataset: a.trainer.dataset.clone(),
                epochs: a.trainer.epochs,
                settings: params_to_pb(&a.trainer.settings),
                command: a.trainer.command.clone(),
                env: a
                    .trainer
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                working_dir: a.trainer.working_dir.clone(),
                param_flags: a.trainer.param_flags,
            }),
            seed: a.seed,
            metric: a.metric.clone(),
            resource: a.resource.as_str().to_string(),
            budget: a.budget,
            max_resource: a.max_resource,
            resume: a.resume.as_ref().map(Into::into),
            save_final: a.save_final,
        }
    }
}

impl TryFrom<pb::TrialAssignment> for Assignment {
    type Error = ConvertError;
    fn try_from(a: pb::TrialAssignment) -> Result<Self, ConvertError> {
        let t = a.trainer.ok_or(ConvertError::Missing("trainer"))?;
        if t.kind.is_empty() {
            return Err(ConvertError::Missing("trainer.kind"));
        }
        Ok(Assignment {
            trial: TrialId {
                study: StudyId(a.study_id),
                number: a.number,
            },
            attempt: a.attempt,
            study_name: a.study_name,
            params: params_from_pb(a.params)?,
            trainer: TrainerConfig {
                kind: t.kind,
                dataset: t.dataset,
                epochs: t.epochs,
                settings: params_from_pb(t.settings)?,
                command: t.command,
                env: t.env.into_iter().collect(),
                working_dir: t.working_dir,
                param_flags: t.param_flags,
            },
            seed: a.seed,
            metric: a.metric,
            resource: resource(&a.resource)?,
            // An older peer sends no budget: the whole run.
            budget: if a.budget == 0 { t.epochs } else { a.budget },
            max_resource: if a.max_resource == 0 {
                t.epochs
            } else {
                a.max_resource
            },
            resume: a.resume.map(CheckpointRef::try_from).transpose()?,
            save_final: a.save_final,
        })
    }
}

/// Metric values from the wire; names must be non-empty.
pub fn metric_values(v: HashMap<String, f64>) -> Result<MetricValues, ConvertError> {
    if v.is_empty() {
        return Err(invalid("values", "no metrics in the report"));
    }
    if v.keys().any(|k| k.is_empty()) {
        return Err(invalid("values", "empty metric name"));
    }
    Ok(v.into_iter().collect())
}

impl From<&MetricPoint> for pb::MetricPoint {
    fn from(m: &MetricPoint) -> Self {
        pb::MetricPoint {
            attempt: m.attempt,
            step: m.step,
            values: m.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

impl From<&TrialInfo> for pb::Trial {
    fn from(t: &TrialInfo) -> Self {
        pb::Trial {
            study_id: t.id.study.0,
            number: t.id.number,
            state: pb::TrialState::from(t.state) as i32,
            params: params_to_pb(&t.params),
            value: t.value,
            last_step: t.last_step,
            attempt: t.attempt,
            worker: t.worker.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
            reason: t.reason.clone(),
            started_at_ms: t.started_at_ms,
            ended_at_ms: t.ended_at_ms,
            metrics: t.metrics.iter().map(Into::into).collect(),
            bracket: t.bracket,
            rung: t.rung,
            budget: t.budget,
        }
    }
}

impl TryFrom<pb::Trial> for TrialInfo {
    type Error = ConvertError;
    fn try_from(t: pb::Trial) -> Result<Self, ConvertError> {
        Ok(TrialInfo {
            id: TrialId {
                study: StudyId(t.study_id),
                number: t.number,
            },
            state: trial_state(t.state)?,
            params: params_from_pb(t.params)?,
            value: t.value,
            last_step: t.last_step,
            attempt: t.attempt,
            worker: (!t.worker.is_empty()).then_some(WorkerId(t.worker)),
            reason: t.reason,
            started_at_ms: t.started_at_ms,
            ended_at_ms: t.ended_at_ms,
            bracket: t.bracket,
            rung: t.rung,
            budget: t.budget,
            metrics: t
                .metrics
                .into_iter()
                .map(|m| MetricPoint {
                    attempt: m.attempt,
                    step: m.step,
                    values: m.values.into_iter().collect(),
                })
                .collect(),
        })
    }
}

pub fn direction(s: &str) -> Result<Direction, ConvertError> {
    match s {
        "maximize" => Ok(Direction::Maximize),
        "minimize" => Ok(Direction::Minimize),
        "" => Err(ConvertError::Missing("direction")),
        other => Err(invalid(
            "direction",
            format!("unknown direction \"{other}\""),
        )),
    }
}

impl From<&StudyInfo> for pb::StudySummary {
    fn from(s: &StudyInfo) -> Self {
        pb::StudySummary {
            study_id: s.id.0,
            name: s.name.clone(),
            state: pb::StudyState::from(s.state) as i32,
            end_reason: s.end_reason.clone(),
            metric: s.metric.clone(),
            direction: s.direction.as_str().to_string(),
            max_trials: s.max_trials,
            waiting: s.counts.waiting,
            running: s.counts.running,
            completed: s.counts.completed,
            failed: s.counts.failed,
            stopped: s.counts.stopped,
            cancelled: s.counts.cancelled,
            best: s.best.as_ref().map(Into::into),
            created_at_ms: s.created_at_ms,
            ended_at_ms: s.ended_at_ms,
            study_toml: s.study_toml.clone(),
            paused: s.counts.paused,
            scheduler: s.scheduler.clone(),
            resource_used: s.resource_used,
        }
    }
}

impl TryFrom<pb::StudySummary> for StudyInfo {
    type Error = ConvertError;
    fn try_from(s: pb::StudySummary) -> Result<Self, ConvertError> {
        Ok(StudyInfo {
            id: StudyId(s.study_id),
            name: s.name,
            state: study_state(s.state)?,
            end_reason: s.end_reason,
            metric: s.metric,
            direction: direction(&s.direction)?,
            max_trials: s.max_trials,
            scheduler: s.scheduler,
            resource_used: s.resource_used,
            counts: TrialCounts {
                waiting: s.waiting,
                running: s.running,
                paused: s.paused,
                completed: s.completed,
                failed: s.failed,
                stopped: s.stopped,
                cancelled: s.cancelled,
            },
            best: s.best.map(TrialInfo::try_from).transpose()?,
            created_at_ms: s.created_at_ms,
            ended_at_ms: s.ended_at_ms,
            study_toml: s.study_toml,
        })
    }
}

impl From<TrialLog> for pb::TrialLog {
    fn from(l: TrialLog) -> Self {
        pb::TrialLog {
            text: l.text,
            start: l.start,
            total: l.total,
            dropped: l.dropped,
        }
    }
}

impl From<pb::TrialLog> for TrialLog {
    fn from(l: pb::TrialLog) -> Self {
        TrialLog {
            text: l.text,
            start: l.start,
            total: l.total,
            dropped: l.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params() -> Params {
        [
            ("lr".to_string(), ParamValue::Float(1e-3)),
            ("hidden".to_string(), ParamValue::Int(256)),
            (
                "optimizer".to_string(),
                ParamValue::Categorical("adam".into()),
            ),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn assignments_round_trip() {
        let a = Assignment {
            trial: TrialId {
                study: StudyId(3),
                number: 7,
            },
            attempt: 2,
            study_name: "s".into(),
            params: params(),
            trainer: TrainerConfig {
                kind: "mlp".into(),
                dataset: "fashion-mnist".into(),
                epochs: 4,
                settings: params(),
                command: vec!["python".into(), "train.py".into(), "{budget}".into()],
                env: [("OMP_NUM_THREADS".to_string(), "4".to_string())].into(),
                working_dir: "runs".into(),
                param_flags: true,
            },
            seed: 99,
            metric: "val_accuracy".into(),
            resource: Resource::Epochs,
            budget: 3,
            max_resource: 4,
            resume: Some(CheckpointRef {
                trial: TrialId {
                    study: StudyId(3),
                    number: 7,
                },
                attempt: 1,
                step: 1,
                size: 10,
                crc32: 77,
            }),
            save_final: true,
        };
        assert_eq!(
            Assignment::try_from(pb::TrialAssignment::from(&a)).unwrap(),
            a
        );
    }

    #[test]
    fn trials_and_studies_round_trip() {
        let t = TrialInfo {
            id: TrialId {
                study: StudyId(1),
                number: 2,
            },
            state: TrialState::Stopped,
            params: params(),
            value: Some(0.5),
            last_step: Some(3),
            attempt: 1,
            worker: Some(WorkerId("w".into())),
            reason: "study ended: target".into(),
            started_at_ms: 10,
            ended_at_ms: 20,
            bracket: 1,
            rung: 2,
            budget: 9,
            metrics: vec![MetricPoint {
                attempt: 1,
                step: 1,
                values: [("loss".to_string(), 0.25)].into_iter().collect(),
            }],
        };
        assert_eq!(TrialInfo::try_from(pb::Trial::from(&t)).unwrap(), t);
        let s = StudyInfo {
            id: StudyId(1),
            name: "n".into(),
            state: StudyState::Completed,
            end_reason: "max_trials".into(),
            metric: "loss".into(),
            direction: Direction::Minimize,
            max_trials: 5,
            scheduler: "asha".into(),
            resource_used: 12,
            counts: TrialCounts {
                paused: 2,
                completed: 4,
                failed: 1,
                ..Default::default()
            },
            best: Some(t),
            created_at_ms: 1,
            ended_at_ms: 2,
            study_toml: "name = \"n\"".into(),
        };
        assert_eq!(StudyInfo::try_from(pb::StudySummary::from(&s)).unwrap(), s);
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        assert_eq!(
            ParamValue::try_from(pb::ParamValue { kind: None }).unwrap_err(),
            ConvertError::Missing("param_value.kind")
        );
        assert_eq!(trial_state(0).unwrap_err(), ConvertError::Missing("state"));
        assert!(matches!(
            trial_state(42),
            Err(ConvertError::Invalid { field: "state", .. })
        ));
        assert_eq!(
            trial_ref(None).unwrap_err().to_string(),
            "missing field `trial`"
        );
        assert_eq!(
            worker_id(" ".into()).unwrap_err(),
            ConvertError::Missing("worker_id")
        );
        assert_eq!(
            outcome(2, String::new(), 0).unwrap(),
            Outcome::Failed("trainer failed without a reason".into())
        );
        assert_eq!(
            outcome(4, String::new(), 0).unwrap_err(),
            ConvertError::Missing("paused_step")
        );
        assert_eq!(
            outcome(4, String::new(), 3).unwrap(),
            Outcome::Paused { step: 3 }
        );
        let mut a = pb::TrialAssignment::default();
        assert_eq!(
            Assignment::try_from(a.clone()).unwrap_err(),
            ConvertError::Missing("trainer")
        );
        a.trainer = Some(pb::TrainerConfig::default());
        assert_eq!(
            Assignment::try_from(a).unwrap_err(),
            ConvertError::Missing("trainer.kind")
        );
    }
}
