//! Sockets inside a network namespace, from this process: a socket belongs to the namespace its creating thread
//! was in, so a short-lived thread enters the namespace (`setns`), creates the socket and hands it back. The
//! rest of the process stays where it was. Used for the API server's address as pods see it, port-forwards into
//! pods and the node's services, without a helper process per socket.

use std::{net::SocketAddr, time::Duration};

use nix::sched::{CloneFlags, setns};

/// Runs `make` on a new thread inside `/run/netns/<netns>`.
fn inside<T: Send + 'static>(
    netns: &str,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        make()
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// A TCP listener on `addr` inside `netns`.
pub async fn listen_tcp(netns: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let netns = netns.to_owned();
    let listener = tokio::task::spawn_blocking(move || {
        inside(&netns, move || {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
    })
    .await
    .map_err(std::io::Error::other)??;
    tokio::net::TcpListener::from_std(listener)
}

/// A TCP connection to `addr`, made from inside `netns`.
pub async fn connect_tcp(netns: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let netns = netns.to_owned();
    let stream = tokio::task::spawn_blocking(move || {
        inside(&netns, move || {
            let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })
    })
    .await
    .map_err(std::io::Error::other)??;
    tokio::net::TcpStream::from_std(stream)
}
