//! The event listing: generated history merged with live arrivals, newest first,
//! filtered by `since` and retention, cut into pages by offset.

use crate::generate::{self, Catalog, Style};
use crate::{SimConfig, SinceMode};

/// History events sharing one second come in groups of this size.
const BURST: u64 = 4;

/// An event in the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEvent {
    pub timestamp_secs: i64,
    pub json: String,
    /// `None` for malformed elements.
    pub id: Option<String>,
}

#[derive(Debug, Clone)]
struct Live {
    ts: i64,
    order: u64,
    id: String,
    json: String,
}

/// History plus live events.
#[derive(Debug)]
pub struct Listing {
    seed: u64,
    history: u64,
    newest_secs: i64,
    span_secs: i64,
    malformed_every: Option<u64>,
    catalog: Catalog,
    /// Newest first: by timestamp descending, then most recent arrival first.
    live: Vec<Live>,
    next_live: u64,
}

impl Listing {
    #[must_use]
    pub fn new(config: &SimConfig, start_secs: i64) -> Self {
        let malformed_every = (config.malformed > 0).then(|| (config.events / config.malformed).max(1));
        // Ids depend on when the simulator started as well as on the seed: events
        // are generated with timestamps relative to the start, and a restarted
        // simulator must not serve the same ids at other times (HCP Terraform never
        // changes an event's timestamp).
        let seed = config.seed ^ (start_secs as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Self {
            seed,
            history: config.events,
            newest_secs: start_secs - config.newest_age.as_secs() as i64,
            span_secs: config.span.as_secs().max(1) as i64,
            malformed_every,
            catalog: Catalog::new(
                seed,
                &Style { organization_id: config.organization_id.clone(), hostile: config.hostile },
                config.events,
            ),
            live: Vec::new(),
            next_live: 0,
        }
    }

    /// Timestamp of history element `i` (0 = newest); never increases with `i`.
    fn history_ts(&self, i: u64) -> i64 {
        let groups = self.history.div_ceil(BURST).max(1);
        let g = i / BURST;
        self.newest_secs - (i128::from(g) * i128::from(self.span_secs) / i128::from(groups)) as i64
    }

    fn history_is_malformed(&self, i: u64) -> bool {
        self.malformed_every.is_some_and(|every| i % every == every / 2)
    }

    fn history_event(&self, i: u64) -> ListedEvent {
        let ts = self.history_ts(i);
        if self.history_is_malformed(i) {
            let nth = self.malformed_every.map_or(0, |every| i / every);
            return ListedEvent { timestamp_secs: ts, json: generate::malformed(i, nth, ts), id: None };
        }
        ListedEvent {
            timestamp_secs: ts,
            json: self.catalog.event(0, i, &generate::timestamp(ts)),
            id: Some(generate::uuid(self.seed, 0, i)),
        }
    }

    /// Adds a live event with this timestamp; returns its id.
    pub fn add_live(&mut self, ts: i64) -> String {
        let order = self.next_live;
        self.next_live += 1;
        let id = generate::uuid(self.seed, 1, order);
        let json = self.catalog.event(1, order, &generate::timestamp(ts));
        // Insert keeping (ts desc, order desc): after every element that sorts first.
        let at = self.live.partition_point(|l| l.ts > ts || (l.ts == ts && l.order > order));
        self.live.insert(at, Live { ts, order, id: id.clone(), json });
        id
    }

    /// Adds a live event with this exact JSON (which carries `id` and a timestamp of
    /// `ts`); for tests that need particular events.
    pub fn add_live_json(&mut self, ts: i64, id: String, json: String) {
        let order = self.next_live;
        self.next_live += 1;
        let at = self.live.partition_point(|l| l.ts > ts || (l.ts == ts && l.order > order));
        self.live.insert(at, Live { ts, order, id, json });
    }

    /// How many history elements pass the filter: a prefix, as timestamps never
    /// increase.
    fn history_visible(&self, keep: &impl Fn(i64) -> bool) -> u64 {
        let (mut lo, mut hi) = (0u64, self.history);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if keep(self.history_ts(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn keep(since_ms: Option<i64>, mode: SinceMode, oldest_secs: i64) -> impl Fn(i64) -> bool {
        move |ts: i64| {
            ts >= oldest_secs
                && since_ms.is_none_or(|s| match mode {
                    SinceMode::Exclusive => ts * 1000 > s,
                    SinceMode::Inclusive => ts * 1000 >= s,
                })
        }
    }

    /// One page: the elements at offsets `[offset, offset + size)` of the filtered,
    /// merged, newest-first listing, and the listing's total length.
    #[must_use]
    pub fn page(
        &self,
        since_ms: Option<i64>,
        mode: SinceMode,
        oldest_secs: i64,
        offset: u64,
        size: u64,
    ) -> (Vec<ListedEvent>, u64) {
        let keep = Self::keep(since_ms, mode, oldest_secs);
        let nb = self.history_visible(&keep);
        let live: Vec<&Live> = self.live.iter().filter(|l| keep(l.ts)).collect();
        let total = nb + live.len() as u64;
        // Live events sort before history events of the same second (they were created
        // later), so history element b sits at b + (live events with ts >= its ts).
        let live_before = |b: u64| live.partition_point(|l| l.ts >= self.history_ts(b)) as u64;
        let (mut lo, mut hi) = (0u64, nb);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if mid + live_before(mid) < offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut b = lo;
        let mut l = (offset.saturating_sub(b) as usize).min(live.len());
        let mut out = Vec::with_capacity(size.min(total.saturating_sub(offset)) as usize);
        while (out.len() as u64) < size {
            let take_live = match (l < live.len(), b < nb) {
                (true, true) => live[l].ts >= self.history_ts(b),
                (true, false) => true,
                (false, true) => false,
                (false, false) => break,
            };
            if take_live {
                out.push(ListedEvent {
                    timestamp_secs: live[l].ts,
                    json: live[l].json.clone(),
                    id: Some(live[l].id.clone()),
                });
                l += 1;
            } else {
                out.push(self.history_event(b));
                b += 1;
            }
        }
        (out, total)
    }

    /// Every element visible now, newest first.
    #[must_use]
    pub fn all(&self, oldest_secs: i64) -> Vec<ListedEvent> {
        self.page(None, SinceMode::Inclusive, oldest_secs, 0, u64::MAX).0
    }

    /// Elements of history plus live.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.history + self.live.len() as u64
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(listing: &Listing, since_ms: Option<i64>, mode: SinceMode, oldest: i64) -> Vec<ListedEvent> {
        let keep = Listing::keep(since_ms, mode, oldest);
        let mut all: Vec<(i64, u8, u64, ListedEvent)> = Vec::new();
        for i in 0..listing.history {
            let e = listing.history_event(i);
            if keep(e.timestamp_secs) {
                all.push((e.timestamp_secs, 0, u64::MAX - i, e));
            }
        }
        for l in &listing.live {
            if keep(l.ts) {
                all.push((
                    l.ts,
                    1,
                    l.order,
                    ListedEvent { timestamp_secs: l.ts, json: l.json.clone(), id: Some(l.id.clone()) },
                ));
            }
        }
        // Newest first; live before history in a second; later arrivals first.
        all.sort_by_key(|x| std::cmp::Reverse((x.0, x.1, x.2)));
        all.into_iter().map(|x| x.3).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn pages_cut_the_same_listing_a_sort_would(
            history in 0u64..300,
            live_ts in proptest::collection::vec(-400i64..50, 0..40),
            since in proptest::option::of(-500i64..60),
            inclusive: bool,
            size in 1u64..50,
        ) {
            let config = SimConfig { events: history, span: std::time::Duration::from_secs(300), newest_age: std::time::Duration::ZERO, malformed: 3, ..SimConfig::default() };
            let mut listing = Listing::new(&config, 0);
            for ts in live_ts {
                listing.add_live(ts);
            }
            let mode = if inclusive { SinceMode::Inclusive } else { SinceMode::Exclusive };
            let since_ms = since.map(|s| s * 1000);
            let expected = naive(&listing, since_ms, mode, -250);
            let mut paged = Vec::new();
            let mut offset = 0;
            loop {
                let (page, total) = listing.page(since_ms, mode, -250, offset, size);
                prop_assert_eq!(total, expected.len() as u64);
                if page.is_empty() { break; }
                offset += page.len() as u64;
                paged.extend(page);
            }
            prop_assert_eq!(paged, expected);
        }
    }
}
