//! `tfaudit sim`: the simulator on a port, until stopped.

use tfaudit_sim::{Faults, Sim, SimConfig, SinceMode};

use crate::args::{SimArgs, SinceModeArg};
use crate::failure::Failure;

pub fn config(a: &SimArgs) -> Result<SimConfig, Failure> {
    for (flag, p) in [
        ("--late-fraction", a.late_fraction),
        ("--hostile", a.hostile),
        ("--error-rate", a.error_rate),
        ("--throttle-rate", a.throttle_rate),
        ("--drop-rate", a.drop_rate),
        ("--truncate-rate", a.truncate_rate),
        ("--garbage-rate", a.garbage_rate),
        ("--slow-rate", a.slow_rate),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err(Failure::Usage(format!("{flag} is a share of requests, between 0 and 1 (got {p})")));
        }
    }
    if !(0.0..=100_000.0).contains(&a.live_rate) {
        return Err(Failure::Usage(format!(
            "--live-rate must be between 0 and 100000 events per second (got {})",
            a.live_rate
        )));
    }
    if a.max_page_size == 0 {
        return Err(Failure::Usage("--max-page-size must be at least 1".into()));
    }
    Ok(SimConfig {
        seed: a.seed,
        events: a.events,
        span: a.span.0,
        newest_age: a.newest_age.0,
        retention: a.retention.0,
        max_page_size: a.max_page_size,
        since_mode: match a.since_mode {
            SinceModeArg::Exclusive => SinceMode::Exclusive,
            SinceModeArg::Inclusive => SinceMode::Inclusive,
        },
        token: a.token.clone(),
        forbidden_token: a.forbidden_token.clone(),
        enrich_token: a.enrich_token.clone(),
        live_rate: a.live_rate,
        late_fraction: a.late_fraction,
        max_lateness: a.max_lateness.0,
        hostile: a.hostile,
        malformed: a.malformed,
        faults: Faults {
            error_rate: a.error_rate,
            throttle_rate: a.throttle_rate,
            drop_rate: a.drop_rate,
            truncate_rate: a.truncate_rate,
            garbage_rate: a.garbage_rate,
            slow_rate: a.slow_rate,
            slow_delay: a.slow_delay.0,
            rate_limit: a.rate_limit,
        },
        ..SimConfig::default()
    })
}

pub async fn sim(args: &SimArgs) -> Result<(), Failure> {
    let config = config(args)?;
    let events = config.events;
    let sim = Sim::start(config, args.listen)
        .await
        .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}; pick another --listen address", args.listen)))?;
    use std::io::Write;
    writeln!(
        crate::output::Stdout::new(),
        "tfaudit sim: {} events of history at {} (token: {})\n\
         try:  TFE_ADDRESS={} TFE_TOKEN={} tfaudit sync\n\
         stop with Ctrl-C",
        crate::output::count(events),
        sim.url(),
        args.token,
        sim.url(),
        args.token
    )?;
    let cancel = crate::stop_on_signals();
    sim.run_until(cancel).await;
    Ok(())
}
