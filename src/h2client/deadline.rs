//! [`Deadlines`]: request timeouts without a timer per request.
//!
//! Every APNs request is bounded in time, and thousands are in flight per shard. A glommio timer
//! each meant a reactor timer-tree insert and remove per request, about 8% of a shard's CPU at
//! 50k/s (measured). Here deadlines are rounded up to the next tick and every request of a tick
//! shares one timer task and one [`Signal`]; waiting costs a slot in that signal. A tick is 1/64
//! of the limit (at least [`GRANULARITY`], at most [`MAX_TICK`]), so about 64 timers are armed
//! whatever the limit: glommio's reactor splits its timer tree on every turn, and a tree of a
//! 30 s limit's 1,500 ticks of 20 ms cost allocations on each. A request may therefore run up to
//! one tick longer than its limit, never shorter.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::wait::Signal;

/// The finest tick: deadlines are rounded up to a multiple of at least this.
pub(crate) const GRANULARITY: Duration = Duration::from_millis(20);
/// The coarsest tick.
pub(crate) const MAX_TICK: Duration = Duration::from_secs(1);
/// Ticks per limit: how many timers one limit keeps armed at most.
const TICKS_PER_LIMIT: u32 = 64;

/// One tick's deadline: fired once its time has come.
#[derive(Default)]
struct Tick {
    fired: Cell<bool>,
    signal: Signal,
}

/// Shared deadlines for the tasks of one executor.
pub(crate) struct Deadlines {
    origin: Instant,
    /// Ticks with a timer task armed, by due time (nanoseconds since `origin`).
    ticks: RefCell<BTreeMap<u128, Rc<Tick>>>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            origin: Instant::now(),
            ticks: RefCell::new(BTreeMap::new()),
        }
    }
}

impl Deadlines {
    /// Runs `fut` for at most `limit` (plus up to one tick: 1/64 of `limit`, between
    /// [`GRANULARITY`] and [`MAX_TICK`]); `None` if the time ran out first (`fut` is then
    /// dropped). The clock starts now, not at the first poll. Must run on a glommio executor.
    pub(crate) fn within<F: Future>(self: &Rc<Self>, limit: Duration, fut: F) -> Within<F> {
        Within {
            fut,
            expiry: Expiry {
                tick: self.tick_for(limit),
                slot: None,
            },
        }
    }

    /// The tick `limit` from now falls in, arming its timer if it is new.
    fn tick_for(self: &Rc<Self>, limit: Duration) -> Rc<Tick> {
        let g = tick(limit).as_nanos();
        let due = self.origin.elapsed().as_nanos() + limit.as_nanos();
        let number = due.div_ceil(g).saturating_mul(g);
        if let Some(t) = self.ticks.borrow().get(&number) {
            return t.clone();
        }
        let tick = Rc::new(Tick::default());
        self.ticks.borrow_mut().insert(number, tick.clone());
        let at = self.origin + Duration::from_nanos(u64::try_from(number).unwrap_or(u64::MAX));
        let (me, fired) = (self.clone(), tick.clone());
        glommio::spawn_local(async move {
            glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
            me.ticks.borrow_mut().remove(&number);
            fired.fired.set(true);
            fired.signal.notify();
        })
        .detach();
        tick
    }

    #[cfg(test)]
    fn armed(&self) -> usize {
        self.ticks.borrow().len()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Deadlines::within`]. Written by hand rather than as an `async fn` racing
    /// two blocks: that stored `fut` twice (once as the argument, once inside the race), and the
    /// APNs send future it wraps is most of a request's state, copied on every move (measured:
    /// 2,456 bytes around a 752-byte attempt).
    pub(crate) struct Within<F> {
        #[pin]
        fut: F,
        expiry: Expiry,
    }
}

/// A waiter's place in its tick's signal, given back when the waiter stops waiting for any
/// reason (done, timed out, dropped).
struct Expiry {
    tick: Rc<Tick>,
    slot: Option<(usize, u64)>,
}

impl Drop for Expiry {
    fn drop(&mut self) {
        self.tick.signal.deregister(&mut self.slot);
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let expiry = this.expiry;
        if let Poll::Ready(value) = this.fut.poll(cx) {
            expiry.tick.signal.deregister(&mut expiry.slot);
            return Poll::Ready(Some(value));
        }
        if expiry.tick.fired.get() {
            expiry.tick.signal.deregister(&mut expiry.slot);
            return Poll::Ready(None);
        }
        expiry.tick.signal.register(&mut expiry.slot, cx.waker());
        Poll::Pending
    }
}

/// The tick deadlines of `limit` are rounded to.
fn tick(limit: Duration) -> Duration {
    (limit / TICKS_PER_LIMIT).clamp(GRANULARITY, MAX_TICK)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::h2client::on_executor as run;

    #[test]
    fn returns_the_value_or_none_after_the_limit() {
        let (fast, slow, waited) = run(|| async {
            let d = Rc::new(Deadlines::default());
            let fast = d.within(Duration::from_secs(5), async { 7 }).await;
            let started = Instant::now();
            let slow = d
                .within(
                    Duration::from_millis(30),
                    glommio::timer::sleep(Duration::from_secs(5)),
                )
                .await;
            (fast, slow, started.elapsed())
        });
        assert_eq!((fast, slow), (Some(7), None));
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn the_bounded_future_is_stored_once() {
        let (inner, bounded) = run(|| async {
            let d = Rc::new(Deadlines::default());
            let work = async {
                let big = [7u8; 1000];
                glommio::timer::sleep(Duration::from_millis(1)).await;
                big[999]
            };
            let inner = std::mem::size_of_val(&work);
            let fut = d.within(Duration::from_secs(1), work);
            (inner, std::mem::size_of_val(&fut))
        });
        assert!(inner >= 1000, "{inner}");
        assert!(
            bounded <= inner + 64,
            "{bounded} bytes around a {inner}-byte future"
        );
    }

    #[test]
    fn a_waiter_gives_its_slot_back_however_it_ends() {
        let (done, timed_out, dropped, left) = run(|| async {
            let d = Rc::new(Deadlines::default());
            let limit = Duration::from_millis(40);
            let done = d.within(limit, glommio::timer::sleep(Duration::from_millis(1)));
            let done = done.await.is_some();
            let timed_out = d
                .within(limit, glommio::timer::sleep(Duration::from_secs(5)))
                .await
                .is_none();
            // Polled once (registered in the tick's signal), then dropped.
            let mut pending =
                Box::pin(d.within(limit, glommio::timer::sleep(Duration::from_secs(5))));
            let polled = futures_lite::future::poll_once(&mut pending).await;
            let tick = d.tick_for(limit);
            let registered_while_pending = tick.signal.registered();
            drop(pending);
            (
                done,
                timed_out,
                polled.is_none() && registered_while_pending == 1,
                tick.signal.registered(),
            )
        });
        assert!(done && timed_out, "done {done}, timed out {timed_out}");
        assert!(dropped, "the pending waiter was registered in its tick");
        assert_eq!(left, 0, "every slot given back");
    }

    #[test]
    fn a_tick_is_a_64th_of_the_limit_within_bounds() {
        assert_eq!(tick(Duration::from_millis(50)), GRANULARITY);
        assert_eq!(
            tick(Duration::from_secs(30)),
            Duration::from_micros(468_750)
        );
        assert_eq!(tick(Duration::from_secs(600)), MAX_TICK);
    }

    #[test]
    fn a_long_limit_keeps_few_timers_armed() {
        let (armed, ok) = run(|| async {
            let d = Rc::new(Deadlines::default());
            // 40 requests over about 200 ms, each bounded by APNs's 30 s limit: with 20 ms
            // ticks this armed a timer per 20 ms; now they share one or two.
            let mut ok = 0;
            for _ in 0..40 {
                let done = d
                    .within(
                        Duration::from_secs(30),
                        glommio::timer::sleep(Duration::from_millis(5)),
                    )
                    .await;
                ok += usize::from(done.is_some());
            }
            (d.armed(), ok)
        });
        assert_eq!(ok, 40);
        // One tick is about 469 ms: two, or three on a slow machine, where 20 ms ticks made ten.
        assert!((1..=3).contains(&armed), "{armed} timers armed");
    }

    #[test]
    fn requests_of_one_tick_share_one_timer_and_leave_nothing_behind() {
        let (armed_during, armed_after, timed_out) = run(|| async {
            let d = Rc::new(Deadlines::default());
            let waiters: Vec<_> = (0..1000)
                .map(|i| {
                    let d = d.clone();
                    glommio::spawn_local(async move {
                        // Half finish at once, half never do.
                        let work = async move {
                            if i % 2 == 0 {
                                return;
                            }
                            glommio::timer::sleep(Duration::from_secs(5)).await;
                        };
                        d.within(Duration::from_millis(50), work).await.is_none()
                    })
                })
                .collect();
            glommio::yield_if_needed().await;
            let armed_during = d.armed();
            let mut timed_out = 0;
            for w in waiters {
                timed_out += usize::from(w.await);
            }
            (armed_during, d.armed(), timed_out)
        });
        assert!(
            (1..=3).contains(&armed_during),
            "{armed_during} timers for 1000 requests"
        );
        assert_eq!(armed_after, 0);
        assert_eq!(timed_out, 500);
    }
}
