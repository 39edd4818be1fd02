//! A trial program written with `hpo-sdk`, for the `command` trainer: a
//! made-up learning curve whose floor depends on the parameter `x`, with a
//! checkpoint so a paused trial resumes where it left off.
//!
//! ```toml
//! [trainer]
//! kind = "command"
//! command = ["target/debug/examples/sdk_trial"]
//! epochs = 9
//! ```
//!
//! `HPO_DEMO_STEP_MS` slows each step down (tests of stops and pauses).

use hpo_sdk::{Decision, Trial, TrialError};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdk_trial: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), TrialError> {
    let trial = Trial::from_env()?;
    let x = trial.param_f64("x")?;
    let step_ms: u64 = std::env::var("HPO_DEMO_STEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // The state a real program would keep: here, the running loss.
    let mut loss = 1.0;
    if trial.is_resumed() {
        let saved = trial
            .load("state.txt")?
            .ok_or_else(|| TrialError::Refused("resumed without state.txt".into()))?;
        let text = String::from_utf8_lossy(&saved).into_owned();
        let (step, value) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| TrialError::Refused(format!("bad state.txt: {text}")))?;
        if step.parse::<u32>().ok() != Some(trial.start_step()) {
            return Err(TrialError::Refused(format!(
                "state.txt is of step {step}, the trial resumes after step {}",
                trial.start_step()
            )));
        }
        loss = value
            .parse()
            .map_err(|_| TrialError::Refused(format!("bad loss in state.txt: {value}")))?;
        println!("resumed after step {step} with loss {loss}");
    }
    let floor = (x - 0.3).powi(2);
    for step in trial.start_step() + 1..=trial.max_resource() {
        std::thread::sleep(std::time::Duration::from_millis(step_ms));
        loss = floor + (loss - floor) * 0.5;
        println!("step {step}: loss {loss:.6}");
        match trial.report(step, [("loss", loss)])? {
            Decision::Continue => {}
            Decision::Pause => {
                trial.save("state.txt", format!("{step} {loss}").as_bytes())?;
                println!("paused at step {step}");
                return Ok(());
            }
            Decision::Stop => {
                println!("stopped at step {step}");
                return Ok(());
            }
        }
    }
    Ok(())
}
