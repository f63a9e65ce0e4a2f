//! The simulated host: a directory-rooted model of one Windows node.

pub mod traffic;
