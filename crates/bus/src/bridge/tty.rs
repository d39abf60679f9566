//! A serial port (or pseudo-terminal) in raw mode, with read timeouts, through termios:
//! no libudev, nothing beyond the C library.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{
    cfmakeraw, cfsetspeed, tcflush, tcgetattr, tcsetattr, BaudRate, ControlFlags, FlushArg, SetArg,
    SpecialCharacterIndices,
};

/// How long a `read` waits for a first byte before it returns `TimedOut`, unless changed.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(10);
/// How long a `write` waits for room in the driver's buffer before it gives up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A raw 8N1 serial port without flow control. `read` returns `TimedOut` after its
/// timeout; `write` writes everything or fails.
#[derive(Debug)]
pub struct TtyPort {
    file: File,
    read_timeout: Duration,
}

/// The termios speed for a baud rate, if the platform has it.
pub fn baud_rate(baud: u32) -> Option<BaudRate> {
    Some(match baud {
        1200 => BaudRate::B1200,
        2400 => BaudRate::B2400,
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115_200 => BaudRate::B115200,
        230_400 => BaudRate::B230400,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        460_800 => BaudRate::B460800,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        500_000 => BaudRate::B500000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        921_600 => BaudRate::B921600,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        1_000_000 => BaudRate::B1000000,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        2_000_000 => BaudRate::B2000000,
        _ => return None,
    })
}

impl TtyPort {
    /// Opens `path` (`/dev/ttyUSB0`, `/dev/ttyACM0`, a pseudo-terminal) at `baud`, raw 8N1,
    /// and discards whatever was waiting in its buffers.
    pub fn open(path: &Path, baud: u32) -> io::Result<TtyPort> {
        let speed = baud_rate(baud).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("baud rate {baud} is not supported (use 9600, 19200, 38400, 57600, 115200, 230400, …)"),
            )
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
            .open(path)?;
        configure(&file, Some(speed))?;
        Ok(TtyPort {
            file,
            read_timeout: DEFAULT_READ_TIMEOUT,
        })
    }

    /// Wraps an open terminal descriptor (one end of `openpty`, say): raw mode, non-blocking.
    pub fn from_fd(fd: OwnedFd) -> io::Result<TtyPort> {
        let file = File::from(fd);
        set_nonblocking(&file)?;
        configure(&file, None)?;
        Ok(TtyPort {
            file,
            read_timeout: DEFAULT_READ_TIMEOUT,
        })
    }

    /// Sets how long `read` waits for a first byte.
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.read_timeout = timeout;
    }

    /// Waits until `flags` are ready or `timeout` passes; true when ready.
    fn wait(&self, flags: PollFlags, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), flags)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) if Instant::now() >= deadline => return Ok(false),
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(io::Error::from(errno)),
            }
        }
    }
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(file, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(file, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Raw mode: no echo, no line editing, no translation, 8 data bits, no parity, one stop
/// bit, no flow control, reads return what is there.
fn configure(file: &File, speed: Option<BaudRate>) -> io::Result<()> {
    let mut termios = tcgetattr(file).map_err(io::Error::from)?;
    cfmakeraw(&mut termios);
    termios.control_flags |= ControlFlags::CREAD | ControlFlags::CLOCAL;
    termios.control_flags &= !(ControlFlags::CSTOPB | ControlFlags::PARENB | ControlFlags::CRTSCTS);
    termios.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
    termios.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    if let Some(speed) = speed {
        cfsetspeed(&mut termios, speed).map_err(io::Error::from)?;
    }
    tcsetattr(file, SetArg::TCSANOW, &termios).map_err(io::Error::from)?;
    // Whatever was waiting is from before us.
    tcflush(file, FlushArg::TCIOFLUSH).map_err(io::Error::from)?;
    Ok(())
}

impl Read for TtyPort {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.wait(PollFlags::POLLIN, self.read_timeout)? {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        match self.file.read(buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::from(io::ErrorKind::TimedOut))
            }
            other => other,
        }
    }
}

impl Write for TtyPort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.file.write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait(PollFlags::POLLOUT, WRITE_TIMEOUT)? {
                        return Err(io::Error::from(io::ErrorKind::TimedOut));
                    }
                }
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
