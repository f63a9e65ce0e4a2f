//! Every SQL batch the operator can send parses with sqlparser's MsSqlDialect (DESIGN.md
//! "Testing against real things": T-SQL).

use sqlparser::dialect::MsSqlDialect;
use sqlparser::parser::Parser;
use ssis_operator::catalog::batches::ALL_BATCHES;

#[test]
fn every_batch_parses_with_mssql_dialect() {
    let mut failures = Vec::new();
    for (name, sql) in ALL_BATCHES {
        match Parser::parse_sql(&MsSqlDialect {}, sql) {
            Ok(statements) => assert!(!statements.is_empty(), "{name} parsed to nothing"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "batches that do not parse:\n{}", failures.join("\n"));
    assert!(ALL_BATCHES.len() >= 28, "the registry lost batches: {}", ALL_BATCHES.len());
}

#[test]
fn raw_ddl_that_the_batches_compose_server_side_is_not_sent_as_such() {
    // The composed DDL appears only inside string literals: no batch starts a raw
    // CREATE LOGIN / ALTER MASTER KEY / ALTER AVAILABILITY GROUP statement.
    for (name, sql) in ALL_BATCHES {
        for line in sql.lines() {
            let t = line.trim_start().to_ascii_uppercase();
            for raw in [
                "CREATE LOGIN",
                "ALTER LOGIN",
                "ALTER MASTER KEY",
                "OPEN MASTER KEY",
                "ALTER AVAILABILITY GROUP",
                "CREATE USER",
                "ALTER ROLE",
                "DROP LOGIN",
            ] {
                assert!(!t.starts_with(raw), "{name} sends raw `{raw}`");
            }
        }
    }
}

#[test]
fn docs_sql_md_describes_every_batch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sql.md");
    let docs = std::fs::read_to_string(&path).expect("docs/sql.md");
    let missing: Vec<&str> =
        ALL_BATCHES.iter().map(|(name, _)| *name).filter(|name| !docs.contains(&format!("`{name}`"))).collect();
    assert!(missing.is_empty(), "docs/sql.md does not describe: {missing:?}");
}
