//! Where a notification's answer goes. A single `POST /v1/notifications` waits on its own
//! oneshot; a batch sends each owning shard one command with all of that shard's items, and the
//! shard answers them with ONE message once the last of them is settled ([`BatchAnswers`]),
//! instead of one cross-thread oneshot (an allocation and an atomic hand-off) per notification.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_channel::oneshot;

use super::command::{NotifyReply, Reply};
use super::error::ShardError;

/// One item's answer within a batch: its position in the request, and the result.
pub type ItemAnswer = (u32, Result<NotifyReply, ShardError>);

/// Where a shard sends the answers to its part of a batch, all at once.
pub type BatchReply = oneshot::Sender<Vec<ItemAnswer>>;

/// Where one notification's answer goes.
#[derive(Debug)]
pub enum NotifyReplyTo {
    /// The single endpoint: its own oneshot.
    One(Reply<NotifyReply>),
    /// One item of a batch: its slot in the shard's answer for that batch.
    Item(BatchSlot),
}

impl NotifyReplyTo {
    /// Delivers the answer. A client that went away is not an error.
    pub fn send(self, answer: Result<NotifyReply, ShardError>) {
        match self {
            NotifyReplyTo::One(reply) => {
                let _ = reply.send(answer);
            }
            NotifyReplyTo::Item(mut slot) => slot.fill(answer),
        }
    }
}

/// The answers a shard gathers for its part of one batch; sent when the last slot is filled.
/// Lives on the owning shard only (`Rc`), so filling a slot touches no atomic.
pub struct BatchAnswers {
    answers: RefCell<Vec<ItemAnswer>>,
    open: Cell<usize>,
    reply: Cell<Option<BatchReply>>,
}

impl BatchAnswers {
    /// Answers for `items` notifications, sent together through `reply` once each of them has
    /// filled its [`BatchSlot`].
    pub fn new(items: usize, reply: BatchReply) -> Rc<BatchAnswers> {
        Rc::new(BatchAnswers {
            answers: RefCell::new(Vec::with_capacity(items)),
            open: Cell::new(items),
            reply: Cell::new(Some(reply)),
        })
    }

    /// The slot for the item at request position `index`.
    pub fn slot(self: &Rc<Self>, index: u32) -> BatchSlot {
        BatchSlot {
            answers: Some(self.clone()),
            index,
        }
    }

    fn fill(&self, index: u32, answer: Result<NotifyReply, ShardError>) {
        self.answers.borrow_mut().push((index, answer));
        let open = self.open.get().saturating_sub(1);
        self.open.set(open);
        if open == 0 {
            if let Some(reply) = self.reply.take() {
                let _ = reply.send(std::mem::take(&mut *self.answers.borrow_mut()));
            }
        }
    }
}

impl std::fmt::Debug for BatchAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchAnswers")
            .field("open", &self.open.get())
            .finish_non_exhaustive()
    }
}

/// One item's place in a [`BatchAnswers`]. Dropped unanswered (a shard stopping with the item
/// still queued), it answers "unavailable", so the batch is never left waiting for it.
#[derive(Debug)]
pub struct BatchSlot {
    answers: Option<Rc<BatchAnswers>>,
    index: u32,
}

impl BatchSlot {
    fn fill(&mut self, answer: Result<NotifyReply, ShardError>) {
        if let Some(answers) = self.answers.take() {
            answers.fill(self.index, answer);
        }
    }
}

impl Drop for BatchSlot {
    fn drop(&mut self) {
        if let Some(answers) = self.answers.take() {
            let unanswered = ShardError::Unanswered;
            answers.fill(self.index, Err(unanswered));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn answers_once_when_every_slot_is_filled_in_any_order() {
        let (tx, mut rx) = oneshot::channel();
        let answers = BatchAnswers::new(3, tx);
        let (last, mid, first) = (answers.slot(4), answers.slot(7), answers.slot(9));
        drop(answers);
        NotifyReplyTo::Item(first).send(Ok(NotifyReply::Accepted(id(9))));
        assert_eq!(rx.try_recv(), Ok(None), "two slots still open");
        NotifyReplyTo::Item(mid).send(Ok(NotifyReply::Duplicate(id(7))));
        assert_eq!(rx.try_recv(), Ok(None), "one slot still open");
        NotifyReplyTo::Item(last).send(Err(ShardError::UserNotFound {
            user_id: "u".into(),
        }));
        let answers = rx.try_recv().expect("not canceled").expect("answered");
        assert_eq!(
            answers,
            vec![
                (9, Ok(NotifyReply::Accepted(id(9)))),
                (7, Ok(NotifyReply::Duplicate(id(7)))),
                (
                    4,
                    Err(ShardError::UserNotFound {
                        user_id: "u".into()
                    })
                ),
            ]
        );
    }

    #[test]
    fn a_slot_dropped_unanswered_answers_unavailable() {
        let (tx, mut rx) = oneshot::channel();
        let answers = BatchAnswers::new(2, tx);
        let unanswered = answers.slot(1);
        NotifyReplyTo::Item(answers.slot(0)).send(Ok(NotifyReply::Accepted(id(1))));
        drop(answers);
        assert_eq!(rx.try_recv(), Ok(None), "one slot still open");
        drop(unanswered);
        let answers = rx.try_recv().expect("not canceled").expect("answered");
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0], (0, Ok(NotifyReply::Accepted(id(1)))));
        let (index, err) = &answers[1];
        assert_eq!(*index, 1);
        assert_eq!(err.as_ref().map_err(ShardError::retry_can_help), Err(true));
    }

    #[test]
    fn the_single_endpoint_answers_through_its_own_oneshot() {
        let (tx, mut rx) = oneshot::channel();
        NotifyReplyTo::One(tx).send(Ok(NotifyReply::Accepted(id(3))));
        assert_eq!(rx.try_recv(), Ok(Some(Ok(NotifyReply::Accepted(id(3))))));
    }
}
