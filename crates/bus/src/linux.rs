//! The Linux i2c-dev transport (`/dev/i2c-N`).

use std::io::ErrorKind as IoErrorKind;

use linux_embedded_hal::i2cdev::linux::LinuxI2CError;
use linux_embedded_hal::I2cdev;

use crate::error::DriverError;

/// Opens an I2C bus device such as `/dev/i2c-1`. Every transaction of the returned bus is
/// one `I2C_RDWR` ioctl, so a FIFO fetch's write and read share a repeated start.
pub fn open(path: &str) -> Result<I2cdev, DriverError> {
    let fail = |reason: String| DriverError::Open {
        path: path.to_owned(),
        reason,
    };
    // Check access first: i2cdev's own errors do not say which of these it was.
    if let Err(error) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        return Err(fail(explain(&error)));
    }
    I2cdev::new(path).map_err(|error| {
        fail(match error {
            LinuxI2CError::Io(io) => explain(&io),
            other => other.to_string(),
        })
    })
}

fn explain(error: &std::io::Error) -> String {
    match error.kind() {
        IoErrorKind::NotFound => format!(
            "{error}: no such device; enable the bus (Raspberry Pi: dtparam=i2c_arm=on in \
             config.txt, or raspi-config) and load i2c-dev (`modprobe i2c-dev`)"
        ),
        IoErrorKind::PermissionDenied => format!(
            "{error}: permission denied; add the user to the `i2c` group or run with access to the device"
        ),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_says_so() {
        let error = open("/dev/i2c-does-not-exist").err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("/dev/i2c-does-not-exist"), "{message}");
        assert!(message.contains("no such device"), "{message}");
    }

    #[test]
    fn a_file_that_is_no_i2c_device_is_refused() {
        let file = std::env::temp_dir().join(format!("pmon-bus-not-i2c-{}", std::process::id()));
        let _ = std::fs::write(&file, b"");
        let result = open(&file.to_string_lossy());
        let _ = std::fs::remove_file(&file);
        assert!(matches!(result, Err(DriverError::Open { .. })));
    }
}
