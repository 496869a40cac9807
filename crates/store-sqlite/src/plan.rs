//! Choosing how to find the events matching a filter, and "the newest N" of them.
//!
//! Three ways: walk the time index from the newest event and keep the matches until N
//! are found — cheap when matches are common (it reads about N / selectivity rows) —
//! or read the matches through a posting list (postings.rs), newest bucket first,
//! sorting each bucket's — cheap when matches are rare (it reads about the matches
//! of the buckets it needs) — or, for a filter on time alone, leave it to SQLite. The
//! selectivity is estimated from the hourly counts of the last 48 hours of the range
//! (a few hundred rows), and the time index is chosen when selectivity² > N / events.
//! With both an actor and a kind, the rarer one's list is read.

use rusqlite::{Connection, params};
use tfaudit_store::EventFilter;

use crate::postings::List;

const SAMPLE_HOURS: i64 = 48;

/// How a query reads `events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// As SQLite chooses: a filter on time (or text, organization) alone.
    Planner,
    /// The time index, from the newest event.
    TimeIndex,
    /// The events a posting list names.
    Postings(List),
}

/// How to find the matches of `filter`, whose range spans the hours `hours`; the newest
/// `limit` of them when there is a limit.
pub fn choose(
    conn: &Connection,
    filter: &EventFilter,
    limit: Option<u64>,
    hours: Option<(i64, i64)>,
) -> rusqlite::Result<Plan> {
    if filter.resource_id.is_some() {
        // A resource's events are few.
        return Ok(Plan::Postings(List::Resource));
    }
    let kind = filter.resource_type.is_some() || filter.action.is_some();
    if !kind && filter.actor.is_none() {
        return Ok(Plan::Planner);
    }
    // Without counts to compare: the actor's list when there is an actor.
    let unsampled = Plan::Postings(if filter.actor.is_some() { List::Actor } else { List::Kind });
    let Some((from, to)) = hours else { return Ok(unsampled) };
    let start = from.max(to - SAMPLE_HOURS + 1);
    let sampled: i64 = conn
        .prepare_cached("SELECT coalesce(sum(n), 0) FROM hourly_kinds WHERE hour BETWEEN ?1 AND ?2")?
        .query_row(params![start, to], |r| r.get(0))?;
    if sampled == 0 {
        return Ok(unsampled);
    }
    let mut kind_share = None;
    if kind {
        let mut sql = String::from("SELECT coalesce(sum(n), 0) FROM hourly_kinds WHERE hour BETWEEN ? AND ?");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(start), Box::new(to)];
        for (column, pattern) in [("resource_type", &filter.resource_type), ("resource_action", &filter.action)] {
            if let Some(p) = pattern {
                let (clause, values) = crate::glob::clause(column, p, false);
                sql.push_str(&format!(" AND {clause}"));
                args.extend(values);
            }
        }
        let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.as_ref() as &dyn rusqlite::ToSql).collect();
        let matching: i64 = conn.prepare_cached(&sql)?.query_row(&*refs, |r| r.get(0))?;
        kind_share = Some(matching as f64 / sampled as f64);
    }
    let mut actor_share = None;
    if let Some(actor) = &filter.actor {
        let matching: i64 = conn
            .prepare_cached(
                "SELECT coalesce(sum(n), 0) FROM hourly_actors WHERE hour BETWEEN ?1 AND ?2 AND accessor_id IN
                   (SELECT accessor_id FROM actors WHERE tfaudit_iglob(?3, accessor_id) OR tfaudit_iglob(?3, description))",
            )?
            .query_row(params![start, to, actor.as_str()], |r| r.get(0))?;
        actor_share = Some(matching as f64 / sampled as f64);
    }
    let selectivity = actor_share.unwrap_or(1.0) * kind_share.unwrap_or(1.0);
    // Events in the whole range, scaled from the sample.
    let events = sampled as f64 * ((to - from + 1) as f64 / (to - start + 1) as f64);
    if let Some(limit) = limit
        && selectivity * selectivity > limit as f64 / events
    {
        return Ok(Plan::TimeIndex);
    }
    Ok(Plan::Postings(match (actor_share, kind_share) {
        (Some(a), Some(k)) if k < a => List::Kind,
        (Some(_), _) => List::Actor,
        (None, _) => List::Kind,
    }))
}
