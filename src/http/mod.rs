//! The API transport: each core accepts on the shared port (SO_REUSEPORT) and serves HTTP/1.1
//! keep-alive and HTTP/2 cleartext (prior knowledge) on the same socket through hyper's
//! auto-detecting builder, running on glommio. On stop, listeners close and connections are
//! shut down gracefully (HTTP/2 GOAWAY, HTTP/1.1 close after the current request).

pub mod rt;
pub mod service;

use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;
use hyper::service::service_fn;
use hyper_util::server::conn::auto::Builder;
use tracing::{debug, warn};

use crate::sync::Latch;
use rt::{HyperIo, LocalExec};
use service::Api;

/// Concurrent HTTP/2 streams per client connection: load balancers multiplex many requests.
const H2_MAX_STREAMS: u32 = 1024;
/// Time a connection gets to finish its in-flight requests after stop.
const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

fn builder() -> Builder<LocalExec> {
    let mut b = Builder::new(LocalExec);
    b.http2()
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(1 << 24);
    b.http1().keep_alive(true);
    b
}

/// Accepts connections until `stop` is set.
pub async fn serve(listener: TcpListener, api: Rc<Api>, stop: Latch) {
    let builder = Rc::new(builder());
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (api, builder, stop) = (api.clone(), builder.clone(), stop.clone());
        glommio::spawn_local(async move {
            let svc = service_fn(move |req| service::handle(api.clone(), req));
            let conn = builder.serve_connection(HyperIo(stream), svc);
            futures_lite::pin!(conn);
            let stopped = futures_lite::future::or(
                async {
                    if let Err(e) = conn.as_mut().await {
                        debug!(error = %e, "connection ended");
                    }
                    false
                },
                async {
                    stop.wait().await;
                    true
                },
            )
            .await;
            if stopped {
                conn.as_mut().graceful_shutdown();
                let _ = futures_lite::future::or(
                    async {
                        let _ = conn.as_mut().await;
                    },
                    glommio::timer::sleep(CONNECTION_DRAIN),
                )
                .await;
            }
        })
        .detach();
    }
}
