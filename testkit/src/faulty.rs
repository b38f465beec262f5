//! A TCP proxy in front of a MySQL or MariaDB server that makes one chosen SQL statement fail: it counts the
//! `COM_QUERY` commands of every connection through it (shared between proxies that share a [`FaultPlan`]) and,
//! at the chosen one, answers with an error packet instead of forwarding the statement. The connection stays
//! usable, as after a real server error.
//!
//! Commands are the client's packets with sequence id 0 after the handshake (handshake and authentication packets
//! carry higher ids); plain TCP only (no TLS), which is how the engine talks to the servers in the tests.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Mutex,
};

const COM_QUERY: u8 = 0x03;

/// Which statement fails, counted from 1 across every proxy sharing the plan; 0 fails none (a counting run).
#[derive(Clone, Default)]
pub struct FaultPlan {
    fail_at: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
}

impl FaultPlan {
    pub fn failing(statement: u64) -> FaultPlan {
        let plan = FaultPlan::default();
        plan.fail_at.store(statement, Ordering::SeqCst);
        plan
    }

    /// How many statements went through so far.
    pub fn statements(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// The statement that was made to fail, if it came.
    pub async fn failed(&self) -> Option<String> {
        self.failed.lock().await.clone()
    }
}

pub struct FaultyProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultyProxy {
    pub async fn start(backend_port: u16, plan: FaultPlan) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let plan = plan.clone();
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", backend_port)).await {
                        relay(client, server, plan).await;
                    }
                });
            }
        });
        FaultyProxy { port, task }
    }
}

async fn relay(client: TcpStream, server: TcpStream, plan: FaultPlan) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let client_write = Arc::new(Mutex::new(client_write));
    let to_client = client_write.clone();
    let downstream = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.lock().await.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_client.lock().await.shutdown().await;
    });
    loop {
        let mut header = [0u8; 4];
        if client_read.read_exact(&mut header).await.is_err() {
            break;
        }
        let length = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let sequence = header[3];
        let mut payload = vec![0u8; length];
        if client_read.read_exact(&mut payload).await.is_err() {
            break;
        }
        if sequence == 0 && payload.first() == Some(&COM_QUERY) {
            let n = plan.seen.fetch_add(1, Ordering::SeqCst) + 1;
            if n == plan.fail_at.load(Ordering::SeqCst) {
                let statement = String::from_utf8_lossy(&payload[1..payload.len().min(200)]).into_owned();
                *plan.failed.lock().await = Some(statement);
                let packet = error_packet(1105, "HY000", "injected fault: this statement fails once");
                if client_write.lock().await.write_all(&packet).await.is_err() {
                    break;
                }
                continue;
            }
        }
        if server_write.write_all(&header).await.is_err() || server_write.write_all(&payload).await.is_err() {
            break;
        }
    }
    let _ = server_write.shutdown().await;
    downstream.abort();
}

/// An ERR packet (sequence id 1, the answer to a command).
fn error_packet(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut payload = vec![0xFF];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.push(b'#');
    payload.extend_from_slice(state.as_bytes());
    payload.extend_from_slice(message.as_bytes());
    let length = payload.len() as u32;
    let mut packet = length.to_le_bytes()[..3].to_vec();
    packet.push(1);
    packet.extend(payload);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_packets_follow_the_protocol() {
        let p = error_packet(1105, "HY000", "x");
        assert_eq!(&p[..4], &[10, 0, 0, 1]);
        assert_eq!(p[4], 0xFF);
        assert_eq!(u16::from_le_bytes([p[5], p[6]]), 1105);
        assert_eq!(&p[7..13], b"#HY000");
        assert_eq!(&p[13..], b"x");
    }
}
