//! Delay between replicas, in user space: this kernel has no `sch_netem` (tc answers
//! "Specified qdisc kind is unknown"), so every replica-to-replica connection passes a relay on
//! the host (see [`crate::net`]), which holds each chunk of bytes for the link's delay plus a
//! random jitter before passing it on. Bytes of one connection keep their order (TCP's own);
//! a replica's several connections to a peer, and its peers' messages, arrive reordered with
//! respect to each other. Packet loss and partitions are the kernel's (iptables), below TCP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::net::{P2P_PORT, host, relay_port, relay_source, replica_ip};

/// Delay and jitter of one direction of one link, in milliseconds.
#[derive(Default)]
struct LinkDelay {
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

/// The relays of every link; stopped when dropped.
pub struct Relay {
    n: usize,
    /// By (sender, receiver): the delay of bytes `sender` sends to `receiver`.
    delays: Arc<Vec<LinkDelay>>,
    tasks: JoinSet<()>,
}

impl Relay {
    pub async fn start(n: usize) -> anyhow::Result<Relay> {
        let delays: Arc<Vec<LinkDelay>> =
            Arc::new((0..n * n).map(|_| LinkDelay::default()).collect());
        let mut tasks = JoinSet::new();
        for from in 0..n {
            for to in (0..n).filter(|t| *t != from) {
                let listener = TcpListener::bind((host(), relay_port(from, to))).await?;
                let delays = delays.clone();
                tasks.spawn(async move {
                    let mut conns = JoinSet::new();
                    while let Ok((inbound, _)) = listener.accept().await {
                        conns.spawn(link(inbound, from, to, n, delays.clone()));
                        while conns.try_join_next().is_some() {}
                    }
                });
            }
        }
        Ok(Relay { n, delays, tasks })
    }

    /// Sets the delay of what `from` sends to `to`.
    pub fn set(&self, from: usize, to: usize, delay_ms: u64, jitter_ms: u64) {
        let d = &self.delays[from * self.n + to];
        d.delay_ms.store(delay_ms, Ordering::Relaxed);
        d.jitter_ms.store(jitter_ms, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        for d in self.delays.iter() {
            d.delay_ms.store(0, Ordering::Relaxed);
            d.jitter_ms.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// One connection from `from` to `to`'s transport, relayed both ways.
async fn link(inbound: TcpStream, from: usize, to: usize, n: usize, delays: Arc<Vec<LinkDelay>>) {
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind((relay_source(from), 0).into())?;
        socket.connect((replica_ip(to), P2P_PORT).into()).await
    };
    let Ok(Ok(outbound)) = tokio::time::timeout(Duration::from_secs(10), connect).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let forward = pump(in_read, out_write, delays.clone(), from * n + to);
    let backward = pump(out_read, in_write, delays, to * n + from);
    // When either direction ends, the connection is over (the other side is told by the drop).
    tokio::select! {
        _ = forward => {}
        _ = backward => {}
    }
}

/// Copies `read` to `write`, each chunk held for the link's delay (and jitter) from the moment
/// it arrived, in order.
async fn pump(
    mut read: tokio::net::tcp::OwnedReadHalf,
    mut write: tokio::net::tcp::OwnedWriteHalf,
    delays: Arc<Vec<LinkDelay>>,
    link: usize,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        while let Ok(got) = read.read(&mut buf).await {
            if got == 0 {
                break;
            }
            let d = &delays[link];
            let (delay, jitter) = (
                d.delay_ms.load(Ordering::Relaxed),
                d.jitter_ms.load(Ordering::Relaxed),
            );
            let extra = if jitter > 0 {
                rand::thread_rng().gen_range(0..=jitter)
            } else {
                0
            };
            // Never before the chunk ahead of it: the stream keeps its order.
            let due = (Instant::now() + Duration::from_millis(delay + extra)).max(last);
            last = due;
            if tx.send((due, buf[..got].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    tokio::join!(reader, writer);
}
