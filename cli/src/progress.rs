//! Follows a study until it ends: a progress bar on a terminal (trials done /
//! total, running, best so far), plain lines elsewhere (CI logs).

use anyhow::Result;
use hpo_proto::{StudyId, StudyInfo, StudyState};
use hpo_sdk::Client;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// How often the coordinator is asked; a status call costs microseconds there.
const POLL: Duration = Duration::from_millis(300);

pub fn best_text(info: &StudyInfo) -> String {
    match &info.best {
        Some(b) => format!(
            "best {} {:.4} (trial {})",
            info.metric,
            b.value.unwrap_or(f64::NAN),
            b.id.number
        ),
        None => format!("best {} -", info.metric),
    }
}

/// Returns the study's final state once it has ended.
pub async fn watch(client: &Client, id: StudyId) -> Result<StudyInfo> {
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        None,
        if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} trials  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut last_line = String::new();
    loop {
        let info = client.study(id).await?;
        let done = info.counts.finished() as u64;
        bar.set_length(info.max_trials as u64);
        bar.set_position(done);
        let paused = if info.counts.paused > 0 {
            format!(" paused {}", info.counts.paused)
        } else {
            String::new()
        };
        let msg = format!(
            "running {}{paused}  {}",
            info.counts.running,
            best_text(&info)
        );
        bar.set_message(msg.clone());
        if !tty {
            let line = format!("{done}/{} trials  {msg}", info.max_trials);
            if line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
        }
        if info.state != StudyState::Running {
            bar.finish_and_clear();
            return Ok(info);
        }
        tokio::time::sleep(POLL).await;
    }
}
