//! Starts the project's in-memory test API server on loopback and writes a kubeconfig for it.
//!
//! `cargo run --example test-apiserver -- --addr 127.0.0.1:0 --kubeconfig /tmp/kubeconfig`
//! then `KUBECONFIG=/tmp/kubeconfig kubectl apply --server-side -f crds/`. Serves until killed.
//! It runs no controllers, kubelet or scheduler: see testkit/README.md.

use std::{net::SocketAddr, path::PathBuf};

use appdb_testkit::apiserver::TestApiServer;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Loopback address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Where to write the kubeconfig once the server accepts connections.
    #[arg(long)]
    kubeconfig: PathBuf,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!(
            "refusing to listen on {}: the test API server authenticates nobody, so it serves loopback only",
            args.addr
        );
        std::process::exit(2);
    }
    let server = TestApiServer::start(args.addr).await?;
    // Written atomically so that a waiting test never reads half a file.
    let tmp = args.kubeconfig.with_extension("tmp");
    server.write_kubeconfig(&tmp)?;
    std::fs::rename(&tmp, &args.kubeconfig)?;
    eprintln!(
        "test API server listening on {}; kubeconfig written to {}",
        server.url(),
        args.kubeconfig.display()
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
