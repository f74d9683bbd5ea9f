//! A small real HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length
//! bodies) used by the tests as webhook, FCM-shaped and SMS endpoint, and
//! by the benchmark as the local sink. Not used by the courier itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request received by the sink.
#[derive(Debug, Clone)]
pub struct SinkRequest {
    pub method: String,
    pub path: String,
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// Status the sink answered with.
    pub status: u16,
}

impl SinkRequest {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Shared state of a running sink.
#[derive(Default)]
pub struct SinkState {
    /// Requests answered (any status).
    pub count: AtomicU64,
    /// Answer this many of the next requests with `fail_status`.
    pub fail_next: AtomicU64,
    pub fail_status: AtomicU64,
    /// Hold this many of the next requests for `hang_ms` before answering.
    pub hang_next: AtomicU64,
    pub hang_ms: AtomicU64,
    /// Keep every request (tests) or only count (benchmark).
    pub record: bool,
    pub requests: Mutex<Vec<SinkRequest>>,
}

/// A running sink.
#[derive(Clone)]
pub struct HttpSink {
    pub addr: SocketAddr,
    pub state: Arc<SinkState>,
}

impl HttpSink {
    /// Starts a sink on 127.0.0.1 on a free port.
    pub async fn start(record: bool) -> std::io::Result<HttpSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SinkState {
            record,
            fail_status: AtomicU64::new(503),
            ..Default::default()
        });
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(sock, st).await;
                });
            }
        });
        Ok(HttpSink { addr, state })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Makes the next `n` requests wait `ms` before their answer.
    pub fn hang_next(&self, n: u64, ms: u64) {
        self.state.hang_ms.store(ms, Ordering::SeqCst);
        self.state.hang_next.store(n, Ordering::SeqCst);
    }

    /// Makes the next `n` requests fail with `status`.
    pub fn fail_next(&self, n: u64, status: u16) {
        self.state
            .fail_status
            .store(status as u64, Ordering::SeqCst);
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<SinkRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Requests answered with 200.
    pub fn accepted(&self) -> Vec<SinkRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

async fn serve_conn(mut sock: TcpStream, st: Arc<SinkState>) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut tmp = vec![0u8; 16384];
    loop {
        // Read the head.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = tokio::time::timeout(Duration::from_secs(60), sock.read(&mut tmp))
                .await
                .map_err(|_| std::io::Error::other("idle"))??;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
            if buf.len() > 1 << 20 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let hanging = st
            .hang_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hanging {
            tokio::time::sleep(Duration::from_millis(st.hang_ms.load(Ordering::SeqCst))).await;
        }
        let failing = st
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let status = if failing {
            st.fail_status.load(Ordering::SeqCst) as u16
        } else {
            200
        };
        if st.record {
            st.requests.lock().expect("lock").push(SinkRequest {
                method,
                path,
                headers,
                body,
                status,
            });
        }
        st.count.fetch_add(1, Ordering::SeqCst);
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        sock.write_all(resp.as_bytes()).await?;
    }
}
