//! Checkpoints as a part of the service: one after each sync that stored events, and at
//! least every `every`, so that the archive's state is signed within moments of each
//! change and an hourly checkpoint shows it was there, unchanged, in between.

use std::sync::Arc;

use jiff::Timestamp;
use tfaudit_integrity::{CheckpointMade, Checkpointer, IntegrityError};
use tfaudit_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::retry::{Retry, Shown};

pub async fn checkpoint_forever(
    store: Arc<dyn Store>,
    checkpointer: Checkpointer,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut retry = Retry::new(std::time::Duration::from_secs(1));
    loop {
        let c = checkpointer.clone();
        let made = tfaudit_store::blocking(&store, move |s| c.run(s, Timestamp::now()).map_err(Failed)).await;
        let pause = match made {
            Ok(CheckpointMade::New(cp)) => {
                tracing::info!(size = cp.size, signed = cp.signed_by.is_some(), "checkpoint made");
                retry.succeeded();
                checkpointer.every
            }
            Ok(_) => {
                retry.succeeded();
                checkpointer.every
            }
            Err(Failed(e)) => {
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

/// An [`IntegrityError`] that a store failure converts into, for `blocking`.
struct Failed(IntegrityError);

impl From<tfaudit_store::StoreError> for Failed {
    fn from(e: tfaudit_store::StoreError) -> Self {
        Self(e.into())
    }
}
