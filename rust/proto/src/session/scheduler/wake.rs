// SPDX-License-Identifier: GPL-2.0
//! Whom to wake: the spaces whose waiters were granted a slot or head the queue now, kept
//! until the caller collects them (`Rm::take_wakeups`).

use super::Scheduler;

impl Scheduler {
    /// The waiters of `space` must be woken: something was freed or reserved for them.
    pub(crate) fn wake_space(&mut self, space: u64) {
        if !self.wake.contains(&space) && self.wake.try_push(space).is_err() {
            self.wake_all = true;
        }
    }

    /// Whether waiters must be woken (a reservation was granted or the head changed) since
    /// the last call; forgets which.
    #[cfg(not(tpmrs_kernel))]
    pub fn take_wakeup(&mut self) -> bool {
        let any = self.wake_all || !self.wake.is_empty();
        self.wake.clear();
        self.wake_all = false;
        any
    }

    /// Calls `wake` for every space whose waiters must be woken since the last call: with
    /// `Some(space)`, or once with `None` meaning every waiter (the list ran out of memory).
    pub fn take_wakeups(&mut self, wake: &mut dyn FnMut(Option<u64>)) {
        if core::mem::take(&mut self.wake_all) {
            wake(None);
        } else {
            for &s in self.wake.iter() {
                wake(Some(s));
            }
        }
        self.wake.clear();
    }
}
