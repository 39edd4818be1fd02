//! Ask and tell: a study whose trials this process evaluates itself.
//!
//! ```sh
//! hpo server --listen 127.0.0.1:50051 --data-dir ./hpo-data &
//! cargo run -p hpo-sdk --example ask_tell -- http://127.0.0.1:50051
//! ```

use hpo_proto::{Decision, Direction};
use hpo_sdk::{AskTell, Client, SdkError, StudyBuilder};
use std::time::Duration;

/// What a real program would train; here a function with its minimum at
/// x = 1, lr = 0.01, opt = "adam", approached over the steps.
fn evaluate(x: f64, lr: f64, opt: &str, step: u32) -> f64 {
    let penalty = if opt == "sgd" { 0.1 } else { 0.0 };
    (x - 1.0).powi(2) + (lr.log10() + 2.0).powi(2) + penalty + 1.0 / f64::from(step)
}

#[tokio::main]
async fn main() -> Result<(), SdkError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let client = Client::connect(&url).await?;
    let study = StudyBuilder::new("ask-tell-example")
        .seed(7)
        .objective("loss", Direction::Minimize)
        .algorithm("tpe")
        .max_trials(30)
        .max_parallel(1)
        .trainer_external(3)
        .float("x", -5.0, 5.0, false)
        .float("lr", 1e-4, 1e-1, true)
        .categorical("opt", ["adam", "sgd"])
        .schedule("median", 1, 2);
    let id = client.submit_spec(&study).await?;
    let tuner = AskTell::connect(&url, id).await?;
    while let Some(mut trial) = tuner.ask().await? {
        let (x, lr) = (trial.param_f64("x")?, trial.param_f64("lr")?);
        let opt = trial.param_str("opt")?.to_string();
        let mut loss = f64::INFINITY;
        for step in 1..=3 {
            loss = evaluate(x, lr, &opt, step);
            if trial.report(step, [("loss", loss)]).await? == Decision::Stop {
                break;
            }
        }
        trial.tell(loss).await?;
    }
    let info = client.wait(id, Duration::from_millis(200)).await?;
    if let Some(best) = info.best {
        println!("best loss {:?} with {:?}", best.value, best.params);
    }
    tuner.close().await;
    Ok(())
}
