//! Prompt acknowledgements: a client's writes are not held back by this node's delayed
//! ACK of a message that gets no answer.
//!
//! A client that sends `CLOSE` and then the next `REQ` as two small writes, without
//! `TCP_NODELAY` (most WebSocket libraries' default), is caught between two timers:
//! `CLOSE` has no answer, so the kernel here delays its ACK (40 ms on Linux) hoping to
//! piggyback it on a reply, and the client's Nagle algorithm holds the `REQ` until
//! that ACK arrives. Every such REQ then costs 40 ms of nothing.
//!
//! So a message that gets no answer (`CLOSE`, a WebSocket pong) asks for its ACK at
//! once ([`AckNow`]): the connection's next read sets `TCP_QUICKACK`, which sends the
//! pending ACK. Messages that are answered (`REQ`, `EVENT`, `COUNT`, `AUTH`) carry
//! their ACK on the answer, as TCP intends. Setting the option after every read, as
//! this did first, sent an ACK segment of its own for each of them instead: 6% of a
//! node serving closed-loop REQs, and as many extra packets for the client. An answer
//! that takes long (an EVENT waiting on a slow PostgreSQL commit) can leave a
//! pipelining client without `TCP_NODELAY` waiting up to the delayed ACK for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A [`TcpListener`] whose connections acknowledge promptly (and send without Nagle's
/// delay: replies are small and latency matters).
#[derive(Debug)]
pub struct Prompt(pub TcpListener);

impl axum::serve::Listener for Prompt {
    type Io = PromptStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (PromptStream, std::net::SocketAddr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let stream = PromptStream {
            tcp,
            rearm: true,
            ack_now: Arc::default(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection that sets `TCP_QUICKACK` when its handler asks ([`AckNow`]).
#[derive(Debug)]
pub struct PromptStream {
    tcp: TcpStream,
    /// False once the option was refused (not Linux, or not TCP): not tried again.
    rearm: bool,
    /// Set by the connection's handler; taken by the next read.
    ack_now: Arc<AtomicBool>,
}

/// A connection handler's way to have what it read acknowledged at once: for a message
/// it will not answer. Reaches the handler as axum's connect info.
#[derive(Debug, Clone, Default)]
pub struct AckNow(Arc<AtomicBool>);

impl AckNow {
    /// Asks for an immediate ACK of what the connection has read; sent at its next
    /// read (which the handler starts as soon as it is done with this message).
    pub fn ask(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Prompt>> for AckNow {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Prompt>) -> AckNow {
        AckNow(stream.io().ack_now.clone())
    }
}

impl PromptStream {
    fn quickack(&mut self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.rearm {
            if let Err(e) = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true) {
                tracing::debug!(error = %e, "cannot set TCP_QUICKACK");
                self.rearm = false;
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            self.rearm = false;
        }
    }
}

impl AsyncRead for PromptStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if self.ack_now.load(Ordering::Relaxed) && self.ack_now.swap(false, Ordering::Relaxed) {
            self.quickack();
        }
        r
    }
}

impl AsyncWrite for PromptStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
