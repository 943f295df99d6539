//! The log sink: formatted log lines go into a shared buffer and one thread writes them to
//! stderr, a few milliseconds' worth at a time.
//!
//! The API and the edge write a line per request; a serving thread must never wait on a
//! write(2) for it, nor wake another thread for every line. A line costs a lock and a copy;
//! the writer thread is woken only when the buffer goes from empty to non-empty while it
//! sleeps, then waits `GATHER` for more lines and writes everything with one write(2). Lines
//! are never dropped: past `HIGH_WATER` bytes queued, loggers wait for the writer (a stuck
//! stderr slows the server rather than losing its audit-relevant logs or growing without
//! bound). Dropping the `Sink` writes what is queued and stops the thread.
//!
//! Written here rather than with `tracing-appender`'s non-blocking writer: that one sends
//! each line through a channel whose receiver is woken (a futex call, often a yield loop)
//! for nearly every line under moderate load, which cost more than formatting the line.
//! When stderr is a regular file, the writer also starts the file's writeback every
//! `WRITEBACK` bytes (`sync_file_range`, without waiting for it), as RocksDB's
//! `bytes_per_sync` does: left to the kernel, a busy server's log (tens of MB a second)
//! piles up as dirty pages that are flushed all at once after 30 s, and that burst stalls
//! the store's log syncs on the same disk for tens of milliseconds.
//!
//! This module must never format, filter or reorder lines; that is tracing-subscriber's job.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer lets lines gather after the first one before writing them.
const GATHER: Duration = Duration::from_millis(2);
/// The buffers' usual capacity (about a gathering's worth of lines under load).
const CAPACITY: usize = 64 << 10;
/// Bytes queued past which loggers wait for the writer.
const HIGH_WATER: usize = 4 << 20;
/// Bytes written to a log file between two starts of its writeback.
const WRITEBACK: usize = 1 << 20;

struct State {
    buf: Vec<u8>,
    /// The writer waits on `wake` (so the next line must wake it).
    sleeping: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the buffer gets its first line while the writer sleeps, or on close.
    wake: Condvar,
    /// Signalled when the writer has taken the buffer.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the buffer as valid bytes: keep logging.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Owns the writer thread; dropping it writes what is queued and joins the thread.
pub struct Sink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What tracing-subscriber writes formatted lines into (one `write_all` per line).
#[derive(Clone)]
pub struct Writer {
    shared: Arc<Shared>,
}

impl Sink {
    /// Starts the writer thread over `out`; `file` is `out`'s descriptor when it may be a
    /// regular file whose writeback should be started as it grows (see `Writeback`).
    pub fn start(
        out: impl Write + Send + 'static,
        file: Option<std::os::fd::RawFd>,
    ) -> std::io::Result<(Sink, Writer)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(CAPACITY),
                sleeping: false,
                closed: false,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_loop(&s, out, Writeback::new(file)))?;
        Ok((
            Sink {
                shared: shared.clone(),
                thread: Some(thread),
            },
            Writer { shared },
        ))
    }
}

fn write_loop(shared: &Shared, mut out: impl Write, mut writeback: Writeback) {
    let mut taken = Vec::with_capacity(CAPACITY);
    loop {
        let closed = {
            let mut st = shared.lock();
            while st.buf.is_empty() && !st.closed {
                st.sleeping = true;
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.sleeping = false;
            }
            if st.buf.is_empty() {
                return; // closed and nothing left
            }
            st.closed
        };
        if !closed {
            std::thread::sleep(GATHER);
        }
        {
            let mut st = shared.lock();
            std::mem::swap(&mut st.buf, &mut taken);
        }
        shared.room.notify_all();
        // A failed write to stderr has nowhere to be reported; the next lines are tried.
        let _ = out.write_all(&taken).and_then(|()| out.flush());
        writeback.wrote(taken.len());
        taken.clear();
        if taken.capacity() > HIGH_WATER {
            taken.shrink_to(CAPACITY);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Write for Writer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut st = self.shared.lock();
        while st.buf.len() >= HIGH_WATER && !st.closed {
            st = self.shared.room.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.closed {
            // After the sink is gone (process exit), lines go straight out.
            drop(st);
            return std::io::stderr().write(line);
        }
        let first = st.buf.is_empty();
        st.buf.extend_from_slice(line);
        let wake = first && st.sleeping;
        drop(st);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
    type Writer = Writer;
    fn make_writer(&'a self) -> Writer {
        self.clone()
    }
}

/// Starts the writeback of a log file every `WRITEBACK` bytes written to it. Does nothing
/// for anything but a regular file (a terminal, a pipe to a log collector).
struct Writeback {
    fd: Option<std::os::fd::RawFd>,
    pending: usize,
    started: u64,
}

impl Writeback {
    fn new(fd: Option<std::os::fd::RawFd>) -> Writeback {
        Writeback {
            fd: fd.filter(|&fd| is_regular_file(fd)),
            pending: 0,
            started: 0,
        }
    }

    fn wrote(&mut self, n: usize) {
        let Some(fd) = self.fd else { return };
        self.pending += n;
        if self.pending < WRITEBACK {
            return;
        }
        self.pending = 0;
        if start_writeback(fd) {
            self.started += 1;
        } else {
            // Not supported for this file: stop trying.
            self.fd = None;
        }
    }
}

#[cfg(target_os = "linux")]
fn is_regular_file(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: `stat` is a plain struct fstat fills in; `fd` is only read.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
    }
}

#[cfg(not(target_os = "linux"))]
fn is_regular_file(_fd: std::os::fd::RawFd) -> bool {
    false
}

/// Starts writing the file's dirty pages back without waiting for them; false when the
/// file does not support it.
#[cfg(target_os = "linux")]
fn start_writeback(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: a system call on integers; offset 0 and length 0 mean the whole file.
    unsafe { libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_fd: std::os::fd::RawFd) -> bool {
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An `out` (and a tracing writer) the test can read back.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_sink_is_dropped() {
        let out = Captured::default();
        let (sink, writer) = Sink::start(out.clone(), None).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(sink);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            assert_eq!(mine.len(), 5000);
            for (i, l) in mine.iter().enumerate() {
                assert_eq!(*l, format!("t{t} line {i}"));
            }
        }
        assert_eq!(text.lines().count(), 20_000);
    }

    #[test]
    fn a_line_written_while_idle_appears_without_more_lines() {
        let out = Captured::default();
        let (_sink, mut writer) = Sink::start(out.clone(), None).unwrap();
        writer.write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().as_slice() != b"one\n" {
            assert!(
                std::time::Instant::now() < deadline,
                "the line never appeared"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn loggers_wait_when_the_output_is_stuck_and_lose_nothing() {
        /// Blocks every write until released.
        #[derive(Clone)]
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Captured);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let (m, c) = &*self.0;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = c.wait(open).unwrap();
                }
                self.1.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let captured = Captured::default();
        let (sink, writer) = Sink::start(Stuck(gate.clone(), captured.clone()), None).unwrap();
        let line = vec![b'x'; 1023];
        let logger = {
            let mut w = writer.clone();
            let line = line.clone();
            std::thread::spawn(move || {
                for _ in 0..(3 * HIGH_WATER / 1024) {
                    w.write_all(&line).unwrap();
                    w.write_all(b"\n").unwrap();
                }
            })
        };
        // The logger fills the buffer and then waits: the queue stays bounded.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!logger.is_finished());
        assert!(sink.shared.lock().buf.len() <= HIGH_WATER + 1024);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        logger.join().unwrap();
        drop(sink);
        assert_eq!(captured.0.lock().unwrap().len(), 3 * HIGH_WATER);
    }

    #[test]
    fn a_log_file_has_its_writeback_started_as_it_grows_and_nothing_else_does() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("gantry.log")).unwrap();
        let mut wb = Writeback::new(Some(file.as_raw_fd()));
        assert!(wb.fd.is_some(), "a regular file");
        wb.wrote(WRITEBACK - 1);
        assert_eq!(wb.started, 0);
        wb.wrote(1);
        assert_eq!(wb.started, 1);
        for _ in 0..3 {
            wb.wrote(WRITEBACK / 2);
        }
        assert_eq!(wb.started, 2);
        // A pipe (a log collector) and no descriptor at all: nothing to start.
        let (r, _w) = std::io::pipe().unwrap();
        let mut pipe = Writeback::new(Some(r.as_raw_fd()));
        assert!(pipe.fd.is_none());
        pipe.wrote(4 * WRITEBACK);
        assert_eq!(pipe.started, 0);
        assert!(Writeback::new(None).fd.is_none());

        // Through the sink: every line reaches the file.
        let (sink, mut writer) =
            Sink::start(file.try_clone().unwrap(), Some(file.as_raw_fd())).unwrap();
        let line = [b'x'; 99];
        for _ in 0..30_000 {
            writer.write_all(&line).unwrap();
            writer.write_all(b"\n").unwrap();
        }
        drop(sink);
        let len = std::fs::metadata(dir.path().join("gantry.log"))
            .unwrap()
            .len();
        assert_eq!(len, 30_000 * 100);
    }
}
