//! The database side of backups, per dialect: a consistent online snapshot, and a restore that
//! replaces the tables' contents in one transaction (nothing changes unless all of it does).
//!
//! SQLite: `VACUUM INTO` a file (a read transaction: writers go on in WAL mode); restored by
//! attaching that file and copying every table. PostgreSQL: every table's rows as JSON lines,
//! read in one `REPEATABLE READ` transaction; restored with `TRUNCATE` and
//! `json_populate_recordset`, parents before children.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::Path;

use futures::TryStreamExt as _;
use nexus_kernel::db::{Db, StorageError};
use serde_json::Value;

/// Tables a restore leaves alone: the migration ledger, the tasks (the restore is one), the
/// audit trail (append-only: a restore must not erase it) and the event outbox (restored rows
/// are not new changes to announce).
pub const KEPT: &[&str] =
    &["_sqlx_migrations", "nexus_tasks", "audit_log", "nexus_outbox", "nexus_outbox_pending", "nexus_outbox_consumers"];

/// `"name"`, for a table name read from the catalogue.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The newest migration applied (the schema a backup was taken with).
pub async fn schema_version(db: &Db) -> Result<i64, StorageError> {
    const SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations";
    Ok(match db {
        Db::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await?,
        Db::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await?,
    })
}

/// Writes the snapshot into `dir` (`nexus.db` or `tables.jsonl`); returns the file's name.
pub async fn snapshot(db: &Db, dir: &Path) -> Result<&'static str, StorageError> {
    match db {
        Db::Sqlite(pool) => {
            let path = dir.join("nexus.db");
            let literal = path.to_string_lossy().replace('\'', "''");
            // The path is ours (the data directory), quoted as an SQL literal.
            sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM INTO '{literal}'"))).execute(pool).await?;
            Ok("nexus.db")
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
            )
            .fetch_all(&mut *tx)
            .await?;
            let file = std::fs::File::create(dir.join("tables.jsonl"))
                .map_err(|e| StorageError::Unavailable(format!("cannot write the snapshot: {e}")))?;
            let mut out = std::io::BufWriter::new(file);
            let io = |e: std::io::Error| StorageError::Unavailable(format!("cannot write the snapshot: {e}"));
            for table in tables {
                let sql = format!("SELECT row_to_json(t)::text FROM {} t", quote(&table));
                let mut rows = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch(&mut *tx);
                let name = serde_json::to_string(&table).unwrap_or_default();
                while let Some(row) = rows.try_next().await? {
                    writeln!(out, "{{\"table\":{name},\"row\":{row}}}").map_err(io)?;
                }
            }
            out.flush().map_err(io)?;
            tx.commit().await?;
            Ok("tables.jsonl")
        }
    }
}

/// Replaces the contents of every table of the snapshot in `dir` (all of them, or only those
/// in `only`), minus [`KEPT`], in one transaction.
pub async fn restore(db: &Db, dir: &Path, only: Option<&[&str]>) -> Result<u64, StorageError> {
    let wanted = |t: &str| !KEPT.contains(&t) && only.is_none_or(|o| o.contains(&t));
    match db {
        Db::Sqlite(pool) => {
            let path = dir.join("nexus.db");
            let literal = path.to_string_lossy().replace('\'', "''");
            let mut conn = pool.acquire().await?;
            // ATTACH cannot run inside a transaction; it stays on this one connection.
            sqlx::query(sqlx::AssertSqlSafe(format!("ATTACH DATABASE '{literal}' AS bak"))).execute(&mut *conn).await?;
            let result = async {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM bak.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                )
                .fetch_all(&mut *conn)
                .await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                sqlx::query("PRAGMA defer_foreign_keys = ON").execute(&mut *tx).await?;
                let mut rows = 0;
                for t in tables.iter().filter(|t| wanted(t)) {
                    let q = quote(t);
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM main.{q}"))).execute(&mut *tx).await?;
                    let done = sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO main.{q} SELECT * FROM bak.{q}")))
                        .execute(&mut *tx)
                        .await?;
                    rows += done.rows_affected();
                }
                tx.commit().await?;
                Ok::<u64, StorageError>(rows)
            }
            .await;
            let detached = sqlx::query("DETACH DATABASE bak").execute(&mut *conn).await;
            let rows = result?;
            detached?;
            Ok(rows)
        }
        Db::Postgres(pool) => {
            // Rows grouped by table, read before anything changes.
            let file = std::fs::File::open(dir.join("tables.jsonl"))
                .map_err(|e| StorageError::Unavailable(format!("cannot read the snapshot: {e}")))?;
            let mut by_table: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for line in std::io::BufReader::new(file).lines() {
                let line = line.map_err(|e| StorageError::Unavailable(format!("cannot read the snapshot: {e}")))?;
                let mut v: Value = serde_json::from_str(&line)
                    .map_err(|e| StorageError::Unavailable(format!("the snapshot is not valid JSON: {e}")))?;
                let table = v.get("table").and_then(Value::as_str).unwrap_or_default().to_string();
                let row = v.get_mut("row").map(Value::take).unwrap_or(Value::Null);
                by_table.entry(table).or_default().push(row);
            }
            let mut tx = pool.begin().await?;
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
            )
            .fetch_all(&mut *tx)
            .await?;
            let tables: Vec<String> = tables.into_iter().filter(|t| wanted(t)).collect();
            let edges: Vec<(String, String)> = sqlx::query_as(
                "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c \
                 JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = current_schema()",
            )
            .fetch_all(&mut *tx)
            .await?;
            let order = parents_first(&tables, &edges);
            if !order.is_empty() {
                let list: Vec<String> = order.iter().map(|t| quote(t)).collect();
                sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {}", list.join(", ")))).execute(&mut *tx).await?;
            }
            let mut rows = 0;
            for t in &order {
                let Some(all) = by_table.get(t) else { continue };
                for chunk in all.chunks(500) {
                    let q = quote(t);
                    let sql = format!("INSERT INTO {q} SELECT * FROM json_populate_recordset(NULL::{q}, $1::json)");
                    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(Value::Array(chunk.to_vec()).to_string())
                        .execute(&mut *tx)
                        .await?;
                    rows += done.rows_affected();
                }
            }
            tx.commit().await?;
            Ok(rows)
        }
    }
}

/// `tables` ordered so that each comes after the tables its foreign keys point at.
fn parents_first(tables: &[String], edges: &[(String, String)]) -> Vec<String> {
    let clean = |s: &str| s.trim_matches('"').to_string();
    let set: BTreeSet<&String> = tables.iter().collect();
    let mut out: Vec<String> = Vec::new();
    let mut left: Vec<String> = tables.to_vec();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|t| {
            let ready = edges.iter().filter(|(child, _)| clean(child) == *t).all(|(_, parent)| {
                let p = clean(parent);
                p == *t || out.contains(&p) || !set.contains(&p)
            });
            if ready {
                out.push(t.clone());
            }
            !ready
        });
        if left.len() == before {
            // A cycle: the rest in name order (the insert then fails and nothing changes).
            out.append(&mut left);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn parents_come_first() {
        let tables = vec!["api_keys".to_string(), "user_roles".to_string(), "users".to_string()];
        let edges = vec![("api_keys".into(), "users".into()), ("user_roles".into(), "users".into())];
        let order = super::parents_first(&tables, &edges);
        assert_eq!(order.first().map(String::as_str), Some("users"));
        assert_eq!(order.len(), 3);
    }
}
