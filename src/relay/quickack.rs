//! Prompt acknowledgements: client writes are never held back by this node's delayed ACK.
//!
//! A client that sends `CLOSE` and then the next `REQ` as two small writes, without
//! `TCP_NODELAY` (most WebSocket libraries' default), is caught between two timers:
//! `CLOSE` has no answer, so the kernel here delays its ACK (40 ms on Linux) hoping to
//! piggyback it on a reply, and the client's Nagle algorithm holds the `REQ` until
//! that ACK arrives. Every such REQ then costs 40 ms of nothing.
//!
//! Linux's `TCP_QUICKACK` is not sticky: the kernel drops back to delayed ACKs as soon
//! as the connection looks interactive. So it is re-armed after every read that
//! returned data; setting it also sends any ACK that is pending at that moment. One
//! `setsockopt` per read, a microsecond, against 40 ms per held write.

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
        (PromptStream { tcp, rearm: true }, addr)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection that re-arms `TCP_QUICKACK` after each read that returned data.
#[derive(Debug)]
pub struct PromptStream {
    tcp: TcpStream,
    /// False once the option was refused (not Linux, or not TCP): not tried again.
    rearm: bool,
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
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
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
