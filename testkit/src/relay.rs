//! A TCP relay standing in for a Kubernetes Service: new connections go to the current backend, established ones
//! stay where they are (as with kube-proxy), and the test switches the backend.

use std::sync::{
    Arc,
    atomic::{AtomicU16, Ordering},
};

pub struct Relay {
    pub port: u16,
    backend: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(backend_port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let backend = Arc::new(AtomicU16::new(backend_port));
        let current = backend.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = current.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay { port, backend, task }
    }

    pub fn switch_to(&self, backend_port: u16) {
        self.backend.store(backend_port, Ordering::SeqCst);
    }

    pub fn backend(&self) -> u16 {
        self.backend.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
