//! Checkpoints as a part of the service: one after each sync that stored events, and at
//! least every `every`, so that the archive's state is signed within moments of each
//! change and an hourly checkpoint shows it was there, unchanged, in between.

use std::sync::Arc;

use jiff::Timestamp;
use tfaudit_forward::Configured;
use tfaudit_integrity::{CheckpointMade, Checkpointer};
use tfaudit_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::retry::{Retry, Shown};

pub async fn checkpoint_forever(
    store: Arc<dyn Store>,
    checkpointer: Checkpointer,
    sink: Option<Configured>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut retry = Retry::new(std::time::Duration::from_secs(1));
    let client = copy_client();
    loop {
        let c = checkpointer.clone();
        let made = tfaudit_store::blocking(&store, move |s| c.run(s, Timestamp::now())).await;
        let pause = match made {
            Ok(made) => {
                if let CheckpointMade::New(cp) = &made {
                    tracing::info!(size = cp.size, signed = cp.signed_by.is_some(), "checkpoint made");
                }
                if let Err(e) = send_new(&client, &checkpointer, sink.as_ref(), &made).await {
                    // The next checkpoint is sent too, and it covers this one's events.
                    tracing::error!("{e}");
                }
                retry.succeeded();
                checkpointer.every
            }
            Err(e) => {
                let pause = retry.failed();
                tracing::error!("cannot make a checkpoint: {e}; trying again in {}", Shown(pause));
                pause
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// The client checkpoint copies are sent with: no redirects followed (the URL may carry
/// a secret), bounded in time.
#[must_use]
pub fn copy_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(tfaudit_api::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// Sends a checkpoint just made to the checkpointer's `webhook` and to `sink`, those
/// that are set; a checkpoint that was already current is not sent again.
///
/// # Errors
/// What went wrong with each, naming the setting, URLs and secrets redacted.
pub async fn send_new(
    client: &reqwest::Client,
    checkpointer: &Checkpointer,
    sink: Option<&Configured>,
    made: &CheckpointMade,
) -> Result<(), String> {
    let CheckpointMade::New(cp) = made else { return Ok(()) };
    let mut failed = Vec::new();
    if let Some(url) = &checkpointer.webhook
        && let Err(e) = send_copy(client, url, &cp.note).await
    {
        failed.push(format!("the checkpoint was made but not sent to [integrity] checkpoint_webhook: {e}"));
    }
    if let Some(sink) = sink
        && let Err(e) = send_to_sink(sink, cp).await
    {
        failed.push(format!(
            "the checkpoint was made but not sent to [integrity] checkpoint_sink {:?}: {e}",
            sink.settings.name
        ));
    }
    if failed.is_empty() { Ok(()) } else { Err(failed.join("; ")) }
}

/// Sends a checkpoint to a sink as one record (see `tfaudit_forward::Batch::checkpoint`),
/// once: when it fails, the next checkpoint covers the same events.
///
/// # Errors
/// The sink's reason, redacted, when it did not take the record.
pub async fn send_to_sink(sink: &Configured, cp: &tfaudit_store::Checkpoint) -> Result<(), String> {
    let batch = tfaudit_forward::Batch::checkpoint(&sink.settings.name, cp);
    let shown = |e: &str| tfaudit_api::redact::redact(e).into_owned();
    match sink.sink.send(&batch).await {
        Ok(d) if d.rejected.is_empty() && d.skipped.is_empty() => Ok(()),
        Ok(d) => Err(d.rejected.first().map_or_else(
            || "the sink skipped it".to_owned(),
            |(_, why)| format!("the sink refused it: {}", shown(why)),
        )),
        Err(e) => Err(shown(e.message())),
    }
}

/// POSTs a checkpoint (its signed-note text) to `url`: a copy kept outside the
/// archive's reach.
///
/// # Errors
/// The reason, with the URL redacted, when it was not answered with a 2xx.
pub async fn send_copy(client: &reqwest::Client, url: &tfaudit_model::Secret, note: &str) -> Result<(), String> {
    let answer = client
        .post(url.expose())
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(note.to_owned())
        .send()
        .await
        .map_err(|e| tfaudit_api::redact::redact(&tfaudit_api::client::error_chain(&e)).into_owned())?;
    if answer.status().is_success() { Ok(()) } else { Err(format!("the receiver answered {}", answer.status())) }
}
