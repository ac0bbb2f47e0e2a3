// SPDX-License-Identifier: GPL-2.0
//! A real swtpm, one per test, reached over its data socket (raw TPM 2.0 commands, as
//! tpm2-tss's swtpm TCTI sends them). Killed and its state removed on drop.
//!
//! Both of its sockets are Unix sockets in the test's own state directory. They were TCP
//! ports picked free and released before swtpm bound them: two tests starting at once
//! could pick the same port, one swtpm then failed to bind, and its test, connecting
//! before it saw that swtpm exit, could reach the other test's TPM. That is one possible
//! cause of a failure of `client_context_save_and_load` seen once and not reproduced in
//! 35 runs of the suite.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tpmrs_proto::{Tpm, TransportError};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running swtpm.
pub struct SwTpm {
    child: Child,
    stream: UnixStream,
    dir: PathBuf,
    /// swtpm's control channel (CMD_INIT and friends).
    ctrl: PathBuf,
}

impl SwTpm {
    /// Starts a fresh swtpm. Panics (fails the test) if swtpm is missing or does not start.
    pub fn start() -> SwTpm {
        let mut last_err = String::new();
        for _ in 0..5 {
            match Self::try_start() {
                Ok(s) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("cannot start swtpm: {last_err}");
    }

    fn try_start() -> Result<SwTpm, String> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tpmrs-swtpm-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let data = dir.join("data.sock");
        let ctrl = dir.join("ctrl.sock");
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=unixio,path={}", data.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning swtpm (is it installed?): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("swtpm exited with {st}: {err}"));
            }
            if let Ok(stream) = UnixStream::connect(&data) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .map_err(|e| e.to_string())?;
                return Ok(SwTpm {
                    child,
                    stream,
                    dir,
                    ctrl,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err("swtpm did not accept connections".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A TPM Reset behind the resource manager's back, as after a hibernation or a reboot
    /// of the TPM: _TPM_Init through swtpm's control channel (CMD_INIT), then
    /// TPM2_Startup(TPM_SU_CLEAR). Every session and loaded object is gone, and every
    /// saved context is invalid.
    pub fn reset(&mut self) {
        let mut c = UnixStream::connect(&self.ctrl).expect("swtpm control channel");
        c.write_all(&[0, 0, 0, 2, 0, 0, 0, 0]).expect("CMD_INIT");
        let mut res = [0u8; 4];
        c.read_exact(&mut res).expect("CMD_INIT answer");
        assert_eq!(res, [0; 4], "CMD_INIT failed");
        let startup = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
        let r = self.raw(&startup);
        assert_eq!(&r[6..10], &[0; 4], "TPM2_Startup(CLEAR) failed");
    }

    /// A suspend to RAM as the TPM sees it: TPM2_Shutdown(TPM_SU_STATE), a power cycle
    /// (CMD_INIT: _TPM_Init) and TPM2_Startup(TPM_SU_STATE), a TPM Resume. Loaded objects
    /// and sessions are gone; saved contexts load again.
    pub fn suspend_resume(&mut self) {
        let shutdown = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 1];
        let r = self.raw(&shutdown);
        assert_eq!(&r[6..10], &[0; 4], "TPM2_Shutdown(STATE) failed");
        let mut c = UnixStream::connect(&self.ctrl).expect("swtpm control channel");
        c.write_all(&[0, 0, 0, 2, 0, 0, 0, 0]).expect("CMD_INIT");
        let mut res = [0u8; 4];
        c.read_exact(&mut res).expect("CMD_INIT answer");
        assert_eq!(res, [0; 4], "CMD_INIT failed");
        let startup = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 1];
        let r = self.raw(&startup);
        assert_eq!(&r[6..10], &[0; 4], "TPM2_Startup(STATE) failed");
    }

    /// Sends a command straight to the TPM (not through the resource manager).
    pub fn raw(&mut self, cmd: &[u8]) -> Vec<u8> {
        let mut rsp = vec![0u8; 4096];
        let n = self.transmit(cmd, &mut rsp).expect("raw transmit");
        rsp.truncate(n);
        rsp
    }

    /// Handles of one TPM_CAP_HANDLES range as the TPM itself sees them (0x80000000:
    /// transient, 0x02000000: loaded sessions, 0x03000000: saved sessions; session handles
    /// may come back in either the HMAC or the policy form).
    pub fn raw_handles(&mut self, first: u32) -> Vec<u32> {
        let r = self.raw(&super::marshal::get_capability(
            super::marshal::CAP_HANDLES,
            first,
            256,
        ));
        super::marshal::handles_of(&r).1
    }

    /// Asserts the TPM holds no transient object and no session (loaded or saved).
    pub fn assert_empty(&mut self) {
        assert_eq!(
            self.raw_handles(0x8000_0000),
            vec![],
            "transient objects left"
        );
        assert_eq!(
            self.raw_handles(0x0200_0000),
            vec![],
            "loaded sessions left"
        );
        assert_eq!(self.raw_handles(0x0300_0000), vec![], "saved sessions left");
    }
}

impl Tpm for SwTpm {
    /// One command; TPM_RC_RETRY is sent again, as the kernel's `tpm_transmit()` does
    /// (libtpms answers it to the first ECDSA signature after a start-up).
    fn transmit(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TransportError> {
        for _ in 0..5 {
            let n = self.transmit_once(cmd, rsp)?;
            if rsp[6..10] != [0, 0, 0x09, 0x22] {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.transmit_once(cmd, rsp)
    }
}

impl SwTpm {
    fn transmit_once(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TransportError> {
        let io = |_| TransportError::maybe_sent(-5);
        self.stream.write_all(cmd).map_err(io)?;
        let mut hdr = [0u8; 10];
        self.stream.read_exact(&mut hdr).map_err(io)?;
        let size = u32::from_be_bytes([hdr[2], hdr[3], hdr[4], hdr[5]]) as usize;
        if !(10..=rsp.len()).contains(&size) {
            return Err(TransportError::maybe_sent(-5));
        }
        rsp[..10].copy_from_slice(&hdr);
        self.stream.read_exact(&mut rsp[10..size]).map_err(io)?;
        Ok(size)
    }
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
