//! `appdb-operator ipam`: usage of the address pool per range, and the range automatic assignment would pick next,
//! from the cluster's NetworkAllocations (read-only).

use std::process::ExitCode;

use kube::{Api, Client, api::ListParams};

use crate::{
    api::NetworkAllocation,
    cli::PoolArgs,
    ipam::{AddressPlan, PoolConfig, parse_block},
};

pub async fn run(args: PoolArgs) -> ExitCode {
    let client = match crate::client::infer("ipam").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot build a Kubernetes client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match preview(&client, &args.pool_config()).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn preview(client: &Client, pool: &PoolConfig) -> Result<String, Box<dyn std::error::Error>> {
    let mut plan = AddressPlan::new(pool)?;
    let allocations = Api::<NetworkAllocation>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for a in &allocations {
        if let Ok(block) = parse_block(&a.spec.cidr) {
            plan.mark_taken(block);
        }
    }
    Ok(render(&plan))
}

/// The table the command prints.
fn render(plan: &AddressPlan) -> String {
    let mut out = String::from("RANGE              TOTAL   RESERVED   USED   FREE\n");
    for u in plan.usage() {
        out.push_str(&format!(
            "{:<18} {:>6} {:>10} {:>6} {:>6}\n",
            u.range.to_string(),
            u.total,
            u.reserved,
            u.used,
            u.free
        ));
    }
    match plan.next_free() {
        Some(next) => out.push_str(&format!("next automatic assignment: {next}\n")),
        None => out.push_str("next automatic assignment: none (pool exhausted)\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_one_docs_networking_shows() {
        let pool = PoolConfig {
            ranges: vec!["10.0.0.0/8".parse().unwrap()],
            reserved: vec!["10.244.0.0/16".parse().unwrap(), "10.96.0.0/12".parse().unwrap()],
        };
        let mut plan = AddressPlan::new(&pool).unwrap();
        for taken in ["10.0.0.0/26", "10.0.0.128/26"] {
            assert!(plan.mark_taken(taken.parse().unwrap()));
        }
        let shown = render(&plan);
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/networking.md")).unwrap();
        assert!(docs.contains(&shown), "docs/networking.md does not show:\n{shown}");
        assert!(shown.ends_with("next automatic assignment: 10.0.0.64/26\n"), "{shown}");
    }
}
