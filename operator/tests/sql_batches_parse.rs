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
}

/// String constants of catalog/batches.rs that are not batches.
const NOT_BATCHES: [&str; 1] = ["LOGGING_LOGIN_NAME"];

/// Every SQL text constant declared in catalog/batches.rs is in `ALL_BATCHES` under its own name, so
/// the parse test above and docs/sql.md cover every batch the operator can send: a batch added
/// without registering it fails here, whatever the number of batches.
#[test]
fn the_registry_holds_every_batch_declared_under_its_own_name() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/catalog/batches.rs");
    let source = std::fs::read_to_string(&path).expect("catalog/batches.rs");
    let declared: std::collections::BTreeSet<&str> = source
        .lines()
        .filter_map(|line| line.strip_prefix("pub const ")?.split_once(": &str =").map(|(name, _)| name))
        .filter(|name| !NOT_BATCHES.contains(name))
        .collect();
    let registered: std::collections::BTreeSet<&str> = ALL_BATCHES.iter().map(|(name, _)| *name).collect();
    assert!(declared.contains("SCALEOUT_ENABLE"), "the declaration scan finds the batches: {declared:?}");
    assert_eq!(declared, registered, "declared batches (left) and ALL_BATCHES (right) differ");
    for name in NOT_BATCHES {
        assert!(source.contains(&format!("pub const {name}: &str")), "{name} is no longer declared; drop it here");
    }
    // Each entry pairs a name with the constant of that name (the text of every entry is distinct,
    // which catalog::batches' own tests check).
    for (name, _) in ALL_BATCHES {
        assert!(source.contains(&format!("(\"{name}\", {name}),")), "ALL_BATCHES pairs {name} with another constant");
    }
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
