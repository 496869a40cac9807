//! Filter patterns and free text in SQL, matched in Rust in time linear in the text.
//!
//! SQLite's own GLOB and LIKE backtrack: `*` + 2,000 × `A` + `B` against a field of
//! megabytes of `A`s costs the product of the two lengths per row, and event fields are
//! untrusted. So every filter pattern is tested by `tfaudit_glob` (or `tfaudit_iglob`,
//! case-insensitive) — [`Pattern`]'s automaton — and free text by `tfaudit_contains`.
//! GLOB stays only as `column GLOB 'literal prefix*'`, which is linear and lets SQLite
//! narrow the rows with an index on the column.

use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ToSql};
use tfaudit_store::Pattern;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Adds the matching functions to a connection.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS;
    for (name, case_insensitive) in [("tfaudit_glob", false), ("tfaudit_iglob", true)] {
        conn.create_scalar_function(name, 2, flags, move |ctx| {
            // Compiled once per statement, not once per row.
            let pattern = ctx.get_or_create_aux(0, |v| -> Result<Pattern, BoxError> {
                let p = Pattern::new(v.as_str()?);
                p.check()?;
                Ok(p)
            })?;
            Ok(text(ctx.get_raw(1)).is_some_and(|t| pattern.matches(t, case_insensitive)))
        })?;
    }
    conn.create_scalar_function("tfaudit_contains", 2, flags, |ctx| {
        let needle = ctx.get_or_create_aux(0, |v| -> Result<regex::Regex, BoxError> {
            Ok(regex::RegexBuilder::new(&regex::escape(v.as_str()?)).case_insensitive(true).build()?)
        })?;
        Ok(text(ctx.get_raw(1)).is_some_and(|t| needle.is_match(t)))
    })
}

fn text(v: ValueRef<'_>) -> Option<&str> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

/// `column` matches `p`: `=` for a pattern without wildcards (and case), else the
/// glob function, preceded by a GLOB on the pattern's literal prefix for the index.
pub fn clause(column: &str, p: &Pattern, case_insensitive: bool) -> (String, Vec<Box<dyn ToSql>>) {
    if case_insensitive {
        return (format!("tfaudit_iglob(?, {column})"), vec![Box::new(p.as_str().to_owned())]);
    }
    if !p.is_glob() {
        return (format!("{column} = ?"), vec![Box::new(p.as_str().to_owned())]);
    }
    let literal = &p.as_str()[..p.as_str().find(['*', '?']).unwrap_or(p.as_str().len())];
    let glob = (format!("tfaudit_glob(?, {column})"), Box::new(p.as_str().to_owned()) as Box<dyn ToSql>);
    if literal.is_empty() {
        return (glob.0, vec![glob.1]);
    }
    let mut prefix = String::with_capacity(literal.len() + 4);
    for c in literal.chars() {
        match c {
            '[' => prefix.push_str("[[]"),
            c => prefix.push(c),
        }
    }
    prefix.push('*');
    (format!("{column} GLOB ? AND {}", glob.0), vec![Box::new(prefix), glob.1])
}
