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

use crate::{
    device::{ClientInfo, ClientStats, Cost, Shared},
    memcg::{ChargedVec, MemCg},
    proto::Space,
    proto::TPM_BUFSIZE,
};
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{
    bindings, current,
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

/// The space and its buffers: owned by [`Inner`], or by the command that is running. The
/// buffers are charged to the opener's memory cgroup.
struct Exec {
    space: Space,
    cmd: ChargedVec<u8>,
    rsp: ChargedVec<u8>,
}

/// What the next `read` returns.
enum Response {
    /// Nothing: no command since, or all of it read (`read` returns 0).
    None,
    /// `len` bytes of the response buffer from `off`. `read`: a read has begun, so the next
    /// `write` is accepted (what is left of the response is then dropped).
    Ready { off: usize, len: usize, read: bool },
    /// The error of an O_NONBLOCK command, for the next `read`.
    Error(Error),
}

/// The states of one open file, after the write/read protocol of tpmrm0. The space and the
/// buffers ([`Exec`]) are here when no command runs, and with the command while it runs.
enum State {
    /// No command in progress; `response` is what the next reads return.
    Idle { exec: Exec, response: Response },
    /// An O_NONBLOCK command of `cmd_len` bytes is queued on the workqueue, which takes
    /// `exec` from here when it runs it.
    Queued { exec: Exec, cmd_len: usize },
    /// A command runs without the lock (a blocking `write`, or the work item): it holds the
    /// space and gives it back ([`Client::finish`]).
    Running,
    /// Released (or not set up yet, in [`Client::new`]): the space is closed, or the running
    /// command closes it when it ends.
    Released,
}

/// The fields [`Client::inner`] protects.
struct Inner {
    state: State,
    /// The space of a released file, for its close work ([`Client::release`]).
    to_close: Option<Space>,
}

extern "C" {
    fn tpmrs_current_comm(buf: *mut u8, len: usize);
}

/// One open file of `/dev/tpmrs0`.
#[pin_data]
pub(crate) struct Client {
    shared: Arc<Shared>,
    #[pin]
    inner: Mutex<Inner>,
    /// Its line in `/sys/kernel/debug/tpmrs/clients`; listed in [`Shared`] while open.
    stats: Arc<ClientStats>,
    /// Signalled when a response (or an error for `read`) is ready.
    #[pin]
    response_ready: PollCondVar,
    #[pin]
    work: Work<Client>,
    /// Closes the space of a released file, on the module's workqueue.
    #[pin]
    close_work: Work<Client, 1>,
    /// Set at release: a command of this file still waiting for a session slot (in the
    /// O_NONBLOCK worker) stops at once.
    closed: AtomicBool,
    /// The opener's memory cgroup, which pays for what this file makes tpmrs allocate
    /// (`crate::memcg`); held until the last reference to the file's state is gone.
    memcg: MemCg,
}

impl_has_work! {
    impl HasWork<Self> for Client { self.work }
    impl HasWork<Self, 1> for Client { self.close_work }
}

impl Client {
    /// A new open file, with an empty space, opened by `uid` (its effective uid in the
    /// initial user namespace).
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(shared: Arc<Shared>, uid: u32) -> Result<Arc<Self>> {
        // Charged to the opener (the current task), failing with ENOMEM at its memory.max.
        let cmd = ChargedVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL_ACCOUNT)?;
        let rsp = ChargedVec::from_elem(0u8, TPM_BUFSIZE, GFP_KERNEL_ACCOUNT)?;
        let for_client = shared.clone();
        let mut comm = [0u8; 16];
        // SAFETY: `comm` is writable for its length, which is passed.
        unsafe { tpmrs_current_comm(comm.as_mut_ptr(), comm.len()) };
        let info = ClientInfo {
            pid: current!().tgid(),
            comm,
            space_id: 0,
            objects: 0,
            waits: 0,
            longest_wait_ns: 0,
            tpm_commands: 0,
        };
        let stats = ClientStats::new(info)?;
        let for_client_stats = stats.clone();
        let client = Arc::pin_init(
            pin_init!(Self {
                shared: for_client,
                inner <- new_mutex!(
                    Inner {
                        state: State::Released,
                        to_close: None,
                    },
                    "tpmrs::Client::inner"
                ),
                stats: for_client_stats,
                response_ready <- new_poll_condvar!("tpmrs::Client::response_ready"),
                work <- new_work!("tpmrs::Client::work"),
                close_work <- new_work!("tpmrs::Client::close_work"),
                closed: AtomicBool::new(false),
                memcg: MemCg::current(),
            }),
            GFP_KERNEL,
        )?;
        // The space last: once it exists, only `release` may end it (it is counted as open
        // until closed). Made without any lock that TPM work holds: see `Shared::new_space`.
        let space = shared.new_space(uid);
        stats.info.lock().space_id = space.id();
        client.inner.lock().state = State::Idle {
            exec: Exec { space, cmd, rsp },
            response: Response::None,
        };
        if let Err(e) = shared.add_client(stats) {
            Client::release(client);
            return Err(e);
        }
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
        let (mut exec, response) = match core::mem::replace(&mut inner.state, State::Running) {
            // An unread response (or error) must be read first.
            State::Idle {
                exec,
                response: response @ (Response::None | Response::Ready { read: true, .. }),
            } => (exec, response),
            // Busy: a command is queued or running (in another thread), or there is an
            // unread response.
            other => {
                inner.state = other;
                return Err(EBUSY);
            }
        };
        if let Err(e) = Self::take_command(&mut exec, &mut user, count) {
            inner.state = State::Idle { exec, response };
            return Err(e);
        }

        if nonblock {
            inner.state = State::Queued {
                exec,
                cmd_len: count,
            };
            drop(inner);
            // Cannot already be queued: the state was Idle under the lock.
            let _ = this
                .shared
                .queue()
                .enqueue::<Arc<Client>, 0>(Arc::from(this));
            return Ok(count);
        }

        drop(inner);
        let ret = this.run_command(&mut exec, count);
        match ret {
            Ok(len) => {
                this.finish(exec, Response::ready(len));
                Ok(count)
            }
            Err(e) => {
                this.finish(exec, Response::None);
                Err(e)
            }
        }
    }

    /// Copies the `count`-byte command from user space into `exec.cmd` and checks its size
    /// field.
    ///
    /// # Errors
    ///
    /// `EFAULT`, `EINVAL` (shorter than its size field).
    fn take_command(exec: &mut Exec, user: &mut UserSliceReader, count: usize) -> Result {
        let cmd = exec.cmd.get_mut(..count).ok_or(E2BIG)?;
        user.read_slice(cmd)?;
        let size = cmd
            .get(2..6)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match size {
            Some(size) if count >= size => Ok(()),
            _ => Err(EINVAL),
        }
    }

    /// Runs the command of `cmd_len` bytes in `exec` without holding `inner`, and updates
    /// the file's counters.
    ///
    /// What the command makes tpmrs allocate for the space (saved contexts, the object table)
    /// is charged to the opener's memory cgroup, whichever task runs it (the writer, or a
    /// kworker for O_NONBLOCK).
    fn run_command(&self, exec: &mut Exec, cmd_len: usize) -> Result<usize> {
        let _charge = self.memcg.charge();
        let Exec { space, cmd, rsp } = exec;
        let cmd = cmd.get(..cmd_len).unwrap_or(&[]);
        let mut cost = Cost::default();
        let closed = || self.closed.load(Ordering::Acquire);
        let ret = self
            .shared
            .execute(&self.stats, space, cmd, rsp, &mut cost, &closed);
        let mut info = self.stats.info.lock();
        info.objects = space.objects().len() as u64;
        info.tpm_commands = info.tpm_commands.wrapping_add(cost.tpm_commands);
        if let Some(ns) = cost.waited_ns {
            info.waits = info.waits.wrapping_add(1);
            info.longest_wait_ns = info.longest_wait_ns.max(ns);
        }
        drop(info);
        ret
    }

    /// Gives the space back with the command's `response`, or closes the space if the file
    /// was released meanwhile.
    fn finish(&self, exec: Exec, response: Response) {
        let mut inner = self.inner.lock();
        if let State::Released = inner.state {
            drop(inner);
            self.shared.close_space(exec.space);
            return;
        }
        inner.state = State::Idle { exec, response };
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
        let State::Idle { exec, response } = &mut inner.state else {
            return Ok(0);
        };
        let (ret, next) = match *response {
            Response::None => return Ok(0),
            Response::Error(e) => (Err(e), Response::None),
            Response::Ready { off, len, .. } => {
                let n = count.min(len);
                let chunk = exec.rsp.get(off..off + n);
                match chunk.map(|c| user.write_slice(c)) {
                    Some(Ok(())) if n < len => (
                        Ok(n),
                        Response::Ready {
                            off: off + n,
                            len: len - n,
                            read: true,
                        },
                    ),
                    Some(Ok(())) => (Ok(n), Response::None),
                    _ => (Err(EFAULT), Response::None),
                }
            }
        };
        *response = next;
        ret
    }

    /// `poll(2)`: `EPOLLIN` when a response (or an error) is waiting, `EPOLLOUT` otherwise.
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> bindings::__poll_t {
        table.register_wait(file, &self.response_ready);
        let inner = self.inner.lock();
        match inner.state {
            State::Idle {
                response: Response::Ready { .. } | Response::Error(_),
                ..
            } => bindings::POLLIN | bindings::POLLRDNORM,
            _ => bindings::POLLOUT | bindings::POLLWRNORM,
        }
    }

    /// `release`: the file is closed. Everything its space holds is flushed from the TPM by
    /// the close work on the module's workqueue, not here: that takes the resource manager's
    /// lock and the chip, which another client's TPM work may hold for seconds (an RSA
    /// CreatePrimary on a discrete TPM), and nothing about a close should wait for it. If a
    /// command is running, it closes the space when it ends, and the close work only wakes it
    /// if it waits for a session slot or a turn (an O_NONBLOCK command in the worker): it then
    /// stops at once (see `Shared::execute`).
    pub(crate) fn release(this: Arc<Self>) {
        this.shared.remove_client(&this.stats);
        this.shared.space_released();
        let mut inner = this.inner.lock();
        let old = core::mem::replace(&mut inner.state, State::Released);
        let exec = match old {
            State::Idle { exec, .. } | State::Queued { exec, .. } => Some(exec),
            State::Running | State::Released => None,
        };
        let buffers = exec.map(|Exec { space, cmd, rsp }| {
            inner.to_close = Some(space);
            (cmd, rsp)
        });
        drop(inner);
        drop(buffers);
        this.closed.store(true, Ordering::Release);
        // The work item is this file's own and enqueued only here, once: it cannot be pending.
        let shared = this.shared.clone();
        let _ = shared.queue().enqueue::<Arc<Client>, 1>(this);
    }
}

impl Response {
    /// The answer of a command: `len` bytes to read (none if empty).
    fn ready(len: usize) -> Self {
        if len == 0 {
            Response::None
        } else {
            Response::Ready {
                off: 0,
                len,
                read: false,
            }
        }
    }
}

impl WorkItem<1> for Client {
    type Pointer = Arc<Client>;

    /// Closes the space of a released file, or wakes its running command (see
    /// [`Client::release`]).
    fn run(this: Arc<Client>) {
        let space = this.inner.lock().to_close.take();
        match space {
            Some(space) => this.shared.close_space(space),
            None => this.shared.cancel_waits(&this.stats),
        }
    }
}

impl WorkItem for Client {
    type Pointer = Arc<Client>;

    /// Runs a queued O_NONBLOCK command.
    fn run(this: Arc<Client>) {
        let mut inner = this.inner.lock();
        let (mut exec, cmd_len) = match core::mem::replace(&mut inner.state, State::Running) {
            State::Queued { exec, cmd_len } => (exec, cmd_len),
            // Released meanwhile: `release` closed the space.
            other => {
                inner.state = other;
                return;
            }
        };
        drop(inner);
        let response = match this.run_command(&mut exec, cmd_len) {
            Ok(len) => Response::ready(len),
            Err(e) => Response::Error(e),
        };
        this.finish(exec, response);
    }
}
