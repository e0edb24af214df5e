//! Glue between hyper and glommio: an I/O adapter implementing hyper's `rt::Read`/`rt::Write` on
//! a futures-io stream (glommio's `TcpStream`), an executor that spawns hyper's connection
//! tasks on the current glommio executor (they need not be `Send`), and a timer (hyper's
//! HTTP/2 keep-alive pings) on glommio's timers.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

/// A futures-io stream seen through hyper's I/O traits.
pub struct HyperIo<T>(pub T);

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: we only expose initialized bytes: the spare capacity is zeroed before it is
        // handed to the reader as `&mut [u8]`, and we advance by what the reader reports.
        let slice = unsafe {
            let uninit = buf.as_mut();
            for b in uninit.iter_mut() {
                *b = MaybeUninit::new(0);
            }
            &mut *(uninit as *mut [MaybeUninit<u8>] as *mut [u8])
        };
        match Pin::new(&mut self.0).poll_read(cx, slice) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: the reader wrote (and we zeroed) these `n` bytes.
                unsafe { buf.advance(n) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Spawns hyper's background tasks (HTTP/2 streams) on the current glommio executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        glommio::spawn_local(async move {
            fut.await;
        })
        .detach();
    }
}

/// hyper's timer on glommio's: each sleep is a `glommio::timer::Timer` on the executor that
/// polls it.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioTimer;

impl hyper::rt::Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(GlommioSleep {
            deadline,
            timer: None,
            thread: std::thread::current().id(),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<GlommioSleep>() {
            Some(mut s) => s.as_mut().get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A sleep until `deadline`. hyper asks for `Send + Sync` sleeps, and glommio's timer is
/// neither (it is an `Rc` into the executor's reactor), so the timer is made on first poll and
/// touched only on the thread that made the sleep: polled anywhere else the sleep is over at
/// once, and dropped anywhere else its timer is leaked rather than touched. hyper keeps its
/// sleeps inside the connection future, which never leaves its executor (`HyperIo` over a
/// glommio stream is not `Send`), so neither fallback is taken in practice.
pub struct GlommioSleep {
    deadline: Instant,
    timer: Option<glommio::timer::Timer>,
    thread: ThreadId,
}

// SAFETY: the only non-thread-safe part is `timer`, which is created, polled, reset and dropped
// only on `thread` (checked in `poll`, `reset` and `drop`); `&GlommioSleep` gives no access to it.
unsafe impl Send for GlommioSleep {}
// SAFETY: as above; no method reads `timer` through a shared reference.
unsafe impl Sync for GlommioSleep {}

impl GlommioSleep {
    fn on_own_thread(&self) -> bool {
        std::thread::current().id() == self.thread
    }

    fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if !self.on_own_thread() {
            return;
        }
        if let Some(t) = self.timer.as_mut() {
            t.reset(deadline.saturating_duration_since(Instant::now()));
        }
    }
}

impl Future for GlommioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.on_own_thread() || Instant::now() >= this.deadline {
            return Poll::Ready(());
        }
        let deadline = this.deadline;
        let timer = this.timer.get_or_insert_with(|| {
            glommio::timer::Timer::new(deadline.saturating_duration_since(Instant::now()))
        });
        Pin::new(timer).poll(cx).map(|_| ())
    }
}

impl hyper::rt::Sleep for GlommioSleep {}

impl Drop for GlommioSleep {
    fn drop(&mut self) {
        if !self.on_own_thread() {
            std::mem::forget(self.timer.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[test]
    fn glommio_sleeps_end_at_their_deadline_and_follow_a_reset() {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let t = GlommioTimer;
                let started = Instant::now();
                t.sleep(Duration::from_millis(30)).await;
                let slept = started.elapsed();
                assert!(slept >= Duration::from_millis(30), "{slept:?}");

                let started = Instant::now();
                let mut s = t.sleep(Duration::from_secs(60));
                // Polled once (the timer is armed), then brought forward.
                assert!(futures_lite::future::poll_once(s.as_mut()).await.is_none());
                t.reset(&mut s, Instant::now() + Duration::from_millis(20));
                s.await;
                let slept = started.elapsed();
                assert!(slept < Duration::from_secs(5), "{slept:?}");
                slept
            })
            .expect("executor starts");
        ex.join().expect("executor ran");
    }
}
