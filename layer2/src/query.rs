//! Filters to SQL. Each filter becomes one statement that an index can answer in
//! canonical order (created_at DESC, id ASC) and stop at its limit.

use eventstore::{Event, Filter, StoreError, Timestamp};
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::error::db;
use crate::keys::{ts, value_key};

/// `col = $v` for one value, `col = ANY($vs)` for several: with a single value the
/// planner can walk an index in order and stop at the limit, which it cannot with ANY.
fn push_in<T>(qb: &mut QueryBuilder<Postgres>, col: &str, mut values: Vec<T>)
where
    T: for<'q> sqlx::Encode<'q, Postgres>
        + sqlx::Type<Postgres>
        + sqlx::postgres::PgHasArrayType
        + Send
        + 'static,
{
    qb.push(col);
    if values.len() == 1 {
        qb.push(" = ");
        qb.push_bind(values.remove(0));
    } else {
        qb.push(" = ANY(");
        qb.push_bind(values);
        qb.push(")");
    }
}

/// Appends `WHERE ...` conditions of `f` on `events e` (and, when `tag_driven`, the
/// first tag condition is left to the caller's join on `tags t`).
fn push_conditions(qb: &mut QueryBuilder<Postgres>, f: &Filter, now: Timestamp, skip: Option<u8>) {
    qb.push(" WHERE (e.expiration IS NULL OR e.expiration > ");
    qb.push_bind(ts(now));
    qb.push(")");
    if let Some(ids) = &f.ids {
        push_in(qb, " AND e.id", ids.iter().map(|i| i.0.to_vec()).collect());
    }
    if let Some(a) = &f.authors {
        push_in(
            qb,
            " AND e.pubkey",
            a.iter().map(|p| p.0.to_vec()).collect(),
        );
    }
    if let Some(k) = &f.kinds {
        push_in(
            qb,
            " AND e.kind",
            k.iter().map(|k| i32::from(k.0)).collect(),
        );
    }
    if let Some(s) = f.since {
        qb.push(" AND e.created_at >= ");
        qb.push_bind(ts(s));
    }
    if let Some(u) = f.until {
        qb.push(" AND e.created_at <= ");
        qb.push_bind(ts(u));
    }
    for (letter, values) in &f.tags {
        if Some(*letter) == skip {
            continue;
        }
        qb.push(" AND e.id IN (SELECT x.event_id FROM tags x WHERE x.name = ");
        qb.push_bind((*letter as char).to_string());
        qb.push("::\"char\" AND x.value_key = ANY(");
        qb.push_bind(values.iter().map(|v| value_key(v)).collect::<Vec<_>>());
        qb.push("))");
    }
}

/// The tag letter to drive a query from: when no id or author narrows it, walking the
/// tag index newest first beats scanning events and probing tags.
fn driving_tag(f: &Filter) -> Option<u8> {
    if f.ids.is_some() || f.authors.is_some() {
        return None;
    }
    f.tags.iter().min_by_key(|(_, v)| v.len()).map(|(l, _)| *l)
}

/// `SELECT <what> FROM ...` for one filter, in canonical order (`created_at DESC, id
/// ASC`: the tag table repeats `created_at`, and `event_id` is the id), with its limit.
fn select(f: &Filter, now: Timestamp, what: &str) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("");
    push_select(&mut qb, f, now, what);
    qb
}

/// [`select`], appended to `qb` (a purge deletes what it selects).
pub(crate) fn push_select(qb: &mut QueryBuilder<Postgres>, f: &Filter, now: Timestamp, what: &str) {
    match driving_tag(f) {
        Some(letter) => {
            // With several values an event may match more than one: DISTINCT ON keeps
            // it once. With one value the tag index yields rows in canonical order.
            let several = f.tags.get(&letter).is_some_and(|v| v.len() > 1);
            qb.push(if several {
                "SELECT DISTINCT ON (t.created_at, t.event_id) "
            } else {
                "SELECT "
            });
            qb.push(what);
            qb.push(" FROM tags t JOIN events e ON e.id = t.event_id");
            push_conditions(qb, f, now, Some(letter));
            qb.push(" AND t.name = ");
            qb.push_bind((letter as char).to_string());
            qb.push("::\"char\"");
            let values = f
                .tags
                .get(&letter)
                .map(|v| v.iter().map(|v| value_key(v)).collect::<Vec<_>>());
            push_in(qb, " AND t.value_key", values.unwrap_or_default());
            if let Some(s) = f.since {
                qb.push(" AND t.created_at >= ");
                qb.push_bind(ts(s));
            }
            if let Some(u) = f.until {
                qb.push(" AND t.created_at <= ");
                qb.push_bind(ts(u));
            }
            qb.push(" ORDER BY t.created_at DESC, t.event_id ASC");
        }
        None => {
            qb.push("SELECT ");
            qb.push(what);
            qb.push(" FROM events e");
            push_conditions(qb, f, now, None);
            qb.push(" ORDER BY e.created_at DESC, e.id ASC");
        }
    }
    if let Some(limit) = f.limit {
        qb.push(" LIMIT ");
        qb.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    }
}

pub(crate) async fn query(pool: &PgPool, filters: &[Filter]) -> Result<Vec<Event>, StoreError> {
    let now = Timestamp::now();
    let mut out = Vec::new();
    for f in filters.iter().filter(|f| !f.is_empty_result()) {
        let mut qb = select(f, now, "e.json");
        let rows: Vec<String> = qb.build_query_scalar().fetch_all(pool).await.map_err(db)?;
        for json in rows {
            out.push(
                Event::from_stored_json(&json).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
    }
    eventstore::sort_canonical(&mut out);
    Ok(out)
}

pub(crate) async fn count(pool: &PgPool, filters: &[Filter]) -> Result<u64, StoreError> {
    let now = Timestamp::now();
    let parts: Vec<Filter> = filters
        .iter()
        .map(|f| Filter {
            limit: None,
            ..f.clone()
        })
        .filter(|f| !f.is_empty_result())
        .collect();
    if parts.is_empty() {
        return Ok(0);
    }
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT count(*) FROM (");
    for (i, f) in parts.iter().enumerate() {
        if i > 0 {
            qb.push(" UNION ");
        }
        // Each part is a self-contained select; re-emit it into this builder.
        push_select_into(&mut qb, f, now);
    }
    qb.push(") u");
    let n: i64 = qb.build_query_scalar().fetch_one(pool).await.map_err(db)?;
    Ok(n as u64)
}

/// `SELECT e.id FROM events e WHERE ...` (tags as semi-joins) into an existing builder.
fn push_select_into(qb: &mut QueryBuilder<Postgres>, f: &Filter, now: Timestamp) {
    qb.push("SELECT e.id FROM events e");
    push_conditions(qb, f, now, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_driven_only_without_ids_or_authors() {
        let f = Filter::new().tag('e', "x");
        assert_eq!(driving_tag(&f), Some(b'e'));
        let f = f.author(eventstore::PublicKey([1; 32]));
        assert_eq!(driving_tag(&f), None);
        let sql = select(
            &Filter::new().tag('p', "a").tag('e', "b").limit(3),
            Timestamp(1),
            "e.json",
        )
        .sql()
        .as_str()
        .to_owned();
        assert!(sql.contains("FROM tags t JOIN events e"), "{sql}");
        assert!(sql.contains("LIMIT"), "{sql}");
    }
}
