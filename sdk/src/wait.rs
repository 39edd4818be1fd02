//! Waiting for a study to end.

use crate::{Client, Result};
use hpo_proto::{StudyId, StudyInfo, StudyState};
use std::time::Duration;

impl Client {
    /// Polls the study every `poll` until it has ended; returns its final
    /// summary.
    pub async fn wait(&self, id: StudyId, poll: Duration) -> Result<StudyInfo> {
        self.follow(id, poll, |_| {}).await
    }

    /// As `wait`, calling `on_poll` with the summary of every poll (the
    /// final one included), for progress output.
    pub async fn follow(
        &self,
        id: StudyId,
        poll: Duration,
        mut on_poll: impl FnMut(&StudyInfo),
    ) -> Result<StudyInfo> {
        let poll = poll.max(Duration::from_millis(1));
        loop {
            let info = self.study(id).await?;
            on_poll(&info);
            if info.state != StudyState::Running {
                return Ok(info);
            }
            tokio::time::sleep(poll).await;
        }
    }
}
