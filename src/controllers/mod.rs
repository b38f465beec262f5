//! The controllers, one folder per kind: dereference → validate → build → apply → status.

pub mod apply;
pub mod private_network;

use std::sync::Arc;

use crate::{config::OperatorConfig, manager::Controller, metrics::Metrics};

/// Every controller `appdb-operator run` starts while it leads.
pub fn all(
    config: Arc<OperatorConfig>,
    metrics: &mut Metrics,
) -> Result<Vec<Box<dyn Controller>>, crate::ipam::PlanError> {
    Ok(vec![Box::new(private_network::PrivateNetworkController::new(
        config, metrics,
    )?)])
}
