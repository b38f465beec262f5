//! The controllers, one folder per kind: dereference → validate → build → apply → status.

use crate::manager::Controller;

/// Every controller `appdb-operator run` starts while it leads.
pub fn all() -> Vec<Box<dyn Controller>> {
    Vec::new()
}
