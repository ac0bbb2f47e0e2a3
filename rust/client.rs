// SPDX-License-Identifier: GPL-2.0
//! What one open file of `/dev/tpmrs0` owns: its space (virtual object handles, saved
//! contexts), its command and response buffers, and the state of the write/read/poll protocol
//! that /dev/tpmrm0 defined (`drivers/char/tpm/tpm-dev-common.c`):
//!
//! - one command per `write`; a second `write` before the response is read gets `EBUSY`;
//!   more than 4096 bytes get `E2BIG`; fewer bytes than the header's size field, `EINVAL`;
//! - the response by `read`, possibly in parts; the first `read` marks it consumed, so the
//!   next `write` is accepted even after a partial read;
//! - with `O_NONBLOCK`, `write` only queues the command and returns; the command runs on the
//!   module's workqueue, `poll` reports `EPOLLIN` once the response is ready, and an error of
//!   the command comes back from the next `read`.
//!
//! Unlike tpmrm0, the per-file lock is not held while the TPM works: the space and its buffers
//! are taken out of [`Inner`] for the duration of the command, so `poll` and `read` never wait
//! for the TPM.

use crate::{device::Shared, proto::Space, proto::TPM_BUFSIZE};
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{
    alloc::KVec,
    bindings,
    fs::File,
    impl_has_work, new_mutex, new_poll_condvar, new_work,
    prelude::*,
    sync::{
        poll::{PollCondVar, PollTable},
        Arc, ArcBorrow, Mutex,
    },
    uaccess::{UserSliceReader, UserSliceWriter},
    workqueue::{Work, WorkItem},
};

/// The space and its buffers: owned by [`Inner`], or by the command that is running.
struct Exec {
    space: Space,
    cmd: KVec<u8>,
    rsp: KVec<u8>,
}

/// The fields [`Client::inner`] protects.
struct Inner {
    /// `None` while a command runs (the executor holds it) or after release.
    exec: Option<Exec>,
    /// Length of the queued command in `exec.cmd`.
    cmd_len: usize,
    /// Bytes of the response still to read (> 0), an errno for the next read (< 0), or nothing.
    response_len: isize,
    /// Where the next read starts in `exec.rsp`.
    read_off: usize,
    /// The response has been (at least partly) read since the last write.
    response_read: bool,
    /// An O_NONBLOCK command is queued or running.
    command_enqueued: bool,
    /// The file was released; the running command closes the space when it ends.
    released: bool,
}

/// One open file of `/dev/tpmrs0`.
#[pin_data]
pub(crate) struct Client {
    shared: Arc<Shared>,
    #[pin]
    inner: Mutex<Inner>,
    /// Signalled when a response (or an error for `read`) is ready.
    #[pin]
    response_ready: PollCondVar,
    #[pin]
    work: Work<Client>,
    /// Set at release: a command still waiting for a session slot (in the O_NONBLOCK
    /// worker) stops at once.
    closed: AtomicBool,
}

impl_has_work! {
    impl HasWork<Self> for Client { self.work }
}

impl Client {
    /// A new open file, with an empty space.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Arc<Self>> {
        let cmd = KVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL)?;
        let rsp = KVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL)?;
        let for_client = shared.clone();
        let client = Arc::pin_init(
            pin_init!(Self {
                shared: for_client,
                inner <- new_mutex!(Inner {
                    exec: None,
                    cmd_len: 0,
                    response_len: 0,
                    read_off: 0,
                    response_read: true,
                    command_enqueued: false,
                    released: false,
                }, "tpmrs::Client::inner"),
                response_ready <- new_poll_condvar!("tpmrs::Client::response_ready"),
                work <- new_work!("tpmrs::Client::work"),
                closed: AtomicBool::new(false),
            }),
            GFP_KERNEL,
        )?;
        // The space last: once it exists, only `release` may end it (it is counted as open
        // in the resource manager until closed).
        let space = shared.new_space()?;
        client.inner.lock().exec = Some(Exec { space, cmd, rsp });
        Ok(client)
    }

    /// `write(2)`: takes one command.
    ///
    /// # Errors
    ///
    /// `E2BIG` (over 4096 bytes), `EBUSY` (the previous response is unread or a command is
    /// queued), `EFAULT` (bad user buffer), `EINVAL` (shorter than its size field), and in
    /// blocking mode whatever running the command returns (`EPIPE`, `EINVAL`, ...).
    pub(crate) fn write(
        this: ArcBorrow<'_, Self>,
        mut user: UserSliceReader,
        count: usize,
        nonblock: bool,
    ) -> Result<usize> {
        if count > TPM_BUFSIZE {
            return Err(E2BIG);
        }
        let mut inner = this.inner.lock();
        if (!inner.response_read && inner.response_len != 0) || inner.command_enqueued {
            return Err(EBUSY);
        }
        let Some(exec) = inner.exec.as_mut() else {
            // A blocking command of another thread is still running on this file.
            return Err(EBUSY);
        };
        // PANIC: `count <= TPM_BUFSIZE == exec.cmd.len()`.
        let cmd = &mut exec.cmd[..count];
        user.read_slice(cmd)?;
        let size = cmd
            .get(2..6)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match size {
            Some(size) if count >= size => {}
            _ => return Err(EINVAL),
        }
        inner.cmd_len = count;
        inner.response_len = 0;
        inner.response_read = false;
        inner.read_off = 0;

        if nonblock {
            inner.command_enqueued = true;
            drop(inner);
            // Cannot already be queued: `command_enqueued` was false under the lock.
            let _ = this.shared.queue().enqueue(Arc::from(this));
            return Ok(count);
        }

        let exec = inner.exec.take();
        drop(inner);
        let (exec, ret) = this.run(exec);
        let mut inner = this.inner.lock();
        let ret = match ret {
            Ok(len) => {
                inner.response_len = len as isize;
                Ok(count)
            }
            Err(e) => Err(e),
        };
        this.finish(inner, exec);
        ret
    }

    /// Runs the command in `exec` (if the file still has its space) without holding `inner`.
    fn run(&self, exec: Option<Exec>) -> (Option<Exec>, Result<usize>) {
        let Some(mut exec) = exec else {
            return (None, Err(EPIPE));
        };
        let len = self.inner.lock().cmd_len;
        let Exec { space, cmd, rsp } = &mut exec;
        let cmd = cmd.get(..len).unwrap_or(&[]);
        let closed = || self.closed.load(Ordering::Acquire);
        let ret = self.shared.execute(space, cmd, rsp, &closed);
        (Some(exec), ret)
    }

    /// Gives the space back to `inner`, or closes it if the file was released meanwhile.
    fn finish(&self, mut inner: kernel::sync::MutexGuard<'_, Inner>, exec: Option<Exec>) {
        if inner.released {
            drop(inner);
            if let Some(exec) = exec {
                self.shared.close_space(exec.space);
            }
            return;
        }
        inner.exec = exec;
        drop(inner);
        self.response_ready.notify_all();
    }

    /// `read(2)`: the response, possibly in parts.
    ///
    /// # Errors
    ///
    /// `EFAULT` (the response is dropped, as tpmrm0 does), or the error of an O_NONBLOCK
    /// command.
    pub(crate) fn read(&self, mut user: UserSliceWriter, count: usize) -> Result<usize> {
        if count == 0 {
            return Ok(0);
        }
        let mut inner = self.inner.lock();
        let mut ret = Ok(0);
        if inner.response_len != 0 {
            inner.response_read = true;
            if inner.response_len < 0 {
                ret = Err(Error::from_errno(inner.response_len as i32));
                inner.response_len = 0;
            } else {
                let n = count.min(inner.response_len as usize);
                let off = inner.read_off;
                let chunk = inner.exec.as_ref().and_then(|e| e.rsp.get(off..off + n));
                match chunk.map(|c| user.write_slice(c)) {
                    Some(Ok(())) => {
                        inner.response_len -= n as isize;
                        inner.read_off += n;
                        ret = Ok(n);
                    }
                    _ => {
                        inner.response_len = 0;
                        ret = Err(EFAULT);
                    }
                }
            }
        }
        if inner.response_len == 0 {
            inner.read_off = 0;
        }
        ret
    }

    /// `poll(2)`: `EPOLLIN` when a response (or an error) is waiting, `EPOLLOUT` otherwise.
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> bindings::__poll_t {
        table.register_wait(file, &self.response_ready);
        let inner = self.inner.lock();
        if inner.response_len != 0 {
            bindings::POLLIN | bindings::POLLRDNORM
        } else {
            bindings::POLLOUT | bindings::POLLWRNORM
        }
    }

    /// `release`: flushes everything the space holds from the TPM. If an O_NONBLOCK command
    /// is running, it closes the space when it ends.
    /// A command of this file still waiting for a session slot stops at once (see
    /// `Shared::execute`).
    pub(crate) fn release(&self) {
        let mut inner = self.inner.lock();
        inner.released = true;
        let exec = inner.exec.take();
        drop(inner);
        self.closed.store(true, Ordering::Release);
        match exec {
            Some(exec) => self.shared.close_space(exec.space),
            None => self.shared.cancel_waits(),
        }
    }
}

impl WorkItem for Client {
    type Pointer = Arc<Client>;

    /// Runs a queued O_NONBLOCK command.
    fn run(this: Arc<Client>) {
        let mut inner = this.inner.lock();
        let exec = inner.exec.take();
        drop(inner);
        let (exec, ret) = this.run(exec);
        inner = this.inner.lock();
        inner.command_enqueued = false;
        inner.response_len = match ret {
            Ok(len) => len as isize,
            Err(e) => e.to_errno() as isize,
        };
        this.finish(inner, exec);
    }
}
