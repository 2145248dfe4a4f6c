//! Signups in progress in this process, one at a time per email. A
//! duplicate (a double submit, a flood of one address) waits for the signup
//! ahead of it and then finds the email taken, instead of spending a hash,
//! or a place in a full hashing stage, to learn it from the unique index.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::OwnedMutexGuard;

use crate::domain::Email;

type Pending = HashMap<String, Arc<tokio::sync::Mutex<()>>>;

#[derive(Clone, Default)]
pub(super) struct SignupLine {
    pending: Arc<Mutex<Pending>>,
}

/// The right to sign `email` up; the next signup of it waits until this
/// is dropped.
pub(super) struct Turn {
    line: SignupLine,
    held: Option<OwnedMutexGuard<()>>,
}

impl SignupLine {
    pub(super) async fn turn(&self, email: &Email) -> Turn {
        let lock = Arc::clone(self.lock().entry(email.key().to_owned()).or_default());
        Turn {
            line: self.clone(),
            held: Some(lock.lock_owned().await),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.held.take());
        // Only the map's own reference left: nobody holds or waits for that
        // email. Sweeping every such entry here also clears those whose
        // waiters were cancelled, so the map holds no more than the signups
        // in flight.
        self.line
            .lock()
            .retain(|_, lock| Arc::strong_count(lock) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(text: &str) -> Email {
        Email::parse(text).expect("an email")
    }

    #[tokio::test]
    async fn a_second_turn_for_one_email_waits_and_entries_go() {
        let line = SignupLine::default();
        let (a, b) = (email("a@example.com"), email("b@example.com"));
        let first = line.turn(&a).await;
        let other = line.turn(&b).await;
        let mut second = Box::pin(line.turn(&a));
        assert!(futures_util::poll!(&mut second).is_pending(), "waits");
        drop(first);
        let second = second.await;
        drop((second, other));
        assert!(line.lock().is_empty(), "nothing left behind");
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_nothing_behind() {
        let line = SignupLine::default();
        let a = email("a@example.com");
        let first = line.turn(&a).await;
        let mut waiting = Box::pin(line.turn(&a));
        assert!(futures_util::poll!(&mut waiting).is_pending());
        drop(waiting);
        drop(first);
        assert!(line.lock().is_empty());
    }
}
