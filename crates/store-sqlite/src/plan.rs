//! Choosing how to find "the newest N events matching a filter".
//!
//! Two plans: walk the time index from the newest event and keep the matches until N
//! are found — cheap when matches are common (it reads about N / selectivity rows) —
//! or find every match through a filter's own index and sort them — cheap when
//! matches are rare (it reads selectivity × events rows). SQLite prefers an equality
//! index whatever the selectivity, which for a common type (`var` is a fifth of all
//! events) means sorting hundreds of thousands of rows to return twenty. So the
//! selectivity is estimated from the hourly counts of the last 48 hours of the range
//! (a few hundred rows), and the time index is chosen when selectivity² > N / events.

use rusqlite::{Connection, params};
use tfaudit_store::EventFilter;

const SAMPLE_HOURS: i64 = 48;

/// Whether walking the time index is the cheaper way to the newest `limit` matches of
/// `filter`, whose range spans the hours `hours`.
pub fn prefer_time_index(
    conn: &Connection,
    filter: &EventFilter,
    limit: Option<u64>,
    hours: Option<(i64, i64)>,
) -> rusqlite::Result<bool> {
    let (Some(limit), Some((from, to))) = (limit, hours) else { return Ok(false) };
    if filter.resource_type.is_none() && filter.action.is_none() && filter.actor.is_none() {
        // Only time (and text or organization): the time index is the planner's choice
        // already.
        return Ok(false);
    }
    if filter.resource_id.is_some() {
        // Probed hour by hour on its own index, and matches are few.
        return Ok(false);
    }
    let start = from.max(to - SAMPLE_HOURS + 1);
    let sampled: i64 = conn
        .prepare_cached("SELECT coalesce(sum(n), 0) FROM hourly_kinds WHERE hour BETWEEN ?1 AND ?2")?
        .query_row(params![start, to], |r| r.get(0))?;
    if sampled == 0 {
        return Ok(false);
    }
    let mut selectivity = 1.0;
    if filter.resource_type.is_some() || filter.action.is_some() {
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
        selectivity *= matching as f64 / sampled as f64;
    }
    if let Some(actor) = &filter.actor {
        let matching: i64 = conn
            .prepare_cached(
                "SELECT coalesce(sum(n), 0) FROM hourly_actors WHERE hour BETWEEN ?1 AND ?2 AND accessor_id IN
                   (SELECT accessor_id FROM actors WHERE tfaudit_iglob(?3, accessor_id) OR tfaudit_iglob(?3, description))",
            )?
            .query_row(params![start, to, actor.as_str()], |r| r.get(0))?;
        selectivity *= matching as f64 / sampled as f64;
    }
    // Events in the whole range, scaled from the sample.
    let events = sampled as f64 * ((to - from + 1) as f64 / (to - start + 1) as f64);
    Ok(selectivity * selectivity > limit as f64 / events)
}
