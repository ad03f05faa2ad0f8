//! Child processes that cannot outlive the run: each is killed and reaped
//! when its guard drops, on success, error or panic alike.

use std::io::{self, BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// `command` with `program` pinned to one CPU through `taskset`, when a
/// CPU is given.
pub fn pinned(cpu: Option<usize>, program: &str) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Whether `program` can be run (found on `PATH`, or a path that exists).
pub fn available(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A running child process, killed and reaped on drop.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    name: String,
}

impl Guard {
    /// Spawns `command`.
    ///
    /// # Errors
    ///
    /// When the process cannot be started.
    pub fn spawn(name: &str, command: &mut Command) -> io::Result<Self> {
        let child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {name} ({command:?}): {e}"))
        })?;
        Ok(Self {
            child,
            name: name.to_owned(),
        })
    }

    /// The process id (through `taskset`, which execs its program, this
    /// is the program's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the child's stdout until a line starting with `prefix`, and
    /// returns the rest of that line. Gives up after `timeout`, or when the
    /// child exits first.
    ///
    /// # Errors
    ///
    /// When no such line comes in time.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> io::Result<String> {
        let stdout = self
            .child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other(format!("{}: stdout not piped", self.name)))?;
        let (tx, rx) = mpsc::channel();
        let prefix = prefix.to_owned();
        // The reader keeps draining stdout after the line, so that the child
        // never blocks on a full pipe.
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(rest) = line.strip_prefix(&prefix) {
                        let _ = tx.send(rest.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        rx.recv_timeout(timeout).map_err(|_| {
            let status = self.child.try_wait().ok().flatten();
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not report ready (exit status: {status:?})",
                    self.name
                ),
            )
        })
    }

    /// Waits for the child to exit on its own, at most `timeout`, then
    /// kills it. Returns its status and whatever it wrote.
    ///
    /// # Errors
    ///
    /// When the child had to be killed, or its output could not be read.
    pub fn wait_output(mut self, timeout: Duration) -> io::Result<Output> {
        let deadline = Instant::now() + timeout;
        let stdout = self.child.stdout.take();
        let stderr = self.child.stderr.take();
        let out = thread::spawn(move || read_all(stdout));
        let err = thread::spawn(move || read_all(stderr));
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} ran past {timeout:?} and was killed", self.name),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Stops the child: closes its stdin, gives it a moment to exit on its
    /// own, then kills it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.shutdown();
    }
}

fn read_all(pipe: Option<impl io::Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut buf);
    }
    buf
}

/// A server started for the run: pinned, told to stop by closing its
/// stdin, reporting `LISTENING <port>` when it is ready.
#[derive(Debug)]
pub struct Server {
    guard: Guard,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// Starts `program args..` pinned to `cpu` and waits until it listens.
    ///
    /// # Errors
    ///
    /// When it cannot start or does not report a port within 30 seconds.
    pub fn start(name: &str, cpu: Option<usize>, program: &str, args: &[&str]) -> io::Result<Self> {
        let mut command = pinned(cpu, program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut guard = Guard::spawn(name, &mut command)?;
        let line = guard.wait_for_line("LISTENING ", Duration::from_secs(30))?;
        let port = line.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: bad port {line:?}"),
            )
        })?;
        Ok(Self { guard, port })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Stops the server.
    pub fn stop(self) {
        self.guard.stop();
    }
}
